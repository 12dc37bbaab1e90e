//! The publisher an ingestion job embeds.

use crate::error::{ProducerError, error_label};
use crate::kafka;
use crate::metrics::{
    BatchSent, CodebookPublished, HeartbeatsSent, QueueDepth, QueueFull, Rejected, SendFailed,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, OnceCell};
use tokio::task::JoinHandle;
use vecsync_kafka::rate::TokenBucket;
use vecsync_kafka::{Cluster, Fatal};
use vecsync_schemas::avro::AvroRecord;
use vecsync_schemas::config::RegionConfig;
use vecsync_schemas::event::{Body, DeltaEvent, Heartbeat, Operation};
use vecsync_schemas::hlc::{Hlc, HybridClock, SystemClock};
use vecsync_schemas::payload::RESERVED_KEY;
use vecsync_schemas::registry::{RegistryClient, value_subject};
use vecsync_schemas::vector::{Encoding, PqCodebook};
use vecsync_schemas::wire::Encoder;

pub use vecsync_schemas::mutation::Mutation;
use vecsync_schemas::mutation::VectorCodec;

/// How [`Publisher::submit_run`] gives a batch its versions: one run of
/// consecutive timestamps on one tick, `first.nth(0)`, `first.nth(1)`, …
/// in the order of the batch.
pub enum Run<'a> {
    /// A new run from the publisher's clock.
    New,
    /// A new run, and `record` is told its first timestamp and its length
    /// once they are taken and before any event is queued, so that a caller
    /// can write them down (the file loader's resume point). If it fails,
    /// nothing is queued.
    Recorded(&'a mut (dyn FnMut(&Hlc, usize) -> std::io::Result<()> + Send)),
    /// The run of `events` an earlier submit of the same batch began with
    /// `first`: sending the batch again after a crash gives it the versions
    /// it had, so that what was acknowledged then is a duplicate now, never
    /// a newer write. A batch of another length is refused.
    Again { first: Hlc, events: usize },
}

impl std::fmt::Debug for Run<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Run::New => f.write_str("New"),
            Run::Recorded(_) => f.write_str("Recorded"),
            Run::Again { first, events } => f
                .debug_struct("Again")
                .field("first", first)
                .field("events", events)
                .finish(),
        }
    }
}

impl Run<'_> {
    /// The same run, for another attempt at the batch.
    pub fn reborrow(&mut self) -> Run<'_> {
        match self {
            Run::New => Run::New,
            Run::Recorded(record) => Run::Recorded(&mut **record),
            Run::Again { first, events } => Run::Again {
                first: first.clone(),
                events: *events,
            },
        }
    }
}

/// Publishes mutations of a region's collections to its delta topic.
///
/// Cheap to share behind an `Arc`; every method takes `&self`. Heartbeats
/// run in the background until the publisher is closed or dropped.
#[derive(Debug)]
pub struct Publisher {
    inner: Arc<Inner>,
    heartbeats: JoinHandle<()>,
}

