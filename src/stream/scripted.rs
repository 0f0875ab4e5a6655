//! Scripted streams for tests: a reader and a writer that deliver, accept, wait and fail
//! exactly where a test says, to drive the composed algorithms (and anything else written
//! over the traits) through every boundary.
//!
//! No allocation, no `std`: the script is a slice of steps, usable from any test file.
//!
//! ```
//! use ringlet::stream::conformance::block_on;
//! use ringlet::stream::scripted::{Scripted, Step};
//! use ringlet::stream::{BoundedBuf, Error, Partial, read_until};
//!
//! // "PING\r\n" arrives one byte at a time, with a wait in the middle of the delimiter,
//! // then the stream ends in the middle of the next line.
//! let script = [Step::Data(b"PING\r"), Step::Pending, Step::Data(b"\nPO")];
//! let mut stream = Scripted::new(&script).chunk(1);
//! let mut mem = [0u8; 16];
//! let mut buf = BoundedBuf::new(&mut mem);
//! assert_eq!(block_on(read_until(&mut stream, &mut buf, b"\r\n")), Ok(6));
//! assert_eq!(&buf.data()[..6], b"PING\r\n");
//! buf.consume(6);
//! let end = block_on(read_until(&mut stream, &mut buf, b"\r\n"));
//! assert_eq!(end, Err(Partial::new(Error::Eof, 2)));
//! assert_eq!(buf.data(), b"PO");
//! ```

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use super::{Error, ReadSource, ReadStream, WriteSink, WriteStream};

/// One step of a [`Scripted`] reader's script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// These bytes arrive. Reads return them in parts of at most the stream's chunk size (and
    /// the caller's buffer); a read never returns bytes of two `Data` steps at once, so each
    /// step is one arrival. An empty `Data` step is skipped.
    Data(&'a [u8]),
    /// The next read waits once: its future returns `Poll::Pending` (after waking the task, so
    /// an executor polls it again), then the script goes on.
    Pending,
    /// The next read fails with this error, and the stream is done. `Fail(Error::Eof)` ends
    /// the stream early (the script's remaining steps are never delivered); a script without
    /// a `Fail` step ends with `Eof` after its last step.
    Fail(Error),
}

/// A future that is pending once (waking its task first), then ready.
struct YieldOnce {
    yielded: bool,
}

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn yield_once() -> YieldOnce {
    YieldOnce { yielded: false }
}

/// A [`ReadStream`] (and [`ReadSource`], with the default composed `read`) that plays a script
/// of [`Step`]s: data in chosen parts, waits, and errors or the end of the stream at chosen
/// points.
///
/// It keeps the contract itself (an empty buffer is `Ok(0)` without touching the script, data
/// and errors never come together) and counts what its caller does:
/// [`reads`](Scripted::reads) and [`reads_after_end`](Scripted::reads_after_end), the
/// non-empty reads made after it had failed (which the contract forbids; such a read gets the
/// same error again). Its `read_some` is cancel-safe: a read dropped while it waits delivers
/// nothing and consumes no step.
#[derive(Clone, Debug)]
pub struct Scripted<'a> {
    steps: &'a [Step<'a>],
    step: usize,
    offset: usize,
    chunk: usize,
    end: Option<Error>,
    reads: usize,
    reads_after_end: usize,
    delivered: usize,
}

impl<'a> Scripted<'a> {
    /// A stream that plays `steps`, with no limit on the size of a read.
    pub const fn new(steps: &'a [Step<'a>]) -> Scripted<'a> {
        Scripted {
            steps,
            step: 0,
            offset: 0,
            chunk: usize::MAX,
            end: None,
            reads: 0,
            reads_after_end: 0,
            delivered: 0,
        }
    }

    /// Limits every read to at most `max` bytes (`chunk(1)`: one byte at a time). A `max` of
    /// 0 is taken as 1, because a read that succeeds returns at least one byte.
    pub const fn chunk(mut self, max: usize) -> Scripted<'a> {
        self.chunk = if max == 0 { 1 } else { max };
        self
    }

    /// Non-empty reads made so far (completed ones, including the failing ones).
    pub fn reads(&self) -> usize {
        self.reads
    }

    /// Non-empty reads made after the stream had reported an error: a contract violation by
    /// the caller. A correct caller leaves this at 0.
    pub fn reads_after_end(&self) -> usize {
        self.reads_after_end
    }

    /// Bytes delivered so far.
    pub fn delivered(&self) -> usize {
        self.delivered
    }

    /// The error the stream has reported, if it has.
    pub fn ended(&self) -> Option<Error> {
        self.end
    }
}

