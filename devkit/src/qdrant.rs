//! A Qdrant gRPC endpoint over the real engine, for tests (DESIGN.md §6).
//!
//! No Qdrant server installs here, so the `qdrant-client` path is tested
//! against this: `qdrant-client`'s own generated server traits, served by
//! tonic, each collection a `qdrant-edge` shard under one directory. It
//! implements what vecsync's server store calls — collections: create,
//! get, list, exists, delete; points: upsert, delete by ids, get, scroll,
//! count, search; health check — with the API key check of a real server.
//! One node cannot shard, replicate or build the index a create request
//! asks for; it reports those settings back in the collection's info, as a
//! server does.
//! Anything else answers `UNIMPLEMENTED`, and so do filters and named
//! vectors. Test support only: not a Qdrant server.

use crate::tls::TestCerts;
use qdrant_client::qdrant::collections_server::{Collections, CollectionsServer};
use qdrant_client::qdrant::points_server::{Points, PointsServer};
use qdrant_client::qdrant::qdrant_server::{Qdrant, QdrantServer};
use qdrant_client::qdrant::{
    self as grpc, CollectionDescription, CollectionExists, CollectionExistsRequest,
    CollectionExistsResponse, CollectionOperationResponse, CountPoints, CountResponse, CountResult,
    CreateCollection, DeleteCollection, DeletePoints, GetCollectionInfoRequest,
    GetCollectionInfoResponse, GetPoints, GetResponse, HealthCheckReply, HealthCheckRequest,
    ListCollectionsRequest, ListCollectionsResponse, PointsOperationResponse, RetrievedPoint,
    ScrollPoints, ScrollResponse, SearchPoints, SearchResponse, UpdateResult, UpdateStatus,
    UpsertPoints,
};
use qdrant_edge::{
    CountRequest, DEFAULT_VECTOR_NAME, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder,
    PointId as EdgePointId, PointInsertOperations, PointOperations, PointStruct, QueryEnum,
    Record as EdgeRecord, ScrollRequest, SearchRequest, UpdateOperation, VectorInternal,
    VectorStorageDatatype, VectorStructInternal, WithPayloadInterface, WithVector,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use tonic::{Request, Response, Status};

/// A running endpoint. Dropping it (or [`QdrantEndpoint::stop`]) stops
/// serving; the collections stay on disk for a restart.
#[derive(Debug)]
pub struct QdrantEndpoint {
    addr: SocketAddr,
    tls: bool,
    engine: Arc<Engine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl QdrantEndpoint {
    /// Serves the collections under `root` (created when missing) on
    /// `addr` (`127.0.0.1:0` for a free port). With `api_key`, calls
    /// without that key are refused as unauthenticated.
    pub async fn start(root: &Path, addr: &str, api_key: Option<String>) -> std::io::Result<Self> {
        Self::start_with(root, addr, api_key, None).await
    }

    /// As [`QdrantEndpoint::start`], over TLS with `tls`'s certificate
    /// and key when given (its URL is then `https://`).
    pub async fn start_with(
        root: &Path,
        addr: &str,
        api_key: Option<String>,
        tls: Option<&TestCerts>,
    ) -> std::io::Result<Self> {
        let engine = Arc::new(Engine::open(root)?);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let check = move |request: Request<()>| -> Result<Request<()>, Status> {
            let Some(expected) = &api_key else {
                return Ok(request);
            };
            match request.metadata().get("api-key").map(|k| k.to_str()) {
                Some(Ok(key)) if key == expected => Ok(request),
                Some(_) => Err(Status::permission_denied("Invalid api-key")),
                None => Err(Status::unauthenticated(
                    "Must provide an API key or an Authorization bearer token",
                )),
            }
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut server = tonic::transport::Server::builder();
        if let Some(certs) = tls {
            let identity = tonic::transport::Identity::from_pem(
                std::fs::read(&certs.cert_file)?,
                std::fs::read(&certs.key_file)?,
            );
            server = server
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .map_err(std::io::Error::other)?;
        }
        let router = server
            .add_service(tonic::service::interceptor::InterceptedService::new(
                CollectionsServer::from_arc(engine.clone()),
                check.clone(),
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                PointsServer::from_arc(engine.clone()),
                check.clone(),
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                QdrantServer::from_arc(engine.clone()),
                check,
            ));
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let served = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!("qdrant test endpoint stopped: {e}");
            }
        });
        Ok(Self {
            addr,
            tls: tls.is_some(),
            engine,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL `qdrant-client` connects to.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops serving, closes the collections (so another endpoint can
    /// open them) and waits until the port is free.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.engine.close();
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for QdrantEndpoint {
    fn drop(&mut self) {
        self.engine.close();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// The collections, each one shard.
struct Engine {
    root: PathBuf,
    shards: RwLock<HashMap<String, Arc<EdgeShard>>>,
    /// The create request of each collection made since the start: its
    /// shard, copy and index settings, which one node serving edge shards
    /// cannot act on, are reported back as a server reports them.
    created: RwLock<HashMap<String, CreateCollection>>,
    /// Set by stop: connections still open get UNAVAILABLE.
    closed: AtomicBool,
}

impl Engine {
    /// Opens every collection already under `root`.
    fn open(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let mut shards = HashMap::new();
        for entry in std::fs::read_dir(root)? {
            let path = entry?.path();
            if !path.join("edge_config.json").exists() {
                continue;
            }
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let shard = EdgeShard::load(&path, None)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
            shards.insert(name, Arc::new(shard));
        }
        Ok(Self {
            root: root.to_owned(),
            shards: RwLock::new(shards),
            created: RwLock::default(),
            closed: AtomicBool::new(false),
        })
    }

    /// Drops every shard; a connection still open gets UNAVAILABLE.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.shards
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn shard(&self, name: &str) -> Result<Arc<EdgeShard>, Status> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the endpoint is stopped"));
        }
        self.shards
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("Collection `{name}` doesn't exist!")))
    }

    /// Runs an engine call off the executor.
    async fn with_shard<T: Send + 'static>(
        &self,
        name: &str,
        call: impl FnOnce(&EdgeShard) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let shard = self.shard(name)?;
        tokio::task::spawn_blocking(move || call(&shard))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
    }
}

fn engine_error(e: qdrant_edge::OperationError) -> Status {
    Status::internal(e.to_string())
}

fn unsupported(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not supported by the test endpoint"))
}

fn updated() -> Response<PointsOperationResponse> {
    Response::new(PointsOperationResponse {
        result: Some(UpdateResult {
            operation_id: None,
            status: UpdateStatus::Completed as i32,
        }),
        time: 0.0,
        usage: None,
    })
}

fn edge_id(id: &grpc::PointId) -> Result<EdgePointId, Status> {
    use grpc::point_id::PointIdOptions;
    match &id.point_id_options {
        Some(PointIdOptions::Num(n)) => Ok(EdgePointId::NumId(*n)),
        Some(PointIdOptions::Uuid(u)) => u
            .parse()
            .map(EdgePointId::Uuid)
            .map_err(|e| Status::invalid_argument(format!("point id {u:?}: {e}"))),
        None => Err(Status::invalid_argument("a point without an id")),
    }
}

fn grpc_id(id: EdgePointId) -> grpc::PointId {
    match id {
        EdgePointId::NumId(n) => n.into(),
        EdgePointId::Uuid(u) => u.to_string().into(),
    }
}

/// The one dense vector of an upserted point.
#[allow(deprecated)]
fn dense_vector(vectors: Option<grpc::Vectors>) -> Result<Vec<f32>, Status> {
    use grpc::vector::Vector as V;
    use grpc::vectors::VectorsOptions;
    match vectors.and_then(|v| v.vectors_options) {
        Some(VectorsOptions::Vector(v)) => match v.vector {
            Some(V::Dense(d)) => Ok(d.data),
            None if v.indices.is_none() && v.vectors_count.is_none() => Ok(v.data),
            _ => Err(unsupported("a vector other than dense")),
        },
        Some(VectorsOptions::Vectors(_)) => Err(unsupported("named vectors")),
        None => Err(Status::invalid_argument("a point without a vector")),
    }
}

fn with_payload(selector: Option<&grpc::WithPayloadSelector>) -> Result<bool, Status> {
    use grpc::with_payload_selector::SelectorOptions;
    match selector.and_then(|s| s.selector_options.as_ref()) {
        None => Ok(false),
        Some(SelectorOptions::Enable(on)) => Ok(*on),
        Some(_) => Err(unsupported("a payload selector")),
    }
}

fn with_vectors(selector: Option<&grpc::WithVectorsSelector>) -> Result<bool, Status> {
    use grpc::with_vectors_selector::SelectorOptions;
    match selector.and_then(|s| s.selector_options.as_ref()) {
        None => Ok(false),
        Some(SelectorOptions::Enable(on)) => Ok(*on),
        Some(_) => Err(unsupported("a vector selector")),
    }
}

/// A search filter in the engine's terms: `must`, `should` and
/// `must_not` of field conditions with a `match` (a keyword, an integer, a
/// boolean, any or except of keywords or integers) or a `range`, as
/// vecsync's search sends them. Anything else is refused.
fn edge_filter(filter: Option<grpc::Filter>) -> Result<Option<qdrant_edge::Filter>, Status> {
    use grpc::condition::ConditionOneOf;
    use grpc::r#match::MatchValue;
    use serde_json::{Value, json};
    let Some(filter) = filter else {
        return Ok(None);
    };
    if filter.min_should.is_some() {
        return Err(unsupported("min_should"));
    }
    let condition = |c: grpc::Condition| -> Result<Value, Status> {
        let Some(ConditionOneOf::Field(field)) = c.condition_one_of else {
            return Err(unsupported("a condition other than on a field"));
        };
        let key = field.key;
        if let Some(range) = field.range {
            return Ok(json!({"key": key, "range": {
                "gt": range.gt, "gte": range.gte, "lt": range.lt, "lte": range.lte
            }}));
        }
        let matched = match field.r#match.and_then(|m| m.match_value) {
            Some(MatchValue::Keyword(k)) => json!({"value": k}),
            Some(MatchValue::Integer(i)) => json!({"value": i}),
            Some(MatchValue::Boolean(b)) => json!({"value": b}),
            Some(MatchValue::Keywords(l)) => json!({"any": l.strings}),
            Some(MatchValue::Integers(l)) => json!({"any": l.integers}),
            Some(MatchValue::ExceptKeywords(l)) => json!({"except": l.strings}),
            Some(MatchValue::ExceptIntegers(l)) => json!({"except": l.integers}),
            _ => return Err(unsupported("this kind of match")),
        };
        Ok(json!({"key": key, "match": matched}))
    };
    let clause = |list: Vec<grpc::Condition>| -> Result<Value, Status> {
        list.into_iter()
            .map(condition)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::from)
    };
    let filter = json!({
        "must": clause(filter.must)?,
        "should": clause(filter.should)?,
        "must_not": clause(filter.must_not)?,
    });
    serde_json::from_value(filter)
        .map(Some)
        .map_err(|e| Status::invalid_argument(format!("filter: {e}")))
}

