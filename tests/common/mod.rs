//! Shared helpers: start the real server on 127.0.0.1:0, speak raw HTTP bytes, sign requests the
//! way Twilio does, and open a Media Streams WebSocket as Twilio would.
#![allow(dead_code)]

pub mod fake_agent;
pub mod fake_twilio;
pub mod nginx;
pub mod postgres;
pub mod replicas;
pub mod scratch;
pub mod signal;
pub mod tls_caller;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ignis::config::Config;
use ignis::routes::App;
use ignis::twilio::signature;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

pub const PUBLIC: &str = "https://ignis.example.com";
pub const TOKEN: &str = "ignis-test-token";

/// A running server, with a stand-in ElevenLabs service behind it.
pub struct Server {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub agent: fake_agent::FakeAgent,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Server {
        let mut config = test_config(&[]);
        tweak(&mut config);
        Server::start_config(config).await
    }

    pub async fn start_config(config: Config) -> Server {
        Server::start_full(config, fake_agent::AgentBehaviour::default()).await
    }

    /// Starts the server; unless the config names an agent already, it uses the stand-in.
    pub async fn start_full(config: Config, behaviour: fake_agent::AgentBehaviour) -> Server {
        Server::start_with_practice(config, behaviour, None).await
    }

    /// A server whose PUBLIC_URL is its own loopback address (`http://127.0.0.1:port`), so a
    /// client that signs the URL it dials (the simulated caller) is accepted.
    pub async fn start_public_loopback(behaviour: fake_agent::AgentBehaviour) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let public = format!("http://{}", listener.local_addr().unwrap());
        let config = test_config(&[("PUBLIC_URL", &public)]);
        Server::start_inner(Some(listener), config, behaviour, None).await
    }

    /// A second server in front of an existing stand-in agent (e.g. behind a TLS front).
    pub async fn start_with_agent(config: Config, agent: fake_agent::FakeAgent) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Server::spawn(listener, App::new(config), agent)
    }

    /// Like [`Server::start_full`], with the practice tools attached.
    pub async fn start_with_practice(
        config: Config,
        behaviour: fake_agent::AgentBehaviour,
        practice: Option<ignis::practice::Practice>,
    ) -> Server {
        Server::start_inner(None, config, behaviour, practice).await
    }

    /// A server with the demo practice's tools on the SQLite file `db` (created if new), whose
    /// tools secret is `tools_token`.
    pub async fn start_with_practice_db(
        db: &std::path::Path,
        tools_token: &str,
        extra: &[(&str, &str)],
    ) -> Server {
        let practice = open_practice_db(db, tools_token);
        let config = test_config(extra);
        Server::start_with_practice(config, Default::default(), Some(practice)).await
    }

    /// Like [`Server::start_with_practice_db`], with PUBLIC_URL its own loopback address
    /// (`http://127.0.0.1:port`), as a browser on this machine reaches it (`ignis demo` too).
    pub async fn start_public_loopback_with_practice_db(
        db: &std::path::Path,
        tools_token: &str,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let public = format!("http://{}", listener.local_addr().unwrap());
        let config = test_config(&[("PUBLIC_URL", &public)]);
        let practice = open_practice_db(db, tools_token);
        Server::start_inner(Some(listener), config, Default::default(), Some(practice)).await
    }

    async fn start_inner(
        listener: Option<tokio::net::TcpListener>,
        mut config: Config,
        behaviour: fake_agent::AgentBehaviour,
        practice: Option<ignis::practice::Practice>,
    ) -> Server {
        let agent = fake_agent::FakeAgent::start(behaviour).await;
        if config.elevenlabs_agent_id.is_none() {
            config.elevenlabs_agent_id = Some(fake_agent::AGENT_ID.into());
            config.elevenlabs_api_base = agent.base();
        }
        let listener = match listener {
            Some(l) => l,
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let app = match practice {
            Some(p) => App::with_practice(config, p),
            None => App::new(config),
        };
        Server::spawn(listener, app, agent)
    }

    /// Serves `app` on `listener` until [`Server::shutdown`].
    pub fn spawn(
        listener: tokio::net::TcpListener,
        app: App,
        agent: fake_agent::FakeAgent,
    ) -> Server {
        let addr = listener.local_addr().unwrap();
        let app = Arc::new(app);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(ignis::driver::serve(listener, app.clone(), async {
            let _ = rx.await;
        }));
        Server {
            addr,
            app,
            agent,
            shutdown: Some(tx),
            task,
        }
    }

    /// Sends the shutdown signal.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }
}

