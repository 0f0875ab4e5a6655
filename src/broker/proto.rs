//! What the server sends, byte for byte: INFO, MSG/HMSG, `+OK`, PING/PONG and every `-ERR`.
//!
//! Everything is written into a [`Sink`]: a [`SliceSink`] over a `&mut [u8]`, or a
//! connection's write slab ([`ByteRing`]). Each writer computes the full length of what it
//! writes first and writes nothing when the sink has less room ([`SinkFull`]), so a message is
//! never half-staged.
//!
//! ```
//! use ringlet::broker::proto::{self, ServerError, SliceSink};
//!
//! let mut buf = [0u8; 64];
//! let mut out = SliceSink::new(&mut buf);
//! proto::write_msg(&mut out, b"foo.bar", b"7", Some(b"_INBOX.1"), None, b"hi").unwrap();
//! ServerError::InvalidSubject.write(&mut out).unwrap();
//! assert_eq!(
//!     out.written(),
//!     b"MSG foo.bar 7 _INBOX.1 2\r\nhi\r\n-ERR 'Invalid Subject'\r\n"
//! );
//! assert!(!ServerError::InvalidSubject.closes());
//! ```

use core::fmt;

use crate::pool::ByteRing;

/// The end of every protocol line and of every payload.
pub const CRLF: &[u8] = b"\r\n";
/// The answer to a verbose client's CONNECT, SUB, UNSUB and PUB.
pub const OK: &[u8] = b"+OK\r\n";
/// A server PING.
pub const PING: &[u8] = b"PING\r\n";
/// The answer to a client PING.
pub const PONG: &[u8] = b"PONG\r\n";
/// The header block of a no-responders status message (16 bytes).
pub const NO_RESPONDERS_HEADER: &[u8] = b"NATS/1.0 503\r\n\r\n";

/// The sink had no room for the whole write; nothing was written.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SinkFull {
    /// Bytes the write needed.
    pub needed: usize,
    /// Bytes the sink had free.
    pub free: usize,
}

impl fmt::Display for SinkFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "output full: {} bytes needed, {} free",
            self.needed, self.free
        )
    }
}

impl core::error::Error for SinkFull {}

/// Somewhere protocol bytes go.
pub trait Sink {
    /// Bytes that can still be written.
    fn free(&self) -> usize;

    /// Appends `bytes` whole, or nothing ([`SinkFull`]).
    fn put(&mut self, bytes: &[u8]) -> Result<(), SinkFull>;
}

/// A [`Sink`] over a byte slice, filled from the front.
#[derive(Debug)]
pub struct SliceSink<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> SliceSink<'b> {
    /// An empty sink over `buf`.
    pub fn new(buf: &'b mut [u8]) -> Self {
        SliceSink { buf, len: 0 }
    }

    /// The bytes written so far.
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// How many bytes were written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets what was written.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Sink for SliceSink<'_> {
    fn free(&self) -> usize {
        self.buf.len() - self.len
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), SinkFull> {
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len += bytes.len();
                Ok(())
            }
            None => Err(SinkFull {
                needed: bytes.len(),
                free: self.buf.len() - self.len,
            }),
        }
    }
}

impl Sink for ByteRing<'_> {
    fn free(&self) -> usize {
        ByteRing::free(self)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), SinkFull> {
        let free = ByteRing::free(self);
        self.append(bytes).map_err(|_| SinkFull {
            needed: bytes.len(),
            free,
        })
    }
}

/// Counts bytes instead of writing them (for the length pass).
struct Counter(usize);

impl Sink for Counter {
    fn free(&self) -> usize {
        usize::MAX
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), SinkFull> {
        self.0 = self.0.saturating_add(bytes.len());
        Ok(())
    }
}

/// Runs `write` once to count and once for real if it fits: all or nothing.
fn all_or_nothing<S: Sink + ?Sized>(
    sink: &mut S,
    mut write: impl FnMut(&mut dyn Sink) -> Result<(), SinkFull>,
) -> Result<usize, SinkFull> {
    let mut count = Counter(0);
    write(&mut count)?;
    let needed = count.0;
    let free = sink.free();
    if free < needed {
        return Err(SinkFull { needed, free });
    }
    let mut adapter = Dyn(sink);
    write(&mut adapter)?;
    Ok(needed)
}

struct Dyn<'s, S: Sink + ?Sized>(&'s mut S);

impl<S: Sink + ?Sized> Sink for Dyn<'_, S> {
    fn free(&self) -> usize {
        self.0.free()
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), SinkFull> {
        self.0.put(bytes)
    }
}

