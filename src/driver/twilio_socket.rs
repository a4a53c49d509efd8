//! The Media Streams WebSocket of one call: reads Twilio's messages, registers the call, and
//! closes cleanly on `stop`, teardown (status callback) or shutdown.
//!
//! For now it parses and logs the typed events; the bridge connects them to the agent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tracing::{Instrument, debug, info, warn};

use super::{Phase, TaskToken};
use crate::calls::{Outcome, RegisterError, TeardownReason};
use crate::routes::App;
use crate::twilio::media_stream::{self, MAX_MESSAGE_BYTES, TwilioEvent};

/// Time allowed between the upgrade and Twilio's `start` message.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed without any message from Twilio once streaming (it sends 50 frames a second).
const SILENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bad frames logged per call; the rest are only counted, so a broken peer cannot flood logs.
const MAX_BAD_FRAME_LOGS: u64 = 10;
/// Read buffer of a stream socket: a call needs kilobytes, not the crate's 128 KiB default.
const WS_READ_BUFFER_BYTES: usize = 4 * 1024;
/// Most outbound bytes queued on a stream socket before writes fail (~10 s of audio as JSON).
const WS_MAX_WRITE_BUFFER_BYTES: usize = 256 * 1024;

static NEXT_STREAM_ID: AtomicU64 = AtomicU64::new(1);

