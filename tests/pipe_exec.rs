//! The async face of `ConnectionPipeReader` (`Connection::pipe_reader`, `TaskPipeReader`) in
//! executor tasks against the real kernel on loopback, on BOTH backends: a NATS-like parser
//! fed input split at every byte boundary, examined semantics counted in polls, the peer
//! closing mid-message, a callback closing the connection under a pending read, and the
//! lease quota pausing and resuming the receive.

mod exec_util;
mod reactor_util;

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use exec_util::server;
use reactor_util::{connect, leak, read_to_eof, send};
use ringlet::exec::{Connection, Error, Executor, TaskStorage};
use ringlet::pipe::{ConnectionPipeReader, Position, ReadBuf, TaskPipeReader};
use ringlet::pool::Lease;
use ringlet::reactor::{BackendChoice, CloseReason, Config, ConnId, Context, Handler, ListenerId};

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(#[test] fn $name() { super::$name(ringlet::reactor::BackendChoice::Uring) })*
        }
        mod epoll {
            $(#[test] fn $name() { super::$name(ringlet::reactor::BackendChoice::Epoll) })*
        }
    };
}

both!(
    a_task_parser_needing_data_sees_every_split_as_a_receive_boundary,
    a_read_after_examining_everything_waits_for_new_bytes_without_polls,
    peer_close_mid_message_completes_the_read_with_the_unparsed_tail,
    close_from_a_callback_fails_the_pending_pipe_read,
    the_lease_quota_pauses_the_receive_and_consuming_resumes_it,
    a_reader_full_of_examined_bytes_with_more_waiting_reports_overrun,
);

/// Task slots big enough for a reader's storage in the future.
type Tasks<const N: usize> = TaskStorage<N, 16384>;

/// The reader's storage: 32 segments, a 256-byte carry.
type Storage = ConnectionPipeReader<'static, 32, 256>;
const CARRY: usize = 256;
const QUOTA: usize = 8;

/// Shared log of a server's tasks (loop thread only).
type Log<T> = Rc<RefCell<T>>;

/// The input: control lines and `PUB <subject> <n>` with `n` payload bytes and CRLF.
const MESSAGE: &[u8] = b"PING\r\nSUB foo.bar 1\r\nPUB foo.bar 11\r\nhello world\r\n\
PUB x 0\r\n\r\nPUB big 40\r\n0123456789012345678901234567890123456789\r\nPONG\r\n";

/// The replies to `MESSAGE`, one line per message.
const REPLIES: [&str; 6] = [
    "L:PING",
    "L:SUB foo.bar 1",
    "P:PUB foo.bar 11|hello world",
    "P:PUB x 0|",
    "P:PUB big 40|0123456789012345678901234567890123456789",
    "L:PONG",
];

/// Parses every whole message in `buf`, appending one reply line each; returns (consumed,
/// examined): a message whose end has not arrived is examined whole and not consumed.
fn parse(buf: ReadBuf<'_>, out: &mut Vec<u8>) -> (Position, Position) {
    let mut rest = buf;
    loop {
        let Some(n) = rest.find(b"\r\n") else {
            return (rest.start(), buf.end());
        };
        let line: Vec<u8> = rest.slice(..n).unwrap().bytes().collect();
        let after = rest.slice(n + 2..).unwrap();
        if line.starts_with(b"PUB ") {
            let size: usize = std::str::from_utf8(&line)
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            // The payload and its CRLF, across leases and the carry: wait until all came.
            let Some(payload) = after.slice(..size + 2) else {
                return (rest.start(), buf.end());
            };
            assert!(payload.slice(size..).unwrap() == *b"\r\n", "payload end");
            out.extend_from_slice(b"P:");
            out.extend_from_slice(&line);
            out.push(b'|');
            out.extend(payload.slice(..size).unwrap().bytes());
            rest = after.slice(size + 2..).unwrap();
        } else {
            out.extend_from_slice(b"L:");
            out.extend_from_slice(&line);
            rest = after;
        }
        out.push(b'\n');
    }
}

