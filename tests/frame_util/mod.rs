//! Shared helpers for the framing tests: a server thread running a reactor with a framing
//! adapter that publishes a snapshot of its state after every turn and takes commands
//! between turns, a blocking client that speaks the length-prefixed codec with ringlet's own
//! sans-IO encoder and decoder, and the echo handler the tests (and examples/framed.rs) use.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringlet::frame::{
    EncodeError, Frame, FrameConfig, FrameDecoder, FrameEncoder, FrameHandler, FrameIo, FrameSink,
    Throttle,
};
use ringlet::pipe::ReadBuf;
use ringlet::pool::{BufPool, BufPoolConfig, BufPoolStorage, RecvTier, ZeroInit};
use ringlet::reactor::{BackendChoice, CloseReason, Config, ConnId, Handler, Reactor};

/// Storage leaked once, from fresh zero pages (never built on the stack, not resident until
/// used).
pub fn leak<T: ZeroInit>() -> &'static mut T {
    ringlet::sys::mem::map_zeroed().expect("map zeroed storage")
}

/// A reactor config on `backend`.
pub fn config(backend: BackendChoice) -> Config {
    Config {
        backend,
        ..Config::default()
    }
}

/// Waits (at most 10 s, a safety bound) until `cond` holds.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// What a server thread returns when it stops: the last snapshot, and the pool's leased
/// count after the adapter (and every frame its handler held) was dropped.
pub struct Stopped<S> {
    pub last: S,
    pub leased_after_drop: usize,
    pub connections_left: usize,
}

/// A reactor with an adapter `A` on its own thread.
pub struct Srv<S, C> {
    pub addr: SocketAddr,
    state: Arc<Mutex<S>>,
    cmds: mpsc::Sender<C>,
    done: Arc<AtomicU64>,
    sent: u64,
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<Stopped<S>>>,
}

impl<S: Clone + Send + 'static, C: Send + 'static> Srv<S, C> {
    /// The snapshot published after the last turn.
    pub fn snapshot(&self) -> S {
        self.state.lock().unwrap().clone()
    }

    /// Waits until the snapshot satisfies `cond`.
    pub fn wait(&self, what: &str, mut cond: impl FnMut(&S) -> bool) -> S {
        wait_for(what, || cond(&self.snapshot()));
        self.snapshot()
    }

    /// Runs a command on the server thread between turns and waits until it ran and the
    /// snapshot after it was published.
    pub fn cmd(&mut self, c: C) {
        self.cmds.send(c).unwrap();
        self.sent += 1;
        let want = self.sent;
        let done = self.done.clone();
        wait_for("a command", || done.load(Ordering::SeqCst) >= want);
    }

    /// Stops the server gracefully and returns its final state.
    pub fn stop(mut self) -> Stopped<S> {
        self.stop.store(true, Ordering::SeqCst);
        let join = self.join.take().unwrap();
        wait_for("the server to stop", || join.is_finished());
        join.join().expect("server thread panicked")
    }
}

