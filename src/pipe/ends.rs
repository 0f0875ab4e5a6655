//! [`Pipe`] and its two halves, [`PipeWriter`] and [`PipeReader`].

use core::cell::Cell;
use core::fmt;
use core::future::poll_fn;
use core::task::{Context, Poll, Waker};

use super::buf::{ReadResult, Segment};
use super::read_side::{Cursor, Pushed, ReadSide};
use super::{PipeError, Position};
use crate::pool::{BufPool, Lease, PoolError};

/// The limits of a [`Pipe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PipeOptions {
    /// The most segments (pool buffers) the pipe holds at once: the writer's current segment,
    /// flushed ones the reader has not picked up, and the reader's. Capped at the pipe's
    /// `SEGS`; `usize::MAX` (the default) means `SEGS`. Past it, [`PipeWriter::get_memory`] and
    /// [`PipeWriter::write`] fail with [`PipeError::SegmentLimit`]: the pipe cannot grow
    /// without bound, whatever the writer does.
    pub max_segments: usize,
    /// Backpressure: [`PipeWriter::flush`] reports [`FlushResult::is_paused`] once this many
    /// flushed bytes are unread (0, the default: never).
    pub pause_threshold: usize,
    /// ... and the pause ends when the reader's `advance_to` leaves fewer than this many
    /// unread. At most `pause_threshold`, and at least 1 when `pause_threshold` is set (fewer
    /// than 0 bytes is never unread: the writer would stay paused for good).
    pub resume_threshold: usize,
}

impl Default for PipeOptions {
    fn default() -> Self {
        PipeOptions {
            max_segments: usize::MAX,
            pause_threshold: 0,
            resume_threshold: 0,
        }
    }
}

/// What a flush found. Every flag describes the pipe after the flush.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[must_use = "a paused or completed flush means the writer should stop"]
pub struct FlushResult {
    /// Backpressure: at least [`PipeOptions::pause_threshold`] bytes are unread. Stop writing
    /// until [`PipeWriter::is_paused`] turns false (the reader consumed down below
    /// [`PipeOptions::resume_threshold`]). Writing on is allowed, up to the segment limit.
    pub is_paused: bool,
    /// The reader completed: nothing written will be read (and flushed bytes were discarded).
    pub is_completed: bool,
    /// [`PipeWriter::cancel_pending_flush`] was called since the last flush; reported once.
    pub is_canceled: bool,
    /// The code the reader completed with, if it completed with an error.
    pub reader_error: Option<u32>,
}

/// State both halves share. Only `Cell`s: neither half ever holds a borrow of it.
struct Shared<'p> {
    pool: BufPool<'p>,
    max_segments: usize,
    pause: u64,
    resume: u64,
    /// Leases the pipe holds: writer's current + hand-off + reader's segments.
    held: Cell<usize>,
    /// Bytes the reader may see.
    flushed: Cell<u64>,
    /// Bytes the reader consumed.
    consumed: Cell<u64>,
    /// Bytes the reader examined (a copy of its cursor's, for the writer's wake decision).
    examined: Cell<u64>,
    paused: Cell<bool>,
    /// `Some(error)` once completed.
    writer_done: Cell<Option<Option<u32>>>,
    reader_done: Cell<Option<Option<u32>>>,
    cancel_read: Cell<bool>,
    cancel_flush: Cell<bool>,
    /// The hand-off ring: `handoff[(head + i) % SEGS]` for `i < len`.
    head: Cell<usize>,
    len: Cell<usize>,
    /// The task waiting in [`PipeReader::poll_read`], woken when [`Shared::reader_ready`]
    /// turns true.
    reader_waker: WakerSlot,
    /// The task waiting in [`PipeWriter::poll_flush`], woken when [`Shared::writer_ready`]
    /// turns true.
    writer_waker: WakerSlot,
}

/// One registered waker. A wake takes it out, so each registration is woken at most once.
#[derive(Default)]
struct WakerSlot(Cell<Option<Waker>>);

impl WakerSlot {
    /// Registers `waker`, replacing an earlier one (kept when it wakes the same task).
    fn register(&self, waker: &Waker) {
        let waker = match self.0.take() {
            Some(old) if old.will_wake(waker) => old,
            _ => waker.clone(),
        };
        self.0.set(Some(waker));
    }

    fn wake(&self) {
        if let Some(w) = self.0.take() {
            w.wake();
        }
    }

    /// Forgets the waker without waking it.
    fn clear(&self) {
        drop(self.0.take());
    }
}

