//! Fuzz entry points for what the agent side sends: ElevenLabs events through the message parser
//! and the session, and the HTTPS responses ignis reads (signed URL, Twilio REST status).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::elevenlabs::endpoint;
use crate::elevenlabs::messages::{self, AgentEvent};
use crate::elevenlabs::session::{AgentSession, MAX_QUEUED_CONTROL, SessionEvent};
use crate::http::url::Endpoint;
use crate::twilio::rest;

/// Most messages one input is split into.
const MAX_MESSAGES: usize = 256;

/// ElevenLabs events: `data` (lossily UTF-8) is one message, and each of its lines is also a
/// message, all fed in order to one [`AgentSession`]. Invariants: never panics; the session's
/// events agree with [`messages::parse`]; audio older than the newest interruption is never
/// passed on; the control queue never holds more than [`MAX_QUEUED_CONTROL`] and matches a model
/// of it exactly (pongs jump the queue, newest first, and echo the ping's id; tool results in
/// order); every writer (`pong`, `client_tool_result`, `contextual_update`, `user_message`)
/// produces JSON that parses back to the values it was given, whatever the strings.
///
/// `start` is the virtual clock's origin (any instant: only differences matter); message `i`
/// arrives `10·i` ms after it.
pub fn elevenlabs_event(start: Instant, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let t0 = start;
    let silence = Duration::from_secs(20);
    let mut session = AgentSession::new(t0, silence);
    let mut model: VecDeque<String> = VecDeque::new();
    let mut newest_interrupt: Option<u64> = None;
    let (mut pings, mut bad) = (0u64, 0u64);
    let messages = std::iter::once(text.as_ref())
        .chain(text.split('\n'))
        .take(MAX_MESSAGES);
    for (i, msg) in messages.enumerate() {
        let now = t0 + Duration::from_millis(i as u64 * 10);
        let parsed = messages::parse(msg);
        if parsed.is_err() {
            bad += 1;
        }
        let got = session.handle_text(now, msg);
        assert_eq!(got.is_err(), parsed.is_err());
        assert_eq!(session.poll_timeout(), Some(now + silence));
        match (parsed, got) {
            (Ok(AgentEvent::Ping { event_id, .. }), Ok(None)) => {
                pings += 1;
                let pong = messages::pong(event_id);
                let v: Value = serde_json::from_str(&pong).expect("pong is JSON");
                assert_eq!(v["type"], "pong");
                assert_eq!(v["event_id"].as_u64(), Some(event_id));
                if model.len() < MAX_QUEUED_CONTROL {
                    model.push_front(pong);
                }
            }
            (Ok(AgentEvent::Audio { event_id, .. }), Ok(got)) => {
                let stale = newest_interrupt.is_some_and(|n| event_id < n);
                match got {
                    None => assert!(stale, "fresh audio {event_id} dropped"),
                    Some(SessionEvent::Audio { event_id: e, .. }) => {
                        assert!(!stale, "stale audio {event_id} passed on");
                        assert_eq!(e, event_id);
                    }
                    Some(other) => panic!("audio became {other:?}"),
                }
            }
            (Ok(AgentEvent::Interruption { event_id }), Ok(got)) => {
                assert_eq!(got, Some(SessionEvent::Interrupted { event_id }));
                newest_interrupt = Some(newest_interrupt.map_or(event_id, |n| n.max(event_id)));
            }
            (
                Ok(AgentEvent::ClientToolCall {
                    tool_name,
                    tool_call_id,
                    ..
                }),
                Ok(Some(SessionEvent::ToolCall {
                    tool_name: n,
                    tool_call_id: id,
                    ..
                })),
            ) => {
                assert_eq!((&n, &id), (&tool_name, &tool_call_id));
                // Answer it, with the peer's strings in every field.
                let is_error = i % 2 == 0;
                let result = messages::client_tool_result(&tool_call_id, &tool_name, is_error);
                check_tool_result(&result, &tool_call_id, &tool_name, is_error);
                session.tool_result(&tool_call_id, &tool_name, is_error);
                if model.len() < MAX_QUEUED_CONTROL {
                    model.push_back(result);
                }
            }
            (
                Ok(AgentEvent::Metadata {
                    conversation_id, ..
                }),
                Ok(Some(SessionEvent::Ready { .. })),
            ) => {
                assert_eq!(session.conversation_id(), Some(conversation_id.as_str()));
            }
            (Ok(AgentEvent::Error { .. }), Ok(Some(SessionEvent::Error { .. })))
            | (Ok(_), Ok(None))
            | (Err(_), Err(_)) => {}
            (p, g) => panic!("parse gave {p:?} but the session {g:?}"),
        }
        // Drain now and then, so the queue both fills up and empties.
        if msg.is_empty() || msg.len().is_multiple_of(3) {
            drain(&mut session, &mut model);
        }
        assert!(model.len() <= MAX_QUEUED_CONTROL);
    }
    let stats = session.stats();
    assert_eq!((stats.pings, stats.bad_messages), (pings, bad));
    drain(&mut session, &mut model);

    // The writers with arbitrary strings: the whole input, and its halves.
    let (a, b) = text.split_at(
        text.char_indices()
            .nth(text.chars().count() / 2)
            .map_or(0, |c| c.0),
    );
    check_tool_result(&messages::client_tool_result(a, b, true), a, b, true);
    for (w, kind) in [
        (messages::contextual_update(&text), "contextual_update"),
        (messages::user_message(&text), "user_message"),
    ] {
        let v: Value = serde_json::from_str(&w).expect("writer output is JSON");
        assert_eq!(v["type"], kind);
        assert_eq!(v["text"].as_str(), Some(text.as_ref()));
    }
}

