//! Where applied state lives (DESIGN.md §4), behind one seam, [`Store`]:
//!
//! - [`edge`]: Qdrant's engine in-process (`qdrant-edge`), the embedded
//!   default.
//! - [`server`]: a Qdrant server through `qdrant-client` (gRPC).
//!
//! Both keep a collection's live points in the collection itself and its
//! tombstones in `<collection>.tombstones`, a one-dimensional collection
//! that searches never see, so that an older upsert arriving after a delete
//! can be recognized and refused. Every point carries its bookkeeping under
//! [`crate::bookkeeping::KEY`].

pub mod edge;
pub mod server;

use crate::apply::{Change, Content, Payload, Record, Versioned, unseen};
use crate::bookkeeping::{self, KEY};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use vecsync_schemas::config::{Distance, StoreBackend, StoreConfig};
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine refused or failed an operation, or the server could not
    /// be reached; retry with backoff.
    #[error("store collection {collection}: {message}")]
    Engine { collection: String, message: String },
    /// The server refused a call (a bad API key, a request it will not
    /// take): retrying will not help, an operator must.
    #[error("store collection {collection}: refused: {message}")]
    Refused { collection: String, message: String },
    /// A collection was used before `ensure_collection`, or does not exist.
    #[error("store has no collection {0:?}")]
    UnknownCollection(String),
    /// The stored collection does not match the config.
    #[error("store collection {collection}: {reason}")]
    Mismatch { collection: String, reason: String },
    /// A flush or a write failed in the engine (an I/O error: a full or
    /// failing disk), and what the store applied since its last flush may
    /// be lost: nothing after the last commit may be committed. It stays
    /// so until the store is opened again (a restart), which replays from
    /// the last commit.
    #[error(
        "store collection {collection}: {message}, so what was applied since the last flush \
         may be lost; restart once the cause is fixed, and the worker replays everything after \
         its last commit"
    )]
    Lost { collection: String, message: String },
    /// A stored point's bookkeeping cannot be read.
    #[error("store collection {collection}, point {id}: unreadable bookkeeping: {reason}")]
    Corrupt {
        collection: String,
        id: String,
        reason: String,
    },
}

impl StoreError {
    pub(crate) fn engine(collection: &str, message: impl Into<String>) -> Self {
        Self::Engine {
            collection: collection.to_owned(),
            message: message.into(),
        }
    }
}

/// Which half of a collection: its live points or its tombstones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Live,
    Tombstones,
}

/// What [`Store::expire`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    pub tombstones_removed: u64,
    pub chains_compacted: u64,
    /// Deltas that never found their base before the horizon.
    pub parked_dropped: u64,
}

impl std::ops::AddAssign for Expired {
    fn add_assign(&mut self, other: Self) {
        self.tombstones_removed += other.tombstones_removed;
        self.chains_compacted += other.chains_compacted;
        self.parked_dropped += other.parked_dropped;
    }
}

/// How far a pass of [`Store::expire_page`] over a collection has come:
/// its tombstones first, then its live records, each from an id on.
#[derive(Debug, Clone, PartialEq)]
pub enum Pass {
    Tombstones(Option<PointId>),
    Live(Option<PointId>),
    Done,
}

impl Default for Pass {
    fn default() -> Self {
        Pass::Tombstones(None)
    }
}

/// What [`Store::read_held`] found.
#[derive(Debug, Default)]
pub struct Held {
    pub records: HashMap<PointId, Record>,
    /// The points found in both parts, which must be written again.
    pub split: HashSet<PointId>,
}

/// One page of records of a part, and the id the next page starts at
/// (`None` after the last).
pub type Page = (Vec<(PointId, Record)>, Option<PointId>);

/// Points read per page when scanning a collection.
pub(crate) const SCAN_PAGE: usize = 512;

/// What a store knows of a point without reading it, from the version
/// index it keeps of its own writes ([`Store::known`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Known {
    /// The store holds no record of the point.
    Absent,
    /// A record with no deltas in its chain: its anchor is its state.
    Simple { version: Hlc, live: bool },
    /// A record with deltas: only a read tells its state.
    Chained,
}

