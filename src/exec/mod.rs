//! The async face: a no-alloc executor of connection tasks, bound to the reactor.
//!
//! An [`Executor`] is a [`Handler`]: the reactor drives it like any other, and it routes each
//! connection's events to the task that owns the connection. A task is the future of a
//! handler function, typically `async fn handler(conn: Connection)`, run once per connection
//! ([`Executor::spawn`], or automatically for every accepted connection). Inside, the task
//! uses its [`Connection`]: `read().await` (a receive [`Snapshot`]), `write` (into the write
//! slab), `flush().await` (until the bytes staged before it are sent), `start_flush` (the
//! same send, without waiting for it).
//!
//! ```no_run
//! use ringlet::exec::{future_size, Connection, TaskStorage};
//! use ringlet::pool::StaticSlot;
//! use ringlet::reactor::{Config, Reactor, Resources};
//!
//! async fn echo(conn: Connection) {
//!     while let Ok(snapshot) = conn.read().await {
//!         for bytes in snapshot.iter() {
//!             if conn.write(bytes).is_err() {
//!                 return;
//!             }
//!         }
//!         drop(snapshot);
//!         if conn.flush().await.is_err() {
//!             return;
//!         }
//!     }
//! }
//!
//! static LOOP: StaticSlot<Resources<1024, 4096, 2048, 65536, 64>> = StaticSlot::new();
//! static TASKS: StaticSlot<TaskStorage<1024, { future_size(&echo) }>> = StaticSlot::new();
//!
//! let mut reactor = Reactor::new(LOOP.take().unwrap(), Config::default()).unwrap();
//! reactor.listen("127.0.0.1:7000".parse().unwrap()).unwrap();
//! // Accept, spawn `echo(conn)` per connection, run until stopped.
//! reactor.serve_tasks(TASKS.take().unwrap(), echo).unwrap();
//! ```
//!
//! # Memory
//!
//! Nothing is allocated. The caller provides a [`TaskStorage`] of `TASKS` slots, each with
//! room for one future of `SIZE` bytes, as `&'static mut` (a [`StaticSlot`], or leaked once).
//! One future type per pool: the handler's. Its size cannot be named on stable Rust, so
//! [`future_size`] computes it in a constant from the handler, or a round number will do and
//! [`Executor::new`] names the size needed when it is too small. A future is built in its
//! slot when its task is spawned, stays there (pinned) until it completes, and is dropped
//! there; the slot then serves the next task.
//!
//! A full pool is an error that names the setting: [`SpawnError::PoolFull`] ("raise
//! TaskStorage's TASKS"); the task-per-connection server refuses (closes) an accepted
//! connection then and counts it ([`ExecStats::refused`]).
//!
//! # Wakers and the ready queue
//!
//! Each slot has a [`TaskHeader`]: an atomic word holding the slot's *generation* and a
//! *scheduled* bit. A [`Waker`] is the header's address with the
//! generation in free address bits ([`WAKER_GENERATION_BITS`]), so it needs no allocation and
//! no reference count; clone and drop do nothing. Waking it, from any thread:
//!
//! 1. compare-and-swap the state from (its generation, any bit) to (its generation,
//!    scheduled), `Release`. A different generation means the task is gone (the slot may
//!    hold a new task): the waker is stale and does nothing, so a stale waker never runs the
//!    task that reused its slot.
//! 2. If the bit was clear, push the slot onto the ready queue (the pool's lock-free
//!    [`ReturnQueue`](crate::pool::ReturnQueue): the bit keeps each slot in it at most once,
//!    so it never fills) and notify the loop through the same
//!    [`WakeSignal`](crate::sync::WakeSignal) and eventfd as buffers returned from other
//!    threads ([`sync`](crate::sync) explains why no wake-up is lost).
//!
//! The loop, each turn, in [`Handler::before_flush`]: takes the whole ready queue, and for
//! each slot clears the bit (`Acquire`: the poll sees what the waking thread did before it
//! woke) *then* polls the task, so a wake during the poll queues it again. A task that
//! completes is dropped and its slot *retired*: the generation moves on (its wakers go stale)
//! and the scheduled bit is kept, so a wake that queued the slot just before is the one
//! entry, serving as the first poll of whichever task the slot holds next (a task must be
//! polled once after its spawn anyway). The loom models in `loom-tests/` check this: a
//! remote wake racing completion and reuse never polls the new task more than its own
//! schedule asks, and no wake is lost.
//!
//! Events the reactor routes to a task during a turn (data, end of stream, sends, close) do
//! not go through the header when the waker they find is the task's own: the loop knows each
//! slot's generation itself (it moves on only when the loop retires the slot), so it checks
//! the waker without reading the header and puts the task on a *local* ready list, a plain
//! array on the loop's side: no atomic operation, no notification (the poll phase follows in
//! the same turn), and the header's cache line stays untouched. The poll phase takes the
//! ready queue first, then the local list in the order the events came; a task on both is
//! polled once (the events were routed before the phase, so that poll sees them). A task
//! woken during the poll phase (by itself or another task, through its waker) is polled next
//! turn, and that turn does not sleep. A completed send concerns a task only while one of its
//! `flush().await`s
//! waits: the executor marks the connection then (a bit of its
//! [tag](Context::set_tag)) and otherwise does not look at the task's state at all, so a task
//! that starts its sends and goes on reading is neither woken nor touched by their
//! completions.
//!
//! # Cache
//!
//! With many connections, a task's state has left the CPU caches by the time its connection
//! has something again, so a round trip costs about one cache miss per line of task state it
//! touches; the layout keeps that small. A receive and the read that takes it touch one line
//! of per-task connection state (with the first unread lease: the unread leases start over at
//! that slot whenever they are all read), a few bytes of dense loop-side arrays, and the lines
//! of the task's own future that its poll uses (each future slot starts a cache line:
//! [`FUTURE_ALIGN`]); the scheduler header only when a waker is woken through it.
//!
//! # Tasks and the reactor
//!
//! A connection belongs to one consumer at a time: the executor routes the events of the
//! connections it spawned tasks for (it marks them with [`Context::set_tag`]) and ignores
//! others, so it can run alongside other handlers in a composite `Handler` that forwards it
//! its connections' events. Tasks reach the reactor through keys (the [`ConnId`]), never
//! through long-lived borrows: while the executor polls a task it lends the turn's
//! [`Context`] to the task's connection operations for the length of each call, and only
//! then (see [`Error::Detached`]). Tasks are polled within the turn, before its flushes, so a
//! task's writes and flushes go out in the same submission as everyone else's.
//!
//! # Limits
//!
//! - One future type per executor (the handler's); more kinds of tasks need more executors
//!   or an enum of futures.
//! - Tasks have no timers of their own yet; a task waits for its connection or for wakers.
//! - Dropping an [`Executor`] drops its live tasks' futures outside any turn: their
//!   connections cannot be closed then and stay open in the reactor. Stop the reactor first
//!   (every connection closes, every pending read fails, tasks end).
//! - A stale waker kept through `2^WAKER_GENERATION_BITS` reuses of its slot can cause one
//!   spurious poll (harmless to a correct future).
//!
//! [`StaticSlot`]: crate::pool::StaticSlot

