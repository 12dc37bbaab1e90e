//! A development Schema Registry: the subset of Confluent's REST API that
//! Kafka clients and vecsync use, for the demo and tests.
//!
//! **Not for production.** It keeps everything in one process and, at most,
//! one JSON file; production points at Confluent Schema Registry, Karapace,
//! Apicurio (Confluent-compatible API) or Redpanda's registry.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let running = vecsync_devkit::registry::DevRegistry::in_memory().spawn("127.0.0.1:0").await?;
//! println!("registry at {}", running.url());
//! # Ok(()) }
//! ```

mod store;

pub use store::{ApiError, Compatibility, Store, VersionInfo};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The development registry: a [`Store`] behind Confluent's REST API.
#[derive(Debug, Clone)]
pub struct DevRegistry {
    store: Arc<Mutex<Store>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"error_code": self.error_code, "message": self.message});
        respond(status, body.to_string())
    }
}

/// Every answer carries the registry's content type.
fn respond(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

fn ok(body: Value) -> Response {
    respond(StatusCode::OK, body.to_string())
}

type ApiResult = Result<Response, ApiError>;

#[derive(Deserialize)]
struct SchemaRequest {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

/// Reads a request body as JSON, answering Confluent-style errors.
fn json_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(422, 422, format!("Unrecognized request body: {e}")))
}

fn schema_request(body: &Bytes) -> Result<SchemaRequest, ApiError> {
    let req: SchemaRequest = json_body(body)?;
    match req.schema_type.as_deref() {
        None | Some("AVRO") => {}
        Some(other) => {
            return Err(ApiError::new(
                422,
                42201,
                format!(
                    "Invalid schema: schemaType {other} is not supported by the development registry (AVRO only)"
                ),
            ));
        }
    }
    if !req.references.is_empty() {
        return Err(ApiError::new(
            422,
            42201,
            "Invalid schema: schema references are not supported by the development registry",
        ));
    }
    Ok(req)
}

impl DevRegistry {
    pub fn new(store: Store) -> Self {
        Self {
            store: Arc::new(Mutex::new(store)),
        }
    }

    pub fn in_memory() -> Self {
        Self::new(Store::in_memory())
    }

    /// A registry kept in `path`; ids survive restarts.
    pub fn open(path: &std::path::Path) -> Result<Self, String> {
        Store::open(path).map(Self::new)
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // Every mutation persists before returning, so the state is whole.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The REST API's routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(|| async { ok(json!({})) }))
            .route("/subjects", get(list_subjects))
            .route("/subjects/{subject}", post(lookup).delete(delete_subject))
            .route(
                "/subjects/{subject}/versions",
                get(list_versions).post(register),
            )
            .route("/subjects/{subject}/versions/{version}", get(get_version))
            .route(
                "/subjects/{subject}/versions/{version}/schema",
                get(get_version_schema),
            )
            .route("/schemas/ids/{id}", get(get_by_id))
            .route("/schemas/ids/{id}/schema", get(get_raw_by_id))
            .route("/schemas/ids/{id}/subjects", get(subjects_of))
            .route(
                "/compatibility/subjects/{subject}/versions",
                post(check_all),
            )
            .route(
                "/compatibility/subjects/{subject}/versions/{version}",
                post(check_one),
            )
            .route("/config", get(get_global_config).put(put_global_config))
            .route(
                "/config/{subject}",
                get(get_subject_config)
                    .put(put_subject_config)
                    .delete(delete_subject_config),
            )
            .with_state(self)
    }

    /// Serves on `addr` in a background task; stops when the handle drops.
    pub async fn spawn(self, addr: &str) -> std::io::Result<RunningRegistry> {
        self.spawn_with(addr, Access::default()).await
    }

    /// Serves on `addr` with `access`: TLS, basic auth or both.
    pub async fn spawn_with(self, addr: &str, access: Access) -> std::io::Result<RunningRegistry> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let mut router = self.router();
        if let Some((user, password)) = &access.basic {
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            );
            router = router.layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let allowed = request
                        .headers()
                        .get(header::AUTHORIZATION)
                        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
                    async move {
                        if allowed {
                            next.run(request).await
                        } else {
                            let body = json!({"error_code": 401, "message": "Unauthorized"});
                            respond(StatusCode::UNAUTHORIZED, body.to_string())
                        }
                    }
                },
            ));
        }
        let tls = access.tls.is_some();
        let task = tokio::spawn(vecsync_serve::serve(listener, access.tls, router, async {
            let _ = stopped.await;
        }));
        Ok(RunningRegistry {
            addr,
            tls,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// Who may use a served registry, and how they connect.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Serve HTTPS.
    pub tls: Option<vecsync_serve::Tls>,
    /// Require HTTP basic auth with this user and password.
    pub basic: Option<(String, String)>,
}

/// A registry serving in the background.
#[derive(Debug)]
pub struct RunningRegistry {
    addr: SocketAddr,
    tls: bool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningRegistry {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL clients use.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops serving and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningRegistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn list_subjects(State(r): State<DevRegistry>) -> ApiResult {
    Ok(ok(json!(r.lock().subjects())))
}

async fn list_versions(State(r): State<DevRegistry>, Path(subject): Path<String>) -> ApiResult {
    Ok(ok(json!(r.lock().versions(&subject)?)))
}

fn version_json(v: &VersionInfo) -> Value {
    json!({"subject": v.subject, "version": v.version, "id": v.id, "schema": v.schema})
}

async fn get_version(
    State(r): State<DevRegistry>,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    Ok(ok(version_json(&r.lock().version(&subject, &version)?)))
}

async fn get_version_schema(
    State(r): State<DevRegistry>,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let info = r.lock().version(&subject, &version)?;
    Ok(respond(StatusCode::OK, info.schema))
}

fn parse_id(id: &str) -> Result<u32, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("schema id {id:?} is not a number")))
}

