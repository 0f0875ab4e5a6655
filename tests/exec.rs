//! The executor and `Connection` against the real kernel on loopback. Every scenario runs on
//! BOTH backends.

mod exec_util;
mod reactor_util;

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::{BufRead, BufReader, Read};
use std::net::{Shutdown, TcpListener as StdListener};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use exec_util::{Server, Small, Tasks, reactor, server};
use reactor_util::{Rng, connect, leak, read_to_eof, reset, send};
use ringlet::exec::{
    Connection, Error, ExecError, ExecStats, Executor, SNAPSHOT_LEASES, SpawnError, TaskStorage,
};
use ringlet::pool::Lease;
use ringlet::reactor::timer::TimerId;
use ringlet::reactor::{
    BackendChoice, CloseReason, Config, ConnId, Context, Handler, ListenerId, Reactor,
};

both!(
    async_echo_many_connections,
    flush_waits_only_for_bytes_staged_before_it,
    peer_close_mid_read_is_eof_and_the_task_can_still_reply,
    close_from_a_callback_fails_a_pending_read,
    peer_reset_fails_a_pending_read_with_the_reason,
    task_pool_full_refuses_counts_and_recovers,
    spawn_on_a_full_pool_names_the_capacity,
    a_stale_waker_never_polls_the_task_that_reused_its_slot,
    a_wake_from_another_thread_ends_the_loops_sleep,
    dropping_the_connection_closes_it_once,
    a_connection_moved_to_another_task_works_and_frees_its_slot_when_dropped,
    start_flush_sends_without_waiting_and_a_later_flush_waits_for_it,
    a_task_woken_by_its_waker_and_by_a_receive_in_one_turn_is_polled_once,
    write_some_on_a_connection_closed_by_a_callback_is_closed_not_full,
    a_closed_moved_connection_reports_nothing_of_the_task_that_reused_its_slot,
    a_connection_dropped_outside_a_poll_is_closed_and_frees_its_slot,
);

