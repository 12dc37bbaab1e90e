//! The lag exporter against real brokers: consumer lag in records and in
//! seconds from record timestamps on tansu (heads found past tansu's
//! ListOffsets, which stops at the last batch's first record); MirrorMaker
//! 2 lag and heartbeat age from what a real MirrorMaker 2 writes between
//! two Apache Kafka clusters, and an unreachable source.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use vecsync_consumer::lag::{Exporter, Plan, Report};
use vecsync_devkit::broker::{Tansu, unique_name};
use vecsync_devkit::kafka::{Kafka, MirrorMaker2, Mm2Cluster, mm2_properties};
use vecsync_schemas::config::RegionConfig;

fn config(region: &str, brokers: &str, lag: &str) -> RegionConfig {
    let text = format!(
        r#"
        region = "{region}"
        [kafka]
        brokers = "{brokers}"
        topic = "{topic}"
        [registry]
        url = "http://127.0.0.1:1"
        [lag]
        timeout_ms = 2000
        {lag}
        [collections.docs]
        dimension = 4
        distance = "dot"
        "#,
        topic = unique_name("unused")
    );
    RegionConfig::parse(&text, "test", []).unwrap()
}

fn exporter(config: &RegionConfig) -> Exporter {
    Exporter::new(Plan::new(config).unwrap(), Duration::from_secs(2), 1000).unwrap()
}