struct Inner {
    region: String,
    /// The region's delta topic, then the local collections' topic when
    /// any collection stays in the region.
    topics: Vec<DeltaTopic>,
    cluster: Cluster,
    producer: kafka::KafkaProducer,
    /// The fatal errors the producer met outside any call.
    fatal: Fatal,
    registry: Arc<RegistryClient>,
    clock: HybridClock<SystemClock>,
    encoder: Encoder<DeltaEvent>,
    codebook_encoder: Option<Encoder<PqCodebook>>,
    collections: HashMap<String, Collection>,
    /// Held while events are stamped and queued, so that every partition
    /// receives this publisher's timestamps in ascending order.
    order: Mutex<()>,
    rate: Option<TokenBucket>,
    payload_lz4_threshold_bytes: usize,
    heartbeat_interval_ms: u32,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("region", &self.region)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// A delta topic the publisher writes, with the codebook topic that goes
/// with it.
#[derive(Debug)]
struct DeltaTopic {
    name: String,
    codebook: String,
    partitions: u32,
}

#[derive(Debug)]
struct Collection {
    dimension: usize,
    encoding: Encoding,
    codebook: Option<Codebook>,
    /// Its topic in `Inner::topics`.
    topic: usize,
}

#[derive(Debug)]
struct Codebook {
    book: PqCodebook,
    /// Set once the codebook topic has acknowledged the codebook.
    published: OnceCell<()>,
}

/// An event about to be queued: its key, an explicit partition for
/// heartbeats, and its body.
struct Outgoing {
    key: String,
    partition: Option<i32>,
    body: Body,
}

impl Publisher {
    /// Connects to the region's broker and registry: creates missing topics
    /// (when `kafka.create_topics`), registers the event schemas, loads PQ
    /// codebooks, and starts the heartbeats.
    pub async fn connect(config: &RegionConfig) -> Result<Self, ProducerError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(ProducerError::Config(problems.join("; ")));
        }
        crate::metrics::init_error_counters();
        let delta_topics = config.delta_topics();
        let mut collections = HashMap::new();
        for (name, c) in &config.collections {
            let (topic, _) = config.topics_of(c);
            let codebook = match &c.codebook_file {
                Some(path) => Some(Codebook {
                    book: load_codebook(path, name, c.dimension as usize)?,
                    published: OnceCell::new(),
                }),
                None => None,
            };
            collections.insert(
                name.clone(),
                Collection {
                    dimension: c.dimension as usize,
                    encoding: c.encoding,
                    codebook,
                    // `topics_of` names one of `delta_topics`.
                    topic: delta_topics
                        .iter()
                        .position(|(t, _)| *t == topic)
                        .unwrap_or_default(),
                },
            );
        }
        let cluster = Cluster::of_region(config);
        let (producer, fatal) = kafka::producer(config, &cluster)?;
        if config.kafka.create_topics {
            kafka::ensure_topics(config, &cluster).await?;
        }
        let mut topics = Vec::new();
        for (index, (name, codebook)) in delta_topics.into_iter().enumerate() {
            if !config.kafka.create_topics {
                let pq = collections
                    .values()
                    .any(|c| c.topic == index && c.codebook.is_some());
                let names = [name.as_str(), codebook.as_str()];
                cluster
                    .verify_topics(&names[..if pq { 2 } else { 1 }])
                    .await?;
            }
            let partitions = kafka::partition_count(
                &producer,
                &fatal,
                &cluster,
                &name,
                vecsync_kafka::ADMIN_TIMEOUT,
            )
            .await?;
            if partitions != config.kafka.partitions {
                tracing::warn!(
                    topic = name,
                    partitions,
                    configured = config.kafka.partitions,
                    "the delta topic's partition count differs from kafka.partitions; \
                     every region's topic needs the same count to co-partition"
                );
            }
            topics.push(DeltaTopic {
                name,
                codebook,
                partitions,
            });
        }
        let registry = Arc::new(RegistryClient::from_config(&config.registry)?);
        registry.check().await?;
        let encoder = Encoder::register(&registry, &value_subject(&config.kafka.topic)).await?;
        let codebook_encoder = if collections.values().any(|c| c.codebook.is_some()) {
            Some(Encoder::register(&registry, &value_subject(&config.kafka.codebook_topic)).await?)
        } else {
            None
        };
        // The local topics get their subjects too, as the registry's
        // topic-name strategy has every topic's: the same schemas, so the
        // same ids as the encoders'.
        for topic in topics.iter().filter(|t| t.name != config.kafka.topic) {
            registry
                .register(&value_subject(&topic.name), DeltaEvent::SCHEMA)
                .await?;
            if codebook_encoder.is_some() {
                registry
                    .register(&value_subject(&topic.codebook), PqCodebook::SCHEMA)
                    .await?;
            }
        }
        let p = &config.producer;
        let rate = p
            .rate_limit_events_per_sec
            .map(|rate| TokenBucket::new(rate, p.rate_limit_burst.unwrap_or(rate)));
        let inner = Arc::new(Inner {
            region: config.region.clone(),
            topics,
            cluster,
            producer,
            fatal,
            registry,
            clock: HybridClock::new(config.region.clone(), SystemClock, p.max_clock_ahead_ms),
            encoder,
            codebook_encoder,
            collections,
            order: Mutex::new(()),
            rate,
            payload_lz4_threshold_bytes: p.payload_lz4_threshold_bytes,
            heartbeat_interval_ms: p.heartbeat_interval_ms,
        });
        let heartbeats = tokio::spawn(Arc::clone(&inner).heartbeat_loop());
        tracing::info!(
            region = inner.region,
            topics = ?inner.topics,
            "publisher connected"
        );
        Ok(Self { inner, heartbeats })
    }

    /// Publishes a batch of mutations of one collection and returns the
    /// version (HLC timestamp) each point was given, in order.
    ///
    /// Returns only once the broker has acknowledged every event. Invalid
    /// mutations fail the batch before anything is sent. Waits while the
    /// local queue is full or the rate limit is reached; never drops.
    pub async fn publish(
        &self,
        collection: &str,
        mutations: &[Mutation],
    ) -> Result<Vec<Hlc>, ProducerError> {
        Ok(self
            .submit(collection, mutations)
            .await?
            .acknowledged()
            .await?
            .versions)
    }

    /// The first half of [`Publisher::publish`]: validates, stamps and
    /// queues the batch, and returns once it is queued. Batches are stamped
    /// in the order they are submitted, so a caller can keep several in
    /// flight and still have a later batch's changes win; awaiting
    /// [`Pending::acknowledged`] tells whether the broker took them.
    pub async fn submit(
        &self,
        collection: &str,
        mutations: &[Mutation],
    ) -> Result<Pending, ProducerError> {
        self.submit_run(collection, mutations, Run::New).await
    }

    /// [`Publisher::submit`], with the batch's versions given as `run` says.
    pub async fn submit_run(
        &self,
        collection: &str,
        mutations: &[Mutation],
        run: Run<'_>,
    ) -> Result<Pending, ProducerError> {
        let inner = &self.inner;
        let c = inner.collections.get(collection).ok_or_else(|| {
            Rejected {
                reason: "unknown_collection",
            }
            .emit();
            ProducerError::UnknownCollection(collection.to_owned())
        })?;
        let mut outgoing = Vec::with_capacity(mutations.len());
        let mut op_counts = [
            (Operation::Upsert, 0),
            (Operation::Delete, 0),
            (Operation::PayloadPatch, 0),
        ];
        for (index, m) in mutations.iter().enumerate() {
            if m.payload().is_some_and(|p| p.contains_key(RESERVED_KEY)) {
                Rejected {
                    reason: "reserved_key",
                }
                .emit();
                return Err(ProducerError::ReservedKey {
                    index,
                    id: m.id().to_string(),
                    key: RESERVED_KEY,
                });
            }
            let body = inner.body(collection, c, m).map_err(|reason| {
                Rejected { reason: "invalid" }.emit();
                ProducerError::Invalid {
                    index,
                    id: m.id().to_string(),
                    reason,
                }
            })?;
            if let Mutation::PatchPayload { base_version, .. } = m {
                // A patch orders after the version it builds on, whichever
                // clock stamped that one.
                inner.clock.observe(base_version).map_err(|e| {
                    Rejected { reason: "invalid" }.emit();
                    ProducerError::Invalid {
                        index,
                        id: m.id().to_string(),
                        reason: format!("base_version: {e}"),
                    }
                })?;
            }
            let slot = match m {
                Mutation::Upsert { .. } => 0,
                Mutation::Delete { .. } => 1,
                Mutation::PatchPayload { .. } => 2,
            };
            op_counts[slot].1 += 1;
            outgoing.push(Outgoing {
                key: m.id().key(),
                partition: None,
                body,
            });
        }
        if !outgoing.is_empty() {
            if let Some(cb) = &c.codebook {
                cb.published
                    .get_or_try_init(|| inner.publish_codebook(&cb.book, &inner.topics[c.topic]))
                    .await?;
            }
            if let Some(rate) = &inner.rate {
                rate.acquire(u32::try_from(outgoing.len()).unwrap_or(u32::MAX))
                    .await;
            }
        }
        let started = Instant::now();
        let (versions, bytes, deliveries) = inner
            .enqueue(&inner.topics[c.topic].name, outgoing, run)
            .await?;
        Ok(Pending {
            collection: collection.to_owned(),
            op_counts,
            versions,
            bytes,
            deliveries,
            fatal: inner.fatal.clone(),
            started,
        })
    }

    /// The region this publisher stamps its events with.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// Partitions of the delta topic, as the broker reported them.
    pub fn partitions(&self) -> u32 {
        self.inner.topics[0].partitions
    }

    /// The dimension and encoding of a configured collection.
    pub fn collection(&self, name: &str) -> Option<(usize, Encoding)> {
        self.inner
            .collections
            .get(name)
            .map(|c| (c.dimension, c.encoding))
    }

    /// Checks that the broker answers (metadata of the delta topic) and the
    /// registry answers (its subject list), for readiness probes: each
    /// within `timeout`.
    pub async fn check_ready(&self, timeout: Duration) -> Result<(), String> {
        let inner = &self.inner;
        kafka::partition_count(
            &inner.producer,
            &inner.fatal,
            &inner.cluster,
            &inner.topics[0].name,
            timeout,
        )
        .await
        .map_err(|e| format!("broker: {e}"))?;
        match tokio::time::timeout(timeout, self.inner.registry.subjects()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("registry: {e}")),
            Err(_) => Err(format!("registry: no answer within {timeout:?}")),
        }
    }

    /// Stops the heartbeats and waits up to `timeout` for queued events to
    /// be acknowledged.
    pub async fn close(self, timeout: Duration) -> Result<(), ProducerError> {
        self.heartbeats.abort();
        let producer = self.inner.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
            .map_err(|e| {
                self.inner
                    .cluster
                    .error("failed to flush queued events", e)
                    .into()
            })
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.heartbeats.abort();
    }
}

