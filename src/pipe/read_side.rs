//! The read side both readers share: segments in caller storage, an optional carry buffer in
//! front of them, and the consumed / examined cursor.

use super::buf::{ReadBuf, Segment};
use super::{PipeError, Position};
use crate::pool::Lease;

/// Where a reader stands. All positions are absolute byte offsets from the stream's start.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cursor {
    /// Bytes before this are gone.
    pub(crate) consumed: u64,
    /// Bytes before this were looked at: a read waits for bytes past it.
    pub(crate) examined: u64,
    /// The end of the last view handed out: `advance_to` positions must not pass it.
    pub(crate) seen: u64,
    /// The end of the bytes held (carry and segments).
    pub(crate) end: u64,
    /// Segments in use: `segs[..nsegs]` are `Some`, the rest `None`.
    pub(crate) nsegs: usize,
    /// The carry's live bytes are `carry[carry_start..carry_start + carry_len]`; they come
    /// just before the first segment (or `end`).
    pub(crate) carry_start: usize,
    pub(crate) carry_len: usize,
}

/// What [`ReadSide::push`] did with a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// It became a segment.
    Added,
    /// Its bytes were copied into the last segment and it went back to the pool.
    Merged,
    /// It held no byte and went back to the pool.
    Dropped,
}

/// The read side over borrowed parts.
pub(crate) struct ReadSide<'s, 'p> {
    pub(crate) segs: &'s mut [Option<Segment<'p>>],
    pub(crate) carry: &'s mut [u8],
    pub(crate) cur: &'s mut Cursor,
}

impl<'s, 'p> ReadSide<'s, 'p> {
    /// The absolute position of the carry's first live byte.
    fn carry_base(&self) -> u64 {
        let after = match self.segs.first() {
            Some(Some(s)) if self.cur.nsegs > 0 => s.base,
            _ => self.cur.end,
        };
        after - self.cur.carry_len as u64
    }

