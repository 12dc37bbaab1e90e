//! Confluent's wire format (magic byte 0, 4-byte big-endian schema id, Avro
//! body) and the registry-aware encoder and decoder built on it.
//!
//! An [`Encoder`] is bound to the one schema this build writes: it registers
//! that exact schema and keeps the id the registry gave it. (A per-subject
//! cache, as in `schema_registry_converter`'s own encoder, would silently
//! keep an old id after the schema changed.) A [`Decoder`] reads any id: bytes
//! written with the current schema are read directly; bytes written with an
//! older or foreign schema are resolved to the current one by apache-avro's
//! schema resolution first.

use crate::avro::{AvroRecord, DecodeError};
use crate::registry::{RegistryClient, RegistryError};
// The plain datum functions are deprecated in favour of builder types that
// do the same; they stay the clearest way to read one body.
#[allow(deprecated)]
use apache_avro::{Schema, from_avro_datum, to_avro_datum};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

/// First byte of every framed record.
pub const MAGIC: u8 = 0;
/// Magic byte plus schema id.
pub const HEADER_LEN: usize = 5;

/// Writes the wire header for `schema_id`.
pub fn put_header(out: &mut Vec<u8>, schema_id: u32) {
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// Splits framed bytes into schema id and Avro body.
pub fn split_header(bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match bytes {
        [MAGIC, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [m, _, _, _, _, ..] => Err(DecodeError::BadMagic(*m)),
        _ => Err(DecodeError::TooShort(bytes.len())),
    }
}

/// Frames records of type `R` with the id its schema has in the registry.
#[derive(Debug)]
pub struct Encoder<R> {
    schema_id: u32,
    _record: PhantomData<fn(&R)>,
}

impl<R: AvroRecord> Encoder<R> {
    /// Registers `R`'s schema under `subject` (for a topic's values,
    /// [`crate::registry::value_subject`]). Fails if the registry refuses it,
    /// e.g. as incompatible with what the subject holds.
    pub async fn register(registry: &RegistryClient, subject: &str) -> Result<Self, RegistryError> {
        let schema_id = registry.register(subject, R::SCHEMA).await?;
        Ok(Self::with_id(schema_id))
    }

    /// An encoder for a schema id obtained elsewhere.
    pub fn with_id(schema_id: u32) -> Self {
        Self {
            schema_id,
            _record: PhantomData,
        }
    }

    pub fn schema_id(&self) -> u32 {
        self.schema_id
    }

    /// Appends the framed record to `out`.
    pub fn encode_into(&self, record: &R, out: &mut Vec<u8>) {
        put_header(out, self.schema_id);
        record.write_avro(out);
    }

    /// The framed record in a new buffer.
    pub fn encode(&self, record: &R) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(record, &mut out);
        out
    }
}

/// How bytes under one schema id are read.
#[derive(Debug)]
enum Plan {
    /// Written with the current schema: read directly.
    Direct,
    /// Written with another schema: resolve to the current one first.
    Resolve(Arc<Schema>),
}

/// Reads framed records of type `R` written under any registered schema
/// that resolves to `R`'s.
pub struct Decoder<R> {
    registry: Arc<RegistryClient>,
    reader: Schema,
    /// The reader's Parsing Canonical Form, computed once.
    reader_canonical: String,
    plans: Mutex<HashMap<u32, Arc<Plan>>>,
    _record: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for Decoder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("registry", &self.registry)
            .finish()
    }
}

impl<R: AvroRecord> Decoder<R> {
    pub fn new(registry: Arc<RegistryClient>) -> Self {
        let reader = reader_schema::<R>();
        Self {
            registry,
            reader_canonical: reader.canonical_form(),
            reader,
            plans: Mutex::new(HashMap::new()),
            _record: PhantomData,
        }
    }

    /// Decodes one framed record. Fetches the writer schema from the
    /// registry the first time an id is seen.
    pub async fn decode(&self, bytes: &[u8]) -> Result<R, DecodeError> {
        let (id, body) = split_header(bytes)?;
        let cached = self.lock().get(&id).cloned();
        let plan = match cached {
            Some(plan) => plan,
            None => {
                let writer = self
                    .registry
                    .schema(id)
                    .await
                    .map_err(|source| DecodeError::Registry { id, source })?;
                let plan = Arc::new(self.plan_for(id, writer)?);
                self.lock().insert(id, plan.clone());
                plan
            }
        };
        match &*plan {
            Plan::Direct => R::read_avro(body),
            Plan::Resolve(writer) => resolve::<R>(id, writer, &self.reader, body),
        }
    }

    fn plan_for(&self, id: u32, writer: Arc<Schema>) -> Result<Plan, DecodeError> {
        if writer.canonical_form() == self.reader_canonical {
            return Ok(Plan::Direct);
        }
        apache_avro::schema_compatibility::SchemaCompatibility::can_read(&writer, &self.reader)
            .map_err(|e| DecodeError::Schema {
                id,
                reason: format!("cannot be read as {}: {e}", R::NAME),
            })?;
        Ok(Plan::Resolve(writer))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Plan>>> {
        self.plans.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `R`'s schema, parsed. The schema is compiled into the binary and covered
/// by tests, so failing to parse it is a build defect, not an input error.
pub fn reader_schema<R: AvroRecord>() -> Schema {
    #[allow(clippy::expect_used)]
    Schema::parse_str(R::SCHEMA).expect("the compiled-in schema parses")
}

/// Reads an Avro body written with `writer` as the current `R`, through
/// Avro schema resolution (new fields take their defaults, and so on).
#[allow(deprecated)]
pub fn resolve<R: AvroRecord>(
    id: u32,
    writer: &Schema,
    reader: &Schema,
    mut body: &[u8],
) -> Result<R, DecodeError> {
    let schema_error = |reason: String| DecodeError::Schema { id, reason };
    let value = from_avro_datum(writer, &mut body, Some(reader))
        .map_err(|e| schema_error(format!("cannot resolve to {}: {e}", R::NAME)))?;
    if !body.is_empty() {
        return Err(DecodeError::Trailing(body.len(), R::NAME));
    }
    let current = to_avro_datum(reader, value)
        .map_err(|e| schema_error(format!("resolved value does not fit {}: {e}", R::NAME)))?;
    R::read_avro(&current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_bad_frames_are_named() {
        let mut out = Vec::new();
        put_header(&mut out, 0x01020304);
        out.push(42);
        assert_eq!(split_header(&out).unwrap(), (0x01020304, &[42u8][..]));
        assert_eq!(
            split_header(&out[..4]).unwrap_err().to_string(),
            "record of 4 bytes is shorter than the 5-byte Confluent wire header"
        );
        out[0] = 1;
        assert!(matches!(split_header(&out), Err(DecodeError::BadMagic(1))));
    }
}