fn drain(session: &mut AgentSession, model: &mut VecDeque<String>) {
    let mut n = 0;
    while let Some(msg) = session.poll_transmit() {
        n += 1;
        assert!(n <= MAX_QUEUED_CONTROL, "control queue over its bound");
        assert_eq!(Some(msg), model.pop_front(), "control queue order");
    }
    assert!(model.is_empty(), "control message lost");
}

fn check_tool_result(json: &str, id: &str, result: &str, is_error: bool) {
    let v: Value = serde_json::from_str(json).expect("client_tool_result is JSON");
    assert_eq!(v["type"], "client_tool_result");
    assert_eq!(v["tool_call_id"].as_str(), Some(id));
    assert_eq!(v["result"].as_str(), Some(result));
    assert_eq!(v["is_error"].as_bool(), Some(is_error));
}

/// The HTTPS responses ignis parses: the signed-URL response (`endpoint`) and the Twilio REST
/// status (`rest`), each with `eof` false and true. Invariants: never panics; a complete answer
/// stays the same when more bytes are known to be absent (`eof`); a signed URL that is returned
/// is a `ws(s)://` URL that [`Endpoint::parse`] accepts; an
/// [`Endpoint`] written back with `ws_url` parses to itself.
pub fn https_response(data: &[u8]) {
    let more = endpoint::parse_signed_url_response(data, false);
    let end = endpoint::parse_signed_url_response(data, true);
    if let Ok(Some(url)) = &more {
        assert_eq!(
            end.as_ref().ok(),
            Some(&Some(url.clone())),
            "eof changed the answer"
        );
    }
    assert!(!matches!(end, Ok(None)), "eof and still incomplete");
    for url in [&more, &end]
        .into_iter()
        .filter_map(|r| r.as_ref().ok().cloned().flatten())
    {
        assert!(url.starts_with("ws"), "signed URL {url:?}");
        assert!(
            Endpoint::parse(&url).is_ok(),
            "signed URL {url:?} does not parse"
        );
    }
    let more = rest::parse_status(data, false);
    let end = rest::parse_status(data, true);
    if let Ok(Some(code)) = more {
        assert_eq!(end, Ok(Some(code)));
    }
    // URL parsing on the raw text too (it also reads ELEVENLABS_API_BASE from the config): what
    // it accepts, written back as a WebSocket URL, parses to the same endpoint.
    if let Ok(ep) = Endpoint::parse(&String::from_utf8_lossy(data))
        && !ep.host.contains(['[', ']'])
    {
        let again = Endpoint::parse(&ep.ws_url());
        assert_eq!(
            again.as_ref(),
            Ok(&ep),
            "{:?} did not round-trip",
            ep.ws_url()
        );
    }
}

