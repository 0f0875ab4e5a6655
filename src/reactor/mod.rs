//! The event loop: one single-threaded reactor over io_uring or epoll.
//!
//! A [`Reactor`] is built from caller-provided [`Resources`] (every buffer, slab and slot it
//! will ever use) and a [`Config`]. It drives a [`Handler`]: callbacks for accepted
//! connections, received bytes, finished flushes, timers and closes. Through the [`Context`]
//! it is given, a handler writes to any connection (not only the one whose event it handles),
//! flushes, closes, pauses and resumes receiving, arms timers and opens outbound connections.
//!
//! # The loop, turn by turn
//!
//! 1. Submit what the previous turn queued and wait for completions (io_uring, one
//!    `io_uring_enter`) or readiness (epoll), bounded by the next timer.
//! 2. Dispatch each event: accepts to [`Handler::on_accept`], received leases to
//!    [`Handler::on_data`], finished sends to [`Handler::on_sent`] and
//!    [`Handler::on_flushed`], ends to [`Handler::on_close`].
//! 3. Fire expired timers; take back buffers returned from other threads.
//! 4. [`Handler::before_flush`]: the handler's per-turn hook, where the executor polls the
//!    tasks woken during the turn (or from other threads).
//! 5. Resume connections whose leases came back, re-arm connections that ran out of receive
//!    buffers (a bounded number per turn, and only above a free-buffer watermark, so they do not
//!    all run dry again at once).
//! 6. Queue the sends of every connection flushed during the turn: they go out with the next
//!    turn's wait, in the same system call.
//!
//! # Memory and fairness
//!
//! Receive buffers come from one pool shared by all connections. A lease handed to
//! [`Handler::on_data`] is the handler's until it drops it; while a connection's handler holds
//! [`Config::lease_quota`] of them, that connection's receive is paused, so one slow consumer
//! cannot take every buffer. When the pool itself runs dry, receiving pauses (nothing is lost:
//! the kernel keeps the bytes) and resumes as buffers come back. With io_uring and a
//! [`Config::ring_window`] set, only that many free buffers are offered to the kernel at once, refilled with the
//! buffers given back last, so receives reuse a few buffers and the rest of the pool is not
//! touched until load needs it; a receive that finds the window empty pauses and resumes the
//! same way.
//!
//! Each connection has a fixed write slab. [`Context::write`] copies into it, all or nothing:
//! a full slab is [`WriteError::WouldBlock`], never a partial write or a panic; wait for
//! [`Handler::on_flushed`]. At most one send per connection is in flight.
//!
//! # Closing
//!
//! [`Context::close`] is graceful: receiving stops, what is staged is flushed (for at most
//! [`Config::close_linger`]), then the socket is closed. [`Context::abort`] drops what is
//! staged. Either way [`Handler::on_close`] runs once, after the last kernel operation on the
//! connection has completed; after it the [`ConnId`] is stale and every [`Context`] call with
//! it fails with [`ConnError::Stale`] (a new connection in the same slot has a new id).

pub mod timer;

use core::fmt;
use core::marker::PhantomData;
use core::net::SocketAddr;
use core::time::Duration;

use crate::pool::{BufPoolConfig, Key, Lease, RecvTier, Slab};
use crate::sys::driver::{Driver, IoEvent, LoopError, LoopInit, LoopStorage, RecvStop};
use crate::sys::socket::{ListenOptions, Shutdown, TcpListener};
use crate::sys::uring::{Features, Uring, UringConfig};
use crate::sys::{Error, clock};
use crate::time::Instant;
use timer::{TimerEntry, TimerError, TimerId, TimerWheel};

pub use crate::sys::driver::{Backend, KernelCalls};

/// Everything one reactor uses, sized by const generics: `CONNS` connections, `BUFS` receive
/// buffers of `BUF_SIZE` bytes, a `SLAB`-byte write slab per connection, `TIMERS` timers.
///
/// Memory: `CONNS * (SLAB + 420) + BUFS * (BUF_SIZE + 26) + TIMERS * 72` bytes at most, plus
/// up to 16 KiB of fixed parts (the timer wheel, epoll's event array, page alignment). All-zero
/// bytes is its empty state, so place it in a `static` through [`crate::pool::StaticSlot`]
/// (it lands in `.bss`) or map it once at start-up with [`crate::sys::mem::map_zeroed`]
/// (fresh pages, resident only as they are used), for [`Reactor::new`]; or zero it in place
/// with [`crate::pool::init_zeroed`] (a `MaybeUninit` on the stack, say) for
/// [`Reactor::scoped`]. Never build it by value: it is too big to move.
pub type Resources<
    const CONNS: usize,
    const BUFS: usize,
    const BUF_SIZE: usize,
    const SLAB: usize,
    const TIMERS: usize,
> = LoopStorage<Conn, TimerEntry, CONNS, BUFS, BUF_SIZE, SLAB, TIMERS>;

/// Which backend to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring when the kernel has provided-buffer rings and multishot receive (Linux 6.0+)
    /// and io_uring is allowed; epoll otherwise.
    #[default]
    Auto,
    /// io_uring, or an error.
    Uring,
    /// epoll.
    Epoll,
}

/// How a reactor behaves. Capacities are in [`Resources`]; these are the policies.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Which backend.
    pub backend: BackendChoice,
    /// io_uring queue sizes (size the completion queue for the worst case of receives between
    /// two turns).
    pub uring: UringConfig,
    /// Receive buffers kept back from the kernel for user code (pipe segments, reassembly).
    pub user_buffers: u16,
    /// Leases one connection's handler may hold before that connection's receive pauses.
    pub lease_quota: u16,
    /// io_uring: receive buffers published to the kernel's provided-buffer ring at once (0:
    /// all of them). The kernel takes ring buffers in order, so with every free buffer
    /// published, consecutive receives touch consecutive buffers and the whole pool soon
    /// becomes resident; with a window, the rest of the free buffers wait on a stack and refill
    /// the ring most recently returned first, so receives reuse a few hot buffers. The window
    /// doubles (up to all; it never shrinks) when the ring runs dry while buffers were free
    /// and either
    /// - the connection had already received in that round (a stream needing more buffers
    ///   per round than the window), or
    /// - connections that had received before found it dry in at least a quarter of the
    ///   receives over a stretch of 16 windows' worth of them (steady demand: more connections
    ///   receive each round than the window holds, e.g. 256 in ping-pong against a window of
    ///   64).
    ///
    /// A connection storm (many new connections receiving one message each in the same round)
    /// does not widen it: connections that find the ring dry are re-armed
    /// [`Config::rearm_per_turn`] per round, as for an empty pool. See "The ring window" in
    /// [`crate::pool::BufPool`]. Ignored by epoll, whose free list is already last in, first
    /// out.
    ///
    /// Default 0 (every buffer published). A window trades work for memory: each connection
    /// that finds it empty costs a re-armed receive (until steady demand widens it), and the
    /// buffers it leaves out stay cold. Use a window where many connections are mostly idle
    /// and memory per connection matters (the broker examples use 64).
    pub ring_window: u16,
    /// Free receive buffers needed before connections starved of buffers are re-armed.
    pub rearm_watermark: u16,
    /// Starved connections re-armed per turn at most.
    pub rearm_per_turn: u16,
    /// Listen backlog for [`Reactor::listen`].
    pub backlog: u32,
    /// Timer wheel resolution: timers fire at most this late.
    pub timer_resolution: Duration,
    /// How long a graceful close waits for staged bytes to leave before it aborts.
    pub close_linger: Duration,
    /// How long a graceful stop waits for connections to flush and close before it aborts
    /// them.
    pub stop_timeout: Duration,
    /// Pause before accepting again after the process ran out of descriptors (EMFILE).
    pub accept_backoff: Duration,
    /// Set TCP_NODELAY on every connection.
    pub nodelay: bool,
    /// io_uring on Linux 6.12+: after a turn that answered several connections (each sent data
    /// and got a reply in the same turn) or sent on several, the next wait holds out up to this
    /// long for the sends' completions and for half of the connections answered to send again
    /// (or for one more event), so one system call collects a batch instead of waking at the
    /// first arrival. It delays an event (a send's completion, [`Handler::on_flushed`]) by at
    /// most this much when fewer arrive. Zero disables it.
    pub batch_wait: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backend: BackendChoice::Auto,
            uring: UringConfig::default(),
            user_buffers: 0,
            lease_quota: 16,
            ring_window: 0,
            rearm_watermark: 8,
            rearm_per_turn: 64,
            backlog: 1024,
            timer_resolution: Duration::from_millis(1),
            close_linger: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(5),
            accept_backoff: Duration::from_millis(100),
            nodelay: true,
            batch_wait: Duration::from_micros(20),
        }
    }
}

