//! `ConnectionStream` against the real kernel on loopback, on BOTH backends: an async echo
//! built from `relay`, reads into slices smaller than a snapshot, the peer closing or
//! resetting mid-stream, and the crate's ReadStream conformance checks run against it.

mod exec_util;
mod reactor_util;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use exec_util::{Server, Tasks, server};
use reactor_util::{Rng, connect, leak, read_n, read_to_eof, reset, send};
use ringlet::exec::{Connection, ExecStats, Executor, TaskStorage};
use ringlet::reactor::BackendChoice;
use ringlet::stream::conformance::{check_read_source, check_read_stream};
use ringlet::stream::{ConnectionStream, Error, ReadStream, WriteSink, WriteStream, relay};

both!(
    relay_echo_many_connections,
    relay_through_a_ring_smaller_than_a_snapshot_loses_nothing,
    relay_polls_its_task_once_per_receive_not_per_send,
    reads_into_small_slices_keep_the_rest_for_the_next_read,
    peer_close_mid_stream_is_eof_after_every_byte,
    peer_reset_mid_stream_is_an_io_error,
    write_eof_flushes_then_ends_and_later_writes_fail,
    conformance_read_stream_and_read_source,
);

struct Report {
    stats: ExecStats,
    leased: usize,
}

/// A server whose tasks echo through `relay` with a ring of `RING` bytes.
fn relay_server<const RING: usize>(backend: BackendChoice) -> Server<Report> {
    async fn echo<const RING: usize>(conn: Connection) {
        let mut stream = ConnectionStream::new(conn);
        let (mut rd, mut wr) = stream.split();
        let mut ring = [0u8; RING];
        let _ = relay(&mut rd, &mut wr, &mut ring).await;
    }
    server(
        backend,
        |r| {
            let exec =
                Executor::new(r, leak::<TaskStorage<16, 8192>>(), echo::<RING>).expect("executor");
            (exec, ())
        },
        |exec, (), r| Report {
            stats: exec.stats(),
            leased: r.pool().leased(),
        },
    )
}

fn echo_clients(addr: std::net::SocketAddr, clients: u64, total: usize, max_chunk: u64) {
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            thread::spawn(move || {
                let mut rng = Rng(0xC0FF_EE00 ^ (i + 1));
                let mut s = connect(addr);
                let mut done = 0;
                while done < total {
                    let n = 1 + rng.below(max_chunk) as usize;
                    let data = rng.bytes(n);
                    send(&mut s, &data);
                    assert_eq!(read_n(&mut s, n), data, "client {i}");
                    done += n;
                }
                s.shutdown(Shutdown::Write).unwrap();
                assert_eq!(read_to_eof(&mut s), b"");
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

fn relay_echo_many_connections(backend: BackendChoice) {
    let srv = relay_server::<4096>(backend);
    echo_clients(srv.addr, 6, 150_000, 30_000);
    let r = srv.stop();
    assert_eq!((r.stats.spawned, r.stats.completed), (6, 6));
    assert_eq!(r.leased, 0, "every receive buffer back");
}

fn relay_through_a_ring_smaller_than_a_snapshot_loses_nothing(backend: BackendChoice) {
    // 7-byte ring, 2048-byte receive buffers: every snapshot is read in many parts.
    let srv = relay_server::<7>(backend);
    echo_clients(srv.addr, 2, 60_000, 20_000);
    let r = srv.stop();
    assert_eq!(r.stats.completed, 2);
    assert_eq!(r.leased, 0);
}

fn relay_polls_its_task_once_per_receive_not_per_send(backend: BackendChoice) {
    // One client, one message at a time: each arrives in one receive and is echoed in one
    // send. The relay starts each flush and goes back to reading, so a send's completion
    // does not wake the task; waiting for each flush would poll it a second time per echo.
    const ROUNDS: u64 = 64;
    let srv = relay_server::<4096>(backend);
    let mut s = connect(srv.addr);
    for i in 0..ROUNDS {
        let msg = [i as u8; 16];
        send(&mut s, &msg);
        assert_eq!(read_n(&mut s, msg.len()), msg, "round {i}");
    }
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), b"");
    let r = srv.stop();
    assert_eq!((r.stats.spawned, r.stats.completed), (1, 1));
    // The first poll, one per message, one for the end; slack for a message that happens to
    // arrive in two receives.
    assert!(
        r.stats.polls <= ROUNDS + ROUNDS / 4,
        "{} polls for {ROUNDS} echoes",
        r.stats.polls
    );
    assert!(r.stats.polls > ROUNDS, "{} polls", r.stats.polls);
    assert_eq!(r.leased, 0);
}

type Shared<T> = Arc<Mutex<T>>;

fn reads_into_small_slices_keep_the_rest_for_the_next_read(backend: BackendChoice) {
    let got: Shared<(Vec<u8>, usize, usize)> = Arc::default();
    let g = got.clone();
    let srv = server(
        backend,
        move |r| {
            let task = move |conn: Connection| {
                let got = g.clone();
                async move {
                    let mut s = ConnectionStream::new(conn);
                    let mut buf = [0u8; 5];
                    let (mut data, mut reads, mut kept) = (Vec::new(), 0, 0);
                    let end = loop {
                        match s.read_some(&mut buf).await {
                            Ok(n) => {
                                assert!((1..=5).contains(&n));
                                data.extend_from_slice(&buf[..n]);
                                reads += 1;
                                // Bytes of the snapshot that did not fit wait here.
                                kept = kept.max(s.buffered());
                            }
                            Err(e) => break e,
                        }
                    };
                    assert_eq!(end, Error::Eof);
                    let len = data.len();
                    *got.lock().unwrap() = (data, reads, kept);
                    s.write_eof_with(format!("{len}").as_bytes()).await.unwrap();
                }
            };
            let exec = Executor::new(r, leak::<Tasks<4>>(), task).expect("executor");
            (exec, ())
        },
        |exec, (), r| (exec.stats(), r.pool().leased()),
    );
    let data = Rng(42).bytes(20_000);
    let mut s = connect(srv.addr);
    send(&mut s, &data);
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), b"20000");
    let (stats, leased) = srv.stop();
    let (got, reads, kept) = got.lock().unwrap().clone();
    assert!(got == data, "bytes lost or reordered");
    assert_eq!(reads, 4000, "every read filled its 5 bytes");
    assert!(
        kept > 5,
        "a snapshot larger than the slice was kept: {kept}"
    );
    assert_eq!((stats.completed, leased), (1, 0));
}

