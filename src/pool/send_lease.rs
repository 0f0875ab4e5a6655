//! [`SendLease`]: a lease that may travel to another thread and return its buffer from there;
//! [`ReturnHandle`]: the loop's side of that return; [`ReturnPath`]: the way back.

use core::marker::PhantomData;
use core::{fmt, mem, slice};

use super::buf::{BufPool, Lease, PoolError};
use super::return_queue::{ReturnQueue, ReturnQueueStorage};
use crate::sync::Notifier;

/// The way a buffer id goes back to the loop from any thread: push it onto a [`ReturnQueue`],
/// then notify the loop through its [`Notifier`] (which wakes it if it may be asleep).
///
/// `Copy`, `Send` and `Sync`. This is what a [`SendLease`] carries and what its `Drop` runs; it
/// is public so that the loom models check exactly this code. A `ReturnPath` can be built over
/// any queue its maker can reach, but never over the queue of a [`ReturnHandle`]: that storage
/// is borrowed exclusively by the handle, so ids reach a pool only through send leases.
#[derive(Clone, Copy, Debug)]
pub struct ReturnPath<'a> {
    queue: ReturnQueue<'a>,
    notifier: Notifier<'a>,
}

impl<'a> ReturnPath<'a> {
    /// A path onto `queue`, announced through `notifier`.
    pub fn new(queue: ReturnQueue<'a>, notifier: Notifier<'a>) -> ReturnPath<'a> {
        ReturnPath { queue, notifier }
    }

    /// Returns `id`, from any thread: pushes it (`Release`: the caller's writes to the buffer
    /// are visible to the loop when it drains the id), then notifies (and wakes the loop if it
    /// may be asleep). Returns whether the loop was woken.
    ///
    /// # Errors
    ///
    /// [`PoolError::BadId`] if `id` is beyond the queue's capacity; nothing is pushed and the
    /// loop is not notified.
    pub fn give_back(&self, id: u16) -> Result<bool, PoolError> {
        self.queue.push(id)?;
        Ok(self.notifier.notify())
    }

    /// The queue.
    pub fn queue(&self) -> ReturnQueue<'a> {
        self.queue
    }

    /// The notifier.
    pub fn notifier(&self) -> Notifier<'a> {
        self.notifier
    }
}

/// The loop's side of returning buffers from other threads: a [`BufPool`] bound to a return
/// queue and the loop's [`Notifier`]. It turns leases into [`SendLease`]s
/// ([`ReturnHandle::send`]) and takes returned buffers back into the pool
/// ([`ReturnHandle::drain`], once per loop turn, after
/// [`WakeSignal::park`](crate::sync::WakeSignal::park)).
///
/// A `Copy` handle, like the pool; neither `Send` nor `Sync` (it holds the pool). The queue's
/// storage is borrowed exclusively for `'a`, so no one else can push onto it: every id in it
/// was pushed by a send lease of this pool, and goes back to this pool.
///
/// ```
/// use core::sync::atomic::{AtomicUsize, Ordering};
/// use ringlet::pool::{BufPool, BufPoolConfig, BufPoolStorage, RecvTier, ReturnHandle,
///     ReturnQueueStorage};
/// use ringlet::sync::{Notifier, Wake, WakeSignal};
///
/// // A stand-in for the loop's eventfd (`ringlet::sys::eventfd::WakeFd` in a real loop).
/// struct Wakes(AtomicUsize);
/// impl Wake for Wakes {
///     fn wake(&self) { self.0.fetch_add(1, Ordering::Relaxed); }
/// }
///
/// let mut storage = BufPoolStorage::<4, 64>::new();
/// let mut returns = ReturnQueueStorage::<4>::new();
/// let (signal, wake) = (WakeSignal::new(), Wakes(AtomicUsize::new(0)));
/// let config = BufPoolConfig { recv_tier: RecvTier::FreeList, user_reserve: 0 };
/// let pool = BufPool::new(&mut storage, config).unwrap();
/// let handle = ReturnHandle::new(pool, &mut returns, Notifier::new(&signal, &wake)).unwrap();
///
/// let mut lease = pool.try_take_recv().unwrap();
/// lease.buf_mut()[..2].copy_from_slice(b"hi");
/// lease.set_len(2).unwrap();
/// let sent = handle.send(lease).unwrap();
/// std::thread::scope(|s| {
///     s.spawn(move || {
///         assert_eq!(sent.as_slice(), b"hi");
///         drop(sent); // pushed onto the return queue; the loop is notified
///     });
/// });
/// assert_eq!(pool.leased(), 1, "not back until the loop drains");
/// // The loop's turn: wait (here: the loop is notified, so it must not block), then drain.
/// signal.park(|may_block| assert!(!may_block));
/// assert_eq!(handle.drain(), 1);
/// assert_eq!(pool.leased(), 0);
/// ```
#[derive(Clone, Copy)]
pub struct ReturnHandle<'a> {
    pool: BufPool<'a>,
    path: ReturnPath<'a>,
}

