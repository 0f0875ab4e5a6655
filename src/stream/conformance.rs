//! The stream contract as checks: reusable functions that any [`ReadStream`] /
//! [`ReadSource`] / [`WriteSink`] in ringlet must pass, a [`Checked`] wrapper that asserts the
//! contract on every call, and [`block_on`], a tiny executor for streams that never wait on
//! the outside world.
//!
//! The checks are `async`, so they run wherever the stream can make progress: under
//! [`block_on`] for memory and scripted streams, inside an executor task on a reactor for a
//! connection. They panic (with a message naming the rule) on the first violation, like
//! `assert!`: they are meant for tests. They need no allocation and no `std`.
//!
//! What [`check_read_stream`] proves about a stream that should deliver `expected` and then
//! fail with `end` (usually [`Error::Eof`]), each part on a fresh stream from the factory:
//!
//! - **Trichotomy**: every `read_some` is `Ok(n)` with `1 <= n <= buf.len()`, or an error with
//!   no data: read in parts of 1, 3 and 64 bytes, the parts are exactly `expected`, in order,
//!   then the error is `end`, and nothing arrives with it.
//! - **Empty-buffer rule**: an empty read is `Ok(0)` at every offset, also right before the
//!   end is discovered; so is a vectored read whose buffers are all empty.
//! - **Scatter order**: a vectored read fills its first buffer before its second.
//! - **No read after error**: every composed algorithm ([`read`], [`read_vectored`],
//!   [`read_until`], [`read_to_end`], [`relay`]) runs over [`Checked`], which panics if it
//!   reads after the stream failed.
//! - **Partial counts**: [`read`] and [`read_vectored`] that reach the end report
//!   `Partial { error: end, count }` with the bytes really in the buffer; [`read_to_end`]
//!   succeeds exactly when the rest fits (`Full` with the count otherwise); [`read_until`]
//!   returns each record, keeps bytes past the delimiter, and at the end (also in the middle of
//!   a delimiter) reports the bytes it holds; [`relay`] delivers every byte and counts them.
//!
//! [`check_read_source`] adds the same partial-count checks for the source's own
//! [`ReadSource::read`] / [`ReadSource::read_vectored`] (which a source may override).
//! [`check_write_sink`] checks the write side, `write_eof` ordering included.

use core::future::{Future, IntoFuture};
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use super::{
    BoundedBuf, Error, Partial, ReadSource, ReadStream, RelayError, WriteSink, WriteStream, read,
    read_to_end, read_until, read_vectored, relay,
};

/// How many times [`block_on`] polls a future before it gives up.
pub const POLL_LIMIT: usize = 1_000_000;

