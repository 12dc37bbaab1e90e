//! A running worker forgets tombstones older than the horizon, a page at a
//! time between its batches, drops (counts and dead-letters) patches whose
//! base never came, and goes on applying.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vecsync_consumer::store::Store;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_consumer::worker;
use vecsync_devkit::testbed::TestRegion;
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::config::Distance;
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::testing::vector;

const DIM: usize = 8;
/// More than two of the pages expiry goes by.
const POINTS: u64 = 1_200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_worker_forgets_tombstones_older_than_the_horizon() {
    let extra = "[consumer]\nexpiry_interval_ms = 200\ntombstone_horizon_ms = 1500";
    let Some(mut region) = TestRegion::start(DIM as u32, "f32", extra).await else {
        return;
    };
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    region.config.consumer.dead_letter_topic = format!("{}.dead", region.config.kafka.topic);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EdgeStore::open(dir.path()).unwrap());
    let publisher = Publisher::connect(&region.config).await.unwrap();
    let ids: Vec<PointId> = (0..POINTS).map(PointId::Num).collect();
    let metrics = vecsync_producer::metrics::prometheus();
    let upserts: Vec<Mutation> = ids
        .iter()
        .map(|&id| Mutation::Upsert {
            id,
            vector: vector(DIM, 1),
            payload: None,
        })
        .collect();
    let deletes: Vec<Mutation> = ids.iter().map(|&id| Mutation::Delete { id }).collect();
    let marker = |n: u64| Mutation::Upsert {
        id: PointId::Num(POINTS + n),
        vector: vector(DIM, n),
        payload: None,
    };
    publisher.publish("docs", &upserts).await.unwrap();
    publisher.publish("docs", &deletes).await.unwrap();
    // On top of a version no region ever wrote.
    let base = Hlc::new(1, 0, "us-east");
    let orphan = Mutation::PatchPayload {
        id: PointId::Num(POINTS + 9),
        base_version: base.clone(),
        payload: json!({"lang": "en"}).as_object().cloned().unwrap(),
    };
    publisher.publish("docs", &[orphan]).await.unwrap();
    publisher.publish("docs", &[marker(0)]).await.unwrap();

    let running = worker::spawn(region.config.clone(), store.clone());
    // Events are applied in version order: once the marker is, every
    // delete before it is, and its tombstone was written.
    let store_ref = &store;
    let live = |n: usize| move || store_ref.count("docs").ok() == Some(n);
    wait_for("the marker applied", live(1)).await;
    // Then the tombstones are forgotten (the orphan patch's record with
    // them): nothing of the points is left.
    let mut gone = ids.clone();
    gone.push(PointId::Num(POINTS + 9));
    wait_for("every tombstone forgotten", || {
        store.read("docs", &gone).unwrap().is_empty()
    })
    .await;
    let dropped =
        "vecsync_consumer_deltas_dropped_total{collection=\"docs\",reason=\"base_never_came\"} 1\n";
    assert!(metrics.render().contains(dropped), "{}", metrics.render());
    // And dead-lettered, as JSON since its bytes are long gone, before the
    // store forgot it.
    let dead_topic = region.config.consumer.dead_letter_topic.clone();
    let dead = region
        .read(&dead_topic, 1, Duration::from_secs(10), |_| true)
        .await;
    assert_eq!(dead.len(), 1, "one dead letter");
    let header = |name: &str| {
        dead[0]
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("vecsync.reason").as_deref(), Some("base_never_came"));
    assert_eq!(header("vecsync.format").as_deref(), Some("json"));
    assert_eq!(header("vecsync.source.region").as_deref(), Some("us-east"));
    assert!(
        header("vecsync.detail")
            .unwrap()
            .contains(&base.to_string())
    );
    assert_eq!(
        dead[0].key.as_deref(),
        Some(format!("{}", POINTS + 9).as_bytes())
    );
    let delta: serde_json::Value = serde_json::from_slice(&dead[0].value).unwrap();
    assert_eq!(
        (
            &delta["collection"],
            &delta["id"],
            &delta["op"],
            &delta["base"],
            &delta["payload"]
        ),
        (
            &json!("docs"),
            &json!(POINTS + 9),
            &json!("patch"),
            &json!(base.to_string()),
            &json!({"lang": "en"})
        )
    );
    // The worker goes on applying.
    publisher.publish("docs", &[marker(1)]).await.unwrap();
    wait_for("the upsert after expiry applied", live(2)).await;
    running.stop().await.unwrap();
}

/// Polls `done` until it holds, or panics after 60 s naming `what`.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "never {what}");
        // Poll interval of a wait that ends as soon as `done` holds.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
