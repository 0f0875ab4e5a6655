//! The reactor against the real kernel on loopback. Every scenario runs on BOTH backends.

mod reactor_util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener as StdListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use reactor_util::*;
use ringlet::pool::Lease;
use ringlet::reactor::timer::TimerId;
use ringlet::reactor::{
    Backend, BackendChoice, CloseReason, Config, ConnError, ConnId, Context, Handler, ListenerId,
    Reactor, Resources,
};

type Small = Resources<64, 256, 2048, 65536, 64>;

fn small(config: Config) -> Reactor<'static> {
    Reactor::new(leak::<Small>(), config).expect("reactor")
}

both!(
    echo_one_connection,
    echo_many_connections_random_sizes,
    echo_streams_one_mebibyte,
    peer_half_close_gets_the_rest_then_eof,
    peer_reset_closes_with_a_reason_and_frees_the_slot,
    writing_to_a_reset_peer_closes_with_an_error,
    buffer_exhaustion_pauses_and_resumes_without_loss,
    receives_reuse_a_few_hot_buffers,
    ring_window_widens_for_a_stream,
    slow_reader_does_not_starve_others,
    write_slab_full_is_an_error_and_on_flushed_follows,
    connection_table_full_refuses_and_keeps_serving,
    stale_ids_are_errors,
    timers_fire_in_order_and_periodic_ones_repeat,
    stop_drains_staged_bytes,
    outbound_connect_exchanges_data,
    listens_on_ipv6_too,
    full_submission_queue_loses_nothing,
    timer_table_full_is_an_error_and_frees_on_cancel,
);

/// Echo: writes every lease back; when the slab is full, keeps the leases, pauses the
/// connection, and drains them on `on_flushed`.
#[derive(Default)]
struct Echo {
    stash: HashMap<ConnId, Vec<Lease<'static>>>,
    closes: Vec<(ConnId, CloseReason)>,
    accepted: usize,
}

impl Echo {
    fn drain(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        let Some(q) = self.stash.get_mut(&conn) else {
            return;
        };
        while let Some(lease) = q.first() {
            match cx.write(conn, lease.as_slice()) {
                Ok(()) => {
                    q.remove(0);
                }
                Err(ConnError::WouldBlock) => break,
                Err(_) => {
                    q.clear();
                    break;
                }
            }
        }
        let _ = cx.flush(conn);
        if q.is_empty() {
            self.stash.remove(&conn);
            let _ = cx.resume(conn);
        }
    }
}

impl Handler<'static> for Echo {
    fn on_accept(&mut self, _: &mut Context<'_, 'static>, _: ConnId, _: ListenerId) {
        self.accepted += 1;
    }

    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        if let Some(q) = self.stash.get_mut(&conn) {
            q.push(lease);
            return;
        }
        match cx.write(conn, lease.as_slice()) {
            Ok(()) => {
                let _ = cx.flush(conn);
            }
            Err(ConnError::WouldBlock) => {
                self.stash.entry(conn).or_default().push(lease);
                let _ = cx.pause(conn);
                let _ = cx.flush(conn);
            }
            Err(e) => panic!("write: {e}"),
        }
    }

    fn on_read_closed(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        if !self.stash.contains_key(&conn) {
            cx.close(conn);
        }
    }

    fn on_flushed(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        self.drain(cx, conn);
    }

    fn on_close(&mut self, _: &mut Context<'_, 'static>, conn: ConnId, reason: CloseReason) {
        self.stash.remove(&conn);
        self.closes.push((conn, reason));
    }
}

fn check_backend(report_backend: Backend, asked: BackendChoice) {
    match asked {
        BackendChoice::Uring => assert_eq!(report_backend, Backend::Uring),
        BackendChoice::Epoll => assert_eq!(report_backend, Backend::Epoll),
        BackendChoice::Auto => {}
    }
}

/// A clean end: every connection closed, every buffer back in the pool.
fn assert_clean<H>(r: &Report<H>) {
    assert_eq!(r.connections_left, 0, "connections left open");
    assert_eq!(r.pool_leased, 0, "receive buffers not returned");
}

