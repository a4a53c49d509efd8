//! Outbound connections: TCP with a deadline, optional TLS (rustls with Mozilla's roots), and a
//! one-shot HTTP/1.1 request for the two HTTPS calls ignis makes (the ElevenLabs signed URL and
//! Twilio's call update). A small client on httparse instead of a full HTTP stack: two requests
//! per call do not justify one.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};

use crate::http::client::{self, ClientResponse, ResponseError};
use crate::http::url::Endpoint;

/// A TCP stream, with or without TLS.
pub(crate) enum NetStream {
    /// Plain TCP (loopback stand-ins in tests, `http://` bases).
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for NetStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NetStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_flush(cx),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A TLS client configuration: Mozilla's roots (compiled in) plus, optionally, the PEM
/// certificates in `extra_ca` (`EXTRA_CA_FILE`: a private CA or a TLS-inspecting proxy).
pub(crate) fn tls_config(extra_ca: Option<&std::path::Path>) -> io::Result<Arc<ClientConfig>> {
    let roots = root_store(extra_ca)?;
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The roots [`tls_config`] trusts: Mozilla's, plus the PEM certificates in `extra_ca` (the
/// doctor verifies certificates against the same set).
pub(crate) fn root_store(extra_ca: Option<&std::path::Path>) -> io::Result<RootCertStore> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(io::Error::other(format!(
                "{}: no certificates",
                path.display()
            )));
        }
    }
    Ok(roots)
}

/// The default configuration (Mozilla's roots only), built once.
pub(crate) fn default_tls() -> io::Result<Arc<ClientConfig>> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(c) = CONFIG.get() {
        return Ok(c.clone());
    }
    let c = tls_config(None)?;
    Ok(CONFIG.get_or_init(|| c).clone())
}

/// Opens TCP (and TLS when the endpoint asks for it), all within `timeout`.
pub(crate) async fn connect(
    ep: &Endpoint,
    tls: &Arc<ClientConfig>,
    timeout: Duration,
) -> io::Result<NetStream> {
    connect_with(ep, tls, timeout, None).await
}

/// [`connect`] with a fixed kernel send buffer of `send_buffer` bytes (`None`: the kernel's
/// autotuning).
pub(crate) async fn connect_with(
    ep: &Endpoint,
    tls: &Arc<ClientConfig>,
    timeout: Duration,
    send_buffer: Option<u32>,
) -> io::Result<NetStream> {
    let fut = async {
        let tcp = tcp_connect(&ep.host, ep.port, send_buffer).await?;
        let _ = tcp.set_nodelay(true);
        if !ep.tls {
            return Ok(NetStream::Plain(tcp));
        }
        let name = ServerName::try_from(ep.host.clone())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "invalid TLS server name"))?;
        let tls = TlsConnector::from(tls.clone()).connect(name, tcp).await?;
        Ok(NetStream::Tls(Box::new(tls)))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
}

/// TCP to the first of `host`'s addresses that answers.
async fn tcp_connect(host: &str, port: u16, send_buffer: Option<u32>) -> io::Result<TcpStream> {
    let Some(bytes) = send_buffer else {
        return TcpStream::connect((host, port)).await;
    };
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_send_buffer_size(bytes)?;
        match socket.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "host has no address")))
}

/// Sends `request` and reads the response until `parse` returns a value (it gets the bytes so
/// far and whether the peer closed), all within `timeout`.
pub(crate) async fn request<T, E>(
    ep: &Endpoint,
    tls: &Arc<ClientConfig>,
    request: &[u8],
    timeout: Duration,
    max_bytes: usize,
    parse: impl FnMut(&[u8], bool) -> Result<Option<T>, E>,
) -> Result<T, RequestError<E>> {
    let fut = async {
        let mut stream = connect(ep, tls, timeout).await.map_err(RequestError::Io)?;
        write_and_read(&mut stream, request, max_bytes, parse).await
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| {
        RequestError::Io(io::Error::new(io::ErrorKind::TimedOut, "request timed out"))
    })?
}

/// Writes `request` on an open stream and reads until `parse` returns a value (it gets the
/// bytes so far and whether the peer closed), at most `max_bytes`. The stream stays open: the
/// agent socket's WebSocket handshake goes on from here. The caller bounds the time.
pub(crate) async fn write_and_read<T, E>(
    stream: &mut NetStream,
    request: &[u8],
    max_bytes: usize,
    mut parse: impl FnMut(&[u8], bool) -> Result<Option<T>, E>,
) -> Result<T, RequestError<E>> {
    stream.write_all(request).await.map_err(RequestError::Io)?;
    stream.flush().await.map_err(RequestError::Io)?;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(RequestError::Io)?;
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > max_bytes {
            return Err(RequestError::TooLarge);
        }
        if let Some(v) = parse(&buf, n == 0).map_err(RequestError::Response)? {
            return Ok(v);
        }
        if n == 0 {
            return Err(RequestError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Sends `request` and reads the whole response (any status), at most `max_bytes`, all within
/// `timeout`: the exchange of the setup commands and the doctor's probes.
pub(crate) async fn exchange(
    ep: &Endpoint,
    tls: &Arc<ClientConfig>,
    request_bytes: &[u8],
    timeout: Duration,
    max_bytes: usize,
) -> Result<ClientResponse, RequestError<ResponseError>> {
    request(ep, tls, request_bytes, timeout, max_bytes, |buf, eof| {
        client::parse_response(buf, eof, max_bytes)
    })
    .await
}

/// Why an outbound request failed.
#[derive(Debug)]
pub(crate) enum RequestError<E> {
    /// Connect, TLS, I/O or timeout.
    Io(io::Error),
    /// The response grew past the caller's limit.
    TooLarge,
    /// The response was refused by the parser.
    Response(E),
}

impl<E: std::fmt::Display> std::fmt::Display for RequestError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Io(e) => write!(f, "{e}"),
            RequestError::TooLarge => f.write_str("response too large"),
            RequestError::Response(e) => write!(f, "{e}"),
        }
    }
}
