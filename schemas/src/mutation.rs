//! Mutations as ingestion jobs state them, read from the JSON they send:
//! the bodies of the HTTP ingest API and the records of a JSONL file. Pure
//! functions, so that hostile input can be fuzzed without a broker.

use crate::event::{Body, Delete, PayloadPatch, PointId, Upsert, VectorData};
use crate::hlc::Hlc;
use crate::payload::Payload;
use crate::vector::{EncodedVector, Encoding, PqCodebook};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// One change to one point, as an ingestion job states it.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Insert or replace the point's vector and payload.
    Upsert {
        id: PointId,
        vector: Vec<f32>,
        payload: Option<Map<String, Value>>,
    },
    /// Remove the point (a versioned tombstone).
    Delete { id: PointId },
    /// Set payload keys on top of the version the job last saw
    /// (`base_version`, as the publisher returned it).
    PatchPayload {
        id: PointId,
        base_version: Hlc,
        payload: Map<String, Value>,
    },
}

/// How a collection's vectors are encoded for the wire.
#[derive(Debug, Clone, Copy)]
pub enum VectorCodec<'a> {
    Plain(Encoding),
    Pq(&'a PqCodebook),
}

impl Mutation {
    pub fn id(&self) -> PointId {
        match self {
            Mutation::Upsert { id, .. }
            | Mutation::Delete { id }
            | Mutation::PatchPayload { id, .. } => *id,
        }
    }

    /// The payload the mutation sets, if any.
    pub fn payload(&self) -> Option<&Map<String, Value>> {
        match self {
            Mutation::Upsert { payload, .. } => payload.as_ref(),
            Mutation::PatchPayload { payload, .. } => Some(payload),
            Mutation::Delete { .. } => None,
        }
    }

    /// The event body of this mutation of `collection`, whose vectors have
    /// `dimension` values and are encoded with `codec`; payloads of
    /// `lz4_threshold` bytes or more are compressed. The error says what is
    /// wrong with the mutation.
    pub fn to_body(
        &self,
        collection: &str,
        dimension: usize,
        codec: VectorCodec<'_>,
        lz4_threshold: usize,
    ) -> Result<Body, String> {
        let payload = |p: &Map<String, Value>| {
            Payload::from_json(p, lz4_threshold).map_err(|e| e.to_string())
        };
        Ok(match self {
            Mutation::Upsert {
                id,
                vector,
                payload: p,
            } => {
                if vector.len() != dimension {
                    return Err(format!(
                        "vector has {} dimensions; collection {collection} has {dimension}",
                        vector.len(),
                    ));
                }
                let encoded = match codec {
                    VectorCodec::Pq(book) => book.encode(vector),
                    VectorCodec::Plain(encoding) => EncodedVector::encode(encoding, vector),
                }
                .map_err(|e| e.to_string())?;
                Body::Upsert(Upsert {
                    collection: collection.to_owned(),
                    id: *id,
                    vector: VectorData::Full(encoded),
                    payload: p.as_ref().map(payload).transpose()?,
                })
            }
            Mutation::Delete { id } => Body::Delete(Delete {
                collection: collection.to_owned(),
                id: *id,
            }),
            Mutation::PatchPayload {
                id,
                base_version,
                payload: p,
            } => Body::PayloadPatch(PayloadPatch {
                collection: collection.to_owned(),
                id: *id,
                base_version: base_version.clone(),
                payload: payload(p)?,
            }),
        })
    }
}

/// A point id from JSON, as Qdrant writes it: an unsigned integer or a UUID
/// string.
pub fn point_id_from_json(v: &Value) -> Result<PointId, String> {
    let parsed = match v {
        Value::Number(n) => n.as_u64().map(PointId::Num),
        Value::String(s) => s.parse::<uuid::Uuid>().ok().map(PointId::Uuid),
        _ => None,
    };
    parsed.ok_or_else(|| format!("id {v} is neither an unsigned integer nor a UUID string"))
}

/// Why an ingest request body gives no mutations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON of the route's shape (an HTTP 400).
    #[error("invalid request body: {0}")]
    Malformed(String),
    /// A point is invalid; the message names its index and id (an HTTP 422).
    #[error("{0}")]
    Invalid(String),
}

/// The ingest API's three kinds of request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestRoute {
    /// `{"points": [{"id": 7, "vector": [..], "payload": {..}}]}`
    Upsert,
    /// `{"points": [7, "5c56c793-…"]}`
    Delete,
    /// `{"points": [{"id": 7, "base_version": "…", "payload": {..}}]}`
    Patch,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Points<P> {
    points: Vec<P>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpsertPoint {
    id: Value,
    vector: Vec<f32>,
    #[serde(default)]
    payload: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchPoint {
    id: Value,
    base_version: String,
    payload: Map<String, Value>,
}

impl IngestRoute {
    /// The mutations of a request body of this route, in order.
    pub fn mutations(self, body: &[u8]) -> Result<Vec<Mutation>, BodyError> {
        let id = |index: usize, v: &Value| {
            point_id_from_json(v).map_err(|e| BodyError::Invalid(format!("point {index}: {e}")))
        };
        match self {
            IngestRoute::Upsert => parse::<Points<UpsertPoint>>(body)?
                .points
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    Ok(Mutation::Upsert {
                        id: id(i, &p.id)?,
                        vector: p.vector,
                        payload: p.payload,
                    })
                })
                .collect(),
            IngestRoute::Delete => parse::<Points<Value>>(body)?
                .points
                .iter()
                .enumerate()
                .map(|(i, v)| Ok(Mutation::Delete { id: id(i, v)? }))
                .collect(),
            IngestRoute::Patch => parse::<Points<PatchPoint>>(body)?
                .points
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    let id = id(i, &p.id)?;
                    let base_version = p
                        .base_version
                        .parse::<Hlc>()
                        .map_err(|e| BodyError::Invalid(format!("point {i} (id {id}): {e}")))?;
                    Ok(Mutation::PatchPayload {
                        id,
                        base_version,
                        payload: p.payload,
                    })
                })
                .collect(),
        }
    }
}

