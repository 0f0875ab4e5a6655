//! The readiness backend: `epoll`.
//!
//! An [`Epoll`] instance watches descriptors, each registered with a caller-chosen `u64`
//! token (the loop encodes a slot and generation in it) and an [`Interest`]. [`Epoll::wait`]
//! fills caller-provided [`Events`] storage; each entry is read through the [`Event`] view.
//!
//! # Notes
//!
//! - **Level-triggered** (the default): a descriptor is reported on every wait for as long as
//!   it is ready. Simple, and a handler that reads only part of what is available is called
//!   again.
//! - **Edge-triggered** ([`Interest::edge_triggered`]): a descriptor is reported when its
//!   readiness *changes* (new data arrives, send space frees up). After an edge, the loop must
//!   read (or write, or accept) until the call returns [`Error::WouldBlock`] before it relies
//!   on epoll again: data left behind produces no new edge, and the connection would stall
//!   until the peer sends more. A read that returns fewer bytes than asked is not proof that
//!   the socket is drained; only `WouldBlock` is.
//! - `EPOLLERR` and `EPOLLHUP` are always reported, whatever the interest.
//! - Registrations belong to the open file description, not the descriptor number: closing a
//!   descriptor removes it from the set only when no duplicate (`dup`, `fork`) keeps the file
//!   open. Delete before closing if duplicates may exist.
//! - [`Epoll::wait`] reports EINTR as `Ok(0)`: a wake with no events. The loop re-checks its
//!   state (a stop flag set by a signal handler, timers) and waits again; this is how a
//!   signal-driven shutdown reaches the loop.

use super::{Error, Result};
use core::time::Duration;
use rustix::event::Timespec;
use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::io::Errno;

/// One event slot as the kernel writes it (`struct epoll_event`): the element type of the
/// storage behind [`Events`]. Create slots with [`Events::EMPTY`].
pub type RawEvent = epoll::Event;

/// The longest timeout passed to the kernel in one wait, in milliseconds (`i32::MAX`).
///
/// Longer timeouts are shortened to this (about 24.8 days): `epoll_pwait` takes an `int` of
/// milliseconds, and the alternative (`epoll_pwait2`) needs Linux 5.11. The caller sees an
/// early `Ok(0)`, which it must handle anyway (EINTR).
const MAX_TIMEOUT_MS: u64 = i32::MAX as u64;

/// The largest `maxevents` the kernel accepts (`INT_MAX / sizeof(struct epoll_event)`).
const MAX_EVENTS: usize = i32::MAX as usize / core::mem::size_of::<RawEvent>();

/// What a registration waits for.
///
/// Combine with `|`: `Interest::READABLE | Interest::WRITABLE`. Builders add the
/// edge-triggered mode and read-closed reporting. An interest with neither readable nor
/// writable is allowed: the descriptor then reports only errors and hang-ups (useful to park
/// a registration without deleting it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interest(EventFlags);

impl Interest {
    /// Readable (`EPOLLIN`): data to read, a connection to accept, or end of stream.
    pub const READABLE: Interest = Interest(EventFlags::IN);
    /// Writable (`EPOLLOUT`): send space, or a non-blocking connect that finished.
    pub const WRITABLE: Interest = Interest(EventFlags::OUT);
    /// The peer shut down its writing side (`EPOLLRDHUP`), reported as
    /// [`Event::is_read_closed`] without reading to EOF first.
    pub const READ_CLOSED: Interest = Interest(EventFlags::RDHUP);

    /// `self` plus `other`.
    #[must_use]
    pub const fn add(self, other: Interest) -> Interest {
        Interest(self.0.union(other.0))
    }

    /// `self` in edge-triggered mode (`EPOLLET`). See the [module notes](self#notes): read
    /// until [`Error::WouldBlock`] before trusting an edge again.
    #[must_use]
    pub const fn edge_triggered(self) -> Interest {
        Interest(self.0.union(EventFlags::ET))
    }

    /// `self` plus [`Interest::READ_CLOSED`].
    #[must_use]
    pub const fn read_closed(self) -> Interest {
        self.add(Interest::READ_CLOSED)
    }

    /// Whether readability is requested.
    pub const fn is_readable(self) -> bool {
        self.0.contains(EventFlags::IN)
    }

    /// Whether writability is requested.
    pub const fn is_writable(self) -> bool {
        self.0.contains(EventFlags::OUT)
    }

    /// Whether read-closed (`EPOLLRDHUP`) is requested.
    pub const fn is_read_closed(self) -> bool {
        self.0.contains(EventFlags::RDHUP)
    }

    /// Whether the registration is edge-triggered.
    pub const fn is_edge_triggered(self) -> bool {
        self.0.contains(EventFlags::ET)
    }
}

impl core::ops::BitOr for Interest {
    type Output = Interest;
    fn bitor(self, other: Interest) -> Interest {
        self.add(other)
    }
}

