//! A JSONL input file as the file loader reads it, one mutation per line;
//! every line it accepts is published as an event that reads back
//! unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vecsync_fuzz::publish_round_trip;
use vecsync_schemas::mutation::{VectorCodec, from_jsonl_line};
use vecsync_schemas::vector::Encoding;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Ok(m) = from_jsonl_line(line) {
            publish_round_trip(&m, VectorCodec::Plain(Encoding::Sq8));
        }
    }
});