/// Runs `fut` to completion on this thread by polling it with a no-op waker, and returns its
/// output.
///
/// For futures that make progress every time they are polled: memory and scripted streams,
/// and the composed algorithms over them (a scripted wait is one extra poll). Not for futures
/// that wait on the kernel or another thread: nothing here sleeps.
///
/// # Panics
///
/// If the future is still pending after [`POLL_LIMIT`] polls (it waits on something
/// `block_on` cannot drive, or spins): a test fails instead of hanging.
pub fn block_on<F: IntoFuture>(fut: F) -> F::Output {
    let mut fut = pin!(fut.into_future());
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..POLL_LIMIT {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("block_on: the future is still pending after {POLL_LIMIT} polls");
}

/// A stream wrapper that asserts the contract on every call and forwards to the stream
/// inside.
///
/// Reading: each result is `Ok(0)` for an empty buffer, `Ok(n)` with `1 <= n <= len`
/// otherwise, or an error for a non-empty buffer only; no non-empty read (or write) follows an
/// error. [`ReadSource::read`] succeeds with exactly `buf.len()` and fails with a count no
/// larger than the buffer. Writing: the same rules for `write_some`, and nothing non-empty is
/// written after an error. Wrap a stream in it to check the code that uses the stream.
///
/// # Panics
///
/// Every method panics on a violation, naming the rule.
#[derive(Clone, Debug)]
pub struct Checked<S> {
    inner: S,
    failed: Option<Error>,
}

impl<S> Checked<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Checked<S> {
        Checked {
            inner,
            failed: None,
        }
    }

    /// The stream inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stream inside, mutably (operations on it are not checked).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The error the stream reported, if it did.
    pub fn failed(&self) -> Option<Error> {
        self.failed
    }

    fn before(&self, len: usize, op: &str) {
        if let Some(e) = self.failed {
            assert!(
                len == 0,
                "contract: {op} called after the stream failed with {e:?}"
            );
        }
    }

    fn after(&mut self, len: usize, r: Result<usize, Error>, op: &str) -> Result<usize, Error> {
        match r {
            Ok(n) if len == 0 => assert!(
                n == 0,
                "contract: {op} of an empty buffer is Ok(0), got Ok({n})"
            ),
            Ok(n) => assert!(
                n >= 1 && n <= len,
                "contract: {op} of {len} bytes succeeded with {n}, not 1..={len}"
            ),
            Err(e) => {
                assert!(
                    len != 0,
                    "contract: {op} of an empty buffer is Ok(0) whatever the state, got Err({e:?})"
                );
                self.failed = Some(e);
            }
        }
        r
    }

    fn after_full(
        &mut self,
        len: usize,
        r: Result<usize, Partial>,
        op: &str,
    ) -> Result<usize, Partial> {
        match r {
            Ok(n) => assert!(
                n == len,
                "contract: {op} of {len} bytes succeeded with {n}, not all of them"
            ),
            Err(p) => {
                // A complete operation that transferred everything succeeded.
                assert!(
                    p.count < len,
                    "contract: {op} of {len} bytes failed with a count of {} ({:?})",
                    p.count,
                    p.error
                );
                self.failed = Some(p.error);
            }
        }
        r
    }
}

fn total(bufs: &[&mut [u8]]) -> usize {
    bufs.iter().map(|b| b.len()).sum()
}

fn total_ref(bufs: &[&[u8]]) -> usize {
    bufs.iter().map(|b| b.len()).sum()
}

impl<S: ReadStream> ReadStream for Checked<S> {
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = buf.len();
        self.before(len, "read_some");
        let r = self.inner.read_some(buf).await;
        self.after(len, r, "read_some")
    }

    async fn read_some_vectored(&mut self, bufs: &mut [&mut [u8]]) -> Result<usize, Error> {
        let len = total(bufs);
        self.before(len, "read_some_vectored");
        let r = self.inner.read_some_vectored(bufs).await;
        self.after(len, r, "read_some_vectored")
    }
}

impl<S: ReadSource> ReadSource for Checked<S> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Partial> {
        let len = buf.len();
        self.before(len, "read");
        let r = self.inner.read(buf).await;
        self.after_full(len, r, "read")
    }

    async fn read_vectored(&mut self, bufs: &mut [&mut [u8]]) -> Result<usize, Partial> {
        let len = total(bufs);
        self.before(len, "read_vectored");
        let r = self.inner.read_vectored(bufs).await;
        self.after_full(len, r, "read_vectored")
    }
}

impl<S: WriteStream> WriteStream for Checked<S> {
    async fn write_some(&mut self, buf: &[u8]) -> Result<usize, Error> {
        let len = buf.len();
        self.before(len, "write_some");
        let r = self.inner.write_some(buf).await;
        self.after(len, r, "write_some")
    }

    async fn write_some_vectored(&mut self, bufs: &[&[u8]]) -> Result<usize, Error> {
        let len = total_ref(bufs);
        self.before(len, "write_some_vectored");
        let r = self.inner.write_some_vectored(bufs).await;
        self.after(len, r, "write_some_vectored")
    }

    async fn flush(&mut self) -> Result<(), Error> {
        self.before(1, "flush");
        let r = self.inner.flush().await;
        if let Err(e) = r {
            self.failed = Some(e);
        }
        r
    }

    fn start_flush(&mut self) -> Result<bool, Error> {
        self.before(1, "start_flush");
        let r = self.inner.start_flush();
        if let Err(e) = r {
            self.failed = Some(e);
        }
        r
    }
}

