//! Vector codecs: how a vector travels in a delta event.
//!
//! | encoding | bytes for d dims | decoded error bound |
//! |----------|------------------|---------------------|
//! | `f32`    | 4·d              | exact |
//! | `f16`    | 2·d              | f16 rounding (relative 2⁻¹¹) |
//! | `sq8`    | d                | half a step, step = (max − min) / 255 |
//! | `sq4`    | ⌈d/2⌉            | half a step, step = (max − min) / 15 |
//! | `pq`     | m (sub-spaces)   | distance to the nearest centroid |
//! | `binary` | ⌈d/8⌉            | sign only; every dimension decodes to ±mean(abs) |
//!
//! Encoders refuse NaN and infinite values; decoders refuse any input whose
//! length, dimension or codebook does not fit, and never panic.

mod pq;
mod sparse;

pub use pq::{PqCodebook, PqTrainer};
pub use sparse::SparseDelta;

use half::f16;
use std::fmt;
use std::str::FromStr;

/// How a vector's values are written on the wire.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    F32,
    F16,
    #[default]
    Sq8,
    Sq4,
    Pq,
    Binary,
}

impl Encoding {
    pub const ALL: [Encoding; 6] = [
        Encoding::F32,
        Encoding::F16,
        Encoding::Sq8,
        Encoding::Sq4,
        Encoding::Pq,
        Encoding::Binary,
    ];

    /// The lowercase name used in config files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::F32 => "f32",
            Encoding::F16 => "f16",
            Encoding::Sq8 => "sq8",
            Encoding::Sq4 => "sq4",
            Encoding::Pq => "pq",
            Encoding::Binary => "binary",
        }
    }

    /// Bytes of `data` for a vector of `dim` dimensions (for PQ, `dim` is
    /// the number of sub-spaces).
    pub fn data_len(self, dim: usize) -> usize {
        match self {
            Encoding::F32 => dim * 4,
            Encoding::F16 => dim * 2,
            Encoding::Sq8 | Encoding::Pq => dim,
            Encoding::Sq4 => dim.div_ceil(2),
            Encoding::Binary => dim.div_ceil(8),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encoding {
    type Err = CodecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Encoding::ALL
            .into_iter()
            .find(|e| e.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| CodecError::UnknownEncoding(s.to_owned()))
    }
}

/// Why a vector could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("unknown vector encoding {0:?} (expected one of f32, f16, sq8, sq4, pq, binary)")]
    UnknownEncoding(String),
    #[error("vector has a non-finite value {value} at dimension {index}")]
    NonFinite { index: usize, value: f32 },
    #[error("vector value {value} at dimension {index} is outside the f16 range")]
    OutOfF16Range { index: usize, value: f32 },
    #[error("vector has {actual} dimensions, expected {expected}")]
    DimensionMismatch { expected: usize, actual: usize },
    #[error("{encoding} data for {dim} dimensions must be {expected} bytes, got {actual}")]
    WrongLength {
        encoding: Encoding,
        dim: usize,
        expected: usize,
        actual: usize,
    },
    #[error("invalid {encoding} parameters: {reason}")]
    InvalidParameters {
        encoding: Encoding,
        reason: &'static str,
    },
    #[error("unknown pq codebook {0:?}")]
    UnknownCodebook(String),
    #[error("pq vector names codebook {named:?} but {given:?} was given")]
    CodebookMismatch { named: String, given: String },
    #[error("pq codebook {id}: {reason}")]
    InvalidCodebook { id: String, reason: String },
    #[error("sparse delta: {0}")]
    InvalidSparseDelta(String),
    #[error("payload: {0}")]
    InvalidPayload(String),
}

/// A vector as it travels: encoding, parameters and bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedVector {
    pub encoding: Encoding,
    /// Dimensions of the original vector.
    pub dim: u32,
    pub data: Vec<u8>,
    /// SQ8/SQ4: step between levels; binary: decoded magnitude; else 1.
    pub scale: f32,
    /// SQ8/SQ4: value of level 0; else 0.
    pub offset: f32,
    /// PQ: the codebook the indices refer to.
    pub codebook_id: Option<String>,
}

/// Rejects NaN and infinite values, naming the first offender.
pub fn check_finite(v: &[f32]) -> Result<(), CodecError> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(CodecError::NonFinite {
            index,
            value: v[index],
        }),
        None => Ok(()),
    }
}