/// Writes all of `bytes`, flushing whenever the slab is full.
async fn write_all(conn: &Connection, mut bytes: &[u8]) -> Result<(), Error> {
    while !bytes.is_empty() {
        match conn.write_some(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Error::WouldBlock) => conn.flush().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The async echo: every snapshot written back, then flushed.
async fn echo(conn: Connection) {
    while let Ok(snapshot) = conn.read().await {
        for bytes in snapshot.iter() {
            if write_all(&conn, bytes).await.is_err() {
                return;
            }
        }
        drop(snapshot);
        if conn.flush().await.is_err() {
            return;
        }
    }
}

struct EchoReport {
    stats: ExecStats,
    leased: usize,
    connections: usize,
}

fn echo_server<const N: usize>(backend: BackendChoice) -> Server<EchoReport> {
    server(
        backend,
        |r| {
            let exec = Executor::new(r, leak::<Tasks<N>>(), echo).expect("executor");
            (exec, ())
        },
        |exec, (), r| EchoReport {
            stats: exec.stats(),
            leased: r.pool().leased(),
            connections: r.connections(),
        },
    )
}

fn async_echo_many_connections(backend: BackendChoice) {
    let srv = echo_server::<16>(backend);
    let addr = srv.addr;
    let clients: Vec<_> = (0..8u64)
        .map(|i| {
            thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9 ^ (i + 1));
                let mut s = connect(addr);
                let mut total = 0;
                while total < 200_000 {
                    let n = 1 + rng.below(20_000) as usize;
                    let data = rng.bytes(n);
                    send(&mut s, &data);
                    let mut back = vec![0u8; n];
                    s.read_exact(&mut back).expect("echo");
                    assert_eq!(back, data, "client {i}");
                    total += n;
                }
                s.shutdown(Shutdown::Write).unwrap();
                assert_eq!(read_to_eof(&mut s), b"", "EOF after the echo");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let r = srv.stop();
    assert_eq!(r.stats.spawned, 8);
    assert_eq!(r.stats.completed, 8);
    assert_eq!((r.stats.refused, r.stats.live), (0, 0));
    assert_eq!(r.leased, 0, "every buffer back");
    assert_eq!(r.connections, 0);
}

/// What the flush test's task saw when its flush completed.
#[derive(Default)]
struct FlushProbe {
    flushing: Cell<bool>,
    done: Cell<Option<(u64, usize)>>,
    pumped: Cell<usize>,
}

/// Other code writing to a task's connection (as a broker's fan-out does) while the task's
/// flush is pending: on every turn and at every completed send, each time before the
/// executor hears of it, so the slab is never empty while the pump runs (up to `BUDGET`).
struct Pump<E> {
    exec: E,
    conn: Option<ConnId>,
    probe: Rc<FlushProbe>,
}

const A_LEN: usize = 40_000;
const CHUNK: usize = 1000;
const BUDGET: usize = 4 << 20;

impl<E> Pump<E> {
    fn pump(&self, cx: &mut Context<'_, 'static>) {
        let p = &self.probe;
        if let Some(conn) = self.conn
            && p.flushing.get()
            && p.done.get().is_none()
            && p.pumped.get() < BUDGET
            && cx.write_capacity(conn) >= CHUNK
        {
            let start = p.pumped.get();
            let chunk: Vec<u8> = (start..start + CHUNK).map(pattern).collect();
            cx.write(conn, &chunk).unwrap();
            cx.flush(conn).unwrap();
            p.pumped.set(start + CHUNK);
        }
    }
}

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

impl<E: Handler<'static>> Handler<'static> for Pump<E> {
    fn on_accept(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, l: ListenerId) {
        self.conn = Some(conn);
        self.exec.on_accept(cx, conn, l);
    }
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        self.exec.on_data(cx, conn, lease);
    }
    fn on_read_closed(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        self.exec.on_read_closed(cx, conn);
    }
    fn on_sent(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, n: usize) {
        self.pump(cx);
        self.exec.on_sent(cx, conn, n);
    }
    fn on_close(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, reason: CloseReason) {
        self.exec.on_close(cx, conn, reason);
    }
    fn before_flush(&mut self, cx: &mut Context<'_, 'static>) {
        self.pump(cx);
        self.exec.before_flush(cx);
    }
}

fn flush_waits_only_for_bytes_staged_before_it(backend: BackendChoice) {
    let srv = server(
        backend,
        |r| {
            let probe = Rc::new(FlushProbe::default());
            let p = probe.clone();
            let task = move |conn: Connection| {
                let p = p.clone();
                async move {
                    conn.write(&[b'A'; A_LEN]).unwrap();
                    p.flushing.set(true);
                    conn.flush().await.unwrap();
                    p.done.set(Some((conn.sent(), conn.staged())));
                    // Dropping closes gracefully: the pumped bytes still go out.
                }
            };
            let exec = Executor::new(r, leak::<Tasks<4>>(), task).expect("executor");
            let pump = Pump {
                exec,
                conn: None,
                probe: probe.clone(),
            };
            (pump, probe)
        },
        |_, probe, r| (probe.done.get(), probe.pumped.get(), r.pool().leased()),
    );
    let mut s = connect(srv.addr);
    let got = read_to_eof(&mut s);
    let (done, pumped, leased) = srv.stop();
    let (sent, staged) = done.expect("the flush completed");
    assert!(
        sent >= A_LEN as u64,
        "completed before its bytes were sent: {sent}"
    );
    assert!(
        staged > 0 && pumped < BUDGET,
        "completed only once the slab was empty: later writes kept it waiting \
         (staged {staged}, pumped {pumped})"
    );
    assert_eq!(got.len(), A_LEN + pumped);
    assert!(got[..A_LEN].iter().all(|&b| b == b'A'));
    assert!(
        got[A_LEN..]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == pattern(i))
    );
    assert_eq!(leased, 0);
}

type Log = Rc<RefCell<Vec<String>>>;

/// Before the executor hears of a receive, wakes the task's own waker (the way a wake from
/// another thread goes: through the scheduler's queue), so the task is scheduled twice in
/// that turn; records how many times the task was polled in each such turn.
struct DoubleWake<E> {
    exec: E,
    waker: Rc<RefCell<Option<Waker>>>,
    polls: Rc<Cell<u64>>,
    data_turn: bool,
    per_turn: Vec<u64>,
}

impl<E: Handler<'static>> Handler<'static> for DoubleWake<E> {
    fn on_accept(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, l: ListenerId) {
        self.exec.on_accept(cx, conn, l);
    }
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake_by_ref();
        }
        self.data_turn = true;
        self.exec.on_data(cx, conn, lease);
    }
    fn on_read_closed(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        self.exec.on_read_closed(cx, conn);
    }
    fn on_sent(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, n: usize) {
        self.exec.on_sent(cx, conn, n);
    }
    fn on_close(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, reason: CloseReason) {
        self.exec.on_close(cx, conn, reason);
    }
    fn before_flush(&mut self, cx: &mut Context<'_, 'static>) {
        let before = self.polls.get();
        self.exec.before_flush(cx);
        if std::mem::take(&mut self.data_turn) {
            self.per_turn.push(self.polls.get() - before);
        }
    }
}

fn a_task_woken_by_its_waker_and_by_a_receive_in_one_turn_is_polled_once(backend: BackendChoice) {
    const ROUNDS: u8 = 20;
    let srv = server(
        backend,
        |r| {
            let waker: Rc<RefCell<Option<Waker>>> = Rc::default();
            let polls: Rc<Cell<u64>> = Rc::default();
            let (w2, p2) = (waker.clone(), polls.clone());
            let task = move |conn: Connection| {
                let (waker, polls) = (w2.clone(), p2.clone());
                let mut body = Box::pin(async move {
                    for round in 0..ROUNDS {
                        // Hand the task's waker to the handler for the next receive.
                        poll_fn(|cx| {
                            *waker.borrow_mut() = Some(cx.waker().clone());
                            Poll::Ready(())
                        })
                        .await;
                        let got = conn.read().await.unwrap();
                        assert_eq!(got.bytes(), 1);
                        conn.write(&[round]).unwrap();
                        conn.start_flush().unwrap();
                    }
                });
                poll_fn(move |cx| {
                    polls.set(polls.get() + 1);
                    body.as_mut().poll(cx)
                })
            };
            let exec = Executor::new(r, leak::<Tasks<4>>(), task).expect("executor");
            let h = DoubleWake {
                exec,
                waker,
                polls,
                data_turn: false,
                per_turn: Vec::new(),
            };
            (h, ())
        },
        |h, (), r| (h.per_turn, h.exec.stats(), r.pool().leased()),
    );
    let mut s = connect(srv.addr);
    for round in 0..ROUNDS {
        send(&mut s, b"?");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(b[0], round);
    }
    assert_eq!(read_to_eof(&mut s), b"", "the task ended");
    let (per_turn, stats, leased) = srv.stop();
    assert_eq!(per_turn.len(), usize::from(ROUNDS), "one receive per turn");
    assert!(
        per_turn.iter().all(|&n| n == 1),
        "polls in the turns with a receive: {per_turn:?}"
    );
    assert_eq!((stats.spawned, stats.completed), (1, 1));
    assert_eq!(leased, 0);
}

