//! Framing codecs over byte streams (seed 004): length-prefixed frames with fragmentation
//! and reassembly, a per-connection throttle on frames pending processing, and a line codec.
//!
//! The codecs are sans-IO: bytes in, frames out, and time passed in as a value; they never
//! touch the kernel and are tested without a socket. The glue in [`Framed`] and [`Lines`]
//! runs them on reactor connections.
//!
//! - [`FrameDecoder`]: frames (and reassembled messages) out of segmented input (a
//!   [`ReadBuf`](crate::pipe::ReadBuf) from a [`ConnectionPipeReader`], so receive leases are
//!   read in place, or any slice through [`ReadBuf::from_slice`](crate::pipe::ReadBuf::from_slice)).
//!   Each message is copied once, into one user-tier pool buffer, and handed out as a
//!   [`Frame`] the caller owns.
//! - [`FrameEncoder`]: a message (or a message gathered from parts) into a [`FrameSink`]
//!   (a connection's write slab, a [`ByteRing`](crate::pool::ByteRing), a [`SliceSink`]) with
//!   one copy, fragmented above the chunk size; all or nothing.
//! - [`Throttle`]: the count of frames delivered and not yet released (seed 004, "Layer 1").
//! - [`LineDecoder`], [`encode_line`]: CRLF or LF lines with a maximum length.
//! - [`Framed`] / [`FrameHandler`] and [`Lines`] / [`LineHandler`]: [`Handler`] adapters that
//!   run the codecs on reactor connections.
//!
//! # Wire format
//!
//! Every frame starts with a 2-byte little-endian length that counts the *whole* frame, header
//! included, then a flags byte. A frame is at most [`FrameConfig::max_frame`] bytes (at most
//! 65535, the largest `u16`).
//!
//! A whole message (flags `0x00`), for payloads up to [`FrameConfig::chunk`] bytes:
//!
//! ```text
//!  byte   0        1        2        3 ...                       len-1
//!       +--------+--------+--------+------------------------------+
//!       | len (u16, LE)   | flags  | payload: len - 3 bytes       |
//!       | low    | high   | 0x00   | (may be empty: len == 3)     |
//!       +--------+--------+--------+------------------------------+
//! ```
//!
//! A fragment (flags `0x01`, [`FLAG_FRAGMENT`]): a payload above the chunk size is sent as
//! `count = ceil(size / chunk)` fragments of `chunk` bytes each (the last one carries the
//! rest), in order, back to back, all with the same stream id:
//!
//! ```text
//!  byte   0     1     2      3     4     5     6     7     8     9 ...           len-1
//!       +-----+-----+------+-----+-----+-----+-----+-----+-----+-----------------+
//!       | len (LE)  | 0x01 | stream (LE)| index (LE)| count (LE)| payload piece   |
//!       +-----+-----+------+-----+-----+-----+-----+-----+-----+-----------------+
//!                          |<------- fragment header ------->|  len - 9 >= 1 bytes
//! ```
//!
//! - `stream` names the message: every fragment of one message carries the same id. The
//!   encoder counts ids up (wrapping), so messages in reassembly at once have distinct ids.
//! - `index` is the fragment's place, from 0; `count` is the number of fragments, the same in
//!   each. The message is complete when fragment `count - 1` has arrived.
//! - A fragment carries at least one payload byte.
//!
//! The other flag bits are reserved and must be zero. All multi-byte fields are little-endian.
//!
//! # What the decoder rejects
//!
//! A frame that cannot be valid is a protocol error ([`FrameError`]), detected from its header
//! before any payload byte is read, never a panic or a read out of bounds: a length below the
//! header (below 3, or below 9 for a fragment), a length above `max_frame`, reserved flag
//! bits, an empty fragment, `count == 0` or `index >= count`, `count` above
//! [`FrameConfig::max_fragments`], a message (whole, or the sum of its fragments so far) above
//! [`FrameConfig::max_message`], and the fragment-order errors below. After an error the
//! decoder stays failed (it returns the same error again) and has returned every buffer it
//! held: close the connection (the stream cannot be resynchronised).
//!
//! # Reassembly and interleaving
//!
//! Fragments of up to [`FrameConfig::max_reassemblies`] messages may be in reassembly at once
//! on one connection, **interleaved** in any way: each message collects into its own buffer.
//! Within one message the order is strict (TCP keeps it): a fragment with the wrong index is
//! [`FrameError::FragmentOutOfOrder`], a different count [`FrameError::FragmentCountChanged`],
//! index 0 for a stream already in reassembly [`FrameError::StreamInUse`], and a new message
//! beyond the limit [`FrameError::TooManyReassemblies`]. The encoder here never interleaves:
//! it writes each message's fragments back to back.
//!
//! Each message in reassembly holds one user-tier buffer, into which every fragment is copied
//! as it arrives (the receive buffers go back at once). A reassembly that is not complete
//! [`FrameConfig::reassembly_timeout`] after its first fragment arrived is dropped: its
//! buffer goes back and [`DecoderStats::expired`] counts it. Time is a value passed in
//! ([`FrameDecoder::decode`], [`FrameDecoder::expire`]), so this is deterministic under test.
//! A later fragment of an expired (or dropped) message finds no reassembly: it is an
//! *orphan*, skipped without a copy and counted ([`DecoderStats::orphans`]), and the
//! connection stays open.
//!
//! So per connection, the decoder holds at most `max_reassemblies` buffers for reassembly
//! (fragments in flight: at most `max_reassemblies * max_fragments`), plus the frames the
//! handler holds, which the throttle bounds.
//!
//! # Memory: one copy, one buffer
//!
//! A message is copied exactly once on the receive path: from the receive leases into one
//! buffer from the pool's **user tier** ([`BufPool::try_lease_user`]), fragment by fragment,
//! as bytes arrive; the receive leases are consumed as they are read, so a connection in the
//! middle of a large message holds no receive lease (a header split across receives waits in
//! the [`ConnectionPipeReader`]'s carry). Hence `max_message` is at most the pool's buffer
//! size ([`FrameConfig::check_buffers`]). When the user tier is empty, the frame is dropped
//! and counted ([`DecoderStats::dropped_no_buffer`]): size the tier
//! ([`reactor::Config::user_buffers`](crate::reactor::Config::user_buffers)) for
//! `connections * (max_pending + max_reassemblies)` to never see it.
//!
//! On the send path the encoder checks that the whole encoded message fits the sink (else
//! [`EncodeError::WouldBlock`], or [`EncodeError::TooLarge`] when it never can) before it
//! writes a byte, then copies headers and payload into the sink: the write slab is the one
//! copy.
//!
//! # Ownership (seed 004, "ownership transfer")
//!
//! A decoded message is a [`Frame`]: a pool [`Lease`](crate::pool::Lease) the handler owns.
//! Dropping it (or [`Frame::release`]) returns its buffer to the pool exactly once (the
//! lease's own guarantee: it is not `Clone`, and the pool tracks every buffer's state), and
//! tells the connection's [`Throttle`] that one pending frame was processed. A handler may
//! keep frames past the end of their connection: the connection's decoder, when dropped or
//! reset for a new connection, moves the throttle to a new *generation*, and a frame of an
//! older generation returns its buffer without touching the new connection's count.
//!
//! # The throttle (seed 004, "Layer 1")
//!
//! Per connection, at most [`FrameConfig::max_pending`] frames may be delivered and not yet
//! released. When a frame's header arrives while the connection is at the limit, the frame is
//! **dropped before any heavy work**: no user buffer is taken, no payload byte is copied; its
//! bytes are skipped as they arrive, so the receive buffers holding them go back to the pool
//! at once. [`DecoderStats::dropped_throttle`] counts it and the connection stays open. A
//! message in reassembly is dropped the same way when any of its fragments arrives at the
//! limit (its buffer goes back at once; the rest of its fragments are skipped).
//!
//! Why this protects the loop: the loop is one thread shared by every connection. A peer that
//! sends faster than its handler releases frames would otherwise make the loop copy and hold
//! buffer after buffer for it: user-tier buffers would run out for everyone, and the loop's
//! time would go into copying data nobody is processing. With the throttle, a flooding
//! connection costs the loop only a header parse and a skip per frame (no copy, no buffer,
//! no callback), the buffers it can hold are bounded by `max_pending + max_reassemblies`, and
//! the other connections keep their share of buffers and turns. Closing the connection
//! instead would punish a burst; dropping sheds exactly the excess. (A request/response peer
//! that keeps at most `max_pending` requests outstanding never sees a drop.)
//!
//! # Lines
//!
//! [`LineDecoder`] finds lines ending in CRLF or LF ([`LineEnding`]) in segmented input and
//! hands out each line as a view of the input (no copy); a line longer than
//! [`LineConfig::max_line`] is [`LineError::TooLong`], which names the limit. See
//! [`LineDecoder`].
//!
//! # Example
//!
//! Encode two messages (the second fragmented), then decode them from the bytes split at an
//! awkward place:
//!
//! ```
//! use ringlet::frame::{FrameConfig, FrameDecoder, FrameEncoder, SliceSink, Throttle};
//! use ringlet::pipe::ReadBuf;
//! use ringlet::pool::{BufPool, BufPoolConfig, BufPoolStorage, RecvTier};
//! use ringlet::time::Instant;
//!
//! let config = FrameConfig { chunk: 16, max_frame: 25, max_message: 64, max_fragments: 4,
//!                            ..FrameConfig::default() };
//! let mut enc = FrameEncoder::new(config).unwrap();
//! let mut wire = [0u8; 256];
//! let mut sink = SliceSink::new(&mut wire);
//! enc.encode(b"hello", &mut sink).unwrap();
//! let big = [7u8; 40]; // 3 fragments: 16 + 16 + 8
//! enc.encode(&big, &mut sink).unwrap();
//! let wire = sink.written();
//! assert_eq!(wire.len(), 3 + 5 + 3 * 9 + 40);
//!
//! let mut storage = BufPoolStorage::<4, 64>::new();
//! let pool = BufPool::new(&mut storage, BufPoolConfig {
//!     recv_tier: RecvTier::FreeList, user_reserve: 4 }).unwrap();
//! let throttle = Throttle::new();
//! let mut dec: FrameDecoder<'_> = FrameDecoder::new(config, pool, &throttle).unwrap();
//! let now = Instant::ZERO;
//!
//! // The first 20 bytes: "hello" whole, and the start of the big message.
//! let d = dec.decode(ReadBuf::from_slice(&wire[..20]), now).unwrap();
//! assert_eq!((d.consumed, d.frame.as_deref()), (8, Some(&b"hello"[..])));
//! assert_eq!(throttle.pending(), 1); // delivered, not yet released
//! drop(d); // the frame goes back: its buffer and its throttle slot
//! let d = dec.decode(ReadBuf::from_slice(&wire[8..20]), now).unwrap();
//! assert!(d.frame.is_none()); // part of fragment 0 copied, the rest awaits more bytes
//! let rest = &wire[8 + d.consumed..];
//! let d = dec.decode(ReadBuf::from_slice(rest), now).unwrap();
//! assert_eq!(d.consumed, rest.len());
//! let big_frame = d.frame.unwrap();
//! assert_eq!((&big_frame[..], big_frame.fragments()), (&big[..], 3));
//! drop(big_frame);
//! assert_eq!((throttle.pending(), pool.leased()), (0, 0));
//! ```
//!
//! [`Handler`]: crate::reactor::Handler
//! [`ConnectionPipeReader`]: crate::pipe::ConnectionPipeReader
//! [`BufPool::try_lease_user`]: crate::pool::BufPool::try_lease_user

