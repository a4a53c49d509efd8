//! The Media Streams WebSocket: signed upgrade, first frame in the same segment, subprotocol
//! echo, rejections, and bad frames that never cost a live call.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

/// Signatures by Twilio's helper library (twilio-python 9.13.0) over the wss URL, token
/// `ignis-test-token`: without and with the trailing slash (docs/twilio.md §1.1).
const SDK_WSS_SIG: &str = "LfY7Iv2E98EY/pXKY3xazdIRiTs=";
const SDK_WSS_SLASH_SIG: &str = "0ML5J5osmx5AkvH0Xeq9so7aaLk=";

#[tokio::test]
async fn signed_upgrade_with_first_frames_in_the_same_segment() {
    let server = Server::start().await;
    let sid = "CA00000000000000000000000000001701";
    // open_stream writes head + `connected` + `start` in a single write.
    let mut ws = open_stream(&server, sid).await;
    eventually("start read from the bytes after the head", || {
        server.app.calls.is_live(sid)
    })
    .await;
    let health = roundtrip(&server, b"GET /health HTTP/1.1\r\n\r\n").await;
    let v: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
    assert_eq!(v["active_calls"], 1);
    for chunk in 1..=50 {
        ws.send(Message::text(media_message(chunk))).await.unwrap();
    }
    ws.send(Message::text(
        r#"{"event":"stop","streamSid":"MZ","stop":{}}"#,
    ))
    .await
    .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    assert!(matches!(next, Some(Ok(Message::Close(_)))), "{next:?}");
    eventually("call finished", || !server.app.calls.is_live(sid)).await;
}

#[tokio::test]
async fn sdk_signatures_with_and_without_trailing_slash() {
    let server = Server::start().await;
    // Twilio's SDK signatures over the bare stream URL still validate ...
    let keys = &server.app.config.twilio_keys;
    for sig in [SDK_WSS_SIG, SDK_WSS_SLASH_SIG] {
        assert!(
            keys.validate_websocket("wss://ignis.example.com/api/twilio/stream", sig.as_bytes()),
            "{sig}"
        );
        // ... but a stream without its call's nonce is refused (docs/twilio.md §8).
        let r = roundtrip(
            &server,
            stream_handshake("/api/twilio/stream", Some(sig), "").as_bytes(),
        )
        .await;
        assert_eq!(r.status, 403, "{sig}");
    }
    // The call's own stream URL, signed with and without the trailing slash, is upgraded.
    for (i, slash) in ["", "/"].into_iter().enumerate() {
        let path = answer_call(&server, &format!("CA{:032x}", 0x5106 + i)).await;
        let sig = ignis::twilio::signature::sign(
            TOKEN,
            &format!("wss://ignis.example.com{path}{slash}"),
            &[],
        );
        let r = roundtrip(&server, stream_handshake(&path, Some(&sig), "").as_bytes()).await;
        assert_eq!(r.status, 101, "{slash:?}");
        assert_eq!(
            r.header("sec-websocket-accept"),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        assert!(
            r.header("sec-websocket-protocol").is_none(),
            "nothing offered, nothing echoed"
        );
    }
}

#[tokio::test]
async fn subprotocol_is_echoed_only_when_offered() {
    let server = Server::start().await;
    let path = answer_call(&server, "CA00000000000000000000000000005ab0").await;
    let r = roundtrip(
        &server,
        stream_handshake(
            &path,
            Some(&stream_signature(&path)),
            "Sec-WebSocket-Protocol: audio.twilio.com\r\n",
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 101);
    assert_eq!(r.header("sec-websocket-protocol"), Some("audio.twilio.com"));
}

#[tokio::test]
async fn rejected_handshakes() {
    let server = Server::start().await;
    let unsigned = roundtrip(
        &server,
        stream_handshake("/api/twilio/stream", None, "").as_bytes(),
    )
    .await;
    assert_eq!(unsigned.status, 403);
    let wrong = roundtrip(
        &server,
        stream_handshake(
            "/api/twilio/stream",
            Some("LfY7Iv2E98EY/pXKY3xazdIRiTX="),
            "",
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(wrong.status, 403);
    // An https:// signature does not open a wss:// stream.
    let https_sig =
        ignis::twilio::signature::sign(TOKEN, "https://ignis.example.com/api/twilio/stream", &[]);
    let r = roundtrip(
        &server,
        stream_handshake("/api/twilio/stream", Some(&https_sig), "").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 403);

    let plain = roundtrip(
        &server,
        b"GET /api/twilio/stream HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(plain.status, 426);
    assert_eq!(plain.header("upgrade"), Some("websocket"));

    let v8 = stream_handshake("/api/twilio/stream", Some(SDK_WSS_SIG), "")
        .replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let r = roundtrip(&server, v8.as_bytes()).await;
    assert_eq!(r.status, 426);
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
}

#[tokio::test]
async fn bad_frames_are_counted_and_never_drop_a_live_call() {
    let server = Server::start().await;
    let good = "CA00000000000000000000000000000701";
    let noisy = "CA00000000000000000000000000001e01";
    let mut a = open_stream(&server, good).await;
    let mut b = open_stream(&server, noisy).await;
    eventually("both live", || server.app.calls.live_count() == 2).await;

    // Caller B sends garbage of every kind.
    b.send(Message::binary(vec![0u8; 160])).await.unwrap();
    b.send(Message::text("not json")).await.unwrap();
    b.send(Message::text(r#"{"event":"media","media":{}}"#))
        .await
        .unwrap();
    b.send(Message::text(start_message(noisy))).await.unwrap(); // a second start
    b.send(Message::text(
        r#"{"event":"media","media":{"chunk":"x","timestamp":"y","payload":"!!"}}"#,
    ))
    .await
    .unwrap();
    // Both calls are still live and caller A streams on.
    for chunk in 1..=10 {
        a.send(Message::text(media_message(chunk))).await.unwrap();
        b.send(Message::text(media_message(chunk))).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(server.app.calls.is_live(good));
    assert!(server.app.calls.is_live(noisy));

    // A frame over the message limit ends only the sender's stream.
    let mut raw = server.connect().await;
    let path = answer_call(&server, "CA00000000000000000000000000000b1f").await;
    let mut bytes = stream_handshake(&path, Some(&stream_signature(&path)), "").into_bytes();
    bytes.extend(client_text_frame(CONNECTED));
    bytes.extend(client_frame(0x1, &vec![b'a'; 70 * 1024]));
    let _ = raw.write_all(&bytes).await;
    assert!(closes_within(&mut raw, Duration::from_secs(5)).await);
    a.send(Message::text(media_message(11))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(server.app.calls.is_live(good));
}
