//! `ConnectionPipeReader` on a real reactor, on BOTH backends: a line-echo handler parses
//! lines straight out of the receive leases (zero copies, partial consumption), replies per
//! line, and uses the reader's flow signals and the write slab's back-pressure; and a
//! NATS-like parser (control lines, `PUB` with a payload it needs whole) fed input split at
//! every byte boundary, each split a receive boundary for sure (the client waits for the
//! server's receipt of the first part before it sends the rest).

mod reactor_util;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use reactor_util::*;
use ringlet::pipe::{ConnectionPipeReader, Flow, Position, ReadBuf};
use ringlet::pool::Lease;
use ringlet::reactor::{
    BackendChoice, ConnError, ConnId, Context, Handler, ListenerId, Reactor, Resources,
};

/// Generates one test per backend from `fn name(backend: BackendChoice)`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(#[test] fn $name() { super::$name(ringlet::reactor::BackendChoice::Uring) })*
        }
        mod epoll {
            $(#[test] fn $name() { super::$name(ringlet::reactor::BackendChoice::Epoll) })*
        }
    };
}

both!(
    line_echo_over_connection_pipe_reader,
    a_parser_needing_data_sees_every_split_as_a_receive_boundary,
);

/// The reader's carry, and its quota (the reactor's `lease_quota` too).
const CARRY: usize = 256;
const QUOTA: usize = 8;

/// The reply to a line: its length, a colon, the line, a newline.
fn reply(line: &[u8]) -> Vec<u8> {
    let mut r = format!("{}:", line.len()).into_bytes();
    r.extend_from_slice(line);
    r.push(b'\n');
    r
}

#[derive(Default)]
struct Summary {
    lines: usize,
    pauses: usize,
    resumes: usize,
    /// The most leases a reader held after processing while its unread tail fit the carry
    /// (must stay 0: a short tail is carried).
    idle_leases: usize,
    /// The most leases a reader held after processing.
    max_leases: usize,
    would_block: usize,
}

/// Line echo over a `ConnectionPipeReader` per connection.
#[derive(Default)]
struct LineEcho {
    readers: HashMap<ConnId, Box<ConnectionPipeReader<'static>>>,
    /// Connections whose parsing stopped at a full write slab, until `on_flushed`.
    blocked: HashMap<ConnId, ()>,
    s: Summary,
}

impl LineEcho {
    fn apply(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, flow: Flow) {
        match flow {
            Flow::Pause => self.s.pauses += 1,
            Flow::Resume => self.s.resumes += 1,
            Flow::Keep => {}
        }
        let _ = flow.apply(cx, conn);
    }

    /// Parses and answers every whole line the reader holds; stops (consuming what was
    /// answered) when the write slab is full.
    fn process(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        if self.blocked.contains_key(&conn) {
            return; // on_flushed will come
        }
        let Some(rd) = self.readers.get_mut(&conn) else {
            return;
        };
        let mut lines = 0;
        let mut blocked = false;
        let flow = match rd.try_read() {
            None => Flow::Keep,
            Some(res) => {
                let buf = res.buffer();
                let mut rest = buf;
                while let Some(n) = rest.find(b"\n") {
                    let mut line = vec![0u8; n];
                    rest.slice(..n).unwrap().copy_to(&mut line);
                    match cx.write(conn, &reply(&line)) {
                        Ok(()) => {
                            lines += 1;
                            rest = rest.slice(n + 1..).unwrap();
                        }
                        Err(ConnError::WouldBlock) => {
                            blocked = true;
                            break;
                        }
                        Err(e) => panic!("write: {e}"),
                    }
                }
                // A partial line was examined whole; a blocked parse examined only what it
                // answered, so the rest is handed out again after on_flushed.
                let examined = if blocked { rest.start() } else { buf.end() };
                let consumed = rest.start();
                rd.advance_to_examined(consumed, examined).unwrap()
            }
        };
        let held = rd.held_leases();
        if rd.unread_len() <= CARRY {
            self.s.idle_leases = self.s.idle_leases.max(held);
        }
        self.s.max_leases = self.s.max_leases.max(held);
        self.s.lines += lines;
        self.apply(cx, conn, flow);
        if blocked {
            self.s.would_block += 1;
            self.blocked.insert(conn, ());
        }
        let _ = cx.flush(conn);
    }
}

impl Handler<'static> for LineEcho {
    fn on_accept(&mut self, _: &mut Context<'_, 'static>, conn: ConnId, _: ListenerId) {
        let reader = ConnectionPipeReader::new(QUOTA).unwrap();
        self.readers.insert(conn, Box::new(reader));
    }

    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        let Some(rd) = self.readers.get_mut(&conn) else {
            return;
        };
        let flow = rd
            .push(lease)
            .unwrap_or_else(|e| panic!("{e} (held {})", rd.held_leases()));
        self.apply(cx, conn, flow);
        self.process(cx, conn);
    }

    fn on_flushed(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        if self.blocked.remove(&conn).is_some() {
            self.process(cx, conn);
        }
    }

    fn on_read_closed(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        if let Some(rd) = self.readers.get_mut(&conn) {
            rd.push_eof();
        }
        self.process(cx, conn);
        cx.close(conn);
    }

    fn on_close(
        &mut self,
        _: &mut Context<'_, 'static>,
        conn: ConnId,
        _: ringlet::reactor::CloseReason,
    ) {
        // Dropping the reader gives its leases back.
        self.readers.remove(&conn);
        self.blocked.remove(&conn);
    }
}

