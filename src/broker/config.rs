//! nats-server's configuration file format, the common subset, parsed without allocation.
//!
//! [`FileConfig::parse`] reads the whole text of a file (the caller reads it: this module does
//! no I/O) into a [`FileConfig`]: one `Option` per setting, `None` when the file does not set it
//! (or sets it to 0, which nats-server treats as "use the default"), so a program can layer its
//! defaults, the file and then command-line flags, as nats-server does. It never panics, never
//! allocates, and stops at the first error with its line and column ([`ConfigError`]).
//!
//! # Settings
//!
//! Keys are case-insensitive, as in nats-server.
//!
//! | key | value | field |
//! |---|---|---|
//! | `listen` | `"host:port"`, `":port"` or a port | [`host`](FileConfig::host), [`port`](FileConfig::port) |
//! | `host`, `net` | host | [`host`](FileConfig::host) |
//! | `port` | integer, `-1` for a random port | [`port`](FileConfig::port) |
//! | `http` | `"host:port"` or a port | [`http_host`](FileConfig::http_host), [`http_port`](FileConfig::http_port) |
//! | `http_port`, `monitor_port` | integer, `-1` for a random port | [`http_port`](FileConfig::http_port) |
//! | `server_name` | string | [`server_name`](FileConfig::server_name) |
//! | `max_payload` | size | [`max_payload`](FileConfig::max_payload) |
//! | `max_connections`, `max_conn` | integer | [`max_connections`](FileConfig::max_connections) |
//! | `max_pending` | size | [`max_pending`](FileConfig::max_pending) |
//! | `ping_interval` | duration | [`ping_interval`](FileConfig::ping_interval) |
//! | `ping_max` | integer | [`ping_max`](FileConfig::ping_max) |
//! | `write_deadline` | duration | [`write_deadline`](FileConfig::write_deadline) |
//! | `authorization { .. }` | `user`/`username`, `password`/`pass`, `token`, `timeout` | [`user`](FileConfig::user), [`pass`](FileConfig::pass), [`token`](FileConfig::token), [`auth_timeout`](FileConfig::auth_timeout) |
//! | `debug`, `trace`, `logtime` | boolean | [`debug`](FileConfig::debug), [`trace`](FileConfig::trace), [`logtime`](FileConfig::logtime) |
//! | `log_file`, `logfile` | path | [`log_file`](FileConfig::log_file) |
//! | `pid_file`, `pidfile` | path | [`pid_file`](FileConfig::pid_file) |
//! | `ports_file_dir` | path | [`ports_file_dir`](FileConfig::ports_file_dir) |
//!
//! A key nats-server does not know is an error (nats-server says `unknown field "x"` and does
//! not start), and so is a key nats-server knows that ringlet does not implement (`cluster`,
//! `jetstream`, `tls`, `accounts`, ...: [`ErrorKind::Unsupported`]): running without TLS or
//! without the configured accounts because a setting was silently skipped would be worse than
//! not starting.
//!
//! # Syntax (as nats-server 2.9 reads it)
//!
//! - `key value`, `key = value` or `key: value`; a value ends at a new line, `;` or `,`.
//!   Repeating a key replaces the earlier value (an `authorization` block replaces the whole
//!   earlier block). The whole file may be wrapped in `{ }`.
//! - Comments: `#` or `//` to the end of the line, also after a value.
//! - Strings: `"double quoted"` (escapes `\t \n \r \" \\ \xHH`), `'single quoted'` (no escapes),
//!   or unquoted, ending at white space, a new line, `;`, `,`, `]` or `}`. An unquoted `true`,
//!   `false`, `yes`, `no`, `on` or `off` (any case) is a boolean. Keys may be quoted too.
//! - Integers, with an optional size suffix (any case): `k` 1000, `kb`/`ki`/`kib` 1024, and
//!   likewise `m`, `g`, `t`, `p`, `e` (powers of 1000, or of 1024 with `b`/`i`/`ib`). A token
//!   that starts with digits but goes on with other characters is an unquoted string
//!   (`127.0.0.1:4222`, `2s`).
//! - Durations: a string in Go's `time.ParseDuration` form (`"2s"`, `"1m30s"`, `"1.5h"`,
//!   `"500ms"`; units `ns us µs ms s m h`). Unquoted works too where the token is not a number:
//!   `2s` and `1h` are durations, but `1m` is the integer 1 000 000 (the `m` suffix), as in
//!   nats-server. A plain integer is a number of seconds, accepted with a [`Warning`]
//!   (nats-server prints `ping_interval should be converted to a duration`).
//!
//! # Where ringlet is stricter than nats-server
//!
//! nats-server 2.9 starts with some values that cannot work; these are errors here:
//! negative limits, durations and ports below -1 (nats-server keeps them and misbehaves), an
//! unknown size suffix such as `1kbb` (nats-server silently keeps the default), and a port above
//! 65535. Not supported at all: `include`, `$VARIABLE` references and environment variables,
//! arrays, `( )` blocks, dates. Only the first error is reported (nats-server lists all).
//! When both `listen` and `port` (or `http` and `http_port`) are set, the later one in the
//! file wins here; nats-server's result depends on Go's map order. A duration string as
//! `authorization.timeout` (`"5s"`) is read as a duration here, as newer nats-servers do;
//! 2.9 ignores it and uses 1 s.

use core::fmt;
use core::time::Duration;

use heapless::String as HString;

/// The longest host name kept.
pub const HOST_MAX: usize = 64;
/// The longest server name kept.
pub const NAME_MAX: usize = 64;
/// The longest user, password or token kept.
pub const SECRET_MAX: usize = 128;
/// The longest path kept (log file, pid file, ports file directory).
pub const PATH_MAX: usize = 256;
/// Warnings kept per file; later ones are counted in [`FileConfig::warnings_dropped`].
pub const MAX_WARNINGS: usize = 8;

/// What a configuration file sets. `None`: not set (or 0, nats-server's "default").
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileConfig {
    /// Client listen host (`listen`, `host`, `net`).
    pub host: Option<HString<HOST_MAX>>,
    /// Client port (`listen`, `port`): 1..=65535, or -1 for a random port. (0 is `None`:
    /// nats-server's default, 4222.)
    pub port: Option<i32>,
    /// Monitoring host (`http`).
    pub http_host: Option<HString<HOST_MAX>>,
    /// Monitoring port (`http`, `http_port`, `monitor_port`): 1..=65535, or -1 for a random
    /// port. (0 is `None`: no monitoring.)
    pub http_port: Option<i32>,
    /// `server_name`.
    pub server_name: Option<HString<NAME_MAX>>,
    /// `max_payload` in bytes (at most `i32::MAX`, as in nats-server).
    pub max_payload: Option<u32>,
    /// `max_connections`.
    pub max_connections: Option<u64>,
    /// `max_pending` in bytes.
    pub max_pending: Option<u64>,
    /// `ping_interval`.
    pub ping_interval: Option<Duration>,
    /// `ping_max`.
    pub ping_max: Option<u32>,
    /// `write_deadline`.
    pub write_deadline: Option<Duration>,
    /// `authorization.user` (or `username`).
    pub user: Option<HString<SECRET_MAX>>,
    /// `authorization.password` (or `pass`).
    pub pass: Option<HString<SECRET_MAX>>,
    /// `authorization.token`.
    pub token: Option<HString<SECRET_MAX>>,
    /// `authorization.timeout`: seconds (integer or decimal) or a duration string.
    pub auth_timeout: Option<Duration>,
    /// `debug`.
    pub debug: Option<bool>,
    /// `trace`.
    pub trace: Option<bool>,
    /// `logtime` (log lines carry a time stamp).
    pub logtime: Option<bool>,
    /// `log_file` (or `logfile`).
    pub log_file: Option<HString<PATH_MAX>>,
    /// `pid_file` (or `pidfile`).
    pub pid_file: Option<HString<PATH_MAX>>,
    /// `ports_file_dir`.
    pub ports_file_dir: Option<HString<PATH_MAX>>,
    /// Warnings, in file order (at most [`MAX_WARNINGS`]).
    pub warnings: heapless::Vec<Warning, MAX_WARNINGS>,
    /// Warnings beyond [`MAX_WARNINGS`], not kept.
    pub warnings_dropped: u32,
}

/// Something accepted that nats-server also accepts with a warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Line of the value (1-based).
    pub line: u32,
    /// The setting.
    pub field: &'static str,
    /// What is wrong with it.
    pub kind: WarningKind,
}

/// What a [`Warning`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarningKind {
    /// A duration given as a plain integer, taken as seconds.
    SecondsNotDuration,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            WarningKind::SecondsNotDuration => write!(
                f,
                "line {}: {} should be converted to a duration (taken as seconds)",
                self.line, self.field
            ),
        }
    }
}

/// A configuration file could not be used: where, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Line (1-based).
    pub line: u32,
    /// Column in bytes (1-based).
    pub column: u32,
    /// What is wrong.
    pub kind: ErrorKind,
}

/// A key as written in the file (at most 32 bytes kept), for error messages.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    bytes: [u8; 32],
    len: u8,
    truncated: bool,
}

impl Name {
    fn new(raw: &[u8]) -> Name {
        let mut bytes = [0u8; 32];
        let len = raw.len().min(32);
        bytes[..len].copy_from_slice(&raw[..len]);
        Name {
            bytes,
            len: len as u8,
            truncated: raw.len() > 32,
        }
    }

    /// The bytes kept (the first 32 of the key).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.as_bytes() {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// A byte found where something else was expected (`None`: the end of the file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found(pub Option<u8>);

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("the end of the file"),
            Some(b'\n') | Some(b'\r') => f.write_str("the end of the line"),
            Some(b) if b.is_ascii_graphic() => write!(f, "'{}'", b as char),
            Some(b' ') | Some(b'\t') => f.write_str("white space"),
            Some(b) => write!(f, "byte 0x{b:02x}"),
        }
    }
}

