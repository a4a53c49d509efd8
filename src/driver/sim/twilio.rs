//! Twilio's side of a call on real sockets: the signed voice webhook, then the Media Streams
//! socket the TwiML names, with Twilio's playback rules ([`crate::sim::twilio::Playback`]) applied
//! to what ignis sends: marks are echoed when their audio has played, `clear` echoes them at once.
//!
//! [`TwilioStream`] is a handle the caller drives: it sends when told and, in
//! [`TwilioStream::recv`], reads ignis's messages and echoes marks on time. Every send goes
//! through one outbox, so dropping a `recv` (e.g. in a `select!` with a frame clock) never loses
//! or splits a message.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_rustls::rustls::ClientConfig;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::{Io, SimError, ws_config};
use crate::driver::net;
use crate::http::url::Endpoint;
use crate::sim::twilio::{self as rules, CallIds, Messages, Outbound, Playback, WebhookAnswer};

/// The socket a connected stream runs over.
pub type Socket = Box<dyn Io>;

/// POSTs the signed voice webhook to `url` as Twilio does and reads the TwiML it answers.
pub async fn voice_webhook(
    url: &str,
    auth_token: &str,
    ids: &CallIds,
    timeout: Duration,
) -> Result<WebhookAnswer, SimError> {
    let tls = net::default_tls().map_err(SimError::Connect)?;
    voice_webhook_with(url, auth_token, ids, timeout, &tls).await
}

/// [`voice_webhook`] trusting the roots of `tls` (e.g. with `EXTRA_CA_FILE`).
pub async fn voice_webhook_with(
    url: &str,
    auth_token: &str,
    ids: &CallIds,
    timeout: Duration,
    tls: &Arc<ClientConfig>,
) -> Result<WebhookAnswer, SimError> {
    let mut ep = Endpoint::parse(url).map_err(SimError::Url)?;
    let target = std::mem::take(&mut ep.target);
    let req = rules::voice_webhook_request(url, &ep.host_header(), &target, auth_token, ids);
    net::request(
        &ep,
        tls,
        req.as_bytes(),
        timeout,
        rules::MAX_TWIML_BYTES,
        rules::parse_webhook_answer,
    )
    .await
    .map_err(|e| SimError::Webhook(e.to_string()))
}

/// What [`TwilioStream::recv`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// Outbound audio arrived at `at` (its bytes are in the buffer given to `recv`); it starts
    /// playing at `plays_at`.
    Media {
        /// Arrival.
        at: Instant,
        /// When Twilio starts playing it.
        plays_at: Instant,
    },
    /// ignis sent a mark (it is echoed once its audio has played).
    Mark(String),
    /// ignis sent `clear` at this time (pending marks were echoed).
    Clear(Instant),
    /// ignis closed the socket, with the close code if there was one.
    Closed(Option<u16>),
    /// The connection ended without a close frame.
    Dropped,
}

/// One Media Streams socket, Twilio's end.
pub struct TwilioStream<S = Socket> {
    ws: WebSocketStream<S>,
    msgs: Messages,
    playback: Playback,
    outbox: VecDeque<String>,
    /// The caller hung up: Twilio sends nothing more.
    closing: bool,
}

impl TwilioStream<Socket> {
    /// Opens `stream_url` with the upgrade signed as Twilio signs it (§1.1), over TLS for
    /// `wss://`, all within `timeout`. Nothing is sent yet: see [`TwilioStream::start`].
    pub async fn connect(
        stream_url: &str,
        auth_token: &str,
        ids: CallIds,
        timeout: Duration,
    ) -> Result<TwilioStream<Socket>, SimError> {
        let tls = net::default_tls().map_err(SimError::Connect)?;
        Self::connect_with(stream_url, auth_token, ids, timeout, &tls).await
    }

    /// [`TwilioStream::connect`] trusting the roots of `tls` (e.g. with `EXTRA_CA_FILE`).
    pub async fn connect_with(
        stream_url: &str,
        auth_token: &str,
        ids: CallIds,
        timeout: Duration,
        tls: &Arc<ClientConfig>,
    ) -> Result<TwilioStream<Socket>, SimError> {
        let ep = Endpoint::parse(stream_url).map_err(SimError::Url)?;
        let stream = net::connect(&ep, tls, timeout)
            .await
            .map_err(SimError::Connect)?;
        let mut request = stream_url.into_client_request()?;
        let sig = rules::stream_signature(auth_token, stream_url);
        if let Ok(v) = HeaderValue::from_str(&sig) {
            request.headers_mut().insert("X-Twilio-Signature", v);
        }
        let socket: Socket = Box::new(stream);
        let handshake =
            tokio_tungstenite::client_async_with_config(request, socket, Some(ws_config()));
        let (ws, _) = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| SimError::Timeout("stream handshake"))??;
        Ok(TwilioStream::over(ws, Messages::new(ids)))
    }
}

