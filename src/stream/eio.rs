//! Adapters to the [`embedded_io_async`] traits (feature `embedded-io-async`), both ways:
//! [`ToEio`] shows a ringlet stream as an `embedded_io_async::Read` / `Write`, and
//! [`FromEio`] shows an `embedded_io_async` reader or writer as a ringlet [`ReadStream`] /
//! [`WriteStream`]. Both are no_std and allocation-free, like the crate they adapt.
//!
//! # The mapping
//!
//! The two contracts differ at the end of a stream, and the adapters translate:
//!
//! | ringlet | embedded-io-async |
//! |---|---|
//! | `read_some` → `Err(Error::Eof)` | `read` → `Ok(0)` (for a non-empty buffer) |
//! | `read_some` of an empty buffer → `Ok(0)`, always | `read` of an empty buffer → `Ok(0)` or an error |
//! | nothing is read after an error | reads after `Ok(0)` are allowed |
//! | `write_some` that cannot accept a byte → `Err(Error::Full)` | `write` → an error of kind `WriteZero` (an `Ok(0)` is a bug) |
//! | `WriteStream::flush` | `Write::flush` |
//!
//! - [`ToEio`] turns `Eof` into `Ok(0)`, and keeps the ringlet rule for its caller: once the
//!   stream has failed, it is never read (or written) again; the adapter answers later calls
//!   itself, with `Ok(0)` after the end or the same error after any other failure.
//! - [`FromEio`] answers an empty buffer with `Ok(0)` without calling the inner reader, turns
//!   its `Ok(0)` into `Err(Error::Eof)`, and a writer's `Ok(0)` for a non-empty buffer into
//!   `Err(Error::Full)`.
//! - Errors map by kind ([`Error`] implements [`embedded_io_async::Error`]): I/O errors to the
//!   `ErrorKind` of the same name, `Full` to `WriteZero`, `Closed` to `BrokenPipe`,
//!   `InvalidData` to `InvalidData`, everything without a counterpart (including `Eof`, which
//!   the adapters never pass on as an error from a read) to `Other`. The other way, every
//!   `ErrorKind` with a [`sys::Error`] of the same name becomes [`Error::Io`] of it, `WriteZero`
//!   becomes `Full`, `InvalidData` becomes `InvalidData`, and the rest `Other`. Kinds that have
//!   a ringlet counterpart survive a round trip (tested).
//! - embedded-io-async has no end-of-stream for writers, so [`FromEio`] is a `WriteStream`, not
//!   a [`WriteSink`](super::WriteSink); [`ToEio`] of a sink is a plain `Write` (call
//!   [`write_eof`](super::WriteSink::write_eof) on the sink through
//!   [`ToEio::get_mut`] to end it).
//! - Cancel safety carries over: the adapters add no state that a dropped future could tear.

use embedded_io_async::{ErrorKind, ErrorType, Read, Write};

use super::{Error, ReadSource, ReadStream, WriteStream};
use crate::sys;

impl embedded_io_async::Error for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Full => ErrorKind::WriteZero,
            Error::Closed => ErrorKind::BrokenPipe,
            Error::InvalidData => ErrorKind::InvalidData,
            Error::Io(e) => match e {
                sys::Error::NotFound => ErrorKind::NotFound,
                sys::Error::PermissionDenied => ErrorKind::PermissionDenied,
                sys::Error::ConnectionRefused => ErrorKind::ConnectionRefused,
                sys::Error::ConnectionReset => ErrorKind::ConnectionReset,
                sys::Error::ConnectionAborted => ErrorKind::ConnectionAborted,
                sys::Error::NotConnected => ErrorKind::NotConnected,
                sys::Error::AddrInUse => ErrorKind::AddrInUse,
                sys::Error::AddrNotAvailable => ErrorKind::AddrNotAvailable,
                sys::Error::BrokenPipe => ErrorKind::BrokenPipe,
                sys::Error::AlreadyExists => ErrorKind::AlreadyExists,
                sys::Error::InvalidInput => ErrorKind::InvalidInput,
                sys::Error::TimedOut => ErrorKind::TimedOut,
                sys::Error::Interrupted => ErrorKind::Interrupted,
                sys::Error::Unsupported => ErrorKind::Unsupported,
                sys::Error::OutOfMemory => ErrorKind::OutOfMemory,
                _ => ErrorKind::Other,
            },
            _ => ErrorKind::Other,
        }
    }
}

