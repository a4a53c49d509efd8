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
//!
//! # Driving the paths (what the bridge does)
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ignis::audio::{AgentFormat, InboundConfig, InboundPath, OutboundConfig, OutboundPath,
//!                    Transmit};
//!
//! let format = AgentFormat::parse("pcm_16000").unwrap();
//! let mut inbound = InboundPath::new(format, InboundConfig::default()).unwrap();
//! let mut outbound = OutboundPath::new(format, OutboundConfig::default()).unwrap();
//! let t0 = Instant::now(); // the driver's clock; the paths never read it
//!
//! // Twilio `media` → ElevenLabs `user_audio_chunk`.
//! let payload = "/".repeat(212) + "/w=="; // 160 bytes of μ-law 0xFF (silence), base64
//! inbound.push_twilio_media(t0, 1, 0, &payload).unwrap();
//! while let Some(b64) = inbound.poll_user_audio_chunk() {
//!     // send {"user_audio_chunk": b64}
//!     assert_eq!(b64.len(), 856); // 20 ms of pcm_16000
//! }
//!
//! // ElevenLabs `audio` → Twilio `media` / `mark`, paced by `poll_timeout`.
//! outbound.push_agent_audio(t0, 1, "AAAAAAAA").unwrap();
//! outbound.end_of_turn();
//! let mut now = t0;
//! loop {
//!     while let Some(t) = outbound.poll_transmit(now) {
//!         match t {
//!             Transmit::Media(b64) => { /* send {"event":"media", … "payload": b64} */ }
//!             Transmit::Mark(name) => { /* send {"event":"mark", … "name": name} */ }
//!         }
//!     }
//!     match outbound.poll_timeout() {
//!         Some(deadline) => now = deadline, // the driver sleeps until then
//!         None => break,
//!     }
//! }
//! // On an ElevenLabs `interruption`: `outbound.interrupt(now, Some(event_id))`, then send
//! // Twilio `clear` if the result says so; on a Twilio `mark` echo: `handle_mark_echo(name)`.
//! # let _ = Duration::ZERO;
//! ```

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
pub use pipeline::{
    AudioStages, DspPool, Pipeline, PipelineConfig, PipelineOutput, PoolCall, PoolCallStats,
    PoolLink, PoolOutput,
};
pub use playout::{Interruption, MarkEcho, PlayoutConfig, PlayoutStats, Transmit};
pub use resample::Engine;