impl<'p> Shared<'p> {
    fn new(pool: BufPool<'p>, max_segments: usize, options: &PipeOptions) -> Self {
        Shared {
            pool,
            max_segments,
            pause: options.pause_threshold as u64,
            resume: options.resume_threshold as u64,
            held: Cell::new(0),
            flushed: Cell::new(0),
            consumed: Cell::new(0),
            examined: Cell::new(0),
            paused: Cell::new(false),
            writer_done: Cell::new(None),
            reader_done: Cell::new(None),
            cancel_read: Cell::new(false),
            cancel_flush: Cell::new(false),
            head: Cell::new(0),
            len: Cell::new(0),
            reader_waker: WakerSlot::default(),
            writer_waker: WakerSlot::default(),
        }
    }

    /// Whether a read would return now: bytes past the examined position, a cancelled
    /// read, or a completed writer.
    fn reader_ready(&self) -> bool {
        self.flushed.get() > self.examined.get()
            || self.cancel_read.get()
            || self.writer_done.get().is_some()
    }

    /// Whether a waiting flush would return now: no backpressure, a completed reader, or a
    /// cancelled flush.
    fn writer_ready(&self) -> bool {
        !self.paused.get() || self.reader_done.get().is_some() || self.cancel_flush.get()
    }

    /// Wakes a waiting reader if it can read now. Called by every change the reader waits
    /// for: a flush, the writer completing, a cancelled read.
    fn wake_reader_if_ready(&self) {
        if self.reader_ready() {
            self.reader_waker.wake();
        }
    }

    /// Wakes a waiting flush if it can return now. Called by every change it waits for: an
    /// advance (which may end the pause), the reader completing, a cancelled flush.
    fn wake_writer_if_ready(&self) {
        if self.writer_ready() {
            self.writer_waker.wake();
        }
    }

    fn cancel_read(&self) {
        self.cancel_read.set(true);
        self.wake_reader_if_ready();
    }

    fn cancel_flush(&self) {
        self.cancel_flush.set(true);
        self.wake_writer_if_ready();
    }

    fn give_back(&self, n: usize) {
        self.held.set(self.held.get() - n);
    }

    /// Re-evaluates backpressure after bytes were flushed or consumed.
    fn update_pause(&self) {
        if self.pause == 0 {
            return;
        }
        let unread = self.flushed.get() - self.consumed.get();
        if unread >= self.pause {
            self.paused.set(true);
        } else if unread < self.resume {
            self.paused.set(false);
        }
    }
}

/// The segments flushed by the writer and not yet picked up by the reader: a ring of
/// `Cell<Option<Lease>>`, so each side moves leases in and out without holding a borrow.
struct Handoff<'s, 'p> {
    shared: &'s Shared<'p>,
    slots: &'s [Cell<Option<Lease<'p>>>],
}

impl<'p> Handoff<'_, 'p> {
    fn push_back(&self, lease: Lease<'p>) -> Result<(), Lease<'p>> {
        let (head, len) = (self.shared.head.get(), self.shared.len.get());
        if len >= self.slots.len() {
            return Err(lease);
        }
        self.slots[(head + len) % self.slots.len()].set(Some(lease));
        self.shared.len.set(len + 1);
        Ok(())
    }

    fn push_front(&self, lease: Lease<'p>) -> Result<(), Lease<'p>> {
        let (head, len, cap) = (
            self.shared.head.get(),
            self.shared.len.get(),
            self.slots.len(),
        );
        if len >= cap {
            return Err(lease);
        }
        let head = (head + cap - 1) % cap;
        self.slots[head].set(Some(lease));
        self.shared.head.set(head);
        self.shared.len.set(len + 1);
        Ok(())
    }

    fn pop_front(&self) -> Option<Lease<'p>> {
        let (head, len) = (self.shared.head.get(), self.shared.len.get());
        if len == 0 {
            return None;
        }
        let lease = self.slots[head].take();
        self.shared.head.set((head + 1) % self.slots.len());
        self.shared.len.set(len - 1);
        lease
    }

    /// Copies `bytes` after the last handed-off segment's bytes if they fit in its room.
    fn append_to_last(&self, bytes: &[u8]) -> bool {
        let len = self.shared.len.get();
        if len == 0 {
            return false;
        }
        let slot = &self.slots[(self.shared.head.get() + len - 1) % self.slots.len()];
        let Some(mut last) = slot.take() else {
            return false;
        };
        let at = last.len();
        let fits = bytes.len() <= last.capacity() - at;
        if fits {
            last.buf_mut()[at..at + bytes.len()].copy_from_slice(bytes);
            let _ = last.set_len(at + bytes.len());
        }
        slot.set(Some(last));
        fits
    }

    /// Gives every handed-off segment back; returns how many.
    fn clear(&self) -> usize {
        let mut n = 0;
        while self.pop_front().is_some() {
            n += 1;
        }
        self.shared.head.set(0);
        n
    }
}

