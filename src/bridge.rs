//! The per-call bridge: one Twilio media stream joined to one agent conversation through the
//! audio paths. Sans-IO, like str0m's `Rtc`: events and `now` in, messages and decisions out.
//!
//! Drive it with `handle_*` for every input, then drain [`Bridge::poll_transmit`] and
//! [`Bridge::poll_event`], and call [`Bridge::handle_timeout`] at [`Bridge::poll_timeout`].
//!
//! What it guarantees:
//! - No caller audio is lost during set-up: frames that arrive before the agent's metadata (which
//!   fixes the audio formats) are held (bounded) and sent in order once it arrives. Agent audio
//!   that arrives before Twilio's `start` is held too. With the DSP pool the backlog goes in
//!   slices the pool can take without a drop ([`PoolCall::room`]), the rest as its results
//!   drain; audio arriving meanwhile queues behind it.
//! - Barge-in: an `interruption` drops held audio, resets the outbound resampler, and sends
//!   Twilio `clear` in the same step; later audio is kept only if its `event_id` is at least the
//!   interruption's (docs/elevenlabs.md §4.4).
//! - Endings never leave the caller in dead air: an agent failure closes the stream at once so
//!   `stream-ended` can hand the caller to a person; a normal agent ending lets the queued audio
//!   play (until its end-of-turn mark comes back) before closing, and so does the agent's
//!   maximum duration, which then hands the caller to a person too.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};
use tracing::{debug, info, warn};

use crate::audio::format::AgentFormat;
use crate::audio::inbound::{InboundConfig, InboundPath};
use crate::audio::outbound::{OutboundConfig, OutboundPath, check_agent_audio};
use crate::audio::pipeline::{AGENT_PIECE_CHARS, CALL_QUEUE_DEPTH, PoolCall, PoolLink, PoolOutput};
use crate::audio::playout::Transmit;
use crate::calls::Outcome;
use crate::elevenlabs::messages::{self, AgentEventKind};
use crate::elevenlabs::session::{AgentSession, SessionEvent, SessionStats};
use crate::metrics::CallSummary;
use crate::twilio::media_stream::{self, TwilioEvent};

/// Room first reserved in a call's wire buffer, in which outgoing messages are written back to
/// back. Once a step's messages are written and dropped the next reserve reclaims the same
/// storage, so steady state allocates nothing. It is held for the whole call, so it starts small
/// (a `ulaw_8000` step: a top-up of ≤ ~1.2 KiB and a 270-byte `user_audio_chunk`) and doubles
/// when a step outgrows it (`pcm_16000` settles at 4 KiB); a fixed 4 KiB cost every call
/// ~2 KiB more RSS (issue 16).
const WIRE_RESERVE_BYTES: usize = 2048;
/// Most room the wire buffer's reserve grows to (a message larger than that is reserved alone).
const MAX_WIRE_RESERVE_BYTES: usize = 64 * 1024;
/// The period of Twilio's caller frames, which pace the outbound path (docs/dsp.md §3.7): a
/// deadline due before the next one is acted on at this one.
const CALLER_FRAME: Duration = Duration::from_millis(20);
/// What an ending waits beyond the audio still queued for the last mark's echo (Twilio's
/// buffering and the echo's way back), when that is longer than `final_audio_timeout`.
const FINAL_AUDIO_MARGIN: Duration = Duration::from_secs(5);

/// Caller frames held while the agent is not ready (500 × 20 ms = 10 s, longer than any
/// connect timeout); older frames beyond it are dropped and counted.
pub const MAX_SETUP_HELD_FRAMES: usize = 500;
/// Base64 payload bytes held while the agent is not ready: 500 Twilio frames (216 bytes each)
/// and some slack. A peer sending 64 KiB payloads cannot make the frame cap hold 32 MiB.
pub const MAX_SETUP_HELD_BYTES: usize = 128 * 1024;
/// Agent audio events held before Twilio's `start`.
pub const MAX_EARLY_AGENT_EVENTS: usize = 256;
/// Base64 bytes of the agent audio held before Twilio's `start`: ~47 s of `pcm_16000`, more than
/// any greeting. The event cap alone would let 1 MiB events hold 256 MiB.
pub const MAX_EARLY_AGENT_BYTES: usize = 2 * 1024 * 1024;
/// A client tool named `end_call`, still answered (the last sentence plays, then the call ends)
/// for agents set up by hand before issue 13, but no longer shipped: it would shadow ElevenLabs'
/// built-in system tool `end_call`, which closes the socket with 1000 (handled in
/// `handle_agent_closed`; docs/elevenlabs.md §5.3). `ignis agent sync` reports one attached.
pub const TOOL_END_CALL: &str = "end_call";
/// Name of the client tool that transfers the caller to the practice's staff.
pub const TOOL_TRANSFER: &str = "transfer_to_staff";
/// The `transfer_to_staff` result when Twilio took the transfer.
const TRANSFER_DONE: &str = "Der Anruf wird an das Praxisteam übergeben.";
/// The `transfer_to_staff` result while a transfer is under way or done: one per call, so an
/// agent repeating the tool cannot start transfer after transfer of the same call.
const TRANSFER_UNDER_WAY: &str = "Die Weiterleitung läuft bereits.";
/// The `transfer_to_staff` result when there is no number or Twilio refused.
const TRANSFER_FAILED: &str =
    "Die Weiterleitung ist fehlgeschlagen. Bitte bieten Sie einen Rückruf an.";

/// How a keypad digit reaches the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfMode {
    /// As a `user_message` ("Der Anrufer hat die Taste 1 gedrückt."): the agent answers it like
    /// speech. The default: menus such as "press 1 for …" need a reply.
    UserMessage,
    /// As a `contextual_update`: background knowledge, no reply forced.
    ContextualUpdate,
}