fn no_filter(filter: Option<&grpc::Filter>) -> Result<(), Status> {
    match filter {
        None => Ok(()),
        Some(_) => Err(unsupported("a filter")),
    }
}

fn retrieved(record: EdgeRecord) -> RetrievedPoint {
    let vector = match record.vector {
        Some(VectorStructInternal::Single(v)) => Some(v),
        Some(VectorStructInternal::Named(mut named)) => match named.remove(DEFAULT_VECTOR_NAME) {
            Some(VectorInternal::Dense(v)) => Some(v),
            _ => None,
        },
        _ => None,
    };
    RetrievedPoint {
        id: Some(grpc_id(record.id)),
        payload: record
            .payload
            .map(|p| qdrant_client::Payload::from(p.0).into())
            .unwrap_or_default(),
        vectors: vector.map(dense_output),
        shard_key: None,
        order_value: None,
    }
}

fn dense_output(data: Vec<f32>) -> grpc::VectorsOutput {
    grpc::VectorsOutput {
        vectors_options: Some(grpc::vectors_output::VectorsOptions::Vector(
            grpc::VectorOutput {
                vector: Some(grpc::vector_output::Vector::Dense(grpc::DenseVector {
                    data,
                })),
                ..Default::default()
            },
        )),
    }
}

fn edge_distance(d: i32) -> Result<qdrant_edge::Distance, Status> {
    use qdrant_edge::Distance as E;
    match grpc::Distance::try_from(d) {
        Ok(grpc::Distance::Cosine) => Ok(E::Cosine),
        Ok(grpc::Distance::Dot) => Ok(E::Dot),
        Ok(grpc::Distance::Euclid) => Ok(E::Euclid),
        Ok(grpc::Distance::Manhattan) => Ok(E::Manhattan),
        _ => Err(Status::invalid_argument(format!("unknown distance {d}"))),
    }
}

