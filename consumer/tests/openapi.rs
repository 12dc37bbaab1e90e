//! The OpenAPI documents of vecsync's three listeners (the ingest API, the
//! worker's API, the lag exporter) against the routers that serve them;
//! then schemathesis, from each document, throws generated and malformed
//! requests at the ingest API and the freshness API of a running region:
//! no answer may be a 5xx, stray from the document's status codes and
//! content types, or break its response schemas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vecsync_consumer::freshness::Watermarks;
use vecsync_consumer::ready::Readiness;
use vecsync_consumer::store::Store;
use vecsync_consumer::store::edge::EdgeStore;
use vecsync_consumer::{api, lag, worker};
use vecsync_devkit::broker::skip_without;
use vecsync_devkit::openapi;
use vecsync_devkit::testbed::TestRegion;
use vecsync_producer::{Publisher, http, metrics};
use vecsync_schemas::config::Distance;

const TOKEN: &str = "schemathesis-t0ken";

/// Serves `router` on a free port; its base URL.
async fn serve(router: axum::Router) -> String {
    serve_stoppable(router).await.0
}

/// Like [`serve`], with the server's task, to stop it (and drop what its
/// routes hold, such as a store) before the test's directories go.
async fn serve_stoppable(router: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (base, task)
}

/// The worker's routes, the store's included, over `store`.
fn worker_api(
    config: &vecsync_schemas::config::RegionConfig,
    store: Arc<dyn Store>,
    watermarks: Watermarks,
    readiness: Readiness,
) -> axum::Router {
    let access = api::StoreAccess {
        store,
        config: Arc::new(config.clone()),
        watermarks: watermarks.clone(),
    };
    api::router(watermarks, readiness, String::new).merge(api::store_routes(access))
}

async fn stop(task: tokio::task::JoinHandle<()>) {
    task.abort();
    let _ = task.await;
}

/// A region with its ingest API served; the API's base URL.
async fn ingest(region: &TestRegion) -> String {
    let publisher = Arc::new(Publisher::connect(&region.config).await.unwrap());
    let router = http::router(publisher, &region.config.ingest, metrics::prometheus()).unwrap();
    serve(router).await
}

async fn region() -> Option<TestRegion> {
    let extra = format!(
        "[ingest]\nbearer_token = \"{TOKEN}\"\n\
         [producer]\nheartbeat_interval_ms = 100"
    );
    let mut region = TestRegion::start(4, "f32", &extra).await?;
    region.config.collections.get_mut("docs").unwrap().distance = Distance::Dot;
    Some(region)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_serves_the_document_of_its_routes() {
    let Some(region) = region().await else {
        return;
    };
    let docs = [("collection", "docs")];
    let base = ingest(&region).await;
    openapi::check(
        &base,
        http::OPENAPI,
        &[include_str!("../../producer/src/http.rs")],
        &docs,
    )
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EdgeStore::open(dir.path()).unwrap());
    store.ensure_collection("docs", 4, Distance::Dot).unwrap();
    let router = worker_api(&region.config, store, Watermarks::new(), Readiness::new());
    let (base, server) = serve_stoppable(router).await;
    openapi::check(&base, api::OPENAPI, &[include_str!("../src/api.rs")], &docs)
        .await
        .unwrap();
    stop(server).await;

    let config = region.config.clone();
    let exporter = tokio::task::spawn_blocking(move || lag::spawn(&config))
        .await
        .unwrap()
        .unwrap();
    openapi::check(
        &serve(exporter.router()).await,
        lag::OPENAPI,
        &[include_str!("../src/lag/mod.rs")],
        &[],
    )
    .await
    .unwrap();
    tokio::task::spawn_blocking(move || exporter.stop())
        .await
        .unwrap();
}

/// Where `.ci/run` installs schemathesis, or the one on `PATH`.
fn schemathesis() -> Option<std::path::PathBuf> {
    let home = std::env::var_os("HOME").unwrap_or_default();
    let installed = Path::new(&home).join(".cache/vecsync/schemathesis/bin/schemathesis");
    if installed.exists() {
        return Some(installed);
    }
    let on_path = std::process::Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return Some("schemathesis".into());
    }
    skip_without(
        "schemathesis is not installed: python3 -m venv ~/.cache/vecsync/schemathesis && \
         ~/.cache/vecsync/schemathesis/bin/pip install schemathesis",
    );
    None
}

/// Runs schemathesis for 30 s on the operations under `/v1/` of the API
/// at `base`, from the document it serves, with `config`
/// (schemathesis.toml); panics with its report when it finds a failure.
fn fuzz(program: &Path, base: &str, config: &str, dir: &Path) {
    let config_file = dir.join("schemathesis.toml");
    std::fs::write(&config_file, config).unwrap();
    let output = std::process::Command::new(program)
        .current_dir(dir)
        .args(["--config-file".as_ref(), config_file.as_os_str()])
        .args([
            "run",
            "--url",
            base,
            "--include-path-regex",
            "^/v1/",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance",
            "--max-examples",
            "60",
            "--max-time",
            "30",
            "--request-timeout",
            "30",
            "--seed",
            "20261205",
            "--wait-for-schema",
            "10",
        ])
        .arg(format!("{base}/openapi.json"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "schemathesis at {base}:\n{report}");
    // It tested every operation it selected, and selected some.
    let count = |label: &str| -> u32 {
        let after = report.split(label).nth(1).unwrap_or_default().trim_start();
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or(0)
    };
    let (selected, tested) = (count("Selected:"), count("Tested:"));
    assert!(
        selected > 0 && tested == selected,
        "{tested} of {selected} operations tested:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_in_the_ingest_and_freshness_apis() {
    let Some(program) = schemathesis() else {
        return;
    };
    let Some(mut region) = region().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    region.config.store.path = dir.path().join("store");
    // The producer creates the topics the worker then reads.
    let base = ingest(&region).await;
    let store: Arc<dyn Store> = Arc::new(EdgeStore::open(&region.config.store.path).unwrap());
    let running = worker::spawn(region.config.clone(), store.clone());
    let (freshness, server) = serve_stoppable(worker_api(
        &region.config,
        store,
        running.watermarks().clone(),
        running.readiness().clone(),
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while running.readiness().check().is_err() {
        assert!(Instant::now() < deadline, "the worker never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every write goes to the collection the region has, with its token,
    // so that the bodies, not the path, are what is explored.
    let ingest_config = format!(
        "headers = {{ Authorization = \"Bearer {TOKEN}\" }}\n\
         [parameters]\n\"path.collection\" = \"docs\"\n"
    );
    // A request that asks for catch-up waits `wait_ms` for it: kept short,
    // so that the time goes into many requests (its bounds have tests of
    // their own).
    let freshness_config =
        "[parameters]\n\"query.wait_ms\" = \"20\"\n\"path.collection\" = \"docs\"\n";
    let (ingest_dir, freshness_dir) = (dir.path().join("ingest"), dir.path().join("freshness"));
    for d in [&ingest_dir, &freshness_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    tokio::task::spawn_blocking(move || {
        fuzz(&program, &base, &ingest_config, &ingest_dir);
        fuzz(&program, &freshness, freshness_config, &freshness_dir);
    })
    .await
    .unwrap();
    let stats = running.stop().await.unwrap();
    assert_eq!(stats.dead_letters, 0, "{stats:?}");
    stop(server).await;
}
