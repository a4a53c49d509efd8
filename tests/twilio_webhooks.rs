//! Twilio webhooks end to end: signature accept/reject, TwiML content, stream-ended decisions,
//! status callbacks.

mod common;

use common::*;
use ignis::twilio::signature;

/// Signatures computed by Twilio's own helper library (twilio-python 9.13.0,
/// `RequestValidator("ignis-test-token").compute_signature(url, params)`), so these tests check
/// ignis against Twilio's implementation, not against itself.
const SDK_VOICE_SIG: &str = "PRK5RD3zeVvjtaILPrdflaYKzvE=";
/// The GET vector with `AccountSid` added (Twilio always sends it, and ignis now requires it):
/// recomputed with Python's `hmac`/`hashlib`, the SDK's algorithm, which reproduces the SDK's
/// vector for the query without it (`IbHyEWwQUunuYzB8ORL/DsOa4yk=`).
const SDK_VOICE_GET_SIG: &str = "fWNZOrtOco3MMZpcmg0iGCG9gYQ=";

fn sdk_voice_params() -> Vec<(String, String)> {
    fields(&[
        ("AccountSid", "AC11111111111111111111111111111111"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", "CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ("CallStatus", "ringing"),
        ("Called", "+16175551881"),
        ("Caller", "+4915112345123"),
        ("Direction", "inbound"),
        ("From", "+4915112345123"),
        ("FromCountry", "DE"),
        ("To", "+16175551881"),
        ("ToCountry", "US"),
    ])
}

fn post_with_sig(path: &str, params: &[(String, String)], sig: &str) -> Vec<u8> {
    let body = urlencode(params);
    format!(
        "POST {path} HTTP/1.1\r\nHost: internal:8080\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         X-Twilio-Signature: {sig}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn voice_webhook_signed_by_twilio_sdk_gets_twiml() {
    let server = Server::start().await;
    let r = roundtrip(
        &server,
        &post_with_sig("/api/twilio/voice", &sdk_voice_params(), SDK_VOICE_SIG),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/xml; charset=utf-8"));
    let xml = r.text();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>"));
    assert!(xml.contains(
        "<Connect action=\"https://ignis.example.com/api/twilio/stream-ended\" method=\"POST\">"
    ));
    // The stream URL carries the call's nonce as a path segment (docs/twilio.md §8).
    let path = stream_path_of(&xml);
    let nonce = path.strip_prefix("/api/twilio/stream/").unwrap();
    assert!(
        nonce.len() == 32 && nonce.bytes().all(|b| b.is_ascii_hexdigit()),
        "{path}"
    );
    assert!(xml.contains(&format!("<Stream url=\"wss://ignis.example.com{path}\">")));
    assert!(xml.contains("<Parameter name=\"caller\" value=\"+4915112345123\"/>"));
    assert!(xml.contains("<Parameter name=\"called\" value=\"+16175551881\"/>"));
    assert!(
        xml.contains("<Parameter name=\"callSid\" value=\"CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"/>")
    );
    assert!(
        !xml.contains("stream?"),
        "no query string on the stream URL"
    );
    assert!(xml.len() < 64 * 1024);
}

#[tokio::test]
async fn voice_webhook_get_form_is_signed_over_the_query() {
    let server = Server::start().await;
    let target = "/api/twilio/voice?AccountSid=AC11111111111111111111111111111111&CallSid=CAbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb&From=%2B4930123456789&To=%2B16175551881";
    let ok = roundtrip(
        &server,
        format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nX-Twilio-Signature: {SDK_VOICE_GET_SIG}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(ok.text().contains("value=\"+4930123456789\""));
    let tampered = target.replace("4930123456789", "4930123456788");
    let bad = roundtrip(
        &server,
        format!(
            "GET {tampered} HTTP/1.1\r\nHost: x\r\nX-Twilio-Signature: {SDK_VOICE_GET_SIG}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(bad.status, 403);
}

#[tokio::test]
async fn unsigned_tampered_or_wrongly_signed_webhooks_get_403() {
    let server = Server::start().await;
    let params = sdk_voice_params();
    // No signature at all.
    let body = urlencode(&params);
    let unsigned = format!(
        "POST /api/twilio/voice HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Unsigned with parameters that do not decode: still 403, not 400 (the signature is
    // looked at first), and counted as a rejection.
    let undecodable = "POST /api/twilio/status HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\n\r\na=%FF";
    let signed_undecodable = format!(
        "POST /api/twilio/voice HTTP/1.1\r\nX-Twilio-Signature: {SDK_VOICE_SIG}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\n\r\na=%FF"
    );
    for (path, raw) in [
        ("voice", unsigned.into_bytes()),
        ("status, undecodable", undecodable.as_bytes().to_vec()),
        ("voice, undecodable", signed_undecodable.into_bytes()),
        (
            "status",
            signed_post("/api/twilio/status", &params, "wrong-token"),
        ),
        (
            "stream-ended",
            signed_post("/api/twilio/stream-ended", &params, "wrong-token"),
        ),
        (
            "voice",
            post_with_sig("/api/twilio/voice", &params, "garbage!"),
        ),
        ("voice", post_with_sig("/api/twilio/voice", &params, "")),
    ] {
        let r = roundtrip(&server, &raw).await;
        assert_eq!(r.status, 403, "{path}");
    }
    assert_eq!(
        server
            .app
            .metrics
            .signature_rejections
            .load(std::sync::atomic::Ordering::Relaxed),
        7
    );
    // Tampered: the SDK signature with one parameter changed.
    let mut tampered = params.clone();
    tampered[4].1 = "+4915199999999".into();
    let r = roundtrip(
        &server,
        &post_with_sig("/api/twilio/voice", &tampered, SDK_VOICE_SIG),
    )
    .await;
    assert_eq!(r.status, 403);
    // Signed for another path.
    let r = roundtrip(
        &server,
        &post_with_sig("/api/twilio/status", &params, SDK_VOICE_SIG),
    )
    .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn secondary_token_and_port_variant_accepted() {
    let server =
        Server::start_config(test_config(&[("TWILIO_AUTH_TOKEN_SECONDARY", "old-token")])).await;
    let params = call_params("CA00000000000000000000000000000201");
    let r = roundtrip(
        &server,
        &signed_post("/api/twilio/voice", &params, "old-token"),
    )
    .await;
    assert_eq!(r.status, 200);
    // Twilio may sign with the default port spelled out (docs/twilio.md §4.2).
    let sig = signature::sign(
        TOKEN,
        "https://ignis.example.com:443/api/twilio/voice",
        &params,
    );
    let r = roundtrip(&server, &post_with_sig("/api/twilio/voice", &params, &sig)).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn json_body_with_body_sha256_is_validated() {
    let server = Server::start().await;
    let body = br#"{"CallSid":"CA1"}"#;
    let hash = {
        use sha2::Digest;
        sha2::Sha256::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let target = format!(
        "/api/twilio/status?CallSid=CA00000000000000000000000000000001&CallStatus=completed&bodySHA256={hash}"
    );
    let sig = signature::sign(TOKEN, &format!("{PUBLIC}{target}"), &[]);
    let req = |b: &[u8]| {
        let mut v = format!(
            "POST {target} HTTP/1.1\r\nContent-Type: application/json\r\nX-Twilio-Signature: {sig}\r\nContent-Length: {}\r\n\r\n",
            b.len()
        )
        .into_bytes();
        v.extend_from_slice(b);
        v
    };
    assert_eq!(roundtrip(&server, &req(body)).await.status, 204);
    assert_eq!(
        roundtrip(&server, &req(br#"{"CallSid":"CA2"}"#))
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn bad_parameters_get_400() {
    let server = Server::start().await;
    // (webhook, the one field sent, the missing field the answer names)
    for (path, sent, missing) in [
        ("/api/twilio/voice", ("From", "+49"), "CallSid"),
        ("/api/twilio/status", ("CallSid", "CA1"), "CallStatus"),
    ] {
        let r = roundtrip(&server, &signed_post(path, &fields(&[sent]), TOKEN)).await;
        assert_eq!(r.status, 400, "{path}");
        assert!(r.text().contains(missing), "{path}");
    }
}

#[tokio::test]
async fn stream_ended_falls_back_unless_the_call_finished_normally() {
    // Unknown call, no fallback number: apology and hang-up.
    let server = Server::start().await;
    let r = call_webhook(
        &server,
        "/api/twilio/stream-ended",
        "CA00000000000000000000000000000501",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("<Say language=\"de-DE\">"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("<Hangup/>"));

    // Unknown call with a fallback number: dial the human.
    let server = Server::start_config(test_config(&[("FALLBACK_NUMBER", "+493012345678")])).await;
    let r = call_webhook(
        &server,
        "/api/twilio/stream-ended",
        "CA00000000000000000000000000000502",
    )
    .await;
    assert!(
        r.text()
            .contains("<Dial><Number>+493012345678</Number></Dial>"),
        "{}",
        r.text()
    );

    // A call whose caller hung up normally: plain hang-up.
    use futures_util::SinkExt;
    let sid = "CA00000000000000000000000000000503";
    let mut ws = open_stream(&server, sid).await;
    eventually("stream registered", || server.app.calls.is_live(sid)).await;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        r#"{"event":"stop","sequenceNumber":"3","streamSid":"MZ","stop":{"accountSid":"AC","callSid":"x"}}"#,
    ))
    .await
    .unwrap();
    eventually("stream finished", || {
        server.app.calls.outcome(sid).is_some()
    })
    .await;
    let r = call_webhook(&server, "/api/twilio/stream-ended", sid).await;
    assert_eq!(
        r.text(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Hangup/></Response>"
    );
}

#[tokio::test]
async fn status_callback_tears_down_the_live_stream_idempotently() {
    use futures_util::StreamExt;
    let server = Server::start().await;
    let sid = "CA00000000000000000000000000000301";
    let mut ws = open_stream(&server, sid).await;
    eventually("stream registered", || server.app.calls.is_live(sid)).await;

    let status = |seq: &str, st: &str| {
        let mut p = call_params(sid);
        p.retain(|(k, _)| k != "CallStatus");
        p.push(("CallStatus".into(), st.into()));
        p.push(("SequenceNumber".into(), seq.into()));
        p.push(("CallDuration".into(), "12".into()));
        signed_post("/api/twilio/status", &p, TOKEN)
    };
    let r = roundtrip(&server, &status("2", "completed")).await;
    assert_eq!(r.status, 204);
    assert!(
        r.header("content-length").is_none(),
        "204 carries no Content-Length"
    );
    // The stream socket receives a close frame.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                return true;
            }
        }
        true
    })
    .await
    .unwrap();
    assert!(closed);
    eventually("registry empty of live calls", || {
        server.app.calls.live_count() == 0
    })
    .await;
    // Repeated and out-of-order callbacks are fine; unknown calls too.
    assert_eq!(
        roundtrip(&server, &status("2", "completed")).await.status,
        204
    );
    assert_eq!(
        roundtrip(&server, &status("1", "in-progress")).await.status,
        204
    );
    let unknown = signed_post(
        "/api/twilio/status",
        &fields(&[
            ("CallSid", "CA00000000000000000000000000000aaa"),
            ("CallStatus", "completed"),
        ]),
        TOKEN,
    );
    assert_eq!(roundtrip(&server, &unknown).await.status, 204);
}
