//! Outbound path, agent → caller: ElevenLabs `audio` events in, paced Twilio messages out.
//!
//! Per burst: base64 (decoded in blocks, any size) → PCM16 LE with a one-byte carry for odd
//! lengths → resample to 8 kHz (leading filter delay trimmed: the input is faster than real
//! time, so the delay costs nothing) → μ-law → whole 160-byte frames → [`PlayoutBuffer`].
//! `ulaw_8000` skips straight to the re-framer.
//!
//! Turns and interruptions (docs/elevenlabs.md §4.4): audio of an `event_id` older than the last
//! interruption's is dropped ("strictly older", as the JS SDK and the pending Python fix do).
//! A new `event_id` does not end anything: the partial frame and the resampler state carry
//! over, so audio that is continuous at the agent stays continuous at the caller (issue 16).
//! The partial frame is completed with μ-law silence only when the caller would otherwise run
//! dry (nothing whole held, Twilio down to its last frame: [`PlayoutBuffer::starves_at`]), or at
//! an explicit [`OutboundPath::end_of_turn`], which also places the end-of-turn mark
//! (docs/dsp.md §3.8). [`OutboundPath::interrupt`] resets the resampler and drops everything held.
//!
//! Sans-IO: `now` is an argument; nothing allocates after [`OutboundPath::new`].

use std::fmt;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::format::AgentFormat;
use super::inbound::checked_decoded_len;
use super::mulaw::{self, FRAME_SAMPLES, SILENCE};
use super::playout::{
    Interruption, MarkEcho, PlayoutBuffer, PlayoutConfig, PlayoutStats, Transmit,
};
use super::resample::{Engine, ResampleSetupError, Resampler};

/// Largest decoded agent audio chunk accepted in one call: 1 MiB (≈ 33 s of `pcm_16000`).
/// ElevenLabs chunks are far smaller; this only bounds a misbehaving peer.
pub const MAX_AGENT_BURST_BYTES: usize = 1 << 20;
/// Base64 characters decoded per block (384 bytes): the only scratch the decoder needs, and it
/// sizes the transcoding buffers (PCM, resampled, μ-law) too, all held for the whole call. A
/// 250 ms `ulaw_8000` chunk is six blocks; 4096 cost ~10 KiB more RSS per `pcm_16000` call and
/// 1024 ~2 KiB, for no measurable CPU (issue 16: RSS per call ≤ 64 KiB).
const DECODE_BLOCK_CHARS: usize = 512;
const DECODE_BLOCK_BYTES: usize = DECODE_BLOCK_CHARS / 4 * 3;

/// Checks a whole agent audio chunk without decoding it (no allocation): standard padded
/// base64 with canonical trailing bits, at most [`MAX_AGENT_BURST_BYTES`] decoded. Returns the
/// decoded length. A chunk that passes decodes without error in any 4-character-aligned
/// pieces: inline decodes it in blocks, the DSP pool in pieces, so a bad chunk is refused
/// whole before any of it plays (never its first pieces only).
pub fn check_agent_audio(audio_b64: &str) -> Result<usize, BadAgentAudio> {
    let b64 = audio_b64.as_bytes();
    let len = checked_decoded_len(b64).map_err(|_| BadAgentAudio::Base64)?;
    if len > MAX_AGENT_BURST_BYTES {
        return Err(BadAgentAudio::TooLarge { len });
    }
    // The alphabet and padding are checked; only the last quad can hold non-zero trailing bits.
    if let Some(last) = b64.len().checked_sub(4).and_then(|at| b64.get(at..)) {
        let mut out = [0u8; 3];
        STANDARD
            .decode_slice(last, &mut out)
            .map_err(|_| BadAgentAudio::Base64)?;
    }
    Ok(len)
}

/// Outbound path settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboundConfig {
    /// Pacing, marks and buffer bounds.
    pub playout: PlayoutConfig,
    /// Resampler choice (default [`Engine::Auto`]).
    pub engine: Engine,
}

