//! [`FrameEncoder`]: messages into a [`FrameSink`] with one copy, fragmented above the chunk
//! size, all or nothing.

use super::{
    ConfigError, EncodeError, FLAG_FRAGMENT, FRAGMENT_HEADER_LEN, FrameConfig, HEADER_LEN,
};
use crate::pool::ByteRing;

/// Where encoded bytes go: a connection's write slab, a [`ByteRing`], a [`SliceSink`].
///
/// The encoders ask for [`FrameSink::room`] (and [`FrameSink::capacity`]) first and write
/// only when the whole encoded message fits, so [`FrameSink::put`] is only called with bytes
/// that fit: an implementation may rely on that.
pub trait FrameSink {
    /// Bytes that can be written now.
    fn room(&mut self) -> usize;
    /// Bytes that could be written into the empty sink (a larger message never fits).
    fn capacity(&mut self) -> usize;
    /// Appends `bytes` (within the room reported).
    fn put(&mut self, bytes: &[u8]);
}

impl FrameSink for ByteRing<'_> {
    fn room(&mut self) -> usize {
        self.free()
    }

    fn capacity(&mut self) -> usize {
        ByteRing::capacity(self)
    }

    fn put(&mut self, bytes: &[u8]) {
        // Within the room the encoder checked, so this cannot fail.
        let _ = self.append(bytes);
    }
}

/// A [`FrameSink`] over a caller's byte slice, filled from the start.
#[derive(Debug)]
pub struct SliceSink<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> SliceSink<'a> {
    /// An empty sink over `buf`.
    pub fn new(buf: &'a mut [u8]) -> SliceSink<'a> {
        SliceSink { buf, len: 0 }
    }

    /// The bytes written so far.
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// How many bytes were written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets what was written.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl FrameSink for SliceSink<'_> {
    fn room(&mut self) -> usize {
        self.buf.len() - self.len
    }

    fn capacity(&mut self) -> usize {
        self.buf.len()
    }

    fn put(&mut self, bytes: &[u8]) {
        let at = self.len;
        if let Some(dst) = self.buf.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
            self.len += bytes.len();
        }
    }
}

/// Checks that `need` bytes fit `sink` now.
pub(super) fn check_room(sink: &mut impl FrameSink, need: usize) -> Result<(), EncodeError> {
    let capacity = sink.capacity();
    if need > capacity {
        return Err(EncodeError::TooLarge { need, capacity });
    }
    let room = sink.room();
    if need > room {
        return Err(EncodeError::WouldBlock { need, room });
    }
    Ok(())
}

/// The length-prefixed encoder: writes a message as one frame, or as fragments when it is
/// larger than [`FrameConfig::chunk`] (see the [module documentation](super) for the format).
///
/// Each message is written whole or not at all: the encoder computes the encoded size
/// ([`FrameEncoder::encoded_len`]), checks it against the sink, and only then copies headers
/// and payload in (the one copy of the send path). It keeps one counter, the next stream id
/// of a fragmented message; one encoder may serve many connections.
#[derive(Clone, Debug)]
pub struct FrameEncoder {
    config: FrameConfig,
    next_stream: u16,
}

impl FrameEncoder {
    /// An encoder for `config`.
    ///
    /// # Errors
    ///
    /// When the config does not validate ([`FrameConfig::validate`]).
    pub fn new(config: FrameConfig) -> Result<FrameEncoder, ConfigError> {
        config.validate()?;
        Ok(FrameEncoder {
            config,
            next_stream: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &FrameConfig {
        &self.config
    }

    /// How many frames a message of `len` bytes takes: 1 up to the chunk size, then one per
    /// chunk.
    pub fn frames(&self, len: usize) -> usize {
        let chunk = usize::from(self.config.chunk);
        if len <= chunk { 1 } else { len.div_ceil(chunk) }
    }

    /// The encoded size of a message of `len` bytes, headers included.
    pub fn encoded_len(&self, len: usize) -> usize {
        if len <= usize::from(self.config.chunk) {
            HEADER_LEN + len
        } else {
            self.frames(len) * FRAGMENT_HEADER_LEN + len
        }
    }

    /// Writes `payload` as one message into `sink`; returns the bytes written.
    ///
    /// # Errors
    ///
    /// Nothing is written on error: [`EncodeError::MessageTooLarge`] above
    /// [`FrameConfig::max_message`], [`EncodeError::TooLarge`] when the encoded message is
    /// larger than the sink, [`EncodeError::WouldBlock`] when it does not fit now.
    pub fn encode(
        &mut self,
        payload: &[u8],
        sink: &mut impl FrameSink,
    ) -> Result<usize, EncodeError> {
        self.encode_parts(&[payload], sink)
    }

    /// Writes the concatenation of `parts` as one message (a payload and a trailer, say,
    /// without joining them first); returns the bytes written.
    ///
    /// # Errors
    ///
    /// As [`FrameEncoder::encode`].
    pub fn encode_parts(
        &mut self,
        parts: &[&[u8]],
        sink: &mut impl FrameSink,
    ) -> Result<usize, EncodeError> {
        let total = parts.iter().fold(0usize, |n, p| n.saturating_add(p.len()));
        if total > self.config.max_message {
            return Err(EncodeError::MessageTooLarge {
                len: total,
                max: self.config.max_message,
            });
        }
        let need = self.encoded_len(total);
        check_room(sink, need)?;
        let chunk = usize::from(self.config.chunk);
        if total <= chunk {
            // `need <= chunk + 3 <= max_frame <= u16::MAX`.
            let [lo, hi] = (need as u16).to_le_bytes();
            sink.put(&[lo, hi, 0]);
            for part in parts {
                sink.put(part);
            }
            return Ok(need);
        }
        // `frames <= max_fragments <= u16::MAX` because `total <= max_message` (validated).
        let count = self.frames(total) as u16;
        let stream = self.next_stream;
        self.next_stream = stream.wrapping_add(1);
        let mut pieces = Pieces { parts, at: (0, 0) };
        let mut left = total;
        for index in 0..count {
            let piece = left.min(chunk);
            left -= piece;
            let [lo, hi] = ((FRAGMENT_HEADER_LEN + piece) as u16).to_le_bytes();
            let [s0, s1] = stream.to_le_bytes();
            let [i0, i1] = index.to_le_bytes();
            let [c0, c1] = count.to_le_bytes();
            sink.put(&[lo, hi, FLAG_FRAGMENT, s0, s1, i0, i1, c0, c1]);
            pieces.emit(piece, sink);
        }
        Ok(need)
    }
}

#[cfg(test)]
impl FrameEncoder {
    /// Sets the next stream id (to test the wrap).
    pub(crate) fn next_stream_for_test(&mut self, stream: u16) {
        self.next_stream = stream;
    }
}

/// A cursor over the parts of a message: (part, offset within it).
struct Pieces<'a, 'p> {
    parts: &'a [&'p [u8]],
    at: (usize, usize),
}

impl Pieces<'_, '_> {
    /// Puts the next `n` bytes into `sink`.
    fn emit(&mut self, mut n: usize, sink: &mut impl FrameSink) {
        while n > 0 {
            let (i, off) = self.at;
            let Some(part) = self.parts.get(i) else {
                return;
            };
            let rest = part.get(off..).unwrap_or(&[]);
            let k = rest.len().min(n);
            sink.put(&rest[..k]);
            n -= k;
            self.at = if k == rest.len() {
                (i + 1, 0)
            } else {
                (i, off + k)
            };
        }
    }
}