/// Waits for the reader's next read, counting the polls of that wait. The view is then taken
/// with `try_read` (the poll form's result borrows the reader, which a counting closure
/// cannot hand out).
async fn wait_counting(
    reader: &mut TaskPipeReader<'_, 32, 256>,
    polls: &mut usize,
) -> Result<(), Error> {
    poll_fn(|cx| {
        *polls += 1;
        reader.poll_read(cx).map(|r| r.map(|_| ()))
    })
    .await
}

#[derive(Default, Debug)]
struct ParseStats {
    reads: usize,
    /// Reads that found nothing new and had to wait.
    waits: usize,
    /// The most polls one read took (1: ready at once; 2: one wait, one wake-up).
    max_polls: usize,
    /// The most leases held after an advance that left a tail fitting the carry.
    idle_leases: usize,
    /// `try_read` right after examining everything found nothing new (should be every time).
    nothing_new: usize,
    /// Parsed on EOF: the tasks that ended at the end of stream.
    ended: usize,
}

/// The parser task: after each read it replies to the messages it parsed, then sends a
/// receipt `#<bytes received so far>`, flushes, and reads again, until the end of stream.
async fn receipts(conn: Connection, log: Log<ParseStats>) {
    let mut storage = Storage::new(QUOTA).unwrap();
    let mut reader = conn.pipe_reader(&mut storage);
    loop {
        let mut polls = 0;
        if wait_counting(&mut reader, &mut polls).await.is_err() {
            return;
        }
        let result = reader.try_read().unwrap().expect("ready: something new");
        let mut out = Vec::new();
        let (consumed, examined) = parse(result.buffer(), &mut out);
        let done = result.is_completed();
        reader.advance_to_examined(consumed, examined).unwrap();
        {
            let mut s = log.borrow_mut();
            s.reads += 1;
            s.max_polls = s.max_polls.max(polls);
            if polls > 1 {
                s.waits += 1;
            }
            let rd = reader.reader();
            if rd.unread_len() <= CARRY {
                s.idle_leases = s.idle_leases.max(rd.held_leases());
            }
        }
        if done {
            log.borrow_mut().ended += 1;
            return;
        }
        // Everything examined (bytes arrive between polls only): nothing new now.
        if matches!(reader.try_read(), Ok(None)) {
            log.borrow_mut().nothing_new += 1;
        }
        out.extend_from_slice(format!("#{}\n", reader.reader().received()).as_bytes());
        conn.write(&out).unwrap();
        if conn.flush().await.is_err() {
            return;
        }
    }
}

/// Reads reply lines until the receipt for `total` bytes; returns the replies before it
/// (receipts for fewer bytes, from a part the kernel split further, are skipped).
fn replies_until_receipt(r: &mut BufReader<TcpStream>, total: usize) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).expect("read_line") > 0, "EOF");
        let line = line.trim_end_matches('\n');
        match line.strip_prefix('#') {
            Some(n) => {
                let n: usize = n.parse().unwrap();
                assert!(n <= total, "received {n} of {total}");
                if n == total {
                    return out;
                }
            }
            None => out.push(line.to_string()),
        }
    }
}

/// A server running `receipts` per connection; reports the parse stats, the executor's task
/// polls and completions, and the pool's leases out.
fn receipts_server(backend: BackendChoice) -> exec_util::Server<(ParseStats, u64, u64, usize)> {
    server(
        backend,
        |r| {
            let log: Log<ParseStats> = Rc::default();
            let l = log.clone();
            let task = move |conn: Connection| receipts(conn, l.clone());
            let exec = Executor::new(r, leak::<Tasks<8>>(), task).expect("executor");
            (exec, log)
        },
        |exec, log, r| {
            let s = exec.stats();
            (log.take(), s.polls, s.completed, r.pool().leased())
        },
    )
}

/// Ends the stream and waits for the server's close: the task saw the end and dropped its
/// connection.
fn end_and_wait(mut c: TcpStream) {
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut c), b"");
}