impl ReadStream for Scripted<'_> {
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(e) = self.end {
            self.reads_after_end += 1;
            self.reads += 1;
            return Err(e);
        }
        loop {
            match self.steps.get(self.step).copied() {
                None => {
                    self.end = Some(Error::Eof);
                    self.reads += 1;
                    return Err(Error::Eof);
                }
                Some(Step::Fail(e)) => {
                    self.step += 1;
                    self.end = Some(e);
                    self.reads += 1;
                    return Err(e);
                }
                Some(Step::Pending) => {
                    // The step is consumed only once the wait is over: a read dropped while
                    // pending leaves the script where it was.
                    yield_once().await;
                    self.step += 1;
                }
                Some(Step::Data(data)) => {
                    let rest = &data[self.offset..];
                    if rest.is_empty() {
                        self.step += 1;
                        self.offset = 0;
                        continue;
                    }
                    let n = rest.len().min(buf.len()).min(self.chunk);
                    buf[..n].copy_from_slice(&rest[..n]);
                    self.offset += n;
                    if self.offset == data.len() {
                        self.step += 1;
                        self.offset = 0;
                    }
                    self.delivered += n;
                    self.reads += 1;
                    return Ok(n);
                }
            }
        }
    }
}

impl ReadSource for Scripted<'_> {}

/// One step of a [`ScriptedSink`]'s script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkStep {
    /// The next write accepts at most this many bytes (at least one: `Accept(0)` is taken as
    /// `Accept(1)`, because a write that succeeds accepts at least one byte).
    Accept(usize),
    /// The next write waits once (`Poll::Pending` after waking the task), then the script goes
    /// on.
    Pending,
    /// The next write (or flush, or write_eof) fails with this error, and the sink is done.
    Fail(Error),
}

/// A [`WriteSink`] that plays a script of [`SinkStep`]s (each write takes the next step; once
/// the script is over, writes accept up to the chunk size) and records what it accepted into
/// a caller buffer, with what was flushed and where the end of the stream came.
///
/// A non-empty write to a full record buffer fails with [`Error::Full`]; after the end of the
/// stream, with [`Error::Closed`]; after a failure, with the same error (counted in
/// [`writes_after_end`](ScriptedSink::writes_after_end)).
/// [`write_eof`](WriteSink::write_eof) flushes first, then marks the end.
///
/// By default it cannot start a flush without being awaited
/// ([`start_flush`](WriteStream::start_flush) is `Ok(false)`);
/// [`starts_flushes`](ScriptedSink::starts_flushes) makes it a writer that can.
#[derive(Debug)]
pub struct ScriptedSink<'a> {
    store: &'a mut [u8],
    len: usize,
    steps: &'a [SinkStep],
    step: usize,
    chunk: usize,
    flushed: usize,
    flushes: usize,
    starts: bool,
    started: usize,
    eof: bool,
    end: Option<Error>,
    writes_after_end: usize,
}

impl<'a> ScriptedSink<'a> {
    /// A flush (waited for or started): the sink's error once it ended, or the script's
    /// next step if that is a failure (which ends the sink); otherwise every byte written so
    /// far counts as flushed.
    fn flush_step(&mut self) -> Result<(), Error> {
        if let Some(e) = self.end {
            return Err(e);
        }
        if let Some(SinkStep::Fail(e)) = self.steps.get(self.step).copied() {
            self.step += 1;
            self.end = Some(e);
            return Err(e);
        }
        self.flushed = self.len;
        Ok(())
    }

