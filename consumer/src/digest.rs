//! The state digest of DESIGN.md §3: an order-independent hash of a
//! collection's visible points (id, version, vector bytes, payload), so two
//! regions can prove they hold the same data.
//!
//! Each live point is hashed with SHA-256 over its id, version, vector
//! (f32, little endian) and payload (JSON with keys sorted at every level);
//! the point hashes are added as four 64-bit lanes, so the order points are
//! visited in does not matter. Tombstones are not visible state and are left
//! out: they expire at different times in different regions.

use crate::apply::{Record, State, Versioned};
use crate::store::{Store, StoreError};
use sha2::{Digest as _, Sha256};
use std::fmt;
use vecsync_schemas::event::PointId;
use vecsync_schemas::json::canonical_object;

/// A collection's digest, built point by point in any order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest {
    /// Live points counted.
    pub points: u64,
    lanes: [u64; 4],
}

impl Digest {
    pub fn new() -> Self {
        Self::default()
    }

    /// The digest of a collection as `store` holds it now.
    pub fn of(store: &dyn Store, collection: &str) -> Result<Self, StoreError> {
        let mut digest = Self::new();
        store.scan(collection, &mut |id, point| digest.add(&id, &point))?;
        Ok(digest)
    }

    /// The digest of the current state of `records`, such as
    /// [`crate::apply::fold`] gives.
    pub fn of_records<'a>(records: impl IntoIterator<Item = (&'a PointId, &'a Record)>) -> Self {
        let mut digest = Self::new();
        for (id, record) in records {
            digest.add(id, &record.current().0);
        }
        digest
    }

    /// Adds one point; a tombstone adds nothing.
    pub fn add(&mut self, id: &PointId, point: &Versioned) {
        let State::Live(content) = &point.state else {
            return;
        };
        let mut h = Sha256::new();
        h.update(id.key().as_bytes());
        h.update([0]);
        h.update(point.version.to_string().as_bytes());
        h.update([0]);
        for v in &content.vector {
            h.update(v.to_le_bytes());
        }
        h.update([0]);
        h.update(canonical_object(&content.payload).as_bytes());
        let sum = h.finalize();
        for (lane, chunk) in self.lanes.iter_mut().zip(sum.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *lane = lane.wrapping_add(u64::from_le_bytes(b));
        }
        self.points += 1;
    }
}

impl fmt::Display for Digest {
    /// `<points> points, <64 hex digits>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} points, ", self.points)?;
        for lane in self.lanes {
            write!(f, "{lane:016x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::Content;
    use serde_json::{Value, json};
    use vecsync_schemas::hlc::Hlc;

    fn live(version: u64, vector: Vec<f32>, payload: Value) -> Versioned {
        Versioned {
            version: Hlc::new(version, 0, "us-east"),
            state: State::Live(Content {
                vector,
                payload: payload.as_object().cloned().unwrap_or_default(),
            }),
        }
    }

    #[test]
    fn the_same_points_in_any_order_give_the_same_digest() {
        let points: Vec<(PointId, Versioned)> = (0..50)
            .map(|i| {
                (
                    PointId::Num(i),
                    live(
                        i,
                        vec![i as f32, 0.5],
                        json!({"n": i, "tags": ["a", {"z": 1, "b": 2}]}),
                    ),
                )
            })
            .collect();
        let mut forward = Digest::new();
        for (id, p) in &points {
            forward.add(id, p);
        }
        let mut backward = Digest::new();
        for (id, p) in points.iter().rev() {
            backward.add(id, p);
        }
        backward.add(
            &PointId::Num(999),
            &Versioned {
                version: Hlc::new(5, 0, "eu"),
                state: State::Deleted,
            },
        );
        assert_eq!(forward, backward);
        assert_eq!(forward.points, 50);
        assert!(forward.to_string().starts_with("50 points, "));
    }

    #[test]
    fn any_difference_in_a_point_changes_the_digest() {
        let base = live(7, vec![1.0, 2.0], json!({"a": 1, "b": {"c": true}}));
        let digest = |id: u64, p: &Versioned| {
            let mut d = Digest::new();
            d.add(&PointId::Num(id), p);
            d
        };
        let reference = digest(1, &base);
        let variants = [
            (2, base.clone()),
            (
                1,
                live(8, vec![1.0, 2.0], json!({"a": 1, "b": {"c": true}})),
            ),
            (
                1,
                live(7, vec![1.0, 2.5], json!({"a": 1, "b": {"c": true}})),
            ),
            (
                1,
                live(7, vec![1.0, 2.0], json!({"a": 1, "b": {"c": false}})),
            ),
        ];
        for (id, v) in variants {
            assert_ne!(digest(id, &v), reference, "{id} {v:?}");
        }
        // Key order inside the payload is not a difference.
        let reordered: Value = serde_json::from_str(r#"{"b": {"c": true}, "a": 1}"#).unwrap();
        assert_eq!(digest(1, &live(7, vec![1.0, 2.0], reordered)), reference);
    }
}
