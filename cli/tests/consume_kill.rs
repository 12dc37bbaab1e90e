//! `vecsync consume` killed with SIGKILL at random moments while 50,000
//! events stream in, restarted each time: in the end the store holds exactly
//! the fold of every event (nothing lost, nothing stale). On Apache Kafka,
//! and on tansu.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vecsync_consumer::apply::{self, Change, Record, State};
use vecsync_consumer::digest::Digest;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_consumer::store::{self, Store};
use vecsync_devkit::testbed::TestRegion;
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::config::Distance;
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::testing::vector;

const DIM: usize = 8;
const EVENTS: u64 = 50_000;
const KILLS: usize = 10;

/// A worker on `config`, its warnings and errors appended to the log
/// beside it.
fn start(config: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_extension("log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_vecsync"))
        .args(["consume", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Fails the test, with the worker's log, if the worker on `config` has
/// exited: one that stopped at start would otherwise show only as a wrong
/// digest minutes later.
fn assert_running(worker: &mut Child, config: &std::path::Path) {
    if let Some(status) = worker.try_wait().unwrap() {
        let log = std::fs::read_to_string(config.with_extension("log")).unwrap_or_default();
        panic!(
            "the worker on {} exited ({status}):\n{log}",
            config.display()
        );
    }
}

fn digest_of(path: &std::path::Path) -> Digest {
    let store = EdgeStore::open(path).unwrap();
    store.ensure_collection("docs", DIM, Distance::Dot).unwrap();
    Digest::of(&store, "docs").unwrap()
}

const EXTRA: &str =
    "[consumer]\ninstance_id = \"worker-1\"\nsession_timeout_ms = 6000\nbatch_max_events = 500";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_at_random_loses_nothing_on_apache_kafka() {
    if let Some(region) = TestRegion::start_kafka(DIM as u32, "f32", EXTRA).await {
        killed_at_random(region).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_at_random_loses_nothing_on_tansu() {
    if let Some(region) = TestRegion::start(DIM as u32, "f32", EXTRA).await {
        killed_at_random(region).await;
    }
}

async fn killed_at_random(mut region: TestRegion) {
    let dir = tempfile::tempdir().unwrap();
    region.config.store.path = dir.path().join("store");
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    let port = vecsync_devkit::broker::free_port().unwrap();
    region.config.consumer.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let config_path = dir.path().join("region.toml");
    std::fs::write(&config_path, toml::to_string(&region.config).unwrap()).unwrap();

    // The stream: upserts and deletes over 5,000 points, published in the
    // background while the worker is killed and restarted.
    let publisher = Publisher::connect(&region.config).await.unwrap();
    let producing = tokio::spawn(publish_all(publisher, EVENTS));

    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..KILLS {
        let mut worker = start(&config_path);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Between 0.5 and 4.5 s: during startup, mid-batch, between batches.
        tokio::time::sleep(Duration::from_millis(500 + x % 4_000)).await;
        assert_running(&mut worker, &config_path);
        worker.kill().unwrap();
        worker.wait().unwrap();
    }
    let sent = producing.await.unwrap();
    let newest = sent.iter().map(|(_, hlc, _)| hlc.clone()).max().unwrap();
    let (records, expected) = fold(sent);

    // A last worker runs until the store holds the expected state; it is
    // stopped (SIGTERM) now and then to look, since the store is locked
    // while it runs.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let worker = start(&config_path);
        // Until the worker has applied everything up to the newest event
        // sent (its freshness watermark), or a while has passed.
        let round = Instant::now() + Duration::from_secs(30);
        while Instant::now() < round {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok(answer) = reqwest::get(format!("http://127.0.0.1:{port}/v1/freshness")).await
            else {
                continue;
            };
            let Ok(answer) = answer.json::<serde_json::Value>().await else {
                continue;
            };
            let applied: Option<Hlc> = answer["origins"][0]["applied_up_to"]
                .as_str()
                .and_then(|h| h.parse().ok());
            if applied.is_some_and(|h| h >= newest) {
                break;
            }
        }
        // The worker reports what it applied on consumer.listen.
        let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for name in [
            "vecsync_consumer_events_total{origin=\"",
            "vecsync_consumer_batch_apply_seconds",
            "vecsync_consumer_order_wait_seconds",
            "vecsync_consumer_store_wait_seconds",
            "vecsync_consumer_uncommitted_records",
        ] {
            assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
        }
        assert!(
            Command::new("kill")
                .arg(worker.id().to_string())
                .status()
                .unwrap()
                .success()
        );
        let out = worker.wait_with_output().unwrap();
        assert!(out.status.success(), "the worker stops cleanly on SIGTERM");
        let got = digest_of(&region.config.store.path);
        if got == expected {
            break;
        }
        if Instant::now() >= deadline {
            let (summary, wanted) = differences(&region.config.store.path, &records);
            let all = region
                .read(
                    &region.config.kafka.topic,
                    usize::MAX,
                    Duration::from_secs(10),
                    |_| true,
                )
                .await;
            let events = region.decode(&all).await;
            let places: Vec<(i32, i64)> = all
                .iter()
                .zip(&events)
                .filter(|(_, e)| wanted.contains(&e.hlc.to_string()))
                .map(|(r, _)| (r.partition, r.offset))
                .collect();
            panic!(
                "store {got}, expected {expected}: {summary}; missing at {:?}",
                &places[..places.len().min(20)]
            );
        }
    }
}

type Sent = Vec<(PointId, Hlc, Change)>;

/// Publishes `events` upserts and deletes over 5,000 points, in batches
/// spread over time, and returns every acknowledged write.
async fn publish_all(publisher: Publisher, events: u64) -> Sent {
    let mut sent = Vec::new();
    let all: Vec<Mutation> = (0..events)
        .map(|i| {
            let id = PointId::Num(i * 7919 % 5_000);
            if i % 11 == 5 {
                Mutation::Delete { id }
            } else {
                Mutation::Upsert {
                    id,
                    vector: vector(DIM, i),
                    payload: Some(json!({"i": i}).as_object().cloned().unwrap()),
                }
            }
        })
        .collect();
    for batch in all.chunks(1_000) {
        let versions = publisher.publish("docs", batch).await.unwrap();
        for (m, v) in batch.iter().zip(versions) {
            let change = match m {
                Mutation::Upsert {
                    vector, payload, ..
                } => Change::Upsert {
                    vector: vector.clone(),
                    payload: payload.clone(),
                },
                _ => Change::Delete,
            };
            sent.push((m.id(), v, change));
        }
        // Spread the stream over the kills.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    sent
}

/// Every write folded in HLC order, and the digest of that state.
fn fold(sent: Sent) -> (HashMap<PointId, Record>, Digest) {
    let records = apply::fold(sent);
    let expected = Digest::of_records(&records);
    (records, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_group_mode_a_killed_workers_partitions_move_to_the_other_and_nothing_is_lost() {
    let extra =
        "[consumer]\nassignment = \"group\"\nsession_timeout_ms = 6000\nbatch_max_events = 500";
    let Some(mut region) = TestRegion::start_kafka(DIM as u32, "f32", extra).await else {
        return;
    };
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    // The region's workers share one Qdrant server, as in production.
    let dir = tempfile::tempdir().unwrap();
    let endpoint = region.serve_qdrant(dir.path()).await.unwrap();
    let mut workers = Vec::new();
    for name in ["a", "b"] {
        let mut config = region.config.clone();
        let port = vecsync_devkit::broker::free_port().unwrap();
        config.consumer.listen = format!("127.0.0.1:{port}").parse().unwrap();
        let path = dir.path().join(format!("worker-{name}.toml"));
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        workers.push((start(&path), path));
    }
    let publisher = Publisher::connect(&region.config).await.unwrap();
    let producing = tokio::spawn(publish_all(publisher, 20_000));
    // Mid-load, one worker dies; the other takes its partitions once its
    // session times out.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!producing.is_finished(), "the load ended before the kill");
    for (worker, path) in &mut workers {
        assert_running(worker, path);
    }
    workers[0].0.kill().unwrap();
    workers[0].0.wait().unwrap();
    let (records, expected) = fold(producing.await.unwrap());

    let store = store::open(&region.config.store).unwrap();
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
        if Instant::now() >= deadline {
            let (summary, _) = differences_in(store.as_ref(), &records);
            panic!("the store holds {got}, the writes make {expected}: {summary}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (survivor, _) = workers.pop().unwrap();
    assert!(
        Command::new("kill")
            .arg(survivor.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let out = survivor.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the survivor stops cleanly on SIGTERM"
    );
    drop(store);
    endpoint.stop().await;
}

/// The points whose stored state is not the expected one, for the failure
/// message.
fn differences(
    path: &std::path::Path,
    records: &HashMap<PointId, Record>,
) -> (String, Vec<String>) {
    let store = EdgeStore::open(path).unwrap();
    store.ensure_collection("docs", DIM, Distance::Dot).unwrap();
    differences_in(&store, records)
}

fn differences_in(store: &dyn Store, records: &HashMap<PointId, Record>) -> (String, Vec<String>) {
    let ids: Vec<PointId> = records.keys().copied().collect();
    let held = store.read("docs", &ids).unwrap();
    let diffs: Vec<String> = records
        .iter()
        .filter_map(|(id, r)| {
            let want = r.current().0;
            let have = held.get(id).map(|h| h.current().0);
            (have.as_ref() != Some(&want)).then(|| {
                let have = have.map(|h| h.version.to_string());
                format!("{id}: want {}, have {have:?}", want.version)
            })
        })
        .collect();
    let wanted = diffs
        .iter()
        .filter_map(|d| {
            d.split(" want ")
                .nth(1)?
                .split(',')
                .next()
                .map(str::to_owned)
        })
        .collect();
    // Points live in the store that the writes leave deleted: a read shows
    // a point held in both parts as its newer record, so only a scan of
    // the live part finds them.
    let mut undead = Vec::new();
    store
        .scan("docs", &mut |id, now| {
            let want = records.get(&id).map(|r| r.current().0);
            if want.is_none_or(|w| matches!(w.state, State::Deleted)) {
                undead.push(format!("{id}: live at {}", now.version));
            }
        })
        .unwrap();
    let summary = format!(
        "{} points differ, e.g. {:?}; {} points are live that the writes delete, e.g. {:?}",
        diffs.len(),
        &diffs[..diffs.len().min(8)],
        undead.len(),
        &undead[..undead.len().min(8)]
    );
    (summary, wanted)
}