fn a_task_parser_needing_data_sees_every_split_as_a_receive_boundary(backend: BackendChoice) {
    let srv = receipts_server(backend);
    let n = MESSAGE.len();

    // One byte per receive, on one connection: the parser resumes at every byte.
    let mut c = connect(srv.addr);
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut got = Vec::new();
    for i in 0..n {
        send(&mut c, &MESSAGE[i..i + 1]);
        got.extend(replies_until_receipt(&mut r, i + 1));
    }
    assert_eq!(got, REPLIES, "one byte per receive");
    end_and_wait(c);

    // Every split point, each on its own connection: the first part is received (its
    // receipt came back) before the rest is sent.
    for i in 1..n {
        let mut c = connect(srv.addr);
        let mut r = BufReader::new(c.try_clone().unwrap());
        send(&mut c, &MESSAGE[..i]);
        let mut got = replies_until_receipt(&mut r, i);
        send(&mut c, &MESSAGE[i..]);
        got.extend(replies_until_receipt(&mut r, n));
        assert_eq!(got, REPLIES, "split at {i}");
        end_and_wait(c);
    }

    let (s, _polls, completed, leased) = srv.stop();
    assert_eq!(completed as usize, n, "one task per connection, each ended");
    assert_eq!(s.ended, n, "every task ended at the end of stream");
    assert_eq!(leased, 0, "every receive lease went back");
    // Each read that waited was polled once more, when bytes came: never a busy loop.
    assert!(s.max_polls <= 2, "{s:?}");
    // The parser needed data at most byte positions, and waited for it there.
    assert!(s.reads >= n + 2 * (n - 1), "{s:?}");
    assert!(s.waits >= n, "{s:?}");
    assert_eq!(s.nothing_new, s.reads - s.ended, "{s:?}");
    assert_eq!(
        s.idle_leases, 0,
        "a pending tail is carried, not leased: {s:?}"
    );
}

fn a_read_after_examining_everything_waits_for_new_bytes_without_polls(backend: BackendChoice) {
    let srv = receipts_server(backend);
    let mut c = connect(srv.addr);
    let mut r = BufReader::new(c.try_clone().unwrap());
    // A PUB whose payload has not come: the task examines it, replies with the receipt, then
    // waits in `read`.
    let head = b"PUB x 10\r\nhel";
    send(&mut c, head);
    assert!(replies_until_receipt(&mut r, head.len()).is_empty());
    // The loop keeps turning (20 ms waits) meanwhile; the waiting task must not be polled.
    thread::sleep(Duration::from_millis(200));
    let tail = b"lo worl\r\nPING\r\n";
    send(&mut c, tail);
    let got = replies_until_receipt(&mut r, head.len() + tail.len());
    assert_eq!(got, ["P:PUB x 10|hello worl", "L:PING"]);
    end_and_wait(c);
    let (s, polls, completed, leased) = srv.stop();
    eprintln!("{backend:?}: {polls} task polls, {s:?}");
    assert_eq!((completed, leased), (1, 0));
    // Two reads with bytes, one at the end of stream; the second waited exactly once.
    assert_eq!(s.reads, 3, "{s:?}");
    assert!(s.max_polls <= 2, "{s:?}");
    assert_eq!(s.nothing_new, 2, "{s:?}");
    // The whole task, over 200 ms of turns: at most one poll per place it can wait (three
    // reads and two flushes) plus the last one; a task polled while it waits has more.
    assert!(
        polls <= 6,
        "{polls} polls: the task was polled while waiting"
    );
}