fn start_flush_sends_without_waiting_and_a_later_flush_waits_for_it(backend: BackendChoice) {
    // What the task saw once its last flush completed: the bytes sent, and how many it wrote.
    type Seen = Rc<Cell<Option<(u64, u64)>>>;
    let srv = server(
        backend,
        |r| {
            let seen: Seen = Rc::default();
            let s2 = seen.clone();
            let task = move |conn: Connection| {
                let seen = s2.clone();
                async move {
                    // Three rounds: stage, start the send, wait for the peer's answer (which
                    // it sends only once it has the bytes: so they left without a wait).
                    for round in 0..3u8 {
                        conn.write(&[b'a' + round; 1000]).unwrap();
                        conn.start_flush().unwrap();
                        let answer = conn.read().await.unwrap();
                        assert_eq!(answer.bytes(), 1);
                    }
                    // The sends completed unwatched; a flush still finds where the stream
                    // is, and waits for what is staged now.
                    conn.write(b"end").unwrap();
                    conn.flush().await.unwrap();
                    seen.set(Some((conn.sent(), 3003)));
                    // Nothing staged: completes at once.
                    conn.flush().await.unwrap();
                }
            };
            let exec = Executor::new(r, leak::<Tasks<4>>(), task).expect("executor");
            (exec, seen)
        },
        |exec, seen, r| (exec.stats(), seen.get(), r.pool().leased()),
    );
    let mut s = connect(srv.addr);
    for round in 0..3u8 {
        let mut got = vec![0u8; 1000];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, [b'a' + round; 1000], "round {round}");
        send(&mut s, b"!");
    }
    let mut end = [0u8; 3];
    s.read_exact(&mut end).unwrap();
    assert_eq!(&end, b"end");
    assert_eq!(
        read_to_eof(&mut s),
        b"",
        "the task ended and its connection closed"
    );
    let (stats, seen, leased) = srv.stop();
    let (sent, want) = seen.expect("the task finished");
    assert_eq!(
        sent, want,
        "sent counts every byte, the unwatched sends included"
    );
    assert_eq!((stats.spawned, stats.completed), (1, 1));
    assert_eq!(leased, 0);
}

fn peer_close_mid_read_is_eof_and_the_task_can_still_reply(backend: BackendChoice) {
    let srv = server(
        backend,
        |r| {
            let log: Log = Rc::default();
            let l = log.clone();
            let task = move |conn: Connection| {
                let log = l.clone();
                async move {
                    let mut total = 0;
                    let end = loop {
                        match conn.read().await {
                            Ok(s) => {
                                total += s.bytes();
                                conn.write(format!("k{}\n", s.bytes()).as_bytes()).unwrap();
                                conn.flush().await.unwrap();
                            }
                            Err(e) => break e,
                        }
                    };
                    log.borrow_mut().push(format!("{end:?}"));
                    // Half-closed: the write side still works.
                    conn.write(format!("total {total}\n").as_bytes()).unwrap();
                    conn.flush().await.unwrap();
                    // A read after the end reports the end again.
                    let again = conn.read().await.err();
                    log.borrow_mut().push(format!("{again:?}"));
                }
            };
            let exec = Executor::new(r, leak::<Tasks<4>>(), task).expect("executor");
            (exec, log)
        },
        |exec, log, r| (exec.stats(), log.take(), r.pool().leased()),
    );
    let s = connect(srv.addr);
    let mut w = s.try_clone().unwrap();
    let mut rd = BufReader::new(s);
    send(&mut w, &[7u8; 5000]);
    // Once every byte is acknowledged, the task is waiting in `read`.
    let mut acked = 0;
    while acked < 5000 {
        let mut line = String::new();
        rd.read_line(&mut line).unwrap();
        acked += line.trim()[1..].parse::<usize>().unwrap();
    }
    w.shutdown(Shutdown::Write).unwrap();
    let mut rest = String::new();
    rd.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "total 5000\n");
    let (stats, log, leased) = srv.stop();
    assert_eq!(log, ["Eof", "Some(Eof)"]);
    assert_eq!((stats.spawned, stats.completed), (1, 1));
    assert_eq!(leased, 0);
}

/// Closes each connection from a timer callback, some time after it was accepted.
struct Closer<E> {
    exec: E,
    timers: Vec<(TimerId, ConnId)>,
}

impl<E: Handler<'static>> Handler<'static> for Closer<E> {
    fn on_accept(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, l: ListenerId) {
        self.exec.on_accept(cx, conn, l);
        let t = cx.set_timer(Duration::from_millis(30), None, 1).unwrap();
        self.timers.push((t, conn));
    }
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        self.exec.on_data(cx, conn, lease);
    }
    fn on_read_closed(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        self.exec.on_read_closed(cx, conn);
    }
    fn on_sent(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, n: usize) {
        self.exec.on_sent(cx, conn, n);
    }
    fn on_timer(&mut self, cx: &mut Context<'_, 'static>, timer: TimerId, _: u64) {
        if let Some(i) = self.timers.iter().position(|&(t, _)| t == timer) {
            let (_, conn) = self.timers.remove(i);
            cx.close(conn);
        }
    }
    fn on_close(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, reason: CloseReason) {
        self.exec.on_close(cx, conn, reason);
    }
    fn before_flush(&mut self, cx: &mut Context<'_, 'static>) {
        self.exec.before_flush(cx);
    }
}

