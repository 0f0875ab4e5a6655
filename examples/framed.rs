//! A framed request/response server and client on ringlet's length-prefixed codec
//! (`ringlet::frame`).
//!
//! ```text
//! cargo run --release --example framed -- serve  [--addr 127.0.0.1:7001] [--backend auto|uring|epoll]
//! cargo run --release --example framed -- client [--addr 127.0.0.1:7001] [--count 2000]
//!                                                [--conns 4] [--window 8] [--seed 1]
//! cargo run --release --example framed [-- demo [--backend ...] [client flags]]
//! ```
//!
//! The server answers every message with the message itself followed by 8 bytes: its length
//! and its FNV-1a checksum (both u32, little-endian). Messages arrive whole, however they were
//! fragmented on the wire; replies above the chunk size go out fragmented too. A reply that
//! does not fit the connection's write slab waits, with the messages behind it, for
//! `on_flushed`. SIGINT or SIGTERM stops it gracefully and prints its counters.
//!
//! The client opens `--conns` connections, each sending `--count` messages of random sizes
//! (empty, around the chunk size, and far above it, up to the largest message) with up to
//! `--window` of them in flight, and checks every reply. It speaks the protocol with the same
//! sans-IO encoder and decoder over a plain blocking socket. It exits with status 1 on the
//! first mismatch.
//!
//! `demo` (the default) runs a server on its own thread and the client against it, then also
//! checks the server's counters: every message delivered, none dropped, every buffer back.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::exit;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ringlet::frame::{
    EncodeError, Frame, FrameConfig, FrameDecoder, FrameEncoder, FrameHandler, FrameIo, FrameSink,
    Framed, FramedStats, FramedStorage, Throttle,
};
use ringlet::pipe::ReadBuf;
use ringlet::pool::{BufPool, BufPoolConfig, BufPoolStorage, RecvTier, StaticSlot, init_zeroed};
use ringlet::reactor::{BackendChoice, CloseReason, Config, ConnId, Reactor, Resources};

/// Connections, receive buffers (one holds the largest message), write slab per connection.
const CONNS: usize = 128;
const BUF: usize = 16384;
type Res = Resources<CONNS, 1024, BUF, 65536, 64>;

/// In `.bss`: 16 MiB of buffers and 8 MiB of slabs, touched only as used.
static RESOURCES: StaticSlot<Res> = StaticSlot::new();

/// Both ends use this: 1 KiB chunks, messages up to one 16 KiB buffer.
fn wire_config() -> FrameConfig {
    FrameConfig {
        max_frame: 1024 + 9,
        chunk: 1024,
        max_message: BUF,
        max_fragments: 16,
        max_reassemblies: 4,
        reassembly_timeout: Duration::from_secs(10),
        max_pending: 32,
    }
}

/// FNV-1a, 32 bits.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// What a reply ends with: the message's length and checksum.
fn trailer(msg: &[u8]) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&(msg.len() as u32).to_le_bytes());
    t[4..].copy_from_slice(&checksum(msg).to_le_bytes());
    t
}

// ------------------------------------------------------------------------------------------
// Server
// ------------------------------------------------------------------------------------------

/// Answers each frame; frames whose reply does not fit yet wait in order per connection.
struct Server {
    waiting: Vec<VecDeque<Frame<'static>>>,
    replies: u64,
    waited: u64,
}

impl Server {
    fn drain(&mut self, io: &mut FrameIo<'_, '_, 'static>, conn: ConnId) {
        let q = &mut self.waiting[conn.index()];
        while let Some(frame) = q.front() {
            match io.send_parts(conn, &[frame, &trailer(frame)]) {
                Ok(_) => {
                    q.pop_front(); // the frame goes back to the pool here
                    self.replies += 1;
                }
                Err(EncodeError::WouldBlock { .. }) => {
                    self.waited += 1;
                    break;
                }
                Err(_) => {
                    // Cannot be sent at all (or the connection is gone): drop the peer.
                    q.clear();
                    io.cx().abort(conn);
                    return;
                }
            }
        }
        let _ = io.cx().flush(conn);
    }
}

impl FrameHandler<'static> for Server {
    fn on_frame(&mut self, io: &mut FrameIo<'_, '_, 'static>, conn: ConnId, frame: Frame<'static>) {
        self.waiting[conn.index()].push_back(frame);
        self.drain(io, conn);
    }

    fn on_flushed(&mut self, io: &mut FrameIo<'_, '_, 'static>, conn: ConnId) {
        self.drain(io, conn);
    }

    fn on_close(&mut self, _: &mut FrameIo<'_, '_, 'static>, conn: ConnId, _: CloseReason) {
        self.waiting[conn.index()].clear();
    }
}

/// What the server reports when it stops.
struct ServerReport {
    stats: FramedStats,
    replies: u64,
    waited: u64,
    leased_at_exit: usize,
}

