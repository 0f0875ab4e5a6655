//! [`TaskStorage`]: the executor's memory, sized by const generics, zero-initialisable, and
//! split into typed parts once the future type is known.

use core::fmt;
use core::mem::{MaybeUninit, align_of, size_of};

use super::conn::IoCell;
use super::sched::{SchedStorage, Scheduler};
use super::{ExecCore, ExecError};
use crate::sync::Notifier;

/// The alignment of a task's future slot, a cache line; a future needing more is refused
/// ([`ExecError::FutureAlign`](super::ExecError::FutureAlign)).
///
/// Each slot starts a cache line, so where a future's fields fall in the cache is the same
/// for every task: a task touches the fewest lines its layout allows each time it runs.
pub const FUTURE_ALIGN: usize = 64;

/// Room for one task's future: `SIZE` bytes, aligned to [`FUTURE_ALIGN`].
#[repr(C, align(64))]
struct FutureSlot<const SIZE: usize>(MaybeUninit<[u8; SIZE]>);

static_assertions::const_assert!(align_of::<FutureSlot<1>>() == FUTURE_ALIGN);

/// The future slots typed for futures of type `Fut`: one `MaybeUninit<Fut>` at the start of
/// each slot (`stride` bytes apart, a multiple of [`FUTURE_ALIGN`]). Owns the slots, as the
/// `&'static mut` borrow it was made from did.
pub(super) struct FutureSlots<Fut: 'static> {
    base: core::ptr::NonNull<MaybeUninit<Fut>>,
    stride: usize,
    len: usize,
    _slots: core::marker::PhantomData<&'static mut [MaybeUninit<Fut>]>,
}

impl<Fut: 'static> FutureSlots<Fut> {
    /// Slots.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Slot `i` (panics when `i >= len`, as a slice index does).
    pub(super) fn get_mut(&mut self, i: usize) -> &mut MaybeUninit<Fut> {
        assert!(i < self.len, "future slot {i} out of {}", self.len);
        // SAFETY: `FutureSlots` is made (in `TaskStorage::split`) from the exclusive
        // `&'static mut` borrow of `len` slots of `stride` bytes each, each slot holding at
        // least `size_of::<Fut>()` bytes and aligned to `FUTURE_ALIGN >= align_of::<Fut>()`
        // (checked there), with provenance over the whole array. `i < len`, so the pointer
        // is in bounds, aligned, and the `MaybeUninit<Fut>` there is valid for any bytes.
        // Slots do not overlap, and `&mut self` makes this the only reference into the
        // slots for its lifetime. Slots never move: what is pinned there stays there.
        unsafe { &mut *self.base.as_ptr().byte_add(i * self.stride) }
    }
}

/// Everything an [`Executor`](super::Executor) uses: `TASKS` task slots, each with room for
/// a future of up to `SIZE` bytes, plus per task a 64-byte scheduler header, the state the
/// executor keeps about the task's connection (its unread receive leases, up to
/// [`SNAPSHOT_LEASES`](super::SNAPSHOT_LEASES)) and a few words.
///
/// One future type per pool: the type of the handler's future. Its size is known to the
/// compiler but cannot be named on stable Rust (`async fn` futures have no nameable type), so
/// the storage takes it as a number: [`future_size`](super::future_size) computes it from
/// the handler in a constant, or pick a round number and let
/// [`Executor::new`](super::Executor::new) name the size needed
/// ([`ExecError::FutureTooLarge`](super::ExecError::FutureTooLarge)).
///
/// ```
/// use ringlet::exec::{future_size, Connection, TaskStorage};
/// use ringlet::pool::StaticSlot;
///
/// async fn handler(conn: Connection) {
///     let _ = conn;
/// }
///
/// // 256 tasks, each exactly as large as `handler`'s future.
/// static TASKS: StaticSlot<TaskStorage<256, { future_size(&handler) }>> = StaticSlot::new();
/// ```
///
/// Memory: about `TASKS * (SIZE + 64 + 650)` bytes (`SIZE` rounded up to 64 per future). All-zero
/// bytes is its empty state ([`ZeroInit`](crate::pool::ZeroInit)): place it in a `static`
/// through [`StaticSlot`](crate::pool::StaticSlot) (it lands in `.bss`) or leak it once at
/// start-up; never build it on the stack. It must be `'static`: a task's waker may outlive
/// the executor (another thread can keep one), and what it points to must stay valid.
pub struct TaskStorage<const TASKS: usize, const SIZE: usize> {
    sched: SchedStorage<TASKS>,
    io: [MaybeUninit<IoCell>; TASKS],
    core: MaybeUninit<ExecCore>,
    free: [u16; TASKS],
    live: [bool; TASKS],
    local: [LocalSlot; TASKS],
    local_ready: [u16; TASKS],
    futures: [FutureSlot<SIZE>; TASKS],
}

