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
//! - **agent → caller**: the agent sends a 200 ms burst whose onset lies in 20 ms frame `f` of the
//!   burst. An ideal pacer with ignis's lead `L` (100 ms) releases that frame at
//!   `send time + max(0, 20·(f+1) ms − L)`. Added latency = arrival time at the caller of the
//!   `media` message whose audio contains the onset − that ideal release time.

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
/// ignis's default playout lead (`PlayoutConfig::lead_ms`).
pub const LEAD_MS: u64 = 100;
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
    /// Caller send lateness behind its absolute schedule, µs, per frame.
    pub late_us: Mutex<Vec<u32>>,
    pub probes_up_sent: AtomicU64,
    pub probes_down_sent: AtomicU64,
    pub pings: AtomicU64,
    pub pongs: AtomicU64,
    pub interruptions: AtomicU64,
    pub clears: AtomicU64,
    pub marks: AtomicU64,
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
    let bursts = Arc::new(bursts(opts.format));
    let order = Arc::new(AtomicU64::new(0));
    let service = AgentService::start(
        AgentServiceOptions {
            agent_id: AGENT_ID.to_owned(),
            api_key: String::new(),
            signature: String::new(),
        },
        move |conv| {
            let (stats, bursts, order) = (stats.clone(), bursts.clone(), order.clone());
            async move {
                let k = order.fetch_add(1, Relaxed);
                match conv {
                    Ok(conv) => {
                        if let Err(e) = conversation(conv, opts, &stats, &bursts, k).await {
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

/// Pre-encoded bursts: silence, then a tone from the onset frame on; with that frame's index.
fn bursts(format: AgentFormat) -> Vec<(usize, String)> {
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
            (f, STANDARD.encode(bytes))
        })
        .collect()
}

/// One conversation's schedule (bursts, pings, interruptions) and probe detection.
struct Agent<'a> {
    opts: AgentOptions,
    stats: &'a Stats,
    bursts: &'a [(usize, String)],
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
        self.next_burst
            .min(self.next_ping)
            .min(self.interrupt_at.unwrap_or(self.next_ping))
    }

    /// The messages due at `now`: a ping, an interruption, a burst.
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
        if self.interrupt_at.is_some_and(|t| now >= t) {
            self.interrupt_at = None;
            stats.interruptions.fetch_add(1, Relaxed);
            out.push(agent_rules::interruption(self.event_id));
        }
        if now >= self.next_burst {
            self.next_burst += self.opts.probe_every;
            if link.ending.load(Relaxed) {
                return out;
            }
            let (f, b64) = &self.bursts[(self.bursts_sent as usize) % self.bursts.len()];
            self.bursts_sent += 1;
            self.event_id += 1;
            let sent = now_ns();
            let release = ((f + 1) as u64 * 20).saturating_sub(LEAD_MS) * 1_000_000;
            link.down_due_ns.store(sent + release, Relaxed);
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
            if sent != 0 && self.stats.recording.load(Relaxed) {
                let at = now + i as u64 * 1_000_000_000 / rate(self.opts.format);
                let us = (at as i64 - sent as i64) / 1000;
                self.stats.up_us.lock().unwrap().push(us);
            }
        }
    }
}

async fn conversation(
    mut conv: Conversation,
    opts: AgentOptions,
    stats: &Stats,
    bursts: &[(usize, String)],
    k: u64,
) -> Result<(), String> {
    let sid = conv.variable("call_sid").ok_or("no call_sid")?.to_owned();
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
        bursts,
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
        CallerFrames { silence, probes }
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
}

impl<'a> Caller<'a> {
    /// The payload of the next frame, or `None` to hang up.
    fn next_frame(&mut self, now: tokio::time::Instant, done: bool) -> Option<&'a str> {
        let (frames, link, stats) = (self.frames, self.link, self.stats);
        if done && self.ending_since.is_none() {
            link.ending.store(true, Relaxed);
            self.ending_since = Some(self.chunk);
        }
        // Stop sending 600 ms after ending began (bursts in flight play out), then hang up.
        if self
            .ending_since
            .is_some_and(|c| self.chunk >= c + 30 && self.probe.is_none())
        {
            return None;
        }
        self.chunk += 1;
        link.up_sent.fetch_add(FRAME as u64, Relaxed);
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

    /// What ignis did on the stream (`audio`: the media's bytes).
    fn heard(&mut self, event: StreamEvent, audio: &[u8]) -> Result<(), String> {
        let (link, stats) = (self.link, self.stats);
        match event {
            StreamEvent::Media { at, plays_at } => {
                link.down_recv.fetch_add(audio.len() as u64, Relaxed);
                // Between bursts ignis sends nothing and the caller hears silence.
                let quiet = Duration::from_millis(u64::from(QUIET_MS));
                if self.heard_until.is_none_or(|end| at >= end + quiet) {
                    self.onset.quiet = self.onset.need;
                }
                self.heard_until = Some(plays_at + Duration::from_micros(audio.len() as u64 * 125));
                let samples = audio.iter().map(|&b| mulaw::decode_sample(b));
                if self.onset.scan(samples).is_some() {
                    let due = link.down_due_ns.swap(0, Relaxed);
                    if due != 0 && stats.recording.load(Relaxed) {
                        let us = (ns_of(at) as i64 - due as i64) / 1000;
                        stats.down_us.lock().unwrap().push(us);
                    }
                }
            }
            StreamEvent::Mark(_) => {
                stats.marks.fetch_add(1, Relaxed);
            }
            StreamEvent::Clear(at) => {
                stats.clears.fetch_add(1, Relaxed);
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
    let ids = CallIds::new(&opts.call_sid, "+4915100000000", "+493000000000");
    // As Twilio: the signed voice webhook first, then the stream its TwiML names (the URL
    // carries the call's nonce; docs/twilio.md §8).
    let timeout = Duration::from_secs(10);
    let webhook = voice_url_of(&opts.stream_url);
    let answer = voice_webhook(&webhook, &opts.auth_token, &ids, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let twiml = answer
        .stream
        .ok_or_else(|| format!("voice webhook {}: no stream in the TwiML", answer.status))?;
    let mut stream = TwilioStream::connect(&twiml.url, &opts.auth_token, ids, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let parameters = twiml.parameters;
    stream.start(&parameters).await.map_err(|e| e.to_string())?;

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
                let Some(payload) = caller.next_frame(now, done) else { break };
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

/// A fresh call SID.
pub fn call_sid(n: u64) -> String {
    format!("CA{:016x}{:016x}", std::process::id(), n)
}

/// Resets the recorded samples (between runs in one process).
pub fn clear(stats: &Stats) {
    stats.up_us.lock().unwrap().clear();
    stats.down_us.lock().unwrap().clear();
    stats.late_us.lock().unwrap().clear();
}
