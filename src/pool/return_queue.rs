//! [`ReturnQueue`]: a lock-free, fixed-capacity, multi-producer queue of buffer ids with a
//! single consumer that takes everything at once (see [`ReturnQueue`] for its shape and why
//! it is correct).

use core::fmt;

use super::buf::{MAX_BUFFERS, PoolError};
use crate::sync::atomic::{AtomicU16, AtomicU32, Ordering};

/// The queue's memory: a head word and one link per id (`N` ids, `0..N`).
///
/// `T` is `[AtomicU16; N]` in a [`ReturnQueueStorage`] and `[AtomicU16]` behind a
/// [`ReturnQueue`] (an unsizing coercion: no const generic in the handle's type).
struct Links<T: ?Sized> {
    /// 0 for an empty queue, else `id + 1` of the last id pushed.
    head: AtomicU32,
    /// `next[id]`: 0 at the end of the list, else `id + 1` of the id pushed before `id`.
    next: T,
}

/// Storage for a [`ReturnQueue`] of ids `0..N`. `N` must be at most [`MAX_BUFFERS`] (checked at
/// compile time when `new` or `queue` is instantiated).
///
/// All-zero bytes is an empty queue ([`ZeroInit`](super::ZeroInit), and `new` is `const`),
/// so it can live in a `static` (a [`StaticSlot`](super::StaticSlot)) next to the pool it serves.
/// Under `--cfg loom` (see [`sync`](crate::sync)) neither holds; `new` builds it then.
pub struct ReturnQueueStorage<const N: usize> {
    links: Links<[AtomicU16; N]>,
}

// SAFETY: `Links` holds only an `AtomicU32` and `AtomicU16`s (core's: this impl does not exist
// under loom), which have the size and bit validity of their integers, and no padding that
// matters; all zero is the empty queue (head 0), the value `new` builds, and nothing relies on
// more (links are written before they are read).
#[cfg(not(loom))]
unsafe impl<const N: usize> super::ZeroInit for ReturnQueueStorage<N> {}

impl<const N: usize> ReturnQueueStorage<N> {
    const VALID: () = assert!(N <= MAX_BUFFERS, "ReturnQueueStorage: N must be <= 32768");

    /// An empty queue (the same value as all-zero bytes).
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        let () = Self::VALID;
        ReturnQueueStorage {
            links: Links {
                head: AtomicU32::new(0),
                next: [const { AtomicU16::new(0) }; N],
            },
        }
    }

    /// An empty queue.
    #[cfg(loom)]
    pub fn new() -> Self {
        let () = Self::VALID;
        ReturnQueueStorage {
            links: Links {
                head: AtomicU32::new(0),
                next: core::array::from_fn(|_| AtomicU16::new(0)),
            },
        }
    }

    /// The queue over this storage. Every handle made from the same storage is the same queue.
    pub fn queue(&self) -> ReturnQueue<'_> {
        let () = Self::VALID;
        ReturnQueue { links: &self.links }
    }

    /// The queue, emptied first: whatever an earlier user left in it is forgotten. Needs the
    /// storage exclusively, so no push can be under way.
    pub(super) fn reset(&mut self) -> ReturnQueue<'_> {
        self.links.head.store(0, Ordering::Relaxed);
        self.queue()
    }
}

impl<const N: usize> Default for ReturnQueueStorage<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for ReturnQueueStorage<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.queue().fmt(f)
    }
}

