//! The only audio module that knows threads and channels. Two ways to run the audio paths off
//! the call's task, both joined to it by `crossbeam-channel`s and a wake-up callback:
//!
//! - [`DspPool`] (`AUDIO_STAGES=pipeline`, issue 16 point 3): a process-wide pool of DSP
//!   workers shared by all calls. What the server uses in that mode.
//! - [`Pipeline`]: one worker thread per call running both paths *and* the pacing. Kept for the
//!   audio benches and `tests/audio_no_alloc.rs`, which measure the bare hand-off; the server
//!   never uses it (a thread per call costs more than the DSP it moves).
//!
//! # The pool
//!
//! ```text
//!  call task (tokio)                             DSP worker i (one per core, ≤ MAX_POOL_WORKERS)
//!  ─────────────────                             ──────────────────────────────────────────────
//!  open ───────── Control::Open ─► [unbounded control] ─┐  owns CallDsp of each of its calls:
//!  push_* ─ try_send(Work+buf) ─► [bounded work queue] ─┴► InboundPath + detached OutboundPath
//!         ◄─ input buffers back ◄─ [per call, ≤ CALL_QUEUE_DEPTH] ◄┘   (no lock: one owner)
//!  drain ◄── try_recv(result) ◄── [per call, ≤ CALL_OUTPUT_DEPTH] ◄── batch done: wake() once
//!        ──► output buffers back ──►┘                                   per touched call
//!  pacer (OutboundPath for ulaw_8000) ◄─ 160-byte μ-law frames; PlayoutBuffer, marks, `clear`
//! ```
//!
//! - **Who owns what.** A call is assigned to the least-loaded worker for its life; that worker
//!   owns the call's [`InboundPath`] (base64, jitter verdict, μ-law decode, resample,
//!   `user_audio_chunk` payload) and a detached [`OutboundPath`] (base64, resample, μ-law,
//!   re-framing into 160-byte frames). Pacing stays in the call task, in an `OutboundPath` for
//!   `ulaw_8000` fed with those frames: the playout is the call's clock, its output the call's
//!   socket (docs/dsp.md §3.8, docs/twilio.md §1.4).
//! - **Never block a tokio worker.** The call side only `try_send`s and `try_recv`s; opening
//!   and closing go through an unbounded channel (one message per call, never per frame).
//! - **Drops are counted, never hidden.** A call with [`CALL_QUEUE_DEPTH`] commands queued, a
//!   worker with [`WORKER_QUEUE_DEPTH`] (less [`WORKER_CONTROL_RESERVE`]), or a call task
//!   [`CALL_OUTPUT_DEPTH`] results behind: the audio is dropped and counted ([`PoolCallStats::drops`], the call summary,
//!   `ignis_audio_pipeline_drops_total`); the bridge logs it (rate-limited). A drop loses
//!   20 ms of caller audio or an agent chunk; the call goes on. Control commands (end of
//!   turn, interruption, finish) and their results are not audio: they take no input buffer,
//!   have reserved room in the worker's queue and the call's result queue
//!   ([`CALL_CONTROL_DEPTH`]), so an end of turn is never lost to a backlog of frames and
//!   [`PoolCall::turn_end_pending`] counts the ones still out (they may overlap).
//! - **A panic fails one call, not the worker.** Each command runs under `catch_unwind`; a
//!   call whose DSP panicked is marked failed: its later commands are counted drops, its ends
//!   of turn still answered, and the worker's other calls go on.
//! - **Batched hand-off.** A worker handles everything queued (up to [`MAX_BATCH_COMMANDS`])
//!   before it wakes the calls it touched, once each; the call task drains all their results.
//! - **Backlogs.** Audio held during a call's set-up (up to 10 s) is more than a call may
//!   queue; the bridge feeds it in slices of [`PoolCall::room`] as results drain, never into a
//!   drop.
//! - **Pauses.** The partial frame and resampler tail stay on the worker; the bridge asks for
//!   them with [`PoolCall::complete_partial`] once the pool is [`PoolCall::settled`] and its
//!   pacer is about to run dry (docs/dsp.md §3.8); a refused one is retried a caller frame later.
//! - **Tests and fuzzing.** [`DspPool::manual`] makes a pool whose workers have no thread:
//!   [`DspPool::run_manual`] runs what is queued on the caller's thread, in virtual time.
//! - **Interruptions.** [`PoolCall::interrupt`] bumps the call's generation: results of agent
//!   audio queued before it are discarded when drained, so the call task drops its held audio
//!   and sends `clear` in the same step (docs/elevenlabs.md §4.4); the worker then resets its
//!   resampler and ignores older turns.
//! - **No allocation per frame.** Buffers are made on demand up to the per-call depths and then
//!   circulate; the paths allocate nothing after set-up.
//!
//! # The per-call pipeline
//!
//! ```text
//!  bridge task (tokio)                         DSP worker thread (one per call)
//!  ───────────────────                         ───────────────────────────────
//!  push_* ── try_send(Cmd) ──► [bounded cmd queue] ──► recv_deadline(poll_timeout)
//!     ▲  ◄── text buffers back ◄── [input pool] ◄──┘      │ InboundPath / OutboundPath
//!  drain ◄── try_recv(Out) ◄── [bounded out queue] ◄── try_send(Out) + notify()
//!        ──► buffers back ──► [output pool] ─────────►┘
//! ```
//!
//! Same rules (try-only calls, counted drops, circulating buffers); the playout buffer's
//! deadline becomes the worker's `recv_deadline`, read through the `clock` function given at
//! spawn (default `Instant::now`, the one clock read in `audio`).

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};

use super::format::AgentFormat;
use super::inbound::{InboundConfig, InboundPath, InboundStats};
use super::outbound::{OutboundConfig, OutboundPath, OutboundStats};
use super::playout::{Interruption, MarkEcho, Transmit};
use super::resample::ResampleSetupError;

/// Stack of the DSP worker thread (the paths keep their buffers on the heap).
pub const WORKER_STACK_BYTES: usize = 256 * 1024;
/// Cap on [`PipelineConfig::max_text_chars`].
pub const MAX_TEXT_CHARS: usize = 1 << 20;

/// Pipeline settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Commands that may wait for the worker (and input buffers). Default 64 (over a second of
    /// Twilio frames).
    pub queue_depth: usize,
    /// Outputs that may wait for the bridge (and output buffers). Default 256.
    pub output_depth: usize,
    /// Capacity of each input text buffer, chars. Larger agent chunks are split across
    /// commands; larger Twilio payloads (> 3 KiB decoded, Twilio sends 160 bytes) are dropped.
    /// Default 4096: with the default depth that is 256 KiB of input buffers per call.
    pub max_text_chars: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            queue_depth: 64,
            output_depth: 256,
            max_text_chars: 4096,
        }
    }
}

/// A command could not be queued (queue full, no free buffer, payload too large, or the worker
/// is gone). Counted in [`PipelineCounters`]; the bridge logs it and carries on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped;

error_text!(Dropped => "audio pipeline queue full; command dropped");

/// Why the pipeline could not start.
#[derive(Debug)]
pub enum SpawnError {
    /// A path could not be built for the format.
    Setup(ResampleSetupError),
    /// The OS refused the thread.
    Thread(std::io::Error),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Setup(e) => write!(f, "audio path setup failed: {e}"),
            Self::Thread(e) => write!(f, "could not spawn the DSP thread: {e}"),
        }
    }
}

impl std::error::Error for SpawnError {}