/// Random lines (no newline inside), `n` of them, of up to `max` bytes.
fn lines(rng: &mut Rng, n: usize, max: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let len = rng.below(max + 1) as usize;
            (0..len).map(|_| b' ' + (rng.next() % 90) as u8).collect()
        })
        .collect()
}

fn wire(lines: &[Vec<u8>]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| l.iter().copied().chain([b'\n']))
        .collect()
}

fn replies(lines: &[Vec<u8>]) -> Vec<u8> {
    lines.iter().flat_map(|l| reply(l)).collect()
}

fn line_echo_over_connection_pipe_reader(b: BackendChoice) {
    let make = |c| Reactor::new(leak::<Resources<16, 256, 2048, 16384, 16>>(), c).unwrap();
    let mut cfg = config(b);
    cfg.lease_quota = QUOTA as u16;
    let server = serve(cfg, make, LineEcho::default, |h| h.s);
    let addr = server.addr;

    // A short message, one byte per write with small sleeps: every byte boundary is a
    // receive boundary.
    let short: Vec<Vec<u8>> = [
        "PING",
        "",
        "SUB foo.bar 1",
        "PUB foo.bar 11",
        "hello world",
        "x",
    ]
    .iter()
    .map(|l| l.as_bytes().to_vec())
    .collect();
    let mut c = connect(addr);
    for byte in wire(&short) {
        send(&mut c, &[byte]);
        thread::sleep(Duration::from_millis(2));
    }
    let want = replies(&short);
    assert_eq!(
        read_n(&mut c, want.len()),
        want,
        "trickled lines answered exactly"
    );

    // Big bursts on three connections at once: thousands of lines in single writes, lines
    // longer than the carry and spanning leases; the replies outgrow the 16 KiB write slab,
    // so parsing stops and resumes on on_flushed while receives pause at the quota.
    let bursts: Vec<_> = (0..3u64)
        .map(|i| {
            thread::spawn(move || {
                let mut rng = Rng(0x5eed + i);
                let mut c = connect(addr);
                let mut r = c.try_clone().unwrap();
                for round in 0..3 {
                    let ls = lines(&mut rng, 2000, if round == 1 { 3000 } else { 300 });
                    let want = replies(&ls);
                    let reader = thread::spawn(move || read_n(&mut r, want.len()) == want);
                    send(&mut c, &wire(&ls));
                    assert!(reader.join().unwrap(), "burst {i}/{round} answered exactly");
                    r = c.try_clone().unwrap();
                }
                6000
            })
        })
        .collect();
    let burst_lines: usize = bursts.into_iter().map(|t| t.join().unwrap()).sum();
    drop(c);

    let r = server.stop();
    assert_eq!(r.connections_left, 0);
    assert_eq!(r.pool_leased, 0, "every receive lease went back");
    let s = r.handler;
    assert_eq!(s.lines, short.len() + burst_lines);
    assert_eq!(
        s.idle_leases, 0,
        "a tail that fits the carry holds no lease"
    );
    assert!(s.max_leases <= 32, "held {} leases", s.max_leases);
    // Every pause but perhaps one per connection at its end was followed by a resume.
    assert!(s.resumes <= s.pauses && s.pauses <= s.resumes + 4);
    eprintln!(
        "{b:?}: {} lines, {} would-block stops, {} pauses, {} resumes, at most {} leases held",
        s.lines, s.would_block, s.pauses, s.resumes, s.max_leases
    );
}

/// The input: control lines and `PUB <subject> <n>` with `n` payload bytes and CRLF (one
/// empty, one longer than most receives' worth of the rest).
const MESSAGE: &[u8] = b"PING\r\nSUB foo.bar 1\r\nPUB foo.bar 11\r\nhello world\r\n\
PUB x 0\r\n\r\nPUB big 40\r\n0123456789012345678901234567890123456789\r\nPONG\r\n";

/// The replies to `MESSAGE`, one line per message.
const REPLIES: [&str; 6] = [
    "L:PING",
    "L:SUB foo.bar 1",
    "P:PUB foo.bar 11|hello world",
    "P:PUB x 0|",
    "P:PUB big 40|0123456789012345678901234567890123456789",
    "L:PONG",
];

