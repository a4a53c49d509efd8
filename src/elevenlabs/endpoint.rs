//! Where the agent lives: the conversation URL for a public agent, and the signed-URL request
//! and response for a private one (docs/elevenlabs.md §1.1–§1.3). Sans-IO: bytes out, bytes in. The
//! URL and response framing are generic HTTP ([`crate::http::url`], [`crate::http::client`]);
//! only what ElevenLabs specifies is here.

use std::fmt;

use crate::http::client::{self, ResponseError};
use crate::http::url::{Endpoint, UrlError, encode_query_value};

/// Largest signed-URL HTTP response accepted (head + body).
pub const MAX_SIGNED_URL_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest agent id accepted in configuration.
pub const MAX_AGENT_ID_BYTES: usize = 128;

/// Why the signed URL could not be requested or was refused. Fatal for the call's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedUrlError {
    /// `ELEVENLABS_API_BASE` is not a usable URL.
    BaseUrl(UrlError),
    /// The API key holds control characters (it would break the request head).
    BadApiKey,
    /// The signed-URL service answered with a non-200 status.
    Status(u16),
    /// The response could not be read as HTTP.
    Response(ResponseError),
    /// The body is not JSON.
    NotJson,
    /// The JSON has no string `signed_url`.
    NoSignedUrl,
    /// The `signed_url` does not parse as a URL.
    SignedUrl(UrlError),
    /// The `signed_url` is not `ws://` or `wss://`.
    NotWebSocket,
}

impl fmt::Display for SignedUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignedUrlError::BaseUrl(e) => write!(f, "ElevenLabs API base: {e}"),
            SignedUrlError::BadApiKey => f.write_str("ElevenLabs API key has control characters"),
            SignedUrlError::Status(s) => write!(f, "ElevenLabs signed-URL request answered {s}"),
            SignedUrlError::Response(e) => write!(f, "ElevenLabs signed-URL response: {e}"),
            SignedUrlError::NotJson => f.write_str("ElevenLabs signed-URL response is not JSON"),
            SignedUrlError::NoSignedUrl => {
                f.write_str("ElevenLabs signed-URL response has no signed_url")
            }
            SignedUrlError::SignedUrl(e) => write!(f, "ElevenLabs signed_url: {e}"),
            SignedUrlError::NotWebSocket => f.write_str("ElevenLabs signed_url is not ws/wss"),
        }
    }
}

impl std::error::Error for SignedUrlError {}

/// The conversation URL of a public agent on `api_base` (`https://…` → `wss://…`, §1.1).
pub fn public_agent_url(api_base: &str, agent_id: &str) -> Result<String, UrlError> {
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
) -> Result<(Endpoint, Vec<u8>), SignedUrlError> {
    let mut ep = Endpoint::parse(api_base).map_err(SignedUrlError::BaseUrl)?;
    ep.target = format!(
        "/v1/convai/conversation/get-signed-url?agent_id={}",
        encode_query_value(agent_id)
    );
    if api_key.bytes().any(|b| b.is_ascii_control()) {
        return Err(SignedUrlError::BadApiKey);
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
pub fn parse_signed_url_response(buf: &[u8], eof: bool) -> Result<Option<String>, SignedUrlError> {
    let Some(resp) = client::parse_response(buf, eof, MAX_SIGNED_URL_RESPONSE_BYTES)
        .map_err(SignedUrlError::Response)?
    else {
        return Ok(None);
    };
    if resp.status != 200 {
        return Err(SignedUrlError::Status(resp.status));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&resp.body).map_err(|_| SignedUrlError::NotJson)?;
    let url = v
        .get("signed_url")
        .and_then(|u| u.as_str())
        .ok_or(SignedUrlError::NoSignedUrl)?;
    // Treated as opaque (§1.3), but it must be a WebSocket URL we can connect to.
    Endpoint::parse(url).map_err(SignedUrlError::SignedUrl)?;
    if !url.starts_with("ws") {
        return Err(SignedUrlError::NotWebSocket);
    }
    Ok(Some(url.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            signed_url_request("https://h", "a", "k\r\nX: y"),
            Err(SignedUrlError::BadApiKey)
        );
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
            Err(SignedUrlError::Status(401))
        );
        let bad = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            parse_signed_url_response(bad.as_bytes(), false),
            Err(SignedUrlError::NoSignedUrl)
        );
    }
}
