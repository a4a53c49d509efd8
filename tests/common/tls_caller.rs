//! Twilio as a client of a TLS endpoint (a reverse proxy in front of ignis): HTTPS requests
//! signed over that endpoint's public URL, and the Media Streams socket over `wss://`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ignis::twilio::signature;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use super::fake_twilio::{TwilioCall, start_json};
use super::{Resp, TOKEN, call_params, read_response, stream_path_of, upgrade, urlencode};

/// A TLS endpoint that trusts exactly one certificate (DER), as Twilio trusts a real one.
#[derive(Clone)]
pub struct TlsCaller {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The public origin, e.g. `https://127.0.0.1:8443`; signatures are computed over it.
    pub public: String,
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl TlsCaller {
    pub fn new(addr: SocketAddr, root_der: Vec<u8>) -> TlsCaller {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(root_der))
            .expect("the test certificate is a valid trust anchor");
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        TlsCaller {
            addr,
            public: format!("https://{addr}"),
            connector: TlsConnector::from(Arc::new(config)),
            server_name: ServerName::IpAddress(addr.ip().into()),
        }
    }

    /// `host:port` as it appears in URLs and the `Host` header.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Opens TCP and completes the TLS handshake (certificate and name verified).
    pub async fn connect(&self) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake failed")
    }

    /// Like [`TlsCaller::roundtrip`], from the loopback address `from` (e.g. 127.0.0.2: any
    /// 127/8 address works on Linux), to test address-based rules.
    pub async fn roundtrip_from(&self, from: std::net::IpAddr, raw: &[u8]) -> Resp {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        let tcp = socket.connect(self.addr).await.unwrap();
        let mut s = tokio::time::timeout(
            Duration::from_secs(10),
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake failed");
        s.write_all(raw).await.unwrap();
        let mut buf = Vec::new();
        read_response(&mut s, &mut buf, false).await
    }

    /// Writes `raw` on a new TLS connection and reads one response.
    pub async fn roundtrip(&self, raw: &[u8]) -> Resp {
        let mut s = self.connect().await;
        s.write_all(raw).await.unwrap();
        let mut buf = Vec::new();
        read_response(&mut s, &mut buf, raw.starts_with(b"HEAD ")).await
    }

    /// A form POST to `path`, signed over `https://<public><path>` as Twilio signs it.
    pub fn signed_post(&self, path: &str, params: &[(String, String)]) -> Vec<u8> {
        let sig = signature::sign(TOKEN, &format!("{}{path}", self.public), params);
        self.post(path, params, Some(&sig))
    }

    /// A form POST with the given signature header (or none).
    pub fn post(&self, path: &str, params: &[(String, String)], sig: Option<&str>) -> Vec<u8> {
        let sig = sig.map_or(String::new(), |s| format!("X-Twilio-Signature: {s}\r\n"));
        let body = urlencode(params);
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: TwilioProxy/1.1\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n{sig}\
             Content-Length: {}\r\n\r\n{body}",
            self.authority(),
            body.len()
        )
        .into_bytes()
    }

    /// A GET of `target` (path and query), signed over `https://<public><target>`: for GET
    /// webhooks Twilio signs the full URL, query string included, and appends no parameters.
    pub fn signed_get(&self, target: &str) -> Vec<u8> {
        let sig = signature::sign(TOKEN, &format!("{}{target}", self.public), &[]);
        format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: TwilioProxy/1.1\r\n\
             X-Twilio-Signature: {sig}\r\n\r\n",
            self.authority()
        )
        .into_bytes()
    }

    /// The signature Twilio puts on the stream handshake: over `wss://<public host><path>`.
    pub fn stream_signature(&self, path: &str) -> String {
        signature::sign(TOKEN, &format!("wss://{}{path}", self.authority()), &[])
    }

    /// The upgrade request Twilio sends (docs/twilio.md §1.1), with `signature` if given.
    pub fn stream_handshake(&self, path: &str, signature: Option<&str>) -> Vec<u8> {
        let sig = signature.map_or(String::new(), |s| format!("X-Twilio-Signature: {s}\r\n"));
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Twilio.TmeWs/1.0\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             {sig}Accept-Encoding: gzip\r\n\r\n",
            self.authority()
        )
        .into_bytes()
    }

    /// The voice webhook over `https://`, then the signed stream its TwiML names over
    /// `wss://`, sending `connected` + `start` right behind the upgrade request as Twilio does;
    /// returns the simulated caller after the 101.
    pub async fn open_stream(&self, call_sid: &str) -> TwilioCall {
        let r = self
            .roundtrip(&self.signed_post("/api/twilio/voice", &call_params(call_sid)))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let path = stream_path_of(&r.text());
        let head = self.stream_handshake(&path, Some(&self.stream_signature(&path)));
        let start = start_json(call_sid).to_string();
        TwilioCall::over(upgrade(self.connect().await, head, &start).await, call_sid)
    }
}