impl<S, C> Drop for Srv<S, C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Starts a server: `make` builds the reactor, `adapter` the handler (given the reactor, for
/// its pool); after every turn `publish` makes the snapshot; `on_cmd` runs commands.
pub fn serve<A, S, C, M, F, P, X>(
    config: Config,
    make: M,
    adapter: F,
    publish: P,
    on_cmd: X,
) -> Srv<S, C>
where
    A: Handler<'static>,
    S: Clone + Default + Send + 'static,
    C: Send + 'static,
    M: FnOnce(Config) -> Reactor<'static> + Send + 'static,
    F: FnOnce(&Reactor<'static>) -> A + Send + 'static,
    P: FnMut(&A, &Reactor<'static>) -> S + Send + 'static,
    X: FnMut(&mut A, C) + Send + 'static,
{
    let state = Arc::new(Mutex::new(S::default()));
    let (cmd_tx, cmd_rx) = mpsc::channel::<C>();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (addr_tx, addr_rx) = mpsc::channel();
    let (state2, done2, stop2) = (state.clone(), done.clone(), stop.clone());
    let join = thread::spawn(move || {
        let (mut publish, mut on_cmd) = (publish, on_cmd);
        let mut reactor = make(config);
        let mut a = adapter(&reactor);
        let l = reactor.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        addr_tx.send(reactor.listener_addr(l).unwrap()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !reactor.is_stopped() {
            assert!(Instant::now() < deadline, "server ran for 60 s: test hung");
            if stop2.load(Ordering::SeqCst) {
                reactor.stop();
            }
            reactor
                .turn(&mut a, Some(Duration::from_millis(5)))
                .expect("turn");
            let mut ran = 0;
            while let Ok(c) = cmd_rx.try_recv() {
                on_cmd(&mut a, c);
                ran += 1;
            }
            *state2.lock().unwrap() = publish(&a, &reactor);
            // After the publish: a command's caller then sees the state it left.
            done2.fetch_add(ran, Ordering::SeqCst);
        }
        let last = publish(&a, &reactor);
        let connections_left = reactor.connections();
        drop(a);
        Stopped {
            last,
            leased_after_drop: reactor.pool().leased(),
            connections_left,
        }
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    Srv {
        addr,
        state,
        cmds: cmd_tx,
        done,
        sent: 0,
        stop,
        join: Some(join),
    }
}

/// FNV-1a, 32 bits: the reply's checksum.
pub fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The 8 bytes an echo reply ends with: the payload's length and checksum.
pub fn trailer(payload: &[u8]) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    t[4..].copy_from_slice(&checksum(payload).to_le_bytes());
    t
}

/// Echoes each frame back with its length and checksum; a reply that does not fit the write
/// slab waits (with the frames behind it) for `on_flushed`.
#[derive(Default)]
pub struct Echo {
    stash: HashMap<ConnId, VecDeque<Frame<'static>>>,
    pub replies: u64,
    pub blocked: u64,
    pub closed: u64,
}

impl Echo {
    fn drain(&mut self, io: &mut FrameIo<'_, '_, 'static>, conn: ConnId) {
        let Some(q) = self.stash.get_mut(&conn) else {
            return;
        };
        while let Some(f) = q.front() {
            match io.send_parts(conn, &[f, &trailer(f)]) {
                Ok(_) => {
                    q.pop_front();
                    self.replies += 1;
                }
                Err(EncodeError::WouldBlock { .. }) => {
                    self.blocked += 1;
                    break;
                }
                Err(e) => panic!("echo reply: {e}"),
            }
        }
        let _ = io.cx().flush(conn);
    }

    /// Frames held now (waiting for room).
    pub fn held(&self) -> usize {
        self.stash.values().map(VecDeque::len).sum()
    }
}

impl FrameHandler<'static> for Echo {
    fn on_frame(&mut self, io: &mut FrameIo<'_, '_, 'static>, conn: ConnId, frame: Frame<'static>) {
        self.stash.entry(conn).or_default().push_back(frame);
        self.drain(io, conn);
    }

    fn on_flushed(&mut self, io: &mut FrameIo<'_, '_, 'static>, conn: ConnId) {
        self.drain(io, conn);
    }

    fn on_close(&mut self, _: &mut FrameIo<'_, '_, 'static>, conn: ConnId, _: CloseReason) {
        self.stash.remove(&conn);
        self.closed += 1;
    }
}

/// A growable sink for the client's encoder.
#[derive(Default)]
pub struct VecSink(pub Vec<u8>);

impl FrameSink for VecSink {
    fn room(&mut self) -> usize {
        usize::MAX / 2
    }
    fn capacity(&mut self) -> usize {
        usize::MAX / 2
    }
    fn put(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

/// A blocking client speaking the length-prefixed codec through ringlet's own encoder and
/// decoder (sans-IO over a std socket).
pub struct FrameClient {
    pub stream: TcpStream,
    enc: FrameEncoder,
    dec: FrameDecoder<'static>,
    buf: Vec<u8>,
}

impl FrameClient {
    /// Connects; replies may be up to `config.max_message` bytes.
    pub fn connect(addr: SocketAddr, config: FrameConfig) -> FrameClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let storage = leak::<BufPoolStorage<8, 65536>>();
        let pool = BufPool::new(
            storage,
            BufPoolConfig {
                recv_tier: RecvTier::FreeList,
                user_reserve: 8,
            },
        )
        .unwrap();
        let throttle: &'static Throttle = Box::leak(Box::new(Throttle::new()));
        let config = FrameConfig {
            max_pending: 8,
            ..config
        };
        FrameClient {
            stream,
            enc: FrameEncoder::new(config).unwrap(),
            dec: FrameDecoder::new(config, pool, throttle).unwrap(),
            buf: Vec::new(),
        }
    }

    /// The encoded bytes of `msg`.
    pub fn encode(&mut self, msg: &[u8]) -> Vec<u8> {
        let mut sink = VecSink::default();
        self.enc.encode(msg, &mut sink).expect("encode");
        sink.0
    }

    /// Sends `msg` as one message.
    pub fn send(&mut self, msg: &[u8]) {
        let bytes = self.encode(msg);
        self.stream.write_all(&bytes).expect("send");
    }

    /// Receives one message.
    pub fn recv(&mut self) -> Vec<u8> {
        self.try_recv().expect("connection closed before a reply")
    }

    /// Receives one message, or `None` at the end of the stream.
    pub fn try_recv(&mut self) -> Option<Vec<u8>> {
        loop {
            let d = self
                .dec
                .decode(ReadBuf::from_slice(&self.buf), ringlet::time::Instant::ZERO)
                .expect("the server sends valid frames");
            self.buf.drain(..d.consumed);
            if let Some(f) = d.frame {
                return Some(f.to_vec());
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Checks that `reply` is `msg` echoed with its length and checksum.
    pub fn check_echo(msg: &[u8], reply: &[u8]) {
        assert_eq!(reply.len(), msg.len() + 8, "reply length");
        assert!(reply[..msg.len()] == *msg, "echoed payload differs");
        assert_eq!(reply[msg.len()..], trailer(msg), "trailer");
    }
}

/// Deterministic pseudo-random numbers (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
