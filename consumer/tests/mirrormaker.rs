//! Two regions on two Apache Kafka clusters with a real MirrorMaker 2
//! between them, both ways, as DESIGN.md §1 draws them: each region's
//! producer writes its own cluster's `vecsync.deltas`, MirrorMaker 2
//! mirrors it to the other cluster as `<alias>.vecsync.deltas`, and each
//! region's worker replays its own topic and the mirror from its own
//! cluster. Writes from both sides converge to equal digests, and a `pq`
//! collection's codebook crosses on the mirrored codebook topic so the
//! remote region can decode its events. A collection with
//! `residency = "local"` is replayed in its own region and never reaches
//! the other cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vecsync_consumer::digest::Digest;
use vecsync_consumer::store::{self, Store};
use vecsync_consumer::worker;
use vecsync_devkit::broker::unique_name;
use vecsync_devkit::kafka::{Kafka, MirrorMaker2, Mm2Cluster, mm2_properties, topic_names};
use vecsync_devkit::registry::DevRegistry;
use vecsync_producer::{Mutation, Publisher};
use vecsync_schemas::config::RegionConfig;
use vecsync_schemas::event::PointId;
use vecsync_schemas::testing::{codebook, vector, write_codebook};

const DIM: usize = 8;

fn upserts(region: u64, n: u64) -> Vec<Mutation> {
    (0..n)
        .map(|i| {
            let id = PointId::Num((i * 7 + region) % 40);
            match i % 10 {
                3 => Mutation::Delete { id },
                _ => Mutation::Upsert {
                    id,
                    vector: vector(DIM, region * 1000 + i),
                    payload: json!({"from": region, "i": i}).as_object().cloned(),
                },
            }
        })
        .collect()
}

