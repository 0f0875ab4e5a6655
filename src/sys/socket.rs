//! TCP listeners and streams, IPv4 and IPv6, and socket addresses for io_uring.
//!
//! Every socket made here is non-blocking and close-on-exec from its creation
//! (`SOCK_NONBLOCK | SOCK_CLOEXEC`, `accept4`), so no descriptor leaks into a child between
//! two system calls and no call ever sleeps.
//!
//! # Notes
//!
//! - Writes use `send`/`sendmsg` with `MSG_NOSIGNAL`: writing to a connection the peer has
//!   closed fails with [`Error::BrokenPipe`] (or [`Error::ConnectionReset`] if the peer's
//!   reset arrived first) instead of raising `SIGPIPE`, which would kill a process that has
//!   not ignored it. No signal disposition is changed.
//! - A read returning `Ok(0)` from a non-empty buffer is end of stream: the peer shut down
//!   its writing side. The socket may still be writable.
//! - Non-blocking calls return [`Error::WouldBlock`] when they would have to wait; register
//!   the socket with [`Epoll`](super::epoll::Epoll) (or use io_uring) to learn when to retry.
//!   With edge-triggered epoll, retry until `WouldBlock` before waiting again.
//! - IPv6 sockets keep the kernel's default for `IPV6_V6ONLY` (normally off: a listener on
//!   `[::]` also accepts IPv4 connections, as v4-mapped addresses).

use super::{Error, Result};
use core::mem::size_of;
use core::net::SocketAddr;
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::io::{Errno, IoSlice};
use rustix::net::addr::{SocketAddrArg, SocketAddrLen, SocketAddrStorage};
use rustix::net::{
    self as rnet, AddressFamily, RecvFlags, SendAncillaryBuffer, SendFlags, SocketAddrAny,
    SocketFlags, SocketType, ipproto, sockopt,
};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// `sizeof(struct sockaddr_in)`.
const SOCKADDR_IN_LEN: usize = 16;
/// `sizeof(struct sockaddr_in6)`.
const SOCKADDR_IN6_LEN: usize = 28;
/// `sizeof(sa_family_t)`: the smallest address the kernel can report.
const SA_FAMILY_LEN: usize = 2;

static_assertions::const_assert!(size_of::<SocketAddrStorage>() >= SOCKADDR_IN6_LEN);
static_assertions::assert_eq_size!(SocketAddrLen, u32);

fn family_of(addr: &SocketAddr) -> AddressFamily {
    match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    }
}

/// A new non-blocking, close-on-exec TCP socket for `addr`'s family.
fn tcp_socket(addr: &SocketAddr) -> Result<OwnedFd> {
    let fd = rnet::socket_with(
        family_of(addr),
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        Some(ipproto::TCP),
    )?;
    Ok(fd)
}

fn to_socket_addr(any: SocketAddrAny) -> Result<SocketAddr> {
    Ok(SocketAddr::try_from(any)?)
}

fn local_addr_of(fd: BorrowedFd<'_>) -> Result<SocketAddr> {
    to_socket_addr(rnet::getsockname(fd)?)
}

/// Options for [`TcpListener::bind`].
///
/// `ListenOptions::default()` is a backlog of 1024 with `SO_REUSEADDR` and without
/// `SO_REUSEPORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenOptions {
    /// Length of the queue of connections that completed the handshake but were not yet
    /// accepted. The kernel silently caps it at `net.core.somaxconn`; values above
    /// `i32::MAX` are capped there too.
    pub backlog: u32,
    /// `SO_REUSEADDR` (default on): rebind a port at once after a restart, while connections
    /// of the previous process linger in `TIME_WAIT`. It does not allow two live listeners
    /// on one address.
    pub reuse_addr: bool,
    /// `SO_REUSEPORT` (default off): several listeners, each with this option set, may bind
    /// the same address (same effective user); the kernel spreads incoming connections
    /// among them.
    pub reuse_port: bool,
}

impl ListenOptions {
    /// The defaults, usable in `const` context.
    pub const DEFAULT: ListenOptions = ListenOptions {
        backlog: 1024,
        reuse_addr: true,
        reuse_port: false,
    };
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions::DEFAULT
    }
}

/// A non-blocking, close-on-exec TCP listening socket.
#[derive(Debug)]
pub struct TcpListener {
    fd: OwnedFd,
}

