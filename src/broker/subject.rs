//! Subjects: tokens, validation and wildcard matching, as nats-server does them.
//!
//! A subject is a byte string split into tokens on `.`. In a subscription, a token that is
//! exactly `*` matches any one token, and a token that is exactly `>` matches one or more
//! tokens and must be the last one. A wildcard character inside a longer token (`foo*`, `a>b`)
//! is an ordinary character.
//!
//! The rules, from nats-server's `server/sublist.go`:
//!
//! - [`is_valid_subject`] (`IsValidSubject`, used here for SUB): not empty, no empty token (so
//!   no leading, trailing or doubled `.`), nothing after a `>` token, and no whitespace
//!   (space, `\t`, `\n`, `\r`, `\f`) anywhere. A failing SUB gets `-ERR 'Invalid Subject'` and
//!   the connection stays open.
//! - [`is_valid_literal_subject`] (`IsValidLiteralSubject`, used for PUB when the client asked
//!   for `pedantic`): no empty token and no wildcard token. Whitespace is not checked there (a
//!   PUB subject cannot contain a space or tab anyway: they separate the arguments). Without
//!   `pedantic` a PUB subject is not validated at all.
//! - Matching ([`matches()`]) treats every token of the *published* subject as literal: a PUB to
//!   `foo.*` is delivered to `foo.*`, `foo.>` and `>` subscribers, not to `foo.bar`.
//!
//! nats-server 2.9.10 validates SUB subjects only by inserting them in its sublist, which checks
//! the empty-token and `>`-last rules but not whitespace; the only whitespace that can reach a
//! SUB subject through the protocol is `\f` (the others separate arguments). ringlet applies
//! `IsValidSubject` in full, so `SUB a\fb 1` is refused here where 2.9.10 would accept it.
//!
//! Nothing here allocates or panics, whatever the input.

/// The token separator, `.`.
pub const SEP: u8 = b'.';
/// The one-token wildcard, `*`, when it is a whole token.
pub const PWC: u8 = b'*';
/// The tail wildcard, `>`, when it is a whole (and the last) token.
pub const FWC: u8 = b'>';

/// What kind of token a subscription token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An ordinary token, compared byte for byte.
    Literal,
    /// `*`: any one token.
    Pwc,
    /// `>`: one or more tokens (only valid as the last token).
    Fwc,
}

/// Classifies one token: `*` and `>` are wildcards only as whole tokens.
pub fn token_kind(token: &[u8]) -> TokenKind {
    match token {
        [PWC] => TokenKind::Pwc,
        [FWC] => TokenKind::Fwc,
        _ => TokenKind::Literal,
    }
}

/// The tokens of `subject`, split on `.` exactly like Go's `strings.Split`: an empty subject
/// yields one empty token, and `a..b` yields `a`, ``, `b`.
pub fn tokens(subject: &[u8]) -> Tokens<'_> {
    Tokens {
        rest: subject,
        done: false,
    }
}

/// Iterator over the tokens of a subject, from [`tokens`].
#[derive(Clone, Debug)]
pub struct Tokens<'a> {
    rest: &'a [u8],
    done: bool,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        match self.rest.iter().position(|&b| b == SEP) {
            Some(i) => {
                let (token, rest) = self.rest.split_at(i);
                self.rest = rest.get(1..).unwrap_or(&[]);
                Some(token)
            }
            None => {
                self.done = true;
                Some(self.rest)
            }
        }
    }
}

impl core::iter::FusedIterator for Tokens<'_> {}

/// Whitespace that nats-server's `IsValidSubject` refuses inside a subject.
fn is_subject_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c)
}

/// Whether `subject` is a valid subscription subject (nats-server's `IsValidSubject`): not
/// empty, no empty token, no token after `>`, no whitespace.
pub fn is_valid_subject(subject: &[u8]) -> bool {
    if subject.is_empty() {
        return false;
    }
    let mut after_fwc = false;
    for token in tokens(subject) {
        if token.is_empty() || after_fwc {
            return false;
        }
        if token.iter().any(|&b| is_subject_space(b)) {
            return false;
        }
        if token_kind(token) == TokenKind::Fwc {
            after_fwc = true;
        }
    }
    true
}

/// Whether `subject` is a valid literal subject (nats-server's `IsValidLiteralSubject`, the
/// pedantic PUB check): no empty token (hence not empty) and no wildcard token.
pub fn is_valid_literal_subject(subject: &[u8]) -> bool {
    tokens(subject).all(|t| !t.is_empty() && token_kind(t) == TokenKind::Literal)
}

