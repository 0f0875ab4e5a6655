//! Tests of the pipe's async face (`read().await`, `flush().await`, the poll forms, the
//! cancel handle) with counting wakers: each waiting side is woken exactly when it must be,
//! once, and never by a change that does not let it continue.

use core::pin::pin;
use core::task::Poll;
use std::string::String;
use std::vec::Vec;

use super::harness::{CountingWaker, poll_once, run, run2};
use super::tests::{opts, user_pool};
use super::*;
use crate::pool::BufPoolStorage;
use crate::pool::test_rng::XorShift;

/// The examined rule, awaited: a read that examined everything waits, a flush that adds
/// nothing past `examined` does not wake it, the first flush that does wakes it once.
#[test]
fn a_waiting_read_is_woken_only_by_a_flush_past_examined() {
    let mut storage = BufPoolStorage::<8, 16>::new();
    let pool = user_pool(&mut storage);
    let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    let (mut w, mut r) = pipe.split();
    let rw = CountingWaker::new();
    {
        let mut read = pin!(r.read());
        assert!(
            poll_once(read.as_mut(), &rw).is_pending(),
            "nothing written"
        );
        let _ = w.try_flush().unwrap();
        assert_eq!(rw.wakes(), 0, "an empty flush adds nothing");
        w.write(b"PUB a 5\r\nhel").unwrap();
        assert_eq!(rw.wakes(), 0, "advanced is not flushed");
        // A spurious poll: still pending, the same waker stays registered (woken once).
        assert!(poll_once(read.as_mut(), &rw).is_pending());
        let _ = w.try_flush().unwrap();
        assert_eq!(rw.wakes(), 1, "a flush past examined wakes the read");
        let _ = w.try_flush().unwrap();
        assert_eq!(rw.wakes(), 1, "woken once per wait");
        let Poll::Ready(Ok(res)) = poll_once(read.as_mut(), &rw) else {
            panic!("woken: ready")
        };
        assert_eq!(res.buffer(), *b"PUB a 5\r\nhel");
        assert!(!res.is_completed() && !res.is_canceled());
    }
    // An incomplete message: consume nothing, examine everything.
    let end = Position::from_absolute(12);
    r.advance_to_examined(Position::from_absolute(0), end)
        .unwrap();
    let rw = CountingWaker::new();
    {
        let mut read = pin!(r.read());
        assert!(poll_once(read.as_mut(), &rw).is_pending(), "examined all");
        let _ = w.try_flush().unwrap();
        w.get_memory(4).unwrap();
        w.advance(0).unwrap();
        w.write(b"").unwrap();
        let _ = w.try_flush().unwrap();
        assert_eq!(rw.wakes(), 0, "flushes adding nothing past examined");
        w.write(b"l").unwrap();
        assert_eq!(rw.wakes(), 0);
        let _ = w.try_flush().unwrap();
        assert_eq!(rw.wakes(), 1);
        let Poll::Ready(Ok(res)) = poll_once(read.as_mut(), &rw) else {
            panic!("ready")
        };
        assert_eq!(res.buffer(), *b"PUB a 5\r\nhell");
    }
    // Examined only part: what is past it is already there, so the read is ready at once.
    r.advance_to_examined(Position::from_absolute(0), Position::from_absolute(9))
        .unwrap();
    let rw = CountingWaker::new();
    {
        let mut read = pin!(r.read());
        let Poll::Ready(Ok(res)) = poll_once(read.as_mut(), &rw) else {
            panic!("bytes past examined: ready at once")
        };
        assert_eq!(res.buffer().len(), 13);
    }
    assert_eq!(rw.wakes(), 0);
}

/// A poll with another waker replaces the registered one: only the latest is woken.
#[test]
fn the_latest_waker_is_the_one_woken() {
    let mut storage = BufPoolStorage::<4, 16>::new();
    let pool = user_pool(&mut storage);
    let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    let (mut w, mut r) = pipe.split();
    let (first, second) = (CountingWaker::new(), CountingWaker::new());
    {
        let mut read = pin!(r.read());
        assert!(poll_once(read.as_mut(), &first).is_pending());
        assert!(poll_once(read.as_mut(), &second).is_pending());
        w.write(b"x").unwrap();
        let _ = w.try_flush().unwrap();
        assert_eq!((first.wakes(), second.wakes()), (0, 1));
    }
}

