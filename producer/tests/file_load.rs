//! The file loader against a real broker: JSONL and .npy inputs, bad inputs,
//! and resuming after an interrupted run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tokio::sync::Notify;
use vecsync_devkit::testbed::TestRegion;
use vecsync_producer::Publisher;
use vecsync_producer::file::{FileError, LoadOptions, Summary, load};
use vecsync_schemas::event::{Body, PointId, VectorData};
use vecsync_schemas::npy::{self, Dtype};
use vecsync_schemas::testing::vector;

const DIM: usize = 8;

fn write_jsonl(path: &Path, lines: &[String]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn point_line(id: u64) -> String {
    json!({"id": id, "vector": vector(DIM, id), "payload": {"n": id}}).to_string()
}

fn write_npy(path: &Path, dtype: Dtype, shape: &[u64], data: &[u8]) {
    std::fs::write(path, npy::to_bytes(dtype, shape, data)).unwrap();
}

/// A region, a publisher to it and a folder for the input files.
async fn start() -> Option<(TestRegion, Publisher, tempfile::TempDir)> {
    let region = TestRegion::start(DIM as u32, "f32", "").await?;
    let publisher = Publisher::connect(&region.config).await.unwrap();
    Some((region, publisher, tempfile::tempdir().unwrap()))
}

async fn run(publisher: &Publisher, options: &LoadOptions) -> Result<Summary, FileError> {
    load(publisher, options, std::future::pending(), |_| {}).await
}

#[tokio::test]
async fn jsonl_points_and_deletes_arrive_as_sent() {
    let Some((region, publisher, dir)) = start().await else {
        return;
    };
    let input = dir.path().join("points.jsonl");
    let mut lines: Vec<String> = (0..250).map(point_line).collect();
    lines.insert(100, String::new());
    lines.push(json!({"id": 3, "delete": true}).to_string());
    lines.push(
        json!({"id": "5c56c793-69f3-4fbf-87e6-c4bf54c28c26", "vector": vector(DIM, 1)}).to_string(),
    );
    write_jsonl(&input, &lines);
    let mut options = LoadOptions::new("docs", &input);
    options.batch_size = 40;
    let mut seen = Vec::new();
    let summary = load(&publisher, &options, std::future::pending(), |p| {
        seen.push(p.events)
    })
    .await
    .unwrap();
    assert_eq!(summary.progress.events, 252);
    assert_eq!(
        summary.progress.input_bytes_done,
        std::fs::metadata(&input).unwrap().len()
    );
    assert!(summary.progress.published_bytes > 0);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]) && seen.len() > 3,
        "progress moves: {seen:?}"
    );
    assert!(
        !options.resume_path().exists(),
        "a finished load leaves no resume point"
    );

    let events = region.events(252, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 252);
    for e in &events {
        match &e.body {
            Body::Upsert(u) => {
                let VectorData::Full(v) = &u.vector else {
                    panic!()
                };
                if let PointId::Num(id) = u.id {
                    assert_eq!(v.decode(None).unwrap(), vector(DIM, id));
                    assert_eq!(u.payload.as_ref().unwrap().to_json().unwrap()["n"], id);
                }
            }
            Body::Delete(d) => assert_eq!(d.id, PointId::Num(3)),
            other => panic!("{other:?}"),
        }
    }
    // The delete of 3 comes after its upsert: stamped in file order.
    let at =
        |want: &dyn Fn(&Body) -> bool| events.iter().find(|e| want(&e.body)).unwrap().hlc.clone();
    let upsert3 = at(&|b| matches!(b, Body::Upsert(u) if u.id == PointId::Num(3)));
    let delete3 = at(&|b| matches!(b, Body::Delete(_)));
    assert!(upsert3 < delete3);
}

#[tokio::test]
async fn npy_vectors_take_their_ids_from_a_file_beside_them() {
    let Some((region, publisher, dir)) = start().await else {
        return;
    };
    let rows = 30u64;
    let data: Vec<u8> = (0..rows)
        .flat_map(|i| vector(DIM, i))
        .flat_map(f32::to_le_bytes)
        .collect();
    let input = dir.path().join("vectors.npy");
    write_npy(&input, Dtype::F32, &[rows, DIM as u64], &data);
    let ids: Vec<u8> = (0..rows)
        .flat_map(|i| (1000 + i as i64).to_le_bytes())
        .collect();
    let ids_npy = dir.path().join("ids.npy");
    write_npy(&ids_npy, Dtype::I64, &[rows], &ids);

    let mut options = LoadOptions::new("docs", &input);
    options.ids = Some(ids_npy);
    options.batch_size = 7;
    assert_eq!(
        run(&publisher, &options).await.unwrap().progress.events,
        rows
    );
    let ids_txt = dir.path().join("ids.txt");
    let text: String = (0..rows).map(|i| format!("{}\n", 2000 + i)).collect();
    std::fs::write(&ids_txt, text).unwrap();
    options.ids = Some(ids_txt);
    assert_eq!(
        run(&publisher, &options).await.unwrap().progress.events,
        rows
    );

    let events = region
        .events(2 * rows as usize, Duration::from_secs(20))
        .await;
    assert_eq!(events.len(), 2 * rows as usize);
    for e in events {
        let Body::Upsert(u) = e.body else { panic!() };
        let PointId::Num(id) = u.id else { panic!() };
        let VectorData::Full(v) = &u.vector else {
            panic!()
        };
        assert_eq!(
            v.decode(None).unwrap(),
            vector(DIM, id % 1000),
            "row of id {id}"
        );
    }
}

