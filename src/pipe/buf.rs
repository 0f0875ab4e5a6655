//! Segmented, zero-copy read views: [`ReadBuf`], its [`Segments`], and [`ReadResult`].

use core::fmt;
use core::ops::{Bound, RangeBounds};
use core::slice;

use super::Position;
use crate::pool::Lease;

/// One segment of a reader: a lease and the absolute position of its first byte.
pub(crate) struct Segment<'p> {
    pub(crate) lease: Lease<'p>,
    pub(crate) base: u64,
}

impl Segment<'_> {
    /// The absolute position just past the segment's last byte.
    pub(crate) fn end(&self) -> u64 {
        self.base + self.lease.len() as u64
    }

    /// Free bytes after the segment's last byte.
    pub(crate) fn room(&self) -> usize {
        self.lease.capacity() - self.lease.len()
    }
}

/// The part of `bytes` (whose first byte is at absolute `base`) inside `start..end`, with the
/// absolute position of its first byte; `None` when that part is empty.
fn clip(base: u64, bytes: &[u8], start: u64, end: u64) -> Option<(u64, &[u8])> {
    let lo = base.max(start);
    let hi = (base + bytes.len() as u64).min(end);
    if lo >= hi {
        return None;
    }
    bytes
        .get((lo - base) as usize..(hi - base) as usize)
        .map(|b| (lo, b))
}

/// A zero-copy view of unread bytes that may span several buffers (segments).
///
/// A `ReadBuf` borrows the reader it came from ([`PipeReader::read`],
/// [`PipeReader::try_read`], [`ConnectionPipeReader::try_read`]), so the bytes cannot change or go away while it lives; it
/// is `Copy`, and slicing it makes another view without copying a byte.
///
/// Offsets (`usize`) count from the view's first byte; [`Position`]s are absolute and are what
/// `advance_to` takes. [`ReadBuf::position`] turns an offset into a position,
/// [`ReadBuf::offset_of`] the other way.
///
/// Nothing here panics: an offset or range outside the view is `None`.
///
/// [`PipeReader::read`]: super::PipeReader::read
/// [`PipeReader::try_read`]: super::PipeReader::try_read
/// [`ConnectionPipeReader::try_read`]: super::ConnectionPipeReader::try_read
#[derive(Clone, Copy)]
pub struct ReadBuf<'a> {
    /// Bytes before the segments (a connection reader's carry), the first at `head_base`.
    head: &'a [u8],
    head_base: u64,
    /// Every segment of the reader (all `Some`), in order; the view clips them.
    segs: &'a [Option<Segment<'a>>],
    start: u64,
    end: u64,
}

