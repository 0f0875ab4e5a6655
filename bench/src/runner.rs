//! What the benchmark runners (`bench` for echo, `nats-bench` for NATS) share: the command line
//! and environment, stopping on signals, child processes that cannot outlive the runner, the load
//! generators' control protocol, CPU accounting from /proc, the interleaved rounds ([`Bench`],
//! [`run_rounds`]) and the report's cells.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{allowed_cpus, pin_to_cpu, raise_nofile_limit};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether SIGINT, SIGTERM or SIGHUP arrived.
pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// SIGINT, SIGTERM and SIGHUP only set a flag: every wait in the runner polls it, returns, and
/// the process guards stop the children on the way out.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: sigaction is plain data; the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// A child process that is stopped (SIGTERM, then SIGKILL) whenever the guard is dropped: on
/// every return path, on error and on panic. Children also get PR_SET_PDEATHSIG(SIGKILL), so
/// they die with the runner even if it is killed outright.
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr_tail: Arc<Mutex<(VecDeque<String>, bool)>>,
    status: Option<ExitStatus>,
}

const TAIL: usize = 20;

impl Proc {
    /// Starts `cmd` pinned to `cpu`, stdout read line by line ([`Proc::next_line`]), the tail
    /// of stderr kept for error messages, stdin piped when `with_stdin`.
    pub fn spawn(name: &str, cmd: Command, cpu: usize, with_stdin: bool) -> io::Result<Proc> {
        Self::spawn_with(name, cmd, cpu, with_stdin, false)
    }

