//! [`ByteRing`]: a connection's write slab, a byte ring over caller memory (see [`ByteRing`]).

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::{fmt, ptr, slice};

/// The ring has too little free space for an all-or-nothing append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ByteRingFull {
    needed: usize,
    free: usize,
}

impl ByteRingFull {
    /// The bytes the append needed.
    pub const fn needed(self) -> usize {
        self.needed
    }

    /// The bytes that were free.
    pub const fn free(self) -> usize {
        self.free
    }
}

impl fmt::Display for ByteRingFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "write slab full: {} bytes needed, {} free; flush first or raise the slab size",
            self.needed, self.free
        )
    }
}

impl core::error::Error for ByteRingFull {}

/// [`ByteRing::consume`] was asked for more bytes than are staged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConsumeError {
    requested: usize,
    staged: usize,
}

impl ConsumeError {
    /// The bytes asked for.
    pub const fn requested(self) -> usize {
        self.requested
    }

    /// The bytes staged.
    pub const fn staged(self) -> usize {
        self.staged
    }
}

impl fmt::Display for ConsumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot consume {} bytes from a write slab holding {}",
            self.requested, self.staged
        )
    }
}

impl core::error::Error for ConsumeError {}

/// A byte ring over `&'a mut [u8]`: the per-connection write slab.
///
/// Bytes are *staged* at the back ([`ByteRing::append`], [`ByteRing::write_with`]) and
/// *consumed* from the front once the kernel has sent them ([`ByteRing::consume`]). The staged
/// bytes are one or two contiguous regions ([`ByteRing::staged`], [`ByteRing::staged_raw`] for
/// building iovecs).
///
/// # Ownership while a send is in flight
///
/// While a send is in flight the kernel reads the staged region it was given, and the loop
/// keeps appending to the free region. So the ring stores a raw pointer, not a `&mut [u8]`,
/// and only ever makes references to the region an operation works on: appends write the free
/// region only, and never touch staged bytes. The reactor keeps the rest of the contract: it
/// submits only staged bytes, calls [`ByteRing::consume`] only for bytes whose send has
/// completed (with SEND_ZC, after the notification), and [`ByteRing::clear`]s only with no send
/// in flight.
///
/// When the ring becomes empty, its head moves back to offset 0, so the next send is one
/// contiguous region (one iovec, or a plain send) for as long as it fits. This is safe because
/// an empty ring means nothing is staged, and only staged bytes are ever in flight: by the
/// contract above, the kernel is reading none of the ring.
pub struct ByteRing<'a> {
    buf: NonNull<u8>,
    cap: usize,
    /// Offset of the first staged byte (`< cap`, or 0 when empty).
    head: usize,
    /// Staged bytes (`<= cap`).
    len: usize,
    _buf: PhantomData<&'a mut [u8]>,
}

