//! Applies batches of decoded delta events to the store: per collection, one
//! read of the stored records, the apply rules in timestamp order, one write
//! of what changed.
//!
//! An event that can never apply (unknown collection, wrong dimension, a
//! vector or payload that does not decode, a payload using the reserved
//! bookkeeping key) is returned as a dead letter with its reason; the rest
//! of the batch goes on. A PQ event whose codebook has not arrived is returned as
//! waiting, to be applied once it has.

use crate::apply::{Change, Effect, Record, apply, unit};
use crate::store::{Held, Known, Store, StoreError};
use std::collections::{HashMap, HashSet};
use vecsync_schemas::config::{CollectionConfig, Distance};
use vecsync_schemas::event::{Body, DeltaEvent, PointId, VectorData};
use vecsync_schemas::payload::RESERVED_KEY;
use vecsync_schemas::vector::{CodecError, Encoding, PqCodebook};

/// Why an event went to the dead-letter topic. A small fixed set, for
/// metrics labels and the dead letter's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadReason {
    UnknownCollection,
    WrongDimension,
    InvalidVector,
    InvalidPayload,
    /// The payload uses the key vecsync keeps its bookkeeping under.
    ReservedKey,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::UnknownCollection => "unknown_collection",
            DeadReason::WrongDimension => "wrong_dimension",
            DeadReason::InvalidVector => "invalid_vector",
            DeadReason::InvalidPayload => "invalid_payload",
            DeadReason::ReservedKey => "reserved_key",
        }
    }
}

/// What a batch did.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Events that changed a point.
    pub changed: u64,
    /// Their positions in the batch.
    pub changed_at: Vec<usize>,
    /// Duplicates and superseded events.
    pub unchanged: u64,
    /// Deltas kept until their base version arrives.
    pub parked: u64,
    /// Deltas that can never apply because a full write newer than their
    /// base is there (arriving after it, or parked before it), dropped; by
    /// collection.
    pub superseded: HashMap<String, u64>,
    /// Heartbeats (nothing to apply).
    pub heartbeats: u64,
    /// Position in the batch, reason and detail of each dead letter.
    pub dead: Vec<(usize, DeadReason, String)>,
    /// Positions of PQ events whose codebook has not arrived.
    pub waiting: Vec<usize>,
    /// Applied events by (origin region, operation, effect), for metrics.
    pub by_op: HashMap<(String, &'static str, &'static str), u64>,
}

/// Applies events to one store for a region's collections.
#[derive(Debug)]
pub struct Applier<'a> {
    store: &'a dyn Store,
    collections: &'a HashMap<String, CollectionConfig>,
    codebooks: &'a HashMap<String, PqCodebook>,
}

impl<'a> Applier<'a> {
    pub fn new(
        store: &'a dyn Store,
        collections: &'a HashMap<String, CollectionConfig>,
        codebooks: &'a HashMap<String, PqCodebook>,
    ) -> Self {
        Self {
            store,
            collections,
            codebooks,
        }
    }

    /// Applies `events` (in timestamp order) and writes the results. Does
    /// not flush: the caller flushes before committing offsets.
    pub fn apply_batch(&self, events: &[DeltaEvent]) -> Result<Outcome, StoreError> {
        let mut outcome = Outcome::default();
        let mut by_collection: HashMap<&str, Vec<(usize, PointId, &DeltaEvent, Change)>> =
            HashMap::new();
        for (at, event) in events.iter().enumerate() {
            let Some((collection, id)) = event.target() else {
                outcome.heartbeats += 1;
                continue;
            };
            match self.change(collection, event) {
                Ok(Some(change)) => by_collection
                    .entry(collection)
                    .or_default()
                    .push((at, id, event, change)),
                Ok(None) => outcome.waiting.push(at),
                Err((reason, detail)) => outcome.dead.push((at, reason, detail)),
            }
        }
        for (collection, changes) in by_collection {
            // A point held in both parts is written again even if its event
            // changes nothing: that write removes the stale half.
            let Held {
                records: mut held,
                split: mut dirty,
            } = self.held(collection, &changes)?;
            for (at, id, event, change) in changes {
                let orphaned = match (change.base(), held.get(&id)) {
                    (None, Some(r)) => r.orphaned_by(&event.hlc) as u64,
                    _ => 0,
                };
                let (next, effect) = apply(held.remove(&id), event.hlc.clone(), change);
                if let Some(next) = next {
                    held.insert(id, next);
                }
                let dropped = orphaned + u64::from(effect == Effect::Orphaned);
                if dropped > 0 {
                    *outcome.superseded.entry(collection.to_owned()).or_default() += dropped;
                }
                let key = (
                    event.hlc.origin.clone(),
                    event.operation().as_str(),
                    effect.as_str(),
                );
                *outcome.by_op.entry(key).or_default() += 1;
                match effect {
                    Effect::Changed => {
                        outcome.changed += 1;
                        outcome.changed_at.push(at);
                    }
                    Effect::Unchanged | Effect::Orphaned => outcome.unchanged += 1,
                    Effect::Parked => outcome.parked += 1,
                }
                if matches!(effect, Effect::Changed | Effect::Parked) {
                    dirty.insert(id);
                }
            }
            let writes: Vec<(PointId, Record)> = held
                .into_iter()
                .filter(|(id, _)| dirty.contains(id))
                .collect();
            self.store.write(collection, &writes)?;
        }
        Ok(outcome)
    }