/// Agent audio that could not be used. The bridge counts and logs it; the path is unaffected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadAgentAudio {
    /// Not standard padded base64.
    Base64,
    /// Decodes to more than [`MAX_AGENT_BURST_BYTES`].
    TooLarge {
        /// Decoded length.
        len: usize,
    },
}

impl fmt::Display for BadAgentAudio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Base64 => f.write_str("agent audio is not valid base64"),
            Self::TooLarge { len } => write!(f, "agent audio chunk of {len} bytes is too large"),
        }
    }
}

impl std::error::Error for BadAgentAudio {}

/// Counters of the outbound path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundStats {
    /// Pacing counters (frames, underruns, overruns, interruptions, marks …).
    pub playout: PlayoutStats,
    /// Agent bytes accepted.
    pub agent_bytes: u64,
    /// Agent bytes dropped because their `event_id` predates the last interruption.
    pub stale_event_bytes: u64,
    /// Chunks rejected with [`BadAgentAudio`].
    pub bad_chunks: u64,
    /// Agent turns ended ([`OutboundPath::end_of_turn`]; a new `event_id` does not end one).
    pub turns: u64,
    /// Partial frames completed with silence because the agent's audio paused mid-turn
    /// (the caller would otherwise have run dry).
    pub pause_pads: u64,
}

/// The agent → caller path (see the module docs).
pub struct OutboundPath {
    format: AgentFormat,
    resampler: Option<Resampler>,
    decoded: Vec<u8>,
    /// The odd last byte of a PCM chunk and its chunk's `event_id`, waiting for the byte that
    /// completes its sample (docs/dsp.md §3.8).
    carry: Option<(u8, u64)>,
    /// The turn ended (a guess: the agent's audio paused) while a byte was carried. The carry
    /// pairs with the next chunk only if that chunk continues the same event: a pause inside
    /// an utterance (a slow LLM) must not shift the rest of it by one byte, which would play
    /// as full-scale noise; a new event starts aligned.
    carry_past_turn: bool,
    /// The resampler holds input whose tail has not been flushed yet.
    resampler_dirty: bool,
    pcm: Vec<f32>,
    resampled: Vec<f32>,
    ulaw: Vec<u8>,
    frame: [u8; FRAME_SAMPLES],
    frame_fill: usize,
    playout: PlayoutBuffer,
    /// Whole frames collected for another thread's pacer instead of queued in `playout`
    /// ([`OutboundPath::new_detached`], the DSP pool of `pipeline.rs`).
    detached: Option<Vec<u8>>,
    current_event: Option<u64>,
    min_event: Option<u64>,
    stats: OutboundStats,
}

impl OutboundPath {
    /// Builds the path for an agent speaking `format`.
    pub fn new(format: AgentFormat, config: OutboundConfig) -> Result<Self, ResampleSetupError> {
        let resampler = if format.is_ulaw() {
            None
        } else {
            Some(Resampler::new(
                format.sample_rate(),
                8000,
                config.engine,
                true,
            )?)
        };
        // The PCM, resampler and encode buffers exist only when transcoding: pass-through
        // re-frames the decoded μ-law directly (they were ~21 KiB of every call's RSS).
        let max_samples = resampler.as_ref().map_or(0, |_| DECODE_BLOCK_BYTES / 2 + 1);
        let resampled_cap = resampler.as_ref().map_or(0, |r| {
            r.output_frames_max(max_samples + r.rate_in() as usize / 50)
                .max(r.flush_frames_max())
        });
        Ok(Self {
            format,
            resampler,
            decoded: vec![0; DECODE_BLOCK_BYTES],
            carry: None,
            carry_past_turn: false,
            resampler_dirty: false,
            pcm: vec![0.0; max_samples],
            resampled: vec![0.0; resampled_cap],
            ulaw: vec![0; resampled_cap],
            frame: [SILENCE; FRAME_SAMPLES],
            frame_fill: 0,
            playout: PlayoutBuffer::new(config.playout),
            detached: None,
            current_event: None,
            min_event: None,
            stats: OutboundStats::default(),
        })
    }

