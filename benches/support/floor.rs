//! The floor (issue 16 point 6): the least a Twilio ↔ ElevenLabs bridge can do. It parses every
//! message (`serde_json::Value`) and forwards it at once — no pacing, no marks, no DSP, no
//! bookkeeping: Twilio `media` → `user_audio_chunk`; agent `audio` → Twilio `media`; agent
//! `ping` → `pong`; `interruption` → `clear`. Like the Node example it sends no initiation data
//! (docs/elevenlabs.md §1.7) and opens the agent's socket as the caller's connects; unlike it, it
//! goes straight to the conversation URL (no signed URL: that request is per call, outside the
//! measured window).
//!
//! The load bench runs it as its own process, re-executing itself with `--serve-floor PORT
//! AGENT_WS_URL` under `taskset`, so its CPU is read from `/proc` the way ignis's is. One
//! current-thread runtime: on one core that is the cheapest tokio can be.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// The argument that turns the bench binary into the floor.
pub const SERVE_FLOOR: &str = "--serve-floor";
/// Time a hung-up call has to finish its close handshakes.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

/// Runs the floor when the arguments ask for it (`--serve-floor PORT AGENT_WS_URL`); returns
/// `false` (nothing done) otherwise. Serves until killed.
pub fn serve_if_asked() -> bool {
    let argv: Vec<String> = std::env::args().collect();
    let Some(i) = argv.iter().position(|a| a == SERVE_FLOOR) else {
        return false;
    };
    let (Some(port), Some(url)) = (
        argv.get(i + 1).and_then(|p| p.parse::<u16>().ok()),
        argv.get(i + 2),
    ) else {
        eprintln!("{SERVE_FLOOR} PORT AGENT_WS_URL");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(serve(port, Arc::from(url.as_str()))) {
        eprintln!("floor: {e}");
        std::process::exit(1);
    }
    true
}

async fn serve(port: u16, agent_url: Arc<str>) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        let url = agent_url.clone();
        tokio::spawn(async move {
            if let Err(e) = call(tcp, &url).await {
                eprintln!("floor call: {e}");
            }
        });
    }
}

type Ws = WebSocketStream<TcpStream>;
type Error = Box<dyn std::error::Error + Send + Sync>;

/// One call: the agent's socket opened as the caller's is accepted, then forward until either
/// side ends.
async fn call(tcp: TcpStream, agent_url: &str) -> Result<(), Error> {
    tcp.set_nodelay(true)?;
    let config = ignis::driver::sim::ws_config();
    let mut twilio = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await?;
    let authority = agent_url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or("the agent URL must be ws://host:port/…")?;
    let agent_tcp = TcpStream::connect(authority).await?;
    agent_tcp.set_nodelay(true)?;
    let (mut agent, _) =
        tokio_tungstenite::client_async_with_config(agent_url, agent_tcp, Some(config)).await?;
    let mut stream_sid = String::new();
    let result = forward(&mut twilio, &mut agent, &mut stream_sid).await;
    let _ = tokio::time::timeout(CLOSE_WITHIN, async {
        let _ = agent.close(None).await;
        let _ = twilio.close(None).await;
        while let Some(Ok(_)) = twilio.next().await {}
    })
    .await;
    result
}

async fn forward(twilio: &mut Ws, agent: &mut Ws, stream_sid: &mut String) -> Result<(), Error> {
    loop {
        tokio::select! {
            m = twilio.next() => {
                let Some(text) = text_of(m)? else { return Ok(()) };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                match v["event"].as_str() {
                    Some("start") => {
                        v["start"]["streamSid"].as_str().unwrap_or_default().clone_into(stream_sid)
                    }
                    Some("media") => {
                        if let Some(p) = v["media"]["payload"].as_str() {
                            let m = json!({ "user_audio_chunk": p }).to_string();
                            agent.send(Message::text(m)).await?;
                        }
                    }
                    Some("stop") => return Ok(()),
                    _ => {}
                }
            }
            m = agent.next() => {
                let Some(text) = text_of(m)? else { return Ok(()) };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                let sid = stream_sid.as_str();
                let out = match v["type"].as_str() {
                    Some("audio") => match v["audio_event"]["audio_base_64"].as_str() {
                        Some(p) => json!({"event": "media", "streamSid": sid, "media": {"payload": p}}),
                        None => continue,
                    },
                    Some("ping") => {
                        let id = &v["ping_event"]["event_id"];
                        agent.send(Message::text(json!({"type": "pong", "event_id": id}).to_string())).await?;
                        continue;
                    }
                    Some("interruption") => json!({"event": "clear", "streamSid": sid}),
                    _ => continue,
                };
                twilio.send(Message::text(out.to_string())).await?;
            }
        }
    }
}

/// A text message's text (empty for other frames), `None` once the socket closed.
fn text_of(
    m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Result<Option<tokio_tungstenite::tungstenite::Utf8Bytes>, Error> {
    match m.transpose()? {
        Some(Message::Text(t)) => Ok(Some(t)),
        Some(Message::Close(_)) | None => Ok(None),
        Some(_) => Ok(Some("".into())),
    }
}
