//! Request body framing (RFC 9112 §6) and an incremental chunked decoder.
//!
//! Framing is decided from the head alone, before any body byte is read, and every ambiguity
//! that could let a proxy and this server disagree about where a request ends is refused with
//! 400 and a closed connection (request smuggling, RFC 9112 §6.3 and §11.2).

use super::request_head::{RequestHead, Version};

/// Largest request body accepted, framed either way; past it → 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest chunk-size line (size, extensions and CRLF) accepted in a chunked body.
pub const MAX_CHUNK_LINE_BYTES: usize = 1024;
/// Most bytes of trailer section accepted after the last chunk (trailers are ignored).
pub const MAX_TRAILER_BYTES: usize = 4 * 1024;

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no Content-Length and no Transfer-Encoding: length zero, RFC 9112 §6.3 rule 6).
    Empty,
    /// Exactly this many bytes follow the head.
    Length(usize),
    /// `Transfer-Encoding: chunked`; decode with [`ChunkedDecoder`].
    Chunked,
}

/// Why a request's framing was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// Both Content-Length and Transfer-Encoding (400).
    LengthAndTransferEncoding,
    /// Content-Length values that are not digits or disagree with each other (400).
    InvalidContentLength,
    /// Transfer-Encoding on an HTTP/1.0 request (400, RFC 9112 §6.1).
    TransferEncodingInHttp10,
    /// A transfer coding other than a single final `chunked` (501, RFC 9112 §6.1).
    UnsupportedTransferCoding,
    /// The declared body exceeds [`MAX_BODY_BYTES`] (413).
    BodyTooLarge,
}

impl FramingError {
    /// The status code this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            FramingError::BodyTooLarge => 413,
            FramingError::UnsupportedTransferCoding => 501,
            _ => 400,
        }
    }
}

error_text!(FramingError {
    LengthAndTransferEncoding => "both Content-Length and Transfer-Encoding present",
    InvalidContentLength => "invalid Content-Length",
    TransferEncodingInHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
    UnsupportedTransferCoding => "unsupported transfer coding",
    BodyTooLarge => "request body too large",
});

/// Decides how the request body is framed.
pub fn framing(head: &RequestHead) -> Result<Framing, FramingError> {
    let has_te = head.header("transfer-encoding").is_some();
    let has_cl = head.header("content-length").is_some();
    if has_te && has_cl {
        return Err(FramingError::LengthAndTransferEncoding);
    }
    if has_te {
        if head.version == Version::Http10 {
            return Err(FramingError::TransferEncodingInHttp10);
        }
        // Only a lone `chunked` is supported: any other coding (gzip, …) would need decoding we do
        // not offer, and `chunked` applied twice is invalid (RFC 9112 §6.1).
        let mut codings = head
            .headers_named("transfer-encoding")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty());
        return match (codings.next(), codings.next()) {
            (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            _ => Err(FramingError::UnsupportedTransferCoding),
        };
    }
    if !has_cl {
        return Ok(Framing::Empty);
    }
    // Repeated or list-valued Content-Length is accepted only when every value is the same
    // (RFC 9110 §8.6); anything else is a smuggling vector.
    let mut length: Option<usize> = None;
    for value in head
        .headers_named("content-length")
        .flat_map(|v| v.split(|&b| b == b','))
    {
        let this = parse_length(value.trim_ascii())?;
        match length {
            Some(prev) if prev != this => return Err(FramingError::InvalidContentLength),
            _ => length = Some(this),
        }
    }
    match length {
        Some(0) | None => Ok(Framing::Empty),
        Some(n) if n > MAX_BODY_BYTES => Err(FramingError::BodyTooLarge),
        Some(n) => Ok(Framing::Length(n)),
    }
}

/// Parses `1*DIGIT`; values too large to represent are reported as too large, not invalid.
fn parse_length(digits: &[u8]) -> Result<usize, FramingError> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(FramingError::InvalidContentLength);
    }
    digits.iter().try_fold(0usize, |acc, &d| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(usize::from(d - b'0')))
            .ok_or(FramingError::BodyTooLarge)
    })
}

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    /// Bytes that break the chunked grammar (400).
    Malformed,
    /// A chunk-size line or trailer section over its limit (400).
    LineTooLong,
    /// The decoded body would exceed [`MAX_BODY_BYTES`] (413).
    BodyTooLarge,
}

impl ChunkedError {
    /// The status code this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            ChunkedError::BodyTooLarge => 413,
            _ => 400,
        }
    }
}

