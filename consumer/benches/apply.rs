//! Consumer throughput, release build.
//!
//! 1. Apply: decoded 768-d sq8 upserts applied to the embedded store
//!    (qdrant-edge) in batches, each batch read, applied, written and flushed
//!    as the worker does.
//! 2. Flush: the time a flush takes after a batch of 100 to one collection,
//!    alone and beside 9 collections nobody writes to.
//! 3. Catch-up: a backlog of delta events on a local tansu broker replayed by
//!    a worker from scratch (decode, reorder, apply, flush, commit) until the
//!    store holds every point.
//!
//! `cargo bench -p vecsync-consumer --bench apply [-- APPLY_EVENTS BACKLOG_EVENTS]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vecsync_consumer::applier::Applier;
use vecsync_consumer::store::Store;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_consumer::worker;
use vecsync_devkit::testbed::TestRegion;
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::config::{CollectionConfig, Distance};
use vecsync_schemas::event::{DeltaEvent, PointId};
use vecsync_schemas::testing::{upsert, vector};
use vecsync_schemas::vector::Encoding;

const DIM: usize = 768;
const BATCH: usize = 1_000;

/// The collection written, as the worker configures it.
fn docs() -> HashMap<String, CollectionConfig> {
    HashMap::from([(
        "docs".to_owned(),
        CollectionConfig {
            dimension: DIM as u32,
            distance: Distance::Cosine,
            encoding: Encoding::Sq8,
            codebook_file: None,
            residency: Default::default(),
        },
    )])
}

/// A store holding `docs` and `idle` more collections.
fn store_with(idle: usize) -> (tempfile::TempDir, EdgeStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EdgeStore::open(dir.path()).unwrap();
    for name in std::iter::once("docs".to_owned()).chain((0..idle).map(|i| format!("idle{i}"))) {
        store
            .ensure_collection(&name, DIM, Distance::Cosine)
            .unwrap();
    }
    (dir, store)
}

fn apply_throughput(events: usize) -> f64 {
    let (_dir, store) = store_with(0);
    let (collections, codebooks) = (docs(), HashMap::new());
    let all: Vec<DeltaEvent> = (0..events as u64)
        .map(|i| upsert(i, DIM, Encoding::Sq8))
        .collect();
    let applier = Applier::new(&store, &collections, &codebooks);
    let started = Instant::now();
    for batch in all.chunks(BATCH) {
        applier.apply_batch(batch).unwrap();
        store.flush().unwrap();
    }
    events as f64 / started.elapsed().as_secs_f64()
}

/// The mean flush after each of 50 batches of 100 upserts to one
/// collection, with `idle` more collections in the store.
fn flush_beside_idle(idle: usize) -> Duration {
    let (_dir, store) = store_with(idle);
    store.flush().unwrap();
    let (collections, codebooks) = (docs(), HashMap::new());
    let applier = Applier::new(&store, &collections, &codebooks);
    let all: Vec<DeltaEvent> = (0..5_000).map(|i| upsert(i, DIM, Encoding::Sq8)).collect();
    let mut flushing = Duration::ZERO;
    for batch in all.chunks(100) {
        applier.apply_batch(batch).unwrap();
        let started = Instant::now();
        store.flush().unwrap();
        flushing += started.elapsed();
    }
    flushing / 50
}

async fn catch_up(backlog: usize) -> (f64, Duration) {
    let Some(mut region) =
        TestRegion::start(DIM as u32, "sq8", "[consumer]\nbatch_max_events = 1000").await
    else {
        return (0.0, Duration::ZERO);
    };
    let dir = tempfile::tempdir().unwrap();
    region.config.store.path = dir.path().join("store");
    let publisher = Publisher::connect(&region.config).await.unwrap();
    let mut pending = Vec::new();
    for chunk in (0..backlog as u64).collect::<Vec<_>>().chunks(BATCH) {
        let batch: Vec<Mutation> = chunk
            .iter()
            .map(|&i| Mutation::Upsert {
                id: PointId::Num(i),
                vector: vector(DIM, i % 5_000),
                payload: None,
            })
            .collect();
        pending.push(publisher.submit("docs", &batch).await.unwrap());
        if pending.len() > 4 {
            pending.remove(0).acknowledged().await.unwrap();
        }
    }
    for p in pending {
        p.acknowledged().await.unwrap();
    }
    drop(publisher);

    let store = Arc::new(EdgeStore::open(&region.config.store.path).unwrap());
    let started = Instant::now();
    let running = worker::spawn(region.config.clone(), store.clone());
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if store.count("docs").unwrap_or(0) >= backlog {
            break;
        }
    }
    let elapsed = started.elapsed();
    running.stop().await.unwrap();
    (backlog as f64 / elapsed.as_secs_f64(), elapsed)
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let apply_events = args.first().copied().unwrap_or(20_000);
    let backlog = args.get(1).copied().unwrap_or(200_000);
    let rate = apply_throughput(apply_events);
    println!(
        "apply into qdrant-edge, 768-d sq8, batches of {BATCH}: {apply_events} events, {rate:.0} events/s"
    );
    for idle in [0, 9] {
        println!(
            "flush after a batch of 100, beside {idle} idle collections: {:.1} ms",
            flush_beside_idle(idle).as_secs_f64() * 1e3
        );
    }
    let (rate, elapsed) = catch_up(backlog).await;
    println!(
        "catch-up of a {backlog}-event backlog from tansu: {:.1} s, {rate:.0} events/s",
        elapsed.as_secs_f64()
    );
}
