//! Request heads: httparse into an owned [`RequestHead`], with the size limits enforced here.
//!
//! Contract (httparse's `Partial`/`Complete(n)`): [`parse`] returns `Ok(None)` while the head is
//! incomplete and consumes nothing; once complete it returns the head and how many bytes it used,
//! so the caller can hand any bytes after it to the body reader or the WebSocket layer.

/// Largest request head (request line + headers + blank line) accepted; past it → 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields accepted in one request; past it → 431.
pub const MAX_HEADERS: usize = 64;
/// Longest request-target accepted; past it → 414 (RFC 9112 §3 recommends at least 8000 for
/// general servers; ours only serves short fixed paths plus Twilio's GET query strings).
pub const MAX_TARGET_BYTES: usize = 4 * 1024;

/// Request methods this server distinguishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`: answered like `GET` without a body.
    Head,
    /// `POST`
    Post,
    /// Any other syntactically valid method; routes answer 405.
    Other(String),
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The method as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Other(s) => s,
        }
    }
}

/// HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: connections close after each response unless the client asks for keep-alive.
    Http10,
    /// HTTP/1.1: persistent by default (RFC 9112 §9.3).
    Http11,
}

/// One header field; the name is lower-cased so lookups are case-insensitive (RFC 9110 §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Lower-cased field name.
    pub name: String,
    /// Raw field value bytes (httparse has already trimmed surrounding whitespace).
    pub value: Vec<u8>,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Request method.
    pub method: Method,
    /// The raw request-target exactly as sent (Twilio signs it byte for byte, docs/twilio.md §4.2).
    pub target: String,
    /// Protocol version.
    pub version: Version,
    /// Header fields in arrival order.
    pub headers: Vec<Header>,
}

impl RequestHead {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_slice())
    }

    /// Every value of header `name` (lower-case), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| h.value.as_slice())
    }

    /// Whether the comma-separated header `name` contains `token` (case-insensitive), e.g.
    /// `Connection: keep-alive, Upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers_named(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }

    /// The path part of the target (before `?`).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The raw query (after `?`), empty when absent.
    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }

    /// Whether the connection stays open after the response (RFC 9112 §9.3).
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.has_token("connection", "close"),
            Version::Http10 => self.has_token("connection", "keep-alive"),
        }
    }
}

/// Why a request head was refused. Every variant ends the connection after the error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The head exceeds [`MAX_HEAD_BYTES`] (431).
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header fields (431).
    TooManyHeaders,
    /// The request-target exceeds [`MAX_TARGET_BYTES`] (414).
    TargetTooLong,
    /// Bytes that are not an HTTP/1.x request head (400).
    Malformed,
}

impl HeadError {
    /// The status code this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => 431,
            HeadError::TargetTooLong => 414,
            HeadError::Malformed => 400,
        }
    }
}

error_text!(HeadError {
    HeadTooLarge => "request head too large",
    TooManyHeaders => "too many header fields",
    TargetTooLong => "request-target too long",
    Malformed => "malformed request head",
});

/// A request line longer than this is refused before its end arrives: the longest target plus
/// room for the method and the version.
const MAX_REQUEST_LINE_BYTES: usize = MAX_TARGET_BYTES + 32;

/// Whether the bytes appended at `buf[from..]` can change what [`parse`] answers: a line
/// ended, the request line grew past its limit, or the head reached its size limit. `parse`
/// starts over from the first byte, so calling it after every read made a head sent a byte at a
/// time quadratic (16 KiB: ~134 MB scanned); called only here, it runs once per line. A head
/// malformed before its first line ends is refused when that line ends (or at a limit).
pub fn worth_parsing(buf: &[u8], from: usize) -> bool {
    let new = buf.get(from..).unwrap_or_default();
    new.contains(&b'\n')
        || buf.len() >= MAX_HEAD_BYTES
        || (from <= MAX_REQUEST_LINE_BYTES && buf.len() > MAX_REQUEST_LINE_BYTES)
}

/// Empty lines (CR LF, or a bare LF) a client may send before a request line, in bytes.
/// RFC 9112 §2.2: a server SHOULD ignore at least one; more are refused (400), since each one
/// ends a "line" and makes [`parse`] start over: a client dripping line ends would make the
/// head's parsing quadratic again.
pub const MAX_EMPTY_LINE_BYTES: usize = 8;

