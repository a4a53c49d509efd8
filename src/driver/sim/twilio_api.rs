//! Twilio's REST and Monitor APIs on one loopback port (the rules are in
//! [`crate::sim::twilio_api`]): tests point `TWILIO_API_BASE` and `TWILIO_MONITOR_API_BASE` at
//! [`TwilioApiServer::base`], seed the account through [`TwilioApiServer::state`] and read the
//! writes it received. One request per connection (`Connection: close`), as ignis's client sends.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::http::Response;
use crate::http::body::MAX_BODY_BYTES;
use crate::http::request_head::MAX_HEAD_BYTES;
use crate::sim::twilio_api::{TwilioApi, read_request};

/// Time a client has to send its whole request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A running stand-in.
pub struct TwilioApiServer {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<TwilioApi>>,
}

impl TwilioApiServer {
    /// Serves `api` on a loopback port until the runtime ends.
    pub async fn start(mut api: TwilioApi) -> std::io::Result<TwilioApiServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        api.base = format!("http://{addr}");
        let state = Arc::new(Mutex::new(api));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, serve(stream, &state)).await;
                });
            }
        });
        Ok(TwilioApiServer { addr, state })
    }

    /// Its `http://127.0.0.1:port` origin, for both `TWILIO_API_BASE` and
    /// `TWILIO_MONITOR_API_BASE`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The account: seed numbers, calls and alerts, read the writes.
    pub fn state(&self) -> MutexGuard<'_, TwilioApi> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Reads one request, answers it, closes.
async fn serve(mut stream: TcpStream, state: &Mutex<TwilioApi>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let resp = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        match read_request(&buf) {
            Ok(Some((head, body))) => {
                let mut api = state.lock().unwrap_or_else(|p| p.into_inner());
                break api.handle(&head, &body, unix_now());
            }
            Ok(None) if n == 0 => return Ok(()),
            Ok(None) if buf.len() > MAX_HEAD_BYTES + MAX_BODY_BYTES => break Response::new(413),
            Ok(None) => {}
            Err(status) => break Response::new(status),
        }
    };
    let mut out = Vec::new();
    let date = crate::http::date::imf_fixdate(unix_now());
    resp.encode_into(&mut out, &date, false, true);
    stream.write_all(&out).await?;
    stream.shutdown().await
}
