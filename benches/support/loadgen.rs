//! Shared by `benches/e2e_latency.rs` and `benches/load.rs` (issue 6): what is specific to load on
//! top of the library's simulator (`ignis::driver::sim`: the Twilio stream and the ElevenLabs
//! service, which own the protocols): tone-onset probes in both directions, many calls scheduled
//! on one runtime, latency and audio accounting. Cheap enough to drive hundreds of real-time calls
//! from one thread (pre-encoded frames and bursts).
//!
//! Metric definitions (also in BENCHMARKS.md):
//! - **caller → agent**: every sample of the caller's stream is mapped to a wall-clock time,
//!   `send time of its frame + position in the frame / 8000`; every sample the agent receives to
//!   `receive time of its chunk + position in the chunk / agent rate`. Added latency = agent-side
//!   time of the first loud sample − caller-side time of the tone onset. Transit, buffering and the
//!   resampler's delay all count; a pass-through call with zero transit would measure 0.
//! - **agent → caller**, by play time (what the caller hears, and when): the agent's audio
//!   (a 200 ms burst, or a turn) has its onset `q` samples in. A bridge that added nothing would
//!   have Twilio play the onset at `send time + q / rate`. Added latency = the time Twilio's
//!   (simulated) playout plays the onset − that: the play time of the `media` message holding
//!   it (Twilio plays each stream's audio back to back, from its arrival when idle) + the
//!   onset's position in the message / 8000. Transit, a late first message and any gap
//!   (underrun) before the onset count; sending ahead of the ear does not, so a pacer that
//!   tops up in 80 ms messages and one that sends every 20 ms both measure what the caller
//!   feels (issue 16 point 2: the earlier definition, arrival against an ideal per-frame pacer
//!   with a 100 ms lead, charged the new top-ups 10–30 ms they do not cost the caller).
//!
//! Two workloads (`Workload`, issue 16 point 1). **light**: the agent sends a 200 ms burst per
//! probe period and the caller is silent but for its tone probes. **conversation**: the agent
//! speaks in turns of 1–5 s (250 ms chunks, 2× real time, one `event_id` per turn), the caller
//! speaks in between (a speech-like signal), every 5th turn is interrupted while ignis still holds
//! audio of it. Each caller utterance's first sample is a caller → agent onset, at a uniformly
//! random position 0..160 in its 20 ms frame (so delays that cross a frame boundary show, as the
//! resampler's did); each agent turn's first loud sample is an agent → caller onset (same
//! definition as the bursts'). Audio an interruption cut (never sent by ignis, by design) is
//! counted apart from "lost".
//!
//! In the conversation workload **caller → agent** is measured by arrival: added latency = time
//! the agent receives the chunk holding the onset − time the caller sent the frame holding it
//! (the earliest the agent could act on it; pass-through measures the transit). The
//! sample-mapped definition above charges a delay that pushes the onset into the next frame only
//! with the delay itself (2.19 ms for the resampler), while the agent gets the onset a whole frame
//! later (issue 16: p90 19.5 ms); it is reported too, as "sample-mapped".
//!
//! Barge-in (issue 16 point 6): per agent `interruption`, the time until the caller sees the
//! `clear`, and the audio still queued at Twilio for the caller when it lands (what Twilio drops:
//! a bridge that forwards each 250 ms chunk at once leaves the rest of the turn there). Targets
//! (`CallOptions::direct`): ignis through its signed webhook, or a bridge's own `/media-stream`
//! (the Node example, the floor), whose callers name their call in the audio ([`ID_MAGIC`]).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ignis::audio::format::AgentFormat;
use ignis::driver::sim::SimError;
use ignis::driver::sim::agent::{AgentService, AgentServiceOptions, Conversation};
use ignis::driver::sim::twilio::{StreamEvent, TwilioStream, voice_webhook};
use ignis::sim::agent::{self as agent_rules, ClientMessage};
use ignis::sim::twilio::{CallIds, voice_url_of};

use ignis::audio::mulaw;

/// Twilio's frame: 20 ms of 8 kHz μ-law.
pub const FRAME: usize = ignis::sim::twilio::FRAME;
/// The agent id the stand-in answers to (`ELEVENLABS_AGENT_ID` of the ignis under test).
pub const AGENT_ID: &str = "bench_agent";
/// The API key the stand-in's signed-URL endpoint wants (`ELEVENLABS_API_KEY` of the Node
/// example, which fetches a signed URL per call; docs/elevenlabs.md §1.3).
pub const API_KEY: &str = "bench-api-key";
/// A bridge that sends no initiation data (the Node example, the floor) cannot name its call to
/// the agent (docs/elevenlabs.md §1.7), so its caller says who it is in the audio: until its
/// agent conversation has begun it sends frames of these bytes and its call SID (padded with
/// μ-law silence), which the agent reads and then ignores. Not counted as audio either way.
const ID_MAGIC: &[u8] = b"ignis-loadgen-call ";
/// ignis's default playout lead (`PlayoutConfig::lead_ms`): a burst's audio has all left ignis
/// this long before it ends.
pub const LEAD_MS: u64 = 130;
/// Probe tone: 1 kHz cosine (starts at its peak, so the onset is the first sample).
const TONE_AMP: f64 = 12000.0;
/// A sample louder than this is "tone".
const THRESHOLD: i32 = 3000;
/// An onset needs this much quiet before it, ms.
const QUIET_MS: u32 = 50;
/// Tone length of the caller's probes and length of the agent's bursts, frames.
const TONE_FRAMES: usize = 10;
/// Onset offsets inside the caller's probe frame, samples.
const UP_OFFSETS: [usize; 8] = [0, 21, 43, 67, 89, 111, 137, 151];
/// Frame of the agent burst holding the onset, cycled (0–4 lie within the lead, 7 beyond).
const DOWN_FRAMES: [usize; 5] = [0, 0, 2, 4, 7];

/// The agent's audio format from a `--format` value: an ElevenLabs name, or `ulaw` / `pcm` for
/// `ulaw_8000` (pass-through) / `pcm_16000` (transcoding).
pub fn parse_format(s: &str) -> Option<AgentFormat> {
    match s {
        "ulaw" => Some(AgentFormat::Ulaw8000),
        "pcm" => Some(AgentFormat::Pcm16000),
        _ => AgentFormat::parse(s).ok(),
    }
}

