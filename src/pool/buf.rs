//! [`BufPool`]: fixed-size buffers in caller memory, in a receive tier and a user tier, handed
//! out as [`Lease`]s that return their buffer exactly once (see [`BufPool`]).

use core::cell::Cell;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU16, Ordering};
use core::{fmt, mem, slice};

/// The most buffers a pool may have: the kernel's limit on provided-buffer ring entries.
pub const MAX_BUFFERS: usize = 32768;

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
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum State {
    /// In the receive tier: published in the ring, or on the receive free list.
    Recv,
    /// On the user free list.
    UserFree,
    /// Owned by a live [`Lease`].
    Leased,
    /// Detached by [`Lease::into_raw`]; comes back through [`BufPool::release_raw`].
    Raw,
}

/// Storage for a [`BufPool`] of `N` buffers of `SIZE` bytes, with a `const fn new` so it can
/// live in a `static`.
///
/// Holds the provided-buffer ring (`N` [`BufRingEntry`]s, page-aligned), the buffer bytes, the
/// free-list index storage and the per-buffer state. `N` must be a power of two no larger than
/// [`MAX_BUFFERS`], and `SIZE` must be in `1..=u32::MAX`: other values fail to compile when
/// [`BufPoolStorage::new`] is instantiated (a post-monomorphization error, so the mistake shows
/// at build time rather than at start-up). The ring is present in free-list mode too (unused,
/// `16 * N` bytes).
///
/// ```compile_fail
/// // 3 is not a power of two: this does not build.
/// let storage = ringlet::pool::BufPoolStorage::<3, 64>::new();
/// ```
#[repr(C)]
pub struct BufPoolStorage<const N: usize, const SIZE: usize> {
    ring: RingMem<N>,
    bufs: [[u8; SIZE]; N],
    /// Two stacks of buffer ids: the user free list grows up from index 0, the receive free
    /// list (free-list mode) grows down from index `N - 1`. They never meet: each buffer is on
    /// at most one.
    free: [u16; N],
    state: [State; N],
}

impl<const N: usize, const SIZE: usize> BufPoolStorage<N, SIZE> {
    const VALID: () = assert!(
        N.is_power_of_two() && N <= MAX_BUFFERS && SIZE > 0 && SIZE <= u32::MAX as usize,
        "BufPoolStorage: N must be a power of two <= 32768 and SIZE in 1..=u32::MAX"
    );

