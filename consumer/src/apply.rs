//! The apply rules: what one point becomes after a set of changes, whatever
//! order (and however often) they arrive in (DESIGN.md §3).
//!
//! The state a set of changes defines is their fold in HLC order:
//! - an upsert with a full vector sets the vector and payload;
//! - a delete leaves a versioned tombstone;
//! - a payload patch or a sparse vector delta applies only when the point is
//!   live at exactly the version it names, and does nothing otherwise.
//!
//! A replica cannot see the whole set at once, so each point keeps an
//! *anchor* (the newest full write received: upsert or delete, with its
//! content) and the *chain* of deltas received since it. The current state is
//! the fold of the chain over the anchor, recomputed when either changes:
//! - a full write newer than the anchor becomes the anchor, and deltas newer
//!   than it stay in the chain (they may name it as their base);
//! - a change older than the anchor is superseded: the fold from the anchor
//!   on never sees it;
//! - a delta whose base is not (yet) the state before it stays in the chain
//!   without effect (parked); it takes effect if its base arrives later;
//! - a delta whose base is older than the anchor can never apply (the state
//!   before it is the anchor or newer, whatever arrives): it is not kept,
//!   arriving ([`Effect::Orphaned`]) or already in the chain when a newer
//!   full write arrives.
//!
//! Applying a change twice changes nothing (same timestamp, same change), so
//! at-least-once delivery is exactly once in effect. Chains are folded into
//! the anchor once they are older than the tombstone horizon ([`compact`]),
//! after which nothing older is expected.

use serde_json::{Map, Value};
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::vector::SparseDelta;

/// A JSON payload.
pub type Payload = Map<String, Value>;

/// One change to one point, with its vector already decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Set the vector and the payload (`None`: no payload).
    Upsert {
        vector: Vec<f32>,
        payload: Option<Payload>,
    },
    /// Remove the point (a tombstone at this version).
    Delete,
    /// Change some dimensions of the vector at `delta.base_version`; a
    /// payload, when given, replaces the stored one.
    Sparse {
        delta: SparseDelta,
        payload: Option<Payload>,
    },
    /// Set payload keys on top of `base`.
    Patch { base: Hlc, payload: Payload },
}

/// `v` scaled to unit length (a zero vector is left as it is): how vectors
/// of cosine collections are kept. vecsync normalizes them itself, with this
/// one deterministic function, and stores them in the engine under the dot
/// product (equal to cosine on unit vectors), so that the engine does not
/// normalize again. Every region then holds the same bits, whatever path a
/// vector took and whatever machine normalized it.
pub fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
    v
}

impl Change {
    fn is_full(&self) -> bool {
        matches!(self, Change::Upsert { .. } | Change::Delete)
    }

    /// The version a delta applies on top of; `None` for a full write.
    pub fn base(&self) -> Option<&Hlc> {
        match self {
            Change::Patch { base, .. } => Some(base),
            Change::Sparse { delta, .. } => Some(&delta.base_version),
            Change::Upsert { .. } | Change::Delete => None,
        }
    }

    /// Whether this delta can still apply on top of `anchor`: a full write
    /// always can; a delta only on the anchor's version or a newer one.
    fn can_follow(&self, anchor: &Hlc) -> bool {
        self.base().is_none_or(|base| base >= anchor)
    }
}

/// A live point's content.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    pub vector: Vec<f32>,
    pub payload: Payload,
}

/// What a point is: live with content, or a tombstone.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Live(Content),
    Deleted,
}

/// A point's version and state.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub version: Hlc,
    pub state: State,
}

/// Everything kept about one point: the anchor and the chain after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The newest full write received (or the compacted state).
    pub anchor: Versioned,
    /// Deltas newer than the anchor, in HLC order, applied or parked.
    pub chain: Vec<(Hlc, Change)>,
}

/// What applying one change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The point's state or version changed; the store must be written.
    Changed,
    /// Already there (a duplicate) or superseded by something newer.
    Unchanged,
    /// Kept, but without effect until its base version arrives.
    Parked,
    /// A delta on a version older than the point's newest full write: it
    /// can never apply, and is not kept (a concurrent full write won).
    Orphaned,
}

impl Effect {
    /// The `result` label of `vecsync_consumer_events_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Changed => "changed",
            Effect::Unchanged => "unchanged",
            Effect::Parked => "parked",
            Effect::Orphaned => "orphaned",
        }
    }
}

impl Record {
    /// A record holding one full write.
    fn anchored(version: Hlc, change: Change) -> Self {
        let state = match change {
            Change::Upsert { vector, payload } => State::Live(Content {
                vector,
                payload: payload.unwrap_or_default(),
            }),
            _ => State::Deleted,
        };
        Self {
            anchor: Versioned { version, state },
            chain: Vec::new(),
        }
    }

