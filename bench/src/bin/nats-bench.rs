//! The NATS benchmark runner (`make bench-nats`, and part of `make bench`): ringlet's broker on
//! both backends side by side with the real nats-server, over a fixed set of scenarios, in
//! interleaved runs, with the same pinning as the echo benchmark (server on CPU 0, load
//! generator and runner on CPU 1).
//!
//! Per run: the server starts pinned to the server CPU, the runner waits for its `Server is
//! ready` log line and checks one CONNECT/PING/PONG, reads its RSS, then starts `nats-loadgen
//! --control` pinned to the client CPU. After a warm-up the runner marks a measured window:
//! delivered messages per second and request latency percentiles from the load generator, busy
//! time of the server CPU from /proc/stat (softirq included), the server process's and the
//! load generator's own CPU time from schedstat, and the server's RSS at the end. The idle row
//! opens the connections, lets them settle and reads the RSS. Medians and min-max over the runs
//! are printed as a table with ringlet / nats-server ratios. See `bench/README.md`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ringlet_bench::runner::{
    CpuTimes, Fail, Proc, Stat, cell, free_port, host_line, install_signal_handlers, loadavg, num,
    proc_stat, process_cpu_ns, stat, stopping,
};
use ringlet_bench::{allowed_cpus, pin_to_cpu, raise_nofile_limit, sleep_unless};

const USAGE: &str = "\
usage: nats-bench [--quick] [--secs S] [--runs N] [--warmup S] [--servers LIST] [--rows LIST]
                  [--broker PATH] [--nats-server PATH] [--idle-conns N]
                  [--server-cpu N] [--client-cpu N]

  --quick            smoke mode: 1 run, 0.5 s measured, 0.2 s warm-up
  --secs S           measured seconds per run           (env BENCH_SECS, default 2)
  --runs N           interleaved runs per row and server (env BENCH_RUNS, default 5)
  --warmup S         warm-up seconds per run            (env BENCH_WARMUP_SECS, default 0.5)
  --servers LIST     comma list of ringlet-uring,ringlet-epoll,nats-server
                                                        (env BENCH_NATS_SERVERS)
  --rows LIST        comma list of 1p1s-16b,1p1s-1k,1p10s-16b,4p4s-128b,req-1,req-16,idle
                                                        (env BENCH_NATS_ROWS)
  --broker PATH      ringlet's broker: any binary taking `-a HOST -p PORT --backend B` and
                     logging `Server is ready` (env RINGLET_BROKER,
                     default: <dir of this binary>/ringlet-broker)
  --nats-server PATH the reference server            (env NATS_SERVER, default
                     /usr/sbin/nats-server, else nats-server on PATH)
  --idle-conns N     connections of the idle row       (env BENCH_IDLE_CONNS, default 1000)
  --server-cpu N     CPU the server is pinned to       (env BENCH_SERVER_CPU, default 0)
  --client-cpu N     CPU of the load generator, runner (env BENCH_CLIENT_CPU, default 1)";

// ---------------------------------------------------------------- scenarios and servers

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    PubSub { pubs: usize, subs: usize },
    ReqRep { requesters: usize },
    Idle,
}

#[derive(Clone, Copy)]
struct Row {
    key: &'static str,
    title: &'static str,
    kind: Kind,
    size: usize,
}

const ROWS: [Row; 7] = [
    Row {
        key: "1p1s-16b",
        title: "1 publisher -> 1 subscriber, 16 B",
        kind: Kind::PubSub { pubs: 1, subs: 1 },
        size: 16,
    },
    Row {
        key: "1p1s-1k",
        title: "1 publisher -> 1 subscriber, 1 KiB",
        kind: Kind::PubSub { pubs: 1, subs: 1 },
        size: 1024,
    },
    Row {
        key: "1p10s-16b",
        title: "1 publisher -> 10 subscribers, 16 B",
        kind: Kind::PubSub { pubs: 1, subs: 10 },
        size: 16,
    },
    Row {
        key: "4p4s-128b",
        title: "4 publishers x 4 subscribers (one subject), 128 B",
        kind: Kind::PubSub { pubs: 4, subs: 4 },
        size: 128,
    },
    Row {
        key: "req-1",
        title: "request/reply, 1 requester, 16 B (2 delivered msgs per request)",
        kind: Kind::ReqRep { requesters: 1 },
        size: 16,
    },
    Row {
        key: "req-16",
        title: "request/reply, 16 requesters, 16 B (2 delivered msgs per request)",
        kind: Kind::ReqRep { requesters: 16 },
        size: 16,
    },
    Row {
        key: "idle",
        title: "idle connections (CONNECT, PING/PONG, then nothing): memory",
        kind: Kind::Idle,
        size: 0,
    },
];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Server {
    RingletUring,
    RingletEpoll,
    Nats,
}

