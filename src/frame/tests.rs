//! Socket-free tests of the codecs: the wire layout, encode -> split -> decode properties,
//! every invalid header, reassembly (interleaving, timeouts, orphans), the throttle and frame
//! ownership, the encoder's all-or-nothing writes, and the line codec.

use core::time::Duration;
use std::boxed::Box;
use std::format;
use std::string::ToString;
use std::vec;
use std::vec::Vec;

use super::*;
use crate::pipe::{ConnectionPipeReader, ReadBuf};
use crate::pool::test_rng::XorShift;
use crate::pool::{BufPool, BufPoolConfig, BufPoolStorage, ByteRing, RecvTier, RingState};
use crate::time::Instant;

const T0: Instant = Instant::ZERO;

fn pool<const N: usize, const S: usize>(storage: &mut BufPoolStorage<N, S>) -> BufPool<'_> {
    BufPool::new(
        storage,
        BufPoolConfig {
            recv_tier: RecvTier::FreeList,
            user_reserve: N as u16,
        },
    )
    .unwrap()
}

/// Chunks of 8, messages up to 64, frames up to 17 bytes.
fn small() -> FrameConfig {
    FrameConfig {
        max_frame: 17,
        chunk: 8,
        max_message: 64,
        max_fragments: 8,
        max_reassemblies: 2,
        reassembly_timeout: Duration::from_secs(1),
        max_pending: 4,
    }
}

/// An unbounded sink.
#[derive(Default)]
struct VecSink(Vec<u8>);

impl FrameSink for VecSink {
    fn room(&mut self) -> usize {
        usize::MAX / 2
    }
    fn capacity(&mut self) -> usize {
        usize::MAX / 2
    }
    fn put(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

fn whole(payload: &[u8]) -> Vec<u8> {
    let mut v = ((payload.len() + 3) as u16).to_le_bytes().to_vec();
    v.push(0);
    v.extend_from_slice(payload);
    v
}

fn frag(stream: u16, index: u16, count: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = ((payload.len() + 9) as u16).to_le_bytes().to_vec();
    v.push(FLAG_FRAGMENT);
    for x in [stream, index, count] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn header(len: u16, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = len.to_le_bytes().to_vec();
    v.push(flags);
    v.extend_from_slice(rest);
    v
}

fn payload(rng: &mut XorShift, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next() as u8).collect()
}

/// Decodes `input` as one slice at a time `now`, dropping each frame after recording its
/// bytes; returns the messages and the error, if any.
fn decode_all<const R: usize>(
    dec: &mut FrameDecoder<'_, R>,
    input: &[u8],
    now: Instant,
) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        match dec.decode(ReadBuf::from_slice(&input[pos..]), now) {
            Ok(d) => {
                pos += d.consumed;
                match d.frame {
                    Some(f) => out.push(f.to_vec()),
                    None => return (out, None),
                }
            }
            Err(e) => return (out, Some(e)),
        }
    }
}

/// Feeds `pieces` through a connection reader whose segments come from `segs` (as receive
/// leases would), decoding after each; records every message.
fn decode_pieces<'a, const R: usize>(
    dec: &mut FrameDecoder<'_, R>,
    segs: BufPool<'a>,
    pieces: &[&[u8]],
    now: Instant,
) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut reader = ConnectionPipeReader::<'a, 8, 16>::new(4).unwrap();
    let mut out = Vec::new();
    for piece in pieces {
        let mut lease = segs.try_take_recv().unwrap();
        lease.buf_mut()[..piece.len()].copy_from_slice(piece);
        lease.set_len(piece.len()).unwrap();
        let _ = reader.push(lease).unwrap();
        while let Some(read) = reader.try_read() {
            let buf = read.buffer();
            let d = match dec.decode(buf, now) {
                Ok(d) => d,
                Err(e) => return (out, Some(e)),
            };
            let at = buf.position(d.consumed).unwrap();
            let examined = if d.frame.is_some() { at } else { buf.end() };
            let _ = reader.advance_to_examined(at, examined).unwrap();
            match d.frame {
                Some(f) => out.push(f.to_vec()),
                None => break,
            }
        }
        // Payloads are copied out as they come: no receive lease is held between receives.
        assert_eq!(reader.held_leases(), 0);
        assert!(reader.carried() < FRAGMENT_HEADER_LEN);
    }
    (out, None)
}

/// `wire` cut into pieces of 1..=max bytes.
fn split_random<'w>(rng: &mut XorShift, wire: &'w [u8], max: usize) -> Vec<&'w [u8]> {
    let mut rest = wire;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let n = (1 + rng.below(max)).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Wire layout and the encoder
// ---------------------------------------------------------------------------------------------

#[test]
fn wire_layout_matches_the_documented_diagram() {
    let mut enc = FrameEncoder::new(small()).unwrap();
    let mut sink = VecSink::default();
    assert_eq!(enc.encode(b"abc", &mut sink).unwrap(), 6);
    assert_eq!(sink.0, [6, 0, 0, b'a', b'b', b'c']);
    sink.0.clear();
    assert_eq!(enc.encode(b"", &mut sink).unwrap(), 3);
    assert_eq!(sink.0, [3, 0, 0], "an empty message is a bare header");
    sink.0.clear();
    // 20 bytes, chunk 8: fragments of 8, 8, 4 bytes, stream 0, count 3.
    let msg: Vec<u8> = (0..20).collect();
    assert_eq!(enc.encode(&msg, &mut sink).unwrap(), 3 * 9 + 20);
    let mut want = Vec::new();
    want.extend_from_slice(&[17, 0, 1, 0, 0, 0, 0, 3, 0]);
    want.extend_from_slice(&msg[..8]);
    want.extend_from_slice(&[17, 0, 1, 0, 0, 1, 0, 3, 0]);
    want.extend_from_slice(&msg[8..16]);
    want.extend_from_slice(&[13, 0, 1, 0, 0, 2, 0, 3, 0]);
    want.extend_from_slice(&msg[16..]);
    assert_eq!(sink.0, want);
    // The next fragmented message takes the next stream id.
    sink.0.clear();
    enc.encode(&msg[..9], &mut sink).unwrap();
    assert_eq!(&sink.0[..9], &[17, 0, 1, 1, 0, 0, 0, 2, 0]);
    assert_eq!(&sink.0[17..26], &[10, 0, 1, 1, 0, 1, 0, 2, 0]);
}

