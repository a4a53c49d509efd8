//! The only audio module that knows threads and channels: runs an [`InboundPath`] and an
//! [`OutboundPath`] on a DSP worker thread, joined to the async bridge by bounded
//! `crossbeam-channel`s.
//!
//! # Threading model, and why
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
//! - **Never block a tokio worker.** Every call the bridge makes is `try_send`/`try_recv`.
//!   A full queue or an empty buffer pool is a counted drop ([`PipelineCounters`]), never a wait.
//! - **No allocation per frame.** Text buffers (`String`s with fixed capacity) are allocated at
//!   spawn time and circulate through two pool channels; messages carry them by value. The paths
//!   themselves do not allocate after set-up.
//! - **Timers live on the worker.** The playout buffer's deadline ([`OutboundPath::poll_timeout`])
//!   becomes the worker's `recv_deadline`, so pacing costs the async side nothing. The worker
//!   reads the clock through the `clock` function given at spawn (default `Instant::now`), the
//!   one clock read in `audio`; commands carry the caller's `now` for arrival-time statistics.
//! - **Wake-up without tokio.** After producing output the worker calls the `notify` callback
//!   (e.g. a `tokio::sync::Notify::notify_one`), so this module does not depend on tokio.
//! - **One thread per call** (small stack): isolation (a slow call cannot delay another's
//!   pacing) and no cross-call scheduling. A pool sharing threads across calls is the next step
//!   if thread count ever matters; the command/output protocol would not change.
//! - **Pass-through needs no thread.** With `ulaw_8000` the paths cost nanoseconds per frame
//!   (BENCHMARKS.md), less than a channel hop, so the bridge may call [`InboundPath`] and
//!   [`OutboundPath`] inline and drive the playout timer itself. Both modes are benchmarked.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
}
