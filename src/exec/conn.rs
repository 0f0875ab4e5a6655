//! [`Connection`]: a task's handle to its reactor connection (seed 000's native API), the
//! [`Snapshot`] a read yields, and the per-task state the executor routes events into.

use core::cell::RefCell;
use core::fmt;
use core::future::poll_fn;
use core::task::{Poll, Waker};

use super::ExecCore;
use crate::pool::Lease;
use crate::reactor::{CloseReason, ConnError, ConnId};
use crate::sys::socket::Shutdown;

/// How many leases one [`Snapshot`] (and one connection's unread receive queue) holds. The
/// executor requires the reactor's [`Config::lease_quota`](crate::reactor::Config::lease_quota)
/// to be at most half of it (see [`Connection`], *Receive buffers*).
pub const SNAPSHOT_LEASES: usize = 32;

/// Errors of [`Connection`] operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The peer closed its sending side, and every byte it sent before has been read.
    Eof,
    /// The connection is closed: by the peer (reset), by other code (a callback's
    /// [`Context::close`](crate::reactor::Context::close)), by the reactor stopping, or by
    /// this task ([`Connection::close`]). The reason is the reactor's.
    Closed(CloseReason),
    /// The write slab has no room for the whole write; nothing was written.
    /// [`Connection::flush`] (its bytes leave, room comes back), then write again.
    WouldBlock,
    /// The write is larger than the whole write slab: it can never fit (raise the reactor's
    /// `SLAB`, or write in parts).
    TooLarge,
    /// More receive buffers arrived than the connection can hold unread
    /// ([`SNAPSHOT_LEASES`], after packing their bytes densely): the connection was aborted
    /// rather than lose bytes. Reported after every byte that did fit has been read.
    Overrun,
    /// The connection was used outside its task's poll (the executor polls tasks inside the
    /// reactor's turn; a `Connection` moved elsewhere cannot reach the reactor).
    Detached,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Eof => f.write_str("end of stream: the peer closed its sending side"),
            Error::Closed(r) => write!(f, "connection closed ({r:?})"),
            Error::WouldBlock => f.write_str("write slab full: flush().await and write again"),
            Error::TooLarge => f.write_str("write larger than the write slab (raise SLAB)"),
            Error::Overrun => f.write_str(
                "receive queue overrun: more unread buffers than SNAPSHOT_LEASES; connection aborted",
            ),
            Error::Detached => f.write_str("connection used outside its task's poll"),
        }
    }
}

impl core::error::Error for Error {}

impl Error {
    fn from_conn(e: ConnError) -> Error {
        match e {
            ConnError::WouldBlock => Error::WouldBlock,
            ConnError::TooLarge => Error::TooLarge,
            ConnError::Os(e) => Error::Closed(CloseReason::Error(e)),
            // Stale, or closing (closed by other code; `on_close` comes later).
            _ => Error::Closed(CloseReason::Local),
        }
    }
}

/// A connection's unread receive leases, in arrival order, at most [`SNAPSHOT_LEASES`].
///
/// When it is full, a new lease's bytes are packed into the spare room of the leases it holds
/// (a copy, on this path only), so it holds bytes rather than receives; only when every held
/// buffer is full does it refuse.
///
/// It is a [`Snapshot`] in the making: a read takes it whole ([`Inbox::take`]), or copies out
/// of it in place ([`Inbox::read_into`], keeping a read position in the first lease).
#[repr(C)]
pub(crate) struct Inbox {
    s: Snapshot,
}

impl Inbox {
    pub(crate) const fn new() -> Inbox {
        Inbox { s: Snapshot::new() }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.s.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.s.len()
    }

    /// Unread bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.s.bytes()
    }

    /// Returns every lease to the pool.
    pub(crate) fn clear(&mut self) {
        self.s = Snapshot::new();
    }

    /// Takes every unread byte out, as a snapshot.
    pub(crate) fn take(&mut self) -> Snapshot {
        core::mem::take(&mut self.s)
    }

    /// Copies unread bytes into `dst` ([`Snapshot::read_into`]).
    pub(crate) fn read_into(&mut self, dst: &mut [u8]) -> usize {
        self.s.read_into(dst)
    }

    /// Appends `lease` (an empty one is dropped). Hands it back, untouched in total content
    /// (its bytes may have moved to its front, some into the held leases), when there is no
    /// room even after packing: nothing is lost either way.
    pub(crate) fn push(&mut self, mut lease: Lease<'static>) -> Result<(), Lease<'static>> {
        if lease.is_empty() {
            return Ok(());
        }
        let q = &mut self.s.leases;
        if !q.is_full() {
            let _ = q.push_back(lease);
            return Ok(());
        }
        if let Some(back) = q.back_mut() {
            absorb(back, &mut lease);
        }
        if lease.is_empty() {
            return Ok(());
        }
        self.compact();
        self.s.leases.push_back(lease)
    }

    /// Moves bytes forward so every lease but the last is full, and returns the leases that
    /// became empty to the pool. Order is kept. Bytes only ever move to the end of an earlier
    /// lease, so the read position in the first lease stays valid.
    fn compact(&mut self) {
        let q = &mut self.s.leases;
        let s = q.make_contiguous();
        let mut w = 0;
        for r in 1..s.len() {
            while w < r {
                let (a, b) = s.split_at_mut(r);
                let (Some(dst), Some(src)) = (&mut a[w], &mut b[0]) else {
                    break; // the first `len` slots are all taken
                };
                absorb(dst, src);
                if src.is_empty() {
                    break;
                }
                w += 1;
            }
        }
        for _ in 0..q.len() {
            if let Some(l) = q.pop_front()
                && !l.is_empty()
            {
                let _ = q.push_back(l);
            }
        }
    }
}

