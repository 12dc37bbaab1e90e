//! How a point's [`Record`] is kept in a store: its visible content (vector
//! and the user's payload) plus vecsync's own bookkeeping under the reserved
//! payload key [`KEY`] (DESIGN.md §4).
//!
//! ```json
//! {"v": "1795298965179.0@us-east"}
//! ```
//!
//! is all a point carries in the common case, where the current state is its
//! anchor. While deltas are parked or could still be undone by a late one,
//! the bookkeeping also holds the anchor's content and the chain:
//!
//! ```json
//! {"v": "…", "anchor": {"v": "…", "payload": {..}},
//!  "chain": [{"v": "…", "op": "patch", "base": "…", "payload": {..}}]}
//! ```
//!
//! The anchor keeps no copy of its vector: deltas of the chain change only
//! the dimensions their sparse entries name, so the anchor's vector is the
//! point's own with those put back, and the anchor keeps just them
//! (`"dims": {"indices": [..], "values": [..]}`, absent when the chain holds
//! only payload patches). Bookkeeping grows with the deltas, not with the
//! vector's dimension. (A `"vector"` written by an earlier vecsync is still
//! read.) A deleted anchor has `"deleted": true` instead of payload.

use crate::apply::{Change, Content, Payload, Record, State, Versioned};
use serde_json::{Map, Value, json};
use vecsync_schemas::event::PointId;
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::vector::SparseDelta;

/// The payload key vecsync keeps its bookkeeping under; users' payloads
/// must not use it (events whose payload does are dead-lettered).
pub const KEY: &str = vecsync_schemas::payload::RESERVED_KEY;

/// What a store writes for a record: the current state (content, or `None`
/// for a tombstone) and the bookkeeping value to put under [`KEY`].
pub fn encode(record: &Record) -> (Option<Content>, Value) {
    let (current, _) = record.current();
    let mut book = Map::new();
    book.insert("v".into(), json!(current.version.to_string()));
    if !record.chain.is_empty() {
        book.insert("anchor".into(), anchor(record));
        let chain = record.chain.iter().map(|(hlc, c)| change(hlc, c)).collect();
        book.insert("chain".into(), Value::Array(chain));
    }
    let content = match current.state {
        State::Live(content) => Some(content),
        State::Deleted => None,
    };
    (content, Value::Object(book))
}

