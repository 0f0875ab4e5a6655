//! [`Wake`], [`WakeSignal`] and [`Notifier`]: the protocol described in the [module
//! documentation](super).

use core::fmt;

use super::atomic::{AtomicU32, Ordering};

/// How a producer ends the loop's sleep: the one place the kernel (or, under loom, a model of
/// it) enters the wake protocol.
///
/// The real implementations write the loop's eventfd:
/// [`sys::eventfd::WakeFd`](crate::sys::eventfd::WakeFd) (in the loop's storage, the one to use
/// with `'static` storage) and [`sys::eventfd::EventFd`](crate::sys::eventfd::EventFd). The loom
/// models implement it with a mutex-and-condvar permit.
///
/// The sleeping side is not part of the trait: the loop blocks in whatever it waits on anyway
/// (`epoll_wait`, `io_uring_enter`, with a timer's timeout), inside [`WakeSignal::park`], with
/// the eventfd among the things it watches.
pub trait Wake: Sync {
    /// Ends the loop's current sleep, or, if the loop has announced a sleep but not yet
    /// blocked, makes that block return at once: a pending wake is remembered until the loop
    /// consumes it (an eventfd counter, a permit), never dropped.
    ///
    /// Called from any thread, at most once per notification, only when the loop may be
    /// asleep. It cannot report failure (it runs in `Drop`s); an implementation whose wake can
    /// fail must make the loop find out by other means.
    fn wake(&self);
}

/// The loop is running and owes no drain. Zero, so zeroed storage is this state.
const AWAKE: u32 = 0;
/// Something was published since the loop's last [`WakeSignal::park`] returned.
const NOTIFIED: u32 = 1;
/// The loop announced that it may block.
const SLEEPING: u32 = 2;

/// The loop's wake-up state, shared by the loop and every thread that hands it work.
///
/// Producers call [`WakeSignal::notify`] (usually through a [`Notifier`]) *after* publishing
/// their item; the loop waits only through [`WakeSignal::park`] and drains its queues after
/// it. See the [module documentation](super) for the protocol and why no wake-up is lost.
///
/// One signal serves every cross-thread source of the loop (returned buffers, executor
/// wakers): each has its own queue, all notify the same signal, and the loop drains all of
/// them after every `park`.
///
/// All-zero bytes is the initial state (awake, nothing pending): the type is
/// [`ZeroInit`](crate::pool::ZeroInit) and its `new` is `const` (both only without `--cfg
/// loom`).
pub struct WakeSignal {
    state: AtomicU32,
}

// `WakeSignal` is `ZeroInit` (without loom): the impl is in `pool::zero`, as `unsafe` code
// belongs in `pool` and `sys`. It relies on the only field being an `AtomicU32` whose zero is
// AWAKE.

impl WakeSignal {
    /// A signal in the initial state: the loop awake, nothing pending.
    #[cfg(not(loom))]
    pub const fn new() -> WakeSignal {
        WakeSignal {
            state: AtomicU32::new(AWAKE),
        }
    }

    /// A signal in the initial state: the loop awake, nothing pending.
    #[cfg(loom)]
    pub fn new() -> WakeSignal {
        WakeSignal {
            state: AtomicU32::new(AWAKE),
        }
    }

    /// Producer side, from any thread, *after* the item is published: tells the loop there is
    /// something to drain, and calls `wake` if the loop may be asleep (no other notification
    /// since it announced its sleep). Returns whether `wake` was called.
    ///
    /// The swap is `Release`: the loop's `Acquire` swap in [`WakeSignal::park`] that reads
    /// this notification (or a later one) makes everything this thread did before, the
    /// publication of the item included, visible to the loop.
    pub fn notify(&self, wake: &dyn Wake) -> bool {
        if self.state.swap(NOTIFIED, Ordering::Release) == SLEEPING {
            wake.wake();
            true
        } else {
            false
        }
    }

