//! The cross-thread wake: an `eventfd` the loop watches.
//!
//! Any thread may [`EventFd::notify`]; the loop registers the descriptor with epoll (or reads it
//! through io_uring) and calls [`EventFd::drain`] once per turn. Many notifies before a drain
//! collapse into one wake: the counter is a "something happened" flag, not a queue. Whatever
//! was announced (returned buffers, woken tasks) lives in its own queue, which the loop drains
//! after draining the eventfd, so no announcement is lost.
//!
//! Both [`EventFd`] and [`WakeFd`] implement [`Wake`], the kernel end of the loop's wake
//! protocol (see [`sync`](crate::sync)): producers call it only when the loop may be asleep.
//! [`WakeFd`] is the one for a loop with `'static` storage: it lives in that storage and its
//! descriptor is never closed while anyone could still wake it.

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use super::{Error, Result};
use crate::pool::ZeroInit;
use crate::sync::Wake;
use rustix::event::{EventfdFlags, eventfd};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use rustix::io::{self as rio, Errno};

/// Adds 1 to the counter of the eventfd `fd` (see [`EventFd::notify`]).
fn notify_fd(fd: BorrowedFd<'_>) -> Result<()> {
    loop {
        return match rio::write(fd, &1u64.to_ne_bytes()) {
            Ok(_) => Ok(()),
            Err(Errno::AGAIN) => Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => Err(Error::from(e)),
        };
    }
}

/// Reads and resets the counter of the eventfd `fd` (see [`EventFd::drain`]).
fn drain_fd(fd: BorrowedFd<'_>) -> Result<u64> {
    let mut buf = [0u8; 8];
    loop {
        return match rio::read(fd, &mut buf) {
            Ok(8) => Ok(u64::from_ne_bytes(buf)),
            // An eventfd read is all 8 bytes or an error; anything else is not an eventfd.
            Ok(_) => Err(Error::InvalidInput),
            Err(Errno::AGAIN) => Ok(0),
            Err(Errno::INTR) => continue,
            Err(e) => Err(Error::from(e)),
        };
    }
}

/// A non-blocking, close-on-exec `eventfd` counter: the loop's wake-up.
///
/// `EventFd` is `Send + Sync`: [`notify`](EventFd::notify) and [`drain`](EventFd::drain) take
/// `&self`, and the kernel serialises the counter, so one `EventFd` can be shared (by reference
/// or in an `Arc`-like handle of the caller's choosing) between the loop and any number of
/// notifying threads.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

static_assertions::assert_impl_all!(EventFd: Send, Sync);

impl EventFd {
    /// Creates a counter at zero, with `EFD_NONBLOCK | EFD_CLOEXEC`.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyOpenFiles`] when the process or system is out of descriptors; other
    /// errors as the kernel reports them.
    pub fn new() -> Result<EventFd> {
        let fd = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?;
        Ok(EventFd { fd })
    }

    /// Adds 1 to the counter, making the descriptor readable: wakes a loop waiting on it.
    ///
    /// # Notes
    ///
    /// The counter saturates at `u64::MAX - 1`; a write that would pass it fails with EAGAIN
    /// on a non-blocking eventfd. That only happens when the counter is already non-zero, so a
    /// wake is already pending and the loop will see it: this is reported as success, not
    /// [`Error::WouldBlock`]. EINTR is retried (a non-blocking write does not sleep, so it is
    /// not expected).
    ///
    /// # Errors
    ///
    /// Only what the kernel reports for an unexpected failure (for example a descriptor that
    /// is not an eventfd after [`EventFd::from_fd`]).
    pub fn notify(&self) -> Result<()> {
        notify_fd(self.fd.as_fd())
    }

