//! The audio pipeline (issue 3): μ-law, resampling, jitter and playout buffering.

pub mod mulaw;