/// Dropping a waiting read loses nothing: the next read gets the bytes. The dropped read's
/// waker may be woken once (a spurious wake), never more.
#[test]
fn a_dropped_read_loses_nothing() {
    let mut storage = BufPoolStorage::<4, 16>::new();
    let pool = user_pool(&mut storage);
    let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    let (mut w, mut r) = pipe.split();
    let stale = CountingWaker::new();
    {
        let mut read = pin!(r.read());
        assert!(poll_once(read.as_mut(), &stale).is_pending());
    }
    w.write(b"kept").unwrap();
    let _ = w.try_flush().unwrap();
    w.write(b"!").unwrap();
    let _ = w.try_flush().unwrap();
    assert!(stale.wakes() <= 1);
    let rw = CountingWaker::new();
    let mut read = pin!(r.read());
    let Poll::Ready(Ok(res)) = poll_once(read.as_mut(), &rw) else {
        panic!("ready")
    };
    assert_eq!(res.buffer(), *b"kept!");
}

/// The writer completing wakes a waiting read, with and without bytes pending; the read
/// returns what is left with `is_completed`.
#[test]
fn the_writer_completing_wakes_the_reader() {
    let mut storage = BufPoolStorage::<8, 16>::new();
    let pool = user_pool(&mut storage);
    // Without pending data.
    let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    {
        let (mut w, mut r) = pipe.split();
        let rw = CountingWaker::new();
        let mut read = pin!(r.read());
        assert!(poll_once(read.as_mut(), &rw).is_pending());
        w.complete(Some(3));
        assert_eq!(rw.wakes(), 1);
        w.complete(None);
        assert_eq!(rw.wakes(), 1, "completing again wakes nothing");
        let Poll::Ready(Ok(res)) = poll_once(read.as_mut(), &rw) else {
            panic!("ready")
        };
        assert!(res.is_completed() && res.buffer().is_empty());
        assert_eq!(res.error(), Some(3));
    }
    drop(pipe);
    // With pending data: examined, flushed bytes and advanced-but-unflushed ones.
    let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    let (mut w, mut r) = pipe.split();
    w.write(b"PUB a 9\r\nhel").unwrap();
    let _ = w.try_flush().unwrap();
    let end = r.try_read().unwrap().buffer().end();
    r.advance_to_examined(Position::from_absolute(0), end)
        .unwrap();
    w.write(b"lo").unwrap();
    let rw = CountingWaker::new();
    {
        let mut read = pin!(r.read());
        assert!(poll_once(read.as_mut(), &rw).is_pending());
        w.complete(None);
        assert_eq!(rw.wakes(), 1);
        let Poll::Ready(Ok(res)) = poll_once(read.as_mut(), &rw) else {
            panic!("ready")
        };
        assert!(res.is_completed() && res.error().is_none());
        assert_eq!(res.buffer(), *b"PUB a 9\r\nhello", "the truncated message");
    }
    // Completed: read again at once (the loop's exit), then the reader completes.
    let rw = CountingWaker::new();
    {
        let mut read = pin!(r.read());
        let Poll::Ready(Ok(res)) = poll_once(read.as_mut(), &rw) else {
            panic!("ready")
        };
        assert!(res.is_completed());
    }
    r.complete(None);
    {
        let mut read = pin!(r.read());
        assert_eq!(
            poll_once(read.as_mut(), &rw).map(|r| r.err()),
            Poll::Ready(Some(PipeError::ReaderCompleted)),
            "a completed reader's read fails instead of waiting forever"
        );
    }
    assert_eq!(rw.wakes(), 0);
    assert_eq!(pool.leased(), 0);
}

