//! [`ByteRing`]: a connection's write slab, a byte ring over caller memory (see [`ByteRing`]);
//! [`WriteSlabs`] and [`SlabArena`]: every connection's write slab in one storage area.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::{fmt, ptr, slice};

use super::zero::ZeroInit;

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

/// The state of a [`ByteRing`]: where its staged bytes are.
///
/// Kept apart from the ring's memory so that it lives in storage (a [`WriteSlabs`] holds one
/// per slab) while [`ByteRing`] views of the ring come and go: a view made later over the same
/// memory and state sees the same staged bytes.
///
/// All-zero bytes is an empty ring ([`ZeroInit`]), the same value as [`RingState::new`].
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct RingState {
    /// Offset of the first staged byte (`< cap`, or 0 when empty).
    head: usize,
    /// Staged bytes (`<= cap`).
    len: usize,
}

impl RingState {
    /// An empty ring's state.
    pub const fn new() -> RingState {
        RingState { head: 0, len: 0 }
    }

    /// Whether `self` is a valid state for a ring of `cap` bytes: `head < cap` (or 0),
    /// `len <= cap`, and an empty ring starts at 0.
    fn fits(&self, cap: usize) -> bool {
        self.len <= cap && (self.head < cap || self.head == 0) && (self.len > 0 || self.head == 0)
    }
}

// SAFETY: two `usize`s; zero is `RingState::new()`, an empty ring, which fits every capacity.
unsafe impl ZeroInit for RingState {}

/// A byte ring over caller memory: the per-connection write slab. A view of the memory and a
/// [`RingState`], both borrowed for `'a`.
///
/// Bytes are *staged* at the back ([`ByteRing::append`], [`ByteRing::write_with`]) and
/// *consumed* from the front once the kernel has sent them ([`ByteRing::consume`]). The staged
/// bytes are one or two contiguous regions ([`ByteRing::staged`], [`ByteRing::staged_raw`] for
/// building iovecs).
///
/// The view keeps nothing of its own: its state is the [`RingState`] it was made with. So a ring
/// can be viewed again and again (the event loop makes a view of a connection's slab from a
/// [`SlabArena`] whenever it writes to it), and the staged bytes stay staged in between.
///
/// # Ownership while a send is in flight
///
/// While a send is in flight the kernel reads the staged region it was given, and the loop
/// keeps appending to the free region. So the ring stores a raw pointer, not a `&mut [u8]`,
/// and only ever makes references to the region an operation works on: appends write the free
/// region only, and never touch staged bytes. (A [`SlabArena`] makes its views from a raw
/// pointer too, so no reference to a whole slab exists while the kernel reads part of it.) The
/// reactor keeps the rest of the contract: it submits only staged bytes, calls
/// [`ByteRing::consume`] only for bytes whose send has completed (with SEND_ZC, after the
/// notification), and [`ByteRing::clear`]s (or [`SlabArena::reset`]s) only with no send in
/// flight.
///
/// When the ring becomes empty, its head moves back to offset 0, so the next send is one
/// contiguous region (one iovec, or a plain send) for as long as it fits. This is safe because
/// an empty ring means nothing is staged, and only staged bytes are ever in flight: by the
/// contract above, the kernel is reading none of the ring.
pub struct ByteRing<'a> {
    buf: NonNull<u8>,
    cap: usize,
    state: &'a mut RingState,
    _buf: PhantomData<&'a mut [u8]>,
}

