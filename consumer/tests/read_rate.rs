//! Traffic shaping: a source read across a link that user traffic shares
//! gets `max_read_bytes_per_sec`. A backlog behind a cut-like gap drains
//! through devkit's fault proxy no faster than the cap (beyond one burst of
//! read-ahead), and it does drain, every event applied.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};
use vecsync_consumer::store::{self, Store};
use vecsync_consumer::worker;
use vecsync_devkit::broker::{Tansu, unique_name};
use vecsync_devkit::proxy::WanLink;
use vecsync_devkit::testbed::TestRegion;
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::config::SourceConfig;
use vecsync_schemas::event::PointId;
use vecsync_schemas::testing::vector;

const DIM: usize = 64;
/// Events in the backlog: about 3 MB of records.
const EVENTS: u64 = 10_000;
const CAP: u32 = 200_000;
/// What may cross the link beyond the cap: the bucket's burst (a second),
/// the read-ahead queue (about a second) and one fetch overshooting it
/// (at most a second's worth for each of the three partitions).
const ALLOWANCE: u64 = 5 * CAP as u64;

async fn count(store: &Arc<dyn Store>) -> usize {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.count("docs").unwrap_or(0))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_source_drains_its_backlog_no_faster_than_the_cap() {
    let extra = "[producer]\nheartbeat_interval_ms = 200\n[consumer]\nidle_after_ms = 2000";
    let Some(mut east) = TestRegion::start(DIM as u32, "f32", extra).await else {
        return;
    };
    let Some(west_broker) = Tansu::start() else {
        return;
    };
    let Some(link) = WanLink::start(&west_broker.brokers()).await.unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    east.config.store.path = dir.path().join("us-east");
    let mut west = east.config.clone();
    west.region = "eu-west".into();
    west.kafka.brokers = west_broker.brokers();
    west.kafka.topic = unique_name("vecsync.deltas");
    east.config.consumer.sources = vec![SourceConfig {
        max_read_bytes_per_sec: Some(CAP),
        ..SourceConfig::new(
            "eu-west",
            Some(link.brokers()),
            &west.kafka.topic,
            &west.kafka.codebook_topic,
        )
    }];

    // eu-west's backlog, written while us-east's worker was away.
    let west_pub = Publisher::connect(&west).await.unwrap();
    let upserts: Vec<Mutation> = (0..EVENTS)
        .map(|i| Mutation::Upsert {
            id: PointId::Num(i),
            vector: vector(DIM, i),
            payload: None,
        })
        .collect();
    for batch in upserts.chunks(1000) {
        west_pub.publish("docs", batch).await.unwrap();
    }

    let metrics = vecsync_producer::metrics::prometheus();
    let store = store::open(&east.config.store).unwrap();
    let started = Instant::now();
    let worker = worker::spawn(east.config.clone(), store.clone());
    let deadline = started + Duration::from_secs(120);
    while count(&store).await < EVENTS as usize {
        assert!(Instant::now() < deadline, "the backlog never drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let carried = link.faults().bytes_to_clients();
    // For BENCHMARKS.md (run with --no-capture).
    eprintln!(
        "{carried} bytes crossed the link in {took:.1} s ({:.0} B/s, cap {CAP} B/s)",
        carried as f64 / took
    );
    let stats = worker.stop().await.unwrap();
    assert_eq!(stats.dead_letters, 0, "{stats:?}");

    // The records did cross the link: at least their vectors' bytes.
    assert!(carried > EVENTS * DIM as u64 * 4, "{carried} bytes carried");
    // The waits show, for whoever wonders why the source is behind.
    let throttled = format!(
        "vecsync_consumer_read_throttled_total{{topic=\"{}\"}}",
        west.kafka.topic
    );
    assert!(
        metrics.render().contains(&throttled),
        "{}",
        metrics.render()
    );
    let most = f64::from(CAP) * took + ALLOWANCE as f64;
    assert!(
        (carried as f64) <= most,
        "{carried} bytes crossed the link in {took:.1} s: more than {CAP} B/s \
         beyond an allowance of {ALLOWANCE} bytes"
    );
}
