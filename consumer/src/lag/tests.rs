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
    assert_eq!(own.brokers, "127.0.0.1:29092");
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
    assert_eq!(remote.brokers, "127.0.0.1:19092");
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