    /// Loop side: one wait of the loop, and the only way it may block.
    ///
    /// Calls `wait(true)` if the loop may block (nothing was notified since the last `park`;
    /// any producer that notifies from now on calls [`Wake::wake`]), or `wait(false)` if it
    /// must not (a notification is pending: poll without blocking). `wait` is the loop's
    /// ordinary wait (`epoll_wait`, `io_uring_enter`, bounded by its next timer, watching the
    /// eventfd); it may return early for any reason. Afterwards the loop is awake again, and
    /// every item whose notification came before this point is visible to the drain that the
    /// loop must run next, on every source that notifies this signal.
    ///
    /// Call it from the loop's thread only (one loop per signal); do not call it from inside
    /// `wait`.
    pub fn park<R>(&self, wait: impl FnOnce(bool) -> R) -> R {
        // L1: announce the sleep, unless a notification is pending. Relaxed: the loop publishes
        // nothing by sleeping; a failure only means "do not block" and L2 follows anyway.
        let may_block = self
            .state
            .compare_exchange(AWAKE, SLEEPING, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        let r = wait(may_block);
        // L2: awake again. An RMW, so it cannot erase a notification it does not read, and
        // Acquire, so it synchronises with every notification before it (see the module docs).
        self.state.swap(AWAKE, Ordering::Acquire);
        r
    }
}

impl Default for WakeSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for WakeSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state.load(Ordering::Relaxed) {
            AWAKE => "awake",
            NOTIFIED => "notified",
            _ => "sleeping",
        };
        f.debug_struct("WakeSignal").field("state", &state).finish()
    }
}

/// A producer's way to the loop: its [`WakeSignal`] and its [`Wake`]. `Copy`, `Send` and
/// `Sync`: hand it to any thread that publishes work for the loop.
#[derive(Clone, Copy)]
pub struct Notifier<'a> {
    signal: &'a WakeSignal,
    wake: &'a dyn Wake,
}

impl<'a> Notifier<'a> {
    /// A notifier for the loop that parks on `signal` and watches what `wake` wakes.
    pub fn new(signal: &'a WakeSignal, wake: &'a dyn Wake) -> Notifier<'a> {
        Notifier { signal, wake }
    }

    /// [`WakeSignal::notify`] with this notifier's [`Wake`]: call it after publishing an
    /// item. Returns whether the loop had to be woken.
    pub fn notify(&self) -> bool {
        self.signal.notify(self.wake)
    }

    /// The signal.
    pub fn signal(&self) -> &'a WakeSignal {
        self.signal
    }
}

impl fmt::Debug for Notifier<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("signal", self.signal)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl Count {
        fn get(&self) -> usize {
            self.0.load(Ordering::Relaxed)
        }
    }

    static_assertions::assert_impl_all!(Notifier<'static>: Send, Sync, Copy);
    static_assertions::assert_impl_all!(WakeSignal: Send, Sync, crate::pool::ZeroInit);

    #[test]
    fn zeroed_is_awake_and_new() {
        let mut slot = core::mem::MaybeUninit::<WakeSignal>::uninit();
        let s = crate::pool::init_zeroed(&mut slot);
        assert_eq!(s.state.load(Ordering::Relaxed), AWAKE);
        assert_eq!(WakeSignal::new().state.load(Ordering::Relaxed), AWAKE);
    }

    #[test]
    fn notify_while_awake_does_not_wake_and_stops_the_next_sleep() {
        let s = WakeSignal::new();
        let w = Count::default();
        assert!(!s.notify(&w));
        assert!(
            !s.notify(&w),
            "a second notification collapses into the first"
        );
        assert_eq!(w.get(), 0);
        // The next park must not block, and consumes the notification.
        assert!(!s.park(|may_block| may_block));
        assert!(s.park(|may_block| may_block), "nothing pending: may block");
        assert_eq!(w.get(), 0);
    }

    #[test]
    fn notify_while_sleeping_wakes_once() {
        let s = WakeSignal::new();
        let w = Count::default();
        let n = Notifier::new(&s, &w);
        s.park(|may_block| {
            assert!(may_block);
            assert!(n.notify(), "the loop may be asleep: wake");
            assert!(!n.notify(), "already notified: the first wake suffices");
            assert!(!n.notify());
        });
        assert_eq!(w.get(), 1);
        // Back to awake: a notification now only stops the next sleep.
        assert!(!n.notify());
        assert_eq!(w.get(), 1);
        assert!(!s.park(|may_block| may_block));
        assert!(std::format!("{n:?}").contains("awake"));
    }
}
