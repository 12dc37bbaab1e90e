//! Avro binary encoding of the current schemas, written by hand for speed.
//!
//! The bytes are exactly what any Avro library writes for the schemas in
//! `schemas/avro/` (a test compares them with apache-avro's reading and
//! writing). Older or foreign writer schemas are first resolved to the
//! current one by apache-avro (see [`crate::wire::Decoder`]); this module
//! reads only the current layout, checks every length against the bytes
//! left, and never panics on malformed input.

use crate::event::{
    Body, Delete, DeltaEvent, Heartbeat, Operation, PayloadPatch, PointId, Upsert, VectorData,
};
use crate::hlc::Hlc;
use crate::payload::{Compression, Payload};
use crate::vector::{CodecError, EncodedVector, Encoding, PqCodebook, SparseDelta};
use uuid::Uuid;

/// The delta event schema this build writes (the newest published version).
pub const DELTA_EVENT_SCHEMA: &str = include_str!("../avro/delta-event.v2.avsc");
/// The PQ codebook schema this build writes.
pub const PQ_CODEBOOK_SCHEMA: &str = include_str!("../avro/pq-codebook.v1.avsc");

/// Why bytes could not be read as an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than the 5-byte Confluent wire header")]
    TooShort(usize),
    #[error("unknown magic byte {0} (Confluent wire format starts with 0)")]
    BadMagic(u8),
    #[error("malformed {record} at field {field}: {reason}")]
    Malformed {
        record: &'static str,
        field: &'static str,
        reason: String,
    },
    #[error("{0} trailing bytes after the {1} record")]
    Trailing(usize, &'static str),
    #[error("invalid {field}: {source}")]
    Codec {
        field: &'static str,
        source: CodecError,
    },
    #[error("schema id {id}: {reason}")]
    Schema { id: u32, reason: String },
    #[error("schema id {id}: {source}")]
    Registry {
        id: u32,
        source: crate::registry::RegistryError,
    },
}

impl DecodeError {
    /// True when retrying later may succeed (the registry was unreachable),
    /// false when the bytes themselves are bad and belong in a dead letter.
    pub fn is_retriable(&self) -> bool {
        matches!(self, DecodeError::Registry { source, .. } if source.is_retriable())
    }

    /// The registry refused this client's credentials or access: nothing
    /// about the bytes is known, and no retry helps.
    pub fn refused(&self) -> Option<&crate::registry::RegistryError> {
        match self {
            DecodeError::Registry { source, .. } if source.is_refused() => Some(source),
            _ => None,
        }
    }

    /// A short, fixed label for metrics.
    pub fn reason_label(&self) -> &'static str {
        match self {
            DecodeError::TooShort(_) | DecodeError::BadMagic(_) => "bad_framing",
            DecodeError::Malformed { .. } | DecodeError::Trailing(..) => "malformed",
            DecodeError::Codec { .. } => "invalid_value",
            DecodeError::Schema { .. } => "unknown_schema",
            // The registry answered, and does not know the id.
            DecodeError::Registry { source, .. } if !source.is_retriable() => "unknown_schema",
            DecodeError::Registry { .. } => "registry",
        }
    }
}

/// A record type with a hand-written Avro codec for its current schema.
pub trait AvroRecord: Sized {
    /// The schema (JSON) that [`AvroRecord::write_avro`] writes.
    const SCHEMA: &'static str;
    /// Name used in error messages.
    const NAME: &'static str;
    /// Appends the Avro binary body of `self`.
    fn write_avro(&self, out: &mut Vec<u8>);
    /// Reads one body that must span `bytes` exactly.
    fn read_avro(bytes: &[u8]) -> Result<Self, DecodeError>;
}

// ---------------------------------------------------------------- writing

fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_int(out: &mut Vec<u8>, v: i32) {
    put_long(out, i64::from(v));
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    put_long(out, len as i64);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_float(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_hlc(out: &mut Vec<u8>, h: &Hlc) {
    put_long(out, h.wall_ms as i64);
    put_int(out, h.logical as i32);
    put_str(out, &h.origin);
    // A long holding the u64's bit pattern.
    put_long(out, h.producer as i64);
}

fn put_id(out: &mut Vec<u8>, id: &PointId) {
    match id {
        PointId::Num(n) => {
            put_long(out, 1);
            put_long(out, *n as i64);
        }
        PointId::Uuid(u) => {
            put_long(out, 2);
            let mut buf = Uuid::encode_buffer();
            put_str(out, u.hyphenated().encode_lower(&mut buf));
        }
    }
}

fn put_payload(out: &mut Vec<u8>, p: &Payload) {
    put_int(out, p.compression as i32);
    put_bytes(out, &p.data);
}

fn encoding_index(e: Encoding) -> i32 {
    match e {
        Encoding::F32 => 0,
        Encoding::F16 => 1,
        Encoding::Sq8 => 2,
        Encoding::Sq4 => 3,
        Encoding::Pq => 4,
        Encoding::Binary => 5,
    }
}

fn put_optional<T>(out: &mut Vec<u8>, value: Option<&T>, put: impl FnOnce(&mut Vec<u8>, &T)) {
    match value {
        None => put_long(out, 0),
        Some(v) => {
            put_long(out, 1);
            put(out, v);
        }
    }
}

fn put_vector(out: &mut Vec<u8>, v: &EncodedVector) {
    put_int(out, encoding_index(v.encoding));
    put_int(out, v.dim as i32);
    put_bytes(out, &v.data);
    put_float(out, v.scale);
    put_float(out, v.offset);
    put_optional(out, v.codebook_id.as_ref(), |out, id| put_str(out, id));
}

fn put_sparse(out: &mut Vec<u8>, d: &SparseDelta) {
    put_int(out, d.dim as i32);
    if !d.indices.is_empty() {
        put_len(out, d.indices.len());
        d.indices.iter().for_each(|&i| put_int(out, i as i32));
    }
    put_long(out, 0);
    if !d.values.is_empty() {
        put_len(out, d.values.len());
        d.values.iter().for_each(|&v| put_float(out, v));
    }
    put_long(out, 0);
}

/// The op enum's symbols, in schema order.
const OPS: [Operation; 4] = [
    Operation::Upsert,
    Operation::Delete,
    Operation::PayloadPatch,
    Operation::Heartbeat,
];

impl AvroRecord for DeltaEvent {
    const SCHEMA: &'static str = DELTA_EVENT_SCHEMA;
    const NAME: &'static str = "DeltaEvent";

    fn write_avro(&self, out: &mut Vec<u8>) {
        put_hlc(out, &self.hlc);
        let op = self.operation();
        put_int(
            out,
            OPS.iter().position(|o| *o == op).unwrap_or_default() as i32,
        );
        let (collection, id) = self.target().unzip();
        put_str(out, collection.unwrap_or_default());
        // `id` is one three-way union: null, long, string.
        match &id {
            None => put_long(out, 0),
            Some(id) => put_id(out, id),
        }
        let (vector, sparse, base, payload, interval) = match &self.body {
            Body::Upsert(u) => match &u.vector {
                VectorData::Full(v) => (Some(v), None, None, u.payload.as_ref(), None),
                VectorData::Sparse(d) => (
                    None,
                    Some(d),
                    Some(&d.base_version),
                    u.payload.as_ref(),
                    None,
                ),
            },
            Body::Delete(_) => (None, None, None, None, None),
            Body::PayloadPatch(p) => (None, None, Some(&p.base_version), Some(&p.payload), None),
            Body::Heartbeat(h) => (None, None, None, None, Some(&h.interval_ms)),
        };
        put_optional(out, vector, put_vector);
        put_optional(out, sparse, put_sparse);
        put_optional(out, base, put_hlc);
        put_optional(out, payload, put_payload);
        put_optional(out, interval, |out, &ms| put_int(out, ms as i32));
    }

    fn read_avro(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, Self::NAME);
        let hlc = r.hlc("hlc")?;
        let op = OPS[r.enum_index("op", OPS.len())?];
        let collection = r.string("collection")?;
        let id = match r.union("id", 3)? {
            0 => None,
            1 => Some(PointId::Num(r.long("id")? as u64)),
            _ => {
                let s = r.string("id")?;
                let u = Uuid::try_parse(&s)
                    .map_err(|e| r.malformed("id", format!("{s:?} is not a UUID: {e}")))?;
                Some(PointId::Uuid(u))
            }
        };
        let vector = match r.union("vector", 2)? {
            0 => None,
            _ => Some(EncodedVector {
                encoding: Encoding::ALL[r.enum_index("vector.encoding", 6)?],
                dim: r.non_negative("vector.dim")?,
                data: r.bytes("vector.data")?.to_vec(),
                scale: r.float("vector.scale")?,
                offset: r.float("vector.offset")?,
                codebook_id: match r.union("vector.codebook_id", 2)? {
                    0 => None,
                    _ => Some(r.string("vector.codebook_id")?),
                },
            }),
        };
        let sparse = match r.union("sparse_delta", 2)? {
            0 => None,
            _ => Some((
                r.non_negative::<u32>("sparse_delta.dim")?,
                r.array("sparse_delta.indices", 1, |r| {
                    r.non_negative("sparse_delta.indices")
                })?,
                r.array("sparse_delta.values", 4, |r| r.float("sparse_delta.values"))?,
            )),
        };
        let base_version = match r.union("base_version", 2)? {
            0 => None,
            _ => Some(r.hlc("base_version")?),
        };
        let payload = match r.union("payload", 2)? {
            0 => None,
            _ => Some(r.payload("payload")?),
        };
        let interval = match r.union("heartbeat_interval_ms", 2)? {
            0 => None,
            _ => Some(r.non_negative::<u32>("heartbeat_interval_ms")?),
        };
        r.finish()?;

        // Which fields an op needs; anything else is a malformed event.
        let missing =
            |field: &'static str| r.malformed(field, format!("required for {}", op.as_str()));
        let body = match op {
            Operation::Upsert => {
                let id = id.ok_or_else(|| missing("id"))?;
                let vector = match (vector, sparse, base_version) {
                    (Some(v), None, None) => VectorData::Full(v),
                    (None, Some((dim, indices, values)), Some(base_version)) => {
                        VectorData::Sparse(SparseDelta {
                            base_version,
                            dim,
                            indices,
                            values,
                        })
                    }
                    (None, Some(_), None) => return Err(missing("base_version")),
                    _ => {
                        return Err(r.malformed(
                            "vector",
                            "an upsert carries either a vector or a sparse_delta with its base_version",
                        ));
                    }
                };
                Body::Upsert(Upsert {
                    collection,
                    id,
                    vector,
                    payload,
                })
            }
            Operation::Delete => Body::Delete(Delete {
                collection,
                id: id.ok_or_else(|| missing("id"))?,
            }),
            Operation::PayloadPatch => Body::PayloadPatch(PayloadPatch {
                collection,
                id: id.ok_or_else(|| missing("id"))?,
                base_version: base_version.ok_or_else(|| missing("base_version"))?,
                payload: payload.ok_or_else(|| missing("payload"))?,
            }),
            Operation::Heartbeat => Body::Heartbeat(Heartbeat {
                interval_ms: interval.ok_or_else(|| missing("heartbeat_interval_ms"))?,
            }),
        };
        Ok(DeltaEvent { hlc, body })
    }
}

impl AvroRecord for PqCodebook {
    const SCHEMA: &'static str = PQ_CODEBOOK_SCHEMA;
    const NAME: &'static str = "PqCodebook";

    fn write_avro(&self, out: &mut Vec<u8>) {
        put_str(out, self.id());
        put_str(out, self.collection());
        put_int(out, self.version() as i32);
        put_int(out, self.dim() as i32);
        put_int(out, self.subspaces() as i32);
        put_int(out, self.centroids() as i32);
        put_len(out, self.data().len() * 4);
        self.data().iter().for_each(|&v| put_float(out, v));
    }

    fn read_avro(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, Self::NAME);
        let id = r.string("id")?;
        let collection = r.string("collection")?;
        let version: u32 = r.non_negative("version")?;
        let dim: u32 = r.non_negative("dim")?;
        let subspaces: u32 = r.non_negative("subspaces")?;
        let centroids: u32 = r.non_negative("centroids")?;
        let data = r.bytes("data")?;
        if !data.len().is_multiple_of(4) {
            return Err(r.malformed("data", format!("{} bytes is not whole f32s", data.len())));
        }
        let values = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        r.finish()?;
        let book = PqCodebook::new(
            collection,
            version,
            dim as usize,
            subspaces as usize,
            centroids as usize,
            values,
        )
        .map_err(|source| DecodeError::Codec {
            field: "codebook",
            source,
        })?;
        if book.id() != id {
            return Err(DecodeError::Codec {
                field: "codebook.id",
                source: CodecError::InvalidCodebook {
                    id,
                    reason: format!("id does not match collection and version ({})", book.id()),
                },
            });
        }
        Ok(book)
    }
}

