//! Socket-free tests of the pipe: a model-based property test, every limit, examined
//! semantics, completion and cancellation, hostile use of the view API, and the connection
//! reader (every byte boundary, carry, quota).

use core::task::{Context, Poll};
use std::vec::Vec;

use super::harness::CountingWaker;
use super::*;
use crate::pool::test_rng::XorShift;
use crate::pool::{BufPool, BufPoolConfig, BufPoolStorage, Lease, RecvTier};

pub(super) fn user_pool<const N: usize, const S: usize>(
    storage: &mut BufPoolStorage<N, S>,
) -> BufPool<'_> {
    let config = BufPoolConfig {
        recv_tier: RecvTier::FreeList,
        user_reserve: N as u16,
    };
    BufPool::new(storage, config).unwrap()
}

pub(super) fn opts(max_segments: usize, pause: usize, resume: usize) -> PipeOptions {
    PipeOptions {
        max_segments,
        pause_threshold: pause,
        resume_threshold: resume,
    }
}

/// The view's bytes, through `segments()`.
fn collect(buf: &ReadBuf<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    for s in buf.segments() {
        assert!(!s.is_empty(), "segments() yields no empty slice");
        v.extend_from_slice(s);
    }
    v
}

fn naive_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Checks every query of `buf` against `want`, with random offsets, ranges and needles.
fn check_view(buf: &ReadBuf<'_>, want: &[u8], rng: &mut XorShift) {
    assert_eq!(buf.len(), want.len());
    assert_eq!(buf.is_empty(), want.is_empty());
    assert_eq!(collect(buf), want);
    assert_eq!(buf.bytes().collect::<Vec<_>>(), want);
    assert_eq!(*buf, *want);
    let first = buf.first_segment();
    assert!(want.starts_with(first));
    assert_eq!(first.is_empty(), want.is_empty());
    let mut out = std::vec![0u8; want.len() + 3];
    assert_eq!(buf.copy_to(&mut out), want.len());
    assert_eq!(&out[..want.len()], want);
    let short = rng.below(want.len() + 1);
    let mut out = std::vec![0u8; short];
    assert_eq!(buf.copy_to(&mut out), short);
    assert_eq!(out, &want[..short]);
    for _ in 0..4 {
        let i = rng.below(want.len() + 2);
        assert_eq!(buf.get(i), want.get(i).copied());
        let b = rng.next() as u8 % 8;
        let at = want.iter().position(|&x| x == b);
        assert_eq!(
            buf.position_of(b).map(|p| buf.offset_of(p).unwrap()),
            at,
            "position_of({b})"
        );
        // A needle from the view (found) or random (mostly not).
        let needle: Vec<u8> = if !want.is_empty() && rng.below(2) == 0 {
            let s = rng.below(want.len());
            let n = 1 + rng.below(4.min(want.len() - s));
            want[s..s + n].to_vec()
        } else {
            (0..1 + rng.below(3))
                .map(|_| rng.next() as u8 % 8)
                .collect()
        };
        assert_eq!(buf.find(&needle), naive_find(want, &needle), "find");
        assert_eq!(buf.starts_with(&needle), want.starts_with(&needle));
        let a = rng.below(want.len() + 1);
        let b = a + rng.below(want.len() - a + 1);
        let sub = buf.slice(a..b).expect("in-range slice");
        assert_eq!(collect(&sub), &want[a..b]);
        assert_eq!(buf.offset_of(sub.start()), Some(a));
        assert_eq!(buf.offset_of(sub.end()), Some(b));
        let (l, r) = buf.split_at(a).unwrap();
        assert_eq!(
            (collect(&l), collect(&r)),
            (want[..a].to_vec(), want[a..].to_vec())
        );
    }
    assert_eq!(buf.position(want.len()), Some(buf.end()));
    assert_eq!(buf.position(want.len() + 1), None);
}

/// The model of one pipe: every byte written, how far it is flushed, consumed, examined,
/// and which side waits (a read or flush polled to `Pending` and not yet `Ready`) with a
/// waker registered.
#[derive(Default)]
struct Model {
    written: Vec<u8>,
    flushed: usize,
    consumed: usize,
    examined: usize,
    paused: bool,
    /// A read cancel not yet reported.
    canceled: bool,
    /// A flush cancel not yet reported.
    cancel_flush: bool,
    out: Vec<u8>,
    /// A read is waiting: the reader is borrowed by it, so only polls touch the reader.
    read_pending: bool,
    /// ... and its waker is registered (not woken yet).
    read_registered: bool,
    read_wakes: usize,
    flush_pending: bool,
    flush_registered: bool,
    flush_wakes: usize,
}

impl Model {
    fn update_pause(&mut self, pause: usize, resume: usize) {
        if pause == 0 {
            return;
        }
        let unread = self.flushed - self.consumed;
        if unread >= pause {
            self.paused = true;
        } else if unread < resume {
            self.paused = false;
        }
    }

    /// What a waiting read waits for: bytes past examined, or a cancel.
    fn reader_ready(&self) -> bool {
        self.flushed > self.examined || self.canceled
    }

    /// What a waiting flush waits for: the pause ending, or a cancel.
    fn writer_ready(&self) -> bool {
        !self.paused || self.cancel_flush
    }

    /// After a change a waiting read waits for: it is woken iff it can read now, once.
    fn wake_reader(&mut self) {
        if self.read_registered && self.reader_ready() {
            self.read_registered = false;
            self.read_wakes += 1;
        }
    }

    fn wake_writer(&mut self) {
        if self.flush_registered && self.writer_ready() {
            self.flush_registered = false;
            self.flush_wakes += 1;
        }
    }
}

