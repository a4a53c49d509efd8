//! Media Streams messages (docs/twilio.md §1.2, §1.3): typed events in, JSON text out.
//!
//! Parsing is lenient where Twilio's docs are loose (counters as strings or numbers, unknown
//! events and fields ignored) and strict where a wrong value would corrupt the call (missing
//! `media.payload`, `start.callSid`).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// Largest Media Streams text message accepted; also the WebSocket message limit of the stream
/// socket. A 20 ms frame is ~400 bytes of JSON; a `start` with parameters a few KiB.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// One message from Twilio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioEvent<'a> {
    /// `connected`: the first message.
    Connected,
    /// `start`: stream metadata.
    Start(Start),
    /// `media`: one chunk of caller audio.
    Media(Media<'a>),
    /// `dtmf`: a keypad digit.
    Dtmf {
        /// The digit (`0`–`9`, `*`, `#`).
        digit: String,
    },
    /// `mark`: echo of a mark ignis sent.
    Mark {
        /// The name ignis gave it.
        name: String,
    },
    /// `stop`: the stream ended.
    Stop,
    /// Any other event name; ignored for forward compatibility (§1.2).
    Unknown,
}

/// The `start` message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// `streamSid` (`MZ…`).
    pub stream_sid: String,
    /// `start.callSid` (`CA…`).
    pub call_sid: String,
    /// `start.accountSid`.
    pub account_sid: String,
    /// `start.customParameters`, string values only, in document order.
    pub custom_parameters: Vec<(String, String)>,
    /// `start.mediaFormat.encoding` (always `audio/x-mulaw` today).
    pub encoding: String,
    /// `start.mediaFormat.sampleRate` (always 8000 today).
    pub sample_rate: u32,
}

/// A `media` message's content; the payload borrows from the message text when it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media<'a> {
    /// `media.chunk`, from 1.
    pub chunk: u64,
    /// `media.timestamp`: ms since the stream started.
    pub timestamp_ms: u64,
    /// `media.payload`: base64 μ-law.
    pub payload: Cow<'a, str>,
}

/// Why a message could not be used. The caller counts and logs it and keeps the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageError {
    /// Not a JSON object with a string `event`.
    NotJson,
    /// The message exceeds [`MAX_MESSAGE_BYTES`].
    TooLarge,
    /// A required field is absent or has the wrong type.
    MissingField(&'static str),
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::NotJson => f.write_str("not a Media Streams JSON message"),
            MessageError::TooLarge => f.write_str("message too large"),
            MessageError::MissingField(n) => write!(f, "missing or invalid field {n}"),
        }
    }
}

impl std::error::Error for MessageError {}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    // Borrowed, like `track` and the counters below: parsing a caller frame allocates nothing
    // (issue 16; `tests/audio_no_alloc.rs`).
    #[serde(
        rename = "streamSid",
        borrow,
        default,
        deserialize_with = "borrowed_str"
    )]
    stream_sid: Option<Cow<'a, str>>,
    #[serde(default)]
    start: Option<StartBody>,
    #[serde(borrow, default)]
    media: Option<MediaBody<'a>>,
    #[serde(default)]
    dtmf: Option<DtmfBody>,
    #[serde(default)]
    mark: Option<MarkBody>,
}

#[derive(Deserialize)]
struct StartBody {
    #[serde(rename = "streamSid", default)]
    stream_sid: Option<String>,
    #[serde(rename = "callSid", default)]
    call_sid: Option<String>,
    #[serde(rename = "accountSid", default)]
    account_sid: Option<String>,
    #[serde(rename = "customParameters", default)]
    custom_parameters: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(rename = "mediaFormat", default)]
    media_format: Option<MediaFormat>,
}

#[derive(Deserialize)]
struct MediaFormat {
    #[serde(default)]
    encoding: Option<String>,
    #[serde(rename = "sampleRate", default, deserialize_with = "lenient_u64")]
    sample_rate: Option<u64>,
}

#[derive(Deserialize)]
struct MediaBody<'a> {
    #[serde(default, deserialize_with = "lenient_u64")]
    chunk: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    timestamp: Option<u64>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    payload: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    track: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DtmfBody {
    #[serde(default)]
    digit: Option<String>,
}