/// A lock-free queue of buffer ids `0..capacity`: any thread pushes, one consumer drains
/// everything at once. A `Copy` handle to a [`ReturnQueueStorage`]; `Send` and `Sync`.
///
/// Each id may be in the queue at most once at a time (see *Exactly once* below for the rule
/// and what breaking it does); then a push never fails for lack of room. Order is not kept (the
/// newest id comes out first).
///
/// This is the queue under [`SendLease`](super::SendLease), which is how the event loop uses
/// it: the queue bound to a pool is never reachable by user code, only through send leases
/// (see [`ReturnHandle`](super::ReturnHandle)).
///
/// ```
/// use ringlet::pool::ReturnQueueStorage;
///
/// let storage = ReturnQueueStorage::<8>::new();
/// let q = storage.queue();
/// std::thread::scope(|s| {
///     for id in 0..4u16 {
///         s.spawn(move || q.push(id).unwrap());
///     }
/// });
/// let mut got = Vec::new();
/// assert_eq!(q.drain(|id| got.push(id)), 4);
/// got.sort();
/// assert_eq!(got, [0, 1, 2, 3]);
/// assert!(q.is_empty());
/// ```
///
/// # Shape
///
/// An intrusive "take-all" stack (a Treiber stack without pop). The storage holds a `head` word
/// and one link per id; the links *are* the nodes, so the queue needs no memory besides them and
/// holds each id at most once, and with one link per buffer a push can never fail for lack of
/// room. Values are `id + 1`, with 0 meaning "none", so zeroed storage is an empty queue.
///
/// - [`ReturnQueue::push`] (any thread): `next[id] = head` (Relaxed), then
///   `head.compare_exchange(old, id + 1, Release, Relaxed)`, retrying with the head it found.
/// - [`ReturnQueue::drain`] (one consumer): a Relaxed load of `head` (nothing to do when 0),
///   then `head.swap(0, Acquire)` takes the whole list; the consumer walks it through the links
///   and reads each link *before* handing the id on.
///
/// # Why it is correct
///
/// - **Published before read.** The consumer's `Acquire` swap reads the value written by the
///   last push's `Release` CAS; every earlier push in the list is in that CAS's release
///   sequence (each later push is an RMW on `head` that read it), so the consumer synchronises
///   with every push it takes, and sees each link and whatever the producer wrote before its
///   push (the buffer's bytes). Weakening either side to `Relaxed` lets the consumer read stale
///   contents or follow a stale link: the loom model `returns_exactly_once` then reports an id
///   read before it was published, or a lost id (the loop sleeps forever: a deadlock).
/// - **No ABA.** The consumer never pops single nodes with a CAS, so it never compares against
///   a head that could have been popped and pushed again: it swaps the whole list out. A
///   producer's CAS only ever links its own node in front of the current list, whatever
///   happened to earlier values of `head`.
/// - **Exactly once.** A drain hands out each id it took exactly once, and only ids that were
///   pushed. This holds as long as no id is pushed while it is still in the queue (between its
///   push and the drain that takes it out): a second push would link the node to itself. The
///   [`SendLease`](super::SendLease) path guarantees it (a buffer is pushed by the drop of the
///   one send lease that owns it, and can only become a send lease again after the loop took it
///   back). For a queue used directly, it is the caller's rule; breaking it is not undefined
///   behaviour (its operations use no `unsafe`), ids may then be lost or repeated, and a drain still
///   ends: it walks at most `capacity` links.
/// - **The loop's side is wait-free**: one load when empty, one swap and a walk otherwise.
///   Producers are lock-free (a CAS retries only because another push succeeded).
#[derive(Clone, Copy)]
pub struct ReturnQueue<'a> {
    links: &'a Links<[AtomicU16]>,
}

impl<'a> ReturnQueue<'a> {
    /// The number of ids (`N` of the storage): ids `0..capacity` can be pushed.
    pub fn capacity(&self) -> usize {
        self.links.next.len()
    }

    /// Pushes `id`, from any thread. Lock-free; never fails for lack of room while each id is
    /// in the queue at most once.
    ///
    /// Everything the calling thread did before the push (writing the buffer's bytes, say) is
    /// visible to the consumer once its [`drain`](ReturnQueue::drain) hands out `id`.
    ///
    /// # Errors
    ///
    /// [`PoolError::BadId`] if `id >= capacity` (nothing is pushed).
    pub fn push(&self, id: u16) -> Result<(), PoolError> {
        let Some(link) = self.links.next.get(usize::from(id)) else {
            return Err(PoolError::BadId {
                id,
                total: self.capacity(),
            });
        };
        let node = u32::from(id) + 1;
        let mut head = self.links.head.load(Ordering::Relaxed);
        loop {
            // `head` is 0 or `id + 1` of a pushed id below capacity <= 32768: it fits a u16.
            // Relaxed: the CAS below publishes it.
            link.store(head as u16, Ordering::Relaxed);
            // Release: publishes the link and everything before it to the consumer's Acquire
            // swap. A failure reads nothing that needs ordering: retry on the newer head.
            match self.links.head.compare_exchange_weak(
                head,
                node,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => head = now,
            }
        }
    }

