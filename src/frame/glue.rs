//! The codecs on reactor connections: [`Framed`] (length-prefixed frames, a
//! [`FrameHandler`] gets each message as a [`Frame`]) and [`Lines`] (a [`LineHandler`] gets
//! each line as a view of the receive buffers).
//!
//! Both are [`Handler`]s that keep, per connection, a [`ConnectionPipeReader`] over the
//! receive leases and a decoder, and call the inner handler with decoded messages; the other
//! reactor callbacks pass through. They run on the reactor's callback API only (no executor).
//!
//! # Storage
//!
//! Per connection slot (indexed by [`ConnId::index`]): a slab slot for the connection's state
//! ([`FrameConn`], [`LineConn`]: the reader and the decoder), a key, and for [`Framed`] a
//! [`Throttle`], which must live as long as the frames (`'r`). [`FramedStorage`] and
//! [`LinesStorage`] are ready-made sets; the pieces ([`FramedMem`], [`LinesMem`]) can also be
//! placed separately: the slab slots are [`ZeroInit`](crate::pool::ZeroInit) (leak them zeroed
//! with `init_zeroed`), a throttle table can be a plain `static`
//! (`[const { Throttle::new() }; N]`).
//!
//! Memory per connection slot (x86-64, measured): [`Framed`] about 610 bytes (a slab slot of
//! a [`FrameConn`] with `R = 4`: 592, a [`Throttle`]: 8, a key: 8), [`Lines`] about 1170
//! bytes (a slab slot of a [`LineConn`]: 1160, with its 256-byte carry and 32 lease slots,
//! and a key). Compile-time checks below keep these figures honest.

use core::fmt;
use core::time::Duration;

use super::encode::FrameSink;
use super::{
    ConfigError, DecoderStats, EncodeError, Frame, FrameConfig, FrameDecoder, FrameEncoder,
    FrameError, LineConfig, LineDecoder, LineError, Throttle, encode_line,
};
use crate::pipe::{ConnectionPipeReader, ReadBuf};
use crate::pool::{Key, Lease, Slab, SlabStorage, Slot};
use crate::reactor::timer::TimerId;
use crate::reactor::{CloseReason, ConnId, Context, Handler, ListenerId};
use crate::sys::Error;

/// The timer token [`Framed`] arms its reassembly sweep with (below 2^63, as reactor tokens
/// must be). A handler under [`Framed`] must not use it for its own timers.
pub const SWEEP_TOKEN: u64 = (1 << 63) - 1;

/// The reader of a framed connection. The decoder copies payloads out as they arrive, so
/// after each receive at most a partial header (under 9 bytes) is left, in the carry: the
/// reader holds no lease between receives.
type FrameReader<'r> = ConnectionPipeReader<'r, 4, 16>;

/// The reader of a line connection: a line waits whole in the receive leases.
type LineReader<'r> = ConnectionPipeReader<'r, LINE_SEGS, 256>;
const LINE_SEGS: usize = 32;
/// Leases a line reader holds before it packs further leases densely.
const LINE_READER_QUOTA: usize = 8;

// The memory figures in the module docs (on 64-bit targets).
#[cfg(target_pointer_width = "64")]
static_assertions::const_assert!(core::mem::size_of::<Slot<FrameConn<'static, 4>>>() <= 600);
#[cfg(target_pointer_width = "64")]
static_assertions::const_assert!(core::mem::size_of::<Slot<LineConn<'static>>>() <= 1168);
static_assertions::const_assert!(core::mem::size_of::<Throttle>() == 8);

/// A connection's [`Context`] as a [`FrameSink`]: its write slab.
struct ConnSink<'a, 'c, 'r> {
    cx: &'a mut Context<'c, 'r>,
    conn: ConnId,
}

impl FrameSink for ConnSink<'_, '_, '_> {
    fn room(&mut self) -> usize {
        self.cx.write_capacity(self.conn)
    }

    fn capacity(&mut self) -> usize {
        self.cx.write_capacity(self.conn) + self.cx.staged(self.conn)
    }

    fn put(&mut self, bytes: &[u8]) {
        // Within the room checked: the write cannot fail (one thread, nothing in between).
        let _ = self.cx.write(self.conn, bytes);
    }
}

/// The per-connection states of an adapter: a slab of states, and per reactor connection slot
/// the key of its connection's state (stored `key + 1`, so 0 is "none").
struct ConnTable<'m, T> {
    slab: Slab<'m, T>,
    keys: &'m mut [u64],
}

impl<'m, T> ConnTable<'m, T> {
    fn new(slots: &'m mut [Slot<T>], keys: &'m mut [u64]) -> Self {
        keys.fill(0);
        ConnTable {
            slab: Slab::new(slots),
            keys,
        }
    }

