//! Inbound path, caller → agent: Twilio `media` frames in, `user_audio_chunk` payloads out.
//!
//! Per frame: base64 → [`JitterStage`] verdict → (gap fill) → μ-law decode → resample to the
//! agent rate → batch into payloads of [`InboundConfig::batch_ms`] → base64.
//!
//! With a `ulaw_8000` agent and a batch of one frame, the Twilio payload *string* is forwarded
//! as is: its length and alphabet are checked, it is never decoded (docs/elevenlabs.md §4.2).
//!
//! Sans-IO: the caller passes `now`; call [`InboundPath::poll_user_audio_chunk`] until `None`
//! after every push.
//!
//! Buffers are sized at [`InboundPath::new`] for 20 ms frames (what Twilio sends) and grow
//! once, up to [`MAX_TWILIO_FRAME_BYTES`] / [`MAX_INBOUND_BACKLOG_MS`], if a call's frames or
//! backlog are larger (docs/twilio.md §1.5: size buffers from the decoded payload length). In steady
//! state nothing allocates. Pre-sizing for the worst case cost ~85 KiB per call (issue 6).

use std::fmt;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::format::AgentFormat;
use super::jitter::{JitterConfig, JitterStage, JitterStats, Verdict};
use super::mulaw::{self, FRAME_SAMPLES};
use super::resample::{Engine, ResampleSetupError, Resampler};

/// Largest decoded Twilio media payload accepted: 1 s of μ-law (Twilio sends 160 bytes;
/// docs/twilio.md §1.5 says to parse any size, so allow plenty).
pub const MAX_TWILIO_FRAME_BYTES: usize = 8000;
/// Largest configurable payload length.
pub const MAX_BATCH_MS: u32 = 1000;
/// Cap on audio waiting to be polled; beyond it the newest audio is dropped and counted.
pub const MAX_INBOUND_BACKLOG_MS: u32 = 2000;

/// Inbound path settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundConfig {
    /// Audio per `user_audio_chunk`, ms. Default 20 (one Twilio frame: lowest latency;
    /// docs/elevenlabs.md §4.3). Clamped to 1..=[`MAX_BATCH_MS`].
    pub batch_ms: u32,
    /// Gap handling.
    pub jitter: JitterConfig,
    /// Resampler choice (default [`Engine::Auto`]).
    pub engine: Engine,
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            batch_ms: 20,
            jitter: JitterConfig::default(),
            engine: Engine::Auto,
        }
    }
}

/// A Twilio media payload that could not be used. The bridge counts and logs it; the path is
/// unaffected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFrame {
    /// Not standard padded base64.
    Base64,
    /// Decodes to zero bytes.
    Empty,
    /// Decodes to more than [`MAX_TWILIO_FRAME_BYTES`].
    TooLarge {
        /// Decoded length.
        len: usize,
    },
}

impl fmt::Display for BadFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Base64 => f.write_str("media payload is not valid base64"),
            Self::Empty => f.write_str("media payload is empty"),
            Self::TooLarge { len } => write!(f, "media payload of {len} bytes is too large"),
        }
    }
}

impl std::error::Error for BadFrame {}

/// Counters of the inbound path.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InboundStats {
    /// Jitter-stage counters (duplicates, gaps, RFC 3550 jitter …).
    pub jitter: JitterStats,
    /// Payloads rejected with [`BadFrame`].
    pub bad_frames: u64,
    /// Payloads handed out by [`InboundPath::poll_user_audio_chunk`].
    pub payloads: u64,
    /// Of those, forwarded verbatim (no decode).
    pub passthrough_payloads: u64,
    /// Audio dropped because the caller did not poll (backlog over [`MAX_INBOUND_BACKLOG_MS`]).
    pub backlog_dropped_ms: f64,
}

/// The caller → agent path (see the module docs).
pub struct InboundPath {
    format: AgentFormat,
    jitter: JitterStage,
    resampler: Option<Resampler>,
    /// Agent-format bytes per payload.
    batch_bytes: usize,
    /// Agent-format bytes per ms (for stats).
    bytes_per_ms: f64,
    /// Decoded μ-law of the current frame.
    ulaw: Vec<u8>,
    /// Last accepted frame, μ-law, for concealment.
    last: Vec<u8>,
    /// In pass-through the last frame is kept as base64 and only decoded if a gap needs it.
    last_is_b64: bool,
    last_b64: String,
    /// 8 kHz samples (f32) and resampled output.
    pcm: Vec<f32>,
    resampled: Vec<f32>,
    /// Agent-format bytes waiting to be batched.
    pending: Vec<u8>,
    pending_cap: usize,
    /// The payload handed out by the last poll (or a pass-through payload ready to go).
    out: String,
    passthrough_ready: bool,
    flush_partial: bool,
    stats: InboundStats,
}

