//! The audio pipeline (issue 3): μ-law, resampling, jitter and playout buffering.
//!
//! Caller audio: Twilio `media` (μ-law 8 kHz, ~20 ms) → [`InboundPath`] (jitter stage, decode,
//! resample, batch, base64) → ElevenLabs `user_audio_chunk`.
//! Agent audio: ElevenLabs `audio` bursts → [`OutboundPath`] (decode, resample to 8 kHz, μ-law,
//! 20 ms re-framing, paced [`playout`] buffer with marks) → Twilio `media`/`mark`.
//!
//! Everything here except [`pipeline`] (the one module with threads and channels) is sans-IO:
//! no sockets, threads, channels or clock reads; `now` is a [`std::time::Instant`] passed in by
//! the caller, so tests run in virtual time.
//! After set-up nothing allocates per frame: buffers are sized at construction and reused, and
//! outputs are borrowed `&str`s valid until the next call.

pub mod format;
pub mod inbound;
pub mod jitter;
pub mod mulaw;
pub mod outbound;
pub mod pipeline;
pub mod playout;
pub mod resample;
pub mod wav;

pub use format::{AgentFormat, UnknownFormat};
pub use inbound::{BadFrame, InboundConfig, InboundPath, InboundStats};
pub use jitter::{JitterConfig, JitterStats};
pub use outbound::{BadAgentAudio, OutboundConfig, OutboundPath, OutboundStats};
pub use pipeline::{Pipeline, PipelineConfig, PipelineOutput};
pub use playout::{Interruption, MarkEcho, PlayoutConfig, PlayoutStats, Transmit};
pub use resample::Engine;
