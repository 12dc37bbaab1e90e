//! The embedded store: Qdrant's engine in-process (`qdrant-edge`), one shard
//! directory per collection (DESIGN.md §4).
//!
//! Live points are in `<root>/<collection>/`, searchable as usual, and
//! tombstones in `<root>/<collection>.tombstones/`. qdrant-edge 0.7.2 does
//! not replay its write-ahead log after a crash, so what matters is
//! [`EdgeStore::flush`]: consumers commit offsets only after it.
//!
//! Nor does it ever trim that log: every write is appended to it, on disk
//! and mapped in memory, for as long as the shard is open (in a 20 s load
//! test at 2 × 2,000 768-d events/s, 219 MB a region). Once a flush has
//! made the segments hold every write, a shard whose log has grown past
//! [`WalLimits::reclaim_bytes`] is closed, its log removed but for what
//! numbers the next write, and the shard loaded again.

use super::{
    Hit, Known, Page, Part, Search, Store, StoreError, engine_distance, stored_record,
    tombstones_of,
};
use crate::apply::{Payload, Record, unseen};
use crate::bookkeeping;
use half::slice::HalfFloatSliceExt;
use qdrant_edge::{
    CountRequest, DEFAULT_VECTOR_NAME, Distance, EdgeConfigBuilder, EdgeShard,
    EdgeVectorParamsBuilder, Filter, OperationError, OperationResult, PointId as EdgePointId,
    PointInsertOperations, PointOperations, PointStruct, QueryEnum, Record as EdgeRecord,
    ScrollRequest, SearchRequest, UpdateOperation, VectorInternal, VectorStorageDatatype,
    VectorStructInternal, WalOptions, WithPayloadInterface, WithVector,
};
use serde_json::Value;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use vecsync_schemas::config::{Distance as ConfigDistance, StoreConfig, VectorDatatype};
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;

/// How much write-ahead log a shard keeps.
#[derive(Debug, Clone, Copy)]
pub struct WalLimits {
    /// The size of the log's segments in shards the store creates (the
    /// engine's default is 32 MiB); shards already on disk keep theirs.
    pub segment_bytes: usize,
    /// What the log may hold in closed segments before a flush lets it go.
    pub reclaim_bytes: u64,
}

impl WalLimits {
    /// The limits a region's store config sets (`store.wal_max_mb`).
    pub fn of(config: &StoreConfig) -> Self {
        Self {
            reclaim_bytes: config.wal_max_mb << 20,
            ..Self::default()
        }
    }
}

impl Default for WalLimits {
    fn default() -> Self {
        Self {
            segment_bytes: 8 << 20,
            reclaim_bytes: 512 << 20,
        }
    }
}

/// The directory of a shard's write-ahead log.
const WAL_DIR: &str = "wal";

/// One shard of a collection: its engine, and where it lives. The engine
/// is `None` only when loading it again after its log was let go failed:
/// the next use tries again.
struct Shard {
    path: PathBuf,
    engine: RwLock<Option<EdgeShard>>,
    /// Whether the shard holds writes no flush has made durable yet: the
    /// engine's flush syncs every file of every segment even when there
    /// are none (a collection's tombstones while nothing is deleted).
    /// Held by writes and flushes: qdrant-edge's flush panics when it finds
    /// the log's lock held by a write, so the two never overlap. Reads and
    /// searches need neither and go on while the shard flushes, as do
    /// writes to the collection's other shard.
    unflushed: Mutex<bool>,
    /// Whether the engine keeps vectors in half precision.
    half: bool,
    /// Why the engine failed. qdrant-edge panics when a flush meets an I/O
    /// error (a full disk); what it held since its last flush may then
    /// be gone, and a later flush that succeeds would not bring it back.
    /// A write that meets one answers a service error, and the engine
    /// refuses every later write until it is loaded again. Every later use
    /// of the shard answers [`StoreError::Lost`], so that nothing after the
    /// last commit is committed: a restart replays it.
    lost: OnceLock<String>,
}

