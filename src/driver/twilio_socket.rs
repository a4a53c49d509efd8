//! One call: the Media Streams WebSocket, the agent socket, and the bridge between them.
//!
//! One task per call drives both sockets and the [`Bridge`]'s timers with a single `select!`,
//! so a call's state lives in one place and a slow call can only slow itself. Everything the
//! bridge decides is written out after each input, agent messages before Twilio's.
//!
//! This is an adapter, as tokio-tungstenite is for tungstenite: it reads, writes and runs
//! timers. What a message means, where a transfer goes and what a call adds to the metrics are
//! decided by the [`Bridge`], the ElevenLabs parser and [`Metrics::record_call`].

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::{Instrument, debug, info, warn};

use super::agent::{self, AgentLink, AgentSocket, ConnectError, LinkFuture};
use super::agent_socket::AgentRead;
use super::connection::end_unstreamed_call;
use super::wake_gate::{Gate, GateSet};
use super::{Phase, Shared, TaskToken, transfer};
use crate::audio::pipeline::{AudioStages, DspPool, PoolLink};
use crate::bridge::{Bridge, BridgeConfig, BridgeEvent, Output, TransferNumbers};
use crate::calls::{Claim, Outcome, RegisterError, StreamRefusal, TeardownReason};
use crate::elevenlabs::messages::AgentEventKind;
use crate::metrics::{CallSummary, Metrics};
use crate::practice::store::CallEnd;
use crate::routes::App;
use crate::twilio::media_stream::{self, MAX_MESSAGE_BYTES, Start, TwilioEvent};

/// Time allowed between the upgrade and Twilio's `start` message.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed without any message from Twilio once streaming (it sends 50 frames a second).
const SILENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bad frames logged per call; the rest are only counted, so a broken peer cannot flood logs.
const MAX_BAD_FRAME_LOGS: u64 = 10;
/// Read buffer of a stream socket, held for the whole call: sized for Twilio's messages (a
/// `media` frame is ~0.4 KiB of JSON), not the crate's 128 KiB default. A larger message (the
/// `start` with its parameters) grows it as it arrives, up to [`MAX_MESSAGE_BYTES`]; a burst
/// after a network stall is read 1 KiB at a time. 4 KiB cost 3 KiB more RSS per call (issue 16).
const WS_READ_BUFFER_BYTES: usize = 1024;
/// Most outbound bytes queued on a stream socket before writes fail (~10 s of audio as JSON).
const WS_MAX_WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// Control messages for the agent held while its socket is still connecting.
const MAX_PENDING_TO_AGENT: usize = 64;
/// Time given to a close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Time one turn's writes may take. A peer that stops reading (gone without a FIN, or a zero
/// window) would otherwise hold the call's loop, and with it every timer that could end the
/// call, until TCP gives up (minutes; never for a zero window). A turn writes a few KiB.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Transfer results waiting to be read; the bridge lets a call have one transfer in flight.
const TRANSFER_RESULTS: usize = 4;

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

/// What a stream task holds besides its socket and claim.
pub(super) struct Socket {
    pub shared: Arc<Shared>,
    pub phase: watch::Receiver<Phase>,
    pub token: TaskToken,
}

/// Runs the Media Streams socket of `claim` (the voice webhook's call) to its end.
pub(super) async fn run(ws: WebSocketStream<TcpStream>, claim: Claim, socket: Socket) {
    let replica = socket.shared.app.replica().unwrap_or("").to_owned();
    let span = tracing::info_span!("call", call_sid = %claim.call.call_sid, replica = %replica);
    let Socket {
        shared,
        phase,
        token,
    } = socket;
    call(ws, claim, shared, phase).instrument(span).await;
    drop(token);
}