impl InboundPath {
    /// Builds the path for an agent speaking `format`.
    pub fn new(format: AgentFormat, config: InboundConfig) -> Result<Self, ResampleSetupError> {
        let rate = format.sample_rate();
        let resampler = if format.is_ulaw() {
            None
        } else {
            Some(Resampler::new(8000, rate, config.engine, false)?)
        };
        let batch_ms = config.batch_ms.clamp(1, MAX_BATCH_MS);
        let batch_bytes = format.samples_in_ms(batch_ms).max(1) * format.bytes_per_sample();
        let bytes_per_ms =
            format.samples_in_ms(1000) as f64 * format.bytes_per_sample() as f64 / 1000.0;
        let pending_cap = (format.samples_in_ms(MAX_INBOUND_BACKLOG_MS)
            * format.bytes_per_sample())
        .max(batch_bytes);
        let resampled_cap = resampler
            .as_ref()
            .map_or(0, |r| resampled_len(r, FRAME_SAMPLES));
        let frame_bytes = format.samples_in_ms(20) * format.bytes_per_sample();
        // A batch plus one frame of room before the next poll drains it.
        let pending_start = (batch_bytes + frame_bytes).min(pending_cap);
        let out_cap = (batch_bytes.max(FRAME_SAMPLES) / 3 + 1) * 4 + 4;
        Ok(Self {
            format,
            jitter: JitterStage::new(config.jitter),
            resampler,
            batch_bytes,
            bytes_per_ms,
            ulaw: vec![0; FRAME_SAMPLES],
            last: Vec::with_capacity(FRAME_SAMPLES),
            last_is_b64: false,
            // Only pass-through keeps the last frame as base64.
            last_b64: if format.is_ulaw() {
                String::with_capacity(out_cap)
            } else {
                String::new()
            },
            pcm: vec![0.0; FRAME_SAMPLES],
            resampled: vec![0.0; resampled_cap],
            pending: Vec::with_capacity(pending_start),
            pending_cap,
            out: String::with_capacity(out_cap),
            passthrough_ready: false,
            flush_partial: false,
            stats: InboundStats::default(),
        })
    }

    /// The agent format this path produces.
    pub fn format(&self) -> AgentFormat {
        self.format
    }

    /// Bytes of agent audio per payload.
    pub fn batch_bytes(&self) -> usize {
        self.batch_bytes
    }

    /// Handles one Twilio `media` message: `chunk` and `timestamp` (ms) as parsed from the
    /// message, `payload_b64` the `media.payload` text. Then drain
    /// [`InboundPath::poll_user_audio_chunk`].
    pub fn push_twilio_media(
        &mut self,
        now: Instant,
        chunk: u64,
        timestamp_ms: u64,
        payload_b64: &str,
    ) -> Result<(), BadFrame> {
        let len = match checked_decoded_len(payload_b64.as_bytes()) {
            Ok(0) => Err(BadFrame::Empty),
            Ok(n) if n > MAX_TWILIO_FRAME_BYTES => Err(BadFrame::TooLarge { len: n }),
            other => other,
        };
        let len = match len {
            Ok(n) => n,
            Err(e) => {
                self.stats.bad_frames += 1;
                return Err(e);
            }
        };
        self.fit_frame(len);
        if !self.admit(now, chunk, timestamp_ms, len) {
            return Ok(());
        }
        if self.format.is_ulaw() && self.pending.is_empty() && len == self.batch_bytes {
            self.out.clear();
            self.out.push_str(payload_b64);
            self.passthrough_ready = true;
            self.last_b64.clear();
            self.last_b64.push_str(payload_b64);
            self.last_is_b64 = true;
            return Ok(());
        }
        let n = match self.decode_b64(payload_b64) {
            Ok(n) => n,
            Err(e) => {
                // Only reachable for non-canonical trailing bits; the jitter stage already
                // counted the frame, so conceal it as a gap would be.
                self.stats.bad_frames += 1;
                return Err(e);
            }
        };
        self.last.clear();
        self.last.extend_from_slice(&self.ulaw[..n]);
        self.last_is_b64 = false;
        self.append_ulaw_frame(n);
        Ok(())
    }