/// A batch that is queued for the broker; see [`Publisher::submit`].
#[must_use = "a batch is published only once it is acknowledged"]
pub struct Pending {
    collection: String,
    op_counts: [(Operation, u64); 3],
    versions: Vec<Hlc>,
    bytes: u64,
    deliveries: Vec<DeliveryFuture>,
    /// The producer's fatal errors, which explain failed deliveries.
    fatal: Fatal,
    started: Instant,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("collection", &self.collection)
            .field("events", &self.versions.len())
            .finish_non_exhaustive()
    }
}

/// A batch the broker acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// The version of each point, in the order of the batch.
    pub versions: Vec<Hlc>,
    /// Bytes of the framed events.
    pub bytes: u64,
}

impl Pending {
    /// The versions the batch's points will have once acknowledged.
    pub fn versions(&self) -> &[Hlc] {
        &self.versions
    }

    /// Waits until the broker has acknowledged every event of the batch.
    pub async fn acknowledged(self) -> Result<Published, ProducerError> {
        await_deliveries(self.deliveries, &self.fatal).await?;
        BatchSent {
            collection: &self.collection,
            op_counts: self.op_counts,
            bytes: self.bytes,
            elapsed: self.started.elapsed(),
        }
        .emit();
        Ok(Published {
            versions: self.versions,
            bytes: self.bytes,
        })
    }
}