/// WebSocket limits for the stream socket: small buffers, bounded messages, and eager writes
/// (a write buffer of 0 sends each message at once: latency over batching).
pub(super) fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(WS_MAX_WRITE_BUFFER_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

#[derive(Default)]
struct Counters {
    messages: u64,
    media_frames: u64,
    media_bytes_b64: u64,
    dtmf: u64,
    marks: u64,
    bad_frames: u64,
}

/// Runs one Media Streams socket to its end.
pub(super) async fn run(
    ws: WebSocketStream<TcpStream>,
    app: Arc<App>,
    phase: watch::Receiver<Phase>,
    token: TaskToken,
) {
    let span = tracing::info_span!("call", call_sid = tracing::field::Empty);
    session(ws, app, phase, span.clone()).instrument(span).await;
    drop(token);
}

async fn session(
    mut ws: WebSocketStream<TcpStream>,
    app: Arc<App>,
    mut phase: watch::Receiver<Phase>,
    span: tracing::Span,
) {
    let stream_id = NEXT_STREAM_ID.fetch_add(1, Ordering::Relaxed);
    let started = tokio::time::Instant::now();
    let (teardown_tx, mut teardown_rx) = watch::channel::<Option<TeardownReason>>(None);
    let teardown_tx = Arc::new(teardown_tx);
    let mut call_sid: Option<String> = None;
    let mut counters = Counters::default();

    let outcome = loop {
        let limit = if call_sid.is_some() {
            SILENCE_TIMEOUT
        } else {
            START_TIMEOUT
        };
        let msg = tokio::select! {
            m = tokio::time::timeout(limit, ws.next()) => m,
            _ = teardown_rx.changed() => {
                let reason = *teardown_rx.borrow();
                break match reason {
                    Some(TeardownReason::Shutdown) => close(&mut ws, CloseCode::Away, Outcome::ServerShutdown).await,
                    _ => close(&mut ws, CloseCode::Normal, Outcome::CallerHungUp).await,
                };
            }
            _ = closing(&mut phase) => {
                break close(&mut ws, CloseCode::Away, Outcome::ServerShutdown).await;
            }
        };
        let msg = match msg {
            Err(_) => {
                warn!(
                    started = call_sid.is_some(),
                    "[Twilio] Stream silent too long; closing"
                );
                break close(&mut ws, CloseCode::Policy, Outcome::StreamLost).await;
            }
            Ok(None) => break Outcome::StreamLost,
            Ok(Some(Err(e))) => {
                debug!(error = %e, "[Twilio] Stream socket error");
                break Outcome::StreamLost;
            }
            Ok(Some(Ok(m))) => m,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => break Outcome::StreamLost,
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Binary(_) | Message::Frame(_) => {
                bad_frame(&mut counters, "binary frame");
                continue;
            }
        };
        counters.messages += 1;
        let event = match media_stream::parse(text.as_str()) {
            Ok(e) => e,
            Err(e) => {
                bad_frame(&mut counters, &e.to_string());
                continue;
            }
        };
        match event {
            TwilioEvent::Connected => debug!("[Twilio] Stream connected"),
            TwilioEvent::Start(start) => {
                if call_sid.is_some() {
                    bad_frame(&mut counters, "second start");
                    continue;
                }
                span.record("call_sid", start.call_sid.as_str());
                let tx = teardown_tx.clone();
                let teardown = Arc::new(move |reason| {
                    let _ = tx.send(Some(reason));
                });
                match app.calls.register(
                    &start.call_sid,
                    stream_id,
                    teardown,
                    crate::driver::now().instant,
                ) {
                    Ok(()) => {}
                    Err(RegisterError::AlreadyEnded) => {
                        info!("[Twilio] Stream for a call already reported ended; closing");
                        break close(&mut ws, CloseCode::Normal, Outcome::CallerHungUp).await;
                    }
                    Err(e) => {
                        warn!(error = ?e, "[Twilio] Stream refused");
                        break close(&mut ws, CloseCode::Policy, Outcome::Refused).await;
                    }
                }
                info!(
                    stream_sid = %start.stream_sid,
                    encoding = %start.encoding,
                    sample_rate = start.sample_rate,
                    parameters = start.custom_parameters.len(),
                    "[Twilio] Stream started"
                );
                call_sid = Some(start.call_sid);
            }
            TwilioEvent::Media(m) => {
                counters.media_frames += 1;
                counters.media_bytes_b64 += m.payload.len() as u64;
            }
            TwilioEvent::Dtmf { .. } => {
                counters.dtmf += 1;
                debug!("[Twilio] DTMF received");
            }
            TwilioEvent::Mark { .. } => counters.marks += 1,
            TwilioEvent::Stop => {
                info!("[Twilio] Stream stopped by Twilio");
                break close(&mut ws, CloseCode::Normal, Outcome::CallerHungUp).await;
            }
            TwilioEvent::Unknown => debug!("[Twilio] Unknown event ignored"),
        }
    };

    if let Some(sid) = &call_sid {
        app.calls
            .finish(sid, stream_id, outcome, crate::driver::now().instant);
    }
    info!(
        outcome = outcome.as_str(),
        duration_ms = started.elapsed().as_millis() as u64,
        messages = counters.messages,
        media_frames = counters.media_frames,
        media_b64_bytes = counters.media_bytes_b64,
        dtmf = counters.dtmf,
        marks = counters.marks,
        bad_frames = counters.bad_frames,
        "[Twilio] Stream ended"
    );
}

/// Resolves once the server enters [`Phase::Closing`] (never, if the sender is gone).
async fn closing(phase: &mut watch::Receiver<Phase>) {
    if phase.wait_for(|p| *p == Phase::Closing).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn bad_frame(counters: &mut Counters, what: &str) {
    counters.bad_frames += 1;
    if counters.bad_frames <= MAX_BAD_FRAME_LOGS {
        warn!(
            bad_frames = counters.bad_frames,
            "[Twilio] Bad frame ignored: {what}"
        );
    }
}

/// Sends a close frame (best effort) and returns `outcome`.
async fn close(ws: &mut WebSocketStream<TcpStream>, code: CloseCode, outcome: Outcome) -> Outcome {
    let frame = CloseFrame {
        code,
        reason: "".into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = ws.send(Message::Close(Some(frame))).await;
        // Wait briefly for the peer's close reply so the TCP close is orderly.
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
    outcome
}
