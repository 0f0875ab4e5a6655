//! The one place where kernel errnos become typed errors.
//!
//! Every function in [`crate::sys`] returns [`Result<T>`]; no kernel failure panics. The named
//! variants are the conditions the event loop acts on (retry, back off, close with a reason);
//! everything else keeps its raw errno in [`Error::Os`] so nothing is lost.

use core::fmt;
use rustix::io::Errno;

/// Result of a kernel operation.
pub type Result<T> = core::result::Result<T, Error>;

/// A failed kernel operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// EAGAIN / EWOULDBLOCK: nothing to do now; try again after readiness.
    WouldBlock,
    /// EINTR: a signal interrupted the call.
    Interrupted,
    /// EINPROGRESS: a non-blocking connect has started and completes later.
    InProgress,
    /// ECONNRESET: the peer reset the connection.
    ConnectionReset,
    /// EPIPE: writing to a connection the peer has closed.
    BrokenPipe,
    /// ECONNREFUSED: nobody listens at the address.
    ConnectionRefused,
    /// ECONNABORTED: a connection was aborted before it was accepted.
    ConnectionAborted,
    /// ENOTCONN: the socket is not connected.
    NotConnected,
    /// ETIMEDOUT / ETIME: a kernel timeout expired.
    TimedOut,
    /// ECANCELED: an io_uring operation was cancelled.
    Canceled,
    /// EALREADY: a cancellation found the operation already running; wait for its completion.
    Already,
    /// ENOENT: nothing matched (e.g. a cancel found no such operation).
    NotFound,
    /// ENOBUFS: no buffer was available (the provided-buffer ring ran dry).
    NoBuffers,
    /// EMFILE / ENFILE: the process or system is out of file descriptors.
    TooManyOpenFiles,
    /// EADDRINUSE: the address is already bound.
    AddrInUse,
    /// EADDRNOTAVAIL: the address is not local.
    AddrNotAvailable,
    /// EPERM / EACCES: the kernel forbids the operation (e.g. io_uring disabled by policy).
    PermissionDenied,
    /// ENOSYS / EOPNOTSUPP: the kernel does not implement the call or the flag.
    Unsupported,
    /// EINVAL: an argument the kernel rejected (on io_uring setup: an unknown flag).
    InvalidInput,
    /// EBUSY: the completion queue overflowed and must be drained before submitting more.
    Busy,
    /// EEXIST: already registered (epoll add of a registered fd; io_uring enter from the
    /// wrong thread on a SINGLE_ISSUER ring).
    AlreadyExists,
    /// ENOMEM: the kernel could not allocate (locked-memory limit for rings, for example).
    OutOfMemory,
    /// Any other errno, kept raw.
    Os(i32),
}

impl Error {
    /// The error for a raw (positive) errno value, e.g. the negated `res` of a completion.
    pub fn from_raw_os_error(errno: i32) -> Error {
        Error::from(Errno::from_raw_os_error(errno))
    }

    /// The errno this error stands for (for named variants, the first of their errnos).
    pub fn raw_os_error(self) -> i32 {
        let e = match self {
            Error::WouldBlock => Errno::AGAIN,
            Error::Interrupted => Errno::INTR,
            Error::InProgress => Errno::INPROGRESS,
            Error::ConnectionReset => Errno::CONNRESET,
            Error::BrokenPipe => Errno::PIPE,
            Error::ConnectionRefused => Errno::CONNREFUSED,
            Error::ConnectionAborted => Errno::CONNABORTED,
            Error::NotConnected => Errno::NOTCONN,
            Error::TimedOut => Errno::TIMEDOUT,
            Error::Canceled => Errno::CANCELED,
            Error::Already => Errno::ALREADY,
            Error::NotFound => Errno::NOENT,
            Error::NoBuffers => Errno::NOBUFS,
            Error::TooManyOpenFiles => Errno::MFILE,
            Error::AddrInUse => Errno::ADDRINUSE,
            Error::AddrNotAvailable => Errno::ADDRNOTAVAIL,
            Error::PermissionDenied => Errno::PERM,
            Error::Unsupported => Errno::NOSYS,
            Error::InvalidInput => Errno::INVAL,
            Error::Busy => Errno::BUSY,
            Error::AlreadyExists => Errno::EXIST,
            Error::OutOfMemory => Errno::NOMEM,
            Error::Os(raw) => return raw,
        };
        e.raw_os_error()
    }

    /// True for errors that mean the connection is gone (reset, broken pipe, not connected,
    /// aborted): the loop closes the connection with this as the reason.
    pub fn is_disconnect(self) -> bool {
        matches!(
            self,
            Error::ConnectionReset
                | Error::BrokenPipe
                | Error::NotConnected
                | Error::ConnectionAborted
        )
    }
}

impl From<Errno> for Error {
    fn from(e: Errno) -> Error {
        match e {
            Errno::AGAIN => Error::WouldBlock,
            Errno::INTR => Error::Interrupted,
            Errno::INPROGRESS => Error::InProgress,
            Errno::CONNRESET => Error::ConnectionReset,
            Errno::PIPE => Error::BrokenPipe,
            Errno::CONNREFUSED => Error::ConnectionRefused,
            Errno::CONNABORTED => Error::ConnectionAborted,
            Errno::NOTCONN => Error::NotConnected,
            Errno::TIMEDOUT | Errno::TIME => Error::TimedOut,
            Errno::CANCELED => Error::Canceled,
            Errno::ALREADY => Error::Already,
            Errno::NOENT => Error::NotFound,
            Errno::NOBUFS => Error::NoBuffers,
            Errno::MFILE | Errno::NFILE => Error::TooManyOpenFiles,
            Errno::ADDRINUSE => Error::AddrInUse,
            Errno::ADDRNOTAVAIL => Error::AddrNotAvailable,
            Errno::PERM | Errno::ACCESS => Error::PermissionDenied,
            Errno::NOSYS | Errno::OPNOTSUPP => Error::Unsupported,
            Errno::INVAL => Error::InvalidInput,
            Errno::BUSY => Error::Busy,
            Errno::EXIST => Error::AlreadyExists,
            Errno::NOMEM => Error::OutOfMemory,
            other => Error::Os(other.raw_os_error()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Os(raw) => write!(f, "os error {raw}"),
            other => write!(
                f,
                "{} (os error {})",
                Errno::from_raw_os_error(other.raw_os_error()),
                other.raw_os_error()
            ),
        }
    }
}

impl core::error::Error for Error {}

#[cfg(feature = "std")]
impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        std::io::Error::from_raw_os_error(e.raw_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_errnos_round_trip() {
        for e in [
            Error::WouldBlock,
            Error::ConnectionReset,
            Error::BrokenPipe,
            Error::NoBuffers,
            Error::Canceled,
            Error::Already,
            Error::TooManyOpenFiles,
            Error::Busy,
        ] {
            assert_eq!(Error::from_raw_os_error(e.raw_os_error()), e);
        }
    }

    #[test]
    fn aliases_and_unknown_errnos() {
        assert_eq!(Error::from(Errno::NFILE), Error::TooManyOpenFiles);
        assert_eq!(Error::from(Errno::TIME), Error::TimedOut);
        assert_eq!(Error::from(Errno::ACCESS), Error::PermissionDenied);
        let raw = Errno::ISDIR.raw_os_error();
        assert_eq!(Error::from_raw_os_error(raw), Error::Os(raw));
        assert_eq!(Error::Os(raw).raw_os_error(), raw);
        assert!(Error::BrokenPipe.is_disconnect());
        assert!(!Error::WouldBlock.is_disconnect());
    }
}
