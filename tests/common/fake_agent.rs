//! The ElevenLabs service for the tests: the library's conversation service on loopback
//! (`ignis::driver::sim::agent`: the signed-URL endpoint and the conversation socket, checking
//! what ElevenLabs checks). Each accepted conversation is handed to the test as an [`AgentConn`]
//! the test scripts: what to send, when to close.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ignis::driver::sim::agent::{AgentService, AgentServiceOptions, Conversation};
use ignis::sim::agent::{self as rules, ClientMessage};
use serde_json::Value;
use tokio::sync::mpsc;

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
    /// A WebSocket-level ping with this payload.
    WsPing(Vec<u8>),
    /// One text message in this many fragments, a ping between the first two.
    Fragmented(String, usize),
    /// An unsolicited pong and a close with this code, in one TCP write.
    CloseAfterPong(u16),
    /// Stop reading the socket and keep it open (a peer gone without a FIN, or a zero window).
    Stall,
}

/// What the stand-in saw of ignis's WebSocket frames (not its messages).
#[derive(Debug, Default)]
pub struct WireLog {
    /// Payloads of ignis's pongs to WebSocket-level pings, in order.
    pub pongs: Vec<Vec<u8>>,
    /// After the stand-in closed: the code of ignis's close reply (`Some(None)`: a reply without
    /// a code), or `None` when no reply came.
    pub close_reply: Option<Option<u16>>,
}

/// One accepted conversation.
pub struct AgentConn {
    /// The request path and query the client used.
    pub target: String,
    /// The first message (must be conversation_initiation_client_data).
    pub initiation: Value,
    rx: mpsc::UnboundedReceiver<String>,
    tx: mpsc::UnboundedSender<Cmd>,
    /// Frame-level observations, updated as they happen.
    pub wire: Arc<Mutex<WireLog>>,
}

impl AgentConn {
    pub fn send(&self, msg: Value) {
        let _ = self.tx.send(Cmd::Send(msg.to_string()));
    }
    pub fn send_audio(&self, event_id: u64, audio: &[u8]) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(audio);
        let _ = self.tx.send(Cmd::Send(rules::audio_b64(event_id, &b64)));
    }
    pub fn close(&self, code: u16) {
        let _ = self.tx.send(Cmd::Close(code));
    }
    pub fn drop_connection(&self) {
        let _ = self.tx.send(Cmd::Drop);
    }
    pub fn close_after_pong(&self, code: u16) {
        let _ = self.tx.send(Cmd::CloseAfterPong(code));
    }
    /// The stand-in stops reading ignis's messages; the socket stays open.
    pub fn stall(&self) {
        let _ = self.tx.send(Cmd::Stall);
    }
    pub fn ws_ping(&self, payload: &[u8]) {
        let _ = self.tx.send(Cmd::WsPing(payload.to_vec()));
    }
    pub fn send_fragmented(&self, msg: Value, pieces: usize) {
        let _ = self.tx.send(Cmd::Fragmented(msg.to_string(), pieces));
    }
    /// Next message from ignis, or `None` when the socket closed (or after `within`).
    pub async fn recv(&mut self, within: Duration) -> Option<String> {
        super::recv_within(&mut self.rx, within).await
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
    /// The service itself, for its agents/tools/secrets API.
    service: AgentService,
}

impl FakeAgent {
    pub async fn start(behaviour: AgentBehaviour) -> FakeAgent {
        let behaviour = Arc::new(Mutex::new(behaviour));
        let (conn_tx, conn_rx) = mpsc::unbounded_channel();
        let b = behaviour.clone();
        let service = AgentService::start(
            AgentServiceOptions {
                agent_id: AGENT_ID.into(),
                api_key: API_KEY.into(),
                signature: SIGNATURE.into(),
            },
            move |conv| {
                let (b, tx) = (b.clone(), conn_tx.clone());
                async move {
                    if let Ok(conv) = conv {
                        serve(conv, b, tx).await;
                    }
                }
            },
        )
        .await
        .unwrap();
        FakeAgent {
            addr: service.addr,
            behaviour,
            conns: tokio::sync::Mutex::new(conn_rx),
            signed_url_requests: service.signed_url_requests.clone(),
            signed_url_origin: service.signed_url_origin.clone(),
            service,
        }
    }

    /// The agents/tools/secrets API's workspace (seed it, read it; hold the guard briefly).
    pub fn workspace(&self) -> std::sync::MutexGuard<'_, ignis::sim::elevenlabs_api::Workspace> {
        self.service.workspace()
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

/// Plays the agent's part as the behaviour says, then relays between the socket and the test.
async fn serve(
    mut conv: Conversation,
    behaviour: Arc<Mutex<AgentBehaviour>>,
    conn_tx: mpsc::UnboundedSender<AgentConn>,
) {
    let b = behaviour.lock().unwrap().clone();
    tokio::time::sleep(b.metadata_delay).await;
    let conv_id = format!("conv_{}", rand_id());
    if conv
        .send_metadata(&conv_id, &b.output_format, &b.input_format)
        .await
        .is_err()
    {
        return;
    }
    if b.ping_first {
        let _ = conv.send(rules::ping(1)).await;
    }
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
    let wire = Arc::new(Mutex::new(WireLog::default()));
    let _ = conn_tx.send(AgentConn {
        target: conv.target.clone(),
        initiation: conv.initiation.clone(),
        rx: in_rx,
        tx: cmd_tx,
        wire: wire.clone(),
    });
    let mut scripted = true;
    let mut reading = true;
    loop {
        tokio::select! {
            m = conv.recv(), if reading => match m {
                Ok(Some(t)) => {
                    if !conv.pongs.is_empty() {
                        wire.lock().unwrap().pongs.append(&mut conv.pongs);
                    }
                    if b.echo
                        && let Some(ClientMessage::UserAudio(chunk)) = rules::parse_client(t.as_str())
                    {
                        let _ = conv.send(rules::audio_b64(1, &chunk)).await;
                    }
                    // The test may have stopped listening; keep serving anyway.
                    let _ = in_tx.send(t.to_string());
                }
                Ok(None) | Err(_) => return,
            },
            c = cmd_rx.recv(), if scripted => match c {
                Some(Cmd::Send(t)) => { let _ = conv.send(t).await; }
                Some(Cmd::Close(code)) => {
                    let reply = conv.close(code).await;
                    let mut w = wire.lock().unwrap();
                    w.pongs.append(&mut conv.pongs);
                    w.close_reply = reply;
                    return;
                }
                Some(Cmd::CloseAfterPong(code)) => {
                    let reply = conv.close_after_pong(code).await;
                    wire.lock().unwrap().close_reply = reply;
                    return;
                }
                Some(Cmd::WsPing(p)) => { let _ = conv.send_ws_ping(&p).await; }
                Some(Cmd::Fragmented(t, n)) => { let _ = conv.send_fragmented(&t, n).await; }
                Some(Cmd::Drop) => return,
                Some(Cmd::Stall) => reading = false,
                // The test dropped its handle: keep serving the socket.
                None => scripted = false,
            }
        }
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}