/// Moves as many bytes as fit from the front of `src` to the end of `dst`; `src` keeps the
/// rest, moved to its front.
fn absorb(dst: &mut Lease<'static>, src: &mut Lease<'static>) {
    let n = (dst.capacity() - dst.len()).min(src.len());
    if n == 0 {
        return;
    }
    let (dl, sl) = (dst.len(), src.len());
    dst.buf_mut()[dl..dl + n].copy_from_slice(&src.as_slice()[..n]);
    // Within the buffer: cannot fail.
    let _ = dst.set_len(dl + n);
    src.buf_mut().copy_within(n..sl, 0);
    let _ = src.set_len(sl - n);
}

/// What the executor knows about the connection a task owns: unread leases, end of stream,
/// close, the futures waiting, and how far sending got. Loop-thread only.
///
/// Laid out for the cache (`repr(C)`, in an [`IoCell`] that starts a cache line): the
/// `RefCell`'s flag and everything a receive, a read or a write of a connection that is read
/// as fast as it receives looks at fill exactly one 64-byte line: the connection, the end
/// flags, the read waker, the lease ring's indices and read position, and its first slot
/// (see [`Snapshot`]'s ring). The rest (why it closed, the other slots, the flush state, used
/// only while a `flush().await` waits) comes after. With many connections this state is cold
/// each time a connection's turn comes round again, so every line saved is a cache miss saved
/// per receive.
#[repr(C)]
pub(crate) struct Io {
    /// The connection, while a `Connection` for it exists (`None` once dropped or closed by
    /// the task; events for it are then ignored).
    pub(crate) conn: Option<ConnId>,
    pub(crate) eof: bool,
    pub(crate) overrun: bool,
    /// The task finished while its `Connection` lives on elsewhere (moved out of the future):
    /// the slot stays taken until that `Connection` is dropped.
    pub(crate) held: bool,
    /// The connection closed: [`Io::closed`] says why (in `close_reason`, off the first line).
    is_closed: bool,
    pub(crate) read_waker: Option<Waker>,
    pub(crate) inbox: Inbox,
    close_reason: CloseReason,
    pub(crate) flush_waker: Option<Waker>,
    /// The position a pending flush waits for.
    pub(crate) flush_target: Option<u64>,
    /// Bytes sent on the connection ([`Context::sent`](crate::reactor::Context::sent)), as of
    /// the last send completion that found a flush waiting (the executor does not look at the
    /// others).
    pub(crate) sent: u64,
    /// The connection, closed by its `Connection` outside a task's poll (no turn's `Context`
    /// then): the executor closes it in the reactor when it next polls the slot.
    pub(crate) pending_close: Option<ConnId>,
}

/// An [`Io`] in its own cache lines: the executor's per-task connection state, one per task
/// slot in the [`TaskStorage`](super::TaskStorage).
#[repr(C, align(64))]
pub(crate) struct IoCell(RefCell<Io>);

impl IoCell {
    pub(crate) const fn new() -> IoCell {
        IoCell(RefCell::new(Io::new()))
    }
}

impl core::ops::Deref for IoCell {
    type Target = RefCell<Io>;

    fn deref(&self) -> &RefCell<Io> {
        &self.0
    }
}

impl Io {
    pub(crate) const fn new() -> Io {
        Io {
            conn: None,
            inbox: Inbox::new(),
            eof: false,
            is_closed: false,
            close_reason: CloseReason::Local,
            overrun: false,
            read_waker: None,
            flush_waker: None,
            flush_target: None,
            sent: 0,
            pending_close: None,
            held: false,
        }
    }

    /// How the connection closed, if it has.
    pub(crate) fn closed(&self) -> Option<CloseReason> {
        // The flag first: the reason's line is touched only once it is closed.
        if self.is_closed {
            Some(self.close_reason)
        } else {
            None
        }
    }

    /// The connection closed, for `reason`.
    pub(crate) fn set_closed(&mut self, reason: CloseReason) {
        self.is_closed = true;
        self.close_reason = reason;
    }

    /// Ready for a new task on `conn`.
    pub(crate) fn reset(&mut self, conn: ConnId, sent: u64) {
        *self = Io::new();
        self.conn = Some(conn);
        self.sent = sent;
    }

    /// Forget the connection: its leases go back, its wakers are dropped.
    fn detach(&mut self) {
        self.conn = None;
        self.inbox.clear();
        self.read_waker = None;
        self.flush_waker = None;
        self.flush_target = None;
    }
}

/// What [`Connection::drain_leases`] found.
pub(crate) struct Drained {
    /// A lease was handed back: it and the ones after it are still unread.
    pub(crate) left: bool,
    /// How the stream ended, if it has: [`Error::Overrun`], [`Error::Eof`] or
    /// [`Error::Closed`].
    pub(crate) end: Option<Error>,
}

/// Registers `waker` in `slot`, unless the one there already wakes the same task.
fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// One receive snapshot: the leases the reactor had received for the connection when the
/// task read, in order, with a read position in the first one.
///
/// Dropping a lease returns its buffer to the pool (and counts down the connection's lease
/// quota); [`Snapshot::read_into`] does that for each lease as soon as it has copied all of
/// it. Never empty when a read returns it.
#[repr(C)]
pub struct Snapshot {
    leases: Leases,
}