mod conn;
mod sched;
mod scope;
mod storage;

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::Waker;

use crate::pool::Lease;
use crate::reactor::{CloseReason, ConnId, Context, Handler, ListenerId, Reactor, ReactorError};

pub use conn::{Connection, Error, SNAPSHOT_LEASES, Snapshot};
pub use sched::{
    AddressTooHigh, MAX_TASKS, SchedStorage, Scheduler, TaskHeader, WAKER_GENERATION_BITS,
    next_generation,
};
pub use storage::{FUTURE_ALIGN, TaskStorage};

use scope::Scope;

/// The bit of a connection's tag ([`Context::set_tag`]; the rest is the task slot + 1) that
/// asks [`Executor::on_sent`](Handler::on_sent) to look at the task's send count: set while
/// a `flush().await` of the task waits.
const WATCH_SENDS: u32 = 1 << 31;

// Task slots are `u16`: slot + 1 never reaches the bit.
static_assertions::const_assert!((MAX_TASKS as u32) < WATCH_SENDS);

/// Asks the executor to report `conn`'s send completions to its task (a flush waits for
/// them), until the position the flush waits for is reached. `None` when `conn` is closed.
pub(crate) fn watch_sends(cx: &mut Context<'_, 'static>, conn: ConnId) -> Option<()> {
    let tag = cx.tag(conn)?;
    cx.set_tag(conn, tag | WATCH_SENDS).ok()
}

