//! [`FrameDecoder`]: frames and fragments out of segmented input, reassembly into one pool
//! buffer, the pending-frame [`Throttle`], and the [`Frame`]s handed out.

use core::fmt;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use super::{ConfigError, FLAG_FRAGMENT, FRAGMENT_HEADER_LEN, FrameConfig, FrameError, HEADER_LEN};
use crate::pipe::ReadBuf;
use crate::pool::{BufPool, Lease};
use crate::time::Instant;

/// One connection's count of frames delivered and not yet released (seed 004, "Layer 1"),
/// shared by its [`FrameDecoder`] and the [`Frame`]s it hands out.
///
/// The decoder increments the count when it delivers a frame; dropping the frame decrements
/// it, if the frame belongs to the throttle's current *generation*. A decoder starts a new
/// generation when it is built or reset, and ends its own when it is dropped, so frames a
/// handler keeps past the end of their connection never touch the count of the connection
/// that reuses the throttle.
///
/// One throttle serves one decoder at a time. It lives in caller storage for as long as the
/// frames (`'r`). The fields are atomics only so a table of throttles can be a plain `static`
/// (`[const { Throttle::new() }; N]`, all zero, in `.bss`); everything that touches them runs
/// on the loop's thread ([`Frame`] is not `Send`), with relaxed ordering.
#[derive(Debug, Default)]
pub struct Throttle {
    generation: AtomicU32,
    pending: AtomicU32,
}

impl Throttle {
    /// A throttle with nothing pending.
    pub const fn new() -> Throttle {
        Throttle {
            generation: AtomicU32::new(0),
            pending: AtomicU32::new(0),
        }
    }

    /// Frames of the current generation delivered and not yet released.
    pub fn pending(&self) -> u32 {
        self.pending.load(Relaxed)
    }

    /// Starts a new generation with nothing pending; returns it.
    fn begin(&self) -> u32 {
        let generation = self.generation.load(Relaxed).wrapping_add(1);
        self.generation.store(generation, Relaxed);
        self.pending.store(0, Relaxed);
        generation
    }

    /// A frame of `generation` was released.
    fn release(&self, generation: u32) {
        if self.generation.load(Relaxed) == generation {
            let n = self.pending.load(Relaxed);
            self.pending.store(n.saturating_sub(1), Relaxed);
        }
    }
}

/// A decoded message: its payload in one pool buffer, owned by whoever holds the frame.
///
/// Dropping it (or [`Frame::release`]) returns the buffer to the pool exactly once and counts
/// the frame as processed in its connection's [`Throttle`] (if the connection's decoder has
/// not moved on; see there). It derefs to the payload bytes. Not `Send` (its buffer belongs to
/// the loop's pool); [`Frame::into_lease`] gives up the throttle slot and keeps the buffer, for
/// instance to hand it to another thread with
/// [`Context::send_lease`](crate::reactor::Context::send_lease).
pub struct Frame<'r> {
    /// Always `Some` but inside [`Frame::into_lease`] (which takes it without running the
    /// frame's drop).
    lease: Option<Lease<'r>>,
    throttle: &'r Throttle,
    generation: u32,
    fragments: u16,
}

impl<'r> Frame<'r> {
    /// The payload.
    pub fn as_slice(&self) -> &[u8] {
        self.lease.as_ref().map_or(&[], Lease::as_slice)
    }

    /// The payload, mutably (to answer in place, say).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.lease.as_mut().map_or(&mut [], Lease::as_mut_slice)
    }

    /// The payload's length.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many frames carried it: 1 for a whole message, the fragment count otherwise.
    pub fn fragments(&self) -> u16 {
        self.fragments
    }

    /// The id of the pool buffer holding the payload.
    pub fn buffer_id(&self) -> u16 {
        self.lease.as_ref().map_or(0, Lease::id)
    }

    /// Whether the decoder that delivered it still counts it (its connection is open and its
    /// decoder was not reset since).
    pub fn is_counted(&self) -> bool {
        self.throttle.generation.load(Relaxed) == self.generation
    }

    /// Returns the buffer and the throttle slot now (the same as dropping the frame).
    pub fn release(self) {}

    /// Counts the frame as processed in the throttle now, and keeps its buffer as a plain
    /// lease (which returns it when dropped).
    pub fn into_lease(mut self) -> Lease<'r> {
        let lease = self.lease.take();
        // The frame's drop (now) releases the throttle slot; it finds no lease to return.
        drop(self);
        match lease {
            Some(lease) => lease,
            // `lease` is `Some` for every frame a decoder made; only this method takes it.
            None => unreachable_lease(),
        }
    }
}