impl core::ops::BitOrAssign for Interest {
    fn bitor_assign(&mut self, other: Interest) {
        *self = self.add(other);
    }
}

impl core::fmt::Debug for Interest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Interest")
            .field("readable", &self.is_readable())
            .field("writable", &self.is_writable())
            .field("read_closed", &self.is_read_closed())
            .field("edge_triggered", &self.is_edge_triggered())
            .finish()
    }
}

/// One readiness event, as read out of [`Events`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Event {
    token: u64,
    flags: EventFlags,
}

impl Event {
    fn from_raw(raw: &RawEvent) -> Event {
        // Copy out of the (packed on x86_64) kernel struct before use.
        let flags = raw.flags;
        let data = raw.data;
        Event {
            token: data.u64(),
            flags,
        }
    }

    /// The token the descriptor was registered with.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Readable (`EPOLLIN`, or `EPOLLPRI` urgent data): a read, or an accept, will not block.
    /// Also set at end of stream, where a read returns 0.
    pub fn is_readable(&self) -> bool {
        self.flags.intersects(EventFlags::IN | EventFlags::PRI)
    }

    /// Writable (`EPOLLOUT`): a write will not block, or a non-blocking connect finished
    /// (check its outcome with `TcpStream::take_error`).
    pub fn is_writable(&self) -> bool {
        self.flags.contains(EventFlags::OUT)
    }

    /// The peer will send nothing more: `EPOLLRDHUP` (its writing side is shut down; only
    /// reported when [`Interest::READ_CLOSED`] was requested) or `EPOLLHUP` (both directions
    /// are closed). Data received before the close may still be waiting to be read.
    pub fn is_read_closed(&self) -> bool {
        self.flags.intersects(EventFlags::RDHUP | EventFlags::HUP)
    }

    /// Hang-up (`EPOLLHUP`): both directions are closed (after a reset, or after both sides
    /// shut down), or an unconnected socket. Always reported, whatever the interest.
    pub fn is_hup(&self) -> bool {
        self.flags.contains(EventFlags::HUP)
    }

    /// Error (`EPOLLERR`): the socket has a pending error (`SO_ERROR`), e.g. a refused
    /// connect or a reset. Always reported, whatever the interest.
    pub fn is_error(&self) -> bool {
        self.flags.contains(EventFlags::ERR)
    }
}

impl core::fmt::Debug for Event {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Event")
            .field("token", &self.token)
            .field("flags", &self.flags)
            .finish()
    }
}

/// The events of one [`Epoll::wait`], in storage the caller provides (no allocation).
///
/// ```
/// use ringlet::sys::epoll::Events;
/// let mut storage = [Events::EMPTY; 64];
/// let events = Events::new(&mut storage);
/// assert_eq!(events.capacity(), 64);
/// assert!(events.is_empty());
/// ```
pub struct Events<'a> {
    storage: &'a mut [RawEvent],
    len: usize,
}

impl<'a> Events<'a> {
    /// An empty slot, to initialise storage: `[Events::EMPTY; N]`.
    pub const EMPTY: RawEvent = RawEvent {
        flags: EventFlags::empty(),
        data: EventData::new_u64(0),
    };

    /// Events over `storage`; one wait reports at most `storage.len()` events (the rest stay
    /// pending for the next wait). Storage beyond what the kernel accepts in one call (over
    /// 178 million slots) is left unused.
    pub fn new(storage: &'a mut [RawEvent]) -> Events<'a> {
        Events { storage, len: 0 }
    }

    /// How many events one wait can report.
    pub fn capacity(&self) -> usize {
        self.storage.len()
    }

    /// How many events the last wait reported.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the last wait reported no events.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the reported events.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The `i`th reported event.
    pub fn get(&self, i: usize) -> Option<Event> {
        self.storage[..self.len].get(i).map(Event::from_raw)
    }

    /// The reported events, in the kernel's order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            inner: self.storage[..self.len].iter(),
        }
    }
}

impl core::fmt::Debug for Events<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'e> IntoIterator for &'e Events<'_> {
    type Item = Event;
    type IntoIter = Iter<'e>;
    fn into_iter(self) -> Iter<'e> {
        self.iter()
    }
}

/// Iterator over the reported [`Events`].
#[derive(Clone)]
pub struct Iter<'e> {
    inner: core::slice::Iter<'e, RawEvent>,
}

impl core::fmt::Debug for Iter<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Iter")
            .field("remaining", &self.inner.len())
            .finish()
    }
}