/// What a task's [`Connection`] shares with the executor: the per-task connection state and
/// the poll scope. Lives in the [`TaskStorage`], loop-thread only.
pub(crate) struct ExecCore {
    io: &'static [conn::IoCell],
    scope: Scope,
    sched: Scheduler,
}

/// The size of the future `handler` returns, as a constant: the `SIZE` to give
/// [`TaskStorage`] (`TaskStorage<TASKS, { future_size(&handler) }>`).
pub const fn future_size<F, Fut>(handler: &F) -> usize
where
    F: FnMut(Connection) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let _ = handler;
    size_of::<Fut>()
}

/// Errors building an [`Executor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExecError {
    /// The handler's future does not fit a task slot: raise [`TaskStorage`]'s `SIZE` to at
    /// least `size` (or use [`future_size`]).
    FutureTooLarge {
        /// The future's size.
        size: usize,
        /// The slot size (`SIZE`).
        capacity: usize,
    },
    /// The handler's future needs a larger alignment than a slot has ([`FUTURE_ALIGN`]).
    FutureAlign {
        /// The future's alignment.
        align: usize,
    },
    /// The reactor's [`Config::lease_quota`](crate::reactor::Config::lease_quota) is above
    /// half of [`SNAPSHOT_LEASES`]: a connection could receive more leases than its task's
    /// queue holds. Lower the quota.
    LeaseQuota {
        /// The reactor's quota.
        quota: u16,
        /// The largest the executor accepts.
        max: u16,
    },
    /// The storage's address leaves wakers no room for their generation bits.
    AddressTooHigh(AddressTooHigh),
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::FutureTooLarge { size, capacity } => write!(
                f,
                "the handler's future is {size} bytes, a task slot {capacity}: raise \
                 TaskStorage's SIZE to at least {size} (exec::future_size computes it)"
            ),
            ExecError::FutureAlign { align } => write!(
                f,
                "the handler's future needs {align}-byte alignment, task slots have {FUTURE_ALIGN}"
            ),
            ExecError::LeaseQuota { quota, max } => write!(
                f,
                "reactor lease_quota {quota} is above {max} (SNAPSHOT_LEASES / 2): lower it"
            ),
            ExecError::AddressTooHigh(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for ExecError {}

/// Errors of [`Executor::spawn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnError {
    /// Every task slot is in use: raise [`TaskStorage`]'s `TASKS` (`capacity` now).
    PoolFull {
        /// The number of task slots.
        capacity: usize,
    },
    /// The connection is closed (or closing).
    Closed,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::PoolFull { capacity } => write!(
                f,
                "task pool full: all {capacity} task slots are in use (raise TaskStorage's TASKS)"
            ),
            SpawnError::Closed => f.write_str("the connection is closed"),
        }
    }
}

impl core::error::Error for SpawnError {}

/// Errors of [`Reactor::serve_tasks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServeError {
    /// The executor could not be built.
    Exec(ExecError),
    /// The loop failed.
    Reactor(ReactorError),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Exec(e) => write!(f, "{e}"),
            ServeError::Reactor(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for ServeError {}

impl From<ExecError> for ServeError {
    fn from(e: ExecError) -> Self {
        ServeError::Exec(e)
    }
}

impl From<ReactorError> for ServeError {
    fn from(e: ReactorError) -> Self {
        ServeError::Reactor(e)
    }
}

/// Counters of an [`Executor`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Tasks spawned.
    pub spawned: u64,
    /// Tasks that completed.
    pub completed: u64,
    /// Accepted connections refused because every task slot was in use (each was closed).
    pub refused: u64,
    /// Task polls.
    pub polls: u64,
    /// Task slots in use now: tasks alive, and finished tasks whose connection was moved
    /// out and is still alive.
    pub live: usize,
}

/// A no-alloc executor of connection tasks: one future of type `Fut` per task, made by `F`
/// from the task's [`Connection`]. See the [module documentation](self).
///
/// As a [`Handler`] it spawns a task for every accepted connection (refusing, and counting,
/// when the pool is full), routes each connection's events to its task, and polls the ready
/// tasks once per turn before the flushes.
pub struct Executor<F, Fut: 'static> {
    sched: Scheduler,
    core: &'static ExecCore,
    futures: storage::FutureSlots<Fut>,
    live: &'static mut [bool],
    /// The loop's own scheduling state per slot (generation, queued locally).
    local: &'static mut [storage::LocalSlot],
    /// This turn's local ready list: tasks scheduled by the reactor's events.
    local_ready: &'static mut [u16],
    local_len: usize,
    free: &'static mut [u16],
    free_len: usize,
    make: F,
    stats: ExecStats,
}