fn peer_close_mid_message_completes_the_read_with_the_unparsed_tail(backend: BackendChoice) {
    let srv = server(
        backend,
        |r| {
            let log: Log<Vec<String>> = Rc::default();
            let l = log.clone();
            let task = move |conn: Connection| {
                let log = l.clone();
                async move {
                    let mut storage = Storage::new(QUOTA).unwrap();
                    let mut reader = conn.pipe_reader(&mut storage);
                    loop {
                        let result = match reader.read().await {
                            Ok(r) => r,
                            Err(e) => return log.borrow_mut().push(format!("{e:?}")),
                        };
                        let buf = result.buffer();
                        let mut out = Vec::new();
                        let (consumed, examined) = parse(buf, &mut out);
                        if result.is_completed() {
                            let tail: Vec<u8> = buf.slice(..).unwrap().bytes().collect();
                            let line = format!(
                                "end with {} unparsed: {}",
                                buf.len(),
                                String::from_utf8_lossy(&tail).escape_debug()
                            );
                            log.borrow_mut().push(line.clone());
                            conn.write(format!("{line}\n").as_bytes()).unwrap();
                            conn.flush().await.unwrap();
                            // A read after the end reports it again, with the same bytes.
                            let again = reader
                                .read()
                                .await
                                .map(|r| (r.is_completed(), r.buffer().len()));
                            log.borrow_mut().push(format!("{again:?}"));
                            return;
                        }
                        reader.advance_to_examined(consumed, examined).unwrap();
                        out.extend_from_slice(
                            format!("#{}\n", reader.reader().received()).as_bytes(),
                        );
                        conn.write(&out).unwrap();
                        conn.flush().await.unwrap();
                    }
                }
            };
            let exec = Executor::new(r, leak::<Tasks<4>>(), task).expect("executor");
            (exec, log)
        },
        |exec, log, r| (exec.stats(), log.take(), r.pool().leased()),
    );
    let mut c = connect(srv.addr);
    let mut r = BufReader::new(c.try_clone().unwrap());
    let head = b"PING\r\nPUB x 10\r\nhel";
    send(&mut c, head);
    assert_eq!(replies_until_receipt(&mut r, head.len()), ["L:PING"]);
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "end with 13 unparsed: PUB x 10\\r\\nhel\n");
    let (stats, log, leased) = srv.stop();
    assert_eq!(
        log,
        ["end with 13 unparsed: PUB x 10\\r\\nhel", "Ok((true, 13))"]
    );
    assert_eq!((stats.spawned, stats.completed), (1, 1));
    assert_eq!(leased, 0);
}

/// Forwards everything to the executor, except a receive starting with `!`: that one is
/// dropped and the connection closed, from the callback.
struct CloseOnBang<E> {
    exec: E,
}

impl<E: Handler<'static>> Handler<'static> for CloseOnBang<E> {
    fn on_accept(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, l: ListenerId) {
        self.exec.on_accept(cx, conn, l);
    }
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        if lease.as_slice().first() == Some(&b'!') {
            drop(lease);
            cx.close(conn);
        } else {
            self.exec.on_data(cx, conn, lease);
        }
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
    }
}

