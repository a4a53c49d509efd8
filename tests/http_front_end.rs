//! The hand-rolled HTTP/1.1 server over real loopback sockets: routes, limits, framing,
//! keep-alive, pipelining, timeouts and the connection cap.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

fn assert_date_and_length(r: &Resp) {
    assert!(
        r.header("date").is_some_and(|d| d.ends_with(" GMT")),
        "Date missing"
    );
    if r.status != 204 && r.status >= 200 {
        assert!(
            r.header("content-length").is_some(),
            "Content-Length missing"
        );
    }
}

/// After abuse the server still answers normally.
async fn still_serving(server: &Server) {
    let r = roundtrip(server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn health_get_and_head() {
    let server = Server::start().await;
    let r = roundtrip(&server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_date_and_length(&r);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["status"], "ok");
    let ts = v["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), 20, "RFC 3339 UTC: {ts}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T');

    let h = roundtrip(&server, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    assert_eq!(h.header("content-length"), r.header("content-length"));
}

#[tokio::test]
async fn unknown_path_and_wrong_method() {
    let server = Server::start().await;
    let r = roundtrip(&server, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(r.status, 404);
    assert_date_and_length(&r);
    for (req, allow) in [
        (
            &b"POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n"[..],
            "GET, HEAD",
        ),
        (
            b"DELETE /api/twilio/voice HTTP/1.1\r\n\r\n",
            "GET, HEAD, POST",
        ),
        (b"GET /api/twilio/status HTTP/1.1\r\n\r\n", "POST"),
        (b"GET /api/twilio/stream-ended HTTP/1.1\r\n\r\n", "POST"),
        (b"PUT /api/twilio/stream HTTP/1.1\r\n\r\n", "GET, HEAD"),
    ] {
        let r = roundtrip(&server, req).await;
        assert_eq!(r.status, 405, "{}", String::from_utf8_lossy(req));
        assert_eq!(r.header("allow"), Some(allow));
        assert_date_and_length(&r);
    }
}

#[tokio::test]
async fn keep_alive_and_pipelining_answer_in_order() {
    let server = Server::start().await;
    let mut s = server.connect().await;
    // Three pipelined requests in one write, then a fourth on the same connection later.
    s.write_all(
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut s, &mut buf, false).await.status, 200);
    assert_eq!(read_response(&mut s, &mut buf, false).await.status, 404);
    let head = read_response(&mut s, &mut buf, true).await;
    assert_eq!(head.status, 200);
    assert!(head.header("connection").is_none());
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s, &mut buf, false).await.status, 200);
}

#[tokio::test]
async fn connection_close_and_http10_are_honoured() {
    let server = Server::start().await;
    for req in [
        &b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"GET /health HTTP/1.0\r\n\r\n",
    ] {
        let mut s = server.connect().await;
        s.write_all(req).await.unwrap();
        let mut buf = Vec::new();
        let r = read_response(&mut s, &mut buf, false).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(closes_within(&mut s, Duration::from_secs(2)).await);
    }
    // HTTP/1.0 with keep-alive stays open for a second request.
    let mut s = server.connect().await;
    let mut buf = Vec::new();
    for _ in 0..2 {
        s.write_all(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut s, &mut buf, false).await.status, 200);
    }
}

#[tokio::test]
async fn slowloris_gets_408_and_idle_keepalive_closes() {
    let server = Server::start().await; // request timeout 500 ms, idle 800 ms
    let mut s = server.connect().await;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Trickle a header byte at a time; the head deadline still applies.
    for b in b"X-Slow: aaaa" {
        tokio::time::sleep(Duration::from_millis(60)).await;
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
    }
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).await;
    assert_eq!(r.status, 408);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closes_within(&mut s, Duration::from_secs(3)).await);

    // A connection that never sends anything also gets 408.
    let mut silent = server.connect().await;
    let mut buf = Vec::new();
    assert_eq!(
        read_response(&mut silent, &mut buf, false).await.status,
        408
    );

    // The first request is due 500 ms after the accept, not after its first byte: a client
    // that starts just before then and trickles on gets its 408 at 500 ms, not at ~900.
    let mut late = server.connect().await;
    let connected = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut answer = Vec::new();
    for b in b"GET /health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if late.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        let mut got = [0u8; 256];
        match late.try_read(&mut got) {
            Ok(n) => {
                answer.extend_from_slice(&got[..n]);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    let waited = connected.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(waited < Duration::from_millis(800), "408 after {waited:?}");

    // An idle keep-alive connection is closed without a response after the idle timeout.
    let mut idle = server.connect().await;
    idle.write_all(b"GET /health HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut idle, &mut buf, false).await.status, 200);
    let started = std::time::Instant::now();
    assert!(closes_within(&mut idle, Duration::from_secs(5)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "closed too early"
    );
    still_serving(&server).await;
}

#[tokio::test]
async fn size_limits_answer_their_status_and_server_keeps_serving() {
    let server = Server::start().await;
    let cases: Vec<(Vec<u8>, u16)> = vec![
        // Head over 16 KiB.
        (
            format!("GET /health HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(17 * 1024)).into_bytes(),
            431,
        ),
        // More than 64 header fields.
        (
            format!(
                "GET /health HTTP/1.1\r\n{}\r\n",
                (0..70).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()
            )
            .into_bytes(),
            431,
        ),
        // Request-target over 4 KiB.
        (
            format!("GET /health?{} HTTP/1.1\r\n\r\n", "q".repeat(5000)).into_bytes(),
            414,
        ),
        // More empty lines before the request line than RFC 9112 §2.2 asks to ignore.
        (
            format!("{}GET /health HTTP/1.1\r\n\r\n", "\r\n".repeat(200)).into_bytes(),
            400,
        ),
        // Body over 64 KiB (declared).
        (
            b"POST /api/twilio/voice HTTP/1.1\r\nContent-Length: 70000\r\n\r\n".to_vec(),
            413,
        ),
        // Body over 64 KiB (chunked).
        (
            {
                let mut v = b"POST /api/twilio/voice HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for _ in 0..3 {
                    v.extend_from_slice(b"8000\r\n");
                    v.extend(std::iter::repeat_n(b'a', 0x8000));
                    v.extend_from_slice(b"\r\n");
                }
                v
            },
            413,
        ),
        // Smuggling shapes.
        (
            b"POST /api/twilio/voice HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            b"POST /api/twilio/voice HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef".to_vec(),
            400,
        ),
        (
            b"POST /api/twilio/voice HTTP/1.1\r\nContent-Length: -5\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"POST /api/twilio/voice HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"POST /api/twilio/voice HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(),
            501,
        ),
        (
            b"POST /api/twilio/voice HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        // A malformed chunk.
        (
            b"POST /api/twilio/voice HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            400,
        ),
        // Not HTTP at all.
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), 400),
        (b"GET /health HTTP/1.1\r\nExpect: teapot\r\n\r\n".to_vec(), 417),
    ];
    for (raw, status) in cases {
        let mut s = server.connect().await;
        // The server may answer and close before reading every byte; ignore write errors.
        let _ = s.write_all(&raw).await;
        let mut buf = Vec::new();
        let r = read_response(&mut s, &mut buf, false).await;
        assert_eq!(
            r.status,
            status,
            "for {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(80)])
        );
        assert_eq!(r.header("connection"), Some("close"));
        assert_date_and_length(&r);
        assert!(closes_within(&mut s, Duration::from_secs(3)).await);
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn chunked_bodies_are_supported() {
    let server = Server::start().await;
    let params = call_params("CA00000000000000000000000000000c01");
    let signed = String::from_utf8(signed_post("/api/twilio/voice", &params, TOKEN)).unwrap();
    let (head, body) = signed.split_once("\r\n\r\n").unwrap();
    let head = head
        .lines()
        .filter(|l| !l.starts_with("Content-Length"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let (a, b) = body.split_at(body.len() / 2);
    let raw = format!(
        "{head}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\nX-Trailer: t\r\n\r\n",
        a.len(),
        b.len()
    );
    let mut s = server.connect().await;
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("<Connect"));
    // The connection stays usable after a chunked request.
    s.write_all(b"GET /health HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut s, &mut buf, false).await.status, 200);
}

#[tokio::test]
async fn expect_100_continue() {
    let server = Server::start().await;
    let params = call_params("CA00000000000000000000000000000e01");
    let signed = String::from_utf8(signed_post("/api/twilio/voice", &params, TOKEN)).unwrap();
    let (head, body) = signed.split_once("\r\n\r\n").unwrap();
    let mut s = server.connect().await;
    s.write_all(format!("{head}\r\nExpect: 100-continue\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let cont = read_response(&mut s, &mut buf, true).await;
    assert_eq!(cont.status, 100);
    s.write_all(body.as_bytes()).await.unwrap();
    let r = read_response(&mut s, &mut buf, false).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn connection_cap_answers_503_then_recovers() {
    let server = Server::start_with(|c| {
        c.max_connections = 2;
        c.request_timeout = Duration::from_secs(5);
    })
    .await;
    let a = server.connect().await;
    let b = server.connect().await;
    // Give the accept loop time to take both permits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = server.connect().await;
    let mut buf = Vec::new();
    let r = read_response(&mut c, &mut buf, false).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(closes_within(&mut c, Duration::from_secs(2)).await);
    drop(a);
    drop(b);
    tokio::time::sleep(Duration::from_millis(100)).await;
    still_serving(&server).await;
}
