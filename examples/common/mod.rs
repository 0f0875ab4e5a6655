//! What the example servers share: their command line (`--addr`, `--backend`, `--offload`,
//! `--batch-wait`, `--ring-window`),
//! stopping on SIGINT or SIGTERM, and the loop that turns the reactor until then. Each example
//! includes it with `mod common;` and uses the parts it needs.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ringlet::reactor::{BackendChoice, Handler, Reactor};

/// The backend named `auto`, `uring` or `epoll`.
pub fn backend(name: &str) -> Option<BackendChoice> {
    match name {
        "auto" => Some(BackendChoice::Auto),
        "uring" => Some(BackendChoice::Uring),
        "epoll" => Some(BackendChoice::Epoll),
        _ => None,
    }
}

/// A server's command line.
pub struct ServerArgs {
    /// `--addr HOST:PORT`, default 127.0.0.1:7000.
    pub addr: SocketAddr,
    /// `--backend auto|uring|epoll`, default auto.
    pub backend: BackendChoice,
    /// `--offload N`, when given.
    pub offload: Option<usize>,
    /// `--batch-wait US` ([`ringlet::reactor::Config::batch_wait`] in microseconds), when given.
    pub batch_wait: Option<Duration>,
    /// `--ring-window N` ([`ringlet::reactor::Config::ring_window`]), when given.
    pub ring_window: Option<u16>,
}

/// Parses `--addr`, `--backend`, `--offload`, `--batch-wait` and `--ring-window`; anything else,
/// or a bad value, prints `usage` and exits with status 2.
pub fn server_args(usage: &str) -> ServerArgs {
    let usage = || -> ! {
        eprintln!("{usage}");
        std::process::exit(2)
    };
    let mut out = ServerArgs {
        addr: "127.0.0.1:7000".parse().unwrap(),
        backend: BackendChoice::Auto,
        offload: None,
        batch_wait: None,
        ring_window: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--addr" => out.addr = v.parse().unwrap_or_else(|_| usage()),
            "--backend" => out.backend = backend(&v).unwrap_or_else(|| usage()),
            "--offload" => out.offload = Some(v.parse().unwrap_or_else(|_| usage())),
            "--batch-wait" => {
                out.batch_wait = Some(Duration::from_micros(v.parse().unwrap_or_else(|_| usage())))
            }
            "--ring-window" => out.ring_window = Some(v.parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    out
}

/// A flag that SIGINT and SIGTERM set.
pub fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).expect("signal handler");
    }
    stop
}

/// Turns `reactor` with `handler` until it stops, stopping it once `stop` is set. A reactor
/// error ends the process (status 1, the message prefixed with `prog`).
pub fn run_until_stopped<'r, H: Handler<'r>>(
    prog: &str,
    reactor: &mut Reactor<'r>,
    handler: &mut H,
    stop: &AtomicBool,
) {
    while !reactor.is_stopped() {
        if stop.load(Ordering::Relaxed) {
            reactor.stop();
        }
        // A bounded wait, so a signal is noticed even if the kernel restarts the wait.
        if let Err(e) = reactor.turn(handler, Some(Duration::from_millis(100))) {
            eprintln!("{prog}: {e}");
            std::process::exit(1);
        }
    }
}