/// The ringlet error for an embedded-io error kind (see the [module documentation](self)).
pub fn error_from_kind(kind: ErrorKind) -> Error {
    let io = |e| Error::Io(e);
    match kind {
        ErrorKind::NotFound => io(sys::Error::NotFound),
        ErrorKind::PermissionDenied => io(sys::Error::PermissionDenied),
        ErrorKind::ConnectionRefused => io(sys::Error::ConnectionRefused),
        ErrorKind::ConnectionReset => io(sys::Error::ConnectionReset),
        ErrorKind::ConnectionAborted => io(sys::Error::ConnectionAborted),
        ErrorKind::NotConnected => io(sys::Error::NotConnected),
        ErrorKind::AddrInUse => io(sys::Error::AddrInUse),
        ErrorKind::AddrNotAvailable => io(sys::Error::AddrNotAvailable),
        ErrorKind::BrokenPipe => io(sys::Error::BrokenPipe),
        ErrorKind::AlreadyExists => io(sys::Error::AlreadyExists),
        ErrorKind::InvalidInput => io(sys::Error::InvalidInput),
        ErrorKind::TimedOut => io(sys::Error::TimedOut),
        ErrorKind::Interrupted => io(sys::Error::Interrupted),
        ErrorKind::Unsupported => io(sys::Error::Unsupported),
        ErrorKind::OutOfMemory => io(sys::Error::OutOfMemory),
        ErrorKind::InvalidData => Error::InvalidData,
        ErrorKind::WriteZero => Error::Full,
        _ => Error::Other,
    }
}

/// A ringlet stream seen as an [`embedded_io_async::Read`] (for a [`ReadStream`]) and
/// [`embedded_io_async::Write`] (for a [`WriteStream`]): `Eof` becomes `Ok(0)`, and after a
/// failure the stream inside is not called again (see the [module documentation](self)).
#[derive(Debug)]
pub struct ToEio<S> {
    inner: S,
    read_end: Option<Error>,
    write_end: Option<Error>,
}

impl<S> ToEio<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> ToEio<S> {
        ToEio {
            inner,
            read_end: None,
            write_end: None,
        }
    }

    /// The stream inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stream inside, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> ErrorType for ToEio<S> {
    type Error = Error;
}

/// `read` is `read_some`, with `Eof` as `Ok(0)` (again on every later call, without reading).
impl<S: ReadStream> Read for ToEio<S> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.read_end {
            Some(Error::Eof) => return Ok(0),
            Some(e) => return Err(e),
            None => {}
        }
        match self.inner.read_some(buf).await {
            Ok(n) => Ok(n),
            Err(e) => {
                self.read_end = Some(e);
                if e == Error::Eof { Ok(0) } else { Err(e) }
            }
        }
    }
}

/// `write` is `write_some`, `flush` is `flush`; after a failure, the same error without
/// writing.
impl<S: WriteStream> Write for ToEio<S> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(e) = self.write_end {
            return Err(e);
        }
        let r = self.inner.write_some(buf).await;
        if let Err(e) = r {
            self.write_end = Some(e);
        }
        r
    }

    async fn flush(&mut self) -> Result<(), Error> {
        if let Some(e) = self.write_end {
            return Err(e);
        }
        let r = self.inner.flush().await;
        if let Err(e) = r {
            self.write_end = Some(e);
        }
        r
    }
}