fn rate(format: AgentFormat) -> u64 {
    u64::from(format.sample_rate())
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds on the process's monotonic clock (never 0).
fn ns_of(t: Instant) -> u64 {
    let e = *EPOCH.get_or_init(|| Instant::now() - Duration::from_secs(1));
    t.duration_since(e).as_nanos() as u64
}

fn now_ns() -> u64 {
    ns_of(Instant::now())
}

/// Per-call state shared by the caller and the agent side of one call.
#[derive(Default)]
struct Link {
    /// Caller-side time of the pending caller → agent onset (0: none).
    up_onset_ns: AtomicU64,
    /// Conversation workload: send time of the frame holding that onset (0: none).
    up_frame_ns: AtomicU64,
    /// Ideal release time of the pending agent → caller onset (0: none).
    down_due_ns: AtomicU64,
    /// Caller is ending: no new bursts.
    ending: AtomicBool,
    /// The agent side of this call has started its conversation.
    agent_seen: AtomicBool,
    /// Audio the caller sent / the agent received, in 8 kHz samples.
    up_sent: AtomicU64,
    up_recv: AtomicU64,
    /// Audio the agent sent / the caller received, in 8 kHz samples.
    down_sent: AtomicU64,
    down_recv: AtomicU64,
    /// Conversation workload: the caller's next utterance window, ns (published by the agent).
    talk_from_ns: AtomicU64,
    talk_until_ns: AtomicU64,
    /// Conversation workload: `down_recv` when the agent's current turn began, what it has sent
    /// of that turn (8 kHz samples), whether it interrupted it, and the audio interruptions cut.
    turn_recv0: AtomicU64,
    turn_sent: AtomicU64,
    turn_interrupted: AtomicBool,
    down_cut: AtomicU64,
    /// When the agent sent its last `interruption`, ns (0: none pending).
    interrupted_ns: AtomicU64,
}

impl Link {
    /// Counts the part of an interrupted turn the caller never received as cut. Called when the
    /// next turn begins (the previous one has long played out: the caller spoke in between) and
    /// when the call ends (the caller waits for the agent's audio to stop before hanging up).
    fn settle_turn(&self) {
        if self.turn_interrupted.swap(false, Relaxed) {
            let got = self
                .down_recv
                .load(Relaxed)
                .saturating_sub(self.turn_recv0.load(Relaxed));
            let cut = self.turn_sent.load(Relaxed).saturating_sub(got);
            self.down_cut.fetch_add(cut, Relaxed);
        }
    }

    fn begin_turn(&self) {
        self.settle_turn();
        self.turn_recv0.store(self.down_recv.load(Relaxed), Relaxed);
        self.turn_sent.store(0, Relaxed);
    }
}

/// Everything measured, across calls.
#[derive(Default)]
pub struct Stats {
    /// Only record while set (the steady-state window).
    pub recording: AtomicBool,
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// Added latency, µs, per direction.
    pub up_us: Mutex<Vec<i64>>,
    pub down_us: Mutex<Vec<i64>>,
    /// Conversation workload: caller → agent by the sample-mapped definition (module doc), µs.
    pub up_mapped_us: Mutex<Vec<i64>>,
    /// Caller send lateness behind its absolute schedule, µs, per frame.
    pub late_us: Mutex<Vec<u32>>,
    pub probes_up_sent: AtomicU64,
    pub probes_down_sent: AtomicU64,
    pub pings: AtomicU64,
    pub pongs: AtomicU64,
    pub interruptions: AtomicU64,
    pub clears: AtomicU64,
    pub marks: AtomicU64,
    /// `mark` messages the bridge sent to the callers during the window (issue 16 point 2;
    /// media messages are `media_to_caller`).
    pub window_marks: AtomicU64,
    pub calls_started: AtomicU64,
    pub calls_ok: AtomicU64,
    pub calls_failed: AtomicU64,
    pub active: AtomicUsize,
    pub agent_conversations: AtomicU64,
    /// Lost / duplicated audio over ended calls, 8 kHz samples, per direction.
    pub up_lost: AtomicU64,
    pub up_dup: AtomicU64,
    pub down_lost: AtomicU64,
    pub down_dup: AtomicU64,
    /// Agent audio that interruptions cut (held by ignis when the agent interrupted its turn,
    /// dropped by design; not in `down_lost`), 8 kHz samples, and the turns it came from.
    pub down_cut: AtomicU64,
    pub turns: AtomicU64,
    /// Per interruption: agent `interruption` → `clear` at the caller, µs; and the audio still
    /// queued at Twilio for the caller when the clear landed (sent before the interruption, not
    /// yet played, so dropped there), µs of audio.
    pub clear_after_us: Mutex<Vec<i64>>,
    pub clear_queued_us: Mutex<Vec<i64>>,
    /// `media` messages the callers received while recording.
    pub media_to_caller: AtomicU64,
    pub first_error: Mutex<Option<String>>,
    /// Calls that ended before ignis opened their agent conversation, and how long they ran
    /// (ms): their caller audio had nowhere to go, so it is reported apart from "lost".
    pub calls_without_agent: Mutex<Vec<u64>>,
}

impl Stats {
    fn error(&self, e: String) {
        let mut f = self.first_error.lock().unwrap();
        if f.is_none() {
            *f = Some(e);
        }
    }
}

/// Percentiles of a sample set (sorted in place): (n, p50, p90, p99, max).
pub fn percentiles(v: &mut [i64]) -> Option<(usize, i64, i64, i64, i64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let p = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Some((v.len(), p(0.5), p(0.9), p(0.99), v[v.len() - 1]))
}

/// "p50 / p90 / p99 / max" in ms.
pub fn fmt_ms(v: &mut [i64]) -> String {
    match percentiles(v) {
        None => "no samples".into(),
        Some((n, a, b, c, d)) => format!(
            "p50 {:.2} / p90 {:.2} / p99 {:.2} / max {:.2} ms (n={n})",
            a as f64 / 1e3,
            b as f64 / 1e3,
            c as f64 / 1e3,
            d as f64 / 1e3
        ),
    }
}

fn tone(n: usize, rate: u64) -> i16 {
    (TONE_AMP * (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / rate as f64).cos()) as i16
}

/// What the stand-in agent and the callers do (`--workload`; module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workload {
    #[default]
    Light,
    Conversation,
    /// The issue-16 report's measurement: the agent speaks 750 ms of every second as three
    /// 250 ms chunks sent in real time, the caller is silent but for light's tone probes.
    Steady,
}

impl Workload {
    pub fn parse(s: &str) -> Option<Workload> {
        match s {
            "light" => Some(Workload::Light),
            "conversation" | "conv" => Some(Workload::Conversation),
            "steady" => Some(Workload::Steady),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Light => "light",
            Workload::Conversation => "conversation",
            Workload::Steady => "steady",
        }
    }