/// The writer's own state.
struct WriterState<'p> {
    /// The segment being written: bytes `..len()` are advanced but not flushed.
    current: Option<Lease<'p>>,
    /// Bytes advanced in all.
    written: u64,
}

/// A one-way byte pipe over pool buffers, with a writer half and a reader half.
///
/// `SEGS` is the capacity of its segment lists (the hard cap on
/// [`PipeOptions::max_segments`]); the pipe lives wherever its owner puts it (a handler's
/// struct, a task's frame, the stack), allocates nothing, and its halves
/// ([`Pipe::split`], [`Pipe::writer`], [`Pipe::reader`]) carry no `SEGS`.
///
/// Segments are user-tier leases of the [`BufPool`] ([`BufPool::try_lease_user`]), never
/// buffers given to the kernel. See the [module documentation](super) for the protocol.
pub struct Pipe<'p, const SEGS: usize = 8> {
    shared: Shared<'p>,
    options: PipeOptions,
    handoff: [Cell<Option<Lease<'p>>>; SEGS],
    segs: [Option<Segment<'p>>; SEGS],
    cursor: Cursor,
    writer: WriterState<'p>,
}

impl<'p, const SEGS: usize> Pipe<'p, SEGS> {
    /// An empty pipe taking its segments from `pool`'s user tier.
    ///
    /// # Errors
    ///
    /// [`PipeError::Config`] when `SEGS` or `max_segments` is 0, or a non-zero
    /// `pause_threshold` comes with a `resume_threshold` of 0 or above it.
    pub fn new(pool: BufPool<'p>, options: PipeOptions) -> Result<Self, PipeError> {
        if SEGS == 0 || options.max_segments == 0 {
            return Err(PipeError::Config("a pipe needs at least one segment"));
        }
        if options.pause_threshold > 0 && options.resume_threshold > options.pause_threshold {
            return Err(PipeError::Config(
                "resume_threshold must not exceed pause_threshold",
            ));
        }
        if options.pause_threshold > 0 && options.resume_threshold == 0 {
            return Err(PipeError::Config(
                "resume_threshold must be at least 1 when pause_threshold is set",
            ));
        }
        let max = options.max_segments.min(SEGS);
        Ok(Pipe {
            shared: Shared::new(pool, max, &options),
            options: PipeOptions {
                max_segments: max,
                ..options
            },
            handoff: [const { Cell::new(None) }; SEGS],
            segs: [const { None }; SEGS],
            cursor: Cursor::default(),
            writer: WriterState {
                current: None,
                written: 0,
            },
        })
    }

    /// Both halves at once (for as long as this borrow lasts; calling it again later gives
    /// the same pipe's halves again: all state lives in the pipe).
    pub fn split(&mut self) -> (PipeWriter<'_, 'p>, PipeReader<'_, 'p>) {
        let Pipe {
            shared,
            handoff,
            segs,
            cursor,
            writer,
            ..
        } = self;
        let shared = &*shared;
        let handoff = &handoff[..];
        (
            PipeWriter {
                shared,
                handoff,
                w: writer,
            },
            PipeReader {
                shared,
                handoff,
                segs,
                cur: cursor,
            },
        )
    }

    /// The writer half alone.
    pub fn writer(&mut self) -> PipeWriter<'_, 'p> {
        self.split().0
    }

    /// The reader half alone.
    pub fn reader(&mut self) -> PipeReader<'_, 'p> {
        self.split().1
    }

    /// Back to empty and open (both halves un-completed, positions from 0), every segment
    /// back in the pool.
    pub fn reset(&mut self) {
        for s in &mut self.segs {
            *s = None;
        }
        for s in &self.handoff {
            s.set(None);
        }
        self.cursor = Cursor::default();
        self.writer = WriterState {
            current: None,
            written: 0,
        };
        self.shared = Shared::new(self.shared.pool, self.shared.max_segments, &self.options);
    }

    /// The limits in force (`max_segments` capped at `SEGS`).
    pub fn options(&self) -> PipeOptions {
        self.options
    }

    /// The pool segments come from.
    pub fn pool(&self) -> BufPool<'p> {
        self.shared.pool
    }

    /// Segments (pool buffers) the pipe holds now.
    pub fn held_segments(&self) -> usize {
        self.shared.held.get()
    }

    /// Flushed bytes not yet consumed.
    pub fn unread_len(&self) -> usize {
        (self.shared.flushed.get() - self.shared.consumed.get()) as usize
    }

    /// Whether the writer is paused by backpressure.
    pub fn is_paused(&self) -> bool {
        self.shared.paused.get()
    }

    /// See [`PipeReader::cancel_pending_read`].
    pub fn cancel_pending_read(&self) {
        self.shared.cancel_read();
    }

    /// See [`PipeWriter::cancel_pending_flush`].
    pub fn cancel_pending_flush(&self) {
        self.shared.cancel_flush();
    }
}

