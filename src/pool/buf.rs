//! [`BufPool`]: fixed-size buffers in caller memory, in a receive tier and a user tier, handed
//! out as [`Lease`]s that return their buffer exactly once (see [`BufPool`]).

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicU16, Ordering};
use core::{fmt, mem, slice};

use super::zero::ZeroInit;

/// The most buffers a pool may have: the kernel's limit on provided-buffer ring entries.
pub const MAX_BUFFERS: usize = 32768;

/// The most owners a pool tracks: owner indices are `u32`, and a buffer stores `owner + 1`
/// (0 meaning "no owner"), so `u32::MAX` itself is never an owner.
const MAX_OWNERS: usize = u32::MAX as usize;

/// Byte offset of the ring's tail: it overlaps `resv` of entry 0.
const TAIL_OFFSET: usize = 14;

/// One entry of an io_uring provided-buffer ring (`struct io_uring_buf`).
///
/// The pool writes these itself, field by field; the type is exposed so that
/// [`BufPool::ring_addr`] has a precise pointee for registration. Its layout is checked against
/// `rustix::io_uring::io_uring_buf` at compile time.
#[repr(C)]
#[derive(Debug)]
pub struct BufRingEntry {
    addr: u64,
    len: u32,
    bid: u16,
    /// In entry 0 these bytes are the ring's tail; never written as part of an entry.
    resv: u16,
}

impl BufRingEntry {
    const ZERO: BufRingEntry = BufRingEntry {
        addr: 0,
        len: 0,
        bid: 0,
        resv: 0,
    };
}

mod layout {
    use super::{BufRingEntry, TAIL_OFFSET};
    use core::mem::{align_of, offset_of};
    use rustix::io_uring::{buf_ring_tail_struct, io_uring_buf};
    use static_assertions::{assert_eq_size, const_assert, const_assert_eq};

    assert_eq_size!(BufRingEntry, io_uring_buf);
    const_assert_eq!(core::mem::size_of::<BufRingEntry>(), 16);
    const_assert_eq!(align_of::<BufRingEntry>(), align_of::<io_uring_buf>());
    const_assert_eq!(
        offset_of!(BufRingEntry, addr),
        offset_of!(io_uring_buf, addr)
    );
    const_assert_eq!(offset_of!(BufRingEntry, len), offset_of!(io_uring_buf, len));
    const_assert_eq!(offset_of!(BufRingEntry, bid), offset_of!(io_uring_buf, bid));
    // The tail overlaps entry 0's `resv`.
    const_assert_eq!(offset_of!(BufRingEntry, resv), TAIL_OFFSET);
    const_assert_eq!(offset_of!(buf_ring_tail_struct, tail), TAIL_OFFSET);
    const_assert!(TAIL_OFFSET.is_multiple_of(align_of::<core::sync::atomic::AtomicU16>()));
}

/// The ring: `N` entries, page-aligned as the kernel requires.
#[repr(C, align(4096))]
struct RingMem<const N: usize>([BufRingEntry; N]);

/// Where a buffer is (see the table in [`BufPool`]'s documentation).
///
/// `repr(u8)` with `Recv = 0`, so zeroed storage holds valid states; they mean nothing until
/// [`BufPool::new`] sets every buffer's state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum State {
    /// In the receive tier: published in the ring, or on the receive free list.
    Recv = 0,
    /// On the user free list.
    UserFree = 1,
    /// Owned by a live [`Lease`].
    Leased = 2,
    /// Detached by [`Lease::into_raw`]; comes back through [`BufPool::release_raw`].
    Raw = 3,
    /// Owned by a live [`SendLease`](super::SendLease) (possibly on another thread); comes back
    /// only through its return queue, drained by [`ReturnHandle::drain`](super::ReturnHandle).
    Sent = 4,
    /// In the receive tier but held back from the ring (ring mode, beyond the ring window), on
    /// the spare stack.
    Spare = 5,
}

/// A pool's bookkeeping, inside its storage: [`BufPool::new`] fills it in, and every
/// [`BufPool`] handle (and every [`Lease`], through its handle) is a shared reference to it.
///
/// The pointers point into the same storage (and at the owner counts lent to
/// [`BufPool::with_owners`]). They are not borrows, so the storage is not self-referential: they
/// are dereferenced only through a `BufPool<'a>`, and `'a` is the borrow of the storage (and of
/// the counts) they were made from. All-zero (null pointers, zero counters) is the value in fresh
/// storage and means "no pool yet"; nothing reads it before `BufPool::new` rewrites it.
#[repr(C)]
struct Header {
    /// Entry 0 of the provided-buffer ring (`total` entries).
    ring: *mut BufRingEntry,
    /// The first byte of buffer 0; buffer `i` starts `i * buf_size` bytes later.
    bufs: *mut u8,
    /// The storage's two free-list stacks (`total` ids; see [`BufPoolStorage`]).
    free: *const Cell<u16>,
    /// The storage's per-buffer states (`total`).
    state: *const Cell<State>,
    /// The storage's per-buffer owner tags (`total`): 0 for none, `owner + 1` for a buffer
    /// charged to `owner`.
    owner: *const Cell<u32>,
    /// The owner counts lent to [`BufPool::with_owners`] (`owners` of them); dangling when
    /// `owners == 0`.
    counts: *const Cell<u16>,
    owners: usize,
    /// `N`.
    total: usize,
    /// `SIZE`.
    buf_size: usize,
    user_reserve: u16,
    /// [`RecvTier::ProvidedRing`] when true, [`RecvTier::FreeList`] otherwise (a `bool`, so that
    /// zero is a valid header).
    ring_mode: bool,
    /// The user free list is `free[..user_len]`.
    user_len: Cell<u16>,
    /// Buffers in the receive tier. In free-list mode the receive free list is
    /// `free[total - recv_len..]`; in ring mode `ring_len` of these are in the ring and the
    /// rest (the spare stack) are `free[total - (recv_len - ring_len)..]`.
    recv_len: Cell<u16>,
    /// Ring mode: buffers published in the ring and not yet answered by a completion.
    ring_len: Cell<u16>,
    /// Ring mode: the most buffers published at once (the rest wait on the spare stack).
    window: Cell<u16>,
    /// The pool's copy of the ring tail (the last value stored).
    tail: Cell<u16>,
    leased: Cell<u16>,
    leased_high_water: Cell<u16>,
}

impl Header {
    /// The all-zero header (a function, not a `const`: it holds `Cell`s).
    const fn zero() -> Header {
        Header {
            ring: ptr::null_mut(),
            bufs: ptr::null_mut(),
            free: ptr::null(),
            state: ptr::null(),
            owner: ptr::null(),
            counts: ptr::null(),
            owners: 0,
            total: 0,
            buf_size: 0,
            user_reserve: 0,
            ring_mode: false,
            user_len: Cell::new(0),
            recv_len: Cell::new(0),
            ring_len: Cell::new(0),
            window: Cell::new(0),
            tail: Cell::new(0),
            leased: Cell::new(0),
            leased_high_water: Cell::new(0),
        }
    }
}

/// Storage for a [`BufPool`] of `N` buffers of `SIZE` bytes: the buffers and everything the pool
/// keeps about them.
///
/// Holds the provided-buffer ring (`N` [`BufRingEntry`]s, page-aligned), the buffer bytes, the
/// pool's header (counters, mode, ring tail), the free-list index storage, and per buffer its
/// state and owner tag. `N` must be a power of two no larger than [`MAX_BUFFERS`], and `SIZE`
/// must be in `1..=u32::MAX`: other values fail to compile when [`BufPoolStorage::new`] or
/// [`BufPool::new`] is instantiated (a post-monomorphization error, so the mistake shows at build
/// time rather than at start-up). The ring is present in free-list mode too (unused, `16 * N`
/// bytes).
///
/// All-zero bytes is a valid, empty storage ([`ZeroInit`]), the same value [`BufPoolStorage::new`]
/// builds, so big storage can be placed in `.bss` with a [`StaticSlot`](super::StaticSlot), or
/// made in place with [`init_zeroed`](super::init_zeroed) or
/// `leak_zeroed` (feature `std`), never on the stack.
///
/// ```compile_fail
/// // 3 is not a power of two: this does not build.
/// let storage = ringlet::pool::BufPoolStorage::<3, 64>::new();
/// ```
#[repr(C)]
pub struct BufPoolStorage<const N: usize, const SIZE: usize> {
    ring: RingMem<N>,
    bufs: [[u8; SIZE]; N],
    header: Header,
    owner: [u32; N],
    /// Two stacks of buffer ids: the user free list grows up from index 0, the receive free
    /// list (free-list mode) grows down from index `N - 1`. They never meet: each buffer is on
    /// at most one.
    free: [u16; N],
    state: [State; N],
}

// SAFETY: the only non-`Send` parts are the header's raw pointers (into this storage and at the
// lent owner counts) and its `Cell`s. They are used only through a `BufPool<'a>`, and every
// `BufPool` holds the exclusive borrow of the storage that `BufPool::new` took; handles are
// neither `Send` nor `Sync`. So while any handle exists, the storage cannot be reached from
// another thread (not even to be moved), and while none exists, the pointers are inert data that
// the next `BufPool::new` overwrites before any use.
unsafe impl<const N: usize, const SIZE: usize> Send for BufPoolStorage<N, SIZE> {}
// SAFETY: a shared `&BufPoolStorage` gives access to nothing (the fields are private and the
// type has no `&self` methods), and none can exist while a pool uses the storage (the pool holds
// the exclusive borrow; see the `Send` impl).
unsafe impl<const N: usize, const SIZE: usize> Sync for BufPoolStorage<N, SIZE> {}

// SAFETY: every field is valid as zero bytes: the ring entries, buffer bytes, owner tags and free
// list are integers; `State` is `repr(u8)` with `Recv = 0`; the header holds raw pointers (null
// is valid), integers, a `bool` and `Cell`s of integers. `BufPool::new` relies on nothing in the
// storage: it writes the header, the owner tags, the states and the free lists itself, and
// publishes ring entries field by field. Zero is also exactly what `new` builds (tested).
unsafe impl<const N: usize, const SIZE: usize> ZeroInit for BufPoolStorage<N, SIZE> {}

impl<const N: usize, const SIZE: usize> BufPoolStorage<N, SIZE> {
    const VALID: () = assert!(
        N.is_power_of_two() && N <= MAX_BUFFERS && SIZE > 0 && SIZE <= u32::MAX as usize,
        "BufPoolStorage: N must be a power of two <= 32768 and SIZE in 1..=u32::MAX"
    );

    /// Zeroed storage (the same value as all-zero bytes). Fails to compile unless `N` is a power
    /// of two `<= 32768` and `SIZE` is in `1..=u32::MAX`.
    ///
    /// This builds the value where it is called (on the stack, unless in a `static`'s
    /// initialiser); for big storage see [`ZeroInit`].
    pub const fn new() -> Self {
        let () = Self::VALID;
        BufPoolStorage {
            ring: RingMem([const { BufRingEntry::ZERO }; N]),
            bufs: [[0; SIZE]; N],
            header: Header::zero(),
            owner: [0; N],
            free: [0; N],
            state: [State::Recv; N],
        }
    }
}

impl<const N: usize, const SIZE: usize> Default for BufPoolStorage<N, SIZE> {
    fn default() -> Self {
        Self::new()
    }
}

/// How the receive tier hands buffers to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecvTier {
    /// io_uring: receive-tier buffers are published in the provided-buffer ring in the storage;
    /// the kernel picks one per receive, and a completion names it
    /// ([`BufPool::lease_received`]). Published buffers cannot be taken back.
    ProvidedRing,
    /// epoll: receive-tier buffers sit on a free list; the backend takes one
    /// ([`BufPool::try_take_recv`]) before each read.
    FreeList,
}

/// Settings of a [`BufPool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufPoolConfig {
    /// How the receive tier works.
    pub recv_tier: RecvTier,
    /// How many free buffers the user tier keeps back from the receive tier (at most the pool's
    /// `N`). See the refill policy in the [`pool` module documentation](super).
    pub user_reserve: u16,
}