impl<'a> ByteRing<'a> {
    /// An empty ring over `buf`; its capacity is `buf.len()`.
    pub fn new(buf: &'a mut [u8]) -> ByteRing<'a> {
        ByteRing {
            cap: buf.len(),
            buf: NonNull::from(buf).cast(),
            head: 0,
            len: 0,
            _buf: PhantomData,
        }
    }

    /// The size of the ring in bytes.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Staged bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Free bytes.
    pub fn free(&self) -> usize {
        self.cap - self.len
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether no byte is free.
    pub fn is_full(&self) -> bool {
        self.len == self.cap
    }

    /// Stages all of `data`, or nothing.
    ///
    /// # Errors
    ///
    /// [`ByteRingFull`] (with the bytes needed and free) if `data` does not fit; the ring is
    /// unchanged.
    pub fn append(&mut self, data: &[u8]) -> Result<(), ByteRingFull> {
        if data.len() > self.free() {
            return Err(ByteRingFull {
                needed: data.len(),
                free: self.free(),
            });
        }
        self.copy_in(data);
        Ok(())
    }

    /// Stages as much of the front of `data` as fits and returns how many bytes that was.
    pub fn append_partial(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        self.copy_in(&data[..n]);
        n
    }

    /// Lets `fill` write into the contiguous free region right after the staged bytes (at most
    /// `max` bytes of it), and stages the count it returns (capped at the region's length).
    /// Returns the bytes staged. The region may be shorter than [`ByteRing::free`] when the free
    /// space wraps around the end; it is the whole free space when the ring is empty.
    pub fn write_with<F: FnOnce(&mut [u8]) -> usize>(&mut self, max: usize, fill: F) -> usize {
        let (start, contiguous) = self.free_region();
        let n = contiguous.min(max);
        // SAFETY: `start..start + n` lies in the free region (see `free_region`), inside the
        // buffer borrowed exclusively for 'a. Free bytes are not staged, so nothing is in flight
        // there and no other reference to them exists; `&mut self` keeps it unique while `fill`
        // runs.
        let region = unsafe { slice::from_raw_parts_mut(self.buf.as_ptr().add(start), n) };
        let written = fill(region).min(n);
        self.len += written;
        written
    }

    /// The staged bytes, in order: one region, or two when they wrap around the end (the second
    /// is empty otherwise).
    pub fn staged(&self) -> (&[u8], &[u8]) {
        let [(a, a_len), (b, b_len)] = self.staged_raw();
        // SAFETY: both regions lie inside the buffer borrowed for 'a and hold staged bytes. The
        // kernel only reads staged bytes, and the ring writes only free bytes, and needs
        // `&mut self` to do so, which these shared borrows of `self` exclude.
        unsafe {
            (
                slice::from_raw_parts(a, a_len),
                slice::from_raw_parts(b, b_len),
            )
        }
    }

    /// The staged regions as `(pointer, length)` pairs, in order, for building iovecs: the
    /// second has length 0 unless the staged bytes wrap. The pointers stay valid while the ring
    /// lives; the bytes they name stay unchanged until they are consumed.
    pub fn staged_raw(&self) -> [(*const u8, usize); 2] {
        let base = self.buf.as_ptr().cast_const();
        let first = self.len.min(self.cap - self.head);
        // `head < cap` (or 0 for an empty buffer), so this stays within the buffer.
        [
            (base.wrapping_add(self.head), first),
            (base, self.len - first),
        ]
    }

    /// Drops the first `n` staged bytes (they were sent).
    ///
    /// # Errors
    ///
    /// [`ConsumeError`] if fewer than `n` bytes are staged; the ring is unchanged.
    pub fn consume(&mut self, n: usize) -> Result<(), ConsumeError> {
        if n > self.len {
            return Err(ConsumeError {
                requested: n,
                staged: self.len,
            });
        }
        self.len -= n;
        self.head = if self.len == 0 {
            // Nothing staged, so nothing in flight: start over at offset 0.
            0
        } else {
            self.wrap(self.head + n)
        };
        Ok(())
    }

    /// Drops every staged byte. Call only with no send in flight.
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Offset and length of the contiguous free region after the staged bytes.
    fn free_region(&self) -> (usize, usize) {
        let tail = self.wrap(self.head + self.len);
        let contiguous = if tail >= self.head {
            // Staged bytes (if any) sit in [head, tail): free runs to the end of the buffer.
            // (An empty ring has head == tail == 0: the whole buffer.)
            if self.len == self.cap {
                0
            } else {
                self.cap - tail
            }
        } else {
            // Staged bytes wrap: free is [tail, head).
            self.head - tail
        };
        (tail, contiguous)
    }

    /// Copies `data` (at most `free()` bytes) into the free region and stages it.
    fn copy_in(&mut self, data: &[u8]) {
        debug_assert!(data.len() <= self.free());
        let mut rest = data;
        while !rest.is_empty() {
            let (start, contiguous) = self.free_region();
            let n = contiguous.min(rest.len());
            // SAFETY: `start..start + n` lies in the free region (see `free_region`), inside the
            // buffer borrowed exclusively for 'a; free bytes are neither staged nor in flight,
            // and `data` is a shared borrow the ring's `&mut self` excludes from that buffer, so
            // the regions do not overlap.
            unsafe { ptr::copy_nonoverlapping(rest.as_ptr(), self.buf.as_ptr().add(start), n) };
            self.len += n;
            rest = &rest[n..];
        }
    }

    /// `i` reduced into `0..cap`, for `i < 2 * cap` (or 0 when `cap` is 0).
    fn wrap(&self, i: usize) -> usize {
        if i >= self.cap { i - self.cap } else { i }
    }
}

impl fmt::Debug for ByteRing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteRing")
            .field("capacity", &self.cap)
            .field("head", &self.head)
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::test_rng::XorShift;
    use std::collections::VecDeque;
    use std::string::ToString;
    use std::vec::Vec;

    fn staged_vec(ring: &ByteRing<'_>) -> Vec<u8> {
        let (a, b) = ring.staged();
        [a, b].concat()
    }

    #[test]
    fn append_stage_consume() {
        let mut buf = [0u8; 8];
        let mut ring = ByteRing::new(&mut buf);
        assert_eq!((ring.capacity(), ring.len(), ring.free()), (8, 0, 8));
        assert!(ring.is_empty() && !ring.is_full());
        ring.append(b"hello").unwrap();
        assert_eq!(ring.staged(), (&b"hello"[..], &b""[..]));
        ring.consume(2).unwrap();
        assert_eq!(staged_vec(&ring), b"llo");
        ring.append(b"world").unwrap();
        assert!(ring.is_full());
        // Wrapped: "llowor" from offset 2 to the end, then "ld" at the start.
        assert_eq!(ring.staged(), (&b"llowor"[..], &b"ld"[..]));
        let raw = ring.staged_raw();
        assert_eq!(raw[0].1 + raw[1].1, 8);
        // SAFETY: the regions staged_raw reports are staged bytes of the live ring.
        let parts = unsafe {
            [
                slice::from_raw_parts(raw[0].0, raw[0].1),
                slice::from_raw_parts(raw[1].0, raw[1].1),
            ]
        };
        assert_eq!(parts.concat(), b"lloworld");
    }

    #[test]
    fn full_append_leaves_contents_unchanged() {
        let mut buf = [0u8; 6];
        let mut ring = ByteRing::new(&mut buf);
        ring.append(b"abcd").unwrap();
        let err = ring.append(b"xyz").unwrap_err();
        assert_eq!((err.needed(), err.free()), (3, 2));
        assert!(err.to_string().contains("3 bytes needed, 2 free"));
        assert_eq!(staged_vec(&ring), b"abcd");
        assert_eq!(ring.len(), 4);
        // Partial appends take what fits, only when asked.
        assert_eq!(ring.append_partial(b"xyz"), 2);
        assert_eq!(staged_vec(&ring), b"abcdxy");
        assert_eq!(ring.append_partial(b"z"), 0);
        assert_eq!(ring.append(b""), Ok(()));
        assert_eq!(ring.append(b"z").unwrap_err().free(), 0);
    }

    #[test]
    fn consume_too_much_is_an_error() {
        let mut buf = [0u8; 4];
        let mut ring = ByteRing::new(&mut buf);
        ring.append(b"ab").unwrap();
        let err = ring.consume(3).unwrap_err();
        assert_eq!((err.requested(), err.staged()), (3, 2));
        assert!(err.to_string().contains("3 bytes"));
        assert_eq!(staged_vec(&ring), b"ab");
        assert!(ring.consume(usize::MAX).is_err());
        ring.consume(0).unwrap();
        ring.consume(2).unwrap();
        assert!(ring.consume(1).is_err());
    }

    #[test]
    fn empty_ring_restarts_at_offset_zero() {
        let mut buf = [0u8; 8];
        let base = buf.as_ptr();
        let mut ring = ByteRing::new(&mut buf);
        ring.append(b"123456").unwrap();
        ring.consume(6).unwrap();
        // Nothing staged: the next append is contiguous from the start, not split at the end.
        ring.append(b"abcdefgh").unwrap();
        assert_eq!(ring.staged(), (&b"abcdefgh"[..], &b""[..]));
        assert_eq!(ring.staged_raw()[0].0, base);
        ring.clear();
        assert!(ring.is_empty());
        assert_eq!(ring.staged_raw()[0], (base, 0));
    }

    #[test]
    fn write_with_fills_the_contiguous_free_region() {
        let mut buf = [0u8; 8];
        let mut ring = ByteRing::new(&mut buf);
        // Capped by `max`.
        let n = ring.write_with(3, |free| {
            assert_eq!(free.len(), 3);
            free.copy_from_slice(b"abc");
            3
        });
        assert_eq!(n, 3);
        ring.consume(2).unwrap();
        // Free space is [3, 8) then [0, 2): the region offered is the first part.
        let n = ring.write_with(usize::MAX, |free| {
            assert_eq!(free.len(), 5);
            free[..2].copy_from_slice(b"de");
            2
        });
        assert_eq!(n, 2);
        assert_eq!(staged_vec(&ring), b"cde");
        // A count larger than the region counts as the region.
        let n = ring.write_with(usize::MAX, |free| {
            free.fill(b'x');
            100
        });
        assert_eq!(n, 3);
        let n = ring.write_with(usize::MAX, |free| {
            assert_eq!(free.len(), 2, "the wrapped part");
            free.copy_from_slice(b"yz");
            2
        });
        assert_eq!(n, 2);
        assert!(ring.is_full());
        assert_eq!(ring.write_with(usize::MAX, |free| free.len()), 0);
        assert_eq!(staged_vec(&ring), b"cdexxxyz");
    }

    #[test]
    fn zero_capacity() {
        let mut ring = ByteRing::new(&mut []);
        assert!(ring.is_empty() && ring.is_full());
        assert_eq!(ring.append(b""), Ok(()));
        assert!(ring.append(b"a").is_err());
        assert_eq!(ring.append_partial(b"a"), 0);
        assert_eq!(ring.write_with(9, |f| f.len()), 0);
        ring.consume(0).unwrap();
        assert!(ring.consume(1).is_err());
        assert_eq!(ring.staged(), (&b""[..], &b""[..]));
    }

    /// Random appends (whole, partial, via write_with) and consumes against a `VecDeque`.
    #[test]
    fn matches_a_model() {
        let seeds = if cfg!(miri) { 4 } else { 100 };
        let steps = if cfg!(miri) { 200 } else { 2000 };
        for seed in 1..=seeds {
            let mut rng = XorShift::new(seed);
            let cap = 1 + rng.below(24);
            let mut buf = std::vec![0u8; cap];
            let mut ring = ByteRing::new(&mut buf);
            let mut model: VecDeque<u8> = VecDeque::new();
            let mut wrapped = false;
            for step in 0..steps {
                let data: Vec<u8> = (0..rng.below(cap + 4))
                    .map(|i| (step * 31 + i) as u8)
                    .collect();
                match rng.below(4) {
                    0 => match ring.append(&data) {
                        Ok(()) => model.extend(&data),
                        Err(e) => {
                            assert!(data.len() > cap - model.len());
                            assert_eq!((e.needed(), e.free()), (data.len(), cap - model.len()));
                        }
                    },
                    1 => {
                        let n = ring.append_partial(&data);
                        assert_eq!(n, data.len().min(cap - model.len()));
                        model.extend(&data[..n]);
                    }
                    2 => {
                        let max = rng.below(cap + 2);
                        let want = rng.below(cap + 2);
                        let mut offered = 0;
                        let n = ring.write_with(max, |free| {
                            offered = free.len();
                            let k = want.min(free.len()).min(data.len());
                            free[..k].copy_from_slice(&data[..k]);
                            k
                        });
                        assert!(offered <= max && offered <= cap - model.len());
                        if model.is_empty() {
                            assert_eq!(offered, max.min(cap), "empty ring: all of it");
                        }
                        model.extend(&data[..n]);
                    }
                    _ => {
                        let n = rng.below(model.len() + 2);
                        if n <= model.len() {
                            ring.consume(n).unwrap();
                            model.drain(..n);
                        } else {
                            assert!(ring.consume(n).is_err());
                        }
                    }
                }
                let (a, b) = ring.staged();
                wrapped |= !b.is_empty();
                assert_eq!([a, b].concat(), model.iter().copied().collect::<Vec<u8>>());
                assert_eq!(ring.len(), model.len());
                assert_eq!(ring.free(), cap - model.len());
                if model.is_empty() {
                    assert_eq!(ring.head, 0);
                }
            }
            assert!(wrapped || cap == 1, "seed {seed} never wrapped");
        }
    }
}