const SERVERS: [Server; 3] = [Server::RingletUring, Server::RingletEpoll, Server::Nats];

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::RingletUring => "ringlet-uring",
            Server::RingletEpoll => "ringlet-epoll",
            Server::Nats => "nats-server",
        }
    }

    fn command(self, cfg: &Config, port: u16) -> Command {
        let mut cmd = match self {
            Server::RingletUring | Server::RingletEpoll => Command::new(&cfg.broker),
            Server::Nats => Command::new(&cfg.nats_server),
        };
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        match self {
            Server::RingletUring => {
                cmd.args(["--backend", "uring"]);
            }
            Server::RingletEpoll => {
                cmd.args(["--backend", "epoll"]);
            }
            Server::Nats => {}
        }
        cmd
    }
}

// ---------------------------------------------------------------- configuration

struct Config {
    secs: f64,
    warmup: f64,
    runs: usize,
    servers: Vec<Server>,
    rows: Vec<Row>,
    broker: PathBuf,
    nats_server: PathBuf,
    bin_dir: PathBuf,
    idle_conns: usize,
    server_cpu: usize,
    client_cpu: usize,
}

fn usage_exit(msg: &str) -> ! {
    eprintln!("nats-bench: {msg}\n{USAGE}");
    std::process::exit(2)
}

fn parse_num<T: std::str::FromStr>(what: &str, v: &str) -> T {
    v.trim()
        .parse()
        .unwrap_or_else(|_| usage_exit(&format!("bad value for {what}: {v:?}")))
}

fn parse_list<T: Copy>(what: &str, v: &str, all: &[T], key: impl Fn(&T) -> &str) -> Vec<T> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            *all.iter().find(|x| key(x) == s).unwrap_or_else(|| {
                let names: Vec<&str> = all.iter().map(&key).collect();
                usage_exit(&format!(
                    "unknown {what} {s:?} (one of {})",
                    names.join(", ")
                ))
            })
        })
        .collect()
}

/// nats-server: /usr/sbin/nats-server (Debian), else the first on PATH, else the Debian path
/// (reported missing).
fn default_nats_server() -> PathBuf {
    let debian = PathBuf::from("/usr/sbin/nats-server");
    if debian.is_file() {
        return debian;
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nats-server"))
                .find(|f| f.is_file())
        })
        .unwrap_or(debian)
}

fn parse_config() -> Config {
    let exe = std::env::current_exe().unwrap_or_else(|e| usage_exit(&format!("current_exe: {e}")));
    let bin_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut cfg = Config {
        secs: if quick { 0.5 } else { 2.0 },
        warmup: if quick { 0.2 } else { 0.5 },
        runs: if quick { 1 } else { 5 },
        servers: SERVERS.to_vec(),
        rows: ROWS.to_vec(),
        broker: bin_dir.join("ringlet-broker"),
        nats_server: default_nats_server(),
        bin_dir,
        idle_conns: 1000,
        server_cpu: 0,
        client_cpu: 1,
    };
    let mut settings: Vec<(String, String)> = Vec::new();
    for (env, flag) in [
        ("BENCH_SECS", "--secs"),
        ("BENCH_RUNS", "--runs"),
        ("BENCH_WARMUP_SECS", "--warmup"),
        ("BENCH_NATS_SERVERS", "--servers"),
        ("BENCH_NATS_ROWS", "--rows"),
        ("RINGLET_BROKER", "--broker"),
        ("NATS_SERVER", "--nats-server"),
        ("BENCH_IDLE_CONNS", "--idle-conns"),
        ("BENCH_SERVER_CPU", "--server-cpu"),
        ("BENCH_CLIENT_CPU", "--client-cpu"),
    ] {
        if let Ok(v) = std::env::var(env)
            && !v.trim().is_empty()
        {
            settings.push((flag.to_string(), v));
        }
    }
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            f if f.starts_with("--") => {
                let v = it
                    .next()
                    .unwrap_or_else(|| usage_exit(&format!("{f} needs a value")));
                settings.push((a, v));
            }
            other => usage_exit(&format!("unknown argument {other:?}")),
        }
    }
    for (flag, v) in settings {
        match flag.as_str() {
            "--secs" => cfg.secs = parse_num(&flag, &v),
            "--runs" => cfg.runs = parse_num(&flag, &v),
            "--warmup" => cfg.warmup = parse_num(&flag, &v),
            "--servers" => cfg.servers = parse_list("server", &v, &SERVERS, |s| s.name()),
            "--rows" => cfg.rows = parse_list("row", &v, &ROWS, |r| r.key),
            "--broker" => cfg.broker = PathBuf::from(v),
            "--nats-server" => cfg.nats_server = PathBuf::from(v),
            "--idle-conns" => cfg.idle_conns = parse_num(&flag, &v),
            "--server-cpu" => cfg.server_cpu = parse_num(&flag, &v),
            "--client-cpu" => cfg.client_cpu = parse_num(&flag, &v),
            _ => usage_exit(&format!("unknown option {flag}")),
        }
    }
    if cfg.runs == 0 || cfg.secs <= 0.0 || cfg.warmup < 0.0 || cfg.idle_conns == 0 {
        usage_exit("--runs, --secs and --idle-conns must be positive, --warmup not negative");
    }
    if cfg.servers.is_empty() || cfg.rows.is_empty() {
        usage_exit("no server or no row selected");
    }
    cfg
}

