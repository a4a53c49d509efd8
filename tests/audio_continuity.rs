//! Issue 16 point 5: continuous agent audio reaches the caller without inserted silence, even
//! when every chunk carries a new `event_id`; only a real pause pads, with exactly one frame
//! (docs/dsp.md §3.8). Driven in virtual time like the bridge drives the path.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ignis::audio::{AgentFormat, OutboundConfig, OutboundPath, Transmit, mulaw};

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

/// Polls like the bridge (until `None`, then sleep until `poll_timeout`) from `*now` up to
/// `until`, appending every media byte with the time it was sent.
fn drive(p: &mut OutboundPath, now: &mut Instant, until: Instant, out: &mut Vec<(Instant, u8)>) {
    for _ in 0..100_000 {
        while let Some(t) = p.poll_transmit(*now) {
            if let Transmit::Media(s) = t {
                let bytes = STANDARD.decode(s).unwrap();
                assert!(!bytes.is_empty() && bytes.len() % 160 == 0);
                out.extend(bytes.into_iter().map(|b| (*now, b)));
            }
        }
        match p.poll_timeout() {
            Some(t) if t <= until => *now = (*now).max(t),
            _ => break,
        }
    }
    *now = (*now).max(until);
}

/// A 440 Hz tone of `samples` samples at `rate`, amplitude 8000, as PCM16 LE.
fn tone_pcm(rate: u32, samples: usize) -> Vec<u8> {
    (0..samples)
        .flat_map(|n| {
            let v =
                8000.0 * (2.0 * std::f64::consts::PI * 440.0 * n as f64 / f64::from(rate)).sin();
            (v as i16).to_le_bytes()
        })
        .collect()
}

fn tone_ulaw(samples: usize) -> Vec<u8> {
    tone_pcm(8000, samples)
        .chunks_exact(2)
        .map(|p| mulaw::encode_sample(i16::from_le_bytes([p[0], p[1]])))
        .collect()
}

/// Feeds `audio` in `chunk`-byte pieces, one every 200 ms (faster than real time, as an agent
/// streams), each with its own `event_id` when `new_ids`, then ends the turn and plays it out.
fn play(format: AgentFormat, audio: &[u8], chunk: usize, new_ids: bool) -> (Vec<u8>, OutboundPath) {
    let t0 = Instant::now();
    let mut p = OutboundPath::new(format, OutboundConfig::default()).unwrap();
    let (mut now, mut out) = (t0, Vec::new());
    for (i, part) in audio.chunks(chunk).enumerate() {
        let id = if new_ids { 10 + i as u64 } else { 10 };
        p.push_agent_audio(now, id, &STANDARD.encode(part)).unwrap();
        drive(&mut p, &mut now, at(t0, 200 * (i as u64 + 1)), &mut out);
    }
    p.end_of_turn();
    drive(&mut p, &mut now, at(t0, 60_000), &mut out);
    (out.into_iter().map(|(_, b)| b).collect(), p)
}

#[test]
fn ulaw_chunks_with_new_event_ids_pass_through_sample_exact() {
    // 2 s of tone in 250 ms chunks (12.5 frames: every boundary falls mid-frame).
    let tone = tone_ulaw(16_000);
    let (out, p) = play(AgentFormat::Ulaw8000, &tone, 2000, true);
    assert_eq!(out.len(), tone.len(), "no frame of silence inserted");
    assert_eq!(out, tone);
    let s = p.stats();
    assert_eq!((s.turns, s.pause_pads, s.playout.underruns), (1, 0, 0));
}

/// Longest run of decoded samples quieter than 500 in `out[..end]`.
fn longest_quiet_run(out: &[u8], end: usize) -> usize {
    let (mut run, mut longest) = (0, 0);
    for &c in &out[..end] {
        run = if mulaw::decode_sample(c).abs() < 500 {
            run + 1
        } else {
            0
        };
        longest = longest.max(run);
    }
    longest
}

#[test]
fn pcm16000_chunks_with_new_event_ids_stay_continuous() {
    // 2 s of tone in 250 ms chunks: 4000 samples at 16 kHz, 2000 at 8 kHz (12.5 frames).
    let pcm = tone_pcm(16_000, 32_000);
    let (out, p) = play(AgentFormat::Pcm16000, &pcm, 8000, true);
    // 16 000 samples at 8 kHz: exactly 100 frames, nothing padded anywhere.
    assert_eq!(out.len(), 16_000);
    // A 440 Hz tone of amplitude 8000 is below 500 for at most one sample per zero crossing;
    // 10 ms of inserted silence would be an 80-sample run.
    assert!(longest_quiet_run(&out, 16_000) <= 2, "silence inserted");
    // And it is the very signal one chunk with one id gives.
    let (reference, _) = play(AgentFormat::Pcm16000, &pcm, pcm.len(), false);
    assert_eq!(out, reference);
    assert_eq!((p.stats().turns, p.stats().pause_pads), (1, 0));
}

