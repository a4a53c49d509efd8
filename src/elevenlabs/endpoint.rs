//! Where the agent lives: the conversation URL for a public agent, and the signed-URL request
//! and response for a private one (elevenlabs.md §1.1–§1.3). Sans-IO: bytes out, bytes in.

use std::fmt;

use crate::http::body::ChunkedDecoder;

/// Largest signed-URL HTTP response accepted (head + body).
pub const MAX_SIGNED_URL_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest agent id accepted in configuration.
pub const MAX_AGENT_ID_BYTES: usize = 128;

/// A parsed `ws://`, `wss://`, `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Whether TLS is used.
    pub tls: bool,
    /// Host name or IP literal (brackets removed).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path and query, at least `/`.
    pub target: String,
}

/// Why a URL or response was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    /// Not an absolute ws/wss/http/https URL.
    BadUrl,
    /// The signed-URL service answered with a non-200 status.
    Status(u16),
    /// The response was malformed, too large, or had no `signed_url`.
    BadResponse(&'static str),
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointError::BadUrl => f.write_str("not an absolute ws/wss/http/https URL"),
            EndpointError::Status(s) => write!(f, "signed-URL request answered {s}"),
            EndpointError::BadResponse(why) => write!(f, "bad signed-URL response: {why}"),
        }
    }
}

impl std::error::Error for EndpointError {}

impl Endpoint {
    /// Parses an absolute URL.
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let (scheme, rest) = url.split_once("://").ok_or(EndpointError::BadUrl)?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "wss" | "https" => true,
            "ws" | "http" => false,
            _ => return Err(EndpointError::BadUrl),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        if authority.is_empty() || authority.contains('@') {
            return Err(EndpointError::BadUrl);
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or(EndpointError::BadUrl)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| EndpointError::BadUrl)?,
                None if after.is_empty() => default_port,
                None => return Err(EndpointError::BadUrl),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| EndpointError::BadUrl)?),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(EndpointError::BadUrl);
        }
        let target = match target {
            "" => "/".to_owned(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_owned(),
        };
        Ok(Endpoint {
            tls,
            host,
            port,
            target,
        })
    }

    /// `host` or `host:port` when the port is not the default, for the `Host` header.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.tls { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The URL again, with a WebSocket scheme.
    pub fn ws_url(&self) -> String {
        format!(
            "{}://{}{}",
            if self.tls { "wss" } else { "ws" },
            self.host_header(),
            self.target
        )
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn encode_query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The conversation URL of a public agent on `api_base` (`https://…` → `wss://…`, §1.1).
pub fn public_agent_url(api_base: &str, agent_id: &str) -> Result<String, EndpointError> {
    let base = Endpoint::parse(api_base)?;
    Ok(format!(
        "{}://{}/v1/convai/conversation?agent_id={}",
        if base.tls { "wss" } else { "ws" },
        base.host_header(),
        encode_query_value(agent_id)
    ))
}

/// The signed-URL request (§1.3): the endpoint to connect to and the request bytes. The key goes
/// in the `xi-api-key` header only.
pub fn signed_url_request(
    api_base: &str,
    agent_id: &str,
    api_key: &str,
) -> Result<(Endpoint, Vec<u8>), EndpointError> {
    let mut ep = Endpoint::parse(api_base)?;
    ep.target = format!(
        "/v1/convai/conversation/get-signed-url?agent_id={}",
        encode_query_value(agent_id)
    );
    if api_key.bytes().any(|b| b.is_ascii_control()) {
        return Err(EndpointError::BadUrl);
    }
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nxi-api-key: {api_key}\r\nAccept: application/json\r\n\
         User-Agent: ignis/{}\r\nConnection: close\r\n\r\n",
        ep.target,
        ep.host_header(),
        env!("CARGO_PKG_VERSION")
    );
    Ok((ep, req.into_bytes()))
}

