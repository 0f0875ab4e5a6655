//! [`Parser`]: a resumable push parser for what NATS clients send.
//!
//! # Input and output
//!
//! Input arrives as successive byte slices (the segments of receive buffers), split anywhere.
//! [`Parser::parse`] takes one slice and returns how many of its bytes it consumed and at most
//! one [`Op`]; call it again with the rest until the slice is used up, then feed the next one.
//! A caller feeding a whole stream at once, one feeding receive segments, and one feeding a
//! byte at a time see the same operations (payload chunks aside, whose boundaries follow the
//! input's) and the same error, at the same place in the stream.
//!
//! ```
//! use ringlet::broker::parser::{Op, Parser, ParserConfig};
//!
//! let mut parser = Parser::new(ParserConfig::DEFAULT);
//! let segments: [&[u8]; 3] = [b"CONNECT {}\r\nPU", b"B foo 5\r\nhel", b"lo\r\nPING\r\n"];
//! let mut payload = [0u8; 5];
//! let mut got = 0;
//! let mut pings = 0;
//! for segment in segments {
//!     let mut rest = segment;
//!     while !rest.is_empty() {
//!         let (used, op) = parser.parse(rest).expect("valid input");
//!         rest = &rest[used..];
//!         match op {
//!             Some(Op::Payload(chunk)) => {
//!                 payload[got..got + chunk.len()].copy_from_slice(chunk);
//!                 got += chunk.len();
//!             }
//!             Some(Op::Ping) => pings += 1,
//!             _ => {}
//!         }
//!     }
//! }
//! assert_eq!((&payload[..], pings), (&b"hello"[..], 1));
//! ```
//!
//! # Zero copy
//!
//! Payloads are never copied: after an [`Op::Pub`], the payload arrives as [`Op::Headers`] and
//! [`Op::Payload`] chunks that borrow the input slice, split where the input is split and at
//! the header/body boundary, and then [`Op::PayloadEnd`] once the `\r\n` after it has been
//! checked. A control line wholly inside one slice is borrowed from it too; only a line split
//! across slices is gathered in a line buffer (a [`LineBuf`], [`MAX_CONTROL_LINE`] + 1 bytes).
//!
//! # Where the line buffer lives
//!
//! [`Parser`] owns its [`LineBuf`] (about 4 KiB per parser). [`BareParser`] is the same parser
//! without one (a few dozen bytes): its caller lends a [`LineBuf`] only while a control line is
//! actually split ([`BareParser::parse_with`]), so a server can keep a small shared pool of
//! line buffers instead of one per connection (the broker does: see
//! [`super::server::BrokerMem::line_bufs`]). Without a buffer, the bare parser stops *before*
//! the argument text of a line that does not end in the slice and consumes nothing of it; the
//! caller keeps those bytes and feeds them again, with a buffer or with the rest of the line
//! in the same slice. Both see the same operations and errors as [`Parser`].
//!
//! A message is complete only at [`Op::PayloadEnd`]: if the stream fails or ends before it (a
//! wrong trailer, a closed connection), the reference delivers nothing. So the broker keeps the
//! chunks' receive buffers (a chunk is a range of one of them) until [`Op::PayloadEnd`], then
//! writes, for each target, the MSG line, the chunks and `\r\n` into its write slab: one copy
//! per target, nothing to take back on failure, and a connection with several matching
//! subscriptions gets whole messages one after the other (chunks streamed into its slab as
//! they arrive would interleave them). [`Parser::payload_remaining`] tells how much more to
//! expect.
//!
//! # The rules (nats-server 2.9.10, `server/parser.go` and `client.go`)
//!
//! - Operation names are case-insensitive: `CONNECT`, `PING`, `PONG`, `SUB`, `UNSUB`, `PUB`,
//!   `HPUB`, `+OK`, `-ERR`, `INFO`. Anything else, including a blank line, `MSG` and `HMSG`,
//!   is [`ParseError::UnknownOperation`] at its first unexpected byte.
//! - `PUB`, `HPUB`, `SUB`, `UNSUB` and `-ERR` need a space or tab after the name; `CONNECT`
//!   and `INFO` do not. Blanks before the arguments are skipped; the first other byte starts
//!   the argument text, whatever it is (so `PUB \n...` takes the next line as its arguments, as
//!   the reference does). The line ends at `\n`, and a `\r` right before it (not as the first
//!   argument byte) is dropped; any other `\r` is argument text.
//! - Text after `PING`, `PONG` and `+OK` up to the `\n` is ignored, however long.
//! - More than `max_control_line` (4096) bytes of argument text is
//!   [`ParseError::MaxControlLine`], found as soon as no line end can save it.
//! - Arguments are separated by runs of spaces and tabs (and, for SUB and UNSUB, `\r` and `\n`
//!   too). A wrong argument count, a size that is not 1 to 9 decimal digits, or an HPUB header
//!   size above its total size is [`ParseError::InvalidArguments`]: close without `-ERR`.
//! - A size above `max_payload` is [`ParseError::MaxPayload`], found on the PUB/HPUB line.
//! - HPUB from a client that has not negotiated headers is
//!   [`ParseError::HeadersNotSupported`] (close without `-ERR`), checked before its arguments.
//! - A payload must be followed by exactly `\r\n`, else [`ParseError::UnknownOperation`].
//! - While the server waits for authentication ([`Parser::set_awaiting_auth`]), an operation
//!   that does not start with `C` is [`ParseError::AuthorizationViolation`] at its first byte.
//! - An unparsable UNSUB max is reported as 0 (the reference then unsubscribes at once).
//!
//! nats-server's parser takes an `HMSG` line from a client and fails on what follows it
//! (`Unknown Protocol Operation` all the same); ringlet reports it at the `M`, like `MSG`.
//!
//! After an error the parser stays failed and returns that error for any further input.
//! Nothing here allocates or panics.

use core::fmt;

use super::proto::ServerError;

/// The control-line limit: bytes of argument text after the operation name.
pub const MAX_CONTROL_LINE: usize = 4096;
/// nats-server's default max_payload.
pub const DEFAULT_MAX_PAYLOAD: u32 = 1024 * 1024;
/// The line buffer holds the limit plus a `\r` that may turn out to be the line end's.
const LINE_CAP: usize = MAX_CONTROL_LINE + 1;

/// Limits a [`Parser`] enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParserConfig {
    /// The largest PUB/HPUB total size accepted.
    pub max_payload: u32,
    /// The control-line limit, at most (and clamped to) [`MAX_CONTROL_LINE`]; at least 1.
    pub max_control_line: usize,
}

impl ParserConfig {
    /// nats-server's defaults: 1 MiB payloads, 4096-byte control lines.
    pub const DEFAULT: ParserConfig = ParserConfig {
        max_payload: DEFAULT_MAX_PAYLOAD,
        max_control_line: MAX_CONTROL_LINE,
    };
}

impl Default for ParserConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The client operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `CONNECT {json}`.
    Connect,
    /// `INFO {json}`.
    Info,
    /// `PUB <subject> [reply] <size>`.
    Pub,
    /// `HPUB <subject> [reply] <header size> <total size>`.
    Hpub,
    /// `SUB <subject> [queue] <sid>`.
    Sub,
    /// `UNSUB <sid> [max]`.
    Unsub,
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
    /// `+OK`.
    Ok,
    /// `-ERR <text>`.
    Err,
}

impl OpKind {
    /// The operation name, upper case.
    pub const fn name(self) -> &'static str {
        match self {
            OpKind::Connect => "CONNECT",
            OpKind::Info => "INFO",
            OpKind::Pub => "PUB",
            OpKind::Hpub => "HPUB",
            OpKind::Sub => "SUB",
            OpKind::Unsub => "UNSUB",
            OpKind::Ping => "PING",
            OpKind::Pong => "PONG",
            OpKind::Ok => "+OK",
            OpKind::Err => "-ERR",
        }
    }
}

/// Why the parser stopped. Every variant closes the connection; [`ParseError::server_error`]
/// tells which `-ERR`, if any, to send first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParseError {
    /// Not a client operation, or a bad payload trailer: `-ERR 'Unknown Protocol Operation'`.
    UnknownOperation,
    /// Argument text over the limit: `-ERR 'maximum control line exceeded'`.
    MaxControlLine,
    /// A PUB/HPUB size over max_payload: `-ERR 'Maximum Payload Violation'`.
    MaxPayload,
    /// Something other than CONNECT while awaiting authentication:
    /// `-ERR 'Authorization Violation'`.
    AuthorizationViolation,
    /// Malformed arguments of this operation: close without `-ERR`.
    InvalidArguments(OpKind),
    /// HPUB without negotiated headers: close without `-ERR`.
    HeadersNotSupported,
}

