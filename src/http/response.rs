//! Responses: a small owned value encoded into bytes with `Date` and `Content-Length` set.

/// An HTTP response ready to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra header fields (`Date`, `Content-Length` and `Connection` are added on encoding).
    pub headers: Vec<(&'static str, String)>,
    /// Body bytes (omitted on the wire for `HEAD`, still counted in `Content-Length`).
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain` response; error responses use it so a client always sees why.
    pub fn text(status: u16, text: &str) -> Response {
        let mut body = text.as_bytes().to_vec();
        body.push(b'\n');
        Response::new(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(body)
    }

    /// An `application/json` response.
    pub fn json(status: u16, json: String) -> Response {
        Response::new(status)
            .header("Content-Type", "application/json")
            .body(json.into_bytes())
    }

    /// A `text/xml` response (TwiML, docs/twilio.md §2.1).
    pub fn xml(status: u16, xml: String) -> Response {
        Response::new(status)
            .header("Content-Type", "text/xml; charset=utf-8")
            .body(xml.into_bytes())
    }

    /// Adds a header field.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }

    /// Whether this status may carry `Content-Length` and a body (RFC 9110 §8.6, §15.3.5:
    /// not 1xx, 204 or 304).
    pub fn has_content(&self) -> bool {
        !(self.status < 200 || self.status == 204 || self.status == 304)
    }

    /// Appends the encoded response to `out`. `date` is an IMF-fixdate; `head_only` drops the
    /// body (HEAD requests); `close` adds `Connection: close`.
    pub fn encode_into(&self, out: &mut Vec<u8>, date: &str, head_only: bool, close: bool) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nDate: {}\r\n",
            self.status,
            reason(self.status),
            date
        );
        if self.has_content() {
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if self.has_content() && !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The reason phrase for the statuses this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        303 => "See Other",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_length_and_date() {
        let mut out = Vec::new();
        Response::text(404, "not found").encode_into(&mut out, "D", false, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\nDate: D\r\nContent-Length: 10\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\nnot found\n"
        );
    }

    #[test]
    fn head_keeps_length_drops_body_and_204_has_no_length() {
        let mut out = Vec::new();
        Response::text(200, "ok").encode_into(&mut out, "D", true, true);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("Content-Length: 3\r\n"));
        assert!(s.ends_with("Connection: close\r\n\r\n"));
        let mut out = Vec::new();
        Response::new(204).encode_into(&mut out, "D", false, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 204 No Content\r\nDate: D\r\n\r\n"
        );
    }

    #[test]
    fn not_modified_keeps_its_headers_and_has_no_length_or_body() {
        let mut out = Vec::new();
        Response::new(304)
            .header("ETag", "\"abc\"")
            .header("Set-Cookie", "a=b")
            .body(b"ignored".to_vec())
            .encode_into(&mut out, "D", false, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 304 Not Modified\r\nDate: D\r\nETag: \"abc\"\r\nSet-Cookie: a=b\r\n\r\n"
        );
    }
}
