//! A region that joins late, after its sources' retention has deleted the
//! oldest records, seeds its store from a snapshot of another region and
//! converges with it; without the snapshot it reports the records it lost.
//! Three regions on one real Apache Kafka cluster, whose topics keep about
//! a megabyte per partition.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vecsync_consumer::api::{StoreAccess, store_routes};
use vecsync_consumer::digest::Digest;
use vecsync_consumer::freshness::Ask;
use vecsync_consumer::snapshot::{self, SnapshotError};
use vecsync_consumer::store::{self, Store};
use vecsync_consumer::worker::{self, RunningWorker};
use vecsync_devkit::broker::unique_name;
use vecsync_devkit::kafka::Kafka;
use vecsync_devkit::testbed::{Broker, TestRegion};
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::config::{RegionConfig, SourceConfig};
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::testing::vector;

const DIM: usize = 64;
const PARTITIONS: u32 = 2;
/// Distinct ids: more than a region writes in the first phase, so that
/// each is written once by each region there, and a region that lost the
/// first segments misses what they held.
const IDS: u64 = 30_000;

fn mutations(region: u64, from: u64, n: u64) -> Vec<Mutation> {
    (from..from + n)
        .map(|i| {
            let id = PointId::Num((i * 7 + region) % IDS);
            match i % 10 {
                3 => Mutation::Delete { id },
                _ => Mutation::Upsert {
                    id,
                    vector: vector(DIM, region * 1_000_000 + i),
                    payload: json!({"from": region, "i": i}).as_object().cloned(),
                },
            }
        })
        .collect()
}

/// Publishes `n` mutations from `from` on, in batches; returns the last
/// version given.
async fn publish(publisher: &Publisher, region: u64, from: u64, n: u64) -> Hlc {
    let mut last = None;
    for batch in mutations(region, from, n).chunks(500) {
        last = publisher.publish("docs", batch).await.unwrap().pop();
    }
    last.unwrap()
}

async fn digest(store: &Arc<dyn Store>) -> Digest {
    let store = store.clone();
    tokio::task::spawn_blocking(move || Digest::of(store.as_ref(), "docs").unwrap())
        .await
        .unwrap()
}

/// Waits until `worker` has applied every version of `after`.
async fn applied(worker: &RunningWorker, after: &[Hlc]) {
    let ask = Ask {
        after: after.to_vec(),
        ..Ask::default()
    };
    let answer = worker
        .watermarks()
        .freshness(&ask, Duration::from_secs(120), || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        })
        .await;
    assert!(answer.fresh, "not applied in time: {answer:?}");
}

/// The first offset of each partition of `topic`.
fn log_starts(brokers: &str, topic: &str) -> Vec<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    (0..PARTITIONS as i32)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .0
        })
        .collect()
}

