//! Model (3): starvation and recovery, on the real pool.
//!
//! Every buffer of a [`BufPool`] is out, in [`SendLease`]s held by other threads, so the
//! loop's receive is paused for lack of buffers. The workers return them; the loop, asleep,
//! must be woken, take the buffers back ([`ReturnHandle::drain`]) and re-arm the paused
//! receive exactly once: when enough buffers are free (the driver's watermark), never before,
//! never twice. The re-arm step mirrors `sys::driver::Driver::rearm_starved` (a starved flag
//! and a free-buffer watermark).
//!
//! The storage is leaked once per execution (a send lease going to a loom thread must be
//! `'static`, and loom has no scoped threads); it is small.
#![cfg(loom)]

use loom_tests::{LoomWake, model};
use ringlet::pool::{
    BufPool, BufPoolConfig, BufPoolStorage, RecvTier, ReturnHandle, ReturnQueueStorage, SendLease,
};
use ringlet::sync::{Notifier, WakeSignal};

const N: usize = 2;

/// The loop's receive, as the driver keeps it: paused when the pool runs dry, re-armed once
/// enough buffers are free.
#[derive(Default)]
struct Receive {
    starved: bool,
    arms: u32,
}

impl Receive {
    /// One read into a pool buffer (epoll style); a dry pool pauses the receive.
    fn read(&mut self, pool: BufPool<'static>) -> Option<ringlet::pool::Lease<'static>> {
        let lease = pool.try_take_recv();
        if lease.is_none() {
            self.starved = true;
        }
        lease
    }

    /// `Driver::rearm_starved`, for one connection.
    fn rearm(&mut self, pool: BufPool<'static>, watermark: usize) {
        if self.starved && pool.recv_available() >= watermark.max(1) {
            self.starved = false;
            self.arms += 1;
        }
    }
}

fn starve_and_recover(watermark: usize) {
    let storage = Box::leak(Box::new(BufPoolStorage::<N, 8>::new()));
    let returns = Box::leak(Box::new(ReturnQueueStorage::<N>::new()));
    let signal = Box::leak(Box::new(WakeSignal::new()));
    let wake = Box::leak(Box::new(LoomWake::for_current_thread()));
    let config = BufPoolConfig {
        recv_tier: RecvTier::FreeList,
        user_reserve: 0,
    };
    let pool = BufPool::new(storage, config).unwrap();
    let handle = ReturnHandle::new(pool, returns, Notifier::new(signal, wake)).unwrap();

    // Receive until the pool is dry; every buffer goes to a worker thread.
    let mut recv = Receive::default();
    while let Some(mut lease) = recv.read(pool) {
        lease.buf_mut()[0] = lease.id() as u8;
        lease.set_len(1).unwrap();
        let sent: SendLease<'static> = handle.send(lease).unwrap();
        loom::thread::spawn(move || {
            assert_eq!(sent.as_slice(), [sent.id() as u8]);
            drop(sent); // returns the buffer from this thread
        });
    }
    assert!(recv.starved);
    assert_eq!(pool.leased(), N, "every buffer is out");

    // The loop's turns, until the receive is re-armed and every buffer is back.
    while recv.starved || pool.leased() > 0 {
        signal.park(|may_block| {
            if may_block {
                wake.sleep();
            }
        });
        handle.drain();
        let before = recv.arms;
        recv.rearm(pool, watermark);
        if recv.arms > before {
            assert!(
                pool.recv_available() >= watermark,
                "re-armed below the watermark"
            );
        }
    }
    assert_eq!(recv.arms, 1, "the paused receive is re-armed exactly once");
    assert_eq!(pool.recv_available(), N);
}

#[test]
fn one_back_rearms_once() {
    // Re-armed as soon as one buffer is back; the other comes back later and changes nothing.
    model("starvation/watermark1", || starve_and_recover(1));
}

#[test]
fn all_back_rearms_once() {
    // Re-armed only when both are back: the loop must sleep through the first return and be
    // woken again for the second.
    model("starvation/watermark2", || starve_and_recover(2));
}