impl TcpListener {
    /// Creates a socket for `addr`'s family, applies `options`, binds it to `addr` and
    /// listens. Port 0 picks a free port; read it back with [`TcpListener::local_addr`].
    ///
    /// # Errors
    ///
    /// [`Error::AddrInUse`] if the address is taken (without `reuse_port` on both sides);
    /// [`Error::AddrNotAvailable`] if the address is not local (for example `::1` on a host
    /// whose loopback has no IPv6 address); `Error::Os(EAFNOSUPPORT)` if the kernel has no
    /// IPv6 at all; [`Error::PermissionDenied`] for a privileged port;
    /// [`Error::TooManyOpenFiles`].
    pub fn bind(addr: SocketAddr, options: ListenOptions) -> Result<TcpListener> {
        let fd = tcp_socket(&addr)?;
        if options.reuse_addr {
            sockopt::set_socket_reuseaddr(&fd, true)?;
        }
        if options.reuse_port {
            sockopt::set_socket_reuseport(&fd, true)?;
        }
        rnet::bind(&fd, &addr)?;
        let backlog = i32::try_from(options.backlog).unwrap_or(i32::MAX);
        rnet::listen(&fd, backlog)?;
        Ok(TcpListener { fd })
    }

    /// The address the listener is bound to (with the real port after binding port 0).
    ///
    /// # Errors
    ///
    /// As reported by `getsockname`; not expected for a bound socket.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        local_addr_of(self.fd.as_fd())
    }

    /// Accepts one pending connection, returning a non-blocking, close-on-exec stream and
    /// the peer's address.
    ///
    /// # Notes
    ///
    /// The listener is readable while connections are pending. With edge-triggered epoll,
    /// accept until [`Error::WouldBlock`].
    ///
    /// [`Error::TooManyOpenFiles`] leaves the connection in the queue, so a level-triggered
    /// listener stays readable and the loop would spin: stop watching the listener (or
    /// accept and close with a reserved descriptor) until descriptors are free again.
    /// [`Error::ConnectionAborted`] means a pending connection was reset before it was
    /// accepted: skip it and accept again.
    ///
    /// # Errors
    ///
    /// [`Error::WouldBlock`] when no connection is pending; the conditions above; others as
    /// the kernel reports them.
    pub fn accept(&self) -> Result<(TcpStream, SocketAddr)> {
        let (fd, addr) =
            rnet::acceptfrom_with(&self.fd, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)?;
        let stream = TcpStream { fd };
        let addr = match addr {
            Some(any) => to_socket_addr(any)?,
            // TCP always reports the peer; ask again rather than fail if it did not.
            None => stream.peer_addr()?,
        };
        Ok((stream, addr))
    }

    /// Wraps a descriptor that is already a listening TCP socket. Nothing is checked; it
    /// must be non-blocking (or every [`accept`](TcpListener::accept) may block).
    pub fn from_fd(fd: OwnedFd) -> TcpListener {
        TcpListener { fd }
    }

    /// Gives up ownership of the descriptor.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The raw descriptor number (for an io_uring accept, for example). The listener still
    /// owns it.
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The state of a connection right after [`TcpStream::connect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Connect {
    /// The connection is established (possible on loopback, not to be counted on).
    Connected,
    /// The handshake is under way. The socket becomes writable when it ends; then
    /// [`TcpStream::take_error`] says whether it succeeded.
    InProgress,
}

/// How [`TcpStream::shutdown`] closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shutdown {
    /// No more reads: further reads return end of stream (data that arrives is discarded).
    Read,
    /// No more writes: the peer reads end of stream once it has read everything sent
    /// (a FIN is sent after the queued data).
    Write,
    /// Both.
    Both,
}

/// A non-blocking, close-on-exec TCP connection.
#[derive(Debug)]
pub struct TcpStream {
    fd: OwnedFd,
}

impl TcpStream {
    /// Starts connecting to `addr` without blocking.
    ///
    /// Returns the stream and whether it is [`Connect::Connected`] already or
    /// [`Connect::InProgress`]. For a connection in progress, wait until the stream is
    /// writable, then call [`TcpStream::take_error`]: `None` means connected, `Some(e)` is
    /// why it failed (for example [`Error::ConnectionRefused`]).
    ///
    /// # Notes
    ///
    /// EINPROGRESS is not an error here, and neither is EINTR: for a non-blocking connect
    /// both mean the handshake continues in the background.
    ///
    /// # Errors
    ///
    /// Errors the kernel reports at once: [`Error::ConnectionRefused`] (possible on
    /// loopback), [`Error::AddrNotAvailable`] (no local port or address free),
    /// [`Error::TooManyOpenFiles`], `Error::Os(ENETUNREACH)`, ...
    pub fn connect(addr: SocketAddr) -> Result<(TcpStream, Connect)> {
        let stream = TcpStream::socket_for(addr)?;
        match rnet::connect(&stream.fd, &addr) {
            Ok(()) => Ok((stream, Connect::Connected)),
            Err(Errno::INPROGRESS) | Err(Errno::INTR) => Ok((stream, Connect::InProgress)),
            Err(e) => Err(Error::from(e)),
        }
    }

    /// An unconnected non-blocking, close-on-exec TCP socket of `addr`'s family, for an
    /// io_uring connect operation (with the address in a [`SockAddrBuf`]). Only the family
    /// of `addr` is used.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyOpenFiles`]; `Error::Os(EAFNOSUPPORT)` for IPv6 on a kernel without it.
    pub fn socket_for(addr: SocketAddr) -> Result<TcpStream> {
        Ok(TcpStream {
            fd: tcp_socket(&addr)?,
        })
    }

    /// Takes the socket's pending error (`SO_ERROR`), clearing it. After a non-blocking
    /// connect became writable: `None` means it connected, `Some(e)` why it failed.
    ///
    /// # Errors
    ///
    /// Only if the option itself cannot be read (not a socket).
    pub fn take_error(&self) -> Result<Option<Error>> {
        take_error(self.fd.as_fd())
    }

    /// Sets `TCP_NODELAY`: `true` sends small segments at once instead of coalescing them
    /// while an acknowledgement is outstanding (Nagle's algorithm).
    ///
    /// # Errors
    ///
    /// As the kernel reports them; not expected for a TCP socket.
    pub fn set_nodelay(&self, nodelay: bool) -> Result<()> {
        sockopt::set_tcp_nodelay(&self.fd, nodelay)?;
        Ok(())
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Errors
    ///
    /// As the kernel reports them; not expected for a TCP socket.
    pub fn nodelay(&self) -> Result<bool> {
        Ok(sockopt::tcp_nodelay(&self.fd)?)
    }

    /// Shuts down reading, writing, or both. See [`Shutdown`].
    ///
    /// # Errors
    ///
    /// [`Error::NotConnected`] if the socket is not connected.
    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        shutdown(self.fd.as_fd(), how)
    }

    /// The address of the peer.
    ///
    /// # Errors
    ///
    /// [`Error::NotConnected`] while a connect is in progress, after it failed, or once the
    /// connection is reset.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        match rnet::getpeername(&self.fd)? {
            Some(any) => to_socket_addr(any),
            None => Err(Error::NotConnected),
        }
    }

    /// The local address of the socket.
    ///
    /// # Errors
    ///
    /// As reported by `getsockname`; not expected.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        local_addr_of(self.fd.as_fd())
    }

    /// Reads into `buf`, returning the number of bytes read. `Ok(0)` for a non-empty `buf`
    /// is end of stream. An empty `buf` returns `Ok(0)` at once without a system call, and
    /// says nothing about end of stream.
    ///
    /// # Errors
    ///
    /// [`Error::WouldBlock`] when nothing is available yet; [`Error::ConnectionReset`] after
    /// the peer reset; [`Error::NotConnected`] before the connection is established.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        read(self.fd.as_fd(), buf)
    }

    /// Writes from `buf` (`send` with `MSG_NOSIGNAL`), returning how many bytes the kernel
    /// took, which may be fewer than `buf.len()`.
    ///
    /// # Errors
    ///
    /// [`Error::WouldBlock`] when the send buffer is full; [`Error::BrokenPipe`] or
    /// [`Error::ConnectionReset`] when the peer is gone (no `SIGPIPE` is raised).
    pub fn write(&self, buf: &[u8]) -> Result<usize> {
        write(self.fd.as_fd(), buf)
    }

    /// Writes from several buffers in order in one call (`sendmsg` with `MSG_NOSIGNAL`), for
    /// example the two halves of a wrapped byte ring. Returns how many bytes the kernel took
    /// in total, which may end in the middle of any buffer. No allocation: the `iovec`s are
    /// built on the stack, so `N` should stay small (it is capped by the kernel's `IOV_MAX`,
    /// 1024; more is [`Error::InvalidInput`]).
    ///
    /// # Errors
    ///
    /// As [`TcpStream::write`].
    pub fn write_vectored<const N: usize>(&self, bufs: &[&[u8]; N]) -> Result<usize> {
        write_vectored(self.fd.as_fd(), bufs)
    }

    /// Wraps a descriptor that is already a connected (or connecting) TCP socket, for
    /// example one an io_uring accept returned. Nothing is checked; it must be non-blocking
    /// (an io_uring accept with `SOCK_NONBLOCK | SOCK_CLOEXEC` in its flags gives that) or
    /// reads and writes may block.
    pub fn from_fd(fd: OwnedFd) -> TcpStream {
        TcpStream { fd }
    }

    /// Gives up ownership of the descriptor.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The raw descriptor number (for io_uring operations). The stream still owns it.
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