#[test]
fn encoded_sizes_at_the_edges() {
    let c = small();
    let enc = FrameEncoder::new(c).unwrap();
    let chunk = usize::from(c.chunk);
    for (len, frames) in [
        (0, 1),
        (1, 1),
        (chunk - 1, 1),
        (chunk, 1),
        (chunk + 1, 2),
        (2 * chunk, 2),
        (2 * chunk + 1, 3),
        (c.max_message, 8),
    ] {
        assert_eq!(enc.frames(len), frames, "frames of {len}");
        let want = if frames == 1 {
            len + 3
        } else {
            len + 9 * frames
        };
        assert_eq!(enc.encoded_len(len), want, "encoded length of {len}");
        let mut sink = VecSink::default();
        let mut e = enc.clone();
        assert_eq!(e.encode(&vec![1; len], &mut sink).unwrap(), want);
        assert_eq!(sink.0.len(), want);
    }
}

#[test]
fn stream_ids_count_up_and_wrap() {
    let mut enc = FrameEncoder::new(small()).unwrap();
    enc.next_stream_for_test(u16::MAX);
    let mut sink = VecSink::default();
    for want in [u16::MAX, 0, 1] {
        sink.0.clear();
        enc.encode(&[9; 9], &mut sink).unwrap();
        assert_eq!(u16::from_le_bytes([sink.0[3], sink.0[4]]), want);
    }
    // Whole messages take no stream id.
    sink.0.clear();
    enc.encode(&[9; 8], &mut sink).unwrap();
    enc.encode(&[9; 9], &mut sink).unwrap();
    assert_eq!(u16::from_le_bytes([sink.0[11 + 3], sink.0[11 + 4]]), 2);
}

#[test]
fn encode_parts_is_encode_of_the_concatenation() {
    let mut rng = XorShift::new(7);
    for _ in 0..300 {
        let len = rng.below(65);
        let msg = payload(&mut rng, len);
        // Random cut points, empty parts included.
        let mut cuts: Vec<usize> = (0..rng.below(5)).map(|_| rng.below(len + 1)).collect();
        cuts.sort_unstable();
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut at = 0;
        for c in cuts {
            parts.push(&msg[at..c]);
            at = c;
        }
        parts.push(&msg[at..]);
        let (mut a, mut b) = (VecSink::default(), VecSink::default());
        let mut e1 = FrameEncoder::new(small()).unwrap();
        let mut e2 = FrameEncoder::new(small()).unwrap();
        e1.encode(&msg, &mut a).unwrap();
        e2.encode_parts(&parts, &mut b).unwrap();
        assert_eq!(a.0, b.0, "{} bytes in {} parts", len, parts.len());
    }
}

#[test]
fn encode_is_all_or_nothing() {
    let mut enc = FrameEncoder::new(small()).unwrap();
    // Above max_message: nothing written, whatever the room.
    let mut sink = VecSink::default();
    assert_eq!(
        enc.encode(&[0; 65], &mut sink),
        Err(EncodeError::MessageTooLarge { len: 65, max: 64 })
    );
    assert!(sink.0.is_empty());
    // A write slab of 32 bytes holding 10 staged bytes.
    let mut mem = [0u8; 32];
    let mut state = RingState::new();
    let mut ring = ByteRing::new(&mut mem, &mut state);
    ring.append(&[0xee; 10]).unwrap();
    // 20 bytes encode to 47: larger than the whole slab, can never fit.
    assert_eq!(
        enc.encode(&[1; 20], &mut ring),
        Err(EncodeError::TooLarge {
            need: 47,
            capacity: 32
        })
    );
    // 16 bytes encode to 34 > 32 too; 8 bytes to 11 <= 22 free: fits.
    assert_eq!(enc.encode(&[2; 8], &mut ring), Ok(11));
    // 12 bytes encode to 30: fits the slab but not the 11 bytes left now.
    assert_eq!(
        enc.encode(&[3; 12], &mut ring),
        Err(EncodeError::WouldBlock { need: 30, room: 11 })
    );
    assert_eq!(ring.len(), 21, "a failed encode writes nothing");
    ring.consume(21).unwrap();
    assert_eq!(enc.encode(&[3; 12], &mut ring), Ok(30));
    // What the slab holds decodes back (it wrapped around its end).
    let (a, b) = ring.staged();
    let mut wire = a.to_vec();
    wire.extend_from_slice(b);
    let mut s = BufPoolStorage::<4, 64>::new();
    let throttle = Throttle::new();
    let mut dec: FrameDecoder<'_> = FrameDecoder::new(small(), pool(&mut s), &throttle).unwrap();
    assert_eq!(decode_all(&mut dec, &wire, T0), (vec![vec![3; 12]], None));
    // A slice sink that is too small is refused too.
    let mut tiny = [0u8; 5];
    let mut sink = SliceSink::new(&mut tiny);
    assert_eq!(
        enc.encode(b"abc", &mut sink),
        Err(EncodeError::TooLarge {
            need: 6,
            capacity: 5
        })
    );
    assert!(sink.is_empty());
}

