//! Fuzz entry points for the decoders (the cargo-fuzz targets in `fuzz/` call these, and the
//! unit tests run them on their own inputs).

use super::{
    DecoderStats, Frame, FrameConfig, FrameDecoder, FrameError, LineConfig, LineDecoder,
    LineEnding, LineError, Throttle,
};
use crate::pipe::{ConnectionPipeReader, ReadBuf};
use crate::pool::{BufPool, BufPoolConfig, BufPoolStorage, RecvTier};
use crate::time::Instant;

/// FNV-1a over what a run delivered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Digest(u64, u64);

impl Digest {
    fn new() -> Digest {
        Digest(0xcbf2_9ce4_8422_2325, 0)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// One item: its length and bytes.
    fn item(&mut self, len: usize, chunks: impl Iterator<Item = u8>) {
        self.1 += 1;
        self.bytes(&(len as u64).to_le_bytes());
        for b in chunks {
            self.bytes(&[b]);
        }
    }
}

/// Splits of a stream: whole, byte by byte, or data-driven pieces of 1 to `max` bytes.
#[derive(Clone, Copy)]
enum Split {
    Bytes,
    Random(u64, usize),
}

fn pieces(stream: &[u8], split: Split) -> impl Iterator<Item = &[u8]> {
    let mut rest = stream;
    let (mut seed, max, bytes) = match split {
        Split::Bytes => (1, 1, true),
        Split::Random(seed, max) => (seed | 1, max.max(1), false),
    };
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = if bytes {
            1
        } else {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            1 + (seed % max as u64) as usize
        };
        let (a, b) = rest.split_at(n.min(rest.len()));
        rest = b;
        Some(a)
    })
}

/// What a frame run saw: delivered messages, counters, the error (if any), frames left held.
#[derive(PartialEq, Eq, Debug)]
struct FrameRun {
    digest: Digest,
    stats: DecoderStats,
    error: Option<FrameError>,
}

/// The consumer of a frame run: holds up to `hold` frames, dropping the oldest for a new one,
/// so the throttle sees the same pending counts whatever the input's splits.
struct Holder<'r> {
    held: [Option<Frame<'r>>; 8],
    hold: usize,
    next: usize,
    digest: Digest,
    max_pending: u32,
}

impl<'r> Holder<'r> {
    fn take(&mut self, frame: Frame<'r>, throttle: &Throttle) {
        assert!(throttle.pending() <= self.max_pending, "throttle exceeded");
        self.digest.item(frame.len(), frame.iter().copied());
        self.digest.bytes(&frame.fragments().to_le_bytes());
        if self.hold == 0 {
            return;
        }
        let slot = self.next % self.hold;
        self.next += 1;
        self.held[slot] = Some(frame); // drops the oldest
    }
}