impl Shard {
    fn new(path: PathBuf, engine: EdgeShard) -> Self {
        let half = kept_datatype(&engine) == VectorStorageDatatype::Float16;
        Self {
            path,
            engine: RwLock::new(Some(engine)),
            unflushed: Mutex::new(false),
            half,
            lost: OnceLock::new(),
        }
    }

    /// Runs the write `f` on the engine, never during a flush. A service
    /// error (an I/O error, a segment left failed) loses the shard: the
    /// engine takes no later write until it is loaded again.
    fn write(
        &self,
        collection: &str,
        f: impl FnOnce(&EdgeShard) -> OperationResult<()>,
    ) -> Result<(), StoreError> {
        let mut unflushed = self.unflushed.lock().unwrap_or_else(|e| e.into_inner());
        // Set before the write: one that fails part way may still have
        // changed what the engine holds.
        *unflushed = true;
        match self.with(collection, |engine| Ok(f(engine)))? {
            Ok(()) => Ok(()),
            Err(
                e @ (OperationError::ServiceError { .. }
                | OperationError::InconsistentStorage { .. }),
            ) => Err(self.lose(collection, format!("a write failed: {e}"))),
            Err(e) => Err(StoreError::engine(collection, e.to_string())),
        }
    }

    /// Runs `f` on the engine.
    fn with<T>(
        &self,
        collection: &str,
        f: impl FnOnce(&EdgeShard) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        loop {
            if let Some(why) = self.lost.get() {
                return Err(StoreError::Lost {
                    collection: collection.to_owned(),
                    message: why.clone(),
                });
            }
            if let Some(engine) = self
                .engine
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                return f(engine);
            }
            let mut engine = self.engine.write().unwrap_or_else(|e| e.into_inner());
            if engine.is_none() {
                *engine = Some(load_engine(&self.path, collection)?);
            }
        }
    }

    /// Flushes the engine, unless nothing was written to it since its last
    /// flush; then, when its log holds more than
    /// `reclaim_bytes` in closed segments, closes it, removes all of the
    /// log but what numbers the next write, and loads it again.
    fn flush(&self, collection: &str, reclaim_bytes: u64) -> Result<(), StoreError> {
        let mut unflushed = self.unflushed.lock().unwrap_or_else(|e| e.into_inner());
        if !*unflushed {
            return Ok(());
        }
        let failed = self.with(collection, |engine| {
            Ok(std::panic::catch_unwind(AssertUnwindSafe(|| engine.flush())).err())
        })?;
        if let Some(panic) = failed {
            return Err(self.lose(collection, flush_panic(panic)));
        }
        *unflushed = false;
        let mut closed = closed_segments(&self.path.join(WAL_DIR));
        let held: u64 = closed.iter().map(|(_, _, len)| len).sum();
        if held <= reclaim_bytes {
            return Ok(());
        }
        let mut engine = self.engine.write().unwrap_or_else(|e| e.into_inner());
        let started = std::time::Instant::now();
        // Dropping the engine flushes it again and closes its log (a
        // segment it closes on the way is not in `closed`, so it stays).
        let closing = engine.take();
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(move || drop(closing))) {
            drop(engine);
            return Err(self.lose(collection, flush_panic(panic)));
        }
        // The engine numbers each write after the last one in its log, and
        // skips a write to a point whose number is not higher than the
        // point's: the newest closed segment and the open ones stay, so
        // the numbering goes on.
        closed.sort_unstable_by_key(|(start, _, _)| *start);
        closed.pop();
        for (_, path, _) in closed {
            std::fs::remove_file(&path)
                .map_err(|e| StoreError::engine(collection, format!("{}: {e}", path.display())))?;
        }
        *engine = Some(load_engine(&self.path, collection)?);
        tracing::debug!(
            shard = %self.path.display(),
            took_ms = started.elapsed().as_millis() as u64,
            "write-ahead log let go"
        );
        Ok(())
    }

    /// After the engine failed (`why`): the shard answers why from now on,
    /// and its engine, if still held, is let go of. Dropping the engine
    /// flushes it again, which may panic; that panic is caught too.
    fn lose(&self, collection: &str, why: String) -> StoreError {
        let why = self.lost.get_or_init(|| why).clone();
        tracing::error!(
            shard = %self.path.display(),
            "the store failed, what it held since its last flush may be lost: {why}"
        );
        let engine = self
            .engine
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(engine)));
        StoreError::Lost {
            collection: collection.to_owned(),
            message: why,
        }
    }
}