impl<S: WriteSink> WriteSink for Checked<S> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Partial> {
        let len = buf.len();
        self.before(len, "write");
        let r = self.inner.write(buf).await;
        self.after_full(len, r, "write")
    }

    async fn write_vectored(&mut self, bufs: &[&[u8]]) -> Result<usize, Partial> {
        let len = total_ref(bufs);
        self.before(len, "write_vectored");
        let r = self.inner.write_vectored(bufs).await;
        self.after_full(len, r, "write_vectored")
    }

    async fn write_eof_with(&mut self, buf: &[u8]) -> Result<usize, Partial> {
        self.before(1, "write_eof_with");
        let len = buf.len();
        let r = self.inner.write_eof_with(buf).await;
        if let Err(p) = r {
            assert!(
                p.count <= len,
                "contract: write_eof_with of {len} bytes failed with a count of {}",
                p.count
            );
            self.failed = Some(p.error);
        } else if let Ok(n) = r {
            assert!(
                n == len,
                "contract: write_eof_with of {len} bytes returned {n}"
            );
        }
        r
    }

    async fn write_eof_vectored(&mut self, bufs: &[&[u8]]) -> Result<usize, Partial> {
        self.before(1, "write_eof_vectored");
        let len = total_ref(bufs);
        let r = self.inner.write_eof_vectored(bufs).await;
        if let Err(p) = r {
            assert!(
                p.count <= len,
                "contract: write_eof_vectored count too large"
            );
            self.failed = Some(p.error);
        } else if let Ok(n) = r {
            assert!(
                n == len,
                "contract: write_eof_vectored of {len} bytes returned {n}"
            );
        }
        r
    }

    async fn write_eof(&mut self) -> Result<(), Error> {
        self.before(1, "write_eof");
        let r = self.inner.write_eof().await;
        if let Err(e) = r {
            self.failed = Some(e);
        }
        r
    }
}

/// Reads everything with `read_some` in parts of `size` bytes (at most 64), checking each part
/// against `expected`, an empty read before each, and the end.
async fn drain<S: ReadStream>(s: &mut Checked<S>, expected: &[u8], end: Error, size: usize) {
    let mut scratch = [0u8; 64];
    let mut pos = 0;
    loop {
        assert_eq!(
            s.read_some(&mut []).await,
            Ok(0),
            "empty-buffer rule at offset {pos}"
        );
        let buf = &mut scratch[..size];
        match s.read_some(buf).await {
            Ok(n) => {
                assert!(
                    pos + n <= expected.len(),
                    "read_some({size}) at offset {pos} returned {n} bytes: more than the {} expected",
                    expected.len()
                );
                assert_eq!(
                    &buf[..n],
                    &expected[pos..pos + n],
                    "read_some({size}) at offset {pos}: wrong bytes"
                );
                pos += n;
            }
            Err(e) => {
                assert_eq!(
                    pos,
                    expected.len(),
                    "read_some({size}) failed with {e:?} after {pos} of {} bytes",
                    expected.len()
                );
                assert_eq!(e, end, "read_some({size}) ended with the wrong error");
                return;
            }
        }
    }
}

/// A delimiter that does not occur in `expected` and starts with its last byte (or `\n` for
/// empty data): read_until with it ends in the middle of the delimiter.
fn absent_delimiter(expected: &[u8]) -> ([u8; 3], usize) {
    let Some(&last) = expected.last() else {
        return ([b'\n', 0, 0], 1);
    };
    let occurs = |d: &[u8]| expected.windows(d.len()).any(|w| w == d);
    for x in 0..=255u8 {
        if !occurs(&[last, x]) {
            return ([last, x, 0], 2);
        }
    }
    for x in 0..=255u8 {
        for y in 0..=255u8 {
            if !occurs(&[last, x, y]) {
                return ([last, x, y], 3);
            }
        }
    }
    panic!(
        "conformance: every 3-byte sequence starting with the last byte occurs in the data; use other test data"
    );
}

