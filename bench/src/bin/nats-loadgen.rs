//! Load generator for NATS servers, speaking the raw client protocol (no client crate): one
//! thread, one level-triggered epoll loop, every connection non-blocking.
//!
//! Modes:
//! - `--mode pubsub --pubs P --subs S --size N`: S connections subscribe to one subject, P
//!   connections publish to it. Publishers batch their `PUB` operations into writes of up to
//!   32 KiB (the size of the Go client's write buffer, which `nats bench` uses). Every
//!   subscriber receives every message; delivered = S x published.
//! - `--mode reqrep --requesters R --size N`: one responder connection subscribes to the
//!   request subject and answers every request with a `PUB` to its reply subject, the payload
//!   echoed; R requester connections each keep exactly one request outstanding (a synchronous
//!   request, as `nats bench --request` does), latency measured from before the request's write
//!   to after its reply was parsed. Two messages are delivered per request.
//! - `--mode idle --conns C`: C connections that CONNECT, PING, get their PONG and then sit idle
//!   (answering server PINGs); for memory per idle connection.
//!
//! Verification: every payload carries its publisher (or requester) number and a sequence
//! number, the rest of it a byte derived from both. A subscriber checks that each publisher's
//! messages arrive complete, in order, none missing or repeated; a requester checks that the
//! reply is the answer to its outstanding request. Any mismatch, `-ERR`, or close by the server
//! ends the run with exit status 2 and a message naming the connection.
//!
//! Flow control (pubsub): a publisher stays at most `--window` bytes (of delivered wire bytes)
//! ahead of the slowest subscriber's progress on its messages. Without it a single load
//! generator could publish faster than it can read, and a server that does not push back on
//! publishers (nats-server) would cut the subscribers off as slow consumers. The window (1 MiB by
//! default) is far larger than the loopback path's bandwidth-delay product, so it never limits
//! the rate by round trips.
//!
//! Control (`--control`, used by `nats-bench`): prints `ready` once every connection got its
//! PONG (subscriptions are in place), then reads commands on stdin: `mark` answers with the
//! window since the previous mark: `mark msgs=M pubs=P reqs=R ns=T p50=.. p90=.. p99=.. p999=..
//! max=..` (latencies in ns, requests only); `quit` or end of input exits. Standalone (no
//! `--control`): warm-up, measured window, one report line, exit.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::process::exit;
use std::time::{Duration, Instant};

use ringlet_bench::{Histogram, pin_to_cpu, raise_nofile_limit};

const USAGE: &str = "usage: nats-loadgen --addr IP:PORT --mode pubsub|reqrep|idle
               [--pubs P] [--subs S] [--requesters R] [--conns C] [--size BYTES]
               [--window BYTES] [--subject S] [--warmup SECS] [--duration SECS]
               [--control] [--max-secs SECS] [--stall-secs SECS] [--cpu N]";

/// Bytes of one write a publisher batches at most (the Go client's buffer size).
const WRITE_BATCH: usize = 32 * 1024;
/// Receive buffer per connection.
const READ_BUF: usize = 256 * 1024;
/// Bytes at the start of every payload: sender number (u32) and sequence number (u64).
const STAMP: usize = 12;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    PubSub,
    ReqRep,
    Idle,
}

