//! [`Scheduler`]: per-task state words, the ready queue and the wakers, without the futures.
//!
//! The executor keeps its futures in a [`TaskStorage`](super::TaskStorage); what other threads
//! can touch lives here, in a [`SchedStorage`]: one [`TaskHeader`] per task slot (an atomic
//! word holding the slot's generation and its *scheduled* bit) and a lock-free ready queue of
//! slot indices (the pool's [`ReturnQueue`], whose one-entry-per-id rule the scheduled bit
//! keeps). See the [module documentation](super) for the protocol and why it loses no wake-up
//! and never polls a task for another task's waker.

use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::task::{RawWaker, RawWakerVTable, Waker};

use crate::pool::{ReturnQueue, ReturnQueueStorage};
use crate::sync::Notifier;
use crate::sync::atomic::{AtomicU32, Ordering};

/// The state word's low bit: the slot is in the ready queue (or about to be pushed there).
const SCHEDULED: u32 = 1;
/// One generation, in the state word (the generation is the word shifted right by one).
const GEN_ONE: u32 = 2;

/// Generation bits a waker carries in its data pointer's low bits: the header is aligned to
/// `1 << LOW_BITS` bytes, so the header's address has them free.
const LOW_BITS: u32 = 6;
const LOW_MASK: usize = (1 << LOW_BITS) - 1;
/// On 64-bit targets, more generation bits in the address bits above 48, which Linux never
/// hands to user space without an explicit hint (x86-64 4-level paging: 47 bits; 5-level and
/// arm64: only for mappings asked for above 2^47/2^48). [`Scheduler::new`] checks it.
#[cfg(target_pointer_width = "64")]
const HIGH_SHIFT: u32 = 48;
#[cfg(target_pointer_width = "64")]
const HIGH_BITS: u32 = 16;
#[cfg(not(target_pointer_width = "64"))]
const HIGH_BITS: u32 = 0;

/// How many bits of a task's generation its wakers carry: 22 on 64-bit targets, 6 on 32-bit
/// ones. A waker is stale once its slot's generation moved on; a stale waker that outlives
/// exactly a multiple of `2^WAKER_GENERATION_BITS` reuses of its slot looks current again and
/// can cause one spurious poll of the task then in the slot (a spurious poll is harmless: a
/// future must tolerate it), never a memory error.
pub const WAKER_GENERATION_BITS: u32 = LOW_BITS + HIGH_BITS;
const TAG_MASK: u32 = ((1u64 << WAKER_GENERATION_BITS) - 1) as u32;

/// The most task slots a [`SchedStorage`] can have (slot indices travel as `u16` in the
/// ready queue).
pub const MAX_TASKS: usize = crate::pool::MAX_BUFFERS;

/// What every waker of a scheduler reaches: the ready queue and the loop's notifier.
struct Shared {
    ready: ReturnQueue<'static>,
    notifier: Notifier<'static>,
}

/// The cross-thread part of one task slot: its state word (generation and scheduled bit) and
/// the way to the shared ready queue. Aligned to 64 bytes, which gives a waker's data pointer
/// free low bits for the generation (and keeps slots woken from different threads on
/// different cache lines).
#[repr(C, align(64))]
pub struct TaskHeader {
    /// `generation << 1 | scheduled`.
    state: AtomicU32,
    /// This header's slot index (set by [`Scheduler::new`]).
    index: u16,
    /// Set by [`Scheduler::new`], before any waker exists.
    shared: Option<&'static Shared>,
}

static_assertions::const_assert!(core::mem::align_of::<TaskHeader>() == 1 << LOW_BITS);

impl TaskHeader {
    #[cfg(not(loom))]
    const fn new() -> TaskHeader {
        TaskHeader {
            state: AtomicU32::new(0),
            index: 0,
            shared: None,
        }
    }

    #[cfg(loom)]
    fn new() -> TaskHeader {
        TaskHeader {
            state: AtomicU32::new(0),
            index: 0,
            shared: None,
        }
    }

