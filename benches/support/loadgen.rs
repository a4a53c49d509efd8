//! Shared by `benches/e2e_latency.rs` and `benches/load.rs` (issue 6): a stand-in ElevenLabs agent
//! and simulated Twilio callers with tone-onset probes in both directions, cheap enough to drive
//! hundreds of real-time calls from one thread.
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
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use ignis::audio::mulaw;

/// Twilio's frame: 20 ms of 8 kHz μ-law.
pub const FRAME: usize = 160;
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

/// The agent's audio format both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Pass-through.
    Ulaw,
    /// Transcoding.
    Pcm16k,
}

impl Format {
    /// ElevenLabs name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Ulaw => "ulaw_8000",
            Format::Pcm16k => "pcm_16000",
        }
    }
    /// Parses a name.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "ulaw_8000" | "ulaw" => Some(Format::Ulaw),
            "pcm_16000" | "pcm" => Some(Format::Pcm16k),
            _ => None,
        }
    }
    fn rate(self) -> u64 {
        match self {
            Format::Ulaw => 8000,
            Format::Pcm16k => 16000,
        }
    }
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

/// The body of a JSON string field (`"key":"…"`), without unescaping (base64 needs none).
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let i = text.find(key)? + key.len();
    let rest = &text[i..];
    let rest = &rest[rest.find('"')? + 1..];
    Some(&rest[..rest.find('"')?])
}

// ---------------------------------------------------------------------------------------------
// The stand-in agent
// ---------------------------------------------------------------------------------------------

/// Agent behaviour.
#[derive(Debug, Clone, Copy)]
pub struct AgentOptions {
    pub format: Format,
    /// A burst with an onset probe this often per call.
    pub probe_every: Duration,
    /// An `interruption` after every this many bursts (0: never).
    pub interrupt_every: u64,
    /// A ping this often.
    pub ping_every: Duration,
}

/// Starts the agent on loopback; returns its `http://` base for `ELEVENLABS_API_BASE`.
pub async fn start_agent(opts: AgentOptions, stats: Arc<Stats>) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    // Pre-encoded bursts: silence, then a tone from the onset frame on.
    let rate = opts.format.rate();
    let spf = (rate / 50) as usize; // samples per 20 ms frame
    let bursts: Arc<Vec<(usize, String)>> = Arc::new(
        (0..DOWN_FRAMES.len() * 3)
            .map(|k| {
                let f = DOWN_FRAMES[k % DOWN_FRAMES.len()];
                // Onset in the middle half of the frame, so a resampler's few samples of delay
                // never move it into the next frame.
                let q = f * spf + spf / 4 + (k * spf / 2 / 15);
                let samples: Vec<i16> = (0..TONE_FRAMES * spf)
                    .map(|n| if n < q { 0 } else { tone(n - q, rate) })
                    .collect();
                let bytes: Vec<u8> = match opts.format {
                    Format::Ulaw => samples.iter().map(|&s| mulaw::encode_sample(s)).collect(),
                    Format::Pcm16k => samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
                };
                (f, STANDARD.encode(bytes))
            })
            .collect(),
    );
    let order = AtomicU64::new(0);
    let order = Arc::new(order);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let (stats, bursts, order) = (stats.clone(), bursts.clone(), order.clone());
            tokio::spawn(async move {
                let k = order.fetch_add(1, Relaxed);
                match tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())).await {
                    Ok(ws) => {
                        if let Err(e) = conversation(ws, opts, &stats, &bursts, k).await {
                            stats.error(format!("agent: {e}"));
                        }
                    }
                    Err(e) => stats.error(format!("agent handshake: {e}")),
                }
            });
        }
    });
    Ok(base)
}

type ServerWs = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Socket settings of the generator's callers and agents. tungstenite zero-fills its whole read
/// buffer before every read; with the default 128 KiB that `memset` was 40 % of the generator's
/// CPU (perf), which capped the load it could drive. Messages here are under 4 KiB; a larger one
/// grows the buffer as it arrives.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