struct Opts {
    addr: SocketAddr,
    mode: Mode,
    pubs: usize,
    subs: usize,
    requesters: usize,
    conns: usize,
    size: usize,
    window: usize,
    subject: String,
    warmup: f64,
    duration: f64,
    control: bool,
    max_secs: f64,
    stall_secs: f64,
    cpu: Option<usize>,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("nats-loadgen: error: {msg}");
    exit(2)
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        addr: SocketAddr::from(([127, 0, 0, 1], 4222)),
        mode: Mode::PubSub,
        pubs: 1,
        subs: 1,
        requesters: 1,
        conns: 1000,
        size: 16,
        window: 1 << 20,
        // Unique per run: a publisher of an earlier run that exited with PUBs still in its
        // socket must not feed this run's subscribers.
        subject: format!("bench.{}", std::process::id()),
        warmup: 1.0,
        duration: 5.0,
        control: false,
        max_secs: 0.0,
        stall_secs: 10.0,
        cpu: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "-h" || a == "--help" {
            println!("{USAGE}");
            exit(0);
        }
        if a == "--control" {
            o.control = true;
            continue;
        }
        let v = args
            .next()
            .unwrap_or_else(|| fail(format!("{a} needs a value\n{USAGE}")));
        fn num<T: std::str::FromStr>(a: &str, v: &str) -> T {
            v.parse()
                .unwrap_or_else(|_| fail(format!("bad value for {a}: {v:?}")))
        }
        match a.as_str() {
            "--addr" => o.addr = num(&a, &v),
            "--mode" => {
                o.mode = match v.as_str() {
                    "pubsub" => Mode::PubSub,
                    "reqrep" => Mode::ReqRep,
                    "idle" => Mode::Idle,
                    _ => fail(format!("--mode: pubsub, reqrep or idle, not {v:?}")),
                }
            }
            "--pubs" => o.pubs = num(&a, &v),
            "--subs" => o.subs = num(&a, &v),
            "--requesters" => o.requesters = num(&a, &v),
            "--conns" => o.conns = num(&a, &v),
            "--size" => o.size = num(&a, &v),
            "--window" => o.window = num(&a, &v),
            "--subject" => o.subject = v,
            "--warmup" => o.warmup = num(&a, &v),
            "--duration" => o.duration = num(&a, &v),
            "--max-secs" => o.max_secs = num(&a, &v),
            "--stall-secs" => o.stall_secs = num(&a, &v),
            "--cpu" => o.cpu = Some(num(&a, &v)),
            _ => fail(format!("unknown argument {a:?}\n{USAGE}")),
        }
    }
    if o.size < STAMP || o.size > 64 * 1024 {
        fail(format!(
            "--size must be {STAMP}..=65536 (the payload carries a stamp)"
        ));
    }
    if o.pubs == 0 || o.subs == 0 || o.requesters == 0 || o.conns == 0 {
        fail("--pubs, --subs, --requesters and --conns must be at least 1");
    }
    if o.subject.is_empty() || o.subject.contains([' ', '\t', '\r', '\n', '*', '>']) {
        fail("--subject must be a literal subject");
    }
    if o.max_secs <= 0.0 {
        o.max_secs = if o.control {
            600.0
        } else {
            o.warmup + o.duration + 60.0
        };
    }
    o
}

/// What a connection does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Pub(usize),
    Sub(usize),
    Requester(usize),
    Responder,
    Idle,
}

struct Conn {
    stream: TcpStream,
    fd: RawFd,
    id: usize,
    role: Role,
    rbuf: Box<[u8]>,
    /// Unparsed bytes are `rbuf[rstart..rend]`.
    rstart: usize,
    rend: usize,
    /// Bytes to send: `wbuf[wpos..]`.
    wbuf: Vec<u8>,
    wpos: usize,
    /// EPOLLOUT is registered (a write hit EAGAIN).
    want_out: bool,
    pongs: u64,
    /// Sub: messages received from each publisher (= the next sequence number expected).
    /// Requester: `[outstanding sequence number]`.
    seen: Vec<u64>,
    /// Requester: when the outstanding request was written.
    t0: Instant,
    /// Requester: a request is outstanding.
    waiting: bool,
}

/// The byte that fills a payload after its stamp.
fn fill_byte(sender: usize, seq: u64) -> u8 {
    (seq as u8) ^ (sender as u8).wrapping_mul(31) ^ 0x5a
}

/// Appends a stamped payload of `size` bytes and its `\r\n`.
fn put_payload(out: &mut Vec<u8>, sender: usize, seq: u64, size: usize) {
    out.extend_from_slice(&(sender as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let b = fill_byte(sender, seq);
    out.resize(out.len() + (size - STAMP), b);
    out.extend_from_slice(b"\r\n");
}

/// Checks a stamped payload; returns (sender, seq).
fn check_payload(p: &[u8], conn: usize) -> (usize, u64) {
    if p.len() < STAMP {
        fail(format!(
            "connection {conn}: payload of {} bytes, shorter than its stamp",
            p.len()
        ));
    }
    let sender = u32::from_le_bytes(p[0..4].try_into().expect("4 bytes")) as usize;
    let seq = u64::from_le_bytes(p[4..12].try_into().expect("8 bytes"));
    let b = fill_byte(sender, seq);
    if !p[STAMP..].iter().all(|&x| x == b) {
        fail(format!(
            "connection {conn}: payload of sender {sender} seq {seq} altered"
        ));
    }
    (sender, seq)
}

/// Counters of the current window.
struct Window {
    hist: Histogram,
    msgs: u64,
    pubs: u64,
    reqs: u64,
    since: Instant,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            hist: Histogram::new(),
            msgs: 0,
            pubs: 0,
            reqs: 0,
            since: now,
        }
    }

    fn take(&mut self, now: Instant) -> String {
        let h = &self.hist;
        let line = format!(
            "mark msgs={} pubs={} reqs={} ns={} p50={} p90={} p99={} p999={} max={}",
            self.msgs,
            self.pubs,
            self.reqs,
            now.duration_since(self.since).as_nanos(),
            h.quantile(0.50),
            h.quantile(0.90),
            h.quantile(0.99),
            h.quantile(0.999),
            h.max()
        );
        *self = Window::new(now);
        line
    }
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
        exit(0);
    }
}

