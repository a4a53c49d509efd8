//! A stand-in for Twilio's side of a call, following twilio.md: the signed voice webhook, then
//! the Media Streams socket (§1.2 messages in order), with Twilio's playback behaviour (§1.4):
//! outbound audio plays in real time in arrival order, a `mark` is echoed once the audio before
//! it has played, and `clear` discards queued audio and echoes every pending mark.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::{
    CONNECTED, Server, TOKEN, call_params, client_text_frame, read_response, signed_post,
    stream_handshake, stream_signature,
};

/// What the fake Twilio saw from ignis.
#[derive(Debug, Clone)]
pub enum Seen {
    /// Outbound audio (μ-law bytes) and when it arrived.
    Media(Vec<u8>, Instant),
    /// A `mark` ignis sent.
    Mark(String),
    /// A `clear`, and when it arrived.
    Clear(Instant),
    /// The socket closed (close code, if any).
    Closed(Option<u16>),
}

enum Cmd {
    Text(String),
    Close,
}

/// One simulated caller.
pub struct TwilioCall {
    pub call_sid: String,
    cmd: mpsc::UnboundedSender<Cmd>,
    seen: mpsc::UnboundedReceiver<Seen>,
    chunk: u64,
    seq: u64,
}

impl TwilioCall {
    /// The voice webhook (which pre-connects the agent), then the stream.
    pub async fn dial(server: &Server, call_sid: &str) -> TwilioCall {
        let r = super::roundtrip(
            server,
            &signed_post("/api/twilio/voice", &call_params(call_sid), TOKEN),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("<Stream"), "{}", r.text());
        TwilioCall::stream_only(server, call_sid).await
    }

    /// Opens the stream without the voice webhook (no pre-connect).
    pub async fn stream_only(server: &Server, call_sid: &str) -> TwilioCall {
        let mut s = server.connect().await;
        let mut bytes = stream_handshake(
            "/api/twilio/stream",
            Some(&stream_signature("/api/twilio/stream")),
            "",
        )
        .into_bytes();
        bytes.extend(client_text_frame(CONNECTED));
        bytes.extend(client_text_frame(&start_json(call_sid).to_string()));
        use tokio::io::AsyncWriteExt;
        s.write_all(&bytes).await.unwrap();
        let mut buf = Vec::new();
        let resp = read_response(&mut s, &mut buf, true).await;
        assert_eq!(resp.status, 101, "{}", resp.text());
        let ws = WebSocketStream::from_partially_read(
            s,
            buf,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        TwilioCall::over(ws, call_sid)
    }

    /// Drives a stream socket that is already open (101 read, `connected` + `start` sent), over
    /// any transport (plain TCP here, TLS through a proxy in `tests/nginx_proxy.rs`).
    pub fn over<S>(ws: WebSocketStream<S>, call_sid: &str) -> TwilioCall
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(ws, format!("MZ{call_sid}"), cmd_rx, seen_tx));
        TwilioCall {
            call_sid: call_sid.to_owned(),
            cmd: cmd_tx,
            seen: seen_rx,
            chunk: 0,
            seq: 1,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Sends caller audio as 20 ms frames (160 bytes, timestamps 20 ms apart), without pacing.
    pub fn send_audio(&mut self, ulaw: &[u8]) {
        for frame in ulaw.chunks(160) {
            self.chunk += 1;
            let seq = self.next_seq();
            let msg = json!({"event":"media","sequenceNumber":seq.to_string(),"streamSid":format!("MZ{}", self.call_sid),
                "media":{"track":"inbound","chunk":self.chunk.to_string(),"timestamp":((self.chunk-1)*20).to_string(),
                "payload": base64::engine::general_purpose::STANDARD.encode(frame)}});
            let _ = self.cmd.send(Cmd::Text(msg.to_string()));
        }
    }

    pub fn send_dtmf(&mut self, digit: char) {
        let seq = self.next_seq();
        let msg = json!({"event":"dtmf","sequenceNumber":seq.to_string(),"streamSid":format!("MZ{}", self.call_sid),
            "dtmf":{"track":"inbound_track","digit":digit.to_string()}});
        let _ = self.cmd.send(Cmd::Text(msg.to_string()));
    }

    /// The caller hangs up: `stop`, then Twilio closes the socket.
    pub fn hang_up(&mut self) {
        let seq = self.next_seq();
        let msg = json!({"event":"stop","sequenceNumber":seq.to_string(),"streamSid":format!("MZ{}", self.call_sid),
            "stop":{"accountSid":"AC11111111111111111111111111111111","callSid":self.call_sid}});
        let _ = self.cmd.send(Cmd::Text(msg.to_string()));
        let _ = self.cmd.send(Cmd::Close);
    }

    pub async fn next(&mut self, within: Duration) -> Option<Seen> {
        tokio::time::timeout(within, self.seen.recv())
            .await
            .ok()
            .flatten()
    }

    /// Collects outbound audio until `n` bytes arrived (or panics after `within`).
    pub async fn audio(&mut self, n: usize, within: Duration) -> Vec<u8> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(Seen::Media(b, _))) => out.extend(b),
                Ok(Some(Seen::Closed(c))) => panic!("closed ({c:?}) after {} bytes", out.len()),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!("only {} of {n} audio bytes", out.len()),
            }
        }
        out
    }

    /// Waits for the socket to close, returning the close code and everything seen before.
    pub async fn closed(&mut self, within: Duration) -> (Option<u16>, Vec<Seen>) {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(Seen::Closed(c))) => return (c, seen),
                Ok(Some(s)) => seen.push(s),
                Ok(None) => return (None, seen),
                Err(_) => panic!("stream not closed in time"),
            }
        }
    }
}

