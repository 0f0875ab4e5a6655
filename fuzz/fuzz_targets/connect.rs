//! CONNECT JSON: never panics, and what parses decodes consistently (see
//! `ringlet::broker::connect::fuzz_connect`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringlet::broker::connect::fuzz_connect(data);
});
