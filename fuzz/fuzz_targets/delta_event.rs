//! A delta event as a worker reads it off a topic: Confluent's frame
//! (magic byte, schema id), the Avro body read directly as the current
//! schema or, for schema id 1, resolved from v1 as an old producer wrote
//! it; then the vector of a decoded upsert, as the worker decodes it.
#![no_main]

use apache_avro::Schema;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use vecsync_schemas::avro::AvroRecord;
use vecsync_schemas::event::{Body, DeltaEvent, VectorData};
use vecsync_schemas::wire::{reader_schema, resolve, split_header};

static V1: LazyLock<Schema> = LazyLock::new(|| {
    Schema::parse_str(include_str!("../../schemas/avro/delta-event.v1.avsc"))
        .expect("the v1 schema parses")
});
static CURRENT: LazyLock<Schema> = LazyLock::new(reader_schema::<DeltaEvent>);

fuzz_target!(|data: &[u8]| {
    let Ok((id, body)) = split_header(data) else {
        return;
    };
    let event = if id == 1 {
        resolve::<DeltaEvent>(id, &V1, &CURRENT, body)
    } else {
        DeltaEvent::read_avro(body)
    };
    if let Ok(DeltaEvent {
        body: Body::Upsert(upsert),
        ..
    }) = event
    {
        match &upsert.vector {
            VectorData::Full(encoded) => {
                let _ = encoded.decode(None);
            }
            VectorData::Sparse(delta) => {
                let mut base = vec![0.0; 64];
                let _ = delta.apply(&mut base);
            }
        }
    }
});