/// Why a flush panicked, from the panic's message.
fn flush_panic(panic: Box<dyn std::any::Any + Send>) -> String {
    let why = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("the engine panicked");
    // The engine's errors print their backtrace in their `Debug`.
    match why.split_once(", backtrace: ") {
        Some((head, _)) => format!("a flush failed: {head} }}"),
        None => format!("a flush failed: {why}"),
    }
}

/// Loads the engine of the shard at `path`, one of `collection`'s.
fn load_engine(path: &Path, collection: &str) -> Result<EdgeShard, StoreError> {
    EdgeShard::load(path, None)
        .map_err(|e| StoreError::engine(collection, format!("{}: {e}", path.display())))
}

/// The closed segments of a shard's log (`closed-<first entry>`): each
/// one's first entry, path and size. The open ones are preallocated,
/// whatever they hold.
fn closed_segments(log: &Path) -> Vec<(u64, PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(log) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let start = e
                .file_name()
                .to_str()?
                .strip_prefix("closed-")?
                .parse()
                .ok()?;
            Some((start, e.path(), e.metadata().ok()?.len()))
        })
        .collect()
}

/// The live and tombstone shards of one collection.
struct Collection {
    live: Shard,
    tombstones: Shard,
    /// The version index: every point either shard holds. `None` once a
    /// write failed part way (the engine may hold some of it): reads tell
    /// from then on.
    index: Mutex<Option<HashMap<PointId, Entry>>>,
}

/// What the version index keeps of a point: the version and shape of the
/// record last written, and which shards hold it (both for a moment while a
/// write moves it from one to the other).
#[derive(Debug, Clone)]
struct Entry {
    version: Hlc,
    chained: bool,
    live: bool,
    tombstone: bool,
}

impl Entry {
    fn known(&self) -> Known {
        if self.chained || (self.live && self.tombstone) {
            Known::Chained
        } else {
            Known::Simple {
                version: self.version.clone(),
                live: self.live,
            }
        }
    }

    fn holds(&mut self, part: Part) -> &mut bool {
        match part {
            Part::Live => &mut self.live,
            Part::Tombstones => &mut self.tombstone,
        }
    }
}

