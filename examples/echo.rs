//! An echo server on ringlet's reactor.
//!
//! `cargo run --release --example echo -- --addr 127.0.0.1:7000 --backend auto|uring|epoll`
//!
//! Every byte received is written back. When a connection's write slab is full (its peer reads
//! slower than it writes), the server keeps the leases it could not write, pauses that
//! connection's receive, and continues on `on_flushed`: nothing is lost and nothing blocks the
//! other connections. SIGINT or SIGTERM stops it gracefully and prints its counters.
//!
//! `--batch-wait US` sets `Config::batch_wait` (microseconds; 0 turns the batched wait off) and
//! `--ring-window N` sets `Config::ring_window` (io_uring receive buffers published at once; 0,
//! the default, publishes all), for measuring their effect: the counters printed at exit show
//! the window reached, its widenings and the starvation pauses.
//!
//! `--offload N` hands every received buffer, once echoed, to one of N worker threads as a
//! `SendLease`; the worker checksums it and drops it there, and the buffer finds its way back
//! to the loop's pool. At exit the counters show every buffer back.

mod common;

use std::sync::mpsc;

use ringlet::pool::{Lease, SendLease, StaticSlot};
use ringlet::reactor::{Config, ConnError, ConnId, Context, Handler, Reactor, Resources};

/// Connections, receive buffers (and their size), write slab bytes per connection, timers.
const CONNS: usize = 1024;
type Res = Resources<CONNS, 4096, 4096, 65536, 16>;

/// In `.bss`: about 64 MiB of slabs and 16 MiB of buffers, touched only as used.
static RESOURCES: StaticSlot<Res> = StaticSlot::new();

/// Leases a connection could not write yet, oldest first; workers to hand written ones to.
struct Echo {
    stash: Vec<Vec<Lease<'static>>>,
    workers: Vec<mpsc::Sender<SendLease<'static>>>,
    next: usize,
}

impl Echo {
    /// The lease was echoed: drop it here, or hand it to a worker.
    fn done(&mut self, cx: &mut Context<'_, 'static>, lease: Lease<'static>) {
        if self.workers.is_empty() {
            return;
        }
        if let Ok(travelling) = cx.send_lease(lease) {
            self.next = (self.next + 1) % self.workers.len();
            let _ = self.workers[self.next].send(travelling);
        }
    }

    /// Write what was stashed for `conn`; resume it once everything is written.
    fn drain(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        let mut q = std::mem::take(&mut self.stash[conn.index()]);
        let mut written = 0;
        for lease in q.iter() {
            if cx.write(conn, lease.as_slice()).is_err() {
                break;
            }
            written += 1;
        }
        for lease in q.drain(..written) {
            self.done(cx, lease);
        }
        let _ = cx.flush(conn);
        if q.is_empty() {
            let _ = cx.resume(conn);
        }
        self.stash[conn.index()] = q;
    }
}

impl Handler<'static> for Echo {
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        let q = &mut self.stash[conn.index()];
        if !q.is_empty() {
            q.push(lease); // keep the order behind what is already waiting
            return;
        }
        match cx.write(conn, lease.as_slice()) {
            Ok(()) => {
                let _ = cx.flush(conn);
                self.done(cx, lease);
            }
            Err(ConnError::WouldBlock) => {
                q.push(lease);
                let _ = cx.pause(conn);
                let _ = cx.flush(conn);
            }
            Err(_) => cx.abort(conn),
        }
    }

    fn on_read_closed(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        if self.stash[conn.index()].is_empty() {
            cx.close(conn);
        }
    }

    fn on_flushed(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        self.drain(cx, conn);
    }

    fn on_close(
        &mut self,
        _: &mut Context<'_, 'static>,
        conn: ConnId,
        _: ringlet::reactor::CloseReason,
    ) {
        self.stash[conn.index()].clear();
    }
}

fn main() {
    let args = common::server_args(
        "usage: echo [--addr HOST:PORT] [--backend auto|uring|epoll] [--offload N] [--batch-wait US] [--ring-window N]",
    );
    let (addr, backend) = (args.addr, args.backend);
    let offload = args.offload.unwrap_or(0);
    let stop = common::stop_on_signals();
    let _ = ringlet::sys::socket::raise_nofile_limit(CONNS as u64 + 64);

    let resources = RESOURCES.take().expect("resources taken once");
    let config = Config {
        backend,
        batch_wait: args.batch_wait.unwrap_or(Config::default().batch_wait),
        ring_window: args.ring_window.unwrap_or(Config::default().ring_window),
        ..Config::default()
    };
    let mut reactor = Reactor::new(resources, config).unwrap_or_else(|e| {
        eprintln!("echo: {e}");
        std::process::exit(1);
    });
    let listener = reactor.listen(addr).unwrap_or_else(|e| {
        eprintln!("echo: listen on {addr}: {e}");
        std::process::exit(1);
    });
    println!(
        "listening on {} ({:?})",
        reactor.listener_addr(listener).unwrap(),
        reactor.backend()
    );

    let mut joins = Vec::new();
    let workers = (0..offload)
        .map(|_| {
            let (tx, rx) = mpsc::channel::<SendLease<'static>>();
            joins.push(std::thread::spawn(move || {
                let mut sum = 0u64;
                for lease in rx {
                    // Work on this thread, then drop: the buffer goes home from here.
                    sum = lease
                        .as_slice()
                        .iter()
                        .fold(sum, |a, &x| a.rotate_left(7) ^ u64::from(x));
                }
                sum
            }));
            tx
        })
        .collect();
    let mut echo = Echo {
        stash: (0..CONNS).map(|_| Vec::new()).collect(),
        workers,
        next: 0,
    };
    common::run_until_stopped("echo", &mut reactor, &mut echo, &stop);
    // Let the workers finish, then take back what they returned after the loop stopped.
    drop(echo);
    for j in joins {
        let _ = j.join();
    }
    reactor.reclaim_returned();
    let pool = reactor.pool().stats();
    eprintln!("{:#?}", reactor.stats());
    eprintln!(
        "pool: {} buffers, {} leased at exit",
        pool.total, pool.leased
    );
}