/// Parses every whole message in `buf`, appending one reply line each; returns (consumed,
/// examined): a message whose end has not arrived is examined whole and not consumed.
fn parse(buf: ReadBuf<'_>, out: &mut Vec<u8>) -> (Position, Position) {
    let mut rest = buf;
    loop {
        let Some(n) = rest.find(b"\r\n") else {
            return (rest.start(), buf.end());
        };
        let line: Vec<u8> = rest.slice(..n).unwrap().bytes().collect();
        let after = rest.slice(n + 2..).unwrap();
        if line.starts_with(b"PUB ") {
            let size: usize = std::str::from_utf8(&line)
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            // The payload and its CRLF, across leases and the carry: wait until all came.
            let Some(payload) = after.slice(..size + 2) else {
                return (rest.start(), buf.end());
            };
            assert!(payload.slice(size..).unwrap() == *b"\r\n", "payload end");
            out.extend_from_slice(b"P:");
            out.extend_from_slice(&line);
            out.push(b'|');
            out.extend(payload.slice(..size).unwrap().bytes());
            rest = after.slice(size + 2..).unwrap();
        } else {
            out.extend_from_slice(b"L:");
            out.extend_from_slice(&line);
            rest = after;
        }
        out.push(b'\n');
    }
}

#[derive(Default)]
struct ReceiptStats {
    receives: usize,
    /// Receives that left a partial message pending (the parser needed more data).
    waits: usize,
    /// The most leases held between receives (must be 0: the pending tail fits the carry).
    idle_leases: usize,
}

/// The NATS-like parser over a `ConnectionPipeReader`; after each receive it replies to the
/// messages it parsed, then sends a receipt `#<bytes received so far>`.
#[derive(Default)]
struct Receipts {
    readers: HashMap<ConnId, Box<ConnectionPipeReader<'static>>>,
    s: ReceiptStats,
}

impl Handler<'static> for Receipts {
    fn on_accept(&mut self, _: &mut Context<'_, 'static>, conn: ConnId, _: ListenerId) {
        let reader = ConnectionPipeReader::new(QUOTA).unwrap();
        self.readers.insert(conn, Box::new(reader));
    }

    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        let Some(rd) = self.readers.get_mut(&conn) else {
            return;
        };
        let flow = rd.push(lease).unwrap();
        let _ = flow.apply(cx, conn);
        let mut out = Vec::new();
        while let Some(res) = rd.try_read() {
            let (consumed, examined) = parse(res.buffer(), &mut out);
            let flow = rd.advance_to_examined(consumed, examined).unwrap();
            let _ = flow.apply(cx, conn);
        }
        self.s.receives += 1;
        if rd.unread_len() > 0 {
            self.s.waits += 1;
        }
        self.s.idle_leases = self.s.idle_leases.max(rd.held_leases());
        out.extend_from_slice(format!("#{}\n", rd.received()).as_bytes());
        cx.write(conn, &out).unwrap();
        let _ = cx.flush(conn);
    }

    fn on_read_closed(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        cx.close(conn);
    }

    fn on_close(
        &mut self,
        _: &mut Context<'_, 'static>,
        conn: ConnId,
        _: ringlet::reactor::CloseReason,
    ) {
        self.readers.remove(&conn);
    }
}

/// Reads reply lines until the receipt for `total` bytes; returns the replies before it
/// (receipts for fewer bytes, from a part the kernel split further, are skipped).
fn replies_until_receipt(r: &mut BufReader<TcpStream>, total: usize) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).expect("read_line") > 0, "EOF");
        let line = line.trim_end_matches('\n');
        match line.strip_prefix('#') {
            Some(n) => {
                let n: usize = n.parse().unwrap();
                assert!(n <= total, "received {n} of {total}");
                if n == total {
                    return out;
                }
            }
            None => out.push(line.to_string()),
        }
    }
}

fn a_parser_needing_data_sees_every_split_as_a_receive_boundary(b: BackendChoice) {
    let make = |c| Reactor::new(leak::<Resources<16, 256, 2048, 16384, 16>>(), c).unwrap();
    let mut cfg = config(b);
    cfg.lease_quota = QUOTA as u16;
    let server = serve(cfg, make, Receipts::default, |h| h.s);
    let n = MESSAGE.len();

    // One byte per receive, on one connection: the parser resumes at every byte.
    let mut c = connect(server.addr);
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut got = Vec::new();
    for i in 0..n {
        send(&mut c, &MESSAGE[i..i + 1]);
        got.extend(replies_until_receipt(&mut r, i + 1));
    }
    assert_eq!(got, REPLIES, "one byte per receive");
    drop((c, r));

    // Every split point, each on its own connection: the first part is received (its
    // receipt came back) before the rest is sent.
    for i in 1..n {
        let mut c = connect(server.addr);
        let mut r = BufReader::new(c.try_clone().unwrap());
        send(&mut c, &MESSAGE[..i]);
        let mut got = replies_until_receipt(&mut r, i);
        send(&mut c, &MESSAGE[i..]);
        got.extend(replies_until_receipt(&mut r, n));
        assert_eq!(got, REPLIES, "split at {i}");
    }

    server.wait_connections(0);
    let report = server.stop();
    assert_eq!(report.pool_leased, 0, "every receive lease went back");
    let s = report.handler;
    assert!(s.receives >= n + 2 * (n - 1), "{} receives", s.receives);
    // Most byte positions leave a message pending: the parser needed data there.
    assert!(s.waits >= n, "{} receives left a partial message", s.waits);
    assert_eq!(s.idle_leases, 0, "a pending tail is carried, not leased");
}
