//! A NATS-compatible broker as a standalone binary, with nats-server's flags and config files.
//!
//! `cargo run --release --example static_broker -- -a 127.0.0.1 -p 4222` (or `make broker`);
//! `--help` lists the flags (`cli.rs` has them all: nats-server's `-a -p -n -m -c -t -P -l -D
//! -V -DV -T --user --pass --auth --ports_file_dir`, plus `--backend` and the limits
//! `--max_payload --max_connections --max_pending --ping_interval --ping_max
//! --write_deadline`). `-c FILE` reads nats-server's configuration format (the common subset:
//! see `ringlet::broker::config`); flags override the file.
//!
//! Log lines go to stderr (or the `-l` file) in nats-server's format, including the lines
//! client test harnesses wait for: `Listening for client connections on HOST:PORT` and
//! `Server is ready`. `-P` writes the process id (left in place at exit, as nats-server does);
//! `--ports_file_dir DIR` writes `DIR/<exe>_<pid>.ports` with the client URLs, as nats-server
//! does (removed at a clean exit; for `0.0.0.0` it lists this machine's IPv4 addresses, while
//! nats-server lists its IPv6 ones too, which a v4 listener does not serve). SIGINT/SIGTERM
//! stop it cleanly (connections are flushed and closed).
//!
//! Capacities are compile-time: 256 connections, 65 536 subscriptions; 2048 receive buffers
//! of 32 KiB (64 MiB) and a 2 MiB write slab per connection (the slab caps `max_pending`,
//! 64 MiB by default: a consumer never has more than the lower of the two staged; see the
//! broker's "Slow consumers" docs).
//! The storage is mapped zeroed once at start-up (`ringlet::sys::mem::map_zeroed`): about
//! 600 MiB of address space, mostly slabs, resident only as connections use them. A connection
//! that only sent CONNECT and PING makes about 8 KiB resident (its session and client record,
//! the first page of its write slab); subscribing, publishing and control lines split across
//! receives (64 shared line buffers, see `BrokerMem::line_bufs`) touch more, as used. With
//! io_uring, receives reuse a window of 64 hot receive buffers (`Config::ring_window`, doubled
//! when a stream needs more per loop turn, or when more connections than that keep receiving
//! in the same turns) instead of cycling through all 2048.
//!
//! `-m PORT` (or `http`/`http_port` in the file) serves HTTP monitoring (`/healthz`, `/varz`,
//! `/connz`, `/subsz`) on the same loop, on the client host unless `http: host:port` says
//! otherwise; the ports file then lists it under `monitoring`.

mod cli;

use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cli::Command;
use ringlet::broker::server::{Broker, BrokerMem, BrokerStorage};
use ringlet::pool::ZeroInit;
use ringlet::reactor::{Config, Reactor, Resources};
use ringlet::sys::mem::map_zeroed;

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

/// Zeroed storage from fresh anonymous pages, never freed: nothing is written, so a page
/// becomes resident only when the broker uses it (see `ringlet::sys::mem`).
fn leak<T: ZeroInit>() -> &'static mut T {
    match map_zeroed() {
        Ok(storage) => storage,
        Err(e) => {
            eprintln!("cannot map {} bytes of storage: {e}", size_of::<T>());
            std::process::exit(1);
        }
    }
}

/// The broker's storage.
fn mem() -> BrokerMem<'static, 'static> {
    leak::<BrokerStorage<'static, CONNS, SUBS, NODES, CHUNKS, CACHE>>().mem()
}

/// Log lines in nats-server's format: `[pid] 2006/01/02 15:04:05.000000 [INF] text` (UTC).
struct Log {
    file: Option<File>,
    time: bool,
    debug: bool,
}

impl Log {
    fn line(&mut self, level: &str, msg: &str) {
        let pid = std::process::id();
        let text = if self.time {
            format!("[{pid}] {} [{level}] {msg}\n", timestamp(SystemTime::now()))
        } else {
            format!("[{pid}] [{level}] {msg}\n")
        };
        match &mut self.file {
            Some(f) => {
                let _ = f.write_all(text.as_bytes());
            }
            None => eprint!("{text}"),
        }
    }

    fn inf(&mut self, msg: &str) {
        self.line("INF", msg);
    }

    fn wrn(&mut self, msg: &str) {
        self.line("WRN", msg);
    }

    fn ftl(&mut self, msg: &str) {
        self.line("FTL", msg);
    }

    fn dbg(&mut self, msg: &str) {
        if self.debug {
            self.line("DBG", msg);
        }
    }
}

