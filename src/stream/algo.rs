//! Composed algorithms, written once over the traits.

use super::{Error, Partial, ReadStream, WriteStream};

/// Reads until `buf` is full (seed 001's composed `read`): loops
/// [`read_some`](ReadStream::read_some) and returns `buf.len()`. An empty `buf` is `Ok(0)`
/// without reading.
///
/// # Errors
///
/// A [`Partial`] with the first error (`Eof` if the stream ended early) and the number of bytes
/// read into the front of `buf` before it. Nothing is read after that error.
pub async fn read<S: ReadStream + ?Sized>(
    stream: &mut S,
    buf: &mut [u8],
) -> Result<usize, Partial> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read_some(&mut buf[filled..]).await {
            // A stream that breaks the contract with Ok(0) for a non-empty buffer would spin
            // here forever; treat it as the end of the stream instead.
            Ok(0) => return Err(Partial::new(Error::Eof, filled)),
            Ok(n) => filled += n.min(buf.len() - filled),
            Err(e) => return Err(Partial::new(e, filled)),
        }
    }
    Ok(filled)
}

/// [`read`] over a buffer sequence: fills each buffer completely, in order, and returns the
/// total length.
///
/// # Errors
///
/// A [`Partial`] with the first error and the bytes read across the sequence before it (the
/// buffers before the one that was being filled are full).
pub async fn read_vectored<S: ReadStream + ?Sized>(
    stream: &mut S,
    bufs: &mut [&mut [u8]],
) -> Result<usize, Partial> {
    let mut total = 0;
    for buf in bufs.iter_mut() {
        match read(stream, buf).await {
            Ok(n) => total += n,
            Err(p) => return Err(Partial::new(p.error, total + p.count)),
        }
    }
    Ok(total)
}

/// Writes all of `buf` (the write side's composed operation): loops
/// [`write_some`](WriteStream::write_some) and returns `buf.len()`. An empty `buf` is `Ok(0)`
/// without writing. Does not flush.
///
/// # Errors
///
/// A [`Partial`] with the first error and the number of bytes accepted before it. A writer
/// that breaks the contract with `Ok(0)` for a non-empty buffer fails with [`Error::Full`].
pub async fn write<S: WriteStream + ?Sized>(stream: &mut S, buf: &[u8]) -> Result<usize, Partial> {
    let mut done = 0;
    while done < buf.len() {
        match stream.write_some(&buf[done..]).await {
            Ok(0) => return Err(Partial::new(Error::Full, done)),
            Ok(n) => done += n.min(buf.len() - done),
            Err(e) => return Err(Partial::new(e, done)),
        }
    }
    Ok(done)
}

/// [`write()`] over a buffer sequence: writes each buffer completely, in order, and returns the
/// total length.
///
/// # Errors
///
/// A [`Partial`] with the first error and the bytes accepted across the sequence before it.
pub async fn write_vectored<S: WriteStream + ?Sized>(
    stream: &mut S,
    bufs: &[&[u8]],
) -> Result<usize, Partial> {
    let mut total = 0;
    for buf in bufs {
        match write(stream, buf).await {
            Ok(n) => total += n,
            Err(p) => return Err(Partial::new(p.error, total + p.count)),
        }
    }
    Ok(total)
}

/// A bounded buffer for delimited reads: bytes read from a stream and not yet consumed, in
/// caller memory that never grows.
///
/// [`read_until`] appends to it and leaves the bytes it read past the delimiter in it, for the
/// next call; the caller takes a record with [`data`](BoundedBuf::data) and drops it with
/// [`consume`](BoundedBuf::consume). The unconsumed bytes are moved to the front of the memory
/// when more room is needed at the back (one `copy_within`).
pub struct BoundedBuf<'a> {
    mem: &'a mut [u8],
    start: usize,
    end: usize,
}