    /// As [`InboundPath::push_twilio_media`], for a payload the caller has already decoded
    /// from base64 (raw μ-law bytes).
    pub fn push_twilio_ulaw(
        &mut self,
        now: Instant,
        chunk: u64,
        timestamp_ms: u64,
        ulaw: &[u8],
    ) -> Result<(), BadFrame> {
        let len = ulaw.len();
        let bad = if len == 0 {
            Some(BadFrame::Empty)
        } else if len > MAX_TWILIO_FRAME_BYTES {
            Some(BadFrame::TooLarge { len })
        } else {
            None
        };
        if let Some(e) = bad {
            self.stats.bad_frames += 1;
            return Err(e);
        }
        self.fit_frame(len);
        if !self.admit(now, chunk, timestamp_ms, len) {
            return Ok(());
        }
        self.ulaw[..len].copy_from_slice(ulaw);
        self.last.clear();
        self.last.extend_from_slice(ulaw);
        self.last_is_b64 = false;
        self.append_ulaw_frame(len);
        Ok(())
    }

    /// Grows the per-frame buffers for a frame of `len` μ-law bytes (at most
    /// [`MAX_TWILIO_FRAME_BYTES`], checked by the caller). A no-op once a call's frame size is
    /// known.
    fn fit_frame(&mut self, len: usize) {
        if self.ulaw.len() < len {
            self.ulaw.resize(len, 0);
        }
        if let Some(r) = &self.resampler {
            if self.pcm.len() < len {
                self.pcm.resize(len, 0.0);
            }
            let need = resampled_len(r, len);
            if self.resampled.len() < need {
                self.resampled.resize(need, 0.0);
            }
        }
    }

    /// Common front of both pushes: keeps an unpolled pass-through payload in order, asks the
    /// jitter stage, fills a gap. `false` if the frame is to be dropped.
    fn admit(&mut self, now: Instant, chunk: u64, timestamp_ms: u64, len: usize) -> bool {
        // A pass-through payload not yet polled goes back into the queue to keep order.
        if self.passthrough_ready {
            self.passthrough_ready = false;
            let out = std::mem::take(&mut self.out);
            let r = self.decode_b64(&out);
            self.out = out;
            if let Ok(n) = r {
                self.append_ulaw_frame(n);
            }
        }
        let fill = match self.jitter.handle_frame(now, chunk, timestamp_ms, len) {
            Verdict::Accept { fill_samples } => fill_samples,
            Verdict::Duplicate | Verdict::Stale => return false,
        };
        if fill > 0 {
            self.fill_gap(fill);
        }
        true
    }

    /// Decodes base64 into `self.ulaw`, returning the length.
    fn decode_b64(&mut self, b64: &str) -> Result<usize, BadFrame> {
        STANDARD
            .decode_slice(b64.as_bytes(), &mut self.ulaw[..])
            .map_err(|_| BadFrame::Base64)
    }

    /// Transcodes `self.ulaw[..n]` into `pending`.
    fn append_ulaw_frame(&mut self, n: usize) {
        if self.resampler.is_none() {
            let room = self.pending_cap - self.pending.len();
            let take = n.min(room);
            self.pending.extend_from_slice(&self.ulaw[..take]);
            self.count_dropped(n - take);
            return;
        }
        mulaw::decode_f32_into(&self.ulaw[..n], &mut self.pcm[..n]);
        self.append_pcm(n);
    }

    /// Resamples `self.pcm[..n]` and appends it as PCM16 LE to `pending`.
    fn append_pcm(&mut self, n: usize) {
        let Some(r) = self.resampler.as_mut() else {
            return;
        };
        let written = r
            .process_into(&self.pcm[..n], &mut self.resampled)
            .unwrap_or(0);
        self.append_resampled(written);
    }

    fn append_resampled(&mut self, written: usize) {
        let room = (self.pending_cap - self.pending.len()) / 2;
        let take = written.min(room);
        let start = self.pending.len();
        // Bounded by `pending_cap`; allocates only while the backlog reaches a new high.
        self.pending.resize(start + 2 * take, 0);
        for (dst, &s) in self.pending[start..]
            .chunks_exact_mut(2)
            .zip(&self.resampled[..take])
        {
            dst.copy_from_slice(&mulaw::f32_to_i16(s).to_le_bytes());
        }
        self.count_dropped(2 * (written - take));
    }

