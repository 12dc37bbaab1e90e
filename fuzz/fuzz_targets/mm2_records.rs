//! MirrorMaker 2's heartbeat and offset-sync records, as the lag exporter
//! reads them: the first byte says how much of the rest is the key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vecsync_schemas::mm2::{Heartbeat, OffsetSync};

fuzz_target!(|data: &[u8]| {
    let Some((&key_len, rest)) = data.split_first() else {
        return;
    };
    let (key, value) = rest.split_at(usize::from(key_len).min(rest.len()));
    let _ = Heartbeat::decode(key, value);
    let _ = OffsetSync::decode(key, value);
});