/// Never called (see [`Frame::into_lease`]); a diverging stand-in so no `unwrap` is needed.
#[cold]
fn unreachable_lease() -> ! {
    unreachable!("a frame always holds its lease until into_lease")
}

impl Drop for Frame<'_> {
    fn drop(&mut self) {
        self.throttle.release(self.generation);
        // The lease's own drop (after this) returns the buffer.
    }
}

impl Deref for Frame<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl DerefMut for Frame<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl AsRef<[u8]> for Frame<'_> {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("len", &self.len())
            .field("fragments", &self.fragments)
            .field("buffer", &self.buffer_id())
            .field("counted", &self.is_counted())
            .finish()
    }
}

/// Counters of a decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DecoderStats {
    /// Messages delivered (whole or reassembled).
    pub frames: u64,
    /// Of those, messages that came in fragments.
    pub reassembled: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    /// Messages dropped at the throttle (the connection had `max_pending` frames out).
    pub dropped_throttle: u64,
    /// Messages dropped because the pool's user tier had no buffer.
    pub dropped_no_buffer: u64,
    /// Reassemblies dropped because they did not complete within the timeout.
    pub expired: u64,
    /// Fragments skipped because their message was not in reassembly (it expired, or its
    /// first fragment never came).
    pub orphans: u64,
}

impl DecoderStats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &DecoderStats) {
        self.frames += other.frames;
        self.reassembled += other.reassembled;
        self.bytes += other.bytes;
        self.dropped_throttle += other.dropped_throttle;
        self.dropped_no_buffer += other.dropped_no_buffer;
        self.expired += other.expired;
        self.orphans += other.orphans;
    }
}

/// What one [`FrameDecoder::decode`] call did.
#[must_use = "advance the input by `consumed`, and handle the frame"]
#[derive(Debug)]
pub struct Decoded<'r> {
    /// Bytes of the input used, from its start: advance the reader by this much. Everything
    /// before a returned frame's end, or, without a frame, everything but a partial header.
    pub consumed: usize,
    /// A complete message, if one ended within the input. The call returns right after it:
    /// call again with the rest.
    pub frame: Option<Frame<'r>>,
}

/// One message in reassembly.
struct Reassembly<'r> {
    stream: u16,
    count: u16,
    /// The index expected next.
    next: u16,
    /// Payload bytes so far (also counted while dropping, for the size limit).
    len: usize,
    deadline: Instant,
    /// Where the fragments collect; `None` while the message is being dropped.
    lease: Option<Lease<'r>>,
}

/// Where the decoder is in the byte stream.
enum State<'r> {
    /// At a frame's first byte.
    Header,
    /// In a whole message's payload, copying it into `lease`.
    Whole { lease: Lease<'r>, remaining: usize },
    /// In a fragment's payload, copying it into reassembly slot `slot`.
    Fragment { slot: usize, remaining: usize },
    /// In the payload of a dropped frame: skipping it.
    Skip { remaining: usize },
}

/// The length-prefixed decoder of one connection: frames and fragments out of segmented
/// input, each message copied once into one user-tier buffer of `pool` and handed out as a
/// [`Frame`], with the limits of [`FrameConfig`] and the connection's [`Throttle`].
///
/// `R` (default 4) is how many reassemblies it has room for; [`FrameConfig::max_reassemblies`]
/// may be lower.
///
/// # Feeding it
///
/// Call [`FrameDecoder::decode`] with a view of every unread byte (from a
/// [`ConnectionPipeReader`](crate::pipe::ConnectionPipeReader), or
/// [`ReadBuf::from_slice`]) and advance the input by [`Decoded::consumed`]. When it returns a
/// frame, call again with the rest; when it returns none, it used every byte but a partial
/// header (fewer than 9 bytes): wait for more input. Payload bytes are copied as they come,
/// so a large message never needs to sit whole in the input. The decoder's state follows the
/// stream: the next call must start where the consumed bytes ended.
///
/// See the [module documentation](super) for the format, the limits and the throttle.
pub struct FrameDecoder<'r, const R: usize = 4> {
    config: FrameConfig,
    pool: BufPool<'r>,
    throttle: &'r Throttle,
    generation: u32,
    state: State<'r>,
    streams: [Option<Reassembly<'r>>; R],
    active: usize,
    failed: Option<FrameError>,
    stats: DecoderStats,
}