/// Whether `subject` is valid and literal (nats-server's `IsValidPublishSubject`).
pub fn is_valid_publish_subject(subject: &[u8]) -> bool {
    is_valid_subject(subject) && is_literal(subject)
}

/// Whether `subject` has no wildcard token (nats-server's `subjectIsLiteral`; it does not check
/// validity).
pub fn is_literal(subject: &[u8]) -> bool {
    tokens(subject).all(|t| token_kind(t) == TokenKind::Literal)
}

/// Whether a message published to `subject` (every token literal) is delivered to a
/// subscription on `pattern`.
///
/// Both are expected to be valid (`pattern` by [`is_valid_subject`], `subject` with no empty
/// token); for other inputs the answer is `false` when `subject` has an empty token (the
/// reference matches nothing then) and otherwise follows the token rules mechanically. Never
/// panics.
pub fn matches(pattern: &[u8], subject: &[u8]) -> bool {
    if subject.is_empty() || tokens(subject).any(|t| t.is_empty()) {
        return false;
    }
    let mut subj = tokens(subject);
    let mut pat = tokens(pattern).peekable();
    while let Some(p) = pat.next() {
        match token_kind(p) {
            // `>` as the last pattern token matches one or more remaining tokens.
            TokenKind::Fwc if pat.peek().is_none() => return subj.next().is_some(),
            TokenKind::Pwc => {
                if subj.next().is_none() {
                    return false;
                }
            }
            // A `>` that is not last never matches (the pattern is invalid).
            TokenKind::Fwc => return false,
            TokenKind::Literal => match subj.next() {
                Some(s) if s == p => {}
                _ => return false,
            },
        }
    }
    subj.next().is_none()
}