    /// A waker's wake, from any thread: schedules the task if the slot still holds
    /// generation `tag` (compared on the waker's bits only). Returns whether this call put the
    /// slot in the ready queue.
    fn wake(&self, tag: u32) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if (s >> 1) & TAG_MASK != tag {
                // Stale: the task this waker belongs to is gone; never touch the slot's new
                // task.
                return false;
            }
            // Compare-and-swap even when the bit is already set (then it writes the same
            // value): the loop's Acquire clear of the bit must synchronise with *this* wake,
            // so that the poll it leads to sees what the waking thread did before waking. A
            // plain load that sees the bit set would publish nothing, and a poll already
            // under way could miss this wake's data. Release for that; the generation check
            // and the set are one atomic step, so a retire in between makes it fail and
            // re-check.
            match self.state.compare_exchange_weak(
                s,
                s | SCHEDULED,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) if s & SCHEDULED != 0 => return false,
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        let Some(shared) = self.shared else {
            return false;
        };
        // The bit went from clear to set here, so the slot is not in the queue: the push
        // keeps the queue's at-most-once rule and cannot fail for lack of room.
        let _ = shared.ready.push(self.index);
        // After the push, as every producer of the loop (see `sync`).
        shared.notifier.notify();
        true
    }
}

impl fmt::Debug for TaskHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.load(Ordering::Relaxed);
        f.debug_struct("TaskHeader")
            .field("index", &self.index)
            .field("generation", &(s >> 1))
            .field("scheduled", &(s & SCHEDULED != 0))
            .finish()
    }
}

/// Storage for a [`Scheduler`] of `N` task slots (`N <= MAX_TASKS`): a 64-byte header per
/// slot and the ready queue.
///
/// All-zero bytes is its empty state ([`ZeroInit`](crate::pool::ZeroInit), and `new` is
/// `const`), except under `--cfg loom`, where `new` builds it. A
/// [`TaskStorage`](super::TaskStorage) holds one; use this alone only to drive a scheduler
/// by hand (the loom models do).
pub struct SchedStorage<const N: usize> {
    headers: [TaskHeader; N],
    ready: ReturnQueueStorage<N>,
    shared: MaybeUninit<Shared>,
}

// SAFETY: `TaskHeader` holds an `AtomicU32` (core's: this impl does not exist under loom),
// zero being generation 0, not scheduled; a `u16`; and an `Option<&'static Shared>`, whose
// all-zero value is `None` (the guaranteed null niche of `Option<&T>`). The ready queue is
// `ZeroInit` (empty), and `MaybeUninit` is valid for any bytes. Zero is the value `new` builds
// (with `shared` uninitialised), and `Scheduler::new` writes what it relies on.
#[cfg(not(loom))]
unsafe impl<const N: usize> crate::pool::ZeroInit for SchedStorage<N> {}

// SAFETY: moving the storage to another thread moves atomics, integers and (before
// `Scheduler::new`) nothing else that is live; after it, the storage is borrowed for ever by
// the scheduler and cannot move. `Shared` holds a `ReturnQueue` and a `Notifier`, both
// `Send + Sync`. (Needed for `StaticSlot<TaskStorage<..>>` in a `static`.)
unsafe impl<const N: usize> Send for SchedStorage<N> {}

impl<const N: usize> SchedStorage<N> {
    const VALID: () = assert!(N <= MAX_TASKS, "SchedStorage: N must be <= 32768");

    /// Empty storage (the same value as all-zero bytes).
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        let () = Self::VALID;
        SchedStorage {
            headers: [const { TaskHeader::new() }; N],
            ready: ReturnQueueStorage::new(),
            shared: MaybeUninit::uninit(),
        }
    }

    /// Empty storage.
    #[cfg(loom)]
    pub fn new() -> Self {
        let () = Self::VALID;
        SchedStorage {
            headers: core::array::from_fn(|_| TaskHeader::new()),
            ready: ReturnQueueStorage::new(),
            shared: MaybeUninit::uninit(),
        }
    }
}

impl<const N: usize> Default for SchedStorage<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for SchedStorage<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchedStorage")
            .field("slots", &N)
            .finish_non_exhaustive()
    }
}

/// [`Scheduler::new`] cannot give its wakers room for the generation: the storage sits at an
/// address with bits above 48 set (possible only for memory mapped on purpose above 2^47; use
/// a `static` or ordinary heap memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressTooHigh {
    /// The address of the last task header.
    pub addr: usize,
}

impl fmt::Display for AddressTooHigh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task storage at {:#x}: wakers need addresses below 2^48 (use a static or the heap)",
            self.addr
        )
    }
}

