//! Outages are not dead letters: a registry that is down when the worker
//! needs a writer schema, or a Qdrant server that goes away mid-stream, makes
//! the worker wait and retry; once they are back everything is applied. An
//! embedded store that fails a flush (a full disk) stops the worker with an
//! error instead, committing nothing the flush held: a restart replays it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use vecsync_consumer::store::edge::{EdgeStore, WalLimits};
use vecsync_consumer::store::{self, Store, StoreError};
use vecsync_consumer::worker::{self, WorkerError};
use vecsync_devkit::qdrant::QdrantEndpoint;
use vecsync_devkit::registry::DevRegistry;
use vecsync_devkit::testbed::{TestRegion, is_heartbeat};
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::avro::AvroRecord;
use vecsync_schemas::config::{Distance, RegionConfig, StoreBackend};
use vecsync_schemas::event::{Body, DeltaEvent, PointId};
use vecsync_schemas::registry::{RegistryClient, value_subject};
use vecsync_schemas::testing::{codebook, vector, write_codebook};
use vecsync_schemas::vector::Encoding;

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
    // What answers at its address meanwhile drops every connection, and
    // shows when the worker, having read the events, asks for the schema
    // (other requests are readiness probes).
    let down = tokio::net::TcpListener::bind(addr).await.unwrap();
    let store = Arc::new(EdgeStore::open(&config.store.path).unwrap());
    let running = worker::spawn(config.clone(), store.clone());
    let asked = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (mut connection, _) = down.accept().await.unwrap();
            let mut request = vec![0; 1024];
            let n = connection.read(&mut request).await.unwrap_or(0);
            if String::from_utf8_lossy(&request[..n]).contains("/schemas/ids/") {
                return;
            }
        }
    })
    .await;
    asked.expect("the worker never asked the registry for the events' schema");
    assert_eq!(
        store.count("docs").unwrap(),
        0,
        "nothing applied while the registry is down"
    );
    drop(down);

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
    wait_for("the worker did not resume", 30, || async {
        store.count("docs").unwrap() >= 10
    })
    .await;
    let stats = running.stop().await.unwrap();
    assert_eq!(stats.dead_letters, 0, "an outage is not a dead letter");
    assert_eq!(stats.applied, 10);
}

