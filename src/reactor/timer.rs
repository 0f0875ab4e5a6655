//! Timers (stub).
