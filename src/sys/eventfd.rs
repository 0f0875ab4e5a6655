//! The cross-thread wake: an `eventfd` the loop watches.
//!
//! Any thread may [`EventFd::notify`]; the loop registers the descriptor with epoll (or reads it
//! through io_uring) and calls [`EventFd::drain`] once per turn. Many notifies before a drain
//! collapse into one wake: the counter is a "something happened" flag, not a queue. Whatever
//! was announced (returned buffers, woken tasks) lives in its own queue, which the loop drains
//! after draining the eventfd, so no announcement is lost.

use super::{Error, Result};
use rustix::event::{EventfdFlags, eventfd};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::io::{self as rio, Errno};

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
        loop {
            return match rio::write(&self.fd, &1u64.to_ne_bytes()) {
                Ok(_) => Ok(()),
                Err(Errno::AGAIN) => Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => Err(Error::from(e)),
            };
        }
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
        let mut buf = [0u8; 8];
        loop {
            return match rio::read(&self.fd, &mut buf) {
                Ok(8) => Ok(u64::from_ne_bytes(buf)),
                // An eventfd read is all 8 bytes or an error; anything else is not an eventfd.
                Ok(_) => Err(Error::InvalidInput),
                Err(Errno::AGAIN) => Ok(0),
                Err(Errno::INTR) => continue,
                Err(e) => Err(Error::from(e)),
            };
        }
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