    /// [`Proc::spawn`], and with `stderr_lines` the stderr lines are also handed to
    /// [`Proc::next_line`] (servers that log their readiness to stderr, like nats-server).
    pub fn spawn_with(
        name: &str,
        mut cmd: Command,
        cpu: usize,
        with_stdin: bool,
        stderr_lines: bool,
    ) -> io::Result<Proc> {
        // SAFETY: getpid is always safe to call.
        let parent = unsafe { libc::getpid() };
        cmd.stdin(if with_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
        // system calls (prctl, getppid, sched_setaffinity), with no allocation.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                pin_to_cpu(0, cpu)
            });
        }
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel::<String>();
        let err_tx = stderr_lines.then(|| tx.clone());
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr_tail = Arc::new(Mutex::new((VecDeque::new(), false)));
        let tail = Arc::clone(&stderr_tail);
        let err = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = &err_tx {
                    // The receiver may be gone (the runner stopped listening): only the tail
                    // matters then.
                    let _ = tx.send(line.clone());
                }
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                if t.0.len() == TAIL {
                    t.0.pop_front();
                }
                t.0.push_back(line);
            }
            tail.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        });
        Ok(Proc {
            name: name.to_string(),
            child,
            stdin,
            lines,
            stderr_tail,
            status: None,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status (if it exited) and the last lines the process wrote to stderr, for
    /// error messages.
    pub fn stderr(&mut self) -> String {
        // A dying process may still be writing: give it a moment to exit, and the reader thread
        // time to reach the end of its stderr.
        let exited = self.wait_for(Duration::from_millis(300)).is_some();
        let end = Instant::now() + Duration::from_secs(if exited { 2 } else { 0 });
        loop {
            let done = self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner()).1;
            if done || Instant::now() >= end {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut msg = match self.status {
            Some(st) => format!("\n    {} {st}", self.name),
            None => String::new(),
        };
        let t = self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
        if !t.0.is_empty() {
            let lines: Vec<&str> = t.0.iter().map(String::as_str).collect();
            msg.push_str(&format!(
                "\n    {} stderr: {}",
                self.name,
                lines.join("\n    ")
            ));
        }
        msg
    }

    /// The exit status once it exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// The next stdout line, within `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Result<String, Fail> {
        let end = Instant::now() + timeout;
        loop {
            if stopping() {
                return Err(Fail::Interrupted);
            }
            match self.lines.recv_timeout(Duration::from_millis(20)) {
                Ok(l) => return Ok(l),
                Err(RecvTimeoutError::Disconnected) => {
                    let detail = self.stderr();
                    return Err(Fail::Run(format!(
                        "{} closed its output{detail}",
                        self.name
                    )));
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() >= end => {
                    let detail = self.stderr();
                    return Err(Fail::Run(format!(
                        "{} said nothing for {:.0} s{detail}",
                        self.name,
                        timeout.as_secs_f64()
                    )));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Writes `line` and a newline to the process's stdin.
    pub fn send_line(&mut self, line: &str) -> Result<(), Fail> {
        let stdin = self.stdin.as_mut().expect("piped stdin");
        let r = stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| stdin.flush());
        r.map_err(|e| {
            let detail = self.stderr();
            Fail::Run(format!("writing to {}: {e}{detail}", self.name))
        })
    }

    /// Sends `sig` unless it already exited.
    pub fn signal(&mut self, sig: libc::c_int) {
        if self.exited().is_none() {
            // SAFETY: the child has not been reaped (no exit status yet), so its pid is still
            // ours.
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        }
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `sig`, waits up to `grace`, then kills. Returns the status and whether it exited
    /// by itself within the grace period.
    pub fn stop(&mut self, sig: libc::c_int, grace: Duration) -> (Option<ExitStatus>, bool) {
        self.stdin = None;
        self.signal(sig);
        if let Some(s) = self.wait_for(grace) {
            return (Some(s), true);
        }
        let _ = self.child.kill();
        (self.child.wait().ok(), false)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.stop(libc::SIGTERM, Duration::from_secs(1));
        }
    }
}

// ---------------------------------------------------------------- measurements

/// Why a run did not produce a result.
pub enum Fail {
    /// The server did not come up: skip it for the rest of the benchmark.
    Start(String),
    /// This run failed (verification error, crash, timeout).
    Run(String),
    /// SIGINT, SIGTERM or SIGHUP arrived.
    Interrupted,
}

#[derive(Clone, Copy, Default)]
/// Jiffies of one CPU from /proc/stat.
pub struct CpuTimes {
    /// Busy jiffies.
    pub busy: u64,
    /// Busy, idle and iowait jiffies.
    pub total: u64,
}

/// Busy and total jiffies of `cpus` from /proc/stat. Busy is user + nice + system + irq +
/// softirq + steal (guest time is already inside user); total adds idle and iowait.
pub fn proc_stat(cpus: [usize; 2]) -> io::Result<[CpuTimes; 2]> {
    let text = fs::read_to_string("/proc/stat")?;
    let mut out = [CpuTimes::default(); 2];
    let mut found = [false; 2];
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(name) = f.next() else { continue };
        let Some(n) = name
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let v: Vec<u64> = f.map(|x| x.parse().unwrap_or(0)).collect();
        if v.len() < 8 {
            continue;
        }
        let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
        for (k, &c) in cpus.iter().enumerate() {
            if c == n {
                out[k] = CpuTimes {
                    busy,
                    total: busy + v[3] + v[4],
                };
                found[k] = true;
            }
        }
    }
    if found != [true, true] {
        return Err(io::Error::other("CPU line missing in /proc/stat"));
    }
    Ok(out)
}

/// CPU time and run-queue wait time (runnable, but another task had the CPU) of every thread of
/// process `pid` in nanoseconds, from schedstat, if readable.
pub fn process_cpu_ns(pid: u32) -> Option<(u64, u64)> {
    let (mut run, mut wait) = (0, 0);
    for t in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let s = fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
        let mut f = s.split_ascii_whitespace().map(|x| x.parse::<u64>().ok());
        run += f.next()??;
        wait += f.next()??;
    }
    Some((run, wait))
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The median of `v` (sorts it); `v` must not be empty.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Three significant digits, with k/M suffixes above 10 000.
pub fn num(x: f64) -> String {
    let (v, suffix) = if x >= 1e7 {
        (x / 1e6, "M")
    } else if x >= 1e4 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    format!("{s}{suffix}")
}

/// Median, minimum and maximum of a cell's runs.
pub struct Stat {
    /// Median.
    pub med: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

/// The [`Stat`] of the values present, `None` when there is none.
pub fn stat(vals: &[Option<f64>]) -> Option<Stat> {
    let mut v: Vec<f64> = vals.iter().flatten().copied().collect();
    if v.is_empty() {
        return None;
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Stat {
        med: median(&mut v),
        min,
        max,
    })
}

/// A table cell: `median [min-max]`, or `n/a`.
pub fn cell(s: &Option<Stat>) -> String {
    match s {
        None => "n/a".into(),
        Some(s) if s.min == s.max => num(s.med),
        Some(s) => format!("{} [{}-{}]", num(s.med), num(s.min), num(s.max)),
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| {
            l.split_ascii_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".into())
}

/// Kernel, CPU model and CPU count, for the report's first line.
pub fn host_line() -> String {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    // SAFETY: sysconf is always safe to call. (available_parallelism would report the
    // runner's own affinity, one CPU.)
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    format!("Linux {}, {cpu}, {n} CPUs", kernel.trim())
}

/// Removes the runner's temporary directory on the way out.
pub struct TmpDir(pub PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- command line

/// A runner's command line: its name and usage text, for messages.
pub struct Cli {
    /// The program name, first word of every message.
    pub prog: &'static str,
    /// The usage text, printed by `--help` and after every command-line error.
    pub usage: &'static str,
}

impl Cli {
    /// Prints `PROG: MSG` and the usage to stderr and exits with status 2.
    pub fn usage_exit(&self, msg: &str) -> ! {
        eprintln!("{}: {msg}\n{}", self.prog, self.usage);
        std::process::exit(2)
    }

    /// `v` (the value of `what`) parsed as a `T`, or [`Cli::usage_exit`].
    pub fn num<T: std::str::FromStr>(&self, what: &str, v: &str) -> T {
        v.trim()
            .parse()
            .unwrap_or_else(|_| self.usage_exit(&format!("bad value for {what}: {v:?}")))
    }

    /// The comma list `v` as elements of `all` (found by `key`), or [`Cli::usage_exit`] naming
    /// the choices.
    pub fn list<T: Copy>(
        &self,
        what: &str,
        v: &str,
        all: &[T],
        key: impl Fn(&T) -> &str,
    ) -> Vec<T> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                *all.iter().find(|x| key(x) == s).unwrap_or_else(|| {
                    let names: Vec<&str> = all.iter().map(&key).collect();
                    self.usage_exit(&format!(
                        "unknown {what} {s:?} (one of {})",
                        names.join(", ")
                    ))
                })
            })
            .collect()
    }

    /// The directory of the running binary, where the other binaries of the crate are.
    pub fn bin_dir(&self) -> PathBuf {
        let exe = std::env::current_exe()
            .unwrap_or_else(|e| self.usage_exit(&format!("current_exe: {e}")));
        exe.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    /// Reads the command line: whether `--quick` is given, and the `(flag, value)` settings in
    /// the order they apply: first the environment variables of `env` (pairs of variable and
    /// flag; empty values are ignored), then the flags, so flags win. `--help` prints the
    /// usage and exits; every other argument must be a flag followed by its value.
    pub fn settings(&self, env: &[(&str, &str)]) -> (bool, Vec<(String, String)>) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick");
        let mut settings: Vec<(String, String)> = Vec::new();
        for &(var, flag) in env {
            if let Ok(v) = std::env::var(var)
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
                    println!("{}", self.usage);
                    std::process::exit(0);
                }
                f if f.starts_with("--") => {
                    let v = it
                        .next()
                        .unwrap_or_else(|| self.usage_exit(&format!("{f} needs a value")));
                    settings.push((a, v));
                }
                other => self.usage_exit(&format!("unknown argument {other:?}")),
            }
        }
        (quick, settings)
    }

    /// Process set-up of a runner: checks that the server and client CPUs are two distinct
    /// usable ones, pins the runner to the client CPU, raises the descriptor limit (children
    /// inherit it). Returns the new descriptor limit (`None` when it could not be raised; said
    /// on stderr), or the exit status when the CPUs do not work (said on stderr).
    pub fn setup_cpus(&self, server_cpu: usize, client_cpu: usize) -> Result<Option<u64>, i32> {
        let prog = self.prog;
        let cpus = allowed_cpus();
        if server_cpu == client_cpu || !cpus.contains(&server_cpu) || !cpus.contains(&client_cpu) {
            eprintln!(
                "{prog}: needs two distinct usable CPUs for server ({server_cpu}) and client \
                 ({client_cpu}); usable: {cpus:?} (set BENCH_SERVER_CPU / BENCH_CLIENT_CPU)"
            );
            return Err(2);
        }
        if let Err(e) = pin_to_cpu(0, client_cpu) {
            eprintln!("{prog}: cannot pin to CPU {client_cpu}: {e}");
            return Err(2);
        }
        match raise_nofile_limit() {
            Ok(n) => Ok(Some(n)),
            Err(e) => {
                eprintln!("{prog}: cannot raise RLIMIT_NOFILE: {e}");
                Ok(None)
            }
        }
    }
}

// ---------------------------------------------------------------- the load generator's marks

/// One `mark` answer of a load generator (`mark msgs=M ... ns=T p50=.. p90=.. p99=..`): the
/// fields the runners read, 0 where the line does not carry them.
#[derive(Default)]
pub struct Mark {
    /// Messages echoed or delivered in the window.
    pub msgs: u64,
    /// Requests answered in the window (NATS request/reply).
    pub reqs: u64,
    /// Length of the window, ns.
    pub ns: u64,
    /// Median latency, ns.
    pub p50: u64,
    /// 90th percentile latency, ns.
    pub p90: u64,
    /// 99th percentile latency, ns.
    pub p99: u64,
}

impl Mark {
    /// Parses a `mark` line; `None` when it is not one (unknown keys are passed over).
    pub fn parse(line: &str) -> Option<Mark> {
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
}

impl Proc {
    /// Reads stdout lines until one satisfies `ready`, within `timeout`. A silent or dead
    /// process is a start failure, named after the awaited line `what`.
    pub fn await_line(
        &mut self,
        timeout: Duration,
        what: &str,
        mut ready: impl FnMut(&str) -> bool,
    ) -> Result<String, Fail> {
        let ready_by = Instant::now() + timeout;
        loop {
            let left = ready_by.saturating_duration_since(Instant::now());
            let line = self.next_line(left).map_err(|e| match e {
                Fail::Run(m) => Fail::Start(format!("no `{what}` line: {m}")),
                other => other,
            })?;
            if ready(&line) {
                return Ok(line);
            }
        }
    }

    /// Waits (up to `timeout`) for a load generator's `ready` line.
    pub fn expect_ready(&mut self, timeout: Duration) -> Result<(), Fail> {
        let line = self.next_line(timeout)?;
        if line.trim() != "ready" {
            let detail = self.stderr();
            return Err(Fail::Run(format!(
                "{} said {line:?} instead of ready{detail}",
                self.name
            )));
        }
        Ok(())
    }

    /// Asks a load generator for a `mark` and reads its answer.
    pub fn mark(&mut self) -> Result<Mark, Fail> {
        self.send_line("mark")?;
        let line = self.next_line(Duration::from_secs(10))?;
        Mark::parse(&line).ok_or_else(|| {
            let detail = self.stderr();
            Fail::Run(format!("{} answered {line:?} to mark{detail}", self.name))
        })
    }

    /// Ends a load generator by closing its input; a failure unless it exits by itself, with
    /// status 0, within 5 s.
    pub fn finish_loadgen(&mut self) -> Result<(), Fail> {
        let (st, by_itself) = self.stop(0, Duration::from_secs(5));
        if !by_itself || !st.is_some_and(|s| s.success()) {
            let st = st.map_or("killed".to_string(), |s| s.to_string());
            let detail = self.stderr();
            return Err(Fail::Run(format!(
                "{} did not exit cleanly ({st}){detail}",
                self.name
            )));
        }
        Ok(())
    }
}

/// [`proc_stat`] of the server and client CPUs, as a run's failure when unreadable.
pub fn cpu_snapshot(server_cpu: usize, client_cpu: usize) -> Result<[CpuTimes; 2], Fail> {
    proc_stat([server_cpu, client_cpu]).map_err(|e| Fail::Run(format!("reading /proc/stat: {e}")))
}

/// Between two [`cpu_snapshot`]s: busy seconds of the server CPU, and the utilisation (0..=1)
/// of the server and of the client CPU.
pub fn cpu_use(s0: &[CpuTimes; 2], s1: &[CpuTimes; 2]) -> (f64, f64, f64) {
    // SAFETY: sysconf is always safe to call.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let d = |k: usize| {
        let busy = s1[k].busy.saturating_sub(s0[k].busy) as f64;
        let total = s1[k].total.saturating_sub(s0[k].total) as f64;
        (busy, if total > 0.0 { busy / total } else { 0.0 })
    };
    let (busy0, util0) = d(0);
    let (_, util1) = d(1);
    (busy0 / hz, util0, util1)
}

/// How busy the machine was in a run's window.
#[derive(Clone, Copy, Default)]
pub struct Busy {
    /// Utilisation of the server CPU.
    pub server: f64,
    /// Utilisation of the client CPU.
    pub client: f64,
    /// Share of the window the server was runnable but waiting for its CPU (other tasks ran).
    pub server_wait: Option<f64>,
}

impl Busy {
    /// `busy S%/C%, srv wait W%`, for the line of one run.
    pub fn summary(&self) -> String {
        format!(
            "busy {:.0}%/{:.0}%, srv wait {}",
            self.server * 100.0,
            self.client * 100.0,
            self.server_wait
                .map_or("n/a".into(), |w| format!("{:.0}%", w * 100.0)),
        )
    }

    /// `S%/C%, W%`: the medians of a cell's runs, for the table.
    pub fn cell(runs: &[Busy]) -> String {
        let pct =
            |v: Vec<Option<f64>>| stat(&v).map_or("?".into(), |s| format!("{:.0}%", s.med * 100.0));
        format!(
            "{}/{}, {}",
            pct(runs.iter().map(|b| Some(b.server)).collect()),
            pct(runs.iter().map(|b| Some(b.client)).collect()),
            pct(runs.iter().map(|b| b.server_wait).collect()),
        )
    }
}

// ---------------------------------------------------------------- the interleaved rounds

/// One benchmark as the round loop of [`run_rounds`] drives it.
pub trait Bench {
    /// A server under test.
    type Server: Copy + Ord;
    /// The results of one run.
    type Metrics;
    /// The server's name in the report.
    fn server_name(&self, server: Self::Server) -> &'static str;
    /// One run of row `row` (an index into the selected rows) against `server`.
    fn run_one(&mut self, server: Self::Server, row: usize) -> Result<Self::Metrics, Fail>;
    /// Prints a successful run's results (the rest of its progress line).
    fn print_result(&self, row: usize, m: &Self::Metrics);
    /// How busy the machine was in that run.
    fn busy(m: &Self::Metrics) -> Busy;
    /// Called after each run's line is printed (notes of the run).
    fn after_run(&mut self) {}
    /// What the report's table says for a server skipped for `why`.
    fn skipped_cell(&self, why: &str) -> String {
        why.to_string()
    }
}

/// What [`run_rounds`] gathered.
pub struct Outcome<S, M> {
    /// Results per (row, server), one per successful run.
    pub results: BTreeMap<(usize, S), Vec<M>>,
    /// Why a (row, server) has no (or no further) result.
    pub problems: BTreeMap<(usize, S), String>,
    /// Some run failed.
    pub failed: bool,
    /// A signal ended the rounds early.
    pub interrupted: bool,
}

/// Prints what the rounds will run: the skipped servers, a note when there are too few runs
/// for the medians to say much, and an estimate of the time (`per_run` seconds each).
pub fn print_plan<B: Bench>(
    b: &B,
    runs: usize,
    rows: usize,
    servers: &[B::Server],
    skip: &BTreeMap<B::Server, String>,
    per_run: f64,
) {
    for (s, why) in skip {
        println!("{}: {why}", b.server_name(*s));
    }
    if runs < 5 {
        println!("note: fewer than 5 runs: medians and spreads are indicative only");
    }
    let active = servers.iter().filter(|s| !skip.contains_key(s)).count();
    println!(
        "about {:.0} s: {rows} rows x {active} servers x {runs} runs",
        per_run * (rows * active * runs) as f64,
    );
}

/// Runs `runs` rounds; each runs every row (`rows` are their keys, printed `key_width` wide)
/// against every server not in `skip`, with the server order rotated per round so slow drift
/// of the machine spreads over all servers. A server that fails to start twice in a row is
/// skipped from then on; a (row, server) whose run fails is not run again. Stops early on
/// SIGINT, SIGTERM or SIGHUP. Skipped servers get their reason in `problems` for every row.
pub fn run_rounds<B: Bench>(
    b: &mut B,
    runs: usize,
    rows: &[&str],
    key_width: usize,
    servers: &[B::Server],
    skip: &mut BTreeMap<B::Server, String>,
) -> Outcome<B::Server, B::Metrics> {
    let mut out = Outcome {
        results: BTreeMap::new(),
        problems: BTreeMap::new(),
        failed: false,
        interrupted: false,
    };
    let active = servers.iter().filter(|s| !skip.contains_key(s)).count();
    let total = rows.len() * active * runs;
    let mut n = 0;
    'rounds: for round in 0..runs {
        for (ri, key) in rows.iter().enumerate() {
            let k = round % servers.len();
            let order: Vec<B::Server> = servers[k..].iter().chain(&servers[..k]).copied().collect();
            for server in order {
                if skip.contains_key(&server) || out.problems.contains_key(&(ri, server)) {
                    continue;
                }
                n += 1;
                print!(
                    "[{n}/{total}] {key:<key_width$} {:<14} run {}: ",
                    b.server_name(server),
                    round + 1
                );
                let _ = io::stdout().flush();
                // A start failure may be transient (the free port was taken meanwhile): one
                // more try before the server is given up.
                let mut res = b.run_one(server, ri);
                if let Err(Fail::Start(e)) = &res {
                    print!(
                        "start failed ({}), retrying: ",
                        e.lines().next().unwrap_or("")
                    );
                    let _ = io::stdout().flush();
                    res = b.run_one(server, ri);
                }
                match res {
                    Ok(m) => {
                        b.print_result(ri, &m);
                        out.results.entry((ri, server)).or_default().push(m);
                    }
                    Err(Fail::Interrupted) => {
                        println!("interrupted");
                        out.interrupted = true;
                        break 'rounds;
                    }
                    Err(Fail::Start(e)) => {
                        println!("FAILED to start: {e}");
                        out.failed = true;
                        skip.insert(server, format!("FAILED to start: {e}"));
                    }
                    Err(Fail::Run(e)) => {
                        println!("FAILED: {e}");
                        out.failed = true;
                        out.problems.insert((ri, server), format!("FAILED: {e}"));
                    }
                }
                b.after_run();
                if stopping() {
                    out.interrupted = true;
                    break 'rounds;
                }
            }
        }
    }
    for ri in 0..rows.len() {
        for (s, why) in skip.iter() {
            out.problems
                .entry((ri, *s))
                .or_insert_with(|| b.skipped_cell(why));
        }
    }
    out
}

/// The reason a table cell shows for a (row, server) without results: the most telling line
/// of `why`, a line with an `error:` (the load generator's or the server's, without the
/// `LOADGEN stderr: ` prefix), else the first.
pub fn short_reason<'a>(why: &'a str, loadgen: &str) -> &'a str {
    let prefix = format!("{loadgen} stderr: ");
    why.lines()
        .find(|l| l.contains("error:"))
        .map(|l| l.trim().trim_start_matches(prefix.as_str()))
        .or_else(|| why.lines().next())
        .unwrap_or(why)
}

