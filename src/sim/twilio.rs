//! Twilio's side of a call, sans-IO: the voice webhook it signs, the TwiML it reads back, the
//! Media Streams messages it sends (docs/twilio.md §1.2) and its playback rules for what ignis sends
//! (§1.3, §1.4): outbound audio plays back to back in real time in arrival order, a `mark` is
//! echoed once the audio queued before it has played, and `clear` drops the queued audio and
//! echoes every pending mark at once.
//!
//! The socket that carries these lives in `driver::sim::twilio`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::audio::mulaw;
use crate::http::client::{self, ResponseError};
use crate::http::form;
use crate::twilio::signature;

/// Twilio's frame: 20 ms of 8 kHz μ-law.
pub const FRAME: usize = 160;
/// One frame's duration, ms.
pub const FRAME_MS: u64 = 20;
/// The account SID the simulator signs as (Twilio's format, all zeros).
pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
/// Largest TwiML answer the simulator reads from a voice webhook.
pub const MAX_TWIML_BYTES: usize = 64 * 1024;

/// Who is calling whom, as the `start` message and the voice webhook name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallIds {
    /// `AC…`.
    pub account_sid: String,
    /// `CA…`.
    pub call_sid: String,
    /// `MZ…`.
    pub stream_sid: String,
    /// The caller's number.
    pub from: String,
    /// The called number.
    pub to: String,
}

impl CallIds {
    /// Ids for `call_sid`, its stream SID derived as Twilio's are (`MZ` + the same 32 digits).
    pub fn new(call_sid: &str, from: &str, to: &str) -> CallIds {
        CallIds {
            account_sid: ACCOUNT_SID.to_owned(),
            call_sid: call_sid.to_owned(),
            stream_sid: format!("MZ{}", call_sid.get(2..).unwrap_or("0")),
            from: from.to_owned(),
            to: to.to_owned(),
        }
    }
}

/// The messages a Twilio stream sends, numbered as Twilio numbers them (`sequenceNumber` from 1
/// on `start`, `chunk` from 1 on the first `media`, `timestamp` 20 ms per chunk).
#[derive(Debug, Clone)]
pub struct Messages {
    ids: CallIds,
    seq: u64,
    chunk: u64,
}

impl Messages {
    /// Messages of the stream of `ids`.
    pub fn new(ids: CallIds) -> Messages {
        Messages {
            ids,
            seq: 0,
            chunk: 0,
        }
    }

    /// Numbering for a stream whose `start` was already sent (e.g. with the handshake).
    pub fn after_start(ids: CallIds) -> Messages {
        Messages {
            ids,
            seq: 1,
            chunk: 0,
        }
    }

    /// The call's ids.
    pub fn ids(&self) -> &CallIds {
        &self.ids
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// `connected`, the first message (it carries no sequence number).
    pub fn connected() -> &'static str {
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#
    }

    /// `start`, with `parameters` as `customParameters` (the TwiML's `<Parameter>`s).
    pub fn start(&mut self, parameters: &[(String, String)]) -> String {
        let seq = self.next_seq();
        let ids = &self.ids;
        let custom: serde_json::Map<String, serde_json::Value> = parameters
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect();
        serde_json::json!({"event":"start","sequenceNumber":seq.to_string(),"streamSid":ids.stream_sid,
            "start":{"accountSid":ids.account_sid,"streamSid":ids.stream_sid,"callSid":ids.call_sid,
            "tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},
            "customParameters":custom}})
        .to_string()
    }

    /// The `customParameters` ignis's TwiML names for this call, for a stream opened without
    /// reading the TwiML.
    pub fn default_parameters(&self) -> Vec<(String, String)> {
        vec![
            ("caller".to_owned(), self.ids.from.clone()),
            ("called".to_owned(), self.ids.to.clone()),
            ("callSid".to_owned(), self.ids.call_sid.clone()),
        ]
    }

    /// `media` carrying one frame of caller audio, already base64 (pre-encoded frames keep a
    /// load generator cheap).
    pub fn media_b64(&mut self, payload: &str) -> String {
        let seq = self.next_seq();
        self.chunk += 1;
        let mut m = String::with_capacity(200 + payload.len());
        let _ = write!(
            m,
            r#"{{"event":"media","sequenceNumber":"{seq}","streamSid":"{}","media":{{"track":"inbound","chunk":"{}","timestamp":"{}","payload":"{payload}"}}}}"#,
            self.ids.stream_sid,
            self.chunk,
            (self.chunk - 1) * FRAME_MS
        );
        m
    }

    /// `media` carrying `ulaw` (one frame of 8 kHz μ-law).
    pub fn media(&mut self, ulaw: &[u8]) -> String {
        self.media_b64(&STANDARD.encode(ulaw))
    }

