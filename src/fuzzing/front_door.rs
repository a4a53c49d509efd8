//! Fuzz entry points for everything a request meets before audio flows.

use crate::http::body::{self, ChunkedDecoder, Framing};
use crate::http::{form, request_head, websocket_upgrade};
use crate::twilio::media_stream;
use crate::twilio::signature::{self, AuthToken, SigningKeys};

/// Request head parser, framing decision, upgrade check and (if chunked) the body decoder.
pub fn http_request_head(data: &[u8]) {
    parsing_only_when_worth_it_agrees(data);
    let Ok(Some((head, used))) = request_head::parse(data) else {
        return;
    };
    assert!(used <= data.len() && used <= request_head::MAX_HEAD_BYTES);
    assert!(head.target.len() <= request_head::MAX_TARGET_BYTES);
    let _ = head.keep_alive();
    let _ = (head.path(), head.query());
    let _ = websocket_upgrade::check(&head);
    if let Ok(Framing::Chunked) = body::framing(&head) {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let rest = &data[used..];
        // Feed in uneven pieces: the decoder must give the same result for any split.
        let mut pos = 0;
        let mut step = 1;
        while pos < rest.len() && !decoder.is_done() {
            let end = (pos + step).min(rest.len());
            match decoder.decode(&rest[pos..end], &mut out) {
                Ok(n) => {
                    assert!(n <= end - pos);
                    pos += n;
                }
                Err(_) => return,
            }
            step = step % 7 + 1;
        }
        assert!(out.len() <= body::MAX_BODY_BYTES);
    }
}

/// The driver parses a head only when [`request_head::worth_parsing`] says the new bytes can
/// change the answer. Fed in uneven pieces, that must find the same complete head as parsing
/// after every piece; an error found mid-line may only come later (or wait for more bytes),
/// never turn into a head.
fn parsing_only_when_worth_it_agrees(data: &[u8]) {
    type Answer = Option<Result<usize, request_head::HeadError>>;
    let decided = |r: Result<Option<(crate::http::RequestHead, usize)>, _>| match r {
        Ok(None) => None,
        Ok(Some((_, n))) => Some(Ok(n)),
        Err(e) => Some(Err(e)),
    };
    let (mut every, mut worth): (Answer, Answer) = (None, None);
    let (mut pos, mut step) = (0, 1);
    while pos < data.len() && (every.is_none() || worth.is_none()) {
        let from = pos;
        pos = (pos + step).min(data.len());
        step = step % 5 + 1;
        let buf = &data[..pos];
        if every.is_none() {
            every = decided(request_head::parse(buf));
        }
        if worth.is_none() && (from == 0 || request_head::worth_parsing(buf, from)) {
            worth = decided(request_head::parse(buf));
        }
    }
    match (every, worth) {
        (Some(Ok(n)), w) => assert_eq!(w, Some(Ok(n))),
        (Some(Err(_)), w) => assert!(!matches!(w, Some(Ok(_))), "{w:?}"),
        (None, w) => assert_eq!(w, None),
    }
}

/// `application/x-www-form-urlencoded` decoding.
pub fn form_body(data: &[u8]) {
    if let Ok(fields) = form::decode(data) {
        assert!(fields.len() <= form::MAX_FORM_FIELDS);
        let _ = form::get(&fields, "CallSid");
    }
}

/// Signature validation with arbitrary URL, parameters and header; a signature made by
/// [`signature::sign`] must always validate.
pub fn signature_input(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\n');
    let url = parts.next().unwrap_or("");
    let header = parts.next().unwrap_or("");
    let params: Vec<(String, String)> = parts
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect();
    let keys = SigningKeys::new(AuthToken::new("fuzz"), Some(AuthToken::new("fuzz2")));
    let _ = keys.validate_form(url, &params, header.as_bytes());
    let _ = keys.validate_json(url, data, header.as_bytes());
    let _ = keys.validate_websocket(url, header.as_bytes());
    let good = signature::sign("fuzz", url, &params);
    assert!(keys.validate_form(url, &params, good.as_bytes()));
}

/// Media Streams message parsing and the outbound writers' JSON validity.
pub fn twilio_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(media_stream::TwilioEvent::Mark { name }) = media_stream::parse(text) {
        let mut out = String::new();
        media_stream::write_mark(&mut out, "MZ", &name);
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok());
    }
}

/// The GUID of RFC 6455 §1.3, appended to the client's key before hashing.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// WebSocket upgrade check on an arbitrary request head, without the router. For an accepted
/// upgrade, the 101 must be one complete response head that httparse reads back whole, with
/// `Upgrade`, `Connection` and the RFC 6455 §4.2.2 accept key computed here independently
/// (SHA-1 of key + GUID, base64), and any subprotocol must be one the client offered.
pub fn websocket_upgrade(data: &[u8]) {
    use base64::Engine as _;
    use sha1::{Digest as _, Sha1};

    let Ok(Some((head, _))) = request_head::parse(data) else {
        return;
    };
    let accept = match websocket_upgrade::check(&head) {
        websocket_upgrade::UpgradeCheck::NotUpgrade => {
            assert!(!head.has_token("upgrade", "websocket"));
            return;
        }
        websocket_upgrade::UpgradeCheck::Reject(e) => {
            assert!(matches!(e.status(), 400 | 426));
            return;
        }
        websocket_upgrade::UpgradeCheck::Accept(a) => a,
    };
    assert!(head.method == request_head::Method::Get);
    assert!(head.version == request_head::Version::Http11);
    let key = head
        .header("sec-websocket-key")
        .map(<[u8]>::trim_ascii)
        .expect("accepted without a key");
    let raw_key = base64::engine::general_purpose::STANDARD
        .decode(key)
        .expect("accepted a key that is not base64");
    assert_eq!(raw_key.len(), 16, "accepted a key that is not 16 bytes");
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(sha.finalize());

    let bytes = accept.response_bytes("Tue, 24 Nov 2026 08:00:00 GMT");
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&bytes) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, bytes.len(), "bytes after the head"),
        other => panic!("101 is not a complete response head: {other:?}"),
    }
    assert_eq!(resp.code, Some(101));
    assert_eq!(resp.version, Some(1));
    let value = |name: &str| {
        let mut found = resp
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name));
        let first = found.next().map(|h| h.value);
        assert!(found.next().is_none(), "{name} twice");
        first
    };
    assert_eq!(value("upgrade"), Some(&b"websocket"[..]));
    assert_eq!(value("connection"), Some(&b"Upgrade"[..]));
    assert_eq!(value("sec-websocket-accept"), Some(expected.as_bytes()));
    assert!(
        value("content-length").is_none(),
        "RFC 9110 §8.6: no length on 1xx"
    );
    match (accept.subprotocol(), value("sec-websocket-protocol")) {
        (None, None) => {}
        (Some(p), Some(v)) => {
            assert_eq!(p.as_bytes(), v);
            let offered = head
                .headers_named("sec-websocket-protocol")
                .flat_map(|v| v.split(|&b| b == b','))
                .any(|t| t.trim_ascii() == p.as_bytes());
            assert!(offered, "echoed a subprotocol the client did not offer");
        }
        other => panic!("subprotocol mismatch: {other:?}"),
    }
}
