//! Fuzz entry points for everything a request meets before audio flows.

use crate::http::body::{self, ChunkedDecoder, Framing};
use crate::http::{form, request_head, websocket_upgrade};
use crate::twilio::media_stream;
use crate::twilio::signature::{self, AuthToken, SigningKeys};

/// Request head parser, framing decision, upgrade check and (if chunked) the body decoder.
pub fn http_request_head(data: &[u8]) {
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
