//! Fuzz entry point for the per-call [`Bridge`], driven by a random sequence of Twilio and agent
//! events the way `driver::twilio_socket` drives it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::Bytes;
use crate::audio::AgentFormat;
use crate::audio::pipeline::{DspPool, PoolLink, WORKER_QUEUE_DEPTH};
use crate::audio::playout::MARK_PREFIX;
use crate::bridge::{
    Bridge, BridgeConfig, BridgeEvent, DtmfMode, Output, TOOL_END_CALL, TOOL_TRANSFER,
    TransferNumbers,
};
use crate::twilio::media_stream;

/// Most operations taken from one input.
const MAX_OPS: usize = 400;
/// Most `handle_timeout` calls one time advance may make.
const MAX_TIMER_FIRES: usize = 2000;
/// Largest agent audio chunk generated, bytes.
const MAX_AGENT_AUDIO: usize = 6000;
/// Largest caller frame generated, bytes.
const MAX_CALLER_FRAME: usize = 1000;

/// What the fuzzer knows about the call so far, for choosing inputs and checking outputs.
struct Call {
    bridge: Bridge,
    now: Instant,
    stream_sid: Option<String>,
    started: bool,
    agent: AgentLink,
    /// Format of `user_audio_chunk` audio once the agent sent metadata.
    input_format: Option<AgentFormat>,
    marks: Vec<String>,
    transfers: Vec<String>,
    tool_ids_sent: Vec<String>,
    close_agent: bool,
    close_twilio: bool,
    /// `transfer_to_staff` calls made (each `Transfer` event needs one).
    transfer_asked: u64,
    transfer_events: u64,
    clears: u64,
    /// `AUDIO_STAGES=pipeline`: the manual DSP pool and whether it woke the call.
    pool: Option<(Arc<DspPool>, Arc<AtomicBool>)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AgentLink {
    /// Still connecting: the driver may report success or failure.
    Connecting,
    /// Connected: texts and a close may arrive.
    Open,
    /// Closed or failed: nothing more arrives from the agent.
    Gone,
}

/// The bridge under a random sequence of inputs decoded from `data`: Twilio `start` (first, as
/// the driver does), `media` with arbitrary counters and payloads (including bad base64),
/// `dtmf`, `mark` (names ignis sent or anything), `stop`, unknown messages; agent connect,
/// failure and close with any code; agent texts (metadata with any of the seven formats or a
/// bad one, audio with any event id and size, odd PCM byte counts included, interruption, ping,
/// the client tools `end_call` / `transfer_to_staff` / unknown, error, garbage); transfer
/// results; and time advancing, with `handle_timeout` called at each `poll_timeout` like the
/// driver's timer.
///
/// Invariants: never panics; every `ToTwilio` is a JSON object with `event` in {media, mark,
/// clear} and the camelCase `streamSid` of the `start`; media payloads are whole 160-byte frames;
/// marks carry ignis's prefix; every `ToAgent` is a JSON object, either a `user_audio_chunk` of
/// whole samples in the agent's input format or a typed control message; `CloseAgent` and
/// `CloseTwilio` come at most once each, agent first; after the bridge is closed no Twilio media
/// or mark is produced; a `Transfer` only follows a `transfer_to_staff` call; and after
/// `handle_timeout(t)` at the deadline `t`, the next deadline is later than `t` (otherwise the
/// driver's timer would spin).
///
/// `start` is the virtual clock's origin (any instant: only differences matter): time is `start`
/// plus the milliseconds the input advanced.
pub fn call_session(start: Instant, data: &[u8]) {
    session(start, data, false);
}

/// [`call_session`] with the DSP on the pool (`AUDIO_STAGES=pipeline`): a [`DspPool::manual`]
/// pool whose worker runs the call's `CallDsp` on this thread when the input says "the worker
/// runs now", with a worker queue of 1–[`WORKER_QUEUE_DEPTH`] commands (the second byte), so
/// drops, refused control commands, generations and [`Bridge::handle_audio_ready`] (woken or
/// not) are all reached. Same invariants, and the call summary's pipeline drops are the pool's.
pub fn call_session_pipeline(start: Instant, data: &[u8]) {
    session(start, data, true);
}

fn session(start: Instant, data: &[u8], pipeline: bool) {
    let mut d = Bytes(data);
    let cfg = d.u8();
    // Read only in pipeline mode, so `call_session` inputs keep their meaning.
    let pool = pipeline.then(|| {
        let depth = [WORKER_QUEUE_DEPTH, 1, 3, 40][usize::from(d.u8() & 3)];
        (DspPool::manual(1, depth), Arc::new(AtomicBool::new(false)))
    });
    let link = pool.as_ref().map(|(pool, woken)| {
        let woken = Arc::clone(woken);
        PoolLink {
            pool: Arc::clone(pool),
            wake: Arc::new(move || woken.store(true, Ordering::Relaxed)),
        }
    });
    let config = bridge_config(cfg, link);
    let mut call = Call {
        bridge: Bridge::new(config),
        now: start,
        stream_sid: None,
        started: false,
        agent: AgentLink::Connecting,
        input_format: None,
        marks: Vec::new(),
        transfers: Vec::new(),
        tool_ids_sent: Vec::new(),
        close_agent: false,
        close_twilio: false,
        transfer_asked: 0,
        transfer_events: 0,
        clears: 0,
        pool,
    };
    // The driver hands the bridge Twilio's `start` before anything else.
    call.twilio_start(&mut d);
    call.drain();

    let mut ops = 0;
    // Pipeline mode adds two operations: the worker runs, and a wake-up without one.
    let kinds = if pipeline { 22 } else { 20 };
    while !d.is_empty() && ops < MAX_OPS {
        ops += 1;
        let before_closed = call.bridge.is_closed();
        match d.u8() % kinds {
            0..=3 => call.twilio_media(&mut d),
            4 => call.twilio_dtmf(&mut d),
            5 => call.twilio_mark(&mut d),
            6 => call.twilio_text(stop_or_unknown(&mut d)),
            7 => call.agent_connect(),
            8 => call.agent_fail(),
            9 => call.agent_close(&mut d),
            10 => call.agent_metadata(&mut d),
            11..=13 => call.agent_audio(&mut d),
            14 => call.agent_text(&interruption(&mut d)),
            15 => call.agent_text(&json!({"type": "ping", "ping_event": {"event_id": d.u64() % 1000, "ping_ms": null}}).to_string()),
            16 => call.agent_tool_call(&mut d),
            17 => call.agent_text(&agent_other(&mut d)),
            18 => call.transfer_done(&mut d),
            20 => call.worker_runs(),
            21 => call.audio_ready(),
            _ => call.advance(&mut d),
        }
        call.drain();
        if before_closed {
            assert!(call.bridge.is_closed(), "the bridge reopened");
        }
    }
    // Let the clock run out: whatever is queued plays, and every timer eventually settles.
    for _ in 0..4 {
        call.worker_runs();
        call.advance_by(Duration::from_secs(30));
    }
    assert_eq!(call.bridge.stats().clears, call.clears);
    if let Some((pool, _)) = &call.pool {
        let summary = call.bridge.call_summary(crate::calls::Outcome::Completed);
        assert_eq!(
            summary.audio_pipeline_drops,
            pool.drops_total(),
            "drops counted"
        );
    }
}

/// The bridge's settings from the input's first byte (`pool`: pipeline mode).
fn bridge_config(cfg: u8, pool: Option<PoolLink>) -> BridgeConfig {
    BridgeConfig {
        dtmf: if cfg & 1 == 0 {
            DtmfMode::UserMessage
        } else {
            DtmfMode::ContextualUpdate
        },
        agent_silence_timeout: Duration::from_millis(
            [20_000, 500, 3_000, 60_000][usize::from((cfg >> 1) & 3)],
        ),
        turn_idle: Duration::from_millis([300, 20, 1_000, 0][usize::from((cfg >> 3) & 3)]),
        final_audio_timeout: Duration::from_millis(
            [20_000, 100, 2_000, 0][usize::from((cfg >> 5) & 3)],
        ),
        // A number, so that every `transfer_to_staff` becomes a `Transfer` to answer.
        transfer: TransferNumbers {
            fallback: Some("+4930123456".to_owned()),
            staff_line: None,
        },
        pool,
        ..BridgeConfig::default()
    }
}

impl Call {
    fn twilio_start(&mut self, d: &mut Bytes<'_>) {
        let sid = match d.u8() % 4 {
            0 => "MZ0123456789abcdef0123456789abcdef".to_owned(),
            1 => "MZ\"q\\u\u{1}\u{e9}".to_owned(),
            2 => String::new(),
            _ => String::from_utf8_lossy(d.slice(40)).into_owned(),
        };
        let msg = json!({
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": sid,
            "start": {
                "streamSid": sid,
                "accountSid": "AC1",
                "callSid": "CA1",
                "tracks": ["inbound"],
                "customParameters": {"caller": "+4917012345678"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        });
        self.stream_sid = Some(sid);
        self.twilio_text(msg.to_string());
    }

    fn twilio_media(&mut self, d: &mut Bytes<'_>) {
        let op = d.u8();
        let chunk = match op & 3 {
            0 | 1 => Value::from(u64::from(d.u16())),
            2 => Value::from(d.u64().to_string()),
            _ => Value::from(d.u64()),
        };
        let timestamp = if op & 4 == 0 {
            Value::from(u64::from(d.u16()) * 20)
        } else {
            Value::from(d.u64().to_string())
        };
        let payload = match (op >> 3) & 7 {
            0..=3 => STANDARD.encode(vec![d.u8(); 160]),
            4 => STANDARD.encode(vec![0xFF; usize::from(d.u16()) % MAX_CALLER_FRAME]),
            5 => "%%%not base64".to_owned(),
            6 => String::new(),
            _ => String::from_utf8_lossy(d.slice(64)).into_owned(),
        };
        let mut media = json!({"chunk": chunk, "timestamp": timestamp, "payload": payload});
        if op >> 6 == 3 {
            media["track"] = Value::from("outbound");
        }
        self.twilio_text(
            json!({"event": "media", "streamSid": self.stream_sid, "media": media}).to_string(),
        );
    }

    fn twilio_dtmf(&mut self, d: &mut Bytes<'_>) {
        let digit = match d.u8() % 8 {
            0 => "1".to_owned(),
            1 => "*".to_owned(),
            2 => "#".to_owned(),
            3 => "12".to_owned(),
            4 => String::new(),
            5 => "\u{e9}".to_owned(),
            _ => char::from(d.u8()).to_string(),
        };
        self.twilio_text(
            json!({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": digit}})
                .to_string(),
        );
    }

    fn twilio_mark(&mut self, d: &mut Bytes<'_>) {
        let pick = usize::from(d.u8());
        let name = if pick < 200 && !self.marks.is_empty() {
            self.marks[pick % self.marks.len()].clone()
        } else if pick < 230 {
            format!("{MARK_PREFIX}{}", d.u16())
        } else {
            String::from_utf8_lossy(d.slice(32)).into_owned()
        };
        self.twilio_text(
            json!({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
                .to_string(),
        );
    }

    fn twilio_text(&mut self, text: String) {
        // The driver passes on what parses, except a second `start`, which it refuses itself.
        match media_stream::parse(&text) {
            Ok(media_stream::TwilioEvent::Start(_)) if self.started => {}
            Ok(event) => {
                self.started = true;
                self.bridge.handle_twilio(self.now, event);
            }
            Err(_) => {}
        }
    }

    /// The pool's worker runs what is queued; the driver then hands its results to the bridge
    /// if it was woken (as `driver::twilio_socket` does on the call's `Notify`).
    fn worker_runs(&mut self) {
        let Some((pool, woken)) = &self.pool else {
            return;
        };
        pool.run_manual();
        if woken.swap(false, Ordering::Relaxed) {
            self.bridge.handle_audio_ready(self.now);
        }
    }

    /// A wake-up with nothing new (a stale `Notify` permit): must change nothing harmful.
    fn audio_ready(&mut self) {
        if self.pool.is_some() {
            self.bridge.handle_audio_ready(self.now);
        }
    }

    fn agent_connect(&mut self) {
        if self.agent == AgentLink::Connecting {
            self.agent = AgentLink::Open;
            self.bridge.handle_agent_connected(self.now);
        }
    }

    fn agent_fail(&mut self) {
        if self.agent == AgentLink::Connecting {
            self.agent = AgentLink::Gone;
            self.bridge.handle_agent_failed();
        }
    }

    fn agent_close(&mut self, d: &mut Bytes<'_>) {
        if self.agent != AgentLink::Open {
            return;
        }
        self.agent = AgentLink::Gone;
        let code = match d.u8() % 6 {
            0 | 1 => Some(1000),
            2 => Some(1011),
            3 => Some(1002),
            4 => None,
            _ => Some(d.u16()),
        };
        self.bridge.handle_agent_closed(self.now, code);
    }

    fn agent_text(&mut self, text: &str) {
        if self.agent == AgentLink::Open {
            self.bridge.handle_agent_text(self.now, text);
        }
    }

    fn agent_metadata(&mut self, d: &mut Bytes<'_>) {
        let pick = |d: &mut Bytes<'_>| {
            let i = usize::from(d.u8()) % (AgentFormat::ALL.len() + 2);
            match AgentFormat::ALL.get(i) {
                Some(f) => Value::from(f.as_str()),
                None if i == AgentFormat::ALL.len() => Value::from("pcm_11025"),
                None => Value::Null,
            }
        };
        let (input, output) = (pick(d), pick(d));
        let msg = json!({
            "type": "conversation_initiation_metadata",
            "conversation_initiation_metadata_event": {
                "conversation_id": format!("conv_{}", d.u8()),
                "agent_output_audio_format": output,
                "user_input_audio_format": input,
            },
        });
        if self.agent == AgentLink::Open {
            // The first metadata with two known formats (missing ones default to pcm_16000)
            // sets up the audio paths; one with an unknown format closes the call instead. A
            // repeat is ignored by the bridge (docs/elevenlabs.md §1.7: metadata comes once), so the
            // formats stay those of the first.
            let known = |v: &Value| AgentFormat::parse(v.as_str().unwrap_or("pcm_16000")).ok();
            if let (Some(input), Some(_)) = (known(&input), known(&output))
                && self.input_format.is_none()
            {
                self.input_format = Some(input);
            }
        }
        self.agent_text(&msg.to_string());
    }

    fn agent_audio(&mut self, d: &mut Bytes<'_>) {
        let op = d.u8();
        let event_id = match op & 3 {
            0 | 1 => u64::from(d.u8() % 8),
            2 => u64::from(d.u16()),
            _ => d.u64(),
        };
        let audio = if op & 0x1C == 0x1C {
            "not base64!".to_owned()
        } else {
            let len = if op & 0x20 == 0 {
                usize::from(d.u16()) % MAX_AGENT_AUDIO
            } else {
                usize::from(d.u8()) * 2 + 1
            };
            let seed = d.u8();
            let bytes: Vec<u8> = (0..len).map(|i| seed.wrapping_mul(i as u8)).collect();
            STANDARD.encode(bytes)
        };
        self.agent_text(&json!({"type": "audio", "audio_event": {"audio_base_64": audio, "event_id": event_id}}).to_string());
    }

    fn agent_tool_call(&mut self, d: &mut Bytes<'_>) {
        let name = match d.u8() % 4 {
            0 => TOOL_END_CALL.to_owned(),
            1 => TOOL_TRANSFER.to_owned(),
            2 => "get_weather".to_owned(),
            _ => String::from_utf8_lossy(d.slice(16)).into_owned(),
        };
        let id = format!("tool_{}", d.u8());
        if self.agent == AgentLink::Open && name == TOOL_TRANSFER {
            self.transfer_asked += 1;
        }
        if self.agent == AgentLink::Open {
            self.tool_ids_sent.push(id.clone());
        }
        self.agent_text(
            &json!({
                "type": "client_tool_call",
                "client_tool_call": {"tool_name": name, "tool_call_id": id, "parameters": {"reason": "done"}},
            })
            .to_string(),
        );
    }

    fn transfer_done(&mut self, d: &mut Bytes<'_>) {
        let ok = d.u8() & 1 == 0;
        if let Some(id) = self.transfers.pop() {
            self.bridge.transfer_done(&id, ok);
        }
    }

    fn advance(&mut self, d: &mut Bytes<'_>) {
        let ms = match d.u8() % 8 {
            0..=4 => u64::from(d.u8()),
            5 | 6 => u64::from(d.u16()),
            _ => 20_000 + u64::from(d.u16()),
        };
        self.advance_by(Duration::from_millis(ms));
    }

    /// Moves the clock to `now + by`, firing every deadline on the way like the driver's timer.
    fn advance_by(&mut self, by: Duration) {
        let until = self.now + by;
        for _ in 0..MAX_TIMER_FIRES {
            let Some(t) = self.bridge.poll_timeout() else {
                break;
            };
            if t > until {
                break;
            }
            self.now = self.now.max(t);
            self.bridge.handle_timeout(self.now);
            self.drain();
            if self.close_twilio {
                // The driver leaves the call loop here; no timer runs any more.
                break;
            }
            if let Some(next) = self.bridge.poll_timeout() {
                assert!(
                    next > self.now,
                    "deadline {next:?} not after {:?}: timer would spin",
                    self.now
                );
            }
        }
        self.now = until;
    }

    /// Drains outputs and events as the driver does, checking each.
    fn drain(&mut self) {
        while let Some(out) = self.bridge.poll_transmit() {
            let (Output::ToTwilio(bytes) | Output::ToAgent(bytes)) = &out;
            let text = std::str::from_utf8(bytes).expect("output is UTF-8");
            match &out {
                Output::ToTwilio(_) => self.check_to_twilio(text),
                Output::ToAgent(_) => self.check_to_agent(text),
            }
        }
        while let Some(event) = self.bridge.poll_event() {
            match event {
                BridgeEvent::CloseAgent => {
                    assert!(!self.close_agent, "CloseAgent twice");
                    assert!(!self.close_twilio, "CloseAgent after CloseTwilio");
                    self.close_agent = true;
                }
                BridgeEvent::CloseTwilio(_) => {
                    assert!(!self.close_twilio, "CloseTwilio twice");
                    assert!(self.bridge.is_closed());
                    self.close_twilio = true;
                }
                BridgeEvent::Transfer { tool_call_id, .. } => {
                    self.transfer_events += 1;
                    assert!(
                        self.transfer_events <= self.transfer_asked,
                        "transfer nobody asked for"
                    );
                    assert!(self.tool_ids_sent.contains(&tool_call_id));
                    self.transfers.push(tool_call_id);
                }
            }
        }
    }

    fn check_to_twilio(&mut self, text: &str) {
        let v: Value = serde_json::from_str(text).expect("Twilio message is JSON");
        assert_eq!(
            v["streamSid"].as_str(),
            self.stream_sid.as_deref(),
            "streamSid of {text}"
        );
        assert!(v.get("stream_sid").is_none());
        match v["event"].as_str() {
            Some("media") => {
                assert!(!self.close_twilio, "media after CloseTwilio");
                let payload = v["media"]["payload"].as_str().expect("media.payload");
                let n = STANDARD.decode(payload).expect("media is base64").len();
                assert!(n > 0 && n.is_multiple_of(160), "media of {n} bytes");
            }
            Some("mark") => {
                assert!(!self.close_twilio, "mark after CloseTwilio");
                let name = v["mark"]["name"].as_str().expect("mark.name");
                assert!(name.starts_with(MARK_PREFIX), "mark {name:?}");
                self.marks.push(name.to_owned());
            }
            Some("clear") => self.clears += 1,
            other => panic!("unexpected Twilio event {other:?}"),
        }
    }

    fn check_to_agent(&mut self, text: &str) {
        let v: Value = serde_json::from_str(text).expect("agent message is JSON");
        let obj = v.as_object().expect("agent message is an object");
        if let Some(chunk) = obj.get("user_audio_chunk") {
            assert_eq!(obj.len(), 1);
            let n = STANDARD
                .decode(chunk.as_str().expect("chunk is a string"))
                .expect("chunk is base64")
                .len();
            let format = self
                .input_format
                .expect("audio before the formats were known");
            assert!(
                n > 0 && n.is_multiple_of(format.bytes_per_sample()),
                "chunk of {n} bytes"
            );
            return;
        }
        match obj.get("type").and_then(Value::as_str) {
            Some("pong") => assert!(obj["event_id"].is_u64()),
            Some("client_tool_result") => {
                let id = obj["tool_call_id"].as_str().expect("tool_call_id");
                assert!(
                    self.tool_ids_sent.iter().any(|t| t == id),
                    "result for {id}"
                );
                assert!(obj["result"].is_string() && obj["is_error"].is_boolean());
            }
            Some("user_message" | "contextual_update") => {
                assert!(obj["text"].as_str().is_some_and(|t| t.contains("Taste")));
            }
            other => panic!("unexpected agent message type {other:?}"),
        }
    }
}

fn stop_or_unknown(d: &mut Bytes<'_>) -> String {
    match d.u8() % 6 {
        0 | 1 => {
            r#"{"event":"stop","sequenceNumber":"9","stop":{"accountSid":"AC1","callSid":"CA1"}}"#
                .to_owned()
        }
        2 => r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_owned(),
        3 => r#"{"event":"new_thing","x":1}"#.to_owned(),
        4 => r#"{"event":"start","start":{"callSid":"CA2","streamSid":"MZother"}}"#.to_owned(),
        _ => String::from_utf8_lossy(d.slice(48)).into_owned(),
    }
}

fn interruption(d: &mut Bytes<'_>) -> String {
    let event_id = match d.u8() % 3 {
        0 | 1 => u64::from(d.u8() % 8),
        _ => d.u64(),
    };
    json!({"type": "interruption", "interruption_event": {"event_id": event_id, "reason": "user"}})
        .to_string()
}

fn agent_other(d: &mut Bytes<'_>) -> String {
    match d.u8() % 7 {
        0 => {
            r#"{"type":"error","error_event":{"code":1011,"error_type":"llm_timeout"}}"#.to_owned()
        }
        1 => r#"{"type":"agent_response","agent_response_event":{"agent_response":"Guten Tag"}}"#
            .to_owned(),
        2 => r#"{"type":"user_transcript","user_transcription_event":{"user_transcript":"Hallo"}}"#
            .to_owned(),
        3 => r#"{"type":"vad_score","vad_score_event":{"vad_score":0.9}}"#.to_owned(),
        4 => r#"{"type":"audio","audio_event":{"event_id":1}}"#.to_owned(),
        5 => "{not json".to_owned(),
        _ => String::from_utf8_lossy(d.slice(48)).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    #[test]
    fn empty_and_tiny_inputs() {
        let start = Instant::now();
        super::call_session(start, &[]);
        super::call_session(start, &[0]);
        super::call_session(
            start,
            &[0, 0, 7, 10, 6, 6, 11, 0, 0x10, 0x10, 7, 19, 0, 100],
        );
        super::call_session_pipeline(start, &[]);
        super::call_session_pipeline(start, &[0, 1]);
        // Metadata, caller frames and agent audio, the worker running between them.
        super::call_session_pipeline(
            start,
            &[
                0, 2, 0, 7, 10, 0, 0, 20, 0, 0, 11, 0, 0x10, 0x10, 20, 19, 0, 100, 20, 21,
            ],
        );
    }
}
