//! Edge cases of the reactor on the real kernel: stops and closes against a peer that does not
//! read, leases kept past their connection's close, failed outbound connects, events after a
//! close. Every scenario runs on BOTH backends.

mod reactor_util;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reactor_util::*;
use ringlet::pool::Lease;
use ringlet::reactor::{
    BackendChoice, CloseReason, Config, ConnId, Context, Handler, ListenerId, Reactor, Resources,
};
use ringlet::sys::Error;

type Small = Resources<16, 64, 2048, 65536, 16>;

fn reactor(config: Config) -> Reactor<'static> {
    Reactor::new(leak::<Small>(), config).expect("reactor")
}

both!(
    run_returns_after_stop_timeout_with_a_longer_linger,
    leases_kept_after_close_do_not_count_against_the_next_connection,
    close_linger_holds_when_every_timer_is_in_use,
    a_failed_connect_closed_by_the_handler_reports_connect_failed,
    no_end_of_stream_after_a_close_in_the_same_round,
);

/// Fills the write slab of every connection it accepts (its peer never reads) and, once the
/// sends are stuck (bytes staged, nothing sent between two bytes from the peer), stops the
/// reactor or, with `close`, closes the connection gracefully. With `take_timers` it first
/// takes the reactor's timers (one, in the test that uses it) and notes whether any is left.
#[derive(Default)]
struct FillThen {
    close: bool,
    take_timers: bool,
    closes: Vec<CloseReason>,
    last_out: Option<u64>,
    timers_full: Option<bool>,
    stuck: Arc<AtomicBool>,
}

impl Handler<'static> for FillThen {
    fn on_accept(&mut self, cx: &mut Context<'_, 'static>, c: ConnId, _: ListenerId) {
        if self.take_timers {
            cx.set_timer(Duration::from_secs(3600), None, 1).unwrap();
            self.timers_full = Some(cx.set_timer(Duration::from_secs(3600), None, 2).is_err());
        }
        self.on_flushed(cx, c);
    }
    fn on_flushed(&mut self, cx: &mut Context<'_, 'static>, c: ConnId) {
        let chunk = [7u8; 4096];
        while cx.write(c, &chunk).is_ok() {}
        let _ = cx.flush(c);
    }
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, c: ConnId, _: Lease<'static>) {
        let out = cx.stats().bytes_out;
        if cx.staged(c) > 0 && self.last_out == Some(out) {
            if self.close {
                cx.close(c);
            } else {
                cx.stop();
            }
            self.stuck.store(true, Ordering::SeqCst);
        }
        self.last_out = Some(out);
    }
    fn on_close(&mut self, _: &mut Context<'_, 'static>, _: ConnId, r: CloseReason) {
        self.closes.push(r);
    }
}