/// Checks a [`ReadStream`] against the contract (see the [module documentation](self) for
/// the list). `make` returns a fresh stream that delivers exactly `expected`, then fails with
/// `end` (usually [`Error::Eof`]); it is called about a dozen times.
///
/// # Panics
///
/// On the first violation, naming the rule.
pub async fn check_read_stream<S, F>(mut make: F, expected: &[u8], end: Error)
where
    S: ReadStream,
    F: AsyncFnMut() -> S,
{
    // Trichotomy and the empty-buffer rule, in parts of several sizes.
    for size in [1, 3, 64] {
        let mut s = Checked::new(make().await);
        drain(&mut s, expected, end, size).await;
        assert_eq!(s.failed(), Some(end));
    }

    // Empty sequences, and scatter order.
    {
        let mut s = Checked::new(make().await);
        assert_eq!(s.read_some_vectored(&mut []).await, Ok(0), "empty sequence");
        assert_eq!(
            s.read_some_vectored(&mut [&mut [], &mut []]).await,
            Ok(0),
            "sequence of empty buffers"
        );
        let mut pos = 0;
        loop {
            let (mut a, mut c) = ([0u8; 3], [0u8; 5]);
            match s.read_some_vectored(&mut [&mut a, &mut [], &mut c]).await {
                Ok(n) => {
                    assert!(pos + n <= expected.len(), "vectored read: too many bytes");
                    let in_a = n.min(3);
                    assert_eq!(
                        &a[..in_a],
                        &expected[pos..pos + in_a],
                        "vectored read: first buffer"
                    );
                    assert_eq!(
                        &c[..n - in_a],
                        &expected[pos + in_a..pos + n],
                        "vectored read: the third buffer, after the first is full"
                    );
                    pos += n;
                }
                Err(e) => {
                    assert_eq!((pos, e), (expected.len(), end), "vectored read: the end");
                    break;
                }
            }
        }
    }

    // read: exact, and the partial count at the end.
    for overshoot in [0, 5] {
        let mut s = Checked::new(make().await);
        let mut piece = [0u8; 45];
        let mut pos = 0;
        while expected.len() - pos > 40 {
            assert_eq!(
                read(&mut s, &mut piece[..40]).await,
                Ok(40),
                "read(40) at {pos}"
            );
            assert_eq!(
                &piece[..40],
                &expected[pos..pos + 40],
                "read(40) at {pos}: bytes"
            );
            pos += 40;
        }
        let rest = expected.len() - pos;
        let r = read(&mut s, &mut piece[..rest + overshoot]).await;
        if overshoot == 0 {
            assert_eq!(r, Ok(rest), "read of exactly the last {rest} bytes");
            assert_eq!(
                s.read_some(&mut piece).await,
                Err(end),
                "the end after read"
            );
        } else {
            assert_eq!(
                r,
                Err(Partial::new(end, rest)),
                "read past the end reports the bytes it read"
            );
        }
        assert_eq!(&piece[..rest], &expected[pos..], "read: the last bytes");
    }

    // read_vectored: the partial count across buffers.
    {
        let mut s = Checked::new(make().await);
        let mut pos = 0;
        loop {
            let (mut a, mut b) = ([0u8; 7], [0u8; 13]);
            let r = read_vectored(&mut s, &mut [&mut a, &mut b]).await;
            let n = match r {
                Ok(n) => {
                    assert_eq!(n, 20, "read_vectored fills the whole sequence");
                    n
                }
                Err(p) => {
                    assert_eq!(
                        p,
                        Partial::new(end, expected.len() - pos),
                        "read_vectored at the end reports the bytes it read"
                    );
                    p.count
                }
            };
            let in_a = n.min(7);
            assert_eq!(
                &a[..in_a],
                &expected[pos..pos + in_a],
                "read_vectored: first buffer"
            );
            assert_eq!(
                &b[..n - in_a],
                &expected[pos + in_a..pos + n],
                "read_vectored: second"
            );
            pos += n;
            if r.is_err() {
                break;
            }
        }
    }

    // read_to_end: the rest fits exactly, has room to spare, or is one byte too long.
    for room in [0isize, 10, -1] {
        let rest = expected.len().min(32);
        if room < 0 && rest == 0 {
            // Nothing to be one byte short of: a zero-byte buffer probed at the end.
            let mut s = Checked::new(make().await);
            let want = if end == Error::Eof {
                Ok(0)
            } else {
                Err(Partial::new(end, 0))
            };
            assert_eq!(
                read_to_end(&mut s, &mut []).await,
                want,
                "read_to_end of nothing"
            );
            continue;
        }
        let mut s = Checked::new(make().await);
        let skip = expected.len() - rest;
        let mut pos = 0;
        let mut piece = [0u8; 42];
        while pos < skip {
            let k = (skip - pos).min(40);
            assert_eq!(
                read(&mut s, &mut piece[..k]).await,
                Ok(k),
                "skipping to the last {rest} bytes"
            );
            pos += k;
        }
        let cap = (rest as isize + room) as usize;
        let r = read_to_end(&mut s, &mut piece[..cap]).await;
        if room < 0 {
            assert_eq!(
                r,
                Err(Partial::new(Error::Full, cap)),
                "read_to_end with one byte too little room"
            );
            assert_eq!(
                &piece[..cap],
                &expected[skip..skip + cap],
                "read_to_end: bytes"
            );
        } else {
            let want = if end == Error::Eof {
                Ok(rest)
            } else {
                Err(Partial::new(end, rest))
            };
            assert_eq!(r, want, "read_to_end with {room} bytes to spare");
            assert_eq!(&piece[..rest], &expected[skip..], "read_to_end: bytes");
        }
    }

    // read_until: records end at each occurrence of the last byte; bytes past one are kept.
    {
        let mut s = Checked::new(make().await);
        let mut mem = [0u8; 64];
        let mut buf = BoundedBuf::new(&mut mem);
        let delim = [expected.last().copied().unwrap_or(b'\n')];
        let mut pos = 0;
        loop {
            match read_until(&mut s, &mut buf, &delim).await {
                Ok(n) => {
                    assert!(n >= 1 && n <= buf.len(), "read_until: record of {n} bytes");
                    assert_eq!(
                        &buf.data()[..n],
                        &expected[pos..pos + n],
                        "read_until: record at {pos}"
                    );
                    assert_eq!(
                        buf.data()[n - 1],
                        delim[0],
                        "read_until: record ends with the delimiter"
                    );
                    assert!(
                        !buf.data()[..n - 1].contains(&delim[0]),
                        "read_until: the first occurrence ends the record"
                    );
                    buf.consume(n);
                    pos += n;
                }
                Err(p) if p.error == Error::Full => {
                    assert_eq!(p.count, 64, "read_until: Full only when the buffer is full");
                    assert_eq!(
                        buf.data(),
                        &expected[pos..pos + 64],
                        "read_until: a full buffer"
                    );
                    buf.consume(64);
                    pos += 64;
                }
                Err(p) => {
                    assert_eq!(p.error, end, "read_until: the end");
                    assert_eq!(p.count, buf.len());
                    assert_eq!(
                        buf.data(),
                        &expected[pos..],
                        "read_until: the bytes held at the end"
                    );
                    break;
                }
            }
        }
    }

    // read_until: the stream ends in the middle of a delimiter.
    {
        let (delim, len) = absent_delimiter(expected);
        let delim = &delim[..len];
        let mut s = Checked::new(make().await);
        let mut mem = [0u8; 64];
        let mut buf = BoundedBuf::new(&mut mem);
        let mut pos = 0;
        loop {
            match read_until(&mut s, &mut buf, delim).await {
                Ok(n) => panic!(
                    "read_until found {delim:?}, which does not occur, at {}",
                    pos + n
                ),
                Err(p) if p.error == Error::Full => {
                    assert_eq!(
                        buf.data(),
                        &expected[pos..pos + 64],
                        "read_until: a full buffer"
                    );
                    // Keep the last byte: it may start the delimiter.
                    buf.consume(63);
                    pos += 63;
                }
                Err(p) => {
                    assert_eq!(
                        (p.error, p.count, buf.data()),
                        (end, expected.len() - pos, &expected[pos..]),
                        "read_until ending mid-delimiter reports every byte it holds"
                    );
                    break;
                }
            }
        }
    }

    // relay: every byte arrives, in order, and the count is right.
    {
        let mut s = Checked::new(make().await);
        let mut sink = CompareSink {
            expected,
            pos: 0,
            flushes: 0,
        };
        let mut buf = [0u8; 7];
        let r = relay(&mut s, &mut sink, &mut buf).await;
        let n = expected.len() as u64;
        let want = if end == Error::Eof {
            Ok(n)
        } else {
            Err(RelayError::Read {
                error: end,
                relayed: n,
            })
        };
        assert_eq!(r, want, "relay");
        assert_eq!(sink.pos, expected.len(), "relay delivered every byte");
        assert!(
            sink.flushes >= expected.len().div_ceil(7),
            "relay flushes after each read it drained"
        );
    }
}