fn echo_one_connection(b: BackendChoice) {
    let server = serve(config(b), small, Echo::default, |_| ());
    let mut c = connect(server.addr);
    send(&mut c, b"hello, ringlet");
    assert_eq!(read_n(&mut c, 14), b"hello, ringlet");
    drop(c);
    let r = server.stop();
    check_backend(r.backend, b);
    assert_clean(&r);
    assert_eq!(r.stats.accepted, 1);
    assert_eq!(r.stats.bytes_in, 14);
    assert_eq!(r.stats.bytes_out, 14);
}

/// Echo `conns` connections concurrently, each sending `rounds` messages of random sizes, and
/// check every byte.
fn echo_load(b: BackendChoice, conns: usize, rounds: usize, max: usize) {
    echo_load_with(config(b), conns, rounds, max);
}

fn echo_load_with(cfg: Config, conns: usize, rounds: usize, max: usize) {
    let make = |c| Reactor::new(leak::<Resources<1100, 2048, 4096, 16384, 16>>(), c).unwrap();
    let server = serve(cfg, make, Echo::default, |_| ());
    ringlet::sys::socket::raise_nofile_limit(4096).unwrap();
    let addr = server.addr;
    let workers: Vec<_> = (0..4)
        .map(|w| {
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9 + w as u64);
                let mut socks: Vec<_> = (0..conns / 4).map(|_| connect(addr)).collect();
                for _ in 0..rounds {
                    let msgs: Vec<Vec<u8>> = socks
                        .iter()
                        .map(|_| {
                            let n = 1 + rng.below(max as u64) as usize;
                            rng.bytes(n)
                        })
                        .collect();
                    for (s, m) in socks.iter_mut().zip(&msgs) {
                        send(s, m);
                    }
                    for (s, m) in socks.iter_mut().zip(&msgs) {
                        assert_eq!(&read_n(s, m.len()), m, "echo mismatch");
                    }
                }
                socks.len()
            })
        })
        .collect();
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let r = server.stop();
    assert_eq!(r.stats.accepted as usize, total);
    assert_eq!(r.stats.bytes_in, r.stats.bytes_out);
    assert_clean(&r);
}

fn echo_many_connections_random_sizes(b: BackendChoice) {
    echo_load(b, 4, 20, 10_000);
    echo_load(b, 100, 5, 3_000);
    echo_load(b, 1000, 2, 200);
}

