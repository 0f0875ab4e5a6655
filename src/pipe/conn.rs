//! [`ConnectionPipeReader`]: a pipe reader whose segments are a connection's receive leases
//! (its callback face; the async one is [`TaskPipeReader`](super::TaskPipeReader)).

use core::fmt;

use super::buf::{ReadResult, Segment};
use super::read_side::{Cursor, Pushed, ReadSide};
use super::{PipeError, Position};
use crate::pool::Lease;
use crate::reactor::{ConnError, ConnId, Context};

/// What the handler should do with the connection's receive after a
/// [`ConnectionPipeReader`] call: nothing, pause it, or resume it.
///
/// Each `Pause` and `Resume` is reported once, at the edge; act on every one (or call
/// [`Flow::apply`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "a Pause or Resume must reach the reactor (Flow::apply)"]
pub enum Flow {
    /// Nothing to do.
    Keep,
    /// The reader holds its quota of leases: pause the connection's receive
    /// ([`Context::pause`]).
    Pause,
    /// Consumption gave leases back (down to half the quota): resume it
    /// ([`Context::resume`]).
    Resume,
}

impl Flow {
    /// Pauses or resumes `conn` as this says.
    ///
    /// # Errors
    ///
    /// What [`Context::pause`] or [`Context::resume`] return (a stale connection).
    pub fn apply(self, cx: &mut Context<'_, '_>, conn: ConnId) -> Result<(), ConnError> {
        match self {
            Flow::Keep => Ok(()),
            Flow::Pause => cx.pause(conn),
            Flow::Resume => cx.resume(conn),
        }
    }
}

/// [`ConnectionPipeReader::push`] found every segment slot holding unread bytes and no room
/// to copy the lease's bytes into; the lease is handed back untouched.
pub struct SegmentsFull<'r> {
    /// The lease that did not fit.
    pub lease: Lease<'r>,
    /// The reader's segment capacity (`SEGS`, the setting to raise).
    pub capacity: usize,
}

impl fmt::Debug for SegmentsFull<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentsFull")
            .field("lease", &self.lease)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl fmt::Display for SegmentsFull<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "all {} segments of the connection reader hold unread bytes: raise its SEGS above \
             the reactor's lease_quota, or consume",
            self.capacity
        )
    }
}

impl core::error::Error for SegmentsFull<'_> {}