impl Collection {
    /// Opens a collection's shards and indexes what they hold.
    fn open(name: &str, live: Shard, tombstones: Shard) -> Result<Self, StoreError> {
        let mut index = HashMap::new();
        for (part, shard) in [(Part::Live, &live), (Part::Tombstones, &tombstones)] {
            let mut from = None;
            loop {
                let (page, next) =
                    shard.with(name, |s| scroll(name, s, part, false, from, INDEX_PAGE))?;
                for record in page {
                    let id = edge_point_id(record.id);
                    let payload = record.payload.map(|p| p.0).unwrap_or_default();
                    index_write(&mut index, id, part, &payload);
                }
                match next {
                    Some(next) => from = Some(next),
                    None => break,
                }
            }
        }
        if !index.is_empty() {
            tracing::info!(
                collection = name,
                points = index.len(),
                "version index built"
            );
        }
        Ok(Self {
            live,
            tombstones,
            index: Mutex::new(Some(index)),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Option<HashMap<PointId, Entry>>> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn part(&self, part: Part) -> &Shard {
        match part {
            Part::Live => &self.live,
            Part::Tombstones => &self.tombstones,
        }
    }
}

/// Collections under one directory.
pub struct EdgeStore {
    root: PathBuf,
    collections: RwLock<HashMap<String, Arc<Collection>>>,
    wal: WalLimits,
    /// How the collections it creates keep their vectors.
    datatype: VectorDatatype,
}

impl std::fmt::Debug for EdgeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl EdgeStore {
    /// A store rooted at `root` (created when missing).
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root)
            .map_err(|e| StoreError::engine("", format!("{}: {e}", root.display())))?;
        Ok(Self {
            root: root.to_owned(),
            collections: RwLock::new(HashMap::new()),
            wal: WalLimits::default(),
            datatype: VectorDatatype::default(),
        })
    }

    /// The store a region's config describes (`store.path`,
    /// `store.wal_max_mb`, `store.vector_datatype`).
    pub fn configured(config: &StoreConfig) -> Result<Self, StoreError> {
        Ok(Self::open(&config.path)?
            .with_wal_limits(WalLimits::of(config))
            .with_vector_datatype(config.vector_datatype))
    }

    /// The same store, keeping its shards' logs within `limits`.
    #[must_use]
    pub fn with_wal_limits(mut self, limits: WalLimits) -> Self {
        self.wal = limits;
        self
    }

    /// The same store, creating collections that keep vectors as
    /// `datatype` (`store.vector_datatype`).
    #[must_use]
    pub fn with_vector_datatype(mut self, datatype: VectorDatatype) -> Self {
        self.datatype = datatype;
        self
    }

    /// The `limit` live points nearest to `vector` by the collection's
    /// distance, best first, with their scores: the engine's own search.
    pub fn search(
        &self,
        collection: &str,
        vector: Vec<f32>,
        limit: usize,
    ) -> Result<Vec<(PointId, f32)>, StoreError> {
        let search = Search {
            vector,
            limit,
            with_payload: false,
            filter: None,
        };
        Ok(self
            .search_points(collection, &search)?
            .into_iter()
            .map(|hit| (hit.id, hit.score))
            .collect())
    }

    fn insert(&self, name: &str, collection: Collection) {
        self.collections
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), Arc::new(collection));
    }

    fn collection(&self, name: &str) -> Result<Arc<Collection>, StoreError> {
        self.read_lock()
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::UnknownCollection(name.to_owned()))
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Collection>>> {
        self.collections.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for EdgeStore {
    fn ensure_collection(
        &self,
        name: &str,
        dimension: usize,
        distance: ConfigDistance,
    ) -> Result<(), StoreError> {
        if self.read_lock().contains_key(name) {
            return Ok(());
        }
        let segment_bytes = self.wal.segment_bytes;
        let live = open_shard(
            self.root.join(name),
            name,
            (dimension, edge_distance(distance), self.datatype),
            segment_bytes,
        )?;
        let tombstones = open_shard(
            self.root.join(tombstones_of(name)),
            name,
            (1, Distance::Dot, VectorDatatype::Float32),
            segment_bytes,
        )?;
        self.insert(name, Collection::open(name, live, tombstones)?);
        Ok(())
    }

    fn open_collection(&self, name: &str) -> Result<(), StoreError> {
        if self.read_lock().contains_key(name) {
            return Ok(());
        }
        let load = |path: PathBuf| {
            if !path.join("edge_config.json").exists() {
                return Err(StoreError::UnknownCollection(name.to_owned()));
            }
            load_engine(&path, name).map(|engine| Shard::new(path, engine))
        };
        let live = load(self.root.join(name))?;
        let tombstones = load(self.root.join(tombstones_of(name)))?;
        self.insert(name, Collection::open(name, live, tombstones)?);
        Ok(())
    }

    fn get(
        &self,
        collection: &str,
        part: Part,
        ids: &[PointId],
    ) -> Result<Vec<(PointId, Record)>, StoreError> {
        let c = self.collection(collection)?;
        let edge_ids: Vec<EdgePointId> = ids.iter().map(edge_id).collect();
        let live = part == Part::Live;
        c.part(part)
            .with(collection, |s| {
                s.retrieve(
                    &edge_ids,
                    Some(WithPayloadInterface::Bool(true)),
                    Some(WithVector::Bool(live)),
                )
                .map_err(|e| StoreError::engine(collection, e.to_string()))
            })?
            .into_iter()
            .map(|record| to_record(collection, record, live))
            .collect()
    }

    fn upsert(
        &self,
        collection: &str,
        part: Part,
        points: Vec<(PointId, Vec<f32>, Payload)>,
    ) -> Result<(), StoreError> {
        let shards = self.collection(collection)?;
        let mut index = shards.index();
        if let Some(entries) = index.as_mut() {
            for (id, _, payload) in &points {
                index_write(entries, *id, part, payload);
            }
        }
        let shard = shards.part(part);
        let mut scratch = Vec::new();
        let points = points
            .into_iter()
            .map(|(id, mut vector, payload)| {
                if shard.half {
                    round_to_half(&mut vector, &mut scratch);
                }
                PointStruct::new(edge_id(&id), vector, Value::Object(payload)).into()
            })
            .collect();
        shard
            .write(collection, |s| {
                s.update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
                ))
            })
            .map_err(|e| unindexed(&mut index, collection, e))
    }

    fn delete(&self, collection: &str, part: Part, ids: &[PointId]) -> Result<(), StoreError> {
        let shards = self.collection(collection)?;
        let mut index = shards.index();
        // Only what the shard holds: a write moving a point between the
        // shards deletes it from the other one, which mostly has none.
        let ids: Vec<EdgePointId> = match index.as_mut() {
            Some(entries) => ids
                .iter()
                .filter(|id| index_delete(entries, id, part))
                .map(edge_id)
                .collect(),
            None => ids.iter().map(edge_id).collect(),
        };
        if ids.is_empty() {
            return Ok(());
        }
        shards
            .part(part)
            .write(collection, |s| {
                s.update(UpdateOperation::PointOperation(
                    PointOperations::DeletePoints { ids },
                ))
            })
            .map_err(|e| unindexed(&mut index, collection, e))
    }

    fn known(&self, collection: &str, ids: &[PointId]) -> Option<Vec<Known>> {
        let shards = self.collection(collection).ok()?;
        let index = shards.index();
        let entries = index.as_ref()?;
        Some(
            ids.iter()
                .map(|id| entries.get(id).map_or(Known::Absent, Entry::known))
                .collect(),
        )
    }

    /// Flushes each shard on its own, the collection before its
    /// tombstones (the reverse of [`Store::write`]'s order): writes to the
    /// other shard, reads and searches go on meanwhile.
    fn flush(&self) -> Result<(), StoreError> {
        for (name, c) in self.read_lock().iter() {
            c.live.flush(name, self.wal.reclaim_bytes)?;
            c.tombstones.flush(name, self.wal.reclaim_bytes)?;
        }
        Ok(())
    }

    fn search_points(&self, collection: &str, search: &Search) -> Result<Vec<Hit>, StoreError> {
        let filter = search
            .filter
            .as_ref()
            .map(|f| {
                serde_json::to_value(f)
                    .and_then(serde_json::from_value::<Filter>)
                    .map_err(|e| StoreError::engine(collection, format!("filter: {e}")))
            })
            .transpose()?;
        let request = SearchRequest {
            query: QueryEnum::from(search.vector.clone()),
            filter,
            params: None,
            limit: search.limit,
            offset: 0,
            with_payload: Some(WithPayloadInterface::Bool(search.with_payload)),
            with_vector: Some(WithVector::Bool(false)),
            score_threshold: None,
        };
        let hits = self.collection(collection)?.live.with(collection, |s| {
            s.search(request)
                .map_err(|e| StoreError::engine(collection, e.to_string()))
        })?;
        Ok(hits
            .into_iter()
            .map(|hit| Hit {
                id: edge_point_id(hit.id),
                score: hit.score,
                payload: hit.payload.map(|p| p.0),
            })
            .collect())
    }

    fn count(&self, collection: &str) -> Result<usize, StoreError> {
        let request = CountRequest {
            filter: None,
            exact: true,
        };
        self.collection(collection)?.live.with(collection, |s| {
            s.count(request)
                .map_err(|e| StoreError::engine(collection, e.to_string()))
        })
    }

    fn scan_page(
        &self,
        collection: &str,
        part: Part,
        with_vectors: bool,
        from: Option<PointId>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let c = self.collection(collection)?;
        let from = from.as_ref().map(edge_id);
        let (page, next) = c.part(part).with(collection, |s| {
            scroll(collection, s, part, with_vectors, from, limit)
        })?;
        let records = page
            .into_iter()
            .map(|record| to_record(collection, record, part == Part::Live))
            .collect::<Result<_, _>>()?;
        Ok((records, next.map(edge_point_id)))
    }
}

