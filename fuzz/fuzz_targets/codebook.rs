//! A PQ codebook record off a codebook topic: Confluent's frame and the
//! Avro body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vecsync_schemas::avro::AvroRecord;
use vecsync_schemas::vector::PqCodebook;
use vecsync_schemas::wire::split_header;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, body)) = split_header(data) {
        let _ = PqCodebook::read_avro(body);
    }
});
