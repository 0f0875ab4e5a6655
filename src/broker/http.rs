//! A tiny sans-IO HTTP/1.1 request-head parser, for the monitoring port.
//!
//! [`RequestParser`] takes the bytes of one request in pieces of any size (resumable at every
//! byte boundary) and reports when the head (request line and headers, up to the empty line)
//! is complete. It keeps only what a monitoring endpoint needs: the method
//! ([`Method::Get`], [`Method::Head`] or another valid token) and the request target (path and
//! query, at most [`MAX_TARGET`] bytes). Header lines are checked for shape and skipped; a
//! body is never read (the server answers and closes: `Connection: close`).
//!
//! # Limits and errors
//!
//! Every malformed or oversized head is an [`HttpError`] with the status to answer, never a
//! panic:
//!
//! - a method longer than [`MAX_METHOD`] bytes or not a token, a target that does not start
//!   with `/` or holds a byte outside `0x21..=0x7e`, a version that is not `HTTP/d.d`, a header
//!   line without a colon, with a name that is not a token, with a control byte, or folded
//!   (starting with a space): `400 Bad Request`;
//! - a target longer than [`MAX_TARGET`]: `414 URI Too Long`;
//! - a head (request line and headers) longer than [`MAX_HEAD`]: `431 Request Header Fields
//!   Too Large`;
//! - a version other than HTTP/1.0 or HTTP/1.1: `505 HTTP Version Not Supported`.
//!
//! Lines may end in `\r\n` or a bare `\n` (as Go's server accepts); a `\r` anywhere else is an
//! error. Empty lines before the request line are skipped (RFC 9112, 2.2), up to the head
//! limit.
//!
//! ```
//! use ringlet::broker::http::{Method, RequestParser, Status};
//!
//! let mut p = RequestParser::new();
//! let (used, st) = p.feed(b"GET /connz?subs=1 HTTP/1.1\r\nHost: x\r\n");
//! assert_eq!((used, st), (37, Status::Partial));
//! let (_, st) = p.feed(b"\r\n");
//! assert_eq!(st, Status::Done);
//! assert_eq!(p.method(), Method::Get);
//! assert_eq!((p.path(), p.query()), (&b"/connz"[..], &b"subs=1"[..]));
//! ```

use core::fmt;

/// The longest method token accepted.
pub const MAX_METHOD: usize = 16;
/// The longest request target (path and query) kept.
pub const MAX_TARGET: usize = 512;
/// The longest request head (request line, headers and line ends) accepted.
pub const MAX_HEAD: usize = 8192;

/// The request method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: the answer is the head of what GET would answer.
    Head,
    /// Any other valid method token (answered `405 Method Not Allowed`).
    Other,
}

/// Why a request head was refused; [`HttpError::status`] is the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpError {
    /// Malformed: `400 Bad Request`.
    BadRequest,
    /// The target is longer than [`MAX_TARGET`]: `414 URI Too Long`.
    UriTooLong,
    /// The head is longer than [`MAX_HEAD`]: `431 Request Header Fields Too Large`.
    HeadTooLarge,
    /// Not HTTP/1.0 or HTTP/1.1: `505 HTTP Version Not Supported`.
    VersionNotSupported,
}

impl HttpError {
    /// The status line's code and reason.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            HttpError::BadRequest => (400, "Bad Request"),
            HttpError::UriTooLong => (414, "URI Too Long"),
            HttpError::HeadTooLarge => (431, "Request Header Fields Too Large"),
            HttpError::VersionNotSupported => (505, "HTTP Version Not Supported"),
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, reason) = self.status();
        write!(f, "{code} {reason}")
    }
}

impl core::error::Error for HttpError {}

/// Where [`RequestParser::feed`] left off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// The head is not complete: feed more.
    Partial,
    /// The head is complete (the bytes after it were not used).
    Done,
    /// The head is malformed or too large; every later feed reports the same.
    Failed(HttpError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the method (empty lines are skipped here).
    Start,
    Method,
    Target,
    /// After the target: `HTTP/`, then major, `.`, minor.
    Version(u8),
    /// After the version: `\r` or `\n`.
    LineEnd,
    /// A `\r` was seen; `\n` must follow. The flag says whether it ends the head.
    Cr(bool),
    /// At the start of a header line (or the empty line).
    HeaderStart,
    /// In a header name.
    HeaderName,
    /// In a header value.
    HeaderValue,
    Done,
    Failed(HttpError),
}

/// The request-head parser. See the [module docs](self).
#[derive(Clone)]
pub struct RequestParser {
    state: State,
    method: [u8; MAX_METHOD],
    method_len: u8,
    target: [u8; MAX_TARGET],
    target_len: u16,
    version: [u8; 2],
    head_len: usize,
}

