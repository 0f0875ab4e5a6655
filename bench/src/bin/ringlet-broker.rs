//! ringlet's NATS broker for the NATS benchmark: the library's `Broker` on a `Reactor`, exactly
//! as `examples/static_broker/` runs it (same receive buffers, write slabs, lease quota, ring
//! window, line buffers and sublist capacities, same loop), with room for more connections
//! (`CONNS`, 1088 instead of 256) so the idle-connections row can open 1000 of them.
//!
//! It takes nats-server's flags for what the runner needs, so the runner starts it the way it
//! starts nats-server: `ringlet-broker -a 127.0.0.1 -p PORT [--backend auto|uring|epoll]`.
//! Like nats-server it logs `Listening for client connections on HOST:PORT` and `Server is
//! ready` to stderr. SIGINT/SIGTERM end it at once with status 0.

use std::net::SocketAddr;
use std::process::ExitCode;

use ringlet::broker::parser::{LineBuf, MAX_CONTROL_LINE};
use ringlet::broker::server::{
    Broker, BrokerMem, Client, ClientSubs, LINE_BUFS, ServerConfig, Session,
};
use ringlet::broker::sublist::{CacheLine, Chunk, Group, Node, SubEntry, SublistMem};
use ringlet::pool::{SlabStorage, ZeroInit};
use ringlet::reactor::{BackendChoice, Config, Reactor, Resources};
use ringlet::sys::mem::map_zeroed;
use ringlet_bench::{exit_on_sigint_sigterm, raise_nofile_limit};

// static_broker's capacities, but for CONNS.
const CONNS: usize = 1088;
const SUBS: usize = 65536;
const NODES: usize = 65536;
const CHUNKS: usize = 131072;
const CACHE: usize = 4096;
const BUF_SIZE: usize = 32 * 1024;
const BUFS: usize = 2048;
const SLAB: usize = 2 * 1024 * 1024;
const LEASE_QUOTA: u16 = 48;

type Res = Resources<CONNS, BUFS, BUF_SIZE, SLAB, { 4 * CONNS }>;

/// Zeroed storage, leaked, from fresh anonymous pages (`ringlet::sys::mem::map_zeroed`):
/// nothing is written at start-up, so a page counts in RSS only once the broker uses it, as in
/// `examples/static_broker/`.
fn leak<T: ZeroInit>() -> &'static mut T {
    map_zeroed().unwrap_or_else(|e| panic!("map {} bytes: {e}", std::mem::size_of::<T>()))
}

fn mem() -> BrokerMem<'static, 'static> {
    BrokerMem {
        sessions: leak::<SlabStorage<Session<'static>, CONNS>>().as_mut_slice(),
        clients: leak::<SlabStorage<Client, CONNS>>().as_mut_slice(),
        keys: leak::<[u64; CONNS]>(),
        lines: leak::<[[u8; MAX_CONTROL_LINE]; CONNS]>(),
        client_subs: leak::<[ClientSubs; CONNS]>(),
        line_bufs: leak::<[LineBuf; LINE_BUFS]>(),
        sublist: SublistMem {
            subs: leak::<SlabStorage<SubEntry<u64>, SUBS>>().as_mut_slice(),
            nodes: leak::<SlabStorage<Node, NODES>>().as_mut_slice(),
            groups: leak::<SlabStorage<Group, SUBS>>().as_mut_slice(),
            chunks: leak::<SlabStorage<Chunk, CHUNKS>>().as_mut_slice(),
            index: leak::<[u64; 2 * NODES]>(),
            cache: leak::<SlabStorage<CacheLine, CACHE>>().as_mut_slice(),
            cache_index: leak::<[u64; CACHE]>(),
        },
        targets: leak::<[u64; SUBS]>(),
    }
}

const USAGE: &str = "usage: ringlet-broker [-a HOST] [-p PORT] [--backend auto|uring|epoll]";

fn main() -> ExitCode {
    exit_on_sigint_sigterm();
    let mut host = "127.0.0.1".to_string();
    let mut port: u16 = 4222;
    let mut backend = BackendChoice::Auto;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match a.as_str() {
            "-a" | "--addr" => host = value(),
            "-p" | "--port" => match value().parse::<i32>() {
                Ok(p) if p < 0 => port = 0,
                Ok(p) if p <= 65535 => port = p as u16,
                _ => {
                    eprintln!("-p: not a port\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--backend" => {
                backend = match value().as_str() {
                    "auto" => BackendChoice::Auto,
                    "uring" => BackendChoice::Uring,
                    "epoll" => BackendChoice::Epoll,
                    other => {
                        eprintln!("--backend: auto, uring or epoll, not {other:?}");
                        return ExitCode::from(2);
                    }
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let _ = raise_nofile_limit();
    let bind: SocketAddr = match format!("{host}:{port}").parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!("bad address {host}:{port}");
            return ExitCode::from(2);
        }
    };
    let mut config = ServerConfig::default();
    if let Err(fits) = config.check_capacity(BUF_SIZE, usize::from(LEASE_QUOTA)) {
        config.max_payload = fits as u32;
    }
    let rconfig = Config {
        backend,
        lease_quota: LEASE_QUOTA,
        // Idle connections reuse a few hot receive buffers instead of touching the pool.
        ring_window: 64,
        ..Config::default()
    };
    let mut reactor = match Reactor::new(leak::<Res>(), rconfig) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the event loop: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match reactor.listen(bind) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("Error listening on port: {bind}, {e}");
            return ExitCode::from(1);
        }
    };
    let bound = reactor.listener_addr(listener).expect("bound address");
    config.host.clear();
    let _ = config.host.push_str(&host);
    config.port = bound.port();
    let _ = config.server_id.push_str("RINGLETBENCH");
    let _ = config.server_name.push_str("ringlet-broker");
    let mut broker = match Broker::new(mem(), config, u64::from(std::process::id())) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("broker: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!("[INF] Backend: {:?}", reactor.backend());
    eprintln!(
        "[INF] Listening for client connections on {}:{}",
        bound.ip(),
        bound.port()
    );
    eprintln!("[INF] Server is ready");
    if let Err(e) = reactor.run(&mut broker) {
        eprintln!("event loop: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
