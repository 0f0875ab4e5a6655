//! A tiny harness for testing the pipe's async face without an executor: a waker that
//! counts its wakes, single polls, and a two-task runner that polls a task only after its
//! waker was woken, so a lost wake-up shows up as a deadlock (a test failure), not a hang.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Wake;

struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A waker that counts how often it was woken (clones share the count).
pub(crate) struct CountingWaker {
    count: Arc<Count>,
    waker: Waker,
}

impl CountingWaker {
    pub(crate) fn new() -> Self {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        CountingWaker { count, waker }
    }

    /// Wakes so far.
    pub(crate) fn wakes(&self) -> usize {
        self.count.0.load(Ordering::SeqCst)
    }

    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }
}

/// Polls `fut` once with `w`'s waker.
pub(crate) fn poll_once<F: Future + ?Sized>(
    fut: Pin<&mut F>,
    w: &CountingWaker,
) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(w.waker()))
}

/// One task of [`run`].
struct Task<'f> {
    fut: Pin<&'f mut dyn Future<Output = ()>>,
    waker: CountingWaker,
    /// The wake count at its last poll.
    seen: usize,
    done: bool,
}

/// Runs tasks to completion on this thread, round-robin, polling each first once and
/// afterwards only when its waker was woken since its last poll. Panics when every
/// unfinished task is pending and none was woken (a lost wake-up, or tasks waiting on each
/// other: nothing could make progress), or after `max_polls`. Returns how many polls it took.
pub(crate) fn run<const N: usize>(
    futs: [Pin<&mut dyn Future<Output = ()>>; N],
    max_polls: usize,
) -> usize {
    let mut tasks = futs.map(|fut| Task {
        fut,
        waker: CountingWaker::new(),
        seen: usize::MAX, // "never polled": poll first
        done: false,
    });
    let mut polls = 0;
    while tasks.iter().any(|t| !t.done) {
        let mut progressed = false;
        for t in tasks.iter_mut().filter(|t| !t.done) {
            let wakes = t.waker.wakes();
            if wakes == t.seen {
                continue;
            }
            t.seen = wakes;
            polls += 1;
            assert!(polls <= max_polls, "more than {max_polls} polls");
            progressed = true;
            if poll_once(t.fut.as_mut(), &t.waker).is_ready() {
                t.done = true;
            }
        }
        assert!(
            progressed,
            "deadlock: every pending task waits for a wake that never came"
        );
    }
    polls
}

/// [`run`] for two tasks.
pub(crate) fn run2<'f>(
    a: Pin<&'f mut dyn Future<Output = ()>>,
    b: Pin<&'f mut dyn Future<Output = ()>>,
    max_polls: usize,
) -> usize {
    run([a, b], max_polls)
}