/// What is wrong with a configuration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Something unexpected: `expected` says what could be there instead.
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What was there.
        found: Found,
    },
    /// A quoted string or key without its closing quote (the position is its start).
    UnterminatedString,
    /// A `\` escape other than `\t \n \r \" \\ \xHH`.
    InvalidEscape,
    /// A string that is not UTF-8 (after escapes).
    InvalidUtf8,
    /// A number that cannot be read: a fraction where an integer is needed, or a size suffix
    /// that nats-server does not know.
    BadNumber,
    /// An integer beyond 64 bits (after its size suffix).
    IntegerOverflow,
    /// A key nats-server does not know.
    UnknownField(Name),
    /// A key nats-server knows that ringlet does not implement.
    Unsupported(Name),
    /// Syntax nats-server knows that this parser does not implement.
    UnsupportedSyntax(&'static str),
    /// A value of the wrong type.
    WrongType {
        /// The setting.
        field: &'static str,
        /// The type it needs.
        expected: &'static str,
        /// The type it got.
        found: &'static str,
    },
    /// A value outside the setting's range.
    OutOfRange {
        /// The setting.
        field: &'static str,
        /// The range.
        allowed: &'static str,
    },
    /// Not a Go duration (`"2s"`, `"1m30s"`, `"500ms"`).
    BadDuration {
        /// The setting.
        field: &'static str,
    },
    /// Not `host:port`, `[v6]:port`, `:port` or a port.
    BadAddress {
        /// The setting.
        field: &'static str,
    },
    /// A string longer than the setting keeps.
    TooLong {
        /// The setting.
        field: &'static str,
        /// The most it keeps, in bytes.
        max: usize,
    },
    /// `authorization` sets both a user and a token (nats-server: `Cannot have a user/pass and
    /// token`).
    UserAndToken,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Unexpected { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            ErrorKind::UnterminatedString => f.write_str("string without its closing quote"),
            ErrorKind::InvalidEscape => f.write_str(
                "invalid escape: only \\t, \\n, \\r, \\\", \\\\ and \\xHH are allowed",
            ),
            ErrorKind::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            ErrorKind::BadNumber => f.write_str(
                "not a number: an integer with an optional size suffix (k, kb, ki, kib, m, mb, ...) is needed",
            ),
            ErrorKind::IntegerOverflow => f.write_str("integer out of the 64-bit range"),
            ErrorKind::UnknownField(name) => write!(f, "unknown field \"{name}\""),
            ErrorKind::Unsupported(name) => {
                write!(f, "\"{name}\" is a nats-server setting ringlet does not support")
            }
            ErrorKind::UnsupportedSyntax(what) => write!(f, "{what} not supported"),
            ErrorKind::WrongType {
                field,
                expected,
                found,
            } => write!(f, "{field}: expected {expected}, found {found}"),
            ErrorKind::OutOfRange { field, allowed } => {
                write!(f, "{field}: out of range (allowed: {allowed})")
            }
            ErrorKind::BadDuration { field } => write!(
                f,
                "{field}: not a duration (examples: \"2s\", \"1m30s\", \"500ms\"; units ns, us, ms, s, m, h)"
            ),
            ErrorKind::BadAddress { field } => {
                write!(f, "{field}: expected \"host:port\", \":port\" or a port")
            }
            ErrorKind::TooLong { field, max } => {
                write!(f, "{field}: too long (at most {max} bytes)")
            }
            ErrorKind::UserAndToken => {
                f.write_str("authorization: cannot have a user/pass and a token")
            }
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.kind
        )
    }
}

impl core::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------
// Keys

/// Top-level keys of nats-server 2.9 that ringlet does not implement.
const UNSUPPORTED_TOP: &[&str] = &[
    "accounts",
    "authorization_callout",
    "client_advertise",
    "cluster",
    "connect_error_reports",
    "default_js_domain",
    "disable_sublist_cache",
    "gateway",
    "http_base_path",
    "https",
    "https_port",
    "jetstream",
    "lame_duck_duration",
    "lame_duck_grace_period",
    "leaf",
    "leafnodes",
    "log_max_num",
    "log_size_limit",
    "logtime_utc",
    "max_closed_clients",
    "max_control_line",
    "max_subs",
    "max_subscriptions",
    "max_traced_msg_len",
    "mqtt",
    "no_auth_user",
    "no_header_support",
    "no_sublist_cache",
    "nkeys",
    "ocsp",
    "ocsp_cache",
    "operator",
    "operators",
    "prof_port",
    "reconnect_error_reports",
    "remote_syslog",
    "resolver",
    "resolver_preload",
    "resolver_tls",
    "server_tags",
    "syslog",
    "system",
    "system_account",
    "tls",
    "trace_verbose",
    "trusted",
    "trusted_keys",
    "websocket",
    "ws",
];

/// `authorization` keys of nats-server 2.9 that ringlet does not implement.
const UNSUPPORTED_AUTH: &[&str] = &[
    "users",
    "permissions",
    "default_permissions",
    "nkeys",
    "auth_callout",
];

fn key_is(key: &[u8], name: &str) -> bool {
    key.eq_ignore_ascii_case(name.as_bytes())
}

fn key_in(key: &[u8], list: &[&str]) -> bool {
    list.iter().any(|n| key_is(key, n))
}

// ---------------------------------------------------------------------------------------------
// Values

/// How a string was written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    Double,
    Single,
    Bare,
}