// ---------------------------------------------------------------- reading

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    record: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], record: &'static str) -> Self {
        Self {
            buf,
            pos: 0,
            record,
        }
    }

    fn malformed(&self, field: &'static str, reason: impl Into<String>) -> DecodeError {
        DecodeError::Malformed {
            record: self.record,
            field,
            reason: reason.into(),
        }
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn long(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        let mut z: u64 = 0;
        for shift in (0..70).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.malformed(field, "ends inside a number"));
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(self.malformed(field, "number overflows 64 bits"));
            }
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(self.malformed(field, "number longer than 10 bytes"))
    }

    fn int(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        let v = self.long(field)?;
        i32::try_from(v).map_err(|_| self.malformed(field, format!("{v} overflows an int")))
    }

    fn non_negative<T: TryFrom<i32>>(&mut self, field: &'static str) -> Result<T, DecodeError> {
        let v = self.int(field)?;
        T::try_from(v).map_err(|_| self.malformed(field, format!("{v} is negative")))
    }

    /// A length that must fit in the bytes left, `unit` bytes per item at least.
    fn len(&mut self, field: &'static str, unit: usize) -> Result<usize, DecodeError> {
        let v = self.long(field)?;
        let left = self.left();
        match usize::try_from(v) {
            Ok(n) if n.saturating_mul(unit) <= left => Ok(n),
            _ => Err(self.malformed(field, format!("length {v} with {left} bytes left"))),
        }
    }

    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.len(field, 1)?;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes(field)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|e| self.malformed(field, format!("not UTF-8: {e}")))
    }

    fn float(&mut self, field: &'static str) -> Result<f32, DecodeError> {
        let Some(b) = self.buf.get(self.pos..self.pos + 4) else {
            return Err(self.malformed(field, "ends inside a float"));
        };
        self.pos += 4;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn union(&mut self, field: &'static str, branches: usize) -> Result<usize, DecodeError> {
        self.enum_index(field, branches)
    }

    fn enum_index(&mut self, field: &'static str, symbols: usize) -> Result<usize, DecodeError> {
        let v = self.long(field)?;
        match usize::try_from(v) {
            Ok(i) if i < symbols => Ok(i),
            _ => Err(self.malformed(field, format!("index {v} of {symbols}"))),
        }
    }

    fn array<T>(
        &mut self,
        field: &'static str,
        min_item_bytes: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let mut out = Vec::new();
        loop {
            let count = self.long(field)?;
            if count == 0 {
                return Ok(out);
            }
            if count < 0 {
                // A negative count is followed by the block's size in bytes.
                self.long(field)?;
            }
            let n = count.unsigned_abs();
            if n.saturating_mul(min_item_bytes as u64) > self.left() as u64 {
                return Err(
                    self.malformed(field, format!("{n} items with {} bytes left", self.left()))
                );
            }
            out.reserve(n as usize);
            for _ in 0..n {
                out.push(item(self)?);
            }
        }
    }

    fn hlc(&mut self, field: &'static str) -> Result<Hlc, DecodeError> {
        let wall = self.long(field)?;
        let wall_ms = u64::try_from(wall)
            .map_err(|_| self.malformed(field, format!("wall_ms {wall} is negative")))?;
        let logical = self.long(field)?;
        // `logical` is an Avro int holding a u32 bit pattern.
        let logical = i32::try_from(logical)
            .map_err(|_| self.malformed(field, format!("logical {logical} overflows an int")))?
            as u32;
        let origin = self.string(field)?;
        let producer = self.long(field)? as u64;
        Ok(Hlc::new(wall_ms, logical, origin).of_producer(producer))
    }

    fn payload(&mut self, field: &'static str) -> Result<Payload, DecodeError> {
        let compression = match self.enum_index(field, 2)? {
            0 => Compression::None,
            _ => Compression::Lz4,
        };
        let data = self.bytes(field)?.to_vec();
        Ok(Payload { compression, data })
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.left() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n, self.record)),
        }
    }
}