/// Random interleavings of writes (spanning segments), get_memory/advance, flushes (sync, or
/// polled and left waiting under backpressure), reads (sync, or polled and left waiting),
/// advances with random consumed/examined, bad advances and cancels of both sides, against a
/// byte-vector model. Bytes out equal bytes in, in order; each waiting side is woken exactly
/// when the model says it can go on, once, and never otherwise; the pool gets every segment
/// back.
#[test]
fn model_random_interleavings() {
    for seed in 0..300u64 {
        let mut rng = XorShift::new(seed);
        let mut storage = BufPoolStorage::<32, 32>::new();
        let pool = user_pool(&mut storage);
        let max = 2 + rng.below(15);
        let pause = [0, 40, 100, 300][rng.below(4)];
        let resume = if pause == 0 { 0 } else { 1 + rng.below(pause) };
        let mut pipe = Pipe::<'_, 16>::new(pool, opts(max, pause, resume)).unwrap();
        let (mut w, mut r) = pipe.split();
        let cancel = r.cancel_handle();
        let (rw, ww) = (CountingWaker::new(), CountingWaker::new());
        let mut m = Model::default();
        let steps = 400 + rng.below(800);
        for _ in 0..steps {
            match rng.below(12) {
                // A waiting flush holds the writer: no writes then.
                0 | 1 if !m.flush_pending => {
                    let big = rng.below(4) == 0;
                    let n = rng.below(if big { 200 } else { 40 });
                    let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8 % 8).collect();
                    let (held, unflushed) = (pool.leased(), w.unflushed_len());
                    match w.write(&bytes) {
                        Ok(()) => m.written.extend_from_slice(&bytes),
                        Err(PipeError::SegmentLimit { max_segments }) => {
                            assert_eq!(max_segments, max);
                            assert_eq!((pool.leased(), w.unflushed_len()), (held, unflushed));
                        }
                        Err(e) => panic!("write: {e}"),
                    }
                }
                2 | 3 if !m.flush_pending => {
                    let min = rng.below(40);
                    match w.get_memory(min) {
                        Ok(mem) => {
                            assert!(mem.len() >= min.max(1));
                            let k = rng.below(mem.len() + 1);
                            for b in &mut mem[..k] {
                                *b = rng.next() as u8 % 8;
                            }
                            let bytes = mem[..k].to_vec();
                            w.advance(k).unwrap();
                            m.written.extend_from_slice(&bytes);
                        }
                        Err(PipeError::MinTooLarge {
                            min: got,
                            segment_size,
                        }) => {
                            assert_eq!((got, segment_size), (min, 32));
                            assert!(min > 32);
                        }
                        Err(PipeError::SegmentLimit { .. }) => {
                            assert_eq!(pool.leased(), max);
                        }
                        Err(e) => panic!("get_memory: {e}"),
                    }
                    // Advancing past what was handed out is an error.
                    let room = w.get_memory(0).map(|m| m.len()).unwrap_or(0);
                    assert!(matches!(
                        w.advance(room + 1 + rng.below(5)),
                        Err(PipeError::AdvanceTooFar { .. })
                    ));
                }
                0..=5 => {
                    // A waiting flush is polled again (woken or not); otherwise a sync flush
                    // or a first poll.
                    let polled = m.flush_pending || rng.below(2) == 0;
                    let was_woken = m.flush_pending && !m.flush_registered;
                    m.flushed = m.written.len();
                    let canceled = std::mem::take(&mut m.cancel_flush);
                    m.update_pause(pause, resume);
                    m.wake_reader();
                    let waits = m.paused && !canceled;
                    let f = if polled {
                        match w.poll_flush(&mut Context::from_waker(ww.waker())) {
                            Poll::Ready(f) => {
                                assert!(!waits, "a paused flush waits");
                                m.flush_pending = false;
                                f.unwrap()
                            }
                            Poll::Pending => {
                                assert!(waits, "an unpaused or cancelled flush returns");
                                assert!(!was_woken, "a woken flush can go on");
                                m.flush_pending = true;
                                m.flush_registered = true;
                                FlushResult {
                                    is_paused: true,
                                    ..FlushResult::default()
                                }
                            }
                        }
                    } else {
                        w.try_flush().unwrap()
                    };
                    assert_eq!(f.is_paused, m.paused);
                    assert!(!f.is_completed);
                    assert_eq!(f.is_canceled, canceled);
                }
                // A waiting read holds the reader: only polls.
                6..=8 => {
                    let polled = m.read_pending || rng.below(2) == 0;
                    let was_woken = m.read_pending && !m.read_registered;
                    let ready = m.reader_ready();
                    let res = if polled {
                        match r.poll_read(&mut Context::from_waker(rw.waker())) {
                            Poll::Ready(res) => Some(res.unwrap()),
                            Poll::Pending => None,
                        }
                    } else {
                        r.try_read()
                    };
                    let Some(res) = res else {
                        assert!(!ready, "data past examined must be handed out");
                        assert!(!was_woken, "a woken read can go on");
                        if polled {
                            m.read_pending = true;
                            m.read_registered = true;
                        }
                        continue;
                    };
                    assert!(ready, "nothing new past examined: no read");
                    assert!(!m.read_registered, "a read that can go on was woken");
                    m.read_pending = false;
                    let canceled = std::mem::take(&mut m.canceled);
                    assert_eq!(res.is_canceled(), canceled);
                    assert!(!res.is_completed());
                    let buf = res.buffer();
                    check_view(&buf, &m.written[m.consumed..m.flushed], &mut rng);
                    let len = buf.len();
                    let c = rng.below(len + 1);
                    let e = c + rng.below(len - c + 1);
                    let e = if rng.below(3) == 0 { len } else { e };
                    let (cp, ep) = (buf.position(c).unwrap(), buf.position(e).unwrap());
                    m.out.extend(buf.slice(..c).unwrap().bytes());
                    // A bad advance first: an error, and nothing changes.
                    if rng.below(3) == 0 {
                        let (s, end) = (buf.start().absolute(), buf.end().absolute());
                        let bad = [
                            (ep, cp),
                            (cp, Position::from_absolute(end + 1)),
                            (Position::from_absolute(s.wrapping_sub(1)), ep),
                        ];
                        let (bc, be) = bad[rng.below(3)];
                        let valid = s <= bc.absolute() && bc <= be && be.absolute() <= end;
                        if !valid {
                            let before = (pool.leased(), r.unread_len(), ww.wakes());
                            assert!(r.advance_to_examined(bc, be).is_err());
                            assert_eq!((pool.leased(), r.unread_len(), ww.wakes()), before);
                        }
                    }
                    r.advance_to_examined(cp, ep).unwrap();
                    m.consumed += c;
                    m.examined = m.consumed + (e - c);
                    m.update_pause(pause, resume);
                    m.wake_writer();
                }
                9 | 10 => {
                    cancel.cancel_pending_read();
                    m.canceled = true;
                    m.wake_reader();
                }
                _ => {
                    cancel.cancel_pending_flush();
                    m.cancel_flush = true;
                    m.wake_writer();
                }
            }
            assert_eq!(w.is_paused(), m.paused);
            assert_eq!(r.unread_len(), m.flushed - m.consumed);
            assert!(pool.leased() <= max, "the segment limit holds");
            assert_eq!(rw.wakes(), m.read_wakes, "reader wakes (seed {seed})");
            assert_eq!(ww.wakes(), m.flush_wakes, "writer wakes (seed {seed})");
        }
        // Drain: a waiting flush is dropped (its bytes are flushed already); complete the
        // writer (flushing what is advanced), which wakes a waiting read; read to the end.
        w.complete(None);
        m.flushed = m.written.len();
        if m.read_registered {
            m.read_wakes += 1;
        }
        assert_eq!(rw.wakes(), m.read_wakes);
        loop {
            let res = r.try_read().expect("a completed writer always reads");
            let buf = res.buffer();
            assert_eq!(collect(&buf), &m.written[m.out.len()..]);
            m.out.extend(buf.bytes());
            let (end, done) = (buf.end(), res.is_completed());
            r.advance_to(end).unwrap();
            if done {
                break;
            }
        }
        assert_eq!(
            m.out, m.written,
            "bytes out equal bytes in, in order (seed {seed})"
        );
        assert_eq!(pool.leased(), 0, "every segment is back (seed {seed})");
        r.complete(None);
        drop(pipe);
        let stats = pool.stats();
        assert_eq!((stats.leased, stats.user_free), (0, 32));
    }
}