// ---------------------------------------------------------------- measurements

/// Resident set size of `pid` in KiB (VmRSS).
fn rss_kib(pid: u32) -> Option<f64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

struct Snapshot {
    cpu: [CpuTimes; 2],
    server: Option<(u64, u64)>,
    loadgen: Option<(u64, u64)>,
}

fn snapshot(cfg: &Config, server: u32, loadgen: u32) -> Result<Snapshot, Fail> {
    let cpu = proc_stat([cfg.server_cpu, cfg.client_cpu])
        .map_err(|e| Fail::Run(format!("reading /proc/stat: {e}")))?;
    Ok(Snapshot {
        cpu,
        server: process_cpu_ns(server),
        loadgen: process_cpu_ns(loadgen),
    })
}

/// One `mark` answer of nats-loadgen.
#[derive(Default)]
struct Mark {
    msgs: u64,
    reqs: u64,
    ns: u64,
    p50: u64,
    p90: u64,
    p99: u64,
}

fn parse_mark(line: &str) -> Option<Mark> {
    let rest = line.strip_prefix("mark ")?;
    let mut m = Mark::default();
    for kv in rest.split_ascii_whitespace() {
        let (k, v) = kv.split_once('=')?;
        let v: u64 = v.parse().ok()?;
        match k {
            "msgs" => m.msgs = v,
            "reqs" => m.reqs = v,
            "ns" => m.ns = v,
            "p50" => m.p50 = v,
            "p90" => m.p90 = v,
            "p99" => m.p99 = v,
            _ => {}
        }
    }
    Some(m)
}

fn mark(lg: &mut Proc) -> Result<Mark, Fail> {
    lg.send_line("mark")?;
    let line = lg.next_line(Duration::from_secs(10))?;
    parse_mark(&line).ok_or_else(|| {
        Fail::Run(format!(
            "nats-loadgen answered {line:?} to mark{}",
            lg.stderr()
        ))
    })
}

/// Results of one run. Per-message figures are per delivered message.
#[derive(Clone, Copy, Default)]
struct Metrics {
    msgs_per_s: Option<f64>,
    p50_us: Option<f64>,
    p90_us: Option<f64>,
    p99_us: Option<f64>,
    /// Busy time of the server CPU per delivered message, ns.
    core_ns: Option<f64>,
    /// CPU time of the server process per delivered message, ns.
    proc_ns: Option<f64>,
    /// CPU time of the load generator over the window, share of one CPU.
    loadgen_cpu: Option<f64>,
    rss_mib: Option<f64>,
    /// Idle row: RSS before the connections, and per connection.
    base_mib: Option<f64>,
    per_conn_kib: Option<f64>,
    server_busy: f64,
    client_busy: f64,
    server_wait: Option<f64>,
}

// ---------------------------------------------------------------- one run

