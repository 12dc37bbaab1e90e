//! Two regions on two real brokers, each writing and each replaying the
//! other's topic directly (and its own): after quiescence both stores hold
//! exactly the state the fold of every event in HLC order defines. Run with
//! each store backend: the embedded engine, and a Qdrant server per region
//! through qdrant-client (devkit's gRPC endpoint over the real engine).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vecsync_consumer::apply::{Change, fold};
use vecsync_consumer::digest::Digest;
use vecsync_consumer::store::{self, Store, StoreError};
use vecsync_consumer::worker;
use vecsync_devkit::broker::{Tansu, free_port, unique_name};
use vecsync_devkit::qdrant::QdrantEndpoint;
use vecsync_devkit::testbed::TestRegion;
use vecsync_producer::{Mutation, Publisher, http, metrics};
use vecsync_schemas::config::{Distance, RegionConfig, SourceConfig, StoreBackend};
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::testing::vector;

const DIM: usize = 8;

fn mutations(region: u64, n: u64) -> Vec<Mutation> {
    (0..n)
        .map(|i| {
            let id = PointId::Num((i * 7 + region) % 50);
            match i % 10 {
                3 => Mutation::Delete { id },
                _ => Mutation::Upsert {
                    id,
                    vector: vector(DIM, region * 1000 + i),
                    payload: Some(
                        json!({"from": region, "i": i})
                            .as_object()
                            .cloned()
                            .unwrap(),
                    ),
                },
            }
        })
        .collect()
}

fn change(m: &Mutation) -> Change {
    match m {
        Mutation::Upsert {
            vector, payload, ..
        } => Change::Upsert {
            vector: vector.clone(),
            payload: payload.clone(),
        },
        Mutation::Delete { .. } => Change::Delete,
        Mutation::PatchPayload {
            base_version,
            payload,
            ..
        } => Change::Patch {
            base: base_version.clone(),
            payload: payload.clone(),
        },
    }
}

