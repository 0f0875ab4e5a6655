//! Load generator for echo servers: ping-pong over C connections with messages of S bytes,
//! P messages per batch (P = 1: plain ping-pong; P > 1: P messages written back to back, then
//! wait for all P echoes). Every echoed byte is compared with what was sent (a deterministic
//! payload per connection and batch); a mismatch ends the run with exit status 2.
//!
//! One thread drives all connections, through io_uring (default: sends and receives of a whole
//! loop turn go to the kernel in one `io_uring_enter`) or epoll (`--driver epoll`, used
//! automatically when io_uring cannot be set up).
//!
//! Two ways to run:
//! - standalone: `loadgen --addr A [--conns C --size S --depth P --warmup W --duration D]` runs
//!   W seconds of warm-up, D measured seconds, prints a report and exits;
//! - `--control` (used by the `bench` runner): prints `ready` once every connection is up, then
//!   reads commands from stdin: `mark` answers with one line of statistics for the window since
//!   the previous `mark` (or since `ready`), `quit` (or end of input) exits. `--max-secs` bounds
//!   the run either way.
//!
//! Statistics line: `mark msgs=M batches=B ns=T p50=.. p90=.. p99=.. p999=.. max=..`, latencies
//! in nanoseconds per batch (per round trip when P = 1), `msgs` = echoed messages = round trips.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, types};
use ringlet_bench::{
    Histogram, die, epoll_ctl, fill_payload, flag_num, loadgen_setup, parse_flags, say,
};

const USAGE: &str = "usage: loadgen --addr IP:PORT [--conns C] [--size BYTES] [--depth P]
               [--driver uring|epoll] [--warmup SECS] [--duration SECS]
               [--control] [--max-secs SECS] [--stall-secs SECS] [--cpu N]";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Driver {
    Uring,
    Epoll,
}

struct Opts {
    addr: SocketAddr,
    conns: usize,
    size: usize,
    depth: usize,
    driver: Driver,
    warmup: f64,
    duration: f64,
    control: bool,
    max_secs: f64,
    stall_secs: f64,
    cpu: Option<usize>,
}

const PROG: &str = "loadgen";

fn fail(msg: impl std::fmt::Display) -> ! {
    die(PROG, msg)
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        conns: 1,
        size: 64,
        depth: 1,
        driver: Driver::Uring,
        warmup: 1.0,
        duration: 5.0,
        control: false,
        max_secs: 0.0,
        stall_secs: 5.0,
        cpu: None,
    };
    let mut have_addr = false;
    o.control = parse_flags(PROG, USAGE, |a, v| match a {
        "--addr" => {
            o.addr = flag_num(PROG, a, &v);
            have_addr = true;
        }
        "--conns" => o.conns = flag_num(PROG, a, &v),
        "--size" => o.size = flag_num(PROG, a, &v),
        "--depth" => o.depth = flag_num(PROG, a, &v),
        "--warmup" => o.warmup = flag_num(PROG, a, &v),
        "--duration" => o.duration = flag_num(PROG, a, &v),
        "--max-secs" => o.max_secs = flag_num(PROG, a, &v),
        "--stall-secs" => o.stall_secs = flag_num(PROG, a, &v),
        "--cpu" => o.cpu = Some(flag_num(PROG, a, &v)),
        "--driver" => {
            o.driver = match v.as_str() {
                "uring" => Driver::Uring,
                "epoll" => Driver::Epoll,
                _ => fail(format!("--driver must be uring or epoll, not {v:?}")),
            }
        }
        _ => fail(format!("unknown argument {a:?}\n{USAGE}")),
    });
    if !have_addr {
        fail(format!("--addr is required\n{USAGE}"));
    }
    if o.conns == 0 || o.size == 0 || o.depth == 0 {
        fail("--conns, --size and --depth must be at least 1");
    }
    if o.size * o.depth > u32::MAX as usize / 2 {
        fail("--size x --depth is too large");
    }
    if o.max_secs <= 0.0 {
        // Standalone runs end by themselves; a controlled run gets a generous bound.
        o.max_secs = if o.control {
            600.0
        } else {
            o.warmup + o.duration + 30.0
        };
    }
    o
}

