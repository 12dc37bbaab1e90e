//! What several fuzz targets check alike.

use vecsync_schemas::avro::AvroRecord;
use vecsync_schemas::event::DeltaEvent;
use vecsync_schemas::hlc::Hlc;
use vecsync_schemas::mutation::{Mutation, VectorCodec};

/// A mutation a job sent becomes an event body (its vector encoded with
/// `codec`, its payload compressed when larger than a few bytes), unless it
/// is refused, and Avro writes that event and reads it back unchanged.
pub fn publish_round_trip(m: &Mutation, codec: VectorCodec<'_>) {
    let dimension = match m {
        Mutation::Upsert { vector, .. } => vector.len(),
        _ => 0,
    };
    // A small threshold, so that payloads take the lz4 path too.
    let Ok(body) = m.to_body("docs", dimension, codec, 64) else {
        return;
    };
    let event = DeltaEvent {
        hlc: Hlc::new(1, 0, "fuzz"),
        body,
    };
    let mut bytes = Vec::new();
    event.write_avro(&mut bytes);
    let read = DeltaEvent::read_avro(&bytes).expect("an event vecsync wrote reads back");
    assert_eq!(read, event);
}
