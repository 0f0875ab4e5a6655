//! A NATS-compatible broker as a standalone binary, with nats-server's flag names.
//!
//! `cargo run --release --example static_broker -- -a 127.0.0.1 -p 4222` (or `make broker`).
//!
//! Flags: `-a/--addr HOST`, `-p/--port PORT` (-1: random), `-n/--name NAME`, `--user USER`,
//! `--pass PASS`, `--auth TOKEN`, `-D` (debug), `-V` (trace), `-DV`, `--max_payload BYTES`,
//! `--max_connections N`, `--ping_interval SECS`, `--ping_max N` (server PINGs; `Stale
//! Connection` past ping_max), `--backend auto|uring|epoll`. Log lines go to stderr, like nats-server's:
//! `Listening for client connections on HOST:PORT` and `Server is ready`. SIGINT/SIGTERM stop
//! it cleanly (connections are flushed and closed).
//!
//! Capacities are compile-time: 256 connections, 65 536 subscriptions; 2048 receive buffers
//! of 32 KiB (64 MiB) and a 2 MiB write slab per connection (a slab is the per-client
//! `max_pending`: a consumer whose slab cannot take a message is closed as slow). The storage
//! is leaked zeroed once at start-up: about 600 MiB of address space, mostly slabs, touched
//! only as connections use them.

use std::mem::MaybeUninit;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringlet::broker::server::{Broker, BrokerMem, BrokerStorage, ServerConfig};
use ringlet::pool::{ZeroInit, init_zeroed};
use ringlet::reactor::{BackendChoice, Config, Reactor, Resources};

const CONNS: usize = 256;
const SUBS: usize = 65536;
const NODES: usize = 65536;
const CHUNKS: usize = 131072;
const CACHE: usize = 4096;
const BUF_SIZE: usize = 32 * 1024;
const BUFS: usize = 2048;
const SLAB: usize = 2 * 1024 * 1024;
const LEASE_QUOTA: u16 = 48;

type Res = Resources<CONNS, BUFS, BUF_SIZE, SLAB, { 4 * CONNS }>;

fn leak<T: ZeroInit>() -> &'static mut T {
    let b: Box<MaybeUninit<T>> = Box::new_zeroed();
    init_zeroed(Box::leak(b))
}

/// The broker's storage, zeroed in place once (never built on the stack).
fn mem() -> BrokerMem<'static, 'static> {
    leak::<BrokerStorage<'static, CONNS, SUBS, NODES, CHUNKS, CACHE>>().mem()
}

struct Args {
    addr: String,
    port: i32,
    backend: BackendChoice,
    debug: bool,
    trace: bool,
    config: ServerConfig,
}

fn usage() -> &'static str {
    "usage: static_broker [-a HOST] [-p PORT|-1] [-n NAME] [--user U --pass P] [--auth TOKEN] \
     [-D] [-V] [-DV] [--max_payload N] [--max_connections N] [--ping_interval SECS] \
     [--ping_max N] [--backend auto|uring|epoll]"
}

fn set(dst: &mut heapless::String<128>, v: &str, flag: &str) -> Result<(), String> {
    dst.clear();
    dst.push_str(v)
        .map_err(|_| format!("{flag}: at most 128 bytes"))
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: "0.0.0.0".into(),
        port: 4222,
        backend: BackendChoice::Auto,
        debug: false,
        trace: false,
        config: ServerConfig::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        // Accept `--flag=value` as well as `--flag value`.
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f.to_string(), Some(v.to_string())),
            _ => (flag, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let num = |v: String| -> Result<i64, String> {
            v.parse::<i64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "-a" | "--addr" | "-addr" | "--net" | "-net" => a.addr = value()?,
            "-p" | "--port" | "-port" => a.port = num(value()?)? as i32,
            "-n" | "--name" | "-name" | "--server_name" => {
                let v = value()?;
                a.config.server_name.clear();
                a.config
                    .server_name
                    .push_str(&v)
                    .map_err(|_| "--name: at most 64 bytes".to_string())?;
            }
            "--user" | "-user" => set(&mut a.config.user, &value()?, "--user")?,
            "--pass" | "-pass" => set(&mut a.config.pass, &value()?, "--pass")?,
            "--auth" | "-auth" => set(&mut a.config.token, &value()?, "--auth")?,
            "-D" | "--debug" => a.debug = true,
            "-V" | "--trace" => a.trace = true,
            "-DV" => {
                a.debug = true;
                a.trace = true;
            }
            "--max_payload" | "-max_payload" => {
                a.config.max_payload = u32::try_from(num(value()?)?)
                    .map_err(|_| "--max_payload: out of range".to_string())?
            }
            "--max_connections" | "-max_connections" => {
                a.config.max_connections = usize::try_from(num(value()?)?)
                    .map_err(|_| "--max_connections: out of range".to_string())?
            }
            "--ping_interval" | "-ping_interval" => {
                a.config.ping_interval = Duration::from_secs(num(value()?)?.max(1) as u64)
            }
            "--ping_max" | "-ping_max" => a.config.ping_max = num(value()?)?.max(1) as u32,
            "--backend" => {
                a.backend = match value()?.as_str() {
                    "auto" => BackendChoice::Auto,
                    "uring" => BackendChoice::Uring,
                    "epoll" => BackendChoice::Epoll,
                    other => return Err(format!("--backend: auto, uring or epoll, not {other}")),
                }
            }
            "-h" | "--help" => return Err(usage().into()),
            other => return Err(format!("unknown flag {other}\n{}", usage())),
        }
    }
    if a.config.user.is_empty() != a.config.pass.is_empty() {
        return Err("--user and --pass go together".into());
    }
    Ok(a)
}