fn grpc_distance(d: qdrant_edge::Distance) -> grpc::Distance {
    use qdrant_edge::Distance as E;
    match d {
        E::Cosine => grpc::Distance::Cosine,
        E::Dot => grpc::Distance::Dot,
        E::Euclid => grpc::Distance::Euclid,
        E::Manhattan => grpc::Distance::Manhattan,
    }
}

/// How Qdrant keeps a collection's vectors, from the gRPC datatype (the
/// server's default, float32, where unset).
fn edge_datatype(d: Option<i32>) -> Result<VectorStorageDatatype, Status> {
    use VectorStorageDatatype as E;
    match d.map(grpc::Datatype::try_from) {
        None | Some(Ok(grpc::Datatype::Default | grpc::Datatype::Float32)) => Ok(E::Float32),
        Some(Ok(grpc::Datatype::Float16)) => Ok(E::Float16),
        Some(Ok(grpc::Datatype::Uint8)) => Ok(E::Uint8),
        _ => Err(Status::invalid_argument(format!("unknown datatype {d:?}"))),
    }
}

fn grpc_datatype(d: Option<VectorStorageDatatype>) -> grpc::Datatype {
    use VectorStorageDatatype as E;
    match d.unwrap_or_default() {
        E::Float16 => grpc::Datatype::Float16,
        E::Uint8 => grpc::Datatype::Uint8,
        _ => grpc::Datatype::Float32,
    }
}

