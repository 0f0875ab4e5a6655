//! The echo benchmark runner (`make bench`): ringlet's echo server on both backends side by side
//! with tokio and monoio echo servers, over a fixed set of scenarios, in interleaved runs.
//!
//! Per run: the server starts pinned to the server CPU (default 0), the runner waits for its
//! `listening on` line and checks one echo, then `loadgen --control` starts pinned to the client
//! CPU (default 1, where the runner itself runs). After a warm-up the runner marks a measured
//! window (round trips/s, latency percentiles, busy time of the server CPU from /proc/stat and the
//! server process's own CPU time), then a second window in which `perf stat` counts the server
//! process's system calls (kept apart because an enabled syscall tracepoint slows every system
//! call on the machine). Medians and min-max over the runs are printed as a table with
//! ringlet/peer ratios. See `bench/README.md`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringlet_bench::runner::{
    CpuTimes, Fail, Proc, Stat, TmpDir, cell, free_port, host_line, install_signal_handlers,
    loadavg, num, proc_stat, process_cpu_ns, stat, stopping,
};
use ringlet_bench::{allowed_cpus, pin_to_cpu, raise_nofile_limit, sleep_unless};

const USAGE: &str = "\
usage: bench [--quick] [--secs S] [--runs N] [--warmup S] [--count-secs S]
             [--servers LIST] [--rows LIST] [--echo PATH] [--stream-echo PATH]
             [--server-cpu N] [--client-cpu N] [--loadgen-driver uring|epoll]

  --quick            smoke mode: 1 run, 0.5 s measured, 0.2 s warm-up, 0.3 s syscall count
  --secs S           measured seconds per run           (env BENCH_SECS, default 2)
  --runs N           interleaved runs per row and server (env BENCH_RUNS, default 5)
  --warmup S         warm-up seconds per run            (env BENCH_WARMUP_SECS, default 0.5)
  --count-secs S     syscall-count window per run, 0 = off (env BENCH_COUNT_SECS, default 0.5)
  --servers LIST     comma list of ringlet-uring,ringlet-epoll,ringlet-stream,tokio,monoio
                     (env BENCH_SERVERS)
  --rows LIST        comma list of 64b-c1,64b-c16,64b-c256,4k-c16,64b-c16-p16 (env BENCH_ROWS)
  --echo PATH        ringlet's echo binary (env RINGLET_ECHO,
                     default: <dir of this binary>/examples/echo)
  --stream-echo PATH ringlet's async echo, the ringlet-stream server (env RINGLET_STREAM_ECHO,
                     default: <dir of this binary>/examples/stream_echo)
  --server-cpu N     CPU the server is pinned to       (env BENCH_SERVER_CPU, default 0)
  --client-cpu N     CPU of loadgen, perf and runner   (env BENCH_CLIENT_CPU, default 1)
  --loadgen-driver   loadgen's I/O driver               (env BENCH_LOADGEN_DRIVER, default uring)";

// ---------------------------------------------------------------- scenarios and servers

#[derive(Clone, Copy)]
struct Row {
    key: &'static str,
    title: &'static str,
    conns: usize,
    size: usize,
    depth: usize,
}

const ROWS: [Row; 5] = [
    Row {
        key: "64b-c1",
        title: "ping-pong 64 B, 1 connection",
        conns: 1,
        size: 64,
        depth: 1,
    },
    Row {
        key: "64b-c16",
        title: "ping-pong 64 B, 16 connections",
        conns: 16,
        size: 64,
        depth: 1,
    },
    Row {
        key: "64b-c256",
        title: "ping-pong 64 B, 256 connections",
        conns: 256,
        size: 64,
        depth: 1,
    },
    Row {
        key: "4k-c16",
        title: "ping-pong 4 KiB, 16 connections",
        conns: 16,
        size: 4096,
        depth: 1,
    },
    Row {
        key: "64b-c16-p16",
        title: "16 pipelined 64 B messages per connection, 16 connections (latency per batch)",
        conns: 16,
        size: 64,
        depth: 16,
    },
];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Server {
    RingletUring,
    RingletEpoll,
    /// The async twin (`examples/stream_echo.rs`: executor tasks, ConnectionStream, relay) on
    /// io_uring: its ratio to `ringlet-uring` is the cost of the async face.
    RingletStream,
    Tokio,
    Monoio,
}

