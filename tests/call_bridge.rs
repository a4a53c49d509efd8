//! Whole calls over real loopback sockets: a Twilio stand-in dials ignis, ignis bridges to an
//! ElevenLabs stand-in, and both sides check the audio they get.

mod common;
mod practice_support;

use std::time::Duration;

use common::fake_agent::{AgentBehaviour, user_audio};
use common::fake_twilio::{Seen, TwilioCall};
use common::signal::*;
use common::*;
use ignis::audio::mulaw;
use ignis::calls::Outcome;
use ignis::driver::sim::twilio_api::TwilioApiServer;
use ignis::practice::calls::{DYNAMIC_VARIABLE_NAMES, NO_CALL_TOKEN};
use ignis::sim::twilio_api::{TwilioApi, Write};
use serde_json::json;

const T: Duration = Duration::from_secs(10);

async fn stream_ended(server: &Server, call_sid: &str) -> String {
    call_webhook(server, "/api/twilio/stream-ended", call_sid)
        .await
        .text()
}

#[tokio::test]
async fn ulaw_call_passes_audio_through_untouched_both_ways() {
    let server = Server::start().await;
    let sid = "CA000000000000000000000000000000e1";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let mut agent = server.agent.next_conn(T).await;

    // The call's facts reach the agent as dynamic variables.
    let vars = &agent.initiation["dynamic_variables"];
    assert_eq!(vars["caller_number"], "+4915112345123");
    assert_eq!(vars["called_number"], "+16175551881");
    assert_eq!(vars["call_sid"], sid);
    // Without a practice, still all eleven (a missing one ends the conversation), with the
    // placeholder token the tools refuse.
    let names = DYNAMIC_VARIABLE_NAMES.iter();
    assert!(names.clone().all(|n| vars[*n].is_string()), "{vars}");
    assert_eq!(vars.as_object().map(|m| m.len()), Some(names.len()));
    assert_eq!(vars["secret__ignis_call"], NO_CALL_TOKEN);

    // Agent → caller: 480 ms of audio arrives byte for byte.
    let greeting = pattern(3840, 3);
    agent.send_audio(1, &greeting);
    let heard = caller.audio(greeting.len(), T).await;
    assert_eq!(heard, greeting);

    // Caller → agent: 50 frames arrive byte for byte, one user_audio_chunk per frame.
    let speech = pattern(8000, 11);
    caller.send_audio(&speech);
    let msgs = agent.recv_audio(8000, T).await;
    assert_eq!(user_audio(&msgs), speech);

    // Ping → pong with the same id.
    agent.send(json!({"type":"ping","ping_event":{"event_id":42,"ping_ms":null}}));
    agent
        .recv_until(T, |m| m == &json!({"type":"pong","event_id":42}))
        .await;

    // The caller hangs up: the agent socket closes and the outcome is recorded.
    caller.hang_up();
    assert!(agent.closed_within(T).await);
    eventually("outcome", || {
        server.app.calls.outcome(sid) == Some(Outcome::CallerHungUp)
    })
    .await;
    assert_eq!(server.app.calls.live_count(), 0);
}

