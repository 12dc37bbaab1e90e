//! `GET /v1/freshness` on a running worker: its three answers. Fresh at
//! once while the origin's heartbeats keep its watermark moving; stale with
//! a flag after waiting when the origin has fallen silent; and fresh after
//! waiting when the origin comes back while the request waits.
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

async fn ask(base: &str, query: &str) -> Value {
    let answer = reqwest::get(format!("{base}/v1/freshness?{query}"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_answers_fresh_waited_and_stale() {
    let extra = "[producer]\nheartbeat_interval_ms = 100\n[consumer]\nbatch_max_wait_ms = 10";
    let Some(mut region) = TestRegion::start(8, "f32", extra).await else {
        return;
    };
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(EdgeStore::open(dir.path()).unwrap());
    let running = worker::spawn(region.config.clone(), store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = api::router(running.watermarks().clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
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