/// Decimal digits of `n` in `buf`, returned as the slice used.
fn itoa(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

fn put_num(sink: &mut dyn Sink, n: u64) -> Result<(), SinkFull> {
    let mut buf = [0u8; 20];
    sink.put(itoa(n, &mut buf))
}

/// Writes a MSG or HMSG control line (without the payload):
/// `MSG <subject> <sid> [reply] <size>\r\n`, or with `header_len`
/// `HMSG <subject> <sid> [reply] <header_len> <total_len>\r\n`. Returns the bytes written.
///
/// All or nothing: the length is computed first ([`msg_line_len`]), so a sink without room
/// gets nothing. This runs once per delivered message, so it writes straight into the sink
/// (no counting pass through a `dyn Sink`).
pub fn write_msg_line<S: Sink + ?Sized>(
    sink: &mut S,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    header_len: Option<u32>,
    total_len: u32,
) -> Result<usize, SinkFull> {
    let needed = msg_line_len(subject, sid, reply, header_len, total_len);
    let free = sink.free();
    if free < needed {
        return Err(SinkFull { needed, free });
    }
    sink.put(if header_len.is_some() {
        b"HMSG "
    } else {
        b"MSG "
    })?;
    sink.put(subject)?;
    sink.put(b" ")?;
    sink.put(sid)?;
    if let Some(r) = reply {
        sink.put(b" ")?;
        sink.put(r)?;
    }
    sink.put(b" ")?;
    let mut buf = [0u8; 20];
    if let Some(h) = header_len {
        sink.put(itoa(u64::from(h), &mut buf))?;
        sink.put(b" ")?;
    }
    sink.put(itoa(u64::from(total_len), &mut buf))?;
    sink.put(CRLF)?;
    Ok(needed)
}

/// Decimal digits of `n` (compares, no divisions for the usual sizes: it runs for every
/// delivered message).
fn digits(n: u32) -> usize {
    if n < 10 {
        1
    } else if n < 100 {
        2
    } else if n < 1_000 {
        3
    } else if n < 10_000 {
        4
    } else {
        4 + digits(n / 10_000)
    }
}

/// `n` in decimal into `dst`, which is exactly [`digits`]`(n)` long, two digits per division.
fn put_decimal(dst: &mut [u8], n: u32) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut n = n as usize;
    let mut i = dst.len();
    while i >= 2 {
        let r = 2 * (n % 100);
        dst[i - 1] = PAIRS[r + 1];
        dst[i - 2] = PAIRS[r];
        n /= 100;
        i -= 2;
    }
    if i == 1 {
        dst[0] = b'0' + (n % 10) as u8;
    }
}

impl SliceSink<'_> {
    /// Appends `n` in decimal, whole or nothing, without a temporary buffer.
    fn put_u32(&mut self, n: u32) -> Result<(), SinkFull> {
        let d = digits(n);
        let free = self.buf.len() - self.len;
        let Some(dst) = self.buf.get_mut(self.len..self.len + d) else {
            return Err(SinkFull { needed: d, free });
        };
        put_decimal(dst, n);
        self.len += d;
        Ok(())
    }
}

/// The length of the line [`write_msg_line`] writes.
pub fn msg_line_len(
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    header_len: Option<u32>,
    total_len: u32,
) -> usize {
    // "MSG " or "HMSG ", subject, " ", sid, [" " reply], " ", [header_len " "], total, CRLF.
    let op = if header_len.is_some() { 5 } else { 4 };
    op + subject.len()
        + 1
        + sid.len()
        + reply.map_or(0, |r| 1 + r.len())
        + 1
        + header_len.map_or(0, |h| digits(h) + 1)
        + digits(total_len)
        + CRLF.len()
}

/// A MSG/HMSG line formatted once per message and copied to every subscriber: everything but
/// the sid is the same for all of them. [`MsgLine::prefix`] is `MSG <subject> ` (or `HMSG
/// <subject> `), [`MsgLine::suffix`] is ` [reply] [<header_len>] <total_len>\r\n` plus what
/// [`MsgLine::append`] added after it (a small payload and its `\r\n`, sent with the line), so
/// `prefix + sid + suffix` is [`write_msg_line`]'s line (and the appended bytes).
///
/// The buffer keeps room for a sid between the two, so [`MsgLine::with_sid`] gives the whole
/// line for one subscriber as one slice (one copy into its write slab): it writes the sid
/// there, after moving the prefix only when the sid's length differs from the last one's.
///
/// ```
/// use ringlet::broker::proto::MsgLine;
///
/// let mut buf = [0u8; 64];
/// let mut line = MsgLine::new(&mut buf, 8, b"foo", Some(b"_INBOX.1"), None, 2).unwrap();
/// line.append(b"hi\r\n").unwrap();
/// assert_eq!(line.prefix(), b"MSG foo ");
/// assert_eq!(line.suffix(), b" _INBOX.1 2\r\nhi\r\n");
/// assert_eq!(line.with_sid(b"17"), Some(&b"MSG foo 17 _INBOX.1 2\r\nhi\r\n"[..]));
/// assert_eq!(line.len_with_sid(b"3"), b"MSG foo 3 _INBOX.1 2\r\nhi\r\n".len());
/// assert_eq!(line.with_sid(b"123456789"), None, "longer than the room for a sid");
/// ```
#[derive(Debug)]
pub struct MsgLine<'b> {
    buf: &'b mut [u8],
    /// Bytes kept for the sid; the suffix starts at `sid_room + prefix`.
    sid_room: usize,
    /// Where the prefix starts now: `sid_room` minus the length of the sid written last.
    at: usize,
    prefix: usize,
    /// The end of the suffix and the appended bytes.
    len: usize,
}