// Socket I/O on a borrowed descriptor: what `TcpStream`'s methods do, for code (the I/O
// driver) that keeps descriptors in its own slots rather than in `TcpStream`s.

/// [`TcpStream::read`] on a borrowed descriptor.
///
/// # Errors
///
/// As [`TcpStream::read`].
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize> {
    if buf.is_empty() {
        return Ok(0);
    }
    let (n, _) = rnet::recv(fd, buf, RecvFlags::empty())?;
    Ok(n)
}

/// [`TcpStream::write`] on a borrowed descriptor (`MSG_NOSIGNAL`).
///
/// # Errors
///
/// As [`TcpStream::write`].
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> Result<usize> {
    Ok(rnet::send(fd, buf, SendFlags::NOSIGNAL)?)
}

/// [`TcpStream::write_vectored`] on a borrowed descriptor (`MSG_NOSIGNAL`).
///
/// # Errors
///
/// As [`TcpStream::write`].
pub fn write_vectored<const N: usize>(fd: BorrowedFd<'_>, bufs: &[&[u8]; N]) -> Result<usize> {
    let iov: [IoSlice<'_>; N] = core::array::from_fn(|i| IoSlice::new(bufs[i]));
    let mut control = SendAncillaryBuffer::default();
    Ok(rnet::sendmsg(fd, &iov, &mut control, SendFlags::NOSIGNAL)?)
}

/// [`TcpStream::take_error`] on a borrowed descriptor.
///
/// # Errors
///
/// As [`TcpStream::take_error`].
pub fn take_error(fd: BorrowedFd<'_>) -> Result<Option<Error>> {
    match sockopt::socket_error(fd)? {
        Ok(()) => Ok(None),
        Err(e) => Ok(Some(Error::from(e))),
    }
}

/// [`TcpStream::peer_addr`] on a borrowed descriptor (`getpeername`).
///
/// # Errors
///
/// As [`TcpStream::peer_addr`]: [`Error::NotConnected`] once the connection is reset or
/// before a connect completed.
pub fn peer_addr(fd: BorrowedFd<'_>) -> Result<SocketAddr> {
    match rnet::getpeername(fd)? {
        Some(any) => to_socket_addr(any),
        None => Err(Error::NotConnected),
    }
}

/// [`TcpStream::shutdown`] on a borrowed descriptor.
///
/// # Errors
///
/// As [`TcpStream::shutdown`].
pub fn shutdown(fd: BorrowedFd<'_>, how: Shutdown) -> Result<()> {
    let how = match how {
        Shutdown::Read => rnet::Shutdown::Read,
        Shutdown::Write => rnet::Shutdown::Write,
        Shutdown::Both => rnet::Shutdown::Both,
    };
    rnet::shutdown(fd, how)?;
    Ok(())
}

macro_rules! fd_traits {
    ($ty:ident) => {
        impl AsFd for $ty {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.fd.as_fd()
            }
        }

        impl AsRawFd for $ty {
            fn as_raw_fd(&self) -> RawFd {
                self.fd.as_raw_fd()
            }
        }

        impl From<$ty> for OwnedFd {
            fn from(s: $ty) -> OwnedFd {
                s.fd
            }
        }

        impl From<OwnedFd> for $ty {
            /// Same as `from_fd`: the descriptor must be a non-blocking socket of this kind.
            fn from(fd: OwnedFd) -> $ty {
                $ty { fd }
            }
        }
    };
}

