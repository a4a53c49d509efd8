//! The per-call bridge driven by hand in virtual time (quinn `Pair` style): no sockets, no clock.

use std::time::{Duration, Instant};

use ignis::bridge::{Bridge, BridgeConfig, BridgeEvent, DtmfMode, Output, TransferNumbers};
use ignis::calls::Outcome;
use ignis::elevenlabs::messages::AgentEventKind;
use ignis::twilio::media_stream::{self, TwilioEvent};

const ULAW_FRAME_B64: &str = "/////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////w==";

fn media(chunk: u64) -> String {
    format!(
        r#"{{"event":"media","streamSid":"MZ1","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{}","payload":"{ULAW_FRAME_B64}"}}}}"#,
        (chunk - 1) * 20
    )
}

const START: &str = r#"{"event":"start","streamSid":"MZ1","start":{"streamSid":"MZ1","callSid":"CA1","accountSid":"AC1","mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;

fn metadata(input: &str, output: &str) -> String {
    format!(
        r#"{{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{{"conversation_id":"conv_1","agent_output_audio_format":"{output}","user_input_audio_format":"{input}"}}}}"#
    )
}

fn agent_audio(event_id: u64, b64: &str) -> String {
    format!(r#"{{"type":"audio","audio_event":{{"audio_base_64":"{b64}","event_id":{event_id}}}}}"#)
}

fn twilio(b: &mut Bridge, now: Instant, text: &str) {
    b.handle_twilio(now, media_stream::parse(text).unwrap());
}

/// A bridge whose Twilio stream has started.
fn started(config: BridgeConfig, t0: Instant) -> Bridge {
    let mut b = Bridge::new(config);
    twilio(&mut b, t0, START);
    b
}

/// A started bridge whose agent is connected and has sent its metadata (`format` both ways).
fn connected(t0: Instant, format: &str) -> Bridge {
    let mut b = started(BridgeConfig::default(), t0);
    b.handle_agent_connected(t0);
    b.handle_agent_text(t0, &metadata(format, format));
    b
}

fn drain(b: &mut Bridge) -> (Vec<String>, Vec<String>) {
    let (mut to_twilio, mut to_agent) = (Vec::new(), Vec::new());
    while let Some(o) = b.poll_transmit() {
        let text = o.text().to_owned();
        match o {
            Output::ToTwilio(_) => to_twilio.push(text),
            Output::ToAgent(_) => to_agent.push(text),
        }
    }
    (to_twilio, to_agent)
}

fn events(b: &mut Bridge) -> Vec<BridgeEvent> {
    std::iter::from_fn(|| b.poll_event()).collect()
}

/// The events of a bridge that closed the call with `outcome`: the agent first, then Twilio.
fn closed(outcome: Outcome) -> Vec<BridgeEvent> {
    vec![BridgeEvent::CloseAgent, BridgeEvent::CloseTwilio(outcome)]
}

/// Runs timers until `until`, collecting Twilio output.
fn run_until(b: &mut Bridge, mut now: Instant, until: Instant) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(t) = b.poll_timeout() {
        if t > until {
            break;
        }
        now = now.max(t);
        b.handle_timeout(now);
        out.extend(drain(b).0);
    }
    out
}

fn ulaw_b64(ms: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(vec![0x55u8; ms * 8])
}

#[test]
fn setup_buffering_loses_no_caller_frame() {
    let t0 = Instant::now();
    let mut b = started(BridgeConfig::default(), t0);
    for chunk in 1..=40 {
        twilio(
            &mut b,
            t0 + Duration::from_millis(20 * chunk),
            &media(chunk),
        );
    }
    // The agent connects 800 ms late.
    let t1 = t0 + Duration::from_millis(800);
    b.handle_agent_connected(t1);
    assert!(drain(&mut b).1.is_empty(), "nothing before metadata");
    b.handle_agent_text(t1, &metadata("ulaw_8000", "ulaw_8000"));
    let (_, to_agent) = drain(&mut b);
    assert_eq!(to_agent.len(), 40, "every held frame forwarded");
    assert!(
        to_agent
            .iter()
            .all(|m| m == &format!(r#"{{"user_audio_chunk":"{ULAW_FRAME_B64}"}}"#))
    );
    twilio(&mut b, t1, &media(41));
    assert_eq!(drain(&mut b).1.len(), 1);
    assert_eq!(b.stats().setup_frames_dropped, 0);
    assert_eq!(b.conversation_id(), Some("conv_1"));
}

/// A bridge whose agent is connected (`ulaw_8000`) before Twilio's `start`.
fn agent_first(t0: Instant) -> Bridge {
    let mut b = Bridge::new(BridgeConfig::default());
    b.handle_agent_connected(t0);
    b.handle_agent_text(t0, &metadata("ulaw_8000", "ulaw_8000"));
    b
}

/// Twilio's `start` 50 ms after `t0`, then 1 s of timers: what went to Twilio.
fn start_and_play(b: &mut Bridge, t0: Instant) -> Vec<String> {
    let t1 = t0 + Duration::from_millis(50);
    twilio(b, t1, START);
    let mut out = drain(b).0;
    out.extend(run_until(b, t1, t1 + Duration::from_secs(1)));
    out
}

#[test]
fn agent_audio_before_start_is_held_and_played() {
    let t0 = Instant::now();
    let mut b = agent_first(t0);
    b.handle_agent_text(t0, &agent_audio(1, &ulaw_b64(200)));
    assert!(drain(&mut b).0.is_empty(), "no stream yet");
    let out = start_and_play(&mut b, t0);
    let media_frames: usize = out
        .iter()
        .filter(|m| m.contains("\"media\""))
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(m).unwrap();
            let p = v["media"]["payload"].as_str().unwrap().len();
            p / 4 * 3 / 160
        })
        .sum();
    assert_eq!(
        media_frames, 10,
        "200 ms of early agent audio reached the caller"
    );
    assert!(b.stats().first_audio_after_start.unwrap() <= Duration::from_millis(1));
}

/// An interruption before Twilio's `start` drops the audio held for it, as it drops what the
/// outbound path holds; the next turn's audio plays (DSP review, point 5).
#[test]
fn an_interruption_before_start_drops_the_held_audio() {
    let t0 = Instant::now();
    let mut b = agent_first(t0);
    b.handle_agent_text(t0, &agent_audio(1, &ulaw_b64(200)));
    // Held audio of the interruption's own id goes too: everything held is cleared.
    b.handle_agent_text(t0, &agent_audio(2, &ulaw_b64(200)));
    b.handle_agent_text(
        t0,
        r#"{"type":"interruption","interruption_event":{"event_id":2}}"#,
    );
    b.handle_agent_text(t0, &agent_audio(2, &ulaw_b64(100)));
    let bytes = media_bytes(&start_and_play(&mut b, t0));
    assert_eq!(
        bytes, 800,
        "only the 100 ms after the interruption: {bytes} bytes"
    );
}

