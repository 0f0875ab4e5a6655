//! The I/O driver under the event loop: one set of operations over connections and listeners,
//! each written with its io_uring half and its epoll half side by side, so the two backends
//! cannot drift apart.
//!
//! The driver owns everything the kernel may touch asynchronously: the ring, the
//! provided-buffer ring's registration, the per-connection write slabs and `msghdr`s, the
//! socket addresses of pending connects. That is why it lives in `sys/`: it is where the
//! `unsafe` contract of [`Uring::push`] is kept. The event loop above it is safe code.
//!
//! # Operation lifecycle and slot ownership
//!
//! A connection is a slot index plus a generation. Every operation the driver starts on a slot
//! is tagged with both (see [`user_data`]), and the slot's [`IoSlot`] records what is in
//! flight: the multishot receive (until its completion without `F_MORE`), at most one send
//! (overlapping sends on one TCP socket can reorder bytes), a connect, and cancellations.
//! [`Driver::close`] cancels what is in flight; the file descriptor is closed, and
//! [`IoEvent::Released`] reported, only when nothing is in flight any more. Until then the write
//! slab and `msghdr` the kernel may read stay untouched, and the slot cannot be reused. A
//! completion whose generation does not match its slot is consumed and ignored.
//!
//! # Storage the kernel may still use
//!
//! [`Driver::new`] takes `'static` storage: whatever happens to the driver (dropped, leaked),
//! the memory the kernel writes into outlives it. For storage that dies (a stack frame),
//! [`scoped`] lends a driver to a closure and, before it returns, makes the driver
//! [`Driver::quiesce`]: cancel every operation (`ASYNC_CANCEL` with `ANY | ALL`), reap every
//! final completion (multishot ends included), then unregister the provided-buffer ring.
//! Closing the ring instead would not do: its teardown runs asynchronously in a kernel worker
//! after the last reference to the ring's file is gone, and other references can exist (a
//! `fork`ed child, a descriptor passed over a socket), so when `close` returns nothing is known
//! about what is still in flight. A driver leaked inside [`scoped`] cannot quiesce; that is
//! detected and the process aborts rather than return.
//!
//! # Fixed files and batched waits (io_uring)
//!
//! Connections are also put in the ring's fixed-file table (one entry per slot, when the
//! kernel grants it), so receives and sends name them by index and skip the descriptor lookup
//! and reference count of every operation; a slot's entry is emptied before its descriptor is
//! closed. A wait after sends can hold out for a batch of completions, see [`Driver::wait`].
//!
//! # The epoll half
//!
//! Sockets are registered edge-triggered. An edge only says "something changed", so the driver
//! reads until the socket is drained before it waits for another edge: until `WouldBlock`, or
//! until a read returns less than a whole buffer (the receive queue was empty at that moment,
//! and bytes arriving later raise a new edge; this saves the read that would only say
//! `WouldBlock`). Once an event reported the peer's FIN, it reads on to the EOF. When it stops
//! early (the connection is paused, out of buffers, or has had its share of reads this round)
//! it remembers that data may be waiting and reads again when the connection is resumed,
//! without waiting for an edge that will not come. `EPOLLOUT` is registered only while a slab holds
//! bytes the socket did not take. Writes happen in the flush phase, synchronously; their
//! results are reported as events in the next round, like io_uring completions.

use core::cell::Cell;
use core::net::SocketAddr;
use core::time::Duration;

use rustix::fd::{AsFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use super::socket;

use super::epoll::{Epoll, Events, Interest, RawEvent};
use super::socket::{Connect, SockAddrBuf, TcpListener, TcpStream};
use super::uring::{Cqe, MsgBuf, Sqe, Uring};
use super::{Error, Result};
use crate::pool::{BufPool, Lease, SlabArena, ZeroInit};

/// Listeners one driver can serve.
pub const MAX_LISTENERS: usize = 8;

/// Reads per readiness round on one epoll connection before the others get their turn.
const EPOLL_READS_PER_ROUND: u32 = 16;

/// The buffer group the driver registers its provided-buffer ring as.
const BUF_GROUP: u16 = 0;

/// Which kernel interface a driver uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// io_uring: completions, multishot accept and receive, provided-buffer ring.
    Uring,
    /// epoll: readiness, reads into pool buffers, writes from slabs.
    Epoll,
}

/// Operation codes in the top byte of `user_data` (and epoll tokens).
pub mod user_data {
    /// A multishot (or single) accept on listener `index`.
    pub const ACCEPT: u8 = 1;
    /// The multishot receive of a connection.
    pub const RECV: u8 = 2;
    /// The send of a connection.
    pub const SEND: u8 = 3;
    /// The connect of an outbound connection.
    pub const CONNECT: u8 = 4;
    /// A cancellation issued by the driver.
    pub const CANCEL: u8 = 5;
    /// The cross-thread wake.
    pub const WAKE: u8 = 6;
    /// An epoll registration of a connection (token only).
    pub const CONN: u8 = 7;

    /// Packs (op, index, generation): op in bits 56..64, index in 32..56, generation in 0..32.
    pub const fn pack(op: u8, index: u32, generation: u32) -> u64 {
        ((op as u64) << 56) | (((index & 0x00ff_ffff) as u64) << 32) | generation as u64
    }

    /// The inverse of [`pack`].
    pub const fn unpack(ud: u64) -> (u8, u32, u32) {
        (
            (ud >> 56) as u8,
            ((ud >> 32) & 0x00ff_ffff) as u32,
            ud as u32,
        )
    }

    /// The largest slot index that fits.
    pub const MAX_INDEX: u32 = 0x00ff_ffff;
}
use user_data::{pack, unpack};

/// Why a connection's receive stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvStop {
    /// The peer closed its sending side (a zero-length receive).
    Eof,
    /// The receive failed; the connection is unusable for reading.
    Error(Error),
}

/// What the driver reports, one at a time, from [`Driver::next_event`].
#[derive(Debug)]
pub enum IoEvent<'r> {
    /// A listener accepted a connection.
    Accepted {
        /// Which listener.
        listener: u8,
        /// The new connection (non-blocking, close-on-exec).
        stream: TcpStream,
    },
    /// A listener's accept stopped with an error (EMFILE and friends). Re-arm it with
    /// [`Driver::arm_accept`], after a pause if the error was a lack of descriptors.
    AcceptFailed {
        /// Which listener.
        listener: u8,
        /// What went wrong.
        error: Error,
    },
    /// Bytes arrived on a connection.
    Data {
        /// The connection's slot.
        slot: u32,
        /// The bytes, in a pool buffer, counted against the slot as owner.
        lease: Lease<'r>,
    },
    /// A connection's receive stopped for good (EOF or an error).
    RecvStopped {
        /// The connection's slot.
        slot: u32,
        /// Why.
        why: RecvStop,
    },
    /// A send finished: `Ok(n)` bytes left the slab (the slab is already advanced), or it
    /// failed and the connection should be closed.
    Sent {
        /// The connection's slot.
        slot: u32,
        /// Bytes sent, or the error.
        result: Result<u32>,
    },
    /// An outbound connect finished.
    Connected {
        /// The connection's slot.
        slot: u32,
        /// Success, or why it failed.
        result: Result<()>,
    },
    /// A closed connection has nothing in flight any more: its descriptor is closed and the
    /// slot may be reused.
    Released {
        /// The slot.
        slot: u32,
    },
    /// The cross-thread wake fired.
    Wake,
}

/// The state of a connection's receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Recv {
    /// Not armed (new, paused, ended).
    Idle = 0,
    /// Armed: a multishot receive in flight (uring) or reading on readiness (epoll).
    Armed = 1,
    /// Armed but being cancelled (uring): its final completion has not come yet.
    Cancelling = 2,
}

/// Per-connection I/O state, in caller storage (one per connection slot).
///
/// All-zero bytes is the empty state (see [`ZeroInit`]).
pub struct IoSlot {
    fd: RawFd,
    open: bool,
    closing: bool,
    generation: u32,
    recv: Recv,
    /// Receive should be running (not paused by the loop); the driver re-arms ended multishots
    /// while this holds.
    want_recv: bool,
    /// Stopped by an empty buffer pool; waiting in the starved queue.
    starved: bool,
    /// Peer EOF or a receive error was seen: never re-arm.
    recv_done: bool,
    /// epoll: the last read did not hit WouldBlock, data may be waiting.
    readable: bool,
    /// epoll: an event reported the peer's FIN (RDHUP/HUP/ERR): read on to EOF, never stop
    /// at a short read.
    read_closed: bool,
    /// Bytes of the send in flight (uring) — 0 when none.
    sending: u32,
    /// uring: the socket is in the ring's fixed-file table at this slot's index; operations
    /// name it by index.
    fixed: bool,
    /// uring: the driver round in which data last arrived.
    data_turn: u32,
    /// uring: answered in the round its data arrived (request/response), so expected to send
    /// again soon: the next wait may hold out for it. Counts in `Driver::awaiting` while
    /// `await_epoch` is the driver's.
    awaiting: bool,
    await_epoch: u32,
    /// A send has been requested (queued in the flush queue).
    flush_queued: bool,
    connecting: bool,
    /// Cancellations in flight (uring).
    cancels: u8,
    /// epoll: EPOLLOUT is registered.
    want_out: bool,
    /// epoll: queued for a read attempt without a new edge.
    ready_queued: bool,
    /// epoll: result of the last synchronous send, reported as an event.
    sent_result: i64,
    connect_result: i32,
    /// Notifications waiting in the notify queue: each kind is pushed at most once, so a slot
    /// has at most two entries (a send result, then its release; a connect result comes
    /// before any send).
    notify_sent: bool,
    notify_connected: bool,
    notify_released: bool,
    /// Leases this connection may hold before its capped receive stops asking for more (0:
    /// the driver's default quota); see [`Driver::set_quota`].
    quota: u16,
    msg: MsgBuf,
    addr: SockAddrBuf,
}