    fn key(&self, conn: ConnId) -> Option<Key> {
        let raw = *self.keys.get(conn.index())?;
        raw.checked_sub(1).map(Key::from_u64)
    }

    /// Whether `conn` has a state.
    fn contains(&self, conn: ConnId) -> bool {
        self.key(conn).is_some_and(|k| self.slab.contains(k))
    }

    fn get(&self, conn: ConnId) -> Option<&T> {
        self.slab.get(self.key(conn)?).ok()
    }

    fn get_mut(&mut self, conn: ConnId) -> Option<&mut T> {
        let key = self.key(conn)?;
        self.slab.get_mut(key).ok()
    }

    /// Stores `state` (`None`: it could not be made) as `conn`'s; false when there is none or
    /// no room for it.
    fn insert(&mut self, conn: ConnId, state: Option<T>) -> bool {
        let key = state.and_then(|s| self.slab.try_insert(s).ok());
        match (key, self.keys.get_mut(conn.index())) {
            (Some(key), Some(slot)) => {
                *slot = key.to_u64() + 1;
                true
            }
            (key, _) => {
                if let Some(key) = key {
                    let _ = self.slab.remove(key);
                }
                false
            }
        }
    }

    /// Takes `conn`'s state out; `None` for a connection that never had one (refused).
    fn remove(&mut self, conn: ConnId) -> Option<T> {
        let key = self.key(conn)?;
        if let Some(slot) = self.keys.get_mut(conn.index()) {
            *slot = 0;
        }
        self.slab.remove(key).ok()
    }
}

// ------------------------------------------------------------------------------------------
// Framed
// ------------------------------------------------------------------------------------------

/// The per-connection state of [`Framed`] (opaque: it is the slot type of [`FramedMem`]).
pub struct FrameConn<'r, const R: usize = 4> {
    reader: FrameReader<'r>,
    decoder: FrameDecoder<'r, R>,
    failed: bool,
}

impl<const R: usize> fmt::Debug for FrameConn<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameConn")
            .field("decoder", &self.decoder)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// The storage of [`Framed`] as slices (see [`FramedStorage`] for a ready-made set).
pub struct FramedMem<'m, 'r, const R: usize = 4> {
    /// Connection state: as many as framed connections may be open at once (at most the
    /// reactor's connections).
    pub conns: &'m mut [Slot<FrameConn<'r, R>>],
    /// One per reactor connection slot.
    pub keys: &'m mut [u64],
    /// One per reactor connection slot, as long as `keys`.
    pub throttles: &'r [Throttle],
}

/// Ready-made storage for [`Framed`]: `CONNS` connection slots (the reactor's).
///
/// [`FramedStorage::new`] builds it where it is called (about 610 bytes per connection):
/// leak it once (`Box::leak(Box::new(FramedStorage::new()))`) or place it in a static.
pub struct FramedStorage<'r, const CONNS: usize, const R: usize = 4> {
    conns: SlabStorage<FrameConn<'r, R>, CONNS>,
    keys: [u64; CONNS],
    throttles: [Throttle; CONNS],
}

impl<'r, const CONNS: usize, const R: usize> FramedStorage<'r, CONNS, R> {
    /// Empty storage.
    pub const fn new() -> Self {
        FramedStorage {
            conns: SlabStorage::new(),
            keys: [0; CONNS],
            throttles: [const { Throttle::new() }; CONNS],
        }
    }

    /// The storage as slices, for [`Framed::new`]. The throttles are borrowed for `'r`, so the
    /// storage is too.
    pub fn mem(&'r mut self) -> FramedMem<'r, 'r, R> {
        let FramedStorage {
            conns,
            keys,
            throttles,
        } = self;
        FramedMem {
            conns: conns.as_mut_slice(),
            keys,
            throttles,
        }
    }
}

impl<const CONNS: usize, const R: usize> Default for FramedStorage<'_, CONNS, R> {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters of a [`Framed`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FramedStats {
    /// The decoders' counters, summed over every connection (open and closed).
    pub decoder: DecoderStats,
    /// Connections that sent a frame that cannot be valid ([`FrameHandler::on_error`]).
    pub protocol_errors: u64,
    /// Connections refused because the storage was full (aborted at once).
    pub refused: u64,
    /// Times the reassembly sweep could not arm its timer (the reactor's timer table was
    /// full); stalled reassemblies then expire only when their connection receives again.
    pub sweep_unarmed: u64,
}

