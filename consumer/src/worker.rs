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

use crate::applier::Applier;
use crate::freshness::{Progress, Watermarks};
use crate::metrics::{
    BatchApplied, DeadLettered, DeltasDropped, Flushed, RecordsLost, ReorderState,
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
use vecsync_kafka::{Cluster, Topic, Watch};
use vecsync_schemas::config::{Assignment, CollectionConfig, RegionConfig, SourceConfig};
use vecsync_schemas::event::DeltaEvent;
use vecsync_schemas::hlc::{Hlc, SystemClock, WallClock};
use vecsync_schemas::registry::RegistryClient;
use vecsync_schemas::vector::PqCodebook;
use vecsync_schemas::wire::Decoder;

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

/// The PQ codebooks received, by id; shared with the batch being applied
/// on the blocking pool, and copied only when one arrives meanwhile.
type Codebooks = Arc<HashMap<String, PqCodebook>>;

/// Where an event came from, and its record as read (for a dead letter).
#[derive(Debug)]
struct Raw {
    partition: Partition,
    offset: i64,
    key: Option<Vec<u8>>,
    bytes: Vec<u8>,
}

impl Held {
    /// About what it takes in memory: the record as read, and the event
    /// decoded from it, which holds about as much again.
    fn size(&self) -> usize {
        2 * self.raw.bytes.len() + self.raw.key.as_ref().map_or(0, Vec::len) + 64
    }

    fn split(self) -> (DeltaEvent, Raw) {
        (self.event, self.raw)
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

    let (tx, mut rx) = mpsc::channel(4096);
    let (books_tx, mut books_rx) = mpsc::channel(64);
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

    let c = &config.consumer;
    let mut reorder: ReorderBuffer<Partition, Held> = ReorderBuffer::new(Bounds {
        max_events: c.reorder_max_events,
        max_bytes: c.reorder_max_bytes,
        idle_after_ms: c.idle_after_ms,
    });
    // Until a source's partitions are assigned, the source as a whole holds
    // the watermark: its first events may be older than any other's.
    for (index, source) in sources.iter().enumerate() {
        reorder.add_source(unassigned(index, &source.topic), SystemClock.now_ms());
    }
    let mut tracking = Tracking {
        offsets: Offsets::new(),
        progress: Progress::new(),
        unflushed: Vec::new(),
        flushing: None,
        flushed_at: Instant::now(),
        behind: false,
    };
    let mut codebooks: Codebooks = Arc::default();
    let mut pending: Vec<Held> = Vec::new();
    let mut stats = Stats::default();
    let batch_wait = Duration::from_millis(c.batch_max_wait_ms.max(1));
    let mut ticker = tokio::time::interval(batch_wait);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_batch = Instant::now();
    let expiry_interval = Duration::from_millis(c.expiry_interval_ms);
    let mut last_expiry = Instant::now();
    let mut expiry: Option<ExpiryRound> = None;
    let mut reported = crate::reorder::Counters::default();
    loop {
        tokio::select! {
            biased;
            () = stopping.asked() => break,
            Some(book) = books_rx.recv() => {
                let book: PqCodebook = book;
                tracing::info!(codebook = book.id(), "codebook received");
                Arc::make_mut(&mut codebooks).insert(book.id().to_owned(), book);
            }
            message = rx.recv() => {
                let Some((index, incoming)) = message else { break };
                let (partition, offset, bytes, key) = match incoming {
                    Incoming::Record(record) => record,
                    Incoming::Resume(partition, committed) => {
                        tracking.offsets.resume(&partition, committed);
                        // An assigned partition holds the watermark back from
                        // the start, until it speaks or is declared idle: a
                        // quiet origin must not let others' events pass it.
                        reorder.remove_source(&unassigned(partition.0, &partition.1));
                        watermarks.cover(&partition.1, partition.2);
                        reorder.add_source(partition, SystemClock.now_ms());
                        continue;
                    }
                    Incoming::Fatal(why) => {
                        return Err(vecsync_kafka::ClientError::Fatal(why).into());
                    }
                    Incoming::Revoke(partitions, done) => {
                        sink.drain(&mut reorder, &codebooks, &mut pending, &mut tracking, &mut stats, &mut stopping)
                            .await?;
                        // What still waits for a codebook is the next owner's.
                        pending.retain(|h| !partitions.contains(&h.raw.partition));
                        for p in &partitions {
                            tracking.offsets.forget(p);
                            tracking.progress.forget(p);
                            reorder.remove_source(p);
                            watermarks.uncover(&p.1, p.2);
                        }
                        stats.revocations += 1;
                        let _ = done.send(());
                        continue;
                    }
                };
                tracking.offsets.received(&partition, offset);
                let event = loop {
                    match decoder.decode(&bytes).await {
                        Ok(event) => break Some(event),
                        Err(ref e) if let Some(refused) = e.refused() => return Err(refused.clone().into()),
                        Err(e) if e.is_retriable() => {
                            tracing::warn!("registry unavailable, retrying in 1s: {e}");
                            stopping.backoff(Duration::from_secs(1), "schema registry").await?;
                        }
                        Err(e) => {
                            let reason = e.reason_label();
                            sink.dead_letters.send(&sources[index], &partition, offset, key.as_deref(), &bytes, reason, &e.to_string()).await?;
                            stats.dead_letters += 1;
                            tracking.offsets.done(&partition, offset);
                            break None;
                        }
                    }
                };
                let Some(event) = event else { continue };
                let now = SystemClock.now_ms();
                let origin = &sources[index].region;
                if event.target().is_none() {
                    tracking.offsets.done(&partition, offset);
                    tracking.progress.seen(&partition, origin, &event.hlc);
                    pending.extend(reorder.heartbeat(partition, event.hlc, now).into_iter().map(|(_, h)| h));
                } else {
                    let hlc: Hlc = event.hlc.clone();
                    tracking.progress.held(&partition, origin, &hlc);
                    let raw = Raw { partition: partition.clone(), offset, key, bytes };
                    let held = Held { raw, event };
                    let size = held.size();
                    pending.extend(reorder.push_sized(partition, hlc, held, size, now).into_iter().map(|(_, h)| h));
                }
            }
            _ = ticker.tick() => {
                if sink.flush_step(&mut tracking).await {
                    commit(&sink.consumers, &mut tracking.offsets, CommitMode::Async)?;
                }
                pending.extend(reorder.tick(SystemClock.now_ms()).into_iter().map(|(_, h)| h));
                let marks = tracking.progress.watermarks();
                WatermarkState { region: &config.region, marks: &marks, now_ms: SystemClock.now_ms() }.emit();
                watermarks.publish(marks);
                if expiry.is_none() && last_expiry.elapsed() >= expiry_interval {
                    let horizon = SystemClock.now_ms().saturating_sub(c.tombstone_horizon_ms);
                    expiry = Some(ExpiryRound::new(horizon, sink.collections.keys()));
                }
                if let Some(round) = &mut expiry && sink.expire_step(round).await {
                    expiry = None;
                    last_expiry = Instant::now();
                }
            }
        }
        let due = pending.len() >= c.batch_max_events || last_batch.elapsed() >= batch_wait;
        if due && !pending.is_empty() {
            sink.apply_and_commit(
                &codebooks,
                &mut pending,
                &mut tracking,
                &mut stats,
                CommitMode::Async,
                &mut stopping,
            )
            .await?;
            watermarks.publish(tracking.progress.watermarks());
            last_batch = Instant::now();
            let counters = reorder.counters();
            ReorderState {
                buffered: reorder.len(),
                buffered_bytes: reorder.bytes(),
                uncommitted: tracking.offsets.held(),
                counters,
                before: reported,
            }
            .emit();
            reported = counters;
        }
    }

    // Drain: everything the buffer holds goes to the store, then a
    // synchronous commit, all within the drain timeout.
    let drain = async {
        // The stop was asked already: the drain timeout bounds the retries.
        let mut draining = Stopping(watch::channel(false).1);
        sink.drain(
            &mut reorder,
            &codebooks,
            &mut pending,
            &mut tracking,
            &mut stats,
            &mut draining,
        )
        .await
    };
    match tokio::time::timeout(Duration::from_millis(c.drain_timeout_ms), drain).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!("drain timed out; what was not committed will be replayed"),
    }
    stats.reorder = reorder.counters();
    tasks.stop().await;
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

/// What the loop knows of each partition: offsets to commit, and how far
/// each origin is applied.
struct Tracking {
    offsets: Offsets,
    progress: Progress,
    /// Records applied (searchable) but not yet flushed: done, and so
    /// committable, after a flush that starts after them.
    unflushed: Vec<(Partition, i64)>,
    /// The flush under way, in the background while batches go on being
    /// applied, with the records it makes durable.
    flushing: Option<(Flush, Vec<(Partition, i64)>)>,
    /// When the last flush started.
    flushed_at: Instant,
    /// Whether the last batches came full: the worker is behind, and
    /// flushes at `flush_interval_behind`.
    behind: bool,
}

/// An expiry pass over every collection, a page per step.
struct ExpiryRound {
    horizon: Hlc,
    /// Collections still to do, the first under way: where its pass has
    /// come to and what it expired so far.
    todo: VecDeque<(String, Pass, Expired)>,
}

impl ExpiryRound {
    fn new<'a>(horizon_ms: u64, collections: impl Iterator<Item = &'a String>) -> Self {
        Self {
            horizon: Hlc::new(horizon_ms, 0, ""),
            todo: collections
                .map(|name| (name.clone(), Pass::default(), Expired::default()))
                .collect(),
        }
    }
}

/// Runs `f` on the blocking pool, off the worker's loop; a panic there
/// goes on here.
async fn off_loop<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// A store flush running on the blocking pool; how long it took.
type Flush = tokio::task::JoinHandle<Result<Duration, StoreError>>;

/// Where batches go: the store, the dead-letter topic, and the commits.
struct Sink {
    store: Arc<dyn Store>,
    collections: Arc<HashMap<String, CollectionConfig>>,
    dead_letters: DeadLetters,
    sources: Vec<SourceConfig>,
    region: String,
    consumers: Vec<Arc<SourceConsumer>>,
    /// Longest an applied record waits for the flush that lets it commit.
    flush_interval: Duration,
    /// The same while the worker is behind.
    flush_interval_behind: Duration,
    /// Events per store batch, at most, however many the reorder buffer
    /// released at once.
    batch_max_events: usize,
}

impl Sink {
    /// Moves the background flush on: collects a finished one, and starts
    /// the next when applied records have waited `flush_interval` (or
    /// `flush_interval_behind`). True when records became durable (a
    /// commit is worth making).
    async fn flush_step(&self, tracking: &mut Tracking) -> bool {
        let finished = tracking
            .flushing
            .as_ref()
            .is_some_and(|(f, _)| f.is_finished());
        let mut durable = false;
        if finished {
            durable = self.finish_flush(tracking).await;
        }
        let interval = if tracking.behind {
            self.flush_interval_behind
        } else {
            self.flush_interval
        };
        if tracking.flushing.is_none()
            && !tracking.unflushed.is_empty()
            && tracking.flushed_at.elapsed() >= interval
        {
            self.start_flush(tracking);
        }
        durable
    }

    fn start_flush(&self, tracking: &mut Tracking) {
        let store = self.store.clone();
        let flush = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            store.flush().map(|()| started.elapsed())
        });
        tracking.flushing = Some((flush, std::mem::take(&mut tracking.unflushed)));
        tracking.flushed_at = Instant::now();
    }

    /// Waits for the flush under way: its records become done. A failure
    /// is logged and they wait for the next flush. True when it succeeded.
    async fn finish_flush(&self, tracking: &mut Tracking) -> bool {
        let Some((flush, records)) = tracking.flushing.take() else {
            return false;
        };
        let result = flush
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        match result {
            Ok(took) => {
                Flushed { took }.emit();
                for (partition, offset) in records {
                    tracking.offsets.done(&partition, offset);
                }
                true
            }
            Err(e) => {
                tracing::warn!("store flush failed, will try again: {e}");
                tracking.unflushed.splice(0..0, records);
                false
            }
        }
    }

    /// Flushes everything applied so far and waits for it, before a
    /// synchronous commit.
    async fn flush_all(&self, tracking: &mut Tracking) {
        self.finish_flush(tracking).await;
        if !tracking.unflushed.is_empty() {
            self.start_flush(tracking);
            self.finish_flush(tracking).await;
        }
    }

    /// One page of an expiry round: clears tombstones and folds delta
    /// chains older than its horizon in the next page of the collection it
    /// has come to. True once the round is over: every collection done, or
    /// a failure (logged; the next round tries again). A page at a time
    /// between batches, so that a large collection never holds applying up
    /// for long, and nothing the round rewrites races a batch.
    async fn expire_step(&self, round: &mut ExpiryRound) -> bool {
        let Some(front) = round.todo.front_mut() else {
            return true;
        };
        let (name, pass) = (front.0.clone(), front.1.clone());
        let (store, horizon) = (self.store.clone(), round.horizon.clone());
        let step = async {
            let (page, next) =
                off_loop(move || store.plan_expiry(&name, &horizon, pass, SCAN_PAGE)).await?;
            // Dead-lettered before the store forgets them: a failure here
            // leaves them parked for the next round to try again.
            for dropped in &page.never_applied {
                self.dead_letters
                    .send_never_applied(&front.0, dropped)
                    .await?;
            }
            let (store, name) = (self.store.clone(), front.0.clone());
            off_loop(move || {
                let expired = store.carry_out(&name, page)?;
                if next == Pass::Done {
                    store.flush()?;
                }
                Ok::<_, WorkerError>((expired, next))
            })
            .await
        };
        let (expired, next) = match step.await {
            Ok(step) => step,
            Err(e) => {
                tracing::warn!("expiry failed, will try again: {e}");
                return true;
            }
        };
        DeltasDropped {
            collection: &front.0,
            reason: "base_never_came",
            count: expired.parked_dropped,
        }
        .emit();
        front.1 = next;
        front.2 += expired;
        if front.1 == Pass::Done {
            tracing::info!(
                collection = front.0,
                expired = ?front.2,
                "expired what is older than the horizon"
            );
            round.todo.pop_front();
        }
        round.todo.is_empty()
    }

    /// Applies everything held, the reorder buffer included, and commits
    /// synchronously: before a stop, or before partitions are revoked.
    async fn drain(
        &self,
        reorder: &mut ReorderBuffer<Partition, Held>,
        codebooks: &Codebooks,
        pending: &mut Vec<Held>,
        tracking: &mut Tracking,
        stats: &mut Stats,
        stopping: &mut Stopping,
    ) -> Result<(), WorkerError> {
        pending.extend(reorder.drain().into_iter().map(|(_, h)| h));
        self.apply_and_commit(
            codebooks,
            pending,
            tracking,
            stats,
            CommitMode::Sync,
            stopping,
        )
        .await
    }

    /// Applies what is pending in batches of at most `batch_max_events`,
    /// keeps what waits for a codebook, and commits what that allows.
    async fn apply_and_commit(
        &self,
        codebooks: &Codebooks,
        pending: &mut Vec<Held>,
        tracking: &mut Tracking,
        stats: &mut Stats,
        mode: CommitMode,
        stopping: &mut Stopping,
    ) -> Result<(), WorkerError> {
        let mut rest = std::mem::take(pending);
        tracking.behind = rest.len() >= self.batch_max_events;
        while !rest.is_empty() {
            let later = rest.split_off(rest.len().min(self.batch_max_events));
            let batch = std::mem::replace(&mut rest, later);
            let waiting = self
                .apply(codebooks, batch, tracking, stats, stopping)
                .await?;
            pending.extend(waiting);
            if !rest.is_empty() {
                self.flush_step(tracking).await;
            }
        }
        if matches!(mode, CommitMode::Sync) {
            self.flush_all(tracking).await;
        } else {
            self.flush_step(tracking).await;
        }
        commit(&self.consumers, &mut tracking.offsets, mode)
    }

    /// Applies a batch, writes dead letters, and marks the records applied;
    /// they are done (committable) once flushed. Returns the events still
    /// waiting for a codebook.
    async fn apply(
        &self,
        codebooks: &Codebooks,
        mut batch: Vec<Held>,
        tracking: &mut Tracking,
        stats: &mut Stats,
        stopping: &mut Stopping,
    ) -> Result<Vec<Held>, WorkerError> {
        batch.sort_by(|a, b| a.event.hlc.cmp(&b.event.hlc));
        let started = Instant::now();
        // The events go to the blocking pool and come back, uncopied.
        let (mut events, records): (Vec<DeltaEvent>, Vec<Raw>) =
            batch.into_iter().map(Held::split).unzip();
        let (outcome, visible_ms) = {
            // Retry store trouble with backoff: an outage is not a dead letter.
            let mut delay = Duration::from_millis(100);
            loop {
                let (store, collections, codebooks) = (
                    self.store.clone(),
                    self.collections.clone(),
                    codebooks.clone(),
                );
                let (back, result) = off_loop(move || {
                    let outcome = Applier::new(store.as_ref(), &collections, &codebooks)
                        .apply_batch(&events)
                        // Searchable from here on; durable after the next flush.
                        .map(|outcome| (outcome, SystemClock.now_ms()));
                    (events, outcome)
                })
                .await;
                events = back;
                match result {
                    Ok(done) => break done,
                    Err(
                        e @ (StoreError::UnknownCollection(_)
                        | StoreError::Mismatch { .. }
                        | StoreError::Refused { .. }),
                    ) => {
                        return Err(e.into());
                    }
                    Err(e) => {
                        tracing::warn!("store unavailable, retrying in {delay:?}: {e}");
                        stopping.backoff(delay, "store").await?;
                        delay = next_delay(delay);
                    }
                }
            }
        };
        stats.batches += 1;
        BatchApplied {
            region: &self.region,
            by_op: &outcome.by_op,
            events: events.len(),
            elapsed: started.elapsed(),
        }
        .emit();
        tracing::debug!(
            events = events.len(),
            changed = outcome.changed,
            unchanged = outcome.unchanged,
            parked = outcome.parked,
            "batch applied"
        );
        stats.applied += outcome.changed;
        stats.unchanged += outcome.unchanged;
        stats.parked += outcome.parked;
        for (collection, count) in &outcome.superseded {
            DeltasDropped {
                collection,
                reason: "base_superseded",
                count: *count,
            }
            .emit();
        }
        for (at, reason, detail) in &outcome.dead {
            let held = &records[*at];
            let source = &self.sources[held.partition.0];
            self.dead_letters
                .send(
                    source,
                    &held.partition,
                    held.offset,
                    held.key.as_deref(),
                    &held.bytes,
                    reason.as_str(),
                    detail,
                )
                .await?;
            stats.dead_letters += 1;
        }
        let mut waiting = Vec::new();
        let mut is_waiting = vec![false; events.len()];
        for at in &outcome.waiting {
            is_waiting[*at] = true;
        }
        for at in &outcome.changed_at {
            ReplicationLag {
                origin: &self.sources[records[*at].partition.0].region,
                region: &self.region,
                seconds: visible_ms.saturating_sub(events[*at].hlc.wall_ms) as f64 / 1000.0,
            }
            .emit();
        }
        for ((raw, event), wait) in records.into_iter().zip(events).zip(is_waiting) {
            if wait {
                waiting.push(Held { raw, event });
            } else {
                tracking.unflushed.push((raw.partition.clone(), raw.offset));
                tracking.progress.done(&raw.partition, &event.hlc);
            }
        }
        Ok(waiting)
    }
}