impl ParseError {
    /// The `-ERR` to send before closing, or `None` to close silently.
    pub const fn server_error(self) -> Option<ServerError<'static>> {
        match self {
            ParseError::UnknownOperation => Some(ServerError::UnknownProtocolOperation),
            ParseError::MaxControlLine => Some(ServerError::MaxControlLineExceeded),
            ParseError::MaxPayload => Some(ServerError::MaxPayloadViolation),
            ParseError::AuthorizationViolation => Some(ServerError::AuthorizationViolation),
            ParseError::InvalidArguments(_) | ParseError::HeadersNotSupported => None,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::UnknownOperation => f.write_str("unknown protocol operation"),
            ParseError::MaxControlLine => f.write_str("maximum control line exceeded"),
            ParseError::MaxPayload => f.write_str("maximum payload exceeded"),
            ParseError::AuthorizationViolation => {
                f.write_str("operation before CONNECT while authentication is required")
            }
            ParseError::InvalidArguments(k) => write!(f, "malformed {} arguments", k.name()),
            ParseError::HeadersNotSupported => f.write_str("message headers not supported"),
        }
    }
}

impl core::error::Error for ParseError {}

/// One client operation, or one piece of a message's payload.
///
/// Byte slices borrow the input slice or the parser's line buffer; they are valid until the
/// next call to the parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// `CONNECT`: the JSON text (parse it with [`super::connect::parse_connect`]).
    Connect(&'a [u8]),
    /// `INFO` from a client: the JSON text. The reference ignores it when it is valid JSON and
    /// closes the connection (without `-ERR`) when it is not
    /// ([`super::connect::validate_json_object`]).
    Info(&'a [u8]),
    /// `PING`: answer `PONG`.
    Ping,
    /// `PONG`.
    Pong,
    /// `+OK` from a client: ignored by the reference.
    Ok,
    /// `-ERR` from a client: its text. The reference closes the connection (without `-ERR`).
    Err(&'a [u8]),
    /// `SUB`.
    Sub {
        /// The subject (not validated here; see [`super::subject::is_valid_subject`]).
        subject: &'a [u8],
        /// The queue group.
        queue: Option<&'a [u8]>,
        /// The subscription id.
        sid: &'a [u8],
    },
    /// `UNSUB`.
    Unsub {
        /// The subscription id.
        sid: &'a [u8],
        /// Deliver this many messages in all, then remove; 0 (no max given, `0`, or not a
        /// number) removes now, as does a max not above the count already delivered.
        max: u32,
    },
    /// `PUB` or `HPUB`; the payload follows as chunks, then [`Op::PayloadEnd`].
    Pub {
        /// The subject (validated only for pedantic clients:
        /// [`super::subject::is_valid_literal_subject`]).
        subject: &'a [u8],
        /// The reply subject.
        reply: Option<&'a [u8]>,
        /// For HPUB, the size of the header block (0 is delivered as a plain MSG).
        header_len: Option<u32>,
        /// The size of everything after the line (headers included).
        total_len: u32,
    },
    /// A piece of an HPUB header block.
    Headers(&'a [u8]),
    /// A piece of a message body.
    Payload(&'a [u8]),
    /// The message's payload and its `\r\n` are complete: deliver it.
    PayloadEnd,
}

/// Where the parser is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between operations.
    Start,
    /// After `P`: PUB, PING or PONG.
    P,
    /// Matching the rest of an operation name: `pos` bytes of it matched.
    Name { kind: OpKind, pos: u8 },
    /// After an operation name that needs a blank.
    Sep(OpKind),
    /// Skipping blanks before the arguments.
    Blanks(OpKind),
    /// In the argument text (`line_len` bytes of it buffered).
    Arg(OpKind),
    /// Ignoring the rest of a PING/PONG/+OK line.
    Skip(OpKind),
    /// In a payload (`hdr_left`, `body_left`).
    Payload,
    /// Expecting the `\r` after a payload.
    TrailerCr,
    /// Expecting the `\n` after a payload.
    TrailerLf,
    /// Stopped.
    Failed(ParseError),
}

/// Token spans of a line's arguments, relative to the argument text.
#[derive(Clone, Copy, Debug, Default)]
struct Args {
    spans: [(u16, u16); 4],
    n: usize,
    max: u32,
    header_len: Option<u32>,
    total_len: u32,
}

/// What one step produced (without borrowing, so the borrow checker allows the loop).
#[derive(Clone, Copy, Debug)]
enum Ev {
    None,
    Ping,
    Pong,
    Ok,
    LineInput {
        kind: OpKind,
        start: usize,
        end: usize,
        args: Args,
    },
    LineBuf {
        kind: OpKind,
        len: usize,
        args: Args,
    },
    Chunk {
        header: bool,
        start: usize,
        end: usize,
    },
    PayloadEnd,
}

/// Storage for one control line split across input slices: [`MAX_CONTROL_LINE`] + 1 bytes
/// (the limit plus a `\r` that may turn out to be the line end's).
///
/// A [`Parser`] owns one; a [`BareParser`] is lent one while it needs it. Its contents mean
/// nothing between lines (the parser keeps the length), so any buffer will do, dirty or not,
/// and all-zero bytes is a fine one ([`ZeroInit`](crate::pool::ZeroInit)).
pub struct LineBuf {
    bytes: [u8; LINE_CAP],
}

impl LineBuf {
    /// A zeroed buffer.
    pub const fn new() -> LineBuf {
        LineBuf {
            bytes: [0; LINE_CAP],
        }
    }

    /// The bytes, for a pool that keeps its own bookkeeping in free buffers.
    pub fn as_mut_bytes(&mut self) -> &mut [u8; MAX_CONTROL_LINE + 1] {
        &mut self.bytes
    }
}

impl Default for LineBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LineBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LineBuf")
    }
}

crate::impl_zero_init! { impl LineBuf { bytes } }

/// The client-operation parser with its own line buffer: see the [module
/// documentation](self).
///
/// About 4 KiB, for the partial-line buffer; no other storage. [`BareParser`] is the same
/// without the buffer.
pub struct Parser {
    bare: BareParser,
    line: LineBuf,
}

impl fmt::Debug for Parser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.bare.fmt(f)
    }
}

impl Parser {
    /// A parser at the start of a connection: headers not negotiated, not awaiting auth.
    pub const fn new(config: ParserConfig) -> Parser {
        Parser {
            bare: BareParser::new(config),
            line: LineBuf::new(),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> ParserConfig {
        self.bare.config()
    }

    /// See [`BareParser::set_headers`].
    pub fn set_headers(&mut self, headers: bool) {
        self.bare.set_headers(headers);
    }

    /// See [`BareParser::set_awaiting_auth`].
    pub fn set_awaiting_auth(&mut self, awaiting: bool) {
        self.bare.set_awaiting_auth(awaiting);
    }

    /// Whether the parser is between operations (not inside a line or a payload).
    pub fn at_boundary(&self) -> bool {
        self.bare.at_boundary()
    }

    /// See [`BareParser::payload_remaining`].
    pub fn payload_remaining(&self) -> Option<u64> {
        self.bare.payload_remaining()
    }

    /// Bytes of a partial control line held in the parser's buffer.
    pub fn buffered(&self) -> usize {
        self.bare.buffered()
    }

    /// The error the parser stopped at, if it did.
    pub fn error(&self) -> Option<ParseError> {
        self.bare.error()
    }

    /// Parses from the start of `input`: returns how many bytes were consumed and the
    /// operation they completed, if any.
    ///
    /// When no operation is returned, all of `input` was consumed. Every returned operation
    /// consumes at least one byte, so a loop calling this with what is left always ends. An
    /// error is final: the connection must be closed (after the `-ERR` of
    /// [`ParseError::server_error`], if any).
    pub fn parse<'a>(&'a mut self, input: &'a [u8]) -> Result<(usize, Option<Op<'a>>), ParseError> {
        self.bare.parse_with(input, Some(&mut self.line))
    }
}

/// The client-operation parser without a line buffer (see "Where the line buffer lives" in
/// the [module documentation](self)): a few dozen bytes.
pub struct BareParser {
    state: State,
    config: ParserConfig,
    headers: bool,
    awaiting_auth: bool,
    hdr_left: u32,
    body_left: u32,
    line_len: usize,
}

impl fmt::Debug for BareParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BareParser")
            .field("state", &self.state)
            .field("config", &self.config)
            .field("headers", &self.headers)
            .field("awaiting_auth", &self.awaiting_auth)
            .field("buffered", &self.line_len)
            .finish()
    }
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Whether argument text of `len` bytes ending in `last`, with no line end yet, can no longer
/// end within the limit.
fn doomed(len: usize, last: u8, max: usize) -> bool {
    len > max + 1 || (len == max + 1 && last != b'\r')
}