/// A read cancelled while it waits (through a handle, since the future holds the reader) is
/// woken once and returns `is_canceled` with the buffer still valid; reported once. A
/// cancel before the read makes it return at once.
#[test]
fn a_cancelled_read_is_woken_with_and_without_pending_data() {
    let mut storage = BufPoolStorage::<8, 16>::new();
    let pool = user_pool(&mut storage);
    let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    let (mut w, mut r) = pipe.split();
    let cancel = r.cancel_handle();
    let rw = CountingWaker::new();
    // Without pending data.
    {
        let mut read = pin!(r.read());
        assert!(poll_once(read.as_mut(), &rw).is_pending());
        cancel.cancel_pending_read();
        assert_eq!(rw.wakes(), 1);
        let Poll::Ready(Ok(res)) = poll_once(read.as_mut(), &rw) else {
            panic!("ready")
        };
        assert!(res.is_canceled() && res.buffer().is_empty() && !res.is_completed());
    }
    {
        let mut read = pin!(r.read());
        assert!(poll_once(read.as_mut(), &rw).is_pending(), "reported once");
    }
    // With data pending and examined.
    w.write(b"abc").unwrap();
    let _ = w.try_flush().unwrap();
    assert_eq!(rw.wakes(), 2, "the dropped read's waker, once");
    let end = r.try_read().unwrap().buffer().end();
    r.advance_to_examined(Position::from_absolute(0), end)
        .unwrap();
    let rw = CountingWaker::new();
    {
        let mut read = pin!(r.read());
        assert!(poll_once(read.as_mut(), &rw).is_pending());
        w.cancel_handle().cancel_pending_read();
        assert_eq!(rw.wakes(), 1, "cancelled from the writer's side");
        let Poll::Ready(Ok(res)) = poll_once(read.as_mut(), &rw) else {
            panic!("ready")
        };
        assert!(res.is_canceled());
        assert_eq!(res.buffer(), *b"abc", "the buffer is still valid");
    }
    // Cancelled before the read: it returns at once, without a wake.
    r.cancel_pending_read();
    let rw = CountingWaker::new();
    {
        let mut read = pin!(r.read());
        let Poll::Ready(Ok(res)) = poll_once(read.as_mut(), &rw) else {
            panic!("ready")
        };
        assert!(res.is_canceled());
    }
    assert_eq!(rw.wakes(), 0);
}

/// Backpressure, awaited: `flush().await` returns at once below the pause threshold, waits
/// at it, is not woken by an advance that leaves the reader at or above the resume
/// threshold, and is woken once by the advance that goes below it.
#[test]
fn a_flush_waits_at_the_pause_threshold_and_is_woken_below_resume() {
    let mut storage = BufPoolStorage::<16, 64>::new();
    let pool = user_pool(&mut storage);
    let mut pipe = Pipe::<'_, 16>::new(pool, opts(16, 100, 50)).unwrap();
    let (mut w, mut r) = pipe.split();
    let ww = CountingWaker::new();
    w.write(&[1; 99]).unwrap();
    {
        let mut flush = pin!(w.flush());
        let Poll::Ready(Ok(f)) = poll_once(flush.as_mut(), &ww) else {
            panic!("99 unread: below the threshold, no wait")
        };
        assert!(!f.is_paused);
    }
    w.write(&[2; 1]).unwrap();
    let mut flush = pin!(w.flush());
    assert!(
        poll_once(flush.as_mut(), &ww).is_pending(),
        "100 unread: waits"
    );
    // The reader got the bytes (the flush happened on the first poll).
    assert_eq!(r.unread_len(), 100);
    let p = r.try_read().unwrap().buffer().position(40).unwrap();
    r.advance_to(p).unwrap();
    assert_eq!(ww.wakes(), 0, "60 unread: still paused");
    // A spurious poll: still pending.
    assert!(poll_once(flush.as_mut(), &ww).is_pending());
    let p = r.try_read().unwrap().buffer().position(10).unwrap();
    r.advance_to(p).unwrap();
    assert_eq!(ww.wakes(), 0, "50 unread: not below 50");
    let p = r.try_read().unwrap().buffer().position(1).unwrap();
    r.advance_to(p).unwrap();
    assert_eq!(ww.wakes(), 1, "49 unread: resumed, woken");
    let p = r.try_read().unwrap().buffer().position(1).unwrap();
    r.advance_to(p).unwrap();
    assert_eq!(ww.wakes(), 1, "woken once");
    let Poll::Ready(Ok(f)) = poll_once(flush.as_mut(), &ww) else {
        panic!("resumed: ready")
    };
    assert!(!f.is_paused && !f.is_completed && !f.is_canceled);
}

