//! Search quality of decoded vectors: recall@k against exact f32 search.

use std::path::Path;

/// Reads a little-endian f32 NumPy `.npy` file of shape (rows, cols).
pub fn read_npy_f32(path: &Path) -> Result<(usize, usize, Vec<f32>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bad = |m: &str| format!("{}: {m}", path.display());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unsupported .npy version")),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated header"))?;
    if !header.contains("'descr': '<f4'") || header.contains("'fortran_order': True") {
        return Err(bad("expected little-endian float32 in C order"));
    }
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_, _>>()?;
    let [rows, cols] = dims[..] else {
        return Err(bad("expected a 2-d array"));
    };
    let data = &bytes[start + header_len..];
    if data.len() != rows * cols * 4 {
        return Err(bad("data length does not match the shape"));
    }
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((rows, cols, values))
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