/// `2006/01/02 15:04:05.000000` in UTC.
fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}/{month:02}/{day:02} {:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
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

/// The addresses a listener on `addr` is reachable at: itself, or for an unspecified address
/// every local address of its family (from /proc, loopback first), as nats-server lists them.
fn reachable(addr: SocketAddr) -> Vec<SocketAddr> {
    if !addr.ip().is_unspecified() {
        return vec![addr];
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    if addr.is_ipv4() {
        // /proc/net/fib_trie: each local address is a `|-- a.b.c.d` line followed by
        // `/32 host LOCAL`.
        if let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") {
            let mut last: Option<Ipv4Addr> = None;
            for line in text.lines() {
                let line = line.trim();
                if let Some(ip) = line.strip_prefix("|-- ") {
                    last = ip.parse().ok();
                } else if line.starts_with("/32 host LOCAL")
                    && let Some(ip) = last
                    && !ips.contains(&IpAddr::V4(ip))
                {
                    ips.push(IpAddr::V4(ip));
                }
            }
        }
    } else if let Ok(text) = std::fs::read_to_string("/proc/net/if_inet6") {
        // /proc/net/if_inet6: 32 hex digits per address, then index, prefix, scope, flags, name.
        for line in text.lines() {
            let hex = line.split_whitespace().next().unwrap_or("");
            if let Ok(v) = u128::from_str_radix(hex, 16)
                && hex.len() == 32
            {
                ips.push(IpAddr::V6(Ipv6Addr::from(v)));
            }
        }
    }
    if ips.is_empty() {
        ips.push(if addr.is_ipv4() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        });
    }
    ips.sort_by_key(|ip| (!ip.is_loopback(), *ip));
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, addr.port()))
        .collect()
}

/// `host` as Go's `net.JoinHostPort` writes it before `:port`: an IPv6 address in brackets.
fn join_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Resolves `host` (an address or a name such as `localhost`) with `port` (-1: random).
fn bind_addr(host: &str, port: i32) -> Result<SocketAddr, String> {
    let port = if port < 0 { 0 } else { port as u16 };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

/// The ports file's path: `DIR/<exe>_<pid>.ports`, `<exe>` the base name of argv\[0\].
fn ports_file_path(dir: &Path) -> PathBuf {
    let exe = std::env::args()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "static_broker".into());
    dir.join(format!("{exe}_{}.ports", std::process::id()))
}

