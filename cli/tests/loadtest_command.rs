//! `vecsync loadtest`, short: the report has latencies for every region
//! pair, every region handled every event each region produced, and
//! search in the remote region keeps its recall per encoding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::process::Command;

#[test]
fn a_short_load_test_reports_every_pair_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("scenario.toml");
    // eu-west's worker stops for a second mid-load and catches up.
    std::fs::write(
        &scenario,
        "regions = 3\ndimension = 16\nconflict_share = 0.3\npause_at_s = 1\npause_for_s = 1\n",
    )
    .unwrap();
    let report = dir.path().join("report");
    let out = Command::new(env!("CARGO_BIN_EXE_vecsync"))
        .args([
            "loadtest",
            "--duration",
            "3",
            "--rate",
            "150",
            "--recall",
            "--config",
        ])
        .arg(&scenario)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("produced"), "a progress line: {stderr}");

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
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
    let markdown = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(markdown.contains("| us-east → eu-west |"), "{markdown}");
}