mod decode;
mod encode;
mod fuzz;
mod glue;
mod line;
#[cfg(test)]
mod tests;

use core::fmt;
use core::time::Duration;

pub use decode::{Decoded, DecoderStats, Frame, FrameDecoder, Throttle};
pub use encode::{FrameEncoder, FrameSink, SliceSink};
pub use fuzz::{fuzz_frames, fuzz_lines};
pub use glue::{
    FrameConn, FrameHandler, FrameIo, Framed, FramedMem, FramedStats, FramedStorage, LineConn,
    LineHandler, LineIo, LineNext, Lines, LinesMem, LinesStats, LinesStorage, SWEEP_TOKEN,
};
pub use line::{Line, LineConfig, LineDecoder, LineEnding, LineError, encode_line};

/// Bytes of the header every frame starts with: the length (2) and the flags (1).
pub const HEADER_LEN: usize = 3;

/// Bytes of a fragment's headers: [`HEADER_LEN`] plus stream id, index and count (2 each).
pub const FRAGMENT_HEADER_LEN: usize = 9;

/// The flag bit of a fragment. Every other flag bit is reserved and must be zero.
pub const FLAG_FRAGMENT: u8 = 0x01;

/// The settings of both ends of a length-prefixed connection: the encoder uses `chunk`,
/// `max_frame` and `max_message`; the decoder every field. Give both peers the same values.
///
/// [`FrameConfig::validate`] checks that the fields agree; [`FrameConfig::check_buffers`] that
/// a message fits one pool buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameConfig {
    /// The largest frame accepted, header included (at most 65535). A longer frame is
    /// [`FrameError::FrameTooLong`]. At least `chunk + 9`, so every frame the encoder makes
    /// is accepted.
    pub max_frame: u16,
    /// The largest payload sent in one frame: larger messages are fragmented into pieces of
    /// this size.
    pub chunk: u16,
    /// The largest message (reassembled payload), at most the pool's buffer size: a message
    /// is delivered in one buffer.
    pub max_message: usize,
    /// The most fragments one message may have (the `count` field): at least
    /// `ceil(max_message / chunk)`.
    pub max_fragments: u16,
    /// Messages in reassembly at once on one connection (interleaved fragments), each holding
    /// one user-tier buffer; at most the decoder's `R`.
    pub max_reassemblies: usize,
    /// How long a message may take from its first fragment to its last before it is dropped.
    pub reassembly_timeout: Duration,
    /// The throttle: frames delivered to the handler and not yet released, per connection,
    /// above which new frames are dropped.
    pub max_pending: u32,
}