fn upsert_op(points: Vec<qdrant_edge::PointStructPersisted>) -> UpdateOperation {
    UpdateOperation::PointOperation(PointOperations::UpsertPoints(
        PointInsertOperations::PointsList(points),
    ))
}

#[tonic::async_trait]
impl Collections for Engine {
    // Disk placement is reported in the fields clients still send it in,
    // deprecated for memory placements by servers from 1.19 (which read
    // both).
    #[allow(deprecated)]
    async fn get(
        &self,
        request: Request<GetCollectionInfoRequest>,
    ) -> Result<Response<GetCollectionInfoResponse>, Status> {
        let name = request.into_inner().collection_name;
        let info = self
            .with_shard(&name, |shard| {
                let count = shard
                    .count(CountRequest {
                        filter: None,
                        exact: true,
                    })
                    .map_err(engine_error)?;
                let params = shard.config().vectors.get(DEFAULT_VECTOR_NAME).cloned();
                Ok((count, params))
            })
            .await?;
        let (count, params) = info;
        let created = self
            .created
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name)
            .cloned()
            .unwrap_or_default();
        let on_disk = match created.vectors_config.and_then(|v| v.config) {
            Some(grpc::vectors_config::Config::Params(p)) => p.on_disk,
            _ => None,
        };
        let vectors_config = params.map(|p| grpc::VectorsConfig {
            config: Some(grpc::vectors_config::Config::Params(grpc::VectorParams {
                size: p.size as u64,
                distance: grpc_distance(p.distance) as i32,
                on_disk,
                datatype: Some(grpc_datatype(p.datatype) as i32),
                ..Default::default()
            })),
        });
        Ok(Response::new(GetCollectionInfoResponse {
            result: Some(grpc::CollectionInfo {
                status: grpc::CollectionStatus::Green as i32,
                points_count: Some(count as u64),
                config: Some(grpc::CollectionConfig {
                    params: Some(grpc::CollectionParams {
                        shard_number: created.shard_number.unwrap_or(1),
                        replication_factor: created.replication_factor,
                        write_consistency_factor: created.write_consistency_factor,
                        on_disk_payload: created.on_disk_payload.unwrap_or(false),
                        vectors_config,
                        ..Default::default()
                    }),
                    hnsw_config: created.hnsw_config,
                    quantization_config: created.quantization_config,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            time: 0.0,
        }))
    }

    async fn list(
        &self,
        _request: Request<ListCollectionsRequest>,
    ) -> Result<Response<ListCollectionsResponse>, Status> {
        let mut names: Vec<String> = self
            .shards
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        Ok(Response::new(ListCollectionsResponse {
            collections: names
                .into_iter()
                .map(|name| CollectionDescription { name })
                .collect(),
            time: 0.0,
        }))
    }

    async fn create(
        &self,
        request: Request<CreateCollection>,
    ) -> Result<Response<CollectionOperationResponse>, Status> {
        let request = request.into_inner();
        let name = request.collection_name.clone();
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(Status::invalid_argument(format!(
                "bad collection name {name:?}"
            )));
        }
        let params = match request.vectors_config.clone().and_then(|v| v.config) {
            Some(grpc::vectors_config::Config::Params(p)) => p,
            Some(_) => return Err(unsupported("named vectors")),
            None => return Err(Status::invalid_argument("vectors_config is required")),
        };
        let distance = edge_distance(params.distance)?;
        let datatype = edge_datatype(params.datatype)?;
        let path = self.root.join(&name);
        let mut shards = self.shards.write().unwrap_or_else(|e| e.into_inner());
        if shards.contains_key(&name) {
            return Err(Status::already_exists(format!(
                "Collection `{name}` already exists!"
            )));
        }
        let config = EdgeConfigBuilder::new()
            .vector(
                DEFAULT_VECTOR_NAME,
                EdgeVectorParamsBuilder::new(params.size as usize, distance)
                    .datatype(datatype)
                    .build(),
            )
            .build();
        std::fs::create_dir_all(&path).map_err(|e| Status::internal(e.to_string()))?;
        let shard = EdgeShard::new(&path, config).map_err(|e| Status::internal(e.to_string()))?;
        self.created
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), request);
        shards.insert(name, Arc::new(shard));
        Ok(Response::new(CollectionOperationResponse {
            result: true,
            time: 0.0,
        }))
    }

