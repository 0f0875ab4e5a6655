//! The stream layer: every stream in ringlet against the conformance checks, and the composed
//! algorithms against scripted streams (one byte at a time, everything at once, waits, errors
//! and the end in the middle of a delimiter). No sockets: ConnectionStream has its own tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use ringlet::stream::conformance::{
    Checked, Observed, block_on, check_read_source, check_read_stream, check_write_sink,
};
use ringlet::stream::scripted::{Scripted, ScriptedSink, SinkStep, Step};
use ringlet::stream::{
    BoundedBuf, Error, MemSink, MemSource, Partial, ReadSource, ReadStream, RelayError, WriteSink,
    WriteStream, read, read_to_end, read_until, read_vectored, relay, write,
};
use ringlet::sys;

/// Test data: lines of different lengths (some longer than 64 bytes), 300-odd bytes.
fn text() -> &'static [u8] {
    b"PING\r\nSUB news 1\r\n\nPUB news 5\r\nhello\r\n\
      a line that is rather longer than sixty-four bytes, so read_until meets a full buffer\r\n\
      x\ny\nzz\n0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ!!\n\
      the end, without a newline"
}

/// Splits `data` into `Step::Data` parts of `part` bytes each (the last one shorter).
fn parts(data: &'static [u8], part: usize) -> Vec<Step<'static>> {
    data.chunks(part).map(Step::Data).collect()
}

/// Runs the read-side checks on scripted streams built from `steps` and `chunk`.
fn check_scripted(steps: &[Step<'_>], chunk: usize, expected: &[u8], end: Error) {
    block_on(check_read_stream(
        async || Scripted::new(steps).chunk(chunk),
        expected,
        end,
    ));
    block_on(check_read_source(
        async || Scripted::new(steps).chunk(chunk),
        expected,
        end,
    ));
}

#[test]
fn mem_source_conforms() {
    for data in [text(), b"" as &[u8], b"a", b"\n\n\n"] {
        block_on(check_read_stream(
            async || MemSource::new(data),
            data,
            Error::Eof,
        ));
        block_on(check_read_source(
            async || MemSource::new(data),
            data,
            Error::Eof,
        ));
    }
}

#[test]
fn scripted_conforms_one_byte_at_a_time_and_all_at_once() {
    let all = [Step::Data(text())];
    check_scripted(&all, 1, text(), Error::Eof);
    check_scripted(&all, usize::MAX, text(), Error::Eof);
    check_scripted(&all, 5, text(), Error::Eof);
    check_scripted(&[], 1, b"", Error::Eof);
}

#[test]
fn scripted_conforms_with_waits_empty_steps_and_uneven_arrivals() {
    let mut steps = Vec::new();
    for (i, part) in text().chunks(11).enumerate() {
        steps.push(Step::Data(part));
        if i % 3 == 0 {
            steps.push(Step::Pending);
        }
        if i % 4 == 0 {
            steps.push(Step::Data(b""));
        }
    }
    steps.push(Step::Pending);
    check_scripted(&steps, usize::MAX, text(), Error::Eof);
    check_scripted(&steps, 4, text(), Error::Eof);
}

#[test]
fn scripted_conforms_when_it_fails_instead_of_ending() {
    let reset = Error::Io(sys::Error::ConnectionReset);
    let mut steps = parts(text(), 17);
    steps.push(Step::Fail(reset));
    check_scripted(&steps, usize::MAX, text(), reset);
    check_scripted(&steps, 1, text(), reset);
    // An early end: the steps after Fail(Eof) are never delivered.
    let early = [
        Step::Data(b"abc"),
        Step::Fail(Error::Eof),
        Step::Data(b"never"),
    ];
    check_scripted(&early, 2, b"abc", Error::Eof);
}

#[test]
fn wrappers_conform() {
    // Checked forwards exactly, and &mut S is a stream.
    block_on(check_read_stream(
        async || Checked::new(MemSource::new(text())),
        text(),
        Error::Eof,
    ));
    block_on(check_read_source(
        async || Checked::new(MemSource::new(text())),
        text(),
        Error::Eof,
    ));
    let steps = parts(text(), 9);
    let mut streams: Vec<Scripted<'_>> = (0..20).map(|_| Scripted::new(&steps)).collect();
    let mut it = streams.iter_mut();
    block_on(check_read_stream(
        async || it.next().expect("enough streams"),
        text(),
        Error::Eof,
    ));
    // None of them was read after it ended.
    assert!(streams.iter().all(|s| s.reads_after_end() == 0));
}

fn mem_observe<'a>(w: &'a MemSink<'_>) -> Observed<'a> {
    Observed {
        data: w.written(),
        eof: w.is_eof(),
    }
}

fn scripted_observe<'a>(w: &'a ScriptedSink<'_>) -> Observed<'a> {
    Observed {
        data: &w.written()[..w.flushed()],
        eof: w.is_eof(),
    }
}

#[test]
fn sinks_conform() {
    let mut stores = vec![[0u8; 64]; 4];
    let mut it = stores.iter_mut();
    block_on(check_write_sink(
        async || MemSink::new(it.next().expect("enough stores")),
        mem_observe,
    ));

    for (chunk, steps) in [
        (usize::MAX, &[][..]),
        (1, &[][..]),
        (
            3,
            &[
                SinkStep::Pending,
                SinkStep::Accept(2),
                SinkStep::Accept(0),
                SinkStep::Pending,
                SinkStep::Pending,
            ][..],
        ),
    ] {
        let mut stores = vec![[0u8; 64]; 4];
        let mut it = stores.iter_mut();
        block_on(check_write_sink(
            async || ScriptedSink::new(it.next().expect("enough stores"), steps).chunk(chunk),
            scripted_observe,
        ));
    }
}

/// Counts wake-ups.
struct CountWaker(AtomicUsize);

impl Wake for CountWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_scripted_wait_wakes_the_task_and_a_dropped_wait_consumes_nothing() {
    let steps = [Step::Pending, Step::Data(b"ok")];
    let mut s = Scripted::new(&steps);
    let counter = Arc::new(CountWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut cx = Context::from_waker(&waker);
    let mut buf = [0u8; 4];
    {
        let mut fut = std::pin::pin!(s.read_some(&mut buf));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "woken before Pending");
        // Dropped while waiting.
    }
    assert_eq!(s.reads(), 0);
    {
        let mut fut = std::pin::pin!(s.read_some(&mut buf));
        assert!(
            fut.as_mut().poll(&mut cx).is_pending(),
            "the wait is still there"
        );
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(2)));
    }
    assert_eq!(&buf[..2], b"ok");
    assert_eq!(counter.0.load(Ordering::SeqCst), 2);
}