    /// Consumer side: takes every id pushed so far and calls `f` with each, newest first.
    /// Returns how many.
    ///
    /// One consumer at a time (a second one would only get a share, but the contract is the
    /// loop's: one thread drains). `f` may push ids again (the list was taken out before `f`
    /// runs, and each link is read before its id is handed to `f`).
    ///
    /// When the queue is empty this is a single `Relaxed` load: after a
    /// [`WakeSignal::park`](crate::sync::WakeSignal::park) it is fresh enough (see
    /// [`sync`](crate::sync)). Otherwise an `Acquire` swap synchronises with every push taken.
    pub fn drain(&self, mut f: impl FnMut(u16)) -> usize {
        if self.links.head.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let mut top = self.links.head.swap(0, Ordering::Acquire);
        let mut n = 0;
        // At most `capacity` ids: a list can be longer only if an id was pushed twice (see the
        // module docs); then the walk still ends.
        while top != 0 && n < self.capacity() {
            let id = (top - 1) as u16;
            // Read the link before `f` runs: `f` may make the id pushable again.
            top = u32::from(self.links.next[usize::from(id)].load(Ordering::Relaxed));
            f(id);
            n += 1;
        }
        n
    }

    /// Whether the queue looks empty (a `Relaxed` load: a push may be under way or just done
    /// on another thread).
    pub fn is_empty(&self) -> bool {
        self.links.head.load(Ordering::Relaxed) == 0
    }

    /// Whether `self` and `other` are handles to the same storage.
    pub fn same_queue(&self, other: &ReturnQueue<'_>) -> bool {
        core::ptr::eq(&self.links.head, &other.links.head)
    }
}