/// The record a store holds: `content` as read (`None` for a tombstone) and
/// the bookkeeping found under [`KEY`].
pub fn decode(content: Option<Content>, book: &Value) -> Result<Record, String> {
    let version = hlc(book, "v")?;
    let Some(anchor) = book.get("anchor") else {
        let state = content.map_or(State::Deleted, State::Live);
        return Ok(Record {
            anchor: Versioned { version, state },
            chain: Vec::new(),
        });
    };
    let anchor = Versioned {
        version: hlc(anchor, "v")?,
        state: if anchor.get("deleted").and_then(Value::as_bool) == Some(true) {
            State::Deleted
        } else {
            State::Live(Content {
                vector: anchor_vector(anchor, content.as_ref())?,
                payload: object(anchor, "payload")?,
            })
        },
    };
    let chain = book
        .get("chain")
        .and_then(Value::as_array)
        .ok_or("bookkeeping has an anchor but no chain")?
        .iter()
        .map(|entry| {
            let v = hlc(entry, "v")?;
            let base = hlc(entry, "base")?;
            let change = match entry.get("op").and_then(Value::as_str) {
                Some("patch") => Change::Patch {
                    base,
                    payload: object(entry, "payload")?,
                },
                Some("sparse") => Change::Sparse {
                    delta: SparseDelta {
                        base_version: base,
                        dim: entry
                            .get("dim")
                            .and_then(Value::as_u64)
                            .and_then(|d| u32::try_from(d).ok())
                            .ok_or("sparse entry without dim")?,
                        indices: entry
                            .get("indices")
                            .and_then(Value::as_array)
                            .ok_or("sparse entry without indices")?
                            .iter()
                            .map(|i| i.as_u64().and_then(|i| u32::try_from(i).ok()))
                            .collect::<Option<_>>()
                            .ok_or("sparse indices are not small integers")?,
                        values: floats(entry, "values")?,
                    },
                    payload: match entry.get("payload") {
                        None | Some(Value::Null) => None,
                        Some(_) => Some(object(entry, "payload")?),
                    },
                },
                other => return Err(format!("unknown chain entry op {other:?}")),
            };
            Ok((v, change))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Record { anchor, chain })
}

/// The anchor of a record with a chain: its version, and its payload with
/// the values of the dimensions the chain's sparse deltas name.
fn anchor(record: &Record) -> Value {
    let version = record.anchor.version.to_string();
    let State::Live(content) = &record.anchor.state else {
        return json!({ "v": version, "deleted": true });
    };
    let mut indices: Vec<u32> = record
        .chain
        .iter()
        .filter_map(|(_, c)| match c {
            Change::Sparse { delta, .. } => Some(delta.indices.iter().copied()),
            _ => None,
        })
        .flatten()
        .filter(|&i| (i as usize) < content.vector.len())
        .collect();
    indices.sort_unstable();
    indices.dedup();
    let mut anchor = json!({ "v": version, "payload": Value::Object(content.payload.clone()) });
    if !indices.is_empty() {
        let values: Vec<f32> = indices
            .iter()
            .map(|&i| content.vector[i as usize])
            .collect();
        anchor["dims"] = json!({ "indices": indices, "values": values });
    }
    anchor
}

/// A live anchor's vector: the point's own (`content`, as read) with the
/// dimensions the anchor kept put back. A point read without its vector
/// gives an anchor without one too.
fn anchor_vector(anchor: &Value, content: Option<&Content>) -> Result<Vec<f32>, String> {
    if anchor.get("vector").is_some() {
        return floats(anchor, "vector");
    }
    let mut vector = content
        .ok_or("bookkeeping of a tombstone has a live anchor")?
        .vector
        .clone();
    let (Some(dims), false) = (anchor.get("dims"), vector.is_empty()) else {
        return Ok(vector);
    };
    let values = floats(dims, "values")?;
    let indices = dims
        .get("indices")
        .and_then(Value::as_array)
        .ok_or("anchor dims without indices")?;
    if indices.len() != values.len() {
        return Err("anchor dims do not pair indices with values".into());
    }
    for (i, v) in indices.iter().zip(values) {
        let slot = i
            .as_u64()
            .and_then(|i| vector.get_mut(usize::try_from(i).ok()?))
            .ok_or("an anchor dimension beyond the point's vector")?;
        *slot = v;
    }
    Ok(vector)
}

fn change(hlc: &Hlc, c: &Change) -> Value {
    match c {
        Change::Patch { base, payload } => json!({
            "v": hlc.to_string(),
            "op": "patch",
            "base": base.to_string(),
            "payload": Value::Object(payload.clone()),
        }),
        Change::Sparse { delta, payload } => json!({
            "v": hlc.to_string(),
            "op": "sparse",
            "base": delta.base_version.to_string(),
            "dim": delta.dim,
            "indices": delta.indices,
            "values": delta.values,
            "payload": payload.clone().map(Value::Object),
        }),
        // Full writes become anchors; the chain never holds them.
        Change::Upsert { .. } | Change::Delete => {
            unreachable!("a full write in a chain")
        }
    }
}

/// A delta of a chain as JSON for people and tools: the chain entry (`v`,
/// `op`, `base`, and the patch's payload or the sparse delta) with its
/// collection and point id. How a delta dropped at expiry, whose original
/// bytes are long gone, is dead-lettered.
pub fn delta_json(collection: &str, id: &PointId, version: &Hlc, delta: &Change) -> Value {
    let mut entry = change(version, delta);
    if let Value::Object(fields) = &mut entry {
        fields.insert("collection".into(), json!(collection));
        fields.insert("id".into(), id.to_json());
    }
    entry
}

/// The version a stored point's payload records, and whether its chain
/// holds deltas, without decoding the rest; `None` when unreadable. A point
/// without bookkeeping is older than any event ([`crate::apply::unseen`]).
pub fn summary(payload: &Payload) -> Option<(Hlc, bool)> {
    match payload.get(KEY) {
        None => Some((crate::apply::unseen(), false)),
        Some(book) => Some((hlc(book, "v").ok()?, book.get("anchor").is_some())),
    }
}

fn hlc(v: &Value, field: &str) -> Result<Hlc, String> {
    v.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("bookkeeping field {field:?} is missing"))?
        .parse()
}