impl core::error::Error for AddressTooHigh {}

/// The loop's handle to the task headers and the ready queue: schedules slots, makes wakers,
/// drains the ready queue and retires slots. `Copy`; every copy is the same scheduler.
///
/// It knows nothing of futures: the [`Executor`](super::Executor) polls whatever task
/// occupies a slot the drain hands it. Public so that the protocol can be driven (and
/// model-checked, `loom-tests/`) without a reactor.
///
/// Slot indices must be below [`Scheduler::capacity`]; methods given a larger one do nothing
/// (or return `None`).
#[derive(Clone, Copy)]
pub struct Scheduler {
    headers: &'static [TaskHeader],
    shared: &'static Shared,
    /// The loop's side stays on the loop's thread (the ready queue has one consumer); only
    /// wakers travel.
    _loop_thread: PhantomData<*const ()>,
}

impl Scheduler {
    /// A scheduler over `storage` whose wakers notify the loop through `notifier` (the
    /// reactor's: [`Reactor::notifier`](crate::reactor::Reactor::notifier)). Every slot starts
    /// at generation 0, not scheduled.
    ///
    /// `'static` because a [`Waker`] may outlive everything: another thread can keep one and
    /// wake it after the executor is gone, so what it points to must stay valid for ever.
    ///
    /// # Errors
    ///
    /// [`AddressTooHigh`] when the storage's address leaves no room for the generation bits
    /// (see [`WAKER_GENERATION_BITS`]).
    pub fn new<const N: usize>(
        storage: &'static mut SchedStorage<N>,
        notifier: Notifier<'static>,
    ) -> Result<Scheduler, AddressTooHigh> {
        let () = SchedStorage::<N>::VALID;
        let SchedStorage {
            headers,
            ready,
            shared,
        } = storage;
        if let Some(last) = headers.last() {
            let addr = (last as *const TaskHeader).addr();
            if !fits_tag(addr) {
                return Err(AddressTooHigh { addr });
            }
        }
        let ready: &'static ReturnQueueStorage<N> = ready;
        let queue = ready.queue();
        // Forget anything a previous life of this memory left (fresh storage is empty).
        queue.drain(|_| {});
        let shared: &'static Shared = shared.write(Shared {
            ready: queue,
            notifier,
        });
        for (i, h) in headers.iter_mut().enumerate() {
            h.state.store(0, Ordering::Relaxed);
            h.index = i as u16;
            h.shared = Some(shared);
        }
        Ok(Scheduler {
            headers,
            shared,
            _loop_thread: PhantomData,
        })
    }

    /// Task slots.
    pub fn capacity(&self) -> usize {
        self.headers.len()
    }

    /// The generation of `slot` (the task in it now, or the next one when it is free).
    pub fn generation(&self, slot: usize) -> Option<u32> {
        Some(self.headers.get(slot)?.state.load(Ordering::Relaxed) >> 1)
    }

    /// Whether `slot` is scheduled (in the ready queue, or about to be pushed there).
    pub fn is_scheduled(&self, slot: usize) -> bool {
        self.headers
            .get(slot)
            .is_some_and(|h| h.state.load(Ordering::Relaxed) & SCHEDULED != 0)
    }

    /// A waker for the task now in `slot`: it schedules that task, from any thread, and does
    /// nothing once the slot has been [retired](Scheduler::retire). No allocation: its data
    /// is the slot's header address with the generation in free address bits; clone and drop
    /// do nothing.
    pub fn waker(&self, slot: usize) -> Option<Waker> {
        let h = self.headers.get(slot)?;
        let generation = h.state.load(Ordering::Relaxed) >> 1;
        let raw = RawWaker::new(pack(h, generation), &VTABLE);
        // SAFETY: the vtable's contract holds: `clone` returns a waker with the same data and
        // vtable, `wake`/`wake_by_ref`/`drop` only read the header the data points to, which
        // lives in `'static` storage that is never mutably borrowed after `Scheduler::new`,
        // and every access to it is atomic or immutable, so the waker is safe to use, clone
        // and drop from any thread (`Send + Sync`), any number of times, for ever.
        Some(unsafe { Waker::from_raw(raw) })
    }

    /// [`Scheduler::waker`] for a `generation` the caller keeps track of, without reading
    /// the slot's header: the loop knows its slots' generations (they move on only in
    /// [`Scheduler::retire`], which it calls). With a generation that is not the slot's, the
    /// waker is stale from the start.
    pub fn waker_at(&self, slot: usize, generation: u32) -> Option<Waker> {
        let h = self.headers.get(slot)?;
        let raw = RawWaker::new(pack(h, generation), &VTABLE);
        // SAFETY: as in `Scheduler::waker`: the same data (a header's address and a
        // generation tag) and vtable.
        Some(unsafe { Waker::from_raw(raw) })
    }

    /// [`Scheduler::is_current_waker`] for a `generation` the caller keeps track of (see
    /// [`Scheduler::waker_at`]), without reading the slot's header.
    pub fn is_waker_at(&self, slot: usize, generation: u32, waker: &Waker) -> bool {
        let Some(h) = self.headers.get(slot) else {
            return false;
        };
        core::ptr::eq(waker.vtable(), &VTABLE) && waker.data() == pack(h, generation)
    }

    /// Whether `waker` is this scheduler's waker for the task now in `slot` (not a stale
    /// one, not another executor's).
    pub fn is_current_waker(&self, slot: usize, waker: &Waker) -> bool {
        let Some(h) = self.headers.get(slot) else {
            return false;
        };
        let generation = h.state.load(Ordering::Relaxed) >> 1;
        core::ptr::eq(waker.vtable(), &VTABLE) && waker.data() == pack(h, generation)
    }

    /// Schedules the task now in `slot` from the loop's thread, without notifying the loop:
    /// for wakes during a turn, before the executor's poll phase drains the queue (a wake
    /// that might be followed by a sleep must use [`Scheduler::wake`]). Returns whether the
    /// slot was newly queued.
    pub fn schedule(&self, slot: usize) -> bool {
        let Some(h) = self.headers.get(slot) else {
            return false;
        };
        // Relaxed: the loop publishes nothing to itself. Pushes only on a clear-to-set
        // transition, so the slot is in the queue at most once.
        if h.state.fetch_or(SCHEDULED, Ordering::Relaxed) & SCHEDULED != 0 {
            return false;
        }
        let _ = self.shared.ready.push(h.index);
        true
    }

    /// [`Scheduler::schedule`], then notifies the loop (it does not sleep through the wake):
    /// for code that may run outside a turn (a spawn before the loop runs).
    pub fn wake(&self, slot: usize) -> bool {
        let queued = self.schedule(slot);
        if queued {
            self.shared.notifier.notify();
        }
        queued
    }

    /// Loop side: takes every scheduled slot out of the ready queue, clears its scheduled bit
    /// and then calls `f` with it (so a wake during `f`'s poll schedules the slot again).
    /// Returns how many. Call it after [`WakeSignal::park`](crate::sync::WakeSignal::park)
    /// each turn, as with every queue the loop drains.
    ///
    /// `f` may get a slot whose task has finished (it was retired after it was scheduled):
    /// skip it. A slot is handed out once per scheduling.
    pub fn drain(&self, mut f: impl FnMut(usize)) -> usize {
        let headers = self.headers;
        self.shared.ready.drain(|id| {
            let Some(h) = headers.get(usize::from(id)) else {
                return;
            };
            // Acquire: synchronises with every waker's Release CAS before it (see
            // `TaskHeader::wake`), so the poll `f` runs sees what the wakers' threads did
            // before waking. Before `f`: a wake during the poll sets the bit again and queues
            // the slot for another poll.
            h.state.fetch_and(!SCHEDULED, Ordering::Acquire);
            f(usize::from(id));
        })
    }

    /// The task in `slot` finished: move the slot to the next generation, so its wakers go
    /// stale. The scheduled bit is kept: a wake that already queued the slot stays the one
    /// entry, and the next task spawned in the slot finds it scheduled (its first poll),
    /// instead of queueing it a second time.
    ///
    /// The generation that follows `generation` is [`next_generation`]`(generation)`.
    pub fn retire(&self, slot: usize) {
        if let Some(h) = self.headers.get(slot) {
            // An RMW on the same word as the wakers' CAS: a wake reading the old generation
            // fails its CAS and re-checks. Nothing is published through it.
            h.state.fetch_add(GEN_ONE, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("capacity", &self.capacity())
            .field("ready_empty", &self.shared.ready.is_empty())
            .finish()
    }
}

/// The generation a slot moves to when it is [retired](Scheduler::retire) at `generation`
/// (generations are 31 bits and wrap).
pub const fn next_generation(generation: u32) -> u32 {
    generation.wrapping_add(1) & (u32::MAX >> 1)
}

/// Whether a header at `addr` leaves the high generation bits free.
fn fits_tag(addr: usize) -> bool {
    #[cfg(target_pointer_width = "64")]
    {
        addr >> HIGH_SHIFT == 0
    }
    #[cfg(not(target_pointer_width = "64"))]
    {
        let _ = addr;
        true
    }
}

/// A waker's data: the header's address (with its provenance) carrying the generation's low
/// bits below the 64-byte alignment and, on 64-bit targets, its high bits above bit 48.
fn pack(h: &'static TaskHeader, generation: u32) -> *const () {
    let tag = (generation & TAG_MASK) as usize;
    (h as *const TaskHeader)
        .cast::<()>()
        .map_addr(|a| a | (tag & LOW_MASK) | high_bits(tag))
}

#[cfg(target_pointer_width = "64")]
fn high_bits(tag: usize) -> usize {
    (tag >> LOW_BITS) << HIGH_SHIFT
}

#[cfg(not(target_pointer_width = "64"))]
fn high_bits(_tag: usize) -> usize {
    0
}

/// The header and the generation tag a waker's data carries.
fn unpack(data: *const ()) -> (*const TaskHeader, u32) {
    let a = data.addr();
    #[cfg(target_pointer_width = "64")]
    let (addr_mask, high) = ((1usize << HIGH_SHIFT) - 1, (a >> HIGH_SHIFT) << LOW_BITS);
    #[cfg(not(target_pointer_width = "64"))]
    let (addr_mask, high) = (usize::MAX, 0);
    let tag = ((a & LOW_MASK) | high) as u32;
    let ptr = data
        .map_addr(|a| a & addr_mask & !LOW_MASK)
        .cast::<TaskHeader>();
    (ptr, tag)
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

// Each vtable function gets the data pointer of a waker made by `Scheduler::waker` (or cloned
// from one): a `&'static TaskHeader`'s address, tagged by `pack`.

fn clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn wake(data: *const ()) {
    wake_by_ref(data);
}

fn wake_by_ref(data: *const ()) {
    let (ptr, tag) = unpack(data);
    // SAFETY: `unpack` undoes `pack`: `ptr` has the address and the provenance of a
    // `&'static TaskHeader` (only the tag bits, which `pack` set and this clears, differ), so
    // it is valid for reads for ever; headers are never mutably borrowed after
    // `Scheduler::new` (they sit behind `&'static [TaskHeader]`), and `wake` only uses atomics
    // and immutable fields.
    let header = unsafe { &*ptr };
    header.wake(tag);
}

fn drop_waker(_data: *const ()) {}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::pool::leak_zeroed;
    use crate::sync::{Wake, WakeSignal};
    use core::sync::atomic::AtomicUsize;
    use std::vec::Vec;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn sched<const N: usize>() -> (Scheduler, &'static WakeSignal, &'static Count) {
        let signal: &'static WakeSignal = std::boxed::Box::leak(std::boxed::Box::default());
        let count: &'static Count = std::boxed::Box::leak(std::boxed::Box::default());
        let s = Scheduler::new(
            leak_zeroed::<SchedStorage<N>>(),
            Notifier::new(signal, count),
        )
        .unwrap();
        (s, signal, count)
    }

    fn drained(s: &Scheduler) -> Vec<usize> {
        let mut v = Vec::new();
        s.drain(|slot| v.push(slot));
        v
    }

    static_assertions::assert_impl_all!(Scheduler: Copy);
    static_assertions::assert_not_impl_any!(Scheduler: Send, Sync);
    static_assertions::assert_impl_all!(SchedStorage<4>: Send, crate::pool::ZeroInit);

    #[test]
    fn pack_round_trips_every_tag_bit() {
        let (s, ..) = sched::<2>();
        let h = &s.headers[1];
        for generation in [0, 1, 63, 64, 65, TAG_MASK, TAG_MASK + 1, u32::MAX >> 1] {
            let data = pack(h, generation);
            let (ptr, tag) = unpack(data);
            assert!(core::ptr::eq(ptr, h));
            assert_eq!(tag, generation & TAG_MASK, "generation {generation}");
        }
        assert_eq!(
            WAKER_GENERATION_BITS,
            if cfg!(target_pointer_width = "64") {
                22
            } else {
                6
            }
        );
    }

    #[test]
    fn a_wake_queues_once_and_notifies() {
        let (s, signal, count) = sched::<4>();
        let w = s.waker(2).unwrap();
        w.wake_by_ref();
        w.wake_by_ref();
        let c = w.clone();
        c.wake();
        assert!(s.is_scheduled(2));
        assert_eq!(drained(&s), [2], "one entry for three wakes");
        assert!(!s.is_scheduled(2));
        assert_eq!(drained(&s), []);
        // The loop was awake: the notification only stops its next sleep.
        assert_eq!(count.0.load(Ordering::Relaxed), 0);
        assert!(!signal.park(|may_block| may_block));
        // Asleep: the next wake calls `Wake::wake`.
        signal.park(|may_block| {
            assert!(may_block);
            w.wake_by_ref();
        });
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert_eq!(drained(&s), [2]);
    }

    #[test]
    fn a_stale_waker_does_nothing_and_a_retired_scheduled_slot_is_queued_once() {
        let (s, ..) = sched::<2>();
        let old = s.waker(0).unwrap();
        assert!(s.is_current_waker(0, &old));
        s.retire(0);
        assert_eq!(s.generation(0), Some(1));
        assert!(!s.is_current_waker(0, &old));
        old.wake_by_ref();
        assert!(!s.is_scheduled(0));
        assert_eq!(drained(&s), []);
        // Woken, then retired before the drain: the new task finds the slot scheduled and
        // its own scheduling does not queue it twice.
        let w1 = s.waker(0).unwrap();
        w1.wake_by_ref();
        s.retire(0);
        assert!(s.is_scheduled(0));
        assert!(!s.schedule(0), "already queued");
        assert_eq!(drained(&s), [0]);
        assert_eq!(drained(&s), []);
        w1.wake_by_ref();
        assert_eq!(drained(&s), [], "w1 is stale");
    }

    #[test]
    fn wakes_from_other_threads_clone_and_drop_there() {
        let (s, ..) = sched::<8>();
        let wakers: Vec<Waker> = (0..8).map(|i| s.waker(i).unwrap()).collect();
        std::thread::scope(|sc| {
            for w in &wakers {
                let w = w.clone();
                sc.spawn(move || {
                    let c = w.clone();
                    drop(w);
                    c.wake_by_ref();
                    c.wake();
                });
            }
        });
        let mut got = drained(&s);
        got.sort();
        assert_eq!(got, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn a_waker_made_for_a_known_generation_is_the_current_one_until_retired() {
        let (s, ..) = sched::<2>();
        let g = s.generation(1).unwrap();
        let w = s.waker_at(1, g).unwrap();
        assert!(s.is_current_waker(1, &w));
        assert!(s.is_waker_at(1, g, &w));
        assert!(!s.is_waker_at(0, g, &w), "another slot's");
        assert!(s.is_waker_at(1, g, &s.waker(1).unwrap()));
        w.wake_by_ref();
        assert_eq!(drained(&s), [1]);
        s.retire(1);
        let next = next_generation(g);
        assert_eq!(s.generation(1), Some(next));
        assert!(!s.is_waker_at(1, next, &w));
        w.wake_by_ref();
        assert_eq!(drained(&s), [], "stale");
        assert!(s.is_current_waker(1, &s.waker_at(1, next).unwrap()));
        assert_eq!(next_generation(u32::MAX >> 1), 0, "31 bits, wrapping");
        assert!(s.waker_at(2, 0).is_none());
    }

    #[test]
    fn out_of_range_slots_are_ignored() {
        let (s, ..) = sched::<1>();
        assert!(s.waker(1).is_none());
        assert!(!s.schedule(1));
        assert!(!s.wake(5));
        s.retire(9);
        assert_eq!(s.generation(1), None);
        assert_eq!(drained(&s), []);
        let (empty, ..) = sched::<0>();
        assert_eq!(empty.capacity(), 0);
    }
}
