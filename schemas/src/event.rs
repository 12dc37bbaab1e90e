//! The delta event: one replicated change, or a heartbeat, on a delta topic.

use crate::hlc::Hlc;
use crate::payload::Payload;
use crate::vector::{EncodedVector, SparseDelta};
use std::fmt;
use uuid::Uuid;

/// A point id, as Qdrant allows: an unsigned integer or a UUID.
///
/// Integers travel as Avro `long`; ids above 2⁶³−1 keep their bits and read
/// as negative numbers in clients that treat the field as signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PointId {
    Num(u64),
    Uuid(Uuid),
}

impl PointId {
    /// The Kafka record key: the id's text form, so one id always lands in
    /// one partition and compaction keeps its latest state.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// The id as Qdrant's JSON writes it: a number, or a UUID string.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            PointId::Num(n) => serde_json::Value::from(*n),
            PointId::Uuid(u) => serde_json::Value::from(u.hyphenated().to_string()),
        }
    }
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Uuid(u) => write!(f, "{}", u.hyphenated()),
        }
    }
}

impl std::str::FromStr for PointId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(n) = s.parse::<u64>() {
            return Ok(PointId::Num(n));
        }
        Uuid::try_parse(s)
            .map(PointId::Uuid)
            .map_err(|_| format!("point id {s:?} is neither an unsigned integer nor a UUID"))
    }
}

/// One event on a delta topic.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaEvent {
    pub hlc: Hlc,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Upsert(Upsert),
    Delete(Delete),
    PayloadPatch(PayloadPatch),
    Heartbeat(Heartbeat),
}

/// Insert or replace a point.
#[derive(Debug, Clone, PartialEq)]
pub struct Upsert {
    pub collection: String,
    pub id: PointId,
    pub vector: VectorData,
    pub payload: Option<Payload>,
}

/// A full vector, or only the changed dimensions of one.
#[derive(Debug, Clone, PartialEq)]
pub enum VectorData {
    Full(EncodedVector),
    Sparse(SparseDelta),
}

/// A versioned tombstone.
#[derive(Debug, Clone, PartialEq)]
pub struct Delete {
    pub collection: String,
    pub id: PointId,
}

/// Set payload keys of a point, on top of `base_version` only.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadPatch {
    pub collection: String,
    pub id: PointId,
    pub base_version: Hlc,
    pub payload: Payload,
}

/// Keeps consumers' watermarks moving when a partition is otherwise idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub interval_ms: u32,
}

/// Which kind of event, for metrics labels and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Upsert,
    Delete,
    PayloadPatch,
    Heartbeat,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Upsert => "upsert",
            Operation::Delete => "delete",
            Operation::PayloadPatch => "payload_patch",
            Operation::Heartbeat => "heartbeat",
        }
    }
}

impl DeltaEvent {
    pub fn operation(&self) -> Operation {
        match self.body {
            Body::Upsert(_) => Operation::Upsert,
            Body::Delete(_) => Operation::Delete,
            Body::PayloadPatch(_) => Operation::PayloadPatch,
            Body::Heartbeat(_) => Operation::Heartbeat,
        }
    }

    /// The region the event was written in.
    pub fn origin(&self) -> &str {
        &self.hlc.origin
    }

    /// Collection and point, for every event but heartbeats.
    pub fn target(&self) -> Option<(&str, PointId)> {
        match &self.body {
            Body::Upsert(u) => Some((&u.collection, u.id)),
            Body::Delete(d) => Some((&d.collection, d.id)),
            Body::PayloadPatch(p) => Some((&p.collection, p.id)),
            Body::Heartbeat(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_parse_and_print() {
        assert_eq!("42".parse::<PointId>().unwrap(), PointId::Num(42));
        let u = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26";
        assert_eq!(u.parse::<PointId>().unwrap().key(), u);
        assert!("-1".parse::<PointId>().unwrap_err().contains("neither"));
    }
}
