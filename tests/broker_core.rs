//! The broker's sans-IO core end to end, without sockets: a realistic client session parsed
//! split at every byte boundary, a miniature broker built from the public pieces (parser,
//! CONNECT options, sublist, proto writers) delivering byte-exact MSG/HMSG lines, and hostile
//! input from a seeded generator.

use ringlet::broker::connect::{self, ClientOptions};
use ringlet::broker::parser::{self, Op, ParseError, Parser, ParserConfig};
use ringlet::broker::proto::{self, ServerError, SliceSink};
use ringlet::broker::subject;
use ringlet::broker::sublist::{InsertError, SubKey, Sublist, SublistStorage};

/// xorshift64*: deterministic test input.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// An owned operation; payload chunks of one kind are merged.
#[derive(Clone, Debug, PartialEq, Eq)]
enum O {
    Connect(Vec<u8>),
    Info(Vec<u8>),
    Ping,
    Pong,
    Ok,
    Err(Vec<u8>),
    Sub(Vec<u8>, Option<Vec<u8>>, Vec<u8>),
    Unsub(Vec<u8>, u32),
    Pub(Vec<u8>, Option<Vec<u8>>, Option<u32>, u32),
    Hdr(Vec<u8>),
    Body(Vec<u8>),
    End,
}

fn own(op: Op<'_>) -> O {
    match op {
        Op::Connect(t) => O::Connect(t.to_vec()),
        Op::Info(t) => O::Info(t.to_vec()),
        Op::Ping => O::Ping,
        Op::Pong => O::Pong,
        Op::Ok => O::Ok,
        Op::Err(t) => O::Err(t.to_vec()),
        Op::Sub {
            subject,
            queue,
            sid,
        } => O::Sub(subject.to_vec(), queue.map(<[u8]>::to_vec), sid.to_vec()),
        Op::Unsub { sid, max } => O::Unsub(sid.to_vec(), max),
        Op::Pub {
            subject,
            reply,
            header_len,
            total_len,
        } => O::Pub(
            subject.to_vec(),
            reply.map(<[u8]>::to_vec),
            header_len,
            total_len,
        ),
        Op::Headers(c) => O::Hdr(c.to_vec()),
        Op::Payload(c) => O::Body(c.to_vec()),
        Op::PayloadEnd => O::End,
    }
}

/// Parses `segments` as a broker would: headers on after CONNECT.
fn collect(segments: &[&[u8]]) -> (Vec<O>, Option<ParseError>) {
    let mut p = Parser::new(ParserConfig::DEFAULT);
    let mut ops: Vec<O> = Vec::new();
    for seg in segments {
        let mut rest = *seg;
        while !rest.is_empty() {
            match p.parse(rest) {
                Ok((n, op)) => {
                    assert!(n > 0);
                    rest = &rest[n..];
                    let Some(op) = op else {
                        assert!(rest.is_empty());
                        continue;
                    };
                    let connect = matches!(op, Op::Connect(_));
                    match (ops.last_mut(), own(op)) {
                        (Some(O::Hdr(a)), O::Hdr(b)) | (Some(O::Body(a)), O::Body(b)) => {
                            a.extend_from_slice(&b)
                        }
                        (_, o) => ops.push(o),
                    }
                    if connect {
                        p.set_headers(true);
                    }
                }
                Err(e) => return (ops, Some(e)),
            }
        }
    }
    (ops, None)
}

