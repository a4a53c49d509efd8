//! A simulated caller that behaves as Twilio does (twilio.md §1–§3): a signed voice webhook, then
//! the signed Media Streams socket with `connected`, `start`, 20 ms `media` frames on an absolute
//! clock, marks echoed once the audio before them has played, `clear` honoured, `stop` at the end.
//! It records what the caller heard on a timeline, so a `clear` cuts the recording as it would
//! cut the sound. Used by `ignis demo` and `ignis simulate`.

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::net;
use crate::audio::mulaw;
use crate::http::form;
use crate::http::url::Endpoint;
use crate::twilio::signature;

/// Twilio's frame: 20 ms of 8 kHz μ-law.
const FRAME: usize = 160;
const FRAME_MS: u64 = 20;
/// Energy (RMS of 16-bit samples) above which a frame counts as speech.
pub const SPEECH_RMS: f64 = 500.0;

/// When the caller starts talking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeakAt {
    /// Once the agent's greeting has been heard and 500 ms of quiet followed.
    AfterGreeting,
    /// This long after the stream started (talking over the agent: a barge-in).
    After(Duration),
}

/// What to do.
#[derive(Debug, Clone)]
pub struct CallerOptions {
    /// `wss://host/api/twilio/stream` (or `ws://` locally).
    pub stream_url: String,
    /// The voice webhook to call first (`https://host/api/twilio/voice`), if any.
    pub webhook_url: Option<String>,
    /// The account auth token that signs both.
    pub auth_token: String,
    /// The call's SID.
    pub call_sid: String,
    /// Caller and called numbers.
    pub from: String,
    /// The called number.
    pub to: String,
    /// The caller's speech: 8 kHz μ-law.
    pub speech: Vec<u8>,
    /// When to start speaking.
    pub speak_at: SpeakAt,
    /// Quiet time after the speech before hanging up (lets the agent answer).
    pub tail: Duration,
    /// Hard limit on the call.
    pub max_duration: Duration,
    /// Connect timeout.
    pub timeout: Duration,
}

/// What happened.
#[derive(Debug, Default, Clone)]
pub struct CallerReport {
    /// Status of the voice webhook, if called.
    pub webhook_status: Option<u16>,
    /// When `start` was sent.
    pub started_at: Option<Instant>,
    /// When the first agent audio arrived.
    pub first_audio_at: Option<Instant>,
    /// When the first speech frame of the caller was sent.
    pub first_speech_sent_at: Option<Instant>,
    /// Arrival time of every agent audio message (for latency matching).
    pub audio_arrivals: Vec<Instant>,
    /// What the caller heard, 8 kHz PCM, from `start`.
    pub heard: Vec<i16>,
    /// Frames the caller sent.
    pub frames_sent: u64,
    /// 20 ms frames of agent audio received.
    pub frames_received: u64,
    /// `clear` messages received.
    pub clears: u64,
    /// Marks received (and echoed).
    pub marks: u64,
    /// How the stream ended.
    pub ended_by: String,
}