#[tokio::test]
async fn pcm16_call_transcodes_tones_both_ways() {
    let behaviour = AgentBehaviour {
        input_format: "pcm_16000".into(),
        output_format: "pcm_16000".into(),
        ..AgentBehaviour::default()
    };
    let server = Server::start_full(test_config(&[]), behaviour).await;
    let sid = "CA000000000000000000000000000000e2";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let mut agent = server.agent.next_conn(T).await;

    // Caller: 1 s of 1 kHz at -12 dBFS, μ-law 8 kHz.
    let tone = tone_pcm(1000.0, 8000, 1000, 8000.0);
    let ulaw: Vec<u8> = tone.iter().map(|&s| mulaw::encode_sample(s)).collect();
    caller.send_audio(&ulaw);
    let msgs = agent.recv_audio(31_000, T).await;
    let bytes = user_audio(&msgs);
    let pcm: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|p| i16::from_le_bytes([p[0], p[1]]))
        .collect();
    let f = frequency(&pcm, 16_000);
    assert!((990.0..1010.0).contains(&f), "agent heard {f} Hz");
    let ratio_db = 20.0 * (rms(&pcm) / rms(&tone)).log10();
    eprintln!("caller -> agent: 1000 Hz tone arrived at {f:.1} Hz, level {ratio_db:+.3} dB");
    assert!(ratio_db.abs() < 0.5, "level changed by {ratio_db} dB");

    // Agent: 1 s of 440 Hz at 16 kHz, sent in odd-sized bursts.
    let reply = tone_pcm(440.0, 16_000, 1000, 8000.0);
    let reply_bytes: Vec<u8> = reply.iter().flat_map(|s| s.to_le_bytes()).collect();
    // Odd-sized bursts: the PCM byte pairs straddle chunk boundaries.
    for part in reply_bytes.chunks(1001) {
        agent.send_audio(7, part);
    }
    let heard = caller.audio(7_600, T).await;
    let decoded: Vec<i16> = heard.iter().map(|&b| mulaw::decode_sample(b)).collect();
    let f = frequency(&decoded, 8000);
    assert!((435.0..445.0).contains(&f), "caller heard {f} Hz");
    let ratio_db = 20.0 * (rms(&decoded) / rms(&reply)).log10();
    eprintln!("agent -> caller: 440 Hz tone arrived at {f:.1} Hz, level {ratio_db:+.3} dB");
    assert!(ratio_db.abs() < 0.5, "level changed by {ratio_db} dB");
    caller.hang_up();
    assert!(agent.closed_within(T).await);
}

#[tokio::test]
async fn signed_url_connect_and_bad_key_falls_back() {
    let server =
        Server::start_config(test_config(&[("ELEVENLABS_API_KEY", fake_agent_key())])).await;
    let sid = "CA000000000000000000000000000000e3";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let agent = server.agent.next_conn(T).await;
    assert!(
        agent.target.contains("conversation_signature=sig_abc123"),
        "{}",
        agent.target
    );
    assert_eq!(*server.agent.signed_url_requests.lock().unwrap(), 1);
    caller.hang_up();

    let server = Server::start_config(test_config(&[
        ("ELEVENLABS_API_KEY", "sk_wrong"),
        ("FALLBACK_NUMBER", "+493012345678"),
    ]))
    .await;
    let sid = "CA000000000000000000000000000000e4";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let (_, _) = caller.closed(T).await;
    assert_eq!(server.app.calls.outcome(sid), Some(Outcome::AgentFailed));
    assert!(
        stream_ended(&server, sid)
            .await
            .contains("<Dial><Number>+493012345678</Number></Dial>")
    );
}

fn fake_agent_key() -> &'static str {
    common::fake_agent::API_KEY
}

#[tokio::test]
async fn preconnect_is_adopted_and_an_unadopted_one_expires() {
    let server = Server::start_config(test_config(&[("PRECONNECT_TIMEOUT_MS", "800")])).await;
    let sid = "CA000000000000000000000000000000e5";
    // The voice webhook alone opens the agent conversation, before any stream exists.
    let r = call_webhook(&server, "/api/twilio/voice", sid).await;
    assert_eq!(r.status, 200);
    let mut agent = server.agent.next_conn(T).await;
    // The stream arrives and adopts that same conversation: greeting audio flows through it.
    let mut caller = TwilioCall::stream_only(&server, sid).await;
    agent.send_audio(1, &pattern(1600, 5));
    assert_eq!(caller.audio(1600, T).await, pattern(1600, 5));
    assert!(
        server
            .agent
            .try_next_conn(Duration::from_millis(300))
            .await
            .is_none(),
        "no second connect"
    );
    caller.hang_up();
    assert!(agent.closed_within(T).await);

    // A webhook whose stream never comes: the pre-connected socket closes after the timeout.
    let sid2 = "CA000000000000000000000000000000e6";
    let _ = call_webhook(&server, "/api/twilio/voice", sid2).await;
    let mut orphan = server.agent.next_conn(T).await;
    let t0 = std::time::Instant::now();
    assert!(orphan.closed_within(T).await);
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "closed before the timeout"
    );
}