/// `Reactor::run` after a stop returns once `stop_timeout` has aborted what could not flush,
/// even when the close linger is longer and no timer is due before it: the stop's deadline
/// bounds the loop's wait, not only the timers do.
fn run_returns_after_stop_timeout_with_a_longer_linger(b: BackendChoice) {
    let (tx, rx) = std::sync::mpsc::channel();
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    let server = std::thread::spawn(move || {
        let mut cfg = config(b);
        cfg.stop_timeout = Duration::from_millis(100);
        cfg.close_linger = Duration::from_secs(3600);
        // A coarse wheel (a revolution of 512 * 10 s): the linger is the next timer, an hour
        // away, with no earlier wake-up.
        cfg.timer_resolution = Duration::from_secs(10);
        let mut r = reactor(cfg);
        let l = r.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        tx.send(r.listener_addr(l).unwrap()).unwrap();
        let mut h = FillThen {
            stuck: flag,
            ..FillThen::default()
        };
        r.run(&mut h).unwrap();
        (h.closes, r.connections())
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut c = connect(addr); // never reads
    // Safety bound only: without the fix, run() sleeps for the hour of the linger.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.is_finished() {
        assert!(
            Instant::now() < deadline,
            "run() still running 30 s after a stop with a 100 ms stop_timeout"
        );
        // Pings until the server sees its sends stuck and stops; then nothing wakes the loop
        // but its own deadlines.
        if !stopped.load(Ordering::SeqCst) {
            c.write_all(b"s").unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (closes, left) = server.join().unwrap();
    assert_eq!(closes, vec![CloseReason::Stopped]);
    assert_eq!(left, 0);
    drop(c);
}

/// Keeps every lease of the first connection (closing it at its quota of 2), echoes on the
/// others, and records what `leases_held` says of each connection as it is accepted.
#[derive(Default)]
struct KeepFirst {
    first: Option<ConnId>,
    kept: Vec<Lease<'static>>,
    held_at_accept: Vec<u16>,
}

impl Handler<'static> for KeepFirst {
    fn on_accept(&mut self, cx: &mut Context<'_, 'static>, c: ConnId, _: ListenerId) {
        self.held_at_accept.push(cx.leases_held(c));
        self.first.get_or_insert(c);
    }
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, c: ConnId, l: Lease<'static>) {
        if Some(c) == self.first {
            self.kept.push(l);
            if self.kept.len() == 2 {
                cx.close(c);
            }
        } else {
            cx.write(c, l.as_slice()).unwrap();
            cx.flush(c).unwrap();
        }
    }
}

/// A handler may keep a lease after its connection closed (a broker holding a message whose
/// publisher left). The quota is per connection: the next connection in the same slot starts
/// holding none and is not paused for the old one's leases.
fn leases_kept_after_close_do_not_count_against_the_next_connection(b: BackendChoice) {
    let mut cfg = config(b);
    cfg.lease_quota = 2;
    // One connection slot: the second connection reuses the first one's.
    let mut r = Reactor::new(leak::<Resources<1, 16, 512, 4096, 4>>(), cfg).unwrap();
    let l = r.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = r.listener_addr(l).unwrap();
    let mut h = KeepFirst::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    let turn = |r: &mut Reactor<'static>, h: &mut KeepFirst, what: &str| {
        assert!(
            Instant::now() < deadline,
            "waited 20 s for {what}: {:?}",
            r.stats()
        );
        r.turn(h, Some(Duration::from_millis(5))).unwrap();
    };
    let mut c1 = connect(addr);
    c1.write_all(b"a").unwrap();
    while h.kept.is_empty() {
        turn(&mut r, &mut h, "the first lease");
    }
    c1.write_all(b"b").unwrap();
    while h.first.is_none() || r.connections() != 0 {
        turn(&mut r, &mut h, "the first connection to close");
    }
    assert_eq!(
        h.kept.len(),
        2,
        "the closed connection's leases are still held"
    );
    let mut c2 = connect(addr);
    let echo = std::thread::spawn(move || {
        for m in [b"x", b"y", b"z"] {
            c2.write_all(m).unwrap();
            assert_eq!(read_n(&mut c2, 1), m);
        }
    });
    while !echo.is_finished() {
        turn(&mut r, &mut h, "three echoes on the second connection");
    }
    echo.join().unwrap();
    assert_eq!(h.held_at_accept, vec![0, 0]);
    drop(h.kept);
    assert_eq!(r.pool().leased(), 0);
}