/// Where `transfer_to_staff` sends the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferNumbers {
    /// `FALLBACK_NUMBER`: the number the caller is also sent to when the agent fails; preferred.
    pub fallback: Option<String>,
    /// The practice's staff line, used when there is no fallback number.
    pub staff_line: Option<String>,
}

impl TransferNumbers {
    /// The number a transfer dials, if any is configured.
    pub fn target(&self) -> Option<&str> {
        self.fallback.as_deref().or(self.staff_line.as_deref())
    }
}

/// Bridge settings.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Caller → agent path.
    pub inbound: InboundConfig,
    /// Agent → caller path.
    pub outbound: OutboundConfig,
    /// DTMF delivery.
    pub dtmf: DtmfMode,
    /// Agent silence after which its socket counts as dead.
    pub agent_silence_timeout: Duration,
    /// Time without agent audio after which its turn is over (flush the resampler tail, pad the
    /// last frame, place the end-of-turn mark), once the caller is about to run dry too.
    /// ElevenLabs sends no explicit end of audio.
    pub turn_idle: Duration,
    /// Longest wait for the final audio to play out before closing after the agent ended.
    pub final_audio_timeout: Duration,
    /// Where `transfer_to_staff` sends the caller.
    pub transfer: TransferNumbers,
    /// `AUDIO_STAGES=pipeline`: the DSP pool and this call's wake-up (the driver then calls
    /// [`Bridge::handle_audio_ready`] on it). `None`: the DSP runs inline.
    pub pool: Option<PoolLink>,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            inbound: InboundConfig::default(),
            outbound: OutboundConfig::default(),
            dtmf: DtmfMode::UserMessage,
            agent_silence_timeout: crate::elevenlabs::session::DEFAULT_SILENCE_TIMEOUT,
            turn_idle: Duration::from_millis(300),
            final_audio_timeout: Duration::from_secs(20),
            transfer: TransferNumbers::default(),
            pool: None,
        }
    }
}

/// A message to write: the UTF-8 JSON text of one WebSocket text frame. Media and audio
/// chunks are views into the call's wire buffer ([`Bytes`]): writing them allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A text frame for the Twilio stream socket.
    ToTwilio(Bytes),
    /// A text frame for the agent socket.
    ToAgent(Bytes),
}

impl Output {
    /// The message text (the bridge only writes UTF-8 JSON; anything else reads as "").
    pub fn text(&self) -> &str {
        match self {
            Output::ToTwilio(b) | Output::ToAgent(b) => std::str::from_utf8(b).unwrap_or_default(),
        }
    }

    /// The message bytes, whichever socket they are for.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Output::ToTwilio(b) | Output::ToAgent(b) => b,
        }
    }
}

/// Copies `text` into `wire` and splits it off as one message (see [`WIRE_RESERVE_BYTES`]);
/// `reserve` is the call's current reserve, doubled when a step outgrows it.
fn wire_message(wire: &mut BytesMut, reserve: &mut usize, text: &str) -> Bytes {
    // Once the messages of the last step are written and dropped the buffer is ours alone
    // again: take all of it back (cheap, never allocates) so this step's messages fit.
    if wire.capacity() < *reserve {
        let _ = wire.try_reclaim(*reserve);
    }
    if wire.capacity() < text.len() {
        *reserve = (*reserve * 2).min(MAX_WIRE_RESERVE_BYTES);
        wire.reserve((*reserve).max(text.len()));
    }
    wire.extend_from_slice(text.as_bytes());
    wire.split().freeze()
}

/// A decision for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeEvent {
    /// Close the Twilio stream (after writing queued outputs); the call's outcome is known.
    CloseTwilio(Outcome),
    /// Close the agent socket with 1000.
    CloseAgent,
    /// Transfer the call to staff through Twilio's REST API (a `<Dial>` to `to`), then report
    /// with [`Bridge::transfer_done`].
    Transfer {
        /// The tool call to answer.
        tool_call_id: String,
        /// The number to dial (see [`TransferNumbers::target`]).
        to: String,
    },
}

/// Counters for the call summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct BridgeStats {
    /// Caller frames received.
    pub caller_frames: u64,
    /// Caller frames dropped while the agent was not ready (over the hold limit).
    pub setup_frames_dropped: u64,
    /// `user_audio_chunk` messages sent.
    pub agent_chunks_sent: u64,
    /// Bad caller frames.
    pub bad_caller_frames: u64,
    /// Bad agent audio chunks.
    pub bad_agent_chunks: u64,
    /// Keypad digits forwarded.
    pub dtmf: u64,
    /// `clear` messages sent.
    pub clears: u64,
    /// Agent protocol counters.
    pub session: SessionStats,
    /// Time from Twilio `start` to the first agent audio written to Twilio.
    pub first_audio_after_start: Option<Duration>,
}

/// The call's transfer to the staff line (`transfer_to_staff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransferState {
    Idle,
    /// The driver is asking Twilio; further requests are answered without a second one.
    InFlight,
    /// Twilio took it: the call is leaving the agent.
    Done,
}

enum Ending {
    /// Wait for the audio queued so far to play, then close with the outcome.
    Draining {
        outcome: Outcome,
        deadline: Instant,
        /// The last mark sent since the ending began: the end-of-turn mark once all audio is
        /// out. Its echo proves the caller heard the last word (docs/twilio.md §1.4).
        final_mark: Option<String>,
        mark_heard: bool,
    },
}

