//! `Reactor::scoped`: a reactor over storage on the stack. When the closure returns (or
//! panics) with connections and receives in flight, the kernel must be done with that storage:
//! the frame is then reused and overwritten while peers keep sending, and nothing may scribble
//! on it. Every scenario runs on BOTH backends.

mod reactor_util;

use std::collections::HashMap;
use std::hint::black_box;
use std::io::{ErrorKind, Read, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use reactor_util::*;
use ringlet::pool::{Lease, init_zeroed};
use ringlet::reactor::{
    Backend, BackendChoice, CloseReason, ConnError, ConnId, Context, Handler, ListenerId, Reactor,
    Resources, Stats,
};

/// 8 connections, 64 receive buffers of 2 KiB, 16 KiB write slabs, 4 timers: ~270 KiB.
type Res = Resources<8, 64, 2048, 16384, 4>;
const RES_SIZE: usize = std::mem::size_of::<Res>();
const PATTERN: u8 = 0xA5;

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
    returns_with_io_in_flight_and_the_frame_is_not_written,
    panic_in_the_closure_tears_down_too,
    storage_serves_again_after_a_scoped_run,
);

/// First byte of a connection that only sends: the server drops what it gets (so its receive
/// stays armed while the peer keeps sending).
const SINK: u8 = 0x5A;

/// Echo that keeps what the slab cannot take, pauses the connection, and resumes on
/// `on_flushed`; a connection whose first byte is [`SINK`] is only read. Generic over the
/// reactor's lifetime, as a scoped handler must be.
#[derive(Default)]
struct Echo<'r> {
    stash: HashMap<ConnId, Vec<Lease<'r>>>,
    /// Per connection: `Some(true)` once known to be a sink.
    sink: HashMap<ConnId, bool>,
    accepted: usize,
    /// Connections that had to pause because their slab was full.
    blocked: usize,
}

impl<'r> Echo<'r> {
    fn drain(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId) {
        let Some(q) = self.stash.get_mut(&conn) else {
            return;
        };
        while let Some(lease) = q.first() {
            match cx.write(conn, lease.as_slice()) {
                Ok(()) => {
                    q.remove(0);
                }
                Err(_) => break,
            }
        }
        let _ = cx.flush(conn);
        if q.is_empty() {
            self.stash.remove(&conn);
            let _ = cx.resume(conn);
        }
    }
}

impl<'r> Handler<'r> for Echo<'r> {
    fn on_accept(&mut self, _: &mut Context<'_, 'r>, _: ConnId, _: ListenerId) {
        self.accepted += 1;
    }

    fn on_data(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, lease: Lease<'r>) {
        let first = lease.as_slice()[0];
        if *self.sink.entry(conn).or_insert(first == SINK) {
            return;
        }
        if let Some(q) = self.stash.get_mut(&conn) {
            q.push(lease);
            return;
        }
        match cx.write(conn, lease.as_slice()) {
            Ok(()) => {
                let _ = cx.flush(conn);
            }
            Err(ConnError::WouldBlock) => {
                self.blocked += 1;
                self.stash.entry(conn).or_default().push(lease);
                let _ = cx.pause(conn);
                let _ = cx.flush(conn);
            }
            Err(e) => panic!("write: {e}"),
        }
    }

    fn on_flushed(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId) {
        self.drain(cx, conn);
    }

    fn on_close(&mut self, _: &mut Context<'_, 'r>, conn: ConnId, _: CloseReason) {
        self.stash.remove(&conn);
        self.sink.remove(&conn);
    }
}

/// The peers of one scenario, still running when the closure returns.
struct Peers {
    listener: SocketAddr,
    /// Keeps sending until its connection fails or `stop` is set; counts bytes sent.
    spammer: JoinHandle<(u64, std::io::Error)>,
    spammed: Arc<AtomicU64>,
    /// Wrote a lot without reading: the server's send to it is stuck in flight.
    stuck: TcpStream,
    stuck_sent: JoinHandle<Vec<u8>>,
    stop: Arc<AtomicBool>,
    /// The echo client's connection, idle and open.
    echoed: Option<TcpStream>,
}