impl<'r, const R: usize> FrameDecoder<'r, R> {
    /// A decoder leasing message buffers from `pool`'s user tier and counting delivered
    /// frames in `throttle` (which starts a new generation: see [`Throttle`]).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the config does not validate ([`FrameConfig::validate`]), when
    /// `max_message` exceeds the pool's buffer size, or `max_reassemblies` exceeds `R`.
    pub fn new(
        config: FrameConfig,
        pool: BufPool<'r>,
        throttle: &'r Throttle,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        config.check_buffers(pool.buf_size())?;
        if config.max_reassemblies > R {
            return Err(ConfigError(
                "max_reassemblies exceeds the decoder's R (its room for reassemblies)",
            ));
        }
        Ok(FrameDecoder {
            config,
            pool,
            throttle,
            generation: throttle.begin(),
            state: State::Header,
            streams: [const { None }; R],
            active: 0,
            failed: None,
            stats: DecoderStats::default(),
        })
    }

    /// Decodes from `input` (every unread byte) at time `now`: expires reassemblies past
    /// their deadline ([`FrameDecoder::expire`]), then reads frames until one completes or
    /// the input ends. See [`Decoded`].
    ///
    /// # Errors
    ///
    /// A [`FrameError`] when the input holds a frame that cannot be valid. The decoder is
    /// then failed: it has returned every buffer it held and returns the same error from
    /// every later call (until [`FrameDecoder::reset`]). Frames delivered before stay valid.
    pub fn decode(&mut self, input: ReadBuf<'_>, now: Instant) -> Result<Decoded<'r>, FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.expire(now);
        let len = input.len();
        let mut pos = 0;
        loop {
            let avail = len - pos;
            match core::mem::replace(&mut self.state, State::Header) {
                State::Header => match self.header(input, pos, now) {
                    Ok(Some(n)) => pos += n,
                    Ok(None) => return Ok(Decoded::none(pos)),
                    Err(e) => return Err(self.fail(e)),
                },
                State::Whole {
                    mut lease,
                    remaining,
                } => {
                    let k = remaining.min(avail);
                    copy_into(&mut lease, input, pos, k);
                    pos += k;
                    if k < remaining {
                        self.state = State::Whole {
                            lease,
                            remaining: remaining - k,
                        };
                        return Ok(Decoded::none(pos));
                    }
                    let frame = self.deliver(lease, 1);
                    return Ok(Decoded {
                        consumed: pos,
                        frame: Some(frame),
                    });
                }
                State::Fragment { slot, remaining } => {
                    let k = remaining.min(avail);
                    let Some(r) = self.streams.get_mut(slot).and_then(Option::as_mut) else {
                        // Cannot happen: a slot in use stays until its message completes or
                        // expires, and expiry turns this state into a skip. Skip to be safe.
                        self.state = State::Skip { remaining };
                        continue;
                    };
                    if let Some(lease) = r.lease.as_mut() {
                        copy_into(lease, input, pos, k);
                    }
                    pos += k;
                    if k < remaining {
                        self.state = State::Fragment {
                            slot,
                            remaining: remaining - k,
                        };
                        return Ok(Decoded::none(pos));
                    }
                    if r.next == r.count {
                        let count = r.count;
                        let done = self.streams.get_mut(slot).and_then(Option::take);
                        self.active -= 1;
                        if let Some(lease) = done.and_then(|r| r.lease) {
                            self.stats.reassembled += 1;
                            let frame = self.deliver(lease, count);
                            return Ok(Decoded {
                                consumed: pos,
                                frame: Some(frame),
                            });
                        }
                    }
                }
                State::Skip { remaining } => {
                    let k = remaining.min(avail);
                    pos += k;
                    if k < remaining {
                        self.state = State::Skip {
                            remaining: remaining - k,
                        };
                        return Ok(Decoded::none(pos));
                    }
                }
            }
        }
    }

