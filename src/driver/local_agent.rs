//! A local stand-in for the ElevenLabs agent, for `ignis demo`: no account, no network. It speaks
//! the conversation protocol as elevenlabs.md describes it (initiation data first, metadata with
//! the audio formats, pings, `audio` with turn ids, `interruption` on barge-in), greets with a
//! clip, runs the practice's booking script through the tool endpoints the way ElevenLabs calls
//! server tools (agent secret + the call's `secret__ignis_call` header), and echoes each caller
//! turn back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use super::net;
use crate::audio::format::AgentFormat;
use crate::audio::mulaw;
use crate::http::url::Endpoint;

/// Audio sent per `audio` event (TTS arrives in bursts faster than real time).
const BURST_MS: usize = 100;
/// Quiet after caller speech that ends the caller's turn.
const END_OF_TURN: Duration = Duration::from_millis(400);
/// Energy (RMS) above which caller audio counts as speech.
const SPEECH_RMS: f64 = 500.0;

/// What the local agent saw and did, with times on the process's clock.
#[derive(Debug, Default, Clone)]
pub struct AgentLog {
    /// Conversations handled.
    pub conversations: u64,
    /// When the first caller speech arrived.
    pub first_speech_received_at: Option<Instant>,
    /// When the first echo was sent.
    pub first_echo_sent_at: Option<Instant>,
    /// Interruptions sent.
    pub interruptions: u64,
    /// Pings sent / pongs received with the right id.
    pub pings: u64,
    /// Pongs with the matching id.
    pub pongs: u64,
    /// Booking-script steps that answered `ok: true`, and how many ran.
    pub tool_steps_ok: usize,
    /// Steps run.
    pub tool_steps: usize,
    /// The dynamic variables received.
    pub dynamic_variable_names: Vec<String>,
}

/// Settings.
#[derive(Clone)]
pub struct LocalAgentOptions {
    /// The audio format both ways.
    pub format: AgentFormat,
    /// The greeting, 8 kHz PCM.
    pub greeting: Vec<i16>,
    /// ignis's own base URL and the agent secret, to call the practice tools.
    pub tools: Option<(String, String)>,
}

/// A running local agent.
pub struct LocalAgent {
    /// Its `http://` base, for `ELEVENLABS_API_BASE`.
    pub base: String,
    /// What it did.
    pub log: Arc<Mutex<AgentLog>>,
}

impl LocalAgent {
    /// Starts listening on loopback.
    pub async fn start(opts: LocalAgentOptions) -> std::io::Result<LocalAgent> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let log = Arc::new(Mutex::new(AgentLog::default()));
        let l = log.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (opts, log) = (opts.clone(), l.clone());
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                        conversation(ws, opts, log).await;
                    }
                });
            }
        });
        Ok(LocalAgent { base, log })
    }
}

fn lock(log: &Mutex<AgentLog>) -> std::sync::MutexGuard<'_, AgentLog> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// PCM at 8 kHz into the agent's wire format (bytes).
fn encode(format: AgentFormat, pcm8k: &[i16]) -> Vec<u8> {
    if format.is_ulaw() {
        return pcm8k.iter().map(|&s| mulaw::encode_sample(s)).collect();
    }
    let wav = crate::audio::wav::Wav {
        rate: 8000,
        samples: pcm8k.to_vec(),
    };
    let samples = crate::audio::wav::resample_clip(&wav, format.sample_rate()).unwrap_or_default();
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// The agent's wire format into 16-bit samples (at the format's rate).
fn decode(format: AgentFormat, bytes: &[u8]) -> Vec<i16> {
    if format.is_ulaw() {
        bytes.iter().map(|&b| mulaw::decode_sample(b)).collect()
    } else {
        bytes
            .chunks_exact(2)
            .map(|p| i16::from_le_bytes([p[0], p[1]]))
            .collect()
    }
}

fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn send_audio(ws: &mut Ws, format: AgentFormat, event_id: u64, bytes: &[u8]) -> bool {
    let burst = format.samples_in_ms(BURST_MS as u32) * format.bytes_per_sample();
    for part in bytes.chunks(burst.max(1)) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(part);
        let msg = json!({"type":"audio","audio_event":{"audio_base_64":b64,"event_id":event_id}});
        if ws.send(Message::text(msg.to_string())).await.is_err() {
            return false;
        }
    }
    true
}