const SERVERS: [Server; 5] = [
    Server::RingletUring,
    Server::RingletEpoll,
    Server::RingletStream,
    Server::Tokio,
    Server::Monoio,
];

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::RingletUring => "ringlet-uring",
            Server::RingletEpoll => "ringlet-epoll",
            Server::RingletStream => "ringlet-stream",
            Server::Tokio => "tokio",
            Server::Monoio => "monoio",
        }
    }

    fn is_ringlet(self) -> bool {
        matches!(self, Server::RingletUring | Server::RingletEpoll)
    }

    /// Program and arguments (without `--addr`).
    fn command(self, cfg: &Config) -> (PathBuf, Vec<&'static str>) {
        match self {
            Server::RingletUring => (cfg.echo.clone(), vec!["--backend", "uring"]),
            Server::RingletEpoll => (cfg.echo.clone(), vec!["--backend", "epoll"]),
            Server::RingletStream => (cfg.stream_echo.clone(), vec!["--backend", "uring"]),
            Server::Tokio => (cfg.bin_dir.join("tokio-echo"), vec![]),
            Server::Monoio => (cfg.bin_dir.join("monoio-echo"), vec![]),
        }
    }
}

// ---------------------------------------------------------------- configuration

struct Config {
    secs: f64,
    warmup: f64,
    count_secs: f64,
    runs: usize,
    servers: Vec<Server>,
    rows: Vec<Row>,
    echo: PathBuf,
    stream_echo: PathBuf,
    bin_dir: PathBuf,
    server_cpu: usize,
    client_cpu: usize,
    loadgen_driver: Option<String>,
}

fn usage_exit(msg: &str) -> ! {
    eprintln!("bench: {msg}\n{USAGE}");
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

fn parse_config() -> Config {
    let exe = std::env::current_exe().unwrap_or_else(|e| usage_exit(&format!("current_exe: {e}")));
    let bin_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut cfg = Config {
        secs: if quick { 0.5 } else { 2.0 },
        warmup: if quick { 0.2 } else { 0.5 },
        count_secs: if quick { 0.3 } else { 0.5 },
        runs: if quick { 1 } else { 5 },
        servers: SERVERS.to_vec(),
        rows: ROWS.to_vec(),
        echo: bin_dir.join("examples").join("echo"),
        stream_echo: bin_dir.join("examples").join("stream_echo"),
        bin_dir,
        server_cpu: 0,
        client_cpu: 1,
        loadgen_driver: None,
    };
    // Environment first, then flags (flags win).
    let mut settings: Vec<(String, String)> = Vec::new();
    for (env, flag) in [
        ("BENCH_SECS", "--secs"),
        ("BENCH_RUNS", "--runs"),
        ("BENCH_WARMUP_SECS", "--warmup"),
        ("BENCH_COUNT_SECS", "--count-secs"),
        ("BENCH_SERVERS", "--servers"),
        ("BENCH_ROWS", "--rows"),
        ("RINGLET_ECHO", "--echo"),
        ("RINGLET_STREAM_ECHO", "--stream-echo"),
        ("BENCH_SERVER_CPU", "--server-cpu"),
        ("BENCH_CLIENT_CPU", "--client-cpu"),
        ("BENCH_LOADGEN_DRIVER", "--loadgen-driver"),
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
            "--count-secs" => cfg.count_secs = parse_num(&flag, &v),
            "--servers" => cfg.servers = parse_list("server", &v, &SERVERS, |s| s.name()),
            "--rows" => cfg.rows = parse_list("row", &v, &ROWS, |r| r.key),
            "--echo" => cfg.echo = PathBuf::from(v),
            "--stream-echo" => cfg.stream_echo = PathBuf::from(v),
            "--server-cpu" => cfg.server_cpu = parse_num(&flag, &v),
            "--client-cpu" => cfg.client_cpu = parse_num(&flag, &v),
            "--loadgen-driver" => cfg.loadgen_driver = Some(v),
            _ => usage_exit(&format!("unknown option {flag}")),
        }
    }
    if cfg.runs == 0 || cfg.secs <= 0.0 || cfg.warmup < 0.0 || cfg.count_secs < 0.0 {
        usage_exit("--runs and --secs must be positive, --warmup and --count-secs not negative");
    }
    if cfg.servers.is_empty() || cfg.rows.is_empty() {
        usage_exit("no server or no row selected");
    }
    cfg
}