// SAFETY: every field of IoSlot is an integer, a bool, an enum whose 0 discriminant is a valid
// variant (`Recv::Idle`), or a plain-old-data struct of integers and raw pointers (MsgBuf,
// SockAddrBuf) for which zero bytes (null pointers, zero lengths) is the empty value.
unsafe impl ZeroInit for IoSlot {}

// SAFETY: an IoSlot is plain data. Its raw pointers (the msghdr's iovecs) point into the same
// loop storage and are only dereferenced by the kernel for a send started by the one thread
// that runs the driver; moving the storage to another thread before or after that (e.g. a
// `static` taken on another thread) is harmless. The raw fd is just a number.
unsafe impl Send for IoSlot {}

impl IoSlot {
    fn in_flight(&self) -> bool {
        self.recv != Recv::Idle || self.sending > 0 || self.connecting || self.cancels > 0
    }

    /// `sqe` (built on this slot's descriptor) aimed at the socket's fixed-file entry when it
    /// has one.
    fn target(&self, slot: u32, sqe: Sqe) -> Sqe {
        if self.fixed {
            sqe.fixed_file(slot)
        } else {
            sqe
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `fd` is open while `open` is set (checked by every caller through
        // `Driver::live`), and only the driver closes it.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

/// A fixed-capacity FIFO of slot indices over caller storage, with at most one entry per slot
/// (callers keep a per-slot "queued" flag).
pub struct IndexQueue<'r> {
    buf: &'r mut [u32],
    head: usize,
    len: usize,
}

impl<'r> IndexQueue<'r> {
    /// A queue over `buf`; it holds up to `buf.len()` indices.
    pub fn new(buf: &'r mut [u32]) -> IndexQueue<'r> {
        IndexQueue {
            buf,
            head: 0,
            len: 0,
        }
    }

    /// Appends `i`; false when full (cannot happen when each slot is queued at most once and
    /// the queue has one entry per slot).
    pub fn push(&mut self, i: u32) -> bool {
        if self.len == self.buf.len() {
            return false;
        }
        let at = (self.head + self.len) % self.buf.len();
        self.buf[at] = i;
        self.len += 1;
        true
    }

    /// Removes the oldest index.
    pub fn pop(&mut self) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let i = self.buf[self.head];
        self.head = (self.head + 1) % self.buf.len();
        self.len -= 1;
        Some(i)
    }

    /// Queued indices.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Kernel-call counters of a driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCalls {
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// `epoll_wait` calls.
    pub epoll_waits: u64,
    /// `read`/`recv` system calls (epoll backend).
    pub reads: u64,
    /// `write`/`sendmsg` system calls (epoll backend).
    pub writes: u64,
    /// `epoll_ctl` calls.
    pub epoll_ctls: u64,
    /// `accept4` calls (epoll backend).
    pub accepts: u64,
    /// `close` calls.
    pub closes: u64,
    /// `io_uring_register` calls after start-up (fixed-file table updates: one when a
    /// connection opens, one when it is released).
    pub registers: u64,
}

struct ListenerSlot {
    sock: TcpListener,
    /// uring: a multishot accept is in flight; epoll: accepting on readiness.
    armed: bool,
    /// epoll: an accept attempt is due without a new edge.
    pending: bool,
}

enum Kind<'r> {
    Uring {
        ring: Uring,
    },
    Epoll {
        ep: Epoll,
        events: Events<'r>,
        cursor: usize,
        n: usize,
    },
}

/// Caller storage for a driver, besides the buffer pool and write slabs.
pub struct DriverParts<'r> {
    /// One per connection slot.
    pub slots: &'r mut [IoSlot],
    /// One entry per connection slot, for the flush queue.
    pub flush_queue: &'r mut [u32],
    /// One entry per connection slot, for the epoll ready queue.
    pub ready_queue: &'r mut [u32],
    /// Two entries per connection slot, for sent / connected / released notifications (a
    /// slot can be queued for a send result and then for its release).
    pub notify_queue: &'r mut [u32],
    /// One entry per connection slot, for connections starved of receive buffers.
    pub starved_queue: &'r mut [u32],
    /// epoll event storage (its length bounds events per wait).
    pub events: &'r mut [RawEvent],
    /// The eventfd other threads write to wake the loop (see [`crate::sync`]).
    pub wake: &'r super::eventfd::WakeFd,
}

/// The I/O driver. See the module docs.
pub struct Driver<'r> {
    kind: Kind<'r>,
    pool: BufPool<'r>,
    slabs: SlabArena<'r>,
    slots: &'r mut [IoSlot],
    listeners: heapless::Vec<Option<ListenerSlot>, MAX_LISTENERS>,
    flushes: IndexQueue<'r>,
    ready: IndexQueue<'r>,
    /// Slots with an event to report outside a completion: released, epoll sends, epoll
    /// connects, epoll receive stops.
    notify: IndexQueue<'r>,
    starved: IndexQueue<'r>,
    /// epoll: the slot being read in this round, and reads done on it.
    reading: Option<(u32, u32)>,
    /// epoll: the listener being drained.
    accepting: Option<u8>,
    nodelay: bool,
    /// The cross-thread wake's eventfd, watched by the backend.
    wake: &'r super::eventfd::WakeFd,
    /// Leases one connection may hold; its multishot receive is capped to the room left.
    quota: u16,
    /// The kernel honours a byte cap on multishot receives (cleared on the first EINVAL).
    recv_cap: bool,
    /// io_uring: sends queued since the last wait, and how long a wait may hold out for their
    /// completions and the answers they call for (see [`Driver::wait`] and
    /// [`Uring::submit_and_wait_batch`]).
    sends_queued: u32,
    batch_wait: Duration,
    /// io_uring: loop rounds (waits) so far; tells "data this round" (see `IoSlot::data_turn`).
    turn: u32,
    /// io_uring: connections answered after they sent data and not heard from since, in the
    /// current `await_epoch` (see `IoSlot::awaiting`).
    awaiting: u32,
    /// io_uring: bumped when a batched wait ends before every awaited connection came back;
    /// marks of older epochs no longer count.
    await_epoch: u32,
    calls: KernelCalls,
    starvation_pauses: u64,
    /// Times the provided-buffer ring's window was doubled.
    ring_widenings: u64,
    /// io_uring: the current stretch of receives for the steady-demand widening rule (see
    /// [`Driver::steady_demand`]): receives so far (wrapping), their count when the stretch
    /// began, and the stretch's dry rings.
    ring_receives: u32,
    stretch_start: u32,
    stretch_dry: u32,
    /// io_uring: the multishot poll on the wake eventfd is in flight.
    wake_armed: bool,
    /// io_uring: listeners (by index bit) whose multishot accept is in flight, also after the
    /// listener was closed, until the accept's final completion.
    accepts_in_flight: u8,
    /// io_uring: cancellations in flight that belong to no connection (listeners, quiesce).
    loose_cancels: u32,
    /// Tearing down (see [`Driver::quiesce`]): nothing is re-armed.
    quiescing: bool,
    /// io_uring: the pool's provided-buffer ring is registered with the kernel.
    buf_ring: bool,
    /// io_uring: a fixed-file table with one entry per slot is registered; connections are
    /// put in it (see `IoSlot::fixed`).
    fixed_files: bool,
    /// Set when the driver borrows storage that dies after it (see [`scoped`]): dropping it
    /// then cancels and reaps everything first, and records that it did so here.
    scope: Option<&'r Cell<bool>>,
}

impl Driver<'static> {
    /// A driver over the given storage, on the io_uring instance `ring` (its pool must be in
    /// provided-ring mode; the ring is registered here) or, with `None`, on epoll (the pool in
    /// free-list mode).
    ///
    /// The storage must outlive every operation the kernel may still complete, also if the
    /// driver is leaked with `mem::forget`: hence `'static` (a `static`, or memory leaked once). `quota` is the number of leases one connection may
    /// hold: the io_uring receive of a connection is capped to the room it has left, so one
    /// burst cannot empty the shared buffer ring (see [`Sqe::recv_multishot_capped`]).
    pub fn new(
        ring: Option<Uring>,
        pool: BufPool<'static>,
        slabs: SlabArena<'static>,
        parts: DriverParts<'static>,
        nodelay: bool,
        quota: u16,
    ) -> Result<Driver<'static>> {
        // SAFETY: the storage is 'static, so it outlives every operation the kernel may still
        // complete, whatever happens to the driver (dropped or leaked).
        unsafe { Driver::build(ring, pool, slabs, parts, nodelay, quota, None) }
    }
}