/// Start the peers against `addr`: an echo client that checks a few round trips, then a
/// spammer and a stuck writer.
fn start_peers(addr: SocketAddr) -> (Peers, JoinHandle<TcpStream>) {
    let stop = Arc::new(AtomicBool::new(false));
    let echo = thread::spawn(move || {
        let mut c = connect(addr);
        let mut rng = Rng(11);
        for i in 0..20 {
            let n = 1 + rng.below(3000) as usize;
            let mut m = rng.bytes(n);
            if i == 0 {
                m[0] = 1; // not a sink
            }
            send(&mut c, &m);
            assert_eq!(read_n(&mut c, m.len()), m, "echo mismatch");
        }
        // Kept open: a receive stays armed on it.
        c
    });
    let spammed = Arc::new(AtomicU64::new(0));
    let (spammed2, stop2) = (spammed.clone(), stop.clone());
    let mut s = connect(addr);
    let spammer = thread::spawn(move || {
        s.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let chunk = [SINK; 1024];
        loop {
            match s.write(&chunk) {
                Ok(n) => {
                    spammed2.fetch_add(n as u64, Ordering::SeqCst);
                }
                // Not expected (the server keeps reading), but not a failure either.
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
                Err(e) => return (spammed2.load(Ordering::SeqCst), e),
            }
            if stop2.load(Ordering::SeqCst) {
                return (
                    spammed2.load(Ordering::SeqCst),
                    std::io::Error::other("stopped while the connection still took bytes"),
                );
            }
        }
    });
    let stuck = connect(addr);
    // Small buffers, so the server's send to it gets stuck soon.
    rustix::net::sockopt::set_socket_recv_buffer_size(&stuck, 4096).unwrap();
    let mut w = stuck.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let stuck_sent = thread::spawn(move || {
        // Far more than the socket buffers on both sides and the server's slab hold; written
        // until the server is gone.
        let mut data = Rng(5).bytes(16 << 20);
        data[0] = 0; // not a sink
        let mut sent = 0;
        while sent < data.len() {
            match w.write(&data[sent..(sent + 65536).min(data.len())]) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        data[..sent].to_vec()
    });
    (
        Peers {
            listener: addr,
            spammer,
            spammed,
            stuck,
            stuck_sent,
            stop,
            echoed: None,
        },
        echo,
    )
}

/// Serve `peers` until the echo client is done, the spammer has sent for a while and the
/// stuck connection has filled its slab; then return with all of that in flight. Panics at
/// the end instead when `panic` is set.
fn serve_until_busy(r: &mut Reactor<'_>, panic: bool) -> (Peers, Stats, Backend) {
    let l = r.listen("127.0.0.1:0".parse().unwrap()).expect("listen");
    let addr = r.listener_addr(l).unwrap();
    let mut echo = Echo::default();
    let (mut peers, echo_client) = start_peers(addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut echo_client = Some(echo_client);
    // Turns in a row at whose end the stuck connection still held leases.
    let mut stuck_turns = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "scenario did not get busy in 20 s"
        );
        r.turn(&mut echo, Some(Duration::from_millis(5)))
            .expect("turn");
        if echo_client.as_ref().is_some_and(|j| j.is_finished()) {
            peers.echoed = Some(echo_client.take().unwrap().join().expect("echo client"));
        }
        stuck_turns = if echo.stash.is_empty() {
            0
        } else {
            stuck_turns + 1
        };
        if echo_client.is_none()
            && echo.accepted == 3
            && stuck_turns >= 5
            && peers.spammed.load(Ordering::SeqCst) > 64 * 1024
        {
            break;
        }
    }
    assert_eq!(r.connections(), 3, "all three peers are still connected");
    assert!(
        !echo.stash.is_empty(),
        "the stuck connection holds leases at return"
    );
    let (stats, backend) = (r.stats(), r.backend());
    if panic {
        // `echo` (holding leases) and the peers are dropped by the unwinding; the peers'
        // sockets are closed with them, so hand them out first through a side channel.
        PANIC_PEERS.with(|p| *p.borrow_mut() = Some(peers));
        panic!("handler blew up");
    }
    (peers, stats, backend)
}

thread_local! {
    static PANIC_PEERS: std::cell::RefCell<Option<Peers>> = const { std::cell::RefCell::new(None) };
}

/// Run one scoped reactor over storage in this very frame; returns the storage's address
/// range, the peers and what the reactor reported.
#[inline(never)]
fn scoped_run(b: BackendChoice, panic: bool) -> ((usize, usize), Peers, Option<Stats>) {
    let mut slot = MaybeUninit::<Res>::uninit();
    let range = (slot.as_ptr() as usize, slot.as_ptr() as usize + RES_SIZE);
    let res = init_zeroed(&mut slot);
    let cfg = config(b);
    if panic {
        let r = catch_unwind(AssertUnwindSafe(|| {
            Reactor::scoped(res, cfg, |r| serve_until_busy(r, true))
        }));
        assert!(r.is_err(), "the closure panicked");
        let peers = PANIC_PEERS.with(|p| p.borrow_mut().take()).expect("peers");
        (range, peers, None)
    } else {
        let (peers, stats, backend) =
            Reactor::scoped(res, cfg, |r| serve_until_busy(r, false)).expect("scoped");
        let want = match b {
            BackendChoice::Epoll => Backend::Epoll,
            _ => Backend::Uring,
        };
        assert_eq!(backend, want);
        (range, peers, Some(stats))
    }
}