/// INFO, CONNECT, PING, PONG through a fresh connection: proves the server speaks NATS.
fn probe(addr: SocketAddr) -> io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut sent = false;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "closed after {:?}",
                String::from_utf8_lossy(&got)
            )));
        }
        got.extend_from_slice(&buf[..n]);
        if !sent && got.starts_with(b"INFO ") && got.ends_with(b"\r\n") {
            s.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n")?;
            sent = true;
            got.clear();
        } else if sent && got.windows(6).any(|w| w == b"PONG\r\n") {
            return Ok(());
        } else if got.len() > 64 * 1024 {
            return Err(io::Error::other("no PONG"));
        }
    }
}

fn loadgen_args(cfg: &Config, row: &Row) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    match row.kind {
        Kind::PubSub { pubs, subs } => {
            a.extend(["--mode", "pubsub", "--pubs"].map(String::from));
            a.push(pubs.to_string());
            a.push("--subs".into());
            a.push(subs.to_string());
        }
        Kind::ReqRep { requesters } => {
            a.extend(["--mode", "reqrep", "--requesters"].map(String::from));
            a.push(requesters.to_string());
        }
        Kind::Idle => {
            a.extend(["--mode", "idle", "--conns"].map(String::from));
            a.push(cfg.idle_conns.to_string());
        }
    }
    if row.size > 0 {
        a.push("--size".into());
        a.push(row.size.to_string());
    }
    a
}

fn run_one(cfg: &Config, server: Server, row: &Row) -> Result<Metrics, Fail> {
    let port = free_port().map_err(|e| Fail::Start(format!("no free port: {e}")))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let cmd = server.command(cfg, port);
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let mut srv = Proc::spawn_with(server.name(), cmd, cfg.server_cpu, false, true)
        .map_err(|e| Fail::Start(format!("cannot start {prog}: {e}")))?;
    let ready_by = Instant::now() + Duration::from_secs(15);
    loop {
        let left = ready_by.saturating_duration_since(Instant::now());
        let line = srv.next_line(left).map_err(|e| match e {
            Fail::Run(m) => Fail::Start(format!("no `Server is ready` line: {m}")),
            other => other,
        })?;
        if line.contains("Server is ready") {
            break;
        }
    }
    probe(addr).map_err(|e| Fail::Start(format!("probe of {addr} failed: {e}{}", srv.stderr())))?;
    // Let the probe's connection go away before the base RSS is read.
    sleep_unless(Duration::from_millis(100), stopping);
    let base_rss = rss_kib(srv.pid());

    let lg_path = cfg.bin_dir.join("nats-loadgen");
    let mut cmd = Command::new(&lg_path);
    let max = cfg.warmup + cfg.secs + 60.0;
    cmd.args(["--addr", &addr.to_string()])
        .args(loadgen_args(cfg, row))
        .args(["--control", "--stall-secs", "10"])
        .args(["--max-secs", &format!("{max:.1}")]);
    let mut lg = Proc::spawn("nats-loadgen", cmd, cfg.client_cpu, true)
        .map_err(|e| Fail::Run(format!("cannot start {}: {e}", lg_path.display())))?;
    let line = lg.next_line(Duration::from_secs(60))?;
    if line.trim() != "ready" {
        return Err(Fail::Run(format!(
            "nats-loadgen said {line:?} instead of ready{}",
            lg.stderr()
        )));
    }
    if !sleep_unless(Duration::from_secs_f64(cfg.warmup), stopping) {
        return Err(Fail::Interrupted);
    }
    mark(&mut lg)?;
    let s0 = snapshot(cfg, srv.pid(), lg.pid())?;
    if !sleep_unless(Duration::from_secs_f64(cfg.secs), stopping) {
        return Err(Fail::Interrupted);
    }
    let m = mark(&mut lg)?;
    let s1 = snapshot(cfg, srv.pid(), lg.pid())?;
    let rss = rss_kib(srv.pid());
    if row.kind != Kind::Idle && m.msgs == 0 {
        return Err(Fail::Run(format!(
            "no message delivered in the window{}",
            lg.stderr()
        )));
    }
    let (st, by_itself) = lg.stop(0, Duration::from_secs(5));
    if !by_itself || !st.is_some_and(|s| s.success()) {
        let st = st.map_or("killed".to_string(), |s| s.to_string());
        return Err(Fail::Run(format!(
            "nats-loadgen did not exit cleanly ({st}){}",
            lg.stderr()
        )));
    }
    if let Some(st) = srv.exited() {
        return Err(Fail::Run(format!(
            "the server exited during the run ({st}){}",
            srv.stderr()
        )));
    }
    srv.stop(libc::SIGTERM, Duration::from_secs(3));

    // SAFETY: sysconf is always safe to call.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let d = |k: usize| {
        let busy = s1.cpu[k].busy.saturating_sub(s0.cpu[k].busy) as f64;
        let total = s1.cpu[k].total.saturating_sub(s0.cpu[k].total) as f64;
        (busy, if total > 0.0 { busy / total } else { 0.0 })
    };
    let (busy0, util0) = d(0);
    let (_, util1) = d(1);
    let secs = m.ns.max(1) as f64 / 1e9;
    let msgs = m.msgs as f64;
    let per_msg = |ns: f64| (m.msgs > 0).then(|| ns / msgs);
    let delta = |a: Option<(u64, u64)>, b: Option<(u64, u64)>| match (a, b) {
        (Some(a), Some(b)) => Some((b.0.saturating_sub(a.0), b.1.saturating_sub(a.1))),
        _ => None,
    };
    let srv_ns = delta(s0.server, s1.server);
    let lg_ns = delta(s0.loadgen, s1.loadgen);
    let is_req = matches!(row.kind, Kind::ReqRep { .. });
    let us = |ns: u64| (is_req && m.reqs > 0).then(|| ns as f64 / 1000.0);
    let mut out = Metrics {
        msgs_per_s: (row.kind != Kind::Idle).then(|| msgs / secs),
        p50_us: us(m.p50),
        p90_us: us(m.p90),
        p99_us: us(m.p99),
        core_ns: per_msg(busy0 / hz * 1e9),
        proc_ns: srv_ns.and_then(|(run, _)| per_msg(run as f64)),
        loadgen_cpu: lg_ns.map(|(run, _)| run as f64 / m.ns.max(1) as f64),
        rss_mib: rss.map(|k| k / 1024.0),
        base_mib: None,
        per_conn_kib: None,
        server_busy: util0,
        client_busy: util1,
        server_wait: srv_ns.map(|(_, wait)| wait as f64 / m.ns.max(1) as f64),
    };
    if row.kind == Kind::Idle {
        out.base_mib = base_rss.map(|k| k / 1024.0);
        out.per_conn_kib = match (base_rss, rss) {
            (Some(b), Some(r)) => Some((r - b) / cfg.idle_conns as f64),
            _ => None,
        };
    }
    Ok(out)
}

