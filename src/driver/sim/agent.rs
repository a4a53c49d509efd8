//! An ElevenLabs service on loopback, the project's one ElevenLabs stand-in: the signed-URL
//! endpoint (§1.3), the conversation socket (§1.7) and the agents/tools/secrets API (§10, rules in
//! `sim::elevenlabs_api`). It checks what ElevenLabs checks (the API key, the agent id, a JSON
//! first message: the initiation data, or another message from a client that sends none, §1.7)
//! and hands each conversation to a handler that plays the agent's part.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::{SimError, ws_config};
use crate::sim::agent as rules;
use crate::sim::elevenlabs_api::{self as api, Workspace};

/// Largest signed-URL request head read.
const MAX_REQUEST_HEAD: usize = 4096;
/// Time the client has to send its initiation data.
const INITIATION_TIMEOUT: Duration = Duration::from_secs(5);

/// What the service accepts.
#[derive(Debug, Clone)]
pub struct AgentServiceOptions {
    /// The one agent id it knows.
    pub agent_id: String,
    /// The API key the signed-URL endpoint requires.
    pub api_key: String,
    /// The `conversation_signature` it puts in signed URLs.
    pub signature: String,
}

/// A running service.
pub struct AgentService {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Signed-URL requests answered (either way).
    pub signed_url_requests: Arc<Mutex<u32>>,
    /// Origin signed URLs point at (default `ws://<addr>`), e.g. a TLS front.
    pub signed_url_origin: Arc<Mutex<Option<String>>>,
    /// The workspace the agents/tools/secrets API serves (empty at start: tests seed it).
    workspace: Arc<Mutex<Workspace>>,
}

impl AgentService {
    /// Listens on loopback; each conversation (or failed handshake) goes to `handler`.
    pub async fn start<F, Fut>(opts: AgentServiceOptions, handler: F) -> std::io::Result<Self>
    where
        F: Fn(Result<Conversation, SimError>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let service = AgentService {
            addr,
            signed_url_requests: Arc::default(),
            signed_url_origin: Arc::default(),
            workspace: Arc::new(Mutex::new(Workspace::new(&opts.api_key))),
        };
        let (count, origin, workspace) = (
            service.signed_url_requests.clone(),
            service.signed_url_origin.clone(),
            service.workspace.clone(),
        );
        let (opts, handler) = (Arc::new(opts), Arc::new(handler));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let origin = lock(&origin).clone().unwrap_or(format!("ws://{addr}"));
                let (opts, handler, count) = (opts.clone(), handler.clone(), count.clone());
                let workspace = workspace.clone();
                tokio::spawn(async move {
                    let peers = Peers {
                        opts: &opts,
                        origin: &origin,
                        count: &count,
                        workspace: &workspace,
                    };
                    if let Some(conv) = accept(stream, peers).await {
                        handler(conv).await;
                    }
                });
            }
        });
        Ok(service)
    }

    /// Its `http://` base, for `ELEVENLABS_API_BASE`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The API's workspace, to seed agents and tools or read the state and the write log
    /// (hold the guard briefly: requests wait for it).
    pub fn workspace(&self) -> std::sync::MutexGuard<'_, Workspace> {
        lock(&self.workspace)
    }
}

/// What one accepted connection may use.
#[derive(Clone, Copy)]
struct Peers<'a> {
    opts: &'a AgentServiceOptions,
    origin: &'a str,
    count: &'a Mutex<u32>,
    workspace: &'a Mutex<Workspace>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Answers a signed-URL request, or accepts a conversation (`None` when it was refused).
async fn accept(mut stream: TcpStream, peers: Peers<'_>) -> Option<Result<Conversation, SimError>> {
    let Peers {
        opts,
        origin,
        count,
        workspace,
    } = peers;
    // Peek at the request line to tell the signed-URL GET and the API from the upgrade.
    let mut head = [0u8; MAX_REQUEST_HEAD];
    let n = stream.peek(&mut head).await.ok()?;
    let text = String::from_utf8_lossy(&head[..n]).into_owned();
    let path = text
        .split(' ')
        .nth(1)
        .map(|t| t.split('?').next().unwrap_or(t))
        .unwrap_or("");
    if path.starts_with("/v1/")
        && !rules::is_signed_url_path(path)
        && path != rules::CONVERSATION_PATH
    {
        serve_api(stream, workspace).await;
        return None;
    }
    if text.starts_with("GET ") && rules::is_signed_url_path(path) {
        let _ = stream.read(&mut head).await;
        *lock(count) += 1;
        let resp = rules::signed_url_response(
            &text,
            &opts.api_key,
            &opts.agent_id,
            origin,
            &opts.signature,
        );
        let _ = stream.write_all(resp.as_bytes()).await;
        return None;
    }
    let target = Arc::new(Mutex::new(String::new()));
    let seen = target.clone();
    #[allow(clippy::result_large_err)] // tungstenite's callback signature
    let callback = move |req: &Request, resp: Response| {
        *lock(&seen) = req.uri().to_string();
        Ok(resp)
    };
    let mut ws =
        match tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config()))
            .await
        {
            Ok(ws) => ws,
            Err(e) => return Some(Err(e.into())),
        };
    let target = lock(&target).clone();
    if !target.contains(&format!("agent_id={}", opts.agent_id)) {
        let _ = ws.close(Some(policy("unknown agent"))).await;
        return None;
    }
    // §1.7: the client sends conversation_initiation_client_data first, or (as ElevenLabs'
    // own Twilio example) starts with another message, which is then kept for `recv`.
    let first = match tokio::time::timeout(INITIATION_TIMEOUT, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => t,
        _ => return None,
    };
    let value: Value = serde_json::from_str(first.as_str()).unwrap_or(Value::Null);
    let (initiation, pending) = match rules::opening(&value) {
        rules::Opening::Initiation => (value, None),
        rules::Opening::Without => (Value::Null, Some(first)),
        rules::Opening::Invalid => {
            let _ = ws.close(Some(policy("invalid_message"))).await;
            return None;
        }
    };
    Some(Ok(Conversation {
        ws,
        target,
        initiation,
        pending,
        pongs: Vec::new(),
    }))
}