fn lost_records(metrics: &str, topic: &str) -> u64 {
    let series = format!("vecsync_consumer_records_lost_total{{topic=\"{topic}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_joining_late_restores_a_snapshot_and_converges() {
    let metrics = vecsync_producer::metrics::prometheus();
    // Retention is enforced every second instead of every few.
    let Some(kafka) = tokio::task::spawn_blocking(|| {
        Kafka::start_with(&[("log.retention.check.interval.ms", "1000")])
    })
    .await
    .unwrap() else {
        return;
    };
    let extra = "[producer]\nheartbeat_interval_ms = 200\ncompression = \"none\"\n\
                 [consumer]\nidle_after_ms = 2000";
    let east = TestRegion::start_on(Broker::Kafka(kafka), DIM as u32, "f32", extra).await;
    let dir = tempfile::tempdir().unwrap();
    let brokers = east.config.kafka.brokers.clone();
    let region = |name: &str| {
        let mut c: RegionConfig = east.config.clone();
        c.region = name.into();
        c.kafka.topic = unique_name("vecsync.deltas");
        c.kafka.codebook_topic = format!("{}.codebooks", c.kafka.topic);
        c.kafka.partitions = PARTITIONS;
        c.store.path = dir.path().join(name);
        c
    };
    let mut regions = [region("us-east"), region("eu-west"), region("ap-south")];
    let sources: Vec<SourceConfig> = regions
        .iter()
        .map(|c| SourceConfig::new(&c.region, None, &c.kafka.topic, &c.kafka.codebook_topic))
        .collect();
    for (i, c) in regions.iter_mut().enumerate() {
        c.consumer.sources = sources
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s.clone())
            .collect();
        // About a megabyte kept per partition, in one-megabyte segments.
        let Broker::Kafka(kafka) = &east.broker else {
            unreachable!()
        };
        kafka
            .create_topic_with(
                &c.kafka.topic,
                PARTITIONS,
                &[("segment.bytes", "1048576"), ("retention.bytes", "1048576")],
            )
            .unwrap();
    }
    let [a, b, c] = &regions;
    let topics = [a.kafka.topic.clone(), b.kafka.topic.clone()];

    // us-east and eu-west write 25,000 events each and replicate.
    let (pub_a, pub_b) = (
        Publisher::connect(a).await.unwrap(),
        Publisher::connect(b).await.unwrap(),
    );
    let stores: Vec<Arc<dyn Store>> = [a, b]
        .iter()
        .map(|c| store::open(&c.store).unwrap())
        .collect();
    let worker_a = worker::spawn(a.clone(), stores[0].clone());
    let worker_b = worker::spawn(b.clone(), stores[1].clone());
    let (last_a, last_b) =
        tokio::join!(publish(&pub_a, 1, 0, 25_000), publish(&pub_b, 2, 0, 25_000));
    for w in [&worker_a, &worker_b] {
        applied(w, &[last_a.clone(), last_b.clone()]).await;
    }
    let history = digest(&stores[0]).await;
    assert_eq!(history, digest(&stores[1]).await);

    // Retention deletes the first segments of both topics.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let starts: Vec<Vec<i64>> = topics.iter().map(|t| log_starts(&brokers, t)).collect();
        if starts.iter().flatten().all(|&s| s > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "nothing deleted: {starts:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // ap-south joins without a snapshot: it reports what it lost, and what
    // it holds is not what the others hold.
    let mut unseeded = c.clone();
    unseeded.consumer.group_id = Some("vecsync-ap-south-unseeded".into());
    unseeded.store.path = dir.path().join("ap-south-unseeded");
    let unseeded_store = store::open(&unseeded.store).unwrap();
    let worker = worker::spawn(unseeded, unseeded_store.clone());
    applied(&worker, &[last_a.clone(), last_b.clone()]).await;
    let text = metrics.render();
    let lost: Vec<u64> = topics.iter().map(|t| lost_records(&text, t)).collect();
    assert!(lost.iter().all(|&n| n > 0), "no loss reported: {lost:?}");
    assert_ne!(digest(&unseeded_store).await, history);
    worker.stop().await.unwrap();

    // A snapshot of us-east, taken from its worker's API while it runs.
    let access = StoreAccess {
        store: stores[0].clone(),
        config: Arc::new(a.clone()),
        watermarks: worker_a.watermarks().clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/snapshot", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, store_routes(access)).await });
    let taken = reqwest::get(&url).await.unwrap();
    assert_eq!(taken.status(), 200);
    let taken = taken.bytes().await.unwrap().to_vec();
    // The server holds us-east's store: gone before the store's directory.
    server.abort();
    let _ = server.await;
    let header = snapshot::read_header(&mut taken.as_slice()).unwrap();
    assert_eq!(header.region, "us-east");
    for (origin, last) in [("us-east", &last_a), ("eu-west", &last_b)] {
        let mark: Hlc = header.watermarks[origin].parse().unwrap();
        assert!(mark > *last, "{origin}: {mark} is not past {last}");
    }
    assert_eq!(header.committed.len(), 2 * PARTITIONS as usize);

    // A snapshot cut short is refused, and leaves nothing behind it.
    let cut_store = store::open(&{
        let mut s = c.store.clone();
        s.path = dir.path().join("ap-south-cut");
        s
    })
    .unwrap();
    let cut = &taken[..taken.len() / 2];
    let cut = &cut[..=cut.iter().rposition(|&b| b == b'\n').unwrap()];
    let refused = snapshot::load(cut_store.as_ref(), c, &mut &cut[..], &mut |_| {});
    assert!(
        matches!(refused, Err(SnapshotError::Truncated { .. })),
        "{refused:?}"
    );

    // ap-south restores it, and its group starts where the snapshot ends.
    let positions = snapshot::plan_positions(c, &header, 5_000).unwrap();
    for topic in &topics {
        let p = positions.iter().find(|p| p.source.topic == *topic).unwrap();
        let starts = log_starts(&brokers, topic);
        assert_eq!(p.partitions.len(), PARTITIONS as usize);
        for (partition, offset) in &p.partitions {
            assert!(*offset > starts[*partition as usize], "{topic}: {p:?}");
        }
    }
    let own = positions
        .iter()
        .find(|p| p.source.topic == c.kafka.topic)
        .unwrap();
    assert_eq!(
        own.from_ms, None,
        "no watermark of ap-south in the snapshot"
    );
    let c_store = store::open(&c.store).unwrap();
    let loaded = snapshot::load(c_store.as_ref(), c, &mut taken.as_slice(), &mut |_| {}).unwrap();
    assert!(loaded.points >= 25_000, "{loaded:?}");
    snapshot::commit_positions(c, &positions).unwrap();
    let again = snapshot::load(c_store.as_ref(), c, &mut taken.as_slice(), &mut |_| {});
    assert!(
        matches!(again, Err(SnapshotError::NotEmpty(_))),
        "{again:?}"
    );

    // Everyone writes on; the three regions converge.
    let worker_c = worker::spawn(c.clone(), c_store.clone());
    let pub_c = Publisher::connect(c).await.unwrap();
    let (last_a, last_b, last_c) = tokio::join!(
        publish(&pub_a, 1, 25_000, 1_000),
        publish(&pub_b, 2, 25_000, 1_000),
        publish(&pub_c, 3, 0, 1_000)
    );
    let last = [last_a, last_b, last_c];
    for w in [&worker_a, &worker_b, &worker_c] {
        applied(w, &last).await;
    }
    let digests = [
        digest(&stores[0]).await,
        digest(&stores[1]).await,
        digest(&c_store).await,
    ];
    assert_eq!(digests[0], digests[1]);
    assert_eq!(digests[0], digests[2], "ap-south differs from us-east");
    let text = metrics.render();
    let lost_after: Vec<u64> = topics.iter().map(|t| lost_records(&text, t)).collect();
    assert_eq!(lost_after, lost, "the restored region lost nothing more");
    for w in [worker_a, worker_b, worker_c] {
        let stats = w.stop().await.unwrap();
        assert_eq!(stats.dead_letters, 0, "{stats:?}");
    }
}
