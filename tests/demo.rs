//! `ignis demo` and `ignis simulate`: a whole call on this machine through the real server, with
//! real speech (espeak-ng clips), checked in what the caller actually heard.

mod common;

use std::time::Duration;

use common::fake_agent::AgentBehaviour;
use common::*;
use ignis::audio::format::AgentFormat;
use ignis::driver::demo::{DemoOptions, DemoSummary, run};

/// Seconds of the recording whose 20 ms windows carry speech energy.
fn speech_seconds(heard: &[i16]) -> f64 {
    heard
        .chunks(160)
        .filter(|w| {
            let e = w.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / w.len() as f64;
            e.sqrt() > 500.0
        })
        .count() as f64
        * 0.02
}

/// `ignis demo` with the bundled clips.
async fn demo(format: AgentFormat, barge_in: bool) -> DemoSummary {
    let options = DemoOptions {
        format,
        wav: None,
        barge_in,
    };
    run(options).await.unwrap()
}

#[tokio::test]
async fn demo_call_in_pass_through_mode() {
    let s = demo(AgentFormat::Ulaw8000, false).await;
    // The bundled clips hold 2.5 s (greeting) and 2.66 s (caller) of speech by this measure
    // (20 ms windows over RMS 500). Both must be heard, nearly whole: the greeting in the
    // first 5 s, the caller's echo after it.
    let (greeting, echo) = s.heard.split_at(s.heard.len().min(5 * 8000));
    let (g, e) = (speech_seconds(greeting), speech_seconds(echo));
    assert!(g >= 2.2, "greeting: {g} s of speech heard");
    assert!(e >= 2.3, "echo: {e} s of speech heard");
    assert_eq!(s.tool_steps, (7, 7), "booking script through the tools");
    assert_eq!(s.dynamic_variables, 11);
    assert_eq!(s.interruptions, 0);
    assert_eq!(s.outcome, "caller_hung_up");
    assert!(s.setup.is_some());
    assert!(s.text.contains("set-up"));
}

#[tokio::test]
async fn demo_call_transcoding_with_barge_in() {
    let s = demo(AgentFormat::Pcm16000, true).await;
    assert!(s.interruptions >= 1, "the caller talked over the greeting");
    assert!(s.clears >= 1, "and Twilio was told to clear");
    // The caller spoke 1.5 s into the greeting: the greeting was cut there (its 2.5 s of speech
    // were not all heard), and the caller's echo (2.66 s of speech) came back afterwards.
    let (greeting, echo) = s.heard.split_at(s.heard.len().min(3 * 8000));
    let (g, e) = (speech_seconds(greeting), speech_seconds(echo));
    assert!(g > 0.5 && g < 1.8, "greeting cut: {g} s heard");
    assert!(e >= 2.3, "echo: {e} s of speech heard");
    assert_eq!(s.tool_steps, (7, 7));
}

#[tokio::test]
async fn simulate_binary_against_a_running_server() {
    let server = Server::start_public_loopback(AgentBehaviour::default()).await;
    let url = format!("ws://{}/api/twilio/stream", server.addr);
    let out = std::env::temp_dir().join(format!("ignis-simulate-{}.wav", std::process::id()));
    let (url2, out2) = (url.clone(), out.clone());
    let child = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ignis"))
            .args([
                "simulate",
                "--url",
                &url2,
                "--token",
                TOKEN,
                "--seconds",
                "20",
                "--out",
            ])
            .arg(&out2)
            .output()
    });
    // The stand-in agent greets with one second of speech-level audio.
    let agent = server.agent.next_conn(Duration::from_secs(10)).await;
    let greeting: Vec<u8> = (0..8000)
        .map(|i| if i % 2 == 0 { 0x10 } else { 0x90 })
        .collect();
    agent.send_audio(1, &greeting);
    let output = tokio::time::timeout(Duration::from_secs(40), child)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("voice webhook answered 200"), "{stdout}");
    let heard = ignis::audio::wav::parse(&std::fs::read(&out).unwrap()).unwrap();
    assert!(
        speech_seconds(&heard.samples) >= 0.9,
        "the agent's second of audio was heard"
    );
    let _ = std::fs::remove_file(&out);
}
