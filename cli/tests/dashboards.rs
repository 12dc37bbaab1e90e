//! The dashboards and alerts of `dashboards/` against real parts: a real
//! Prometheus, loaded with the checked-in scrape config and rules, scrapes
//! `vecsync produce serve`, `vecsync consume` and `vecsync lag` of two
//! regions on two tansu brokers while they replicate, eu-west reading
//! us-east through a MirrorMaker 2 stand-in. Every query of every panel
//! returns data; stopping eu-west's worker raises its watermark age and
//! consumer lag, restarting it lowers them; a stopped cluster shows as
//! unreachable. The alert rules pass their promtool unit tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use vecsync_devkit::broker::{Tansu, free_port, skip_without, unique_name, which};
use vecsync_devkit::mirror::{Mirror, MirrorSpec};
use vecsync_devkit::prometheus::Prometheus;
use vecsync_devkit::registry::DevRegistry;

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

#[test]
fn alert_rules_pass_their_unit_tests_and_the_config_checks() {
    let Some(promtool) = which("promtool") else {
        skip_without("promtool is not installed (apt-get install prometheus)");
        return;
    };
    for args in [
        vec!["test", "rules", "alerts.test.yml"],
        vec!["check", "config", "prometheus.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(dashboards())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A `vecsync` process, killed when dropped; its output goes to a file.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(args: &[&str], config: &Path, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vecsync"))
            .args(args)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info,librdkafka=off,rdkafka=off")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// SIGTERM, and wait for a clean exit.
    fn stop(&mut self) {
        Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "{status}:\n{log}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Ports {
    ingest: u16,
    consumer: u16,
    lag: u16,
}

impl Ports {
    fn new() -> Self {
        Self {
            ingest: free_port().unwrap(),
            consumer: free_port().unwrap(),
            lag: free_port().unwrap(),
        }
    }
}

async fn wait_ready(url: String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = match reqwest::get(&url).await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{url} never became ready: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every query of every panel of a dashboard, with the panel's title.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = panels.pop() {
        panels.extend(p["panels"].as_array().into_iter().flatten());
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap().to_owned();
            out.push((title, t["expr"].as_str().unwrap().to_owned()));
        }
    }
    out
}

