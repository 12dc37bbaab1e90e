//! A NumPy `.npy` file as the file loader streams it: the header, then
//! every row as floats (vectors) or as integers (ids).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vecsync_schemas::npy::{read_f32_row, read_header, read_u64};

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let Ok(header) = read_header(&mut input) else {
        return;
    };
    let (mut buf, mut row) = (Vec::new(), Vec::new());
    // A row is read only while the input still holds one, as the loader
    // reads only what the file holds.
    for _ in 0..header.rows.min(1_000) {
        let at = input;
        if read_f32_row(&mut input, &header, &mut buf, &mut row).is_err() {
            let mut again = at;
            if read_u64(&mut again, &header, &mut buf).is_err() {
                return;
            }
            input = again;
        }
    }
});
