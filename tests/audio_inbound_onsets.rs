//! Caller onsets at every position of a 20 ms frame, through the inbound path to a `pcm_16000`
//! agent (issue 16 point 4, docs/dsp.md §5.5): with the IIR halfband (`Engine::Auto`) an onset
//! at sample k of a caller frame shows in the `user_audio_chunk` made from that same frame; with
//! the 71-tap FIR (2.19 ms linear-phase delay) the onsets in the frame's last ~2 ms reach the
//! agent only with the next frame, 20 ms later — the p99 of 21 ms in BENCHMARKS.md.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ignis::audio::resample::Engine;
use ignis::audio::{AgentFormat, InboundConfig, InboundPath, mulaw};

/// Caller samples per 20 ms frame.
const FRAME: usize = 160;
/// Silent frames before the onset frame (settles nothing: the path starts silent, but it makes
/// the onset frame a frame in the middle of a call).
const LEAD_FRAMES: u64 = 3;
/// Onset probe: a 1 kHz cosine from its peak, as the load bench's probes
/// (benches/support/loadgen.rs).
const TONE_AMP: f64 = 12000.0;

/// 16 kHz samples of the chunk made from the frame holding an onset at sample `k`, and of the
/// next chunk.
fn chunks_around_onset(engine: Engine, k: usize) -> (Vec<i16>, Vec<i16>) {
    let config = InboundConfig {
        engine,
        ..InboundConfig::default()
    };
    let mut p = InboundPath::new(AgentFormat::Pcm16000, config).unwrap();
    let t0 = Instant::now();
    let mut push = |i: u64, pcm: &[i16]| {
        let mut ulaw = vec![0u8; FRAME];
        mulaw::encode_into(pcm, &mut ulaw);
        let now = t0 + Duration::from_millis(20 * i);
        p.push_twilio_media(now, i + 1, 20 * i, &STANDARD.encode(&ulaw))
            .unwrap();
        let mut out = Vec::new();
        while let Some(s) = p.poll_user_audio_chunk() {
            let bytes = STANDARD.decode(s).unwrap();
            out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]])),
            );
        }
        out
    };
    for i in 0..LEAD_FRAMES {
        assert!(push(i, &[0; FRAME]).iter().all(|&s| s == 0));
    }
    let tone = |n: usize| {
        let t = n as f64 / 8000.0;
        (TONE_AMP * (2.0 * std::f64::consts::PI * 1000.0 * t).cos()) as i16
    };
    let onset: Vec<i16> = (0..FRAME)
        .map(|n| if n < k { 0 } else { tone(n - k) })
        .collect();
    let next: Vec<i16> = (FRAME..2 * FRAME).map(|n| tone(n - k)).collect();
    let same = push(LEAD_FRAMES, &onset);
    let following = push(LEAD_FRAMES + 1, &next);
    assert_eq!((same.len(), following.len()), (2 * FRAME, 2 * FRAME));
    (same, following)
}

/// Loudest sample at or after the onset (16 kHz index 2k) in the onset frame's own chunk, as
/// a fraction of the probe's amplitude.
fn peak_after_onset(engine: Engine, k: usize) -> f64 {
    let (same, following) = chunks_around_onset(engine, k);
    // Nothing leaks before the onset (causal path, silence before it).
    assert!(
        same[..2 * k].iter().all(|&s| s.unsigned_abs() < 64),
        "{engine:?} k {k}"
    );
    // And the tone is there in the next chunk whatever the engine.
    assert!(
        following
            .iter()
            .any(|&s| f64::from(s).abs() > 0.5 * TONE_AMP)
    );
    let peak = same[2 * k..]
        .iter()
        .map(|&s| f64::from(s).abs())
        .fold(0.0, f64::max);
    peak / TONE_AMP
}

/// Onset positions whose own chunk stays below `threshold` (fraction of the probe amplitude)
/// after the onset: onsets the agent only gets with the next frame.
fn missed(engine: Engine, threshold: f64) -> Vec<usize> {
    (0..FRAME)
        .filter(|&k| peak_after_onset(engine, k) < threshold)
        .collect()
}

/// Threshold of "audible onset": −30 dB re the probe's amplitude, far above μ-law's idle
/// noise (silence decodes to exact 0) and far below speech.
const PRESENT: f64 = 0.0316;
/// The load bench's onset detector: a sample louder than 3000 for a 12000 probe (a quarter).
const BENCH_DETECTOR: f64 = 3000.0 / TONE_AMP;

#[test]
fn iir_onset_at_every_position_shows_in_its_own_frame() {
    let profile: Vec<f64> = (150..FRAME)
        .map(|k| peak_after_onset(Engine::Auto, k))
        .collect();
    println!("IIR, peak after the onset in its own chunk, k = 150..159: {profile:.3?}");
    assert_eq!(missed(Engine::Auto, PRESENT), Vec::<usize>::new());
    // With the bench's coarser detector only the frame's very last sample (0.125 ms before
    // the frame ends) misses: its two 16 kHz outputs hold 1 % and 8 % of the tone, the rise
    // comes 3 samples later (docs/dsp.md §5.5). 1 position in 160: 0.6 % of random onsets.
    assert_eq!(missed(Engine::Auto, BENCH_DETECTOR), vec![FRAME - 1]);
}

#[test]
fn fir_misses_the_onsets_of_the_frames_last_two_milliseconds() {
    // The contrast that motivated the IIR: the 71-tap FIR delays by 35 samples at 16 kHz
    // (17.5 caller samples, 2.19 ms), so an onset in the last ~17 positions is still inside
    // the filter when the frame's chunk leaves.
    let at_present = missed(Engine::Halfband, PRESENT);
    let at_bench = missed(Engine::Halfband, BENCH_DETECTOR);
    println!("FIR misses (−30 dB): {at_present:?}");
    println!("FIR misses (bench detector): {at_bench:?}");
    for m in [&at_present, &at_bench] {
        // A contiguous run up to the frame's end …
        let first = m.first().copied().unwrap_or(FRAME);
        assert_eq!(*m, (first..FRAME).collect::<Vec<_>>());
    }
    // … of roughly the filter's delay.
    assert!(
        (10..=20).contains(&at_present.len()),
        "{}",
        at_present.len()
    );
    assert!((14..=20).contains(&at_bench.len()), "{}", at_bench.len());
}