    /// A path that transcodes and re-frames only: whole 160-byte μ-law frames collect for
    /// [`OutboundPath::take_frames`] instead of being paced here. The DSP pool runs this on a
    /// worker; pacing stays with the call (an [`OutboundPath`] for `ulaw_8000` fed with
    /// [`OutboundPath::push_agent_bytes`]). `end_of_turn` flushes and pads but places no mark.
    pub fn new_detached(format: AgentFormat, engine: Engine) -> Result<Self, ResampleSetupError> {
        // The playout buffer is never used here: the smallest one (a frame), not 10 KiB of ring.
        let playout = PlayoutConfig {
            max_buffer_ms: 20,
            max_frames_per_message: 1,
            ..PlayoutConfig::default()
        };
        let mut path = Self::new(format, OutboundConfig { playout, engine })?;
        path.detached = Some(Vec::new());
        Ok(path)
    }

    /// Moves the frames collected by a detached path into `out` (appended; whole frames).
    pub fn take_frames(&mut self, out: &mut Vec<u8>) {
        if let Some(frames) = self.detached.as_mut() {
            out.extend_from_slice(frames);
            frames.clear();
        }
    }

    /// Whether a detached path holds frames for [`OutboundPath::take_frames`].
    pub fn has_frames(&self) -> bool {
        self.detached.as_ref().is_some_and(|f| !f.is_empty())
    }

    /// Drops the frames a detached path collected (no room to hand them on: a counted drop).
    pub fn discard_frames(&mut self) {
        if let Some(frames) = self.detached.as_mut() {
            frames.clear();
        }
    }

    /// The agent turn whose audio was pushed last, until its end or an interruption.
    pub fn current_event(&self) -> Option<u64> {
        self.current_event
    }

    /// Queues a whole frame: for pacing, or for [`OutboundPath::take_frames`] when detached.
    fn emit_frame(&mut self, event_id: u64) {
        match self.detached.as_mut() {
            Some(frames) => frames.extend_from_slice(&self.frame),
            None => {
                self.playout.push_frame(event_id, &self.frame);
            }
        }
    }

    /// The agent format this path consumes.
    pub fn format(&self) -> AgentFormat {
        self.format
    }

    /// Handles the `audio_base_64` of an ElevenLabs `audio` event with its `event_id`.
    /// Then drain [`OutboundPath::poll_transmit`].
    pub fn push_agent_audio(
        &mut self,
        now: Instant,
        event_id: u64,
        audio_b64: &str,
    ) -> Result<(), BadAgentAudio> {
        if audio_b64.len() <= DECODE_BLOCK_CHARS {
            // The common case: one block, decoded all-or-nothing before any state changes.
            let n = match STANDARD.decode_slice(audio_b64.as_bytes(), &mut self.decoded[..]) {
                Ok(n) => n,
                Err(_) => {
                    self.stats.bad_chunks += 1;
                    return Err(BadAgentAudio::Base64);
                }
            };
            if self.begin_chunk(event_id, n) {
                self.arrived(now, false);
                self.push_decoded(event_id, n);
            }
            return Ok(());
        }
        // Several blocks: check the whole text first so an error never leaves half a chunk.
        let len = match check_agent_audio(audio_b64) {
            Ok(n) => n,
            Err(e) => {
                self.stats.bad_chunks += 1;
                return Err(e);
            }
        };
        if !self.begin_chunk(event_id, len) {
            return Ok(());
        }
        self.arrived(now, false);
        for block in audio_b64.as_bytes().chunks(DECODE_BLOCK_CHARS) {
            let n = match STANDARD.decode_slice(block, &mut self.decoded[..]) {
                Ok(n) => n,
                Err(_) => {
                    // Unreachable: `check_agent_audio` checked every block.
                    self.stats.bad_chunks += 1;
                    return Err(BadAgentAudio::Base64);
                }
            };
            self.push_decoded(event_id, n);
        }
        Ok(())
    }