// ---------------------------------------------------------------- child processes

struct Snapshot {
    cpu: [CpuTimes; 2],
    proc_ns: Option<(u64, u64)>,
}

fn snapshot(cfg: &Config, pid: u32) -> Result<Snapshot, Fail> {
    let cpu = proc_stat([cfg.server_cpu, cfg.client_cpu])
        .map_err(|e| Fail::Run(format!("reading /proc/stat: {e}")))?;
    Ok(Snapshot {
        cpu,
        proc_ns: process_cpu_ns(pid),
    })
}

/// One `mark` answer of loadgen.
struct Mark {
    msgs: u64,
    ns: u64,
    p50: u64,
    p99: u64,
}

fn parse_mark(line: &str) -> Option<Mark> {
    let rest = line.strip_prefix("mark ")?;
    let mut m = Mark {
        msgs: 0,
        ns: 0,
        p50: 0,
        p99: 0,
    };
    for kv in rest.split_ascii_whitespace() {
        let (k, v) = kv.split_once('=')?;
        let v: u64 = v.parse().ok()?;
        match k {
            "msgs" => m.msgs = v,
            "ns" => m.ns = v,
            "p50" => m.p50 = v,
            "p99" => m.p99 = v,
            _ => {}
        }
    }
    Some(m)
}

fn mark(lg: &mut Proc) -> Result<Mark, Fail> {
    lg.send_line("mark")?;
    let line = lg.next_line(Duration::from_secs(10))?;
    parse_mark(&line)
        .ok_or_else(|| Fail::Run(format!("loadgen answered {line:?} to mark{}", lg.stderr())))
}

/// Results of one run.
#[derive(Clone, Copy)]
struct Metrics {
    rt_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    /// Busy time of the server CPU per round trip, µs.
    core_us: f64,
    /// CPU time of the server process per round trip, µs.
    proc_us: Option<f64>,
    syscalls: Option<f64>,
    server_busy: f64,
    client_busy: f64,
    /// Share of the window the server was runnable but waiting for its CPU (other tasks ran).
    server_wait: Option<f64>,
}

// ---------------------------------------------------------------- perf

/// Whether `perf stat -e raw_syscalls:sys_enter` works here; the reason when not.
fn check_perf() -> Result<(), String> {
    let out = Command::new("perf")
        .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true"])
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err("perf is not installed (Debian: apt-get install linux-perf)".into());
        }
        Err(e) => return Err(format!("cannot run perf: {e}")),
    };
    let err = String::from_utf8_lossy(&out.stderr);
    let counted = err
        .lines()
        .find(|l| l.contains("raw_syscalls:sys_enter"))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.trim().parse::<u64>().ok());
    match counted {
        Some(n) if out.status.success() && n > 0 => Ok(()),
        _ => {
            let why = err
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .trim();
            Err(format!(
                "`perf stat -e raw_syscalls:sys_enter` does not work here ({why}); it needs root \
                 or kernel.perf_event_paranoid <= -1, and tracefs"
            ))
        }
    }
}

/// `perf stat` attached to the server, started with its counter disabled and switched through
/// control FIFOs, so the counted window lines up with loadgen's marks.
struct PerfCount {
    proc: Proc,
    ctl: File,
    ack: File,
    out: PathBuf,
    fifos: [PathBuf; 2],
}

