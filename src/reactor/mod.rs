//! The event loop.

pub mod timer;
