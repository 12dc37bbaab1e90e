//! Quality goals on real embeddings: what each encoding keeps of search
//! quality and what it costs on the wire. The full report is
//! `cargo run --release -p vecsync-schemas --example quality`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use vecsync_schemas::quality::{fixture_embeddings, recall_at_k};
use vecsync_schemas::vector::{EncodedVector, Encoding};

const QUERIES: usize = 200;

fn decoded(vectors: &[Vec<f32>], encoding: Encoding) -> (Vec<Vec<f32>>, usize) {
    let encoded: Vec<EncodedVector> = vectors
        .iter()
        .map(|v| EncodedVector::encode(encoding, v).unwrap())
        .collect();
    let bytes = encoded[0].wire_len();
    (
        encoded.iter().map(|e| e.decode(None).unwrap()).collect(),
        bytes,
    )
}

#[test]
fn sq8_keeps_recall_at_a_quarter_of_the_bytes() {
    let vectors = fixture_embeddings().unwrap();
    assert_eq!((vectors.len(), vectors[0].len()), (2000, 384));

    let (exact, f32_bytes) = decoded(&vectors, Encoding::F32);
    assert_eq!(recall_at_k(&vectors, &exact, QUERIES, 10), 1.0);

    let (sq8, sq8_bytes) = decoded(&vectors, Encoding::Sq8);
    let recall = recall_at_k(&vectors, &sq8, QUERIES, 10);
    assert!(recall >= 0.99, "sq8 recall@10 {recall}");
    assert!(
        sq8_bytes * 100 <= f32_bytes * 27,
        "sq8 {sq8_bytes} bytes vs f32 {f32_bytes}"
    );

    let (f16, _) = decoded(&vectors, Encoding::F16);
    assert!(recall_at_k(&vectors, &f16, QUERIES, 10) >= 0.99);

    // Binary keeps signs only: far worse, but well above chance (10/1999).
    let (binary, _) = decoded(&vectors, Encoding::Binary);
    let recall = recall_at_k(&vectors, &binary, QUERIES, 10);
    assert!(
        recall > 0.2 && recall < recall_at_k(&vectors, &sq8, QUERIES, 10),
        "binary {recall}"
    );
}