#[test]
fn backpressure_pauses_at_the_threshold_and_resumes_below_the_other() {
    let mut storage = BufPoolStorage::<16, 64>::new();
    let pool = user_pool(&mut storage);
    let mut pipe = Pipe::<'_, 16>::new(pool, opts(16, 100, 50)).unwrap();
    let (mut w, mut r) = pipe.split();
    w.write(&[1; 60]).unwrap();
    assert!(!w.try_flush().unwrap().is_paused);
    w.write(&[2; 39]).unwrap();
    assert!(!w.try_flush().unwrap().is_paused, "99 unread: below 100");
    w.write(&[3; 1]).unwrap();
    assert!(w.try_flush().unwrap().is_paused, "100 unread: paused");
    assert!(w.is_paused());
    // The reader consumes to 60 unread: still paused (hysteresis).
    let p = r.try_read().unwrap().buffer().position(40).unwrap();
    r.advance_to(p).unwrap();
    assert!(w.is_paused());
    // 50 unread: not below 50 yet.
    let p = r.try_read().unwrap().buffer().position(10).unwrap();
    r.advance_to(p).unwrap();
    assert!(w.is_paused());
    let p = r.try_read().unwrap().buffer().position(1).unwrap();
    r.advance_to(p).unwrap();
    assert!(!w.is_paused(), "49 unread: resumed");
    assert!(!w.try_flush().unwrap().is_paused);
}

#[test]
fn an_outpacing_writer_is_paused_then_stopped_by_the_segment_limit() {
    let mut storage = BufPoolStorage::<16, 16>::new();
    let pool = user_pool(&mut storage);
    let mut pipe = Pipe::<'_, 8>::new(pool, opts(4, 32, 16)).unwrap();
    let (mut w, mut r) = pipe.split();
    let mut written = 0;
    let mut paused_at = None;
    let err = loop {
        match w.write(&[7; 5]) {
            Ok(()) => written += 5,
            Err(e) => break e,
        }
        if w.try_flush().unwrap().is_paused && paused_at.is_none() {
            paused_at = Some(written);
        }
    };
    assert_eq!(
        paused_at,
        Some(35),
        "paused at the first flush with >= 32 unread"
    );
    assert_eq!(err, PipeError::SegmentLimit { max_segments: 4 });
    assert!(written <= 4 * 16, "no growth past 4 segments of 16 bytes");
    assert_eq!(pool.leased(), 4);
    assert_eq!(
        pipe_err_text(err),
        "the pipe holds its limit of 4 segments: let the reader consume, or raise PipeOptions::max_segments (and the pipe's SEGS)"
    );
    // get_memory hits the same limit once the current segment is full.
    while w.get_memory(1).is_ok() {
        w.advance(1).unwrap();
        written += 1;
    }
    assert_eq!(
        w.get_memory(1).unwrap_err(),
        PipeError::SegmentLimit { max_segments: 4 }
    );
    assert!(
        (48..=64).contains(&written),
        "{written} bytes in 4 segments of 16"
    );
    let _ = w.try_flush().unwrap();
    // The reader consumes everything: segments go back, the pause ends, writing works again.
    let end = r.try_read().unwrap().buffer().end();
    r.advance_to(end).unwrap();
    assert_eq!(pool.leased(), 0);
    assert!(!w.is_paused());
    w.write(&[8; 40]).unwrap();
}

fn pipe_err_text(e: PipeError) -> std::string::String {
    std::format!("{e}")
}

#[test]
fn get_memory_larger_than_a_segment_is_an_error_naming_the_size() {
    let mut storage = BufPoolStorage::<4, 16>::new();
    let pool = user_pool(&mut storage);
    let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    let mut w = pipe.writer();
    let e = w.get_memory(17).unwrap_err();
    assert_eq!(
        e,
        PipeError::MinTooLarge {
            min: 17,
            segment_size: 16
        }
    );
    assert!(pipe_err_text(e).contains("segment size of 16 bytes"));
    assert_eq!(pool.leased(), 0, "nothing taken on error");
    assert_eq!(w.get_memory(16).unwrap().len(), 16);
    assert!(
        !w.get_memory(0).unwrap().is_empty(),
        "min 0 means at least 1"
    );
    // Memory that is not advanced counts for nothing.
    assert_eq!(w.unflushed_len(), 0);
    w.get_memory(10).unwrap()[..3].copy_from_slice(b"abc");
    w.advance(3).unwrap();
    // 13 bytes of room left: a min of 14 moves on to a new segment.
    assert_eq!(w.get_memory(13).unwrap().len(), 13);
    assert_eq!(w.get_memory(14).unwrap().len(), 16);
    assert_eq!(pool.leased(), 2);
    let _ = w.try_flush().unwrap();
    assert_eq!(pipe.reader().try_read().unwrap().buffer(), *b"abc");
}

#[test]
fn an_empty_user_tier_is_an_error_naming_the_reserve() {
    let mut storage = BufPoolStorage::<4, 16>::new();
    let config = BufPoolConfig {
        recv_tier: RecvTier::FreeList,
        user_reserve: 2,
    };
    let pool = BufPool::new(&mut storage, config).unwrap();
    let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    let mut w = pipe.writer();
    w.write(&[1; 20]).unwrap(); // both user buffers
    let want = PipeError::Pool(crate::pool::PoolError::UserTierEmpty { user_reserve: 2 });
    assert_eq!(w.write(&[2; 13]), Err(want), "all or nothing");
    assert_eq!(w.unflushed_len(), 20);
    w.write(&[2; 12]).unwrap(); // fits in the current segment
    assert_eq!(w.get_memory(1), Err(want));
    assert!(pipe_err_text(want).contains("user_reserve"));
    // Receive-tier buffers are never used as segments.
    assert_eq!(pool.recv_available(), 2);
    let _ = w.try_flush().unwrap();
    let mut r = pipe.reader();
    let end = r.try_read().unwrap().buffer().end();
    r.advance_to(end).unwrap();
    assert_eq!(pool.user_available(), 2);
}

