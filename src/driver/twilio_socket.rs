//! One call: the Media Streams WebSocket, the agent socket, and the bridge between them.
//!
//! One task per call drives both sockets and the [`Bridge`]'s timers with a single `select!`,
//! so a call's state lives in one place and a slow call can only slow itself. Everything the
//! bridge decides is written out after each input, agent messages before Twilio's.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tracing::{Instrument, debug, info, warn};

use super::agent::{self, AgentLink, AgentSocket, ConnectError};
use super::{Phase, Shared, TaskToken, transfer};
use crate::bridge::{Bridge, BridgeConfig, BridgeEvent, Output};
use crate::calls::{Outcome, RegisterError, TeardownReason};
use crate::metrics::Metrics;
use crate::twilio::media_stream::{self, MAX_MESSAGE_BYTES, Start, TwilioEvent};

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
/// Control messages for the agent held while its socket is still connecting.
const MAX_PENDING_TO_AGENT: usize = 64;
/// Time given to a close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

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

type LinkFuture = Pin<Box<dyn Future<Output = Result<AgentLink, ConnectError>> + Send>>;

/// Runs one Media Streams socket to its end.
pub(super) async fn run(
    ws: WebSocketStream<TcpStream>,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
    token: TaskToken,
) {
    let span = tracing::info_span!("call", call_sid = tracing::field::Empty);
    call(ws, shared, phase, span.clone()).instrument(span).await;
    drop(token);
}

fn now() -> std::time::Instant {
    super::instant()
}

#[derive(Default)]
struct Counters {
    messages: u64,
    bad_frames: u64,
}

impl Counters {
    fn bad_frame(&mut self, what: &str) {
        self.bad_frames += 1;
        if self.bad_frames <= MAX_BAD_FRAME_LOGS {
            warn!(
                bad_frames = self.bad_frames,
                "[Twilio] Bad frame ignored: {what}"
            );
        }
    }
}

/// Reads Twilio messages until `start`, or gives up.
async fn wait_for_start(
    twilio: &mut WebSocketStream<TcpStream>,
    counters: &mut Counters,
    phase: &mut watch::Receiver<Phase>,
) -> Result<Start, Outcome> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        let msg = tokio::select! {
            m = tokio::time::timeout_at(deadline, twilio.next()) => m,
            () = closing(phase) => return Err(Outcome::ServerShutdown),
        };
        let text = match msg {
            Err(_) => {
                warn!("[Twilio] No start message in time; closing");
                return Err(Outcome::StreamLost);
            }
            Ok(None) | Ok(Some(Err(_))) => return Err(Outcome::StreamLost),
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(Message::Close(_)))) => return Err(Outcome::StreamLost),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(_))) => {
                counters.bad_frame("binary frame");
                continue;
            }
        };
        counters.messages += 1;
        match media_stream::parse(text.as_str()) {
            Ok(TwilioEvent::Start(start)) => return Ok(start),
            Ok(TwilioEvent::Stop) => return Err(Outcome::CallerHungUp),
            Ok(TwilioEvent::Connected | TwilioEvent::Unknown) => {}
            Ok(_) => counters.bad_frame("message before start"),
            Err(e) => counters.bad_frame(&e.to_string()),
        }
    }
}