fn close_from_a_callback_fails_a_pending_read(backend: BackendChoice) {
    let srv = server(
        backend,
        |r| {
            let log: Log = Rc::default();
            let l = log.clone();
            let task = move |conn: Connection| {
                let log = l.clone();
                async move {
                    let r = conn.read().await.map(|s| s.bytes());
                    log.borrow_mut().push(format!("{r:?}"));
                    // Closed: writing fails too, and nothing panics.
                    log.borrow_mut().push(format!("{:?}", conn.write(b"late")));
                }
            };
            let exec = Executor::new(r, leak::<Tasks<4>>(), task).expect("executor");
            let closer = Closer {
                exec,
                timers: Vec::new(),
            };
            (closer, log)
        },
        |c, log, r| (c.exec.stats(), log.take(), r.pool().leased()),
    );
    let mut s = connect(srv.addr);
    // The server closes: the client sees the end without sending anything.
    assert_eq!(read_to_eof(&mut s), b"");
    let (stats, log, leased) = srv.stop();
    assert_eq!(log, ["Err(Closed(Local))", "Err(Closed(Local))"]);
    assert_eq!((stats.spawned, stats.completed), (1, 1));
    assert_eq!(leased, 0);
}

/// Closes each connection from a timer callback and, in the same turn, wakes its task
/// (before the reactor reports the close: the connection is closing, not yet closed).
struct CloseAndWake<E> {
    exec: E,
    waker: Rc<RefCell<Option<Waker>>>,
    timers: Vec<(TimerId, ConnId)>,
}

impl<E: Handler<'static>> Handler<'static> for CloseAndWake<E> {
    fn on_accept(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, l: ListenerId) {
        self.exec.on_accept(cx, conn, l);
        let t = cx.set_timer(Duration::from_millis(30), None, 1).unwrap();
        self.timers.push((t, conn));
    }
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        self.exec.on_data(cx, conn, lease);
    }
    fn on_read_closed(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        self.exec.on_read_closed(cx, conn);
    }
    fn on_sent(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, n: usize) {
        self.exec.on_sent(cx, conn, n);
    }
    fn on_timer(&mut self, cx: &mut Context<'_, 'static>, timer: TimerId, _: u64) {
        if let Some(i) = self.timers.iter().position(|&(t, _)| t == timer) {
            let (_, conn) = self.timers.remove(i);
            cx.close(conn);
            if let Some(w) = self.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }
    fn on_close(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, reason: CloseReason) {
        self.exec.on_close(cx, conn, reason);
    }
    fn before_flush(&mut self, cx: &mut Context<'_, 'static>) {
        self.exec.before_flush(cx);
    }
}

/// A connection closed by a callback is closing until the reactor reports the close: in that
/// window `write_some` must fail with `Closed`, as `write` does, not `WouldBlock` (the slab is
/// not full, and a flush of nothing completes at once: a "flush on WouldBlock and retry" loop
/// would spin in one poll for good) and not `Full` through the stream traits.
fn write_some_on_a_connection_closed_by_a_callback_is_closed_not_full(backend: BackendChoice) {
    use ringlet::stream::{ConnectionStream, WriteStream};
    let srv = server(
        backend,
        |r| {
            let log: Log = Rc::default();
            let waker: Rc<RefCell<Option<Waker>>> = Rc::default();
            let (l, w) = (log.clone(), waker.clone());
            let task = move |conn: Connection| {
                let (log, waker) = (l.clone(), w.clone());
                async move {
                    // Wait for the timer that closes the connection to wake us.
                    let mut first = true;
                    poll_fn(|cx| {
                        if std::mem::take(&mut first) {
                            *waker.borrow_mut() = Some(cx.waker().clone());
                            Poll::Pending
                        } else {
                            Poll::Ready(())
                        }
                    })
                    .await;
                    log.borrow_mut().push(format!("{:?}", conn.write(b"late")));
                    log.borrow_mut()
                        .push(format!("{:?}", conn.write_some(b"late")));
                    let mut stream = ConnectionStream::new(conn);
                    let r = stream.write_some(b"late").await;
                    log.borrow_mut().push(format!("{r:?}"));
                }
            };
            let exec = Executor::new(r, leak::<Tasks<4>>(), task).expect("executor");
            let handler = CloseAndWake {
                exec,
                waker,
                timers: Vec::new(),
            };
            (handler, log)
        },
        |h, log, r| (h.exec.stats(), log.take(), r.pool().leased()),
    );
    let mut s = connect(srv.addr);
    assert_eq!(read_to_eof(&mut s), b"");
    let (stats, log, leased) = srv.stop();
    assert_eq!(
        log,
        ["Err(Closed(Local))", "Err(Closed(Local))", "Err(Closed)"]
    );
    assert_eq!((stats.spawned, stats.completed), (1, 1));
    assert_eq!(leased, 0);
}