/// Minimum and maximum of a non-empty vector in one pass, refusing NaN and
/// infinite values. Eight independent lanes let the compiler vectorize it.
#[allow(clippy::eq_op)] // `x - x` is the point: it turns non-finite values into NaN.
fn min_max_finite(v: &[f32]) -> Result<(f32, f32), CodecError> {
    let mut lo = [f32::INFINITY; 8];
    let mut hi = [f32::NEG_INFINITY; 8];
    // x - x is 0 for finite x and NaN for NaN or ±inf.
    let mut poison = [0.0f32; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
            poison[i] += c[i] - c[i];
        }
    }
    for (i, &x) in chunks.remainder().iter().enumerate() {
        lo[i] = lo[i].min(x);
        hi[i] = hi[i].max(x);
        poison[i] += x - x;
    }
    if poison.iter().any(|p| p.is_nan()) {
        check_finite(v)?;
    }
    let min = lo.into_iter().fold(f32::INFINITY, f32::min);
    let max = hi.into_iter().fold(f32::NEG_INFINITY, f32::max);
    Ok((min, max))
}

impl EncodedVector {
    /// Encodes `v` with any encoding but PQ (which needs a codebook: use
    /// [`PqCodebook::encode`]).
    pub fn encode(encoding: Encoding, v: &[f32]) -> Result<Self, CodecError> {
        let mut out = Self {
            encoding,
            dim: 0,
            data: Vec::new(),
            scale: 1.0,
            offset: 0.0,
            codebook_id: None,
        };
        out.encode_from(encoding, v)?;
        Ok(out)
    }

    /// Like [`EncodedVector::encode`], reusing this vector's buffer.
    pub fn encode_from(&mut self, encoding: Encoding, v: &[f32]) -> Result<(), CodecError> {
        if !matches!(encoding, Encoding::Sq8 | Encoding::Sq4) {
            check_finite(v)?;
        }
        self.encoding = encoding;
        self.dim = u32::try_from(v.len()).map_err(|_| CodecError::DimensionMismatch {
            expected: u32::MAX as usize,
            actual: v.len(),
        })?;
        self.scale = 1.0;
        self.offset = 0.0;
        self.codebook_id = None;
        self.data.clear();
        self.data.reserve(encoding.data_len(v.len()));
        match encoding {
            Encoding::F32 => v
                .iter()
                .for_each(|x| self.data.extend_from_slice(&x.to_le_bytes())),
            Encoding::F16 => {
                for (index, &x) in v.iter().enumerate() {
                    let h = f16::from_f32(x);
                    if h.is_infinite() {
                        return Err(CodecError::OutOfF16Range { index, value: x });
                    }
                    self.data.extend_from_slice(&h.to_le_bytes());
                }
            }
            Encoding::Sq8 => self.encode_scalar(v, 255)?,
            Encoding::Sq4 => self.encode_scalar(v, 15)?,
            Encoding::Binary => {
                let mean_abs =
                    v.iter().map(|x| x.abs() as f64).sum::<f64>() / v.len().max(1) as f64;
                self.scale = mean_abs as f32;
                for chunk in v.chunks(8) {
                    let byte = chunk
                        .iter()
                        .enumerate()
                        .fold(0u8, |b, (i, &x)| b | (u8::from(x > 0.0) << i));
                    self.data.push(byte);
                }
            }
            Encoding::Pq => {
                return Err(CodecError::InvalidParameters {
                    encoding,
                    reason: "pq vectors are encoded with a codebook",
                });
            }
        }
        Ok(())
    }

    /// Uniform scalar quantization to `levels + 1` levels between min and max.
    fn encode_scalar(&mut self, v: &[f32], levels: u8) -> Result<(), CodecError> {
        if v.is_empty() {
            return Ok(());
        }
        let (min, max) = min_max_finite(v)?;
        let step = (max - min) / f32::from(levels);
        if !step.is_finite() {
            return Err(CodecError::InvalidParameters {
                encoding: self.encoding,
                reason: "the vector's range exceeds f32",
            });
        }
        self.offset = min;
        self.scale = step;
        let inv = if step > 0.0 { 1.0 / step } else { 0.0 };
        // (x - min) * inv is in [0, levels]: adding 0.5 and truncating rounds
        // to the nearest level without a call to `round`, and the saturating
        // cast keeps float error from spilling past the top level.
        let quantize = |x: f32| ((x - min) * inv + 0.5) as u8;
        if levels == 255 {
            let start = self.data.len();
            self.data.resize(start + v.len(), 0);
            for (q, &x) in self.data[start..].iter_mut().zip(v) {
                *q = quantize(x);
            }
        } else {
            for pair in v.chunks(2) {
                let lo = quantize(pair[0]).min(levels);
                let hi = pair.get(1).map_or(0, |&x| quantize(x).min(levels));
                self.data.push(lo | (hi << 4));
            }
        }
        Ok(())
    }