fn mkfifo(path: &Path) -> io::Result<()> {
    let _ = fs::remove_file(path);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl PerfCount {
    fn start(cfg: &Config, tmp: &Path, pid: u32, n: usize) -> Result<PerfCount, String> {
        let fifos = [tmp.join(format!("ctl-{n}")), tmp.join(format!("ack-{n}"))];
        let out = tmp.join(format!("perf-{n}.csv"));
        for f in &fifos {
            mkfifo(f).map_err(|e| format!("mkfifo {}: {e}", f.display()))?;
        }
        // Read-write opens of a FIFO never block, and keep it open whatever perf does.
        let open = |p: &Path, nonblock: bool| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(if nonblock { libc::O_NONBLOCK } else { 0 })
                .open(p)
                .map_err(|e| format!("open {}: {e}", p.display()))
        };
        let ctl = open(&fifos[0], false)?;
        let ack = open(&fifos[1], true)?;
        let mut cmd = Command::new("perf");
        cmd.arg("stat")
            .args([
                "-x,",
                "-e",
                "raw_syscalls:sys_enter",
                "-D",
                "-1",
                "--control",
            ])
            .arg(format!(
                "fifo:{},{}",
                fifos[0].display(),
                fifos[1].display()
            ))
            .arg("-o")
            .arg(&out)
            .args(["-p", &pid.to_string()]);
        let proc = Proc::spawn("perf", cmd, cfg.client_cpu, false)
            .map_err(|e| format!("cannot start perf: {e}"))?;
        Ok(PerfCount {
            proc,
            ctl,
            ack,
            out,
            fifos,
        })
    }

    /// Sends `enable` or `disable` and waits for perf's `ack`.
    fn command(&mut self, cmd: &str) -> Result<(), String> {
        self.ctl
            .write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| format!("perf control: {e}"))?;
        let end = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        loop {
            let mut buf = [0u8; 64];
            match self.ack.read(&mut buf) {
                Ok(n) if n > 0 => {
                    got.extend_from_slice(&buf[..n]);
                    if got.contains(&b'\n') {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("perf ack: {e}")),
            }
            if let Some(st) = self.proc.exited() {
                return Err(format!("perf exited ({st}){}", self.proc.stderr()));
            }
            if stopping() || Instant::now() >= end {
                return Err(format!(
                    "perf did not acknowledge {cmd:?}{}",
                    self.proc.stderr()
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Stops perf and returns the count.
    fn finish(mut self) -> Result<u64, String> {
        let (st, _) = self.proc.stop(libc::SIGINT, Duration::from_secs(5));
        let text = fs::read_to_string(&self.out).unwrap_or_default();
        let _ = fs::remove_file(&self.out);
        for f in &self.fifos {
            let _ = fs::remove_file(f);
        }
        text.lines()
            .filter(|l| l.contains("raw_syscalls:sys_enter"))
            .find_map(|l| l.split(',').next()?.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                let st = st.map_or("killed".to_string(), |s| s.to_string());
                format!(
                    "no count in perf's output ({st}): {:?}{}",
                    text.trim(),
                    self.proc.stderr()
                )
            })
    }
}

// ---------------------------------------------------------------- one run

/// One echo through a fresh connection: proves the server accepts and echoes.
fn probe_echo(addr: SocketAddr) -> io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let msg = b"ringlet-bench probe\n";
    s.write_all(msg)?;
    let mut back = [0u8; 20];
    s.read_exact(&mut back)?;
    if &back != msg {
        return Err(io::Error::other("probe echo came back altered"));
    }
    Ok(())
}

struct Ctx<'a> {
    cfg: &'a Config,
    tmp: PathBuf,
    perf: Result<(), String>,
    runs_done: usize,
    /// Notes to print after the current run's line, and the ones already printed once.
    notes: Vec<String>,
    noted: std::collections::BTreeSet<(Option<Server>, String)>,
}

impl Ctx<'_> {
    /// A note about `server` (or the run), printed once per server and kind of message.
    fn note(&mut self, server: Option<Server>, msg: String) {
        let kind = msg.split(':').next().unwrap_or("").to_string();
        if self.noted.insert((server, kind)) {
            let who = server.map_or(String::new(), |s| format!("{}: ", s.name()));
            self.notes.push(format!("  note: {who}{msg}"));
        }
    }
}

fn run_one(cx: &mut Ctx<'_>, server: Server, row: &Row) -> Result<Metrics, Fail> {
    let cfg = cx.cfg;
    let port = free_port().map_err(|e| Fail::Start(format!("no free port: {e}")))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (prog, extra) = server.command(cfg);
    let mut cmd = Command::new(&prog);
    cmd.arg("--addr").arg(addr.to_string()).args(&extra);
    let mut srv = Proc::spawn(server.name(), cmd, cfg.server_cpu, false)
        .map_err(|e| Fail::Start(format!("cannot start {}: {e}", prog.display())))?;

    // Wait for `listening on ADDR`, then for one real echo.
    let ready_by = Instant::now() + Duration::from_secs(10);
    let addr = loop {
        let left = ready_by.saturating_duration_since(Instant::now());
        let line = srv.next_line(left).map_err(|e| match e {
            Fail::Run(m) => Fail::Start(format!("no `listening on` line: {m}")),
            other => other,
        })?;
        if let Some(a) = line.trim().strip_prefix("listening on ") {
            break a.trim().parse::<SocketAddr>().unwrap_or(addr);
        }
    };
    probe_echo(addr)
        .map_err(|e| Fail::Start(format!("probe echo to {addr} failed: {e}{}", srv.stderr())))?;

    let lg_path = cfg.bin_dir.join("loadgen");
    let mut cmd = Command::new(&lg_path);
    let max = cfg.warmup + cfg.secs + cfg.count_secs + 60.0;
    cmd.arg("--addr")
        .arg(addr.to_string())
        .args(["--conns", &row.conns.to_string()])
        .args(["--size", &row.size.to_string()])
        .args(["--depth", &row.depth.to_string()])
        .args([
            "--control",
            "--stall-secs",
            "10",
            "--max-secs",
            &format!("{max:.1}"),
        ]);
    if let Some(d) = &cfg.loadgen_driver {
        cmd.args(["--driver", d]);
    }
    let mut lg = Proc::spawn("loadgen", cmd, cfg.client_cpu, true)
        .map_err(|e| Fail::Run(format!("cannot start {}: {e}", lg_path.display())))?;
    let line = lg.next_line(Duration::from_secs(30))?;
    if line.trim() != "ready" {
        return Err(Fail::Run(format!(
            "loadgen said {line:?} instead of ready{}",
            lg.stderr()
        )));
    }

    // Warm-up, then the measured window.
    if !sleep_unless(Duration::from_secs_f64(cfg.warmup), stopping) {
        return Err(Fail::Interrupted);
    }
    mark(&mut lg)?;
    let s0 = snapshot(cfg, srv.pid())?;
    if !sleep_unless(Duration::from_secs_f64(cfg.secs), stopping) {
        return Err(Fail::Interrupted);
    }
    let m = mark(&mut lg)?;
    let s1 = snapshot(cfg, srv.pid())?;
    if m.msgs == 0 {
        return Err(Fail::Run(format!(
            "no round trip completed in the window{}",
            lg.stderr()
        )));
    }

    // The syscall-count window.
    let mut syscalls = None;
    if cfg.count_secs > 0.0 && cx.perf.is_ok() {
        cx.runs_done += 1;
        let counted = (|| -> Result<f64, String> {
            let mut perf = PerfCount::start(cfg, &cx.tmp, srv.pid(), cx.runs_done)?;
            perf.command("enable")?;
            mark(&mut lg).map_err(fail_text)?;
            sleep_unless(Duration::from_secs_f64(cfg.count_secs), stopping);
            let mc = mark(&mut lg).map_err(fail_text)?;
            perf.command("disable")?;
            let n = perf.finish()?;
            if mc.msgs == 0 {
                return Err("no round trip completed in the count window".into());
            }
            Ok(n as f64 / mc.msgs as f64)
        })();
        if stopping() {
            return Err(Fail::Interrupted);
        }
        match counted {
            Ok(x) => syscalls = Some(x),
            Err(e) if e.starts_with("loadgen") => return Err(Fail::Run(e)),
            Err(e) => cx.note(None, format!("syscall count failed: {e}")),
        }
    }

    // Stop loadgen (end of input), then the server (SIGTERM).
    let (st, by_itself) = lg.stop(0, Duration::from_secs(5));
    if !by_itself || !st.is_some_and(|s| s.success()) {
        let st = st.map_or("killed".to_string(), |s| s.to_string());
        return Err(Fail::Run(format!(
            "loadgen did not exit cleanly ({st}){}",
            lg.stderr()
        )));
    }
    let (st, by_itself) = srv.stop(libc::SIGTERM, Duration::from_secs(3));
    if !by_itself {
        let msg = "did not exit within 3 s of SIGTERM; killed".to_string();
        cx.note(Some(server), msg);
    } else if !st.is_some_and(|s| s.success()) {
        let st = st.map_or("?".to_string(), |s| s.to_string());
        cx.note(
            Some(server),
            format!("exited with {st} on SIGTERM (not status 0)"),
        );
    }

    let secs = m.ns as f64 / 1e9;
    let rts = m.msgs as f64;
    // SAFETY: sysconf is always safe to call.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let d = |k: usize| {
        let busy = s1.cpu[k].busy.saturating_sub(s0.cpu[k].busy) as f64;
        let total = s1.cpu[k].total.saturating_sub(s0.cpu[k].total) as f64;
        (busy, if total > 0.0 { busy / total } else { 0.0 })
    };
    let (busy0, util0) = d(0);
    let (_, util1) = d(1);
    Ok(Metrics {
        rt_per_s: rts / secs,
        p50_us: m.p50 as f64 / 1000.0,
        p99_us: m.p99 as f64 / 1000.0,
        core_us: busy0 / hz * 1e6 / rts,
        proc_us: match (s0.proc_ns, s1.proc_ns) {
            (Some(a), Some(b)) => Some(b.0.saturating_sub(a.0) as f64 / 1000.0 / rts),
            _ => None,
        },
        server_wait: match (s0.proc_ns, s1.proc_ns) {
            (Some(a), Some(b)) => Some(b.1.saturating_sub(a.1) as f64 / m.ns.max(1) as f64),
            _ => None,
        },
        syscalls,
        server_busy: util0,
        client_busy: util1,
    })
}