/// A reader that needs more data is not handed data again by a flush that adds nothing
/// past `examined`, and is after one that does.
#[test]
fn examined_bytes_are_not_handed_out_again_until_more_arrive() {
    let mut storage = BufPoolStorage::<8, 16>::new();
    let pool = user_pool(&mut storage);
    let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    let (mut w, mut r) = pipe.split();
    assert!(r.try_read().is_none(), "nothing written");
    w.write(b"PUB a 5\r\nhel").unwrap();
    assert!(r.try_read().is_none(), "advanced is not flushed");
    let _ = w.try_flush().unwrap();
    let buf = r.try_read().unwrap().buffer();
    let (start, end) = (buf.start(), buf.end());
    // An incomplete message: consume nothing, examine everything.
    r.advance_to_examined(start, end).unwrap();
    assert!(r.try_read().is_none());
    let _ = w.try_flush().unwrap();
    assert!(
        r.try_read().is_none(),
        "an empty flush adds nothing past examined"
    );
    w.write(b"").unwrap();
    w.get_memory(4).unwrap();
    w.advance(0).unwrap();
    let _ = w.try_flush().unwrap();
    assert!(r.try_read().is_none(), "still nothing past examined");
    w.write(b"l").unwrap();
    assert!(r.try_read().is_none(), "advanced but not flushed");
    let _ = w.try_flush().unwrap();
    let buf = r.try_read().expect("a flush past examined");
    assert_eq!(buf.buffer(), *b"PUB a 5\r\nhell");
    // Examine part: what is past examined is already there, so the next read is at once.
    let buf = buf.buffer();
    let (s, mid) = (buf.start(), buf.position(9).unwrap());
    r.advance_to_examined(s, mid).unwrap();
    assert_eq!(r.try_read().unwrap().buffer().len(), 13);
    // advance_to(consumed) examines only up to consumed: the rest comes back at once.
    r.advance_to(mid).unwrap();
    assert_eq!(r.try_read().unwrap().buffer(), *b"hell");
    // A read without an advance changes nothing either.
    assert_eq!(r.try_read().unwrap().buffer(), *b"hell");
}

#[test]
fn the_writer_completes_with_and_without_pending_data() {
    let mut storage = BufPoolStorage::<8, 16>::new();
    let pool = user_pool(&mut storage);
    // With pending data, some of it only advanced: complete flushes it.
    let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    let (mut w, mut r) = pipe.split();
    w.write(b"flushed ").unwrap();
    let _ = w.try_flush().unwrap();
    w.write(b"advanced").unwrap();
    w.complete(Some(104));
    w.complete(None); // again: nothing changes
    assert_eq!(w.write(b"x"), Err(PipeError::WriterCompleted));
    assert_eq!(w.try_flush(), Err(PipeError::WriterCompleted));
    assert_eq!(w.get_memory(1).err(), Some(PipeError::WriterCompleted));
    assert_eq!(w.advance(0), Err(PipeError::WriterCompleted));
    assert!(r.is_writer_completed());
    let res = r.try_read().unwrap();
    assert!(res.is_completed());
    assert_eq!(res.error(), Some(104));
    assert_eq!(res.buffer(), *b"flushed advanced");
    let (p, end) = (res.buffer().position(8).unwrap(), res.buffer().end());
    r.advance_to_examined(p, end).unwrap();
    // Completed: always handed out, even with nothing new.
    let res = r.try_read().unwrap();
    assert!(res.is_completed());
    assert_eq!(res.buffer(), *b"advanced");
    let end = res.buffer().end();
    r.advance_to(end).unwrap();
    let res = r.try_read().unwrap();
    assert!(res.is_completed() && res.buffer().is_empty());
    r.complete(None);
    assert!(r.try_read().is_none(), "a completed reader reads nothing");
    assert_eq!(
        r.advance_to(Position::default()),
        Err(PipeError::ReaderCompleted)
    );
    assert_eq!(pool.leased(), 0);
    drop(pipe);

    // Without pending data.
    let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    let (mut w, mut r) = pipe.split();
    w.complete(None);
    let res = r.try_read().unwrap();
    assert!(res.is_completed() && res.buffer().is_empty() && res.error().is_none());
    assert_eq!(pool.leased(), 0);
}

#[test]
fn the_reader_completes_with_and_without_pending_data() {
    let mut storage = BufPoolStorage::<8, 16>::new();
    let pool = user_pool(&mut storage);
    let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    let (mut w, mut r) = pipe.split();
    w.write(&[1; 40]).unwrap();
    let _ = w.try_flush().unwrap();
    w.write(&[2; 20]).unwrap(); // unflushed, in the writer's hands
    let _ = r.try_read().unwrap();
    r.complete(Some(7));
    // The reader's and the hand-off's segments are back; the writer's current one is not.
    assert_eq!(pool.leased(), 1);
    let f = w.try_flush().unwrap();
    assert!(f.is_completed);
    assert_eq!(f.reader_error, Some(7));
    assert_eq!(pool.leased(), 0, "flushed bytes are discarded");
    // Writes after are discarded; memory is still handed out (reused), flushes say completed.
    w.write(&[3; 100]).unwrap();
    w.get_memory(16).unwrap();
    w.advance(16).unwrap();
    assert!(w.get_memory(16).unwrap().len() == 16);
    assert!(pool.leased() <= 1);
    assert!(w.try_flush().unwrap().is_completed);
    assert!(w.is_reader_completed());
    assert_eq!(pool.leased(), 0);
    w.complete(None);
    assert_eq!(pool.leased(), 0);
    drop(pipe);

    // Without pending data, before anything was written.
    let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    let (mut w, mut r) = pipe.split();
    r.complete(None);
    let f = w.try_flush().unwrap();
    assert!(f.is_completed && f.reader_error.is_none() && !f.is_paused);
}

#[test]
fn cancellation_from_either_side_is_reported_once() {
    let mut storage = BufPoolStorage::<8, 16>::new();
    let pool = user_pool(&mut storage);
    let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    {
        let (mut w, mut r) = pipe.split();
        // A cancelled read with nothing pending.
        r.cancel_pending_read();
        let res = r.try_read().unwrap();
        assert!(res.is_canceled() && res.buffer().is_empty() && !res.is_completed());
        assert!(r.try_read().is_none(), "reported once");
        // With data pending and examined.
        w.write(b"abc").unwrap();
        let _ = w.try_flush().unwrap();
        let end = r.try_read().unwrap().buffer().end();
        let start = Position::from_absolute(0);
        r.advance_to_examined(start, end).unwrap();
        assert!(r.try_read().is_none());
        r.cancel_pending_read();
        let res = r.try_read().unwrap();
        assert!(res.is_canceled());
        assert_eq!(res.buffer(), *b"abc", "the buffer is still valid");
        // A cancelled flush.
        w.cancel_pending_flush();
        assert!(w.try_flush().unwrap().is_canceled);
        assert!(!w.try_flush().unwrap().is_canceled, "reported once");
    }
    // Through the pipe itself (a handler that keeps the pipe).
    pipe.cancel_pending_read();
    pipe.cancel_pending_flush();
    assert!(pipe.reader().try_read().unwrap().is_canceled());
    assert!(pipe.writer().try_flush().unwrap().is_canceled);
}