/// A nearest-neighbour search of a collection's live points.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// The query, as the collection keeps vectors (a unit vector for a
    /// cosine collection).
    pub vector: Vec<f32>,
    pub limit: usize,
    pub with_payload: bool,
    pub filter: Option<crate::search::Filter>,
}

/// One point a search found.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: PointId,
    pub score: f32,
    /// With the bookkeeping, when asked for.
    pub payload: Option<Payload>,
}

/// A region's vector store. Every call is synchronous and may block on
/// disk or network: call it off the async executor.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Opens a collection, creating it with `dimension` and `distance` when
    /// missing. An existing collection of another dimension or distance is
    /// an error, not a silent mix.
    fn ensure_collection(
        &self,
        name: &str,
        dimension: usize,
        distance: Distance,
    ) -> Result<(), StoreError>;

    /// Opens a collection that exists, with the shape it was created with
    /// (for inspecting a store without its config).
    fn open_collection(&self, name: &str) -> Result<(), StoreError>;

    /// The records of `ids` that one part holds, in one call. Live records
    /// come with their vectors.
    fn get(
        &self,
        collection: &str,
        part: Part,
        ids: &[PointId],
    ) -> Result<Vec<(PointId, Record)>, StoreError>;

    /// Writes points (id, vector, payload with bookkeeping) to one part.
    fn upsert(
        &self,
        collection: &str,
        part: Part,
        points: Vec<(PointId, Vec<f32>, Payload)>,
    ) -> Result<(), StoreError>;

    /// Removes points from one part.
    fn delete(&self, collection: &str, part: Part, ids: &[PointId]) -> Result<(), StoreError>;

    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// What the store knows of `ids` without reading them, in their order,
    /// when it keeps a version index of everything it holds (the embedded
    /// store, its only writer, does); `None` when a read must tell.
    fn known(&self, collection: &str, ids: &[PointId]) -> Option<Vec<Known>> {
        let _ = (collection, ids);
        None
    }

    /// Whether the store answers, for readiness. An embedded store always
    /// does.
    fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Live points in a collection (tombstones not counted).
    fn count(&self, collection: &str) -> Result<usize, StoreError>;

    /// The live points nearest to `search.vector` by the collection's
    /// distance that pass its filter, best first, with their scores.
    fn search_points(&self, collection: &str, search: &Search) -> Result<Vec<Hit>, StoreError>;

    /// Up to `limit` records of one part in id order, from the id `from`
    /// on (from the first without). Without `with_vectors`, live records
    /// come with empty vectors.
    fn scan_page(
        &self,
        collection: &str,
        part: Part,
        with_vectors: bool,
        from: Option<PointId>,
        limit: usize,
    ) -> Result<Page, StoreError>;

    /// Calls `visit` with every record of one part, page by page.
    fn scan_records(
        &self,
        collection: &str,
        part: Part,
        with_vectors: bool,
        visit: &mut dyn FnMut(PointId, Record) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut from = None;
        loop {
            let (page, next) = self.scan_page(collection, part, with_vectors, from, SCAN_PAGE)?;
            for (id, record) in page {
                visit(id, record)?;
            }
            match next {
                Some(next) => from = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// The records of `ids` (live or tombstone) that the store holds, in one
    /// read per part. A point found in both reads as the newer of its two
    /// records ([`Store::read_held`]).
    fn read(
        &self,
        collection: &str,
        ids: &[PointId],
    ) -> Result<HashMap<PointId, Record>, StoreError> {
        Ok(self.read_held(collection, ids)?.records)
    }

    /// [`Store::read`], and which points were found in both parts: a write
    /// moving a point between the parts that a crash cut short, after a
    /// flush that ran between its halves had made the first one durable.
    /// Such a point reads as the newer of its two records; the next write
    /// of its record, whatever its event changes, removes the other.
    fn read_held(&self, collection: &str, ids: &[PointId]) -> Result<Held, StoreError> {
        let mut held = Held {
            records: self.get(collection, Part::Live, ids)?.into_iter().collect(),
            split: HashSet::new(),
        };
        for (id, tombstone) in self.get(collection, Part::Tombstones, ids)? {
            if let Some(live) = held.records.get(&id) {
                held.split.insert(id);
                if live.current().0.version > tombstone.current().0.version {
                    continue;
                }
            }
            held.records.insert(id, tombstone);
        }
        Ok(held)
    }

    /// Writes records: live ones to the collection (and out of the
    /// tombstones), deleted ones the other way round.
    ///
    /// A point moving between the parts is written to its new part before
    /// it leaves the old one, so a crash between the two leaves it in both
    /// (which its replay sets right), never in neither. The tombstones are
    /// written first and the collection after, the reverse of the order the
    /// embedded store flushes them in, so that a batch which meets a flush
    /// waits for one part's flush, not both.
    fn write(&self, collection: &str, records: &[(PointId, Record)]) -> Result<(), StoreError> {
        let (mut live, mut dead) = (Vec::new(), Vec::new());
        for (id, record) in records {
            let (part, vector, payload) = placed(record);
            match part {
                Part::Live => live.push((*id, vector, payload)),
                Part::Tombstones => dead.push((*id, vector, payload)),
            }
        }
        let ids = |points: &[(PointId, Vec<f32>, Payload)]| -> Vec<PointId> {
            points.iter().map(|(id, _, _)| *id).collect()
        };
        let (live_ids, dead_ids) = (ids(&live), ids(&dead));
        if !dead.is_empty() {
            self.upsert(collection, Part::Tombstones, dead)?;
        }
        if !live.is_empty() {
            self.upsert(collection, Part::Live, live)?;
        }
        if !dead_ids.is_empty() {
            self.delete(collection, Part::Live, &dead_ids)?;
        }
        if !live_ids.is_empty() {
            self.delete(collection, Part::Tombstones, &live_ids)?;
        }
        Ok(())
    }

    /// Calls `visit` with every live point's id and current state.
    fn scan(
        &self,
        collection: &str,
        visit: &mut dyn FnMut(PointId, Versioned),
    ) -> Result<(), StoreError> {
        self.scan_records(collection, Part::Live, true, &mut |id, record| {
            visit(id, record.current().0);
            Ok(())
        })
    }

    /// Forgets what no event can still need once every region has passed
    /// `horizon` (DESIGN.md §3: tombstones are kept longer than any
    /// replication delay): tombstones older than it are removed, and delta
    /// chains are folded into their anchors up to it. The whole collection
    /// at once; [`Store::expire_page`] does it a page at a time.
    fn expire(&self, collection: &str, horizon: &Hlc) -> Result<Expired, StoreError> {
        let (mut expired, mut pass) = (Expired::default(), Pass::default());
        while pass != Pass::Done {
            let (page, next) = self.expire_page(collection, horizon, pass, SCAN_PAGE)?;
            expired += page;
            pass = next;
        }
        Ok(expired)
    }

    /// One step of [`Store::expire`]: the next `limit` records of the pass
    /// `at`, and where the pass goes on. Each step reads one page and
    /// rewrites what of it has aged, so a worker can interleave steps with
    /// its batches.
    fn expire_page(
        &self,
        collection: &str,
        horizon: &Hlc,
        at: Pass,
        limit: usize,
    ) -> Result<(Expired, Pass), StoreError> {
        let (page, next) = self.plan_expiry(collection, horizon, at, limit)?;
        Ok((self.carry_out(collection, page)?, next))
    }

    /// The first half of [`Store::expire_page`]: reads the page and works
    /// out what expiring it changes, writing nothing, so that a worker can
    /// dead-letter the deltas it drops before they are gone.
    fn plan_expiry(
        &self,
        collection: &str,
        horizon: &Hlc,
        at: Pass,
        limit: usize,
    ) -> Result<(ExpiryPage, Pass), StoreError> {
        let (part, from) = match at {
            Pass::Tombstones(from) => (Part::Tombstones, from),
            Pass::Live(from) => (Part::Live, from),
            Pass::Done => return Ok((ExpiryPage::default(), Pass::Done)),
        };
        let (page, next) = self.scan_page(collection, part, false, from, limit)?;
        let next = match (part, next) {
            (Part::Tombstones, Some(id)) => Pass::Tombstones(Some(id)),
            (Part::Tombstones, None) => Pass::Live(None),
            (Part::Live, Some(id)) => Pass::Live(Some(id)),
            (Part::Live, None) => Pass::Done,
        };
        let mut plan = ExpiryPage::default();
        let mut with_chains = Vec::new();
        for (id, rec) in page {
            if !rec.chain.is_empty() {
                with_chains.push(id);
            } else if part == Part::Tombstones && rec.anchor.version < *horizon {
                plan.forget.push(id);
            }
        }
        for (id, mut record) in self.read(collection, &with_chains)? {
            for (version, change) in crate::apply::compact(&mut record, horizon) {
                plan.never_applied.push(NeverApplied {
                    id,
                    version,
                    change,
                });
            }
            plan.rewrite.push((id, record));
        }
        Ok((plan, next))
    }

    /// The second half of [`Store::expire_page`]: writes what
    /// [`Store::plan_expiry`] worked out.
    fn carry_out(&self, collection: &str, page: ExpiryPage) -> Result<Expired, StoreError> {
        self.write(collection, &page.rewrite)?;
        if !page.forget.is_empty() {
            self.delete(collection, Part::Tombstones, &page.forget)?;
        }
        Ok(Expired {
            tombstones_removed: page.forget.len() as u64,
            chains_compacted: page.rewrite.len() as u64,
            parked_dropped: page.never_applied.len() as u64,
        })
    }
}

/// What expiring one page changes ([`Store::plan_expiry`]).
#[derive(Debug, Default)]
pub struct ExpiryPage {
    /// Records whose chains are folded up to the horizon.
    rewrite: Vec<(PointId, Record)>,
    /// Tombstones older than the horizon.
    forget: Vec<PointId>,
    /// The deltas the folding drops: their base never came.
    pub never_applied: Vec<NeverApplied>,
}

/// A parked delta that expiry drops because the version it builds on
/// never arrived before the horizon.
#[derive(Debug, Clone, PartialEq)]
pub struct NeverApplied {
    pub id: PointId,
    pub version: Hlc,
    pub change: Change,
}

/// A record as a store keeps it: the vector of a live point (`None` for a
/// tombstone) and its payload with the bookkeeping under [`KEY`].
pub(crate) fn stored_point(record: &Record) -> (Option<Vec<f32>>, Payload) {
    let (content, book) = bookkeeping::encode(record);
    match content {
        Some(Content {
            vector,
            mut payload,
        }) => {
            payload.insert(KEY.into(), book);
            (Some(vector), payload)
        }
        None => (None, Payload::from_iter([(KEY.to_owned(), book)])),
    }
}

/// Where [`Store::write`] puts a record, and as what: the part, the
/// vector (tombstones carry a one-dimensional placeholder) and the payload
/// with the bookkeeping.
pub fn placed(record: &Record) -> (Part, Vec<f32>, Payload) {
    match stored_point(record) {
        (Some(vector), payload) => (Part::Live, vector, payload),
        (None, payload) => (Part::Tombstones, vec![0.0], payload),
    }
}

/// The record of a stored point: its payload and, when live, its vector.
/// A point without bookkeeping (written by something else) is taken as
/// older than any event.
pub(crate) fn stored_record(
    collection: &str,
    id: &PointId,
    mut payload: Payload,
    vector: Option<Vec<f32>>,
) -> Result<Record, StoreError> {
    let book = payload
        .remove(KEY)
        .unwrap_or_else(|| serde_json::json!({ "v": unseen().to_string() }));
    let content = vector.map(|vector| Content { vector, payload });
    bookkeeping::decode(content, &book).map_err(|reason| StoreError::Corrupt {
        collection: collection.to_owned(),
        id: id.to_string(),
        reason,
    })
}

/// The metric a collection is kept under in the engine: a cosine collection
/// holds unit vectors ([`crate::apply::unit`]) under the dot product, which
/// equals cosine on unit vectors, so the engine never normalizes again.
pub(crate) fn engine_distance(d: Distance) -> Distance {
    match d {
        Distance::Cosine => Distance::Dot,
        other => other,
    }
}

/// The name of a collection's tombstone collection.
pub(crate) fn tombstones_of(collection: &str) -> String {
    format!("{collection}.tombstones")
}

/// Opens the store a region's config names.
pub fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config.backend {
        StoreBackend::Edge => Arc::new(edge::EdgeStore::configured(config)?),
        StoreBackend::Qdrant => Arc::new(server::ServerStore::connect(config)?),
    })
}