const SESSION: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"lang\":\"python3\",\
\"version\":\"2.16.0\",\"protocol\":1,\"headers\":true,\"no_responders\":true,\"echo\":true}\r\n\
PING\r\n\
SUB foo.* 1\r\n\
SUB foo.bar workers 2\r\n\
SUB _INBOX.abc.*  3\r\n\
PUB foo.bar 11\r\nhello world\r\n\
PUB foo.bar _INBOX.abc.1 4\r\nhi\r\n\r\n\
HPUB foo.bar  22 27\r\nNATS/1.0\r\nX: 12345\r\n\r\nhello\r\n\
HPUB foo.bar _INBOX.abc.2 3 3\r\nabc\r\n\
PUB empty 0\r\n\r\n\
UNSUB 1 \r\n\
UNSUB 2 10\r\n\
pong\r\n\
+OK\r\n\
PING\r\n";

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn expected_session() -> Vec<O> {
    vec![
        O::Connect(SESSION[8..SESSION.iter().position(|&c| c == b'\r').unwrap()].to_vec()),
        O::Ping,
        O::Sub(b("foo.*"), None, b("1")),
        O::Sub(b("foo.bar"), Some(b("workers")), b("2")),
        O::Sub(b("_INBOX.abc.*"), None, b("3")),
        O::Pub(b("foo.bar"), None, None, 11),
        O::Body(b("hello world")),
        O::End,
        O::Pub(b("foo.bar"), Some(b("_INBOX.abc.1")), None, 4),
        O::Body(b("hi\r\n")),
        O::End,
        O::Pub(b("foo.bar"), None, Some(22), 27),
        O::Hdr(b("NATS/1.0\r\nX: 12345\r\n\r\n")),
        O::Body(b("hello")),
        O::End,
        O::Pub(b("foo.bar"), Some(b("_INBOX.abc.2")), Some(3), 3),
        O::Hdr(b("abc")),
        O::End,
        O::Pub(b("empty"), None, None, 0),
        O::End,
        O::Unsub(b("1"), 0),
        O::Unsub(b("2"), 10),
        O::Pong,
        O::Ok,
        O::Ping,
    ]
}

#[test]
fn session_whole_and_byte_at_a_time() {
    let want = (expected_session(), None);
    assert_eq!(collect(&[SESSION]), want);
    let bytes: Vec<&[u8]> = SESSION.chunks(1).collect();
    assert_eq!(collect(&bytes), want);
}

#[test]
fn session_split_at_every_point() {
    let want = (expected_session(), None);
    for cut in 0..=SESSION.len() {
        let (a, rest) = SESSION.split_at(cut);
        assert_eq!(collect(&[a, rest]), want, "split at {cut}");
    }
}

#[test]
fn session_split_at_every_pair_of_points() {
    // The second half of the session (payloads, HPUB, UNSUB), cut twice everywhere.
    let start = SESSION.windows(4).position(|w| w == b"PUB ").unwrap();
    let tail = &SESSION[start..];
    let want = {
        let mut ops = Vec::new();
        let mut rest = tail;
        let mut parser = Parser::new(ParserConfig::DEFAULT);
        parser.set_headers(true);
        while !rest.is_empty() {
            let (n, op) = parser.parse(rest).unwrap();
            rest = &rest[n..];
            if let Some(op) = op {
                ops.push(own(op));
            }
        }
        ops
    };
    let merge = |ops: Vec<O>| {
        let mut out: Vec<O> = Vec::new();
        for o in ops {
            match (out.last_mut(), o) {
                (Some(O::Hdr(a)), O::Hdr(b)) | (Some(O::Body(a)), O::Body(b)) => {
                    a.extend_from_slice(&b)
                }
                (_, o) => out.push(o),
            }
        }
        out
    };
    let want = merge(want);
    let run = |segs: &[&[u8]]| {
        let mut parser = Parser::new(ParserConfig::DEFAULT);
        parser.set_headers(true);
        let mut ops = Vec::new();
        for seg in segs {
            let mut rest = *seg;
            while !rest.is_empty() {
                let (n, op) = parser.parse(rest).unwrap();
                rest = &rest[n..];
                if let Some(op) = op {
                    ops.push(own(op));
                }
            }
        }
        merge(ops)
    };
    for i in 0..=tail.len() {
        for j in i..=tail.len() {
            let segs = [&tail[..i], &tail[i..j], &tail[j..]];
            assert_eq!(run(&segs), want, "cuts at {i} and {j}");
        }
    }
}

#[test]
fn session_random_segmentations() {
    let want = (expected_session(), None);
    let mut rng = Rng::new(1);
    for _ in 0..500 {
        let mut segs = Vec::new();
        let mut rest = SESSION;
        while !rest.is_empty() {
            let n = 1 + rng.below(40).min(rest.len() - 1);
            let (a, b) = rest.split_at(n);
            segs.push(a);
            rest = b;
        }
        assert_eq!(collect(&segs), want);
    }
    // And through the exported fuzz entry point, with every configuration byte.
    for flags in 0..=255u8 {
        let mut data = vec![flags, 7, 9];
        data.extend_from_slice(SESSION);
        parser::fuzz_parse(&data);
    }
}