#[test]
fn read_until_one_byte_at_a_time_and_all_at_once() {
    let data = b"PING\r\nPONG\r\n+OK\r\n";
    for chunk in [1, 2, 5, usize::MAX] {
        let steps = [Step::Data(data)];
        let mut s = Checked::new(Scripted::new(&steps).chunk(chunk));
        let mut mem = [0u8; 32];
        let mut buf = BoundedBuf::new(&mut mem);
        for want in [&b"PING\r\n"[..], b"PONG\r\n", b"+OK\r\n"] {
            let n = block_on(read_until(&mut s, &mut buf, b"\r\n")).expect("a record");
            assert_eq!(&buf.data()[..n], want, "chunk {chunk}");
            buf.consume(n);
        }
        assert_eq!(
            block_on(read_until(&mut s, &mut buf, b"\r\n")),
            Err(Partial::new(Error::Eof, 0)),
            "the end right after a record, chunk {chunk}"
        );
        if chunk == usize::MAX {
            // Everything arrived in one read (then the end): the later records came from the
            // buffer.
            assert_eq!(s.get_ref().reads(), 2);
        } else {
            assert_eq!(s.get_ref().reads(), data.len().div_ceil(chunk) + 1);
        }
    }
}

#[test]
fn read_until_keeps_the_bytes_past_the_delimiter() {
    let steps = [Step::Data(b"one\ntwo\nthr"), Step::Data(b"ee\n")];
    let mut s = Scripted::new(&steps);
    let mut mem = [0u8; 32];
    let mut buf = BoundedBuf::new(&mut mem);
    assert_eq!(block_on(read_until(&mut s, &mut buf, b"\n")), Ok(4));
    assert_eq!(buf.data(), b"one\ntwo\nthr", "the surplus is held");
    // Not consumed: the same record again, without reading.
    assert_eq!(block_on(read_until(&mut s, &mut buf, b"\n")), Ok(4));
    assert_eq!(s.reads(), 1);
    buf.consume(4);
    assert_eq!(block_on(read_until(&mut s, &mut buf, b"\n")), Ok(4));
    assert_eq!(s.reads(), 1, "the second record was already held");
    buf.consume(4);
    assert_eq!(block_on(read_until(&mut s, &mut buf, b"\n")), Ok(6));
    assert_eq!(buf.data(), b"three\n");
}

