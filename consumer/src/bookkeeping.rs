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
//! {"v": "…", "anchor": {"v": "…", "vector": [..], "payload": {..}},
//!  "chain": [{"v": "…", "op": "patch", "base": "…", "payload": {..}}]}
//! ```
//!
//! A deleted anchor has `"deleted": true` instead of vector and payload.

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
        book.insert("anchor".into(), versioned(&record.anchor));
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
                vector: floats(anchor, "vector")?,
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

fn versioned(v: &Versioned) -> Value {
    match &v.state {
        State::Live(c) => json!({
            "v": v.version.to_string(),
            "vector": c.vector,
            "payload": Value::Object(c.payload.clone()),
        }),
        State::Deleted => json!({ "v": v.version.to_string(), "deleted": true }),
    }
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
        let id = match id {
            PointId::Num(n) => json!(n),
            PointId::Uuid(_) => json!(id.to_string()),
        };
        fields.insert("id".into(), id);
    }
    entry
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
                prop_assert_eq!(back.current(), r.current());
                prop_assert_eq!(back.chain.len(), r.chain.len());
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
    fn broken_bookkeeping_is_an_error_not_a_guess() {
        for book in [
            json!({}),
            json!({"v": "x"}),
            json!({"v": "1.0@a", "anchor": {"v": "1.0@a", "vector": [1], "payload": {}}}),
        ] {
            assert!(decode(None, &book).is_err(), "{book}");
        }
    }
}