pub fn test_config(extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("PUBLIC_URL".into(), PUBLIC.into());
    vars.insert("TWILIO_AUTH_TOKEN".into(), TOKEN.into());
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    let mut c = Config::from_vars(&vars, false).unwrap();
    c.request_timeout = Duration::from_millis(500);
    c.idle_timeout = Duration::from_millis(800);
    c.drain = Duration::from_secs(5);
    c
}

/// Runs the real `ignis ARGS…` against the practice database `db` (tools secret
/// `tools_token`) in `dir`, writing `stdin` (e.g. `ignis staff add`'s password) and returning
/// what it printed and its exit status.
pub fn ignis_on_db(
    dir: &std::path::Path,
    db: &std::path::Path,
    tools_token: &str,
    args: &[&str],
    stdin: &str,
) -> std::process::Output {
    let db = db.to_string_lossy();
    ignis_with_env(
        dir,
        &[("IGNIS_DB", &db), ("TOOLS_TOKEN", tools_token)],
        args,
        stdin,
    )
}

/// Runs the real `ignis ARGS…` in `dir` with only the variables `env`, writing `stdin` and
/// returning what it printed and its exit status.
pub fn ignis_with_env(
    dir: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
    stdin: &str,
) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ignis"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // A command that refuses its arguments (a bad name) exits before reading the password:
    // the write then meets a closed pipe, which is that refusal, not a test failure.
    if let Err(e) = input.write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// The demo practice on the SQLite file `db` (created if new), tools secret `tools_token`.
pub fn open_practice_db(db: &std::path::Path, tools_token: &str) -> ignis::practice::Practice {
    let db_text = db.to_string_lossy().into_owned();
    let settings = ignis::practice::PracticeSettings::from_lookup(|k| match k {
        "TOOLS_TOKEN" => Some(tools_token.into()),
        "IGNIS_DB" => Some(db_text.clone()),
        _ => None,
    })
    .unwrap();
    let (practice, _thread) = ignis::practice::Practice::open(
        &settings,
        ignis::practice::config::PracticeConfig::demo(),
        jiff::Timestamp::now(),
    )
    .unwrap();
    practice
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response from any stream, leaving later bytes in `buf`. `head_only`: HEAD request
/// (1xx, 204 and 304 never have a body either). Bodies are framed by `Content-Length`; a response without
/// one (an nginx error page on a closing connection) is read to EOF.
pub async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    head_only: bool,
) -> Resp {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = r.parse(buf).unwrap() {
                let status = r.code.unwrap();
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len: Option<usize> = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse().unwrap());
                let no_body = head_only || status == 204 || status == 304 || status < 200;
                let body_len = match (no_body, len) {
                    (true, _) => 0,
                    (false, Some(len)) => len,
                    (false, None) => {
                        // Read to EOF (or a TLS close without close_notify).
                        let mut rest = Vec::new();
                        let _ = stream.read_to_end(&mut rest).await;
                        buf.extend(rest);
                        buf.len() - n
                    }
                };
                while buf.len() < n + body_len {
                    let mut chunk = [0u8; 4096];
                    let k = stream.read(&mut chunk).await.unwrap();
                    assert!(k > 0, "eof inside body");
                    buf.extend_from_slice(&chunk[..k]);
                }
                let body = buf[n..n + body_len].to_vec();
                buf.drain(..n + body_len);
                return Resp {
                    status,
                    headers,
                    body,
                };
            }
            let mut chunk = [0u8; 4096];
            let k = stream.read(&mut chunk).await.unwrap();
            assert!(
                k > 0,
                "eof before response head: {:?}",
                String::from_utf8_lossy(buf)
            );
            buf.extend_from_slice(&chunk[..k]);
        }
    })
    .await
    .expect("response timed out")
}