fn peer_close_mid_stream_is_eof_after_every_byte(backend: BackendChoice) {
    let srv = server(
        backend,
        |r| {
            let task = |conn: Connection| async move {
                let mut s = ConnectionStream::new(conn);
                let mut buf = [0u8; 64];
                let mut total = 0;
                let mut acked = false;
                let end = loop {
                    match s.read_some(&mut buf).await {
                        Ok(n) => total += n,
                        Err(e) => break e,
                    }
                    if total == 3000 && !acked {
                        // Everything is in: the next read waits, and the peer's close ends it.
                        s.write_some(b"ack\n").await.unwrap();
                        s.flush().await.unwrap();
                        acked = true;
                    }
                };
                let line = format!("{end:?} after {total}\n");
                s.write_eof_with(line.as_bytes()).await.unwrap();
            };
            let exec = Executor::new(r, leak::<Tasks<4>>(), task).expect("executor");
            (exec, ())
        },
        |exec, (), r| (exec.stats(), r.pool().leased()),
    );
    let mut s = connect(srv.addr);
    send(&mut s, &[3u8; 3000]);
    assert_eq!(read_n(&mut s, 4), b"ack\n");
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), b"Eof after 3000\n");
    let (stats, leased) = srv.stop();
    assert_eq!((stats.completed, leased), (1, 0));
}

fn peer_reset_mid_stream_is_an_io_error(backend: BackendChoice) {
    let ends: Shared<Vec<String>> = Arc::default();
    let e2 = ends.clone();
    let srv = server(
        backend,
        move |r| {
            let task = move |conn: Connection| {
                let ends = e2.clone();
                async move {
                    let mut s = ConnectionStream::new(conn);
                    let mut buf = [0u8; 16];
                    let n = s.read_some(&mut buf).await.unwrap();
                    s.write_some(&buf[..n]).await.unwrap();
                    s.flush().await.unwrap();
                    let end = s.read_some(&mut buf).await;
                    ends.lock().unwrap().push(format!("{end:?}"));
                }
            };
            let exec = Executor::new(r, leak::<Tasks<4>>(), task).expect("executor");
            (exec, ())
        },
        |exec, (), r| (exec.stats(), r.pool().leased()),
    );
    let mut s = connect(srv.addr);
    send(&mut s, b"x");
    assert_eq!(read_n(&mut s, 1), b"x");
    reset(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ends.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the reset did not end the read");
        thread::sleep(Duration::from_millis(5));
    }
    let (stats, leased) = srv.stop();
    let ends = ends.lock().unwrap().clone();
    assert!(ends[0].starts_with("Err(Io("), "{ends:?}");
    assert_eq!((stats.completed, leased), (1, 0));
}

