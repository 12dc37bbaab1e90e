//! Duplicate delivery through Kafka: after a worker has applied a topic,
//! the same offsets consumed again (by a worker of another group, over the
//! same store) change nothing: every event is found already applied.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vecsync_consumer::digest::Digest;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_consumer::store::{Store, StoreError};
use vecsync_consumer::worker::{self, Stats};
use vecsync_devkit::testbed::TestRegion;
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::config::{Distance, RegionConfig};
use vecsync_schemas::event::PointId;
use vecsync_schemas::testing::vector;

const DIM: usize = 8;

async fn digest(store: &Arc<dyn Store>) -> Result<Digest, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || Digest::of(store.as_ref(), "docs"))
        .await
        .unwrap()
}

/// Runs a worker until one run has handled `events` events (each run
/// resumes before its group's commits, so a short run may see fewer).
async fn run_until(config: &RegionConfig, store: &Arc<dyn Store>, events: u64) -> Vec<Stats> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut runs = Vec::new();
    loop {
        let running = worker::spawn(config.clone(), store.clone());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let stats = running.stop().await.unwrap();
        let handled = stats.applied + stats.unchanged + stats.parked;
        runs.push(stats);
        if handled >= events {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "the topic was not read: {runs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_offsets_consumed_twice_change_nothing() {
    let extra = "[consumer]\nidle_after_ms = 500";
    let Some(mut region) = TestRegion::start(DIM as u32, "f32", extra).await else {
        return;
    };
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    let dir = tempfile::tempdir().unwrap();
    region.config.store.path = dir.path().join("store");
    let publisher = Publisher::connect(&region.config).await.unwrap();
    let mut published = 0u64;
    for round in 0..4u64 {
        let batch: Vec<Mutation> = (0..100u64)
            .map(|i| {
                let id = PointId::Num(i % 60);
                if (i + round) % 9 == 0 {
                    Mutation::Delete { id }
                } else {
                    Mutation::Upsert {
                        id,
                        vector: vector(DIM, round * 100 + i),
                        payload: Some(json!({"round": round}).as_object().cloned().unwrap()),
                    }
                }
            })
            .collect();
        publisher.publish("docs", &batch).await.unwrap();
        published += batch.len() as u64;
    }
    drop(publisher);

    let store: Arc<dyn Store> = Arc::new(EdgeStore::open(&region.config.store.path).unwrap());
    let first = run_until(&region.config, &store, published).await;
    let before = digest(&store).await.unwrap();
    assert!(before.points > 0);
    assert!(first.iter().map(|s| s.applied).sum::<u64>() > 0);

    // Another group reads the same offsets again into the same store.
    let mut again = region.config.clone();
    again.consumer.group_id = Some(format!("{}-replay", region.config.group_id()));
    let replays = run_until(&again, &store, published).await;
    for stats in &replays {
        assert_eq!(stats.applied, 0, "a duplicate changed the store: {stats:?}");
        assert_eq!(stats.dead_letters, 0);
    }
    assert_eq!(digest(&store).await.unwrap(), before);
}