#[test]
fn a_real_pause_pads_exactly_one_frame_when_the_caller_would_run_dry() {
    let t0 = Instant::now();
    let mut p = OutboundPath::new(AgentFormat::Ulaw8000, OutboundConfig::default()).unwrap();
    let (a, b) = (tone_ulaw(2000), tone_ulaw(2000));
    let (mut now, mut out) = (t0, Vec::new());
    // 250 ms (12 frames and a half), then nothing for 600 ms: the caller hears it all by 250 ms.
    p.push_agent_audio(now, 1, &STANDARD.encode(&a)).unwrap();
    drive(&mut p, &mut now, at(t0, 600), &mut out);
    assert_eq!(out.len(), 13 * 160, "the partial frame went out, padded");
    // Not before Twilio was down to its last frame: the 12th frame left at 200 ms (in the
    // timer's top-up at the 20 ms floor, docs/dsp.md §3.7) and plays until 240 ms, so the
    // padded 13th leaves at 220 ms.
    assert_eq!(out[12 * 160].0, at(t0, 220));
    assert_eq!(out[11 * 160].0, at(t0, 200));
    p.push_agent_audio(now, 2, &STANDARD.encode(&b)).unwrap();
    p.end_of_turn();
    drive(&mut p, &mut now, at(t0, 60_000), &mut out);
    let bytes: Vec<u8> = out.iter().map(|&(_, c)| c).collect();
    let mut expected = a.clone();
    expected.extend([mulaw::SILENCE; 80]);
    expected.extend(&b);
    expected.extend([mulaw::SILENCE; 80]);
    assert_eq!(bytes, expected);
    let s = p.stats();
    assert_eq!((s.pause_pads, s.turns), (1, 1));
}

#[test]
fn a_chunk_arriving_before_the_caller_runs_dry_is_not_padded() {
    let t0 = Instant::now();
    let mut p = OutboundPath::new(AgentFormat::Ulaw8000, OutboundConfig::default()).unwrap();
    let tone = tone_ulaw(4000);
    let (mut now, mut out) = (t0, Vec::new());
    p.push_agent_audio(now, 1, &STANDARD.encode(&tone[..2000]))
        .unwrap();
    // The agent is slower than real time but not late: Twilio still holds 20 ms at 210 ms.
    drive(&mut p, &mut now, at(t0, 210), &mut out);
    assert_eq!(out.len(), 12 * 160);
    p.push_agent_audio(now, 2, &STANDARD.encode(&tone[2000..]))
        .unwrap();
    p.end_of_turn();
    drive(&mut p, &mut now, at(t0, 60_000), &mut out);
    let bytes: Vec<u8> = out.iter().map(|&(_, c)| c).collect();
    assert_eq!(bytes, tone);
    assert_eq!(p.stats().pause_pads, 0);
}

/// An agent that sends `turns` turns of three 250 ms chunks, one turn per second, the chunks
/// `interval_ms` apart (250: real time, 125: twice real time), each turn ended 850 ms after it
/// began, as the bridge's idle rule would. Returns every media byte with its send time.
fn paced_turns(
    p: &mut OutboundPath,
    t0: Instant,
    tone: &[u8],
    turns: u64,
    interval_ms: u64,
) -> Vec<(Instant, u8)> {
    let (mut now, mut out) = (t0, Vec::new());
    for turn in 0..turns {
        let start = 1000 * turn;
        for (i, chunk) in tone.chunks(2000).enumerate() {
            drive(
                p,
                &mut now,
                at(t0, start + interval_ms * i as u64),
                &mut out,
            );
            p.push_agent_audio(now, 1 + turn, &STANDARD.encode(chunk))
                .unwrap();
        }
        drive(p, &mut now, at(t0, start + 850), &mut out);
        p.end_of_turn();
    }
    drive(p, &mut now, at(t0, 1000 * turns + 1000), &mut out);
    out
}

/// The bytes sent in `[from, to)` ms after `t0`.
fn sent_between(out: &[(Instant, u8)], t0: Instant, from: u64, to: u64) -> Vec<u8> {
    out.iter()
        .filter(|(t, _)| *t >= at(t0, from) && *t < at(t0, to))
        .map(|&(_, b)| b)
        .collect()
}

fn cushioned(step_ms: u32) -> OutboundConfig {
    let mut c = OutboundConfig::default();
    c.playout.cushion_step_ms = step_ms;
    c
}

