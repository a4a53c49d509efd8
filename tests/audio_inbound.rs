//! Inbound path scenarios in virtual time: in order, duplicate, stale, gap, long gap,
//! timestamp jump; pass-through vs transcoding payloads; batching.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ignis::audio::{AgentFormat, InboundConfig, InboundPath, mulaw};

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

/// A 20 ms μ-law frame of a 1 kHz tone, frame index `i` (continuous phase).
fn tone_frame(i: u64) -> Vec<u8> {
    let pcm: Vec<i16> = (0..160)
        .map(|k| {
            let n = i * 160 + k;
            (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 8000.0).sin()) as i16
        })
        .collect();
    let mut out = vec![0u8; 160];
    mulaw::encode_into(&pcm, &mut out);
    out
}

fn drain(p: &mut InboundPath) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    while let Some(s) = p.poll_user_audio_chunk() {
        v.push(STANDARD.decode(s).unwrap());
    }
    v
}

#[test]
fn in_order_frames_come_out_at_once_with_no_added_delay() {
    let t0 = Instant::now();
    for format in AgentFormat::ALL {
        let mut p = InboundPath::new(format, InboundConfig::default()).unwrap();
        let expect = format.samples_in_ms(20) * format.bytes_per_sample();
        for i in 0..20u64 {
            let f = STANDARD.encode(tone_frame(i));
            p.push_twilio_media(at(t0, 20 * i), i + 1, 20 * i, &f)
                .unwrap();
            let out = drain(&mut p);
            // Every frame yields its payload immediately (nothing held for jitter).
            assert_eq!(out.len(), 1, "{format} frame {i}");
            assert_eq!(out[0].len(), expect, "{format}");
        }
        let s = p.stats();
        assert_eq!(s.jitter.frames, 20);
        assert_eq!(s.payloads, 20);
        if format.is_ulaw() {
            assert_eq!(s.passthrough_payloads, 20);
        }
    }
}

#[test]
fn ulaw_pass_through_is_byte_identical() {
    let t0 = Instant::now();
    let mut p = InboundPath::new(AgentFormat::Ulaw8000, InboundConfig::default()).unwrap();
    let f = STANDARD.encode(tone_frame(3));
    p.push_twilio_media(t0, 1, 0, &f).unwrap();
    assert_eq!(p.poll_user_audio_chunk(), Some(f.as_str()));
}

#[test]
fn duplicates_and_stale_frames_are_dropped() {
    let t0 = Instant::now();
    let mut p = InboundPath::new(AgentFormat::Pcm16000, InboundConfig::default()).unwrap();
    let f = |i| STANDARD.encode(tone_frame(i));
    p.push_twilio_media(at(t0, 0), 1, 0, &f(0)).unwrap();
    p.push_twilio_media(at(t0, 20), 2, 20, &f(1)).unwrap();
    assert_eq!(drain(&mut p).len(), 2);
    p.push_twilio_media(at(t0, 21), 2, 20, &f(1)).unwrap();
    p.push_twilio_media(at(t0, 22), 1, 0, &f(0)).unwrap();
    assert!(drain(&mut p).is_empty());
    let s = p.stats().jitter;
    assert_eq!((s.duplicates, s.stale, s.frames), (1, 1, 2));
}

#[test]
fn gap_is_filled_with_faded_repeat_so_the_timeline_stays_contiguous() {
    let t0 = Instant::now();
    let mut p = InboundPath::new(AgentFormat::Pcm8000, InboundConfig::default()).unwrap();
    let f = |i| STANDARD.encode(tone_frame(i));
    p.push_twilio_media(at(t0, 0), 1, 0, &f(0)).unwrap();
    drain(&mut p);
    // Frames 2 and 3 (40 ms) never arrive.
    p.push_twilio_media(at(t0, 60), 4, 60, &f(3)).unwrap();
    let out: Vec<u8> = drain(&mut p).concat();
    assert_eq!(out.len(), 3 * 320, "40 ms of fill + the frame");
    let samples: Vec<i16> = out
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let energy = |s: &[i16]| s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len() as f64;
    // The fill starts as a repeat of the last frame and fades toward zero.
    assert!(energy(&samples[..80]) > 4.0 * energy(&samples[240..320]));
    assert!(energy(&samples[240..320]) > 0.0);
    let s = p.stats().jitter;
    assert_eq!((s.gaps, s.missing_chunks), (1, 2));
    assert_eq!(s.concealed_ms, 40.0);
}

#[test]
fn long_gap_fades_then_goes_silent_and_jump_resyncs() {
    let t0 = Instant::now();
    let mut p = InboundPath::new(AgentFormat::Ulaw8000, InboundConfig::default()).unwrap();
    let f = |i| STANDARD.encode(tone_frame(i));
    p.push_twilio_media(at(t0, 0), 1, 0, &f(0)).unwrap();
    drain(&mut p);
    p.push_twilio_media(at(t0, 320), 2, 320, &f(1)).unwrap();
    let out: Vec<u8> = drain(&mut p).concat();
    assert_eq!(out.len(), 2400 + 160);
    // Past the 60 ms concealment limit the fill is μ-law silence.
    assert!(out[480..2400].iter().all(|&b| b == mulaw::SILENCE));
    assert!(out[..80].iter().any(|&b| b != mulaw::SILENCE));
    let s = p.stats().jitter;
    assert_eq!((s.concealed_ms, s.silence_ms), (60.0, 240.0));
    // A timestamp jump past the fill limit re-syncs without a flood of silence.
    p.push_twilio_media(at(t0, 340), 3, 60_000, &f(2)).unwrap();
    assert_eq!(drain(&mut p).concat().len(), 160);
    p.push_twilio_media(at(t0, 360), 4, 60_020, &f(3)).unwrap();
    assert_eq!(drain(&mut p).concat().len(), 160);
    assert_eq!(p.stats().jitter.resyncs, 1);
    assert_eq!(p.stats().jitter.max_arrival_gap, Duration::from_millis(320));
}