/// The store's digest, read off the executor (store calls block).
async fn digest(store: &Arc<dyn Store>) -> Result<Digest, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || Digest::of(store.as_ref(), "docs"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_regions_converge_to_the_fold_of_every_event_in_embedded_stores() {
    both_regions_converge_to_the_fold_of_every_event(StoreBackend::Edge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_regions_converge_to_the_fold_of_every_event_in_qdrant_servers() {
    both_regions_converge_to_the_fold_of_every_event(StoreBackend::Qdrant).await;
}

/// Two regions on two brokers, each replaying the other's topic (and its
/// own), with fast heartbeats and idleness for quick tests.
struct TwoRegions {
    east: TestRegion,
    west: RegionConfig,
    west_broker: Tansu,
    _dir: tempfile::TempDir,
}

impl TwoRegions {
    async fn start() -> Option<Self> {
        let extra = "[producer]\nheartbeat_interval_ms = 200\n[consumer]\nidle_after_ms = 2000";
        let mut east = TestRegion::start(DIM as u32, "f32", extra).await?;
        let west_broker = Tansu::start()?;
        east.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
        let dir = tempfile::tempdir().unwrap();
        east.config.store.path = dir.path().join("us-east");
        let mut west: RegionConfig = east.config.clone();
        west.region = "eu-west".into();
        west.kafka.brokers = west_broker.brokers();
        west.kafka.topic = unique_name("vecsync.deltas");
        west.store.path = dir.path().join("eu-west");
        let source = |c: &RegionConfig| {
            SourceConfig::new(
                &c.region,
                Some(c.kafka.brokers.clone()),
                &c.kafka.topic,
                &c.kafka.codebook_topic,
            )
        };
        let (east_source, west_source) = (source(&east.config), source(&west));
        east.config.consumer.sources = vec![west_source];
        west.consumer.sources = vec![east_source];
        Some(Self {
            east,
            west,
            west_broker,
            _dir: dir,
        })
    }

    /// Runs a worker per region on `backend` until both stores hold
    /// `expected`, and checks that nothing was dead-lettered.
    async fn converge_to(&self, expected: &Digest, backend: StoreBackend) {
        let mut stores = Vec::new();
        let mut workers = Vec::new();
        let mut endpoints = Vec::new();
        for mut config in [self.east.config.clone(), self.west.clone()] {
            if backend == StoreBackend::Qdrant {
                let endpoint = QdrantEndpoint::start(&config.store.path, "127.0.0.1:0", None)
                    .await
                    .unwrap();
                config.store.backend = StoreBackend::Qdrant;
                config.store.url = endpoint.url();
                endpoints.push(endpoint);
            }
            let store = store::open(&config.store).unwrap();
            workers.push(worker::spawn(config, store.clone()));
            stores.push(store);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut now = Vec::new();
            for store in &stores {
                now.push(digest(store).await.unwrap_or_default());
            }
            if now.iter().all(|d| d == expected) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no convergence: {now:?} expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for w in workers {
            let stats = w.stop().await.unwrap();
            assert_eq!(stats.dead_letters, 0, "{stats:?}");
        }
        assert_eq!(
            digest(&stores[0]).await.unwrap(),
            digest(&stores[1]).await.unwrap()
        );
        drop(stores);
        for endpoint in endpoints {
            endpoint.stop().await;
        }
    }
}

async fn both_regions_converge_to_the_fold_of_every_event(backend: StoreBackend) {
    let Some(regions) = TwoRegions::start().await else {
        return;
    };
    // Both regions write, concurrently, to overlapping points.
    let east_pub = Publisher::connect(&regions.east.config).await.unwrap();
    let west_pub = Publisher::connect(&regions.west).await.unwrap();
    let (east_m, west_m) = (mutations(1, 300), mutations(2, 300));
    let mut all: Vec<(PointId, Hlc, Change)> = Vec::new();
    for (batch_e, batch_w) in east_m.chunks(50).zip(west_m.chunks(50)) {
        let (ve, vw) = tokio::join!(
            east_pub.publish("docs", batch_e),
            west_pub.publish("docs", batch_w)
        );
        for (m, v) in batch_e
            .iter()
            .zip(ve.unwrap())
            .chain(batch_w.iter().zip(vw.unwrap()))
        {
            all.push((m.id(), v, change(m)));
        }
    }
    // The expected state: every event folded in HLC order.
    let expected = Digest::of_records(&fold(all));
    regions.converge_to(&expected, backend).await;
    assert!(expected.points > 10, "{expected}");
}

/// Two ingest servers of one region, as behind a load balancer, take writes
/// to the same ids at the same moment, round after round. Every answer's
/// version is distinct, and both regions' stores end holding, per id, the
/// write with the highest version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingest_servers_of_one_region_never_give_two_writes_one_version() {
    let Some(regions) = TwoRegions::start().await else {
        return;
    };
    let mut urls = Vec::new();
    for _ in 0..2 {
        let publisher = Arc::new(Publisher::connect(&regions.east.config).await.unwrap());
        let mut ingest = regions.east.config.ingest.clone();
        ingest.listen = format!("127.0.0.1:{}", free_port().unwrap())
            .parse()
            .unwrap();
        urls.push(format!(
            "http://{}/v1/collections/docs/points",
            ingest.listen
        ));
        tokio::spawn(async move {
            http::serve(
                publisher,
                &ingest,
                metrics::prometheus(),
                std::future::pending(),
            )
            .await
        });
    }
    let client = reqwest::Client::new();
    let post = |url: &str, server: usize, round: usize| {
        let points: Vec<_> = (0..20u64)
            .map(|id| json!({"id": id, "vector": vector(DIM, (round * 2 + server) as u64), "payload": {"server": server, "round": round}}))
            .collect();
        client.post(url).json(&json!({ "points": points })).send()
    };
    let mut all: Vec<(PointId, Hlc, Change)> = Vec::new();
    let mut same_tick = 0;
    for round in 0..100 {
        let answers = loop {
            let (a, b) = tokio::join!(post(&urls[0], 0, round), post(&urls[1], 1, round));
            match (a, b) {
                (Ok(a), Ok(b)) => break [a, b],
                // A server may still be binding its port in the first round.
                _ if round == 0 => tokio::time::sleep(Duration::from_millis(100)).await,
                (a, b) => panic!("{a:?} {b:?}"),
            }
        };
        let mut ticks = Vec::new();
        for (server, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.status(), 200);
            let answer: serde_json::Value = answer.json().await.unwrap();
            for (id, v) in answer["versions"].as_array().unwrap().iter().enumerate() {
                let version: Hlc = v["version"].as_str().unwrap().parse().unwrap();
                ticks.push((version.wall_ms, version.logical, id));
                let vector = vector(DIM, (round * 2 + server) as u64);
                let payload = json!({"server": server, "round": round})
                    .as_object()
                    .cloned();
                all.push((
                    PointId::Num(id as u64),
                    version,
                    Change::Upsert { vector, payload },
                ));
            }
        }
        ticks.sort_unstable();
        same_tick += ticks.windows(2).filter(|w| w[0] == w[1]).count();
    }
    let mut versions: Vec<&Hlc> = all.iter().map(|(_, v, _)| v).collect();
    versions.sort();
    versions.dedup();
    assert_eq!(
        versions.len(),
        all.len(),
        "two acknowledged writes share a version"
    );
    let expected = Digest::of_records(&fold(all));
    assert_eq!(expected.points, 20, "{expected}");
    regions.converge_to(&expected, StoreBackend::Edge).await;
    // The servers' clocks did agree: only the producer tells those apart.
    assert!(
        same_tick > 0,
        "no two writes shared a millisecond and a counter"
    );
}

/// A worker that starts while one origin is quiet does not let the other
/// origin's events pass it: the quiet origin's partitions hold the watermark
/// from the start, until that origin speaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_origin_holds_the_watermark_from_the_start() {
    let Some(mut regions) = TwoRegions::start().await else {
        return;
    };
    // eu-west's topics exist, and nothing has been written to them yet.
    let west = regions.west.clone();
    for (topic, partitions) in [
        (&west.kafka.topic, west.kafka.partitions),
        (&west.kafka.codebook_topic, 1),
    ] {
        regions.west_broker.create_topic(topic, partitions).unwrap();
    }
    regions.east.config.consumer.idle_after_ms = 120_000;
    let store = store::open(&regions.east.config.store).unwrap();
    let worker = worker::spawn(regions.east.config.clone(), store.clone());
    let east_pub = Publisher::connect(&regions.east.config).await.unwrap();
    let east_m = mutations(1, 20);
    east_pub.publish("docs", &east_m).await.unwrap();

    // us-east's own heartbeats pass its writes; eu-west has said nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = digest(&store).await.unwrap();
    assert_eq!(held.points, 0, "applied before eu-west spoke: {held}");

    // eu-west speaks (its producer's heartbeats): the writes pass.
    let west_pub = Publisher::connect(&west).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while digest(&store).await.unwrap().points == 0 {
        assert!(
            Instant::now() < deadline,
            "never applied after eu-west spoke"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(west_pub);
    let stats = worker.stop().await.unwrap();
    assert_eq!(stats.reorder.late, 0, "{stats:?}");
}

/// A region that does not replicate one of another region's collections
/// skips that collection's events from its source and counts them: none
/// reaches its store and none is dead-lettered, and the events around them
/// still pass the watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_replicates_only_the_collections_the_region_takes_from_it() {
    let Some(mut regions) = TwoRegions::start().await else {
        return;
    };
    let docs = regions.east.config.collections["docs"].clone();
    for config in [&mut regions.east.config, &mut regions.west] {
        config.collections.insert("private".into(), docs.clone());
    }
    let east = &mut regions.east.config;
    east.consumer.sources[0].exclude_collections = vec!["private".into()];

    let west_pub = Publisher::connect(&regions.west).await.unwrap();
    let mut all: Vec<(PointId, Hlc, Change)> = Vec::new();
    let (shared, private) = (mutations(2, 200), mutations(3, 50));
    for (batch, private) in shared.chunks(50).zip(private.chunks(13)) {
        let versions = west_pub.publish("docs", batch).await.unwrap();
        all.extend(
            batch
                .iter()
                .zip(versions)
                .map(|(m, v)| (m.id(), v, change(m))),
        );
        west_pub.publish("private", private).await.unwrap();
    }
    let expected = Digest::of_records(&fold(all));

    let metrics = metrics::prometheus();
    let store = store::open(&regions.east.config.store).unwrap();
    let worker = worker::spawn(regions.east.config.clone(), store.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while digest(&store).await.unwrap_or_default() != expected {
        assert!(Instant::now() < deadline, "docs never converged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = worker.stop().await.unwrap();
    assert_eq!((stats.skipped, stats.dead_letters), (50, 0), "{stats:?}");
    let series =
        "vecsync_consumer_skipped_events_total{origin=\"eu-west\",collection=\"private\"} 50\n";
    assert!(metrics.render().contains(series), "{}", metrics.render());
    let kept = tokio::task::spawn_blocking(move || Digest::of(store.as_ref(), "private"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.points, 0, "a private event reached the store: {kept}");
}