impl<'b> MsgLine<'b> {
    /// Formats the line of a message on `subject` with `reply`, HMSG with `header_len` when it
    /// is given, into `buf`, keeping room for sids of up to `sid_room` bytes.
    ///
    /// # Errors
    ///
    /// [`SinkFull`] when `buf` is too short for the line without its sid, plus `sid_room`.
    // Inlined: returned through memory, the line was stored field by field and copied out a
    // vector at a time, a load that waited for the stores before it to drain.
    #[inline(always)]
    pub fn new(
        buf: &'b mut [u8],
        sid_room: usize,
        subject: &[u8],
        reply: Option<&[u8]>,
        header_len: Option<u32>,
        total_len: u32,
    ) -> Result<MsgLine<'b>, SinkFull> {
        let needed = msg_line_len(subject, b"", reply, header_len, total_len) + sid_room;
        let free = buf.len();
        if free < needed {
            return Err(SinkFull { needed, free });
        }
        // The prefix goes where a one-byte sid (the usual kind) leaves it.
        let at = sid_room.saturating_sub(1);
        let mut s = SliceSink::new(&mut buf[at..]);
        s.put(if header_len.is_some() {
            b"HMSG "
        } else {
            b"MSG "
        })?;
        s.put(subject)?;
        s.put(b" ")?;
        let prefix = s.len();
        s.put(&[b' '][..sid_room - at])?;
        if let Some(r) = reply {
            s.put(b" ")?;
            s.put(r)?;
        }
        s.put(b" ")?;
        if let Some(h) = header_len {
            s.put_u32(h)?;
            s.put(b" ")?;
        }
        s.put_u32(total_len)?;
        s.put(CRLF)?;
        let len = at + s.len();
        Ok(MsgLine {
            buf,
            sid_room,
            at,
            prefix,
            len,
        })
    }

    /// Appends `bytes` to the suffix, whole or not at all.
    ///
    /// # Errors
    ///
    /// [`SinkFull`] when the buffer has no room for them (nothing is appended).
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), SinkFull> {
        let mut sink = SliceSink {
            buf: &mut *self.buf,
            len: self.len,
        };
        sink.put(bytes)?;
        self.len = sink.len;
        Ok(())
    }

    /// The longest sid [`MsgLine::with_sid`] takes.
    pub fn sid_room(&self) -> usize {
        self.sid_room
    }

    /// Room left for [`MsgLine::append`].
    pub fn free(&self) -> usize {
        self.buf.len() - self.len
    }

    /// `MSG <subject> `: what comes before the sid.
    pub fn prefix(&self) -> &[u8] {
        &self.buf[self.at..self.at + self.prefix]
    }

    /// What comes after the sid: the rest of the line and the appended bytes.
    pub fn suffix(&self) -> &[u8] {
        &self.buf[self.sid_room + self.prefix..self.len]
    }

    /// The whole line (and the appended bytes) for a subscriber with `sid`, in one slice;
    /// `None` for a sid longer than the room kept for it.
    #[inline]
    pub fn with_sid(&mut self, sid: &[u8]) -> Option<&[u8]> {
        let at = self.sid_room.checked_sub(sid.len())?;
        if at != self.at {
            self.buf.copy_within(self.at..self.at + self.prefix, at);
            self.at = at;
        }
        let line = self.buf.get_mut(at..self.len)?;
        let dst = line.get_mut(self.prefix..self.prefix + sid.len())?;
        if let ([d], [s]) = (&mut *dst, sid) {
            // The usual one-digit sid, without a call to memcpy.
            *d = *s;
        } else {
            dst.copy_from_slice(sid);
        }
        Some(line)
    }

    /// Bytes of the line (and the appended bytes) for a subscriber with `sid`.
    pub fn len_with_sid(&self, sid: &[u8]) -> usize {
        self.len - self.sid_room + sid.len()
    }
}

/// Writes a whole message: the MSG line (HMSG when `headers` is given), the header block, the
/// payload and the final `\r\n`. Returns the bytes written.
pub fn write_msg<S: Sink + ?Sized>(
    sink: &mut S,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    headers: Option<&[u8]>,
    payload: &[u8],
) -> Result<usize, SinkFull> {
    let hlen = headers.map_or(0, <[u8]>::len);
    let too_big = SinkFull {
        needed: usize::MAX,
        free: sink.free(),
    };
    let total = u32::try_from(hlen + payload.len()).map_err(|_| too_big)?;
    let header_len = match headers {
        Some(h) => Some(u32::try_from(h.len()).map_err(|_| too_big)?),
        None => None,
    };
    all_or_nothing(sink, |s| {
        write_msg_line(s, subject, sid, reply, header_len, total)?;
        if let Some(h) = headers {
            s.put(h)?;
        }
        s.put(payload)?;
        s.put(CRLF)
    })
}

