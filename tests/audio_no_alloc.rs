//! "No allocation per frame after set-up": counts heap allocations (on the calling thread)
//! while the paths and the pipeline's bridge-side calls run in steady state, including gaps,
//! marks, ends of turn and interruptions. Buffers start small and grow to a call's high-water
//! mark (bounded by named limits), so each test first runs its pattern once unmeasured.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use allocation_counter::measure;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ignis::audio::{
    AgentFormat, InboundConfig, InboundPath, OutboundConfig, OutboundPath, Pipeline,
    PipelineOutput, PlayoutConfig, Transmit,
};

fn ms(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

#[test]
fn the_counter_is_live() {
    let info = measure(|| drop(std::hint::black_box(vec![1u8; 16])));
    assert_eq!(info.count_total, 1);
}

#[test]
fn inbound_path_does_not_allocate_per_frame() {
    for format in AgentFormat::ALL {
        let t0 = Instant::now();
        let frames: Vec<String> = (0..50u8)
            .map(|i| STANDARD.encode([i.wrapping_mul(37); 160]))
            .collect();
        let mut p = InboundPath::new(format, InboundConfig::default()).unwrap();
        let run = |p: &mut InboundPath, from: u64, n: u64| {
            let mut bytes = 0;
            for i in from..from + n {
                // Every 10th frame follows a 40 ms gap (concealment path).
                let ts = 20 * i + if i % 10 == 9 { 40 } else { 0 };
                let _ = p.push_twilio_media(ms(t0, ts), i + 1, ts, &frames[i as usize % 50]);
                while let Some(s) = p.poll_user_audio_chunk() {
                    bytes += s.len();
                }
            }
            bytes
        };
        // Warm-up through the whole pattern, gaps included: buffers grow to the call's
        // high-water mark once (docs/twilio.md §1.5), then steady state must not allocate.
        run(&mut p, 0, 20);
        let info = measure(|| {
            assert!(run(&mut p, 20, 200) > 0);
            p.finish();
            while p.poll_user_audio_chunk().is_some() {}
        });
        assert_eq!(info.count_total, 0, "{format}: {info:?}");
    }
}

#[test]
fn outbound_path_does_not_allocate_per_frame() {
    for format in AgentFormat::ALL {
        let t0 = Instant::now();
        let rate = format.sample_rate() as usize;
        // 20 ms chunks plus an odd byte now and then.
        let bytes = if format.is_ulaw() {
            160
        } else {
            rate / 50 * 2 + 1
        };
        let chunk = STANDARD.encode(vec![0x42u8; bytes]);
        // Marks every 100 ms of audio (the default is one per second) so echoes are exercised.
        let config = OutboundConfig {
            playout: PlayoutConfig {
                mark_interval_ms: 100,
                ..PlayoutConfig::default()
            },
            ..OutboundConfig::default()
        };
        let mut p = OutboundPath::new(format, config).unwrap();
        // Twilio echoes each mark once played: here one step (20 ms) after it was sent. The
        // mark queues grow on demand to their high-water mark, so the first pass through the
        // pattern warms them up and the second, measured pass must not allocate.
        let mut sent: Vec<u64> = Vec::with_capacity(64);
        let mut echo: Vec<u64> = Vec::with_capacity(64);
        let mut name = String::with_capacity(64);
        let mut echoed = 0;
        let mut step = |p: &mut OutboundPath, i: u64| {
            let now = ms(t0, 20 * i);
            let event = 1 + i / 100;
            let _ = p.push_agent_audio(now, event, &chunk);
            if i % 100 == 50 {
                p.end_of_turn();
            }
            if i % 100 == 75 {
                p.interrupt(now, Some(event + 1));
            }
            while let Some(t) = p.poll_transmit(now) {
                if let Transmit::Mark(n) = t
                    && let Some(seq) = n.strip_prefix("ignis-").and_then(|s| s.parse().ok())
                {
                    sent.push(seq);
                }
            }
            for seq in echo.drain(..) {
                name.clear();
                let _ = write!(name, "ignis-{seq}");
                if p.handle_mark_echo(&name).is_some() {
                    echoed += 1;
                }
            }
            std::mem::swap(&mut sent, &mut echo);
        };
        for i in 0..400 {
            step(&mut p, i);
        }
        let info = measure(|| {
            for i in 400..800 {
                step(&mut p, i);
            }
        });
        assert!(echoed > 20, "{format}: the marks were echoed ({echoed})");
        assert_eq!(info.count_total, 0, "{format}: {info:?}");
    }
}

#[test]
fn pipeline_bridge_side_calls_do_not_allocate() {
    let p = Pipeline::spawn_default(AgentFormat::Pcm16000, || {}).unwrap();
    let t0 = Instant::now();
    let frame = STANDARD.encode([0x11u8; 160]);
    let agent = STANDARD.encode([0u8; 640]);
    let mut got = 0usize;
    let info = measure(|| {
        for i in 0..200u64 {
            let _ = p.push_twilio_media(ms(t0, 20 * i), i + 1, 20 * i, &frame);
            let _ = p.push_agent_audio(ms(t0, 20 * i), 1, &agent);
            p.drain(|o| {
                if let PipelineOutput::UserAudioChunk(s) | PipelineOutput::Media(s) = o {
                    got += s.len();
                }
            });
            std::thread::yield_now();
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    p.shutdown();
}

/// A caller frame parses without allocating: counters, `streamSid` and `track` are borrowed
/// from the text (counters as strings, the documented form, or as numbers).
#[test]
fn twilio_media_parses_without_allocating() {
    use ignis::twilio::media_stream::{self, TwilioEvent};
    let payload = STANDARD.encode([0x7eu8; 160]);
    let texts = [
        format!(
            r#"{{"event":"media","sequenceNumber":"3","streamSid":"MZ1","media":{{"track":"inbound","chunk":"2","timestamp":"20","payload":"{payload}"}}}}"#
        ),
        format!(
            r#"{{"event":"media","streamSid":"MZ1","media":{{"chunk":2,"timestamp":20.0,"payload":"{payload}"}}}}"#
        ),
    ];
    for text in &texts {
        let mut chunks = 0;
        let info = measure(|| {
            if let Ok(TwilioEvent::Media(m)) = media_stream::parse(text) {
                chunks += m.chunk + m.timestamp_ms;
            }
        });
        assert_eq!(chunks, 22, "{text}");
        assert_eq!(info.count_total, 0, "{text}: {info:?}");
    }
}

/// The whole bridge, without sockets: caller frames in (→ `user_audio_chunk` out) and agent
/// audio in (→ paced `media` and `mark` out), every output written to the call's wire buffer
/// and dropped after each step as the driver does once it has written it. After a warm-up the
/// steady state allocates nothing per message, in either direction, for every agent format.
#[test]
fn bridge_steady_state_does_not_allocate_per_message() {
    use ignis::bridge::{Bridge, BridgeConfig, Output};
    use ignis::twilio::media_stream;
    for format in AgentFormat::ALL {
        let t0 = Instant::now();
        let mut b = Bridge::new(BridgeConfig::default());
        let start = r#"{"event":"start","streamSid":"MZ1","start":{"streamSid":"MZ1","callSid":"CA1","accountSid":"AC1","mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;
        b.handle_twilio(t0, media_stream::parse(start).unwrap());
        b.handle_agent_connected(t0);
        b.handle_agent_text(
            t0,
            &format!(
                r#"{{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{{"conversation_id":"c","agent_output_audio_format":"{format}","user_input_audio_format":"{format}"}}}}"#
            ),
        );
        // Caller frames (20 ms each) and agent audio (250 ms chunks at twice real time, one
        // every 125 ms), built up front: the test measures the bridge, not its fixtures.
        let payload = STANDARD.encode([0x7eu8; 160]);
        let frames: Vec<String> = (1..=1000u64)
            .map(|c| {
                format!(
                    r#"{{"event":"media","streamSid":"MZ1","media":{{"track":"inbound","chunk":"{c}","timestamp":"{}","payload":"{payload}"}}}}"#,
                    (c - 1) * 20
                )
            })
            .collect();
        let chunk_bytes = format.sample_rate() as usize / 4 * if format.is_ulaw() { 1 } else { 2 };
        let chunk = STANDARD.encode(vec![0x21u8; chunk_bytes]);
        let agent = format!(
            r#"{{"type":"audio","audio_event":{{"audio_base_64":"{chunk}","event_id":1}}}}"#
        );
        // Twilio echoes each mark (here at the next step); the echoes are built up front and
        // handed over by value, as the driver's parser would.
        let mut echoes: Vec<Option<media_stream::TwilioEvent<'static>>> = (0..200)
            .map(|seq| {
                Some(media_stream::TwilioEvent::Mark {
                    name: format!("ignis-{seq}"),
                })
            })
            .collect();
        let mut due_echoes: Vec<usize> = Vec::with_capacity(16);
        // Returns the (Twilio, agent) messages written.
        let mut step = |b: &mut Bridge, i: usize| {
            let (mut to_twilio, mut to_agent) = (0, 0);
            for seq in due_echoes.drain(..) {
                if let Some(echo) = echoes.get_mut(seq).and_then(Option::take) {
                    b.handle_twilio(ms(t0, 20 * i as u64 + 20), echo);
                }
            }
            let now = ms(t0, 20 * i as u64 + 20);
            // Agent audio for the first 0.8 s of every 2 s (a 1.6 s turn), then silence.
            if i % 100 < 40 && matches!(i % 25, 0 | 12) {
                b.handle_agent_text(now, &agent);
            }
            // Parsed here, as the driver does: that allocates nothing either.
            if let Ok(event) = media_stream::parse(&frames[i]) {
                b.handle_twilio(now, event);
            }
            if b.poll_timeout().is_some_and(|t| t <= now) {
                b.handle_timeout(now);
            }
            while let Some(o) = b.poll_transmit() {
                if let Some(seq) = o
                    .text()
                    .split_once("\"name\":\"ignis-")
                    .and_then(|(_, rest)| rest.split('"').next()?.parse().ok())
                {
                    due_echoes.push(seq);
                }
                match o {
                    Output::ToTwilio(m) => to_twilio += usize::from(!m.is_empty()),
                    Output::ToAgent(m) => to_agent += usize::from(!m.is_empty()),
                }
            }
            (to_twilio, to_agent)
        };
        for i in 0..400 {
            step(&mut b, i);
        }
        let (mut to_twilio, mut to_agent) = (0, 0);
        let info = measure(|| {
            for i in 400..1000 {
                let (t, a) = step(&mut b, i);
                to_twilio += t;
                to_agent += a;
            }
        });
        assert_eq!(info.count_total, 0, "{format}: {info:?}");
        // 12 s: three 1.6 s turns to the caller, 600 caller frames to the agent.
        assert!(to_twilio > 40, "{format}: {to_twilio} messages to Twilio");
        assert!(
            to_agent >= 300,
            "{format}: {to_agent} messages to the agent"
        );
        let playout = b.audio_stats().1.unwrap().playout;
        assert!(playout.marks_echoed >= 6, "{format}: {playout:?}");
    }
}

/// The call task's side of the DSP pool (`AUDIO_STAGES=pipeline`): queueing frames and agent
/// audio and draining results allocate nothing once the call's buffers exist. The worker is
/// stalled once at the start so that the buffers the steps need are made up front (the
/// counter sees this thread only; the worker's side is the paths, tested above).
#[test]
fn pool_call_side_does_not_allocate() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, mpsc};

    use ignis::audio::{DspPool, Engine, PoolOutput};

    let t0 = Instant::now();
    let pool = DspPool::new(1).unwrap();
    let (release, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let wakes = Arc::new(AtomicUsize::new(0));
    let (me, w) = (std::thread::current(), Arc::clone(&wakes));
    let wake: ignis::audio::pipeline::Wake = Arc::new(move || {
        if w.fetch_add(1, Ordering::Relaxed) == 0 {
            let _ = gate.lock().map(|g| g.recv());
        }
        me.unpark();
    });
    let f = AgentFormat::Pcm16000;
    let mut call = pool
        .open(f, f, InboundConfig::default(), Engine::Auto, wake)
        .unwrap();
    let frame = STANDARD.encode([0x11u8; 160]);
    let agent = STANDARD.encode([0u8; 640]);
    let (mut payloads, mut ulaw) = (0usize, 0usize);
    let step =
        |call: &mut ignis::audio::PoolCall, i: u64, payloads: &mut usize, ulaw: &mut usize| {
            // Chunks and timestamps go on from the 9 set-up frames (the jitter stage drops repeats).
            let ts = 20 * (i + 9);
            call.push_twilio_media(ms(t0, ts), i + 10, ts, &frame)
                .unwrap();
            call.push_agent_audio(ms(t0, ts), 1, &agent).unwrap();
            // Wait for this step's results (the resampler holds back up to a frame), so only a
            // few commands are ever in flight.
            let limit = Instant::now() + Duration::from_secs(20);
            while (*payloads as u64) <= i || (*ulaw as u64) < 160 * i {
                call.drain(|o| match o {
                    PoolOutput::UserAudioChunk(_) => *payloads += 1,
                    PoolOutput::Frames { ulaw: u, .. } => *ulaw += u.len(),
                    PoolOutput::EndOfTurn => {}
                });
                assert!(Instant::now() < limit, "no progress");
                std::thread::park_timeout(Duration::from_millis(1));
            }
        };
    // Stall the worker, queue 8 commands (making 8 buffers), release, catch up.
    call.push_twilio_media(t0, 1, 0, &frame).unwrap();
    while wakes.load(Ordering::Relaxed) == 0 {
        std::thread::park_timeout(Duration::from_millis(1));
    }
    for i in 0..8u64 {
        let ts = 20 * (i + 1);
        call.push_twilio_media(ms(t0, ts), i + 2, ts, &frame)
            .unwrap();
    }
    release.send(()).unwrap();
    while payloads < 9 {
        call.drain(|o| {
            if let PoolOutput::UserAudioChunk(_) = o {
                payloads += 1;
            }
        });
        std::thread::park_timeout(Duration::from_millis(1));
    }
    payloads = 0;
    for i in 0..20 {
        step(&mut call, i, &mut payloads, &mut ulaw);
    }
    let (p0, u0) = (payloads, ulaw);
    let info = measure(|| {
        for i in 20..220 {
            step(&mut call, i, &mut payloads, &mut ulaw);
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    assert_eq!(payloads - p0, 200);
    assert!(
        (199 * 160..=201 * 160).contains(&(ulaw - u0)),
        "{}",
        ulaw - u0
    );
}