    /// `dtmf`: a keypad digit.
    pub fn dtmf(&mut self, digit: char) -> String {
        let seq = self.next_seq();
        serde_json::json!({"event":"dtmf","sequenceNumber":seq.to_string(),"streamSid":self.ids.stream_sid,
            "dtmf":{"track":"inbound_track","digit":digit.to_string()}})
        .to_string()
    }

    /// `mark`: the echo of a mark ignis sent, once its audio has played.
    pub fn mark(&mut self, name: &str) -> String {
        let seq = self.next_seq();
        serde_json::json!({"event":"mark","sequenceNumber":seq.to_string(),"streamSid":self.ids.stream_sid,
            "mark":{"name":name}})
        .to_string()
    }

    /// `stop`: the call ended.
    pub fn stop(&mut self) -> String {
        let seq = self.next_seq();
        serde_json::json!({"event":"stop","sequenceNumber":seq.to_string(),"streamSid":self.ids.stream_sid,
            "stop":{"accountSid":self.ids.account_sid,"callSid":self.ids.call_sid}})
        .to_string()
    }
}

/// What ignis sent on the stream that Twilio would reject (§1.3: Twilio answers error 31951 and
/// ignores the message; the simulator reports it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Not JSON, or not the shape of any message (31951).
    Malformed(String),
    /// A message for another stream.
    WrongStream(String),
    /// An event Twilio does not accept from the application.
    UnknownEvent(String),
    /// A `media` payload that is not base64.
    BadPayload,
    /// A binary frame (Twilio warns 31950).
    Binary,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Malformed(e) => {
                write!(f, "ignis sent a malformed message (Twilio 31951): {e}")
            }
            Violation::WrongStream(s) => write!(f, "ignis sent a message for stream {s:?}"),
            Violation::UnknownEvent(e) => {
                write!(f, "ignis sent event {e:?}, which Twilio rejects (31951)")
            }
            Violation::BadPayload => f.write_str("bad media payload (Twilio 31951)"),
            Violation::Binary => f.write_str("binary frame (Twilio warns 31950)"),
        }
    }
}

impl std::error::Error for Violation {}

/// One message ignis sent, as Twilio reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// Audio to play (base64 μ-law, not yet decoded).
    Media(Cow<'a, str>),
    /// A mark to echo once the audio before it has played.
    Mark(String),
    /// Drop the queued audio.
    Clear,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(rename = "streamSid", borrow)]
    stream_sid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    media: Option<WireMedia<'a>>,
    mark: Option<WireMark>,
}

#[derive(Deserialize)]
struct WireMedia<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

#[derive(Deserialize)]
struct WireMark {
    name: String,
}

/// Reads one text message ignis sent on the stream `stream_sid`.
pub fn parse_outbound<'a>(text: &'a str, stream_sid: &str) -> Result<Outbound<'a>, Violation> {
    let wire: Wire<'a> =
        serde_json::from_str(text).map_err(|e| Violation::Malformed(e.to_string()))?;
    if wire.stream_sid.as_deref() != Some(stream_sid) {
        return Err(Violation::WrongStream(
            wire.stream_sid.map(Cow::into_owned).unwrap_or_default(),
        ));
    }
    match wire.event.as_ref() {
        "media" => match wire.media {
            Some(m) => Ok(Outbound::Media(m.payload)),
            None => Err(Violation::Malformed("media without media.payload".into())),
        },
        "mark" => match wire.mark {
            Some(m) => Ok(Outbound::Mark(m.name)),
            None => Err(Violation::Malformed("mark without mark.name".into())),
        },
        "clear" => Ok(Outbound::Clear),
        other => Err(Violation::UnknownEvent(other.to_owned())),
    }
}

/// Decodes a `media` payload into `out` (cleared first).
pub fn decode_payload(payload: &str, out: &mut Vec<u8>) -> Result<(), Violation> {
    out.clear();
    STANDARD
        .decode_vec(payload, out)
        .map_err(|_| Violation::BadPayload)
}

/// Twilio's playback of what ignis sends: audio plays back to back in real time, a mark waits
/// for the audio queued before it, `clear` drops the queue and releases every pending mark.
#[derive(Debug, Default, Clone)]
pub struct Playback {
    play_end: Option<Instant>,
    marks: VecDeque<(Instant, String)>,
}

impl Playback {
    /// `samples` of 8 kHz audio arrived at `now`: returns when they start to play.
    pub fn media(&mut self, now: Instant, samples: usize) -> Instant {
        let start = self.play_end.map_or(now, |e| e.max(now));
        self.play_end = Some(start + Duration::from_micros(samples as u64 * 125));
        start
    }