struct Gen {
    o: Opts,
    conns: Vec<Conn>,
    ep: RawFd,
    /// Messages published per publisher.
    published: Vec<u64>,
    /// The whole MSG as a subscriber sees it, bytes: for the window in messages.
    window_msgs: u64,
    /// Per publisher: the connection indices of the subscribers.
    subs: Vec<usize>,
    pubs: Vec<usize>,
    pub_prefix: Vec<u8>,
    req_prefix: Vec<u8>,
    win: Window,
    last_progress: Instant,
    line: Vec<u8>,
    quit: bool,
}

fn epoll_ctl(ep: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a valid epoll_event; the descriptors are open.
    if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } != 0 {
        fail(format!("epoll_ctl: {}", io::Error::last_os_error()));
    }
}

const STDIN_TOKEN: u64 = u64::MAX;

impl Gen {
    /// Connects every connection: INFO, CONNECT, its SUB, PING, then waits for all PONGs.
    fn connect_all(o: &Opts) -> Vec<Conn> {
        let mut roles = Vec::new();
        match o.mode {
            Mode::PubSub => {
                roles.extend((0..o.subs).map(Role::Sub));
                roles.extend((0..o.pubs).map(Role::Pub));
            }
            Mode::ReqRep => {
                roles.push(Role::Responder);
                roles.extend((0..o.requesters).map(Role::Requester));
            }
            Mode::Idle => roles.extend((0..o.conns).map(|_| Role::Idle)),
        }
        let connect = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":true,\"headers\":false,\"no_responders\":false,\"protocol\":1,\"name\":\"nats-loadgen\",\"lang\":\"rust\",\"version\":\"0.1.0\"}\r\n";
        let mut conns = Vec::with_capacity(roles.len());
        for (id, role) in roles.into_iter().enumerate() {
            let stream = TcpStream::connect_timeout(&o.addr, Duration::from_secs(5))
                .unwrap_or_else(|e| fail(format!("connect #{id} to {}: {e}", o.addr)));
            stream
                .set_nodelay(true)
                .unwrap_or_else(|e| fail(format!("TCP_NODELAY: {e}")));
            let big = matches!(role, Role::Sub(_) | Role::Responder | Role::Pub(_));
            let mut c = Conn {
                fd: stream.as_raw_fd(),
                stream,
                id,
                role,
                // Idle connections get small buffers: 1000 of them should not cost the load
                // generator 256 MiB.
                rbuf: vec![0; if big { READ_BUF } else { 16 * 1024 }].into_boxed_slice(),
                rstart: 0,
                rend: 0,
                wbuf: Vec::with_capacity(if big { 2 * WRITE_BATCH } else { 1024 }),
                wpos: 0,
                want_out: false,
                pongs: 0,
                seen: match role {
                    Role::Sub(_) => vec![0; o.pubs],
                    Role::Requester(_) => vec![0],
                    _ => Vec::new(),
                },
                t0: Instant::now(),
                waiting: false,
            };
            c.wbuf.extend_from_slice(connect);
            match role {
                Role::Sub(_) => c
                    .wbuf
                    .extend_from_slice(format!("SUB {} 1\r\n", o.subject).as_bytes()),
                Role::Responder => c
                    .wbuf
                    .extend_from_slice(format!("SUB {}.req 1\r\n", o.subject).as_bytes()),
                Role::Requester(i) => c
                    .wbuf
                    .extend_from_slice(format!("SUB {}.rep.{i} 1\r\n", o.subject).as_bytes()),
                _ => {}
            }
            c.wbuf.extend_from_slice(b"PING\r\n");
            let wb = std::mem::take(&mut c.wbuf);
            (&c.stream)
                .write_all(&wb)
                .unwrap_or_else(|e| fail(format!("connection {id}: sending CONNECT: {e}")));
            c.wbuf = wb;
            c.wbuf.clear();
            conns.push(c);
        }
        // Every PONG, blocking with a bound: then every SUB is in place.
        for c in &mut conns {
            c.stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap_or_else(|e| fail(format!("SO_RCVTIMEO: {e}")));
            while c.pongs == 0 {
                let n = (&c.stream).read(&mut c.rbuf[c.rend..]).unwrap_or_else(|e| {
                    fail(format!("connection {}: waiting for PONG: {e}", c.id))
                });
                if n == 0 {
                    fail(format!("connection {}: closed before its PONG", c.id));
                }
                c.rend += n;
                let mut noop = |_: &mut Conn, _: &[u8], _: &[u8]| {
                    fail("a message before the PONG of CONNECT");
                };
                parse(c, &mut noop);
                if !c.wbuf.is_empty() {
                    // PONGs to server PINGs.
                    (&c.stream)
                        .write_all(&c.wbuf)
                        .unwrap_or_else(|e| fail(format!("connection {}: {e}", c.id)));
                    c.wbuf.clear();
                }
            }
            c.stream
                .set_nonblocking(true)
                .unwrap_or_else(|e| fail(format!("O_NONBLOCK: {e}")));
        }
        conns
    }