// ---------------------------------------------------------------- report

type Getter = fn(&Metrics) -> Option<f64>;

/// (header, getter, higher is better)
fn columns(kind: Kind) -> Vec<(&'static str, Getter, bool)> {
    let msgs: (&str, Getter, bool) = ("msgs/s", |m| m.msgs_per_s, true);
    let core: (&str, Getter, bool) = ("srv core ns/msg", |m| m.core_ns, false);
    let proc_: (&str, Getter, bool) = ("srv proc ns/msg", |m| m.proc_ns, false);
    let lg: (&str, Getter, bool) = ("loadgen cpu %", |m| m.loadgen_cpu.map(|x| x * 100.0), false);
    let rss: (&str, Getter, bool) = ("RSS MiB", |m| m.rss_mib, false);
    match kind {
        Kind::PubSub { .. } => vec![msgs, core, proc_, lg, rss],
        Kind::ReqRep { .. } => vec![
            msgs,
            ("p50 us", |m| m.p50_us, false),
            ("p90 us", |m| m.p90_us, false),
            ("p99 us", |m| m.p99_us, false),
            core,
            proc_,
            lg,
            rss,
        ],
        Kind::Idle => vec![
            ("RSS MiB", |m| m.rss_mib, false),
            ("base RSS MiB", |m| m.base_mib, false),
            ("KiB per conn", |m| m.per_conn_kib, false),
        ],
    }
}

const WIDTH: usize = 21;