/// Checks `start` against the voice webhook's record: the same CallSid, and an AccountSid that
/// is well formed, the webhook's, and `TWILIO_ACCOUNT_SID` when configured
/// (docs/twilio.md §8).
fn check_start(start: &Start, claim: &Claim, app: &App) -> Result<(), StreamRefusal> {
    if start.call_sid != claim.call.call_sid.as_str() {
        return Err(StreamRefusal::CallSidMismatch);
    }
    let account = crate::twilio::webhook::AccountSid::parse(&start.account_sid);
    let configured = app.config.twilio_account_sid.as_deref();
    match account {
        Some(a) if a == claim.call.account_sid && configured.is_none_or(|c| c == a.as_str()) => {
            Ok(())
        }
        _ => Err(StreamRefusal::AccountMismatch),
    }
}

fn now() -> Instant {
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

/// The call from Twilio's `start` to its end: checks `start` against the claim, registers the
/// stream, starts the agent link with the webhook's numbers, runs the loop, then records the
/// summary. A refused stream ends before its own agent link or bridge (audio) exists; the
/// webhook's pre-connected agent and practice record end with it ([`end_unstreamed_call`]).
async fn call(
    mut twilio: WebSocketStream<TcpStream>,
    claim: Claim,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) {
    let app = shared.app.clone();
    let stream_id = claim.stream_id;
    let call_sid = claim.call.call_sid.as_str().to_owned();
    let started = tokio::time::Instant::now();
    let mut counters = Counters::default();

    let start = match wait_for_start(&mut twilio, &mut counters, &mut phase).await {
        Ok(s) => s,
        Err(outcome) => {
            end_unstreamed_call(&shared, &call_sid, stream_id, outcome);
            close_twilio(&mut twilio, outcome).await;
            info!(
                outcome = outcome.as_str(),
                "[Twilio] Stream ended before start"
            );
            return;
        }
    };
    if let Err(reason) = check_start(&start, &claim, &app) {
        app.refuse_stream(reason, Some(&call_sid));
        end_unstreamed_call(&shared, &call_sid, stream_id, Outcome::Refused);
        close_twilio(&mut twilio, Outcome::Refused).await;
        return;
    }
    let (teardown_tx, teardown_rx) = watch::channel::<Option<TeardownReason>>(None);
    let teardown = Arc::new(move |reason| {
        let _ = teardown_tx.send(Some(reason));
    });
    if let Err(e) = app.calls.register(&call_sid, stream_id, teardown, now()) {
        let outcome = match e {
            RegisterError::AlreadyEnded => Outcome::CallerHungUp,
            _ => Outcome::Refused,
        };
        warn!(error = ?e, "[Twilio] Stream refused");
        end_unstreamed_call(&shared, &call_sid, stream_id, outcome);
        close_twilio(&mut twilio, outcome).await;
        return;
    }
    super::fleet::spawn_live(&app, &call_sid);
    info!(
        stream_sid = %start.stream_sid,
        encoding = %start.encoding,
        sample_rate = start.sample_rate,
        "[Twilio] Stream started"
    );

    // The numbers are the signed webhook's, never `start.customParameters` (unsigned).
    let (from, to) = (claim.call.from, claim.call.to);
    let (caller, called) = (from.as_str().into(), to.as_str().into());
    let link = agent::link(&shared, &call_sid, caller, called);
    let audio_ready = Arc::new(Notify::new());
    // The bridge is built in a plain function, never bound here: a local of this async fn
    // stays in its state machine after it is moved (2.6 KiB more per call, issue 16 RSS).
    let bridge = started_bridge(&app, &audio_ready, start);
    let mut call = Call::new(
        twilio,
        bridge,
        shared,
        call_sid,
        stream_id,
        counters,
        audio_ready,
    );
    let outcome = call.run(link, stopped(teardown_rx, phase)).await;
    call.record(outcome, started.elapsed());
}

/// The process-wide DSP pool (`AUDIO_STAGES=pipeline`), started by the first call that needs
/// it; `None` if its threads could not start (calls then run their DSP inline).
fn dsp_pool() -> Option<Arc<DspPool>> {
    static POOL: std::sync::OnceLock<Option<Arc<DspPool>>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| match DspPool::with_default_workers() {
        Ok(p) => {
            info!(workers = p.workers(), "[Audio] DSP pool started");
            Some(p)
        }
        Err(e) => {
            warn!(error = %e, "[Audio] DSP pool unavailable; running the DSP inline");
            None
        }
    })
    .clone()
}