static_assertions::assert_not_impl_any!(ReturnHandle<'static>: Send, Sync);

impl<'a> ReturnHandle<'a> {
    /// Binds `pool` to the return queue in `storage` (emptied first), announcing returns
    /// through `notifier`.
    ///
    /// # Errors
    ///
    /// [`PoolError::ReturnQueueTooSmall`] if the queue has room for fewer ids than the pool has
    /// buffers (`N < pool.total()`).
    pub fn new<const N: usize>(
        pool: BufPool<'a>,
        storage: &'a mut ReturnQueueStorage<N>,
        notifier: Notifier<'a>,
    ) -> Result<ReturnHandle<'a>, PoolError> {
        if N < pool.total() {
            return Err(PoolError::ReturnQueueTooSmall {
                capacity: N,
                total: pool.total(),
            });
        }
        let queue = storage.reset();
        Ok(ReturnHandle {
            pool,
            path: ReturnPath::new(queue, notifier),
        })
    }

    /// Turns `lease` into a [`SendLease`] that may go to any thread and comes back through this
    /// handle's queue. The buffer stays charged to the lease's owner (if any) until the loop
    /// drains it.
    ///
    /// # Errors
    ///
    /// Hands `lease` back if it belongs to another pool.
    pub fn send(&self, lease: Lease<'a>) -> Result<SendLease<'a>, Lease<'a>> {
        if !lease.pool().same_pool(&self.pool) {
            return Err(lease);
        }
        let cap = lease.capacity() as u32; // buffer sizes fit u32 (checked on the storage)
        let (id, len, ptr) = lease.into_sent();
        Ok(SendLease {
            ptr,
            cap,
            len,
            id,
            path: self.path,
            _bytes: PhantomData,
        })
    }

    /// Turns a [`SendLease`] that came back to the loop's thread into a [`Lease`] again,
    /// without a trip through the queue. The charge does not change.
    ///
    /// # Errors
    ///
    /// Hands `lease` back if it was not made by a handle on this queue.
    pub fn reclaim(&self, lease: SendLease<'a>) -> Result<Lease<'a>, SendLease<'a>> {
        if !lease.path.queue.same_queue(&self.path.queue) {
            return Err(lease);
        }
        let lease = mem::ManuallyDrop::new(lease);
        // Same queue, so the same pool: the queue's storage is borrowed by the handles of one
        // binding, which share one pool. The buffer is *sent*: its SendLease owned it until now.
        Ok(self.pool.lease_from_sent(lease.id, lease.len))
    }

    /// Loop side, once per turn after [`WakeSignal::park`](crate::sync::WakeSignal::park):
    /// takes every buffer returned so far back into the pool (to the tier its refill policy
    /// picks, uncharging owners) and returns how many. Wait-free; a single `Relaxed` load when
    /// nothing came back.
    pub fn drain(&self) -> usize {
        let mut n = 0;
        self.path.queue.drain(|id| {
            // Only send leases of this pool push onto this queue, once each: every id is
            // *sent*. An error would be a broken invariant; the buffer is then left alone.
            let back = self.pool.release_sent(id);
            debug_assert_eq!(back, Ok(()), "a returned id that was not sent");
            n += usize::from(back.is_ok());
        });
        n
    }

    /// The pool.
    pub fn pool(&self) -> BufPool<'a> {
        self.pool
    }

    /// The notifier returns are announced through (the loop parks on its signal).
    pub fn notifier(&self) -> Notifier<'a> {
        self.path.notifier
    }
}