/// A connection: a slot and its generation. Stale once [`Handler::on_close`] has run for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(Key);

impl ConnId {
    /// The slot index (below the reactor's connection capacity): handy for per-connection
    /// tables in handlers.
    pub fn index(self) -> usize {
        self.0.index() as usize
    }

    /// The slot's generation.
    pub fn generation(self) -> u32 {
        self.0.generation()
    }
}

/// A listener of a reactor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerId(pub u8);

/// Why a connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The handler closed it ([`Context::close`] / [`Context::abort`]).
    Local,
    /// The peer closed its side and the handler (by default) closed ours.
    PeerClosed,
    /// A receive or send failed (reset, broken pipe, ...).
    Error(Error),
    /// An outbound connect failed.
    ConnectFailed(Error),
    /// A graceful close could not flush within [`Config::close_linger`].
    LingerExpired,
    /// The reactor stopped.
    Stopped,
}

impl CloseReason {
    fn counter(self) -> usize {
        match self {
            CloseReason::Local => 0,
            CloseReason::PeerClosed => 1,
            CloseReason::Error(_) => 2,
            CloseReason::ConnectFailed(_) => 3,
            CloseReason::LingerExpired => 4,
            CloseReason::Stopped => 5,
        }
    }
}

/// Counters of a reactor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused because the connection table was full.
    pub refused: u64,
    /// Accept errors (EMFILE and friends), each followed by a back-off.
    pub accept_errors: u64,
    /// Closed connections by reason: local, peer closed, error, connect failed, linger
    /// expired, stopped.
    pub closed: [u64; 6],
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Receive buffers handed out now.
    pub bufs_in_use: usize,
    /// The most receive buffers ever handed out at once.
    pub bufs_high_water: usize,
    /// Times a connection's receive paused because the pool ran dry.
    pub starvation_pauses: u64,
    /// The provided-buffer ring's window now ([`Config::ring_window`]; io_uring, 0 with
    /// epoll).
    pub ring_window: usize,
    /// Times the ring window doubled because a burst ran the ring dry while buffers were free.
    pub ring_widenings: u64,
    /// Times a connection's receive paused at its lease quota.
    pub quota_pauses: u64,
    /// Loop turns.
    pub turns: u64,
    /// Buffers returned from other threads (dropped [`crate::pool::SendLease`]s) taken back.
    pub returned: u64,
    /// Kernel calls by kind.
    pub kernel: KernelCalls,
}

/// How a connection's write slab is used: [`Context::write_room`], [`Context::write_flush`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteRoom {
    /// Bytes staged and not yet sent (what [`Context::staged`] says).
    pub staged: usize,
    /// Free bytes (what [`Context::write_capacity`] says: 0 for a closed or closing
    /// connection).
    pub free: usize,
}

/// Errors of [`Context`] operations on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnError {
    /// The connection is closed (or closing) and its id is stale.
    Stale,
    /// The write slab has no room for the whole write; nothing was written. Flush and wait for
    /// [`Handler::on_flushed`].
    WouldBlock,
    /// The write can never fit: it is larger than the whole slab.
    TooLarge,
    /// The kernel refused.
    Os(Error),
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Stale => f.write_str("connection closed (stale id)"),
            ConnError::WouldBlock => f.write_str("write slab full: flush and wait for on_flushed"),
            ConnError::TooLarge => f.write_str("write larger than the write slab (raise SLAB)"),
            ConnError::Os(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for ConnError {}

/// Errors of writes, the same as [`ConnError`].
pub type WriteError = ConnError;

/// Errors building or configuring a reactor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReactorError {
    /// io_uring was asked for and is unavailable or lacks what the backend needs.
    UringUnavailable(Error),
    /// The kernel refused something else.
    Os(Error),
    /// The configuration does not fit the resources (e.g. more user buffers than buffers).
    Config(&'static str),
    /// Every listener slot is in use (at most 8 listeners).
    TooManyListeners,
    /// Every timer is in use: raise the TIMERS capacity.
    TimersFull,
}

impl From<LoopError> for ReactorError {
    fn from(e: LoopError) -> Self {
        match e {
            LoopError::Pool(_) => ReactorError::Config("buffer pool configuration"),
            LoopError::Os(e) => ReactorError::Os(e),
        }
    }
}

impl From<Error> for ReactorError {
    fn from(e: Error) -> Self {
        ReactorError::Os(e)
    }
}

impl fmt::Display for ReactorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReactorError::UringUnavailable(e) => write!(f, "io_uring unavailable: {e}"),
            ReactorError::Os(e) => write!(f, "{e}"),
            ReactorError::Config(what) => write!(f, "configuration: {what}"),
            ReactorError::TooManyListeners => f.write_str("all 8 listener slots are in use"),
            ReactorError::TimersFull => f.write_str("all timers are in use: raise TIMERS"),
        }
    }
}

impl core::error::Error for ReactorError {}

/// The per-connection state of the loop (opaque: it is the slot type of [`Resources`]).
pub struct Conn {
    read_closed: bool,
    user_paused: bool,
    quota_paused: bool,
    flush_waiting: bool,
    closing: bool,
    reason: Option<CloseReason>,
    linger: Option<TimerId>,
    /// The end of a graceful close's linger when no timer was free for it (see
    /// [`Core::expire_untimed_lingers`]).
    linger_until: Option<Instant>,
    /// Bytes sent on this connection so far.
    sent: u64,
    /// The consumer's word ([`Context::set_tag`]).
    tag: u32,
    /// This connection's lease quota ([`Context::set_lease_quota`]); 0: [`Config::lease_quota`].
    quota: u16,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            read_closed: false,
            user_paused: false,
            quota_paused: false,
            flush_waiting: false,
            closing: false,
            reason: None,
            linger: None,
            linger_until: None,
            sent: 0,
            tag: 0,
            quota: 0,
        }
    }
}

/// Timer tokens at or above this are the loop's own.
const INTERNAL: u64 = 1 << 63;
const INTERNAL_LINGER: u64 = INTERNAL | (1 << 62);
const INTERNAL_ACCEPT: u64 = INTERNAL | (1 << 61);