/// A value as lexed; strings keep their raw text (decoded on demand).
#[derive(Clone, Copy)]
enum Value<'a> {
    Int(i64),
    Float(&'a [u8]),
    Bool(bool),
    Str(&'a [u8], Quote),
    /// `{`, consumed: the map's entries follow.
    Map,
}

impl Value<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Float(_) => "a decimal number",
            Value::Bool(_) => "a boolean",
            Value::Str(..) => "a string",
            Value::Map => "a map",
        }
    }
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_nl(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

/// Ends an unquoted string (nats-server's `lexString`).
fn ends_bare(b: u8) -> bool {
    is_nl(b) || is_ws(b) || matches!(b, b';' | b',' | b']' | b'}')
}

/// Ends a number, so that it stays a number and does not become a string (nats-server 2.9's
/// `lexNumberOrDateOrStringOrIP`: digits are in the set too).
fn ends_number(b: Option<u8>) -> bool {
    match b {
        None => true,
        Some(b) => is_nl(b) || is_ws(b) || matches!(b, b'}' | b';' | b',') || b.is_ascii_digit(),
    }
}

/// Ends a key written without quotes.
fn ends_key(b: u8) -> bool {
    is_ws(b)
        || is_nl(b)
        || matches!(
            b,
            b'=' | b':' | b'{' | b'}' | b'[' | b']' | b',' | b';' | b'#' | b'"' | b'\''
        )
}

fn size_multiplier(suffix: &[u8]) -> Option<i64> {
    let mut lower = [0u8; 3];
    if suffix.len() > 3 {
        return None;
    }
    for (d, s) in lower.iter_mut().zip(suffix) {
        *d = s.to_ascii_lowercase();
    }
    let s = &lower[..suffix.len()];
    let (first, rest) = s.split_first()?;
    let power: u32 = match first {
        b'k' => 1,
        b'm' => 2,
        b'g' => 3,
        b't' => 4,
        b'p' => 5,
        b'e' => 6,
        _ => return None,
    };
    let base: i64 = match rest {
        b"" => 1000,
        b"b" | b"i" | b"ib" => 1024,
        _ => return None,
    };
    base.checked_pow(power)
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: u32,
    line_start: usize,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<u8> {
        self.src.get(self.pos + n).copied()
    }

    fn bump(&mut self) {
        if let Some(b) = self.peek() {
            self.pos += 1;
            if b == b'\n' {
                self.line += 1;
                self.line_start = self.pos;
            }
        }
    }

    fn error_at(&self, pos: usize, line: u32, line_start: usize, kind: ErrorKind) -> ConfigError {
        ConfigError {
            line,
            column: u32::try_from(pos.saturating_sub(line_start) + 1).unwrap_or(u32::MAX),
            kind,
        }
    }

    fn error(&self, kind: ErrorKind) -> ConfigError {
        self.error_at(self.pos, self.line, self.line_start, kind)
    }

    fn unexpected(&self, expected: &'static str) -> ConfigError {
        self.error(ErrorKind::Unexpected {
            expected,
            found: Found(self.peek()),
        })
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.bump();
        }
    }

    fn at_comment(&self) -> bool {
        match self.peek() {
            Some(b'#') => true,
            Some(b'/') => self.peek_at(1) == Some(b'/'),
            _ => false,
        }
    }

    /// Skips a comment up to (not including) the end of its line.
    fn skip_comment(&mut self) {
        while self.peek().is_some_and(|b| !is_nl(b)) {
            self.bump();
        }
    }

    /// Skips white space, new lines and comments.
    fn skip_blank(&mut self) {
        loop {
            match self.peek() {
                Some(b) if is_ws(b) || is_nl(b) => self.bump(),
                Some(_) if self.at_comment() => self.skip_comment(),
                _ => return,
            }
        }
    }

    /// A key: quoted, or up to white space or a separator.
    fn key(&mut self) -> Result<&'a [u8], ConfigError> {
        let (line, line_start, start) = (self.line, self.line_start, self.pos);
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => {
                self.bump();
                let from = self.pos;
                while let Some(b) = self.peek() {
                    if b == q {
                        let key = &self.src[from..self.pos];
                        self.bump();
                        return Ok(key);
                    }
                    self.bump();
                }
                Err(self.error_at(start, line, line_start, ErrorKind::UnterminatedString))
            }
            Some(b) if !ends_key(b) => {
                while self.peek().is_some_and(|b| !ends_key(b)) {
                    self.bump();
                }
                Ok(&self.src[start..self.pos])
            }
            _ => Err(self.unexpected("a key")),
        }
    }

    /// The separator after a key: white space, then an optional `=` or `:`, then white space.
    fn separator(&mut self) {
        self.skip_ws();
        if matches!(self.peek(), Some(b'=' | b':')) {
            self.bump();
            self.skip_ws();
        }
    }

    /// A value (after the separator). A map's `{` is consumed and its entries left to the
    /// caller.
    fn value(&mut self) -> Result<Value<'a>, ConfigError> {
        let (line, line_start, start) = (self.line, self.line_start, self.pos);
        match self.peek() {
            None => Err(self.unexpected("a value")),
            Some(b) if is_nl(b) => Err(self.unexpected("a value")),
            Some(b'{') => {
                self.bump();
                Ok(Value::Map)
            }
            Some(b'[') => Err(self.error(ErrorKind::UnsupportedSyntax("arrays are"))),
            Some(b'(') => Err(self.error(ErrorKind::UnsupportedSyntax("( ) blocks are"))),
            Some(b'$') => Err(self.error(ErrorKind::UnsupportedSyntax(
                "variables ($NAME) and environment variables are",
            ))),
            Some(b'.') => Err(self.error(ErrorKind::BadNumber)),
            Some(q @ (b'"' | b'\'')) => {
                self.bump();
                let from = self.pos;
                while let Some(b) = self.peek() {
                    if b == q {
                        let raw = &self.src[from..self.pos];
                        self.bump();
                        let quote = if q == b'"' {
                            Quote::Double
                        } else {
                            Quote::Single
                        };
                        return Ok(Value::Str(raw, quote));
                    }
                    if b == b'\\' && q == b'"' {
                        // The escaped byte cannot end the string.
                        self.bump();
                    }
                    self.bump();
                }
                Err(self.error_at(start, line, line_start, ErrorKind::UnterminatedString))
            }
            Some(b'-') => {
                self.bump();
                if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return Err(self.unexpected("a digit after '-'"));
                }
                self.number(start, true)
            }
            Some(b) if b.is_ascii_digit() => self.number(start, false),
            Some(b) if ends_bare(b) => Err(self.unexpected("a value")),
            Some(_) => Ok(self.bare(start)),
        }
    }

    /// An unquoted string (or boolean) from `start`.
    fn bare(&mut self, start: usize) -> Value<'a> {
        while let Some(b) = self.peek() {
            if b == b'\\' {
                self.bump();
                self.bump();
                continue;
            }
            if ends_bare(b) {
                break;
            }
            self.bump();
        }
        let raw = &self.src[start..self.pos];
        for (word, v) in [
            ("true", true),
            ("yes", true),
            ("on", true),
            ("false", false),
            ("no", false),
            ("off", false),
        ] {
            if key_is(raw, word) {
                return Value::Bool(v);
            }
        }
        Value::Str(raw, Quote::Bare)
    }

    /// A number from `start` (its sign, if any, consumed): an integer with an optional size
    /// suffix, a decimal, or, when other characters follow the digits, an unquoted string.
    fn number(&mut self, start: usize, negative: bool) -> Result<Value<'a>, ConfigError> {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.bump();
        }
        let digits_end = self.pos;
        match self.peek() {
            Some(b'.') => {
                self.bump();
                if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return Err(self.unexpected("a digit after '.'"));
                }
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.bump();
                }
                if self.peek() == Some(b'.') && !negative {
                    // An address such as 127.0.0.1 or 127.0.0.1:4222.
                    while self
                        .peek()
                        .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'.' | b':' | b'-'))
                    {
                        self.bump();
                    }
                    return Ok(Value::Str(&self.src[start..self.pos], Quote::Bare));
                }
                Ok(Value::Float(&self.src[start..self.pos]))
            }
            Some(b'-') if !negative => Err(self.error(ErrorKind::UnsupportedSyntax(
                "dates (and '-' in a number) are",
            ))),
            Some(b)
                if matches!(
                    b.to_ascii_lowercase(),
                    b'k' | b'm' | b'g' | b't' | b'p' | b'e'
                ) =>
            {
                self.bump();
                while self
                    .peek()
                    .is_some_and(|b| matches!(b, b'b' | b'B' | b'i' | b'I'))
                {
                    self.bump();
                }
                if !ends_number(self.peek()) {
                    if negative {
                        return Err(self.error(ErrorKind::BadNumber));
                    }
                    return Ok(self.bare(start));
                }
                let mult =
                    size_multiplier(&self.src[digits_end..self.pos]).ok_or(ErrorKind::BadNumber);
                let mult = mult.map_err(|k| self.error_at(start, self.line, self.line_start, k))?;
                let n = self.integer(start, digits_end)?;
                let n = n.checked_mul(mult).ok_or_else(|| {
                    self.error_at(
                        start,
                        self.line,
                        self.line_start,
                        ErrorKind::IntegerOverflow,
                    )
                })?;
                Ok(Value::Int(n))
            }
            next if ends_number(next) => Ok(Value::Int(self.integer(start, digits_end)?)),
            _ if negative => Err(self.unexpected("the end of a number")),
            _ => Ok(self.bare(start)),
        }
    }

    fn integer(&self, start: usize, end: usize) -> Result<i64, ConfigError> {
        let text = &self.src[start..end];
        let (neg, digits) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, text),
        };
        let mut n: i64 = 0;
        for &d in digits {
            let d = i64::from(d - b'0');
            n = n
                .checked_mul(10)
                .and_then(|n| {
                    if neg {
                        n.checked_sub(d)
                    } else {
                        n.checked_add(d)
                    }
                })
                .ok_or_else(|| {
                    self.error_at(
                        start,
                        self.line,
                        self.line_start,
                        ErrorKind::IntegerOverflow,
                    )
                })?;
        }
        Ok(n)
    }

    /// After a value: white space and a comment, then a new line, the end, `;` or `,`
    /// (consumed), or `}` (left for the caller).
    fn value_end(&mut self, expected: &'static str) -> Result<(), ConfigError> {
        self.skip_ws();
        if self.at_comment() {
            self.skip_comment();
        }
        match self.peek() {
            None | Some(b'}') => Ok(()),
            Some(b) if is_nl(b) || b == b';' || b == b',' => {
                self.bump();
                Ok(())
            }
            _ => Err(self.unexpected(expected)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding values into settings

/// Decodes a string value (escapes included) into `out`.
fn decode_str<const N: usize>(
    raw: &[u8],
    quote: Quote,
    field: &'static str,
    out: &mut HString<N>,
) -> Result<(), ErrorKind> {
    let mut buf = [0u8; PATH_MAX];
    let mut len = 0;
    let mut push = |b: u8| -> Result<(), ErrorKind> {
        if len == N.min(PATH_MAX) {
            return Err(ErrorKind::TooLong { field, max: N });
        }
        buf[len] = b;
        len += 1;
        Ok(())
    };
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' || quote == Quote::Single {
            push(b)?;
            continue;
        }
        let e = raw.get(i).copied().ok_or(ErrorKind::InvalidEscape)?;
        i += 1;
        match e {
            b't' => push(b'\t')?,
            b'n' => push(b'\n')?,
            b'r' => push(b'\r')?,
            b'"' => push(b'"')?,
            b'\\' => push(b'\\')?,
            b'x' => {
                let hex =
                    |b: Option<&u8>| -> Option<u8> { (*b? as char).to_digit(16).map(|d| d as u8) };
                let hi = hex(raw.get(i)).ok_or(ErrorKind::InvalidEscape)?;
                let lo = hex(raw.get(i + 1)).ok_or(ErrorKind::InvalidEscape)?;
                i += 2;
                push(hi << 4 | lo)?;
            }
            _ => return Err(ErrorKind::InvalidEscape),
        }
    }
    let text = core::str::from_utf8(&buf[..len]).map_err(|_| ErrorKind::InvalidUtf8)?;
    out.clear();
    out.push_str(text)
        .map_err(|_| ErrorKind::TooLong { field, max: N })
}

fn string<const N: usize>(field: &'static str, v: Value<'_>) -> Result<HString<N>, ErrorKind> {
    match v {
        Value::Str(raw, quote) => {
            let mut s = HString::new();
            decode_str(raw, quote, field, &mut s)?;
            Ok(s)
        }
        other => Err(ErrorKind::WrongType {
            field,
            expected: "a string",
            found: other.type_name(),
        }),
    }
}

fn int(field: &'static str, v: Value<'_>) -> Result<i64, ErrorKind> {
    match v {
        Value::Int(n) => Ok(n),
        other => Err(ErrorKind::WrongType {
            field,
            expected: "an integer",
            found: other.type_name(),
        }),
    }
}

fn boolean(field: &'static str, v: Value<'_>) -> Result<bool, ErrorKind> {
    match v {
        Value::Bool(b) => Ok(b),
        other => Err(ErrorKind::WrongType {
            field,
            expected: "a boolean (true, false, yes, no, on, off)",
            found: other.type_name(),
        }),
    }
}

/// A non-negative integer up to `max`; 0 is `None` (nats-server's "default").
fn limit(
    field: &'static str,
    v: Value<'_>,
    max: u64,
    allowed: &'static str,
) -> Result<Option<u64>, ErrorKind> {
    let n = int(field, v)?;
    match u64::try_from(n) {
        Ok(0) => Ok(None),
        Ok(n) if n <= max => Ok(Some(n)),
        _ => Err(ErrorKind::OutOfRange { field, allowed }),
    }
}

/// A port: -1 (random) or 1..=65535; 0 is `None`.
fn port(field: &'static str, n: i64) -> Result<Option<i32>, ErrorKind> {
    match n {
        0 => Ok(None),
        -1 | 1..=65535 => Ok(Some(n as i32)),
        _ => Err(ErrorKind::OutOfRange {
            field,
            allowed: "-1 (random) or 1..=65535",
        }),
    }
}

/// Go's `time.ParseDuration`, in nanoseconds; `None` when the text is not a duration. Negative
/// durations come back negative.
pub fn parse_go_duration(s: &[u8]) -> Option<i128> {
    let (neg, mut s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, s),
    };
    if s == b"0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        // Integer part.
        let int_len = s.iter().take_while(|b| b.is_ascii_digit()).count();
        let mut int: u128 = 0;
        for &d in &s[..int_len] {
            int = int.checked_mul(10)?.checked_add(u128::from(d - b'0'))?;
            if int > 1 << 63 {
                return None;
            }
        }
        s = &s[int_len..];
        // Fraction.
        let mut frac: u128 = 0;
        let mut scale: u128 = 1;
        let mut frac_len = 0;
        if let Some((b'.', rest)) = s.split_first() {
            s = rest;
            frac_len = s.iter().take_while(|b| b.is_ascii_digit()).count();
            for &d in &s[..frac_len] {
                // Like Go, digits beyond what fits are ignored.
                if scale < 1_000_000_000_000_000_000 {
                    frac = frac * 10 + u128::from(d - b'0');
                    scale *= 10;
                }
            }
            s = &s[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return None;
        }
        // Unit: up to the next digit or '.'.
        let unit_len = s
            .iter()
            .take_while(|b| !b.is_ascii_digit() && **b != b'.')
            .count();
        let unit: u128 = match &s[..unit_len] {
            b"ns" => 1,
            // "us", "µs" (U+00B5) and "μs" (U+03BC), as Go accepts.
            b"us" | [0xC2, 0xB5, b's'] | [0xCE, 0xBC, b's'] => 1_000,
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60_000_000_000,
            b"h" => 3_600_000_000_000,
            _ => return None,
        };
        s = &s[unit_len..];
        total = total
            .checked_add(int.checked_mul(unit)?)?
            .checked_add(frac * unit / scale)?;
        if total > 1 << 63 {
            return None;
        }
    }
    if !neg && total > i64::MAX as u128 {
        return None;
    }
    let total = total as i128;
    Some(if neg { -total } else { total })
}