fn main() -> ExitCode {
    let cmd = cli::parse(std::env::args().skip(1), |p| std::fs::read(p));
    let mut o = match cmd {
        Ok(Command::Run(o)) => o,
        Ok(Command::Help) => {
            println!("{}", cli::usage());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!(
                "static_broker (ringlet {}): nats-server v{} protocol",
                env!("CARGO_PKG_VERSION"),
                ringlet::broker::proto::Info::DEFAULT.version
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("static_broker: {e}");
            return ExitCode::from(1);
        }
    };
    // What this build can hold: checked before anything starts, also for -t.
    if let Err(fits) = o.server.check_capacity(BUF_SIZE, usize::from(LEASE_QUOTA)) {
        eprintln!(
            "static_broker: max_payload {} too large: at most {fits} bytes with this build's receive buffers",
            o.server.max_payload
        );
        return ExitCode::from(1);
    }
    if o.server.max_payload as usize + 4200 > SLAB {
        eprintln!(
            "static_broker: max_payload {} larger than a connection's write slab ({SLAB} bytes)",
            o.server.max_payload
        );
        return ExitCode::from(1);
    }
    if o.test_config {
        match &o.config_file {
            Some(p) => println!("static_broker: configuration file {} is valid", p.display()),
            None => println!("static_broker: configuration is valid"),
        }
        return ExitCode::SUCCESS;
    }
    let file = match &o.log_file {
        None => None,
        Some(p) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("static_broker: cannot open log file {}: {e}", p.display());
                return ExitCode::from(1);
            }
        },
    };
    let mut log = Log {
        file,
        time: o.logtime,
        debug: o.debug,
    };
    for w in &o.config_warnings {
        log.wrn(w);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGINT, &interrupted),
        (signal_hook::consts::SIGTERM, &stop),
    ] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(flag)) {
            log.ftl(&format!("cannot install signal handlers: {e}"));
            return ExitCode::from(1);
        }
    }
    let config = Config {
        backend: o.backend,
        lease_quota: LEASE_QUOTA,
        // Idle connections reuse a few hot receive buffers instead of touching the pool.
        ring_window: 64,
        ..Config::default()
    };
    o.server.server_id = server_id();
    if o.server.server_name.is_empty() {
        o.server.server_name = o.server.server_id.clone();
    }
    log.inf("Starting nats-server (ringlet static_broker)");
    log.inf(&format!(
        "  Version:  {}",
        ringlet::broker::proto::Info::DEFAULT.version
    ));
    log.inf(&format!("  Name:     {}", o.server.server_name));
    log.inf(&format!("  ID:       {}", o.server.server_id));
    if let Some(p) = &o.config_file {
        log.inf(&format!("Using configuration file: {}", p.display()));
    }
    if let Some(p) = &o.pid_file
        && let Err(e) = std::fs::write(p, std::process::id().to_string())
    {
        log.ftl(&format!("Could not write pidfile: {e}"));
        return ExitCode::from(1);
    }
    let mut reactor = match Reactor::new(leak::<Res>(), config) {
        Ok(r) => r,
        Err(e) => {
            log.ftl(&format!("cannot start the event loop: {e}"));
            return ExitCode::from(1);
        }
    };
    log.inf(&format!("  Backend:  {:?}", reactor.backend()));
    let bind = match bind_addr(&o.host, o.port) {
        Ok(a) => a,
        Err(e) => {
            log.ftl(&format!(
                "Error listening on port: {}:{}, {e}",
                o.host, o.port
            ));
            return ExitCode::from(1);
        }
    };
    let listener = match reactor.listen(bind) {
        Ok(l) => l,
        Err(e) => {
            log.ftl(&format!("Error listening on port: {bind}, {e}"));
            return ExitCode::from(1);
        }
    };
    let Some(bound) = reactor.listener_addr(listener) else {
        log.ftl("the listener has no address");
        return ExitCode::from(1);
    };
    o.server.host.clear();
    let _ = o.server.host.push_str(&o.host);
    o.server.port = bound.port();
    log.dbg(&format!(
        "max_payload {}, max_connections {}, max_pending {}, ping_interval {:?}, ping_max {}, write_deadline {:?}, auth {}",
        o.server.max_payload,
        o.server.max_connections,
        o.server.max_pending,
        o.server.ping_interval,
        o.server.ping_max,
        o.server.write_deadline,
        o.server.auth_required()
    ));
    let mut broker = match Broker::new(mem(), o.server.clone(), u64::from(std::process::id())) {
        Ok(b) => b,
        Err(e) => {
            log.ftl(&format!("broker: {e}"));
            return ExitCode::from(1);
        }
    };
    // Monitoring on the same loop: a second listener (`-m`, `http`, `http_port`).
    let mut monitoring = Vec::new();
    if let Some(port) = o.http_port {
        let host = o.http_host.as_deref().unwrap_or(&o.host);
        let hbind = match bind_addr(host, port) {
            Ok(a) => a,
            Err(e) => {
                log.ftl(&format!(
                    "Can't listen to the monitor port: {host}:{port}, {e}"
                ));
                return ExitCode::from(1);
            }
        };
        let bound_monitor = reactor
            .listen(hbind)
            .map_err(|e| e.to_string())
            .and_then(|m| {
                let a = reactor
                    .listener_addr(m)
                    .ok_or_else(|| "no address".to_string())?;
                Ok((m, a))
            });
        match bound_monitor {
            Ok((m, a)) => {
                log.inf(&format!(
                    "Starting http monitor on {}:{}",
                    join_host(host),
                    a.port()
                ));
                broker.set_monitor_listener(m, a.port());
                monitoring = reachable(a);
            }
            Err(e) => {
                log.ftl(&format!("Can't listen to the monitor port: {hbind}, {e}"));
                return ExitCode::from(1);
            }
        }
    }
    log.inf(&format!(
        "Listening for client connections on {}:{}",
        join_host(&o.host),
        bound.port()
    ));
    let ports_file = o.ports_file_dir.as_deref().map(ports_file_path);
    if let Some(path) = &ports_file
        && let Err(e) = std::fs::write(path, cli::ports_json(&reachable(bound), &monitoring))
    {
        log.ftl(&format!("Error writing ports file {}: {e}", path.display()));
        return ExitCode::from(1);
    }
    log.inf("Server is ready");
    let mut status = ExitCode::SUCCESS;
    while !reactor.is_stopped() {
        for (flag, name) in [(&interrupted, "interrupt"), (&stop, "terminated")] {
            if flag.swap(false, Ordering::Relaxed) {
                log.dbg(&format!("Trapped \"{name}\" signal"));
                log.inf("Initiating Shutdown...");
                reactor.stop();
            }
        }
        if let Err(e) = reactor.turn(&mut broker, Some(Duration::from_millis(100))) {
            log.ftl(&format!("event loop: {e}"));
            status = ExitCode::from(1);
            break;
        }
    }
    if let Some(path) = &ports_file {
        let _ = std::fs::remove_file(path);
    }
    let s = broker.stats();
    log.inf(&format!(
        "{} connections, {} msgs in, {} msgs out, {} slow consumers",
        s.total_connections, s.in_msgs, s.out_msgs, s.slow_consumers
    ));
    log.inf("Server Exiting..");
    status
}
