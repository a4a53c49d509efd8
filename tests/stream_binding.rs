//! Issue 12, points 1 and 2, attacked over real loopback sockets: every Media Stream is bound to
//! its signed voice webhook by a single-use nonce in the stream URL (docs/twilio.md §8), and a
//! replayed webhook starts nothing. Each attack is refused (or its
//! claim ignored) with no agent conversation, no tool token and nothing in the store.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::fake_twilio::{TwilioCall, start_json};
use common::scratch::TempDir;
use common::*;
use futures_util::StreamExt;
use ignis::calls::{BINDING_TTL, Bound, NONCE_BYTES, Nonce};
use ignis::practice::demo::DEMO_CALLER_NUMBER;
use ignis::twilio::signature;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(10);
/// Long enough for a wrongly started agent connection to show up at the stand-in.
const QUIET: Duration = Duration::from_millis(400);

/// A server with the practice tools, and its database file in the scratch directory (first, so
/// that a `let (_dir, server, db)` drops it after the server).
async fn practice_server(name: &str, extra: &[(&str, &str)]) -> (TempDir, Server, PathBuf) {
    let dir = TempDir::new(&format!("bind-{name}"));
    let db = dir.join("ignis.db");
    let server = practice_server_on(&db, extra).await;
    (dir, server, db)
}

/// A server with the practice tools on an existing (or new) database file.
async fn practice_server_on(db: &std::path::Path, extra: &[(&str, &str)]) -> Server {
    Server::start_with_practice_db(db, "tools-secret-0123456789", extra).await
}

/// The store's call rows: (call_sid, token_hash, caller_number, started_at, ended_at).
type CallRow = (String, Vec<u8>, String, i64, Option<i64>);

fn call_rows(db: &PathBuf) -> Vec<CallRow> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT call_sid, token_hash, caller_number, started_at, ended_at FROM call
             ORDER BY call_sid",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn refusals(server: &Server, reason: &str) -> u64 {
    let text = server.app.metrics.render(0);
    let prefix = format!("ignis_stream_refusals_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in the metrics"))
}

/// The signed handshake for `path`, as Twilio would sign it (a valid signature).
fn signed_handshake(path: &str) -> Vec<u8> {
    stream_handshake(path, Some(&stream_signature(path)), "").into_bytes()
}

/// Nothing reached the agent, and nothing was registered in the store.
async fn no_conversation_no_token_no_row(server: &Server, db: &PathBuf) {
    assert!(
        server.agent.try_next_conn(QUIET).await.is_none(),
        "the stand-in agent saw a conversation"
    );
    assert!(call_rows(db).is_empty(), "the store has a call row");
    assert_eq!(server.app.calls.live_count(), 0);
}

/// Opens the signed stream at `path` and closes it after the 101, before `start`.
async fn open_then_drop_before_start(server: &Server, path: &str) {
    let mut s = server.connect().await;
    tokio::io::AsyncWriteExt::write_all(&mut s, &signed_handshake(path))
        .await
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut s, &mut buf, true).await.status, 101);
}