fn echo_streams_one_mebibyte(b: BackendChoice) {
    let server = serve(config(b), small, Echo::default, |_| ());
    let addr = server.addr;
    let clients: Vec<_> = (0..3u64)
        .map(|i| {
            thread::spawn(move || {
                let data = Rng(i + 1).bytes(1 << 20);
                let mut c = connect(addr);
                let mut r = c.try_clone().unwrap();
                let expect = data.clone();
                let reader = thread::spawn(move || read_n(&mut r, expect.len()) == expect);
                send(&mut c, &data);
                assert!(reader.join().unwrap(), "1 MiB echoed intact");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let r = server.stop();
    assert_eq!(r.stats.bytes_out, 3 << 20);
    assert_clean(&r);
}

fn peer_half_close_gets_the_rest_then_eof(b: BackendChoice) {
    let server = serve(config(b), small, Echo::default, |h| h.closes);
    let mut c = connect(server.addr);
    let data = Rng(7).bytes(100_000);
    let mut r = c.try_clone().unwrap();
    let reader = thread::spawn(move || read_to_eof(&mut r));
    send(&mut c, &data);
    c.shutdown(Shutdown::Write).unwrap();
    // The server echoes everything, then (on_read_closed) closes gracefully: EOF after data.
    assert_eq!(reader.join().unwrap(), data);
    let r = server.stop();
    assert_eq!(r.handler.len(), 1);
    assert_eq!(r.handler[0].1, CloseReason::PeerClosed);
    assert_clean(&r);
}

fn peer_reset_closes_with_a_reason_and_frees_the_slot(b: BackendChoice) {
    let server = serve(config(b), small, Echo::default, |h| h.closes);
    let mut c = connect(server.addr);
    // The echo proves the server accepted the connection and took data on it.
    send(&mut c, b"x");
    assert_eq!(read_n(&mut c, 1), b"x");
    rustix::net::sockopt::set_socket_linger(&c, Some(Duration::ZERO)).unwrap();
    drop(c); // RST
    // The slot is freed by the reset itself, not by the stop below.
    server.wait_stats("the reset to close the connection", |s| {
        s.closed.iter().sum::<u64>() == 1
    });
    let r = server.stop();
    assert_eq!(r.handler.len(), 1);
    let reason = r.handler[0].1;
    assert!(
        matches!(reason, CloseReason::Error(e) if e.is_disconnect())
            || reason == CloseReason::PeerClosed,
        "reset seen as {reason:?}"
    );
    assert_ne!(
        reason,
        CloseReason::Stopped,
        "the reset closed it, not the stop"
    );
    assert_clean(&r);
}

/// A handler that keeps writing to every connection on a timer, ignoring reads.
#[derive(Default)]
struct Spammer {
    conns: Vec<ConnId>,
    closes: Vec<CloseReason>,
    write_errors: usize,
}

impl Handler<'static> for Spammer {
    fn on_accept(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, _: ListenerId) {
        self.conns.push(conn);
        cx.set_timer(Duration::from_millis(5), Some(Duration::from_millis(5)), 1)
            .unwrap();
    }
    fn on_data(&mut self, _: &mut Context<'_, 'static>, _: ConnId, _: Lease<'static>) {}
    fn on_timer(&mut self, cx: &mut Context<'_, 'static>, _: TimerId, _: u64) {
        for &c in &self.conns {
            match cx.write(c, &[0u8; 1024]) {
                Ok(()) => {
                    let _ = cx.flush(c);
                }
                Err(ConnError::Stale) => {}
                Err(_) => self.write_errors += 1,
            }
        }
    }
    fn on_close(&mut self, _: &mut Context<'_, 'static>, _: ConnId, reason: CloseReason) {
        self.closes.push(reason);
    }
}

fn writing_to_a_reset_peer_closes_with_an_error(b: BackendChoice) {
    let server = serve(config(b), small, Spammer::default, |h| h.closes);
    let mut c = connect(server.addr);
    let _ = read_n(&mut c, 1024); // the server is writing
    rustix::net::sockopt::set_socket_linger(&c, Some(Duration::ZERO)).unwrap();
    drop(c);
    // The next writes see the reset and close the connection (not the stop below).
    server.wait_stats("a write error to close the connection", |s| {
        s.closed.iter().sum::<u64>() == 1
    });
    let r = server.stop();
    assert_eq!(r.handler.len(), 1, "exactly one close");
    assert!(
        matches!(r.handler[0], CloseReason::Error(e) if e.is_disconnect()),
        "closed as {:?}",
        r.handler[0]
    );
    assert_clean(&r);
}

/// Holds every lease it gets and lets them all go every 20 ms (a timer), so a small pool runs
/// dry between releases.
#[derive(Default)]
struct Hoarder {
    held: Vec<Lease<'static>>,
    bytes: Vec<u8>,
}

impl Handler<'static> for Hoarder {
    fn on_accept(&mut self, cx: &mut Context<'_, 'static>, _: ConnId, _: ListenerId) {
        cx.set_timer(
            Duration::from_millis(20),
            Some(Duration::from_millis(20)),
            0,
        )
        .unwrap();
    }
    fn on_data(&mut self, _: &mut Context<'_, 'static>, _: ConnId, lease: Lease<'static>) {
        self.bytes.extend_from_slice(lease.as_slice());
        self.held.push(lease);
    }
    fn on_timer(&mut self, _: &mut Context<'_, 'static>, _: TimerId, _: u64) {
        self.held.clear();
    }
}

fn buffer_exhaustion_pauses_and_resumes_without_loss(b: BackendChoice) {
    // 16 buffers of 512 bytes, 64 KiB sent: the hoarding handler takes all 16, the receive
    // pauses (the kernel keeps the bytes), the timer gives them back, receiving resumes.
    let mut cfg = config(b);
    cfg.lease_quota = 1000;
    cfg.rearm_watermark = 4;
    let make = |c| Reactor::new(leak::<Resources<8, 16, 512, 4096, 8>>(), c).unwrap();
    let server = serve(cfg, make, Hoarder::default, |h| h.bytes);
    let data = Rng(3).bytes(64 * 1024);
    let mut c = connect(server.addr);
    send(&mut c, &data);
    // 128 buffers' worth at 16 per 20 ms: about 160 ms, however long it takes here.
    server.wait_stats("every byte received and its buffer released", |s| {
        s.bytes_in == data.len() as u64 && s.bufs_in_use == 0
    });
    drop(c);
    let r = server.stop();
    assert_eq!(r.handler.len(), data.len(), "every byte arrived");
    assert_eq!(r.handler, data, "in order");
    assert!(
        r.stats.starvation_pauses > 0,
        "the pool ran dry at least once"
    );
    assert_eq!(
        r.stats.bufs_high_water, 16,
        "all 16 buffers were in use at once"
    );
    assert_clean(&r);
}

/// Records which buffers receives landed in and what arrived, giving every lease back at
/// once.
#[derive(Default)]
struct BufferIds {
    ids: std::collections::BTreeSet<u16>,
    bytes: HashMap<ConnId, Vec<u8>>,
}

impl Handler<'static> for BufferIds {
    fn on_data(&mut self, _: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        self.ids.insert(lease.id());
        self.bytes
            .entry(conn)
            .or_default()
            .extend_from_slice(lease.as_slice());
    }
}

fn receives_reuse_a_few_hot_buffers(b: BackendChoice) {
    // 48 connections send one small message each, at once (a connection storm), to a pool
    // of 256 buffers. With a ring window of 8 (io_uring), receives cycle through the window
    // and the buffer last given back; epoll's free list is last in, first out anyway. With
    // every buffer published (window 0), io_uring takes a fresh buffer for each receive.
    const CONNS: usize = 48;
    for window in [8u16, 0] {
        let mut cfg = config(b);
        cfg.ring_window = window;
        let server = serve(cfg, small, BufferIds::default, |h| h);
        let mut clients: Vec<_> = (0..CONNS).map(|_| connect(server.addr)).collect();
        server.wait_connections(CONNS);
        for (i, c) in clients.iter_mut().enumerate() {
            send(c, &[i as u8; 100]);
        }
        server.wait_stats("every message received", |s| {
            s.bytes_in == (CONNS * 100) as u64
        });
        drop(clients);
        let r = server.stop();
        assert_clean(&r);
        let mut got: Vec<Vec<u8>> = r.handler.bytes.into_values().collect();
        got.sort();
        let want: Vec<Vec<u8>> = (0..CONNS).map(|i| vec![i as u8; 100]).collect();
        assert_eq!(got, want, "every message whole, once");
        let used = r.handler.ids.len();
        match (r.backend, window) {
            (Backend::Uring, 8) => {
                assert!(used <= 9, "window 8: {used} buffers used");
                // One message per connection: no stream ran the ring dry, no widening.
                assert_eq!((r.stats.ring_window, r.stats.ring_widenings), (8, 0));
            }
            (Backend::Uring, _) => {
                assert_eq!(used, CONNS, "every buffer published: one fresh buffer each");
                assert_eq!(r.stats.ring_window, 256);
            }
            (Backend::Epoll, _) => {
                assert!(used <= 2, "epoll: {used} buffers used");
                assert_eq!(r.stats.ring_window, 0);
            }
        }
    }
}

fn ring_window_widens_for_a_stream(b: BackendChoice) {
    // A ring window of 2 buffers of 512 bytes, and 64 KiB sent at once: the receive runs the
    // ring dry after taking buffers in the same round while 62 are free, so the window
    // doubles (io_uring); nothing is lost either way.
    let mut cfg = config(b);
    cfg.ring_window = 2;
    cfg.lease_quota = 1000;
    let make = |c| Reactor::new(leak::<Resources<8, 64, 512, 4096, 8>>(), c).unwrap();
    let server = serve(cfg, make, BufferIds::default, |h| h);
    let data = Rng(5).bytes(64 * 1024);
    let mut c = connect(server.addr);
    send(&mut c, &data);
    server.wait_stats("every byte received", |s| s.bytes_in == data.len() as u64);
    drop(c);
    let r = server.stop();
    assert_clean(&r);
    let got: Vec<Vec<u8>> = r.handler.bytes.into_values().collect();
    assert_eq!(got, [data], "every byte, in order");
    if r.backend == Backend::Uring {
        assert!(r.stats.ring_widenings >= 1, "{:?}", r.stats);
        assert!(r.stats.ring_window > 2, "{:?}", r.stats);
        assert!(r.stats.starvation_pauses >= 1, "{:?}", r.stats);
    }
}

/// Never gives leases back on connection 0 (the slow consumer); echoes the others.
#[derive(Default)]
struct SlowFirst {
    first: Option<ConnId>,
    held: Vec<Lease<'static>>,
}

impl Handler<'static> for SlowFirst {
    fn on_accept(&mut self, _: &mut Context<'_, 'static>, conn: ConnId, _: ListenerId) {
        self.first.get_or_insert(conn);
    }
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        if Some(conn) == self.first {
            self.held.push(lease);
        } else {
            cx.write(conn, lease.as_slice()).unwrap();
            cx.flush(conn).unwrap();
        }
    }
}