/// Commits what the offsets allow, per source consumer.
fn commit(
    consumers: &[Arc<SourceConsumer>],
    offsets: &mut Offsets,
    mode: CommitMode,
) -> Result<(), WorkerError> {
    let mut lists: HashMap<usize, TopicPartitionList> = HashMap::new();
    for ((source, topic, partition), offset) in offsets.to_commit() {
        let list = lists.entry(source).or_default();
        list.add_partition_offset(&topic, partition, Offset::Offset(offset))
            .map_err(kafka("failed to build the commit"))?;
    }
    for (source, list) in lists {
        if let Err(e) = consumers[source].commit(&list, mode) {
            // A failed commit loses nothing: the records are replayed.
            tracing::warn!("commit failed: {e}");
        }
    }
    Ok(())
}

/// A client of a source's cluster, from the one client layer.
fn client(config: &RegionConfig, source: &SourceConfig) -> Result<ClientConfig, WorkerError> {
    let wait = config.kafka.fetch_wait_max_ms.to_string();
    let ahead = config.consumer.fetch_queue_max_kbytes.to_string();
    Ok(Cluster::of_source(config, source).client(&[
        ("fetch.wait.max.ms", &wait),
        // Bounds the read-ahead: librdkafka fetches up to 64 MB otherwise.
        ("queued.max.messages.kbytes", &ahead),
    ])?)
}