#[cfg(test)]
#[allow(deprecated)]
mod tests {
    use super::*;
    use crate::testing::sample_events;
    use apache_avro::{Schema, from_avro_datum, to_avro_datum};
    use proptest::prelude::*;

    /// apache-avro reads our bytes with the schema and writes the very same
    /// bytes back: the hand-written codec is the schema's binary encoding.
    #[test]
    fn bytes_match_apache_avro_for_every_event_kind() {
        let schema = Schema::parse_str(DELTA_EVENT_SCHEMA).unwrap();
        for event in sample_events() {
            let mut ours = Vec::new();
            event.write_avro(&mut ours);
            let value = from_avro_datum(&schema, &mut &ours[..], None).unwrap();
            let theirs = to_avro_datum(&schema, value).unwrap();
            assert_eq!(ours, theirs, "{event:?}");
            assert_eq!(DeltaEvent::read_avro(&ours).unwrap(), event);
        }
    }

    #[test]
    fn codebook_bytes_match_apache_avro() {
        let schema = Schema::parse_str(PQ_CODEBOOK_SCHEMA).unwrap();
        let book = PqCodebook::new(
            "docs",
            3,
            4,
            2,
            2,
            vec![0.5, 1.0, -1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        )
        .unwrap();
        let mut ours = Vec::new();
        book.write_avro(&mut ours);
        let value = from_avro_datum(&schema, &mut &ours[..], None).unwrap();
        assert_eq!(to_avro_datum(&schema, value).unwrap(), ours);
        assert_eq!(PqCodebook::read_avro(&ours).unwrap(), book);
    }

    #[test]
    fn truncation_anywhere_is_an_error_that_names_the_field() {
        for event in sample_events() {
            let mut bytes = Vec::new();
            event.write_avro(&mut bytes);
            for cut in 0..bytes.len() {
                let err = DeltaEvent::read_avro(&bytes[..cut]).unwrap_err();
                assert!(
                    err.to_string().starts_with("malformed DeltaEvent at field"),
                    "{err}"
                );
            }
            bytes.push(0);
            assert!(matches!(
                DeltaEvent::read_avro(&bytes),
                Err(DecodeError::Trailing(1, _))
            ));
        }
    }

    #[test]
    fn extreme_numbers_round_trip() {
        for n in [i64::MIN, -1, 0, 1, 63, 64, i64::MAX] {
            let mut out = Vec::new();
            put_long(&mut out, n);
            assert_eq!(Reader::new(&out, "t").long("n").unwrap(), n);
        }
        let too_long = [0xffu8; 11];
        assert!(Reader::new(&too_long, "t").long("n").is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_event_reader(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = DeltaEvent::read_avro(&bytes);
            let _ = PqCodebook::read_avro(&bytes);
        }

        /// Mutating valid bytes (the hard case for a decoder) never panics.
        #[test]
        fn mutated_events_never_panic(which in 0usize..6, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let events = sample_events();
            let mut bytes = Vec::new();
            events[which % events.len()].write_avro(&mut bytes);
            for (at, b) in flips {
                let i = at % bytes.len();
                bytes[i] = b;
            }
            let _ = DeltaEvent::read_avro(&bytes);
        }
    }
}