#[test]
fn read_until_eof_in_the_middle_of_the_delimiter() {
    for chunk in [1, 3, usize::MAX] {
        let steps = [Step::Data(b"HEAD\r\nbody\r")];
        let mut s = Checked::new(Scripted::new(&steps).chunk(chunk));
        let mut mem = [0u8; 32];
        let mut buf = BoundedBuf::new(&mut mem);
        assert_eq!(block_on(read_until(&mut s, &mut buf, b"\r\n")), Ok(6));
        buf.consume(6);
        assert_eq!(
            block_on(read_until(&mut s, &mut buf, b"\r\n")),
            Err(Partial::new(Error::Eof, 5)),
            "chunk {chunk}"
        );
        assert_eq!(buf.data(), b"body\r", "the half delimiter is kept");
        assert_eq!(s.get_ref().reads_after_end(), 0);
    }
}

#[test]
fn read_until_delimiter_split_across_arrivals_and_a_wait() {
    let steps = [
        Step::Data(b"abc\r"),
        Step::Pending,
        Step::Data(b"\nde"),
        Step::Data(b"f\r"),
        Step::Data(b"\r\n"),
    ];
    let mut s = Scripted::new(&steps);
    let mut mem = [0u8; 8];
    let mut buf = BoundedBuf::new(&mut mem);
    assert_eq!(block_on(read_until(&mut s, &mut buf, b"\r\n")), Ok(5));
    buf.consume(5);
    // "def\r\r\n": the first \r is not the start of the delimiter.
    assert_eq!(block_on(read_until(&mut s, &mut buf, b"\r\n")), Ok(6));
    assert_eq!(buf.data(), b"def\r\r\n");
}

#[test]
fn read_until_a_record_that_does_not_fit_is_full_never_truncated() {
    let steps = [Step::Data(b"0123456789\n")];
    let mut s = Checked::new(Scripted::new(&steps).chunk(3));
    let mut mem = [0u8; 8];
    let mut buf = BoundedBuf::new(&mut mem);
    assert_eq!(
        block_on(read_until(&mut s, &mut buf, b"\n")),
        Err(Partial::new(Error::Full, 8))
    );
    assert_eq!(buf.data(), b"01234567", "nothing dropped");
    assert!(buf.is_full());
    assert_eq!(s.failed(), None, "Full is the buffer's, the stream is fine");
    // The caller makes room; the rest of the record still arrives.
    buf.consume(8);
    assert_eq!(block_on(read_until(&mut s, &mut buf, b"\n")), Ok(3));
    assert_eq!(buf.data(), b"89\n");

    // A delimiter longer than the buffer can never be found.
    let steps = [Step::Data(b"abcdefghij")];
    let mut s = Scripted::new(&steps);
    let mut mem = [0u8; 4];
    let mut buf = BoundedBuf::new(&mut mem);
    assert_eq!(
        block_on(read_until(&mut s, &mut buf, b"abcde")),
        Err(Partial::new(Error::Full, 4))
    );
}

#[test]
fn read_until_compacts_and_passes_errors_with_the_count() {
    let reset = Error::Io(sys::Error::ConnectionReset);
    let steps = [Step::Data(b"ab\ncdefg"), Step::Fail(reset)];
    let mut s = Checked::new(Scripted::new(&steps));
    let mut mem = [0u8; 8];
    let mut buf = BoundedBuf::new(&mut mem);
    assert_eq!(block_on(read_until(&mut s, &mut buf, b"\n")), Ok(3));
    buf.consume(3);
    // "cdefg" is moved to the front to make room; then the stream fails.
    assert_eq!(
        block_on(read_until(&mut s, &mut buf, b"\n")),
        Err(Partial::new(reset, 5))
    );
    assert_eq!(buf.data(), b"cdefg");
    // An empty delimiter matches at once.
    assert_eq!(block_on(read_until(&mut s, &mut buf, b"")), Ok(0));
}