#[test]
fn config_validation_names_the_setting() {
    let ok = small();
    assert_eq!(ok.validate(), Ok(()));
    let bad = [
        (FrameConfig { chunk: 0, ..ok }, "chunk"),
        (
            FrameConfig {
                max_frame: 16,
                ..ok
            },
            "max_frame",
        ),
        (
            FrameConfig {
                max_fragments: 7,
                ..ok
            },
            "max_fragments",
        ),
        (
            FrameConfig {
                max_reassemblies: 0,
                ..ok
            },
            "max_reassemblies",
        ),
        (
            FrameConfig {
                max_pending: 0,
                ..ok
            },
            "max_pending",
        ),
        (
            FrameConfig {
                reassembly_timeout: Duration::ZERO,
                ..ok
            },
            "reassembly_timeout",
        ),
    ];
    for (c, name) in bad {
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains(name), "{e} names {name}");
        assert!(FrameEncoder::new(c).is_err());
    }
    assert_eq!(FrameConfig::default().validate(), Ok(()));
    assert!(ok.check_buffers(64).is_ok());
    let e = ok.check_buffers(63).unwrap_err();
    assert!(e.to_string().contains("max_message"));
    // The decoder checks the pool's buffer size and its room for reassemblies.
    let mut s = BufPoolStorage::<2, 32>::new();
    let throttle = Throttle::new();
    let p = pool(&mut s);
    assert!(FrameDecoder::<'_, 4>::new(ok, p, &throttle).is_err());
    let fits = FrameConfig {
        max_message: 32,
        max_fragments: 4,
        ..ok
    };
    assert!(FrameDecoder::<'_, 4>::new(fits, p, &throttle).is_ok());
    let e = FrameDecoder::<'_, 1>::new(fits, p, &throttle).unwrap_err();
    assert!(e.to_string().contains("max_reassemblies"));
}

// ---------------------------------------------------------------------------------------------
// Properties: encode -> split at random boundaries -> decode
// ---------------------------------------------------------------------------------------------

/// Sizes around every edge of `c`, and random ones.
fn sizes(c: &FrameConfig, rng: &mut XorShift, n: usize) -> Vec<usize> {
    let chunk = usize::from(c.chunk);
    let mut v = vec![
        0,
        1,
        chunk - 1,
        chunk,
        chunk + 1,
        2 * chunk - 1,
        2 * chunk,
        2 * chunk + 1,
        c.max_message - 1,
        c.max_message,
    ];
    v.extend((0..n).map(|_| rng.below(c.max_message + 1)));
    v
}

fn roundtrip_property<const N: usize, const S: usize>(c: FrameConfig, seeds: u64, msgs: usize) {
    let mut user = Box::new(BufPoolStorage::<N, S>::new());
    let user = pool(&mut user);
    let mut segs = Box::new(BufPoolStorage::<64, 512>::new());
    let segs = BufPool::new(
        &mut segs,
        BufPoolConfig {
            recv_tier: RecvTier::FreeList,
            user_reserve: 0,
        },
    )
    .unwrap();
    for seed in 0..seeds {
        let mut rng = XorShift::new(seed);
        let mut enc = FrameEncoder::new(c).unwrap();
        let mut order = sizes(&c, &mut rng, msgs);
        // Shuffle so edge sizes meet each other in every order.
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let messages: Vec<Vec<u8>> = order.iter().map(|&n| payload(&mut rng, n)).collect();
        let mut sink = VecSink::default();
        for m in &messages {
            let n = enc.encode(m, &mut sink).unwrap();
            assert_eq!(n, enc.encoded_len(m.len()));
        }
        let wire = sink.0;
        let throttle = Throttle::new();
        let mut dec: FrameDecoder<'_> = FrameDecoder::new(c, user, &throttle).unwrap();
        // Pieces of up to 512 bytes (one receive buffer), or tiny ones.
        let max = if seed % 3 == 0 { 3 } else { 512 };
        let pieces = split_random(&mut rng, &wire, max);
        let (got, err) = decode_pieces(&mut dec, segs, &pieces, T0);
        assert_eq!(err, None, "seed {seed}");
        assert_eq!(got.len(), messages.len(), "seed {seed}");
        for (i, (g, m)) in got.iter().zip(&messages).enumerate() {
            assert!(
                g == m,
                "seed {seed}: message {i} of {} bytes differs",
                m.len()
            );
        }
        let s = dec.stats();
        assert_eq!(s.frames, messages.len() as u64);
        let fragmented = messages.iter().filter(|m| m.len() > c.chunk.into()).count();
        assert_eq!(s.reassembled, fragmented as u64);
        assert_eq!(s.dropped_throttle + s.dropped_no_buffer + s.orphans, 0);
        assert!(!dec.is_mid_message());
        // And the same bytes as one slice.
        dec.reset();
        let (got2, err) = decode_all(&mut dec, &wire, T0);
        assert_eq!((got2, err), (got, None));
        drop(dec);
        assert_eq!(user.leased(), 0, "seed {seed}: a message buffer leaked");
        assert_eq!(segs.leased(), 0, "seed {seed}: a segment leaked");
    }
}

#[test]
fn roundtrip_small_chunks_random_splits() {
    let c = FrameConfig {
        max_frame: 109,
        chunk: 100,
        max_message: 4096,
        max_fragments: 41,
        ..small()
    };
    roundtrip_property::<4, 4096>(c, 60, 30);
}

#[test]
fn roundtrip_largest_frames() {
    // chunk + 9 == 65535: full fragments have the largest length a u16 holds.
    let c = FrameConfig {
        max_frame: u16::MAX,
        chunk: u16::MAX - 9,
        max_message: 3 * 65526,
        max_fragments: 3,
        ..small()
    };
    roundtrip_property::<2, { 3 * 65526 }>(c, 3, 2);
}

#[test]
fn every_split_point_of_a_stream() {
    let c = small();
    let mut enc = FrameEncoder::new(c).unwrap();
    let messages: Vec<Vec<u8>> = [0usize, 8, 9, 1, 17, 64, 7]
        .iter()
        .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
        .collect();
    let mut sink = VecSink::default();
    for m in &messages {
        enc.encode(m, &mut sink).unwrap();
    }
    let wire = sink.0;
    let mut u = BufPoolStorage::<4, 64>::new();
    let user = pool(&mut u);
    let mut s = BufPoolStorage::<64, 64>::new();
    let segs = BufPool::new(
        &mut s,
        BufPoolConfig {
            recv_tier: RecvTier::FreeList,
            user_reserve: 0,
        },
    )
    .unwrap();
    let throttle = Throttle::new();
    let mut dec: FrameDecoder<'_> = FrameDecoder::new(c, user, &throttle).unwrap();
    for i in 0..=wire.len() {
        for j in i..=wire.len() {
            dec.reset();
            let pieces: Vec<&[u8]> = [&wire[..i], &wire[i..j], &wire[j..]]
                .into_iter()
                .filter(|p| !p.is_empty())
                .flat_map(|p| p.chunks(64))
                .collect();
            let (got, err) = decode_pieces(&mut dec, segs, &pieces, T0);
            assert_eq!((err, &got), (None, &messages), "split at {i}, {j}");
        }
    }
    dec.reset();
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(decode_pieces(&mut dec, segs, &bytes, T0), (messages, None));
    drop(dec);
    assert_eq!((user.leased(), segs.leased()), (0, 0));
}

// ---------------------------------------------------------------------------------------------
// Invalid headers
// ---------------------------------------------------------------------------------------------

/// Decodes `wire` (after `prefix`, which must be valid) whole and byte by byte: both must fail
/// with `want`, no frame after the prefix's, and no buffer held afterwards.
fn check_invalid(prefix: &[u8], wire: &[u8], want: FrameError) {
    let c = small();
    let mut u = BufPoolStorage::<8, 64>::new();
    let user = pool(&mut u);
    let throttle = Throttle::new();
    let mut all = prefix.to_vec();
    all.extend_from_slice(wire);
    let mut dec: FrameDecoder<'_> = FrameDecoder::new(c, user, &throttle).unwrap();
    let (_, err) = decode_all(&mut dec, &all, T0);
    assert_eq!(err, Some(want), "whole: {wire:?}");
    assert_eq!(dec.error(), Some(want));
    assert_eq!(
        dec.reassemblies(),
        0,
        "a failed decoder holds no reassembly"
    );
    assert_eq!(user.leased(), 0, "a failed decoder holds no buffer");
    // Sticky: the same error, whatever comes next.
    assert_eq!(
        dec.decode(ReadBuf::from_slice(&whole(b"ok")), T0)
            .unwrap_err(),
        want
    );
    // Byte by byte: the error comes as soon as the header shows it, never a panic.
    dec.reset();
    let mut pos = 0;
    let mut end = 0;
    let err = loop {
        end += 1;
        assert!(end <= all.len(), "no error for {wire:?}");
        match dec.decode(ReadBuf::from_slice(&all[pos..end]), T0) {
            Ok(d) => pos += d.consumed,
            Err(e) => break e,
        }
    };
    assert_eq!(err, want, "byte by byte: {wire:?}");
    assert_eq!(user.leased(), 0);
    // The display names the problem.
    assert!(!want.to_string().is_empty());
}

#[test]
fn lengths_below_the_header() {
    for len in 0..3u16 {
        let e = FrameError::LengthBelowHeader { len, min: 3 };
        check_invalid(&[], &len.to_le_bytes(), e);
    }
    for len in 3..9u16 {
        let e = FrameError::LengthBelowHeader { len, min: 9 };
        check_invalid(&[], &header(len, FLAG_FRAGMENT, &[0; 6]), e);
    }
}

#[test]
fn lengths_above_the_maximum() {
    // Refused from the length alone: no payload byte is needed (or read).
    for len in [18u16, 19, 1000, u16::MAX] {
        let e = FrameError::FrameTooLong { len, max: 17 };
        check_invalid(&[], &len.to_le_bytes(), e);
    }
    // The maximum itself is fine.
    check_valid(&frag(0, 0, 1, &[5; 8]), &[vec![5; 8]]);
}

fn check_valid(wire: &[u8], want: &[Vec<u8>]) {
    let mut u = BufPoolStorage::<8, 64>::new();
    let throttle = Throttle::new();
    let mut dec: FrameDecoder<'_> = FrameDecoder::new(small(), pool(&mut u), &throttle).unwrap();
    assert_eq!(decode_all(&mut dec, wire, T0), (want.to_vec(), None));
}

#[test]
fn reserved_flags() {
    for flags in [0x02u8, 0x03, 0x04, 0x10, 0x80, 0xff] {
        check_invalid(
            &[],
            &header(8, flags, &[0; 5]),
            FrameError::ReservedFlags { flags },
        );
    }
}

#[test]
fn empty_fragment() {
    check_invalid(
        &[],
        &frag(7, 0, 2, &[]),
        FrameError::EmptyFragment { stream: 7 },
    );
}

#[test]
fn bad_fragment_indexes() {
    for (index, count) in [(0u16, 0u16), (1, 1), (2, 1), (5, 5), (u16::MAX, 3)] {
        check_invalid(
            &[],
            &frag(1, index, count, b"x"),
            FrameError::BadFragmentIndex { index, count },
        );
    }
}

#[test]
fn too_many_fragments() {
    check_invalid(
        &[],
        &frag(1, 0, 9, b"x"),
        FrameError::TooManyFragments { count: 9, max: 8 },
    );
    check_invalid(
        &[],
        &frag(1, 0, u16::MAX, b"x"),
        FrameError::TooManyFragments {
            count: u16::MAX,
            max: 8,
        },
    );
}

#[test]
fn fragment_order_errors() {
    let first = frag(3, 0, 3, b"aaaa");
    check_invalid(
        &first,
        &frag(3, 0, 3, b"b"),
        FrameError::StreamInUse { stream: 3 },
    );
    check_invalid(
        &first,
        &frag(3, 2, 3, b"b"),
        FrameError::FragmentOutOfOrder {
            stream: 3,
            expected: 1,
            got: 2,
        },
    );
    let mut two = first.clone();
    two.extend_from_slice(&frag(3, 1, 3, b"b"));
    check_invalid(
        &two,
        &frag(3, 1, 3, b"c"),
        FrameError::FragmentOutOfOrder {
            stream: 3,
            expected: 2,
            got: 1,
        },
    );
    check_invalid(
        &first,
        &frag(3, 1, 4, b"b"),
        FrameError::FragmentCountChanged {
            stream: 3,
            count: 3,
            got: 4,
        },
    );
}

#[test]
fn too_many_reassemblies() {
    let mut two = frag(1, 0, 2, b"a");
    two.extend_from_slice(&frag(2, 0, 2, b"b"));
    check_invalid(
        &two,
        &frag(3, 0, 2, b"c"),
        FrameError::TooManyReassemblies { max: 2 },
    );
}

#[test]
fn messages_too_large() {
    let mut u = BufPoolStorage::<8, 64>::new();
    let user = pool(&mut u);
    let throttle = Throttle::new();
    // A whole frame's payload above max_message (with a frame limit that allows it).
    let c = FrameConfig {
        max_frame: 100,
        max_message: 16,
        max_fragments: 2,
        ..small()
    };
    let mut dec: FrameDecoder<'_> = FrameDecoder::new(c, user, &throttle).unwrap();
    let (_, err) = decode_all(&mut dec, &whole(&[0; 17]), T0);
    assert_eq!(err, Some(FrameError::MessageTooLarge { len: 17, max: 16 }));
    // A first fragment above it.
    dec.reset();
    let (_, err) = decode_all(&mut dec, &frag(1, 0, 2, &[0; 17]), T0);
    assert_eq!(err, Some(FrameError::MessageTooLarge { len: 17, max: 16 }));
    drop(dec);
    // Fragments that add up to more than max_message: refused at the header of the one that
    // passes it, before its payload: 7 * 8 = 56 bytes, then 9 more.
    let c = FrameConfig {
        max_frame: 30,
        ..small()
    };
    let mut dec: FrameDecoder<'_> = FrameDecoder::new(c, user, &throttle).unwrap();
    let mut wire = Vec::new();
    for i in 0..7 {
        wire.extend_from_slice(&frag(4, i, 8, &[1; 8]));
    }
    wire.extend_from_slice(&frag(4, 7, 8, &[2; 9]));
    let header_end = wire.len() - 9;
    let d = dec
        .decode(ReadBuf::from_slice(&wire[..header_end - 9]), T0)
        .unwrap();
    assert_eq!((d.consumed, dec.reassemblies()), (header_end - 9, 1));
    let e = dec
        .decode(ReadBuf::from_slice(&wire[header_end - 9..header_end]), T0)
        .unwrap_err();
    assert_eq!(e, FrameError::MessageTooLarge { len: 65, max: 64 });
    assert!(e.to_string().contains("max_message"));
    drop(dec);
    assert_eq!(user.leased(), 0);
}

#[test]
fn hostile_bytes_never_panic() {
    // Random garbage, and garbage after valid frames, for every config the fuzz target uses.
    let mut rng = XorShift::new(99);
    for i in 0..3000u64 {
        let n = rng.below(200);
        let mut data = payload(&mut rng, n);
        if i % 3 == 0 && data.len() > 6 {
            // Plausible lengths and flags, to get past the first checks more often.
            data[4] = (rng.below(40)) as u8;
            data[5] = 0;
            data[6] = rng.below(2) as u8;
        }
        fuzz_frames(&data);
        fuzz_lines(&data);
    }
}

#[test]
fn fuzz_entries_on_valid_streams() {
    let mut rng = XorShift::new(5);
    for c in 0..=255u8 {
        // The config fuzz_frames derives from `c` (see there): encode messages with it.
        let chunk = [1u16, 3, 16, 100][usize::from(c & 3)];
        let max_message = [0usize, 5, 64, 250][usize::from(c >> 2 & 3)];
        let need = max_message.div_ceil(usize::from(chunk)) as u16;
        let config = FrameConfig {
            chunk,
            max_message,
            max_frame: chunk + 9 + [0, 40][usize::from(c >> 4 & 1)],
            max_fragments: need.max(1) + [0, 3][usize::from(c >> 5 & 1)],
            max_reassemblies: [1, 4][usize::from(c >> 6 & 1)],
            reassembly_timeout: Duration::from_secs(1),
            max_pending: [1, 4][usize::from(c >> 7)],
        };
        let mut enc = FrameEncoder::new(config).unwrap();
        let mut data = vec![c, rng.below(16) as u8, rng.next() as u8, rng.next() as u8];
        let mut sink = VecSink::default();
        for _ in 0..3 {
            let n = rng.below(max_message.min(60) + 1);
            enc.encode(&payload(&mut rng, n), &mut sink).unwrap();
        }
        data.extend_from_slice(&sink.0);
        fuzz_frames(&data);
        // Lines: text with both endings.
        let mut text = vec![c, rng.next() as u8, rng.next() as u8];
        for _ in 0..10 {
            let n = rng.below(60);
            text.extend((0..n).map(|_| b"ab\r\n x"[rng.below(6)]));
        }
        fuzz_lines(&text);
    }
}

// ---------------------------------------------------------------------------------------------
// Reassembly
// ---------------------------------------------------------------------------------------------

#[test]
fn interleaved_messages_reassemble_into_one_buffer_each() {
    let mut u = BufPoolStorage::<8, 64>::new();
    let user = pool(&mut u);
    let throttle = Throttle::new();
    let mut dec: FrameDecoder<'_> = FrameDecoder::new(small(), user, &throttle).unwrap();
    let mut wire = Vec::new();
    wire.extend_from_slice(&frag(10, 0, 3, b"A0A0A0A0"));
    wire.extend_from_slice(&frag(20, 0, 2, b"B0B0B0B0"));
    wire.extend_from_slice(&whole(b"between"));
    wire.extend_from_slice(&frag(10, 1, 3, b"A1A1A1A1"));
    wire.extend_from_slice(&frag(20, 1, 2, b"B1"));
    wire.extend_from_slice(&frag(10, 2, 3, b"A2"));
    let mut pos = 0;
    let mut frames = Vec::new();
    while let Ok(d) = dec.decode(ReadBuf::from_slice(&wire[pos..]), T0) {
        pos += d.consumed;
        let Some(f) = d.frame else { break };
        if frames.is_empty() {
            // While "between" is out, both messages are in reassembly: one buffer each.
            assert_eq!(dec.reassemblies(), 2);
            assert_eq!(user.leased(), 3);
        }
        frames.push(f);
    }
    let got: Vec<(&[u8], u16)> = frames
        .iter()
        .map(|f| (f.as_slice(), f.fragments()))
        .collect();
    assert_eq!(
        got,
        [
            (&b"between"[..], 1),
            (&b"B0B0B0B0B1"[..], 2),
            (&b"A0A0A0A0A1A1A1A1A2"[..], 3)
        ]
    );
    assert_eq!(dec.stats().reassembled, 2);
    assert_eq!(user.leased(), 3, "one buffer per message");
    drop(frames);
    assert_eq!(user.leased(), 0);
    // A stream id may be used again once its message completed.
    let (got, err) = decode_all(&mut dec, &frag(10, 0, 1, b"again"), T0);
    assert_eq!((got, err), (vec![b"again".to_vec()], None));
}

#[test]
fn stalled_reassembly_expires_and_its_later_fragments_are_orphans() {
    let c = small();
    let mut u = BufPoolStorage::<8, 64>::new();
    let user = pool(&mut u);
    let throttle = Throttle::new();
    let mut dec: FrameDecoder<'_> = FrameDecoder::new(c, user, &throttle).unwrap();
    let t = Duration::from_secs(1);
    let (got, _) = decode_all(&mut dec, &frag(5, 0, 3, b"12345678"), T0);
    assert!(got.is_empty());
    assert_eq!((dec.reassemblies(), user.leased()), (1, 1));
    assert_eq!(dec.next_deadline(), Some(T0 + t));
    // Just before the deadline nothing happens.
    let before = T0 + (t - Duration::from_nanos(1));
    assert_eq!(dec.expire(before), 0);
    assert_eq!(dec.reassemblies(), 1);
    // At it, the buffer goes back and it is counted.
    assert_eq!(dec.expire(T0 + t), 1);
    assert_eq!((dec.reassemblies(), user.leased()), (0, 0));
    assert_eq!(dec.stats().expired, 1);
    assert_eq!(dec.next_deadline(), None);
    // The rest of it arrives late: skipped and counted, the connection goes on.
    let mut late = frag(5, 1, 3, b"abcdefgh");
    late.extend_from_slice(&frag(5, 2, 3, b"xy"));
    late.extend_from_slice(&whole(b"next"));
    let (got, err) = decode_all(&mut dec, &late, T0 + t);
    assert_eq!((got, err), (vec![b"next".to_vec()], None));
    assert_eq!(dec.stats().orphans, 2);
    assert_eq!(user.leased(), 0);
}

#[test]
fn reassembly_expiring_in_the_middle_of_a_fragment_skips_its_rest() {
    let mut u = BufPoolStorage::<8, 64>::new();
    let user = pool(&mut u);
    let throttle = Throttle::new();
    let mut dec: FrameDecoder<'_> = FrameDecoder::new(small(), user, &throttle).unwrap();
    let mut wire = frag(9, 0, 2, b"12345678");
    wire.extend_from_slice(&frag(9, 1, 2, b"abcdefgh"));
    wire.extend_from_slice(&whole(b"after"));
    // Fragment 0 and half of fragment 1's payload at t = 0.
    let d = dec
        .decode(ReadBuf::from_slice(&wire[..17 + 13]), T0)
        .unwrap();
    assert_eq!(d.consumed, 30);
    assert!(d.frame.is_none());
    // The rest after the deadline: the decode expires the message first, then skips.
    let late = T0 + Duration::from_secs(2);
    let d = dec.decode(ReadBuf::from_slice(&wire[30..]), late).unwrap();
    assert_eq!(d.frame.as_deref(), Some(&b"after"[..]));
    assert_eq!(d.consumed, wire.len() - 30);
    assert_eq!(dec.stats().expired, 1);
    assert_eq!(dec.stats().frames, 1);
    drop(d);
    assert_eq!(user.leased(), 0);
}

// ---------------------------------------------------------------------------------------------
// The throttle and frame ownership
// ---------------------------------------------------------------------------------------------

#[test]
fn throttle_drops_above_the_limit_before_taking_a_buffer() {
    let c = FrameConfig {
        max_pending: 3,
        ..small()
    };
    let mut u = BufPoolStorage::<8, 64>::new();
    let user = pool(&mut u);
    let throttle = Throttle::new();
    let mut dec: FrameDecoder<'_> = FrameDecoder::new(c, user, &throttle).unwrap();
    let mut wire = Vec::new();
    for i in 0..6u8 {
        wire.extend_from_slice(&whole(&[i; 5]));
    }
    // A handler that never releases: it keeps every frame.
    let mut held = Vec::new();
    let mut pos = 0;
    loop {
        let d = dec.decode(ReadBuf::from_slice(&wire[pos..]), T0).unwrap();
        pos += d.consumed;
        match d.frame {
            Some(f) => held.push(f),
            None => break,
        }
    }
    assert_eq!(pos, wire.len(), "dropped frames are consumed (skipped)");
    assert_eq!(held.len(), 3);
    assert_eq!(held[2].as_slice(), [2; 5]);
    assert_eq!(dec.stats().dropped_throttle, 3);
    assert_eq!(throttle.pending(), 3);
    assert_eq!(user.leased(), 3, "dropped frames took no buffer");
    // Releasing one lets the next one through, and only one.
    held.remove(0).release();
    assert_eq!(throttle.pending(), 2);
    let mut more = Vec::new();
    for i in 10..12u8 {
        more.extend_from_slice(&whole(&[i; 2]));
    }
    let mut got = Vec::new();
    let mut pos = 0;
    loop {
        let d = dec.decode(ReadBuf::from_slice(&more[pos..]), T0).unwrap();
        pos += d.consumed;
        match d.frame {
            Some(f) => {
                got.push(f.to_vec());
                held.push(f);
            }
            None => break,
        }
    }
    assert_eq!(got, vec![vec![10; 2]]);
    assert_eq!(dec.stats().dropped_throttle, 4);
    assert_eq!(dec.stats().frames, 4);
    drop(held);
    assert_eq!(throttle.pending(), 0);
    assert_eq!(user.leased(), 0);
}

#[test]
fn throttle_drops_fragmented_messages_whole() {
    let c = FrameConfig {
        max_pending: 1,
        ..small()
    };
    let mut u = BufPoolStorage::<8, 64>::new();
    let user = pool(&mut u);
    let throttle = Throttle::new();
    let mut dec: FrameDecoder<'_> = FrameDecoder::new(c, user, &throttle).unwrap();
    // Message A starts (admitted: a buffer), then a whole frame fills the throttle.
    let mut wire = frag(1, 0, 2, b"AAAAAAAA");
    wire.extend_from_slice(&whole(b"w"));
    let (mut pos, mut held) = (0, Vec::new());
    loop {
        let d = dec.decode(ReadBuf::from_slice(&wire[pos..]), T0).unwrap();
        pos += d.consumed;
        match d.frame {
            Some(f) => held.push(f),
            None => break,
        }
    }
    assert_eq!(held.len(), 1);
    assert_eq!(user.leased(), 2, "A's buffer and the whole frame");
    // A's next fragment comes at the limit: A is dropped, its buffer back at once.
    let rest = frag(1, 1, 2, b"aa");
    let d = dec.decode(ReadBuf::from_slice(&rest[..9]), T0).unwrap();
    assert!(d.frame.is_none());
    assert_eq!(user.leased(), 1);
    assert_eq!(dec.stats().dropped_throttle, 1);
    let d = dec.decode(ReadBuf::from_slice(&rest[9..]), T0).unwrap();
    assert!(d.frame.is_none(), "a dropped message is not delivered");
    assert_eq!(dec.reassemblies(), 0);
    // A new fragmented message at the limit takes no buffer at all.
    let mut b = frag(2, 0, 2, b"BBBBBBBB");
    b.extend_from_slice(&frag(2, 1, 2, b"bb"));
    let (got, err) = decode_all(&mut dec, &b, T0);
    assert_eq!((got.len(), err), (0, None));
    assert_eq!(user.leased(), 1);
    assert_eq!(dec.stats().dropped_throttle, 2);
    // Released: delivery resumes.
    drop(held);
    let (got, _) = decode_all(&mut dec, &b, T0);
    assert_eq!(got, vec![b"BBBBBBBBbb".to_vec()]);
    assert_eq!(user.leased(), 0);
}

#[test]
fn empty_user_tier_drops_and_counts() {
    let mut u = BufPoolStorage::<2, 64>::new();
    let user = pool(&mut u);
    let hog = user.try_lease_user().unwrap();
    let throttle = Throttle::new();
    let mut dec: FrameDecoder<'_> = FrameDecoder::new(small(), user, &throttle).unwrap();
    let mut wire = whole(b"one");
    wire.extend_from_slice(&whole(b"two"));
    let mut pos = 0;
    let d = dec.decode(ReadBuf::from_slice(&wire), T0).unwrap();
    pos += d.consumed;
    let first = d.frame.unwrap();
    let d = dec.decode(ReadBuf::from_slice(&wire[pos..]), T0).unwrap();
    assert!(d.frame.is_none());
    assert_eq!(d.consumed, wire.len() - pos);
    assert_eq!(dec.stats().dropped_no_buffer, 1);
    assert_eq!(first.as_slice(), b"one");
    drop((first, hog));
    assert_eq!(user.leased(), 0);
}

#[test]
fn frames_held_past_their_connection_return_once_and_leave_the_next_count_alone() {
    let mut u = BufPoolStorage::<8, 64>::new();
    let user = pool(&mut u);
    let throttle = Throttle::new();
    let mut dec: FrameDecoder<'_> = FrameDecoder::new(small(), user, &throttle).unwrap();
    let mut wire = whole(b"old1");
    wire.extend_from_slice(&whole(b"old2"));
    let d = dec.decode(ReadBuf::from_slice(&wire), T0).unwrap();
    let old1 = d.frame.unwrap();
    let d2 = dec
        .decode(ReadBuf::from_slice(&wire[d.consumed..]), T0)
        .unwrap();
    let old2 = d2.frame.unwrap();
    assert_eq!(throttle.pending(), 2);
    assert!(old1.is_counted());
    // The connection closes (its decoder is reset for the next one in the slot).
    dec.reset();
    assert_eq!(throttle.pending(), 0);
    assert!(!old1.is_counted());
    let d = dec.decode(ReadBuf::from_slice(&whole(b"new")), T0).unwrap();
    let new = d.frame.unwrap();
    assert_eq!(throttle.pending(), 1);
    // The old frames go back: buffers returned, the new connection's count untouched.
    assert_eq!(user.leased(), 3);
    drop(old1);
    old2.release();
    assert_eq!(user.leased(), 1);
    assert_eq!(throttle.pending(), 1);
    // A frame turned into a plain lease leaves the throttle but keeps its buffer.
    let lease = new.into_lease();
    assert_eq!(throttle.pending(), 0);
    assert_eq!(lease.as_slice(), b"new");
    assert_eq!(user.leased(), 1);
    drop(lease);
    // Dropping the decoder ends its generation too.
    let d = dec
        .decode(ReadBuf::from_slice(&whole(b"last")), T0)
        .unwrap();
    let last = d.frame.unwrap();
    drop(dec);
    assert!(!last.is_counted());
    assert_eq!(throttle.pending(), 0);
    drop(last);
    assert_eq!(user.leased(), 0);
}

// ---------------------------------------------------------------------------------------------
// Lines
// ---------------------------------------------------------------------------------------------

fn lines_of(config: LineConfig, input: &[u8]) -> (Vec<Vec<u8>>, Option<LineError>, usize) {
    let mut dec = LineDecoder::new(config);
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        match dec.decode(ReadBuf::from_slice(&input[pos..])) {
            Ok(Some(l)) => {
                let mut v = vec![0; l.line.len()];
                l.line.copy_to(&mut v);
                out.push(v);
                pos += l.consumed;
            }
            Ok(None) => return (out, None, pos),
            Err(e) => return (out, Some(e), pos),
        }
    }
}