/// Length of argument text of `len` bytes ending in `last` once the line ends there.
fn stripped(len: usize, last: u8) -> usize {
    if len >= 2 && last == b'\r' {
        len - 1
    } else {
        len
    }
}

/// nats-server's `parseSize`: 1 to 9 decimal digits.
fn parse_size(d: &[u8]) -> Option<u32> {
    if d.is_empty() || d.len() > 9 {
        return None;
    }
    let mut n = 0u32;
    for &b in d {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(b - b'0');
    }
    Some(n)
}

/// Splits `text` into at most 4 recorded spans; returns the total token count.
fn split(text: &[u8], sep: fn(u8) -> bool, args: &mut Args) {
    let mut start = None;
    args.n = 0;
    for (i, &b) in text.iter().enumerate() {
        if sep(b) {
            if let Some(s) = start.take() {
                push_span(args, s, i);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        push_span(args, s, text.len());
    }
}

fn push_span(args: &mut Args, s: usize, e: usize) {
    if let Some(slot) = args.spans.get_mut(args.n) {
        // Argument text is at most LINE_CAP bytes, so spans fit u16.
        *slot = (s as u16, e as u16);
    }
    args.n += 1;
}

fn pub_sep(b: u8) -> bool {
    is_blank(b)
}

fn sub_sep(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn span<'t>(text: &'t [u8], args: &Args, i: usize) -> &'t [u8] {
    let (s, e) = args.spans[i];
    text.get(usize::from(s)..usize::from(e)).unwrap_or(&[])
}

/// Checks a complete line's arguments (the reference's `processPub` and friends).
fn check_line(
    kind: OpKind,
    text: &[u8],
    config: &ParserConfig,
    headers: bool,
) -> Result<Args, ParseError> {
    let mut args = Args::default();
    let bad = ParseError::InvalidArguments(kind);
    match kind {
        OpKind::Sub => {
            split(text, sub_sep, &mut args);
            if !(2..=3).contains(&args.n) {
                return Err(bad);
            }
        }
        OpKind::Unsub => {
            split(text, sub_sep, &mut args);
            match args.n {
                1 => {}
                2 => args.max = parse_size(span(text, &args, 1)).unwrap_or(0),
                _ => return Err(bad),
            }
        }
        OpKind::Pub => {
            split(text, pub_sep, &mut args);
            if !(2..=3).contains(&args.n) {
                return Err(bad);
            }
            let total = parse_size(span(text, &args, args.n - 1)).ok_or(bad)?;
            if total > config.max_payload {
                return Err(ParseError::MaxPayload);
            }
            args.total_len = total;
        }
        OpKind::Hpub => {
            if !headers {
                return Err(ParseError::HeadersNotSupported);
            }
            split(text, pub_sep, &mut args);
            if !(3..=4).contains(&args.n) {
                return Err(bad);
            }
            let hdr = parse_size(span(text, &args, args.n - 2)).ok_or(bad)?;
            let total = parse_size(span(text, &args, args.n - 1)).ok_or(bad)?;
            if hdr > total {
                return Err(bad);
            }
            if total > config.max_payload {
                return Err(ParseError::MaxPayload);
            }
            args.header_len = Some(hdr);
            args.total_len = total;
        }
        _ => {}
    }
    Ok(args)
}

fn build<'a>(kind: OpKind, text: &'a [u8], args: &Args) -> Op<'a> {
    match kind {
        OpKind::Connect => Op::Connect(text),
        OpKind::Info => Op::Info(text),
        OpKind::Err => Op::Err(text),
        OpKind::Sub => {
            let (queue, sid) = if args.n == 3 {
                (Some(span(text, args, 1)), span(text, args, 2))
            } else {
                (None, span(text, args, 1))
            };
            Op::Sub {
                subject: span(text, args, 0),
                queue,
                sid,
            }
        }
        OpKind::Unsub => Op::Unsub {
            sid: span(text, args, 0),
            max: args.max,
        },
        OpKind::Pub | OpKind::Hpub => {
            let with_reply = args.n == if kind == OpKind::Pub { 3 } else { 4 };
            Op::Pub {
                subject: span(text, args, 0),
                reply: with_reply.then(|| span(text, args, 1)),
                header_len: args.header_len,
                total_len: args.total_len,
            }
        }
        // Lines are only built for the kinds above.
        OpKind::Ping => Op::Ping,
        OpKind::Pong => Op::Pong,
        OpKind::Ok => Op::Ok,
    }
}