    /// Turn bookkeeping for a chunk of `len` bytes; `false` if it is stale and must be dropped.
    fn begin_chunk(&mut self, event_id: u64, len: usize) -> bool {
        if self.stale(event_id) {
            self.stats.stale_event_bytes += len as u64;
            return false;
        }
        // A new id carries on where the last chunk stopped: no flush, no padding (§3.8).
        self.current_event = Some(event_id);
        self.stats.agent_bytes += len as u64;
        true
    }

    /// Pushes already-decoded agent bytes (raw PCM16 LE or μ-law, per the format) of turn
    /// `event_id`, for callers that decode base64 themselves.
    pub fn push_agent_bytes(&mut self, event_id: u64, mut bytes: &[u8]) {
        if !self.begin_chunk(event_id, bytes.len()) {
            return;
        }
        while !bytes.is_empty() {
            let n = bytes.len().min(DECODE_BLOCK_BYTES);
            self.decoded[..n].copy_from_slice(&bytes[..n]);
            self.push_decoded(event_id, n);
            bytes = &bytes[n..];
        }
    }

    /// For a pacer fed by [`OutboundPath::push_agent_bytes`] (the DSP pool's frames, pads
    /// included): agent audio of turn `event_id` has arrived at `now`, before its frames (see
    /// [`PlayoutBuffer::agent_audio_arrived`]; a turn already interrupted does not count).
    /// `next_turn`: the pacer's current turn has already ended upstream (the pool's end-of-turn
    /// result is still on its way), so this audio opens the next one
    /// ([`PlayoutBuffer::next_turn_audio_arrived`]).
    pub fn agent_audio_arrived(&mut self, now: Instant, event_id: u64, next_turn: bool) {
        if !self.stale(event_id) {
            self.arrived(now, next_turn);
        }
    }

    /// Audio of a turn older than the last interruption's (ignored, docs/elevenlabs.md §4.4).
    fn stale(&self, event_id: u64) -> bool {
        self.min_event.is_some_and(|min| event_id < min)
    }

    /// For a pacer whose pause pads the DSP pool makes: one was just asked for (see
    /// [`PlayoutBuffer::pool_pad_asked`]).
    pub fn pause_pad_asked(&mut self) {
        self.playout.pool_pad_asked();
    }

    /// For a pacer whose pause pads the DSP pool makes: the pool reports the one asked for made
    /// (see [`PlayoutBuffer::pool_pad_made`]).
    pub fn pause_pad_made(&mut self) {
        self.playout.pool_pad_made();
    }

    /// Times an agent chunk's arrival for the pacer (`next_turn`: see
    /// [`OutboundPath::agent_audio_arrived`]); a detached path paces nothing.
    fn arrived(&mut self, now: Instant, next_turn: bool) {
        if self.detached.is_some() {
            return;
        }
        if next_turn {
            self.playout.next_turn_audio_arrived(now);
        } else {
            self.playout.agent_audio_arrived(now);
        }
    }

    /// Transcodes `self.decoded[..n]` into frames.
    fn push_decoded(&mut self, event_id: u64, n: usize) {
        if self.resampler.is_none() {
            let ulaw = std::mem::take(&mut self.decoded);
            self.reframe(event_id, &ulaw[..n]);
            self.decoded = ulaw;
            return;
        }
        // PCM16 LE with a one-byte carry across chunks.
        let mut bytes = &self.decoded[..n];
        let mut samples = 0;
        if bytes.is_empty() {
            return;
        }
        if let Some((lo, carried_from)) = self.carry.take()
            && !(std::mem::take(&mut self.carry_past_turn) && carried_from != event_id)
            && let Some((&hi, rest)) = bytes.split_first()
        {
            self.pcm[0] = f32::from(i16::from_le_bytes([lo, hi])) / mulaw::I16_SCALE;
            samples = 1;
            bytes = rest;
        }
        let pairs = bytes.chunks_exact(2);
        if let [last] = pairs.remainder() {
            self.carry = Some((*last, event_id));
        }
        for (dst, p) in self.pcm[samples..].iter_mut().zip(pairs) {
            *dst = f32::from(i16::from_le_bytes([p[0], p[1]])) / mulaw::I16_SCALE;
            samples += 1;
        }
        self.resampler_dirty |= samples > 0;
        let written = match self.resampler.as_mut() {
            Some(r) => r
                .process_into(&self.pcm[..samples], &mut self.resampled)
                .unwrap_or(0),
            None => 0,
        };
        self.encode_and_reframe(event_id, written);
    }

