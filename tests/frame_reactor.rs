//! The length-prefixed codec on a real reactor through `frame::Framed`, on BOTH backends:
//! echo of messages of every size (pipelined, and trickled a byte at a time), the throttle
//! (drops counted, buffers back at once, delivery resuming, frames outliving their
//! connection), invalid frames, reassembly timeouts driven by the sweep timer, and a full
//! connection table.

mod frame_util;
mod reactor_util;

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use frame_util::*;
use ringlet::frame::{
    Frame, FrameConfig, FrameHandler, FrameIo, Framed, FramedMem, FramedStats, FramedStorage,
    Throttle,
};
use ringlet::pool::SlabStorage;
use ringlet::reactor::{
    BackendChoice, CloseReason, Config, ConnId, ListenerId, Reactor, Resources,
};

both!(
    echo_every_size_pipelined_and_trickled,
    throttle_drops_resumes_and_held_frames_outlive_their_connection,
    invalid_frames_close_only_their_connection,
    stalled_reassembly_expires_on_the_sweep_timer,
    full_storage_refuses_the_connection,
    full_timer_table_leaves_expiry_to_the_next_receive,
    a_failed_connect_is_reported_then_closed,
);

const BUF: usize = 4096;
const CONNS: usize = 16;
type Res = Resources<CONNS, 512, BUF, 65536, 16>;

fn make(c: Config) -> Reactor<'static> {
    Reactor::new(leak::<Res>(), c).unwrap()
}

/// Chunks of 256 bytes, messages up to one 4 KiB buffer.
fn fconfig() -> FrameConfig {
    FrameConfig {
        max_frame: 256 + 9,
        chunk: 256,
        max_message: BUF,
        max_fragments: 16,
        max_reassemblies: 2,
        reassembly_timeout: Duration::from_secs(10),
        max_pending: 16,
    }
}

fn rconfig(b: BackendChoice) -> Config {
    Config {
        user_buffers: 128,
        ..config(b)
    }
}