impl BareParser {
    /// A parser at the start of a connection: headers not negotiated, not awaiting auth.
    pub const fn new(config: ParserConfig) -> BareParser {
        let mut config = config;
        if config.max_control_line > MAX_CONTROL_LINE {
            config.max_control_line = MAX_CONTROL_LINE;
        }
        if config.max_control_line == 0 {
            config.max_control_line = 1;
        }
        BareParser {
            state: State::Start,
            config,
            headers: false,
            awaiting_auth: false,
            hdr_left: 0,
            body_left: 0,
            line_len: 0,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> ParserConfig {
        self.config
    }

    /// Whether the client negotiated headers (CONNECT `headers: true` on a server that
    /// supports them). Until then HPUB is refused. Call it after handling the CONNECT.
    pub fn set_headers(&mut self, headers: bool) {
        self.headers = headers;
    }

    /// Whether the server is waiting for an authenticating CONNECT: then only an operation
    /// starting with `C` is accepted. Set it on accept when auth is configured; clear it after
    /// a CONNECT that authenticated.
    pub fn set_awaiting_auth(&mut self, awaiting: bool) {
        self.awaiting_auth = awaiting;
    }

    /// Whether the parser is between operations (not inside a line or a payload).
    pub fn at_boundary(&self) -> bool {
        self.state == State::Start
    }

    /// Bytes of a message still expected (payload and its `\r\n`), when inside one: what a
    /// receive path that holds a message whole must reserve.
    pub fn payload_remaining(&self) -> Option<u64> {
        match self.state {
            State::Payload => Some(u64::from(self.hdr_left) + u64::from(self.body_left) + 2),
            State::TrailerCr => Some(2),
            State::TrailerLf => Some(1),
            _ => None,
        }
    }

    /// Bytes of a partial control line held in the lent line buffer: while this is not zero,
    /// every [`BareParser::parse_with`] call must be lent that same buffer.
    pub fn buffered(&self) -> usize {
        self.line_len
    }

    /// The error the parser stopped at, if it did.
    pub fn error(&self) -> Option<ParseError> {
        match self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Parses from the start of `input`, with `line` lent for a control line split across
    /// slices: returns how many bytes were consumed and the operation they completed, if any.
    /// As [`Parser::parse`], except for what happens without a buffer.
    ///
    /// With `line` `None`, when the argument text of a control line starts in `input` and does
    /// not end there (so it would have to be gathered), the parser stops before that text and
    /// returns `Ok((n, None))` with `n < input.len()` (possibly 0): the bytes from `n` on were
    /// not consumed, and the parser is where it was before them. Feed them again, lending a
    /// buffer, or together with the rest of the line in one slice. (Text that is already
    /// too long is still [`ParseError::MaxControlLine`] at once.) That is the only case in
    /// which no operation comes back and not all of `input` was consumed.
    ///
    /// While [`BareParser::buffered`] is not zero, the same buffer must be lent on every call
    /// (it holds the start of the line); lending none then stops at once, `Ok((0, None))`.
    /// Otherwise any buffer will do, and it is not needed after the call once `buffered()` is
    /// zero again (the returned operation may borrow it until then).
    pub fn parse_with<'a>(
        &'a mut self,
        input: &'a [u8],
        line: Option<&'a mut LineBuf>,
    ) -> Result<(usize, Option<Op<'a>>), ParseError> {
        let (used, ev) = match line {
            Some(line) => {
                let (used, ev) = self.step(input, Some(&mut line.bytes))?;
                let line: &'a LineBuf = line;
                return Ok((used, self.op(input, &line.bytes, ev)));
            }
            None => self.step(input, None)?,
        };
        Ok((used, self.op(input, &[], ev)))
    }

    /// The operation of a step's event.
    fn op<'a>(&self, input: &'a [u8], line: &'a [u8], ev: Ev) -> Option<Op<'a>> {
        match ev {
            Ev::None => None,
            Ev::Ping => Some(Op::Ping),
            Ev::Pong => Some(Op::Pong),
            Ev::Ok => Some(Op::Ok),
            Ev::PayloadEnd => Some(Op::PayloadEnd),
            Ev::Chunk { header, start, end } => {
                let chunk = input.get(start..end).unwrap_or(&[]);
                Some(if header {
                    Op::Headers(chunk)
                } else {
                    Op::Payload(chunk)
                })
            }
            Ev::LineInput {
                kind,
                start,
                end,
                args,
            } => Some(build(kind, input.get(start..end).unwrap_or(&[]), &args)),
            Ev::LineBuf { kind, len, args } => {
                Some(build(kind, line.get(..len).unwrap_or(&[]), &args))
            }
        }
    }

    fn fail(&mut self, e: ParseError) -> Result<(usize, Ev), ParseError> {
        self.state = State::Failed(e);
        self.line_len = 0;
        Err(e)
    }

    /// After a complete line: check it, move on, report it.
    fn line_done(&mut self, kind: OpKind, args: Args) {
        self.state = State::Start;
        if matches!(kind, OpKind::Pub | OpKind::Hpub) {
            let hdr = args.header_len.unwrap_or(0);
            self.hdr_left = hdr;
            self.body_left = args.total_len - hdr;
            self.state = if args.total_len == 0 {
                State::TrailerCr
            } else {
                State::Payload
            };
        }
    }

    fn step(
        &mut self,
        input: &[u8],
        mut line: Option<&mut [u8; LINE_CAP]>,
    ) -> Result<(usize, Ev), ParseError> {
        let mut i = 0;
        // Where this call's part of the current argument text starts, when the line began in
        // this call (then nothing of it is buffered).
        let mut local: Option<usize> = None;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Failed(e) => return Err(e),
                State::Start => {
                    if self.awaiting_auth && b != b'C' && b != b'c' {
                        return self.fail(ParseError::AuthorizationViolation);
                    }
                    self.state = match b.to_ascii_uppercase() {
                        b'C' => State::Name {
                            kind: OpKind::Connect,
                            pos: 1,
                        },
                        b'I' => State::Name {
                            kind: OpKind::Info,
                            pos: 1,
                        },
                        b'H' => State::Name {
                            kind: OpKind::Hpub,
                            pos: 1,
                        },
                        b'S' => State::Name {
                            kind: OpKind::Sub,
                            pos: 1,
                        },
                        b'U' => State::Name {
                            kind: OpKind::Unsub,
                            pos: 1,
                        },
                        b'+' => State::Name {
                            kind: OpKind::Ok,
                            pos: 1,
                        },
                        b'-' => State::Name {
                            kind: OpKind::Err,
                            pos: 1,
                        },
                        b'P' => State::P,
                        _ => return self.fail(ParseError::UnknownOperation),
                    };
                    i += 1;
                }
                State::P => {
                    let kind = match b.to_ascii_uppercase() {
                        b'U' => OpKind::Pub,
                        b'I' => OpKind::Ping,
                        b'O' => OpKind::Pong,
                        _ => return self.fail(ParseError::UnknownOperation),
                    };
                    self.state = self.after_name_char(kind, 2);
                    i += 1;
                }
                State::Name { kind, pos } => {
                    let name = kind.name().as_bytes();
                    if name.get(usize::from(pos)) != Some(&b.to_ascii_uppercase()) {
                        return self.fail(ParseError::UnknownOperation);
                    }
                    self.state = self.after_name_char(kind, pos + 1);
                    i += 1;
                }
                State::Sep(kind) => {
                    if !is_blank(b) {
                        return self.fail(ParseError::UnknownOperation);
                    }
                    self.state = State::Blanks(kind);
                    i += 1;
                }
                State::Blanks(kind) => {
                    if is_blank(b) {
                        i += 1;
                    } else {
                        // The first argument byte, whatever it is.
                        self.state = State::Arg(kind);
                        self.line_len = 0;
                        local = Some(i);
                    }
                }
                State::Arg(kind) => {
                    let max = self.config.max_control_line;
                    // Text so far, and where to look for the line end (never at the first
                    // argument byte).
                    let prior = match local {
                        Some(s) => i - s,
                        None => self.line_len,
                    };
                    let from = if prior == 0 { i + 1 } else { i };
                    let nl = input
                        .get(from..)
                        .and_then(|r| r.iter().position(|&c| c == b'\n'))
                        .map(|k| from + k);
                    match nl {
                        Some(n) => {
                            let len = prior + (n - i);
                            if local.is_none() && line.is_none() {
                                // Buffered text, and its buffer not lent: stop here.
                                return Ok((i, Ev::None));
                            }
                            let last = if n > i {
                                input[n - 1]
                            } else {
                                // The line end opens this slice: the last byte is buffered.
                                line.as_deref()
                                    .map_or(0, |l| l[self.line_len.saturating_sub(1)])
                            };
                            let text_len = stripped(len, last);
                            if text_len > max {
                                return self.fail(ParseError::MaxControlLine);
                            }
                            let ev = match local {
                                Some(s) => {
                                    let end = s + text_len;
                                    let args = match check_line(
                                        kind,
                                        &input[s..end],
                                        &self.config,
                                        self.headers,
                                    ) {
                                        Ok(a) => a,
                                        Err(e) => return self.fail(e),
                                    };
                                    self.line_done(kind, args);
                                    Ev::LineInput {
                                        kind,
                                        start: s,
                                        end,
                                        args,
                                    }
                                }
                                None => {
                                    let have = self.line_len;
                                    let add = &input[i..n];
                                    let Some(line) = line else {
                                        // Checked above: a buffered line has its buffer.
                                        return Ok((i, Ev::None));
                                    };
                                    // Fits: len <= max + 1 <= LINE_CAP.
                                    let Some(dst) = line.get_mut(have..have + add.len()) else {
                                        return self.fail(ParseError::MaxControlLine);
                                    };
                                    dst.copy_from_slice(add);
                                    self.line_len = 0;
                                    let text = &line[..text_len];
                                    let args =
                                        match check_line(kind, text, &self.config, self.headers) {
                                            Ok(a) => a,
                                            Err(e) => return self.fail(e),
                                        };
                                    self.line_done(kind, args);
                                    Ev::LineBuf {
                                        kind,
                                        len: text_len,
                                        args,
                                    }
                                }
                            };
                            return Ok((n + 1, ev));
                        }
                        None => {
                            let len = prior + (input.len() - i);
                            let last = input[input.len() - 1];
                            if doomed(len, last, max) {
                                return self.fail(ParseError::MaxControlLine);
                            }
                            let start = local.unwrap_or(i);
                            let Some(line) = line.as_deref_mut() else {
                                if local.is_some() {
                                    // Not gathered without a buffer: back to before the
                                    // argument text, which stays unconsumed.
                                    self.state = State::Blanks(kind);
                                }
                                return Ok((start, Ev::None));
                            };
                            let add = &input[start..];
                            let have = if local.is_some() { 0 } else { self.line_len };
                            let Some(dst) = line.get_mut(have..have + add.len()) else {
                                return self.fail(ParseError::MaxControlLine);
                            };
                            dst.copy_from_slice(add);
                            self.line_len = have + add.len();
                            return Ok((input.len(), Ev::None));
                        }
                    }
                }
                State::Skip(kind) => match input[i..].iter().position(|&c| c == b'\n') {
                    Some(k) => {
                        self.state = State::Start;
                        let ev = match kind {
                            OpKind::Ping => Ev::Ping,
                            OpKind::Pong => Ev::Pong,
                            _ => Ev::Ok,
                        };
                        return Ok((i + k + 1, ev));
                    }
                    None => return Ok((input.len(), Ev::None)),
                },
                State::Payload => {
                    let avail = input.len() - i;
                    let (header, left) = if self.hdr_left > 0 {
                        (true, &mut self.hdr_left)
                    } else {
                        (false, &mut self.body_left)
                    };
                    let n = avail.min(*left as usize);
                    *left -= n as u32;
                    if self.hdr_left == 0 && self.body_left == 0 {
                        self.state = State::TrailerCr;
                    }
                    return Ok((
                        i + n,
                        Ev::Chunk {
                            header,
                            start: i,
                            end: i + n,
                        },
                    ));
                }
                State::TrailerCr => {
                    if b != b'\r' {
                        return self.fail(ParseError::UnknownOperation);
                    }
                    self.state = State::TrailerLf;
                    i += 1;
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return self.fail(ParseError::UnknownOperation);
                    }
                    self.state = State::Start;
                    return Ok((i + 1, Ev::PayloadEnd));
                }
            }
        }
        if let State::Failed(e) = self.state {
            return Err(e);
        }
        Ok((input.len(), Ev::None))
    }

    /// The state after `pos` bytes of `kind`'s name matched.
    fn after_name_char(&self, kind: OpKind, pos: u8) -> State {
        if usize::from(pos) < kind.name().len() {
            return State::Name { kind, pos };
        }
        match kind {
            OpKind::Connect | OpKind::Info => State::Blanks(kind),
            OpKind::Ping | OpKind::Pong | OpKind::Ok => State::Skip(kind),
            OpKind::Pub | OpKind::Hpub | OpKind::Sub | OpKind::Unsub | OpKind::Err => {
                State::Sep(kind)
            }
        }
    }
}

