//! No secret reaches a log line. The producer (the ingest API), a worker
//! and the lag exporter run as `vecsync` processes at the debug log level,
//! librdkafka's security debugging on, against an Apache Kafka broker
//! taking SASL_SSL with SCRAM-SHA-512 and a registry asking for basic
//! auth; a write goes through them with a scoped ingest token, and then a
//! worker is refused for a wrong password. Every password and token is
//! looked for in everything the processes wrote.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vecsync_devkit::broker::free_port;
use vecsync_devkit::registry::{Access, DevRegistry};
use vecsync_devkit::testbed::TestRegion;
use vecsync_schemas::config::{Distance, IngestToken, RegionConfig};

const DIM: usize = 8;
const REGISTRY_SECRET: &str = "registry-secret-83c1f0";
const TOKEN: &str = "ingest-token-4b9e27";
const WRONG: &str = "wrong-password-d61a3e";

/// `vecsync <args> --config <config>` at the debug level, everything it
/// writes going to `log`.
fn run(args: &[&str], config: &Path, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_vecsync"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "debug")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn write(dir: &Path, name: &str, config: &RegionConfig) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
    path
}

async fn until_ready(url: &str, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if reqwest::get(url).await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "{url}: the process exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{url} never ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_token_reaches_a_log_line() {
    let Some(mut region) = TestRegion::start_kafka_secured(DIM as u32, "f32", "").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, secret: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, secret).unwrap();
        path
    };
    region.registry = DevRegistry::in_memory()
        .spawn_with(
            "127.0.0.1:0",
            Access {
                tls: None,
                basic: Some(("vecsync".into(), REGISTRY_SECRET.into())),
            },
        )
        .await
        .unwrap();
    let c = &mut region.config;
    c.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    c.store.path = dir.path().join("store");
    c.registry.url = region.registry.url();
    c.registry.username = Some("vecsync".into());
    c.registry.password_file = Some(file("registry.password", REGISTRY_SECRET));
    c.ingest.tokens = vec![IngestToken {
        name: "loader".into(),
        token_env: None,
        token_file: Some(file("ingest.token", TOKEN)),
        collections: vec!["docs".into()],
    }];
    c.kafka.options.insert("debug".into(), "security".into());
    let ports = [(); 3].map(|_| free_port().unwrap());
    c.ingest.listen = ([127, 0, 0, 1], ports[0]).into();
    c.consumer.listen = ([127, 0, 0, 1], ports[1]).into();
    c.lag.listen = ([127, 0, 0, 1], ports[2]).into();
    let config = region.config.clone();
    let kafka_password =
        std::fs::read_to_string(config.kafka.security.password_file.as_ref().unwrap()).unwrap();
    let path = write(dir.path(), "region.toml", &config);

    let logs =
        ["produce", "consume", "lag", "refused"].map(|n| dir.path().join(format!("{n}.log")));
    let mut producer = run(&["produce", "serve"], &path, &logs[0]);
    let mut worker = run(&["consume"], &path, &logs[1]);
    let mut lag = run(&["lag"], &path, &logs[2]);
    for (port, child, log) in [
        (ports[0], &mut producer, &logs[0]),
        (ports[1], &mut worker, &logs[1]),
        (ports[2], &mut lag, &logs[2]),
    ] {
        until_ready(&format!("http://127.0.0.1:{port}/readyz"), child, log).await;
    }

    // A write with the token, replayed by the worker.
    let client = reqwest::Client::new();
    let answer: Value = client
        .post(format!(
            "http://127.0.0.1:{}/v1/collections/docs/points",
            ports[0]
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"points": [{"id": 1, "vector": vec![0.5; DIM]}]}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let version = answer["versions"][0]["version"].as_str().unwrap();
    let fresh: Value = reqwest::get(format!(
        "http://127.0.0.1:{}/v1/freshness?after={version}&wait_ms=30000",
        ports[1]
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(fresh["fresh"], true, "{fresh}");
    for child in [&mut producer, &mut worker, &mut lag] {
        child.kill().unwrap();
        child.wait().unwrap();
    }

    // A worker with a wrong password stops, saying why without it.
    let mut refused = config.clone();
    refused.kafka.security.password_file = Some(file("wrong.password", WRONG));
    let path = write(dir.path(), "refused.toml", &refused);
    let status = run(&["consume"], &path, &logs[3]).wait().unwrap();
    assert!(!status.success());
    let said = std::fs::read_to_string(&logs[3]).unwrap();
    assert!(said.contains("uthentication"), "{said}");

    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        // The logs are there to be searched: debug lines were written.
        assert!(text.contains("DEBUG"), "{}: no debug lines", log.display());
        for secret in [kafka_password.trim(), REGISTRY_SECRET, TOKEN, WRONG] {
            assert!(
                !text.contains(secret),
                "{} holds a secret:\n{}",
                log.display(),
                text.lines()
                    .filter(|l| l.contains(secret))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}