fn peer_reset_fails_a_pending_read_with_the_reason(backend: BackendChoice) {
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = log.clone();
    let srv = server(
        backend,
        move |r| {
            let task = move |conn: Connection| {
                let log = l.clone();
                async move {
                    let first = conn.read().await.map(|s| s.bytes());
                    conn.write(b"x").unwrap();
                    conn.flush().await.unwrap();
                    let r = conn.read().await.map(|s| s.bytes());
                    log.lock().unwrap().push(format!("{first:?} {r:?}"));
                }
            };
            let exec = Executor::new(r, leak::<Tasks<4>>(), task).expect("executor");
            (exec, ())
        },
        |exec, (), r| (exec.stats(), r.pool().leased()),
    );
    let mut s = connect(srv.addr);
    send(&mut s, b"hello");
    let mut x = [0u8; 1];
    s.read_exact(&mut x).unwrap();
    reset(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the task did not see the reset");
        thread::sleep(Duration::from_millis(5));
    }
    let (stats, leased) = srv.stop();
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].starts_with("Ok(5) Err(Closed(Error("), "{log:?}");
    assert_eq!(stats.completed, 1);
    assert_eq!(leased, 0);
}

fn task_pool_full_refuses_counts_and_recovers(backend: BackendChoice) {
    let live = Arc::new(AtomicUsize::new(0));
    let live2 = live.clone();
    let srv = server(
        backend,
        move |r| {
            let task = move |conn: Connection| {
                let live = live2.clone();
                live.fetch_add(1, Ordering::SeqCst);
                async move {
                    echo(conn).await;
                    live.fetch_sub(1, Ordering::SeqCst);
                }
            };
            let exec = Executor::new(r, leak::<Tasks<2>>(), task).expect("executor");
            (exec, ())
        },
        |exec, (), r| (exec.stats(), r.pool().leased(), r.connections()),
    );
    let roundtrip = |s: &mut std::net::TcpStream, msg: &[u8]| {
        send(s, msg);
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    };
    let mut c1 = connect(srv.addr);
    roundtrip(&mut c1, b"one");
    let mut c2 = connect(srv.addr);
    roundtrip(&mut c2, b"two");
    // Both slots taken: the third connection is refused (closed at once).
    let mut c3 = connect(srv.addr);
    let mut buf = [0u8; 8];
    match c3.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("refused connection got {n} bytes"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    // The others are still served.
    roundtrip(&mut c1, b"still");
    // One ends: its slot serves the next connection.
    c1.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut c1), b"");
    let deadline = Instant::now() + Duration::from_secs(5);
    while live.load(Ordering::SeqCst) != 1 {
        assert!(Instant::now() < deadline, "the first task did not end");
        thread::sleep(Duration::from_millis(5));
    }
    let mut c4 = connect(srv.addr);
    roundtrip(&mut c4, b"four");
    roundtrip(&mut c2, b"two again");
    drop((c2, c3, c4));
    let (stats, leased, conns) = srv.stop();
    assert_eq!(stats.refused, 1);
    assert_eq!(stats.spawned, 3);
    assert_eq!(stats.live, 0);
    assert_eq!((leased, conns), (0, 0));
}

/// Outbound connections to a plain listener: open reactor connections without accepting.
fn outbound(r: &mut Reactor<'static>, peer: &StdListener, n: usize) -> Vec<ConnId> {
    let addr = peer.local_addr().unwrap();
    (0..n).map(|_| r.context().connect(addr).unwrap()).collect()
}

fn spawn_on_a_full_pool_names_the_capacity(backend: BackendChoice) {
    let peer = StdListener::bind("127.0.0.1:0").unwrap();
    let mut r = reactor(backend);
    let conns = outbound(&mut r, &peer, 2);
    let mut exec = Executor::new(&r, leak::<Tasks<1>>(), echo).unwrap();
    assert_eq!(exec.capacity(), 1);
    exec.spawn(&mut r.context(), conns[0]).unwrap();
    let err = exec.spawn(&mut r.context(), conns[1]).unwrap_err();
    assert_eq!(err, SpawnError::PoolFull { capacity: 1 });
    assert!(
        err.to_string().contains("raise TaskStorage's TASKS"),
        "{err}"
    );
    assert!(
        r.context().is_open(conns[1]),
        "a refused spawn leaves the connection as it was"
    );
    assert_eq!(exec.stats().live, 1);
    // A closed connection cannot be handed to a task.
    r.context().abort(conns[1]);
    for _ in 0..5 {
        r.turn(&mut exec, Some(Duration::from_millis(10))).unwrap();
    }
    assert!(matches!(
        exec.spawn(&mut r.context(), conns[1]),
        Err(SpawnError::Closed)
    ));
}

/// Per spawn: how often the task was polled, and (for the first) the waker it kept.
#[derive(Default)]
struct Polls {
    spawned: Cell<usize>,
    polls: RefCell<Vec<usize>>,
    kept: Mutex<Option<Waker>>,
}

