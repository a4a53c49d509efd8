//! The ElevenLabs stand-in (`driver::sim::agent`) with a client that is not ignis, over real
//! loopback sockets: ElevenLabs' own Twilio example asks for its signed URL by the deprecated
//! underscore path (docs/elevenlabs.md §1.3) and never sends initiation data (§1.7, open
//! question). The load bench runs that example against this stand-in (issue 16 point 6).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ignis::driver::sim::agent::{AgentService, AgentServiceOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const WITHIN: Duration = Duration::from_secs(10);

/// What the handler saw of a conversation: its initiation data and its first message.
type Seen = (serde_json::Value, Option<String>);

async fn service() -> (AgentService, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let opts = AgentServiceOptions {
        agent_id: "a1".into(),
        api_key: "key-1".into(),
        signature: "sig".into(),
    };
    let service = AgentService::start(opts, move |conv| {
        let tx = tx.clone();
        async move {
            let Ok(mut conv) = conv else { return };
            let first = conv
                .recv()
                .await
                .ok()
                .flatten()
                .map(|t| t.as_str().to_owned());
            let _ = tx.send((conv.initiation.clone(), first));
        }
    })
    .await
    .unwrap();
    (service, rx)
}

/// `GET path` with the key; the raw answer.
async fn get(service: &AgentService, path: &str, key: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(service.addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nxi-api-key: {key}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WITHIN, s.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    answer
}

/// A client WebSocket to `url` on the service.
async fn open(
    service: &AgentService,
    url: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    let tcp = tokio::net::TcpStream::connect(service.addr).await.unwrap();
    tokio_tungstenite::client_async(url, tcp).await.unwrap()
}

/// The `signed_url` of a 200 answer.
fn signed_url(answer: &str) -> String {
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["signed_url"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_deprecated_signed_url_path_is_served_and_checks_the_key() {
    let (service, _rx) = service().await;
    let old = "/v1/convai/conversation/get_signed_url?agent_id=a1";
    let ok = get(&service, old, "key-1").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_eq!(
        signed_url(&ok),
        format!(
            "ws://{}/v1/convai/conversation?agent_id=a1&conversation_signature=sig",
            service.addr
        )
    );
    let refused = get(&service, old, "wrong").await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let new = get(
        &service,
        "/v1/convai/conversation/get-signed-url?agent_id=a1",
        "key-1",
    )
    .await;
    assert!(new.starts_with("HTTP/1.1 200"), "{new}");
    assert_eq!(*service.signed_url_requests.lock().unwrap(), 3);
}

#[tokio::test]
async fn a_conversation_may_start_without_initiation_data() {
    let (service, mut rx) = service().await;
    let url = signed_url(
        &get(
            &service,
            "/v1/convai/conversation/get_signed_url?agent_id=a1",
            "key-1",
        )
        .await,
    );
    let (mut ws, _) = open(&service, &url).await;
    let chunk = r#"{"user_audio_chunk":"/w=="}"#;
    ws.send(Message::text(chunk)).await.unwrap();
    let (initiation, first) = tokio::time::timeout(WITHIN, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(initiation.is_null(), "{initiation}");
    assert_eq!(first.as_deref(), Some(chunk), "the first message is kept");

    // The initiation data first is consumed as before, and the next message comes next.
    let (mut ws, _) = open(&service, &url).await;
    let init =
        r#"{"type":"conversation_initiation_client_data","dynamic_variables":{"call_sid":"CA1"}}"#;
    ws.send(Message::text(init)).await.unwrap();
    ws.send(Message::text(chunk)).await.unwrap();
    let (initiation, first) = tokio::time::timeout(WITHIN, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(initiation["dynamic_variables"]["call_sid"], "CA1");
    assert_eq!(first.as_deref(), Some(chunk));
}

#[tokio::test]
async fn a_first_message_that_is_not_json_is_refused() {
    let (service, mut rx) = service().await;
    let url = format!("ws://{}/v1/convai/conversation?agent_id=a1", service.addr);
    let (mut ws, _) = open(&service, &url).await;
    ws.send(Message::text("hello")).await.unwrap();
    let closed = tokio::time::timeout(WITHIN, ws.next()).await.unwrap();
    match closed {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.reason.as_str(), "invalid_message"),
        other => panic!("expected a policy close, got {other:?}"),
    }
    assert!(rx.try_recv().is_err(), "no conversation was handed over");
}
