//! Model (1): producers return buffer ids while the loop drains (and sleeps between drains).
//!
//! Every id comes back exactly once (none lost, none duplicated), and the loop never reads an
//! id, nor the bytes the producer wrote into the buffer before returning it, before the push
//! published them. The loop runs the real turn: `WakeSignal::park` (sleeping on the modelled
//! eventfd when it may), then `ReturnQueue::drain`; producers run the real
//! `ReturnPath::give_back`, which is what a `SendLease`'s drop does.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom_tests::{LoomWake, model};
use ringlet::pool::{ReturnPath, ReturnQueueStorage};
use ringlet::sync::{Notifier, WakeSignal};
use std::sync::Arc;

const N: usize = 4;

/// What the loop and the producers share. In a std `Arc`: harness plumbing that loom need not
/// see, whose drop is harmless when a failing model unwinds (loom's own `Arc` would abort the
/// test binary from its destructor).
struct World {
    queue: ReturnQueueStorage<N>,
    signal: WakeSignal,
    wake: LoomWake,
    /// Each buffer's contents, as far as the model needs them: written (Relaxed, as plain
    /// bytes would be) by the thread that holds the buffer, before it returns it.
    bytes: [AtomicU64; N],
}

impl World {
    /// Built on the loop's thread (its wake unparks that thread).
    fn new() -> Arc<World> {
        Arc::new(World {
            queue: ReturnQueueStorage::new(),
            signal: WakeSignal::new(),
            wake: LoomWake::for_current_thread(),
            bytes: core::array::from_fn(|_| AtomicU64::new(0)),
        })
    }

    fn path(&self) -> ReturnPath<'_> {
        ReturnPath::new(self.queue.queue(), Notifier::new(&self.signal, &self.wake))
    }
}

fn tag(id: u16) -> u64 {
    0xB0F0_0000 + u64::from(id)
}

/// A thread that holds `ids`, writes each buffer, and returns them one after the other.
fn spawn_producer(world: &Arc<World>, ids: &'static [u16]) {
    let world = Arc::clone(world);
    loom::thread::spawn(move || {
        for &id in ids {
            world.bytes[usize::from(id)].store(tag(id), Ordering::Relaxed);
            world.path().give_back(id).unwrap();
        }
    });
}

/// The loop: park (sleeping if it may), drain, until `expect` ids came back.
fn run_loop(world: &World, expect: usize) {
    let mut seen = [false; N];
    let mut got = 0;
    while got < expect {
        world.signal.park(|may_block| {
            if may_block {
                world.wake.sleep();
            }
        });
        world.queue.queue().drain(|id| {
            let i = usize::from(id);
            assert!(i < N, "id {id} was never pushed");
            assert!(!seen[i], "id {id} returned twice");
            seen[i] = true;
            assert_eq!(
                world.bytes[i].load(Ordering::Relaxed),
                tag(id),
                "id {id} read before its buffer was published"
            );
            got += 1;
        });
    }
    assert!(world.queue.queue().is_empty());
}

#[test]
fn two_producers_one_id_each() {
    model("returns_exactly_once/2x1", || {
        let world = World::new();
        spawn_producer(&world, &[0]);
        spawn_producer(&world, &[1]);
        run_loop(&world, 2);
    });
}

#[test]
fn two_producers_three_ids() {
    // The second producer's two pushes chain behind whatever the first pushed: the drain walks
    // links written by two threads.
    model("returns_exactly_once/1+2", || {
        let world = World::new();
        spawn_producer(&world, &[2]);
        spawn_producer(&world, &[0, 1]);
        run_loop(&world, 3);
    });
}

#[test]
fn three_producers_one_id_each() {
    model("returns_exactly_once/3x1", || {
        let world = World::new();
        spawn_producer(&world, &[0]);
        spawn_producer(&world, &[1]);
        spawn_producer(&world, &[3]);
        run_loop(&world, 3);
    });
}