/// Parses the signed-URL response. `Ok(None)`: incomplete, read more; `eof` says the peer closed
/// (a body without length then ends there).
pub fn parse_signed_url_response(buf: &[u8], eof: bool) -> Result<Option<String>, EndpointError> {
    if buf.len() > MAX_SIGNED_URL_RESPONSE_BYTES {
        return Err(EndpointError::BadResponse("too large"));
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if eof => {
            return Err(EndpointError::BadResponse("truncated head"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(EndpointError::BadResponse("malformed head")),
    };
    let status = resp.code.unwrap_or(0);
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let rest = &buf[head_len..];
    let body: Vec<u8> = if header("transfer-encoding").is_some() {
        let mut dec = ChunkedDecoder::new();
        let mut out = Vec::new();
        dec.decode(rest, &mut out)
            .map_err(|_| EndpointError::BadResponse("bad chunked body"))?;
        if !dec.is_done() {
            return if eof {
                Err(EndpointError::BadResponse("truncated body"))
            } else {
                Ok(None)
            };
        }
        out
    } else if let Some(len) = header("content-length") {
        let len: usize = std::str::from_utf8(len)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(EndpointError::BadResponse("bad Content-Length"))?;
        if rest.len() < len {
            return if eof {
                Err(EndpointError::BadResponse("truncated body"))
            } else {
                Ok(None)
            };
        }
        rest[..len].to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    if status != 200 {
        return Err(EndpointError::Status(status));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| EndpointError::BadResponse("not JSON"))?;
    let url = v
        .get("signed_url")
        .and_then(|u| u.as_str())
        .ok_or(EndpointError::BadResponse("no signed_url"))?;
    // Treated as opaque (§1.3), but it must be a WebSocket URL we can connect to.
    let ep = Endpoint::parse(url)?;
    if !url.starts_with("ws") {
        return Err(EndpointError::BadResponse("signed_url is not ws/wss"));
    }
    let _ = ep;
    Ok(Some(url.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("https://api.elevenlabs.io").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.target.as_str()),
            (true, "api.elevenlabs.io", 443, "/")
        );
        let e = Endpoint::parse("ws://127.0.0.1:9000/v1/x?y=1").unwrap();
        assert_eq!(
            (e.tls, e.port, e.target.as_str()),
            (false, 9000, "/v1/x?y=1")
        );
        let e = Endpoint::parse("wss://[::1]:8443?a").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.target.as_str()),
            ("::1", 8443, "/?a")
        );
        assert_eq!(e.host_header(), "[::1]:8443");
        for bad in [
            "ftp://x",
            "https://",
            "https://u@h",
            "http://h:port",
            "nope",
        ] {
            assert_eq!(Endpoint::parse(bad), Err(EndpointError::BadUrl), "{bad}");
        }
    }

    #[test]
    fn public_and_signed_urls() {
        assert_eq!(
            public_agent_url("https://api.elevenlabs.io", "agent_1 x").unwrap(),
            "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=agent_1%20x"
        );
        assert_eq!(
            public_agent_url("http://127.0.0.1:9000", "a").unwrap(),
            "ws://127.0.0.1:9000/v1/convai/conversation?agent_id=a"
        );
        let (ep, req) = signed_url_request("https://api.elevenlabs.io", "a", "sk_1").unwrap();
        let req = String::from_utf8(req).unwrap();
        assert!(
            req.starts_with("GET /v1/convai/conversation/get-signed-url?agent_id=a HTTP/1.1\r\n")
        );
        assert!(req.contains("xi-api-key: sk_1\r\n"));
        assert!(req.contains("Host: api.elevenlabs.io\r\n"));
        assert!(ep.tls);
        assert!(signed_url_request("https://h", "a", "k\r\nX: y").is_err());
    }

    #[test]
    fn parses_signed_url_responses() {
        let body = r#"{"signed_url":"wss://api.elevenlabs.io/v1/convai/conversation?agent_id=a&conversation_signature=s"}"#;
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(
            parse_signed_url_response(&resp.as_bytes()[..20], false),
            Ok(None)
        );
        assert!(
            parse_signed_url_response(resp.as_bytes(), false)
                .unwrap()
                .unwrap()
                .contains("conversation_signature=s")
        );
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        );
        assert!(
            parse_signed_url_response(chunked.as_bytes(), false)
                .unwrap()
                .is_some()
        );
        let eof_body = format!("HTTP/1.1 200 OK\r\n\r\n{body}");
        assert_eq!(
            parse_signed_url_response(eof_body.as_bytes(), false),
            Ok(None)
        );
        assert!(
            parse_signed_url_response(eof_body.as_bytes(), true)
                .unwrap()
                .is_some()
        );
        let denied = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            parse_signed_url_response(denied.as_bytes(), false),
            Err(EndpointError::Status(401))
        );
        let bad = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            parse_signed_url_response(bad.as_bytes(), false),
            Err(EndpointError::BadResponse("no signed_url"))
        );
    }
}
