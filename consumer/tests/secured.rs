//! Against an Apache Kafka broker whose clients' listener takes only
//! SASL_SSL (SCRAM-SHA-512 over TLS, its certificate from a CA of its own):
//! the producer, a worker and the lag exporter connect through
//! `[kafka.security]`, and a wrong password or an untrusted CA stops each
//! of them with an error naming the cluster and the cause, instead of
//! retrying forever.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};
use vecsync_consumer::lag::{self, Exporter, Plan};
use vecsync_consumer::store::Store;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_consumer::worker::{self, WorkerError};
use vecsync_devkit::testbed::TestRegion;
use vecsync_producer::{Mutation, ProducerError, Publisher};
use vecsync_schemas::config::{Distance, RegionConfig, SourceConfig};
use vecsync_schemas::event::PointId;
use vecsync_schemas::testing::vector;

const DIM: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_over_sasl_ssl_and_refused_credentials_stop_it() {
    let Some(mut region) = TestRegion::start_kafka_secured(DIM as u32, "f32", "").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    region.config.store.path = dir.path().join("store");
    let config = region.config.clone();

    let publisher = Publisher::connect(&config).await.unwrap();
    let batch: Vec<Mutation> = (0..50)
        .map(|i| Mutation::Upsert {
            id: PointId::Num(i),
            vector: vector(DIM, i),
            payload: None,
        })
        .collect();
    publisher.publish("docs", &batch).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(EdgeStore::open(&config.store.path).unwrap());
    let running = worker::spawn(config.clone(), store.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.count("docs").unwrap_or(0) < 50 {
        assert!(Instant::now() < deadline, "never applied over SASL_SSL");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await.unwrap();
    drop(publisher);
    // The lag exporter reads the cluster through the same layer.
    let plan = Plan::new(&config).unwrap();
    let mut exporter = Exporter::new(plan, Duration::from_secs(5), 1000).unwrap();
    let text = tokio::task::spawn_blocking(move || exporter.scan().render())
        .await
        .unwrap();
    let up = format!("vecsync_lag_cluster_up{{cluster=\"{}\"}} 1", config.region);
    assert!(text.contains(&up), "{text}");

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
        region: "eu-west".into(),
        brokers: Some(config.kafka.brokers.clone()),
        topic: "eu-west.vecsync.deltas".into(),
        codebook_topic: "eu-west.vecsync.codebooks".into(),
        security: refused.kafka.security.clone(),
        options: Default::default(),
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
