//! Bytes written with the first published delta schema (v1) must decode
//! with every later reader schema. The fixture holds the Avro bodies of
//! `sample_events()` as v1 wrote them; never regenerate it after a schema
//! change (set VECSYNC_WRITE_FIXTURES=1 only to create it when missing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use apache_avro::Schema;
use std::path::PathBuf;
use vecsync_schemas::avro::{AvroRecord, DELTA_EVENT_SCHEMA};
use vecsync_schemas::event::DeltaEvent;
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

#[test]
fn v1_bytes_decode_with_the_current_schema() {
    let path = fixture_path();
    if !path.exists() && std::env::var_os("VECSYNC_WRITE_FIXTURES").is_some() {
        assert_eq!(
            DELTA_EVENT_SCHEMA, V1,
            "the v1 fixture must be written by the v1 schema"
        );
        let mut out = Vec::new();
        for event in sample_events() {
            let mut body = Vec::new();
            event.write_avro(&mut body);
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.extend_from_slice(&body);
        }
        std::fs::write(&path, out).unwrap();
    }
    let bytes = std::fs::read(&path).expect("the v1 fixture is committed");
    let bodies = read_bodies(&bytes);
    let expected = sample_events();
    assert_eq!(bodies.len(), expected.len());

    let writer = Schema::parse_str(V1).unwrap();
    let reader = Schema::parse_str(DELTA_EVENT_SCHEMA).unwrap();
    for (body, event) in bodies.iter().zip(&expected) {
        let decoded: DeltaEvent = resolve(1, &writer, &reader, body).unwrap();
        assert_eq!(&decoded, event);
    }
}
