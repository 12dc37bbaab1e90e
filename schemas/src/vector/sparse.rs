//! Sparse vector deltas: only the dimensions that changed, valid on top of
//! one stored version and nothing else. A consumer whose stored version
//! differs parks the event instead of guessing.

use super::{CodecError, check_finite};
use crate::hlc::Hlc;

/// The changed dimensions of a vector and the version they apply to.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseDelta {
    /// The version (HLC) of the stored vector this delta was computed against.
    pub base_version: Hlc,
    /// Dimensions of the full vector.
    pub dim: u32,
    /// Changed dimensions, strictly increasing.
    pub indices: Vec<u32>,
    /// New values, one per index.
    pub values: Vec<f32>,
}

impl SparseDelta {
    /// The delta that turns `old` into `new`.
    pub fn diff(base_version: Hlc, old: &[f32], new: &[f32]) -> Result<Self, CodecError> {
        check_finite(new)?;
        if old.len() != new.len() {
            return Err(CodecError::DimensionMismatch {
                expected: old.len(),
                actual: new.len(),
            });
        }
        let (indices, values) = old
            .iter()
            .zip(new)
            .enumerate()
            .filter(|(_, (a, b))| a.to_bits() != b.to_bits())
            .map(|(i, (_, &b))| (i as u32, b))
            .unzip();
        Ok(Self {
            base_version,
            dim: new.len() as u32,
            indices,
            values,
        })
    }

    /// Checks the delta on its own: lengths agree, indices increase and fit
    /// the dimension, values are finite.
    pub fn validate(&self) -> Result<(), CodecError> {
        let bad = |m: String| Err(CodecError::InvalidSparseDelta(m));
        if self.indices.len() != self.values.len() {
            return bad(format!(
                "{} indices but {} values",
                self.indices.len(),
                self.values.len()
            ));
        }
        if let Some(w) = self.indices.windows(2).find(|w| w[0] >= w[1]) {
            return bad(format!("indices not increasing at {} then {}", w[0], w[1]));
        }
        if let Some(&last) = self.indices.last()
            && last >= self.dim
        {
            return bad(format!("index {last} beyond dimension {}", self.dim));
        }
        check_finite(&self.values)
    }

    /// Applies the delta to the base vector in place.
    pub fn apply(&self, base: &mut [f32]) -> Result<(), CodecError> {
        self.validate()?;
        if base.len() != self.dim as usize {
            return Err(CodecError::DimensionMismatch {
                expected: self.dim as usize,
                actual: base.len(),
            });
        }
        for (&i, &v) in self.indices.iter().zip(&self.values) {
            base[i as usize] = v;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn diff_then_apply_gives_the_new_vector(
            pairs in proptest::collection::vec((-10.0f32..10.0, -10.0f32..10.0, any::<bool>()), 1..100)
        ) {
            let old: Vec<f32> = pairs.iter().map(|p| p.0).collect();
            let new: Vec<f32> = pairs.iter().map(|p| if p.2 { p.1 } else { p.0 }).collect();
            let delta = SparseDelta::diff(Hlc::new(1, 0, "r"), &old, &new).unwrap();
            prop_assert!(delta.indices.len() <= pairs.iter().filter(|p| p.2).count());
            let mut v = old.clone();
            delta.apply(&mut v).unwrap();
            prop_assert_eq!(v, new);
        }

        #[test]
        fn arbitrary_deltas_never_panic(
            dim in 0u32..50, indices in proptest::collection::vec(any::<u32>(), 0..20),
            values in proptest::collection::vec(any::<f32>(), 0..20), base_len in 0usize..60
        ) {
            let delta = SparseDelta { base_version: Hlc::zero("r"), dim, indices, values };
            let mut base = vec![0.0; base_len];
            let _ = delta.apply(&mut base);
        }
    }

    #[test]
    fn malformed_deltas_are_named() {
        let mut d = SparseDelta {
            base_version: Hlc::zero("r"),
            dim: 4,
            indices: vec![1, 1],
            values: vec![0.0, 0.0],
        };
        assert_eq!(
            d.validate().unwrap_err().to_string(),
            "sparse delta: indices not increasing at 1 then 1"
        );
        d.indices = vec![1, 4];
        assert_eq!(
            d.validate().unwrap_err().to_string(),
            "sparse delta: index 4 beyond dimension 4"
        );
        d.indices = vec![1];
        assert!(d.validate().is_err());
        d.indices = vec![0, 1];
        assert!(d.apply(&mut [0.0; 3]).is_err());
        assert!(d.apply(&mut [0.0; 4]).is_ok());
    }
}