// ---------------------------------------------------------------------------------------
// A miniature broker: what the network glue will do, minus sockets.

const SERVER_HEADERS: bool = true;

/// A subscriber value in the sublist: (client index, sid).
type Subscriber = (usize, u32);

struct Client {
    parser: Parser,
    opts: ClientOptions,
    out: Vec<u8>,
    /// Subscriptions: sid -> key.
    subs: Vec<(Vec<u8>, SubKey)>,
    closed: bool,
}

/// The message being received from a publisher. The glue holds the payload's chunks (its
/// receive leases) until PayloadEnd and only then fans out: a connection with two matching
/// subscriptions gets two whole messages in a row, which streaming chunks could not give it.
struct Inflight {
    subject: Vec<u8>,
    reply: Option<Vec<u8>>,
    header_len: Option<u32>,
    total: u32,
    /// Stand-ins for held receive leases: (is header, bytes).
    chunks: Vec<(bool, Vec<u8>)>,
}

struct Broker<'s> {
    clients: Vec<Client>,
    sublist: Sublist<'s, Subscriber>,
    inflight: Vec<Option<Inflight>>,
}

impl<'s> Broker<'s> {
    fn new(sublist: Sublist<'s, Subscriber>, n: usize) -> Self {
        let clients = (0..n)
            .map(|_| Client {
                parser: Parser::new(ParserConfig::DEFAULT),
                opts: ClientOptions::new(),
                out: Vec::new(),
                subs: Vec::new(),
                closed: false,
            })
            .collect();
        Broker {
            clients,
            sublist,
            inflight: (0..n).map(|_| None).collect(),
        }
    }

    fn err(&mut self, c: usize, e: ServerError<'_>) {
        let mut buf = [0u8; 256];
        let mut sink = SliceSink::new(&mut buf);
        e.write(&mut sink).unwrap();
        self.clients[c].out.extend_from_slice(sink.written());
        if e.closes() {
            self.close(c);
        }
    }

    fn close(&mut self, c: usize) {
        self.clients[c].closed = true;
        // A message in progress is dropped (its leases released): nobody saw any of it.
        self.inflight[c] = None;
    }

    fn feed(&mut self, c: usize, segment: &[u8]) {
        let mut rest = segment;
        while !rest.is_empty() && !self.clients[c].closed {
            let (n, op) = match self.clients[c].parser.parse(rest) {
                Ok((n, op)) => (n, op.map(own)),
                Err(e) => {
                    match e.server_error() {
                        Some(se) => self.err(c, se),
                        None => self.close(c),
                    }
                    return;
                }
            };
            rest = &rest[n..];
            if let Some(op) = op {
                self.handle(c, op);
            }
        }
    }

