//! CONNECT options: a JSON parser that allocates nothing, and the options a client keeps.
//!
//! [`parse_connect`] reads the JSON text of a CONNECT into a [`Connect`] view that borrows the
//! input: one `Option` per field, `None` when the field is absent *or* `null` (async-nats
//! sends `null` for every unset field). [`ClientOptions::apply`] then folds the view into the
//! options the connection keeps, which start at nats-server's defaults (`verbose`, `pedantic`
//! and `echo` true). This mirrors nats-server exactly: it unmarshals each CONNECT into the
//! options it already has (Go's `json.Unmarshal`), so a field that is absent or `null` keeps
//! its previous value, also across a second CONNECT.
//!
//! # What is accepted (Go's `encoding/json`, as nats-server uses it)
//!
//! - Strict JSON (RFC 8259): no comments, no trailing commas, no single quotes, only the escapes
//!   `\" \\ \/ \b \f \n \r \t \uXXXX`, no raw control characters in strings, whitespace only
//!   space, tab, CR and LF, nothing but whitespace after the value. Anything else is
//!   [`ConnectError::Syntax`], and the broker closes the connection without `-ERR`.
//! - The top level is an object or `null` (`null` changes nothing); another JSON value is
//!   [`ConnectError::NotAnObject`].
//! - Keys match field names case-insensitively (Go also folds the Kelvin sign to `k` and the
//!   long s to `s`, and so does this); a repeated key applies again (the last one wins).
//!   Unknown keys are skipped whatever their value, nested objects and arrays included.
//! - Booleans take `true`/`false`/`null`, strings a string or `null`, `protocol` an integer
//!   (no fraction or exponent) that fits 64 bits, or `null`; another type is
//!   [`ConnectError::Type`] (Go reports it too and the broker closes). A syntax error anywhere
//!   wins over a type error, as in Go, which checks the whole text first.
//! - Nesting deeper than [`MAX_DEPTH`] is refused ([`ConnectError::TooDeep`]); Go allows
//!   10 000 levels, but no client nests at all.
//! - Strings are kept raw (escapes and all) in [`JsonStr`], and decoded on demand the way Go
//!   does: surrogate pairs combine, a lone surrogate or an invalid UTF-8 byte becomes U+FFFD.
//!
//! `nkey`, `jwt`, `sig`, `account` and `new_account` are read and type-checked; the broker
//! does not use nkeys or JWTs. nats-server refuses a CONNECT that names an `account` or sets
//! `new_account` (`Authorization Violation`); [`ClientOptions::account_requested`] tells.
//! Route and leafnode fields (`import`, `export`) are skipped as unknown.
//!
//! # After parsing
//!
//! In nats-server's order: a JSON error closes without `-ERR`; then authentication (compare
//! `user`/`pass`/`auth_token` with [`JsonStr::eq_str`], no copy needed) and the account check
//! (`Authorization Violation`); then [`ClientOptions::check`] (`invalid client protocol`, `no
//! responders requires headers support`); then `+OK` if verbose.

use core::fmt;

use super::proto::{ServerError, decode_utf8};

/// The longest client name kept (longer names are cut at a character boundary).
pub const NAME_MAX: usize = 128;
/// The longest client language kept.
pub const LANG_MAX: usize = 32;
/// The longest client version kept.
pub const VERSION_MAX: usize = 32;
/// The deepest nesting of arrays and objects accepted (the top-level object counts).
pub const MAX_DEPTH: usize = 128;

/// A CONNECT field ringlet reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// `verbose`: `+OK` after each operation.
    Verbose,
    /// `pedantic`: check PUB subjects.
    Pedantic,
    /// `echo`: receive one's own publications.
    Echo,
    /// `tls_required`.
    TlsRequired,
    /// `auth_token`.
    AuthToken,
    /// `user`.
    User,
    /// `pass`.
    Pass,
    /// `name`.
    Name,
    /// `lang`.
    Lang,
    /// `version`.
    Version,
    /// `protocol`: 0 or 1.
    Protocol,
    /// `headers`.
    Headers,
    /// `no_responders`.
    NoResponders,
    /// `nkey`.
    Nkey,
    /// `jwt`.
    Jwt,
    /// `sig`.
    Sig,
    /// `account`.
    Account,
    /// `new_account`.
    NewAccount,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Str,
    Int,
}

impl Field {
    const ALL: [Field; 18] = [
        Field::Verbose,
        Field::Pedantic,
        Field::Echo,
        Field::TlsRequired,
        Field::AuthToken,
        Field::User,
        Field::Pass,
        Field::Name,
        Field::Lang,
        Field::Version,
        Field::Protocol,
        Field::Headers,
        Field::NoResponders,
        Field::Nkey,
        Field::Jwt,
        Field::Sig,
        Field::Account,
        Field::NewAccount,
    ];