fn slow_reader_does_not_starve_others(b: BackendChoice) {
    let mut cfg = config(b);
    cfg.lease_quota = 4;
    let make = |c| Reactor::new(leak::<Resources<8, 16, 512, 4096, 8>>(), c).unwrap();
    let server = serve(cfg, make, SlowFirst::default, |h| h.held.len());
    let mut slow = connect(server.addr);
    // The slow connection sends far more than the pool holds, and is paused at its quota.
    send(&mut slow, &vec![1u8; 64 * 1024]);
    server.wait_stats("the slow connection to pause at its quota", |s| {
        s.quota_pauses >= 1
    });
    let mut fast = connect(server.addr);
    for i in 0..50u32 {
        let m = i.to_le_bytes().repeat(100);
        send(&mut fast, &m);
        assert_eq!(
            read_n(&mut fast, m.len()),
            m,
            "the fast connection is served"
        );
    }
    drop((slow, fast));
    let r = server.stop();
    assert!(
        r.stats.quota_pauses >= 1,
        "the slow connection was paused at its quota"
    );
    // io_uring may overshoot by a buffer or two (the capped receive allows at least one buffer
    // per arm, and a completion can land before the pause); epoll stops exactly at the quota.
    assert!(r.handler <= 4 + 2, "held {} leases (quota 4)", r.handler);
}

