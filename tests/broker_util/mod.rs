//! A broker on its own thread, over leaked zeroed storage, for the broker tests.

#![allow(dead_code)]

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringlet::broker::server::{Broker, BrokerMem, BrokerStats, BrokerStorage, ServerConfig};
use ringlet::pool::{ZeroInit, init_zeroed};
use ringlet::reactor::{BackendChoice, Config, Reactor, Resources};

pub const CONNS: usize = 32;
const SUBS: usize = 1024;
const NODES: usize = 1024;
const CHUNKS: usize = 2048;
const CACHE: usize = 256;
pub const BUF_SIZE: usize = 16 * 1024;
pub const LEASE_QUOTA: u16 = 64;

type Res = Resources<CONNS, 512, BUF_SIZE, { 512 * 1024 }, 128>;

pub fn leak<T: ZeroInit>() -> &'static mut T {
    let b: Box<MaybeUninit<T>> = Box::new_zeroed();
    init_zeroed(Box::leak(b))
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
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("broker started");
    Running {
        addr,
        stop,
        join: Some(join),
    }
}
