//! The HTTP ingest API, for ingestion jobs in any language.
//!
//! | Method and path | Body | Answer |
//! |---|---|---|
//! | `POST /v1/collections/{c}/points` | `{"points": [{"id": 7, "vector": [..], "payload": {..}}]}` | `{"versions": [{"id": 7, "version": "1763700000123.0@us-east/9f3c2a71d04e8b65"}]}` |
//! | `POST /v1/collections/{c}/points/delete` | `{"points": [7, "5c56c793-…"]}` | the same |
//! | `POST /v1/collections/{c}/points/payload` | `{"points": [{"id": 7, "base_version": "…", "payload": {..}}]}` | the same |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | | |
//! | `GET /openapi.json` | | this API's OpenAPI document ([`OPENAPI`]) |
//!
//! A request is answered only when the broker has acknowledged all of its
//! events; the version of each point is its HLC timestamp, which a payload
//! patch names as `base_version`. Errors are JSON, `{"error": "..."}`, with
//! 400 (not JSON of the right shape), 401 (no or an unknown bearer token),
//! 403 (the token may not write the collection), 404 (unknown
//! collection), 413 (too large), 422 (a point is invalid: the message names
//! its index and id) and 503 (broker or registry unavailable: retry).

use crate::error::ProducerError;
use crate::metrics::IngestRequest;
use crate::publisher::Publisher;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use vecsync_schemas::config::{IngestConfig, IngestToken, SecretError};
use vecsync_schemas::mutation::{BodyError, IngestRoute};

/// The bearer tokens a request may carry, each with what it may write;
/// none at all for an open API.
struct Tokens(Vec<(IngestToken, String)>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|t| &t.0)).finish()
    }
}

impl Tokens {
    /// `ingest.bearer_token` (every collection) and `[[ingest.tokens]]`,
    /// their secrets read now.
    fn from_config(config: &IngestConfig) -> Result<Self, SecretError> {
        let mut tokens: Vec<_> = config
            .bearer_token
            .iter()
            .map(|t| {
                let every = IngestToken {
                    name: "bearer_token".into(),
                    token_env: None,
                    token_file: None,
                    collections: vec!["*".into()],
                };
                (every, t.clone())
            })
            .collect();
        for (n, t) in config.tokens.iter().enumerate() {
            tokens.push((t.clone(), t.token(&format!("ingest.tokens[{n}]"))?));
        }
        Ok(Self(tokens))
    }
}

#[derive(Debug)]
struct AppState {
    publisher: Arc<Publisher>,
    tokens: Tokens,
    max_points: usize,
    max_body_bytes: usize,
    metrics: PrometheusHandle,
}

type Shared = Arc<AppState>;

/// The API's OpenAPI document, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// How long `/readyz` waits for the broker, so a probe gets an answer in time.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The API's routes over `publisher`. Fails when a token's secret cannot
/// be read, naming its field.
pub fn router(
    publisher: Arc<Publisher>,
    config: &IngestConfig,
    metrics: PrometheusHandle,
) -> Result<Router, SecretError> {
    let state = Arc::new(AppState {
        publisher,
        tokens: Tokens::from_config(config)?,
        max_points: config.max_points_per_request,
        max_body_bytes: config.max_body_bytes,
        metrics,
    });
    Ok(Router::new()
        .route("/v1/collections/{collection}/points", post(upsert))
        .route("/v1/collections/{collection}/points/delete", post(delete))
        .route("/v1/collections/{collection}/points/payload", post(patch))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .route("/openapi.json", vecsync_serve::openapi(OPENAPI))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state))
}

/// Serves the API on `config.listen`, over TLS with `[ingest.tls]`, until
/// `shutdown` resolves, then lets requests in flight finish.
pub async fn serve(
    publisher: Arc<Publisher>,
    config: &IngestConfig,
    metrics: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(publisher, config, metrics)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let tls = vecsync_serve::Tls::of(config.tls.as_ref(), "ingest.tls")?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, tls = tls.is_some(), "ingest API listening");
    vecsync_serve::serve(listener, tls, router, shutdown).await
}

/// An error answer.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ProducerError> for ApiError {
    fn from(e: ProducerError) -> Self {
        let status = match &e {
            ProducerError::UnknownCollection(_) => StatusCode::NOT_FOUND,
            ProducerError::Invalid { .. } | ProducerError::ReservedKey { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            _ if e.is_retriable() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

async fn upsert(
    State(app): State<Shared>,
    Path(collection): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&app, IngestRoute::Upsert, &collection, &headers, body).await
}

async fn delete(
    State(app): State<Shared>,
    Path(collection): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&app, IngestRoute::Delete, &collection, &headers, body).await
}

async fn patch(
    State(app): State<Shared>,
    Path(collection): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&app, IngestRoute::Patch, &collection, &headers, body).await
}

/// What every mutation route does: authenticate, parse, check the size,
/// publish and answer with the versions.
async fn handle(
    app: &AppState,
    route: IngestRoute,
    collection: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        authorize(app, headers, collection)?;
        if app.publisher.collection(collection).is_none() {
            return Err(ProducerError::UnknownCollection(collection.to_owned()).into());
        }
        let body = body.map_err(|r| {
            let limit = app.max_body_bytes;
            ApiError(
                r.status(),
                format!("{} (ingest.max_body_bytes is {limit})", r.body_text()),
            )
        })?;
        let mutations = route.mutations(&body).map_err(|e| match e {
            BodyError::Malformed(_) => ApiError(StatusCode::BAD_REQUEST, e.to_string()),
            BodyError::Invalid(_) => ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        })?;
        if mutations.is_empty() {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "\"points\" is empty".into(),
            ));
        }
        if mutations.len() > app.max_points {
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{} points in one request; the limit is {} (ingest.max_points_per_request)",
                    mutations.len(),
                    app.max_points
                ),
            ));
        }
        let versions = app.publisher.publish(collection, &mutations).await?;
        let versions: Vec<Value> = mutations
            .iter()
            .zip(versions)
            .map(|(m, v)| json!({ "id": m.id().to_json(), "version": v.to_string() }))
            .collect();
        Ok(axum::Json(json!({ "versions": versions })))
    }
    .await;
    let response = match result {
        Ok(ok) => ok.into_response(),
        Err(e) => e.into_response(),
    };
    IngestRequest {
        route: match route {
            IngestRoute::Upsert => "upsert",
            IngestRoute::Delete => "delete",
            IngestRoute::Patch => "payload",
        },
        status: response.status().as_u16(),
    }
    .emit();
    response
}

/// A write needs a token that may write `collection`, when any is set.
fn authorize(app: &AppState, headers: &HeaderMap, collection: &str) -> Result<(), ApiError> {
    if app.tokens.0.is_empty() {
        return Ok(());
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "this API needs an Authorization: Bearer <token> header".into(),
            )
        })?;
    // Every token is compared, so the time taken tells nothing either.
    let mut matched = None;
    for (scope, token) in &app.tokens.0 {
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            matched = Some(scope);
        }
    }
    let scope = matched.ok_or_else(|| {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "the bearer token is not valid".into(),
        )
    })?;
    if scope.allows(collection) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "token {:?} may not write collection {collection:?}",
                scope.name
            ),
        ))
    }
}

/// Compares without stopping at the first difference, so response times do
/// not reveal how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn ready(State(app): State<Shared>) -> Response {
    match app.publisher.check_ready(READY_TIMEOUT).await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => ApiError(StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

async fn render_metrics(State(app): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}
