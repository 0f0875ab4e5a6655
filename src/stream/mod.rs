//! Byte streams: the [`ReadStream`] / [`WriteStream`] traits and their refinements
//! [`ReadSource`] / [`WriteSink`], composed algorithms written once over them, and adapters
//! (seed 001, the ReadStream concept; seed 000, ConnectionStream).
//!
//! # The contract
//!
//! [`ReadStream::read_some`]`(buf)` is the one partial-read primitive. Its result is one of
//! exactly three things:
//!
//! - `Ok(n)` with `1 <= n <= buf.len()`: `n` bytes landed at the front of `buf`;
//! - `Err(Error::Eof)`: the stream has ended; no byte was read;
//! - `Err(e)`, any other error: no byte was read.
//!
//! An error carries no data: data is present if and only if the read succeeded, so a read
//! loop is `let n = s.read_some(&mut buf).await?; process(&buf[..n]);` and cannot drop the
//! stream's last bytes. The one exception to `n >= 1` is the **empty-buffer rule**: a
//! `read_some` with an empty buffer completes at once with `Ok(0)`, whatever the stream's
//! state, without looking at the stream (EOF and errors are discovered only by reading).
//! `read_some` may return fewer bytes than `buf` holds; it never waits to fill the buffer.
//!
//! Once `read_some` has returned an error (EOF included), the caller does not call it again:
//! the stream is done, and what a stream does when read after an error is unspecified (not
//! every stream can repeat its error). Every composed operation here obeys this.
//!
//! [`WriteStream::write_some`]`(buf)` is the mirror: `Ok(n)` with `1 <= n <= buf.len()` bytes
//! accepted from the front of `buf`, or an error with no byte of `buf` accepted; an empty
//! buffer is `Ok(0)` at once.
//!
//! The refinements add complete operations: [`ReadSource::read`] fills the whole buffer or
//! fails with a [`Partial`] that says how many bytes landed before the error (`Eof` after 50 of
//! 100 bytes is `Partial { error: Eof, count: 50 }`); [`WriteSink::write`] writes everything;
//! [`WriteSink::write_eof_with`] writes the final bytes and the end of the stream together
//! (protocol framings need the last data and the EOF emitted as one: a chunked body's
//! terminator, a TLS close-notify), and [`WriteSink::write_eof`] ends the stream. Every byte
//! written before the EOF reaches the peer before it, and nothing may be written after it.
//!
//! The scatter/gather forms ([`ReadStream::read_some_vectored`], [`ReadSource::read_vectored`],
//! [`WriteStream::write_some_vectored`], [`WriteSink::write_vectored`],
//! [`WriteSink::write_eof_vectored`]) take a buffer sequence and fill (or drain) each buffer
//! completely before the next. Their defaults work buffer by buffer; a stream that can do
//! better (one copy across several buffers) overrides them.
//!
//! ```
//! use ringlet::stream::conformance::block_on;
//! use ringlet::stream::{
//!     BoundedBuf, Error, MemSink, MemSource, Partial, ReadStream, WriteSink, read, read_until,
//!     relay,
//! };
//!
//! block_on(async {
//!     // The read loop: data, or an error without data.
//!     let mut src = MemSource::new(b"HELO x\r\nDATA");
//!     let mut buf = [0u8; 4];
//!     let mut got = 0;
//!     let end = loop {
//!         match src.read_some(&mut buf).await {
//!             Ok(n) => got += n,
//!             Err(e) => break e,
//!         }
//!     };
//!     assert_eq!((got, end), (12, Error::Eof));
//!
//!     // A composed read that meets the end says how far it got.
//!     let mut src = MemSource::new(b"HELO x\r\nDATA");
//!     let mut line = [0u8; 32];
//!     let mut lines = BoundedBuf::new(&mut line);
//!     let n = read_until(&mut src, &mut lines, b"\r\n").await.unwrap();
//!     assert_eq!(&lines.data()[..n], b"HELO x\r\n");
//!     lines.consume(n);
//!     let mut rest = [0u8; 8];
//!     // "DATA" was read past the delimiter: it is in `lines`, not in the stream.
//!     assert_eq!(lines.data(), b"DATA");
//!     assert_eq!(read(&mut src, &mut rest).await, Err(Partial::new(Error::Eof, 0)));
//!
//!     // Relay a source into a sink, then end the sink.
//!     let mut src = MemSource::new(b"echo me");
//!     let mut out = [0u8; 16];
//!     let mut sink = MemSink::new(&mut out);
//!     let mut ring = [0u8; 4];
//!     assert_eq!(relay(&mut src, &mut sink, &mut ring).await, Ok(7));
//!     sink.write_eof().await.unwrap();
//!     assert_eq!((sink.written(), sink.is_eof()), (&b"echo me"[..], true));
//! });
//! ```
//!
//! # Rust-specific parts of the contract
//!
//! - **`async fn` in traits, no `Send` bound.** The methods are `async fn`s, so their futures
//!   are not required to be `Send` (rustc's `async_fn_in_trait` lint, allowed here on purpose).
//!   ringlet is single-threaded: every stream that touches the loop is `!Send`, and the
//!   executor polls tasks on the loop's thread, so a `Send` bound would forbid the streams this
//!   crate is for and buy nothing. The traits are not object-safe (no `dyn ReadStream`); use
//!   them as generic bounds.
//! - **Flush.** [`WriteStream::flush`] (an addition to seed 001's concept, which has no
//!   buffering writers) completes when every byte accepted before it has been handed on. A
//!   writer that stages bytes (a connection copies them into its write slab and sends nothing
//!   until flushed) overrides it; for the others it is a no-op. [`WriteStream::start_flush`]
//!   starts a flush without waiting for it, where the writer can. [`relay`] flushes each chunk
//!   it drained before it reads again (it starts the flush and waits only for the last one),
//!   so it never waits for input while its own output sits unsent. [`WriteSink::write_eof`]
//!   flushes first.
//! - **Cancellation.** A `read_some` or `write_some` future dropped before it completes has
//!   transferred nothing: streams in ringlet keep this (an implementation that cannot must say
//!   so). Composed operations are not cancel-safe in general (a dropped [`read`] loses its
//!   count), except [`read_until`], whose progress lives in its [`BoundedBuf`].
//! - **Buffers by reference.** The buffer is borrowed for the whole operation, so it lives as
//!   long as the future (the seed's "take buffer sequences by value in coroutines").
//!
//! # What is here
//!
//! - The traits and [`Error`] / [`Partial`]; blanket impls for `&mut S`.
//! - Composed algorithms, generic over the traits: [`read`] (exact), [`read_vectored`],
//!   [`write()`], [`write_vectored`], [`read_until`] (a delimiter, into a [`BoundedBuf`]; bytes
//!   read past the delimiter stay there for the next call), [`read_to_end`] (bounded: an error
//!   when full, never growing), [`relay`] (from a [`ReadStream`] to a [`WriteStream`], draining
//!   fully and flushing before each read).
//! - Adapters: [`MemSource`] (a byte slice) and [`MemSink`] (a caller buffer);
//!   [`scripted::Scripted`] and [`scripted::ScriptedSink`], streams for tests that deliver,
//!   wait and fail where the script says.
//! - `eio` (feature `embedded-io-async`): adapters to and from the `embedded-io-async` traits,
//!   mapping the end of a stream to their `Ok(0)`.
//! - [`conformance`]: the contract as reusable checks ([`conformance::check_read_stream`],
//!   [`conformance::check_read_source`], [`conformance::check_write_sink`]) that every stream
//!   in ringlet passes, a [`conformance::Checked`] wrapper, and [`conformance::block_on`].
//!
//! - [`ConnectionStream`]: the traits over an executor task's
//!   [`Connection`](crate::exec::Connection): one copy on read (from the receive buffers
//!   into the caller's slice, keeping the rest, each buffer back to the pool once copied),
//!   writes copied into the write slab, `flush().await` until they are sent; split into
//!   halves for an echo through [`relay`].
#![allow(async_fn_in_trait)]