/// A trickle of tiny flushes to a reader waiting for a line does not take a segment each.
#[test]
fn small_flushes_share_segments() {
    let mut storage = BufPoolStorage::<8, 64>::new();
    let pool = user_pool(&mut storage);
    let mut pipe = Pipe::<'_, 8>::new(pool, opts(8, 0, 0)).unwrap();
    let (mut w, mut r) = pipe.split();
    let line = b"a line of fifty bytes, trickled one at a time....\n";
    for (i, b) in line.iter().enumerate() {
        w.write(&[*b]).unwrap();
        let _ = w.try_flush().unwrap();
        let res = r.try_read().expect("one new byte");
        let buf = res.buffer();
        assert_eq!(buf.len(), i + 1);
        let found = buf.position_of(b'\n');
        let (start, end) = (buf.start(), buf.end());
        match found {
            None => r.advance_to_examined(start, end).unwrap(),
            Some(p) => {
                assert_eq!(buf, line[..]);
                r.advance_to(Position::from_absolute(p.absolute() + 1))
                    .unwrap();
            }
        }
        assert!(pool.leased() <= 1, "at most one segment held, at byte {i}");
    }
    assert_eq!(pool.leased(), 0);
    // And without a reader in between: flushes land in the previous hand-off segment.
    for _ in 0..40 {
        w.write(b"x").unwrap();
        let _ = w.try_flush().unwrap();
    }
    assert_eq!(pool.leased(), 1);
    assert_eq!(r.try_read().unwrap().buffer().len(), 40);
}

#[test]
fn duplex_pair_carries_both_ways() {
    let mut storage = BufPoolStorage::<8, 16>::new();
    let pool = user_pool(&mut storage);
    let mut a: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    let mut b: Pipe<'_, 4> = Pipe::new(pool, PipeOptions::default()).unwrap();
    {
        let (mut transport, mut app) = DuplexPipe::pair(&mut a, &mut b);
        transport
            .output
            .write(b"request spanning segments")
            .unwrap();
        transport.output.complete(None);
        let res = app.input.try_read().unwrap();
        assert!(res.is_completed());
        assert_eq!(res.buffer(), *b"request spanning segments");
        let end = res.buffer().end();
        app.input.advance_to(end).unwrap();
        app.output.write(b"response").unwrap();
        let _ = app.output.try_flush().unwrap();
        assert!(transport.input.try_read().is_some());
        assert_eq!(transport.input.try_read().unwrap().buffer(), *b"response");
        app.input.complete(None);
        transport.input.complete(None);
    }
    assert_eq!(pool.leased(), 0);
    a.reset();
    assert!(
        a.reader().try_read().is_none(),
        "reset: open and empty again"
    );
    a.writer().write(b"again").unwrap();
    let _ = a.writer().try_flush().unwrap();
    assert_eq!(a.reader().try_read().unwrap().buffer(), *b"again");
    a.reset();
    assert_eq!(pool.leased(), 0);
}

#[test]
fn bad_options_are_errors() {
    let mut storage = BufPoolStorage::<4, 16>::new();
    let pool = user_pool(&mut storage);
    assert!(matches!(
        Pipe::<'_, 4>::new(pool, opts(0, 0, 0)),
        Err(PipeError::Config(_))
    ));
    assert!(matches!(
        Pipe::<'_, 0>::new(pool, PipeOptions::default()),
        Err(PipeError::Config(_))
    ));
    assert!(matches!(
        Pipe::<'_, 4>::new(pool, opts(4, 10, 11)),
        Err(PipeError::Config(_))
    ));
    // A pause that nothing could end: fewer than 0 bytes is never unread.
    assert!(matches!(
        Pipe::<'_, 4>::new(pool, opts(4, 10, 0)),
        Err(PipeError::Config(_))
    ));
    assert!(Pipe::<'_, 4>::new(pool, opts(4, 10, 1)).is_ok());
    let p = Pipe::<'_, 4>::new(pool, PipeOptions::default()).unwrap();
    assert_eq!(p.options().max_segments, 4, "capped at SEGS");
}

/// Hostile use of the view API: random positions, offsets and ranges, out-of-range
/// advances. Errors (or `None`), never panics, and an error changes nothing.
#[test]
fn hostile_positions_and_ranges_are_errors_not_panics() {
    let mut rng = XorShift::new(0xbad);
    let mut storage = BufPoolStorage::<16, 8>::new();
    let pool = user_pool(&mut storage);
    let mut pipe = Pipe::<'_, 16>::new(pool, opts(16, 0, 0)).unwrap();
    let (mut w, mut r) = pipe.split();
    let mut written = Vec::new();
    let mut consumed = 0usize;
    let nasty = |rng: &mut XorShift, around: u64| -> u64 {
        match rng.below(6) {
            0 => rng.next(),
            1 => u64::MAX - rng.below(3) as u64,
            2 => 0,
            _ => around.wrapping_add(rng.below(5) as u64).wrapping_sub(2),
        }
    };
    for _ in 0..20_000 {
        if rng.below(3) == 0 {
            let bytes: Vec<u8> = (0..rng.below(30)).map(|_| rng.next() as u8).collect();
            if w.write(&bytes).is_ok() {
                written.extend_from_slice(&bytes);
            }
            let _ = w.try_flush().unwrap();
        }
        let Some(res) = r.try_read() else { continue };
        let buf = res.buffer();
        let (s, e) = (buf.start().absolute(), buf.end().absolute());
        for _ in 0..8 {
            let a = rng.next() as usize % (buf.len() + 4);
            let b = match rng.below(4) {
                0 => usize::MAX,
                1 => rng.next() as usize,
                _ => rng.next() as usize % (buf.len() + 4),
            };
            assert_eq!(buf.slice(a..b).is_some(), a <= b && b <= buf.len());
            assert_eq!(
                buf.slice(a..=b).is_some(),
                b.checked_add(1).is_some_and(|t| t <= buf.len() && a <= t)
            );
            assert!(buf.slice(..=usize::MAX).is_none());
            assert_eq!(buf.get(b).is_some(), b < buf.len());
            assert_eq!(buf.position(b).is_some(), b <= buf.len());
            let p = Position::from_absolute(nasty(&mut rng, s));
            assert_eq!(buf.offset_of(p).is_some(), (s..=e).contains(&p.absolute()));
        }
        let c = Position::from_absolute(nasty(&mut rng, s));
        let x = Position::from_absolute(nasty(&mut rng, e));
        let valid = s <= c.absolute() && c <= x && x.absolute() <= e;
        let before = (r.unread_len(), pool.leased());
        match r.advance_to_examined(c, x) {
            Ok(()) => {
                assert!(valid);
                consumed = c.absolute() as usize;
            }
            Err(PipeError::PositionOutOfRange { start, end, .. }) => {
                assert!(!valid);
                assert_eq!((start, end), (s, e));
                assert_eq!((r.unread_len(), pool.leased()), before, "nothing changed");
            }
            Err(PipeError::ExaminedBeforeConsumed { .. }) => {
                assert!(!valid && x < c);
                assert_eq!((r.unread_len(), pool.leased()), before);
            }
            Err(e) => panic!("{e}"),
        }
        // Positions from a stale view are still checked against the current one.
        if consumed > 0 {
            assert!(
                r.advance_to(Position::from_absolute(consumed as u64 - 1))
                    .is_err()
            );
        }
        if let Some(res) = r.try_read() {
            assert_eq!(collect(&res.buffer()), &written[consumed..]);
        }
    }
}

/// A lease of the receive tier holding `bytes` (as a receive would).
fn received<'p>(pool: BufPool<'p>, bytes: &[u8]) -> Lease<'p> {
    let mut l = pool.try_take_recv().expect("a free receive buffer");
    l.buf_mut()[..bytes.len()].copy_from_slice(bytes);
    l.set_len(bytes.len()).unwrap();
    l
}