#[test]
fn read_exact_partial_count_on_eof_and_on_error() {
    for chunk in [1, 4, usize::MAX] {
        let steps = [Step::Data(b"0123456789")];
        let mut s = Checked::new(Scripted::new(&steps).chunk(chunk));
        let mut buf = [0u8; 6];
        assert_eq!(block_on(read(&mut s, &mut buf)), Ok(6));
        assert_eq!(
            block_on(read(&mut s, &mut buf)),
            Err(Partial::new(Error::Eof, 4)),
            "chunk {chunk}"
        );
        assert_eq!(&buf[..4], b"6789");
    }
    let refused = Error::Io(sys::Error::BrokenPipe);
    let steps = [Step::Data(b"abc"), Step::Fail(refused)];
    let mut s = Checked::new(Scripted::new(&steps).chunk(2));
    let (mut a, mut b) = ([0u8; 2], [0u8; 4]);
    assert_eq!(
        block_on(read_vectored(&mut s, &mut [&mut a, &mut b])),
        Err(Partial::new(refused, 3))
    );
    assert_eq!((&a, &b[..1]), (b"ab", &b"c"[..]));
    // An empty buffer does not read, even at the end.
    let mut s = Scripted::new(&[]);
    assert_eq!(block_on(read(&mut s, &mut [])), Ok(0));
    assert_eq!(s.reads(), 0);
}

#[test]
fn read_to_end_bounded() {
    // Fits exactly: the probe finds the end.
    let steps = [Step::Data(b"hello"), Step::Pending, Step::Data(b" world")];
    let mut s = Checked::new(Scripted::new(&steps).chunk(2));
    let mut buf = [0u8; 11];
    assert_eq!(block_on(read_to_end(&mut s, &mut buf)), Ok(11));
    assert_eq!(&buf, b"hello world");
    // Room to spare.
    let mut s = Checked::new(Scripted::new(&steps));
    let mut buf = [0u8; 32];
    assert_eq!(block_on(read_to_end(&mut s, &mut buf)), Ok(11));
    // One byte too long: Full with what fitted.
    let mut s = Checked::new(Scripted::new(&steps));
    let mut buf = [0u8; 10];
    assert_eq!(
        block_on(read_to_end(&mut s, &mut buf)),
        Err(Partial::new(Error::Full, 10))
    );
    assert_eq!(&buf, b"hello worl");
    // An error that is not the end keeps its count.
    let reset = Error::Io(sys::Error::ConnectionReset);
    let steps = [Step::Data(b"abc"), Step::Fail(reset)];
    let mut s = Checked::new(Scripted::new(&steps));
    let mut buf = [0u8; 10];
    assert_eq!(
        block_on(read_to_end(&mut s, &mut buf)),
        Err(Partial::new(reset, 3))
    );
}

/// Shared between a reader and a writer: what the writer accepted and handed on.
#[derive(Default)]
struct Watch {
    written: std::cell::Cell<usize>,
    flushed: std::cell::Cell<usize>,
    started: std::cell::Cell<usize>,
    awaited: std::cell::Cell<usize>,
}

/// A reader that delivers `chunks`, then the end, and fails the test if it is read while the
/// writer holds accepted bytes it has not handed on (a relay waiting for input with its own
/// output unsent).
struct WatchingReader<'a> {
    chunks: std::collections::VecDeque<&'a [u8]>,
    watch: &'a Watch,
    reads: usize,
}

impl ReadStream for WatchingReader<'_> {
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        assert_eq!(
            self.watch.flushed.get(),
            self.watch.written.get(),
            "read {} while accepted bytes were not handed on",
            self.reads
        );
        self.reads += 1;
        let Some(chunk) = self.chunks.pop_front() else {
            return Err(Error::Eof);
        };
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        if n < chunk.len() {
            self.chunks.push_front(&chunk[n..]);
        }
        Ok(n)
    }
}

/// A staging writer: accepted bytes are handed on by a flush, started or awaited.
struct StagingWriter<'a> {
    watch: &'a Watch,
    /// `start_flush` starts flushes (otherwise it says it cannot).
    starts: bool,
    /// `flush` fails with this.
    flush_fails: Option<Error>,
}

impl WriteStream for StagingWriter<'_> {
    async fn write_some(&mut self, buf: &[u8]) -> Result<usize, Error> {
        let n = buf.len().min(3);
        self.watch.written.set(self.watch.written.get() + n);
        Ok(n)
    }

    async fn flush(&mut self) -> Result<(), Error> {
        if let Some(e) = self.flush_fails {
            return Err(e);
        }
        self.watch.flushed.set(self.watch.written.get());
        self.watch.awaited.set(self.watch.awaited.get() + 1);
        Ok(())
    }

    fn start_flush(&mut self) -> Result<bool, Error> {
        if !self.starts {
            return Ok(false);
        }
        self.watch.flushed.set(self.watch.written.get());
        self.watch.started.set(self.watch.started.get() + 1);
        Ok(true)
    }
}

