//! Graceful shutdown: stop accepting, answer in-flight requests, let live calls run until the
//! drain deadline, then close them cleanly.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn drains_live_calls_until_the_deadline_then_closes_them() {
    let mut server = Server::start_with(|c| {
        c.drain = Duration::from_millis(1500);
        c.request_timeout = Duration::from_secs(5);
    })
    .await;
    let sid = "CA00000000000000000000000000000d01";
    let mut ws = open_stream(&server, sid).await;
    eventually("live", || server.app.calls.is_live(sid)).await;

    // A request in flight when the signal arrives is still answered.
    let mut inflight = server.connect().await;
    inflight
        .write_all(b"GET /health HTTP/1.1\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let signalled = Instant::now();
    server.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    inflight.write_all(b"Host: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut inflight, &mut buf, false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));

    // While the call is live, new connections are still served: the call's own requests (the
    // agent's tools, Twilio's callbacks) come on them. Not ready for new calls, and a new
    // call's webhook gets the fallback, not a stream.
    let ready = roundtrip(&server, b"GET /health/ready HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(ready.status, 503);
    let late = call_webhook(
        &server,
        "/api/twilio/voice",
        "CA00000000000000000000000000000d02",
    )
    .await;
    assert_eq!(late.status, 200);
    assert!(!late.text().contains("<Stream"), "{}", late.text());
    assert!(
        late.text().contains("<Dial") || late.text().contains("<Say"),
        "{}",
        late.text()
    );
    assert!(
        server
            .app
            .calls
            .outcome("CA00000000000000000000000000000d02")
            .is_none()
    );

    // The live call keeps streaming during the drain.
    for chunk in 1..=20 {
        ws.send(Message::text(media_message(chunk))).await.unwrap();
    }
    assert!(server.app.calls.is_live(sid));

    // At the deadline the call is closed with 1001 (going away).
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    assert!(
        signalled.elapsed() >= Duration::from_millis(1400),
        "closed before the deadline"
    );
    // Twilio then asks the <Connect action> URL: still answered, with what the caller hears
    // next (the fallback for a call the shutdown closed), not a refused connection.
    let ended = call_webhook(&server, "/api/twilio/stream-ended", sid).await;
    assert_eq!(ended.status, 200, "{}", ended.text());
    assert!(!ended.text().contains("<Stream"), "{}", ended.text());
    let result = tokio::time::timeout(Duration::from_secs(10), &mut server.task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    assert_eq!(
        server.app.calls.outcome(sid),
        Some(ignis::calls::Outcome::ServerShutdown)
    );
    // Once the calls are over, no new connections are accepted.
    let refused = tokio::net::TcpStream::connect(server.addr).await;
    assert!(refused.is_err(), "listener should be closed");
}

#[tokio::test]
async fn shutdown_without_calls_finishes_at_once() {
    let mut server = Server::start().await; // drain deadline 5 s
    let started = Instant::now();
    server.shutdown();
    let result = tokio::time::timeout(Duration::from_secs(10), &mut server.task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited for a drain with nothing to drain"
    );
}

/// A call that ended just before the signal still has Twilio's `stream-ended` request to
/// come: it is answered, not refused by a listener already closed.
#[tokio::test]
async fn a_call_that_just_ended_still_gets_its_stream_ended_answer() {
    let mut server = Server::start().await; // drain deadline 5 s
    let sid = "CA00000000000000000000000000000d03";
    let mut ws = open_stream(&server, sid).await;
    eventually("live", || server.app.calls.is_live(sid)).await;
    ws.close(None).await.unwrap();
    eventually("ended", || server.app.calls.outcome(sid).is_some()).await;
    server.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ended = call_webhook(&server, "/api/twilio/stream-ended", sid).await;
    assert_eq!(ended.status, 200, "{}", ended.text());
    let result = tokio::time::timeout(Duration::from_secs(10), &mut server.task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
}