/// Runs one call to its end.
pub async fn run(opts: CallerOptions) -> Result<CallerReport, String> {
    let mut report = CallerReport::default();
    if let Some(url) = &opts.webhook_url {
        report.webhook_status = Some(voice_webhook(&opts, url).await?);
    }

    // The signed upgrade (twilio.md §1.1: over the wss URL, no parameters).
    let ep = Endpoint::parse(&opts.stream_url).map_err(|e| format!("stream URL: {e}"))?;
    let tls = net::default_tls().map_err(|e| format!("TLS: {e}"))?;
    let stream = net::connect(&ep, &tls, opts.timeout)
        .await
        .map_err(|e| format!("connect {}: {e}", opts.stream_url))?;
    let mut request = opts
        .stream_url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("stream URL: {e}"))?;
    let sig = signature::sign(&opts.auth_token, &opts.stream_url, &[]);
    request.headers_mut().insert(
        "X-Twilio-Signature",
        HeaderValue::from_str(&sig).map_err(|e| e.to_string())?,
    );
    let (mut ws, _) = tokio::time::timeout(
        opts.timeout,
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .map_err(|_| "stream handshake timed out".to_owned())?
    .map_err(|e| format!("stream handshake: {e}"))?;

    let stream_sid = format!("MZ{}", &opts.call_sid.get(2..).unwrap_or("0"));
    let mut seq = 0u64;
    let mut next_seq = || {
        seq += 1;
        seq.to_string()
    };
    let send = |text: String| Message::text(text);
    ws.send(send(
        json!({"event":"connected","protocol":"Call","version":"1.0.0"}).to_string(),
    ))
    .await
    .map_err(|e| e.to_string())?;
    ws.send(send(
        json!({"event":"start","sequenceNumber":next_seq(),"streamSid":stream_sid,
            "start":{"accountSid":"AC00000000000000000000000000000000","streamSid":stream_sid,
            "callSid":opts.call_sid,"tracks":["inbound"],
            "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},
            "customParameters":{"caller":opts.from,"called":opts.to,"callSid":opts.call_sid}}})
        .to_string(),
    ))
    .await
    .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    report.started_at = Some(t0);

    // Playback model: audio plays back to back in real time; marks wait for it (§1.4).
    let mut play_cursor = 0usize; // samples into `heard`
    let mut pending_marks: Vec<(usize, String)> = Vec::new();
    let mut speech_pos: Option<usize> = None; // next speech byte to send, once talking
    let mut speech_done_at: Option<Instant> = None;
    let mut chunk = 0u64;
    let silence = [mulaw::SILENCE; FRAME];
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::from_std(t0),
        Duration::from_millis(FRAME_MS),
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);

    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = Instant::now();
                let at_ms = now.duration_since(t0);
                if now.duration_since(t0) > opts.max_duration {
                    report.ended_by = "max duration".into();
                    break;
                }
                // Decide when to talk.
                if speech_pos.is_none() && speech_done_at.is_none() {
                    let start = match opts.speak_at {
                        SpeakAt::After(d) => at_ms >= d,
                        SpeakAt::AfterGreeting => {
                            let heard_until = play_cursor as u64 / 8;
                            report.first_audio_at.is_some()
                                && at_ms.as_millis() as u64 >= heard_until + 500
                        }
                    };
                    if start {
                        speech_pos = Some(0);
                    }
                }
                let frame: &[u8] = match speech_pos {
                    Some(p) if p < opts.speech.len() => {
                        let end = (p + FRAME).min(opts.speech.len());
                        speech_pos = Some(end);
                        if report.first_speech_sent_at.is_none() && is_speech(&opts.speech[p..end]) {
                            report.first_speech_sent_at = Some(now);
                        }
                        &opts.speech[p..end]
                    }
                    Some(_) => {
                        speech_pos = None;
                        speech_done_at = Some(now);
                        &silence
                    }
                    None => &silence,
                };
                chunk += 1;
                let msg = json!({"event":"media","sequenceNumber":next_seq(),"streamSid":stream_sid,
                    "media":{"track":"inbound","chunk":chunk.to_string(),
                    "timestamp":((chunk - 1) * FRAME_MS).to_string(),
                    "payload":base64::engine::general_purpose::STANDARD.encode(frame)}});
                if ws.send(send(msg.to_string())).await.is_err() {
                    report.ended_by = "stream closed by ignis".into();
                    break;
                }
                report.frames_sent += 1;
                // Echo marks whose audio has played.
                let played = (now.duration_since(t0).as_millis() as usize) * 8;
                let due: Vec<String> = pending_marks
                    .iter()
                    .filter(|(at, _)| *at <= played)
                    .map(|(_, n)| n.clone())
                    .collect();
                pending_marks.retain(|(at, _)| *at > played);
                for name in due {
                    let m = json!({"event":"mark","sequenceNumber":next_seq(),"streamSid":stream_sid,"mark":{"name":name}});
                    let _ = ws.send(send(m.to_string())).await;
                }
                if speech_done_at.is_some_and(|t| now.duration_since(t) >= opts.tail) {
                    report.ended_by = "caller hung up".into();
                    let stop = json!({"event":"stop","sequenceNumber":next_seq(),"streamSid":stream_sid,
                        "stop":{"accountSid":"AC00000000000000000000000000000000","callSid":opts.call_sid}});
                    let _ = ws.send(send(stop.to_string())).await;
                    let _ = ws.close(None).await;
                    break;
                }
            }
            m = ws.next() => {
                let now = Instant::now();
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(f))) => {
                        report.ended_by = format!("ignis closed the stream ({})", f.map_or("no code".into(), |f| u16::from(f.code).to_string()));
                        break;
                    }
                    Some(Ok(_)) => continue,
                    None | Some(Err(_)) => {
                        report.ended_by = "stream dropped".into();
                        break;
                    }
                };
                let v: serde_json::Value = serde_json::from_str(text.as_str()).map_err(|_| "ignis sent non-JSON (Twilio 31951)".to_owned())?;
                let now_pos = (now.duration_since(t0).as_millis() as usize) * 8;
                match v["event"].as_str() {
                    Some("media") => {
                        let payload = v["media"]["payload"].as_str().unwrap_or("");
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(payload)
                            .map_err(|_| "bad media payload (Twilio 31951)".to_owned())?;
                        report.first_audio_at.get_or_insert(now);
                        report.audio_arrivals.push(now);
                        report.frames_received += (bytes.len() / FRAME) as u64;
                        let start = play_cursor.max(now_pos);
                        if report.heard.len() < start {
                            report.heard.resize(start, 0);
                        }
                        report.heard.truncate(start);
                        report.heard.extend(bytes.iter().map(|&b| mulaw::decode_sample(b)));
                        play_cursor = report.heard.len();
                    }
                    Some("mark") => {
                        report.marks += 1;
                        let name = v["mark"]["name"].as_str().unwrap_or("").to_owned();
                        pending_marks.push((play_cursor, name));
                    }
                    Some("clear") => {
                        report.clears += 1;
                        // What had not played yet is never heard.
                        report.heard.truncate(now_pos.min(report.heard.len()));
                        play_cursor = report.heard.len().max(now_pos);
                        for (_, name) in pending_marks.drain(..) {
                            let m = json!({"event":"mark","sequenceNumber":next_seq(),"streamSid":stream_sid,"mark":{"name":name}});
                            let _ = ws.send(send(m.to_string())).await;
                        }
                    }
                    other => return Err(format!("ignis sent event {other:?}, which Twilio rejects (31951)")),
                }
            }
        }
    }
    Ok(report)
}