/// Leases in arrival order: a ring of [`SNAPSHOT_LEASES`] slots that starts over at slot 0
/// whenever it empties.
///
/// Starting over matters for the cache, not for correctness: a connection whose every receive
/// is read before the next arrives (an echo, a request/response protocol) keeps using slot 0,
/// on the same cache line as the indices and the rest of the connection's hot state, instead
/// of walking through all the slots' lines.
///
/// It also keeps the [`Snapshot`]'s read position in the front lease, in the word its indices
/// share: indices, position and slot 0 fit 24 bytes.
#[repr(C)]
struct Leases {
    head: u8,
    len: u8,
    /// Bytes of the front lease already consumed.
    offset: u32,
    slots: [Option<Lease<'static>>; SNAPSHOT_LEASES],
}

// The indices are `u8`.
static_assertions::const_assert!(SNAPSHOT_LEASES <= u8::MAX as usize);

impl Leases {
    const fn new() -> Leases {
        Leases {
            head: 0,
            len: 0,
            offset: 0,
            slots: [const { None }; SNAPSHOT_LEASES],
        }
    }

    fn len(&self) -> usize {
        usize::from(self.len)
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn is_full(&self) -> bool {
        self.len() == SNAPSHOT_LEASES
    }

    /// The slot of the `i`-th lease.
    fn at(&self, i: usize) -> usize {
        (usize::from(self.head) + i) % SNAPSHOT_LEASES
    }

    fn front(&self) -> Option<&Lease<'static>> {
        if self.is_empty() {
            return None;
        }
        self.slots[usize::from(self.head)].as_ref()
    }

    fn back_mut(&mut self) -> Option<&mut Lease<'static>> {
        let last = self.len().checked_sub(1)?;
        let i = self.at(last);
        self.slots[i].as_mut()
    }

    /// Appends `lease`, or hands it back when every slot is taken.
    fn push_back(&mut self, lease: Lease<'static>) -> Result<(), Lease<'static>> {
        if self.is_full() {
            return Err(lease);
        }
        let i = self.at(self.len());
        self.slots[i] = Some(lease);
        self.len += 1;
        Ok(())
    }

    fn pop_front(&mut self) -> Option<Lease<'static>> {
        if self.is_empty() {
            return None;
        }
        let l = self.slots[usize::from(self.head)].take();
        self.len -= 1;
        self.head = if self.len == 0 {
            0 // start over at slot 0 (see the type's docs)
        } else {
            ((usize::from(self.head) + 1) % SNAPSHOT_LEASES) as u8
        };
        l
    }

    fn iter(&self) -> impl Iterator<Item = &Lease<'static>> + '_ {
        (0..self.len()).filter_map(move |i| self.slots[self.at(i)].as_ref())
    }

    /// Rotates the leases to the front of the slots and returns them, in order.
    fn make_contiguous(&mut self) -> &mut [Option<Lease<'static>>] {
        self.slots.rotate_left(usize::from(self.head));
        self.head = 0;
        &mut self.slots[..usize::from(self.len)]
    }
}

impl Snapshot {
    /// An empty snapshot (what is left of one that was read completely).
    pub const fn new() -> Snapshot {
        Snapshot {
            leases: Leases::new(),
        }
    }

    /// Leases held.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Unconsumed bytes.
    pub fn bytes(&self) -> usize {
        self.leases.iter().map(Lease::len).sum::<usize>() - self.leases.offset as usize
    }

    /// The unconsumed bytes, one slice per lease.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let offset = self.leases.offset as usize;
        self.leases.iter().enumerate().map(move |(i, l)| {
            if i == 0 {
                &l.as_slice()[offset..]
            } else {
                l.as_slice()
            }
        })
    }

    /// Copies unconsumed bytes into `dst`, as many as fit (the one copy on this path), and
    /// returns how many. Each lease whose bytes are all copied goes back to the pool at once;
    /// the rest stays for the next call.
    pub fn read_into(&mut self, dst: &mut [u8]) -> usize {
        let mut n = 0;
        while n < dst.len() {
            let Some(front) = self.leases.front() else {
                break;
            };
            let src = &front.as_slice()[self.leases.offset as usize..];
            let k = src.len().min(dst.len() - n);
            dst[n..n + k].copy_from_slice(&src[..k]);
            n += k;
            if k == src.len() {
                // Consumed: back to the pool now.
                self.leases.pop_front();
                self.leases.offset = 0;
            } else {
                // Below the lease's length, a u32.
                self.leases.offset += k as u32;
            }
        }
        n
    }

    /// Takes the first lease out (with whatever of it was not consumed yet: its bytes from the
    /// read position on are still all there, `skip` says how many to skip).
    pub fn pop_front(&mut self) -> Option<(Lease<'static>, usize)> {
        let l = self.leases.pop_front()?;
        Some((l, core::mem::take(&mut self.leases.offset) as usize))
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot::new()
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("leases", &self.len())
            .field("bytes", &self.bytes())
            .finish()
    }
}