    fn encode_and_reframe(&mut self, event_id: u64, written: usize) {
        mulaw::encode_f32_into(&self.resampled[..written], &mut self.ulaw[..written]);
        let ulaw = std::mem::take(&mut self.ulaw);
        self.reframe(event_id, &ulaw[..written]);
        self.ulaw = ulaw;
    }

    /// Cuts μ-law bytes into whole 160-byte frames for the playout buffer.
    fn reframe(&mut self, event_id: u64, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (FRAME_SAMPLES - self.frame_fill).min(bytes.len());
            self.frame[self.frame_fill..self.frame_fill + take].copy_from_slice(&bytes[..take]);
            self.frame_fill += take;
            bytes = &bytes[take..];
            if self.frame_fill == FRAME_SAMPLES {
                self.emit_frame(event_id);
                self.frame_fill = 0;
            }
        }
    }

    /// Whether agent audio is held short of a whole frame (a partial frame or a resampler tail).
    fn holds_partial(&self) -> bool {
        self.frame_fill > 0 || self.resampler_dirty
    }

    /// Pushes out the resampler tail and pads the last partial frame with silence. Returns
    /// whether a padded frame was queued.
    fn complete_partial(&mut self) -> bool {
        let Some(event_id) = self.current_event else {
            return false;
        };
        if self.resampler_dirty {
            self.resampler_dirty = false;
            if let Some(r) = self.resampler.as_mut() {
                let n = r.flush_into(&mut self.resampled).unwrap_or(0);
                self.encode_and_reframe(event_id, n);
            }
        }
        if self.frame_fill == 0 {
            return false;
        }
        self.frame[self.frame_fill..].fill(SILENCE);
        self.frame_fill = 0;
        self.emit_frame(event_id);
        true
    }

    /// The agent turn is over (agent ending, `end_call`, or the bridge's idle timer once the
    /// caller is about to run dry): pushes out the resampler tail, pads the last partial frame
    /// with silence and places an end-of-turn mark after it.
    pub fn end_of_turn(&mut self) {
        if self.current_event.is_none() {
            self.playout.end_turn_without_frames();
            return;
        }
        self.complete_partial();
        self.current_event = None;
        self.carry_past_turn = self.carry.is_some();
        self.playout.end_turn();
        self.stats.turns += 1;
    }

    /// When the caller would run dry with nothing more held (see
    /// [`PlayoutBuffer::starves_at`]); `None` while whole frames are still held.
    pub fn starves_at(&self, now: Instant) -> Option<Instant> {
        self.playout.starves_at(now)
    }

    /// Barge-in (ElevenLabs `interruption` with its `event_id`, or a local decision with
    /// `None`): drops everything held, resets the resampler, and from then on ignores audio of
    /// older events. Send Twilio `clear` when the result says so.
    pub fn interrupt(&mut self, now: Instant, event_id: Option<u64>) -> Interruption {
        if let Some(id) = event_id {
            self.min_event = Some(self.min_event.map_or(id, |m| m.max(id)));
        }
        if let Some(r) = self.resampler.as_mut() {
            r.reset();
        }
        self.carry = None;
        self.carry_past_turn = false;
        self.resampler_dirty = false;
        self.frame_fill = 0;
        self.current_event = None;
        self.playout.interrupt(now)
    }

    /// The next message for Twilio at `now` (see [`PlayoutBuffer::poll_transmit`]). A partial
    /// frame goes out, padded, only once the caller would otherwise run dry (§3.8).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<'_>> {
        if self.holds_partial()
            && self.playout.starves_at(now).is_some_and(|t| now >= t)
            && self.complete_partial()
        {
            self.stats.pause_pads += 1;
            self.playout.note_pause_pad();
        }
        self.playout.poll_transmit(now)
    }

    /// Pads the partial frame now (and pushes out the resampler tail), as
    /// [`OutboundPath::poll_transmit`] does once the caller would run dry: for a detached path,
    /// whose caller-side pacer decides when (the DSP pool, docs/dsp.md §3.8). Counted as a
    /// pause pad; `false` if nothing was held short of a frame.
    pub fn pad_partial(&mut self) -> bool {
        let padded = self.holds_partial() && self.complete_partial();
        if padded {
            self.stats.pause_pads += 1;
        }
        padded
    }

    /// When to call [`OutboundPath::poll_transmit`] next, or `None` if nothing is held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let next = self.playout.poll_timeout();
        if !self.holds_partial() {
            return next;
        }
        let starve = self
            .playout
            .last_poll()
            .and_then(|now| self.playout.starves_at(now));
        match (next, starve) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Handles a Twilio `mark` echo (see [`PlayoutBuffer::handle_mark_echo`]).
    pub fn handle_mark_echo(&mut self, name: &str) -> Option<MarkEcho> {
        self.playout.handle_mark_echo(name)
    }

    /// The playout buffer, for inspection.
    pub fn playout(&self) -> &PlayoutBuffer {
        &self.playout
    }

    /// Counters so far.
    pub fn stats(&self) -> OutboundStats {
        OutboundStats {
            playout: self.playout.stats(),
            ..self.stats
        }
    }
}