    /// The JSON key.
    pub const fn key(self) -> &'static str {
        match self {
            Field::Verbose => "verbose",
            Field::Pedantic => "pedantic",
            Field::Echo => "echo",
            Field::TlsRequired => "tls_required",
            Field::AuthToken => "auth_token",
            Field::User => "user",
            Field::Pass => "pass",
            Field::Name => "name",
            Field::Lang => "lang",
            Field::Version => "version",
            Field::Protocol => "protocol",
            Field::Headers => "headers",
            Field::NoResponders => "no_responders",
            Field::Nkey => "nkey",
            Field::Jwt => "jwt",
            Field::Sig => "sig",
            Field::Account => "account",
            Field::NewAccount => "new_account",
        }
    }

    const fn kind(self) -> Kind {
        match self {
            Field::Verbose
            | Field::Pedantic
            | Field::Echo
            | Field::TlsRequired
            | Field::Headers
            | Field::NoResponders
            | Field::NewAccount => Kind::Bool,
            Field::Protocol => Kind::Int,
            _ => Kind::Str,
        }
    }
}

/// Why CONNECT JSON was refused. Each closes the connection without `-ERR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectError {
    /// Not JSON: the problem is at byte `offset`.
    Syntax {
        /// Byte offset of the first byte that cannot be right (the length for a truncated
        /// text).
        offset: usize,
    },
    /// Nested deeper than [`MAX_DEPTH`], at byte `offset`.
    TooDeep {
        /// Byte offset of the opening bracket that went too deep.
        offset: usize,
    },
    /// Valid JSON, but neither an object nor `null`.
    NotAnObject,
    /// A known field with a value of the wrong type.
    Type {
        /// The (first) field in error.
        field: Field,
    },
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Syntax { offset } => write!(f, "invalid JSON at byte {offset}"),
            ConnectError::TooDeep { offset } => {
                write!(f, "JSON nested deeper than {MAX_DEPTH} at byte {offset}")
            }
            ConnectError::NotAnObject => f.write_str("CONNECT options are not a JSON object"),
            ConnectError::Type { field } => {
                write!(f, "CONNECT field {:?} has the wrong type", field.key())
            }
        }
    }
}

impl core::error::Error for ConnectError {}

/// A JSON string as it appears in the input (between the quotes, escapes undecoded), already
/// validated. Decode it with [`JsonStr::chars`], [`JsonStr::decode_into`] or compare it with
/// [`JsonStr::eq_str`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct JsonStr<'a> {
    raw: &'a [u8],
    escaped: bool,
}

impl fmt::Debug for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.chars() {
            fmt::Display::fmt(&c.escape_debug(), f)?;
        }
        f.write_str("\"")
    }
}

/// A decoded string did not fit the output; `needed` bytes would have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecodeTooLong {
    /// The decoded length in bytes.
    pub needed: usize,
}

impl fmt::Display for DecodeTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "decoded string needs {} bytes", self.needed)
    }
}

impl core::error::Error for DecodeTooLong {}

impl<'a> JsonStr<'a> {
    /// The text between the quotes, escapes undecoded.
    pub const fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether the text has escapes (if not, and it is valid UTF-8, it is its own decoding).
    pub const fn is_escaped(&self) -> bool {
        self.escaped
    }

    /// Whether the string is empty.
    pub const fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The decoded characters.
    pub fn chars(&self) -> JsonChars<'a> {
        JsonChars {
            raw: self.raw,
            i: 0,
        }
    }

    /// The decoded length in UTF-8 bytes.
    pub fn decoded_len(&self) -> usize {
        self.chars().map(char::len_utf8).sum()
    }

    /// Whether the decoded string equals `s`.
    pub fn eq_str(&self, s: &str) -> bool {
        if !self.escaped && self.raw == s.as_bytes() {
            return true;
        }
        self.chars().eq(s.chars())
    }

    /// Decodes into `out`, returning the decoded string.
    pub fn decode_into<'b>(&self, out: &'b mut [u8]) -> Result<&'b str, DecodeTooLong> {
        let needed = self.decoded_len();
        let Some(dst) = out.get_mut(..needed) else {
            return Err(DecodeTooLong { needed });
        };
        let mut n = 0;
        for c in self.chars() {
            n += c.encode_utf8(&mut dst[n..]).len();
        }
        Ok(core::str::from_utf8(&dst[..n]).unwrap_or(""))
    }
}

/// The decoded characters of a [`JsonStr`].
#[derive(Clone, Debug)]
pub struct JsonChars<'a> {
    raw: &'a [u8],
    i: usize,
}

fn hex4(b: &[u8]) -> Option<u32> {
    let digits = b.get(..4)?;
    let mut v = 0u32;
    for &d in digits {
        v = v * 16 + char::from(d).to_digit(16)?;
    }
    Some(v)
}

