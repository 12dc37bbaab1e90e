//! Consumer throughput, release build.
//!
//! 1. Apply: decoded 768-d sq8 upserts applied to the embedded store
//!    (qdrant-edge) in batches, each batch read, applied, written and flushed
//!    as the worker does.
//! 2. Catch-up: a backlog of delta events on a local tansu broker replayed by
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

fn apply_throughput(events: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = EdgeStore::open(dir.path()).unwrap();
    store
        .ensure_collection("docs", DIM, Distance::Cosine)
        .unwrap();
    let collections = HashMap::from([(
        "docs".to_owned(),
        CollectionConfig {
            dimension: DIM as u32,
            distance: Distance::Cosine,
            encoding: Encoding::Sq8,
            codebook_file: None,
            residency: Default::default(),
        },
    )]);
    let codebooks = HashMap::new();
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
    let (rate, elapsed) = catch_up(backlog).await;
    println!(
        "catch-up of a {backlog}-event backlog from tansu: {:.1} s, {rate:.0} events/s",
        elapsed.as_secs_f64()
    );
}
