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
    // The worker notifies after handing its results over, so the pump may have drained them
    // before the notification ran (seen once in CI): wait for it, within a generous limit.
    let limit = Instant::now() + Duration::from_secs(20);
    while wakeups.load(Ordering::Relaxed) == 0 && Instant::now() < limit {
        thread::park_timeout(Duration::from_millis(2));
    }
    assert!(
        wakeups.load(Ordering::Relaxed) >= 1,
        "the worker never notified"
    );

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

// ─── The shared DSP pool (issue 16 point 3) ──────────────────────────────────────────────────

use std::sync::Mutex;
use std::sync::mpsc;

use ignis::audio::pipeline::{CALL_OUTPUT_DEPTH, CALL_QUEUE_DEPTH, Wake};
use ignis::audio::{
    DspPool, InboundConfig, InboundPath, OutboundConfig, OutboundPath, PoolCall, PoolOutput,
    Transmit,
};

/// Real (synthetic) speech, μ-law 8 kHz (tests/data/audio/README.md).
const SPEECH: &[u8] = include_bytes!("data/audio/speech_8k.ulaw");
const ENGINE: ignis::audio::Engine = ignis::audio::Engine::Auto;

/// The caller's frames of call `k`: the speech, rotated so that every call differs.
fn caller_frames(k: usize, n: usize) -> Vec<String> {
    let frames: Vec<&[u8]> = SPEECH.chunks_exact(160).collect();
    (0..n)
        .map(|i| STANDARD.encode(frames[(i + 7 * k) % frames.len()]))
        .collect()
}

/// Paces everything `o` holds out in virtual time: (μ-law bytes sent, marks sent).
fn play(o: &mut OutboundPath, t0: Instant) -> (Vec<u8>, usize) {
    let (mut bytes, mut marks) = (Vec::new(), 0);
    let mut now = t0;
    for _ in 0..100_000 {
        while let Some(t) = o.poll_transmit(now) {
            match t {
                Transmit::Media(b) => bytes.extend(STANDARD.decode(b).unwrap()),
                Transmit::Mark(_) => marks += 1,
            }
        }
        match o.poll_timeout() {
            Some(d) => now = d.max(now),
            None => break,
        }
    }
    (bytes, marks)
}

/// What one call produced: payloads to the agent, and what its pacer played.
#[derive(Debug, Default, PartialEq)]
struct CallOut {
    payloads: Vec<String>,
    heard: Vec<u8>,
    marks: usize,
}

/// One call the inline way: both paths in this thread.
fn inline_call(format: AgentFormat, frames: &[String], agent: &[String], t0: Instant) -> CallOut {
    let mut inbound = InboundPath::new(format, InboundConfig::default()).unwrap();
    let mut outbound = OutboundPath::new(format, OutboundConfig::default()).unwrap();
    let mut out = CallOut::default();
    for (i, f) in frames.iter().enumerate() {
        inbound
            .push_twilio_media(t0, i as u64 + 1, 20 * i as u64, f)
            .unwrap();
        while let Some(p) = inbound.poll_user_audio_chunk() {
            out.payloads.push(p.to_owned());
        }
    }
    for a in agent {
        outbound.push_agent_audio(t0, 3, a).unwrap();
    }
    outbound.end_of_turn();
    (out.heard, out.marks) = play(&mut outbound, t0);
    out
}

/// A wake-up that counts and unparks the test thread.
fn waker(count: &Arc<AtomicUsize>) -> Wake {
    let (me, count) = (thread::current(), Arc::clone(count));
    Arc::new(move || {
        count.fetch_add(1, Ordering::Relaxed);
        me.unpark();
    })
}

/// A wake-up that blocks the worker on its first call until `release` is sent to: the worker
/// is then stalled for certain, with no timing involved.
fn stalling_waker(count: &Arc<AtomicUsize>) -> (Wake, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    let (me, count) = (thread::current(), Arc::clone(count));
    let wake: Wake = Arc::new(move || {
        if count.fetch_add(1, Ordering::Relaxed) == 0 {
            let _ = rx.lock().unwrap().recv();
        }
        me.unpark();
    });
    (wake, tx)
}

/// A wake-up that blocks the worker at every call until `release` is sent to (or dropped):
/// each batch is then whole before the test looks, with no timing involved.
fn gated_waker(count: &Arc<AtomicUsize>) -> (Wake, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    let (me, count) = (thread::current(), Arc::clone(count));
    let wake: Wake = Arc::new(move || {
        count.fetch_add(1, Ordering::Relaxed);
        me.unpark();
        let _ = rx.lock().unwrap().recv();
    });
    (wake, tx)
}