    fn count_dropped(&mut self, bytes: usize) {
        if bytes > 0 {
            self.stats.backlog_dropped_ms += bytes as f64 / self.bytes_per_ms;
        }
    }

    /// Inserts `fill` samples: the last frame repeated with a linear fade to zero over the
    /// concealment window, then silence (docs/dsp.md §3.6: repeat beats zero-fill).
    fn fill_gap(&mut self, fill: usize) {
        if self.last_is_b64 {
            let b64 = std::mem::take(&mut self.last_b64);
            if let Ok(n) = self.decode_b64(&b64) {
                self.last.clear();
                self.last.extend_from_slice(&self.ulaw[..n]);
            }
            self.last_b64 = b64;
            self.last_is_b64 = false;
        }
        let conceal = self.jitter.conceal_samples().max(1);
        let mut done = 0;
        while done < fill {
            let n = (fill - done).min(FRAME_SAMPLES);
            for i in 0..n {
                let k = done + i;
                let src = if self.last.is_empty() || k >= conceal {
                    0.0
                } else {
                    let fade = 1.0 - (k + 1) as f32 / conceal as f32;
                    let code = self.last[k % self.last.len()];
                    fade * f32::from(mulaw::decode_sample(code)) / mulaw::I16_SCALE
                };
                self.pcm[i] = src;
            }
            if self.resampler.is_some() {
                self.append_pcm(n);
            } else {
                mulaw::encode_f32_into(&self.pcm[..n], &mut self.ulaw[..n]);
                self.append_ulaw_frame(n);
            }
            done += n;
        }
    }

    /// The next `user_audio_chunk` payload (base64 text), or `None`. The string is valid until
    /// the next call on this path. Call until `None` after every push.
    pub fn poll_user_audio_chunk(&mut self) -> Option<&str> {
        if self.passthrough_ready {
            self.passthrough_ready = false;
            self.stats.payloads += 1;
            self.stats.passthrough_payloads += 1;
            return Some(&self.out);
        }
        let take = if self.pending.len() >= self.batch_bytes {
            self.batch_bytes
        } else if self.flush_partial && !self.pending.is_empty() {
            self.pending.len()
        } else {
            self.flush_partial = false;
            return None;
        };
        self.out.clear();
        STANDARD.encode_string(&self.pending[..take], &mut self.out);
        self.pending.copy_within(take.., 0);
        self.pending.truncate(self.pending.len() - take);
        self.stats.payloads += 1;
        Some(&self.out)
    }

    /// End of the stream (Twilio `stop`): pushes the resampler tail and makes a final partial
    /// payload pollable.
    pub fn finish(&mut self) {
        if let Some(r) = self.resampler.as_mut() {
            let n = r.flush_into(&mut self.resampled).unwrap_or(0);
            self.append_resampled(n);
        }
        self.flush_partial = true;
    }

    /// Counters so far.
    pub fn stats(&self) -> InboundStats {
        InboundStats {
            jitter: self.jitter.stats(),
            ..self.stats
        }
    }
}

impl fmt::Debug for InboundPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundPath")
            .field("format", &self.format)
            .field("batch_bytes", &self.batch_bytes)
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// Resampler output room for `frame` input samples plus its internal chunking, or a flush.
fn resampled_len(r: &Resampler, frame: usize) -> usize {
    // Frames are resampled one at a time (a gap fill too, in frame-sized pieces).
    r.output_frames_bound(frame).max(r.flush_frames_max())
}

