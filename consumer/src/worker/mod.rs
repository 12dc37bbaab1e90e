//! A consumer worker: reads the region's sources, merges them in HLC order,
//! applies batches to the store, flushes, and only then commits offsets.
//!
//! ```text
//! source consumers ──► decode ──► reorder buffer ──► batch ──► applier ──► flush ──► commit
//!                         │ bad bytes                           │ dead letters
//!                         └──────────────► dead-letter topic ◄──┘
//! ```
//!
//! An applied event is searchable at once. The store is flushed in the
//! background, at most every `flush_interval_ms`, while batches go on being
//! applied; a flush makes durable what was applied before it started.
//! A record's offset is committed only once the record is durably done
//! with: applied and flushed, written to the dead-letter topic, or a
//! heartbeat. A crash at any moment replays from the last commit; applying
//! again is harmless. A registry or store outage is not a dead letter: the
//! worker waits and retries, committing nothing it has not applied.
//!
//! - [`replay`]: the loop and its state;
//! - [`batches`]: applying what the reorder buffer releases;
//! - [`flush`]: the background flush, and the commits it allows;
//! - [`sources`]: the sources' Kafka consumers and partition assignment;
//! - [`codebooks`]: reading the sources' PQ codebooks;
//! - [`dead_letters`]: the dead-letter topic;
//! - [`expiry`]: clearing what is older than the tombstone horizon.

use crate::applier::Applier;
use crate::freshness::{Progress, Watermarks};
use crate::metrics::{
    BatchApplied, DeadLettered, DeltasDropped, EventSkipped, EventsWaited, Flushed, ReadThrottled,
    RecordsLost, ReorderState, Waited,
};
use crate::metrics::{ReplicationLag, WatermarkState};
use crate::offsets::{Offsets, Partition};
use crate::ready::Readiness;
use crate::reorder::{Bounds, ReorderBuffer};
use crate::store::{Expired, NeverApplied, Pass, SCAN_PAGE, Store, StoreError};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use vecsync_kafka::rate::TokenBucket;
use vecsync_kafka::{Cluster, Topic, Watch};
use vecsync_schemas::config::{Assignment, CollectionConfig, RegionConfig, SourceConfig};
use vecsync_schemas::event::DeltaEvent;
use vecsync_schemas::hlc::{Hlc, SystemClock, WallClock};
use vecsync_schemas::registry::RegistryClient;
use vecsync_schemas::vector::PqCodebook;
use vecsync_schemas::wire::Decoder;

mod batches;
mod codebooks;
mod dead_letters;
mod expiry;
mod flush;
mod replay;
mod sources;