impl<'r> Driver<'r> {
    /// The constructor behind [`Driver::new`] and [`scoped`].
    ///
    /// # Safety
    ///
    /// The storage (pool, slabs, parts) must stay valid until the kernel has finished every
    /// operation this driver starts: either it is `'static`, or the driver is dropped (never
    /// leaked) before the storage dies and `scope` is given, so that its drop cancels and reaps
    /// everything first (and the caller checks the flag it sets, see [`scoped`]).
    unsafe fn build(
        ring: Option<Uring>,
        pool: BufPool<'r>,
        slabs: SlabArena<'r>,
        parts: DriverParts<'r>,
        nodelay: bool,
        quota: u16,
        scope: Option<&'r Cell<bool>>,
    ) -> Result<Driver<'r>> {
        let n = parts.slots.len();
        if n > user_data::MAX_INDEX as usize
            || slabs.len() < n
            || parts.flush_queue.len() < n
            || parts.ready_queue.len() < n
            || parts.starved_queue.len() < n
            || parts.notify_queue.len() < 2 * n
        {
            return Err(Error::InvalidInput);
        }
        let wake_fd = parts.wake.open()?;
        let kind = match ring {
            Some(mut ring) => {
                // SAFETY: the pool's ring and buffers outlive every operation the kernel may
                // complete (this function's contract); nothing else registers the group.
                unsafe {
                    ring.register_buf_ring(pool.ring_addr().cast(), pool.ring_entries(), BUF_GROUP)
                }?;
                let sqe =
                    Sqe::poll_readable_multishot(wake_fd).user_data(pack(user_data::WAKE, 0, 0));
                // SAFETY: a poll points at no memory; the eventfd lives in the storage and is
                // closed only after the driver (it outlives every operation, as above).
                if let Err(e) = unsafe { ring.push(&sqe) } {
                    let _ = ring.unregister_buf_ring(BUF_GROUP);
                    return Err(e);
                }
                Kind::Uring { ring }
            }
            None => {
                let ep = Epoll::new()?;
                ep.add(
                    wake_fd,
                    pack(user_data::WAKE, 0, 0),
                    Interest::READABLE.edge_triggered(),
                )?;
                Kind::Epoll {
                    ep,
                    events: Events::new(parts.events),
                    cursor: 0,
                    n: 0,
                }
            }
        };
        let wake_armed = matches!(kind, Kind::Uring { .. });
        // Sockets in a fixed-file table spare every operation a descriptor lookup and a
        // reference count (measured: about 1% of the server's CPU under the echo benchmark).
        // Without it (an old kernel, a low descriptor limit) the descriptors are used.
        let fixed_files = match &kind {
            Kind::Uring { ring } => ring.register_files_sparse(n as u32).is_ok(),
            Kind::Epoll { .. } => false,
        };
        for s in parts.slots.iter_mut() {
            *s = IoSlot::zeroed();
        }
        Ok(Driver {
            kind,
            pool,
            slabs,
            slots: parts.slots,
            listeners: heapless::Vec::new(),
            flushes: IndexQueue::new(parts.flush_queue),
            ready: IndexQueue::new(parts.ready_queue),
            notify: IndexQueue::new(parts.notify_queue),
            starved: IndexQueue::new(parts.starved_queue),
            reading: None,
            accepting: None,
            nodelay,
            wake: parts.wake,
            quota: quota.max(1),
            recv_cap: true,
            sends_queued: 0,
            batch_wait: Duration::ZERO,
            turn: 1,
            awaiting: 0,
            await_epoch: 0,
            calls: KernelCalls::default(),
            starvation_pauses: 0,
            ring_widenings: 0,
            ring_receives: 0,
            stretch_start: 0,
            stretch_dry: 0,
            wake_armed,
            accepts_in_flight: 0,
            loose_cancels: 0,
            quiescing: false,
            buf_ring: wake_armed,
            fixed_files,
            scope,
        })
    }

    /// How long an io_uring wait that follows sends may hold out for their completions and the
    /// answers they call for, so one system call collects a batch (zero: never hold out; see
    /// [`Driver::wait`]).
    pub fn set_batch_wait(&mut self, wait: Duration) {
        self.batch_wait = wait;
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.kind {
            Kind::Uring { .. } => Backend::Uring,
            Kind::Epoll { .. } => Backend::Epoll,
        }
    }

    /// The io_uring instance, when that is the backend (for its features).
    pub fn uring(&self) -> Option<&Uring> {
        match &self.kind {
            Kind::Uring { ring } => Some(ring),
            Kind::Epoll { .. } => None,
        }
    }

    /// Kernel calls made so far.
    pub fn kernel_calls(&self) -> KernelCalls {
        self.calls
    }

    /// The receive-buffer pool.
    pub fn pool(&self) -> BufPool<'r> {
        self.pool
    }

    /// Connection slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn live(&self, slot: u32) -> Option<&IoSlot> {
        self.slots
            .get(slot as usize)
            .filter(|s| s.open && !s.closing)
    }

    // ----- listeners -------------------------------------------------------------------

    /// Serve `listener`; returns its index. `None` when [`MAX_LISTENERS`] are in use.
    pub fn add_listener(&mut self, sock: TcpListener) -> Result<Option<u8>> {
        let index = match self.listeners.iter().position(Option::is_none) {
            Some(i) => i,
            None if !self.listeners.is_full() => {
                let _ = self.listeners.push(None);
                self.listeners.len() - 1
            }
            None => return Ok(None),
        };
        if let Kind::Epoll { ep, .. } = &self.kind {
            let token = pack(user_data::ACCEPT, index as u32, 0);
            ep.add(&sock, token, Interest::READABLE.edge_triggered())?;
            self.calls.epoll_ctls += 1;
        }
        self.listeners[index] = Some(ListenerSlot {
            sock,
            armed: false,
            pending: false,
        });
        self.arm_accept(index as u8)?;
        Ok(Some(index as u8))
    }

    /// The local address of listener `index`.
    pub fn listener_addr(&self, index: u8) -> Option<SocketAddr> {
        let l = self.listeners.get(index as usize)?.as_ref()?;
        l.sock.local_addr().ok()
    }

    /// Start (or restart) accepting on listener `index`.
    pub fn arm_accept(&mut self, index: u8) -> Result<()> {
        let Some(Some(l)) = self.listeners.get_mut(index as usize) else {
            return Ok(());
        };
        if l.armed {
            return Ok(());
        }
        l.armed = true;
        match &mut self.kind {
            Kind::Uring { ring } => {
                let sqe = Sqe::accept_multishot(l.sock.as_fd()).user_data(pack(
                    user_data::ACCEPT,
                    u32::from(index),
                    0,
                ));
                // SAFETY: accept points at no memory of ours; io_uring holds its own reference
                // to the listener's file while the accept is in flight.
                unsafe { ring.push(&sqe) }?;
                self.accepts_in_flight |= 1 << index;
                Ok(())
            }
            Kind::Epoll { .. } => {
                // An edge may have been missed while not accepting: try once now.
                l.pending = true;
                Ok(())
            }
        }
    }

    /// Stop accepting and close every listener.
    pub fn close_listeners(&mut self) -> Result<()> {
        for (i, l) in self.listeners.iter_mut().enumerate() {
            let Some(slot) = l.take() else { continue };
            match &mut self.kind {
                Kind::Uring { ring } => {
                    if slot.armed {
                        let sqe = Sqe::cancel(pack(user_data::ACCEPT, i as u32, 0))
                            .user_data(pack(user_data::CANCEL, user_data::MAX_INDEX, 0));
                        // SAFETY: a cancel points at no memory.
                        unsafe { ring.push(&sqe) }?;
                        self.loose_cancels += 1;
                    }
                    // io_uring holds its own reference to the file until the accept ends.
                }
                Kind::Epoll { ep, .. } => {
                    let _ = ep.delete(&slot.sock);
                    self.calls.epoll_ctls += 1;
                }
            }
            self.calls.closes += 1;
            drop(slot);
        }
        self.accepting = None;
        Ok(())
    }

    /// True while any listener is open.
    pub fn has_listeners(&self) -> bool {
        self.listeners.iter().any(Option::is_some)
    }

    // ----- connections -----------------------------------------------------------------

    /// Attach an accepted (or otherwise connected) stream to `slot` with `generation`.
    pub fn open(&mut self, slot: u32, generation: u32, stream: TcpStream) -> Result<()> {
        if self.nodelay {
            let _ = stream.set_nodelay(true);
        }
        self.attach(slot, generation, stream.into_fd(), false)
    }

    fn attach(&mut self, slot: u32, generation: u32, fd: OwnedFd, connecting: bool) -> Result<()> {
        let s = self
            .slots
            .get_mut(slot as usize)
            .ok_or(Error::InvalidInput)?;
        if s.open {
            return Err(Error::AlreadyExists);
        }
        let mut want_out = false;
        if let Kind::Epoll { ep, .. } = &self.kind {
            let mut interest = Interest::READABLE
                .add(Interest::READ_CLOSED)
                .edge_triggered();
            if connecting {
                // A non-blocking connect finishes when the socket becomes writable.
                interest = interest.add(Interest::WRITABLE);
                want_out = true;
            }
            ep.add(&fd, pack(user_data::CONN, slot, generation), interest)?;
            self.calls.epoll_ctls += 1;
        }
        *s = IoSlot::zeroed();
        if let (Kind::Uring { ring }, true) = (&self.kind, self.fixed_files) {
            self.calls.registers += 1;
            s.fixed = ring.update_file(slot, Some(fd.as_fd())).is_ok();
        }
        s.fd = fd.into_raw_fd();
        s.open = true;
        s.generation = generation;
        s.connecting = connecting;
        s.want_out = want_out;
        let _ = self.slabs.reset(slot as usize);
        Ok(())
    }

    /// Open an outbound connection to `addr` in `slot`; [`IoEvent::Connected`] reports the
    /// result.
    pub fn connect(&mut self, slot: u32, generation: u32, addr: SocketAddr) -> Result<()> {
        match self.backend() {
            Backend::Uring => {
                let sock = TcpStream::socket_for(addr)?;
                if self.nodelay {
                    let _ = sock.set_nodelay(true);
                }
                self.attach(slot, generation, sock.into_fd(), true)?;
                let Kind::Uring { ring } = &mut self.kind else {
                    unreachable!()
                };
                let s = &mut self.slots[slot as usize];
                s.addr = SockAddrBuf::from(&addr);
                let sqe = Sqe::connect(s.fd(), s.addr.as_ptr(), s.addr.len()).user_data(pack(
                    user_data::CONNECT,
                    slot,
                    generation,
                ));
                // SAFETY: the address lives in the slot, which is not reused while the connect
                // is in flight (`connecting` is set).
                unsafe { ring.push(&sqe) }
            }
            Backend::Epoll => {
                let (sock, state) = TcpStream::connect(addr)?;
                if self.nodelay {
                    let _ = sock.set_nodelay(true);
                }
                let pending = state == Connect::InProgress;
                self.attach(slot, generation, sock.into_fd(), pending)?;
                if !pending {
                    let s = &mut self.slots[slot as usize];
                    s.connect_result = 0;
                    s.connecting = true; // until the notification is reported
                    Self::notify_slot(&mut self.notify, s, slot, Notify::Connected);
                }
                Ok(())
            }
        }
    }

    /// Queue a notification of `kind` for `slot`, once per kind.
    fn notify_slot(q: &mut IndexQueue<'r>, s: &mut IoSlot, slot: u32, kind: Notify) {
        let flag = match kind {
            Notify::Sent => &mut s.notify_sent,
            Notify::Connected => &mut s.notify_connected,
            Notify::Released => &mut s.notify_released,
        };
        if !*flag {
            *flag = true;
            let pushed = q.push(slot);
            debug_assert!(pushed, "the notify queue holds two entries per slot");
        }
    }

    /// Start (or resume) receiving on `slot`.
    pub fn arm_recv(&mut self, slot: u32) -> Result<()> {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return Ok(());
        };
        if !s.open || s.closing || s.recv_done || s.connecting {
            s.want_recv = !s.recv_done && s.open && !s.closing;
            return Ok(());
        }
        s.want_recv = true;
        if s.recv != Recv::Idle || s.starved {
            return Ok(());
        }
        match &mut self.kind {
            Kind::Uring { ring } => {
                // At least one buffer's worth, so a connection at its quota still makes progress
                // once the loop resumes it; the loop pauses it when the quota is reached.
                let quota = if s.quota == 0 { self.quota } else { s.quota };
                let cap = if self.recv_cap {
                    let room = quota.saturating_sub(self.pool.owner_count(slot)).max(1);
                    u32::from(room).saturating_mul(self.pool.buf_size() as u32)
                } else {
                    0
                };
                let sqe = s
                    .target(slot, Sqe::recv_multishot_capped(s.fd(), BUF_GROUP, cap))
                    .user_data(pack(user_data::RECV, slot, s.generation));
                // SAFETY: buffer select points at the registered pool ring, which outlives the
                // driver; the fd stays open while the receive is in flight (closing waits).
                unsafe { ring.push(&sqe) }?;
                s.recv = Recv::Armed;
            }
            Kind::Epoll { .. } => {
                s.recv = Recv::Armed;
                // Data may have arrived while paused, with no new edge to come.
                s.readable = true;
                if !s.ready_queued {
                    s.ready_queued = true;
                    self.ready.push(slot);
                }
            }
        }
        Ok(())
    }

    /// Stop receiving on `slot` until [`Driver::arm_recv`]. Bytes already received are still
    /// reported (io_uring may complete a few more receives before the cancel lands).
    pub fn pause_recv(&mut self, slot: u32) -> Result<()> {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return Ok(());
        };
        s.want_recv = false;
        if !s.open || s.recv != Recv::Armed {
            return Ok(());
        }
        match &mut self.kind {
            Kind::Uring { ring } => {
                let sqe = Sqe::cancel(pack(user_data::RECV, slot, s.generation)).user_data(pack(
                    user_data::CANCEL,
                    slot,
                    s.generation,
                ));
                // SAFETY: a cancel points at no memory.
                unsafe { ring.push(&sqe) }?;
                s.cancels += 1;
                s.recv = Recv::Cancelling;
            }
            Kind::Epoll { .. } => s.recv = Recv::Idle,
        }
        Ok(())
    }

    /// Sets the lease quota of `slot` (0: back to the driver's default): the io_uring receive
    /// armed next is capped to the room it leaves. Reset when the slot is reopened.
    pub fn set_quota(&mut self, slot: u32, quota: u16) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            s.quota = quota;
        }
    }

    /// The address of the peer of `slot` (`getpeername`, no state kept).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a slot that is not open; [`Error::NotConnected`] once the peer
    /// reset the connection.
    pub fn peer_addr(&self, slot: u32) -> Result<SocketAddr> {
        let s = self
            .slots
            .get(slot as usize)
            .filter(|s| s.open)
            .ok_or(Error::NotFound)?;
        super::socket::peer_addr(s.fd())
    }

    /// True when the receive of `slot` is running or will be re-armed (not paused, not ended).
    pub fn recv_wanted(&self, slot: u32) -> bool {
        self.slots.get(slot as usize).is_some_and(|s| s.want_recv)
    }

    /// The write slab of `slot`, to append to (`None` for a closed or closing slot).
    pub fn slab(&mut self, slot: u32) -> Option<crate::pool::ByteRing<'_>> {
        self.live(slot)?;
        self.slabs.ring(slot as usize)
    }

    /// Bytes staged in the write slab of `slot` and not yet acknowledged as sent.
    pub fn staged(&mut self, slot: u32) -> usize {
        self.slabs.ring(slot as usize).map_or(0, |r| r.len())
    }

    /// Queue a send of whatever is staged in `slot`; sends start in [`Driver::submit_flushes`].
    pub fn flush(&mut self, slot: u32) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if s.open && !s.flush_queued {
            s.flush_queued = true;
            self.flushes.push(slot);
        }
    }

    /// Start the sends queued by [`Driver::flush`] (the end of a loop turn). With io_uring they
    /// go out with the next wait, in the same `io_uring_enter`.
    pub fn submit_flushes(&mut self) -> Result<()> {
        while let Some(slot) = self.flushes.pop() {
            let s = &mut self.slots[slot as usize];
            s.flush_queued = false;
            if !s.open || s.closing || s.sending > 0 || s.connecting || s.want_out {
                // Not yet: the send in flight (or EPOLLOUT) will continue it. Or never: a
                // closing slot drops what is staged.
                continue;
            }
            let Some(ring) = self.slabs.ring(slot as usize) else {
                continue;
            };
            let parts = ring.staged_raw();
            let total = parts[0].1 + parts[1].1;
            if total == 0 {
                continue;
            }
            match &mut self.kind {
                Kind::Uring { ring: uring } => {
                    let ud = pack(user_data::SEND, slot, s.generation);
                    let len = u32::try_from(total).unwrap_or(u32::MAX);
                    let sqe = if parts[1].1 == 0 {
                        Sqe::send(s.fd(), parts[0].0, len)
                    } else {
                        let msg = s.msg.prepare(parts);
                        Sqe::sendmsg(s.fd(), msg)
                    };
                    let sqe = s.target(slot, sqe);
                    // SAFETY: the staged region stays untouched until the send completes: the
                    // slab only appends to its free region and is consumed by the completion;
                    // the msghdr lives in the slot, which is not reused while `sending` > 0.
                    unsafe { uring.push(&sqe.user_data(ud)) }?;
                    s.sending = len.max(1);
                    self.sends_queued += 1;
                    let marked = s.awaiting && s.await_epoch == self.await_epoch;
                    if s.data_turn == self.turn && !marked {
                        s.awaiting = true;
                        s.await_epoch = self.await_epoch;
                        self.awaiting += 1;
                    }
                }
                Kind::Epoll { ep, .. } => {
                    self.calls.writes += 1;
                    // SAFETY: the parts point into the slab's staged bytes (valid, initialised),
                    // and nothing appends or consumes while these slices live.
                    let (a, b) = unsafe {
                        (
                            core::slice::from_raw_parts(parts[0].0, parts[0].1),
                            core::slice::from_raw_parts(parts[1].0, parts[1].1),
                        )
                    };
                    let r = if b.is_empty() {
                        socket::write(s.fd(), a)
                    } else {
                        socket::write_vectored(s.fd(), &[a, b])
                    };
                    match r {
                        Ok(n) => {
                            // The same slab the staged parts came from, just above.
                            let left = self.slabs.ring(slot as usize).map_or(0, |mut ring| {
                                let _ = ring.consume(n);
                                ring.len()
                            });
                            s.sent_result = n as i64;
                            if left > 0 {
                                // The socket took less than offered: wait for EPOLLOUT.
                                set_want_out(ep, &mut self.calls, s, slot, true)?;
                            }
                        }
                        Err(Error::WouldBlock) => {
                            s.sent_result = 0;
                            set_want_out(ep, &mut self.calls, s, slot, true)?;
                            continue;
                        }
                        Err(e) => s.sent_result = -i64::from(e.raw_os_error()),
                    }
                    Self::notify_slot(&mut self.notify, s, slot, Notify::Sent);
                }
            }
        }
        Ok(())
    }

    /// Shut down one direction of `slot` (synchronously).
    pub fn shutdown(&mut self, slot: u32, how: super::socket::Shutdown) -> Result<()> {
        let s = self.live(slot).ok_or(Error::NotConnected)?;
        socket::shutdown(s.fd(), how)
    }

    /// Close `slot`: cancel what is in flight, then close the descriptor. [`IoEvent::Released`]
    /// says when the slot may be reused. Staged bytes not yet sent are dropped: flush first for
    /// a graceful close.
    pub fn close(&mut self, slot: u32) -> Result<()> {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return Ok(());
        };
        if !s.open || s.closing {
            return Ok(());
        }
        s.closing = true;
        s.want_recv = false;
        match &mut self.kind {
            Kind::Uring { ring } => {
                let gn = s.generation;
                let mut targets: heapless::Vec<u8, 3> = heapless::Vec::new();
                if s.recv == Recv::Armed {
                    let _ = targets.push(user_data::RECV);
                    s.recv = Recv::Cancelling;
                }
                if s.sending > 0 {
                    let _ = targets.push(user_data::SEND);
                }
                if s.connecting {
                    let _ = targets.push(user_data::CONNECT);
                }
                for op in targets {
                    let sqe = Sqe::cancel(pack(op, slot, gn)).user_data(pack(
                        user_data::CANCEL,
                        slot,
                        gn,
                    ));
                    // SAFETY: a cancel points at no memory.
                    unsafe { ring.push(&sqe) }?;
                    s.cancels += 1;
                }
            }
            Kind::Epoll { ep, .. } => {
                let _ = ep.delete(s.fd());
                self.calls.epoll_ctls += 1;
                s.recv = Recv::Idle;
                s.connecting = false;
            }
        }
        self.maybe_release(slot);
        Ok(())
    }

    /// Close the descriptor and report the release once nothing is in flight.
    fn maybe_release(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if !s.open || !s.closing || s.in_flight() {
            return;
        }
        if core::mem::take(&mut s.awaiting) && s.await_epoch == self.await_epoch {
            self.awaiting -= 1;
        }
        if let (true, Kind::Uring { ring }) = (core::mem::take(&mut s.fixed), &self.kind) {
            // The table's reference would keep the socket open after the close below. (Should
            // this fail, the socket closes when the slot is next filled or the ring closes.)
            self.calls.registers += 1;
            let _ = ring.update_file(slot, None);
        }
        // SAFETY: the fd is open (`open`) and owned by the slot; nothing is in flight on it.
        drop(unsafe { OwnedFd::from_raw_fd(s.fd) });
        self.calls.closes += 1;
        s.open = false;
        s.fd = -1;
        let _ = self.slabs.reset(slot as usize);
        // Leases of this connection the handler still holds are no longer its (nor the next
        // connection's in this slot) to count against a quota.
        self.pool.disown(slot);
        // A send result still queued is reported first (FIFO), then the release.
        Self::notify_slot(&mut self.notify, s, slot, Notify::Released);
    }

    /// Re-arm up to `max` connections whose receive stopped for lack of buffers, while at
    /// least `watermark` receive buffers are free. Returns how many were re-armed.
    pub fn rearm_starved(&mut self, max: usize, watermark: usize) -> Result<usize> {
        let mut n = 0;
        while n < max && self.pool.recv_available() >= watermark.max(1) {
            let Some(slot) = self.starved.pop() else {
                break;
            };
            self.slots[slot as usize].starved = false;
            if self.slots[slot as usize].want_recv {
                self.arm_recv(slot)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// io_uring, a connection that received before found the ring dry while spare buffers
    /// were free: counts it in the current stretch of receives and, once the stretch holds 16
    /// windows' worth of receives and dry rings, tells whether at least a quarter of them were
    /// dry (each one a re-armed receive), then starts a new stretch. Steady demand (say 256
    /// connections in ping-pong with a window of 64: three in four receives find it dry)
    /// passes; an occasional dry ring among many receives does not.
    fn steady_demand(&mut self) -> bool {
        self.stretch_dry += 1;
        let seen = self
            .ring_receives
            .wrapping_sub(self.stretch_start)
            .saturating_add(self.stretch_dry);
        // `ring_window() <= 32768`: no overflow.
        if seen < 16 * self.pool.ring_window() as u32 {
            return false;
        }
        let steady = self.stretch_dry.saturating_mul(4) >= seen;
        self.stretch_start = self.ring_receives;
        self.stretch_dry = 0;
        steady
    }

    /// Connections waiting for receive buffers.
    pub fn starved(&self) -> usize {
        self.starved.len()
    }

    /// Times a connection's receive stopped because no receive buffer was free.
    pub fn starvation_pauses(&self) -> u64 {
        self.starvation_pauses
    }

    /// Times the provided-buffer ring's window was doubled because receives ran it dry while
    /// buffers were free (see [`BufPool::widen_ring`]).
    pub fn ring_widenings(&self) -> u64 {
        self.ring_widenings
    }

    /// The generation `slot` was last opened with (`None` for an index out of range).
    pub fn generation(&self, slot: u32) -> Option<u32> {
        self.slots.get(slot as usize).map(|s| s.generation)
    }

    // ----- waiting and events ----------------------------------------------------------

    /// True when events are ready without waiting (the loop must not sleep).
    fn has_pending(&self) -> bool {
        !self.notify.is_empty()
            || !self.ready.is_empty()
            || self.reading.is_some()
            || self.accepting.is_some()
            || self.listeners.iter().flatten().any(|l| l.pending)
    }

    /// Submit what is queued and wait for events, at most `timeout` (`None`: until one
    /// arrives). With io_uring this is the turn's one `io_uring_enter`.
    ///
    /// With io_uring and a batch wait set ([`Driver::set_batch_wait`], Linux 6.12+), a wait
    /// after sends holds out for more than one event. A connection that sent data and was
    /// answered in the same round (request/response) is *awaited*: it is likely to send again.
    /// The wait then asks for the sends' completions plus half of the awaited connections, for
    /// at most the batch wait, after which any event ends it. If fewer came in that time, the
    /// awaited set is dropped (the peers are slow, or only send one way), so a connection that
    /// does not answer costs at most one batch wait.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<()> {
        let timeout = if self.has_pending() {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        match &mut self.kind {
            Kind::Uring { ring } => {
                self.calls.enters += 1;
                let sends = core::mem::take(&mut self.sends_queued);
                self.turn = self.turn.wrapping_add(1);
                let r = if timeout == Some(Duration::ZERO) {
                    ring.submit_and_wait(0, timeout)
                } else if (self.awaiting >= 2 || sends >= 2) && !self.batch_wait.is_zero() {
                    // The sends complete at once, and connections just answered (see
                    // `IoSlot::awaiting`) will send again. Hold out (at most `batch_wait`) for
                    // the sends' completions plus half of those answers, so one system call
                    // collects a good part of the round instead of waking at its first
                    // arrival. Half, not all: waiting for the whole round keeps the server
                    // idle while the peers work and the peers idle while it works (measured
                    // on the 2-CPU bench machine, 16 connections ping-pong: 20-35% fewer
                    // round trips per second with "all"; "half" kept the rate of waking at
                    // the first arrival, with 40% of its system calls). Also tried and
                    // dropped: three quarters (more waits fall short and drop the set, so more
                    // calls); all with a 5 or 10 us batch wait (fewer round trips per second);
                    // dropping the set only after two short waits in a row (0.7x the calls at
                    // 256 connections, 4-5% more CPU per round trip in an 11-run comparison).
                    // Not with one connection: nothing to batch, and the minimum-wait timer
                    // would cost a wake-up per round trip whenever the peer is slower than
                    // `batch_wait`.
                    let expect = if self.awaiting >= 2 {
                        self.awaiting.div_ceil(2)
                    } else {
                        1
                    };
                    let want = sends.saturating_add(expect).min(ring.features().cq_entries);
                    let r = ring.submit_and_wait_batch(want, timeout, self.batch_wait);
                    if self.awaiting >= 2 && ring.cq_ready() < want {
                        // Not enough came back in time: stop waiting for those (a slow or
                        // one-way peer); the next answers start a new expectation.
                        self.await_epoch = self.await_epoch.wrapping_add(1);
                        self.awaiting = 0;
                    }
                    r
                } else {
                    ring.submit_and_wait(1, timeout)
                };
                match r {
                    Ok(_) => Ok(()),
                    // The CQ is full: reap first; the queued SQEs go with the next enter.
                    Err(Error::Busy) | Err(Error::WouldBlock) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Kind::Epoll {
                ep,
                events,
                cursor,
                n,
            } => {
                self.calls.epoll_waits += 1;
                *n = ep.wait(events, timeout)?;
                *cursor = 0;
                Ok(())
            }
        }
    }

    /// The next event, or `None` when this round has none left. Call [`Driver::wait`] between
    /// rounds. The caller may start and cancel operations between calls.
    pub fn next_event(&mut self) -> Option<IoEvent<'r>> {
        if let Some(ev) = self.next_notification() {
            return Some(ev);
        }
        match self.backend() {
            Backend::Uring => self.next_completion(),
            Backend::Epoll => self.next_readiness(),
        }
    }

    fn next_notification(&mut self) -> Option<IoEvent<'r>> {
        while let Some(slot) = self.notify.pop() {
            let s = &mut self.slots[slot as usize];
            if core::mem::take(&mut s.notify_connected) {
                s.connecting = false;
                let result = if s.connect_result == 0 {
                    Ok(())
                } else {
                    Err(Error::from_raw_os_error(s.connect_result))
                };
                if result.is_ok() && s.want_recv {
                    let _ = self.arm_recv(slot);
                }
                return Some(IoEvent::Connected { slot, result });
            }
            if core::mem::take(&mut s.notify_sent) {
                let result = if s.sent_result < 0 {
                    Err(Error::from_raw_os_error((-s.sent_result) as i32))
                } else {
                    Ok(s.sent_result as u32)
                };
                return Some(IoEvent::Sent { slot, result });
            }
            if core::mem::take(&mut s.notify_released) {
                return Some(IoEvent::Released { slot });
            }
            // This entry's notification was reported through an earlier entry.
        }
        None
    }

    fn next_completion(&mut self) -> Option<IoEvent<'r>> {
        loop {
            let Kind::Uring { ring } = &mut self.kind else {
                return None;
            };
            let cqe = ring.completions().next()?;
            if let Some(ev) = self.on_completion(cqe) {
                return Some(ev);
            }
        }
    }

    fn on_completion(&mut self, c: Cqe) -> Option<IoEvent<'r>> {
        let (op, index, gn) = unpack(c.user_data);
        if op == user_data::ACCEPT && !c.more() {
            self.accepts_in_flight &= !(1u8 << (index & 7));
        }
        if op == user_data::CANCEL && index == user_data::MAX_INDEX {
            self.loose_cancels = self.loose_cancels.saturating_sub(1);
            return None;
        }
        if op == user_data::ACCEPT {
            let Some(Some(l)) = self.listeners.get_mut(index as usize) else {
                // The listener was closed while this accept completed: close what it accepted.
                if let Ok(fd) = c.result() {
                    // SAFETY: the kernel installed this descriptor for us; nobody else owns it.
                    drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
                    self.calls.closes += 1;
                }
                return None;
            };
            if !c.more() {
                l.armed = false;
            }
            return match c.result() {
                Ok(fd) => {
                    // SAFETY: the kernel installed this descriptor for us and nobody else
                    // owns it.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
                    if !c.more() {
                        // Ended without an error (e.g. CQ overflow): keep accepting.
                        let _ = self.arm_accept(index as u8);
                    }
                    Some(IoEvent::Accepted {
                        listener: index as u8,
                        stream: TcpStream::from_fd(fd),
                    })
                }
                Err(Error::Canceled) => None,
                Err(error) => Some(IoEvent::AcceptFailed {
                    listener: index as u8,
                    error,
                }),
            };
        }
        if op == user_data::WAKE {
            let _ = self.wake.drain();
            if !c.more() {
                self.wake_armed = false;
            }
            if !c.more() && !self.quiescing {
                // The multishot poll ended (e.g. CQ overflow): watch the eventfd again.
                if let (Kind::Uring { ring }, Some(fd)) = (&mut self.kind, self.wake.fd()) {
                    let sqe =
                        Sqe::poll_readable_multishot(fd).user_data(pack(user_data::WAKE, 0, 0));
                    // SAFETY: as at start-up: no memory, an eventfd closed only after the
                    // driver.
                    self.wake_armed = unsafe { ring.push(&sqe) }.is_ok();
                }
            }
            return Some(IoEvent::Wake);
        }
        let s = self.slots.get_mut(index as usize)?;
        if !s.open || s.generation != gn {
            // A completion for an old generation: consumed and ignored. (Unreachable while
            // slots are only freed after their last completion; kept as a guard.)
            return None;
        }
        let ev = match op {
            user_data::RECV => self.on_recv(index, c),
            user_data::SEND => {
                let s = &mut self.slots[index as usize];
                s.sending = 0;
                let result = c.result();
                if let (Ok(n), Some(mut ring)) = (result, self.slabs.ring(index as usize)) {
                    let _ = ring.consume(n as usize);
                    if !ring.is_empty() {
                        // A short send, or bytes appended meanwhile: continue.
                        self.flush(index);
                    }
                }
                let s = &self.slots[index as usize];
                if s.closing {
                    None
                } else {
                    Some(IoEvent::Sent {
                        slot: index,
                        result,
                    })
                }
            }
            user_data::CONNECT => {
                let s = &mut self.slots[index as usize];
                s.connecting = false;
                let result = c.result().map(|_| ());
                if s.closing {
                    None
                } else {
                    if result.is_ok() && s.want_recv {
                        let _ = self.arm_recv(index);
                    }
                    if result.is_ok() && self.staged(index) > 0 {
                        self.flush(index);
                    }
                    Some(IoEvent::Connected {
                        slot: index,
                        result,
                    })
                }
            }
            user_data::CANCEL => {
                let s = &mut self.slots[index as usize];
                s.cancels = s.cancels.saturating_sub(1);
                None
            }
            _ => None,
        };
        self.maybe_release(index);
        ev
    }

    fn on_recv(&mut self, slot: u32, c: Cqe) -> Option<IoEvent<'r>> {
        let s = &mut self.slots[slot as usize];
        let more = c.more();
        if !more {
            s.recv = Recv::Idle;
        }
        let mut ev = None;
        match c.result() {
            Ok(0) => {
                s.recv_done = true;
                s.want_recv = false;
                if !s.closing {
                    ev = Some(IoEvent::RecvStopped {
                        slot,
                        why: RecvStop::Eof,
                    });
                }
            }
            Ok(n) => {
                if let Some(bid) = c.buffer_id() {
                    // SAFETY: the id comes from this completion of a receive on the pool's
                    // registered group, once; the kernel is done writing it.
                    match unsafe { self.pool.lease_received_by(bid, n, slot) } {
                        // A closing connection's late bytes go straight back to the pool.
                        Ok(lease) if s.closing => drop(lease),
                        Ok(lease) => {
                            s.data_turn = self.turn;
                            self.ring_receives = self.ring_receives.wrapping_add(1);
                            if core::mem::take(&mut s.awaiting) && s.await_epoch == self.await_epoch
                            {
                                self.awaiting -= 1;
                            }
                            ev = Some(IoEvent::Data { slot, lease })
                        }
                        Err(_) => debug_assert!(false, "kernel named a buffer not in the ring"),
                    }
                }
            }
            Err(Error::NoBuffers) => {
                // The ring ran dry: wait in the starved queue for buffers to come back.
                if !s.starved && s.want_recv {
                    s.starved = true;
                    self.starved.push(slot);
                    self.starvation_pauses += 1;
                }
                // Dry while buffers were free on the spare stack: the window, not the pool,
                // is short. Double it (the pool publishes at once) when this connection had
                // already received in this round (a stream that needs more buffers per round
                // than the window holds), or when connections that received before keep
                // finding it dry (steady demand: more of them receive each round than the
                // window holds; see `steady_demand`). A connection storm, many new connections
                // receiving one small message each, widens it by neither rule: those are
                // re-armed a bounded number per round instead, and the window stays small, so
                // receives keep reusing the same few buffers.
                let (this_round, before) = (s.data_turn == self.turn, s.data_turn != 0);
                if self.pool.recv_available() > self.pool.ring_published()
                    && (this_round || (before && self.steady_demand()))
                {
                    let window = self.pool.ring_window();
                    if self.pool.widen_ring(window.saturating_mul(2)) > window {
                        self.ring_widenings += 1;
                    }
                }
            }
            Err(Error::Canceled) => {}
            Err(Error::InvalidInput) if self.recv_cap => {
                // This kernel predates capped multishot receives: go on without the cap (the
                // loop still pauses connections at their quota, a little later).
                self.recv_cap = false;
            }
            Err(e) => {
                s.recv_done = true;
                s.want_recv = false;
                if !s.closing {
                    ev = Some(IoEvent::RecvStopped {
                        slot,
                        why: RecvStop::Error(e),
                    });
                }
            }
        }
        let s = &self.slots[slot as usize];
        if !more && s.want_recv && !s.starved && !s.recv_done && !s.closing {
            // Ended for another reason (CQ overflow, a cancel raced with a resume): re-arm.
            let _ = self.arm_recv(slot);
        }
        ev
    }

    fn next_readiness(&mut self) -> Option<IoEvent<'r>> {
        loop {
            // 1. Keep reading the connection of this round.
            if let Some((slot, reads)) = self.reading {
                match self.read_once(slot, reads) {
                    ReadStep::Event(ev, more) => {
                        self.reading = if more { Some((slot, reads + 1)) } else { None };
                        return Some(ev);
                    }
                    ReadStep::Done => {
                        self.reading = None;
                        continue;
                    }
                }
            }
            // 2. Keep accepting on the listener of this round.
            if let Some(index) = self.accepting {
                match self.accept_once(index) {
                    Some(ev) => return Some(ev),
                    None => {
                        self.accepting = None;
                        continue;
                    }
                }
            }
            // 3. Listeners due an attempt without an edge.
            if let Some(i) = self
                .listeners
                .iter()
                .position(|l| l.as_ref().is_some_and(|l| l.pending))
            {
                if let Some(l) = self.listeners[i].as_mut() {
                    l.pending = false;
                }
                self.accepting = Some(i as u8);
                continue;
            }
            // 4. Connections due a read without an edge.
            if let Some(slot) = self.ready.pop() {
                let s = &mut self.slots[slot as usize];
                s.ready_queued = false;
                if s.open && !s.closing && s.recv == Recv::Armed && s.readable {
                    self.reading = Some((slot, 0));
                }
                continue;
            }
            // 5. The next epoll event.
            let Kind::Epoll {
                events, cursor, n, ..
            } = &mut self.kind
            else {
                return None;
            };
            if *cursor >= *n {
                return None;
            }
            let ev = events.get(*cursor)?;
            *cursor += 1;
            let (op, index, gn) = unpack(ev.token());
            match op {
                user_data::WAKE => {
                    let _ = self.wake.drain();
                    return Some(IoEvent::Wake);
                }
                user_data::ACCEPT
                    if self
                        .listeners
                        .get(index as usize)
                        .is_some_and(|l| l.as_ref().is_some_and(|l| l.armed)) =>
                {
                    self.accepting = Some(index as u8);
                }
                user_data::CONN => {
                    let Some(s) = self.slots.get_mut(index as usize) else {
                        continue;
                    };
                    if !s.open || s.closing || s.generation != gn {
                        continue;
                    }
                    if ev.is_writable() && s.want_out {
                        if s.connecting {
                            if let Some(e) = self.finish_connect(index) {
                                return Some(e);
                            }
                        } else {
                            self.continue_send(index);
                        }
                    }
                    let s = &mut self.slots[index as usize];
                    if ev.is_read_closed() || ev.is_hup() || ev.is_error() {
                        s.read_closed = true;
                    }
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        s.readable = true;
                        if s.recv == Recv::Armed && !s.connecting {
                            self.reading = Some((index, 0));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn finish_connect(&mut self, slot: u32) -> Option<IoEvent<'r>> {
        let Kind::Epoll { ep, .. } = &self.kind else {
            return None;
        };
        let s = &mut self.slots[slot as usize];
        let result = match socket::take_error(s.fd()) {
            Ok(None) => Ok(()),
            Ok(Some(e)) | Err(e) => Err(e),
        };
        s.connecting = false;
        let _ = set_want_out(ep, &mut self.calls, s, slot, false);
        if result.is_ok() {
            if s.want_recv {
                let _ = self.arm_recv(slot);
            }
            if self.staged(slot) > 0 {
                self.flush(slot);
            }
        }
        Some(IoEvent::Connected { slot, result })
    }

    /// EPOLLOUT fired: the socket has room again; send the rest of the slab now.
    fn continue_send(&mut self, slot: u32) {
        let Kind::Epoll { ep, .. } = &self.kind else {
            return;
        };
        let s = &mut self.slots[slot as usize];
        let _ = set_want_out(ep, &mut self.calls, s, slot, false);
        self.flush(slot);
    }

    fn accept_once(&mut self, index: u8) -> Option<IoEvent<'r>> {
        let l = self.listeners.get_mut(index as usize)?.as_mut()?;
        if !l.armed {
            return None;
        }
        loop {
            self.calls.accepts += 1;
            match l.sock.accept() {
                Ok((stream, _)) => {
                    return Some(IoEvent::Accepted {
                        listener: index,
                        stream,
                    });
                }
                Err(Error::WouldBlock) => return None,
                // The peer gave up before we accepted, or a signal: try the next one.
                Err(Error::ConnectionAborted) | Err(Error::Interrupted) => continue,
                Err(error) => {
                    l.armed = false;
                    return Some(IoEvent::AcceptFailed {
                        listener: index,
                        error,
                    });
                }
            }
        }
    }

    fn read_once(&mut self, slot: u32, reads: u32) -> ReadStep<'r> {
        let s = &mut self.slots[slot as usize];
        if !s.open || s.closing || s.recv != Recv::Armed || !s.readable {
            return ReadStep::Done;
        }
        if reads >= EPOLL_READS_PER_ROUND {
            // Fairness: let the others read; come back without waiting for an edge.
            if !s.ready_queued {
                s.ready_queued = true;
                self.ready.push(slot);
            }
            return ReadStep::Done;
        }
        let Ok(Some(mut lease)) = self.pool.try_take_recv_by(slot) else {
            // Out of buffers: like ENOBUFS on io_uring, wait in the starved queue.
            s.recv = Recv::Idle;
            if !s.starved {
                s.starved = true;
                self.starved.push(slot);
                self.starvation_pauses += 1;
            }
            return ReadStep::Done;
        };
        self.calls.reads += 1;
        match socket::read(s.fd(), lease.buf_mut()) {
            Ok(0) => {
                s.recv = Recv::Idle;
                s.recv_done = true;
                s.want_recv = false;
                ReadStep::Event(
                    IoEvent::RecvStopped {
                        slot,
                        why: RecvStop::Eof,
                    },
                    false,
                )
            }
            Ok(n) => {
                // A short read drained the socket: with edge-triggered epoll, bytes arriving
                // later raise a new edge, so the read that would only say WouldBlock is saved.
                // Not once the peer's FIN was reported: then read on until EOF.
                let more = n == lease.capacity() || s.read_closed;
                if !more {
                    s.readable = false;
                }
                let _ = lease.set_len(n);
                ReadStep::Event(IoEvent::Data { slot, lease }, more)
            }
            Err(Error::WouldBlock) => {
                s.readable = false;
                ReadStep::Done
            }
            Err(Error::Interrupted) => ReadStep::Done,
            Err(e) => {
                s.recv = Recv::Idle;
                s.recv_done = true;
                s.want_recv = false;
                ReadStep::Event(
                    IoEvent::RecvStopped {
                        slot,
                        why: RecvStop::Error(e),
                    },
                    false,
                )
            }
        }
    }

    /// True when `slot` has a live connection (open and not closing).
    pub fn is_live(&self, slot: u32) -> bool {
        self.live(slot).is_some()
    }

    /// True when `slot` still has an operation in flight or a descriptor open.
    pub fn is_busy(&self, slot: u32) -> bool {
        self.slots.get(slot as usize).is_some_and(|s| s.open)
    }

    /// True when the kernel holds nothing of this driver's any more: no connection open (a
    /// slot is released only after its last completion), no accept, wake poll or cancellation
    /// in flight.
    fn quiet(&self) -> bool {
        self.slots.iter().all(|s| !s.open)
            && self.accepts_in_flight == 0
            && !self.wake_armed
            && self.loose_cancels == 0
            && self.notify.is_empty()
    }

    /// Tear down so that the kernel holds nothing of the storage: stop accepting, close every
    /// connection (dropping what is staged and what is received), cancel every operation and
    /// reap every completion (multishot ends included), then unregister the provided-buffer
    /// ring. Events that come up meanwhile are dropped: leases go back to the pool, accepted
    /// sockets are closed. Afterwards the driver only closes descriptors.
    ///
    /// It waits as long as an operation takes to end after its cancellation (socket operations
    /// end at once; an operation the kernel already runs is waited for).
    ///
    /// # Errors
    ///
    /// A failure of the ring itself; nothing can then be said about what is in flight.
    pub fn quiesce(&mut self) -> Result<()> {
        self.quiescing = true;
        for l in self.listeners.iter_mut() {
            let Some(slot) = l.take() else { continue };
            if let Kind::Epoll { ep, .. } = &self.kind {
                let _ = ep.delete(&slot.sock);
                self.calls.epoll_ctls += 1;
            }
            // io_uring keeps its own reference to the file while an accept is in flight;
            // the cancellation below ends it.
            self.calls.closes += 1;
        }
        self.accepting = None;
        self.reading = None;
        for slot in 0..self.slots.len() as u32 {
            let s = &mut self.slots[slot as usize];
            if !s.open {
                continue;
            }
            s.closing = true;
            s.want_recv = false;
            s.flush_queued = false;
            if let Kind::Epoll { ep, .. } = &self.kind {
                let _ = ep.delete(s.fd());
                self.calls.epoll_ctls += 1;
                s.recv = Recv::Idle;
                s.connecting = false;
            }
            self.maybe_release(slot);
        }
        while self.flushes.pop().is_some() {}
        // Everything still in flight is cancelled with one ASYNC_CANCEL(ANY | ALL), repeated
        // only when a wait passes without any completion (a cancel answered EALREADY, or a
        // push that found the queue full).
        let mut cancel_due = true;
        loop {
            while let Some(ev) = self.next_event() {
                drop(ev);
            }
            if self.quiet() {
                break;
            }
            let Kind::Uring { ring } = &mut self.kind else {
                // epoll has nothing in flight once the descriptors are closed.
                break;
            };
            if cancel_due && self.loose_cancels == 0 {
                let sqe =
                    Sqe::cancel_any().user_data(pack(user_data::CANCEL, user_data::MAX_INDEX, 1));
                // SAFETY: a cancel points at no memory.
                if unsafe { ring.push(&sqe) }.is_ok() {
                    self.loose_cancels += 1;
                }
            }
            self.calls.enters += 1;
            match ring.submit_and_wait(1, Some(Duration::from_millis(50))) {
                Ok(_) | Err(Error::Busy) | Err(Error::WouldBlock) => {}
                Err(e) => return Err(e),
            }
            // Cancel again only when this wait brought nothing.
            cancel_due = ring.cq_ready() == 0;
        }
        if let (Kind::Uring { ring }, true) = (&mut self.kind, self.buf_ring) {
            // Every receive has ended: the kernel lets go of the buffer ring.
            ring.unregister_buf_ring(BUF_GROUP)?;
            self.buf_ring = false;
        }
        Ok(())
    }
}