/// One client connection and its current batch.
struct Conn {
    /// Owns the socket (closed when the connection is dropped).
    _stream: TcpStream,
    fd: RawFd,
    id: u32,
    batch: u64,
    /// The batch as sent (P x S bytes); echoes are compared with it.
    send_buf: Box<[u8]>,
    recv_buf: Box<[u8]>,
    sent: usize,
    recvd: usize,
    /// io_uring: a send is in flight. epoll: waiting for EPOLLOUT to send the rest.
    send_busy: bool,
    /// io_uring: a receive is in flight.
    recv_busy: bool,
    t0: Instant,
}

impl Conn {
    fn start_batch(&mut self) {
        self.batch += 1;
        fill_payload(self.id, self.batch, &mut self.send_buf);
        self.sent = 0;
        self.recvd = 0;
    }

    /// Checks `n` freshly received bytes (at `recv_buf[recvd..]`) against what was sent.
    fn accept_echo(&mut self, n: usize, size: usize) {
        let got = &self.recv_buf[self.recvd..self.recvd + n];
        let want = &self.send_buf[self.recvd..self.recvd + n];
        if got != want {
            let k = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
            let off = self.recvd + k;
            fail(format!(
                "echo mismatch on connection {} (batch {}, message {} of the batch, byte {} of \
                 the message): expected 0x{:02x}, got 0x{:02x}",
                self.id,
                self.batch,
                off / size,
                off % size,
                want[k],
                got[k]
            ));
        }
        self.recvd += n;
    }

    fn batch_done(&self) -> bool {
        let len = self.send_buf.len();
        self.sent == len && self.recvd == len && !self.send_busy && !self.recv_busy
    }
}

/// Counters of the current window (since `ready`, the last `mark`, or the warm-up's end).
struct Window {
    hist: Histogram,
    batches: u64,
    since: Instant,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            hist: Histogram::new(),
            batches: 0,
            since: now,
        }
    }

    /// The statistics line of the window ending at `now`; starts a new window.
    fn take(&mut self, now: Instant, depth: usize) -> String {
        let ns = now.duration_since(self.since).as_nanos();
        let h = &self.hist;
        let line = format!(
            "mark msgs={} batches={} ns={} p50={} p90={} p99={} p999={} max={}",
            self.batches * depth as u64,
            self.batches,
            ns,
            h.quantile(0.50),
            h.quantile(0.90),
            h.quantile(0.99),
            h.quantile(0.999),
            h.max()
        );
        self.hist.clear();
        self.batches = 0;
        self.since = now;
        line
    }
}

/// What the loop does besides driving connections: phases, the control channel, time bounds.
struct Ctl {
    control: bool,
    depth: usize,
    start: Instant,
    warmup: Duration,
    duration: Duration,
    warmup_end: Option<Instant>,
    end: Instant,
    deadline: Instant,
    stall: Duration,
    last_progress: Instant,
    window: Window,
    line: Vec<u8>,
    quit: bool,
}

impl Ctl {
    fn new(o: &Opts) -> Self {
        let now = Instant::now();
        let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
        Self {
            control: o.control,
            depth: o.depth,
            start: now,
            warmup: secs(o.warmup),
            duration: secs(o.duration),
            warmup_end: (!o.control).then(|| now + secs(o.warmup)),
            end: now + secs(o.warmup + o.duration),
            deadline: now + secs(o.max_secs),
            stall: secs(o.stall_secs),
            last_progress: now,
            window: Window::new(now),
            line: Vec::new(),
            quit: false,
        }
    }

    /// Traffic starts now (every connection is up): phases and the first window count from
    /// here; the overall deadline stays where it was.
    fn traffic_starts(&mut self) {
        let now = Instant::now();
        if !self.control {
            self.warmup_end = Some(now + self.warmup);
            self.end = now + self.warmup + self.duration;
        }
        self.window = Window::new(now);
        self.last_progress = now;
    }

    fn record(&mut self, t0: Instant, now: Instant) {
        self.window
            .hist
            .record(now.saturating_duration_since(t0).as_nanos() as u64);
        self.window.batches += 1;
        self.last_progress = now;
    }