fn fail_text(f: Fail) -> String {
    match f {
        Fail::Start(m) | Fail::Run(m) => m,
        Fail::Interrupted => "interrupted".into(),
    }
}

// ---------------------------------------------------------------- report

type Getter = fn(&Metrics) -> Option<f64>;

const COLUMNS: [(&str, Getter); 6] = [
    ("round trips/s", |m| Some(m.rt_per_s)),
    ("p50 us", |m| Some(m.p50_us)),
    ("p99 us", |m| Some(m.p99_us)),
    ("core us/rt", |m| Some(m.core_us)),
    ("proc us/rt", |m| m.proc_us),
    ("syscalls/rt", |m| m.syscalls),
];

const WIDTHS: [usize; 6] = [22, 19, 19, 19, 19, 19];

fn print_row_table(
    cfg: &Config,
    row: &Row,
    results: &BTreeMap<(usize, Server), Vec<Metrics>>,
    problems: &BTreeMap<(usize, Server), String>,
    ri: usize,
) {
    println!();
    println!(
        "== {} ({} B x {} per batch, {} conns)",
        row.title, row.size, row.depth, row.conns
    );
    let mut head = format!("{:<15}", "server");
    for ((name, _), w) in COLUMNS.iter().zip(WIDTHS) {
        head.push_str(&format!("{name:<w$}"));
    }
    head.push_str("busy srv/cli, srv wait");
    println!("{head}");
    let mut stats: BTreeMap<Server, Vec<Option<Stat>>> = BTreeMap::new();
    for &server in &cfg.servers {
        let mut line = format!("{:<15}", server.name());
        match results.get(&(ri, server)) {
            Some(ms) if !ms.is_empty() => {
                let cols: Vec<Option<Stat>> = COLUMNS
                    .iter()
                    .map(|(_, get)| stat(&ms.iter().map(get).collect::<Vec<_>>()))
                    .collect();
                for (c, w) in cols.iter().zip(WIDTHS) {
                    line.push_str(&format!("{:<w$}", cell(c)));
                }
                let b0 = stat(&ms.iter().map(|m| Some(m.server_busy)).collect::<Vec<_>>());
                let b1 = stat(&ms.iter().map(|m| Some(m.client_busy)).collect::<Vec<_>>());
                let pct =
                    |s: Option<Stat>| s.map_or("?".into(), |s| format!("{:.0}%", s.med * 100.0));
                let bw = stat(&ms.iter().map(|m| m.server_wait).collect::<Vec<_>>());
                line.push_str(&format!("{}/{}, {}", pct(b0), pct(b1), pct(bw)));
                if ms.len() < cfg.runs {
                    line.push_str(&format!("  ({} of {} runs)", ms.len(), cfg.runs));
                }
                stats.insert(server, cols);
            }
            _ => {
                let why = problems
                    .get(&(ri, server))
                    .map_or("no result", String::as_str);
                // The most telling line: a loadgen or server error message, else the first.
                let short = why
                    .lines()
                    .find(|l| l.contains("error:"))
                    .map(|l| l.trim().trim_start_matches("loadgen stderr: "))
                    .or_else(|| why.lines().next())
                    .unwrap_or(why);
                line.push_str(short);
            }
        }
        println!("{line}");
    }
    // Ratios of medians, ringlet / peer; and the async face against the callback echo.
    let mut missing = Vec::new();
    let pairs = [
        Server::RingletUring,
        Server::RingletEpoll,
        Server::RingletStream,
    ]
    .into_iter()
    .flat_map(|r| [(r, Server::Tokio), (r, Server::Monoio)])
    .chain([(Server::RingletStream, Server::RingletUring)]);
    {
        for (r, p) in pairs {
            if !cfg.servers.contains(&r) || !cfg.servers.contains(&p) {
                continue;
            }
            let (Some(a), Some(b)) = (stats.get(&r), stats.get(&p)) else {
                missing.push(format!("{}/{}", r.name(), p.name()));
                continue;
            };
            let mut line = format!("  {:<33}", format!("{} / {}:", r.name(), p.name()));
            for (i, (name, _)) in COLUMNS.iter().enumerate() {
                let ratio = match (&a[i], &b[i]) {
                    (Some(x), Some(y)) if y.med > 0.0 => format!("{:.2}", x.med / y.med),
                    _ => "n/a".into(),
                };
                line.push_str(&format!("{name} {ratio}   "));
            }
            println!("{}", line.trim_end());
        }
    }
    if !missing.is_empty() {
        println!(
            "  ratios n/a (a side has no result): {}",
            missing.join(", ")
        );
    }
}

