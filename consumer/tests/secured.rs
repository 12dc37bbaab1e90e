//! Against an Apache Kafka broker whose clients' listeners take only
//! SASL_SSL (SCRAM-SHA-512 over TLS, its certificate from a CA of its own)
//! and mutual TLS (a client certificate from another CA):
//! the producer, a worker and the lag exporter connect through
//! `[kafka.security]` to both, and a wrong password or an untrusted CA stops each
//! of them with an error naming the cluster and the cause, instead of
//! retrying forever.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};
use vecsync_consumer::lag::{self, Exporter, Plan};
use vecsync_consumer::store::Store;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_consumer::worker::{self, WorkerError};
use vecsync_devkit::registry::{Access, DevRegistry};
use vecsync_devkit::testbed::{Broker, TestRegion};
use vecsync_devkit::tls::TestCerts;
use vecsync_producer::{Mutation, ProducerError, Publisher};
use vecsync_schemas::config::{Distance, RegionConfig, SourceConfig};
use vecsync_schemas::event::PointId;
use vecsync_schemas::testing::vector;

const DIM: usize = 8;

/// A user, operations, topics and group prefixes, for `Kafka::allow`.
type Grant<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_over_sasl_ssl_and_refused_credentials_stop_it() {
    let Some(mut region) = TestRegion::start_kafka_secured(DIM as u32, "f32", "").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    region.config.store.path = dir.path().join("store");
    let config = region.config.clone();

    // The whole pipeline, as one user; then on the mutual-TLS listener.
    replicate(&config, &config).await;
    let secure = region.broker.secure().unwrap().clone();
    let mut mtls = config.clone();
    mtls.kafka.brokers = secure.mtls_brokers();
    mtls.kafka.security = secure.mtls_security();
    mtls.store.path = dir.path().join("mtls-store");
    replicate(&mtls, &mtls).await;
    let mut no_cert = mtls.clone();
    (
        no_cert.kafka.security.cert_file,
        no_cert.kafka.security.key_file,
    ) = (None, None);

    // A wrong password, then a CA the broker's certificate does not come from.
    let wrong_password = dir.path().join("wrong-password");
    std::fs::write(&wrong_password, "not-the-password").unwrap();
    let mut refused = config.clone();
    refused.kafka.security.password_file = Some(wrong_password);
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, OTHER_CA).unwrap();
    let mut untrusted = config.clone();
    untrusted.kafka.security.ca_file = Some(other_ca);
    let secret =
        std::fs::read_to_string(config.kafka.security.password_file.as_ref().unwrap()).unwrap();
    for (case, config, cause) in [
        ("wrong password", &refused, "uthentication"),
        ("untrusted CA", &untrusted, "SSL"),
    ] {
        let err = Publisher::connect(config).await.unwrap_err();
        assert!(!err.is_retriable(), "{case}: {err}");
        assert!(
            matches!(err, ProducerError::Kafka(_) | ProducerError::Fatal(_)),
            "{case}: {err}"
        );
        check_names(case, &err.to_string(), config, cause, &secret);

        let lag = config.clone();
        match tokio::task::spawn_blocking(move || lag::spawn(&lag))
            .await
            .unwrap()
        {
            Err(e) => check_names(case, &e, config, cause, &secret),
            Ok(_) => panic!("{case}: the lag exporter started"),
        }

        let err = stopped_worker(config.clone()).await;
        assert!(
            matches!(&err, WorkerError::Client(e) if !e.is_retriable()),
            "{case}: {err}"
        );
        check_names(case, &err.to_string(), config, cause, &secret);
    }

    // The region's own credentials are right; a source's (another cluster,
    // here the same broker) are not.
    let mut source_refused = config.clone();
    source_refused.consumer.sources = vec![SourceConfig {
        security: refused.kafka.security.clone(),
        ..SourceConfig::new(
            "eu-west",
            Some(config.kafka.brokers.clone()),
            "eu-west.vecsync.deltas",
            "eu-west.vecsync.codebooks",
        )
    }];
    let err = stopped_worker(source_refused).await;
    assert!(
        matches!(&err, WorkerError::Client(e) if !e.is_retriable()),
        "a source's wrong password: {err}"
    );
    check_names(
        "a source's wrong password",
        &err.to_string(),
        &config,
        "uthentication",
        &secret,
    );
}