/// Standard padded base64: length a multiple of 4, alphabet `A–Z a–z 0–9 + /`, `=` only as
/// one or two final characters. Returns the decoded length without decoding.
pub fn checked_decoded_len(b64: &[u8]) -> Result<usize, BadFrame> {
    if !b64.len().is_multiple_of(4) {
        return Err(BadFrame::Base64);
    }
    let pad = b64.iter().rev().take(2).take_while(|&&c| c == b'=').count();
    let body = &b64[..b64.len() - pad];
    // Branch-free per byte and folded with `&` (no early exit), so it vectorises.
    let ok = body.iter().fold(true, |ok, &c| {
        let alpha = (c | 0x20).wrapping_sub(b'a') < 26;
        let digit = c.wrapping_sub(b'0') < 10;
        ok & (alpha | digit | (c == b'+') | (c == b'/'))
    });
    if !ok {
        return Err(BadFrame::Base64);
    }
    Ok(b64.len() / 4 * 3 - pad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame_b64(byte: u8, len: usize) -> String {
        STANDARD.encode(vec![byte; len])
    }

    #[test]
    fn base64_checks() {
        assert_eq!(checked_decoded_len(b""), Ok(0));
        assert_eq!(checked_decoded_len(b"AAAA"), Ok(3));
        assert_eq!(checked_decoded_len(b"AA=="), Ok(1));
        assert_eq!(checked_decoded_len(b"AAA="), Ok(2));
        assert_eq!(checked_decoded_len(b"AAA"), Err(BadFrame::Base64));
        assert_eq!(checked_decoded_len(b"A=AA"), Err(BadFrame::Base64));
        assert_eq!(checked_decoded_len(b"A==="), Err(BadFrame::Base64));
        assert_eq!(checked_decoded_len(b"AA-_"), Err(BadFrame::Base64));
    }

    #[test]
    fn ulaw_single_frame_passes_through_verbatim() {
        let t0 = Instant::now();
        let mut p = InboundPath::new(AgentFormat::Ulaw8000, InboundConfig::default()).unwrap();
        let f = frame_b64(0x55, 160);
        p.push_twilio_media(t0, 1, 0, &f).unwrap();
        assert_eq!(p.poll_user_audio_chunk(), Some(f.as_str()));
        assert_eq!(p.poll_user_audio_chunk(), None);
        assert_eq!(p.stats().passthrough_payloads, 1);
    }

    #[test]
    fn bad_frames_are_typed_and_counted() {
        let t0 = Instant::now();
        let mut p = InboundPath::new(AgentFormat::Pcm16000, InboundConfig::default()).unwrap();
        assert_eq!(p.push_twilio_media(t0, 1, 0, "abc"), Err(BadFrame::Base64));
        assert_eq!(p.push_twilio_media(t0, 1, 0, ""), Err(BadFrame::Empty));
        let big = frame_b64(0, MAX_TWILIO_FRAME_BYTES + 3);
        assert_eq!(
            p.push_twilio_media(t0, 1, 0, &big),
            Err(BadFrame::TooLarge {
                len: MAX_TWILIO_FRAME_BYTES + 3
            })
        );
        assert_eq!(p.stats().bad_frames, 3);
        assert_eq!(p.stats().jitter.frames, 0);
        // An unpolled pass-through payload keeps its place when the next frame arrives.
        let mut u = InboundPath::new(AgentFormat::Ulaw8000, InboundConfig::default()).unwrap();
        u.push_twilio_media(t0, 1, 0, &frame_b64(1, 160)).unwrap();
        u.push_twilio_media(t0 + Duration::from_millis(20), 2, 20, &frame_b64(2, 160))
            .unwrap();
        assert_eq!(u.poll_user_audio_chunk(), Some(frame_b64(1, 160).as_str()));
        assert_eq!(u.poll_user_audio_chunk(), Some(frame_b64(2, 160).as_str()));
        assert_eq!(u.poll_user_audio_chunk(), None);
    }

    #[test]
    fn decoded_bytes_push_matches_base64_push() {
        let t0 = Instant::now();
        for format in [AgentFormat::Pcm16000, AgentFormat::Ulaw8000] {
            let mut a = InboundPath::new(format, InboundConfig::default()).unwrap();
            let mut b = InboundPath::new(format, InboundConfig::default()).unwrap();
            for i in 0..5u64 {
                let f: Vec<u8> = (0..160).map(|k| (k as u64 * 3 + i) as u8).collect();
                let ts = if i == 3 { 100 } else { 20 * i };
                a.push_twilio_media(t0, i + 1, ts, &STANDARD.encode(&f))
                    .unwrap();
                b.push_twilio_ulaw(t0, i + 1, ts, &f).unwrap();
                loop {
                    let pa = a.poll_user_audio_chunk().map(str::to_owned);
                    let pb = b.poll_user_audio_chunk().map(str::to_owned);
                    assert_eq!(pa, pb);
                    if pa.is_none() {
                        break;
                    }
                }
            }
            assert_eq!(b.push_twilio_ulaw(t0, 9, 0, &[]), Err(BadFrame::Empty));
        }
    }
}
