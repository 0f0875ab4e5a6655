//! Subject validation and matching agree with each other and with the sublist (see
//! `ringlet::broker::subject::fuzz_subject`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringlet::broker::subject::fuzz_subject(data);
});