#[derive(Deserialize)]
struct MarkBody {
    #[serde(default)]
    name: Option<String>,
}

/// Borrows the string from the message text unless it contains escapes (`Option<Cow>` alone
/// would always copy).
fn borrowed_str<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'a>>::deserialize(d)?.map(|b| b.0))
}

/// Counters arrive as JSON strings (`"1"`) per the docs but numbers are accepted too (§1.2).
/// A visitor rather than an untagged enum, which would buffer every value (allocating).
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Counter;
    impl<'de> de::Visitor<'de> for Counter {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a counter (number or string)")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(Counter)
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            Ok(Some(n))
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            u64::try_from(n)
                .map(Some)
                .map_err(|_| E::custom("negative counter"))
        }
        fn visit_f64<E: de::Error>(self, f: f64) -> Result<Self::Value, E> {
            if f >= 0.0 && f.is_finite() {
                Ok(Some(f as u64))
            } else {
                Err(E::custom("negative counter"))
            }
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(s.trim().parse().ok())
        }
    }
    d.deserialize_option(Counter)
}

/// Parses one text message from Twilio.
pub fn parse(text: &str) -> Result<TwilioEvent<'_>, MessageError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(MessageError::TooLarge);
    }
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|_| MessageError::NotJson)?;
    Ok(match env.event.as_ref() {
        "connected" => TwilioEvent::Connected,
        "start" => {
            let s = env.start.ok_or(MessageError::MissingField("start"))?;
            let call_sid = s
                .call_sid
                .filter(|c| !c.is_empty())
                .ok_or(MessageError::MissingField("start.callSid"))?;
            let stream_sid = s
                .stream_sid
                .or(env.stream_sid.map(Cow::into_owned))
                .ok_or(MessageError::MissingField("streamSid"))?;
            let format = s.media_format;
            TwilioEvent::Start(Start {
                stream_sid,
                call_sid,
                account_sid: s.account_sid.unwrap_or_default(),
                custom_parameters: s
                    .custom_parameters
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(k, v)| match v {
                        serde_json::Value::String(s) => Some((k, s)),
                        _ => None,
                    })
                    .collect(),
                encoding: format
                    .as_ref()
                    .and_then(|f| f.encoding.clone())
                    .unwrap_or_else(|| "audio/x-mulaw".to_owned()),
                sample_rate: format
                    .and_then(|f| f.sample_rate)
                    .and_then(|r| u32::try_from(r).ok())
                    .unwrap_or(8000),
            })
        }
        "media" => {
            let m = env.media.ok_or(MessageError::MissingField("media"))?;
            // Only the caller's track is ever streamed with <Connect> (§1.2); ignore others.
            if m.track.as_deref().is_some_and(|t| t != "inbound") {
                return Ok(TwilioEvent::Unknown);
            }
            TwilioEvent::Media(Media {
                chunk: m.chunk.ok_or(MessageError::MissingField("media.chunk"))?,
                timestamp_ms: m
                    .timestamp
                    .ok_or(MessageError::MissingField("media.timestamp"))?,
                payload: m
                    .payload
                    .ok_or(MessageError::MissingField("media.payload"))?,
            })
        }
        "dtmf" => TwilioEvent::Dtmf {
            digit: env
                .dtmf
                .and_then(|d| d.digit)
                .ok_or(MessageError::MissingField("dtmf.digit"))?,
        },
        "mark" => TwilioEvent::Mark {
            name: env
                .mark
                .and_then(|m| m.name)
                .ok_or(MessageError::MissingField("mark.name"))?,
        },
        "stop" => TwilioEvent::Stop,
        _ => TwilioEvent::Unknown,
    })
}

/// Appends a JSON string literal (quotes included) to `out`.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes an outbound `media` message (§1.3) into `out` (cleared first, capacity reused).
/// `payload_b64` is base64 μ-law 8 kHz with no file header.
pub fn write_media(out: &mut String, stream_sid: &str, payload_b64: &str) {
    out.clear();
    out.push_str("{\"event\":\"media\",\"streamSid\":");
    push_json_str(out, stream_sid);
    out.push_str(",\"media\":{\"payload\":\"");
    // The base64 alphabet needs no JSON escaping.
    out.push_str(payload_b64);
    out.push_str("\"}}");
}