/// An [`embedded_io_async`] reader or writer seen as a ringlet [`ReadStream`] (and
/// [`ReadSource`], with the composed `read`) or [`WriteStream`]: `Ok(0)` from a read becomes
/// `Err(Error::Eof)` (see the [module documentation](self)).
#[derive(Debug)]
pub struct FromEio<T> {
    inner: T,
}

impl<T> FromEio<T> {
    /// Wraps `inner`.
    pub const fn new(inner: T) -> FromEio<T> {
        FromEio { inner }
    }

    /// The reader or writer inside.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The reader or writer inside, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Unwraps it.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

fn map_err<E: embedded_io_async::Error>(e: E) -> Error {
    error_from_kind(e.kind())
}

impl<T: Read> ReadStream for FromEio<T> {
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.inner.read(buf).await {
            Ok(0) => Err(Error::Eof),
            Ok(n) => Ok(n.min(buf.len())),
            Err(e) => Err(map_err(e)),
        }
    }
}

impl<T: Read> ReadSource for FromEio<T> {}

impl<T: Write> WriteStream for FromEio<T> {
    async fn write_some(&mut self, buf: &[u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.inner.write(buf).await {
            Ok(0) => Err(Error::Full),
            Ok(n) => Ok(n.min(buf.len())),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn flush(&mut self) -> Result<(), Error> {
        self.inner.flush().await.map_err(map_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::conformance::{block_on, check_read_source, check_read_stream};
    use crate::stream::scripted::{Scripted, Step};
    use crate::stream::{MemSink, MemSource, WriteSink, relay};
    use embedded_io_async::Error as _;

    const DATA: &[u8] =
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nand a body of some length, past 64 bytes in all";

    #[test]
    fn from_eio_slice_reader_conforms() {
        block_on(check_read_stream(
            async || FromEio::new(DATA),
            DATA,
            Error::Eof,
        ));
        block_on(check_read_source(
            async || FromEio::new(DATA),
            DATA,
            Error::Eof,
        ));
        block_on(check_read_stream(
            async || FromEio::new(&b""[..]),
            b"",
            Error::Eof,
        ));
    }

    #[test]
    fn to_eio_round_trip_conforms() {
        // ringlet -> embedded-io -> ringlet: the two mappings undo each other.
        block_on(check_read_stream(
            async || FromEio::new(ToEio::new(MemSource::new(DATA))),
            DATA,
            Error::Eof,
        ));
        let reset = Error::Io(sys::Error::ConnectionReset);
        let steps = [Step::Data(DATA), Step::Fail(reset)];
        block_on(check_read_stream(
            async || FromEio::new(ToEio::new(Scripted::new(&steps).chunk(5))),
            DATA,
            reset,
        ));
    }

    #[test]
    fn to_eio_read_maps_eof_to_ok_zero_and_never_reads_again() {
        let steps = [Step::Data(b"abc")];
        let mut r = ToEio::new(Scripted::new(&steps));
        let mut buf = [0u8; 8];
        assert_eq!(block_on(Read::read(&mut r, &mut buf)), Ok(3));
        for _ in 0..3 {
            assert_eq!(block_on(Read::read(&mut r, &mut buf)), Ok(0));
        }
        assert_eq!(block_on(Read::read(&mut r, &mut [])), Ok(0));
        assert_eq!(
            r.get_ref().reads(),
            2,
            "one read found the end; later ones did not read"
        );
        assert_eq!(r.get_ref().reads_after_end(), 0);

        // embedded-io's read_exact over it.
        let mut r = ToEio::new(MemSource::new(b"abcdef"));
        let mut four = [0u8; 4];
        assert_eq!(block_on(r.read_exact(&mut four)), Ok(()));
        assert_eq!(&four, b"abcd");
        assert_eq!(
            block_on(r.read_exact(&mut four)),
            Err(embedded_io_async::ReadExactError::UnexpectedEof)
        );

        // Another error repeats, and keeps its kind.
        let reset = Error::Io(sys::Error::ConnectionReset);
        let steps = [Step::Fail(reset)];
        let mut r = ToEio::new(Scripted::new(&steps));
        for _ in 0..2 {
            let e = block_on(Read::read(&mut r, &mut buf)).unwrap_err();
            assert_eq!((e, e.kind()), (reset, ErrorKind::ConnectionReset));
        }
        assert_eq!(r.get_ref().reads_after_end(), 0);
    }

    #[test]
    fn to_eio_write_full_is_write_zero() {
        let mut store = [0u8; 5];
        let mut w = ToEio::new(MemSink::new(&mut store));
        assert_eq!(block_on(w.write_all(b"abc")), Ok(()));
        assert_eq!(block_on(Write::flush(&mut w)), Ok(()));
        let e = block_on(w.write_all(b"defg")).unwrap_err();
        assert_eq!((e, e.kind()), (Error::Full, ErrorKind::WriteZero));
        assert_eq!(w.get_ref().written(), b"abcde");
        assert_eq!(
            block_on(Write::write(&mut w, b"x")),
            Err(Error::Full),
            "not written again"
        );
        // Ending the sink through get_mut, then a write is Closed -> BrokenPipe.
        let mut store = [0u8; 5];
        let mut w = ToEio::new(MemSink::new(&mut store));
        block_on(w.get_mut().write_eof()).unwrap();
        let e = block_on(Write::write(&mut w, b"x")).unwrap_err();
        assert_eq!((e, e.kind()), (Error::Closed, ErrorKind::BrokenPipe));
    }

    #[test]
    fn from_eio_slice_writer_full_is_full() {
        let mut store = [0u8; 4];
        let mut w = FromEio::new(&mut store[..]);
        assert_eq!(block_on(w.write_some(b"")), Ok(0));
        assert_eq!(block_on(w.write_some(b"abc")), Ok(3));
        assert_eq!(block_on(w.write_some(b"de")), Ok(1));
        assert_eq!(block_on(w.write_some(b"f")), Err(Error::Full));
        assert_eq!(block_on(w.flush()), Ok(()));
        assert_eq!(&store, b"abcd");

        // relay from an embedded-io reader to an embedded-io writer, through ringlet.
        let mut out = [0u8; 128];
        let mut src = FromEio::new(DATA);
        let mut dst = FromEio::new(&mut out[..]);
        let mut buf = [0u8; 7];
        assert_eq!(
            block_on(relay(&mut src, &mut dst, &mut buf)),
            Ok(DATA.len() as u64)
        );
        assert_eq!(&out[..DATA.len()], DATA);
    }

    #[test]
    fn error_kinds_round_trip() {
        let kinds = [
            ErrorKind::NotFound,
            ErrorKind::PermissionDenied,
            ErrorKind::ConnectionRefused,
            ErrorKind::ConnectionReset,
            ErrorKind::ConnectionAborted,
            ErrorKind::NotConnected,
            ErrorKind::AddrInUse,
            ErrorKind::AddrNotAvailable,
            ErrorKind::BrokenPipe,
            ErrorKind::AlreadyExists,
            ErrorKind::InvalidInput,
            ErrorKind::InvalidData,
            ErrorKind::TimedOut,
            ErrorKind::Interrupted,
            ErrorKind::Unsupported,
            ErrorKind::OutOfMemory,
            ErrorKind::WriteZero,
            ErrorKind::Other,
        ];
        for k in kinds {
            assert_eq!(error_from_kind(k).kind(), k, "{k:?}");
        }
        assert_eq!(Error::Eof.kind(), ErrorKind::Other);
        assert_eq!(Error::Io(sys::Error::WouldBlock).kind(), ErrorKind::Other);
        assert_eq!(error_from_kind(ErrorKind::Other), Error::Other);
    }
}