    /// Reads the counter and resets it to zero, returning how many notifications (at least)
    /// arrived since the last drain; `Ok(0)` when none did.
    ///
    /// # Notes
    ///
    /// A read of a zero counter fails with EAGAIN on a non-blocking eventfd; that is reported
    /// as `Ok(0)`, never as [`Error::WouldBlock`]. After `drain` the descriptor is not
    /// readable until the next [`notify`](EventFd::notify). No wake is lost in either epoll
    /// mode: a notify that lands between the wait and the drain is counted by this drain, and
    /// every notify after it makes the descriptor readable again (and, edge-triggered, is a
    /// new edge even if the counter was never drained).
    ///
    /// # Errors
    ///
    /// Only what the kernel reports for an unexpected failure.
    pub fn drain(&self) -> Result<u64> {
        drain_fd(self.fd.as_fd())
    }

    /// Wraps a descriptor that is already a non-blocking eventfd.
    ///
    /// Nothing is checked: a blocking eventfd would make [`drain`](EventFd::drain) block
    /// while the counter is zero.
    pub fn from_fd(fd: OwnedFd) -> EventFd {
        EventFd { fd }
    }

    /// Gives up ownership of the descriptor.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The raw descriptor number (for an io_uring SQE, for example). The `EventFd` still owns
    /// it.
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<EventFd> for OwnedFd {
    fn from(e: EventFd) -> OwnedFd {
        e.fd
    }
}

/// [`EventFd::notify`]. A failure (only possible for a descriptor that is not an eventfd, see
/// [`EventFd::from_fd`]) is ignored: a wake cannot report errors.
impl Wake for EventFd {
    fn wake(&self) {
        let _ = self.notify();
    }
}

/// The loop's eventfd, in the loop's storage: the [`Wake`] to give a
/// [`Notifier`](crate::sync::Notifier) when the storage is `'static`.
///
/// A producer on another thread (a [`SendLease`](crate::pool::SendLease), a waker) holds a
/// reference to the loop's [`Wake`] for as long as it lives, which can be longer than the loop
/// itself. An [`EventFd`] owned by the loop would be closed when the loop is dropped, and a
/// late wake would then write to whatever file reuses the descriptor number. A `WakeFd` lives
/// in the storage instead, and closes its descriptor only when it is dropped, which cannot
/// happen while any reference to it exists; in a `'static` storage, never.
///
/// All-zero bytes is "no eventfd yet" ([`ZeroInit`], `const fn new`). The loop calls
/// [`WakeFd::open`] once at start-up, before anything can want to wake it; a `wake` before that
/// does nothing (nobody is asleep on it).
pub struct WakeFd {
    /// 0: none yet; otherwise the descriptor plus one (descriptors are non-negative `i32`s).
    fd_plus_one: AtomicU32,
}

// SAFETY: the only field is an `AtomicU32`, valid as zero bytes, and zero means "no
// descriptor", the state `new` builds; nothing else is assumed.
unsafe impl ZeroInit for WakeFd {}

impl WakeFd {
    /// No eventfd yet.
    pub const fn new() -> WakeFd {
        WakeFd {
            fd_plus_one: AtomicU32::new(0),
        }
    }

    /// Creates the eventfd (non-blocking, close-on-exec) unless it exists, and returns it, for
    /// the loop to watch (epoll registration, or an io_uring poll or read on it).
    ///
    /// # Errors
    ///
    /// As [`EventFd::new`]; the `WakeFd` stays empty.
    pub fn open(&self) -> Result<BorrowedFd<'_>> {
        if let Some(fd) = self.fd() {
            return Ok(fd);
        }
        let raw = EventFd::new()?.into_fd().into_raw_fd();
        // Release: a thread that sees the number sees an open descriptor. If another `open`
        // won the race, close ours and use theirs.
        let fd = match self.fd_plus_one.compare_exchange(
            0,
            raw as u32 + 1,
            Ordering::Release,
            Ordering::Acquire,
        ) {
            Ok(_) => raw,
            Err(theirs) => {
                // SAFETY: `raw` came from `into_raw_fd` just above and was stored nowhere.
                drop(unsafe { OwnedFd::from_raw_fd(raw) });
                (theirs - 1) as RawFd
            }
        };
        // SAFETY: `fd` is the descriptor now stored in `self` (ours, or the winner's), open and
        // owned by this `WakeFd` until its `Drop`, which cannot run while `&self` lives.
        Ok(unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// The eventfd, if [`WakeFd::open`] has created it.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        let v = self.fd_plus_one.load(Ordering::Acquire);
        // SAFETY: a non-zero value is an open descriptor stored by `open`, owned by this
        // `WakeFd` and closed only by its `Drop`, which cannot run while `&self` (and so the
        // returned borrow) lives.
        (v != 0).then(|| unsafe { BorrowedFd::borrow_raw((v - 1) as RawFd) })
    }

