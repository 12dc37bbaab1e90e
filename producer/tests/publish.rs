//! The publisher against a real broker (tansu) and the development registry:
//! what is sent is what consumers read, on the partition Java would pick.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use vecsync_devkit::broker::Storage;
use vecsync_devkit::testbed::{TestRegion, is_heartbeat};
use vecsync_producer::partition::partition_for;
use vecsync_producer::{Mutation, ProducerError, Publisher, Run};
use vecsync_schemas::avro::AvroRecord;
use vecsync_schemas::config::Residency;
use vecsync_schemas::event::{Body, DeltaEvent, PointId, VectorData};
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::registry::{RegistryClient, value_subject};
use vecsync_schemas::testing::{codebook, vector, write_codebook};
use vecsync_schemas::vector::{Encoding, PqCodebook};
use vecsync_schemas::wire::Decoder;

const DIM: usize = 16;
/// How long to wait for records that must arrive.
const LONG: Duration = Duration::from_secs(20);

fn upserts(ids: impl Iterator<Item = u64>) -> Vec<Mutation> {
    ids.map(|i| Mutation::Upsert {
        id: PointId::Num(i),
        vector: vector(DIM, i),
        payload: Some(
            json!({"title": format!("doc {i}"), "n": i})
                .as_object()
                .unwrap()
                .clone(),
        ),
    })
    .collect()
}

#[tokio::test]
async fn what_is_published_reads_back_equal_on_the_java_partition() {
    let Some(region) = TestRegion::start(DIM as u32, "sq8", "").await else {
        return;
    };
    let publisher = Publisher::connect(&region.config).await.unwrap();
    let uuid = PointId::Uuid("5c56c793-69f3-4fbf-87e6-c4bf54c28c26".parse().unwrap());
    let mut batch = upserts(0..60);
    batch.push(Mutation::Upsert {
        id: uuid,
        vector: vector(DIM, 99),
        payload: None,
    });
    batch.push(Mutation::Delete {
        id: PointId::Num(3),
    });
    let versions = publisher.publish("docs", &batch).await.unwrap();
    assert_eq!(versions.len(), batch.len());
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "versions ascend");
    let patch = Mutation::PatchPayload {
        id: PointId::Num(5),
        base_version: versions[5].clone(),
        payload: json!({"title": "patched"}).as_object().unwrap().clone(),
    };
    let patch_version = publisher
        .publish("docs", std::slice::from_ref(&patch))
        .await
        .unwrap();
    batch.push(patch);

    let topic = &region.config.kafka.topic;
    let records = region
        .read(topic, batch.len(), LONG, |r| !is_heartbeat(r))
        .await;
    assert_eq!(records.len(), batch.len());
    let events = region.decode(&records).await;
    let sent_at: HashMap<&Hlc, &Mutation> =
        versions.iter().chain(&patch_version).zip(&batch).collect();
    for (record, event) in records.iter().zip(&events) {
        let (_, id) = event.target().unwrap();
        let key = record.key.as_deref().unwrap();
        assert_eq!(key, id.key().as_bytes());
        assert_eq!(
            record.partition,
            partition_for(key, 3),
            "id {id} on the Java partition"
        );
        let sent = sent_at[&event.hlc];
        assert_eq!(sent.id(), id);
        match (sent, &event.body) {
            (
                Mutation::Upsert {
                    vector, payload, ..
                },
                Body::Upsert(u),
            ) => {
                let VectorData::Full(v) = &u.vector else {
                    panic!("full vector expected")
                };
                let decoded = v.decode(None).unwrap();
                // sq8: every value within half a quantization step (plus rounding).
                for (a, b) in vector.iter().zip(&decoded) {
                    assert!((a - b).abs() <= v.scale * 0.5 + 1e-6, "{a} vs {b}");
                }
                let got = u.payload.as_ref().map(|p| p.to_json().unwrap());
                assert_eq!(&got, payload);
            }
            (Mutation::Delete { .. }, Body::Delete(_)) => {}
            (
                Mutation::PatchPayload {
                    base_version,
                    payload,
                    ..
                },
                Body::PayloadPatch(p),
            ) => {
                assert_eq!(&p.base_version, base_version);
                assert_eq!(&p.payload.to_json().unwrap(), payload);
            }
            (sent, got) => panic!("sent {sent:?}, read {got:?}"),
        }
        assert_eq!(event.origin(), "us-east");
    }
    publisher.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn heartbeats_reach_every_partition_in_timestamp_order() {
    let extra = "[producer]\nheartbeat_interval_ms = 100";
    let Some(region) = TestRegion::start(DIM as u32, "sq8", extra).await else {
        return;
    };
    let publisher = Publisher::connect(&region.config).await.unwrap();
    publisher.publish("docs", &upserts(0..30)).await.unwrap();
    // Three rounds of heartbeats on each of the three partitions.
    let topic = &region.config.kafka.topic;
    let heartbeats = region.read(topic, 9, LONG, is_heartbeat).await;
    drop(publisher);
    let mut per_partition = [0; 3];
    for h in &heartbeats {
        per_partition[h.partition as usize] += 1;
    }
    assert!(per_partition.iter().all(|&n| n >= 2), "{per_partition:?}");
    let all = region
        .read(topic, 30 + heartbeats.len(), LONG, |_| true)
        .await;
    let events = region.decode(&all).await;
    for p in 0..3 {
        let stamps: Vec<(i64, &Hlc)> = all
            .iter()
            .zip(&events)
            .filter(|(r, _)| r.partition == p)
            .map(|(r, e)| (r.offset, &e.hlc))
            .collect();
        let mut by_offset = stamps.clone();
        by_offset.sort_by_key(|(o, _)| *o);
        assert!(
            by_offset.windows(2).all(|w| w[0].1 < w[1].1),
            "partition {p} is in HLC order"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e.body, Body::Heartbeat(h) if h.interval_ms == 100))
    );
}