/// Drop counters of the hand-off (the paths' own counters come via
/// [`Pipeline::request_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineCounters {
    /// Commands refused by the bridge-side calls (queue full / no buffer / too large).
    pub commands_dropped: u64,
    /// Outputs the worker could not queue (bridge not draining).
    pub outputs_dropped: u64,
}

#[derive(Default)]
struct Counters {
    commands_dropped: AtomicU64,
    outputs_dropped: AtomicU64,
}

/// Something for the bridge to act on, borrowed for the duration of the drain callback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PipelineOutput<'a> {
    /// Send `{"user_audio_chunk": …}` to ElevenLabs with this base64 text.
    UserAudioChunk(&'a str),
    /// Send Twilio `media` with this base64 payload.
    Media(&'a str),
    /// Send Twilio `mark` with this name.
    Mark(&'a str),
    /// Send Twilio `clear` (after an interruption).
    Clear(Interruption),
    /// What a Twilio mark echo told.
    MarkEcho(MarkEcho),
    /// Counters of both paths, answering [`Pipeline::request_stats`].
    Stats(&'a InboundStats, &'a OutboundStats),
}

enum Cmd {
    TwilioMedia {
        now: Instant,
        chunk: u64,
        timestamp_ms: u64,
        text: String,
    },
    AgentAudio {
        now: Instant,
        event_id: u64,
        text: String,
    },
    EndOfTurn,
    Interrupt {
        now: Instant,
        event_id: Option<u64>,
    },
    MarkEcho(String),
    Stats,
}

enum Out {
    UserAudio(String),
    Media(String),
    Mark(String),
    Clear(Interruption),
    MarkEcho(MarkEcho),
    Stats(Box<(InboundStats, OutboundStats)>),
}

type Clock = Box<dyn Fn() -> Instant + Send>;

/// The bridge-side handle of one call's DSP worker (see the module docs).
pub struct Pipeline {
    cmd_tx: Sender<Cmd>,
    in_pool: Receiver<String>,
    out_rx: Receiver<Out>,
    out_pool: Sender<String>,
    counters: Arc<Counters>,
    max_text: usize,
    worker: Option<thread::JoinHandle<()>>,
}

impl Pipeline {
    /// Builds both paths for `format` and starts the worker. `notify` is called (on the worker
    /// thread) whenever new output is ready for [`Pipeline::drain`].
    pub fn spawn(
        format: AgentFormat,
        inbound: InboundConfig,
        outbound: OutboundConfig,
        config: PipelineConfig,
        notify: impl Fn() + Send + 'static,
    ) -> Result<Self, SpawnError> {
        Self::spawn_with_clock(format, inbound, outbound, config, notify, Instant::now)
    }

    /// As [`Pipeline::spawn`], with the default inbound, outbound and pipeline configuration.
    pub fn spawn_default(
        format: AgentFormat,
        notify: impl Fn() + Send + 'static,
    ) -> Result<Self, SpawnError> {
        let (inbound, outbound) = (InboundConfig::default(), OutboundConfig::default());
        Self::spawn(format, inbound, outbound, PipelineConfig::default(), notify)
    }

    /// As [`Pipeline::spawn`], with the clock the worker paces by (tests, simulations).
    pub fn spawn_with_clock(
        format: AgentFormat,
        inbound: InboundConfig,
        outbound: OutboundConfig,
        config: PipelineConfig,
        notify: impl Fn() + Send + 'static,
        clock: impl Fn() -> Instant + Send + 'static,
    ) -> Result<Self, SpawnError> {
        let inbound = InboundPath::new(format, inbound).map_err(SpawnError::Setup)?;
        let outbound = OutboundPath::new(format, outbound).map_err(SpawnError::Setup)?;
        let depth = config.queue_depth.max(1);
        let out_depth = config.output_depth.max(1);
        let max_text = config.max_text_chars.clamp(64, MAX_TEXT_CHARS) / 4 * 4;
        // Largest output: a payload batch or a media message of the most frames allowed.
        let media_bytes = outbound.playout().config().max_frames_per_message * 160;
        let out_text = (inbound.batch_bytes().max(media_bytes) / 3 + 2) * 4;

        let (cmd_tx, cmd_rx) = bounded(depth);
        let (in_pool_tx, in_pool) = bounded(depth);
        let (out_tx, out_rx) = bounded(out_depth);
        let (out_pool, out_pool_rx) = bounded(out_depth);
        for _ in 0..depth {
            let _ = in_pool_tx.try_send(String::with_capacity(max_text));
        }
        for _ in 0..out_depth {
            let _ = out_pool.try_send(String::with_capacity(out_text));
        }
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            inbound,
            outbound,
            cmd_rx,
            in_pool: in_pool_tx,
            out_tx,
            out_pool: out_pool_rx,
            counters: Arc::clone(&counters),
            notify: Box::new(notify),
            clock: Box::new(clock),
            produced: false,
        };
        let handle = thread::Builder::new()
            .name("ignis-dsp".into())
            .stack_size(WORKER_STACK_BYTES)
            .spawn(move || worker.run())
            .map_err(SpawnError::Thread)?;
        Ok(Self {
            cmd_tx,
            in_pool,
            out_rx,
            out_pool,
            counters,
            max_text,
            worker: Some(handle),
        })
    }

    fn dropped(&self) -> Dropped {
        self.counters
            .commands_dropped
            .fetch_add(1, Ordering::Relaxed);
        Dropped
    }

    fn send(&self, cmd: Cmd) -> Result<(), Dropped> {
        match self.cmd_tx.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(self.dropped()),
        }
    }

    /// A free input buffer holding `text`, or a (counted) drop if none is free / it is too long.
    fn buffer(&self, text: &str) -> Result<String, Dropped> {
        if text.len() > self.max_text {
            return Err(self.dropped());
        }
        let Ok(mut buf) = self.in_pool.try_recv() else {
            return Err(self.dropped());
        };
        buf.clear();
        buf.push_str(text);
        Ok(buf)
    }

    /// Queues a Twilio `media` frame (see [`InboundPath::push_twilio_media`]). Never blocks.
    pub fn push_twilio_media(
        &self,
        now: Instant,
        chunk: u64,
        timestamp_ms: u64,
        payload_b64: &str,
    ) -> Result<(), Dropped> {
        let text = self.buffer(payload_b64)?;
        self.send(Cmd::TwilioMedia {
            now,
            chunk,
            timestamp_ms,
            text,
        })
    }

    /// Queues agent audio (see [`OutboundPath::push_agent_audio`]), split into buffer-sized
    /// pieces at 4-character boundaries (valid base64 each). Never blocks; on a drop the rest
    /// of the chunk is dropped too.
    pub fn push_agent_audio(
        &self,
        now: Instant,
        event_id: u64,
        audio_b64: &str,
    ) -> Result<(), Dropped> {
        let mut rest = audio_b64;
        while !rest.is_empty() {
            let cut = rest.len().min(self.max_text);
            // `max_text` is a multiple of 4; a non-ASCII cut point means invalid base64 anyway.
            let (piece, tail) = match (rest.get(..cut), rest.get(cut..)) {
                (Some(p), Some(t)) => (p, t),
                _ => (rest, ""),
            };
            let text = self.buffer(piece)?;
            self.send(Cmd::AgentAudio {
                now,
                event_id,
                text,
            })?;
            rest = tail;
        }
        Ok(())
    }

    /// Queues the end of the agent's turn (see [`OutboundPath::end_of_turn`]).
    pub fn end_of_turn(&self) -> Result<(), Dropped> {
        self.send(Cmd::EndOfTurn)
    }

    /// Queues an interruption (see [`OutboundPath::interrupt`]); a
    /// [`PipelineOutput::Clear`] follows when Twilio must be told.
    pub fn interrupt(&self, now: Instant, event_id: Option<u64>) -> Result<(), Dropped> {
        self.send(Cmd::Interrupt { now, event_id })
    }

    /// Queues a Twilio mark echo; a [`PipelineOutput::MarkEcho`] follows if it was ours.
    pub fn handle_mark_echo(&self, name: &str) -> Result<(), Dropped> {
        self.send(Cmd::MarkEcho(self.buffer(name)?))
    }

    /// Asks for a [`PipelineOutput::Stats`] snapshot.
    pub fn request_stats(&self) -> Result<(), Dropped> {
        self.send(Cmd::Stats)
    }

    /// Hands every ready output to `f`, in order, without blocking; returns how many.
    pub fn drain(&self, mut f: impl FnMut(PipelineOutput<'_>)) -> usize {
        let mut n = 0;
        while let Ok(out) = self.out_rx.try_recv() {
            n += 1;
            let text = match out {
                Out::UserAudio(s) => {
                    f(PipelineOutput::UserAudioChunk(&s));
                    s
                }
                Out::Media(s) => {
                    f(PipelineOutput::Media(&s));
                    s
                }
                Out::Mark(s) => {
                    f(PipelineOutput::Mark(&s));
                    s
                }
                Out::Clear(i) => {
                    f(PipelineOutput::Clear(i));
                    continue;
                }
                Out::MarkEcho(e) => {
                    f(PipelineOutput::MarkEcho(e));
                    continue;
                }
                Out::Stats(s) => {
                    f(PipelineOutput::Stats(&s.0, &s.1));
                    continue;
                }
            };
            let _ = self.out_pool.try_send(text);
        }
        n
    }

    /// Drop counters of the hand-off.
    pub fn counters(&self) -> PipelineCounters {
        PipelineCounters {
            commands_dropped: self.counters.commands_dropped.load(Ordering::Relaxed),
            outputs_dropped: self.counters.outputs_dropped.load(Ordering::Relaxed),
        }
    }

    /// Stops the worker and waits for it (it finishes the command in hand first). Dropping the
    /// handle also stops it, without waiting.
    pub fn shutdown(mut self) {
        let (tx, _) = bounded(1);
        drop(std::mem::replace(&mut self.cmd_tx, tx));
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
    }
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("counters", &self.counters())
            .finish()
    }
}

