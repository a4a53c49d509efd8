//! ElevenLabs conversation client (`shared/specs/elevenlabs.md`). Sans-IO.

pub mod endpoint;
pub mod messages;
pub mod session;