impl<const SEGS: usize> fmt::Debug for Pipe<'_, SEGS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipe")
            .field("options", &self.options)
            .field("held_segments", &self.held_segments())
            .field("unread", &self.unread_len())
            .field("paused", &self.is_paused())
            .finish_non_exhaustive()
    }
}

/// The writing half of a [`Pipe`]: `get_memory` / `advance` (or `write`), then `flush`.
pub struct PipeWriter<'a, 'p> {
    shared: &'a Shared<'p>,
    handoff: &'a [Cell<Option<Lease<'p>>>],
    w: &'a mut WriterState<'p>,
}

impl<'a, 'p> PipeWriter<'a, 'p> {
    fn handoff(&self) -> Handoff<'_, 'p> {
        Handoff {
            shared: self.shared,
            slots: self.handoff,
        }
    }

    fn check_open(&self) -> Result<(), PipeError> {
        match self.shared.writer_done.get() {
            Some(_) => Err(PipeError::WriterCompleted),
            None => Ok(()),
        }
    }

    fn reader_done(&self) -> bool {
        self.shared.reader_done.get().is_some()
    }

    /// The segment size: the largest `min` [`PipeWriter::get_memory`] can serve.
    pub fn segment_size(&self) -> usize {
        self.shared.pool.buf_size()
    }

    /// Memory to write into: at least `min` bytes (at least 1 when `min` is 0), at most the
    /// rest of the current segment. Write, then [`PipeWriter::advance`] by what was written;
    /// nothing counts until then, and nothing is visible to the reader until
    /// [`PipeWriter::flush`].
    ///
    /// When the current segment has less than `min` bytes of room, its advanced bytes stay
    /// where they are (handed towards the reader, still unflushed) and a new segment is taken
    /// from the pool's user tier.
    ///
    /// # Errors
    ///
    /// Nothing changes on error.
    /// - [`PipeError::MinTooLarge`]: `min` exceeds the segment size (the pool's buffer size).
    /// - [`PipeError::SegmentLimit`]: a new segment is needed and the pipe holds
    ///   [`PipeOptions::max_segments`].
    /// - [`PipeError::Pool`]: a new segment is needed and the pool's user tier is empty
    ///   ([`PoolError::UserTierEmpty`](crate::pool::PoolError::UserTierEmpty)).
    /// - [`PipeError::WriterCompleted`].
    pub fn get_memory(&mut self, min: usize) -> Result<&mut [u8], PipeError> {
        self.check_open()?;
        let min = min.max(1);
        let size = self.segment_size();
        if min > size {
            return Err(PipeError::MinTooLarge {
                min,
                segment_size: size,
            });
        }
        if self.reader_done() {
            // Nobody will read: reuse the current segment from its start.
            if let Some(cur) = &mut self.w.current {
                let _ = cur.set_len(0);
            }
        }
        let room = self
            .w
            .current
            .as_ref()
            .map_or(0, |c| c.capacity() - c.len());
        if room < min {
            self.new_segment()?;
        }
        let cur = self.w.current.as_mut().ok_or(PipeError::WriterCompleted)?;
        let at = cur.len();
        Ok(&mut cur.buf_mut()[at..])
    }

    /// Takes a fresh current segment, handing the old one (with its unflushed bytes) towards
    /// the reader. Nothing changes on error.
    fn new_segment(&mut self) -> Result<(), PipeError> {
        let keeps_current = self.w.current.as_ref().is_some_and(|c| !c.is_empty());
        let held = self.shared.held.get();
        // An empty current segment is given back, so it does not count against the limit.
        let after = held + 1 - usize::from(self.w.current.is_some() && !keeps_current);
        if after > self.shared.max_segments {
            return Err(PipeError::SegmentLimit {
                max_segments: self.shared.max_segments,
            });
        }
        let lease = self.shared.pool.try_lease_user().map_err(PipeError::Pool)?;
        if let Some(old) = self.w.current.take() {
            if old.is_empty() {
                self.shared.give_back(1);
            } else if let Err(old) = self.handoff().push_back(old) {
                // Cannot happen: the ring holds SEGS >= max_segments >= held. Keep the bytes.
                self.w.current = Some(old);
                return Err(PipeError::SegmentLimit {
                    max_segments: self.shared.max_segments,
                });
            }
        }
        self.w.current = Some(lease);
        self.shared.held.set(self.shared.held.get() + 1);
        Ok(())
    }