struct Worker {
    inbound: InboundPath,
    outbound: OutboundPath,
    cmd_rx: Receiver<Cmd>,
    in_pool: Sender<String>,
    out_tx: Sender<Out>,
    out_pool: Receiver<String>,
    counters: Arc<Counters>,
    notify: Box<dyn Fn() + Send>,
    clock: Clock,
    produced: bool,
}

impl Worker {
    fn run(mut self) {
        loop {
            let cmd = match self.outbound.poll_timeout() {
                Some(deadline) => match self.cmd_rx.recv_deadline(deadline) {
                    Ok(cmd) => Some(cmd),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match self.cmd_rx.recv() {
                    Ok(cmd) => Some(cmd),
                    Err(_) => return,
                },
            };
            if let Some(cmd) = cmd {
                self.handle(cmd);
                // Handle whatever else is already queued before waking the bridge.
                while let Ok(cmd) = self.cmd_rx.try_recv() {
                    self.handle(cmd);
                }
            }
            self.transmit();
            if std::mem::take(&mut self.produced) {
                (self.notify)();
            }
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::TwilioMedia {
                now,
                chunk,
                timestamp_ms,
                text,
            } => {
                // Bad frames are counted in the inbound stats.
                let _ = self
                    .inbound
                    .push_twilio_media(now, chunk, timestamp_ms, &text);
                let _ = self.in_pool.try_send(text);
                while let Some(p) = self.inbound.poll_user_audio_chunk() {
                    let Some(buf) = fill(&self.out_pool, p) else {
                        self.counters
                            .outputs_dropped
                            .fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    emit(&self.out_tx, &self.counters, Out::UserAudio(buf));
                    self.produced = true;
                }
            }
            Cmd::AgentAudio {
                now,
                event_id,
                text,
            } => {
                let _ = self.outbound.push_agent_audio(now, event_id, &text);
                let _ = self.in_pool.try_send(text);
            }
            Cmd::EndOfTurn => self.outbound.end_of_turn(),
            Cmd::Interrupt { now, event_id } => {
                let i = self.outbound.interrupt(now, event_id);
                if i.send_clear {
                    emit(&self.out_tx, &self.counters, Out::Clear(i));
                    self.produced = true;
                }
            }
            Cmd::MarkEcho(text) => {
                if let Some(e) = self.outbound.handle_mark_echo(&text) {
                    emit(&self.out_tx, &self.counters, Out::MarkEcho(e));
                    self.produced = true;
                }
                let _ = self.in_pool.try_send(text);
            }
            Cmd::Stats => {
                let s = Box::new((self.inbound.stats(), self.outbound.stats()));
                emit(&self.out_tx, &self.counters, Out::Stats(s));
                self.produced = true;
            }
        }
    }

    /// Sends everything the playout buffer has due now.
    fn transmit(&mut self) {
        let now = (self.clock)();
        while let Some(t) = self.outbound.poll_transmit(now) {
            let (text, media) = match t {
                Transmit::Media(s) => (s, true),
                Transmit::Mark(s) => (s, false),
            };
            let Some(buf) = fill(&self.out_pool, text) else {
                self.counters
                    .outputs_dropped
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let out = if media {
                Out::Media(buf)
            } else {
                Out::Mark(buf)
            };
            emit(&self.out_tx, &self.counters, out);
            self.produced = true;
        }
    }
}

/// A pooled output buffer holding `text` (no allocation while `text` fits its capacity).
fn fill(pool: &Receiver<String>, text: &str) -> Option<String> {
    let mut buf = pool.try_recv().ok()?;
    buf.clear();
    buf.push_str(text);
    Some(buf)
}

fn emit(tx: &Sender<Out>, counters: &Counters, out: Out) {
    if tx.try_send(out).is_err() {
        counters.outputs_dropped.fetch_add(1, Ordering::Relaxed);
    }
}

// ─── The shared DSP pool (issue 16 point 3) ──────────────────────────────────────────────────

/// Most DSP workers in the pool, whatever the core count: DSP is a small share of a call's
/// cost, and the call tasks need the cores too.
pub const MAX_POOL_WORKERS: usize = 8;
/// Commands one call may have queued on its worker: 128 × 20 ms = 2.56 s of caller frames, room
/// for a burst after a network stall (Twilio then delivers a second of frames at once). Every
/// command carries one of the call's input buffers, at most this many, so a worker's queue
/// holds at most `calls × CALL_QUEUE_DEPTH` commands: the bound of its command channel.
pub const CALL_QUEUE_DEPTH: usize = 128;
/// Audio results waiting for one call task (and its output buffers): a command yields at most
/// one; the call task drains them at every wake-up. Control results have their own slots
/// ([`CALL_CONTROL_DEPTH`]).
pub const CALL_OUTPUT_DEPTH: usize = CALL_QUEUE_DEPTH;
/// Agent base64 per command; longer chunks are split (a multiple of 4: valid base64 each).
pub const AGENT_PIECE_CHARS: usize = 4096;
/// Commands queued for one worker over all its calls (about 80 bytes each, allocated when the
/// pool starts): 8192 is 0.4 s of every frame of 400 calls. A full queue is a counted drop.
pub const WORKER_QUEUE_DEPTH: usize = 8192;
/// Control commands (end of turn, interruption, finish) of one call whose results may be in
/// flight at once. They are rare (a few per turn) and never compete with audio for room: they
/// take no input buffer, and the call's result queue keeps this many slots for their results
/// beyond [`CALL_OUTPUT_DEPTH`], so an end of turn is never lost to a backlog of frames.
pub const CALL_CONTROL_DEPTH: usize = 16;
/// Slots of a worker's queue only control commands may take: audio is refused (a counted drop)
/// once the queue is this close to [`WORKER_QUEUE_DEPTH`]. Concurrent senders may overshoot
/// the mark by one command each (a handful of call tasks), far less than this.
pub const WORKER_CONTROL_RESERVE: usize = 1024;
/// Commands a worker handles before it wakes the calls they touched, so a flooded worker still
/// signals (most batches are far smaller: whatever queued while the last one ran).
pub const MAX_BATCH_COMMANDS: usize = 512;
/// Starting capacity of a circulating buffer; each grows once to what its call needs
/// (216 chars for a Twilio frame, up to [`AGENT_PIECE_CHARS`] for agent audio).
const INITIAL_BUFFER_BYTES: usize = 256;

/// Where a call's DSP runs (`AUDIO_STAGES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AudioStages {
    /// In the call's task, as each message is handled.
    #[default]
    Inline,
    /// On the process-wide [`DspPool`]; pacing stays in the call's task.
    Pipeline,
}

impl AudioStages {
    /// Both modes, for config parsing and benches.
    pub const ALL: [AudioStages; 2] = [AudioStages::Inline, AudioStages::Pipeline];

    /// The `AUDIO_STAGES` value of this mode.
    pub const fn name(self) -> &'static str {
        match self {
            AudioStages::Inline => "inline",
            AudioStages::Pipeline => "pipeline",
        }
    }
}

/// The call's wake-up: called on the worker thread once per batch that produced output for the
/// call (e.g. `tokio::sync::Notify::notify_one`).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// The pool and the call's wake-up, as the bridge needs them to open a [`PoolCall`].
#[derive(Clone)]
pub struct PoolLink {
    /// The process-wide pool.
    pub pool: Arc<DspPool>,
    /// This call's wake-up.
    pub wake: Wake,
}

impl fmt::Debug for PoolLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolLink")
            .field("workers", &self.pool.workers())
            .finish()
    }
}