impl Iterator for JsonChars<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let rest = self.raw.get(self.i..)?;
        let &b = rest.first()?;
        if b != b'\\' {
            let (c, w) = decode_utf8(rest);
            self.i += w;
            return Some(c.unwrap_or(char::REPLACEMENT_CHARACTER));
        }
        let e = rest.get(1).copied().unwrap_or(b'\\');
        self.i += 2;
        Some(match e {
            b'b' => '\x08',
            b'f' => '\x0c',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let Some(code) = hex4(&rest[2..]) else {
                    self.i = self.raw.len();
                    return Some(char::REPLACEMENT_CHARACTER);
                };
                self.i += 4;
                if (0xd800..0xe000).contains(&code) {
                    // A high surrogate followed by an escaped low one is a pair; anything else
                    // is U+FFFD for this escape (the next is decoded on its own).
                    let low = rest
                        .get(6..8)
                        .filter(|p| *p == b"\\u")
                        .and_then(|_| hex4(&rest[8..]));
                    match low {
                        Some(lo) if code < 0xdc00 && (0xdc00..0xe000).contains(&lo) => {
                            self.i += 6;
                            let c = 0x10000 + ((code - 0xd800) << 10) + (lo - 0xdc00);
                            char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER)
                        }
                        _ => char::REPLACEMENT_CHARACTER,
                    }
                } else {
                    char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
                }
            }
            other => char::from(other),
        })
    }
}

/// The CONNECT options as sent: `None` when absent or `null`. Strings borrow the JSON text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Connect<'a> {
    /// `verbose`.
    pub verbose: Option<bool>,
    /// `pedantic`.
    pub pedantic: Option<bool>,
    /// `echo`.
    pub echo: Option<bool>,
    /// `tls_required`.
    pub tls_required: Option<bool>,
    /// `auth_token`.
    pub auth_token: Option<JsonStr<'a>>,
    /// `user`.
    pub user: Option<JsonStr<'a>>,
    /// `pass`.
    pub pass: Option<JsonStr<'a>>,
    /// `name`.
    pub name: Option<JsonStr<'a>>,
    /// `lang`.
    pub lang: Option<JsonStr<'a>>,
    /// `version`.
    pub version: Option<JsonStr<'a>>,
    /// `protocol`.
    pub protocol: Option<i64>,
    /// `headers`.
    pub headers: Option<bool>,
    /// `no_responders`.
    pub no_responders: Option<bool>,
    /// `nkey`.
    pub nkey: Option<JsonStr<'a>>,
    /// `jwt`.
    pub jwt: Option<JsonStr<'a>>,
    /// `sig`.
    pub sig: Option<JsonStr<'a>>,
    /// `account`.
    pub account: Option<JsonStr<'a>>,
    /// `new_account`.
    pub new_account: Option<bool>,
}

