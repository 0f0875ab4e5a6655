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
