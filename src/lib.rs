//! ignis: a real-time voice bridge between Twilio Media Streams and an ElevenLabs agent.
//!
//! # Layout
//!
//! Data flows from the wire inwards and back out. Every module:
//!
//! - [`http`]: sans-IO HTTP/1.1 front end (request heads, bodies, forms, responses, upgrade
//!   checks), and the URLs and response parsing of ignis's own HTTPS requests.
//! - [`twilio`]: Twilio signatures, webhook parameters, TwiML, Media Streams messages, REST update.
//! - [`elevenlabs`]: the agent's conversation URL and signed URL, its messages, the session rules.
//! - [`audio`]: the DSP pipeline (μ-law, resampling, jitter stage, playout buffer, WAV).
//! - [`bridge`]: one call, Twilio events ⇄ audio paths ⇄ agent session.
//! - [`routes`]: request routing and the webhook handlers, a request in, an action out.
//! - [`calls`]: the registry of live streams and how calls ended.
//! - [`practice`]: the six agent tools, the staff API, the calendar and the SQLite store.
//! - [`secret`]: constant-time comparison and hex encoding for signatures and tokens.
//! - [`cli`]: the command line (`serve`, `demo`, `simulate`, `healthcheck`), declared with clap.
//! - [`config`]: every environment variable, parsed once into one typed configuration.
//! - [`metrics`]: counters and histograms in the Prometheus text format.
//! - [`privacy`]: keeping phone numbers and patient data out of logs.
//! - [`telemetry`]: log output, text or JSON lines.
//! - [`sim`]: the simulated Twilio caller and ElevenLabs agent (demo, simulate, tests, benches).
//! - [`driver`]: the only layer that owns sockets, tasks and the clock.
//! - `fuzzing` (hidden, only with the test-only `fuzzing` feature): the fuzz entry points.
//!
//! Everything outside `driver` takes bytes and `now` as arguments and returns values; it never
//! performs I/O or reads the clock. The exceptions are `audio::pipeline` (the DSP threads)
//! and the practice store (its SQLite file and writer thread). `ARCHITECTURE.md` in the
//! repository has the details; `docs/` has the protocol notes the code cites.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[macro_use]
mod error_text;

pub mod audio;
pub mod bridge;
pub mod calls;
pub mod cli;
pub mod config;
pub mod driver;
pub mod elevenlabs;
pub mod fleet;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod pg;
pub mod practice;
pub mod privacy;
pub mod routes;
pub mod secret;
pub mod setup;
pub mod sim;
pub mod telemetry;
pub mod twilio;
