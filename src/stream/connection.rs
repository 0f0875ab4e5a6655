//! [`ConnectionStream`]: the stream traits over an executor task's
//! [`Connection`](crate::exec::Connection) (seed 000).

use core::fmt;
use core::future::{Future, poll_fn};
use core::task::Poll;

use super::{Error, ReadSource, ReadStream, WriteSink, WriteStream};
use crate::exec::{self, Connection};
use crate::reactor::CloseReason;

/// How a [`Connection`]'s errors read as stream errors: `Eof` is [`Error::Eof`]; a close
/// for a kernel error (reset, broken pipe) is [`Error::Io`] with it, any other close
/// [`Error::Closed`]; a write larger than the slab, and a receive queue that overran, are
/// [`Error::Full`]; `WouldBlock` is `Io(WouldBlock)`; a connection used outside its task's
/// poll is [`Error::Other`].
impl From<exec::Error> for Error {
    fn from(e: exec::Error) -> Error {
        match e {
            exec::Error::Eof => Error::Eof,
            exec::Error::Closed(CloseReason::Error(e)) => Error::Io(e),
            exec::Error::Closed(_) => Error::Closed,
            exec::Error::WouldBlock => Error::Io(crate::sys::Error::WouldBlock),
            exec::Error::TooLarge | exec::Error::Overrun => Error::Full,
            _ => Error::Other,
        }
    }
}

/// A [`Connection`] as a byte stream: [`ReadStream`] / [`ReadSource`] and [`WriteStream`] /
/// [`WriteSink`], for code written against the stream traits (the composed algorithms,
/// codecs, [`relay`](super::relay)). The seed's `ConnectionStream`, with what .NET reports as
/// `NotSupported` (synchronous read and flush, seek, length, position) simply absent.
///
/// - **Read: one copy.** [`read_some`](ReadStream::read_some) copies received bytes from the
///   connection's receive buffers into the caller's slice, as many as fit, waiting only when
///   there are none ([`Connection::read_some`]); what does not fit stays for the next read,
///   and each receive buffer goes back to the pool as soon as its last byte is copied.
/// - **Write: one copy, no implicit send.** [`write_some`](WriteStream::write_some) copies
///   into the connection's write slab (as much as fits; when it is full it flushes and waits
///   for room, then copies); nothing is sent until [`flush`](WriteStream::flush)`.await`,
///   which completes when every byte written before it has been sent, or
///   [`start_flush`](WriteStream::start_flush), which sends them without waiting.
/// - **End.** [`write_eof`](WriteSink::write_eof) flushes, then shuts down the sending side;
///   later writes fail with [`Error::Closed`]. Dropping the stream drops the connection,
///   which closes it (gracefully).
///
/// Errors map as the `From<exec::Error>` impl for [`Error`] says; end of stream is
/// [`Error::Eof`], reported once every received byte has been read.
///
/// Cancel-safe: a `read_some` or `write_some` dropped before it completes has transferred
/// nothing (a read copies only in the poll that completes it; a write that waits for room
/// has accepted nothing yet).
///
/// [`ConnectionStream::split`] gives a read half and a write half (for [`relay`](super::relay)
/// from a connection to itself, an echo).
///
/// ```no_run
/// use ringlet::exec::Connection;
/// use ringlet::stream::{relay, ConnectionStream};
///
/// // The async echo: everything read is written back, its send started before the next read.
/// async fn echo(conn: Connection) {
///     let mut stream = ConnectionStream::new(conn);
///     let (mut rd, mut wr) = stream.split();
///     let mut ring = [0u8; 4096];
///     let _ = relay(&mut rd, &mut wr, &mut ring).await;
/// }
/// ```
pub struct ConnectionStream {
    conn: Connection,
    eof_written: bool,
}

impl ConnectionStream {
    /// A stream over `conn`.
    pub fn new(conn: Connection) -> ConnectionStream {
        ConnectionStream {
            conn,
            eof_written: false,
        }
    }

    /// The connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Bytes received and not read yet.
    pub fn buffered(&self) -> usize {
        self.conn.buffered()
    }

    /// The connection back (bytes received and not read yet stay in it).
    pub fn into_inner(self) -> Connection {
        self.conn
    }

    /// A read half and a write half of the stream, usable at the same time (one read and
    /// one write side, e.g. [`relay`](super::relay) from the connection back to it).
    pub fn split(&mut self) -> (ConnectionReadHalf<'_>, ConnectionWriteHalf<'_>) {
        (
            ConnectionReadHalf { conn: &self.conn },
            ConnectionWriteHalf {
                conn: &self.conn,
                eof_written: &mut self.eof_written,
            },
        )
    }
}