/// A pipe reader over one reactor connection: its segments *are* the receive leases the
/// reactor hands to [`Handler::on_data`](crate::reactor::Handler::on_data), so bytes reach
/// the parser without a copy, and it consumes them partially, as a
/// [`PipeReader`](super::PipeReader) does.
///
/// `SEGS` is how many leases it can hold; `CARRY` the size of its carry buffer. Both have
/// defaults, so `ConnectionPipeReader<'r>` is the usual spelling.
///
/// # Feeding it
///
/// From `on_data`, [`ConnectionPipeReader::push`] the lease, then read and advance as with a
/// [`PipeReader`](super::PipeReader): [`try_read`](ConnectionPipeReader::try_read) hands out a
/// [`ReadBuf`](super::ReadBuf) over every unread byte (carry first, then the leases), `None`
/// when nothing arrived past the examined position (no busy loop on an incomplete message);
/// [`advance_to_examined`](ConnectionPipeReader::advance_to_examined) gives back what was
/// consumed. From `on_read_closed`, [`push_eof`](ConnectionPipeReader::push_eof): the next
/// read reports [`ReadResult::is_completed`].
///
/// # Receive buffers (DESIGN.md, Memory)
///
/// - **Quota.** The reader counts the leases it holds. The `push` that brings it to `quota`
///   returns [`Flow::Pause`]; the `advance_to*` (or packing `push`) that brings it down to
///   `quota / 2` returns [`Flow::Resume`]. [`Flow::apply`] does what they say. (The reactor also pauses a
///   connection at [`Config::lease_quota`](crate::reactor::Config::lease_quota); the two
///   agree when they are set alike.)
/// - **Carry.** After each `advance_to*`, when every unread byte fits in the `CARRY`-byte
///   carry buffer, they are copied there (at most `CARRY` bytes) and every lease goes back to
///   the pool at once. So a connection with a partial line pending, or a peer trickling a
///   byte at a time, holds no lease between receives; only a pending tail longer than
///   `CARRY` stays in leases. Positions do not change when bytes move into the carry.
/// - **Fully consumed leases** go back at once.
/// - **Past the quota.** Receives already under way when the connection paused still
///   arrive (io_uring completes a few before its cancel lands, and the reactor bounds them
///   in bytes, not in receives). Leases pushed while the reader holds `quota` or more are
///   packed: their bytes fill the last segment's spare room, and only the rest takes a
///   slot, so slots track bytes rather than receives. When every slot is taken, all
///   segments are packed densely (a copy of what they hold, on this path only), and if
///   that frees no slot for the lease, [`SegmentsFull`] hands it back untouched. Keep `SEGS`
///   at least twice the quota (with the reactor's
///   [`Config::lease_quota`](crate::reactor::Config::lease_quota) at most the reader's).
///
/// # The async face
///
/// In an executor task that owns its [`Connection`](crate::exec::Connection), the same reader
/// is read with `read().await`: [`Connection::pipe_reader`](crate::exec::Connection::pipe_reader)
/// attaches it to the connection as a [`TaskPipeReader`](super::TaskPipeReader), which takes
/// the leases the executor queued for the task, applies the [`Flow`] signals to the
/// connection itself, and waits, when the parser examined everything, for the next receive.
/// The reader (segments and carry) is the storage; the task keeps it where it likes.
///
/// # Messages larger than the quota
///
/// A parser that needs a message whole must see it within `quota` leases (plus the carry).
/// A larger message would leave the reader paused and the parser waiting: the parser must
/// either consume it in parts (copy the payload out as it comes) or the handler must reserve
/// room first ([`ConnectionPipeReader::set_quota`], up to `SEGS`), as the broker will for big PUB
/// payloads (DESIGN.md).
///
/// # Example
///
/// A handler answering every CRLF-terminated line, one reader per connection slot:
///
/// ```
/// use ringlet::pipe::ConnectionPipeReader;
/// use ringlet::pool::Lease;
/// use ringlet::reactor::{CloseReason, ConnId, Context, Handler};
///
/// struct Lines<'r> {
///     readers: Vec<ConnectionPipeReader<'r>>, // indexed by ConnId::index
/// }
///
/// impl<'r> Handler<'r> for Lines<'r> {
///     fn on_data(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, lease: Lease<'r>) {
///         let rd = &mut self.readers[conn.index()];
///         match rd.push(lease) {
///             Ok(flow) => drop(flow.apply(cx, conn)),
///             Err(_full) => return cx.abort(conn), // past every limit: a hostile peer
///         }
///         while let Some(result) = rd.try_read() {
///             let buf = result.buffer();
///             let mut rest = buf;
///             while let Some(n) = rest.find(b"\r\n") {
///                 let _ = cx.write(conn, b"+OK\r\n");
///                 rest = rest.slice(n + 2..).unwrap_or(rest);
///             }
///             // Whole lines consumed; a partial line examined, so no read until more comes.
///             let (consumed, examined) = (rest.start(), buf.end());
///             if let Ok(flow) = rd.advance_to_examined(consumed, examined) {
///                 let _ = flow.apply(cx, conn);
///             }
///         }
///         let _ = cx.flush(conn);
///     }
///
///     fn on_read_closed(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId) {
///         self.readers[conn.index()].push_eof();
///         cx.close(conn);
///     }
///
///     fn on_close(&mut self, _: &mut Context<'_, 'r>, conn: ConnId, _: CloseReason) {
///         self.readers[conn.index()].reset(); // its leases go back
///     }
/// }
/// ```
pub struct ConnectionPipeReader<'r, const SEGS: usize = 32, const CARRY: usize = 256> {
    segs: [Option<Segment<'r>>; SEGS],
    carry: [u8; CARRY],
    cur: Cursor,
    quota: usize,
    paused: bool,
    eof: bool,
    /// The pause the async face last applied to its connection ([`super::TaskPipeReader`]).
    pub(crate) applied_pause: bool,
    /// The lease quota the async face last gave its connection ([`super::TaskPipeReader`]);
    /// 0: none yet. (A `u16`, like the reactor's quotas: it fits the padding.)
    pub(crate) applied_quota: u16,
}