fn upserts(range: std::ops::Range<u64>) -> Vec<Mutation> {
    range
        .map(|i| Mutation::Upsert {
            id: PointId::Num(i),
            vector: vector(DIM, i),
            payload: None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_stops_the_worker_and_commits_only_what_the_store_kept() {
    let Some(mut region) = TestRegion::start(DIM as u32, "f32", "").await else {
        return;
    };
    // Small log segments, so that the engine soon needs a new one.
    let wal = WalLimits {
        segment_bytes: 64 << 10,
        reclaim_bytes: u64::MAX,
    };
    // The live shard's log goes: the engine's writes fail once it moves
    // on to its next log segment.
    const N: u64 = 3_000;
    let failed = fail_the_store(&mut region, wal, "wal", 10..N).await;
    let config = &region.config;
    assert!(
        matches!(&failed.err, WorkerError::Store(StoreError::Lost { collection, message })
            if collection == "docs" && message.contains("a write failed")),
        "{}",
        failed.err
    );

    // Loaded again, the store holds every event before each partition's
    // commit.
    drop(failed.store);
    let store = edge(config, wal);
    store.ensure_collection("docs", DIM, Distance::Dot).unwrap();
    let ids: Vec<PointId> = (0..N).map(PointId::Num).collect();
    let kept = store.read("docs", &ids).unwrap();
    let records = region
        .read(
            &config.kafka.topic,
            N as usize,
            Duration::from_secs(30),
            |r| !is_heartbeat(r),
        )
        .await;
    let events = region.decode(&records).await;
    let partitions: std::collections::BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
    let committed = committed(config, partitions.into_iter()).await;
    let mut before_commits = 0;
    for (record, event) in records.iter().zip(&events) {
        let Body::Upsert(u) = &event.body else {
            continue;
        };
        if committed
            .get(&record.partition)
            .is_some_and(|at| record.offset < *at)
        {
            before_commits += 1;
            assert!(
                kept.contains_key(&u.id),
                "partition {} committed past offset {}, point {:?}, which the store lost",
                record.partition,
                record.offset,
                u.id
            );
        }
    }

    // At least the first ten, committed by the first worker as it stopped.
    assert!(
        before_commits >= 10,
        "{before_commits} events before the commits"
    );

    // Restarted on it, the worker replays what the store lost.
    let running = worker::spawn(config.clone(), store.clone());
    wait_for("the lost events were not replayed", 60, || async {
        count(&store).await == N as usize
    })
    .await;
    running.stop().await.unwrap();
}

/// A worker whose embedded store fails.
struct Failed {
    store: Arc<dyn Store>,
    /// What the worker stopped with.
    err: WorkerError,
    dir: tempfile::TempDir,
}

/// Runs a worker on an embedded store (`wal`) until it has applied points
/// 0..10, takes the live shard's directory `gone` away, as files go on a
/// failing disk, publishes points `then` and waits for a new worker to
/// stop on its own.
async fn fail_the_store(
    region: &mut TestRegion,
    wal: WalLimits,
    gone: &str,
    then: std::ops::Range<u64>,
) -> Failed {
    let dir = tempfile::tempdir().unwrap();
    region.config.store.path = dir.path().join("store");
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    let config = &region.config;
    let publisher = Publisher::connect(config).await.unwrap();
    publisher.publish("docs", &upserts(0..10)).await.unwrap();
    let store = edge(config, wal);
    let running = worker::spawn(config.clone(), store.clone());
    wait_for("the first events were not applied", 30, || async {
        count(&store).await >= 10
    })
    .await;
    running.stop().await.unwrap();

    std::fs::remove_dir_all(config.store.path.join("docs").join(gone)).unwrap();
    let running = worker::spawn(config.clone(), store.clone());
    for from in then.clone().step_by(100) {
        let to = (from + 100).min(then.end);
        publisher.publish("docs", &upserts(from..to)).await.unwrap();
    }
    wait_for("the worker went on", 60, || async { running.is_finished() }).await;
    let err = running.stop().await.unwrap_err();
    Failed { store, err, dir }
}

/// The region's embedded store, keeping its shards' logs within `wal`.
fn edge(config: &RegionConfig, wal: WalLimits) -> Arc<dyn Store> {
    Arc::new(
        EdgeStore::open(&config.store.path)
            .unwrap()
            .with_wal_limits(wal),
    )
}

/// The group's committed offsets of `partitions` of the region's topic,
/// where it committed one.
async fn committed(
    config: &RegionConfig,
    partitions: impl Iterator<Item = i32>,
) -> HashMap<i32, i64> {
    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", config.group_id())
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in partitions {
        list.add_partition(&config.kafka.topic, p);
    }
    let committed =
        tokio::task::spawn_blocking(move || group.committed_offsets(list, Duration::from_secs(10)))
            .await
            .unwrap()
            .unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(at) => Some((e.partition(), at)),
            _ => None,
        })
        .collect()
}

/// Polls `done` until it holds, or panics with `what` after `timeout_s`.
async fn wait_for<F: Future<Output = bool>>(
    what: &str,
    timeout_s: u64,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}");
        // Poll interval of a wait that ends as soon as `done` holds.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count(store: &Arc<dyn Store>) -> usize {
    count_in(store, "docs").await
}