    /// Appends `lease`'s bytes. Its bytes are copied into the last segment instead when they
    /// fit in its spare room and number at most `merge_max`; a full segment list hands the
    /// lease back.
    pub(crate) fn push(&mut self, lease: Lease<'p>, merge_max: usize) -> Result<Pushed, Lease<'p>> {
        let n = lease.len();
        if n == 0 {
            return Ok(Pushed::Dropped);
        }
        if let Some(Some(last)) = self
            .cur
            .nsegs
            .checked_sub(1)
            .and_then(|i| self.segs.get_mut(i))
            && n <= merge_max
            && n <= last.room()
        {
            let at = last.lease.len();
            last.lease.buf_mut()[at..at + n].copy_from_slice(lease.as_slice());
            // Within the buffer: `n <= room`.
            let _ = last.lease.set_len(at + n);
            self.cur.end += n as u64;
            lease.release();
            return Ok(Pushed::Merged);
        }
        let Some(slot) = self.segs.get_mut(self.cur.nsegs) else {
            return Err(lease);
        };
        *slot = Some(Segment {
            lease,
            base: self.cur.end,
        });
        self.cur.nsegs += 1;
        self.cur.end += n as u64;
        Ok(Pushed::Added)
    }

    /// The unread bytes up to `limit` (at most everything held); records the view's end as
    /// the limit for `advance`.
    pub(crate) fn view(self, limit: u64) -> ReadBuf<'s> {
        let end = limit.min(self.cur.end);
        self.cur.seen = end;
        let base = self.carry_base();
        let cur = *self.cur;
        let carry: &'s [u8] = self.carry;
        let segs: &'s [Option<Segment<'p>>] = self.segs;
        let head = carry
            .get(cur.carry_start..cur.carry_start + cur.carry_len)
            .unwrap_or(&[]);
        ReadBuf::new(
            head,
            base,
            segs.get(..cur.nsegs).unwrap_or(&[]),
            cur.consumed,
            end,
        )
    }

    /// Checks `consumed <= examined` and that both lie in the last view.
    pub(crate) fn check(&self, consumed: Position, examined: Position) -> Result<(), PipeError> {
        let (start, end) = (self.cur.consumed, self.cur.seen);
        for p in [consumed, examined] {
            if p.0 < start || p.0 > end {
                return Err(PipeError::PositionOutOfRange {
                    position: p.0,
                    start,
                    end,
                });
            }
        }
        if examined < consumed {
            return Err(PipeError::ExaminedBeforeConsumed {
                consumed: consumed.0,
                examined: examined.0,
            });
        }
        Ok(())
    }

    /// Moves the cursor (after [`ReadSide::check`]); fully consumed segments go back to the
    /// pool at once. Returns how many.
    pub(crate) fn advance(&mut self, consumed: Position, examined: Position) -> usize {
        self.cur.consumed = consumed.0;
        self.cur.examined = examined.0;
        // The carry comes first.
        let base = self.carry_base();
        if consumed.0 > base {
            let k = ((consumed.0 - base) as usize).min(self.cur.carry_len);
            self.cur.carry_start += k;
            self.cur.carry_len -= k;
        }
        if self.cur.carry_len == 0 {
            self.cur.carry_start = 0;
        }
        let mut k = 0;
        while k < self.cur.nsegs {
            match &self.segs[k] {
                Some(s) if s.end() <= consumed.0 => {
                    self.segs[k] = None;
                    k += 1;
                }
                _ => break,
            }
        }
        self.segs[..self.cur.nsegs].rotate_left(k);
        self.cur.nsegs -= k;
        k
    }

    /// Copies as much of `lease`'s bytes as fit into the last segment's spare room, then
    /// appends what is left (moved to the front of its own buffer) as a segment; a lease that
    /// fit wholly goes back to the pool. When no slot is free even after [`ReadSide::pack`],
    /// the lease is handed back untouched. Segments then hold their bytes densely: this is
    /// the path for leases past a quota, where slots, not copies, are scarce.
    pub(crate) fn push_packed(&mut self, mut lease: Lease<'p>) -> Result<Pushed, Lease<'p>> {
        let n = lease.len();
        if n == 0 {
            return Ok(Pushed::Dropped);
        }
        if self.cur.nsegs == self.segs.len() {
            self.pack();
        }
        let room = self.last_mut().map_or(0, |l| l.room());
        if n > room && self.cur.nsegs == self.segs.len() {
            return Err(lease);
        }
        let k = room.min(n);
        if k > 0
            && let Some(last) = self.last_mut()
        {
            let at = last.lease.len();
            last.lease.buf_mut()[at..at + k].copy_from_slice(&lease.as_slice()[..k]);
            let _ = last.lease.set_len(at + k);
            self.cur.end += k as u64;
        }
        if k == n {
            lease.release();
            return Ok(Pushed::Merged);
        }
        lease.as_mut_slice().copy_within(k..n, 0);
        let _ = lease.set_len(n - k);
        self.push(lease, 0)
    }

    fn last_mut(&mut self) -> Option<&mut Segment<'p>> {
        let i = self.cur.nsegs.checked_sub(1)?;
        self.segs.get_mut(i)?.as_mut()
    }

    /// Packs the segments' unread bytes densely, in order: the first segment's consumed
    /// prefix is dropped, and each segment's room is filled from the segments after it;
    /// emptied segments go back to the pool. Positions do not change. Returns how many
    /// segments went back. Copies every unread byte at worst: for a full segment list only.
    pub(crate) fn pack(&mut self) -> usize {
        let n = self.cur.nsegs;
        if n == 0 {
            return 0;
        }
        let consumed = self.cur.consumed;
        if let Some(first) = self.segs[0].as_mut() {
            let dead = (consumed.saturating_sub(first.base) as usize).min(first.lease.len());
            if dead > 0 {
                let len = first.lease.len();
                first.lease.as_mut_slice().copy_within(dead..len, 0);
                let _ = first.lease.set_len(len - dead);
                first.base += dead as u64;
            }
        }
        let mut dst = 0;
        let mut freed = 0;
        for src in 1..n {
            let (before, after) = self.segs.split_at_mut(src);
            if let (Some(d), Some(s)) = (before[dst].as_mut(), after[0].as_mut()) {
                let len = s.lease.len();
                let k = d.room().min(len);
                if k > 0 {
                    let at = d.lease.len();
                    d.lease.buf_mut()[at..at + k].copy_from_slice(&s.lease.as_slice()[..k]);
                    let _ = d.lease.set_len(at + k);
                    s.lease.as_mut_slice().copy_within(k..len, 0);
                    let _ = s.lease.set_len(len - k);
                    s.base += k as u64;
                }
            }
            match &self.segs[src] {
                Some(s) if s.lease.is_empty() => {
                    self.segs[src] = None;
                    freed += 1;
                }
                Some(_) => {
                    // `dst` is full: this segment is the next one.
                    dst += 1;
                    self.segs.swap(dst, src);
                }
                None => {}
            }
        }
        self.cur.nsegs = dst + 1;
        freed
    }

    /// Moves every unread byte into the carry when they all fit there, and gives the
    /// segments back. Returns how many segments went back.
    pub(crate) fn compact(&mut self) -> usize {
        let n = self.cur.nsegs;
        let unread = self.cur.end - self.cur.consumed;
        if n == 0 || unread > self.carry.len() as u64 {
            return 0;
        }
        let (from, len) = (self.cur.carry_start, self.cur.carry_len);
        self.carry.copy_within(from..from + len, 0);
        let mut at = len;
        let consumed = self.cur.consumed;
        for slot in &mut self.segs[..n] {
            if let Some(seg) = slot.take() {
                let skip = consumed.saturating_sub(seg.base) as usize;
                let part = seg.lease.as_slice().get(skip..).unwrap_or(&[]);
                self.carry[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
        }
        debug_assert_eq!(at as u64, unread);
        self.cur.carry_start = 0;
        self.cur.carry_len = at;
        self.cur.nsegs = 0;
        n
    }

    /// Gives every segment back and forgets the carry; positions stay. Returns how many
    /// segments went back.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.cur.nsegs;
        for slot in &mut self.segs[..n] {
            *slot = None;
        }
        self.cur.nsegs = 0;
        self.cur.carry_start = 0;
        self.cur.carry_len = 0;
        self.cur.consumed = self.cur.end;
        self.cur.examined = self.cur.end;
        self.cur.seen = self.cur.end;
        n
    }
}