/// What a [`FrameHandler`] acts through: the reactor's [`Context`] and the encoder.
pub struct FrameIo<'a, 'c, 'r> {
    cx: &'a mut Context<'c, 'r>,
    encoder: &'a mut FrameEncoder,
}

impl<'c, 'r> FrameIo<'_, 'c, 'r> {
    /// The reactor's context (write raw bytes, flush, close, timers, ...).
    pub fn cx(&mut self) -> &mut Context<'c, 'r> {
        self.cx
    }

    /// The encoder (its configuration, [`FrameEncoder::encoded_len`]).
    pub fn encoder(&self) -> &FrameEncoder {
        self.encoder
    }

    /// Writes `payload` as one message into `conn`'s write slab (fragmented above the chunk
    /// size), all or nothing, without flushing; returns the bytes written.
    ///
    /// # Errors
    ///
    /// Nothing is written on error: [`EncodeError::Closed`] for a closed connection, else as
    /// [`FrameEncoder::encode`] ([`EncodeError::WouldBlock`]: flush and wait for
    /// [`FrameHandler::on_flushed`]).
    pub fn send(&mut self, conn: ConnId, payload: &[u8]) -> Result<usize, EncodeError> {
        self.send_parts(conn, &[payload])
    }

    /// [`FrameIo::send`] for a message made of `parts`, written without joining them first.
    ///
    /// # Errors
    ///
    /// As [`FrameIo::send`].
    pub fn send_parts(&mut self, conn: ConnId, parts: &[&[u8]]) -> Result<usize, EncodeError> {
        if !self.cx.is_open(conn) {
            return Err(EncodeError::Closed);
        }
        let mut sink = ConnSink { cx: self.cx, conn };
        self.encoder.encode_parts(parts, &mut sink)
    }
}

/// The callbacks of a framed server or client: [`FrameHandler::on_frame`] for each message,
/// the rest as [`Handler`]'s. Every method but `on_frame` has a default.
pub trait FrameHandler<'r> {
    /// A message arrived on `conn`. The frame is the handler's: keep it as long as needed (it
    /// counts against the connection's throttle until dropped) or drop it.
    fn on_frame(&mut self, io: &mut FrameIo<'_, '_, 'r>, conn: ConnId, frame: Frame<'r>);

    /// `conn` was accepted (its framing state is ready).
    fn on_accept(&mut self, io: &mut FrameIo<'_, '_, 'r>, conn: ConnId, listener: ListenerId) {
        let _ = (io, conn, listener);
    }

    /// An outbound connection finished connecting (or failed), as
    /// [`Handler::on_connect`].
    fn on_connect(
        &mut self,
        io: &mut FrameIo<'_, '_, 'r>,
        conn: ConnId,
        result: Result<(), Error>,
    ) {
        let _ = (io, conn, result);
    }

    /// `conn` sent bytes that cannot be a valid frame; no frame of it is decoded any more.
    /// By default the connection is aborted.
    fn on_error(&mut self, io: &mut FrameIo<'_, '_, 'r>, conn: ConnId, error: FrameError) {
        let _ = error;
        io.cx().abort(conn);
    }

    /// The peer closed its sending side (a message cut short is dropped). By default the
    /// connection is closed gracefully.
    fn on_read_closed(&mut self, io: &mut FrameIo<'_, '_, 'r>, conn: ConnId) {
        io.cx().close(conn);
    }

    /// Everything staged on `conn` before a flush was sent.
    fn on_flushed(&mut self, io: &mut FrameIo<'_, '_, 'r>, conn: ConnId) {
        let _ = (io, conn);
    }

    /// A timer of the handler fired (any token but [`SWEEP_TOKEN`]).
    fn on_timer(&mut self, io: &mut FrameIo<'_, '_, 'r>, timer: TimerId, token: u64) {
        let _ = (io, timer, token);
    }

    /// `conn` closed. Frames of it the handler still holds stay valid; dropping them later
    /// returns their buffers.
    fn on_close(&mut self, io: &mut FrameIo<'_, '_, 'r>, conn: ConnId, reason: CloseReason) {
        let _ = (io, conn, reason);
    }
}