#[test]
fn lines_crlf_and_lf() {
    let crlf = LineConfig {
        ending: LineEnding::CrLf,
        max_line: 16,
    };
    let (got, err, pos) = lines_of(crlf, b"PING\r\n\r\nbare\nlf\r\nlone\rcr\r\npartial");
    assert_eq!(
        got,
        [&b"PING"[..], b"", b"bare\nlf", b"lone\rcr"]
            .map(<[u8]>::to_vec)
            .to_vec()
    );
    assert_eq!((err, pos), (None, 26), "the partial line stays unread");
    let lf = LineConfig {
        ending: LineEnding::Lf,
        max_line: 16,
    };
    let (got, err, _) = lines_of(lf, b"a\nb\r\n\n");
    assert_eq!(
        (got, err),
        ([&b"a"[..], b"b\r", b""].map(<[u8]>::to_vec).to_vec(), None)
    );
}

#[test]
fn line_limit_is_exact_and_the_error_names_it() {
    for ending in [LineEnding::CrLf, LineEnding::Lf] {
        let config = LineConfig {
            ending,
            max_line: 10,
        };
        let d = ending.delimiter();
        let mut ok = vec![b'x'; 10];
        ok.extend_from_slice(d);
        let (got, err, _) = lines_of(config, &ok);
        assert_eq!((got, err), (vec![vec![b'x'; 10]], None), "{ending:?}");
        let mut long = vec![b'x'; 11];
        long.extend_from_slice(d);
        let (got, err, _) = lines_of(config, &long);
        assert!(got.is_empty());
        let e = err.unwrap();
        assert_eq!(e, LineError::TooLong { max: 10 });
        assert!(e.to_string().contains("limit of 10 bytes"), "{e}");
        // Detected without the ending: as soon as max_line + ending bytes hold none.
        let (_, err, _) = lines_of(config, &vec![b'x'; 10 + d.len()]);
        assert_eq!(err, Some(LineError::TooLong { max: 10 }));
        let (_, err, _) = lines_of(config, &vec![b'x'; 10 + d.len() - 1]);
        assert_eq!(err, None, "could still end in time");
    }
    // With CRLF, a CR as the 11th byte may still be the start of the ending.
    let config = LineConfig {
        ending: LineEnding::CrLf,
        max_line: 10,
    };
    let mut dec = LineDecoder::new(config);
    let mut v = vec![b'y'; 10];
    v.push(b'\r');
    assert!(dec.decode(ReadBuf::from_slice(&v)).unwrap().is_none());
    v.push(b'\n');
    let l = dec.decode(ReadBuf::from_slice(&v)).unwrap().unwrap();
    assert_eq!((l.line.len(), l.consumed), (10, 12));
    // Errors are sticky until reset.
    let mut dec = LineDecoder::new(config);
    assert!(dec.decode(ReadBuf::from_slice(&[b'z'; 12])).is_err());
    assert!(dec.decode(ReadBuf::from_slice(b"ok\r\n")).is_err());
    dec.reset();
    assert!(
        dec.decode(ReadBuf::from_slice(b"ok\r\n"))
            .unwrap()
            .is_some()
    );
}

