//! A worker warns at start when a source topic deletes records sooner than
//! the tombstone horizon. The check reads the topic's `retention.ms` from a
//! real Apache Kafka broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vecsync_consumer::worker::short_retention;
use vecsync_devkit::broker::unique_name;
use vecsync_devkit::kafka::Kafka;
use vecsync_kafka::Cluster;

const WEEK_MS: u64 = 7 * 24 * 3600 * 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_kept_for_less_than_the_tombstone_horizon_is_warned_about() {
    let Some(kafka) = Kafka::start() else {
        return;
    };
    let cluster = Cluster::plain(&kafka.brokers());
    let (short, default, forever) = (
        unique_name("short"),
        unique_name("default"),
        unique_name("forever"),
    );
    kafka
        .create_topic_with(&short, 1, &[("retention.ms", "3600000")])
        .unwrap();
    kafka.create_topic(&default, 1).unwrap();
    kafka
        .create_topic_with(&forever, 1, &[("retention.ms", "-1")])
        .unwrap();

    assert_eq!(cluster.retention_ms(&short).await.unwrap(), Some(3_600_000));
    assert_eq!(cluster.retention_ms(&default).await.unwrap(), Some(WEEK_MS));
    assert_eq!(cluster.retention_ms(&forever).await.unwrap(), None);

    let warning = short_retention(&cluster, &short, WEEK_MS)
        .await
        .unwrap()
        .expect("an hour is shorter than a week");
    for part in [
        short.as_str(),
        "3600000 ms",
        "consumer.tombstone_horizon_ms",
    ] {
        assert!(warning.contains(part), "{part:?} not in {warning}");
    }
    // An hour's retention covers an hour's horizon; a week covers a week.
    assert_eq!(
        short_retention(&cluster, &short, 3_600_000).await.unwrap(),
        None
    );
    assert_eq!(
        short_retention(&cluster, &default, WEEK_MS).await.unwrap(),
        None
    );
    assert_eq!(
        short_retention(&cluster, &forever, u64::MAX).await.unwrap(),
        None
    );
    // A topic that is not there is an error, not silence.
    assert!(
        short_retention(&cluster, &unique_name("missing"), WEEK_MS)
            .await
            .is_err()
    );
}