    /// Reads the header at `pos`: `Ok(None)` when it is not all there yet; otherwise its
    /// length, with the state set for the payload.
    fn header(
        &mut self,
        input: ReadBuf<'_>,
        pos: usize,
        now: Instant,
    ) -> Result<Option<usize>, FrameError> {
        let mut h = [0u8; FRAGMENT_HEADER_LEN];
        let have = input.slice(pos..).map_or(0, |rest| rest.copy_to(&mut h));
        if have < 2 {
            return Ok(None);
        }
        let len = u16::from_le_bytes([h[0], h[1]]);
        if usize::from(len) < HEADER_LEN {
            return Err(FrameError::LengthBelowHeader {
                len,
                min: HEADER_LEN as u16,
            });
        }
        if len > self.config.max_frame {
            return Err(FrameError::FrameTooLong {
                len,
                max: self.config.max_frame,
            });
        }
        if have < HEADER_LEN {
            return Ok(None);
        }
        let flags = h[2];
        if flags & !FLAG_FRAGMENT != 0 {
            return Err(FrameError::ReservedFlags { flags });
        }
        if flags == 0 {
            let payload = usize::from(len) - HEADER_LEN;
            if payload > self.config.max_message {
                return Err(FrameError::MessageTooLarge {
                    len: payload,
                    max: self.config.max_message,
                });
            }
            self.state = match self.admit() {
                Some(lease) => State::Whole {
                    lease,
                    remaining: payload,
                },
                None => State::Skip { remaining: payload },
            };
            return Ok(Some(HEADER_LEN));
        }
        if usize::from(len) < FRAGMENT_HEADER_LEN {
            return Err(FrameError::LengthBelowHeader {
                len,
                min: FRAGMENT_HEADER_LEN as u16,
            });
        }
        if have < FRAGMENT_HEADER_LEN {
            return Ok(None);
        }
        let stream = u16::from_le_bytes([h[3], h[4]]);
        let index = u16::from_le_bytes([h[5], h[6]]);
        let count = u16::from_le_bytes([h[7], h[8]]);
        let payload = usize::from(len) - FRAGMENT_HEADER_LEN;
        if payload == 0 {
            return Err(FrameError::EmptyFragment { stream });
        }
        if index >= count {
            return Err(FrameError::BadFragmentIndex { index, count });
        }
        if count > self.config.max_fragments {
            return Err(FrameError::TooManyFragments {
                count,
                max: self.config.max_fragments,
            });
        }
        let found = self
            .streams
            .iter()
            .position(|r| r.as_ref().is_some_and(|r| r.stream == stream));
        let max_message = self.config.max_message;
        let slot = if index == 0 {
            if found.is_some() {
                return Err(FrameError::StreamInUse { stream });
            }
            let free = self.streams.iter().position(Option::is_none);
            let (Some(slot), true) = (free, self.active < self.config.max_reassemblies) else {
                return Err(FrameError::TooManyReassemblies {
                    max: self.config.max_reassemblies,
                });
            };
            if payload > max_message {
                return Err(FrameError::MessageTooLarge {
                    len: payload,
                    max: max_message,
                });
            }
            let lease = self.admit();
            self.streams[slot] = Some(Reassembly {
                stream,
                count,
                next: 1,
                len: payload,
                deadline: now + self.config.reassembly_timeout,
                lease,
            });
            self.active += 1;
            slot
        } else {
            let Some(slot) = found else {
                self.stats.orphans += 1;
                self.state = State::Skip { remaining: payload };
                return Ok(Some(FRAGMENT_HEADER_LEN));
            };
            let at_limit = self.at_limit();
            let Some(r) = self.streams[slot].as_mut() else {
                return Ok(None); // `found` names an occupied slot
            };
            if index != r.next {
                return Err(FrameError::FragmentOutOfOrder {
                    stream,
                    expected: r.next,
                    got: index,
                });
            }
            if count != r.count {
                return Err(FrameError::FragmentCountChanged {
                    stream,
                    count: r.count,
                    got: count,
                });
            }
            let total = r.len + payload;
            if total > max_message {
                return Err(FrameError::MessageTooLarge {
                    len: total,
                    max: max_message,
                });
            }
            if at_limit && r.lease.take().is_some() {
                // Dropped mid-way: its buffer goes back now, the rest is skipped.
                self.stats.dropped_throttle += 1;
            }
            r.next += 1;
            r.len = total;
            slot
        };
        self.state = State::Fragment {
            slot,
            remaining: payload,
        };
        Ok(Some(FRAGMENT_HEADER_LEN))
    }

    /// Whether the throttle is at its limit.
    fn at_limit(&self) -> bool {
        self.throttle.pending() >= self.config.max_pending
    }