/// Writes the no-responders status a requester gets when nobody received its request:
/// `HMSG <reply> <sid> 16 16\r\nNATS/1.0 503\r\n\r\n\r\n`.
pub fn write_no_responders<S: Sink + ?Sized>(
    sink: &mut S,
    reply: &[u8],
    sid: &[u8],
) -> Result<usize, SinkFull> {
    write_msg(sink, reply, sid, None, Some(NO_RESPONDERS_HEADER), b"")
}

/// Every `-ERR` the server sends, with whether it closes the connection.
///
/// The text goes between single quotes, `-ERR '<text>'\r\n` (the quotes are part of the
/// protocol: nats-py's parser requires them).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum ServerError<'a> {
    /// `Unknown Protocol Operation` (closes): unparsable input, a bad payload trailer, MSG from
    /// a client.
    UnknownProtocolOperation,
    /// `Maximum Payload Violation` (closes): PUB/HPUB size above max_payload.
    MaxPayloadViolation,
    /// `maximum control line exceeded` (closes): more than 4096 bytes of arguments.
    MaxControlLineExceeded,
    /// `Authorization Violation` (closes): bad credentials, or not CONNECT first when auth is
    /// required.
    AuthorizationViolation,
    /// `Authentication Timeout` (closes): no CONNECT within the auth timeout.
    AuthenticationTimeout,
    /// `Stale Connection` (closes): too many PINGs unanswered.
    StaleConnection,
    /// `invalid client protocol` (closes): CONNECT `protocol` other than 0 or 1.
    InvalidClientProtocol,
    /// `no responders requires headers support` (closes).
    NoRespondersRequiresHeaders,
    /// `maximum connections exceeded` (closes): the connection table is full.
    MaxConnectionsExceeded,
    /// `Invalid Subject` (stays open): a SUB subject failed validation.
    InvalidSubject,
    /// `Invalid Publish Subject` (stays open): a pedantic client published to a non-literal
    /// subject; the message is still processed.
    InvalidPublishSubject,
    /// `maximum subscriptions exceeded` (stays open).
    MaxSubscriptionsExceeded,
    /// `Permissions Violation for Publish to "<subject>"` (stays open).
    PublishPermission(&'a [u8]),
    /// `Permissions Violation for Subscription to "<subject>"` (stays open), with
    /// ` using queue "<queue>"` when the SUB had one.
    SubscribePermission {
        /// The subject of the refused SUB.
        subject: &'a [u8],
        /// Its queue group, if any.
        queue: Option<&'a [u8]>,
    },
}

impl ServerError<'_> {
    /// The fixed text between the quotes, or `None` for the permission errors (whose text
    /// names a subject; see [`ServerError::write`]).
    pub const fn text(&self) -> Option<&'static str> {
        Some(match self {
            ServerError::UnknownProtocolOperation => "Unknown Protocol Operation",
            ServerError::MaxPayloadViolation => "Maximum Payload Violation",
            ServerError::MaxControlLineExceeded => "maximum control line exceeded",
            ServerError::AuthorizationViolation => "Authorization Violation",
            ServerError::AuthenticationTimeout => "Authentication Timeout",
            ServerError::StaleConnection => "Stale Connection",
            ServerError::InvalidClientProtocol => "invalid client protocol",
            ServerError::NoRespondersRequiresHeaders => "no responders requires headers support",
            ServerError::MaxConnectionsExceeded => "maximum connections exceeded",
            ServerError::InvalidSubject => "Invalid Subject",
            ServerError::InvalidPublishSubject => "Invalid Publish Subject",
            ServerError::MaxSubscriptionsExceeded => "maximum subscriptions exceeded",
            ServerError::PublishPermission(_) | ServerError::SubscribePermission { .. } => {
                return None;
            }
        })
    }

    /// Whether the server closes the connection after sending this error.
    pub const fn closes(&self) -> bool {
        match self {
            ServerError::UnknownProtocolOperation
            | ServerError::MaxPayloadViolation
            | ServerError::MaxControlLineExceeded
            | ServerError::AuthorizationViolation
            | ServerError::AuthenticationTimeout
            | ServerError::StaleConnection
            | ServerError::InvalidClientProtocol
            | ServerError::NoRespondersRequiresHeaders
            | ServerError::MaxConnectionsExceeded => true,
            ServerError::InvalidSubject
            | ServerError::InvalidPublishSubject
            | ServerError::MaxSubscriptionsExceeded
            | ServerError::PublishPermission(_)
            | ServerError::SubscribePermission { .. } => false,
        }
    }

    /// Writes `-ERR '<text>'\r\n`. Subjects in permission errors are quoted the way Go's `%q`
    /// does it (see [`write_go_quoted`]).
    pub fn write<S: Sink + ?Sized>(&self, sink: &mut S) -> Result<usize, SinkFull> {
        all_or_nothing(sink, |s| {
            s.put(b"-ERR '")?;
            match self {
                ServerError::PublishPermission(subject) => {
                    s.put(b"Permissions Violation for Publish to ")?;
                    write_go_quoted(s, subject)?;
                }
                ServerError::SubscribePermission { subject, queue } => {
                    s.put(b"Permissions Violation for Subscription to ")?;
                    write_go_quoted(s, subject)?;
                    if let Some(q) = queue {
                        s.put(b" using queue ")?;
                        write_go_quoted(s, q)?;
                    }
                }
                other => s.put(other.text().unwrap_or("").as_bytes())?,
            }
            s.put(b"'\r\n")
        })
    }

    /// The length of what [`ServerError::write`] writes.
    pub fn encoded_len(&self) -> usize {
        let mut c = Counter(0);
        let _ = self.write(&mut c);
        c.0
    }
}