impl fmt::Debug for ReturnQueue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReturnQueue")
            .field("capacity", &self.capacity())
            .field("empty", &self.is_empty())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::pool::test_rng::XorShift;
    use crate::pool::{ZeroInit, init_zeroed};
    use core::mem::MaybeUninit;
    use std::vec::Vec;

    static_assertions::assert_impl_all!(ReturnQueue<'static>: Send, Sync, Copy);
    static_assertions::assert_impl_all!(ReturnQueueStorage<4>: Send, Sync, ZeroInit);
    static_assertions::const_assert!(
        core::mem::size_of::<ReturnQueue<'static>>() == 2 * core::mem::size_of::<usize>()
    );

    fn drained(q: ReturnQueue<'_>) -> Vec<u16> {
        let mut v = Vec::new();
        let n = q.drain(|id| v.push(id));
        assert_eq!(n, v.len());
        v
    }

    #[test]
    fn empty_push_drain() {
        let s = ReturnQueueStorage::<4>::new();
        let q = s.queue();
        assert_eq!(q.capacity(), 4);
        assert!(q.is_empty());
        assert_eq!(drained(q), []);
        q.push(2).unwrap();
        assert!(!q.is_empty());
        q.push(0).unwrap();
        q.push(3).unwrap();
        assert_eq!(drained(q), [3, 0, 2], "newest first");
        assert!(q.is_empty());
        assert_eq!(drained(q), []);
        // Ids come back and can be pushed again.
        q.push(3).unwrap();
        q.push(2).unwrap();
        assert_eq!(drained(s.queue()), [2, 3], "every handle is the same queue");
    }

    #[test]
    fn full_capacity_and_bad_ids() {
        let s = ReturnQueueStorage::<8>::new();
        let q = s.queue();
        for id in 0..8 {
            q.push(id).unwrap();
        }
        assert_eq!(q.push(8), Err(PoolError::BadId { id: 8, total: 8 }));
        assert_eq!(
            q.push(u16::MAX),
            Err(PoolError::BadId {
                id: u16::MAX,
                total: 8
            })
        );
        let mut got = drained(q);
        got.sort();
        assert_eq!(got, (0..8).collect::<Vec<_>>());
        // An empty storage refuses everything.
        let s0 = ReturnQueueStorage::<0>::new();
        assert!(s0.queue().push(0).is_err());
        assert_eq!(drained(s0.queue()), []);
    }

    #[test]
    fn the_largest_capacity_round_trips_its_last_id() {
        let s: &mut ReturnQueueStorage<MAX_BUFFERS> =
            crate::pool::leak_zeroed::<ReturnQueueStorage<MAX_BUFFERS>>();
        let q = s.queue();
        let last = (MAX_BUFFERS - 1) as u16;
        q.push(last).unwrap();
        q.push(0).unwrap();
        assert_eq!(drained(q), [0, last]);
        // SAFETY: from `leak_zeroed` (the global allocator, `Layout::new::<T>()`), not used
        // again: reclaimed so Miri's leak check stays on.
        drop(unsafe { std::boxed::Box::from_raw(s) });
    }

    #[test]
    fn zeroed_is_empty_and_reset_forgets() {
        let mut slot = MaybeUninit::<ReturnQueueStorage<4>>::uninit();
        let s = init_zeroed(&mut slot);
        assert!(s.queue().is_empty());
        s.queue().push(1).unwrap();
        let q = s.reset();
        assert!(q.is_empty());
        assert_eq!(drained(q), []);
        assert!(std::format!("{s:?}").contains("capacity: 4"));
    }

    #[test]
    fn drain_may_push_again() {
        let s = ReturnQueueStorage::<4>::new();
        let q = s.queue();
        q.push(1).unwrap();
        q.push(2).unwrap();
        // Each id is handed out once, and may be pushed again at once (the link was read).
        let mut first = Vec::new();
        q.drain(|id| {
            first.push(id);
            q.push(id).unwrap();
        });
        assert_eq!(first, [2, 1]);
        assert_eq!(drained(q), [1, 2]);
    }

    #[test]
    fn a_double_push_is_contained() {
        // Breaking the at-most-once rule is not undefined behaviour and the drain ends.
        let s = ReturnQueueStorage::<4>::new();
        let q = s.queue();
        q.push(1).unwrap();
        q.push(1).unwrap(); // links 1 to itself
        let got = drained(q);
        assert_eq!(got.len(), 4, "the walk stops at capacity");
        assert!(got.iter().all(|&id| id == 1));
        assert!(q.is_empty());
    }

    #[test]
    fn same_queue() {
        let a = ReturnQueueStorage::<2>::new();
        let b = ReturnQueueStorage::<2>::new();
        assert!(a.queue().same_queue(&a.queue()));
        assert!(!a.queue().same_queue(&b.queue()));
    }

    /// Random pushes and drains against a model (a set): each id drained exactly once per
    /// push.
    #[test]
    fn matches_a_model() {
        const N: usize = 16;
        let rounds = if cfg!(miri) { 200 } else { 5000 };
        let s = ReturnQueueStorage::<N>::new();
        let q = s.queue();
        let mut rng = XorShift::new(7);
        let mut queued = [false; N];
        for _ in 0..rounds {
            if rng.below(3) == 0 {
                let mut seen = [false; N];
                q.drain(|id| {
                    let id = usize::from(id);
                    assert!(queued[id], "id {id} drained but not pushed");
                    assert!(!seen[id], "id {id} drained twice");
                    seen[id] = true;
                });
                assert_eq!(seen, queued);
                queued = [false; N];
            } else {
                let id = rng.below(N);
                if !queued[id] {
                    q.push(id as u16).unwrap();
                    queued[id] = true;
                }
            }
            assert_eq!(q.is_empty(), !queued.contains(&true));
        }
    }

    /// Producers on several threads, one consumer: every id exactly once (small enough for
    /// Miri, which checks the orderings' data-race side on the links).
    #[test]
    fn threads_push_consumer_drains() {
        const N: usize = 64;
        let (threads, per) = if cfg!(miri) { (3, 4) } else { (4, 16) };
        let s = ReturnQueueStorage::<N>::new();
        let q = s.queue();
        let mut seen = [0u32; N];
        std::thread::scope(|sc| {
            for t in 0..threads {
                sc.spawn(move || {
                    for i in 0..per {
                        q.push((t * per + i) as u16).unwrap();
                    }
                });
            }
            let mut got = 0;
            while got < threads * per {
                got += q.drain(|id| seen[usize::from(id)] += 1);
                std::thread::yield_now();
            }
        });
        assert!(seen[..threads * per].iter().all(|&c| c == 1));
        assert!(seen[threads * per..].iter().all(|&c| c == 0));
    }
}