/// A failed buffer-pool operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PoolError {
    /// `user_reserve` is larger than the pool (at construction).
    ReserveTooLarge {
        /// The configured reserve.
        user_reserve: u16,
        /// The number of buffers in the pool.
        total: usize,
    },
    /// A buffer id out of range.
    BadId {
        /// The id given.
        id: u16,
        /// The number of buffers in the pool.
        total: usize,
    },
    /// A completion named a buffer that is not in the receive tier (not given to the kernel).
    NotInRecvTier {
        /// The id given.
        id: u16,
    },
    /// The operation belongs to the other receive-tier mode.
    WrongMode {
        /// The pool's mode.
        mode: RecvTier,
    },
    /// A length larger than the buffer size.
    LenTooLarge {
        /// The length given.
        len: usize,
        /// The buffer size.
        capacity: usize,
    },
    /// Every user-tier buffer is leased.
    UserTierEmpty {
        /// The configured reserve (the setting to raise).
        user_reserve: u16,
    },
    /// The buffer is not detached by [`Lease::into_raw`]: it was already returned, or a live
    /// [`Lease`] or [`SendLease`](super::SendLease) owns it.
    NotRaw {
        /// The id given.
        id: u16,
    },
    /// A return queue with room for fewer ids than the pool has buffers (at
    /// [`ReturnHandle::new`](super::ReturnHandle::new)): a push could not be guaranteed to fit.
    ReturnQueueTooSmall {
        /// The queue's capacity (the `N` of its
        /// [`ReturnQueueStorage`](super::ReturnQueueStorage), the setting to raise).
        capacity: usize,
        /// The number of buffers in the pool.
        total: usize,
    },
    /// An owner index outside the owner table given to [`BufPool::with_owners`] (a pool built by
    /// [`BufPool::new`] has no table: every owner is outside it).
    UnknownOwner {
        /// The owner given.
        owner: u32,
        /// The number of owners the pool tracks (the table's length, the setting to raise).
        owners: usize,
    },
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PoolError::ReserveTooLarge {
                user_reserve,
                total,
            } => write!(
                f,
                "BufPoolConfig::user_reserve ({user_reserve}) exceeds the pool size ({total})"
            ),
            PoolError::BadId { id, total } => {
                write!(
                    f,
                    "buffer id {id} out of range: the pool has {total} buffers"
                )
            }
            PoolError::NotInRecvTier { id } => write!(
                f,
                "buffer {id} is not in the receive tier: the kernel does not hold it"
            ),
            PoolError::WrongMode { mode } => write!(
                f,
                "the pool's receive tier is {mode:?}; this operation belongs to the other mode"
            ),
            PoolError::LenTooLarge { len, capacity } => {
                write!(f, "length {len} exceeds the buffer size {capacity}")
            }
            PoolError::UserTierEmpty { user_reserve } => write!(
                f,
                "user buffer tier empty: all {user_reserve} user buffers are leased; raise \
                 BufPoolConfig::user_reserve (and the pool's N)"
            ),
            PoolError::NotRaw { id } => write!(
                f,
                "buffer {id} is not a raw lease: already returned, or owned by a live Lease or \
                 SendLease"
            ),
            PoolError::ReturnQueueTooSmall { capacity, total } => write!(
                f,
                "return queue capacity {capacity} is below the pool size {total}; raise the N of \
                 ReturnQueueStorage to at least {total}"
            ),
            PoolError::UnknownOwner { owner, owners } => write!(
                f,
                "owner {owner} out of range: the pool tracks {owners} owners; raise the length \
                 of the owner table given to BufPool::with_owners"
            ),
        }
    }
}

impl core::error::Error for PoolError {}

/// A snapshot of a pool's counters. `total == recv_tier + user_free + leased` always.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PoolStats {
    /// Buffers in the pool (`N`).
    pub total: usize,
    /// Buffers in the receive tier (published to the kernel, or on the receive free list).
    pub recv_tier: usize,
    /// Free buffers in the user tier.
    pub user_free: usize,
    /// Buffers out: live leases, send leases and raw ids not yet returned.
    pub leased: usize,
    /// The most buffers ever out at once.
    pub leased_high_water: usize,
}

/// A handle to `N` buffers of `SIZE` bytes in caller memory, in a receive tier and a user tier.
///
/// See the [`pool` module documentation](super) for the tiers, the refill policy and why the
/// storage must outlive every kernel operation.
///
/// # A handle to state in the storage
///
/// Everything the pool keeps (counters, free lists, per-buffer state and owner, the ring tail)
/// lives in its [`BufPoolStorage`]; a `BufPool<'a>` is one pointer to it and is `Copy`. All
/// copies are the same pool, and a [`Lease<'a>`](Lease) holds a copy, so a lease depends only on
/// the storage's borrow `'a`, not on a borrow of whoever holds the handle: an event loop that
/// owns its `BufPool<'a>` by value can hand out `Lease<'a>`s that outlive a borrow of the loop.
///
/// Single-threaded: the state is in `Cell`s, so the handle is neither `Send` nor `Sync`, and a
/// [`Lease`] (which holds one) is neither either.
///
/// # Buffer states
///
/// Every buffer is in exactly one state, kept per buffer in the storage:
///
/// | state   | where                                          | who may touch the bytes      |
/// |---------|------------------------------------------------|------------------------------|
/// | receive | published in the ring / on the recv free list  | the kernel (ring) / nobody   |
/// | user    | on the user free list                          | nobody                       |
/// | leased  | owned by exactly one live [`Lease`]            | that lease                   |
/// | raw     | detached from its lease by [`Lease::into_raw`] | nobody through the pool      |
/// | sent    | owned by exactly one live [`SendLease`]        | that send lease (any thread) |
///
/// A buffer enters *leased* only when a `Lease` for it is created, and leaves it only when that
/// lease is dropped (or released, or turned into a raw id), so at most one `Lease` names a
/// buffer at any time: that is what makes [`Lease::as_mut_slice`] exclusive. A raw id goes back
/// with [`BufPool::release_raw`], which accepts only *raw* buffers, so returning twice (or
/// returning the buffer of a live lease) is an error, not corruption. A *sent* buffer comes back
/// only through the return queue its [`SendLease`] pushes it onto (see
/// [`ReturnHandle`](super::ReturnHandle)): neither `release_raw` nor `lease_from_raw` accepts
/// it, so nothing on the loop's thread can hand out or republish a buffer another thread is
/// using.
///
/// [`SendLease`]: super::SendLease
///
/// # Owners
///
/// A pool built with [`BufPool::with_owners`] also counts, per owner (the event loop's
/// connection slot, say), the buffers charged to it, for a per-connection lease quota. A buffer
/// is charged when a lease is made for an owner ([`BufPool::lease_received_by`],
/// [`BufPool::try_take_recv_by`]), stays charged while it is *leased*, *raw* or *sent*, and is
/// uncharged exactly once: when it comes back to a free tier, or earlier, when its owner is
/// disowned (the event loop does that when it releases a closed connection's slot, so leases the
/// handler still holds do not count against the next connection in that slot).
/// [`BufPool::owner_count`] reads the count.
///
/// # The provided-buffer ring
///
/// In [`RecvTier::ProvidedRing`] mode the receive tier *is* an io_uring provided-buffer ring
/// (`IORING_REGISTER_PBUF_RING`) in the storage: `N` [`BufRingEntry`]s, page-aligned. The
/// kernel consumes entries from its own head (which it does not share); the pool publishes
/// entries at its tail: it writes only the `addr`, `len` and `bid` fields of the entry at
/// `tail & (N - 1)` (the tail itself overlaps entry 0's `resv` at byte offset 14, so a whole
/// entry is never written), then stores the new tail with `Release` ordering as an `AtomicU16`.
/// The tail is a free-running `u16`; because `N` is a power of two no larger than 32768, it
/// divides 2^16 and `tail & (N - 1)` stays consistent across the wrap.
///
/// At most `N` buffers are ever in the receive tier, and a buffer is published again only after
/// a completion returned it, so when a slot is rewritten the kernel (which reads entries in
/// order) has already read that slot's previous entry.
///
/// The pool cannot see the kernel's head, so it trusts the buffer ids completions name: that is
/// the `unsafe` contract of [`BufPool::lease_received`].
#[derive(Clone, Copy)]
pub struct BufPool<'a> {
    /// The header in the storage, which `BufPool::new` borrowed exclusively for `'a` (every
    /// other part of the storage is reached through the header's pointers).
    h: &'a Header,
}

