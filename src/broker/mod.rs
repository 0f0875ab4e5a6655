//! The NATS core protocol, sans IO: parsing what clients send, validating subjects, indexing
//! subscriptions and writing what the server sends, with no socket, clock or allocation.
//!
//! - [`connect`]: CONNECT's JSON options, parsed without allocation, and the options a client
//!   keeps.
//! - [`parser`]: the resumable, zero-copy parser of client operations.
//! - [`subject`]: tokens, subject validation and wildcard matching.
//! - [`sublist`]: the subscription index (trie with `*`, `>`, queue groups and a match cache).
//! - [`proto`]: what the server sends: INFO, MSG/HMSG, `+OK`, PING/PONG, every `-ERR`.
//!
//! The behaviour follows nats-server 2.9.10 byte for byte where clients can see it (see
//! `shared/NATS-NOTES.md` in the project); where ringlet differs, the item's documentation says
//! so.

pub mod connect;
pub mod parser;
pub mod proto;
pub mod subject;
pub mod sublist;