/// One call's bridge state.
pub struct Bridge {
    config: BridgeConfig,
    session: Option<AgentSession>,
    inbound: Option<InboundPath>,
    /// The outbound path; with the DSP pool, a `ulaw_8000` pacer fed with the pool's frames.
    outbound: Option<OutboundPath>,
    /// The call's DSP on the pool (`AUDIO_STAGES=pipeline`), in place of `inbound` and of
    /// `outbound`'s transcoding.
    pool: Option<PoolCall>,
    /// Agent audio went to the pool since its last end of turn or pause pad: the worker may
    /// hold a partial frame (and a resampler tail) the pacer cannot see (docs/dsp.md §3.8).
    pool_partial: bool,
    /// A refused pause pad ([`PoolCall::complete_partial`]) is retried no sooner than this,
    /// so a full worker queue never makes the call's timer refire in a loop.
    pool_pad_retry: Option<Instant>,
    conversation_id: Option<String>,
    stream_sid: Option<String>,
    started_at: Option<Instant>,
    held_caller: VecDeque<(u64, u64, String)>,
    /// Payload bytes in `held_caller` (capped at [`MAX_SETUP_HELD_BYTES`]).
    held_bytes: usize,
    early_agent: VecDeque<(u64, String)>,
    /// Base64 bytes in `early_agent` (capped at [`MAX_EARLY_AGENT_BYTES`]).
    early_agent_bytes: usize,
    last_agent_audio: Option<Instant>,
    turn_open: bool,
    ending: Option<Ending>,
    closed: bool,
    transfer: TransferState,
    out: VecDeque<Output>,
    events: VecDeque<BridgeEvent>,
    scratch: String,
    /// Where outgoing messages are written ([`wire_message`]), and the room reserved in it.
    wire: BytesMut,
    wire_reserve: usize,
    stats: BridgeStats,
}

impl Bridge {
    /// Holds a caller frame until the agent is ready; the oldest go first past
    /// [`MAX_SETUP_HELD_FRAMES`] frames or [`MAX_SETUP_HELD_BYTES`] bytes.
    fn hold_caller_frame(&mut self, chunk: u64, timestamp_ms: u64, payload: String) {
        if payload.len() > MAX_SETUP_HELD_BYTES {
            self.stats.setup_frames_dropped += 1;
            return;
        }
        while self.held_caller.len() >= MAX_SETUP_HELD_FRAMES
            || self.held_bytes + payload.len() > MAX_SETUP_HELD_BYTES
        {
            let Some((_, _, old)) = self.held_caller.pop_front() else {
                break;
            };
            self.held_bytes -= old.len();
            self.stats.setup_frames_dropped += 1;
        }
        self.held_bytes += payload.len();
        self.held_caller.push_back((chunk, timestamp_ms, payload));
    }

    /// A bridge for a call whose agent socket is still connecting.
    pub fn new(config: BridgeConfig) -> Bridge {
        Bridge {
            config,
            session: None,
            inbound: None,
            outbound: None,
            pool: None,
            pool_partial: false,
            pool_pad_retry: None,
            conversation_id: None,
            stream_sid: None,
            started_at: None,
            held_caller: VecDeque::new(),
            held_bytes: 0,
            early_agent: VecDeque::new(),
            early_agent_bytes: 0,
            last_agent_audio: None,
            turn_open: false,
            ending: None,
            closed: false,
            transfer: TransferState::Idle,
            out: VecDeque::new(),
            events: VecDeque::new(),
            scratch: String::with_capacity(512),
            wire: BytesMut::new(),
            wire_reserve: WIRE_RESERVE_BYTES,
            stats: BridgeStats::default(),
        }
    }

    /// The agent socket is open and the initiation data written.
    pub fn handle_agent_connected(&mut self, now: Instant) {
        self.session = Some(AgentSession::new(now, self.config.agent_silence_timeout));
    }

    /// The agent could not be reached (connect, TLS or signed-URL failure).
    pub fn handle_agent_failed(&mut self) {
        warn!("[ElevenLabs] Agent unavailable; sending the caller to the fallback");
        self.close(Outcome::AgentFailed);
    }

    /// One text message from the agent. Returns the kind of event it carried (`None`: the
    /// agent is not connected, or the message did not parse), so the driver needs no protocol
    /// knowledge of its own.
    pub fn handle_agent_text(&mut self, now: Instant, text: &str) -> Option<AgentEventKind> {
        let session = self.session.as_mut()?;
        let event = match messages::parse(text) {
            Ok(e) => e,
            Err(e) => {
                session.handle_bad_message(now);
                debug!(error = %e, "[ElevenLabs] Bad message ignored");
                return None;
            }
        };
        let kind = event.kind();
        if let Some(event) = session.handle_event(now, event) {
            self.handle_session_event(now, event);
            self.pump_outbound(now);
        }
        Some(kind)
    }

    fn handle_session_event(&mut self, now: Instant, event: SessionEvent<'_>) {
        match event {
            SessionEvent::Ready {
                conversation_id,
                input_format,
                output_format,
            } => self.agent_ready(now, conversation_id, &input_format, &output_format),
            SessionEvent::Audio {
                event_id,
                audio_b64,
            } => {
                // Behind held audio too, so it keeps its order while the pool takes the backlog.
                if self.stream_sid.is_none()
                    || self.outbound.is_none()
                    || !self.early_agent.is_empty()
                {
                    if self.early_agent.len() < MAX_EARLY_AGENT_EVENTS
                        && self.early_agent_bytes + audio_b64.len() <= MAX_EARLY_AGENT_BYTES
                    {
                        self.early_agent_bytes += audio_b64.len();
                        self.early_agent
                            .push_back((event_id, audio_b64.into_owned()));
                    } else {
                        self.stats.bad_agent_chunks += 1;
                    }
                    self.flush_early_agent_audio(now);
                    return;
                }
                self.push_agent_audio(now, event_id, &audio_b64);
            }
            SessionEvent::Interrupted { event_id } => self.interrupt(now, event_id),
            SessionEvent::ToolCall {
                tool_name,
                tool_call_id,
                parameters,
            } => self.tool_call(now, &tool_name, &tool_call_id, &parameters),
            SessionEvent::Error { code, error_type } => {
                warn!(code, error_type = %error_type, "[ElevenLabs] Agent error");
                if error_type == messages::ERROR_MAX_DURATION_EXCEEDED {
                    // The agent's time ran out, not the caller's matter: the 1000 close that
                    // follows would hang up, so a person takes over instead, once the queued
                    // audio (the agent's closing words) has played (docs/elevenlabs.md §3.2).
                    info!("[ElevenLabs] Maximum duration reached; handing the caller to a person");
                    self.finish_after_audio(now, Outcome::AgentFailed);
                }
            }
        }
    }

