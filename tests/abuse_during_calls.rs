//! Hostile HTTP traffic while calls are live (issue 6, point 5): malformed, oversized,
//! smuggling-shaped, slow and flooding requests hit the same server that carries 100 calls. Every
//! abuse gets its proper answer, and every call's audio comes back complete and unchanged.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_agent::AgentBehaviour;
use common::fake_twilio::TwilioCall;
use common::*;
use tokio::io::AsyncWriteExt;

const CALLS: usize = 100;
/// Seconds of audio each call sends (paced in real time) and expects back from the echo agent.
const CALL_SECONDS: usize = 3;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) % 0xF0)
        .collect()
}

/// One abuse request on its own connection; returns the status the server answered.
async fn abuse(server: &Server, raw: Vec<u8>) -> u16 {
    let mut s = server.connect().await;
    let _ = s.write_all(&raw).await;
    let mut buf = Vec::new();
    read_response(&mut s, &mut buf, false).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_calls_survive_abuse_of_the_http_side() {
    let mut config = test_config(&[("MAX_CALLS", "1000")]);
    config.max_connections = 1000;
    config.request_timeout = Duration::from_millis(800);
    let server = Arc::new(
        Server::start_full(
            config,
            AgentBehaviour {
                echo: true,
                ..AgentBehaviour::default()
            },
        )
        .await,
    );

    // The calls: each sends its own pattern in 20 ms frames on an absolute clock.
    let mut calls = Vec::new();
    for i in 0..CALLS {
        let server = server.clone();
        calls.push(tokio::spawn(async move {
            let sid = format!("CA000000000000000000000000000{i:05}");
            let mut caller = TwilioCall::dial(&server, &sid).await;
            let mine = pattern(8000 * CALL_SECONDS, i as u8);
            let t0 = Instant::now();
            for (k, frame) in mine.chunks(160).enumerate() {
                tokio::time::sleep_until((t0 + Duration::from_millis(20 * k as u64)).into()).await;
                caller.send_audio(frame);
            }
            let back = caller.audio(mine.len(), Duration::from_secs(30)).await;
            caller.hang_up();
            let _ = caller.closed(Duration::from_secs(30)).await;
            (i, back == mine[..])
        }));
    }

    // Meanwhile, abuse.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut statuses = Vec::new();
    let big_header = format!(
        "GET /health HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"\x16\x03\x01\x02\x00\x01\x00garbage".to_vec(), 400),
        (big_header.into_bytes(), 431),
        (format!("GET /{} HTTP/1.1\r\n\r\n", "x".repeat(5000)).into_bytes(), 414),
        (b"POST /api/twilio/voice HTTP/1.1\r\nContent-Length: 999999\r\n\r\n".to_vec(), 413),
        (
            b"POST /api/twilio/voice HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            b"POST /api/twilio/voice HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde".to_vec(),
            400,
        ),
        (b"POST /api/twilio/voice HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec(), 403),
        (stream_handshake("/api/twilio/stream", None, "").into_bytes(), 403),
        (b"GET /api/twilio/stream HTTP/1.1\r\n\r\n".to_vec(), 426),
        (b"DELETE /health HTTP/1.1\r\n\r\n".to_vec(), 405),
    ];
    for round in 0..5 {
        for (raw, want) in &cases {
            let got = abuse(&server, raw.clone()).await;
            assert_eq!(
                got,
                *want,
                "round {round}: {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(60)])
            );
            statuses.push(got);
        }
    }
    // Slowloris: 50 connections dripping a head byte by byte get 408 and are closed.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let server = server.clone();
        slow.push(tokio::spawn(async move {
            let mut s = server.connect().await;
            for b in b"GET /health HTTP/1.1\r\nX-Slow: yes" {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            let mut buf = Vec::new();
            read_response(&mut s, &mut buf, false).await.status
        }));
    }
    // A flood of idle connections and requests in parallel.
    let mut flood = Vec::new();
    for _ in 0..200 {
        let server = server.clone();
        flood.push(tokio::spawn(async move {
            roundtrip(&server, b"GET /health HTTP/1.1\r\n\r\n")
                .await
                .status
        }));
    }
    for s in slow {
        assert_eq!(s.await.unwrap(), 408);
    }
    for f in flood {
        assert_eq!(f.await.unwrap(), 200);
    }

    // Every call heard exactly its own audio, complete.
    let mut ok = 0;
    for c in calls {
        let (i, same) = c.await.unwrap();
        assert!(same, "call {i} lost or changed audio under abuse");
        ok += 1;
    }
    assert_eq!(ok, CALLS);
    eventually("no live calls", || server.app.calls.live_count() == 0).await;
    let r = roundtrip(&server, b"GET /health HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.status, 200);
}