impl<F, Fut> Executor<F, Fut>
where
    F: FnMut(Connection) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    /// An executor for `reactor`'s connections over `storage`, spawning `make(conn)` per task.
    ///
    /// # Errors
    ///
    /// [`ExecError::FutureTooLarge`] / [`ExecError::FutureAlign`] when `Fut` does not fit a
    /// slot, [`ExecError::LeaseQuota`] when the reactor's lease quota is above half of
    /// [`SNAPSHOT_LEASES`], [`ExecError::AddressTooHigh`] (see [`Scheduler::new`]).
    pub fn new<const TASKS: usize, const SIZE: usize>(
        reactor: &Reactor<'static>,
        storage: &'static mut TaskStorage<TASKS, SIZE>,
        make: F,
    ) -> Result<Self, ExecError> {
        let quota = reactor.config().lease_quota;
        let max = (SNAPSHOT_LEASES / 2) as u16;
        if quota > max {
            return Err(ExecError::LeaseQuota { quota, max });
        }
        let parts = storage.split::<Fut>(reactor.notifier())?;
        let core: &'static ExecCore = parts.core.write(ExecCore {
            io: parts.io,
            scope: Scope::new(),
            sched: parts.sched,
        });
        Ok(Executor {
            sched: parts.sched,
            core,
            futures: parts.futures,
            live: parts.live,
            local: parts.local,
            local_ready: parts.local_ready,
            local_len: 0,
            free_len: parts.free.len(),
            free: parts.free,
            make,
            stats: ExecStats::default(),
        })
    }

    /// Task slots.
    pub fn capacity(&self) -> usize {
        self.futures.len()
    }

    /// Counters.
    pub fn stats(&self) -> ExecStats {
        ExecStats {
            live: self.capacity() - self.free_len,
            ..self.stats
        }
    }

    /// The scheduler (task headers, ready queue, wakers).
    pub fn scheduler(&self) -> Scheduler {
        self.sched
    }

    /// Hands `conn` to a new task running `make(connection)`: from now on its events go to
    /// the task, which is polled for the first time in this turn's poll phase (or the next
    /// turn's, which then does not sleep). The connection must not be used by other code
    /// meanwhile.
    ///
    /// # Errors
    ///
    /// [`SpawnError::PoolFull`] when every slot is in use (the connection is left as it was:
    /// the caller decides, e.g. close it), [`SpawnError::Closed`] for a closed connection.
    pub fn spawn(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) -> Result<(), SpawnError> {
        if !cx.is_open(conn) {
            return Err(SpawnError::Closed);
        }
        if self.free_len == 0 {
            return Err(SpawnError::PoolFull {
                capacity: self.capacity(),
            });
        }
        let slot = usize::from(self.free[self.free_len - 1]);
        if cx.set_tag(conn, slot as u32 + 1).is_err() {
            return Err(SpawnError::Closed);
        }
        self.free_len -= 1;
        self.core.io[slot].borrow_mut().reset(conn, cx.sent(conn));
        let fut = (self.make)(Connection::new(self.core, slot, conn));
        self.futures.get_mut(slot).write(fut);
        self.live[slot] = true;
        self.stats.spawned += 1;
        // Notifies: a spawn may come before the loop runs, and the first poll must not wait
        // for an unrelated event.
        self.sched.wake(slot);
        Ok(())
    }

    /// The task slot that owns `conn`, if a task of this executor does (or did, and the
    /// task's `Connection` lives on elsewhere).
    fn owner(&self, cx: &Context<'_, 'static>, conn: ConnId) -> Option<usize> {
        let slot = usize::try_from((cx.tag(conn)? & !WATCH_SENDS).checked_sub(1)?).ok()?;
        let io = self.core.io.get(slot)?;
        (io.borrow().conn == Some(conn)).then_some(slot)
    }

    fn free_slot(&mut self, slot: usize) {
        self.free[self.free_len] = slot as u16;
        self.free_len += 1;
    }

    /// Wakes the future that registered `waker` for the task in `slot`: the task's own waker
    /// only puts it on this turn's local ready list (the poll phase follows in this turn);
    /// another waker (a combinator's inside the task) is woken as such.
    fn wake_for(&mut self, slot: usize, waker: Option<Waker>) {
        let Some(w) = waker else {
            return;
        };
        let Some(local) = self.local.get_mut(slot) else {
            return;
        };
        if !self.sched.is_waker_at(slot, local.generation, &w) {
            w.wake();
            return;
        }
        if !local.queued {
            local.queued = true;
            // Each slot is on the list at most once: there is room.
            self.local_ready[self.local_len] = slot as u16;
            self.local_len += 1;
        }
    }

    /// Polls every ready task once: first those woken through the scheduler (from other
    /// threads, spawned, or woken by other futures), then those the reactor's events
    /// scheduled this turn, in the order the events came, each at most once.
    fn poll_ready(&mut self, cx: &mut Context<'_, 'static>) {
        let sched = self.sched;
        sched.drain(|slot| {
            // A poll now also serves an event of this turn for the task: the events were
            // routed before this phase.
            if let Some(local) = self.local.get_mut(slot) {
                local.queued = false;
            }
            self.poll_slot(cx, slot);
        });
        let mut i = 0;
        while i < self.local_len {
            let slot = usize::from(self.local_ready[i]);
            if core::mem::take(&mut self.local[slot].queued) {
                self.poll_slot(cx, slot);
            }
            i += 1;
        }
        self.local_len = 0;
    }

    fn poll_slot(&mut self, cx: &mut Context<'_, 'static>, slot: usize) {
        {
            let mut io = self.core.io[slot].borrow_mut();
            // Closed by its `Connection` outside a poll: close it in the reactor now. A task
            // with its connection stops at `conn`, on the line its reads touch anyway.
            if io.conn.is_none()
                && let Some(id) = io.pending_close.take()
            {
                drop(io);
                let _ = cx.set_tag(id, 0);
                cx.close(id);
            }
        }
        if !self.live.get(slot).is_some_and(|&l| l) {
            // Finished after it was scheduled; or finished earlier with its connection moved
            // out, which has now been dropped: the slot is free again.
            let mut io = self.core.io[slot].borrow_mut();
            if io.held && io.conn.is_none() {
                io.held = false;
                drop(io);
                self.free_slot(slot);
            }
            return;
        }
        let Some(waker) = self.sched.waker_at(slot, self.local[slot].generation) else {
            return;
        };
        let mut tcx = core::task::Context::from_waker(&waker);
        let fut = self.futures.get_mut(slot);
        self.stats.polls += 1;
        let done = self.core.scope.enter(cx, || {
            // SAFETY: `live[slot]` says the slot holds a future written by `spawn` and not yet
            // dropped. It lives in `'static` storage that nothing else borrows and is never
            // moved out of (only dropped in place, below): pinned.
            let pinned = unsafe { Pin::new_unchecked(fut.assume_init_mut()) };
            if pinned.poll(&mut tcx).is_pending() {
                return false;
            }
            // Dropped here, inside the scope, so the task's `Connection` can close.
            // SAFETY: initialised (as above); `live` is cleared right after, so it is never
            // used or dropped again.
            unsafe { fut.assume_init_drop() };
            true
        });
        if done {
            self.live[slot] = false;
            self.sched.retire(slot);
            let local = &mut self.local[slot];
            local.generation = sched::next_generation(local.generation);
            self.stats.completed += 1;
            let mut io = self.core.io[slot].borrow_mut();
            if io.conn.is_some() {
                // The task moved its connection out (to another task): its events keep
                // coming through this slot, so the slot stays taken until it is dropped.
                io.held = true;
            } else {
                drop(io);
                self.free_slot(slot);
            }
        }
    }
}