impl Default for FrameConfig {
    /// Chunks of 1 KiB, messages up to 4 KiB (fits pool buffers of 4 KiB), 2 reassemblies,
    /// a 10 s reassembly timeout, 16 pending frames.
    fn default() -> Self {
        FrameConfig {
            max_frame: 1024 + FRAGMENT_HEADER_LEN as u16,
            chunk: 1024,
            max_message: 4096,
            max_fragments: 4,
            max_reassemblies: 2,
            reassembly_timeout: Duration::from_secs(10),
            max_pending: 16,
        }
    }
}

impl FrameConfig {
    /// Checks that the fields agree with each other.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: `chunk` of 0, `max_frame` below `chunk + 9`,
    /// `max_fragments` below `ceil(max_message / chunk)`, `max_reassemblies`, `max_pending` or
    /// `reassembly_timeout` of 0.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.chunk == 0 {
            return Err(ConfigError("chunk must be at least 1"));
        }
        if usize::from(self.max_frame) < usize::from(self.chunk) + FRAGMENT_HEADER_LEN {
            return Err(ConfigError(
                "max_frame must be at least chunk + 9 (a full fragment)",
            ));
        }
        if self.max_message.div_ceil(usize::from(self.chunk)) > usize::from(self.max_fragments) {
            return Err(ConfigError(
                "max_fragments must be at least ceil(max_message / chunk)",
            ));
        }
        if self.max_reassemblies == 0 {
            return Err(ConfigError("max_reassemblies must be at least 1"));
        }
        if self.max_pending == 0 {
            return Err(ConfigError("max_pending must be at least 1"));
        }
        if self.reassembly_timeout.is_zero() {
            return Err(ConfigError("reassembly_timeout must not be zero"));
        }
        Ok(())
    }

    /// Checks that a message of `max_message` bytes fits one pool buffer of `buf_size` bytes.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when it does not.
    pub fn check_buffers(&self, buf_size: usize) -> Result<(), ConfigError> {
        if self.max_message > buf_size {
            return Err(ConfigError(
                "max_message exceeds the pool's buffer size (a message is delivered in one \
                 buffer): lower it or raise the buffer size",
            ));
        }
        Ok(())
    }
}