fd_traits!(TcpListener);
fd_traits!(TcpStream);

/// A socket address in the kernel's encoding (`struct sockaddr_storage` plus its length),
/// for io_uring's connect and accept operations, which take pointers to it.
///
/// Fixed size and `Copy`; it holds any IPv4 or IPv6 address.
///
/// - Connect: `SockAddrBuf::from(&addr)`, then pass [`as_ptr`](SockAddrBuf::as_ptr) and
///   [`len`](SockAddrBuf::len).
/// - Accept: [`SockAddrBuf::new`] (empty, length set to the capacity), pass
///   [`as_mut_ptr`](SockAddrBuf::as_mut_ptr) and [`len_mut_ptr`](SockAddrBuf::len_mut_ptr);
///   the kernel writes the peer's address and its length; decode with
///   [`to_socket_addr`](SockAddrBuf::to_socket_addr).
///
/// # Kernel memory
///
/// The pointers are valid while the buffer stays where it is. For an io_uring operation the
/// kernel reads (connect) or writes (accept) the buffer asynchronously, up to the
/// operation's completion: the buffer must live in storage the loop owns for at least that
/// long (not on the stack of the function that submitted, and not moved), and must not be
/// read or reused before the completion arrives. A multishot accept writes the same buffer
/// for every connection it completes.
#[derive(Clone, Copy)]
pub struct SockAddrBuf {
    storage: SocketAddrStorage,
    len: SocketAddrLen,
}