    /// Control input from stdin; `bytes` empty means end of input.
    fn input(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            self.quit = true;
            return;
        }
        self.line.extend_from_slice(bytes);
        while let Some(pos) = self.line.iter().position(|&b| b == b'\n') {
            let cmd: Vec<u8> = self.line.drain(..=pos).collect();
            match cmd.trim_ascii() {
                b"mark" => {
                    let line = self.window.take(Instant::now(), self.depth);
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

    /// Time-driven checks, once per loop turn. Returns true when the run is over.
    fn tick(&mut self, now: Instant) -> bool {
        if self.quit {
            return true;
        }
        if now >= self.deadline {
            fail(format!(
                "time limit of {:.1} s reached (--max-secs)",
                (self.deadline - self.start).as_secs_f64()
            ));
        }
        if now.duration_since(self.last_progress) > self.stall {
            fail(format!(
                "no echo completed for {:.1} s: the server stalled or dropped data",
                self.stall.as_secs_f64()
            ));
        }
        if !self.control {
            if let Some(w) = self.warmup_end {
                if now >= w {
                    self.warmup_end = None;
                    self.window = Window::new(now);
                }
            } else if now >= self.end {
                return true;
            }
        }
        false
    }
}

fn connect_all(o: &Opts, nonblocking: bool) -> Vec<Conn> {
    let len = o.size * o.depth;
    let now = Instant::now();
    (0..o.conns)
        .map(|i| {
            let stream = TcpStream::connect_timeout(&o.addr, Duration::from_secs(5))
                .unwrap_or_else(|e| fail(format!("connect #{i} to {}: {e}", o.addr)));
            stream
                .set_nodelay(true)
                .unwrap_or_else(|e| fail(format!("TCP_NODELAY: {e}")));
            stream
                .set_nonblocking(nonblocking)
                .unwrap_or_else(|e| fail(format!("O_NONBLOCK: {e}")));
            let fd = stream.as_raw_fd();
            Conn {
                _stream: stream,
                fd,
                id: i as u32,
                batch: 0,
                send_buf: vec![0; len].into_boxed_slice(),
                recv_buf: vec![0; len].into_boxed_slice(),
                sent: 0,
                recvd: 0,
                send_busy: false,
                recv_busy: false,
                t0: now,
            }
        })
        .collect()
}

// ---------------------------------------------------------------- io_uring driver

const OP_SEND: u64 = 1;
const OP_RECV: u64 = 2;
const OP_STDIN: u64 = 3;

fn new_ring(entries: u32) -> io::Result<IoUring> {
    // Cheapest completion handling first (6.1+), then plainer set-ups.
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(entries)
        .or_else(|_| IoUring::builder().setup_coop_taskrun().build(entries))
        .or_else(|_| IoUring::builder().build(entries))
}

fn run_uring(o: &Opts, ring: &mut IoUring, ctl: &mut Ctl) {
    let mut conns = connect_all(o, false);
    let (submitter, mut sq, mut cq) = ring.split();
    let mut stdin_buf = [0u8; 256];
    let mut started: Vec<usize> = Vec::with_capacity(conns.len());

    let push = |sq: &mut io_uring::SubmissionQueue<'_>, e: io_uring::squeue::Entry| {
        // SAFETY: every buffer an entry points at (connection buffers, stdin_buf) lives until
        // the process exits; the queue is sized for two entries per connection plus stdin.
        if unsafe { sq.push(&e) }.is_err() {
            fail("submission queue full");
        }
    };
    let send = |c: &Conn| {
        let rest = &c.send_buf[c.sent..];
        opcode::Send::new(types::Fd(c.fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(((c.id as u64) << 2) | OP_SEND)
    };
    let recv = |c: &mut Conn| {
        let len = c.recv_buf.len();
        let rest = &mut c.recv_buf[c.recvd..len];
        opcode::Recv::new(types::Fd(c.fd), rest.as_mut_ptr(), rest.len() as u32)
            .build()
            .user_data(((c.id as u64) << 2) | OP_RECV)
    };
    let stdin_read = |buf: &mut [u8; 256]| {
        opcode::Read::new(types::Fd(0), buf.as_mut_ptr(), buf.len() as u32)
            .build()
            .user_data(OP_STDIN)
    };

    if ctl.control {
        push(&mut sq, stdin_read(&mut stdin_buf));
    }
    for (i, c) in conns.iter_mut().enumerate() {
        c.start_batch();
        c.send_busy = true;
        c.recv_busy = true;
        push(&mut sq, send(c));
        push(&mut sq, recv(c));
        started.push(i);
    }
    if ctl.control {
        say("ready");
    }
    ctl.traffic_starts();

    let ts = types::Timespec::new().nsec(100_000_000);
    let args = types::SubmitArgs::new().timespec(&ts);
    loop {
        if !started.is_empty() {
            let now = Instant::now();
            for &i in &started {
                conns[i].t0 = now;
            }
            started.clear();
        }
        sq.sync();
        match submitter.submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => fail(format!("io_uring_enter: {e}")),
        }
        // Refresh our view of the submission queue's head: the kernel consumed what we
        // submitted, and this turn's pushes need that room.
        sq.sync();
        cq.sync();
        let now = Instant::now();
        for cqe in &mut cq {
            let (ud, res) = (cqe.user_data(), cqe.result());
            if ud == OP_STDIN {
                if res < 0 {
                    fail(format!(
                        "reading stdin: {}",
                        io::Error::from_raw_os_error(-res)
                    ));
                }
                ctl.input(&stdin_buf[..res as usize]);
                if res > 0 {
                    push(&mut sq, stdin_read(&mut stdin_buf));
                }
                continue;
            }
            let i = (ud >> 2) as usize;
            let c = &mut conns[i];
            if res < 0 {
                let what = if ud & 3 == OP_SEND { "send" } else { "receive" };
                fail(format!(
                    "{what} on connection {i}: {}",
                    io::Error::from_raw_os_error(-res)
                ));
            }
            let n = res as usize;
            if ud & 3 == OP_SEND {
                c.send_busy = false;
                c.sent += n;
                if c.sent < c.send_buf.len() {
                    c.send_busy = true;
                    push(&mut sq, send(c));
                }
            } else {
                c.recv_busy = false;
                if n == 0 {
                    fail(format!(
                        "server closed connection {i} ({} of {} bytes of batch {} echoed)",
                        c.recvd,
                        c.recv_buf.len(),
                        c.batch
                    ));
                }
                c.accept_echo(n, o.size);
                if c.recvd < c.recv_buf.len() {
                    c.recv_busy = true;
                    push(&mut sq, recv(c));
                }
            }
            if c.batch_done() {
                ctl.record(c.t0, now);
                c.start_batch();
                c.send_busy = true;
                c.recv_busy = true;
                push(&mut sq, send(c));
                push(&mut sq, recv(c));
                started.push(i);
            }
        }
        if ctl.tick(now) {
            break;
        }
    }
}

// ---------------------------------------------------------------- epoll driver

const STDIN_TOKEN: u64 = u64::MAX;

/// Sends the rest of the current batch; on a full socket buffer waits for EPOLLOUT.
fn epoll_send(ep: RawFd, c: &mut Conn) {
    while c.sent < c.send_buf.len() {
        let rest = &c.send_buf[c.sent..];
        // SAFETY: `rest` is a valid buffer of the length passed.
        let r = unsafe { libc::send(c.fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    if !c.send_busy {
                        c.send_busy = true;
                        let ev = (libc::EPOLLIN | libc::EPOLLOUT) as u32;
                        epoll_ctl(PROG, ep, libc::EPOLL_CTL_MOD, c.fd, ev, u64::from(c.id));
                    }
                    return;
                }
                _ => fail(format!("send on connection {}: {e}", c.id)),
            }
        }
        c.sent += r as usize;
    }
    if c.send_busy {
        c.send_busy = false;
        epoll_ctl(
            PROG,
            ep,
            libc::EPOLL_CTL_MOD,
            c.fd,
            libc::EPOLLIN as u32,
            u64::from(c.id),
        );
    }
}

fn run_epoll(o: &Opts, ctl: &mut Ctl) {
    let mut conns = connect_all(o, true);
    // SAFETY: plain system call.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        fail(format!("epoll_create1: {}", io::Error::last_os_error()));
    }
    if ctl.control {
        epoll_ctl(
            PROG,
            ep,
            libc::EPOLL_CTL_ADD,
            0,
            libc::EPOLLIN as u32,
            STDIN_TOKEN,
        );
    }
    for c in &mut conns {
        epoll_ctl(
            PROG,
            ep,
            libc::EPOLL_CTL_ADD,
            c.fd,
            libc::EPOLLIN as u32,
            u64::from(c.id),
        );
    }
    if ctl.control {
        say("ready");
    }
    ctl.traffic_starts();
    for c in &mut conns {
        c.start_batch();
        c.t0 = Instant::now();
        epoll_send(ep, c);
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; conns.len() + 1];
    loop {
        // SAFETY: `events` is a valid array of the length passed.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 100) };
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
                let mut buf = [0u8; 256];
                // SAFETY: `buf` is a valid buffer of the length passed.
                let r = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if r < 0 {
                    fail(format!("reading stdin: {}", io::Error::last_os_error()));
                }
                ctl.input(&buf[..r as usize]);
                continue;
            }
            let c = &mut conns[token as usize];
            if flags & libc::EPOLLOUT as u32 != 0 && c.send_busy {
                epoll_send(ep, c);
            }
            if flags & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                let len = c.recv_buf.len();
                if c.recvd == len {
                    // Bytes beyond the batch: the next batch's check will catch them; or an
                    // error/hang-up, which the next receive reports.
                    continue;
                }
                let rest = &mut c.recv_buf[c.recvd..len];
                // SAFETY: `rest` is a valid, writable buffer of the length passed.
                let r = unsafe { libc::recv(c.fd, rest.as_mut_ptr().cast(), rest.len(), 0) };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
                        continue;
                    }
                    fail(format!("receive on connection {}: {e}", c.id));
                }
                if r == 0 {
                    fail(format!(
                        "server closed connection {} ({} of {len} bytes of batch {} echoed)",
                        c.id, c.recvd, c.batch
                    ));
                }
                c.accept_echo(r as usize, o.size);
            }
            if c.batch_done() {
                ctl.record(c.t0, now);
                c.start_batch();
                c.t0 = Instant::now();
                epoll_send(ep, c);
            }
        }
        if ctl.tick(now) {
            break;
        }
    }
    // SAFETY: `ep` is our descriptor, closed once.
    unsafe { libc::close(ep) };
}