/// A task's connection: seed 000's native API over a reactor connection, for code running
/// in an [`Executor`](super::Executor) task.
///
/// - [`Connection::read`]`.await` yields the next receive [`Snapshot`]: every lease the
///   reactor received for the connection since the last read, gathered (no copy), or
///   [`Error::Eof`] once the peer closed its side and everything was read, or
///   [`Error::Closed`] when the connection closed.
/// - [`Connection::write`] copies into the connection's write slab, all or nothing, without
///   sending; a full slab is [`Error::WouldBlock`] and nothing is written.
/// - [`Connection::flush`]`.await` sends what is staged and completes when every byte staged
///   *before the call* has been sent (bytes staged later, by this task or by other code
///   writing to the connection, do not keep it waiting). [`Connection::start_flush`] sends
///   the same without waiting.
/// - Dropping the connection closes it (gracefully: staged bytes are still sent), once;
///   [`Connection::close`] does it earlier.
///
/// A connection may be moved from its task to another (a channel of connections between
/// tasks): its events keep arriving wherever it is polled, and if the task it was spawned
/// with finishes first, that task's slot stays taken until the connection is dropped.
///
/// Its methods take `&self`, so a task can read and flush at once (one pending read and one
/// pending flush at a time: each keeps one waker). It holds a key (the [`ConnId`]) and the
/// executor's task state, never a borrow of the reactor: each operation reaches the reactor through the context of the turn that polls
/// the task. Not `Send`: it belongs to the loop's thread.
///
/// # Receive buffers
///
/// The leases a read returns count against the connection's lease quota until they are
/// dropped ([`Config::lease_quota`](crate::reactor::Config::lease_quota)): at the quota the
/// reactor pauses the connection's receive, and resumes it when they come back. Unread leases
/// wait in the connection's queue of [`SNAPSHOT_LEASES`]; receives already under way when
/// the connection paused can still arrive, so the executor requires the quota to be at most
/// half of that (keep a per-connection quota raised with
/// [`Context::set_lease_quota`](crate::reactor::Context::set_lease_quota) within it too), and
/// packs bytes densely if the queue fills anyway. Should even that not fit,
/// the connection is aborted and, after the bytes that fit, the read reports
/// [`Error::Overrun`].
///
/// # Example
///
/// ```no_run
/// use ringlet::exec::{Connection, Error};
///
/// async fn echo(conn: Connection) {
///     loop {
///         let snapshot = match conn.read().await {
///             Ok(s) => s,
///             Err(_) => return, // EOF or closed: dropping `conn` closes it
///         };
///         for bytes in snapshot.iter() {
///             if conn.write(bytes).is_err() {
///                 return;
///             }
///         }
///         drop(snapshot); // the buffers go back before we wait
///         if conn.flush().await.is_err() {
///             return;
///         }
///     }
/// }
/// ```
pub struct Connection {
    core: &'static ExecCore,
    task: usize,
    id: ConnId,
}

impl Connection {
    pub(crate) fn new(core: &'static ExecCore, task: usize, id: ConnId) -> Connection {
        Connection { core, task, id }
    }