    /// Counts `n` bytes written into the memory from [`PipeWriter::get_memory`] (0 is
    /// allowed and does nothing).
    ///
    /// # Errors
    ///
    /// [`PipeError::AdvanceTooFar`] when `n` exceeds the memory handed out (nothing changes);
    /// [`PipeError::WriterCompleted`].
    pub fn advance(&mut self, n: usize) -> Result<(), PipeError> {
        self.check_open()?;
        let available = self
            .w
            .current
            .as_ref()
            .map_or(0, |c| c.capacity() - c.len());
        if n > available {
            return Err(PipeError::AdvanceTooFar { n, available });
        }
        if let Some(cur) = &mut self.w.current {
            let len = cur.len() + n;
            let _ = cur.set_len(len);
            self.w.written += n as u64;
        }
        Ok(())
    }

    /// Copies `bytes` in (spanning segments as needed) and advances; no flush. All or
    /// nothing: when the segments it would need are not there, nothing is written. After the
    /// reader completed, the bytes are discarded.
    ///
    /// # Errors
    ///
    /// [`PipeError::SegmentLimit`] or [`PipeError::Pool`] when the segments needed would pass
    /// [`PipeOptions::max_segments`] or are not free in the pool's user tier (nothing is
    /// written); [`PipeError::WriterCompleted`].
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), PipeError> {
        self.check_open()?;
        if bytes.is_empty() || self.reader_done() {
            return Ok(());
        }
        let size = self.segment_size();
        let room = self
            .w
            .current
            .as_ref()
            .map_or(0, |c| c.capacity() - c.len());
        let spill = bytes.len().saturating_sub(room);
        let new = spill.div_ceil(size);
        // An empty current segment that cannot take the first byte does not exist (an empty
        // segment has `size` bytes of room), so the current segment stays counted.
        if self.shared.held.get() + new > self.shared.max_segments {
            return Err(PipeError::SegmentLimit {
                max_segments: self.shared.max_segments,
            });
        }
        if self.shared.pool.user_available() < new {
            return Err(PipeError::Pool(PoolError::UserTierEmpty {
                user_reserve: self.shared.pool.user_reserve(),
            }));
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let mem = self.get_memory(1)?;
            let k = mem.len().min(rest.len());
            mem[..k].copy_from_slice(&rest[..k]);
            self.advance(k)?;
            rest = &rest[k..];
        }
        Ok(())
    }

    /// Makes every advanced byte visible to the reader and reports backpressure and the
    /// reader's state, without waiting: the synchronous flush, for callback code.
    /// [`PipeWriter::flush`] is the same, then waits while paused.
    ///
    /// A flush whose bytes fit in the spare room of the last flushed segment the reader has
    /// not picked up yet is copied there (at most that room) and its segment goes back to the
    /// pool, so a writer of many small flushes does not hold a segment per flush. Otherwise
    /// the current segment is handed over as it is (zero copies). Either way the writer holds
    /// no segment after a flush.
    ///
    /// After the reader completed, everything unread is discarded and the result says
    /// `is_completed`.
    ///
    /// A reader waiting in [`PipeReader::read`] is woken when this makes bytes past its
    /// examined position visible, and only then.
    ///
    /// # Errors
    ///
    /// [`PipeError::WriterCompleted`].
    pub fn try_flush(&mut self) -> Result<FlushResult, PipeError> {
        self.check_open()?;
        Ok(self.commit())
    }

    /// Flushes ([`PipeWriter::try_flush`]), then waits while backpressure is on: System.IO.Pipelines'
    /// `FlushAsync`. It returns once the reader has consumed below
    /// [`PipeOptions::resume_threshold`] (`is_paused` false), the reader completed
    /// (`is_completed`), or [`PipeWriter::cancel_pending_flush`] /
    /// [`CancelHandle::cancel_pending_flush`] cancelled the wait (`is_canceled`, still
    /// `is_paused`). Without a pause threshold it never waits.
    ///
    /// Nothing is flushed until the future is first polled. Dropping it while it waits loses
    /// nothing: the bytes were flushed by the first poll.
    ///
    /// # Errors
    ///
    /// [`PipeError::WriterCompleted`].
    pub async fn flush(&mut self) -> Result<FlushResult, PipeError> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// The poll form of [`PipeWriter::flush`], for hand-written futures: flushes what was
    /// advanced (every call), then is `Pending` while paused, with `cx`'s waker registered;
    /// the reader's `advance_to*` that ends the pause, its [`PipeReader::complete`], and a
    /// cancelled flush wake it.
    ///
    /// # Errors
    ///
    /// [`PipeError::WriterCompleted`].
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<FlushResult, PipeError>> {
        let result = match self.try_flush() {
            Ok(r) => r,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if result.is_paused && !result.is_completed && !result.is_canceled {
            self.shared.writer_waker.register(cx.waker());
            return Poll::Pending;
        }
        Poll::Ready(Ok(result))
    }

    fn commit(&mut self) -> FlushResult {
        let shared = self.shared;
        let canceled = shared.cancel_flush.take();
        if let Some(error) = shared.reader_done.get() {
            let mut n = self.handoff().clear();
            if self.w.current.take().is_some() {
                n += 1;
            }
            shared.give_back(n);
            shared.flushed.set(self.w.written);
            shared.consumed.set(self.w.written);
            shared.paused.set(false);
            return FlushResult {
                is_paused: false,
                is_completed: true,
                is_canceled: canceled,
                reader_error: error,
            };
        }
        if let Some(cur) = self.w.current.take() {
            if cur.is_empty() || self.handoff().append_to_last(cur.as_slice()) {
                shared.give_back(1);
            } else if let Err(cur) = self.handoff().push_back(cur) {
                // Cannot happen (see `new_segment`); keep the bytes unflushed.
                self.w.current = Some(cur);
                return FlushResult {
                    is_paused: shared.paused.get(),
                    is_canceled: canceled,
                    ..FlushResult::default()
                };
            }
        }
        shared.flushed.set(self.w.written);
        shared.update_pause();
        shared.wake_reader_if_ready();
        FlushResult {
            is_paused: shared.paused.get(),
            is_completed: false,
            is_canceled: canceled,
            reader_error: None,
        }
    }

    /// Whether backpressure is on: the last flush found [`PipeOptions::pause_threshold`]
    /// unread bytes and the reader has not yet consumed below
    /// [`PipeOptions::resume_threshold`].
    pub fn is_paused(&self) -> bool {
        self.shared.paused.get()
    }

    /// Whether the reader completed (nothing written will be read).
    pub fn is_reader_completed(&self) -> bool {
        self.reader_done()
    }

    /// Bytes advanced but not yet flushed.
    pub fn unflushed_len(&self) -> usize {
        (self.w.written - self.shared.flushed.get()) as usize
    }

    /// Makes the next flush report `is_canceled` (once): a [`PipeWriter::flush`] waiting
    /// while paused returns at once (its task is woken). To cancel while the flush future
    /// holds the writer, use a [`CancelHandle`].
    pub fn cancel_pending_flush(&self) {
        self.shared.cancel_flush();
    }

    /// A handle that cancels pending reads and flushes of this pipe while the halves are
    /// borrowed by their futures.
    pub fn cancel_handle(&self) -> CancelHandle<'a, 'p> {
        CancelHandle {
            shared: self.shared,
        }
    }

    /// No more bytes: flushes what was advanced, then marks the writer completed, with an
    /// optional error code the reader sees in [`ReadResult::error`]. The reader reads what is
    /// left, then sees [`ReadResult::is_completed`]. Completing again does nothing; every
    /// other writer call fails with [`PipeError::WriterCompleted`] afterwards.
    pub fn complete(&mut self, error: Option<u32>) {
        if self.shared.writer_done.get().is_some() {
            return;
        }
        let _ = self.commit();
        if let Some(cur) = self.w.current.take() {
            // Only if the hand-off was impossible: the bytes cannot reach the reader.
            drop(cur);
            self.shared.give_back(1);
        }
        self.shared.writer_done.set(Some(error));
        // No flush can be waiting (it would hold the writer): a registered waker is stale.
        self.shared.writer_waker.clear();
        self.shared.wake_reader_if_ready();
    }
}