impl Iterator for Iter<'_> {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.inner.next().map(Event::from_raw)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// An epoll instance (created close-on-exec).
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// Creates an epoll instance with `EPOLL_CLOEXEC`.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyOpenFiles`], [`Error::OutOfMemory`], or what else the kernel reports.
    pub fn new() -> Result<Epoll> {
        let fd = epoll::create(CreateFlags::CLOEXEC)?;
        Ok(Epoll { fd })
    }

    /// Registers `fd` with `token` and `interest`.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`] if `fd` is already registered (use [`Epoll::modify`]);
    /// [`Error::PermissionDenied`] if `fd` does not support polling (a regular file);
    /// [`Error::InvalidInput`] for `fd` being this epoll instance itself.
    pub fn add<F: AsFd>(&self, fd: F, token: u64, interest: Interest) -> Result<()> {
        epoll::add(&self.fd, fd, EventData::new_u64(token), interest.0)?;
        Ok(())
    }

    /// Replaces the token and interest of a registered `fd`. With an edge-triggered interest,
    /// modifying re-arms: if the descriptor is ready now, the next wait reports it.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if `fd` is not registered.
    pub fn modify<F: AsFd>(&self, fd: F, token: u64, interest: Interest) -> Result<()> {
        epoll::modify(&self.fd, fd, EventData::new_u64(token), interest.0)?;
        Ok(())
    }

    /// Removes `fd` from the set. Events already returned by a wait are not recalled.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if `fd` is not registered.
    pub fn delete<F: AsFd>(&self, fd: F) -> Result<()> {
        epoll::delete(&self.fd, fd)?;
        Ok(())
    }

    /// Waits for events, up to `timeout` (`None`: until an event arrives), and stores them
    /// in `events`, replacing what it held. Returns how many were stored (also
    /// [`Events::len`]); `Ok(0)` when the timeout expired.
    ///
    /// `Some(Duration::ZERO)` polls without blocking. Other timeouts are rounded *up* to whole
    /// milliseconds (a timer never fires early because of rounding) and capped at
    /// `i32::MAX` milliseconds (about 24.8 days; the wait then returns `Ok(0)` early).
    ///
    /// # Notes
    ///
    /// A signal delivered during the wait interrupts it (EINTR); that is reported as `Ok(0)`,
    /// a wake with no events, not as an error. The caller re-checks its state and waits
    /// again. This is how a signal handler that sets a stop flag stops the loop.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] if `events` has no capacity.
    pub fn wait(&self, events: &mut Events<'_>, timeout: Option<Duration>) -> Result<usize> {
        events.len = 0;
        let max = events.storage.len().min(MAX_EVENTS);
        if max == 0 {
            return Err(Error::InvalidInput);
        }
        let ts = timeout.map(|d| {
            let d = d.min(Duration::from_millis(MAX_TIMEOUT_MS));
            Timespec {
                // At most i32::MAX / 1000 seconds: the cast cannot truncate.
                tv_sec: d.as_secs() as i64,
                tv_nsec: i64::from(d.subsec_nanos()),
            }
        });
        match epoll::wait(&self.fd, &mut events.storage[..max], ts.as_ref()) {
            Ok(n) => {
                events.len = n;
                Ok(n)
            }
            Err(Errno::INTR) => Ok(0),
            Err(e) => Err(Error::from(e)),
        }
    }

    /// Wraps a descriptor that is already an epoll instance.
    pub fn from_fd(fd: OwnedFd) -> Epoll {
        Epoll { fd }
    }

    /// Gives up ownership of the descriptor.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The raw descriptor number. The `Epoll` still owns it.
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<Epoll> for OwnedFd {
    fn from(e: Epoll) -> OwnedFd {
        e.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interest_builders() {
        let i = Interest::READABLE | Interest::WRITABLE;
        assert!(i.is_readable() && i.is_writable());
        assert!(!i.is_edge_triggered() && !i.is_read_closed());
        let i = Interest::READABLE.edge_triggered().read_closed();
        assert!(i.is_readable() && !i.is_writable());
        assert!(i.is_edge_triggered() && i.is_read_closed());
    }

    #[test]
    fn empty_storage_is_invalid() {
        let ep = Epoll::new().unwrap();
        let mut storage: [RawEvent; 0] = [];
        let mut events = Events::new(&mut storage);
        assert_eq!(
            ep.wait(&mut events, Some(Duration::ZERO)),
            Err(Error::InvalidInput)
        );
    }

    #[test]
    fn huge_timeout_is_capped_not_rejected() {
        let ep = Epoll::new().unwrap();
        let ev = crate::sys::eventfd::EventFd::new().unwrap();
        ev.notify().unwrap();
        ep.add(&ev, 7, Interest::READABLE).unwrap();
        let mut storage = [Events::EMPTY; 4];
        let mut events = Events::new(&mut storage);
        // Ready at once, so this returns immediately; without the cap the timeout would need
        // epoll_pwait2 or fail with EINVAL on older kernels.
        assert_eq!(ep.wait(&mut events, Some(Duration::MAX)), Ok(1));
        assert_eq!(events.get(0).map(|e| e.token()), Some(7));
    }
}
