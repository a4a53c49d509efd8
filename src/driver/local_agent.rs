//! A local stand-in for the ElevenLabs agent, for `ignis demo`: no account, no network. On the
//! simulator's conversation service ([`super::sim::agent`]) it plays an agent: metadata with the
//! audio formats, pings, `audio` with turn ids, `interruption` on barge-in; it greets with a
//! clip, runs the practice's booking script through the tool endpoints the way ElevenLabs calls
//! server tools (agent secret + the call's `secret__ignis_call` header), and echoes each caller
//! turn back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::net;
use super::sim::SimError;
use super::sim::agent::{AgentService, AgentServiceOptions, Conversation};
use crate::audio::format::AgentFormat;
use crate::http::url::Endpoint;
use crate::sim::agent::{self as rules, ClientMessage};
use crate::sim::{SPEECH_RMS, rms};

/// The agent id the local agent answers to (the demo configures ignis with it).
pub const LOCAL_AGENT_ID: &str = "local_demo_agent";
/// Audio sent per `audio` event (TTS arrives in bursts faster than real time).
const BURST_MS: usize = 100;
/// Quiet after caller speech that ends the caller's turn.
const END_OF_TURN: Duration = Duration::from_millis(400);
/// Largest response read from a tool endpoint.
const MAX_TOOL_RESPONSE: usize = 64 * 1024;

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
        let log = Arc::new(Mutex::new(AgentLog::default()));
        let l = log.clone();
        let service = AgentService::start(
            AgentServiceOptions {
                agent_id: LOCAL_AGENT_ID.to_owned(),
                api_key: String::new(),
                signature: String::new(),
            },
            move |conv| {
                let (opts, log) = (opts.clone(), l.clone());
                async move {
                    if let Ok(conv) = conv {
                        let _ = conversation(conv, opts, log).await;
                    }
                }
            },
        )
        .await?;
        Ok(LocalAgent {
            base: service.base(),
            log,
        })
    }
}

fn lock(log: &Mutex<AgentLog>) -> std::sync::MutexGuard<'_, AgentLog> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends `bytes` as turn `event_id`, in bursts.
async fn send_audio(
    conv: &mut Conversation,
    format: AgentFormat,
    event_id: u64,
    bytes: &[u8],
) -> Result<(), SimError> {
    let burst = format.samples_in_ms(BURST_MS as u32) * format.bytes_per_sample();
    for part in bytes.chunks(burst.max(1)) {
        conv.send(rules::audio_b64(event_id, &STANDARD.encode(part)))
            .await?;
    }
    Ok(())
}

/// The agent's turn-taking: who speaks until when, what the caller has said.
struct Turns {
    turn: u64,
    speaking_until: Instant,
    utterance: Vec<u8>,
    last_speech: Option<Instant>,
    ping_id: u64,
}

async fn conversation(
    mut conv: Conversation,
    opts: LocalAgentOptions,
    log: Arc<Mutex<AgentLog>>,
) -> Result<(), SimError> {
    let vars = conv.initiation["dynamic_variables"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    {
        let mut l = lock(&log);
        l.conversations += 1;
        l.dynamic_variable_names = vars.keys().cloned().collect();
    }
    let format = opts.format;
    let id = format!("conv_local_{}", std::process::id());
    conv.send_metadata(&id, format.as_str(), format.as_str())
        .await?;
    // The practice tools, called as ElevenLabs calls server tools, while the greeting plays.
    if let (Some((base, secret)), Some(token)) =
        (opts.tools.clone(), conv.variable("secret__ignis_call"))
    {
        let (log, token) = (log.clone(), token.to_owned());
        tokio::spawn(async move { run_booking_script(&base, &secret, &token, &log).await });
    }
    send_audio(&mut conv, format, 1, &rules::encode(format, &opts.greeting)).await?;
    let greeting = Duration::from_millis(opts.greeting.len() as u64 / 8);
    let mut turns = Turns {
        turn: 1,
        speaking_until: Instant::now() + greeting,
        utterance: Vec::new(),
        last_speech: None,
        ping_id: 0,
    };
    let mut ping = tokio::time::interval(Duration::from_secs(1));
    let mut turn_check = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = ping.tick() => {
                turns.ping_id += 1;
                lock(&log).pings += 1;
                conv.send(rules::ping(turns.ping_id)).await?;
            }
            _ = turn_check.tick() => {
                // The caller's turn ends after a pause: echo it back as the agent's reply.
                if turns.last_speech.is_some_and(|t| t.elapsed() >= END_OF_TURN) && !turns.utterance.is_empty() {
                    turns.turn += 1;
                    lock(&log).first_echo_sent_at.get_or_insert(Instant::now());
                    let reply = std::mem::take(&mut turns.utterance);
                    send_audio(&mut conv, format, turns.turn, &reply).await?;
                    let ms = (reply.len() / format.bytes_per_sample()) as u64 * 1000 / u64::from(format.sample_rate());
                    turns.speaking_until = Instant::now() + Duration::from_millis(ms);
                    turns.last_speech = None;
                }
            }
            m = conv.recv() => {
                let Some(text) = m? else { return Ok(()) };
                if let Some(reply) = heard(&mut turns, format, text.as_str(), &log) {
                    conv.send(reply).await?;
                }
            }
        }
    }
}

/// Takes in one client message; returns an `interruption` to send on barge-in.
fn heard(
    turns: &mut Turns,
    format: AgentFormat,
    text: &str,
    log: &Mutex<AgentLog>,
) -> Option<String> {
    let chunk = match rules::parse_client(text)? {
        ClientMessage::Pong(id) if id == turns.ping_id => {
            lock(log).pongs += 1;
            return None;
        }
        ClientMessage::UserAudio(chunk) => chunk,
        _ => return None,
    };
    let bytes = STANDARD.decode(chunk.as_bytes()).ok()?;
    let now = Instant::now();
    let mut reply = None;
    if rms(&rules::decode(format, &bytes)) > SPEECH_RMS {
        lock(log).first_speech_received_at.get_or_insert(now);
        if now < turns.speaking_until && turns.last_speech.is_none() {
            // Barge-in: the caller talks over the agent (§4.4).
            turns.turn += 1;
            lock(log).interruptions += 1;
            reply = Some(rules::interruption(turns.turn));
            turns.speaking_until = now;
        }
        turns.last_speech = Some(now);
    }
    if turns.last_speech.is_some() {
        turns.utterance.extend_from_slice(&bytes);
    }
    reply
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
            MAX_TOOL_RESPONSE,
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