/// A writer that checks what it is given against `expected`, accepting at most 5 bytes a
/// write.
struct CompareSink<'a> {
    expected: &'a [u8],
    pos: usize,
    flushes: usize,
}

impl WriteStream for CompareSink<'_> {
    async fn write_some(&mut self, buf: &[u8]) -> Result<usize, Error> {
        let n = buf.len().min(5);
        assert!(
            self.pos + n <= self.expected.len(),
            "relay wrote more than the source held"
        );
        assert_eq!(
            &buf[..n],
            &self.expected[self.pos..self.pos + n],
            "relay: bytes at {}",
            self.pos
        );
        self.pos += n;
        Ok(n)
    }

    async fn flush(&mut self) -> Result<(), Error> {
        self.flushes += 1;
        Ok(())
    }
}

/// Checks a [`ReadSource`]'s own [`read`](ReadSource::read) and
/// [`read_vectored`](ReadSource::read_vectored): exact reads, and at the end the count of the
/// bytes really read, for a fresh stream from `make` that delivers `expected`, then fails with
/// `end`. Run [`check_read_stream`] too for the `read_some` side.
///
/// # Panics
///
/// On the first violation.
pub async fn check_read_source<S, F>(mut make: F, expected: &[u8], end: Error)
where
    S: ReadSource,
    F: AsyncFnMut() -> S,
{
    for overshoot in [0, 1, 9] {
        let mut s = Checked::new(make().await);
        assert_eq!(
            ReadSource::read(&mut s, &mut []).await,
            Ok(0),
            "read of an empty buffer"
        );
        let mut piece = [0u8; 40];
        let mut pos = 0;
        while expected.len() - pos > 30 {
            assert_eq!(ReadSource::read(&mut s, &mut piece[..30]).await, Ok(30));
            assert_eq!(&piece[..30], &expected[pos..pos + 30], "read(30) at {pos}");
            pos += 30;
        }
        let rest = expected.len() - pos;
        let r = ReadSource::read(&mut s, &mut piece[..rest + overshoot]).await;
        if overshoot == 0 {
            assert_eq!(r, Ok(rest), "ReadSource::read of exactly the rest");
        } else {
            assert_eq!(
                r,
                Err(Partial::new(end, rest)),
                "ReadSource::read past the end"
            );
        }
        assert_eq!(
            &piece[..rest],
            &expected[pos..],
            "ReadSource::read: the last bytes"
        );
    }
    {
        let mut s = Checked::new(make().await);
        let mut pos = 0;
        loop {
            let (mut a, mut b) = ([0u8; 4], [0u8; 11]);
            let r = s.read_vectored(&mut [&mut a, &mut [], &mut b]).await;
            let n = match r {
                Ok(n) => {
                    assert_eq!(n, 15, "ReadSource::read_vectored fills the sequence");
                    n
                }
                Err(p) => {
                    assert_eq!(
                        p,
                        Partial::new(end, expected.len() - pos),
                        "read_vectored at the end"
                    );
                    p.count
                }
            };
            let in_a = n.min(4);
            assert_eq!(&a[..in_a], &expected[pos..pos + in_a]);
            assert_eq!(&b[..n - in_a], &expected[pos + in_a..pos + n]);
            pos += n;
            if r.is_err() {
                break;
            }
        }
    }
}