#[tokio::test]
async fn a_full_queue_makes_senders_wait_and_nothing_is_dropped() {
    let extra = "[producer]\nqueue_max_messages = 8\nlinger_ms = 0";
    let Some(region) = TestRegion::start(DIM as u32, "f16", extra).await else {
        return;
    };
    let metrics = vecsync_producer::metrics::prometheus();
    let publisher = Arc::new(Publisher::connect(&region.config).await.unwrap());
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let publisher = publisher.clone();
        tasks.push(tokio::spawn(async move {
            publisher
                .publish("docs", &upserts(t * 100..t * 100 + 100))
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().len(), 100);
    }
    let records = region
        .read(&region.config.kafka.topic, 400, LONG, |r| !is_heartbeat(r))
        .await;
    let mut keys: Vec<u64> = records
        .iter()
        .map(|r| {
            std::str::from_utf8(r.key.as_deref().unwrap())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, (0..400).collect::<Vec<_>>());
    let waits = metrics.render().lines().find_map(|l| {
        l.strip_prefix("vecsync_producer_backpressure_waits_total ")?
            .parse::<f64>()
            .ok()
    });
    assert!(
        waits.unwrap_or(0.0) > 0.0,
        "the queue filled up and senders waited"
    );
}

#[tokio::test]
async fn invalid_mutations_fail_the_batch_before_anything_is_sent() {
    let Some(region) = TestRegion::start(DIM as u32, "sq8", "").await else {
        return;
    };
    let publisher = Publisher::connect(&region.config).await.unwrap();
    let mut batch = upserts(0..3);
    batch.push(Mutation::Upsert {
        id: PointId::Num(9),
        vector: vec![0.5; DIM + 1],
        payload: None,
    });
    match publisher.publish("docs", &batch).await {
        Err(ProducerError::Invalid {
            index: 3,
            id,
            reason,
        }) => {
            assert_eq!(id, "9");
            assert!(reason.contains("17 dimensions"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let mut nan = vector(DIM, 1);
    nan[4] = f32::NAN;
    let err = publisher
        .publish(
            "docs",
            &[Mutation::Upsert {
                id: PointId::Num(1),
                vector: nan,
                payload: None,
            }],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NaN at dimension 4"), "{err}");
    let err = publisher.publish("nope", &upserts(0..1)).await.unwrap_err();
    assert!(matches!(err, ProducerError::UnknownCollection(ref c) if c == "nope"));
    assert!(!err.is_retriable());
    // The payload key vecsync keeps its bookkeeping under, in an upsert or
    // a patch, is refused with an error of its own.
    let reserved = json!({"_vecsync": {"v": "x"}, "lang": "en"})
        .as_object()
        .cloned()
        .unwrap();
    let mut batch = upserts(0..2);
    batch.push(Mutation::Upsert {
        id: PointId::Num(5),
        vector: vector(DIM, 5),
        payload: Some(reserved.clone()),
    });
    let base = publisher.publish("docs", &upserts(7..8)).await.unwrap();
    let patch = [Mutation::PatchPayload {
        id: PointId::Num(7),
        base_version: base[0].clone(),
        payload: reserved,
    }];
    for (batch, at, point) in [(&batch[..], 2, "5"), (&patch[..], 0, "7")] {
        match publisher.publish("docs", batch).await {
            Err(ProducerError::ReservedKey { index, id, key }) => {
                assert_eq!((index, id.as_str(), key), (at, point, "_vecsync"));
            }
            other => panic!("{other:?}"),
        }
    }
    // Nothing of the refused batches is on the topic: the base of the patch
    // and the next publish are its only records.
    publisher.publish("docs", &upserts(42..43)).await.unwrap();
    let topic = &region.config.kafka.topic;
    let records = region
        .read(topic, 3, Duration::from_secs(3), |r| !is_heartbeat(r))
        .await;
    // (in partitions of their own, so in no order between them).
    let mut keys: Vec<_> = records.iter().map(|r| r.key.as_deref()).collect();
    keys.sort();
    assert_eq!(keys, [Some(&b"42"[..]), Some(&b"7"[..])]);
}

#[tokio::test]
async fn a_broker_that_goes_away_fails_sends_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::Sqlite(dir.path().join("broker.db"));
    let extra = "[producer]\nmessage_timeout_ms = 2000";
    let Some(mut region) = TestRegion::start_with(storage, DIM as u32, "sq8", extra).await else {
        return;
    };
    let publisher = Publisher::connect(&region.config).await.unwrap();
    let sent = publisher.publish("docs", &upserts(0..20)).await.unwrap();
    region.broker.stop();
    let err = publisher
        .publish("docs", &upserts(100..110))
        .await
        .unwrap_err();
    match &err {
        ProducerError::Delivery { failed, total, .. } => {
            assert_eq!((*failed, *total), (10, 10), "{err}");
        }
        other => panic!("expected a delivery failure, got {other:?}"),
    }
    assert!(err.is_retriable());
    // Everything reported as sent is on the broker once it is back.
    region.broker.restart().unwrap();
    let records = region
        .read(
            &region.config.kafka.topic,
            20,
            Duration::from_secs(60),
            |r| !is_heartbeat(r) && r.key.as_deref().is_some_and(|k| k.len() <= 2),
        )
        .await;
    let events = region.decode(&records).await;
    let mut got: Vec<Hlc> = events.into_iter().map(|e| e.hlc).collect();
    got.sort();
    assert_eq!(got, sent);
}

/// A region whose `docs` collection is `pq`, its codebook written in `dir`.
async fn pq_region(dir: &std::path::Path) -> Option<(TestRegion, PqCodebook)> {
    let book = codebook("docs", DIM);
    let path = write_codebook(&book, dir);
    let mut region = TestRegion::start(DIM as u32, "sq8", "").await?;
    let docs = region.config.collections.get_mut("docs").unwrap();
    docs.encoding = Encoding::Pq;
    docs.codebook_file = Some(path);
    Some((region, book))
}

#[tokio::test]
async fn pq_collections_publish_their_codebook_first() {
    let dir = tempfile::tempdir().unwrap();
    let Some((region, book)) = pq_region(dir.path()).await else {
        return;
    };
    let publisher = Publisher::connect(&region.config).await.unwrap();
    publisher.publish("docs", &upserts(0..5)).await.unwrap();
    publisher.publish("docs", &upserts(5..10)).await.unwrap();

    let codebook_topic = &region.config.kafka.codebook_topic;
    let books = region
        .read(codebook_topic, 2, Duration::from_secs(3), |_| true)
        .await;
    assert_eq!(books.len(), 1, "published once");
    assert_eq!(books[0].key.as_deref(), Some(&b"docs@1"[..]));
    let registry =
        Arc::new(RegistryClient::new(&region.registry.url(), Duration::from_secs(5)).unwrap());
    let on_topic = Decoder::<PqCodebook>::new(registry)
        .decode(&books[0].value)
        .await
        .unwrap();
    assert_eq!(on_topic, book);
    let records = region
        .read(&region.config.kafka.topic, 10, LONG, |r| !is_heartbeat(r))
        .await;
    for event in region.decode(&records).await {
        let Body::Upsert(u) = event.body else {
            panic!()
        };
        let VectorData::Full(v) = u.vector else {
            panic!()
        };
        assert_eq!(v.codebook_id.as_deref(), Some("docs@1"));
        assert_eq!(v.decode(Some(&on_topic)).unwrap().len(), DIM);
    }
}

/// Each topic the producer writes has its registry subject, as the topic-name
/// strategy expects: a local collection's topics as well as the shared ones.
#[tokio::test]
async fn every_topic_written_has_its_registry_subject_the_local_ones_too() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut region, _)) = pq_region(dir.path()).await else {
        return;
    };
    let docs = region.config.collections.get_mut("docs").unwrap();
    docs.residency = Residency::Local;
    let publisher = Publisher::connect(&region.config).await.unwrap();
    publisher.publish("docs", &upserts(0..3)).await.unwrap();

    let registry = RegistryClient::new(&region.registry.url(), Duration::from_secs(5)).unwrap();
    let subjects = registry.subjects().await.unwrap();
    let k = &region.config.kafka;
    let (local, local_codebooks) = k.local_topics();
    for topic in [&k.topic, &k.codebook_topic, &local, &local_codebooks] {
        assert!(
            subjects.contains(&value_subject(topic)),
            "no subject for {topic}: {subjects:?}"
        );
    }
    // The local topic's records name the schema its subject holds.
    let records = region.read(&local, 3, LONG, |r| !is_heartbeat(r)).await;
    let id = u32::from_be_bytes(records[0].value[1..5].try_into().unwrap());
    let registered = registry
        .register(&value_subject(&local), DeltaEvent::SCHEMA)
        .await
        .unwrap();
    assert_eq!(id, registered);
}

#[tokio::test]
async fn the_rate_limit_holds_senders_back_instead_of_refusing_them() {
    let extra = "[producer]\nrate_limit_events_per_sec = 1\nrate_limit_burst = 2";
    let Some(region) = TestRegion::start(DIM as u32, "sq8", extra).await else {
        return;
    };
    let publisher = Publisher::connect(&region.config).await.unwrap();
    publisher.publish("docs", &upserts(0..2)).await.unwrap();
    // The burst is spent: the next event waits about a second for a token.
    let third = upserts(2..3);
    let next = publisher.publish("docs", &third);
    tokio::pin!(next);
    let early = tokio::time::timeout(Duration::from_millis(400), &mut next).await;
    assert!(
        early.is_err(),
        "the third event went out within the burst's second"
    );
    assert_eq!(
        next.await.unwrap().len(),
        1,
        "and then it is sent, not refused"
    );
}

#[tokio::test]
async fn a_patch_orders_after_its_base_and_a_run_sent_again_keeps_its_versions() {
    let Some(region) = TestRegion::start(DIM as u32, "sq8", "").await else {
        return;
    };
    let publisher = Publisher::connect(&region.config).await.unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let patch = |base_version: Hlc| Mutation::PatchPayload {
        id: PointId::Num(9),
        base_version,
        payload: json!({"lang": "en"}).as_object().unwrap().clone(),
    };
    // The base came from another producer of the region whose clock runs
    // 5 s ahead of this one: the patch is still the newer write.
    let base = Hlc::new(now_ms + 5_000, 7, "us-east").of_producer(1);
    let patched = publisher
        .publish("docs", &[patch(base.clone())])
        .await
        .unwrap();
    assert!(patched[0] > base, "{} after {base}", patched[0]);
    // A base further ahead than the clock may follow is refused.
    let far = Hlc::new(now_ms + 3_600_000, 0, "us-east");
    match publisher.publish("docs", &[patch(far)]).await {
        Err(ProducerError::Invalid {
            index: 0, reason, ..
        }) => {
            assert!(reason.contains("base_version"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    // A recorded run is told its first version and length before anything
    // is sent; the batch's versions follow the first one by one.
    let batch = upserts(0..3);
    let mut recorded = None;
    let mut recorder = |first: &Hlc, events: usize| {
        recorded = Some((first.clone(), events));
        Ok(())
    };
    let versions = publisher
        .submit_run("docs", &batch, Run::Recorded(&mut recorder))
        .await
        .unwrap()
        .acknowledged()
        .await
        .unwrap()
        .versions;
    let (first, events) = recorded.unwrap();
    assert_eq!(events, 3);
    let expected: Vec<Hlc> = (0..3).map(|i| first.nth(i).unwrap()).collect();
    assert_eq!(versions, expected);
    // Sent again, the batch has the same versions, and what follows is newer.
    let again = Run::Again {
        first: first.clone(),
        events,
    };
    let resent = publisher.submit_run("docs", &batch, again).await.unwrap();
    assert_eq!(resent.acknowledged().await.unwrap().versions, versions);
    let next = publisher.publish("docs", &upserts(0..1)).await.unwrap();
    assert!(next[0] > versions[2]);
    // Another batch under a recorded run, or a recorder that fails, sends
    // nothing.
    let again = Run::Again { first, events };
    match publisher.submit_run("docs", &batch[..2], again).await {
        Err(ProducerError::Record(e)) => assert!(e.to_string().contains("2 events"), "{e}"),
        other => panic!("{other:?}"),
    }
    let mut full = |_: &Hlc, _: usize| Err(std::io::Error::other("disk full"));
    match publisher
        .submit_run("docs", &upserts(50..51), Run::Recorded(&mut full))
        .await
    {
        Err(ProducerError::Record(e)) => assert!(e.to_string().contains("disk full"), "{e}"),
        other => panic!("{other:?}"),
    }
    let topic = &region.config.kafka.topic;
    let records = region
        .read(topic, 9, Duration::from_secs(3), |r| !is_heartbeat(r))
        .await;
    let mut keys: Vec<_> = records
        .iter()
        .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, ["0", "0", "0", "1", "1", "2", "2", "9"]);
}