impl fmt::Debug for OutboundPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundPath")
            .field("format", &self.format)
            .field("frame_fill", &self.frame_fill)
            .field("playout", &self.playout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_chunk_check_without_decoding() {
        assert_eq!(check_agent_audio(""), Ok(0));
        assert_eq!(check_agent_audio("AA=="), Ok(1));
        assert_eq!(check_agent_audio("AAAAAA=="), Ok(4));
        // Non-zero trailing bits in the last quad: a decoder refuses them.
        assert_eq!(check_agent_audio("AAAAAB=="), Err(BadAgentAudio::Base64));
        assert_eq!(check_agent_audio("AA!A"), Err(BadAgentAudio::Base64));
        let huge = "A".repeat((MAX_AGENT_BURST_BYTES / 3 + 1) * 4);
        assert!(matches!(
            check_agent_audio(&huge),
            Err(BadAgentAudio::TooLarge { .. })
        ));
    }

    /// docs/dsp.md §3.9 with the DSP pool: an end of turn that comes back to a pacer with no
    /// turn (its chunks made no frames here) still hands the next turn the chunks timed while
    /// it was on its way: two of them, the agent ahead, take back the cushion.
    #[test]
    fn an_end_of_turn_without_frames_hands_on_the_next_turns_arrivals() {
        let t0 = Instant::now();
        let ms = |n| t0 + std::time::Duration::from_millis(n);
        let mut o = OutboundPath::new(AgentFormat::Ulaw8000, OutboundConfig::default())
            .expect("pass-through needs no resampler");
        let drain = |o: &mut OutboundPath, now| while o.poll_transmit(now).is_some() {};
        o.agent_audio_arrived(t0, 1, false);
        o.push_agent_bytes(1, &[7; 800]);
        drain(&mut o, t0);
        // Twilio dry at 100 ms: a late chunk, a cushion of one step.
        o.agent_audio_arrived(ms(100), 1, false);
        o.push_agent_bytes(1, &[7; 160]);
        drain(&mut o, ms(140));
        o.end_of_turn();
        assert_eq!(o.playout().stats().cushion_ms, 40);
        // A turn whose end is on its way but that made no frames here, and two chunks of the
        // next turn meanwhile.
        o.agent_audio_arrived(ms(400), 2, true);
        o.agent_audio_arrived(ms(401), 2, true);
        o.end_of_turn();
        o.push_agent_bytes(2, &[7; 480]);
        o.end_of_turn();
        assert_eq!(o.playout().stats().cushion_ms, 0, "the arrivals were lost");
    }

    #[test]
    fn odd_byte_is_carried_across_chunks() {
        let t0 = Instant::now();
        let mut a = OutboundPath::new(AgentFormat::Pcm8000, OutboundConfig::default()).unwrap();
        let mut b = OutboundPath::new(AgentFormat::Pcm8000, OutboundConfig::default()).unwrap();
        let pcm: Vec<u8> = (0..320u32)
            .flat_map(|i| ((i * 97) as i16).to_le_bytes())
            .collect();
        a.push_agent_audio(t0, 1, &STANDARD.encode(&pcm)).unwrap();
        for part in [&pcm[..3], &pcm[3..4], &pcm[4..201], &pcm[201..]] {
            b.push_agent_audio(t0, 1, &STANDARD.encode(part)).unwrap();
        }
        let ta = a.poll_transmit(t0).map(|t| format!("{t:?}"));
        let tb = b.poll_transmit(t0).map(|t| format!("{t:?}"));
        assert!(ta.is_some());
        assert_eq!(ta, tb);
    }

    /// Everything `o` sends over the next 4 s, as μ-law bytes.
    fn sent(o: &mut OutboundPath, t0: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        for k in 0..200 {
            let now = t0 + std::time::Duration::from_millis(20 * k);
            while let Some(t) = o.poll_transmit(now) {
                if let Transmit::Media(b64) = t {
                    out.extend(STANDARD.decode(b64).unwrap());
                }
            }
        }
        out
    }

    /// An end of turn guessed inside one event (the agent paused mid-utterance) keeps the odd
    /// byte for that event's next chunk: split after byte 201 it sounds as split after byte 200
    /// (review of issue 16: it was dropped, and the rest of the event played a byte off, as
    /// noise). A new event starts aligned.
    #[test]
    fn a_carried_byte_outlives_a_guessed_end_of_turn_within_its_event() {
        let t0 = Instant::now();
        let pcm: Vec<u8> = (0..320u32)
            .flat_map(|i| ((i * 97) as i16).to_le_bytes())
            .collect();
        let run = |split: usize, second_event: u64| {
            let mut o = OutboundPath::new(AgentFormat::Pcm8000, OutboundConfig::default()).unwrap();
            o.push_agent_audio(t0, 1, &STANDARD.encode(&pcm[..split]))
                .unwrap();
            o.end_of_turn();
            o.push_agent_audio(t0, second_event, &STANDARD.encode(&pcm[split..]))
                .unwrap();
            o.end_of_turn();
            sent(&mut o, t0)
        };
        let even = run(200, 1);
        assert_eq!(
            even.len(),
            2 * 160 + 160,
            "100 + 220 samples, each turn padded"
        );
        assert_eq!(run(201, 1), even);
        // Another event: its first byte is a low byte, not the carried sample's high byte.
        let other = run(201, 2);
        let first = i16::from_le_bytes([pcm[201], pcm[202]]);
        assert_eq!(other[160], mulaw::encode_sample(first));
    }

    #[test]
    fn bad_audio_is_typed() {
        let t0 = Instant::now();
        let mut p = OutboundPath::new(AgentFormat::Pcm16000, OutboundConfig::default()).unwrap();
        assert_eq!(
            p.push_agent_audio(t0, 1, "!!!!"),
            Err(BadAgentAudio::Base64)
        );
        assert_eq!(p.push_agent_audio(t0, 1, ""), Ok(()));
        assert_eq!(p.stats().bad_chunks, 1);
    }
}