/// Runs the frame decoder over `stream` fed in `split` pieces through a connection reader
/// (or, for `None`, as one slice), with fresh pools; checks that every buffer comes back.
fn frame_run(
    config: FrameConfig,
    user: u16,
    hold: usize,
    stream: &[u8],
    split: Option<Split>,
) -> FrameRun {
    let mut user_storage = BufPoolStorage::<16, 256>::new();
    let user_pool = BufPool::new(
        &mut user_storage,
        BufPoolConfig {
            recv_tier: RecvTier::FreeList,
            user_reserve: user,
        },
    )
    .expect("pool");
    let mut seg_storage = BufPoolStorage::<16, 64>::new();
    let seg_pool = BufPool::new(
        &mut seg_storage,
        BufPoolConfig {
            recv_tier: RecvTier::FreeList,
            user_reserve: 0,
        },
    )
    .expect("pool");
    let throttle = Throttle::new();
    let now = Instant::ZERO;
    let mut holder = Holder {
        held: [const { None }; 8],
        hold,
        next: 0,
        digest: Digest::new(),
        max_pending: config.max_pending,
    };
    let mut dec: FrameDecoder<'_, 4> =
        FrameDecoder::new(config, user_pool, &throttle).expect("valid config");
    let mut error = None;
    match split {
        None => {
            let mut pos = 0;
            while error.is_none() {
                match dec.decode(ReadBuf::from_slice(&stream[pos..]), now) {
                    Ok(d) => {
                        assert!(d.consumed <= stream.len() - pos, "consumed past the input");
                        pos += d.consumed;
                        match d.frame {
                            Some(f) => holder.take(f, &throttle),
                            None => {
                                assert!(stream.len() - pos < 9, "stopped before a header");
                                break;
                            }
                        }
                    }
                    Err(e) => error = Some(e),
                }
            }
        }
        Some(split) => {
            let mut reader = ConnectionPipeReader::<'_, 8, 16>::new(4).expect("reader");
            'feed: for piece in pieces(stream, split) {
                let mut lease = seg_pool.try_take_recv().expect("a segment buffer");
                lease.buf_mut()[..piece.len()].copy_from_slice(piece);
                lease.set_len(piece.len()).expect("fits");
                let _ = reader.push(lease).expect("reader room");
                while let Some(read) = reader.try_read() {
                    let buf = read.buffer();
                    let d = match dec.decode(buf, now) {
                        Ok(d) => d,
                        Err(e) => {
                            error = Some(e);
                            break 'feed;
                        }
                    };
                    assert!(d.consumed <= buf.len(), "consumed past the input");
                    let at = buf.position(d.consumed).expect("in view");
                    let examined = if d.frame.is_some() { at } else { buf.end() };
                    if d.frame.is_none() {
                        assert!(buf.len() - d.consumed < 9, "stopped before a header");
                    }
                    let _ = reader.advance_to_examined(at, examined).expect("positions");
                    match d.frame {
                        Some(f) => holder.take(f, &throttle),
                        None => break,
                    }
                }
                assert_eq!(
                    reader.held_leases(),
                    0,
                    "a receive lease held past a receive"
                );
            }
        }
    }
    let run = FrameRun {
        digest: holder.digest,
        stats: dec.stats(),
        error,
    };
    if error.is_some() {
        assert_eq!(dec.reassemblies(), 0, "a failed decoder holds no buffer");
        assert_eq!(dec.decode(ReadBuf::from_slice(b""), now).err(), error);
    }
    drop(dec);
    drop(holder);
    assert_eq!(user_pool.leased(), 0, "every message buffer came back");
    assert_eq!(seg_pool.leased(), 0, "every segment came back");
    run
}

/// Fuzz entry point for the length-prefixed decoder.
///
/// The first byte picks the configuration (chunk, message and frame limits, reassemblies,
/// throttle), the second how many frames the consumer holds and the user tier's size, the
/// next two seed the split points; the rest is the peer's byte stream. It is decoded as one
/// slice, one byte at a time, and in data-driven pieces through a
/// [`ConnectionPipeReader`], and the runs must deliver the same messages with the same
/// counters and end in the same error. Each run checks the throttle never exceeds its limit,
/// a decode never consumes past its input or stops before a whole header, and every buffer
/// comes back. Panics (by assertion) only on a disagreement or a broken guarantee: a bug.
pub fn fuzz_frames(data: &[u8]) {
    let (head, stream) = data.split_at(data.len().min(4));
    let b = |i: usize| head.get(i).copied().unwrap_or(0);
    let (c, h) = (b(0), b(1));
    let chunk = [1u16, 3, 16, 100][usize::from(c & 3)];
    let max_message = [0usize, 5, 64, 250][usize::from(c >> 2 & 3)];
    let need = max_message.div_ceil(usize::from(chunk)) as u16;
    let config = FrameConfig {
        chunk,
        max_message,
        max_frame: chunk + 9 + [0, 40][usize::from(c >> 4 & 1)],
        max_fragments: need.max(1) + [0, 3][usize::from(c >> 5 & 1)],
        max_reassemblies: [1, 4][usize::from(c >> 6 & 1)],
        reassembly_timeout: core::time::Duration::from_secs(1),
        max_pending: [1, 4][usize::from(c >> 7)],
    };
    let hold = usize::from(h & 7);
    let user = [16u16, 3][usize::from(h >> 3 & 1)];
    let seed = u64::from(b(2)) | u64::from(b(3)) << 8;

    let whole = frame_run(config, user, hold, stream, None);
    let bytes = frame_run(config, user, hold, stream, Some(Split::Bytes));
    assert_eq!(whole, bytes, "whole vs byte-at-a-time");
    let split = frame_run(config, user, hold, stream, Some(Split::Random(seed, 64)));
    assert_eq!(whole, split, "whole vs pieces");
}

