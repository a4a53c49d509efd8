//! The HTTP/1.1 client side of the requests ignis makes (the ElevenLabs signed URL and API,
//! Twilio's REST and Monitor APIs, the doctor's probes): one request encoded to bytes, and the
//! response read back. Sans-IO: the driver feeds the bytes read so far and whether the peer has
//! closed; "not enough bytes" is `Ok(None)`.

use super::body::ChunkedDecoder;
use super::url::Endpoint;

/// A header name or value that would break the request head (CR, LF or another control
/// character): refused rather than sent, so a secret with a stray newline cannot inject headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHeader;

error_text!(BadHeader => "header holds a control character");

/// Encodes one `Connection: close` request to `ep` (its `target` is the request target):
/// `Host`, `User-Agent`, the given headers and, with a body, its `Content-Type` and
/// `Content-Length`.
pub fn encode_request(
    method: &str,
    ep: &Endpoint,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Result<Vec<u8>, BadHeader> {
    let clean = |s: &str| !s.bytes().any(|b| b.is_ascii_control() && b != b'\t');
    if !headers.iter().all(|(n, v)| clean(n) && clean(v)) || !clean(method) {
        return Err(BadHeader);
    }
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ignis/{}\r\nConnection: close\r\n",
        ep.target,
        ep.host_header(),
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some((content_type, bytes)) = body {
        if !clean(content_type) {
            return Err(BadHeader);
        }
        head.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            bytes.len()
        ));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if let Some((_, bytes)) = body {
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// Most response headers read; services answer with a dozen or two.
const MAX_RESPONSE_HEADERS: usize = 64;

/// A whole response: status and decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    /// Status code.
    pub status: u16,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

/// Why a service's response could not be read. Fatal for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// More bytes than the caller's limit.
    TooLarge,
    /// The peer closed inside the head.
    TruncatedHead,
    /// Not an HTTP/1.x response head.
    MalformedHead,
    /// A chunked body that does not decode.
    BadChunkedBody,
    /// The peer closed inside the body.
    TruncatedBody,
    /// A Content-Length that is not a number.
    BadContentLength,
}

error_text!(ResponseError {
    TooLarge => "response too large",
    TruncatedHead => "truncated response head",
    MalformedHead => "malformed response head",
    BadChunkedBody => "bad chunked response body",
    TruncatedBody => "truncated response body",
    BadContentLength => "bad Content-Length",
});

/// The status once the head is complete (the body is not needed).
pub fn parse_status(buf: &[u8], eof: bool) -> Result<Option<u16>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(_)) => Ok(resp.code),
        Ok(httparse::Status::Partial) if eof => Err(ResponseError::TruncatedHead),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(ResponseError::MalformedHead),
    }
}

/// The whole response, once it is complete: framed by `Transfer-Encoding: chunked`,
/// `Content-Length`, or the peer's close (`eof`). Refuses more than `max_bytes` in `buf`.
pub fn parse_response(
    buf: &[u8],
    eof: bool,
    max_bytes: usize,
) -> Result<Option<ClientResponse>, ResponseError> {
    if buf.len() > max_bytes {
        return Err(ResponseError::TooLarge);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if eof => return Err(ResponseError::TruncatedHead),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ResponseError::MalformedHead),
    };
    let status = resp.code.unwrap_or(0);
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let rest = &buf[head_len..];
    let incomplete = || {
        if eof {
            Err(ResponseError::TruncatedBody)
        } else {
            Ok(None)
        }
    };
    let body = if header("transfer-encoding").is_some() {
        let mut dec = ChunkedDecoder::new();
        let mut out = Vec::new();
        dec.decode(rest, &mut out)
            .map_err(|_| ResponseError::BadChunkedBody)?;
        if !dec.is_done() {
            return incomplete();
        }
        out
    } else if let Some(len) = header("content-length") {
        let len: usize = std::str::from_utf8(len)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(ResponseError::BadContentLength)?;
        if rest.len() < len {
            return incomplete();
        }
        rest[..len].to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(ClientResponse { status, body }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_requests_and_refuses_header_injection() {
        let ep = Endpoint::parse("https://api.example.com:8443/v1/x?y=1").unwrap();
        let req = encode_request(
            "PATCH",
            &ep,
            &[("xi-api-key", "k")],
            Some(("application/json", b"{}")),
        )
        .unwrap();
        let req = String::from_utf8(req).unwrap();
        assert!(req.starts_with("PATCH /v1/x?y=1 HTTP/1.1\r\nHost: api.example.com:8443\r\n"));
        assert!(req.contains("xi-api-key: k\r\n"));
        assert!(req.ends_with("Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"));
        assert_eq!(
            encode_request("GET", &ep, &[("a", "b\r\nEvil: 1")], None),
            Err(BadHeader)
        );
    }

    #[test]
    fn reads_statuses_and_framed_bodies() {
        assert_eq!(
            parse_status(b"HTTP/1.1 200 OK\r\n\r\n", false),
            Ok(Some(200))
        );
        assert_eq!(parse_status(b"HTTP/1.1 404 Not", false), Ok(None));
        assert_eq!(
            parse_status(b"HTTP/1.1 404 Not", true),
            Err(ResponseError::TruncatedHead)
        );
        assert_eq!(
            parse_status(b"nope\r\n\r\n", false),
            Err(ResponseError::MalformedHead)
        );
        let whole = |status, body: &str| {
            Ok(Some(ClientResponse {
                status,
                body: body.into(),
            }))
        };
        assert_eq!(
            parse_response(
                b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
                false,
                1024
            ),
            whole(201, "ok")
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok",
                false,
                1024
            ),
            Ok(None)
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok",
                true,
                1024
            ),
            Err(ResponseError::TruncatedBody)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false, 1024),
            Err(ResponseError::BadContentLength)
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked, false, 1024), whole(200, "ok"));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\nok", false, 1024),
            Ok(None)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\nok", true, 1024),
            whole(200, "ok")
        );
        assert_eq!(
            parse_response(chunked, false, 10),
            Err(ResponseError::TooLarge)
        );
    }
}
