//! Twilio: webhook signatures, webhook parameters, TwiML and Media Streams messages
//! (`shared/specs/twilio.md`). Sans-IO.

pub mod media_stream;
pub mod rest;
pub mod signature;
pub mod twiml;
pub mod webhook;