impl<'a> ByteRing<'a> {
    /// A ring over `mem` (its capacity is `mem.len()`) in the state `state` holds: empty for a
    /// fresh [`RingState::new`], or with the bytes an earlier view over the same memory and
    /// state left staged.
    ///
    /// A state that cannot belong to `mem` (its offsets lie beyond `mem.len()`: it was used
    /// with a larger buffer) is reset to empty rather than trusted.
    pub fn new(mem: &'a mut [u8], state: &'a mut RingState) -> ByteRing<'a> {
        let cap = mem.len();
        // SAFETY: `mem` is `cap` bytes, valid for reads and writes and borrowed exclusively for
        // 'a, so nothing but this ring touches it for 'a.
        unsafe { ByteRing::from_raw_parts(NonNull::from(mem).cast(), cap, state) }
    }

    /// A ring over the `cap` bytes at `buf`, in the state `state` holds (reset to empty if it
    /// does not fit `cap`).
    ///
    /// # Safety
    ///
    /// `buf` must be valid for reads and writes of `cap` bytes for `'a`. For `'a`, those bytes
    /// must not be accessed except through views of this ring (made one at a time, each with
    /// this `state`) and by the kernel reading staged bytes it was given (see the type's
    /// documentation), and no reference to them may exist other than the ones those views
    /// make.
    unsafe fn from_raw_parts(buf: NonNull<u8>, cap: usize, state: &'a mut RingState) -> Self {
        if !state.fits(cap) {
            *state = RingState::new();
        }
        ByteRing {
            buf,
            cap,
            state,
            _buf: PhantomData,
        }
    }

    /// The size of the ring in bytes.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Staged bytes.
    pub fn len(&self) -> usize {
        self.state.len
    }

    /// Free bytes.
    pub fn free(&self) -> usize {
        self.cap - self.state.len
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.state.len == 0
    }

    /// Whether no byte is free.
    pub fn is_full(&self) -> bool {
        self.state.len == self.cap
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
        // `cap` bytes this ring may use for 'a (see the constructors). Free bytes are not
        // staged, so nothing is in flight there and no other reference to them exists;
        // `&mut self` keeps it unique while `fill` runs.
        let region = unsafe { slice::from_raw_parts_mut(self.buf.as_ptr().add(start), n) };
        let written = fill(region).min(n);
        self.state.len += written;
        written
    }

    /// The staged bytes, in order: one region, or two when they wrap around the end (the second
    /// is empty otherwise).
    pub fn staged(&self) -> (&[u8], &[u8]) {
        let [(a, a_len), (b, b_len)] = self.staged_raw();
        // SAFETY: both regions lie inside the `cap` bytes this ring may use for 'a and hold
        // staged bytes. The kernel only reads staged bytes, and the ring writes only free bytes,
        // and needs `&mut self` to do so, which these shared borrows of `self` exclude.
        unsafe {
            (
                slice::from_raw_parts(a, a_len),
                slice::from_raw_parts(b, b_len),
            )
        }
    }

    /// The staged regions as `(pointer, length)` pairs, in order, for building iovecs: the
    /// second has length 0 unless the staged bytes wrap.
    ///
    /// The pointers stay valid for the ring's memory borrow `'a`, not only while this view
    /// lives: for a view from [`SlabArena::ring`], as long as the arena's storage is borrowed,
    /// so a send submitted from one view may complete after it is gone. The bytes they name stay
    /// unchanged until they are consumed (through any view of the ring).
    pub fn staged_raw(&self) -> [(*const u8, usize); 2] {
        let base = self.buf.as_ptr().cast_const();
        let first = self.state.len.min(self.cap - self.state.head);
        // `head < cap` (or 0 for an empty buffer), so this stays within the buffer.
        [
            (base.wrapping_add(self.state.head), first),
            (base, self.state.len - first),
        ]
    }

    /// Drops the first `n` staged bytes (they were sent).
    ///
    /// # Errors
    ///
    /// [`ConsumeError`] if fewer than `n` bytes are staged; the ring is unchanged.
    pub fn consume(&mut self, n: usize) -> Result<(), ConsumeError> {
        if n > self.state.len {
            return Err(ConsumeError {
                requested: n,
                staged: self.state.len,
            });
        }
        self.state.len -= n;
        self.state.head = if self.state.len == 0 {
            // Nothing staged, so nothing in flight: start over at offset 0.
            0
        } else {
            self.wrap(self.state.head + n)
        };
        Ok(())
    }

    /// Drops every staged byte. Call only with no send in flight.
    pub fn clear(&mut self) {
        *self.state = RingState::new();
    }

    /// Offset and length of the contiguous free region after the staged bytes.
    fn free_region(&self) -> (usize, usize) {
        let RingState { head, len } = *self.state;
        let tail = self.wrap(head + len);
        let contiguous = if tail >= head {
            // Staged bytes (if any) sit in [head, tail): free runs to the end of the buffer.
            // (An empty ring has head == tail == 0: the whole buffer.)
            if len == self.cap { 0 } else { self.cap - tail }
        } else {
            // Staged bytes wrap: free is [tail, head).
            head - tail
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
            // `cap` bytes this ring may use for 'a; free bytes are neither staged nor in flight,
            // and `data` is a shared borrow, which the constructors' contract (no references to
            // the ring's memory but the ones its views make) keeps out of the ring's memory, so
            // the regions do not overlap.
            unsafe { ptr::copy_nonoverlapping(rest.as_ptr(), self.buf.as_ptr().add(start), n) };
            self.state.len += n;
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
            .field("head", &self.state.head)
            .field("len", &self.state.len)
            .finish()
    }
}