impl<'a> ReadBuf<'a> {
    pub(crate) fn new(
        head: &'a [u8],
        head_base: u64,
        segs: &'a [Option<Segment<'a>>],
        start: u64,
        end: u64,
    ) -> ReadBuf<'a> {
        ReadBuf {
            head,
            head_base,
            segs,
            start,
            end: end.max(start),
        }
    }

    /// A view of one contiguous slice, its first byte at position 0: for codecs fed from a
    /// plain buffer (tests, a blocking client, a fuzz target) rather than a reader.
    pub fn from_slice(bytes: &'a [u8]) -> ReadBuf<'a> {
        ReadBuf::new(bytes, 0, &[], 0, bytes.len() as u64)
    }

    /// The number of bytes in view.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the view holds no byte.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The position of the first byte.
    pub fn start(&self) -> Position {
        Position(self.start)
    }

    /// The position just past the last byte.
    pub fn end(&self) -> Position {
        Position(self.end)
    }

    /// The position `offset` bytes into the view (`offset == len()` is [`ReadBuf::end`]);
    /// `None` past the end.
    pub fn position(&self, offset: usize) -> Option<Position> {
        (offset <= self.len()).then(|| Position(self.start + offset as u64))
    }

    /// How far `pos` is from the view's first byte; `None` when `pos` is outside the view
    /// (`end()` is inside: its offset is `len()`).
    pub fn offset_of(&self, pos: Position) -> Option<usize> {
        (self.start..=self.end)
            .contains(&pos.0)
            .then(|| (pos.0 - self.start) as usize)
    }

    /// The view's bytes, one slice per segment, in order (empty slices are skipped).
    pub fn segments(&self) -> Segments<'a> {
        Segments {
            head: Some((self.head_base, self.head)),
            segs: self.segs.iter(),
            start: self.start,
            end: self.end,
        }
    }

    /// The first contiguous run of bytes (empty only when the view is).
    pub fn first_segment(&self) -> &'a [u8] {
        self.segments().next().unwrap_or(&[])
    }

    /// Whether all bytes are in one segment (then [`ReadBuf::first_segment`] is all of them).
    pub fn is_single_segment(&self) -> bool {
        self.first_segment().len() == self.len()
    }

    /// The byte at `offset`, if in view.
    pub fn get(&self, offset: usize) -> Option<u8> {
        let at = self.start.checked_add(offset as u64)?;
        if at >= self.end {
            return None;
        }
        let (base, chunk) = self
            .segments()
            .chunks_abs()
            .find(|(base, chunk)| at < base + chunk.len() as u64)?;
        chunk.get((at - base) as usize).copied()
    }

    /// The sub-view over `range` (offsets into this view); `None` if the range is reversed or
    /// reaches past the end.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Option<ReadBuf<'a>> {
        let from = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1)?,
            Bound::Excluded(&e) => e,
            Bound::Unbounded => self.len(),
        };
        if from > to || to > self.len() {
            return None;
        }
        Some(ReadBuf {
            start: self.start + from as u64,
            end: self.start + to as u64,
            ..*self
        })
    }

    /// The view split at `offset`: `(..offset, offset..)`; `None` past the end.
    pub fn split_at(&self, offset: usize) -> Option<(ReadBuf<'a>, ReadBuf<'a>)> {
        Some((self.slice(..offset)?, self.slice(offset..)?))
    }

    /// Copies the first `min(len(), dst.len())` bytes into `dst`; returns how many.
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let mut n = 0;
        for chunk in self.segments() {
            let Some(out) = dst.get_mut(n..) else { break };
            let k = chunk.len().min(out.len());
            out[..k].copy_from_slice(&chunk[..k]);
            n += k;
            if k < chunk.len() {
                break;
            }
        }
        n
    }

    /// The position of the first `byte`, searching across segment boundaries.
    pub fn position_of(&self, byte: u8) -> Option<Position> {
        self.segments().chunks_abs().find_map(|(base, chunk)| {
            let i = chunk.iter().position(|&b| b == byte)?;
            Some(Position(base + i as u64))
        })
    }

    /// The offset of the first occurrence of `delimiter`, which may straddle segments
    /// (`Some(0)` for an empty delimiter).
    pub fn find(&self, delimiter: &[u8]) -> Option<usize> {
        let Some((&first, rest)) = delimiter.split_first() else {
            return Some(0);
        };
        let mut chunks = self.segments().chunks_abs();
        while let Some((base, chunk)) = chunks.next() {
            let mut from = 0;
            while let Some(i) = chunk.get(from..)?.iter().position(|&b| b == first) {
                let at = from + i;
                // `chunks` is positioned just after this chunk: the rest may continue there.
                if continues_with(chunk.get(at + 1..)?, chunks.clone(), rest) {
                    return Some((base + at as u64 - self.start) as usize);
                }
                from = at + 1;
            }
        }
        None
    }

    /// Whether the view begins with `prefix`.
    pub fn starts_with(&self, prefix: &[u8]) -> bool {
        prefix.len() <= self.len() && continues_with(&[], self.segments().chunks_abs(), prefix)
    }

    /// The bytes one by one (for short scans; prefer [`ReadBuf::segments`] for bulk work).
    pub fn bytes(&self) -> impl Iterator<Item = u8> + 'a {
        self.segments().flat_map(|s| s.iter().copied())
    }
}

/// Whether `tail` followed by the bytes of `more` begins with `want`.
fn continues_with(tail: &[u8], more: ChunksAbs<'_>, want: &[u8]) -> bool {
    let k = tail.len().min(want.len());
    if tail[..k] != want[..k] {
        return false;
    }
    let mut want = &want[k..];
    for (_, chunk) in more {
        if want.is_empty() {
            return true;
        }
        let k = chunk.len().min(want.len());
        if chunk[..k] != want[..k] {
            return false;
        }
        want = &want[k..];
    }
    want.is_empty()
}