/// Writes 600 bytes twice into a 1 KiB slab: the second write must fail whole, and after
/// on_flushed it must fit.
#[derive(Default)]
struct SlabFull {
    second: Option<Result<(), ConnError>>,
    after_flush: Option<Result<(), ConnError>>,
    conn: Option<ConnId>,
}

impl Handler<'static> for SlabFull {
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, _: Lease<'static>) {
        if self.conn.is_some() {
            return;
        }
        self.conn = Some(conn);
        cx.write(conn, &[b'a'; 600]).unwrap();
        let staged = cx.staged(conn);
        self.second = Some(cx.write(conn, &[b'b'; 600]));
        assert_eq!(cx.staged(conn), staged, "a failed write writes nothing");
        assert_eq!(cx.write(conn, &[0u8; 2000]), Err(ConnError::TooLarge));
        cx.flush(conn).unwrap();
    }
    fn on_flushed(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        if self.after_flush.is_none() {
            self.after_flush = Some(cx.write(conn, &[b'b'; 600]));
            cx.flush(conn).unwrap();
        }
    }
}

fn write_slab_full_is_an_error_and_on_flushed_follows(b: BackendChoice) {
    let make = |c| Reactor::new(leak::<Resources<4, 16, 512, 1024, 8>>(), c).unwrap();
    let server = serve(config(b), make, SlabFull::default, |h| {
        (h.second, h.after_flush)
    });
    let mut c = connect(server.addr);
    send(&mut c, b"go");
    let got = read_n(&mut c, 1200);
    assert_eq!(&got[..600], &[b'a'; 600][..]);
    assert_eq!(&got[600..], &[b'b'; 600][..]);
    drop(c);
    let r = server.stop();
    assert_eq!(r.handler.0, Some(Err(ConnError::WouldBlock)));
    assert_eq!(r.handler.1, Some(Ok(())));
}

