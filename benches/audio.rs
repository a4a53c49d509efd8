//! Audio pipeline benches (issue 3): per-20 ms-frame cost of each stage, of the inbound and
//! outbound chains in pass-through (`ulaw_8000`) and transcoding (`pcm_16000`) modes, and of the
//! lock-free hand-off to the DSP worker. Figures are recorded in BENCHMARKS.md.
//!
//! `cargo bench --bench audio` (add `-- --quick` for a fast pass, or a filter such as `mulaw`).

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_channel::bounded;
use ignis::audio::jitter::{JitterConfig, JitterStage};
use ignis::audio::resample::{Engine, Resampler};
use ignis::audio::{
    AgentFormat, InboundConfig, InboundPath, OutboundConfig, OutboundPath, Pipeline,
    PipelineOutput, mulaw,
};

const FRAME: usize = 160;

fn speechlike(n: usize, rate: f64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let t = i as f64 / rate;
            (0.3 * (2.0 * std::f64::consts::PI * 220.0 * t).sin()
                + 0.2 * (2.0 * std::f64::consts::PI * 1330.0 * t).sin()
                + 0.1 * (2.0 * std::f64::consts::PI * 3100.0 * t).sin()) as f32
        })
        .collect()
}

fn ulaw_frames(n: usize) -> Vec<u8> {
    let x = speechlike(n * FRAME, 8000.0);
    let mut out = vec![0u8; x.len()];
    mulaw::encode_f32_into(&x, &mut out);
    out
}

fn pcm16_bytes(n: usize, rate: f64) -> Vec<u8> {
    speechlike(n, rate)
        .iter()
        .flat_map(|&s| mulaw::f32_to_i16(s).to_le_bytes())
        .collect()
}

fn bench_mulaw(c: &mut Criterion) {
    let mut g = c.benchmark_group("mulaw_per_frame");
    g.throughput(Throughput::Elements(FRAME as u64));
    // Random codes, as docs/dsp.md §1.6 measured.
    let mut s = 0x1234_5678u32;
    let codes: Vec<u8> = (0..FRAME)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 24) as u8
        })
        .collect();
    let pcm: Vec<i16> = codes.iter().map(|&c| mulaw::decode_sample(c)).collect();
    let pcm_f: Vec<f32> = pcm.iter().map(|&x| x as f32 / 32768.0).collect();
    let mut out_i = vec![0i16; FRAME];
    let mut out_f = vec![0f32; FRAME];
    let mut out_u = vec![0u8; FRAME];
    g.bench_function("decode_i16", |b| {
        b.iter(|| mulaw::decode_into(black_box(&codes), &mut out_i))
    });
    g.bench_function("decode_f32", |b| {
        b.iter(|| mulaw::decode_f32_into(black_box(&codes), &mut out_f))
    });
    g.bench_function("encode_i16", |b| {
        b.iter(|| mulaw::encode_into(black_box(&pcm), &mut out_u))
    });
    g.bench_function("encode_f32", |b| {
        b.iter(|| mulaw::encode_f32_into(black_box(&pcm_f), &mut out_u))
    });
    g.finish();
}

fn bench_resample(c: &mut Criterion) {
    let mut g = c.benchmark_group("resample_per_20ms_frame");
    let cases: &[(&str, u32, u32, Engine)] = &[
        ("halfband_8k_to_16k", 8000, 16000, Engine::Halfband),
        ("halfband_16k_to_8k", 16000, 8000, Engine::Halfband),
        ("halfband_iir_8k_to_16k", 8000, 16000, Engine::HalfbandIir),
        ("halfband_iir_16k_to_8k", 16000, 8000, Engine::HalfbandIir),
        ("rubato_fft_8k_to_16k", 8000, 16000, Engine::Rubato),
        ("rubato_fft_16k_to_8k", 16000, 8000, Engine::Rubato),
        ("rubato_fft_8k_to_24k", 8000, 24000, Engine::Rubato),
        ("rubato_fft_48k_to_8k", 48000, 8000, Engine::Rubato),
        ("rubato_fft_22050_to_8k", 22050, 8000, Engine::Rubato),
    ];
    for &(name, a, b, engine) in cases {
        let mut r = Resampler::new(a, b, engine, false).expect("bench config");
        let input = speechlike(a as usize / 50, a as f64);
        let mut out = vec![0f32; r.output_frames_max(input.len()) + 64];
        g.bench_function(name, |bch| {
            bch.iter(|| r.process_into(black_box(&input), &mut out))
        });
    }
    g.finish();
}

fn bench_jitter(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut j = JitterStage::new(JitterConfig::default());
    let mut i = 0u64;
    c.bench_function("jitter_stage_per_frame", |b| {
        b.iter(|| {
            i += 1;
            j.handle_frame(t0 + Duration::from_millis(20 * i), i, 20 * i, FRAME)
        })
    });
}

/// Inbound: push one Twilio frame (base64 text) and poll its payload.
fn inbound_step(p: &mut InboundPath, now: Instant, i: u64, frame: &str) -> usize {
    let _ = p.push_twilio_media(now, i, 20 * i, frame);
    let mut n = 0;
    while let Some(s) = p.poll_user_audio_chunk() {
        n += s.len();
    }
    n
}

