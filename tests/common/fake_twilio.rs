//! Twilio's side of a call for the tests: the library's simulated stream
//! (`ignis::driver::sim::twilio`, which applies Twilio's playback rules: marks echoed once their
//! audio has played, `clear` echoing every pending mark) behind a handle the tests script. What
//! ignis sends comes back as [`Seen`] events; anything Twilio would reject fails the test.
#![allow(dead_code)]

use std::time::Duration;

use ignis::driver::sim::SimError;
use ignis::driver::sim::twilio::{StreamEvent, TwilioStream};
use ignis::sim::twilio::{CallIds, Messages};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;

use super::Server;

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
    Audio(Vec<u8>),
    Dtmf(char),
    HangUp,
}

/// One simulated caller.
pub struct TwilioCall {
    pub call_sid: String,
    cmd: mpsc::UnboundedSender<Cmd>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

/// The test calls' ids: the numbers `call_params` uses, stream SID `MZ<call sid>`.
pub fn test_ids(call_sid: &str) -> CallIds {
    CallIds {
        account_sid: "AC11111111111111111111111111111111".into(),
        call_sid: call_sid.into(),
        stream_sid: format!("MZ{call_sid}"),
        from: "+4915112345123".into(),
        to: "+16175551881".into(),
    }
}

impl TwilioCall {
    /// The voice webhook (which pre-connects the agent), then the stream its TwiML names.
    pub async fn dial(server: &Server, call_sid: &str) -> TwilioCall {
        let path = super::answer_call(server, call_sid).await;
        TwilioCall::at(server, &path, call_sid).await
    }

    /// The stream of a call whose voice webhook the test sent already: Twilio's retry of that
    /// webhook gets the same TwiML (no second pre-connect), then the stream opens. Sent first,
    /// the webhook answers the call (and pre-connects).
    pub async fn stream_only(server: &Server, call_sid: &str) -> TwilioCall {
        let path = super::answer_call(server, call_sid).await;
        TwilioCall::at(server, &path, call_sid).await
    }

    /// A stream bound without a pre-connect: the stream connects the agent itself.
    pub async fn without_preconnect(server: &Server, call_sid: &str) -> TwilioCall {
        let path = super::bind_without_preconnect(server, call_sid);
        TwilioCall::at(server, &path, call_sid).await
    }

    /// Opens the stream at `path` (from the call's TwiML).
    pub async fn at(server: &Server, path: &str, call_sid: &str) -> TwilioCall {
        let start = start_json(call_sid).to_string();
        TwilioCall::over(super::open_stream_at(server, path, &start).await, call_sid)
    }

    /// Drives a stream socket that is already open (101 read, `connected` + `start` sent), over
    /// any transport (plain TCP here, TLS through a proxy in `tests/nginx_proxy.rs`).
    pub fn over<S>(ws: WebSocketStream<S>, call_sid: &str) -> TwilioCall
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        let stream = TwilioStream::over(ws, Messages::after_start(test_ids(call_sid)));
        tokio::spawn(run(stream, cmd_rx, seen_tx));
        TwilioCall {
            call_sid: call_sid.to_owned(),
            cmd: cmd_tx,
            seen: seen_rx,
        }
    }

    /// Sends caller audio as 20 ms frames (160 bytes, timestamps 20 ms apart), without pacing.
    pub fn send_audio(&mut self, ulaw: &[u8]) {
        let _ = self.cmd.send(Cmd::Audio(ulaw.to_vec()));
    }

    pub fn send_dtmf(&mut self, digit: char) {
        let _ = self.cmd.send(Cmd::Dtmf(digit));
    }

    /// The caller hangs up: `stop`, then Twilio closes the socket.
    pub fn hang_up(&mut self) {
        let _ = self.cmd.send(Cmd::HangUp);
    }

    pub async fn next(&mut self, within: Duration) -> Option<Seen> {
        super::recv_within(&mut self.seen, within).await
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
    let mut msgs = Messages::new(test_ids(call_sid));
    let params = msgs.default_parameters();
    serde_json::from_str(&msgs.start(&params)).expect("the simulator writes JSON")
}

async fn run<S: AsyncRead + AsyncWrite + Unpin + Send>(
    mut stream: TwilioStream<S>,
    mut cmd: mpsc::UnboundedReceiver<Cmd>,
    seen: mpsc::UnboundedSender<Seen>,
) {
    let mut audio = Vec::new();
    loop {
        tokio::select! {
            event = stream.recv(&mut audio) => {
                let s = match event {
                    Ok(StreamEvent::Media { at, .. }) => Seen::Media(audio.clone(), at.into()),
                    Ok(StreamEvent::Mark(name)) => Seen::Mark(name),
                    Ok(StreamEvent::Clear(at)) => Seen::Clear(at.into()),
                    Ok(StreamEvent::Closed(code)) => Seen::Closed(code),
                    Ok(StreamEvent::Dropped) | Err(SimError::Socket(_)) => Seen::Closed(None),
                    Err(e) => panic!("{e}"),
                };
                let closed = matches!(s, Seen::Closed(_));
                let _ = seen.send(s);
                if closed {
                    return;
                }
            }
            c = cmd.recv() => {
                let _ = match c {
                    Some(Cmd::Audio(ulaw)) => send_frames(&mut stream, &ulaw).await,
                    Some(Cmd::Dtmf(d)) => stream.send_dtmf(d).await,
                    Some(Cmd::HangUp) => stream.hang_up().await,
                    None => return,
                };
            }
        }
    }
}

async fn send_frames<S: AsyncRead + AsyncWrite + Unpin + Send>(
    stream: &mut TwilioStream<S>,
    ulaw: &[u8],
) -> Result<(), SimError> {
    for frame in ulaw.chunks(160) {
        stream.send_media(frame).await?;
    }
    Ok(())
}
