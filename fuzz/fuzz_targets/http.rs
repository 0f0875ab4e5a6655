//! The monitoring port's HTTP request-head parser: resumable at any split, limits hold, never
//! panics (see `ringlet::broker::http::fuzz_http`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringlet::broker::http::fuzz_http(data);
});