#[test]
fn lines_at_every_split_and_trickled() {
    let config = LineConfig {
        ending: LineEnding::CrLf,
        max_line: 20,
    };
    let text = b"one\r\n\r\ntwo\rthree\r\nfour\n\r\nlast line here\r\n";
    let (want, err, _) = lines_of(config, text);
    assert_eq!(err, None);
    assert_eq!(want.len(), 5);
    let mut s = BufPoolStorage::<64, 64>::new();
    let segs = BufPool::new(
        &mut s,
        BufPoolConfig {
            recv_tier: RecvTier::FreeList,
            user_reserve: 0,
        },
    )
    .unwrap();
    let run = |pieces: &[&[u8]]| {
        let mut dec = LineDecoder::new(config);
        let mut reader = ConnectionPipeReader::<'_, 32, 8>::new(8).unwrap();
        let mut out = Vec::new();
        for p in pieces {
            let mut lease = segs.try_take_recv().unwrap();
            lease.buf_mut()[..p.len()].copy_from_slice(p);
            lease.set_len(p.len()).unwrap();
            let _ = reader.push(lease).unwrap();
            while let Some(read) = reader.try_read() {
                let buf = read.buffer();
                match dec.decode(buf).unwrap() {
                    Some(l) => {
                        out.push(l.line.bytes().collect::<Vec<u8>>());
                        let at = buf.position(l.consumed).unwrap();
                        let _ = reader.advance_to(at).unwrap();
                    }
                    None => {
                        let (a, b) = (buf.start(), buf.end());
                        let _ = reader.advance_to_examined(a, b).unwrap();
                        break;
                    }
                }
            }
        }
        out
    };
    for i in 0..=text.len() {
        for j in i..=text.len() {
            let pieces: Vec<&[u8]> = [&text[..i], &text[i..j], &text[j..]]
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect();
            assert_eq!(run(&pieces), want, "split at {i}, {j}");
        }
    }
    let bytes: Vec<&[u8]> = text.chunks(1).collect();
    assert_eq!(run(&bytes), want);
    assert_eq!(segs.leased(), 0);
}