impl fmt::Display for ServerError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text() {
            Some(t) => f.write_str(t),
            None => f.write_str("Permissions Violation"),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Decodes one UTF-8 scalar at the start of `b` (non-empty) the way Go's `utf8.DecodeRune`
/// does: an invalid or truncated sequence is `None` with width 1.
pub(crate) fn decode_utf8(b: &[u8]) -> (Option<char>, usize) {
    let width = match b.first() {
        Some(0x00..=0x7f) => return (Some(char::from(b[0])), 1),
        Some(0xc2..=0xdf) => 2,
        Some(0xe0..=0xef) => 3,
        Some(0xf0..=0xf4) => 4,
        _ => return (None, 1),
    };
    match b.get(..width).map(core::str::from_utf8) {
        Some(Ok(s)) => (s.chars().next(), width),
        _ => (None, 1),
    }
}

/// Writes `bytes` as Go's `strconv.Quote` (`%q`) would: in double quotes, with `\"`, `\\`,
/// `\a \b \f \n \r \t \v`, `\xHH` for other ASCII control bytes and invalid UTF-8, and
/// `\uHHHH` for the C1 controls. Other non-ASCII characters are written as they are (Go also
/// escapes the few non-printable ones outside those ranges, such as U+00AD; ringlet does not
/// carry Unicode tables).
pub fn write_go_quoted<S: Sink + ?Sized>(sink: &mut S, bytes: &[u8]) -> Result<(), SinkFull> {
    sink.put(b"\"")?;
    let mut i = 0;
    while i < bytes.len() {
        let (c, w) = decode_utf8(&bytes[i..]);
        match c {
            None => sink.put(&[
                b'\\',
                b'x',
                HEX[usize::from(bytes[i] >> 4)],
                HEX[usize::from(bytes[i] & 15)],
            ])?,
            Some(c) => match c {
                '"' => sink.put(b"\\\"")?,
                '\\' => sink.put(b"\\\\")?,
                '\x07' => sink.put(b"\\a")?,
                '\x08' => sink.put(b"\\b")?,
                '\x0c' => sink.put(b"\\f")?,
                '\n' => sink.put(b"\\n")?,
                '\r' => sink.put(b"\\r")?,
                '\t' => sink.put(b"\\t")?,
                '\x0b' => sink.put(b"\\v")?,
                c if (c as u32) < 0x20 || c == '\x7f' => {
                    let b = c as u8;
                    sink.put(&[
                        b'\\',
                        b'x',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 15)],
                    ])?;
                }
                c if (0x80..0xa0).contains(&(c as u32)) => {
                    let v = c as u32;
                    sink.put(b"\\u00")?;
                    sink.put(&[HEX[(v >> 4) as usize & 15], HEX[v as usize & 15]])?;
                }
                _ => sink.put(&bytes[i..i + w])?,
            },
        }
        i += w;
    }
    sink.put(b"\"")
}

/// Writes `s` as a JSON string the way Go's `encoding/json` does (HTML-safe): `\"`, `\\`,
/// `\n`, `\r`, `\t`, `\u00XX` for other control characters and for `<`, `>`, `&`, and
/// `\u2028`/`\u2029`.
pub fn write_json_string<S: Sink + ?Sized>(sink: &mut S, s: &str) -> Result<(), SinkFull> {
    sink.put(b"\"")?;
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<&[u8]> = match c {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            '\u{2028}' => Some(b"\\u2028"),
            '\u{2029}' => Some(b"\\u2029"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&') => Some(b""),
            _ => None,
        };
        if let Some(e) = esc {
            sink.put(&bytes[start..i])?;
            if e.is_empty() {
                let b = c as u8;
                sink.put(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ])?;
            } else {
                sink.put(e)?;
            }
            start = i + c.len_utf8();
        }
    }
    sink.put(&bytes[start..])?;
    sink.put(b"\"")
}