/// How many bytes of empty lines open `buf`, `skipped` of them already dropped for this
/// request: the driver drops them before [`parse`]. `Err` past [`MAX_EMPTY_LINE_BYTES`].
pub fn empty_lines(buf: &[u8], skipped: usize) -> Result<usize, HeadError> {
    let n = buf
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    if skipped + n > MAX_EMPTY_LINE_BYTES {
        return Err(HeadError::Malformed);
    }
    Ok(n)
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)`: incomplete, read more. `Ok(Some((head, n)))`: the head used `buf[..n]`.
pub fn parse(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_HEAD_BYTES {
                return Err(oversized_partial(buf));
            }
            // Refuse a target that is already too long without waiting for the whole head.
            if request_line_prefix(buf).len() > MAX_REQUEST_LINE_BYTES {
                return Err(HeadError::TargetTooLong);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed),
    };
    if used > MAX_HEAD_BYTES {
        return Err(HeadError::HeadTooLarge);
    }
    // httparse only returns Complete with all three request-line parts present.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed);
    };
    if target.len() > MAX_TARGET_BYTES {
        return Err(HeadError::TargetTooLong);
    }
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let headers = req
        .headers
        .iter()
        .map(|h| Header {
            name: h.name.to_ascii_lowercase(),
            value: h.value.to_vec(),
        })
        .collect();
    Ok(Some((
        RequestHead {
            method: Method::from_token(method),
            target: target.to_owned(),
            version,
            headers,
        },
        used,
    )))
}

/// The bytes of the request line seen so far (up to the first LF).
fn request_line_prefix(buf: &[u8]) -> &[u8] {
    // Skip the empty lines RFC 9112 §2.2 lets a client send before the request line.
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) => &rest[..i],
        None => rest,
    }
}

/// An incomplete head that filled the buffer: blame the target if the request line alone is
/// too long, otherwise the header section.
fn oversized_partial(buf: &[u8]) -> HeadError {
    if request_line_prefix(buf).len() > MAX_TARGET_BYTES {
        HeadError::TargetTooLong
    } else {
        HeadError::HeadTooLarge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_complete_head_and_reports_length() {
        let raw = b"POST /api/twilio/voice?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        let (head, n) = parse(raw).unwrap().unwrap();
        assert_eq!(n, raw.len() - 3);
        assert_eq!(head.method, Method::Post);
        assert_eq!(head.path(), "/api/twilio/voice");
        assert_eq!(head.query(), "x=1");
        assert_eq!(head.header("content-length"), Some(&b"3"[..]));
        assert!(head.keep_alive());
    }

    /// Feeds `raw` a byte at a time the way the driver does: parse once at the start, then
    /// only when [`worth_parsing`] says so. Returns the first answer that is not "read more"
    /// and how many parses it took.
    fn byte_at_a_time(raw: &[u8]) -> (Result<Option<usize>, HeadError>, usize) {
        let mut buf = Vec::new();
        let (mut parses, mut skipped) = (0, 0);
        for (i, b) in raw.iter().enumerate() {
            let from = buf.len();
            buf.push(*b);
            if i == 0 || worth_parsing(&buf, from) {
                match empty_lines(&buf, skipped) {
                    Ok(n) => {
                        buf.drain(..n);
                        skipped += n;
                    }
                    Err(e) => return (Err(e), parses),
                }
                parses += 1;
                match parse(&buf) {
                    Ok(None) => {}
                    r => return (r.map(|o| o.map(|(_, n)| n + skipped)), parses),
                }
            }
        }
        (Ok(None), parses)
    }

    #[test]
    fn a_few_empty_lines_before_a_request_are_ignored_many_refused() {
        let (r, _) = byte_at_a_time(b"\r\n\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(r, Ok(Some(21)));
        // A client dripping line ends gets its 400 after the limit, not after 16 KiB of
        // parses from the first byte each.
        let mut raw = b"\n".repeat(16_000);
        raw.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let (r, parses) = byte_at_a_time(&raw);
        assert_eq!(r, Err(HeadError::Malformed));
        assert!(parses <= MAX_EMPTY_LINE_BYTES + 1, "{parses} parses");
    }

    #[test]
    fn a_head_sent_a_byte_at_a_time_is_parsed_once_per_line() {
        let mut raw = b"GET /staff HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..40 {
            raw.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(300)).as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let (r, parses) = byte_at_a_time(&raw);
        assert_eq!(r, Ok(Some(raw.len())));
        // The first byte, one per line (43) and one as the head passes the request line's
        // limit: 45, not one per byte (~12 600).
        assert_eq!(parses, 45);
        // The limits still answer, each with one parse more.
        let long_target = format!(
            "GET /{} HTTP/1.1\r\n\r\n",
            "a".repeat(MAX_TARGET_BYTES + 100)
        );
        assert_eq!(
            byte_at_a_time(long_target.as_bytes()),
            (Err(HeadError::TargetTooLong), 2)
        );
        let mut huge = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        huge.resize(MAX_HEAD_BYTES + 10, b'v');
        assert_eq!(byte_at_a_time(&huge), (Err(HeadError::HeadTooLarge), 4));
        // Garbage is refused when its first line ends (or at once, if its first byte is).
        assert_eq!(
            byte_at_a_time(b"GE\x01T / HTTP/1.1\r\n"),
            (Err(HeadError::Malformed), 2)
        );
        assert_eq!(byte_at_a_time(b"\x00"), (Err(HeadError::Malformed), 1));
    }

    #[test]
    fn partial_is_not_an_error() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost:"), Ok(None));
        assert_eq!(parse(b""), Ok(None));
    }

    #[test]
    fn limits_map_to_statuses() {
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many), Err(HeadError::TooManyHeaders));

        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET_BYTES));
        assert_eq!(parse(long_target.as_bytes()), Err(HeadError::TargetTooLong));

        let partial_long = format!("GET /{}", "a".repeat(MAX_TARGET_BYTES + 100));
        assert_eq!(
            parse(partial_long.as_bytes()),
            Err(HeadError::TargetTooLong)
        );

        let big = format!(
            "GET / HTTP/1.1\r\nX-Pad: {}\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(parse(big.as_bytes()), Err(HeadError::HeadTooLarge));
        // Complete but over the limit by a few bytes is refused too.
        let just_over = format!(
            "GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES - 20)
        );
        assert_eq!(parse(just_over.as_bytes()), Err(HeadError::HeadTooLarge));
        assert_eq!(HeadError::HeadTooLarge.status(), 431);
    }

    #[test]
    fn garbage_is_malformed() {
        assert_eq!(
            parse(b"\x16\x03\x01\x00\xa5\x01\x00"),
            Err(HeadError::Malformed)
        );
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n"), Err(HeadError::Malformed));
    }

    #[test]
    fn http10_closes_unless_asked() {
        let (h, _) = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive());
        let (h, _) = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive());
        let (h, _) = parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive());
    }
}