/// epoll: register (`on`) or drop interest in EPOLLOUT for a connection; a no-op when it is
/// already so. EPOLLOUT is wanted only while a slab holds bytes the socket did not take (or a
/// connect is pending).
fn set_want_out(
    ep: &Epoll,
    calls: &mut KernelCalls,
    s: &mut IoSlot,
    slot: u32,
    on: bool,
) -> Result<()> {
    if s.want_out == on {
        return Ok(());
    }
    let mut interest = Interest::READABLE
        .add(Interest::READ_CLOSED)
        .edge_triggered();
    if on {
        interest = interest.add(Interest::WRITABLE);
    }
    ep.modify(s.fd(), pack(user_data::CONN, slot, s.generation), interest)?;
    calls.epoll_ctls += 1;
    s.want_out = on;
    Ok(())
}

/// The kinds of notification the driver queues for a slot outside completions.
#[derive(Clone, Copy)]
enum Notify {
    Sent,
    Connected,
    Released,
}

enum ReadStep<'r> {
    /// An event, and whether to keep reading this connection.
    Event(IoEvent<'r>, bool),
    Done,
}

impl IoSlot {
    fn zeroed() -> IoSlot {
        IoSlot {
            fd: -1,
            open: false,
            closing: false,
            generation: 0,
            recv: Recv::Idle,
            want_recv: false,
            starved: false,
            recv_done: false,
            readable: false,
            read_closed: false,
            sending: 0,
            fixed: false,
            data_turn: 0,
            awaiting: false,
            await_epoch: 0,
            flush_queued: false,
            connecting: false,
            cancels: 0,
            want_out: false,
            ready_queued: false,
            sent_result: 0,
            connect_result: 0,
            notify_sent: false,
            notify_connected: false,
            notify_released: false,
            quota: 0,
            msg: MsgBuf::new(),
            addr: SockAddrBuf::new(),
        }
    }
}