// ---------------------------------------------------------------- main

fn main() {
    let o = parse_opts();
    loadgen_setup(PROG, o.cpu);
    let mut ctl = Ctl::new(&o);
    let mut driver = o.driver;
    let mut ring = None;
    if driver == Driver::Uring {
        let entries = (2 * o.conns + 16).next_power_of_two().min(16384) as u32;
        match new_ring(entries) {
            Ok(r) => ring = Some(r),
            Err(e) => {
                eprintln!("loadgen: io_uring unavailable ({e}); using epoll");
                driver = Driver::Epoll;
            }
        }
    }
    match (driver, ring.as_mut()) {
        (Driver::Uring, Some(r)) => run_uring(&o, r, &mut ctl),
        _ => run_epoll(&o, &mut ctl),
    }
    if !o.control {
        let now = Instant::now();
        let w = &ctl.window;
        let secs = now.duration_since(w.since).as_secs_f64();
        let msgs = w.batches * o.depth as u64;
        let us = |ns: u64| ns as f64 / 1000.0;
        let unit = if o.depth == 1 { "round trip" } else { "batch" };
        say(&format!(
            "loadgen: {driver:?}, {} conns, {} B x {} per batch: {:.0} round trips/s over {secs:.2} s; \
             latency per {unit}: p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us; \
             every byte verified",
            o.conns,
            o.size,
            o.depth,
            msgs as f64 / secs,
            us(w.hist.quantile(0.5)),
            us(w.hist.quantile(0.9)),
            us(w.hist.quantile(0.99)),
            us(w.hist.quantile(0.999)),
            us(w.hist.max()),
        ));
        let line = ctl.window.take(now, o.depth);
        say(&line);
    }
}