async fn call(
    mut twilio: WebSocketStream<TcpStream>,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    span: tracing::Span,
) {
    let app = shared.app.clone();
    let config = app.config.clone();
    let stream_id = NEXT_STREAM_ID.fetch_add(1, Ordering::Relaxed);
    let started = tokio::time::Instant::now();
    let mut counters = Counters::default();

    let start = match wait_for_start(&mut twilio, &mut counters, &mut phase).await {
        Ok(s) => s,
        Err(outcome) => {
            close_twilio(&mut twilio, outcome).await;
            info!(
                outcome = outcome.as_str(),
                "[Twilio] Stream ended before start"
            );
            return;
        }
    };
    let call_sid = start.call_sid.clone();
    span.record("call_sid", call_sid.as_str());

    let (teardown_tx, mut teardown_rx) = watch::channel::<Option<TeardownReason>>(None);
    let teardown = Arc::new(move |reason| {
        let _ = teardown_tx.send(Some(reason));
    });
    if let Err(e) = app.calls.register(&call_sid, stream_id, teardown, now()) {
        let outcome = match e {
            RegisterError::AlreadyEnded => Outcome::CallerHungUp,
            _ => Outcome::Refused,
        };
        warn!(error = ?e, "[Twilio] Stream refused");
        close_twilio(&mut twilio, outcome).await;
        return;
    }
    info!(
        stream_sid = %start.stream_sid,
        encoding = %start.encoding,
        sample_rate = start.sample_rate,
        "[Twilio] Stream started"
    );

    // The agent: adopt the pre-connected socket, or connect now.
    let param = |name: &str| {
        start
            .custom_parameters
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (caller, called) = (param("caller"), param("called"));
    let link_timeout = config.elevenlabs_connect_timeout * 3;
    let mut link: LinkFuture = match shared.preconnects.adopt(&call_sid) {
        Some(rx) => {
            debug!("[ElevenLabs] Adopting the pre-connected agent");
            Box::pin(async move {
                match tokio::time::timeout(link_timeout, rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err(ConnectError::Closed),
                    Err(_) => Err(ConnectError::Connect("timed out".into())),
                }
            })
        }
        None => {
            let app = app.clone();
            let tls = shared.tls.clone();
            let (sid, caller, called) = (call_sid.clone(), caller.clone(), called.clone());
            Box::pin(async move {
                let config = app.config.clone();
                let vars = agent::call_variables(&app, &sid, &caller, &called);
                let t0 = tokio::time::Instant::now();
                match tokio::time::timeout(link_timeout, agent::connect(&config, &tls, &vars)).await
                {
                    Ok(Ok(ws)) => Ok(AgentLink {
                        ws,
                        early: Vec::new(),
                        connect_time: t0.elapsed(),
                    }),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(ConnectError::Connect("timed out".into())),
                }
            })
        }
    };

    let mut bridge = Bridge::new(BridgeConfig {
        dtmf: config.dtmf_mode,
        agent_silence_timeout: config.agent_silence_timeout,
        ..BridgeConfig::default()
    });
    bridge.handle_twilio(now(), TwilioEvent::Start(start));
    let mut agent_ws: Option<AgentSocket> = None;
    let mut link_pending = true;
    let mut pending_to_agent: VecDeque<String> = VecDeque::new();
    let (transfer_tx, mut transfer_rx) = mpsc::channel::<(String, bool)>(4);
    let mut last_twilio = tokio::time::Instant::now();
    let mut agent_connect_ms = None;
    let mut transfers_in_flight = 0usize;

    // Timers and end signals live for the whole call and are re-armed only when needed. Built
    // afresh on every turn of the loop (a `timeout` around each read, a `sleep_until`, a
    // `changed()` and a `wait_for()`), they registered and removed two timer-wheel entries and
    // two waiters per message (issue 6 profile).
    //
    // The silence timer is re-armed lazily: a read only moves `last_twilio`; when the timer
    // fires early it is pushed to `last_twilio + SILENCE_TIMEOUT`.
    let silence = tokio::time::sleep_until(last_twilio + SILENCE_TIMEOUT);
    tokio::pin!(silence);
    // The bridge's next deadline; `armed` is what the timer is set to (`None`: disarmed).
    let bridge_timer = tokio::time::sleep_until(last_twilio);
    tokio::pin!(bridge_timer);
    let mut armed: Option<tokio::time::Instant> = None;
    let stopped = async move {
        tokio::select! {
            _ = teardown_rx.changed() => {
                let reason = *teardown_rx.borrow();
                match reason {
                    Some(TeardownReason::Shutdown) => Outcome::ServerShutdown,
                    _ => Outcome::CallerHungUp,
                }
            }
            () = closing(&mut phase) => Outcome::ServerShutdown,
        }
    };
    tokio::pin!(stopped);

    let metrics = &app.metrics;
    let outcome = 'call: loop {
        let deadline = bridge.poll_timeout().map(tokio::time::Instant::from_std);
        if deadline != armed {
            if let Some(d) = deadline {
                bridge_timer.as_mut().reset(d);
            }
            armed = deadline;
        }
        // When the message being handled was read, for the added-latency histograms.
        let mut caller_frame_read: Option<std::time::Instant> = None;
        let mut agent_audio_read: Option<std::time::Instant> = None;
        tokio::select! {
            // Fixed order, rare signals first: a peer flooding its own stream cannot starve its
            // call's shutdown, and no random number is drawn per wake-up.
            biased;
            outcome = &mut stopped => {
                break 'call finish(&mut twilio, &mut agent_ws, &app, &call_sid, stream_id, outcome).await;
            }
            r = &mut link, if link_pending => {
                link_pending = false;
                match r {
                    Ok(l) => {
                        agent_connect_ms = Some(l.connect_time.as_millis() as u64);
                        bridge.handle_agent_connected(now());
                        for text in &l.early {
                            bridge.handle_agent_text(now(), text);
                        }
                        agent_ws = Some(l.ws);
                    }
                    Err(e) => {
                        warn!(error = %e, "[ElevenLabs] Cannot reach the agent");
                        bridge.handle_agent_failed();
                    }
                }
            }
            Some((id, ok)) = transfer_rx.recv(), if transfers_in_flight > 0 => {
                transfers_in_flight -= 1;
                bridge.transfer_done(&id, ok);
            }
            () = &mut silence => {
                let due = last_twilio + SILENCE_TIMEOUT;
                if due > tokio::time::Instant::now() {
                    silence.as_mut().reset(due);
                } else {
                    warn!("[Twilio] Stream silent too long; closing");
                    break 'call finish(&mut twilio, &mut agent_ws, &app, &call_sid, stream_id, Outcome::StreamLost).await;
                }
            }
            () = &mut bridge_timer, if armed.is_some() => {
                armed = None;
                bridge.handle_timeout(now());
            }
            m = twilio.next() => {
                last_twilio = tokio::time::Instant::now();
                match m {
                    Some(Ok(Message::Text(text))) => {
                        counters.messages += 1;
                        match media_stream::parse(text.as_str()) {
                            Ok(TwilioEvent::Start(_)) => counters.bad_frame("second start"),
                            Ok(event) => {
                                let t = now();
                                if let TwilioEvent::Media(m) = &event {
                                    caller_frame_read = Some(t);
                                    Metrics::add(&metrics.frames_from_caller, 1);
                                    Metrics::add(&metrics.bytes_from_caller, m.payload.len() as u64);
                                }
                                bridge.handle_twilio(t, event);
                            }
                            Err(e) => counters.bad_frame(&e.to_string()),
                        }
                    }
                    Some(Ok(Message::Binary(_) | Message::Frame(_))) => counters.bad_frame("binary frame"),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        break 'call finish(&mut twilio, &mut agent_ws, &app, &call_sid, stream_id, Outcome::StreamLost).await;
                    }
                }
            }
            m = next_agent(&mut agent_ws) => match m {
                Some(Ok(Message::Text(text))) => {
                    let t = now();
                    if text.as_str().contains("\"audio_event\"") {
                        agent_audio_read = Some(t);
                    }
                    bridge.handle_agent_text(t, text.as_str());
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code));
                    agent_ws = None;
                    bridge.handle_agent_closed(now(), code);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    debug!(error = %e, "[ElevenLabs] Agent socket error");
                    agent_ws = None;
                    bridge.handle_agent_closed(now(), None);
                }
                None => {
                    agent_ws = None;
                    bridge.handle_agent_closed(now(), None);
                }
            },
        }

        // Write out what the bridge produced.
        let mut wrote_twilio = false;
        let mut wrote_agent = false;
        while let Some(out) = bridge.poll_transmit() {
            match out {
                Output::ToAgent(text) => match agent_ws.as_mut() {
                    Some(a) => {
                        while let Some(p) = pending_to_agent.pop_front() {
                            let _ = a.feed(Message::text(p)).await;
                        }
                        let len = text.len() as u64;
                        if a.feed(Message::text(text)).await.is_ok() {
                            wrote_agent = true;
                            Metrics::add(&metrics.bytes_to_agent, len);
                        }
                    }
                    None if link_pending && pending_to_agent.len() < MAX_PENDING_TO_AGENT => {
                        pending_to_agent.push_back(text);
                    }
                    None => {}
                },
                Output::ToTwilio(text) => {
                    if twilio.feed(Message::text(text)).await.is_ok() {
                        wrote_twilio = true;
                    }
                }
            }
        }
        if wrote_agent && let Some(a) = agent_ws.as_mut() {
            let _ = a.flush().await;
            if let Some(t) = caller_frame_read {
                metrics
                    .added_latency_inbound
                    .observe(now().saturating_duration_since(t));
            }
        }
        if wrote_twilio {
            let _ = twilio.flush().await;
            if let Some(t) = agent_audio_read {
                metrics
                    .added_latency_outbound
                    .observe(now().saturating_duration_since(t));
            }
        }
        while let Some(event) = bridge.poll_event() {
            match event {
                BridgeEvent::CloseAgent => close_agent(&mut agent_ws).await,
                BridgeEvent::CloseTwilio(outcome) => {
                    break 'call finish(
                        &mut twilio,
                        &mut agent_ws,
                        &app,
                        &call_sid,
                        stream_id,
                        outcome,
                    )
                    .await;
                }
                BridgeEvent::Transfer { tool_call_id } => {
                    let config = config.clone();
                    let tls = shared.tls.clone();
                    let call_sid = call_sid.clone();
                    let tx = transfer_tx.clone();
                    transfers_in_flight += 1;
                    let number = config.fallback_number.clone().or_else(|| {
                        app.practice
                            .as_ref()
                            .and_then(|p| p.config().staff_transfer_number.clone())
                    });
                    tokio::spawn(
                        async move {
                            let ok = transfer::transfer_to_staff(
                                &config,
                                &tls,
                                number.as_deref(),
                                &call_sid,
                            )
                            .await;
                            let _ = tx.send((tool_call_id, ok)).await;
                        }
                        .instrument(tracing::Span::current()),
                    );
                }
            }
        }
    };

    let stats = bridge.stats();
    let (inbound, outbound) = bridge.audio_stats();
    let playout = outbound.map(|o| o.playout).unwrap_or_default();
    metrics.call_finished(outcome);
    Metrics::add(&metrics.frames_to_caller, playout.frames_sent);
    Metrics::add(
        &metrics.concealed_ms,
        inbound.map_or(0, |i| i.jitter.concealed_ms as u64),
    );
    Metrics::add(&metrics.underruns, playout.underruns);
    Metrics::add(&metrics.interruptions, stats.session.interruptions);
    Metrics::add(
        &metrics.bad_frames,
        counters.bad_frames
            + stats.bad_caller_frames
            + stats.bad_agent_chunks
            + stats.session.bad_messages,
    );
    if let Some(ms) = agent_connect_ms {
        metrics.agent_connect.observe(Duration::from_millis(ms));
    }
    if let Some(d) = stats.first_audio_after_start {
        metrics.time_to_first_audio.observe(d);
    }
    info!(
        outcome = outcome.as_str(),
        duration_ms = started.elapsed().as_millis() as u64,
        conversation_id = bridge.conversation_id().unwrap_or(""),
        agent_connect_ms,
        first_audio_ms = stats.first_audio_after_start.map(|d| d.as_millis() as u64),
        caller_frames = stats.caller_frames,
        agent_chunks_sent = stats.agent_chunks_sent,
        frames_to_caller = playout.frames_sent,
        concealed_ms = inbound.map_or(0.0, |i| i.jitter.concealed_ms),
        underruns = playout.underruns,
        interruptions = stats.session.interruptions,
        dtmf = stats.dtmf,
        bad_frames = counters.bad_frames + stats.bad_caller_frames,
        bad_agent_messages = stats.session.bad_messages,
        unknown_agent_events = stats.session.unknown_events,
        "[Call] Summary"
    );
}