/// A duration setting: a Go duration string, or an integer number of seconds (with a warning).
/// 0 is `None` (nats-server's default).
fn duration(
    field: &'static str,
    v: Value<'_>,
    warn: &mut bool,
) -> Result<Option<Duration>, ErrorKind> {
    let nanos = match v {
        Value::Str(raw, quote) => {
            let mut s: HString<64> = HString::new();
            decode_str(raw, quote, field, &mut s).map_err(|_| ErrorKind::BadDuration { field })?;
            parse_go_duration(s.as_bytes()).ok_or(ErrorKind::BadDuration { field })?
        }
        Value::Int(n) => {
            *warn = true;
            i128::from(n) * 1_000_000_000
        }
        other => {
            return Err(ErrorKind::WrongType {
                field,
                expected: "a duration (\"2s\", \"1m\")",
                found: other.type_name(),
            });
        }
    };
    match u64::try_from(nanos) {
        Ok(0) => Ok(None),
        Ok(n) => Ok(Some(Duration::from_nanos(n))),
        Err(_) => Err(ErrorKind::OutOfRange {
            field,
            allowed: "a duration of at least 0",
        }),
    }
}

/// `authorization.timeout`: seconds as an integer or decimal, or a Go duration string.
fn auth_timeout(field: &'static str, v: Value<'_>) -> Result<Option<Duration>, ErrorKind> {
    match v {
        Value::Float(text) => {
            let text = core::str::from_utf8(text).map_err(|_| ErrorKind::BadNumber)?;
            let secs: f64 = text.parse().map_err(|_| ErrorKind::BadNumber)?;
            Duration::try_from_secs_f64(secs)
                .map(|d| if d.is_zero() { None } else { Some(d) })
                .map_err(|_| ErrorKind::OutOfRange {
                    field,
                    allowed: "0 or more seconds",
                })
        }
        Value::Int(n) => match u64::try_from(n) {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(Duration::from_secs(n))),
            Err(_) => Err(ErrorKind::OutOfRange {
                field,
                allowed: "0 or more seconds",
            }),
        },
        v @ Value::Str(..) => duration(field, v, &mut false),
        other => Err(ErrorKind::WrongType {
            field,
            expected: "seconds or a duration",
            found: other.type_name(),
        }),
    }
}