/// A [`Handler`] that runs the length-prefixed codec on every connection and hands each
/// message to a [`FrameHandler`] as a [`Frame`].
///
/// Per connection it keeps a [`ConnectionPipeReader`] over the receive leases and a
/// [`FrameDecoder`]; on every receive it decodes until the input runs out, delivering each
/// complete message (payloads are copied into user-tier buffers as they arrive, so the
/// receive leases go back at once and a large message holds no receive buffer). A connection
/// that sends an invalid frame goes to [`FrameHandler::on_error`]. While any message is in
/// reassembly, a periodic timer (token [`SWEEP_TOKEN`], every quarter of the reassembly
/// timeout) expires stalled ones, so a message expires between 1 and 1.25 timeouts after its
/// first fragment; the timer is cancelled when no reassembly is left.
///
/// Sizing: the reactor's user tier
/// ([`Config::user_buffers`](crate::reactor::Config::user_buffers)) should hold
/// `connections * (max_pending + max_reassemblies)` buffers, or messages are dropped for lack
/// of one ([`DecoderStats::dropped_no_buffer`]); the write slab must hold the largest encoded
/// message a handler sends.
///
/// # Example
///
/// An echo server: every message comes back as it came.
///
/// ```no_run
/// use ringlet::frame::{Frame, FrameConfig, FrameHandler, FrameIo, Framed, FramedStorage};
/// use ringlet::pool::StaticSlot;
/// use ringlet::reactor::{Config, ConnId, Reactor, Resources};
///
/// struct Echo;
///
/// impl<'r> FrameHandler<'r> for Echo {
///     fn on_frame(&mut self, io: &mut FrameIo<'_, '_, 'r>, conn: ConnId, frame: Frame<'r>) {
///         if io.send(conn, &frame).is_err() {
///             io.cx().abort(conn); // a real server would keep the frame and retry
///         }
///         let _ = io.cx().flush(conn);
///     }
/// }
///
/// static RESOURCES: StaticSlot<Resources<64, 512, 4096, 65536, 16>> = StaticSlot::new();
///
/// let config = Config { user_buffers: 256, ..Config::default() };
/// let mut reactor = Reactor::new(RESOURCES.take().unwrap(), config).unwrap();
/// reactor.listen("127.0.0.1:7001".parse().unwrap()).unwrap();
/// let storage = Box::leak(Box::new(FramedStorage::<'static, 64>::new()));
/// let mut framed = Framed::new(Echo, FrameConfig::default(), 4096, storage.mem()).unwrap();
/// reactor.run(&mut framed).unwrap();
/// ```
pub struct Framed<'m, 'r, H, const R: usize = 4> {
    handler: H,
    config: FrameConfig,
    encoder: FrameEncoder,
    conns: ConnTable<'m, FrameConn<'r, R>>,
    throttles: &'r [Throttle],
    sweep: Option<TimerId>,
    /// Counters of closed connections, and the adapter's own.
    stats: FramedStats,
}

impl<'m, 'r, H: FrameHandler<'r>, const R: usize> Framed<'m, 'r, H, R> {
    /// An adapter running `handler` with `config`, for a reactor whose receive buffers are
    /// `buf_size` bytes.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the config does not validate, a message does not fit a buffer
    /// ([`FrameConfig::check_buffers`]), `max_reassemblies` exceeds `R`, or the storage
    /// pieces disagree (`keys` and `throttles` must be as long).
    pub fn new(
        handler: H,
        config: FrameConfig,
        buf_size: usize,
        mem: FramedMem<'m, 'r, R>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        config.check_buffers(buf_size)?;
        if config.max_reassemblies > R {
            return Err(ConfigError(
                "max_reassemblies exceeds R (the decoders' room for reassemblies)",
            ));
        }
        if mem.keys.len() != mem.throttles.len() {
            return Err(ConfigError(
                "keys and throttles must have one entry per reactor connection slot",
            ));
        }
        Ok(Framed {
            handler,
            encoder: FrameEncoder::new(config)?,
            config,
            conns: ConnTable::new(mem.conns, mem.keys),
            throttles: mem.throttles,
            sweep: None,
            stats: FramedStats::default(),
        })
    }

    /// The inner handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The inner handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Counters, summed over every connection, open and closed.
    pub fn stats(&self) -> FramedStats {
        let mut s = self.stats;
        for (_, fc) in self.conns.slab.iter() {
            s.decoder.add(&fc.decoder.stats());
        }
        s
    }

    /// Frames of `conn` delivered and not yet released (its throttle's count).
    pub fn pending(&self, conn: ConnId) -> u32 {
        self.conns
            .get(conn)
            .map_or(0, |fc| fc.decoder.throttle().pending())
    }

    /// Messages in reassembly on `conn`.
    pub fn reassemblies(&self, conn: ConnId) -> usize {
        self.conns
            .get(conn)
            .map_or(0, |fc| fc.decoder.reassemblies())
    }

    /// Framed connections open.
    pub fn connections(&self) -> usize {
        self.conns.slab.len()
    }

    /// Sets up `conn`'s framing state; false (the connection aborted, counted) when there is
    /// no room for it.
    fn open(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId) -> bool {
        if self.conns.contains(conn) {
            return true;
        }
        let state = self.throttles.get(conn.index()).and_then(|throttle| {
            let decoder = FrameDecoder::new(self.config, cx.pool(), throttle).ok()?;
            let reader = FrameReader::new(4).ok()?;
            Some(FrameConn {
                reader,
                decoder,
                failed: false,
            })
        });
        let opened = self.conns.insert(conn, state);
        if !opened {
            self.stats.refused += 1;
            cx.abort(conn);
        }
        opened
    }

    /// Calls the inner handler with `cx` as a [`FrameIo`].
    fn pass(&mut self, cx: &mut Context<'_, 'r>, f: impl FnOnce(&mut H, &mut FrameIo<'_, '_, 'r>)) {
        f(
            &mut self.handler,
            &mut FrameIo {
                cx,
                encoder: &mut self.encoder,
            },
        );
    }

    fn arm_sweep(&mut self, cx: &mut Context<'_, 'r>) {
        if self.sweep.is_some() {
            return;
        }
        let period = (self.config.reassembly_timeout / 4).max(Duration::from_millis(1));
        match cx.set_timer(period, Some(period), SWEEP_TOKEN) {
            Ok(t) => self.sweep = Some(t),
            Err(_) => self.stats.sweep_unarmed += 1,
        }
    }

    fn sweep(&mut self, cx: &mut Context<'_, 'r>, timer: TimerId) {
        let now = cx.now();
        let mut active = 0;
        for (_, fc) in self.conns.slab.iter_mut() {
            fc.decoder.expire(now);
            active += fc.decoder.reassemblies();
        }
        if active == 0 {
            let _ = cx.cancel_timer(timer);
            self.sweep = None;
        }
    }
}

