//! A region's Apache Kafka broker killed (SIGKILL) mid-load and restarted
//! on the same data folder: the producer and the worker resume by
//! themselves, every acknowledged write is applied, and the store ends
//! holding exactly the fold of every event.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};
use vecsync_consumer::apply::{Change, fold};
use vecsync_consumer::digest::Digest;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_consumer::worker;
use vecsync_devkit::testbed::TestRegion;
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::config::Distance;
use vecsync_schemas::event::PointId;
use vecsync_schemas::testing::vector;

const DIM: usize = 8;
const EVENTS: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_broker_loses_no_acknowledged_write() {
    let extra = "[producer]\nheartbeat_interval_ms = 200";
    let Some(mut region) = TestRegion::start_kafka(DIM as u32, "f32", extra).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    region.config.store.path = dir.path().join("store");
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    let publisher = Publisher::connect(&region.config).await.unwrap();
    let store = Arc::new(EdgeStore::open(&region.config.store.path).unwrap());
    let running = worker::spawn(region.config.clone(), store.clone());

    let producing = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        let all: Vec<Mutation> = (0..EVENTS)
            .map(|i| {
                let id = PointId::Num(i * 7919 % 3_000);
                if i % 13 == 4 {
                    Mutation::Delete { id }
                } else {
                    Mutation::Upsert {
                        id,
                        vector: vector(DIM, i),
                        payload: None,
                    }
                }
            })
            .collect();
        for batch in all.chunks(500) {
            // Every batch is acknowledged: the producer retries through the
            // outage, well within its message timeout.
            let versions = publisher.publish("docs", batch).await.unwrap();
            for (m, v) in batch.iter().zip(versions) {
                let change = match m {
                    Mutation::Upsert { vector, .. } => Change::Upsert {
                        vector: vector.clone(),
                        payload: None,
                    },
                    _ => Change::Delete,
                };
                acknowledged.push((m.id(), v, change));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        acknowledged
    });

    // Mid-load, the broker dies and comes back on the same data.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!producing.is_finished(), "the load ended before the kill");
    region.broker.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Restarting waits for the broker to answer; other tasks go on.
    tokio::task::block_in_place(|| region.broker.restart()).unwrap();

    let acknowledged = producing.await.unwrap();
    assert_eq!(acknowledged.len() as u64, EVENTS);
    let expected = Digest::of_records(&fold(acknowledged));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = store.clone();
        let got = tokio::task::spawn_blocking(move || Digest::of(s.as_ref(), "docs"))
            .await
            .unwrap()
            .unwrap_or_default();
        if got == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store holds {got}, the acknowledged writes make {expected}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stats = running.stop().await.unwrap();
    assert_eq!(stats.dead_letters, 0, "{stats:?}");
}