/// Points read per page while building a collection's version index.
const INDEX_PAGE: usize = 4096;

/// Up to `limit` points of one shard in id order, from `from` on, with
/// their payloads (and vectors, if asked, of live points).
fn scroll(
    collection: &str,
    shard: &EdgeShard,
    part: Part,
    with_vectors: bool,
    from: Option<EdgePointId>,
    limit: usize,
) -> Result<(Vec<EdgeRecord>, Option<EdgePointId>), StoreError> {
    let request = ScrollRequest {
        offset: from,
        limit: Some(limit),
        filter: None,
        with_payload: Some(WithPayloadInterface::Bool(true)),
        with_vector: WithVector::Bool(with_vectors && part == Part::Live),
        order_by: None,
    };
    shard
        .scroll(request)
        .map_err(|e| StoreError::engine(collection, e.to_string()))
}

/// Indexes a point written to `part` with `payload`. Bookkeeping that
/// cannot be read counts as a chain, so that a read reports it.
fn index_write(entries: &mut HashMap<PointId, Entry>, id: PointId, part: Part, payload: &Payload) {
    let (version, chained) = bookkeeping::summary(payload).unwrap_or((unseen(), true));
    let entry = entries.entry(id).or_insert(Entry {
        version: version.clone(),
        chained,
        live: false,
        tombstone: false,
    });
    (entry.version, entry.chained) = (version, chained);
    *entry.holds(part) = true;
}