enum Job {
    Media {
        chunk: u64,
        timestamp_ms: u64,
    },
    Agent {
        generation: u64,
        event_id: u64,
    },
    EndOfTurn {
        generation: u64,
    },
    Interrupt {
        event_id: Option<u64>,
    },
    CompletePartial {
        generation: u64,
    },
    Finish,
    /// A DSP failure, for the test of [`CallDsp::work_guarded`].
    #[cfg(test)]
    Panic,
}

impl Job {
    /// Control commands carry no input buffer (an empty `String`, no allocation): they never
    /// run out of room behind audio.
    fn is_control(&self) -> bool {
        matches!(
            self,
            Job::EndOfTurn { .. }
                | Job::Interrupt { .. }
                | Job::CompletePartial { .. }
                | Job::Finish
        )
    }
}

/// A call's command for its worker, carrying one of the call's circulating input buffers.
struct Work {
    call: u64,
    now: Instant,
    job: Job,
    text: String,
}

/// Opening and closing a call: on their own unbounded channel, so a full work queue can never
/// refuse a call or leak one's state (one message per call, not per frame).
enum Control {
    Open(Box<CallDsp>),
    Close(u64),
}

enum PoolOut {
    UserAudio(Vec<u8>),
    Frames {
        generation: u64,
        event_id: u64,
        ulaw: Vec<u8>,
        padded: bool,
    },
    EndOfTurn {
        generation: u64,
    },
}

/// A result of the pool for one call, borrowed for the duration of [`PoolCall::drain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolOutput<'a> {
    /// Send `{"user_audio_chunk": …}` to ElevenLabs with this base64 text.
    UserAudioChunk(&'a str),
    /// Whole 160-byte μ-law frames of agent turn `event_id`, for the call's pacer
    /// ([`OutboundPath::push_agent_bytes`]).
    Frames {
        /// The agent turn.
        event_id: u64,
        /// The frames.
        ulaw: &'a [u8],
        /// The last frame was completed with silence by a pause pad
        /// ([`PoolCall::complete_partial`]): the agent's next chunk comes late
        /// ([`OutboundPath::pause_pad_made`], docs/dsp.md §3.9).
        padded: bool,
    },
    /// Everything queued before [`PoolCall::end_of_turn`] has been delivered: end the pacer's
    /// turn ([`OutboundPath::end_of_turn`]).
    EndOfTurn,
}

/// Counters of one call on the pool, readable from the call's task at any time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PoolCallStats {
    /// Commands refused because the call had [`CALL_QUEUE_DEPTH`] queued, plus results the
    /// worker could not queue because the call task was [`CALL_OUTPUT_DEPTH`] behind. Audio
    /// lost, counted, never a wait. Also every command after a panic of the call's DSP.
    pub drops: u64,
    /// Agent results discarded because an interruption came after their command (by tag).
    pub discarded: u64,
    /// Inbound counters as last published by the worker.
    pub bad_frames: u64,
    /// Agent chunks rejected (bad base64, too large).
    pub bad_agent_chunks: u64,
    /// Caller audio concealed, ms.
    pub concealed_ms: f64,
    /// Partial frames padded in a pause of the agent ([`PoolCall::complete_partial`]).
    pub pause_pads: u64,
}

#[derive(Default)]
struct CallShared {
    /// Commands of the call the worker has handled, their results queued (see
    /// [`PoolCall::settled`]).
    done: AtomicU64,
    pause_pads: AtomicU64,
    drops: AtomicU64,
    bad_frames: AtomicU64,
    bad_agent_chunks: AtomicU64,
    concealed_ms_bits: AtomicU64,
}

/// One call's DSP state, owned by one worker for the call's life (no lock).
struct CallDsp {
    id: u64,
    inbound: InboundPath,
    outbound: OutboundPath,
    in_pool: Sender<String>,
    out_tx: Sender<PoolOut>,
    out_pool: Receiver<Vec<u8>>,
    /// Output buffers made so far (at most [`CALL_OUTPUT_DEPTH`]).
    out_made: usize,
    shared: Arc<CallShared>,
    wake: Wake,
    touched: bool,
    /// The pool's drop counter ([`DspPool::drops_total`]), for the drops counted here.
    pool_drops: Arc<AtomicU64>,
    /// The call's DSP panicked: its state is no longer trusted; every later command is a
    /// counted drop, and its ends of turn are still answered.
    failed: bool,
}

struct PoolWorker {
    work: Sender<Work>,
    control: Sender<Control>,
    /// Calls assigned to this worker (least loaded wins).
    calls: Arc<AtomicUsize>,
}

/// A process-wide pool of DSP worker threads shared by all calls (see the module docs).
pub struct DspPool {
    workers: Vec<PoolWorker>,
    next_id: AtomicU64,
    drops: Arc<AtomicU64>,
    /// Workers with no thread, run on the caller's thread by [`DspPool::run_manual`]
    /// ([`DspPool::manual`]: tests and fuzzing); `None` once stopped.
    manual: Vec<Mutex<Option<PoolThread>>>,
}