/// A waiting flush ends when the reader completes (with data pending: it is discarded) or
/// when it is cancelled; a cancel before the flush makes it return at once though paused.
#[test]
fn a_waiting_flush_ends_on_reader_completion_and_on_cancel() {
    let mut storage = BufPoolStorage::<16, 16>::new();
    let pool = user_pool(&mut storage);
    let mut pipe = Pipe::<'_, 16>::new(pool, opts(16, 32, 16)).unwrap();
    let (mut w, mut r) = pipe.split();
    let cancel = r.cancel_handle();
    // Cancelled while waiting, through a handle.
    w.write(&[1; 40]).unwrap();
    let ww = CountingWaker::new();
    {
        let mut flush = pin!(w.flush());
        assert!(poll_once(flush.as_mut(), &ww).is_pending());
        cancel.cancel_pending_flush();
        assert_eq!(ww.wakes(), 1);
        let Poll::Ready(Ok(f)) = poll_once(flush.as_mut(), &ww) else {
            panic!("ready")
        };
        assert!(f.is_canceled && f.is_paused, "cancelled, still paused");
    }
    // Reported once: the next flush waits again.
    let ww = CountingWaker::new();
    {
        let mut flush = pin!(w.flush());
        assert!(poll_once(flush.as_mut(), &ww).is_pending());
    }
    // Cancelled before the flush: it returns at once, paused.
    w.cancel_pending_flush();
    let ww = CountingWaker::new();
    {
        let mut flush = pin!(w.flush());
        let Poll::Ready(Ok(f)) = poll_once(flush.as_mut(), &ww) else {
            panic!("ready")
        };
        assert!(f.is_canceled && f.is_paused);
    }
    assert_eq!(ww.wakes(), 0);
    // The reader completes while the flush waits, with 40 bytes unread.
    let ww = CountingWaker::new();
    {
        let mut flush = pin!(w.flush());
        assert!(poll_once(flush.as_mut(), &ww).is_pending());
        r.complete(Some(9));
        assert_eq!(ww.wakes(), 1);
        assert_eq!(pool.leased(), 0, "the unread bytes went back");
        let Poll::Ready(Ok(f)) = poll_once(flush.as_mut(), &ww) else {
            panic!("ready")
        };
        assert!(f.is_completed && !f.is_paused);
        assert_eq!(f.reader_error, Some(9));
    }
    // Without pending data: the reader already completed, the flush returns at once.
    w.write(&[2; 40]).unwrap();
    let ww = CountingWaker::new();
    let mut flush = pin!(w.flush());
    let Poll::Ready(Ok(f)) = poll_once(flush.as_mut(), &ww) else {
        panic!("ready")
    };
    assert!(f.is_completed);
    assert_eq!(pool.leased(), 0);
}

/// The documented limit of backpressure: a reader that needs a message whole, with more of
/// it unread than `resume_threshold`, consumes nothing, so a writer waiting in `flush` is
/// never woken, and the reader waits for bytes the writer will not flush: both wait, and
/// no wake comes. A cancelled flush is the way out (so is a larger threshold).
#[test]
fn a_message_longer_than_the_resume_threshold_stalls_both_sides() {
    let mut storage = BufPoolStorage::<8, 16>::new();
    let pool = user_pool(&mut storage);
    let mut pipe = Pipe::<'_, 8>::new(pool, opts(8, 32, 16)).unwrap();
    let (mut w, mut r) = pipe.split();
    let cancel = w.cancel_handle();
    let (ww, rw) = (CountingWaker::new(), CountingWaker::new());
    w.write(&[b'x'; 40]).unwrap(); // a 40-byte message whose end has not come
    let mut flush = pin!(w.flush());
    assert!(
        poll_once(flush.as_mut(), &ww).is_pending(),
        "40 unread >= 32"
    );
    let buf = r.try_read().unwrap().buffer();
    let (start, end) = (buf.start(), buf.end());
    r.advance_to_examined(start, end).unwrap(); // incomplete: consume nothing
    {
        let mut read = pin!(r.read());
        assert!(poll_once(read.as_mut(), &rw).is_pending());
        assert_eq!((ww.wakes(), rw.wakes()), (0, 0), "stalled: nobody is woken");
        cancel.cancel_pending_flush();
    }
    assert_eq!(ww.wakes(), 1);
    let Poll::Ready(Ok(f)) = poll_once(flush.as_mut(), &ww) else {
        panic!("cancelled: ready")
    };
    assert!(f.is_canceled && f.is_paused);
}

/// A completed writer's flush fails at once.
#[test]
fn a_completed_writers_flush_fails() {
    let mut storage = BufPoolStorage::<4, 16>::new();
    let pool = user_pool(&mut storage);
    let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    let mut w = pipe.writer();
    w.complete(None);
    let ww = CountingWaker::new();
    let mut flush = pin!(w.flush());
    assert_eq!(
        poll_once(flush.as_mut(), &ww),
        Poll::Ready(Err(PipeError::WriterCompleted))
    );
}