impl Default for RequestParser {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RequestParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestParser")
            .field("state", &self.state)
            .field("method", &self.method())
            .field("target", &self.target())
            .field("head_len", &self.head_len)
            .finish()
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl RequestParser {
    /// A parser at the start of a request.
    pub const fn new() -> Self {
        RequestParser {
            state: State::Start,
            method: [0; MAX_METHOD],
            method_len: 0,
            target: [0; MAX_TARGET],
            target_len: 0,
            version: [0; 2],
            head_len: 0,
        }
    }

    /// Back to the start of a request.
    pub fn reset(&mut self) {
        self.state = State::Start;
        self.method_len = 0;
        self.target_len = 0;
        self.version = [0; 2];
        self.head_len = 0;
    }

    /// Parses `input`, the next bytes of the request. Returns how many bytes were used (all
    /// of them unless the head ended inside `input`) and where the head stands.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Status) {
        for (i, &b) in input.iter().enumerate() {
            match self.state {
                State::Done => return (i, Status::Done),
                State::Failed(e) => return (i, Status::Failed(e)),
                _ => {}
            }
            self.head_len += 1;
            if self.head_len > MAX_HEAD {
                self.state = State::Failed(HttpError::HeadTooLarge);
                return (i + 1, Status::Failed(HttpError::HeadTooLarge));
            }
            self.state = self.step(b);
        }
        (input.len(), self.status())
    }

    /// Where the head stands.
    pub fn status(&self) -> Status {
        match self.state {
            State::Done => Status::Done,
            State::Failed(e) => Status::Failed(e),
            _ => Status::Partial,
        }
    }

    fn step(&mut self, b: u8) -> State {
        use State::*;
        let bad = Failed(HttpError::BadRequest);
        match self.state {
            Start => match b {
                b'\r' => Cr(false),
                b'\n' => Start,
                _ if is_tchar(b) => {
                    self.method[0] = b;
                    self.method_len = 1;
                    Method
                }
                _ => bad,
            },
            Method => match b {
                b' ' => Target,
                _ if is_tchar(b) && usize::from(self.method_len) < MAX_METHOD => {
                    self.method[usize::from(self.method_len)] = b;
                    self.method_len += 1;
                    Method
                }
                _ => bad,
            },
            Target => match b {
                b' ' if self.target_len > 0 => Version(0),
                0x21..=0x7e => {
                    if self.target_len == 0 && b != b'/' {
                        return bad;
                    }
                    let n = usize::from(self.target_len);
                    if n == MAX_TARGET {
                        return Failed(HttpError::UriTooLong);
                    }
                    self.target[n] = b;
                    self.target_len += 1;
                    Target
                }
                _ => bad,
            },
            Version(k) => {
                // "HTTP/" then digit '.' digit.
                let ok = match k {
                    0..=4 => b == b"HTTP/"[usize::from(k)],
                    5 | 7 => b.is_ascii_digit(),
                    6 => b == b'.',
                    _ => false,
                };
                if !ok {
                    return bad;
                }
                if k == 5 {
                    self.version[0] = b;
                } else if k == 7 {
                    self.version[1] = b;
                    return LineEnd;
                }
                Version(k + 1)
            }
            LineEnd => {
                let next = match b {
                    b'\r' => Cr(false),
                    b'\n' => HeaderStart,
                    _ => return bad,
                };
                if self.version != *b"11" && self.version != *b"10" {
                    return Failed(HttpError::VersionNotSupported);
                }
                next
            }
            Cr(end) => match (b, self.method_len) {
                (b'\n', 0) => Start,
                (b'\n', _) if end => Done,
                (b'\n', _) => HeaderStart,
                _ => bad,
            },
            HeaderStart => match b {
                b'\r' => Cr(true),
                b'\n' => Done,
                _ if is_tchar(b) => HeaderName,
                // A folded line (obs-fold) or anything else.
                _ => bad,
            },
            HeaderName => match b {
                b':' => HeaderValue,
                _ if is_tchar(b) => HeaderName,
                _ => bad,
            },
            HeaderValue => match b {
                b'\r' => Cr(false),
                b'\n' => HeaderStart,
                b'\t' | 0x20..=0x7e | 0x80..=0xff => HeaderValue,
                _ => bad,
            },
            Done | Failed(_) => self.state,
        }
    }

    /// The method (meaningful once the head is [`Status::Done`]).
    pub fn method(&self) -> Method {
        match &self.method[..usize::from(self.method_len)] {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            _ => Method::Other,
        }
    }

    /// The request target as sent: path and query.
    pub fn target(&self) -> &[u8] {
        &self.target[..usize::from(self.target_len)]
    }

