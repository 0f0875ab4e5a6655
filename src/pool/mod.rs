//! Storage without allocation.
