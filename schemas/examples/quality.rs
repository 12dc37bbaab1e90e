//! Quality report: for each encoding, bytes on the wire and recall@10 of
//! search over decoded vectors against exact f32 search, on the
//! real-embedding fixture (2,000 all-MiniLM-L6-v2 vectors, 384-d).
//!
//!     cargo run --release -p vecsync-schemas --example quality

use ndarray::Array2;
use vecsync_schemas::event::DeltaEvent;
use vecsync_schemas::quality::{fixture_embeddings, recall_at_k};
use vecsync_schemas::testing::upsert_of;
use vecsync_schemas::vector::{EncodedVector, Encoding, PqTrainer};
use vecsync_schemas::wire::Encoder;

fn main() -> Result<(), String> {
    let vectors = fixture_embeddings()?;
    let (n, dim) = (vectors.len(), vectors[0].len());
    let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
    let training = Array2::from_shape_vec((n, dim), flat).map_err(|e| e.to_string())?;
    let trainer = PqTrainer::default();
    let codebook = trainer
        .train("docs", 1, training.view())
        .map_err(|e| e.to_string())?;
    let framer = Encoder::<DeltaEvent>::with_id(1);

    println!("fixture: {n} vectors, {dim}-d; queries: all {n}, each left out of its own results");
    println!(
        "pq: {} sub-spaces x {} centroids, trained on the fixture itself\n",
        trainer.subspaces, trainer.centroids
    );
    println!("| encoding | vector bytes | framed event bytes | % of f32 event | recall@10 |");
    println!("|---|---:|---:|---:|---:|");
    let mut f32_event = 0;
    for encoding in Encoding::ALL {
        let encoded: Vec<EncodedVector> = vectors
            .iter()
            .map(|v| match encoding {
                Encoding::Pq => codebook.encode(v),
                e => EncodedVector::encode(e, v),
            })
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let decoded: Vec<Vec<f32>> = encoded
            .iter()
            .map(|e| e.decode(Some(&codebook)))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let event_bytes = framed_len(&framer, encoded[0].clone());
        if encoding == Encoding::F32 {
            f32_event = event_bytes;
        }
        let recall = recall_at_k(&vectors, &decoded, n, 10);
        println!(
            "| {encoding} | {} | {event_bytes} | {:.1}% | {recall:.4} |",
            encoded[0].wire_len(),
            100.0 * event_bytes as f64 / f32_event as f64
        );
    }

    println!("\nframed upsert bytes (no payload) by dimension, % of f32:\n");
    println!("| dim | f32 | f16 | sq8 | sq4 | binary |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for dim in [384, 768, 1536] {
        let v = vecsync_schemas::testing::vector(dim, 1);
        let sizes: Vec<usize> = [
            Encoding::F32,
            Encoding::F16,
            Encoding::Sq8,
            Encoding::Sq4,
            Encoding::Binary,
        ]
        .into_iter()
        .map(|e| EncodedVector::encode(e, &v).map(|ev| framed_len(&framer, ev)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
        let cells: Vec<String> = sizes
            .iter()
            .map(|&b| format!("{b} ({:.1}%)", 100.0 * b as f64 / sizes[0] as f64))
            .collect();
        println!("| {dim} | {} |", cells.join(" | "));
    }
    Ok(())
}

/// Bytes of the Kafka record value for an upsert of `vector` without payload.
fn framed_len(framer: &Encoder<DeltaEvent>, vector: EncodedVector) -> usize {
    framer.encode(&upsert_of(vector)).len()
}
