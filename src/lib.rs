//! ignis: a real-time voice bridge between Twilio Media Streams and an ElevenLabs agent.
//!
//! # Layout
//!
//! Data flows from the wire inwards and back out:
//!
//! - [`http`]: sans-IO HTTP/1.1 front end (request heads, bodies, responses, upgrade checks),
//!   and the URLs and response parsing of ignis's own HTTPS requests.
//! - [`twilio`]: Twilio signatures, webhook parameters, TwiML and Media Streams messages.
//! - [`audio`]: the DSP pipeline (μ-law, resampling, jitter and playout buffers).
//! - [`sim`]: the simulated Twilio caller and ElevenLabs agent (demo, simulate, tests, benches).
//! - [`driver`]: the only layer that owns sockets, tasks, threads and the clock.
//!
//! Everything outside `driver` (and `audio::pipeline`) takes bytes and `now` as arguments and
//! returns values; it never performs I/O or reads the clock.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod audio;
pub mod bridge;
pub mod calls;
pub mod cli;
pub mod config;
pub mod driver;
pub mod elevenlabs;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod practice;
pub mod privacy;
pub mod routes;
pub mod secret;
pub mod sim;
pub mod telemetry;
pub mod twilio;