    fn handle(&mut self, c: usize, op: O) {
        match op {
            O::Connect(json) => {
                let cl = &mut self.clients[c];
                if cl.opts.update(&json).is_err() {
                    return self.close(c);
                }
                if let Err(e) = cl.opts.check(SERVER_HEADERS) {
                    return self.err(c, e);
                }
                let headers = cl.opts.headers_enabled(SERVER_HEADERS);
                cl.parser.set_headers(headers);
                if cl.opts.verbose {
                    cl.out.extend_from_slice(proto::OK);
                }
            }
            O::Ping => self.clients[c].out.extend_from_slice(proto::PONG),
            O::Pong | O::Ok => {}
            O::Info(json) => {
                if connect::validate_json_object(&json).is_err() {
                    self.close(c);
                }
            }
            O::Err(_) => self.close(c),
            O::Sub(subject, queue, sid) => {
                // A SUB reusing a sid is ignored (but still acknowledged).
                if !self.clients[c].subs.iter().any(|(s, _)| *s == sid) {
                    let sid_num: u32 = std::str::from_utf8(&sid)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    match self
                        .sublist
                        .insert(&subject, queue.as_deref(), (c, sid_num))
                    {
                        Ok(k) => self.clients[c].subs.push((sid, k)),
                        Err(InsertError::InvalidSubject) => {
                            return self.err(c, ServerError::InvalidSubject);
                        }
                        Err(_) => return self.err(c, ServerError::MaxSubscriptionsExceeded),
                    }
                }
                if self.clients[c].opts.verbose {
                    self.clients[c].out.extend_from_slice(proto::OK);
                }
            }
            O::Unsub(sid, _max) => {
                let cl = &mut self.clients[c];
                if let Some(i) = cl.subs.iter().position(|(s, _)| *s == sid) {
                    let (_, k) = cl.subs.remove(i);
                    self.sublist.remove(k).unwrap();
                }
                if self.clients[c].opts.verbose {
                    self.clients[c].out.extend_from_slice(proto::OK);
                }
            }
            O::Pub(subject, reply, header_len, total) => {
                let pedantic = self.clients[c].opts.pedantic;
                if pedantic && !subject::is_valid_literal_subject(&subject) {
                    self.err(c, ServerError::InvalidPublishSubject);
                }
                self.inflight[c] = Some(Inflight {
                    subject,
                    reply,
                    header_len,
                    total,
                    chunks: Vec::new(),
                });
            }
            O::Hdr(chunk) => self.inflight[c]
                .as_mut()
                .unwrap()
                .chunks
                .push((true, chunk)),
            O::Body(chunk) => self.inflight[c]
                .as_mut()
                .unwrap()
                .chunks
                .push((false, chunk)),
            O::End => {
                let m = self.inflight[c].take().unwrap();
                let echo = self.clients[c].opts.echo;
                let mut out = [(0usize, 0u32); 64];
                let found = self
                    .sublist
                    .match_into(&m.subject, &mut out, |&(t, _)| t != c || echo)
                    .unwrap();
                for &(t, sid) in &out[..found.len()] {
                    let with_headers = self.clients[t].opts.headers_enabled(SERVER_HEADERS);
                    // HPUB with headers to a client without them: MSG, headers stripped.
                    let (h, size) = match m.header_len {
                        Some(h) if h > 0 && with_headers => (Some(h), m.total),
                        Some(h) => (None, m.total - h),
                        None => (None, m.total),
                    };
                    let sid = sid.to_string();
                    let mut line = [0u8; 512];
                    let mut sink = SliceSink::new(&mut line);
                    proto::write_msg_line(
                        &mut sink,
                        &m.subject,
                        sid.as_bytes(),
                        m.reply.as_deref(),
                        h,
                        size,
                    )
                    .unwrap();
                    let target = &mut self.clients[t].out;
                    target.extend_from_slice(sink.written());
                    for (header, chunk) in &m.chunks {
                        // One copy per target, from the held chunks into its output.
                        if !header || h.is_some() {
                            target.extend_from_slice(chunk);
                        }
                    }
                    target.extend_from_slice(proto::CRLF);
                }
                if self.clients[c].opts.verbose {
                    self.clients[c].out.extend_from_slice(proto::OK);
                }
            }
        }
    }
}

fn mini_broker_run(publisher_segments: &[&[u8]]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut storage = Box::new(SublistStorage::<Subscriber, 64, 128, 256, 16>::new());
    let sublist = storage.sublist(11).unwrap();
    let mut broker = Broker::new(sublist, 3);
    // Client 0: a headers-capable subscriber; client 1: an old client without headers, in a
    // queue group alone; client 2: the publisher, echo off, also subscribed.
    broker.feed(
        0,
        b"CONNECT {\"verbose\":false,\"headers\":true,\"protocol\":1}\r\nSUB foo.* 1\r\nSUB >  9\r\n",
    );
    broker.feed(
        1,
        b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB foo.bar q 5\r\nPING\r\n",
    );
    broker.feed(
        2,
        b"CONNECT {\"verbose\":true,\"echo\":false,\"headers\":true}\r\nSUB foo.bar 7\r\n",
    );
    for seg in publisher_segments {
        broker.feed(2, seg);
    }
    let [a, b, c] = [0, 1, 2].map(|i| std::mem::take(&mut broker.clients[i].out));
    (a, b, c)
}

const PUBLISHER: &[u8] = b"PUB foo.bar 5\r\nhello\r\n\
HPUB foo.bar r.1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n\
PUB foo.* 0\r\n\r\n\
PING\r\n";