    /// The agent socket closed with `code` (`None`: dropped without a close frame).
    pub fn handle_agent_closed(&mut self, now: Instant, code: Option<u16>) {
        if self.closed {
            return;
        }
        if self.ending.is_some() {
            // An ending is under way (end_call, max duration): its queued words still play,
            // whatever code closes the socket after it (in 2024 max duration closed with
            // 1011, docs/elevenlabs.md §3.2).
            info!(code, "[ElevenLabs] Agent socket closed during the ending");
            return;
        }
        if code == Some(1000) {
            // The agent ended the conversation (end_call): let the queued audio play, then close
            // so stream-ended hangs up (docs/elevenlabs.md §3.2, pitfall 4). After a
            // max_duration_exceeded error the ending is already set, for a person.
            info!("[ElevenLabs] Agent ended the conversation");
            self.finish_after_audio(now, Outcome::Completed);
        } else {
            warn!(code, "[ElevenLabs] Agent socket closed abnormally");
            self.close(Outcome::AgentFailed);
        }
    }

    /// One message from Twilio.
    pub fn handle_twilio(&mut self, now: Instant, event: TwilioEvent<'_>) {
        match event {
            TwilioEvent::Connected | TwilioEvent::Unknown => {}
            TwilioEvent::Start(start) => {
                self.stream_sid = Some(start.stream_sid);
                self.started_at = Some(now);
                self.flush_early_agent_audio(now);
            }
            TwilioEvent::Media(m) => {
                self.stats.caller_frames += 1;
                if self.outbound.is_some() && self.held_caller.is_empty() && self.pool_room() > 0 {
                    self.push_caller_frame(now, m.chunk, m.timestamp_ms, &m.payload);
                } else {
                    // Not ready, or the pool is still full of the set-up backlog: behind it
                    // (held, bounded), fed on as results drain.
                    self.hold_caller_frame(m.chunk, m.timestamp_ms, m.payload.into_owned());
                    self.flush_held_caller(now);
                }
            }
            TwilioEvent::Dtmf { digit } => {
                // Only real keypad symbols; anything else from the wire is dropped.
                if digit.len() == 1 && matches!(digit.as_bytes()[0], b'0'..=b'9' | b'*' | b'#') {
                    self.stats.dtmf += 1;
                    let text = format!("Der Anrufer hat die Taste {digit} gedrückt.");
                    let msg = match self.config.dtmf {
                        DtmfMode::UserMessage => messages::user_message(&text),
                        DtmfMode::ContextualUpdate => messages::contextual_update(&text),
                    };
                    match self.session.as_mut() {
                        Some(s) => s.send_control(msg),
                        None => self.out.push_back(Output::ToAgent(Bytes::from(msg))),
                    }
                }
            }
            TwilioEvent::Mark { name } => {
                if let Some(Ending::Draining {
                    final_mark,
                    mark_heard,
                    ..
                }) = self.ending.as_mut()
                    && final_mark.as_deref() == Some(name.as_str())
                {
                    *mark_heard = true;
                }
                if let Some(echo) = self
                    .outbound
                    .as_mut()
                    .and_then(|o| o.handle_mark_echo(&name))
                {
                    debug!(
                        event_id = echo.event_id,
                        heard_ms = echo.stream_ms,
                        cleared = echo.cleared,
                        "[Twilio] Mark echoed"
                    );
                }
            }
            TwilioEvent::Stop => {
                info!("[Twilio] Caller hung up");
                if let Some(inbound) = self.inbound.as_mut() {
                    inbound.finish();
                }
                if let Some(p) = self.pool.as_ref() {
                    let _ = p.finish(now);
                }
                self.pump_inbound();
                self.close(Outcome::CallerHungUp);
            }
        }
        self.pump_outbound(now);
    }

