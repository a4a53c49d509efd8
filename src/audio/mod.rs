//! The audio pipeline (issue 3): μ-law, resampling, jitter and playout buffering.

pub mod format;
pub mod mulaw;
pub mod resample;

pub use format::{AgentFormat, UnknownFormat};