/// Waits until `topics` exist on the cluster at `brokers`.
fn wait_topics(brokers: &str, topics: &[String], mm2: &MirrorMaker2) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let names = topic_names(brokers);
        if topics.iter().all(|t| names.contains(t)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "MirrorMaker 2 never created {topics:?} on {brokers} (has {names:?}):\n{}",
            mm2.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

async fn digest(store: &Arc<dyn Store>, collection: &'static str) -> Digest {
    let store = store.clone();
    tokio::task::spawn_blocking(move || Digest::of(store.as_ref(), collection))
        .await
        .unwrap()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_converge_through_mirrormaker_2_both_ways() {
    let (Some(east_kafka), Some(west_kafka)) = (Kafka::start(), Kafka::start()) else {
        return;
    };
    let registry = DevRegistry::in_memory().spawn("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A PQ codebook for east's `pqdocs`, which west can only decode with.
    let book_path = write_codebook(&codebook("pqdocs", DIM), dir.path());

    // The same topic names on both clusters, as in production.
    let topic = unique_name("vecsync.deltas");
    let codebooks = format!("{topic}.codebooks");
    let config = |region: &str, other: &str, brokers: &str| {
        let text = format!(
            r#"
region = "{region}"
[kafka]
brokers = "{brokers}"
topic = "{topic}"
codebook_topic = "{codebooks}"
partitions = 3
[registry]
url = "{registry}"
[producer]
heartbeat_interval_ms = 200
[consumer]
idle_after_ms = 3000
[[consumer.sources]]
region = "{other}"
topic = "{other}.{topic}"
codebook_topic = "{other}.{codebooks}"
[store]
path = "{store}"
[collections.docs]
dimension = {DIM}
distance = "dot"
encoding = "sq8"
[collections.pqdocs]
dimension = {DIM}
distance = "dot"
encoding = "pq"
codebook_file = "{book}"
[collections.private]
dimension = {DIM}
distance = "dot"
residency = "local"
"#,
            registry = registry.url(),
            store = dir.path().join(region).display(),
            book = book_path.display(),
        );
        RegionConfig::parse(&text, region, std::iter::empty()).unwrap()
    };
    let east = config("us-east", "eu-west", &east_kafka.brokers());
    let west = config("eu-west", "us-east", &west_kafka.brokers());

    // Each producer creates its region's topics; MirrorMaker 2 mirrors them.
    let east_pub = Publisher::connect(&east).await.unwrap();
    let west_pub = Publisher::connect(&west).await.unwrap();
    let clusters = [
        Mm2Cluster {
            alias: "us-east".into(),
            brokers: east_kafka.brokers(),
        },
        Mm2Cluster {
            alias: "eu-west".into(),
            brokers: west_kafka.brokers(),
        },
    ];
    let pattern = format!(
        "{}|{}",
        topic.replace('.', "\\."),
        codebooks.replace('.', "\\.")
    );
    let properties = mm2_properties(
        &clusters,
        &[("us-east", "eu-west"), ("eu-west", "us-east")],
        &pattern,
    );
    let Some(mm2) = MirrorMaker2::start(&properties) else {
        return;
    };
    let mirrors = |alias: &str| vec![format!("{alias}.{topic}"), format!("{alias}.{codebooks}")];
    let (east_brokers, west_brokers) = (east_kafka.brokers(), west_kafka.brokers());
    let (m1, m2) = (mirrors("us-east"), mirrors("eu-west"));
    let mm2 = tokio::task::spawn_blocking(move || {
        wait_topics(&west_brokers, &m1, &mm2);
        wait_topics(&east_brokers, &m2, &mm2);
        mm2
    })
    .await
    .unwrap();

    let mut stores = Vec::new();
    let mut workers = Vec::new();
    for config in [east.clone(), west.clone()] {
        let store = store::open(&config.store).unwrap();
        workers.push(worker::spawn(config, store.clone()));
        stores.push(store);
    }
    // Both regions write, concurrently, to overlapping points; east also
    // writes the PQ collection and the one that stays in us-east.
    let (east_m, west_m) = (upserts(1, 300), upserts(2, 300));
    for (batch_e, batch_w) in east_m.chunks(50).zip(west_m.chunks(50)) {
        let (ve, vw, vp, vl) = tokio::join!(
            east_pub.publish("docs", batch_e),
            west_pub.publish("docs", batch_w),
            east_pub.publish("pqdocs", batch_e),
            east_pub.publish("private", batch_e),
        );
        ve.unwrap();
        vw.unwrap();
        vp.unwrap();
        vl.unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (e, w) = (
            digest(&stores[0], "docs").await,
            digest(&stores[1], "docs").await,
        );
        let (ep, wp) = (
            digest(&stores[0], "pqdocs").await,
            digest(&stores[1], "pqdocs").await,
        );
        let local = digest(&stores[0], "private").await;
        if e == w && ep == wp && e.points > 10 && ep.points > 10 && local.points == ep.points {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence: docs {e} / {w}, pqdocs {ep} / {wp}, private {local}\n{}",
            mm2.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for w in workers {
        let stats = w.stop().await.unwrap();
        assert_eq!(stats.dead_letters, 0, "{stats:?}");
    }
    // Still equal once the workers have flushed and stopped.
    assert_eq!(
        digest(&stores[0], "docs").await,
        digest(&stores[1], "docs").await
    );
    assert_eq!(
        digest(&stores[0], "pqdocs").await,
        digest(&stores[1], "pqdocs").await
    );
    // The local collection: replayed in us-east from its local topic, and
    // not one record of it on eu-west's cluster, where the mirrors are.
    assert_eq!(digest(&stores[1], "private").await.points, 0);
    let local = east.kafka.local_topics().0;
    assert_eq!(local, format!("{topic}.local"));
    let west_topics = topic_names(&west_kafka.brokers());
    assert!(
        west_topics.contains(&format!("us-east.{topic}"))
            && !west_topics
                .iter()
                .any(|t| t.starts_with(&format!("us-east.{local}"))),
        "{west_topics:?}"
    );
    assert!(topic_names(&east_kafka.brokers()).contains(&local));
    drop(mm2);
}
