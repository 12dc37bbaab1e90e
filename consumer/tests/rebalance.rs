//! Group assignment: when a second worker joins, the first one gives up
//! partitions only after applying and synchronously committing everything
//! it holds, so the new owner starts where the first one stopped and
//! nothing is lost. Both workers share one Qdrant server, as a region's
//! workers do in production.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vecsync_consumer::apply::{Change, fold};
use vecsync_consumer::digest::Digest;
use vecsync_consumer::store::{self, Store};
use vecsync_consumer::worker;
use vecsync_devkit::broker::read_topic;
use vecsync_devkit::testbed::TestRegion;
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::config::{Distance, RegionConfig};
use vecsync_schemas::event::PointId;
use vecsync_schemas::testing::vector;

const DIM: usize = 8;

/// Each partition's committed offset and end (one past its last record).
/// The end is read off the records: tansu 0.6's ListOffsets answers one
/// past the first offset of the last record batch, not of its last record.
fn commits_and_ends(config: &RegionConfig) -> Vec<(i32, Option<i64>, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", config.group_id())
        .create()
        .unwrap();
    let topic = &config.kafka.topic;
    let mut tpl = TopicPartitionList::new();
    for p in 0..config.kafka.partitions as i32 {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let records = read_topic(
        &config.kafka.brokers,
        topic,
        usize::MAX,
        Duration::from_secs(5),
        |_| true,
    )
    .unwrap();
    committed
        .elements()
        .iter()
        .map(|e| {
            let end = records
                .iter()
                .filter(|r| r.partition == e.partition())
                .map(|r| r.offset + 1)
                .max()
                .unwrap_or(0);
            let at = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (e.partition(), at, end)
        })
        .collect()
}

async fn digest(store: &Arc<dyn Store>) -> Digest {
    let store = store.clone();
    tokio::task::spawn_blocking(move || Digest::of(store.as_ref(), "docs").unwrap_or_default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_drains_and_commits_before_partitions_move() {
    // Batches wait ten minutes: only a drain applies anything in this test.
    let extra = "[consumer]\nassignment = \"group\"\nsession_timeout_ms = 6000\n\
                 batch_max_wait_ms = 600000\nbatch_max_events = 1000000\nidle_after_ms = 600000";
    let Some(mut region) = TestRegion::start(DIM as u32, "f32", extra).await else {
        return;
    };
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = region.serve_qdrant(dir.path()).await.unwrap();
    let config = region.config.clone();

    let publisher = Publisher::connect(&config).await.unwrap();
    let mut writes = Vec::new();
    for round in 0..3u64 {
        let batch: Vec<Mutation> = (0..200)
            .map(|i| Mutation::Upsert {
                id: PointId::Num(i),
                vector: vector(DIM, round * 1000 + i),
                payload: None,
            })
            .collect();
        let versions = publisher.publish("docs", &batch).await.unwrap();
        for (m, v) in batch.iter().zip(versions) {
            let Mutation::Upsert { vector, .. } = m else {
                unreachable!()
            };
            let change = Change::Upsert {
                vector: vector.clone(),
                payload: None,
            };
            writes.push((m.id(), v, change));
        }
    }
    drop(publisher);
    let expected = Digest::of_records(&fold(writes));

    let store = store::open(&config.store).unwrap();
    let first = worker::spawn(config.clone(), store.clone());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        digest(&store).await.points,
        0,
        "the first worker holds what it read"
    );

    // The second worker joins; the first drains before the partitions move.
    let second = worker::spawn(config.clone(), store.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while digest(&store).await != expected {
        assert!(
            Instant::now() < deadline,
            "the rebalance did not drain the first worker"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let commits = tokio::task::spawn_blocking({
        let config = config.clone();
        move || commits_and_ends(&config)
    })
    .await
    .unwrap();
    for (partition, committed, end) in commits {
        assert_eq!(
            committed,
            Some(end),
            "partition {partition}: the drain committed everything applied"
        );
    }

    let second = second.stop().await.unwrap();
    let first = first.stop().await.unwrap();
    assert!(first.revocations >= 1, "{first:?}");
    assert_eq!(first.applied, 600, "{first:?}");
    assert_eq!(first.dead_letters + second.dead_letters, 0);
    assert_eq!(
        second.applied, 0,
        "nothing was left for the new owner to apply: {second:?}"
    );
    assert_eq!(digest(&store).await, expected);
    drop(store);
    endpoint.stop().await;
}