/// Writes `raw` on a new connection and reads one response.
pub async fn roundtrip(server: &Server, raw: &[u8]) -> Resp {
    let mut s = server.connect().await;
    s.write_all(raw).await.unwrap();
    let mut buf = Vec::new();
    read_response(&mut s, &mut buf, raw.starts_with(b"HEAD ")).await
}

/// Whether the server closes `stream` (EOF or reset) within `within`.
pub async fn closes_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 1024];
    let res = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    res.is_ok()
}

pub fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn urlencode(pairs: &[(String, String)]) -> String {
    use ignis::http::form::encode;
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A form POST to `path` signed with `token` over the public URL, as Twilio sends it.
pub fn signed_post(path: &str, params: &[(String, String)], token: &str) -> Vec<u8> {
    let sig = signature::sign(token, &format!("{PUBLIC}{path}"), params);
    let body = urlencode(params);
    format!(
        "POST {path} HTTP/1.1\r\nHost: ignis.example.com\r\nUser-Agent: TwilioProxy/1.1\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {sig}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A signed webhook about `call_sid` (its standard parameters) to `path`, answered.
pub async fn call_webhook(server: &Server, path: &str, call_sid: &str) -> Resp {
    roundtrip(server, &signed_post(path, &call_params(call_sid), TOKEN)).await
}

pub fn call_params(call_sid: &str) -> Vec<(String, String)> {
    fields(&[
        ("AccountSid", "AC11111111111111111111111111111111"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("From", "+4915112345123"),
        ("To", "+16175551881"),
        ("Direction", "inbound"),
    ])
}

/// Encodes a masked client text frame (RFC 6455 §5.2).
pub fn client_text_frame(text: &str) -> Vec<u8> {
    client_frame(0x1, text.as_bytes())
}

pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The signed Media Streams upgrade request Twilio sends (docs/twilio.md §1.1).
pub fn stream_handshake(path: &str, signature: Option<&str>, extra: &str) -> String {
    let sig = signature.map_or(String::new(), |s| format!("X-Twilio-Signature: {s}\r\n"));
    format!(
        "GET {path} HTTP/1.1\r\nHost: ignis.example.com\r\nUser-Agent: Twilio.TmeWs/1.0\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{sig}{extra}Accept-Encoding: gzip\r\n\r\n"
    )
}

pub fn stream_signature(path: &str) -> String {
    signature::sign(TOKEN, &format!("wss://ignis.example.com{path}"), &[])
}

pub fn start_message(call_sid: &str) -> String {
    format!(
        r#"{{"event":"start","sequenceNumber":"1","streamSid":"MZ{call_sid}","start":{{"accountSid":"AC11111111111111111111111111111111","streamSid":"MZ{call_sid}","callSid":"{call_sid}","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"customParameters":{{"caller":"+4915112345123"}}}}}}"#
    )
}

pub fn media_message(chunk: u64) -> String {
    format!(
        r#"{{"event":"media","sequenceNumber":"{}","streamSid":"MZ","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{}","payload":"{}"}}}}"#,
        chunk + 1,
        chunk * 20,
        "/".repeat(212) + "/w=="
    )
}

pub const CONNECTED: &str = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;

/// The path of the stream URL a TwiML names (`/api/twilio/stream/<nonce>`).
pub fn stream_path_of(twiml: &str) -> String {
    let url = twiml
        .split("<Stream url=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no <Stream> in {twiml}"));
    let after_scheme = url.split("://").nth(1).expect("absolute stream URL");
    let path = &after_scheme[after_scheme.find('/').expect("stream URL path")..];
    assert!(path.starts_with("/api/twilio/stream/"), "{url}");
    path.to_owned()
}

/// What Twilio does before it opens a stream: the signed voice webhook for `call_sid`. Returns
/// the stream path its TwiML names. For a call already answered whose stream has not come, the
/// webhook answers the same TwiML again (without a second pre-connect).
pub async fn answer_call(server: &Server, call_sid: &str) -> String {
    let r = roundtrip(
        server,
        &signed_post("/api/twilio/voice", &call_params(call_sid), TOKEN),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    stream_path_of(&r.text())
}

/// A stream path bound to `call_sid` as the voice webhook binds it, but without its pre-connect
/// (as when the pre-connect table is full), so the stream connects the agent itself.
pub fn bind_without_preconnect(server: &Server, call_sid: &str) -> String {
    use ignis::calls::{Bound, NONCE_BYTES, Nonce};
    use ignis::twilio::webhook::incoming_call;
    let call = incoming_call(&call_params(call_sid)).expect("valid test call");
    let mut entropy = [0u8; NONCE_BYTES];
    entropy[..call_sid.len().min(NONCE_BYTES)]
        .copy_from_slice(&call_sid.as_bytes()[call_sid.len().saturating_sub(NONCE_BYTES)..]);
    let nonce = Nonce::from_entropy(entropy);
    let bound = server
        .app
        .calls
        .bind(&call, nonce, usize::MAX, std::time::Instant::now());
    assert_eq!(bound, Bound::New(nonce));
    format!("/api/twilio/stream/{}", nonce.to_hex())
}

/// Opens a signed stream socket after the call's voice webhook, sending `connected` + `start`
/// in the same segment as the head. Returns the WebSocket after the 101.
pub async fn open_stream(server: &Server, call_sid: &str) -> WebSocketStream<TcpStream> {
    open_stream_with(server, call_sid, &start_message(call_sid)).await
}

/// [`open_stream`] with the given `start` message.
pub async fn open_stream_with(
    server: &Server,
    call_sid: &str,
    start: &str,
) -> WebSocketStream<TcpStream> {
    let path = answer_call(server, call_sid).await;
    open_stream_at(server, &path, start).await
}

/// Opens the signed stream at `path` (a nonce path from a voice webhook) with `start`.
pub async fn open_stream_at(
    server: &Server,
    path: &str,
    start: &str,
) -> WebSocketStream<TcpStream> {
    let head = stream_handshake(path, Some(&stream_signature(path)), "");
    upgrade(server.connect().await, head.into_bytes(), start).await
}

/// Writes the upgrade request `head` with `connected` + `start` right behind it, as Twilio
/// does, over any transport; returns the WebSocket after the 101.
pub async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    mut head: Vec<u8>,
    start: &str,
) -> WebSocketStream<S> {
    head.extend(client_text_frame(CONNECTED));
    head.extend(client_text_frame(start));
    s.write_all(&head).await.unwrap();
    let mut buf = Vec::new();
    let resp = read_response(&mut s, &mut buf, true).await;
    assert_eq!(resp.status, 101, "{}", resp.text());
    WebSocketStream::from_partially_read(s, buf, Role::Client, None).await
}

/// Polls `cond` until true or panics after 5 s.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Ports [`free_port`] hands out: below Linux's ephemeral range (32768–60999 by default).
const FIXED_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A TCP port free on 127.0.0.1 right now, for servers started by port number (nginx,
/// PostgreSQL, a second ignis). It is taken from below the ephemeral range: a port from
/// `bind(0)` is released before the server binds it, and meanwhile another test's `bind(0)` or
/// outgoing connection could be given the same port, after which the server fails to bind and
/// its readiness probe connects to the other listener (seen once: a TLS handshake to "nginx"
/// answered by a plain ignis). Within this process a counter keeps picks apart; between
/// processes, a start derived from the pid; and a bind check skips ports in use.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(FIXED_PORTS.end - FIXED_PORTS.start);
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = FIXED_PORTS.start + offset as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIXED_PORTS:?}");
}

/// Runs the openssl CLI (test certificates); panics with how to install it, or with its stderr.
pub fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): run `.ci/test`, or `apt-get install -y openssl`")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed P-256 certificate (`cert`) and its key (`key`), made by the openssl CLI from the
/// request `config` (written into `dir`).
pub fn self_signed(
    dir: &std::path::Path,
    config: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
) {
    let cnf = dir.join("cert.cnf");
    std::fs::write(&cnf, config).unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-config",
        &s(&cnf),
        "-keyout",
        &s(key),
        "-out",
        &s(cert),
    ]);
}

/// The next message on `rx`, or `None` when it closed or nothing came `within`.
pub async fn recv_within<T>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    within: Duration,
) -> Option<T> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}
