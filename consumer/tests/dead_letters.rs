//! Events that can never apply go to the dead-letter topic with headers
//! naming their source and reason, while the rest of the stream is applied.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vecsync_consumer::digest::Digest;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_consumer::worker;
use vecsync_devkit::testbed::TestRegion;
use vecsync_schemas::config::Distance;
use vecsync_schemas::event::{Body, DeltaEvent, PayloadPatch, PointId};
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::payload::Payload;
use vecsync_schemas::registry::{RegistryClient, value_subject};
use vecsync_schemas::testing::upsert;
use vecsync_schemas::vector::Encoding;
use vecsync_schemas::wire::{Encoder, put_header};

const DIM: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reason_reaches_the_dead_letter_topic_and_the_rest_applies() {
    let Some(mut region) = TestRegion::start(DIM as u32, "sq8", "").await else {
        return;
    };
    region
        .broker
        .create_topic(&region.config.kafka.topic, 3)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    region.config.store.path = dir.path().join("store");
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    region.config.consumer.dead_letter_topic = format!("{}.dead", region.config.kafka.topic);
    let registry = RegistryClient::new(&region.registry.url(), Duration::from_secs(5)).unwrap();
    let encoder =
        Encoder::<DeltaEvent>::register(&registry, &value_subject(&region.config.kafka.topic))
            .await
            .unwrap();

    let mut unknown_collection = upsert(2, DIM, Encoding::Sq8);
    if let Body::Upsert(u) = &mut unknown_collection.body {
        u.collection = "nope".into();
    }
    // A foreign producer's events whose payload uses vecsync's bookkeeping
    // key, in an upsert and in a patch of a good point.
    let reserved = Payload::from_json(
        json!({"_vecsync": {"v": "1.0@x"}}).as_object().unwrap(),
        1024,
    )
    .unwrap();
    let mut reserved_upsert = upsert(5, DIM, Encoding::Sq8);
    if let Body::Upsert(u) = &mut reserved_upsert.body {
        u.payload = Some(reserved.clone());
    }
    let good = upsert(1, DIM, Encoding::Sq8);
    let reserved_patch = DeltaEvent {
        hlc: Hlc::new(good.hlc.wall_ms + 1, 0, "elsewhere"),
        body: Body::PayloadPatch(PayloadPatch {
            collection: "docs".into(),
            id: PointId::Num(1),
            base_version: good.hlc.clone(),
            payload: reserved,
        }),
    };
    let mut unknown_schema = Vec::new();
    put_header(&mut unknown_schema, 9_999);
    unknown_schema.extend([2, 4, 6]);
    let records: Vec<(&str, Vec<u8>)> = vec![
        ("good", encoder.encode(&good)),
        ("corrupt", b"\x07not an event".to_vec()),
        ("unknown schema", unknown_schema),
        (
            "wrong dimension",
            encoder.encode(&upsert(3, DIM + 2, Encoding::Sq8)),
        ),
        ("unknown collection", encoder.encode(&unknown_collection)),
        ("reserved key", encoder.encode(&reserved_upsert)),
        ("reserved key in a patch", encoder.encode(&reserved_patch)),
        ("good", encoder.encode(&upsert(4, DIM, Encoding::Sq8))),
    ];
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", region.broker.brokers())
        .create()
        .unwrap();
    for (name, bytes) in &records {
        producer
            .send(
                FutureRecord::to(&region.config.kafka.topic)
                    .key(*name)
                    .payload(bytes)
                    .partition(0),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    let store = Arc::new(EdgeStore::open(&region.config.store.path).unwrap());
    let running = worker::spawn(region.config.clone(), store.clone());
    let dead_topic = region.config.consumer.dead_letter_topic.clone();
    let dead = region
        .read(&dead_topic, 6, Duration::from_secs(30), |_| true)
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut digest = Digest::new();
    while Instant::now() < deadline {
        digest = Digest::of(store.as_ref(), "docs").unwrap_or_default();
        if digest.points == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = running.stop().await.unwrap();
    assert_eq!(digest.points, 2, "both good events applied");
    assert_eq!(stats.dead_letters, 6);

    let mut reasons = BTreeMap::new();
    for r in &dead {
        let headers = r.headers.clone();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(header("vecsync.source.topic"), region.config.kafka.topic);
        assert_eq!(header("vecsync.source.partition"), "0");
        let offset: usize = header("vecsync.source.offset").parse().unwrap();
        let (name, bytes) = &records[offset];
        assert_eq!(
            &r.value, bytes,
            "the dead letter carries the original bytes"
        );
        assert_eq!(r.key.as_deref(), Some(name.as_bytes()));
        reasons.insert(*name, header("vecsync.reason"));
    }
    let expected: BTreeMap<&str, String> = [
        ("corrupt", "bad_framing"),
        ("unknown schema", "unknown_schema"),
        ("wrong dimension", "wrong_dimension"),
        ("unknown collection", "unknown_collection"),
        ("reserved key", "reserved_key"),
        ("reserved key in a patch", "reserved_key"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect();
    assert_eq!(reasons, expected);
}