/// A running fingerprint of an operation stream in which payload chunks are merged, so that
/// streams split differently compare equal (FNV-1a, 64 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    hash: u64,
    ops: u64,
    last: u8,
}

impl Fingerprint {
    fn new() -> Self {
        Fingerprint {
            hash: 0xcbf2_9ce4_8422_2325,
            ops: 0,
            last: 0,
        }
    }

    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.hash = (self.hash ^ u64::from(x)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn field(&mut self, b: &[u8]) {
        self.bytes(&(b.len() as u64).to_le_bytes());
        self.bytes(b);
    }

    fn op(&mut self, op: &Op<'_>) {
        let tag = match op {
            Op::Connect(_) => 1,
            Op::Info(_) => 2,
            Op::Ping => 3,
            Op::Pong => 4,
            Op::Ok => 5,
            Op::Err(_) => 6,
            Op::Sub { .. } => 7,
            Op::Unsub { .. } => 8,
            Op::Pub { .. } => 9,
            Op::Headers(_) => 10,
            Op::Payload(_) => 11,
            Op::PayloadEnd => 12,
        };
        let chunk = matches!(op, Op::Headers(_) | Op::Payload(_));
        if !(chunk && self.last == tag) {
            self.ops += 1;
            self.bytes(&[tag]);
        }
        self.last = tag;
        match *op {
            Op::Connect(t) | Op::Info(t) | Op::Err(t) => self.field(t),
            Op::Sub {
                subject,
                queue,
                sid,
            } => {
                self.field(subject);
                self.field(queue.unwrap_or(b"\0none"));
                self.field(sid);
            }
            Op::Unsub { sid, max } => {
                self.field(sid);
                self.bytes(&max.to_le_bytes());
            }
            Op::Pub {
                subject,
                reply,
                header_len,
                total_len,
            } => {
                self.field(subject);
                self.field(reply.unwrap_or(b"\0none"));
                self.bytes(&header_len.map_or(u64::MAX, u64::from).to_le_bytes());
                self.bytes(&total_len.to_le_bytes());
            }
            Op::Headers(c) | Op::Payload(c) => self.bytes(c),
            Op::Ping | Op::Pong | Op::Ok | Op::PayloadEnd => {}
        }
    }
}

/// How [`run_segments`] gives its parser a line buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lend {
    /// Always (a [`Parser`] with its own).
    Always,
    /// A [`BareParser`] lent one only after it stopped for lack of one, and only until its
    /// line is gathered, as the broker's shared pool does.
    OnDemand,
}

/// Runs a parser over `segments` the way a broker would (headers negotiated after CONNECT
/// when `headers`, auth cleared after CONNECT): the fingerprint of the operations and the
/// error, if any, and how often the parser stopped for a line buffer.
fn run_segments<'s>(
    config: ParserConfig,
    headers: bool,
    auth: bool,
    lend: Lend,
    segments: impl Iterator<Item = &'s [u8]>,
) -> (Fingerprint, Option<ParseError>, u64) {
    let mut parser = BareParser::new(config);
    parser.set_awaiting_auth(auth);
    let mut buf = LineBuf::new();
    let mut lent = lend == Lend::Always;
    let mut stops = 0;
    let mut fp = Fingerprint::new();
    for segment in segments {
        let mut rest = segment;
        while !rest.is_empty() {
            let line = lent.then_some(&mut buf);
            let connect = match parser.parse_with(rest, line) {
                Ok((used, None)) if used < rest.len() => {
                    // Stopped before a line it would have to gather: lend a buffer and go
                    // on from there (never twice in a row, never with a buffer lent).
                    assert!(!lent, "stopped with a buffer lent");
                    assert_eq!(parser.buffered(), 0, "stopped holding text");
                    stops += 1;
                    lent = true;
                    rest = &rest[used..];
                    continue;
                }
                Ok((used, op)) => {
                    // Progress: an operation always consumes input.
                    assert!(used > 0 && used <= rest.len(), "no progress");
                    if op.is_none() {
                        assert_eq!(used, rest.len(), "None before the end");
                    }
                    rest = &rest[used..];
                    if let Some(op) = op {
                        fp.op(&op);
                        if let Op::Headers(c) | Op::Payload(c) = op {
                            assert!(!c.is_empty(), "empty chunk");
                        }
                    }
                    matches!(op, Some(Op::Connect(_)))
                }
                Err(e) => return (fp, Some(e), stops),
            };
            if lend == Lend::OnDemand && parser.buffered() == 0 {
                lent = false;
            }
            if connect {
                parser.set_headers(headers);
                parser.set_awaiting_auth(false);
            }
        }
    }
    (fp, parser.error(), stops)
}