impl<'a> BufPool<'a> {
    /// A pool over `storage`. The first `user_reserve` buffers go to the user tier, the rest to
    /// the receive tier (published to the ring at once in [`RecvTier::ProvidedRing`] mode).
    ///
    /// Whatever the storage held is reset (it may be fresh, zeroed, or left by an earlier pool).
    /// The ring is reset too: its tail starts at 0, matching the kernel's head when the ring is
    /// registered. Register the ring (see [`BufPool::ring_addr`]) only after the pool is built,
    /// and unregister it before the storage's borrow `'a` ends.
    ///
    /// The pool tracks no owners: the `_by` constructors fail with
    /// [`PoolError::UnknownOwner`]. See [`BufPool::with_owners`].
    ///
    /// # Errors
    ///
    /// [`PoolError::ReserveTooLarge`] if `user_reserve > N`.
    pub fn new<const N: usize, const SIZE: usize>(
        storage: &'a mut BufPoolStorage<N, SIZE>,
        config: BufPoolConfig,
    ) -> Result<BufPool<'a>, PoolError> {
        Self::build(storage, config, &mut [], 0, N)
    }

    /// [`BufPool::new`], plus per-owner lease accounting in `counts`: owner `i` is
    /// `counts[i]`, for `i` below `counts.len()` (and below `u32::MAX`, whichever is smaller).
    ///
    /// `counts` is set to all zeros, then holds, for each owner, the number of the pool's
    /// buffers charged to it (see [`BufPool`]'s Owners section); read it with
    /// [`BufPool::owner_count`]. The pool borrows it for `'a`, like the storage, so nothing else
    /// can change it. A count never exceeds `N`, so `u16` always suffices.
    ///
    /// # Errors
    ///
    /// [`PoolError::ReserveTooLarge`] if `user_reserve > N`.
    pub fn with_owners<const N: usize, const SIZE: usize>(
        storage: &'a mut BufPoolStorage<N, SIZE>,
        config: BufPoolConfig,
        counts: &'a mut [u16],
    ) -> Result<BufPool<'a>, PoolError> {
        Self::build(storage, config, counts, 0, N)
    }

    /// [`BufPool::with_owners`], publishing at most `window` buffers in the ring at once
    /// ([`RecvTier::ProvidedRing`] mode; see "The ring window" in [`BufPool`]'s docs). A
    /// `window` of 0 or above `N` publishes every receive-tier buffer, as the other
    /// constructors do; in free-list mode it is ignored.
    ///
    /// # Errors
    ///
    /// [`PoolError::ReserveTooLarge`] if `user_reserve > N`.
    pub fn with_ring_window<const N: usize, const SIZE: usize>(
        storage: &'a mut BufPoolStorage<N, SIZE>,
        config: BufPoolConfig,
        counts: &'a mut [u16],
        window: usize,
    ) -> Result<BufPool<'a>, PoolError> {
        let window = if window == 0 { N } else { window.min(N) };
        Self::build(storage, config, counts, 0, window)
    }

    /// The constructors, with the ring's tail starting at `initial_tail` (tests start near the
    /// `u16` wrap) and at most `window` (`1..=N`) buffers published at once.
    fn build<const N: usize, const SIZE: usize>(
        storage: &'a mut BufPoolStorage<N, SIZE>,
        config: BufPoolConfig,
        counts: &'a mut [u16],
        initial_tail: u16,
        window: usize,
    ) -> Result<BufPool<'a>, PoolError> {
        let () = BufPoolStorage::<N, SIZE>::VALID;
        if usize::from(config.user_reserve) > N {
            return Err(PoolError::ReserveTooLarge {
                user_reserve: config.user_reserve,
                total: N,
            });
        }
        counts.fill(0);
        let owners = counts.len().min(MAX_OWNERS);
        let counts: &'a [Cell<u16>] = Cell::from_mut(counts).as_slice_of_cells();
        let BufPoolStorage {
            ring,
            bufs,
            header,
            owner,
            free,
            state,
        } = storage;
        owner.fill(0);
        // Every pointer comes from the exclusive borrow for 'a, one field each; none of these
        // borrows is used again, so the pointers stay valid for 'a.
        *header = Header {
            ring: ring.0.as_mut_ptr(),
            bufs: bufs.as_mut_ptr().cast::<u8>(),
            free: Cell::from_mut(&mut free[..]).as_slice_of_cells().as_ptr(),
            state: Cell::from_mut(&mut state[..]).as_slice_of_cells().as_ptr(),
            owner: Cell::from_mut(&mut owner[..]).as_slice_of_cells().as_ptr(),
            counts: counts.as_ptr(),
            owners,
            total: N,
            buf_size: SIZE,
            user_reserve: config.user_reserve,
            ring_mode: config.recv_tier == RecvTier::ProvidedRing,
            user_len: Cell::new(0),
            recv_len: Cell::new(0),
            ring_len: Cell::new(0),
            // `1 <= window <= N <= 32768`: fits.
            window: Cell::new(window.max(1) as u16),
            tail: Cell::new(initial_tail),
            leased: Cell::new(0),
            leased_high_water: Cell::new(0),
        };
        let pool = BufPool { h: header };
        // `N <= 32768`, so every id fits in a u16.
        for id in 0..N as u16 {
            if id < config.user_reserve {
                pool.push_user(id);
            } else {
                pool.push_recv(id);
            }
        }
        pool.store_tail();
        Ok(pool)
    }

    /// The receive-tier mode.
    pub fn recv_tier(&self) -> RecvTier {
        if self.h.ring_mode {
            RecvTier::ProvidedRing
        } else {
            RecvTier::FreeList
        }
    }

    /// The configured user reserve.
    pub fn user_reserve(&self) -> u16 {
        self.h.user_reserve
    }

    /// The number of buffers (`N`).
    pub fn total(&self) -> usize {
        self.h.total
    }

    /// The size of each buffer in bytes (`SIZE`).
    pub fn buf_size(&self) -> usize {
        self.h.buf_size
    }

    /// Buffers in the receive tier: in ring mode, published and not yet answered by a
    /// completion; in free-list mode, ready for [`BufPool::try_take_recv`].
    pub fn recv_available(&self) -> usize {
        usize::from(self.h.recv_len.get())
    }

    /// Free buffers in the user tier, ready for [`BufPool::try_lease_user`].
    pub fn user_available(&self) -> usize {
        usize::from(self.h.user_len.get())
    }

    /// Buffers out: live leases, send leases and raw ids not yet returned.
    pub fn leased(&self) -> usize {
        usize::from(self.h.leased.get())
    }

    /// All counters at once.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            total: self.total(),
            recv_tier: self.recv_available(),
            user_free: self.user_available(),
            leased: self.leased(),
            leased_high_water: usize::from(self.h.leased_high_water.get()),
        }
    }

    /// The number of owners the pool tracks: the length of the table given to
    /// [`BufPool::with_owners`] (at most `u32::MAX`), 0 for a pool from [`BufPool::new`].
    pub fn owners(&self) -> usize {
        self.h.owners
    }

    /// The number of buffers charged to `owner`: its live leases plus its raw ids not yet
    /// returned (see [`Lease::into_raw`]). 0 for an owner outside the table (nothing can be
    /// charged to it).
    pub fn owner_count(&self, owner: u32) -> u16 {
        self.counts()
            .get(owner as usize)
            .map_or(0, |count| count.get())
    }

    /// Uncharges every buffer charged to `owner`, whose count drops to 0: for an owner that is
    /// gone (a closed connection whose slot will be reused) while some of its buffers are
    /// still leased, raw or sent, so they are not counted against the next owner of the same
    /// index. Those buffers stay valid and come back to a free tier as usual, charged to no
    /// one. Visits every buffer when `owner` has some charged, nothing otherwise.
    pub(crate) fn disown(&self, owner: u32) {
        let Some(count) = self.counts().get(owner as usize) else {
            return;
        };
        if count.replace(0) == 0 {
            return;
        }
        // `owner < owners <= u32::MAX` (it indexes the table): `owner + 1` does not overflow.
        let tag = owner + 1;
        for t in self.owner_tags() {
            if t.get() == tag {
                t.set(0);
            }
        }
    }

    /// The provided-buffer ring's address, for `IORING_REGISTER_PBUF_RING` (`ring_addr`). It is
    /// page-aligned and holds [`BufPool::ring_entries`] entries. The buffer group id is the
    /// registrar's choice; the pool does not need it.
    ///
    /// Only meaningful in [`RecvTier::ProvidedRing`] mode (in free-list mode nothing is ever
    /// published). Registration contract (for the `unsafe` registration code in `sys`): register
    /// after building the pool and unregister before the storage's borrow ends; the kernel reads
    /// entries and writes into the buffers they name until then, which the storage's lifetime
    /// must cover. The pool itself never creates a reference to the ring or to a buffer in the
    /// receive tier.
    pub fn ring_addr(&self) -> *mut BufRingEntry {
        self.h.ring
    }

    /// The number of ring entries (`N`, a power of two), for `IORING_REGISTER_PBUF_RING`
    /// (`ring_entries`).
    pub fn ring_entries(&self) -> u32 {
        self.total() as u32
    }

    /// The ring window: the most receive-tier buffers published in the ring at once
    /// ([`RecvTier::ProvidedRing`] mode; see "The ring window" in [`BufPool`]'s docs). `N`
    /// unless the pool was built with [`BufPool::with_ring_window`] or widened.
    pub fn ring_window(&self) -> usize {
        usize::from(self.h.window.get())
    }

    /// Buffers published in the ring now and not yet answered by a completion (0 in
    /// free-list mode). Always `min(ring_window(), recv_available())`.
    pub fn ring_published(&self) -> usize {
        usize::from(self.h.ring_len.get())
    }

    /// Raises the ring window to `window` (at most `N`; a smaller value changes nothing: a
    /// published buffer cannot be taken back) and publishes spare buffers up to it at once.
    /// Returns the window now. In free-list mode nothing is published.
    pub fn widen_ring(&self, window: usize) -> usize {
        let window = window.min(self.total());
        if window > self.ring_window() {
            // `window <= N <= 32768`.
            self.h.window.set(window as u16);
            if self.refill() {
                self.store_tail();
            }
        }
        self.ring_window()
    }

    /// Takes the buffer a completion named (io_uring: the `bid` of a completion with
    /// `IORING_CQE_F_BUFFER`, `len` its byte count) out of the receive tier, as a lease of
    /// `len` bytes charged to no owner.
    ///
    /// # Errors
    ///
    /// [`PoolError::WrongMode`] in free-list mode; [`PoolError::BadId`] for an id out of range;
    /// [`PoolError::LenTooLarge`] if `len` exceeds the buffer size;
    /// [`PoolError::NotInRecvTier`] if the buffer is not in the receive tier (user tier,
    /// leased, raw). Nothing changes on error.
    ///
    /// # Safety
    ///
    /// The pool cannot see the kernel's ring head, so it cannot tell a buffer the kernel has
    /// filled from one that is still published and may be written into later. While the ring is
    /// registered with a kernel, `bid` must therefore name a buffer the kernel has picked and
    /// finished with: the buffer id of a completion from this ring, passed here once per
    /// completion. Otherwise the returned lease could hand out a reference to memory the kernel
    /// writes concurrently (undefined behaviour). Without a registration any `bid` is sound.
    pub unsafe fn lease_received(&self, bid: u16, len: u32) -> Result<Lease<'a>, PoolError> {
        // SAFETY: the caller upholds this function's contract, which is the callee's.
        unsafe { self.lease_received_for(bid, len, None) }
    }

    /// [`BufPool::lease_received`], charging the buffer to `owner` (see [`BufPool`]'s Owners
    /// section) until it comes back.
    ///
    /// # Errors
    ///
    /// As [`BufPool::lease_received`], plus [`PoolError::UnknownOwner`] if `owner` is outside
    /// the owner table. Nothing changes on error.
    ///
    /// # Safety
    ///
    /// As [`BufPool::lease_received`]: while the ring is registered, `bid` must be the buffer id
    /// of a completion from this ring, passed once per completion.
    pub unsafe fn lease_received_by(
        &self,
        bid: u16,
        len: u32,
        owner: u32,
    ) -> Result<Lease<'a>, PoolError> {
        // SAFETY: the caller upholds this function's contract, which is the callee's.
        unsafe { self.lease_received_for(bid, len, Some(owner)) }
    }

    /// Both `lease_received` flavours.
    ///
    /// # Safety
    ///
    /// As [`BufPool::lease_received`].
    unsafe fn lease_received_for(
        &self,
        bid: u16,
        len: u32,
        owner: Option<u32>,
    ) -> Result<Lease<'a>, PoolError> {
        if !self.h.ring_mode {
            return Err(PoolError::WrongMode {
                mode: self.recv_tier(),
            });
        }
        self.check_id(bid)?;
        self.check_len(len as usize)?;
        if let Some(owner) = owner {
            self.check_owner(owner)?;
        }
        if self.state()[usize::from(bid)].get() != State::Recv {
            return Err(PoolError::NotInRecvTier { id: bid });
        }
        self.h.recv_len.set(self.h.recv_len.get() - 1);
        self.h.ring_len.set(self.h.ring_len.get() - 1);
        let lease = self.lease(bid, len, owner);
        // The ring lost one: top it up from the spare stack (the most recently returned).
        if self.refill() {
            self.store_tail();
        }
        Ok(lease)
    }

    /// Takes a buffer from the receive free list (free-list mode), as a lease of length 0
    /// charged to no owner: fill [`Lease::buf_mut`], then [`Lease::set_len`]. `None` when the
    /// receive tier is empty, and always in ring mode (the kernel picks ring buffers; see
    /// [`BufPool::lease_received`]).
    pub fn try_take_recv(&self) -> Option<Lease<'a>> {
        self.take_recv(None)
    }

    /// [`BufPool::try_take_recv`], charging the buffer to `owner` (see [`BufPool`]'s Owners
    /// section) until it comes back. `Ok(None)` exactly when `try_take_recv` would return
    /// `None`.
    ///
    /// # Errors
    ///
    /// [`PoolError::UnknownOwner`] if `owner` is outside the owner table; nothing changes.
    pub fn try_take_recv_by(&self, owner: u32) -> Result<Option<Lease<'a>>, PoolError> {
        self.check_owner(owner)?;
        Ok(self.take_recv(Some(owner)))
    }

    /// Both `try_take_recv` flavours (`owner`, if any, is checked).
    fn take_recv(&self, owner: Option<u32>) -> Option<Lease<'a>> {
        let n = self.h.recv_len.get();
        if !self.h.ring_mode && n > 0 {
            let id = self.free()[self.total() - usize::from(n)].get();
            self.h.recv_len.set(n - 1);
            Some(self.lease(id, 0, owner))
        } else {
            None
        }
    }

    /// Takes a buffer from the user tier (pipe segments, reassembly, carry buffers), as a lease
    /// of length 0 charged to no owner.
    ///
    /// # Errors
    ///
    /// [`PoolError::UserTierEmpty`] when every user-tier buffer is out; it names the setting to
    /// raise.
    pub fn try_lease_user(&self) -> Result<Lease<'a>, PoolError> {
        let n = self.h.user_len.get();
        if n == 0 {
            return Err(PoolError::UserTierEmpty {
                user_reserve: self.h.user_reserve,
            });
        }
        let id = self.free()[usize::from(n - 1)].get();
        self.h.user_len.set(n - 1);
        Ok(self.lease(id, 0, None))
    }

    /// Returns a buffer detached by [`Lease::into_raw`] to the tier the refill policy picks,
    /// uncharging its owner, if any.
    ///
    /// # Errors
    ///
    /// [`PoolError::BadId`] for an id out of range; [`PoolError::NotRaw`] if the buffer is not
    /// raw: returned already (a double return) or owned by a live [`Lease`]. Nothing changes on
    /// error.
    pub fn release_raw(&self, id: u16) -> Result<(), PoolError> {
        self.check_raw(id)?;
        self.give_back(id);
        Ok(())
    }

    /// Turns a buffer detached by [`Lease::into_raw`] back into a [`Lease`] of `len` bytes. The
    /// lease inherits the raw buffer's owner (the charge does not change).
    ///
    /// # Errors
    ///
    /// As [`BufPool::release_raw`], plus [`PoolError::LenTooLarge`].
    pub fn lease_from_raw(&self, id: u16, len: u32) -> Result<Lease<'a>, PoolError> {
        self.check_raw(id)?;
        self.check_len(len as usize)?;
        self.state()[usize::from(id)].set(State::Leased);
        Ok(Lease {
            pool: *self,
            id,
            len,
        })
    }

    /// Returns a buffer detached into a [`SendLease`](super::SendLease), whose id came back
    /// through its return queue, to the tier the refill policy picks (see
    /// [`BufPool::release_raw`]).
    ///
    /// # Errors
    ///
    /// [`PoolError::BadId`], or [`PoolError::NotRaw`] if the buffer is not *sent*. Nothing
    /// changes on error.
    pub(super) fn release_sent(&self, id: u16) -> Result<(), PoolError> {
        self.check_id(id)?;
        if self.state()[usize::from(id)].get() != State::Sent {
            return Err(PoolError::NotRaw { id });
        }
        self.give_back(id);
        Ok(())
    }

    /// Turns a *sent* buffer whose [`SendLease`](super::SendLease) came back to the loop's
    /// thread into a [`Lease`] again (the caller consumed that send lease without running its
    /// `Drop`). The charge does not change.
    pub(super) fn lease_from_sent(&self, id: u16, len: u32) -> Lease<'a> {
        debug_assert_eq!(self.state()[usize::from(id)].get(), State::Sent);
        self.state()[usize::from(id)].set(State::Leased);
        Lease {
            pool: *self,
            id,
            len,
        }
    }

    /// Whether `self` and `other` are handles to the same pool.
    pub(super) fn same_pool(&self, other: &BufPool<'_>) -> bool {
        ptr::eq(self.h, other.h)
    }

    /// The storage's free-list array: `total` cells.
    fn free(&self) -> &'a [Cell<u16>] {
        // SAFETY: `build` set `free` to the storage's free-list array of `total` ids, from the
        // exclusive borrow of the storage for 'a, which this handle carries. That memory is
        // accessed only as these cells, through handles of this pool, which stay on one thread.
        unsafe { slice::from_raw_parts(self.h.free, self.h.total) }
    }

    /// The storage's per-buffer states: `total` cells.
    fn state(&self) -> &'a [Cell<State>] {
        // SAFETY: as in `free`, for the storage's state array of `total` entries.
        unsafe { slice::from_raw_parts(self.h.state, self.h.total) }
    }

    /// The storage's per-buffer owner tags: `total` cells.
    fn owner_tags(&self) -> &'a [Cell<u32>] {
        // SAFETY: as in `free`, for the storage's owner array of `total` entries.
        unsafe { slice::from_raw_parts(self.h.owner, self.h.total) }
    }

    /// The owner counts: `owners` cells (none for a pool without a table).
    fn counts(&self) -> &'a [Cell<u16>] {
        // SAFETY: `build` set `counts` and `owners` from a slice borrowed exclusively for 'a
        // (for a pool without a table, an empty one: its pointer is non-null and aligned), at
        // most its length. It is accessed only as these cells, through handles of this pool.
        unsafe { slice::from_raw_parts(self.h.counts, self.h.owners) }
    }

    fn check_id(&self, id: u16) -> Result<(), PoolError> {
        if usize::from(id) < self.total() {
            Ok(())
        } else {
            Err(PoolError::BadId {
                id,
                total: self.total(),
            })
        }
    }

    fn check_len(&self, len: usize) -> Result<(), PoolError> {
        if len <= self.h.buf_size {
            Ok(())
        } else {
            Err(PoolError::LenTooLarge {
                len,
                capacity: self.h.buf_size,
            })
        }
    }

    fn check_owner(&self, owner: u32) -> Result<(), PoolError> {
        if (owner as usize) < self.h.owners {
            Ok(())
        } else {
            Err(PoolError::UnknownOwner {
                owner,
                owners: self.h.owners,
            })
        }
    }

    fn check_raw(&self, id: u16) -> Result<(), PoolError> {
        self.check_id(id)?;
        if self.state()[usize::from(id)].get() == State::Raw {
            Ok(())
        } else {
            Err(PoolError::NotRaw { id })
        }
    }

    /// Makes the lease for a buffer just taken off a free list or out of the ring, charged to
    /// `owner` (checked by the caller) if given.
    fn lease(&self, id: u16, len: u32, owner: Option<u32>) -> Lease<'a> {
        self.state()[usize::from(id)].set(State::Leased);
        let leased = self.h.leased.get() + 1;
        self.h.leased.set(leased);
        if leased > self.h.leased_high_water.get() {
            self.h.leased_high_water.set(leased);
        }
        if let Some(owner) = owner {
            // `owner < owners <= u32::MAX` (checked), so `owner + 1` does not overflow and
            // indexes the table. The tag was 0: a buffer is uncharged whenever it is free.
            self.owner_tags()[usize::from(id)].set(owner + 1);
            let count = &self.counts()[owner as usize];
            // Counts only charged buffers, at most N <= 32768: no overflow.
            count.set(count.get() + 1);
        }
        Lease {
            pool: *self,
            id,
            len,
        }
    }

    /// Uncharges buffer `id`'s owner, if it has one (once: the tag is cleared).
    fn uncharge(&self, id: u16) {
        let tag = self.owner_tags()[usize::from(id)].replace(0);
        if let Some(owner) = tag.checked_sub(1) {
            let count = &self.counts()[owner as usize];
            // The buffer was counted when it was tagged, and only this clears the tag.
            count.set(count.get() - 1);
        }
    }

    /// The refill policy: a returned buffer goes to the user tier while it holds fewer than
    /// `user_reserve` free buffers, otherwise to the receive tier. Its owner is uncharged.
    fn give_back(&self, id: u16) {
        debug_assert!(matches!(
            self.state()[usize::from(id)].get(),
            State::Leased | State::Raw | State::Sent
        ));
        self.uncharge(id);
        self.h.leased.set(self.h.leased.get() - 1);
        if self.h.user_len.get() < self.h.user_reserve {
            self.push_user(id);
        } else {
            self.push_recv(id);
            self.store_tail();
        }
    }

    fn push_user(&self, id: u16) {
        let n = self.h.user_len.get();
        self.free()[usize::from(n)].set(id);
        self.h.user_len.set(n + 1);
        self.state()[usize::from(id)].set(State::UserFree);
    }

    /// Puts `id` in the receive tier. In ring mode it is published if the ring holds fewer
    /// than the window (the entry is written but the kernel sees it only after
    /// [`BufPool::store_tail`]), and goes on top of the spare stack otherwise.
    fn push_recv(&self, id: u16) {
        let n = self.h.recv_len.get() + 1;
        self.h.recv_len.set(n);
        if !self.h.ring_mode {
            self.state()[usize::from(id)].set(State::Recv);
            self.free()[self.total() - usize::from(n)].set(id);
        } else if self.h.ring_len.get() < self.h.window.get() {
            self.publish(id);
        } else {
            // The spare stack: `free[total - spare..]`, top at the lowest index.
            let spare = n - self.h.ring_len.get();
            self.state()[usize::from(id)].set(State::Spare);
            self.free()[self.total() - usize::from(spare)].set(id);
        }
    }

    /// Ring mode: publishes spare buffers, most recently returned first, while the ring holds
    /// fewer than the window. Returns whether it published any (then store the tail).
    fn refill(&self) -> bool {
        let mut any = false;
        while self.h.ring_mode && self.h.ring_len.get() < self.h.window.get() {
            let spare = self.h.recv_len.get() - self.h.ring_len.get();
            if spare == 0 {
                break;
            }
            let id = self.free()[self.total() - usize::from(spare)].get();
            debug_assert_eq!(self.state()[usize::from(id)].get(), State::Spare);
            self.publish(id);
            any = true;
        }
        any
    }

    /// Ring mode: writes `id`'s entry (see [`BufPool::write_entry`]) and counts it in the ring.
    fn publish(&self, id: u16) {
        self.state()[usize::from(id)].set(State::Recv);
        self.write_entry(id);
        self.h.ring_len.set(self.h.ring_len.get() + 1);
    }

    /// Writes `id`'s entry at the tail slot and advances the pool's copy of the tail.
    fn write_entry(&self, id: u16) {
        let tail = self.h.tail.get();
        let slot = usize::from(tail) & (self.total() - 1);
        let addr = self.buf_ptr(id).expose_provenance() as u64;
        let entry = self.h.ring.wrapping_add(slot);
        // SAFETY: `slot < N` and `ring` points to the N entries of the storage the pool borrows
        // exclusively for 'a, so `entry` is in bounds and valid for writes. No Rust reference to
        // the ring exists. The kernel reads only entries in [its head, published tail); this
        // slot is outside that range: the unanswered publications are the last `ring_len`
        // ones, and `ring_len < window <= N` before this one (`publish` is called only then),
        // so of the N publications at positions [tail - N, tail) at most N - 1 are unanswered,
        // at least one was answered by a completion, and as the kernel reads positions in
        // order it has read position tail - N, this slot's previous use. (During `new` no kernel reads the ring yet: it is
        // registered only after the pool is built.) Only `addr`, `len` and `bid` are written,
        // never `resv`: in entry 0 those bytes are the tail, which is accessed only atomically.
        unsafe {
            (&raw mut (*entry).addr).write(addr);
            (&raw mut (*entry).len).write(self.h.buf_size as u32);
            (&raw mut (*entry).bid).write(id);
        }
        self.h.tail.set(tail.wrapping_add(1));
    }

    /// Publishes the entries written so far: stores the tail with `Release`, so a kernel that
    /// loads it with `Acquire` sees their contents.
    fn store_tail(&self) {
        if !self.h.ring_mode {
            return;
        }
        self.tail_atomic()
            .store(self.h.tail.get(), Ordering::Release);
    }

    fn tail_atomic(&self) -> &'a AtomicU16 {
        // SAFETY: the tail is the u16 at byte offset 14 of entry 0 (checked against rustix's
        // `buf_ring_tail_struct` in `layout`), inside the ring the pool borrows for 'a; offset
        // 14 of an 8-aligned entry is 2-aligned. Those bytes are accessed only through this
        // `AtomicU16` while the pool exists (entries are written field by field, skipping
        // `resv`), and by the kernel only atomically, so no non-atomic or mixed-size access
        // races with it.
        unsafe { AtomicU16::from_ptr(self.h.ring.byte_add(TAIL_OFFSET).cast::<u16>()) }
    }

    /// The first byte of buffer `id` (`id < N`).
    fn buf_ptr(&self, id: u16) -> *mut u8 {
        // `wrapping_add` keeps this safe; for `id < N` the result is in bounds of the storage.
        self.h.bufs.wrapping_add(usize::from(id) * self.h.buf_size)
    }
}