    fn io(&self) -> &'static IoCell {
        &self.core.io[self.task]
    }

    /// The reactor's id of this connection.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// This connection read through a pipe reader whose segments are its receive leases
    /// (zero copies): `storage` holds the segments, the carry buffer and the lease quota, and
    /// lives where the caller puts it (typically a local of the task, so in the task's slot).
    /// See [`TaskPipeReader`](crate::pipe::TaskPipeReader).
    ///
    /// Give a new reader ([`ConnectionPipeReader::new`]) or a [`reset`] one; a reader attached
    /// before to this same connection goes on where it stopped (the handle can be made anew
    /// at each use). Do not mix with [`Connection::read`] or [`Connection::read_some`]: bytes
    /// taken by one are not seen by the other.
    ///
    /// [`ConnectionPipeReader::new`]: crate::pipe::ConnectionPipeReader::new
    /// [`reset`]: crate::pipe::ConnectionPipeReader::reset
    pub fn pipe_reader<'a, const SEGS: usize, const CARRY: usize>(
        &'a self,
        storage: &'a mut crate::pipe::ConnectionPipeReader<'static, SEGS, CARRY>,
    ) -> crate::pipe::TaskPipeReader<'a, SEGS, CARRY> {
        crate::pipe::TaskPipeReader::new(self, storage)
    }

    /// The next receive snapshot: every lease received since the last read (waiting for one
    /// if there is none), or the end.
    ///
    /// # Errors
    ///
    /// [`Error::Eof`] after the peer closed its sending side and every byte was read;
    /// [`Error::Closed`] when the connection closed (closing it from a callback, a reset or
    /// the reactor stopping fails a pending read); [`Error::Overrun`] (see the type's docs).
    /// Bytes received before any of these are returned first.
    pub async fn read(&self) -> Result<Snapshot, Error> {
        poll_fn(|cx| self.poll_read(cx)).await
    }

    /// [`Connection::read`] as a poll function.
    pub fn poll_read(&self, cx: &mut core::task::Context<'_>) -> Poll<Result<Snapshot, Error>> {
        let mut io = self.io().borrow_mut();
        if io.conn != Some(self.id) {
            return Poll::Ready(Err(Error::Closed(CloseReason::Local)));
        }
        if !io.inbox.is_empty() {
            io.read_waker = None;
            return Poll::Ready(Ok(io.inbox.take()));
        }
        Self::poll_end(&mut io, cx).map(Err)
    }

    /// Copies received bytes into `buf` (the one copy; waiting for some if none are there)
    /// and returns how many: at least one for a non-empty `buf`, `Ok(0)` at once for an empty
    /// one. Bytes that do not fit stay for the next read; each receive buffer goes back to the
    /// pool as soon as its last byte is copied. No snapshot is made: this is the
    /// [`ReadStream`](crate::stream::ReadStream) shape of [`Connection::read`].
    ///
    /// # Errors
    ///
    /// As [`Connection::read`]: the end comes after every received byte was read.
    pub async fn read_some(&self, buf: &mut [u8]) -> Result<usize, Error> {
        poll_fn(|cx| self.poll_read_some(cx, buf)).await
    }

    /// [`Connection::read_some`] as a poll function.
    pub fn poll_read_some(
        &self,
        cx: &mut core::task::Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<usize, Error>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut io = self.io().borrow_mut();
        if io.conn != Some(self.id) {
            return Poll::Ready(Err(Error::Closed(CloseReason::Local)));
        }
        if !io.inbox.is_empty() {
            io.read_waker = None;
            return Poll::Ready(Ok(io.inbox.read_into(buf)));
        }
        Self::poll_end(&mut io, cx).map(Err)
    }

    /// Copies bytes already received into `buf`, without waiting, and returns how many (0
    /// when none are there, or the connection is closed).
    pub fn read_buffered(&self, buf: &mut [u8]) -> usize {
        let mut io = self.io().borrow_mut();
        if io.conn != Some(self.id) {
            return 0;
        }
        io.inbox.read_into(buf)
    }

    /// Unread bytes waiting in the connection (received, not yet returned by a read).
    pub fn buffered(&self) -> usize {
        let io = self.io().borrow();
        // Closed: its task slot may serve another connection by now.
        if io.conn != Some(self.id) {
            return 0;
        }
        io.inbox.bytes()
    }

    /// Hands each unread lease, in arrival order, to `take` (a lease partly copied out by
    /// [`Connection::read_some`] first has its unread bytes moved to its front); a lease `take`
    /// hands back stays unread, with every one after it. Returns how the stream ends, if it
    /// has (overrun, end of stream, closed: as [`Connection::read`] reports them), without
    /// waiting. The pipe reader's intake ([`crate::pipe::TaskPipeReader`]).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when this task closed the connection (nothing is handed out).
    pub(crate) fn drain_leases(
        &self,
        mut take: impl FnMut(Lease<'static>) -> Result<(), Lease<'static>>,
    ) -> Result<Drained, Error> {
        let mut io = self.io().borrow_mut();
        if io.conn != Some(self.id) {
            return Err(Error::Closed(CloseReason::Local));
        }
        let mut left = false;
        if !io.inbox.is_empty() {
            io.read_waker = None;
            let mut snapshot = io.inbox.take();
            while let Some((mut lease, skip)) = snapshot.pop_front() {
                if skip > 0 {
                    let len = lease.len();
                    lease.as_mut_slice().copy_within(skip..len, 0);
                    // Shorter than before: within the buffer.
                    let _ = lease.set_len(len - skip);
                }
                if left {
                    // They came out of the inbox, in order, into an empty one: they fit.
                    let _ = io.inbox.push(lease);
                } else if let Err(lease) = take(lease) {
                    left = true;
                    let _ = io.inbox.push(lease);
                }
            }
        }
        let end = if io.overrun {
            Some(Error::Overrun)
        } else if io.eof {
            Some(Error::Eof)
        } else {
            io.closed().map(Error::Closed)
        };
        Ok(Drained { left, end })
    }

    /// Registers `waker` to be woken by the next receive, the end of stream or the close
    /// (the waker [`Connection::read`] registers).
    pub(crate) fn register_read(&self, waker: &Waker) {
        register(&mut self.io().borrow_mut().read_waker, waker);
    }

    /// Runs `f` with the reactor's context of the poll under way (`None` outside it: see
    /// [`Error::Detached`]).
    pub(crate) fn with_context<R>(
        &self,
        f: impl FnOnce(&mut crate::reactor::Context<'_, 'static>, ConnId) -> R,
    ) -> Option<R> {
        let id = self.id;
        self.core.scope.with(|cx| f(cx, id))
    }

    /// Aborts the connection because its unread bytes cannot be held: reads report
    /// [`Error::Overrun`] after the bytes that could.
    pub(crate) fn overrun(&self) {
        let mut io = self.io().borrow_mut();
        if io.conn != Some(self.id) || io.overrun {
            return;
        }
        io.overrun = true;
        drop(io);
        let _ = self.with_context(|cx, id| cx.abort(id));
    }

    /// Nothing to read: the end, or wait.
    fn poll_end(io: &mut Io, cx: &mut core::task::Context<'_>) -> Poll<Error> {
        if io.overrun {
            return Poll::Ready(Error::Overrun);
        }
        if io.eof {
            return Poll::Ready(Error::Eof);
        }
        if let Some(reason) = io.closed() {
            return Poll::Ready(Error::Closed(reason));
        }
        register(&mut io.read_waker, cx.waker());
        Poll::Pending
    }

    /// Open for writing: not closed by anyone, still ours.
    fn check_open(&self) -> Result<(), Error> {
        let io = self.io().borrow();
        if io.conn != Some(self.id) {
            return Err(Error::Closed(CloseReason::Local));
        }
        match io.closed() {
            Some(reason) => Err(Error::Closed(reason)),
            None => Ok(()),
        }
    }

    /// Copies `bytes` into the connection's write slab, all or nothing, without sending
    /// (that is [`Connection::flush`]).
    ///
    /// # Errors
    ///
    /// [`Error::WouldBlock`] when the slab has no room for all of it (nothing written: flush
    /// and write again), [`Error::TooLarge`] when it is larger than the slab,
    /// [`Error::Closed`], [`Error::Detached`].
    pub fn write(&self, bytes: &[u8]) -> Result<(), Error> {
        self.check_open()?;
        if bytes.is_empty() {
            return Ok(());
        }
        let id = self.id;
        self.core
            .scope
            .with(|cx| cx.write(id, bytes))
            .ok_or(Error::Detached)?
            .map_err(Error::from_conn)
    }

    /// Copies as much of `bytes` as the write slab has room for, and returns how many (at
    /// least one for a non-empty `bytes`).
    ///
    /// # Errors
    ///
    /// [`Error::WouldBlock`] when the slab is full (nothing written), [`Error::Closed`],
    /// [`Error::Detached`].
    pub fn write_some(&self, bytes: &[u8]) -> Result<usize, Error> {
        self.check_open()?;
        if bytes.is_empty() {
            return Ok(0);
        }
        let id = self.id;
        self.core
            .scope
            .with(|cx| {
                let n = cx.write_capacity(id).min(bytes.len());
                if n == 0 {
                    // No room, or closing (closed by other code; `on_close` comes later):
                    // only the first is `WouldBlock`, as for `write`.
                    if !cx.is_open(id) {
                        return Err(Error::from_conn(ConnError::Stale));
                    }
                    return Err(Error::WouldBlock);
                }
                cx.write(id, &bytes[..n]).map_err(Error::from_conn)?;
                Ok(n)
            })
            .ok_or(Error::Detached)?
    }

    /// [`Connection::write_some`] that waits for room: when the slab is full it flushes and
    /// waits for the staged bytes to leave, then writes. `wait` carries the position a flush
    /// waits for from one poll to the next (start with `None`). The poll function of the
    /// stream write ([`ConnectionWriteHalf`](crate::stream::ConnectionWriteHalf)), kept small
    /// because its state lives in the task's.
    pub(crate) fn poll_write_some(
        &self,
        cx: &mut core::task::Context<'_>,
        bytes: &[u8],
        wait: &mut Option<u64>,
    ) -> Poll<Result<usize, Error>> {
        loop {
            if let Some(target) = *wait {
                let flushed = self.poll_flushed(cx, target);
                if flushed.is_ready() {
                    *wait = None;
                }
                match flushed {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                }
            }
            match self.write_some(bytes) {
                // Full: send what is staged; once it is out there is room.
                Err(Error::WouldBlock) => match self.submit_flush() {
                    Ok(Some(target)) => *wait = Some(target),
                    // Full with nothing staged: a slab that cannot hold a byte.
                    Ok(None) => return Poll::Ready(Err(Error::TooLarge)),
                    Err(e) => return Poll::Ready(Err(e)),
                },
                r => return Poll::Ready(r),
            }
        }
    }

    /// Free bytes in the write slab (0 when closed or detached).
    pub fn write_capacity(&self) -> usize {
        if self.check_open().is_err() {
            return 0;
        }
        let id = self.id;
        self.core
            .scope
            .with(|cx| cx.write_capacity(id))
            .unwrap_or(0)
    }

    /// Bytes sent on the connection so far (as of the last completed send). Exact inside the
    /// poll of a task (where connections are used); elsewhere the last count the executor
    /// noted. 0 once the connection is closed and its task slot serves another connection
    /// (the noted count went with the slot).
    pub fn sent(&self) -> u64 {
        let id = self.id;
        let noted = {
            let io = self.io().borrow();
            match io.conn {
                Some(c) if c != id => return 0,
                _ => io.sent,
            }
        };
        // A closed connection's count is gone from the reactor (0): keep the noted one.
        self.core
            .scope
            .with(|cx| cx.sent(id))
            .map_or(noted, |live| live.max(noted))
    }

    /// Bytes staged in the write slab and not yet sent.
    pub fn staged(&self) -> usize {
        let id = self.id;
        self.core.scope.with(|cx| cx.staged(id)).unwrap_or(0)
    }

    /// Sends what is staged and waits until every byte staged before this call has been sent
    /// (later writes do not keep it waiting). Completes at once when nothing is staged. The
    /// send goes out in the turn that polls this (one submission with every other flush).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the connection closes before those bytes are sent,
    /// [`Error::Detached`].
    pub async fn flush(&self) -> Result<(), Error> {
        let Some(target) = self.submit_flush()? else {
            return Ok(());
        };
        poll_fn(|cx| self.poll_flushed(cx, target)).await
    }

    /// Sends what is staged, without waiting for it: the first half of [`Connection::flush`].
    /// The send goes out in the turn that polls this (one submission with every other flush),
    /// and the reactor sends every staged byte without being asked again (short sends go on
    /// where they stopped); a `flush().await` later waits for these bytes too. A failure of
    /// that send closes the connection: the next operation reports [`Error::Closed`] (a
    /// pending read fails with it).
    ///
    /// For a task that goes on reading while its reply leaves (as
    /// [`relay`](crate::stream::relay) does): waiting for every send to complete costs a wake
    /// and a poll of the task per send.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Detached`].
    pub fn start_flush(&self) -> Result<(), Error> {
        self.submit_flush().map(|_| ())
    }

    /// Submits the staged bytes; returns the position in the stream [`Connection::flush`] waits
    /// for (`None`: nothing was staged).
    fn submit_flush(&self) -> Result<Option<u64>, Error> {
        self.check_open()?;
        let id = self.id;
        self.core
            .scope
            .with(|cx| {
                let staged = cx.staged(id);
                if staged == 0 {
                    return Ok(None);
                }
                cx.flush(id).map_err(Error::from_conn)?;
                Ok(Some(cx.sent(id) + staged as u64))
            })
            .ok_or(Error::Detached)?
    }

    fn poll_flushed(
        &self,
        cx: &mut core::task::Context<'_>,
        target: u64,
    ) -> Poll<Result<(), Error>> {
        let id = self.id;
        // The executor notes the count only for sends that find a flush waiting (see
        // `Executor::on_sent`): take it from the reactor first. The connection's count is
        // gone once it closes (0): keep the noted one then.
        let live = self.core.scope.with(|cx| cx.sent(id));
        let mut io = self.io().borrow_mut();
        if io.conn != Some(id) {
            return Poll::Ready(Err(Error::Closed(CloseReason::Local)));
        }
        if let Some(live) = live {
            io.sent = io.sent.max(live);
        }
        if io.sent >= target {
            io.flush_target = None;
            io.flush_waker = None;
            return Poll::Ready(Ok(()));
        }
        if let Some(reason) = io.closed() {
            return Poll::Ready(Err(Error::Closed(reason)));
        }
        io.flush_target = Some(target);
        register(&mut io.flush_waker, cx.waker());
        drop(io);
        // Ask the executor to look at this connection's send completions until the target
        // is reached. Outside a poll (the future moved out of its task) there is no reactor
        // to ask, and nothing would wake it: fail instead of hanging.
        // (A connection already closed has no tag to set: its close wakes the flush.)
        if self
            .core
            .scope
            .with(|cx| super::watch_sends(cx, id))
            .is_none()
        {
            let mut io = self.io().borrow_mut();
            io.flush_target = None;
            io.flush_waker = None;
            return Poll::Ready(Err(Error::Detached));
        }
        Poll::Pending
    }

    /// Shuts down the sending side (the peer reads the end of the stream after every byte
    /// sent before); flush first, or staged bytes are cut off. Reading goes on.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::Detached`].
    pub fn shutdown_write(&self) -> Result<(), Error> {
        self.check_open()?;
        let id = self.id;
        self.core
            .scope
            .with(|cx| cx.shutdown(id, Shutdown::Write))
            .ok_or(Error::Detached)?
            .map_err(Error::from_conn)
    }

    /// Closes the connection gracefully now (staged bytes are still sent, for at most the
    /// reactor's `close_linger`); later operations fail with [`Error::Closed`]. Unread leases
    /// go back to the pool. Closing twice, or dropping afterwards, does nothing more.
    ///
    /// Outside a task's poll (a `Connection` kept in state that a plain [`Handler`] callback
    /// drops, say) the reactor connection closes when the executor next polls the task's
    /// slot: in this turn's poll phase, or the next turn's.
    ///
    /// [`Handler`]: crate::reactor::Handler
    pub fn close(&mut self) {
        let mut io = self.io().borrow_mut();
        if io.conn != Some(self.id) {
            return;
        }
        let open = io.closed().is_none();
        io.detach();
        let held = io.held;
        drop(io);
        let id = self.id;
        let closed = !open
            || self
                .core
                .scope
                .with(|cx| {
                    let _ = cx.set_tag(id, 0);
                    cx.close(id);
                })
                .is_some();
        if !closed {
            self.io().borrow_mut().pending_close = Some(id);
        }
        if held || !closed {
            // The executor frees the slot when it next polls it (the task that owned this
            // connection is done), or closes the connection there.
            self.core.sched.wake(self.task);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("task", &self.task)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::pool::{BufPool, BufPoolConfig, BufPoolStorage, RecvTier, leak_zeroed};
    use std::vec::Vec;

    fn pool() -> BufPool<'static> {
        let storage = leak_zeroed::<BufPoolStorage<128, 8>>();
        BufPool::new(
            storage,
            BufPoolConfig {
                recv_tier: RecvTier::FreeList,
                user_reserve: 0,
            },
        )
        .unwrap()
    }

    fn lease(pool: BufPool<'static>, bytes: &[u8]) -> Lease<'static> {
        let mut l = pool.try_take_recv().unwrap();
        l.buf_mut()[..bytes.len()].copy_from_slice(bytes);
        l.set_len(bytes.len()).unwrap();
        l
    }

    fn contents(inbox: &mut Inbox) -> Vec<u8> {
        let mut s = inbox.take();
        let mut out = std::vec![0u8; s.bytes()];
        assert_eq!(s.read_into(&mut out), out.len());
        assert!(s.is_empty());
        out
    }

    #[test]
    fn inbox_packs_when_full_and_refuses_only_when_every_byte_slot_is_taken() {
        let pool = pool();
        let mut inbox = Inbox::new();
        let mut expect = Vec::new();
        // SNAPSHOT_LEASES one-byte receives fill the queue ...
        for i in 0..SNAPSHOT_LEASES {
            inbox.push(lease(pool, &[i as u8])).unwrap();
            expect.push(i as u8);
        }
        assert_eq!(inbox.len(), SNAPSHOT_LEASES);
        assert_eq!(pool.leased(), SNAPSHOT_LEASES);
        // ... then a full-buffer receive is packed: first into the last lease's spare room,
        // then the queue is compacted, freeing leases.
        let big = [100, 101, 102, 103, 104, 105, 106, 107];
        inbox.push(lease(pool, &big)).unwrap();
        expect.extend_from_slice(&big);
        assert!(inbox.len() < SNAPSHOT_LEASES, "packed: {}", inbox.len());
        assert_eq!(pool.leased(), inbox.len(), "emptied leases went back");
        // Fill every byte of every buffer: 32 leases of 8 bytes.
        let mut n = 0u8;
        loop {
            let l = lease(pool, &[200 + (n % 50); 8]);
            match inbox.push(l) {
                Ok(()) => {
                    expect.extend_from_slice(&[200 + (n % 50); 8]);
                    n += 1;
                }
                Err(back) => {
                    // Handed back with nothing lost: its bytes (some maybe packed into the
                    // queue's last lease) and the queue's add up to everything pushed.
                    let packed = expect.len() + 8 - back.len();
                    expect.extend_from_slice(&[200 + (n % 50); 8][..8 - back.len()]);
                    assert_eq!(packed, expect.len());
                    assert_eq!(inbox.len(), SNAPSHOT_LEASES);
                    break;
                }
            }
        }
        assert_eq!(expect.len(), SNAPSHOT_LEASES * 8, "every byte slot used");
        assert_eq!(contents(&mut inbox), expect);
        assert_eq!(pool.leased(), 0);
    }

    #[test]
    fn inbox_read_in_place_then_packing_keeps_the_read_position() {
        let pool = pool();
        let mut inbox = Inbox::new();
        for i in 0..SNAPSHOT_LEASES {
            inbox.push(lease(pool, &[i as u8, i as u8, 0xAA])).unwrap();
        }
        // Read 4 bytes in place: the first lease goes back, the second is half read.
        let mut buf = [0u8; 4];
        assert_eq!(inbox.read_into(&mut buf), 4);
        assert_eq!(buf, [0, 0, 0xAA, 1]);
        assert_eq!(inbox.len(), SNAPSHOT_LEASES - 1);
        assert_eq!(inbox.bytes(), SNAPSHOT_LEASES * 3 - 4);
        // Fill the queue again, then overflow it: packing moves bytes behind the position.
        inbox.push(lease(pool, &[0xBB; 8])).unwrap();
        inbox.push(lease(pool, &[0xCC; 8])).unwrap();
        assert!(inbox.len() < SNAPSHOT_LEASES);
        let mut expect = std::vec![1, 0xAA];
        for i in 2..SNAPSHOT_LEASES {
            expect.extend_from_slice(&[i as u8, i as u8, 0xAA]);
        }
        expect.extend_from_slice(&[0xBB; 8]);
        expect.extend_from_slice(&[0xCC; 8]);
        assert_eq!(contents(&mut inbox), expect);
        assert_eq!(pool.leased(), 0);
    }

    #[test]
    fn the_lease_ring_starts_over_at_slot_0_whenever_it_empties() {
        let pool = pool();
        let mut inbox = Inbox::new();
        for round in 0..3u8 {
            // Receive, read it all: the next receive lands in slot 0 again.
            inbox.push(lease(pool, &[round; 3])).unwrap();
            inbox.push(lease(pool, &[round; 2])).unwrap();
            assert_eq!(inbox.s.leases.head, 0, "round {round}");
            let mut buf = [0u8; 4];
            assert_eq!(inbox.read_into(&mut buf), 4);
            assert_eq!(inbox.s.leases.head, 1, "one lease left, in slot 1");
            assert_eq!(inbox.read_into(&mut buf), 1);
            assert!(inbox.is_empty());
            assert_eq!(inbox.s.leases.head, 0, "emptied: back to slot 0");
            assert!(inbox.s.leases.slots.iter().all(Option::is_none));
        }
        // Wrapping around keeps the order.
        let mut expect = Vec::new();
        for i in 0..SNAPSHOT_LEASES as u8 {
            inbox.push(lease(pool, &[i])).unwrap();
            expect.push(i);
        }
        let mut buf = [0u8; 5];
        assert_eq!(inbox.read_into(&mut buf), 5);
        for i in 0..5u8 {
            inbox.push(lease(pool, &[100 + i])).unwrap();
            expect.push(100 + i);
        }
        assert_eq!(inbox.len(), SNAPSHOT_LEASES);
        assert_eq!(&contents(&mut inbox)[..], &expect[5..]);
        assert_eq!(pool.leased(), 0);
    }

    #[test]
    fn the_state_every_receive_and_read_touches_fills_one_cache_line() {
        let cell = IoCell::new();
        let base = (&cell as *const IoCell).addr();
        assert_eq!(base % 64, 0);
        assert_eq!(size_of::<IoCell>() % 64, 0, "cells do not straddle lines");
        let io = cell.borrow();
        let io_start = (&*io as *const Io).addr() - base;
        assert!(io_start <= 8, "the RefCell's flag comes first");
        let leases = &io.inbox.s.leases;
        let end = |p: *const u8, len: usize| p.addr() + len - base;
        for (name, last) in [
            (
                "conn",
                end((&raw const io.conn).cast(), size_of::<Option<ConnId>>()),
            ),
            ("eof", end((&raw const io.eof).cast(), 1)),
            ("overrun", end((&raw const io.overrun).cast(), 1)),
            ("is_closed", end((&raw const io.is_closed).cast(), 1)),
            (
                "read_waker",
                end(
                    (&raw const io.read_waker).cast(),
                    size_of::<Option<Waker>>(),
                ),
            ),
            ("head", end((&raw const leases.head).cast(), 1)),
            ("len", end((&raw const leases.len).cast(), 1)),
            ("offset", end((&raw const leases.offset).cast(), 4)),
            (
                "slot 0",
                end(
                    (&raw const leases.slots[0]).cast(),
                    size_of::<Option<Lease<'static>>>(),
                ),
            ),
        ] {
            assert!(last <= 64, "{name} ends at {last}, past the first line");
        }
    }

    #[test]
    fn snapshot_read_into_small_slices_keeps_the_rest_and_returns_buffers() {
        let pool = pool();
        let mut inbox = Inbox::new();
        inbox.push(lease(pool, b"hello")).unwrap();
        inbox.push(lease(pool, b"")).unwrap(); // dropped at once
        inbox.push(lease(pool, b", world")).unwrap();
        assert_eq!(pool.leased(), 2);
        let mut s = inbox.take();
        assert_eq!((s.len(), s.bytes()), (2, 12));
        let mut out = Vec::new();
        let mut buf = [0u8; 3];
        let mut leased = Vec::new();
        loop {
            let n = s.read_into(&mut buf);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            leased.push(pool.leased());
        }
        assert_eq!(out, b"hello, world");
        // After 3 bytes both leases are out; after 6 the first came back.
        assert_eq!(leased, [2, 1, 1, 0]);
        assert!(s.is_empty());
        assert_eq!(s.read_into(&mut buf), 0);
        let joined: Vec<u8> = Snapshot::new().iter().flatten().copied().collect();
        assert!(joined.is_empty());
    }
}