    /// How the agent's turns go (`None`: light's bursts).
    fn shape(self) -> Option<Shape> {
        match self {
            Workload::Light => None,
            Workload::Conversation => Some(Shape {
                turn_chunks: TURN_CHUNKS,
                chunk_gap: CHUNK_GAP,
                period: None,
            }),
            Workload::Steady => Some(Shape {
                turn_chunks: (3, 3),
                chunk_gap: Duration::from_millis(CHUNK_MS),
                period: Some(Duration::from_secs(1)),
            }),
        }
    }
}

/// The agent's turns in a workload that has them.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// Chunks per turn (inclusive range).
    turn_chunks: (u64, u64),
    /// Between one chunk's send and the next.
    chunk_gap: Duration,
    /// `Some`: a turn starts every `period`, the caller never speaks and nothing is
    /// interrupted (steady). `None`: turn-taking with the caller (conversation).
    period: Option<Duration>,
}

/// Conversation workload: an agent turn is this many 250 ms chunks (1–5 s), inclusive.
const TURN_CHUNKS: (u64, u64) = (4, 20);
/// One ElevenLabs audio chunk, ms.
const CHUNK_MS: u64 = 250;
/// A turn's chunks leave at 2× real time, one every 125 ms from the turn's start. ElevenLabs
/// synthesises a turn incrementally and sends each chunk as it is ready, faster than real time
/// but not a whole turn at once; at 2× ignis holds up to half a turn, so an interruption finds
/// audio queued (the case barge-in is about) and the generator's sends stay spread out.
const CHUNK_GAP: Duration = Duration::from_millis(CHUNK_MS / 2);
/// The caller's utterances, ms (inclusive range).
const UTTERANCE_MS: (u64, u64) = (1000, 3000);
/// Pause between one speaker's end and the other's start, ms (inclusive range).
const PAUSE_MS: (u64, u64) = (300, 700);
/// The caller starts talking over an interrupted turn this long before the agent's
/// `interruption` (the time the agent needs to notice the barge-in).
const BARGE_IN: Duration = Duration::from_millis(300);
/// Pre-encoded agent turn openings (onset frame and position cycled over them).
const TURN_VARIANTS: usize = 15;
/// A hanging-up caller waits for the agent's audio to stop, but at most this many frames (10 s).
const ENDING_MAX_FRAMES: u64 = 500;
/// Peak of one harmonic of the speech-like signal (six harmonics, 1/h amplitudes: peak ~12 250).
const SPEECH_AMP: f64 = 5000.0;

/// xorshift64: seeded, so runs are repeatable.
fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Uniform in `lo..=hi`.
fn between(rng: &mut u64, (lo, hi): (u64, u64)) -> u64 {
    lo + xorshift(rng) % (hi - lo + 1)
}

/// Speech-like test signal at `rate`: harmonics 1–6 of 125 Hz (1/h amplitudes, all at their peak
/// at sample 0, so an utterance's first sample is its onset) under a 4 Hz syllable envelope
/// between 0.35 and 1 (never quiet for 50 ms, so no onset inside an utterance). Periodic in 1 s.
fn speech(n: usize, rate: u64) -> i16 {
    use std::f64::consts::PI;
    let t = n as f64 / rate as f64;
    let env = 0.675 + 0.325 * (2.0 * PI * 4.0 * t).cos();
    let sum: f64 = (1..=6)
        .map(|h| (2.0 * PI * 125.0 * f64::from(h) * t).cos() / f64::from(h))
        .sum();
    (SPEECH_AMP * env * sum) as i16
}

/// Samples in the agent's wire format, base64.
fn encode(format: AgentFormat, samples: &[i16]) -> String {
    let bytes: Vec<u8> = if format.is_ulaw() {
        samples.iter().map(|&s| mulaw::encode_sample(s)).collect()
    } else {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    };
    STANDARD.encode(bytes)
}

/// Onset detector over a decoded stream.
struct Onset {
    quiet: u32,
    need: u32,
}

impl Onset {
    fn new(rate: u64) -> Onset {
        let need = QUIET_MS * rate as u32 / 1000;
        Onset { quiet: 0, need }
    }
    /// Index of the first onset in `samples`, if any.
    fn scan(&mut self, samples: impl Iterator<Item = i16>) -> Option<usize> {
        let mut found = None;
        for (i, s) in samples.enumerate() {
            if i32::from(s).abs() > THRESHOLD {
                if self.quiet >= self.need && found.is_none() {
                    found = Some(i);
                }
                self.quiet = 0;
            } else {
                self.quiet = self.quiet.saturating_add(1);
            }
        }
        found
    }
}

// ---------------------------------------------------------------------------------------------
// The stand-in agent
// ---------------------------------------------------------------------------------------------

/// Agent behaviour.
#[derive(Debug, Clone, Copy)]
pub struct AgentOptions {
    pub format: AgentFormat,
    /// A burst with an onset probe this often per call.
    pub probe_every: Duration,
    /// An `interruption` after every this many bursts (0: never).
    pub interrupt_every: u64,
    /// A ping this often.
    pub ping_every: Duration,
}

/// Starts the agent on loopback; returns its `http://` base for `ELEVENLABS_API_BASE`.
pub async fn start_agent(opts: AgentOptions, stats: Arc<Stats>) -> std::io::Result<String> {
    start_agent_workload(opts, Workload::Light, stats).await
}

/// [`start_agent`] with a workload (module doc).
pub async fn start_agent_workload(
    opts: AgentOptions,
    workload: Workload,
    stats: Arc<Stats>,
) -> std::io::Result<String> {
    let bursts = Arc::new(bursts(opts.format));
    let turns = Arc::new(match workload.shape() {
        None => Vec::new(),
        Some(_) => turn_audio(opts.format),
    });
    let shape = workload.shape();
    let order = Arc::new(AtomicU64::new(0));
    let service = AgentService::start(
        AgentServiceOptions {
            agent_id: AGENT_ID.to_owned(),
            api_key: API_KEY.to_owned(),
            signature: "bench-signature".to_owned(),
        },
        move |conv| {
            let (stats, bursts, order) = (stats.clone(), bursts.clone(), order.clone());
            let turns = turns.clone();
            async move {
                let k = order.fetch_add(1, Relaxed);
                match conv {
                    Ok(conv) => {
                        let audio = Audio {
                            bursts: &bursts,
                            turns: &turns,
                            shape,
                        };
                        if let Err(e) = conversation(conv, opts, &stats, audio, k).await {
                            stats.error(format!("agent: {e}"));
                        }
                    }
                    Err(e) => stats.error(format!("agent handshake: {e}")),
                }
            }
        },
    )
    .await?;
    Ok(service.base())
}