    /// A record known only by its version: live (with no content read) or
    /// deleted, and no chain. Enough for full writes, which replace the
    /// content when newer and change nothing otherwise; never written as
    /// it is.
    pub fn versioned(version: Hlc, live: bool) -> Self {
        let change = if live {
            Change::Upsert {
                vector: Vec::new(),
                payload: None,
            }
        } else {
            Change::Delete
        };
        Self::anchored(version, change)
    }

    /// Deltas of the chain that a full write at `version` leaves with
    /// nothing to apply on (after it, on a base before it): it drops them.
    pub fn orphaned_by(&self, version: &Hlc) -> usize {
        if *version <= self.anchor.version {
            return 0;
        }
        self.chain
            .iter()
            .filter(|(h, c)| h > version && !c.can_follow(version))
            .count()
    }

    /// The point as the fold of the chain over the anchor defines it, and
    /// how many deltas of the chain are parked (without effect).
    pub fn current(&self) -> (Versioned, usize) {
        let mut now = self.anchor.clone();
        let mut parked = 0;
        for (hlc, change) in &self.chain {
            if !step(&mut now, hlc, change) {
                parked += 1;
            }
        }
        (now, parked)
    }
}

/// The version of a point nothing has been applied to: older than every
/// real timestamp, from an origin no region can be named.
pub fn unseen() -> Hlc {
    Hlc::zero("~")
}

/// The records a set of writes defines: every write applied in version
/// order, whatever order they were made in. What every region holds once
/// it has applied them all; the oracle convergence tests compare stores
/// with (through [`crate::digest::Digest::of_records`]).
pub fn fold(mut writes: Vec<(PointId, Hlc, Change)>) -> std::collections::HashMap<PointId, Record> {
    writes.sort_by(|a, b| a.1.cmp(&b.1));
    let mut records = std::collections::HashMap::new();
    for (id, version, change) in writes {
        if let (Some(next), _) = apply(records.remove(&id), version, change) {
            records.insert(id, next);
        }
    }
    records
}

/// Applies one change at `version` to a point's record (`None`: nothing
/// known about the point). Returns the new record and what changed.
pub fn apply(record: Option<Record>, version: Hlc, change: Change) -> (Option<Record>, Effect) {
    let Some(mut record) = record else {
        if change.is_full() {
            return (Some(Record::anchored(version, change)), Effect::Changed);
        }
        // A delta for a point never seen: its base has not arrived. Anchor
        // on a tombstone older than anything, so the base can come.
        let record = Record {
            anchor: Versioned {
                version: unseen(),
                state: State::Deleted,
            },
            chain: vec![(version, change)],
        };
        return (Some(record), Effect::Parked);
    };
    if version <= record.anchor.version {
        return (Some(record), Effect::Unchanged);
    }
    if !change.can_follow(&record.anchor.version) {
        return (Some(record), Effect::Orphaned);
    }
    let (before, _) = record.current();
    if change.is_full() {
        let mut next = Record::anchored(version.clone(), change);
        next.chain = record
            .chain
            .into_iter()
            .filter(|(h, c)| *h > version && c.can_follow(&version))
            .collect();
        record = next;
    } else {
        match record.chain.binary_search_by(|(h, _)| h.cmp(&version)) {
            Ok(_) => return (Some(record), Effect::Unchanged),
            Err(at) => record.chain.insert(at, (version, change)),
        }
    }
    let (after, parked_after) = record.current();
    let effect = if after != before {
        Effect::Changed
    } else if parked_after > 0 {
        Effect::Parked
    } else {
        Effect::Unchanged
    };
    (Some(record), effect)
}

/// Folds the deltas at or before `horizon` into the anchor: nothing older
/// than the horizon is expected any more. Parked deltas before it are
/// dropped and returned: their base never came.
pub fn compact(record: &mut Record, horizon: &Hlc) -> Vec<(Hlc, Change)> {
    let keep = record.chain.partition_point(|(h, _)| h <= horizon);
    let mut dropped = Vec::new();
    for (hlc, change) in record.chain.drain(..keep) {
        if !step(&mut record.anchor, &hlc, &change) {
            dropped.push((hlc, change));
        }
    }
    dropped
}

