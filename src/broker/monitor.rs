//! Monitoring over HTTP, served by the broker's own loop: `/healthz`, `/varz`, `/connz` and
//! `/subsz` in nats-server's field names and JSON shapes, written without allocation.
//!
//! # Serving
//!
//! The program listens on the monitoring port with the same reactor and tells the broker
//! which listener it is ([`Broker::set_monitor_listener`](super::server::Broker::set_monitor_listener)).
//! A connection accepted there is an HTTP client: at most [`MONITOR_CONNS`] at once (one
//! more is answered `503 Service Unavailable` and closed). Its request head is parsed by
//! [`http::RequestParser`] (the leases go back at once); a head not complete within
//! [`REQUEST_TIMEOUT`] is answered `408 Request Timeout`. Every answer ends with
//! `Connection: close` and no `Content-Length`: the body ends where the connection does.
//!
//! - `GET /healthz`: `{"status":"ok"}`.
//! - `GET /varz`: the server's identity, limits and counters.
//! - `GET /connz`: the client connections, `offset` and `limit` (default 1024) paging them,
//!   `subs=1` adding each one's `subscriptions_list`, `subs=detail` a
//!   `subscriptions_list_detail` (subject, qgroup, sid, msgs, max, cid).
//! - `GET /subsz` (and `/subscriptionsz`): the subscription index's counters; with `subs=1`
//!   (or `detail`) also `subscriptions_list`, paged by `offset` and `limit`.
//! - `GET /`: a small HTML page linking the above.
//! - `HEAD` of any of these: the head only. Another method: `405 Method Not Allowed`; another
//!   path: `404 page not found`; a bad `offset`, `limit` or `subs`: `400` with nats-server's
//!   error text; a malformed request head: its [`http::HttpError`] status.
//!
//! # Memory
//!
//! The monitor's state lives inside the [`Broker`](super::server::Broker) value: a request
//! parser (its target buffer is [`http::MAX_TARGET`] bytes) and a cursor per monitoring
//! connection, about 5.5 KiB for [`MONITOR_CONNS`] of them. Connections accepted on the
//! monitoring listener take reactor connection slots (not broker clients: `max_connections`
//! does not count them).
//!
//! # Writing without allocation, and answers larger than the write slab
//!
//! An answer is written straight into the connection's write slab as a sequence of *atoms*:
//! the HTTP head, a JSON head, one connection, one subscription, a tail. Each atom is rendered
//! twice by the same pure function over the broker's state: once into a [`Counter`] to learn
//! its length, then, if the slab has that much room, into the slab. When it has not, the
//! answer waits for [`Handler::on_flushed`](crate::reactor::Handler::on_flushed) and goes on
//! from its cursor (connection slot, subscription index), so an answer of any length goes
//! out in slab-sized pieces. An atom is at most one subscription of the longest subject
//! (4 KiB, up to 6 bytes a byte once escaped), or one connection's fields: a write slab of
//! at least [`MIN_SLAB`] bytes always takes one; a smaller slab that cannot take an atom
//! aborts that answer.
//!
//! # Differences from nats-server 2.9
//!
//! - Connections are listed in connection-slot order, not sorted by `cid`; `sort` is
//!   ignored. `num_connections` counts the page when the answer begins: a connection that
//!   closes before its turn in a long (multi-piece) answer is left out of the list.
//! - `rtt` is measured from the server's PINGs (the first after about 2 s) and is `"0s"`
//!   until one was answered; `idle` counts from the last bytes received.
//! - `/varz` has no `cpu`, `cores`, `gomaxprocs`, `system_account`, `tls_timeout` (no TLS) or
//!   `config_load_time` fields; `mem` is the resident set size from `/proc/self/status`.
//! - `/subsz`'s `avg_fanout` and `max_fanout` are over every message published (nats-server:
//!   over its match cache); `num_cache` is the match cache's lines in use.
//! - Any method but GET and HEAD is refused (nats-server answers them all alike).

use core::fmt;
use core::net::IpAddr;
use core::time::Duration;

use super::http::{self, HttpError, Method, RequestParser, Status};
use super::parser::MAX_CONTROL_LINE;
use super::server::{ClientView, Core};
use crate::pool::Lease;
use crate::reactor::timer::TimerId;
use crate::reactor::{ConnId, Context, ListenerId};
use crate::time::Instant;

/// Monitoring connections served at once.
pub const MONITOR_CONNS: usize = 8;
/// How long a monitoring client has to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// `limit` when none is given (nats-server's default).
pub const DEFAULT_LIMIT: usize = 1024;
/// The smallest write slab that always takes one atom of an answer (see the module docs).
pub const MIN_SLAB: usize = 6 * MAX_CONTROL_LINE + 8 * 1024;

/// Timer tokens of monitoring connections carry this bit.
pub(super) const MONITOR_TOKEN: u64 = 1 << 60;

// ---------------------------------------------------------------------------------------------
// Output

/// Where JSON and HTTP text go: infallible, because every atom is measured before it is
/// written.
pub trait Out {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

/// Counts bytes instead of keeping them (the measuring pass).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter(pub usize);

impl Out for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }
}

/// An [`Out`] over a byte slice: keeps what fits and remembers whether anything did not.
#[derive(Debug)]
pub struct SliceOut<'b> {
    buf: &'b mut [u8],
    len: usize,
    overflowed: bool,
}

impl<'b> SliceOut<'b> {
    /// An empty output over `buf`.
    pub fn new(buf: &'b mut [u8]) -> Self {
        SliceOut {
            buf,
            len: 0,
            overflowed: false,
        }
    }

    /// What was kept.
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Whether some bytes did not fit (and were dropped).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
}

impl Out for SliceOut<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let room = self.buf.len() - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        if n < bytes.len() {
            self.overflowed = true;
        }
    }
}

/// `core::fmt` into an [`Out`] (for floats).
struct FmtOut<'o>(&'o mut dyn Out);

impl fmt::Write for FmtOut<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.put(s.as_bytes());
        Ok(())
    }
}

/// Writes into a connection's write slab through a small staging buffer. Only used after the
/// atom was measured to fit, so the slab takes every byte.
struct SlabOut<'x, 'c, 'r> {
    cx: &'x mut Context<'c, 'r>,
    conn: ConnId,
    buf: [u8; 512],
    len: usize,
    failed: bool,
}

impl<'x, 'c, 'r> SlabOut<'x, 'c, 'r> {
    fn new(cx: &'x mut Context<'c, 'r>, conn: ConnId) -> Self {
        SlabOut {
            cx,
            conn,
            buf: [0; 512],
            len: 0,
            failed: false,
        }
    }

    fn drain(&mut self) {
        if self.len > 0 {
            self.failed |= self.cx.write(self.conn, &self.buf[..self.len]).is_err();
            self.len = 0;
        }
    }

    /// Writes what is staged; false if the slab refused anything.
    fn finish(mut self) -> bool {
        self.drain();
        !self.failed
    }
}