/// Most bytes of buffer a [`websocket_frames`] reader may hold: its largest frame plus a header.
const FRAMES_MAX_MESSAGE: usize = 64 * 1024;

/// The agent socket's WebSocket client (`http::websocket_client`): the first byte picks a read
/// size (1..=256, or the whole input when 0), the rest are the server's bytes, fed to one
/// [`FrameReader`] in reads of that size and to a second in one read. Invariants: never panics;
/// the reader's output does not depend on how the bytes were split into reads (the same frames
/// and messages, the same error); its buffer never exceeds the largest frame it accepts plus
/// one read, and is back to its resident size once everything has been handed out; the
/// handshake response parser, with and without `eof`, agrees and never claims more than it read.
pub fn websocket_frames(data: &[u8]) {
    use crate::http::websocket_client::{
        self as ws, FrameReader, RESIDENT_READ_BYTES, parse_handshake_response,
    };
    let Some((&step, wire)) = data.split_first() else {
        return;
    };
    let step = if step == 0 {
        wire.len().max(1)
    } else {
        usize::from(step)
    };
    let whole = frames_of(&mut FrameReader::new(FRAMES_MAX_MESSAGE, wire), &[], 1);
    let mut split = FrameReader::new(FRAMES_MAX_MESSAGE, &[]);
    let pieces = frames_of(&mut split, wire, step);
    assert_eq!(whole, pieces, "read size {step} changed what was read");
    let bound = (FRAMES_MAX_MESSAGE + 14).max(RESIDENT_READ_BYTES) + step;
    assert!(split.capacity() <= 2 * bound, "buffer {}", split.capacity());
    if pieces.last().is_some_and(|l| l == "drained") {
        let _ = split.space();
        assert_eq!(split.capacity(), RESIDENT_READ_BYTES, "buffer not shrunk");
    }
    let key = ws::handshake_key(&[7; 16]);
    let more = parse_handshake_response(wire, false, &key);
    let end = parse_handshake_response(wire, true, &key);
    if let Ok(Some(n)) = more {
        assert!(n <= wire.len());
        assert_eq!(end, Ok(Some(n)), "eof changed the answer");
    }
    assert!(!matches!(end, Ok(None)), "eof and still incomplete");
}

/// What `reader` hands out for `wire` fed in reads of `step` bytes (after any bytes it started
/// with), ending in "drained", "error: …" or "partial".
fn frames_of(
    reader: &mut crate::http::websocket_client::FrameReader,
    mut wire: &[u8],
    step: usize,
) -> Vec<String> {
    use crate::http::websocket_client::Incoming;
    let mut out = Vec::new();
    loop {
        loop {
            match reader.next_frame() {
                Ok(Some(Incoming::Text(t))) => {
                    let t = t.to_owned();
                    assert_eq!(reader.text(), Some(t.as_str()), "text() after next_frame()");
                    out.push(format!("text {t:?}"));
                }
                Ok(Some(other)) => out.push(format!("{other:?}")),
                Ok(None) => break,
                Err(e) => {
                    out.push(format!("error: {e}"));
                    return out;
                }
            }
        }
        if wire.is_empty() {
            out.push(
                if reader.is_idle() {
                    "drained"
                } else {
                    "partial"
                }
                .into(),
            );
            return out;
        }
        let space = reader.space();
        assert!(!space.is_empty(), "no room to read into");
        let n = step.min(space.len()).min(wire.len());
        space[..n].copy_from_slice(&wire[..n]);
        reader.filled(n);
        wire = &wire[n..];
    }
}