impl fmt::Debug for BufPool<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufPool")
            .field("mode", &self.recv_tier())
            .field("buf_size", &self.buf_size())
            .field("owners", &self.owners())
            .field("stats", &self.stats())
            .finish()
    }
}

/// One leased buffer: an id, a length, and a handle to the pool it returns to.
///
/// The lease has exclusive access to its buffer. Dropping it (or [`Lease::release`]) returns
/// the buffer exactly once, to the tier the refill policy picks, and uncharges its owner, if
/// any; [`Lease::into_raw`] detaches it instead. Forgetting a lease (`mem::forget`) leaks its
/// buffer: it stays counted as leased (and charged to its owner). Not `Send` (its drop must run
/// on the pool's thread; see [`BufPool`]): to hand a buffer to another thread, turn the lease
/// into a [`SendLease`](super::SendLease) with
/// [`ReturnHandle::send`](super::ReturnHandle::send).
pub struct Lease<'a> {
    pool: BufPool<'a>,
    len: u32,
    id: u16,
}

static_assertions::const_assert!(mem::size_of::<Lease<'static>>() <= 2 * mem::size_of::<usize>());
static_assertions::const_assert!(
    mem::size_of::<Option<Lease<'static>>>() == mem::size_of::<Lease<'static>>()
);
static_assertions::const_assert!(mem::size_of::<BufPool<'static>>() == mem::size_of::<usize>());
static_assertions::assert_not_impl_any!(Lease<'static>: Send, Sync, Clone);
static_assertions::assert_not_impl_any!(BufPool<'static>: Send, Sync);
static_assertions::assert_impl_all!(BufPool<'static>: Copy);
static_assertions::assert_impl_all!(BufPoolStorage<8, 64>: Send, Sync, ZeroInit);

impl<'a> Lease<'a> {
    /// The buffer id (the io_uring buffer id in ring mode).
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The number of valid bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether no byte is valid.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer size.
    pub fn capacity(&self) -> usize {
        self.pool.buf_size()
    }

    /// The owner the buffer is charged to, if any (see [`BufPool`]'s Owners section).
    pub fn owner(&self) -> Option<u32> {
        self.pool.owner_tags()[usize::from(self.id)]
            .get()
            .checked_sub(1)
    }

    /// The pool this lease returns to.
    pub fn pool(&self) -> BufPool<'a> {
        self.pool
    }

    /// The valid bytes (the first [`Lease::len`]).
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: see `Lease::buf_ptr`; `len <= capacity` is an invariant of the lease.
        unsafe { slice::from_raw_parts(self.buf_ptr(), self.len()) }
    }

    /// The valid bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: see `Lease::buf_ptr`; `&mut self` makes the slice unique among this lease's
        // borrows, and `len <= capacity` is an invariant of the lease.
        unsafe { slice::from_raw_parts_mut(self.buf_ptr(), self.len()) }
    }

    /// The whole buffer, for filling (then [`Lease::set_len`]). Bytes past `len` hold whatever
    /// an earlier use left there.
    pub fn buf_mut(&mut self) -> &mut [u8] {
        // SAFETY: see `Lease::buf_ptr`; `&mut self` makes the slice unique among this lease's
        // borrows.
        unsafe { slice::from_raw_parts_mut(self.buf_ptr(), self.capacity()) }
    }

    /// Sets the number of valid bytes.
    ///
    /// # Errors
    ///
    /// [`PoolError::LenTooLarge`] if `len` exceeds the buffer size; the length is unchanged.
    pub fn set_len(&mut self, len: usize) -> Result<(), PoolError> {
        self.pool.check_len(len)?;
        // `buf_size <= u32::MAX` (checked on the storage), so this does not truncate.
        self.len = len as u32;
        Ok(())
    }

    /// Returns the buffer now (the same as dropping the lease).
    pub fn release(self) {}

    /// Detaches the buffer from the lease without returning it: the pool counts it as leased
    /// until [`BufPool::release_raw`] (or [`BufPool::lease_from_raw`]) is called with the id.
    /// Returns `(id, len)`.
    ///
    /// The buffer stays charged to its owner, if any: a raw id is still out of the pool (say, on
    /// its way to another thread), so it still counts against the owner's quota.
    /// [`BufPool::release_raw`] uncharges it; [`BufPool::lease_from_raw`] hands the charge to
    /// the new lease.
    pub fn into_raw(self) -> (u16, u32) {
        let this = mem::ManuallyDrop::new(self);
        this.pool.state()[usize::from(this.id)].set(State::Raw);
        (this.id, this.len)
    }

    /// Detaches the buffer for a [`SendLease`](super::SendLease): marks it *sent* (so only the
    /// return queue brings it back) and returns `(id, len, first byte)`. The pointer is what
    /// [`Lease::buf_ptr`] promises, and stays so while the buffer is *sent*: the pool hands out,
    /// publishes or touches a sent buffer in no way until
    /// [`BufPool::release_sent`] or [`BufPool::lease_from_sent`] takes it back.
    pub(super) fn into_sent(self) -> (u16, u32, *mut u8) {
        let this = mem::ManuallyDrop::new(self);
        this.pool.state()[usize::from(this.id)].set(State::Sent);
        (this.id, this.len, this.buf_ptr())
    }

    /// The first byte of this lease's buffer: valid for reads and writes of `capacity()` bytes,
    /// and not accessed by anyone but this lease while it lives.
    ///
    /// Why: the pointer is in bounds because `id < N` (a lease is only made for a checked id)
    /// and the pool borrows the storage's bytes exclusively for 'a, which this lease (holding a
    /// `BufPool<'a>`) cannot outlive. The buffer is in the *leased* state, entered only when
    /// this lease was created and left only when it is dropped or turned raw, so no other lease
    /// names it; the pool itself never touches buffer bytes. It is not in the receive tier, so
    /// the kernel does not write into it: in ring mode it left the ring through a completion
    /// (the contract of [`BufPool::lease_received`]), or was never published.
    fn buf_ptr(&self) -> *mut u8 {
        self.pool.buf_ptr(self.id)
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.pool.give_back(self.id);
    }
}

impl AsRef<[u8]> for Lease<'_> {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsMut<[u8]> for Lease<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl fmt::Debug for Lease<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id)
            .field("len", &self.len)
            .field("owner", &self.owner())
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
    use std::sync::Mutex;
    use std::vec::Vec;

    const RING: BufPoolConfig = BufPoolConfig {
        recv_tier: RecvTier::ProvidedRing,
        user_reserve: 2,
    };
    const LIST: BufPoolConfig = BufPoolConfig {
        recv_tier: RecvTier::FreeList,
        user_reserve: 2,
    };

    fn new_storage<const N: usize, const SIZE: usize>() -> Box<BufPoolStorage<N, SIZE>> {
        Box::new(BufPoolStorage::new())
    }

    /// The kernel side of a provided-buffer ring: its own head, the entries it has seen
    /// published and not yet consumed.
    struct Kernel {
        head: u16,
        seen: u16,
        published: VecDeque<u16>,
        /// Entries observed in all.
        total_seen: u64,
    }

    impl Kernel {
        fn new(start: u16) -> Kernel {
            Kernel {
                head: start,
                seen: start,
                published: VecDeque::new(),
                total_seen: 0,
            }
        }

        fn load_tail(pool: &BufPool<'_>) -> u16 {
            let tail = pool
                .ring_addr()
                .wrapping_byte_add(TAIL_OFFSET)
                .cast::<u16>();
            // SAFETY: the tail u16 of the pool's live ring, accessed only atomically.
            unsafe { AtomicU16::from_ptr(tail) }.load(Ordering::Acquire)
        }

        /// Reads the entries published since the last look, field by field as the kernel does,
        /// and checks each one.
        fn observe(&mut self, pool: &BufPool<'_>) {
            let tail = Self::load_tail(pool);
            let mask = pool.ring_entries() as usize - 1;
            while self.seen != tail {
                let e = pool.ring_addr().wrapping_add(usize::from(self.seen) & mask);
                // SAFETY: an entry below the Acquire-loaded tail, inside the ring; fields only
                // (never entry 0's `resv`, the tail).
                let (addr, len, bid) = unsafe {
                    (
                        (&raw const (*e).addr).read(),
                        (&raw const (*e).len).read(),
                        (&raw const (*e).bid).read(),
                    )
                };
                assert!(usize::from(bid) < pool.total(), "bid {bid} out of range");
                assert_eq!(addr, pool.buf_ptr(bid).addr() as u64, "addr of bid {bid}");
                assert_eq!(len as usize, pool.buf_size(), "len of bid {bid}");
                assert!(!self.published.contains(&bid), "bid {bid} published twice");
                assert_eq!(pool.state()[usize::from(bid)].get(), State::Recv);
                self.published.push_back(bid);
                self.seen = self.seen.wrapping_add(1);
                self.total_seen += 1;
            }
            assert!(self.published.len() <= pool.total());
            assert_eq!(
                self.seen.wrapping_sub(self.head) as usize,
                self.published.len()
            );
        }

        /// Picks the next buffer for a receive, if any.
        fn pick(&mut self, pool: &BufPool<'_>) -> Option<u16> {
            self.observe(pool);
            let bid = self.published.pop_front()?;
            self.head = self.head.wrapping_add(1);
            Some(bid)
        }
    }

    #[test]
    fn construction_splits_by_reserve() {
        for config in [RING, LIST] {
            let mut storage = new_storage::<8, 32>();
            let pool = BufPool::new(&mut *storage, config).unwrap();
            let s = pool.stats();
            assert_eq!(
                (
                    s.total,
                    s.recv_tier,
                    s.user_free,
                    s.leased,
                    s.leased_high_water
                ),
                (8, 6, 2, 0, 0)
            );
            assert_eq!(pool.recv_available(), 6);
            assert_eq!(pool.user_available(), 2);
            assert_eq!(pool.buf_size(), 32);
            assert_eq!(pool.ring_entries(), 8);
            assert_eq!(
                pool.ring_addr().addr() % 4096,
                0,
                "ring must be page-aligned"
            );
        }
        let mut storage = new_storage::<8, 32>();
        let pool = BufPool::new(&mut *storage, RING).unwrap();
        let mut kernel = Kernel::new(0);
        kernel.observe(&pool);
        assert_eq!(kernel.published, [2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn reserve_larger_than_pool_is_rejected() {
        let config = BufPoolConfig {
            recv_tier: RecvTier::FreeList,
            user_reserve: 5,
        };
        let mut storage = new_storage::<4, 8>();
        let err = BufPool::new(&mut *storage, config).unwrap_err();
        assert_eq!(
            err,
            PoolError::ReserveTooLarge {
                user_reserve: 5,
                total: 4
            }
        );
        assert!(err.to_string().contains("user_reserve"));
        let all_user = BufPoolConfig {
            user_reserve: 4,
            ..config
        };
        assert_eq!(
            BufPool::new(&mut *new_storage::<4, 8>(), all_user)
                .unwrap()
                .user_available(),
            4
        );
    }

    #[test]
    fn user_tier_empty_names_the_setting() {
        let mut storage = new_storage::<4, 8>();
        let pool = BufPool::new(&mut *storage, LIST).unwrap();
        let a = pool.try_lease_user().unwrap();
        let b = pool.try_lease_user().unwrap();
        assert_ne!(a.id(), b.id());
        let err = pool.try_lease_user().unwrap_err();
        assert_eq!(err, PoolError::UserTierEmpty { user_reserve: 2 });
        assert!(err.to_string().contains("BufPoolConfig::user_reserve"));
        // The receive tier is not raided for the user tier.
        assert_eq!(pool.recv_available(), 2);
        drop(a);
        assert!(pool.try_lease_user().is_ok());
    }

    #[test]
    fn lease_received_rejects_what_the_kernel_does_not_hold() {
        let mut storage = new_storage::<4, 16>();
        let pool = BufPool::new(&mut *storage, RING).unwrap();
        let before = pool.stats();
        // SAFETY: no kernel has the ring registered (for every call in this block).
        unsafe {
            assert_eq!(
                pool.lease_received(4, 0).unwrap_err(),
                PoolError::BadId { id: 4, total: 4 }
            );
            assert_eq!(
                pool.lease_received(u16::MAX, 0).unwrap_err(),
                PoolError::BadId {
                    id: u16::MAX,
                    total: 4
                }
            );
            // Buffers 0 and 1 are in the user tier.
            assert_eq!(
                pool.lease_received(0, 1).unwrap_err(),
                PoolError::NotInRecvTier { id: 0 }
            );
            assert_eq!(
                pool.lease_received(2, 17).unwrap_err(),
                PoolError::LenTooLarge {
                    len: 17,
                    capacity: 16
                }
            );
            assert_eq!(pool.stats(), before, "errors change nothing");
            let lease = pool.lease_received(2, 16).unwrap();
            assert_eq!((lease.id(), lease.len()), (2, 16));
            // Leased now: a second completion naming it is an error.
            assert_eq!(
                pool.lease_received(2, 1).unwrap_err(),
                PoolError::NotInRecvTier { id: 2 }
            );
            let (id, _) = lease.into_raw();
            assert_eq!(
                pool.lease_received(id, 1).unwrap_err(),
                PoolError::NotInRecvTier { id }
            );
            pool.release_raw(id).unwrap();
        }
        assert_eq!(pool.try_take_recv().map(|l| l.id()), None, "ring mode");
    }

    #[test]
    fn free_list_mode() {
        let mut storage = new_storage::<4, 16>();
        let pool = BufPool::new(&mut *storage, LIST).unwrap();
        // SAFETY: no kernel has a ring registered.
        let err = unsafe { pool.lease_received(3, 1) }.unwrap_err();
        assert_eq!(
            err,
            PoolError::WrongMode {
                mode: RecvTier::FreeList
            }
        );
        let mut a = pool.try_take_recv().unwrap();
        assert!(a.is_empty());
        assert_eq!(a.capacity(), 16);
        a.buf_mut()[..5].copy_from_slice(b"hello");
        a.set_len(5).unwrap();
        assert_eq!(a.as_slice(), b"hello");
        let b = pool.try_take_recv().unwrap();
        assert!(pool.try_take_recv().is_none());
        assert_eq!(pool.recv_available(), 0);
        assert_eq!(pool.stats().leased_high_water, 2);
        drop(a);
        drop(b);
        assert_eq!(pool.recv_available(), 2);
    }

    #[test]
    fn set_len_over_capacity_is_an_error() {
        let mut storage = new_storage::<2, 8>();
        let pool = BufPool::new(&mut *storage, LIST).unwrap();
        let mut lease = pool.try_lease_user().unwrap();
        lease.set_len(8).unwrap();
        assert_eq!(lease.as_mut_slice().len(), 8);
        assert_eq!(
            lease.set_len(9),
            Err(PoolError::LenTooLarge {
                len: 9,
                capacity: 8
            })
        );
        assert!(lease.set_len(usize::MAX).is_err());
        assert_eq!(lease.len(), 8, "unchanged after an error");
        lease.set_len(0).unwrap();
        assert!(lease.is_empty() && lease.as_slice().is_empty());
    }

    #[test]
    fn release_raw_accepts_each_raw_id_once() {
        let mut storage = new_storage::<4, 8>();
        let pool = BufPool::new(&mut *storage, LIST).unwrap();
        let mut lease = pool.try_lease_user().unwrap();
        lease.buf_mut()[0] = 42;
        lease.set_len(1).unwrap();
        let live = pool.try_lease_user().unwrap();
        let (id, len) = lease.into_raw();
        assert_eq!(len, 1);
        assert_eq!(pool.leased(), 2, "a raw buffer still counts as leased");
        // The buffer of a live lease is not raw: returning it would alias the lease.
        assert_eq!(
            pool.release_raw(live.id()),
            Err(PoolError::NotRaw { id: live.id() })
        );
        assert_eq!(
            pool.release_raw(9),
            Err(PoolError::BadId { id: 9, total: 4 })
        );
        // Back into a lease and out again.
        let again = pool.lease_from_raw(id, len).unwrap();
        assert_eq!(again.as_slice(), [42]);
        assert_eq!(
            pool.lease_from_raw(id, 0).unwrap_err(),
            PoolError::NotRaw { id }
        );
        let (id, _) = again.into_raw();
        assert_eq!(
            pool.lease_from_raw(id, 9).unwrap_err(),
            PoolError::LenTooLarge {
                len: 9,
                capacity: 8
            }
        );
        pool.release_raw(id).unwrap();
        let err = pool.release_raw(id).unwrap_err();
        assert_eq!(err, PoolError::NotRaw { id });
        assert!(err.to_string().contains("already returned"));
        drop(live);
        assert_eq!(pool.leased(), 0);
        assert_eq!(pool.user_available(), 2);
    }

    #[test]
    fn refill_policy_tops_up_the_user_tier_first() {
        let mut storage = new_storage::<8, 8>();
        let pool = BufPool::new(&mut *storage, LIST).unwrap();
        let users = [
            pool.try_lease_user().unwrap(),
            pool.try_lease_user().unwrap(),
        ];
        let recvs: Vec<Lease<'_>> = (0..6).map(|_| pool.try_take_recv().unwrap()).collect();
        assert_eq!(pool.stats().leased, 8);
        drop(recvs);
        // The first two returns refill the user tier, the other four the receive tier.
        assert_eq!((pool.user_available(), pool.recv_available()), (2, 4));
        drop(users);
        assert_eq!((pool.user_available(), pool.recv_available()), (2, 6));
        assert_eq!(pool.stats().leased_high_water, 8);
    }

    #[test]
    fn leases_do_not_share_bytes() {
        let mut storage = new_storage::<4, 4>();
        let pool = BufPool::new(&mut *storage, LIST).unwrap();
        let mut leases: Vec<Lease<'_>> = Vec::new();
        while let Some(l) = pool.try_take_recv() {
            leases.push(l);
        }
        while let Ok(l) = pool.try_lease_user() {
            leases.push(l);
        }
        for l in &mut leases {
            let id = l.id() as u8;
            l.buf_mut().fill(id);
            l.set_len(4).unwrap();
        }
        for l in &leases {
            assert_eq!(l.as_ref(), [l.id() as u8; 4]);
        }
        let mut ids: Vec<u16> = leases.iter().map(Lease::id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [0, 1, 2, 3]);
    }

    #[test]
    fn storage_lives_in_a_static() {
        static STORAGE: Mutex<BufPoolStorage<4, 64>> = Mutex::new(BufPoolStorage::new());
        let mut guard = STORAGE.lock().unwrap();
        let pool = BufPool::new(&mut guard, LIST).unwrap();
        assert_eq!(pool.total(), 4);
    }

    #[test]
    fn sizes() {
        assert!(mem::size_of::<Lease<'_>>() <= 16);
        assert_eq!(mem::size_of::<BufRingEntry>(), 16);
        assert_eq!(mem::align_of::<BufPoolStorage<4, 3>>(), 4096);
    }

    #[test]
    fn a_disowned_owners_buffers_come_back_charged_to_no_one() {
        let mut storage = new_storage::<8, 16>();
        let mut counts = [0u16; 3];
        let pool = BufPool::with_owners(&mut *storage, LIST, &mut counts).unwrap();
        let a = pool.try_take_recv_by(1).unwrap().unwrap();
        let (raw, _) = pool.try_take_recv_by(1).unwrap().unwrap().into_raw();
        let other = pool.try_take_recv_by(2).unwrap().unwrap();
        assert_eq!([pool.owner_count(1), pool.owner_count(2)], [2, 1]);
        pool.disown(1);
        assert_eq!([pool.owner_count(1), pool.owner_count(2)], [0, 1]);
        assert_eq!((a.owner(), other.owner()), (None, Some(2)));
        // A new charge to the same owner counts alone; the old buffers return uncharged.
        let b = pool.try_take_recv_by(1).unwrap().unwrap();
        drop(a);
        pool.release_raw(raw).unwrap();
        assert_eq!(pool.owner_count(1), 1);
        drop(b);
        assert_eq!([pool.owner_count(1), pool.owner_count(2)], [0, 1]);
        // Disowning an owner with nothing charged, or outside the table, changes nothing.
        pool.disown(0);
        pool.disown(7);
        assert_eq!(other.owner(), Some(2));
        drop(other);
        assert_eq!(pool.owner_count(2), 0);
        assert_eq!(pool.leased(), 0);
    }

    #[test]
    fn owners_are_charged_and_uncharged_once() {
        let mut storage = new_storage::<8, 16>();
        let mut counts = [9u16; 3];
        let pool = BufPool::with_owners(&mut *storage, LIST, &mut counts).unwrap();
        assert_eq!(pool.owners(), 3);
        assert!(
            (0..3).all(|o| pool.owner_count(o) == 0),
            "the table starts at zero"
        );
        let a = pool.try_take_recv_by(1).unwrap().unwrap();
        let b = pool.try_take_recv_by(1).unwrap().unwrap();
        let c = pool.try_take_recv_by(2).unwrap().unwrap();
        let plain = pool.try_take_recv().unwrap();
        let user = pool.try_lease_user().unwrap();
        assert_eq!(
            (a.owner(), c.owner(), plain.owner(), user.owner()),
            (Some(1), Some(2), None, None)
        );
        assert_eq!(
            [
                pool.owner_count(0),
                pool.owner_count(1),
                pool.owner_count(2)
            ],
            [0, 2, 1]
        );
        // Owners outside the table: an error that changes nothing, and a count of 0.
        let before = pool.stats();
        let err = pool.try_take_recv_by(3).unwrap_err();
        assert_eq!(
            err,
            PoolError::UnknownOwner {
                owner: 3,
                owners: 3
            }
        );
        assert!(err.to_string().contains("BufPool::with_owners"), "{err}");
        assert!(pool.try_take_recv_by(u32::MAX).is_err());
        assert_eq!(pool.stats(), before);
        assert_eq!((pool.owner_count(3), pool.owner_count(u32::MAX)), (0, 0));
        // Dropped or released: uncharged.
        drop(a);
        assert_eq!(pool.owner_count(1), 1);
        b.release();
        assert_eq!(pool.owner_count(1), 0);
        // Raw: still charged; back into a lease: the lease inherits the owner.
        let (id, len) = c.into_raw();
        assert_eq!(pool.owner_count(2), 1);
        let c = pool.lease_from_raw(id, len).unwrap();
        assert_eq!((c.owner(), pool.owner_count(2)), (Some(2), 1));
        let (id, _) = c.into_raw();
        pool.release_raw(id).unwrap();
        assert_eq!(pool.owner_count(2), 0);
        // A second return is refused and uncharges nothing twice.
        assert!(pool.release_raw(id).is_err());
        assert_eq!(pool.owner_count(2), 0);
        // The buffer comes out again uncharged.
        drop((plain, user));
        let mut all = Vec::new();
        while let Some(l) = pool.try_take_recv() {
            assert_eq!(l.owner(), None);
            all.push(l);
        }
        assert_eq!(
            pool.try_take_recv_by(0).unwrap().map(|l| l.id()),
            None,
            "empty: Ok(None)"
        );
        drop(all);
        assert!(std::format!("{pool:?}").contains("owners: 3"));
        assert_eq!(counts, [0, 0, 0]);
    }

    #[test]
    fn owners_in_ring_mode_and_without_a_table() {
        let mut storage = new_storage::<4, 16>();
        let mut counts = [0u16; 2];
        let pool = BufPool::with_owners(&mut *storage, RING, &mut counts).unwrap();
        assert_eq!(
            pool.try_take_recv_by(0).unwrap().map(|l| l.id()),
            None,
            "ring mode: the kernel picks"
        );
        // SAFETY: no kernel has the ring registered (every call in this block).
        unsafe {
            assert_eq!(
                pool.lease_received_by(2, 1, 2).unwrap_err(),
                PoolError::UnknownOwner {
                    owner: 2,
                    owners: 2
                }
            );
            assert_eq!(pool.recv_available(), 2, "refused before taking");
            let l = pool.lease_received_by(2, 5, 1).unwrap();
            assert_eq!((l.owner(), pool.owner_count(1)), (Some(1), 1));
            // Other errors come first and charge nothing.
            assert_eq!(
                pool.lease_received_by(2, 5, 1).unwrap_err(),
                PoolError::NotInRecvTier { id: 2 }
            );
            assert_eq!(pool.owner_count(1), 1);
            drop(l);
            assert_eq!(pool.owner_count(1), 0);
        }

        // A pool from `new` tracks no owners: every owner is outside its (empty) table.
        let mut storage = new_storage::<4, 16>();
        let pool = BufPool::new(&mut *storage, LIST).unwrap();
        assert_eq!(pool.owners(), 0);
        assert_eq!(
            pool.try_take_recv_by(0).unwrap_err(),
            PoolError::UnknownOwner {
                owner: 0,
                owners: 0
            }
        );
        assert_eq!(pool.owner_count(0), 0);
        assert_eq!(pool.recv_available(), 2);
    }

    /// The loop this is for: it owns its pool handle by value and hands out leases that live
    /// on after the borrow of the loop ends, even after the loop value moves.
    #[test]
    fn leases_outlive_a_borrow_of_the_handle() {
        struct EventLoop<'a> {
            pool: BufPool<'a>,
        }
        impl<'a> EventLoop<'a> {
            fn recv(&self) -> Lease<'a> {
                let mut l = self.pool.try_take_recv().unwrap();
                l.buf_mut()[0] = 7;
                l.set_len(1).unwrap();
                l
            }
        }
        let mut storage = new_storage::<4, 8>();
        let pool = BufPool::new(&mut *storage, LIST).unwrap();
        let event_loop = EventLoop { pool };
        let lease = {
            let borrowed = &event_loop;
            borrowed.recv()
        };
        let moved = event_loop;
        assert_eq!(lease.as_slice(), [7]);
        // Every copy of the handle is the same pool.
        assert_eq!(
            (pool.leased(), moved.pool.leased(), lease.pool().leased()),
            (1, 1, 1)
        );
        drop(lease);
        assert_eq!(pool.leased(), 0);
    }

    /// Every field of the storage zero (what zero bytes decode as).
    fn assert_all_zero<const N: usize, const SIZE: usize>(s: &BufPoolStorage<N, SIZE>) {
        for e in &s.ring.0 {
            assert_eq!((e.addr, e.len, e.bid, e.resv), (0, 0, 0, 0));
        }
        assert!(s.bufs.iter().flatten().all(|b| *b == 0));
        assert!(s.owner.iter().all(|o| *o == 0));
        assert!(s.free.iter().all(|f| *f == 0));
        assert!(s.state.iter().all(|st| *st == State::Recv));
        let h = &s.header;
        assert!(h.ring.is_null() && h.bufs.is_null() && h.free.is_null());
        assert!(h.state.is_null() && h.owner.is_null() && h.counts.is_null());
        assert_eq!(
            (h.owners, h.total, h.buf_size, h.user_reserve),
            (0, 0, 0, 0)
        );
        assert!(!h.ring_mode);
        let cells = [
            &h.user_len,
            &h.recv_len,
            &h.tail,
            &h.leased,
            &h.leased_high_water,
        ];
        assert!(cells.iter().all(|c| c.get() == 0));
    }

    #[test]
    fn new_is_the_zero_value() {
        assert_all_zero(&BufPoolStorage::<4, 3>::new());
        assert_all_zero(&*new_storage::<8, 16>());
        let mut slot = MaybeUninit::<BufPoolStorage<4, 3>>::uninit();
        assert_all_zero(init_zeroed(&mut slot));
    }

    /// Uses a pool over `storage` fully, twice: in ring mode with owners (a simulated kernel
    /// fills every published buffer), then in free-list mode over the same, used storage.
    fn use_fully<const N: usize, const SIZE: usize>(storage: &mut BufPoolStorage<N, SIZE>) {
        let reserve = (N / 4) as u16;
        let config = BufPoolConfig {
            recv_tier: RecvTier::ProvidedRing,
            user_reserve: reserve,
        };
        let mut counts = [0u16; 4];
        let pool = BufPool::with_owners(&mut *storage, config, &mut counts).unwrap();
        let mut kernel = Kernel::new(0);
        let mut leases = Vec::new();
        while let Some(bid) = kernel.pick(&pool) {
            let owner = u32::from(bid) % 4;
            // SAFETY: picked by the simulated kernel.
            let mut l = unsafe { pool.lease_received_by(bid, SIZE as u32, owner) }.unwrap();
            l.as_mut_slice().fill(bid as u8);
            leases.push(l);
        }
        while let Ok(mut l) = pool.try_lease_user() {
            let id = l.id() as u8;
            l.buf_mut().fill(id);
            leases.push(l);
        }
        assert_eq!(leases.len(), N);
        let charged: usize = (0..4).map(|o| usize::from(pool.owner_count(o))).sum();
        assert_eq!(charged, N - usize::from(reserve));
        for l in &mut leases {
            let id = l.id() as u8;
            assert!(l.buf_mut().iter().all(|b| *b == id), "buffer {id} shared");
        }
        drop(leases);
        kernel.observe(&pool);
        assert_eq!(kernel.published.len(), N - usize::from(reserve));
        assert_eq!(counts, [0; 4]);

        let config = BufPoolConfig {
            recv_tier: RecvTier::FreeList,
            user_reserve: 1,
        };
        let pool = BufPool::new(&mut *storage, config).unwrap();
        assert_eq!(pool.stats().leased_high_water, 0, "reset");
        let mut leases = Vec::new();
        while let Some(l) = pool.try_take_recv() {
            leases.push(l);
        }
        leases.push(pool.try_lease_user().unwrap());
        assert_eq!(pool.leased(), N);
        let mut ids: Vec<u16> = leases.iter().map(Lease::id).collect();
        ids.sort_unstable();
        assert!(ids.iter().copied().eq(0..N as u16));
    }

    #[test]
    fn zeroed_storage_in_place() {
        let mut slot = MaybeUninit::<BufPoolStorage<8, 32>>::uninit();
        use_fully(init_zeroed(&mut slot));
    }

    #[test]
    fn leaked_zeroed_storage() {
        let storage = leak_zeroed::<BufPoolStorage<8, 32>>();
        assert_eq!(
            ptr::from_mut(storage).addr() % 4096,
            0,
            "aligned as the ring needs"
        );
        use_fully(storage);
        // SAFETY: from `leak_zeroed` (the global allocator, with the layout of the type, as
        // `Box` uses) and not used again; reclaiming keeps Miri's leak check on.
        drop(unsafe { Box::from_raw(storage) });
    }

    #[test]
    fn storage_from_a_static_slot() {
        static STORAGE: StaticSlot<BufPoolStorage<8, 32>> = StaticSlot::new();
        use_fully(STORAGE.take().unwrap());
        assert!(STORAGE.take().is_none());
    }

    /// 16 MiB of buffers, never built on the stack.
    #[test]
    #[cfg_attr(miri, ignore = "large")]
    fn big_zeroed_storage() {
        let storage = leak_zeroed::<BufPoolStorage<4096, 4096>>();
        use_fully(storage);
        // SAFETY: as in `leaked_zeroed_storage`.
        drop(unsafe { Box::from_raw(storage) });
    }

    /// The kernel's view of ring mode: every buffer it picks was published once, with the
    /// right address and length, and comes back through the ring after its lease is dropped,
    /// across the wrap of the u16 tail.
    /// With a ring window, receives that each give their buffer back at once cycle through
    /// the window and the buffer last returned, not through the whole pool; widening
    /// publishes spare buffers at once.
    #[test]
    fn ring_window_reuses_hot_buffers() {
        const N: usize = 64;
        let config = BufPoolConfig {
            recv_tier: RecvTier::ProvidedRing,
            user_reserve: 0,
        };
        for (window, most) in [(4, 5), (N, N)] {
            let mut storage = new_storage::<N, 16>();
            let mut counts = [0u16; 1];
            let pool =
                BufPool::with_ring_window(&mut *storage, config, &mut counts, window).unwrap();
            assert_eq!(pool.recv_available(), N);
            assert_eq!(pool.ring_published(), window);
            let mut kernel = Kernel::new(0);
            let mut used = std::collections::BTreeSet::new();
            for _ in 0..10 * N {
                let bid = kernel.pick(&pool).expect("a published buffer");
                // SAFETY: picked by the simulated kernel.
                let lease = unsafe { pool.lease_received_by(bid, 1, 0) }.unwrap();
                used.insert(lease.id());
                drop(lease);
                assert_eq!(pool.ring_published(), window);
            }
            assert_eq!(used.len(), most, "window {window}");
        }
        // Held leases drain the ring; the spare stack tops it up; widening publishes more.
        let mut storage = new_storage::<N, 16>();
        let pool = BufPool::with_ring_window(&mut *storage, config, &mut [], 4).unwrap();
        let mut kernel = Kernel::new(0);
        let mut held = Vec::new();
        for _ in 0..10 {
            let bid = kernel.pick(&pool).unwrap();
            // SAFETY: picked by the simulated kernel.
            held.push(unsafe { pool.lease_received(bid, 1) }.unwrap());
            assert_eq!(pool.ring_published(), 4);
        }
        assert_eq!(pool.recv_available(), N - 10);
        assert_eq!(pool.widen_ring(2), 4, "a window never shrinks");
        assert_eq!(pool.widen_ring(40), 40);
        kernel.observe(&pool);
        assert_eq!(kernel.published.len(), 40);
        assert_eq!(pool.widen_ring(1000), N, "at most N");
        kernel.observe(&pool);
        assert_eq!(kernel.published.len(), N - 10);
        held.clear();
        kernel.observe(&pool);
        assert_eq!(kernel.published.len(), N);
    }

    #[test]
    fn kernel_sees_published_buffers_across_tail_wrap() {
        const N: usize = 8;
        // Start just before the wrap so it happens within a few hundred publications.
        let start = u16::MAX - 20;
        let rounds = if cfg!(miri) { 200 } else { 70_000 };
        let config = BufPoolConfig {
            recv_tier: RecvTier::ProvidedRing,
            user_reserve: 1,
        };
        // Every buffer published, and a window of 3 (the rest on the spare stack).
        for window in [N, 3] {
            let mut storage = new_storage::<N, 16>();
            let pool = BufPool::build(&mut *storage, config, &mut [], start, window).unwrap();
            let mut kernel = Kernel::new(start);
            kernel.observe(&pool);
            assert_eq!(kernel.published.len(), window.min(N - 1));
            let mut rng = XorShift::new(7);
            let mut held: VecDeque<Lease<'_>> = VecDeque::new();
            for round in 0..rounds {
                // Receive into up to three buffers, then return some leases in random order.
                for _ in 0..rng.below(4) {
                    let Some(bid) = kernel.pick(&pool) else { break };
                    let len = rng.below(17) as u32;
                    // SAFETY: `bid` was picked by the simulated kernel; no real kernel is
                    // involved.
                    let lease = unsafe { pool.lease_received(bid, len) }.unwrap();
                    assert_eq!(lease.len(), len as usize);
                    held.push_back(lease);
                }
                while held.len() > rng.below(N) {
                    let i = rng.below(held.len());
                    drop(held.remove(i));
                }
                if round % 2 == 0 {
                    // Occasionally the user tier is used in between.
                    if let Ok(l) = pool.try_lease_user() {
                        drop(l);
                    }
                }
                kernel.observe(&pool);
                let s = pool.stats();
                assert_eq!(pool.ring_published(), kernel.published.len());
                assert_eq!(pool.ring_published(), s.recv_tier.min(window));
                assert_eq!(s.recv_tier + s.user_free + s.leased, N);
            }
            held.clear();
            kernel.observe(&pool);
            assert_eq!(kernel.published.len(), window.min(N - 1));
            let published = kernel.total_seen;
            assert_eq!(
                Kernel::load_tail(&pool),
                start.wrapping_add(published as u16)
            );
            assert!(
                published > 21,
                "the tail wrapped ({published} publications)"
            );
        }
    }

    /// A raw pointer the simulated kernel thread may carry.
    struct KernelPtr<T>(*mut T);
    // SAFETY: the kernel thread touches the ring and the buffers only as the kernel does
    // (Acquire-load the tail, read published entries, write picked buffers), which is what the
    // test checks for data races.
    unsafe impl<T> Send for KernelPtr<T> {}

    /// The kernel on another thread, so Miri checks the ring protocol for data races: entries
    /// are read only after the Release/Acquire tail, picked buffers are written by the kernel
    /// and read by the lease only after the completion, and a slot is rewritten only after the
    /// kernel is done with it.
    #[test]
    fn kernel_thread_has_no_data_race() {
        const N: usize = 4;
        const SIZE: usize = 8;
        let receives: usize = if cfg!(miri) { 40 } else { 10_000 };
        let config = BufPoolConfig {
            recv_tier: RecvTier::ProvidedRing,
            user_reserve: 0,
        };
        let mut storage = new_storage::<N, SIZE>();
        let pool = BufPool::new(&mut *storage, config).unwrap();
        let ring = KernelPtr(pool.ring_addr());
        let bufs = KernelPtr(pool.h.bufs);
        let (cqe_tx, cqe_rx) = std::sync::mpsc::channel::<(u16, u32)>();
        let kernel = std::thread::spawn(move || {
            let (ring, bufs) = (ring, bufs);
            let tail_ptr = ring.0.wrapping_byte_add(TAIL_OFFSET).cast::<u16>();
            // SAFETY: the pool's tail, accessed only atomically; the pool outlives this thread.
            let tail = unsafe { AtomicU16::from_ptr(tail_ptr) };
            let mut head = 0u16;
            for n in 0..receives {
                while tail.load(Ordering::Acquire) == head {
                    std::thread::yield_now();
                }
                let e = ring.0.wrapping_add(usize::from(head) & (N - 1));
                // SAFETY: a published entry (below the Acquire-loaded tail); fields only.
                let (addr, len, bid) = unsafe {
                    (
                        (&raw const (*e).addr).read(),
                        (&raw const (*e).len).read(),
                        (&raw const (*e).bid).read(),
                    )
                };
                head = head.wrapping_add(1);
                let buf = bufs.0.wrapping_add(usize::from(bid) * SIZE);
                assert_eq!(addr, buf.addr() as u64);
                assert_eq!(len as usize, SIZE);
                let got = (n % SIZE) as u32 + 1;
                // SAFETY: the buffer was published and this kernel picked it; the pool lets no
                // one else touch it until the completion below.
                unsafe { buf.write_bytes(n as u8, got as usize) };
                cqe_tx.send((bid, got)).unwrap();
            }
        });
        for n in 0..receives {
            let (bid, len) = cqe_rx.recv().unwrap();
            // SAFETY: `bid` comes from a completion of the simulated kernel, once.
            let lease = unsafe { pool.lease_received(bid, len) }.unwrap();
            assert_eq!(lease.as_slice(), std::vec![n as u8; len as usize]);
            drop(lease); // republished at once: user_reserve is 0
        }
        kernel.join().unwrap();
        assert_eq!(pool.recv_available(), N);
    }

    /// Who has a buffer, in the model.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Owner {
        Recv,
        User,
        Leased,
        Raw,
    }

    fn count(model: &[Owner], owner: Owner) -> usize {
        model.iter().filter(|m| **m == owner).count()
    }

    /// Random receives (charged to random owners, to none, or to owners outside the table),
    /// user leases, drops, raw round trips and bad requests in both modes, against a model of
    /// where each buffer is and whom it is charged to: every buffer is leased and returned
    /// exactly once, the counters match, every owner's count equals its live leases plus raw
    /// ids, and everything comes back at the end.
    #[test]
    fn matches_a_model() {
        const N: usize = 8;
        const SIZE: usize = 16;
        const OWNERS: usize = 3;
        let seeds = if cfg!(miri) { 3 } else { 40 };
        let steps = if cfg!(miri) { 150 } else { 2000 };
        for seed in 1..=seeds {
            for mode in [RecvTier::ProvidedRing, RecvTier::FreeList] {
                let mut rng = XorShift::new(seed);
                let reserve = rng.below(N + 1) as u16;
                let config = BufPoolConfig {
                    recv_tier: mode,
                    user_reserve: reserve,
                };
                let mut storage = new_storage::<N, SIZE>();
                let mut counts = [u16::MAX; OWNERS];
                // The ring window: every buffer (0 means N) or fewer.
                let mut window = rng.below(N + 1);
                let pool =
                    BufPool::with_ring_window(&mut *storage, config, &mut counts, window).unwrap();
                if window == 0 {
                    window = N;
                }
                assert_eq!(pool.ring_window(), window);
                let mut kernel = Kernel::new(0);
                let mut model = [Owner::Recv; N];
                // Whom each buffer is charged to.
                let mut charged: [Option<u32>; N] = [None; N];
                for owner in &mut model[..usize::from(reserve)] {
                    *owner = Owner::User;
                }
                let mut leases: Vec<Lease<'_>> = Vec::new();
                let mut raws: Vec<(u16, u32)> = Vec::new();
                let mut returned: Vec<u16> = Vec::new();
                let mut high_water = 0;
                let give_back =
                    |model: &mut [Owner; N], charged: &mut [Option<u32>; N], id: u16| {
                        assert!(matches!(model[usize::from(id)], Owner::Leased | Owner::Raw));
                        charged[usize::from(id)] = None;
                        let user_free = model.iter().filter(|o| **o == Owner::User).count();
                        model[usize::from(id)] = if user_free < usize::from(reserve) {
                            Owner::User
                        } else {
                            Owner::Recv
                        };
                    };
                let take = |model: &mut [Owner; N], lease: &mut Lease<'_>, from: Owner| {
                    let id = usize::from(lease.id());
                    assert_eq!(
                        model[id], from,
                        "buffer {id} handed out from the wrong place"
                    );
                    model[id] = Owner::Leased;
                    // Tag the bytes so a shared buffer would show.
                    lease.buf_mut().fill(id as u8);
                    lease.set_len(SIZE).unwrap();
                };
                for _ in 0..steps {
                    if rng.below(64) == 0 {
                        // Widening publishes spares at once; narrowing changes nothing.
                        let want = rng.below(N + 2);
                        window = pool.widen_ring(want);
                        assert_eq!(window, pool.ring_window());
                        assert!(window >= want.min(N));
                    }
                    // Some(0..OWNERS): a tracked owner; Some(OWNERS): outside the table; None:
                    // the untagged call.
                    let who = rng.below(OWNERS + 2);
                    let owner = (who <= OWNERS).then_some(who as u32);
                    let unknown = owner == Some(OWNERS as u32);
                    let unknown_err = PoolError::UnknownOwner {
                        owner: OWNERS as u32,
                        owners: OWNERS,
                    };
                    match rng.below(8) {
                        0 | 1 => match mode {
                            RecvTier::ProvidedRing => {
                                kernel.observe(&pool);
                                match kernel.published.front().copied() {
                                    Some(bid) if unknown => {
                                        // A buffer the kernel could have filled, refused for its
                                        // owner alone: nothing changes.
                                        let before = pool.stats();
                                        // SAFETY: no real kernel; refused (asserted).
                                        let e = unsafe {
                                            pool.lease_received_by(bid, 1, OWNERS as u32)
                                        };
                                        assert_eq!(e.unwrap_err(), unknown_err);
                                        assert_eq!(pool.stats(), before);
                                    }
                                    Some(_) => {
                                        let bid = kernel.pick(&pool).unwrap();
                                        let len = rng.below(SIZE + 1) as u32;
                                        // SAFETY: picked by the simulated kernel.
                                        let l = unsafe {
                                            match owner {
                                                Some(o) => pool.lease_received_by(bid, len, o),
                                                None => pool.lease_received(bid, len),
                                            }
                                        };
                                        let mut l = l.unwrap();
                                        take(&mut model, &mut l, Owner::Recv);
                                        charged[usize::from(bid)] = owner;
                                        leases.push(l);
                                    }
                                    None => assert_eq!(count(&model, Owner::Recv), 0),
                                }
                            }
                            RecvTier::FreeList => {
                                let got = match owner {
                                    Some(o) => pool.try_take_recv_by(o),
                                    None => Ok(pool.try_take_recv()),
                                };
                                match got {
                                    Ok(Some(mut l)) => {
                                        assert!(!unknown);
                                        take(&mut model, &mut l, Owner::Recv);
                                        charged[usize::from(l.id())] = owner;
                                        leases.push(l);
                                    }
                                    Ok(None) => {
                                        assert!(!unknown);
                                        assert_eq!(count(&model, Owner::Recv), 0);
                                    }
                                    Err(e) => {
                                        assert!(unknown);
                                        assert_eq!(e, unknown_err);
                                    }
                                }
                            }
                        },
                        2 => match pool.try_lease_user() {
                            Ok(mut l) => {
                                take(&mut model, &mut l, Owner::User);
                                leases.push(l);
                            }
                            Err(e) => {
                                assert_eq!(count(&model, Owner::User), 0);
                                assert_eq!(
                                    e,
                                    PoolError::UserTierEmpty {
                                        user_reserve: reserve
                                    }
                                );
                            }
                        },
                        3 | 4 if !leases.is_empty() => {
                            let l = leases.swap_remove(rng.below(leases.len()));
                            assert_eq!(l.as_slice(), [l.id() as u8; SIZE], "bytes intact");
                            give_back(&mut model, &mut charged, l.id());
                            returned.push(l.id());
                            if rng.below(2) == 0 {
                                l.release()
                            } else {
                                drop(l)
                            }
                        }
                        5 if !leases.is_empty() => {
                            let l = leases.swap_remove(rng.below(leases.len()));
                            let raw = l.into_raw();
                            model[usize::from(raw.0)] = Owner::Raw;
                            raws.push(raw);
                        }
                        6 if !raws.is_empty() => {
                            let (id, len) = raws.swap_remove(rng.below(raws.len()));
                            if rng.below(2) == 0 {
                                pool.release_raw(id).unwrap();
                                give_back(&mut model, &mut charged, id);
                                returned.push(id);
                                // A second return is refused.
                                if model[usize::from(id)] != Owner::Raw {
                                    assert!(pool.release_raw(id).is_err());
                                }
                            } else {
                                let l = pool.lease_from_raw(id, len).unwrap();
                                model[usize::from(id)] = Owner::Leased;
                                assert_eq!(l.owner(), charged[usize::from(id)], "inherited");
                                leases.push(l);
                            }
                        }
                        _ => {
                            // Bad requests change nothing.
                            let id = rng.below(N + 2) as u16;
                            let state = model.get(usize::from(id)).copied();
                            if state != Some(Owner::Raw) {
                                assert!(pool.release_raw(id).is_err());
                            }
                            if mode == RecvTier::ProvidedRing && state != Some(Owner::Recv) {
                                // SAFETY: not in the receive tier, so the pool refuses it
                                // before anything could alias (asserted).
                                assert!(unsafe { pool.lease_received(id, 0) }.is_err());
                            }
                            if mode == RecvTier::ProvidedRing
                                && state == Some(Owner::Recv)
                                && pool.state()[usize::from(id)].get() == State::Spare
                            {
                                // SAFETY: a spare buffer is not in the ring, so the pool
                                // refuses it (asserted): no kernel could have filled it.
                                let e = unsafe { pool.lease_received(id, 0) }.unwrap_err();
                                assert_eq!(e, PoolError::NotInRecvTier { id });
                            }
                        }
                    }
                    // Counters and per-buffer states agree with the model.
                    let leased = count(&model, Owner::Leased) + count(&model, Owner::Raw);
                    high_water = high_water.max(leased);
                    let s = pool.stats();
                    assert_eq!(s.recv_tier, count(&model, Owner::Recv));
                    assert_eq!(s.user_free, count(&model, Owner::User));
                    assert_eq!(s.leased, leased);
                    assert_eq!(s.leased_high_water, high_water);
                    assert!(s.user_free <= usize::from(reserve));
                    for (id, owner) in model.iter().enumerate() {
                        let got = pool.state()[id].get();
                        let ok = match owner {
                            // Published, or (ring mode) held back on the spare stack.
                            Owner::Recv => {
                                got == State::Recv
                                    || (mode == RecvTier::ProvidedRing && got == State::Spare)
                            }
                            Owner::User => got == State::UserFree,
                            Owner::Leased => got == State::Leased,
                            Owner::Raw => got == State::Raw,
                        };
                        assert!(ok, "buffer {id}: {got:?} for {owner:?}");
                    }
                    // Every owner's count is its live leases plus raw ids; owners outside the
                    // table count nothing.
                    for o in 0..OWNERS as u32 + 2 {
                        let want = charged.iter().filter(|c| **c == Some(o)).count();
                        assert_eq!(usize::from(pool.owner_count(o)), want, "owner {o}");
                    }
                    for l in &leases {
                        assert_eq!(l.owner(), charged[usize::from(l.id())]);
                    }
                    for (id, c) in charged.iter().enumerate() {
                        if c.is_some() {
                            assert!(matches!(model[id], Owner::Leased | Owner::Raw));
                        }
                    }
                    if mode == RecvTier::ProvidedRing {
                        // The ring holds as many as the window allows, the rest are spare.
                        kernel.observe(&pool);
                        let recv = count(&model, Owner::Recv);
                        assert_eq!(kernel.published.len(), recv.min(window));
                        assert_eq!(pool.ring_published(), recv.min(window));
                        let in_ring = (0..N)
                            .filter(|&id| pool.state()[id].get() == State::Recv)
                            .count();
                        assert_eq!(in_ring, recv.min(window));
                    } else {
                        assert_eq!(pool.ring_published(), 0);
                    }
                }
                // Everything comes back.
                let out = leases.len() + raws.len();
                drop(leases);
                for (id, _) in raws {
                    pool.release_raw(id).unwrap();
                }
                let s = pool.stats();
                assert_eq!(s.leased, 0);
                assert_eq!(s.recv_tier + s.user_free, N);
                assert_eq!(s.user_free, usize::from(reserve).min(s.user_free + out));
                if mode == RecvTier::ProvidedRing {
                    kernel.observe(&pool);
                    assert_eq!(kernel.published.len(), s.recv_tier.min(window));
                }
                assert!(returned.len() + out >= s.leased_high_water);
                assert!((0..OWNERS as u32).all(|o| pool.owner_count(o) == 0));
                assert_eq!(counts, [0; OWNERS], "the counts table itself");
            }
        }
    }
}
