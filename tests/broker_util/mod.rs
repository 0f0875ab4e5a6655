//! A broker on its own thread, over leaked zeroed storage, for the broker tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringlet::broker::server::{Broker, BrokerMem, BrokerStats, BrokerStorage, ServerConfig};
use ringlet::pool::ZeroInit;
use ringlet::reactor::{BackendChoice, Config, Reactor, Resources};

pub const CONNS: usize = 32;
const SUBS: usize = 1024;
const NODES: usize = 1024;
const CHUNKS: usize = 2048;
const CACHE: usize = 256;
pub const BUF_SIZE: usize = 16 * 1024;
pub const LEASE_QUOTA: u16 = 64;

type Res = Resources<CONNS, 512, BUF_SIZE, { 512 * 1024 }, 128>;
/// Small receive buffers and write slabs (for answers larger than a slab, buffer budgets).
type SmallRes = Resources<CONNS, SMALL_BUFS, SMALL_BUF_SIZE, SMALL_SLAB, 128>;
pub const SMALL_BUFS: usize = 128;
pub const SMALL_BUF_SIZE: usize = 4096;
pub const SMALL_SLAB: usize = 64 * 1024;

/// How [`start_opts`] builds the broker.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Also listen for HTTP monitoring ([`Running::http`]).
    pub monitor: bool,
    /// [`SMALL_BUFS`] buffers of [`SMALL_BUF_SIZE`] and [`SMALL_SLAB`]-byte slabs.
    pub small: bool,
    /// The reactor's default lease quota (0: [`LEASE_QUOTA`]).
    pub lease_quota: u16,
    /// Shared line buffers (0: the storage's, `LINE_BUFS`).
    pub line_bufs: usize,
}

pub fn leak<T: ZeroInit>() -> &'static mut T {
    ringlet::sys::mem::map_zeroed().expect("map zeroed storage")
}

pub fn backends() -> [BackendChoice; 2] {
    [BackendChoice::Uring, BackendChoice::Epoll]
}

/// The broker's storage: `CONNS` connection slots, `SUBS` subscriptions, `NODES` trie nodes,
/// `CHUNKS` subject chunks, `CACHE` match-cache lines.
pub type Storage = BrokerStorage<'static, CONNS, SUBS, NODES, CHUNKS, CACHE>;

/// Leaked storage for a broker of `CONNS` connections, zeroed in place (never on the stack).
pub fn mem() -> BrokerMem<'static, 'static> {
    leak::<Storage>().mem()
}

/// Test defaults: 64 KiB max payload (fits the lease budget and the slabs).
pub fn server_config() -> ServerConfig {
    ServerConfig {
        max_payload: 64 * 1024,
        ..ServerConfig::default()
    }
}

pub struct Running {
    pub addr: SocketAddr,
    /// The monitoring port's address, when asked for.
    pub http: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<BrokerStats>>,
}

impl Running {
    pub fn stop(mut self) -> BrokerStats {
        self.stop.store(true, Ordering::SeqCst);
        self.join.take().unwrap().join().expect("broker thread")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub fn start(backend: BackendChoice, cfg: ServerConfig) -> Running {
    start_opts(backend, cfg, Options::default())
}

pub fn start_opts(backend: BackendChoice, cfg: ServerConfig, opts: Options) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let (tx, rx) = mpsc::channel();
    let join = thread::spawn(move || {
        let quota = if opts.lease_quota == 0 {
            LEASE_QUOTA
        } else {
            opts.lease_quota
        };
        let config = Config {
            backend,
            lease_quota: quota,
            ..Config::default()
        };
        let buf_size = if opts.small { SMALL_BUF_SIZE } else { BUF_SIZE };
        cfg.check_capacity(buf_size, usize::from(quota))
            .expect("max_payload fits the lease budget");
        let mut reactor = if opts.small {
            Reactor::new(leak::<SmallRes>(), config).expect("reactor")
        } else {
            Reactor::new(leak::<Res>(), config).expect("reactor")
        };
        let l = reactor
            .listen("127.0.0.1:0".parse().unwrap())
            .expect("listen");
        let addr = reactor.listener_addr(l).unwrap();
        let mut m = mem();
        if opts.line_bufs > 0 {
            let bufs = std::mem::take(&mut m.line_bufs);
            m.line_bufs = &mut bufs[..opts.line_bufs];
        }
        let mut broker = Broker::new(m, cfg, 42).expect("broker");
        broker.set_port(addr.port());
        let http = opts.monitor.then(|| {
            let m = reactor
                .listen("127.0.0.1:0".parse().unwrap())
                .expect("listen (monitoring)");
            let maddr = reactor.listener_addr(m).unwrap();
            broker.set_monitor_listener(m, maddr.port());
            maddr
        });
        tx.send((addr, http)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !reactor.is_stopped() {
            assert!(Instant::now() < deadline, "broker ran for 120 s: test hung");
            if stop2.load(Ordering::SeqCst) {
                reactor.stop();
            }
            reactor
                .turn(&mut broker, Some(Duration::from_millis(20)))
                .expect("turn");
        }
        broker.stats()
    });
    let (addr, http) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("broker started");
    Running {
        addr,
        http,
        stop,
        join: Some(join),
    }
}
