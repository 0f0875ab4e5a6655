//! Model (4): the executor's wakers. A waker woken on another thread races the loop polling,
//! completing and reusing the task's slot. The loop side is the library's
//! [`Scheduler`](ringlet::exec::Scheduler) (what the executor calls around each poll), the
//! waker is a real `core::task::Waker` made by it: a stale waker never polls the task that
//! reused its slot, and a wake is never lost (nor its data unseen by the poll it leads to).
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom_tests::{LoomWake, model};
use ringlet::exec::{SchedStorage, Scheduler};
use ringlet::sync::{Notifier, WakeSignal};

/// What the loop and the waking thread share. Leaked once per execution (a few hundred
/// bytes), as the scheduler's storage: a `Waker` is `'static` (it may outlive everything), so
/// what it points to must be, and loom has no scoped threads.
struct World {
    signal: WakeSignal,
    wake: LoomWake,
    /// What the waking thread publishes before it wakes (a task's input).
    data: AtomicBool,
}

fn world() -> (&'static mut SchedStorage<1>, &'static World) {
    let storage = Box::leak(Box::new(SchedStorage::new()));
    let w = Box::leak(Box::new(World {
        signal: WakeSignal::new(),
        wake: LoomWake::for_current_thread(),
        data: AtomicBool::new(false),
    }));
    (storage, w)
}

/// The loop's sleep: park on the signal, block only if nothing was notified.
fn sleep(w: &World) {
    w.signal.park(|may_block| {
        if may_block {
            w.wake.sleep();
        }
    });
}

#[test]
fn a_stale_waker_never_polls_the_new_task() {
    model("exec_wakers/stale", || {
        let (storage, w) = world();
        let sched = Scheduler::new(storage, Notifier::new(&w.signal, &w.wake)).unwrap();
        // Task A spawned in slot 0 and polled once; it keeps its waker.
        assert!(sched.wake(0));
        assert_eq!(sched.drain(|_| {}), 1);
        let waker = sched.waker(0).unwrap();
        // Another thread wakes A's waker (a clone of it, dropping both there) ...
        let t = loom::thread::spawn(move || {
            let c = waker.clone();
            drop(waker);
            c.wake_by_ref();
            drop(c);
        });
        // ... while A completes (the executor retires its slot) and task B takes the slot
        // and is scheduled for its first poll.
        sched.retire(0);
        sched.wake(0);
        // B's first poll: it may wait for a stale wake that already claimed the slot's one
        // queue entry (then that entry is B's first poll).
        let mut polls_b = 0;
        loop {
            polls_b += sched.drain(|slot| assert_eq!(slot, 0));
            if polls_b > 0 {
                break;
            }
            sleep(w);
        }
        t.join().unwrap();
        // Whatever the stale waker did, B is polled once: nothing more is queued for it.
        polls_b += sched.drain(|_| {});
        assert_eq!(polls_b, 1, "the stale waker polled the new task");
        assert!(!sched.is_scheduled(0));
    });
}

#[test]
fn a_remote_wake_is_never_lost() {
    model("exec_wakers/lost", || {
        let (storage, w) = world();
        let sched = Scheduler::new(storage, Notifier::new(&w.signal, &w.wake)).unwrap();
        // The task is spawned, polled, and waits for `data`; then an event on the loop
        // schedules it again (it is in the ready queue, bit set, when the thread wakes it).
        sched.wake(0);
        assert_eq!(sched.drain(|_| {}), 1);
        let waker = sched.waker(0).unwrap();
        sched.schedule(0);
        let t = loom::thread::spawn(move || {
            w.data.store(true, Ordering::Relaxed);
            waker.wake();
        });
        // The loop polls the task whenever it is drained; the task finishes once it sees the
        // data. A wake that is lost, or whose data the poll does not see, leaves the loop
        // asleep for ever: loom reports a deadlock.
        let mut done = false;
        while !done {
            sched.drain(|_| done |= w.data.load(Ordering::Relaxed));
            if !done {
                sleep(w);
            }
        }
        t.join().unwrap();
    });
}

#[test]
fn a_wake_during_the_poll_polls_again() {
    model("exec_wakers/during_poll", || {
        let (storage, w) = world();
        let sched = Scheduler::new(storage, Notifier::new(&w.signal, &w.wake)).unwrap();
        sched.wake(0);
        let waker = sched.waker(0).unwrap();
        // The thread may wake while the first poll runs (after the drain took the slot).
        let t = loom::thread::spawn(move || {
            w.data.store(true, Ordering::Relaxed);
            waker.wake_by_ref();
        });
        let mut done = false;
        while !done {
            sched.drain(|_| done |= w.data.load(Ordering::Relaxed));
            if !done {
                sleep(w);
            }
        }
        t.join().unwrap();
        // One entry at most is left (a wake after the poll that saw the data): never two.
        assert!(sched.drain(|_| {}) <= 1);
    });
}