fn storage() -> FramedMem<'static, 'static> {
    Box::leak(Box::new(FramedStorage::<'static, CONNS>::new())).mem()
}

#[derive(Clone, Default, Debug)]
struct Snap {
    stats: FramedStats,
    replies: u64,
    held: usize,
    leased: usize,
    conns: usize,
}

type EchoSrv = Srv<Snap, ()>;

fn echo_server(b: BackendChoice, fc: FrameConfig) -> EchoSrv {
    serve(
        rconfig(b),
        make,
        move |r| Framed::new(Echo::default(), fc, r.pool().buf_size(), storage()).unwrap(),
        |f: &Framed<'static, 'static, Echo>, r| Snap {
            stats: f.stats(),
            replies: f.handler().replies,
            held: f.handler().held(),
            leased: r.pool().leased(),
            conns: f.connections(),
        },
        |_, ()| {},
    )
}

fn echo_every_size_pipelined_and_trickled(b: BackendChoice) {
    let fc = fconfig();
    let srv = echo_server(b, fc);
    let addr = srv.addr;
    let max = fc.max_message - 8; // room for the reply's trailer
    let chunk = usize::from(fc.chunk);

    // Three clients at once, each with 8 messages in flight: every edge size, then random.
    let clients: Vec<_> = (0..3u64)
        .map(|i| {
            thread::spawn(move || {
                let mut rng = Rng(0xf00d + i);
                let mut sizes = vec![
                    0,
                    1,
                    chunk - 1,
                    chunk,
                    chunk + 1,
                    2 * chunk - 1,
                    2 * chunk,
                    2 * chunk + 1,
                    max - 1,
                    max,
                ];
                sizes.extend((0..150).map(|_| rng.below(max as u64 + 1) as usize));
                let msgs: Vec<Vec<u8>> = sizes.iter().map(|&n| rng.bytes(n)).collect();
                let mut c = FrameClient::connect(addr, fc);
                let mut next_reply = 0;
                for (k, m) in msgs.iter().enumerate() {
                    c.send(m);
                    if k >= 7 {
                        FrameClient::check_echo(&msgs[next_reply], &c.recv());
                        next_reply += 1;
                    }
                }
                while next_reply < msgs.len() {
                    FrameClient::check_echo(&msgs[next_reply], &c.recv());
                    next_reply += 1;
                }
                msgs.len() as u64
            })
        })
        .collect();

    // One client writes its bytes one at a time: every byte boundary is a receive boundary.
    let mut t = FrameClient::connect(addr, fc);
    let trickled: Vec<Vec<u8>> = vec![
        vec![],
        (0..300u32).map(|x| x as u8).collect(),
        b"tail".to_vec(),
    ];
    let wire: Vec<u8> = trickled.iter().flat_map(|m| t.encode(m)).collect();
    for byte in &wire {
        t.stream.write_all(&[*byte]).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    for m in &trickled {
        FrameClient::check_echo(m, &t.recv());
    }
    drop(t);

    let total: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum::<u64>() + 3;
    let s = srv.wait("every connection closed", |s| s.conns == 0);
    assert_eq!(s.stats.decoder.frames, total);
    assert!(s.stats.decoder.reassembled > 0);
    assert_eq!(s.replies, total);
    assert_eq!(s.held, 0, "every frame was answered");
    assert_eq!(s.stats.decoder.dropped_throttle, 0);
    assert_eq!(s.stats.decoder.dropped_no_buffer, 0);
    assert_eq!(s.stats.protocol_errors, 0);
    let end = srv.stop();
    assert_eq!(end.connections_left, 0);
    assert_eq!(end.leased_after_drop, 0, "every buffer went back");
}

/// Keeps every frame until told to drop them.
#[derive(Default)]
struct Hoarder {
    held: Vec<(ConnId, Frame<'static>)>,
    accepted: Vec<ConnId>,
    closed: Vec<ConnId>,
}

impl FrameHandler<'static> for Hoarder {
    fn on_frame(&mut self, _: &mut FrameIo<'_, '_, 'static>, conn: ConnId, frame: Frame<'static>) {
        self.held.push((conn, frame));
    }

    fn on_accept(&mut self, _: &mut FrameIo<'_, '_, 'static>, conn: ConnId, _: ListenerId) {
        self.accepted.push(conn);
    }

    fn on_close(&mut self, _: &mut FrameIo<'_, '_, 'static>, conn: ConnId, _: CloseReason) {
        // The frames stay held: a handler may keep them past the end of their connection.
        self.closed.push(conn);
    }
}

#[derive(Clone, Default, Debug)]
struct HoardSnap {
    stats: FramedStats,
    held: usize,
    /// (connection, frames held of it, its throttle's pending count).
    per_conn: Vec<(ConnId, usize, u32)>,
    closed: Vec<ConnId>,
    leased: usize,
}

enum Cmd {
    ReleaseAll,
    Release(ConnId),
}

fn throttle_drops_resumes_and_held_frames_outlive_their_connection(b: BackendChoice) {
    let fc = FrameConfig {
        max_pending: 4,
        ..fconfig()
    };
    let mut srv: Srv<HoardSnap, Cmd> = serve(
        rconfig(b),
        make,
        move |r| Framed::new(Hoarder::default(), fc, r.pool().buf_size(), storage()).unwrap(),
        |f: &Framed<'static, 'static, Hoarder>, r| {
            let h = f.handler();
            HoardSnap {
                stats: f.stats(),
                held: h.held.len(),
                per_conn: h
                    .accepted
                    .iter()
                    .map(|&c| {
                        let n = h.held.iter().filter(|(k, _)| *k == c).count();
                        (c, n, f.pending(c))
                    })
                    .collect(),
                closed: h.closed.clone(),
                leased: r.pool().leased(),
            }
        },
        |f, cmd| {
            let h = f.handler_mut();
            match cmd {
                Cmd::ReleaseAll => h.held.clear(),
                Cmd::Release(c) => h.held.retain(|(k, _)| *k != c),
            }
        },
    );
    let seen = |s: &HoardSnap| s.stats.decoder.frames + s.stats.decoder.dropped_throttle;

    // A floods: 10 small messages and a fragmented one, to a handler that never releases.
    let mut a = FrameClient::connect(srv.addr, fc);
    for i in 0..10u8 {
        a.send(&[i; 10]);
    }
    a.send(&[0xaa; 600]);
    let s = srv.wait("A's 11 messages", |s| seen(s) == 11);
    assert_eq!(s.stats.decoder.frames, 4, "delivered up to the limit");
    assert_eq!(
        s.stats.decoder.dropped_throttle, 7,
        "the rest dropped and counted"
    );
    assert_eq!(s.held, 4);
    assert_eq!(
        s.leased, 4,
        "dropped frames took no buffer, and no receive lease is held"
    );
    let a_id = s.per_conn[0].0;
    assert_eq!(s.per_conn[0], (a_id, 4, 4));

    // The connection stayed open: once the handler releases, delivery resumes.
    srv.cmd(Cmd::ReleaseAll);
    assert_eq!(srv.snapshot().per_conn[0].2, 0);
    a.send(b"again");
    a.send(&[0xbb; 700]);
    let s = srv.wait("A's two more", |s| s.stats.decoder.frames == 6);
    assert_eq!(
        (s.held, s.per_conn[0].2, s.stats.decoder.dropped_throttle),
        (2, 2, 7)
    );
    assert_eq!(s.stats.decoder.reassembled, 1);

    // A closes while the handler still holds two of its frames.
    drop(a);
    let s = srv.wait("A closed", |s| s.closed.contains(&a_id));
    assert_eq!(
        (s.held, s.leased),
        (2, 2),
        "held frames stay valid past the close"
    );

    // B takes A's slot: its throttle starts from zero although A's frames are still out.
    let mut bc = FrameClient::connect(srv.addr, fc);
    for i in 0..6u8 {
        bc.send(&[i; 3]);
    }
    let s = srv.wait("B's 6 messages", |s| seen(s) == 6 + 7 + 6);
    let b_id = s.per_conn[1].0;
    assert_eq!(
        b_id.index(),
        a_id.index(),
        "B reuses A's slot (and throttle)"
    );
    assert_ne!(b_id, a_id);
    assert_eq!(s.per_conn[1], (b_id, 4, 4));
    assert_eq!(s.stats.decoder.dropped_throttle, 7 + 2);
    assert_eq!(s.leased, 6);

    // A's frames go back now: exactly their buffers, and B's count does not move.
    srv.cmd(Cmd::Release(a_id));
    let s = srv.snapshot();
    assert_eq!(s.per_conn[1], (b_id, 4, 4));
    assert_eq!(s.leased, 4);
    srv.cmd(Cmd::ReleaseAll);
    assert_eq!(srv.snapshot().per_conn[1].2, 0);
    bc.send(b"resumed");
    let s = srv.wait("B delivered again", |s| s.per_conn[1].1 == 1);
    assert_eq!(s.held, 1);

    // B closes holding one: after the stop every buffer is back.
    drop(bc);
    srv.wait("B closed", |s| s.closed.contains(&b_id));
    let end = srv.stop();
    assert_eq!(
        end.last.leased, 1,
        "the held frame is still out until the handler drops it"
    );
    assert_eq!(end.leased_after_drop, 0, "pool full again");
}

fn invalid_frames_close_only_their_connection(b: BackendChoice) {
    let fc = fconfig();
    let srv = echo_server(b, fc);
    let mut good = FrameClient::connect(srv.addr, fc);
    good.send(b"before");
    FrameClient::check_echo(b"before", &good.recv());
    let hostile: [&[u8]; 4] = [
        &[1, 0],                             // length below the header
        &[0xff, 0xff],                       // above max_frame
        &[5, 0, 0x02, 1, 2],                 // a reserved flag
        &[10, 0, 1, 0, 0, 3, 0, 2, 0, b'x'], // index 3 of 2
    ];
    for bytes in hostile {
        let mut c = FrameClient::connect(srv.addr, fc);
        c.stream.write_all(bytes).unwrap();
        // The server aborts the connection: EOF or a reset, no reply.
        let mut buf = [0u8; 16];
        match c.stream.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("{n} bytes of reply to {bytes:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    good.send(&[7; 1000]);
    FrameClient::check_echo(&[7; 1000], &good.recv());
    let s = srv.wait("the hostile connections closed", |s| {
        s.conns == 1 && s.stats.decoder.frames == 2
    });
    assert_eq!(s.stats.protocol_errors, 4);
    drop(good);
    let end = srv.stop();
    assert_eq!(end.leased_after_drop, 0);
}

fn stalled_reassembly_expires_on_the_sweep_timer(b: BackendChoice) {
    let fc = FrameConfig {
        reassembly_timeout: Duration::from_millis(100),
        ..fconfig()
    };
    let srv: Srv<Snap, ()> = serve(
        rconfig(b),
        make,
        move |r| Framed::new(Echo::default(), fc, r.pool().buf_size(), storage()).unwrap(),
        |f: &Framed<'static, 'static, Echo>, r| Snap {
            stats: f.stats(),
            replies: f.handler().replies,
            held: f.handler().held(),
            leased: r.pool().leased(),
            conns: f.connections(),
        },
        |_, ()| {},
    );
    let mut c = FrameClient::connect(srv.addr, fc);
    let msg: Vec<u8> = (0..600u32).map(|x| x as u8).collect();
    let wire = c.encode(&msg); // 3 fragments: 265 + 265 + 97 bytes
    assert_eq!(wire.len(), 600 + 27);
    c.stream.write_all(&wire[..265]).unwrap();
    // Nothing more arrives on the connection: only the sweep timer can expire it.
    let s = srv.wait("the stalled message expired", |s| {
        s.stats.decoder.expired == 1
    });
    assert_eq!(s.leased, 0, "its buffer went back");
    assert_eq!(s.conns, 1, "the connection stays open");
    // The rest arrives late: orphans, skipped; the connection goes on.
    c.stream.write_all(&wire[265..]).unwrap();
    c.send(b"after");
    FrameClient::check_echo(b"after", &c.recv());
    // (The reply can arrive before the server publishes its state: wait for it.)
    let s = srv.wait("the orphans", |s| s.stats.decoder.frames == 1);
    assert_eq!(s.stats.decoder.orphans, 2);
    // A message that completes in time is unaffected.
    c.send(&msg);
    FrameClient::check_echo(&msg, &c.recv());
    drop(c);
    let end = srv.stop();
    assert_eq!(end.last.stats.decoder.expired, 1);
    assert_eq!(end.leased_after_drop, 0);
}

fn full_storage_refuses_the_connection(b: BackendChoice) {
    let fc = fconfig();
    let srv: Srv<Snap, ()> = serve(
        rconfig(b),
        make,
        move |r| {
            // Room for one framed connection (keys and throttles for every reactor slot).
            let conns = Box::leak(Box::new(SlabStorage::<_, 1>::new())).as_mut_slice();
            let keys = Box::leak(Box::new([0u64; CONNS]));
            let throttles: &'static [Throttle; CONNS] =
                Box::leak(Box::new([const { Throttle::new() }; CONNS]));
            let mem = FramedMem {
                conns,
                keys,
                throttles,
            };
            Framed::new(Echo::default(), fc, r.pool().buf_size(), mem).unwrap()
        },
        |f: &Framed<'static, 'static, Echo>, r| Snap {
            stats: f.stats(),
            replies: f.handler().replies,
            held: f.handler().held(),
            leased: r.pool().leased(),
            conns: f.connections(),
        },
        |_, ()| {},
    );
    let mut first = FrameClient::connect(srv.addr, fc);
    first.send(b"one");
    FrameClient::check_echo(b"one", &first.recv());
    let mut second = FrameClient::connect(srv.addr, fc);
    second.send(b"two");
    assert_eq!(second.try_recv(), None, "refused: closed without a reply");
    let s = srv.wait("the refusal", |s| s.stats.refused == 1);
    assert_eq!(s.conns, 1);
    // The first is unaffected, and once it is gone a new one fits.
    first.send(b"still");
    FrameClient::check_echo(b"still", &first.recv());
    drop(first);
    srv.wait("the first closed", |s| s.conns == 0);
    let mut third = FrameClient::connect(srv.addr, fc);
    third.send(b"three");
    FrameClient::check_echo(b"three", &third.recv());
    drop(third);
    let end = srv.stop();
    assert_eq!(end.leased_after_drop, 0);
}

/// Echo, after taking every free timer of the reactor at the first accept.
#[derive(Default)]
struct TimerHog {
    echo: Echo,
    taken: usize,
}

impl FrameHandler<'static> for TimerHog {
    fn on_accept(&mut self, io: &mut FrameIo<'_, '_, 'static>, _: ConnId, _: ListenerId) {
        while io
            .cx()
            .set_timer(Duration::from_secs(3600), None, 1)
            .is_ok()
        {
            self.taken += 1;
        }
    }

    fn on_frame(&mut self, io: &mut FrameIo<'_, '_, 'static>, conn: ConnId, frame: Frame<'static>) {
        self.echo.on_frame(io, conn, frame);
    }

    fn on_flushed(&mut self, io: &mut FrameIo<'_, '_, 'static>, conn: ConnId) {
        self.echo.on_flushed(io, conn);
    }

    fn on_close(&mut self, io: &mut FrameIo<'_, '_, 'static>, conn: ConnId, r: CloseReason) {
        self.echo.on_close(io, conn, r);
    }
}

fn full_timer_table_leaves_expiry_to_the_next_receive(b: BackendChoice) {
    let fc = FrameConfig {
        reassembly_timeout: Duration::from_millis(30),
        ..fconfig()
    };
    let srv: Srv<(Snap, usize), ()> = serve(
        rconfig(b),
        make,
        move |r| Framed::new(TimerHog::default(), fc, r.pool().buf_size(), storage()).unwrap(),
        |f: &Framed<'static, 'static, TimerHog>, r| {
            let snap = Snap {
                stats: f.stats(),
                replies: f.handler().echo.replies,
                held: f.handler().echo.held(),
                leased: r.pool().leased(),
                conns: f.connections(),
            };
            (snap, f.handler().taken)
        },
        |_, ()| {},
    );
    let mut c = FrameClient::connect(srv.addr, fc);
    let msg = vec![3u8; 600];
    let wire = c.encode(&msg);
    c.stream.write_all(&wire[..265]).unwrap();
    let (s, taken) = srv.wait("the sweep timer refused", |(s, _)| {
        s.stats.sweep_unarmed == 1
    });
    assert_eq!(taken, 16, "every timer of the table was taken");
    assert_eq!((s.leased, s.stats.decoder.expired), (1, 0));
    // Past the deadline, with no timer nothing expires while the connection is idle...
    thread::sleep(Duration::from_millis(60));
    let (s, _) = srv.snapshot();
    assert_eq!((s.leased, s.stats.decoder.expired), (1, 0));
    // ...and the next receive expires it before decoding.
    c.send(b"wake");
    FrameClient::check_echo(b"wake", &c.recv());
    let (s, _) = srv.wait("the wake frame counted", |(s, _)| {
        s.stats.decoder.frames == 1
    });
    assert_eq!(s.stats.decoder.expired, 1);
    assert_eq!(s.leased, 0);
    c.stream.write_all(&wire[265..]).unwrap();
    c.send(b"after");
    FrameClient::check_echo(b"after", &c.recv());
    let (s, _) = srv.wait("the after frame counted", |(s, _)| {
        s.stats.decoder.frames == 2
    });
    assert_eq!(s.stats.decoder.orphans, 2);
    drop(c);
    let end = srv.stop();
    assert_eq!(end.leased_after_drop, 0);
}

/// Records the outcome of connects and the closes.
#[derive(Default)]
struct Dialer {
    connected: Vec<(ConnId, bool)>,
    closed: Vec<(ConnId, CloseReason)>,
}

impl<'r> FrameHandler<'r> for Dialer {
    fn on_frame(&mut self, _: &mut FrameIo<'_, '_, 'r>, _: ConnId, _: Frame<'r>) {}
    fn on_connect(
        &mut self,
        _: &mut FrameIo<'_, '_, 'r>,
        conn: ConnId,
        result: Result<(), ringlet::sys::Error>,
    ) {
        self.connected.push((conn, result.is_ok()));
    }
    fn on_close(&mut self, _: &mut FrameIo<'_, '_, 'r>, conn: ConnId, reason: CloseReason) {
        self.closed.push((conn, reason));
    }
}

/// A connect that fails reaches the handler as `on_connect(Err)` and then, as for a plain
/// `Handler`, as `on_close` with `ConnectFailed`: the handler learns the connection is gone.
fn a_failed_connect_is_reported_then_closed(b: BackendChoice) {
    // A port nobody listens on: bind one, then let it go.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut r = make(rconfig(b));
    let mut framed =
        Framed::new(Dialer::default(), fconfig(), r.pool().buf_size(), storage()).unwrap();
    let conn = r.context().connect(addr).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while r.connections() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the connect never ended"
        );
        r.turn(&mut framed, Some(Duration::from_millis(10)))
            .unwrap();
    }
    let h = framed.handler();
    assert_eq!(h.connected, [(conn, false)]);
    assert!(
        matches!(h.closed[..], [(c, CloseReason::ConnectFailed(_))] if c == conn),
        "{:?}",
        h.closed
    );
    assert_eq!(framed.stats().refused, 0);
}