    /// Advances timers: agent watchdog, end of turn, final-audio deadline, playout pacing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(session) = self.session.as_mut() {
            session.handle_timeout(now);
            if session.is_dead() && !self.closed {
                warn!("[ElevenLabs] Agent silent too long; treating the socket as dead");
                self.close(Outcome::AgentFailed);
            }
        }
        self.pump_outbound(now);
    }

    /// When the agent's turn counts as over: `turn_idle` after its last audio, and not before
    /// the caller is about to run dry, so a slow chunk of ongoing speech never gets its partial
    /// frame padded (docs/dsp.md §3.8). `None` while whole frames are still held.
    fn turn_over_at(&self, now: Instant) -> Option<Instant> {
        let idle = self.last_agent_audio? + self.config.turn_idle;
        match self.outbound.as_ref() {
            Some(o) => o.starves_at(now).map(|t| t.max(idle)),
            None => Some(idle),
        }
    }

    /// When to have the pool pad the partial frame it may hold: one caller frame before the
    /// pacer runs dry, so the padded frame is back in time (inline, `poll_transmit` pads at
    /// that point itself; docs/dsp.md §3.8), and after a refused pad no sooner than a caller
    /// frame later. `None` while results are still coming from the pool (their wake-up
    /// re-checks) or nothing may be held.
    fn pool_pad_at(&self, now: Instant) -> Option<Instant> {
        if !self.pool_partial || !self.pool.as_ref()?.settled() {
            return None;
        }
        let starves = self.outbound.as_ref()?.starves_at(now)?;
        let pad = starves.checked_sub(CALLER_FRAME).unwrap_or(starves);
        Some(self.pool_pad_retry.map_or(pad, |retry| pad.max(retry)))
    }

    /// Whether this call's DSP may run in the pool (`AUDIO_STAGES=pipeline`: it joins the pool
    /// once the agent's formats are known), so the driver must wait for its wake-up; `false`
    /// inline.
    pub fn uses_pool(&self) -> bool {
        self.config.pool.is_some()
    }

    /// Whether the DSP pool (`AUDIO_STAGES=pipeline`) has handled every command of this call
    /// and [`Bridge::handle_audio_ready`] has taken all its results; `true` inline. For tests
    /// and simulations that wait for the worker.
    pub fn pool_settled(&self) -> bool {
        self.pool.as_ref().is_none_or(PoolCall::settled)
    }

    /// Whether audio is held for the call's set-up: the agent's formats or Twilio's `start`
    /// still awaited, or a set-up backlog still being fed to the DSP pool. Audio read now waits
    /// for the set-up, not for the bridge: the driver takes no added-latency sample of it.
    pub fn holds_setup_audio(&self) -> bool {
        self.outbound.is_none()
            || self.stream_sid.is_none()
            || !self.held_caller.is_empty()
            || !self.early_agent.is_empty()
    }

    /// Agent messages dropped before they reached the bridge (a pre-connect holds at most
    /// its cap): counted with the bad agent chunks, so the call's summary shows them.
    pub fn agent_messages_dropped(&mut self, n: u64) {
        self.stats.bad_agent_chunks = self.stats.bad_agent_chunks.saturating_add(n);
    }

    /// Reports the REST transfer's result to the agent.
    pub fn transfer_done(&mut self, tool_call_id: &str, ok: bool) {
        // A failed transfer may be tried again; a successful one is the call's last.
        self.transfer = if ok {
            TransferState::Done
        } else {
            TransferState::Idle
        };
        let result = if ok { TRANSFER_DONE } else { TRANSFER_FAILED };
        if let Some(s) = self.session.as_mut() {
            s.tool_result(tool_call_id, result, !ok);
        }
    }

    /// The next message to write.
    pub fn poll_transmit(&mut self) -> Option<Output> {
        if let Some(msg) = self.session.as_mut().and_then(AgentSession::poll_transmit) {
            return Some(Output::ToAgent(Bytes::from(msg)));
        }
        self.out.pop_front()
    }

    /// The next decision for the driver.
    pub fn poll_event(&mut self) -> Option<BridgeEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // A closed bridge has nothing left to time (found by the call_session fuzz target).
        if self.closed {
            return None;
        }
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.session.as_ref().and_then(AgentSession::poll_timeout));
        consider(self.outbound.as_ref().and_then(OutboundPath::poll_timeout));
        if let Some(now) = self.outbound.as_ref().and_then(|o| o.playout().last_poll()) {
            if self.turn_open {
                consider(self.turn_over_at(now));
            }
            consider(self.pool_pad_at(now));
        }
        if let Some(Ending::Draining { deadline, .. }) = &self.ending {
            consider(Some(*deadline));
        }
        next
    }

    /// Whether the bridge has decided to close the call.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The conversation id, once known.
    pub fn conversation_id(&self) -> Option<&str> {
        self.conversation_id.as_deref()
    }

    /// Counters, including the audio paths'.
    pub fn stats(&self) -> BridgeStats {
        let mut s = self.stats;
        if let Some(session) = &self.session {
            s.session = session.stats();
        }
        s
    }

    /// Audio-path counters (inbound, outbound), when the formats are known.
    pub fn audio_stats(
        &self,
    ) -> (
        Option<crate::audio::inbound::InboundStats>,
        Option<crate::audio::outbound::OutboundStats>,
    ) {
        (
            self.inbound.as_ref().map(InboundPath::stats),
            self.outbound.as_ref().map(OutboundPath::stats),
        )
    }

    /// The call's summary for [`Metrics::record_call`](crate::metrics::Metrics::record_call)
    /// and the log, from the bridge's counters. The driver adds what only it knows: the frames
    /// it could not parse and the agent's connect time.
    pub fn call_summary(&self, outcome: Outcome) -> CallSummary {
        let stats = self.stats();
        let (inbound, outbound) = self.audio_stats();
        let playout = outbound.map(|o| o.playout).unwrap_or_default();
        let pool = self.pool.as_ref().map(PoolCall::stats).unwrap_or_default();
        CallSummary {
            outcome,
            caller_frames: stats.caller_frames,
            agent_chunks_sent: stats.agent_chunks_sent,
            frames_to_caller: playout.frames_sent,
            concealed_ms: inbound.map_or(pool.concealed_ms, |i| i.jitter.concealed_ms),
            underruns: playout.underruns,
            interruptions: stats.session.interruptions,
            dtmf: stats.dtmf,
            bad_caller_frames: stats.bad_caller_frames + pool.bad_frames,
            bad_agent_chunks: stats.bad_agent_chunks + pool.bad_agent_chunks,
            audio_pipeline_drops: pool.drops,
            // Inline the path pads; with the pool its worker does (the pacer gets whole frames).
            pause_pads: outbound.map_or(0, |o| o.pause_pads) + pool.pause_pads,
            late_agent_audio: playout.late_arrivals,
            bad_agent_messages: stats.session.bad_messages,
            unknown_agent_events: stats.session.unknown_events,
            agent_connect_ms: None,
            first_audio: stats.first_audio_after_start,
        }
    }

    fn agent_ready(&mut self, now: Instant, conversation_id: String, input: &str, output: &str) {
        // Metadata comes once (docs/elevenlabs.md §1.7); a repeat must not rebuild the audio paths and
        // silently drop what they hold.
        if self.outbound.is_some() {
            debug!("[ElevenLabs] Repeated metadata ignored");
            return;
        }
        let formats = (AgentFormat::parse(input), AgentFormat::parse(output));
        let (Ok(input_format), Ok(output_format)) = formats else {
            warn!(input, output, "[ElevenLabs] Unsupported audio format");
            self.close(Outcome::AgentFailed);
            return;
        };
        if !self.set_up_audio(input_format, output_format) {
            warn!(input, output, "[ElevenLabs] Cannot set up the audio paths");
            self.close(Outcome::AgentFailed);
            return;
        }
        info!(
            conversation_id = %conversation_id,
            input_format = input,
            output_format = output,
            "[ElevenLabs] Started conversation: {conversation_id}"
        );
        self.conversation_id = Some(conversation_id);
        // Caller audio held during set-up goes out first, in order.
        self.flush_held_caller(now);
        self.flush_early_agent_audio(now);
    }

    /// How many audio commands the pool can take now without a drop (unbounded inline).
    fn pool_room(&self) -> usize {
        self.pool.as_ref().map_or(usize::MAX, PoolCall::room)
    }

    /// Sends held caller frames on, in order: all of them inline; with the pool as much as it
    /// can take without a drop, the rest as its results drain ([`Bridge::handle_audio_ready`]),
    /// so no caller audio of the set-up is lost (up to 10 s held, 128 commands per call).
    fn flush_held_caller(&mut self, now: Instant) {
        if self.outbound.is_none() {
            return;
        }
        let mut room = self.pool_room();
        while room > 0
            && let Some((chunk, ts, payload)) = self.held_caller.pop_front()
        {
            self.held_bytes -= payload.len();
            self.push_caller_frame(now, chunk, ts, &payload);
            room -= 1;
        }
    }

    /// Builds the audio paths: inline, or on the DSP pool with a `ulaw_8000` pacer here
    /// (pacing is the call's clock; the pool only transcodes). `false` if they cannot be built.
    fn set_up_audio(&mut self, input: AgentFormat, output: AgentFormat) -> bool {
        let (inbound, outbound) = (self.config.inbound, self.config.outbound);
        match self.config.pool.as_ref() {
            None => {
                let paths = (
                    InboundPath::new(input, inbound),
                    OutboundPath::new(output, outbound),
                );
                let (Ok(i), Ok(o)) = paths else {
                    return false;
                };
                self.inbound = Some(i);
                self.outbound = Some(o);
            }
            Some(link) => {
                let wake = link.wake.clone();
                let call = link
                    .pool
                    .open(input, output, inbound, outbound.engine, wake);
                let pacer = OutboundPath::new(AgentFormat::Ulaw8000, outbound);
                let (Ok(call), Ok(pacer)) = (call, pacer) else {
                    return false;
                };
                self.pool = Some(call);
                self.outbound = Some(pacer);
            }
        }
        true
    }

    /// One caller frame into the inbound path (or onto the pool).
    fn push_caller_frame(&mut self, now: Instant, chunk: u64, timestamp_ms: u64, payload: &str) {
        if let Some(p) = self.pool.as_ref() {
            if p.push_twilio_media(now, chunk, timestamp_ms, payload)
                .is_err()
            {
                log_pool_drop(p, "caller frame");
            }
            return;
        }
        if let Some(inbound) = self.inbound.as_mut()
            && inbound
                .push_twilio_media(now, chunk, timestamp_ms, payload)
                .is_err()
        {
            self.stats.bad_caller_frames += 1;
        }
        self.pump_inbound();
    }

    /// Ends the agent's turn: at once inline; through the pool, which flushes the resampler
    /// tail and pads the last frame, then [`PoolOutput::EndOfTurn`] ends the pacer's turn.
    fn end_turn(&mut self, now: Instant) {
        self.pool_partial = false;
        self.pool_pad_retry = None;
        if let Some(p) = self.pool.as_ref() {
            // Refused only with a worker far behind (counted): the turn's tail then stays on
            // the worker, and the pacer's turn ends with the next one.
            if p.end_of_turn(now).is_err() {
                log_pool_drop(p, "end of turn");
            }
        } else if let Some(o) = self.outbound.as_mut() {
            o.end_of_turn();
        }
    }

    /// The DSP pool woke the call (`AUDIO_STAGES=pipeline`): hands its results on (payloads to
    /// the agent, frames to the pacer) and paces. Results from before an interruption are
    /// discarded by [`PoolCall::drain`].
    pub fn handle_audio_ready(&mut self, now: Instant) {
        let Self {
            pool,
            outbound,
            scratch,
            wire,
            wire_reserve,
            out,
            stats,
            ..
        } = self;
        let (Some(pool), Some(pacer)) = (pool.as_mut(), outbound.as_mut()) else {
            return;
        };
        pool.drain(|o| match o {
            PoolOutput::UserAudioChunk(chunk) => {
                messages::write_user_audio_chunk(scratch, chunk);
                out.push_back(Output::ToAgent(wire_message(wire, wire_reserve, scratch)));
                stats.agent_chunks_sent += 1;
            }
            PoolOutput::Frames {
                event_id,
                ulaw,
                padded,
            } => {
                // Noted when made, not when asked: a pad that found only whole frames inserted
                // no silence, and the next chunk is not late for it (docs/dsp.md §3.9).
                if padded {
                    pacer.pause_pad_made();
                }
                pacer.push_agent_bytes(event_id, ulaw);
            }
            PoolOutput::EndOfTurn => {
                pacer.end_of_turn();
            }
        });
        self.flush_held_caller(now);
        self.flush_early_agent_audio(now);
        self.pump_outbound(now);
    }

    fn flush_early_agent_audio(&mut self, now: Instant) {
        if self.stream_sid.is_none() || self.outbound.is_none() {
            return;
        }
        // With the pool, as much as it can take without a drop; the rest as results drain.
        let mut room = self.pool_room();
        while let Some((_, audio)) = self.early_agent.front() {
            let pieces = audio.len().div_ceil(AGENT_PIECE_CHARS).max(1);
            // An event larger than the whole queue goes when the queue is empty.
            if pieces > room && room < CALL_QUEUE_DEPTH {
                break;
            }
            let Some((event_id, audio)) = self.early_agent.pop_front() else {
                break;
            };
            self.early_agent_bytes -= audio.len();
            self.push_agent_audio(now, event_id, &audio);
            room = room.saturating_sub(pieces);
        }
    }

    fn push_agent_audio(&mut self, now: Instant, event_id: u64, audio_b64: &str) {
        let Some(outbound) = self.outbound.as_mut() else {
            return;
        };
        let pushed = match self.pool.as_ref() {
            // The whole chunk is checked here, as inline, before any piece goes to the pool: a
            // chunk bad in its third piece must not have its first two played.
            Some(p) => check_agent_audio(audio_b64).map(|_| {
                // The pacer times the arrival (docs/dsp.md §3.9); its frames follow from the pool.
                // With the last turn's end still on its way from the pool, this opens the next.
                outbound.agent_audio_arrived(now, event_id, p.turn_end_on_its_way());
                // Drops are counted in the pool's stats.
                if p.push_agent_audio(now, event_id, audio_b64).is_err() {
                    log_pool_drop(p, "agent audio");
                }
            }),
            None => outbound.push_agent_audio(now, event_id, audio_b64),
        };
        if let Err(e) = pushed {
            self.stats.bad_agent_chunks += 1;
            debug!(error = %e, "[ElevenLabs] Bad agent audio ignored");
            return;
        }
        self.pool_partial |= self.pool.is_some();
        self.last_agent_audio = Some(now);
        self.turn_open = true;
    }

    fn interrupt(&mut self, now: Instant, event_id: u64) {
        if self.closed {
            return;
        }
        // Audio held for the stream's start (or the agent's metadata) is dropped like what the
        // outbound path holds: an interruption clears everything held (docs/elevenlabs.md
        // §4.4). Without an outbound path yet nothing else would drop it (review, point 5).
        self.early_agent.clear();
        self.early_agent_bytes = 0;
        let Some(outbound) = self.outbound.as_mut() else {
            return;
        };
        let result = outbound.interrupt(now, Some(event_id));
        if let Some(p) = self.pool.as_mut() {
            // Frames in flight from before this point are discarded by tag, so the pacer's
            // drop and the `clear` below stay in this step; a dropped command only leaves the
            // worker's resampler state unreset (counted).
            let _ = p.interrupt(now, Some(event_id));
            self.pool_partial = false;
            self.pool_pad_retry = None;
        }
        self.turn_open = false;
        // A pending "finish after audio" is moot: nothing is queued any more.
        if result.send_clear
            && let Some(sid) = &self.stream_sid
        {
            media_stream::write_clear(&mut self.scratch, sid);
            let bytes = wire_message(&mut self.wire, &mut self.wire_reserve, &self.scratch);
            self.out.push_back(Output::ToTwilio(bytes));
            self.stats.clears += 1;
        }
        debug!(
            event_id,
            dropped_ms = result.dropped_ms,
            unplayed_ms = result.unplayed_ms,
            "[ElevenLabs] Interruption"
        );
    }

    fn tool_call(&mut self, now: Instant, name: &str, id: &str, _params: &Map<String, Value>) {
        info!(tool = name, "[ElevenLabs] Client tool call");
        let Some(session) = self.session.as_mut() else {
            return;
        };
        match name {
            TOOL_END_CALL => {
                session.tool_result(id, "Das Gespräch wird beendet.", false);
                self.finish_after_audio(now, Outcome::Completed);
            }
            TOOL_TRANSFER => match self.config.transfer.target() {
                _ if self.transfer != TransferState::Idle => {
                    session.tool_result(id, TRANSFER_UNDER_WAY, false);
                }
                Some(to) => {
                    self.transfer = TransferState::InFlight;
                    self.events.push_back(BridgeEvent::Transfer {
                        tool_call_id: id.to_owned(),
                        to: to.to_owned(),
                    });
                }
                None => {
                    warn!("[Twilio] Transfer requested but no staff number is set");
                    session.tool_result(id, TRANSFER_FAILED, true);
                }
            },
            _ => session.tool_result(id, &format!("Unbekanntes Werkzeug: {name}"), true),
        }
    }

    /// Ends the current turn, lets the queued audio play until its end-of-turn mark returns
    /// (or a deadline), then closes.
    fn finish_after_audio(&mut self, now: Instant, outcome: Outcome) {
        if self.ending.is_some() || self.closed {
            return;
        }
        self.end_turn(now);
        self.turn_open = false;
        // The last word may already be out, its end-of-turn mark sent before the ending began
        // (the idle end of turn, then the agent's close): that mark's echo is what to wait
        // for, or the goodbye's tail is cut (docs/elevenlabs.md §7, pitfall 4). A newer mark
        // sent while draining replaces it.
        let playout = self.outbound.as_ref().map(OutboundPath::playout);
        let final_mark = playout.and_then(|p| p.newest_unechoed_mark());
        // Long closing words must not be cut by the fixed timeout: everything queued gets
        // its time to play, and a margin for Twilio's echo.
        let queued = playout.map_or(Duration::ZERO, |p| {
            Duration::from_millis(p.stats().buffered_ms + p.lead_ms_at(now))
        });
        let deadline = now
            + self
                .config
                .final_audio_timeout
                .max(queued + FINAL_AUDIO_MARGIN);
        self.ending = Some(Ending::Draining {
            outcome,
            deadline,
            mark_heard: false,
            final_mark,
        });
        self.pump_outbound(now);
    }

    fn close(&mut self, outcome: Outcome) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.events.push_back(BridgeEvent::CloseAgent);
        self.events.push_back(BridgeEvent::CloseTwilio(outcome));
    }

    fn pump_inbound(&mut self) {
        let Some(inbound) = self.inbound.as_mut() else {
            return;
        };
        while let Some(chunk) = inbound.poll_user_audio_chunk() {
            messages::write_user_audio_chunk(&mut self.scratch, chunk);
            let bytes = wire_message(&mut self.wire, &mut self.wire_reserve, &self.scratch);
            self.out.push_back(Output::ToAgent(bytes));
            self.stats.agent_chunks_sent += 1;
        }
    }

    /// Sends what the outbound path has due. Called on every input, so the caller's 20 ms
    /// frames pace it and the timer is only a fallback (docs/dsp.md §3.7): the end of a turn
    /// due before the next caller frame is taken now, not left to a wake-up of its own.
    fn pump_outbound(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.end_turn_if_due(now);
        self.send_outbound(now);
        // The sends may have brought the turn's end due at once (its last frame just left with
        // the idle time already past; found by the call_session fuzz target): take it in this
        // step, not in another wake-up at the same instant.
        if self.end_turn_if_due(now) {
            self.send_outbound(now);
        }
        self.after_sends(now);
    }

    /// Ends the agent's turn if it is over (see [`Bridge::turn_over_at`]); `true` if it did.
    fn end_turn_if_due(&mut self, now: Instant) -> bool {
        let due = self.turn_open
            && self
                .turn_over_at(now)
                .is_some_and(|t| now + CALLER_FRAME >= t);
        if due {
            self.turn_open = false;
            self.end_turn(now);
        }
        due
    }

    /// Writes what the outbound path has due for Twilio.
    fn send_outbound(&mut self, now: Instant) {
        if let (Some(outbound), Some(sid)) = (self.outbound.as_mut(), self.stream_sid.as_deref()) {
            while let Some(t) = outbound.poll_transmit(now) {
                match t {
                    Transmit::Media(payload) => {
                        media_stream::write_media(&mut self.scratch, sid, payload);
                        if self.stats.first_audio_after_start.is_none() {
                            self.stats.first_audio_after_start =
                                self.started_at.map(|s| now.saturating_duration_since(s));
                        }
                    }
                    Transmit::Mark(name) => {
                        media_stream::write_mark(&mut self.scratch, sid, name);
                        // The newest mark is the one to wait for: an echo of an earlier
                        // (periodic) mark says nothing about the audio sent after it.
                        if let Some(Ending::Draining {
                            final_mark,
                            mark_heard,
                            ..
                        }) = self.ending.as_mut()
                        {
                            *final_mark = Some(name.to_owned());
                            *mark_heard = false;
                        }
                    }
                }
                let bytes = wire_message(&mut self.wire, &mut self.wire_reserve, &self.scratch);
                self.out.push_back(Output::ToTwilio(bytes));
            }
        }
    }

    /// What follows a step's sends: the DSP pool's pad, a gone worker, the ending's drain.
    fn after_sends(&mut self, now: Instant) {
        // After this step's sends: the pacer may only now be about to run dry (found by the
        // call_session_pipeline fuzz target: a pad due at once, left to another wake-up).
        if self.pool_pad_at(now).is_some_and(|t| now >= t)
            && let Some(p) = self.pool.as_ref()
        {
            match p.complete_partial(now) {
                // Whether a pad was made comes back with its frames (`PoolOutput::Frames`).
                Ok(()) => {
                    self.pool_partial = false;
                    self.pool_pad_retry = None;
                    if let Some(o) = self.outbound.as_mut() {
                        o.pause_pad_asked();
                    }
                }
                // Counted as a drop; retried a caller frame later, not at once: the deadline
                // stays due, and an immediate retry would spin the call's timer.
                Err(_) => {
                    log_pool_drop(p, "pause pad");
                    self.pool_pad_retry = Some(now + CALLER_FRAME);
                }
            }
        }
        if self.pool.as_ref().is_some_and(PoolCall::worker_gone) {
            // No audio moves either way any more: a person takes the caller.
            warn!("[Audio] DSP worker gone; sending the caller to the fallback");
            self.close(Outcome::AgentFailed);
            return;
        }
        if let Some(Ending::Draining {
            outcome,
            deadline,
            final_mark,
            mark_heard,
        }) = &self.ending
        {
            let all_sent = self
                .outbound
                .as_ref()
                .is_none_or(|o| o.playout().stats().buffered_ms == 0 && o.poll_timeout().is_none());
            // Every end of turn sent to the pool must have come back (they may overlap).
            let all_sent = all_sent && !self.pool.as_ref().is_some_and(PoolCall::turn_end_pending);
            let heard = final_mark.is_none() || *mark_heard;
            if (all_sent && heard) || now >= *deadline {
                let outcome = *outcome;
                self.close(outcome);
            }
        }
    }
}

/// Logs a DSP pool drop (already counted) at the 1st, 2nd, 4th, 8th … of a call: rate-limited,
/// so a stalled worker cannot flood the log, yet never silent.
fn log_pool_drop(pool: &PoolCall, what: &str) {
    let drops = pool.stats().drops;
    if drops.is_power_of_two() {
        warn!(drops, "[Audio] DSP pool queue full; {what} dropped");
    }
}