/// Appends the cells of one server's line in a row's table: per column (a getter and a width)
/// the [`cell`] of the runs `ms`, then with `busy` the [`Busy::cell`], then a note when fewer
/// than `runs` runs have a result. Without results: the reason `why` ([`short_reason`] of it;
/// `loadgen` names the load generator). Returns the columns' stats, `None` without results.
pub fn table_cells<M>(
    line: &mut String,
    ms: Option<&Vec<M>>,
    cols: impl Iterator<Item = (fn(&M) -> Option<f64>, usize)>,
    busy: Option<fn(&M) -> Busy>,
    runs: usize,
    why: Option<&String>,
    loadgen: &str,
) -> Option<Vec<Option<Stat>>> {
    let Some(ms) = ms.filter(|ms| !ms.is_empty()) else {
        line.push_str(short_reason(
            why.map_or("no result", String::as_str),
            loadgen,
        ));
        return None;
    };
    let mut stats = Vec::new();
    for (get, w) in cols {
        let s = stat(&ms.iter().map(get).collect::<Vec<_>>());
        line.push_str(&format!("{:<w$}", cell(&s)));
        stats.push(s);
    }
    if let Some(busy) = busy {
        line.push_str(&Busy::cell(&ms.iter().map(busy).collect::<Vec<_>>()));
    }
    if ms.len() < runs {
        line.push_str(&format!("  ({} of {runs} runs)", ms.len()));
    }
    Some(stats)
}