#[test]
fn mini_broker_delivers_byte_exact() {
    let (a, b, c) = mini_broker_run(&[PUBLISHER]);
    assert_eq!(
        String::from_utf8_lossy(&a),
        "MSG foo.bar 9 5\r\nhello\r\nMSG foo.bar 1 5\r\nhello\r\n\
HMSG foo.bar 9 r.1 12 14\r\nNATS/1.0\r\n\r\nhi\r\nHMSG foo.bar 1 r.1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n\
MSG foo.* 9 0\r\n\r\nMSG foo.* 1 0\r\n\r\n"
    );
    // No headers negotiated: HMSG arrives as MSG with the headers stripped.
    assert_eq!(
        String::from_utf8_lossy(&b),
        "PONG\r\nMSG foo.bar 5 5\r\nhello\r\nMSG foo.bar 5 r.1 2\r\nhi\r\n"
    );
    // Verbose publisher: +OK after CONNECT, SUB and each message (once it is complete, as
    // nats-server does); echo off: nothing of its own; pedantic by default: PUB foo.* is
    // flagged on its line and still delivered.
    assert_eq!(
        String::from_utf8_lossy(&c),
        "+OK\r\n+OK\r\n+OK\r\n+OK\r\n-ERR 'Invalid Publish Subject'\r\n+OK\r\nPONG\r\n"
    );
}

#[test]
fn mini_broker_split_independent() {
    let want = mini_broker_run(&[PUBLISHER]);
    for cut in 0..=PUBLISHER.len() {
        let (x, y) = PUBLISHER.split_at(cut);
        assert_eq!(mini_broker_run(&[x, y]), want, "split at {cut}");
    }
    let bytes: Vec<&[u8]> = PUBLISHER.chunks(1).collect();
    assert_eq!(mini_broker_run(&bytes), want);
}

#[test]
fn mini_broker_drops_a_broken_message() {
    // A bad trailer: the publisher gets -ERR and is closed, and nobody gets a half message.
    let (a, b, c) = mini_broker_run(&[b"PUB foo.bar 5\r\nhelloXX", b"PING\r\n"]);
    assert!(a.is_empty(), "{}", String::from_utf8_lossy(&a));
    assert_eq!(b, b"PONG\r\n");
    assert_eq!(c, b"+OK\r\n+OK\r\n-ERR 'Unknown Protocol Operation'\r\n");
    // The connection ends mid-payload: same.
    let mut storage = Box::new(SublistStorage::<Subscriber, 8, 16, 32, 4>::new());
    let mut broker = Broker::new(storage.sublist(1).unwrap(), 2);
    broker.feed(0, b"SUB a 1\r\n");
    broker.feed(1, b"PUB a 10\r\nhalf");
    assert_eq!(broker.clients[0].out, b"+OK\r\n");
    broker.close(1);
    assert_eq!(
        broker.clients[0].out, b"+OK\r\n",
        "only SUB's +OK, no message"
    );
}

#[test]
fn mini_broker_protocol_errors() {
    let mut storage = Box::new(SublistStorage::<Subscriber, 8, 16, 32, 4>::new());
    let mut broker = Broker::new(storage.sublist(1).unwrap(), 4);
    broker.feed(0, b"SUB foo..bar 1\r\nSUB ok 2\r\n");
    assert_eq!(broker.clients[0].out, b"-ERR 'Invalid Subject'\r\n+OK\r\n");
    assert!(!broker.clients[0].closed);
    broker.feed(1, b"CONNECT {\"protocol\":2}\r\n");
    assert_eq!(broker.clients[1].out, b"-ERR 'invalid client protocol'\r\n");
    assert!(broker.clients[1].closed);
    broker.feed(2, b"CONNECT {\"no_responders\":true}\r\n");
    assert_eq!(
        broker.clients[2].out,
        b"-ERR 'no responders requires headers support'\r\n"
    );
    broker.feed(3, b"CONNECT {\"verbose\":tru}\r\n");
    assert!(broker.clients[3].closed && broker.clients[3].out.is_empty());
}

