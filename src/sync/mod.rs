//! The loop's one cross-thread mechanism: the atomics facade and the wake protocol.
//!
//! The loop is single-threaded, but two things reach it from other threads: buffers returned
//! through a [`SendLease`](crate::pool::SendLease) and (later) executor wakers. Each pushes its
//! item onto a lock-free queue of its own and then *notifies* the loop through one shared
//! [`WakeSignal`]; when the loop may be asleep, the notification also calls [`Wake::wake`]
//! (an `eventfd` write, [`sys::eventfd::WakeFd`](crate::sys::eventfd::WakeFd)) to end its
//! sleep. The loop sleeps only through [`WakeSignal::park`], and drains every queue after it.
//!
//! # The atomics facade
//!
//! Every atomic on the cross-thread path comes from `sync::atomic`, which is `core::sync::atomic`
//! normally and `loom::sync::atomic` when the crate is built with `RUSTFLAGS="--cfg loom"`: the
//! loom models in `loom-tests/` check this very code, not a copy of it. Under `--cfg loom` the
//! types holding these atomics have no `const fn new` and are not
//! [`ZeroInit`](crate::pool::ZeroInit) (loom's atomics are not plain memory); nothing else
//! changes.
//!
//! # The wake protocol, and why it cannot lose a wake-up
//!
//! [`WakeSignal`] is one atomic word with three states: `AWAKE` (0, the loop is running and
//! owes no drain), `NOTIFIED` (a producer published something since the loop last looked) and
//! `SLEEPING` (the loop announced that it may block).
//!
//! ```text
//! producer (any thread)                     loop (one thread), every turn
//! P1  publish the item (queue push,         L1  park: CAS AWAKE -> SLEEPING (Relaxed);
//!     Release)                                  block only if the CAS succeeded
//! P2  prev = swap(NOTIFIED, Release)        L2  after the wait: swap(AWAKE, Acquire)
//!     if prev == SLEEPING: Wake::wake()     L3  drain the queues (a Relaxed emptiness check,
//!                                               then an Acquire swap of the queue head)
//! ```
//!
//! P2, L1 and L2 are read-modify-writes of the same word, so they are totally ordered, and each
//! reads the value just before it in the word's modification order. Take any P2 and the loop's
//! operations around it:
//!
//! - P2 before L2: L2 reads NOTIFIED, written by P2 or by a later producer's swap, which
//!   continues P2's release sequence (RMWs do). So L2 (Acquire) synchronises with P2 (Release),
//!   P1 happens before L3, and L3 finds the item.
//! - P2 between L2 and the next L1: that CAS reads NOTIFIED and fails, so the loop does not
//!   block, and its next L2 is the first case.
//! - P2 between L1 and the next L2: P2 reads SLEEPING and calls `wake`, or reads NOTIFIED
//!   written by another producer that read SLEEPING and calls `wake` itself. Either way the
//!   wait (blocked, or about to block) returns, and the L2 after it is the first case.
//!
//! No case leaves the loop blocked with a published item it has not drained. No SeqCst is
//! needed: the classic lost-wake-up race ("loop stores `sleeping`, then loads the queue;
//! producer stores the queue, then loads `sleeping`") is a store-buffering pattern that needs
//! SeqCst on all four accesses or two SeqCst fences; here each side's announce-and-check is a
//! single RMW on one word, which rules the reordering out, and what remains is message passing
//! (Release/Acquire). Which ordering carries what:
//!
//! - P2 `Release` / L2 `Acquire`: after a notification the loop sees the item even if its own
//!   emptiness check is a plain load (loom model `lost_wakeup`: weakened, the loop reads the
//!   queue as empty, blocks, and loom reports a deadlock).
//! - The queue's push `Release` / drain `Acquire` (see
//!   [`ReturnQueue`](crate::pool::ReturnQueue)): the item's contents (the queue links, the
//!   buffer bytes) are visible to the loop (loom model `returns_exactly_once`).
//! - L1 is `Relaxed`: the loop publishes nothing by going to sleep, and a failed CAS only sends
//!   the loop on to L2 (Acquire) without blocking.
//! - L2 must be an RMW: a load of NOTIFIED followed by a store of AWAKE could erase a P2 that
//!   lands between them, with nothing synchronised.
//!
//! `Wake::wake` must behave like a counter or a permit: a wake that arrives before the loop
//! actually blocks makes its block return at once (an eventfd does: it stays readable until
//! the loop reads it). A wake may be spurious (a producer that read SLEEPING can call `wake`
//! after the loop already woke for another reason): that costs one extra turn, never a lost
//! item.

mod wake;

pub use wake::{Notifier, Wake, WakeSignal};

/// `core::sync::atomic`, or `loom::sync::atomic` under `--cfg loom` (see the module docs).
///
/// Code on the cross-thread path takes its atomics from here and nowhere else, so that loom
/// sees every access.
pub mod atomic {
    #[cfg(not(loom))]
    pub use core::sync::atomic::{
        AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
    };
    #[cfg(loom)]
    pub use loom::sync::atomic::{
        AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
    };
}
