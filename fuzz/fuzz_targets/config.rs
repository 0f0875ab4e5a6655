//! nats-server configuration files: never panics, and what parses is written back and parsed
//! again to the same settings (see `ringlet::broker::config::fuzz_config`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringlet::broker::config::fuzz_config(data);
});