impl Inner {
    /// Validates one mutation against its collection and encodes it.
    fn body(&self, collection: &str, c: &Collection, m: &Mutation) -> Result<Body, String> {
        let codec = match &c.codebook {
            Some(cb) => VectorCodec::Pq(&cb.book),
            None => VectorCodec::Plain(c.encoding),
        };
        m.to_body(
            collection,
            c.dimension,
            codec,
            self.payload_lz4_threshold_bytes,
        )
    }

    /// Stamps, frames and queues events in order. Waits while the local
    /// queue is full. Returns the stamps, the bytes queued and a delivery
    /// future per event.
    async fn enqueue(
        &self,
        topic: &str,
        outgoing: Vec<Outgoing>,
        run: Run<'_>,
    ) -> Result<(Vec<Hlc>, u64, Vec<DeliveryFuture>), ProducerError> {
        let mut deliveries = Vec::with_capacity(outgoing.len());
        let mut bytes = 0u64;
        let mut buf = Vec::with_capacity(1024);
        let n = u32::try_from(outgoing.len()).unwrap_or(u32::MAX);
        let _order = self.order.lock().await;
        let (first, recorder) = match run {
            Run::New => (self.clock.reserve(n)?, None),
            Run::Recorded(recorder) => (self.clock.reserve(n)?, Some(recorder)),
            Run::Again { first, events } => {
                if events != outgoing.len() {
                    return Err(bad_run(format!(
                        "the batch sent again has {} events; the run recorded for it from \
                         {first} has {events}",
                        outgoing.len()
                    )));
                }
                (first, None)
            }
        };
        let stamps: Vec<Hlc> = (0..n)
            .map(|i| first.nth(i))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                bad_run(format!(
                    "a run of {n} versions from {first} passes the end of its tick"
                ))
            })?;
        if let Some(recorder) = recorder {
            recorder(&first, stamps.len()).map_err(ProducerError::Record)?;
        }
        // Later runs order after this one (a new run's is behind the clock
        // already; one sent again may not be).
        if let Some(last) = stamps.last() {
            self.clock.observe(last)?;
        }
        for (
            Outgoing {
                key,
                partition,
                body,
            },
            hlc,
        ) in outgoing.into_iter().zip(&stamps)
        {
            let event = DeltaEvent {
                hlc: hlc.clone(),
                body,
            };
            buf.clear();
            self.encoder.encode_into(&event, &mut buf);
            bytes += buf.len() as u64;
            // The record's timestamp is the event's: a region seeded from
            // a snapshot finds where to read from by time (offsetsForTimes).
            let mut record = FutureRecord::to(topic)
                .key(&key)
                .payload(&buf)
                .timestamp(hlc.wall_ms as i64);
            if let Some(p) = partition {
                record = record.partition(p);
            }
            deliveries.push(self.send(record).await?);
        }
        Ok((stamps, bytes, deliveries))
    }

    /// Queues one record, waiting while the queue is full.
    async fn send(
        &self,
        mut record: FutureRecord<'_, String, Vec<u8>>,
    ) -> Result<DeliveryFuture, ProducerError> {
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    QueueFull.emit();
                    record = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, record)) => {
                    SendFailed {
                        failed: 1,
                        reason: error_label(&e),
                    }
                    .emit(&e);
                    return Err(self
                        .cluster
                        .error(&format!("failed to queue an event for {}", record.topic), e)
                        .into());
                }
            }
        }
    }

    /// Writes a codebook to the codebook topic of `topic`, keyed by its id,
    /// and waits for the acknowledgement.
    async fn publish_codebook(
        &self,
        book: &PqCodebook,
        topic: &DeltaTopic,
    ) -> Result<(), ProducerError> {
        let Some(encoder) = &self.codebook_encoder else {
            unreachable!("an encoder is registered whenever a collection has a codebook")
        };
        let bytes = encoder.encode(book);
        let key = book.id().to_owned();
        let record = FutureRecord::to(&topic.codebook).key(&key).payload(&bytes);
        let delivery = self.send(record).await?;
        await_deliveries(vec![delivery], &self.fatal).await?;
        CodebookPublished { id: book.id() }.emit();
        Ok(())
    }

    /// Sends a heartbeat to every partition each interval, so consumers'
    /// watermarks move when no mutations arrive, and reports the queue depth.
    async fn heartbeat_loop(self: Arc<Self>) {
        let interval = Duration::from_millis(u64::from(self.heartbeat_interval_ms));
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            QueueDepth {
                messages: self.producer.in_flight_count(),
            }
            .emit();
            for topic in &self.topics {
                let outgoing = (0..topic.partitions as i32)
                    .map(|p| Outgoing {
                        key: format!("__heartbeat.{}.{p}", self.region),
                        partition: Some(p),
                        body: Body::Heartbeat(Heartbeat {
                            interval_ms: self.heartbeat_interval_ms,
                        }),
                    })
                    .collect();
                let sent = match self.enqueue(&topic.name, outgoing, Run::New).await {
                    Ok((_, _, deliveries)) => await_deliveries(deliveries, &self.fatal).await,
                    Err(e) => Err(e),
                };
                match sent {
                    Ok(()) => HeartbeatsSent {
                        partitions: topic.partitions,
                    }
                    .emit(),
                    Err(e) => tracing::warn!(topic = topic.name, "heartbeat failed: {e}"),
                }
            }
        }
    }
}