impl<'a> From<&'a [u8]> for ReadBuf<'a> {
    fn from(bytes: &'a [u8]) -> ReadBuf<'a> {
        ReadBuf::from_slice(bytes)
    }
}

impl PartialEq<[u8]> for ReadBuf<'_> {
    fn eq(&self, other: &[u8]) -> bool {
        self.len() == other.len() && self.starts_with(other)
    }
}

impl PartialEq<&[u8]> for ReadBuf<'_> {
    fn eq(&self, other: &&[u8]) -> bool {
        *self == **other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for ReadBuf<'_> {
    fn eq(&self, other: &[u8; N]) -> bool {
        *self == other[..]
    }
}

impl fmt::Debug for ReadBuf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadBuf")
            .field("start", &self.start)
            .field("end", &self.end)
            .field("segments", &self.segments().count())
            .finish()
    }
}

/// The segments of a [`ReadBuf`], as byte slices in order (see [`ReadBuf::segments`]).
#[derive(Clone)]
pub struct Segments<'a> {
    head: Option<(u64, &'a [u8])>,
    segs: slice::Iter<'a, Option<Segment<'a>>>,
    start: u64,
    end: u64,
}

impl<'a> Segments<'a> {
    fn chunks_abs(self) -> ChunksAbs<'a> {
        ChunksAbs(self)
    }

    /// The next non-empty chunk with the absolute position of its first byte.
    fn next_abs(&mut self) -> Option<(u64, &'a [u8])> {
        if let Some((base, head)) = self.head.take()
            && let Some(c) = clip(base, head, self.start, self.end)
        {
            return Some(c);
        }
        for seg in self.segs.by_ref().flatten() {
            if seg.base >= self.end {
                self.segs = [].iter();
                return None;
            }
            if let Some(c) = clip(seg.base, seg.lease.as_slice(), self.start, self.end) {
                return Some(c);
            }
        }
        None
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        self.next_abs().map(|(_, c)| c)
    }
}

impl fmt::Debug for Segments<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segments")
            .field("start", &self.start)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// [`Segments`] with absolute positions.
#[derive(Clone)]
struct ChunksAbs<'a>(Segments<'a>);

impl<'a> Iterator for ChunksAbs<'a> {
    type Item = (u64, &'a [u8]);

    fn next(&mut self) -> Option<(u64, &'a [u8])> {
        self.0.next_abs()
    }
}

/// What a read returns: the unread bytes and how the other side stands.
///
/// See the [module documentation](super) for the reader loop that consumes it.
#[derive(Clone, Copy, Debug)]
#[must_use = "a read result must be examined and then given back with advance_to"]
pub struct ReadResult<'a> {
    buffer: ReadBuf<'a>,
    completed: bool,
    canceled: bool,
    error: Option<u32>,
}

impl<'a> ReadResult<'a> {
    pub(crate) fn new(
        buffer: ReadBuf<'a>,
        completed: bool,
        canceled: bool,
        error: Option<u32>,
    ) -> Self {
        ReadResult {
            buffer,
            completed,
            canceled,
            error,
        }
    }

    /// Every unread byte (consumed bytes are gone; examined ones are included).
    pub fn buffer(&self) -> ReadBuf<'a> {
        self.buffer
    }

    /// The writer completed: no byte will follow [`ReadResult::buffer`]. A reader loop ends
    /// here (with what is left unparsed being a truncated message).
    pub fn is_completed(&self) -> bool {
        self.completed
    }

    /// The read was cancelled ([`PipeReader::cancel_pending_read`]); reported once. The buffer
    /// is still valid.
    ///
    /// [`PipeReader::cancel_pending_read`]: super::PipeReader::cancel_pending_read
    pub fn is_canceled(&self) -> bool {
        self.canceled
    }

    /// The code the writer completed with, if it completed with an error.
    pub fn error(&self) -> Option<u32> {
        self.error
    }
}