    fn new(o: Opts) -> Gen {
        let conns = Gen::connect_all(&o);
        // SAFETY: plain system call.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            fail(format!("epoll_create1: {}", io::Error::last_os_error()));
        }
        for c in &conns {
            epoll_ctl(
                ep,
                libc::EPOLL_CTL_ADD,
                c.fd,
                libc::EPOLLIN as u32,
                c.id as u64,
            );
        }
        if o.control {
            epoll_ctl(
                ep,
                libc::EPOLL_CTL_ADD,
                0,
                libc::EPOLLIN as u32,
                STDIN_TOKEN,
            );
        }
        let msg_wire = format!("MSG {} 1 {}\r\n", o.subject, o.size).len() + o.size + 2;
        let pub_prefix = format!("PUB {} {}\r\n", o.subject, o.size).into_bytes();
        let req_prefix = format!("PUB {}.req ", o.subject).into_bytes();
        let now = Instant::now();
        Gen {
            window_msgs: (o.window / msg_wire).max(1) as u64,
            published: vec![0; o.pubs],
            subs: conns
                .iter()
                .filter(|c| matches!(c.role, Role::Sub(_)))
                .map(|c| c.id)
                .collect(),
            pubs: conns
                .iter()
                .filter(|c| matches!(c.role, Role::Pub(_)))
                .map(|c| c.id)
                .collect(),
            conns,
            ep,
            pub_prefix,
            req_prefix,
            win: Window::new(now),
            last_progress: now,
            line: Vec::new(),
            quit: false,
            o,
        }
    }

    /// Fills publisher `ci`'s batch up to its window and writes it; true when it could go on
    /// right away (window open, socket not full).
    fn pump_pub(&mut self, ci: usize) -> bool {
        let Role::Pub(p) = self.conns[ci].role else {
            return false;
        };
        let slowest = self
            .subs
            .iter()
            .map(|&s| self.conns[s].seen[p])
            .min()
            .unwrap_or(0);
        let size = self.o.size;
        let c = &mut self.conns[ci];
        if c.want_out {
            return false;
        }
        let per = self.pub_prefix.len() + size + 2;
        let mut n = 0u64;
        while c.wbuf.len() + per <= WRITE_BATCH && self.published[p] - slowest < self.window_msgs {
            c.wbuf.extend_from_slice(&self.pub_prefix);
            put_payload(&mut c.wbuf, p, self.published[p], size);
            self.published[p] += 1;
            n += 1;
        }
        self.win.pubs += n;
        if c.wbuf.len() > c.wpos {
            write_out(self.ep, c);
        }
        !c.want_out && self.published[p] - slowest < self.window_msgs
    }

    /// Sends requester `ci`'s next request.
    fn send_request(&mut self, ci: usize, now: Instant) {
        let size = self.o.size;
        let subject = &self.o.subject;
        let c = &mut self.conns[ci];
        let Role::Requester(i) = c.role else { return };
        let seq = c.seen[0] + 1;
        c.seen[0] = seq;
        c.wbuf.extend_from_slice(&self.req_prefix);
        c.wbuf
            .extend_from_slice(format!("{subject}.rep.{i} {size}\r\n").as_bytes());
        put_payload(&mut c.wbuf, i, seq, size);
        c.waiting = true;
        c.t0 = now;
        write_out(self.ep, c);
    }

    fn control_input(&mut self) {
        let mut buf = [0u8; 256];
        // SAFETY: `buf` is a valid buffer of the length passed.
        let r = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return;
            }
            fail(format!("reading stdin: {e}"));
        }
        if r == 0 {
            self.quit = true;
            return;
        }
        self.line.extend_from_slice(&buf[..r as usize]);
        while let Some(pos) = self.line.iter().position(|&b| b == b'\n') {
            let cmd: Vec<u8> = self.line.drain(..=pos).collect();
            match cmd.trim_ascii() {
                b"mark" => {
                    let line = self.win.take(Instant::now());
                    say(&line);
                }
                b"quit" => self.quit = true,
                b"" => {}
                other => fail(format!(
                    "unknown command {:?}",
                    String::from_utf8_lossy(other)
                )),
            }
        }
    }

    /// Reads what connection `ci` has and handles every complete operation in it.
    fn on_readable(&mut self, ci: usize, now: Instant) {
        let c = &mut self.conns[ci];
        if c.rend == c.rbuf.len() {
            // Parse left a partial operation at the end: move it to the front.
            c.rbuf.copy_within(c.rstart..c.rend, 0);
            c.rend -= c.rstart;
            c.rstart = 0;
            if c.rend == c.rbuf.len() {
                fail(format!(
                    "connection {}: an operation larger than the buffer",
                    c.id
                ));
            }
        }
        // SAFETY: the range is inside `rbuf`, valid and writable.
        let r = unsafe {
            libc::read(
                c.fd,
                c.rbuf[c.rend..].as_mut_ptr().cast(),
                c.rbuf.len() - c.rend,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
                return;
            }
            fail(format!("connection {} ({:?}): read: {e}", c.id, c.role));
        }
        if r == 0 {
            fail(format!(
                "connection {} ({:?}): closed by the server",
                c.id, c.role
            ));
        }
        c.rend += r as usize;
        let role = c.role;
        let mut msgs = 0u64;
        let mut reqs = 0u64;
        let mut done_req = None;
        let hist = &mut self.win.hist;
        let subject = &self.o.subject;
        let size = self.o.size;
        match role {
            Role::Sub(_) => parse(c, &mut |c: &mut Conn, _reply: &[u8], payload: &[u8]| {
                msgs += 1;
                let (sender, seq) = check_payload(payload, c.id);
                match c.seen.get_mut(sender) {
                    Some(next) if *next == seq => *next += 1,
                    Some(next) => fail(format!(
                        "connection {}: from publisher {sender} got seq {seq}, expected {}",
                        c.id, *next
                    )),
                    None => fail(format!("connection {}: unknown publisher {sender}", c.id)),
                }
            }),
            Role::Responder => parse(c, &mut |c: &mut Conn, reply: &[u8], payload: &[u8]| {
                msgs += 1;
                if reply.is_empty() {
                    fail(format!(
                        "connection {}: a request without reply subject",
                        c.id
                    ));
                }
                check_payload(payload, c.id);
                c.wbuf.extend_from_slice(b"PUB ");
                c.wbuf.extend_from_slice(reply);
                c.wbuf
                    .extend_from_slice(format!(" {}\r\n", payload.len()).as_bytes());
                c.wbuf.extend_from_slice(payload);
                c.wbuf.extend_from_slice(b"\r\n");
            }),
            Role::Requester(i) => parse(c, &mut |c: &mut Conn, _reply: &[u8], payload: &[u8]| {
                msgs += 1;
                let (sender, seq) = check_payload(payload, c.id);
                if sender != i || !c.waiting || seq != c.seen[0] || payload.len() != size {
                    fail(format!(
                        "connection {}: reply for requester {sender} seq {seq}, outstanding: {} seq {} ({} B on {subject}.rep.{i})",
                        c.id,
                        if c.waiting { "yes" } else { "none" },
                        c.seen[0],
                        payload.len()
                    ));
                }
                c.waiting = false;
                hist.record(now.saturating_duration_since(c.t0).as_nanos() as u64);
                reqs += 1;
                done_req = Some(ci);
            }),
            Role::Pub(_) | Role::Idle => parse(c, &mut |c: &mut Conn, _: &[u8], _: &[u8]| {
                fail(format!(
                    "connection {} ({:?}) got a message it did not subscribe to",
                    c.id, c.role
                ))
            }),
        }
        if c.wbuf.len() > c.wpos && !c.want_out {
            write_out(self.ep, c);
        }
        self.win.msgs += msgs;
        self.win.reqs += reqs;
        if msgs > 0 {
            self.last_progress = now;
        }
        if let Some(ci) = done_req {
            self.send_request(ci, Instant::now());
        }
    }

    fn run(&mut self) {
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(self.o.max_secs);
        let stall = Duration::from_secs_f64(self.o.stall_secs);
        let (mut warmup_end, mut end) = (None, None);
        if !self.o.control {
            warmup_end = Some(start + Duration::from_secs_f64(self.o.warmup));
            end = Some(start + Duration::from_secs_f64(self.o.warmup + self.o.duration));
        }
        if self.o.control {
            say("ready");
        }
        let now = Instant::now();
        self.win = Window::new(now);
        self.last_progress = now;
        if self.o.mode == Mode::ReqRep {
            let reqs: Vec<usize> = (0..self.conns.len())
                .filter(|&i| matches!(self.conns[i].role, Role::Requester(_)))
                .collect();
            for ci in reqs {
                self.send_request(ci, Instant::now());
            }
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; self.conns.len() + 1];
        loop {
            let mut busy = false;
            for k in 0..self.pubs.len() {
                busy |= self.pump_pub(self.pubs[k]);
            }
            let timeout = if busy { 0 } else { 100 };
            // SAFETY: `events` is a valid array of the length passed.
            let n = unsafe {
                libc::epoll_wait(self.ep, events.as_mut_ptr(), events.len() as i32, timeout)
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    fail(format!("epoll_wait: {e}"));
                }
            }
            let now = Instant::now();
            for ev in &events[..n.max(0) as usize] {
                let (token, flags) = (ev.u64, ev.events);
                if token == STDIN_TOKEN {
                    self.control_input();
                    continue;
                }
                let ci = token as usize;
                if flags & libc::EPOLLOUT as u32 != 0 {
                    write_out(self.ep, &mut self.conns[ci]);
                }
                if flags & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                    self.on_readable(ci, now);
                }
            }
            if self.quit {
                return;
            }
            if now >= deadline {
                fail(format!(
                    "time limit of {:.1} s reached (--max-secs)",
                    self.o.max_secs
                ));
            }
            if self.o.mode != Mode::Idle && now.duration_since(self.last_progress) > stall {
                fail(format!(
                    "no message delivered for {:.1} s: the server stalled or dropped messages",
                    stall.as_secs_f64()
                ));
            }
            if let Some(w) = warmup_end
                && now >= w
            {
                warmup_end = None;
                self.win = Window::new(now);
            }
            if warmup_end.is_none()
                && let Some(e) = end
                && now >= e
            {
                return;
            }
        }
    }
}

