//! Product quantization: a vector split into `m` sub-vectors, each replaced
//! by the index of its nearest centroid in a codebook trained by k-means.
//!
//! Codebooks are versioned and named (`<collection>@<version>`); they travel
//! on their own compacted topic, and a PQ vector names the codebook it needs.

use super::{CodecError, EncodedVector, Encoding, check_finite};
use ndarray::{Array2, ArrayView2, Axis, Slice};
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng as _, SeedableRng};

/// A trained, versioned PQ codebook.
#[derive(Debug, Clone, PartialEq)]
pub struct PqCodebook {
    id: String,
    collection: String,
    version: u32,
    dim: usize,
    subspaces: usize,
    centroids: usize,
    /// `subspaces × centroids × (dim / subspaces)` values.
    data: Vec<f32>,
}

impl PqCodebook {
    /// The id every codebook of `collection` at `version` is known by.
    pub fn make_id(collection: &str, version: u32) -> String {
        format!("{collection}@{version}")
    }

    /// Builds a codebook from its parts, checking that they fit together.
    pub fn new(
        collection: impl Into<String>,
        version: u32,
        dim: usize,
        subspaces: usize,
        centroids: usize,
        data: Vec<f32>,
    ) -> Result<Self, CodecError> {
        let collection = collection.into();
        let id = Self::make_id(&collection, version);
        let invalid = |reason: String| CodecError::InvalidCodebook {
            id: id.clone(),
            reason,
        };
        if subspaces == 0 || dim == 0 || !dim.is_multiple_of(subspaces) {
            return Err(invalid(format!(
                "dimension {dim} is not a positive multiple of {subspaces} sub-spaces"
            )));
        }
        if centroids == 0 || centroids > 256 {
            return Err(invalid(format!("{centroids} centroids; expected 1 to 256")));
        }
        let expected = subspaces * centroids * (dim / subspaces);
        if data.len() != expected {
            return Err(invalid(format!(
                "{} centroid values, expected {expected}",
                data.len()
            )));
        }
        check_finite(&data).map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            id,
            collection,
            version,
            dim,
            subspaces,
            centroids,
            data,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn collection(&self) -> &str {
        &self.collection
    }
    pub fn version(&self) -> u32 {
        self.version
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn subspaces(&self) -> usize {
        self.subspaces
    }
    pub fn centroids(&self) -> usize {
        self.centroids
    }
    /// Centroid values, sub-space by sub-space.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    fn sub_dim(&self) -> usize {
        self.dim / self.subspaces
    }

    fn centroid(&self, subspace: usize, index: usize) -> &[f32] {
        let d = self.sub_dim();
        let start = (subspace * self.centroids + index) * d;
        &self.data[start..start + d]
    }

    /// Encodes `v` as one centroid index per sub-space.
    pub fn encode(&self, v: &[f32]) -> Result<EncodedVector, CodecError> {
        check_finite(v)?;
        if v.len() != self.dim {
            return Err(CodecError::DimensionMismatch {
                expected: self.dim,
                actual: v.len(),
            });
        }
        let d = self.sub_dim();
        let data = v
            .chunks_exact(d)
            .enumerate()
            .map(|(j, sub)| nearest((0..self.centroids).map(|c| self.centroid(j, c)), sub) as u8)
            .collect();
        Ok(EncodedVector {
            encoding: Encoding::Pq,
            dim: self.dim as u32,
            data,
            scale: 1.0,
            offset: 0.0,
            codebook_id: Some(self.id.clone()),
        })
    }

    /// Decodes a PQ vector that names this codebook.
    pub fn decode_into(&self, e: &EncodedVector, out: &mut Vec<f32>) -> Result<(), CodecError> {
        out.clear();
        let named = e.codebook_id.as_deref().unwrap_or_default();
        if named != self.id {
            return Err(CodecError::CodebookMismatch {
                named: named.to_owned(),
                given: self.id.clone(),
            });
        }
        if e.dim as usize != self.dim {
            return Err(CodecError::DimensionMismatch {
                expected: self.dim,
                actual: e.dim as usize,
            });
        }
        e.check_len(self.subspaces)?;
        out.reserve(self.dim);
        for (j, &index) in e.data.iter().enumerate() {
            let index = usize::from(index);
            if index >= self.centroids {
                out.clear();
                return Err(CodecError::InvalidParameters {
                    encoding: Encoding::Pq,
                    reason: "centroid index beyond the codebook",
                });
            }
            out.extend_from_slice(self.centroid(j, index));
        }
        Ok(())
    }
}

fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Index of the candidate nearest to `x`.
fn nearest<'a>(candidates: impl Iterator<Item = &'a [f32]>, x: &[f32]) -> usize {
    let mut best = (0, f32::INFINITY);
    for (i, c) in candidates.enumerate() {
        let d = squared_distance(c, x);
        if d < best.1 {
            best = (i, d);
        }
    }
    best.0
}