#[test]
fn batching_and_finish() {
    let t0 = Instant::now();
    let config = InboundConfig {
        batch_ms: 60,
        ..InboundConfig::default()
    };
    let mut p = InboundPath::new(AgentFormat::Pcm16000, config).unwrap();
    let mut payloads = 0;
    for i in 0..7u64 {
        let f = STANDARD.encode(tone_frame(i));
        p.push_twilio_media(at(t0, 20 * i), i + 1, 20 * i, &f)
            .unwrap();
        for b in drain(&mut p) {
            assert_eq!(b.len(), 60 * 16 * 2);
            payloads += 1;
        }
    }
    assert_eq!(payloads, 2);
    p.finish();
    let tail = drain(&mut p);
    // 20 ms left over plus the resampler's tail (3 samples: the IIR halfband's nominal delay,
    // docs/dsp.md §5.5).
    use ignis::audio::resample::{Engine, Resampler};
    let delay = Resampler::new(8000, 16000, Engine::Auto, false)
        .unwrap()
        .delay_frames();
    assert_eq!(delay, 3);
    assert_eq!(tail.concat().len(), (320 + delay) * 2);
}

/// 8 → 16 → 8 kHz of a 440 Hz tone with `up` as the upsampler and the FIR down (what
/// `Engine::Auto` picks on the way down); returns input and output, both 8000 samples.
fn round_trip(up: ignis::audio::resample::Engine) -> (Vec<f32>, Vec<f32>) {
    use ignis::audio::resample::{Engine, Resampler};
    let x: Vec<f32> = (0..8000)
        .map(|n| 0.5 * (2.0 * std::f32::consts::PI * 440.0 * n as f32 / 8000.0).sin())
        .collect();
    let mut up = Resampler::new(8000, 16000, up, true).unwrap();
    let mut down = Resampler::new(16000, 8000, Engine::Auto, true).unwrap();
    let mut mid = vec![0.0; 16000 + up.flush_frames_max()];
    let mut n = up.process_into(&x, &mut mid).unwrap();
    n += up.flush_into(&mut mid[n..]).unwrap();
    let mut y = vec![0.0; 8000 + down.flush_frames_max()];
    let mut m = down.process_into(&mid[..n], &mut y).unwrap();
    m += down.flush_into(&mut y[m..]).unwrap();
    assert_eq!(m, 8000);
    y.truncate(m);
    (x, y)
}

#[test]
fn round_trip_8k_16k_8k_keeps_a_tone_clean() {
    // The FIR both ways: linear phase, its delay trimmed exactly, so sample-by-sample equal.
    let (x, y) = round_trip(ignis::audio::resample::Engine::Halfband);
    let (mut sig, mut err) = (0.0f64, 0.0f64);
    for i in 1000..7000 {
        sig += (x[i] as f64).powi(2);
        err += (x[i] as f64 - y[i] as f64).powi(2);
    }
    let snr = 10.0 * (sig / err).log10();
    assert!(snr > 60.0, "round-trip SNR {snr:.1} dB");
}

/// The IIR halfband up (`Engine::Auto` for caller audio): not linear phase, so the tone comes
/// back shifted by the group delay at 440 Hz left after the 3-sample trim. Measured as the
/// residual of a least-squares sine fit at 440 Hz (docs/dsp.md §4.2): clean, and the right
/// amplitude.
#[test]
fn round_trip_with_the_iir_up_keeps_a_tone_clean() {
    let (_, y) = round_trip(ignis::audio::resample::Engine::HalfbandIir);
    let w = 2.0 * std::f64::consts::PI * 440.0 / 8000.0;
    let span = 1000..7000;
    let (mut c, mut s) = (0.0f64, 0.0f64);
    for i in span.clone() {
        c += y[i] as f64 * (w * i as f64).cos();
        s += y[i] as f64 * (w * i as f64).sin();
    }
    let len = span.len() as f64;
    let (c, s) = (2.0 * c / len, 2.0 * s / len);
    let amp = (c * c + s * s).sqrt();
    let (mut sig, mut err) = (0.0f64, 0.0f64);
    for i in span {
        let fit = c * (w * i as f64).cos() + s * (w * i as f64).sin();
        sig += fit * fit;
        err += (y[i] as f64 - fit).powi(2);
    }
    let snr = 10.0 * (sig / err).log10();
    assert!((amp - 0.5).abs() < 0.001, "amplitude {amp}");
    assert!(snr > 60.0, "round-trip SNR {snr:.1} dB");
}