impl SockAddrBuf {
    /// The capacity in bytes (`sizeof(struct sockaddr_storage)`, 128 on Linux).
    pub const CAPACITY: SocketAddrLen = size_of::<SocketAddrStorage>() as SocketAddrLen;

    /// An empty buffer for an accept to fill: zeroed (family `AF_UNSPEC`), with its length
    /// set to the capacity, as the kernel's in/out length argument expects.
    pub fn new() -> SockAddrBuf {
        SockAddrBuf {
            storage: SocketAddrStorage::zeroed(),
            len: SockAddrBuf::CAPACITY,
        }
    }

    /// Makes the buffer ready for another accept (same state as [`SockAddrBuf::new`]).
    pub fn reset(&mut self) {
        *self = SockAddrBuf::new();
    }

    /// Pointer to the encoded address, as the `addr` of a connect SQE.
    pub fn as_ptr(&self) -> *const SocketAddrStorage {
        &self.storage
    }

    /// Mutable pointer to the storage, as the `addr` of an accept SQE.
    pub fn as_mut_ptr(&mut self) -> *mut SocketAddrStorage {
        &mut self.storage
    }

    /// Length of the encoded address in bytes (for an empty buffer, the capacity).
    pub fn len(&self) -> SocketAddrLen {
        self.len
    }

    /// Whether the length is zero (only possible if the kernel reported a zero length).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pointer to the length, as the in/out `addrlen` of an accept SQE: set to the capacity
    /// before, the kernel stores the address's real length.
    pub fn len_mut_ptr(&mut self) -> *mut SocketAddrLen {
        &mut self.len
    }

    /// Decodes the address (what [`SockAddrBuf::from`] encoded, or what an accept wrote).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] if the length does not fit the family (an accept that has not
    /// completed, a truncated address); `Error::Os(EAFNOSUPPORT)` if the family is neither
    /// IPv4 nor IPv6 (for example still `AF_UNSPEC`).
    pub fn to_socket_addr(&self) -> Result<SocketAddr> {
        let len = self.len as usize;
        let need = match self.storage.family() {
            AddressFamily::INET => SOCKADDR_IN_LEN,
            AddressFamily::INET6 => SOCKADDR_IN6_LEN,
            _ => return Err(Error::from(Errno::AFNOSUPPORT)),
        };
        if len < need.max(SA_FAMILY_LEN) || len > SockAddrBuf::CAPACITY as usize {
            return Err(Error::InvalidInput);
        }
        // SAFETY: `self.storage` is a whole `SocketAddrStorage`, fully initialised (zeroed on
        // creation, then written by the encoder or the kernel), so the first `len` bytes are
        // initialised; `len` was checked above to be at least the header and the full
        // `sockaddr_in`/`sockaddr_in6` of the family stored there, and at most the storage
        // size, which are the preconditions (and panic conditions) of `SocketAddrAny::read`
        // and the IPv4/IPv6 decoders behind `try_from`.
        let any = unsafe { SocketAddrAny::read(&self.storage, self.len) };
        to_socket_addr(any)
    }
}