fn floats(v: &Value, field: &str) -> Result<Vec<f32>, String> {
    v.get(field)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("bookkeeping field {field:?} is not an array"))?
        .iter()
        .map(|x| x.as_f64().map(|x| x as f32))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("bookkeeping field {field:?} holds a non-number"))
}

fn object(v: &Value, field: &str) -> Result<Payload, String> {
    v.get(field)
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| format!("bookkeeping field {field:?} is not an object"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{apply, tests::history};
    use proptest::prelude::*;

    proptest! {
        /// Whatever a history leaves in a record survives the trip through
        /// the store's representation, chain and parked deltas included.
        #[test]
        fn records_round_trip(history in history()) {
            let mut record = None;
            for (hlc, change) in history {
                record = apply(record, hlc, change).0;
                let r = record.clone().unwrap();
                let (content, book) = encode(&r);
                // What a store hands back went through JSON text.
                let book: Value = serde_json::from_str(&book.to_string()).unwrap();
                let back = decode(content, &book).unwrap();
                prop_assert_eq!(back, r);
            }
        }
    }

    #[test]
    fn a_plain_point_carries_only_its_version() {
        let (record, _) = apply(
            None,
            Hlc::new(5, 1, "us-east"),
            Change::Upsert {
                vector: vec![0.5],
                payload: None,
            },
        );
        let (content, book) = encode(&record.unwrap());
        assert_eq!(book, json!({"v": "5.1@us-east"}));
        assert_eq!(content.unwrap().vector, [0.5]);
    }

    #[test]
    fn a_patched_point_keeps_no_copy_of_its_vector() {
        let v1 = Hlc::new(5, 0, "us-east");
        let vector: Vec<f32> = (0..768).map(|i| i as f32 / 7.0).collect();
        let upsert = Change::Upsert {
            vector: vector.clone(),
            payload: Some(json!({"lang": "en"}).as_object().cloned().unwrap()),
        };
        let patch = Change::Patch {
            base: v1.clone(),
            payload: json!({"tag": "x"}).as_object().cloned().unwrap(),
        };
        let (record, _) = apply(None, v1.clone(), upsert);
        let (record, _) = apply(record, Hlc::new(6, 0, "us-east"), patch);
        let (_, book) = encode(record.as_ref().unwrap());
        assert_eq!(
            book["anchor"],
            json!({"v": "5.0@us-east", "payload": {"lang": "en"}})
        );
        // A sparse delta on top: the anchor keeps the two dimensions it set.
        let sparse = Change::Sparse {
            delta: SparseDelta {
                base_version: Hlc::new(6, 0, "us-east"),
                dim: 768,
                indices: vec![700, 3],
                values: vec![1.0, 2.0],
            },
            payload: None,
        };
        let (record, _) = apply(record, Hlc::new(7, 0, "us-east"), sparse);
        let (_, book) = encode(&record.unwrap());
        assert_eq!(
            book["anchor"]["dims"],
            json!({"indices": [3, 700], "values": [vector[3], vector[700]]})
        );
        assert!(book["anchor"].get("vector").is_none());
    }

    #[test]
    fn broken_bookkeeping_is_an_error_not_a_guess() {
        for book in [
            json!({}),
            json!({"v": "x"}),
            json!({"v": "1.0@a", "anchor": {"v": "1.0@a", "vector": [1], "payload": {}}}),
            // A live anchor whose vector would come from a tombstone.
            json!({"v": "2.0@a", "anchor": {"v": "1.0@a", "payload": {}}, "chain": []}),
        ] {
            assert!(decode(None, &book).is_err(), "{book}");
        }
    }
}