    async fn update(
        &self,
        _request: Request<grpc::UpdateCollection>,
    ) -> Result<Response<CollectionOperationResponse>, Status> {
        Err(unsupported("updating a collection"))
    }

    async fn delete(
        &self,
        request: Request<DeleteCollection>,
    ) -> Result<Response<CollectionOperationResponse>, Status> {
        let name = request.into_inner().collection_name;
        self.created
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
        let removed = self
            .shards
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
        if let Some(shard) = removed {
            drop(shard);
            let path = self.root.join(&name);
            tokio::task::spawn_blocking(move || std::fs::remove_dir_all(path))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(Response::new(CollectionOperationResponse {
            result: true,
            time: 0.0,
        }))
    }

    async fn update_aliases(
        &self,
        _request: Request<grpc::ChangeAliases>,
    ) -> Result<Response<CollectionOperationResponse>, Status> {
        Err(unsupported("aliases"))
    }

    async fn list_collection_aliases(
        &self,
        _request: Request<grpc::ListCollectionAliasesRequest>,
    ) -> Result<Response<grpc::ListAliasesResponse>, Status> {
        Err(unsupported("aliases"))
    }

    async fn list_aliases(
        &self,
        _request: Request<grpc::ListAliasesRequest>,
    ) -> Result<Response<grpc::ListAliasesResponse>, Status> {
        Err(unsupported("aliases"))
    }

    async fn collection_cluster_info(
        &self,
        _request: Request<grpc::CollectionClusterInfoRequest>,
    ) -> Result<Response<grpc::CollectionClusterInfoResponse>, Status> {
        Err(unsupported("cluster info"))
    }

    async fn collection_exists(
        &self,
        request: Request<CollectionExistsRequest>,
    ) -> Result<Response<CollectionExistsResponse>, Status> {
        let name = request.into_inner().collection_name;
        let exists = match self.shard(&name) {
            Ok(_) => true,
            Err(e) if e.code() == tonic::Code::NotFound => false,
            Err(e) => return Err(e),
        };
        Ok(Response::new(CollectionExistsResponse {
            result: Some(CollectionExists { exists }),
            time: 0.0,
        }))
    }

    async fn update_collection_cluster_setup(
        &self,
        _request: Request<grpc::UpdateCollectionClusterSetupRequest>,
    ) -> Result<Response<grpc::UpdateCollectionClusterSetupResponse>, Status> {
        Err(unsupported("cluster setup"))
    }

    async fn create_shard_key(
        &self,
        _request: Request<grpc::CreateShardKeyRequest>,
    ) -> Result<Response<grpc::CreateShardKeyResponse>, Status> {
        Err(unsupported("shard keys"))
    }

    async fn delete_shard_key(
        &self,
        _request: Request<grpc::DeleteShardKeyRequest>,
    ) -> Result<Response<grpc::DeleteShardKeyResponse>, Status> {
        Err(unsupported("shard keys"))
    }

    async fn list_shard_keys(
        &self,
        _request: Request<grpc::ListShardKeysRequest>,
    ) -> Result<Response<grpc::ListShardKeysResponse>, Status> {
        Err(unsupported("shard keys"))
    }
}

/// `Points` methods the endpoint does not serve, written the way
/// `async_trait` expands an `async fn` (it does not see into macros).
macro_rules! unsupported_points {
    ($($method:ident($request:ident) -> $response:ident;)*) => {
        $(
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _request: Request<grpc::$request>,
            ) -> std::pin::Pin<
                Box<
                    dyn std::future::Future<Output = Result<Response<grpc::$response>, Status>>
                        + Send
                        + 'async_trait,
                >,
            >
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(std::future::ready(Err(unsupported(stringify!($method)))))
            }
        )*
    };
}