    /// Zeroed storage. Fails to compile unless `N` is a power of two `<= 32768` and `SIZE` is
    /// in `1..=u32::MAX`.
    pub const fn new() -> Self {
        let () = Self::VALID;
        BufPoolStorage {
            ring: RingMem([const { BufRingEntry::ZERO }; N]),
            bufs: [[0; SIZE]; N],
            free: [0; N],
            state: [State::UserFree; N],
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
    /// [`Lease`] owns it.
    NotRaw {
        /// The id given.
        id: u16,
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
                "buffer {id} is not a raw lease: already returned, or owned by a live Lease"
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
    /// Buffers out: live leases plus raw ids not yet returned.
    pub leased: usize,
    /// The most buffers ever out at once.
    pub leased_high_water: usize,
}

/// `N` buffers of `SIZE` bytes in caller memory, in a receive tier and a user tier.
///
/// See the [`pool` module documentation](super) for the tiers, the refill policy and why the
/// storage must outlive every kernel operation.
///
/// Single-threaded: the pool uses `Cell`s, so it is neither `Sync` nor `Send`, and a [`Lease`]
/// (which borrows it) is neither either.
///
/// # Buffer states
///
/// Every buffer is in exactly one state, kept per buffer in the pool:
///
/// | state   | where                                          | who may touch the bytes      |
/// |---------|------------------------------------------------|------------------------------|
/// | receive | published in the ring / on the recv free list  | the kernel (ring) / nobody   |
/// | user    | on the user free list                          | nobody                       |
/// | leased  | owned by exactly one live [`Lease`]            | that lease                   |
/// | raw     | detached from its lease by [`Lease::into_raw`] | nobody through the pool      |
///
/// A buffer enters *leased* only when a `Lease` for it is created, and leaves it only when that
/// lease is dropped (or released, or turned into a raw id), so at most one `Lease` names a
/// buffer at any time: that is what makes [`Lease::as_mut_slice`] exclusive. A raw id goes back
/// with [`BufPool::release_raw`], which accepts only *raw* buffers, so returning twice (or
/// returning the buffer of a live lease) is an error, not corruption.
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
pub struct BufPool<'a> {
    /// Entry 0 of the provided-buffer ring (`N` entries).
    ring: NonNull<BufRingEntry>,
    /// The first byte of buffer 0; buffer `i` starts `i * buf_size` bytes later.
    bufs: NonNull<u8>,
    buf_size: usize,
    free: &'a [Cell<u16>],
    state: &'a [Cell<State>],
    mode: RecvTier,
    user_reserve: u16,
    /// The user free list is `free[..user_len]`.
    user_len: Cell<u16>,
    /// Buffers in the receive tier. In free-list mode the receive free list is
    /// `free[total - recv_len..]`; in ring mode these are in the ring.
    recv_len: Cell<u16>,
    /// The pool's copy of the ring tail (the last value stored).
    tail: Cell<u16>,
    leased: Cell<u16>,
    leased_high_water: Cell<u16>,
    /// The pool has exclusive use of the storage (ring and bytes) for `'a`.
    _storage: PhantomData<&'a mut [u8]>,
}

impl<'a> BufPool<'a> {
    /// A pool over `storage`. The first `user_reserve` buffers go to the user tier, the rest to
    /// the receive tier (published to the ring at once in [`RecvTier::ProvidedRing`] mode).
    ///
    /// The ring is reset: its tail starts at 0, matching the kernel's head when the ring is
    /// registered. Register the ring (see [`BufPool::ring_addr`]) only after the pool is built,
    /// and unregister it before the pool is dropped.
    ///
    /// # Errors
    ///
    /// [`PoolError::ReserveTooLarge`] if `user_reserve > N`.
    pub fn new<const N: usize, const SIZE: usize>(
        storage: &'a mut BufPoolStorage<N, SIZE>,
        config: BufPoolConfig,
    ) -> Result<BufPool<'a>, PoolError> {
        Self::with_initial_tail(storage, config, 0)
    }

    /// [`BufPool::new`], with the ring's tail starting at `initial_tail` (tests start near the
    /// `u16` wrap).
    fn with_initial_tail<const N: usize, const SIZE: usize>(
        storage: &'a mut BufPoolStorage<N, SIZE>,
        config: BufPoolConfig,
        initial_tail: u16,
    ) -> Result<BufPool<'a>, PoolError> {
        let () = BufPoolStorage::<N, SIZE>::VALID;
        if usize::from(config.user_reserve) > N {
            return Err(PoolError::ReserveTooLarge {
                user_reserve: config.user_reserve,
                total: N,
            });
        }
        let BufPoolStorage {
            ring,
            bufs,
            free,
            state,
        } = storage;
        let pool = BufPool {
            ring: NonNull::from(&mut ring.0).cast(),
            bufs: NonNull::from(bufs).cast(),
            buf_size: SIZE,
            free: Cell::from_mut(&mut free[..]).as_slice_of_cells(),
            state: Cell::from_mut(&mut state[..]).as_slice_of_cells(),
            mode: config.recv_tier,
            user_reserve: config.user_reserve,
            user_len: Cell::new(0),
            recv_len: Cell::new(0),
            tail: Cell::new(initial_tail),
            leased: Cell::new(0),
            leased_high_water: Cell::new(0),
            _storage: PhantomData,
        };
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
        self.mode
    }

    /// The configured user reserve.
    pub fn user_reserve(&self) -> u16 {
        self.user_reserve
    }

