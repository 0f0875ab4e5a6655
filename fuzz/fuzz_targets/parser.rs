//! The client-operation parser: never panics, and whole, byte-at-a-time and data-driven
//! segmented parses agree (see `ringlet::broker::parser::fuzz_parse`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringlet::broker::parser::fuzz_parse(data);
});
