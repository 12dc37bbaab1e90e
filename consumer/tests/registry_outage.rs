//! A registry that is down when the worker needs a writer schema is not a
//! dead letter: the worker waits, and applies everything once the registry
//! is back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};
use vecsync_consumer::store::Store;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_consumer::worker;
use vecsync_devkit::registry::DevRegistry;
use vecsync_devkit::testbed::TestRegion;
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::avro::AvroRecord;
use vecsync_schemas::config::Distance;
use vecsync_schemas::event::{DeltaEvent, PointId};
use vecsync_schemas::registry::{RegistryClient, value_subject};
use vecsync_schemas::testing::vector;

const DIM: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_pauses_the_worker_and_loses_nothing() {
    let Some(mut region) = TestRegion::start(DIM as u32, "f32", "").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    region.config.store.path = dir.path().join("store");
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    let publisher = Publisher::connect(&region.config).await.unwrap();
    let batch: Vec<Mutation> = (0..10)
        .map(|i| Mutation::Upsert {
            id: PointId::Num(i),
            vector: vector(DIM, i),
            payload: None,
        })
        .collect();
    publisher.publish("docs", &batch).await.unwrap();
    drop(publisher);

    // The registry goes down before the worker has seen the schema.
    let addr = region.registry.addr();
    let TestRegion {
        broker: _broker,
        registry,
        config,
    } = region;
    registry.stop().await;
    let store = Arc::new(EdgeStore::open(&config.store.path).unwrap());
    let running = worker::spawn(config.clone(), store.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        store.count("docs").unwrap(),
        0,
        "nothing applied while the registry is down"
    );

    // It comes back, holding the same schema under the same id.
    let back = DevRegistry::in_memory()
        .spawn(&addr.to_string())
        .await
        .unwrap();
    let client = RegistryClient::new(&back.url(), Duration::from_secs(5)).unwrap();
    client
        .register(&value_subject(&config.kafka.topic), DeltaEvent::SCHEMA)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.count("docs").unwrap() < 10 {
        assert!(Instant::now() < deadline, "the worker did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = running.stop().await.unwrap();
    assert_eq!(stats.dead_letters, 0, "an outage is not a dead letter");
    assert_eq!(stats.applied, 10);
}