async fn conversation(
    mut ws: ServerWs,
    opts: AgentOptions,
    stats: &Stats,
    bursts: &[(usize, String)],
    k: u64,
) -> Result<(), String> {
    let init = match ws.next().await {
        Some(Ok(Message::Text(t))) => t,
        other => return Err(format!("no initiation data: {other:?}")),
    };
    let v: serde_json::Value = serde_json::from_str(init.as_str()).map_err(|e| e.to_string())?;
    let sid = v["dynamic_variables"]["call_sid"]
        .as_str()
        .ok_or("no call_sid")?
        .to_owned();
    let link = stats
        .links
        .lock()
        .unwrap()
        .get(&sid)
        .cloned()
        .ok_or("unknown call")?;
    stats.agent_conversations.fetch_add(1, Relaxed);
    link.agent_seen.store(true, Relaxed);
    let fmt = opts.format.name();
    let meta = format!(
        r#"{{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{{"conversation_id":"conv_{sid}","agent_output_audio_format":"{fmt}","user_input_audio_format":"{fmt}"}}}}"#
    );
    ws.send(Message::text(meta))
        .await
        .map_err(|e| e.to_string())?;

    let rate = opts.format.rate();
    let mut onset = Onset::new(rate);
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let start = tokio::time::Instant::now();
    // Stagger: bursts half a period after the caller's probes, spread over calls.
    let phase =
        Duration::from_micros((k * 7919 * 1000) % opts.probe_every.as_micros().max(1) as u64);
    let mut next_burst = start + opts.probe_every / 2 + phase;
    let mut next_ping = start + opts.ping_every + phase / 3;
    let mut interrupt_at: Option<tokio::time::Instant> = None;
    let (mut ping_id, mut pong_id, mut event_id, mut bursts_sent) = (0u64, 0u64, 0u64, 0u64);
    let bytes_per_8k = if opts.format == Format::Ulaw { 1 } else { 4 };
    loop {
        let wake = next_burst
            .min(next_ping)
            .min(interrupt_at.unwrap_or(next_ping));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                let now = tokio::time::Instant::now();
                if now >= next_ping {
                    next_ping += opts.ping_every;
                    if pong_id != ping_id {
                        stats.error(format!("{sid}: ping {ping_id} unanswered"));
                    }
                    ping_id += 1;
                    stats.pings.fetch_add(1, Relaxed);
                    let p = format!(r#"{{"type":"ping","ping_event":{{"event_id":{ping_id},"ping_ms":null}}}}"#);
                    ws.send(Message::text(p)).await.map_err(|e| e.to_string())?;
                }
                if interrupt_at.is_some_and(|t| now >= t) {
                    interrupt_at = None;
                    stats.interruptions.fetch_add(1, Relaxed);
                    let m = format!(r#"{{"type":"interruption","interruption_event":{{"event_id":{event_id}}}}}"#);
                    ws.send(Message::text(m)).await.map_err(|e| e.to_string())?;
                }
                if now >= next_burst {
                    next_burst += opts.probe_every;
                    if link.ending.load(Relaxed) {
                        continue;
                    }
                    let (f, b64) = &bursts[(bursts_sent as usize) % bursts.len()];
                    bursts_sent += 1;
                    event_id += 1;
                    let m = format!(r#"{{"type":"audio","audio_event":{{"audio_base_64":"{b64}","event_id":{event_id}}}}}"#);
                    let sent = now_ns();
                    let release = ((f + 1) as u64 * 20).saturating_sub(LEAD_MS) * 1_000_000;
                    link.down_due_ns.store(sent + release, Relaxed);
                    link.down_sent.fetch_add((TONE_FRAMES * FRAME) as u64, Relaxed);
                    if stats.recording.load(Relaxed) {
                        stats.probes_down_sent.fetch_add(1, Relaxed);
                    }
                    ws.send(Message::text(m)).await.map_err(|e| e.to_string())?;
                    if opts.interrupt_every > 0 && bursts_sent % opts.interrupt_every == 0 {
                        // Once the burst has been released (its last frame leaves ignis `LEAD_MS` before the
                        // burst ends), so nothing is held back to be dropped; before the next burst.
                        interrupt_at = Some(now + Duration::from_millis(20 * TONE_FRAMES as u64 + 50));
                    }
                }
            }
            m = ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Err(e)) => {
                        // A reset after the caller hung up is an ordinary end here.
                        if link.ending.load(Relaxed) { return Ok(()); }
                        return Err(e.to_string());
                    }
                    Some(Ok(_)) => continue,
                };
                let now = now_ns();
                let t = text.as_str();
                if let Some(chunk) = field(t, "\"user_audio_chunk\"") {
                    buf.clear();
                    if STANDARD.decode_vec(chunk, &mut buf).is_err() {
                        stats.error(format!("{sid}: bad base64 from ignis"));
                        continue;
                    }
                    link.up_recv.fetch_add((buf.len() / bytes_per_8k) as u64, Relaxed);
                    let hit = match opts.format {
                        Format::Ulaw => onset.scan(buf.iter().map(|&b| mulaw::decode_sample(b))),
                        Format::Pcm16k => onset.scan(
                            buf.chunks_exact(2).map(|p| i16::from_le_bytes([p[0], p[1]])),
                        ),
                    };
                    if let Some(i) = hit {
                        let sent = link.up_onset_ns.swap(0, Relaxed);
                        if sent != 0 && stats.recording.load(Relaxed) {
                            let at = now + i as u64 * 1_000_000_000 / rate;
                            stats.up_us.lock().unwrap().push((at as i64 - sent as i64) / 1000);
                        }
                    }
                } else if t.contains("\"pong\"") {
                    let v: serde_json::Value = serde_json::from_str(t).unwrap_or_default();
                    if let Some(id) = v["event_id"].as_u64() {
                        pong_id = id;
                        stats.pongs.fetch_add(1, Relaxed);
                    }
                }
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

async fn run_call(
    opts: &CallOptions,
    frames: &CallerFrames,
    stats: &Stats,
    stop: &AtomicBool,
    link: &Link,
) -> Result<(), String> {
    let stream = TcpStream::connect(
        opts.stream_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap_or(""),
    )
    .await
    .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut request = opts
        .stream_url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let sig = ignis::twilio::signature::sign(&opts.auth_token, &opts.stream_url, &[]);
    request.headers_mut().insert(
        "X-Twilio-Signature",
        HeaderValue::from_str(&sig).map_err(|e| e.to_string())?,
    );
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| format!("handshake: {e}"))?;

    let sid = &opts.call_sid;
    let stream_sid = format!("MZ{}", &sid[2..]);
    ws.send(Message::text(
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
    ))
    .await
    .map_err(|e| e.to_string())?;
    ws.send(Message::text(format!(
        r#"{{"event":"start","sequenceNumber":"1","streamSid":"{stream_sid}","start":{{"accountSid":"AC00000000000000000000000000000000","streamSid":"{stream_sid}","callSid":"{sid}","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"customParameters":{{"caller":"+4915100000000","called":"+493000000000","callSid":"{sid}"}}}}}}"#
    )))
    .await
    .map_err(|e| e.to_string())?;

    let t0 = tokio::time::Instant::now() + opts.phase;
    let mut ticker = tokio::time::interval_at(t0, Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let probe_frames = (opts.probe_every.as_millis() / 20).max(TONE_FRAMES as u128 + 5) as u64;
    let probe_phase = (ns_of(t0.into_std()) / 20_000_000) % probe_frames;
    let mut seq = 1u64;
    let mut chunk = 0u64;
    let mut probe_no = 0usize;
    let mut probe: Option<(usize, usize)> = None; // (offset index, next frame)
    let mut ending_since: Option<u64> = None;
    let mut onset = Onset::new(8000);
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut marks: Vec<(tokio::time::Instant, String)> = Vec::new();
    let mut play_end = tokio::time::Instant::now();
    loop {
        tokio::select! {
            scheduled = ticker.tick() => {
                let now = tokio::time::Instant::now();
                if stats.recording.load(Relaxed) {
                    stats.late_us.lock().unwrap().push((now - scheduled).as_micros() as u32);
                }
                // Marks whose audio has played.
                while let Some(i) = marks.iter().position(|(t, _)| *t <= now) {
                    let (_, name) = marks.swap_remove(i);
                    echo_mark(&mut ws, &stream_sid, &mut seq, &name).await?;
                }
                let done = stop.load(Relaxed)
                    || opts.duration.is_some_and(|d| now.duration_since(t0) >= d);
                if done && ending_since.is_none() {
                    link.ending.store(true, Relaxed);
                    ending_since = Some(chunk);
                }
                // Stop sending 600 ms after ending began (bursts in flight play out), then hang up.
                if ending_since.is_some_and(|c| chunk >= c + 30 && probe.is_none()) {
                    break;
                }
                chunk += 1;
                seq += 1;
                let payload: &str = match probe {
                    Some((oi, fi)) => {
                        let list = &frames.probes[oi];
                        probe = (fi + 1 < list.len()).then_some((oi, fi + 1));
                        &list[fi]
                    }
                    None if ending_since.is_none() && chunk % probe_frames == probe_phase => {
                        let oi = probe_no % UP_OFFSETS.len();
                        probe_no += 1;
                        let list = &frames.probes[oi];
                        probe = (list.len() > 1).then_some((oi, 1));
                        let at = now_ns() + UP_OFFSETS[oi] as u64 * 125_000;
                        link.up_onset_ns.store(at, Relaxed);
                        if stats.recording.load(Relaxed) {
                            stats.probes_up_sent.fetch_add(1, Relaxed);
                        }
                        &list[0]
                    }
                    None => &frames.silence,
                };
                let mut m = String::with_capacity(200 + payload.len());
                let _ = write!(
                    m,
                    r#"{{"event":"media","sequenceNumber":"{seq}","streamSid":"{stream_sid}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{}","payload":"{payload}"}}}}"#,
                    (chunk - 1) * 20
                );
                link.up_sent.fetch_add(FRAME as u64, Relaxed);
                ws.send(Message::text(m)).await.map_err(|e| format!("send: {e}"))?;
            }
            m = ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(f))) => return Err(format!("ignis closed the stream: {f:?}")),
                    None => return Err("ignis closed the stream".into()),
                    Some(Err(e)) => return Err(format!("stream: {e}")),
                    Some(Ok(_)) => continue,
                };
                let now_i = tokio::time::Instant::now();
                let now = ns_of(now_i.into_std());
                let t = text.as_str();
                if let Some(p) = field(t, "\"payload\"") {
                    buf.clear();
                    STANDARD.decode_vec(p, &mut buf).map_err(|e| format!("bad payload: {e}"))?;
                    link.down_recv.fetch_add(buf.len() as u64, Relaxed);
                    // Between bursts ignis sends nothing and the caller hears silence.
                    if now_i >= play_end + Duration::from_millis(u64::from(QUIET_MS)) {
                        onset.quiet = onset.need;
                    }
                    play_end = play_end.max(now_i) + Duration::from_micros(buf.len() as u64 * 125);
                    if onset.scan(buf.iter().map(|&b| mulaw::decode_sample(b))).is_some() {
                        let due = link.down_due_ns.swap(0, Relaxed);
                        if due != 0 && stats.recording.load(Relaxed) {
                            stats.down_us.lock().unwrap().push((now as i64 - due as i64) / 1000);
                        }
                    }
                } else if t.contains("\"event\":\"mark\"") {
                    stats.marks.fetch_add(1, Relaxed);
                    if let Some(name) = field(t, "\"name\"") {
                        marks.push((play_end, name.to_owned()));
                    }
                } else if t.contains("\"event\":\"clear\"") {
                    stats.clears.fetch_add(1, Relaxed);
                    play_end = now_i;
                    for (_, name) in std::mem::take(&mut marks) {
                        echo_mark(&mut ws, &stream_sid, &mut seq, &name).await?;
                    }
                }
            }
        }
    }
    seq += 1;
    let stop_msg = format!(
        r#"{{"event":"stop","sequenceNumber":"{seq}","streamSid":"{stream_sid}","stop":{{"accountSid":"AC00000000000000000000000000000000","callSid":"{sid}"}}}}"#
    );
    ws.send(Message::text(stop_msg))
        .await
        .map_err(|e| format!("stop: {e}"))?;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    Ok(())
}

async fn echo_mark(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
    stream_sid: &str,
    seq: &mut u64,
    name: &str,
) -> Result<(), String> {
    *seq += 1;
    let m = format!(
        r#"{{"event":"mark","sequenceNumber":"{seq}","streamSid":"{stream_sid}","mark":{{"name":"{name}"}}}}"#
    );
    ws.send(Message::text(m))
        .await
        .map_err(|e| format!("mark: {e}"))
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