    /// A mark arrived at `now`: it is due once the audio queued so far has played.
    pub fn mark(&mut self, now: Instant, name: String) {
        let due = self.play_end.map_or(now, |e| e.max(now));
        self.marks.push_back((due, name));
    }

    /// `clear` at `now`: queued audio is dropped; every pending mark is echoed now.
    pub fn clear(&mut self, now: Instant) -> impl Iterator<Item = String> + '_ {
        self.play_end = Some(now);
        self.marks.drain(..).map(|(_, name)| name)
    }

    /// When the queued audio ends (`None` before any audio).
    pub fn play_end(&self) -> Option<Instant> {
        self.play_end
    }

    /// When the next mark is due.
    pub fn next_mark(&self) -> Option<Instant> {
        self.marks.front().map(|(t, _)| *t)
    }

    /// The next mark due by `now`, if any (marks fall due in the order they came).
    pub fn due_mark(&mut self, now: Instant) -> Option<String> {
        match self.marks.front() {
            Some((t, _)) if *t <= now => self.marks.pop_front().map(|(_, n)| n),
            _ => None,
        }
    }
}

/// What a caller heard, 8 kHz PCM on a timeline from `t0`: audio lands where it plays, and a
/// `clear` cuts what had not played yet, as it cuts the sound.
#[derive(Debug, Clone)]
pub struct Heard {
    t0: Instant,
    /// The samples, from `t0`.
    pub samples: Vec<i16>,
}

impl Heard {
    /// An empty recording starting at `t0`.
    pub fn new(t0: Instant) -> Heard {
        Heard {
            t0,
            samples: Vec::new(),
        }
    }

    fn pos(&self, t: Instant) -> usize {
        (t.saturating_duration_since(self.t0).as_micros() / 125) as usize
    }

    /// μ-law audio that starts playing at `start`.
    pub fn play(&mut self, start: Instant, ulaw: &[u8]) {
        let at = self.pos(start);
        self.samples.resize(at, 0);
        self.samples
            .extend(ulaw.iter().map(|&b| mulaw::decode_sample(b)));
    }

    /// A `clear` at `now`.
    pub fn clear(&mut self, now: Instant) {
        let at = self.pos(now);
        self.samples.truncate(at);
    }
}