/// Storage for `N` write slabs of `SIZE` bytes each: their bytes and their [`RingState`]s, in
/// one area. Use it through a [`SlabArena`].
///
/// All-zero bytes is valid storage with every slab empty ([`ZeroInit`]), the same value as
/// [`WriteSlabs::new`], so big storage can be placed in `.bss` with a
/// [`StaticSlot`](super::StaticSlot), or made in place with [`init_zeroed`](super::init_zeroed)
/// or `leak_zeroed` (feature `std`), never on the stack.
pub struct WriteSlabs<const N: usize, const SIZE: usize> {
    bytes: [[u8; SIZE]; N],
    states: [RingState; N],
}

// SAFETY: bytes and `RingState`s (see its impl), all valid and empty as zero bytes; a
// `SlabArena` resets every state when it is built anyway.
unsafe impl<const N: usize, const SIZE: usize> ZeroInit for WriteSlabs<N, SIZE> {}

impl<const N: usize, const SIZE: usize> WriteSlabs<N, SIZE> {
    /// `N` empty slabs (all zero bytes).
    ///
    /// This builds the value where it is called (on the stack, unless in a `static`'s
    /// initialiser); for big storage see [`ZeroInit`].
    pub const fn new() -> Self {
        WriteSlabs {
            bytes: [[0; SIZE]; N],
            states: [const { RingState::new() }; N],
        }
    }

    /// An arena over these slabs (shorthand for [`SlabArena::new`]).
    pub fn arena(&mut self) -> SlabArena<'_> {
        SlabArena::new(self)
    }
}

impl<const N: usize, const SIZE: usize> Default for WriteSlabs<N, SIZE> {
    fn default() -> Self {
        Self::new()
    }
}

/// A slab index out of range for a [`SlabArena`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NoSuchSlab {
    index: usize,
    slabs: usize,
}

impl NoSuchSlab {
    /// The index given.
    pub const fn index(self) -> usize {
        self.index
    }

    /// The number of slabs in the arena (the `N` of its [`WriteSlabs`]).
    pub const fn slabs(self) -> usize {
        self.slabs
    }
}

impl fmt::Display for NoSuchSlab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "write slab {} out of range: the arena has {} slabs; raise the N of WriteSlabs",
            self.index, self.slabs
        )
    }
}

impl core::error::Error for NoSuchSlab {}

