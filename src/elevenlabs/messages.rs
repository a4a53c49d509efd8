//! ElevenLabs conversation socket messages (docs/elevenlabs.md §2, §3): typed server events in,
//! client messages out. Unknown event types are reported as [`AgentEvent::Unknown`], never an
//! error (§3: both official SDKs ignore them).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

/// Largest agent message accepted. Audio events carry base64 chunks (a second of `pcm_48000`
/// is 128 KiB of base64); the Python SDK allows 16 MiB, which a call never needs.
pub const MAX_AGENT_MESSAGE_BYTES: usize = 1024 * 1024;

/// One event from the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent<'a> {
    /// `conversation_initiation_metadata`: the conversation id and audio formats.
    Metadata {
        /// `conversation_id`.
        conversation_id: String,
        /// `agent_output_audio_format`, e.g. `ulaw_8000`.
        output_format: String,
        /// `user_input_audio_format`.
        input_format: String,
    },
    /// `audio`: a chunk of agent speech.
    Audio {
        /// Turn id shared by the chunks of one response (§4.4).
        event_id: u64,
        /// Base64 audio in the output format; borrowed from the message when possible.
        audio_b64: Cow<'a, str>,
    },
    /// `interruption`: the caller barged in.
    Interruption {
        /// The interruption's event id.
        event_id: u64,
    },
    /// `ping`: must be answered with `pong` at once (§3.1).
    Ping {
        /// Echoed in the pong.
        event_id: u64,
        /// Server's RTT estimate, null on the first ping.
        ping_ms: Option<u64>,
    },
    /// `client_tool_call`: the agent asks the bridge to run a tool (§5.2).
    ClientToolCall {
        /// Tool name.
        tool_name: String,
        /// Id to answer with.
        tool_call_id: String,
        /// Tool parameters.
        parameters: Map<String, Value>,
    },
    /// `agent_response`: the text of the agent's turn (patient data: debug logs only).
    AgentResponse {
        /// The text.
        text: String,
    },
    /// `user_transcript`: final ASR of the caller's turn (patient data: debug logs only).
    UserTranscript {
        /// The text.
        text: String,
    },
    /// `error`: sent before an error close (§3.2).
    Error {
        /// The close code that follows.
        code: Option<u16>,
        /// `error_type`, e.g. `llm_timeout`.
        error_type: String,
    },
    /// A recognised event ignis has no use for, or an unknown one.
    Unknown,
}

/// Which event a message carried, without its data: what the driver needs to know about a
/// message it has handed to the bridge (e.g. that it was audio, for the latency histogram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentEventKind {
    /// [`AgentEvent::Metadata`].
    Metadata,
    /// [`AgentEvent::Audio`].
    Audio,
    /// [`AgentEvent::Interruption`].
    Interruption,
    /// [`AgentEvent::Ping`].
    Ping,
    /// [`AgentEvent::ClientToolCall`].
    ClientToolCall,
    /// [`AgentEvent::AgentResponse`].
    AgentResponse,
    /// [`AgentEvent::UserTranscript`].
    UserTranscript,
    /// [`AgentEvent::Error`].
    Error,
    /// [`AgentEvent::Unknown`].
    Unknown,
}

impl AgentEvent<'_> {
    /// The event's kind.
    pub fn kind(&self) -> AgentEventKind {
        match self {
            AgentEvent::Metadata { .. } => AgentEventKind::Metadata,
            AgentEvent::Audio { .. } => AgentEventKind::Audio,
            AgentEvent::Interruption { .. } => AgentEventKind::Interruption,
            AgentEvent::Ping { .. } => AgentEventKind::Ping,
            AgentEvent::ClientToolCall { .. } => AgentEventKind::ClientToolCall,
            AgentEvent::AgentResponse { .. } => AgentEventKind::AgentResponse,
            AgentEvent::UserTranscript { .. } => AgentEventKind::UserTranscript,
            AgentEvent::Error { .. } => AgentEventKind::Error,
            AgentEvent::Unknown => AgentEventKind::Unknown,
        }
    }
}

/// Why an agent message could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentMessageError {
    /// Not a JSON object with a string `type`.
    NotJson,
    /// Over [`MAX_AGENT_MESSAGE_BYTES`].
    TooLarge,
    /// A known event missing a required field.
    MissingField(&'static str),
}