/// The group consumer of one source: no auto-commit, range assignment so
/// partition i of every source lands on the same worker.
fn source_consumer(
    config: &RegionConfig,
    source: &SourceConfig,
    context: SourceContext,
) -> Result<SourceConsumer, WorkerError> {
    let mut c = client(config, source)?;
    if let Some(id) = &config.consumer.instance_id {
        c.set("group.instance.id", id);
    }
    let consumer: SourceConsumer = c
        .set("group.id", config.group_id())
        .set("client.id", format!("vecsync-worker-{}", config.region))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range")
        .set(
            "session.timeout.ms",
            config.consumer.session_timeout_ms.to_string(),
        )
        // The loop polls all the time; a short poll interval bounds how long
        // a rebalance waits for a member that died (tansu waits for this,
        // not for the session timeout).
        .set(
            "max.poll.interval.ms",
            config.consumer.session_timeout_ms.to_string(),
        )
        .create_with_context(context)
        .map_err(kafka(format!(
            "failed to create a consumer for {}",
            source.topic
        )))?;
    if config.consumer.assignment == Assignment::Group {
        consumer
            .subscribe(&[&source.topic])
            .map_err(kafka(format!("failed to subscribe to {}", source.topic)))?;
    }
    Ok(consumer)
}

/// Static assignment: waits for `topic` to exist, then takes this worker's
/// share of its partitions (p mod count = index), resuming `rewind` records
/// before the group's committed offsets. Replaying a few records is
/// harmless (apply is idempotent) and needed on brokers that cannot fetch
/// from inside a record batch (tansu 0.6 skips the rest of the batch).
/// Returns the committed offset of each partition that has one. Partitions
/// added later are not picked up until a restart.
async fn assign_static(
    consumer: &Arc<SourceConsumer>,
    topic: &str,
    index: u32,
    count: u32,
    rewind: u64,
) -> Result<Vec<(i32, i64)>, String> {
    let mut last_warning = None::<Instant>;
    loop {
        if let Some(why) = consumer.context().watch.fatal.get() {
            return Err(why);
        }
        let (c, t) = (consumer.clone(), topic.to_owned());
        let found = off_loop(move || {
            let metadata = c.fetch_metadata(Some(&t), Duration::from_secs(5))?;
            if let Some(refused) = vecsync_kafka::topic_refused(&metadata, &t) {
                return Err(refused);
            }
            let mut mine = TopicPartitionList::new();
            for mt in metadata.topics().iter().filter(|mt| mt.name() == t) {
                for p in mt.partitions().iter().map(|p| p.id()) {
                    if p as u32 % count == index {
                        mine.add_partition(&t, p);
                    }
                }
            }
            if mine.count() == 0 {
                return Ok(None);
            }
            let committed = c.committed_offsets(mine, Duration::from_secs(10))?;
            // Where each partition's log now starts, to see whether
            // retention removed records the group had not read.
            let mut starts = Vec::new();
            for e in committed.elements() {
                if let Offset::Offset(_) = e.offset() {
                    let (low, _) = c.fetch_watermarks(&t, e.partition(), Duration::from_secs(5))?;
                    starts.push((e.partition(), low));
                }
            }
            Ok::<_, rdkafka::error::KafkaError>(Some((committed, starts)))
        })
        .await;
        let why = match found {
            Ok(Some((committed, starts))) => {
                let (start, resumed) = rewound(&committed, rewind);
                // The series exists from the start, so that an alert sees
                // its first increase.
                RecordsLost { topic, count: 0 }.emit();
                for (partition, offset, lost) in lost_to_retention(&resumed, &starts) {
                    RecordsLost { topic, count: lost }.emit();
                    tracing::error!(
                        topic,
                        partition,
                        committed = offset,
                        lost,
                        "records this region never applied were deleted from the source \
                         (retention) before the worker read them; the region misses those \
                         writes and needs re-bootstrapping from another region"
                    );
                }
                match consumer.assign(&start) {
                    Ok(()) => {
                        tracing::info!(topic, partitions = start.count(), ?resumed, "assigned");
                        return Ok(every_assigned(&start, &resumed)
                            .into_iter()
                            .map(|(_, p, c)| (p, c))
                            .collect());
                    }
                    Err(e) => format!("assignment failed: {e}"),
                }
            }
            Ok(None) => "the topic does not exist yet".to_owned(),
            Err(e) if vecsync_kafka::is_fatal(&e) => {
                let cluster = &consumer.context().watch.cluster;
                return Err(format!("Kafka cluster {cluster}: topic {topic}: {e}"));
            }
            Err(e) => e.to_string(),
        };
        if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
            tracing::warn!(topic, "waiting for the source: {why}");
            last_warning = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Where to start reading partitions whose group offsets are `committed`:
/// `rewind` records before each committed offset (see [`assign_static`]),
/// or the beginning when nothing is committed. Also returns each committed
/// offset found.
fn rewound(
    committed: &TopicPartitionList,
    rewind: u64,
) -> (TopicPartitionList, Vec<(String, i32, i64)>) {
    let mut start = TopicPartitionList::new();
    let mut resumed = Vec::new();
    for e in committed.elements() {
        let offset = match e.offset() {
            Offset::Offset(c) => {
                resumed.push((e.topic().to_owned(), e.partition(), c));
                Offset::Offset(c.saturating_sub(rewind as i64).max(0))
            }
            _ => Offset::Beginning,
        };
        if let Err(err) = start.add_partition_offset(e.topic(), e.partition(), offset) {
            tracing::warn!(
                topic = e.topic(),
                partition = e.partition(),
                "cannot assign: {err}"
            );
        }
    }
    (start, resumed)
}

/// Every partition of `start`, with its committed offset from `resumed`, or
/// -1 when the group has committed none: each is announced to the loop,
/// which holds the watermark for it from then on.
fn every_assigned(
    start: &TopicPartitionList,
    resumed: &[(String, i32, i64)],
) -> Vec<(String, i32, i64)> {
    start
        .elements()
        .iter()
        .map(|e| {
            let committed = resumed
                .iter()
                .find(|(t, p, _)| t == e.topic() && *p == e.partition())
                .map_or(-1, |r| r.2);
            (e.topic().to_owned(), e.partition(), committed)
        })
        .collect()
}

/// Partitions whose committed offset lies before the start of their log:
/// (partition, committed offset, records lost). `resumed` holds (topic,
/// partition, committed offset); `starts` each partition's first offset.
fn lost_to_retention(
    resumed: &[(String, i32, i64)],
    starts: &[(i32, i64)],
) -> Vec<(i32, i64, u64)> {
    resumed
        .iter()
        .filter_map(|(_, partition, committed)| {
            let (_, low) = starts.iter().find(|(p, _)| p == partition)?;
            (low > committed).then(|| (*partition, *committed, (low - committed) as u64))
        })
        .collect()
}

type SourceConsumer = StreamConsumer<SourceContext>;

/// The consumer context of a source. In group mode it handles rebalances:
/// an assignment resumes a little before the committed offsets (as static
/// assignment does) and tells the loop where the group stood; a revocation
/// asks the loop to apply and synchronously commit everything it holds and
/// waits for that, up to the drain timeout, before the partitions go.
/// librdkafka calls it inside the source stream's poll, on an executor
/// thread, so it blocks through `block_in_place` (group mode needs the
/// multi-threaded runtime). Its messages travel with the records, so the
/// loop has handled every record received before a revocation when it
/// drains.
struct SourceContext {
    index: usize,
    tx: mpsc::Sender<(usize, Incoming)>,
    rewind: u64,
    drain_timeout: Duration,
    readiness: Readiness,
    /// What librdkafka reports outside any call, fatal errors kept.
    watch: Watch,
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.watch.error(error, reason);
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        tokio::task::block_in_place(|| match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => {
                tracing::warn!(source = self.index, "rebalance failed: {other:?}");
                if let Err(e) = consumer.unassign() {
                    tracing::warn!(source = self.index, "unassign failed: {e}");
                }
            }
        });
    }
}