fn main() {
    // Exit only after every guard (children, the temporary directory) has been dropped.
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
            "bench: needs two distinct usable CPUs for server ({}) and client ({}); usable: {cpus:?} \
             (set BENCH_SERVER_CPU / BENCH_CLIENT_CPU)",
            cfg.server_cpu, cfg.client_cpu
        );
        return 2;
    }
    if let Err(e) = pin_to_cpu(0, cfg.client_cpu) {
        eprintln!("bench: cannot pin to CPU {}: {e}", cfg.client_cpu);
        return 2;
    }
    if let Err(e) = raise_nofile_limit() {
        eprintln!("bench: cannot raise RLIMIT_NOFILE: {e}");
    }
    for bin in ["loadgen", "tokio-echo", "monoio-echo"] {
        if !cfg.bin_dir.join(bin).is_file() {
            eprintln!(
                "bench: {} not found: build with `cargo build --release -p ringlet-bench` (or `make bench`)",
                cfg.bin_dir.join(bin).display()
            );
            return 2;
        }
    }
    let tmp = std::env::temp_dir().join(format!("ringlet-bench.{}", std::process::id()));
    if let Err(e) = fs::create_dir_all(&tmp) {
        eprintln!("bench: cannot create {}: {e}", tmp.display());
        return 2;
    }
    let _tmp_guard = TmpDir(tmp.clone());

    let perf = if cfg.count_secs > 0.0 {
        check_perf()
    } else {
        Err("disabled (--count-secs 0)".into())
    };
    let mut problems: BTreeMap<(usize, Server), String> = BTreeMap::new();
    let mut skip: BTreeMap<Server, String> = BTreeMap::new();
    if !cfg.echo.is_file() {
        let why = format!(
            "skipped: ringlet echo not found at {} (examples/echo.rs not written yet, or not \
             built: cargo build --release --example echo; RINGLET_ECHO=PATH to point elsewhere)",
            cfg.echo.display()
        );
        for s in cfg.servers.iter().filter(|s| s.is_ringlet()) {
            skip.insert(*s, why.clone());
        }
    }
    if cfg.servers.contains(&Server::RingletStream) && !cfg.stream_echo.is_file() {
        skip.insert(
            Server::RingletStream,
            format!(
                "skipped: ringlet stream echo not found at {} (cargo build --release --example \
                 stream_echo; RINGLET_STREAM_ECHO=PATH to point elsewhere)",
                cfg.stream_echo.display()
            ),
        );
    }

    println!("ringlet echo benchmark: {}", host_line());
    println!(
        "server pinned to CPU {}, loadgen + runner + perf on CPU {}; {} run(s) per row and server, \
         {} s measured after {} s warm-up, syscalls counted over a further {} s",
        cfg.server_cpu, cfg.client_cpu, cfg.runs, cfg.secs, cfg.warmup, cfg.count_secs
    );
    println!("ringlet echo: {}", cfg.echo.display());
    if cfg.servers.contains(&Server::RingletStream) {
        println!("ringlet stream echo: {}", cfg.stream_echo.display());
    }
    println!("load average before the start: {}", loadavg());
    match &perf {
        Ok(()) => println!("syscalls/rt: perf stat -e raw_syscalls:sys_enter -p <server>"),
        Err(e) => println!("syscalls/rt: n/a: {e}"),
    }
    for (s, why) in &skip {
        println!("{}: {why}", s.name());
    }
    if cfg.runs < 5 {
        println!("note: fewer than 5 runs: medians and spreads are indicative only");
    }
    let active = cfg.servers.iter().filter(|s| !skip.contains_key(s)).count();
    let per_run = cfg.warmup + cfg.secs + cfg.count_secs + 0.6;
    println!(
        "about {:.0} s: {} rows x {active} servers x {} runs",
        per_run * (cfg.rows.len() * active * cfg.runs) as f64,
        cfg.rows.len(),
        cfg.runs
    );

    let started = Instant::now();
    let mut cx = Ctx {
        cfg: &cfg,
        tmp: tmp.clone(),
        perf,
        runs_done: 0,
        notes: Vec::new(),
        noted: Default::default(),
    };
    let mut results: BTreeMap<(usize, Server), Vec<Metrics>> = BTreeMap::new();
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
                    "[{n}/{total}] {:<12} {:<14} run {}: ",
                    row.key,
                    server.name(),
                    round + 1
                );
                let _ = io::stdout().flush();
                // A start failure may be transient (the free port was taken meanwhile): one
                // more try before the server is given up.
                let mut res = run_one(&mut cx, server, row);
                if let Err(Fail::Start(e)) = &res {
                    print!(
                        "start failed ({}), retrying: ",
                        e.lines().next().unwrap_or("")
                    );
                    let _ = io::stdout().flush();
                    res = run_one(&mut cx, server, row);
                }
                match res {
                    Ok(m) => {
                        println!(
                            "{} rt/s, p50 {} us, p99 {} us, core {} us/rt, proc {} us/rt, syscalls/rt {}, busy {:.0}%/{:.0}%, srv wait {}",
                            num(m.rt_per_s),
                            num(m.p50_us),
                            num(m.p99_us),
                            num(m.core_us),
                            m.proc_us.map_or("n/a".into(), num),
                            m.syscalls.map_or("n/a".into(), num),
                            m.server_busy * 100.0,
                            m.client_busy * 100.0,
                            m.server_wait
                                .map_or("n/a".into(), |w| format!("{:.0}%", w * 100.0)),
                        );
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
                for n in cx.notes.drain(..) {
                    println!("{n}");
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
            let short = if why.starts_with("skipped: ringlet echo not found") {
                "skipped: no ringlet echo binary (see the top)".to_string()
            } else {
                why.clone()
            };
            problems.entry((ri, *s)).or_insert(short);
        }
    }

    println!();
    println!(
        "Results: median [min-max] over {} run(s) per cell.
  round trips/s  echoed messages per second (a pipelined batch of 16 counts 16)
  p50/p99 us     latency per round trip (per batch in the pipelined row), from loadgen
  core us/rt     busy time of the server CPU per round trip, /proc/stat
                 (user+nice+system+irq+softirq+steal: everything that ran there;
                 tick-sampled, so low when that CPU idles often: see proc us/rt)
  proc us/rt     CPU time of the server process itself per round trip (schedstat)
  syscalls/rt    system calls the server process entered per round trip (perf)
  busy srv/cli   utilisation of the server CPU / the client CPU in the window
  srv wait       share of the window the server was runnable but another task held its
                 CPU (summed over the server's threads): above a few percent the machine
                 was busy and core us/rt is inflated
  ratios         ringlet / peer of the medians, and ringlet-stream / ringlet-uring (the
                 async face against the callback echo) (round trips/s: higher is better;
                 every other column: lower is better)",
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
             window: other tasks ran on CPU {} (load average now: {}). Prefer proc us/rt there, \
             and rerun on a quieter machine for throughput and latency.",
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