/// Trains PQ codebooks by k-means (Lloyd's algorithm) in every sub-space.
#[derive(Debug, Clone)]
pub struct PqTrainer {
    /// Number of sub-vectors; the dimension must be a multiple of it.
    pub subspaces: usize,
    /// Centroids per sub-space, at most 256 (one byte per index).
    pub centroids: usize,
    /// Lloyd iterations per sub-space.
    pub iterations: usize,
    /// Seed for the initial centroids, so training is reproducible.
    pub seed: u64,
}

impl Default for PqTrainer {
    fn default() -> Self {
        Self {
            subspaces: 96,
            centroids: 256,
            iterations: 12,
            seed: 0x5eed,
        }
    }
}

impl PqTrainer {
    /// Trains a codebook on the rows of `data` (one vector per row).
    pub fn train(
        &self,
        collection: &str,
        version: u32,
        data: ArrayView2<'_, f32>,
    ) -> Result<PqCodebook, CodecError> {
        let (n, dim) = data.dim();
        let invalid = |reason: String| CodecError::InvalidCodebook {
            id: PqCodebook::make_id(collection, version),
            reason,
        };
        if self.subspaces == 0 || dim == 0 || !dim.is_multiple_of(self.subspaces) {
            return Err(invalid(format!(
                "dimension {dim} is not a positive multiple of {} sub-spaces",
                self.subspaces
            )));
        }
        if !(1..=256).contains(&self.centroids) || n < self.centroids {
            return Err(invalid(format!(
                "{n} training vectors for {} centroids (1 to 256, and no more than the vectors)",
                self.centroids
            )));
        }
        if let Some(bad) = data.iter().find(|x| !x.is_finite()) {
            return Err(invalid(format!(
                "training data holds a non-finite value {bad}"
            )));
        }
        let d = dim / self.subspaces;
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut out = Vec::with_capacity(self.subspaces * self.centroids * d);
        for j in 0..self.subspaces {
            // A contiguous copy of the sub-space keeps every row a plain slice.
            let sub: Vec<f32> = data
                .slice_axis(Axis(1), Slice::from(j * d..(j + 1) * d))
                .iter()
                .copied()
                .collect();
            let sub = Array2::from_shape_vec((n, d), sub)
                .map_err(|e| invalid(format!("sub-space {j}: {e}")))?;
            let centroids = self.kmeans(sub.view(), &mut rng);
            out.extend(centroids.iter());
        }
        PqCodebook::new(
            collection,
            version,
            dim,
            self.subspaces,
            self.centroids,
            out,
        )
    }

    /// k-means++ seeding: each next centroid is drawn with probability
    /// proportional to its squared distance from the nearest one so far, so
    /// no cluster of the data starts without a centroid.
    fn kmeans_plus_plus(x: ArrayView2<'_, f32>, k: usize, rng: &mut StdRng) -> Array2<f32> {
        let n = x.nrows();
        let row = |i: usize| x.row(i).to_slice().unwrap_or_default();
        let mut centroids = Array2::<f32>::zeros((k, x.ncols()));
        let first = rng.random_range(0..n);
        centroids.row_mut(0).assign(&x.row(first));
        let mut d2: Vec<f32> = (0..n)
            .map(|i| squared_distance(row(i), row(first)))
            .collect();
        for c in 1..k {
            let total: f64 = d2.iter().map(|&d| f64::from(d)).sum();
            let pick = if total > 0.0 {
                let mut target = rng.random_range(0.0..total);
                d2.iter()
                    .position(|&d| {
                        target -= f64::from(d);
                        target < 0.0
                    })
                    .unwrap_or(n - 1)
            } else {
                // Every point already coincides with a centroid.
                sample(rng, n, 1).index(0)
            };
            centroids.row_mut(c).assign(&x.row(pick));
            for (i, d) in d2.iter_mut().enumerate() {
                *d = d.min(squared_distance(row(i), row(pick)));
            }
        }
        centroids
    }

