//! Memory streams: [`MemSource`] reads a byte slice, [`MemSink`] writes into a caller buffer.

use super::{Error, Partial, ReadSource, ReadStream, WriteSink, WriteStream};

/// A [`ReadSource`] over a byte slice: each read returns as much as fits, `min(buf.len(),
/// remaining)`, and once nothing remains the next read is [`Error::Eof`] (seed 001's memory
/// source: the last bytes and the end come on separate reads). It never fails otherwise and
/// never waits.
#[derive(Clone, Debug)]
pub struct MemSource<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> MemSource<'a> {
    /// A source that yields `data`, then ends.
    pub const fn new(data: &'a [u8]) -> MemSource<'a> {
        MemSource { data, pos: 0 }
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }

    /// The bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl ReadStream for MemSource<'_> {
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        let rest = self.remaining();
        if rest.is_empty() {
            return Err(Error::Eof);
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// [`read`](ReadSource::read) is one copy: what remains, up to `buf.len()`; fewer bytes than
/// `buf` holds is `Partial { error: Eof, count }`.
impl ReadSource for MemSource<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Partial> {
        if buf.is_empty() {
            return Ok(0);
        }
        let rest = self.remaining();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        if n < buf.len() {
            return Err(Partial::new(Error::Eof, n));
        }
        Ok(n)
    }
}

/// A [`WriteSink`] into a caller buffer: accepts as much as fits; a non-empty write to a full
/// sink fails with [`Error::Full`]. [`write_eof_with`](WriteSink::write_eof_with) is all or
/// nothing: the final bytes and the end together, or (when they do not fit) neither. After
/// the end, writes fail with [`Error::Closed`]. It never waits; flushing does nothing (every
/// accepted byte is already in the buffer).
#[derive(Debug)]
pub struct MemSink<'a> {
    buf: &'a mut [u8],
    len: usize,
    eof: bool,
}

impl<'a> MemSink<'a> {
    /// An empty sink over `buf`; it holds at most `buf.len()` bytes.
    pub fn new(buf: &'a mut [u8]) -> MemSink<'a> {
        MemSink {
            buf,
            len: 0,
            eof: false,
        }
    }

    /// The bytes written so far, in order.
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Room left, in bytes.
    pub fn free(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Whether the end of the stream has been written.
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Gives the buffer back with the length written.
    pub fn into_inner(self) -> (&'a mut [u8], usize) {
        (self.buf, self.len)
    }
}

impl WriteStream for MemSink<'_> {
    async fn write_some(&mut self, buf: &[u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.eof {
            return Err(Error::Closed);
        }
        let n = buf.len().min(self.free());
        if n == 0 {
            return Err(Error::Full);
        }
        self.buf[self.len..self.len + n].copy_from_slice(&buf[..n]);
        self.len += n;
        Ok(n)
    }

    /// Nothing is staged: every accepted byte is in the buffer already.
    fn start_flush(&mut self) -> Result<bool, Error> {
        Ok(true)
    }
}

impl WriteSink for MemSink<'_> {
    async fn write_eof_with(&mut self, buf: &[u8]) -> Result<usize, Partial> {
        if self.eof {
            return if buf.is_empty() {
                Ok(0)
            } else {
                Err(Partial::new(Error::Closed, 0))
            };
        }
        if buf.len() > self.free() {
            return Err(Partial::new(Error::Full, 0));
        }
        self.buf[self.len..self.len + buf.len()].copy_from_slice(buf);
        self.len += buf.len();
        self.eof = true;
        Ok(buf.len())
    }

    async fn write_eof_vectored(&mut self, bufs: &[&[u8]]) -> Result<usize, Partial> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if self.eof {
            return if total == 0 {
                Ok(0)
            } else {
                Err(Partial::new(Error::Closed, 0))
            };
        }
        if total > self.free() {
            return Err(Partial::new(Error::Full, 0));
        }
        for b in bufs {
            self.buf[self.len..self.len + b.len()].copy_from_slice(b);
            self.len += b.len();
        }
        self.eof = true;
        Ok(total)
    }

    /// Ends the stream; ending it again does nothing.
    async fn write_eof(&mut self) -> Result<(), Error> {
        self.eof = true;
        Ok(())
    }
}