/// Writes what `c` has staged; on a full socket registers EPOLLOUT, and when everything left,
/// drops it again.
fn write_out(ep: RawFd, c: &mut Conn) {
    while c.wpos < c.wbuf.len() {
        let rest = &c.wbuf[c.wpos..];
        // SAFETY: `rest` is a valid buffer of the length passed.
        let r = unsafe { libc::send(c.fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    if !c.want_out {
                        c.want_out = true;
                        let ev = (libc::EPOLLIN | libc::EPOLLOUT) as u32;
                        epoll_ctl(ep, libc::EPOLL_CTL_MOD, c.fd, ev, c.id as u64);
                    }
                    return;
                }
                _ => fail(format!("connection {} ({:?}): send: {e}", c.id, c.role)),
            }
        }
        c.wpos += r as usize;
    }
    c.wbuf.clear();
    c.wpos = 0;
    if c.want_out {
        c.want_out = false;
        epoll_ctl(
            ep,
            libc::EPOLL_CTL_MOD,
            c.fd,
            libc::EPOLLIN as u32,
            c.id as u64,
        );
    }
}

fn parse_size(t: &[u8]) -> Option<usize> {
    if t.is_empty() || t.len() > 9 {
        return None;
    }
    let mut n = 0usize;
    for &b in t {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + usize::from(b - b'0');
    }
    Some(n)
}