/// Every connection's write slab, in one [`WriteSlabs`] storage: `len()` byte rings of
/// `slab_size()` bytes, addressed by index (the event loop uses the connection's slot).
///
/// The arena is type-erased (a pointer to the bytes, the slab size, and a slice of states), so
/// the loop's types carry no const generics. [`SlabArena::ring`] makes a [`ByteRing`] view of
/// slab `i` from a raw pointer, never a reference to the whole slab: the kernel may be reading
/// that slab's staged bytes (a send in flight) while the view appends to its free bytes. Views
/// share the slab's [`RingState`] in the storage, so what one view stages the next one sees.
///
/// ```
/// use ringlet::pool::WriteSlabs;
///
/// let mut slabs = WriteSlabs::<4, 64>::new();
/// let mut arena = slabs.arena();
/// arena.ring(2).unwrap().append(b"PONG\r\n").unwrap();
/// // Later, another view of the same slab: the bytes are still staged.
/// let ring = arena.ring(2).unwrap();
/// assert_eq!(ring.staged().0, b"PONG\r\n");
/// assert!(arena.ring(4).is_none());
/// arena.reset(2).unwrap(); // its connection was freed (no send in flight)
/// assert!(arena.ring(2).unwrap().is_empty());
/// ```
pub struct SlabArena<'a> {
    /// The first byte of slab 0; slab `i` starts `i * slab_size` bytes later.
    bytes: NonNull<u8>,
    slab_size: usize,
    /// One state per slab.
    states: &'a mut [RingState],
    /// The arena has exclusive use of the slabs' bytes for `'a`.
    _bytes: PhantomData<&'a mut [u8]>,
}

impl<'a> SlabArena<'a> {
    /// An arena over `slabs`, with every slab empty (whatever an earlier arena left staged is
    /// dropped: build it only with no send in flight from these slabs).
    pub fn new<const N: usize, const SIZE: usize>(
        slabs: &'a mut WriteSlabs<N, SIZE>,
    ) -> SlabArena<'a> {
        let WriteSlabs { bytes, states } = slabs;
        for state in states.iter_mut() {
            *state = RingState::new();
        }
        SlabArena {
            bytes: NonNull::from(bytes).cast(),
            slab_size: SIZE,
            states,
            _bytes: PhantomData,
        }
    }

    /// The number of slabs (`N`).
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether the arena has no slab (`N == 0`).
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The size of each slab in bytes (`SIZE`).
    pub fn slab_size(&self) -> usize {
        self.slab_size
    }

    /// A view of slab `i`, or `None` if `i >= len()`. Its staged bytes are the ones earlier
    /// views left; see [`ByteRing`].
    pub fn ring(&mut self, i: usize) -> Option<ByteRing<'_>> {
        let state = self.states.get_mut(i)?;
        // SAFETY: `i < N`, so slab `i` (`slab_size` bytes at offset `i * slab_size`) lies
        // inside the `N * slab_size` bytes of the storage, and the offset is in bounds. Those
        // bytes are valid for reads and writes for 'a, which outlives this borrow of `self`: the
        // arena borrows the storage exclusively for 'a and makes no references to slab bytes
        // itself. Views of slab `i` are made one at a time (each holds `&mut self`), with slab
        // `i`'s own state; slabs do not overlap; and the kernel reads only staged bytes it was
        // given (the contract in `ByteRing`'s documentation).
        Some(unsafe {
            ByteRing::from_raw_parts(self.bytes.add(i * self.slab_size), self.slab_size, state)
        })
    }

    /// Empties slab `i` (its connection was freed). Call only with no send in flight from it.
    ///
    /// # Errors
    ///
    /// [`NoSuchSlab`] if `i >= len()`; nothing changes.
    pub fn reset(&mut self, i: usize) -> Result<(), NoSuchSlab> {
        let slabs = self.len();
        let state = self
            .states
            .get_mut(i)
            .ok_or(NoSuchSlab { index: i, slabs })?;
        *state = RingState::new();
        Ok(())
    }
}