/// A call on a one-worker pool whose worker is held in its first wake-up (`waker`: stalled
/// once, or gated at every wake-up) by one caller frame (`frame` of [`caller_frames`]), so
/// what the test queues next waits behind it. Sending to (or dropping) the sender lets it go;
/// the count is the worker's wake-ups of the call so far.
fn held_call(
    format: AgentFormat,
    waker: fn(&Arc<AtomicUsize>) -> (Wake, mpsc::Sender<()>),
    frame: usize,
) -> (Arc<DspPool>, PoolCall, mpsc::Sender<()>, Arc<AtomicUsize>) {
    let pool = DspPool::new(1).unwrap();
    let wakes = Arc::new(AtomicUsize::new(0));
    let (wake, release) = waker(&wakes);
    let call = pool
        .open(format, format, InboundConfig::default(), ENGINE, wake)
        .unwrap();
    call.push_twilio_media(Instant::now(), 1, 0, &caller_frames(frame, 1)[0])
        .unwrap();
    wait_until(|| wakes.load(Ordering::Relaxed) == 1);
    (pool, call, release, wakes)
}

/// Drains `call` into `out` (frames to `pacer`) until `done`, within a generous limit.
fn collect(call: &mut PoolCall, pacer: &mut OutboundPath, out: &mut CallOut, turns: &mut usize) {
    call.drain(|o| match o {
        PoolOutput::UserAudioChunk(p) => out.payloads.push(p.to_owned()),
        PoolOutput::Frames { event_id, ulaw, .. } => pacer.push_agent_bytes(event_id, ulaw),
        PoolOutput::EndOfTurn => {
            pacer.end_of_turn();
            *turns += 1;
        }
    });
}

fn wait_until(mut step: impl FnMut() -> bool) {
    let limit = Instant::now() + Duration::from_secs(30);
    while !step() {
        assert!(Instant::now() < limit, "no progress");
        thread::park_timeout(Duration::from_millis(5));
    }
}

/// Many calls on two workers, frames of all calls interleaved: every call's payloads and
/// played audio are exactly the inline paths' (the same code runs; only the thread differs).
fn pool_matches_inline(format: AgentFormat) {
    const CALLS: usize = 24;
    const FRAMES: usize = 60;
    let t0 = Instant::now();
    let pool = DspPool::new(2).unwrap();
    let wakes = Arc::new(AtomicUsize::new(0));
    let mut calls: Vec<PoolCall> = (0..CALLS)
        .map(|_| {
            pool.open(
                format,
                format,
                InboundConfig::default(),
                ENGINE,
                waker(&wakes),
            )
        })
        .collect::<Result<_, _>>()
        .unwrap();
    let inputs: Vec<Vec<String>> = (0..CALLS).map(|k| caller_frames(k, FRAMES)).collect();
    // The agent answers with the caller's own audio in its format, in 250 ms-ish chunks.
    let agent: Vec<Vec<String>> = inputs
        .iter()
        .map(|f| {
            let payloads = inline_call(format, f, &[], t0).payloads;
            let bytes: Vec<u8> = payloads
                .iter()
                .flat_map(|p| STANDARD.decode(p).unwrap())
                .collect();
            bytes.chunks(2001).map(|c| STANDARD.encode(c)).collect()
        })
        .collect();
    let mut pacers: Vec<OutboundPath> = (0..CALLS)
        .map(|_| OutboundPath::new(AgentFormat::Ulaw8000, OutboundConfig::default()).unwrap())
        .collect();
    let mut got: Vec<CallOut> = (0..CALLS).map(|_| CallOut::default()).collect();
    let mut turns = [0; CALLS];
    // Rounds of 10 frames per call, each call's frames interleaved with the others'; the test
    // keeps within the queues (CALL_QUEUE_DEPTH) as a paced caller does, so nothing drops.
    for round in (0..FRAMES).step_by(10) {
        for i in round..round + 10 {
            for (c, input) in calls.iter().zip(&inputs) {
                c.push_twilio_media(t0, i as u64 + 1, 20 * i as u64, &input[i])
                    .unwrap();
            }
        }
        for (k, c) in calls.iter_mut().enumerate() {
            wait_until(|| {
                collect(c, &mut pacers[k], &mut got[k], &mut turns[k]);
                got[k].payloads.len() == round + 10
            });
        }
    }
    for (k, c) in calls.iter().enumerate() {
        for a in &agent[k] {
            c.push_agent_audio(t0, 3, a).unwrap();
        }
        c.end_of_turn(t0).unwrap();
    }
    for (k, c) in calls.iter_mut().enumerate() {
        let want = inline_call(format, &inputs[k], &agent[k], t0);
        let (got, pacer, turns) = (&mut got[k], &mut pacers[k], &mut turns[k]);
        wait_until(|| {
            collect(c, pacer, got, turns);
            *turns == 1
        });
        (got.heard, got.marks) = play(pacer, t0);
        assert!(!want.heard.is_empty() && want.payloads.len() == FRAMES);
        assert_eq!(*got, want, "call {k}");
        assert_eq!(c.stats().drops, 0);
    }
    // Batched hand-off: far fewer wake-ups than results (24 × (60 + frames)).
    assert!(wakes.load(Ordering::Relaxed) >= 1);
    assert_eq!(pool.drops_total(), 0);
}