impl fmt::Debug for PipeWriter<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeWriter")
            .field("unflushed", &self.unflushed_len())
            .field("paused", &self.is_paused())
            .field("completed", &self.shared.writer_done.get().is_some())
            .finish_non_exhaustive()
    }
}

/// The reading half of a [`Pipe`]: `try_read`, then `advance_to` / `advance_to_examined`.
pub struct PipeReader<'a, 'p> {
    shared: &'a Shared<'p>,
    handoff: &'a [Cell<Option<Lease<'p>>>],
    segs: &'a mut [Option<Segment<'p>>],
    cur: &'a mut Cursor,
}

impl<'a, 'p> PipeReader<'a, 'p> {
    fn side(&mut self) -> ReadSide<'_, 'p> {
        ReadSide {
            segs: self.segs,
            carry: &mut [],
            cur: self.cur,
        }
    }

    /// Takes the flushed segments from the hand-off ring. One whose bytes fit in the spare
    /// room of the reader's last segment is copied there and goes back to the pool, so a
    /// trickle of tiny flushes to a reader waiting for more does not hold a segment each.
    fn pull(&mut self) {
        loop {
            let handoff = Handoff {
                shared: self.shared,
                slots: self.handoff,
            };
            let Some(lease) = handoff.pop_front() else {
                break;
            };
            match self.side().push(lease, usize::MAX) {
                Ok(Pushed::Added) => {}
                Ok(Pushed::Merged | Pushed::Dropped) => self.shared.give_back(1),
                Err(lease) => {
                    // Cannot happen: SEGS >= max_segments >= held. Leave it for later.
                    let _ = handoff.push_front(lease);
                    break;
                }
            }
        }
    }