/// Pre-encoded bursts: silence, then a tone from the onset on; with the onset's time into the
/// burst (ns).
fn bursts(format: AgentFormat) -> Vec<(u64, String)> {
    let rate = rate(format);
    let spf = (rate / 50) as usize; // samples per 20 ms frame
    (0..DOWN_FRAMES.len() * 3)
        .map(|k| {
            let f = DOWN_FRAMES[k % DOWN_FRAMES.len()];
            // Onset in the middle half of the frame, so a resampler's few samples of delay
            // never move it into the next frame.
            let q = f * spf + spf / 4 + (k * spf / 2 / 15);
            let samples: Vec<i16> = (0..TONE_FRAMES * spf)
                .map(|n| if n < q { 0 } else { tone(n - q, rate) })
                .collect();
            let bytes: Vec<u8> = if format.is_ulaw() {
                samples.iter().map(|&s| mulaw::encode_sample(s)).collect()
            } else {
                samples.iter().flat_map(|s| s.to_le_bytes()).collect()
            };
            (onset_ns(q, rate), STANDARD.encode(bytes))
        })
        .collect()
}

/// Sample `q` of audio at `rate`, as time into it (ns).
fn onset_ns(q: usize, rate: u64) -> u64 {
    q as u64 * 1_000_000_000 / rate
}

/// The agent's pre-encoded audio: light bursts; conversation turn openings (empty: light).
#[derive(Clone, Copy)]
struct Audio<'a> {
    bursts: &'a [(u64, String)],
    turns: &'a [TurnVariant],
    shape: Option<Shape>,
}

/// A conversation turn's audio: its first chunk (silence, then speech from the onset, which lies
/// in 20 ms frame `frame`) and the chunks after it (chunk `j` is `cont[j % 4]`: the speech loop is
/// 1 s, four chunks).
struct TurnVariant {
    /// The onset's time into the turn, ns.
    onset: u64,
    first: String,
    cont: [String; 4],
}

fn turn_audio(format: AgentFormat) -> Vec<TurnVariant> {
    let rate = rate(format);
    let spf = (rate / 50) as usize;
    let (chunk, period) = ((rate * CHUNK_MS / 1000) as usize, rate as usize);
    (0..TURN_VARIANTS)
        .map(|k| {
            let frame = DOWN_FRAMES[k % DOWN_FRAMES.len()];
            // As the bursts': the onset in the middle half of its frame.
            let q = frame * spf + spf / 4 + k * spf / 2 / TURN_VARIANTS;
            let first: Vec<i16> = (0..chunk)
                .map(|i| if i < q { 0 } else { speech(i - q, rate) })
                .collect();
            let cont = std::array::from_fn(|m| {
                let start = (if m == 0 { 4 } else { m }) * chunk - q;
                let samples: Vec<i16> = (0..chunk)
                    .map(|i| speech((start + i) % period, rate))
                    .collect();
                encode(format, &samples)
            });
            TurnVariant {
                onset: onset_ns(q, rate),
                first: encode(format, &first),
                cont,
            }
        })
        .collect()
}

/// One agent turn under way.
struct Turn {
    variant: usize,
    chunks: u64,
    sent: u64,
    start: tokio::time::Instant,
    interrupt_at: Option<tokio::time::Instant>,
}

/// The conversation workload's turn-taking, for one conversation.
struct Talk<'a> {
    audio: &'a [TurnVariant],
    shape: Shape,
    rng: u64,
    turns: u64,
    /// Shifts which turns are interrupted, per conversation, so that a short run (a few turns
    /// per call) still interrupts every `interrupt_every`-th turn overall.
    shift: u64,
    turn: Option<Turn>,
    next_turn: tokio::time::Instant,
}

impl Talk<'_> {
    fn wake(&self) -> tokio::time::Instant {
        match &self.turn {
            Some(t) if t.sent < t.chunks => t.start + self.shape.chunk_gap * t.sent as u32,
            Some(t) => t.interrupt_at.unwrap_or(t.start),
            None => self.next_turn,
        }
    }

    /// The turn's chunks and interruption due at `now`, or a new turn.
    fn due(&mut self, now: tokio::time::Instant, agent: &mut AgentCtx<'_>, out: &mut Vec<String>) {
        let link = agent.link;
        if link.ending.load(Relaxed) {
            // What was sent plays out; the caller waits for it before hanging up.
            self.turn = None;
            self.next_turn = now + Duration::from_secs(3600);
            return;
        }
        let Some(t) = &mut self.turn else {
            if now >= self.next_turn {
                self.begin(now, agent);
                self.due(now, agent, out);
            }
            return;
        };
        while t.sent < t.chunks && now >= t.start + self.shape.chunk_gap * t.sent as u32 {
            let v = &self.audio[t.variant];
            let b64 = match t.sent {
                0 => &v.first,
                j => &v.cont[(j % 4) as usize],
            };
            link.down_sent.fetch_add(CHUNK_MS * 8, Relaxed);
            link.turn_sent.fetch_add(CHUNK_MS * 8, Relaxed);
            out.push(agent_rules::audio_b64(*agent.event_id, b64));
            t.sent += 1;
        }
        if t.interrupt_at.is_some_and(|at| now >= at) {
            agent.stats.interruptions.fetch_add(1, Relaxed);
            link.turn_interrupted.store(true, Relaxed);
            link.interrupted_ns.store(now_ns(), Relaxed);
            out.push(agent_rules::interruption(*agent.event_id));
            self.turn = None;
        } else if t.sent == t.chunks && t.interrupt_at.is_none() {
            self.turn = None;
        }
    }

    /// Plans a turn (length, interruption) and the caller's next utterance, publishes the
    /// utterance window and the turn's onset probe.
    fn begin(&mut self, now: tokio::time::Instant, agent: &mut AgentCtx<'_>) {
        let (link, stats) = (agent.link, agent.stats);
        link.begin_turn();
        self.turns += 1;
        stats.turns.fetch_add(1, Relaxed);
        *agent.event_id += 1;
        let chunks = between(&mut self.rng, self.shape.turn_chunks);
        let variant = (self.turns as usize - 1) % self.audio.len();
        let length = Duration::from_millis(chunks * CHUNK_MS);
        // Played back to back from its first sample, the onset is heard this long after the
        // turn was sent (module doc).
        link.down_due_ns
            .store(now_ns() + self.audio[variant].onset, Relaxed);
        if stats.recording.load(Relaxed) {
            stats.probes_down_sent.fetch_add(1, Relaxed);
        }
        let interrupt_at = match self.shape.period {
            Some(period) => {
                self.next_turn = now + period;
                None
            }
            None => self.plan_reply(now, length, agent),
        };
        self.turn = Some(Turn {
            variant,
            chunks,
            sent: 0,
            start: now,
            interrupt_at,
        });
    }

    /// Conversation turn-taking for a turn of `length` begun at `now`: whether it is
    /// interrupted (and when), the caller's utterance window (published to the caller) and the
    /// next turn's start.
    fn plan_reply(
        &mut self,
        now: tokio::time::Instant,
        length: Duration,
        agent: &AgentCtx<'_>,
    ) -> Option<tokio::time::Instant> {
        let every = agent.interrupt_every;
        // Interrupted at half its length: all chunks sent (2× real time), half of it held.
        let interrupt_at = (every > 0 && (self.turns + self.shift).is_multiple_of(every))
            .then(|| now + length / 2);
        let pause = |rng: &mut u64| Duration::from_millis(between(rng, PAUSE_MS));
        let talk_from = match interrupt_at {
            Some(at) => at - BARGE_IN,
            None => now + length + pause(&mut self.rng),
        };
        let talk_until = talk_from + Duration::from_millis(between(&mut self.rng, UTTERANCE_MS));
        self.next_turn = talk_until + pause(&mut self.rng);
        // `from` first: a caller reading between the stores sees a window not yet open.
        agent
            .link
            .talk_from_ns
            .store(ns_of(talk_from.into_std()), Relaxed);
        agent
            .link
            .talk_until_ns
            .store(ns_of(talk_until.into_std()), Relaxed);
        interrupt_at
    }
}

