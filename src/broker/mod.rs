//! The NATS core protocol, sans IO: parsing what clients send, validating subjects, indexing
//! subscriptions and writing what the server sends, with no socket, clock or allocation.
//!
//! - [`subject`]: tokens, subject validation and wildcard matching.
//! - [`sublist`]: the subscription index (trie with `*`, `>`, queue groups and a match cache).
//!
//! The behaviour follows nats-server 2.9.10 byte for byte where clients can see it (see
//! `shared/NATS-NOTES.md` in the project); where ringlet differs, the item's documentation says
//! so.

pub mod subject;
pub mod sublist;
