//! `vecsync produce` as a user runs it, against a real broker: a bad config
//! names its field, `serve` answers and stops cleanly on SIGTERM, `file`
//! loads and prints its summary, and a `file` load killed mid-way resumes
//! without giving a line a second version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vecsync_devkit::broker::free_port;
use vecsync_devkit::testbed::TestRegion;
use vecsync_schemas::config::RegionConfig;
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;

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
    let stdout = succeeds(file_load(&config, &input)).await;
    assert!(stdout.starts_with("loaded 3 events from"), "{stdout}");
}

/// Runs `command` to its end and returns what it printed, once it has
/// succeeded. Off the runtime's thread: the registry serves from this
/// runtime.
async fn succeeds(mut command: Command) -> String {
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `vecsync produce file` of `input` under `config`.
fn file_load(config: &Path, input: &Path) -> Command {
    let mut load = vecsync();
    load.args(["produce", "file", "--collection", "docs", "--config"])
        .arg(config)
        .arg("--input")
        .arg(input)
        .args(["--batch-size", "100"]);
    load
}

#[tokio::test]
async fn a_file_load_killed_mid_way_and_run_again_gives_every_line_one_version() {
    let Some(mut region) = TestRegion::start(4, "f32", "").await else {
        return;
    };
    // Slow enough that the kill lands with batches in flight.
    region.config.producer.rate_limit_events_per_sec = Some(2_000);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &region.config);
    let input = dir.path().join("points.jsonl");
    const LINES: u64 = 6_000;
    let lines: String = (0..LINES)
        .map(|i| format!("{}\n", json!({"id": i, "vector": [1.0, 0.0, 0.5, i]})))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let resume = dir.path().join("points.jsonl.vecsync-resume");

    let mut first = file_load(&config, &input)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let acknowledged = std::fs::read(&resume)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["events"].as_u64());
        if acknowledged.is_some_and(|n| n >= 1_500) {
            break;
        }
        assert!(first.try_wait().unwrap().is_none(), "the load ended early");
        assert!(Instant::now() < deadline, "the load made no progress");
        // Poll interval of a wait that ends once enough is acknowledged.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();

    let stdout = succeeds(file_load(&config, &input)).await;
    assert!(stdout.contains("resumed after"), "{stdout}");
    assert!(!resume.exists());

    // Lines the first run had sent were sent again, but each with the
    // version it had: every id has exactly one.
    let events = region.events(usize::MAX, Duration::from_secs(5)).await;
    let mut versions: HashMap<u64, HashSet<Hlc>> = HashMap::new();
    for e in &events {
        let (_, PointId::Num(id)) = e.target().unwrap() else {
            panic!("{e:?}")
        };
        versions.entry(id).or_default().insert(e.hlc.clone());
    }
    assert_eq!(versions.len() as u64, LINES);
    let restamped: Vec<_> = versions.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        restamped.is_empty(),
        "{} ids with several versions, such as {:?}",
        restamped.len(),
        &restamped[..restamped.len().min(3)]
    );
    assert!(events.len() as u64 >= LINES);
}