    /// [`EventFd::drain`]: reads and resets the counter; `Ok(0)` when nothing arrived or there
    /// is no eventfd yet.
    ///
    /// # Errors
    ///
    /// Only what the kernel reports for an unexpected failure.
    pub fn drain(&self) -> Result<u64> {
        self.fd().map_or(Ok(0), drain_fd)
    }

    /// [`EventFd::notify`] (does nothing before [`WakeFd::open`]).
    ///
    /// # Errors
    ///
    /// Only what the kernel reports for an unexpected failure.
    pub fn notify(&self) -> Result<()> {
        self.fd().map_or(Ok(()), notify_fd)
    }
}

impl Default for WakeFd {
    fn default() -> Self {
        Self::new()
    }
}

/// [`WakeFd::notify`], ignoring failures (there are none for an eventfd `open` created).
impl Wake for WakeFd {
    fn wake(&self) {
        let _ = self.notify();
    }
}

impl Drop for WakeFd {
    fn drop(&mut self) {
        let v = *self.fd_plus_one.get_mut();
        if v != 0 {
            // SAFETY: an open descriptor this `WakeFd` owns (see `fd`); `&mut self` means no
            // borrow of it is left, and it is not used again.
            drop(unsafe { OwnedFd::from_raw_fd((v - 1) as RawFd) });
        }
    }
}

impl fmt::Debug for WakeFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WakeFd")
            .field("fd", &self.fd().map(|fd| fd.as_raw_fd()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_resets() {
        let e = EventFd::new().unwrap();
        assert_eq!(e.drain().unwrap(), 0);
        e.notify().unwrap();
        e.notify().unwrap();
        e.notify().unwrap();
        assert_eq!(e.drain().unwrap(), 3);
        assert_eq!(e.drain().unwrap(), 0);
    }

    static_assertions::assert_impl_all!(WakeFd: Send, Sync, ZeroInit);

    #[test]
    fn wake_fd_opens_once_wakes_and_closes_on_drop() {
        let w = WakeFd::new();
        assert!(w.fd().is_none());
        w.wake(); // before open: nothing to wake, no error
        assert_eq!(w.drain().unwrap(), 0);
        let raw = w.open().unwrap().as_raw_fd();
        assert_eq!(w.open().unwrap().as_raw_fd(), raw, "opened once");
        w.wake();
        Wake::wake(&w);
        assert_eq!(w.drain().unwrap(), 2);
        assert_eq!(w.drain().unwrap(), 0);
        assert!(std::format!("{w:?}").contains(&std::format!("{raw}")));
        drop(w); // closes the descriptor (Miri's and the kernel's fd tables would show a leak)
    }

    #[test]
    fn wake_fd_zeroed_is_empty() {
        let mut slot = core::mem::MaybeUninit::<WakeFd>::uninit();
        let w = crate::pool::init_zeroed(&mut slot);
        assert!(w.fd().is_none());
        w.open().unwrap();
        assert!(w.fd().is_some());
        // SAFETY: initialised by `init_zeroed`, dropped once, not used again.
        unsafe { slot.assume_init_drop() };
    }

    #[test]
    fn event_fd_is_a_wake() {
        let e = EventFd::new().unwrap();
        let w: &dyn Wake = &e;
        w.wake();
        assert_eq!(e.drain().unwrap(), 1);
    }

    #[test]
    fn saturated_counter_is_still_a_pending_wake() {
        let e = EventFd::new().unwrap();
        // Bring the counter to its maximum, u64::MAX - 1.
        rio::write(&e, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        // The kernel refuses another increment with EAGAIN ...
        assert_eq!(rio::write(&e, &1u64.to_ne_bytes()), Err(Errno::AGAIN));
        // ... which notify reports as success: a wake is pending.
        assert_eq!(e.notify(), Ok(()));
        assert_eq!(e.drain().unwrap(), u64::MAX - 1);
        assert_eq!(e.drain().unwrap(), 0);
    }
}

/// Buffers returned from other threads to a loop that sleeps on a real eventfd, the way the
/// event loop does it: `SendLease`s go to worker threads, whose drops push the ids onto the
/// return queue and wake the loop through a [`WakeFd`] that the loop watches with epoll, or
/// with an io_uring multishot poll. The loop runs the real turn: `WakeSignal::park` around the
/// backend's wait, then `ReturnHandle::drain`.
///
/// Checked: every buffer comes back exactly once with its bytes intact, and a sleeping loop is
/// always woken (a blocking wait that runs into its 10 s timeout while returns are outstanding
/// fails the test), in bounded time.
#[cfg(all(test, not(loom)))]
mod cross_thread {
    use std::boxed::Box;
    use std::eprintln;
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};
    use std::vec::Vec;

    use super::WakeFd;
    use crate::pool::{
        BufPool, BufPoolConfig, BufPoolStorage, RecvTier, ReturnHandle, ReturnQueueStorage,
        SendLease,
    };
    use crate::sync::{Notifier, WakeSignal};
    use crate::sys::Error;
    use crate::sys::epoll::{Epoll, Events, Interest};
    use crate::sys::uring::{Sqe, Uring, UringConfig};

    const N: usize = 32;
    const WORKERS: usize = 4;
    const TOTAL: usize = 20_000;
    /// A blocking wait this long means a lost wake-up (workers hold buffers for microseconds).
    const LOST: Duration = Duration::from_secs(10);
    const WAKE_TOKEN: u64 = 0x5741_4b45;

    /// What the loop saw.
    #[derive(Debug, Default)]
    struct Seen {
        /// Waits that were allowed to block.
        blocking_waits: usize,
        /// Wake events from the backend (eventfd readable).
        wake_events: usize,
    }

    /// The loop: hand out every free buffer as a `SendLease` to a worker, then one turn:
    /// `park(wait)`, drain. `wait(may_block)` is the backend's wait; it returns the number of
    /// wake events it saw and must drain the eventfd when it sees one.
    fn run(wake_fd: &WakeFd, mut wait: impl FnMut(bool) -> usize) -> Seen {
        let mut storage = Box::new(BufPoolStorage::<N, 8>::new());
        let mut returns = ReturnQueueStorage::<N>::new();
        let signal = WakeSignal::new();
        let config = BufPoolConfig {
            recv_tier: RecvTier::FreeList,
            user_reserve: 0,
        };
        let pool = BufPool::new(&mut *storage, config).unwrap();
        let handle =
            ReturnHandle::new(pool, &mut returns, Notifier::new(&signal, wake_fd)).unwrap();
        let (mut sent, mut back, mut seen) = (0usize, 0usize, Seen::default());
        let start = Instant::now();
        thread::scope(|s| {
            let txs: Vec<mpsc::Sender<SendLease<'_>>> = (0..WORKERS)
                .map(|w| {
                    let (tx, rx) = mpsc::channel::<SendLease<'_>>();
                    s.spawn(move || {
                        let mut held = Vec::new();
                        let mut round = w;
                        while let Ok(lease) = rx.recv() {
                            held.push(lease);
                            while let Ok(lease) = rx.try_recv() {
                                held.push(lease);
                            }
                            for lease in &held {
                                let tag = u64::from_le_bytes(lease.as_slice().try_into().unwrap());
                                assert_eq!(tag >> 32, u64::from(lease.id()), "bytes intact");
                            }
                            round += 1;
                            if round % 5 == 0 {
                                // Long enough for the loop to go to sleep first.
                                thread::sleep(Duration::from_micros(100));
                            }
                            held.clear(); // returns them, from this thread
                        }
                    });
                    tx
                })
                .collect();
            while back < TOTAL {
                while sent < TOTAL {
                    let Some(mut lease) = pool.try_take_recv() else {
                        break;
                    };
                    let tag = (u64::from(lease.id()) << 32) | sent as u64;
                    lease.buf_mut().copy_from_slice(&tag.to_le_bytes());
                    lease.set_len(8).unwrap();
                    txs[sent % WORKERS]
                        .send(handle.send(lease).unwrap())
                        .unwrap();
                    sent += 1;
                }
                signal.park(|may_block| {
                    if may_block {
                        seen.blocking_waits += 1;
                        let t = Instant::now();
                        seen.wake_events += wait(true);
                        assert!(
                            t.elapsed() < LOST,
                            "lost wake-up: slept {:?} with {} buffers out",
                            t.elapsed(),
                            sent - back
                        );
                    } else {
                        seen.wake_events += wait(false);
                    }
                });
                back += handle.drain();
                assert_eq!(pool.leased(), sent - back);
                assert!(start.elapsed() < Duration::from_secs(120), "too slow");
            }
            drop(txs);
        });
        assert_eq!(back, TOTAL);
        assert_eq!(handle.drain(), 0, "nothing comes back twice");
        assert_eq!(pool.recv_available(), N);
        eprintln!("{TOTAL} returns in {:?}: {seen:?}", start.elapsed());
        seen
    }

    #[test]
    fn epoll_loop_is_woken_by_returns() {
        let wake_fd = WakeFd::new();
        let fd = wake_fd.open().unwrap();
        let ep = Epoll::new().unwrap();
        // Level-triggered: readable until drained.
        ep.add(fd, WAKE_TOKEN, Interest::READABLE).unwrap();
        let mut storage = [Events::EMPTY; 8];
        let mut events = Events::new(&mut storage);
        let seen = run(&wake_fd, |may_block| {
            let timeout = if may_block { LOST } else { Duration::ZERO };
            ep.wait(&mut events, Some(timeout)).unwrap();
            let mut wakes = 0;
            for ev in events.iter() {
                assert_eq!(ev.token(), WAKE_TOKEN);
                wake_fd.drain().unwrap();
                wakes += 1;
            }
            wakes
        });
        assert!(seen.blocking_waits > 0, "the loop never slept: {seen:?}");
        assert!(
            seen.wake_events > 0,
            "never woken through the eventfd: {seen:?}"
        );
    }

    #[test]
    fn uring_loop_is_woken_by_returns() {
        let mut ring = match Uring::new(&UringConfig::default()) {
            Ok(ring) => ring,
            Err(e @ (Error::PermissionDenied | Error::Unsupported)) => {
                eprintln!("io_uring unavailable ({e}): skipped");
                return;
            }
            Err(e) => panic!("io_uring setup: {e}"),
        };
        let wake_fd = WakeFd::new();
        let fd = wake_fd.open().unwrap();
        let arm = |ring: &mut Uring| {
            let sqe = Sqe::poll_readable_multishot(fd).user_data(WAKE_TOKEN);
            // SAFETY: a poll points at no memory, and the eventfd stays open while the ring lives
            // (the ring is dropped explicitly, below, before `wake_fd`).
            unsafe { ring.push(&sqe) }.unwrap();
        };
        arm(&mut ring);
        let seen = run(&wake_fd, |may_block| {
            if may_block {
                ring.submit_and_wait(1, Some(LOST)).unwrap();
            } else {
                ring.submit().unwrap();
            }
            let mut wakes = 0;
            let mut rearm = false;
            for cqe in ring.completions() {
                assert_eq!(cqe.user_data, WAKE_TOKEN);
                cqe.result().unwrap();
                wake_fd.drain().unwrap();
                wakes += 1;
                rearm |= !cqe.more();
            }
            if rearm {
                arm(&mut ring);
            }
            wakes
        });
        drop(ring); // before `wake_fd` closes the descriptor the poll watches
        assert!(seen.blocking_waits > 0, "the loop never slept: {seen:?}");
        assert!(
            seen.wake_events > 0,
            "never woken through the eventfd: {seen:?}"
        );
    }
}