/// Fuzz entry point for the parser.
///
/// The first byte picks the configuration (headers, auth, max_payload, control-line limit),
/// the next two seed the split points; the rest is the client's byte stream. It is parsed
/// whole, one byte at a time, and in data-driven segments, and the three runs must produce the
/// same operations (payload chunks merged) and the same error; the byte-at-a-time and
/// segmented runs are made twice, once with a line buffer always there ([`Parser`]) and once
/// with one lent only after the parser stopped for it ([`BareParser`]). Panics (by assertion)
/// only on a disagreement or a broken progress guarantee: a bug.
pub fn fuzz_parse(data: &[u8]) {
    let (head, stream) = data.split_at(data.len().min(3));
    let flags = head.first().copied().unwrap_or(0);
    let config = ParserConfig {
        max_payload: [DEFAULT_MAX_PAYLOAD, 0, 5, 64][usize::from(flags >> 2 & 3)],
        max_control_line: [MAX_CONTROL_LINE, 1, 8, 40][usize::from(flags >> 4 & 3)],
    };
    let headers = flags & 1 != 0;
    let auth = flags & 2 != 0;
    let seed = u64::from(head.get(1).copied().unwrap_or(0))
        | u64::from(head.get(2).copied().unwrap_or(0)) << 8
        | 1;

    let run = |lend, segments: &mut dyn Iterator<Item = &[u8]>| {
        let (fp, err, _) = run_segments(config, headers, auth, lend, segments);
        (fp, err)
    };
    let whole = run(Lend::Always, &mut core::iter::once(stream));
    for lend in [Lend::Always, Lend::OnDemand] {
        let bytes = run(lend, &mut stream.chunks(1));
        assert_eq!(whole, bytes, "whole vs byte-at-a-time");
        let mut seed = seed;
        let mut rest = stream;
        let mut segments = core::iter::from_fn(|| {
            if rest.is_empty() {
                return None;
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = 1 + (seed % 64) as usize;
            let (a, b) = rest.split_at(n.min(rest.len()));
            rest = b;
            Some(a)
        });
        let split = run(lend, &mut segments);
        assert_eq!(whole, split, "whole vs segments");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::{String, ToString};
    use std::vec;
    use std::vec::Vec;

    /// An owned operation, with payload chunks merged.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum O {
        Connect(String),
        Info(String),
        Ping,
        Pong,
        Ok,
        Err(String),
        Sub(String, Option<String>, String),
        Unsub(String, u32),
        Pub(String, Option<String>, Option<u32>, u32),
        Hdr(Vec<u8>),
        Body(Vec<u8>),
        End,
    }

    fn s(b: &[u8]) -> String {
        String::from_utf8_lossy(b).to_string()
    }

    fn own(op: Op<'_>) -> O {
        match op {
            Op::Connect(t) => O::Connect(s(t)),
            Op::Info(t) => O::Info(s(t)),
            Op::Ping => O::Ping,
            Op::Pong => O::Pong,
            Op::Ok => O::Ok,
            Op::Err(t) => O::Err(s(t)),
            Op::Sub {
                subject,
                queue,
                sid,
            } => O::Sub(s(subject), queue.map(s), s(sid)),
            Op::Unsub { sid, max } => O::Unsub(s(sid), max),
            Op::Pub {
                subject,
                reply,
                header_len,
                total_len,
            } => O::Pub(s(subject), reply.map(s), header_len, total_len),
            Op::Headers(c) => O::Hdr(c.to_vec()),
            Op::Payload(c) => O::Body(c.to_vec()),
            Op::PayloadEnd => O::End,
        }
    }

    fn run_with(
        config: ParserConfig,
        headers: bool,
        auth: bool,
        segments: &[&[u8]],
    ) -> (Vec<O>, Option<ParseError>) {
        let mut p = Parser::new(config);
        p.set_awaiting_auth(auth);
        let mut ops: Vec<O> = Vec::new();
        for seg in segments {
            let mut rest: &[u8] = seg;
            while !rest.is_empty() {
                match p.parse(rest) {
                    Ok((n, op)) => {
                        rest = &rest[n..];
                        let Some(op) = op else { continue };
                        let connect = matches!(op, Op::Connect(_));
                        match (ops.last_mut(), own(op)) {
                            (Some(O::Hdr(a)), O::Hdr(b)) | (Some(O::Body(a)), O::Body(b)) => {
                                a.extend_from_slice(&b)
                            }
                            (_, o) => ops.push(o),
                        }
                        if connect {
                            p.set_headers(headers);
                            p.set_awaiting_auth(false);
                        }
                    }
                    Err(e) => return (ops, Some(e)),
                }
            }
        }
        (ops, p.error())
    }

    /// Parses `input` whole, byte by byte and split at every point: all must agree.
    fn run_cfg(config: ParserConfig, headers: bool, input: &[u8]) -> (Vec<O>, Option<ParseError>) {
        let whole = run_with(config, headers, false, &[input]);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            run_with(config, headers, false, &bytes),
            whole,
            "byte at a time"
        );
        for cut in 1..input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(
                run_with(config, headers, false, &[a, b]),
                whole,
                "split at {cut}"
            );
        }
        // A bare parser lent a buffer only when it stops for one sees the same.
        let fp = |lend, segs: &[&[u8]]| {
            let (fp, e, stops) = run_segments(config, headers, false, lend, segs.iter().copied());
            ((fp, e), stops)
        };
        let (all, _) = fp(Lend::Always, &[input]);
        for cut in 1..input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(
                fp(Lend::OnDemand, &[a, b]).0,
                all,
                "lent on demand, split at {cut}"
            );
        }
        assert_eq!(
            fp(Lend::OnDemand, &bytes).0,
            all,
            "lent on demand, byte at a time"
        );
        whole
    }

    /// Without a buffer the bare parser stops before a line it would have to gather, consumes
    /// none of it, and takes it again whole or with a buffer.
    #[test]
    fn bare_parser_stops_before_a_split_line() {
        let mut p = BareParser::new(ParserConfig::DEFAULT);
        // The name and blanks are taken; the argument text is not.
        assert_eq!(p.parse_with(b"PUB  foo", None), Ok((5, None)));
        assert_eq!(p.buffered(), 0);
        assert!(!p.at_boundary());
        // Fed again with the rest of the line in the same slice: no buffer needed.
        let (n, op) = p.parse_with(b"foo 2\r\nhi\r\n", None).unwrap();
        assert_eq!(n, 7);
        assert_eq!(own(op.unwrap()), pub_("foo", None, 2));
        assert_eq!(
            p.parse_with(b"hi\r\n", None).unwrap(),
            (2, Some(Op::Payload(b"hi")))
        );
        assert_eq!(
            p.parse_with(b"\r\n", None).unwrap(),
            (2, Some(Op::PayloadEnd))
        );
        // At the start of a slice: stops at 0.
        assert_eq!(p.parse_with(b"SUB ", None), Ok((4, None)));
        assert_eq!(p.parse_with(b"a 1", None), Ok((0, None)));
        // With a buffer it gathers; while it holds text it must get the same buffer, and
        // without one it stops at once.
        let mut buf = LineBuf::new();
        assert_eq!(p.parse_with(b"a 1", Some(&mut buf)), Ok((3, None)));
        assert_eq!(p.buffered(), 3);
        assert_eq!(p.parse_with(b"0\r\n", None), Ok((0, None)));
        let (n, op) = p.parse_with(b"0\r\n", Some(&mut buf)).unwrap();
        assert_eq!(n, 3);
        assert_eq!(own(op.unwrap()), O::Sub("a".into(), None, "10".into()));
        assert_eq!(p.buffered(), 0);
        // PING and a line ending in this slice need no buffer.
        assert_eq!(p.parse_with(b"PI", None), Ok((2, None)));
        assert_eq!(p.parse_with(b"NG\r\n", None), Ok((4, Some(Op::Ping))));
        // Text already past the limit is an error at once, buffer or not.
        let mut p = BareParser::new(ParserConfig {
            max_control_line: 4,
            ..ParserConfig::DEFAULT
        });
        assert_eq!(
            p.parse_with(b"SUB abcdef", None),
            Err(ParseError::MaxControlLine)
        );
    }

    /// The on-demand parser stops once per line whose argument text is split (SUB and PUB
    /// here; UNSUB splits before its text, which needs no buffer).
    #[test]
    fn bare_parser_stops_once_per_split_line() {
        let segs: [&[u8]; 4] = [
            b"CONNECT {}\r\nSUB a",
            b" 1\r\nPUB a 2\r",
            b"\nhi\r\nPING\r\nUNSUB",
            b" 1\r\n",
        ];
        let (_, e, stops) = run_segments(
            ParserConfig::DEFAULT,
            false,
            false,
            Lend::OnDemand,
            segs.into_iter(),
        );
        assert_eq!((e, stops), (None, 2));
        let (_, _, stops) = run_segments(
            ParserConfig::DEFAULT,
            false,
            false,
            Lend::Always,
            segs.into_iter(),
        );
        assert_eq!(stops, 0);
    }

    fn run(input: &[u8]) -> (Vec<O>, Option<ParseError>) {
        run_cfg(ParserConfig::DEFAULT, true, input)
    }

    fn ok(input: &[u8]) -> Vec<O> {
        let (ops, err) = run(input);
        assert_eq!(err, None, "{:?}", s(input));
        ops
    }

    fn err(input: &[u8]) -> ParseError {
        run(input).1.expect("an error")
    }

    fn pub_(subj: &str, reply: Option<&str>, size: u32) -> O {
        O::Pub(subj.into(), reply.map(Into::into), None, size)
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(
            ok(b"ping\r\nPiNg\r\nPONG\r\npong\r\n"),
            [O::Ping, O::Ping, O::Pong, O::Pong]
        );
        assert_eq!(ok(b"connect {}\r\n"), [O::Connect("{}".into())]);
        assert_eq!(
            ok(b"pub foo 1\r\nx\r\nsUb a 1\r\nunSUB 1\r\n+ok\r\ninfo {}\r\n"),
            [
                pub_("foo", None, 1),
                O::Body(b"x".to_vec()),
                O::End,
                O::Sub("a".into(), None, "1".into()),
                O::Unsub("1".into(), 0),
                O::Ok,
                O::Info("{}".into()),
            ]
        );
        assert_eq!(
            ok(b"CONNECT {}\r\nhpub f 2 3\r\n\r\nx\r\n"),
            [
                O::Connect("{}".into()),
                O::Pub("f".into(), None, Some(2), 3),
                O::Hdr(b"\r\n".to_vec()),
                O::Body(b"x".to_vec()),
                O::End,
            ]
        );
        assert_eq!(run(b"-err 'x'\r\n").0, [O::Err("'x'".into())]);
    }

    #[test]
    fn line_end_is_lf_with_optional_cr() {
        assert_eq!(
            ok(b"PING\nSUB foo 1\nPUB foo 2\nhi\r\nUNSUB 1\n"),
            [
                O::Ping,
                O::Sub("foo".into(), None, "1".into()),
                pub_("foo", None, 2),
                O::Body(b"hi".to_vec()),
                O::End,
                O::Unsub("1".into(), 0),
            ]
        );
        // A \r elsewhere is argument text for PUB, a separator for SUB.
        assert_eq!(ok(b"PUB fo\ro 0\r\n\r\n")[0], pub_("fo\ro", None, 0));
        assert_eq!(
            ok(b"SUB foo\rq 1\r\n"),
            [O::Sub("foo".into(), Some("q".into()), "1".into())]
        );
    }

    #[test]
    fn blanks_between_and_around_arguments() {
        // What real clients send.
        assert_eq!(
            ok(b"CONNECT {}\r\nHPUB foo.bar  20 25\r\nNATS/1.0\r\nA: 123\r\n\r\nhello\r\n")[1..],
            [
                O::Pub("foo.bar".into(), None, Some(20), 25),
                O::Hdr(b"NATS/1.0\r\nA: 123\r\n\r\n".to_vec()),
                O::Body(b"hello".to_vec()),
                O::End,
            ]
        );
        assert_eq!(
            ok(b"SUB c.*  1\r\n"),
            [O::Sub("c.*".into(), None, "1".into())]
        );
        assert_eq!(ok(b"UNSUB 1 \r\n"), [O::Unsub("1".into(), 0)]);
        assert_eq!(
            ok(b"PUB\t \tfoo \t bar\t\t5 \t\r\nhello\r\n")[0],
            pub_("foo", Some("bar"), 5)
        );
        assert_eq!(
            ok(b"SUB   foo   q   9   \r\n"),
            [O::Sub("foo".into(), Some("q".into()), "9".into())]
        );
        // CONNECT and INFO need no blank; the others do.
        assert_eq!(ok(b"CONNECT{}\r\n"), [O::Connect("{}".into())]);
        assert_eq!(ok(b"INFO{}\r\n"), [O::Info("{}".into())]);
        for bad in [
            &b"PUBfoo 1\r\n"[..],
            b"SUBfoo 1\r\n",
            b"UNSUB\r\n",
            b"-ERR\r\n",
            b"HPUBx",
        ] {
            assert_eq!(err(bad), ParseError::UnknownOperation, "{:?}", s(bad));
        }
    }

    #[test]
    fn first_argument_byte_is_literal() {
        // As in the reference: after the blanks, the first byte starts the arguments even if
        // it is a line end.
        assert_eq!(ok(b"CONNECT \r\n"), [O::Connect("\r".into())]);
        assert_eq!(ok(b"CONNECT\n{}\n"), [O::Connect("\n{}".into())]);
        assert_eq!(ok(b"PUB \nfoo 1\r\nx\r\n")[0], pub_("\nfoo", None, 1));
        assert_eq!(
            err(b"UNSUB \r\n"),
            ParseError::InvalidArguments(OpKind::Unsub)
        );
    }

    #[test]
    fn text_after_ping_pong_ok_is_ignored() {
        assert_eq!(
            ok(b"PING foo bar\r\nPONGX\r\n+OK whatever\r\nPINGPONG\n"),
            [O::Ping, O::Pong, O::Ok, O::Ping]
        );
        // However long: no buffering, no limit.
        let mut long = b"PING ".to_vec();
        long.extend(std::iter::repeat_n(b'x', 10_000));
        long.extend_from_slice(b"\r\n");
        assert_eq!(
            run_with(ParserConfig::DEFAULT, true, false, &[&long]).0,
            [O::Ping]
        );
    }

    #[test]
    fn control_line_limit() {
        let line = |n: usize, end: &[u8]| {
            // `PUB <subject> 0` with n bytes of argument text.
            let mut v = b"PUB ".to_vec();
            v.extend(std::iter::repeat_n(b's', n - 2));
            v.extend_from_slice(b" 0");
            v.extend_from_slice(end);
            v.extend_from_slice(b"\r\n");
            v
        };
        let c = ParserConfig::DEFAULT;
        for end in [&b"\r\n"[..], b"\n"] {
            let (ops, e) = run_with(c, true, false, &[&line(4096, end)]);
            assert_eq!((ops.len(), e), (2, None));
            let (ops, e) = run_with(c, true, false, &[&line(4097, end)]);
            assert_eq!((ops.len(), e), (0, Some(ParseError::MaxControlLine)));
        }
        // Byte-by-byte and split at every point around the limit agree.
        let (ops, e) = run_cfg(
            ParserConfig {
                max_control_line: 10,
                ..c
            },
            true,
            &line(10, b"\r\n"),
        );
        assert_eq!((ops.len(), e), (2, None));
        let (_, e) = run_cfg(
            ParserConfig {
                max_control_line: 10,
                ..c
            },
            true,
            &line(11, b"\r\n"),
        );
        assert_eq!(e, Some(ParseError::MaxControlLine));
        // A \r just past the limit could still be the line end's; anything else cannot.
        let (_, e) = run_cfg(
            ParserConfig {
                max_control_line: 2,
                ..c
            },
            true,
            b"SUB a 1\r",
        );
        assert_eq!(e, Some(ParseError::MaxControlLine));
        let (_, e) = run_cfg(
            ParserConfig {
                max_control_line: 3,
                ..c
            },
            true,
            b"SUB a 1\r",
        );
        assert_eq!(e, None);
        let (_, e) = run_cfg(
            ParserConfig {
                max_control_line: 3,
                ..c
            },
            true,
            b"SUB a 1\rx",
        );
        assert_eq!(e, Some(ParseError::MaxControlLine));
        let (ops, e) = run_cfg(
            ParserConfig {
                max_control_line: 3,
                ..c
            },
            true,
            b"SUB a 1\r\n",
        );
        assert_eq!((ops.len(), e), (1, None));
        // Found without a line end (no unbounded buffering).
        let mut long = b"SUB ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 5000));
        assert_eq!(err(&long[..4200]), ParseError::MaxControlLine);
        // CONNECT counts too.
        let mut connect = b"CONNECT {\"name\":\"".to_vec();
        connect.extend(std::iter::repeat_n(b'n', 4096));
        connect.extend_from_slice(b"\"}\r\n");
        assert_eq!(err(&connect), ParseError::MaxControlLine);
    }

    #[test]
    fn payload_needs_exact_size_and_crlf() {
        assert_eq!(
            ok(b"PUB foo 0\r\n\r\nPUB foo bar 2\r\nhi\r\n"),
            [
                pub_("foo", None, 0),
                O::End,
                pub_("foo", Some("bar"), 2),
                O::Body(b"hi".to_vec()),
                O::End,
            ]
        );
        // Payload bytes are opaque, line ends included.
        assert_eq!(
            ok(b"PUB foo 6\r\nPING\r\n\r\n")[1],
            O::Body(b"PING\r\n".to_vec())
        );
        for bad in [
            &b"PUB foo 5\r\nhelloX\r\n"[..],
            b"PUB foo 5\r\nhello\n",
            b"PUB foo 5\r\nhell\r\n\r\n",
            b"PUB foo 5\r\nhello\r\r",
            b"PUB foo 0\r\nPING\r\n",
        ] {
            let (ops, e) = run(bad);
            assert_eq!(e, Some(ParseError::UnknownOperation), "{:?}", s(bad));
            assert!(!ops.contains(&O::End), "no message completes");
        }
    }

    #[test]
    fn max_payload_checked_on_the_line() {
        let (ops, e) = run(b"PUB foo 1048577\r\n");
        assert_eq!((ops, e), (vec![], Some(ParseError::MaxPayload)));
        assert_eq!(
            run(b"CONNECT {}\r\nHPUB foo 1 1048577\r\n").1,
            Some(ParseError::MaxPayload)
        );
        assert_eq!(ok(b"PUB foo 1048576\r\n"), [pub_("foo", None, 1 << 20)]);
        let small = ParserConfig {
            max_payload: 4,
            ..ParserConfig::DEFAULT
        };
        assert_eq!(
            run_cfg(small, true, b"PUB a 5\r\nhello\r\n").1,
            Some(ParseError::MaxPayload)
        );
        assert_eq!(
            ParseError::MaxPayload.server_error(),
            Some(ServerError::MaxPayloadViolation)
        );
    }

    #[test]
    fn malformed_arguments_close_silently() {
        let cases: &[(&[u8], OpKind)] = &[
            (b"PUB foo\r\n", OpKind::Pub),
            (b"PUB a b c d\r\n", OpKind::Pub),
            (b"PUB foo abc\r\n", OpKind::Pub),
            (b"PUB foo -1\r\n", OpKind::Pub),
            (b"PUB foo +1\r\n", OpKind::Pub),
            (b"PUB foo 1234567890\r\n", OpKind::Pub),
            (b"PUB foo 5x\r\n", OpKind::Pub),
            (b"SUB foo\r\n", OpKind::Sub),
            (b"SUB a b c d\r\n", OpKind::Sub),
            (b"UNSUB 1 2 3\r\n", OpKind::Unsub),
        ];
        for &(input, kind) in cases {
            let e = err(input);
            assert_eq!(e, ParseError::InvalidArguments(kind), "{:?}", s(input));
            assert_eq!(e.server_error(), None);
        }
        let hcases: &[&[u8]] = &[
            b"CONNECT {}\r\nHPUB foo 10 5\r\n",
            b"CONNECT {}\r\nHPUB foo 5\r\n",
            b"CONNECT {}\r\nHPUB a b c d e\r\n",
            b"CONNECT {}\r\nHPUB foo x 5\r\n",
        ];
        for &input in hcases {
            assert_eq!(err(input), ParseError::InvalidArguments(OpKind::Hpub));
        }
        // Nine digits is the most parseSize takes; leading zeros are fine.
        assert_eq!(ok(b"PUB foo 000000002\r\nhi\r\n")[0], pub_("foo", None, 2));
    }

    #[test]
    fn unsub_max() {
        assert_eq!(ok(b"UNSUB 1 5\r\n"), [O::Unsub("1".into(), 5)]);
        assert_eq!(ok(b"UNSUB 1 0\r\n"), [O::Unsub("1".into(), 0)]);
        assert_eq!(ok(b"UNSUB 1 x\r\n"), [O::Unsub("1".into(), 0)]);
        assert_eq!(
            ok(b"UNSUB abc 999999999\r\n"),
            [O::Unsub("abc".into(), 999_999_999)]
        );
    }

    #[test]
    fn client_err_ok_info_msg() {
        assert_eq!(
            ok(b"-ERR 'Stale Connection'\r\n"),
            [O::Err("'Stale Connection'".into())]
        );
        assert_eq!(
            ok(b"+OK\r\nINFO {\"a\":1}\r\n"),
            [O::Ok, O::Info("{\"a\":1}".into())]
        );
        for bad in [
            &b"MSG foo 1 0\r\n\r\n"[..],
            b"HMSG foo 1 0 0\r\n",
            b"msg",
            b"RS+ x\r\n",
        ] {
            assert_eq!(err(bad), ParseError::UnknownOperation, "{:?}", s(bad));
        }
        assert_eq!(
            ParseError::UnknownOperation.server_error().unwrap().text(),
            Some("Unknown Protocol Operation")
        );
    }

    #[test]
    fn unknown_and_blank_lines() {
        for bad in [
            &b"\r\n"[..],
            b"\n",
            b" PING\r\n",
            b"PINX\r\n",
            b"XYZ",
            b"PU B",
            b"+O K",
        ] {
            assert_eq!(err(bad), ParseError::UnknownOperation, "{:?}", s(bad));
        }
        let (ops, e) = run(b"PING\r\n\r\nPING\r\n");
        assert_eq!(
            (ops, e),
            (vec![O::Ping], Some(ParseError::UnknownOperation))
        );
    }

    #[test]
    fn hpub_needs_negotiated_headers() {
        let (ops, e) = run_cfg(
            ParserConfig::DEFAULT,
            false,
            b"CONNECT {}\r\nHPUB foo 1 1\r\n",
        );
        assert_eq!(ops, [O::Connect("{}".into())]);
        assert_eq!(e, Some(ParseError::HeadersNotSupported));
        // Before CONNECT nothing is negotiated; checked before the arguments.
        assert_eq!(err(b"HPUB foo\r\n"), ParseError::HeadersNotSupported);
        assert_eq!(
            ok(b"CONNECT {}\r\nHPUB foo 0 5\r\nhello\r\n")[1..],
            [
                O::Pub("foo".into(), None, Some(0), 5),
                O::Body(b"hello".to_vec()),
                O::End,
            ]
        );
        assert_eq!(
            ok(b"CONNECT {}\r\nHPUB foo r 3 3\r\nabc\r\n")[1..],
            [
                O::Pub("foo".into(), Some("r".into()), Some(3), 3),
                O::Hdr(b"abc".to_vec()),
                O::End,
            ]
        );
    }

    #[test]
    fn auth_requires_connect_first() {
        let c = ParserConfig::DEFAULT;
        let (ops, e) = run_with(c, true, true, &[b"PING\r\n"]);
        assert_eq!((ops, e), (vec![], Some(ParseError::AuthorizationViolation)));
        let (ops, e) = run_with(c, true, true, &[b"CONNECT {}\r\nPING\r\n"]);
        assert_eq!((ops, e), (vec![O::Connect("{}".into()), O::Ping], None));
        // A C that is not CONNECT is an unknown operation.
        let (_, e) = run_with(c, true, true, &[b"CX"]);
        assert_eq!(e, Some(ParseError::UnknownOperation));
    }

    #[test]
    fn stays_failed() {
        let mut p = Parser::new(ParserConfig::DEFAULT);
        assert_eq!(
            p.parse(b"X").map(|(n, _)| n),
            Err(ParseError::UnknownOperation)
        );
        assert_eq!(
            p.parse(b"PING\r\n").map(|(n, _)| n),
            Err(ParseError::UnknownOperation)
        );
        assert_eq!(
            p.parse(b"").map(|(n, _)| n),
            Err(ParseError::UnknownOperation)
        );
        assert_eq!(p.error(), Some(ParseError::UnknownOperation));
    }

    #[test]
    fn introspection() {
        let mut p = Parser::new(ParserConfig::DEFAULT);
        assert!(p.at_boundary());
        assert_eq!(p.parse(b"PUB foo 10\r").unwrap(), (11, None));
        assert_eq!(p.buffered(), 7);
        assert!(matches!(p.parse(b"\n").unwrap(), (1, Some(Op::Pub { .. }))));
        assert_eq!(p.payload_remaining(), Some(12));
        assert_eq!(p.parse(b"0123").unwrap(), (4, Some(Op::Payload(b"0123"))));
        assert_eq!(p.payload_remaining(), Some(8));
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn zero_copy_spans() {
        // A line wholly in the slice is borrowed from it; a chunk always is.
        let input = b"PUB foo 3\r\nabc\r\n";
        let mut p = Parser::new(ParserConfig::DEFAULT);
        let (n, op) = p.parse(input).unwrap();
        let Some(Op::Pub { subject, .. }) = op else {
            panic!()
        };
        assert_eq!(subject.as_ptr(), input[4..].as_ptr());
        let (_, op) = p.parse(&input[n..]).unwrap();
        let Some(Op::Payload(c)) = op else { panic!() };
        assert_eq!(c.as_ptr(), input[n..].as_ptr());
    }

    #[test]
    fn fuzz_entry_smoke() {
        fuzz_parse(b"");
        fuzz_parse(b"\x01\x02\x03CONNECT {}\r\nHPUB a 1 2\r\nxy\r\nPING\r\n");
        fuzz_parse(b"\x3f\x00\x00SUB a 1\r\nPUB a 3\r\nabc\r\n");
        fuzz_parse(b"\x02\x07\x07PING\r\n");
        fuzz_parse(&[0u8; 100]);
    }
}
