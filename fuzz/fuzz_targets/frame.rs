//! The length-prefixed frame decoder (with fragmentation, reassembly and the throttle): never
//! panics, and whole, byte-at-a-time and data-driven segmented decodes agree, with every
//! buffer back (see `ringlet::frame::fuzz_frames`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringlet::frame::fuzz_frames(data);
});