/// `listen`/`http`: `host:port`, `[v6]:port`, `:port`, or a port (Go's `net.SplitHostPort`).
fn address(
    field: &'static str,
    v: Value<'_>,
) -> Result<(Option<HString<HOST_MAX>>, Option<i32>), ErrorKind> {
    let bad = ErrorKind::BadAddress { field };
    match v {
        Value::Int(n) => Ok((None, port(field, n)?)),
        Value::Str(raw, quote) => {
            let mut s: HString<{ HOST_MAX + 16 }> = HString::new();
            decode_str(raw, quote, field, &mut s).map_err(|e| match e {
                ErrorKind::TooLong { .. } => ErrorKind::TooLong {
                    field,
                    max: HOST_MAX,
                },
                e => e,
            })?;
            let (host, port_text) = if let Some(rest) = s.strip_prefix('[') {
                let (host, after) = rest.split_once(']').ok_or(bad)?;
                let port_text = after.strip_prefix(':').ok_or(bad)?;
                if host.contains(['[', ']']) {
                    return Err(bad);
                }
                (host, port_text)
            } else {
                let (host, port_text) = s.rsplit_once(':').ok_or(bad)?;
                if host.contains([':', '[', ']']) {
                    return Err(bad);
                }
                (host, port_text)
            };
            // Go's strconv.Atoi: an optional sign and decimal digits.
            let digits = port_text.strip_prefix(['-', '+']).unwrap_or(port_text);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad);
            }
            let n: i64 = port_text.parse().map_err(|_| ErrorKind::OutOfRange {
                field,
                allowed: "-1 (random) or 1..=65535",
            })?;
            let port = port(field, n)?;
            let host = if host.is_empty() {
                None
            } else {
                let mut h = HString::new();
                h.push_str(host).map_err(|_| ErrorKind::TooLong {
                    field,
                    max: HOST_MAX,
                })?;
                Some(h)
            };
            Ok((host, port))
        }
        other => Err(ErrorKind::WrongType {
            field,
            expected: "\"host:port\" or a port",
            found: other.type_name(),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// The file

impl FileConfig {
    /// Parses the text of a configuration file.
    ///
    /// # Errors
    ///
    /// The first problem, with its line and column.
    pub fn parse(input: &[u8]) -> Result<FileConfig, ConfigError> {
        let mut lx = Lexer {
            src: input,
            pos: 0,
            line: 1,
            line_start: 0,
        };
        let mut cfg = FileConfig::default();
        lx.skip_blank();
        let wrapped = lx.peek() == Some(b'{');
        if wrapped {
            lx.bump();
        }
        loop {
            lx.skip_blank();
            match lx.peek() {
                None if wrapped => return Err(lx.unexpected("'}' closing the file's '{'")),
                None => return Ok(cfg),
                Some(b'}') if wrapped => {
                    lx.bump();
                    lx.skip_blank();
                    if lx.peek().is_some() {
                        return Err(lx.unexpected("the end of the file after its closing '}'"));
                    }
                    return Ok(cfg);
                }
                _ => {}
            }
            cfg.entry(&mut lx)?;
            if !wrapped && lx.peek() == Some(b'}') {
                return Err(lx.unexpected("a key"));
            }
        }
    }

    /// The warnings, in file order.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    fn warn(&mut self, line: u32, field: &'static str, kind: WarningKind) {
        if self.warnings.push(Warning { line, field, kind }).is_err() {
            self.warnings_dropped = self.warnings_dropped.saturating_add(1);
        }
    }

    /// One top-level `key value`.
    fn entry(&mut self, lx: &mut Lexer<'_>) -> Result<(), ConfigError> {
        let (kline, kstart, kpos) = (lx.line, lx.line_start, lx.pos);
        let key = lx.key()?;
        let key_error = |kind| lx_error(kline, kstart, kpos, kind);
        if key_is(key, "include") {
            return Err(key_error(ErrorKind::UnsupportedSyntax("include is")));
        }
        // Resolve the key before reading its value: an unknown key is reported as such, not
        // as whatever its value's syntax is.
        let known = TOP_KEYS.iter().find(|(name, _)| key_is(key, name));
        let Some(&(_, setting)) = known else {
            if key_in(key, UNSUPPORTED_TOP) {
                return Err(key_error(ErrorKind::Unsupported(Name::new(key))));
            }
            return Err(key_error(ErrorKind::UnknownField(Name::new(key))));
        };
        lx.separator();
        let (vline, vstart, vpos) = (lx.line, lx.line_start, lx.pos);
        let value = lx.value()?;
        let at = |kind| lx_error(vline, vstart, vpos, kind);
        if let Setting::Authorization = setting {
            let Value::Map = value else {
                return Err(at(ErrorKind::WrongType {
                    field: "authorization",
                    expected: "a map ({ user: .., password: .. } or { token: .. })",
                    found: value.type_name(),
                }));
            };
            self.authorization(lx, kline, kstart, kpos)?;
            return lx.value_end(AFTER_VALUE);
        }
        if let Value::Map = value {
            return Err(at(ErrorKind::WrongType {
                field: setting.name(),
                expected: setting.expects(),
                found: "a map",
            }));
        }
        // The syntax after the value first: like nats-server, which reads the whole file
        // before it looks at values.
        lx.value_end(AFTER_VALUE)?;
        let mut warned = false;
        self.set(setting, value, &mut warned).map_err(at)?;
        if warned {
            self.warn(vline, setting.name(), WarningKind::SecondsNotDuration);
        }
        Ok(())
    }

    fn set(&mut self, setting: Setting, v: Value<'_>, warned: &mut bool) -> Result<(), ErrorKind> {
        let name = setting.name();
        match setting {
            Setting::Listen => {
                let (host, port) = address(name, v)?;
                self.host = host;
                self.port = port;
            }
            Setting::Host => {
                let s: HString<HOST_MAX> = string(name, v)?;
                self.host = if s.is_empty() { None } else { Some(s) };
            }
            Setting::Port => self.port = port(name, int(name, v)?)?,
            Setting::Http => {
                let (host, port) = address(name, v)?;
                self.http_host = host;
                self.http_port = port;
            }
            Setting::HttpPort => self.http_port = port(name, int(name, v)?)?,
            Setting::ServerName => {
                // nats-server 2.9 takes spaces in a name (later versions refuse them).
                let s: HString<NAME_MAX> = string(name, v)?;
                self.server_name = if s.is_empty() { None } else { Some(s) };
            }
            Setting::MaxPayload => {
                self.max_payload =
                    limit(name, v, i32::MAX as u64, "0..=2147483647 bytes")?.map(|n| n as u32)
            }
            Setting::MaxConnections => {
                self.max_connections = limit(name, v, i64::MAX as u64, "0 or more")?
            }
            Setting::MaxPending => {
                self.max_pending = limit(name, v, i64::MAX as u64, "0 or more bytes")?
            }
            Setting::PingInterval => self.ping_interval = duration(name, v, warned)?,
            Setting::PingMax => {
                self.ping_max =
                    limit(name, v, u64::from(u32::MAX), "0..=4294967295")?.map(|n| n as u32)
            }
            Setting::WriteDeadline => self.write_deadline = duration(name, v, warned)?,
            Setting::Debug => self.debug = Some(boolean(name, v)?),
            Setting::Trace => self.trace = Some(boolean(name, v)?),
            Setting::Logtime => self.logtime = Some(boolean(name, v)?),
            Setting::LogFile => self.log_file = Some(string(name, v)?),
            Setting::PidFile => self.pid_file = Some(string(name, v)?),
            Setting::PortsFileDir => self.ports_file_dir = Some(string(name, v)?),
            // Read by `authorization` (a map), never here.
            Setting::Authorization => {}
        }
        Ok(())
    }

    /// The entries of `authorization { .. }` (its `{` consumed), up to and including its `}`.
    fn authorization(
        &mut self,
        lx: &mut Lexer<'_>,
        line: u32,
        line_start: usize,
        pos: usize,
    ) -> Result<(), ConfigError> {
        // A repeated block replaces the earlier one, as a repeated key does.
        let (mut user, mut pass, mut token, mut timeout) = (None, None, None, None);
        loop {
            lx.skip_blank();
            match lx.peek() {
                None => {
                    return Err(lx_error(
                        line,
                        line_start,
                        pos,
                        ErrorKind::Unexpected {
                            expected: "'}' closing authorization",
                            found: Found(None),
                        },
                    ));
                }
                Some(b'}') => {
                    lx.bump();
                    break;
                }
                _ => {}
            }
            let (kline, kstart, kpos) = (lx.line, lx.line_start, lx.pos);
            let key = lx.key()?;
            let key_error = |kind| lx_error(kline, kstart, kpos, kind);
            let field = if key_is(key, "user") || key_is(key, "username") {
                "authorization.user"
            } else if key_is(key, "password") || key_is(key, "pass") {
                "authorization.password"
            } else if key_is(key, "token") {
                "authorization.token"
            } else if key_is(key, "timeout") {
                "authorization.timeout"
            } else if key_is(key, "include") {
                return Err(key_error(ErrorKind::UnsupportedSyntax("include is")));
            } else if key_in(key, UNSUPPORTED_AUTH) {
                return Err(key_error(ErrorKind::Unsupported(Name::new(key))));
            } else {
                return Err(key_error(ErrorKind::UnknownField(Name::new(key))));
            };
            lx.separator();
            let (vline, vstart, vpos) = (lx.line, lx.line_start, lx.pos);
            let v = lx.value()?;
            let at = |kind| lx_error(vline, vstart, vpos, kind);
            if let Value::Map = v {
                return Err(at(ErrorKind::WrongType {
                    field,
                    expected: "a string",
                    found: "a map",
                }));
            }
            lx.value_end(AFTER_VALUE)?;
            match field {
                "authorization.user" => user = Some(string(field, v).map_err(at)?),
                "authorization.password" => pass = Some(string(field, v).map_err(at)?),
                "authorization.token" => token = Some(string(field, v).map_err(at)?),
                _ => timeout = auth_timeout(field, v).map_err(at)?,
            }
        }
        let has_user = user.is_some() || pass.is_some();
        if has_user && token.is_some() {
            return Err(lx_error(line, line_start, pos, ErrorKind::UserAndToken));
        }
        self.user = user;
        self.pass = pass;
        self.token = token;
        self.auth_timeout = timeout;
        Ok(())
    }

    /// Writes the settings that are set as configuration text that [`FileConfig::parse`]
    /// reads back to an equal value (warnings aside: durations are written as strings).
    ///
    /// # Errors
    ///
    /// The writer's.
    pub fn write_to(&self, w: &mut impl fmt::Write) -> fmt::Result {
        fn quoted_str(w: &mut impl fmt::Write, key: &str, s: &str) -> fmt::Result {
            write!(w, "{key}: \"")?;
            for c in s.chars() {
                match c {
                    '"' => w.write_str("\\\"")?,
                    '\\' => w.write_str("\\\\")?,
                    '\n' => w.write_str("\\n")?,
                    '\r' => w.write_str("\\r")?,
                    '\t' => w.write_str("\\t")?,
                    c => w.write_char(c)?,
                }
            }
            w.write_str("\"\n")
        }
        fn dur(w: &mut impl fmt::Write, key: &str, d: Duration) -> fmt::Result {
            writeln!(w, "{key}: \"{}ns\"", d.as_nanos())
        }
        // `listen`/`http` only when a host is set (a bare host cannot be written otherwise).
        match (&self.host, self.port) {
            (Some(h), p) => {
                quoted_str(w, "host", h)?;
                if let Some(p) = p {
                    writeln!(w, "port: {p}")?;
                }
            }
            (None, Some(p)) => writeln!(w, "port: {p}")?,
            (None, None) => {}
        }
        match (&self.http_host, self.http_port) {
            (Some(h), Some(p)) if h.contains(':') => writeln!(w, "http: \"[{h}]:{p}\"")?,
            (Some(h), Some(p)) => {
                write!(w, "http: \"")?;
                for c in h.chars() {
                    match c {
                        '"' => w.write_str("\\\"")?,
                        '\\' => w.write_str("\\\\")?,
                        '\n' => w.write_str("\\n")?,
                        '\r' => w.write_str("\\r")?,
                        '\t' => w.write_str("\\t")?,
                        c => w.write_char(c)?,
                    }
                }
                writeln!(w, ":{p}\"")?;
            }
            // A host without a port cannot be written: `http` needs both.
            (Some(_), None) => return Err(fmt::Error),
            (None, Some(p)) => writeln!(w, "http_port: {p}")?,
            (None, None) => {}
        }
        if let Some(s) = &self.server_name {
            quoted_str(w, "server_name", s)?;
        }
        if let Some(n) = self.max_payload {
            writeln!(w, "max_payload: {n}")?;
        }
        if let Some(n) = self.max_connections {
            writeln!(w, "max_connections: {n}")?;
        }
        if let Some(n) = self.max_pending {
            writeln!(w, "max_pending: {n}")?;
        }
        if let Some(d) = self.ping_interval {
            dur(w, "ping_interval", d)?;
        }
        if let Some(n) = self.ping_max {
            writeln!(w, "ping_max: {n}")?;
        }
        if let Some(d) = self.write_deadline {
            dur(w, "write_deadline", d)?;
        }
        if self.user.is_some()
            || self.pass.is_some()
            || self.token.is_some()
            || self.auth_timeout.is_some()
        {
            w.write_str("authorization {\n")?;
            if let Some(s) = &self.user {
                quoted_str(w, "  user", s)?;
            }
            if let Some(s) = &self.pass {
                quoted_str(w, "  password", s)?;
            }
            if let Some(s) = &self.token {
                quoted_str(w, "  token", s)?;
            }
            if let Some(d) = self.auth_timeout {
                dur(w, "  timeout", d)?;
            }
            w.write_str("}\n")?;
        }
        for (key, v) in [
            ("debug", self.debug),
            ("trace", self.trace),
            ("logtime", self.logtime),
        ] {
            if let Some(v) = v {
                writeln!(w, "{key}: {v}")?;
            }
        }
        for (key, v) in [
            ("log_file", &self.log_file),
            ("pid_file", &self.pid_file),
            ("ports_file_dir", &self.ports_file_dir),
        ] {
            if let Some(s) = v {
                quoted_str(w, key, s)?;
            }
        }
        Ok(())
    }
}

const AFTER_VALUE: &str = "the end of the line after a value";

fn lx_error(line: u32, line_start: usize, pos: usize, kind: ErrorKind) -> ConfigError {
    ConfigError {
        line,
        column: u32::try_from(pos.saturating_sub(line_start) + 1).unwrap_or(u32::MAX),
        kind,
    }
}

/// The top-level settings.
#[derive(Clone, Copy)]
enum Setting {
    Listen,
    Host,
    Port,
    Http,
    HttpPort,
    ServerName,
    MaxPayload,
    MaxConnections,
    MaxPending,
    PingInterval,
    PingMax,
    WriteDeadline,
    Authorization,
    Debug,
    Trace,
    Logtime,
    LogFile,
    PidFile,
    PortsFileDir,
}

const TOP_KEYS: &[(&str, Setting)] = &[
    ("listen", Setting::Listen),
    ("host", Setting::Host),
    ("net", Setting::Host),
    ("port", Setting::Port),
    ("http", Setting::Http),
    ("http_port", Setting::HttpPort),
    ("monitor_port", Setting::HttpPort),
    ("server_name", Setting::ServerName),
    ("max_payload", Setting::MaxPayload),
    ("max_connections", Setting::MaxConnections),
    ("max_conn", Setting::MaxConnections),
    ("max_pending", Setting::MaxPending),
    ("ping_interval", Setting::PingInterval),
    ("ping_max", Setting::PingMax),
    ("write_deadline", Setting::WriteDeadline),
    ("authorization", Setting::Authorization),
    ("debug", Setting::Debug),
    ("trace", Setting::Trace),
    ("logtime", Setting::Logtime),
    ("log_file", Setting::LogFile),
    ("logfile", Setting::LogFile),
    ("pid_file", Setting::PidFile),
    ("pidfile", Setting::PidFile),
    ("ports_file_dir", Setting::PortsFileDir),
];

impl Setting {
    fn name(self) -> &'static str {
        match self {
            Setting::Listen => "listen",
            Setting::Host => "host",
            Setting::Port => "port",
            Setting::Http => "http",
            Setting::HttpPort => "http_port",
            Setting::ServerName => "server_name",
            Setting::MaxPayload => "max_payload",
            Setting::MaxConnections => "max_connections",
            Setting::MaxPending => "max_pending",
            Setting::PingInterval => "ping_interval",
            Setting::PingMax => "ping_max",
            Setting::WriteDeadline => "write_deadline",
            Setting::Authorization => "authorization",
            Setting::Debug => "debug",
            Setting::Trace => "trace",
            Setting::Logtime => "logtime",
            Setting::LogFile => "log_file",
            Setting::PidFile => "pid_file",
            Setting::PortsFileDir => "ports_file_dir",
        }
    }

    fn expects(self) -> &'static str {
        match self {
            Setting::Listen | Setting::Http => "\"host:port\" or a port",
            Setting::Port | Setting::HttpPort => "a port",
            Setting::MaxPayload | Setting::MaxPending => "a size",
            Setting::MaxConnections | Setting::PingMax => "an integer",
            Setting::PingInterval | Setting::WriteDeadline => "a duration",
            Setting::Authorization => "a map",
            Setting::Debug | Setting::Trace | Setting::Logtime => "a boolean",
            Setting::Host
            | Setting::ServerName
            | Setting::LogFile
            | Setting::PidFile
            | Setting::PortsFileDir => "a string",
        }
    }
}