impl<'r, const SEGS: usize, const CARRY: usize> ConnectionPipeReader<'r, SEGS, CARRY> {
    /// An empty reader that asks for a pause when it holds `quota` leases.
    ///
    /// # Errors
    ///
    /// [`PipeError::Config`] when `quota` is 0 or exceeds `SEGS`.
    pub fn new(quota: usize) -> Result<Self, PipeError> {
        Self::check_quota(quota)?;
        Ok(ConnectionPipeReader {
            segs: [const { None }; SEGS],
            carry: [0; CARRY],
            cur: Cursor::default(),
            quota,
            paused: false,
            eof: false,
            applied_pause: false,
            applied_quota: 0,
        })
    }

    fn check_quota(quota: usize) -> Result<(), PipeError> {
        if quota == 0 || quota > SEGS {
            return Err(PipeError::Config(
                "the lease quota must be between 1 and the reader's SEGS",
            ));
        }
        Ok(())
    }

    fn side(&mut self) -> ReadSide<'_, 'r> {
        ReadSide {
            segs: &mut self.segs,
            carry: &mut self.carry,
            cur: &mut self.cur,
        }
    }

    /// Appends a received lease (an empty one goes straight back to the pool). Returns
    /// [`Flow::Pause`] when the reader now holds its quota of leases (once, at the edge), or
    /// [`Flow::Resume`] in the rare case where packing a full reader gave enough leases back.
    ///
    /// # Errors
    ///
    /// [`SegmentsFull`] hands the lease back (untouched) when every segment slot holds unread
    /// bytes, packed densely, and the lease's bytes do not fit after them. Dropping it would lose bytes: close the
    /// connection, or consume and push it again.
    pub fn push(&mut self, lease: Lease<'r>) -> Result<Flow, SegmentsFull<'r>> {
        let pushed = if self.cur.nsegs < self.quota {
            self.side().push(lease, 0)
        } else {
            self.side().push_packed(lease)
        };
        match pushed {
            // Merged: past the quota, where packing may have given leases back.
            Ok(Pushed::Added | Pushed::Merged) => Ok(self.flow()),
            Ok(Pushed::Dropped) => Ok(Flow::Keep),
            Err(lease) => Err(SegmentsFull {
                lease,
                capacity: SEGS,
            }),
        }
    }

    /// The peer closed its side: after the bytes held, reads report
    /// [`ReadResult::is_completed`].
    pub fn push_eof(&mut self) {
        self.eof = true;
    }

    /// Every unread byte, when there is something new: bytes past the examined position, or
    /// the end of input. `None` means "nothing new" (the parser examined everything and needs
    /// more: wait for the next `on_data`).
    pub fn try_read(&mut self) -> Option<ReadResult<'_>> {
        if !self.has_new() {
            return None;
        }
        Some(self.read_now())
    }