impl Out for SlabOut<'_, '_, '_> {
    fn put(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > self.buf.len() {
            self.drain();
        }
        if bytes.len() > self.buf.len() {
            self.failed |= self.cx.write(self.conn, bytes).is_err();
        } else {
            self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JSON

/// Where a [`JsonWriter`] stands: nesting depth and whether the current container is still
/// empty. Saved between atoms, so an answer can be written in pieces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JsonState {
    depth: u8,
    first: bool,
}

/// JSON the way Go's `json.MarshalIndent(v, "", "  ")` writes it (what nats-server's
/// monitoring endpoints send): two-space indents, `"key": value`, empty containers as `{}`
/// and `[]`, strings escaped as Go does (`<`, `>`, `&`, U+2028, U+2029 and control characters
/// as `\u00XX`-style escapes, each invalid UTF-8 byte as `\ufffd`), no newline at the end.
///
/// ```
/// use ringlet::broker::monitor::{JsonWriter, SliceOut};
///
/// let mut buf = [0u8; 128];
/// let mut out = SliceOut::new(&mut buf);
/// let mut w = JsonWriter::new(&mut out);
/// w.begin_object(None);
/// w.str("status", b"ok");
/// w.begin_array(Some("list"));
/// w.end_array();
/// w.u64("n", 3);
/// w.end_object();
/// assert_eq!(out.written(), b"{\n  \"status\": \"ok\",\n  \"list\": [],\n  \"n\": 3\n}");
/// ```
pub struct JsonWriter<'o> {
    out: &'o mut dyn Out,
    st: JsonState,
}

impl<'o> JsonWriter<'o> {
    /// A writer at the top level.
    pub fn new(out: &'o mut dyn Out) -> Self {
        Self::resume(out, JsonState::default())
    }

    /// A writer that goes on where one with `state` stopped.
    pub fn resume(out: &'o mut dyn Out, state: JsonState) -> Self {
        JsonWriter { out, st: state }
    }

    /// Where this writer stands.
    pub fn state(&self) -> JsonState {
        self.st
    }

    /// The output.
    pub fn out(&mut self) -> &mut dyn Out {
        self.out
    }

    fn newline(&mut self) {
        self.out.put(b"\n");
        for _ in 0..self.st.depth {
            self.out.put(b"  ");
        }
    }

    /// Starts a member or element: the comma and indentation before it.
    fn item(&mut self) {
        if self.st.depth > 0 {
            if !self.st.first {
                self.out.put(b",");
            }
            self.newline();
        }
        self.st.first = false;
    }

    fn key(&mut self, key: Option<&str>) {
        self.item();
        if let Some(k) = key {
            write_json_str(self.out, k.as_bytes());
            self.out.put(b": ");
        }
    }

    /// `{`, as the member `key` of an object or (`None`) an element or the top level.
    pub fn begin_object(&mut self, key: Option<&str>) {
        self.key(key);
        self.out.put(b"{");
        self.st.depth += 1;
        self.st.first = true;
    }

    /// `}`.
    pub fn end_object(&mut self) {
        self.close(b"}");
    }

    /// `[`, as the member `key` of an object or (`None`) an element or the top level.
    pub fn begin_array(&mut self, key: Option<&str>) {
        self.key(key);
        self.out.put(b"[");
        self.st.depth += 1;
        self.st.first = true;
    }

    /// `]`.
    pub fn end_array(&mut self) {
        self.close(b"]");
    }

    fn close(&mut self, bracket: &[u8]) {
        self.st.depth = self.st.depth.saturating_sub(1);
        if !self.st.first {
            self.newline();
        }
        self.out.put(bracket);
        self.st.first = false;
    }

    /// A number member.
    pub fn u64(&mut self, key: &str, v: u64) {
        self.key(Some(key));
        put_u64(self.out, v);
    }

    /// A float member (Go's shortest form; a non-finite value is written as 0).
    pub fn f64(&mut self, key: &str, v: f64) {
        self.key(Some(key));
        let v = if v.is_finite() { v } else { 0.0 };
        let _ = fmt::Write::write_fmt(&mut FmtOut(self.out), format_args!("{v}"));
    }

    /// A boolean member.
    pub fn bool(&mut self, key: &str, v: bool) {
        self.key(Some(key));
        self.out.put(if v { b"true" } else { b"false" });
    }

    /// A string member (bytes, escaped; see the type's docs).
    pub fn str(&mut self, key: &str, v: &[u8]) {
        self.key(Some(key));
        write_json_str(self.out, v);
    }

    /// A string element of an array.
    pub fn elem_str(&mut self, v: &[u8]) {
        self.key(None);
        write_json_str(self.out, v);
    }

    /// A string member whose text `f` writes (it must need no escaping: digits, dates).
    pub fn str_with(&mut self, key: &str, f: impl FnOnce(&mut dyn Out)) {
        self.key(Some(key));
        self.out.put(b"\"");
        f(self.out);
        self.out.put(b"\"");
    }
}

/// Writes `s` as a JSON string, escaped as Go's encoder does (see [`JsonWriter`]).
pub fn write_json_str(out: &mut dyn Out, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.put(b"\"");
    for chunk in s.utf8_chunks() {
        let valid = chunk.valid();
        let bytes = valid.as_bytes();
        let mut from = 0;
        for (i, c) in valid.char_indices() {
            let short: Option<&[u8]> = match c {
                '"' => Some(b"\\\""),
                '\\' => Some(b"\\\\"),
                '\n' => Some(b"\\n"),
                '\r' => Some(b"\\r"),
                '\t' => Some(b"\\t"),
                _ => None,
            };
            let unicode = matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') || c < ' ';
            if short.is_none() && !unicode {
                continue;
            }
            out.put(&bytes[from..i]);
            from = i + c.len_utf8();
            match short {
                Some(e) => out.put(e),
                None => {
                    let v = c as u32;
                    out.put(&[
                        b'\\',
                        b'u',
                        HEX[(v >> 12) as usize & 15],
                        HEX[(v >> 8) as usize & 15],
                        HEX[(v >> 4) as usize & 15],
                        HEX[v as usize & 15],
                    ]);
                }
            }
        }
        out.put(&bytes[from..]);
        for _ in chunk.invalid() {
            out.put(b"\\ufffd");
        }
    }
    out.put(b"\"");
}

/// Decimal digits.
pub fn put_u64(out: &mut dyn Out, v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put(&buf[i..]);
}

fn put_2(out: &mut dyn Out, v: u64) {
    out.put(&[b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8]);
}

// ---------------------------------------------------------------------------------------------
// Times and durations

const NANOS: u64 = 1_000_000_000;

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// A wall-clock time (nanoseconds since the Unix epoch) as Go's `time.Time` marshals it in
/// UTC: RFC 3339 with the fraction's trailing zeros cut (`2026-11-22T04:16:46.43317Z`).
pub fn write_rfc3339(out: &mut dyn Out, unix_nanos: u64) {
    let secs = unix_nanos / NANOS;
    let frac = unix_nanos % NANOS;
    let (y, m, d) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    put_u64(out, y);
    out.put(b"-");
    put_2(out, m);
    out.put(b"-");
    put_2(out, d);
    out.put(b"T");
    put_2(out, rem / 3600);
    out.put(b":");
    put_2(out, rem / 60 % 60);
    out.put(b":");
    put_2(out, rem % 60);
    if frac > 0 {
        let mut digits = [0u8; 9];
        let mut f = frac;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (f % 10) as u8;
            f /= 10;
        }
        let end = digits.iter().rposition(|&c| c != b'0').map_or(0, |i| i + 1);
        out.put(b".");
        out.put(&digits[..end]);
    }
    out.put(b"Z");
}