/// The seed's two loops as two tasks: a producer that writes random chunks and awaits every
/// flush, and a consumer that reads, parses whole lines, examines the partial rest, and
/// exits on completion. The runner polls a task only when it was woken, so a lost wake-up
/// fails the test. Every byte arrives in order; the unread bytes never pass the pause
/// threshold by more than one chunk (so the writer never hits the segment limit); every
/// segment goes back.
#[test]
fn producer_and_consumer_tasks_move_every_line() {
    for seed in 0..40u64 {
        let mut rng = XorShift::new(seed);
        let mut storage = BufPoolStorage::<16, 32>::new();
        let pool = user_pool(&mut storage);
        let (pause, chunk_max) = (64 + rng.below(128), 1 + rng.below(40));
        // Above the longest partial line (59 bytes and a CR): see
        // `a_message_longer_than_the_resume_threshold_stalls_both_sides`.
        let resume = 61 + rng.below(pause - 61 + 1);
        let mut pipe = Pipe::<'_, 16>::new(pool, opts(16, pause, resume)).unwrap();
        let (mut w, mut r) = pipe.split();
        let lines: Vec<Vec<u8>> = (0..200)
            .map(|_| {
                let n = rng.below(60);
                (0..n).map(|_| b'a' + (rng.next() % 26) as u8).collect()
            })
            .collect();
        let wire: Vec<u8> = lines
            .iter()
            .flat_map(|l| l.iter().copied().chain(*b"\r\n"))
            .collect();
        let chunks: Vec<usize> = {
            let mut v = Vec::new();
            let mut left = wire.len();
            while left > 0 {
                let k = (1 + rng.below(chunk_max)).min(left);
                v.push(k);
                left -= k;
            }
            v
        };
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut max_unread = 0;
        let producer = async {
            let mut at = 0;
            for k in &chunks {
                w.write(&wire[at..at + k]).unwrap();
                at += k;
                let f = w.flush().await.unwrap();
                assert!(!f.is_paused && !f.is_completed && !f.is_canceled);
            }
            w.complete(None);
        };
        let consumer = async {
            loop {
                let result = r.read().await.unwrap();
                let buf = result.buffer();
                max_unread = max_unread.max(buf.len());
                let mut rest = buf;
                while let Some(n) = rest.find(b"\r\n") {
                    let mut line = std::vec![0u8; n];
                    rest.slice(..n).unwrap().copy_to(&mut line);
                    got.push(line);
                    rest = rest.slice(n + 2..).unwrap();
                }
                let (consumed, examined, done) = (rest.start(), buf.end(), result.is_completed());
                let truncated = !rest.is_empty();
                r.advance_to_examined(consumed, examined).unwrap();
                if done {
                    assert!(!truncated, "no truncated line");
                    break;
                }
            }
            r.complete(None);
        };
        {
            let (mut producer, mut consumer) = (pin!(producer), pin!(consumer));
            run2(producer.as_mut(), consumer.as_mut(), 20 * chunks.len() + 20);
        }
        assert_eq!(got, lines, "seed {seed}");
        assert!(
            max_unread < pause + chunk_max,
            "seed {seed}: {max_unread} unread with pause {pause}, chunks up to {chunk_max}"
        );
        assert_eq!(pool.leased(), 0, "seed {seed}");
        let s = pool.stats();
        assert_eq!((s.leased, s.user_free), (0, 16));
    }
}