fn recv_pool<const N: usize, const S: usize>(storage: &mut BufPoolStorage<N, S>) -> BufPool<'_> {
    let config = BufPoolConfig {
        recv_tier: RecvTier::FreeList,
        user_reserve: 0,
    };
    BufPool::new(storage, config).unwrap()
}

/// What the NATS parser needs: CRLF-terminated control lines, and `PUB <subject> <n>`
/// followed by `n` payload bytes and CRLF, taken across segments.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Msg {
    Line(Vec<u8>),
    Pub(Vec<u8>, Vec<u8>),
}

/// Parses what the view holds; returns (consumed, examined).
fn parse(buf: ReadBuf<'_>, out: &mut Vec<Msg>) -> (Position, Position) {
    let mut rest = buf;
    loop {
        let Some(n) = rest.find(b"\r\n") else {
            return (rest.start(), buf.end());
        };
        let line = rest.slice(..n).unwrap();
        let after = rest.slice(n + 2..).unwrap();
        if line.starts_with(b"PUB ") {
            let text: Vec<u8> = line.bytes().collect();
            let size: usize = std::str::from_utf8(&text[4..])
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            // Payload and its CRLF, possibly across segments.
            let Some(payload) = after.slice(..size) else {
                return (rest.start(), buf.end());
            };
            let Some(tail) = after.slice(size..size + 2) else {
                return (rest.start(), buf.end());
            };
            assert_eq!(tail, *b"\r\n");
            let mut p = std::vec![0u8; size];
            assert_eq!(payload.copy_to(&mut p), size);
            out.push(Msg::Pub(text, p));
            rest = after.slice(size + 2..).unwrap();
        } else {
            out.push(Msg::Line(line.bytes().collect()));
            rest = after;
        }
    }
}

/// Feeds `pieces` one lease each, parsing after every push; returns the messages, and checks
/// that no lease is held between pushes while the pending tail fits in the carry.
fn feed<'p, const SEGS: usize, const CARRY: usize>(
    pool: BufPool<'p>,
    reader: &mut ConnectionPipeReader<'p, SEGS, CARRY>,
    pieces: &[&[u8]],
) -> Vec<Msg> {
    let mut out = Vec::new();
    for piece in pieces {
        let flow = reader.push(received(pool, piece)).unwrap();
        assert_ne!(flow, Flow::Resume);
        while let Some(res) = reader.try_read() {
            let (c, e) = parse(res.buffer(), &mut out);
            let _ = reader.advance_to_examined(c, e).unwrap();
        }
        if reader.unread_len() <= CARRY {
            assert_eq!(
                reader.held_leases(),
                0,
                "a short tail is carried, not leased"
            );
            assert_eq!(reader.carried(), reader.unread_len());
        }
    }
    out
}

const MESSAGE: &[u8] = b"PING\r\nSUB foo.bar 1\r\nPUB foo.bar 11\r\nhello world\r\n\
PUB x 0\r\n\r\nPUB big 40\r\n0123456789012345678901234567890123456789\r\nPONG\r\n";

fn expected() -> Vec<Msg> {
    let mut out = Vec::new();
    let mut storage = BufPoolStorage::<4, 256>::new();
    let pool = recv_pool(&mut storage);
    let mut reader = ConnectionPipeReader::<'_, 4, 0>::new(4).unwrap();
    let _ = reader.push(received(pool, MESSAGE)).unwrap();
    let res = reader.try_read().unwrap();
    let (c, _) = parse(res.buffer(), &mut out);
    assert_eq!(c.absolute() as usize, MESSAGE.len());
    assert_eq!(out.len(), 6);
    out
}

/// Split the message at every byte boundary, and at every pair of boundaries, across leases:
/// the parser sees the same messages each time.
#[test]
fn every_split_across_leases_parses_the_same() {
    let want = expected();
    let mut storage = BufPoolStorage::<32, 128>::new();
    let pool = recv_pool(&mut storage);
    let n = MESSAGE.len();
    let mut reader = ConnectionPipeReader::<'_, 8, 32>::new(8).unwrap();
    for i in 0..=n {
        reader.reset();
        let got = feed(pool, &mut reader, &[&MESSAGE[..i], &MESSAGE[i..]]);
        assert_eq!(got, want, "split at {i}");
        assert_eq!(reader.unread_len(), 0);
        assert_eq!(pool.leased(), 0);
    }
    for i in 0..=n {
        for j in i..=n {
            reader.reset();
            let got = feed(
                pool,
                &mut reader,
                &[&MESSAGE[..i], &MESSAGE[i..j], &MESSAGE[j..]],
            );
            assert_eq!(got, want, "split at {i} and {j}");
        }
    }
    // One byte per lease, with no carry at all: everything stays in leases until parsed,
    // and the longest pending message (54 bytes) is more leases than SEGS.
    let mut bare = ConnectionPipeReader::<'_, 16, 0>::new(16).unwrap();
    let mut out = Vec::new();
    for b in MESSAGE {
        let _ = bare.push(received(pool, &[*b])).unwrap();
        if let Some(res) = bare.try_read() {
            let (c, e) = parse(res.buffer(), &mut out);
            let _ = bare.advance_to_examined(c, e).unwrap();
        }
        assert!(
            bare.held_leases() <= 16,
            "full: bytes are merged into the last lease"
        );
    }
    assert_eq!(out, want);
    assert_eq!(pool.leased(), 0);
}

