//! The ElevenLabs side of a conversation, sans-IO (docs/elevenlabs.md §1.3, §1.7, §2, §3): the
//! signed-URL answer, the messages the agent sends (metadata, `audio` with turn ids, `ping`,
//! `interruption`), the client messages it reads (initiation data, `user_audio_chunk`, `pong`)
//! and the audio formats on the wire.
//!
//! The listener and sockets live in `driver::sim::agent`.

use std::borrow::Cow;

use serde::Deserialize;

use crate::audio::format::AgentFormat;
use crate::audio::{mulaw, wav};

/// The signed-URL endpoint's path (§1.3).
pub const SIGNED_URL_PATH: &str = "/v1/convai/conversation/get-signed-url";
/// Its older underscore spelling, deprecated but still served (§1.3); ElevenLabs' own Twilio
/// example uses it.
pub const SIGNED_URL_PATH_DEPRECATED: &str = "/v1/convai/conversation/get_signed_url";

/// Whether `path` (without its query) is the signed-URL endpoint, in either spelling (§1.3).
pub fn is_signed_url_path(path: &str) -> bool {
    path == SIGNED_URL_PATH || path == SIGNED_URL_PATH_DEPRECATED
}
/// The conversation socket's path (§1.7).
pub const CONVERSATION_PATH: &str = "/v1/convai/conversation";

/// `conversation_initiation_metadata`: the conversation's id and audio formats (§1.7).
pub fn metadata(conversation_id: &str, output_format: &str, input_format: &str) -> String {
    serde_json::json!({"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{
        "conversation_id": conversation_id, "agent_output_audio_format": output_format,
        "user_input_audio_format": input_format}})
    .to_string()
}

