//! The threaded pipeline end to end: frames in, payloads/media/marks out, the notify callback,
//! interruption → `Clear`, mark echoes, stats. Real threads, so waits are generous limits on
//! progress, never timing assertions.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ignis::audio::{AgentFormat, Pipeline, PipelineOutput};

#[derive(Debug, Default)]
struct Seen {
    user_audio: usize,
    media_bytes: usize,
    marks: Vec<String>,
    clears: usize,
    echoes: usize,
    stats: usize,
    /// Outbound audio sent plus dropped by interruption, ms (from the stats snapshot).
    accounted_ms: u64,
}

fn pump(p: &Pipeline, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    let limit = Instant::now() + Duration::from_secs(20);
    while !done(seen) && Instant::now() < limit {
        let n = p.drain(|o| match o {
            PipelineOutput::UserAudioChunk(_) => seen.user_audio += 1,
            PipelineOutput::Media(s) => seen.media_bytes += STANDARD.decode(s).unwrap().len(),
            PipelineOutput::Mark(m) => seen.marks.push(m.to_string()),
            PipelineOutput::Clear(_) => seen.clears += 1,
            PipelineOutput::MarkEcho(_) => seen.echoes += 1,
            PipelineOutput::Stats(i, o) => {
                seen.stats += 1;
                assert!(i.jitter.frames >= 1);
                seen.accounted_ms = o.playout.frames_sent * 20 + o.playout.interrupted_dropped_ms;
            }
        });
        if n == 0 {
            thread::park_timeout(Duration::from_millis(2));
        }
    }
    assert!(done(seen), "no progress: {seen:?}");
}

#[test]
fn both_directions_through_the_worker() {
    let wakeups = Arc::new(AtomicUsize::new(0));
    let me = thread::current();
    let w = Arc::clone(&wakeups);
    let p = Pipeline::spawn_default(AgentFormat::Pcm16000, move || {
        w.fetch_add(1, Ordering::Relaxed);
        me.unpark();
    })
    .unwrap();
    let t0 = Instant::now();
    let frame = STANDARD.encode([0xFFu8; 160]);
    for i in 0..25u64 {
        p.push_twilio_media(t0, i + 1, 20 * i, &frame).unwrap();
    }
    // 60 ms of agent audio (PCM16 at 16 kHz) in one chunk, then the end of the turn.
    p.push_agent_audio(t0, 5, &STANDARD.encode(vec![0u8; 1920]))
        .unwrap();
    p.end_of_turn().unwrap();
    let mut seen = Seen::default();
    pump(&p, &mut seen, |s| {
        s.user_audio == 25 && s.media_bytes == 480 && !s.marks.is_empty()
    });
    assert!(wakeups.load(Ordering::Relaxed) >= 1);

    // The end-of-turn mark echo is reported back.
    p.handle_mark_echo(&seen.marks[0]).unwrap();
    pump(&p, &mut seen, |s| s.echoes == 1);

    // A long answer, interrupted: whatever was not sent yet is dropped at once. How much was
    // sent depends on thread scheduling, so check conservation rather than timing.
    p.push_agent_audio(t0, 6, &STANDARD.encode(vec![0u8; 64_000]))
        .unwrap();
    pump(&p, &mut seen, |s| s.media_bytes > 480);
    p.interrupt(Instant::now(), Some(7)).unwrap();
    p.request_stats().unwrap();
    pump(&p, &mut seen, |s| s.stats == 1);
    assert!(seen.clears <= 1);
    // 60 ms + 2 s pushed; up to two frames stay inside the resampler and re-framer.
    assert!((2020..=2060).contains(&seen.accounted_ms), "{seen:?}");
    assert_eq!(p.counters().commands_dropped, 0);
    p.shutdown();
}
