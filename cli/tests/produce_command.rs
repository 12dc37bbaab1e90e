//! `vecsync produce` as a user runs it, against a real broker: a bad config
//! names its field, `serve` answers and stops cleanly on SIGTERM, `file`
//! loads and prints its summary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vecsync_devkit::broker::free_port;
use vecsync_devkit::testbed::TestRegion;
use vecsync_schemas::config::RegionConfig;

fn vecsync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vecsync"))
}

fn write_config(dir: &Path, config: &RegionConfig) -> std::path::PathBuf {
    let path = dir.join("region.toml");
    std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
    path
}

#[test]
fn a_bad_config_names_every_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/local/us-east.toml"),
    )
    .unwrap()
    .replace("partitions = 3", "partitions = 0")
    .replace("dimension = 384", "dimension = 0");
    std::fs::write(&path, text).unwrap();
    let out = vecsync()
        .args(["produce", "serve", "--config"])
        .arg(&path)
        .env("VECSYNC__REGISTRY__URL", "ftp://registry")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for field in [
        "kafka.partitions",
        "registry.url",
        "collections.docs.dimension",
    ] {
        assert!(stderr.contains(field), "{field} not named in:\n{stderr}");
    }
}

#[tokio::test]
async fn serve_answers_and_stops_cleanly_and_file_loads() {
    let Some(mut region) = TestRegion::start(4, "sq8", "").await else {
        return;
    };
    let port = free_port().unwrap();
    region.config.ingest.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &region.config);

    let server = vecsync()
        .args(["produce", "serve", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ingest API did not become ready"
        );
        // Poll interval of a wait that ends as soon as the server is ready.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/collections/docs/points"))
        .json(&json!({"points": [{"id": 1, "vector": [0.1, 0.2, 0.3, 0.4]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        Command::new("kill")
            .arg(server.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let out = tokio::task::spawn_blocking(move || server.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let input = dir.path().join("points.jsonl");
    let lines: String = (0..3)
        .map(|i| format!("{}\n", json!({"id": i, "vector": [1.0, 0.0, 0.0, i]})))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let mut load = vecsync();
    load.args(["produce", "file", "--collection", "docs", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(&input);
    // Off the runtime's thread: the registry serves from this runtime.
    let out = tokio::task::spawn_blocking(move || load.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("loaded 3 events from"), "{stdout}");
}
