//! `vecsync inspect` on an embedded store and on a Qdrant server: count,
//! digest and one point, as the library computes them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::process::Command;
use vecsync_consumer::apply::{Change, apply};
use vecsync_consumer::digest::Digest;
use vecsync_consumer::store::Store;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_devkit::qdrant::QdrantEndpoint;
use vecsync_schemas::config::Distance;
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;

fn inspect(store: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vecsync"))
        .args(["inspect", "--collection", "docs", "--store"])
        .arg(store)
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn count_digest_and_get_show_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Digest::new();
    {
        let store = EdgeStore::open(dir.path()).unwrap();
        store.ensure_collection("docs", 2, Distance::Dot).unwrap();
        let mut writes = Vec::new();
        for i in 0..30u64 {
            let change = Change::Upsert {
                vector: vec![i as f32, 1.0],
                payload: Some(json!({"n": i}).as_object().cloned().unwrap()),
            };
            let (record, _) = apply(None, Hlc::new(100 + i, 0, "eu-west"), change);
            let record = record.unwrap();
            expected.add(&PointId::Num(i), &record.current().0);
            writes.push((PointId::Num(i), record));
        }
        let (gone, _) = apply(None, Hlc::new(500, 0, "us-east"), Change::Delete);
        writes.push((PointId::Num(77), gone.unwrap()));
        store.write("docs", &writes).unwrap();
        store.flush().unwrap();
    }
    assert_eq!(inspect(dir.path(), &["count"]).1, "30");
    assert_eq!(inspect(dir.path(), &["digest"]).1, expected.to_string());
    let (ok, got, _) = inspect(dir.path(), &["get", "7"]);
    assert!(ok);
    let got: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(got["version"], "107.0@eu-west");
    assert_eq!(got["vector"], json!([7.0, 1.0]));
    assert_eq!(got["payload"], json!({"n": 7}));
    let (_, got, _) = inspect(dir.path(), &["get", "77"]);
    assert_eq!(
        serde_json::from_str::<Value>(&got).unwrap()["state"],
        "deleted"
    );

    let (ok, _, err) = inspect(dir.path(), &["get", "12345"]);
    assert!(
        !ok && err.contains("point 12345 is not in collection docs"),
        "{err}"
    );
    let (ok, _, err) = inspect(dir.path().join("nowhere"), &["count"]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let (ok, _, err) = inspect(dir.path().join("empty"), &["count"]);
    assert!(!ok && err.contains("no collection \"docs\""), "{err}");
}

#[test]
fn a_qdrant_server_is_inspected_by_its_url_with_its_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Digest::new();
    {
        let store = EdgeStore::open(dir.path()).unwrap();
        store.ensure_collection("docs", 2, Distance::Dot).unwrap();
        let writes: Vec<_> = (0..5u64)
            .map(|i| {
                let change = Change::Upsert {
                    vector: vec![i as f32, 2.0],
                    payload: None,
                };
                let record = apply(None, Hlc::new(10 + i, 0, "us-east"), change)
                    .0
                    .unwrap();
                expected.add(&PointId::Num(i), &record.current().0);
                (PointId::Num(i), record)
            })
            .collect();
        store.write("docs", &writes).unwrap();
        store.flush().unwrap();
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let endpoint = runtime
        .block_on(QdrantEndpoint::start(
            dir.path(),
            "127.0.0.1:0",
            Some("k3y".into()),
        ))
        .unwrap();
    let url = endpoint.url();
    let with_key = |args: &[&str]| {
        let mut all = vec!["--api-key", "k3y"];
        all.extend(args);
        inspect(&url, &all)
    };
    let (ok, count, err) = with_key(&["count"]);
    assert!(ok, "{err}");
    assert_eq!(count, "5");
    assert_eq!(with_key(&["digest"]).1, expected.to_string());
    let got: Value = serde_json::from_str(&with_key(&["get", "3"]).1).unwrap();
    assert_eq!(got["version"], "13.0@us-east");
    assert_eq!(got["vector"], json!([3.0, 2.0]));
    let (ok, _, err) = inspect(&url, &["count"]);
    assert!(!ok && err.contains("refused"), "{err}");
    runtime.block_on(endpoint.stop());
}