#[tonic::async_trait]
impl Points for Engine {
    async fn upsert(
        &self,
        request: Request<UpsertPoints>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        let request = request.into_inner();
        let points = request
            .points
            .into_iter()
            .map(|p| {
                let id = edge_id(&p.id.unwrap_or_default())?;
                let vector = dense_vector(p.vectors)?;
                let payload = serde_json::Value::from(qdrant_client::Payload::from(p.payload));
                Ok(PointStruct::new(id, vector, payload).into())
            })
            .collect::<Result<Vec<_>, Status>>()?;
        self.with_shard(&request.collection_name, move |shard| {
            shard.update(upsert_op(points)).map_err(engine_error)
        })
        .await?;
        Ok(updated())
    }

    async fn delete(
        &self,
        request: Request<DeletePoints>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        use grpc::points_selector::PointsSelectorOneOf;
        let request = request.into_inner();
        let ids = match request.points.and_then(|p| p.points_selector_one_of) {
            Some(PointsSelectorOneOf::Points(list)) => list
                .ids
                .iter()
                .map(edge_id)
                .collect::<Result<Vec<_>, Status>>()?,
            Some(PointsSelectorOneOf::Filter(_)) => return Err(unsupported("a filter")),
            None => return Err(Status::invalid_argument("no points to delete")),
        };
        self.with_shard(&request.collection_name, move |shard| {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::DeletePoints { ids },
                ))
                .map_err(engine_error)
        })
        .await?;
        Ok(updated())
    }

    async fn get(&self, request: Request<GetPoints>) -> Result<Response<GetResponse>, Status> {
        let request = request.into_inner();
        let ids = request
            .ids
            .iter()
            .map(edge_id)
            .collect::<Result<Vec<_>, Status>>()?;
        let payload = with_payload(request.with_payload.as_ref())?;
        let vectors = with_vectors(request.with_vectors.as_ref())?;
        let records = self
            .with_shard(&request.collection_name, move |shard| {
                shard
                    .retrieve(
                        &ids,
                        Some(WithPayloadInterface::Bool(payload)),
                        Some(WithVector::Bool(vectors)),
                    )
                    .map_err(engine_error)
            })
            .await?;
        Ok(Response::new(GetResponse {
            result: records.into_iter().map(retrieved).collect(),
            time: 0.0,
            usage: None,
        }))
    }

    async fn scroll(
        &self,
        request: Request<ScrollPoints>,
    ) -> Result<Response<ScrollResponse>, Status> {
        let request = request.into_inner();
        no_filter(request.filter.as_ref())?;
        let offset = request.offset.as_ref().map(edge_id).transpose()?;
        let scroll = ScrollRequest {
            offset,
            limit: Some(request.limit.unwrap_or(10) as usize),
            filter: None,
            with_payload: Some(WithPayloadInterface::Bool(with_payload(
                request.with_payload.as_ref(),
            )?)),
            with_vector: WithVector::Bool(with_vectors(request.with_vectors.as_ref())?),
            order_by: None,
        };
        let (page, next) = self
            .with_shard(&request.collection_name, move |shard| {
                shard.scroll(scroll).map_err(engine_error)
            })
            .await?;
        Ok(Response::new(ScrollResponse {
            next_page_offset: next.map(grpc_id),
            result: page.into_iter().map(retrieved).collect(),
            time: 0.0,
            usage: None,
        }))
    }

    async fn count(
        &self,
        request: Request<CountPoints>,
    ) -> Result<Response<CountResponse>, Status> {
        let request = request.into_inner();
        no_filter(request.filter.as_ref())?;
        let count = self
            .with_shard(&request.collection_name, |shard| {
                shard
                    .count(CountRequest {
                        filter: None,
                        exact: true,
                    })
                    .map_err(engine_error)
            })
            .await?;
        Ok(Response::new(CountResponse {
            result: Some(CountResult {
                count: count as u64,
            }),
            time: 0.0,
            usage: None,
        }))
    }

    async fn search(
        &self,
        request: Request<SearchPoints>,
    ) -> Result<Response<SearchResponse>, Status> {
        let mut request = request.into_inner();
        let filter = edge_filter(request.filter.take())?;
        if request
            .vector_name
            .as_deref()
            .is_some_and(|n| !n.is_empty())
        {
            return Err(unsupported("named vectors"));
        }
        let search = SearchRequest {
            query: QueryEnum::from(request.vector),
            filter,
            params: None,
            limit: request.limit as usize,
            offset: request.offset.unwrap_or(0) as usize,
            with_payload: Some(WithPayloadInterface::Bool(with_payload(
                request.with_payload.as_ref(),
            )?)),
            with_vector: Some(WithVector::Bool(with_vectors(
                request.with_vectors.as_ref(),
            )?)),
            score_threshold: request.score_threshold,
        };
        let hits = self
            .with_shard(&request.collection_name, move |shard| {
                shard.search(search).map_err(engine_error)
            })
            .await?;
        Ok(Response::new(SearchResponse {
            result: hits
                .into_iter()
                .map(|hit| {
                    let point = retrieved(EdgeRecord {
                        id: hit.id,
                        payload: hit.payload,
                        vector: hit.vector,
                        shard_key: None,
                        order_value: None,
                    });
                    grpc::ScoredPoint {
                        id: point.id,
                        payload: point.payload,
                        score: hit.score,
                        version: hit.version,
                        vectors: point.vectors,
                        ..Default::default()
                    }
                })
                .collect(),
            time: 0.0,
            usage: None,
        }))
    }

    unsupported_points! {
        update_vectors(UpdatePointVectors) -> PointsOperationResponse;
        delete_vectors(DeletePointVectors) -> PointsOperationResponse;
        set_payload(SetPayloadPoints) -> PointsOperationResponse;
        overwrite_payload(SetPayloadPoints) -> PointsOperationResponse;
        delete_payload(DeletePayloadPoints) -> PointsOperationResponse;
        clear_payload(ClearPayloadPoints) -> PointsOperationResponse;
        create_field_index(CreateFieldIndexCollection) -> PointsOperationResponse;
        delete_field_index(DeleteFieldIndexCollection) -> PointsOperationResponse;
        create_vector_name(CreateVectorNameRequest) -> PointsOperationResponse;
        delete_vector_name(DeleteVectorNameRequest) -> PointsOperationResponse;
        search_batch(SearchBatchPoints) -> SearchBatchResponse;
        search_groups(SearchPointGroups) -> SearchGroupsResponse;
        recommend(RecommendPoints) -> RecommendResponse;
        recommend_batch(RecommendBatchPoints) -> RecommendBatchResponse;
        recommend_groups(RecommendPointGroups) -> RecommendGroupsResponse;
        discover(DiscoverPoints) -> DiscoverResponse;
        discover_batch(DiscoverBatchPoints) -> DiscoverBatchResponse;
        update_batch(UpdateBatchPoints) -> UpdateBatchResponse;
        query(QueryPoints) -> QueryResponse;
        query_batch(QueryBatchPoints) -> QueryBatchResponse;
        query_groups(QueryPointGroups) -> QueryGroupsResponse;
        facet(FacetCounts) -> FacetResponse;
        search_matrix_pairs(SearchMatrixPoints) -> SearchMatrixPairsResponse;
        search_matrix_offsets(SearchMatrixPoints) -> SearchMatrixOffsetsResponse;
    }
}

#[tonic::async_trait]
impl Qdrant for Engine {
    async fn health_check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckReply>, Status> {
        Ok(Response::new(HealthCheckReply {
            title: "vecsync qdrant test endpoint".into(),
            version: "1.16.0".into(),
            commit: None,
        }))
    }
}