/// The call's bridge, its Twilio stream started.
fn started_bridge(app: &App, audio_ready: &Arc<Notify>, start: Start) -> Bridge {
    let mut bridge = Bridge::new(bridge_config(app, audio_ready));
    bridge.handle_twilio(now(), TwilioEvent::Start(start));
    bridge
}

/// The bridge's settings for a call of `app`; `audio_ready` is the call's wake-up from the DSP
/// pool.
fn bridge_config(app: &App, audio_ready: &Arc<Notify>) -> BridgeConfig {
    let pool = match app.config.audio_stages {
        AudioStages::Inline => None,
        AudioStages::Pipeline => dsp_pool().map(|pool| {
            let n = Arc::clone(audio_ready);
            PoolLink {
                pool,
                wake: Arc::new(move || n.notify_one()),
            }
        }),
    };
    let staff_line = app
        .practice
        .as_ref()
        .and_then(|p| p.config().staff_transfer_number.clone());
    BridgeConfig {
        dtmf: app.config.dtmf_mode,
        agent_silence_timeout: app.config.agent_silence_timeout,
        transfer: TransferNumbers {
            fallback: app.config.fallback_number.clone(),
            staff_line,
        },
        pool,
        ..BridgeConfig::default()
    }
}

/// Resolves when the call must end from outside: Twilio reported it over, or the server is
/// closing.
async fn stopped(
    mut teardown: watch::Receiver<Option<TeardownReason>>,
    mut phase: watch::Receiver<Phase>,
) -> Outcome {
    tokio::select! {
        _ = teardown.changed() => {
            let reason = *teardown.borrow();
            match reason {
                Some(TeardownReason::Shutdown) => Outcome::ServerShutdown,
                _ => Outcome::CallerHungUp,
            }
        }
        () = closing(&mut phase) => Outcome::ServerShutdown,
    }
}

/// When the message handled in this turn of the loop was read, for the added-latency
/// histograms.
#[derive(Default)]
struct ReadAt {
    caller_frame: Option<Instant>,
    agent_audio: Option<Instant>,
    /// This turn handled the DSP pool's results for reads of earlier turns.
    pool_results: bool,
}

/// The socket a turn is writing to: the peer a stalled write is blamed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writing {
    Twilio,
    Agent,
}

/// One running call: its two sockets, its bridge, and the little state the I/O needs.
struct Call {
    twilio: WebSocketStream<TcpStream>,
    /// The agent socket, once linked and until closed.
    agent: Option<AgentSocket>,
    bridge: Bridge,
    shared: Arc<Shared>,
    call_sid: String,
    stream_id: u64,
    counters: Counters,
    /// Whether the agent link is still being established.
    link_pending: bool,
    /// Control messages for the agent written while its link is pending.
    pending_to_agent: VecDeque<bytes::Bytes>,
    transfer_tx: mpsc::Sender<(String, bool)>,
    transfer_rx: mpsc::Receiver<(String, bool)>,
    transfers_in_flight: usize,
    /// Whether a transfer to the staff line succeeded (the staff page shows the call as
    /// transferred).
    transferred: bool,
    /// When Twilio last sent anything (the silence timer is re-armed from it).
    last_twilio: tokio::time::Instant,
    agent_connect_ms: Option<u64>,
    /// Woken by the DSP pool when it has results for this call (`AUDIO_STAGES=pipeline`).
    audio_ready: Arc<Notify>,
    /// With the DSP pool, reads whose audio has not been written yet: it is written in a later
    /// turn of the loop (after the pool's wake-up), where the added latency is observed.
    unsent: ReadAt,
    writing: Writing,
}

impl Call {
    fn new(
        twilio: WebSocketStream<TcpStream>,
        bridge: Bridge,
        shared: Arc<Shared>,
        call_sid: String,
        stream_id: u64,
        counters: Counters,
        audio_ready: Arc<Notify>,
    ) -> Call {
        let (transfer_tx, transfer_rx) = mpsc::channel(TRANSFER_RESULTS);
        Call {
            twilio,
            agent: None,
            bridge,
            shared,
            call_sid,
            stream_id,
            counters,
            link_pending: true,
            pending_to_agent: VecDeque::new(),
            transfer_tx,
            transfer_rx,
            transfers_in_flight: 0,
            transferred: false,
            last_twilio: tokio::time::Instant::now(),
            agent_connect_ms: None,
            audio_ready,
            unsent: ReadAt::default(),
            writing: Writing::Twilio,
        }
    }

