//! The smallest complete program that embeds ringlet's loop: static resources, a handler
//! speaking a small line protocol, a periodic timer, and a clean stop on SIGINT/SIGTERM.
//!
//! `cargo run --example embed -- 127.0.0.1:7001`, then `nc 127.0.0.1 7001` and type:
//!
//! - `ping` -> `pong`
//! - `count` -> how many lines this connection sent
//! - `quit` -> `bye`, and the server closes the connection (after flushing `bye`)
//! - anything else -> `? <line>`
//!
//! Every connected client also receives `tick N` once a second from a periodic timer.
//! Lines longer than 128 bytes get `line too long` and the connection is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use heapless::Vec as HVec;
use ringlet::pool::{Lease, StaticSlot};
use ringlet::reactor::timer::TimerId;
use ringlet::reactor::{Config, ConnId, Context, Handler, ListenerId, Reactor, Resources};

const CONNS: usize = 64;
/// 64 connections, 128 receive buffers of 2 KiB, 8 KiB write slab each, 4 timers.
static RESOURCES: StaticSlot<Resources<CONNS, 128, 2048, 8192, 4>> = StaticSlot::new();

/// Per-connection state, indexed by the connection's slot: the partial line and a counter.
#[derive(Default)]
struct Session {
    conn: Option<ConnId>,
    line: HVec<u8, 128>,
    lines: u64,
}

struct Lines {
    sessions: [Session; CONNS],
    ticks: u64,
}

impl Lines {
    fn reply(cx: &mut Context<'_, 'static>, conn: ConnId, parts: &[&[u8]]) {
        for p in parts {
            // A full slab means the client is not reading: drop it rather than buffer forever.
            if cx.write(conn, p).is_err() {
                cx.abort(conn);
                return;
            }
        }
        let _ = cx.flush(conn);
    }

    fn on_line(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        let s = &mut self.sessions[conn.index()];
        s.lines += 1;
        let line = s.line.strip_suffix(b"\r").unwrap_or(&s.line);
        match line {
            b"ping" => Self::reply(cx, conn, &[b"pong\n"]),
            b"count" => {
                let n = s.lines.to_string();
                Self::reply(cx, conn, &[n.as_bytes(), b"\n"]);
            }
            b"quit" => {
                Self::reply(cx, conn, &[b"bye\n"]);
                cx.close(conn);
            }
            other => Self::reply(cx, conn, &[b"? ", other, b"\n"]),
        }
        self.sessions[conn.index()].line.clear();
    }
}

impl Handler<'static> for Lines {
    fn on_accept(&mut self, _: &mut Context<'_, 'static>, conn: ConnId, _: ListenerId) {
        self.sessions[conn.index()] = Session {
            conn: Some(conn),
            ..Session::default()
        };
    }

    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        // The lease is dropped at the end of this call: its buffer goes straight back.
        for &b in lease.as_slice() {
            if b == b'\n' {
                self.on_line(cx, conn);
            } else if self.sessions[conn.index()].line.push(b).is_err() {
                Self::reply(cx, conn, &[b"line too long\n"]);
                cx.close(conn);
                return;
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_, 'static>, _: TimerId, _: u64) {
        self.ticks += 1;
        let msg = format!("tick {}\n", self.ticks);
        for s in &self.sessions {
            if let Some(conn) = s.conn.filter(|&c| cx.is_open(c)) {
                Self::reply(cx, conn, &[msg.as_bytes()]);
            }
        }
    }

    fn on_close(
        &mut self,
        _: &mut Context<'_, 'static>,
        conn: ConnId,
        _: ringlet::reactor::CloseReason,
    ) {
        self.sessions[conn.index()] = Session::default();
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001".into());
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).expect("signal handler");
    }

    let mut reactor = Reactor::new(RESOURCES.take().unwrap(), Config::default()).expect("reactor");
    let l = reactor
        .listen(addr.parse().expect("address"))
        .expect("listen");
    reactor
        .context()
        .set_timer(Duration::from_secs(1), Some(Duration::from_secs(1)), 0)
        .expect("timer");
    println!(
        "embed: line server on {} ({:?})",
        reactor.listener_addr(l).unwrap(),
        reactor.backend()
    );

    let mut handler = Lines {
        sessions: std::array::from_fn(|_| Session::default()),
        ticks: 0,
    };
    while !reactor.is_stopped() {
        if stop.load(Ordering::Relaxed) {
            reactor.stop();
        }
        reactor
            .turn(&mut handler, Some(Duration::from_millis(100)))
            .expect("turn");
    }
    println!("embed: stopped after {} ticks", handler.ticks);
}
