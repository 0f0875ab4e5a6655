//! The broker allocates nothing after start-up: a counting global allocator counts every
//! allocation, reallocation and free made on the broker's loop thread once the broker is
//! serving, while clients on other threads connect, subscribe, publish (plain, headers,
//! wildcards, queue groups, large payloads), do request/reply and no-responders, unsubscribe,
//! hit errors, get cut off as slow consumers, time out, and disconnect, on both backends.
//!
//! Only the loop thread is counted (a thread-local flag it sets after start-up, and
//! thread-local counters it reads before it ends), so the clients' own allocations, and other
//! tests running in parallel, do not count. `counting_allocator_sees_this_threads_allocations`
//! shows the instrument counts what it should and nothing else.

mod broker_util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use broker_util::{BUF_SIZE, CONNS, LEASE_QUOTA, backends, leak, mem, server_config};
use ringlet::broker::server::{Broker, BrokerStats, ServerConfig};
use ringlet::reactor::{BackendChoice, Config, Reactor, Resources};

// ---------------------------------------------------------------- the counting allocator

thread_local! {
    /// Count this thread's heap operations.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// This thread's counts while COUNTING: allocations (incl. zeroed and reallocations),
    /// frees, and the size of the first allocation (for the failure message).
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static FREES: Cell<u64> = const { Cell::new(0) };
    static FIRST_SIZE: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

/// Counts one heap operation of the calling thread, if it counts. `try_with` because the
/// allocator also runs while thread-locals are being torn down; const-initialised `Cell`s of
/// plain integers need no allocation and no destructor, so this never recurses.
fn note(alloc: bool, size: usize) {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        if alloc {
            let _ = ALLOCS.try_with(|c| {
                if c.get() == 0 {
                    let _ = FIRST_SIZE.try_with(|f| f.set(size));
                }
                c.set(c.get() + 1);
            });
        } else {
            let _ = FREES.try_with(|c| c.set(c.get() + 1));
        }
    }
}

// SAFETY: every method forwards to `System` with the same arguments, so the allocator's
// contract (layouts, pointers from this allocator) is `System`'s; counting touches only
// thread-local integers and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(true, layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(true, layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(true, new_size);
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract (`ptr` came
        // from this allocator, which is `System` underneath).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(false, layout.size());
        // SAFETY: forwarded unchanged; `ptr` came from this allocator (`System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What a counted stretch of a thread did on the heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HeapOps {
    allocs: u64,
    frees: u64,
    first_size: usize,
}

/// Starts counting the calling thread's heap operations from zero.
fn count_from_here() {
    ALLOCS.with(|c| c.set(0));
    FREES.with(|c| c.set(0));
    FIRST_SIZE.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
}

/// Stops counting and returns what was counted.
fn stop_counting() -> HeapOps {
    COUNTING.with(|c| c.set(false));
    HeapOps {
        allocs: ALLOCS.with(Cell::get),
        frees: FREES.with(Cell::get),
        first_size: FIRST_SIZE.with(Cell::get),
    }
}

#[test]
fn counting_allocator_sees_this_threads_allocations() {
    let h = thread::spawn(|| {
        count_from_here();
        let v: Vec<u8> = Vec::with_capacity(100);
        let mut v2 = std::hint::black_box(v);
        v2.reserve(1000);
        drop(v2);
        // Another thread's allocation is not this thread's.
        allocate_on_another_thread();
        stop_counting()
    });
    let ops = h.join().unwrap();
    assert_eq!(
        ops,
        HeapOps {
            allocs: 2,
            frees: 1,
            first_size: 100
        }
    );
    // Not counting: nothing is recorded.
    let h = thread::spawn(|| {
        let _ = std::hint::black_box(vec![1u8; 10]);
        ALLOCS.with(Cell::get)
    });
    assert_eq!(h.join().unwrap(), 0);
}