    /// The unread bytes, when there is something new: bytes past the last examined position,
    /// a completed writer, or a cancelled read. `None` means "nothing new": the reader said
    /// (with [`PipeReader::advance_to_examined`]) it has seen everything there is and needs
    /// more, and no flush has added a byte past that since. This is the synchronous read, for
    /// callback code; [`PipeReader::read`] waits where this returns `None`.
    ///
    /// Always `None` after [`PipeReader::complete`].
    pub fn try_read(&mut self) -> Option<ReadResult<'_>> {
        if self.shared.reader_done.get().is_some() {
            return None;
        }
        self.pull();
        if !self.shared.reader_ready() {
            return None;
        }
        Some(self.read_now())
    }

    /// Waits until there is something new, then returns the unread bytes: System.IO.Pipelines'
    /// `ReadAsync`. "Something new" is what makes [`PipeReader::try_read`] return `Some`:
    /// a flush that adds bytes past the examined position (a flush that adds nothing past it
    /// does not wake this), the writer completing, or a cancelled read
    /// ([`PipeReader::cancel_pending_read`], [`CancelHandle::cancel_pending_read`],
    /// [`Pipe::cancel_pending_read`]).
    ///
    /// The result borrows the reader; take the positions out of its buffer, then
    /// `advance_to*` (see the reader loop in the [module documentation](super)).
    ///
    /// Dropping the future while it waits loses nothing: it takes no byte before it returns.
    ///
    /// # Errors
    ///
    /// [`PipeError::ReaderCompleted`] after [`PipeReader::complete`] (instead of waiting
    /// forever).
    pub async fn read(&mut self) -> Result<ReadResult<'_>, PipeError> {
        poll_fn(|cx| self.poll_ready(cx)).await?;
        Ok(self.read_now())
    }

    /// The poll form of [`PipeReader::read`], for hand-written futures: `Ready` with the
    /// unread bytes when there is something new, otherwise `Pending` with `cx`'s waker
    /// registered (woken once by the first flush past the examined position, the writer's
    /// [`PipeWriter::complete`], or a cancelled read).
    ///
    /// # Errors
    ///
    /// [`PipeError::ReaderCompleted`] after [`PipeReader::complete`].
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<ReadResult<'_>, PipeError>> {
        match self.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(self.read_now())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// `Ready` when a read would return now; otherwise registers `cx`'s waker.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PipeError>> {
        if self.shared.reader_done.get().is_some() {
            return Poll::Ready(Err(PipeError::ReaderCompleted));
        }
        self.pull();
        if self.shared.reader_ready() {
            return Poll::Ready(Ok(()));
        }
        self.shared.reader_waker.register(cx.waker());
        Poll::Pending
    }

    /// The view of every flushed, unconsumed byte; reports (and clears) a cancellation.
    fn read_now(&mut self) -> ReadResult<'_> {
        self.pull();
        let flushed = self.shared.flushed.get();
        let canceled = self.shared.cancel_read.take();
        let done = self.shared.writer_done.get();
        let buf = ReadSide {
            segs: self.segs,
            carry: &mut [],
            cur: self.cur,
        }
        .view(flushed);
        ReadResult::new(buf, done.is_some(), canceled, done.flatten())
    }

    /// [`PipeReader::advance_to_examined`] with `examined == consumed`: what is left will be
    /// handed out again by the next read at once.
    ///
    /// # Errors
    ///
    /// As [`PipeReader::advance_to_examined`].
    pub fn advance_to(&mut self, consumed: Position) -> Result<(), PipeError> {
        self.advance_to_examined(consumed, consumed)
    }

    /// Gives back the bytes before `consumed` (segments wholly before it return to the pool
    /// at once) and records that the bytes before `examined` were looked at: the next
    /// [`PipeReader::try_read`] is `None`, and [`PipeReader::read`] waits, until a flush adds
    /// bytes past `examined` (or the writer completes, or the read is cancelled). Pass the
    /// view's end as `examined` when the bytes there are an incomplete message.
    ///
    /// A [`PipeWriter::flush`] waiting under backpressure is woken when this ends the pause.
    ///
    /// # Errors
    ///
    /// Nothing changes on error.
    /// - [`PipeError::PositionOutOfRange`]: a position outside the last view (before its
    ///   start, which is the last consumed position, or past its end).
    /// - [`PipeError::ExaminedBeforeConsumed`].
    /// - [`PipeError::ReaderCompleted`].
    pub fn advance_to_examined(
        &mut self,
        consumed: Position,
        examined: Position,
    ) -> Result<(), PipeError> {
        if self.shared.reader_done.get().is_some() {
            return Err(PipeError::ReaderCompleted);
        }
        let mut side = self.side();
        side.check(consumed, examined)?;
        let freed = side.advance(consumed, examined);
        self.shared.give_back(freed);
        self.shared.consumed.set(consumed.0);
        self.shared.examined.set(examined.0);
        self.shared.update_pause();
        self.shared.wake_writer_if_ready();
        Ok(())
    }

    /// Flushed bytes not yet consumed.
    pub fn unread_len(&self) -> usize {
        (self.shared.flushed.get() - self.cur.consumed) as usize
    }

    /// Makes the next read return at once with [`ReadResult::is_canceled`] (once), even with
    /// nothing new: a [`PipeReader::read`] waiting now is woken. To cancel while the read
    /// future holds the reader, use a [`CancelHandle`].
    pub fn cancel_pending_read(&self) {
        self.shared.cancel_read();
    }

    /// A handle that cancels pending reads and flushes of this pipe while the halves are
    /// borrowed by their futures.
    pub fn cancel_handle(&self) -> CancelHandle<'a, 'p> {
        CancelHandle {
            shared: self.shared,
        }
    }

    /// Whether the writer completed (what is unread is all there will be).
    pub fn is_writer_completed(&self) -> bool {
        self.shared.writer_done.get().is_some()
    }

    /// No more reading: every segment goes back to the pool at once, later flushes discard
    /// their bytes and report [`FlushResult::is_completed`] (with `error`, if given), and a
    /// [`PipeWriter::flush`] waiting under backpressure is woken and returns so.
    /// Completing again does nothing.
    pub fn complete(&mut self, error: Option<u32>) {
        if self.shared.reader_done.get().is_some() {
            return;
        }
        let freed = self.side().clear();
        let handoff = Handoff {
            shared: self.shared,
            slots: self.handoff,
        };
        let more = handoff.clear();
        self.shared.give_back(freed + more);
        self.shared.reader_done.set(Some(error));
        self.shared.paused.set(false);
        self.shared.examined.set(self.cur.examined);
        // No read can be waiting (it would hold the reader): a registered waker is stale.
        self.shared.reader_waker.clear();
        self.shared.wake_writer_if_ready();
    }
}

impl fmt::Debug for PipeReader<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeReader")
            .field("consumed", &self.cur.consumed)
            .field("examined", &self.cur.examined)
            .field("unread", &self.unread_len())
            .finish_non_exhaustive()
    }
}

/// Cancels pending reads and flushes of one [`Pipe`] from anywhere on its thread, while the
/// halves are borrowed by their futures ([`PipeReader::cancel_handle`],
/// [`PipeWriter::cancel_handle`]). `Copy`; as single-threaded as the pipe.
#[derive(Clone, Copy)]
pub struct CancelHandle<'a, 'p> {
    shared: &'a Shared<'p>,
}

impl CancelHandle<'_, '_> {
    /// [`PipeReader::cancel_pending_read`]: the next read (or the one waiting) returns with
    /// [`ReadResult::is_canceled`].
    pub fn cancel_pending_read(&self) {
        self.shared.cancel_read();
    }

    /// [`PipeWriter::cancel_pending_flush`]: the next flush (or the one waiting) returns with
    /// [`FlushResult::is_canceled`].
    pub fn cancel_pending_flush(&self) {
        self.shared.cancel_flush();
    }
}

impl fmt::Debug for CancelHandle<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelHandle").finish_non_exhaustive()
    }
}