    /// The number of buffers (`N`).
    pub fn total(&self) -> usize {
        self.state.len()
    }

    /// The size of each buffer in bytes (`SIZE`).
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Buffers in the receive tier: in ring mode, published and not yet answered by a
    /// completion; in free-list mode, ready for [`BufPool::try_take_recv`].
    pub fn recv_available(&self) -> usize {
        usize::from(self.recv_len.get())
    }

    /// Free buffers in the user tier, ready for [`BufPool::try_lease_user`].
    pub fn user_available(&self) -> usize {
        usize::from(self.user_len.get())
    }

    /// Buffers out: live leases plus raw ids not yet returned.
    pub fn leased(&self) -> usize {
        usize::from(self.leased.get())
    }

    /// All counters at once.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            total: self.total(),
            recv_tier: self.recv_available(),
            user_free: self.user_available(),
            leased: self.leased(),
            leased_high_water: usize::from(self.leased_high_water.get()),
        }
    }

    /// The provided-buffer ring's address, for `IORING_REGISTER_PBUF_RING` (`ring_addr`). It is
    /// page-aligned and holds [`BufPool::ring_entries`] entries. The buffer group id is the
    /// registrar's choice; the pool does not need it.
    ///
    /// Only meaningful in [`RecvTier::ProvidedRing`] mode (in free-list mode nothing is ever
    /// published). Registration contract (for the `unsafe` registration code in `sys`): register
    /// after building the pool and unregister before dropping it; the kernel reads entries and
    /// writes into the buffers they name until then, which the storage's lifetime must cover.
    /// The pool itself never creates a reference to the ring or to a buffer in the receive tier.
    pub fn ring_addr(&self) -> *mut BufRingEntry {
        self.ring.as_ptr()
    }

    /// The number of ring entries (`N`, a power of two), for `IORING_REGISTER_PBUF_RING`
    /// (`ring_entries`).
    pub fn ring_entries(&self) -> u32 {
        self.total() as u32
    }

    /// Takes the buffer a completion named (io_uring: the `bid` of a completion with
    /// `IORING_CQE_F_BUFFER`, `len` its byte count) out of the receive tier, as a lease of
    /// `len` bytes.
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
    pub unsafe fn lease_received(&self, bid: u16, len: u32) -> Result<Lease<'_>, PoolError> {
        if self.mode != RecvTier::ProvidedRing {
            return Err(PoolError::WrongMode { mode: self.mode });
        }
        self.check_id(bid)?;
        self.check_len(len as usize)?;
        if self.state[usize::from(bid)].get() != State::Recv {
            return Err(PoolError::NotInRecvTier { id: bid });
        }
        self.recv_len.set(self.recv_len.get() - 1);
        Ok(self.lease(bid, len))
    }

    /// Takes a buffer from the receive free list (free-list mode), as a lease of length 0: fill
    /// [`Lease::buf_mut`], then [`Lease::set_len`]. `None` when the receive tier is empty, and
    /// always in ring mode (the kernel picks ring buffers; see [`BufPool::lease_received`]).
    pub fn try_take_recv(&self) -> Option<Lease<'_>> {
        if self.mode != RecvTier::FreeList || self.recv_len.get() == 0 {
            return None;
        }
        let n = self.recv_len.get();
        let id = self.free[self.total() - usize::from(n)].get();
        self.recv_len.set(n - 1);
        Some(self.lease(id, 0))
    }

    /// Takes a buffer from the user tier (pipe segments, reassembly, carry buffers), as a lease
    /// of length 0.
    ///
    /// # Errors
    ///
    /// [`PoolError::UserTierEmpty`] when every user-tier buffer is out; it names the setting to
    /// raise.
    pub fn try_lease_user(&self) -> Result<Lease<'_>, PoolError> {
        let n = self.user_len.get();
        if n == 0 {
            return Err(PoolError::UserTierEmpty {
                user_reserve: self.user_reserve,
            });
        }
        let id = self.free[usize::from(n - 1)].get();
        self.user_len.set(n - 1);
        Ok(self.lease(id, 0))
    }

    /// Returns a buffer detached by [`Lease::into_raw`] to the tier the refill policy picks.
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

    /// Turns a buffer detached by [`Lease::into_raw`] back into a [`Lease`] of `len` bytes.
    ///
    /// # Errors
    ///
    /// As [`BufPool::release_raw`], plus [`PoolError::LenTooLarge`].
    pub fn lease_from_raw(&self, id: u16, len: u32) -> Result<Lease<'_>, PoolError> {
        self.check_raw(id)?;
        self.check_len(len as usize)?;
        self.state[usize::from(id)].set(State::Leased);
        Ok(Lease {
            pool: self,
            id,
            len,
        })
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
        if len <= self.buf_size {
            Ok(())
        } else {
            Err(PoolError::LenTooLarge {
                len,
                capacity: self.buf_size,
            })
        }
    }

    fn check_raw(&self, id: u16) -> Result<(), PoolError> {
        self.check_id(id)?;
        if self.state[usize::from(id)].get() == State::Raw {
            Ok(())
        } else {
            Err(PoolError::NotRaw { id })
        }
    }

    /// Makes the lease for a buffer just taken off a free list or out of the ring.
    fn lease(&self, id: u16, len: u32) -> Lease<'_> {
        self.state[usize::from(id)].set(State::Leased);
        let leased = self.leased.get() + 1;
        self.leased.set(leased);
        if leased > self.leased_high_water.get() {
            self.leased_high_water.set(leased);
        }
        Lease {
            pool: self,
            id,
            len,
        }
    }

    /// The refill policy: a returned buffer goes to the user tier while it holds fewer than
    /// `user_reserve` free buffers, otherwise to the receive tier.
    fn give_back(&self, id: u16) {
        debug_assert!(matches!(
            self.state[usize::from(id)].get(),
            State::Leased | State::Raw
        ));
        self.leased.set(self.leased.get() - 1);
        if self.user_len.get() < self.user_reserve {
            self.push_user(id);
        } else {
            self.push_recv(id);
            self.store_tail();
        }
    }

    fn push_user(&self, id: u16) {
        let n = self.user_len.get();
        self.free[usize::from(n)].set(id);
        self.user_len.set(n + 1);
        self.state[usize::from(id)].set(State::UserFree);
    }

    /// Puts `id` in the receive tier. In ring mode the entry is written but the kernel sees it
    /// only after [`BufPool::store_tail`].
    fn push_recv(&self, id: u16) {
        let n = self.recv_len.get() + 1;
        self.recv_len.set(n);
        self.state[usize::from(id)].set(State::Recv);
        match self.mode {
            RecvTier::FreeList => self.free[self.total() - usize::from(n)].set(id),
            RecvTier::ProvidedRing => self.write_entry(id),
        }
    }

    /// Writes `id`'s entry at the tail slot and advances the pool's copy of the tail.
    fn write_entry(&self, id: u16) {
        let tail = self.tail.get();
        let slot = usize::from(tail) & (self.total() - 1);
        let addr = self.buf_ptr(id).expose_provenance() as u64;
        let entry = self.ring.as_ptr().wrapping_add(slot);
        // SAFETY: `slot < N` and `ring` points to the N entries of the storage the pool borrows
        // exclusively for 'a, so `entry` is in bounds and valid for writes. No Rust reference to
        // the ring exists. The kernel reads only entries in [its head, published tail); this
        // slot is outside that range: at most N buffers are in the receive tier and this one
        // was not among them (it is being returned), so of the N publications at positions
        // [tail - N, tail) at most N - 1 are unanswered, at least one was answered by a
        // completion, and as the kernel reads positions in order it has read position
        // tail - N, this slot's previous use. (During `new` no kernel reads the ring yet: it is
        // registered only after the pool is built.) Only `addr`, `len` and `bid` are written, never
        // `resv`: in entry 0 those bytes are the tail, which is accessed only atomically.
        unsafe {
            (&raw mut (*entry).addr).write(addr);
            (&raw mut (*entry).len).write(self.buf_size as u32);
            (&raw mut (*entry).bid).write(id);
        }
        self.tail.set(tail.wrapping_add(1));
    }

    /// Publishes the entries written so far: stores the tail with `Release`, so a kernel that
    /// loads it with `Acquire` sees their contents.
    fn store_tail(&self) {
        if self.mode != RecvTier::ProvidedRing {
            return;
        }
        self.tail_atomic().store(self.tail.get(), Ordering::Release);
    }

    fn tail_atomic(&self) -> &AtomicU16 {
        // SAFETY: the tail is the u16 at byte offset 14 of entry 0 (checked against rustix's
        // `buf_ring_tail_struct` in `layout`), inside the ring the pool borrows for 'a, which
        // outlives `&self`; offset 14 of an 8-aligned entry is 2-aligned. Those bytes are
        // accessed only through this `AtomicU16` while the pool exists (entries are written
        // field by field, skipping `resv`), and by the kernel only atomically, so no
        // non-atomic or mixed-size access races with it.
        unsafe { AtomicU16::from_ptr(self.ring.as_ptr().byte_add(TAIL_OFFSET).cast::<u16>()) }
    }

    /// The first byte of buffer `id` (`id < N`).
    fn buf_ptr(&self, id: u16) -> *mut u8 {
        // `wrapping_add` keeps this safe; for `id < N` the result is in bounds of the storage.
        self.bufs
            .as_ptr()
            .wrapping_add(usize::from(id) * self.buf_size)
    }
}