/// Writes an outbound `mark` message into `out`.
pub fn write_mark(out: &mut String, stream_sid: &str, name: &str) {
    out.clear();
    out.push_str("{\"event\":\"mark\",\"streamSid\":");
    push_json_str(out, stream_sid);
    out.push_str(",\"mark\":{\"name\":");
    push_json_str(out, name);
    out.push_str("}}");
}

/// Writes an outbound `clear` message into `out`.
pub fn write_clear(out: &mut String, stream_sid: &str) {
    out.clear();
    out.push_str("{\"event\":\"clear\",\"streamSid\":");
    push_json_str(out, stream_sid);
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shapes() {
        assert_eq!(
            parse(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#),
            Ok(TwilioEvent::Connected)
        );
        let start = parse(
            r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ1",
             "start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],
             "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},
             "customParameters":{"caller":"+49123","n":5}}}"#,
        )
        .unwrap();
        let TwilioEvent::Start(s) = start else {
            panic!("not start")
        };
        assert_eq!(s.call_sid, "CA1");
        assert_eq!(s.stream_sid, "MZ1");
        assert_eq!(
            s.custom_parameters,
            vec![("caller".into(), "+49123".into())]
        );
        assert_eq!(s.sample_rate, 8000);

        let m = parse(
            r#"{"event":"media","sequenceNumber":"2","streamSid":"MZ1",
             "media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"/w=="}}"#,
        )
        .unwrap();
        let TwilioEvent::Media(m) = m else {
            panic!("not media")
        };
        assert_eq!((m.chunk, m.timestamp_ms), (1, 5));
        assert!(matches!(m.payload, Cow::Borrowed("/w==")));

        // Numbers instead of strings are accepted.
        assert!(matches!(
            parse(r#"{"event":"media","media":{"chunk":3,"timestamp":40,"payload":""}}"#),
            Ok(TwilioEvent::Media(Media {
                chunk: 3,
                timestamp_ms: 40,
                ..
            }))
        ));
        assert_eq!(
            parse(
                r#"{"event":"dtmf","streamSid":"MZ","sequenceNumber":"7","dtmf":{"track":"inbound_track","digit":"1"}}"#
            ),
            Ok(TwilioEvent::Dtmf { digit: "1".into() })
        );
        assert_eq!(
            parse(r#"{"event":"mark","mark":{"name":"utt-42"}}"#),
            Ok(TwilioEvent::Mark {
                name: "utt-42".into()
            })
        );
        assert_eq!(
            parse(r#"{"event":"stop","stop":{}}"#),
            Ok(TwilioEvent::Stop)
        );
        assert_eq!(
            parse(r#"{"event":"future","x":1}"#),
            Ok(TwilioEvent::Unknown)
        );
    }

    #[test]
    fn bad_messages_are_typed_errors() {
        assert_eq!(parse("nope"), Err(MessageError::NotJson));
        assert_eq!(parse("[]"), Err(MessageError::NotJson));
        assert_eq!(parse(r#"{"event":5}"#), Err(MessageError::NotJson));
        assert_eq!(
            parse(r#"{"event":"media","media":{"chunk":"1","timestamp":"1"}}"#),
            Err(MessageError::MissingField("media.payload"))
        );
        assert_eq!(
            parse(r#"{"event":"start","start":{}}"#),
            Err(MessageError::MissingField("start.callSid"))
        );
        assert_eq!(
            parse(r#"{"event":"media","media":{"chunk":-1,"timestamp":"1","payload":""}}"#),
            Err(MessageError::NotJson)
        );
    }

    #[test]
    fn writes_outbound_messages() {
        let mut s = String::new();
        write_media(&mut s, "MZ1", "/w==");
        assert_eq!(
            s,
            r#"{"event":"media","streamSid":"MZ1","media":{"payload":"/w=="}}"#
        );
        write_mark(&mut s, "MZ1", "m\"1");
        assert_eq!(
            s,
            r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"m\"1"}}"#
        );
        write_clear(&mut s, "MZ1");
        assert_eq!(s, r#"{"event":"clear","streamSid":"MZ1"}"#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["event"], "clear");
    }
}