/// The end of a report: a warning when the server waited for its CPU in some runs (with
/// `advice` on what to do), the total time, and the exit status (130 interrupted, 1 a run
/// failed, 0 otherwise).
pub fn finish<B: Bench>(
    out: &Outcome<B::Server, B::Metrics>,
    server_cpu: usize,
    advice: &str,
    started: Instant,
) -> i32 {
    let noisy = out
        .results
        .values()
        .flatten()
        .filter(|m| B::busy(m).server_wait.is_some_and(|w| w > 0.05))
        .count();
    if noisy > 0 {
        println!();
        println!(
            "warning: in {noisy} of {} runs the server waited for its CPU more than 5% of the \
             window: other tasks ran on CPU {server_cpu} (load average now: {}). {advice} on a \
             quieter machine for throughput and latency.",
            out.results.values().map(Vec::len).sum::<usize>(),
            loadavg()
        );
    }
    println!();
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    if out.interrupted {
        println!("interrupted: results above are partial");
        return 130;
    }
    if out.failed {
        println!("some runs FAILED (see above)");
        return 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_lines_of_both_load_generators_parse() {
        let echo = Mark::parse("mark msgs=32 batches=2 ns=1000 p50=5 p90=6 p99=7 p999=8 max=9")
            .expect("echo loadgen's mark");
        assert_eq!((echo.msgs, echo.reqs, echo.ns), (32, 0, 1000));
        assert_eq!((echo.p50, echo.p90, echo.p99), (5, 6, 7));
        let nats = Mark::parse("mark msgs=4 pubs=2 reqs=2 ns=10 p50=1 p90=2 p99=3 p999=4 max=5")
            .expect("nats-loadgen's mark");
        assert_eq!((nats.msgs, nats.reqs, nats.ns, nats.p99), (4, 2, 10, 3));
        assert!(Mark::parse("ready").is_none());
        assert!(Mark::parse("mark msgs=x").is_none());
        assert!(Mark::parse("mark msgs").is_none());
    }

    #[test]
    fn short_reason_prefers_the_error_line() {
        let why = "FAILED: loadgen did not exit cleanly (exit status: 2)\n    loadgen stderr: \
                   loadgen: error: echo mismatch";
        assert_eq!(
            short_reason(why, "loadgen"),
            "loadgen: error: echo mismatch"
        );
        assert_eq!(short_reason("FAILED: a\nb", "loadgen"), "FAILED: a");
    }
}