async fn count_in(store: &Arc<dyn Store>, collection: &'static str) -> usize {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.count(collection).unwrap_or(0))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qdrant_server_outage_pauses_the_worker_and_loses_nothing() {
    let Some(mut region) = TestRegion::start(DIM as u32, "f32", "").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let endpoint = QdrantEndpoint::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let addr = endpoint.addr().to_string();
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    region.config.store.backend = StoreBackend::Qdrant;
    region.config.store.url = endpoint.url();
    region.config.store.timeout_ms = 1_000;
    let publisher = Publisher::connect(&region.config).await.unwrap();
    let store = store::open(&region.config.store).unwrap();
    let running = worker::spawn(region.config.clone(), store.clone());
    publisher.publish("docs", &upserts(0..20)).await.unwrap();
    wait_for("the first events were not applied", 30, || async {
        count(&store).await >= 20
    })
    .await;

    // The server goes away while more events arrive.
    endpoint.stop().await;
    publisher.publish("docs", &upserts(20..50)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // It comes back at the same address with its data.
    let endpoint = QdrantEndpoint::start(dir.path(), &addr, None)
        .await
        .unwrap();
    wait_for("the worker did not resume", 60, || async {
        count(&store).await >= 50
    })
    .await;
    let stats = running.stop().await.unwrap();
    assert_eq!(stats.dead_letters, 0, "an outage is not a dead letter");
    // A write the server took as it went away or came back, but answered
    // too late, is found already stored when its batch is retried: applied
    // once in effect, counted as unchanged the second time.
    assert_eq!(stats.applied + stats.unchanged, 50, "{stats:?}");
    drop(store);
    endpoint.stop().await;
}

/// A worker that starts before its source's codebook topic exists (no PQ
/// collection has published a codebook yet) finds the topic once a
/// producer creates it, and applies the PQ events that waited for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_codebook_topic_created_after_the_worker_started_is_read() {
    let Some(mut region) = TestRegion::start(DIM as u32, "f32", "").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let book_path = write_codebook(&codebook("docs", DIM), dir.path());
    let docs = region.config.collections.get_mut("docs").unwrap();
    docs.distance = Distance::Dot;
    docs.encoding = Encoding::Pq;
    docs.codebook_file = Some(book_path);
    region.config.store.path = dir.path().join("store");
    // The events' topic is there; the codebook topic is not.
    region
        .broker
        .create_topic(&region.config.kafka.topic, 3)
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(EdgeStore::open(&region.config.store.path).unwrap());
    let running = worker::spawn(region.config.clone(), store.clone());
    // Its sources assigned: its codebook reader looked for the topic (and
    // did not find it) as it started, before then.
    wait_for("the worker never became ready", 30, || async {
        running.readiness().check().is_ok()
    })
    .await;
    let publisher = Publisher::connect(&region.config).await.unwrap();
    publisher.publish("docs", &upserts(0..20)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&store).await < 20 {
        assert!(
            Instant::now() < deadline,
            "PQ events never applied: {} of 20",
            count(&store).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await.unwrap();
}

/// The value of an unlabelled gauge in `rendered` metrics.
fn gauge(rendered: &str, name: &str) -> Option<f64> {
    rendered
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// PQ events whose codebook has not arrived are set aside, at most
/// `consumer.codebook_wait_max_events`: beyond, the worker reads no more
/// records, so later events of another collection wait too. When the
/// codebook comes, everything is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_waiting_for_a_codebook_are_bounded_and_applied_when_it_comes() {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let Some(mut region) = TestRegion::start(
        DIM as u32,
        "f32",
        "[consumer]\ncodebook_wait_max_events = 5",
    )
    .await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let docs = region.config.collections.get_mut("docs").unwrap();
    docs.distance = Distance::Dot;
    let plain = docs.clone();
    docs.encoding = Encoding::Pq;
    docs.codebook_file = Some(write_codebook(&codebook("docs", DIM), dir.path()));
    region.config.collections.insert("plain".into(), plain);
    region.config.store.path = dir.path().join("store");
    // The worker reads codebooks from a topic the producer does not write.
    let mut worker_config = region.config.clone();
    worker_config.kafka.codebook_topic = format!("{}.late", region.config.kafka.topic);
    let store: Arc<dyn Store> = Arc::new(EdgeStore::open(&worker_config.store.path).unwrap());
    let running = worker::spawn(worker_config.clone(), store.clone());
    let publisher = Publisher::connect(&region.config).await.unwrap();
    publisher.publish("docs", &upserts(0..10)).await.unwrap();

    let waiting = || {
        gauge(
            &metrics.render(),
            "vecsync_consumer_waiting_for_codebook_events",
        )
    };
    wait_for("PQ events were never set aside", 30, || async {
        waiting().unwrap_or(0.0) >= 5.0
    })
    .await;
    // Set aside are the events of the batch that reached the bound: no more
    // records are read, so what comes next waits in Kafka.
    publisher.publish("plain", &upserts(0..10)).await.unwrap();
    // Nothing to wait for: these 3 s are the window in which a worker
    // reading past the bound applies them (it does in a few hundred ms).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let set_aside = waiting().unwrap();
    assert!((5.0..=10.0).contains(&set_aside), "{set_aside}");
    assert_eq!(
        count_in(&store, "plain").await,
        0,
        "records were read past the bound"
    );
    assert_eq!(count(&store).await, 0);

    // The codebook comes on the worker's topic: everything is applied.
    let late = Publisher::connect(&worker_config).await.unwrap();
    late.publish("docs", &upserts(10..11)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&store).await < 11 || count_in(&store, "plain").await < 10 {
        assert!(
            Instant::now() < deadline,
            "after the codebook: docs {} of 11, plain {} of 10",
            count(&store).await,
            count_in(&store, "plain").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = running.stop().await.unwrap();
    assert_eq!(stats.dead_letters, 0);
    assert_eq!(waiting(), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_stops_the_worker_and_commits_nothing_it_held() {
    let Some(mut region) = TestRegion::start(DIM as u32, "f32", "").await else {
        return;
    };
    // The live shard's segments go: the engine can apply the next events
    // but not flush them.
    let failed = fail_the_store(&mut region, WalLimits::default(), "segments", 10..20).await;
    let config = region.config.clone();
    assert!(
        matches!(&failed.err, WorkerError::Store(StoreError::Lost { collection, message })
            if collection == "docs" && message.contains("a flush failed")),
        "{}",
        failed.err
    );

    // No partition's commit is past an event of the failed flush.
    let records = region
        .read(&config.kafka.topic, 20, Duration::from_secs(30), |r| {
            !is_heartbeat(r)
        })
        .await;
    let events = region.decode(&records).await;
    let mut first_lost: HashMap<i32, i64> = HashMap::new();
    let mut lost = 0;
    for (record, event) in records.iter().zip(&events) {
        if let Body::Upsert(u) = &event.body
            && matches!(u.id, PointId::Num(n) if n >= 10)
        {
            lost += 1;
            let first = first_lost.entry(record.partition).or_insert(record.offset);
            *first = (*first).min(record.offset);
        }
    }
    assert_eq!(lost, 10);
    let committed = committed(&config, first_lost.keys().copied()).await;
    for (partition, at) in committed {
        assert!(
            at <= first_lost[&partition],
            "partition {partition} committed to {at}, past {}, an event the failed flush held",
            first_lost[&partition]
        );
    }

    // Restarted on a store that can flush, the worker replays them.
    drop(failed.store);
    let mut config = config;
    config.store.path = failed.dir.path().join("again");
    let store: Arc<dyn Store> = Arc::new(EdgeStore::open(&config.store.path).unwrap());
    let running = worker::spawn(config, store.clone());
    wait_for("the lost events were not replayed", 30, || {
        let store = store.clone();
        let ids: Vec<PointId> = (10..20).map(PointId::Num).collect();
        async move {
            tokio::task::spawn_blocking(move || store.read("docs", &ids).map(|r| r.len()))
                .await
                .unwrap()
                .is_ok_and(|n| n == 10)
        }
    })
    .await;
    running.stop().await.unwrap();
}