/// Unindexes a point deleted from `part`; false when `part` does not hold
/// it.
fn index_delete(entries: &mut HashMap<PointId, Entry>, id: &PointId, part: Part) -> bool {
    let Some(entry) = entries.get_mut(id) else {
        return false;
    };
    let held = std::mem::take(entry.holds(part));
    if !entry.live && !entry.tombstone {
        entries.remove(id);
    }
    held
}

/// A write the engine failed part way: what it holds is no longer known
/// without reading, so the collection's index is dropped.
fn unindexed(
    index: &mut Option<HashMap<PointId, Entry>>,
    collection: &str,
    error: StoreError,
) -> StoreError {
    if index.take().is_some() {
        tracing::warn!(
            collection,
            "a write failed; the version index is dropped, points are read from now on"
        );
    }
    error
}

fn open_shard(
    path: PathBuf,
    collection: &str,
    (dimension, distance, datatype): (usize, Distance, VectorDatatype),
    wal_segment_bytes: usize,
) -> Result<Shard, StoreError> {
    let err = |e: String| StoreError::engine(collection, format!("{}: {e}", path.display()));
    let engine = if path.join("edge_config.json").exists() {
        let engine = load_engine(&path, collection)?;
        let found = engine
            .config()
            .vectors
            .get(DEFAULT_VECTOR_NAME)
            .map(|p| (p.size, p.distance));
        if found != Some((dimension, distance)) {
            return Err(StoreError::Mismatch {
                collection: collection.to_owned(),
                reason: format!(
                    "{} holds vectors of {found:?}, the config says ({dimension}, {distance:?})",
                    path.display()
                ),
            });
        }
        let kept = kept_datatype(&engine);
        if kept != edge_datatype(datatype) {
            tracing::warn!(
                collection,
                kept = ?kept,
                configured = ?datatype,
                "the collection keeps the vector datatype it was created with; \
                 store.vector_datatype applies to collections created from now on"
            );
        }
        engine
    } else {
        let params = EdgeVectorParamsBuilder::new(dimension, distance)
            .datatype(edge_datatype(datatype))
            .build();
        let config = EdgeConfigBuilder::new()
            .vector(DEFAULT_VECTOR_NAME, params)
            .wal_options(WalOptions {
                segment_capacity: wal_segment_bytes,
                ..WalOptions::default()
            })
            .build();
        std::fs::create_dir_all(&path).map_err(|e| err(e.to_string()))?;
        EdgeShard::new(&path, config).map_err(|e| err(e.to_string()))?
    };
    Ok(Shard::new(path, engine))
}

