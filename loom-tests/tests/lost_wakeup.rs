//! Model (2): the lost wake-up. The loop checks the queue, finds it empty and goes to sleep
//! while another thread returns a buffer: the loop must always be woken (loom reports a
//! deadlock otherwise), for every return.
#![cfg(loom)]

use loom_tests::{LoomWake, model};
use ringlet::pool::{ReturnPath, ReturnQueueStorage};
use ringlet::sync::{Notifier, WakeSignal};
use std::sync::Arc;

/// What the loop and the producers share. In a std `Arc`: harness plumbing that loom need not
/// see, whose drop is harmless when a failing model unwinds (loom's own `Arc` would abort the
/// test binary from its destructor).
struct World {
    queue: ReturnQueueStorage<2>,
    signal: WakeSignal,
    wake: LoomWake,
}

/// One producer thread per entry of `producers`, returning its ids one after the other; the
/// loop checks the queue and goes to sleep when it has not seen them all.
fn check_then_sleep(producers: &'static [&'static [u16]]) {
    let world = Arc::new(World {
        queue: ReturnQueueStorage::new(),
        signal: WakeSignal::new(),
        wake: LoomWake::for_current_thread(),
    });
    for ids in producers {
        let world = Arc::clone(&world);
        loom::thread::spawn(move || {
            let w = &*world;
            let path = ReturnPath::new(w.queue.queue(), Notifier::new(&w.signal, &w.wake));
            for &id in *ids {
                path.give_back(id).unwrap();
            }
        });
    }
    let expect: usize = producers.iter().map(|ids| ids.len()).sum();
    let mut got = 0;
    loop {
        // Check the queue ...
        got += world.queue.queue().drain(|_| {});
        if got == expect {
            break;
        }
        // ... found it empty (or not complete yet): go to sleep.
        world.signal.park(|may_block| {
            if may_block {
                world.wake.sleep();
            }
        });
    }
}

#[test]
fn the_loop_is_always_woken() {
    // Two returns in a row: the second may find the loop awake, notified, or asleep again
    // after draining the first.
    model("lost_wakeup/1x2", || check_then_sleep(&[&[0, 1]]));
}

#[test]
fn the_loop_is_woken_by_either_producer() {
    // Two producers: one may find the loop asleep and wake it while the other finds it
    // notified and relies on that wake.
    model("lost_wakeup/2x1", || check_then_sleep(&[&[0], &[1]]));
}