    /// Runs the call until it ends; both sockets are closed on return.
    async fn run(
        &mut self,
        mut link: LinkFuture,
        stopped: impl Future<Output = Outcome>,
    ) -> Outcome {
        // Timers and end signals live for the whole call and are re-armed only when needed.
        // Built afresh on every turn of the loop (a `timeout` around each read, a
        // `sleep_until`, a `changed()` and a `wait_for()`), they registered and removed two
        // timer-wheel entries and two waiters per message (issue 6 profile).
        //
        // The silence timer is re-armed lazily: a read only moves `last_twilio`; when the timer
        // fires early it is pushed to `last_twilio + SILENCE_TIMEOUT`.
        let silence = tokio::time::sleep_until(self.last_twilio + SILENCE_TIMEOUT);
        tokio::pin!(silence);
        // The bridge's next deadline; `armed` is what the timer is set to (`None`: disarmed).
        // While the caller's frames flow they pace the playout and this timer does not fire;
        // its deadline moves only when a top-up is sent (~12 times a second while the agent
        // speaks), so re-arming on a change is cheap (docs/dsp.md §3.7).
        let bridge_timer = tokio::time::sleep_until(self.last_twilio);
        tokio::pin!(bridge_timer);
        let mut armed: Option<tokio::time::Instant> = None;
        let pooled = self.bridge.uses_pool();
        tokio::pin!(stopped);
        // The end signal and the two sockets are polled only once they woke (wake_gate.rs): a
        // caller frame no longer polls the agent socket and the end signal too.
        let gates = Arc::new(GateSet::default());
        let (stop_gate, twilio_gate, agent_gate) =
            (Gate::new(&gates), Gate::new(&gates), Gate::new(&gates));
        loop {
            let deadline = self
                .bridge
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            if deadline != armed {
                if let Some(d) = deadline {
                    bridge_timer.as_mut().reset(d);
                }
                armed = deadline;
            }
            let mut read = ReadAt::default();
            let ended = tokio::select! {
                // Fixed order, rare signals first: a peer flooding its own stream cannot starve
                // its call's shutdown, and no random number is drawn per wake-up.
                biased;
                outcome = poll_fn(|cx| stop_gate.poll(cx, |g| stopped.as_mut().poll(g))) => {
                    Some(outcome)
                }
                r = &mut link, if self.link_pending => {
                    self.on_link(r);
                    // Whatever the link brought (a pre-connected socket may hold data already)
                    // is polled next turn, not only after a wake-up.
                    agent_gate.open();
                    None
                }
                Some((id, ok)) = self.transfer_rx.recv(), if self.transfers_in_flight > 0 => {
                    self.transfers_in_flight -= 1;
                    self.transferred |= ok;
                    self.bridge.transfer_done(&id, ok);
                    None
                }
                () = &mut silence => {
                    let due = self.last_twilio + SILENCE_TIMEOUT;
                    if due > tokio::time::Instant::now() {
                        silence.as_mut().reset(due);
                        None
                    } else {
                        warn!("[Twilio] Stream silent too long; closing");
                        Some(Outcome::StreamLost)
                    }
                }
                // One wake-up per pool batch; `notify_one` keeps a permit, so none is lost.
                // Inline there is no pool to wait for: not polled (a lock per wake-up).
                () = self.audio_ready.notified(), if pooled => {
                    read = std::mem::take(&mut self.unsent);
                    read.pool_results = true;
                    self.bridge.handle_audio_ready(now());
                    None
                }
                () = &mut bridge_timer, if armed.is_some() => {
                    armed = None;
                    self.bridge.handle_timeout(now());
                    None
                }
                m = poll_fn(|cx| twilio_gate.poll(cx, |g| self.twilio.poll_next_unpin(g))) => {
                    self.on_twilio(m, &mut read)
                }
                // No agent socket yet (or any more): nothing to poll, and the gate stays open
                // for the socket the link brings.
                m = poll_fn(|cx| match self.agent.as_mut() {
                    Some(a) => agent_gate.poll(cx, |g| a.poll_read(g)),
                    None => Poll::Pending,
                }) => {
                    self.on_agent(m, &mut read);
                    None
                }
            };
            let ended = match ended {
                Some(outcome) => Some(outcome),
                None => {
                    match tokio::time::timeout(WRITE_STALL_TIMEOUT, self.write_out(&read)).await {
                        Ok(()) => self.run_decisions().await,
                        Err(_) => Some(self.write_stalled()),
                    }
                }
            };
            if let Some(outcome) = ended {
                // Boxed: the ending's close futures would otherwise stay in every call's
                // state for its whole life (issue 16 RSS).
                return Box::pin(self.finish(outcome)).await;
            }
        }
    }