impl fmt::Display for AgentMessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentMessageError::NotJson => f.write_str("not an agent JSON event"),
            AgentMessageError::TooLarge => f.write_str("agent message too large"),
            AgentMessageError::MissingField(n) => write!(f, "missing or invalid field {n}"),
        }
    }
}

impl std::error::Error for AgentMessageError {}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(default)]
    conversation_initiation_metadata_event: Option<MetadataBody>,
    #[serde(borrow, default)]
    audio_event: Option<AudioBody<'a>>,
    #[serde(default)]
    interruption_event: Option<IdBody>,
    #[serde(default)]
    ping_event: Option<PingBody>,
    #[serde(default)]
    client_tool_call: Option<ToolCallBody>,
    #[serde(default)]
    agent_response_event: Option<AgentResponseBody>,
    #[serde(default)]
    user_transcription_event: Option<UserTranscriptBody>,
    #[serde(default)]
    error_event: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct MetadataBody {
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    agent_output_audio_format: Option<String>,
    #[serde(default)]
    user_input_audio_format: Option<String>,
}

#[derive(Deserialize)]
struct AudioBody<'a> {
    #[serde(default)]
    event_id: Option<u64>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    audio_base_64: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct IdBody {
    #[serde(default)]
    event_id: Option<u64>,
}

#[derive(Deserialize)]
struct PingBody {
    #[serde(default)]
    event_id: Option<u64>,
    #[serde(default)]
    ping_ms: Option<u64>,
}

#[derive(Deserialize)]
struct ToolCallBody {
    #[serde(default)]
    tool_name: Option<String>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct AgentResponseBody {
    #[serde(default)]
    agent_response: Option<String>,
}

#[derive(Deserialize)]
struct UserTranscriptBody {
    #[serde(default)]
    user_transcript: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    error_type: Option<String>,
}

fn borrowed_str<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'a>>::deserialize(d)?.map(|b| b.0))
}

/// Parses one text message from the agent.
pub fn parse(text: &str) -> Result<AgentEvent<'_>, AgentMessageError> {
    if text.len() > MAX_AGENT_MESSAGE_BYTES {
        return Err(AgentMessageError::TooLarge);
    }
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|_| AgentMessageError::NotJson)?;
    use AgentMessageError::MissingField;
    Ok(match env.kind.as_ref() {
        "conversation_initiation_metadata" => {
            let m = env
                .conversation_initiation_metadata_event
                .ok_or(MissingField("conversation_initiation_metadata_event"))?;
            AgentEvent::Metadata {
                conversation_id: m.conversation_id.unwrap_or_default(),
                // The JS SDK defaults a missing format to pcm_16000 (§3).
                output_format: m
                    .agent_output_audio_format
                    .unwrap_or_else(|| "pcm_16000".into()),
                input_format: m
                    .user_input_audio_format
                    .unwrap_or_else(|| "pcm_16000".into()),
            }
        }
        "audio" => {
            let a = env.audio_event.ok_or(MissingField("audio_event"))?;
            AgentEvent::Audio {
                event_id: a.event_id.ok_or(MissingField("audio_event.event_id"))?,
                audio_b64: a
                    .audio_base_64
                    .ok_or(MissingField("audio_event.audio_base_64"))?,
            }
        }
        "interruption" => AgentEvent::Interruption {
            event_id: env
                .interruption_event
                .and_then(|e| e.event_id)
                .ok_or(MissingField("interruption_event.event_id"))?,
        },
        "ping" => {
            let p = env.ping_event.ok_or(MissingField("ping_event"))?;
            AgentEvent::Ping {
                event_id: p.event_id.ok_or(MissingField("ping_event.event_id"))?,
                ping_ms: p.ping_ms,
            }
        }
        "client_tool_call" => {
            let c = env
                .client_tool_call
                .ok_or(MissingField("client_tool_call"))?;
            AgentEvent::ClientToolCall {
                tool_name: c
                    .tool_name
                    .ok_or(MissingField("client_tool_call.tool_name"))?,
                tool_call_id: c
                    .tool_call_id
                    .ok_or(MissingField("client_tool_call.tool_call_id"))?,
                parameters: c.parameters.unwrap_or_default(),
            }
        }
        "agent_response" => AgentEvent::AgentResponse {
            text: env
                .agent_response_event
                .and_then(|e| e.agent_response)
                .unwrap_or_default(),
        },
        "user_transcript" => AgentEvent::UserTranscript {
            text: env
                .user_transcription_event
                .and_then(|e| e.user_transcript)
                .unwrap_or_default(),
        },
        "error" => {
            let e = env.error_event;
            AgentEvent::Error {
                code: e.as_ref().and_then(|e| e.code),
                error_type: e.and_then(|e| e.error_type).unwrap_or_default(),
            }
        }
        _ => AgentEvent::Unknown,
    })
}