    /// Every unread byte, whether or not there is something new.
    pub(crate) fn read_now(&mut self) -> ReadResult<'_> {
        let eof = self.eof;
        let end = self.cur.end;
        let buf = ReadSide {
            segs: &mut self.segs,
            carry: &mut self.carry,
            cur: &mut self.cur,
        }
        .view(end);
        ReadResult::new(buf, eof, false, None)
    }

    /// Whether a read would return: bytes past the examined position, or the end of input.
    pub(crate) fn has_new(&self) -> bool {
        self.cur.end > self.cur.examined || self.eof
    }

    /// [`ConnectionPipeReader::advance_to_examined`] with `examined == consumed`.
    ///
    /// # Errors
    ///
    /// As [`ConnectionPipeReader::advance_to_examined`].
    pub fn advance_to(&mut self, consumed: Position) -> Result<Flow, PipeError> {
        self.advance_to_examined(consumed, consumed)
    }

    /// Gives back the bytes before `consumed` and records that those before `examined` were
    /// looked at ([`PipeReader::advance_to_examined`](super::PipeReader::advance_to_examined)
    /// semantics). Fully consumed leases go back to the pool, and a short unread tail moves
    /// into the carry (see the type's docs). Returns [`Flow::Resume`] when that brought a
    /// paused reader down to half its quota.
    ///
    /// # Errors
    ///
    /// Nothing changes on error: [`PipeError::PositionOutOfRange`] (a position outside the
    /// last view), [`PipeError::ExaminedBeforeConsumed`].
    pub fn advance_to_examined(
        &mut self,
        consumed: Position,
        examined: Position,
    ) -> Result<Flow, PipeError> {
        let mut side = self.side();
        side.check(consumed, examined)?;
        side.advance(consumed, examined);
        side.compact();
        Ok(self.flow())
    }

    /// The pause edge for the current lease count.
    fn flow(&mut self) -> Flow {
        let held = self.cur.nsegs;
        if !self.paused && held >= self.quota {
            self.paused = true;
            Flow::Pause
        } else if self.paused && held <= self.quota / 2 {
            self.paused = false;
            Flow::Resume
        } else {
            Flow::Keep
        }
    }

    /// Changes the lease quota (to reserve room for a message that must be held whole, or
    /// back); returns the edge this causes, if any.
    ///
    /// # Errors
    ///
    /// [`PipeError::Config`] when `quota` is 0 or exceeds `SEGS`; nothing changes.
    pub fn set_quota(&mut self, quota: usize) -> Result<Flow, PipeError> {
        Self::check_quota(quota)?;
        self.quota = quota;
        Ok(self.flow())
    }

    /// The lease quota.
    pub fn quota(&self) -> usize {
        self.quota
    }

    /// Whether the last edge reported was [`Flow::Pause`].
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Receive leases held now.
    pub fn held_leases(&self) -> usize {
        self.cur.nsegs
    }

    /// Unread bytes held in the carry buffer.
    pub fn carried(&self) -> usize {
        self.cur.carry_len
    }

    /// Unread bytes held (carry and leases).
    pub fn unread_len(&self) -> usize {
        (self.cur.end - self.cur.consumed) as usize
    }

    /// Bytes pushed in all (the absolute position of the next byte).
    pub fn received(&self) -> u64 {
        self.cur.end
    }

    /// Whether [`ConnectionPipeReader::push_eof`] was called.
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Empty again, for a new connection: every lease back to the pool, positions from 0, not
    /// paused, no end of input. The quota stays.
    pub fn reset(&mut self) {
        self.side().clear();
        self.cur = Cursor::default();
        self.paused = false;
        self.eof = false;
        self.applied_pause = false;
        self.applied_quota = 0;
    }
}

impl<const SEGS: usize, const CARRY: usize> fmt::Debug for ConnectionPipeReader<'_, SEGS, CARRY> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionPipeReader")
            .field("received", &self.cur.end)
            .field("consumed", &self.cur.consumed)
            .field("examined", &self.cur.examined)
            .field("held_leases", &self.cur.nsegs)
            .field("carried", &self.cur.carry_len)
            .field("quota", &self.quota)
            .field("paused", &self.paused)
            .field("eof", &self.eof)
            .finish()
    }
}
