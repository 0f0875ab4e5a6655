//! Shared helpers for reactor tests: resources without building them on the stack, a server
//! thread that runs a reactor with a handler, and client helpers.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringlet::pool::ZeroInit;
use ringlet::reactor::{Backend, BackendChoice, Config, Handler, Reactor, Stats};

/// Generates two tests, `uring::NAME` and `epoll::NAME`, from each `fn NAME(backend:
/// BackendChoice)` named: every reactor-level scenario runs on both backends.
#[macro_export]
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

/// Closes `s` with SO_LINGER 0: the peer gets a reset instead of an orderly end.
pub fn reset(s: TcpStream) {
    rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).expect("SO_LINGER 0");
}

/// Storage leaked once, from fresh zero pages (never built on the stack, not resident until
/// used).
pub fn leak<T: ZeroInit>() -> &'static mut T {
    ringlet::sys::mem::map_zeroed().expect("map zeroed storage")
}

/// Both backends, for tests that run on each.
pub fn backends() -> [BackendChoice; 2] {
    [BackendChoice::Uring, BackendChoice::Epoll]
}

/// The thread of a test server: the stop flag its loop polls, and its handle. Dropping it
/// asks the loop to stop (so a failed test does not leave a server running).
pub struct ServerThread<R> {
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<R>>,
}

impl<R> ServerThread<R> {
    /// Asks for a graceful stop and waits for the thread's result (bounded: 10 s).
    pub fn stop(&mut self) -> R {
        self.stop.store(true, Ordering::SeqCst);
        let join = self.join.take().expect("stopped once");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !join.is_finished() {
            assert!(Instant::now() < deadline, "server did not stop within 10 s");
            thread::sleep(Duration::from_millis(5));
        }
        join.join().expect("server thread panicked")
    }
}

impl<R> Drop for ServerThread<R> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What a server thread's body drives its loop with: where to report its address, and the
/// stop flag.
pub struct ServerCtl {
    stop: Arc<AtomicBool>,
    addr: mpsc::Sender<SocketAddr>,
}

impl ServerCtl {
    /// Listens on 127.0.0.1:0 and tells the test the address.
    pub fn listen(&self, reactor: &mut Reactor<'_>) {
        let l = reactor
            .listen("127.0.0.1:0".parse().unwrap())
            .expect("listen");
        self.addr.send(reactor.listener_addr(l).unwrap()).unwrap();
    }

    /// Turns `reactor` with `handler` (waiting up to `wait` per turn) until the test stops
    /// it, calling `after_turn` after every turn. A loop that runs 60 s fails the test (it
    /// hung).
    pub fn run<'r, H: Handler<'r>>(
        &self,
        reactor: &mut Reactor<'r>,
        handler: &mut H,
        wait: Duration,
        mut after_turn: impl FnMut(&mut H, &Reactor<'r>),
    ) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !reactor.is_stopped() {
            assert!(Instant::now() < deadline, "server ran for 60 s: test hung");
            if self.stop.load(Ordering::SeqCst) {
                reactor.stop();
            }
            reactor.turn(handler, Some(wait)).expect("turn");
            after_turn(handler, reactor);
        }
    }
}

/// Runs `body` on a new thread as a test server: it builds its reactor, calls
/// [`ServerCtl::listen`] once and then [`ServerCtl::run`]. Returns the address it listens on
/// (waiting up to 10 s for it) and the thread.
pub fn spawn_server<R: Send + 'static>(
    body: impl FnOnce(ServerCtl) -> R + Send + 'static,
) -> (SocketAddr, ServerThread<R>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let ctl = ServerCtl {
        stop: stop.clone(),
        addr: tx,
    };
    let join = thread::spawn(move || body(ctl));
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server started");
    (
        addr,
        ServerThread {
            stop,
            join: Some(join),
        },
    )
}

/// What a server thread reports when it ends: counters, and what the test's `summary` took
/// from its handler (handlers holding leases are not `Send`, so they stay on their thread).
pub struct Report<H> {
    pub stats: Stats,
    pub handler: H,
    pub backend: Backend,
    pub connections_left: usize,
    pub pool_leased: usize,
}

/// A reactor running a handler on its own thread.
pub struct Server<H> {
    pub addr: SocketAddr,
    live: Arc<AtomicUsize>,
    stats: Arc<Mutex<Stats>>,
    thread: ServerThread<Report<H>>,
}

impl<H: Send + 'static> Server<H> {
    /// Open connections as of the server's last turn.
    pub fn connections(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// The loop's counters as of its last turn.
    pub fn stats(&self) -> Stats {
        *self.stats.lock().unwrap()
    }

    /// Wait until the loop's counters (as of a turn) satisfy `done`: for the event a test
    /// needs to have happened, instead of a sleep. Fails after 20 s (a hung test).
    #[track_caller]
    pub fn wait_stats(&self, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.stats();
            if done(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "waited 20 s for {what}: {s:?}");
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Wait (at most 5 s) until the server has `n` open connections.
    pub fn wait_connections(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.connections() != n {
            assert!(
                Instant::now() < deadline,
                "{} connections open, waited for {n}",
                self.connections()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Ask for a graceful stop and wait for the thread (bounded: 10 s).
    pub fn stop(mut self) -> Report<H> {
        self.thread.stop()
    }
}

/// Start a server: `make` builds the reactor (from its own resources) and `handler` the
/// handler, both on the server thread; at the end `summary` turns the handler into what the
/// test checks.
pub fn serve<H, R, M, F, S>(config: Config, make: M, handler: F, summary: S) -> Server<R>
where
    H: Handler<'static>,
    R: Send + 'static,
    M: FnOnce(Config) -> Reactor<'static> + Send + 'static,
    F: FnOnce() -> H + Send + 'static,
    S: FnOnce(H) -> R + Send + 'static,
{
    let live = Arc::new(AtomicUsize::new(0));
    let live2 = live.clone();
    let stats = Arc::new(Mutex::new(Stats::default()));
    let stats2 = stats.clone();
    let (addr, thread) = spawn_server(move |ctl| {
        let mut handler = handler();
        let mut reactor = make(config);
        ctl.listen(&mut reactor);
        ctl.run(
            &mut reactor,
            &mut handler,
            Duration::from_millis(20),
            |_, r| {
                live2.store(r.connections(), Ordering::SeqCst);
                *stats2.lock().unwrap() = r.stats();
            },
        );
        Report {
            stats: reactor.stats(),
            backend: reactor.backend(),
            connections_left: reactor.connections(),
            pool_leased: reactor.pool().leased(),
            handler: summary(handler),
        }
    });
    Server {
        addr,
        live,
        stats,
        thread,
    }
}

/// A config on `backend` with small, test-friendly defaults.
pub fn config(backend: BackendChoice) -> Config {
    Config {
        backend,
        ..Config::default()
    }
}

/// Connect with a read timeout so a hung test fails instead of hanging.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Read exactly `n` bytes.
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Read until EOF.
pub fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read_to_end");
    buf
}

/// Deterministic pseudo-random bytes.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Write all of `data`.
pub fn send(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).expect("write_all");
}