/// What nats-server 2.9.10 (Debian's package) answered on this machine to each input, sent on
/// a fresh connection after its INFO: the bytes it sent back and whether it closed.
#[test]
fn matches_reference_server() {
    let long = |n: usize| {
        let mut v = b"PUB ".to_vec();
        v.extend(std::iter::repeat_n(b's', n - 2));
        v.extend_from_slice(b" 0\r\n\r\nPING\r\n");
        v
    };
    let mut lone_cr = b"SUB ".to_vec();
    lone_cr.extend(std::iter::repeat_n(b'a', 4094));
    lone_cr.extend_from_slice(b" 1\r\rPING\r\n");
    let cases: Vec<(&str, Vec<u8>, &[u8], bool)> = vec![
        (
            "connect-nl-first",
            b"CONNECT\n{}\nPING\r\n".to_vec(),
            b"+OK\r\nPONG\r\n",
            false,
        ),
        (
            "pub-nl-first",
            b"PUB \nfoo 1\r\nx\r\nPING\r\n".to_vec(),
            b"+OK\r\nPONG\r\n",
            false,
        ),
        (
            "blank-line",
            b"PING\r\n\r\n".to_vec(),
            b"PONG\r\n-ERR 'Unknown Protocol Operation'\r\n",
            true,
        ),
        ("cl-4096", long(4096), b"+OK\r\nPONG\r\n", false),
        (
            "cl-4097",
            long(4097),
            b"-ERR 'maximum control line exceeded'\r\n",
            true,
        ),
        (
            "hpub-no-headers",
            b"HPUB foo 1 1\r\nx\r\nPING\r\n".to_vec(),
            b"",
            true,
        ),
        (
            "unsub-bad-max",
            b"SUB a 1\r\nUNSUB 1 x\r\nPING\r\n".to_vec(),
            b"+OK\r\n+OK\r\nPONG\r\n",
            false,
        ),
        (
            "pub-10-digits",
            b"PUB foo 1234567890\r\nPING\r\n".to_vec(),
            b"",
            true,
        ),
        (
            "msg",
            b"MSG foo 1 0\r\n\r\nPING\r\n".to_vec(),
            b"-ERR 'Unknown Protocol Operation'\r\n",
            true,
        ),
        (
            "hmsg",
            b"HMSG foo 1 2 3\r\nPING\r\n".to_vec(),
            b"-ERR 'Unknown Protocol Operation'\r\n",
            true,
        ),
        (
            "protocol-2",
            b"CONNECT {\"protocol\":2}\r\nPING\r\n".to_vec(),
            b"-ERR 'invalid client protocol'\r\n",
            true,
        ),
        (
            "verbose-string",
            b"CONNECT {\"verbose\":\"x\"}\r\nPING\r\n".to_vec(),
            b"",
            true,
        ),
        (
            "key-case",
            b"CONNECT {\"VERBOSE\":false}\r\nPING\r\n".to_vec(),
            b"PONG\r\n",
            false,
        ),
        (
            "kelvin-key",
            "CONNECT {\"\u{212a}ey\":1,\"verbo\u{17f}e\":false}\r\nPING\r\n"
                .as_bytes()
                .to_vec(),
            b"PONG\r\n",
            false,
        ),
        (
            "protocol-float",
            b"CONNECT {\"protocol\":1.0}\r\nPING\r\n".to_vec(),
            b"",
            true,
        ),
        (
            "trailing-garbage",
            b"CONNECT {\"name\":\"a\"} x\r\nPING\r\n".to_vec(),
            b"",
            true,
        ),
        (
            "connect-null",
            b"CONNECT null\r\nPING\r\n".to_vec(),
            b"+OK\r\nPONG\r\n",
            false,
        ),
        (
            "connect-array",
            b"CONNECT []\r\nPING\r\n".to_vec(),
            b"",
            true,
        ),
        ("connect-empty", b"CONNECT \r\nPING\r\n".to_vec(), b"", true),
        (
            "ok-info",
            b"+OK\r\nINFO {}\r\nPING\r\n".to_vec(),
            b"PONG\r\n",
            false,
        ),
        ("info-bad", b"INFO x\r\nPING\r\n".to_vec(), b"", true),
        (
            "bad-trailer",
            b"PUB foo 5\r\nhelloX\r\nPING\r\n".to_vec(),
            b"-ERR 'Unknown Protocol Operation'\r\n",
            true,
        ),
        (
            "pingx",
            b"PINGX\r\nPONG whatever\r\n+OK junk\r\nPING\r\n".to_vec(),
            b"PONG\r\nPONG\r\n",
            false,
        ),
        (
            "pub-cr-mid",
            b"PUB fo\ro 0\r\n\r\nPING\r\n".to_vec(),
            b"+OK\r\nPONG\r\n",
            false,
        ),
        ("client-err", b"-ERR 'x'\r\nPING\r\n".to_vec(), b"", true),
        (
            "no-resp-no-hdr",
            b"CONNECT {\"no_responders\":true}\r\nPING\r\n".to_vec(),
            b"-ERR 'no responders requires headers support'\r\n",
            true,
        ),
        (
            "sub-invalid",
            b"SUB foo..bar 1\r\nPING\r\n".to_vec(),
            b"-ERR 'Invalid Subject'\r\nPONG\r\n",
            false,
        ),
        (
            "pedantic",
            b"PUB foo.* 0\r\n\r\nPING\r\n".to_vec(),
            b"-ERR 'Invalid Publish Subject'\r\n+OK\r\nPONG\r\n",
            false,
        ),
        (
            "maxpayload",
            b"PUB foo 1048577\r\n".to_vec(),
            b"-ERR 'Maximum Payload Violation'\r\n",
            true,
        ),
        (
            "hpub-hdr-gt",
            b"CONNECT {\"headers\":true,\"verbose\":false}\r\nHPUB foo 10 5\r\nPING\r\n".to_vec(),
            b"",
            true,
        ),
        (
            "tab-sep",
            b"PUB\tfoo\t0\r\n\r\nPING\r\n".to_vec(),
            b"+OK\r\nPONG\r\n",
            false,
        ),
        (
            "pubfoo",
            b"PUBfoo 0\r\n\r\nPING\r\n".to_vec(),
            b"-ERR 'Unknown Protocol Operation'\r\n",
            true,
        ),
        (
            "connect-nospace",
            b"CONNECT{\"verbose\":false}\r\nPING\r\n".to_vec(),
            b"PONG\r\n",
            false,
        ),
        (
            "dup-null",
            b"CONNECT {\"verbose\":false,\"verbose\":null}\r\nPING\r\n".to_vec(),
            b"PONG\r\n",
            false,
        ),
        (
            "lone-cr-limit",
            lone_cr,
            b"-ERR 'maximum control line exceeded'\r\n",
            true,
        ),
    ];
    for (name, input, want, closes) in cases {
        for split in [input.len(), 1] {
            let mut storage = Box::new(SublistStorage::<Subscriber, 8, 16, 64, 4>::new());
            let mut broker = Broker::new(storage.sublist(1).unwrap(), 1);
            for seg in input.chunks(split) {
                broker.feed(0, seg);
            }
            let got = &broker.clients[0];
            assert_eq!(
                (String::from_utf8_lossy(&got.out), got.closed),
                (String::from_utf8_lossy(want), closes),
                "{name} (segments of {split})"
            );
        }
    }
    // The one documented difference: 2.9.10 accepts a form feed in a SUB subject (its sublist
    // does not check whitespace); ringlet applies IsValidSubject in full.
    let mut storage = Box::new(SublistStorage::<Subscriber, 8, 16, 64, 4>::new());
    let mut broker = Broker::new(storage.sublist(1).unwrap(), 1);
    broker.feed(0, b"SUB a\x0cb 1\r\nPING\r\n");
    assert_eq!(broker.clients[0].out, b"-ERR 'Invalid Subject'\r\nPONG\r\n");
}

