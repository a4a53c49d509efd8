//! A stand-in for the ElevenLabs service on loopback, following elevenlabs.md: the signed-URL
//! endpoint (§1.3) and the conversation socket (§1.7, §2, §3). Each accepted conversation is
//! handed to the test as an [`AgentConn`] the test scripts: what to send, when to close.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub const AGENT_ID: &str = "agent_test";
pub const API_KEY: &str = "sk_test_key";
pub const SIGNATURE: &str = "sig_abc123";

/// How the stand-in behaves at the start of each conversation.
#[derive(Clone, Debug)]
pub struct AgentBehaviour {
    pub input_format: String,
    pub output_format: String,
    /// Delay before the metadata (to test set-up buffering).
    pub metadata_delay: Duration,
    /// Send a ping right after the metadata.
    pub ping_first: bool,
    /// Reply to every caller audio chunk with the same bytes as agent audio (event id 1).
    pub echo: bool,
}

impl Default for AgentBehaviour {
    fn default() -> Self {
        AgentBehaviour {
            input_format: "ulaw_8000".into(),
            output_format: "ulaw_8000".into(),
            metadata_delay: Duration::ZERO,
            ping_first: false,
            echo: false,
        }
    }
}

/// Something the test tells a conversation to do.
pub enum Cmd {
    Send(String),
    Close(u16),
    /// Drop the TCP connection without a close frame.
    Drop,
}

/// One accepted conversation.
pub struct AgentConn {
    /// The request path and query the client used.
    pub target: String,
    /// The first message (must be conversation_initiation_client_data).
    pub initiation: Value,
    rx: mpsc::UnboundedReceiver<String>,
    tx: mpsc::UnboundedSender<Cmd>,
}

impl AgentConn {
    pub fn send(&self, msg: Value) {
        let _ = self.tx.send(Cmd::Send(msg.to_string()));
    }
    pub fn send_audio(&self, event_id: u64, audio: &[u8]) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(audio);
        self.send(
            json!({"type":"audio","audio_event":{"audio_base_64": b64, "event_id": event_id}}),
        );
    }
    pub fn close(&self, code: u16) {
        let _ = self.tx.send(Cmd::Close(code));
    }
    pub fn drop_connection(&self) {
        let _ = self.tx.send(Cmd::Drop);
    }
    /// Next message from ignis, or `None` when the socket closed (or after `within`).
    pub async fn recv(&mut self, within: Duration) -> Option<String> {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
    /// Receives until `pred` matches, returning everything seen (including the match).
    pub async fn recv_until(
        &mut self,
        within: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let Ok(Some(m)) = tokio::time::timeout_at(deadline, self.rx.recv()).await else {
                panic!(
                    "agent did not see the expected message; saw {} messages",
                    seen.len()
                );
            };
            let v: Value = serde_json::from_str(&m).expect("ignis sent JSON");
            let hit = pred(&v);
            seen.push(v);
            if hit {
                return seen;
            }
        }
    }
    /// Receives until at least `bytes` bytes of caller audio (`user_audio_chunk`, decoded)
    /// arrived, returning every message seen.
    pub async fn recv_audio(&mut self, bytes: usize, within: Duration) -> Vec<Value> {
        let mut got = 0;
        self.recv_until(within, move |m| {
            got += m["user_audio_chunk"]
                .as_str()
                .map_or(0, |b| b.len() / 4 * 3);
            got >= bytes
        })
        .await
    }

    /// Whether the socket closes within `within` (messages before the close are discarded).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(None) => return true,
                Ok(Some(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// Decoded audio bytes of every `user_audio_chunk` in `msgs`.
pub fn user_audio(msgs: &[Value]) -> Vec<u8> {
    use base64::Engine;
    msgs.iter()
        .filter_map(|m| m["user_audio_chunk"].as_str())
        .flat_map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap())
        .collect()
}

/// The stand-in service.
pub struct FakeAgent {
    pub addr: SocketAddr,
    pub behaviour: Arc<Mutex<AgentBehaviour>>,
    conns: tokio::sync::Mutex<mpsc::UnboundedReceiver<AgentConn>>,
    pub signed_url_requests: Arc<Mutex<u32>>,
    /// Origin the signed URL points at (default `ws://<own address>`), e.g. a TLS front.
    pub signed_url_origin: Arc<Mutex<Option<String>>>,
}

impl FakeAgent {
    pub async fn start(behaviour: AgentBehaviour) -> FakeAgent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let behaviour = Arc::new(Mutex::new(behaviour));
        let (conn_tx, conn_rx) = mpsc::unbounded_channel();
        let signed = Arc::new(Mutex::new(0));
        let origin = Arc::new(Mutex::new(None::<String>));
        let (b, s, o) = (behaviour.clone(), signed.clone(), origin.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (b, s, tx) = (b.clone(), s.clone(), conn_tx.clone());
                let origin = o
                    .lock()
                    .unwrap()
                    .clone()
                    .unwrap_or_else(|| format!("ws://{addr}"));
                tokio::spawn(async move { serve(stream, origin, b, s, tx).await });
            }
        });
        FakeAgent {
            addr,
            behaviour,
            conns: tokio::sync::Mutex::new(conn_rx),
            signed_url_requests: signed,
            signed_url_origin: origin,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next conversation ignis opens.
    pub async fn next_conn(&self, within: Duration) -> AgentConn {
        tokio::time::timeout(within, self.conns.lock().await.recv())
            .await
            .expect("no agent connection in time")
            .expect("fake agent gone")
    }

    /// Whether a conversation opens within `within`.
    pub async fn try_next_conn(&self, within: Duration) -> Option<AgentConn> {
        tokio::time::timeout(within, self.conns.lock().await.recv())
            .await
            .ok()
            .flatten()
    }
}