impl fmt::Debug for SlabArena<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlabArena")
            .field("len", &self.len())
            .field("slab_size", &self.slab_size)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::test_rng::XorShift;
    use crate::pool::{StaticSlot, init_zeroed, leak_zeroed};
    use core::mem::MaybeUninit;
    use std::boxed::Box;
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
        let mut state = RingState::new();
        let mut ring = ByteRing::new(&mut buf, &mut state);
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
        let mut state = RingState::new();
        let mut ring = ByteRing::new(&mut buf, &mut state);
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
        let mut state = RingState::new();
        let mut ring = ByteRing::new(&mut buf, &mut state);
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
        let mut state = RingState::new();
        let mut ring = ByteRing::new(&mut buf, &mut state);
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
        let mut state = RingState::new();
        let mut ring = ByteRing::new(&mut buf, &mut state);
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
        let mut state = RingState::new();
        let mut ring = ByteRing::new(&mut [], &mut state);
        assert!(ring.is_empty() && ring.is_full());
        assert_eq!(ring.append(b""), Ok(()));
        assert!(ring.append(b"a").is_err());
        assert_eq!(ring.append_partial(b"a"), 0);
        assert_eq!(ring.write_with(9, |f| f.len()), 0);
        ring.consume(0).unwrap();
        assert!(ring.consume(1).is_err());
        assert_eq!(ring.staged(), (&b""[..], &b""[..]));
    }

    /// Random appends (whole, partial, via write_with) and consumes against a `VecDeque`, with
    /// the view over the memory and state dropped and made again now and then.
    #[test]
    fn matches_a_model() {
        let seeds = if cfg!(miri) { 4 } else { 100 };
        let steps = if cfg!(miri) { 200 } else { 2000 };
        for seed in 1..=seeds {
            let mut rng = XorShift::new(seed);
            let cap = 1 + rng.below(24);
            let mut buf = std::vec![0u8; cap];
            let mut state = RingState::new();
            let mut ring = ByteRing::new(&mut buf, &mut state);
            let mut model: VecDeque<u8> = VecDeque::new();
            let mut wrapped = false;
            for step in 0..steps {
                if rng.below(8) == 0 {
                    // A new view over the same memory and state: nothing changes.
                    ring = ByteRing::new(&mut buf, &mut state);
                }
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
                    assert_eq!(ring.state.head, 0);
                }
            }
            assert!(wrapped || cap == 1, "seed {seed} never wrapped");
        }
    }

    #[test]
    fn views_share_the_state() {
        let mut buf = [0u8; 8];
        let mut state = RingState::new();
        let mut ring = ByteRing::new(&mut buf, &mut state);
        ring.append(b"abcdef").unwrap();
        ring.consume(4).unwrap();
        assert_eq!(state, RingState { head: 4, len: 2 });
        // A later view over the same memory and state continues where the first stopped.
        let mut ring = ByteRing::new(&mut buf, &mut state);
        assert_eq!(staged_vec(&ring), b"ef");
        ring.append(b"ghijkl").unwrap();
        assert_eq!(ring.staged(), (&b"efgh"[..], &b"ijkl"[..]));
        let ring = ByteRing::new(&mut buf, &mut state);
        assert!(ring.is_full());
        assert_eq!(staged_vec(&ring), b"efghijkl");
    }

    #[test]
    fn a_state_that_does_not_fit_is_reset() {
        let mut big = [0u8; 16];
        let mut state = RingState::new();
        let mut ring = ByteRing::new(&mut big, &mut state);
        ring.append(&[1; 12]).unwrap();
        ring.consume(10).unwrap();
        assert_eq!(state, RingState { head: 10, len: 2 });
        // Offsets beyond a 4-byte buffer: not trusted, reset to empty.
        let mut small = [0u8; 4];
        let small_ptr = small.as_ptr();
        let ring = ByteRing::new(&mut small, &mut state);
        assert!(ring.is_empty());
        assert_eq!(ring.staged_raw()[0], (small_ptr, 0));
        assert_eq!(state, RingState::new());
        // Nothing fits a zero-capacity ring but the empty state.
        let mut state = RingState { head: 0, len: 1 };
        assert!(ByteRing::new(&mut [], &mut state).is_empty());
        let mut state = RingState { head: 3, len: 0 };
        let big_ptr = big.as_ptr();
        assert_eq!(
            ByteRing::new(&mut big, &mut state).staged_raw()[0].0,
            big_ptr
        );
        // A state that fits is kept.
        let mut state = RingState { head: 15, len: 16 };
        assert!(ByteRing::new(&mut big, &mut state).is_full());
    }

    /// Every byte zero: what `WriteSlabs::new` builds.
    fn assert_all_zero<const N: usize, const SIZE: usize>(slabs: &WriteSlabs<N, SIZE>) {
        assert!(slabs.bytes.iter().flatten().all(|b| *b == 0));
        assert!(slabs.states.iter().all(|s| *s == RingState::new()));
    }

    #[test]
    fn new_is_the_zero_value() {
        assert_all_zero(&WriteSlabs::<3, 5>::new());
        assert_all_zero(&WriteSlabs::<0, 5>::new());
        let mut slot = MaybeUninit::<WriteSlabs<3, 5>>::uninit();
        assert_all_zero(init_zeroed(&mut slot));
        let mut slot = MaybeUninit::<RingState>::uninit();
        assert_eq!(*init_zeroed(&mut slot), RingState::new());
        assert_eq!(RingState::default(), RingState::new());
    }

    /// Fills every slab of `arena` to capacity with its own pattern, across the wrap; checks
    /// each through fresh views; resets them all.
    fn use_fully(arena: &mut SlabArena<'_>) {
        let size = arena.slab_size();
        let half = size / 2;
        let pattern = |i: usize| -> Vec<u8> { (0..size).map(|k| (i * 31 + k) as u8).collect() };
        for i in 0..arena.len() {
            let want = pattern(i);
            let mut ring = arena.ring(i).unwrap();
            assert_eq!(ring.capacity(), size);
            assert!(ring.is_empty(), "slab {i} starts empty");
            ring.append(&std::vec![0xEE; half]).unwrap();
            ring.append(&want[..size - half]).unwrap();
            ring.consume(half).unwrap();
            ring.append(&want[size - half..]).unwrap();
            assert!(ring.is_full());
            assert_eq!(ring.staged().1.len(), half, "wrapped");
        }
        for i in 0..arena.len() {
            assert_eq!(staged_vec(&arena.ring(i).unwrap()), pattern(i), "slab {i}");
        }
        for i in 0..arena.len() {
            arena.reset(i).unwrap();
            assert!(arena.ring(i).unwrap().is_empty());
        }
        assert!(arena.ring(arena.len()).is_none());
        assert!(arena.reset(arena.len()).is_err());
    }

    #[test]
    fn arena_basics() {
        let mut slabs = WriteSlabs::<3, 10>::new();
        let mut arena = SlabArena::new(&mut slabs);
        assert_eq!((arena.len(), arena.slab_size()), (3, 10));
        assert!(!arena.is_empty());
        arena.ring(0).unwrap().append(b"zero").unwrap();
        arena.ring(2).unwrap().append(b"two").unwrap();
        assert!(arena.ring(1).unwrap().is_empty(), "slabs are independent");
        assert_eq!(staged_vec(&arena.ring(0).unwrap()), b"zero");
        let err = arena.reset(3).unwrap_err();
        assert_eq!((err.index(), err.slabs()), (3, 3));
        assert!(
            err.to_string().contains("raise the N of WriteSlabs"),
            "{err}"
        );
        arena.reset(0).unwrap();
        assert!(arena.ring(0).unwrap().is_empty());
        assert_eq!(staged_vec(&arena.ring(2).unwrap()), b"two");
        assert!(std::format!("{arena:?}").contains("slab_size: 10"));
        // A new arena over the same storage starts with every slab empty.
        let mut arena = slabs.arena();
        assert!(arena.ring(2).unwrap().is_empty());
        use_fully(&mut arena);

        let mut none = WriteSlabs::<0, 8>::new();
        let mut arena = none.arena();
        assert!(arena.is_empty() && arena.ring(0).is_none());
        let mut tiny = WriteSlabs::<2, 0>::new();
        let mut arena = tiny.arena();
        assert!(arena.ring(1).unwrap().append(b"x").is_err());
    }

    #[test]
    fn zeroed_write_slabs_in_place() {
        let mut slot = MaybeUninit::<WriteSlabs<4, 32>>::uninit();
        use_fully(&mut init_zeroed(&mut slot).arena());
    }

    #[test]
    fn leaked_zeroed_write_slabs() {
        let slabs = leak_zeroed::<WriteSlabs<4, 32>>();
        use_fully(&mut slabs.arena());
        // SAFETY: from `leak_zeroed` (the global allocator, with the layout of the type, as
        // `Box` uses) and not used again; reclaiming keeps Miri's leak check on.
        drop(unsafe { Box::from_raw(slabs) });
    }

    #[test]
    fn write_slabs_from_a_static_slot() {
        static SLABS: StaticSlot<WriteSlabs<3, 16>> = StaticSlot::new();
        use_fully(&mut SLABS.take().unwrap().arena());
        assert!(SLABS.take().is_none());
    }

    /// 16 MiB of write slabs, never built on the stack.
    #[test]
    #[cfg_attr(miri, ignore = "large")]
    fn big_zeroed_write_slabs() {
        let slabs = leak_zeroed::<WriteSlabs<1024, 16384>>();
        use_fully(&mut slabs.arena());
        // SAFETY: as in `leaked_zeroed_write_slabs`.
        drop(unsafe { Box::from_raw(slabs) });
    }

    /// Random operations on random slabs, each through a fresh view, against one `VecDeque`
    /// per slab: the slabs stay independent, and every staged region lies in its own slab.
    #[test]
    fn arena_matches_a_model() {
        const N: usize = 4;
        const SIZE: usize = 8;
        let seeds = if cfg!(miri) { 2 } else { 30 };
        let steps = if cfg!(miri) { 150 } else { 3000 };
        for seed in 1..=seeds {
            let mut rng = XorShift::new(seed);
            let mut slabs = WriteSlabs::<N, SIZE>::new();
            let mut arena = slabs.arena();
            let base = arena.bytes.as_ptr().addr();
            let mut model: Vec<VecDeque<u8>> = std::vec![VecDeque::new(); N];
            for step in 0..steps {
                let i = rng.below(N + 1);
                if i == N {
                    assert!(arena.ring(i).is_none());
                    assert_eq!(arena.reset(i), Err(NoSuchSlab { index: N, slabs: N }));
                    continue;
                }
                // Bytes tagged with their slab, so a byte in the wrong slab would show.
                let data: Vec<u8> = (0..rng.below(SIZE + 2))
                    .map(|k| (i << 6 | (step + k) & 63) as u8)
                    .collect();
                let m = &mut model[i];
                match rng.below(6) {
                    0 | 1 => {
                        let n = arena.ring(i).unwrap().append_partial(&data);
                        assert_eq!(n, data.len().min(SIZE - m.len()));
                        m.extend(&data[..n]);
                    }
                    2 => match arena.ring(i).unwrap().append(&data) {
                        Ok(()) => m.extend(&data),
                        Err(e) => assert_eq!(e.free(), SIZE - m.len()),
                    },
                    3 | 4 => {
                        let n = rng.below(m.len() + 1);
                        arena.ring(i).unwrap().consume(n).unwrap();
                        m.drain(..n);
                    }
                    _ => {
                        arena.reset(i).unwrap();
                        m.clear();
                    }
                }
                for (j, m) in model.iter().enumerate() {
                    let ring = arena.ring(j).unwrap();
                    assert_eq!(staged_vec(&ring), m.iter().copied().collect::<Vec<u8>>());
                    for (p, len) in ring.staged_raw() {
                        let off = p.addr() - base;
                        assert!(off >= j * SIZE && off + len <= (j + 1) * SIZE, "slab {j}");
                    }
                }
            }
        }
    }

    /// The staged regions of a submitted send, carried to the simulated kernel thread.
    struct Submitted([(*const u8, usize); 2]);
    // SAFETY: the kernel thread only reads the staged bytes named here, and reports the send
    // complete only after it is done with them; Miri checks the test for data races.
    unsafe impl Send for Submitted {}

    /// The kernel on another thread reads the staged regions of a send in flight while the loop
    /// keeps appending to the free region of the same slab through fresh arena views, as the
    /// reactor does. Under Miri this checks that no reference covers bytes the kernel reads, and
    /// that the protocol (submit staged bytes, consume only what completed, write only free
    /// bytes) has no data race. Short sends are part of it.
    #[test]
    fn kernel_reads_staged_bytes_while_the_loop_appends() {
        const SIZE: usize = 16;
        let total: usize = if cfg!(miri) { 200 } else { 50_000 };
        let mut slabs = WriteSlabs::<2, SIZE>::new();
        let mut arena = slabs.arena();
        let (submit_tx, submit_rx) = std::sync::mpsc::channel::<Submitted>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<usize>();
        let kernel = std::thread::spawn(move || {
            // The stream is 0, 1, 2, ... (mod 256).
            let (mut next, mut sent, mut sends) = (0u8, 0usize, 0usize);
            while let Ok(Submitted(regions)) = submit_rx.recv() {
                sends += 1;
                let submitted = regions[0].1 + regions[1].1;
                assert!(submitted > 0);
                // Every third send is short: half of what was submitted.
                let n = if sends % 3 == 0 {
                    submitted.div_ceil(2)
                } else {
                    submitted
                };
                let mut left = n;
                for (p, len) in regions {
                    let k = len.min(left);
                    // SAFETY: staged bytes of the live slab, submitted for this send; the loop
                    // writes them again only after the completion below.
                    let bytes = unsafe { slice::from_raw_parts(p, k) };
                    for b in bytes {
                        assert_eq!(*b, next, "byte {sent}");
                        next = next.wrapping_add(1);
                        sent += 1;
                    }
                    left -= k;
                }
                done_tx.send(n).unwrap();
            }
            sent
        });
        let mut rng = XorShift::new(11);
        let mut produced = 0usize;
        let mut in_flight = false;
        loop {
            if produced < total {
                // Append to slab 1 whether or not a send from it is in flight, and to its
                // neighbour, slab 0.
                let want = rng.below(SIZE).min(total - produced);
                let data: Vec<u8> = (produced..produced + want).map(|i| i as u8).collect();
                produced += arena.ring(1).unwrap().append_partial(&data);
                let mut other = arena.ring(0).unwrap();
                other.clear();
                other.append_partial(&data);
            }
            if in_flight {
                let done = if produced < total {
                    done_rx.try_recv().ok()
                } else {
                    Some(done_rx.recv().unwrap())
                };
                if let Some(n) = done {
                    arena.ring(1).unwrap().consume(n).unwrap();
                    in_flight = false;
                }
            }
            let ring = arena.ring(1).unwrap();
            if !in_flight && !ring.is_empty() {
                submit_tx.send(Submitted(ring.staged_raw())).unwrap();
                in_flight = true;
            } else if !in_flight && produced == total {
                break;
            }
        }
        drop(submit_tx);
        assert_eq!(kernel.join().unwrap(), total);
    }
}