/// `{"user_audio_chunk":"…"}` into `out` (cleared first). No `type`: the server detects it by
/// its key (§2).
pub fn write_user_audio_chunk(out: &mut String, audio_b64: &str) {
    out.clear();
    out.push_str("{\"user_audio_chunk\":\"");
    out.push_str(audio_b64);
    out.push_str("\"}");
}

/// `{"type":"pong","event_id":N}`.
pub fn pong(event_id: u64) -> String {
    format!("{{\"type\":\"pong\",\"event_id\":{event_id}}}")
}

/// `client_tool_result`; `result` must be a string (§2).
pub fn client_tool_result(tool_call_id: &str, result: &str, is_error: bool) -> String {
    serde_json::json!({
        "type": "client_tool_result",
        "tool_call_id": tool_call_id,
        "result": result,
        "is_error": is_error,
    })
    .to_string()
}

/// `contextual_update`: background information that does not interrupt the agent.
pub fn contextual_update(text: &str) -> String {
    serde_json::json!({"type": "contextual_update", "text": text}).to_string()
}

/// `user_message`: treated as if the caller had said it.
pub fn user_message(text: &str) -> String {
    serde_json::json!({"type": "user_message", "text": text}).to_string()
}

/// The `error_type` of an `error` event sent when the agent's `max_duration_seconds` ran out;
/// a close with 1000 follows (docs/elevenlabs.md §3.2).
pub const ERROR_MAX_DURATION_EXCEEDED: &str = "max_duration_exceeded";

