//! Whole calls with `AUDIO_STAGES=pipeline` over real loopback sockets: the DSP runs on the
//! shared pool, pacing in the call task. Caller audio must reach the stand-in agent and agent
//! audio the caller, in both `ulaw_8000` (byte for byte) and `pcm_16000` (the same tones);
//! an interruption still clears Twilio and drops the interrupted turn.

mod common;

use std::time::Duration;

use common::fake_agent::{AgentBehaviour, user_audio};
use common::fake_twilio::{Seen, TwilioCall};
use common::signal::*;
use common::*;
use ignis::audio::AudioStages;
use ignis::audio::mulaw;
use ignis::calls::Outcome;
use serde_json::json;

const T: Duration = Duration::from_secs(10);

fn pipeline_config() -> ignis::config::Config {
    let c = test_config(&[("AUDIO_STAGES", "pipeline")]);
    assert_eq!(c.audio_stages, AudioStages::Pipeline);
    c
}

#[tokio::test]
async fn pipeline_ulaw_call_carries_audio_both_ways_untouched() {
    let server = Server::start_config(pipeline_config()).await;
    let sid = "CA0000000000000000000000000000a0e1";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let mut agent = server.agent.next_conn(T).await;

    let greeting = pattern(3840, 3);
    agent.send_audio(1, &greeting);
    assert_eq!(caller.audio(greeting.len(), T).await, greeting);

    let speech = pattern(8000, 11);
    caller.send_audio(&speech);
    let msgs = agent.recv_audio(8000, T).await;
    assert_eq!(user_audio(&msgs), speech);

    // Barge-in: 5 s held, interrupted; only the new turn is heard after the clear.
    agent.send_audio(3, &pattern(40_000, 1));
    let _ = caller.audio(1600, T).await;
    agent.send(json!({"type":"interruption","interruption_event":{"event_id":4}}));
    loop {
        match caller.next(T).await.expect("clear") {
            Seen::Clear(_) => break,
            Seen::Closed(c) => panic!("closed {c:?}"),
            _ => {}
        }
    }
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
    assert_eq!(&after[..800], &pattern(800, 2)[..], "only the new turn");

    caller.hang_up();
    assert!(agent.closed_within(T).await);
    eventually("outcome", || {
        server.app.calls.outcome(sid) == Some(Outcome::CallerHungUp)
    })
    .await;
    assert!(
        server
            .app
            .metrics
            .render(0)
            .contains("ignis_audio_pipeline_drops_total 0\n")
    );
}

#[tokio::test]
async fn pipeline_pcm16_call_transcodes_both_ways() {
    let behaviour = AgentBehaviour {
        input_format: "pcm_16000".into(),
        output_format: "pcm_16000".into(),
        ..AgentBehaviour::default()
    };
    let server = Server::start_full(pipeline_config(), behaviour).await;
    let sid = "CA0000000000000000000000000000a0e2";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let mut agent = server.agent.next_conn(T).await;

    let tone = tone_pcm(1000.0, 8000, 1000, 8000.0);
    let ulaw: Vec<u8> = tone.iter().map(|&s| mulaw::encode_sample(s)).collect();
    caller.send_audio(&ulaw);
    let bytes = user_audio(&agent.recv_audio(31_000, T).await);
    let pcm: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|p| i16::from_le_bytes([p[0], p[1]]))
        .collect();
    let f = frequency(&pcm, 16_000);
    assert!((990.0..1010.0).contains(&f), "agent heard {f} Hz");

    let reply = tone_pcm(440.0, 16_000, 1000, 8000.0);
    let reply_bytes: Vec<u8> = reply.iter().flat_map(|s| s.to_le_bytes()).collect();
    for part in reply_bytes.chunks(1001) {
        agent.send_audio(7, part);
    }
    let heard = caller.audio(7_600, T).await;
    let decoded: Vec<i16> = heard.iter().map(|&b| mulaw::decode_sample(b)).collect();
    let f = frequency(&decoded, 8000);
    assert!((435.0..445.0).contains(&f), "caller heard {f} Hz");

    // The agent ends the conversation: the queued audio plays out (its end-of-turn mark needs
    // the pool's flushed tail first), then the stream closes as completed.
    agent.close(1000);
    let (_, seen) = caller.closed(T).await;
    assert!(seen.iter().any(|s| matches!(s, Seen::Mark(_))), "{seen:?}");
    eventually("outcome", || {
        server.app.calls.outcome(sid) == Some(Outcome::Completed)
    })
    .await;
}