#[test]
fn pool_output_is_the_inline_output_ulaw() {
    pool_matches_inline(AgentFormat::Ulaw8000);
}

#[test]
fn pool_output_is_the_inline_output_pcm_16000() {
    pool_matches_inline(AgentFormat::Pcm16000);
}

#[test]
fn an_interruption_discards_frames_in_flight() {
    let t0 = Instant::now();
    // One frame, so the worker wakes the call and stalls there.
    let (_pool, mut call, release, _) = held_call(AgentFormat::Pcm16000, stalling_waker, 0);
    // Queued behind the stall: 200 ms of turn 4, the interruption, then 100 ms of turn 5.
    call.push_agent_audio(t0, 4, &STANDARD.encode(vec![0x11u8; 6400]))
        .unwrap();
    call.interrupt(t0, Some(5)).unwrap();
    call.push_agent_audio(t0, 5, &STANDARD.encode(vec![0x22u8; 3200]))
        .unwrap();
    call.end_of_turn(t0).unwrap();
    release.send(()).unwrap();
    let mut pacer = OutboundPath::new(AgentFormat::Ulaw8000, OutboundConfig::default()).unwrap();
    let (mut got, mut turns) = (CallOut::default(), 0);
    let mut events = Vec::new();
    wait_until(|| {
        call.drain(|o| match o {
            PoolOutput::UserAudioChunk(p) => got.payloads.push(p.to_owned()),
            PoolOutput::Frames { event_id, ulaw, .. } => {
                events.push(event_id);
                pacer.push_agent_bytes(event_id, ulaw);
            }
            PoolOutput::EndOfTurn => {
                pacer.end_of_turn();
                turns += 1;
            }
        });
        turns == 1
    });
    // Only turn 5 reaches the pacer: 100 ms = 5 frames (the resampler tail may add one).
    assert!(events.iter().all(|&e| e == 5), "{events:?}");
    let (heard, _) = play(&mut pacer, t0);
    assert!((800..=960).contains(&heard.len()), "{}", heard.len());
    assert!(call.stats().discarded >= 1);
    assert_eq!(call.stats().drops, 0);
}

#[test]
fn a_full_queue_counts_drops_and_never_blocks() {
    let t0 = Instant::now();
    let pool = DspPool::new(1).unwrap();
    let wakes = Arc::new(AtomicUsize::new(0));
    let (wake, release) = stalling_waker(&wakes);
    let mut call = pool
        .open(
            AgentFormat::Ulaw8000,
            AgentFormat::Ulaw8000,
            InboundConfig::default(),
            ENGINE,
            wake,
        )
        .unwrap();
    let frames = caller_frames(1, CALL_QUEUE_DEPTH + 41);
    call.push_twilio_media(t0, 1, 0, &frames[0]).unwrap();
    let mut n = 0;
    wait_until(|| {
        call.drain(|_| n += 1);
        n == 1 && wakes.load(Ordering::Relaxed) == 1
    });
    // The worker is stalled: the call's buffers run out after CALL_QUEUE_DEPTH commands,
    // and every push after that returns at once as a counted drop.
    let mut refused = 0;
    for (i, f) in frames.iter().enumerate().skip(1) {
        if call
            .push_twilio_media(t0, i as u64 + 1, 20 * i as u64, f)
            .is_err()
        {
            refused += 1;
        }
    }
    assert_eq!(refused, 40);
    assert_eq!(call.stats().drops, refused as u64);
    assert_eq!(pool.drops_total(), refused as u64);
    release.send(()).unwrap();
    // What was queued still comes through, none of it dropped on the way back.
    wait_until(|| {
        call.drain(|o| {
            if let PoolOutput::UserAudioChunk(_) = o {
                n += 1;
            }
        });
        n > CALL_QUEUE_DEPTH
    });
    assert_eq!(n, 1 + CALL_QUEUE_DEPTH);
    assert_eq!(call.stats().drops, 40);
}