fn close_from_a_callback_fails_the_pending_pipe_read(backend: BackendChoice) {
    let srv = server(
        backend,
        |r| {
            let log: Log<Vec<String>> = Rc::default();
            let l = log.clone();
            let task = move |conn: Connection| {
                let log = l.clone();
                async move {
                    let mut storage = Storage::new(QUOTA).unwrap();
                    let mut reader = conn.pipe_reader(&mut storage);
                    loop {
                        let mut polls = 0;
                        let waited = wait_counting(&mut reader, &mut polls).await;
                        let Ok(()) = waited else {
                            let rd = reader.reader();
                            // 2 polls when the read was waiting as the close came, as it
                            // usually is; 1 when the close came first (the receipt can reach
                            // the client before the task sees its flush complete).
                            assert!(polls <= 2, "{polls} polls");
                            log.borrow_mut()
                                .push(format!("{waited:?}, {} unread bytes kept", rd.unread_len()));
                            // Failing again, at once, and never waiting.
                            let again = reader.read().await.map(|r| r.buffer().len());
                            log.borrow_mut().push(format!("{again:?}"));
                            return;
                        };
                        let result = reader.try_read().unwrap().unwrap();
                        let mut out = Vec::new();
                        let (consumed, examined) = parse(result.buffer(), &mut out);
                        reader.advance_to_examined(consumed, examined).unwrap();
                        out.extend_from_slice(
                            format!("#{}\n", reader.reader().received()).as_bytes(),
                        );
                        conn.write(&out).unwrap();
                        conn.flush().await.unwrap();
                    }
                }
            };
            let exec = Executor::new(r, leak::<Tasks<4>>(), task).expect("executor");
            (CloseOnBang { exec }, log)
        },
        |c, log, r| (c.exec.stats(), log.take(), r.pool().leased()),
    );
    let mut c = connect(srv.addr);
    let mut r = BufReader::new(c.try_clone().unwrap());
    let head = b"PUB x 10\r\nhel";
    send(&mut c, head);
    assert!(replies_until_receipt(&mut r, head.len()).is_empty());
    // The task now waits in its read, with the partial message examined (or is about to:
    // the pause only makes the waiting case the usual one; both must fail the read).
    thread::sleep(Duration::from_millis(50));
    send(&mut c, b"!");
    assert_eq!(read_to_eof(&mut c), b"");
    let (stats, log, leased) = srv.stop();
    assert_eq!(
        log,
        [
            "Err(Closed(Local)), 13 unread bytes kept",
            "Err(Closed(Local))"
        ]
    );
    assert_eq!((stats.spawned, stats.completed), (1, 1));
    assert_eq!(leased, 0, "the reader's storage gave its leases back");
}

