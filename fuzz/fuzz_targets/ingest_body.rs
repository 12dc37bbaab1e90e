//! A body of the HTTP ingest API as the producer reads it: the first byte
//! picks the route (upsert, delete, payload patch) and the vector encoding,
//! the rest is the body. Every mutation it accepts is published as an
//! event that reads back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vecsync_fuzz::publish_round_trip;
use vecsync_schemas::mutation::{IngestRoute, VectorCodec};
use vecsync_schemas::vector::Encoding;

const ROUTES: [IngestRoute; 3] = [IngestRoute::Upsert, IngestRoute::Delete, IngestRoute::Patch];
/// Every encoding but PQ, which needs a trained codebook.
const ENCODINGS: [Encoding; 5] = [
    Encoding::F32,
    Encoding::F16,
    Encoding::Sq8,
    Encoding::Sq4,
    Encoding::Binary,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let route = ROUTES[usize::from(pick % 3)];
    let codec = VectorCodec::Plain(ENCODINGS[usize::from(pick / 3 % 5)]);
    if let Ok(mutations) = route.mutations(body) {
        for m in &mutations {
            publish_round_trip(m, codec);
        }
    }
});
