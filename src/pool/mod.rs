//! Storage without allocation: slabs, receive buffers and write slabs in caller memory.
//!
//! Nothing here allocates or makes a system call. Each container works over memory the caller
//! hands in, sized by const generics on a *storage* type only ([`SlabStorage`],
//! [`BufPoolStorage`], [`WriteSlabs`]; or a plain `[u8; N]` and a [`RingState`] for one
//! [`ByteRing`]); the containers themselves work on slices and pointers, so capacities do not
//! leak into every signature.
//!
//! - [`Slab`]: values addressed by generational [`Key`]s. A stale key (the value was removed,
//!   the slot maybe reused) is a [`StaleKey`] error, never an alias of the new occupant.
//! - [`BufPool`]: fixed-size receive buffers in two tiers, handed out as [`Lease`]s, with
//!   optional per-owner counts of the buffers out (a per-connection lease quota). The pool's
//!   state lives in its storage; a `BufPool` is a `Copy` handle to it.
//! - [`ByteRing`]: a connection's write slab; [`SlabArena`]: every connection's write slab in
//!   one [`WriteSlabs`] storage.
//! - [`SendLease`], [`ReturnHandle`], [`ReturnQueue`]: a lease that may travel to another
//!   thread and return its buffer from there, through a lock-free return queue, waking the loop
//!   (see *Returning buffers from other threads* below).
//! - [`ZeroInit`], [`StaticSlot`], [`init_zeroed`] and (feature `std`) `leak_zeroed`: storage
//!   made in place, never on the stack; [`impl_zero_init!`](crate::impl_zero_init) makes a
//!   struct of such storage `ZeroInit` without `unsafe` at the call site.
//!
//! Every full container says so with an error (or hands the value back), never a panic, and the
//! errors name the capacity or setting to raise.
//!
//! # The two buffer tiers
//!
//! A [`BufPool`] holds `N` buffers of `SIZE` bytes, each in one of two tiers while it is free:
//!
//! - The **receive tier** holds the buffers receives land in. With io_uring
//!   ([`RecvTier::ProvidedRing`]) they are published in a provided-buffer ring that lives in the
//!   pool's storage; the kernel picks one per receive, and the completion names it
//!   ([`BufPool::lease_received`]). A published buffer cannot be taken back: it returns only
//!   through a completion. A pool built with [`BufPool::with_ring_window`] publishes only a
//!   window of them and keeps the rest on a spare stack that refills the ring most recently
//!   returned first, so receives reuse a few hot buffers (the kernel takes ring entries in
//!   order). With epoll ([`RecvTier::FreeList`]) they sit on a free list (last in, first out),
//!   and the backend takes one ([`BufPool::try_take_recv`]) before each read.
//! - The **user tier** is a free list for everything else that needs a buffer: pipe segments,
//!   reassembly of fragmented frames, a connection's carry buffer
//!   ([`BufPool::try_lease_user`]). Keeping it apart means receives cannot starve it, and it
//!   cannot starve receives beyond its reserve.
//!
//! # Refill policy
//!
//! [`BufPoolConfig::user_reserve`] sets the user tier's share. At construction the first
//! `user_reserve` buffers go to the user tier and the rest to the receive tier. Afterwards a
//! returned buffer goes to the user tier while the user tier holds fewer than `user_reserve`
//! free buffers, and to the receive tier otherwise. So the user tier is topped up first, up to
//! its reserve, and everything beyond the reserve keeps the kernel supplied.
//!
//! # Storage in place
//!
//! The storage types have `const fn new`, so they can live in `static`s, but a `new()` value is
//! built where it is called, and big storage (megabytes of buffers) overflows a stack. So every
//! storage type is also [`ZeroInit`]: all-zero bytes is a valid, empty value, the same one
//! `new()` builds, and the containers' constructors need nothing else. A
//! `static StaticSlot<..>` is all-zero and lands in `.bss` (no bytes in the binary, no page
//! touched until used), and [`StaticSlot::take`] hands out its `&'static mut` once, without
//! `unsafe`; [`init_zeroed`] zero-fills memory the caller has;
//! [`sys::mem::map_zeroed`](crate::sys::mem::map_zeroed) maps fresh zero pages that become
//! resident only when used (the way for big storage sized at start-up); `leak_zeroed`
//! (feature `std`) allocates zeroed memory once and leaks it.
//!
//! # Exactly once
//!
//! A [`Lease`] is a buffer id, a length and a handle to its pool. It is not `Clone`, and it
//! returns its buffer exactly once: when dropped (or [`Lease::release`]d). The pool tracks a
//! state per buffer (receive tier, user tier, leased, raw), so a buffer is never on two free
//! lists, never published twice and never leased twice. [`Lease::into_raw`] detaches the buffer
//! as a plain id (for the cross-thread return queue); [`BufPool::release_raw`] takes such an id
//! back once and reports a second return as an error instead of corrupting the free lists.
//!
//! A pool with an owner table ([`BufPool::with_owners`]) charges a buffer to the owner a lease
//! was made for ([`BufPool::lease_received_by`], [`BufPool::try_take_recv_by`]) and uncharges it
//! exactly once, when the buffer comes back; a raw id stays charged until it is released.
//!
//! # Returning buffers from other threads
//!
//! A pool and its leases belong to the loop's thread (a [`Lease`]'s drop updates the pool's
//! single-threaded state). To hand a received buffer to another thread, the loop turns the lease
//! into a [`SendLease`] with [`ReturnHandle::send`]: the buffer becomes *sent*, the send lease
//! owns its bytes and is `Send`, and dropping it on any thread pushes the buffer id onto the
//! handle's [`ReturnQueue`] (lock-free; a link per buffer, so it cannot be full) and notifies
//! the loop through its [`WakeSignal`](crate::sync::WakeSignal), calling
//! [`Wake::wake`](crate::sync::Wake) (an eventfd write) only if the loop may be asleep. No
//! lock, no allocation, and on the loop's side nothing that can block.
//!
//! The loop, every turn, waits only through
//! [`WakeSignal::park`](crate::sync::WakeSignal::park) and then calls
//! [`ReturnHandle::drain`], which takes every returned buffer back into the pool by the refill
//! policy (and uncharges its owner); receives paused for lack of buffers can then be re-armed.
//! The protocol and why it loses no buffer and no wake-up are in [`sync`](crate::sync) and on
//! [`ReturnQueue`]; the loom models in `loom-tests/` check them.
//!
//! The queue's storage ([`ReturnQueueStorage`], `N` at least the pool's size) is borrowed
//! exclusively by the [`ReturnHandle`], so only send leases of that pool can push onto it, and a
//! sent buffer can come back only through it: a buffer another thread uses is never handed out,
//! published to the kernel or released by the loop meanwhile.
//!
//! # Memory that outlives kernel operations
//!
//! The kernel reads and writes some of this memory asynchronously, outside Rust's view: the
//! provided-buffer ring and the buffers published in it (written by receives at any time), and
//! the staged bytes of a [`ByteRing`] while a send is in flight. Hence:
//!
//! - The containers hold raw pointers into their storage (with a borrow of it for `'a`: a
//!   `PhantomData`, or for a [`BufPool`] a reference to the header in the storage that holds
//!   those pointers), and create Rust references only to memory the kernel is not using: a
//!   [`Lease`]'s buffer (which left the receive tier through a completion) and a [`ByteRing`]'s
//!   free region. No reference to the ring, to a receive-tier buffer or to a whole write slab is
//!   ever made.
//! - The storage must outlive every kernel operation on it, which a borrow checker cannot see:
//!   a pool's storage must stay valid while its ring is registered, and a write slab while a
//!   send from it is in flight. The event loop takes `&'static mut` storage for this (see
//!   DESIGN.md, Memory), registers the ring only after the pool is built, and cancels and
//!   drains every operation before storage could go away.
//! - The ring tail is published with a `Release` store, so the kernel's `Acquire` load of the
//!   tail sees the entries written before it.
//!
//! # Example
//!
//! ```
//! use core::mem::MaybeUninit;
//! use ringlet::pool::{
//!     BufPool, BufPoolConfig, BufPoolStorage, ByteRing, RecvTier, RingState, SlabStorage,
//!     WriteSlabs, init_zeroed,
//! };
//!
//! // Connections in a slab: the key is known before the value is built.
//! let mut conns = SlabStorage::<(u32, &str), 64>::new();
//! let mut conns = conns.slab();
//! let key = conns.try_insert_with(|key| (key.index(), "peer")).unwrap();
//! assert_eq!(conns.get(key).unwrap().1, "peer");
//! conns.remove(key).unwrap();
//! assert!(conns.get(key).is_err()); // stale, never an alias
//!
//! // Receive buffers, epoll style: take one, read into it, lease it to the handler.
//! let mut storage = BufPoolStorage::<8, 2048>::new();
//! let config = BufPoolConfig { recv_tier: RecvTier::FreeList, user_reserve: 2 };
//! let pool = BufPool::new(&mut storage, config).unwrap();
//! let mut lease = pool.try_take_recv().unwrap();
//! lease.buf_mut()[..5].copy_from_slice(b"hello"); // stands in for read(2)
//! lease.set_len(5).unwrap();
//! assert_eq!(lease.as_slice(), b"hello");
//! drop(lease); // back to the pool, exactly once
//! assert_eq!(pool.stats().leased, 0);
//!
//! // With per-connection counts (a lease quota): a lease charged to connection 1.
//! let mut counts = [0u16; 64];
//! let pool = BufPool::with_owners(&mut storage, config, &mut counts).unwrap();
//! let lease = pool.try_take_recv_by(1).unwrap().expect("a free buffer");
//! assert_eq!((lease.owner(), pool.owner_count(1)), (Some(1), 1));
//! drop(lease);
//! assert_eq!(pool.owner_count(1), 0);
//!
//! // A write slab: stage, send what `staged()` shows, consume what was sent.
//! let mut slab = [0u8; 16];
//! let mut state = RingState::new();
//! let mut out = ByteRing::new(&mut slab, &mut state);
//! out.append(b"PING\r\n").unwrap();
//! assert_eq!(out.staged().0, b"PING\r\n");
//! out.consume(6).unwrap();
//! assert!(out.is_empty());
//!
//! // Every connection's write slab in one storage area, zeroed in place (a `static` would use
//! // a `StaticSlot`): connection 3 stages a reply.
//! let mut slabs = MaybeUninit::<WriteSlabs<8, 4096>>::uninit();
//! let mut arena = init_zeroed(&mut slabs).arena();
//! arena.ring(3).unwrap().append(b"+OK\r\n").unwrap();
//! assert_eq!(arena.ring(3).unwrap().len(), 5);
//! ```