/// Folds one change into `now`; false when a delta does not apply.
fn step(now: &mut Versioned, hlc: &Hlc, change: &Change) -> bool {
    match change {
        Change::Upsert { vector, payload } => {
            *now = Versioned {
                version: hlc.clone(),
                state: State::Live(Content {
                    vector: vector.clone(),
                    payload: payload.clone().unwrap_or_default(),
                }),
            };
            true
        }
        Change::Delete => {
            *now = Versioned {
                version: hlc.clone(),
                state: State::Deleted,
            };
            true
        }
        Change::Sparse { delta, payload } => {
            let State::Live(content) = &mut now.state else {
                return false;
            };
            if now.version != delta.base_version {
                return false;
            }
            let mut vector = content.vector.clone();
            if delta.apply(&mut vector).is_err() {
                return false;
            }
            content.vector = vector;
            if let Some(p) = payload {
                content.payload = p.clone();
            }
            now.version = hlc.clone();
            true
        }
        Change::Patch { base, payload } => {
            let State::Live(content) = &mut now.state else {
                return false;
            };
            if now.version != *base {
                return false;
            }
            for (k, v) in payload {
                content.payload.insert(k.clone(), v.clone());
            }
            now.version = hlc.clone();
            true
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn h(ms: u64, region: &str) -> Hlc {
        Hlc::new(ms, 0, region)
    }

    fn upsert(v: f32, tag: &str) -> Change {
        Change::Upsert {
            vector: vec![v, v],
            payload: Some(
                json!({ "tag": tag })
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ),
        }
    }

    fn patch(base: Hlc, key: &str) -> Change {
        Change::Patch {
            base,
            payload: json!({ key: true })
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn state_after(changes: &[(Hlc, Change)]) -> (Versioned, Vec<Effect>) {
        let mut record = None;
        let mut effects = Vec::new();
        for (hlc, change) in changes {
            let (next, effect) = apply(record, hlc.clone(), change.clone());
            record = next;
            effects.push(effect);
        }
        (record.map(|r| r.current().0).unwrap(), effects)
    }

    #[test]
    fn an_older_upsert_after_a_newer_delete_does_not_resurrect() {
        let (v, effects) = state_after(&[
            (h(20, "eu"), Change::Delete),
            (h(10, "us"), upsert(1.0, "old")),
        ]);
        assert_eq!(
            v,
            Versioned {
                version: h(20, "eu"),
                state: State::Deleted
            }
        );
        assert_eq!(effects, [Effect::Changed, Effect::Unchanged]);
    }

    #[test]
    fn a_patch_waits_for_its_base_and_then_applies() {
        let changes = [
            (h(20, "eu"), patch(h(10, "us"), "seen")),
            (h(10, "us"), upsert(1.0, "a")),
        ];
        let (v, effects) = state_after(&changes);
        assert_eq!(effects, [Effect::Parked, Effect::Changed]);
        assert_eq!(v.version, h(20, "eu"));
        let State::Live(c) = v.state else { panic!() };
        assert_eq!(
            c.payload,
            json!({"tag": "a", "seen": true})
                .as_object()
                .cloned()
                .unwrap()
        );
    }

    #[test]
    fn a_patch_on_a_superseded_base_does_nothing_in_any_order() {
        let v1 = h(10, "us");
        let changes = [
            (v1.clone(), upsert(1.0, "v1")),
            (h(30, "eu"), patch(v1, "p")),
            (h(20, "ap"), upsert(2.0, "v2")),
        ];
        let (in_order, _) = state_after(&changes);
        let (late_v2, _) =
            state_after(&[changes[0].clone(), changes[1].clone(), changes[2].clone()]);
        let (late_p, _) =
            state_after(&[changes[0].clone(), changes[2].clone(), changes[1].clone()]);
        assert_eq!(in_order, late_v2);
        assert_eq!(in_order, late_p);
        assert_eq!(in_order.version, h(20, "ap"), "v2 wins: the patch named v1");
    }

    #[test]
    fn a_delta_on_a_superseded_base_is_not_kept() {
        let (v1, v2) = (h(10, "us"), h(20, "ap"));
        let p = (h(30, "eu"), patch(v1.clone(), "p"));
        // Arriving after the newer full write: orphaned, nothing changes.
        let mut record = apply(None, v1.clone(), upsert(1.0, "v1")).0;
        record = apply(record, v2.clone(), upsert(2.0, "v2")).0;
        let (after, effect) = apply(record.clone(), p.0.clone(), p.1.clone());
        assert_eq!(effect, Effect::Orphaned);
        assert_eq!(after, record);
        // Arriving before it: applied on v1, then dropped from the chain
        // by the newer full write, since it can never apply again.
        let mut record = apply(None, v1, upsert(1.0, "v1")).0;
        record = apply(record, p.0, p.1).0;
        assert_eq!(record.as_ref().unwrap().chain.len(), 1);
        assert_eq!(record.as_ref().unwrap().orphaned_by(&v2), 1);
        let (after, effect) = apply(record, v2.clone(), upsert(2.0, "v2"));
        assert_eq!(effect, Effect::Changed);
        let after = after.unwrap();
        assert!(after.chain.is_empty(), "{after:?}");
        assert_eq!(after.anchor.version, v2);
    }

    #[test]
    fn compaction_keeps_the_state_and_drops_what_never_applied() {
        let changes = [
            (h(10, "us"), upsert(1.0, "a")),
            (h(20, "us"), patch(h(10, "us"), "x")),
            (h(30, "us"), patch(h(99, "us"), "never")),
            (h(40, "us"), patch(h(20, "us"), "y")),
        ];
        let mut record = None;
        for (hlc, c) in &changes {
            record = apply(record, hlc.clone(), c.clone()).0;
        }
        let mut record = record.unwrap();
        let before = record.current();
        let dropped = compact(&mut record, &h(35, "us"));
        assert_eq!(dropped, [changes[2].clone()]);
        assert_eq!(record.chain.len(), 1);
        assert_eq!(record.current().0, before.0);
    }

    /// The reference: fold every distinct change in HLC order from nothing.
    fn fold(changes: &[(Hlc, Change)]) -> Option<Versioned> {
        let mut sorted = changes.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        sorted.dedup_by(|a, b| a.0 == b.0);
        let mut now: Option<Versioned> = None;
        for (hlc, change) in &sorted {
            match now.as_mut() {
                Some(v) => {
                    step(v, hlc, change);
                }
                None if change.is_full() => {
                    let mut v = Versioned {
                        version: unseen(),
                        state: State::Deleted,
                    };
                    step(&mut v, hlc, change);
                    now = Some(v);
                }
                None => {}
            }
        }
        now
    }

    /// Concurrent writes to one point from three regions of three producers
    /// each (one of them from before producer ids, producer 0), whose clocks
    /// often agree: upserts, deletes, patches and sparse deltas naming
    /// earlier versions (or ones that never existed).
    pub(crate) fn history() -> impl Strategy<Value = Vec<(Hlc, Change)>> {
        let regions = ["us-east", "eu-west", "ap-south"];
        let producers = [0, 0x5eed, u64::MAX];
        proptest::collection::vec(
            (
                (0usize..3, 0usize..3),
                0u8..4,
                0u64..3,
                any::<u8>(),
                any::<bool>(),
            ),
            1..24,
        )
        .prop_map(move |steps| {
            let mut clocks = [[(0u64, 0u32); 3]; 3];
            let mut out: Vec<(Hlc, Change)> = Vec::new();
            for (i, ((region, producer), kind, advance, pick, payload)) in
                steps.into_iter().enumerate()
            {
                // Each producer's own clock only moves forwards.
                let clock = &mut clocks[region][producer];
                *clock = match advance {
                    0 => (clock.0, clock.1 + 1),
                    ms => (clock.0 + ms, 0),
                };
                let hlc =
                    Hlc::new(clock.0, clock.1, regions[region]).of_producer(producers[producer]);
                // Mostly the newest version so far, so that deltas usually
                // apply; sometimes an older one, or one nobody wrote.
                let newest = out.iter().map(|(h, _)| h).max().cloned();
                let base = match (pick % 4, newest) {
                    (0, Some(_)) => out[usize::from(pick) % out.len()].0.clone(),
                    (2 | 3, Some(newest)) => newest,
                    _ => Hlc::new(999, 9, "nowhere"),
                };
                let value = i as f32;
                let change = match kind {
                    0 => Change::Upsert {
                        vector: vec![value; 4],
                        payload: payload.then(|| json!({"v": i}).as_object().cloned().unwrap()),
                    },
                    1 => Change::Delete,
                    2 => patch(base, &format!("k{}", i % 3)),
                    _ => Change::Sparse {
                        delta: SparseDelta {
                            base_version: base,
                            dim: 4,
                            indices: vec![u32::from(pick % 4)],
                            values: vec![value],
                        },
                        payload: None,
                    },
                };
                out.push((hlc, change));
            }
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Any arrival order, with any change delivered twice, ends where the
        /// fold in HLC order does.
        #[test]
        fn every_order_and_duplicate_converges_to_the_fold(
            history in history(),
            order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..48),
            shuffle_seed in any::<u64>(),
        ) {
            let mut delivery = history.clone();
            for i in &order {
                delivery.push(history[i.index(history.len())].clone());
            }
            // Shuffle deterministically from the seed.
            let mut x = shuffle_seed | 1;
            for i in (1..delivery.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                delivery.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut record = None;
            for (hlc, change) in delivery {
                record = apply(record, hlc, change).0;
            }
            // Nothing kept that can never apply.
            if let Some(r) = &record {
                prop_assert!(r.chain.iter().all(|(_, c)| c.can_follow(&r.anchor.version)), "{r:?}");
            }
            let expected = fold(&history);
            let got = record.map(|r| r.current().0).filter(|v| v.version != unseen());
            prop_assert_eq!(got, expected);
        }
    }
}