/// Overwrite the stack where the storage was, let the peers go on, and check nothing wrote
/// into it.
#[inline(never)]
fn reuse_frame(range: (usize, usize), peers: &Peers) {
    let mut frame = [PATTERN; RES_SIZE];
    black_box(&mut frame);
    let (lo, hi) = (frame.as_ptr() as usize, frame.as_ptr() as usize + RES_SIZE);
    assert!(
        lo < range.1 && range.0 < hi,
        "this frame reuses the storage's stack memory ({lo:#x}..{hi:#x} vs {:#x}..{:#x})",
        range.0,
        range.1
    );
    // The spammer may still be sending while the kernel tells it the connection is gone.
    let spammed = peers.spammed.load(Ordering::SeqCst);
    thread::sleep(Duration::from_millis(200));
    black_box(&mut frame);
    let bad = frame.iter().filter(|&&b| b != PATTERN).count();
    assert_eq!(
        bad,
        0,
        "{bad} bytes of the reused frame were written (spammer sent {} more bytes)",
        peers.spammed.load(Ordering::SeqCst) - spammed
    );
}

/// After the return every peer sees its connection closed, the stuck one receives only
/// (a prefix of) its own echo, and the listener is gone.
fn check_peers(peers: Peers) {
    let Peers {
        listener,
        spammer,
        spammed: _,
        mut stuck,
        stuck_sent,
        stop,
        echoed,
    } = peers;
    // The idle echo connection: EOF (or a reset).
    let mut echoed = echoed.expect("echo connection");
    let mut b = [0u8; 16];
    match echoed.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("idle echo connection: {other:?}"),
    }
    // The listener was closed: nothing accepts any more (an accept still in flight would keep
    // it listening).
    match TcpStream::connect_timeout(&listener, Duration::from_secs(2)) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("the listener still accepts after the scoped reactor returned"),
    }
    // The stuck peer reads what the server echoed before it went, then EOF or a reset; a
    // receive or send still in flight would keep the socket open and this would time out.
    stuck
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match stuck.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("stuck peer: {e} after {} bytes", got.len()),
        }
    }
    let sent = stuck_sent.join().unwrap();
    assert!(
        !got.is_empty(),
        "the server echoed something before the end"
    );
    assert!(got.len() <= sent.len());
    assert!(
        got == sent[..got.len()],
        "echo is a prefix of what was sent"
    );
    // The spammer's connection fails on its own (reset or broken pipe), not by our stop.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !spammer.is_finished() {
        assert!(
            Instant::now() < deadline,
            "spammer still writing after 10 s"
        );
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    let (bytes, err) = spammer.join().unwrap();
    assert!(bytes > 0);
    assert!(
        matches!(
            err.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
        "spammer ended with {err}"
    );
}

/// The whole scenario on a thread with a big stack (two ~270 KiB frames, debug builds).
fn scenario(b: BackendChoice, panic: bool) -> Option<Stats> {
    thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(move || {
            let (range, peers, stats) = scoped_run(b, panic);
            reuse_frame(range, &peers);
            check_peers(peers);
            stats
        })
        .unwrap()
        .join()
        .expect("scenario")
}

fn returns_with_io_in_flight_and_the_frame_is_not_written(b: BackendChoice) {
    let stats = scenario(b, false).unwrap();
    assert_eq!(stats.accepted, 3);
    assert!(stats.bytes_in > 64 * 1024);
}

fn panic_in_the_closure_tears_down_too(b: BackendChoice) {
    assert!(scenario(b, true).is_none());
}

/// One storage, two scoped runs: the second starts from a clean state and serves normally.
fn storage_serves_again_after_a_scoped_run(b: BackendChoice) {
    thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(move || {
            let mut slot = MaybeUninit::<Res>::uninit();
            let res = init_zeroed(&mut slot);
            for round in 0..2u64 {
                let stats = Reactor::scoped(&mut *res, config(b), |r| {
                    let l = r.listen("127.0.0.1:0".parse().unwrap()).unwrap();
                    let addr = r.listener_addr(l).unwrap();
                    let client = thread::spawn(move || {
                        let mut c = connect(addr);
                        let m = Rng(round + 1).bytes(10_000);
                        send(&mut c, &m);
                        assert_eq!(read_n(&mut c, m.len()), m);
                        c
                    });
                    let mut echo = Echo::default();
                    let deadline = Instant::now() + Duration::from_secs(10);
                    // The send's completion (bytes_out) may come a turn after the client
                    // has read the echo.
                    while !client.is_finished() || r.stats().bytes_out < 10_000 {
                        assert!(Instant::now() < deadline, "echo did not finish");
                        r.turn(&mut echo, Some(Duration::from_millis(5))).unwrap();
                    }
                    // The client socket stays open until the scope has ended.
                    (r.stats(), r.pool().leased(), client.join().unwrap())
                })
                .expect("scoped");
                let (stats, leased, _client) = stats;
                assert_eq!(stats.accepted, 1, "round {round}: counters start from zero");
                assert_eq!(stats.bytes_out, 10_000, "round {round}");
                assert_eq!(leased, 0, "round {round}: every buffer back");
            }
        })
        .unwrap()
        .join()
        .expect("rounds");
}