/// What [`Talk`] needs of its [`Agent`].
struct AgentCtx<'a> {
    stats: &'a Stats,
    link: &'a Link,
    event_id: &'a mut u64,
    interrupt_every: u64,
}

/// One conversation's schedule (bursts, pings, interruptions) and probe detection.
struct Agent<'a> {
    opts: AgentOptions,
    stats: &'a Stats,
    bursts: &'a [(u64, String)],
    /// Conversation workload (`None`: light).
    talk: Option<Talk<'a>>,
    link: Arc<Link>,
    sid: String,
    onset: Onset,
    buf: Vec<u8>,
    next_burst: tokio::time::Instant,
    next_ping: tokio::time::Instant,
    interrupt_at: Option<tokio::time::Instant>,
    ping_id: u64,
    pong_id: u64,
    event_id: u64,
    bursts_sent: u64,
}

impl Agent<'_> {
    fn wake(&self) -> tokio::time::Instant {
        if let Some(talk) = &self.talk {
            return talk.wake().min(self.next_ping);
        }
        self.next_burst
            .min(self.next_ping)
            .min(self.interrupt_at.unwrap_or(self.next_ping))
    }

    /// The messages due at `now`: a ping, an interruption, a burst (or the conversation's turn).
    fn due(&mut self, now: tokio::time::Instant) -> Vec<String> {
        let (stats, link) = (self.stats, &self.link);
        let mut out = Vec::new();
        if now >= self.next_ping {
            self.next_ping += self.opts.ping_every;
            if self.pong_id != self.ping_id {
                stats.error(format!("{}: ping {} unanswered", self.sid, self.ping_id));
            }
            self.ping_id += 1;
            stats.pings.fetch_add(1, Relaxed);
            out.push(agent_rules::ping(self.ping_id));
        }
        if let Some(talk) = &mut self.talk {
            let mut ctx = AgentCtx {
                stats,
                link,
                event_id: &mut self.event_id,
                interrupt_every: self.opts.interrupt_every,
            };
            talk.due(now, &mut ctx, &mut out);
            return out;
        }
        if self.interrupt_at.is_some_and(|t| now >= t) {
            self.interrupt_at = None;
            stats.interruptions.fetch_add(1, Relaxed);
            link.interrupted_ns.store(now_ns(), Relaxed);
            out.push(agent_rules::interruption(self.event_id));
        }
        if now >= self.next_burst {
            self.next_burst += self.opts.probe_every;
            if link.ending.load(Relaxed) {
                return out;
            }
            let (onset, b64) = &self.bursts[(self.bursts_sent as usize) % self.bursts.len()];
            self.bursts_sent += 1;
            self.event_id += 1;
            let sent = now_ns();
            link.down_due_ns.store(sent + *onset, Relaxed);
            link.down_sent
                .fetch_add((TONE_FRAMES * FRAME) as u64, Relaxed);
            if stats.recording.load(Relaxed) {
                stats.probes_down_sent.fetch_add(1, Relaxed);
            }
            out.push(agent_rules::audio_b64(self.event_id, b64));
            let every = self.opts.interrupt_every;
            if every > 0 && self.bursts_sent.is_multiple_of(every) {
                // Once the burst has been released (its last frame leaves ignis `LEAD_MS` before
                // the burst ends), so nothing is held back to be dropped; before the next burst.
                self.interrupt_at = Some(now + Duration::from_millis(20 * TONE_FRAMES as u64 + 50));
            }
        }
        out
    }

    /// A message from ignis at `now` (ns): caller audio (probe onsets) or a pong.
    fn heard(&mut self, text: &str, now: u64) {
        let chunk = match agent_rules::parse_client(text) {
            Some(ClientMessage::UserAudio(chunk)) => chunk,
            Some(ClientMessage::Pong(id)) => {
                self.pong_id = id;
                self.stats.pongs.fetch_add(1, Relaxed);
                return;
            }
            _ => return,
        };
        self.buf.clear();
        if STANDARD
            .decode_vec(chunk.as_bytes(), &mut self.buf)
            .is_err()
        {
            self.stats
                .error(format!("{}: bad base64 from ignis", self.sid));
            return;
        }
        let (buf, link) = (&self.buf, &self.link);
        if buf.starts_with(ID_MAGIC) {
            return;
        }
        let format = self.opts.format;
        let samples = buf.len() / format.bytes_per_sample();
        link.up_recv
            .fetch_add(samples as u64 * 8000 / rate(format), Relaxed);
        let hit = if format.is_ulaw() {
            self.onset
                .scan(buf.iter().map(|&b| mulaw::decode_sample(b)))
        } else {
            self.onset.scan(
                buf.chunks_exact(2)
                    .map(|p| i16::from_le_bytes([p[0], p[1]])),
            )
        };
        if let Some(i) = hit {
            let sent = link.up_onset_ns.swap(0, Relaxed);
            let frame_sent = link.up_frame_ns.swap(0, Relaxed);
            if sent != 0 && self.stats.recording.load(Relaxed) {
                let at = now + i as u64 * 1_000_000_000 / rate(self.opts.format);
                let us = (at as i64 - sent as i64) / 1000;
                if frame_sent == 0 {
                    self.stats.up_us.lock().unwrap().push(us);
                } else {
                    // Conversation: when the onset could first be acted on (module doc).
                    let arrival = (now as i64 - frame_sent as i64) / 1000;
                    self.stats.up_us.lock().unwrap().push(arrival);
                    self.stats.up_mapped_us.lock().unwrap().push(us);
                }
            }
        }
    }
}