impl<'r, H: FrameHandler<'r>, const R: usize> Handler<'r> for Framed<'_, 'r, H, R> {
    fn on_accept(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, listener: ListenerId) {
        if self.open(cx, conn) {
            self.pass(cx, |h, io| h.on_accept(io, conn, listener));
        }
    }

    fn on_connect(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, result: Result<(), Error>) {
        if result.is_ok() && !self.open(cx, conn) {
            return;
        }
        self.pass(cx, |h, io| h.on_connect(io, conn, result));
    }

    fn on_data(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, lease: Lease<'r>) {
        if !self.conns.contains(conn) && !self.open(cx, conn) {
            return;
        }
        let Framed {
            handler,
            encoder,
            conns,
            stats,
            ..
        } = self;
        let Some(fc) = conns.get_mut(conn) else {
            return;
        };
        if fc.failed {
            return; // the lease goes back
        }
        // The reader's flow signals are not needed: it never holds a lease past this call.
        if fc.reader.push(lease).is_err() {
            // Cannot happen (see FrameReader); treat it as the broken stream it would be.
            fc.failed = true;
            fc.reader.reset();
            stats.protocol_errors += 1;
            cx.abort(conn);
            return;
        }
        let now = cx.now();
        while cx.is_open(conn) {
            let Some(read) = fc.reader.try_read() else {
                break;
            };
            let buf = read.buffer();
            let decoded = fc.decoder.decode(buf, now);
            let end = buf.end();
            let Ok(d) = decoded else {
                fc.failed = true;
                fc.reader.reset();
                stats.protocol_errors += 1;
                if let Err(e) = decoded {
                    handler.on_error(&mut FrameIo { cx, encoder }, conn, e);
                }
                break;
            };
            let consumed = buf.position(d.consumed).unwrap_or(end);
            let examined = if d.frame.is_some() { consumed } else { end };
            let _ = fc.reader.advance_to_examined(consumed, examined);
            match d.frame {
                Some(frame) => handler.on_frame(&mut FrameIo { cx, encoder }, conn, frame),
                None => break,
            }
        }
        let reassembling = fc.decoder.reassemblies() > 0;
        if reassembling {
            self.arm_sweep(cx);
        }
    }

    fn on_read_closed(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId) {
        self.pass(cx, |h, io| h.on_read_closed(io, conn));
    }

    fn on_flushed(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId) {
        self.pass(cx, |h, io| h.on_flushed(io, conn));
    }

    fn on_timer(&mut self, cx: &mut Context<'_, 'r>, timer: TimerId, token: u64) {
        if token == SWEEP_TOKEN && self.sweep == Some(timer) {
            return self.sweep(cx, timer);
        }
        self.pass(cx, |h, io| h.on_timer(io, timer, token));
    }

    fn on_close(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, reason: CloseReason) {
        let Some(fc) = self.conns.remove(conn) else {
            // A failed connect has no state, but the handler saw its `on_connect`: it hears
            // of the close, as a plain `Handler` does. Otherwise refused: it never saw it.
            if let CloseReason::ConnectFailed(_) = reason {
                self.pass(cx, |h, io| h.on_close(io, conn, reason));
            }
            return;
        };
        // Dropping the state returns the reader's leases and the reassembly buffers, and ends
        // the throttle's generation.
        self.stats.decoder.add(&fc.decoder.stats());
        self.pass(cx, |h, io| h.on_close(io, conn, reason));
    }
}