/// A trickling peer (one byte per receive) holds one lease while a receive is handled and
/// none between receives: the partial line lives in the carry.
#[test]
fn a_trickling_peer_holds_no_lease_between_receives() {
    let mut storage = BufPoolStorage::<4, 64>::new();
    let pool = recv_pool(&mut storage);
    let mut reader: ConnectionPipeReader<'_> = ConnectionPipeReader::new(4).unwrap();
    let mut out = Vec::new();
    let mut no_read_again = 0;
    for b in MESSAGE {
        let _ = reader.push(received(pool, &[*b])).unwrap();
        assert_eq!(reader.held_leases(), 1);
        assert_eq!(pool.leased(), 1);
        let res = reader.try_read().expect("one new byte");
        let (c, e) = parse(res.buffer(), &mut out);
        assert_eq!(reader.advance_to_examined(c, e).unwrap(), Flow::Keep);
        assert_eq!(reader.held_leases(), 0);
        assert_eq!(pool.leased(), 0);
        // Examined everything: no busy loop.
        if reader.try_read().is_none() {
            no_read_again += 1;
        }
    }
    assert_eq!(no_read_again, MESSAGE.len());
    assert_eq!(out, expected());
}

/// A pending tail longer than the carry stays in leases, readable, and positions survive
/// the move into the carry once it is short enough.
#[test]
fn a_long_tail_stays_in_leases_then_moves_to_the_carry() {
    let mut storage = BufPoolStorage::<8, 16>::new();
    let pool = recv_pool(&mut storage);
    let mut reader = ConnectionPipeReader::<'_, 8, 8>::new(8).unwrap();
    let _ = reader.push(received(pool, b"0123456789abcdef")).unwrap();
    let _ = reader.push(received(pool, b"ghij")).unwrap();
    let buf = reader.try_read().unwrap().buffer();
    let (s, e) = (buf.start(), buf.end());
    let _ = reader.advance_to_examined(s, e).unwrap();
    assert_eq!(
        (reader.held_leases(), reader.carried()),
        (2, 0),
        "20 bytes > carry of 8"
    );
    // Consume 13: 7 left, which fit in the carry: both leases go back.
    let p = Position::from_absolute(13);
    let _ = reader.advance_to_examined(p, e).unwrap();
    assert_eq!((reader.held_leases(), reader.carried()), (0, 7));
    assert_eq!(pool.leased(), 0);
    assert!(
        reader.try_read().is_none(),
        "moving into the carry is not new data"
    );
    let _ = reader.push(received(pool, b"klmnopqrstuvwxyz")).unwrap();
    let buf = reader.try_read().unwrap().buffer();
    assert_eq!(buf, *b"defghijklmnopqrstuvwxyz");
    assert_eq!(buf.start().absolute(), 13);
    assert_eq!(buf.first_segment(), b"defghij", "the carry comes first");
    assert_eq!(buf.find(b"jk"), Some(6), "found across carry and lease");
    assert_eq!(buf.position_of(b'k'), Some(Position::from_absolute(20)));
    let p = buf.position(20).unwrap();
    let _ = reader.advance_to(p).unwrap();
    assert_eq!((reader.held_leases(), reader.carried()), (0, 3));
    assert_eq!(reader.try_read().unwrap().buffer(), *b"xyz");
}

#[test]
fn quota_signals_pause_and_resume_once_each() {
    let mut storage = BufPoolStorage::<16, 16>::new();
    let pool = recv_pool(&mut storage);
    let mut reader = ConnectionPipeReader::<'_, 8, 4>::new(4).unwrap();
    let mut flows = Vec::new();
    for _ in 0..6 {
        flows.push(reader.push(received(pool, &[b'x'; 16])).unwrap());
    }
    assert_eq!(
        flows,
        [
            Flow::Keep,
            Flow::Keep,
            Flow::Keep,
            Flow::Pause,
            Flow::Keep,
            Flow::Keep
        ]
    );
    assert!(reader.is_paused());
    // Consume one lease at a time: resume at half the quota (2 held).
    let mut flows = Vec::new();
    for k in 1..=6u64 {
        let _ = reader.try_read().unwrap();
        flows.push(reader.advance_to(Position::from_absolute(16 * k)).unwrap());
    }
    assert_eq!(
        flows,
        [
            Flow::Keep,
            Flow::Keep,
            Flow::Keep,
            Flow::Resume,
            Flow::Keep,
            Flow::Keep
        ]
    );
    assert_eq!(pool.leased(), 0);
    // Raising the quota while paused can resume; lowering it can pause.
    for _ in 0..4 {
        let _ = reader.push(received(pool, &[b'y'; 16])).unwrap();
    }
    assert!(reader.is_paused());
    assert_eq!(reader.set_quota(8).unwrap(), Flow::Resume);
    assert_eq!(reader.set_quota(3).unwrap(), Flow::Pause);
    assert!(reader.set_quota(9).is_err());
    assert!(reader.set_quota(0).is_err());
    assert!(ConnectionPipeReader::<'_, 8, 4>::new(9).is_err());
}

#[test]
fn leases_past_the_quota_are_packed_then_handed_back_when_full() {
    let mut storage = BufPoolStorage::<16, 64>::new();
    let pool = recv_pool(&mut storage);
    let mut reader = ConnectionPipeReader::<'_, 4, 0>::new(2).unwrap();
    let mut want = Vec::new();
    fn push<'p>(
        pool: BufPool<'p>,
        reader: &mut ConnectionPipeReader<'p, 4, 0>,
        want: &mut Vec<u8>,
        fill: u8,
        n: usize,
    ) -> Result<Flow, (usize, Vec<u8>)> {
        let r = reader.push(received(pool, &std::vec![fill; n]));
        if r.is_ok() {
            want.extend(std::iter::repeat_n(fill, n));
        }
        r.map_err(|e| (e.capacity, e.lease.as_slice().to_vec()))
    }
    assert_eq!(push(pool, &mut reader, &mut want, 0, 10), Ok(Flow::Keep));
    assert_eq!(
        push(pool, &mut reader, &mut want, 1, 10),
        Ok(Flow::Pause),
        "the quota of 2 is reached"
    );
    // Past the quota: the bytes fill the last segment's room; the lease goes back.
    assert_eq!(push(pool, &mut reader, &mut want, 2, 10), Ok(Flow::Keep));
    assert_eq!((reader.held_leases(), pool.leased()), (2, 2));
    // 64 bytes: 44 fill the room, 20 take a slot.
    assert_eq!(push(pool, &mut reader, &mut want, 3, 64), Ok(Flow::Keep));
    assert_eq!(reader.held_leases(), 3);
    // Consume part of the first segment: packing drops that prefix too.
    let p = reader.try_read().unwrap().buffer().position(7).unwrap();
    let _ = reader.advance_to(p).unwrap();
    want.drain(..7);
    // Fill until nothing fits: every slot packed full, then the lease comes back untouched.
    let err = loop {
        if let Err(e) = push(pool, &mut reader, &mut want, 9, 50) {
            break e;
        }
        assert!(reader.held_leases() <= 4);
        assert_eq!(pool.leased(), reader.held_leases());
    };
    assert_eq!(err, (4, std::vec![9; 50]));
    assert_eq!(reader.unread_len(), want.len());
    assert!(
        want.len() > 4 * 64 - 50,
        "slots are full when the lease does not fit"
    );
    let buf = reader.try_read().unwrap().buffer();
    assert_eq!(buf.start().absolute(), 7, "packing keeps positions");
    assert_eq!(collect(&buf), want);
    // An empty lease goes straight back.
    assert_eq!(reader.push(received(pool, b"")).unwrap(), Flow::Keep);
    reader.reset();
    assert_eq!(pool.leased(), 0);
}