/// A gate a task waits at until another thread opens it.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }

    async fn wait(&self) {
        poll_fn(|cx| {
            if self.open.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.open.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// What the quota task saw.
#[derive(Default, Debug, Clone)]
struct QuotaReport {
    /// Bytes received when the reader paused the receive, and the leases it held then.
    at_pause: (u64, usize),
    /// Bytes received, and leases held, after the gate opened (the receive stayed paused).
    at_gate: (u64, usize),
    pauses: usize,
    resumes: usize,
    max_leases: usize,
    /// The most leases held at a read in phase 2 (before consuming), past its first read.
    streaming_max_leases: usize,
    total: u64,
    sum: u64,
    end: String,
}

const QUOTA_SMALL: usize = 4;
const BIG: usize = 1 << 20;

fn pattern(i: usize) -> u8 {
    (i * 7 + i / 251) as u8
}

/// Phase 1: examine everything, consume nothing, until the reader paused the receive at its
/// quota; report; wait at the gate. Phase 2: consume everything as it comes, until the end.
async fn quota_task(
    conn: Connection,
    gate: Arc<Gate>,
    paused: Arc<AtomicU64>,
    out: Arc<Mutex<QuotaReport>>,
) {
    let mut storage = Storage::new(QUOTA_SMALL).unwrap();
    let mut reader = conn.pipe_reader(&mut storage);
    let mut rep = QuotaReport::default();
    let mut was_paused = false;
    let mut note = |reader: &TaskPipeReader<'_, 32, 256>, rep: &mut QuotaReport| {
        let rd = reader.reader();
        rep.max_leases = rep.max_leases.max(rd.held_leases());
        match (was_paused, rd.is_paused()) {
            (false, true) => rep.pauses += 1,
            (true, false) => rep.resumes += 1,
            _ => {}
        }
        was_paused = rd.is_paused();
    };
    let start = loop {
        let Ok(result) = reader.read().await else {
            rep.end = "closed in phase 1".into();
            *out.lock().unwrap() = rep;
            return;
        };
        let (start, end) = (result.buffer().start(), result.buffer().end());
        reader.advance_to_examined(start, end).unwrap();
        note(&reader, &mut rep);
        if reader.reader().is_paused() {
            break start;
        }
    };
    let rd = reader.reader();
    rep.at_pause = (rd.received(), rd.held_leases());
    paused.store(rd.received(), Ordering::Release);
    gate.wait().await;
    // What arrived while the task waited (receives under way when it paused) comes in now.
    let _ = reader.try_read().unwrap();
    let rd = reader.reader();
    rep.at_gate = (rd.received(), rd.held_leases());
    // Nothing examined after all: the next read hands out everything held at once (a read
    // now would wait for bytes past what was examined, and none come while paused).
    reader.advance_to_examined(start, start).unwrap();
    loop {
        let mut polls = 0;
        let waited = wait_counting(&mut reader, &mut polls).await;
        if rep.total > 0 {
            // Past the first read, which hands out what phase 1 held.
            let held = reader.reader().held_leases();
            rep.streaming_max_leases = rep.streaming_max_leases.max(held);
        }
        match waited.and_then(|()| reader.try_read()) {
            Ok(Some(result)) => {
                let buf = result.buffer();
                for seg in buf.segments() {
                    for (k, &b) in seg.iter().enumerate() {
                        assert_eq!(
                            b,
                            pattern(rep.total as usize + k),
                            "byte {}",
                            rep.total as usize + k
                        );
                    }
                    rep.total += seg.len() as u64;
                    rep.sum += seg.iter().map(|&b| u64::from(b)).sum::<u64>();
                }
                let (end, done) = (buf.end(), result.is_completed());
                reader.advance_to(end).unwrap();
                note(&reader, &mut rep);
                if done {
                    rep.end = "completed".into();
                    break;
                }
            }
            Ok(None) => unreachable!("a read that is ready has something new"),
            Err(e) => {
                rep.end = format!("{e:?}");
                break;
            }
        }
    }
    *out.lock().unwrap() = rep;
}

fn the_lease_quota_pauses_the_receive_and_consuming_resumes_it(backend: BackendChoice) {
    let gate = Arc::new(Gate::default());
    let paused = Arc::new(AtomicU64::new(0));
    let out: Arc<Mutex<QuotaReport>> = Arc::default();
    let (g, p, o) = (gate.clone(), paused.clone(), out.clone());
    let srv = server(
        backend,
        move |r| {
            let task = move |conn: Connection| quota_task(conn, g.clone(), p.clone(), o.clone());
            let exec = Executor::new(r, leak::<Tasks<2>>(), task).expect("executor");
            (exec, ())
        },
        |exec, (), r| (exec.stats(), r.pool().leased(), r.stats().bytes_in),
    );
    let mut c = connect(srv.addr);
    let sent = Arc::new(AtomicUsize::new(0));
    let s2 = sent.clone();
    let writer = thread::spawn(move || {
        let data: Vec<u8> = (0..BIG).map(pattern).collect();
        for chunk in data.chunks(16384) {
            c.write_all(chunk).unwrap();
            s2.fetch_add(chunk.len(), Ordering::Release);
        }
        c.shutdown(Shutdown::Write).unwrap();
        c
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while paused.load(Ordering::Acquire) == 0 {
        assert!(Instant::now() < deadline, "the reader never paused");
        thread::sleep(Duration::from_millis(5));
    }
    // Give a receive that did not pause time to show it: the loop keeps turning, and the
    // peer has far more to send than the quota holds.
    thread::sleep(Duration::from_millis(200));
    let sent_while_paused = sent.load(Ordering::Acquire);
    gate.open();
    let mut c = writer.join().unwrap();
    assert_eq!(read_to_eof(&mut c), b"");
    let (stats, leased, bytes_in) = srv.stop();
    let rep = out.lock().unwrap().clone();
    eprintln!("{backend:?}: {rep:?}, {sent_while_paused} sent while paused");
    assert_eq!(rep.end, "completed", "{rep:?}");
    assert_eq!(rep.total as usize, BIG, "every byte read, in order");
    assert_eq!(
        rep.sum,
        (0..BIG).map(|i| u64::from(pattern(i))).sum::<u64>()
    );
    assert_eq!(bytes_in as usize, BIG);
    // Paused at the quota, and it held: while the peer had far more to send, what came in
    // stayed within the quota and the receives under way when it paused. The first pause may
    // come at the reactor's configured quota on io_uring (the receive armed at accept, before
    // the task set the reader's quota, is capped by the old one) ...
    let configured = usize::from(Config::default().lease_quota);
    assert!(rep.at_pause.1 >= QUOTA_SMALL, "{rep:?}");
    assert!(rep.at_gate.0 < sent_while_paused as u64, "{rep:?}");
    assert!(rep.at_gate.1 <= 2 * QUOTA_SMALL.max(configured), "{rep:?}");
    // ... after that, the reader's quota holds on both backends: at most the quota plus the
    // receives under way (one armed receive's byte cap: the quota's worth) were ever held.
    assert!(rep.streaming_max_leases <= 2 * QUOTA_SMALL, "{rep:?}");
    // Consuming resumed it: every pause was followed by a resume.
    assert!(rep.pauses >= 1 && rep.resumes == rep.pauses, "{rep:?}");
    assert_eq!((stats.spawned, stats.completed), (1, 1));
    assert_eq!(leased, 0, "the pool is full again");
}

/// Forwards everything to the executor, raising each connection's lease quota to 16 at
/// every receive: above what a reader of 2 segments can hold, whatever quota it set.
struct RaiseQuota<E> {
    exec: E,
}

impl<E: Handler<'static>> Handler<'static> for RaiseQuota<E> {
    fn on_accept(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, l: ListenerId) {
        self.exec.on_accept(cx, conn, l);
    }
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        cx.set_lease_quota(conn, Some(16)).unwrap();
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
    }
}

fn a_reader_full_of_examined_bytes_with_more_waiting_reports_overrun(backend: BackendChoice) {
    let srv = server(
        backend,
        |r| {
            let log: Log<Vec<String>> = Rc::default();
            let l = log.clone();
            let task = move |conn: Connection| {
                let log = l.clone();
                async move {
                    // Two segments, no carry: at most 4 KiB of 2 KiB buffers.
                    let mut storage = ConnectionPipeReader::<'static, 2, 0>::new(2).unwrap();
                    let mut reader = conn.pipe_reader(&mut storage);
                    let mut views = 0;
                    // A parser that never finds what it needs: examines all, consumes nothing.
                    let end = loop {
                        match reader.read().await {
                            Ok(result) => {
                                let buf = result.buffer();
                                let (start, end) = (buf.start(), buf.end());
                                assert!(!result.is_completed());
                                reader.advance_to_examined(start, end).unwrap();
                                views += 1;
                            }
                            Err(e) => break e,
                        }
                    };
                    let rd = reader.reader();
                    log.borrow_mut().push(format!("{end:?}"));
                    log.borrow_mut().push(format!(
                        "views {}, held {} leases, {} bytes",
                        views > 0,
                        rd.held_leases(),
                        rd.unread_len()
                    ));
                    // The end is reported again, at once.
                    let again = reader.read().await.err();
                    log.borrow_mut().push(format!("{again:?}"));
                }
            };
            let exec = Executor::new(r, leak::<Tasks<2>>(), task).expect("executor");
            (RaiseQuota { exec }, log)
        },
        |h, log, r| (h.exec.stats(), log.take(), r.pool().leased()),
    );
    let mut c = connect(srv.addr);
    // Far more than 2 segments and the connection's quota hold; the server aborts the
    // connection, so writing may fail part way (reset), and reading ends in EOF or reset.
    let data = vec![b'a'; 256 * 1024];
    let _ = c.write_all(&data);
    let mut sink = Vec::new();
    let _ = c.read_to_end(&mut sink);
    let (stats, log, leased) = srv.stop();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[0], "Overrun");
    assert_eq!(
        log[1], "views true, held 2 leases, 4096 bytes",
        "packed full"
    );
    assert_eq!(log[2], "Some(Overrun)");
    assert_eq!((stats.spawned, stats.completed), (1, 1));
    assert_eq!(leased, 0, "every lease went back");
}