/// Publishes 50 upserts as `producer`; a worker as `worker` applies them
/// all into its store; the lag exporter, as `worker` too, reads the
/// region's cluster.
async fn replicate(producer: &RegionConfig, worker: &RegionConfig) {
    let publisher = Publisher::connect(producer).await.unwrap();
    let batch: Vec<Mutation> = (0..50)
        .map(|i| Mutation::Upsert {
            id: PointId::Num(i),
            vector: vector(DIM, i),
            payload: None,
        })
        .collect();
    publisher.publish("docs", &batch).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(EdgeStore::open(&worker.store.path).unwrap());
    let running = worker::spawn(worker.clone(), store.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.count("docs").unwrap_or(0) < 50 {
        assert!(
            !running.is_finished() && Instant::now() < deadline,
            "never applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await.unwrap();
    let plan = Plan::new(worker).unwrap();
    let mut exporter = Exporter::new(plan, Duration::from_secs(5), 1000).unwrap();
    let report = tokio::task::spawn_blocking(move || exporter.scan())
        .await
        .unwrap();
    assert_eq!(report.clusters[&worker.region], Ok(()));
}

/// The error names the cluster and the cause, and holds no password.
fn check_names(case: &str, message: &str, config: &RegionConfig, cause: &str, secret: &str) {
    assert!(message.contains(&config.kafka.brokers), "{case}: {message}");
    assert!(message.contains(cause), "{case}: {message}");
    assert!(
        !message.contains(secret),
        "{case}: the password in {message}"
    );
    assert!(!message.contains("not-the-password"), "{case}: {message}");
}

/// Runs a worker that should stop by itself, and returns its error.
async fn stopped_worker(config: RegionConfig) -> WorkerError {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EdgeStore::open(dir.path()).unwrap());
    let running = worker::spawn(config, store);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !running.is_finished() {
        assert!(Instant::now() < deadline, "the worker kept retrying");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await.unwrap_err()
}

/// A self-signed certificate of no broker's.
const OTHER_CA: &str = "-----BEGIN CERTIFICATE-----
MIICyzCCAbOgAwIBAgIIWuZiOYypPbIwDQYJKoZIhvcNAQELBQAwEzERMA8GA1UE
AxMIb3RoZXItY2EwIBcNMjYxMjA0MjE1MTE3WhgPMjEyNjExMTAyMTUxMTdaMBMx
ETAPBgNVBAMTCG90aGVyLWNhMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKC
AQEA52jetod89Y781jjqDQRAz+ng8uGMOjFA6b6GNdod2WZ+dB4uh/2sIyIwOSLY
mkn8nsCmjUfEtWKru9WseJO27/vV0fBKMqsscKNu9tdNwnzXpppywbzY506boRZZ
0rDQckkCUoKlMzkj3tzk1oEHAAgHDkPZMpJljSui/B43R/F2SrILsMooY7HYT0gB
iaX0sjOa7VWPs9Qft25R4F/xsouX49hInARoIWYUqO4qnwEK0nVaD5n5lk8IPFnp
W9Vv3eB2BOa6VUNVebgK/t9kHSCyuK+UAy2cHi66V2DbAfs8o6EgiLtCLoAn4Byr
0t3YXLW4ffaFZ2XCQ/jtRC8V5QIDAQABoyEwHzAdBgNVHQ4EFgQUeGb2wbGyluXr
Esz+RoGqz/kPOT8wDQYJKoZIhvcNAQELBQADggEBAJN4qWesBWPZ+x8lTAH3xtHQ
7VWs4oRT7ycC7ekQ/xG5GXFoOzssY8ao6IA5LHIkvuA+zPOrT3dnyM1u9J3mWyRj
A2xglccDiTsbkX5pZBY0s6nscK6ZEEExFLCjRCk5ocDhJA2EFv1W66Egs2Gz5/vS
crLwrAkHVE4SmGlQ/a739o0LbE/8iGSAylqLez/jIS9FpcT0aJTq2SyoBsgqRmeW
dVyVinS1A4CKIlSRemazNg8yj5Qlg7ikTnAOE+bwMMZ6X6qDdnD+Uu58Mty9bwZQ
jROaV3S4UAHGQ4FoZ77AK4XgWrorSn+7h7USqU0xdvpyR2nrGcu2fPvABMq4zIA=
-----END CERTIFICATE-----
";

/// With KRaft's `StandardAuthorizer`: the producer's user may only write
/// the region's topics, the worker's only read its sources, commit in its
/// group and write the dead-letter topic, and the whole pipeline (produce,
/// replay, lag exporter) runs on those grants alone. A grant missing stops
/// the component with the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_acls_each_component_needs_only_its_grants() {
    let users = ["producer", "worker"];
    let Some(mut region) =
        TestRegion::start_kafka_secured_with(DIM as u32, "f32", "", &users, true).await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let c = topics_made_by_hand(&mut region, dir.path());
    let [topic, books, dead] = region_topics(&c);
    for (t, partitions) in [(topic, 3), (books, 1), (dead, 1)] {
        region.broker.create_topic(t, partitions).unwrap();
    }
    let secure = region.broker.secure().unwrap().clone();
    let as_user = |user: &str| {
        let mut config = c.clone();
        config.kafka.security = secure.security_of(user);
        config
    };
    let (producer, worker) = (as_user("producer"), as_user("worker"));

    // Nothing granted yet: each is refused, naming the topic's refusal.
    let err = Publisher::connect(&producer).await.unwrap_err();
    assert!(!err.is_retriable(), "{err}");
    assert!(err.to_string().contains("uthorization"), "{err}");
    let err = stopped_worker(worker.clone()).await;
    assert!(
        matches!(&err, WorkerError::Client(e) if !e.is_retriable()),
        "{err}"
    );
    assert!(err.to_string().contains("uthorization"), "{err}");

    let Broker::Kafka(kafka) = &region.broker else {
        unreachable!("a secured region runs on Apache Kafka")
    };
    let group = c.group_id();
    let grants: [Grant; 4] = [
        ("producer", &["Write", "Describe"], &[topic, books], &[]),
        ("worker", &["Read", "Describe"], &[topic, books], &[&group]),
        ("worker", &["Write", "Describe"], &[dead], &[]),
        // The producer's user may see the dead-letter topic, not write it.
        ("producer", &["Describe"], &[dead], &[]),
    ];
    tokio::task::block_in_place(|| {
        for (user, operations, topics, groups) in grants {
            kafka.allow(user, operations, topics, groups).unwrap();
        }
    });

    replicate(&producer, &worker).await;

    // The producer's user may not write the dead-letter topic.
    let mut elsewhere = producer.clone();
    elsewhere.kafka.topic = dead.to_owned();
    let err = publish_one(&elsewhere).await;
    assert!(!err.is_retriable(), "{err}");
    assert!(err.to_string().contains("uthorization"), "{err}");
}

/// With `kafka.create_topics = false`, a topic the region needs and
/// nobody made stops the producer (its delta topic) and a worker (its
/// dead-letter topic) at start, naming the cluster and the topic, instead
/// of waiting; once an operator makes them, the pipeline runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_create_topics_off_a_missing_topic_stops_each_component() {
    let Some(mut region) = TestRegion::start_kafka(DIM as u32, "f32", "").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let c = topics_made_by_hand(&mut region, dir.path());
    let [topic, books, dead] = region_topics(&c);
    let names_the_missing = |message: &str, topic: &str| {
        assert!(message.contains(&c.kafka.brokers), "{message}");
        assert!(
            message.contains(&format!("topic {topic} does not exist")),
            "{message}"
        );
        assert!(message.contains("kafka.create_topics"), "{message}");
    };

    let err = publish_one(&c).await;
    assert!(!err.is_retriable(), "{err}");
    names_the_missing(&err.to_string(), topic);
    for (t, partitions) in [(topic, 3), (books, 1)] {
        region.broker.create_topic(t, partitions).unwrap();
    }
    let err = stopped_worker(c.clone()).await;
    assert!(
        matches!(&err, WorkerError::Client(e) if !e.is_retriable()),
        "{err}"
    );
    names_the_missing(&err.to_string(), dead);

    region.broker.create_topic(dead, 1).unwrap();
    replicate(&c, &c).await;
}

/// The region's config with its store under `dir` and
/// `kafka.create_topics = false`, its dead-letter topic named after its
/// delta topic.
fn topics_made_by_hand(region: &mut TestRegion, dir: &std::path::Path) -> RegionConfig {
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    region.config.store.path = dir.join("store");
    region.config.kafka.create_topics = false;
    region.config.consumer.dead_letter_topic = format!("{}.dead", region.config.kafka.topic);
    region.config.clone()
}

/// The delta, codebook and dead-letter topics of a region.
fn region_topics(c: &RegionConfig) -> [&str; 3] {
    [
        &c.kafka.topic,
        &c.kafka.codebook_topic,
        &c.consumer.dead_letter_topic,
    ]
}

/// Connects and publishes one upsert, which must fail: its error.
async fn publish_one(config: &RegionConfig) -> ProducerError {
    let one = [Mutation::Upsert {
        id: PointId::Num(1),
        vector: vector(DIM, 1),
        payload: None,
    }];
    match Publisher::connect(config).await {
        Err(e) => e,
        Ok(p) => p.publish("docs", &one).await.unwrap_err(),
    }
}

/// The producer and a worker reach a registry served over HTTPS from a CA
/// of its own, with basic auth: `[registry]` `ca_file`, `username` and
/// `password_file`. A wrong password or an untrusted CA stops both, naming
/// the registry and the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_over_https_with_basic_auth() {
    let Some(mut region) = TestRegion::start(DIM as u32, "f32", "").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::make(dir.path(), "registry").unwrap();
    let secret = "registry-secret-5d2e91";
    let password_file = dir.path().join("registry.password");
    std::fs::write(&password_file, format!("{secret}\n")).unwrap();
    let access = Access {
        tls: Some(certs.tls().unwrap()),
        basic: Some(("ingest".into(), secret.into())),
    };
    region.registry = DevRegistry::in_memory()
        .spawn_with("127.0.0.1:0", access)
        .await
        .unwrap();
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    region.config.store.path = dir.path().join("store");
    let r = &mut region.config.registry;
    r.url = region.registry.url();
    r.username = Some("ingest".into());
    r.password_file = Some(password_file);
    r.ca_file = Some(certs.ca_file.clone());
    let config = region.config.clone();
    assert!(config.registry.url.starts_with("https://"));

    replicate(&config, &config).await;

    let wrong_password = dir.path().join("wrong-password");
    std::fs::write(&wrong_password, "not-the-password").unwrap();
    let mut refused = config.clone();
    refused.registry.password_file = Some(wrong_password);
    let mut untrusted = config.clone();
    untrusted.registry.ca_file = None;
    for (case, config, cause) in [
        ("wrong password", &refused, "401"),
        ("untrusted CA", &untrusted, "certificate"),
    ] {
        let check = |message: &str| {
            assert!(message.contains(&config.registry.url), "{case}: {message}");
            assert!(message.contains(cause), "{case}: {message}");
            for s in [secret, "not-the-password"] {
                assert!(!message.contains(s), "{case}: a password in {message}");
            }
        };
        let err = Publisher::connect(config).await.unwrap_err();
        assert!(!err.is_retriable(), "{case}: {err}");
        check(&err.to_string());
        let err = stopped_worker(config.clone()).await;
        assert!(matches!(&err, WorkerError::Registry(_)), "{case}: {err}");
        check(&err.to_string());
    }
}