/// The callbacks of a reactor. Every method but [`Handler::on_data`] has a default.
pub trait Handler<'r> {
    /// A listener accepted `conn`. Its receive is already armed.
    fn on_accept(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, listener: ListenerId) {
        let _ = (cx, conn, listener);
    }

    /// An outbound connection from [`Context::connect`] finished connecting (or failed; it is
    /// then closed with [`CloseReason::ConnectFailed`]).
    fn on_connect(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, result: Result<(), Error>) {
        let _ = (cx, conn, result);
    }

    /// Bytes arrived on `conn`. The lease is the handler's: keep it as long as needed (it
    /// counts against the connection's lease quota) or drop it to return the buffer.
    fn on_data(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, lease: Lease<'r>);

    /// The peer closed its sending side. By default the connection is closed gracefully;
    /// override to keep writing on a half-closed connection. Not called for a connection the
    /// handler already closed (nor is `on_data`: bytes that arrive then are dropped).
    fn on_read_closed(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId) {
        cx.close(conn);
    }

    /// Everything staged on `conn` before [`Context::flush`] has been sent.
    fn on_flushed(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId) {
        let _ = (cx, conn);
    }

    /// A send on `conn` completed: `bytes` more of its staged bytes left (a short send
    /// reports what went; the rest follows in later sends). Runs before
    /// [`Handler::on_flushed`]; [`Context::sent`] already counts these bytes. For code that
    /// waits for a *position* in the stream rather than an empty slab (the executor's
    /// `flush().await` waits for the bytes staged before it, while later writes go on).
    fn on_sent(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, bytes: usize) {
        let _ = (cx, conn, bytes);
    }

    /// Once per turn, after the turn's events, timers and the buffers returned from other
    /// threads, and before the turn's flushes are submitted (so what is written here goes out
    /// in this turn's submission). The executor polls its ready tasks here.
    fn before_flush(&mut self, cx: &mut Context<'_, 'r>) {
        let _ = cx;
    }

    /// A timer armed with [`Context::set_timer`] fired.
    fn on_timer(&mut self, cx: &mut Context<'_, 'r>, timer: TimerId, token: u64) {
        let _ = (cx, timer, token);
    }

    /// `conn` is closed and its id is now stale.
    fn on_close(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, reason: CloseReason) {
        let _ = (cx, conn, reason);
    }
}

struct Core<'r> {
    driver: Driver<'r>,
    conns: Slab<'r, Conn>,
    timers: TimerWheel<'r>,
    paused: crate::sys::driver::IndexQueue<'r>,
    returns: crate::pool::ReturnHandle<'r>,
    signal: &'r crate::sync::WakeSignal,
    config: Config,
    stats: Stats,
    now: Instant,
    stopping: Option<Instant>,
    stopped: bool,
    listeners_backing_off: u8,
    /// The earliest [`Conn::linger_until`] set (it may have closed since).
    untimed_linger: Option<Instant>,
    /// Listeners backing off from a failed accept with no timer free for it, and when they
    /// accept again (all together: the back-off of the first of them).
    untimed_backoff: (u8, Option<Instant>),
    /// The connection `on_close` runs for, and its tag.
    closed_tag: Option<(ConnId, u32)>,
}

/// What a handler acts through. See the module docs.
pub struct Context<'c, 'r> {
    core: &'c mut Core<'r>,
}

/// The event loop. See the module docs.
pub struct Reactor<'r> {
    core: Core<'r>,
    /// `'r` is invariant: a reactor over `'static` resources cannot stand in for a scoped one
    /// (see [`Reactor::scoped`]).
    _invariant: PhantomData<fn(&'r ()) -> &'r ()>,
}