/// Writes `count` records to `partition` with timestamps `base + i * step`
/// ms, in large batches.
fn produce(brokers: &str, topic: &str, partition: i32, count: i64, base: i64, step: i64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "100")
        .create()
        .unwrap();
    for i in 0..count {
        let value = format!("record {i}");
        let record = BaseRecord::<(), _>::to(topic)
            .partition(partition)
            .payload(&value)
            .timestamp(base + i * step);
        producer.send(record).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn commit(brokers: &str, group: &str, topic: &str, partition: i32, offset: i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

fn lag_of(report: &Report, group: &str, partition: i32) -> (i64, f64) {
    let (_, lag) = report
        .consumer
        .iter()
        .find(|((_, g, _, p), _)| g == group && *p == partition)
        .unwrap_or_else(|| panic!("no lag for {group}/{partition}: {report:?}"));
    (lag.records, lag.seconds)
}

#[test]
fn consumer_lag_counts_records_and_seconds_from_record_timestamps() {
    let Some(broker) = Tansu::start() else {
        return;
    };
    let brokers = broker.brokers();
    let topic = unique_name("deltas");
    broker.create_topic(&topic, 2).unwrap();
    let base = 1_700_000_000_000;
    produce(&brokers, &topic, 0, 500, base, 10);
    produce(&brokers, &topic, 1, 300, base, 20);
    let group = unique_name("indexer");
    commit(&brokers, &group, &topic, 0, 123);
    let lag = format!("[[lag.groups]]\ngroup = \"{group}\"\ntopics = [\"{topic}\"]");
    let config = config("eu-west", &brokers, &lag);
    let mut exporter = exporter(&config);

    let report = exporter.scan();
    assert_eq!(report.clusters["eu-west"], Ok(()));
    // 377 records behind, from the record at 123 to the last at 499.
    assert_eq!(lag_of(&report, &group, 0), (377, 3.76));
    // Nothing committed: the whole partition, first record to last.
    assert_eq!(lag_of(&report, &group, 1), (300, 5.98));

    commit(&brokers, &group, &topic, 0, 499);
    commit(&brokers, &group, &topic, 1, 300);
    let report = exporter.scan();
    assert_eq!(lag_of(&report, &group, 0), (1, 0.0));
    assert_eq!(lag_of(&report, &group, 1), (0, 0.0));
    let text = report.render();
    assert!(text.contains(&format!(
        "vecsync_consumer_lag_records{{cluster=\"eu-west\",group=\"{group}\",topic=\"{topic}\",partition=\"0\"}} 1\n"
    )), "{text}");
}

fn wait_for(exporter: &mut Exporter, what: &str, ok: impl Fn(&Report) -> bool) -> Report {
    // MirrorMaker 2 takes a while to start and to find the topics.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let report = exporter.scan();
        if ok(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "never {what}: {report:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn mirror_records(r: &Report) -> Option<i64> {
    (r.mirrors.len() == 2).then(|| r.mirrors.iter().map(|m| m.records).sum())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn mirror_lag_and_heartbeat_age_follow_mirrormaker_2_and_a_lost_source_shows() {
    let (Some(mut source), Some(target)) = (Kafka::start(), Kafka::start()) else {
        return;
    };
    let topic = unique_name("deltas");
    let mirror_topic = format!("us-east.{topic}");
    source.create_topic(&topic, 2).unwrap();
    // The mirror holds 30 records of its own on partition 0 before the flow
    // starts, so its offsets run 30 ahead of the source's there: the heads'
    // difference says nothing about what is left to mirror.
    target.create_topic(&mirror_topic, 2).unwrap();
    produce(&target.brokers(), &mirror_topic, 0, 30, now(), 1);
    produce(&source.brokers(), &topic, 0, 200, now(), 1);
    produce(&source.brokers(), &topic, 1, 100, now(), 1);
    let clusters = [
        Mm2Cluster {
            alias: "us-east".into(),
            brokers: source.brokers(),
        },
        Mm2Cluster {
            alias: "eu-west".into(),
            brokers: target.brokers(),
        },
    ];
    let properties = mm2_properties(&clusters, &[("us-east", "eu-west")], &topic);
    let Some(mut mm2) = MirrorMaker2::start(&properties) else {
        return;
    };
    let lag = format!(
        "[[lag.mirrors]]\nalias = \"us-east\"\nbrokers = \"{}\"\ntopic = \"{topic}\"",
        source.brokers()
    );
    let config = config("eu-west", &target.brokers(), &lag);
    let mut exporter = exporter(&config);

    let caught_up = wait_for(&mut exporter, "mirrored", |r| {
        mirror_records(r) == Some(0) && r.heartbeat_age.get("us-east").is_some_and(|a| *a < 2.0)
    });
    assert!(
        caught_up.mirrors.iter().all(|m| m.seconds == Some(0.0)),
        "{caught_up:?}\n{}",
        mm2.log()
    );

    // MirrorMaker stops while the source goes on: 50 records behind (the
    // heads' difference would say 20), seconds between the heads, and
    // the mirrored heartbeats age.
    mm2.stop();
    std::thread::sleep(Duration::from_millis(500));
    let start = now();
    produce(&source.brokers(), &topic, 0, 50, start, 40);
    let behind = exporter.scan();
    assert_eq!(mirror_records(&behind), Some(50), "{behind:?}");
    let p0 = behind.mirrors.iter().find(|m| m.partition == 0).unwrap();
    // The mirror's head is the last record copied before the stop, at
    // least 500 ms older than the first new one and 1,960 ms more to the last.
    assert!(p0.seconds.unwrap() >= 1.96 + 0.5, "{behind:?}");
    let age = behind.heartbeat_age["us-east"];
    assert!(age >= 0.5, "{behind:?}");
    std::thread::sleep(Duration::from_millis(1000));
    let later = exporter.scan();
    assert!(later.heartbeat_age["us-east"] >= age + 0.9, "{later:?}");
    let text = later.render();
    let series = format!(
        "vecsync_mirror_lag_records{{source=\"us-east\",target=\"eu-west\",topic=\"{topic}\",partition=\"0\"}} 50\n"
    );
    assert!(text.contains(&series), "{text}");

    mm2.start_again().unwrap();
    wait_for(&mut exporter, "caught up again", |r| {
        mirror_records(r) == Some(0) && r.heartbeat_age["us-east"] < 2.0
    });

    // The source cluster goes away: unreachable, and no mirror lag rather
    // than zero; the mirrored heartbeats, read from the target, keep aging.
    mm2.stop();
    source.kill();
    let lost = exporter.scan();
    assert!(lost.clusters["us-east"].is_err(), "{lost:?}");
    assert_eq!(lost.clusters["eu-west"], Ok(()));
    assert!(lost.mirrors.is_empty(), "{lost:?}");
    let text = lost.render();
    assert!(
        text.contains("vecsync_lag_cluster_up{cluster=\"us-east\"} 0\n"),
        "{text}"
    );
    assert!(!text.contains("vecsync_mirror_lag_records{"), "{text}");
    assert!(
        text.contains(
            "vecsync_mirror_heartbeat_age_seconds{source=\"us-east\",target=\"eu-west\"}"
        )
    );
}