fn a_stale_waker_never_polls_the_task_that_reused_its_slot(backend: BackendChoice) {
    let peer = StdListener::bind("127.0.0.1:0").unwrap();
    let mut r = reactor(backend);
    let conns = outbound(&mut r, &peer, 2);
    let state = Rc::new(Polls::default());
    let st = state.clone();
    let task = move |conn: Connection| {
        let st = st.clone();
        let me = st.spawned.get();
        st.spawned.set(me + 1);
        st.polls.borrow_mut().push(0);
        async move {
            let _conn = conn;
            poll_fn(|cx| {
                st.polls.borrow_mut()[me] += 1;
                if me == 0 {
                    // The first task keeps its waker and finishes at once.
                    *st.kept.lock().unwrap() = Some(cx.waker().clone());
                    Poll::Ready(())
                } else {
                    // The second keeps its own waker and never finishes on its own.
                    *st.kept.lock().unwrap() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await
        }
    };
    let mut exec = Executor::new(&r, leak::<Tasks<1>>(), task).unwrap();
    exec.spawn(&mut r.context(), conns[0]).unwrap();
    r.turn(&mut exec, Some(Duration::from_millis(10))).unwrap();
    assert_eq!(exec.stats().completed, 1);
    let stale = state.kept.lock().unwrap().take().unwrap();
    // The same slot, a new task.
    exec.spawn(&mut r.context(), conns[1]).unwrap();
    r.turn(&mut exec, Some(Duration::from_millis(10))).unwrap();
    assert_eq!(*state.polls.borrow(), [1, 1]);
    let own = state.kept.lock().unwrap().take().unwrap();
    // The stale waker, woken (and cloned and dropped) on another thread: nothing runs.
    thread::spawn(move || {
        let c = stale.clone();
        stale.wake();
        c.wake_by_ref();
        drop(c);
    })
    .join()
    .unwrap();
    for _ in 0..3 {
        r.turn(&mut exec, Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(
        *state.polls.borrow(),
        [1, 1],
        "the stale waker polled the new task"
    );
    // The new task's own waker does poll it.
    thread::spawn(move || own.wake()).join().unwrap();
    r.turn(&mut exec, Some(Duration::from_secs(5))).unwrap();
    assert_eq!(*state.polls.borrow(), [1, 2]);
}

fn a_wake_from_another_thread_ends_the_loops_sleep(backend: BackendChoice) {
    let peer = StdListener::bind("127.0.0.1:0").unwrap();
    let mut r = reactor(backend);
    let conns = outbound(&mut r, &peer, 1);
    let flag = Arc::new(AtomicBool::new(false));
    let slot: Arc<Mutex<Option<Waker>>> = Arc::default();
    let done = Rc::new(Cell::new(false));
    let (f, w, d) = (flag.clone(), slot.clone(), done.clone());
    let task = move |conn: Connection| {
        let (f, w, d) = (f.clone(), w.clone(), d.clone());
        async move {
            let _conn = conn;
            poll_fn(|cx| {
                if f.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                *w.lock().unwrap() = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            d.set(true);
        }
    };
    let mut exec = Executor::new(&r, leak::<Tasks<1>>(), task).unwrap();
    exec.spawn(&mut r.context(), conns[0]).unwrap();
    r.turn(&mut exec, Some(Duration::from_millis(10))).unwrap();
    assert!(!done.get());
    let waker_thread = thread::spawn(move || {
        let w = slot
            .lock()
            .unwrap()
            .take()
            .expect("the task registered its waker");
        thread::sleep(Duration::from_millis(30));
        flag.store(true, Ordering::Release);
        let c = w.clone();
        drop(w);
        c.wake();
    });
    // The loop sleeps without a deadline of its own; only the wake can end it in time (the
    // safety bound makes a lost wake fail instead of hang).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done.get() {
        assert!(Instant::now() < deadline, "the wake never reached the loop");
        r.turn(&mut exec, Some(Duration::from_secs(10))).unwrap();
    }
    waker_thread.join().unwrap();
    assert_eq!(exec.stats().completed, 1);
}

fn dropping_the_connection_closes_it_once(backend: BackendChoice) {
    let srv = server(
        backend,
        |r| {
            let task = |mut conn: Connection| async move {
                conn.write(b"bye").unwrap();
                conn.close();
                // Closed by this task: later operations fail, a second close does nothing.
                assert_eq!(conn.write(b"x"), Err(Error::Closed(CloseReason::Local)));
                assert!(matches!(
                    conn.read().await,
                    Err(Error::Closed(CloseReason::Local))
                ));
                conn.close();
                // And the drop does nothing more.
            };
            let exec = Executor::new(r, leak::<Tasks<4>>(), task).expect("executor");
            (exec, ())
        },
        |exec, (), r| (exec.stats(), r.stats()),
    );
    let mut clients: Vec<_> = (0..3).map(|_| connect(srv.addr)).collect();
    for c in &mut clients {
        assert_eq!(read_to_eof(c), b"bye", "staged bytes still go out on close");
    }
    let (stats, rstats) = srv.stop();
    assert_eq!(stats.completed, 3);
    let closed: u64 = rstats.closed.iter().sum();
    assert_eq!(closed, 3, "{:?}", rstats.closed);
}

#[test]
fn executor_new_names_what_to_raise_or_lower() {
    let r = reactor(BackendChoice::Epoll);
    async fn big(conn: Connection) {
        let buf = [0u8; 100];
        std::future::ready(()).await;
        let _ = (conn, buf);
    }
    let size = ringlet::exec::future_size(&big);
    assert!(size >= 100);
    let err = Executor::new(&r, leak::<TaskStorage<1, 64>>(), big).unwrap_err();
    assert_eq!(err, ExecError::FutureTooLarge { size, capacity: 64 });
    assert!(
        err.to_string().contains(&format!("at least {size}")),
        "{err}"
    );
    // Exactly the computed size fits.
    Executor::new(
        &r,
        leak::<TaskStorage<1, { ringlet::exec::future_size(&big) }>>(),
        big,
    )
    .unwrap();
    // A lease quota above half the snapshot capacity is refused.
    let quota = (SNAPSHOT_LEASES / 2 + 1) as u16;
    let cfg = Config {
        backend: BackendChoice::Epoll,
        lease_quota: quota,
        ..Config::default()
    };
    let r2 = Reactor::new(leak::<Small>(), cfg).unwrap();
    assert!(matches!(
        Executor::new(&r2, leak::<Tasks<1>>(), echo),
        Err(ExecError::LeaseQuota { quota: q, .. }) if q == quota
    ));
}

fn a_connection_moved_to_another_task_works_and_frees_its_slot_when_dropped(
    backend: BackendChoice,
) {
    let srv = server(
        backend,
        |r| {
            let cell: Rc<RefCell<(Option<Connection>, Option<Waker>)>> = Rc::default();
            let n = Rc::new(Cell::new(0));
            let task = move |conn: Connection| {
                let (cell, n) = (cell.clone(), n.clone());
                let me = n.get();
                n.set(me + 1);
                async move {
                    if me == 0 {
                        // The first task hands its connection over and finishes.
                        let waiting = {
                            let mut c = cell.borrow_mut();
                            c.0 = Some(conn);
                            c.1.take()
                        };
                        if let Some(w) = waiting {
                            w.wake();
                        }
                        return;
                    }
                    if me == 1 {
                        let moved = poll_fn(|cx| {
                            let mut c = cell.borrow_mut();
                            match c.0.take() {
                                Some(moved) => Poll::Ready(moved),
                                None => {
                                    c.1 = Some(cx.waker().clone());
                                    Poll::Pending
                                }
                            }
                        })
                        .await;
                        // Echo one message on the moved connection, then drop it.
                        let s = moved.read().await.unwrap();
                        for b in s.iter() {
                            moved.write(b).unwrap();
                        }
                        drop(s);
                        moved.flush().await.unwrap();
                        drop(moved);
                    }
                    echo(conn).await;
                }
            };
            let exec = Executor::new(r, leak::<Tasks<2>>(), task).expect("executor");
            (exec, ())
        },
        |exec, (), r| (exec.stats(), r.pool().leased(), r.connections()),
    );
    let roundtrip = |s: &mut std::net::TcpStream, msg: &[u8]| {
        send(s, msg);
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    };
    // Task A hands its connection over and is done; B takes it (whichever runs first).
    let mut a = connect(srv.addr);
    let mut b = connect(srv.addr);
    roundtrip(&mut a, b"served by the second task");
    assert_eq!(
        read_to_eof(&mut a),
        b"",
        "dropping the moved connection closed it"
    );
    roundtrip(&mut b, b"b");
    // Both slots were taken (A held, B live); A's is free again: a third client is served.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut c = loop {
        let mut c = connect(srv.addr);
        send(&mut c, b"c");
        let mut one = [0u8; 1];
        match c.read(&mut one) {
            Ok(1) => break c,
            _ => {
                assert!(Instant::now() < deadline, "the held slot was never freed");
                thread::sleep(Duration::from_millis(10));
            }
        }
    };
    roundtrip(&mut c, b"cc");
    drop((b, c));
    let (stats, leased, conns) = srv.stop();
    assert!(stats.spawned >= 3, "{stats:?}");
    assert_eq!(stats.live, 0, "{stats:?}");
    assert_eq!((leased, conns), (0, 0));
}

/// What the tasks of the slot-reuse test share.
#[derive(Default)]
struct Handover {
    moved: Option<Connection>,
    b: Option<Waker>,
    c: Option<Waker>,
    c_has_bytes: bool,
    seen: Option<(usize, u64)>,
    done: bool,
}

/// Waits until `ready` holds, keeping the waker in `slot` for whoever makes it so.
async fn wait_until(
    h: &Rc<RefCell<Handover>>,
    ready: impl Fn(&Handover) -> bool,
    slot: fn(&mut Handover) -> &mut Option<Waker>,
) {
    poll_fn(|cx| {
        let mut s = h.borrow_mut();
        if ready(&s) {
            return Poll::Ready(());
        }
        *slot(&mut s) = Some(cx.waker().clone());
        Poll::Pending
    })
    .await;
}

/// A connection moved out of its finished task keeps that task's slot until it is closed;
/// then the slot serves a new task. The closed connection must not report the new task's
/// state as its own: `buffered()` of a closed connection is 0, not the unread bytes of the
/// connection that now has the slot, and `sent()` is not that connection's count.
fn a_closed_moved_connection_reports_nothing_of_the_task_that_reused_its_slot(
    backend: BackendChoice,
) {
    let srv = server(
        backend,
        |r| {
            let shared: Rc<RefCell<Handover>> = Rc::default();
            let n = Rc::new(Cell::new(0));
            let sh = shared.clone();
            let task = move |conn: Connection| {
                let (h, n) = (sh.clone(), n.clone());
                let me = n.get();
                n.set(me + 1);
                async move {
                    match me {
                        0 => {
                            // Hand the connection over and finish: the slot is held.
                            let waiting = {
                                let mut s = h.borrow_mut();
                                s.moved = Some(conn);
                                s.b.take()
                            };
                            if let Some(w) = waiting {
                                w.wake();
                            }
                        }
                        1 => {
                            wait_until(&h, |s| s.moved.is_some(), |s| &mut s.b).await;
                            let mut moved = h.borrow_mut().moved.take().unwrap();
                            // Closing it frees the held slot for the next task.
                            moved.close();
                            wait_until(&h, |s| s.c_has_bytes, |s| &mut s.b).await;
                            let seen = (moved.buffered(), moved.sent());
                            let waiting = {
                                let mut s = h.borrow_mut();
                                s.seen = Some(seen);
                                s.done = true;
                                s.c.take()
                            };
                            if let Some(w) = waiting {
                                w.wake();
                            }
                            drop((moved, conn));
                        }
                        _ => {
                            // In the freed slot: wait (polling) until bytes are unread here.
                            poll_fn(|cx| {
                                if conn.buffered() > 0 {
                                    Poll::Ready(())
                                } else {
                                    cx.waker().wake_by_ref();
                                    Poll::Pending
                                }
                            })
                            .await;
                            // And bytes sent, noted by a flush that waited for them.
                            if write_all(&conn, b"hi").await.is_err() || conn.flush().await.is_err()
                            {
                                return;
                            }
                            let waiting = {
                                let mut s = h.borrow_mut();
                                s.c_has_bytes = true;
                                s.b.take()
                            };
                            if let Some(w) = waiting {
                                w.wake();
                            }
                            wait_until(&h, |s| s.done, |s| &mut s.c).await;
                            echo(conn).await;
                        }
                    }
                }
            };
            let exec = Executor::new(r, leak::<Tasks<2>>(), task).expect("executor");
            (exec, shared)
        },
        |exec, shared, r| {
            let seen = shared.borrow().seen;
            (exec.stats(), seen, r.pool().leased())
        },
    );
    let mut a = connect(srv.addr);
    let mut b = connect(srv.addr);
    assert_eq!(read_to_eof(&mut a), b"", "the moved connection was closed");
    drop(a);
    // Both slots were taken until the moved connection closed: retry until served.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut c = loop {
        let mut c = connect(srv.addr);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        send(&mut c, b"hello");
        let mut back = [0u8; 7];
        if c.read_exact(&mut back).is_ok() {
            assert_eq!(&back, b"hihello");
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the freed slot never served a task"
        );
        thread::sleep(Duration::from_millis(10));
    };
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut c), b"");
    assert_eq!(read_to_eof(&mut b), b"", "task B finished");
    let (stats, seen, leased) = srv.stop();
    assert_eq!(
        seen,
        Some((0, 0)),
        "a closed connection has no unread bytes, and sent nothing"
    );
    assert_eq!(stats.live, 0, "{stats:?}");
    assert_eq!(leased, 0);
}

/// Keeps the first connection's `Connection` (handed over by its task) and drops it in
/// `before_flush`, after the executor's poll phase: outside any task's poll, where there is
/// no turn's `Context` to close it with.
struct DropOutside<E> {
    exec: E,
    kept: Rc<RefCell<Option<Connection>>>,
}

impl<E: Handler<'static>> Handler<'static> for DropOutside<E> {
    fn on_accept(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, l: ListenerId) {
        self.exec.on_accept(cx, conn, l);
    }
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        self.exec.on_data(cx, conn, lease);
    }
    fn on_read_closed(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        self.exec.on_read_closed(cx, conn);
    }
    fn on_sent(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, n: usize) {
        self.exec.on_sent(cx, conn, n);
    }
    fn on_close(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, reason: CloseReason) {
        self.exec.on_close(cx, conn, reason);
    }
    fn before_flush(&mut self, cx: &mut Context<'_, 'static>) {
        self.exec.before_flush(cx);
        drop(self.kept.borrow_mut().take());
    }
}

/// Dropping a `Connection` outside a task's poll closes the reactor connection all the same
/// (in the executor's next poll phase), and the task slot it held serves the next connection.
fn a_connection_dropped_outside_a_poll_is_closed_and_frees_its_slot(backend: BackendChoice) {
    let srv = server(
        backend,
        |r| {
            let kept: Rc<RefCell<Option<Connection>>> = Rc::default();
            let k = kept.clone();
            let first = Cell::new(true);
            let task = move |conn: Connection| {
                let hand_over = first.replace(false);
                let k = k.clone();
                async move {
                    if hand_over {
                        conn.write(b"bye").unwrap();
                        *k.borrow_mut() = Some(conn);
                    } else {
                        echo(conn).await;
                    }
                }
            };
            // One slot: the second connection is served only once the first frees it.
            let exec = Executor::new(r, leak::<Tasks<1>>(), task).expect("executor");
            (DropOutside { exec, kept }, ())
        },
        |h, (), r| (h.exec.stats(), r.stats(), r.pool().leased()),
    );
    let mut a = connect(srv.addr);
    assert_eq!(
        read_to_eof(&mut a),
        b"bye",
        "closed, staged bytes sent first"
    );
    // The slot is free again: a new connection gets a task (retry while the refusal of an
    // early attempt is still possible).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut b = loop {
        let mut b = connect(srv.addr);
        send(&mut b, b"again");
        let mut back = [0u8; 5];
        if b.read_exact(&mut back).is_ok() {
            assert_eq!(&back, b"again");
            break b;
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        thread::sleep(Duration::from_millis(10));
    };
    b.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut b), b"");
    let (stats, rstats, leased) = srv.stop();
    assert_eq!(stats.live, 0, "{stats:?}");
    assert_eq!(
        rstats.closed[0] + rstats.closed[1],
        rstats.accepted,
        "{rstats:?}"
    );
    assert_eq!(leased, 0);
}