fn parse<R: DeserializeOwned>(body: &[u8]) -> Result<R, BodyError> {
    serde_json::from_slice(body).map_err(|e| {
        // Python's json module writes NaN and Infinity unless told not to.
        let hint = if e.is_syntax() && (contains(body, b"NaN") || contains(body, b"Infinity")) {
            "; vector values must be finite numbers (NaN and Infinity are not JSON)"
        } else {
            ""
        };
        BodyError::Malformed(format!("{e}{hint}"))
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// One JSONL record: `{"id": 7, "vector": [..], "payload": {..}}`, or
/// `{"id": 7, "delete": true}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlRecord {
    id: Value,
    #[serde(default)]
    vector: Option<Vec<f32>>,
    #[serde(default)]
    payload: Option<Map<String, Value>>,
    #[serde(default)]
    delete: bool,
}

/// The mutation of one JSONL line; the error says what is wrong with it.
pub fn from_jsonl_line(line: &str) -> Result<Mutation, String> {
    let record: JsonlRecord = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let id = point_id_from_json(&record.id)?;
    match (record.delete, record.vector) {
        (true, None) if record.payload.is_none() => Ok(Mutation::Delete { id }),
        (true, _) => Err("a delete carries no vector or payload".into()),
        (false, Some(vector)) => Ok(Mutation::Upsert {
            id,
            vector,
            payload: record.payload,
        }),
        (false, None) => Err("no \"vector\" (and not \"delete\": true)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_bodies_give_their_mutations_in_order() {
        let ups = IngestRoute::Upsert
            .mutations(br#"{"points": [{"id": 7, "vector": [1, 2]}, {"id": "5c56c793-69f3-4fbf-87e6-c4bf54c28c26", "vector": [0], "payload": {"a": 1}}]}"#)
            .unwrap();
        assert_eq!(ups.len(), 2);
        assert_eq!(ups[0].id(), PointId::Num(7));
        assert!(matches!(&ups[1], Mutation::Upsert { payload: Some(p), .. } if p["a"] == 1));
        let dels = IngestRoute::Delete
            .mutations(br#"{"points": [3, 4]}"#)
            .unwrap();
        assert_eq!(
            dels,
            vec![
                Mutation::Delete {
                    id: PointId::Num(3)
                },
                Mutation::Delete {
                    id: PointId::Num(4)
                }
            ]
        );
    }

    #[test]
    fn a_bad_body_is_malformed_and_a_bad_point_is_invalid_by_index() {
        let e = IngestRoute::Upsert
            .mutations(br#"{"points": [{"id": 1, "vector": [NaN]}]}"#)
            .unwrap_err();
        assert!(
            matches!(&e, BodyError::Malformed(m) if m.contains("finite")),
            "{e}"
        );
        let e = IngestRoute::Delete
            .mutations(br#"{"points": [1], "extra": 2}"#)
            .unwrap_err();
        assert!(matches!(e, BodyError::Malformed(_)), "{e}");
        let e = IngestRoute::Delete
            .mutations(br#"{"points": [1, -2]}"#)
            .unwrap_err();
        assert_eq!(
            e,
            BodyError::Invalid(
                "point 1: id -2 is neither an unsigned integer nor a UUID string".into()
            )
        );
        let e = IngestRoute::Patch
            .mutations(br#"{"points": [{"id": 9, "base_version": "yesterday", "payload": {}}]}"#)
            .unwrap_err();
        assert!(
            matches!(&e, BodyError::Invalid(m) if m.starts_with("point 0 (id 9): ")),
            "{e}"
        );
    }

    #[test]
    fn jsonl_lines_are_upserts_or_deletes_and_nothing_in_between() {
        assert_eq!(
            from_jsonl_line(r#"{"id": 2, "delete": true}"#),
            Ok(Mutation::Delete {
                id: PointId::Num(2)
            })
        );
        assert!(matches!(
            from_jsonl_line(r#"{"id": 2, "vector": [0.5]}"#),
            Ok(Mutation::Upsert { .. })
        ));
        assert!(from_jsonl_line(r#"{"id": 2, "delete": true, "vector": [1]}"#).is_err());
        assert!(
            from_jsonl_line(r#"{"id": 2}"#)
                .unwrap_err()
                .contains("vector")
        );
        assert!(from_jsonl_line(r#"{"id": 2.5, "vector": [1]}"#).is_err());
    }

    #[test]
    fn a_body_checks_the_dimension_and_encodes_the_vector() {
        let m = Mutation::Upsert {
            id: PointId::Num(1),
            vector: vec![0.25, -1.0],
            payload: None,
        };
        let codec = VectorCodec::Plain(Encoding::F32);
        assert!(
            m.to_body("docs", 3, codec, 1024)
                .unwrap_err()
                .contains("2 dimensions")
        );
        let Body::Upsert(u) = m.to_body("docs", 2, codec, 1024).unwrap() else {
            panic!("an upsert");
        };
        let VectorData::Full(v) = u.vector else {
            panic!("a full vector");
        };
        assert_eq!(v.decode(None).unwrap(), vec![0.25, -1.0]);
    }
}
