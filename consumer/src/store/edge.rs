//! The embedded store: Qdrant's engine in-process (`qdrant-edge`), one shard
//! directory per collection (DESIGN.md §4).
//!
//! Live points are in `<root>/<collection>/`, searchable as usual. Tombstones
//! are in `<root>/<collection>.tombstones/`, a one-dimensional shard that
//! searches never see, so that an older upsert arriving after a delete can
//! be recognized and refused. Every call is synchronous: run them off the
//! async executor. qdrant-edge 0.7.2 does not replay its write-ahead log
//! after a crash, so what matters is [`EdgeStore::flush`]: consumers commit
//! offsets only after it.

use super::StoreError;
use crate::apply::{Content, Record, Versioned, unseen};
use crate::bookkeeping::{self, KEY};
use qdrant_edge::{
    CountRequest, DEFAULT_VECTOR_NAME, Distance, EdgeConfigBuilder, EdgeShard,
    EdgeVectorParamsBuilder, PointId as EdgePointId, PointInsertOperations, PointOperations,
    PointStruct, PointStructPersisted, Record as EdgeRecord, ScrollRequest, UpdateOperation,
    VectorInternal, VectorStructInternal, WithPayloadInterface, WithVector,
};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use vecsync_schemas::config::Distance as ConfigDistance;
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;

/// The live and tombstone shards of one collection.
struct Collection {
    live: EdgeShard,
    tombstones: EdgeShard,
}

/// Collections under one directory.
pub struct EdgeStore {
    root: PathBuf,
    collections: RwLock<HashMap<String, Arc<Collection>>>,
}

impl std::fmt::Debug for EdgeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Points read per page when scanning a collection.
const SCAN_PAGE: usize = 512;

/// What [`EdgeStore::expire`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    pub tombstones_removed: u64,
    pub chains_compacted: u64,
    /// Deltas that never found their base before the horizon.
    pub parked_dropped: u64,
}

