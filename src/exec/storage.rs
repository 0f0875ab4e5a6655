//! [`TaskStorage`]: the executor's memory, sized by const generics, zero-initialisable, and
//! split into typed parts once the future type is known.

use core::cell::RefCell;
use core::fmt;
use core::mem::{MaybeUninit, align_of, size_of};

use super::conn::Io;
use super::sched::{SchedStorage, Scheduler};
use super::{ExecCore, ExecError};
use crate::sync::Notifier;

/// The alignment of a task's future slot; a future needing more is refused
/// ([`ExecError::FutureAlign`](super::ExecError::FutureAlign)).
pub const FUTURE_ALIGN: usize = 16;

/// Room for one task's future: `SIZE` bytes, aligned to [`FUTURE_ALIGN`].
#[repr(C, align(16))]
struct FutureSlot<const SIZE: usize>(MaybeUninit<[u8; SIZE]>);

static_assertions::const_assert!(align_of::<FutureSlot<1>>() == FUTURE_ALIGN);

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
/// Memory: about `TASKS * (SIZE + 64 + 660)` bytes (rounded up to 16 per future). All-zero
/// bytes is its empty state ([`ZeroInit`](crate::pool::ZeroInit)): place it in a `static`
/// through [`StaticSlot`](crate::pool::StaticSlot) (it lands in `.bss`) or leak it once at
/// start-up; never build it on the stack. It must be `'static`: a task's waker may outlive
/// the executor (another thread can keep one), and what it points to must stay valid.
pub struct TaskStorage<const TASKS: usize, const SIZE: usize> {
    sched: SchedStorage<TASKS>,
    io: [MaybeUninit<RefCell<Io>>; TASKS],
    core: MaybeUninit<ExecCore>,
    free: [u16; TASKS],
    live: [bool; TASKS],
    futures: [FutureSlot<SIZE>; TASKS],
}

// SAFETY: the scheduler storage is ZeroInit (its own impl); `MaybeUninit` fields and the
// future slots (`MaybeUninit` bytes) are valid for any bytes; `u16` and `bool` are valid as
// zero. Nothing reads the `MaybeUninit` fields before `split` writes them. (Under loom the
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
    pub(super) io: &'static [RefCell<Io>],
    pub(super) core: &'static mut MaybeUninit<ExecCore>,
    pub(super) free: &'static mut [u16],
    pub(super) live: &'static mut [bool],
    pub(super) futures: &'static mut [MaybeUninit<Fut>],
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
            futures,
        } = self;
        let sched = Scheduler::new(sched, notifier).map_err(ExecError::AddressTooHigh)?;
        for cell in io.iter_mut() {
            cell.write(RefCell::new(Io::new()));
        }
        // SAFETY: every element was written just above, and `MaybeUninit<T>` has the layout
        // of `T`, so the array is an initialised `[RefCell<Io>; TASKS]`; the `&'static mut`
        // borrow is exclusive and turned into a shared one.
        let io: &'static [RefCell<Io>] = unsafe {
            &*(io as *mut [MaybeUninit<RefCell<Io>>; TASKS]).cast::<[RefCell<Io>; TASKS]>()
        };
        // Free slots in a stack, lowest index on top.
        for (i, f) in free.iter_mut().enumerate() {
            *f = (TASKS - 1 - i) as u16;
        }
        live.fill(false);
        let base = futures.as_mut_ptr().cast::<MaybeUninit<Fut>>();
        // SAFETY: `base` points to `TASKS` slots of `size_of::<FutureSlot<SIZE>>() >= SIZE >=
        // size_of::<Fut>()` bytes each (checked above), so `TASKS` consecutive `Fut`s fit in
        // the array it points into, and its provenance covers the whole array; it is aligned
        // to `FUTURE_ALIGN >= align_of::<Fut>()` (checked above), and `size_of::<Fut>()` is a
        // multiple of its alignment, so every element is aligned. `MaybeUninit` is valid for
        // any bytes. The borrow is `'static` and exclusive (taken from `&'static mut self`).
        // Each future stays at its element for its whole life: pinned in place.
        let futures: &'static mut [MaybeUninit<Fut>] =
            unsafe { core::slice::from_raw_parts_mut(base, TASKS) };
        Ok(Parts {
            sched,
            io,
            core: core_slot,
            free,
            live,
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
        #[repr(align(32))]
        struct Aligned(#[allow(dead_code)] u8);
        let storage = leak_zeroed::<TaskStorage<3, 64>>();
        assert!(matches!(
            storage.split::<Aligned>(notifier()),
            Err(ExecError::FutureAlign { align: 32 })
        ));
        let storage = leak_zeroed::<TaskStorage<3, 64>>();
        let parts = storage.split::<Probe>(notifier()).unwrap();
        assert_eq!((parts.futures.len(), parts.io.len()), (3, 3));
        assert_eq!(parts.free, [2, 1, 0], "lowest slot on top");
        assert_eq!(parts.sched.capacity(), 3);
        for (i, slot) in parts.futures.iter_mut().enumerate() {
            let id = i as u64 + 1;
            slot.write(Probe {
                id,
                bytes: [id; 5],
                drops: &DROPS,
            });
        }
        let mut cx = Context::from_waker(Waker::noop());
        for (i, slot) in parts.futures.iter_mut().enumerate() {
            // SAFETY: written above, never moved.
            let fut = unsafe { Pin::new_unchecked(slot.assume_init_mut()) };
            assert_eq!(fut.poll(&mut cx), Poll::Ready(i as u64 + 1));
            // SAFETY: written above, dropped once.
            unsafe { slot.assume_init_drop() };
        }
        assert_eq!(DROPS.load(core::sync::atomic::Ordering::Relaxed), 3);
    }
}
