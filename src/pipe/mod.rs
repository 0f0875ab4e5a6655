//! Pipes: a producer writes bytes into pool buffers, a consumer reads them as a segmented,
//! zero-copy view and says how much it consumed and how much it examined (after
//! System.IO.Pipelines; seed 002).
//!
//! - [`Pipe`]: a one-way pipe with a [`PipeWriter`] half (`get_memory` / `advance` / `write`,
//!   `flush().await` or `try_flush`, `complete`) and a [`PipeReader`] half (`read().await`
//!   or `try_read`, `advance_to` / `advance_to_examined`, `cancel_pending_read`, `complete`).
//! - [`ReadBuf`]: the reader's view of the unread bytes across segments: iterate
//!   [`segments`](ReadBuf::segments), [`slice`](ReadBuf::slice),
//!   [`find`](ReadBuf::find) a delimiter or [`position_of`](ReadBuf::position_of) a byte
//!   across segment boundaries, [`copy_to`](ReadBuf::copy_to) a slice.
//! - [`DuplexPipe`]: the transport's and the application's ends of two pipes.
//! - [`ConnectionPipeReader`]: the reader half over a reactor connection, whose segments are
//!   the connection's receive leases (zero copies), with the lease quota and carry buffer of
//!   DESIGN.md; [`TaskPipeReader`] is its async face in an executor task.
//!
//! Everything here is sans-IO: no system call, no allocation, no `unsafe`. The core is
//! synchronous, for callback code (`try_read`, `try_flush`); the async face (`read().await`,
//! `flush().await`) is a thin layer over it that needs no particular executor. The one
//! exception is [`TaskPipeReader`], which reads a connection of ringlet's own
//! [executor](crate::exec) (it takes the leases the executor queued for the task).
//!
//! # The reader loop
//!
//! Seed 002's loop: read, examine, advance; stop when the writer completed. Here a line
//! parser consumes whole lines and examines everything, so a partial line waits, without a
//! busy loop, until bytes past it arrive:
//!
//! ```
//! use core::pin::pin;
//! use core::task::{Context, Poll, Waker};
//! use ringlet::pipe::{Pipe, PipeError, PipeOptions, PipeReader, Position, ReadBuf};
//! use ringlet::pool::{BufPool, BufPoolConfig, BufPoolStorage, RecvTier};
//!
//! async fn receive_loop(
//!     reader: &mut PipeReader<'_, '_>,
//!     lines: &mut Vec<String>,
//! ) -> Result<(), PipeError> {
//!     loop {
//!         let result = reader.read().await?;
//!         if result.is_canceled() {
//!             break;
//!         }
//!         let buf = result.buffer();
//!         let consumed = parse_lines(buf, lines);
//!         let (examined, done) = (buf.end(), result.is_completed());
//!         reader.advance_to_examined(consumed, examined)?;
//!         if done {
//!             break;
//!         }
//!     }
//!     reader.complete(None);
//!     Ok(())
//! }
//!
//! /// Takes every whole line; returns where the unparsed rest begins.
//! fn parse_lines(buf: ReadBuf<'_>, lines: &mut Vec<String>) -> Position {
//!     let mut rest = buf;
//!     while let Some(n) = rest.find(b"\r\n") {
//!         let mut line = [0u8; 64];
//!         let k = rest.slice(..n).unwrap().copy_to(&mut line);
//!         lines.push(String::from_utf8_lossy(&line[..k]).into_owned());
//!         rest = rest.slice(n + 2..).unwrap();
//!     }
//!     rest.start()
//! }
//!
//! // 16-byte segments, so lines straddle them.
//! let mut storage = BufPoolStorage::<8, 16>::new();
//! let config = BufPoolConfig { recv_tier: RecvTier::FreeList, user_reserve: 8 };
//! let pool = BufPool::new(&mut storage, config).unwrap();
//! let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
//! let (mut writer, mut reader) = pipe.split();
//! writer.write(b"PING\r\nSUB news 1\r\nPUB ne").unwrap();
//! let _ = writer.try_flush().unwrap();
//!
//! let mut lines = Vec::new();
//! {
//!     // Any executor can run the loop; here it is polled by hand.
//!     let mut task = pin!(receive_loop(&mut reader, &mut lines));
//!     let mut cx = Context::from_waker(Waker::noop());
//!     // Two whole lines, then it waits for the rest of the third...
//!     assert!(task.as_mut().poll(&mut cx).is_pending());
//!     // ...which the producer sends before it completes; that wakes the loop.
//!     writer.write(b"ws 5\r\n").unwrap();
//!     writer.complete(None);
//!     assert_eq!(task.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
//! }
//! assert_eq!(lines, ["PING", "SUB news 1", "PUB news 5"]);
//! assert_eq!(pool.leased(), 0); // every segment went back
//! ```
//!
//! # The same loop without an executor
//!
//! Callback code (a reactor [`Handler`](crate::reactor::Handler)) uses the synchronous core:
//! [`PipeReader::try_read`] is `None` exactly where `read().await` would wait.
//!
//! ```
//! use ringlet::pipe::{Pipe, PipeOptions, Position, ReadBuf};
//! use ringlet::pool::{BufPool, BufPoolConfig, BufPoolStorage, RecvTier};
//!
//! /// Takes every whole line; returns where the unparsed rest begins.
//! fn parse_lines(buf: ReadBuf<'_>, lines: &mut Vec<String>) -> Position {
//!     let mut rest = buf;
//!     while let Some(n) = rest.find(b"\r\n") {
//!         let mut line = [0u8; 64];
//!         let k = rest.slice(..n).unwrap().copy_to(&mut line);
//!         lines.push(String::from_utf8_lossy(&line[..k]).into_owned());
//!         rest = rest.slice(n + 2..).unwrap();
//!     }
//!     rest.start()
//! }
//!
//! // 16-byte segments, so lines straddle them.
//! let mut storage = BufPoolStorage::<8, 16>::new();
//! let config = BufPoolConfig { recv_tier: RecvTier::FreeList, user_reserve: 8 };
//! let pool = BufPool::new(&mut storage, config).unwrap();
//! let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
//! let (mut writer, mut reader) = pipe.split();
//! writer.write(b"PING\r\nSUB news 1\r\nPUB ne").unwrap();
//! let _ = writer.try_flush().unwrap();
//!
//! let mut lines = Vec::new();
//! loop {
//!     let Some(result) = reader.try_read() else {
//!         // Nothing new past what was examined (`read().await` would wait here): the
//!         // producer sends the rest of the partial line, then completes.
//!         writer.write(b"ws 5\r\n").unwrap();
//!         writer.complete(None);
//!         continue;
//!     };
//!     let buf = result.buffer();
//!     let consumed = parse_lines(buf, &mut lines);
//!     let (examined, done) = (buf.end(), result.is_completed());
//!     reader.advance_to_examined(consumed, examined).unwrap();
//!     if done {
//!         break;
//!     }
//! }
//! reader.complete(None);
//! assert_eq!(lines, ["PING", "SUB news 1", "PUB news 5"]);
//! assert_eq!(pool.leased(), 0); // every segment went back
//! ```
//!
//! # Consumed and examined
//!
//! Exactly System.IO.Pipelines' `AdvanceTo(consumed, examined)`:
//!
//! - Bytes before `consumed` are gone: the next read starts there, and segments wholly
//!   before it go back to the pool at once.
//! - Bytes before `examined` were looked at. The next [`PipeReader::try_read`] hands out data
//!   only once bytes past `examined` exist: a parser that needs more data examines
//!   everything (`examined = buf.end()`) and is not handed the same bytes again by a flush
//!   that adds nothing, only by one that adds bytes. `advance_to(consumed)` means
//!   `examined == consumed`: what is left comes back at once.
//! - The writer completing, or [`PipeReader::cancel_pending_read`], also ends the wait.
//! - A waiting [`PipeReader::read`] is woken by exactly these events: the first flush that
//!   makes bytes past `examined` visible, the writer completing, a cancelled read; never by
//!   a flush that adds nothing past `examined`.
//! - Positions must lie in the last view handed out (`consumed` at or after its start,
//!   `examined` at or before its end) with `consumed <= examined`; anything else is an error
//!   ([`PipeError::PositionOutOfRange`], [`PipeError::ExaminedBeforeConsumed`]) that changes
//!   nothing. Nothing in this module panics on a bad position, offset or range.
//!
//! A [`Position`] is an absolute byte offset from the pipe's start (bytes ever written), so it
//! stays valid while segments come and go; [`ReadBuf::position`] makes one from an offset
//! into a view. A position from another pipe is only checked against this pipe's range.
//!
//! # Segments and memory
//!
//! Segments are user-tier leases of a [`BufPool`](crate::pool::BufPool) (never buffers given
//! to the kernel), held in fixed-capacity lists inside the [`Pipe`] (capacity `SEGS`, a
//! const generic of the pipe only: the halves and views carry none). The pipe holds at most
//! [`PipeOptions::max_segments`] of them; the writer cannot grow it past that
//! ([`PipeError::SegmentLimit`]). A segment the reader consumed wholly returns at once;
//! completing either side returns everything it no longer needs.
//!
//! # How the halves share the pipe
//!
//! [`Pipe::split`] borrows the pipe once and hands each half exclusive access to its own
//! part, plus shared access to a few `Cell`s (counters, flags) and a hand-off ring of
//! `Cell<Option<Lease>>`. The writer owns the segment it is writing; a flush moves it into
//! the ring (or copies a small flush into the previous ring segment); the reader moves ring
//! segments into its own list when it reads. Neither half ever holds a borrow of shared
//! state, so there is no `RefCell` and no runtime borrow failure: the writer may write and
//! flush while the reader holds a [`ReadBuf`]. The view borrows the reader, so the borrow
//! checker ends it before the reader advances. All state lives in the [`Pipe`]: halves are
//! views, and a handler keeps the pipe and takes its halves when it needs them (both at
//! once with [`Pipe::split`]).
//!
//! # Backpressure
//!
//! A flush reports [`FlushResult::is_paused`] once [`PipeOptions::pause_threshold`] flushed
//! bytes are unread, and the pause lasts until the reader's `advance_to*` leaves fewer than
//! [`PipeOptions::resume_threshold`] ([`PipeWriter::is_paused`]). [`PipeWriter::flush`]
//! waits while paused (woken by the advance that ends the pause), so a writer that awaits
//! every flush holds at most `pause_threshold` plus one write unread.
//! [`PipeWriter::try_flush`] only reports it: the synchronous writer decides what to do.
//! Either way the segment limit is the hard stop: the pipe cannot grow past it.
//!
//! The limit, as in System.IO.Pipelines: a reader that needs a message whole consumes
//! nothing until its end arrives. If more of it than `resume_threshold` is unread, a
//! writer waiting in `flush().await` is never woken and the reader waits for bytes that
//! writer has not written: both wait. Keep `resume_threshold` above the largest message the
//! reader must hold (or let it consume in parts, or give the writer a way out with
//! [`CancelHandle::cancel_pending_flush`]).
//!
//! # Completion and cancellation
//!
//! [`PipeWriter::complete`] flushes and ends the stream (optionally with an error code): the
//! reader reads the rest, then sees [`ReadResult::is_completed`]. [`PipeReader::complete`]
//! returns every segment; later flushes discard their bytes and report
//! [`FlushResult::is_completed`]. [`PipeReader::cancel_pending_read`] and
//! [`PipeWriter::cancel_pending_flush`] make the next read or flush report
//! `is_canceled`, once. Each ends the other side's wait: the writer completing wakes a
//! waiting read, the reader completing wakes a waiting flush, a cancel wakes the cancelled
//! side. While a half is borrowed by its waiting future, a [`CancelHandle`] (from either
//! half) cancels it. After [`PipeReader::complete`], `read().await` fails with
//! [`PipeError::ReaderCompleted`] instead of waiting forever.
//!
//! # The async face
//!
//! [`PipeReader::read`] is [`PipeReader::try_read`] that waits where it returns `None`;
//! [`PipeWriter::flush`] is [`PipeWriter::try_flush`] that then waits while paused. Their
//! poll forms ([`PipeReader::poll_read`], [`PipeWriter::poll_flush`]) serve hand-written
//! futures. Each side has one [`Waker`](core::task::Waker) slot in the pipe's shared cells:
//! a poll that must wait registers its waker there, and the other side's flush, advance,
//! complete or a cancel wakes it (taking it out, so once) when, and only when, the waiting
//! side can go on. Nothing depends on an executor: any that polls futures runs these, and the
//! tests drive them by hand. The pipe is single-threaded (`!Send`, like the loop), so the
//! slots are plain `Cell`s; the wakers themselves may wake a task on any thread. Dropping a
//! waiting future loses nothing; its waker may be woken once more, spuriously.
//!
//! [`ConnectionPipeReader`] is fed by the reactor's callbacks in callback code; in an
//! executor task, [`Connection::pipe_reader`](crate::exec::Connection::pipe_reader) attaches
//! it to the task's connection as a [`TaskPipeReader`], with the same `read().await` and
//! examined semantics (its docs show the reader loop over a connection).