impl Drop for Driver<'_> {
    fn drop(&mut self) {
        // A driver over borrowed storage makes sure the kernel is done with it, and says so.
        // (Also while unwinding: a panic in here then aborts, which is sound.)
        if let Some(done) = self.scope
            && self.quiesce().is_ok()
        {
            done.set(true);
        }
        // Close what is still open. With io_uring, the ring is closed after this, which cancels
        // what is left in flight; 'static storage outlives the driver (see `Driver::new`).
        for s in self.slots.iter_mut() {
            if s.open {
                // SAFETY: the slot owns this open descriptor.
                drop(unsafe { OwnedFd::from_raw_fd(s.fd) });
                s.open = false;
            }
        }
    }
}

/// Every piece of memory one event loop uses, sized by const generics and valid as all-zero
/// bytes, so it can live in a `static` (in `.bss`, see [`crate::pool::StaticSlot`]) or be
/// leaked once at start-up without being built on the stack.
///
/// `C` and `T` are the loop's per-connection and per-timer state (the reactor names this type
/// `reactor::Resources`). `CONNS` connection slots, `BUFS` receive buffers of `BUF_SIZE` bytes,
/// a `SLAB`-byte write slab per connection, `TIMERS` timers.
pub struct LoopStorage<
    C,
    T,
    const CONNS: usize,
    const BUFS: usize,
    const BUF_SIZE: usize,
    const SLAB: usize,
    const TIMERS: usize,