/// Settings that cannot work; the text names the setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConfigError(pub &'static str);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "framing configuration: {}", self.0)
    }
}

impl core::error::Error for ConfigError {}

/// A protocol error of the length-prefixed decoder: bytes that cannot be a valid frame. The
/// stream cannot be resynchronised; close the connection. See the
/// [module documentation](self) for the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameError {
    /// The length is below the header it must contain (3 bytes; 9 for a fragment).
    LengthBelowHeader {
        /// The length field.
        len: u16,
        /// The header's size.
        min: u16,
    },
    /// The length is above the configured maximum.
    FrameTooLong {
        /// The length field.
        len: u16,
        /// [`FrameConfig::max_frame`].
        max: u16,
    },
    /// A reserved flag bit is set.
    ReservedFlags {
        /// The flags byte.
        flags: u8,
    },
    /// A fragment without a payload byte.
    EmptyFragment {
        /// Its stream id.
        stream: u16,
    },
    /// `count` is 0, or `index` is not below `count`.
    BadFragmentIndex {
        /// The index field.
        index: u16,
        /// The count field.
        count: u16,
    },
    /// A message of more fragments than allowed.
    TooManyFragments {
        /// The count field.
        count: u16,
        /// [`FrameConfig::max_fragments`].
        max: u16,
    },
    /// A first fragment (index 0) for a stream already in reassembly.
    StreamInUse {
        /// The stream id.
        stream: u16,
    },
    /// A fragment out of order within its message.
    FragmentOutOfOrder {
        /// The stream id.
        stream: u16,
        /// The index expected next.
        expected: u16,
        /// The index received.
        got: u16,
    },
    /// A fragment whose count differs from its message's first fragment.
    FragmentCountChanged {
        /// The stream id.
        stream: u16,
        /// The count of the first fragment.
        count: u16,
        /// The count received.
        got: u16,
    },
    /// A new message while [`FrameConfig::max_reassemblies`] are in reassembly.
    TooManyReassemblies {
        /// The limit.
        max: usize,
    },
    /// A message (or the fragments of one so far) larger than allowed.
    MessageTooLarge {
        /// Its size so far.
        len: usize,
        /// [`FrameConfig::max_message`].
        max: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::LengthBelowHeader { len, min } => {
                write!(f, "frame length {len} is below its {min}-byte header")
            }
            FrameError::FrameTooLong { len, max } => write!(
                f,
                "frame length {len} exceeds the maximum of {max} bytes (FrameConfig::max_frame)"
            ),
            FrameError::ReservedFlags { flags } => {
                write!(f, "reserved flag bits set in flags {flags:#04x}")
            }
            FrameError::EmptyFragment { stream } => {
                write!(f, "fragment of stream {stream} carries no payload")
            }
            FrameError::BadFragmentIndex { index, count } => {
                write!(f, "fragment index {index} is not below its count {count}")
            }
            FrameError::TooManyFragments { count, max } => write!(
                f,
                "message of {count} fragments exceeds the maximum of {max} \
                 (FrameConfig::max_fragments)"
            ),
            FrameError::StreamInUse { stream } => write!(
                f,
                "first fragment for stream {stream}, which is already in reassembly"
            ),
            FrameError::FragmentOutOfOrder {
                stream,
                expected,
                got,
            } => write!(
                f,
                "fragment {got} of stream {stream} out of order: expected {expected}"
            ),
            FrameError::FragmentCountChanged { stream, count, got } => write!(
                f,
                "fragment of stream {stream} says {got} fragments, its first said {count}"
            ),
            FrameError::TooManyReassemblies { max } => write!(
                f,
                "a new message while {max} are in reassembly (FrameConfig::max_reassemblies)"
            ),
            FrameError::MessageTooLarge { len, max } => write!(
                f,
                "message of {len} bytes exceeds the maximum of {max} bytes \
                 (FrameConfig::max_message)"
            ),
        }
    }
}