/// `conversation_initiation_client_data` with dynamic variables and optional overrides.
/// Overrides are omitted entirely when empty (§2.1: empty fields can be rejected), and so is
/// `source_info`.
pub fn initiation_client_data(
    dynamic_variables: &Map<String, Value>,
    config_override: Option<&Value>,
) -> String {
    let mut msg = Map::new();
    msg.insert(
        "type".into(),
        Value::String("conversation_initiation_client_data".into()),
    );
    msg.insert(
        "dynamic_variables".into(),
        Value::Object(dynamic_variables.clone()),
    );
    if let Some(o) = config_override {
        msg.insert("conversation_config_override".into(), o.clone());
    }
    // No `source_info`: it names the client, and none of its values is ignis. `twilio` is
    // ElevenLabs' own Twilio integration; the SDKs send their own names (docs/elevenlabs.md §2.1).
    Value::Object(msg).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_events() {
        assert_eq!(
            parse(
                r#"{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{"conversation_id":"conv_1","agent_output_audio_format":"ulaw_8000","user_input_audio_format":"pcm_16000"}}"#
            ),
            Ok(AgentEvent::Metadata {
                conversation_id: "conv_1".into(),
                output_format: "ulaw_8000".into(),
                input_format: "pcm_16000".into()
            })
        );
        let audio = parse(r#"{"type":"audio","audio_event":{"audio_base_64":"AAEC","event_id":7,"alignment":{"chars":["a"]}}}"#).unwrap();
        assert!(matches!(
            audio,
            AgentEvent::Audio {
                event_id: 7,
                audio_b64: Cow::Borrowed("AAEC")
            }
        ));
        assert_eq!(
            parse(r#"{"type":"ping","ping_event":{"event_id":3,"ping_ms":null}}"#),
            Ok(AgentEvent::Ping {
                event_id: 3,
                ping_ms: None
            })
        );
        assert_eq!(
            parse(r#"{"type":"interruption","interruption_event":{"event_id":9,"reason":"user"}}"#),
            Ok(AgentEvent::Interruption { event_id: 9 })
        );
        let tool = parse(r#"{"type":"client_tool_call","client_tool_call":{"tool_name":"end_call","tool_call_id":"t1","parameters":{"reason":"done"},"event_id":4}}"#).unwrap();
        assert!(
            matches!(tool, AgentEvent::ClientToolCall { ref tool_name, .. } if tool_name == "end_call")
        );
        assert_eq!(
            parse(
                r#"{"type":"error","error_event":{"code":1002,"error_type":"llm_timeout","message":"x"}}"#
            ),
            Ok(AgentEvent::Error {
                code: Some(1002),
                error_type: "llm_timeout".into()
            })
        );
        assert_eq!(
            parse(r#"{"type":"vad_score","vad_score_event":{"vad_score":0.5}}"#),
            Ok(AgentEvent::Unknown)
        );
    }

    #[test]
    fn classifies_events_by_type_not_by_content() {
        let kind = |text: &str| parse(text).map(|e| e.kind());
        assert_eq!(
            kind(r#"{"audio_event":{"audio_base_64":"AA==","event_id":1},"type":"audio"}"#),
            Ok(AgentEventKind::Audio)
        );
        // An `audio_event` key does not make a message audio; its `type` does.
        assert_eq!(
            kind(r#"{"type":"vad_score","audio_event":{"event_id":1}}"#),
            Ok(AgentEventKind::Unknown)
        );
        assert_eq!(
            kind(
                r#"{"type":"user_transcript","user_transcription_event":{"user_transcript":"\"audio_event\""}}"#
            ),
            Ok(AgentEventKind::UserTranscript)
        );
        assert_eq!(
            kind(r#"{"type":"ping","ping_event":{"event_id":1}}"#),
            Ok(AgentEventKind::Ping)
        );
        assert_eq!(
            kind(r#"{"type":"interruption","interruption_event":{"event_id":2}}"#),
            Ok(AgentEventKind::Interruption)
        );
        assert_eq!(
            kind(r#"{"type":"agent_response","agent_response_event":{"agent_response":"x"}}"#),
            Ok(AgentEventKind::AgentResponse)
        );
        assert_eq!(kind(r#"{"type":"error"}"#), Ok(AgentEventKind::Error));
        assert_eq!(
            kind(
                r#"{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{}}"#
            ),
            Ok(AgentEventKind::Metadata)
        );
        assert_eq!(
            kind(
                r#"{"type":"client_tool_call","client_tool_call":{"tool_name":"t","tool_call_id":"1"}}"#
            ),
            Ok(AgentEventKind::ClientToolCall)
        );
        assert_eq!(
            kind(r#"{"audio_event":{}}"#),
            Err(AgentMessageError::NotJson)
        );
    }

    #[test]
    fn malformed_events_are_typed_errors() {
        assert_eq!(parse("{}"), Err(AgentMessageError::NotJson));
        assert_eq!(parse("[1]"), Err(AgentMessageError::NotJson));
        assert_eq!(
            parse(r#"{"type":"audio","audio_event":{"event_id":1}}"#),
            Err(AgentMessageError::MissingField("audio_event.audio_base_64"))
        );
        assert_eq!(
            parse(r#"{"type":"ping","ping_event":{"event_id":-1}}"#),
            Err(AgentMessageError::NotJson)
        );
    }

    #[test]
    fn writes_client_messages() {
        let mut s = String::new();
        write_user_audio_chunk(&mut s, "/w==");
        assert_eq!(s, r#"{"user_audio_chunk":"/w=="}"#);
        assert_eq!(pong(5), r#"{"type":"pong","event_id":5}"#);
        let r: Value = serde_json::from_str(&client_tool_result("t\"1", "ok", true)).unwrap();
        assert_eq!(r["tool_call_id"], "t\"1");
        assert_eq!(r["is_error"], true);
        let mut vars = Map::new();
        vars.insert("caller_number".into(), Value::String("+49".into()));
        let init: Value = serde_json::from_str(&initiation_client_data(&vars, None)).unwrap();
        assert_eq!(init["type"], "conversation_initiation_client_data");
        assert_eq!(init["dynamic_variables"]["caller_number"], "+49");
        assert!(init.get("conversation_config_override").is_none());
        assert!(
            init.get("source_info").is_none(),
            "ignis is not a source ElevenLabs names"
        );
        let o = serde_json::json!({"agent": {"first_message": "Hallo"}});
        let init: Value = serde_json::from_str(&initiation_client_data(&vars, Some(&o))).unwrap();
        assert_eq!(init["conversation_config_override"], o);
        assert!(init.get("source_info").is_none());
    }
}