/// A scanned JSON value.
#[derive(Clone, Copy, Debug)]
enum Value<'a> {
    Null,
    Bool(bool),
    Str(JsonStr<'a>),
    Num { text: &'a [u8], integer: bool },
    Container,
}

struct Lex<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Lex<'a> {
    fn syntax(&self) -> ConnectError {
        ConnectError::Syntax {
            offset: self.i.min(self.s.len()),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Result<(), ConnectError> {
        if self.peek() == Some(b) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    fn literal(&mut self, lit: &[u8]) -> Result<(), ConnectError> {
        for &b in lit {
            self.eat(b)?;
        }
        Ok(())
    }

    /// At `"`: a validated string.
    fn string(&mut self) -> Result<JsonStr<'a>, ConnectError> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            let Some(b) = self.peek() else {
                return Err(self.syntax());
            };
            match b {
                b'"' => {
                    let raw = &self.s[start..self.i];
                    self.i += 1;
                    return Ok(JsonStr { raw, escaped });
                }
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            self.i += 1;
                            for _ in 0..4 {
                                if !self.peek().is_some_and(|h| h.is_ascii_hexdigit()) {
                                    return Err(self.syntax());
                                }
                                self.i += 1;
                            }
                        }
                        _ => return Err(self.syntax()),
                    }
                }
                0x00..=0x1f => return Err(self.syntax()),
                _ => self.i += 1,
            }
        }
    }

    fn digits(&mut self) -> Result<(), ConnectError> {
        if !self.peek().is_some_and(|d| d.is_ascii_digit()) {
            return Err(self.syntax());
        }
        while self.peek().is_some_and(|d| d.is_ascii_digit()) {
            self.i += 1;
        }
        Ok(())
    }

    /// At `-` or a digit: a validated number.
    fn number(&mut self) -> Result<Value<'a>, ConnectError> {
        let start = self.i;
        let mut integer = true;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits()?,
            _ => return Err(self.syntax()),
        }
        if self.peek() == Some(b'.') {
            integer = false;
            self.i += 1;
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integer = false;
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digits()?;
        }
        Ok(Value::Num {
            text: &self.s[start..self.i],
            integer,
        })
    }

    /// One value; containers are skipped (validated) and reported as such.
    fn value(&mut self, depth: usize) -> Result<Value<'a>, ConnectError> {
        match self.peek() {
            Some(b'"') => self.string().map(Value::Str),
            Some(b't') => self.literal(b"true").map(|_| Value::Bool(true)),
            Some(b'f') => self.literal(b"false").map(|_| Value::Bool(false)),
            Some(b'n') => self.literal(b"null").map(|_| Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'{' | b'[') => self.skip_container(depth).map(|_| Value::Container),
            _ => Err(self.syntax()),
        }
    }

    /// At `{` or `[` (entered at nesting `depth`, the enclosing levels): skips the whole
    /// container, validating it, without recursion.
    fn skip_container(&mut self, depth: usize) -> Result<(), ConnectError> {
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum Want {
            Value,
            FirstValue,
            FirstKey,
            Key,
            After,
        }
        // One bit per open level: 1 = object.
        let mut stack = 0u128;
        let mut open = 0usize;
        let mut want = Want::Value;
        loop {
            self.ws();
            match want {
                Want::Value => match self.peek() {
                    Some(c @ (b'{' | b'[')) => {
                        if depth + open + 1 > MAX_DEPTH {
                            return Err(ConnectError::TooDeep { offset: self.i });
                        }
                        let obj = c == b'{';
                        stack = (stack << 1) | u128::from(obj);
                        open += 1;
                        self.i += 1;
                        want = if obj {
                            Want::FirstKey
                        } else {
                            Want::FirstValue
                        };
                    }
                    _ => {
                        self.value(depth + open)?;
                        want = Want::After;
                    }
                },
                Want::FirstValue => {
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        stack >>= 1;
                        open -= 1;
                        want = Want::After;
                    } else {
                        want = Want::Value;
                    }
                }
                Want::FirstKey => {
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        stack >>= 1;
                        open -= 1;
                        want = Want::After;
                    } else {
                        want = Want::Key;
                    }
                }
                Want::Key => {
                    self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    want = Want::Value;
                }
                Want::After => {
                    if open == 0 {
                        return Ok(());
                    }
                    let obj = stack & 1 == 1;
                    match self.peek() {
                        Some(b',') => {
                            self.i += 1;
                            want = if obj { Want::Key } else { Want::Value };
                        }
                        Some(b'}') if obj => {
                            self.i += 1;
                            stack >>= 1;
                            open -= 1;
                        }
                        Some(b']') if !obj => {
                            self.i += 1;
                            stack >>= 1;
                            open -= 1;
                        }
                        _ => return Err(self.syntax()),
                    }
                }
            }
        }
    }

    /// The end of the text: only whitespace may remain.
    fn end(&mut self) -> Result<(), ConnectError> {
        self.ws();
        if self.i == self.s.len() {
            Ok(())
        } else {
            Err(self.syntax())
        }
    }
}

/// Whether a decoded key `c` matches the ASCII letter `e` of a field name, Go's way.
fn fold_eq(c: char, e: u8) -> bool {
    c.to_ascii_lowercase() == char::from(e)
        || (e == b'k' && c == '\u{212a}')
        || (e == b's' && c == '\u{17f}')
}

fn field_for(key: JsonStr<'_>) -> Option<Field> {
    Field::ALL.into_iter().find(|f| {
        let name = f.key().as_bytes();
        if !key.escaped && key.raw.is_ascii() {
            return key.raw.eq_ignore_ascii_case(name);
        }
        let mut chars = key.chars();
        name.iter()
            .all(|&e| chars.next().is_some_and(|c| fold_eq(c, e)))
            && chars.next().is_none()
    })
}