/// Records the outcome first (Twilio asks `stream-ended` as soon as the socket closes), then
/// closes both sockets.
async fn finish(
    twilio: &mut WebSocketStream<TcpStream>,
    agent: &mut Option<AgentSocket>,
    app: &crate::routes::App,
    call_sid: &str,
    stream_id: u64,
    outcome: Outcome,
) -> Outcome {
    app.calls.finish(call_sid, stream_id, outcome, now());
    if let Some(p) = &app.practice {
        // The call's tool token dies with the call (plus a short grace).
        p.end_call(call_sid, super::practice_now());
    }
    close_agent(agent).await;
    close_twilio(twilio, outcome).await;
    outcome
}

async fn close_agent(agent: &mut Option<AgentSocket>) {
    if let Some(mut a) = agent.take() {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, a.close(Some(frame))).await;
    }
}

async fn close_twilio(ws: &mut WebSocketStream<TcpStream>, outcome: Outcome) {
    let code = match outcome {
        Outcome::ServerShutdown => CloseCode::Away,
        _ => CloseCode::Normal,
    };
    let frame = CloseFrame {
        code,
        reason: "".into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let _ = ws.send(Message::Close(Some(frame))).await;
        // Wait briefly for the peer's close reply so the TCP close is orderly.
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
}

async fn next_agent(
    agent: &mut Option<AgentSocket>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match agent {
        Some(a) => a.next().await,
        None => std::future::pending().await,
    }
}

/// Resolves once the server enters [`Phase::Closing`] (never, if the sender is gone).
async fn closing(phase: &mut watch::Receiver<Phase>) {
    if phase.wait_for(|p| *p == Phase::Closing).await.is_err() {
        std::future::pending::<()>().await;
    }
}