#[test]
fn relay_hands_every_chunk_on_before_it_reads_again_and_waits_only_at_the_end() {
    let chunks: [&[u8]; 4] = [b"hello", b", ", b"world, and a longer chunk", b"!"];
    for starts in [true, false] {
        let watch = Watch::default();
        let mut src = Checked::new(WatchingReader {
            chunks: chunks.iter().copied().collect(),
            watch: &watch,
            reads: 0,
        });
        let mut dst = Checked::new(StagingWriter {
            watch: &watch,
            starts,
            flush_fails: None,
        });
        let mut buf = [0u8; 8];
        let n = block_on(relay(&mut src, &mut dst, &mut buf)).expect("relay");
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        assert_eq!(n, total as u64);
        assert_eq!(watch.written.get(), total);
        assert_eq!(
            watch.flushed.get(),
            total,
            "everything relayed was handed on"
        );
        // One read per buffer-full that returned data, one for the end.
        let reads = src.get_ref().reads;
        if starts {
            assert_eq!(watch.started.get(), reads - 1, "a flush started per chunk");
            assert_eq!(
                watch.awaited.get(),
                1,
                "waited for once: the last flush, when the source ended"
            );
        } else {
            assert_eq!(watch.started.get(), 0);
            assert_eq!(watch.awaited.get(), reads - 1, "waited for per chunk");
        }
    }

    // The last flush fails: a write error with everything counted.
    let watch = Watch::default();
    let mut src = WatchingReader {
        chunks: [&b"abcdef"[..]].into_iter().collect(),
        watch: &watch,
        reads: 0,
    };
    let reset = Error::Io(sys::Error::ConnectionReset);
    let mut dst = StagingWriter {
        watch: &watch,
        starts: true,
        flush_fails: Some(reset),
    };
    assert_eq!(
        block_on(relay(&mut src, &mut dst, &mut [0u8; 8])),
        Err(RelayError::Write {
            error: reset,
            relayed: 6
        })
    );
}

/// A failing flush stops the relay, whether the writer waits for each flush (`ScriptedSink`'s
/// default) or starts them: nothing more is read, and an unstarted flush is not counted.
#[test]
fn relay_stops_when_a_flush_fails() {
    let reset = Error::Io(sys::Error::ConnectionReset);
    for starts in [false, true] {
        let steps = [Step::Data(b"abc"), Step::Data(b"def")];
        let mut src = Scripted::new(&steps);
        let mut store = [0u8; 64];
        let sink_steps = [SinkStep::Accept(3), SinkStep::Fail(reset)];
        let sink = ScriptedSink::new(&mut store, &sink_steps);
        let mut dst = Checked::new(if starts { sink.starts_flushes() } else { sink });
        assert_eq!(
            block_on(relay(&mut src, &mut dst, &mut [0u8; 4])),
            Err(RelayError::Write {
                error: reset,
                relayed: 3
            })
        );
        assert_eq!(
            src.reads(),
            1,
            "nothing is read after the destination failed"
        );
        if starts {
            let dst = dst.into_inner();
            assert_eq!((dst.started_flushes(), dst.flushes()), (0, 0));
        }
    }
}

/// The relay over a writer that cannot start a flush (`ScriptedSink`'s default): it waits for
/// one after each chunk.
#[test]
fn relay_drains_fully_and_flushes_before_each_read() {
    let data = text();
    for (read_chunk, write_chunk, relay_buf) in [(1, 1, 1), (usize::MAX, 3, 16), (7, 100, 5)] {
        let steps = [Step::Data(data)];
        let mut src = Checked::new(Scripted::new(&steps).chunk(read_chunk));
        let mut store = vec![0u8; 1024];
        let sink_steps = [SinkStep::Pending, SinkStep::Accept(1)];
        let mut dst = Checked::new(ScriptedSink::new(&mut store, &sink_steps).chunk(write_chunk));
        let mut buf = vec![0u8; relay_buf];
        let n = block_on(relay(&mut src, &mut dst, &mut buf)).expect("relay");
        assert_eq!(n, data.len() as u64);
        let dst = dst.into_inner();
        assert_eq!(dst.written(), data);
        assert_eq!(dst.flushed(), data.len(), "everything relayed was flushed");
        assert_eq!(
            dst.flushes(),
            src.get_ref().reads() - 1,
            "one flush per read that returned data (reads {}, chunk {read_chunk}, buf {relay_buf})",
            src.get_ref().reads()
        );
        assert!(!dst.is_eof(), "relay does not end the destination");
    }
}