async fn get_by_id(State(r): State<DevRegistry>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    Ok(ok(json!({"schema": r.lock().schema_by_id(id)?})))
}

async fn get_raw_by_id(State(r): State<DevRegistry>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    let schema = r.lock().schema_by_id(id)?.to_owned();
    Ok(respond(StatusCode::OK, schema))
}

async fn subjects_of(State(r): State<DevRegistry>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    Ok(ok(json!(r.lock().subjects_of(id)?)))
}

async fn register(
    State(r): State<DevRegistry>,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req = schema_request(&body)?;
    let id = r.lock().register(&subject, &req.schema)?;
    tracing::info!(subject, id, "registered schema");
    Ok(ok(json!({"id": id})))
}

async fn lookup(
    State(r): State<DevRegistry>,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req = schema_request(&body)?;
    Ok(ok(version_json(&r.lock().lookup(&subject, &req.schema)?)))
}

async fn delete_subject(State(r): State<DevRegistry>, Path(subject): Path<String>) -> ApiResult {
    Ok(ok(json!(r.lock().delete_subject(&subject)?)))
}

fn compatibility_answer(reasons: Vec<String>, query: &HashMap<String, String>) -> Response {
    let verbose = query.get("verbose").is_some_and(|v| v == "true");
    if verbose {
        ok(json!({"is_compatible": reasons.is_empty(), "messages": reasons}))
    } else {
        ok(json!({"is_compatible": reasons.is_empty()}))
    }
}

async fn check_one(
    State(r): State<DevRegistry>,
    Path((subject, version)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    let req = schema_request(&body)?;
    let reasons = r.lock().check(&subject, &req.schema, Some(&version))?;
    Ok(compatibility_answer(reasons, &query))
}

async fn check_all(
    State(r): State<DevRegistry>,
    Path(subject): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    let req = schema_request(&body)?;
    let reasons = r.lock().check(&subject, &req.schema, None)?;
    Ok(compatibility_answer(reasons, &query))
}

#[derive(Deserialize)]
struct ConfigRequest {
    compatibility: String,
}

fn parse_level(body: &Bytes) -> Result<Compatibility, ApiError> {
    let req: ConfigRequest = json_body(body)?;
    req.compatibility
        .parse()
        .map_err(|()| ApiError::invalid_compatibility(&req.compatibility))
}

async fn get_global_config(State(r): State<DevRegistry>) -> ApiResult {
    Ok(ok(
        json!({"compatibilityLevel": r.lock().global_compatibility().as_str()}),
    ))
}

async fn put_global_config(State(r): State<DevRegistry>, body: Bytes) -> ApiResult {
    let level = parse_level(&body)?;
    r.lock().set_global_compatibility(level)?;
    Ok(ok(json!({"compatibility": level.as_str()})))
}

async fn get_subject_config(
    State(r): State<DevRegistry>,
    Path(subject): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let store = r.lock();
    let level = match store.subject_compatibility(&subject) {
        Some(level) => level,
        None if query.get("defaultToGlobal").is_some_and(|v| v == "true") => {
            store.global_compatibility()
        }
        None => {
            return Err(ApiError::new(
                404,
                40408,
                format!("Subject '{subject}' does not have subject-level compatibility configured"),
            ));
        }
    };
    Ok(ok(json!({"compatibilityLevel": level.as_str()})))
}

async fn put_subject_config(
    State(r): State<DevRegistry>,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let level = parse_level(&body)?;
    r.lock().set_subject_compatibility(&subject, Some(level))?;
    Ok(ok(json!({"compatibility": level.as_str()})))
}

async fn delete_subject_config(
    State(r): State<DevRegistry>,
    Path(subject): Path<String>,
) -> ApiResult {
    let mut store = r.lock();
    let previous = store
        .subject_compatibility(&subject)
        .ok_or_else(|| ApiError::subject_not_found(&subject))?;
    store.set_subject_compatibility(&subject, None)?;
    Ok(ok(json!({"compatibilityLevel": previous.as_str()})))
}