    /// A buffer for a new message, or `None` (counted) when the throttle is at its limit or
    /// the user tier is empty: the message is then dropped.
    fn admit(&mut self) -> Option<Lease<'r>> {
        if self.at_limit() {
            self.stats.dropped_throttle += 1;
            return None;
        }
        match self.pool.try_lease_user() {
            Ok(lease) => Some(lease),
            Err(_) => {
                self.stats.dropped_no_buffer += 1;
                None
            }
        }
    }

    fn deliver(&mut self, lease: Lease<'r>, fragments: u16) -> Frame<'r> {
        self.stats.frames += 1;
        self.stats.bytes += lease.len() as u64;
        let n = self.throttle.pending.load(Relaxed);
        self.throttle.pending.store(n + 1, Relaxed);
        Frame {
            lease: Some(lease),
            throttle: self.throttle,
            generation: self.generation,
            fragments,
        }
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.clear();
        self.failed = Some(e);
        e
    }

    /// Drops every message in progress (their buffers go back).
    fn clear(&mut self) {
        self.state = State::Header;
        for r in &mut self.streams {
            *r = None;
        }
        self.active = 0;
    }

    /// Drops every reassembly whose deadline is at or before `now` (buffers back, counted in
    /// [`DecoderStats::expired`]); its later fragments are orphans. Returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        for (slot, entry) in self.streams.iter_mut().enumerate() {
            if entry.as_ref().is_some_and(|r| r.deadline <= now) {
                *entry = None;
                n += 1;
                if let State::Fragment { slot: s, remaining } = self.state
                    && s == slot
                {
                    self.state = State::Skip { remaining };
                }
            }
        }
        self.active -= n;
        self.stats.expired += n as u64;
        n
    }

    /// The earliest reassembly deadline, if any message is in reassembly: call
    /// [`FrameDecoder::expire`] then (or decode) so a stalled message's buffer comes back.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.streams.iter().flatten().map(|r| r.deadline).min()
    }

    /// Messages in reassembly now.
    pub fn reassemblies(&self) -> usize {
        self.active
    }

    /// Whether a frame is partly read (a payload in progress; a partial header stays in the
    /// input instead) or a message is in reassembly: the stream ended mid-message if the
    /// peer closes now.
    pub fn is_mid_message(&self) -> bool {
        !matches!(self.state, State::Header) || self.active > 0
    }

    /// The error the decoder failed with, if it did.
    pub fn error(&self) -> Option<FrameError> {
        self.failed
    }

    /// Counters.
    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &FrameConfig {
        &self.config
    }

    /// The throttle it counts frames in.
    pub fn throttle(&self) -> &'r Throttle {
        self.throttle
    }

    /// As new, for a new connection: every buffer held goes back, counters and error are
    /// cleared, and the throttle starts a new generation (frames still held from before are
    /// no longer counted).
    pub fn reset(&mut self) {
        self.clear();
        self.failed = None;
        self.stats = DecoderStats::default();
        self.generation = self.throttle.begin();
    }
}

impl<const R: usize> Drop for FrameDecoder<'_, R> {
    /// Ends the throttle's generation: frames still held no longer count.
    fn drop(&mut self) {
        if self.throttle.generation.load(Relaxed) == self.generation {
            self.throttle.begin();
        }
    }
}

impl<const R: usize> fmt::Debug for FrameDecoder<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("reassemblies", &self.active)
            .field("pending", &self.throttle.pending())
            .field("failed", &self.failed)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<'r> Decoded<'r> {
    fn none(consumed: usize) -> Decoded<'r> {
        Decoded {
            consumed,
            frame: None,
        }
    }
}

/// Appends `n` bytes of `input` from offset `from` to `lease`'s bytes. The callers keep
/// `lease.len() + n` within the buffer (a message is at most `max_message`, at most the
/// buffer size); the checks here only make a broken promise lose bytes instead of panicking.
fn copy_into(lease: &mut Lease<'_>, input: ReadBuf<'_>, from: usize, n: usize) {
    if n == 0 {
        return;
    }
    let at = lease.len();
    let Some(src) = input.slice(from..from + n) else {
        return;
    };
    let Some(dst) = lease.buf_mut().get_mut(at..at + n) else {
        return;
    };
    let k = src.copy_to(dst);
    let _ = lease.set_len(at + k);
}