/// The call SID of a conversation without initiation data: from the caller's first identifying
/// frame ([`ID_MAGIC`]).
async fn identify(conv: &mut Conversation) -> Result<String, String> {
    let mut buf = Vec::new();
    let within = Duration::from_secs(10);
    tokio::time::timeout(within, async {
        while let Some(text) = conv.recv().await.map_err(|e| e.to_string())? {
            let Some(ClientMessage::UserAudio(chunk)) = agent_rules::parse_client(text.as_str())
            else {
                continue;
            };
            buf.clear();
            if STANDARD.decode_vec(chunk.as_bytes(), &mut buf).is_ok()
                && let Some(sid) = sid_of_id_frame(&buf)
            {
                return Ok(sid);
            }
        }
        Err("closed before the caller named its call".to_owned())
    })
    .await
    .map_err(|_| "no identifying frame from the caller".to_owned())?
}

/// The identifying frame of call `sid` ([`ID_MAGIC`]), base64.
fn id_frame(sid: &str) -> String {
    let mut bytes = [mulaw::SILENCE; FRAME];
    for (b, s) in bytes.iter_mut().zip(ID_MAGIC.iter().chain(sid.as_bytes())) {
        *b = *s;
    }
    STANDARD.encode(bytes)
}

/// The call SID an identifying frame carries.
fn sid_of_id_frame(bytes: &[u8]) -> Option<String> {
    let rest = bytes.strip_prefix(ID_MAGIC)?;
    let sid: Vec<u8> = rest
        .iter()
        .copied()
        .take_while(|&b| b != mulaw::SILENCE)
        .collect();
    String::from_utf8(sid).ok()
}