impl core::error::Error for FrameError {}

/// Why a message (or line) was not written. Nothing was written when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EncodeError {
    /// The message is larger than allowed ([`FrameConfig::max_message`], or
    /// [`LineConfig::max_line`] for a line).
    MessageTooLarge {
        /// The message's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The encoded message is larger than the whole sink: it can never be written (raise the
    /// write slab's size).
    TooLarge {
        /// Bytes the encoded message takes.
        need: usize,
        /// The sink's capacity.
        capacity: usize,
    },
    /// The sink has no room for the whole encoded message now: flush and wait (for
    /// [`Handler::on_flushed`](crate::reactor::Handler::on_flushed) on a connection).
    WouldBlock {
        /// Bytes the encoded message takes.
        need: usize,
        /// Bytes free in the sink.
        room: usize,
    },
    /// A line holds its own line ending, which would split it.
    ContainsDelimiter {
        /// The offset of the delimiter in the line.
        at: usize,
    },
    /// The connection is closed (or closing).
    Closed,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeError::MessageTooLarge { len, max } => {
                write!(
                    f,
                    "message of {len} bytes exceeds the maximum of {max} bytes"
                )
            }
            EncodeError::TooLarge { need, capacity } => write!(
                f,
                "encoded message of {need} bytes exceeds the write slab's {capacity} bytes"
            ),
            EncodeError::WouldBlock { need, room } => write!(
                f,
                "encoded message of {need} bytes does not fit the {room} bytes free: flush and \
                 wait"
            ),
            EncodeError::ContainsDelimiter { at } => {
                write!(f, "line holds its line ending at offset {at}")
            }
            EncodeError::Closed => f.write_str("connection closed"),
        }
    }
}

impl core::error::Error for EncodeError {}