use batches::*;
use codebooks::*;
use dead_letters::*;
use expiry::*;
use flush::*;
use replay::*;
pub use sources::short_retention;
use sources::*;

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("kafka: {what}: {source}")]
    Kafka {
        what: String,
        source: rdkafka::error::KafkaError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("schema registry: {0}")]
    Registry(#[from] vecsync_schemas::registry::RegistryError),
    /// Asked to stop while waiting out an outage; what was not committed
    /// is replayed by the next start.
    #[error("stopped while the {0} was unavailable; uncommitted events will be replayed")]
    Interrupted(&'static str),
    #[error("consumer.assignment = \"group\" needs tokio's multi-threaded runtime")]
    NeedsMultiThread,
    /// A Kafka client could not be made from the config, or a cluster
    /// refused the credentials, the certificate or a permission
    /// ([`vecsync_kafka::ClientError::Fatal`]): an operator must act.
    #[error(transparent)]
    Client(#[from] vecsync_kafka::ClientError),
}

/// Whether the worker has been asked to stop, for the loops that wait out
/// an outage.
#[derive(Debug, Clone)]
struct Stopping(watch::Receiver<bool>);

impl Stopping {
    /// Resolves once a stop is asked for (never, when nobody can ask).
    async fn asked(&mut self) {
        if self.0.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Waits `delay` before another try at `what`, or gives up when a stop
    /// is asked for first.
    async fn backoff(&mut self, delay: Duration, what: &'static str) -> Result<(), WorkerError> {
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.asked() => Err(WorkerError::Interrupted(what)),
        }
    }
}

/// The source tasks of a worker, stopped with it: their consumers then
/// close and leave the group.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Tasks {
    /// Stops the tasks and waits (a few seconds at most) until they are
    /// gone, with what they hold: the store, the consumers.
    async fn stop(mut self) {
        let tasks = std::mem::take(&mut self.0);
        tasks.iter().for_each(tokio::task::JoinHandle::abort);
        let gone = async {
            for task in tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), gone)
            .await
            .is_err()
        {
            tracing::warn!("the worker's source tasks took over 5 s to stop");
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Backoff between tries while the store or the registry is unavailable.
fn next_delay(delay: Duration) -> Duration {
    (delay * 2).min(Duration::from_secs(10))
}

fn kafka(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> WorkerError {
    let what = what.into();
    move |source| WorkerError::Kafka { what, source }
}

/// What a worker has done, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    pub applied: u64,
    pub unchanged: u64,
    pub parked: u64,
    pub dead_letters: u64,
    /// Events of collections the region does not replicate from their
    /// source (`collections`, `exclude_collections`).
    pub skipped: u64,
    pub batches: u64,
    /// Group rebalances that took partitions away (each drained first).
    pub revocations: u64,
    /// What the reorder buffer did out of strict order: released when full,
    /// late arrivals, sources declared idle.
    pub reorder: crate::reorder::Counters,
}

/// One event on its way from a source to the store, with its record's key
/// and bytes for the dead-letter topic.
#[derive(Debug)]
struct Held {
    raw: Raw,
    event: DeltaEvent,
}

/// Where an event came from, and its record as read (for a dead letter).
#[derive(Debug)]
struct Raw {
    partition: Partition,
    offset: i64,
    key: Option<Vec<u8>>,
    bytes: Vec<u8>,
    /// When the worker read it.
    read_at: Instant,
    /// When the reorder buffer released it.
    released_at: Instant,
}

impl Held {
    /// About what it takes in memory: the record as read, and the event
    /// decoded from it, which holds about as much again.
    fn size(&self) -> usize {
        2 * self.raw.bytes.len() + self.raw.key.as_ref().map_or(0, Vec::len) + 64
    }
}

/// Runs a worker of `config`'s region over `store` until `shutdown`
/// resolves, then drains what it holds within the drain timeout and commits.
/// Publishes the applied watermark of every origin to `watermarks`.
pub async fn run(
    config: &RegionConfig,
    store: Arc<dyn Store>,
    watermarks: Watermarks,
    readiness: Readiness,
    shutdown: impl Future<Output = ()>,
) -> Result<Stats, WorkerError> {
    crate::metrics::init_dead_letter_counters();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let forward_stop = async move {
        tokio::select! {
            () = shutdown => { let _ = stop_tx.send(true); }
            _ = done_rx => {}
        }
    };
    let work = async move {
        let result = work(config, store, watermarks, readiness, Stopping(stop_rx)).await;
        let _ = done_tx.send(());
        result
    };
    tokio::join!(forward_stop, work).1
}

/// Creates or checks the configured collections, waiting for a store that
/// is not reachable yet.
async fn ensure_collections(
    store: &Arc<dyn Store>,
    collections: &HashMap<String, CollectionConfig>,
    stopping: &mut Stopping,
) -> Result<(), WorkerError> {
    let shapes: Vec<_> = collections
        .iter()
        .map(|(n, c)| (n.clone(), c.dimension as usize, c.distance))
        .collect();
    let mut delay = Duration::from_millis(100);
    loop {
        let (store, shapes) = (store.clone(), shapes.clone());
        let result = off_loop(move || {
            shapes
                .iter()
                .try_for_each(|(n, d, dist)| store.ensure_collection(n, *d, *dist))
        })
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e @ StoreError::Engine { .. }) => {
                tracing::warn!("store unavailable, retrying in {delay:?}: {e}");
                stopping.backoff(delay, "store").await?;
                delay = next_delay(delay);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn work(
    config: &RegionConfig,
    store: Arc<dyn Store>,
    watermarks: Watermarks,
    readiness: Readiness,
    mut stopping: Stopping,
) -> Result<Stats, WorkerError> {
    if config.consumer.assignment == Assignment::Group
        && tokio::runtime::Handle::current().runtime_flavor()
            != tokio::runtime::RuntimeFlavor::MultiThread
    {
        return Err(WorkerError::NeedsMultiThread);
    }
    let collections: HashMap<String, _> = config.collections.clone().into_iter().collect();
    ensure_collections(&store, &collections, &mut stopping).await?;
    let registry = Arc::new(RegistryClient::from_config(&config.registry)?);
    // Wrong registry credentials stop the worker now, not at its first
    // event; an unreachable registry is waited for when events need it.
    if let Err(e) = registry.check().await
        && e.is_refused()
    {
        return Err(e.into());
    }
    let decoder = Decoder::<DeltaEvent>::new(registry.clone());
    let sources = config.sources();
    readiness.start(sources.iter().map(|s| s.topic.clone()).collect());
    let dead_letters = DeadLetters::new(config).await?;

    let (tx, rx) = mpsc::channel(4096);
    let (books_tx, books_rx) = mpsc::channel(64);
    let mut consumers = Vec::new();
    let mut tasks = Tasks(Vec::new());
    let mut verified: Vec<Cluster> = Vec::new();
    for (index, source) in sources.iter().enumerate() {
        // Refused credentials stop the worker here, not after a retry loop;
        // once per cluster, however many sources it carries.
        let cluster = Cluster::of_source(config, source);
        if !verified.contains(&cluster) {
            cluster.verify().await?;
            verified.push(cluster.clone());
        }
        warn_on_short_retention(
            cluster.clone(),
            source.topic.clone(),
            config.consumer.tombstone_horizon_ms,
        );
        let context = SourceContext {
            index,
            tx: tx.clone(),
            rewind: config.consumer.resume_rewind_records,
            drain_timeout: Duration::from_millis(config.consumer.drain_timeout_ms),
            readiness: readiness.clone(),
            watch: Watch::new(&cluster),
        };
        let consumer = Arc::new(source_consumer(config, source, context)?);
        consumers.push(consumer.clone());
        let assign = (config.consumer.assignment == Assignment::Static).then(|| {
            (
                source.topic.clone(),
                config.consumer.worker_index,
                config.consumer.worker_count,
                config.consumer.resume_rewind_records,
            )
        });
        tasks.0.push(tokio::spawn(forward(
            index,
            consumer,
            assign,
            tx.clone(),
            readiness.clone(),
            source.max_read_bytes_per_sec.map(|cap| {
                ReadThrottled {
                    topic: &source.topic,
                }
                .start();
                TokenBucket::new(cap, cap)
            }),
        )));
        let books = codebook_consumer(config, source)?;
        tasks.0.push(tokio::spawn(read_codebooks(
            books,
            source.codebook_topic.clone(),
            registry.clone(),
            books_tx.clone(),
        )));
    }
    drop(tx);
    tasks.0.push(tokio::spawn(probe(
        store.clone(),
        registry.clone(),
        readiness.clone(),
    )));
    let sink = Sink {
        store,
        collections: Arc::new(collections),
        dead_letters,
        sources: sources.clone(),
        region: config.region.clone(),
        consumers,
        flush_interval: Duration::from_millis(config.consumer.flush_interval_ms),
        flush_interval_behind: Duration::from_millis(config.consumer.flush_interval_behind_ms),
        batch_max_events: config.consumer.batch_max_events.max(1),
    };
    tracing::info!(
        region = config.region,
        group = config.group_id(),
        sources = ?sources.iter().map(|s| format!("{}@{}", s.topic, s.brokers.as_deref().unwrap_or(""))).collect::<Vec<_>>(),
        "worker started"
    );
    let replay = Replay::new(config, sink, decoder, watermarks, stopping);
    let stats = replay.run(rx, books_rx).await;
    tasks.stop().await;
    let stats = stats?;
    tracing::info!(?stats, "worker stopped");
    Ok(stats)
}

/// A worker running in the background, for embedding and tests.
#[derive(Debug)]
pub struct RunningWorker {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<Stats, WorkerError>>,
    watermarks: Watermarks,
    readiness: Readiness,
}

impl RunningWorker {
    /// The applied watermarks the worker publishes.
    pub fn watermarks(&self) -> &Watermarks {
        &self.watermarks
    }

    /// Whether the worker is ready (what `/readyz` answers).
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Whether the worker has ended on its own (a fatal error: [`stop`]
    /// returns it).
    ///
    /// [`stop`]: RunningWorker::stop
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Asks the worker to drain and commit, and waits for it.
    pub async fn stop(self) -> Result<Stats, WorkerError> {
        let _ = self.stop.send(());
        self.task
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

/// Starts [`run`] on a tokio task.
pub fn spawn(config: RegionConfig, store: Arc<dyn Store>) -> RunningWorker {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watermarks = Watermarks::new();
    let readiness = Readiness::new();
    let (published, ready) = (watermarks.clone(), readiness.clone());
    let task = tokio::spawn(async move {
        run(&config, store, published, ready, async {
            let _ = stopped.await;
        })
        .await
    });
    RunningWorker {
        stop,
        task,
        watermarks,
        readiness,
    }
}

/// Runs `f` on the blocking pool, off the worker's loop; a panic there
/// goes on here.
async fn off_loop<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// How often the store and the registry are probed for readiness.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Probes the store and the schema registry for `/readyz`, for as long as
/// the worker runs.
async fn probe(store: Arc<dyn Store>, registry: Arc<RegistryClient>, readiness: Readiness) {
    loop {
        let pinged = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.ping()).await
        };
        readiness.store(match pinged {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        });
        readiness.registry(
            registry
                .subjects()
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        );
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}
