//! [`TaskPipeReader`]: the async face of [`ConnectionPipeReader`], for an executor task that
//! owns its [`Connection`].

use core::fmt;
use core::future::poll_fn;
use core::task::{Context, Poll};

use super::buf::ReadResult;
use super::conn::{ConnectionPipeReader, Flow};
use super::{PipeError, Position};
use crate::exec::{Connection, Error};

/// A [`ConnectionPipeReader`] reading a task's [`Connection`]: `read().await` hands out the
/// receive leases themselves as a segmented view (zero copies), `advance_to*` gives back what
/// was consumed, with seed 002's meaning. Made by [`Connection::pipe_reader`].
///
/// # Where the bytes are
///
/// The executor puts each receive lease into the connection's queue (the one
/// [`Connection::read`] takes snapshots of) and wakes the task. A read moves every queued
/// lease into the reader's segments, in order, without copying, and returns a
/// [`ReadBuf`](super::ReadBuf) over every unread byte (carry first, then the leases). The
/// reader's storage (segments, carry buffer, quota) is the [`ConnectionPipeReader`] the
/// caller passed: no allocation, and its size is the caller's to choose (`SEGS`, `CARRY`).
///
/// # Reads
///
/// - [`read`](TaskPipeReader::read)`.await` returns when there is something new: bytes past
///   the examined position, or the end of stream. After
///   [`advance_to_examined`](TaskPipeReader::advance_to_examined)`(consumed, end)` (the parser
///   looked at everything and needs more), it waits for the next receive: the task is not
///   polled again until one arrives (no busy loop), since only a receive, the end of stream or
///   the close wakes it.
/// - The end of stream is not an error: the read returns the unread bytes with
///   [`ReadResult::is_completed`] (and does so again for every later read).
/// - A closed connection (closed from a callback, reset by the peer, the reactor stopping)
///   fails the read with [`Error::Closed`] once the bytes that arrived before are read:
///   a read waiting with everything examined fails at once.
///
/// # Receive buffers
///
/// As for the callback face ([`ConnectionPipeReader`], *Receive buffers*), with the quota
/// enforced by the reactor itself:
///
/// - **Quota.** The reader's quota becomes the connection's lease quota
///   ([`Context::set_lease_quota`](crate::reactor::Context::set_lease_quota), when the
///   handle is made and on [`set_quota`](TaskPipeReader::set_quota)), and the leases in the
///   reader count against it until they go back. So the receive pauses right after the
///   receive that brings the connection to its quota, even when several arrive in one turn
///   before the task runs, and resumes once consuming brings it down to half. The reader's
///   own pause edges are applied to the connection too
///   ([`Context::pause`](crate::reactor::Context::pause) / `resume`). The quota stays with
///   the connection after the handle is dropped. One lag: on io_uring, the receive armed
///   before the handle set the quota (at accept, before the task first ran) is capped by
///   the quota it was armed with ([`Config::lease_quota`](crate::reactor::Config::lease_quota)),
///   so the first pause can come that late; from the next arm on, the reader's quota holds.
/// - **Carry.** A short unread tail moves into the carry buffer after each `advance_to*`,
///   so a connection with a partial message pending holds no lease.
/// - **Past every limit.** Receives under way when the connection paused still arrive and
///   are packed. When the reader's segments are full even so and the parser examined
///   everything, the connection is aborted and the read fails with [`Error::Overrun`] (it
///   could never complete otherwise). Keep `SEGS` at least twice the quota.
/// - **Large messages.** A message that must be held whole must fit the quota: raise it
///   first with [`set_quota`](TaskPipeReader::set_quota) (up to `SEGS`). The executor checks
///   that [`Config::lease_quota`](crate::reactor::Config::lease_quota) is at most half of
///   [`SNAPSHOT_LEASES`](crate::exec::SNAPSHOT_LEASES), so that the leases waiting for the
///   task in its connection's queue fit there; a reader quota above that is safe as far as
///   the queue is emptied into the reader at each read (only the receives of one turn wait
///   there, packed if need be), and past that the read reports [`Error::Overrun`].
///
/// Quota, pause and resume go through the reactor's context of the poll under way; a reader
/// used outside its task's poll ([`Error::Detached`]) applies them at its next call inside.
///
/// Dropping the handle loses nothing: the storage keeps the segments and positions, and a new
/// handle over the same storage and connection goes on. The storage gives its leases back
/// when it is dropped or [`reset`](ConnectionPipeReader::reset).
///
/// # Example
///
/// Seed 002's reader loop over a connection: read, parse whole lines, advance (consuming the
/// lines, examining the partial one), stop at the end of stream.
///
/// ```no_run
/// use ringlet::exec::Connection;
/// use ringlet::pipe::{ConnectionPipeReader, Position, ReadBuf};
///
/// async fn lines(conn: Connection) {
///     let Ok(mut storage) = ConnectionPipeReader::<'static, 16, 256>::new(8) else {
///         return;
///     };
///     let mut reader = conn.pipe_reader(&mut storage);
///     loop {
///         let Ok(result) = reader.read().await else {
///             return; // closed
///         };
///         let buf = result.buffer();
///         let consumed = answer_lines(&conn, buf);
///         let (examined, done) = (buf.end(), result.is_completed());
///         if reader.advance_to_examined(consumed, examined).is_err() || done {
///             return;
///         }
///         if conn.flush().await.is_err() {
///             return;
///         }
///     }
/// }
///
/// /// Answers every whole line; returns where the unparsed rest begins.
/// fn answer_lines(conn: &Connection, buf: ReadBuf<'_>) -> Position {
///     let mut rest = buf;
///     while let Some(n) = rest.find(b"\r\n") {
///         let _ = conn.write(b"+OK\r\n");
///         rest = rest.slice(n + 2..).unwrap_or(rest);
///     }
///     rest.start()
/// }
/// ```
pub struct TaskPipeReader<'a, const SEGS: usize = 32, const CARRY: usize = 256> {
    conn: &'a Connection,
    rd: &'a mut ConnectionPipeReader<'static, SEGS, CARRY>,
}

