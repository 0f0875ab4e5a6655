//! The NATS core protocol, sans IO: parsing what clients send, validating subjects, indexing
//! subscriptions and writing what the server sends, with no socket, clock or allocation.
//!
//! - [`config`]: nats-server's configuration file format (the common subset), for programs
//!   that run the broker.
//! - [`connect`]: CONNECT's JSON options, parsed without allocation, and the options a client
//!   keeps.
//! - [`parser`]: the resumable, zero-copy parser of client operations.
//! - [`subject`]: tokens, subject validation and wildcard matching.
//! - [`sublist`]: the subscription index (trie with `*`, `>`, queue groups and a match cache).
//! - [`proto`]: what the server sends: INFO, MSG/HMSG, `+OK`, PING/PONG, every `-ERR`.
//! - [`server`]: the network glue: [`server::Broker`], the reactor
//!   [`Handler`](crate::reactor::Handler) that does what the next section describes, with
//!   its storage, limits (max_pending, reservations for large messages), auth, server PINGs
//!   and slow-consumer policy.
//! - [`monitor`]: HTTP monitoring (`/healthz`, `/varz`, `/connz`, `/subsz`) served by the
//!   same handler on a second listener, written into the write slab without allocation.
//! - [`http`]: the sans-IO HTTP/1.1 request-head parser the monitoring port uses.
//!
//! The behaviour follows nats-server 2.9.10 byte for byte where clients can see it (see
//! `shared/NATS-NOTES.md` in the project, and the `matches_reference_server` test, which pins
//! that server's answers); where ringlet differs, the item's documentation says so.
//!
//! # What the network glue does with these pieces
//!
//! Per connection it keeps a [`parser::BareParser`] (lent a [`parser::LineBuf`] from a small
//! shared pool only while a control line is split across receives), a
//! [`connect::ClientOptions`] and its subscriptions (sid to [`sublist::SubKey`], with the
//! delivered count and UNSUB max), and:
//!
//! - on accept, writes [`proto::Info`] (with `client_id`, `client_ip`, `auth_required`), and
//!   with auth configured calls [`parser::BareParser::set_awaiting_auth`] and arms the auth timer
//!   (`Authentication Timeout`); beyond `max_connections`, writes the INFO and then
//!   `maximum connections exceeded` and closes, as nats-server does;
//! - feeds every received segment to [`parser::BareParser::parse_with`] until it is used up
//!   (when it stops for a line buffer and none is free, the connection waits for one with its
//!   receive paused: [`server::BrokerMem::line_bufs`]); on [`parser::ParseError`] writes its
//!   [`parser::ParseError::server_error`] (if any) and closes;
//! - on CONNECT: [`connect::ClientOptions::update`] (error: close silently), authenticate
//!   against the borrowed strings and refuse [`connect::ClientOptions::account_requested`]
//!   (`Authorization Violation`), [`connect::ClientOptions::check`], then
//!   [`parser::BareParser::set_headers`] with [`connect::ClientOptions::headers_enabled`],
//!   clear awaiting-auth, and `+OK` if verbose;
//! - on SUB: ignore a reused sid, else [`sublist::Sublist::insert`] (invalid subject:
//!   `Invalid Subject`; full: `maximum subscriptions exceeded`; both keep the connection),
//!   `+OK` if verbose; on UNSUB: remove now or record the max, `+OK` if verbose;
//! - on PUB/HPUB: `Invalid Publish Subject` if pedantic and
//!   [`subject::is_valid_literal_subject`] fails, then `+OK` if verbose (on the line, before
//!   the payload, as nats-server does); hold the payload chunks (their receive
//!   buffers) until [`parser::Op::PayloadEnd`]; then [`sublist::Sublist::match_into`] with an
//!   eligibility predicate (echo, closed, auto-unsubscribe limit) and, per target, write the
//!   MSG/HMSG line ([`proto::write_msg_line`]; HMSG only when the target negotiated headers and
//!   the header block is not empty, else MSG with the headers left out), the chunks and `\r\n`
//!   into its write slab; count deliveries and remove subscriptions that reached their max;
//!   answer no-responders ([`proto::write_no_responders`]) when asked for and nobody got it;
//! - on PING: `PONG`; on PONG: reset the outstanding-ping count; on client `-ERR`: close; on
//!   client INFO: close unless [`connect::validate_json_object`] accepts it;
//! - on close: remove every subscription of the connection from the sublist.

pub mod config;
pub mod connect;
pub mod http;
pub mod monitor;
pub mod parser;
pub mod proto;
pub mod server;
pub mod subject;
pub mod sublist;