impl<H, const R: usize> fmt::Debug for Framed<'_, '_, H, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framed")
            .field("connections", &self.conns.slab.len())
            .field("sweep", &self.sweep)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

// ------------------------------------------------------------------------------------------
// Lines
// ------------------------------------------------------------------------------------------

/// The per-connection state of [`Lines`] (opaque: it is the slot type of [`LinesMem`]).
pub struct LineConn<'r> {
    reader: LineReader<'r>,
    decoder: LineDecoder,
    /// The handler asked to wait (its write slab was full): resume on `on_flushed`.
    waiting: bool,
    failed: bool,
    /// The peer closed its side; the handler hears of it once the lines before are handled.
    eof: bool,
}

impl fmt::Debug for LineConn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineConn")
            .field("reader", &self.reader)
            .field("waiting", &self.waiting)
            .field("failed", &self.failed)
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

/// The storage of [`Lines`] as slices (see [`LinesStorage`]).
pub struct LinesMem<'m, 'r> {
    /// Connection state: as many as line connections may be open at once.
    pub conns: &'m mut [Slot<LineConn<'r>>],
    /// One per reactor connection slot.
    pub keys: &'m mut [u64],
}

/// Ready-made storage for [`Lines`]: `CONNS` connection slots (the reactor's).
///
/// [`LinesStorage::new`] builds it where it is called (about 1170 bytes per connection).
pub struct LinesStorage<'r, const CONNS: usize> {
    conns: SlabStorage<LineConn<'r>, CONNS>,
    keys: [u64; CONNS],
}

impl<'r, const CONNS: usize> LinesStorage<'r, CONNS> {
    /// Empty storage.
    pub const fn new() -> Self {
        LinesStorage {
            conns: SlabStorage::new(),
            keys: [0; CONNS],
        }
    }

    /// The storage as slices, for [`Lines::new`].
    pub fn mem(&mut self) -> LinesMem<'_, 'r> {
        LinesMem {
            conns: self.conns.as_mut_slice(),
            keys: &mut self.keys,
        }
    }
}

impl<const CONNS: usize> Default for LinesStorage<'_, CONNS> {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters of a [`Lines`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LinesStats {
    /// Lines handled ([`LineNext::Continue`]).
    pub lines: u64,
    /// Connections that sent an over-long line ([`LineHandler::on_error`]).
    pub protocol_errors: u64,
    /// Connections refused because the storage was full (aborted at once).
    pub refused: u64,
}

/// What [`LineHandler::on_line`] asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LineNext {
    /// The line is handled: consume it and go on.
    Continue,
    /// The line could not be handled now (typically: the reply does not fit the write slab):
    /// keep it, stop, and offer it again after the next [`LineHandler::on_flushed`] of the
    /// connection. Flush before returning this, or no `on_flushed` comes.
    Wait,
}

/// What a [`LineHandler`] acts through: the reactor's [`Context`] and the line settings.
pub struct LineIo<'a, 'c, 'r> {
    cx: &'a mut Context<'c, 'r>,
    config: &'a LineConfig,
}

impl<'c, 'r> LineIo<'_, 'c, 'r> {
    /// The reactor's context.
    pub fn cx(&mut self) -> &mut Context<'c, 'r> {
        self.cx
    }

    /// The line settings.
    pub fn config(&self) -> &LineConfig {
        self.config
    }

    /// Writes `line` and the line ending into `conn`'s write slab, all or nothing, without
    /// flushing; returns the bytes written.
    ///
    /// # Errors
    ///
    /// Nothing is written on error: [`EncodeError::Closed`] for a closed connection, else as
    /// [`encode_line`].
    pub fn send_line(&mut self, conn: ConnId, line: &[u8]) -> Result<usize, EncodeError> {
        if !self.cx.is_open(conn) {
            return Err(EncodeError::Closed);
        }
        let mut sink = ConnSink { cx: self.cx, conn };
        encode_line(self.config, line, &mut sink)
    }
}