fn connection_table_full_refuses_and_keeps_serving(b: BackendChoice) {
    let make = |c| Reactor::new(leak::<Resources<2, 16, 512, 1024, 8>>(), c).unwrap();
    let server = serve(config(b), make, Echo::default, |_| ());
    let mut a = connect(server.addr);
    let mut bb = connect(server.addr);
    send(&mut a, b"a");
    send(&mut bb, b"b");
    assert_eq!(read_n(&mut a, 1), b"a");
    assert_eq!(read_n(&mut bb, 1), b"b");
    // The third is accepted by the kernel, then refused (closed) by the full table.
    let mut third = connect(server.addr);
    let mut buf = [0u8; 1];
    let n = third.read(&mut buf);
    assert!(
        matches!(n, Ok(0)) || n.is_err(),
        "refused connection is closed: {n:?}"
    );
    // The others are still served.
    send(&mut a, b"still");
    assert_eq!(read_n(&mut a, 5), b"still");
    drop((a, bb));
    server.wait_stats("both closed connections to free their slots", |s| {
        s.closed.iter().sum::<u64>() == 2
    });
    // With slots free again, new connections work.
    let mut d = connect(server.addr);
    send(&mut d, b"d");
    assert_eq!(read_n(&mut d, 1), b"d");
    drop(d);
    let r = server.stop();
    assert_eq!(r.stats.refused, 1);
    assert_clean(&r);
}

/// Checks every Context operation fails cleanly on an id whose connection closed.
#[derive(Default)]
struct Stale {
    old: Option<ConnId>,
    results: Vec<String>,
}

impl Handler<'static> for Stale {
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, _: Lease<'static>) {
        if let Some(old) = self.old {
            assert_ne!(
                old, conn,
                "a new connection gets a new id even in the same slot"
            );
            self.results.push(format!("{:?}", cx.write(old, b"x")));
            self.results.push(format!("{:?}", cx.flush(old)));
            self.results.push(format!("{:?}", cx.pause(old)));
            self.results.push(format!("{:?}", cx.resume(old)));
            cx.close(old); // no-op, no panic
            cx.abort(old);
            self.results.push(format!("{}", cx.is_open(old)));
            cx.write(conn, b"ok").unwrap();
            cx.flush(conn).unwrap();
        } else {
            self.old = Some(conn);
            cx.abort(conn);
            // Closing: ops fail as stale already.
            self.results.push(format!("{:?}", cx.write(conn, b"x")));
        }
    }
}

fn stale_ids_are_errors(b: BackendChoice) {
    let make = |c| Reactor::new(leak::<Resources<1, 16, 512, 1024, 8>>(), c).unwrap();
    let server = serve(config(b), make, Stale::default, |h| h.results);
    let mut a = connect(server.addr);
    send(&mut a, b"1");
    assert_eq!(read_to_eof(&mut a), b"", "aborted");
    // The table's one slot is free again once the close is complete.
    server.wait_stats("the aborted connection to free its slot", |s| {
        s.closed.iter().sum::<u64>() == 1
    });
    let mut c = connect(server.addr);
    send(&mut c, b"2");
    assert_eq!(read_n(&mut c, 2), b"ok");
    drop(c);
    let r = server.stop();
    assert_eq!(
        r.handler,
        [
            "Err(Stale)",
            "Err(Stale)",
            "Err(Stale)",
            "Err(Stale)",
            "Err(Stale)",
            "false"
        ]
    );
}

/// Records timer firings, in the loop's time (the time timers are armed and fire in).
#[derive(Default)]
struct Timers {
    fired: Vec<(u64, ringlet::time::Instant)>,
    periodic: Option<TimerId>,
    start: Option<ringlet::time::Instant>,
    /// Set when the sentinel fired: every earlier deadline has been handled by then.
    done: Arc<AtomicBool>,
}

