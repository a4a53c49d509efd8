//! The agent socket's I/O: the opening handshake, reads into the frame reader's buffer, and the
//! writes of what the frame writer encoded. The protocol is in `http::websocket_client`; this
//! only moves bytes (docs/elevenlabs.md §1.8).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::net::{self, NetStream, RequestError};
use crate::http::client::BadHeader;
use crate::http::url::Endpoint;
use crate::http::websocket_client::{
    self, FrameError, FrameReader, FrameWriter, HandshakeError, Incoming,
    MAX_HANDSHAKE_RESPONSE_BYTES, RESIDENT_READ_BYTES,
};

/// The close code for a normal end (RFC 6455 §7.4.1).
const CLOSE_NORMAL: u16 = 1000;
/// Bytes of written frames kept for the next write between turns; a larger batch (a long
/// `client_tool_result`) gives its memory back once sent.
const RESIDENT_WRITE_BYTES: usize = 1024;

/// Why the handshake failed.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The request could not be built (a control character in the URL).
    Request(BadHeader),
    /// No randomness for the key.
    Random(io::Error),
    /// Writing the request or reading the response failed.
    Io(io::Error),
    /// The response was refused.
    Handshake(HandshakeError),
    /// The handshake took longer than allowed.
    TimedOut,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Request(e) => write!(f, "handshake request: {e}"),
            OpenError::Random(e) => write!(f, "no randomness for the handshake: {e}"),
            OpenError::Io(e) => write!(f, "handshake: {e}"),
            OpenError::Handshake(e) => write!(f, "{e}"),
            OpenError::TimedOut => f.write_str("handshake timed out"),
        }
    }
}

/// What a read brought.
#[derive(Debug)]
pub(crate) enum AgentRead {
    /// A text message: [`AgentSocket::text`] holds it until the next read.
    Text,
    /// A WebSocket-level ping was read and its pong queued: flush soon (RFC 6455 §5.5.2).
    Pinged,
    /// The server closed the socket, with its close code if it sent a close frame.
    Closed(Option<u16>),
    /// A broken frame (a close with the matching code is queued) or an I/O error.
    Failed(ReadError),
}

/// Why reading failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    Frame(FrameError),
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Frame(e) => write!(f, "{e}"),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// A connected agent WebSocket.
pub(crate) struct AgentSocket {
    io: NetStream,
    reader: FrameReader,
    writer: FrameWriter,
    /// Frames encoded and not yet written.
    out: Vec<u8>,
}