impl Default for SockAddrBuf {
    fn default() -> SockAddrBuf {
        SockAddrBuf::new()
    }
}

impl From<&SocketAddr> for SockAddrBuf {
    /// Encodes `addr` (`sockaddr_in` or `sockaddr_in6`, network byte order).
    fn from(addr: &SocketAddr) -> SockAddrBuf {
        let mut storage = SocketAddrStorage::zeroed();
        // SAFETY: `write_sockaddr` needs `storage` writable for `size_of::<SocketAddrStorage>()`
        // bytes: it points to a whole, owned, local `SocketAddrStorage`. It writes the encoded
        // `sockaddr_in`/`sockaddr_in6` (at most 28 bytes, checked at compile time above to fit)
        // and returns that length.
        let len = unsafe { addr.write_sockaddr(&mut storage) };
        SockAddrBuf { storage, len }
    }
}

impl From<SocketAddr> for SockAddrBuf {
    fn from(addr: SocketAddr) -> SockAddrBuf {
        SockAddrBuf::from(&addr)
    }
}

impl core::fmt::Debug for SockAddrBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut d = f.debug_struct("SockAddrBuf");
        d.field("len", &self.len);
        match self.to_socket_addr() {
            Ok(addr) => d.field("addr", &addr),
            Err(_) => d.field("family", &self.storage.family()),
        };
        d.finish()
    }
}

/// Raises the soft limit on open descriptors (`RLIMIT_NOFILE`) towards `want`, never above
/// the hard limit and never lowering it. Returns the soft limit now in force
/// (`u64::MAX` standing for "unlimited").
///
/// A server that holds many connections calls this at start-up: the usual default soft
/// limit is 1024, while the hard limit is often much higher.
///
/// # Notes
///
/// Raising the hard limit needs `CAP_SYS_RESOURCE`, and this function does not try; the
/// kernel also caps descriptors at `fs.nr_open`. The limit is per process.
///
/// # Errors
///
/// As the kernel reports them for `setrlimit` (not expected when staying within the hard
/// limit).
pub fn raise_nofile_limit(want: u64) -> Result<u64> {
    // prlimit64 on the calling process with a valid resource cannot fail.
    let lim = getrlimit(Resource::Nofile);
    let current = lim.current.unwrap_or(u64::MAX);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    let target = want.min(hard);
    if target <= current {
        return Ok(current);
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: lim.maximum,
        },
    )?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

    #[test]
    fn sockaddr_round_trip() {
        let v4 = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 4222));
        let b = SockAddrBuf::from(&v4);
        assert_eq!(b.len() as usize, SOCKADDR_IN_LEN);
        assert_eq!(b.to_socket_addr(), Ok(v4));

        let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 8222, 7, 3));
        let b = SockAddrBuf::from(v6);
        assert_eq!(b.len() as usize, SOCKADDR_IN6_LEN);
        assert_eq!(b.to_socket_addr(), Ok(v6));
        let copy = b;
        assert_eq!(copy.to_socket_addr(), Ok(v6));
    }

    #[test]
    fn sockaddr_rejects_what_it_cannot_decode() {
        let mut b = SockAddrBuf::new();
        assert_eq!(b.len(), SockAddrBuf::CAPACITY);
        // AF_UNSPEC: an accept that has not written anything.
        assert_eq!(b.to_socket_addr(), Err(Error::from(Errno::AFNOSUPPORT)));
        // A length too short for the family must not reach rustix's asserts.
        let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 1, 0, 0));
        b = SockAddrBuf::from(v6);
        b.len = 16;
        assert_eq!(b.to_socket_addr(), Err(Error::InvalidInput));
        b.len = SockAddrBuf::CAPACITY + 1;
        assert_eq!(b.to_socket_addr(), Err(Error::InvalidInput));
        b.reset();
        assert_eq!(b.len(), SockAddrBuf::CAPACITY);
    }
}
