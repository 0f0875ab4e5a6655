//! loom models of ringlet's cross-thread buffer return and wake.
//!
//! This crate is empty unless built with `RUSTFLAGS="--cfg loom"`: run `make loom` (release
//! build, `LOOM_MAX_PREEMPTIONS` from the Makefile). Under `--cfg loom` ringlet's atomics facade
//! ([`ringlet::sync::atomic`]) is loom's, so the models below run the library's own code:
//! [`ReturnQueue`](ringlet::pool::ReturnQueue) push and drain,
//! [`ReturnPath::give_back`](ringlet::pool::ReturnPath::give_back) (what a `SendLease`'s drop
//! runs), [`WakeSignal::notify`](ringlet::sync::WakeSignal::notify) and
//! [`WakeSignal::park`](ringlet::sync::WakeSignal::park), and in the starvation model the real
//! [`BufPool`](ringlet::pool::BufPool), [`SendLease`](ringlet::pool::SendLease) and
//! [`ReturnHandle`](ringlet::pool::ReturnHandle). Only the kernel is modelled: `LoomWake`
//! stands in for the eventfd (a wake is a permit that the loop's sleep consumes, as an eventfd
//! counter stays readable until read).
//!
//! # The models (in `tests/`)
//!
//! - `returns_exactly_once` (model 1): two or three producers return ids while the loop drains
//!   and sleeps; every id comes back exactly once, none lost, none duplicated, and the loop
//!   never reads an id (nor the bytes written into the buffer before its return) before the
//!   push published it.
//! - `lost_wakeup` (model 2): the loop checks the queue, finds it empty and goes to sleep while
//!   another thread returns a buffer: it is always woken, for every return.
//! - `starvation` (model 3): every buffer of a real pool is out in send leases, the loop's
//!   receive is paused; the loop is woken, takes the buffers back and re-arms the receive
//!   exactly once, when enough buffers are free, never before.
//! - `exec_wakers` (model 4): the executor's [`Scheduler`](ringlet::exec::Scheduler) and its
//!   `Waker`s: a waker woken on another thread while the loop completes its task and reuses
//!   the slot never polls the new task (beyond the first poll it needs anyway); a wake is
//!   never lost, also when it lands on an already scheduled task or during its poll, and the
//!   poll it leads to sees what the waking thread did before.
//!
//! A model that deadlocks (the loop parked with no wake to come) fails: loom reports
//! `deadlock; threads = ...`. Each model asserts its property in the loop thread, which waits
//! until it has seen everything it must see (loom finds an ordering bug only if the test
//! observes the value).
//!
//! # Bounds and run time
//!
//! Exhaustive up to `LOOM_MAX_PREEMPTIONS` preemptions per execution (`make loom` uses 3;
//! `model` falls back to 3 when the variable is unset, so a plain `cargo test` under
//! `--cfg loom` cannot run unbounded). The models print their iteration counts and times
//! (`make loom` passes `--nocapture`); `README.md` has the numbers and the weakening
//! experiments (`weaken.sh`): each model fails when the ordering it guards is weakened.
// Without loom the crate is empty; `no_std` keeps it out of the way of a core-only build of the
// workspace (`-Zbuild-std=core`).
#![cfg_attr(not(loom), no_std)]
#![cfg(loom)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ringlet::sync::Wake;

/// The eventfd, modelled: [`Wake::wake`] unparks the loop's thread (a permit that its next or
/// current [`LoomWake::sleep`] consumes; several collapse into one, as an eventfd's counter
/// makes one readiness), and `sleep` parks until then. loom reports a deadlock if the loop
/// sleeps and no wake ever comes.
pub struct LoomWake {
    loop_thread: loom::thread::Thread,
}

impl LoomWake {
    /// The wake of the calling thread, which must be the loop's.
    pub fn for_current_thread() -> LoomWake {
        LoomWake {
            loop_thread: loom::thread::current(),
        }
    }

    /// The loop's sleep (`epoll_wait` / `io_uring_enter` on the eventfd): returns once a wake
    /// arrived, now or earlier.
    pub fn sleep(&self) {
        loom::thread::park();
    }
}

impl Wake for LoomWake {
    fn wake(&self) {
        self.loop_thread.unpark();
    }
}

/// The preemption bound used when `LOOM_MAX_PREEMPTIONS` is unset.
pub const DEFAULT_MAX_PREEMPTIONS: usize = 3;

/// Runs `f` under loom, exhaustively up to the preemption bound (`LOOM_MAX_PREEMPTIONS`, or
/// [`DEFAULT_MAX_PREEMPTIONS`]), and prints how many executions that took.
pub fn model<F>(name: &str, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(DEFAULT_MAX_PREEMPTIONS);
    }
    let bound = builder.preemption_bound;
    // A std counter: loom does not track it.
    let runs = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let counter = Arc::clone(&runs);
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f()
    });
    println!(
        "loom model {name}: {} executions, preemption bound {bound:?}, {:.2?}",
        runs.load(Ordering::Relaxed),
        start.elapsed()
    );
}