/// The callbacks of a line server: [`LineHandler::on_line`] for each line, the rest as
/// [`Handler`]'s. Every method but `on_line` has a default.
pub trait LineHandler<'r> {
    /// A line arrived on `conn` (without its ending), as a view of the receive buffers: copy
    /// out what must outlive the call. Return [`LineNext::Wait`] to be offered it again after
    /// the next `on_flushed`.
    fn on_line(&mut self, io: &mut LineIo<'_, '_, 'r>, conn: ConnId, line: ReadBuf<'_>)
    -> LineNext;

    /// `conn` was accepted.
    fn on_accept(&mut self, io: &mut LineIo<'_, '_, 'r>, conn: ConnId, listener: ListenerId) {
        let _ = (io, conn, listener);
    }

    /// An outbound connection finished connecting (or failed).
    fn on_connect(&mut self, io: &mut LineIo<'_, '_, 'r>, conn: ConnId, result: Result<(), Error>) {
        let _ = (io, conn, result);
    }

    /// `conn` sent a line longer than the limit; no line of it is decoded any more. By
    /// default the connection is aborted; a handler may write an error line first and close.
    fn on_error(&mut self, io: &mut LineIo<'_, '_, 'r>, conn: ConnId, error: LineError) {
        let _ = error;
        io.cx().abort(conn);
    }

    /// The peer closed its side, and every complete line before was handled (an
    /// unterminated rest is dropped). By default the connection is closed gracefully.
    fn on_read_closed(&mut self, io: &mut LineIo<'_, '_, 'r>, conn: ConnId) {
        io.cx().close(conn);
    }

    /// Everything staged on `conn` before a flush was sent (waiting lines were offered again
    /// just before).
    fn on_flushed(&mut self, io: &mut LineIo<'_, '_, 'r>, conn: ConnId) {
        let _ = (io, conn);
    }

    /// A timer fired.
    fn on_timer(&mut self, io: &mut LineIo<'_, '_, 'r>, timer: TimerId, token: u64) {
        let _ = (io, timer, token);
    }

    /// `conn` closed.
    fn on_close(&mut self, io: &mut LineIo<'_, '_, 'r>, conn: ConnId, reason: CloseReason) {
        let _ = (io, conn, reason);
    }
}

/// A [`Handler`] that runs the line codec on every connection and hands each line to a
/// [`LineHandler`], zero-copy: lines are views of the receive leases.
///
/// A line waits whole in the connection's receive leases until it ends. The reader holds up
/// to 8 leases as they come, then packs further bytes densely into full buffers, so a line of
/// `max_line` bytes needs about `8 + max_line / buf_size + 2` leases: the reactor's
/// [`Config::lease_quota`](crate::reactor::Config::lease_quota) must allow that, which
/// [`Lines::new`] checks (else a long line would pause its connection for good).
pub struct Lines<'m, 'r, H> {
    handler: H,
    config: LineConfig,
    conns: ConnTable<'m, LineConn<'r>>,
    stats: LinesStats,
}