/// Handles every complete operation in `c.rbuf[c.rstart..c.rend]`: MSG goes to `on_msg(conn,
/// reply, payload)`, PING is answered (staged in `wbuf`), PONG counted, INFO and +OK ignored;
/// -ERR, HMSG and anything unknown end the run.
/// What [`parse`] hands every MSG to: the connection, the reply subject (empty: none), the
/// payload.
type OnMsg<'f> = dyn FnMut(&mut Conn, &[u8], &[u8]) + 'f;

fn parse(c: &mut Conn, on_msg: &mut OnMsg<'_>) {
    // The buffer is taken out so `on_msg` can have the connection.
    let buf = std::mem::take(&mut c.rbuf);
    let mut pos = c.rstart;
    let end = c.rend;
    while pos < end {
        let Some(nl) = buf[pos..end].iter().position(|&b| b == b'\n') else {
            break;
        };
        let line_end = pos + nl;
        let mut line = &buf[pos..line_end];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if line.len() > 4 && line[..4].eq_ignore_ascii_case(b"MSG ") {
            // MSG <subject> <sid> [reply] <size>
            let mut toks = [&[][..]; 5];
            let mut k = 0;
            for t in line[4..].split(|&b| b == b' ' || b == b'\t') {
                if t.is_empty() {
                    continue;
                }
                if k == toks.len() {
                    k += 1;
                    break;
                }
                toks[k] = t;
                k += 1;
            }
            let (reply, size) = match k {
                3 => (&[][..], toks[2]),
                4 => (toks[2], toks[3]),
                _ => fail(format!(
                    "connection {}: malformed MSG line {:?}",
                    c.id,
                    String::from_utf8_lossy(line)
                )),
            };
            let Some(size) = parse_size(size) else {
                fail(format!(
                    "connection {}: bad size in {:?}",
                    c.id,
                    String::from_utf8_lossy(line)
                ));
            };
            let p0 = line_end + 1;
            if p0 + size + 2 > end {
                break;
            }
            if &buf[p0 + size..p0 + size + 2] != b"\r\n" {
                fail(format!("connection {}: payload not followed by CRLF", c.id));
            }
            on_msg(c, reply, &buf[p0..p0 + size]);
            pos = p0 + size + 2;
            continue;
        }
        if line.eq_ignore_ascii_case(b"PING") {
            c.wbuf.extend_from_slice(b"PONG\r\n");
        } else if line.eq_ignore_ascii_case(b"PONG") {
            c.pongs += 1;
        } else if line.starts_with(b"INFO ") || line.eq_ignore_ascii_case(b"+OK") {
        } else {
            fail(format!(
                "connection {} ({:?}): server said {:?}",
                c.id,
                c.role,
                String::from_utf8_lossy(line)
            ));
        }
        pos = line_end + 1;
    }
    c.rbuf = buf;
    if pos == end {
        c.rstart = 0;
        c.rend = 0;
    } else {
        c.rstart = pos;
    }
}

fn main() {
    let o = parse_opts();
    if let Some(cpu) = o.cpu
        && let Err(e) = pin_to_cpu(0, cpu)
    {
        fail(format!("cannot pin to CPU {cpu}: {e}"));
    }
    let _ = raise_nofile_limit();
    let control = o.control;
    let mut g = Gen::new(o);
    g.run();
    if !control {
        let now = Instant::now();
        let secs = now.duration_since(g.win.since).as_secs_f64();
        let w = &g.win;
        let us = |ns: u64| ns as f64 / 1000.0;
        say(&format!(
            "nats-loadgen: {:?}: {:.0} msgs/s delivered, {:.0} published/s, {:.0} requests/s over \
             {secs:.2} s; request latency p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, max {:.1} us; \
             every message verified",
            g.o.mode,
            w.msgs as f64 / secs,
            w.pubs as f64 / secs,
            w.reqs as f64 / secs,
            us(w.hist.quantile(0.5)),
            us(w.hist.quantile(0.9)),
            us(w.hist.quantile(0.99)),
            us(w.hist.max()),
        ));
        let line = g.win.take(now);
        say(&line);
    }
}