/// Agent audio held before Twilio's `start` is capped in bytes too: a few huge events cannot
/// make a call hold hundreds of MiB.
#[test]
fn agent_audio_before_start_is_capped_in_bytes() {
    use ignis::bridge::MAX_EARLY_AGENT_BYTES;
    let t0 = Instant::now();
    let mut b = Bridge::new(BridgeConfig::default());
    b.handle_agent_connected(t0);
    b.handle_agent_text(t0, &metadata("ulaw_8000", "ulaw_8000"));
    // 65.5 s of audio per event: just over a third of the cap each.
    let big = ulaw_b64(65_536);
    assert!(big.len() * 3 > MAX_EARLY_AGENT_BYTES && big.len() * 2 < MAX_EARLY_AGENT_BYTES);
    for id in 1..=4 {
        b.handle_agent_text(t0, &agent_audio(id, &big));
    }
    assert_eq!(b.stats().bad_agent_chunks, 2, "two held, two over the cap");
}

#[test]
fn interruption_clears_and_drops_stale_audio_keeps_new_turn() {
    let t0 = Instant::now();
    let mut b = connected(t0, "ulaw_8000");
    b.handle_agent_text(t0, &agent_audio(5, &ulaw_b64(2000)));
    let sent_before = drain(&mut b).0.len();
    assert!(sent_before > 0);
    let t1 = t0 + Duration::from_millis(300);
    let _ = run_until(&mut b, t0, t1);
    b.handle_agent_text(
        t1,
        r#"{"type":"interruption","interruption_event":{"event_id":6}}"#,
    );
    let (to_twilio, _) = drain(&mut b);
    assert_eq!(
        to_twilio,
        vec![r#"{"event":"clear","streamSid":"MZ1"}"#.to_string()]
    );
    // Stale audio of turn 5 arriving late is dropped; turn 6 is kept.
    b.handle_agent_text(t1, &agent_audio(5, &ulaw_b64(500)));
    assert!(
        run_until(&mut b, t1, t1 + Duration::from_secs(2))
            .iter()
            .all(|m| !m.contains("\"media\""))
    );
    let t2 = t1 + Duration::from_secs(2);
    b.handle_agent_text(t2, &agent_audio(6, &ulaw_b64(100)));
    let mut out = drain(&mut b).0;
    out.extend(run_until(&mut b, t2, t2 + Duration::from_secs(1)));
    assert!(
        out.iter().any(|m| m.contains("\"media\"")),
        "new turn audio kept"
    );
    assert_eq!(b.stats().clears, 1);
}

#[test]
fn end_call_waits_for_the_last_mark_then_closes_completed() {
    let t0 = Instant::now();
    let mut b = connected(t0, "ulaw_8000");
    b.handle_agent_text(t0, &agent_audio(1, &ulaw_b64(500)));
    b.handle_agent_text(
        t0,
        r#"{"type":"client_tool_call","client_tool_call":{"tool_name":"end_call","tool_call_id":"t1","parameters":{}}}"#,
    );
    let (_, to_agent) = drain(&mut b);
    assert!(
        to_agent
            .iter()
            .any(|m| m.contains("client_tool_result") && m.contains("\"t1\""))
    );
    play_to_last_mark(&mut b, t0);
    assert_eq!(events(&mut b), closed(Outcome::Completed));
}

/// A goodbye long enough to carry periodic marks: echoes of those (Twilio echoes each mark once
/// the audio before it has played) must not count as the end-of-turn mark's, or the call closes
/// before the caller heard the last words (review of issue 16: rarer marks made the periodic one
/// the usual case during a drain).
#[test]
fn end_call_waits_for_the_end_of_turn_mark_not_an_earlier_one() {
    let t0 = Instant::now();
    let mut b = connected(t0, "ulaw_8000");
    b.handle_agent_text(t0, &agent_audio(1, &ulaw_b64(2500)));
    b.handle_agent_text(
        t0,
        r#"{"type":"client_tool_call","client_tool_call":{"tool_name":"end_call","tool_call_id":"t1","parameters":{}}}"#,
    );
    // (name, sent at, media sent after it): Twilio echoes a mark once the audio before it has
    // played; here 200 ms after it was sent, for every mark with audio after it (so never the
    // end-of-turn mark, the last thing the turn sends).
    let mut marks: Vec<(String, Instant, bool)> = Vec::new();
    let mut echoed = 0;
    for i in 1..=200u64 {
        let now = t0 + Duration::from_millis(20 * i);
        twilio(&mut b, now, &media(i));
        if b.poll_timeout().is_some_and(|t| t <= now) {
            b.handle_timeout(now);
        }
        for m in drain(&mut b).0 {
            let v: serde_json::Value = serde_json::from_str(&m).unwrap();
            match v["mark"]["name"].as_str() {
                Some(name) => marks.push((name.to_owned(), now, false)),
                None => {
                    if let Some(last) = marks.last_mut() {
                        last.2 = true;
                    }
                }
            }
        }
        while let Some((name, _, _)) = marks
            .get(echoed)
            .filter(|m| m.2 && now >= m.1 + Duration::from_millis(200))
        {
            let echo = format!(r#"{{"event":"mark","mark":{{"name":"{name}"}}}}"#);
            twilio(&mut b, now, &echo);
            echoed += 1;
        }
        assert!(
            events(&mut b).is_empty(),
            "closed at {} ms, marks {marks:?}",
            20 * i
        );
    }
    assert!(echoed >= 2, "periodic marks echoed: {marks:?}");
    let marks: Vec<String> = marks.into_iter().map(|m| m.0).collect();
    assert!(marks.len() >= 3, "{marks:?}");
    let last = marks.last().unwrap();
    twilio(
        &mut b,
        t0 + Duration::from_secs(4),
        &format!(r#"{{"event":"mark","mark":{{"name":"{last}"}}}}"#),
    );
    assert_eq!(events(&mut b), closed(Outcome::Completed));
}

/// Plays the queued audio for 2 s, checks that the bridge does not close before the caller
/// heard it, then echoes the last mark as Twilio does when that audio has played.
fn play_to_last_mark(b: &mut Bridge, t0: Instant) {
    let out = run_until(b, t0, t0 + Duration::from_secs(2));
    let last_mark = out
        .iter()
        .filter_map(|m| {
            let v: serde_json::Value = serde_json::from_str(m).ok()?;
            v["mark"]["name"].as_str().map(str::to_owned)
        })
        .next_back()
        .expect("an end-of-turn mark");
    assert!(
        events(b).is_empty(),
        "must not close before the last audio was heard"
    );
    twilio(
        b,
        t0 + Duration::from_secs(2),
        &format!(r#"{{"event":"mark","mark":{{"name":"{last_mark}"}}}}"#),
    );
}

/// Caller frames from frame `from` to `to` (20 ms each, a timer turn where due); the names of
/// the marks sent meanwhile.
fn frames_and_marks(b: &mut Bridge, t0: Instant, from: u64, to: u64) -> Vec<String> {
    let mut marks = Vec::new();
    for i in from..=to {
        let now = t0 + Duration::from_millis(20 * i);
        twilio(b, now, &media(i));
        if b.poll_timeout().is_some_and(|t| t <= now) {
            b.handle_timeout(now);
        }
        for m in drain(b).0 {
            let v: serde_json::Value = serde_json::from_str(&m).unwrap();
            if let Some(name) = v["mark"]["name"].as_str() {
                marks.push(name.to_owned());
            }
        }
    }
    marks
}

/// The agent's last words went out with their end-of-turn mark (the idle end of turn) before
/// the agent closed: the ending still waits for that mark's echo, or the goodbye's tail is
/// cut (DSP review, point 3). A close other than 1000 during an ending lets it finish too
/// (point 4: max duration closed with 1011 in 2024).
#[test]
fn an_ending_waits_for_a_mark_sent_before_it_began() {
    let t0 = Instant::now();
    for (error_first, code, outcome) in [
        (false, 1000, Outcome::Completed),
        (true, 1011, Outcome::AgentFailed),
    ] {
        let mut b = connected(t0, "ulaw_8000");
        b.handle_agent_text(t0, &agent_audio(1, &ulaw_b64(300)));
        let marks = frames_and_marks(&mut b, t0, 1, 40);
        let last = marks.last().expect("the end-of-turn mark went out").clone();
        let at = t0 + Duration::from_millis(800);
        if error_first {
            b.handle_agent_text(at, MAX_DURATION_ERROR);
        }
        b.handle_agent_closed(at, Some(code));
        assert!(frames_and_marks(&mut b, t0, 41, 60).is_empty());
        assert!(
            events(&mut b).is_empty(),
            "closed before the last mark's echo"
        );
        let echo = format!(r#"{{"event":"mark","mark":{{"name":"{last}"}}}}"#);
        twilio(&mut b, t0 + Duration::from_millis(1220), &echo);
        assert_eq!(events(&mut b), closed(outcome), "{code}");
    }
}

const MAX_DURATION_ERROR: &str = r#"{"type":"error","error_event":{"code":1000,"error_type":"max_duration_exceeded","message":"Conversation has exceeded maximum duration"}}"#;

#[test]
fn max_duration_plays_the_last_words_then_goes_to_a_person() {
    let t0 = Instant::now();
    let mut b = connected(t0, "ulaw_8000");
    b.handle_agent_text(t0, &agent_audio(1, &ulaw_b64(500)));
    assert_eq!(
        b.handle_agent_text(t0, MAX_DURATION_ERROR),
        Some(AgentEventKind::Error)
    );
    // The 1000 close that follows must not turn it into a hang-up.
    b.handle_agent_closed(t0, Some(1000));
    play_to_last_mark(&mut b, t0);
    assert_eq!(events(&mut b), closed(Outcome::AgentFailed));

    // Nothing queued: straight to the fallback, whenever the close comes.
    let mut b = connected(t0, "ulaw_8000");
    b.handle_agent_text(t0, MAX_DURATION_ERROR);
    b.handle_agent_closed(t0, Some(1000));
    let _ = run_until(&mut b, t0, t0 + Duration::from_secs(1));
    assert_eq!(events(&mut b), closed(Outcome::AgentFailed));

    // Any other error before a 1000 close is still a normal ending.
    let mut b = connected(t0, "ulaw_8000");
    b.handle_agent_text(
        t0,
        r#"{"type":"error","error_event":{"code":1000,"error_type":"unknown"}}"#,
    );
    b.handle_agent_closed(t0, Some(1000));
    let _ = run_until(&mut b, t0, t0 + Duration::from_secs(1));
    assert_eq!(events(&mut b), closed(Outcome::Completed));
}

#[test]
fn agent_failures_close_at_once_for_the_fallback() {
    let t0 = Instant::now();
    let mut b = started(BridgeConfig::default(), t0);
    b.handle_agent_failed();
    assert_eq!(events(&mut b), closed(Outcome::AgentFailed));

    let mut b = connected(t0, "ulaw_8000");
    b.handle_agent_closed(t0, Some(1011));
    assert!(events(&mut b).contains(&BridgeEvent::CloseTwilio(Outcome::AgentFailed)));

    // A silent agent is declared dead by the watchdog.
    let mut b = started(BridgeConfig::default(), t0);
    b.handle_agent_connected(t0);
    let _ = run_until(&mut b, t0, t0 + Duration::from_secs(60));
    assert!(events(&mut b).contains(&BridgeEvent::CloseTwilio(Outcome::AgentFailed)));
}

#[test]
fn ping_dtmf_unknown_tool_and_caller_hangup() {
    let t0 = Instant::now();
    let config = BridgeConfig {
        dtmf: DtmfMode::UserMessage,
        ..BridgeConfig::default()
    };
    let mut b = started(config, t0);
    b.handle_agent_connected(t0);
    b.handle_agent_text(t0, &metadata("pcm_16000", "pcm_16000"));
    b.handle_agent_text(
        t0,
        r#"{"type":"ping","ping_event":{"event_id":77,"ping_ms":null}}"#,
    );
    twilio(
        &mut b,
        t0,
        r#"{"event":"dtmf","dtmf":{"track":"inbound_track","digit":"3"}}"#,
    );
    twilio(
        &mut b,
        t0,
        r#"{"event":"dtmf","dtmf":{"digit":"<script>"}}"#,
    );
    b.handle_agent_text(
        t0,
        r#"{"type":"client_tool_call","client_tool_call":{"tool_name":"launch_rocket","tool_call_id":"x9","parameters":{}}}"#,
    );
    let (_, to_agent) = drain(&mut b);
    assert_eq!(to_agent[0], r#"{"type":"pong","event_id":77}"#);
    assert!(
        to_agent
            .iter()
            .any(|m| m.contains("user_message") && m.contains("Taste 3"))
    );
    assert!(!to_agent.iter().any(|m| m.contains("script")));
    let err: serde_json::Value = serde_json::from_str(
        to_agent
            .iter()
            .find(|m| m.contains("client_tool_result"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(err["is_error"], true);
    assert_eq!(err["tool_call_id"], "x9");
    twilio(&mut b, t0, r#"{"event":"stop","stop":{}}"#);
    assert_eq!(events(&mut b), closed(Outcome::CallerHungUp));
}

#[test]
fn transcoding_mode_sends_pcm16_chunks_to_the_agent() {
    let t0 = Instant::now();
    let mut b = connected(t0, "pcm_16000");
    for chunk in 1..=10 {
        twilio(
            &mut b,
            t0 + Duration::from_millis(20 * chunk),
            &media(chunk),
        );
    }
    let (_, to_agent) = drain(&mut b);
    assert!(!to_agent.is_empty());
    let bytes: usize = to_agent
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(m).unwrap();
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(v["user_audio_chunk"].as_str().unwrap())
                .unwrap()
                .len()
        })
        .sum();
    // 10 frames of 20 ms at 16 kHz, 2 bytes per sample, give or take the resampler's delay.
    assert!((5000..=6400).contains(&bytes), "{bytes} bytes of pcm_16000");
    let _ = TwilioEvent::Stop;
}

#[test]
fn a_closed_bridge_is_inert_and_metadata_counts_once() {
    let t0 = Instant::now();
    let mut b = connected(t0, "ulaw_8000");
    b.handle_agent_text(t0, &agent_audio(1, &ulaw_b64(2000)));
    let _ = drain(&mut b);
    // A repeated metadata message does not rebuild the paths (held audio keeps playing).
    b.handle_agent_text(t0, &metadata("pcm_16000", "pcm_16000"));
    let out = run_until(&mut b, t0, t0 + Duration::from_millis(500));
    assert!(
        out.iter().any(|m| m.contains("\"media\"")),
        "held audio still plays"
    );
    // After the caller hangs up nothing is timed or sent any more, even on an interruption.
    twilio(&mut b, t0, r#"{"event":"stop","stop":{}}"#);
    assert!(b.is_closed());
    assert_eq!(b.poll_timeout(), None);
    b.handle_agent_text(
        t0,
        r#"{"type":"interruption","interruption_event":{"event_id":9}}"#,
    );
    assert!(drain(&mut b).0.is_empty(), "no clear after close");
}

fn tool_call(name: &str, id: &str) -> String {
    format!(
        r#"{{"type":"client_tool_call","client_tool_call":{{"tool_name":"{name}","tool_call_id":"{id}","parameters":{{}},"event_id":1}}}}"#
    )
}

#[test]
fn transfers_go_to_the_number_the_bridge_resolves() {
    let t0 = Instant::now();
    let numbers = |fallback: Option<&str>, staff_line: Option<&str>| TransferNumbers {
        fallback: fallback.map(str::to_owned),
        staff_line: staff_line.map(str::to_owned),
    };
    for (transfer, to) in [
        (
            numbers(Some("+4930111"), Some("+4930222")),
            Some("+4930111"),
        ),
        (numbers(None, Some("+4930222")), Some("+4930222")),
        (numbers(None, None), None),
    ] {
        let mut b = Bridge::new(BridgeConfig {
            transfer,
            ..BridgeConfig::default()
        });
        b.handle_agent_connected(t0);
        b.handle_agent_text(t0, &tool_call("transfer_to_staff", "tr1"));
        let (_, to_agent) = drain(&mut b);
        match to {
            Some(to) => {
                assert_eq!(
                    events(&mut b),
                    vec![BridgeEvent::Transfer {
                        tool_call_id: "tr1".into(),
                        to: to.into()
                    }]
                );
                assert!(to_agent.is_empty(), "answered before Twilio did");
                // Asked again while Twilio works on it: answered, no second transfer.
                b.handle_agent_text(t0, &tool_call("transfer_to_staff", "tr2"));
                assert!(events(&mut b).is_empty(), "one transfer at a time");
                let (_, to_agent) = drain(&mut b);
                let v: serde_json::Value = serde_json::from_str(&to_agent[0]).unwrap();
                assert_eq!(
                    (v["tool_call_id"].as_str(), v["is_error"].as_bool()),
                    (Some("tr2"), Some(false))
                );
                // A failed transfer may be tried again.
                b.transfer_done("tr1", false);
                let _ = drain(&mut b);
                b.handle_agent_text(t0, &tool_call("transfer_to_staff", "tr1"));
                assert_eq!(events(&mut b).len(), 1, "a retry after a failure");
                b.transfer_done("tr1", true);
                let (_, to_agent) = drain(&mut b);
                let v: serde_json::Value = serde_json::from_str(&to_agent[0]).unwrap();
                assert_eq!(
                    (v["tool_call_id"].as_str(), v["is_error"].as_bool()),
                    (Some("tr1"), Some(false))
                );
                // Done: the call is leaving; nothing starts another.
                b.handle_agent_text(t0, &tool_call("transfer_to_staff", "tr3"));
                assert!(events(&mut b).is_empty(), "no transfer after a transfer");
            }
            None => {
                // Nowhere to transfer to: answered at once as a failure, nothing to execute.
                assert!(events(&mut b).is_empty());
                let v: serde_json::Value = serde_json::from_str(&to_agent[0]).unwrap();
                assert_eq!(
                    (v["tool_call_id"].as_str(), v["is_error"].as_bool()),
                    (Some("tr1"), Some(true))
                );
            }
        }
    }
}

#[test]
fn agent_messages_report_their_kind() {
    let t0 = Instant::now();
    let mut b = Bridge::new(BridgeConfig::default());
    // Not connected yet: nothing is handled.
    assert_eq!(
        b.handle_agent_text(t0, &metadata("ulaw_8000", "ulaw_8000")),
        None
    );
    b.handle_agent_connected(t0);
    twilio(&mut b, t0, START);
    assert_eq!(
        b.handle_agent_text(t0, &metadata("ulaw_8000", "ulaw_8000")),
        Some(AgentEventKind::Metadata)
    );
    assert_eq!(
        b.handle_agent_text(t0, &agent_audio(1, &ulaw_b64(40))),
        Some(AgentEventKind::Audio)
    );
    assert_eq!(
        b.handle_agent_text(t0, r#"{"type":"ping","ping_event":{"event_id":2}}"#),
        Some(AgentEventKind::Ping)
    );
    assert_eq!(b.handle_agent_text(t0, "not json"), None);
    let summary = b.call_summary(Outcome::Completed);
    assert_eq!(summary.bad_agent_messages, 1);
    assert_eq!(summary.outcome, Outcome::Completed);
}

/// Audio held before the agent is ready is capped in bytes, not only in frames: large payloads
/// (up to the 64 KiB message limit each) cannot make a connecting call hold megabytes.
#[test]
fn setup_buffering_is_capped_in_bytes() {
    use ignis::bridge::{MAX_SETUP_HELD_BYTES, MAX_SETUP_HELD_FRAMES};
    let t0 = Instant::now();
    let mut b = Bridge::new(BridgeConfig::default());
    twilio(&mut b, t0, START);
    let big = "/".repeat(60 * 1024);
    let frames = 20u64;
    for chunk in 1..=frames {
        let m = format!(
            r#"{{"event":"media","streamSid":"MZ1","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{}","payload":"{big}"}}}}"#,
            (chunk - 1) * 20
        );
        twilio(&mut b, t0, &m);
    }
    let held = (MAX_SETUP_HELD_BYTES / big.len()) as u64;
    assert!(held < MAX_SETUP_HELD_FRAMES as u64);
    assert_eq!(b.stats().setup_frames_dropped, frames - held);
}

#[test]
fn agent_chunks_with_new_event_ids_reach_the_caller_without_inserted_silence() {
    use base64::Engine;
    let b64 = &base64::engine::general_purpose::STANDARD;
    let t0 = Instant::now();
    let mut b = connected(t0, "ulaw_8000");
    // 1 s of 440 Hz tone in 250 ms chunks, each with a new event_id, one every 200 ms.
    let tone: Vec<u8> = (0..8000)
        .map(|n| {
            let v = 8000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(n) / 8000.0).sin();
            ignis::audio::mulaw::encode_sample(v as i16)
        })
        .collect();
    let mut out = Vec::new();
    let mut now = t0;
    for (i, part) in tone.chunks(2000).enumerate() {
        b.handle_agent_text(now, &agent_audio(i as u64 + 1, &b64.encode(part)));
        out.extend(drain(&mut b).0);
        let next = t0 + Duration::from_millis(200 * (i as u64 + 1));
        out.extend(run_until(&mut b, now, next));
        now = next;
    }
    out.extend(run_until(&mut b, now, t0 + Duration::from_secs(3)));
    let mut heard = Vec::new();
    let mut last_is_mark = false;
    for m in &out {
        let v: serde_json::Value = serde_json::from_str(m).unwrap();
        if let Some(p) = v["media"]["payload"].as_str() {
            heard.extend(b64.decode(p).unwrap());
        }
        last_is_mark = v["event"] == "mark";
    }
    assert_eq!(heard.len(), tone.len(), "no frame of silence inserted");
    assert_eq!(heard, tone);
    assert!(
        last_is_mark,
        "the end-of-turn mark follows the turn's audio"
    );
    let (_, outbound) = b.audio_stats();
    let s = outbound.unwrap();
    assert_eq!((s.turns, s.pause_pads, s.playout.underruns), (1, 0, 0));
}

/// Twilio's side of the outbound audio: its queue plays in real time from each `media`'s
/// arrival, and a gap is the queue running dry before the turn's audio is all in.
#[derive(Default)]
struct TwilioQueue {
    /// When the audio queued so far will have played (`None` before the first media).
    end: Option<Instant>,
    audio: Vec<u8>,
    media_msgs: usize,
    marks: usize,
    gaps: usize,
}

impl TwilioQueue {
    fn receive(&mut self, now: Instant, msgs: &[String]) {
        use base64::Engine;
        for m in msgs {
            let v: serde_json::Value = serde_json::from_str(m).unwrap();
            match v["event"].as_str() {
                Some("media") => {
                    let payload = v["media"]["payload"].as_str().unwrap();
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(payload)
                        .unwrap();
                    let start = match self.end {
                        Some(end) if end >= now => end,
                        Some(_) => {
                            self.gaps += 1;
                            now
                        }
                        None => now,
                    };
                    self.end = Some(start + Duration::from_micros(bytes.len() as u64 * 125));
                    self.audio.extend(bytes);
                    self.media_msgs += 1;
                }
                Some("mark") => self.marks += 1,
                Some("clear") => self.end = Some(now),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Audio queued at Twilio and not yet played at `now`.
    fn queued(&self, now: Instant) -> Duration {
        self.end
            .map_or(Duration::ZERO, |e| e.saturating_duration_since(now))
    }
}

/// `samples` of agent audio (a byte ramp, so order is checked) in 250 ms chunks sent at twice
/// real time from `t0 + 5 ms`, as ElevenLabs does.
fn agent_turn(samples: u32) -> (Vec<u8>, Vec<(Duration, String)>) {
    use base64::Engine;
    let audio: Vec<u8> = (0..samples).map(|i| (i / 7) as u8).collect();
    let chunks = audio
        .chunks(2000)
        .enumerate()
        .map(|(i, c)| {
            let at = Duration::from_millis(5 + 125 * i as u64);
            let b64 = base64::engine::general_purpose::STANDARD.encode(c);
            (at, agent_audio(1, &b64))
        })
        .collect();
    (audio, chunks)
}

/// Drives a connected bridge through the agent turn with a caller frame every 20 ms until
/// `frames_until`, then (if audio is still due) on its timer alone until `until`. Calls
/// `each_step` after every input. Returns Twilio's view and the number of timer wake-ups.
fn play_turn(
    b: &mut Bridge,
    t0: Instant,
    samples: u32,
    frames_until: Duration,
    until: Duration,
    mut each_step: impl FnMut(&mut Bridge, Instant, &TwilioQueue),
) -> (TwilioQueue, usize) {
    let (_, mut chunks) = agent_turn(samples);
    chunks.reverse();
    let mut tw = TwilioQueue::default();
    let mut wakeups = 0;
    let mut frame = 1u64;
    let mut now = t0;
    loop {
        let next_frame = Duration::from_millis(20 * frame);
        let next_frame = (next_frame <= frames_until).then_some(t0 + next_frame);
        let next_chunk = chunks.last().map(|(at, _)| t0 + *at);
        let next_timer = b.poll_timeout();
        let Some(t) = [next_frame, next_chunk, next_timer]
            .into_iter()
            .flatten()
            .min()
            .filter(|&t| t <= t0 + until)
        else {
            break;
        };
        now = now.max(t);
        if next_timer == Some(t) && next_frame != Some(t) && next_chunk != Some(t) {
            wakeups += 1;
            b.handle_timeout(now);
        } else if next_frame == Some(t) {
            twilio(b, now, &media(frame));
            frame += 1;
        } else if let Some((_, text)) = chunks.pop() {
            b.handle_agent_text(now, &text);
        }
        let out = drain(b).0;
        tw.receive(now, &out);
        each_step(b, now, &tw);
    }
    (tw, wakeups)
}

#[test]
fn caller_frames_pace_the_agent_turn_and_the_timer_never_fires() {
    let t0 = Instant::now();
    let mut b = connected(t0, "ulaw_8000");
    // 2.875 s: the turn ends on a partial frame, padded at a caller frame too.
    let (mut audio, _) = agent_turn(23_000);
    audio.extend([ignis::audio::mulaw::SILENCE; 40]);
    let (tw, wakeups) = play_turn(
        &mut b,
        t0,
        23_000,
        Duration::from_secs(4),
        Duration::from_secs(4),
        |b, now, _| {
            // The next caller frame is at most 20 ms away: the bridge's deadline must lie
            // beyond it, so the driver's timer never wakes the call.
            let next_frame = now + Duration::from_millis(20);
            if let Some(d) = b.poll_timeout() {
                assert!(
                    d > next_frame,
                    "deadline {:?} after the step at {:?}",
                    d.saturating_duration_since(now),
                    now.saturating_duration_since(t0)
                );
            }
        },
    );
    assert_eq!(wakeups, 0);
    assert_eq!(tw.audio, audio, "all audio, in order");
    assert_eq!(tw.gaps, 0, "no gap at Twilio");
    // ~3 s of audio in ~80 ms messages; a mark per second of audio and one ending the turn.
    assert!(tw.media_msgs <= 45, "{} media messages", tw.media_msgs);
    assert!((1..=4).contains(&tw.marks), "{} marks", tw.marks);
    let s = b.audio_stats().1.unwrap();
    assert_eq!((s.turns, s.playout.underruns), (1, 0));
}

#[test]
fn when_caller_frames_stop_the_timer_plays_the_rest_without_underrun() {
    let t0 = Instant::now();
    let mut b = connected(t0, "ulaw_8000");
    let (audio, _) = agent_turn(24_000);
    // Caller frames stop after 1 s (Twilio muted, or a network stall), mid-turn.
    let (tw, wakeups) = play_turn(
        &mut b,
        t0,
        24_000,
        Duration::from_secs(1),
        Duration::from_secs(5),
        |_, _, _| {},
    );
    assert_eq!(tw.audio, audio, "all audio, in order");
    assert_eq!(tw.gaps, 0, "no gap at Twilio");
    let s = b.audio_stats().1.unwrap();
    assert_eq!((s.turns, s.playout.underruns), (1, 0));
    // About one wake-up per 100 ms top-up for the last 2 s (plus the end of turn), not one per
    // 20 ms frame.
    assert!((15..=25).contains(&wakeups), "{wakeups} timer wake-ups");
}

#[test]
fn barge_in_clears_in_the_same_step_with_at_most_150_ms_queued() {
    let (_, chunks) = agent_turn(24_000);
    for at_ms in [7u64, 130, 333, 801, 1250, 1999, 2710] {
        let t0 = Instant::now();
        let mut b = connected(t0, "ulaw_8000");
        let mut interrupted = false;
        let (tw, _) = play_turn(
            &mut b,
            t0,
            24_000,
            Duration::from_secs(4),
            Duration::from_millis(at_ms),
            |_, _, _| {},
        );
        // Chunks of the turn not yet sent by then are sent at once, before the interruption.
        let now = t0 + Duration::from_millis(at_ms);
        let mut tw = tw;
        for (at, text) in &chunks {
            if t0 + *at > now {
                b.handle_agent_text(now, text);
            }
        }
        let out = drain(&mut b).0;
        tw.receive(now, &out);
        let queued = tw.queued(now);
        assert!(queued > Duration::ZERO, "at {at_ms} ms: audio is playing");
        b.handle_agent_text(
            now,
            r#"{"type":"interruption","interruption_event":{"event_id":2}}"#,
        );
        let out = drain(&mut b).0;
        if out == vec![r#"{"event":"clear","streamSid":"MZ1"}"#.to_string()] {
            interrupted = true;
        }
        assert!(
            interrupted,
            "at {at_ms} ms: clear in the same step: {out:?}"
        );
        assert!(
            queued <= Duration::from_millis(150),
            "at {at_ms} ms: {queued:?} queued at Twilio when the clear lands"
        );
        assert_eq!(b.stats().clears, 1);
    }
}

// ─── AUDIO_STAGES=pipeline: the DSP on the pool, pacing here ────────────────────────────────

/// A bridge config whose DSP runs on a one-worker pool (the wake-up unparks the test thread).
fn pool_config() -> BridgeConfig {
    use ignis::audio::pipeline::{DspPool, PoolLink};
    let me = std::thread::current();
    BridgeConfig {
        pool: Some(PoolLink {
            pool: DspPool::new(1).unwrap(),
            wake: std::sync::Arc::new(move || me.unpark()),
        }),
        ..BridgeConfig::default()
    }
}

/// Waits (a generous real-time limit, not a timing assertion) until the pool has handled every
/// command of the call and the bridge has taken its results, at virtual time `now`.
fn settle(b: &mut Bridge, now: Instant) {
    let limit = Instant::now() + Duration::from_secs(20);
    loop {
        b.handle_audio_ready(now);
        if b.pool_settled() {
            return;
        }
        assert!(Instant::now() < limit, "the DSP pool made no progress");
        std::thread::park_timeout(Duration::from_millis(2));
    }
}

/// Drives a connected bridge in virtual time until `until`: `chunks` (agent messages, in
/// order, with their times), a caller frame every 20 ms up to `frames_until`, the bridge's
/// timer, and the pool's results (settled after every step). Returns Twilio's view.
fn run_with_chunks(
    b: &mut Bridge,
    t0: Instant,
    mut chunks: Vec<(Instant, String)>,
    frames_until: Instant,
    until: Instant,
) -> TwilioQueue {
    chunks.reverse();
    let (mut tw, mut now, mut frame) = (TwilioQueue::default(), t0, 1u64);
    loop {
        let next_frame = t0 + Duration::from_millis(20 * frame);
        let next_frame = (next_frame <= frames_until).then_some(next_frame);
        let next_chunk = chunks.last().map(|(at, _)| *at);
        let Some(t) = [next_frame, next_chunk, b.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .filter(|&t| t <= until)
        else {
            break;
        };
        now = now.max(t);
        if next_chunk == Some(t) {
            let (_, text) = chunks.pop().unwrap();
            b.handle_agent_text(now, &text);
        } else if next_frame == Some(t) {
            twilio(b, now, &media(frame));
            frame += 1;
        } else {
            b.handle_timeout(now);
        }
        settle(b, now);
        tw.receive(now, &drain(b).0);
    }
    tw
}

/// The agent pauses mid-turn (shorter than `turn_idle`): the partial frame the pool holds is
/// padded and played before the pause, not held and played in front of the next sentence.
/// Runs that pause with caller frames until `frames_until`, then on the bridge's timer alone.
fn pipeline_pause(frames_until: Duration) {
    use base64::Engine;
    use ignis::audio::mulaw::SILENCE;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let t0 = Instant::now();
    let mut b = connected_ulaw(pool_config(), t0);
    settle(&mut b, t0);
    // 125 ms (6 frames and 40 bytes), a pause, then 100 ms (5 whole frames).
    let first: Vec<u8> = (0..1000u32).map(|i| (i % 200) as u8).collect();
    let second: Vec<u8> = (0..800u32).map(|i| 10 + (i % 100) as u8).collect();
    let chunks = vec![
        (t0 + Duration::from_millis(5), agent_audio(1, &b64(&first))),
        (
            t0 + Duration::from_millis(250),
            agent_audio(1, &b64(&second)),
        ),
    ];
    let until = t0 + Duration::from_secs(2);
    let tw = run_with_chunks(&mut b, t0, chunks, t0 + frames_until, until);
    let mut want = first.clone();
    want.extend([SILENCE; 120]);
    want.extend(&second);
    assert_eq!(tw.audio, want, "the first part's tail before the pause");
    assert!(tw.gaps <= 1, "{} gaps (the pause is one)", tw.gaps);
    assert_eq!(b.call_summary(Outcome::Completed).audio_pipeline_drops, 0);
}

#[test]
fn pipeline_pause_plays_the_partial_frame_before_the_pause() {
    pipeline_pause(Duration::from_secs(2));
}

#[test]
fn pipeline_pause_pads_on_the_timer_when_caller_frames_stop() {
    pipeline_pause(Duration::from_millis(60));
}

/// A Twilio frame of 160 bytes of `chunk`'s own value (so order is checked).
fn media_numbered(chunk: u64) -> String {
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD.encode([(chunk % 251) as u8; 160]);
    format!(
        r#"{{"event":"media","streamSid":"MZ1","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{}","payload":"{payload}"}}}}"#,
        (chunk - 1) * 20
    )
}

/// The caller audio in the agent-bound messages, in order.
fn user_audio_bytes(to_agent: &[String]) -> Vec<u8> {
    use base64::Engine;
    to_agent
        .iter()
        .filter_map(|m| {
            let v: serde_json::Value = serde_json::from_str(m).ok()?;
            let b64 = v["user_audio_chunk"].as_str()?.to_owned();
            base64::engine::general_purpose::STANDARD.decode(b64).ok()
        })
        .flatten()
        .collect()
}

/// The metadata comes 4 s after `start` (200 frames held, more than the pool takes per call at
/// once): with the pool too, every held frame reaches the agent, in order, none dropped, and
/// frames arriving meanwhile queue behind them.
#[test]
fn pipeline_setup_buffering_loses_no_caller_frame() {
    let t0 = Instant::now();
    let mut b = started(pool_config(), t0);
    for chunk in 1..=200 {
        twilio(
            &mut b,
            t0 + Duration::from_millis(20 * chunk),
            &media_numbered(chunk),
        );
    }
    let t1 = t0 + Duration::from_secs(4);
    b.handle_agent_connected(t1);
    b.handle_agent_text(t1, &metadata("ulaw_8000", "ulaw_8000"));
    let mut to_agent = drain(&mut b).1;
    for chunk in 201..=220 {
        let now = t0 + Duration::from_millis(20 * chunk);
        twilio(&mut b, now, &media_numbered(chunk));
        b.handle_audio_ready(now);
        to_agent.extend(drain(&mut b).1);
    }
    let t2 = t0 + Duration::from_millis(20 * 221);
    settle(&mut b, t2);
    to_agent.extend(drain(&mut b).1);
    let want: Vec<u8> = (1..=220u64).flat_map(|c| [(c % 251) as u8; 160]).collect();
    let got = user_audio_bytes(&to_agent);
    assert_eq!(got.len(), want.len(), "every frame reached the agent");
    assert_eq!(got, want, "in order");
    assert_eq!(b.stats().setup_frames_dropped, 0);
    assert_eq!(b.call_summary(Outcome::Completed).audio_pipeline_drops, 0);
}

/// 4 s of agent audio in 200 events before Twilio's `start` (more than the pool takes per call
/// at once): with the pool too, all of it reaches the caller, in order, none dropped.
#[test]
fn pipeline_agent_audio_before_start_is_all_played() {
    use base64::Engine;
    let t0 = Instant::now();
    let mut b = Bridge::new(pool_config());
    b.handle_agent_connected(t0);
    b.handle_agent_text(t0, &metadata("ulaw_8000", "ulaw_8000"));
    let frame = |k: u64| [(k % 251) as u8; 160];
    for k in 1..=200u64 {
        let b64 = base64::engine::general_purpose::STANDARD.encode(frame(k));
        b.handle_agent_text(t0, &agent_audio(1, &b64));
    }
    let mut now = t0 + Duration::from_millis(50);
    twilio(&mut b, now, START);
    settle(&mut b, now);
    let mut tw = TwilioQueue::default();
    tw.receive(now, &drain(&mut b).0);
    let until = now + Duration::from_secs(10);
    while let Some(t) = b.poll_timeout().filter(|&t| t <= until) {
        now = now.max(t);
        b.handle_timeout(now);
        settle(&mut b, now);
        tw.receive(now, &drain(&mut b).0);
    }
    let want: Vec<u8> = (1..=200u64).flat_map(frame).collect();
    assert_eq!(tw.audio.len(), want.len(), "all early audio played");
    assert_eq!(tw.audio, want, "in order");
    assert_eq!(b.call_summary(Outcome::Completed).audio_pipeline_drops, 0);
}

/// Runs `b` on its timer alone (no caller frames) from `now` for `span`, the manual `pool`'s
/// worker running at every step; returns the μ-law bytes played.
fn run_timer_with_pool(
    b: &mut Bridge,
    pool: &ignis::audio::pipeline::DspPool,
    mut now: Instant,
    span: Duration,
) -> usize {
    let until = now + span;
    let mut played = 0;
    while let Some(t) = b.poll_timeout().filter(|&t| t <= until) {
        now = now.max(t);
        b.handle_timeout(now);
        pool.run_manual();
        b.handle_audio_ready(now);
        played += media_bytes(&drain(b).0);
    }
    played
}

/// A bridge with `config`, its Twilio stream started at `t0` and its agent (ulaw both ways)
/// connected.
fn connected_ulaw(config: BridgeConfig, t0: Instant) -> Bridge {
    let mut b = started(config, t0);
    b.handle_agent_connected(t0);
    b.handle_agent_text(t0, &metadata("ulaw_8000", "ulaw_8000"));
    b
}

/// A bridge config on `pool` (a [`DspPool::manual`] pool: the worker runs when the test says).
fn manual_pool_config(pool: &std::sync::Arc<ignis::audio::pipeline::DspPool>) -> BridgeConfig {
    BridgeConfig {
        pool: Some(ignis::audio::pipeline::PoolLink {
            pool: std::sync::Arc::clone(pool),
            wake: std::sync::Arc::new(|| {}),
        }),
        ..BridgeConfig::default()
    }
}

/// The μ-law bytes of the `media` messages in `to_twilio`.
fn media_bytes(to_twilio: &[String]) -> usize {
    use base64::Engine;
    to_twilio
        .iter()
        .filter_map(|m| {
            let v: serde_json::Value = serde_json::from_str(m).ok()?;
            let b64 = v["media"]["payload"].as_str()?.to_owned();
            base64::engine::general_purpose::STANDARD.decode(b64).ok()
        })
        .map(|b| b.len())
        .sum()
}

/// The pool refuses the pause pad (another call filled the worker's queue): the refusal is
/// counted and the pad retried a caller frame later, not at once (the timer must not refire in
/// a loop), and once the worker has room the padded frame plays.
#[test]
fn pipeline_refused_pause_pad_backs_off_a_caller_frame() {
    use ignis::audio::pipeline::DspPool;
    use ignis::audio::{AgentFormat, InboundConfig};
    let pool = DspPool::manual(1, 8);
    let t0 = Instant::now();
    let mut b = connected_ulaw(manual_pool_config(&pool), t0);
    // 125 ms: 6 whole frames, and 40 bytes the worker holds as a partial frame.
    let mut now = t0 + Duration::from_millis(5);
    b.handle_agent_text(now, &agent_audio(1, &ulaw_b64(125)));
    pool.run_manual();
    b.handle_audio_ready(now);
    assert!(b.pool_settled());
    let mut played = media_bytes(&drain(&mut b).0);
    // Another call on the same worker fills its queue.
    let f = AgentFormat::Ulaw8000;
    let wake = std::sync::Arc::new(|| {});
    let filler = pool
        .open(f, f, InboundConfig::default(), Default::default(), wake)
        .unwrap();
    while filler.push_twilio_media(now, 1, 0, ULAW_FRAME_B64).is_ok() {}
    let drops = |b: &Bridge| b.call_summary(Outcome::Completed).audio_pipeline_drops;
    // The caller's frames have stopped: the timer alone, until the pad is due and refused.
    for _ in 0..100 {
        if drops(&b) > 0 {
            break;
        }
        now = now.max(b.poll_timeout().expect("a timer is set"));
        b.handle_timeout(now);
        played += media_bytes(&drain(&mut b).0);
    }
    assert_eq!(drops(&b), 1, "the refused pad is counted");
    let next = b.poll_timeout().expect("a timer is set");
    assert!(
        next >= now + Duration::from_millis(20),
        "the refused pad refires {:?} after it was refused",
        next.saturating_duration_since(now)
    );
    // The worker catches up; the retry goes through and the padded frame plays.
    pool.run_manual();
    played += run_timer_with_pool(&mut b, &pool, now, Duration::from_secs(1));
    assert_eq!(played, 7 * 160, "6 whole frames and the padded one");
    assert_eq!(drops(&b), 1);
}

/// The call's DSP worker is gone: the refused command fails the call (a person takes the
/// caller) rather than leaving it without audio either way.
#[test]
fn pipeline_gone_worker_fails_the_call() {
    use ignis::audio::pipeline::DspPool;
    let pool = DspPool::manual(1, 64);
    let t0 = Instant::now();
    let mut b = connected_ulaw(manual_pool_config(&pool), t0);
    twilio(&mut b, t0, &media(1));
    pool.run_manual();
    b.handle_audio_ready(t0);
    assert_eq!(drain(&mut b).1.len(), 1);
    assert!(events(&mut b).is_empty());
    pool.stop_manual();
    twilio(&mut b, t0 + Duration::from_millis(20), &media(2));
    assert_eq!(events(&mut b), closed(Outcome::AgentFailed));
}

/// Plays one agent `audio` chunk through a bridge (inline, or on a manual pool) with no caller
/// frames, for two seconds on the timer; returns the μ-law bytes played and the call's bad-chunk
/// count.
fn play_one_chunk(pipeline: bool, audio_b64: &str) -> (usize, u64) {
    use ignis::audio::pipeline::DspPool;
    let pool = DspPool::manual(1, 64);
    let config = if pipeline {
        manual_pool_config(&pool)
    } else {
        BridgeConfig::default()
    };
    let t0 = Instant::now();
    let mut b = connected_ulaw(config, t0);
    let now = t0 + Duration::from_millis(5);
    b.handle_agent_text(now, &agent_audio(1, audio_b64));
    pool.run_manual();
    b.handle_audio_ready(now);
    let mut played = media_bytes(&drain(&mut b).0);
    played += run_timer_with_pool(&mut b, &pool, now, Duration::from_secs(2));
    let summary = b.call_summary(Outcome::Completed);
    (played, summary.bad_agent_chunks)
}

/// An agent chunk of three pool pieces (4096 characters each) that is bad in its third, or
/// whose last quad has non-zero trailing bits: refused whole in both modes, nothing played,
/// counted once; a good chunk of the same size plays whole in both.
#[test]
fn a_bad_agent_chunk_is_refused_whole_inline_and_pipeline() {
    let good = ulaw_b64(1140); // 57 frames: 12160 characters, three pool pieces.
    let mut bad_third = good.clone();
    bad_third.replace_range(10_000..10_001, "!");
    let trailing_bits = format!("{good}AB==");
    for (name, chunk) in [
        ("bad in its third piece", &bad_third),
        ("trailing bits", &trailing_bits),
    ] {
        for pipeline in [false, true] {
            assert_eq!(
                play_one_chunk(pipeline, chunk),
                (0, 1),
                "{name}, pipeline {pipeline}: nothing played, one bad chunk"
            );
        }
    }
    assert_eq!(play_one_chunk(false, &good), (9120, 0));
    assert_eq!(play_one_chunk(true, &good), (9120, 0));
}

/// An agent that sends its turns exactly in real time (three 250 ms chunks, one turn a second,
/// a byte ramp per turn), with a caller frame every 20 ms; the bridge ends each turn on its
/// idle rule. Returns what Twilio plays, and the call's summary.
fn real_time_agent(config: BridgeConfig) -> (Vec<u8>, ignis::metrics::CallSummary) {
    use base64::Engine;
    let t0 = Instant::now();
    let mut b = connected_ulaw(config, t0);
    settle(&mut b, t0);
    let turn: Vec<u8> = (0..6000u32).map(|i| (i / 7) as u8).collect();
    let chunks: Vec<(Instant, String)> = (0..2u64)
        .flat_map(|k| {
            turn.chunks(2000).enumerate().map(move |(i, c)| {
                let at = t0 + Duration::from_millis(1000 * k + 250 * i as u64);
                let b64 = base64::engine::general_purpose::STANDARD.encode(c);
                (at, agent_audio(k + 1, &b64))
            })
        })
        .collect();
    let until = t0 + Duration::from_secs(3);
    let tw = run_with_chunks(&mut b, t0, chunks, until, until);
    (tw.audio, b.call_summary(Outcome::Completed))
}

/// docs/dsp.md §3.9: a late chunk costs a padded frame and raises the call's cushion; once it
/// suffices no chunk boundary inserts silence, inline and with the DSP pool (whose pacer times
/// the arrivals while the worker makes the frames). The pool's pads are asked for a caller
/// frame early (§3.8), so there the second chunk boundary is late too and the cushion settles
/// one step higher.
#[test]
fn a_real_time_agent_is_padded_until_its_cushion_suffices() {
    use ignis::audio::mulaw::SILENCE;
    let turn: Vec<u8> = (0..6000u32).map(|i| (i / 7) as u8).collect();
    let mut padded_turn = turn.clone();
    padded_turn.extend([SILENCE; 80]);
    // Inline turn 1: the first chunk's half frame padded, the rest whole.
    let mut inline_first = turn[..2000].to_vec();
    inline_first.extend([SILENCE; 80]);
    inline_first.extend(&turn[2000..]);
    for (mode, config, late) in [
        ("inline", BridgeConfig::default(), 1),
        ("pipeline", pool_config(), 2),
    ] {
        let (heard, summary) = real_time_agent(config);
        let (first, second) = heard.split_at(heard.len() - padded_turn.len());
        assert!(second == padded_turn, "{mode}: silence inserted in turn 2");
        if mode == "inline" {
            assert!(first == inline_first, "{mode}: turn 1");
        }
        assert_eq!(summary.late_agent_audio, late, "{mode}");
        assert_eq!(summary.audio_pipeline_drops, 0, "{mode}");
    }
}

/// An agent turn of whole frames (no pads) whose second chunk comes late enough that Twilio
/// runs dry before the turn is over, then turn 2's first chunk handed over right after caller
/// frame `at_frame` was handled, before the pool's results of that step are taken. Returns
/// how many agent chunks counted as late.
fn second_turn_after_frame(config: BridgeConfig, at_frame: u64) -> u64 {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let t0 = Instant::now();
    let mut b = connected_ulaw(config, t0);
    settle(&mut b, t0);
    let chunk: Vec<u8> = (0..1600u32).map(|i| (i / 5) as u8).collect();
    // 200 ms, and 100 ms more at 105 ms: Twilio runs dry before `turn_idle` has passed.
    let mut turn_one = vec![(105, &chunk[..800]), (5, &chunk[..])];
    let (mut now, mut frame) = (t0, 1u64);
    while frame <= at_frame {
        let next_frame = t0 + Duration::from_millis(20 * frame);
        let timer = b.poll_timeout().filter(|&t| t < next_frame);
        let next = timer.unwrap_or(next_frame);
        if let Some(&(ms, audio)) = turn_one.last()
            && t0 + Duration::from_millis(ms) < next
        {
            now = t0 + Duration::from_millis(ms);
            b.handle_agent_text(now, &agent_audio(1, &b64(audio)));
            turn_one.pop();
        } else if timer.is_some() {
            now = now.max(next);
            b.handle_timeout(now);
        } else {
            now = now.max(next);
            twilio(&mut b, now, &media(frame));
            if frame == at_frame {
                b.handle_agent_text(now, &agent_audio(2, &b64(&chunk)));
            }
            frame += 1;
        }
        settle(&mut b, now);
        drain(&mut b);
    }
    b.call_summary(Outcome::Completed).late_agent_audio
}

/// docs/dsp.md §3.9: the first chunk of a new turn is never a late chunk of the last one. With
/// the DSP pool the pacer's turn ends only when the pool's end-of-turn result comes back; a
/// chunk arriving in that window counted as late and raised the cushion (review finding).
/// Inline, where the turn ends at once, is the oracle: whichever caller frame turn 2 starts
/// at (over turn 1 and its end), the pool counts a late chunk exactly when inline does: in
/// the gap between Twilio running dry and the end of turn 1, and never after it.
#[test]
fn a_new_turn_is_not_late_while_the_pools_end_of_turn_is_on_its_way() {
    let mut late_frames = 0;
    for at_frame in 1..40 {
        let inline = second_turn_after_frame(BridgeConfig::default(), at_frame);
        let pooled = second_turn_after_frame(pool_config(), at_frame);
        assert_eq!(pooled, inline, "turn 2 after caller frame {at_frame}");
        late_frames += inline;
    }
    // Both cases are covered: starts in the gap (late) and after the turn (not late).
    assert!(late_frames > 0 && late_frames < 39, "{late_frames}");
}
