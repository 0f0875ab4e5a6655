//! The line decoder: never panics, no line over the limit or holding its ending, and whole,
//! byte-at-a-time and segmented decodes agree (see `ringlet::frame::fuzz_lines`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringlet::frame::fuzz_lines(data);
});