/// A recorded run that cannot be sent again as it stands.
fn bad_run(reason: String) -> ProducerError {
    ProducerError::Record(std::io::Error::new(std::io::ErrorKind::InvalidData, reason))
}

/// Waits for every delivery report; fails if any event was not
/// acknowledged, with the producer's fatal error when it met one (the
/// deliveries then timed out for that reason).
async fn await_deliveries(
    deliveries: Vec<DeliveryFuture>,
    fatal: &Fatal,
) -> Result<(), ProducerError> {
    let total = deliveries.len();
    let mut failed = 0;
    let mut first = None;
    for d in deliveries {
        let error = match d.await {
            Ok(Ok(_)) => continue,
            Ok(Err((e, _))) => e,
            // The producer went away with the event still queued.
            Err(_) => KafkaError::Canceled,
        };
        failed += 1;
        first.get_or_insert(error);
    }
    match first {
        None => Ok(()),
        Some(first) => {
            SendFailed {
                failed,
                reason: error_label(&first),
            }
            .emit(&first);
            Err(match fatal.get() {
                Some(fatal) => ProducerError::Fatal(fatal),
                None => ProducerError::Delivery {
                    failed,
                    total,
                    first,
                },
            })
        }
    }
}

/// Reads a codebook file (the Avro body `vecsync produce train-codebook`
/// writes) and checks it fits the collection.
pub fn load_codebook(
    path: &Path,
    collection: &str,
    dimension: usize,
) -> Result<PqCodebook, ProducerError> {
    let err = |reason: String| ProducerError::Codebook {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let book = PqCodebook::read_avro(&bytes).map_err(|e| err(e.to_string()))?;
    if book.collection() != collection || book.dim() != dimension {
        return Err(err(format!(
            "it is for collection {} with {} dimensions, not {collection} with {dimension}",
            book.collection(),
            book.dim()
        )));
    }
    Ok(book)
}
