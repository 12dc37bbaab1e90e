//! The worker's HTTP API, served on `consumer.listen`: `GET /healthz`,
//! `GET /readyz`, `GET /metrics`, `GET /openapi.json` (its OpenAPI
//! document, [`OPENAPI`]), and
//! `GET /v1/freshness`, the bounded-staleness contract of DESIGN.md §3.
//!
//! - no parameters: every origin's applied watermark and its age;
//! - `max_staleness_ms=N`: answers at once when every origin asked about is
//!   at most N ms behind, otherwise waits for catch-up up to `wait_ms`
//!   (default 5,000, at most 60,000) and then answers, `"fresh": false` if
//!   it is still behind;
//! - `origins=a,b`: only those origins (an origin with no watermark yet is
//!   listed under `unknown` and is not fresh);
//! - `after=V1,V2`: versions as writes returned them
//!   (`1795298965179.0@us-east`); fresh once each is applied, waiting up
//!   to `wait_ms` as above: read-your-writes across regions.
//!
//! [`store_routes`] adds what needs the store: `GET /v1/snapshot`, a
//! snapshot of the store ([`crate::snapshot`]) streamed as it is read.

use crate::freshness::{Ask, Freshness, Watermarks};
use crate::ready::Readiness;
use crate::snapshot;
use crate::store::Store;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use vecsync_schemas::config::RegionConfig;
use vecsync_schemas::hlc::{SystemClock, WallClock};

/// Default and longest wait for catch-up.
const DEFAULT_WAIT_MS: u64 = 5_000;
const MAX_WAIT_MS: u64 = 60_000;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FreshnessQuery {
    max_staleness_ms: Option<u64>,
    wait_ms: Option<u64>,
    origins: Option<String>,
    after: Option<String>,
}

/// The worker API's OpenAPI document, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi/worker.json");

/// The routes of the worker's API: `/v1/freshness`, `/readyz` (200
/// `ready`, or 503 with a line per reason it is not), `/healthz`,
/// `/metrics` (what `metrics` renders) and `/openapi.json`.
pub fn router(
    watermarks: Watermarks,
    readiness: Readiness,
    metrics: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> Router {
    Router::new()
        .route("/v1/freshness", get(freshness))
        .with_state(watermarks)
        .route("/readyz", get(move || ready(readiness.clone())))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(move || std::future::ready(metrics())))
        .route("/openapi.json", vecsync_serve::openapi(OPENAPI))
}

async fn ready(readiness: Readiness) -> (StatusCode, String) {
    match readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", reasons.join("\n")),
        ),
    }
}

async fn freshness(
    State(watermarks): State<Watermarks>,
    query: Result<Query<FreshnessQuery>, QueryRejection>,
) -> Result<Json<Freshness>, (StatusCode, String)> {
    let Query(q) = query.map_err(|e| (StatusCode::BAD_REQUEST, e.body_text()))?;
    let wait_ms = match (q.max_staleness_ms, &q.after) {
        (None, None) => 0,
        _ => q.wait_ms.unwrap_or(DEFAULT_WAIT_MS),
    };
    if wait_ms > MAX_WAIT_MS {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("wait_ms: at most {MAX_WAIT_MS}, got {wait_ms}"),
        ));
    }
    let list = |v: &Option<String>| -> Vec<String> {
        v.iter()
            .flat_map(|o| o.split(','))
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let after = list(&q.after)
        .iter()
        .map(|v| v.parse())
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("after: {e}")))?;
    let ask = Ask {
        origins: list(&q.origins),
        max_staleness_ms: q.max_staleness_ms,
        after,
    };
    let answer = watermarks
        .freshness(&ask, Duration::from_millis(wait_ms), || {
            SystemClock.now_ms()
        })
        .await;
    Ok(Json(answer))
}

/// What the routes that read the store need: the store, the region's
/// config and the worker's watermarks.
#[derive(Debug, Clone)]
pub struct StoreAccess {
    pub store: Arc<dyn Store>,
    pub config: Arc<RegionConfig>,
    pub watermarks: Watermarks,
}

/// The routes that read the store: `GET /v1/snapshot`.
pub fn store_routes(access: StoreAccess) -> Router {
    Router::new()
        .route("/v1/snapshot", get(snapshot))
        .with_state(access)
}

/// Bytes of snapshot sent at a time.
const SNAPSHOT_CHUNK: usize = 256 << 10;

/// Streams a snapshot of the store. Its header (watermarks first) is made
/// before the store is read; a failure part way ends the body early, and
/// the missing last line tells the reader.
async fn snapshot(State(access): State<StoreAccess>) -> Response {
    let header = snapshot::Header::new(
        &access.config,
        SystemClock.now_ms(),
        &access.watermarks.current(),
        access.watermarks.committed(),
    );
    let (tx, rx) = mpsc::channel(4);
    let store = access.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = Chunks {
            tx: tx.clone(),
            buf: Vec::with_capacity(SNAPSHOT_CHUNK),
        };
        let started = std::time::Instant::now();
        match snapshot::write(store.as_ref(), &header, &mut out) {
            Ok(points) => tracing::info!(
                points,
                took_ms = started.elapsed().as_millis() as u64,
                "snapshot sent"
            ),
            Err(e) => {
                tracing::warn!("snapshot cut short: {e}");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// A writer that sends what it is given in chunks down a channel.
struct Chunks {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl std::io::Write for Chunks {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SNAPSHOT_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(SNAPSHOT_CHUNK));
        self.tx.blocking_send(Ok(chunk.into())).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader went away")
        })
    }
}