fn print_row_table(
    cfg: &Config,
    row: &Row,
    results: &BTreeMap<(usize, Server), Vec<Metrics>>,
    problems: &BTreeMap<(usize, Server), String>,
    ri: usize,
) {
    println!();
    match row.kind {
        Kind::Idle => println!("== {} x {} [{}]", row.title, cfg.idle_conns, row.key),
        _ => println!("== {} [{}]", row.title, row.key),
    }
    let cols = columns(row.kind);
    let mut head = format!("{:<14}", "server");
    for (name, _, _) in &cols {
        head.push_str(&format!("{name:<WIDTH$}"));
    }
    if row.kind != Kind::Idle {
        head.push_str("busy srv/cli, srv wait");
    }
    println!("{}", head.trim_end());
    let mut stats: BTreeMap<Server, Vec<Option<Stat>>> = BTreeMap::new();
    for &server in &cfg.servers {
        let mut line = format!("{:<14}", server.name());
        match results.get(&(ri, server)) {
            Some(ms) if !ms.is_empty() => {
                let cs: Vec<Option<Stat>> = cols
                    .iter()
                    .map(|(_, get, _)| stat(&ms.iter().map(get).collect::<Vec<_>>()))
                    .collect();
                for c in &cs {
                    line.push_str(&format!("{:<WIDTH$}", cell(c)));
                }
                if row.kind != Kind::Idle {
                    let pct = |v: Vec<Option<f64>>| {
                        stat(&v).map_or("?".into(), |s| format!("{:.0}%", s.med * 100.0))
                    };
                    line.push_str(&format!(
                        "{}/{}, {}",
                        pct(ms.iter().map(|m| Some(m.server_busy)).collect()),
                        pct(ms.iter().map(|m| Some(m.client_busy)).collect()),
                        pct(ms.iter().map(|m| m.server_wait).collect()),
                    ));
                }
                if ms.len() < cfg.runs {
                    line.push_str(&format!("  ({} of {} runs)", ms.len(), cfg.runs));
                }
                stats.insert(server, cs);
            }
            _ => {
                let why = problems
                    .get(&(ri, server))
                    .map_or("no result", String::as_str);
                let short = why
                    .lines()
                    .find(|l| l.contains("error:"))
                    .map(|l| l.trim().trim_start_matches("nats-loadgen stderr: "))
                    .or_else(|| why.lines().next())
                    .unwrap_or(why);
                line.push_str(short);
            }
        }
        println!("{}", line.trim_end());
    }
    let Some(reference) = stats.get(&Server::Nats) else {
        return;
    };
    for r in [Server::RingletUring, Server::RingletEpoll] {
        let Some(a) = stats.get(&r) else { continue };
        let ratio = |i: usize| match (&a[i], &reference[i]) {
            (Some(x), Some(y)) if y.med > 0.0 => Some(x.med / y.med),
            _ => None,
        };
        let mut line = format!("  {:<28}", format!("{} / nats-server:", r.name()));
        for (i, (name, _, _)) in cols.iter().enumerate() {
            let v = ratio(i).map_or("n/a".into(), |x| format!("{x:.2}"));
            line.push_str(&format!("{name} {v}   "));
        }
        println!("{}", line.trim_end());
        // The targets, checked against the medians.
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let find = |h: &str| cols.iter().position(|c| c.0 == h).and_then(ratio);
        let target = match row.kind {
            Kind::PubSub { .. } => {
                let lg_sat = results
                    .get(&(ri, r))
                    .map(|ms| {
                        stat(&ms.iter().map(|m| m.loadgen_cpu).collect::<Vec<_>>())
                            .is_some_and(|s| s.med >= 0.9)
                    })
                    .unwrap_or(false);
                match (find("msgs/s"), find("srv core ns/msg")) {
                    (Some(t), Some(c)) => format!(
                        "msgs/s >= 1.5x: {} ({t:.2}x); where the load generator saturates its \
                         core ({}), server CPU/msg <= 0.67x instead: {} ({c:.2}x)",
                        verdict(t >= 1.5),
                        if lg_sat { "it does here" } else { "not here" },
                        verdict(c <= 0.67)
                    ),
                    _ => "n/a".into(),
                }
            }
            Kind::ReqRep { .. } => match find("p99 us") {
                Some(p) => format!("p99 <= nats-server's: {} ({p:.2}x)", verdict(p <= 1.0)),
                None => "n/a".into(),
            },
            Kind::Idle => match find("KiB per conn") {
                Some(k) => format!(
                    "RSS per idle connection <= 0.5x: {} ({k:.2}x)",
                    verdict(k <= 0.5)
                ),
                None => "n/a".into(),
            },
        };
        println!("    target: {target}");
    }
}