fn log(level: &str, msg: &str) {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "[{}] {}.{:06} [{level}] {msg}",
        std::process::id(),
        t.as_secs(),
        t.subsec_micros()
    );
}

fn server_id() -> heapless::String<64> {
    // nats-server ids are 56 base32 characters; this one is derived from time and pid.
    let mut x = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
        ^ (u64::from(std::process::id()) << 32);
    let mut id = heapless::String::new();
    for _ in 0..56 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let _ = id.push(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[(x % 32) as usize] as char);
    }
    id
}

fn main() -> ExitCode {
    let mut args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if let Err(fits) = args
        .config
        .check_capacity(BUF_SIZE, usize::from(LEASE_QUOTA))
    {
        eprintln!("--max_payload: at most {fits} bytes with this build's receive buffers");
        return ExitCode::from(1);
    }
    if args.config.max_payload as usize + 4200 > SLAB {
        eprintln!("--max_payload: larger than a connection's write slab ({SLAB} bytes)");
        return ExitCode::from(1);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).expect("signal handler");
    }
    let config = Config {
        backend: args.backend,
        lease_quota: LEASE_QUOTA,
        ..Config::default()
    };
    log("INF", "Starting nats-server (ringlet static_broker)");
    log(
        "INF",
        &format!(
            "  Version:  {}",
            ringlet::broker::proto::Info::DEFAULT.version
        ),
    );
    let mut reactor = match Reactor::new(leak::<Res>(), config) {
        Ok(r) => r,
        Err(e) => {
            log("FTL", &format!("cannot start the event loop: {e}"));
            return ExitCode::from(1);
        }
    };
    let port = if args.port < 0 { 0 } else { args.port as u16 };
    let bind = match format!("{}:{port}", args.addr).parse() {
        Ok(a) => a,
        Err(_) => {
            log("FTL", &format!("bad address {}:{port}", args.addr));
            return ExitCode::from(1);
        }
    };
    let listener = match reactor.listen(bind) {
        Ok(l) => l,
        Err(e) => {
            log("FTL", &format!("Error listening on port: {bind}, {e}"));
            return ExitCode::from(1);
        }
    };
    let bound = reactor.listener_addr(listener).expect("bound address");
    args.config.server_id = server_id();
    args.config.host.clear();
    let _ = args.config.host.push_str(&args.addr);
    args.config.port = bound.port();
    if args.config.server_name.is_empty() {
        args.config.server_name = args.config.server_id.clone();
    }
    log("INF", &format!("  ID:       {}", args.config.server_id));
    log("INF", &format!("  Backend:  {:?}", reactor.backend()));
    if args.debug || args.trace {
        log(
            "DBG",
            &format!(
                "max_payload {}, max_connections {}, auth {}",
                args.config.max_payload,
                args.config.max_connections,
                args.config.auth_required()
            ),
        );
    }
    let mut broker = match Broker::new(mem(), args.config, u64::from(std::process::id())) {
        Ok(b) => b,
        Err(e) => {
            log("FTL", &format!("broker: {e}"));
            return ExitCode::from(1);
        }
    };
    log(
        "INF",
        &format!(
            "Listening for client connections on {}:{}",
            bound.ip(),
            bound.port()
        ),
    );
    log("INF", "Server is ready");
    while !reactor.is_stopped() {
        if stop.load(Ordering::Relaxed) {
            log("INF", "Trapped signal; stopping");
            reactor.stop();
            stop.store(false, Ordering::Relaxed);
        }
        if let Err(e) = reactor.turn(&mut broker, Some(Duration::from_millis(100))) {
            log("FTL", &format!("event loop: {e}"));
            return ExitCode::from(1);
        }
    }
    let s = broker.stats();
    log(
        "INF",
        &format!(
            "Server Exiting.. ({} connections, {} msgs in, {} msgs out, {} slow consumers)",
            s.total_connections, s.in_msgs, s.out_msgs, s.slow_consumers
        ),
    );
    ExitCode::SUCCESS
}