    fn kmeans(&self, x: ArrayView2<'_, f32>, rng: &mut StdRng) -> Array2<f32> {
        let (n, d) = x.dim();
        let k = self.centroids;
        let mut centroids = Self::kmeans_plus_plus(x, k, rng);
        let mut assignment = vec![0usize; n];
        for _ in 0..self.iterations {
            for (i, row) in x.axis_iter(Axis(0)).enumerate() {
                let row = row.as_slice().unwrap_or_default();
                assignment[i] = nearest(
                    centroids
                        .axis_iter(Axis(0))
                        .map(|c| c.to_slice().unwrap_or_default()),
                    row,
                );
            }
            let mut sums = Array2::<f32>::zeros((k, d));
            let mut counts = vec![0usize; k];
            for (i, &c) in assignment.iter().enumerate() {
                let mut s = sums.row_mut(c);
                s += &x.row(i);
                counts[c] += 1;
            }
            for (c, &count) in counts.iter().enumerate() {
                if count == 0 {
                    // An empty cluster restarts at a random training vector.
                    let row = rng.random_range(0..n);
                    centroids.row_mut(c).assign(&x.row(row));
                } else {
                    let mean = &sums.row(c) / count as f32;
                    centroids.row_mut(c).assign(&mean);
                }
            }
        }
        centroids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop_assert_eq, proptest};
    use rand::Rng;

    fn clustered(n: usize, dim: usize, seed: u64) -> Array2<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let centers: Vec<Vec<f32>> = (0..4)
            .map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        Array2::from_shape_fn((n, dim), |(i, j)| {
            centers[i % 4][j] + rng.random_range(-0.01..0.01)
        })
    }

    fn small_trainer() -> PqTrainer {
        PqTrainer {
            subspaces: 4,
            centroids: 8,
            iterations: 8,
            seed: 1,
        }
    }

    #[test]
    fn trained_codebook_reconstructs_clustered_data_closely() {
        let data = clustered(200, 16, 7);
        let book = small_trainer().train("docs", 1, data.view()).unwrap();
        assert_eq!(book.id(), "docs@1");
        for row in data.axis_iter(Axis(0)) {
            let v = row.to_vec();
            let e = book.encode(&v).unwrap();
            assert_eq!(e.data.len(), 4);
            let back = e.decode(Some(&book)).unwrap();
            assert!(squared_distance(&v, &back) < 0.01, "{v:?} -> {back:?}");
        }
    }

    #[test]
    fn decoding_refuses_another_codebook_and_bad_indices() {
        let data = clustered(64, 8, 3);
        let trainer = PqTrainer {
            subspaces: 2,
            ..small_trainer()
        };
        let v1 = trainer.train("docs", 1, data.view()).unwrap();
        let v2 = trainer.train("docs", 2, data.view()).unwrap();
        let mut e = v1.encode(&data.row(0).to_vec()).unwrap();
        assert_eq!(
            e.decode(Some(&v2)).unwrap_err(),
            CodecError::CodebookMismatch {
                named: "docs@1".into(),
                given: "docs@2".into()
            }
        );
        e.data[1] = 200;
        assert!(matches!(
            e.decode(Some(&v1)),
            Err(CodecError::InvalidParameters { .. })
        ));
        e.data.push(0);
        assert!(matches!(
            e.decode(Some(&v1)),
            Err(CodecError::WrongLength { .. })
        ));
    }

    #[test]
    fn training_refuses_unfit_shapes() {
        let data = clustered(5, 10, 1);
        assert!(small_trainer().train("docs", 1, data.view()).is_err());
        let data = clustered(50, 16, 1);
        let err = PqTrainer {
            centroids: 300,
            ..small_trainer()
        }
        .train("docs", 1, data.view());
        assert!(err.is_err());
    }

    #[test]
    fn codebook_parts_must_fit() {
        assert!(PqCodebook::new("docs", 1, 8, 2, 4, vec![0.0; 32]).is_ok());
        assert!(PqCodebook::new("docs", 1, 8, 2, 4, vec![0.0; 31]).is_err());
        assert!(PqCodebook::new("docs", 1, 8, 3, 4, vec![0.0; 32]).is_err());
        assert!(PqCodebook::new("docs", 1, 8, 2, 4, vec![f32::NAN; 32]).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_pq_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..10), dim in 0u32..20) {
            let book = PqCodebook::new("docs", 1, 8, 2, 4, (0..32).map(|x| x as f32).collect()).unwrap();
            let e = EncodedVector { encoding: Encoding::Pq, dim, data, scale: 1.0, offset: 0.0, codebook_id: Some("docs@1".into()) };
            if let Ok(v) = e.decode(Some(&book)) {
                prop_assert_eq!(v.len(), 8);
            }
        }
    }
}