mod buf;
mod byte_ring;
mod return_queue;
mod send_lease;
mod slab;
mod zero;

pub use buf::{
    BufPool, BufPoolConfig, BufPoolStorage, BufRingEntry, Lease, MAX_BUFFERS, PoolError, PoolStats,
    RecvTier,
};
pub use byte_ring::{
    ByteRing, ByteRingFull, ConsumeError, NoSuchSlab, RingState, SlabArena, WriteSlabs,
};
pub use return_queue::{ReturnQueue, ReturnQueueStorage};
pub use send_lease::{ReturnHandle, ReturnPath, SendLease};
pub use slab::{Iter, IterMut, Key, MAX_CAPACITY, Slab, SlabFull, SlabStorage, Slot, StaleKey};
#[cfg(any(test, feature = "std"))]
pub use zero::leak_zeroed;
pub use zero::{StaticSlot, ZeroInit, init_zeroed};

/// A tiny seeded PRNG for the property tests (no dependency, runs under Miri).
#[cfg(test)]
pub(crate) mod test_rng {
    /// xorshift64*.
    pub(crate) struct XorShift(u64);

    impl XorShift {
        pub(crate) fn new(seed: u64) -> XorShift {
            // Spread small seeds over the state; the state must not be zero.
            XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        pub(crate) fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// Uniform-enough in `0..n` (`n > 0`).
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }
}