// ---------------------------------------------------------------------------------------
// Hostile input.

const VOCAB: &[&[u8]] = &[
    b"PUB ",
    b"HPUB ",
    b"SUB ",
    b"UNSUB ",
    b"PING",
    b"PONG",
    b"CONNECT ",
    b"INFO ",
    b"+OK",
    b"-ERR ",
    b"MSG ",
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b"foo",
    b".",
    b"*",
    b">",
    b"0",
    b"1",
    b"5",
    b"12",
    b"999999999",
    b"{}",
    b"{\"headers\":true}",
    b"hello",
    b"q",
];

fn hostile(rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    let n = rng.below(60);
    for _ in 0..n {
        if rng.below(4) == 0 {
            v.push(rng.next() as u8);
        } else {
            v.extend_from_slice(VOCAB[rng.below(VOCAB.len())]);
        }
    }
    v
}

#[test]
fn hostile_input_never_panics_and_is_split_independent() {
    let mut rng = Rng::new(0xbad);
    for i in 0..3000 {
        let mut data = vec![(i % 256) as u8, rng.next() as u8, rng.next() as u8];
        if i % 3 == 0 {
            data.extend((0..rng.below(300)).map(|_| rng.next() as u8));
        } else {
            data.extend(hostile(&mut rng));
        }
        parser::fuzz_parse(&data);
        // Clean outcome: operations, then at most one error, and the parser stays failed.
        let (_, err) = collect(&[&data[3..]]);
        if let Some(e) = err {
            let _ = e.server_error();
        }
    }
}