/// Whether a μ-law frame holds speech rather than quiet.
pub fn is_speech(ulaw: &[u8]) -> bool {
    if ulaw.is_empty() {
        return false;
    }
    let energy: f64 = ulaw
        .iter()
        .map(|&b| f64::from(mulaw::decode_sample(b)).powi(2))
        .sum::<f64>()
        / ulaw.len() as f64;
    energy.sqrt() > SPEECH_RMS
}

/// POSTs the signed voice webhook as Twilio would and returns the status.
async fn voice_webhook(opts: &CallerOptions, url: &str) -> Result<u16, String> {
    let params: Vec<(String, String)> = [
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", opts.call_sid.as_str()),
        ("CallStatus", "ringing"),
        ("Called", opts.to.as_str()),
        ("Caller", opts.from.as_str()),
        ("Direction", "inbound"),
        ("From", opts.from.as_str()),
        ("To", opts.to.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let sig = signature::sign(&opts.auth_token, url, &params);
    let body = params
        .iter()
        .map(|(k, v)| format!("{}={}", form::encode(k), form::encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut ep = Endpoint::parse(url).map_err(|e| format!("webhook URL: {e}"))?;
    let target = std::mem::take(&mut ep.target);
    let req = format!(
        "POST {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: TwilioProxy/1.1 (ignis simulate)\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {sig}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        ep.host_header(),
        body.len()
    );
    let tls = net::default_tls().map_err(|e| format!("TLS: {e}"))?;
    net::request(
        &ep,
        &tls,
        req.as_bytes(),
        opts.timeout,
        64 * 1024,
        crate::twilio::rest::parse_status,
    )
    .await
    .map_err(|e| format!("voice webhook: {e}"))
}
