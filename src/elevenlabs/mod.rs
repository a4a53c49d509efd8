//! ElevenLabs conversation client (`shared/specs/elevenlabs.md`). Sans-IO.

pub mod messages;
pub mod session;