/// Parses a JSON integer text (already validated as an integer literal) into an `i64`.
fn parse_i64(text: &[u8]) -> Option<i64> {
    let (neg, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let mut v: i64 = 0;
    for &d in digits {
        let d = i64::from(d - b'0');
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

/// Stores a value into the view; a wrong type is reported, not stored.
fn store<'a>(c: &mut Connect<'a>, field: Field, v: Value<'a>) -> Result<(), ConnectError> {
    let wrong = ConnectError::Type { field };
    if let Value::Null = v {
        return Ok(());
    }
    match field.kind() {
        Kind::Bool => {
            let Value::Bool(b) = v else { return Err(wrong) };
            let slot = match field {
                Field::Verbose => &mut c.verbose,
                Field::Pedantic => &mut c.pedantic,
                Field::Echo => &mut c.echo,
                Field::TlsRequired => &mut c.tls_required,
                Field::Headers => &mut c.headers,
                Field::NoResponders => &mut c.no_responders,
                _ => &mut c.new_account,
            };
            *slot = Some(b);
        }
        Kind::Str => {
            let Value::Str(s) = v else { return Err(wrong) };
            let slot = match field {
                Field::AuthToken => &mut c.auth_token,
                Field::User => &mut c.user,
                Field::Pass => &mut c.pass,
                Field::Name => &mut c.name,
                Field::Lang => &mut c.lang,
                Field::Version => &mut c.version,
                Field::Nkey => &mut c.nkey,
                Field::Jwt => &mut c.jwt,
                Field::Sig => &mut c.sig,
                _ => &mut c.account,
            };
            *slot = Some(s);
        }
        Kind::Int => {
            let Value::Num {
                text,
                integer: true,
            } = v
            else {
                return Err(wrong);
            };
            c.protocol = Some(parse_i64(text).ok_or(wrong)?);
        }
    }
    Ok(())
}

/// Parses CONNECT's JSON text: see the [module documentation](self).
pub fn parse_connect(json: &[u8]) -> Result<Connect<'_>, ConnectError> {
    let mut lex = Lex { s: json, i: 0 };
    let mut c = Connect::default();
    lex.ws();
    match lex.peek() {
        Some(b'{') => {}
        Some(b'n') => {
            lex.literal(b"null")?;
            lex.end()?;
            return Ok(c);
        }
        _ => {
            lex.value(0)?;
            lex.end()?;
            return Err(ConnectError::NotAnObject);
        }
    }
    lex.i += 1;
    let mut type_error = None;
    lex.ws();
    if lex.peek() == Some(b'}') {
        lex.i += 1;
    } else {
        loop {
            lex.ws();
            let key = lex.string()?;
            lex.ws();
            lex.eat(b':')?;
            lex.ws();
            let v = lex.value(1)?;
            if let Some(field) = field_for(key)
                && let Err(e) = store(&mut c, field, v)
            {
                type_error.get_or_insert(e);
            }
            lex.ws();
            match lex.peek() {
                Some(b',') => lex.i += 1,
                Some(b'}') => {
                    lex.i += 1;
                    break;
                }
                _ => return Err(lex.syntax()),
            }
        }
    }
    lex.end()?;
    match type_error {
        Some(e) => Err(e),
        None => Ok(c),
    }
}

/// Checks that `json` is a JSON object or `null` (how nats-server treats a client's INFO: valid
/// is ignored, invalid closes the connection without `-ERR`). Field types are not checked.
pub fn validate_json_object(json: &[u8]) -> Result<(), ConnectError> {
    let mut lex = Lex { s: json, i: 0 };
    lex.ws();
    let object = matches!(lex.peek(), Some(b'{' | b'n'));
    lex.value(0)?;
    lex.end()?;
    if object {
        Ok(())
    } else {
        Err(ConnectError::NotAnObject)
    }
}

/// A short string kept in a fixed buffer (cut at a character boundary when too long).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FixedStr<const N: usize> {
    buf: [u8; N],
    len: u16,
}

impl<const N: usize> FixedStr<N> {
    /// The empty string.
    pub const fn new() -> Self {
        FixedStr {
            buf: [0; N],
            len: 0,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }

    /// Replaces the text with the decoded `s`, cut after the last whole character that fits.
    /// Returns whether it was cut.
    pub fn set(&mut self, s: &JsonStr<'_>) -> bool {
        let cap = N.min(usize::from(u16::MAX));
        let mut n = 0;
        let mut cut = false;
        for c in s.chars() {
            let w = c.len_utf8();
            if n + w > cap {
                cut = true;
                break;
            }
            c.encode_utf8(&mut self.buf[n..n + w]);
            n += w;
        }
        self.len = n as u16;
        cut
    }
}

impl<const N: usize> Default for FixedStr<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for FixedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The options a connection keeps: nats-server's defaults, updated by each CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Send `+OK` after CONNECT, SUB, UNSUB and PUB.
    pub verbose: bool,
    /// Validate PUB subjects (`-ERR 'Invalid Publish Subject'`).
    pub pedantic: bool,
    /// Deliver the client's own publications to it.
    pub echo: bool,
    /// The client asked for TLS.
    pub tls_required: bool,
    /// The client supports headers (used only if the server does too).
    pub headers: bool,
    /// The client wants no-responders status messages.
    pub no_responders: bool,
    /// The protocol version (0 or 1 are valid).
    pub protocol: i64,
    account: bool,
    new_account: bool,
    name: FixedStr<NAME_MAX>,
    lang: FixedStr<LANG_MAX>,
    version: FixedStr<VERSION_MAX>,
}

impl ClientOptions {
    /// nats-server's defaults before any CONNECT: verbose, pedantic and echo on, the rest off.
    pub const fn new() -> Self {
        ClientOptions {
            verbose: true,
            pedantic: true,
            echo: true,
            tls_required: false,
            headers: false,
            no_responders: false,
            protocol: 0,
            account: false,
            new_account: false,
            name: FixedStr::new(),
            lang: FixedStr::new(),
            version: FixedStr::new(),
        }
    }