/// Outbound: push one frame's worth of agent audio and send what is due 20 ms later.
fn outbound_step(p: &mut OutboundPath, now: Instant, chunk: &str) -> usize {
    let _ = p.push_agent_audio(now, 1, chunk);
    let mut n = 0;
    while let Some(t) = p.poll_transmit(now) {
        n += match t {
            ignis::audio::Transmit::Media(s) | ignis::audio::Transmit::Mark(s) => s.len(),
        };
    }
    n
}

fn bench_chains(c: &mut Criterion) {
    let frames = ulaw_frames(50);
    let twilio: Vec<String> = frames.chunks(FRAME).map(|f| STANDARD.encode(f)).collect();
    for (mode, format) in [
        ("passthrough_ulaw_8000", AgentFormat::Ulaw8000),
        ("transcode_pcm_16000", AgentFormat::Pcm16000),
    ] {
        let agent: Vec<String> = if format.is_ulaw() {
            twilio.clone()
        } else {
            pcm16_bytes(50 * 320, 16000.0)
                .chunks(640)
                .map(|f| STANDARD.encode(f))
                .collect()
        };
        let mut g = c.benchmark_group(format!("chain_per_frame_{mode}"));
        let t0 = Instant::now();

        let mut inb = InboundPath::new(format, InboundConfig::default()).expect("inbound");
        let mut i = 0u64;
        g.bench_function("inbound", |b| {
            b.iter(|| {
                i += 1;
                let now = t0 + Duration::from_millis(20 * i);
                inbound_step(&mut inb, now, i, &twilio[i as usize % 50])
            })
        });

        let mut out = OutboundPath::new(format, OutboundConfig::default()).expect("outbound");
        let mut k = 0u64;
        g.bench_function("outbound", |b| {
            b.iter(|| {
                k += 1;
                let now = t0 + Duration::from_millis(20 * k);
                outbound_step(&mut out, now, &agent[k as usize % 50])
            })
        });

        let mut inb = InboundPath::new(format, InboundConfig::default()).expect("inbound");
        let mut out = OutboundPath::new(format, OutboundConfig::default()).expect("outbound");
        let mut m = 0u64;
        g.bench_function("frame_pair_inbound_plus_outbound", |b| {
            b.iter(|| {
                m += 1;
                let now = t0 + Duration::from_millis(20 * m);
                inbound_step(&mut inb, now, m, &twilio[m as usize % 50])
                    + outbound_step(&mut out, now, &agent[m as usize % 50])
            })
        });
        g.finish();
    }
}

fn bench_handoff(c: &mut Criterion) {
    let mut g = c.benchmark_group("handoff");
    // Throughput: one second of audio (50 frames) handed over and back, per frame. This is the
    // CPU cost of the hand-off amortised as in steady state. Latency of a single frame's round
    // trip (thread wake-ups) is dominated by the scheduler on this shared 2-core machine.
    const BATCH: u64 = 50;
    g.throughput(Throughput::Elements(BATCH));
    {
        let (tx, rx) = bounded::<u64>(64);
        let (btx, brx) = bounded::<u64>(64);
        let echo = thread::spawn(move || {
            while let Ok(v) = rx.recv() {
                if btx.send(v).is_err() {
                    break;
                }
            }
        });
        // The waiting side blocks (as the bridge's task would) rather than spinning, so the
        // worker gets a core on this 2-core machine.
        g.bench_function("crossbeam_bounded_50_round_trips", |b| {
            b.iter(|| {
                let mut got = 0;
                for v in 0..BATCH {
                    let _ = tx.try_send(v);
                }
                while got < BATCH {
                    if brx.recv().is_ok() {
                        got += 1;
                    }
                }
                got
            })
        });
        drop(tx);
        let _ = echo.join();
    }
    let frames = ulaw_frames(50);
    let twilio: Vec<String> = frames.chunks(FRAME).map(|f| STANDARD.encode(f)).collect();
    for (mode, format) in [
        ("passthrough_ulaw_8000", AgentFormat::Ulaw8000),
        ("transcode_pcm_16000", AgentFormat::Pcm16000),
    ] {
        let me = thread::current();
        let p = Pipeline::spawn_default(format, move || me.unpark()).expect("pipeline");
        let t0 = Instant::now();
        let mut i = 0u64;
        g.bench_function(format!("pipeline_inbound_50_frames_{mode}"), |b| {
            b.iter(|| {
                for f in &twilio {
                    i += 1;
                    let _ = p.push_twilio_media(t0, i, 20 * i, f);
                }
                let mut got = 0;
                while got < BATCH {
                    let n = p.drain(|o| {
                        if let PipelineOutput::UserAudioChunk(_) = o {
                            got += 1;
                        }
                    });
                    if n == 0 {
                        // Woken by the pipeline's notify callback.
                        thread::park_timeout(Duration::from_millis(5));
                    }
                }
                got
            })
        });
        // The same work inline on the calling thread, for the hand-off overhead by difference.
        let mut inb = InboundPath::new(format, InboundConfig::default()).expect("inbound");
        let mut k = 0u64;
        g.bench_function(format!("inline_inbound_50_frames_{mode}"), |b| {
            b.iter(|| {
                let mut n = 0;
                for f in &twilio {
                    k += 1;
                    n += inbound_step(&mut inb, t0, k, f);
                }
                n
            })
        });
        p.shutdown();
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_mulaw, bench_resample, bench_jitter, bench_chains, bench_handoff
}
criterion_main!(benches);