impl SourceContext {
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let (start, resumed) =
            match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                Ok(committed) => rewound(&committed, self.rewind),
                Err(e) => {
                    tracing::warn!(
                        source = self.index,
                        "cannot read committed offsets, resuming at them without a rewind: {e}"
                    );
                    (tpl.clone(), Vec::new())
                }
            };
        for (topic, partition, committed) in &every_assigned(&start, &resumed) {
            let resume = Incoming::Resume((self.index, topic.clone(), *partition), *committed);
            if self.tx.blocking_send((self.index, resume)).is_err() {
                return;
            }
        }
        match consumer.assign(&start) {
            Ok(()) => {
                self.readiness.assigned(self.index, true);
                tracing::info!(
                    source = self.index,
                    partitions = start.count(),
                    ?resumed,
                    "partitions assigned"
                );
            }
            Err(e) => tracing::warn!(source = self.index, "assignment failed: {e}"),
        }
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let partitions: Vec<Partition> = tpl
            .elements()
            .iter()
            .map(|e| (self.index, e.topic().to_owned(), e.partition()))
            .collect();
        let (done, drained) = std::sync::mpsc::sync_channel(1);
        let revoke = Incoming::Revoke(partitions.clone(), done);
        if self.tx.blocking_send((self.index, revoke)).is_ok() {
            match drained.recv_timeout(self.drain_timeout) {
                Ok(()) => tracing::info!(
                    source = self.index,
                    ?partitions,
                    "partitions revoked after a drain and commit"
                ),
                Err(_) => tracing::warn!(
                    source = self.index,
                    ?partitions,
                    "partitions revoked before the drain finished; their uncommitted records will be replayed by their next owner"
                ),
            }
        }
        self.readiness.assigned(self.index, false);
        if let Err(e) = consumer.unassign() {
            tracing::warn!(source = self.index, "unassign failed: {e}");
        }
    }
}