#[test]
fn relay_errors_name_the_side_and_count() {
    let reset = Error::Io(sys::Error::ConnectionReset);
    let steps = [Step::Data(b"0123456789"), Step::Fail(reset)];
    let mut src = Checked::new(Scripted::new(&steps));
    let mut store = [0u8; 64];
    let mut dst = MemSink::new(&mut store);
    let mut buf = [0u8; 4];
    assert_eq!(
        block_on(relay(&mut src, &mut dst, &mut buf)),
        Err(RelayError::Read {
            error: reset,
            relayed: 10
        })
    );
    assert_eq!(dst.written(), b"0123456789");

    // The destination fills up: a write error with what it took.
    let steps = [Step::Data(b"0123456789")];
    let mut src = Scripted::new(&steps);
    let mut store = [0u8; 6];
    let mut dst = Checked::new(MemSink::new(&mut store));
    let e = block_on(relay(&mut src, &mut dst, &mut buf)).unwrap_err();
    assert_eq!(
        e,
        RelayError::Write {
            error: Error::Full,
            relayed: 6
        }
    );
    assert_eq!((e.error(), e.relayed()), (Error::Full, 6));

    // An empty buffer can relay nothing: an error, not a spin.
    let steps = [Step::Data(b"abc")];
    let mut src = Scripted::new(&steps);
    let mut store = [0u8; 64];
    let mut dst = MemSink::new(&mut store);
    assert_eq!(
        block_on(relay(&mut src, &mut dst, &mut [])),
        Err(RelayError::Read {
            error: Error::Full,
            relayed: 0
        })
    );
    assert_eq!(src.reads(), 0);
}

#[test]
fn mem_sink_limits() {
    let mut store = [0u8; 5];
    let mut sink = MemSink::new(&mut store);
    assert_eq!(block_on(sink.write_some(b"abc")), Ok(3));
    assert_eq!(block_on(sink.write_some(b"defg")), Ok(2), "as much as fits");
    assert_eq!(block_on(sink.write_some(b"h")), Err(Error::Full));
    assert_eq!(block_on(sink.write_some(b"")), Ok(0));
    assert_eq!(sink.written(), b"abcde");

    // write_eof_with is all or nothing.
    let mut store = [0u8; 5];
    let mut sink = MemSink::new(&mut store);
    assert_eq!(block_on(write(&mut sink, b"ab")), Ok(2));
    assert_eq!(
        block_on(sink.write_eof_with(b"cdef")),
        Err(Partial::new(Error::Full, 0))
    );
    assert_eq!((sink.written(), sink.is_eof()), (&b"ab"[..], false));
    assert_eq!(block_on(sink.write_eof_with(b"cde")), Ok(3));
    assert_eq!((sink.written(), sink.is_eof()), (&b"abcde"[..], true));
    // write is partial, with the count.
    let mut store = [0u8; 3];
    let mut sink = MemSink::new(&mut store);
    assert_eq!(
        block_on(WriteSink::write(&mut sink, b"abcdef")),
        Err(Partial::new(Error::Full, 3))
    );
    let (mem, len) = sink.into_inner();
    assert_eq!(&mem[..len], b"abc");
}

#[test]
fn scripted_sink_failures_and_misuse_counts() {
    let reset = Error::Io(sys::Error::ConnectionReset);
    let mut store = [0u8; 16];
    let steps = [SinkStep::Accept(2), SinkStep::Fail(reset)];
    let mut sink = ScriptedSink::new(&mut store, &steps);
    assert_eq!(
        block_on(WriteSink::write(&mut sink, b"abcdef")),
        Err(Partial::new(reset, 2))
    );
    assert_eq!(sink.written(), b"ab");
    assert_eq!(sink.writes_after_end(), 0);
    // A caller that breaks the contract is counted.
    assert_eq!(block_on(sink.write_some(b"x")), Err(reset));
    assert_eq!(sink.writes_after_end(), 1);
    assert_eq!(block_on(sink.write_eof()), Err(reset));
    assert!(!sink.is_eof());

    // A full record buffer.
    let mut store = [0u8; 2];
    let mut sink = ScriptedSink::new(&mut store, &[]);
    assert_eq!(
        block_on(WriteSink::write(&mut sink, b"abc")),
        Err(Partial::new(Error::Full, 2))
    );
}

