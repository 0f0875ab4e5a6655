//! The stream layer's one error type, [`Error`], and [`Partial`], an error with the count of
//! bytes a composed operation transferred before it.

use core::fmt;

use crate::reactor::ConnError;
use crate::sys;

/// Why a stream operation failed. One type for every stream, reads and writes alike.
///
/// An error carries no data: a [`ReadStream::read_some`](super::ReadStream::read_some) or
/// [`WriteStream::write_some`](super::WriteStream::write_some) that fails transferred nothing.
/// Composed operations that gathered bytes before failing say how many in a [`Partial`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The end of the stream: the peer (or the source) has no more bytes. A read discovers it;
    /// it is an error so that `Ok(0)` means only "you passed an empty buffer", and so that a
    /// composed read that stopped short can say why (with its partial count in a [`Partial`]).
    Eof,
    /// A bounded buffer has no room: [`read_until`](super::read_until) found no delimiter in a
    /// full buffer, [`read_to_end`](super::read_to_end) found more bytes than its buffer holds,
    /// a memory sink is full, a write can never fit a connection's write slab
    /// ([`ConnError::TooLarge`]), or an adapted writer accepts nothing more.
    Full,
    /// The stream is closed for this operation: a write after
    /// [`write_eof`](super::WriteSink::write_eof), or a connection that is already closed
    /// ([`ConnError::Stale`]).
    Closed,
    /// The bytes violate what the stream expects (a decoder or adapted stream reports it).
    InvalidData,
    /// The kernel refused: a reset, a broken pipe, an errno kept in [`sys::Error`].
    Io(sys::Error),
    /// An adapted stream failed in a way none of the above describes.
    Other,
}

impl Error {
    /// Whether this is [`Error::Eof`].
    pub const fn is_eof(self) -> bool {
        matches!(self, Error::Eof)
    }
}

impl From<sys::Error> for Error {
    fn from(e: sys::Error) -> Error {
        Error::Io(e)
    }
}

/// `Stale` is [`Error::Closed`], `TooLarge` is [`Error::Full`], `WouldBlock` is
/// `Io(WouldBlock)` (the slab has no room now), `Os(e)` is `Io(e)`.
impl From<ConnError> for Error {
    fn from(e: ConnError) -> Error {
        match e {
            ConnError::Stale => Error::Closed,
            ConnError::TooLarge => Error::Full,
            ConnError::WouldBlock => Error::Io(sys::Error::WouldBlock),
            ConnError::Os(e) => Error::Io(e),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Eof => f.write_str("end of stream"),
            Error::Full => f.write_str("buffer full"),
            Error::Closed => f.write_str("stream closed"),
            Error::InvalidData => f.write_str("invalid data"),
            Error::Io(e) => write!(f, "{e}"),
            Error::Other => f.write_str("stream error"),
        }
    }
}

impl core::error::Error for Error {}

/// A composed operation that failed after transferring `count` bytes.
///
/// [`ReadSource::read`](super::ReadSource::read) and [`read`](super::read) that meet the end
/// of the stream after 50 of 100 bytes fail with `Partial { error: Error::Eof, count: 50 }`:
/// the first 50 bytes of the buffer are valid, and the error says why the rest is missing.
/// On the write side, `count` is the number of bytes the stream accepted before `error`.
///
/// `?` turns it into its [`Error`] (dropping the count) where a caller does not need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Partial {
    /// Why the operation stopped.
    pub error: Error,
    /// Bytes transferred before it stopped (read into the front of the buffer, or accepted by
    /// the writer).
    pub count: usize,
}

impl Partial {
    /// `error` after `count` bytes.
    pub const fn new(error: Error, count: usize) -> Partial {
        Partial { error, count }
    }

    /// Whether the operation stopped at the end of the stream.
    pub const fn is_eof(self) -> bool {
        self.error.is_eof()
    }
}

impl From<Partial> for Error {
    fn from(p: Partial) -> Error {
        p.error
    }
}

impl fmt::Display for Partial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} after {} bytes", self.error, self.count)
    }
}

impl core::error::Error for Partial {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_errors_map_to_stream_errors() {
        assert_eq!(Error::from(ConnError::Stale), Error::Closed);
        assert_eq!(Error::from(ConnError::TooLarge), Error::Full);
        assert_eq!(
            Error::from(ConnError::WouldBlock),
            Error::Io(sys::Error::WouldBlock)
        );
        assert_eq!(
            Error::from(ConnError::Os(sys::Error::ConnectionReset)),
            Error::Io(sys::Error::ConnectionReset)
        );
        assert_eq!(
            Error::from(sys::Error::BrokenPipe),
            Error::Io(sys::Error::BrokenPipe)
        );
    }

    #[test]
    fn partial_keeps_count_and_converts_to_its_error() {
        let p = Partial::new(Error::Eof, 50);
        assert!(p.is_eof());
        assert_eq!(p.count, 50);
        assert_eq!(Error::from(p), Error::Eof);
        assert!(!Partial::new(Error::Full, 3).is_eof());
        let mut s = std::string::String::new();
        core::fmt::write(&mut s, format_args!("{p}")).unwrap();
        assert_eq!(s, "end of stream after 50 bytes");
    }
}