/// A producer that trickles the input one byte per flush (yielding between bytes): the
/// consumer waits for each byte and is woken for each, and reads each byte exactly once
/// (the examined rule: no read hands out only bytes it has already examined).
#[test]
fn a_byte_at_a_time_producer_wakes_the_consumer_for_each_byte() {
    let mut storage = BufPoolStorage::<8, 16>::new();
    let pool = user_pool(&mut storage);
    let mut pipe: Pipe<'_> = Pipe::new(pool, PipeOptions::default()).unwrap();
    let (mut w, mut r) = pipe.split();
    let input = b"PING\r\nSUB news 1\r\nPUB news 5\r\n";
    let mut lines: Vec<String> = Vec::new();
    let mut reads = 0;
    let producer = async {
        for b in input {
            w.write(&[*b]).unwrap();
            let _ = w.flush().await.unwrap();
            // Let the consumer run between bytes: yield once.
            let mut yielded = false;
            core::future::poll_fn(|cx| {
                if yielded {
                    Poll::Ready(())
                } else {
                    yielded = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            })
            .await;
        }
        w.complete(None);
    };
    let consumer = async {
        loop {
            let result = r.read().await.unwrap();
            reads += 1;
            let buf = result.buffer();
            let mut rest = buf;
            while let Some(n) = rest.find(b"\r\n") {
                let mut line = [0u8; 64];
                let k = rest.slice(..n).unwrap().copy_to(&mut line);
                lines.push(String::from_utf8_lossy(&line[..k]).into_owned());
                rest = rest.slice(n + 2..).unwrap();
            }
            let (consumed, examined, done) = (rest.start(), buf.end(), result.is_completed());
            r.advance_to_examined(consumed, examined).unwrap();
            if done {
                break;
            }
        }
        r.complete(None);
    };
    {
        let (mut producer, mut consumer) = (pin!(producer), pin!(consumer));
        run2(producer.as_mut(), consumer.as_mut(), 1000);
    }
    assert_eq!(
        reads,
        input.len() + 1,
        "one read per byte, and one for the completion"
    );
    assert_eq!(lines, ["PING", "SUB news 1", "PUB news 5"]);
    assert_eq!(pool.leased(), 0);
}

/// Seed 002's duplex connection as tasks, both pipes under backpressure: the transport
/// sends requests to the application (one task) and reads its responses (another); the
/// application answers each request line. (With the transport's two loops in one task, it
/// would wait to send while the application waits to answer: the runner reports that
/// deadlock.) Every loop exits on completion, and every segment of both pipes goes back.
#[test]
fn duplex_pair_request_response_tasks() {
    let mut storage = BufPoolStorage::<8, 16>::new();
    let pool = user_pool(&mut storage);
    let mut up: Pipe<'_> = Pipe::new(pool, opts(8, 48, 40)).unwrap();
    let mut down: Pipe<'_> = Pipe::new(pool, opts(8, 48, 40)).unwrap();
    let (transport, mut application) = DuplexPipe::pair(&mut up, &mut down);
    let requests: Vec<String> = (0..50).map(|i| std::format!("GET /item/{i}\n")).collect();
    let mut responses = Vec::new();
    let DuplexPipe {
        input: mut transport_in,
        output: mut transport_out,
    } = transport;
    let send_task = async {
        for req in &requests {
            transport_out.write(req.as_bytes()).unwrap();
            let f = transport_out.flush().await.unwrap();
            assert!(!f.is_paused && !f.is_completed);
        }
        transport_out.complete(None);
    };
    let receive_task = async {
        loop {
            let result = transport_in.read().await.unwrap();
            let buf = result.buffer();
            let mut text = std::vec![0u8; buf.len()];
            buf.copy_to(&mut text);
            responses.extend_from_slice(&text);
            let (end, done) = (buf.end(), result.is_completed());
            transport_in.advance_to(end).unwrap();
            if done {
                break;
            }
        }
        transport_in.complete(None);
    };
    let application_task = async {
        loop {
            let result = application.input.read().await.unwrap();
            let buf = result.buffer();
            let mut rest = buf;
            let mut answers = Vec::new();
            while let Some(n) = rest.find(b"\n") {
                answers.extend_from_slice(b"200 ");
                answers.extend(rest.slice(4..n).unwrap().bytes());
                answers.push(b'\n');
                rest = rest.slice(n + 1..).unwrap();
            }
            let (consumed, examined, done) = (rest.start(), buf.end(), result.is_completed());
            application
                .input
                .advance_to_examined(consumed, examined)
                .unwrap();
            application.output.write(&answers).unwrap();
            let f = application.output.flush().await.unwrap();
            assert!(!f.is_completed);
            if done {
                break;
            }
        }
        application.input.complete(None);
        application.output.complete(None);
    };
    {
        let (mut s, mut r, mut a) = (pin!(send_task), pin!(receive_task), pin!(application_task));
        run([s.as_mut(), r.as_mut(), a.as_mut()], 10_000);
    }
    let want: String = (0..50).map(|i| std::format!("200 /item/{i}\n")).collect();
    assert_eq!(String::from_utf8(responses).unwrap(), want);
    assert_eq!(pool.leased(), 0);
}