/// The voice webhook Twilio POSTs when the call comes in (§2): form parameters signed over
/// `url` with `auth_token`. Returns the raw HTTP request.
pub fn voice_webhook_request(
    url: &str,
    host: &str,
    target: &str,
    auth_token: &str,
    ids: &CallIds,
) -> String {
    let params = voice_webhook_params(ids);
    let sig = signature::sign(auth_token, url, &params);
    let body = params
        .iter()
        .map(|(k, v)| format!("{}={}", form::encode(k), form::encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: TwilioProxy/1.1 (ignis simulate)\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {sig}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The form parameters of the voice webhook for the call `ids`, as Twilio posts them (§2).
pub fn voice_webhook_params(ids: &CallIds) -> Vec<(String, String)> {
    [
        ("AccountSid", ids.account_sid.as_str()),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", ids.call_sid.as_str()),
        ("CallStatus", "ringing"),
        ("Called", ids.to.as_str()),
        ("Caller", ids.from.as_str()),
        ("Direction", "inbound"),
        ("From", ids.from.as_str()),
        ("To", ids.to.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// What a voice webhook answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The stream its TwiML names, if any.
    pub stream: Option<StreamTwiml>,
}

/// The voice webhook of an ignis whose stream endpoint is `stream_url`:
/// `wss://host/api/twilio/stream` → `https://host/api/twilio/voice` (`ws://` → `http://`).
pub fn voice_url_of(stream_url: &str) -> String {
    stream_url
        .replacen("wss://", "https://", 1)
        .replacen("ws://", "http://", 1)
        .replacen("/api/twilio/stream", "/api/twilio/voice", 1)
}

/// Reads the webhook's answer from the bytes so far (`eof`: the peer closed): `None` until the
/// whole response is in.
pub fn parse_webhook_answer(buf: &[u8], eof: bool) -> Result<Option<WebhookAnswer>, ResponseError> {
    Ok(
        client::parse_response(buf, eof, MAX_TWIML_BYTES)?.map(|r| WebhookAnswer {
            status: r.status,
            stream: parse_twiml(&String::from_utf8_lossy(&r.body)),
        }),
    )
}

/// The signature Twilio puts on the stream's upgrade request: over the `wss://` URL, no
/// parameters (§1.1).
pub fn stream_signature(auth_token: &str, stream_url: &str) -> String {
    signature::sign(auth_token, stream_url, &[])
}

/// What a voice webhook's TwiML tells Twilio to do with the call: the stream to open and the
/// parameters it passes on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamTwiml {
    /// `<Stream url=…>`.
    pub url: String,
    /// `<Parameter name=… value=…/>`s, in order.
    pub parameters: Vec<(String, String)>,
}

/// Reads `<Connect><Stream url=…><Parameter …/>` from a TwiML document; `None` when it names no
/// stream (a `<Hangup/>`, a `<Dial>`, …).
pub fn parse_twiml(xml: &str) -> Option<StreamTwiml> {
    let stream = &xml[xml.find("<Stream ")?..];
    let url = xml_attr(&stream[..stream.find('>')?], "url")?;
    let mut parameters = Vec::new();
    let mut rest = stream;
    while let Some(i) = rest.find("<Parameter ") {
        rest = &rest[i..];
        let end = rest.find('>')?;
        let tag = &rest[..end];
        if let (Some(n), Some(v)) = (xml_attr(tag, "name"), xml_attr(tag, "value")) {
            parameters.push((n, v));
        }
        rest = &rest[end..];
    }
    Some(StreamTwiml { url, parameters })
}

/// The unescaped value of `name="…"` in one tag.
fn xml_attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(
        tag[start..start + len]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_wait_for_their_audio_and_clear_releases_them() {
        let t0 = Instant::now();
        let mut p = Playback::default();
        assert_eq!(p.media(t0, 1600), t0); // 200 ms
        p.mark(t0, "a".into());
        assert_eq!(p.next_mark(), Some(t0 + Duration::from_millis(200)));
        assert_eq!(p.due_mark(t0 + Duration::from_millis(199)), None);
        assert_eq!(
            p.due_mark(t0 + Duration::from_millis(200)),
            Some("a".into())
        );
        let later = t0 + Duration::from_millis(100);
        p.media(later, 800);
        p.mark(later, "b".into());
        p.mark(later, "c".into());
        let echoed: Vec<String> = p.clear(later).collect();
        assert_eq!(echoed, ["b", "c"]);
        assert_eq!(p.next_mark(), None);
        assert_eq!(p.media(later, 160), later);
    }

    #[test]
    fn clear_cuts_what_was_not_heard() {
        let t0 = Instant::now();
        let mut h = Heard::new(t0);
        h.play(t0 + Duration::from_millis(10), &[0xff; 160]);
        assert_eq!(h.samples.len(), 80 + 160);
        h.clear(t0 + Duration::from_millis(20));
        assert_eq!(h.samples.len(), 160);
    }

    #[test]
    fn outbound_messages_are_checked_as_twilio_checks_them() {
        let m = r#"{"event":"media","streamSid":"MZ1","media":{"payload":"/w=="}}"#;
        assert_eq!(parse_outbound(m, "MZ1"), Ok(Outbound::Media("/w==".into())));
        assert!(matches!(
            parse_outbound(m, "MZ2"),
            Err(Violation::WrongStream(_))
        ));
        let c = r#"{"event":"clear","streamSid":"MZ1"}"#;
        assert_eq!(parse_outbound(c, "MZ1"), Ok(Outbound::Clear));
        let x = r#"{"event":"stop","streamSid":"MZ1"}"#;
        assert!(matches!(
            parse_outbound(x, "MZ1"),
            Err(Violation::UnknownEvent(_))
        ));
        assert!(parse_outbound("nope", "MZ1").is_err());
    }

    #[test]
    fn the_stream_is_read_from_the_twiml() {
        let xml = crate::twilio::twiml::connect_stream(
            "wss://h/api/twilio/stream",
            "https://h/a?x=1&y=2",
            &[("caller", "+49 \"1\""), ("callSid", "CA1")],
        );
        let t = parse_twiml(&xml).expect("a stream");
        assert_eq!(t.url, "wss://h/api/twilio/stream");
        assert_eq!(
            t.parameters,
            [
                ("caller".to_owned(), "+49 \"1\"".to_owned()),
                ("callSid".to_owned(), "CA1".to_owned())
            ]
        );
        assert_eq!(parse_twiml(&crate::twilio::twiml::hangup()), None);
    }

    #[test]
    fn media_frames_are_numbered_as_twilio_numbers_them() {
        let mut m = Messages::new(CallIds::new("CA12", "+1", "+2"));
        let start: serde_json::Value = serde_json::from_str(&m.start(&[])).unwrap();
        assert_eq!(start["sequenceNumber"], "1");
        assert_eq!(start["streamSid"], "MZ12");
        let media: serde_json::Value = serde_json::from_str(&m.media(&[0xff; 160])).unwrap();
        assert_eq!(media["sequenceNumber"], "2");
        assert_eq!(media["media"]["chunk"], "1");
        assert_eq!(media["media"]["timestamp"], "0");
        let media: serde_json::Value = serde_json::from_str(&m.media(&[0xff; 160])).unwrap();
        assert_eq!(media["media"]["timestamp"], "20");
    }
}
