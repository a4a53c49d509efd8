//! Twilio: webhook signatures, webhook parameters, TwiML and Media Streams messages
//! (`docs/twilio.md`). Sans-IO.

pub mod media_stream;
pub mod rest;
pub mod signature;
pub mod twiml;
pub mod webhook;