impl fmt::Debug for BufPool<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufPool")
            .field("mode", &self.mode)
            .field("buf_size", &self.buf_size)
            .field("stats", &self.stats())
            .finish()
    }
}

/// One leased buffer: an id, a length, and the pool it returns to.
///
/// The lease has exclusive access to its buffer. Dropping it (or [`Lease::release`]) returns
/// the buffer exactly once, to the tier the refill policy picks; [`Lease::into_raw`] detaches it
/// instead. Forgetting a lease (`mem::forget`) leaks its buffer: it stays counted as leased.
/// Not `Send` (its drop must run on the pool's thread; see [`BufPool`]).
pub struct Lease<'a> {
    pool: &'a BufPool<'a>,
    len: u32,
    id: u16,
}

static_assertions::const_assert!(mem::size_of::<Lease<'static>>() <= 2 * mem::size_of::<usize>());
static_assertions::const_assert!(
    mem::size_of::<Option<Lease<'static>>>() == mem::size_of::<Lease<'static>>()
);
static_assertions::assert_not_impl_any!(Lease<'static>: Send, Sync, Clone);
static_assertions::assert_not_impl_any!(BufPool<'static>: Send, Sync);

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
        self.pool.buf_size
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
    pub fn into_raw(self) -> (u16, u32) {
        let this = mem::ManuallyDrop::new(self);
        this.pool.state[usize::from(this.id)].set(State::Raw);
        (this.id, this.len)
    }

    /// The first byte of this lease's buffer: valid for reads and writes of `capacity()` bytes,
    /// and not accessed by anyone but this lease while it lives.
    ///
    /// Why: the pointer is in bounds because `id < N` (a lease is only made for a checked id)
    /// and the pool borrows the storage's bytes exclusively for 'a, which this lease's borrow of
    /// the pool cannot outlive. The buffer is in the *leased* state, entered only when this
    /// lease was created and left only when it is dropped or turned raw, so no other lease
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
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::test_rng::XorShift;
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
                assert_eq!(pool.state[usize::from(bid)].get(), State::Recv);
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

    /// The kernel's view of ring mode: every buffer it picks was published once, with the
    /// right address and length, and comes back through the ring after its lease is dropped,
    /// across the wrap of the u16 tail.
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
        let mut storage = new_storage::<N, 16>();
        let pool = BufPool::with_initial_tail(&mut *storage, config, start).unwrap();
        let mut kernel = Kernel::new(start);
        kernel.observe(&pool);
        assert_eq!(kernel.published.len(), N - 1);
        let mut rng = XorShift::new(7);
        let mut held: VecDeque<Lease<'_>> = VecDeque::new();
        for round in 0..rounds {
            // Receive into up to three buffers, then return some leases in random order.
            for _ in 0..rng.below(4) {
                let Some(bid) = kernel.pick(&pool) else { break };
                let len = rng.below(17) as u32;
                // SAFETY: `bid` was picked by the simulated kernel; no real kernel is involved.
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
            assert_eq!(s.recv_tier, kernel.published.len());
            assert_eq!(s.recv_tier + s.user_free + s.leased, N);
        }
        held.clear();
        kernel.observe(&pool);
        assert_eq!(kernel.published.len(), N - 1);
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
        let bufs = KernelPtr(pool.bufs.as_ptr());
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

    /// Random receives, user leases, drops, raw round trips and bad requests in both modes,
    /// against a model of where each buffer is: every buffer is leased and returned exactly
    /// once, the counters match, and everything comes back at the end.
    #[test]
    fn matches_a_model() {
        const N: usize = 8;
        const SIZE: usize = 16;
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
                let pool = BufPool::new(&mut *storage, config).unwrap();
                let mut kernel = Kernel::new(0);
                let mut model = [Owner::Recv; N];
                for owner in &mut model[..usize::from(reserve)] {
                    *owner = Owner::User;
                }
                let mut leases: Vec<Lease<'_>> = Vec::new();
                let mut raws: Vec<(u16, u32)> = Vec::new();
                let mut returned: Vec<u16> = Vec::new();
                let mut high_water = 0;
                let give_back = |model: &mut [Owner; N], id: u16| {
                    assert!(matches!(model[usize::from(id)], Owner::Leased | Owner::Raw));
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
                    match rng.below(8) {
                        0 | 1 => match mode {
                            RecvTier::ProvidedRing => {
                                if let Some(bid) = kernel.pick(&pool) {
                                    let len = rng.below(SIZE + 1) as u32;
                                    // SAFETY: picked by the simulated kernel.
                                    let mut l = unsafe { pool.lease_received(bid, len) }.unwrap();
                                    take(&mut model, &mut l, Owner::Recv);
                                    leases.push(l);
                                } else {
                                    assert_eq!(count(&model, Owner::Recv), 0);
                                }
                            }
                            RecvTier::FreeList => match pool.try_take_recv() {
                                Some(mut l) => {
                                    take(&mut model, &mut l, Owner::Recv);
                                    leases.push(l);
                                }
                                None => assert_eq!(count(&model, Owner::Recv), 0),
                            },
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
                            give_back(&mut model, l.id());
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
                                give_back(&mut model, id);
                                returned.push(id);
                                // A second return is refused.
                                if model[usize::from(id)] != Owner::Raw {
                                    assert!(pool.release_raw(id).is_err());
                                }
                            } else {
                                let l = pool.lease_from_raw(id, len).unwrap();
                                model[usize::from(id)] = Owner::Leased;
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
                        let want = match owner {
                            Owner::Recv => State::Recv,
                            Owner::User => State::UserFree,
                            Owner::Leased => State::Leased,
                            Owner::Raw => State::Raw,
                        };
                        assert_eq!(pool.state[id].get(), want, "buffer {id}");
                    }
                    if mode == RecvTier::ProvidedRing {
                        kernel.observe(&pool);
                        assert_eq!(kernel.published.len(), count(&model, Owner::Recv));
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
                    assert_eq!(kernel.published.len(), s.recv_tier);
                }
                assert!(returned.len() + out >= s.leased_high_water);
            }
        }
    }
}