#[tokio::test]
async fn bad_files_are_reported_with_the_line_and_stop_or_skip_per_the_flag() {
    let Some((region, publisher, dir)) = start().await else {
        return;
    };

    // A truncated .npy is refused before anything is sent.
    let data: Vec<u8> = (0..10)
        .flat_map(|i| vector(DIM, i))
        .flat_map(f32::to_le_bytes)
        .collect();
    let cut = dir.path().join("cut.npy");
    write_npy(&cut, Dtype::F32, &[10, DIM as u64], &data[..data.len() - 5]);
    let mut options = LoadOptions::new("docs", &cut);
    options.id_start = Some(0);
    let err = run(&publisher, &options).await.unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");

    // A wrong dimension on line 5 of 8: stop there by default ...
    let input = dir.path().join("points.jsonl");
    let mut lines: Vec<String> = (0..8).map(point_line).collect();
    lines[4] = json!({"id": 4, "vector": [1.0, 2.0]}).to_string();
    lines[6] = "{\"id\": 6, \"vector\": ".into();
    write_jsonl(&input, &lines);
    let mut options = LoadOptions::new("docs", &input);
    options.batch_size = 3;
    match run(&publisher, &options).await.unwrap_err() {
        FileError::Line { line, reason, .. } => {
            assert_eq!(line, 5);
            assert!(reason.contains("2 dimensions"), "{reason}");
        }
        other => panic!("{other}"),
    }
    // ... or skip it, and the unparseable line 7, when asked, counting both.
    options.skip_invalid = true;
    options.restart = true;
    let summary = run(&publisher, &options).await.unwrap();
    assert_eq!((summary.progress.events, summary.progress.skipped), (6, 2));
    // Nothing from the .npy; lines 1-3 from the stopped run, 6 from the second.
    let events = region.events(10, Duration::from_secs(3)).await;
    assert_eq!(events.len(), 9);
}

#[tokio::test]
async fn a_line_using_the_reserved_payload_key_is_refused_with_its_number_or_skipped() {
    let Some((region, publisher, dir)) = start().await else {
        return;
    };
    let input = dir.path().join("points.jsonl");
    let mut lines: Vec<String> = (0..5).map(point_line).collect();
    lines[3] =
        json!({"id": 3, "vector": vector(DIM, 3), "payload": {"_vecsync": {"v": "x"}}}).to_string();
    write_jsonl(&input, &lines);
    let mut options = LoadOptions::new("docs", &input);
    match run(&publisher, &options).await.unwrap_err() {
        FileError::Line { line, reason, .. } => {
            assert_eq!(line, 4);
            assert!(reason.contains("\"_vecsync\" is reserved"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert!(region.events(1, Duration::from_secs(2)).await.is_empty());
    options.skip_invalid = true;
    options.restart = true;
    let summary = run(&publisher, &options).await.unwrap();
    assert_eq!((summary.progress.events, summary.progress.skipped), (4, 1));
    let events = region.events(5, Duration::from_secs(3)).await;
    let mut ids: Vec<String> = events
        .iter()
        .filter_map(|e| e.target().map(|(_, id)| id.to_string()))
        .collect();
    ids.sort();
    assert_eq!(ids, ["0", "1", "2", "4"]);
}

#[tokio::test]
async fn an_interrupted_load_resumes_where_the_broker_stopped_acknowledging() {
    let Some((region, publisher, dir)) = start().await else {
        return;
    };
    let input = dir.path().join("points.jsonl");
    let lines: Vec<String> = (0..2000).map(point_line).collect();
    write_jsonl(&input, &lines);
    let mut options = LoadOptions::new("docs", &input);
    options.batch_size = 50;
    options.in_flight = 2;

    let stop = Notify::new();
    let first = load(&publisher, &options, stop.notified(), |p| {
        if p.events >= 300 {
            stop.notify_one();
        }
    })
    .await
    .unwrap();
    assert!(first.interrupted);
    assert!(first.progress.events < 2000, "{first:?}");
    assert!(options.resume_path().exists());

    let second = run(&publisher, &options).await.unwrap();
    assert_eq!(second.resumed_from_events, first.progress.events);
    assert_eq!(second.progress.events, 2000);
    assert!(!options.resume_path().exists());
    // Every line exactly once across both runs.
    let events = region.events(2001, Duration::from_secs(5)).await;
    let mut ids: Vec<u64> = events
        .iter()
        .map(|e| match e.target().unwrap().1 {
            PointId::Num(n) => n,
            PointId::Uuid(_) => panic!(),
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..2000).collect::<Vec<_>>());

    // A resume point for a different file is refused, not silently used.
    options.batch_size = 10;
    let stop = Notify::new();
    let _ = load(&publisher, &options, stop.notified(), |_| stop.notify_one())
        .await
        .unwrap();
    write_jsonl(&input, &lines[..100]);
    let err = run(&publisher, &options).await.unwrap_err();
    assert!(err.to_string().contains("--restart"), "{err}");
}
