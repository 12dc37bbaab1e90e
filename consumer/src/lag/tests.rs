#![allow(clippy::unwrap_used)]

use super::*;

fn config(extra: &str) -> RegionConfig {
    let text = format!(
        r#"
        region = "eu-west"
        [kafka]
        brokers = "127.0.0.1:29092"
        [registry]
        url = "http://127.0.0.1:8081"
        [[consumer.sources]]
        region = "us-east"
        brokers = "127.0.0.1:19092"
        topic = "vecsync.deltas"
        [[consumer.sources]]
        region = "ap-south"
        topic = "ap-south.vecsync.deltas"
        {extra}
        [collections.docs]
        dimension = 4
        distance = "dot"
        "#
    );
    RegionConfig::parse(&text, "test.toml", []).unwrap()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_plan_watches_the_workers_over_every_source_and_each_mirror() {
    let extra = r#"
        [[lag.mirrors]]
        alias = "ap-south"
        brokers = "127.0.0.1:39092"
        [[lag.groups]]
        group = "search-indexer"
        topics = ["vecsync.deltas"]
        "#;
    let plan = Plan::new(&config(extra)).unwrap();
    let own = &plan.clusters["eu-west"];
    assert_eq!(own.cluster.brokers(), "127.0.0.1:29092");
    assert_eq!(
        own.topics,
        set(&[
            "vecsync.deltas",
            "ap-south.vecsync.deltas",
            "ap-south.heartbeats"
        ])
    );
    assert_eq!(
        own.groups["vecsync-eu-west"],
        set(&["vecsync.deltas", "ap-south.vecsync.deltas"])
    );
    assert_eq!(own.groups["search-indexer"], set(&["vecsync.deltas"]));
    let remote = &plan.clusters["us-east"];
    assert_eq!(remote.cluster.brokers(), "127.0.0.1:19092");
    assert_eq!(remote.groups["vecsync-eu-west"], set(&["vecsync.deltas"]));
    assert_eq!(plan.clusters["ap-south"].topics, set(&["vecsync.deltas"]));
    assert_eq!(plan.mirrors[0].mirror_topic, "ap-south.vecsync.deltas");
}

#[test]
fn one_cluster_name_for_two_sets_of_brokers_is_refused() {
    let extra = r#"
        [[lag.mirrors]]
        alias = "us-east"
        brokers = "10.1.1.1:9092"
        "#;
    let err = Plan::new(&config(extra)).unwrap_err();
    assert!(
        err.contains("us-east") && err.contains("10.1.1.1:9092"),
        "{err}"
    );
}

#[test]
fn an_unreachable_cluster_is_down_and_has_no_lag_series() {
    let lag = probe::GroupLag {
        committed: Some(5),
        records: 7,
        seconds: 1.5,
    };
    let report = Report {
        region: "eu-west".into(),
        clusters: [
            ("eu-west".to_owned(), Ok(())),
            ("us-east".to_owned(), Err("metadata: timed out".to_owned())),
        ]
        .into(),
        consumer: [(
            ("eu-west".to_owned(), "g\"1".to_owned(), "t".to_owned(), 0),
            lag,
        )]
        .into(),
        heartbeat_age: [("us-east".to_owned(), 2.5)].into(),
        ..Report::default()
    };
    let text = report.render();
    assert!(
        text.contains("vecsync_lag_cluster_up{cluster=\"eu-west\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("vecsync_lag_cluster_up{cluster=\"us-east\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "vecsync_consumer_lag_records{cluster=\"eu-west\",group=\"g\\\"1\",topic=\"t\",partition=\"0\"} 7\n"
        ),
        "{text}"
    );
    assert!(text.contains("vecsync_consumer_lag_seconds{cluster=\"eu-west\",group=\"g\\\"1\",topic=\"t\",partition=\"0\"} 1.5\n"));
    assert!(!text.contains("cluster=\"us-east\",group"), "{text}");
    assert!(text.contains(
        "vecsync_mirror_heartbeat_age_seconds{source=\"us-east\",target=\"eu-west\"} 2.5\n"
    ));
}

#[test]
fn a_mirror_named_by_the_identity_policy_keeps_the_topic_name_and_reads_its_syncs() {
    let extra = r#"
        [[lag.mirrors]]
        alias = "ap-south"
        brokers = "127.0.0.1:39092"
        target_alias = "eu"
        replication_policy = "identity"
        "#;
    let plan = Plan::new(&config(extra)).unwrap();
    let m = &plan.mirrors[0];
    assert_eq!(m.mirror_topic, "vecsync.deltas");
    assert_eq!(m.heartbeats_topic, "ap-south.heartbeats");
    assert_eq!(m.offset_syncs_topic, "mm2-offset-syncs.eu.internal");
    assert_eq!(
        plan.clusters["ap-south"].offset_syncs,
        set(&["mm2-offset-syncs.eu.internal"])
    );
}

fn sync(upstream: i64, downstream: i64) -> OffsetSync {
    OffsetSync {
        topic: "t".into(),
        partition: 0,
        upstream_offset: upstream,
        downstream_offset: downstream,
    }
}

#[test]
fn the_mirror_head_maps_to_a_source_offset_through_the_newest_sync_below_it() {
    // No sync yet: offsets are taken as equal.
    assert_eq!(mirrored_up_to(&[], 40), 40);
    // The mirror held 30 records of its own before the flow began, so
    // source offset 0 is mirror offset 30: a head of 80 is 50 records in.
    assert_eq!(mirrored_up_to(&[sync(0, 30)], 80), 50);
    // A duplicate made the mirror one record longer after source 100.
    let syncs = [sync(0, 30), sync(100, 131), sync(200, 231)];
    assert_eq!(mirrored_up_to(&syncs, 150), 119);
    assert_eq!(mirrored_up_to(&syncs, 232), 201);
    // A sync at or past the head (read before the head moved) is not used.
    assert_eq!(mirrored_up_to(&syncs, 231), 200);
}

#[test]
fn mirror_lag_in_records_uses_the_syncs_and_seconds_the_heads_timestamps() {
    let head = |offset, ts| probe::Head {
        offset,
        low: 0,
        timestamp_ms: Some(ts),
        last: None,
    };
    let plan = MirrorPlan {
        alias: "us-east".into(),
        topic: "t".into(),
        mirror_topic: "us-east.t".into(),
        heartbeats_topic: "us-east.heartbeats".into(),
        offset_syncs_topic: "mm2-offset-syncs.eu-west.internal".into(),
    };
    let mut source = ClusterScan::default();
    source.heads.insert(("t".into(), 0), head(70, 9_000));
    source.offset_syncs.insert(
        ("mm2-offset-syncs.eu-west.internal".into(), "t".into(), 0),
        vec![sync(0, 30)],
    );
    let mut target = ClusterScan::default();
    target
        .heads
        .insert(("us-east.t".into(), 0), head(80, 7_500));
    let lag = mirror_lag(&plan, &source, &target);
    // The heads differ by -10; 20 source records are not mirrored.
    assert_eq!(lag[0].records, 20);
    assert_eq!(lag[0].seconds, Some(1.5));
}