impl fmt::Debug for ConnectionStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionStream")
            .field("conn", &self.conn)
            .field("buffered", &self.buffered())
            .field("eof_written", &self.eof_written)
            .finish()
    }
}

/// The reading half of a [`ConnectionStream`] ([`ConnectionStream::split`]).
pub struct ConnectionReadHalf<'a> {
    conn: &'a Connection,
}

/// The writing half of a [`ConnectionStream`] ([`ConnectionStream::split`]).
pub struct ConnectionWriteHalf<'a> {
    conn: &'a Connection,
    eof_written: &'a mut bool,
}

impl fmt::Debug for ConnectionReadHalf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionReadHalf")
            .field("conn", self.conn)
            .field("buffered", &self.conn.buffered())
            .finish()
    }
}

impl fmt::Debug for ConnectionWriteHalf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionWriteHalf")
            .field("conn", self.conn)
            .field("eof_written", &*self.eof_written)
            .finish()
    }
}

impl ReadStream for ConnectionReadHalf<'_> {
    /// [`Connection::poll_read_some`] as the future itself: 24 bytes in the caller's state
    /// (a read is where a task waits, so its future sits in the task's state between
    /// receives, and every byte of that state is cache the next receive must bring back).
    fn read_some(&mut self, buf: &mut [u8]) -> impl Future<Output = Result<usize, Error>> {
        let conn = self.conn;
        poll_fn(move |cx| conn.poll_read_some(cx, buf).map_err(Error::from))
    }

    /// One copy across the buffers: waits for bytes into the first non-empty buffer, then
    /// fills the following ones from what is already received, each before the next.
    async fn read_some_vectored(&mut self, bufs: &mut [&mut [u8]]) -> Result<usize, Error> {
        let Some(first) = bufs.iter().position(|b| !b.is_empty()) else {
            return Ok(0);
        };
        let (head, rest) = bufs[first..].split_at_mut(1);
        let mut n = self.conn.read_some(head[0]).await?;
        if n < head[0].len() {
            return Ok(n);
        }
        for buf in rest.iter_mut() {
            let k = self.conn.read_buffered(buf);
            n += k;
            if k < buf.len() {
                break;
            }
        }
        Ok(n)
    }
}

impl ReadSource for ConnectionReadHalf<'_> {}

impl WriteStream for ConnectionWriteHalf<'_> {
    /// A poll function as the future, as for the read: small state in the caller's.
    fn write_some(&mut self, buf: &[u8]) -> impl Future<Output = Result<usize, Error>> {
        let (conn, eof_written) = (self.conn, *self.eof_written);
        let mut wait = None;
        poll_fn(move |cx| {
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            if eof_written {
                return Poll::Ready(Err(Error::Closed));
            }
            conn.poll_write_some(cx, buf, &mut wait)
                .map_err(Error::from)
        })
    }

    async fn flush(&mut self) -> Result<(), Error> {
        Ok(self.conn.flush().await?)
    }

    /// [`Connection::start_flush`]: the send is submitted in this turn; the reactor sends
    /// every staged byte without being asked again.
    fn start_flush(&mut self) -> Result<bool, Error> {
        self.conn.start_flush()?;
        Ok(true)
    }
}

impl WriteSink for ConnectionWriteHalf<'_> {
    async fn write_eof(&mut self) -> Result<(), Error> {
        if *self.eof_written {
            return Ok(());
        }
        self.conn.flush().await?;
        self.conn.shutdown_write()?;
        *self.eof_written = true;
        Ok(())
    }
}

impl ReadStream for ConnectionStream {
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        self.split().0.read_some(buf).await
    }

    async fn read_some_vectored(&mut self, bufs: &mut [&mut [u8]]) -> Result<usize, Error> {
        self.split().0.read_some_vectored(bufs).await
    }
}

impl ReadSource for ConnectionStream {}

impl WriteStream for ConnectionStream {
    async fn write_some(&mut self, buf: &[u8]) -> Result<usize, Error> {
        self.split().1.write_some(buf).await
    }

    async fn flush(&mut self) -> Result<(), Error> {
        self.split().1.flush().await
    }

    fn start_flush(&mut self) -> Result<bool, Error> {
        self.split().1.start_flush()
    }
}

impl WriteSink for ConnectionStream {
    async fn write_eof(&mut self) -> Result<(), Error> {
        self.split().1.write_eof().await
    }
}