impl<'a, const SEGS: usize, const CARRY: usize> TaskPipeReader<'a, SEGS, CARRY> {
    pub(crate) fn new(
        conn: &'a Connection,
        rd: &'a mut ConnectionPipeReader<'static, SEGS, CARRY>,
    ) -> Self {
        let mut reader = TaskPipeReader { conn, rd };
        reader.sync_connection();
        reader
    }

    /// Waits until there is something new (bytes past the examined position, or the end of
    /// stream), then returns every unread byte: the receive leases themselves, as a segmented
    /// view. Take the positions out of its buffer, then `advance_to*`.
    ///
    /// Dropping the future while it waits loses nothing.
    ///
    /// # Errors
    ///
    /// After the bytes that arrived before: [`Error::Closed`] when the connection closed (by
    /// a callback, a reset, the reactor stopping, or this task), [`Error::Overrun`] (see the
    /// type's docs).
    pub async fn read(&mut self) -> Result<ReadResult<'_>, Error> {
        poll_fn(|cx| self.poll_ready(cx)).await?;
        Ok(self.rd.read_now())
    }

    /// The poll form of [`TaskPipeReader::read`], for hand-written futures: `Pending` with
    /// `cx`'s waker registered (woken by the next receive, the end of stream or the close)
    /// when there is nothing new.
    ///
    /// # Errors
    ///
    /// As [`TaskPipeReader::read`].
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<ReadResult<'_>, Error>> {
        match self.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(self.rd.read_now())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// [`TaskPipeReader::read`] without waiting: `Ok(None)` when there is nothing new.
    ///
    /// # Errors
    ///
    /// As [`TaskPipeReader::read`].
    pub fn try_read(&mut self) -> Result<Option<ReadResult<'_>>, Error> {
        if self.intake()? {
            Ok(Some(self.rd.read_now()))
        } else {
            Ok(None)
        }
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match self.intake() {
            Ok(true) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e)),
            Ok(false) => {
                self.conn.register_read(cx.waker());
                Poll::Pending
            }
        }
    }

    /// Moves the received leases into the reader; whether a read returns now (`false`: wait).
    fn intake(&mut self) -> Result<bool, Error> {
        let rd = &mut *self.rd;
        let drained = self
            .conn
            .drain_leases(|lease| rd.push(lease).map(|_edge| ()).map_err(|full| full.lease))?;
        self.sync_connection();
        if drained.end == Some(Error::Eof) {
            self.rd.push_eof();
        }
        if self.rd.has_new() {
            return Ok(true);
        }
        if drained.left {
            // Every segment is full of examined bytes and more wait: this can never complete.
            self.conn.overrun();
            return Err(Error::Overrun);
        }
        match drained.end {
            None | Some(Error::Eof) => Ok(false),
            Some(e) => Err(e),
        }
    }

    /// Brings the connection in line with the reader: its lease quota is the reader's, and its
    /// receive is paused while the reader is (the state, not the edges: what could not be
    /// applied outside a poll is applied at the next call inside).
    fn sync_connection(&mut self) {
        let q = u16::try_from(self.rd.quota()).unwrap_or(u16::MAX);
        if self.rd.applied_quota != q {
            // A stale connection has no quota left to set: done either way.
            if self
                .conn
                .with_context(|cx, id| cx.set_lease_quota(id, Some(q)))
                .is_some()
            {
                self.rd.applied_quota = q;
            }
        }
        let want = self.rd.is_paused();
        if want == self.rd.applied_pause {
            return;
        }
        let flow = if want { Flow::Pause } else { Flow::Resume };
        // A stale connection has nothing left to pause: done either way.
        if self
            .conn
            .with_context(|cx, id| flow.apply(cx, id))
            .is_some()
        {
            self.rd.applied_pause = want;
        }
    }

    /// [`TaskPipeReader::advance_to_examined`] with `examined == consumed`: what is left is
    /// handed out again by the next read at once.
    ///
    /// # Errors
    ///
    /// As [`TaskPipeReader::advance_to_examined`].
    pub fn advance_to(&mut self, consumed: Position) -> Result<(), PipeError> {
        self.advance_to_examined(consumed, consumed)
    }

    /// Gives back the bytes before `consumed` and records that those before `examined` were
    /// looked at: the next read waits for bytes past `examined`. Fully consumed leases go back
    /// to the pool, a short unread tail moves into the carry, and a paused receive resumes
    /// when the reader is down to half its quota.
    ///
    /// # Errors
    ///
    /// Nothing changes on error: [`PipeError::PositionOutOfRange`] (a position outside the
    /// last view), [`PipeError::ExaminedBeforeConsumed`].
    pub fn advance_to_examined(
        &mut self,
        consumed: Position,
        examined: Position,
    ) -> Result<(), PipeError> {
        let _edge = self.rd.advance_to_examined(consumed, examined)?;
        self.sync_connection();
        Ok(())
    }

    /// Changes the reader's lease quota (to hold a large message whole, or back), pausing or
    /// resuming the receive as the new quota says.
    ///
    /// # Errors
    ///
    /// [`PipeError::Config`] when `quota` is 0 or exceeds `SEGS`; nothing changes.
    pub fn set_quota(&mut self, quota: usize) -> Result<(), PipeError> {
        let _edge = self.rd.set_quota(quota)?;
        self.sync_connection();
        Ok(())
    }

    /// The reader's state: leases held, carried bytes, unread bytes, bytes received, quota,
    /// whether it paused the receive.
    pub fn reader(&self) -> &ConnectionPipeReader<'static, SEGS, CARRY> {
        self.rd
    }

    /// The connection (for writing while reading: its methods take `&self`).
    pub fn connection(&self) -> &'a Connection {
        self.conn
    }
}

impl<const SEGS: usize, const CARRY: usize> fmt::Debug for TaskPipeReader<'_, SEGS, CARRY> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskPipeReader")
            .field("conn", self.conn)
            .field("reader", &*self.rd)
            .finish()
    }
}
