//! `vecsync loadtest`, short: the report has latencies for every region
//! pair, every region handled every event each region produced, and
//! search in the remote region keeps its recall per encoding; across WAN
//! links, a cut shows in the timeline and is caught up after.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::process::Command;

#[test]
fn a_short_load_test_reports_every_pair_and_loses_nothing() {
    // eu-west's worker stops for a second mid-load and catches up.
    let (json, report, stderr) = load_test(
        "regions = 3\ndimension = 16\nconflict_share = 0.3\npause_at_s = 1\npause_for_s = 1\n\
         ceiling_events = 3000\n",
        &["--duration", "3", "--rate", "150", "--recall"],
    );
    assert!(stderr.contains("produced"), "a progress line: {stderr}");
    assert_eq!(json["scenario"]["regions"], 3);
    assert_eq!(json["converged"], true);
    assert_eq!(json["digests_equal"], true);
    // Open loop: 150 events/s for 3 s is 450 events per region, whatever
    // the system did.
    let produced = json["produced"].as_object().unwrap();
    assert_eq!(produced.len(), 3);
    assert!(produced.values().all(|n| n == 450), "{produced:?}");
    let pairs = json["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 9);
    for p in pairs {
        // A restarted worker may handle some events again; none is missing.
        assert!(p["handled"].as_u64().unwrap() >= 450, "{p}");
        assert_eq!(p["missing"], 0, "{p}");
        if p["region"] != "eu-west" {
            assert_eq!(p["duplicates"], 0, "{p}");
        }
        if p["origin"] != p["region"] {
            let l = &p["latency_ms"];
            assert!(l["count"].as_u64().unwrap() > 0, "{p}");
            assert!(
                l["p50"].as_f64().unwrap() <= l["p99"].as_f64().unwrap(),
                "{p}"
            );
        }
    }
    assert!(json["bytes_per_event"].as_f64().unwrap() > 16.0);
    let catch_up = &json["catch_up"];
    assert_eq!(catch_up["region"], "eu-west", "{json}");
    assert!(catch_up["backlog"].as_u64().unwrap() > 0, "{catch_up}");
    assert!(
        catch_up["events_per_s"].as_f64().unwrap() > 0.0,
        "{catch_up}"
    );
    // Search in the remote region: exact with f32, sq8 within 1% of it at
    // about a quarter of the bytes, every encoding smaller than f32.
    let recall = json["recall"].as_array().unwrap();
    let row = |e: &str| recall.iter().find(|r| r["encoding"] == e).unwrap();
    let f32_bytes = row("f32")["bytes_per_event"].as_f64().unwrap();
    assert_eq!(row("f32")["recall_at_10"], 1.0, "{recall:?}");
    assert!(
        row("sq8")["recall_at_10"].as_f64().unwrap() >= 0.99,
        "{recall:?}"
    );
    for r in recall.iter().filter(|r| r["encoding"] != "f32") {
        assert!(r["bytes_per_event"].as_f64().unwrap() < f32_bytes, "{r}");
    }
    // The stores' own ceiling, three at once, against what they applied.
    let ceiling = &json["ceiling"];
    assert_eq!(ceiling["stores"], 3, "{json}");
    assert_eq!(ceiling["events_per_store"], 3000, "{json}");
    assert!(ceiling["applied_per_s"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["applied_per_s"].as_f64().unwrap() > json["replicated_per_s"].as_f64().unwrap());
    // The process's memory by what backs it: every region's store maps
    // files of its own, and the parts add up.
    let memory = &json["memory"];
    let stores = memory["stores_mb"].as_array().unwrap();
    assert_eq!(stores.len(), 3, "{memory}");
    assert!(
        stores.iter().all(|s| s[1].as_f64().unwrap() > 0.0),
        "{memory}"
    );
    let parts: f64 = ["anonymous_mb", "other_files_mb"]
        .iter()
        .map(|k| memory[k].as_f64().unwrap())
        .chain(stores.iter().map(|s| s[1].as_f64().unwrap()))
        .sum();
    assert!(
        (parts - memory["total_mb"].as_f64().unwrap()).abs() < 0.01,
        "{memory}"
    );
    // How the machine's cores spent the run: all of them (this process
    // may be let use fewer), and shares that add up to the whole.
    let cores = &json["cores"];
    let usable = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(cores["cores"].as_u64().unwrap() >= usable, "{json}");
    let shares = [
        "user_pct",
        "kernel_pct",
        "iowait_pct",
        "steal_pct",
        "idle_pct",
    ]
    .map(|k| cores[k].as_f64().unwrap());
    assert!((shares.iter().sum::<f64>() - 100.0).abs() < 1e-6, "{cores}");
    assert!(shares[0] > 0.0, "{cores}");
    let markdown = std::fs::read_to_string(report.path().join("report.md")).unwrap();
    assert!(markdown.contains("| us-east → eu-west |"), "{markdown}");
    assert!(
        markdown.contains("| the machine's ") && markdown.contains("taken by the host (steal)"),
        "{markdown}"
    );
    assert!(
        markdown.contains("the 3 stores apply on their own"),
        "{markdown}"
    );
    assert!(json["timeline"].as_array().unwrap().len() >= 3, "{json}");
    for chart in ["latency.png", "throughput.png", "encodings.png"] {
        assert_png(&report.path().join(chart));
    }
}

#[test]
fn a_warm_up_is_applied_first_and_left_out_of_the_report() {
    let scenario = "dimension = 16\nwarmup_s = 2\nceiling_events = 0\n";
    let (json, report, stderr) = load_test(scenario, &["--duration", "2", "--rate", "100"]);
    assert!(stderr.contains("warming up"), "{stderr}");
    assert_eq!(json["converged"], true);
    // Only the measured load counts: 100 events/s for 2 s a region, each
    // handled once in each region, and no more lags than that.
    let produced = json["produced"].as_object().unwrap();
    assert!(produced.values().all(|n| n == 200), "{produced:?}");
    for p in json["pairs"].as_array().unwrap() {
        assert_eq!(p["handled"], 200, "{p}");
        if p["origin"] != p["region"] {
            let count = p["latency_ms"]["count"].as_u64().unwrap();
            assert!((1..=200).contains(&count), "{p}");
        }
    }
    let markdown = std::fs::read_to_string(report.path().join("report.md")).unwrap();
    assert!(markdown.contains("after a warm-up of 2 s"), "{markdown}");

    // The naive pipeline has none, and says so rather than compare unlike.
    let out = load_test_in(report.path(), scenario, &["--naive"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("warmup_s"),
        "{stderr}"
    );
}

/// Runs `vecsync loadtest` on the scenario with the flags, requires it to
/// succeed, and returns its JSON report, the report's directory (kept until
/// the test ends) and its stderr.
fn load_test(scenario: &str, flags: &[&str]) -> (Value, tempfile::TempDir, String) {
    let (dir, stderr) = run_load_test(scenario, flags);
    let json = std::fs::read_to_string(dir.path().join("report.json")).unwrap();
    (serde_json::from_str(&json).unwrap(), dir, stderr)
}

/// Runs `vecsync loadtest`, requires it to succeed, and returns the report
/// directory and stderr.
fn run_load_test(scenario: &str, flags: &[&str]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = load_test_in(dir.path(), scenario, flags);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (dir, stderr)
}

/// Runs `vecsync loadtest` with the flags on the scenario, written into
/// `dir`, which also takes the report.
fn load_test_in(dir: &std::path::Path, scenario: &str, flags: &[&str]) -> std::process::Output {
    let config = dir.join("scenario.toml");
    std::fs::write(&config, scenario).unwrap();
    Command::new(env!("CARGO_BIN_EXE_vecsync"))
        .arg("loadtest")
        .args(flags)
        .arg("--config")
        .arg(&config)
        .arg("--report")
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn the_naive_pipeline_runs_the_same_load_for_comparison() {
    let (dir, _) = run_load_test(
        "dimension = 16\n",
        &["--naive", "--duration", "2", "--rate", "100"],
    );
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("naive.json")).unwrap())
            .unwrap();
    // Two regions, 200 points each, every one written into the other.
    assert_eq!(json["produced"], 200, "{json}");
    assert_eq!(json["replicated"], 400, "{json}");
    assert_eq!(json["complete"], true, "{json}");
    assert!(
        json["latency_ms"]["count"].as_u64().unwrap() >= 400,
        "{json}"
    );
    // JSON floats: far more than the 16 × 4 bytes of the vector itself.
    assert!(json["bytes_per_event"].as_f64().unwrap() > 100.0, "{json}");
    let markdown = std::fs::read_to_string(dir.path().join("naive.md")).unwrap();
    assert!(markdown.contains("one message and one store write per point"));
}

/// A PNG file with a picture in it.
fn assert_png(path: &std::path::Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    assert!(width >= 800, "{} is {width} px wide", path.display());
}

#[test]
fn a_cut_between_regions_shows_in_the_timeline_and_is_caught_up() {
    if vecsync_devkit::broker::tansu_or_skip().is_none() {
        return;
    }
    a_cut_shows_and_is_caught_up("broker = \"tansu\"\nrate = 200\n", "copier");
}

#[test]
fn on_apache_kafka_mirrormaker_2_carries_the_load_across_a_cut() {
    if vecsync_devkit::kafka::kafka_libs_or_skip().is_none() {
        return;
    }
    // Four JVMs share the cores with the test build: a lighter load.
    let json = a_cut_shows_and_is_caught_up(
        "broker = \"kafka\"\nrate = 100\nheartbeat_interval_ms = 50\n",
        "MirrorMaker 2",
    );
    // The regions stood on Kafka brokers with MirrorMaker 2 into each.
    let processes: Vec<&str> = json["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "Kafka broker, us-east",
        "Kafka broker, eu-west",
        "MirrorMaker 2, into us-east",
        "MirrorMaker 2, into eu-west",
    ] {
        assert!(processes.contains(&name), "{processes:?}");
    }
}

/// Two regions set up by the scenario lines `setup`, across 20 ms links
/// cut from second 2 to 5: nothing crosses during the cut, the
/// watermarks age with it, and every event arrives after it. `carrier` is
/// how the report names what carries the flows. Returns the JSON report.
fn a_cut_shows_and_is_caught_up(setup: &str, carrier: &str) -> Value {
    let (json, report, _) = load_test(
        &format!(
            "{setup}dimension = 16\nduration_s = 8\nceiling_events = 0\n\
             link_delay_ms = 20\ncut_at_s = 2\ncut_for_s = 3\n"
        ),
        &[],
    );
    let markdown = std::fs::read_to_string(report.path().join("report.md")).unwrap();
    assert!(markdown.contains(carrier), "{markdown}");
    for p in json["pairs"].as_array().unwrap() {
        assert_eq!(p["missing"], 0, "{p}");
    }
    assert_eq!(json["faults"][0]["what"], "links cut", "{json}");
    let catch_up = &json["catch_up"];
    assert_eq!(catch_up["fault"], "links cut", "{json}");
    assert!(catch_up["backlog"].as_u64().unwrap() > 0, "{catch_up}");

    let timeline = json["timeline"].as_array().unwrap();
    let second = |t: u64| timeline.iter().find(|s| s["t_s"] == t).unwrap();
    let worst_age = |t: u64| {
        second(t)["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["watermark_age_ms"].as_f64().unwrap())
            .fold(0.0, f64::max)
    };
    // Seconds 4 and 5 lie wholly inside the cut: nothing crosses, and the
    // watermarks age with the clock. Where the watermark stood when the cut
    // began depends on how far behind the carrier ran then (MirrorMaker 2
    // on busy cores: most of a second), so the age is measured against the
    // cut's own length: at its end nothing newer than its start has arrived.
    for t in [4, 5] {
        assert_eq!(second(t)["replicated"], 0, "{}", second(t));
    }
    let ages: Vec<f64> = (3..=5).map(worst_age).collect();
    assert!(
        ages.windows(2).all(|w| w[1] > w[0]) && ages[2] >= 2_500.0,
        "watermark ages in seconds 3 to 5 of a cut from 2 to 5: {ages:?}"
    );
    // After the catch-up, they are fresh again.
    let last = timeline.last().unwrap()["t_s"].as_u64().unwrap();
    assert!(worst_age(last) < 2_000.0, "{}", second(last));
    assert_png(&report.path().join("latency.png"));
    json
}