impl<'a> BoundedBuf<'a> {
    /// An empty buffer over `mem`; it holds at most `mem.len()` bytes.
    pub fn new(mem: &'a mut [u8]) -> BoundedBuf<'a> {
        BoundedBuf {
            mem,
            start: 0,
            end: 0,
        }
    }

    /// The bytes held (read and not consumed), oldest first.
    pub fn data(&self) -> &[u8] {
        &self.mem[self.start..self.end]
    }

    /// The number of bytes held.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether no byte is held.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The most bytes it can hold.
    pub fn capacity(&self) -> usize {
        self.mem.len()
    }

    /// Whether it holds [`capacity`](BoundedBuf::capacity) bytes: nothing more can be read
    /// into it before some are consumed.
    pub fn is_full(&self) -> bool {
        self.len() == self.mem.len()
    }

    /// Drops the first `n` bytes held (all of them if `n` is larger).
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops every byte held.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// One [`read_some`](ReadStream::read_some) into the free room at the back; returns the
    /// bytes added (at least one).
    ///
    /// # Errors
    ///
    /// [`Error::Full`] without reading when the buffer is full; otherwise the stream's error
    /// (nothing added).
    pub async fn fill_from<S: ReadStream + ?Sized>(
        &mut self,
        stream: &mut S,
    ) -> Result<usize, Error> {
        if self.is_full() {
            return Err(Error::Full);
        }
        if self.end == self.mem.len() {
            self.mem.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let room = &mut self.mem[self.end..];
        match stream.read_some(room).await {
            // Ok(0) for a non-empty buffer breaks the contract; the end of the stream is the
            // only safe reading of it (it must not be retried forever).
            Ok(0) => Err(Error::Eof),
            Ok(n) => {
                let n = n.min(room.len());
                self.end += n;
                Ok(n)
            }
            Err(e) => Err(e),
        }
    }
}

impl core::fmt::Debug for BoundedBuf<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BoundedBuf")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// The offset of the first occurrence of `needle` in `hay` (`needle` non-empty).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() == 1 {
        return hay.iter().position(|&b| b == needle[0]);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads into `buf` until it holds `delim` (seed 001's delimited read), and returns the length
/// of the record: the first `n` bytes of [`buf.data()`](BoundedBuf::data) end with the first
/// occurrence of `delim`.
///
/// - The record is not consumed: take it from `buf.data()[..n]`, then
///   [`buf.consume(n)`](BoundedBuf::consume). A record already in `buf` is returned without
///   reading (so a caller that does not consume gets the same record again).
/// - **Bytes read past the delimiter stay in `buf`**, after the record, for the next call (or
///   for the caller to read as they are): a `read_some` cannot be told to stop at a delimiter,
///   and reading byte by byte would cost a read per byte. Nothing read is dropped.
/// - An empty `delim` matches at once: `Ok(0)`.
/// - Cancel-safe: progress is kept in `buf`, so dropping the future loses nothing (given a
///   cancel-safe `read_some`).
///
/// # Errors
///
/// A [`Partial`] whose count is [`buf.len()`](BoundedBuf::len), the bytes held, none of which
/// complete a record:
/// - [`Error::Full`] when `buf` is full and holds no delimiter (the record does not fit; it is
///   never truncated), including a delimiter longer than the buffer;
/// - [`Error::Eof`] when the stream ended first (also in the middle of a delimiter);
/// - the stream's error otherwise. Nothing is read after an error.
pub async fn read_until<S: ReadStream + ?Sized>(
    stream: &mut S,
    buf: &mut BoundedBuf<'_>,
    delim: &[u8],
) -> Result<usize, Partial> {
    if delim.is_empty() {
        return Ok(0);
    }
    // Bytes of `buf.data()` already searched: no occurrence starts before `searched`.
    let mut searched = 0;
    loop {
        if let Some(at) = find(&buf.data()[searched..], delim) {
            return Ok(searched + at + delim.len());
        }
        // An occurrence may start in the last `delim.len() - 1` bytes and end in new ones.
        searched = buf.len().saturating_sub(delim.len() - 1);
        if let Err(e) = buf.fill_from(stream).await {
            return Err(Partial::new(e, buf.len()));
        }
    }
}

/// Reads until the end of the stream into `buf`, which never grows; returns the bytes read.
/// The end of the stream is success here (seed 001's read-to-EOF), not an error.
///
/// To tell a stream that fits `buf` exactly from a longer one, a full `buf` is probed with a
/// one-byte read: `Eof` means it fitted. (An empty `buf` is therefore probed at once.)
///
/// # Errors
///
/// A [`Partial`] whose count is the bytes read into the front of `buf`:
/// - [`Error::Full`] when the stream holds more than `buf`: `buf` is full, and the one byte of
///   the probe that found more has been read from the stream and dropped (the stream is longer
///   than the caller allows; read it with `read_some` to keep every byte);
/// - the stream's error otherwise. Nothing is read after an error.
pub async fn read_to_end<S: ReadStream + ?Sized>(
    stream: &mut S,
    buf: &mut [u8],
) -> Result<usize, Partial> {
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            let mut probe = [0u8; 1];
            return match stream.read_some(&mut probe).await {
                Ok(0) | Err(Error::Eof) => Ok(filled),
                Ok(_) => Err(Partial::new(Error::Full, filled)),
                Err(e) => Err(Partial::new(e, filled)),
            };
        }
        match stream.read_some(&mut buf[filled..]).await {
            Ok(0) | Err(Error::Eof) => return Ok(filled),
            Ok(n) => filled += n.min(buf.len() - filled),
            Err(e) => return Err(Partial::new(e, filled)),
        }
    }
}

/// How [`relay`] failed: which side, the error, and the bytes relayed before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RelayError {
    /// Reading from the source failed (not at its end: that is success).
    Read {
        /// The source's error.
        error: Error,
        /// Bytes the destination had accepted before.
        relayed: u64,
    },
    /// Writing or flushing the destination failed.
    Write {
        /// The destination's error.
        error: Error,
        /// Bytes the destination had accepted before.
        relayed: u64,
    },
}

impl RelayError {
    /// The error, whichever side it came from.
    pub const fn error(self) -> Error {
        match self {
            RelayError::Read { error, .. } | RelayError::Write { error, .. } => error,
        }
    }