/// Rounds each component to the nearest half-precision value, as a
/// `float16` shard keeps it (a cosine shard rounds the normalized vector,
/// which can now land one step away). The engine's log, which holds every
/// write as CBOR, then takes 3 bytes a component instead of 5. `scratch`
/// is reused from one vector to the next.
fn round_to_half(vector: &mut [f32], scratch: &mut Vec<half::f16>) {
    scratch.clear();
    scratch.resize(vector.len(), half::f16::ZERO);
    scratch.convert_from_f32_slice(vector);
    scratch.convert_to_f32_slice(vector);
}

/// How the engine keeps the shard's vectors.
fn kept_datatype(engine: &EdgeShard) -> VectorStorageDatatype {
    engine
        .config()
        .vectors
        .get(DEFAULT_VECTOR_NAME)
        .and_then(|p| p.datatype)
        .unwrap_or_default()
}

/// qdrant-edge's name for how vectors are kept.
fn edge_datatype(d: VectorDatatype) -> VectorStorageDatatype {
    match d {
        VectorDatatype::Float32 => VectorStorageDatatype::Float32,
        VectorDatatype::Float16 => VectorStorageDatatype::Float16,
    }
}

/// qdrant-edge's name for the metric the collection is kept under.
fn edge_distance(d: ConfigDistance) -> Distance {
    match engine_distance(d) {
        ConfigDistance::Cosine => Distance::Cosine,
        ConfigDistance::Dot => Distance::Dot,
        ConfigDistance::Euclid => Distance::Euclid,
        ConfigDistance::Manhattan => Distance::Manhattan,
    }
}

fn edge_id(id: &PointId) -> EdgePointId {
    match id {
        PointId::Num(n) => EdgePointId::NumId(*n),
        PointId::Uuid(u) => EdgePointId::Uuid(*u),
    }
}

fn edge_point_id(id: EdgePointId) -> PointId {
    match id {
        EdgePointId::NumId(n) => PointId::Num(n),
        EdgePointId::Uuid(u) => PointId::Uuid(u),
    }
}

/// A stored point as a record.
fn to_record(
    collection: &str,
    record: EdgeRecord,
    live: bool,
) -> Result<(PointId, Record), StoreError> {
    let id = edge_point_id(record.id);
    let payload = record.payload.map(|p| p.0).unwrap_or_default();
    let vector = live.then(|| match record.vector {
        Some(VectorStructInternal::Single(v)) => v,
        Some(VectorStructInternal::Named(mut named)) => match named.remove(DEFAULT_VECTOR_NAME) {
            Some(VectorInternal::Dense(v)) => v,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    });
    let record = stored_record(collection, &id, payload, vector)?;
    Ok((id, record))
}