#[cfg(test)]
mod async_tests;
mod buf;
mod conn;
mod duplex;
mod ends;
#[cfg(test)]
mod harness;
mod read_side;
mod task;
#[cfg(test)]
mod tests;

use core::fmt;

use crate::pool::PoolError;

pub use buf::{ReadBuf, ReadResult, Segments};
pub use conn::{ConnectionPipeReader, Flow, SegmentsFull};
pub use duplex::DuplexPipe;
pub use ends::{CancelHandle, FlushResult, Pipe, PipeOptions, PipeReader, PipeWriter};
pub use task::TaskPipeReader;

/// A place in a pipe's byte stream: the absolute offset of a byte from the start (bytes ever
/// written), so it survives segments coming and going. Made by a [`ReadBuf`]
/// ([`ReadBuf::start`], [`ReadBuf::end`], [`ReadBuf::position`], ...), taken by `advance_to`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(u64);

impl Position {
    /// The position of the byte at absolute offset `offset`.
    pub const fn from_absolute(offset: u64) -> Position {
        Position(offset)
    }

    /// The absolute offset.
    pub const fn absolute(self) -> u64 {
        self.0
    }
}

/// A failed pipe operation. Nothing changes when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PipeError {
    /// [`PipeWriter::get_memory`] asked for more than one segment holds.
    MinTooLarge {
        /// The size asked for.
        min: usize,
        /// The segment size (the pool's buffer size, the setting to raise).
        segment_size: usize,
    },
    /// A new segment would pass the pipe's segment limit.
    SegmentLimit {
        /// [`PipeOptions::max_segments`] (at most the pipe's `SEGS`): the setting to raise,
        /// or let the reader consume.
        max_segments: usize,
    },
    /// The pool could not lend a segment (its user tier is empty).
    Pool(PoolError),
    /// [`PipeWriter::advance`] by more than the memory handed out.
    AdvanceTooFar {
        /// The count given.
        n: usize,
        /// The bytes of memory handed out and not yet advanced.
        available: usize,
    },
    /// A position outside the last view handed out.
    PositionOutOfRange {
        /// The position given (absolute).
        position: u64,
        /// The view's start: the last consumed position.
        start: u64,
        /// The view's end.
        end: u64,
    },
    /// `examined` before `consumed`.
    ExaminedBeforeConsumed {
        /// The consumed position given (absolute).
        consumed: u64,
        /// The examined position given (absolute).
        examined: u64,
    },
    /// The writer completed: it cannot write or flush any more.
    WriterCompleted,
    /// The reader completed: it cannot advance any more.
    ReaderCompleted,
    /// Options that cannot work (at construction).
    Config(&'static str),
}