#[test]
fn hostile_json_and_subjects() {
    let mut rng = Rng::new(0x15);
    let seeds: &[&[u8]] = &[
        br#"{"verbose":false,"name":"a\u00e9\ud83d\ude00","protocol":1,"x":[1,{"y":null}]}"#,
        br#"{"user":"u","pass":"p","auth_token":null,"headers":true}"#,
        b"null",
    ];
    for i in 0..5000 {
        let mut v = seeds[i % seeds.len()].to_vec();
        for _ in 0..rng.below(4) {
            if v.is_empty() {
                break;
            }
            let at = rng.below(v.len());
            match rng.below(3) {
                0 => v[at] = rng.next() as u8,
                1 => {
                    v.remove(at);
                }
                _ => v.insert(at, b"{}[]\",:\\u0"[rng.below(10)]),
            }
        }
        connect::fuzz_connect(&v);
    }
    for _ in 0..5000 {
        let mut v = Vec::new();
        for _ in 0..rng.below(12) {
            v.extend_from_slice(
                [&b"a"[..], b"b", b".", b"*", b">", b"\0", b" ", b"ab"][rng.below(8)],
            );
        }
        subject::fuzz_subject(&v);
    }
}

/// Every per-connection piece of a `BrokerMem` must have one entry per slot; a short `lines`
/// (the pending PUB's control lines) is refused, not indexed out of bounds later.
#[test]
fn broker_refuses_mismatched_lines() {
    use ringlet::broker::server::{Broker, BrokerError, BrokerStorage, ServerConfig};
    let storage =
        ringlet::sys::mem::map_zeroed::<BrokerStorage<'static, 4, 16, 16, 32, 8>>().unwrap();
    let mut mem = storage.mem();
    assert_eq!(mem.lines.len(), 4);
    let lines = std::mem::take(&mut mem.lines);
    mem.lines = &mut lines[..3];
    let err = Broker::new(mem, ServerConfig::default(), 1).err();
    assert!(
        matches!(err, Some(BrokerError::Storage(s)) if s.contains("lines")),
        "{err:?}"
    );
    let mut mem = storage.mem();
    mem.lines = &mut [];
    assert!(Broker::new(mem, ServerConfig::default(), 1).is_err());
    // The subscription sets too; and the shared line buffers need at least one.
    let mut mem = storage.mem();
    let subs = std::mem::take(&mut mem.client_subs);
    mem.client_subs = &mut subs[..3];
    let err = Broker::new(mem, ServerConfig::default(), 1).err();
    assert!(
        matches!(err, Some(BrokerError::Storage(s)) if s.contains("client_subs")),
        "{err:?}"
    );
    let mut mem = storage.mem();
    mem.line_bufs = &mut [];
    let err = Broker::new(mem, ServerConfig::default(), 1).err();
    assert!(
        matches!(err, Some(BrokerError::Storage(s)) if s.contains("line_bufs")),
        "{err:?}"
    );
    let mut mem = storage.mem();
    let bufs = std::mem::take(&mut mem.line_bufs);
    mem.line_bufs = &mut bufs[..1];
    assert!(Broker::new(mem, ServerConfig::default(), 1).is_ok());
    assert!(Broker::new(storage.mem(), ServerConfig::default(), 1).is_ok());
}
