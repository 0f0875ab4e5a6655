//! Shared pieces of ringlet's echo benchmark.
//!
//! The crate holds four binaries: the peer echo servers `tokio-echo` and `monoio-echo`, the
//! verifying load generator `loadgen`, and the runner `bench` that `make bench` starts. This
//! library is what they share: command-line helpers, process set-up (CPU affinity, file limits,
//! signals), the deterministic payload, and a latency histogram. See `bench/README.md`.

pub mod runner;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// Read buffer of the peer servers, in bytes. Larger than the biggest message the scenarios send
/// (4 KiB) and than the biggest pipelined batch (16 x 64 B), so one read can take a whole message
/// or batch, as ringlet's pool buffers can.
pub const SERVER_BUF: usize = 4096;

/// Parses a server's command line: `--addr IP:PORT` (required). Exits with a usage message on
/// anything else. `name` is the program name for messages.
pub fn server_addr_from_args(name: &str) -> SocketAddr {
    let mut args = std::env::args().skip(1);
    let mut addr = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => {
                let v = args.next().unwrap_or_default();
                match v.parse::<SocketAddr>() {
                    Ok(x) => addr = Some(x),
                    Err(e) => usage_exit(name, &format!("bad --addr {v:?}: {e}")),
                }
            }
            "-h" | "--help" => {
                println!("usage: {name} --addr IP:PORT");
                std::process::exit(0);
            }
            other => usage_exit(name, &format!("unknown argument {other:?}")),
        }
    }
    addr.unwrap_or_else(|| usage_exit(name, "--addr IP:PORT is required"))
}

fn usage_exit(name: &str, msg: &str) -> ! {
    eprintln!("{name}: {msg}\nusage: {name} --addr IP:PORT");
    std::process::exit(2);
}

/// Prints the readiness line the runner waits for (`listening on ADDR`) and flushes stdout.
pub fn announce_listening(addr: SocketAddr) {
    let mut out = io::stdout().lock();
    // A closed stdout only means nobody is waiting for the line.
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (256+ connections plus their peers need more
/// than a default soft limit of 1024 on some systems). Returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// Pins thread or process `pid` (0: the calling thread) to one CPU. Async-signal-safe (a single
/// system call on a stack value), so it may be called between fork and exec.
pub fn pin_to_cpu(pid: libc::pid_t, cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `cpu` is below CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let r = unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CPUs the calling thread may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Makes SIGINT and SIGTERM end the process with exit status 0. Call it first thing in `main`,
/// before any other thread starts: it blocks both signals in the calling thread (threads started
/// later inherit the mask) and starts one thread that waits for them in `sigwait` and exits.
/// That thread sleeps in the kernel for the whole run: it makes no system calls and takes no CPU
/// while a benchmark is measured. Sockets are closed by the kernel at exit.
pub fn exit_on_sigint_sigterm() {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let set_addr = set;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = set_addr;
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is an initialised sigset_t and `sig` is writable.
            while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
            let _ = io::stdout().flush();
            std::process::exit(0);
        })
        .expect("spawn the signal thread");
}

/// The bytes of message batch `batch` on connection `conn`: a splitmix64 stream seeded by both,
/// so every connection and every batch carries different bytes and an echo that comes back on the
/// wrong connection, out of order, stale or altered is caught.
pub fn fill_payload(conn: u32, batch: u64, buf: &mut [u8]) {
    let mut state = (u64::from(conn) << 40) ^ batch ^ 0x005e_ed0f_e140_u64;
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let x = splitmix64(&mut state).to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&x[..n]);
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A log-linear histogram of durations in nanoseconds: exact below 64 ns, then 64 buckets per
/// power of two (at most 1/64 = 1.6 % relative error). Fixed size, no allocation after creation.
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * SUB) as usize;

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // >= SUB_BITS
        let shift = e - SUB_BITS;
        let sub = (v >> shift) & (SUB - 1);
        (SUB + u64::from(shift) * SUB + sub) as usize
    }

    /// The middle of bucket `i`'s value range.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let k = i - SUB;
        let shift = k / SUB;
        let low = (SUB + k % SUB) << shift;
        low + ((1u64 << shift) >> 1)
    }

    /// Records one duration.
    pub fn record(&mut self, ns: u64) {
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
        self.max = self.max.max(ns);
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Largest recorded value (exact), 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i).min(self.max);
            }
        }
        self.max
    }

    /// Forgets every recorded value.
    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.max = 0;
    }
}

/// Sleeps for `d` in short slices, returning early (false) when `stop` returns true.
pub fn sleep_unless(d: Duration, stop: impl Fn() -> bool) -> bool {
    let end = std::time::Instant::now() + d;
    loop {
        if stop() {
            return false;
        }
        let now = std::time::Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_ordered_and_tight() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 20, 1 << 40, u64::MAX / 3, u64::MAX]) {
            let i = Histogram::index(v);
            assert!(i < BUCKETS);
            assert!(i >= last, "index not monotonic at {v}");
            last = i;
            let mid = Histogram::value(i);
            let err = (mid as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err <= 1.0 / 64.0 + 1e-9, "v={v} mid={mid}");
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.02, "{p99}");
        assert_eq!(h.max(), 1_000_000);
        h.clear();
        assert_eq!(h.quantile(0.5), 0);
    }

    #[test]
    fn payload_differs_by_conn_and_batch() {
        let mut a = [0u8; 67];
        let mut b = [0u8; 67];
        fill_payload(1, 2, &mut a);
        fill_payload(1, 2, &mut b);
        assert_eq!(a, b);
        fill_payload(2, 2, &mut b);
        assert_ne!(a, b);
        fill_payload(1, 3, &mut b);
        assert_ne!(a, b);
    }
}