async fn conversation(mut ws: Ws, opts: LocalAgentOptions, log: Arc<Mutex<AgentLog>>) {
    // §1.7: the initiation data comes first.
    let init: Value = match ws.next().await {
        Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str()).unwrap_or(Value::Null),
        _ => return,
    };
    let vars = init["dynamic_variables"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    {
        let mut l = lock(&log);
        l.conversations += 1;
        l.dynamic_variable_names = vars.keys().cloned().collect();
    }
    let format = opts.format;
    let meta = json!({"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{
        "conversation_id": format!("conv_local_{}", std::process::id()),
        "agent_output_audio_format": format.as_str(), "user_input_audio_format": format.as_str()}});
    if ws.send(Message::text(meta.to_string())).await.is_err() {
        return;
    }

    // The practice tools, called as ElevenLabs calls server tools, while the greeting plays.
    if let (Some((base, secret)), Some(token)) = (
        opts.tools.clone(),
        vars.get("secret__ignis_call").and_then(Value::as_str),
    ) {
        let (log, token) = (log.clone(), token.to_owned());
        tokio::spawn(async move { run_booking_script(&base, &secret, &token, &log).await });
    }

    let mut turn: u64 = 1;
    let greeting = encode(format, &opts.greeting);
    let greeting_ms = opts.greeting.len() as u64 / 8;
    if !send_audio(&mut ws, format, turn, &greeting).await {
        return;
    }
    let mut speaking_until = Instant::now() + Duration::from_millis(greeting_ms);
    let mut utterance: Vec<u8> = Vec::new();
    let mut last_speech: Option<Instant> = None;
    let mut ping = tokio::time::interval(Duration::from_secs(1));
    let mut turn_check = tokio::time::interval(Duration::from_millis(50));
    let mut ping_id = 0u64;
    loop {
        tokio::select! {
            _ = ping.tick() => {
                ping_id += 1;
                lock(&log).pings += 1;
                let p = json!({"type":"ping","ping_event":{"event_id":ping_id,"ping_ms":null}});
                if ws.send(Message::text(p.to_string())).await.is_err() {
                    return;
                }
            }
            _ = turn_check.tick() => {
                // The caller's turn ends after a pause: echo it back as the agent's reply.
                if last_speech.is_some_and(|t| t.elapsed() >= END_OF_TURN) && !utterance.is_empty() {
                    turn += 1;
                    lock(&log).first_echo_sent_at.get_or_insert(Instant::now());
                    let reply = std::mem::take(&mut utterance);
                    if !send_audio(&mut ws, format, turn, &reply).await {
                        return;
                    }
                    let ms = (reply.len() / format.bytes_per_sample()) as u64 * 1000 / u64::from(format.sample_rate());
                    speaking_until = Instant::now() + Duration::from_millis(ms);
                    last_speech = None;
                }
            }
            m = ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                if v["type"] == "pong" && v["event_id"] == ping_id {
                    lock(&log).pongs += 1;
                    continue;
                }
                let Some(chunk) = v["user_audio_chunk"].as_str() else { continue };
                let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(chunk) else { continue };
                let now = Instant::now();
                if rms(&decode(format, &bytes)) > SPEECH_RMS {
                    lock(&log).first_speech_received_at.get_or_insert(now);
                    if now < speaking_until && last_speech.is_none() {
                        // Barge-in: the caller talks over the agent (§4.4).
                        turn += 1;
                        lock(&log).interruptions += 1;
                        let i = json!({"type":"interruption","interruption_event":{"event_id":turn}});
                        let _ = ws.send(Message::text(i.to_string())).await;
                        speaking_until = now;
                    }
                    last_speech = Some(now);
                }
                if last_speech.is_some() {
                    utterance.extend_from_slice(&bytes);
                }
            }
        }
    }
}

/// Replays the practice's scripted booking through ignis's tool endpoints.
async fn run_booking_script(base: &str, secret: &str, call_token: &str, log: &Mutex<AgentLog>) {
    let Ok(ep) = Endpoint::parse(base) else {
        return;
    };
    for step in crate::practice::demo::DEMO_BOOKING_SCRIPT {
        let target = if step.query.is_empty() {
            step.path.to_owned()
        } else {
            format!("{}?{}", step.path, step.query)
        };
        let req = format!(
            "{} {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {secret}\r\n\
             X-Ignis-Call: {call_token}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{}",
            step.method,
            ep.host_header(),
            step.body.len(),
            step.body
        );
        let Ok(tls) = net::default_tls() else {
            return;
        };
        let result = net::request(
            &ep,
            &tls,
            req.as_bytes(),
            Duration::from_secs(5),
            64 * 1024,
            |buf, eof| {
                // Read to the end of the (Connection: close) response.
                if !eof {
                    return Ok::<_, &str>(None);
                }
                let text = String::from_utf8_lossy(buf);
                Ok(Some(
                    text.starts_with("HTTP/1.1 200") && text.contains("\"ok\":true"),
                ))
            },
        )
        .await;
        let mut l = lock(log);
        l.tool_steps += 1;
        if matches!(result, Ok(true)) {
            l.tool_steps_ok += 1;
        }
    }
}