/// The fields of the server's INFO, in the order nats-server's `Info` struct marshals them.
/// Fields marked *omitempty* there are left out when false, zero or empty, as it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info<'a> {
    /// `server_id`.
    pub server_id: &'a str,
    /// `server_name`.
    pub server_name: &'a str,
    /// `version`.
    pub version: &'a str,
    /// `proto` (1).
    pub proto: u32,
    /// `git_commit` (omitempty).
    pub git_commit: &'a str,
    /// `go`: nats-server's Go version; clients only display it.
    pub go: &'a str,
    /// `host`.
    pub host: &'a str,
    /// `port`.
    pub port: u16,
    /// `headers`.
    pub headers: bool,
    /// `auth_required` (omitempty).
    pub auth_required: bool,
    /// `tls_required` (omitempty).
    pub tls_required: bool,
    /// `max_payload`.
    pub max_payload: u32,
    /// `jetstream` (omitempty).
    pub jetstream: bool,
    /// `client_id` (omitempty).
    pub client_id: u64,
    /// `client_ip` (omitempty).
    pub client_ip: &'a str,
    /// `nonce` (omitempty).
    pub nonce: &'a str,
    /// `ldm`: lame duck mode (omitempty).
    pub ldm: bool,
}

impl Info<'_> {
    /// Defaults for a server without auth: proto 1, headers on, max_payload 1 MiB, empty
    /// strings, port 4222.
    pub const DEFAULT: Info<'static> = Info {
        server_id: "",
        server_name: "",
        version: "2.9.10",
        proto: 1,
        git_commit: "",
        go: "go1.19.8",
        host: "0.0.0.0",
        port: 4222,
        headers: true,
        auth_required: false,
        tls_required: false,
        max_payload: 1024 * 1024,
        jetstream: false,
        client_id: 0,
        client_ip: "",
        nonce: "",
        ldm: false,
    };

    /// Writes `INFO {json} \r\n` (the space before `\r\n` is what nats-server sends).
    pub fn write<S: Sink + ?Sized>(&self, sink: &mut S) -> Result<usize, SinkFull> {
        all_or_nothing(sink, |s| {
            let mut w = JsonObject {
                sink: s,
                first: true,
            };
            w.str("server_id", self.server_id)?;
            w.str("server_name", self.server_name)?;
            w.str("version", self.version)?;
            w.num("proto", u64::from(self.proto))?;
            if !self.git_commit.is_empty() {
                w.str("git_commit", self.git_commit)?;
            }
            w.str("go", self.go)?;
            w.str("host", self.host)?;
            w.num("port", u64::from(self.port))?;
            w.bool("headers", self.headers)?;
            if self.auth_required {
                w.bool("auth_required", true)?;
            }
            if self.tls_required {
                w.bool("tls_required", true)?;
            }
            w.num("max_payload", u64::from(self.max_payload))?;
            if self.jetstream {
                w.bool("jetstream", true)?;
            }
            if self.client_id != 0 {
                w.num("client_id", self.client_id)?;
            }
            if !self.client_ip.is_empty() {
                w.str("client_ip", self.client_ip)?;
            }
            if !self.nonce.is_empty() {
                w.str("nonce", self.nonce)?;
            }
            if self.ldm {
                w.bool("ldm", true)?;
            }
            w.end()
        })
    }

    /// The length of what [`Info::write`] writes.
    pub fn encoded_len(&self) -> usize {
        let mut c = Counter(0);
        let _ = self.write(&mut c);
        c.0
    }
}

/// Writes `INFO {` ... `} \r\n` one member at a time.
struct JsonObject<'s> {
    sink: &'s mut dyn Sink,
    first: bool,
}

