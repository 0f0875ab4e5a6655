//! The line codec: [`LineDecoder`] finds CRLF- or LF-terminated lines in segmented input;
//! [`encode_line`] writes one.

use core::fmt;

use super::encode::check_room;
use super::{EncodeError, FrameSink};
use crate::pipe::ReadBuf;

/// What ends a line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LineEnding {
    /// `\r\n`. A lone `\r` or `\n` is part of the line.
    #[default]
    CrLf,
    /// `\n`. A `\r` before it is part of the line.
    Lf,
}

impl LineEnding {
    /// The delimiter's bytes.
    pub const fn delimiter(self) -> &'static [u8] {
        match self {
            LineEnding::CrLf => b"\r\n",
            LineEnding::Lf => b"\n",
        }
    }
}

/// Settings of the line codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LineConfig {
    /// What ends a line.
    pub ending: LineEnding,
    /// The longest line, in bytes, without its line ending.
    pub max_line: usize,
}

impl Default for LineConfig {
    /// CRLF, lines up to 4096 bytes.
    fn default() -> Self {
        LineConfig {
            ending: LineEnding::CrLf,
            max_line: 4096,
        }
    }
}

/// A protocol error of the line decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LineError {
    /// No line ending within `max` bytes: the line is longer than the limit.
    TooLong {
        /// [`LineConfig::max_line`].
        max: usize,
    },
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LineError::TooLong { max } => write!(
                f,
                "line longer than the limit of {max} bytes (LineConfig::max_line)"
            ),
        }
    }
}

impl core::error::Error for LineError {}

/// A line found by [`LineDecoder::decode`].
#[derive(Clone, Copy, Debug)]
#[must_use = "advance the input by `consumed` once the line is handled"]
pub struct Line<'b> {
    /// The line's bytes without its ending: a view of the input (no copy).
    pub line: ReadBuf<'b>,
    /// The line's length with its ending: advance the input by this much.
    pub consumed: usize,
}

/// The line decoder of one connection: finds the next line in a view of the unread bytes,
/// without copying (the line is a sub-view of the input).
///
/// Feed it as a [`FrameDecoder`](super::FrameDecoder): [`LineDecoder::decode`] with every
/// unread byte; on a line, handle it and advance the input by [`Line::consumed`]; on `None`,
/// wait for more bytes (examine everything). It remembers how far it searched the pending
/// line, so bytes trickling in are scanned once, not again at every call (the next call must
/// start at the same place, or [`LineDecoder::reset`] first).
///
/// A line is held whole in the input until it ends, so its length is bounded:
/// [`LineError::TooLong`] as soon as `max_line + ending` bytes hold no line ending. An
/// unterminated last line before the end of input is not a line (the caller sees what is left
/// unread).
#[derive(Clone, Debug)]
pub struct LineDecoder {
    config: LineConfig,
    /// Bytes of the pending line already searched.
    scanned: usize,
    failed: Option<LineError>,
}

impl LineDecoder {
    /// A decoder for `config`.
    pub const fn new(config: LineConfig) -> LineDecoder {
        LineDecoder {
            config,
            scanned: 0,
            failed: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LineConfig {
        &self.config
    }

    /// The next line at the start of `input`, or `None` when it has not ended yet.
    ///
    /// # Errors
    ///
    /// [`LineError::TooLong`] when the line cannot end within the limit. The decoder then
    /// stays failed (the same error again) until [`LineDecoder::reset`].
    pub fn decode<'b>(&mut self, input: ReadBuf<'b>) -> Result<Option<Line<'b>>, LineError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let delim = self.config.ending.delimiter();
        // A line ending must start within `max_line` bytes, so it ends within `window`.
        let window = self.config.max_line.saturating_add(delim.len());
        let end = input.len().min(window);
        // Resume where the last search stopped, minus a delimiter's head that may straddle.
        let from = self.scanned.saturating_sub(delim.len() - 1).min(end);
        let found = input
            .slice(from..end)
            .and_then(|hay| hay.find(delim))
            .map(|i| from + i);
        match found {
            Some(n) => {
                self.scanned = 0;
                Ok(input.slice(..n).map(|line| Line {
                    line,
                    consumed: n + delim.len(),
                }))
            }
            None if input.len() >= window => {
                let e = LineError::TooLong {
                    max: self.config.max_line,
                };
                self.failed = Some(e);
                Err(e)
            }
            None => {
                self.scanned = end;
                Ok(None)
            }
        }
    }

    /// The error the decoder failed with, if it did.
    pub fn error(&self) -> Option<LineError> {
        self.failed
    }

    /// As new: no partial search, no error.
    pub fn reset(&mut self) {
        self.scanned = 0;
        self.failed = None;
    }
}

/// Writes `line` and its ending into `sink`, all or nothing; returns the bytes written.
///
/// # Errors
///
/// Nothing is written on error: [`EncodeError::MessageTooLarge`] for a line longer than
/// [`LineConfig::max_line`], [`EncodeError::ContainsDelimiter`] for a line holding its own
/// ending (it would arrive as two lines), [`EncodeError::TooLarge`] /
/// [`EncodeError::WouldBlock`] when it does not fit the sink.
pub fn encode_line(
    config: &LineConfig,
    line: &[u8],
    sink: &mut impl FrameSink,
) -> Result<usize, EncodeError> {
    if line.len() > config.max_line {
        return Err(EncodeError::MessageTooLarge {
            len: line.len(),
            max: config.max_line,
        });
    }
    let delim = config.ending.delimiter();
    if let Some(at) = line.windows(delim.len()).position(|w| w == delim) {
        return Err(EncodeError::ContainsDelimiter { at });
    }
    let need = line.len() + delim.len();
    check_room(sink, need)?;
    sink.put(line);
    sink.put(delim);
    Ok(need)
}