/// Runs the server on `addr` until `stop`; sends the bound address on `ready`.
fn run_server(
    addr: SocketAddr,
    backend: BackendChoice,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<SocketAddr>,
) -> ServerReport {
    let _ = ringlet::sys::socket::raise_nofile_limit(CONNS as u64 + 64);
    let config = Config {
        backend,
        // The user tier: message buffers for frames pending and in reassembly.
        user_buffers: 512,
        ..Config::default()
    };
    let resources = RESOURCES.take().expect("resources taken once");
    let mut reactor = Reactor::new(resources, config).unwrap_or_else(|e| {
        eprintln!("framed: {e}");
        exit(1);
    });
    let l = reactor.listen(addr).unwrap_or_else(|e| {
        eprintln!("framed: listen on {addr}: {e}");
        exit(1);
    });
    let bound = reactor.listener_addr(l).expect("bound address");
    eprintln!("framed: serving on {bound} ({:?})", reactor.backend());
    let _ = ready.send(bound);
    let storage = Box::leak(Box::new(FramedStorage::<'static, CONNS>::new()));
    let handler = Server {
        waiting: (0..CONNS).map(|_| VecDeque::new()).collect(),
        replies: 0,
        waited: 0,
    };
    let mut framed = Framed::new(handler, wire_config(), BUF, storage.mem()).unwrap_or_else(|e| {
        eprintln!("framed: {e}");
        exit(1);
    });
    while !reactor.is_stopped() {
        if stop.load(Ordering::Relaxed) {
            reactor.stop();
        }
        if let Err(e) = reactor.turn(&mut framed, Some(Duration::from_millis(100))) {
            eprintln!("framed: {e}");
            exit(1);
        }
    }
    let stats = framed.stats();
    let (replies, waited) = (framed.handler().replies, framed.handler().waited);
    drop(framed); // every frame still held goes back
    ServerReport {
        stats,
        replies,
        waited,
        leased_at_exit: reactor.pool().leased(),
    }
}

// ------------------------------------------------------------------------------------------
// Client
// ------------------------------------------------------------------------------------------

/// An encoder sink over a `Vec`.
struct VecSink(Vec<u8>);

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

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A message size: empty and small, around the chunk size, or large (up to `max`).
fn size(rng: &mut Rng, chunk: usize, max: usize) -> usize {
    match rng.below(10) {
        0 => 0,
        1..=3 => rng.below(64),
        4..=6 => chunk - 2 + rng.below(5),
        _ => rng.below(max + 1),
    }
}

#[derive(Clone, Copy)]
struct ClientOpts {
    count: usize,
    conns: usize,
    window: usize,
    seed: u64,
}

/// One connection's run; `Err` describes the first mismatch.
fn client_conn(addr: SocketAddr, opts: ClientOpts, id: u64) -> Result<(u64, u64), String> {
    let config = wire_config();
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).ok();
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut enc = FrameEncoder::new(config).map_err(|e| e.to_string())?;
    // The decoder's buffers: a small pool of its own, made zeroed in place.
    let storage: &mut BufPoolStorage<4, BUF> = init_zeroed(Box::leak(Box::new_uninit()));
    let pool = BufPool::new(
        storage,
        BufPoolConfig {
            recv_tier: RecvTier::FreeList,
            user_reserve: 4,
        },
    )
    .map_err(|e| e.to_string())?;
    let throttle: &'static Throttle = Box::leak(Box::new(Throttle::new()));
    let mut dec: FrameDecoder<'static> =
        FrameDecoder::new(config, pool, throttle).map_err(|e| e.to_string())?;

    let mut rng = Rng(opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ id | 1);
    let chunk = usize::from(config.chunk);
    let max = config.max_message - 8; // the reply carries 8 more bytes
    let mut in_flight: VecDeque<Vec<u8>> = VecDeque::new();
    let mut inbuf: Vec<u8> = Vec::new();
    let mut read_buf = vec![0u8; 65536];
    let (mut sent, mut bytes) = (0usize, 0u64);
    let mut verified = 0u64;
    while verified < opts.count as u64 {
        // Keep the window full.
        while sent < opts.count && in_flight.len() < opts.window {
            let n = size(&mut rng, chunk, max);
            let msg: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            let mut sink = VecSink(Vec::with_capacity(enc.encoded_len(n)));
            enc.encode(&msg, &mut sink).map_err(|e| e.to_string())?;
            stream
                .write_all(&sink.0)
                .map_err(|e| format!("send: {e}"))?;
            bytes += n as u64;
            in_flight.push_back(msg);
            sent += 1;
        }
        // Take the next reply.
        let reply = loop {
            let d = dec
                .decode(ReadBuf::from_slice(&inbuf), ringlet::time::Instant::ZERO)
                .map_err(|e| format!("connection {id}: invalid reply: {e}"))?;
            inbuf.drain(..d.consumed);
            if let Some(f) = d.frame {
                break f;
            }
            match stream.read(&mut read_buf) {
                Ok(0) => return Err(format!("connection {id}: closed by the server")),
                Ok(n) => inbuf.extend_from_slice(&read_buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("connection {id}: read: {e}")),
            }
        };
        let msg = in_flight.pop_front().expect("a message in flight");
        let ok = reply.len() == msg.len() + 8
            && reply[..msg.len()] == msg[..]
            && reply[msg.len()..] == trailer(&msg);
        if !ok {
            return Err(format!(
                "connection {id}: reply {verified} does not match: sent {} bytes (checksum \
                 {:#010x}), got {} bytes",
                msg.len(),
                checksum(&msg),
                reply.len()
            ));
        }
        verified += 1;
    }
    Ok((verified, bytes))
}

/// Runs every connection; returns false on a mismatch (already reported).
fn run_client(addr: SocketAddr, opts: ClientOpts) -> bool {
    let start = Instant::now();
    let runs: Vec<_> = (0..opts.conns as u64)
        .map(|id| thread::spawn(move || client_conn(addr, opts, id)))
        .collect();
    let mut ok = true;
    let (mut msgs, mut bytes) = (0u64, 0u64);
    for r in runs {
        match r.join().expect("client thread") {
            Ok((m, b)) => {
                msgs += m;
                bytes += b;
            }
            Err(e) => {
                eprintln!("framed client: MISMATCH: {e}");
                ok = false;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "framed client: {msgs} replies verified on {} connections, {:.1} MiB of payload, in \
         {secs:.2} s",
        opts.conns,
        bytes as f64 / (1 << 20) as f64
    );
    ok
}

// ------------------------------------------------------------------------------------------
// Command line
// ------------------------------------------------------------------------------------------

fn usage() -> ! {
    eprintln!(
        "usage: framed [serve|client|demo] [--addr HOST:PORT] [--backend auto|uring|epoll] \
         [--count N] [--conns N] [--window N] [--seed N]"
    );
    exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let mode = match args.peek().map(String::as_str) {
        Some("serve" | "client" | "demo") => args.next().unwrap_or_default(),
        _ => "demo".to_string(),
    };
    let mut addr: SocketAddr = "127.0.0.1:7001".parse().unwrap();
    let mut backend = BackendChoice::Auto;
    let mut opts = ClientOpts {
        count: 2000,
        conns: 4,
        window: 8,
        seed: 1,
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--addr" => addr = value().parse().unwrap_or_else(|_| usage()),
            "--backend" => {
                backend = match value().as_str() {
                    "auto" => BackendChoice::Auto,
                    "uring" => BackendChoice::Uring,
                    "epoll" => BackendChoice::Epoll,
                    _ => usage(),
                }
            }
            "--count" => opts.count = value().parse().unwrap_or_else(|_| usage()),
            "--conns" => opts.conns = value().parse().unwrap_or_else(|_| usage()),
            "--window" => opts.window = value().parse().unwrap_or_else(|_| usage()),
            "--seed" => opts.seed = value().parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    // More in flight than the server's throttle admits would be dropped (by design).
    let max_window = wire_config().max_pending as usize;
    if opts.window == 0 || opts.window > max_window || opts.conns == 0 || opts.conns > CONNS {
        eprintln!("framed: --window must be 1..={max_window}, --conns 1..={CONNS}");
        exit(2);
    }
    let stop = Arc::new(AtomicBool::new(false));
    match mode.as_str() {
        "serve" => {
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, stop.clone()).expect("signal handler");
            }
            let (tx, _rx) = mpsc::channel();
            let r = run_server(addr, backend, stop, tx);
            eprintln!("{:#?}", r.stats);
            eprintln!(
                "framed: {} replies, {} waits for slab room, {} buffers leased at exit",
                r.replies, r.waited, r.leased_at_exit
            );
        }
        "client" => {
            if !run_client(addr, opts) {
                exit(1);
            }
        }
        _ => {
            let (tx, rx) = mpsc::channel();
            let stop2 = stop.clone();
            let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let server = thread::spawn(move || run_server(any, backend, stop2, tx));
            let bound = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| {
                    eprintln!("framed: the server did not start");
                    exit(1);
                });
            let ok = run_client(bound, opts);
            stop.store(true, Ordering::Relaxed);
            let r = server.join().expect("server thread");
            let want = (opts.conns * opts.count) as u64;
            let d = r.stats.decoder;
            println!(
                "framed server: {} messages ({} reassembled from fragments), {} replies, {} \
                 waits for slab room, dropped {}/{}, protocol errors {}, {} buffers leased at \
                 exit",
                d.frames,
                d.reassembled,
                r.replies,
                r.waited,
                d.dropped_throttle,
                d.dropped_no_buffer,
                r.stats.protocol_errors,
                r.leased_at_exit
            );
            let server_ok = d.frames == want
                && r.replies == want
                && d.dropped_throttle + d.dropped_no_buffer + d.expired == 0
                && r.stats.protocol_errors == 0
                && r.leased_at_exit == 0;
            if !ok || !server_ok {
                eprintln!("framed: FAILED");
                exit(1);
            }
            println!("framed: OK");
        }
    }
}
