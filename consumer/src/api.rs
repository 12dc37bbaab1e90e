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
//! [`store_routes`] adds what needs the store:
//!
//! - `GET /v1/snapshot`, a snapshot of the store ([`crate::snapshot`])
//!   streamed as it is read;
//! - `POST /v1/collections/{collection}/points/search`, Qdrant's search
//!   ([`crate::search::SearchBody`]) answered from the region's store once
//!   it is fresh enough: `X-Required-Freshness: 100ms` waits until every
//!   origin is applied to within 100 ms, `X-Required-Version: V1,V2` until
//!   those writes are applied, each up to `wait_ms` (default 5,000). The
//!   answer says `Stale-Result: true` when that did not happen in time, and
//!   gives each origin's applied watermark in `Applied-Watermark`.

use crate::freshness::{Ask, Freshness, Watermarks};
use crate::ready::Readiness;
use crate::search::{ScoredPoint, SearchBody};
use crate::snapshot;
use crate::store::{Search, Store};
use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use vecsync_schemas::config::{Distance, RegionConfig};
use vecsync_schemas::hlc::{Hlc, SystemClock, WallClock};

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

/// A refused request: its status and why, in words.
type Refusal = (StatusCode, String);

fn bad(message: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, message.into())
}

/// How long to wait for catch-up: `given` (by default 5,000 ms, at most
/// 60,000) when something was asked of the freshness, else not at all.
fn wait_ms(asked: bool, given: Option<u64>) -> Result<u64, Refusal> {
    let wait_ms = if asked {
        given.unwrap_or(DEFAULT_WAIT_MS)
    } else {
        0
    };
    if wait_ms > MAX_WAIT_MS {
        return Err(bad(format!(
            "wait_ms: at most {MAX_WAIT_MS}, got {wait_ms}"
        )));
    }
    Ok(wait_ms)
}

async fn freshness(
    State(watermarks): State<Watermarks>,
    query: Result<Query<FreshnessQuery>, QueryRejection>,
) -> Result<Json<Freshness>, Refusal> {
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let asked = q.max_staleness_ms.is_some() || q.after.is_some();
    let wait_ms = wait_ms(asked, q.wait_ms)?;
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
        .map_err(|e| bad(format!("after: {e}")))?;
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

/// The routes that read the store: `GET /v1/snapshot` and `POST
/// /v1/collections/{collection}/points/search`.
pub fn store_routes(access: StoreAccess) -> Router {
    Router::new()
        .route("/v1/snapshot", get(snapshot))
        .route("/v1/collections/{collection}/points/search", post(search))
        .with_state(access)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    wait_ms: Option<u64>,
}

/// What the search headers ask of the store's freshness; `None` when they
/// ask nothing.
fn required(headers: &HeaderMap) -> Result<Option<Ask>, Refusal> {
    let text = |name: &str| -> Result<Option<&str>, Refusal> {
        headers
            .get(name)
            .map(|v| v.to_str().map_err(|_| bad(format!("{name}: not text"))))
            .transpose()
    };
    let max_staleness_ms = text("x-required-freshness")?
        .map(|v| duration_ms(v).map_err(|e| bad(format!("X-Required-Freshness: {e}"))))
        .transpose()?;
    let after = text("x-required-version")?
        .map(|v| {
            v.split(',')
                .map(|one| one.trim().parse::<Hlc>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("X-Required-Version: {e}")))
        })
        .transpose()?
        .unwrap_or_default();
    if max_staleness_ms.is_none() && after.is_empty() {
        return Ok(None);
    }
    Ok(Some(Ask {
        origins: Vec::new(),
        max_staleness_ms,
        after,
    }))
}

/// `100ms`, `2s`, `1.5s` or a number of milliseconds.
fn duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1000.0)
    } else {
        (text, 1.0)
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 && n * scale < 1e15 => Ok((n * scale).round() as u64),
        _ => Err(format!(
            "{text:?} is not a duration such as 100ms, 2s or 250"
        )),
    }
}

/// Searches the store, after waiting for the freshness the headers ask.
async fn search(
    State(access): State<StoreAccess>,
    Path(collection): Path<String>,
    query: Result<Query<SearchQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Json<SearchBody>, JsonRejection>,
) -> Result<Response, Refusal> {
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let Some(config) = access.config.collections.get(&collection) else {
        return Err((
            StatusCode::NOT_FOUND,
            format!(
                "region {} has no collection {collection:?}",
                access.config.region
            ),
        ));
    };
    let Json(body) = body.map_err(|e| match e {
        JsonRejection::MissingJsonContentType(e) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, e.body_text())
        }
        e => bad(e.body_text()),
    })?;
    body.check(config.dimension as usize).map_err(bad)?;
    let ask = required(&headers)?;
    let wait_ms = wait_ms(ask.is_some(), q.wait_ms)?;
    let freshness = access
        .watermarks
        .freshness(
            ask.as_ref().unwrap_or(&Ask::default()),
            Duration::from_millis(wait_ms),
            || SystemClock.now_ms(),
        )
        .await;
    let started = std::time::Instant::now();
    let vector = match config.distance {
        Distance::Cosine => crate::apply::unit(body.vector),
        _ => body.vector,
    };
    let request = Search {
        vector,
        limit: body.limit,
        with_payload: body.with_payload,
        filter: body.filter,
    };
    let store = access.store.clone();
    let hits = tokio::task::spawn_blocking(move || store.search_points(&collection, &request))
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let result: Vec<ScoredPoint> = hits.into_iter().map(ScoredPoint::from).collect();
    let stale = ask.is_some() && !freshness.fresh;
    let marks: Vec<String> = freshness
        .origins
        .iter()
        .map(|o| format!("{}={}", o.origin, o.applied_up_to))
        .collect();
    let mut response = Json(serde_json::json!({
        "result": result,
        "status": "ok",
        "time": started.elapsed().as_secs_f64(),
    }))
    .into_response();
    let headers = response.headers_mut();
    headers.insert(
        "stale-result",
        HeaderValue::from_static(if stale { "true" } else { "false" }),
    );
    if let Ok(v) = HeaderValue::from_str(&marks.join(", ")) {
        headers.insert("applied-watermark", v);
    }
    Ok(response)
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