mod algo;
pub mod conformance;
mod connection;
#[cfg(feature = "embedded-io-async")]
#[cfg_attr(docsrs, doc(cfg(feature = "embedded-io-async")))]
pub mod eio;
mod error;
mod mem;
pub mod scripted;

pub use algo::{
    BoundedBuf, RelayError, read, read_to_end, read_until, read_vectored, relay, write,
    write_vectored,
};
pub use connection::{ConnectionReadHalf, ConnectionStream, ConnectionWriteHalf};
pub use error::{Error, Partial};
pub use mem::{MemSink, MemSource};
pub use scripted::{Scripted, ScriptedSink};

/// A stream of bytes read in parts: the partial-read primitive (seed 001).
///
/// See the [module documentation](self) for the contract: on success `1 <= n <= buf.len()`,
/// end of stream is `Err(Error::Eof)`, an error carries no data, an empty buffer is `Ok(0)` at
/// once whatever the state, and nothing is read after an error.
pub trait ReadStream {
    /// Reads at least one byte into the front of `buf`, and returns how many; or fails with no
    /// byte read (end of stream: [`Error::Eof`]). An empty `buf` is `Ok(0)` at once.
    ///
    /// Does not wait for more bytes than are available once at least one is.
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Error>;

    /// [`read_some`](ReadStream::read_some) into a buffer sequence: reads at least one byte,
    /// filling each buffer completely before the next, and returns the total. `Ok(0)` at once
    /// when every buffer is empty.
    ///
    /// The default reads into the first non-empty buffer only.
    async fn read_some_vectored(&mut self, bufs: &mut [&mut [u8]]) -> Result<usize, Error> {
        match bufs.iter_mut().find(|b| !b.is_empty()) {
            Some(buf) => self.read_some(buf).await,
            None => Ok(0),
        }
    }
}

