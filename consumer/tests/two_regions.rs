//! Two regions on two real brokers, each writing and each replaying the
//! other's topic directly (and its own): after quiescence both stores hold
//! exactly the state the fold of every event in HLC order defines. Run with
//! each store backend: the embedded engine, and a Qdrant server per region
//! through qdrant-client (devkit's gRPC endpoint over the real engine).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vecsync_consumer::apply::{Change, fold};
use vecsync_consumer::digest::Digest;
use vecsync_consumer::store::{self, Store, StoreError};
use vecsync_consumer::worker;
use vecsync_devkit::broker::{Tansu, unique_name};
use vecsync_devkit::qdrant::QdrantEndpoint;
use vecsync_devkit::testbed::TestRegion;
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::config::{Distance, RegionConfig, SourceConfig, StoreBackend};
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::testing::vector;

const DIM: usize = 8;

fn mutations(region: u64, n: u64) -> Vec<Mutation> {
    (0..n)
        .map(|i| {
            let id = PointId::Num((i * 7 + region) % 50);
            match i % 10 {
                3 => Mutation::Delete { id },
                _ => Mutation::Upsert {
                    id,
                    vector: vector(DIM, region * 1000 + i),
                    payload: Some(
                        json!({"from": region, "i": i})
                            .as_object()
                            .cloned()
                            .unwrap(),
                    ),
                },
            }
        })
        .collect()
}

fn change(m: &Mutation) -> Change {
    match m {
        Mutation::Upsert {
            vector, payload, ..
        } => Change::Upsert {
            vector: vector.clone(),
            payload: payload.clone(),
        },
        Mutation::Delete { .. } => Change::Delete,
        Mutation::PatchPayload {
            base_version,
            payload,
            ..
        } => Change::Patch {
            base: base_version.clone(),
            payload: payload.clone(),
        },
    }
}

/// The store's digest, read off the executor (store calls block).
async fn digest(store: &Arc<dyn Store>) -> Result<Digest, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || Digest::of(store.as_ref(), "docs"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_regions_converge_to_the_fold_of_every_event_in_embedded_stores() {
    both_regions_converge_to_the_fold_of_every_event(StoreBackend::Edge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_regions_converge_to_the_fold_of_every_event_in_qdrant_servers() {
    both_regions_converge_to_the_fold_of_every_event(StoreBackend::Qdrant).await;
}

async fn both_regions_converge_to_the_fold_of_every_event(backend: StoreBackend) {
    let extra = "[producer]\nheartbeat_interval_ms = 200\n[consumer]\nidle_after_ms = 2000\nbatch_max_wait_ms = 10";
    let Some(mut east) = TestRegion::start(DIM as u32, "f32", extra).await else {
        return;
    };
    let Some(west_broker) = Tansu::start() else {
        return;
    };
    east.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    let dir = tempfile::tempdir().unwrap();
    east.config.store.path = dir.path().join("us-east");
    let mut west: RegionConfig = east.config.clone();
    west.region = "eu-west".into();
    west.kafka.brokers = west_broker.brokers();
    west.kafka.topic = unique_name("vecsync.deltas");
    west.store.path = dir.path().join("eu-west");
    let source = |c: &RegionConfig| SourceConfig {
        region: c.region.clone(),
        brokers: Some(c.kafka.brokers.clone()),
        topic: c.kafka.topic.clone(),
        codebook_topic: c.kafka.codebook_topic.clone(),
        options: Default::default(),
    };
    let (east_source, west_source) = (source(&east.config), source(&west));
    east.config.consumer.sources = vec![west_source];
    west.consumer.sources = vec![east_source];

    // Both regions write, concurrently, to overlapping points.
    let east_pub = Publisher::connect(&east.config).await.unwrap();
    let west_pub = Publisher::connect(&west).await.unwrap();
    let (east_m, west_m) = (mutations(1, 300), mutations(2, 300));
    let mut all: Vec<(PointId, Hlc, Change)> = Vec::new();
    for (batch_e, batch_w) in east_m.chunks(50).zip(west_m.chunks(50)) {
        let (ve, vw) = tokio::join!(
            east_pub.publish("docs", batch_e),
            west_pub.publish("docs", batch_w)
        );
        for (m, v) in batch_e
            .iter()
            .zip(ve.unwrap())
            .chain(batch_w.iter().zip(vw.unwrap()))
        {
            all.push((m.id(), v, change(m)));
        }
    }
    // The expected state: every event folded in HLC order.
    let expected = Digest::of_records(&fold(all));

    let mut stores = Vec::new();
    let mut workers = Vec::new();
    let mut endpoints = Vec::new();
    for mut config in [east.config.clone(), west.clone()] {
        if backend == StoreBackend::Qdrant {
            let endpoint = QdrantEndpoint::start(&config.store.path, "127.0.0.1:0", None)
                .await
                .unwrap();
            config.store.backend = StoreBackend::Qdrant;
            config.store.url = endpoint.url();
            endpoints.push(endpoint);
        }
        let store = store::open(&config.store).unwrap();
        workers.push(worker::spawn(config, store.clone()));
        stores.push(store);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut now = Vec::new();
        for store in &stores {
            now.push(digest(store).await.unwrap_or_default());
        }
        if now.iter().all(|d| *d == expected) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence: {now:?} expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for w in workers {
        let stats = w.stop().await.unwrap();
        assert_eq!(stats.dead_letters, 0, "{stats:?}");
    }
    assert_eq!(
        digest(&stores[0]).await.unwrap(),
        digest(&stores[1]).await.unwrap()
    );
    drop(stores);
    for endpoint in endpoints {
        endpoint.stop().await;
    }
    assert!(expected.points > 10, "{expected}");
}