/// The loop's own scheduling state of a task slot, which no other thread sees: the slot's
/// generation as the loop knows it (it moves on only when the loop retires the slot), and
/// whether the slot is on this turn's local ready list. All-zero is its initial state (the
/// scheduler starts every slot at generation 0).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct LocalSlot {
    pub(super) generation: u32,
    pub(super) queued: bool,
}

// SAFETY: the scheduler storage is ZeroInit (its own impl); `MaybeUninit` fields and the
// future slots (`MaybeUninit` bytes) are valid for any bytes; `u16`, `bool` and `LocalSlot`
// (a `u32` and a `bool`) are valid as zero. Nothing reads the `MaybeUninit` fields before `split` writes them. (Under loom the
// scheduler's atomics are loom's: no ZeroInit there.)
#[cfg(not(loom))]
unsafe impl<const TASKS: usize, const SIZE: usize> crate::pool::ZeroInit
    for TaskStorage<TASKS, SIZE>
{
}

// SAFETY: before `split` the storage holds no live value but atomics and integers (the
// `MaybeUninit` fields are unwritten), so moving it between threads moves plain memory; `split`
// takes it `&'static mut` for ever, and the executor built on it is not `Send`, so the values
// it writes there (leases, wakers, futures) never leave the loop's thread. This lets a
// `static StaticSlot<TaskStorage<..>>` exist (`StaticSlot` is `Sync` for `Send` contents).
unsafe impl<const TASKS: usize, const SIZE: usize> Send for TaskStorage<TASKS, SIZE> {}

impl<const TASKS: usize, const SIZE: usize> fmt::Debug for TaskStorage<TASKS, SIZE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskStorage")
            .field("tasks", &TASKS)
            .field("future_size", &SIZE)
            .finish_non_exhaustive()
    }
}

/// The storage split for futures of type `Fut`.
pub(super) struct Parts<Fut: 'static> {
    pub(super) sched: Scheduler,
    pub(super) io: &'static [IoCell],
    pub(super) core: &'static mut MaybeUninit<ExecCore>,
    pub(super) free: &'static mut [u16],
    pub(super) live: &'static mut [bool],
    pub(super) local: &'static mut [LocalSlot],
    pub(super) local_ready: &'static mut [u16],
    pub(super) futures: FutureSlots<Fut>,
}