    /// The records the changes apply to. A store that keeps a version
    /// index tells most without a read: a point it does not hold, or one
    /// whose record is its anchor and that only full writes change, needs
    /// nothing but its version (its content is replaced, or the write is
    /// old and changes nothing). The rest are read.
    fn held(
        &self,
        collection: &str,
        changes: &[(usize, PointId, &DeltaEvent, Change)],
    ) -> Result<Held, StoreError> {
        let mut ids: Vec<PointId> = changes.iter().map(|(_, id, _, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        let Some(known) = self.store.known(collection, &ids) else {
            return self.store.read_held(collection, &ids);
        };
        let deltas: HashSet<PointId> = changes
            .iter()
            .filter(|(_, _, _, change)| change.base().is_some())
            .map(|(_, id, _, _)| *id)
            .collect();
        let (mut to_read, mut simple) = (Vec::new(), Vec::new());
        for (id, known) in ids.into_iter().zip(known) {
            match known {
                Known::Absent if !deltas.contains(&id) => {}
                Known::Simple { version, live } if !deltas.contains(&id) => {
                    simple.push((id, Record::versioned(version, live)));
                }
                _ => to_read.push(id),
            }
        }
        let mut held = if to_read.is_empty() {
            Held::default()
        } else {
            self.store.read_held(collection, &to_read)?
        };
        held.records.extend(simple);
        Ok(held)
    }

    /// The change an event makes, `None` while its PQ codebook is missing,
    /// or why it can never apply.
    fn change(
        &self,
        collection: &str,
        event: &DeltaEvent,
    ) -> Result<Option<Change>, (DeadReason, String)> {
        let config = self.collections.get(collection).ok_or_else(|| {
            (
                DeadReason::UnknownCollection,
                format!("collection {collection:?} is not configured in this region"),
            )
        })?;
        let dimension = config.dimension as usize;
        let payload = |p: Option<&vecsync_schemas::payload::Payload>| {
            let json = p
                .map(|p| p.to_json())
                .transpose()
                .map_err(|e| (DeadReason::InvalidPayload, e.to_string()))?;
            if json.as_ref().is_some_and(|j| j.contains_key(RESERVED_KEY)) {
                return Err((
                    DeadReason::ReservedKey,
                    format!(
                        "the payload uses the key {RESERVED_KEY:?}, reserved for vecsync's bookkeeping"
                    ),
                ));
            }
            Ok(json)
        };
        let wrong_dim = |got: usize| {
            (
                DeadReason::WrongDimension,
                format!("{got} dimensions; collection {collection} has {dimension}"),
            )
        };
        Ok(Some(match &event.body {
            Body::Upsert(u) => match &u.vector {
                VectorData::Full(v) => {
                    if v.dim as usize != dimension {
                        return Err(wrong_dim(v.dim as usize));
                    }
                    let book = match (&v.encoding, &v.codebook_id) {
                        (Encoding::Pq, Some(id)) => match self.codebooks.get(id) {
                            Some(book) => Some(book),
                            None => return Ok(None),
                        },
                        _ => None,
                    };
                    let mut vector = v
                        .decode(book)
                        .map_err(|e: CodecError| (DeadReason::InvalidVector, e.to_string()))?;
                    if config.distance == Distance::Cosine {
                        vector = unit(vector);
                    }
                    Change::Upsert {
                        vector,
                        payload: payload(u.payload.as_ref())?,
                    }
                }
                VectorData::Sparse(delta) => {
                    if delta.dim as usize != dimension {
                        return Err(wrong_dim(delta.dim as usize));
                    }
                    delta
                        .validate()
                        .map_err(|e| (DeadReason::InvalidVector, e.to_string()))?;
                    Change::Sparse {
                        delta: delta.clone(),
                        payload: payload(u.payload.as_ref())?,
                    }
                }
            },
            Body::Delete(_) => Change::Delete,
            Body::PayloadPatch(p) => Change::Patch {
                base: p.base_version.clone(),
                payload: payload(Some(&p.payload))?.unwrap_or_default(),
            },
            Body::Heartbeat(_) => unreachable!("heartbeats have no target"),
        }))
    }
}
