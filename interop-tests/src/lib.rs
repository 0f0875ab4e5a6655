//! Interop tests: ringlet's broker with real NATS clients (async-nats on tokio).
//!
//! Everything is in `tests/`, which starts the broker through the root package's
//! `tests/broker_util` (included by path) and talks to it with async-nats. The crate exists so
//! that these heavy dependencies are not dev-dependencies of `ringlet` itself: Cargo builds a
//! package's dev-dependencies for its examples too, so they would make the first
//! `cargo run --example static_broker` (`make broker`) build tokio and a TLS stack.