impl Handler<'static> for Timers {
    fn on_accept(&mut self, cx: &mut Context<'_, 'static>, _: ConnId, _: ListenerId) {
        self.start = Some(cx.now());
        for (token, ms) in [(3, 60), (1, 20), (2, 40)] {
            cx.set_timer(Duration::from_millis(ms), None, token)
                .unwrap();
        }
        let cancelled = cx.set_timer(Duration::from_millis(30), None, 99).unwrap();
        assert_eq!(cx.cancel_timer(cancelled), Ok(99));
        self.periodic = Some(
            cx.set_timer(
                Duration::from_millis(10),
                Some(Duration::from_millis(10)),
                7,
            )
            .unwrap(),
        );
    }
    fn on_data(&mut self, _: &mut Context<'_, 'static>, _: ConnId, _: Lease<'static>) {}
    fn on_timer(&mut self, cx: &mut Context<'_, 'static>, id: TimerId, token: u64) {
        self.fired.push((token, cx.now()));
        if token == 7 && self.fired.iter().filter(|f| f.0 == 7).count() == 5 {
            assert_eq!(Some(id), self.periodic);
            cx.cancel_timer(id).unwrap();
            // A sentinel five periods on: were the periodic timer still armed, it would fire
            // (earlier deadlines first) before the sentinel does.
            cx.set_timer(Duration::from_millis(50), None, 8).unwrap();
        }
        if token == 8 {
            self.done.store(true, Ordering::SeqCst);
        }
    }
}

fn timers_fire_in_order_and_periodic_ones_repeat(b: BackendChoice) {
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let timers = move || Timers {
        done: d2,
        ..Timers::default()
    };
    let server = serve(config(b), small, timers, |h| h);
    let c = connect(server.addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the timers did not fire within 20 s"
        );
        thread::sleep(Duration::from_millis(5));
    }
    drop(c);
    let r = server.stop();
    let h = r.handler;
    let one_shots: Vec<u64> = h
        .fired
        .iter()
        .map(|f| f.0)
        .filter(|&t| t != 7 && t != 8)
        .collect();
    assert_eq!(
        one_shots,
        [1, 2, 3],
        "one-shot timers in deadline order; the cancelled one never"
    );
    let start = h.start.unwrap();
    for (token, at) in &h.fired {
        if (1..=3).contains(token) {
            assert!(
                *at - start >= Duration::from_millis(20 * *token),
                "timer {token} fired early"
            );
        }
    }
    assert_eq!(
        h.fired.iter().filter(|f| f.0 == 7).count(),
        5,
        "periodic: 5 times, then cancelled"
    );
}

/// Stages a large response and asks the reactor to stop at once.
#[derive(Default)]
struct StopAfterWrite;

impl Handler<'static> for StopAfterWrite {
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, _: Lease<'static>) {
        let chunk = [b'z'; 16384];
        while cx.write(conn, &chunk).is_ok() {}
        cx.flush(conn).unwrap();
        cx.stop();
    }
}

fn stop_drains_staged_bytes(b: BackendChoice) {
    let server = serve(config(b), small, || StopAfterWrite, |_| ());
    let mut c = connect(server.addr);
    send(&mut c, b"go");
    let got = read_to_eof(&mut c);
    assert_eq!(
        got.len(),
        65536,
        "the whole staged slab arrived before the close"
    );
    assert!(got.iter().all(|&x| x == b'z'));
    let r = server.stop();
    assert_eq!(
        r.stats.closed[5], 1,
        "closed by the stop: {:?}",
        r.stats.closed
    );
    assert_clean(&r);
}

/// Connects out to a plain std server on accept of the first inbound connection, sends
/// "ping", relays the reply to the inbound connection.
struct Outbound {
    target: std::net::SocketAddr,
    inbound: Option<ConnId>,
    out: Option<ConnId>,
    connected: Option<Result<(), ringlet::sys::Error>>,
}

impl Handler<'static> for Outbound {
    fn on_accept(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, _: ListenerId) {
        self.inbound = Some(conn);
        let out = cx.connect(self.target).unwrap();
        // Writes before the connect completes are staged and sent once connected.
        cx.write(out, b"ping").unwrap();
        cx.flush(out).unwrap();
        self.out = Some(out);
    }
    fn on_connect(
        &mut self,
        _: &mut Context<'_, 'static>,
        _: ConnId,
        result: Result<(), ringlet::sys::Error>,
    ) {
        self.connected = Some(result);
    }
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        if Some(conn) == self.out {
            let inbound = self.inbound.unwrap();
            cx.write(inbound, lease.as_slice()).unwrap();
            cx.flush(inbound).unwrap();
        }
    }
}