/// A consumer that reads a source's whole codebook topic, outside the group:
/// assigned its partitions by hand ([`read_codebooks`]), never subscribed,
/// so that it joins no group and has no rebalance to wait for when dropped.
/// Its `group.id` starts with the region's, so that one prefixed ACL on the
/// region's group id covers it.
fn codebook_consumer(
    config: &RegionConfig,
    source: &SourceConfig,
) -> Result<StreamConsumer, WorkerError> {
    client(config, source)?
        // Never joined: librdkafka needs it to assign partitions.
        .set("group.id", format!("{}-codebooks", config.group_id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(kafka(format!(
            "failed to create a consumer for {}",
            source.codebook_topic
        )))
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

/// The reorder buffer's key for a source none of whose partitions is
/// assigned yet.
fn unassigned(index: usize, topic: &str) -> Partition {
    (index, topic.to_owned(), -1)
}

/// A record as the loop needs it: partition, offset, value and key.
type Received = (Partition, i64, Vec<u8>, Option<Vec<u8>>);

/// What the source tasks hand the loop.
enum Incoming {
    Record(Received),
    /// A partition assigned at this committed offset (-1: none committed).
    Resume(Partition, i64),
    /// The group takes these partitions away once the loop has drained,
    /// committed and answered.
    Revoke(Vec<Partition>, std::sync::mpsc::SyncSender<()>),
    /// The source's cluster refused the worker (see [`WorkerError::Client`]).
    Fatal(String),
}

/// Hands a source's records to the worker loop. Errors such as a topic that
/// does not exist yet are logged and waited out.
async fn forward(
    index: usize,
    consumer: Arc<SourceConsumer>,
    assign: Option<(String, u32, u32, u64)>,
    tx: mpsc::Sender<(usize, Incoming)>,
    readiness: Readiness,
) {
    let fatal = consumer.context().watch.fatal.clone();
    let stop = |why: String| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((index, Incoming::Fatal(why))).await;
        }
    };
    if let Some((topic, worker, workers, rewind)) = assign {
        let assigned = match assign_static(&consumer, &topic, worker, workers, rewind).await {
            Ok(assigned) => assigned,
            Err(why) => return stop(why).await,
        };
        for (partition, committed) in assigned {
            let resume = Incoming::Resume((index, topic.clone(), partition), committed);
            if tx.send((index, resume)).await.is_err() {
                return;
            }
        }
        readiness.assigned(index, true);
    }
    let mut last_warning = None::<Instant>;
    let mut check = tokio::time::interval(FATAL_CHECK);
    loop {
        // A refused login or certificate shows only in the client's error
        // callback; the consumer just hears nothing.
        let received = tokio::select! {
            received = consumer.recv() => received,
            _ = check.tick() => match fatal.get() {
                Some(why) => return stop(why).await,
                None => continue,
            },
        };
        let item = match received {
            Ok(m) => (
                (index, m.topic().to_owned(), m.partition()),
                m.offset(),
                m.payload().unwrap_or_default().to_vec(),
                m.key().map(<[u8]>::to_vec),
            ),
            Err(e) if vecsync_kafka::is_fatal(&e) => {
                let cluster = &consumer.context().watch.cluster;
                return stop(format!("Kafka cluster {cluster}: {e}")).await;
            }
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                    tracing::warn!(source = index, "waiting for the source: {e}");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if tx.send((index, Incoming::Record(item))).await.is_err() {
            return;
        }
    }
}

/// How often a source's forwarder looks for a fatal error of its client.
const FATAL_CHECK: Duration = Duration::from_millis(500);

/// How often a codebook topic is looked for (and, once there, for
/// partitions added to it).
const CODEBOOK_TOPIC_CHECK: Duration = Duration::from_secs(1);

/// Reads every codebook of `topic` from the start, and any written later,
/// into `tx`. The topic may not exist yet (no PQ collection has trained a
/// codebook): its partitions are assigned once it appears.
async fn read_codebooks(
    consumer: StreamConsumer,
    topic: String,
    registry: Arc<RegistryClient>,
    tx: mpsc::Sender<PqCodebook>,
) {
    let consumer = Arc::new(consumer);
    let decoder = Decoder::<PqCodebook>::new(registry);
    let mut check = tokio::time::interval(CODEBOOK_TOPIC_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut assigned = 0;
    loop {
        tokio::select! {
            _ = check.tick() => {
                let (c, t) = (consumer.clone(), topic.clone());
                match off_loop(move || assign_new_partitions(&c, &t, assigned)).await {
                    Ok(count) => assigned = count,
                    Err(e) => tracing::debug!("codebook topic {topic}: {e}"),
                }
            }
            received = consumer.recv(), if assigned > 0 => match received {
                Ok(m) => match decoder.decode(m.payload().unwrap_or_default()).await {
                    Ok(book) => {
                        if tx.send(book).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!("unreadable codebook at offset {}: {e}", m.offset()),
                },
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            },
        }
    }
}

/// Assigns `consumer` the partitions of `topic` past the first `assigned`
/// (from their beginning), keeping where the others have come to. Returns
/// how many it now reads.
fn assign_new_partitions(
    consumer: &StreamConsumer,
    topic: &str,
    assigned: usize,
) -> Result<usize, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let count = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .sum::<usize>();
    if count <= assigned {
        return Ok(assigned);
    }
    let mut list = if assigned == 0 {
        TopicPartitionList::new()
    } else {
        consumer.position()?
    };
    for p in assigned..count {
        list.add_partition_offset(topic, p as i32, Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    Ok(count)
}

/// The dead-letter topic on this region's cluster.
struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    /// A producer for the dead-letter topic, which is created when missing
    /// (with `kafka.create_topics`).
    async fn new(config: &RegionConfig) -> Result<Self, WorkerError> {
        let cluster = Cluster::of_region(config);
        let topic = &config.consumer.dead_letter_topic;
        if config.kafka.create_topics {
            cluster
                .create_topics(&[Topic {
                    name: topic,
                    partitions: 1,
                    replication_factor: config.kafka.replication_factor,
                    compacted: false,
                }])
                .await?;
        } else {
            cluster.verify_topics(&[topic]).await?;
        }
        let producer = cluster
            .client(&[("enable.idempotence", "true"), ("acks", "all")])?
            .create()
            .map_err(kafka("failed to create the dead-letter producer"))?;
        Ok(Self {
            producer,
            topic: topic.clone(),
        })
    }

    /// Writes one dead letter with headers naming where it came from and
    /// why, and waits for the broker's acknowledgement.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        source: &SourceConfig,
        partition: &Partition,
        offset: i64,
        key: Option<&[u8]>,
        value: &[u8],
        reason: &'static str,
        detail: &str,
    ) -> Result<(), WorkerError> {
        tracing::warn!(
            topic = partition.1,
            partition = partition.2,
            offset,
            reason,
            "dead letter: {detail}"
        );
        let offset_text = offset.to_string();
        let partition_text = partition.2.to_string();
        let headers = [
            ("vecsync.source.region", source.region.as_str()),
            ("vecsync.source.topic", partition.1.as_str()),
            ("vecsync.source.partition", &partition_text),
            ("vecsync.source.offset", &offset_text),
        ];
        self.produce(key, value, &headers, reason, detail).await
    }

    /// Writes a delta that expiry drops, whose original bytes are gone:
    /// as JSON ([`crate::bookkeeping::delta_json`], header
    /// `vecsync.format: json`), keyed by its point id, from the region its
    /// version names.
    async fn send_never_applied(
        &self,
        collection: &str,
        dropped: &NeverApplied,
    ) -> Result<(), WorkerError> {
        let reason = "base_never_came";
        let base = dropped.change.base().map(ToString::to_string);
        let detail = format!(
            "the version it builds on, {}, never arrived before the tombstone horizon",
            base.as_deref().unwrap_or("none")
        );
        tracing::warn!(collection, id = %dropped.id, version = %dropped.version, reason, "dead letter: {detail}");
        let value = crate::bookkeeping::delta_json(
            collection,
            &dropped.id,
            &dropped.version,
            &dropped.change,
        )
        .to_string();
        let headers = [
            ("vecsync.source.region", dropped.version.origin.as_str()),
            ("vecsync.format", "json"),
        ];
        let key = dropped.id.key();
        self.produce(
            Some(key.as_bytes()),
            value.as_bytes(),
            &headers,
            reason,
            &detail,
        )
        .await
    }

    /// Writes one dead letter with `headers` and the reason's two, and
    /// waits for the broker's acknowledgement.
    async fn produce(
        &self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &str)],
        reason: &'static str,
        detail: &str,
    ) -> Result<(), WorkerError> {
        DeadLettered { reason }.emit();
        let headers = headers
            .iter()
            .chain(&[("vecsync.reason", reason), ("vecsync.detail", detail)])
            .fold(OwnedHeaders::new(), |all, &(key, value)| {
                all.insert(Header {
                    key,
                    value: Some(value),
                })
            });
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
            .payload(value)
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| WorkerError::Kafka {
                what: format!("failed to write a dead letter to {}", self.topic),
                source: e,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_before_the_log_start_are_counted_as_lost() {
        let resumed = vec![
            ("t".to_owned(), 0, 100),
            ("t".to_owned(), 1, 500),
            ("t".to_owned(), 2, 40),
        ];
        // Partition 0's log now starts at 350; 1 and 2 still hold their
        // committed records.
        let starts = [(0, 350), (1, 500), (2, 0)];
        assert_eq!(lost_to_retention(&resumed, &starts), [(0, 100, 250)]);
        assert!(lost_to_retention(&resumed, &[]).is_empty());
    }
}