impl fmt::Debug for ReturnHandle<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReturnHandle")
            .field("pool", &self.pool)
            .field("queue", &self.path.queue)
            .finish()
    }
}

/// A leased buffer that may be sent to, used on and dropped on any thread. Made by
/// [`ReturnHandle::send`] from a [`Lease`] (which stays `!Send`: its drop touches the pool).
///
/// It owns its buffer's bytes exclusively, like a [`Lease`]. Dropping it (or
/// [`SendLease::release`]) on any thread returns the buffer exactly once: its id is pushed onto
/// the return queue (lock-free, never full: the queue has a link per buffer) and the loop is
/// notified, and woken if it may be asleep. The buffer is back in the pool when the loop next
/// runs [`ReturnHandle::drain`]; until then it counts as leased (and charged to its owner).
/// Forgetting a send lease (`mem::forget`) leaks its buffer, as for a [`Lease`].
///
/// `Send` and `Sync` (shared references only read the bytes).
pub struct SendLease<'a> {
    /// The first byte of the buffer: valid for reads and writes of `cap` bytes for `'a`, and
    /// accessed by no one else while this send lease lives (see `Lease::into_sent`).
    ptr: *mut u8,
    cap: u32,
    len: u32,
    id: u16,
    path: ReturnPath<'a>,
    _bytes: PhantomData<&'a mut [u8]>,
}

// SAFETY: a `SendLease` is the only owner of its buffer's bytes: the buffer is *sent*, a state
// only `ReturnHandle::send` enters and only the drain of its id (after this lease's `Drop`
// pushed it) or `ReturnHandle::reclaim` (which consumes this lease) leaves; in between the pool
// neither hands it out, nor publishes it to the kernel, nor touches it. The bytes are plain
// `u8`s in storage borrowed for `'a`, so owning them from another thread is sound. The rest is
// plain data and a `ReturnPath`, which is `Send + Sync` (atomics, and a `&dyn Wake` with
// `Wake: Sync`). Dropping on another thread touches only the `ReturnPath`, never the pool's
// single-threaded state, and the push's `Release` orders every access to the bytes before the
// loop's reuse of them (its drain `Acquire`s the queue head).
unsafe impl Send for SendLease<'_> {}
// SAFETY: through `&SendLease` the bytes are only read (`as_slice`) and the fields only read;
// every write needs `&mut self`. Concurrent reads of plain bytes are sound.
unsafe impl Sync for SendLease<'_> {}

static_assertions::assert_impl_all!(SendLease<'static>: Send, Sync);
static_assertions::assert_not_impl_any!(SendLease<'static>: Clone);
static_assertions::const_assert!(mem::size_of::<SendLease<'static>>() <= 64);

impl SendLease<'_> {
    /// The buffer id.
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
        self.cap as usize
    }

    /// The valid bytes (the first [`SendLease::len`]).
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `cap >= len` bytes and only this lease accesses them (see
        // the field); the returned borrow of `self` keeps writers (`&mut self`) out.
        unsafe { slice::from_raw_parts(self.ptr, self.len()) }
    }

    /// The valid bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes the slice the only borrow.
        unsafe { slice::from_raw_parts_mut(self.ptr, self.len()) }
    }

    /// The whole buffer, for filling (then [`SendLease::set_len`]). Bytes past `len` hold
    /// whatever an earlier use left there.
    pub fn buf_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, for all `cap` bytes; `&mut self` makes the slice the only
        // borrow.
        unsafe { slice::from_raw_parts_mut(self.ptr, self.capacity()) }
    }

    /// Sets the number of valid bytes.
    ///
    /// # Errors
    ///
    /// [`PoolError::LenTooLarge`] if `len` exceeds the buffer size; the length is unchanged.
    pub fn set_len(&mut self, len: usize) -> Result<(), PoolError> {
        if len > self.capacity() {
            return Err(PoolError::LenTooLarge {
                len,
                capacity: self.capacity(),
            });
        }
        self.len = len as u32;
        Ok(())
    }

    /// Returns the buffer now (the same as dropping the send lease).
    pub fn release(self) {}
}