#[test]
fn encode_line_checks_before_writing() {
    let config = LineConfig {
        ending: LineEnding::CrLf,
        max_line: 8,
    };
    let mut buf = [0u8; 12];
    let mut sink = SliceSink::new(&mut buf);
    assert_eq!(encode_line(&config, b"hello", &mut sink), Ok(7));
    assert_eq!(sink.written(), b"hello\r\n");
    assert_eq!(
        encode_line(&config, b"123456789", &mut sink),
        Err(EncodeError::MessageTooLarge { len: 9, max: 8 })
    );
    assert_eq!(
        encode_line(&config, b"a\r\nb", &mut sink),
        Err(EncodeError::ContainsDelimiter { at: 1 })
    );
    // A lone CR or LF is fine in a CRLF line; a CR at the end decodes back as itself.
    assert_eq!(encode_line(&config, b"x\r", &mut sink), Ok(4));
    assert_eq!(
        encode_line(&config, b"abcd", &mut sink),
        Err(EncodeError::WouldBlock { need: 6, room: 1 })
    );
    assert_eq!(sink.written(), b"hello\r\nx\r\r\n");
    let (got, _, _) = lines_of(config, sink.written());
    assert_eq!(got, vec![b"hello".to_vec(), b"x\r".to_vec()]);
    let lf = LineConfig {
        ending: LineEnding::Lf,
        max_line: 8,
    };
    let mut sink = VecSink::default();
    assert_eq!(
        encode_line(&lf, b"a\nb", &mut sink),
        Err(EncodeError::ContainsDelimiter { at: 1 })
    );
    assert_eq!(encode_line(&lf, b"a\rb", &mut sink), Ok(4));
    assert_eq!(sink.0, b"a\rb\n");
    let _ = format!("{:?}", LineEnding::default());
}
