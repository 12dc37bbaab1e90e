//! A Qdrant server through `qdrant-client`'s gRPC clients (an `https://`
//! URL turns TLS on, trusting `store.ca_file` besides the system's CAs;
//! `store.api_key` is sent with every call).
//!
//! Collections are created when missing, each with its tombstone
//! collection, with the shards, replicas and index settings of
//! `[store.collections.<name>]`. Writes wait for the server's
//! acknowledgement (`wait=true`) from as many copies as the collection
//! keeps, after which the server holds them in its write-ahead log: that is
//! the durable point the consumer commits after, so [`Store::flush`] has
//! nothing left to do. Reads ask every copy (read consistency `all`), so a
//! version check never sees an older version than the one last written.
//! The clients run on a small runtime of their own, so calls block the
//! calling thread and never the worker's executor.

use super::{
    Hit, Page, Part, Search, Store, StoreError, engine_distance, stored_record, tombstones_of,
};
use crate::apply::{Payload, Record};
use crate::search;
use qdrant_client::qdrant::collections_client::CollectionsClient;
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::points_client::PointsClient;
use qdrant_client::qdrant::qdrant_client::QdrantClient;
use qdrant_client::qdrant::vector_output::Vector as OutputVector;
use qdrant_client::qdrant::vectors_config::Config as VectorsConfig;
use qdrant_client::qdrant::vectors_output::VectorsOptions;
use qdrant_client::qdrant::{
    BinaryQuantizationBuilder, CollectionExistsRequest, Condition, CountPointsBuilder,
    CreateCollectionBuilder, Datatype, DeletePointsBuilder, Distance as QdrantDistance, Filter,
    GetCollectionInfoRequest, GetPointsBuilder, HealthCheckRequest, HnswConfigDiffBuilder,
    PointId as QdrantPointId, PointStruct, PointsIdsList, Range, ReadConsistencyType,
    RetrievedPoint, ScalarQuantizationBuilder, ScrollPointsBuilder, SearchPointsBuilder,
    UpsertPointsBuilder, VectorParamsBuilder, read_consistency,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use vecsync_schemas::config::{
    Distance, ServerCollectionConfig, ServerQuantization, StoreConfig, VectorDatatype,
};
use vecsync_schemas::event::PointId;

/// A Qdrant server as a region's store.
pub struct ServerStore {
    clients: Clients,
    url: String,
    /// How missing collections are created, by name.
    settings: BTreeMap<String, ServerCollectionConfig>,
    /// How the collections it creates keep their vectors.
    datatype: VectorDatatype,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for ServerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for ServerStore {
    fn drop(&mut self) {
        // Dropping a runtime may block, which an async caller cannot allow.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Adds the API key, when there is one, to every call.
#[derive(Clone)]
struct ApiKey(Option<AsciiMetadataValue>);

impl Interceptor for ApiKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.0 {
            request.metadata_mut().insert("api-key", key.clone());
        }
        Ok(request)
    }
}

type Service = InterceptedService<Channel, ApiKey>;

/// The server's gRPC services over one channel, which connects when first
/// used and reconnects after the server comes back.
#[derive(Clone)]
struct Clients {
    channel: Channel,
    key: ApiKey,
}

impl Clients {
    fn points(&self) -> PointsClient<Service> {
        PointsClient::with_interceptor(self.channel.clone(), self.key.clone())
            .max_decoding_message_size(usize::MAX)
    }

    fn collections(&self) -> CollectionsClient<Service> {
        CollectionsClient::with_interceptor(self.channel.clone(), self.key.clone())
            .max_decoding_message_size(usize::MAX)
    }

    fn qdrant(&self) -> QdrantClient<Service> {
        QdrantClient::with_interceptor(self.channel.clone(), self.key.clone())
    }
}

impl ServerStore {
    /// A client of the server at `config.url`. Nothing is sent yet: the
    /// first call finds out whether the server is there.
    pub fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        let refused = |e: String| StoreError::Refused {
            collection: String::new(),
            message: format!("store.url {}: {e}", config.url),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("vecsync-qdrant")
            .enable_all()
            .build()
            .map_err(|e| refused(e.to_string()))?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let mut endpoint = Endpoint::from_shared(config.url.clone())
            .map_err(|e| refused(e.to_string()))?
            .timeout(timeout)
            .connect_timeout(timeout);
        if config.url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(path) = &config.ca_file {
                let pem = std::fs::read(path).map_err(|e| StoreError::Refused {
                    collection: String::new(),
                    message: format!("store.ca_file {}: {e}", path.display()),
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| refused(format!("TLS: {e}")))?;
        }
        let key = config
            .api_key
            .as_deref()
            .map(MetadataValue::try_from)
            .transpose()
            .map_err(|_| refused("store.api_key is not a valid header value".into()))?;
        let channel = {
            let _context = runtime.enter();
            endpoint.connect_lazy()
        };
        Ok(Self {
            clients: Clients {
                channel,
                key: ApiKey(key),
            },
            url: config.url.clone(),
            settings: config.collections.clone(),
            datatype: config.vector_datatype,
            runtime: Some(runtime),
        })
    }

    /// Runs one client call on the store's runtime and waits for it.
    fn call<T, Fut>(
        &self,
        collection: &str,
        call: impl FnOnce(Clients) -> Fut,
    ) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, tonic::Status>> + Send + 'static,
        T: Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| StoreError::engine(collection, "the store is closed"))?;
        let future = call(self.clients.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv()
            .map_err(|_| StoreError::engine(collection, "the store's client stopped"))?
            .map_err(|e| server_error(collection, &self.url, e))
    }

    /// The vector size and distance of an existing collection.
    fn shape(&self, collection: &str, name: &str) -> Result<(u64, QdrantDistance), StoreError> {
        let request = GetCollectionInfoRequest {
            collection_name: name.to_owned(),
        };
        let info = self.call(collection, |c| async move {
            Ok(c.collections().get(request).await?.into_inner())
        })?;
        let params = info
            .result
            .and_then(|i| i.config)
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config);
        match params {
            Some(VectorsConfig::Params(p)) => Ok((p.size, p.distance())),
            _ => Err(StoreError::Mismatch {
                collection: collection.to_owned(),
                reason:
                    "the server's collection has named vectors; vecsync writes one unnamed vector"
                        .into(),
            }),
        }
    }

    fn exists(&self, collection: &str, name: &str) -> Result<bool, StoreError> {
        let request = CollectionExistsRequest {
            collection_name: name.to_owned(),
        };
        let exists = self.call(collection, |c| async move {
            Ok(c.collections()
                .collection_exists(request)
                .await?
                .into_inner())
        })?;
        Ok(exists.result.is_some_and(|r| r.exists))
    }

    /// Creates a collection when missing, or checks the one there.
    fn ensure(
        &self,
        collection: &str,
        name: &str,
        dimension: u64,
        distance: QdrantDistance,
    ) -> Result<(), StoreError> {
        if !self.exists(collection, name)? {
            let unset = ServerCollectionConfig::default();
            let settings = self.settings.get(collection).unwrap_or(&unset);
            let live = (name == collection).then_some(self.datatype);
            let request = create_request(name, dimension, distance, settings, live);
            let created = self.call(collection, |c| async move {
                c.collections().create(request.build()).await.map(drop)
            });
            match created {
                Ok(()) => {
                    tracing::info!(
                        collection = name,
                        dimension,
                        ?distance,
                        url = self.url,
                        "created collection"
                    );
                    return Ok(());
                }
                // Another worker of the region created it in the meantime:
                // the one there is checked like any other.
                Err(_) if self.exists(collection, name)? => {}
                Err(e) => return Err(e),
            }
        }
        let found = self.shape(collection, name)?;
        if found != (dimension, distance) {
            // A collection a user made for cosine similarity, as Qdrant's
            // guides create one.
            let cosine = if found.1 == QdrantDistance::Cosine {
                "; vecsync keeps a cosine collection as unit vectors under the Dot distance \
                 (it normalizes them itself, so that every region stores the same bytes): \
                 create it with distance Dot, or let vecsync create it"
            } else {
                ""
            };
            return Err(StoreError::Mismatch {
                collection: collection.to_owned(),
                reason: format!(
                    "the server's {name} holds vectors of {found:?}, the config says \
                     ({dimension}, {distance:?}){cosine}"
                ),
            });
        }
        Ok(())
    }
}

impl Store for ServerStore {
    fn ensure_collection(
        &self,
        name: &str,
        dimension: usize,
        distance: Distance,
    ) -> Result<(), StoreError> {
        self.ensure(name, name, dimension as u64, qdrant_distance(distance))?;
        self.ensure(name, &tombstones_of(name), 1, QdrantDistance::Dot)
    }

    fn open_collection(&self, name: &str) -> Result<(), StoreError> {
        for part in [name.to_owned(), tombstones_of(name)] {
            if !self.exists(name, &part)? {
                return Err(StoreError::UnknownCollection(name.to_owned()));
            }
        }
        Ok(())
    }

    fn get(
        &self,
        collection: &str,
        part: Part,
        ids: &[PointId],
    ) -> Result<Vec<(PointId, Record)>, StoreError> {
        let live = part == Part::Live;
        let ids: Vec<QdrantPointId> = ids.iter().map(qdrant_id).collect();
        let request = GetPointsBuilder::new(part_name(collection, part), ids)
            .with_payload(true)
            .with_vectors(live)
            .read_consistency(every_copy());
        let points = self.call(collection, |c| async move {
            Ok(c.points().get(request.build()).await?.into_inner().result)
        })?;
        points
            .into_iter()
            .map(|point| to_record(collection, point, live))
            .collect()
    }

    fn upsert(
        &self,
        collection: &str,
        part: Part,
        points: Vec<(PointId, Vec<f32>, Payload)>,
    ) -> Result<(), StoreError> {
        let points: Vec<PointStruct> = points
            .into_iter()
            .map(|(id, vector, payload)| PointStruct::new(qdrant_id(&id), vector, payload))
            .collect();
        let request = UpsertPointsBuilder::new(part_name(collection, part), points).wait(true);
        self.call(collection, |c| async move {
            c.points().upsert(request.build()).await.map(drop)
        })
    }

    fn delete(&self, collection: &str, part: Part, ids: &[PointId]) -> Result<(), StoreError> {
        let ids = ids.iter().map(qdrant_id).collect();
        let request = DeletePointsBuilder::new(part_name(collection, part))
            .points(PointsIdsList { ids })
            .wait(true);
        self.call(collection, |c| async move {
            c.points().delete(request.build()).await.map(drop)
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.call("", |c| async move {
            c.qdrant().health_check(HealthCheckRequest {}).await
        })
        .map(drop)
    }

    fn search_points(&self, collection: &str, search: &Search) -> Result<Vec<Hit>, StoreError> {
        let request =
            SearchPointsBuilder::new(collection, search.vector.clone(), search.limit as u64)
                .with_payload(search.with_payload)
                .read_consistency(every_copy());
        let request = match &search.filter {
            Some(f) => request.filter(grpc_filter(f)),
            None => request,
        };
        // The search call, not the newer query one: every Qdrant 1.x
        // server answers it, devkit's endpoint included.
        #[allow(deprecated)]
        let found = self.call(collection, |c| async move {
            Ok(c.points().search(request.build()).await?.into_inner())
        })?;
        found
            .result
            .into_iter()
            .map(|hit| {
                Ok(Hit {
                    id: point_id(collection, hit.id.as_ref())?,
                    score: hit.score,
                    payload: search.with_payload.then(|| {
                        hit.payload
                            .into_iter()
                            .map(|(k, v)| (k, v.into_json()))
                            .collect()
                    }),
                })
            })
            .collect()
    }

    fn count(&self, collection: &str) -> Result<usize, StoreError> {
        let request = CountPointsBuilder::new(collection).exact(true);
        let count = self.call(collection, |c| async move {
            Ok(c.points().count(request.build()).await?.into_inner())
        })?;
        Ok(count.result.map_or(0, |r| r.count) as usize)
    }

    fn scan_page(
        &self,
        collection: &str,
        part: Part,
        with_vectors: bool,
        from: Option<PointId>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let live = part == Part::Live;
        let mut request = ScrollPointsBuilder::new(part_name(collection, part))
            .limit(u32::try_from(limit).unwrap_or(u32::MAX))
            .with_payload(true)
            .with_vectors(with_vectors && live)
            .read_consistency(every_copy());
        if let Some(from) = &from {
            request = request.offset(qdrant_id(from));
        }
        let page = self.call(collection, |c| async move {
            Ok(c.points().scroll(request.build()).await?.into_inner())
        })?;
        let records = page
            .result
            .into_iter()
            .map(|point| to_record(collection, point, live))
            .collect::<Result<_, _>>()?;
        let next = page
            .next_page_offset
            .map(|id| point_id(collection, Some(&id)))
            .transpose()?;
        Ok((records, next))
    }
}

/// The request that creates `name`, one part of `collection`, as `settings`
/// say: shards and copies for both parts, the vector storage and index
/// settings for the live part only (`live`, with its vectors' datatype),
/// since tombstones hold no vectors worth searching.
fn create_request(
    name: &str,
    dimension: u64,
    distance: QdrantDistance,
    settings: &ServerCollectionConfig,
    live: Option<VectorDatatype>,
) -> CreateCollectionBuilder {
    let mut request = CreateCollectionBuilder::new(name);
    let mut vectors = VectorParamsBuilder::new(dimension, distance);
    if let Some(n) = settings.shard_number {
        request = request.shard_number(n);
    }
    if let Some(n) = settings.replication_factor {
        request = request.replication_factor(n);
    }
    // Every copy acknowledges a write unless told otherwise (and the config
    // allows nothing else).
    if let Some(n) = settings
        .write_consistency_factor
        .or(settings.replication_factor)
    {
        request = request.write_consistency_factor(n);
    }
    if let Some(datatype) = live {
        vectors = vectors.datatype(match datatype {
            VectorDatatype::Float32 => Datatype::Float32,
            VectorDatatype::Float16 => Datatype::Float16,
        });
        if let Some(on_disk) = settings.on_disk {
            vectors = vectors.on_disk(on_disk);
        }
        if let Some(on_disk) = settings.on_disk_payload {
            request = request.on_disk_payload(on_disk);
        }
        if settings.hnsw_m.is_some() || settings.hnsw_ef_construct.is_some() {
            let mut hnsw = HnswConfigDiffBuilder::default();
            if let Some(m) = settings.hnsw_m {
                hnsw = hnsw.m(m);
            }
            if let Some(ef) = settings.hnsw_ef_construct {
                hnsw = hnsw.ef_construct(ef);
            }
            request = request.hnsw_config(hnsw);
        }
        request = match settings.quantization {
            Some(ServerQuantization::Scalar) => {
                request.quantization_config(ScalarQuantizationBuilder::default())
            }
            Some(ServerQuantization::Binary) => {
                request.quantization_config(BinaryQuantizationBuilder::default())
            }
            None => request,
        };
    }
    request.vectors_config(vectors)
}

/// Reads answered by every copy of a shard (each holds every acknowledged
/// write, since every copy acknowledges one).
fn every_copy() -> read_consistency::Value {
    read_consistency::Value::Type(ReadConsistencyType::All.into())
}

/// Unavailable servers and timeouts are worth retrying; what the server
/// refuses (a bad API key, a bad request) is not, nor a TLS handshake that
/// failed (a certificate not trusted), which waiting does not mend.
fn server_error(collection: &str, url: &str, status: tonic::Status) -> StoreError {
    use tonic::Code;
    let message = || format!("{url}: {status}");
    match status.code() {
        Code::NotFound => StoreError::UnknownCollection(collection.to_owned()),
        Code::Unavailable if failed_handshake(&status) => StoreError::Refused {
            collection: collection.to_owned(),
            message: message(),
        },
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled => StoreError::engine(collection, message()),
        _ => StoreError::Refused {
            collection: collection.to_owned(),
            message: message(),
        },
    }
}

/// Whether the connection failed in its TLS handshake: rustls reports
/// a certificate it does not trust, or a peer that does not speak TLS, as
/// invalid data.
fn failed_handshake(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// A search filter in the server's terms.
fn grpc_filter(f: &search::Filter) -> Filter {
    let conditions = |list: &[search::Condition]| -> Vec<Condition> {
        list.iter().map(grpc_condition).collect()
    };
    Filter {
        must: conditions(&f.must),
        should: conditions(&f.should),
        must_not: conditions(&f.must_not),
        min_should: None,
    }
}

/// A condition [`search::Filter::check`] took, in the server's terms.
fn grpc_condition(c: &search::Condition) -> Condition {
    use qdrant_client::qdrant::r#match::MatchValue;
    use qdrant_client::qdrant::{RepeatedIntegers, RepeatedStrings};
    use serde_json::Value;
    let strings = |l: &[Value]| RepeatedStrings {
        strings: l
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
    };
    let integers = |l: &[Value]| RepeatedIntegers {
        integers: l.iter().filter_map(Value::as_i64).collect(),
    };
    let all_strings = |l: &[Value]| l.iter().all(Value::is_string);
    match (&c.matches, &c.range) {
        (Some(m), _) => Condition::matches(
            c.key.clone(),
            match m {
                search::Match::Value { value } => match value {
                    Value::String(s) => MatchValue::Keyword(s.clone()),
                    Value::Bool(b) => MatchValue::Boolean(*b),
                    other => MatchValue::Integer(other.as_i64().unwrap_or_default()),
                },
                search::Match::Any { any } if all_strings(any) => {
                    MatchValue::Keywords(strings(any))
                }
                search::Match::Any { any } => MatchValue::Integers(integers(any)),
                search::Match::Except { except } if all_strings(except) => {
                    MatchValue::ExceptKeywords(strings(except))
                }
                search::Match::Except { except } => MatchValue::ExceptIntegers(integers(except)),
            },
        ),
        (None, range) => {
            let r = range.clone().unwrap_or_default();
            Condition::range(
                c.key.clone(),
                Range {
                    lt: r.lt,
                    gt: r.gt,
                    gte: r.gte,
                    lte: r.lte,
                },
            )
        }
    }
}

/// The server collection that holds one part of `collection`.
fn part_name(collection: &str, part: Part) -> String {
    match part {
        Part::Live => collection.to_owned(),
        Part::Tombstones => tombstones_of(collection),
    }
}

/// The server's name for the metric the collection is kept under.
fn qdrant_distance(d: Distance) -> QdrantDistance {
    match engine_distance(d) {
        Distance::Cosine => QdrantDistance::Cosine,
        Distance::Dot => QdrantDistance::Dot,
        Distance::Euclid => QdrantDistance::Euclid,
        Distance::Manhattan => QdrantDistance::Manhattan,
    }
}

fn qdrant_id(id: &PointId) -> QdrantPointId {
    match id {
        PointId::Num(n) => QdrantPointId::from(*n),
        PointId::Uuid(u) => QdrantPointId::from(u.to_string()),
    }
}

/// A point id as the server returned it.
fn point_id(collection: &str, id: Option<&QdrantPointId>) -> Result<PointId, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        collection: collection.to_owned(),
        id: format!("{id:?}"),
        reason,
    };
    match id.and_then(|i| i.point_id_options.as_ref()) {
        Some(PointIdOptions::Num(n)) => Ok(PointId::Num(*n)),
        Some(PointIdOptions::Uuid(u)) => u
            .parse()
            .map(PointId::Uuid)
            .map_err(|e| corrupt(format!("point id {u:?}: {e}"))),
        None => Err(corrupt("a point without an id".into())),
    }
}

fn to_record(
    collection: &str,
    point: RetrievedPoint,
    live: bool,
) -> Result<(PointId, Record), StoreError> {
    let id = point_id(collection, point.id.as_ref())?;
    let vector = live.then(|| match point.vectors.and_then(|v| v.vectors_options) {
        Some(VectorsOptions::Vector(v)) => match v.into_vector() {
            OutputVector::Dense(d) => d.data,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    });
    let payload = point
        .payload
        .into_iter()
        .map(|(k, v)| (k, v.into_json()))
        .collect();
    let record = stored_record(collection, &id, payload, vector)?;
    Ok((id, record))
}