/// An HTTP `Date` (IMF-fixdate): `Sun, 22 Nov 2026 04:16:47 GMT`.
pub fn write_http_date(out: &mut dyn Out, unix_secs: u64) {
    const DAYS: [&[u8]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = unix_secs / 86_400;
    let (y, m, d) = civil_from_days(days);
    let rem = unix_secs % 86_400;
    out.put(DAYS[(days % 7) as usize]);
    out.put(b", ");
    put_2(out, d);
    out.put(b" ");
    out.put(MONTHS[(m - 1) as usize]);
    out.put(b" ");
    put_u64(out, y);
    out.put(b" ");
    put_2(out, rem / 3600);
    out.put(b":");
    put_2(out, rem / 60 % 60);
    out.put(b":");
    put_2(out, rem % 60);
    out.put(b" GMT");
}

/// A duration as Go's `time.Duration.String` writes it: `0s`, `850ns`, `548µs`, `1.5ms`,
/// `2m3.25s`, `1h0m0s`.
pub fn write_go_duration(out: &mut dyn Out, nanos: u64) {
    let mut buf = [0u8; 40];
    let mut w = buf.len();
    let mut u = nanos;
    if u < NANOS {
        if u == 0 {
            out.put(b"0s");
            return;
        }
        w -= 1;
        buf[w] = b's';
        let prec = if u < 1_000 {
            w -= 1;
            buf[w] = b'n';
            0
        } else if u < 1_000_000 {
            w -= 2;
            buf[w..w + 2].copy_from_slice("µ".as_bytes());
            3
        } else {
            w -= 1;
            buf[w] = b'm';
            6
        };
        (w, u) = fmt_frac(&mut buf, w, u, prec);
        w = fmt_int(&mut buf, w, u);
    } else {
        w -= 1;
        buf[w] = b's';
        (w, u) = fmt_frac(&mut buf, w, u, 9);
        w = fmt_int(&mut buf, w, u % 60);
        u /= 60;
        if u > 0 {
            w -= 1;
            buf[w] = b'm';
            w = fmt_int(&mut buf, w, u % 60);
            u /= 60;
            if u > 0 {
                w -= 1;
                buf[w] = b'h';
                w = fmt_int(&mut buf, w, u);
            }
        }
    }
    out.put(&buf[w..]);
}

/// Go's `fmtFrac`: the `prec` low digits of `v` as a fraction without trailing zeros.
fn fmt_frac(buf: &mut [u8], mut w: usize, mut v: u64, prec: u32) -> (usize, u64) {
    let mut print = false;
    for _ in 0..prec {
        let digit = v % 10;
        print = print || digit != 0;
        if print {
            w -= 1;
            buf[w] = b'0' + digit as u8;
        }
        v /= 10;
    }
    if print {
        w -= 1;
        buf[w] = b'.';
    }
    (w, v)
}

fn fmt_int(buf: &mut [u8], mut w: usize, mut v: u64) -> usize {
    if v == 0 {
        w -= 1;
        buf[w] = b'0';
    }
    while v > 0 {
        w -= 1;
        buf[w] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    w
}

/// nats-server's uptime form: `45s`, `3m5s`, `2h0m5s`, `1d2h3m4s`, `1y0d0h0m0s`.
pub fn write_uptime(out: &mut dyn Out, secs: u64) {
    let (mins, hours, days) = (secs / 60, secs / 3600, secs / 86_400);
    let years = days / 365;
    let parts: [(u64, &[u8]); 5] = [
        (years, b"y"),
        (days % 365, b"d"),
        (hours % 24, b"h"),
        (mins % 60, b"m"),
        (secs % 60, b"s"),
    ];
    let first = if years > 0 {
        0
    } else if days > 0 {
        1
    } else if hours > 0 {
        2
    } else if mins > 0 {
        3
    } else {
        4
    };
    for (v, unit) in &parts[first..] {
        put_u64(out, *v);
        out.put(unit);
    }
}

/// An IP address as text (`127.0.0.1`, `::1`).
fn write_ip(out: &mut dyn Out, ip: IpAddr) {
    let mut buf = [0u8; 48];
    let mut s = SliceOut::new(&mut buf);
    let _ = fmt::Write::write_fmt(&mut FmtOut(&mut s), format_args!("{ip}"));
    out.put(s.written());
}

// ---------------------------------------------------------------------------------------------
// Requests and answers

/// The paths counted in `/varz`'s `http_req_stats`, in the order Go prints a map (sorted).
const PATHS: [&str; 5] = ["/", "/connz", "/healthz", "/subsz", "/varz"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Page {
    Root,
    Varz,
    Connz,
    Subsz,
    Healthz,
    /// A plain-text error answer.
    Error(u16, &'static str),
    /// `400` for a query parameter nats-server could not decode.
    BadParam(Param),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subs {
    No,
    List,
    Detail,
}

/// A query parameter that did not parse: which, and the value (cut at 64 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Param {
    name: &'static str,
    boolean: bool,
    value: [u8; 64],
    len: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    HttpHead,
    /// A body written as one atom.
    Body,
    /// A list answer's JSON up to the list's `[`.
    ListHead,
    /// The next connection (`/connz`) or subscription (`/subsz`).
    Item,
    /// The next subscription of the connection being written (`/connz?subs=...`).
    SubItem,
    /// The end of that connection's list and object.
    ItemTail,
    /// `]` and `}`.
    ListTail,
    Done,
}

/// An answer being written: what, and how far (Copy, so an atom can be measured on a copy).
#[derive(Clone, Copy, Debug)]
struct Job {
    page: Page,
    head_only: bool,
    phase: Phase,
    json: JsonState,
    subs: Subs,
    offset: usize,
    limit: usize,
    /// Items skipped (for `offset`) and written (for `limit`).
    skipped: usize,
    emitted: usize,
    /// `num_connections`, fixed when the list begins.
    count: usize,
    /// The connection slot, and subscription index, of the next item.
    slot: usize,
    sub: usize,
    /// The `cid` of the connection whose subscriptions are being written.
    cid: u64,
}

impl Job {
    fn new(page: Page, head_only: bool) -> Job {
        Job {
            page,
            head_only,
            phase: Phase::HttpHead,
            json: JsonState::default(),
            subs: Subs::No,
            offset: 0,
            limit: DEFAULT_LIMIT,
            skipped: 0,
            emitted: 0,
            count: 0,
            slot: 0,
            sub: 0,
            cid: 0,
        }
    }
}

/// Values an atom shows that are read outside the pure render (so both passes agree).
#[derive(Clone, Copy)]
struct Extras {
    now_wall: u64,
    now: Instant,
    pending: usize,
    mem: Option<u64>,
}

/// One monitoring connection.
struct MonConn {
    conn: ConnId,
    parser: RequestParser,
    /// The request timer, then the linger timer.
    timer: Option<TimerId>,
    job: Option<Job>,
    /// The answer is whole in the slab.
    finished: bool,
    /// The peer sent its FIN.
    read_closed: bool,
}

/// Connections refused with `503` and waiting for their peer to close (at most this many;
/// beyond, they are closed at once).
const REFUSED_LINGER: usize = 4;

/// The monitoring side of a broker: its listener, its connections, its counters.
pub(super) struct Monitor {
    pub(super) listener: Option<ListenerId>,
    pub(super) port: u16,
    conns: [Option<MonConn>; MONITOR_CONNS],
    /// Refused connections lingering after their `503`, with their timers.
    refusing: [Option<(ConnId, Option<TimerId>)>; REFUSED_LINGER],
    requests: [u64; PATHS.len()],
    /// Monitoring connections refused because all [`MONITOR_CONNS`] were busy.
    pub(super) refused: u64,
}

/// A timer token naming `conn`; `bit` tells what the timer is for.
fn token_of(conn: ConnId, bit: u64) -> u64 {
    MONITOR_TOKEN | bit | (u64::from(conn.generation() & 0x0fff_ffff) << 32) | conn.index() as u64
}

fn token_names(token: u64, conn: ConnId) -> bool {
    conn.index() == (token & 0xffff_ffff) as usize
        && conn.generation() & 0x0fff_ffff == ((token >> 32) & 0x0fff_ffff) as u32
}

/// The token bit of a refused connection's linger timer.
const REFUSED_TOKEN: u64 = 1 << 59;

impl Monitor {
    pub(super) const fn new() -> Monitor {
        Monitor {
            listener: None,
            port: 0,
            conns: [const { None }; MONITOR_CONNS],
            refusing: [None; REFUSED_LINGER],
            requests: [0; PATHS.len()],
            refused: 0,
        }
    }

    fn find(&self, conn: ConnId) -> Option<usize> {
        self.conns
            .iter()
            .position(|m| m.as_ref().is_some_and(|m| m.conn == conn))
    }

    fn find_refused(&self, conn: ConnId) -> Option<usize> {
        self.refusing
            .iter()
            .position(|r| r.is_some_and(|(c, _)| c == conn))
    }

    /// Whether `conn` is a monitoring connection (refused ones included).
    pub(super) fn owns(&self, conn: ConnId) -> bool {
        self.find(conn).is_some() || self.find_refused(conn).is_some()
    }

    /// A connection accepted on the monitoring listener.
    pub(super) fn accept(&mut self, core: &Core<'_>, cx: &mut Context<'_, '_>, conn: ConnId) {
        let Some(i) = self.conns.iter().position(Option::is_none) else {
            self.refused += 1;
            let mut job = Job::new(Page::Error(503, "Service Unavailable"), false);
            // Written whole: the slab of a new connection is empty.
            let _ = pump_job(core, cx, conn, &mut job);
            // Answer, then wait for the peer's FIN (closing with its request unread would
            // reset the connection, and the peer could lose the answer), for a while.
            match self.refusing.iter().position(Option::is_none) {
                Some(r) => {
                    let timer = cx
                        .set_timer(REQUEST_TIMEOUT, None, token_of(conn, REFUSED_TOKEN))
                        .ok();
                    self.refusing[r] = Some((conn, timer));
                    let _ = cx.flush(conn);
                }
                None => cx.close(conn),
            }
            return;
        };
        let timer = cx.set_timer(REQUEST_TIMEOUT, None, token_of(conn, 0)).ok();
        self.conns[i] = Some(MonConn {
            conn,
            parser: RequestParser::new(),
            timer,
            job: None,
            finished: false,
            read_closed: false,
        });
    }

    /// Request bytes.
    pub(super) fn on_data(
        &mut self,
        core: &Core<'_>,
        cx: &mut Context<'_, '_>,
        conn: ConnId,
        lease: Lease<'_>,
    ) {
        let Some(i) = self.find(conn) else { return };
        let m = self.conns[i].as_mut().expect("found");
        if m.job.is_some() {
            return; // a body or a second request: ignored, the answer ends the connection
        }
        let (_, status) = m.parser.feed(lease.as_slice());
        drop(lease);
        let job = match status {
            Status::Partial => return,
            Status::Failed(e) => Job::new(error_page(e), false),
            Status::Done => {
                let job = route(&m.parser);
                if let Some(k) = PATHS.iter().position(|p| p.as_bytes() == m.parser.path()) {
                    self.requests[k] += 1;
                }
                job
            }
        };
        if let Some(t) = m.timer.take() {
            let _ = cx.cancel_timer(t);
        }
        m.job = Some(job);
        self.pump(core, cx, i);
    }

    /// The peer sent its FIN: close if nothing complete was asked or the answer is out; an
    /// answer under way goes on.
    pub(super) fn on_read_closed(&mut self, cx: &mut Context<'_, '_>, conn: ConnId) {
        if let Some(i) = self.find(conn) {
            let m = self.conns[i].as_mut().expect("found");
            m.read_closed = true;
            if m.job.is_none() || (m.finished && cx.staged(conn) == 0) {
                cx.close(conn);
            }
        } else if self.find_refused(conn).is_some() {
            cx.close(conn);
        }
    }

    /// The slab drained: go on with the answer, or end it.
    pub(super) fn on_flushed(&mut self, core: &Core<'_>, cx: &mut Context<'_, '_>, conn: ConnId) {
        if let Some(i) = self.find(conn) {
            if self.conns[i].as_ref().is_some_and(|m| m.finished) {
                self.linger(cx, i);
            } else {
                self.pump(core, cx, i);
            }
        } else if self.find_refused(conn).is_some() {
            let _ = cx.shutdown(conn, crate::sys::socket::Shutdown::Write);
        }
    }

    /// A timer fired: `408` if the head is still incomplete; the end of a linger: abort.
    pub(super) fn on_timer(&mut self, core: &Core<'_>, cx: &mut Context<'_, '_>, token: u64) {
        if token & REFUSED_TOKEN != 0 {
            if let Some(r) = self
                .refusing
                .iter()
                .position(|r| r.is_some_and(|(c, _)| token_names(token, c)))
                && let Some((conn, _)) = self.refusing[r].take()
            {
                cx.abort(conn);
            }
            return;
        }
        let Some(i) = self
            .conns
            .iter()
            .position(|m| m.as_ref().is_some_and(|m| token_names(token, m.conn)))
        else {
            return;
        };
        let m = self.conns[i].as_mut().expect("found");
        m.timer = None;
        if m.finished {
            cx.abort(m.conn);
        } else if m.job.is_none() {
            m.job = Some(Job::new(Page::Error(408, "Request Timeout"), false));
            self.pump(core, cx, i);
        }
    }

    /// A monitoring connection closed: its entry is free again.
    pub(super) fn on_close(&mut self, cx: &mut Context<'_, '_>, conn: ConnId) {
        if let Some(i) = self.find(conn) {
            if let Some(t) = self.conns[i].as_mut().and_then(|m| m.timer.take()) {
                let _ = cx.cancel_timer(t);
            }
            self.conns[i] = None;
        }
        if let Some(r) = self.find_refused(conn)
            && let Some((_, Some(t))) = self.refusing[r].take()
        {
            let _ = cx.cancel_timer(t);
        }
    }

    /// Writes as much of connection `i`'s answer as its slab takes; ends it when done.
    fn pump(&mut self, core: &Core<'_>, cx: &mut Context<'_, '_>, i: usize) {
        let Some(m) = self.conns[i].as_mut() else {
            return;
        };
        let Some(mut job) = m.job else { return };
        let conn = m.conn;
        let view = MonView {
            requests: &self.requests,
            http_port: self.port,
        };
        let done = pump_job_with(core, view, cx, conn, &mut job);
        let Some(m) = self.conns[i].as_mut() else {
            return;
        };
        m.job = Some(job);
        match done {
            Pumped::Done => {
                m.finished = true;
                if cx.staged(conn) == 0 {
                    self.linger(cx, i);
                } else {
                    let _ = cx.flush(conn);
                }
            }
            Pumped::Waiting => {
                let _ = cx.flush(conn);
            }
            Pumped::Stuck => cx.abort(conn),
        }
    }

    /// The whole answer was sent: send our FIN and wait (at most [`REQUEST_TIMEOUT`]) for
    /// the peer's, reading and dropping what it still sends, so the close does not reset the
    /// connection under the peer's reading of the answer (a "lingering close").
    fn linger(&mut self, cx: &mut Context<'_, '_>, i: usize) {
        let Some(m) = self.conns[i].as_mut() else {
            return;
        };
        if m.read_closed {
            cx.close(m.conn);
            return;
        }
        let _ = cx.shutdown(m.conn, crate::sys::socket::Shutdown::Write);
        if let Some(t) = m.timer.take() {
            let _ = cx.cancel_timer(t);
        }
        m.timer = cx
            .set_timer(REQUEST_TIMEOUT, None, token_of(m.conn, 0))
            .ok();
        if m.timer.is_none() {
            cx.close(m.conn);
        }
    }
}

/// What `/varz` shows of the monitor itself.
#[derive(Clone, Copy)]
struct MonView<'a> {
    requests: &'a [u64; PATHS.len()],
    http_port: u16,
}

impl MonView<'_> {
    /// Requests per path (those asked for at least once), as `http_req_stats` lists them.
    fn requests(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        PATHS
            .iter()
            .zip(self.requests.iter())
            .filter(|(_, n)| **n > 0)
            .map(|(p, n)| (*p, *n))
    }
}

enum Pumped {
    /// The whole answer is in the slab.
    Done,
    /// The slab is full: more after it drains.
    Waiting,
    /// An atom larger than the whole slab: the answer cannot go on.
    Stuck,
}

fn pump_job(core: &Core<'_>, cx: &mut Context<'_, '_>, conn: ConnId, job: &mut Job) -> Pumped {
    let none = [0u64; PATHS.len()];
    let view = MonView {
        requests: &none,
        http_port: 0,
    };
    pump_job_with(core, view, cx, conn, job)
}

fn pump_job_with(
    core: &Core<'_>,
    view: MonView<'_>,
    cx: &mut Context<'_, '_>,
    conn: ConnId,
    job: &mut Job,
) -> Pumped {
    loop {
        locate(core, job);
        if job.phase == Phase::Done {
            return Pumped::Done;
        }
        let extras = Extras {
            now_wall: core.wall_at(cx.now()),
            now: cx.now(),
            pending: match (job.phase, job.page) {
                (Phase::Item, Page::Connz) => core
                    .client_at(job.slot)
                    .map_or(0, |c| cx.staged(c.conn_id())),
                _ => 0,
            },
            mem: match job.page {
                Page::Varz if job.phase == Phase::Body => crate::sys::process::rss_bytes(),
                _ => None,
            },
        };
        let mut probe = *job;
        let mut count = Counter(0);
        atom(core, view, &mut probe, &extras, &mut count);
        if count.0 > cx.write_capacity(conn) {
            if cx.staged(conn) == 0 {
                return Pumped::Stuck;
            }
            return Pumped::Waiting;
        }
        let mut out = SlabOut::new(cx, conn);
        atom(core, view, job, &extras, &mut out);
        if !out.finish() {
            return Pumped::Stuck;
        }
    }
}

fn error_page(e: HttpError) -> Page {
    let (code, reason) = e.status();
    Page::Error(code, reason)
}

fn route(p: &RequestParser) -> Job {
    let head_only = match p.method() {
        Method::Get => false,
        Method::Head => true,
        Method::Other => return Job::new(Page::Error(405, "Method Not Allowed"), false),
    };
    let page = match p.path() {
        b"/" => Page::Root,
        b"/varz" => Page::Varz,
        b"/connz" => Page::Connz,
        b"/subsz" | b"/subscriptionsz" => Page::Subsz,
        b"/healthz" => Page::Healthz,
        _ => return Job::new(Page::Error(404, "Not Found"), head_only),
    };
    let mut job = Job::new(page, head_only);
    if matches!(page, Page::Connz | Page::Subsz) {
        let q = p.query();
        let parsed = (|| {
            job.subs = match http::query_param(q, b"subs") {
                None => Subs::No,
                Some(b"detail") => Subs::Detail,
                Some(v) => match parse_go_bool(v) {
                    Some(true) => Subs::List,
                    Some(false) => Subs::No,
                    None => return Err(param("subs", true, v)),
                },
            };
            if let Some(v) = http::query_param(q, b"offset") {
                let n = parse_go_int(v).ok_or_else(|| param("offset", false, v))?;
                job.offset = usize::try_from(n).unwrap_or(0);
            }
            if let Some(v) = http::query_param(q, b"limit") {
                let n = parse_go_int(v).ok_or_else(|| param("limit", false, v))?;
                job.limit = match usize::try_from(n) {
                    Ok(l) if l > 0 => l,
                    _ => DEFAULT_LIMIT,
                };
            }
            Ok(())
        })();
        if let Err(bad) = parsed {
            return Job::new(Page::BadParam(bad), head_only);
        }
    }
    job
}

fn param(name: &'static str, boolean: bool, v: &[u8]) -> Param {
    let mut value = [0u8; 64];
    let n = v.len().min(64);
    value[..n].copy_from_slice(&v[..n]);
    Param {
        name,
        boolean,
        value,
        len: n as u8,
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &[u8]) -> Option<bool> {
    match v {
        b"1" | b"t" | b"T" | b"TRUE" | b"true" | b"True" => Some(true),
        b"0" | b"f" | b"F" | b"FALSE" | b"false" | b"False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.Atoi` (64-bit): an optional sign and decimal digits.
fn parse_go_int(v: &[u8]) -> Option<i64> {
    let (neg, digits) = match v {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, v),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if neg { -n } else { n })
}

// ---------------------------------------------------------------------------------------------
// Atoms

/// Moves the cursor to the next item that exists (skipping `offset`, stopping at `limit`),
/// so the measuring and the writing pass render the same item.
fn locate(core: &Core<'_>, job: &mut Job) {
    match (job.phase, job.page) {
        (Phase::Item, Page::Connz) => loop {
            if job.emitted >= job.limit || job.slot >= core.client_slots() {
                job.phase = Phase::ListTail;
                return;
            }
            if core.client_at(job.slot).is_some() {
                if job.skipped < job.offset {
                    job.skipped += 1;
                } else {
                    return;
                }
            }
            job.slot += 1;
        },
        (Phase::SubItem, Page::Connz) => {
            let subs = core
                .client_at(job.slot)
                .filter(|c| c.cid() == job.cid)
                .map(|c| c.subscription_slots());
            match subs {
                Some(n) => {
                    while job.sub < n {
                        if core
                            .client_at(job.slot)
                            .is_some_and(|c| c.sub_used(job.sub))
                        {
                            return;
                        }
                        job.sub += 1;
                    }
                    job.phase = Phase::ItemTail;
                }
                None => job.phase = Phase::ItemTail,
            }
        }
        (Phase::Item, Page::Subsz) => loop {
            if job.emitted >= job.limit || job.slot >= core.client_slots() {
                job.phase = Phase::ListTail;
                return;
            }
            if let Some(c) = core.client_at(job.slot) {
                while job.sub < c.subscription_slots() {
                    if c.sub_used(job.sub) {
                        if job.skipped < job.offset {
                            job.skipped += 1;
                        } else {
                            return;
                        }
                    }
                    job.sub += 1;
                }
            }
            job.slot += 1;
            job.sub = 0;
        },
        _ => {}
    }
}

fn content_type(page: Page) -> &'static [u8] {
    match page {
        Page::Root => b"text/html; charset=utf-8",
        Page::Error(..) | Page::BadParam(_) => b"text/plain; charset=utf-8",
        _ => b"application/json",
    }
}

/// Renders the atom at the job's cursor into `out` and moves the cursor past it. Pure: the
/// same state renders the same bytes.
fn atom(core: &Core<'_>, view: MonView<'_>, job: &mut Job, x: &Extras, out: &mut dyn Out) {
    match job.phase {
        Phase::HttpHead => {
            let (code, reason): (u16, &[u8]) = match job.page {
                Page::Error(c, r) => (c, r.as_bytes()),
                Page::BadParam(_) => (400, b"Bad Request"),
                _ => (200, b"OK"),
            };
            out.put(b"HTTP/1.1 ");
            put_u64(out, u64::from(code));
            out.put(b" ");
            out.put(reason);
            out.put(b"\r\nContent-Type: ");
            out.put(content_type(job.page));
            out.put(b"\r\nDate: ");
            write_http_date(out, x.now_wall / NANOS);
            if code == 405 {
                out.put(b"\r\nAllow: GET, HEAD");
            }
            if matches!(job.page, Page::Error(..)) {
                out.put(b"\r\nX-Content-Type-Options: nosniff");
            }
            out.put(b"\r\nConnection: close\r\n\r\n");
            job.phase = match job.page {
                _ if job.head_only => Phase::Done,
                Page::Connz => Phase::ListHead,
                Page::Subsz if job.subs != Subs::No => Phase::ListHead,
                _ => Phase::Body,
            };
        }
        Phase::Body => {
            match job.page {
                Page::Healthz => out.put(b"{\"status\":\"ok\"}"),
                Page::Root => out.put(ROOT_PAGE),
                Page::Varz => varz(core, view, x, out),
                Page::Subsz => {
                    let mut w = JsonWriter::new(out);
                    w.begin_object(None);
                    subsz_stats(core, &mut w);
                    w.end_object();
                }
                Page::Error(404, _) => out.put(b"404 page not found\n"),
                Page::Error(code, reason) => {
                    put_u64(out, u64::from(code));
                    out.put(b" ");
                    out.put(reason.as_bytes());
                    out.put(b"\n");
                }
                Page::BadParam(p) => {
                    let (kind, func) = if p.boolean {
                        ("boolean", "strconv.ParseBool")
                    } else {
                        ("int", "strconv.Atoi")
                    };
                    let _ = fmt::Write::write_fmt(
                        &mut FmtOut(out),
                        format_args!("Error decoding {kind} for '{}': {func}: parsing \"", p.name),
                    );
                    out.put(&p.value[..usize::from(p.len)]);
                    out.put(b"\": invalid syntax\n");
                }
                Page::Connz => {}
            }
            job.phase = Phase::Done;
        }
        Phase::ListHead => {
            let mut w = JsonWriter::new(out);
            w.begin_object(None);
            let total = match job.page {
                Page::Connz => core.client_count(),
                _ => core.sublist_len(),
            };
            if job.page == Page::Subsz {
                w.str("server_id", core.config().server_id.as_bytes());
                w.str_with("now", |o| write_rfc3339(o, x.now_wall));
                subsz_stats(core, &mut w);
                w.u64("total", total as u64);
                w.u64("offset", job.offset as u64);
                w.u64("limit", job.limit as u64);
                w.begin_array(Some("subscriptions_list"));
            } else {
                job.count = job.limit.min(total.saturating_sub(job.offset));
                w.str("server_id", core.config().server_id.as_bytes());
                w.str_with("now", |o| write_rfc3339(o, x.now_wall));
                w.u64("num_connections", job.count as u64);
                w.u64("total", total as u64);
                w.u64("offset", job.offset as u64);
                w.u64("limit", job.limit as u64);
                w.begin_array(Some("connections"));
            }
            job.json = w.state();
            job.phase = Phase::Item;
            job.slot = 0;
            job.sub = 0;
        }
        Phase::Item => {
            let mut w = JsonWriter::resume(out, job.json);
            let Some(c) = core.client_at(job.slot) else {
                // locate() found it; nothing changes between locate and here.
                job.phase = Phase::ListTail;
                return;
            };
            if job.page == Page::Subsz {
                sub_object(core, c, job.sub, true, &mut w);
                job.json = w.state();
                job.emitted += 1;
                job.sub += 1;
                return;
            }
            conn_fields(core, c, x, &mut w);
            if job.subs != Subs::No && c.subscription_count() > 0 {
                w.begin_array(Some(if job.subs == Subs::Detail {
                    "subscriptions_list_detail"
                } else {
                    "subscriptions_list"
                }));
                job.phase = Phase::SubItem;
                job.cid = c.cid();
                job.sub = 0;
            } else {
                w.end_object();
                job.emitted += 1;
                job.slot += 1;
            }
            job.json = w.state();
        }
        Phase::SubItem => {
            let mut w = JsonWriter::resume(out, job.json);
            if let Some(c) = core.client_at(job.slot) {
                if job.subs == Subs::Detail {
                    sub_object(core, c, job.sub, false, &mut w);
                } else {
                    let mut buf = [0u8; MAX_CONTROL_LINE];
                    let n = c.sub_subject(core, job.sub, &mut buf).unwrap_or(0);
                    w.elem_str(&buf[..n]);
                }
            }
            job.json = w.state();
            job.sub += 1;
        }
        Phase::ItemTail => {
            let mut w = JsonWriter::resume(out, job.json);
            w.end_array();
            w.end_object();
            job.json = w.state();
            job.emitted += 1;
            job.slot += 1;
            job.sub = 0;
            job.phase = Phase::Item;
        }
        Phase::ListTail => {
            let mut w = JsonWriter::resume(out, job.json);
            w.end_array();
            w.end_object();
            job.json = w.state();
            job.phase = Phase::Done;
        }
        Phase::Done => {}
    }
}

const ROOT_PAGE: &[u8] = b"<html lang=\"en\">\n<head><title>ringlet static_broker</title></head>\n\
<body>\n<a href=\"./varz\">General</a><br/>\n<a href=\"./connz\">Connections</a><br/>\n\
<a href=\"./subsz\">Subscriptions</a><br/>\n<a href=\"./healthz\">Health</a><br/>\n</body>\n</html>\n";

fn varz(core: &Core<'_>, view: MonView<'_>, x: &Extras, out: &mut dyn Out) {
    let cfg = core.config();
    let stats = core.stats();
    let info = super::proto::Info::DEFAULT;
    let mut w = JsonWriter::new(out);
    w.begin_object(None);
    w.str("server_id", cfg.server_id.as_bytes());
    w.str("server_name", cfg.server_name.as_bytes());
    w.str("version", info.version.as_bytes());
    w.u64("proto", u64::from(info.proto));
    w.str("go", info.go.as_bytes());
    w.str("host", cfg.host.as_bytes());
    w.u64("port", u64::from(cfg.port));
    if cfg.auth_required() {
        w.bool("auth_required", true);
    }
    w.u64("max_connections", cfg.max_connections as u64);
    w.u64("ping_interval", cfg.ping_interval.as_nanos() as u64);
    w.u64("ping_max", u64::from(cfg.ping_max));
    w.str("http_host", cfg.host.as_bytes());
    w.u64("http_port", u64::from(view.http_port));
    w.str("http_base_path", b"");
    w.u64("https_port", 0);
    w.f64("auth_timeout", cfg.auth_timeout.as_secs_f64());
    w.u64("max_control_line", MAX_CONTROL_LINE as u64);
    w.u64("max_payload", u64::from(cfg.max_payload));
    w.u64("max_pending", cfg.max_pending as u64);
    for k in [
        "cluster",
        "gateway",
        "leaf",
        "mqtt",
        "websocket",
        "jetstream",
    ] {
        w.begin_object(Some(k));
        w.end_object();
    }
    w.u64("write_deadline", cfg.write_deadline.as_nanos() as u64);
    let start = core.wall_at(core.started());
    w.str_with("start", |o| write_rfc3339(o, start));
    w.str_with("now", |o| write_rfc3339(o, x.now_wall));
    let up = x.now.saturating_duration_since(core.started()).as_secs();
    w.str_with("uptime", |o| write_uptime(o, up));
    w.u64("mem", x.mem.unwrap_or(0));
    w.u64("connections", core.client_count() as u64);
    w.u64("total_connections", stats.total_connections);
    w.u64("routes", 0);
    w.u64("remotes", 0);
    w.u64("leafnodes", 0);
    w.u64("in_msgs", stats.in_msgs);
    w.u64("out_msgs", stats.out_msgs);
    w.u64("in_bytes", stats.in_bytes);
    w.u64("out_bytes", stats.out_bytes);
    w.u64("slow_consumers", stats.slow_consumers);
    w.u64("subscriptions", core.sublist_len() as u64);
    w.begin_object(Some("http_req_stats"));
    for (path, n) in view.requests() {
        w.u64(path, n);
    }
    w.end_object();
    w.end_object();
}

fn subsz_stats(core: &Core<'_>, w: &mut JsonWriter<'_>) {
    let s = core.sublist_stats();
    let (fan_max, fan_avg) = core.fanout();
    w.u64("num_subscriptions", s.subscriptions as u64);
    w.u64("num_cache", s.cache_lines as u64);
    w.u64("num_inserts", s.inserts);
    w.u64("num_removes", s.removes);
    w.u64("num_matches", s.matches);
    let rate = if s.matches == 0 {
        0.0
    } else {
        s.cache_hits as f64 / s.matches as f64
    };
    w.f64("cache_hit_rate", rate);
    w.u64("max_fanout", fan_max);
    w.f64("avg_fanout", fan_avg);
}

fn conn_fields(core: &Core<'_>, c: ClientView<'_>, x: &Extras, w: &mut JsonWriter<'_>) {
    w.begin_object(None);
    w.u64("cid", c.cid());
    w.str("kind", b"Client");
    w.str("type", b"nats");
    if let Some(peer) = c.peer() {
        w.str_with("ip", |o| write_ip(o, peer.ip()));
        w.u64("port", u64::from(peer.port()));
    }
    let start = core.wall_at(c.started());
    let last = core.wall_at(c.last_activity());
    w.str_with("start", |o| write_rfc3339(o, start));
    w.str_with("last_activity", |o| write_rfc3339(o, last));
    let rtt = c.rtt_nanos();
    w.str_with("rtt", |o| write_go_duration(o, rtt));
    let up = x.now.saturating_duration_since(c.started()).as_secs();
    let idle = x.now.saturating_duration_since(c.last_activity()).as_secs();
    w.str_with("uptime", |o| write_uptime(o, up));
    w.str_with("idle", |o| write_uptime(o, idle));
    w.u64("pending_bytes", x.pending as u64);
    let (in_msgs, out_msgs, in_bytes, out_bytes) = c.counters();
    w.u64("in_msgs", in_msgs);
    w.u64("out_msgs", out_msgs);
    w.u64("in_bytes", in_bytes);
    w.u64("out_bytes", out_bytes);
    w.u64("subscriptions", c.subscription_count() as u64);
    let opts = c.options();
    for (k, v) in [
        ("name", opts.name()),
        ("lang", opts.lang()),
        ("version", opts.version()),
    ] {
        if !v.is_empty() {
            w.str(k, v.as_bytes());
        }
    }
}

/// One subscription as `/subsz` (`account` first) or `/connz?subs=detail` lists it.
fn sub_object(core: &Core<'_>, c: ClientView<'_>, i: usize, account: bool, w: &mut JsonWriter<'_>) {
    let mut subject = [0u8; MAX_CONTROL_LINE];
    let mut queue = [0u8; MAX_CONTROL_LINE];
    let n = c.sub_subject(core, i, &mut subject).unwrap_or(0);
    let q = c.sub_queue(core, i, &mut queue).unwrap_or(0);
    let (sid, msgs, max) = c.sub_facts(i);
    w.begin_object(None);
    if account {
        w.str("account", b"$G");
    }
    w.str("subject", &subject[..n]);
    if q > 0 {
        w.str("qgroup", &queue[..q]);
    }
    w.str("sid", sid);
    w.u64("msgs", msgs);
    if max > 0 {
        w.u64("max", max);
    }
    w.u64("cid", c.cid());
    w.end_object();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;

    fn text(f: impl FnOnce(&mut dyn Out)) -> String {
        let mut buf = std::vec![0u8; 4096];
        let mut out = SliceOut::new(&mut buf);
        f(&mut out);
        assert!(!out.overflowed());
        String::from_utf8(out.written().to_vec()).unwrap()
    }

    #[test]
    fn json_layout_is_gos() {
        let s = text(|o| {
            let mut w = JsonWriter::new(o);
            w.begin_object(None);
            w.str("a", b"x");
            w.begin_object(Some("empty"));
            w.end_object();
            w.begin_array(Some("list"));
            w.elem_str(b"one");
            w.begin_object(None);
            w.u64("n", 1);
            w.bool("b", false);
            w.f64("f", 0.75);
            w.f64("z", 0.0);
            w.f64("nan", f64::NAN);
            w.end_object();
            w.end_array();
            w.end_object();
        });
        assert_eq!(
            s,
            "{\n  \"a\": \"x\",\n  \"empty\": {},\n  \"list\": [\n    \"one\",\n    {\n      \
             \"n\": 1,\n      \"b\": false,\n      \"f\": 0.75,\n      \"z\": 0,\n      \
             \"nan\": 0\n    }\n  ]\n}"
        );
    }

    #[test]
    fn json_state_resumes_across_pieces() {
        let whole = text(|o| {
            let mut w = JsonWriter::new(o);
            w.begin_object(None);
            w.begin_array(Some("l"));
            w.elem_str(b"a");
            w.elem_str(b"b");
            w.end_array();
            w.end_object();
        });
        let mut st = JsonState::default();
        let mut pieces = String::new();
        for step in 0..4 {
            pieces += &text(|o| {
                let mut w = JsonWriter::resume(o, st);
                match step {
                    0 => {
                        w.begin_object(None);
                        w.begin_array(Some("l"));
                    }
                    1 => w.elem_str(b"a"),
                    2 => w.elem_str(b"b"),
                    _ => {
                        w.end_array();
                        w.end_object();
                    }
                }
                st = w.state();
            });
        }
        assert_eq!(pieces, whole);
    }

    #[test]
    fn strings_escape_as_go_does() {
        let s =
            text(|o| write_json_str(o, b"a\"b\\c\nd\re\tf<g>h&i\x01j\xe2\x80\xa8k\xffl\xc3\xa9"));
        assert_eq!(
            s,
            "\"a\\\"b\\\\c\\nd\\re\\tf\\u003cg\\u003eh\\u0026i\\u0001j\\u2028k\\ufffdlé\""
        );
        // A truncated sequence: one \ufffd per byte, as Go's decoder sees them.
        assert_eq!(
            text(|o| write_json_str(o, b"\xe2\x82")),
            "\"\\ufffd\\ufffd\""
        );
        assert_eq!(text(|o| write_json_str(o, b"")), "\"\"");
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(text(|o| write_rfc3339(o, 0)), "1970-01-01T00:00:00Z");
        // 2026-11-22T04:16:46.433170035Z, from nats-server's own /varz.
        let t = 1_795_321_006_433_170_035;
        assert_eq!(
            text(|o| write_rfc3339(o, t)),
            "2026-11-22T04:16:46.433170035Z"
        );
        assert_eq!(
            text(|o| write_rfc3339(o, 951_782_400 * NANOS + 500_000_000)),
            "2000-02-29T00:00:00.5Z"
        );
        assert_eq!(
            text(|o| write_http_date(o, 1_795_321_007)),
            "Sun, 22 Nov 2026 04:16:47 GMT"
        );
        assert_eq!(
            text(|o| write_http_date(o, 0)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
        for (ns, want) in [
            (0, "0s"),
            (850, "850ns"),
            (548_000, "548µs"),
            (548_123, "548.123µs"),
            (1_500_000, "1.5ms"),
            (1_000_000_000, "1s"),
            (123_250_000_000, "2m3.25s"),
            (3_600_000_000_000, "1h0m0s"),
            (120_000_000_000, "2m0s"),
        ] {
            assert_eq!(text(|o| write_go_duration(o, ns)), want);
        }
        for (s, want) in [
            (0, "0s"),
            (45, "45s"),
            (185, "3m5s"),
            (7205, "2h0m5s"),
            (93_784, "1d2h3m4s"),
            (365 * 86_400, "1y0d0h0m0s"),
        ] {
            assert_eq!(text(|o| write_uptime(o, s)), want);
        }
    }

    #[test]
    fn go_number_parsing() {
        assert_eq!(parse_go_int(b"12"), Some(12));
        assert_eq!(parse_go_int(b"-5"), Some(-5));
        assert_eq!(parse_go_int(b"+5"), Some(5));
        for bad in [&b""[..], b"-", b"1x", b"99999999999999999999", b" 1"] {
            assert_eq!(parse_go_int(bad), None);
        }
        assert_eq!(parse_go_bool(b"true"), Some(true));
        assert_eq!(parse_go_bool(b"F"), Some(false));
        assert_eq!(parse_go_bool(b"yes"), None);
    }

    fn routed(req: &[u8]) -> Job {
        let mut p = RequestParser::new();
        assert_eq!(p.feed(req).1, Status::Done);
        route(&p)
    }

    #[test]
    fn routing_and_parameters() {
        let j = routed(b"GET /connz?subs=1&offset=2&limit=3 HTTP/1.1\r\n\r\n");
        assert_eq!(
            (j.page, j.subs, j.offset, j.limit, j.head_only),
            (Page::Connz, Subs::List, 2, 3, false)
        );
        let j = routed(b"HEAD /connz?subs=detail&offset=-1&limit=0 HTTP/1.1\r\n\r\n");
        assert_eq!(
            (j.subs, j.offset, j.limit, j.head_only),
            (Subs::Detail, 0, DEFAULT_LIMIT, true)
        );
        assert_eq!(
            routed(b"GET /subscriptionsz HTTP/1.1\r\n\r\n").page,
            Page::Subsz
        );
        assert_eq!(
            routed(b"POST /varz HTTP/1.1\r\n\r\n").page,
            Page::Error(405, "Method Not Allowed")
        );
        assert_eq!(
            routed(b"GET /varz/ HTTP/1.1\r\n\r\n").page,
            Page::Error(404, "Not Found")
        );
        let Page::BadParam(p) = routed(b"GET /connz?offset=abc HTTP/1.1\r\n\r\n").page else {
            panic!("not a bad parameter");
        };
        assert_eq!(
            (p.name, &p.value[..usize::from(p.len)]),
            ("offset", &b"abc"[..])
        );
        let Page::BadParam(p) = routed(b"GET /subsz?subs=xyz HTTP/1.1\r\n\r\n").page else {
            panic!("not a bad parameter");
        };
        assert!(p.boolean);
        // Parameters of other pages are not looked at.
        assert_eq!(
            routed(b"GET /varz?offset=x HTTP/1.1\r\n\r\n").page,
            Page::Varz
        );
    }

    #[test]
    fn slice_out_reports_overflow() {
        let mut buf = [0u8; 4];
        let mut o = SliceOut::new(&mut buf);
        o.put(b"abc");
        assert!(!o.overflowed());
        o.put(b"de");
        assert!(o.overflowed());
        assert_eq!(o.written(), b"abcd");
        let mut c = Counter(0);
        c.put(b"12345");
        assert_eq!(c.0, 5);
    }
}