impl fmt::Debug for DspPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DspPool")
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl DspPool {
    /// One worker per available core, at most [`MAX_POOL_WORKERS`].
    pub fn with_default_workers() -> Result<Arc<Self>, SpawnError> {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores)
    }

    /// A pool of `workers` threads (clamped to 1..=[`MAX_POOL_WORKERS`]). They live as long as
    /// a handle ([`DspPool`] or [`PoolCall`]) does.
    pub fn new(workers: usize) -> Result<Arc<Self>, SpawnError> {
        let mut list = Vec::new();
        for i in 0..workers.clamp(1, MAX_POOL_WORKERS) {
            let (work, work_rx) = bounded(WORKER_QUEUE_DEPTH);
            let (control, control_rx) = crossbeam_channel::unbounded();
            let worker = PoolThread {
                work: work_rx,
                control: control_rx,
                calls: std::collections::HashMap::new(),
                touched: Vec::new(),
            };
            thread::Builder::new()
                .name(format!("ignis-dsp-{i}"))
                .stack_size(WORKER_STACK_BYTES)
                .spawn(move || worker.run())
                .map_err(SpawnError::Thread)?;
            list.push(PoolWorker {
                work,
                control,
                calls: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Arc::new(Self {
            workers: list,
            next_id: AtomicU64::new(1),
            drops: Arc::new(AtomicU64::new(0)),
            manual: Vec::new(),
        }))
    }

    /// A pool whose `workers` (clamped to 1..=[`MAX_POOL_WORKERS`]) have no thread: their
    /// commands wait, up to `queue_depth` per worker (clamped to 1..=[`WORKER_QUEUE_DEPTH`]),
    /// until [`DspPool::run_manual`] runs them on the caller's thread. For tests and fuzzing in
    /// virtual time: the worker runs exactly when the test says so, and a small queue fills.
    pub fn manual(workers: usize, queue_depth: usize) -> Arc<Self> {
        let mut list = Vec::new();
        let mut manual = Vec::new();
        for _ in 0..workers.clamp(1, MAX_POOL_WORKERS) {
            let (work, work_rx) = bounded(queue_depth.clamp(1, WORKER_QUEUE_DEPTH));
            let (control, control_rx) = crossbeam_channel::unbounded();
            manual.push(Mutex::new(Some(PoolThread {
                work: work_rx,
                control: control_rx,
                calls: std::collections::HashMap::new(),
                touched: Vec::new(),
            })));
            list.push(PoolWorker {
                work,
                control,
                calls: Arc::new(AtomicUsize::new(0)),
            });
        }
        Arc::new(Self {
            workers: list,
            next_id: AtomicU64::new(1),
            drops: Arc::new(AtomicU64::new(0)),
            manual,
        })
    }

    /// Runs everything queued for a [`DspPool::manual`] pool's workers, on this thread, as
    /// their threads would (batches, then one wake-up per touched call); returns how many
    /// commands ran. Nothing for a threaded pool.
    pub fn run_manual(&self) -> usize {
        let mut ran = 0;
        for w in &self.manual {
            let mut w = w.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(w) = w.as_mut() {
                ran += w.run_pending();
            }
        }
        ran
    }

    /// Stops a [`DspPool::manual`] pool's workers as if their threads had died: their calls'
    /// commands are refused from now on ([`PoolCall::worker_gone`]).
    pub fn stop_manual(&self) {
        for w in &self.manual {
            w.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
        }
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Drops of every call so far, on either side of the queues (see [`PoolCallStats::drops`]).
    pub fn drops_total(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }

    /// Opens a call on the least loaded worker: builds its paths (caller audio to `input`,
    /// agent audio from `output`) there for the call's life. `wake` is called once per batch
    /// that produced results for it. Never blocks.
    pub fn open(
        &self,
        input: AgentFormat,
        output: AgentFormat,
        inbound: InboundConfig,
        engine: super::resample::Engine,
        wake: Wake,
    ) -> Result<PoolCall, SpawnError> {
        let inbound = InboundPath::new(input, inbound).map_err(SpawnError::Setup)?;
        let outbound = OutboundPath::new_detached(output, engine).map_err(SpawnError::Setup)?;
        let Some(worker) = self
            .workers
            .iter()
            .min_by_key(|w| w.calls.load(Ordering::Relaxed))
        else {
            return Err(SpawnError::Thread(std::io::Error::other("no DSP worker")));
        };
        worker.calls.fetch_add(1, Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Buffers are made on demand up to the depths, then circulate: a call's memory follows
        // its largest burst, and the steady state allocates nothing.
        let (in_pool_tx, in_pool) = bounded(CALL_QUEUE_DEPTH);
        // Data results are bounded by the output buffers (CALL_OUTPUT_DEPTH); control results
        // by `PoolCall::turn_ends` (CALL_CONTROL_DEPTH): the queue can always take both.
        let (out_tx, out_rx) = bounded(CALL_OUTPUT_DEPTH + CALL_CONTROL_DEPTH);
        let (out_pool, out_pool_rx) = bounded(CALL_OUTPUT_DEPTH);
        let shared = Arc::new(CallShared::default());
        let dsp = CallDsp {
            id,
            inbound,
            outbound,
            in_pool: in_pool_tx,
            out_tx,
            out_pool: out_pool_rx,
            out_made: 0,
            shared: Arc::clone(&shared),
            wake,
            touched: false,
            pool_drops: Arc::clone(&self.drops),
            failed: false,
        };
        // Unbounded: never waits; fails only if the worker is gone.
        if worker.control.send(Control::Open(Box::new(dsp))).is_err() {
            worker.calls.fetch_sub(1, Ordering::Relaxed);
            let e = std::io::Error::other("DSP worker gone");
            return Err(SpawnError::Thread(e));
        }
        Ok(PoolCall {
            id,
            work: worker.work.clone(),
            control: worker.control.clone(),
            calls: Arc::clone(&worker.calls),
            in_pool,
            in_made: Cell::new(0),
            out_rx,
            out_pool,
            shared,
            pool_drops: Arc::clone(&self.drops),
            generation: 0,
            discarded: 0,
            turn_ends: Cell::new(0),
            turn_ends_now: Cell::new(0),
            sent: Cell::new(0),
            drained_done: 0,
            gone: Cell::new(false),
        })
    }
}

/// The call task's handle of its DSP on the pool. Every call is `try_*`: nothing here waits.
/// Dropping it closes the call on its worker.
pub struct PoolCall {
    id: u64,
    work: Sender<Work>,
    control: Sender<Control>,
    calls: Arc<AtomicUsize>,
    in_pool: Receiver<String>,
    /// Input buffers made so far (at most [`CALL_QUEUE_DEPTH`]).
    in_made: Cell<usize>,
    out_rx: Receiver<PoolOut>,
    out_pool: Sender<Vec<u8>>,
    shared: Arc<CallShared>,
    pool_drops: Arc<AtomicU64>,
    /// Bumped by every interruption; agent results of an older generation are discarded.
    generation: u64,
    discarded: u64,
    /// Ends of turn queued whose [`PoolOut::EndOfTurn`] has not been drained (they may
    /// overlap; at most [`CALL_CONTROL_DEPTH`]).
    turn_ends: Cell<usize>,
    /// Of those, the ones queued since the last interruption (whose result ends the pacer's
    /// turn: an older one is discarded).
    turn_ends_now: Cell<usize>,
    /// Commands queued so far, and how many of them the worker had handled at the last
    /// [`PoolCall::drain`] (see [`PoolCall::settled`]).
    sent: Cell<u64>,
    drained_done: u64,
    /// A command was refused because the worker is gone ([`PoolCall::worker_gone`]).
    gone: Cell<bool>,
}

impl fmt::Debug for PoolCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolCall")
            .field("id", &self.id)
            .field("stats", &self.stats())
            .finish()
    }
}

impl PoolCall {
    fn dropped(&self) -> Dropped {
        self.shared.drops.fetch_add(1, Ordering::Relaxed);
        self.pool_drops.fetch_add(1, Ordering::Relaxed);
        Dropped
    }

    /// Queues `job` with `text` in a circulating buffer; a counted drop if the call already
    /// has [`CALL_QUEUE_DEPTH`] commands queued.
    fn send(&self, now: Instant, job: Job, text: &str) -> Result<(), Dropped> {
        // The last slots of the worker's queue are kept for control commands.
        if self.work.len() + WORKER_CONTROL_RESERVE >= WORKER_QUEUE_DEPTH {
            return Err(self.dropped());
        }
        let mut buf = match self.in_pool.try_recv() {
            Ok(b) => b,
            Err(_) if self.in_made.get() < CALL_QUEUE_DEPTH => {
                self.in_made.set(self.in_made.get() + 1);
                String::with_capacity(INITIAL_BUFFER_BYTES.max(text.len()))
            }
            Err(_) => return Err(self.dropped()),
        };
        buf.clear();
        buf.push_str(text);
        let work = Work {
            call: self.id,
            now,
            job,
            text: buf,
        };
        match self.work.try_send(work) {
            Ok(()) => {
                self.sent.set(self.sent.get() + 1);
                Ok(())
            }
            Err(e) => {
                // The buffer went with the refused command; one may be made again.
                self.in_made.set(self.in_made.get().saturating_sub(1));
                self.gone.set(self.gone.get() || e.is_disconnected());
                Err(self.dropped())
            }
        }
    }

    /// Queues a control command: no input buffer, the worker queue's reserve; refused only if
    /// the worker's queue is entirely full or the worker is gone (counted).
    fn send_control(&self, now: Instant, job: Job) -> Result<(), Dropped> {
        let work = Work {
            call: self.id,
            now,
            job,
            text: String::new(),
        };
        if let Err(e) = self.work.try_send(work) {
            self.gone.set(self.gone.get() || e.is_disconnected());
            return Err(self.dropped());
        }
        self.sent.set(self.sent.get() + 1);
        Ok(())
    }

    /// Whether a command was refused because the call's worker is gone (its thread ended):
    /// nothing of the call's audio moves any more, and the bridge fails the call.
    pub fn worker_gone(&self) -> bool {
        self.gone.get()
    }

    /// Queues a Twilio `media` frame (see [`InboundPath::push_twilio_media`]).
    pub fn push_twilio_media(
        &self,
        now: Instant,
        chunk: u64,
        timestamp_ms: u64,
        payload_b64: &str,
    ) -> Result<(), Dropped> {
        let job = Job::Media {
            chunk,
            timestamp_ms,
        };
        self.send(now, job, payload_b64)
    }

    /// Queues agent audio of turn `event_id` (see [`OutboundPath::push_agent_audio`]), in
    /// pieces of [`AGENT_PIECE_CHARS`]; on a drop the rest of the chunk is dropped too. The
    /// worker checks each piece alone: check the whole chunk first
    /// ([`super::outbound::check_agent_audio`], as the bridge does) so a bad one is refused whole.
    pub fn push_agent_audio(
        &self,
        now: Instant,
        event_id: u64,
        audio_b64: &str,
    ) -> Result<(), Dropped> {
        let mut rest = audio_b64;
        while !rest.is_empty() {
            let cut = rest.len().min(AGENT_PIECE_CHARS);
            // A non-ASCII cut point means invalid base64: sent whole, rejected by the worker.
            let (piece, tail) = match (rest.get(..cut), rest.get(cut..)) {
                (Some(p), Some(t)) => (p, t),
                _ => (rest, ""),
            };
            let job = Job::Agent {
                generation: self.generation,
                event_id,
            };
            self.send(now, job, piece)?;
            rest = tail;
        }
        Ok(())
    }

    /// Queues the end of the agent's turn: the worker flushes the resampler and pads the last
    /// frame, then [`PoolOutput::EndOfTurn`] follows the frames. A control command: its result
    /// is never dropped; refused (counted) only with [`CALL_CONTROL_DEPTH`] ends of turn in
    /// flight or a full worker queue.
    pub fn end_of_turn(&self, now: Instant) -> Result<(), Dropped> {
        if self.turn_ends.get() >= CALL_CONTROL_DEPTH {
            return Err(self.dropped());
        }
        let job = Job::EndOfTurn {
            generation: self.generation,
        };
        self.send_control(now, job)?;
        self.turn_ends.set(self.turn_ends.get() + 1);
        self.turn_ends_now.set(self.turn_ends_now.get() + 1);
        Ok(())
    }

    /// The agent paused: the worker pushes out the resampler tail and pads the partial frame
    /// with silence, so it plays before the pause rather than in front of the next sentence
    /// (docs/dsp.md §3.8). Its frames come as [`PoolOutput::Frames`]. A control command.
    pub fn complete_partial(&self, now: Instant) -> Result<(), Dropped> {
        let job = Job::CompletePartial {
            generation: self.generation,
        };
        self.send_control(now, job)
    }

    /// How many more audio commands may be queued now without a drop: [`CALL_QUEUE_DEPTH`]
    /// less the commands in flight and the results not yet drained (a command yields at most
    /// one). For a backlog (caller audio held during set-up), fed as results drain.
    pub fn room(&self) -> usize {
        let in_flight = self.in_made.get().saturating_sub(self.in_pool.len());
        CALL_QUEUE_DEPTH.saturating_sub(in_flight + self.out_rx.len())
    }

    /// Whether every command queued so far has been handled by the worker and its results
    /// handed out by [`PoolCall::drain`] (as of the last drain): what the call's pacer holds
    /// is then all the agent audio there is.
    pub fn settled(&self) -> bool {
        self.drained_done == self.sent.get()
    }

    /// Whether an end of turn is queued whose [`PoolOutput::EndOfTurn`] has not been drained
    /// yet (of any generation: the worker still holds that turn's tail).
    pub fn turn_end_pending(&self) -> bool {
        self.turn_ends.get() > 0
    }

    /// Whether an end of turn queued since the last interruption has not been drained yet: the
    /// pacer's turn is over upstream, and ends when [`PoolOutput::EndOfTurn`] comes back.
    pub fn turn_end_on_its_way(&self) -> bool {
        self.turn_ends_now.get() > 0
    }

    /// An interruption: from now on, agent results of commands queued before it are discarded
    /// by [`PoolCall::drain`] (so the call's pacer can drop its held audio and send `clear` in
    /// the same step), and the worker resets its resampler and ignores audio of turns older
    /// than `event_id`.
    pub fn interrupt(&mut self, now: Instant, event_id: Option<u64>) -> Result<(), Dropped> {
        self.generation += 1;
        self.turn_ends_now.set(0);
        self.send_control(now, Job::Interrupt { event_id })
    }

    /// The caller hung up: the inbound path's last partial payload is flushed.
    pub fn finish(&self, now: Instant) -> Result<(), Dropped> {
        self.send_control(now, Job::Finish)
    }

    /// Hands every ready result to `f`, in order, without blocking; returns how many.
    pub fn drain(&mut self, mut f: impl FnMut(PoolOutput<'_>)) -> usize {
        // Read before draining: the results of every command counted here are queued.
        self.drained_done = self.shared.done.load(Ordering::Acquire);
        let mut n = 0;
        while let Ok(out) = self.out_rx.try_recv() {
            n += 1;
            let buf = match out {
                PoolOut::UserAudio(b) => {
                    // Base64 from the inbound path: always ASCII.
                    if let Ok(text) = std::str::from_utf8(&b) {
                        f(PoolOutput::UserAudioChunk(text));
                    }
                    b
                }
                PoolOut::Frames {
                    generation,
                    event_id,
                    ulaw,
                    padded,
                } => {
                    if generation == self.generation {
                        f(PoolOutput::Frames {
                            event_id,
                            ulaw: &ulaw,
                            padded,
                        });
                    } else {
                        self.discarded += 1;
                    }
                    ulaw
                }
                PoolOut::EndOfTurn { generation } => {
                    self.turn_ends.set(self.turn_ends.get().saturating_sub(1));
                    if generation == self.generation {
                        self.turn_ends_now
                            .set(self.turn_ends_now.get().saturating_sub(1));
                        f(PoolOutput::EndOfTurn);
                    }
                    continue;
                }
            };
            let _ = self.out_pool.try_send(buf);
        }
        n
    }

    /// The call's counters.
    pub fn stats(&self) -> PoolCallStats {
        let s = &self.shared;
        PoolCallStats {
            drops: s.drops.load(Ordering::Relaxed),
            discarded: self.discarded,
            bad_frames: s.bad_frames.load(Ordering::Relaxed),
            bad_agent_chunks: s.bad_agent_chunks.load(Ordering::Relaxed),
            concealed_ms: f64::from_bits(s.concealed_ms_bits.load(Ordering::Relaxed)),
            pause_pads: s.pause_pads.load(Ordering::Relaxed),
        }
    }
}

impl Drop for PoolCall {
    fn drop(&mut self) {
        // Unbounded: never waits, and the worker frees the call's state.
        let _ = self.control.send(Control::Close(self.id));
        self.calls.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One pool worker thread: the calls it owns and the ones the current batch touched.
struct PoolThread {
    work: Receiver<Work>,
    control: Receiver<Control>,
    calls: std::collections::HashMap<u64, Box<CallDsp>>,
    touched: Vec<u64>,
}

impl PoolThread {
    fn run(mut self) {
        loop {
            crossbeam_channel::select! {
                recv(self.control) -> c => match c {
                    Ok(c) => self.control(c),
                    Err(_) => return,
                },
                recv(self.work) -> w => match w {
                    Ok(w) => self.handle(w),
                    Err(_) => return,
                },
            }
            self.batch(1);
        }
    }

    /// Batched hand-off: everything already queued is handled (up to [`MAX_BATCH_COMMANDS`],
    /// `handled` of them already) before any wake-up, so one wake-up serves every frame of a
    /// call that is ready. Returns the commands handled here.
    fn batch(&mut self, handled: usize) -> usize {
        let mut batch = handled;
        while batch < MAX_BATCH_COMMANDS {
            let Ok(w) = self.work.try_recv() else {
                break;
            };
            self.handle(w);
            batch += 1;
        }
        for id in self.touched.drain(..) {
            if let Some(c) = self.calls.get_mut(&id) {
                c.touched = false;
                c.publish();
                (c.wake)();
            }
        }
        batch - handled
    }

    /// [`DspPool::run_manual`]: opens and closes, then batches until the queue is empty.
    fn run_pending(&mut self) -> usize {
        while let Ok(c) = self.control.try_recv() {
            self.control(c);
        }
        let mut ran = 0;
        loop {
            let n = self.batch(0);
            if n == 0 {
                return ran;
            }
            ran += n;
        }
    }

    fn control(&mut self, c: Control) {
        match c {
            Control::Open(dsp) => {
                self.calls.insert(dsp.id, dsp);
            }
            Control::Close(id) => {
                self.calls.remove(&id);
            }
        }
    }

    fn handle(&mut self, w: Work) {
        if !self.calls.contains_key(&w.call) {
            // A call's `Open` is queued before its first command, on the other channel.
            while let Ok(c) = self.control.try_recv() {
                self.control(c);
            }
        }
        // Absent now: the call was closed (its last commands are moot).
        let Some(c) = self.calls.get_mut(&w.call) else {
            return;
        };
        let control = w.job.is_control();
        c.work_guarded(w.now, w.job, &w.text);
        c.shared.done.fetch_add(1, Ordering::Release);
        if !control {
            let _ = c.in_pool.try_send(w.text);
        }
        if !c.touched {
            c.touched = true;
            self.touched.push(w.call);
        }
    }
}

impl CallDsp {
    fn work(&mut self, now: Instant, job: Job, text: &str) {
        match job {
            Job::Media {
                chunk,
                timestamp_ms,
            } => {
                // Bad frames are counted in the inbound stats (published per batch).
                let _ = self
                    .inbound
                    .push_twilio_media(now, chunk, timestamp_ms, text);
                self.user_audio();
            }
            Job::Finish => {
                self.inbound.finish();
                self.user_audio();
            }
            Job::Agent {
                generation,
                event_id,
            } => {
                let _ = self.outbound.push_agent_audio(now, event_id, text);
                self.frames(generation, event_id, false);
            }
            Job::EndOfTurn { generation } => {
                let event_id = self.outbound.current_event();
                self.outbound.end_of_turn();
                if let Some(event_id) = event_id {
                    self.frames(generation, event_id, false);
                }
                self.emit(PoolOut::EndOfTurn { generation });
            }
            Job::CompletePartial { generation } => {
                if let Some(event_id) = self.outbound.current_event() {
                    let padded = self.outbound.pad_partial();
                    if padded {
                        self.shared.pause_pads.fetch_add(1, Ordering::Relaxed);
                    }
                    self.frames(generation, event_id, padded);
                }
            }
            #[cfg(test)]
            Job::Panic => panic!("DSP failure (test)"),
            Job::Interrupt { event_id } => {
                // Drops the partial frame and resampler state; nothing is paced here.
                let _ = self.outbound.interrupt(now, event_id);
            }
        }
    }

    fn user_audio(&mut self) {
        while let Some(p) = self.inbound.poll_user_audio_chunk() {
            let Some(mut buf) = Self::out_buffer(&self.out_pool, &mut self.out_made) else {
                self.drop_output();
                continue;
            };
            buf.clear();
            buf.extend_from_slice(p.as_bytes());
            self.emit(PoolOut::UserAudio(buf));
        }
    }

    /// Sends the outbound path's whole frames of turn `event_id`; `padded`: the last of them was
    /// completed by a pause pad.
    fn frames(&mut self, generation: u64, event_id: u64, padded: bool) {
        if !self.outbound.has_frames() {
            return;
        }
        let Some(mut buf) = Self::out_buffer(&self.out_pool, &mut self.out_made) else {
            self.outbound.discard_frames();
            self.drop_output();
            return;
        };
        buf.clear();
        self.outbound.take_frames(&mut buf);
        self.emit(PoolOut::Frames {
            generation,
            event_id,
            ulaw: buf,
            padded,
        });
    }

    /// A free output buffer, made on demand up to [`CALL_OUTPUT_DEPTH`]; `None`: the call task
    /// is that far behind.
    fn out_buffer(pool: &Receiver<Vec<u8>>, made: &mut usize) -> Option<Vec<u8>> {
        if let Ok(b) = pool.try_recv() {
            return Some(b);
        }
        if *made < CALL_OUTPUT_DEPTH {
            *made += 1;
            return Some(Vec::with_capacity(INITIAL_BUFFER_BYTES));
        }
        None
    }

    fn emit(&mut self, out: PoolOut) {
        if self.out_tx.try_send(out).is_err() {
            self.drop_output();
        }
    }

    fn drop_output(&self) {
        self.shared.drops.fetch_add(1, Ordering::Relaxed);
        self.pool_drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs one command; a panic in the call's DSP fails this call only (the worker and its
    /// other calls go on): counted as a drop, and an end of turn is still answered so the call
    /// task never waits for it.
    fn work_guarded(&mut self, now: Instant, job: Job, text: &str) {
        let end_of_turn = match job {
            Job::EndOfTurn { generation } => Some(generation),
            _ => None,
        };
        if !self.failed {
            let run = std::panic::AssertUnwindSafe(|| self.work(now, job, text));
            if std::panic::catch_unwind(run).is_ok() {
                return;
            }
            self.failed = true;
        }
        self.drop_output();
        if let Some(generation) = end_of_turn {
            self.emit(PoolOut::EndOfTurn { generation });
        }
    }

    /// Makes the paths' counters readable from the call's task.
    fn publish(&self) {
        let (i, o) = (self.inbound.stats(), self.outbound.stats());
        let s = &self.shared;
        s.bad_frames.store(i.bad_frames, Ordering::Relaxed);
        s.bad_agent_chunks.store(o.bad_chunks, Ordering::Relaxed);
        s.concealed_ms_bits
            .store(i.jitter.concealed_ms.to_bits(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    /// Drains until `pred` holds or a generous real-time limit passes (not a timing test).
    fn wait_for(p: &Pipeline, seen: &mut Vec<String>, pred: impl Fn(&[String]) -> bool) {
        let limit = Instant::now() + Duration::from_secs(10);
        while !pred(seen) && Instant::now() < limit {
            p.drain(|o| seen.push(format!("{o:?}")));
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn frames_in_payloads_out_through_the_worker() {
        let p = Pipeline::spawn_default(AgentFormat::Pcm16000, || {}).unwrap();
        let t0 = Instant::now();
        let frame = STANDARD.encode([0x55u8; 160]);
        for i in 0..10 {
            p.push_twilio_media(t0, i + 1, i * 20, &frame).unwrap();
        }
        let agent = STANDARD.encode(vec![0u8; 3200]);
        p.push_agent_audio(t0, 1, &agent).unwrap();
        p.end_of_turn().unwrap();
        let mut seen = Vec::new();
        wait_for(&p, &mut seen, |s| {
            s.iter().filter(|o| o.starts_with("UserAudioChunk")).count() == 10
                && s.iter().any(|o| o.starts_with("Mark"))
        });
        assert_eq!(
            seen.iter()
                .filter(|o| o.starts_with("UserAudioChunk"))
                .count(),
            10
        );
        assert!(seen.iter().any(|o| o.starts_with("Media")));
        p.interrupt(t0, Some(2)).unwrap();
        p.request_stats().unwrap();
        wait_for(&p, &mut seen, |s| s.iter().any(|o| o.starts_with("Stats")));
        assert!(seen.iter().any(|o| o.starts_with("Stats")));
        assert_eq!(p.counters(), PipelineCounters::default());
        p.shutdown();
    }

    #[test]
    fn full_queue_is_a_counted_drop_not_a_wait() {
        let config = PipelineConfig {
            queue_depth: 1,
            max_text_chars: 64,
            ..PipelineConfig::default()
        };
        let p = Pipeline::spawn(
            AgentFormat::Ulaw8000,
            InboundConfig::default(),
            OutboundConfig::default(),
            config,
            || {},
        )
        .unwrap();
        let t0 = Instant::now();
        let too_long = STANDARD.encode([0u8; 160]);
        assert_eq!(p.push_twilio_media(t0, 1, 0, &too_long), Err(Dropped));
        // Many pushes in a row: some may be dropped, none blocks.
        let small = STANDARD.encode([0u8; 3]);
        for i in 0..100 {
            let _ = p.push_twilio_media(t0, i + 2, 0, &small);
        }
        assert!(p.counters().commands_dropped >= 1);
        p.shutdown();
    }

    /// An interruption discards the end of turn queued before it (its result never reaches the
    /// pacer), so that end is no longer on its way, though still pending until drained.
    #[test]
    fn an_interruption_takes_the_end_of_turn_off_its_way() {
        let pool = DspPool::new(1).expect("one worker thread starts");
        let f = AgentFormat::Ulaw8000;
        let mut call = pool
            .open(
                f,
                f,
                InboundConfig::default(),
                Default::default(),
                Arc::new(|| {}),
            )
            .expect("a pass-through call opens");
        let t0 = Instant::now();
        call.push_agent_audio(t0, 1, &STANDARD.encode([0x42u8; 320]))
            .expect("an empty call queue takes a command");
        call.end_of_turn(t0)
            .expect("control commands have reserved room");
        assert!(call.turn_end_pending() && call.turn_end_on_its_way());
        call.interrupt(t0, Some(2))
            .expect("control commands have reserved room");
        assert!(call.turn_end_pending() && !call.turn_end_on_its_way());
        let mut turns = 0;
        let limit = Instant::now() + Duration::from_secs(10);
        while call.turn_end_pending() && Instant::now() < limit {
            call.drain(|o| turns += usize::from(o == PoolOutput::EndOfTurn));
            thread::sleep(Duration::from_millis(1));
        }
        assert!(!call.turn_end_pending());
        assert_eq!(turns, 0, "the discarded end of turn reached the pacer");
        call.end_of_turn(t0)
            .expect("control commands have reserved room");
        assert!(call.turn_end_on_its_way());
    }

    /// A panic in one call's DSP fails that call only: counted, its end of turn still answered,
    /// and another call on the same worker goes on.
    #[test]
    fn a_panic_fails_one_call_not_the_worker() {
        let pool = DspPool::new(1).unwrap();
        let f = AgentFormat::Ulaw8000;
        let open = || {
            pool.open(
                f,
                f,
                InboundConfig::default(),
                Default::default(),
                Arc::new(|| {}),
            )
            .unwrap()
        };
        let (mut bad, mut good) = (open(), open());
        let t0 = Instant::now();
        bad.send(t0, Job::Panic, "").unwrap();
        bad.push_agent_audio(t0, 1, &STANDARD.encode([0x42u8; 160]))
            .unwrap();
        bad.end_of_turn(t0).unwrap();
        let mut turns = 0;
        let limit = Instant::now() + Duration::from_secs(10);
        while turns == 0 && Instant::now() < limit {
            bad.drain(|o| turns += usize::from(o == PoolOutput::EndOfTurn));
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(turns, 1, "the end of turn is answered");
        assert!(!bad.turn_end_pending() && !bad.turn_end_on_its_way());
        // The panic and the audio after it.
        assert_eq!(bad.stats().drops, 3);
        good.push_twilio_media(t0, 1, 0, &STANDARD.encode([0x55u8; 160]))
            .unwrap();
        let mut payloads = 0;
        let limit = Instant::now() + Duration::from_secs(10);
        while payloads == 0 && Instant::now() < limit {
            good.drain(|o| payloads += usize::from(matches!(o, PoolOutput::UserAudioChunk(_))));
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(payloads, 1, "the worker still serves its other calls");
        assert_eq!(pool.drops_total(), 3);
    }
}