error_text!(ChunkedError {
    Malformed => "malformed chunked body",
    LineTooLong => "chunk line or trailer too long",
    BodyTooLarge => "request body too large",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading hex digits of a chunk size.
    Size,
    /// Whitespace after the size, before `;` or CR.
    SizeSpace,
    /// Inside chunk extensions (ignored) until CR.
    Extension,
    /// Expecting LF after the size line's CR.
    SizeLf,
    /// Copying chunk data.
    Data,
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Expecting LF that ends a trailer line.
    TrailerLf,
    /// Expecting the LF of the final CRLF.
    EndLf,
    /// The whole body has been read.
    Done,
}

/// Incremental decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1).
///
/// Feed it the bytes after the head as they arrive; it appends decoded data to `out`, reports how
/// many input bytes it used, and never looks at a byte twice (a client dripping one byte at a time
/// costs linear work).
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Size of the chunk being read, or bytes of it still to copy in `Data`.
    remaining: usize,
    digits: usize,
    line_bytes: usize,
    trailer_bytes: usize,
    total: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            remaining: 0,
            digits: 0,
            line_bytes: 0,
            trailer_bytes: 0,
            total: 0,
        }
    }

    /// Whether the terminating chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from `input`, appending body data to `out`. Returns the bytes of `input` used;
    /// when [`is_done`](Self::is_done) turns true, the rest of `input` belongs to the next request.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkedError> {
        let mut i = 0;
        while i < input.len() && self.state != ChunkState::Done {
            if self.state == ChunkState::Data {
                let take = self.remaining.min(input.len() - i);
                out.extend_from_slice(&input[i..i + take]);
                i += take;
                self.remaining -= take;
                if self.remaining == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            let b = input[i];
            i += 1;
            self.step(b)?;
        }
        Ok(i)
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkedError> {
        use ChunkState::*;
        match self.state {
            Size | SizeSpace | Extension => {
                self.line_bytes += 1;
                if self.line_bytes > MAX_CHUNK_LINE_BYTES {
                    return Err(ChunkedError::LineTooLong);
                }
            }
            TrailerStart | TrailerLine | TrailerLf | EndLf => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err(ChunkedError::LineTooLong);
                }
            }
            _ => {}
        }
        self.state = match (self.state, b) {
            (Size, _) if b.is_ascii_hexdigit() => {
                let digit = (b as char).to_digit(16).unwrap_or(0) as usize;
                self.remaining = self
                    .remaining
                    .checked_mul(16)
                    .and_then(|v| v.checked_add(digit))
                    .filter(|&v| v <= MAX_BODY_BYTES)
                    .ok_or(ChunkedError::BodyTooLarge)?;
                self.digits += 1;
                Size
            }
            (Size, b' ' | b'\t') if self.digits > 0 => SizeSpace,
            (Size | SizeSpace, b';') if self.digits > 0 => Extension,
            (Size | SizeSpace | Extension, b'\r') if self.digits > 0 => SizeLf,
            (SizeSpace, b' ' | b'\t') => SizeSpace,
            (Extension, b'\n') => return Err(ChunkedError::Malformed),
            (Extension, _) => Extension,
            (SizeLf, b'\n') => {
                self.total += self.remaining;
                if self.total > MAX_BODY_BYTES {
                    return Err(ChunkedError::BodyTooLarge);
                }
                self.line_bytes = 0;
                self.digits = 0;
                if self.remaining == 0 {
                    TrailerStart
                } else {
                    Data
                }
            }
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size,
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | TrailerLine, b'\n') => return Err(ChunkedError::Malformed),
            (TrailerLine, b'\r') => TrailerLf,
            (TrailerStart | TrailerLine, _) => TrailerLine,
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            _ => return Err(ChunkedError::Malformed),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request_head::parse;

    fn head(raw: &str) -> RequestHead {
        parse(raw.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn framing_rules() {
        let f = |raw: &str| framing(&head(raw));
        assert_eq!(f("POST / HTTP/1.1\r\n\r\n"), Ok(Framing::Empty));
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n"),
            Ok(Framing::Length(10))
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 10\r\nContent-Length: 10\r\n\r\n"),
            Ok(Framing::Length(10))
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 10, 11\r\n\r\n"),
            Err(FramingError::InvalidContentLength)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: +10\r\n\r\n"),
            Err(FramingError::InvalidContentLength)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            Err(FramingError::BodyTooLarge)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n"),
            Err(FramingError::BodyTooLarge)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(FramingError::LengthAndTransferEncoding)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(FramingError::UnsupportedTransferCoding)
        );
        assert_eq!(
            f(
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            Err(FramingError::UnsupportedTransferCoding)
        );
        assert_eq!(
            f("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(FramingError::TransferEncodingInHttp10)
        );
    }

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkedError> {
        let mut dec = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() && !dec.is_done() {
            let end = (pos + step).min(input.len());
            pos += dec.decode(&input[pos..end], &mut out)?;
        }
        assert!(dec.is_done(), "incomplete");
        Ok((out, pos))
    }

    #[test]
    fn decodes_chunked_in_any_split() {
        let body =
            b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE \r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 1000] {
            let (out, used) = decode_all(body, step).unwrap();
            assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");
            assert_eq!(&body[used..], b"NEXT");
        }
    }

    #[test]
    fn rejects_bad_chunked() {
        let long_ext = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE_BYTES));
        let cases: [(&[u8], usize, ChunkedError); 5] = [
            (b"x\r\n", 10, ChunkedError::Malformed),
            (b"3\r\nabcX\r\n0\r\n\r\n", 10, ChunkedError::Malformed),
            (b"\r\n", 10, ChunkedError::Malformed),
            (b"10001\r\n", 10, ChunkedError::BodyTooLarge),
            (long_ext.as_bytes(), 4096, ChunkedError::LineTooLong),
        ];
        for (input, limit, expected) in cases {
            assert_eq!(decode_all(input, limit).unwrap_err(), expected, "{input:?}");
        }
    }

    #[test]
    fn total_over_limit_is_too_large() {
        let mut body = Vec::new();
        for _ in 0..3 {
            body.extend_from_slice(format!("{:x}\r\n", 30_000).as_bytes());
            body.extend(std::iter::repeat_n(b'a', 30_000));
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(
            decode_all(&body, 4096).unwrap_err(),
            ChunkedError::BodyTooLarge
        );
    }
}
