//! WebSocket opening handshake checks (RFC 6455 §4.2) and the 101 response.
//!
//! The server validates the upgrade itself, writes the 101, and hands the socket (plus any bytes
//! that arrived after the head) to tokio-tungstenite with `from_partially_read`.

use base64::Engine as _;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::request_head::{Method, RequestHead, Version};

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2): what the server
/// answers, and what the client checks (`websocket_client`).
pub fn accept_key(key: &[u8]) -> String {
    derive_accept_key(key)
}

/// A subprotocol the community associates with Twilio; preferred when a client offers it.
const TWILIO_SUBPROTOCOL: &str = "audio.twilio.com";
/// Longest `Sec-WebSocket-Protocol` value echoed back.
const MAX_SUBPROTOCOL_BYTES: usize = 128;

/// What a request asks for with respect to WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeCheck {
    /// Not an upgrade request at all (plain GET): the route answers 426.
    NotUpgrade,
    /// A valid upgrade; respond with [`Accept::response_bytes`].
    Accept(Accept),
    /// An upgrade request that breaks RFC 6455 §4.2.1.
    Reject(UpgradeError),
}

/// A validated upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept {
    accept_key: String,
    subprotocol: Option<String>,
}

impl Accept {
    /// The subprotocol echoed to the client, if it offered any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The `101 Switching Protocols` response head.
    pub fn response_bytes(&self, date: &str) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nDate: {date}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
            self.accept_key
        );
        if let Some(p) = &self.subprotocol {
            out.push_str("Sec-WebSocket-Protocol: ");
            out.push_str(p);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// Why an upgrade request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeError {
    /// Not `GET` over HTTP/1.1 (400).
    WrongMethodOrVersion,
    /// `Sec-WebSocket-Version` other than 13 (426 with `Sec-WebSocket-Version: 13`).
    UnsupportedVersion,
    /// Missing `Connection: Upgrade` or a missing / malformed `Sec-WebSocket-Key` (400).
    BadHandshake,
}

impl UpgradeError {
    /// The status code this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            UpgradeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }
}

error_text!(UpgradeError {
    WrongMethodOrVersion => "WebSocket upgrade needs GET over HTTP/1.1",
    UnsupportedVersion => "unsupported Sec-WebSocket-Version",
    BadHandshake => "malformed WebSocket handshake",
});

/// Checks a request for a WebSocket upgrade.
pub fn check(head: &RequestHead) -> UpgradeCheck {
    if !head.has_token("upgrade", "websocket") {
        return UpgradeCheck::NotUpgrade;
    }
    if head.method != Method::Get || head.version != Version::Http11 {
        return UpgradeCheck::Reject(UpgradeError::WrongMethodOrVersion);
    }
    if head.header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return UpgradeCheck::Reject(UpgradeError::UnsupportedVersion);
    }
    if !head.has_token("connection", "upgrade") {
        return UpgradeCheck::Reject(UpgradeError::BadHandshake);
    }
    // The key must be base64 of 16 bytes (RFC 6455 §4.2.1 item 5).
    let Some(key) = head.header("sec-websocket-key").map(<[u8]>::trim_ascii) else {
        return UpgradeCheck::Reject(UpgradeError::BadHandshake);
    };
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return UpgradeCheck::Reject(UpgradeError::BadHandshake),
    }
    UpgradeCheck::Accept(Accept {
        accept_key: accept_key(key),
        subprotocol: choose_subprotocol(head),
    })
}

/// Echo a subprotocol only if the client offered one (docs/twilio.md §1.1: echoing one Twilio did not
/// offer makes it drop the connection). Prefer Twilio's name, else the first offered token.
fn choose_subprotocol(head: &RequestHead) -> Option<String> {
    let offered: Vec<&[u8]> = head
        .headers_named("sec-websocket-protocol")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| {
            !t.is_empty()
                && t.len() <= MAX_SUBPROTOCOL_BYTES
                && t.iter().all(|&b| b.is_ascii_graphic())
        })
        .collect();
    let pick = offered
        .iter()
        .find(|t| t.eq_ignore_ascii_case(TWILIO_SUBPROTOCOL.as_bytes()))
        .or_else(|| offered.first())?;
    std::str::from_utf8(pick).ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request_head::parse;

    fn head(raw: &str) -> RequestHead {
        parse(raw.as_bytes()).unwrap().unwrap().0
    }

    const OK: &str = "GET /api/twilio/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n";

    #[test]
    fn rfc6455_example_key() {
        let UpgradeCheck::Accept(a) = check(&head(&format!("{OK}\r\n"))) else {
            panic!("not accepted");
        };
        let resp = String::from_utf8(a.response_bytes("D")).unwrap();
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(!resp.contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn subprotocol_only_when_offered() {
        let h = head(&format!(
            "{OK}Sec-WebSocket-Protocol: foo, audio.twilio.com\r\n\r\n"
        ));
        let UpgradeCheck::Accept(a) = check(&h) else {
            panic!("not accepted");
        };
        assert_eq!(a.subprotocol(), Some("audio.twilio.com"));
        let h = head(&format!("{OK}Sec-WebSocket-Protocol: foo\r\n\r\n"));
        let UpgradeCheck::Accept(a) = check(&h) else {
            panic!("not accepted");
        };
        assert_eq!(a.subprotocol(), Some("foo"));
    }

    #[test]
    fn rejections() {
        assert_eq!(
            check(&head("GET / HTTP/1.1\r\n\r\n")),
            UpgradeCheck::NotUpgrade
        );
        let v8 = OK.replace("Version: 13", "Version: 8");
        assert_eq!(
            check(&head(&format!("{v8}\r\n"))),
            UpgradeCheck::Reject(UpgradeError::UnsupportedVersion)
        );
        let badkey = OK.replace("dGhlIHNhbXBsZSBub25jZQ==", "short");
        assert_eq!(
            check(&head(&format!("{badkey}\r\n"))),
            UpgradeCheck::Reject(UpgradeError::BadHandshake)
        );
        let post = OK.replace("GET", "POST");
        assert_eq!(
            check(&head(&format!("{post}\r\n"))),
            UpgradeCheck::Reject(UpgradeError::WrongMethodOrVersion)
        );
    }
}