async fn conversation(
    mut conv: Conversation,
    opts: AgentOptions,
    stats: &Stats,
    audio: Audio<'_>,
    k: u64,
) -> Result<(), String> {
    let sid = match conv.variable("call_sid") {
        Some(sid) => sid.to_owned(),
        None => identify(&mut conv).await?,
    };
    let link = stats
        .links
        .lock()
        .unwrap()
        .get(&sid)
        .cloned()
        .ok_or("unknown call")?;
    stats.agent_conversations.fetch_add(1, Relaxed);
    link.agent_seen.store(true, Relaxed);
    let fmt = opts.format.as_str();
    conv.send_metadata(&format!("conv_{sid}"), fmt, fmt)
        .await
        .map_err(|e| e.to_string())?;
    let start = tokio::time::Instant::now();
    // Stagger: bursts half a period after the caller's probes, spread over calls.
    let phase =
        Duration::from_micros((k * 7919 * 1000) % opts.probe_every.as_micros().max(1) as u64);
    let mut agent = Agent {
        opts,
        stats,
        bursts: audio.bursts,
        talk: audio.shape.map(|shape| Talk {
            audio: audio.turns,
            shape,
            rng: 0x2545_f491_4f6c_dd1d ^ (k + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            turns: 0,
            shift: k,
            turn: None,
            next_turn: start + opts.probe_every / 4 + phase,
        }),
        link,
        sid,
        onset: Onset::new(rate(opts.format)),
        buf: Vec::with_capacity(8192),
        next_burst: start + opts.probe_every / 2 + phase,
        next_ping: start + opts.ping_every + phase / 3,
        interrupt_at: None,
        ping_id: 0,
        pong_id: 0,
        event_id: 0,
        bursts_sent: 0,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(agent.wake()) => {
                for m in agent.due(tokio::time::Instant::now()) {
                    conv.send(m).await.map_err(|e| e.to_string())?;
                }
            }
            m = conv.recv() => match m {
                Ok(Some(text)) => agent.heard(text.as_str(), now_ns()),
                Ok(None) => return Ok(()),
                // A reset after the caller hung up is an ordinary end here.
                Err(_) if agent.link.ending.load(Relaxed) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The simulated caller
// ---------------------------------------------------------------------------------------------

/// Pre-encoded caller frames.
pub struct CallerFrames {
    silence: String,
    /// Per onset offset: the onset frame and the tone frames after it.
    probes: Vec<Vec<String>>,
    /// Conversation workload: the caller's speech (`None`: light).
    speech: Option<Speech>,
}

/// The caller's speech, pre-encoded: a 1 s loop of the speech-like signal.
struct Speech {
    /// The 20 ms frame that starts at each sample of the loop.
    frames: Vec<String>,
    /// Per onset offset `o` (0..160): `o` samples of silence, then the loop from its start.
    onsets: Vec<String>,
}

impl Speech {
    fn new() -> Speech {
        let period = 8000;
        let samples: Vec<u8> = (0..period)
            .map(|n| mulaw::encode_sample(speech(n, 8000)))
            .collect();
        let frames = (0..period)
            .map(|p| {
                let bytes: Vec<u8> = (0..FRAME).map(|j| samples[(p + j) % period]).collect();
                STANDARD.encode(bytes)
            })
            .collect();
        let onsets = (0..FRAME)
            .map(|o| {
                let bytes: Vec<u8> = (0..FRAME)
                    .map(|j| {
                        if j < o {
                            mulaw::SILENCE
                        } else {
                            samples[j - o]
                        }
                    })
                    .collect();
                STANDARD.encode(bytes)
            })
            .collect();
        Speech { frames, onsets }
    }

    /// Frame `j` (≥ 1) of an utterance whose onset lay at offset `o` of its frame 0.
    fn frame(&self, j: u64, o: usize) -> &str {
        &self.frames[(j as usize * FRAME - o) % self.frames.len()]
    }
}

impl CallerFrames {
    /// Builds them.
    pub fn new() -> CallerFrames {
        let silence = STANDARD.encode([mulaw::SILENCE; FRAME]);
        let probes = UP_OFFSETS
            .iter()
            .map(|&off| {
                let n = off + TONE_FRAMES * FRAME;
                let frames = n.div_ceil(FRAME);
                (0..frames)
                    .map(|fi| {
                        let bytes: Vec<u8> = (0..FRAME)
                            .map(|j| {
                                let n = fi * FRAME + j;
                                if n < off || n - off >= TONE_FRAMES * FRAME {
                                    mulaw::SILENCE
                                } else {
                                    mulaw::encode_sample(tone(n - off, 8000))
                                }
                            })
                            .collect();
                        STANDARD.encode(bytes)
                    })
                    .collect()
            })
            .collect();
        CallerFrames {
            silence,
            probes,
            speech: None,
        }
    }

    /// For a workload: the conversation's callers speak (module doc).
    pub fn for_workload(workload: Workload) -> CallerFrames {
        CallerFrames {
            speech: (workload == Workload::Conversation).then(Speech::new),
            ..CallerFrames::new()
        }
    }
}

impl Default for CallerFrames {
    fn default() -> Self {
        Self::new()
    }
}

/// One call.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// `ws://127.0.0.1:<port>/api/twilio/stream`.
    pub stream_url: String,
    pub auth_token: String,
    pub call_sid: String,
    /// The call runs until `stop` is set, or for this long.
    pub duration: Option<Duration>,
    /// A caller → agent probe this often.
    pub probe_every: Duration,
    /// Offsets the frame clock (spreads calls over the 20 ms period).
    pub phase: Duration,
    /// `stream_url` is a bridge's own Twilio socket (the Node example's or the floor's
    /// `/media-stream`): connect to it straight away, no voice webhook, no parameters, and name
    /// the call in the audio ([`ID_MAGIC`]). Otherwise it is ignis's, reached as Twilio does.
    pub direct: bool,
}

/// Runs one call; failures go to `stats`.
pub async fn call(
    opts: CallOptions,
    frames: Arc<CallerFrames>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) {
    stats.calls_started.fetch_add(1, Relaxed);
    stats.active.fetch_add(1, Relaxed);
    let link = Arc::new(Link::default());
    stats
        .links
        .lock()
        .unwrap()
        .insert(opts.call_sid.clone(), link.clone());
    let began = Instant::now();
    let result = run_call(&opts, &frames, &stats, &stop, &link).await;
    stats.links.lock().unwrap().remove(&opts.call_sid);
    stats.active.fetch_sub(1, Relaxed);
    link.settle_turn();
    let cut = link.down_cut.load(Relaxed);
    // What interruptions cut was never meant to arrive.
    link.down_sent.fetch_sub(cut, Relaxed);
    // Audio accounting over the whole call.
    let diff = |sent: &AtomicU64, recv: &AtomicU64, lost: &AtomicU64, dup: &AtomicU64| {
        let (s, r) = (sent.load(Relaxed), recv.load(Relaxed));
        lost.fetch_add(s.saturating_sub(r), Relaxed);
        dup.fetch_add(r.saturating_sub(s), Relaxed);
    };
    match result {
        Ok(()) if !link.agent_seen.load(Relaxed) => {
            stats.calls_ok.fetch_add(1, Relaxed);
            let ms = began.elapsed().as_millis() as u64;
            stats.calls_without_agent.lock().unwrap().push(ms);
        }
        Ok(()) => {
            stats.calls_ok.fetch_add(1, Relaxed);
            stats.down_cut.fetch_add(cut, Relaxed);
            diff(&link.up_sent, &link.up_recv, &stats.up_lost, &stats.up_dup);
            diff(
                &link.down_sent,
                &link.down_recv,
                &stats.down_lost,
                &stats.down_dup,
            );
        }
        Err(e) => {
            stats.calls_failed.fetch_add(1, Relaxed);
            stats.error(format!("{}: {e}", opts.call_sid));
        }
    }
}

/// One call's frame schedule (probes, ending) and onset detection of what it hears.
struct Caller<'a> {
    frames: &'a CallerFrames,
    stats: &'a Stats,
    link: &'a Link,
    probe_frames: u64,
    probe_phase: u64,
    chunk: u64,
    probe_no: usize,
    /// (offset index, next frame) of the probe being sent.
    probe: Option<(usize, usize)>,
    ending_since: Option<u64>,
    onset: Onset,
    /// When the audio heard so far ends.
    heard_until: Option<Instant>,
    /// Conversation workload: the utterance under way (onset offset, next frame), the window of
    /// the last one begun (ns), and the onset offsets' generator.
    utterance: Option<(usize, u64)>,
    last_talk: u64,
    rng: u64,
}

impl<'a> Caller<'a> {
    /// The payload of the next frame, or `None` to hang up.
    fn next_frame(&mut self, now: tokio::time::Instant, done: bool) -> Option<&'a str> {
        let (frames, link, stats) = (self.frames, self.link, self.stats);
        if done && self.ending_since.is_none() {
            link.ending.store(true, Relaxed);
            self.ending_since = Some(self.chunk);
        }
        // Stop sending 600 ms after ending began (bursts in flight play out), then hang up. A
        // conversation's turn may hold seconds of audio in ignis: wait until it has played.
        let played = |end: Instant| now.into_std() >= end + Duration::from_millis(300);
        let quiet = frames.speech.is_none() || self.heard_until.is_none_or(played);
        if self.ending_since.is_some_and(|c| {
            self.chunk >= c + 30 && self.probe.is_none() && quiet
                || self.chunk >= c + ENDING_MAX_FRAMES
        }) {
            return None;
        }
        self.chunk += 1;
        link.up_sent.fetch_add(FRAME as u64, Relaxed);
        if let Some(speech) = &frames.speech {
            return Some(self.speak(ns_of(now.into_std()), speech));
        }
        Some(match self.probe {
            Some((oi, fi)) => {
                let list = &frames.probes[oi];
                self.probe = (fi + 1 < list.len()).then_some((oi, fi + 1));
                &list[fi]
            }
            None if self.ending_since.is_none()
                && self.chunk % self.probe_frames == self.probe_phase =>
            {
                let oi = self.probe_no % UP_OFFSETS.len();
                self.probe_no += 1;
                let list = &frames.probes[oi];
                self.probe = (list.len() > 1).then_some((oi, 1));
                let at = ns_of(now.into_std()) + UP_OFFSETS[oi] as u64 * 125_000;
                link.up_onset_ns.store(at, Relaxed);
                if stats.recording.load(Relaxed) {
                    stats.probes_up_sent.fetch_add(1, Relaxed);
                }
                &list[0]
            }
            None => &frames.silence,
        })
    }

    /// Conversation workload: the next frame, speech inside the window the agent published.
    /// An utterance's onset lies at a uniformly random offset of its first frame.
    fn speak(&mut self, now: u64, speech: &'a Speech) -> &'a str {
        let (link, stats, frames) = (self.link, self.stats, self.frames);
        let talking = self.ending_since.is_none();
        let (from, until) = (
            link.talk_from_ns.load(Relaxed),
            link.talk_until_ns.load(Relaxed),
        );
        if let Some((o, j)) = self.utterance {
            if talking && now < until {
                self.utterance = Some((o, j + 1));
                return speech.frame(j, o);
            }
            self.utterance = None;
        } else if talking && from != self.last_talk && from <= now && now < until {
            self.last_talk = from;
            let o = (xorshift(&mut self.rng) % FRAME as u64) as usize;
            self.utterance = Some((o, 1));
            link.up_frame_ns.store(now, Relaxed);
            link.up_onset_ns.store(now + o as u64 * 125_000, Relaxed);
            if stats.recording.load(Relaxed) {
                stats.probes_up_sent.fetch_add(1, Relaxed);
            }
            return &speech.onsets[o];
        }
        &frames.silence
    }

    /// What ignis did on the stream (`audio`: the media's bytes).
    fn heard(&mut self, event: StreamEvent, audio: &[u8]) -> Result<(), String> {
        let (link, stats) = (self.link, self.stats);
        match event {
            StreamEvent::Media { at, plays_at } => {
                link.down_recv.fetch_add(audio.len() as u64, Relaxed);
                if stats.recording.load(Relaxed) {
                    stats.media_to_caller.fetch_add(1, Relaxed);
                }
                // Between bursts ignis sends nothing and the caller hears silence.
                let quiet = Duration::from_millis(u64::from(QUIET_MS));
                if self.heard_until.is_none_or(|end| at >= end + quiet) {
                    self.onset.quiet = self.onset.need;
                }
                self.heard_until = Some(plays_at + Duration::from_micros(audio.len() as u64 * 125));
                let samples = audio.iter().map(|&b| mulaw::decode_sample(b));
                if let Some(i) = self.onset.scan(samples) {
                    let due = link.down_due_ns.swap(0, Relaxed);
                    if due != 0 && stats.recording.load(Relaxed) {
                        let heard = ns_of(plays_at) + i as u64 * 125_000;
                        let us = (heard as i64 - due as i64) / 1000;
                        stats.down_us.lock().unwrap().push(us);
                    }
                }
            }
            StreamEvent::Mark(_) => {
                stats.marks.fetch_add(1, Relaxed);
                if stats.recording.load(Relaxed) {
                    stats.window_marks.fetch_add(1, Relaxed);
                }
            }
            StreamEvent::Clear(at) => {
                stats.clears.fetch_add(1, Relaxed);
                let interrupted = link.interrupted_ns.swap(0, Relaxed);
                if interrupted != 0 && stats.recording.load(Relaxed) {
                    let after = (ns_of(at) as i64 - interrupted as i64) / 1000;
                    stats.clear_after_us.lock().unwrap().push(after);
                    let queued = self.heard_until.map_or(0, |end| {
                        end.saturating_duration_since(at).as_micros() as i64
                    });
                    stats.clear_queued_us.lock().unwrap().push(queued);
                }
                self.heard_until = Some(at);
            }
            StreamEvent::Closed(code) => return Err(format!("ignis closed the stream: {code:?}")),
            StreamEvent::Dropped => return Err("ignis closed the stream".into()),
        }
        Ok(())
    }
}

async fn run_call(
    opts: &CallOptions,
    frames: &CallerFrames,
    stats: &Stats,
    stop: &AtomicBool,
    link: &Link,
) -> Result<(), String> {
    let mut stream = open_stream(opts).await?;
    let id_frame = opts.direct.then(|| id_frame(&opts.call_sid));

    let t0 = tokio::time::Instant::now() + opts.phase;
    let mut ticker = tokio::time::interval_at(t0, Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let probe_frames = (opts.probe_every.as_millis() / 20).max(TONE_FRAMES as u128 + 5) as u64;
    let mut caller = Caller {
        frames,
        stats,
        link,
        probe_frames,
        probe_phase: (ns_of(t0.into_std()) / 20_000_000) % probe_frames,
        chunk: 0,
        probe_no: 0,
        probe: None,
        ending_since: None,
        onset: Onset::new(8000),
        heard_until: None,
        utterance: None,
        last_talk: 0,
        // Seeded by the call's number (the SID's last 16 digits), not the process id.
        rng: opts.call_sid[opts.call_sid.len().saturating_sub(16)..]
            .bytes()
            .fold(0x9e37_79b9_7f4a_7c15, |h: u64, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            }),
    };
    let mut audio: Vec<u8> = Vec::with_capacity(1024);
    loop {
        tokio::select! {
            scheduled = ticker.tick() => {
                let now = tokio::time::Instant::now();
                if stats.recording.load(Relaxed) {
                    stats.late_us.lock().unwrap().push((now - scheduled).as_micros() as u32);
                }
                let done = stop.load(Relaxed)
                    || opts.duration.is_some_and(|d| now.duration_since(t0) >= d);
                let payload = match &id_frame {
                    Some(f) if !done && !link.agent_seen.load(Relaxed) => f.as_str(),
                    _ => match caller.next_frame(now, done) {
                        Some(p) => p,
                        None => break,
                    },
                };
                stream.send_media_b64(payload).await.map_err(|e| format!("send: {e}"))?;
            }
            event = stream.recv(&mut audio) => {
                let event = event.map_err(|e| match e {
                    SimError::Socket(e) => format!("stream: {e}"),
                    e => e.to_string(),
                })?;
                caller.heard(event, &audio)?;
            }
        }
    }
    stream.hang_up().await.map_err(|e| format!("stop: {e}"))?;
    stream.finish(Duration::from_secs(2)).await;
    Ok(())
}

/// Opens the call's stream and sends `connected` and `start` (`CallOptions::direct`).
async fn open_stream(opts: &CallOptions) -> Result<TwilioStream, String> {
    let ids = CallIds::new(&opts.call_sid, "+4915100000000", "+493000000000");
    let timeout = Duration::from_secs(10);
    let (url, parameters) = if opts.direct {
        (opts.stream_url.clone(), Vec::new())
    } else {
        // As Twilio: the signed voice webhook first, then the stream its TwiML names (the URL
        // carries the call's nonce; docs/twilio.md §8).
        let webhook = voice_url_of(&opts.stream_url);
        let answer = voice_webhook(&webhook, &opts.auth_token, &ids, timeout)
            .await
            .map_err(|e| e.to_string())?;
        let twiml = answer
            .stream
            .ok_or_else(|| format!("voice webhook {}: no stream in the TwiML", answer.status))?;
        (twiml.url, twiml.parameters)
    };
    let mut stream = TwilioStream::connect(&url, &opts.auth_token, ids, timeout)
        .await
        .map_err(|e| e.to_string())?;
    stream.start(&parameters).await.map_err(|e| e.to_string())?;
    Ok(stream)
}

/// A fresh call SID.
pub fn call_sid(n: u64) -> String {
    format!("CA{:016x}{:016x}", std::process::id(), n)
}

/// Resets the recorded samples (between runs in one process).
pub fn clear(stats: &Stats) {
    stats.up_us.lock().unwrap().clear();
    stats.down_us.lock().unwrap().clear();
    stats.late_us.lock().unwrap().clear();
    stats.clear_after_us.lock().unwrap().clear();
    stats.clear_queued_us.lock().unwrap().clear();
}