/// A [`ReadStream`] that also reads complete buffers (seed 001's ReadSource).
///
/// The defaults are the composed [`read`] and [`read_vectored`]; a source that can fill a
/// buffer in one step (a memory source) overrides them.
pub trait ReadSource: ReadStream {
    /// Fills all of `buf` and returns `buf.len()`; an empty `buf` is `Ok(0)` at once.
    ///
    /// # Errors
    ///
    /// A [`Partial`] with the error that stopped it (`Eof` when the stream ended early) and the
    /// number of bytes read into the front of `buf` before it.
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Partial> {
        read(self, buf).await
    }

    /// Fills every buffer of `bufs`, in order, and returns their total length.
    ///
    /// # Errors
    ///
    /// A [`Partial`] whose count is the bytes read across the sequence, in order (the first
    /// buffers full, then part of the next).
    async fn read_vectored(&mut self, bufs: &mut [&mut [u8]]) -> Result<usize, Partial> {
        read_vectored(self, bufs).await
    }
}

/// A stream of bytes written in parts: the partial-write primitive (seed 001).
///
/// `write_some` on success accepts `1 <= n <= buf.len()` bytes from the front of `buf`; an
/// error accepts none; an empty `buf` is `Ok(0)` at once; nothing is written after an error.
pub trait WriteStream {
    /// Accepts at least one byte from the front of `buf`, and returns how many; or fails having
    /// accepted none. An empty `buf` is `Ok(0)` at once.
    ///
    /// Accepted bytes may be staged rather than sent: see [`flush`](WriteStream::flush).
    async fn write_some(&mut self, buf: &[u8]) -> Result<usize, Error>;

    /// [`write_some`](WriteStream::write_some) from a buffer sequence: accepts at least one
    /// byte, draining each buffer completely before the next, and returns the total. `Ok(0)` at
    /// once when every buffer is empty.
    ///
    /// The default writes from the first non-empty buffer only.
    async fn write_some_vectored(&mut self, bufs: &[&[u8]]) -> Result<usize, Error> {
        match bufs.iter().find(|b| !b.is_empty()) {
            Some(buf) => self.write_some(buf).await,
            None => Ok(0),
        }
    }

    /// Completes when every byte accepted before the call has been handed on (for a
    /// connection: sent). Bytes written after the call do not keep it waiting.
    ///
    /// The default does nothing: for writers that stage nothing.
    async fn flush(&mut self) -> Result<(), Error> {
        Ok(())
    }

    /// Starts a [`flush`](WriteStream::flush) without waiting for it. `Ok(true)`: every byte
    /// accepted before the call will be handed on without another call (a connection submits
    /// its send, and the reactor finishes it), and a later `flush().await` waits for them.
    /// `Ok(false)`: this writer cannot start a flush without being awaited; nothing was done,
    /// call `flush().await`.
    ///
    /// For a caller that goes on while its output leaves ([`relay`] reads the next chunk),
    /// where waiting for every flush would cost a wait per chunk. An error is the one `flush`
    /// would report (nothing more is written after it). The default is `Ok(false)`, correct for
    /// every writer; writers that can hand bytes on by themselves (or stage nothing) override it.
    fn start_flush(&mut self) -> Result<bool, Error> {
        Ok(false)
    }
}