    /// The path: the target up to `?` (or `#`).
    pub fn path(&self) -> &[u8] {
        let t = self.target();
        let end = t.iter().position(|&b| b == b'?' || b == b'#');
        &t[..end.unwrap_or(t.len())]
    }

    /// The query: the target after `?`, up to `#` (empty when there is none).
    pub fn query(&self) -> &[u8] {
        let t = self.target();
        let Some(q) = t.iter().position(|&b| b == b'?') else {
            return &[];
        };
        let rest = &t[q + 1..];
        let end = rest.iter().position(|&b| b == b'#');
        &rest[..end.unwrap_or(rest.len())]
    }

    /// Bytes of the head parsed so far.
    pub fn head_len(&self) -> usize {
        self.head_len
    }
}

/// The value of the first `name=value` pair named `name` in a query (`a=1&b=2`); a pair
/// without `=` has an empty value. Values are returned as sent (not percent-decoded).
pub fn query_param<'q>(query: &'q [u8], name: &[u8]) -> Option<&'q [u8]> {
    query
        .split(|&b| b == b'&')
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        })
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Fuzz entry point (fuzz/fuzz_targets/http.rs): parses `data` whole and split at two points
/// taken from its first bytes, and checks that the results agree and the limits hold. Panics
/// on a violation.
pub fn fuzz_http(data: &[u8]) {
    let mut whole = RequestParser::new();
    let (used, st) = whole.feed(data);
    assert!(used <= data.len());
    if st == Status::Partial {
        assert_eq!(used, data.len());
    }
    assert!(whole.head_len() <= MAX_HEAD);
    assert!(whole.target().len() <= MAX_TARGET);
    if st == Status::Done {
        assert!(whole.target().first() == Some(&b'/'));
        assert!(whole.path().len() + whole.query().len() <= whole.target().len());
    }
    let (a, b) = match data {
        [x, y, ..] => (usize::from(*x), usize::from(*y)),
        _ => (0, 0),
    };
    let cut1 = a.min(data.len());
    let cut2 = (cut1 + b).min(data.len());
    let mut split = RequestParser::new();
    let mut total = 0;
    let mut last = Status::Partial;
    for piece in [&data[..cut1], &data[cut1..cut2], &data[cut2..]] {
        let (n, s) = split.feed(piece);
        total += n;
        last = s;
        if s != Status::Partial {
            break;
        }
    }
    assert_eq!(last, st);
    assert_eq!(total, used);
    assert_eq!(split.target(), whole.target());
    assert_eq!(split.method(), whole.method());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn parse(input: &[u8]) -> (RequestParser, usize, Status) {
        let mut p = RequestParser::new();
        let (n, s) = p.feed(input);
        (p, n, s)
    }

    #[test]
    fn simple_get_and_head() {
        let (p, n, s) = parse(b"GET /varz HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
        assert_eq!(s, Status::Done);
        assert_eq!(n, 52);
        assert_eq!(p.method(), Method::Get);
        assert_eq!(p.path(), b"/varz");
        assert_eq!(p.query(), b"");
        let (p, _, s) = parse(b"HEAD /healthz HTTP/1.0\n\n");
        assert_eq!(
            (s, p.method(), p.path()),
            (Status::Done, Method::Head, &b"/healthz"[..])
        );
        let (p, _, s) = parse(b"DELETE /x HTTP/1.1\r\n\r\n");
        assert_eq!((s, p.method()), (Status::Done, Method::Other));
    }

    #[test]
    fn bytes_after_the_head_are_not_used() {
        let (_, n, s) = parse(b"GET / HTTP/1.1\r\n\r\nGET /again HTTP/1.1\r\n\r\n");
        assert_eq!((n, s), (18, Status::Done));
        let mut p = RequestParser::new();
        p.feed(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(p.feed(b"more"), (0, Status::Done));
    }

    #[test]
    fn query_and_params() {
        let (p, _, _) = parse(b"GET /connz?subs=1&offset=2&limit=3&flag#frag HTTP/1.1\r\n\r\n");
        assert_eq!(p.path(), b"/connz");
        assert_eq!(p.query(), b"subs=1&offset=2&limit=3&flag");
        let q = p.query();
        assert_eq!(query_param(q, b"subs"), Some(&b"1"[..]));
        assert_eq!(query_param(q, b"offset"), Some(&b"2"[..]));
        assert_eq!(query_param(q, b"limit"), Some(&b"3"[..]));
        assert_eq!(query_param(q, b"flag"), Some(&b""[..]));
        assert_eq!(query_param(q, b"nope"), None);
        assert_eq!(query_param(b"", b"x"), None);
        assert_eq!(query_param(b"a=1&a=2", b"a"), Some(&b"1"[..]));
    }

    #[test]
    fn every_split_gives_the_same_result() {
        let req: &[u8] =
            b"\r\nGET /subsz?subs=1 HTTP/1.1\r\nUser-Agent: curl/8\r\nX: a\tb\r\n\r\nrest";
        let (whole, n, s) = parse(req);
        assert_eq!(s, Status::Done);
        for i in 0..=req.len() {
            for j in i..=req.len() {
                let mut p = RequestParser::new();
                let mut used = 0;
                let mut st = Status::Partial;
                for piece in [&req[..i], &req[i..j], &req[j..]] {
                    let (k, t) = p.feed(piece);
                    used += k;
                    st = t;
                    if t != Status::Partial {
                        break;
                    }
                }
                assert_eq!((used, st), (n, s), "split {i} {j}");
                assert_eq!(p.target(), whole.target());
            }
        }
    }

    #[test]
    fn hostile_heads_are_refused() {
        let bad = HttpError::BadRequest;
        for (input, want) in [
            (&b" GET / HTTP/1.1\r\n\r\n"[..], bad),
            (b"GET  / HTTP/1.1\r\n\r\n", bad),
            (b"GET x HTTP/1.1\r\n\r\n", bad),
            (b"GET / HTTP/1.1 \r\n\r\n", bad),
            (b"GET / HTTQ/1.1\r\n\r\n", bad),
            (b"GET / HTTP/1x1\r\n\r\n", bad),
            (b"GET /\x01 HTTP/1.1\r\n\r\n", bad),
            (b"GET /\xff HTTP/1.1\r\n\r\n", bad),
            (b"G(T / HTTP/1.1\r\n\r\n", bad),
            (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", bad),
            (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", bad),
            (b"GET / HTTP/1.1\r\n: empty name\r\n\r\n", bad),
            (b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", bad),
            (b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n", bad),
            (b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", bad),
            (b"GET / HTTP/1.1\rX", bad),
            (b"GET / HTTP/2.0\r\n\r\n", HttpError::VersionNotSupported),
            (b"GET / HTTP/0.9\r\n\r\n", HttpError::VersionNotSupported),
        ] {
            let (_, _, s) = parse(input);
            assert_eq!(s, Status::Failed(want), "{:?}", core::str::from_utf8(input));
        }
        // A long method is not a token we keep.
        let mut m = [b'A'; MAX_METHOD + 1].to_vec();
        m.extend_from_slice(b" / HTTP/1.1\r\n\r\n");
        assert_eq!(parse(&m).2, Status::Failed(bad));
        // Failure sticks.
        let mut p = RequestParser::new();
        p.feed(b"GET x");
        assert_eq!(p.feed(b" HTTP/1.1\r\n\r\n"), (0, Status::Failed(bad)));
    }

    #[test]
    fn limits_are_answers_not_panics() {
        // The target limit: exactly MAX_TARGET passes, one more is 414.
        let mut ok = b"GET /".to_vec();
        ok.extend(core::iter::repeat_n(b'a', MAX_TARGET - 1));
        ok.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        let (p, _, s) = parse(&ok);
        assert_eq!((s, p.target().len()), (Status::Done, MAX_TARGET));
        let mut long = b"GET /".to_vec();
        long.extend(core::iter::repeat_n(b'a', MAX_TARGET));
        long.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        assert_eq!(parse(&long).2, Status::Failed(HttpError::UriTooLong));
        // The head limit: a header that never ends.
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.extend(core::iter::repeat_n(b'v', MAX_HEAD));
        let (p, n, s) = parse(&head);
        assert_eq!(s, Status::Failed(HttpError::HeadTooLarge));
        assert_eq!(n, MAX_HEAD + 1);
        assert_eq!(p.head_len(), MAX_HEAD + 1);
        // Endless empty lines before the request line too.
        let blank: Vec<u8> = core::iter::repeat_n(b'\n', MAX_HEAD + 10).collect();
        assert_eq!(parse(&blank).2, Status::Failed(HttpError::HeadTooLarge));
    }

    #[test]
    fn fuzz_entry_accepts_what_the_tests_use() {
        fuzz_http(b"GET /connz?subs=1 HTTP/1.1\r\n\r\n");
        fuzz_http(b"\x05\x07GET / HTTP/1.1\r\n");
        fuzz_http(b"");
        fuzz_http(b"\xff");
        let mut rng = 0x1234_5678_9abc_def0u64;
        let alphabet = b"GET /HTP1.0\r\n: ?&=x\t";
        for _ in 0..2000 {
            let len = (rng % 64) as usize;
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                v.push(alphabet[(rng % alphabet.len() as u64) as usize]);
            }
            fuzz_http(&v);
        }
    }
}
