//! Fidelity on real (synthetic) speech: caller audio through the inbound path to a `pcm_16000`
//! agent, then straight back through the outbound path, must come out as the same speech:
//! correct length, the expected 1–2 sample delay (the inbound IIR halfband's group delay,
//! ~0.21 ms at 1 kHz; the outbound FIR's is trimmed; docs/dsp.md §5.5), and a high correlation
//! with the input.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ignis::audio::{
    AgentFormat, InboundConfig, InboundPath, OutboundConfig, OutboundPath, Transmit, mulaw,
};

const FIXTURE: &[u8] = include_bytes!("data/audio/speech_8k.ulaw");

#[test]
fn speech_round_trip_through_both_paths() {
    let t0 = Instant::now();
    let mut inbound = InboundPath::new(AgentFormat::Pcm16000, InboundConfig::default()).unwrap();
    let mut pcm16 = Vec::new();
    let frames = FIXTURE.len() / 160;
    for (i, f) in FIXTURE.chunks_exact(160).enumerate() {
        let now = t0 + Duration::from_millis(20 * i as u64);
        inbound
            .push_twilio_media(now, i as u64 + 1, 20 * i as u64, &STANDARD.encode(f))
            .unwrap();
        while let Some(p) = inbound.poll_user_audio_chunk() {
            pcm16.extend(STANDARD.decode(p).unwrap());
        }
    }
    assert_eq!(pcm16.len(), frames * 640);

    // The agent "answers" with exactly that audio, in uneven bursts.
    let mut outbound = OutboundPath::new(AgentFormat::Pcm16000, OutboundConfig::default()).unwrap();
    for burst in pcm16.chunks(3001) {
        outbound
            .push_agent_audio(t0, 9, &STANDARD.encode(burst))
            .unwrap();
    }
    outbound.end_of_turn();
    let mut out = Vec::new();
    let mut now = t0;
    loop {
        while let Some(t) = outbound.poll_transmit(now) {
            if let Transmit::Media(s) = t {
                out.extend(STANDARD.decode(s).unwrap());
            }
        }
        match outbound.poll_timeout() {
            Some(t) => now = now.max(t),
            None => break,
        }
    }
    assert_eq!(out.len(), frames * 160);

    let x: Vec<f64> = FIXTURE[..frames * 160]
        .iter()
        .map(|&c| mulaw::decode_sample(c) as f64)
        .collect();
    let y: Vec<f64> = out
        .iter()
        .map(|&c| mulaw::decode_sample(c) as f64)
        .collect();
    let corr = |lag: usize| {
        let n = x.len() - 64;
        let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
        for i in 0..n {
            xy += x[i] * y[i + lag];
            xx += x[i] * x[i];
            yy += y[i + lag] * y[i + lag];
        }
        xy / (xx * yy).sqrt()
    };
    let (lag, best) = (0..40)
        .map(|l| (l, corr(l)))
        .fold((0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a });
    println!("best integer lag {lag} samples, correlation {best:.4}");
    assert!((1..=2).contains(&lag), "lag {lag}");
    // The round trip delay is the IIR's group delay, 3.3–3.5 samples at 16 kHz in the band that
    // holds most speech energy (below 1.5 kHz): 1.7 samples here. Compare against the input
    // delayed by that (linear interpolation) so the residual is codec and filter error (and
    // the IIR's phase dispersion), not misalignment.
    let n = x.len() - 64;
    let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
    for i in 2..n {
        let xd = 0.3 * x[i - 1] + 0.7 * x[i - 2];
        xy += xd * y[i];
        xx += xd * xd;
        yy += y[i] * y[i];
    }
    let aligned = xy / (xx * yy).sqrt();
    println!("correlation at 1.7 samples {aligned:.4}");
    assert!(best > 0.9, "correlation {best}");
    assert!(aligned > 0.97, "aligned correlation {aligned}");
}