/// A push into a full reader packs its segments; when that gives enough leases back (down to
/// half the quota) the push reports `Resume`, as `push` documents, also when the lease's
/// bytes were merged into the packed segments rather than added as a segment.
#[test]
fn packing_a_full_reader_down_to_half_its_quota_resumes() {
    let mut storage = BufPoolStorage::<8, 16>::new();
    let pool = recv_pool(&mut storage);
    let mut reader = ConnectionPipeReader::<'_, 4, 0>::new(4).unwrap();
    let flows: Vec<Flow> = (0..4u8)
        .map(|i| reader.push(received(pool, &[i])).unwrap())
        .collect();
    assert_eq!(flows, [Flow::Keep, Flow::Keep, Flow::Keep, Flow::Pause]);
    // Every slot taken: the next push packs the 4 bytes into one segment and merges its own.
    assert_eq!(reader.push(received(pool, &[4])).unwrap(), Flow::Resume);
    assert!(!reader.is_paused());
    assert_eq!((reader.held_leases(), pool.leased()), (1, 1));
    assert_eq!(
        collect(&reader.try_read().unwrap().buffer()),
        [0, 1, 2, 3, 4]
    );
    reader.reset();
    assert_eq!(pool.leased(), 0);
}

/// Random pushes (sizes from 0 to a whole buffer), quotas, partial consumption and
/// examination, against a byte-vector model: the view always equals the unread bytes, the
/// reader's lease count is the pool's, and everything goes back at the end.
#[test]
fn connection_reader_model() {
    for seed in 0..300u64 {
        let mut rng = XorShift::new(seed);
        let mut storage = BufPoolStorage::<64, 32>::new();
        let pool = recv_pool(&mut storage);
        let quota = 1 + rng.below(8);
        let mut reader = ConnectionPipeReader::<'_, 8, 16>::new(quota).unwrap();
        let (mut pushed, mut consumed, mut examined) = (Vec::new(), 0usize, 0usize);
        let mut paused = false;
        for _ in 0..300 {
            match rng.below(5) {
                0..=2 => {
                    let n = if rng.below(3) == 0 { 32 } else { rng.below(33) };
                    let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8 % 4).collect();
                    match reader.push(received(pool, &bytes)) {
                        Ok(flow) => {
                            pushed.extend_from_slice(&bytes);
                            match flow {
                                Flow::Pause => {
                                    assert!(!paused);
                                    paused = true;
                                }
                                Flow::Resume => {
                                    // Packing a full reader gave leases back.
                                    assert!(paused);
                                    paused = false;
                                }
                                Flow::Keep => {}
                            }
                        }
                        Err(e) => {
                            assert_eq!(e.lease.as_slice(), &bytes[..], "handed back untouched");
                            assert_eq!(reader.held_leases(), 8);
                        }
                    }
                }
                3 => {
                    let Some(res) = reader.try_read() else {
                        assert_eq!(examined, pushed.len(), "nothing new");
                        continue;
                    };
                    assert!(examined < pushed.len());
                    let buf = res.buffer();
                    check_view(&buf, &pushed[consumed..], &mut rng);
                    let c = rng.below(buf.len() + 1);
                    let e = if rng.below(2) == 0 { buf.len() } else { c };
                    let (cp, ep) = (buf.position(c).unwrap(), buf.position(e).unwrap());
                    match reader.advance_to_examined(cp, ep).unwrap() {
                        Flow::Resume => {
                            assert!(paused);
                            paused = false;
                        }
                        Flow::Pause => panic!("an advance never pauses"),
                        Flow::Keep => {}
                    }
                    consumed += c;
                    examined = consumed + (e - c);
                    if reader.unread_len() <= 16 {
                        assert_eq!(reader.held_leases(), 0, "a short tail is carried");
                    }
                }
                _ => {
                    let bad =
                        Position::from_absolute(pushed.len() as u64 + 1 + rng.below(9) as u64);
                    assert!(reader.advance_to(bad).is_err());
                }
            }
            assert_eq!(reader.is_paused(), paused);
            assert_eq!(pool.leased(), reader.held_leases());
            assert_eq!(reader.unread_len(), pushed.len() - consumed);
            assert!(reader.held_leases() <= 8);
        }
        drop(reader);
        assert_eq!(pool.leased(), 0);
    }
}

#[test]
fn end_of_input_completes_the_connection_reader() {
    let mut storage = BufPoolStorage::<4, 64>::new();
    let pool = recv_pool(&mut storage);
    let mut reader: ConnectionPipeReader<'_> = ConnectionPipeReader::new(4).unwrap();
    let _ = reader.push(received(pool, b"PING\r\nPAR")).unwrap();
    reader.push_eof();
    assert!(reader.is_eof());
    let mut out = Vec::new();
    let res = reader.try_read().unwrap();
    assert!(res.is_completed());
    let (c, e) = parse(res.buffer(), &mut out);
    let _ = reader.advance_to_examined(c, e).unwrap();
    assert_eq!(out, [Msg::Line(b"PING".to_vec())]);
    // Completed: handed out again though examined, so the loop sees the truncated rest.
    let res = reader.try_read().unwrap();
    assert!(res.is_completed());
    assert_eq!(res.buffer(), *b"PAR");
    // Hostile advances on the connection reader: errors, nothing changes.
    let end = res.buffer().end();
    assert!(
        reader
            .advance_to(Position::from_absolute(u64::MAX))
            .is_err()
    );
    assert!(reader.advance_to(Position::from_absolute(5)).is_err());
    assert!(
        reader
            .advance_to_examined(end, Position::from_absolute(6))
            .is_err()
    );
    assert_eq!(reader.unread_len(), 3);
    let _ = reader.advance_to(end).unwrap();
    assert_eq!(pool.leased(), 0);
}