    fn on_link(&mut self, r: Result<AgentLink, ConnectError>) {
        self.link_pending = false;
        match r {
            Ok(l) => {
                self.agent_connect_ms = Some(l.connect_time.as_millis() as u64);
                self.bridge.handle_agent_connected(now());
                self.bridge.agent_messages_dropped(l.early_dropped);
                for text in &l.early {
                    self.bridge.handle_agent_text(now(), text);
                }
                self.agent = Some(l.ws);
            }
            Err(e) => {
                warn!(error = %e, "[ElevenLabs] Cannot reach the agent");
                self.bridge.handle_agent_failed();
            }
        }
    }

    /// One read from Twilio; `Some` when the stream is gone.
    fn on_twilio(
        &mut self,
        m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
        read: &mut ReadAt,
    ) -> Option<Outcome> {
        self.last_twilio = tokio::time::Instant::now();
        match m {
            Some(Ok(Message::Text(text))) => {
                self.counters.messages += 1;
                match media_stream::parse(text.as_str()) {
                    Ok(TwilioEvent::Start(_)) => self.counters.bad_frame("second start"),
                    Ok(event) => {
                        let t = now();
                        let media = if let TwilioEvent::Media(m) = &event {
                            let metrics = &self.shared.app.metrics;
                            Metrics::add(&metrics.frames_from_caller, 1);
                            Metrics::add(&metrics.bytes_from_caller, m.payload.len() as u64);
                            true
                        } else {
                            false
                        };
                        self.bridge.handle_twilio(t, event);
                        // A frame held for the set-up waits for the agent, not for the bridge:
                        // not an added-latency sample (it would be seconds).
                        if media && !self.bridge.holds_setup_audio() {
                            read.caller_frame = Some(t);
                        }
                    }
                    Err(e) => self.counters.bad_frame(&e.to_string()),
                }
                None
            }
            Some(Ok(Message::Binary(_) | Message::Frame(_))) => {
                self.counters.bad_frame("binary frame");
                None
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Some(Outcome::StreamLost),
        }
    }

    /// One read from the agent.
    fn on_agent(&mut self, m: AgentRead, read: &mut ReadAt) {
        match m {
            AgentRead::Text => {
                let Some(agent) = self.agent.as_ref() else {
                    return;
                };
                let t = now();
                if self.bridge.handle_agent_text(t, agent.text()) == Some(AgentEventKind::Audio)
                    && !self.bridge.holds_setup_audio()
                {
                    read.agent_audio = Some(t);
                }
            }
            // The pong goes out with this turn's writes (`write_out`).
            AgentRead::Pinged => {}
            AgentRead::Closed(code) => {
                self.finish_agent();
                self.bridge.handle_agent_closed(now(), code);
            }
            AgentRead::Failed(e) => {
                debug!(error = %e, "[ElevenLabs] Agent socket error");
                self.finish_agent();
                self.bridge.handle_agent_closed(now(), None);
            }
        }
    }

    /// Lets the agent socket go after the server closed it or broke the protocol: the close
    /// frame the read queued (RFC 6455 §5.5.1, §7.1.7) goes out on its own, bounded, not in the
    /// call's loop.
    fn finish_agent(&mut self) {
        if let Some(a) = self.agent.take() {
            tokio::spawn(a.finish(CLOSE_TIMEOUT).instrument(tracing::Span::current()));
        }
    }

    /// Writes what the bridge produced, then observes the added latency of this turn's read.
    async fn write_out(&mut self, read: &ReadAt) {
        let metrics = &self.shared.app.metrics;
        let mut wrote_twilio = false;
        let mut agent_bytes = 0u64;
        while let Some(out) = self.bridge.poll_transmit() {
            match out {
                Output::ToAgent(text) => match self.agent.as_mut() {
                    Some(a) => {
                        while let Some(p) = self.pending_to_agent.pop_front() {
                            if let Some(t) = utf8(&p) {
                                a.feed_text(t);
                            }
                        }
                        if let Some(t) = utf8(&text) {
                            a.feed_text(t);
                            agent_bytes += text.len() as u64;
                        }
                    }
                    None if self.link_pending
                        && self.pending_to_agent.len() < MAX_PENDING_TO_AGENT =>
                    {
                        self.pending_to_agent.push_back(text);
                    }
                    None => {}
                },
                Output::ToTwilio(text) => {
                    let Some(m) = text_message(text) else {
                        continue;
                    };
                    self.writing = Writing::Twilio;
                    if self.twilio.feed(m).await.is_ok() {
                        wrote_twilio = true;
                    }
                }
            }
        }
        let wrote_agent = agent_bytes > 0;
        // With the pool, audio read now is written at its wake-up: keep the oldest such read
        // for that turn (only from the turn that read it, so audio held for pacing never is).
        if !read.pool_results {
            if !wrote_agent && let Some(t) = read.caller_frame {
                self.unsent.caller_frame.get_or_insert(t);
            }
            if !wrote_twilio && let Some(t) = read.agent_audio {
                self.unsent.agent_audio.get_or_insert(t);
            }
        }
        // Also the pongs a read queued (WebSocket-level pings, docs/elevenlabs.md §1.8).
        let mut flushed = false;
        if let Some(a) = self.agent.as_mut()
            && a.wants_flush()
        {
            self.writing = Writing::Agent;
            flushed = a.flush().await.is_ok();
        }
        if wrote_agent && flushed {
            Metrics::add(&metrics.bytes_to_agent, agent_bytes);
            if let Some(t) = read.caller_frame {
                metrics
                    .added_latency_inbound
                    .observe(now().saturating_duration_since(t));
            }
        }
        if wrote_twilio {
            self.writing = Writing::Twilio;
            let _ = self.twilio.flush().await;
            if let Some(t) = read.agent_audio {
                metrics
                    .added_latency_outbound
                    .observe(now().saturating_duration_since(t));
            }
        }
    }

    /// How the call ends when a turn's writes made no progress for [`WRITE_STALL_TIMEOUT`]:
    /// like a dropped socket on that side (a stalled agent sends the caller to a person).
    fn write_stalled(&self) -> Outcome {
        match self.writing {
            Writing::Agent => {
                warn!("[ElevenLabs] Agent socket takes no more writes; closing");
                Outcome::AgentFailed
            }
            Writing::Twilio => {
                warn!("[Twilio] Stream takes no more writes; closing");
                Outcome::StreamLost
            }
        }
    }

    /// Carries out the bridge's decisions; `Some` when the call is over.
    async fn run_decisions(&mut self) -> Option<Outcome> {
        while let Some(event) = self.bridge.poll_event() {
            match event {
                // Boxed, like `finish`: rare, and large inside every call's state.
                BridgeEvent::CloseAgent => Box::pin(close_agent(&mut self.agent)).await,
                BridgeEvent::CloseTwilio(outcome) => return Some(outcome),
                BridgeEvent::Transfer { tool_call_id, to } => self.transfer(tool_call_id, to),
            }
        }
        None
    }

    /// Starts a transfer in the background; its result comes back through `transfer_rx`.
    fn transfer(&mut self, tool_call_id: String, to: String) {
        let app = self.shared.app.clone();
        let tls = self.shared.tls.clone();
        let call_sid = self.call_sid.clone();
        let tx = self.transfer_tx.clone();
        self.transfers_in_flight += 1;
        tokio::spawn(
            async move {
                let ok = transfer::transfer_to_staff(&app.config, &tls, &to, &call_sid).await;
                let _ = tx.send((tool_call_id, ok)).await;
            }
            .instrument(tracing::Span::current()),
        );
    }

    /// Records the outcome first (Twilio asks `stream-ended` as soon as the socket closes),
    /// then closes both sockets.
    async fn finish(&mut self, outcome: Outcome) -> Outcome {
        let app = &self.shared.app;
        app.calls
            .finish(&self.call_sid, self.stream_id, outcome, now());
        super::fleet::spawn_ended(app, &self.call_sid, outcome);
        if let Some(p) = &app.practice {
            // The call's tool token dies with the call (plus a short grace).
            let first_audio = self.bridge.call_summary(outcome).first_audio;
            let end = CallEnd::from_bridge(outcome, self.transferred, first_audio);
            p.end_call(&self.call_sid, end, super::practice_now());
        }
        close_agent(&mut self.agent).await;
        close_twilio(&mut self.twilio, outcome).await;
        outcome
    }

    /// Adds the call to the metrics and logs its summary.
    fn record(&self, outcome: Outcome, duration: Duration) {
        let mut summary = self.bridge.call_summary(outcome);
        summary.bad_caller_frames += self.counters.bad_frames;
        summary.agent_connect_ms = self.agent_connect_ms;
        self.shared.app.metrics.record_call(&summary);
        log_summary(&summary, duration, self.bridge.conversation_id());
    }
}

/// The bridge's bytes as text for the agent; the bridge writes only UTF-8 JSON, and anything
/// else is dropped (a text frame must be UTF-8, RFC 6455 §5.6).
fn utf8(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok();
    if text.is_none() {
        warn!("[Bridge] Non-UTF-8 output dropped");
    }
    text
}

/// A text frame of the bridge's bytes, sharing them (no copy, no allocation). The bridge writes
/// only UTF-8 JSON; the check (a fast scan) keeps `unsafe` out, and anything else is dropped.
fn text_message(bytes: bytes::Bytes) -> Option<Message> {
    match Utf8Bytes::try_from(bytes) {
        Ok(text) => Some(Message::Text(text)),
        Err(_) => {
            warn!("[Bridge] Non-UTF-8 output dropped");
            None
        }
    }
}

fn log_summary(s: &CallSummary, duration: Duration, conversation_id: Option<&str>) {
    info!(
        outcome = s.outcome.as_str(),
        duration_ms = duration.as_millis() as u64,
        conversation_id = conversation_id.unwrap_or(""),
        agent_connect_ms = s.agent_connect_ms,
        first_audio_ms = s.first_audio.map(|d| d.as_millis() as u64),
        caller_frames = s.caller_frames,
        agent_chunks_sent = s.agent_chunks_sent,
        frames_to_caller = s.frames_to_caller,
        concealed_ms = s.concealed_ms,
        underruns = s.underruns,
        interruptions = s.interruptions,
        dtmf = s.dtmf,
        bad_frames = s.bad_caller_frames,
        audio_pipeline_drops = s.audio_pipeline_drops,
        pause_pads = s.pause_pads,
        late_agent_audio = s.late_agent_audio,
        bad_agent_messages = s.bad_agent_messages,
        unknown_agent_events = s.unknown_agent_events,
        "[Call] Summary"
    );
}

async fn close_agent(agent: &mut Option<AgentSocket>) {
    if let Some(a) = agent.take() {
        a.close(CLOSE_TIMEOUT).await;
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

/// Resolves once the server enters [`Phase::Closing`] (never, if the sender is gone).
async fn closing(phase: &mut watch::Receiver<Phase>) {
    if phase.wait_for(|p| *p == Phase::Closing).await.is_err() {
        std::future::pending::<()>().await;
    }
}