async fn serve(
    mut stream: TcpStream,
    origin: String,
    behaviour: Arc<Mutex<AgentBehaviour>>,
    signed: Arc<Mutex<u32>>,
    conn_tx: mpsc::UnboundedSender<AgentConn>,
) {
    // Peek at the request line to tell the signed-URL GET from the WebSocket upgrade.
    let mut head = [0u8; 4096];
    let n = match stream.peek(&mut head).await {
        Ok(n) => n,
        Err(_) => return,
    };
    let text = String::from_utf8_lossy(&head[..n]).to_string();
    if text.starts_with("GET /v1/convai/conversation/get-signed-url") {
        let mut buf = vec![0u8; 4096];
        let _ = stream.read(&mut buf).await;
        *signed.lock().unwrap() += 1;
        let ok_key = text
            .to_ascii_lowercase()
            .contains(&format!("xi-api-key: {}", API_KEY.to_ascii_lowercase()));
        let ok_agent = text.contains(&format!("agent_id={AGENT_ID}"));
        let resp = if ok_key && ok_agent {
            let body = json!({"signed_url": format!("{origin}/v1/convai/conversation?agent_id={AGENT_ID}&conversation_signature={SIGNATURE}")}).to_string();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        } else {
            let body = r#"{"detail":{"status":"invalid_api_key"}}"#;
            format!(
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let _ = stream.write_all(resp.as_bytes()).await;
        return;
    }
    let target = Arc::new(Mutex::new(String::new()));
    let t2 = target.clone();
    #[allow(clippy::result_large_err)] // tungstenite's callback signature
    let callback = move |req: &Request, resp: Response| {
        *t2.lock().unwrap() = req.uri().to_string();
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let target = target.lock().unwrap().clone();
    // A public agent needs agent_id; a signed URL must carry our signature when a key is in use.
    if !target.contains(&format!("agent_id={AGENT_ID}")) {
        let _ = ws
            .close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: "unknown agent".into(),
            }))
            .await;
        return;
    }
    // §1.7: the client sends conversation_initiation_client_data first.
    let first = match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        _ => return,
    };
    let initiation: Value = serde_json::from_str(&first).unwrap_or(Value::Null);
    if initiation["type"] != "conversation_initiation_client_data" {
        let _ = ws
            .close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: "invalid_message".into(),
            }))
            .await;
        return;
    }
    let b = behaviour.lock().unwrap().clone();
    tokio::time::sleep(b.metadata_delay).await;
    let conv_id = format!("conv_{}", rand_id());
    let meta = json!({"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{
        "conversation_id": conv_id, "agent_output_audio_format": b.output_format, "user_input_audio_format": b.input_format}});
    if ws.send(Message::text(meta.to_string())).await.is_err() {
        return;
    }
    if b.ping_first {
        let _ = ws
            .send(Message::text(
                json!({"type":"ping","ping_event":{"event_id":1,"ping_ms":null}}).to_string(),
            ))
            .await;
    }
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
    let _ = conn_tx.send(AgentConn {
        target,
        initiation,
        rx: in_rx,
        tx: cmd_tx,
    });
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    if b.echo
                        && let Ok(v) = serde_json::from_str::<Value>(t.as_str())
                        && let Some(chunk) = v["user_audio_chunk"].as_str()
                    {
                        let echo = json!({"type":"audio","audio_event":{"audio_base_64": chunk, "event_id": 1}});
                        let _ = ws.send(Message::text(echo.to_string())).await;
                    }
                    // The test may have stopped listening; keep serving anyway.
                    let _ = in_tx.send(t.to_string());
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            c = cmd_rx.recv() => match c {
                Some(Cmd::Send(t)) => { let _ = ws.send(Message::text(t)).await; }
                Some(Cmd::Close(code)) => {
                    let _ = ws.close(Some(CloseFrame { code: CloseCode::from(code), reason: "".into() })).await;
                    // Drain until the client's close reply.
                    while let Some(Ok(m)) = ws.next().await { if m.is_close() { break; } }
                    return;
                }
                Some(Cmd::Drop) => return,
                None => {}
            }
        }
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}