/// A call task far behind: its result queue is full of frames, yet both overlapping ends of
/// turn come back (control results are never dropped) and the call's count of pending ends
/// follows them.
#[test]
fn ends_of_turn_are_delivered_past_a_full_result_queue() {
    let t0 = Instant::now();
    let (pool, mut call, release, wakes) = held_call(AgentFormat::Ulaw8000, gated_waker, 3);
    // One whole frame per command, so one result each; nothing is drained until the end.
    let frame = STANDARD.encode([0x42u8; 160]);
    for _ in 0..100 {
        call.push_agent_audio(t0, 1, &frame).unwrap();
    }
    release.send(()).unwrap();
    wait_until(|| wakes.load(Ordering::Relaxed) == 2);
    for _ in 0..100 {
        call.push_agent_audio(t0, 1, &frame).unwrap();
    }
    call.end_of_turn(t0).unwrap();
    call.end_of_turn(t0).unwrap();
    assert!(call.turn_end_pending());
    // The worker handles all of it in one batch and stops at its wake-up: then drain.
    release.send(()).unwrap();
    wait_until(|| wakes.load(Ordering::Relaxed) == 3);
    drop(release);
    let (mut frames, mut turns) = (0, 0);
    wait_until(|| {
        call.drain(|o| match o {
            PoolOutput::Frames { ulaw, .. } => frames += ulaw.len() / 160,
            PoolOutput::EndOfTurn => turns += 1,
            PoolOutput::UserAudioChunk(_) => {}
        });
        turns == 2
    });
    assert!(!call.turn_end_pending());
    // 201 data results met CALL_OUTPUT_DEPTH slots: the rest were counted drops.
    let dropped = 201 - CALL_OUTPUT_DEPTH as u64;
    assert_eq!(call.stats().drops, dropped);
    assert_eq!(frames as u64, 200 - dropped);
    // Drops on the worker's side count in the pool's total too.
    assert_eq!(pool.drops_total(), dropped);
}

/// Two ends of turn overlap (the second queued before the first one's result is drained): the
/// call still counts one pending after draining the first, none after the second.
#[test]
fn overlapping_ends_of_turn_are_counted_not_flagged() {
    let t0 = Instant::now();
    // One frame, so the worker stops in its first wake-up; the first turn queues behind it.
    let (_pool, mut call, release, wakes) = held_call(AgentFormat::Ulaw8000, gated_waker, 4);
    call.push_agent_audio(t0, 1, &STANDARD.encode([0x42u8; 100]))
        .unwrap();
    call.end_of_turn(t0).unwrap();
    release.send(()).unwrap();
    // The worker handled the first end of turn and waits in its wake-up: queue the second.
    wait_until(|| wakes.load(Ordering::Relaxed) == 2);
    call.push_agent_audio(t0, 2, &STANDARD.encode([0x43u8; 100]))
        .unwrap();
    call.end_of_turn(t0).unwrap();
    let mut turns = 0;
    call.drain(|o| turns += usize::from(o == PoolOutput::EndOfTurn));
    assert_eq!(turns, 1);
    assert!(call.turn_end_pending(), "the second is still out");
    drop(release);
    wait_until(|| {
        call.drain(|o| turns += usize::from(o == PoolOutput::EndOfTurn));
        turns == 2
    });
    assert!(!call.turn_end_pending());
}

#[test]
fn a_worker_serves_a_batch_with_one_wake_up_per_call() {
    let t0 = Instant::now();
    let pool = DspPool::new(1).unwrap();
    let (wakes_a, wakes_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (wake_a, release) = stalling_waker(&wakes_a);
    let open = |wake| {
        let f = AgentFormat::Pcm16000;
        pool.open(f, f, InboundConfig::default(), ENGINE, wake)
            .unwrap()
    };
    let (mut a, mut b) = (open(wake_a), open(waker(&wakes_b)));
    let frames = caller_frames(2, 21);
    a.push_twilio_media(t0, 1, 0, &frames[0]).unwrap();
    wait_until(|| wakes_a.load(Ordering::Relaxed) == 1);
    // Twenty frames for each call queue up behind the stall, then one batch serves them all.
    for (i, f) in frames.iter().enumerate().skip(1) {
        let (chunk, ts) = (i as u64 + 1, 20 * i as u64);
        a.push_twilio_media(t0, chunk, ts, f).unwrap();
        b.push_twilio_media(t0, chunk, ts, f).unwrap();
    }
    release.send(()).unwrap();
    let (mut na, mut nb) = (0, 0);
    wait_until(|| {
        a.drain(|_| na += 1);
        b.drain(|_| nb += 1);
        // The results are queued before the wake-ups: wait for those too (both calls', in
        // whichever order the worker sends them).
        na == 21
            && nb == 20
            && wakes_a.load(Ordering::Relaxed) >= 2
            && wakes_b.load(Ordering::Relaxed) >= 1
    });
    assert_eq!(wakes_a.load(Ordering::Relaxed), 2);
    assert_eq!(wakes_b.load(Ordering::Relaxed), 1);
}