async fn query(prometheus: &str, expr: &str) -> Vec<Value> {
    let encoded: String = expr
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let answer: Value = reqwest::get(format!("{prometheus}/api/v1/query?query={encoded}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], "success", "{expr}: {answer}");
    answer["data"]["result"].as_array().unwrap().clone()
}

/// The largest value of `expr`'s answer, `None` when it has none.
async fn max_of(prometheus: &str, expr: &str) -> Option<f64> {
    query(prometheus, expr)
        .await
        .iter()
        .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
        .reduce(f64::max)
}

async fn wait_until(prometheus: &str, what: &str, expr: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let value = max_of(prometheus, expr).await;
        if let Some(v) = value
            && ok(v)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "never {what}: {expr} = {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_has_data_and_lag_follows_a_stopped_worker_and_a_lost_cluster() {
    let (Some(mut east), Some(west)) = (Tansu::start(), Tansu::start()) else {
        return;
    };
    if which("prometheus").is_none() {
        skip_without("prometheus is not installed (apt-get install prometheus)");
        return;
    }
    let registry = DevRegistry::in_memory().spawn("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique_name("vecsync.deltas");
    let codebooks = format!("{topic}.codebooks");
    for broker in [&east, &west] {
        broker.create_topic(&topic, 3).unwrap();
        broker.create_topic(&codebooks, 1).unwrap();
    }
    east.create_topic("heartbeats", 1).unwrap();
    west.create_topic(&format!("us-east.{topic}"), 3).unwrap();
    west.create_topic(&format!("us-east.{codebooks}"), 1)
        .unwrap();
    west.create_topic("us-east.heartbeats", 1).unwrap();
    let _mirror = Mirror::start(MirrorSpec {
        alias: "us-east".into(),
        target_alias: "eu-west".into(),
        source_brokers: east.brokers(),
        target_brokers: west.brokers(),
        topics: vec![topic.clone(), codebooks.clone()],
        heartbeat_interval: Duration::from_millis(500),
    })
    .unwrap();

    // us-east reads eu-west's cluster directly; eu-west reads us-east's
    // mirror on its own cluster, and watches the MirrorMaker flow.
    let (east_ports, west_ports) = (Ports::new(), Ports::new());
    let region_config = |region: &str, brokers: &str, ports: &Ports, rest: &str| {
        let text = format!(
            r#"
region = "{region}"
[kafka]
brokers = "{brokers}"
topic = "{topic}"
codebook_topic = "{codebooks}"
fetch_wait_max_ms = 5
[registry]
url = "{registry}"
[producer]
heartbeat_interval_ms = 500
[ingest]
listen = "127.0.0.1:{ingest}"
[consumer]
listen = "127.0.0.1:{consumer}"
dead_letter_topic = "{topic}.dead"
[store]
path = "{store}"
[lag]
listen = "127.0.0.1:{lag}"
interval_ms = 1000
timeout_ms = 2000
{rest}
[collections.docs]
dimension = 8
distance = "dot"
encoding = "sq8"
"#,
            registry = registry.url(),
            ingest = ports.ingest,
            consumer = ports.consumer,
            lag = ports.lag,
            store = dir.path().join(region).display(),
        );
        let path = dir.path().join(format!("{region}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let east_config = region_config(
        "us-east",
        &east.brokers(),
        &east_ports,
        &format!(
            "[[consumer.sources]]\nregion = \"eu-west\"\nbrokers = \"{}\"\ntopic = \"{topic}\"",
            west.brokers()
        ),
    );
    // eu-west's read of us-east has a cap far above this test's traffic:
    // the read cap's panel shows the series a capped source starts at zero.
    let west_config = region_config(
        "eu-west",
        &west.brokers(),
        &west_ports,
        &format!(
            "[[lag.mirrors]]\nalias = \"us-east\"\nbrokers = \"{}\"\n\
             [[consumer.sources]]\nregion = \"us-east\"\ntopic = \"us-east.{topic}\"\n\
             codebook_topic = \"us-east.{codebooks}\"\n\
             max_read_bytes_per_sec = 100000000",
            east.brokers()
        ),
    );
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let _east_producer = Process::start(&["produce", "serve"], &east_config, log("p-east"));
    let _west_producer = Process::start(&["produce", "serve"], &west_config, log("p-west"));
    let _east_worker = Process::start(&["consume"], &east_config, log("c-east"));
    let mut west_worker = Process::start(&["consume"], &west_config, log("c-west"));
    let _east_lag = Process::start(&["lag"], &east_config, log("l-east"));
    let _west_lag = Process::start(&["lag"], &west_config, log("l-west"));
    for port in [
        east_ports.ingest,
        west_ports.ingest,
        east_ports.consumer,
        west_ports.consumer,
        east_ports.lag,
        west_ports.lag,
    ] {
        wait_ready(format!("http://127.0.0.1:{port}/readyz")).await;
    }

    // The checked-in scrape config and rules, with the targets of this run.
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let mut scrape = std::fs::read_to_string(dashboards().join("prometheus.yml"))
        .unwrap()
        .replace("5s", "1s");
    for (service, port) in [
        ("producer-us-east:8080", east_ports.ingest),
        ("producer-eu-west:8080", west_ports.ingest),
        ("consumer-us-east:8090", east_ports.consumer),
        ("consumer-eu-west:8090", west_ports.consumer),
        ("lag-us-east:9095", east_ports.lag),
        ("lag-eu-west:9095", west_ports.lag),
    ] {
        assert!(scrape.contains(service), "{service} not in prometheus.yml");
        scrape = scrape.replace(service, &format!("127.0.0.1:{port}"));
    }
    std::fs::write(prom_dir.join("prometheus.yml"), scrape).unwrap();
    std::fs::copy(dashboards().join("alerts.yml"), prom_dir.join("alerts.yml")).unwrap();
    let prometheus = Prometheus::start(&prom_dir.join("prometheus.yml"), &prom_dir).unwrap();
    let prom = prometheus.url();

    // Both regions write while Prometheus scrapes. Every write must be
    // accepted; the first refusal ends the writer with its reason.
    let writer = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let post = async |url: &str, body: Value| -> Result<(), String> {
            let answer = client
                .post(url)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let status = answer.status();
            if !status.is_success() {
                let text = answer.text().await.unwrap_or_default();
                return Err(format!("{url}: {status} {text}"));
            }
            Ok(())
        };
        for round in 0u64.. {
            for (n, port) in [east_ports.ingest, west_ports.ingest]
                .into_iter()
                .enumerate()
            {
                let points: Vec<Value> = (0..20)
                    .map(|i| {
                        let id = round * 100 + n as u64 * 50 + i;
                        json!({"id": id, "vector": [1.0, 0.5, 0.25, id as f64, 0.0, 0.1, 0.2, 0.3]})
                    })
                    .collect();
                let url = format!("http://127.0.0.1:{port}/v1/collections/docs/points");
                post(&url, json!({"points": points})).await?;
                let deleted = json!({"points": [round * 100 + n as u64 * 50]});
                post(&format!("{url}/delete"), deleted).await?;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok::<(), String>(())
    });

    // Every panel's every query returns data.
    let mut pending: Vec<(String, String, String)> = Vec::new();
    for file in ["vecsync-overview.json", "vecsync-region.json"] {
        let text = std::fs::read_to_string(dashboards().join("grafana").join(file)).unwrap();
        let dashboard: Value = serde_json::from_str(&text).unwrap();
        for (title, expr) in panel_queries(&dashboard) {
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$region", "eu-west");
            pending.push((file.to_owned(), title, expr));
        }
    }
    assert!(pending.len() > 30, "{pending:?}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (file, title, expr) in pending {
            if query(&prom, &expr).await.is_empty() {
                still.push((file, title, expr));
            }
        }
        pending = still;
        assert!(
            Instant::now() < deadline || pending.is_empty(),
            "panels without data after 120 s (Prometheus log: {}):\n{pending:#?}",
            prometheus.log_path().display()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Stopping eu-west's worker: its watermark age and consumer lag rise.
    let age = r#"time() - max by (origin, region) (last_over_time(vecsync_applied_watermark_timestamp_seconds{origin="us-east",region="eu-west"}[15m]))"#;
    let lag = r#"max(vecsync_consumer_lag_seconds{region="eu-west",group="vecsync-eu-west"})"#;
    let records = r#"sum(vecsync_consumer_lag_records{region="eu-west",group="vecsync-eu-west"})"#;
    let young = wait_until(&prom, "a young watermark", age, |v| v < 3.0).await;
    west_worker.stop();
    wait_until(&prom, "an aging watermark", age, |v| v > young + 8.0).await;
    wait_until(&prom, "consumer lag in seconds", lag, |v| v > 5.0).await;
    let behind = wait_until(&prom, "consumer lag in records", records, |v| v > 50.0).await;

    // Restarted, it catches up: both come back down.
    let _west_worker = Process::start(&["consume"], &west_config, log("c-west-2"));
    wait_until(&prom, "a young watermark again", age, |v| v < 3.0).await;
    wait_until(&prom, "consumer lag seconds back down", lag, |v| v < 2.0).await;
    wait_until(&prom, "consumer lag records back down", records, |v| {
        v < behind / 2.0
    })
    .await;

    // A stopped cluster: both regions' exporters report it unreachable.
    if writer.is_finished() {
        panic!("a write was refused: {:?}", writer.await.unwrap());
    }
    writer.abort();
    east.stop();
    let down = r#"max(vecsync_lag_cluster_up{cluster="us-east"}) == 0"#;
    wait_until(&prom, "us-east unreachable", down, |v| v == 0.0).await;
    let regions = query(&prom, r#"vecsync_lag_cluster_up{cluster="us-east"} == 0"#).await;
    assert_eq!(regions.len(), 2, "both exporters see it: {regions:?}");
    let up = r#"vecsync_lag_cluster_up{cluster="eu-west"}"#;
    assert!(max_of(&prom, up).await == Some(1.0));
    let said = std::fs::read_to_string(log("l-west")).unwrap();
    assert!(
        said.lines()
            .any(|l| l.contains("cluster unreachable") && l.contains("us-east")),
        "no log line for the lost cluster:\n{said}"
    );
}