> {
    conns: crate::pool::SlabStorage<C, CONNS>,
    io: [IoSlot; CONNS],
    slabs: crate::pool::WriteSlabs<CONNS, SLAB>,
    bufs: crate::pool::BufPoolStorage<BUFS, BUF_SIZE>,
    owners: [u16; CONNS],
    queues: [[u32; CONNS]; 6],
    timers: crate::pool::SlabStorage<T, TIMERS>,
    wheel: [u32; WHEEL_SLOTS],
    events: [RawEvent; EPOLL_EVENTS],
    returns: crate::pool::ReturnQueueStorage<BUFS>,
    signal: crate::sync::WakeSignal,
    wake: super::eventfd::WakeFd,
}

/// Slots of the timer wheel in [`LoopStorage`].
pub const WHEEL_SLOTS: usize = 512;
/// epoll events taken per wait.
pub const EPOLL_EVENTS: usize = 256;

// SAFETY: every field is ZeroInit storage (slab storage, IoSlots, write slabs, buffer-pool
// storage, the return queue, the wake signal and WakeFd), integers, or epoll event records (a
// u32 flag word and a u64 token) for which all-zero bytes is a valid value. (Under loom the
// cross-thread types are loom's and not zero-initialisable: no ZeroInit there.)
#[cfg(not(loom))]
unsafe impl<C, T, const A: usize, const B: usize, const D: usize, const E: usize, const F: usize>
    ZeroInit for LoopStorage<C, T, A, B, D, E, F>
{
}