/// What a line run saw.
#[derive(PartialEq, Eq, Debug)]
struct LineRun {
    digest: Digest,
    error: Option<LineError>,
}

fn line_run(config: LineConfig, stream: &[u8], split: Option<Split>) -> LineRun {
    let mut dec = LineDecoder::new(config);
    let mut digest = Digest::new();
    let mut error = None;
    let mut take = |line: ReadBuf<'_>| {
        let delim = config.ending.delimiter();
        assert!(line.len() <= config.max_line, "a line over the limit");
        assert!(line.find(delim).is_none(), "a line holding its ending");
        digest.item(line.len(), line.bytes());
    };
    match split {
        None => {
            let mut pos = 0;
            loop {
                match dec.decode(ReadBuf::from_slice(&stream[pos..])) {
                    Ok(Some(line)) => {
                        take(line.line);
                        assert!(
                            line.consumed <= stream.len() - pos,
                            "consumed past the input"
                        );
                        pos += line.consumed;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
        }
        Some(split) => {
            let mut seg_storage = BufPoolStorage::<64, 64>::new();
            let seg_pool = BufPool::new(
                &mut seg_storage,
                BufPoolConfig {
                    recv_tier: RecvTier::FreeList,
                    user_reserve: 0,
                },
            )
            .expect("pool");
            let mut reader = ConnectionPipeReader::<'_, 32, 32>::new(8).expect("reader");
            'feed: for piece in pieces(stream, split) {
                let mut lease = seg_pool.try_take_recv().expect("a segment buffer");
                lease.buf_mut()[..piece.len()].copy_from_slice(piece);
                lease.set_len(piece.len()).expect("fits");
                let _ = reader.push(lease).expect("reader room for a line");
                while let Some(read) = reader.try_read() {
                    let buf = read.buffer();
                    match dec.decode(buf) {
                        Ok(Some(line)) => {
                            take(line.line);
                            let at = buf.position(line.consumed).expect("in view");
                            let _ = reader.advance_to(at).expect("position");
                        }
                        Ok(None) => {
                            let (start, end) = (buf.start(), buf.end());
                            let _ = reader.advance_to_examined(start, end).expect("positions");
                            break;
                        }
                        Err(e) => {
                            error = Some(e);
                            break 'feed;
                        }
                    }
                }
            }
            drop(reader);
            assert_eq!(seg_pool.leased(), 0, "every segment came back");
        }
    }
    LineRun { digest, error }
}

/// Fuzz entry point for the line decoder.
///
/// The first byte picks the line ending and the length limit, the next two seed the split
/// points; the rest is the stream. It is decoded as one slice, one byte at a time, and in
/// data-driven pieces through a [`ConnectionPipeReader`]; the runs must find the same lines
/// and end in the same error, and no line may exceed the limit or hold its ending.
pub fn fuzz_lines(data: &[u8]) {
    let (head, stream) = data.split_at(data.len().min(3));
    let b = |i: usize| head.get(i).copied().unwrap_or(0);
    let config = LineConfig {
        ending: if b(0) & 1 == 0 {
            LineEnding::CrLf
        } else {
            LineEnding::Lf
        },
        max_line: [0usize, 1, 5, 40, 200, 2, 13, 100][usize::from(b(0) >> 1 & 7)],
    };
    let seed = u64::from(b(1)) | u64::from(b(2)) << 8;
    let whole = line_run(config, stream, None);
    let bytes = line_run(config, stream, Some(Split::Bytes));
    assert_eq!(whole, bytes, "whole vs byte-at-a-time");
    let split = line_run(config, stream, Some(Split::Random(seed, 64)));
    assert_eq!(whole, split, "whole vs pieces");
}