/// `audio`: agent speech of turn `event_id`, already base64 (pre-encoded bursts keep a load
/// generator cheap).
pub fn audio_b64(event_id: u64, b64: &str) -> String {
    format!(r#"{{"type":"audio","audio_event":{{"audio_base_64":"{b64}","event_id":{event_id}}}}}"#)
}

/// `ping` number `event_id` (the client answers with a `pong` of the same id).
pub fn ping(event_id: u64) -> String {
    format!(r#"{{"type":"ping","ping_event":{{"event_id":{event_id},"ping_ms":null}}}}"#)
}

/// `interruption`: the caller talked over turn `event_id` (§4.4).
pub fn interruption(event_id: u64) -> String {
    format!(r#"{{"type":"interruption","interruption_event":{{"event_id":{event_id}}}}}"#)
}

/// One message from the client (ignis), after the initiation data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    /// `user_audio_chunk`: caller audio, base64 in the input format.
    UserAudio(Cow<'a, str>),
    /// `pong` answering the ping `event_id`.
    Pong(u64),
    /// Anything else (contextual updates, tool results, …).
    Other,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    user_audio_chunk: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    event_id: Option<u64>,
}

/// Reads one client message; `None` when it is not JSON.
pub fn parse_client(text: &str) -> Option<ClientMessage<'_>> {
    let wire: Wire<'_> = serde_json::from_str(text).ok()?;
    Some(
        match (wire.user_audio_chunk, wire.kind.as_deref(), wire.event_id) {
            (Some(chunk), _, _) => ClientMessage::UserAudio(chunk),
            (None, Some("pong"), Some(id)) => ClientMessage::Pong(id),
            _ => ClientMessage::Other,
        },
    )
}

/// Whether the first message is the initiation data the client must send first (§1.7).
pub fn is_initiation(first: &serde_json::Value) -> bool {
    first["type"] == "conversation_initiation_client_data"
}

/// How a conversation's first client message opens it (§1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// The initiation data, as both SDKs send it first.
    Initiation,
    /// Another client message: the conversation starts without initiation data (§1.7, open
    /// question: ElevenLabs' own Twilio example never sends it and still gets metadata), and
    /// this message is the conversation's first.
    Without,
    /// Not a JSON object: refused.
    Invalid,
}

/// Classifies the first client message (§1.7).
pub fn opening(first: &serde_json::Value) -> Opening {
    if is_initiation(first) {
        Opening::Initiation
    } else if first.is_object() {
        Opening::Without
    } else {
        Opening::Invalid
    }
}

/// The signed-URL endpoint's answer to `head` (the raw request): 200 with a URL on `origin`
/// carrying `signature` when the `xi-api-key` and `agent_id` match, 401 otherwise.
pub fn signed_url_response(
    head: &str,
    api_key: &str,
    agent_id: &str,
    origin: &str,
    signature: &str,
) -> String {
    let ok_key = head
        .to_ascii_lowercase()
        .contains(&format!("xi-api-key: {}", api_key.to_ascii_lowercase()));
    let ok_agent = head.contains(&format!("agent_id={agent_id}"));
    if ok_key && ok_agent {
        let body = serde_json::json!({"signed_url": format!(
            "{origin}{CONVERSATION_PATH}?agent_id={agent_id}&conversation_signature={signature}")})
        .to_string();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    } else {
        let body = r#"{"detail":{"status":"invalid_api_key"}}"#;
        format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

/// 8 kHz PCM into `format`'s wire bytes.
pub fn encode(format: AgentFormat, pcm8k: &[i16]) -> Vec<u8> {
    if format.is_ulaw() {
        return pcm8k.iter().map(|&s| mulaw::encode_sample(s)).collect();
    }
    let clip = wav::Wav {
        rate: 8000,
        samples: pcm8k.to_vec(),
    };
    let samples = wav::resample_clip(&clip, format.sample_rate()).unwrap_or_default();
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// `format`'s wire bytes into 16-bit samples (at the format's rate).
pub fn decode(format: AgentFormat, bytes: &[u8]) -> Vec<i16> {
    if format.is_ulaw() {
        bytes.iter().map(|&b| mulaw::decode_sample(b)).collect()
    } else {
        bytes
            .chunks_exact(2)
            .map(|p| i16::from_le_bytes([p[0], p[1]]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_are_read() {
        assert_eq!(
            parse_client(r#"{"user_audio_chunk":"/w=="}"#),
            Some(ClientMessage::UserAudio("/w==".into()))
        );
        assert_eq!(
            parse_client(r#"{"type":"pong","event_id":3}"#),
            Some(ClientMessage::Pong(3))
        );
        assert_eq!(
            parse_client(r#"{"type":"contextual_update","text":"x"}"#),
            Some(ClientMessage::Other)
        );
        assert_eq!(parse_client("nope"), None);
        let a: serde_json::Value = serde_json::from_str(&audio_b64(2, "AA==")).unwrap();
        assert_eq!(a["audio_event"]["event_id"], 2);
    }

    #[test]
    fn the_signed_url_needs_the_key_and_the_agent() {
        let head = "GET /v1/convai/conversation/get-signed-url?agent_id=a1 HTTP/1.1\r\nXi-Api-Key: K\r\n\r\n";
        let ok = signed_url_response(head, "k", "a1", "ws://h", "s");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("ws://h/v1/convai/conversation?agent_id=a1&conversation_signature=s"));
        assert!(signed_url_response(head, "x", "a1", "ws://h", "s").starts_with("HTTP/1.1 401"));
    }

    #[test]
    fn both_spellings_of_the_signed_url_path_are_served() {
        assert!(is_signed_url_path("/v1/convai/conversation/get-signed-url"));
        assert!(is_signed_url_path("/v1/convai/conversation/get_signed_url"));
        assert!(!is_signed_url_path("/v1/convai/conversation"));
    }

    #[test]
    fn a_conversation_may_open_without_initiation_data() {
        let v = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap_or_default();
        let init = v(r#"{"type":"conversation_initiation_client_data"}"#);
        assert_eq!(opening(&init), Opening::Initiation);
        assert_eq!(
            opening(&v(r#"{"user_audio_chunk":"/w=="}"#)),
            Opening::Without
        );
        assert_eq!(opening(&v("7")), Opening::Invalid);
        assert_eq!(opening(&serde_json::Value::Null), Opening::Invalid);
    }
}
