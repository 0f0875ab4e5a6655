//! The async twin of `echo`: the same server written as one task per connection, with
//! `ConnectionStream` and `relay`.
//!
//! `cargo run --release --example stream_echo -- --addr 127.0.0.1:7000 --backend auto|uring|epoll`
//!
//! Each accepted connection gets a task (up to `CONNS`; beyond that an accept is refused and
//! counted): it relays what it reads back to the connection through a 4 KiB buffer, starting
//! the send of each chunk before it reads again, until the peer ends its side; then the task
//! drops the connection, which closes it. A slow reader only slows its own task: the write waits for room in the slab
//! while the other tasks run. SIGINT or SIGTERM stops it gracefully and prints its counters.
//!
//! Compared with `echo`, every byte is copied once more (from the receive buffer into the
//! relay's buffer, then into the slab), and each receive goes through the task's state (its
//! connection state, scheduler header and future) before the reply is sent; `make bench`
//! measures what that costs (the `ringlet-stream` server).
//!
//! `--batch-wait US` and `--ring-window N` set `Config::batch_wait` and `Config::ring_window`,
//! as for `echo`.
//!
//! `--offload N` is accepted for the command line's sake and refused: the stream copies out of
//! the receive buffers, so there are no buffers to hand to worker threads (use `echo
//! --offload`).

mod common;

use ringlet::exec::{Connection, Executor, TaskStorage, future_size};
use ringlet::pool::StaticSlot;
use ringlet::reactor::{Config, Reactor, Resources};
use ringlet::stream::{ConnectionStream, relay};

/// Connections, receive buffers (and their size), write slab bytes per connection, timers: as
/// `echo`.
const CONNS: usize = 1024;
type Res = Resources<CONNS, 4096, 4096, 65536, 16>;

/// The relay buffer of each task.
const RING: usize = 4096;

/// One task: relay the connection into itself until the peer ends its side.
async fn echo(conn: Connection) {
    let mut stream = ConnectionStream::new(conn);
    let (mut rd, mut wr) = stream.split();
    let mut ring = [0u8; RING];
    let _ = relay(&mut rd, &mut wr, &mut ring).await;
}

/// In `.bss`, touched only as used: the loop's storage, and a task slot per connection, each
/// exactly as large as `echo`'s future.
static RESOURCES: StaticSlot<Res> = StaticSlot::new();
static TASKS: StaticSlot<TaskStorage<CONNS, { future_size(&echo) }>> = StaticSlot::new();

fn main() {
    let args = common::server_args(
        "usage: stream_echo [--addr HOST:PORT] [--backend auto|uring|epoll] [--batch-wait US] [--ring-window N]",
    );
    if args.offload.is_some() {
        eprintln!(
            "stream_echo: --offload is not supported: the stream copies out of the receive \
             buffers, so there are none to hand to workers (see echo --offload)"
        );
        std::process::exit(2);
    }
    let (addr, backend, batch_wait) = (args.addr, args.backend, args.batch_wait);
    let stop = common::stop_on_signals();
    let _ = ringlet::sys::socket::raise_nofile_limit(CONNS as u64 + 64);

    let config = Config {
        backend,
        batch_wait: batch_wait.unwrap_or(Config::default().batch_wait),
        ring_window: args.ring_window.unwrap_or(Config::default().ring_window),
        ..Config::default()
    };
    let resources = RESOURCES.take().expect("resources taken once");
    let mut reactor = Reactor::new(resources, config).unwrap_or_else(|e| {
        eprintln!("stream_echo: {e}");
        std::process::exit(1);
    });
    let listener = reactor.listen(addr).unwrap_or_else(|e| {
        eprintln!("stream_echo: listen on {addr}: {e}");
        std::process::exit(1);
    });
    let tasks = TASKS.take().expect("task storage taken once");
    let mut exec = Executor::new(&reactor, tasks, echo).unwrap_or_else(|e| {
        eprintln!("stream_echo: {e}");
        std::process::exit(1);
    });
    println!(
        "listening on {} ({:?})",
        reactor.listener_addr(listener).unwrap(),
        reactor.backend()
    );
    // `reactor.serve_tasks(tasks, echo)` does all of this in one call; the loop is spelled
    // out here only to notice the signals.
    common::run_until_stopped("stream_echo", &mut reactor, &mut exec, &stop);
    eprintln!("{:#?}", reactor.stats());
    eprintln!("{:#?}", exec.stats());
    let pool = reactor.pool().stats();
    eprintln!(
        "pool: {} buffers, {} leased at exit",
        pool.total, pool.leased
    );
}