fn write_eof_flushes_then_ends_and_later_writes_fail(backend: BackendChoice) {
    let seen: Shared<Vec<String>> = Arc::default();
    let s2 = seen.clone();
    let srv = server(
        backend,
        move |r| {
            let task = move |conn: Connection| {
                let seen = s2.clone();
                async move {
                    let mut s = ConnectionStream::new(conn);
                    // More than the 64 KiB slab: write_some waits for room in between.
                    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
                    let mut off = 0;
                    while off < big.len() {
                        off += s.write_some(&big[off..]).await.unwrap();
                    }
                    s.write_eof().await.unwrap();
                    let late = s.write_some(b"late").await;
                    let empty = s.write_some(b"").await;
                    let again = s.write_eof().await;
                    seen.lock().unwrap().extend([
                        format!("{late:?}"),
                        format!("{empty:?}"),
                        format!("{again:?}"),
                    ]);
                    // The read side still works after our end: the peer says goodbye.
                    let mut buf = [0u8; 8];
                    let n = s.read_some(&mut buf).await.unwrap();
                    let end = s.read_some(&mut buf).await;
                    seen.lock()
                        .unwrap()
                        .push(format!("{} {end:?}", String::from_utf8_lossy(&buf[..n])));
                }
            };
            let exec = Executor::new(r, leak::<Tasks<4>>(), task).expect("executor");
            (exec, ())
        },
        |exec, (), r| (exec.stats(), r.pool().leased()),
    );
    let mut s = connect(srv.addr);
    let got = read_to_eof(&mut s);
    assert_eq!(got.len(), 200_000);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 253) as u8));
    s.write_all(b"bye").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 4 {
        assert!(Instant::now() < deadline, "the task did not finish");
        thread::sleep(Duration::from_millis(5));
    }
    let (stats, leased) = srv.stop();
    assert_eq!(
        *seen.lock().unwrap(),
        ["Err(Closed)", "Ok(0)", "Ok(())", "bye Err(Eof)"]
    );
    assert_eq!((stats.completed, leased), (1, 0));
}

/// What the conformance test's peer sends on every stream connection: 5000 bytes with no
/// repeating structure the checks could trip on, then the end.
fn expected() -> Vec<u8> {
    Rng(7).bytes(5000)
}

/// Connections handed to the conformance task, and the waker of its pending `make`.
#[derive(Default)]
struct Handoff {
    conns: VecDeque<Connection>,
    waiting: Option<Waker>,
}

fn conformance_read_stream_and_read_source(backend: BackendChoice) {
    let verdict: Shared<Option<String>> = Arc::default();
    let v2 = verdict.clone();
    let srv = server(
        backend,
        move |r| {
            let handoff: Rc<RefCell<Handoff>> = Rc::default();
            let first = Rc::new(std::cell::Cell::new(true));
            let task = move |conn: Connection| {
                let (handoff, verdict) = (handoff.clone(), v2.clone());
                let checker = first.replace(false);
                async move {
                    if !checker {
                        // A stream connection: hand it over and finish (its slot stays taken,
                        // and its events keep coming, until the checker drops it).
                        let waiting = {
                            let mut h = handoff.borrow_mut();
                            h.conns.push_back(conn);
                            h.waiting.take()
                        };
                        if let Some(w) = waiting {
                            w.wake();
                        }
                        return;
                    }
                    // The control connection: ask the peer for a fresh stream per `make`.
                    let control = conn;
                    let expected = expected();
                    let mut make = async || {
                        control.write(b"n").unwrap();
                        control.flush().await.unwrap();
                        let conn = poll_fn(|cx| {
                            let mut h = handoff.borrow_mut();
                            match h.conns.pop_front() {
                                Some(c) => Poll::Ready(c),
                                None => {
                                    h.waiting = Some(cx.waker().clone());
                                    Poll::Pending
                                }
                            }
                        })
                        .await;
                        ConnectionStream::new(conn)
                    };
                    check_read_stream(&mut make, &expected, Error::Eof).await;
                    check_read_source(&mut make, &expected, Error::Eof).await;
                    *verdict.lock().unwrap() = Some("passed".into());
                    control.write(b"d").unwrap();
                    control.flush().await.unwrap();
                }
            };
            let exec = Executor::new(r, leak::<Tasks<64>>(), task).expect("executor");
            (exec, ())
        },
        |exec, (), r| (exec.stats(), r.pool().leased()),
    );
    let addr = srv.addr;
    let data = expected();
    let mut control = connect(addr);
    let mut streams = Vec::new();
    loop {
        let mut cmd = [0u8; 1];
        control
            .read_exact(&mut cmd)
            .expect("a command from the checker");
        match &cmd {
            b"n" => {
                let mut s = connect(addr);
                send(&mut s, &data);
                s.shutdown(Shutdown::Write).unwrap();
                streams.push(s);
            }
            b"d" => break,
            other => panic!("unexpected command {other:?}"),
        }
    }
    let (stats, leased) = srv.stop();
    assert_eq!(verdict.lock().unwrap().as_deref(), Some("passed"));
    assert!(streams.len() >= 10, "checked {} streams", streams.len());
    assert_eq!(stats.spawned as usize, streams.len() + 1);
    assert_eq!((stats.completed, stats.live), (stats.spawned, 0));
    assert_eq!(leased, 0);
}