#[test]
fn a_real_time_agent_gets_a_cushion_after_its_first_late_chunk() {
    // 750 ms per turn sent exactly in real time (the load bench's steady workload): each chunk
    // ends mid-frame, and the next one comes just as the caller would run dry (docs/dsp.md §3.9).
    let tone = tone_ulaw(6000);
    let mut turn = tone.clone();
    turn.extend([mulaw::SILENCE; 80]);
    let t0 = Instant::now();
    let mut p = OutboundPath::new(AgentFormat::Ulaw8000, cushioned(40)).unwrap();
    let out = paced_turns(&mut p, t0, &tone, 3, 250);
    // Turn 1: the second chunk came after the pause pad (and now starts on a fresh frame, 40 ms
    // after it came); from then on the cushion holds, and 25 frames end the turn exactly.
    let mut first = tone[..2000].to_vec();
    first.extend([mulaw::SILENCE; 80]);
    first.extend(&tone[2000..]);
    assert!(sent_between(&out, t0, 0, 1000) == first);
    assert_eq!(out[13 * 160].0, at(t0, 250 + 40));
    // Turns 2 and 3 start 40 ms after their first chunk and play without a gap.
    for k in 1..3 {
        assert!(sent_between(&out, t0, 1000 * k, 1000 * (k + 1)) == turn);
        let first_sent = out.iter().find(|(t, _)| *t >= at(t0, 1000 * k)).unwrap().0;
        assert_eq!(first_sent, at(t0, 1000 * k + 40));
    }
    let s = p.stats();
    assert_eq!((s.playout.late_arrivals, s.playout.cushion_ms), (1, 40));
    assert_eq!(
        s.pause_pads,
        1 + 2,
        "one at the late chunk, one per later turn's end"
    );

    // Without a cushion every chunk boundary of every turn is padded.
    let mut p = OutboundPath::new(AgentFormat::Ulaw8000, cushioned(0)).unwrap();
    let out = paced_turns(&mut p, t0, &tone, 3, 250);
    assert!(sent_between(&out, t0, 1000, 2000) != turn);
    assert_eq!(p.stats().pause_pads, 3 * 3);
}

#[test]
fn an_agent_ahead_of_the_caller_gets_no_cushion_and_loses_one_it_had() {
    let tone = tone_ulaw(6000);
    let t0 = Instant::now();
    // Twice real time: every chunk finds audio still held, the first frame leaves at once.
    let mut p = OutboundPath::new(AgentFormat::Ulaw8000, cushioned(40)).unwrap();
    let out = paced_turns(&mut p, t0, &tone, 3, 125);
    for k in 0..3 {
        let first_sent = out.iter().find(|(t, _)| *t >= at(t0, 1000 * k)).unwrap().0;
        assert_eq!(first_sent, at(t0, 1000 * k));
    }
    let s = p.stats();
    assert_eq!((s.playout.late_arrivals, s.playout.cushion_ms), (0, 0));

    // A real-time turn gives a cushion; a turn the agent stays ahead in takes it back.
    let mut p = OutboundPath::new(AgentFormat::Ulaw8000, cushioned(40)).unwrap();
    paced_turns(&mut p, t0, &tone, 1, 250);
    assert_eq!(p.stats().playout.cushion_ms, 40);
    let later = at(t0, 5000);
    let out = paced_turns(&mut p, later, &tone, 2, 125);
    // The cushioned start, then none once the fast turn has ended.
    assert_eq!(out[0].0, at(later, 40));
    let second = out.iter().find(|(t, _)| *t >= at(later, 1000)).unwrap().0;
    assert_eq!(second, at(later, 1000));
    assert_eq!(p.stats().playout.cushion_ms, 0);
}

/// A turn that starts with a chunk smaller than one frame while the call has a cushion.
/// Nothing can leave before the hold ends anyway, so the half frame must not be padded at once:
/// the next chunk, well within the cushion, completes it.
#[test]
fn a_sub_frame_chunk_under_a_hold_is_not_padded_before_the_hold_ends() {
    let tone = tone_ulaw(6000);
    let t0 = Instant::now();
    let mut p = OutboundPath::new(AgentFormat::Ulaw8000, cushioned(40)).unwrap();
    // Teach the cushion (one real-time turn, as above).
    paced_turns(&mut p, t0, &tone, 1, 250);
    assert_eq!(p.stats().playout.cushion_ms, 40);
    let pads = p.stats().pause_pads;
    let later = at(t0, 5000);
    let (mut now, mut out) = (later, Vec::new());
    // 10 ms, then 10 ms 5 ms later, then the rest: one turn, no gap needed anywhere.
    p.push_agent_audio(now, 9, &STANDARD.encode(&tone[..80]))
        .unwrap();
    drive(&mut p, &mut now, at(later, 5), &mut out);
    p.push_agent_audio(now, 9, &STANDARD.encode(&tone[80..160]))
        .unwrap();
    p.push_agent_audio(now, 9, &STANDARD.encode(&tone[160..1600]))
        .unwrap();
    drive(&mut p, &mut now, at(later, 1000), &mut out);
    let bytes: Vec<u8> = out.iter().map(|&(_, b)| b).collect();
    assert_eq!(
        p.stats().pause_pads,
        pads,
        "the half frame was padded while the hold kept everything back"
    );
    assert!(bytes == tone[..1600], "silence inserted after 10 ms");
}