/// The `start` message (§1.2) with the `<Parameter>`s ignis puts in its TwiML.
pub fn start_json(call_sid: &str) -> Value {
    json!({"event":"start","sequenceNumber":"1","streamSid":format!("MZ{call_sid}"),
        "start":{"accountSid":"AC11111111111111111111111111111111","streamSid":format!("MZ{call_sid}"),"callSid":call_sid,
        "tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},
        "customParameters":{"caller":"+4915112345123","called":"+16175551881","callSid":call_sid}}})
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocketStream<S>,
    stream_sid: String,
    mut cmd: mpsc::UnboundedReceiver<Cmd>,
    seen: mpsc::UnboundedSender<Seen>,
) {
    // Playback model: audio plays back to back in real time; marks wait for it.
    let mut play_end = Instant::now();
    let mut pending_marks: VecDeque<(Instant, String)> = VecDeque::new();
    loop {
        let next_mark = pending_marks.front().map(|(t, _)| *t);
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("ignis sends JSON");
                    // twilio.md §1.3: exactly these shapes, camelCase streamSid, right stream.
                    assert_eq!(v["streamSid"], stream_sid.as_str(), "wrong streamSid: {v}");
                    match v["event"].as_str() {
                        Some("media") => {
                            let b = base64::engine::general_purpose::STANDARD
                                .decode(v["media"]["payload"].as_str().expect("payload"))
                                .expect("base64 payload");
                            let now = Instant::now();
                            play_end = play_end.max(now) + Duration::from_micros(b.len() as u64 * 125);
                            let _ = seen.send(Seen::Media(b, now));
                        }
                        Some("mark") => {
                            let name = v["mark"]["name"].as_str().expect("mark.name").to_owned();
                            pending_marks.push_back((play_end.max(Instant::now()), name.clone()));
                            let _ = seen.send(Seen::Mark(name));
                        }
                        Some("clear") => {
                            let now = Instant::now();
                            play_end = now;
                            for (_, name) in pending_marks.drain(..) {
                                let _ = ws.send(Message::text(json!({"event":"mark","streamSid":stream_sid,"mark":{"name":name}}).to_string())).await;
                            }
                            let _ = seen.send(Seen::Clear(now));
                        }
                        other => panic!("Twilio would reject event {other:?} (31951)"),
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    let _ = seen.send(Seen::Closed(f.map(|f| u16::from(f.code))));
                    return;
                }
                Some(Ok(Message::Binary(_))) => panic!("binary frame: Twilio warns 31950"),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => {
                    let _ = seen.send(Seen::Closed(None));
                    return;
                }
            },
            () = async { match next_mark { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                if let Some((_, name)) = pending_marks.pop_front() {
                    let _ = ws.send(Message::text(json!({"event":"mark","sequenceNumber":"0","streamSid":stream_sid,"mark":{"name":name}}).to_string())).await;
                }
            }
            c = cmd.recv() => match c {
                Some(Cmd::Text(t)) => { let _ = ws.send(Message::text(t)).await; }
                Some(Cmd::Close) => {
                    let _ = ws.close(None).await;
                }
                None => return,
            }
        }
    }
}