    /// A sink that records into `store` and plays `steps`, with no limit on a write's size
    /// once the script is over.
    pub fn new(store: &'a mut [u8], steps: &'a [SinkStep]) -> ScriptedSink<'a> {
        ScriptedSink {
            store,
            len: 0,
            steps,
            step: 0,
            chunk: usize::MAX,
            flushed: 0,
            flushes: 0,
            starts: false,
            started: 0,
            eof: false,
            end: None,
            writes_after_end: 0,
        }
    }

    /// Limits every write to at most `max` bytes (0 is taken as 1).
    pub fn chunk(mut self, max: usize) -> ScriptedSink<'a> {
        self.chunk = max.max(1);
        self
    }

    /// The bytes accepted so far, in order.
    pub fn written(&self) -> &[u8] {
        &self.store[..self.len]
    }

    /// How many of the accepted bytes a flush has handed on.
    pub fn flushed(&self) -> usize {
        self.flushed
    }

    /// Completed flushes (including the one `write_eof` does); started ones are
    /// [`started_flushes`](ScriptedSink::started_flushes).
    pub fn flushes(&self) -> usize {
        self.flushes
    }

    /// Makes [`start_flush`](WriteStream::start_flush) start flushes: it hands every accepted
    /// byte on at once (they count in [`flushed`](ScriptedSink::flushed)) and returns
    /// `Ok(true)`, or fails as a flush would (a `Fail` step next in the script, or an earlier
    /// failure).
    pub fn starts_flushes(mut self) -> ScriptedSink<'a> {
        self.starts = true;
        self
    }

    /// Flushes started by [`start_flush`](WriteStream::start_flush) (not waited for).
    pub fn started_flushes(&self) -> usize {
        self.started
    }

    /// Whether the end of the stream has been written.
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Non-empty writes made after the sink had reported an error (a contract violation by
    /// the caller).
    pub fn writes_after_end(&self) -> usize {
        self.writes_after_end
    }

    /// Takes the next step that is not a wait (waiting on `Pending` ones); `None` once the
    /// script is over.
    async fn next_step(&mut self) -> Option<SinkStep> {
        loop {
            match self.steps.get(self.step).copied() {
                Some(SinkStep::Pending) => {
                    yield_once().await;
                    self.step += 1;
                }
                other => return other,
            }
        }
    }
}

impl WriteStream for ScriptedSink<'_> {
    async fn write_some(&mut self, buf: &[u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(e) = self.end {
            self.writes_after_end += 1;
            return Err(e);
        }
        if self.eof {
            return Err(Error::Closed);
        }
        let limit = match self.next_step().await {
            Some(SinkStep::Fail(e)) => {
                self.step += 1;
                self.end = Some(e);
                return Err(e);
            }
            Some(SinkStep::Accept(k)) => {
                self.step += 1;
                k.max(1)
            }
            Some(SinkStep::Pending) | None => usize::MAX,
        };
        let room = self.store.len() - self.len;
        if room == 0 {
            self.end = Some(Error::Full);
            return Err(Error::Full);
        }
        let n = buf.len().min(limit).min(self.chunk).min(room);
        self.store[self.len..self.len + n].copy_from_slice(&buf[..n]);
        self.len += n;
        Ok(n)
    }

    async fn flush(&mut self) -> Result<(), Error> {
        self.flush_step()?;
        self.flushes += 1;
        Ok(())
    }

    fn start_flush(&mut self) -> Result<bool, Error> {
        if !self.starts {
            return Ok(false);
        }
        self.flush_step()?;
        self.started += 1;
        Ok(true)
    }
}

impl WriteSink for ScriptedSink<'_> {
    async fn write_eof(&mut self) -> Result<(), Error> {
        self.flush().await?;
        self.eof = true;
        Ok(())
    }
}
