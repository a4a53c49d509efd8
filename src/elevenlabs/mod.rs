//! ElevenLabs conversation client (`docs/elevenlabs.md`). Sans-IO.

pub mod endpoint;
pub mod messages;
pub mod session;