impl Drop for SendLease<'_> {
    fn drop(&mut self) {
        // Cannot fail: `id < pool.total() <= queue capacity` (checked by `ReturnHandle::new`).
        let pushed = self.path.give_back(self.id);
        debug_assert!(pushed.is_ok());
    }
}

impl AsRef<[u8]> for SendLease<'_> {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsMut<[u8]> for SendLease<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl fmt::Debug for SendLease<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendLease")
            .field("id", &self.id)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::pool::test_rng::XorShift;
    use crate::pool::{BufPoolConfig, BufPoolStorage, RecvTier};
    use crate::sync::{Wake, WakeSignal};
    use core::sync::atomic::{AtomicUsize, Ordering};
    use std::boxed::Box;
    use std::sync::{Condvar, Mutex, mpsc};
    use std::time::Duration;
    use std::vec::Vec;

    /// A permit-counting `Wake` with a blocking sleep: an eventfd without the kernel.
    #[derive(Default)]
    struct Permit {
        count: Mutex<u64>,
        cv: Condvar,
        wakes: AtomicUsize,
    }

    impl Wake for Permit {
        fn wake(&self) {
            self.wakes.fetch_add(1, Ordering::Relaxed);
            *self.count.lock().unwrap() += 1;
            self.cv.notify_one();
        }
    }

    impl Permit {
        /// Blocks until a wake (or `timeout`); consumes the permits. False on timeout.
        fn sleep(&self, timeout: Duration) -> bool {
            let g = self.count.lock().unwrap();
            let (mut g, r) = self.cv.wait_timeout_while(g, timeout, |c| *c == 0).unwrap();
            *g = 0;
            !r.timed_out()
        }
    }

    const LIST: BufPoolConfig = BufPoolConfig {
        recv_tier: RecvTier::FreeList,
        user_reserve: 1,
    };

    #[test]
    fn send_use_return_exactly_once() {
        let mut storage = Box::new(BufPoolStorage::<4, 16>::new());
        let mut counts = [0u16; 2];
        let mut rq = ReturnQueueStorage::<4>::new();
        let (signal, wake) = (WakeSignal::new(), Permit::default());
        let pool = BufPool::with_owners(&mut *storage, LIST, &mut counts).unwrap();
        let h = ReturnHandle::new(pool, &mut rq, Notifier::new(&signal, &wake)).unwrap();

        let mut l = pool.try_take_recv_by(1).unwrap().unwrap();
        l.buf_mut()[..3].copy_from_slice(b"abc");
        l.set_len(3).unwrap();
        let id = l.id();
        let mut s = h.send(l).unwrap();
        assert_eq!((s.id(), s.len(), s.capacity()), (id, 3, 16));
        assert_eq!(s.as_slice(), b"abc");
        s.as_mut_slice()[0] = b'x';
        assert_eq!(s.as_ref(), b"xbc");
        s.buf_mut()[3] = b'!';
        s.set_len(4).unwrap();
        assert_eq!(
            s.set_len(17),
            Err(PoolError::LenTooLarge {
                len: 17,
                capacity: 16
            })
        );
        assert_eq!(s.as_mut(), b"xbc!");
        assert!(!s.is_empty());
        assert!(std::format!("{s:?}").contains("SendLease"));

        // While sent, the loop cannot release, re-lease or re-take the buffer.
        assert_eq!(pool.release_raw(id), Err(PoolError::NotRaw { id }));
        assert!(pool.lease_from_raw(id, 0).is_err());
        assert_eq!(
            (pool.leased(), pool.owner_count(1)),
            (1, 1),
            "still out, still charged"
        );
        assert_eq!(h.drain(), 0);

        std::thread::scope(|sc| {
            sc.spawn(move || {
                assert_eq!(s.as_slice(), b"xbc!");
                s.release();
            });
        });
        assert_eq!(pool.leased(), 1, "back only when drained");
        signal.park(|may_block| assert!(!may_block, "notified: must not block"));
        assert_eq!(h.drain(), 1);
        assert_eq!((pool.leased(), pool.owner_count(1)), (0, 0));
        assert_eq!(
            pool.user_available(),
            1,
            "refill policy: the user tier first"
        );
        assert_eq!(h.drain(), 0, "exactly once");
        assert_eq!(wake.wakes.load(Ordering::Relaxed), 0, "the loop was awake");
    }

    #[test]
    fn reclaim_and_foreign_leases() {
        let mut a = Box::new(BufPoolStorage::<2, 8>::new());
        let mut b = Box::new(BufPoolStorage::<2, 8>::new());
        let (mut qa, mut qb) = (
            ReturnQueueStorage::<2>::new(),
            ReturnQueueStorage::<2>::new(),
        );
        let (signal, wake) = (WakeSignal::new(), Permit::default());
        let n = Notifier::new(&signal, &wake);
        let pa = BufPool::new(&mut *a, LIST).unwrap();
        let pb = BufPool::new(&mut *b, LIST).unwrap();
        let ha = ReturnHandle::new(pa, &mut qa, n).unwrap();
        let hb = ReturnHandle::new(pb, &mut qb, n).unwrap();
        assert!(std::format!("{ha:?}").contains("ReturnHandle"));

        // A lease of another pool is handed back.
        let lb = pb.try_lease_user().unwrap();
        let lb = ha.send(lb).unwrap_err();
        let sb = hb.send(lb).unwrap();
        // A send lease of another queue is handed back too.
        let sb = ha.reclaim(sb).unwrap_err();
        let mut lb = hb.reclaim(sb).unwrap();
        assert_eq!(pb.leased(), 1);
        lb.set_len(5).unwrap();
        let id = lb.id();
        // Back as a plain lease: raw round trips work again, and dropping returns at once.
        let (rid, len) = lb.into_raw();
        assert_eq!((rid, len), (id, 5));
        let lb = pb.lease_from_raw(id, len).unwrap();
        drop(lb);
        assert_eq!(pb.leased(), 0);
        assert_eq!(hb.drain(), 0, "nothing went through the queue");
        assert_eq!(ha.pool().total(), 2);
        assert!(!ha.notifier().signal().notify(&wake), "awake: no wake");
    }

    #[test]
    fn a_queue_smaller_than_the_pool_is_refused() {
        let mut storage = Box::new(BufPoolStorage::<4, 8>::new());
        let mut rq = ReturnQueueStorage::<2>::new();
        let (signal, wake) = (WakeSignal::new(), Permit::default());
        let pool = BufPool::new(&mut *storage, LIST).unwrap();
        let e = ReturnHandle::new(pool, &mut rq, Notifier::new(&signal, &wake)).unwrap_err();
        assert_eq!(
            e,
            PoolError::ReturnQueueTooSmall {
                capacity: 2,
                total: 4
            }
        );
        assert!(std::format!("{e}").contains("at least 4"));
    }

    #[test]
    fn give_back_refuses_bad_ids() {
        let rq = ReturnQueueStorage::<2>::new();
        let (signal, wake) = (WakeSignal::new(), Permit::default());
        let path = ReturnPath::new(rq.queue(), Notifier::new(&signal, &wake));
        assert!(path.give_back(2).is_err());
        assert!(path.queue().is_empty());
        assert!(signal.park(|may_block| may_block), "not notified");
        assert_eq!(path.give_back(1), Ok(false));
        assert!(std::format!("{:?}", path.notifier()).contains("notified"));
    }

    /// Starvation and recovery, single-threaded in steps: every buffer is out; one comes back
    /// from another thread while the loop sleeps; the loop is woken and finds it.
    #[test]
    fn starved_loop_is_woken_by_a_return() {
        let mut storage = Box::new(BufPoolStorage::<2, 8>::new());
        let mut rq = ReturnQueueStorage::<2>::new();
        let (signal, wake) = (WakeSignal::new(), Permit::default());
        let config = BufPoolConfig {
            recv_tier: RecvTier::FreeList,
            user_reserve: 0,
        };
        let pool = BufPool::new(&mut *storage, config).unwrap();
        let h = ReturnHandle::new(pool, &mut rq, Notifier::new(&signal, &wake)).unwrap();
        let a = h.send(pool.try_take_recv().unwrap()).unwrap();
        let b = h.send(pool.try_take_recv().unwrap()).unwrap();
        assert!(pool.try_take_recv().is_none(), "starved");
        std::thread::scope(|sc| {
            let worker = sc.spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                drop(a);
            });
            let woke = signal.park(|may_block| {
                assert!(may_block);
                wake.sleep(Duration::from_secs(10))
            });
            assert!(woke, "the return woke the loop");
            worker.join().unwrap();
        });
        assert_eq!(h.drain(), 1);
        assert_eq!(pool.recv_available(), 1);
        assert_eq!(wake.wakes.load(Ordering::Relaxed), 1);
        drop(b); // dropped on the loop's thread: the same path
        assert_eq!(h.drain(), 1);
        assert_eq!(pool.recv_available(), 2);
    }

    /// Threads return buffers while the loop drains and sleeps through the real protocol, over
    /// and over: every buffer comes back exactly once, its bytes intact, and a sleeping loop is
    /// always woken (a sleep that times out with work outstanding fails the test).
    #[test]
    fn threads_return_while_the_loop_sleeps() {
        const N: usize = 32;
        let (workers, total) = if cfg!(miri) { (2, 24) } else { (4, 20_000) };
        let mut storage = Box::new(BufPoolStorage::<N, 8>::new());
        let mut rq = ReturnQueueStorage::<N>::new();
        let (signal, wake) = (WakeSignal::new(), Permit::default());
        let config = BufPoolConfig {
            recv_tier: RecvTier::FreeList,
            user_reserve: 0,
        };
        let pool = BufPool::new(&mut *storage, config).unwrap();
        let h = ReturnHandle::new(pool, &mut rq, Notifier::new(&signal, &wake)).unwrap();
        let mut rng = XorShift::new(3);
        let (mut sent, mut back, mut sleeps) = (0usize, 0usize, 0usize);
        std::thread::scope(|sc| {
            let txs: Vec<mpsc::Sender<SendLease<'_>>> = (0..workers)
                .map(|w| {
                    let (tx, rx) = mpsc::channel::<SendLease<'_>>();
                    sc.spawn(move || {
                        let check = |s: &SendLease<'_>| {
                            let tag = u64::from_le_bytes(s.as_slice().try_into().unwrap());
                            assert_eq!(tag >> 16, u64::from(s.id()), "bytes intact");
                        };
                        let mut held = Vec::new();
                        let mut round = w;
                        while let Ok(s) = rx.recv() {
                            check(&s);
                            held.push(s);
                            // Take what else is there: returns come in bursts and alone.
                            while let Ok(s) = rx.try_recv() {
                                check(&s);
                                held.push(s);
                            }
                            round += 1;
                            if round % 7 == 0 {
                                // Give the loop time to fall asleep.
                                std::thread::sleep(Duration::from_micros(50));
                            }
                            // Never hold a buffer while waiting: the loop may be starved.
                            held.clear();
                        }
                    });
                    tx
                })
                .collect();
            while back < total {
                // Send what is free.
                while sent < total {
                    let Some(mut l) = pool.try_take_recv() else {
                        break;
                    };
                    let tag = (u64::from(l.id()) << 16) | (sent as u64 & 0xffff);
                    l.buf_mut().copy_from_slice(&tag.to_le_bytes());
                    l.set_len(8).unwrap();
                    let s = h.send(l).unwrap();
                    txs[rng.below(workers)].send(s).unwrap();
                    sent += 1;
                }
                // The turn: park (sleeping only if nothing was notified), then drain.
                signal.park(|may_block| {
                    if may_block {
                        sleeps += 1;
                        assert!(wake.sleep(Duration::from_secs(10)), "lost wake-up");
                    }
                });
                back += h.drain();
                assert_eq!(pool.leased(), sent - back);
            }
            drop(txs);
        });
        assert_eq!(back, total);
        assert_eq!(h.drain(), 0);
        assert_eq!(pool.recv_available(), N);
        assert!(sleeps > 0 || cfg!(miri));
    }
}