// SAFETY: the storage is memory for one loop. Besides `C`, `T` and the other storage types
// (each Send on its own terms), it holds epoll event records, whose data word rustix can
// interpret as a pointer but which the driver only ever fills with u64 tokens. Moving the
// storage to another thread before or after a loop uses it is harmless.
unsafe impl<
    C: Send,
    T: Send,
    const A: usize,
    const B: usize,
    const D: usize,
    const E: usize,
    const F: usize,
> Send for LoopStorage<C, T, A, B, D, E, F>
{
}

/// [`LoopStorage`] split into the slices and handles the loop works on.
pub struct LoopParts<'r, C, T> {
    /// Connection slots for the loop's generational slab.
    pub conns: &'r mut [crate::pool::Slot<C>],
    /// The buffer pool, built in the requested mode.
    pub pool: BufPool<'r>,
    /// Storage for the driver.
    pub driver: DriverParts<'r>,
    /// Write slabs.
    pub slabs: SlabArena<'r>,
    /// One entry per connection, for the loop's own queue (paused connections).
    pub paused_queue: &'r mut [u32],
    /// Timer slots.
    pub timers: &'r mut [crate::pool::Slot<T>],
    /// Timer wheel heads.
    pub wheel: &'r mut [u32],
    /// The loop's side of buffers returned from other threads.
    pub returns: crate::pool::ReturnHandle<'r>,
    /// The signal the loop parks on before it waits.
    pub signal: &'r crate::sync::WakeSignal,
}