#[test]
fn scripted_read_after_the_end_is_counted_and_repeats_the_error() {
    let steps = [Step::Data(b"a")];
    let mut s = Scripted::new(&steps);
    let mut buf = [0u8; 4];
    assert_eq!(block_on(s.read_some(&mut buf)), Ok(1));
    assert_eq!(block_on(s.read_some(&mut buf)), Err(Error::Eof));
    assert_eq!(s.reads_after_end(), 0);
    assert_eq!(block_on(s.read_some(&mut buf)), Err(Error::Eof));
    assert_eq!(s.reads_after_end(), 1);
    assert_eq!(
        block_on(s.read_some(&mut [])),
        Ok(0),
        "empty read after the end"
    );
    assert_eq!(s.reads_after_end(), 1);
    assert_eq!(s.ended(), Some(Error::Eof));
    assert_eq!(s.delivered(), 1);
}

#[test]
#[should_panic(expected = "called after the stream failed")]
fn checked_catches_a_read_after_an_error() {
    let mut s = Checked::new(Scripted::new(&[]));
    let mut buf = [0u8; 4];
    assert_eq!(block_on(s.read_some(&mut buf)), Err(Error::Eof));
    let _ = block_on(s.read_some(&mut buf));
}

/// A stream that breaks the contract: data and an error at once is invisible, but `Ok(0)`
/// for a non-empty buffer is caught.
struct ZeroReader;

impl ReadStream for ZeroReader {
    async fn read_some(&mut self, _buf: &mut [u8]) -> Result<usize, Error> {
        Ok(0)
    }
}

#[test]
#[should_panic(expected = "succeeded with 0")]
fn checked_catches_ok_zero() {
    let mut buf = [0u8; 4];
    let _ = block_on(Checked::new(ZeroReader).read_some(&mut buf));
}

#[test]
fn composed_reads_do_not_spin_on_a_stream_that_returns_ok_zero() {
    let mut buf = [0u8; 4];
    assert_eq!(
        block_on(read(&mut ZeroReader, &mut buf)),
        Err(Partial::new(Error::Eof, 0))
    );
    assert_eq!(block_on(read_to_end(&mut ZeroReader, &mut buf)), Ok(0));
    let mut mem = [0u8; 4];
    let mut bb = BoundedBuf::new(&mut mem);
    assert_eq!(
        block_on(read_until(&mut ZeroReader, &mut bb, b"\n")),
        Err(Partial::new(Error::Eof, 0))
    );
    let mut store = [0u8; 4];
    let mut sink = MemSink::new(&mut store);
    assert_eq!(block_on(relay(&mut ZeroReader, &mut sink, &mut buf)), Ok(0));
}

#[test]
#[should_panic(expected = "still pending")]
fn block_on_fails_instead_of_hanging() {
    block_on(std::future::pending::<()>());
}

#[test]
fn mem_source_read_is_one_copy_and_reports_the_rest() {
    let mut s = MemSource::new(b"abcdef");
    let mut buf = [0u8; 4];
    assert_eq!(block_on(ReadSource::read(&mut s, &mut buf)), Ok(4));
    assert_eq!(s.position(), 4);
    assert_eq!(
        block_on(ReadSource::read(&mut s, &mut buf)),
        Err(Partial::new(Error::Eof, 2))
    );
    assert_eq!(&buf[..2], b"ef");
    assert_eq!(s.remaining(), b"");
}

// The checks fail for streams that break the contract (so passing them means something).

/// A memory source with a seeded bug.
struct Broken<'a> {
    data: &'a [u8],
    pos: usize,
    bug: Bug,
}

#[derive(Clone, Copy)]
enum Bug {
    /// The last bytes come with Eof (and are lost to the caller).
    DataWithEof,
    /// An empty buffer at the end reports Eof.
    EmptyReportsEof,
    /// `ReadSource::read` at the end claims the whole buffer was filled... with Eof.
    WrongPartialCount,
    /// Reads skip a byte after the first.
    SkipsAByte,
}

impl ReadStream for Broken<'_> {
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let rest = &self.data[self.pos..];
        if buf.is_empty() {
            return match self.bug {
                Bug::EmptyReportsEof if rest.is_empty() => Err(Error::Eof),
                _ => Ok(0),
            };
        }
        if rest.is_empty() {
            return Err(Error::Eof);
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        match self.bug {
            Bug::DataWithEof if self.pos == self.data.len() => Err(Error::Eof),
            Bug::SkipsAByte if self.pos == n && self.pos < self.data.len() => {
                self.pos += 1;
                Ok(n)
            }
            _ => Ok(n),
        }
    }
}

impl ReadSource for Broken<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Partial> {
        match read(self, buf).await {
            Err(p) if matches!(self.bug, Bug::WrongPartialCount) => {
                Err(Partial::new(p.error, buf.len() - 1))
            }
            r => r,
        }
    }
}