    /// The bytes the destination accepted before the error.
    pub const fn relayed(self) -> u64 {
        match self {
            RelayError::Read { relayed, .. } | RelayError::Write { relayed, .. } => relayed,
        }
    }
}

impl From<RelayError> for Error {
    fn from(e: RelayError) -> Error {
        e.error()
    }
}

impl core::fmt::Display for RelayError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RelayError::Read { error, relayed } => {
                write!(f, "relay: read failed after {relayed} bytes: {error}")
            }
            RelayError::Write { error, relayed } => {
                write!(f, "relay: write failed after {relayed} bytes: {error}")
            }
        }
    }
}

impl core::error::Error for RelayError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            RelayError::Read { error, .. } | RelayError::Write { error, .. } => Some(error),
        }
    }
}

/// Copies `src` to `dst` until `src` ends, through `buf`, and returns the bytes relayed.
///
/// Each round reads once into `buf` ([`read_some`](ReadStream::read_some): whatever is there,
/// up to `buf.len()`), drains all of it into `dst` ([`write_some`](WriteStream::write_some)
/// until every byte is accepted), then flushes `dst`, and only then reads again (seed 001's
/// relay: drain fully before reading again). So at most `buf.len()` bytes wait in `buf`, and
/// nothing read waits unsent while the relay waits for input.
///
/// **Flushing.** After each chunk the relay *starts* the flush
/// ([`start_flush`](WriteStream::start_flush)) and reads on without waiting for the bytes to
/// leave; a writer that cannot start a flush without being awaited gets
/// [`flush`](WriteStream::flush)`().await` instead, as before every read. Either way every
/// chunk is handed on before the next read, which is what the relay owes its reader (seed
/// 001's `write_some` hands bytes to the system and returns; it does not wait for the peer
/// either). Waiting for each flush would only add a wait per chunk: for a
/// [`ConnectionStream`](super::ConnectionStream) a wake and a poll of the task when the send
/// completes. What bounds the bytes `dst` holds unsent is `dst`'s own buffer: a connection's
/// `write_some` waits for room when its write slab is full, so a slow peer slows the relay
/// down. When `src` ends, the relay waits for the last flush (`flush().await`): when it
/// returns `Ok`, every byte it relayed has been flushed.
///
/// Seed 001 relays through a circular buffer. Because the buffer is drained completely before
/// every read, such a buffer is empty whenever it is read into, and its free space is then the
/// whole buffer in one piece: so `buf` is used as a plain slice. ([`crate::pool::ByteRing`]
/// does not fit: its fill closure is synchronous, and a read must be awaited.)
///
/// The end of `src` is success; `dst` is not ended (for a [`WriteSink`](super::WriteSink),
/// call [`write_eof`](super::WriteSink::write_eof) after).
///
/// # Errors
///
/// [`RelayError::Read`] or [`RelayError::Write`] with the error and the bytes `dst` had
/// accepted. An empty `buf` can relay nothing: `Read { error: Error::Full, relayed: 0 }` at
/// once. A writer that accepts nothing (`Ok(0)`, which breaks the contract) is a
/// `Write { error: Error::Full, .. }`.
///
/// A started flush that fails later is reported by whichever side notices it first: by
/// `dst`'s next operation as a `Write` error, or, when the writer and the reader are one
/// connection that the failed send closes, by the pending read as a `Read` error. After a
/// `Read` error the relay returns at once: the bytes it relayed have been handed on (the
/// flush was started) but not waited for; `dst.flush().await` waits for them.
pub async fn relay<R, W>(src: &mut R, dst: &mut W, buf: &mut [u8]) -> Result<u64, RelayError>
where
    R: ReadStream + ?Sized,
    W: WriteStream + ?Sized,
{
    let mut relayed: u64 = 0;
    if buf.is_empty() {
        return Err(RelayError::Read {
            error: Error::Full,
            relayed,
        });
    }
    // A flush was started and not waited for.
    let mut started = false;
    loop {
        let n = match src.read_some(buf).await {
            Ok(0) | Err(Error::Eof) => {
                if started && let Err(error) = dst.flush().await {
                    return Err(RelayError::Write { error, relayed });
                }
                return Ok(relayed);
            }
            Ok(n) => n.min(buf.len()),
            Err(error) => return Err(RelayError::Read { error, relayed }),
        };
        let mut sent = 0;
        while sent < n {
            match dst.write_some(&buf[sent..n]).await {
                Ok(0) => {
                    return Err(RelayError::Write {
                        error: Error::Full,
                        relayed,
                    });
                }
                Ok(k) => {
                    let k = k.min(n - sent);
                    sent += k;
                    relayed += k as u64;
                }
                Err(error) => return Err(RelayError::Write { error, relayed }),
            }
        }
        started = match dst.start_flush() {
            Ok(true) => true,
            Ok(false) => match dst.flush().await {
                Ok(()) => false,
                Err(error) => return Err(RelayError::Write { error, relayed }),
            },
            Err(error) => return Err(RelayError::Write { error, relayed }),
        };
    }
}