    /// Decodes into `out` (cleared first). PQ vectors need their codebook.
    pub fn decode_into(
        &self,
        codebook: Option<&PqCodebook>,
        out: &mut Vec<f32>,
    ) -> Result<(), CodecError> {
        out.clear();
        let dim = self.dim as usize;
        if self.encoding == Encoding::Pq {
            let named = self.codebook_id.as_deref().unwrap_or_default();
            let book = codebook.ok_or_else(|| CodecError::UnknownCodebook(named.to_owned()))?;
            return book.decode_into(self, out);
        }
        self.check_len(dim)?;
        if !self.scale.is_finite() || !self.offset.is_finite() {
            return Err(CodecError::InvalidParameters {
                encoding: self.encoding,
                reason: "scale and offset must be finite",
            });
        }
        out.reserve(dim);
        match self.encoding {
            Encoding::F32 => out.extend(
                self.data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            Encoding::F16 => out.extend(
                self.data
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            Encoding::Sq8 => out.extend(
                self.data
                    .iter()
                    .map(|&q| self.offset + f32::from(q) * self.scale),
            ),
            Encoding::Sq4 => {
                for &b in &self.data {
                    out.push(self.offset + f32::from(b & 0x0f) * self.scale);
                    out.push(self.offset + f32::from(b >> 4) * self.scale);
                }
                out.truncate(dim);
            }
            Encoding::Binary => {
                for i in 0..dim {
                    let bit = (self.data[i / 8] >> (i % 8)) & 1;
                    out.push(if bit == 1 { self.scale } else { -self.scale });
                }
            }
            Encoding::Pq => unreachable!("handled above"),
        }
        if let Err(e) = check_finite(out) {
            out.clear();
            return Err(e);
        }
        Ok(())
    }

    /// Decodes into a new vector.
    pub fn decode(&self, codebook: Option<&PqCodebook>) -> Result<Vec<f32>, CodecError> {
        let mut out = Vec::new();
        self.decode_into(codebook, &mut out)?;
        Ok(out)
    }

    fn check_len(&self, units: usize) -> Result<(), CodecError> {
        let expected = self.encoding.data_len(units);
        if self.data.len() != expected {
            return Err(CodecError::WrongLength {
                encoding: self.encoding,
                dim: self.dim as usize,
                expected,
                actual: self.data.len(),
            });
        }
        Ok(())
    }

    /// Bytes this vector takes on the wire, parameters included.
    pub fn wire_len(&self) -> usize {
        self.data.len() + 8 + self.codebook_id.as_ref().map_or(0, String::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn finite_vec(max_dim: usize) -> impl Strategy<Value = Vec<f32>> {
        proptest::collection::vec(-1.0e3f32..1.0e3, 1..max_dim)
    }

    proptest! {
        #[test]
        fn f32_round_trips_exactly(v in finite_vec(300)) {
            let e = EncodedVector::encode(Encoding::F32, &v).unwrap();
            prop_assert_eq!(e.decode(None).unwrap(), v);
        }

        #[test]
        fn f16_round_trips_within_f16_precision(v in finite_vec(300)) {
            let e = EncodedVector::encode(Encoding::F16, &v).unwrap();
            prop_assert_eq!(e.data.len(), v.len() * 2);
            for (x, y) in v.iter().zip(e.decode(None).unwrap()) {
                // f16 has an 11-bit significand: relative error ≤ 2^-11, plus
                // subnormal spacing near zero.
                prop_assert!((x - y).abs() <= x.abs() * 2f32.powi(-11) + 2f32.powi(-24), "{x} -> {y}");
            }
        }

        #[test]
        fn sq8_round_trips_within_half_a_step(v in finite_vec(300)) {
            let e = EncodedVector::encode(Encoding::Sq8, &v).unwrap();
            prop_assert_eq!(e.data.len(), v.len());
            let (min, max) = v.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            let step = (max - min) / 255.0;
            for (x, y) in v.iter().zip(e.decode(None).unwrap()) {
                // Half a step, plus the float rounding of offset + q * scale.
                prop_assert!((x - y).abs() <= step / 2.0 + (max.abs().max(min.abs())) * 1e-6, "{x} -> {y}, step {step}");
            }
        }

        #[test]
        fn sq4_round_trips_within_half_a_step(v in finite_vec(300)) {
            let e = EncodedVector::encode(Encoding::Sq4, &v).unwrap();
            prop_assert_eq!(e.data.len(), v.len().div_ceil(2));
            let (min, max) = v.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            let step = (max - min) / 15.0;
            let decoded = e.decode(None).unwrap();
            prop_assert_eq!(decoded.len(), v.len());
            for (x, y) in v.iter().zip(decoded) {
                prop_assert!((x - y).abs() <= step / 2.0 + (max.abs().max(min.abs())) * 1e-6);
            }
        }

        #[test]
        fn binary_keeps_every_sign(v in finite_vec(300)) {
            let e = EncodedVector::encode(Encoding::Binary, &v).unwrap();
            let decoded = e.decode(None).unwrap();
            prop_assert_eq!(decoded.len(), v.len());
            for (x, y) in v.iter().zip(decoded) {
                prop_assert_eq!(*x > 0.0, y > 0.0);
            }
        }

        /// Arbitrary parameters and bytes never panic the decoder.
        #[test]
        fn decoding_arbitrary_input_never_panics(
            enc in 0usize..6, dim in 0u32..2000, data in proptest::collection::vec(any::<u8>(), 0..600),
            scale in any::<f32>(), offset in any::<f32>()
        ) {
            let e = EncodedVector { encoding: Encoding::ALL[enc], dim, data, scale, offset, codebook_id: None };
            if let Ok(v) = e.decode(None) {
                prop_assert_eq!(v.len(), dim as usize);
            }
        }
    }

    #[test]
    fn encoders_refuse_non_finite_values() {
        for enc in [
            Encoding::F32,
            Encoding::F16,
            Encoding::Sq8,
            Encoding::Sq4,
            Encoding::Binary,
        ] {
            let err = EncodedVector::encode(enc, &[0.0, f32::NAN]).unwrap_err();
            assert_eq!(
                err.to_string(),
                "vector has a non-finite value NaN at dimension 1"
            );
            let err = EncodedVector::encode(enc, &[f32::INFINITY]).unwrap_err();
            assert!(matches!(err, CodecError::NonFinite { index: 0, .. }));
        }
    }

    #[test]
    fn f16_refuses_values_it_cannot_hold() {
        let err = EncodedVector::encode(Encoding::F16, &[1.0, 1.0e6]).unwrap_err();
        assert_eq!(
            err,
            CodecError::OutOfF16Range {
                index: 1,
                value: 1.0e6
            }
        );
    }

    #[test]
    fn wrong_length_is_named() {
        let mut e = EncodedVector::encode(Encoding::Sq8, &[1.0, 2.0, 3.0]).unwrap();
        e.data.pop();
        assert_eq!(
            e.decode(None).unwrap_err().to_string(),
            "sq8 data for 3 dimensions must be 3 bytes, got 2"
        );
    }

    #[test]
    fn pq_without_codebook_is_refused() {
        let e = EncodedVector {
            encoding: Encoding::Pq,
            dim: 4,
            data: vec![0, 1],
            scale: 1.0,
            offset: 0.0,
            codebook_id: Some("docs@1".into()),
        };
        assert_eq!(
            e.decode(None).unwrap_err(),
            CodecError::UnknownCodebook("docs@1".into())
        );
    }

    #[test]
    fn constant_vectors_survive_scalar_quantization() {
        for enc in [Encoding::Sq8, Encoding::Sq4] {
            let e = EncodedVector::encode(enc, &[0.25; 5]).unwrap();
            assert_eq!(e.decode(None).unwrap(), vec![0.25; 5]);
        }
    }

    #[test]
    fn encoding_names_parse() {
        for e in Encoding::ALL {
            assert_eq!(e.as_str().parse::<Encoding>().unwrap(), e);
        }
        assert!("int8".parse::<Encoding>().is_err());
    }
}
