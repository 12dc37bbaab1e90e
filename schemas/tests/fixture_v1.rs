//! Bytes written with the first published delta schema (v1) must decode
//! with every later reader schema, and a v1 reader must read what this
//! build writes. The fixture holds the Avro bodies of `sample_events()` as
//! v1 wrote them (v1 had no producer ids); never regenerate it after a
//! schema change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use apache_avro::schema_compatibility::SchemaCompatibility;
#[allow(deprecated)]
use apache_avro::{Schema, from_avro_datum, to_avro_datum};
use std::path::PathBuf;
use vecsync_schemas::avro::{AvroRecord, DELTA_EVENT_SCHEMA};
use vecsync_schemas::event::{Body, DeltaEvent, VectorData};
use vecsync_schemas::testing::sample_events;
use vecsync_schemas::wire::resolve;

const V1: &str = include_str!("../avro/delta-event.v1.avsc");

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/delta-event-v1.bin")
}

/// Length-prefixed (u32 big-endian) Avro bodies.
fn read_bodies(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    out
}

/// What v1 could say of `event`: every producer id is 0.
fn as_v1(mut event: DeltaEvent) -> DeltaEvent {
    event.hlc.producer = 0;
    match &mut event.body {
        Body::PayloadPatch(p) => p.base_version.producer = 0,
        Body::Upsert(u) => {
            if let VectorData::Sparse(d) = &mut u.vector {
                d.base_version.producer = 0;
            }
        }
        Body::Delete(_) | Body::Heartbeat(_) => {}
    }
    event
}

fn v1_fixture() -> Vec<u8> {
    std::fs::read(fixture_path()).expect("the v1 fixture is committed")
}

#[test]
fn the_current_schema_is_v1_plus_fields_with_defaults() {
    assert_ne!(DELTA_EVENT_SCHEMA, V1, "v1 stays as published");
    let (v1, current) = (
        Schema::parse_str(V1).unwrap(),
        Schema::parse_str(DELTA_EVENT_SCHEMA).unwrap(),
    );
    // BACKWARD: the new reader reads old data; and old readers read new data.
    SchemaCompatibility::can_read(&v1, &current).unwrap();
    SchemaCompatibility::can_read(&current, &v1).unwrap();
}

#[test]
fn v1_bytes_decode_with_the_current_schema() {
    let bytes = v1_fixture();
    let bodies = read_bodies(&bytes);
    let expected = sample_events();
    assert_eq!(bodies.len(), expected.len());
    assert!(
        expected.iter().any(|e| e.hlc.producer != 0),
        "the samples exercise producer ids"
    );

    let writer = Schema::parse_str(V1).unwrap();
    let reader = Schema::parse_str(DELTA_EVENT_SCHEMA).unwrap();
    for (body, event) in bodies.iter().zip(expected) {
        // Through Avro resolution: the missing producer takes its default.
        let decoded: DeltaEvent = resolve(1, &writer, &reader, body).unwrap();
        assert_eq!(decoded, as_v1(event));
    }
}

/// An old consumer (reader v1) reads what this build writes: resolution
/// drops the producer ids, and what is left is exactly what v1 wrote.
#[test]
#[allow(deprecated)]
fn a_v1_reader_reads_current_bytes_as_v1_wrote_them() {
    let bytes = v1_fixture();
    let v1_bodies = read_bodies(&bytes);
    let (v1, current) = (
        Schema::parse_str(V1).unwrap(),
        Schema::parse_str(DELTA_EVENT_SCHEMA).unwrap(),
    );
    for (event, v1_body) in sample_events().iter().zip(v1_bodies) {
        let mut body = Vec::new();
        event.write_avro(&mut body);
        let value = from_avro_datum(&current, &mut &body[..], Some(&v1)).unwrap();
        assert_eq!(to_avro_datum(&v1, value).unwrap(), v1_body, "{event:?}");
    }
}
