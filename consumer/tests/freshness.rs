//! `GET /v1/freshness` on a running worker: its three answers. Fresh at
//! once while the origin's heartbeats keep its watermark moving; stale with
//! a flag after waiting when the origin has fallen silent; and fresh after
//! waiting when the origin comes back while the request waits. And
//! `GET /readyz`: not ready while the registry cannot be reached.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::time::{Duration, Instant};
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_consumer::store::{Part, Store};
use vecsync_consumer::{api, worker};
use vecsync_devkit::testbed::TestRegion;
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::config::Distance;
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;

/// Serves a running worker's API on a free port; its base URL.
async fn serve(running: &worker::RunningWorker) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = api::router(
        running.watermarks().clone(),
        running.readiness().clone(),
        String::new,
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// `/readyz` until it answers `status` with a body `body_says` holds of,
/// or panics after 30 s; its body.
async fn ready_until(base: &str, status: u16, body_says: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = reqwest::get(format!("{base}/readyz")).await.unwrap();
        let code = answer.status().as_u16();
        let body = answer.text().await.unwrap();
        if code == status && body_says(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never {status} as expected: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ask(base: &str, query: &str) -> Value {
    let answer = reqwest::get(format!("{base}/v1/freshness?{query}"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_answers_fresh_waited_and_stale() {
    let extra = "[producer]\nheartbeat_interval_ms = 100";
    let Some(mut region) = TestRegion::start(8, "f32", extra).await else {
        return;
    };
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(EdgeStore::open(dir.path()).unwrap());
    let running = worker::spawn(region.config.clone(), store.clone());
    let base = serve(&running).await;
    let origin = region.config.region.clone();

    // The region's own producer sends heartbeats: the watermark keeps up.
    let publisher = Publisher::connect(&region.config).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let fresh = loop {
        let answer = ask(&base, "max_staleness_ms=1000&wait_ms=0").await;
        if answer["fresh"] == true {
            break answer;
        }
        assert!(Instant::now() < deadline, "never fresh: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(fresh["origins"][0]["origin"], origin.as_str());
    assert!(fresh["origins"][0]["age_ms"].as_u64().unwrap() <= 1000);
    assert_eq!(fresh["waited_ms"], 0, "a fresh store answers at once");
    // The only worker of the region covers every partition of its topic.
    let topic = &region.config.kafka.topic;
    let all: Vec<String> = (0..region.config.kafka.partitions)
        .map(|p| format!("{topic}/{p}"))
        .collect();
    assert_eq!(fresh["partitions"], serde_json::json!(all), "{fresh}");

    // The origin falls silent: its watermark stops and its age grows.
    drop(publisher);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stale = ask(&base, "max_staleness_ms=500&wait_ms=700").await;
    assert_eq!(stale["fresh"], false, "{stale}");
    assert!(stale["origins"][0]["age_ms"].as_u64().unwrap() > 500);
    assert!(stale["waited_ms"].as_u64().unwrap() >= 700, "{stale}");
    let unknown = ask(&base, "origins=ap-south").await;
    assert_eq!(unknown["unknown"][0], "ap-south");
    assert_eq!(unknown["fresh"], false);

    // The origin comes back while a request waits: fresh, after waiting.
    let waiting = tokio::spawn({
        let base = base.clone();
        async move { ask(&base, "max_staleness_ms=500&wait_ms=20000").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let publisher = Publisher::connect(&region.config).await.unwrap();
    let waited = waiting.await.unwrap();
    assert_eq!(waited["fresh"], true, "{waited}");
    assert!(waited["waited_ms"].as_u64().unwrap() >= 300, "{waited}");

    // Read-your-writes: asked after the version a write returned, the
    // answer waits until that write is applied, then says fresh.
    let versions = publisher
        .publish(
            "docs",
            &[Mutation::Upsert {
                id: PointId::Num(42),
                vector: vec![0.5; 8],
                payload: None,
            }],
        )
        .await
        .unwrap();
    let written = versions[0].to_string();
    let applied = ask(&base, &format!("after={written}&wait_ms=10000")).await;
    assert_eq!(applied["fresh"], true, "{applied}");
    let mark: Hlc = applied["origins"][0]["applied_up_to"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(mark > versions[0], "{applied}");
    let point = store.get("docs", Part::Live, &[PointId::Num(42)]).unwrap();
    assert_eq!(point.len(), 1, "the write is in the store when fresh");
    // A version from the future is not applied: stale after the wait.
    let future = Hlc::new(versions[0].wall_ms + 3_600_000, 0, origin.as_str());
    let ahead = ask(&base, &format!("after={future}&wait_ms=300")).await;
    assert_eq!(ahead["fresh"], false, "{ahead}");

    // A bad request says what is wrong.
    for (query, field) in [
        ("max_staleness_ms=soon", "max_staleness_ms"),
        ("after=yesterday", "after"),
    ] {
        let bad = reqwest::get(format!("{base}/v1/freshness?{query}"))
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        assert!(bad.text().await.unwrap().contains(field));
    }
    drop(publisher);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_not_ready_while_the_registry_is_down() {
    let Some(mut region) = TestRegion::start(8, "f32", "").await else {
        return;
    };
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(EdgeStore::open(dir.path()).unwrap());
    // The producer creates the topic: until it exists, nothing is assigned.
    let _publisher = Publisher::connect(&region.config).await.unwrap();

    // A registry nobody listens on: assigned and the store answers, yet
    // not ready, and the answer names the registry.
    let mut down = region.config.clone();
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    down.registry.url = format!("http://{}", unused.local_addr().unwrap());
    drop(unused);
    let running = worker::spawn(down, store.clone());
    let base = serve(&running).await;
    // Once it is assigned and has probed, it is still not ready, for the
    // registry alone.
    let body = ready_until(&base, 503, |b| {
        b.contains("schema registry") && !b.contains("no partitions")
    })
    .await;
    assert!(!body.contains("\nstore: "), "the store answers: {body}");
    // Stopped while waiting for the registry to decode the producer's
    // heartbeats: it stops, with an error saying so.
    let _ = running.stop().await;

    // The same worker with the region's registry becomes ready.
    let running = worker::spawn(region.config.clone(), store);
    let base = serve(&running).await;
    assert_eq!(ready_until(&base, 200, |_| true).await, "ready\n");
    running.stop().await.unwrap();
}