impl<S: Io> TwilioStream<S> {
    /// Drives a stream socket that is already open, over any transport, numbering messages
    /// with `msgs` ([`Messages::after_start`] when `start` went out with the handshake).
    pub fn over(ws: WebSocketStream<S>, msgs: Messages) -> TwilioStream<S> {
        TwilioStream {
            ws,
            msgs,
            playback: Playback::default(),
            outbox: VecDeque::new(),
            closing: false,
        }
    }

    /// Twilio's playback of what ignis sent so far.
    pub fn playback(&self) -> &Playback {
        &self.playback
    }

    /// Sends `connected` and `start` with `parameters` as `customParameters`.
    pub async fn start(&mut self, parameters: &[(String, String)]) -> Result<(), SimError> {
        self.outbox.push_back(Messages::connected().to_owned());
        let start = self.msgs.start(parameters);
        self.send(start).await
    }

    /// Sends one frame of caller audio (8 kHz μ-law).
    pub async fn send_media(&mut self, ulaw: &[u8]) -> Result<(), SimError> {
        let m = self.msgs.media(ulaw);
        self.send(m).await
    }

    /// Sends one frame of caller audio already in base64.
    pub async fn send_media_b64(&mut self, payload: &str) -> Result<(), SimError> {
        let m = self.msgs.media_b64(payload);
        self.send(m).await
    }

    /// Sends a keypad digit.
    pub async fn send_dtmf(&mut self, digit: char) -> Result<(), SimError> {
        let m = self.msgs.dtmf(digit);
        self.send(m).await
    }

    /// The caller hangs up: `stop`, then Twilio closes the socket.
    pub async fn hang_up(&mut self) -> Result<(), SimError> {
        let m = self.msgs.stop();
        self.send(m).await?;
        self.closing = true;
        self.ws.close(None).await?;
        Ok(())
    }

    /// Closes the socket and reads until ignis's close reply (or `within`).
    pub async fn finish(&mut self, within: Duration) {
        let _ = tokio::time::timeout(within, async {
            let _ = self.ws.close(None).await;
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    async fn send(&mut self, text: String) -> Result<(), SimError> {
        self.outbox.push_back(text);
        self.flush().await
    }

    /// Writes the outbox. Cancel-safe: a message leaves the outbox only as the socket takes it.
    async fn flush(&mut self) -> Result<(), SimError> {
        if self.closing {
            self.outbox.clear();
        }
        while !self.outbox.is_empty() {
            poll_fn(|cx| self.ws.poll_ready_unpin(cx)).await?;
            if let Some(text) = self.outbox.pop_front() {
                self.ws.start_send_unpin(Message::text(text))?;
            }
        }
        poll_fn(|cx| self.ws.poll_flush_unpin(cx)).await?;
        Ok(())
    }

    /// The next thing ignis does on the stream; meanwhile marks are echoed as their audio ends.
    /// Audio is decoded into `audio`. A message Twilio would reject is an error.
    pub async fn recv(&mut self, audio: &mut Vec<u8>) -> Result<StreamEvent, SimError> {
        loop {
            self.flush().await?;
            let next_mark = self.playback.next_mark();
            let msg = tokio::select! {
                m = self.ws.next() => m,
                () = sleep_until(next_mark) => {
                    let now = Instant::now();
                    while let Some(name) = self.playback.due_mark(now) {
                        self.outbox.push_back(self.msgs.mark(&name));
                    }
                    continue;
                }
            };
            let now = Instant::now();
            let text = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(f))) => {
                    return Ok(StreamEvent::Closed(f.map(|f| u16::from(f.code))));
                }
                Some(Ok(Message::Binary(_))) => return Err(rules::Violation::Binary.into()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(StreamEvent::Dropped),
            };
            match rules::parse_outbound(text.as_str(), &self.msgs.ids().stream_sid)? {
                Outbound::Media(payload) => {
                    rules::decode_payload(&payload, audio)?;
                    let plays_at = self.playback.media(now, audio.len());
                    return Ok(StreamEvent::Media { at: now, plays_at });
                }
                Outbound::Mark(name) => {
                    self.playback.mark(now, name.clone());
                    return Ok(StreamEvent::Mark(name));
                }
                Outbound::Clear => {
                    for name in self.playback.clear(now) {
                        self.outbox.push_back(self.msgs.mark(&name));
                    }
                    self.flush().await?;
                    return Ok(StreamEvent::Clear(now));
                }
            }
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