/// Fuzz entry point for subject validation and matching.
///
/// Splits `data` at its first `0x00` into a pattern and a subject and checks that the
/// validators and [`matches()`] agree with each other and with a sublist holding that one
/// pattern. Panics (by assertion) only when they disagree: a bug.
pub fn fuzz_subject(data: &[u8]) {
    let (pattern, subject) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let valid = is_valid_subject(pattern);
    let literal = is_valid_literal_subject(pattern);
    // Literal-valid and whitespace-free implies subscription-valid.
    if literal && !pattern.iter().any(|&b| is_subject_space(b)) {
        assert!(valid, "a valid literal subject is a valid subject");
    }
    if is_valid_publish_subject(pattern) {
        assert!(literal);
        assert!(
            matches(pattern, pattern),
            "a literal subject matches itself"
        );
    }
    let m = matches(pattern, subject);
    if m {
        assert!(
            !subject.is_empty() && tokens(subject).all(|t| !t.is_empty()),
            "only subjects without empty tokens match"
        );
    }
    // The sublist must agree with `matches` for valid patterns.
    let mut storage = super::sublist::SublistStorage::<u8, 2, 64, 256, 4>::new();
    let Ok(mut sublist) = storage.sublist(0x5eed) else {
        return;
    };
    match sublist.insert(pattern, None, 7) {
        Ok(_) => {
            assert!(valid, "the sublist accepts only valid subjects");
            let mut out = [0u8; 2];
            let found = sublist.match_subject(subject, &mut out).map(|r| r.len());
            assert_eq!(found, Ok(usize::from(m)), "sublist and matches() disagree");
            // Twice: the second answer may come from the cache.
            let found = sublist.match_subject(subject, &mut out).map(|r| r.len());
            assert_eq!(found, Ok(usize::from(m)), "cached answer differs");
        }
        Err(super::sublist::InsertError::InvalidSubject) => assert!(!valid),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn tokens_split_like_go() {
        let t: Vec<&[u8]> = tokens(b"a..b").collect();
        assert_eq!(t, [&b"a"[..], b"", b"b"]);
        let t: Vec<&[u8]> = tokens(b"").collect();
        assert_eq!(t, [&b""[..]]);
        let t: Vec<&[u8]> = tokens(b"foo.").collect();
        assert_eq!(t, [&b"foo"[..], b""]);
        let t: Vec<&[u8]> = tokens(b".").collect();
        assert_eq!(t, [&b""[..], b""]);
    }

    // From nats-server's sublist_test.go (TestSublistValidSubjects and friends), plus the
    // whitespace cases of IsValidSubject.
    #[test]
    fn valid_subjects_table() {
        let cases: &[(&[u8], bool)] = &[
            (b".", false),
            (b".foo", false),
            (b"foo.", false),
            (b"foo..bar", false),
            (b"", false),
            (b"foo", true),
            (b"foo.bar", true),
            (b"foo.*", true),
            (b"*", true),
            (b">", true),
            (b"foo.>", true),
            (b"foo.*.>", true),
            (b"*.>", true),
            (b"foo.>.bar", false),
            (b">.bar", false),
            (b">.>", false),
            (b"foo*", true),
            (b"foo.bar*", true),
            (b"foo*.>", true),
            (b"foo.*bar", true),
            (b"foo>", true),
            (b"a>b.c", true),
            (b"foo.>>", true),
            (b"foo.**", true),
            (b"foo bar", false),
            (b"foo\tbar", false),
            (b"foo\nbar", false),
            (b"foo\rbar", false),
            (b"foo\x0cbar", false),
            (b" ", false),
            (b"foo. .bar", false),
            (b"foo\x0bbar", true), // \v is not in IsValidSubject's list
            (b"foo\x00bar", true),
            ("señor.ñ".as_bytes(), true),
            (b"$SYS.>", true),
            (b"_INBOX.abc.*", true),
        ];
        for &(s, want) in cases {
            assert_eq!(
                is_valid_subject(s),
                want,
                "{:?}",
                std::string::String::from_utf8_lossy(s)
            );
        }
    }

    #[test]
    fn literal_subjects_table() {
        let cases: &[(&[u8], bool)] = &[
            (b"foo", true),
            (b".foo", false),
            (b"foo.", false),
            (b"foo..bar", false),
            (b"foo.bar.*", false),
            (b"foo.bar.>", false),
            (b"*", false),
            (b">", false),
            (b"foo*", true),
            (b"foo**", true),
            (b"foo.**", true),
            (b"foo*bar", true),
            (b"foo.*bar", true),
            (b"foo*.bar", true),
            (b"*bar", true),
            (b"foo>", true),
            (b"foo>>", true),
            (b"foo.>>", true),
            (b"foo>bar", true),
            (b"foo.>bar", true),
            (b"foo>.bar", true),
            (b">bar", true),
            (b"", false),
        ];
        for &(s, want) in cases {
            assert_eq!(is_valid_literal_subject(s), want, "{:?}", s);
        }
        assert!(is_valid_publish_subject(b"foo.bar"));
        assert!(!is_valid_publish_subject(b"foo.*"));
        assert!(!is_valid_publish_subject(b"foo bar"));
        assert!(is_literal(b"foo..bar"));
        assert!(!is_literal(b"a.>"));
    }

    // From nats-server's TestSublistMatchLiterals.
    #[test]
    fn matches_table() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"foo", b"foo", true),
            (b"foo", b"bar", false),
            (b"*", b"foo", true),
            (b">", b"foo", true),
            (b"foo.*", b"foo.bar", true),
            (b"foo.>", b"foo.bar", true),
            (b"foo.*", b"foo.bar.baz", false),
            (b"foo.>", b"foo.bar.baz", true),
            (b"foo.>", b"foo", false),
            (b"*.*", b"foo", false),
            (b"*.bar", b"foo.bar", true),
            (b"*.*.baz", b"foo.bar.baz", true),
            (b"*.*.*", b"foo.bar", false),
            (b"*.>", b"foo.bar", true),
            (b"foo*", b"foo", false),
            (b"foo*", b"foo*", true),
            (b"foo>", b"foo>", true),
            (b"foo.*", b"foo.*", true),
            (b"foo.bar", b"foo.*", false),
            (b"foo.>", b"foo.>", true),
            (b">", b"foo..bar", false),
            (b"foo", b"", false),
            (b"*", b"", false),
            (b">", b".", false),
        ];
        for &(p, s, want) in cases {
            assert_eq!(matches(p, s), want, "{:?} vs {:?}", p, s);
        }
    }

    #[test]
    fn fuzz_entry_smoke() {
        fuzz_subject(b"foo.*\0foo.bar");
        fuzz_subject(b"foo.>\0foo");
        fuzz_subject(b">\0");
        fuzz_subject(b"");
        fuzz_subject(b"a.b.c");
        fuzz_subject(b"\0\0\0");
    }
}