/// Allocates on another thread. Spawning and joining allocate on the caller too, so the caller
/// stops counting around them; only the other thread's allocation happens meanwhile.
fn allocate_on_another_thread() {
    COUNTING.with(|c| c.set(false));
    let h = thread::spawn(|| std::hint::black_box(vec![0u8; 4096]).len());
    assert_eq!(h.join().unwrap(), 4096);
    COUNTING.with(|c| c.set(true));
}

// ---------------------------------------------------------------- a broker, counted

type Res = Resources<CONNS, 512, BUF_SIZE, { 512 * 1024 }, 128>;

struct Counted {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    join: thread::JoinHandle<(HeapOps, BrokerStats)>,
}

/// A broker on its own thread that counts its heap operations from the moment it serves.
fn start_counted(backend: BackendChoice, cfg: ServerConfig) -> Counted {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let (tx, rx) = mpsc::channel();
    let join = thread::spawn(move || {
        let config = Config {
            backend,
            lease_quota: LEASE_QUOTA,
            ..Config::default()
        };
        cfg.check_capacity(BUF_SIZE, usize::from(LEASE_QUOTA))
            .expect("max_payload fits the lease budget");
        let mut reactor = Reactor::new(leak::<Res>(), config).expect("reactor");
        let l = reactor
            .listen("127.0.0.1:0".parse().unwrap())
            .expect("listen");
        let addr = reactor.listener_addr(l).unwrap();
        let mut broker = Broker::new(mem(), cfg, 42).expect("broker");
        broker.set_port(addr.port());
        tx.send(addr).unwrap();
        // Start-up is over: from here on, nothing may touch the heap.
        let deadline = Instant::now() + Duration::from_secs(120);
        count_from_here();
        while !reactor.is_stopped() {
            if Instant::now() > deadline {
                stop_counting();
                panic!("broker ran for 120 s: test hung");
            }
            if stop2.load(Ordering::SeqCst) {
                reactor.stop();
            }
            if let Err(e) = reactor.turn(&mut broker, Some(Duration::from_millis(20))) {
                stop_counting();
                panic!("turn: {e}");
            }
        }
        let ops = stop_counting();
        (ops, broker.stats())
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("broker started");
    Counted { addr, stop, join }
}

impl Counted {
    fn stop(self) -> (HeapOps, BrokerStats) {
        self.stop.store(true, Ordering::SeqCst);
        self.join.join().expect("broker thread")
    }
}

// ---------------------------------------------------------------- raw clients

const QUIET: &str = r#"{"verbose":false,"pedantic":false,"headers":true,"no_responders":true}"#;

/// A raw NATS client: a blocking socket (reads bounded by a timeout so a broken broker fails
/// the test instead of hanging it) and what it received but has not looked at yet.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

/// One server operation, as a client sees it.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Msg {
        subject: String,
        sid: String,
        reply: Option<String>,
        headers: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
    Ok,
    Pong,
    Err(String),
    Closed,
}

impl Client {
    fn raw(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        let mut c = Client { s, buf: Vec::new() };
        let line = c.line().expect("INFO");
        assert!(line.starts_with("INFO {"), "{line}");
        c
    }

    /// Connected: INFO read, CONNECT sent, PONG seen.
    fn new(addr: SocketAddr, connect_json: &str) -> Client {
        let mut c = Client::raw(addr);
        c.send(format!("CONNECT {connect_json}\r\nPING\r\n").as_bytes());
        loop {
            match c.next() {
                Got::Pong => return c,
                // A verbose client's CONNECT is acknowledged first.
                Got::Ok => {}
                other => panic!("CONNECT answered with {other:?}"),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write");
    }

    fn fill(&mut self) -> bool {
        let mut b = [0u8; 65536];
        match self.s.read(&mut b) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read: {e} (have {:?})", String::from_utf8_lossy(&self.buf)),
        }
    }

    /// The next line without its CRLF; None at EOF.
    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8(self.buf[..p].to_vec()).unwrap();
                self.buf.drain(..p + 2);
                return Some(l);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n + 2 {
            assert!(self.fill(), "EOF inside a payload");
        }
        assert_eq!(&self.buf[n..n + 2], b"\r\n", "payload not followed by CRLF");
        let v = self.buf[..n].to_vec();
        self.buf.drain(..n + 2);
        v
    }

    /// The next operation; server PINGs are answered and skipped.
    fn next(&mut self) -> Got {
        loop {
            let Some(line) = self.line() else {
                return Got::Closed;
            };
            let t: Vec<&str> = line.split(' ').collect();
            return match t[0] {
                "PING" => {
                    self.send(b"PONG\r\n");
                    continue;
                }
                "PONG" => Got::Pong,
                "+OK" => Got::Ok,
                "-ERR" => Got::Err(line[5..].to_string()),
                "MSG" => {
                    let n: usize = t[t.len() - 1].parse().unwrap();
                    let payload = self.bytes(n);
                    Got::Msg {
                        subject: t[1].into(),
                        sid: t[2].into(),
                        reply: (t.len() == 5).then(|| t[3].to_string()),
                        headers: None,
                        payload,
                    }
                }
                "HMSG" => {
                    let h: usize = t[t.len() - 2].parse().unwrap();
                    let n: usize = t[t.len() - 1].parse().unwrap();
                    let mut all = self.bytes(n);
                    let payload = all.split_off(h);
                    Got::Msg {
                        subject: t[1].into(),
                        sid: t[2].into(),
                        reply: (t.len() == 6).then(|| t[3].to_string()),
                        headers: Some(all),
                        payload,
                    }
                }
                other => panic!("unexpected {other:?} in {line:?}"),
            };
        }
    }

    /// PING, and everything that arrives before the PONG.
    fn sync(&mut self) -> Vec<Got> {
        self.send(b"PING\r\n");
        let mut v = Vec::new();
        loop {
            match self.next() {
                Got::Pong => return v,
                Got::Closed => panic!("closed while syncing, after {v:?}"),
                g => v.push(g),
            }
        }
    }

    fn expect_msg(&mut self, subject: &str, sid: &str, reply: Option<&str>, payload: &[u8]) {
        match self.next() {
            Got::Msg {
                subject: s,
                sid: i,
                reply: r,
                payload: p,
                ..
            } => {
                assert_eq!(
                    (s.as_str(), i.as_str(), r.as_deref()),
                    (subject, sid, reply)
                );
                assert_eq!(p, payload, "payload of {subject}");
            }
            other => panic!("wanted MSG {subject} {sid}, got {other:?}"),
        }
    }

    fn expect_closed(&mut self) {
        loop {
            match self.next() {
                Got::Closed => return,
                Got::Err(_) => {}
                other => panic!("wanted the close, got {other:?}"),
            }
        }
    }
}

fn msg(subject: &str, sid: &str, reply: Option<&str>, payload: &[u8]) -> Got {
    Got::Msg {
        subject: subject.into(),
        sid: sid.into(),
        reply: reply.map(String::from),
        headers: None,
        payload: payload.to_vec(),
    }
}

// ---------------------------------------------------------------- the traffic

/// Pub/sub in every shape the broker handles, on connections that come and go.
fn pubsub_traffic(addr: SocketAddr) {
    let mut sub = Client::new(addr, QUIET);
    sub.send(b"SUB foo.* 1\r\nSUB foo.> 2\r\nSUB bar 3\r\nSUB h 4\r\n");
    sub.sync();
    let mut plain = Client::new(addr, r#"{"verbose":false,"pedantic":false}"#);
    plain.send(b"SUB h 1\r\n");
    plain.sync();
    let mut publ = Client::new(addr, QUIET);
    publ.send(b"PUB foo.x 5\r\nhello\r\nPUB foo.y.z r.1 3\r\nabc\r\nPUB bar 0\r\n\r\n");
    publ.send(b"HPUB h 22 27\r\nNATS/1.0\r\nK: value\r\n\r\nworld\r\n");
    publ.sync();
    let mut got = sub.sync();
    // foo.x matches both wildcards, in the sublist's order.
    got[..2].sort_by_key(|g| format!("{g:?}"));
    assert_eq!(got[0], msg("foo.x", "1", None, b"hello"));
    assert_eq!(got[1], msg("foo.x", "2", None, b"hello"));
    assert_eq!(got[2], msg("foo.y.z", "2", Some("r.1"), b"abc"));
    assert_eq!(got[3], msg("bar", "3", None, b""));
    match &got[4] {
        Got::Msg {
            headers, payload, ..
        } => {
            assert_eq!(
                headers.as_deref(),
                Some(&b"NATS/1.0\r\nK: value\r\n\r\n"[..])
            );
            assert_eq!(payload, b"world");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(got.len(), 5, "{got:?}");
    // Headers stripped for a client that did not ask for them.
    plain.expect_msg("h", "1", None, b"world");

    // Queue group: one member per message.
    let mut q1 = Client::new(addr, QUIET);
    let mut q2 = Client::new(addr, QUIET);
    q1.send(b"SUB work grp 7\r\n");
    q2.send(b"SUB work grp 8\r\n");
    q1.sync();
    q2.sync();
    for i in 0..20 {
        publ.send(format!("PUB work 2\r\n{i:02}\r\n").as_bytes());
    }
    publ.sync();
    let n = q1.sync().len() + q2.sync().len();
    assert_eq!(n, 20);

    // UNSUB after a maximum, UNSUB now, a reused sid.
    sub.send(b"SUB z 9\r\nUNSUB 9 2\r\nSUB gone 10\r\nUNSUB 10\r\nSUB bar 3\r\n");
    sub.sync();
    publ.send(b"PUB z 1\r\na\r\nPUB z 1\r\nb\r\nPUB z 1\r\nc\r\nPUB gone 1\r\nx\r\n");
    publ.sync();
    assert_eq!(
        sub.sync(),
        vec![msg("z", "9", None, b"a"), msg("z", "9", None, b"b")]
    );

    // A payload over several receive buffers.
    let big: Vec<u8> = (0..(3 * BUF_SIZE + 123)).map(|i| (i % 251) as u8).collect();
    publ.send(format!("PUB bar {}\r\n", big.len()).as_bytes());
    publ.send(&big);
    publ.send(b"\r\n");
    publ.sync();
    sub.expect_msg("bar", "3", None, &big);

    // Verbose: +OK after each operation (a PUB's on its line, before its own copy, as
    // nats-server does).
    let mut verbose = Client::new(addr, r#"{"verbose":true}"#);
    verbose.send(b"SUB v 1\r\nPUB v 2\r\nhi\r\nUNSUB 1\r\n");
    assert_eq!(
        verbose.sync(),
        vec![Got::Ok, Got::Ok, msg("v", "1", None, b"hi"), Got::Ok]
    );

    // Errors that keep the connection, then one that closes it.
    verbose.send(b"SUB foo..bar 2\r\n");
    assert_eq!(verbose.sync(), vec![Got::Err("'Invalid Subject'".into())]);
    verbose.send(b"BOGUS\r\n");
    verbose.expect_closed();
    let mut big_pub = Client::new(addr, QUIET);
    big_pub.send(b"PUB foo.x 99999999\r\n");
    big_pub.expect_closed();

    // Connections that go away with unread messages (reset) and subscriptions in place.
    for i in 0..10 {
        let mut c = Client::new(addr, QUIET);
        c.send(format!("SUB churn.{i} 1\r\nSUB foo.> 2\r\n").as_bytes());
        c.sync();
        publ.send(format!("PUB churn.{i} 3\r\nbye\r\n").as_bytes());
        publ.sync();
        drop(c);
    }
    publ.send(b"PUB foo.after 1\r\n!\r\n");
    publ.sync();
    let mut got = sub.sync();
    got.sort_by_key(|g| format!("{g:?}"));
    assert_eq!(
        got,
        vec![
            msg("foo.after", "1", None, b"!"),
            msg("foo.after", "2", None, b"!")
        ]
    );
}

/// Request/reply through a responder, and no-responders.
fn request_reply_traffic(addr: SocketAddr) {
    let mut responder = Client::new(addr, QUIET);
    responder.send(b"SUB svc 1\r\n");
    responder.sync();
    let mut requester = Client::new(addr, QUIET);
    requester.send(b"SUB _INBOX.me.* 1\r\n");
    requester.sync();
    for i in 0..50 {
        let req = format!("q{i}");
        let inbox = format!("_INBOX.me.{i}");
        requester.send(format!("PUB svc {inbox} {}\r\n{req}\r\n", req.len()).as_bytes());
        responder.expect_msg("svc", "1", Some(&inbox), req.as_bytes());
        let rep = format!("answer {i}");
        responder.send(format!("PUB {inbox} {}\r\n{rep}\r\n", rep.len()).as_bytes());
        requester.expect_msg(&inbox, "1", None, rep.as_bytes());
    }
    // Nobody listens on `nobody`: a 503 to the requester's inbox.
    requester.send(b"PUB nobody _INBOX.me.x 2\r\nhi\r\n");
    match requester.next() {
        Got::Msg {
            subject, headers, ..
        } => {
            assert_eq!(subject, "_INBOX.me.x");
            assert_eq!(headers.as_deref(), Some(&b"NATS/1.0 503\r\n\r\n"[..]));
        }
        other => panic!("wanted the 503, got {other:?}"),
    }
}

/// Publishers from several threads at once into one subscriber.
fn concurrent_publishers(addr: SocketAddr) {
    let mut sub = Client::new(addr, QUIET);
    sub.send(b"SUB many.* 1\r\n");
    sub.sync();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                let mut p = Client::new(addr, QUIET);
                let mut batch = Vec::new();
                for i in 0..500 {
                    batch.extend_from_slice(format!("PUB many.{t} 8\r\n{i:08}\r\n").as_bytes());
                }
                p.send(&batch);
                p.sync();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut next = [0usize; 4];
    for _ in 0..2000 {
        match sub.next() {
            Got::Msg {
                subject, payload, ..
            } => {
                let t: usize = subject["many.".len()..].parse().unwrap();
                let i: usize = std::str::from_utf8(&payload).unwrap().parse().unwrap();
                assert_eq!(i, next[t], "publisher {t} out of order");
                next[t] += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(next, [500; 4]);
}

/// A consumer that never reads: the fan-out holds and pauses the publisher, the write
/// deadline cuts the consumer, the publisher and a reading consumer go on.
fn slow_consumer_traffic(addr: SocketAddr) {
    let mut stuck = Client::new(addr, QUIET);
    stuck.send(b"SUB s 1\r\n");
    stuck.sync();
    let mut fast = Client::new(addr, QUIET);
    fast.send(b"SUB s 1\r\n");
    fast.sync();
    let fast_end = fast.s.try_clone().unwrap();
    let reader = thread::spawn(move || {
        let mut n = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match fast.s.read(&mut buf) {
                Ok(0) | Err(_) => return n,
                Ok(k) => n += k,
            }
        }
    });
    let mut p = Client::new(addr, QUIET);
    let mut one = b"PUB s 1024\r\n".to_vec();
    one.extend(std::iter::repeat_n(b'x', 1024));
    one.extend_from_slice(b"\r\n");
    let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
    // 16 MiB: more than the stuck consumer's slab and socket buffers can take.
    for _ in 0..16 {
        p.send(&burst);
    }
    p.sync();
    stuck
        .s
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut v = Vec::new();
    let _ = stuck.s.read_to_end(&mut v);
    drop(p);
    drop(stuck);
    fast_end.shutdown(std::net::Shutdown::Both).unwrap();
    let got = reader.join().unwrap();
    assert!(got > 0, "the reading consumer got nothing");
}

fn check(backend: BackendChoice, ops: HeapOps, stats: &BrokerStats) {
    assert_eq!(
        ops,
        HeapOps {
            allocs: 0,
            frees: 0,
            first_size: 0
        },
        "{backend:?}: the broker's loop thread used the heap after start-up \
         (first allocation: {} bytes); stats {stats:?}",
        ops.first_size
    );
}

#[test]
fn broker_loop_allocates_nothing_after_start_up() {
    for b in backends() {
        let mut cfg = server_config();
        // Short enough that the slow-consumer deadline runs within the test, long enough that
        // the reading consumer's thread is never that late on a loaded machine (300 ms was:
        // it was cut too). Server PINGs keep their default: a 2 s first PING, answered by
        // `Client::next`.
        cfg.write_deadline = Duration::from_secs(2);
        let srv = start_counted(b, cfg);
        pubsub_traffic(srv.addr);
        request_reply_traffic(srv.addr);
        concurrent_publishers(srv.addr);
        slow_consumer_traffic(srv.addr);
        let (ops, stats) = srv.stop();
        // The traffic really ran through this broker.
        assert!(
            stats.in_msgs > 16_000 && stats.out_msgs > 16_000,
            "{stats:?}"
        );
        assert!(stats.slow_consumers >= 1, "{stats:?}");
        assert!(stats.total_connections >= 25, "{stats:?}");
        check(b, ops, &stats);
    }
}

#[test]
fn broker_timers_allocate_nothing() {
    for b in backends() {
        let mut cfg = server_config();
        cfg.ping_interval = Duration::from_millis(100);
        let srv = start_counted(b, cfg);
        // A client that goes silent is PINGed, then cut as stale.
        let mut silent = Client::raw(srv.addr);
        silent.send(b"CONNECT {\"verbose\":false}\r\n");
        let mut lines = Vec::new();
        while let Some(l) = silent.line() {
            lines.push(l);
        }
        let (last, pings) = lines.split_last().expect("some lines");
        assert_eq!(last, "-ERR 'Stale Connection'", "{lines:?}");
        assert!(
            !pings.is_empty() && pings.iter().all(|l| l == "PING"),
            "{lines:?}"
        );
        let (ops, stats) = srv.stop();
        check(b, ops, &stats);
    }
}

#[test]
fn broker_auth_paths_allocate_nothing() {
    for b in backends() {
        let mut cfg = server_config();
        let _ = cfg.token.push_str("s3cret");
        // Each client must send its CONNECT within this, also on a loaded machine.
        cfg.auth_timeout = Duration::from_secs(2);
        let srv = start_counted(b, cfg);
        let mut good = Client::new(srv.addr, r#"{"verbose":false,"auth_token":"s3cret"}"#);
        good.send(b"SUB a 1\r\nPUB a 2\r\nok\r\n");
        good.expect_msg("a", "1", None, b"ok");
        let mut bad = Client::raw(srv.addr);
        bad.send(b"CONNECT {\"verbose\":false,\"auth_token\":\"nope\"}\r\n");
        assert_eq!(bad.next(), Got::Err("'Authorization Violation'".into()));
        bad.expect_closed();
        let mut first_not_connect = Client::raw(srv.addr);
        first_not_connect.send(b"PING\r\n");
        assert_eq!(
            first_not_connect.next(),
            Got::Err("'Authorization Violation'".into())
        );
        first_not_connect.expect_closed();
        let mut late = Client::raw(srv.addr);
        assert_eq!(late.next(), Got::Err("'Authentication Timeout'".into()));
        late.expect_closed();
        drop(good);
        let (ops, stats) = srv.stop();
        assert_eq!(stats.total_connections, 4, "{stats:?}");
        check(b, ops, &stats);
    }
}