/// Waits for ignis to close a stream it accepted at the handshake but refused at `start`.
async fn refused_after_start(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) {
    let end = tokio::time::timeout(T, async {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Close(_)) {
                return;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the refused stream was not closed");
}

#[tokio::test]
async fn a_signed_stream_without_a_voice_webhook_is_refused_at_the_handshake() {
    let (_dir, server, db) = practice_server("no-webhook", &[]).await;
    // The old fixed URL with its (valid) signature: the leaked-signature attack of issue 12.
    let r = roundtrip(&server, &signed_handshake("/api/twilio/stream")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(refusals(&server, "no_nonce"), 1);
    // A nonce no webhook issued, validly signed: refused too.
    let made_up = format!("/api/twilio/stream/{}", "ab".repeat(NONCE_BYTES));
    let r = roundtrip(&server, &signed_handshake(&made_up)).await;
    assert_eq!(r.status, 403);
    assert_eq!(refusals(&server, "unknown_nonce"), 1);
    let r = roundtrip(&server, &signed_handshake("/api/twilio/stream/not-a-nonce")).await;
    assert_eq!(r.status, 403);
    assert_eq!(refusals(&server, "malformed_nonce"), 1);
    no_conversation_no_token_no_row(&server, &db).await;
}

#[tokio::test]
async fn a_used_nonce_is_refused_at_the_handshake() {
    let (_dir, server, db) = practice_server("used", &[]).await;
    let sid = "CA0000000000000000000000000000b001";
    let path = bind_without_preconnect(&server, sid);
    let start = start_json(sid).to_string();
    let mut caller = TwilioCall::over(open_stream_at(&server, &path, &start).await, sid);
    let mut agent = server.agent.next_conn(T).await;
    eventually("the call is live", || server.app.calls.is_live(sid)).await;
    // The store's commit is not awaited by the agent connect (practice::start_call).
    eventually("registered", || call_rows(&db).len() == 1).await;
    let rows = call_rows(&db);

    // The same handshake again (signature and all), while the call runs and after it ended.
    let r = roundtrip(&server, &signed_handshake(&path)).await;
    assert_eq!(r.status, 403);
    caller.hang_up();
    let _ = caller.closed(T).await;
    assert!(agent.closed_within(T).await);
    eventually("ended", || server.app.calls.outcome(sid).is_some()).await;
    let r = roundtrip(&server, &signed_handshake(&path)).await;
    assert_eq!(r.status, 403);
    assert_eq!(refusals(&server, "used_nonce"), 2);
    assert!(
        server.agent.try_next_conn(QUIET).await.is_none(),
        "one conversation only"
    );
    let after = call_rows(&db);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].1, rows[0].1, "the token is unchanged");
}

#[tokio::test]
async fn another_calls_nonce_is_refused_before_any_agent() {
    let (_dir, server, db) = practice_server("other-call", &[]).await;
    let victim = "CA0000000000000000000000000000b002";
    let attacker = "CA0000000000000000000000000000b003";
    // The victim's call was answered; a stream on its nonce claims to be another call.
    let path = bind_without_preconnect(&server, victim);
    let mut ws = open_stream_at(&server, &path, &start_json(attacker).to_string()).await;
    refused_after_start(&mut ws).await;
    assert_eq!(refusals(&server, "call_sid_mismatch"), 1);
    no_conversation_no_token_no_row(&server, &db).await;
    // The nonce is spent: no second try with the right CallSid either.
    let r = roundtrip(&server, &signed_handshake(&path)).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn an_expired_nonce_is_refused_at_the_handshake() {
    let (_dir, server, db) = practice_server("expired", &[]).await;
    let sid = "CA0000000000000000000000000000b004";
    // The voice webhook was answered BINDING_TTL ago (no pre-connect: nothing else runs).
    let call = ignis::twilio::webhook::incoming_call(&call_params(sid)).unwrap();
    let nonce = Nonce::from_entropy([0x5a; NONCE_BYTES]);
    let then = Instant::now() - BINDING_TTL;
    assert_eq!(
        server.app.calls.bind(&call, nonce, usize::MAX, then),
        Bound::New(nonce)
    );
    let path = format!("/api/twilio/stream/{}", nonce.to_hex());
    let r = roundtrip(&server, &signed_handshake(&path)).await;
    assert_eq!(r.status, 403);
    assert_eq!(refusals(&server, "expired_nonce"), 1);
    no_conversation_no_token_no_row(&server, &db).await;
}

#[tokio::test]
async fn a_caller_number_claimed_in_custom_parameters_is_ignored() {
    let (_dir, server, db) = practice_server("claimed-number", &[]).await;
    let sid = "CA0000000000000000000000000000b005";
    // The webhook says +4915112345123; the unsigned start claims the demo patient's number.
    let path = bind_without_preconnect(&server, sid);
    let mut start = start_json(sid);
    start["start"]["customParameters"]["caller"] = DEMO_CALLER_NUMBER.into();
    start["start"]["customParameters"]["called"] = "+4930000000".into();
    let mut caller = TwilioCall::over(
        open_stream_at(&server, &path, &start.to_string()).await,
        sid,
    );
    let agent = server.agent.next_conn(T).await;
    let vars = &agent.initiation["dynamic_variables"];
    assert_eq!(
        vars["caller_number"], "+4915112345123",
        "the webhook's number"
    );
    assert_eq!(vars["called_number"], "+16175551881");
    eventually("registered", || !call_rows(&db).is_empty()).await;
    let rows = call_rows(&db);
    assert_eq!(
        rows[0].2, "+4915112345123",
        "the store has the webhook's number"
    );
    caller.hang_up();
    let _ = caller.closed(T).await;
}

/// The stream socket reads 1 KiB at a time (`WS_READ_BUFFER_BYTES`, sized for `media`): a
/// `start` several times that size (long `<Parameter>` values) still arrives whole.
#[tokio::test]
async fn a_start_larger_than_the_read_buffer_is_read_whole() {
    let (_dir, server, _db) = practice_server("large-start", &[]).await;
    let sid = "CA0000000000000000000000000000b00a";
    let path = bind_without_preconnect(&server, sid);
    let mut start = start_json(sid);
    start["start"]["customParameters"]["note"] = "x".repeat(6000).into();
    let text = start.to_string();
    assert!(text.len() > 6 * 1024);
    let mut caller = TwilioCall::over(open_stream_at(&server, &path, &text).await, sid);
    let agent = server.agent.next_conn(T).await;
    assert_eq!(
        agent.initiation["dynamic_variables"]["caller_number"],
        "+4915112345123"
    );
    caller.hang_up();
    let _ = caller.closed(T).await;
}

#[tokio::test]
async fn a_replayed_voice_webhook_starts_no_second_conversation() {
    let (_dir, server, db) = practice_server("replay", &[("PRECONNECT_TIMEOUT_MS", "300")]).await;
    let sid = "CA0000000000000000000000000000b006";
    let webhook = signed_post("/api/twilio/voice", &call_params(sid), TOKEN);
    let first = roundtrip(&server, &webhook).await;
    assert_eq!(first.status, 200);
    let mut preconnect = server.agent.next_conn(T).await;
    // The pre-connect times out (no stream came) ...
    assert!(preconnect.closed_within(T).await);
    eventually("registered", || call_rows(&db).len() == 1).await;
    let rows = call_rows(&db);
    // ... and the same signed request, byte for byte, comes again: the same TwiML (a Twilio
    // retry still reaches its stream), no second pre-connect, the row unchanged.
    let replay = roundtrip(&server, &webhook).await;
    assert_eq!(replay.status, 200);
    assert_eq!(
        stream_path_of(&replay.text()),
        stream_path_of(&first.text())
    );
    assert!(
        server.agent.try_next_conn(QUIET).await.is_none(),
        "a second conversation"
    );
    assert_eq!(call_rows(&db), rows);

    // Once the stream has used the nonce and the call ended, a replay gets the fallback.
    let start = start_json(sid).to_string();
    let path = stream_path_of(&first.text());
    let mut caller = TwilioCall::over(open_stream_at(&server, &path, &start).await, sid);
    let mut agent = server.agent.next_conn(T).await;
    caller.hang_up();
    let _ = caller.closed(T).await;
    assert!(agent.closed_within(T).await);
    eventually("ended", || server.app.calls.outcome(sid).is_some()).await;
    eventually("end stored", || call_rows(&db)[0].4.is_some()).await;
    let ended = call_rows(&db);
    let late = roundtrip(&server, &webhook).await;
    assert_eq!(late.status, 200);
    assert!(!late.text().contains("<Stream"), "{}", late.text());
    assert!(
        server.agent.try_next_conn(QUIET).await.is_none(),
        "a second conversation"
    );
    assert_eq!(call_rows(&db), ended, "the row is never reset");
    let replays = server.app.metrics.render(0);
    assert!(
        replays.contains("ignis_webhook_replays_total 2"),
        "{replays}"
    );
}

#[tokio::test]
async fn a_webhook_replayed_after_its_call_was_forgotten_holds_no_agent() {
    // The registry forgets ended calls after ENDED_RETENTION (and on a restart); the store does
    // not. A replay then looks new to the front end, but the store refuses the row, and the
    // pre-connect drops its agent at once instead of holding it for PRECONNECT_TIMEOUT_MS.
    let (_dir, first, db) = practice_server("forgotten", &[]).await;
    let sid = "CA0000000000000000000000000000b00f";
    let webhook = signed_post("/api/twilio/voice", &call_params(sid), TOKEN);
    assert_eq!(roundtrip(&first, &webhook).await.status, 200);
    let _preconnect = first.agent.next_conn(T).await;
    eventually("registered", || call_rows(&db).len() == 1).await;
    let rows = call_rows(&db);

    let second = practice_server_on(&db, &[("PRECONNECT_TIMEOUT_MS", "60000")]).await;
    assert_eq!(roundtrip(&second, &webhook).await.status, 200);
    let started = Instant::now();
    if let Some(mut agent) = second.agent.try_next_conn(QUIET).await {
        assert!(
            agent.closed_within(T).await,
            "the replay's agent was held open"
        );
        assert!(started.elapsed() < T, "held until the pre-connect timeout");
    }
    assert_eq!(call_rows(&db), rows, "the row is never reset");
}

#[tokio::test]
async fn pending_pre_connects_count_against_max_calls() {
    let server = Server::start_config(test_config(&[("MAX_CALLS", "1")])).await;
    let one = answer_call(&server, "CA0000000000000000000000000000b007").await;
    let _preconnect = server.agent.next_conn(T).await;
    // No stream yet, but the answered call holds the only slot.
    let r = roundtrip(
        &server,
        &signed_post(
            "/api/twilio/voice",
            &call_params("CA0000000000000000000000000000b008"),
            TOKEN,
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!r.text().contains("<Stream"), "{}", r.text());
    assert!(server.agent.try_next_conn(QUIET).await.is_none());
    assert!(one.starts_with("/api/twilio/stream/"));
}

#[tokio::test]
async fn bad_call_and_account_sids_are_refused() {
    let account = "AC11111111111111111111111111111111";
    let (_dir, server, db) = practice_server("sids", &[("TWILIO_ACCOUNT_SID", account)]).await;
    let sid = "CA0000000000000000000000000000b009";
    let with = |name: &str, value: &str| {
        let mut p = call_params(sid);
        for (k, v) in p.iter_mut() {
            if k == name {
                *v = value.into();
            }
        }
        signed_post("/api/twilio/voice", &p, TOKEN)
    };
    for (name, value, status) in [
        ("CallSid", "CA1", 400),
        ("CallSid", "CA0000000000000000000000000000b00z", 400),
        ("AccountSid", "AC1", 400),
        ("From", "+4915112345123FromCityBERLIN", 400),
        ("AccountSid", "AC22222222222222222222222222222222", 403),
    ] {
        let r = roundtrip(&server, &with(name, value)).await;
        assert_eq!(r.status, status, "{name}={value}: {}", r.text());
    }
    no_conversation_no_token_no_row(&server, &db).await;

    // The start message's AccountSid must be the webhook's (and the configured one).
    let path = bind_without_preconnect(&server, sid);
    let mut start = start_json(sid);
    start["start"]["accountSid"] = "AC22222222222222222222222222222222".into();
    let mut ws = open_stream_at(&server, &path, &start.to_string()).await;
    refused_after_start(&mut ws).await;
    assert_eq!(refusals(&server, "account_mismatch"), 1);
    no_conversation_no_token_no_row(&server, &db).await;
    // The handshake signature alone never reaches the claim for a wrong signature.
    let wrong = signature::sign(
        "another-token",
        &format!("wss://ignis.example.com{path}"),
        &[],
    );
    let r = roundtrip(
        &server,
        stream_handshake(&path, Some(&wrong), "").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn a_call_that_ends_before_its_stream_lets_its_agent_go_at_once() {
    // The default PRECONNECT_TIMEOUT_MS (30 s): anything released within seconds was let go.
    let server = Server::start().await;
    let released = Duration::from_secs(5);

    // The caller hangs up while the stream is being set up: Twilio's status callback.
    let sid = "CA0000000000000000000000000000b101";
    answer_call(&server, sid).await;
    let mut agent = server.agent.next_conn(T).await;
    let mut params = call_params(sid);
    params.retain(|(k, _)| k != "CallStatus");
    params.push(("CallStatus".into(), "completed".into()));
    let r = roundtrip(&server, &signed_post("/api/twilio/status", &params, TOKEN)).await;
    assert_eq!(r.status, 204);
    assert!(
        agent.closed_within(released).await,
        "the agent outlived the call"
    );

    // The stream opens (its nonce spent) and closes before `start`: no stream can adopt it now.
    let sid = "CA0000000000000000000000000000b102";
    let path = answer_call(&server, sid).await;
    let mut agent = server.agent.next_conn(T).await;
    open_then_drop_before_start(&server, &path).await;
    assert!(
        agent.closed_within(released).await,
        "the agent outlived the stream"
    );
    eventually("ended", || server.app.calls.outcome(sid).is_some()).await;
}

/// The call row's `ended_at`, once set (bounded wait).
async fn ended_soon(db: &PathBuf, sid: &str) {
    let ended = || call_rows(db).iter().any(|r| r.0 == sid && r.4.is_some());
    eventually("the call row ended", ended).await;
}

/// A stream that fails before it runs (lost before `start`, or refused at it) ends the record
/// the webhook's pre-connect made, and so its tool token (after the usual grace), instead of
/// leaving it live until MAX_CALL_SECS (docs/twilio.md §8.2); the agent goes at once.
#[tokio::test]
async fn a_stream_that_never_ran_ends_the_record_its_webhook_made() {
    let (_dir, server, db) = practice_server("unstreamed", &[]).await;
    let released = Duration::from_secs(5);

    // Lost: the stream's socket closes after the 101, before `start`.
    let sid = "CA0000000000000000000000000000c001";
    let path = answer_call(&server, sid).await;
    let mut agent = server.agent.next_conn(T).await;
    eventually("registered", || call_rows(&db).len() == 1).await;
    open_then_drop_before_start(&server, &path).await;
    assert!(agent.closed_within(released).await);
    ended_soon(&db, sid).await;

    // Refused: `start` names another account than the webhook did.
    let sid = "CA0000000000000000000000000000c002";
    let path = answer_call(&server, sid).await;
    let mut agent = server.agent.next_conn(T).await;
    eventually("registered", || call_rows(&db).len() == 2).await;
    let mut start = start_json(sid);
    start["start"]["accountSid"] = "AC22222222222222222222222222222222".into();
    let mut ws = open_stream_at(&server, &path, &start.to_string()).await;
    refused_after_start(&mut ws).await;
    assert_eq!(refusals(&server, "account_mismatch"), 1);
    assert!(agent.closed_within(released).await);
    ended_soon(&db, sid).await;
}