impl<'m, 'r, H: LineHandler<'r>> Lines<'m, 'r, H> {
    /// An adapter running `handler` with `config`, for a reactor with receive buffers of
    /// `buf_size` bytes and a lease quota of `lease_quota`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when a line of `max_line` bytes cannot be held within the lease
    /// quota (raise the quota or the buffer size, or lower `max_line`).
    pub fn new(
        handler: H,
        config: LineConfig,
        mem: LinesMem<'m, 'r>,
        buf_size: usize,
        lease_quota: usize,
    ) -> Result<Self, ConfigError> {
        let slots = lease_quota
            .min(LINE_SEGS)
            .saturating_sub(LINE_READER_QUOTA + 2);
        let need = config
            .max_line
            .saturating_add(config.ending.delimiter().len());
        if need > slots.saturating_mul(buf_size) {
            return Err(ConfigError(
                "max_line does not fit the receive leases a connection may hold: need \
                 (lease_quota - 10) * buf_size >= max_line + 2 (lease_quota up to 32)",
            ));
        }
        Ok(Lines {
            handler,
            config,
            conns: ConnTable::new(mem.conns, mem.keys),
            stats: LinesStats::default(),
        })
    }

    /// The inner handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The inner handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Counters.
    pub fn stats(&self) -> LinesStats {
        self.stats
    }

    fn open(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId) -> bool {
        if self.conns.contains(conn) {
            return true;
        }
        let state = LineReader::new(LINE_READER_QUOTA)
            .ok()
            .map(|reader| LineConn {
                reader,
                decoder: LineDecoder::new(self.config),
                waiting: false,
                failed: false,
                eof: false,
            });
        let opened = self.conns.insert(conn, state);
        if !opened {
            self.stats.refused += 1;
            cx.abort(conn);
        }
        opened
    }

    /// Calls the inner handler with `cx` as a [`LineIo`].
    fn pass(&mut self, cx: &mut Context<'_, 'r>, f: impl FnOnce(&mut H, &mut LineIo<'_, '_, 'r>)) {
        f(
            &mut self.handler,
            &mut LineIo {
                cx,
                config: &self.config,
            },
        );
    }

    /// Hands `conn`'s complete lines to the handler until none is left, it waits, or the
    /// connection fails; then reports a pending end of input.
    fn process(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId) {
        let Lines {
            handler,
            config,
            conns,
            stats,
            ..
        } = self;
        let Some(lc) = conns.get_mut(conn) else {
            return;
        };
        while !lc.waiting && !lc.failed && cx.is_open(conn) {
            let Some(read) = lc.reader.try_read() else {
                break;
            };
            let buf = read.buffer();
            match lc.decoder.decode(buf) {
                Ok(Some(line)) => {
                    let io = &mut LineIo { cx, config };
                    let next = handler.on_line(io, conn, line.line);
                    let to = match next {
                        LineNext::Continue => {
                            stats.lines += 1;
                            buf.position(line.consumed).unwrap_or(buf.end())
                        }
                        LineNext::Wait => {
                            lc.waiting = true;
                            buf.start()
                        }
                    };
                    let _ = lc.reader.advance_to(to);
                }
                Ok(None) => {
                    let (start, end) = (buf.start(), buf.end());
                    let _ = lc.reader.advance_to_examined(start, end);
                    break;
                }
                Err(e) => {
                    lc.failed = true;
                    lc.reader.reset();
                    stats.protocol_errors += 1;
                    handler.on_error(&mut LineIo { cx, config }, conn, e);
                    return;
                }
            }
        }
        if lc.eof && !lc.waiting && !lc.failed {
            lc.eof = false; // reported once
            handler.on_read_closed(&mut LineIo { cx, config }, conn);
        }
    }
}

impl<'r, H: LineHandler<'r>> Handler<'r> for Lines<'_, 'r, H> {
    fn on_accept(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, listener: ListenerId) {
        if self.open(cx, conn) {
            self.pass(cx, |h, io| h.on_accept(io, conn, listener));
        }
    }

    fn on_connect(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, result: Result<(), Error>) {
        if result.is_ok() && !self.open(cx, conn) {
            return;
        }
        self.pass(cx, |h, io| h.on_connect(io, conn, result));
    }

    fn on_data(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, lease: Lease<'r>) {
        if !self.conns.contains(conn) && !self.open(cx, conn) {
            return;
        }
        let Some(lc) = self.conns.get_mut(conn) else {
            return;
        };
        if lc.failed {
            return;
        }
        // Flow signals are left to the reactor's lease quota (see the type's docs): past its
        // quota the reader packs leases, so slots track bytes.
        if lc.reader.push(lease).is_err() {
            // Every slot holds unread bytes even packed: more than a line's worth.
            lc.failed = true;
            lc.reader.reset();
            self.stats.protocol_errors += 1;
            let e = LineError::TooLong {
                max: self.config.max_line,
            };
            return self.pass(cx, |h, io| h.on_error(io, conn, e));
        }
        self.process(cx, conn);
    }

    fn on_read_closed(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId) {
        match self.conns.get_mut(conn) {
            Some(lc) if !lc.failed => {
                lc.reader.push_eof();
                lc.eof = true;
                self.process(cx, conn);
            }
            _ => {
                self.pass(cx, |h, io| h.on_read_closed(io, conn));
            }
        }
    }

    fn on_flushed(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId) {
        if let Some(lc) = self.conns.get_mut(conn)
            && lc.waiting
        {
            lc.waiting = false;
            self.process(cx, conn);
        }
        self.pass(cx, |h, io| h.on_flushed(io, conn));
    }

    fn on_timer(&mut self, cx: &mut Context<'_, 'r>, timer: TimerId, token: u64) {
        self.pass(cx, |h, io| h.on_timer(io, timer, token));
    }

    fn on_close(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, reason: CloseReason) {
        // Dropping the state returns the reader's leases.
        // A failed connect has no state, but the handler saw its `on_connect` (see
        // `Framed`'s `on_close`); any other connection without state was refused unseen.
        if self.conns.remove(conn).is_none() && !matches!(reason, CloseReason::ConnectFailed(_)) {
            return;
        }
        self.pass(cx, |h, io| h.on_close(io, conn, reason));
    }
}

impl<H> fmt::Debug for Lines<'_, '_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lines")
            .field("connections", &self.conns.slab.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
