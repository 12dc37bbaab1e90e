//! Search quality after replication: the real-embedding fixture (2,000
//! all-MiniLM-L6-v2 vectors, 384-d) is published in one region with each
//! encoding, and the other region's engine is searched; recall@10 is
//! against exact f32 cosine search over the originals at the origin.

use crate::bed::{Bed, BedSpec, COLLECTION, ClusterKind};
use crate::recorder::Book;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use vecsync_producer::Mutation;
use vecsync_schemas::config::VectorDatatype;
use vecsync_schemas::event::PointId;
use vecsync_schemas::quality::{fixture_embeddings, top_k};
use vecsync_schemas::vector::Encoding;

/// One encoding's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallRow {
    pub encoding: Encoding,
    /// Mean recall@10 in the remote region.
    pub recall_at_10: f64,
    /// Bytes of a framed event on the wire, on average.
    pub bytes_per_event: f64,
    pub queries: usize,
}

/// Runs every encoding in turn and measures recall@10 over `queries`
/// queries (the first fixture vectors, each left out of its own results),
/// the stores keeping vectors as `vector_datatype`.
pub async fn recall(
    encodings: &[Encoding],
    queries: usize,
    vector_datatype: VectorDatatype,
    book: &Arc<Book>,
) -> anyhow::Result<Vec<RecallRow>> {
    let originals = fixture_embeddings().map_err(anyhow::Error::msg)?;
    let dimension = originals.first().map_or(0, Vec::len);
    let mut rows = Vec::new();
    for &encoding in encodings {
        let bed = Bed::start(&BedSpec {
            regions: 2,
            dimension: u32::try_from(dimension)?,
            encoding,
            heartbeat_interval_ms: 20,
            batch_max_events: 1_000,
            flush_interval_ms: 100,
            vector_datatype,
            mirrored: false,
            clusters: ClusterKind::Mock,
        })
        .await?;
        let row = measure(&bed, encoding, &originals, queries, book).await;
        bed.stop().await?;
        rows.push(row?);
    }
    Ok(rows)
}

async fn measure(
    bed: &Bed,
    encoding: Encoding,
    originals: &[Vec<f32>],
    queries: usize,
    book: &Arc<Book>,
) -> anyhow::Result<RecallRow> {
    let (origin, remote) = (&bed.regions[0], &bed.regions[1]);
    let pair = (origin.name.clone(), remote.name.clone());
    let handled_before = book.handled().get(&pair).copied().unwrap_or(0);
    let (events_before, bytes_before) = (
        book.events.load(Ordering::Relaxed),
        book.bytes.load(Ordering::Relaxed),
    );
    for (start, chunk) in (0u64..).step_by(100).zip(originals.chunks(100)) {
        let batch: Vec<Mutation> = (start..)
            .zip(chunk)
            .map(|(id, v)| Mutation::Upsert {
                id: PointId::Num(id),
                vector: v.clone(),
                payload: None,
            })
            .collect();
        origin.publisher.publish(COLLECTION, &batch).await?;
    }
    let wanted = handled_before + originals.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while book.handled().get(&pair).copied().unwrap_or(0) < wanted {
        if Instant::now() > deadline {
            bail!(
                "{} did not receive the fixture with {encoding}",
                remote.name
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queries = queries.min(originals.len());
    let mut hits = 0;
    for q in 0..queries {
        let truth = top_k(originals, &originals[q], 10, q);
        let found = remote
            .store
            .search(COLLECTION, originals[q].clone(), 11)
            .with_context(|| format!("searching {}", remote.name))?;
        let found: Vec<usize> = found
            .into_iter()
            .filter_map(|(id, _)| match id {
                PointId::Num(n) => usize::try_from(n).ok(),
                PointId::Uuid(_) => None,
            })
            .filter(|i| *i != q)
            .take(10)
            .collect();
        hits += found.iter().filter(|i| truth.contains(i)).count();
    }
    let events = book.events.load(Ordering::Relaxed) - events_before;
    let bytes = book.bytes.load(Ordering::Relaxed) - bytes_before;
    Ok(RecallRow {
        encoding,
        recall_at_10: hits as f64 / (queries * 10).max(1) as f64,
        bytes_per_event: bytes as f64 / events.max(1) as f64,
        queries,
    })
}