fn outbound_connect_exchanges_data(b: BackendChoice) {
    let upstream = StdListener::bind("127.0.0.1:0").unwrap();
    let target = upstream.local_addr().unwrap();
    let up = thread::spawn(move || {
        let (mut s, _) = upstream.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        s.write_all(b"pong").unwrap();
        thread::sleep(Duration::from_millis(100));
    });
    let outbound = move || Outbound {
        target,
        inbound: None,
        out: None,
        connected: None,
    };
    let server = serve(config(b), small, outbound, |h| h.connected);
    let mut c = connect(server.addr);
    assert_eq!(read_n(&mut c, 4), b"pong");
    up.join().unwrap();
    drop(c);
    let r = server.stop();
    assert_eq!(r.handler, Some(Ok(())));
    assert_clean(&r);
}

fn listens_on_ipv6_too(b: BackendChoice) {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = serve(
        config(b),
        move |c| {
            let mut r = small(c);
            let v6 = r
                .listen("[::1]:0".parse().unwrap())
                .ok()
                .and_then(|l| r.listener_addr(l));
            tx.send(v6).unwrap();
            r
        },
        Echo::default,
        |_| (),
    );
    // The harness listens on 127.0.0.1 as well: both work at once.
    let mut c = connect(server.addr);
    send(&mut c, b"v4");
    assert_eq!(read_n(&mut c, 2), b"v4");
    match rx.recv().unwrap() {
        Some(v6) => {
            assert!(v6.is_ipv6());
            let mut c6 = connect(v6);
            send(&mut c6, b"v6");
            assert_eq!(read_n(&mut c6, 2), b"v6");
        }
        None => eprintln!("no IPv6 loopback here: only the IPv4 listener was checked"),
    }
    drop(c);
    let r = server.stop();
    assert_clean(&r);
}

fn full_submission_queue_loses_nothing(b: BackendChoice) {
    // 4 submission entries for 100 connections: every turn overflows the queue, which is
    // submitted and refilled, never dropped (epoll has no queue: the same load as a control).
    let mut cfg = config(b);
    cfg.uring.sq_entries = 4;
    cfg.uring.cq_entries = 4096;
    echo_load_with(cfg, 100, 5, 2_000);
}

/// Arms timers until the table is full, then cancels one and arms again.
#[derive(Default)]
struct TimerFill {
    armed: usize,
    full: Option<String>,
    after_cancel: bool,
}

impl Handler<'static> for TimerFill {
    fn on_accept(&mut self, cx: &mut Context<'_, 'static>, _: ConnId, _: ListenerId) {
        let mut first = None;
        loop {
            match cx.set_timer(Duration::from_secs(60), None, self.armed as u64) {
                Ok(id) => {
                    first.get_or_insert(id);
                    self.armed += 1;
                }
                Err(e) => {
                    self.full = Some(format!("{e:?}"));
                    break;
                }
            }
        }
        cx.cancel_timer(first.unwrap()).unwrap();
        self.after_cancel = cx.set_timer(Duration::from_secs(60), None, 0).is_ok();
    }
    fn on_data(&mut self, _: &mut Context<'_, 'static>, _: ConnId, _: Lease<'static>) {}
}

fn timer_table_full_is_an_error_and_frees_on_cancel(b: BackendChoice) {
    let make = |c| Reactor::new(leak::<Resources<4, 16, 512, 1024, 3>>(), c).unwrap();
    let server = serve(config(b), make, TimerFill::default, |h| {
        (h.armed, h.full, h.after_cancel)
    });
    let c = connect(server.addr);
    server.wait_connections(1);
    drop(c);
    let r = server.stop();
    assert_eq!(r.handler.0, 3, "TIMERS = 3 timers fit");
    assert_eq!(r.handler.1.as_deref(), Some("TimersFull"));
    assert!(r.handler.2, "a cancelled timer's slot is free again");
}