impl<
    C,
    T,
    const CONNS: usize,
    const BUFS: usize,
    const BUF_SIZE: usize,
    const SLAB: usize,
    const TIMERS: usize,
> LoopStorage<C, T, CONNS, BUFS, BUF_SIZE, SLAB, TIMERS>
{
    /// Split into the parts the loop works on; the buffer pool is built with `pool`, with a
    /// ring window of `window` buffers (0: all; see [`BufPool::with_ring_window`]).
    pub fn split(
        &mut self,
        pool: crate::pool::BufPoolConfig,
        window: u16,
    ) -> core::result::Result<LoopParts<'_, C, T>, crate::pool::PoolError> {
        let pool =
            BufPool::with_ring_window(&mut self.bufs, pool, &mut self.owners, usize::from(window))?;
        let notifier = crate::sync::Notifier::new(&self.signal, &self.wake);
        let returns = crate::pool::ReturnHandle::new(pool, &mut self.returns, notifier)?;
        let (notify, rest) = self.queues.split_at_mut(2);
        let [flush, ready, starved, paused] = rest else {
            unreachable!("six queue rows")
        };
        Ok(LoopParts {
            conns: self.conns.as_mut_slice(),
            pool,
            driver: DriverParts {
                slots: &mut self.io,
                flush_queue: flush,
                ready_queue: ready,
                notify_queue: notify.as_flattened_mut(),
                starved_queue: starved,
                events: &mut self.events,
                wake: &self.wake,
            },
            slabs: SlabArena::new(&mut self.slabs),
            paused_queue: paused,
            timers: self.timers.as_mut_slice(),
            wheel: &mut self.wheel,
            returns,
            signal: &self.signal,
        })
    }
}

/// A driver and the rest of the loop's storage, ready to be assembled into an event loop: what
/// [`LoopStorage::init`] returns and what [`scoped`] lends its closure.
pub struct LoopInit<'r, C, T> {
    /// The driver, its buffer ring registered (io_uring) and its wake watched.
    pub driver: Driver<'r>,
    /// Connection slots for the loop's generational slab.
    pub conns: &'r mut [crate::pool::Slot<C>],
    /// One entry per connection, for the loop's own queue (paused connections).
    pub paused_queue: &'r mut [u32],
    /// Timer slots.
    pub timers: &'r mut [crate::pool::Slot<T>],
    /// Timer wheel heads.
    pub wheel: &'r mut [u32],
    /// The loop's side of buffers returned from other threads.
    pub returns: crate::pool::ReturnHandle<'r>,
    /// The signal the loop parks on before it waits.
    pub signal: &'r crate::sync::WakeSignal,
}

/// Why [`LoopStorage::init`] or [`scoped`] could not build a loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopError {
    /// The buffer pool refused its configuration.
    Pool(crate::pool::PoolError),
    /// The kernel refused (epoll, eventfd, buffer-ring registration, ...).
    Os(Error),
}

impl<'r, C, T> LoopParts<'r, C, T> {
    /// # Safety
    ///
    /// As [`Driver::build`].
    unsafe fn into_init(
        self,
        ring: Option<Uring>,
        nodelay: bool,
        quota: u16,
        scope: Option<&'r Cell<bool>>,
    ) -> core::result::Result<LoopInit<'r, C, T>, LoopError> {
        // SAFETY: forwarded contract.
        let driver = unsafe {
            Driver::build(
                ring,
                self.pool,
                self.slabs,
                self.driver,
                nodelay,
                quota,
                scope,
            )
        }
        .map_err(LoopError::Os)?;
        Ok(LoopInit {
            driver,
            conns: self.conns,
            paused_queue: self.paused_queue,
            timers: self.timers,
            wheel: self.wheel,
            returns: self.returns,
            signal: self.signal,
        })
    }
}

impl<
    C,
    T,
    const CONNS: usize,
    const BUFS: usize,
    const BUF_SIZE: usize,
    const SLAB: usize,
    const TIMERS: usize,
> LoopStorage<C, T, CONNS, BUFS, BUF_SIZE, SLAB, TIMERS>
{
    /// Build a loop over `'static` storage: split it (the pool in provided-ring mode for
    /// io_uring, free-list mode for epoll, as `pool` says) and start a driver on `ring` (or
    /// epoll, with `None`).
    ///
    /// # Errors
    ///
    /// See [`LoopError`].
    pub fn init(
        &'static mut self,
        ring: Option<Uring>,
        pool: crate::pool::BufPoolConfig,
        window: u16,
        nodelay: bool,
        quota: u16,
    ) -> core::result::Result<LoopInit<'static, C, T>, LoopError> {
        let parts = self.split(pool, window).map_err(LoopError::Pool)?;
        // SAFETY: 'static storage outlives every operation.
        unsafe { parts.into_init(ring, nodelay, quota, None) }
    }
}

/// Run `f` with a loop over storage that the caller only borrows (on the stack, say), and make
/// sure the kernel is done with that storage before returning.
///
/// The driver handed to `f` (inside [`LoopInit`]) cancels every operation and reaps every
/// completion when it is dropped (see [`Driver::quiesce`]); `f` may drop it whenever it likes,
/// and if it has not by the time it returns or unwinds, it is dropped with the rest of `f`'s
/// locals. The lifetime `'s` is `f`'s own, so nothing that borrows the storage (the driver,
/// leases, handles) can outlive the call.
///
/// What the borrow checker cannot stop is `mem::forget` (or a leak) of the driver inside `f`:
/// then the kernel might still write into the storage after it dies. That is detected (the
/// dropped driver leaves a mark) and the process is aborted instead of returning or unwinding.
/// An abort is also what happens if the teardown itself fails (the ring reports an error while
/// operations may be in flight), which a working kernel does not do.
///
/// # Errors
///
/// When the loop cannot be built (`f` is not called then); see [`LoopError`].
pub fn scoped<
    C,
    T,
    R,
    F,
    const CONNS: usize,
    const BUFS: usize,
    const BUF_SIZE: usize,
    const SLAB: usize,
    const TIMERS: usize,
>(
    storage: &mut LoopStorage<C, T, CONNS, BUFS, BUF_SIZE, SLAB, TIMERS>,
    ring: Option<Uring>,
    pool: crate::pool::BufPoolConfig,
    window: u16,
    nodelay: bool,
    quota: u16,
    f: F,
) -> core::result::Result<R, LoopError>
where
    F: for<'s> FnOnce(LoopInit<'s, C, T>) -> R,
{
    /// Aborts unless the driver was dropped after a complete teardown: it runs when `scoped`
    /// returns and when it unwinds.
    struct Check<'c>(&'c Cell<bool>);
    impl Drop for Check<'_> {
        fn drop(&mut self) {
            if !self.0.get() {
                abort_teardown();
            }
        }
    }

    let done = Cell::new(false);
    let r = {
        let parts = storage.split(pool, window).map_err(LoopError::Pool)?;
        // SAFETY: the driver gets `scope`: its drop tears down and sets `done`, and `check`
        // aborts the process unless that happened before `storage` (borrowed for this whole
        // call) can be touched again by anyone.
        // On failure no operation was started (see `Driver::build`).
        let init = unsafe { parts.into_init(ring, nodelay, quota, Some(&done)) }?;
        let check = Check(&done);
        let r = f(init);
        drop(check);
        r
    };
    // Nothing can wake this loop any more (every handle of the storage borrowed `'s`): close
    // its eventfd so that a stack storage does not leak it.
    storage.wake = super::eventfd::WakeFd::new();
    Ok(r)
}

/// Ends the process: called when a scoped loop cannot prove the kernel is done with borrowed
/// storage. A panic that would unwind out of an `extern "C"` function aborts, in `no_std` too.
#[cold]
fn abort_teardown() -> ! {
    extern "C" fn no_unwind() -> ! {
        panic!("ringlet: a scoped loop's driver was leaked or its teardown failed; aborting");
    }
    no_unwind()
}