impl EdgeStore {
    /// A store rooted at `root` (created when missing).
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root)
            .map_err(|e| StoreError::engine("", format!("{}: {e}", root.display())))?;
        Ok(Self {
            root: root.to_owned(),
            collections: RwLock::new(HashMap::new()),
        })
    }

    /// Opens a collection's shards, creating them with `dimension` and
    /// `distance` when missing. An existing collection of another dimension
    /// or distance is an error, not a silent mix.
    pub fn ensure_collection(
        &self,
        name: &str,
        dimension: usize,
        distance: ConfigDistance,
    ) -> Result<(), StoreError> {
        if self.read_lock().contains_key(name) {
            return Ok(());
        }
        let live = open_shard(
            &self.root.join(name),
            name,
            dimension,
            edge_distance(distance),
        )?;
        let tombstones = open_shard(
            &self.root.join(format!("{name}.tombstones")),
            name,
            1,
            Distance::Dot,
        )?;
        self.collections
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), Arc::new(Collection { live, tombstones }));
        Ok(())
    }

    /// Opens a collection that exists, with the shape it was created with
    /// (for inspecting a store without its config).
    pub fn open_collection(&self, name: &str) -> Result<(), StoreError> {
        if self.read_lock().contains_key(name) {
            return Ok(());
        }
        let load = |path: PathBuf| {
            if !path.join("edge_config.json").exists() {
                return Err(StoreError::UnknownCollection(name.to_owned()));
            }
            EdgeShard::load(&path, None)
                .map_err(|e| StoreError::engine(name, format!("{}: {e}", path.display())))
        };
        let live = load(self.root.join(name))?;
        let tombstones = load(self.root.join(format!("{name}.tombstones")))?;
        self.collections
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), Arc::new(Collection { live, tombstones }));
        Ok(())
    }

    /// The records of `ids` (live or tombstone) that the store holds.
    pub fn read(
        &self,
        collection: &str,
        ids: &[PointId],
    ) -> Result<HashMap<PointId, Record>, StoreError> {
        let c = self.collection(collection)?;
        let edge_ids: Vec<EdgePointId> = ids.iter().map(edge_id).collect();
        let err = |e: qdrant_edge::OperationError| StoreError::engine(collection, e.to_string());
        let mut out = HashMap::with_capacity(ids.len());
        let live = c
            .live
            .retrieve(
                &edge_ids,
                Some(WithPayloadInterface::Bool(true)),
                Some(WithVector::Bool(true)),
            )
            .map_err(err)?;
        let dead = c
            .tombstones
            .retrieve(
                &edge_ids,
                Some(WithPayloadInterface::Bool(true)),
                Some(WithVector::Bool(false)),
            )
            .map_err(err)?;
        for (record, is_live) in live
            .into_iter()
            .map(|r| (r, true))
            .chain(dead.into_iter().map(|r| (r, false)))
        {
            let (id, rec) = to_record(collection, record, is_live)?;
            out.insert(id, rec);
        }
        Ok(out)
    }

    /// Writes records: live ones to the live shard (and out of the
    /// tombstones), deleted ones the other way round.
    pub fn write(&self, collection: &str, records: &[(PointId, Record)]) -> Result<(), StoreError> {
        let c = self.collection(collection)?;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (id, record) in records {
            let (content, book) = bookkeeping::encode(record);
            match content {
                Some(Content {
                    vector,
                    mut payload,
                }) => {
                    payload.insert(KEY.into(), book);
                    live.push(PointStruct::new(edge_id(id), vector, Value::Object(payload)).into());
                }
                None => {
                    let payload = serde_json::json!({ KEY: book });
                    dead.push(PointStruct::new(edge_id(id), vec![0.0f32], payload).into());
                }
            }
        }
        let err = |e: qdrant_edge::OperationError| StoreError::engine(collection, e.to_string());
        let ids = |points: &[PointStructPersisted]| points.iter().map(|p| p.id).collect::<Vec<_>>();
        let (live_ids, dead_ids) = (ids(&live), ids(&dead));
        if !live.is_empty() {
            c.live.update(upsert(live)).map_err(err)?;
            c.tombstones.update(delete(live_ids)).map_err(err)?;
        }
        if !dead.is_empty() {
            c.tombstones.update(upsert(dead)).map_err(err)?;
            c.live.update(delete(dead_ids)).map_err(err)?;
        }
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) {
        for c in self.read_lock().values() {
            c.live.flush();
            c.tombstones.flush();
        }
    }

    /// Live points in a collection (tombstones not counted).
    pub fn count(&self, collection: &str) -> Result<usize, StoreError> {
        let request = CountRequest {
            filter: None,
            exact: true,
        };
        self.collection(collection)?
            .live
            .count(request)
            .map_err(|e| StoreError::engine(collection, e.to_string()))
    }

    /// Calls `visit` with every live point's id and current state.
    pub fn scan(
        &self,
        collection: &str,
        mut visit: impl FnMut(PointId, Versioned),
    ) -> Result<(), StoreError> {
        let c = self.collection(collection)?;
        scroll(collection, &c.live, true, |record| {
            let (id, rec) = to_record(collection, record, true)?;
            visit(id, rec.current().0);
            Ok(())
        })
    }

    /// Forgets what no event can still need once every region has passed
    /// `horizon` (DESIGN.md §3: tombstones are kept longer than any
    /// replication delay): tombstones older than it are removed, and delta
    /// chains are folded into their anchors up to it.
    pub fn expire(&self, collection: &str, horizon: &Hlc) -> Result<Expired, StoreError> {
        let c = self.collection(collection)?;
        let mut expired = Expired::default();
        let mut old_tombstones = Vec::new();
        let mut with_chains = Vec::new();
        scroll(collection, &c.tombstones, false, |record| {
            let (id, rec) = to_record(collection, record, false)?;
            if rec.chain.is_empty() && rec.anchor.version < *horizon {
                old_tombstones.push(id);
            } else if !rec.chain.is_empty() {
                with_chains.push(id);
            }
            Ok(())
        })?;
        scroll(collection, &c.live, false, |record| {
            let has_chain = record
                .payload
                .as_ref()
                .and_then(|p| p.0.get(KEY))
                .is_some_and(|book| book.get("chain").is_some());
            if has_chain {
                with_chains.push(edge_point_id(record.id));
            }
            Ok(())
        })?;
        let mut rewritten = Vec::new();
        for (id, mut record) in self.read(collection, &with_chains)? {
            expired.parked_dropped += crate::apply::compact(&mut record, horizon) as u64;
            expired.chains_compacted += 1;
            rewritten.push((id, record));
        }
        self.write(collection, &rewritten)?;
        if !old_tombstones.is_empty() {
            expired.tombstones_removed = old_tombstones.len() as u64;
            let ids = old_tombstones.iter().map(edge_id).collect();
            c.tombstones
                .update(delete(ids))
                .map_err(|e| StoreError::engine(collection, e.to_string()))?;
        }
        Ok(expired)
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

fn open_shard(
    path: &Path,
    collection: &str,
    dimension: usize,
    distance: Distance,
) -> Result<EdgeShard, StoreError> {
    let err = |e: String| StoreError::engine(collection, format!("{}: {e}", path.display()));
    let config = EdgeConfigBuilder::new()
        .vector(
            DEFAULT_VECTOR_NAME,
            EdgeVectorParamsBuilder::new(dimension, distance).build(),
        )
        .build();
    if path.join("edge_config.json").exists() {
        let shard = EdgeShard::load(path, None).map_err(|e| err(e.to_string()))?;
        let found = shard
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
        Ok(shard)
    } else {
        std::fs::create_dir_all(path).map_err(|e| err(e.to_string()))?;
        EdgeShard::new(path, config).map_err(|e| err(e.to_string()))
    }
}

/// Visits every point of a shard, page by page.
fn scroll(
    collection: &str,
    shard: &EdgeShard,
    with_vector: bool,
    mut visit: impl FnMut(EdgeRecord) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut offset = None;
    loop {
        let request = ScrollRequest {
            offset,
            limit: Some(SCAN_PAGE),
            filter: None,
            with_payload: Some(WithPayloadInterface::Bool(true)),
            with_vector: WithVector::Bool(with_vector),
            order_by: None,
        };
        let (page, next) = shard
            .scroll(request)
            .map_err(|e| StoreError::engine(collection, e.to_string()))?;
        for record in page {
            visit(record)?;
        }
        match next {
            Some(n) => offset = Some(n),
            None => return Ok(()),
        }
    }
}

fn edge_distance(d: ConfigDistance) -> Distance {
    match d {
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

fn upsert(points: Vec<PointStructPersisted>) -> UpdateOperation {
    UpdateOperation::PointOperation(PointOperations::UpsertPoints(
        PointInsertOperations::PointsList(points),
    ))
}

fn delete(ids: Vec<EdgePointId>) -> UpdateOperation {
    UpdateOperation::PointOperation(PointOperations::DeletePoints { ids })
}

fn edge_point_id(id: EdgePointId) -> PointId {
    match id {
        EdgePointId::NumId(n) => PointId::Num(n),
        EdgePointId::Uuid(u) => PointId::Uuid(u),
    }
}

/// A stored point as a record. A point without bookkeeping (written by
/// something else) is taken as older than any event.
fn to_record(
    collection: &str,
    record: EdgeRecord,
    live: bool,
) -> Result<(PointId, Record), StoreError> {
    let id = edge_point_id(record.id);
    let mut payload = record.payload.map(|p| p.0).unwrap_or_default();
    let book = payload
        .remove(KEY)
        .unwrap_or_else(|| serde_json::json!({ "v": unseen().to_string() }));
    let content = live.then(|| Content {
        vector: match record.vector {
            Some(VectorStructInternal::Single(v)) => v,
            Some(VectorStructInternal::Named(mut named)) => match named.remove(DEFAULT_VECTOR_NAME)
            {
                Some(VectorInternal::Dense(v)) => v,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        },
        payload,
    });
    let rec = bookkeeping::decode(content, &book).map_err(|reason| StoreError::Corrupt {
        collection: collection.to_owned(),
        id: id.to_string(),
        reason,
    })?;
    Ok((id, rec))
}