impl AgentSocket {
    /// Runs the opening handshake on `io` for `ep`, within `timeout`.
    pub(crate) async fn open(
        mut io: NetStream,
        ep: &Endpoint,
        max_message: usize,
        timeout: Duration,
    ) -> Result<AgentSocket, OpenError> {
        let mut random = [0u8; 48];
        super::os_random(&mut random).map_err(OpenError::Random)?;
        let (key_bytes, seed) = random.split_at(16);
        let key_bytes: [u8; 16] = key_bytes.try_into().unwrap_or_default();
        let seed: [u8; 32] = seed.try_into().unwrap_or_default();
        let key = websocket_client::handshake_key(&key_bytes);
        let request = websocket_client::handshake_request(ep, &key).map_err(OpenError::Request)?;
        // The head's limit plus one read: what follows the head (frames already) is bounded
        // by the read size, so it fits the reader's resident buffer.
        let max = MAX_HANDSHAKE_RESPONSE_BYTES + RESIDENT_READ_BYTES;
        let exchange = net::write_and_read(&mut io, &request, max, |buf, eof| {
            let head = websocket_client::parse_handshake_response(buf, eof, &key)?;
            Ok(head.map(|n| FrameReader::new(max_message, &buf[n..])))
        });
        let reader = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => return Err(OpenError::TimedOut),
            Ok(Ok(reader)) => reader,
            Ok(Err(RequestError::Io(e))) => return Err(OpenError::Io(e)),
            Ok(Err(RequestError::TooLarge)) => {
                return Err(OpenError::Handshake(HandshakeError::MalformedHead));
            }
            Ok(Err(RequestError::Response(e))) => return Err(OpenError::Handshake(e)),
        };
        Ok(AgentSocket {
            io,
            reader,
            writer: FrameWriter::new(seed),
            out: Vec::with_capacity(RESIDENT_WRITE_BYTES),
        })
    }

    /// Reads until a text message, a ping, the end, or nothing more to read. A ping's pong is
    /// queued for the next [`AgentSocket::flush`]; pongs and binary messages, which the agent
    /// protocol does not use, are skipped.
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<AgentRead> {
        loop {
            match self.reader.next_frame() {
                Ok(Some(Incoming::Text(_))) => return Poll::Ready(AgentRead::Text),
                Ok(Some(Incoming::Ping(payload))) => {
                    self.writer.pong(&mut self.out, payload);
                    return Poll::Ready(AgentRead::Pinged);
                }
                // Skipped; what follows may already be in the buffer.
                Ok(Some(Incoming::Pong | Incoming::Binary(_))) => continue,
                Ok(Some(Incoming::Close(code))) => {
                    // §5.5.1: answer with the same code (or none).
                    self.writer.close(&mut self.out, code);
                    return Poll::Ready(AgentRead::Closed(code));
                }
                Ok(None) => {}
                Err(e) => {
                    self.writer.close(&mut self.out, Some(e.close_code()));
                    return Poll::Ready(AgentRead::Failed(ReadError::Frame(e)));
                }
            }
            let mut space = ReadBuf::new(self.reader.space());
            match Pin::new(&mut self.io).poll_read(cx, &mut space) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(AgentRead::Failed(ReadError::Io(e))),
                Poll::Ready(Ok(())) => {
                    let n = space.filled().len();
                    if n == 0 {
                        return Poll::Ready(AgentRead::Closed(None));
                    }
                    self.reader.filled(n);
                }
            }
        }
    }

    /// The next read's outcome.
    pub(crate) async fn read(&mut self) -> AgentRead {
        std::future::poll_fn(|cx| self.poll_read(cx)).await
    }

    /// The text message the last read brought.
    pub(crate) fn text(&self) -> &str {
        self.reader.text().unwrap_or_default()
    }

    /// Encodes a text message for the next [`AgentSocket::flush`].
    pub(crate) fn feed_text(&mut self, text: &str) {
        self.writer.text(&mut self.out, text);
    }

    /// Whether frames wait to be written (a message fed, or a pong or close queued by a read).
    pub(crate) fn wants_flush(&self) -> bool {
        !self.out.is_empty()
    }

    /// Writes every encoded frame.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = async {
            self.io.write_all(&self.out).await?;
            self.io.flush().await
        }
        .await;
        self.out.clear();
        if self.out.capacity() > RESIDENT_WRITE_BYTES {
            self.out.shrink_to(RESIDENT_WRITE_BYTES);
        }
        r
    }

    /// Sends one text message now.
    pub(crate) async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.feed_text(text);
        self.flush().await
    }

    /// Writes what is queued (after a server's close, the close reply: RFC 6455 §5.5.1) and
    /// ends the stream, within `limit`.
    pub(crate) async fn finish(self, limit: Duration) {
        self.flush_and_shutdown(limit).await;
    }

    /// Sends a normal close (1000, §7.4.1) and ends the TCP (and TLS) stream, within `limit`.
    pub(crate) async fn close(mut self, limit: Duration) {
        self.writer.close(&mut self.out, Some(CLOSE_NORMAL));
        self.flush_and_shutdown(limit).await;
    }

    async fn flush_and_shutdown(mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            if self.flush().await.is_ok() {
                let _ = self.io.shutdown().await;
            }
        })
        .await;
    }
}