fn broken(bug: Bug) {
    let data = b"0123456789abcdef";
    block_on(check_read_stream(
        async || Broken { data, pos: 0, bug },
        data,
        Error::Eof,
    ));
    block_on(check_read_source(
        async || Broken { data, pos: 0, bug },
        data,
        Error::Eof,
    ));
}

#[test]
#[should_panic(expected = "failed with Eof after")]
fn conformance_catches_data_with_eof() {
    broken(Bug::DataWithEof);
}

#[test]
#[should_panic(expected = "empty buffer is Ok(0) whatever the state")]
fn conformance_catches_an_empty_read_reporting_eof() {
    broken(Bug::EmptyReportsEof);
}

#[test]
#[should_panic(expected = "ReadSource::read past the end")]
fn conformance_catches_a_wrong_partial_count() {
    broken(Bug::WrongPartialCount);
}

#[test]
#[should_panic(expected = "wrong bytes")]
fn conformance_catches_lost_bytes() {
    broken(Bug::SkipsAByte);
}

/// A sink that accepts writes after the end.
struct LeakyEof<'a>(MemSink<'a>, bool);

impl WriteStream for LeakyEof<'_> {
    async fn write_some(&mut self, buf: &[u8]) -> Result<usize, Error> {
        if self.1 {
            // Pretend the end was not there.
            return Ok(buf.len().min(1));
        }
        self.0.write_some(buf).await
    }
}

impl WriteSink for LeakyEof<'_> {
    async fn write_eof(&mut self) -> Result<(), Error> {
        self.1 = true;
        self.0.write_eof().await
    }
}

#[test]
#[should_panic(expected = "write_some after EOF")]
fn conformance_catches_writes_after_the_end() {
    let mut stores = vec![[0u8; 64]; 4];
    let mut it = stores.iter_mut();
    block_on(check_write_sink(
        async || LeakyEof(MemSink::new(it.next().unwrap()), false),
        |w: &LeakyEof<'_>| Observed {
            data: w.0.written(),
            eof: w.0.is_eof(),
        },
    ));
}

/// A sink that signals the end before the final bytes.
struct EofFirst<'a>(MemSink<'a>);

impl WriteStream for EofFirst<'_> {
    async fn write_some(&mut self, buf: &[u8]) -> Result<usize, Error> {
        self.0.write_some(buf).await
    }
}

impl WriteSink for EofFirst<'_> {
    async fn write_eof_with(&mut self, buf: &[u8]) -> Result<usize, Partial> {
        self.0.write_eof().await.map_err(|e| Partial::new(e, 0))?;
        // The final bytes are refused: the end came first.
        self.0.write(buf).await
    }

    async fn write_eof(&mut self) -> Result<(), Error> {
        self.0.write_eof().await
    }
}

#[test]
#[should_panic(expected = "write_eof_with")]
fn conformance_catches_the_end_before_the_final_bytes() {
    let mut stores = vec![[0u8; 64]; 4];
    let mut it = stores.iter_mut();
    block_on(check_write_sink(
        async || EofFirst(MemSink::new(it.next().unwrap())),
        |w: &EofFirst<'_>| Observed {
            data: w.0.written(),
            eof: w.0.is_eof(),
        },
    ));
}

#[test]
fn bounded_buf_consume_compaction_and_full() {
    let mut mem = [0u8; 6];
    let mut buf = BoundedBuf::new(&mut mem);
    assert_eq!((buf.len(), buf.capacity(), buf.is_empty()), (0, 6, true));
    let mut src = MemSource::new(b"abcdefghij");
    assert_eq!(block_on(buf.fill_from(&mut src)), Ok(6));
    assert!(buf.is_full());
    // Full: nothing read.
    assert_eq!(block_on(buf.fill_from(&mut src)), Err(Error::Full));
    assert_eq!(src.position(), 6);
    buf.consume(4);
    assert_eq!(buf.data(), b"ef");
    // The room at the back is gone: the two bytes move to the front, then 4 more arrive.
    assert_eq!(block_on(buf.fill_from(&mut src)), Ok(4));
    assert_eq!(buf.data(), b"efghij");
    // consume clamps, and an empty buffer starts over at the front.
    buf.consume(100);
    assert!(buf.is_empty());
    assert_eq!(block_on(buf.fill_from(&mut src)), Err(Error::Eof));
    assert!(buf.is_empty(), "nothing added on an error");
    let mut src = MemSource::new(b"xyz");
    assert_eq!(block_on(buf.fill_from(&mut src)), Ok(3));
    buf.clear();
    assert_eq!(buf.len(), 0);
}