/// A pre-connect holds at most 2 MiB of agent messages until its stream adopts it; the rest
/// are dropped and counted as bad frames, not held without bound.
#[tokio::test]
async fn a_preconnect_holds_a_bounded_number_of_bytes() {
    let server = Server::start().await;
    let sid = "CA000000000000000000000000000000e7";
    let _ = call_webhook(&server, "/api/twilio/voice", sid).await;
    let agent = server.agent.next_conn(T).await;
    // Three events of ~0.9 MiB of base64 each (~84 s of audio): two fit under the cap.
    let big = pattern(675_000, 9);
    for id in 1..=3 {
        agent.send_audio(id, &big);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut caller = TwilioCall::stream_only(&server, sid).await;
    let _ = caller.audio(160, T).await;
    caller.hang_up();
    let _ = caller.closed(T).await;
    eventually("the call's counters are recorded", || {
        server.app.calls.outcome(sid) == Some(Outcome::CallerHungUp)
    })
    .await;
    eventually("one dropped message counted", || {
        server
            .app
            .metrics
            .bad_frames
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
}

#[tokio::test]
async fn no_caller_audio_is_lost_while_the_agent_sets_up() {
    let behaviour = AgentBehaviour {
        metadata_delay: Duration::from_millis(700),
        ..AgentBehaviour::default()
    };
    let server = Server::start_full(test_config(&[]), behaviour).await;
    let sid = "CA000000000000000000000000000000e7";
    // No pre-connect: the stream connects the agent itself, and the caller talks at once.
    let mut caller = TwilioCall::without_preconnect(&server, sid).await;
    let speech = pattern(160 * 30, 17);
    caller.send_audio(&speech);
    let mut agent = server.agent.next_conn(T).await;
    let msgs = agent.recv_audio(160 * 30, T).await;
    assert_eq!(user_audio(&msgs), speech, "every frame, in order");
    caller.hang_up();
}

#[tokio::test]
async fn interruption_clears_twilio_and_drops_stale_audio() {
    let server = Server::start().await;
    let sid = "CA000000000000000000000000000000e8";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let agent = server.agent.next_conn(T).await;
    // 5 s of agent speech in one burst; the playout holds most of it.
    agent.send_audio(3, &pattern(40_000, 1));
    let _ = caller.audio(1600, T).await;
    let sent_at = tokio::time::Instant::now();
    agent.send(json!({"type":"interruption","interruption_event":{"event_id":4}}));
    let clear_at = loop {
        match caller.next(T).await.expect("clear") {
            Seen::Clear(at) => break at,
            Seen::Closed(c) => panic!("closed {c:?}"),
            _ => {}
        }
    };
    eprintln!(
        "interruption -> clear: {:?}",
        clear_at.duration_since(sent_at)
    );
    // Stale audio of the interrupted turn is dropped, the new turn (same id as the interruption)
    // is played.
    agent.send_audio(3, &pattern(1600, 9));
    agent.send_audio(4, &pattern(800, 2));
    let mut after = Vec::new();
    while after.len() < 800 {
        match caller.next(T).await.expect("audio after clear") {
            Seen::Media(b, _) => after.extend(b),
            Seen::Closed(c) => panic!("closed {c:?}"),
            _ => {}
        }
    }
    assert_eq!(
        &after[..800],
        &pattern(800, 2)[..],
        "only the new turn's audio"
    );
    caller.hang_up();
}

#[tokio::test]
async fn dtmf_reaches_the_agent() {
    let server = Server::start().await;
    let sid = "CA000000000000000000000000000000e9";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let mut agent = server.agent.next_conn(T).await;
    caller.send_dtmf('7');
    let msgs = agent.recv_until(T, |m| m["type"] == "user_message").await;
    assert!(
        msgs.last().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("Taste 7")
    );
    caller.hang_up();

    let server = Server::start_config(test_config(&[("DTMF_MODE", "contextual_update")])).await;
    let mut caller = TwilioCall::dial(&server, "CA000000000000000000000000000000ea").await;
    let mut agent = server.agent.next_conn(T).await;
    caller.send_dtmf('#');
    let msgs = agent
        .recv_until(T, |m| m["type"] == "contextual_update")
        .await;
    assert!(
        msgs.last().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("Taste #")
    );
    caller.hang_up();
}

#[tokio::test]
async fn end_call_tool_lets_the_last_sentence_play_then_hangs_up() {
    let server = Server::start().await;
    let sid = "CA000000000000000000000000000000eb";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let mut agent = server.agent.next_conn(T).await;
    let goodbye = pattern(8000, 4); // 1 s
    agent.send_audio(2, &goodbye);
    agent.send(json!({"type":"client_tool_call","client_tool_call":{"tool_name":"end_call","tool_call_id":"tc1","parameters":{"reason":"done"},"event_id":2}}));
    let msgs = agent
        .recv_until(T, |m| m["type"] == "client_tool_result")
        .await;
    let result = msgs.last().unwrap();
    assert_eq!(result["tool_call_id"], "tc1");
    assert_eq!(result["is_error"], false);
    let t0 = tokio::time::Instant::now();
    let (code, seen) = caller.closed(T).await;
    let audio: Vec<u8> = seen
        .iter()
        .filter_map(|s| {
            if let Seen::Media(b, _) = s {
                Some(b.clone())
            } else {
                None
            }
        })
        .flatten()
        .collect();
    assert_eq!(
        &audio[..goodbye.len()],
        &goodbye[..],
        "the whole goodbye was sent"
    );
    // Twilio plays in real time: the close waited for the end-of-turn mark (~1 s of audio).
    assert!(
        t0.elapsed() >= Duration::from_millis(600),
        "closed after {:?}",
        t0.elapsed()
    );
    assert_eq!(code, Some(1000));
    assert_eq!(server.app.calls.outcome(sid), Some(Outcome::Completed));
    assert!(
        stream_ended(&server, sid)
            .await
            .ends_with("<Response><Hangup/></Response>")
    );
}

#[tokio::test]
async fn transfer_and_unknown_tools() {
    // Twilio's REST API (the project's stand-in) with this call live; it records the update.
    let sid = "CA000000000000000000000000000000ec";
    let account = "AC11111111111111111111111111111111";
    let mut api = TwilioApi::new(account, TOKEN);
    api.calls.push((sid.to_owned(), "in-progress".to_owned()));
    let rest = TwilioApiServer::start(api).await.unwrap();
    let rest_base = rest.base();
    let server = Server::start_config(test_config(&[
        ("TWILIO_ACCOUNT_SID", account),
        ("FALLBACK_NUMBER", "+493012345678"),
        ("TWILIO_API_BASE", &rest_base),
    ]))
    .await;
    let mut caller = TwilioCall::dial(&server, sid).await;
    let mut agent = server.agent.next_conn(T).await;
    agent.send(json!({"type":"client_tool_call","client_tool_call":{"tool_name":"transfer_to_staff","tool_call_id":"tr1","parameters":{},"event_id":1}}));
    let msgs = agent
        .recv_until(T, |m| m["type"] == "client_tool_result")
        .await;
    assert_eq!(msgs.last().unwrap()["tool_call_id"], "tr1");
    assert_eq!(msgs.last().unwrap()["is_error"], false);
    // The result follows Twilio's answer, so the update is in the log by now.
    let writes = rest.state().writes.clone();
    let [
        Write::Call {
            sid: updated,
            fields,
        },
    ] = writes.as_slice()
    else {
        panic!("{writes:?}");
    };
    assert_eq!(updated, sid);
    let twiml = ignis::http::form::get(fields, "Twiml").unwrap();
    assert!(
        twiml.contains("<Dial><Number>+493012345678</Number></Dial>"),
        "{twiml}"
    );

    agent.send(json!({"type":"client_tool_call","client_tool_call":{"tool_name":"order_pizza","tool_call_id":"u1","parameters":{},"event_id":1}}));
    let msgs = agent
        .recv_until(T, |m| m["type"] == "client_tool_result")
        .await;
    assert_eq!(msgs.last().unwrap()["tool_call_id"], "u1");
    assert_eq!(msgs.last().unwrap()["is_error"], true);
    caller.hang_up();
}

#[tokio::test]
async fn agent_endings_and_failures() {
    let server = Server::start_config(test_config(&[
        ("FALLBACK_NUMBER", "+493012345678"),
        ("AGENT_SILENCE_TIMEOUT_MS", "600"),
    ]))
    .await;

    // Agent closes normally (1000): the queued audio plays, then the call hangs up.
    let sid = "CA000000000000000000000000000000f1";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let agent = server.agent.next_conn(T).await;
    agent.send_audio(1, &pattern(1600, 8));
    agent.close(1000);
    let (code, seen) = caller.closed(T).await;
    assert_eq!(code, Some(1000));
    assert!(seen.iter().any(|s| matches!(s, Seen::Media(..))));
    assert_eq!(server.app.calls.outcome(sid), Some(Outcome::Completed));
    assert!(stream_ended(&server, sid).await.contains("<Hangup/>"));

    // Error event + 1008, error close 1011, and a dropped socket: all send the caller to a human.
    for (i, how) in ["error", "1011", "drop"].iter().enumerate() {
        let sid = format!("CA000000000000000000000000000000f{}", i + 2);
        let mut caller = TwilioCall::dial(&server, &sid).await;
        let agent = server.agent.next_conn(T).await;
        match *how {
            "error" => {
                agent.send(json!({"type":"error","error_event":{"code":1008,"error_type":"missing_dynamic_variable","message":"x"}}));
                agent.close(1008);
            }
            "1011" => agent.close(1011),
            _ => agent.drop_connection(),
        }
        let _ = caller.closed(T).await;
        assert_eq!(
            server.app.calls.outcome(&sid),
            Some(Outcome::AgentFailed),
            "{how}"
        );
        assert!(
            stream_ended(&server, &sid).await.contains("<Dial>"),
            "{how}"
        );
    }

    // A silent agent (no message for AGENT_SILENCE_TIMEOUT_MS) is declared dead.
    let sid = "CA000000000000000000000000000000f9";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let _agent = server.agent.next_conn(T).await;
    let _ = caller.closed(T).await;
    assert_eq!(server.app.calls.outcome(sid), Some(Outcome::AgentFailed));
}

/// An agent that stops reading (gone without a FIN, or a zero window) cannot hold the call: once
/// its socket takes no writes for the stall timeout (5 s), the caller goes to a person. Before,
/// the call's loop waited in the write, and no timer could end the call.
#[tokio::test]
async fn an_agent_that_stops_reading_sends_the_caller_to_a_person() {
    let server = Server::start_config(test_config(&[
        ("FALLBACK_NUMBER", "+493012345678"),
        // Only the stall may end this call in time, not the agent's silence.
        ("AGENT_SILENCE_TIMEOUT_MS", "120000"),
    ]))
    .await;
    let sid = "CA000000000000000000000000000000fb";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let agent = server.agent.next_conn(T).await;
    agent.stall();
    // A minute of caller audio at once: more than the agent socket's buffers hold.
    caller.send_audio(&pattern(8000 * 60, 5));
    let (code, _) = caller.closed(Duration::from_secs(20)).await;
    assert_eq!(code, Some(1000), "ignis closed the stream");
    assert_eq!(server.app.calls.outcome(sid), Some(Outcome::AgentFailed));
    assert!(stream_ended(&server, sid).await.contains("<Dial>"));
}

#[tokio::test]
async fn max_duration_plays_the_last_words_then_sends_the_caller_to_a_person() {
    let server = Server::start_config(test_config(&[("FALLBACK_NUMBER", "+493012345678")])).await;
    let sid = "CA000000000000000000000000000000d1";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let agent = server.agent.next_conn(T).await;
    agent.send_audio(1, &pattern(1600, 8));
    agent.send(json!({"type":"error","error_event":{"code":1000,"error_type":"max_duration_exceeded","message":"Conversation has exceeded maximum duration"}}));
    agent.close(1000);
    let (code, seen) = caller.closed(T).await;
    assert_eq!(code, Some(1000));
    assert!(
        seen.iter().any(|s| matches!(s, Seen::Media(..))),
        "the last words play"
    );
    assert_eq!(server.app.calls.outcome(sid), Some(Outcome::AgentFailed));
    assert!(stream_ended(&server, sid).await.contains("<Dial>"));
}

#[tokio::test]
async fn unreachable_agent_falls_back_without_dead_air() {
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_base = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let server = Server::start_config(test_config(&[
        ("ELEVENLABS_AGENT_ID", "agent_x"),
        ("ELEVENLABS_API_BASE", &dead_base),
    ]))
    .await;
    let sid = "CA000000000000000000000000000000fa";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let _ = caller.closed(T).await;
    assert_eq!(server.app.calls.outcome(sid), Some(Outcome::AgentFailed));
    let twiml = stream_ended(&server, sid).await;
    assert!(
        twiml.contains("<Say language=\"de-DE\">") && twiml.contains("<Hangup/>"),
        "{twiml}"
    );
}

/// The practice's outcome of `sid`'s call row: None while there is no row, Some(None) while
/// it is open.
fn stored_outcome(db: &std::path::Path, sid: &str) -> Option<Option<String>> {
    let conn = rusqlite::Connection::open(db).ok()?;
    conn.query_row("SELECT outcome FROM call WHERE call_sid = ?1", [sid], |r| {
        r.get(0)
    })
    .ok()
}

/// A call that ends before its stream (the caller hangs up while the agent pre-connects) is
/// ended in the practice's store too (`completed`), not left live on the staff page (issue
/// 14 review, point 5).
#[tokio::test]
async fn a_call_ended_before_its_stream_ends_its_practice_row() {
    let dir = practice_support::temp_dir("ended-before-stream");
    let db = dir.join("ignis.db");
    let server = Server::start_with_practice_db(&db, practice_support::TOOLS_TOKEN, &[]).await;
    let sid = "CA000000000000000000000000000000f1";
    let r = call_webhook(&server, "/api/twilio/voice", sid).await;
    assert_eq!(r.status, 200);
    eventually("call row stored", || stored_outcome(&db, sid).is_some()).await;
    assert_eq!(stored_outcome(&db, sid), Some(None));
    let mut p = call_params(sid);
    p.retain(|(k, _)| k != "CallStatus");
    p.push(("CallStatus".into(), "completed".into()));
    let r = roundtrip(&server, &signed_post("/api/twilio/status", &p, TOKEN)).await;
    assert_eq!(r.status, 204);
    eventually("call row ended", || stored_outcome(&db, sid) != Some(None)).await;
    assert_eq!(stored_outcome(&db, sid), Some(Some("completed".into())));
}

#[tokio::test]
async fn status_callback_and_simultaneous_close_clean_up() {
    let server = Server::start().await;
    let sid = "CA000000000000000000000000000000fb";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let mut agent = server.agent.next_conn(T).await;
    let mut p = call_params(sid);
    p.retain(|(k, _)| k != "CallStatus");
    p.push(("CallStatus".into(), "completed".into()));
    assert_eq!(
        roundtrip(&server, &signed_post("/api/twilio/status", &p, TOKEN))
            .await
            .status,
        204
    );
    let _ = caller.closed(T).await;
    assert!(agent.closed_within(T).await);
    eventually("no live call", || server.app.calls.live_count() == 0).await;

    // Both sides close at the same moment.
    let sid = "CA000000000000000000000000000000fc";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let agent = server.agent.next_conn(T).await;
    agent.close(1000);
    caller.hang_up();
    let _ = caller.closed(T).await;
    eventually("outcome recorded", || {
        server.app.calls.outcome(sid).is_some()
    })
    .await;
    assert_eq!(server.app.calls.live_count(), 0);
    let r = roundtrip(&server, b"GET /health HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn fifty_concurrent_calls_without_cross_talk() {
    let behaviour = AgentBehaviour {
        echo: true,
        ..AgentBehaviour::default()
    };
    let server = std::sync::Arc::new(Server::start_full(test_config(&[]), behaviour).await);
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let sid = format!("CA0000000000000000000000000000{i:04}");
            let mut caller = TwilioCall::dial(&server, &sid).await;
            let mine = pattern(160 * 25, i.wrapping_mul(5));
            caller.send_audio(&mine);
            // The echo agent returns exactly this call's audio, and nothing else.
            let back = caller.audio(mine.len(), Duration::from_secs(20)).await;
            assert_eq!(
                &back[..mine.len()],
                &mine[..],
                "call {i} heard someone else"
            );
            caller.hang_up();
            let _ = caller.closed(Duration::from_secs(20)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eventually("registry has no live call", || {
        server.app.calls.live_count() == 0
    })
    .await;
    assert!(
        server.app.calls.len() <= 50,
        "only remembered outcomes remain"
    );
}

#[tokio::test]
async fn calls_over_max_calls_get_the_fallback_not_an_overloaded_bridge() {
    let server = Server::start_config(test_config(&[
        ("MAX_CALLS", "1"),
        ("FALLBACK_NUMBER", "+493012345678"),
    ]))
    .await;
    let sid = "CA000000000000000000000000000000fd";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let _agent = server.agent.next_conn(T).await;
    eventually("first call live", || server.app.calls.live_count() == 1).await;
    // The second call is answered with the fallback TwiML straight away: no stream, no agent.
    let r = call_webhook(
        &server,
        "/api/twilio/voice",
        "CA000000000000000000000000000000fe",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.text()
            .contains("<Dial><Number>+493012345678</Number></Dial>"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("<Stream"));
    assert!(
        server
            .agent
            .try_next_conn(Duration::from_millis(300))
            .await
            .is_none()
    );
    caller.hang_up();
    // Capacity frees up again.
    eventually("first call ended", || server.app.calls.live_count() == 0).await;
    let r = call_webhook(
        &server,
        "/api/twilio/voice",
        "CA000000000000000000000000000000ff",
    )
    .await;
    assert!(r.text().contains("<Stream"));
}

/// The agent socket's own WebSocket framing (docs/elevenlabs.md §1.8) against a real peer, the
/// stand-in's tungstenite server: WebSocket-level pings get their payload back, a message sent
/// in fragments with a ping between them is assembled and played, and the agent's close gets a
/// close reply with its code.
#[tokio::test]
async fn the_agent_socket_answers_pings_assembles_fragments_and_replies_to_a_close() {
    use base64::Engine as _;
    let server = Server::start().await;
    let sid = "CA000000000000000000000000000000e7";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let agent = server.agent.next_conn(T).await;
    agent.ws_ping(b"are you there");
    let audio = pattern(1600, 8);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&audio);
    agent.send_fragmented(
        json!({"type":"audio","audio_event":{"audio_base_64":b64,"event_id":1}}),
        3,
    );
    agent.close(1000);
    let (code, seen) = caller.closed(T).await;
    assert_eq!(code, Some(1000));
    let played: usize = seen
        .iter()
        .map(|s| match s {
            Seen::Media(bytes, _) => bytes.len(),
            _ => 0,
        })
        .sum();
    assert!(
        played >= audio.len(),
        "played {played} of {} bytes",
        audio.len()
    );
    assert_eq!(server.app.calls.outcome(sid), Some(Outcome::Completed));
    let wire = agent.wire.lock().unwrap();
    assert_eq!(
        wire.pongs,
        vec![b"are you there".to_vec(), b"between".to_vec()]
    );
    assert_eq!(wire.close_reply, Some(Some(1000)));
}

/// Frames read in one go are all handled: a close right behind an unsolicited pong (both in one
/// TCP write) ends the call at once with its code, and gets its reply.
#[tokio::test]
async fn a_close_behind_a_pong_in_the_same_read_is_not_left_unread() {
    let server = Server::start().await;
    let sid = "CA000000000000000000000000000000e8";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let agent = server.agent.next_conn(T).await;
    agent.close_after_pong(1000);
    let (code, _) = caller.closed(T).await;
    assert_eq!(code, Some(1000));
    assert_eq!(server.app.calls.outcome(sid), Some(Outcome::Completed));
    assert_eq!(agent.wire.lock().unwrap().close_reply, Some(Some(1000)));
}