impl fmt::Display for PipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PipeError::MinTooLarge { min, segment_size } => write!(
                f,
                "get_memory({min}) exceeds the segment size of {segment_size} bytes (the \
                 pool's buffer size)"
            ),
            PipeError::SegmentLimit { max_segments } => write!(
                f,
                "the pipe holds its limit of {max_segments} segments: let the reader consume, \
                 or raise PipeOptions::max_segments (and the pipe's SEGS)"
            ),
            PipeError::Pool(e) => write!(f, "no segment: {e}"),
            PipeError::AdvanceTooFar { n, available } => write!(
                f,
                "advance({n}) past the {available} bytes of memory handed out"
            ),
            PipeError::PositionOutOfRange {
                position,
                start,
                end,
            } => write!(
                f,
                "position {position} outside the last view {start}..={end}"
            ),
            PipeError::ExaminedBeforeConsumed { consumed, examined } => write!(
                f,
                "examined position {examined} is before the consumed position {consumed}"
            ),
            PipeError::WriterCompleted => f.write_str("the pipe's writer completed"),
            PipeError::ReaderCompleted => f.write_str("the pipe's reader completed"),
            PipeError::Config(what) => write!(f, "pipe configuration: {what}"),
        }
    }
}

impl core::error::Error for PipeError {}