impl<const TASKS: usize, const SIZE: usize> TaskStorage<TASKS, SIZE> {
    /// Checks that `Fut` fits a slot, builds the scheduler and the per-task state, and hands
    /// out the parts. Every task slot is free.
    pub(super) fn split<Fut: 'static>(
        &'static mut self,
        notifier: Notifier<'static>,
    ) -> Result<Parts<Fut>, ExecError> {
        if size_of::<Fut>() > SIZE {
            return Err(ExecError::FutureTooLarge {
                size: size_of::<Fut>(),
                capacity: SIZE,
            });
        }
        if align_of::<Fut>() > FUTURE_ALIGN {
            return Err(ExecError::FutureAlign {
                align: align_of::<Fut>(),
            });
        }
        let TaskStorage {
            sched,
            io,
            core: core_slot,
            free,
            live,
            local,
            local_ready,
            futures,
        } = self;
        let sched = Scheduler::new(sched, notifier).map_err(ExecError::AddressTooHigh)?;
        for cell in io.iter_mut() {
            cell.write(IoCell::new());
        }
        // SAFETY: every element was written just above, and `MaybeUninit<T>` has the layout
        // of `T`, so the array is an initialised `[IoCell; TASKS]`; the `&'static mut`
        // borrow is exclusive and turned into a shared one.
        let io: &'static [IoCell] =
            unsafe { &*(io as *mut [MaybeUninit<IoCell>; TASKS]).cast::<[IoCell; TASKS]>() };
        // Free slots in a stack, lowest index on top.
        for (i, f) in free.iter_mut().enumerate() {
            *f = (TASKS - 1 - i) as u16;
        }
        live.fill(false);
        local.fill(LocalSlot::default());
        // Slot `i` holds its future at its own start (checked above: `Fut` fits `SIZE` and
        // the slot's alignment); `FutureSlots::get_mut` relies on exactly this.
        let futures = FutureSlots {
            base: core::ptr::NonNull::from(futures).cast::<MaybeUninit<Fut>>(),
            stride: size_of::<FutureSlot<SIZE>>(),
            len: TASKS,
            _slots: core::marker::PhantomData,
        };
        Ok(Parts {
            sched,
            io,
            core: core_slot,
            free,
            live,
            local,
            local_ready,
            futures,
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::pool::leak_zeroed;
    use crate::sync::{Wake, WakeSignal};
    use core::future::Future;
    use core::pin::Pin;
    use core::task::{Context, Poll, Waker};

    struct NoWake;

    impl Wake for NoWake {
        fn wake(&self) {}
    }

    fn notifier() -> Notifier<'static> {
        static SIGNAL: WakeSignal = WakeSignal::new();
        static WAKE: NoWake = NoWake;
        Notifier::new(&SIGNAL, &WAKE)
    }

    /// A future with a destructor that counts, and a poll that checks its own bytes.
    struct Probe {
        id: u64,
        bytes: [u64; 5],
        drops: &'static core::sync::atomic::AtomicUsize,
    }

    impl Future for Probe {
        type Output = u64;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u64> {
            assert!(self.bytes.iter().all(|&b| b == self.id));
            Poll::Ready(self.id)
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.drops
                .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn split_checks_the_future_and_hands_out_disjoint_pinned_slots() {
        static DROPS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
        let small = leak_zeroed::<TaskStorage<2, 16>>();
        assert!(matches!(
            small.split::<Probe>(notifier()),
            Err(ExecError::FutureTooLarge { size, capacity: 16 }) if size == size_of::<Probe>()
        ));
        #[repr(align(128))]
        struct Aligned(#[allow(dead_code)] u8);
        let storage = leak_zeroed::<TaskStorage<3, 128>>();
        assert!(matches!(
            storage.split::<Aligned>(notifier()),
            Err(ExecError::FutureAlign { align: 128 })
        ));
        let storage = leak_zeroed::<TaskStorage<3, 64>>();
        let parts = storage.split::<Probe>(notifier()).unwrap();
        let mut parts = parts;
        assert_eq!((parts.futures.len(), parts.io.len()), (3, 3));
        assert_eq!(parts.free, [2, 1, 0], "lowest slot on top");
        assert_eq!(parts.sched.capacity(), 3);
        for i in 0..3 {
            let slot = parts.futures.get_mut(i);
            assert_eq!(
                (slot as *mut MaybeUninit<Probe>).addr() % FUTURE_ALIGN,
                0,
                "every slot starts a cache line"
            );
            let id = i as u64 + 1;
            slot.write(Probe {
                id,
                bytes: [id; 5],
                drops: &DROPS,
            });
        }
        let mut cx = Context::from_waker(Waker::noop());
        for i in 0..3 {
            let slot = parts.futures.get_mut(i);
            // SAFETY: written above, never moved.
            let fut = unsafe { Pin::new_unchecked(slot.assume_init_mut()) };
            assert_eq!(fut.poll(&mut cx), Poll::Ready(i as u64 + 1));
            // SAFETY: written above, dropped once.
            unsafe { slot.assume_init_drop() };
        }
        assert_eq!(DROPS.load(core::sync::atomic::Ordering::Relaxed), 3);
    }
}