impl Reactor<'static> {
    /// A reactor over `resources`, which it uses for the rest of the program (the kernel writes
    /// into them asynchronously, so they must outlive every operation: hence `'static`).
    ///
    /// # Errors
    ///
    /// [`ReactorError::UringUnavailable`] when io_uring was asked for and cannot be used;
    /// [`ReactorError::Config`] when the configuration does not fit the resources;
    /// [`ReactorError::Os`] when the kernel refuses to set up epoll or io_uring.
    pub fn new<
        const CONNS: usize,
        const BUFS: usize,
        const BUF_SIZE: usize,
        const SLAB: usize,
        const TIMERS: usize,
    >(
        resources: &'static mut Resources<CONNS, BUFS, BUF_SIZE, SLAB, TIMERS>,
        config: Config,
    ) -> Result<Reactor<'static>, ReactorError> {
        let (ring, pool) = Reactor::backend_for(&config, BUFS)?;
        let init = resources
            .init(
                ring,
                pool,
                config.ring_window,
                config.nodelay,
                config.lease_quota,
            )
            .map_err(ReactorError::from)?;
        Reactor::assemble(init, config)
    }

    /// Run `f` with a reactor over `resources` that are only borrowed (on the stack, say), and
    /// return what `f` returns once the kernel is done with them.
    ///
    /// When `f` returns (or unwinds), every connection and listener still open is closed
    /// without callbacks (the handler lives inside `f` and is gone; for [`Handler::on_close`]
    /// calls, [`Reactor::stop`] and turn until [`Reactor::is_stopped`] first), every operation
    /// in flight is cancelled and its completions are reaped (multishot receives and accepts
    /// included), the provided-buffer ring is unregistered, and the eventfd is closed. Only
    /// then does `scoped` return, so the memory can be reused at once. With io_uring this waits
    /// for the cancellations, which end socket operations at once.
    ///
    /// `f` only ever sees `&mut Reactor`, and the reactor's lifetime is `f`'s own (a handler
    /// is written `impl<'r> Handler<'r> for MyHandler<'r>` and built inside `f`), so neither
    /// the reactor nor a lease can leave `f`, and `mem::forget` cannot skip the teardown. If
    /// the teardown cannot complete (the kernel fails the ring itself), the process aborts
    /// rather than return while the kernel might still write into the storage.
    ///
    /// The storage can be zeroed in place with [`crate::pool::init_zeroed`] (a
    /// `MaybeUninit` on the stack; mind the stack size) and reused for another `scoped` run.
    /// A scoped reactor runs callback handlers only: an [`Executor`](crate::exec::Executor)
    /// needs a `'static` reactor and storage, because a task's waker may be kept by another
    /// thread and woken after any scope has ended.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::mem::MaybeUninit;
    /// use std::time::Duration;
    /// use ringlet::pool::{init_zeroed, Lease};
    /// use ringlet::reactor::{Config, ConnId, Context, Handler, Reactor, Resources};
    ///
    /// struct Echo;
    /// impl<'r> Handler<'r> for Echo {
    ///     fn on_data(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, lease: Lease<'r>) {
    ///         if cx.write(conn, lease.as_slice()).is_ok() {
    ///             let _ = cx.flush(conn);
    ///         }
    ///     }
    /// }
    ///
    /// // 4 connections, 16 receive buffers of 2 KiB, 4 KiB write slabs, 2 timers: on the stack.
    /// let mut slot = MaybeUninit::<Resources<4, 16, 2048, 4096, 2>>::uninit();
    /// let resources = init_zeroed(&mut slot);
    /// let echoed = Reactor::scoped(resources, Config::default(), |reactor| {
    ///     let l = reactor.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    ///     let addr = reactor.listener_addr(l).unwrap();
    ///     let client = std::thread::spawn(move || {
    ///         let mut c = std::net::TcpStream::connect(addr).unwrap();
    ///         c.write_all(b"ping").unwrap();
    ///         let mut buf = [0u8; 4];
    ///         c.read_exact(&mut buf).unwrap();
    ///         (buf, c) // still connected when the scope ends
    ///     });
    ///     while !client.is_finished() {
    ///         reactor.turn(&mut Echo, Some(Duration::from_millis(10))).unwrap();
    ///     }
    ///     client.join().unwrap()
    /// })
    /// .unwrap();
    /// // The reactor is gone, its connection closed, and `slot` may be reused.
    /// assert_eq!(&echoed.0, b"ping");
    /// ```
    ///
    /// The reactor cannot be swapped for one that would outlive the scope (nor can a lease
    /// leave it):
    ///
    /// ```compile_fail
    /// # use std::mem::MaybeUninit;
    /// # use ringlet::pool::{init_zeroed, StaticSlot};
    /// # use ringlet::reactor::{Config, Reactor, Resources};
    /// static LONG: StaticSlot<Resources<4, 16, 2048, 4096, 2>> = StaticSlot::new();
    /// let long = Reactor::new(LONG.take().unwrap(), Config::default()).unwrap();
    /// let mut slot = MaybeUninit::<Resources<4, 16, 2048, 4096, 2>>::uninit();
    /// Reactor::scoped(init_zeroed(&mut slot), Config::default(), |scoped| {
    ///     // error: the scoped reactor's lifetime is not 'static
    ///     std::mem::forget(std::mem::replace(scoped, long));
    /// });
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Reactor::new`], before `f` runs.
    pub fn scoped<
        R,
        F,
        const CONNS: usize,
        const BUFS: usize,
        const BUF_SIZE: usize,
        const SLAB: usize,
        const TIMERS: usize,
    >(
        resources: &mut Resources<CONNS, BUFS, BUF_SIZE, SLAB, TIMERS>,
        config: Config,
        f: F,
    ) -> Result<R, ReactorError>
    where
        F: for<'s> FnOnce(&mut Reactor<'s>) -> R,
    {
        let (ring, pool) = Reactor::backend_for(&config, BUFS)?;
        crate::sys::driver::scoped(
            resources,
            ring,
            pool,
            config.ring_window,
            config.nodelay,
            config.lease_quota,
            |init| {
                // Dropping the reactor (here, or while unwinding) tears the driver down.
                let mut reactor = Reactor::assemble(init, config)?;
                Ok(f(&mut reactor))
            },
        )
        .map_err(ReactorError::from)?
    }

    /// Check `config` against a pool of `bufs` buffers, and pick the backend: the ring for
    /// io_uring (`None` for epoll) and the pool mode to go with it.
    fn backend_for(
        config: &Config,
        bufs: usize,
    ) -> Result<(Option<Uring>, BufPoolConfig), ReactorError> {
        if usize::from(config.user_buffers) >= bufs {
            return Err(ReactorError::Config(
                "user_buffers must be below the buffer count",
            ));
        }
        if config.lease_quota == 0 {
            return Err(ReactorError::Config("lease_quota must be at least 1"));
        }
        let ring = match config.backend {
            BackendChoice::Epoll => None,
            choice => match Uring::new(&config.uring) {
                Ok(r) if r.features().supports_uring_backend() => Some(r),
                Ok(_) if choice == BackendChoice::Auto => None,
                Ok(_) => return Err(ReactorError::UringUnavailable(Error::Unsupported)),
                Err(_) if choice == BackendChoice::Auto => None,
                Err(e) => return Err(ReactorError::UringUnavailable(e)),
            },
        };
        let recv_tier = if ring.is_some() {
            RecvTier::ProvidedRing
        } else {
            RecvTier::FreeList
        };
        Ok((
            ring,
            BufPoolConfig {
                recv_tier,
                user_reserve: config.user_buffers,
            },
        ))
    }
}

impl<'r> Reactor<'r> {
    fn assemble(
        init: LoopInit<'r, Conn, TimerEntry>,
        config: Config,
    ) -> Result<Reactor<'r>, ReactorError> {
        let now = clock::now();
        let mut driver = init.driver;
        driver.set_batch_wait(config.batch_wait);
        let timers = TimerWheel::new(init.timers, init.wheel, config.timer_resolution, now)
            .map_err(|_| ReactorError::Config("timer wheel"))?;
        Ok(Reactor {
            core: Core {
                driver,
                conns: Slab::new(init.conns),
                timers,
                paused: crate::sys::driver::IndexQueue::new(init.paused_queue),
                returns: init.returns,
                signal: init.signal,
                config,
                stats: Stats::default(),
                now,
                stopping: None,
                stopped: false,
                listeners_backing_off: 0,
                untimed_linger: None,
                untimed_backoff: (0, None),
                closed_tag: None,
            },
            _invariant: PhantomData,
        })
    }

    /// Listen on `addr` (TCP, IPv4 or IPv6; port 0 picks a free port, see
    /// [`Reactor::listener_addr`]).
    ///
    /// # Errors
    ///
    /// What the kernel says (address in use, ...), or [`ReactorError::TooManyListeners`].
    pub fn listen(&mut self, addr: SocketAddr) -> Result<ListenerId, ReactorError> {
        let opts = ListenOptions {
            backlog: self.core.config.backlog,
            ..ListenOptions::DEFAULT
        };
        let sock = TcpListener::bind(addr, opts)?;
        self.add_listener(sock)
    }

    /// Serve an already bound and listening socket (e.g. with SO_REUSEPORT set by the caller).
    ///
    /// # Errors
    ///
    /// As [`Reactor::listen`].
    pub fn add_listener(&mut self, sock: TcpListener) -> Result<ListenerId, ReactorError> {
        match self.core.driver.add_listener(sock)? {
            Some(i) => Ok(ListenerId(i)),
            None => Err(ReactorError::TooManyListeners),
        }
    }

    /// The local address of a listener.
    pub fn listener_addr(&self, id: ListenerId) -> Option<SocketAddr> {
        self.core.driver.listener_addr(id.0)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.core.driver.backend()
    }

    /// The io_uring features found, when the backend is io_uring.
    pub fn uring_features(&self) -> Option<&Features> {
        self.core.driver.uring().map(Uring::features)
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// The receive-buffer pool (for user-tier leases and its counters).
    pub fn pool(&self) -> crate::pool::BufPool<'r> {
        self.core.driver.pool()
    }

    /// Take back buffers returned from other threads now (each turn does this too): for a
    /// program that stopped the loop and joined its workers, so the pool is whole again.
    /// Returns how many came back.
    pub fn reclaim_returned(&mut self) -> usize {
        let n = self.core.returns.drain();
        self.core.stats.returned += n as u64;
        n
    }

    /// The configuration the reactor was built with.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// The way other threads (and executor wakers) reach this loop: the signal it parks on
    /// and the eventfd that ends its sleep. Publish an item on a queue the loop drains each
    /// turn, then [`Notifier::notify`](crate::sync::Notifier::notify).
    pub fn notifier(&self) -> crate::sync::Notifier<'r> {
        self.core.returns.notifier()
    }

    /// Open connections (closing ones included).
    pub fn connections(&self) -> usize {
        self.core.conns.len()
    }

    /// A context outside any callback: to write, connect or arm timers before the loop runs.
    pub fn context(&mut self) -> Context<'_, 'r> {
        Context {
            core: &mut self.core,
        }
    }

    /// Begin a graceful stop: stop accepting, flush and close every connection (aborting those
    /// still open after [`Config::stop_timeout`]); [`Reactor::run`] returns when all are
    /// closed, and [`Reactor::is_stopped`] becomes true.
    pub fn stop(&mut self) {
        self.core.begin_stop();
    }

    /// True once a stop has completed.
    pub fn is_stopped(&self) -> bool {
        self.core.stopped
    }

    /// Run until stopped (by [`Context::stop`] or [`Reactor::stop`]).
    ///
    /// # Errors
    ///
    /// A kernel failure of the loop itself (not of a connection).
    pub fn run<H: Handler<'r>>(&mut self, handler: &mut H) -> Result<(), ReactorError> {
        while !self.core.stopped {
            self.turn(handler, None)?;
        }
        Ok(())
    }

    /// One turn of the loop, waiting at most `timeout` for events (`None`: until an event or
    /// the next timer). For programs that drive the loop themselves.
    ///
    /// # Errors
    ///
    /// A kernel failure of the loop itself (not of a connection).
    pub fn turn<H: Handler<'r>>(
        &mut self,
        handler: &mut H,
        timeout: Option<Duration>,
    ) -> Result<(), ReactorError> {
        let core = &mut self.core;
        core.stats.turns += 1;
        // 1. Wait, bounded by the next timer.
        let now = clock::now();
        let mut wait = timeout;
        if let Some(deadline) = core.timers.next_deadline() {
            let until = deadline.saturating_duration_since(now);
            wait = Some(wait.map_or(until, |w| w.min(until)));
        }
        let untimed = core
            .untimed_linger
            .into_iter()
            .chain(core.untimed_backoff.1);
        if let Some(deadline) = core.stopping.into_iter().chain(untimed).min() {
            // A stop aborts what is still open at its deadline; a close or an accept back-off
            // that found no timer free ends at its own. No timer marks these.
            let until = deadline.saturating_duration_since(now);
            wait = Some(wait.map_or(until, |w| w.min(until)));
        }
        if core.stopped {
            wait = Some(Duration::ZERO);
        }
        // Park: a buffer returned from another thread after this point wakes the wait (or, if
        // it came already, the wait does not block).
        let signal = core.signal;
        signal.park(|may_block| {
            core.driver.wait(if may_block {
                wait
            } else {
                Some(Duration::ZERO)
            })
        })?;
        core.now = clock::now();
        // 2. Events.
        while let Some(ev) = core.driver.next_event() {
            core.dispatch(handler, ev)?;
        }
        // 3. Timers.
        while let Some((id, token)) = core.timers.pop_expired(core.now) {
            core.on_timer(handler, id, token)?;
        }
        core.expire_untimed_lingers()?;
        core.expire_untimed_backoff()?;
        // 4. Take back buffers returned from other threads, then resume and re-arm.
        core.stats.returned += core.returns.drain() as u64;
        // 5. The handler's turn hook (the executor polls its tasks): before the resumes, so
        // leases its tasks gave back count, and before the flushes, so their writes go out.
        handler.before_flush(&mut Context { core: &mut *core });
        core.resume_paused()?;
        core.driver.rearm_starved(
            usize::from(core.config.rearm_per_turn),
            usize::from(core.config.rearm_watermark),
        )?;
        core.progress_stop();
        // 6. Queue the sends.
        core.driver.submit_flushes()?;
        Ok(())
    }
}

/// The lease quota of a connection: its own, or the configured default.
fn quota_of(c: &Conn, config: &Config) -> u16 {
    if c.quota == 0 {
        config.lease_quota
    } else {
        c.quota
    }
}

impl<'r> Core<'r> {
    fn stats(&self) -> Stats {
        let mut s = self.stats;
        let pool = self.driver.pool().stats();
        s.bufs_in_use = pool.leased;
        s.bufs_high_water = pool.leased_high_water;
        s.kernel = self.driver.kernel_calls();
        s.starvation_pauses = self.driver.starvation_pauses();
        if self.driver.pool().recv_tier() == RecvTier::ProvidedRing {
            s.ring_window = self.driver.pool().ring_window();
        }
        s.ring_widenings = self.driver.ring_widenings();
        s
    }

    fn id(&self, slot: u32) -> Option<ConnId> {
        let key = Key::new(slot, self.driver.generation(slot)?);
        self.conns.contains(key).then_some(ConnId(key))
    }

    fn dispatch<H: Handler<'r>>(&mut self, h: &mut H, ev: IoEvent<'r>) -> Result<(), ReactorError> {
        match ev {
            IoEvent::Accepted { listener, stream } => {
                if self.stopping.is_some() {
                    return Ok(()); // dropping the stream closes it
                }
                let Ok(key) = self.conns.try_insert(Conn::new()) else {
                    self.stats.refused += 1;
                    return Ok(());
                };
                if self
                    .driver
                    .open(key.index(), key.generation(), stream)
                    .is_err()
                {
                    // This connection could not be registered (its stream is closed): refuse
                    // it and keep serving the others.
                    let _ = self.conns.remove(key);
                    self.stats.accept_errors += 1;
                    return Ok(());
                }
                self.stats.accepted += 1;
                self.driver.arm_recv(key.index())?;
                h.on_accept(
                    &mut Context { core: self },
                    ConnId(key),
                    ListenerId(listener),
                );
            }
            IoEvent::AcceptFailed { listener, error } => {
                self.stats.accept_errors += 1;
                // Back off (EMFILE: descriptors may come back as connections close), then
                // accept again; never spin on a failing accept.
                let _ = error;
                let token = INTERNAL_ACCEPT | u64::from(listener);
                let backoff = self.config.accept_backoff;
                if self.timers.insert(self.now, backoff, None, token).is_err() {
                    // No timer free: the turn checks the back-off's end itself.
                    let (listeners, until) = &mut self.untimed_backoff;
                    *listeners |= 1 << listener;
                    until.get_or_insert(self.now.saturating_add(backoff));
                } else {
                    self.listeners_backing_off |= 1 << listener;
                }
            }
            IoEvent::Data { slot, lease } => {
                let Some(id) = self.id(slot) else {
                    return Ok(());
                };
                self.stats.bytes_in += lease.len() as u64;
                if self.conns.get(id.0).is_ok_and(|c| c.closing) {
                    // Late bytes for a connection the handler closed: straight back to the pool.
                    return Ok(());
                }
                h.on_data(&mut Context { core: self }, id, lease);
                self.check_quota(id)?;
            }
            IoEvent::RecvStopped { slot, why } => {
                let Some(id) = self.id(slot) else {
                    return Ok(());
                };
                match why {
                    RecvStop::Eof => {
                        let Ok(c) = self.conns.get_mut(id.0) else {
                            return Ok(());
                        };
                        c.read_closed = true;
                        if c.closing {
                            // A connection the handler closed hears nothing more but its
                            // `on_close` (late bytes are dropped the same way).
                            return Ok(());
                        }
                        h.on_read_closed(&mut Context { core: self }, id);
                    }
                    RecvStop::Error(e) => self.abort(id, CloseReason::Error(e))?,
                }
            }
            IoEvent::Sent { slot, result } => {
                let Some(id) = self.id(slot) else {
                    return Ok(());
                };
                match result {
                    Ok(n) => {
                        self.stats.bytes_out += u64::from(n);
                        if let Ok(c) = self.conns.get_mut(id.0) {
                            c.sent += u64::from(n);
                        }
                        if n > 0 {
                            h.on_sent(&mut Context { core: self }, id, n as usize);
                        }
                        if self.driver.staged(slot) == 0 {
                            let c = self.conns.get_mut(id.0).map_err(|_| Error::NotFound)?;
                            if c.closing {
                                self.driver.close(slot)?;
                            } else if core::mem::take(&mut c.flush_waiting) {
                                h.on_flushed(&mut Context { core: self }, id);
                            }
                        }
                    }
                    Err(e) => self.abort(id, CloseReason::Error(e))?,
                }
            }
            IoEvent::Connected { slot, result } => {
                let Some(id) = self.id(slot) else {
                    return Ok(());
                };
                if let (Err(e), Ok(c)) = (result, self.conns.get_mut(id.0)) {
                    // The reason stands even if the handler closes it from `on_connect`.
                    c.reason.get_or_insert(CloseReason::ConnectFailed(e));
                }
                h.on_connect(&mut Context { core: self }, id, result);
                if let Err(e) = result {
                    self.abort(id, CloseReason::ConnectFailed(e))?;
                }
            }
            IoEvent::Released { slot } => {
                let Some(gn) = self.driver.generation(slot) else {
                    return Ok(());
                };
                let key = Key::new(slot, gn);
                if let Ok(c) = self.conns.remove(key) {
                    if let Some(t) = c.linger {
                        let _ = self.timers.cancel(t);
                    }
                    let reason = c.reason.unwrap_or(CloseReason::Local);
                    self.stats.closed[reason.counter()] += 1;
                    // The tag stays readable during `on_close` (its owner finds its state).
                    self.closed_tag = Some((ConnId(key), c.tag));
                    h.on_close(&mut Context { core: self }, ConnId(key), reason);
                    self.closed_tag = None;
                }
            }
            IoEvent::Wake => {}
        }
        Ok(())
    }

    fn on_timer<H: Handler<'r>>(
        &mut self,
        h: &mut H,
        id: TimerId,
        token: u64,
    ) -> Result<(), ReactorError> {
        if token & INTERNAL == 0 {
            h.on_timer(&mut Context { core: self }, id, token);
        } else if token & INTERNAL_ACCEPT == INTERNAL_ACCEPT {
            let listener = (token & 0xff) as u8;
            self.listeners_backing_off &= !(1 << listener);
            if self.stopping.is_none() {
                self.driver.arm_accept(listener)?;
            }
        } else if token & INTERNAL_LINGER == INTERNAL_LINGER {
            let Some(conn) = self.id((token & 0x00ff_ffff) as u32) else {
                return Ok(());
            };
            let Ok(c) = self.conns.get_mut(conn.0) else {
                return Ok(());
            };
            if c.linger == Some(id) {
                c.linger = None;
                self.abort(conn, CloseReason::LingerExpired)?;
            }
        }
        Ok(())
    }

    fn check_quota(&mut self, id: ConnId) -> Result<(), Error> {
        let slot = id.0.index();
        let held = self.driver.pool().owner_count(slot);
        let Ok(c) = self.conns.get_mut(id.0) else {
            return Ok(());
        };
        let quota = quota_of(c, &self.config);
        if held >= quota && !c.quota_paused && !c.closing {
            c.quota_paused = true;
            self.stats.quota_pauses += 1;
            self.paused.push(slot);
            self.driver.pause_recv(slot)?;
        }
        Ok(())
    }

    /// Resume connections paused at their quota whose handler gave leases back (below half
    /// the quota, so a connection does not flap at the boundary).
    fn resume_paused(&mut self) -> Result<(), Error> {
        for _ in 0..self.paused.len() {
            let Some(slot) = self.paused.pop() else { break };
            let Some(id) = self.id(slot) else { continue };
            let held = self.driver.pool().owner_count(slot);
            let Ok(c) = self.conns.get_mut(id.0) else {
                continue;
            };
            if !c.quota_paused {
                continue;
            }
            if held <= quota_of(c, &self.config) / 2 {
                c.quota_paused = false;
                if !c.user_paused && !c.closing && !c.read_closed {
                    self.driver.arm_recv(slot)?;
                }
            } else {
                self.paused.push(slot);
            }
        }
        Ok(())
    }

    fn close(&mut self, id: ConnId, reason: CloseReason) -> Result<(), ConnError> {
        let slot = id.0.index();
        let c = self.conns.get_mut(id.0).map_err(|_| ConnError::Stale)?;
        if c.closing {
            return Ok(());
        }
        c.closing = true;
        c.reason.get_or_insert(reason);
        self.driver.pause_recv(slot).map_err(ConnError::Os)?;
        if self.driver.staged(slot) == 0 {
            self.driver.close(slot).map_err(ConnError::Os)?;
        } else {
            self.driver.flush(slot);
            // The token names the slot; the timer id stored in the connection tells a stale
            // linger timer from the current one.
            let token = INTERNAL_LINGER | u64::from(slot);
            let timer = self
                .timers
                .insert(self.now, self.config.close_linger, None, token);
            if let Ok(c) = self.conns.get_mut(id.0) {
                match timer {
                    Ok(t) => c.linger = Some(t),
                    Err(_) => {
                        // Every timer is in use: the linger still ends, checked each turn.
                        let until = self.now.saturating_add(self.config.close_linger);
                        c.linger_until = Some(until);
                        self.untimed_linger =
                            Some(self.untimed_linger.map_or(until, |u| u.min(until)));
                    }
                }
            }
        }
        Ok(())
    }

    fn abort(&mut self, id: ConnId, reason: CloseReason) -> Result<(), Error> {
        let slot = id.0.index();
        let Ok(c) = self.conns.get_mut(id.0) else {
            return Ok(());
        };
        c.closing = true;
        if c.reason.is_none() || reason == CloseReason::LingerExpired {
            c.reason = Some(reason);
        }
        self.driver.close(slot)
    }

    /// Aborts the graceful closes that found no timer free for their linger once it is over
    /// (a scan of the connections, only when one is due).
    fn expire_untimed_lingers(&mut self) -> Result<(), Error> {
        match self.untimed_linger {
            Some(due) if due <= self.now => self.untimed_linger = None,
            _ => return Ok(()),
        }
        for index in 0..self.conns.capacity() as u32 {
            let Some(id) = self.id(index) else { continue };
            let Ok(c) = self.conns.get_mut(id.0) else {
                continue;
            };
            match c.linger_until {
                Some(until) if until <= self.now => {
                    c.linger_until = None;
                    self.abort(id, CloseReason::LingerExpired)?;
                }
                Some(until) => {
                    self.untimed_linger = Some(self.untimed_linger.map_or(until, |u| u.min(until)));
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Accepts again on the listeners that backed off with no timer free, once the back-off
    /// is over.
    fn expire_untimed_backoff(&mut self) -> Result<(), Error> {
        match self.untimed_backoff {
            (listeners, Some(until)) if until <= self.now => {
                self.untimed_backoff = (0, None);
                if self.stopping.is_none() {
                    for listener in (0..8).filter(|l| listeners & (1 << l) != 0) {
                        self.driver.arm_accept(listener)?;
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn begin_stop(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(self.now + self.config.stop_timeout);
        let _ = self.driver.close_listeners();
        for index in 0..self.conns.capacity() as u32 {
            if let Some(id) = self.id(index) {
                let _ = self.close(id, CloseReason::Stopped);
            }
        }
    }

    fn progress_stop(&mut self) {
        let Some(deadline) = self.stopping else {
            return;
        };
        if self.conns.is_empty() {
            self.stopped = true;
            return;
        }
        if self.now >= deadline {
            for index in 0..self.conns.capacity() as u32 {
                if let Some(id) = self.id(index) {
                    let _ = self.abort(id, CloseReason::Stopped);
                }
            }
        }
    }
}

impl<'r> Context<'_, 'r> {
    fn live(&mut self, id: ConnId) -> Result<&mut Conn, ConnError> {
        match self.core.conns.get_mut(id.0) {
            Ok(c) if !c.closing => Ok(c),
            _ => Err(ConnError::Stale),
        }
    }

    /// Copy `bytes` into `conn`'s write slab, all or nothing. Nothing is sent until
    /// [`Context::flush`].
    ///
    /// # Errors
    ///
    /// [`ConnError::WouldBlock`] when the slab has no room for all of it (nothing written),
    /// [`ConnError::TooLarge`] when it is larger than the slab, [`ConnError::Stale`] for a
    /// closed connection.
    pub fn write(&mut self, conn: ConnId, bytes: &[u8]) -> Result<(), ConnError> {
        self.live(conn)?;
        let mut slab = self
            .core
            .driver
            .slab(conn.0.index())
            .ok_or(ConnError::Stale)?;
        if bytes.len() > slab.capacity() {
            return Err(ConnError::TooLarge);
        }
        slab.append(bytes).map_err(|_| ConnError::WouldBlock)
    }

    /// Copies `parts`, one after the other, into `conn`'s write slab, all or nothing, and
    /// queues the send: [`Context::write`] of their concatenation, then [`Context::flush`], with
    /// one look-up of the connection (for a writer that stages many small writes per turn,
    /// such as a broker's fan-out). Returns the slab's use afterwards.
    ///
    /// # Errors
    ///
    /// As [`Context::write`]: [`ConnError::WouldBlock`] when the slab has no room for all of
    /// it, [`ConnError::TooLarge`] when it is larger than the whole slab, [`ConnError::Stale`]
    /// for a closed connection; nothing is written or flushed then.
    pub fn write_flush(&mut self, conn: ConnId, parts: &[&[u8]]) -> Result<WriteRoom, ConnError> {
        let core = &mut *self.core;
        let c = match core.conns.get_mut(conn.0) {
            Ok(c) if !c.closing => c,
            _ => return Err(ConnError::Stale),
        };
        let slot = conn.0.index();
        let mut slab = core.driver.slab(slot).ok_or(ConnError::Stale)?;
        let total = parts.iter().fold(0usize, |n, p| n.saturating_add(p.len()));
        if total > slab.capacity() {
            return Err(ConnError::TooLarge);
        }
        if total > slab.free() {
            return Err(ConnError::WouldBlock);
        }
        for part in parts {
            // Cannot fail: the free space was checked for all of them.
            slab.append(part).map_err(|_| ConnError::WouldBlock)?;
        }
        let room = WriteRoom {
            staged: slab.len(),
            free: slab.free(),
        };
        if room.staged > 0 {
            c.flush_waiting = true;
            core.driver.flush(slot);
        }
        Ok(room)
    }

    /// [`Context::staged`] and [`Context::write_capacity`] of `conn`, with one look-up.
    pub fn write_room(&mut self, conn: ConnId) -> WriteRoom {
        let core = &mut *self.core;
        let live = match core.conns.get(conn.0) {
            Ok(c) => !c.closing,
            Err(_) => return WriteRoom::default(),
        };
        let slot = conn.0.index();
        if live && let Some(slab) = core.driver.slab(slot) {
            return WriteRoom {
                staged: slab.len(),
                free: slab.free(),
            };
        }
        WriteRoom {
            staged: core.driver.staged(slot),
            free: 0,
        }
    }

    /// Free bytes in `conn`'s write slab (0 for a closed connection).
    pub fn write_capacity(&mut self, conn: ConnId) -> usize {
        if self.live(conn).is_err() {
            return 0;
        }
        self.core
            .driver
            .slab(conn.0.index())
            .map_or(0, |s| s.free())
    }

    /// Bytes staged on `conn` and not yet sent.
    pub fn staged(&mut self, conn: ConnId) -> usize {
        if self.core.conns.contains(conn.0) {
            self.core.driver.staged(conn.0.index())
        } else {
            0
        }
    }

    /// Send what is staged on `conn` (at the end of this turn, batched with every other
    /// flush). [`Handler::on_flushed`] runs when all of it has been sent (not at all when
    /// nothing was staged).
    ///
    /// # Errors
    ///
    /// [`ConnError::Stale`] for a closed connection.
    pub fn flush(&mut self, conn: ConnId) -> Result<(), ConnError> {
        self.live(conn)?;
        let slot = conn.0.index();
        if self.core.driver.staged(slot) > 0 {
            if let Ok(c) = self.core.conns.get_mut(conn.0) {
                c.flush_waiting = true;
            }
            self.core.driver.flush(slot);
        }
        Ok(())
    }

    /// Close `conn` gracefully: stop receiving, flush what is staged (at most
    /// [`Config::close_linger`]), then close. Closing a closed connection does nothing.
    pub fn close(&mut self, conn: ConnId) {
        let reason = match self.core.conns.get(conn.0) {
            Ok(c) if c.read_closed => CloseReason::PeerClosed,
            _ => CloseReason::Local,
        };
        let _ = self.core.close(conn, reason);
    }

    /// Close `conn` at once, dropping what is staged.
    pub fn abort(&mut self, conn: ConnId) {
        let _ = self.core.abort(conn, CloseReason::Local);
    }

    /// Shut down one direction of `conn` (e.g. `Write` after the last response).
    ///
    /// # Errors
    ///
    /// [`ConnError::Stale`] for a closed connection, or the kernel's error.
    pub fn shutdown(&mut self, conn: ConnId, how: Shutdown) -> Result<(), ConnError> {
        self.live(conn)?;
        self.core
            .driver
            .shutdown(conn.0.index(), how)
            .map_err(ConnError::Os)
    }

    /// Stop receiving on `conn` (backpressure) until [`Context::resume`].
    ///
    /// With io_uring, receives the kernel completed before the pause took effect still reach
    /// [`Handler::on_data`] after this call (on kernels with capped multishot receives, at
    /// most the connection's lease quota times the buffer size in bytes, counted from when its
    /// receive was last armed); with epoll none do. Keep what arrives while paused: nothing is
    /// lost either way.
    ///
    /// # Errors
    ///
    /// [`ConnError::Stale`] for a closed connection.
    pub fn pause(&mut self, conn: ConnId) -> Result<(), ConnError> {
        self.live(conn)?.user_paused = true;
        self.core
            .driver
            .pause_recv(conn.0.index())
            .map_err(ConnError::Os)
    }

    /// Resume receiving on `conn` after [`Context::pause`].
    ///
    /// # Errors
    ///
    /// [`ConnError::Stale`] for a closed connection.
    pub fn resume(&mut self, conn: ConnId) -> Result<(), ConnError> {
        let c = self.live(conn)?;
        c.user_paused = false;
        if c.quota_paused || c.read_closed {
            return Ok(());
        }
        self.core
            .driver
            .arm_recv(conn.0.index())
            .map_err(ConnError::Os)
    }

    /// The address of `conn`'s peer (for an accepted connection, the client's address and
    /// port). Asked of the kernel (`getpeername`) at each call, nothing is stored: a handler
    /// that needs it after the peer may have gone keeps a copy (a [`SocketAddr`] is `Copy`).
    ///
    /// # Errors
    ///
    /// [`ConnError::Stale`] for a closed connection; [`ConnError::Os`] with
    /// [`Error::NotConnected`] once the peer reset it, or while an outbound connect is under
    /// way.
    pub fn peer_addr(&self, conn: ConnId) -> Result<SocketAddr, ConnError> {
        if !self.core.conns.contains(conn.0) {
            return Err(ConnError::Stale);
        }
        self.core
            .driver
            .peer_addr(conn.0.index())
            .map_err(|e| match e {
                Error::NotFound => ConnError::Stale,
                e => ConnError::Os(e),
            })
    }

    /// Sets how many receive leases `conn`'s handler may hold before its receive pauses:
    /// `Some(n)` for this connection only (to receive a large message that must be held
    /// whole), `None` to go back to [`Config::lease_quota`]. Takes effect at once: a
    /// connection paused at its old quota resumes on this turn if it holds at most half the
    /// new one, and one holding more than a lowered quota pauses after its next receive.
    /// The io_uring receive's byte cap follows from the next time it is armed.
    ///
    /// Raising quotas is how a handler lets one connection take more of the shared buffer
    /// pool; it is the handler's job to budget that (the broker reserves from a budget that
    /// leaves a reserve for everyone else).
    ///
    /// # Errors
    ///
    /// [`ConnError::Stale`] for a closed connection; [`ConnError::TooLarge`] for `Some(0)`.
    pub fn set_lease_quota(&mut self, conn: ConnId, quota: Option<u16>) -> Result<(), ConnError> {
        let q = match quota {
            Some(0) => return Err(ConnError::TooLarge),
            Some(q) => q,
            None => 0,
        };
        let slot = conn.0.index();
        // A connection paused at its quota is in the paused queue already: the end of this
        // turn compares it with the new quota.
        self.live(conn)?.quota = q;
        self.core.driver.set_quota(slot, q);
        Ok(())
    }

    /// The lease quota of `conn` now (its own, or [`Config::lease_quota`]); 0 for a closed
    /// connection.
    pub fn lease_quota(&self, conn: ConnId) -> u16 {
        match self.core.conns.get(conn.0) {
            Ok(c) => quota_of(c, &self.core.config),
            Err(_) => 0,
        }
    }

    /// Receive leases `conn`'s handler holds now (what its quota is compared with).
    pub fn leases_held(&self, conn: ConnId) -> u16 {
        if self.core.conns.contains(conn.0) {
            self.core.driver.pool().owner_count(conn.0.index())
        } else {
            0
        }
    }

    /// Open an outbound connection to `addr`; [`Handler::on_connect`] reports the result.
    ///
    /// # Errors
    ///
    /// [`ConnError::WouldBlock`] when the connection table is full, or the kernel's error.
    pub fn connect(&mut self, addr: SocketAddr) -> Result<ConnId, ConnError> {
        let key = self
            .core
            .conns
            .try_insert(Conn::new())
            .map_err(|_| ConnError::WouldBlock)?;
        if let Err(e) = self
            .core
            .driver
            .connect(key.index(), key.generation(), addr)
        {
            let _ = self.core.conns.remove(key);
            return Err(ConnError::Os(e));
        }
        self.core
            .driver
            .arm_recv(key.index())
            .map_err(ConnError::Os)?;
        Ok(ConnId(key))
    }

    /// Arm a timer: [`Handler::on_timer`] runs after `delay`, then every `period` if given.
    /// `token` (below 2^63) comes back with it.
    ///
    /// # Errors
    ///
    /// [`ReactorError::TimersFull`] when every timer is in use; [`ReactorError::Config`] for
    /// a zero period or a token of 2^63 or more.
    pub fn set_timer(
        &mut self,
        delay: Duration,
        period: Option<Duration>,
        token: u64,
    ) -> Result<TimerId, ReactorError> {
        if token & INTERNAL != 0 {
            return Err(ReactorError::Config("timer tokens must be below 2^63"));
        }
        let now = clock::now();
        self.core
            .timers
            .insert(now, delay, period, token)
            .map_err(|e| match e {
                TimerError::Full { .. } => ReactorError::TimersFull,
                _ => ReactorError::Config("timer period must not be zero"),
            })
    }

    /// Cancel a timer; returns its token.
    ///
    /// # Errors
    ///
    /// The timer fired (one-shot) or was cancelled already: its id is stale.
    pub fn cancel_timer(&mut self, timer: TimerId) -> Result<u64, TimerError> {
        self.core.timers.cancel(timer)
    }

    /// Begin a graceful stop (see [`Reactor::stop`]).
    pub fn stop(&mut self) {
        self.core.begin_stop();
    }

    /// The time of this turn.
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// The receive-buffer pool.
    pub fn pool(&self) -> crate::pool::BufPool<'r> {
        self.core.driver.pool()
    }

    /// Turn `lease` into a [`crate::pool::SendLease`] that may travel to another thread: its
    /// buffer comes back to this loop's pool when it is dropped there (the loop is woken if
    /// it sleeps, and takes it back on its next turn). Hands the lease back if it is not one of
    /// this loop's.
    ///
    /// # Errors
    ///
    /// The lease itself, when it does not belong to this loop's pool.
    pub fn send_lease(&self, lease: Lease<'r>) -> Result<crate::pool::SendLease<'r>, Lease<'r>> {
        self.core.returns.send(lease)
    }

    /// True while `conn` is open and not closing.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.core.conns.get(conn.0).is_ok_and(|c| !c.closing)
    }

    /// Bytes sent on `conn` since it opened (0 for a closed connection). With
    /// [`Context::staged`], the position of the end of what is staged now: a writer waiting
    /// for `sent` to reach `sent + staged` waits for exactly the bytes staged before it.
    pub fn sent(&self, conn: ConnId) -> u64 {
        self.core.conns.get(conn.0).map_or(0, |c| c.sent)
    }

    /// Store a word for the consumer of `conn` (0 when it opens): the executor keeps the
    /// slot of the task that owns the connection here. One word per connection; the
    /// connection's owner decides what it means.
    ///
    /// # Errors
    ///
    /// [`ConnError::Stale`] for a closed connection.
    pub fn set_tag(&mut self, conn: ConnId, tag: u32) -> Result<(), ConnError> {
        let c = self
            .core
            .conns
            .get_mut(conn.0)
            .map_err(|_| ConnError::Stale)?;
        c.tag = tag;
        Ok(())
    }

    /// The word [`Context::set_tag`] stored for `conn` (`None` for a closed connection, except
    /// inside [`Handler::on_close`] for the connection it reports).
    pub fn tag(&self, conn: ConnId) -> Option<u32> {
        match self.core.closed_tag {
            Some((id, tag)) if id == conn => Some(tag),
            _ => self.core.conns.get(conn.0).ok().map(|c| c.tag),
        }
    }
}