/// A [`WriteStream`] that also writes complete buffers and ends the stream (seed 001's
/// WriteSink).
///
/// Ordering: every byte written before [`write_eof`](WriteSink::write_eof) (or with
/// [`write_eof_with`](WriteSink::write_eof_with)) is delivered before the end of the stream,
/// and once the end is signalled every later write fails with [`Error::Closed`] (an empty one
/// is still `Ok(0)`).
pub trait WriteSink: WriteStream {
    /// Writes all of `buf` and returns `buf.len()`; an empty `buf` is `Ok(0)` at once.
    ///
    /// # Errors
    ///
    /// A [`Partial`] with the error and the number of bytes accepted before it.
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Partial> {
        write(self, buf).await
    }

    /// Writes every buffer of `bufs`, in order, and returns their total length.
    ///
    /// # Errors
    ///
    /// A [`Partial`] with the bytes accepted across the sequence before the error.
    async fn write_vectored(&mut self, bufs: &[&[u8]]) -> Result<usize, Partial> {
        write_vectored(self, bufs).await
    }

    /// Writes all of `buf` as the final bytes and ends the stream, together; returns
    /// `buf.len()`. With an empty `buf` it is [`write_eof`](WriteSink::write_eof).
    ///
    /// The default is [`write()`](WriteSink::write) then `write_eof`; a sink whose framing needs
    /// the two as one (or can send them in one go) overrides it.
    ///
    /// # Errors
    ///
    /// A [`Partial`] with the bytes accepted before the error; if only the EOF failed, the
    /// count is `buf.len()`.
    async fn write_eof_with(&mut self, buf: &[u8]) -> Result<usize, Partial> {
        let n = self.write(buf).await?;
        self.write_eof().await.map_err(|e| Partial::new(e, n))?;
        Ok(n)
    }

    /// [`write_eof_with`](WriteSink::write_eof_with) over a buffer sequence.
    ///
    /// # Errors
    ///
    /// As for `write_eof_with`, the count across the sequence.
    async fn write_eof_vectored(&mut self, bufs: &[&[u8]]) -> Result<usize, Partial> {
        let n = self.write_vectored(bufs).await?;
        self.write_eof().await.map_err(|e| Partial::new(e, n))?;
        Ok(n)
    }

    /// Ends the stream: completes when every byte written before it has been delivered and
    /// the end has been signalled (for a connection: flushed, then its write side shut down).
    /// Every later non-empty write fails with [`Error::Closed`].
    async fn write_eof(&mut self) -> Result<(), Error>;
}

impl<S: ReadStream + ?Sized> ReadStream for &mut S {
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        (**self).read_some(buf).await
    }

    async fn read_some_vectored(&mut self, bufs: &mut [&mut [u8]]) -> Result<usize, Error> {
        (**self).read_some_vectored(bufs).await
    }
}

impl<S: ReadSource + ?Sized> ReadSource for &mut S {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Partial> {
        (**self).read(buf).await
    }

    async fn read_vectored(&mut self, bufs: &mut [&mut [u8]]) -> Result<usize, Partial> {
        (**self).read_vectored(bufs).await
    }
}

impl<S: WriteStream + ?Sized> WriteStream for &mut S {
    async fn write_some(&mut self, buf: &[u8]) -> Result<usize, Error> {
        (**self).write_some(buf).await
    }

    async fn write_some_vectored(&mut self, bufs: &[&[u8]]) -> Result<usize, Error> {
        (**self).write_some_vectored(bufs).await
    }

    async fn flush(&mut self) -> Result<(), Error> {
        (**self).flush().await
    }

    fn start_flush(&mut self) -> Result<bool, Error> {
        (**self).start_flush()
    }
}

impl<S: WriteSink + ?Sized> WriteSink for &mut S {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Partial> {
        (**self).write(buf).await
    }

    async fn write_vectored(&mut self, bufs: &[&[u8]]) -> Result<usize, Partial> {
        (**self).write_vectored(bufs).await
    }

    async fn write_eof_with(&mut self, buf: &[u8]) -> Result<usize, Partial> {
        (**self).write_eof_with(buf).await
    }

    async fn write_eof_vectored(&mut self, bufs: &[&[u8]]) -> Result<usize, Partial> {
        (**self).write_eof_vectored(bufs).await
    }

    async fn write_eof(&mut self) -> Result<(), Error> {
        (**self).write_eof().await
    }
}
