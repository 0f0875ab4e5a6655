//! loom models of ringlet's cross-thread buffer return and wake.
//!
//! This crate is empty unless built with `RUSTFLAGS="--cfg loom"` (see `make loom`). The models
//! land with the cross-thread return queue; until then there is nothing here to check.