/// A graceful close flushes for at most `close_linger`, also when the handler holds every
/// timer of the reactor (the linger cannot take one): the close then still ends, with
/// `LingerExpired`, and the loop's wait is bounded by it.
fn close_linger_holds_when_every_timer_is_in_use(b: BackendChoice) {
    let (tx, rx) = std::sync::mpsc::channel();
    let closed = Arc::new(AtomicBool::new(false));
    let flag = closed.clone();
    let server = std::thread::spawn(move || {
        let mut cfg = config(b);
        cfg.close_linger = Duration::from_millis(100);
        // One timer: the handler's.
        let mut r = Reactor::new(leak::<Resources<4, 16, 2048, 65536, 1>>(), cfg).unwrap();
        let l = r.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        tx.send(r.listener_addr(l).unwrap()).unwrap();
        let mut h = FillThen {
            close: true,
            take_timers: true,
            stuck: flag,
            ..FillThen::default()
        };
        while h.closes.is_empty() {
            r.turn(&mut h, None).unwrap();
        }
        (h.closes, h.timers_full, r.stats().closed, r.connections())
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut c = connect(addr); // never reads
    // Safety bound only: without a bound on the close, the loop sleeps for the hour of the
    // handler's timer.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.is_finished() {
        assert!(
            Instant::now() < deadline,
            "a graceful close with a 100 ms linger still open after 30 s"
        );
        // Pings until the server sees its sends stuck and closes; then nothing wakes the loop
        // but its own deadlines.
        if !closed.load(Ordering::SeqCst) {
            c.write_all(b"s").unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (closes, timers_full, closed_by_reason, left) = server.join().unwrap();
    assert_eq!(timers_full, Some(true), "the handler holds the only timer");
    assert_eq!(closes, vec![CloseReason::LingerExpired]);
    assert_eq!(closed_by_reason, [0, 0, 0, 0, 1, 0]);
    assert_eq!(left, 0);
    drop(c);
}

/// Closes an outbound connection whose connect failed, as a handler cleaning up would.
#[derive(Default)]
struct CloseOnFailure {
    connects: Vec<(ConnId, Result<(), Error>)>,
    closes: Vec<(ConnId, CloseReason)>,
}

impl Handler<'static> for CloseOnFailure {
    fn on_connect(&mut self, cx: &mut Context<'_, 'static>, c: ConnId, r: Result<(), Error>) {
        self.connects.push((c, r));
        if r.is_err() {
            cx.close(c);
        }
    }
    fn on_data(&mut self, _: &mut Context<'_, 'static>, _: ConnId, _: Lease<'static>) {}
    fn on_close(&mut self, _: &mut Context<'_, 'static>, c: ConnId, r: CloseReason) {
        self.closes.push((c, r));
    }
}

/// `Handler::on_connect`: a failed connect is closed with `ConnectFailed`, also when the
/// handler closes it itself from `on_connect` (and `Stats::closed` counts it there).
fn a_failed_connect_closed_by_the_handler_reports_connect_failed(b: BackendChoice) {
    // A port nobody listens on: bound, then closed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut r = reactor(config(b));
    let mut h = CloseOnFailure::default();
    let id = r.context().connect(dead).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.closes.is_empty() {
        assert!(Instant::now() < deadline, "waited 10 s for the close");
        r.turn(&mut h, Some(Duration::from_millis(10))).unwrap();
    }
    let refused = Error::ConnectionRefused;
    assert_eq!(h.connects, vec![(id, Err(refused))]);
    assert_eq!(h.closes, vec![(id, CloseReason::ConnectFailed(refused))]);
    assert_eq!(r.stats().closed, [0, 0, 0, 1, 0, 0]);
    assert_eq!(r.connections(), 0);
}

/// What `Resources`' documentation says it takes: per connection, buffer and timer at most
/// the stated bytes, plus at most 16 KiB of fixed parts.
#[test]
fn resources_take_the_memory_their_documentation_states() {
    fn check<const C: usize, const B: usize, const BS: usize, const S: usize, const T: usize>() {
        let stated = C * (S + 420) + B * (BS + 26) + T * 72;
        let real = std::mem::size_of::<Resources<C, B, BS, S, T>>();
        assert!(
            real <= stated + 16 * 1024,
            "Resources<{C}, {B}, {BS}, {S}, {T}>: {real} bytes, stated {stated} + 16 KiB"
        );
    }
    check::<4, 16, 64, 64, 4>();
    check::<1, 1, 1, 1, 1>();
    check::<1024, 16, 64, 64, 1>();
    check::<4, 8192, 64, 64, 1>();
    check::<4, 16, 64, 64, 4096>();
    check::<256, 1024, 2048, 16384, 256>();
}

/// Answers the first bytes of each connection with "bye" and closes it at once; counts
/// `on_read_closed` calls for connections it closed.
#[derive(Default)]
struct ByeOnData {
    closed: Vec<ConnId>,
    read_closed_after_close: usize,
}

impl Handler<'static> for ByeOnData {
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, c: ConnId, _: Lease<'static>) {
        if !self.closed.contains(&c) {
            cx.write(c, b"bye").unwrap();
            cx.close(c);
            self.closed.push(c);
        }
    }
    fn on_read_closed(&mut self, cx: &mut Context<'_, 'static>, c: ConnId) {
        if self.closed.contains(&c) {
            self.read_closed_after_close += 1;
        }
        cx.close(c);
    }
}

/// The peer's bytes and its end of stream arrive together; the handler closes on the bytes.
/// The end of stream, already received by then, is not reported for the closed connection.
fn no_end_of_stream_after_a_close_in_the_same_round(b: BackendChoice) {
    let server = serve(config(b), reactor, ByeOnData::default, |h| {
        h.read_closed_after_close
    });
    for _ in 0..50 {
        let mut c = connect(server.addr);
        c.write_all(b"x").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut c), b"bye");
    }
    let r = server.stop();
    assert_eq!(r.handler, 0, "on_read_closed after the handler's close");
    assert_eq!((r.connections_left, r.pool_leased), (0, 0));
}