    /// Applies a parsed CONNECT: fields that were given replace the current values, the
    /// others stay.
    pub fn apply(&mut self, c: &Connect<'_>) {
        let set = |dst: &mut bool, v: Option<bool>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut self.verbose, c.verbose);
        set(&mut self.pedantic, c.pedantic);
        set(&mut self.echo, c.echo);
        set(&mut self.tls_required, c.tls_required);
        set(&mut self.headers, c.headers);
        set(&mut self.no_responders, c.no_responders);
        set(&mut self.new_account, c.new_account);
        if let Some(p) = c.protocol {
            self.protocol = p;
        }
        if let Some(a) = c.account {
            self.account = !a.is_empty();
        }
        if let Some(s) = c.name {
            self.name.set(&s);
        }
        if let Some(s) = c.lang {
            self.lang.set(&s);
        }
        if let Some(s) = c.version {
            self.version.set(&s);
        }
    }

    /// Parses `json` and applies it; on error nothing changes. Returns the view (for the
    /// credentials).
    pub fn update<'a>(&mut self, json: &'a [u8]) -> Result<Connect<'a>, ConnectError> {
        let c = parse_connect(json)?;
        self.apply(&c);
        Ok(c)
    }

    /// The client's name (at most [`NAME_MAX`] bytes kept).
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The client's language (at most [`LANG_MAX`] bytes kept).
    pub fn lang(&self) -> &str {
        self.lang.as_str()
    }

    /// The client library's version (at most [`VERSION_MAX`] bytes kept).
    pub fn version(&self) -> &str {
        self.version.as_str()
    }

    /// Whether the client named an account or asked for a new one, which nats-server refuses
    /// with `Authorization Violation`.
    pub fn account_requested(&self) -> bool {
        self.account || self.new_account
    }

    /// Whether headers are on for this connection: both sides support them.
    pub fn headers_enabled(&self, server_headers: bool) -> bool {
        server_headers && self.headers
    }

    /// nats-server's checks after authentication, in its order: `protocol` must be 0 or 1,
    /// and `no_responders` needs headers. Both errors close the connection.
    pub fn check(&self, server_headers: bool) -> Result<(), ServerError<'static>> {
        if !(0..=1).contains(&self.protocol) {
            return Err(ServerError::InvalidClientProtocol);
        }
        if self.no_responders && !self.headers_enabled(server_headers) {
            return Err(ServerError::NoRespondersRequiresHeaders);
        }
        Ok(())
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Fuzz entry point for CONNECT JSON: parsing never panics, and what parses is consistent
/// (decoding agrees with its length and with [`JsonStr::eq_str`], a parsed object is a valid
/// JSON object, applying it keeps the stored strings within their bounds). Panics (by
/// assertion) only on an inconsistency: a bug.
pub fn fuzz_connect(data: &[u8]) {
    let parsed = parse_connect(data);
    let valid = validate_json_object(data);
    if let Ok(c) = &parsed {
        assert_eq!(valid, Ok(()), "parsed CONNECT must be a valid JSON object");
        let mut opts = ClientOptions::new();
        opts.apply(c);
        assert!(opts.name().len() <= NAME_MAX);
        assert!(opts.lang().len() <= LANG_MAX);
        assert!(opts.version().len() <= VERSION_MAX);
        let _ = opts.check(true);
        let strings = [
            c.auth_token,
            c.user,
            c.pass,
            c.name,
            c.lang,
            c.version,
            c.nkey,
            c.jwt,
            c.sig,
            c.account,
        ];
        let mut buf = [0u8; 4 * 4096];
        for s in strings.into_iter().flatten() {
            let len = s.decoded_len();
            if let Ok(text) = s.decode_into(&mut buf) {
                assert_eq!(text.len(), len);
                assert!(s.eq_str(text), "a string equals its own decoding");
            }
        }
    }
    // A syntax error is a syntax error for both.
    if let Err(ConnectError::Syntax { .. } | ConnectError::TooDeep { .. }) = valid {
        assert!(parsed.is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;

    fn p(s: &str) -> Result<Connect<'_>, ConnectError> {
        parse_connect(s.as_bytes())
    }

    fn dec(s: JsonStr<'_>) -> String {
        s.chars().collect()
    }

    #[test]
    fn real_clients() {
        // async-nats: nulls for every unset field, and unknown keys.
        let c = p(r#"{"verbose":false,"pedantic":false,"jwt":null,"nkey":null,"signature":null,"name":null,"echo":true,"lang":"rust","version":"0.33.0","protocol":1,"tls_required":false,"user":null,"pass":null,"auth_token":null,"headers":true,"no_responders":true}"#).unwrap();
        assert_eq!(
            (c.verbose, c.pedantic, c.echo, c.headers, c.no_responders),
            (Some(false), Some(false), Some(true), Some(true), Some(true))
        );
        assert_eq!(
            (c.name, c.user, c.jwt, c.protocol),
            (None, None, None, Some(1))
        );
        assert_eq!(dec(c.lang.unwrap()), "rust");
        // nats-py: spaces after colons and commas.
        let c = p(r#"{"verbose": false, "pedantic": false, "lang": "python3", "version": "2.16.0", "protocol": 1, "headers": true, "no_responders": true, "echo": true}"#).unwrap();
        assert_eq!(c.verbose, Some(false));
        // nats.js and the C client.
        let c = p(r#"{"protocol":1,"version":"2.29.1","lang":"nats.js","echo":true,"no_responders":true,"headers":true,"verbose":false,"pedantic":false}"#).unwrap();
        assert_eq!(dec(c.version.unwrap()), "2.29.1");
        let c = p(r#"{"verbose":false,"pedantic":false,"tls_required":false,"name":"","lang":"C","version":"3.3.0","protocol":1,"echo":true,"headers":true,"no_responders":true}"#).unwrap();
        assert!(c.name.unwrap().is_empty());
    }

    #[test]
    fn defaults_and_merging() {
        let mut o = ClientOptions::new();
        assert!(o.verbose && o.pedantic && o.echo && !o.headers);
        o.update(b"{}").unwrap();
        assert!(o.verbose && o.pedantic && o.echo);
        o.update(br#"{"verbose":false,"name":"svc"}"#).unwrap();
        assert!(!o.verbose && o.pedantic);
        // Omitted and null keep the previous value, also across CONNECTs.
        o.update(br#"{"verbose":null,"name":null}"#).unwrap();
        assert!(!o.verbose);
        assert_eq!(o.name(), "svc");
        o.update(b"null").unwrap();
        assert_eq!(o.name(), "svc");
        // An error changes nothing.
        assert!(o.update(br#"{"verbose":true,"echo":"yes"}"#).is_err());
        assert!(!o.verbose && o.echo);
        // Repeated keys: the last wins; null does not reset.
        o.update(br#"{"echo":false,"echo":true,"echo":null}"#)
            .unwrap();
        assert!(o.echo);
    }

    #[test]
    fn checks_in_order() {
        let mut o = ClientOptions::new();
        o.update(br#"{"protocol":2}"#).unwrap();
        assert_eq!(o.check(true), Err(ServerError::InvalidClientProtocol));
        o.update(br#"{"protocol":-1}"#).unwrap();
        assert_eq!(o.check(true), Err(ServerError::InvalidClientProtocol));
        o.update(br#"{"protocol":0,"no_responders":true}"#).unwrap();
        assert_eq!(o.check(true), Err(ServerError::NoRespondersRequiresHeaders));
        o.update(br#"{"headers":true}"#).unwrap();
        assert_eq!(o.check(true), Ok(()));
        assert_eq!(
            o.check(false),
            Err(ServerError::NoRespondersRequiresHeaders)
        );
        assert!(o.headers_enabled(true) && !o.headers_enabled(false));
        assert!(!o.account_requested());
        o.update(br#"{"account":"A"}"#).unwrap();
        assert!(o.account_requested());
        o.update(br#"{"account":""}"#).unwrap();
        assert!(!o.account_requested());
        o.update(br#"{"new_account":true}"#).unwrap();
        assert!(o.account_requested());
    }

    #[test]
    fn unknown_fields_skipped() {
        let c = p(r#"{"x":{"a":[1,2,{"b":null}],"c":{}},"y":[],"z":[[[]]],"echo":false,"import":{"allow":["a"]},"n":-1.5e+3,"s":"\u00e9"}"#).unwrap();
        assert_eq!(c.echo, Some(false));
        // Deep but within the limit.
        let mut s = String::from(r#"{"deep":"#);
        for _ in 0..(MAX_DEPTH - 1) {
            s.push('[');
        }
        for _ in 0..(MAX_DEPTH - 1) {
            s.push(']');
        }
        s.push('}');
        assert!(p(&s).is_ok());
        let deeper = s.replacen('[', "[[", 1).replacen(']', "]]", 1);
        assert!(matches!(p(&deeper), Err(ConnectError::TooDeep { .. })));
    }

    #[test]
    fn keys_fold_case() {
        let c = p(r#"{"VERBOSE":false,"Echo":false,"No_Responders":true,"verbo\u0073e":true}"#)
            .unwrap();
        assert_eq!(
            (c.verbose, c.echo, c.no_responders),
            (Some(true), Some(false), Some(true))
        );
        // Go folds the Kelvin sign and the long s.
        let c = p("{\"\u{212a}ey\":1,\"tl\u{17f}_required\":true,\"n\u{212a}ey\":\"k\"}").unwrap();
        assert_eq!(c.tls_required, Some(true));
        assert_eq!(dec(c.nkey.unwrap()), "k");
    }

    #[test]
    fn strings_and_escapes() {
        let c = p(r#"{"name":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00\ud800x\udc00","user":"plain","pass":"p\u0061ss"}"#).unwrap();
        let name = c.name.unwrap();
        assert_eq!(dec(name), "a\"b\\c/d\x08\x0c\n\r\té😀\u{fffd}x\u{fffd}");
        assert!(name.is_escaped());
        let mut buf = [0u8; 64];
        assert_eq!(name.decode_into(&mut buf).unwrap(), dec(name));
        assert_eq!(
            name.decode_into(&mut buf[..3]),
            Err(DecodeTooLong {
                needed: name.decoded_len()
            })
        );
        assert!(c.user.unwrap().eq_str("plain"));
        assert!(c.pass.unwrap().eq_str("pass"));
        assert!(!c.pass.unwrap().eq_str("pas"));
        // Invalid UTF-8 inside a string is accepted and decodes to U+FFFD per byte.
        let c = parse_connect(b"{\"name\":\"a\xff\xe2\x82b\"}").unwrap();
        assert_eq!(dec(c.name.unwrap()), "a\u{fffd}\u{fffd}\u{fffd}b");
        // Long names are cut at a character boundary.
        let long = "é".repeat(100);
        let mut o = ClientOptions::new();
        o.update(std::format!(r#"{{"name":"{long}","lang":"x"}}"#).as_bytes())
            .unwrap();
        assert_eq!(o.name(), "é".repeat(64));
        assert_eq!(o.lang(), "x");
    }

    #[test]
    fn protocol_is_an_integer() {
        assert_eq!(p(r#"{"protocol":1}"#).unwrap().protocol, Some(1));
        assert_eq!(p(r#"{"protocol":-0}"#).unwrap().protocol, Some(0));
        assert_eq!(
            p(r#"{"protocol":9223372036854775807}"#).unwrap().protocol,
            Some(i64::MAX)
        );
        assert_eq!(
            p(r#"{"protocol":-9223372036854775808}"#).unwrap().protocol,
            Some(i64::MIN)
        );
        let ty = Err(ConnectError::Type {
            field: Field::Protocol,
        });
        for bad in [
            r#"{"protocol":1.0}"#,
            r#"{"protocol":1e0}"#,
            r#"{"protocol":"1"}"#,
            r#"{"protocol":true}"#,
            r#"{"protocol":[1]}"#,
            r#"{"protocol":9223372036854775808}"#,
        ] {
            assert_eq!(p(bad), ty, "{bad}");
        }
    }

    #[test]
    fn type_errors() {
        assert_eq!(
            p(r#"{"verbose":"true"}"#),
            Err(ConnectError::Type {
                field: Field::Verbose
            })
        );
        assert_eq!(
            p(r#"{"name":1}"#),
            Err(ConnectError::Type { field: Field::Name })
        );
        assert_eq!(
            p(r#"{"user":{"a":1}}"#),
            Err(ConnectError::Type { field: Field::User })
        );
        // A syntax error later wins over a type error.
        assert!(matches!(
            p(r#"{"name":1,"x":}"#),
            Err(ConnectError::Syntax { .. })
        ));
        for not_object in ["[]", "1", "\"x\"", "true", " [1,2] "] {
            assert_eq!(
                p(not_object),
                Err(ConnectError::NotAnObject),
                "{not_object}"
            );
        }
        assert_eq!(p(" null "), Ok(Connect::default()));
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            " ",
            "{",
            "}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{,}",
            "{\"a\":1 \"b\":2}",
            "{'a':1}",
            "{a:1}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":-}",
            "{\"a\":1e}",
            "{\"a\":tru}",
            "{\"a\":nul}",
            "{\"a\":NaN}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":\"\t\"}",
            "{\"a\":\"unterminated}",
            "{\"a\":[1,]}",
            "{\"a\":[1 2]}",
            "{\"a\":{\"b\" 1}}",
            "{\"a\":[}",
            "{\"a\":{]}",
            "{} x",
            "{}{}",
            "{\"a\":1}/* c */",
            "\u{feff}{}",
            "null x",
        ] {
            assert!(
                matches!(p(bad), Err(ConnectError::Syntax { .. })),
                "{bad:?} -> {:?}",
                p(bad)
            );
        }
        assert_eq!(p("{\"a\":1,}"), Err(ConnectError::Syntax { offset: 7 }));
        assert_eq!(validate_json_object(b"{\"a\":[1,{}]}"), Ok(()));
        assert_eq!(validate_json_object(b"null"), Ok(()));
        assert_eq!(validate_json_object(b"[]"), Err(ConnectError::NotAnObject));
        assert!(validate_json_object(b"{").is_err());
    }

    #[test]
    fn fuzz_entry_smoke() {
        fuzz_connect(b"");
        fuzz_connect(br#"{"name":"\ud83d\ude00","user":"u","pass":null}"#);
        fuzz_connect(b"{\"name\":\"\xff\"}");
        fuzz_connect(&[b'['; 300]);
    }
}