impl JsonObject<'_> {
    fn key(&mut self, k: &str) -> Result<(), SinkFull> {
        self.sink
            .put(if self.first { b"INFO {\"" } else { b",\"" })?;
        self.first = false;
        self.sink.put(k.as_bytes())?;
        self.sink.put(b"\":")
    }

    fn str(&mut self, k: &str, v: &str) -> Result<(), SinkFull> {
        self.key(k)?;
        write_json_string(self.sink, v)
    }

    fn num(&mut self, k: &str, v: u64) -> Result<(), SinkFull> {
        self.key(k)?;
        put_num(self.sink, v)
    }

    fn bool(&mut self, k: &str, v: bool) -> Result<(), SinkFull> {
        self.key(k)?;
        self.sink.put(if v { b"true" } else { b"false" })
    }

    fn end(&mut self) -> Result<(), SinkFull> {
        if self.first {
            self.sink.put(b"INFO {")?;
        }
        self.sink.put(b"} \r\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::RingState;

    fn with_sink(f: impl FnOnce(&mut SliceSink<'_>)) -> std::vec::Vec<u8> {
        let mut buf = [0u8; 1024];
        let mut s = SliceSink::new(&mut buf);
        f(&mut s);
        s.written().to_vec()
    }

    #[test]
    fn info_line_is_byte_exact() {
        let info = Info {
            server_id: "NCXX",
            server_name: "NCXX",
            client_id: 5,
            client_ip: "127.0.0.1",
            ..Info::DEFAULT
        };
        let out = with_sink(|s| {
            info.write(s).unwrap();
        });
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "INFO {\"server_id\":\"NCXX\",\"server_name\":\"NCXX\",\"version\":\"2.9.10\",\
             \"proto\":1,\"go\":\"go1.19.8\",\"host\":\"0.0.0.0\",\"port\":4222,\
             \"headers\":true,\"max_payload\":1048576,\"client_id\":5,\
             \"client_ip\":\"127.0.0.1\"} \r\n"
        );
        assert_eq!(info.encoded_len(), out.len());
        let auth = Info {
            auth_required: true,
            server_name: "a<b>&\"\\\n\u{2028}é\x01",
            ..info
        };
        let out = with_sink(|s| {
            auth.write(s).unwrap();
        });
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            text.contains("\"server_name\":\"a\\u003cb\\u003e\\u0026\\\"\\\\\\n\\u2028é\\u0001\"")
        );
        assert!(text.contains("\"headers\":true,\"auth_required\":true,\"max_payload\""));
    }

    #[test]
    fn msg_lines() {
        let out = with_sink(|s| {
            write_msg_line(s, b"foo", b"1", None, None, 5).unwrap();
            write_msg_line(s, b"foo", b"1", Some(b"bar"), None, 0).unwrap();
            write_msg_line(s, b"foo", b"22", None, Some(12), 17).unwrap();
            write_msg_line(s, b"foo", b"22", Some(b"r"), Some(12), 17).unwrap();
        });
        assert_eq!(
            out,
            b"MSG foo 1 5\r\nMSG foo 1 bar 0\r\nHMSG foo 22 12 17\r\nHMSG foo 22 r 12 17\r\n"
        );
        assert_eq!(msg_line_len(b"foo", b"22", Some(b"r"), Some(12), 17), 21);
        // The computed length is what is written, across digit counts.
        for n in [0u32, 9, 10, 99, 100, 65_535, 1_048_576, u32::MAX] {
            for h in [None, Some(0), Some(9), Some(10), Some(n)] {
                for r in [None, Some(&b"_INBOX.abc"[..])] {
                    let out = with_sink(|s| {
                        let w = write_msg_line(s, b"a.b", b"12", r, h, n).unwrap();
                        assert_eq!(w, msg_line_len(b"a.b", b"12", r, h, n));
                    });
                    assert_eq!(out.len(), msg_line_len(b"a.b", b"12", r, h, n));
                }
            }
        }
        let out = with_sink(|s| {
            write_no_responders(s, b"_INBOX.x", b"3").unwrap();
        });
        assert_eq!(out, b"HMSG _INBOX.x 3 16 16\r\nNATS/1.0 503\r\n\r\n\r\n");
        let out = with_sink(|s| {
            write_msg(s, b"a", b"1", None, Some(b"NATS/1.0\r\n\r\n"), b"hey").unwrap();
        });
        assert_eq!(out, b"HMSG a 1 12 15\r\nNATS/1.0\r\n\r\nhey\r\n");
    }

    #[test]
    fn decimals_at_every_digit_count() {
        use std::string::ToString;
        let mut ns = std::vec![0u32, u32::MAX, u32::MAX - 1];
        let mut p = 1u32;
        while let Some(q) = p.checked_mul(10) {
            ns.extend([p - 1, p, p + 1, q - 1]);
            p = q;
        }
        let mut x = 0x2545_f491u32;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            ns.push(x >> (x % 32));
        }
        for n in ns {
            let want = n.to_string();
            assert_eq!(digits(n), want.len(), "{n}");
            let out = with_sink(|s| s.put_u32(n).unwrap());
            assert_eq!(out, want.as_bytes());
        }
        let mut buf = [0u8; 3];
        let mut s = SliceSink::new(&mut buf);
        assert_eq!(s.put_u32(1234), Err(SinkFull { needed: 4, free: 3 }));
        assert!(s.is_empty());
    }

    #[test]
    fn msg_line_template_is_write_msg_line_around_the_sid() {
        for n in [0u32, 9, 10, 99, 1_048_576, u32::MAX] {
            for h in [None, Some(0), Some(9), Some(n)] {
                for r in [None, Some(&b"_INBOX.abc"[..])] {
                    let mut buf = [0u8; 160];
                    let mut t = MsgLine::new(&mut buf, 32, b"a.b", r, h, n).unwrap();
                    // Sids of changing lengths, each twice: the prefix moves and stays.
                    for sid in [
                        &b"1"[..],
                        b"1",
                        b"123",
                        b"7",
                        b"",
                        b"12345678901234567890123456789012",
                        b"42",
                        b"42",
                    ] {
                        let want = with_sink(|s| {
                            write_msg_line(s, b"a.b", sid, r, h, n).unwrap();
                        });
                        let got = [t.prefix(), sid, t.suffix()].concat();
                        assert_eq!(got, want);
                        assert_eq!(t.len_with_sid(sid), want.len());
                        assert_eq!(t.with_sid(sid), Some(&want[..]));
                    }
                    assert_eq!(t.with_sid(&[b'9'; 33]), None, "past the sid room");
                }
            }
        }
        // Appended bytes follow the line; a buffer without room gets nothing.
        let mut buf = [0u8; 28];
        let mut t = MsgLine::new(&mut buf, 4, b"foo", None, None, 5).unwrap();
        assert_eq!(t.free(), 28 - 4 - b"MSG foo  5\r\n".len());
        t.append(b"hello\r\n").unwrap();
        assert_eq!(t.append(b"too much"), Err(SinkFull { needed: 8, free: 5 }));
        assert_eq!(t.suffix(), b" 5\r\nhello\r\n");
        assert_eq!(t.with_sid(b"ab"), Some(&b"MSG foo ab 5\r\nhello\r\n"[..]));
        let mut small = [0u8; 15];
        assert_eq!(
            MsgLine::new(&mut small, 4, b"foo", None, None, 5).unwrap_err(),
            SinkFull {
                // "MSG foo  5\r\n" (the line without a sid) and the sid room
                needed: 16,
                free: 15
            }
        );
    }

    #[test]
    fn all_or_nothing_when_full() {
        let mut buf = [0u8; 10];
        let mut s = SliceSink::new(&mut buf);
        assert_eq!(
            write_msg(&mut s, b"foo", b"1", None, None, b"hello"),
            Err(SinkFull {
                needed: 20,
                free: 10
            })
        );
        assert!(s.is_empty());
        let mut buf = [0u8; 10];
        let mut s = SliceSink::new(&mut buf);
        assert_eq!(
            write_msg_line(&mut s, b"foo", b"1", None, None, 5),
            Err(SinkFull {
                // "MSG foo 1 5\r\n"
                needed: 13,
                free: 10
            })
        );
        assert!(s.is_empty());
        // Into a write slab, too.
        let mut mem = [0u8; 16];
        let mut state = RingState::new();
        let mut ring = ByteRing::new(&mut mem, &mut state);
        assert!(ServerError::InvalidSubject.write(&mut ring).is_err());
        assert!(ring.is_empty());
        ServerError::StaleConnection.write(&mut ring).unwrap_err();
        ring.put(PONG).unwrap();
        assert_eq!(ring.staged().0, PONG);
    }

    #[test]
    fn every_error_text() {
        use ServerError::*;
        let cases: &[(ServerError<'_>, &str, bool)] = &[
            (
                UnknownProtocolOperation,
                "-ERR 'Unknown Protocol Operation'\r\n",
                true,
            ),
            (
                MaxPayloadViolation,
                "-ERR 'Maximum Payload Violation'\r\n",
                true,
            ),
            (
                MaxControlLineExceeded,
                "-ERR 'maximum control line exceeded'\r\n",
                true,
            ),
            (
                AuthorizationViolation,
                "-ERR 'Authorization Violation'\r\n",
                true,
            ),
            (
                AuthenticationTimeout,
                "-ERR 'Authentication Timeout'\r\n",
                true,
            ),
            (StaleConnection, "-ERR 'Stale Connection'\r\n", true),
            (
                InvalidClientProtocol,
                "-ERR 'invalid client protocol'\r\n",
                true,
            ),
            (
                NoRespondersRequiresHeaders,
                "-ERR 'no responders requires headers support'\r\n",
                true,
            ),
            (
                MaxConnectionsExceeded,
                "-ERR 'maximum connections exceeded'\r\n",
                true,
            ),
            (InvalidSubject, "-ERR 'Invalid Subject'\r\n", false),
            (
                InvalidPublishSubject,
                "-ERR 'Invalid Publish Subject'\r\n",
                false,
            ),
            (
                MaxSubscriptionsExceeded,
                "-ERR 'maximum subscriptions exceeded'\r\n",
                false,
            ),
            (
                PublishPermission(b"x"),
                "-ERR 'Permissions Violation for Publish to \"x\"'\r\n",
                false,
            ),
            (
                SubscribePermission {
                    subject: b"x",
                    queue: None,
                },
                "-ERR 'Permissions Violation for Subscription to \"x\"'\r\n",
                false,
            ),
            (
                SubscribePermission {
                    subject: b"x.>",
                    queue: Some(b"q"),
                },
                "-ERR 'Permissions Violation for Subscription to \"x.>\" using queue \"q\"'\r\n",
                false,
            ),
        ];
        for (e, text, closes) in cases {
            let out = with_sink(|s| {
                e.write(s).unwrap();
            });
            assert_eq!(std::str::from_utf8(&out).unwrap(), *text);
            assert_eq!(e.closes(), *closes, "{e:?}");
            assert_eq!(e.encoded_len(), text.len());
        }
    }

    #[test]
    fn go_quote() {
        let out = with_sink(|s| {
            write_go_quoted(s, b"a\"b\\c\x07\x00\x7f\n\xff\xc3\xa9\xc2\x85").unwrap();
        });
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "\"a\\\"b\\\\c\\a\\x00\\x7f\\n\\xffé\\u0085\""
        );
    }
}
