//! The simulator's sockets: a Twilio stream as a caller opens it ([`twilio`]) and an ElevenLabs
//! conversation service on loopback ([`agent`]). The protocol rules they follow are the sans-IO
//! cores in [`crate::sim`]; these types only move bytes and read the clock.

pub mod agent;
pub mod twilio;
pub mod twilio_api;

use std::fmt;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::http::url::UrlError;
use crate::sim::twilio::Violation;

/// Any byte stream a simulated socket runs over (TCP, TLS, a test's own transport).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Largest WebSocket message (and frame) a simulated peer accepts from ignis: audio messages
/// are a few KiB, the initiation data with its variables well under this.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Socket settings of the simulated peers. tungstenite zero-fills its whole read buffer before
/// every read; with the default 128 KiB that `memset` was 40 % of the load generator's CPU
/// (perf), which capped the load it could drive. Messages here are under 4 KiB; a larger one
/// grows the buffer as it arrives.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// Why a simulated call or conversation failed.
#[derive(Debug)]
pub enum SimError {
    /// A URL the simulator was given is not an absolute ws/wss/http/https URL.
    Url(UrlError),
    /// TCP, TLS or the handshake did not complete in time.
    Timeout(&'static str),
    /// Connecting (TCP or TLS) failed.
    Connect(std::io::Error),
    /// The voice webhook could not be sent or its answer read.
    Webhook(String),
    /// The WebSocket failed (handshake, read or write).
    Socket(tungstenite::Error),
    /// ignis sent something Twilio would reject.
    Violation(Violation),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Url(e) => write!(f, "URL: {e}"),
            SimError::Timeout(what) => write!(f, "{what} timed out"),
            SimError::Connect(e) => write!(f, "connect: {e}"),
            SimError::Webhook(e) => write!(f, "voice webhook: {e}"),
            SimError::Socket(e) => write!(f, "stream: {e}"),
            SimError::Violation(v) => v.fmt(f),
        }
    }
}

impl std::error::Error for SimError {}

impl From<tungstenite::Error> for SimError {
    fn from(e: tungstenite::Error) -> Self {
        SimError::Socket(e)
    }
}

impl From<Violation> for SimError {
    fn from(v: Violation) -> Self {
        SimError::Violation(v)
    }
}