// ---------------------------------------------------------------- main

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let cfg = parse_config();
    install_signal_handlers();
    let cpus = allowed_cpus();
    if cfg.server_cpu == cfg.client_cpu
        || !cpus.contains(&cfg.server_cpu)
        || !cpus.contains(&cfg.client_cpu)
    {
        eprintln!(
            "nats-bench: needs two distinct usable CPUs for server ({}) and client ({}); usable: \
             {cpus:?} (set BENCH_SERVER_CPU / BENCH_CLIENT_CPU)",
            cfg.server_cpu, cfg.client_cpu
        );
        return 2;
    }
    if let Err(e) = pin_to_cpu(0, cfg.client_cpu) {
        eprintln!("nats-bench: cannot pin to CPU {}: {e}", cfg.client_cpu);
        return 2;
    }
    // Children inherit the limit: the idle row needs a descriptor per connection on both sides.
    match raise_nofile_limit() {
        Ok(n) if (n as usize) < cfg.idle_conns + 64 => eprintln!(
            "nats-bench: RLIMIT_NOFILE is {n}: the idle row's {} connections may not fit",
            cfg.idle_conns
        ),
        Ok(_) => {}
        Err(e) => eprintln!("nats-bench: cannot raise RLIMIT_NOFILE: {e}"),
    }
    let lg = cfg.bin_dir.join("nats-loadgen");
    if !lg.is_file() {
        eprintln!(
            "nats-bench: {} not found: build with `cargo build --release -p ringlet-bench` (or \
             `make bench-nats`)",
            lg.display()
        );
        return 2;
    }
    let mut skip: BTreeMap<Server, String> = BTreeMap::new();
    if !cfg.nats_server.is_file() {
        skip.insert(
            Server::Nats,
            format!(
                "skipped: nats-server not found at {} (Debian: apt-get install nats-server; \
                 NATS_SERVER=PATH to point elsewhere); no ratios",
                cfg.nats_server.display()
            ),
        );
    }
    if !cfg.broker.is_file() {
        let why = format!(
            "skipped: ringlet broker not found at {} (cargo build --release -p ringlet-bench; \
             RINGLET_BROKER=PATH to point elsewhere)",
            cfg.broker.display()
        );
        skip.insert(Server::RingletUring, why.clone());
        skip.insert(Server::RingletEpoll, why);
    }

    println!("ringlet NATS benchmark: {}", host_line());
    println!(
        "server pinned to CPU {}, nats-loadgen + runner on CPU {}; {} run(s) per row and server, \
         {} s measured after {} s warm-up",
        cfg.server_cpu, cfg.client_cpu, cfg.runs, cfg.secs, cfg.warmup
    );
    println!("ringlet broker: {}", cfg.broker.display());
    println!("nats-server: {}", cfg.nats_server.display());
    println!("load average before the start: {}", loadavg());
    for (s, why) in &skip {
        println!("{}: {why}", s.name());
    }
    if cfg.runs < 5 {
        println!("note: fewer than 5 runs: medians and spreads are indicative only");
    }
    let active = cfg.servers.iter().filter(|s| !skip.contains_key(s)).count();
    println!(
        "about {:.0} s: {} rows x {active} servers x {} runs",
        (cfg.warmup + cfg.secs + 1.0) * (cfg.rows.len() * active * cfg.runs) as f64,
        cfg.rows.len(),
        cfg.runs
    );

    let started = Instant::now();
    let mut results: BTreeMap<(usize, Server), Vec<Metrics>> = BTreeMap::new();
    let mut problems: BTreeMap<(usize, Server), String> = BTreeMap::new();
    let mut failed = false;
    let mut interrupted = false;
    let total = cfg.rows.len() * active * cfg.runs;
    let mut n = 0;
    'rounds: for round in 0..cfg.runs {
        for (ri, row) in cfg.rows.iter().enumerate() {
            let k = round % cfg.servers.len();
            let order: Vec<Server> = cfg.servers[k..]
                .iter()
                .chain(&cfg.servers[..k])
                .copied()
                .collect();
            for server in order {
                if skip.contains_key(&server) || problems.contains_key(&(ri, server)) {
                    continue;
                }
                n += 1;
                print!(
                    "[{n}/{total}] {:<10} {:<14} run {}: ",
                    row.key,
                    server.name(),
                    round + 1
                );
                let _ = io::stdout().flush();
                let mut res = run_one(&cfg, server, row);
                if let Err(Fail::Start(e)) = &res {
                    print!(
                        "start failed ({}), retrying: ",
                        e.lines().next().unwrap_or("")
                    );
                    let _ = io::stdout().flush();
                    res = run_one(&cfg, server, row);
                }
                match res {
                    Ok(m) => {
                        let o = |v: Option<f64>| v.map_or("n/a".into(), num);
                        match row.kind {
                            Kind::Idle => println!(
                                "RSS {} MiB (base {} MiB), {} KiB per connection",
                                o(m.rss_mib),
                                o(m.base_mib),
                                o(m.per_conn_kib)
                            ),
                            _ => println!(
                                "{} msgs/s, p50/p90/p99 {}/{}/{} us, core {} ns/msg, proc {} ns/msg, \
                                 loadgen cpu {}%, RSS {} MiB, busy {:.0}%/{:.0}%, srv wait {}",
                                o(m.msgs_per_s),
                                o(m.p50_us),
                                o(m.p90_us),
                                o(m.p99_us),
                                o(m.core_ns),
                                o(m.proc_ns),
                                o(m.loadgen_cpu.map(|x| x * 100.0)),
                                o(m.rss_mib),
                                m.server_busy * 100.0,
                                m.client_busy * 100.0,
                                m.server_wait
                                    .map_or("n/a".into(), |w| format!("{:.0}%", w * 100.0)),
                            ),
                        }
                        results.entry((ri, server)).or_default().push(m);
                    }
                    Err(Fail::Interrupted) => {
                        println!("interrupted");
                        interrupted = true;
                        break 'rounds;
                    }
                    Err(Fail::Start(e)) => {
                        println!("FAILED to start: {e}");
                        failed = true;
                        skip.insert(server, format!("FAILED to start: {e}"));
                    }
                    Err(Fail::Run(e)) => {
                        println!("FAILED: {e}");
                        failed = true;
                        problems.insert((ri, server), format!("FAILED: {e}"));
                    }
                }
                if stopping() {
                    interrupted = true;
                    break 'rounds;
                }
            }
        }
    }
    for (ri, _) in cfg.rows.iter().enumerate() {
        for (s, why) in &skip {
            problems.entry((ri, *s)).or_insert_with(|| why.clone());
        }
    }

    println!();
    println!(
        "Results: median [min-max] over {} run(s) per cell.
  msgs/s         messages delivered to subscribers per second (1 -> 10 counts 10 per
                 publish; request/reply counts the request and the reply)
  p50/p90/p99    request latency, from before the request's write to after its reply
  srv core ns/msg  busy time of the server CPU per delivered message, /proc/stat
                 (user+nice+system+irq+softirq+steal: everything that ran there, loopback
                 delivery included; tick-sampled)
  srv proc ns/msg  CPU time of the server process itself per delivered message (schedstat)
  loadgen cpu %  CPU time of nats-loadgen over the window, share of its one core: near
                 100% means the load generator, not the server, set the pace
  RSS MiB        server resident set at the end of the window (idle: with the connections
                 open; base: before them; KiB per conn = the difference / connections)
  busy srv/cli   utilisation of the server CPU / the client CPU in the window
  srv wait       share of the window the server was runnable but another task held its CPU
  ratios         ringlet / nats-server of the medians (msgs/s: higher is better; every
                 other column: lower is better)",
        cfg.runs
    );
    for (ri, row) in cfg.rows.iter().enumerate() {
        print_row_table(&cfg, row, &results, &problems, ri);
    }
    let noisy = results
        .values()
        .flatten()
        .filter(|m| m.server_wait.is_some_and(|w| w > 0.05))
        .count();
    if noisy > 0 {
        println!();
        println!(
            "warning: in {noisy} of {} runs the server waited for its CPU more than 5% of the \
             window: other tasks ran on CPU {} (load average now: {}). Rerun on a quieter \
             machine for throughput and latency.",
            results.values().map(Vec::len).sum::<usize>(),
            cfg.server_cpu,
            loadavg()
        );
    }
    println!();
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    if interrupted {
        println!("interrupted: results above are partial");
        return 130;
    }
    if failed {
        println!("some runs FAILED (see above)");
        return 1;
    }
    0
}