/// Reads one API request whole, answers it from the workspace and closes.
async fn serve_api(mut stream: TcpStream, workspace: &Mutex<Workspace>) {
    let mut buf = Vec::with_capacity(MAX_REQUEST_HEAD);
    let request = loop {
        let mut chunk = [0u8; MAX_REQUEST_HEAD];
        let n = match tokio::time::timeout(INITIATION_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        buf.extend_from_slice(&chunk[..n]);
        match api::parse_request(&buf) {
            Ok(Some(r)) => break r,
            Ok(None) => {}
            Err(_) => return,
        }
    };
    let response = lock(workspace).handle(&request).to_http();
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

fn policy(reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::Policy,
        reason: reason.into(),
    }
}

/// One conversation, after the client's initiation data; the handler sends the metadata.
pub struct Conversation {
    ws: WebSocketStream<TcpStream>,
    /// The request path and query the client used.
    pub target: String,
    /// The client's initiation data (`Null` when it opened without, §1.7).
    pub initiation: Value,
    /// The first client message when it was not the initiation data, not yet read.
    pending: Option<Utf8Bytes>,
    /// Payloads of the WebSocket-level pongs the client sent, in order.
    pub pongs: Vec<Vec<u8>>,
}

impl Conversation {
    /// The dynamic variable `name` of the initiation data.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.initiation["dynamic_variables"][name].as_str()
    }

    /// Sends one text message.
    pub async fn send(&mut self, text: String) -> Result<(), SimError> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// Sends the metadata with the formats both ways.
    pub async fn send_metadata(
        &mut self,
        id: &str,
        output: &str,
        input: &str,
    ) -> Result<(), SimError> {
        self.send(rules::metadata(id, output, input)).await
    }

    /// The next text message from the client; `None` once the socket closed.
    pub async fn recv(&mut self) -> Result<Option<Utf8Bytes>, SimError> {
        if let Some(first) = self.pending.take() {
            return Ok(Some(first));
        }
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(Some(t)),
                Some(Ok(Message::Close(_))) | None => return Ok(None),
                Some(Ok(Message::Pong(p))) => self.pongs.push(p.to_vec()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Sends a WebSocket-level ping (RFC 6455 §5.5.2; ElevenLabs' own pings are JSON, §3.1).
    pub async fn send_ws_ping(&mut self, payload: &[u8]) -> Result<(), SimError> {
        self.ws.send(Message::Ping(payload.to_vec().into())).await?;
        Ok(())
    }

    /// Sends `text` as one message in `pieces` fragments (RFC 6455 §5.4), with a WebSocket
    /// ping between the first two.
    pub async fn send_fragmented(&mut self, text: &str, pieces: usize) -> Result<(), SimError> {
        let bytes = text.as_bytes();
        let size = bytes.len().div_ceil(pieces.max(1)).max(1);
        let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let opcode = OpCode::Data(if i == 0 { Data::Text } else { Data::Continue });
            let frame = Frame::message(chunk.to_vec(), opcode, i + 1 == chunks.len());
            self.ws.send(Message::Frame(frame)).await?;
            if i == 0 {
                self.ws
                    .send(Message::Ping(b"between".to_vec().into()))
                    .await?;
            }
        }
        Ok(())
    }

    /// Writes an unsolicited pong and a close with `code` in one TCP write (so the client reads
    /// both at once), then waits for the client's close reply like [`Conversation::close`].
    pub async fn close_after_pong(&mut self, code: u16) -> Option<Option<u16>> {
        let [hi, lo] = code.to_be_bytes();
        // Unmasked server frames (RFC 6455 §5.2): pong, empty; close, 2-byte code.
        let raw = [0x8A, 0x00, 0x88, 0x02, hi, lo];
        if self.ws.get_mut().write_all(&raw).await.is_err() {
            return None;
        }
        self.close_reply().await
    }

    /// Closes with `code` and waits for the client's close reply; returns the reply's code
    /// (`Some(None)`: a close frame without one; `None`: no close frame came back).
    pub async fn close(&mut self, code: u16) -> Option<Option<u16>> {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        };
        let _ = self.ws.close(Some(frame)).await;
        self.close_reply().await
    }

    /// Reads until the client's close frame (pongs on the way are recorded); its code as in
    /// [`Conversation::close`].
    async fn close_reply(&mut self) -> Option<Option<u16>> {
        while let Some(Ok(m)) = self.ws.next().await {
            match m {
                Message::Close(reply) => return Some(reply.map(|f| u16::from(f.code))),
                Message::Pong(p) => self.pongs.push(p.to_vec()),
                _ => {}
            }
        }
        None
    }
}
