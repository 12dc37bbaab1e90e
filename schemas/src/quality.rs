//! Search quality of decoded vectors: recall@k against exact f32 search.

use std::path::Path;

/// Reads a whole float `.npy` file of shape (rows, cols) as f32.
pub fn read_npy_f32(path: &Path) -> Result<(usize, usize, Vec<f32>), String> {
    let bad = |e: std::io::Error| format!("{}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(bad)?;
    let mut r = std::io::BufReader::new(file);
    let h = crate::npy::read_header(&mut r).map_err(bad)?;
    let rows = usize::try_from(h.rows).map_err(|_| format!("{}: too many rows", path.display()))?;
    let (mut buf, mut row) = (Vec::new(), Vec::new());
    let mut values = Vec::with_capacity(rows * h.cols);
    for _ in 0..rows {
        crate::npy::read_f32_row(&mut r, &h, &mut buf, &mut row).map_err(bad)?;
        values.extend_from_slice(&row);
    }
    Ok((rows, h.cols, values))
}

/// The real-embedding fixture: 2,000 all-MiniLM-L6-v2 embeddings (384-d,
/// unit length) of Python standard-library docstrings.
pub fn fixture_embeddings() -> Result<Vec<Vec<f32>>, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/embeddings/embeddings.npy");
    let (_, cols, values) = read_npy_f32(&path)?;
    Ok(values.chunks_exact(cols).map(<[f32]>::to_vec).collect())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// Indices of the `k` vectors most similar (cosine) to `query`, leaving out `skip`.
pub fn top_k(vectors: &[Vec<f32>], query: &[f32], k: usize, skip: usize) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> = vectors
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != skip)
        .map(|(i, v)| (cosine(query, v), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|(_, i)| i).collect()
}

/// Mean recall@k of searching `decoded` against exact search over
/// `originals`, querying with the first `queries` original vectors (each
/// left out of its own result list).
pub fn recall_at_k(originals: &[Vec<f32>], decoded: &[Vec<f32>], queries: usize, k: usize) -> f64 {
    let queries = queries.min(originals.len());
    let mut hits = 0usize;
    for q in 0..queries {
        let truth = top_k(originals, &originals[q], k, q);
        let found = top_k(decoded, &originals[q], k, q);
        hits += found.iter().filter(|i| truth.contains(i)).count();
    }
    hits as f64 / (queries * k).max(1) as f64
}