/// What a sink has delivered so far, as [`check_write_sink`] observes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed<'a> {
    /// The bytes delivered (for a buffering sink: at least everything flushed), in order.
    pub data: &'a [u8],
    /// Whether the end of the stream has been delivered.
    pub eof: bool,
}

/// Checks a [`WriteSink`]: `write_some` accepts `1..=len` bytes or fails with none, empty
/// writes are `Ok(0)` at once, [`write`](WriteSink::write) and its vectored form write
/// everything in order, and the **`write_eof` ordering**: bytes written before (or with)
/// `write_eof` are delivered before the end, the end is not delivered before `write_eof`, and
/// non-empty writes after it fail with [`Error::Closed`] and deliver nothing.
///
/// `make` returns a fresh sink with room for at least 64 bytes; `observe` reports what it has
/// delivered (read after a flush).
///
/// # Panics
///
/// On the first violation.
pub async fn check_write_sink<W, F>(mut make: F, observe: fn(&W) -> Observed<'_>)
where
    W: WriteSink,
    F: AsyncFnMut() -> W,
{
    const HEAD: &[u8] = b"The quick brown fox ";
    const TAIL: &[u8] = b"jumps over the lazy dog.";

    // write_some: partial writes in order, empty writes, then write_eof_with.
    {
        let mut w = Checked::new(make().await);
        assert_eq!(w.write_some(&[]).await, Ok(0), "empty write_some");
        assert_eq!(w.write_some_vectored(&[]).await, Ok(0), "empty sequence");
        assert_eq!(
            w.write_some_vectored(&[&[], &[]]).await,
            Ok(0),
            "sequence of empties"
        );
        let mut pos = 0;
        while pos < HEAD.len() {
            let n = w.write_some(&HEAD[pos..]).await.expect("write_some");
            pos += n;
            assert_eq!(w.write_some(&[]).await, Ok(0), "empty write_some at {pos}");
        }
        w.flush().await.expect("flush");
        assert_eq!(
            observe(w.get_ref()),
            Observed {
                data: HEAD,
                eof: false
            },
            "after write_some and flush"
        );
        assert_eq!(
            w.write_eof_with(TAIL).await,
            Ok(TAIL.len()),
            "write_eof_with"
        );
        let o = observe(w.get_ref());
        assert_eq!(
            &o.data[..HEAD.len()],
            HEAD,
            "write_eof ordering: earlier bytes first"
        );
        assert_eq!(
            &o.data[HEAD.len()..],
            TAIL,
            "write_eof ordering: the final bytes"
        );
        assert!(o.eof, "write_eof_with delivers the end");
        // Nothing after the end.
        assert_eq!(
            w.get_mut().write_some(b"x").await,
            Err(Error::Closed),
            "write_some after EOF"
        );
        assert_eq!(
            w.get_mut().write(b"xy").await,
            Err(Partial::new(Error::Closed, 0)),
            "write after EOF"
        );
        assert_eq!(
            w.get_mut().write_some(&[]).await,
            Ok(0),
            "empty write after EOF"
        );
        let o = observe(w.get_ref());
        assert_eq!(
            (o.data.len(), o.eof),
            (HEAD.len() + TAIL.len(), true),
            "nothing after EOF"
        );
    }

    // write, write_vectored, then write_eof: order and the end.
    {
        let mut w = Checked::new(make().await);
        assert_eq!(w.write(&[]).await, Ok(0), "empty write");
        assert_eq!(w.write(HEAD).await, Ok(HEAD.len()), "write");
        assert_eq!(
            w.write_vectored(&[b"jumps ", &[], b"over "]).await,
            Ok(11),
            "write_vectored"
        );
        w.flush().await.expect("flush");
        assert!(!observe(w.get_ref()).eof, "no end before write_eof");
        w.write_eof().await.expect("write_eof");
        let o = observe(w.get_ref());
        assert_eq!(
            &o.data[..HEAD.len()],
            HEAD,
            "write_eof after write: the bytes"
        );
        assert_eq!(
            &o.data[HEAD.len()..],
            b"jumps over ",
            "write_eof after write_vectored"
        );
        assert!(o.eof, "write_eof delivers the end");
        assert_eq!(
            w.get_mut().write_vectored(&[b"z"]).await,
            Err(Partial::new(Error::Closed, 0)),
            "write_vectored after EOF"
        );
    }

    // The end alone, and the vectored end.
    {
        let mut w = Checked::new(make().await);
        w.write_eof().await.expect("write_eof on a fresh sink");
        assert_eq!(
            observe(w.get_ref()),
            Observed {
                data: &[],
                eof: true
            },
            "the end with no data"
        );
        let mut w = Checked::new(make().await);
        assert_eq!(
            w.write_eof_vectored(&[HEAD, &[], TAIL]).await,
            Ok(HEAD.len() + TAIL.len())
        );
        let o = observe(w.get_ref());
        assert_eq!(
            (&o.data[..HEAD.len()], &o.data[HEAD.len()..], o.eof),
            (HEAD, TAIL, true)
        );
    }
}