impl<F, Fut: 'static> Drop for Executor<F, Fut> {
    fn drop(&mut self) {
        for (i, live) in self.live.iter_mut().enumerate() {
            if core::mem::take(live) {
                let fut = self.futures.get_mut(i);
                // SAFETY: `live` said it holds a future not yet dropped; it is cleared first,
                // so a panic in this drop cannot lead to a second one.
                unsafe { fut.assume_init_drop() };
            }
        }
    }
}

impl<F, Fut: 'static> fmt::Debug for Executor<F, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("capacity", &self.futures.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<F, Fut> Handler<'static> for Executor<F, Fut>
where
    F: FnMut(Connection) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    /// Spawns a task for the connection; when every slot is in use, aborts it and counts it
    /// ([`ExecStats::refused`]).
    fn on_accept(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, _: ListenerId) {
        if let Err(SpawnError::PoolFull { .. }) = self.spawn(cx, conn) {
            self.stats.refused += 1;
            cx.abort(conn);
        }
    }

    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        let Some(slot) = self.owner(cx, conn) else {
            return; // not a task's: the lease goes back
        };
        let mut io = self.core.io[slot].borrow_mut();
        if let Err(lease) = io.inbox.push(lease) {
            // The bytes cannot be held: abort rather than lose them (the read reports it
            // after the bytes that did fit).
            drop(lease);
            io.overrun = true;
            cx.abort(conn);
        }
        let w = io.read_waker.take();
        drop(io);
        self.wake_for(slot, w);
    }

    /// Marks the end of stream for the task's next read; the connection stays open for the
    /// task's writes (it closes when the task drops it). Connections that are not a task's
    /// are closed, as the default handler does.
    fn on_read_closed(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId) {
        let Some(slot) = self.owner(cx, conn) else {
            cx.close(conn);
            return;
        };
        let mut io = self.core.io[slot].borrow_mut();
        io.eof = true;
        let w = io.read_waker.take();
        drop(io);
        self.wake_for(slot, w);
    }

    /// Wakes the task's pending `flush().await` once the bytes it waits for are sent. Looks
    /// at the task's state only while such a flush waits (a bit of the connection's tag says
    /// so): every send completes here, and with many connections the task's state is cold by
    /// then, so a send nobody waits for costs no cache miss (see the module's *Cache*).
    fn on_sent(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, _bytes: usize) {
        let Some(tag) = cx.tag(conn) else {
            return;
        };
        if tag & WATCH_SENDS == 0 {
            return;
        }
        let Some(slot) = self.owner(cx, conn) else {
            return;
        };
        let mut io = self.core.io[slot].borrow_mut();
        io.sent = cx.sent(conn);
        match io.flush_target {
            Some(t) if io.sent < t => return,
            _ => {}
        }
        // Reached (or the flush was dropped): stop watching.
        io.flush_target = None;
        let w = io.flush_waker.take();
        drop(io);
        let _ = cx.set_tag(conn, tag & !WATCH_SENDS);
        self.wake_for(slot, w);
    }

    /// Fails the task's pending read and flush with [`Error::Closed`] (after whatever was
    /// received and not yet read).
    fn on_close(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, reason: CloseReason) {
        let Some(slot) = self.owner(cx, conn) else {
            return;
        };
        let mut io = self.core.io[slot].borrow_mut();
        io.set_closed(reason);
        let (r, w) = (io.read_waker.take(), io.flush_waker.take());
        drop(io);
        self.wake_for(slot, r);
        self.wake_for(slot, w);
    }

    fn before_flush(&mut self, cx: &mut Context<'_, 'static>) {
        self.poll_ready(cx);
    }
}

impl Reactor<'static> {
    /// A task-per-connection server in one call: builds an [`Executor`] over `tasks` that
    /// runs `handler(conn)` for every accepted connection (refusing, and counting, accepts
    /// while every task slot is in use), and runs the loop until it is stopped. Listen first
    /// ([`Reactor::listen`]). Returns the executor's counters.
    ///
    /// # Errors
    ///
    /// [`ServeError::Exec`] when the executor cannot be built (see [`Executor::new`]),
    /// [`ServeError::Reactor`] when the loop fails.
    pub fn serve_tasks<const TASKS: usize, const SIZE: usize, F, Fut>(
        &mut self,
        tasks: &'static mut TaskStorage<TASKS, SIZE>,
        handler: F,
    ) -> Result<ExecStats, ServeError>
    where
        F: FnMut(Connection) -> Fut,
        Fut: Future<Output = ()> + 'static,
    {
        let mut exec = Executor::new(self, tasks, handler)?;
        self.run(&mut exec)?;
        Ok(exec.stats())
    }
}