/// Fuzz entry point: [`FileConfig::parse`] on arbitrary bytes must not panic, and whatever it
/// accepts must survive [`FileConfig::write_to`] and a second parse unchanged.
pub fn fuzz_config(data: &[u8]) {
    let Ok(cfg) = FileConfig::parse(data) else {
        return;
    };
    if let Some(p) = cfg.port {
        assert!(p == -1 || (1..=65535).contains(&p));
    }
    if let Some(p) = cfg.http_port {
        assert!(p == -1 || (1..=65535).contains(&p));
    }
    assert!(
        cfg.max_payload
            .is_none_or(|n| n > 0 && n <= i32::MAX as u32)
    );
    assert!(!(cfg.token.is_some() && (cfg.user.is_some() || cfg.pass.is_some())));
    let mut text: HString<4096> = HString::new();
    if cfg.write_to(&mut text).is_err() {
        // Only an `http` host without a port cannot be written, or text beyond 4 KiB.
        return;
    }
    let again = FileConfig::parse(text.as_bytes()).expect("written configuration parses");
    let mut expected = cfg.clone();
    expected.warnings.clear();
    expected.warnings_dropped = 0;
    assert_eq!(again, expected, "written as:\n{}", text.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::{format, vec};

    fn ok(text: &str) -> FileConfig {
        match FileConfig::parse(text.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    fn err(text: &str) -> ConfigError {
        match FileConfig::parse(text.as_bytes()) {
            Ok(c) => panic!("{text:?} was accepted: {c:?}"),
            Err(e) => e,
        }
    }

    fn h<const N: usize>(s: &str) -> Option<HString<N>> {
        let mut out = HString::new();
        out.push_str(s).unwrap();
        Some(out)
    }

    #[test]
    fn empty_and_comments_only() {
        assert_eq!(ok(""), FileConfig::default());
        assert_eq!(ok("\n\n  \t\r\n# c\n// c\n"), FileConfig::default());
        assert_eq!(ok("{}"), FileConfig::default());
        assert_eq!(ok(" { # c\n } \n"), FileConfig::default());
    }

    #[test]
    fn separators_and_terminators() {
        for text in [
            "port: 4333",
            "port=4333",
            "port = 4333",
            "port 4333",
            "port\t:\t4333\n",
            "PORT: 4333",
            "\"port\": 4333",
            "'Port' 4333",
            "port: 4333;",
            "port: 4333 # comment",
            "port: 4333 // comment",
            "port: 4333, ",
            "{ port: 4333 }",
            "{\nport: 4333\n}\n",
        ] {
            assert_eq!(ok(text).port, Some(4333), "{text:?}");
        }
        let c = ok("port: 4333; http: 8222, max_payload: 1k\r\nping_max 3");
        assert_eq!(c.port, Some(4333));
        assert_eq!(c.http_port, Some(8222));
        assert_eq!(c.max_payload, Some(1000));
        assert_eq!(c.ping_max, Some(3));
    }

    #[test]
    fn later_keys_win() {
        let c = ok("port: 1\nport: 2\nlisten: 127.0.0.1:3\nport: 4");
        assert_eq!((c.host, c.port), (h("127.0.0.1"), Some(4)));
        let c = ok("max_payload: 5\nmax_payload: 0");
        assert_eq!(c.max_payload, None, "0 is nats-server's default");
        let c = ok("authorization { token: t }\nauthorization { user: u, password: p }");
        assert_eq!((c.user, c.pass, c.token), (h("u"), h("p"), None));
    }

    #[test]
    fn listen_and_http_forms() {
        let c = ok("listen: 127.0.0.1:4444");
        assert_eq!((c.host, c.port), (h("127.0.0.1"), Some(4444)));
        let c = ok("listen: 4444");
        assert_eq!((c.host, c.port), (None, Some(4444)));
        let c = ok("listen: \":4444\"");
        assert_eq!((c.host, c.port), (None, Some(4444)));
        let c = ok("listen: localhost:4444");
        assert_eq!((c.host, c.port), (h("localhost"), Some(4444)));
        let c = ok("listen: \"[::1]:4444\"");
        assert_eq!((c.host, c.port), (h("::1"), Some(4444)));
        let c = ok("listen: 127.0.0.1:-1");
        assert_eq!(c.port, Some(-1));
        let c = ok("http: 127.0.0.1:8222");
        assert_eq!((c.http_host, c.http_port), (h("127.0.0.1"), Some(8222)));
        let c = ok("monitor_port: 8223");
        assert_eq!(c.http_port, Some(8223));
        let c = ok("host: 10.0.0.1\nnet: 127.0.0.2");
        assert_eq!(c.host, h("127.0.0.2"));
        for bad in [
            "listen: \"127.0.0.1\"",
            "listen: \"::1:4222\"",
            "listen: \"[::1]4222\"",
            "listen: \"h:\"",
            "listen: \"h:x\"",
            "listen: \"[[::1]]:4\"",
        ] {
            assert!(
                matches!(err(bad).kind, ErrorKind::BadAddress { field: "listen" }),
                "{bad}"
            );
        }
        assert!(matches!(
            err("listen: \"h:70000\"").kind,
            ErrorKind::OutOfRange {
                field: "listen",
                ..
            }
        ));
        assert!(matches!(
            err("http: true").kind,
            ErrorKind::WrongType { field: "http", .. }
        ));
    }

    #[test]
    fn ports() {
        assert_eq!(ok("port: -1").port, Some(-1));
        assert_eq!(ok("port: 0").port, None);
        assert_eq!(ok("port: 65535").port, Some(65535));
        for bad in ["port: 65536", "port: -2", "port: 70000"] {
            assert!(
                matches!(err(bad).kind, ErrorKind::OutOfRange { field: "port", .. }),
                "{bad}"
            );
        }
        assert_eq!(
            err("port: \"4222\"").kind,
            ErrorKind::WrongType {
                field: "port",
                expected: "an integer",
                found: "a string"
            }
        );
        assert_eq!(
            err("port: 4_333").kind,
            ErrorKind::WrongType {
                field: "port",
                expected: "an integer",
                found: "a string"
            },
            "a number followed by other characters is a string, as in nats-server 2.9"
        );
        assert!(matches!(
            err("port: 1.5").kind,
            ErrorKind::WrongType {
                found: "a decimal number",
                ..
            }
        ));
    }

    #[test]
    fn sizes_and_suffixes() {
        for (text, n) in [
            ("1", 1),
            ("007", 7),
            ("1k", 1000),
            ("1K", 1000),
            ("1kb", 1024),
            ("1KB", 1024),
            ("1Kb", 1024),
            ("1ki", 1024),
            ("1kib", 1024),
            ("1KiB", 1024),
            ("2m", 2_000_000),
            ("1mb", 1 << 20),
            ("1mi", 1 << 20),
            ("1mib", 1 << 20),
            ("1g", 1_000_000_000),
            ("1gb", 1 << 30),
            ("1t", 1_000_000_000_000),
            ("1tib", 1 << 40),
            ("1p", 1_000_000_000_000_000),
            ("1pb", 1 << 50),
            ("1e", 1_000_000_000_000_000_000),
            ("1eb", 1 << 60),
        ] {
            assert_eq!(
                ok(&format!("max_pending: {text}")).max_pending,
                Some(n),
                "{text}"
            );
        }
        // The size suffix with `;`, `,` or `}` right after it; a `#` there makes the token a
        // string, as in nats-server.
        assert_eq!(ok("max_pending: 1k;").max_pending, Some(1000));
        assert_eq!(ok("{max_pending: 1k}").max_pending, Some(1000));
        assert!(matches!(
            err("max_pending: 1k#c").kind,
            ErrorKind::WrongType {
                found: "a string",
                ..
            }
        ));
        assert_eq!(ok("max_pending: 1k #c").max_pending, Some(1000));
        // nats-server silently ignores an unknown suffix; here it is an error.
        assert_eq!(err("max_pending: 1kbb").kind, ErrorKind::BadNumber);
        assert_eq!(
            err("max_pending: 1ibk").kind,
            ErrorKind::WrongType {
                field: "max_pending",
                expected: "an integer",
                found: "a string",
            }
        );
        assert_eq!(err("max_pending: 10e").kind, ErrorKind::IntegerOverflow);
        assert_eq!(err("max_pending: 16eb").kind, ErrorKind::IntegerOverflow);
        assert_eq!(
            err("max_pending: 9223372036854775808").kind,
            ErrorKind::IntegerOverflow
        );
        assert_eq!(
            ok("max_pending: 9223372036854775807").max_pending,
            Some(i64::MAX as u64)
        );
        assert!(matches!(
            err("max_pending: -5").kind,
            ErrorKind::OutOfRange { .. }
        ));
        assert_eq!(
            ok("max_payload: 2147483647").max_payload,
            Some(i32::MAX as u32)
        );
        assert!(matches!(
            err("max_payload: 2147483648").kind,
            ErrorKind::OutOfRange {
                field: "max_payload",
                ..
            }
        ));
        assert!(matches!(
            err("max_payload: 1t").kind,
            ErrorKind::OutOfRange { .. }
        ));
        assert_eq!(ok("max_connections: 0").max_connections, None);
        assert_eq!(ok("max_conn: 5").max_connections, Some(5));
        assert_eq!(ok("ping_max: 0").ping_max, None);
        assert!(matches!(
            err("ping_max: 4294967296").kind,
            ErrorKind::OutOfRange { .. }
        ));
        assert_eq!(
            err("max_payload: 1.5k").kind,
            ErrorKind::Unexpected {
                expected: "the end of the line after a value",
                found: Found(Some(b'k')),
            }
        );
        assert_eq!(
            err("max_payload: -x").kind,
            ErrorKind::Unexpected {
                expected: "a digit after '-'",
                found: Found(Some(b'x')),
            }
        );
        assert_eq!(
            err("max_payload: 1.").kind,
            ErrorKind::Unexpected {
                expected: "a digit after '.'",
                found: Found(None),
            }
        );
        assert_eq!(err("max_payload: .5").kind, ErrorKind::BadNumber);
    }

    #[test]
    fn durations() {
        let d = |text: &str| ok(&format!("ping_interval: {text}")).ping_interval;
        assert_eq!(d("\"2s\""), Some(Duration::from_secs(2)));
        assert_eq!(d("2s"), Some(Duration::from_secs(2)));
        assert_eq!(d("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(d("'1m30s'"), Some(Duration::from_secs(90)));
        assert_eq!(d("\"1.5s\""), Some(Duration::from_millis(1500)));
        assert_eq!(d("\"500ms\""), Some(Duration::from_millis(500)));
        assert_eq!(d("\"2us\""), Some(Duration::from_micros(2)));
        assert_eq!(d("\"2µs\""), Some(Duration::from_micros(2)));
        assert_eq!(d("\"2μs\""), Some(Duration::from_micros(2)));
        assert_eq!(d("\"3ns\""), Some(Duration::from_nanos(3)));
        assert_eq!(d("\".5m\""), Some(Duration::from_secs(30)));
        assert_eq!(d("\"1.h\""), Some(Duration::from_secs(3600)));
        assert_eq!(d("\"0\""), None);
        assert_eq!(d("\"0s\""), None);
        // An integer is seconds, with nats-server's warning; `1m` unquoted is 1 000 000.
        let c = ok("\nping_interval: 2");
        assert_eq!(c.ping_interval, Some(Duration::from_secs(2)));
        assert_eq!(
            c.warnings(),
            &[Warning {
                line: 2,
                field: "ping_interval",
                kind: WarningKind::SecondsNotDuration
            }]
        );
        assert_eq!(d("1m"), Some(Duration::from_secs(1_000_000)));
        for bad in [
            "\"2\"", "\"abc\"", "\"\"", "\"s\"", "\".s\"", "\"1x\"", "\"1s2\"", "\"--1s\"",
        ] {
            assert_eq!(
                err(&format!("ping_interval: {bad}")).kind,
                ErrorKind::BadDuration {
                    field: "ping_interval"
                },
                "{bad}"
            );
        }
        assert!(matches!(
            err("write_deadline: \"-1s\"").kind,
            ErrorKind::OutOfRange { .. }
        ));
        assert!(matches!(
            err("write_deadline: -1").kind,
            ErrorKind::OutOfRange { .. }
        ));
        assert!(matches!(
            err("write_deadline: true").kind,
            ErrorKind::WrongType { .. }
        ));
        // Go's limit: about 292 years.
        assert_eq!(
            parse_go_duration(b"2562047h47m16.854775807s"),
            Some(i64::MAX.into())
        );
        assert_eq!(parse_go_duration(b"2562047h47m16.854775808s"), None);
        assert_eq!(parse_go_duration(b"9999999999999999999999h"), None);
        assert_eq!(parse_go_duration(b"-1.5h"), Some(-5_400_000_000_000));
        assert_eq!(parse_go_duration(b"+1s"), Some(1_000_000_000));
        assert_eq!(
            parse_go_duration(b"1.0000000000000000000001s"),
            Some(1_000_000_000)
        );
    }

    #[test]
    fn many_warnings_are_counted() {
        let text = "ping_interval: 1\n".repeat(MAX_WARNINGS + 3);
        let c = ok(&text);
        assert_eq!(c.warnings().len(), MAX_WARNINGS);
        assert_eq!(c.warnings_dropped, 3);
        assert_eq!(c.warnings()[MAX_WARNINGS - 1].line, MAX_WARNINGS as u32);
    }

    #[test]
    fn authorization() {
        let c = ok("authorization {\n  user: derek\n  password: \"s3cr3t!\"\n  timeout: 0.5\n}");
        assert_eq!((c.user, c.pass), (h("derek"), h("s3cr3t!")));
        assert_eq!(c.auth_timeout, Some(Duration::from_millis(500)));
        let c = ok("authorization: { token: 'abc def', timeout: 3 }");
        assert_eq!(c.token, h("abc def"));
        assert_eq!(c.auth_timeout, Some(Duration::from_secs(3)));
        let c = ok("authorization = {USERNAME: a; PASS: b}");
        assert_eq!((c.user, c.pass), (h("a"), h("b")));
        let c = ok("authorization { user: a }");
        assert_eq!((c.user, c.pass), (h("a"), None));
        let c = ok("authorization { token: t, timeout: \"5s\" }");
        assert_eq!(c.auth_timeout, Some(Duration::from_secs(5)));
        let c = ok("authorization {}");
        assert_eq!(c.user, None);
        let e = err("\nauthorization {\n user: a, password: b\n token: c }");
        assert_eq!((e.line, e.column, e.kind), (2, 1, ErrorKind::UserAndToken));
        let e = err("authorization { user: a, foo: 1 }");
        assert_eq!((e.line, e.column), (1, 26));
        assert_eq!(e.kind, ErrorKind::UnknownField(Name::new(b"foo")));
        assert_eq!(e.to_string(), "line 1, column 26: unknown field \"foo\"");
        let e = err("authorization { users: [ {user: a} ] }");
        assert_eq!(e.kind, ErrorKind::Unsupported(Name::new(b"users")));
        let e = err("authorization: 5");
        assert!(matches!(
            e.kind,
            ErrorKind::WrongType {
                field: "authorization",
                found: "an integer",
                ..
            }
        ));
        let e = err("authorization { user: { a: 1 } }");
        assert!(matches!(
            e.kind,
            ErrorKind::WrongType { found: "a map", .. }
        ));
        let e = err("authorization {\n user: a\n");
        assert_eq!((e.line, e.column), (1, 1));
        assert!(matches!(
            e.kind,
            ErrorKind::Unexpected {
                found: Found(None),
                ..
            }
        ));
        let e = err("authorization { user: a b }");
        assert_eq!(
            e.kind,
            ErrorKind::Unexpected {
                expected: "the end of the line after a value",
                found: Found(Some(b'b'))
            }
        );
        assert!(matches!(
            err("authorization { timeout: -1 }").kind,
            ErrorKind::OutOfRange { .. }
        ));
        assert!(matches!(
            err("authorization { timeout: true }").kind,
            ErrorKind::WrongType { .. }
        ));
    }

    #[test]
    fn strings_and_escapes() {
        let c = ok(r#"server_name: "a\tb\n\r\"\\\x41""#);
        assert_eq!(c.server_name.as_deref(), Some("a\tb\n\r\"\\A"));
        let c = ok(r"pid_file: '/tmp/a\n'");
        assert_eq!(
            c.pid_file.as_deref(),
            Some("/tmp/a\\n"),
            "no escapes in single quotes"
        );
        let c = ok("log_file: /var/log/nats.log # c");
        assert_eq!(c.log_file.as_deref(), Some("/var/log/nats.log"));
        let c = ok(r"log_file: /a\x41");
        assert_eq!(
            c.log_file.as_deref(),
            Some("/aA"),
            "escapes in unquoted strings"
        );
        let c = ok("server_name: \"snow☃man\"");
        assert_eq!(c.server_name.as_deref(), Some("snow☃man"));
        let c = ok("ports_file_dir: \"a\nb\"");
        assert_eq!(
            c.ports_file_dir.as_deref(),
            Some("a\nb"),
            "quoted strings span lines"
        );
        assert_eq!(err(r#"server_name: "a\qb""#).kind, ErrorKind::InvalidEscape);
        assert_eq!(err(r#"server_name: "a\x4""#).kind, ErrorKind::InvalidEscape);
        assert_eq!(
            err(r#"server_name: "a\xZZ""#).kind,
            ErrorKind::InvalidEscape
        );
        assert_eq!(err(r#"server_name: "\xff""#).kind, ErrorKind::InvalidUtf8);
        assert_eq!(
            FileConfig::parse(b"server_name: \"\xc3\x28\"")
                .unwrap_err()
                .kind,
            ErrorKind::InvalidUtf8
        );
        let e = err("\n\nserver_name: \"abc\n\n");
        assert_eq!(
            (e.line, e.column, e.kind),
            (3, 14, ErrorKind::UnterminatedString)
        );
        let e = err("server_name: 'abc");
        assert_eq!(e.kind, ErrorKind::UnterminatedString);
        let e = err("\"port: 1");
        assert_eq!(
            (e.line, e.column, e.kind),
            (1, 1, ErrorKind::UnterminatedString)
        );
        assert_eq!(
            ok("server_name: \"a b\"").server_name.as_deref(),
            Some("a b")
        );
        assert_eq!(ok("server_name: \"\"").server_name, None);
        let long = format!("server_name: {}", "x".repeat(NAME_MAX + 1));
        assert_eq!(
            err(&long).kind,
            ErrorKind::TooLong {
                field: "server_name",
                max: NAME_MAX
            }
        );
        let fits = format!("server_name: {}", "x".repeat(NAME_MAX));
        assert_eq!(ok(&fits).server_name.map(|s| s.len()), Some(NAME_MAX));
        let long = format!("pid_file: \"{}\"", "x".repeat(PATH_MAX + 1));
        assert!(matches!(
            err(&long).kind,
            ErrorKind::TooLong { max: PATH_MAX, .. }
        ));
        let long = format!("authorization {{ token: {} }}", "x".repeat(4000));
        assert!(matches!(
            err(&long).kind,
            ErrorKind::TooLong {
                max: SECRET_MAX,
                ..
            }
        ));
    }

    #[test]
    fn booleans() {
        for (text, v) in [
            ("true", true),
            ("TRUE", true),
            ("yes", true),
            ("on", true),
            ("false", false),
            ("No", false),
            ("off", false),
        ] {
            assert_eq!(ok(&format!("debug: {text}")).debug, Some(v), "{text}");
        }
        assert!(matches!(
            err("debug: \"true\"").kind,
            ErrorKind::WrongType {
                found: "a string",
                ..
            }
        ));
        assert!(matches!(
            err("trace: 1").kind,
            ErrorKind::WrongType {
                found: "an integer",
                ..
            }
        ));
        assert!(matches!(
            err("server_name: true").kind,
            ErrorKind::WrongType {
                found: "a boolean",
                ..
            }
        ));
        let c = ok("debug: true\ntrace: off\nlogtime: yes");
        assert_eq!(
            (c.debug, c.trace, c.logtime),
            (Some(true), Some(false), Some(true))
        );
    }

    #[test]
    fn unknown_and_unsupported_keys() {
        let e = err("port: 1\n  foo: bar");
        assert_eq!((e.line, e.column), (2, 3));
        assert_eq!(e.kind, ErrorKind::UnknownField(Name::new(b"foo")));
        assert_eq!(e.to_string(), "line 2, column 3: unknown field \"foo\"");
        let e = err("cluster { port: 6222 }");
        assert_eq!(e.kind, ErrorKind::Unsupported(Name::new(b"cluster")));
        assert_eq!(
            e.to_string(),
            "line 1, column 1: \"cluster\" is a nats-server setting ringlet does not support"
        );
        assert_eq!(
            err("TLS {}").kind,
            ErrorKind::Unsupported(Name::new(b"TLS"))
        );
        assert_eq!(
            err("jetstream: enabled").kind,
            ErrorKind::Unsupported(Name::new(b"jetstream"))
        );
        // The key is reported even if its value would not parse.
        assert_eq!(
            err("foo: [1, 2").kind,
            ErrorKind::UnknownField(Name::new(b"foo"))
        );
        // Long and binary keys are cut and escaped in messages.
        let key = "k".repeat(40);
        let e = err(&format!("{key}: 1"));
        assert_eq!(
            e.to_string(),
            format!("line 1, column 1: unknown field \"{}...\"", &key[..32])
        );
        let e = FileConfig::parse(b"\x01\xff: 1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 1, column 1: unknown field \"\\x01\\xff\""
        );
    }

    #[test]
    fn unsupported_syntax() {
        for (text, what) in [
            ("include other.conf", "include is"),
            ("INCLUDE 'x'", "include is"),
            ("authorization { include 'a.conf' }", "include is"),
            (
                "port: $PORT",
                "variables ($NAME) and environment variables are",
            ),
            ("server_name: [a]", "arrays are"),
            ("server_name: (\nx\n)", "( ) blocks are"),
            (
                "server_name: 2020-01-01T00:00:00Z",
                "dates (and '-' in a number) are",
            ),
        ] {
            assert_eq!(err(text).kind, ErrorKind::UnsupportedSyntax(what), "{text}");
        }
    }

    #[test]
    fn syntax_errors_say_where() {
        let e = err("port: 4333 foo");
        assert_eq!((e.line, e.column), (1, 12));
        assert_eq!(
            e.to_string(),
            "line 1, column 12: expected the end of the line after a value, found 'f'"
        );
        let e = err("port:\n4333");
        assert_eq!((e.line, e.column), (1, 6));
        assert_eq!(
            e.kind,
            ErrorKind::Unexpected {
                expected: "a value",
                found: Found(Some(b'\n'))
            }
        );
        assert_eq!(
            e.to_string(),
            "line 1, column 6: expected a value, found the end of the line"
        );
        let e = err("port");
        assert_eq!(
            e.to_string(),
            "line 1, column 5: expected a value, found the end of the file"
        );
        let e = err(": 4222");
        assert_eq!(e.to_string(), "line 1, column 1: expected a key, found ':'");
        let e = err("port: 1\n}");
        assert_eq!((e.line, e.column), (2, 1));
        let e = err("{ port: 1 ");
        assert_eq!(
            e.kind,
            ErrorKind::Unexpected {
                expected: "'}' closing the file's '{'",
                found: Found(None)
            }
        );
        let e = err("{ port: 1 } port: 2");
        assert_eq!(
            e.kind,
            ErrorKind::Unexpected {
                expected: "the end of the file after its closing '}'",
                found: Found(Some(b'p'))
            }
        );
        let e = err("port: }");
        assert_eq!(
            e.kind,
            ErrorKind::Unexpected {
                expected: "a value",
                found: Found(Some(b'}'))
            }
        );
        let e = err("port: 1 \t\x07");
        assert_eq!(
            e.to_string(),
            "line 1, column 10: expected the end of the line after a value, found byte 0x07"
        );
        let e = err("max_payload: 1-2");
        assert_eq!(
            e.kind,
            ErrorKind::UnsupportedSyntax("dates (and '-' in a number) are")
        );
        let e = err("max_payload: -1-2");
        assert_eq!(
            e.kind,
            ErrorKind::Unexpected {
                expected: "the end of a number",
                found: Found(Some(b'-'))
            }
        );
        let e = err("max_payload: -1x");
        assert_eq!(
            e.kind,
            ErrorKind::Unexpected {
                expected: "the end of a number",
                found: Found(Some(b'x'))
            }
        );
        let e = err("max_payload: -1kx");
        assert_eq!(e.kind, ErrorKind::BadNumber);
        // Columns count bytes, lines count '\n' (CRLF files too).
        let e = err("port: 1\r\nport: 2\r\n  bad: 1\r\n");
        assert_eq!((e.line, e.column), (3, 3));
    }

    #[test]
    fn a_full_file() {
        let text = r#"
# ringlet / nats-server
listen: 127.0.0.1:4222
http: 8222               // monitoring
server_name: "ringlet-1"
max_payload: 1MB
max_connections = 1000
max_pending: 64MB
ping_interval: "2m"
ping_max: 2
write_deadline: "10s"
debug: false; trace: false
log_file: "/tmp/ringlet.log"
pid_file: /tmp/ringlet.pid
ports_file_dir: /tmp

authorization {
  user: "admin"      # the only user
  password: 'pa$$w0rd'
  timeout: 2
}
"#;
        let c = ok(text);
        assert_eq!(c.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(c.port, Some(4222));
        assert_eq!((c.http_host.as_deref(), c.http_port), (None, Some(8222)));
        assert_eq!(c.server_name.as_deref(), Some("ringlet-1"));
        assert_eq!(c.max_payload, Some(1 << 20));
        assert_eq!(c.max_connections, Some(1000));
        assert_eq!(c.max_pending, Some(64 << 20));
        assert_eq!(c.ping_interval, Some(Duration::from_secs(120)));
        assert_eq!(c.ping_max, Some(2));
        assert_eq!(c.write_deadline, Some(Duration::from_secs(10)));
        assert_eq!((c.debug, c.trace), (Some(false), Some(false)));
        assert_eq!(c.log_file.as_deref(), Some("/tmp/ringlet.log"));
        assert_eq!(c.pid_file.as_deref(), Some("/tmp/ringlet.pid"));
        assert_eq!(c.ports_file_dir.as_deref(), Some("/tmp"));
        assert_eq!(
            (c.user.as_deref(), c.pass.as_deref()),
            (Some("admin"), Some("pa$$w0rd"))
        );
        assert_eq!(c.auth_timeout, Some(Duration::from_secs(2)));
        assert!(c.warnings().is_empty());
        // And it round-trips.
        fuzz_config(text.as_bytes());
        let mut out: HString<2048> = HString::new();
        c.write_to(&mut out).unwrap();
        assert_eq!(FileConfig::parse(out.as_bytes()).unwrap(), c);
    }

    /// Every prefix and every single-byte corruption of a full file: never a panic, and what
    /// parses round-trips.
    #[test]
    fn hostile_prefixes_and_corruptions() {
        let text = b"listen: \"[::1]:4222\"\nhttp: h:1\nserver_name: \"a\\x41\\\"\"\nmax_payload: 1kib # c\n\
ping_interval: 1m30s\nwrite_deadline: 3\nauthorization { user: u, pass: 'p', timeout: 1.5 }\n\
debug: on; pid_file: /p\n";
        for end in 0..=text.len() {
            fuzz_config(&text[..end]);
        }
        let specials = b"\0\n\r\t \"'\\{}[]();,:=#/$-.0129kKbBiImMsSx\x7f\xc2\xb5\xff";
        let mut buf = text.to_vec();
        for i in 0..text.len() {
            for &b in specials {
                buf[i] = b;
                fuzz_config(&buf);
            }
            buf[i] = text[i];
        }
    }

    #[test]
    fn hostile_shapes() {
        // Deep or long input: no recursion, no quadratic blow-up, no panic.
        let deep = "{".repeat(100_000);
        let _ = FileConfig::parse(deep.as_bytes());
        let deep = format!("authorization {}", "{".repeat(100_000));
        assert!(FileConfig::parse(deep.as_bytes()).is_err());
        let many = "port: 1\n".repeat(100_000);
        assert_eq!(ok(&many).port, Some(1));
        let long_comment = format!("# {}\nport: 2", "x".repeat(1 << 20));
        assert_eq!(ok(&long_comment).port, Some(2));
        let digits = format!("port: {}", "9".repeat(10_000));
        assert_eq!(err(&digits).kind, ErrorKind::IntegerOverflow);
        let e = FileConfig::parse(&[b'\n'; 70_000]).map(|c| c.port);
        assert_eq!(e, Ok(None));
        let mut bad_line = vec![b'\n'; 70_000];
        bad_line.extend_from_slice(b"x: 1");
        assert_eq!(FileConfig::parse(&bad_line).unwrap_err().line, 70_001);
        for junk in [
            &b"\"\\"[..],
            b"'",
            b"a",
            b"a:",
            b"a: \"\\x",
            b"port: -",
            b"port: 1k",
            b"port: 1.",
            b"{",
            b"}",
            b"//",
            b"/",
            b"port: /",
            b"\xff\xfe",
            b"authorization {",
            b"authorization { user",
            b"authorization { user: ",
            b"authorization { user: 'x",
            b"ping_interval: \"\xce\"",
            b"ping_interval: \"1\xce\xbc\"",
        ] {
            fuzz_config(junk);
        }
    }
}
