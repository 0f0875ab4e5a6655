//! What the benchmark runners (`bench` for echo, `nats-bench` for NATS) share: stopping on
//! signals, child processes that cannot outlive the runner, CPU accounting from /proc, and the
//! report's cells.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pin_to_cpu;

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
