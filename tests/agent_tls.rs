//! The agent over real TLS, as in production (ElevenLabs is `https`/`wss` only): the signed-URL
//! GET over HTTPS and the conversation over `wss://`, both through rustls, against a stand-in
//! behind a TLS front with a throwaway certificate that ignis trusts via `EXTRA_CA_FILE`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::fake_agent::{API_KEY, AgentBehaviour};
use common::fake_twilio::TwilioCall;
use common::scratch::TempDir;
use common::*;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A throwaway certificate for 127.0.0.1, made with the openssl CLI, in a directory removed when
/// the returned guard drops (hold it for the whole test: ignis reads `EXTRA_CA_FILE`).
fn throwaway_cert(name: &str) -> (TempDir, PathBuf, PathBuf) {
    let dir = TempDir::new(&format!("tls-{name}"));
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    // A leaf (CA:FALSE) that is its own trust anchor: webpki refuses a CA used as end entity.
    self_signed(
        &dir,
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = leaf\n[dn]\nCN = 127.0.0.1\n\
         [leaf]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n",
        &cert,
        &key,
    );
    (dir, cert, key)
}

/// Terminates TLS on a loopback port and pipes each connection to `backend`.
async fn tls_front(
    cert: &PathBuf,
    key: &PathBuf,
    backend: std::net::SocketAddr,
) -> std::net::SocketAddr {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn signed_url_and_conversation_over_tls() {
    let (_dir, cert, key) = throwaway_cert("agent");
    // Start the stand-in, then put the TLS front before it and point everything at the front.
    let server = Server::start_full(
        test_config(&[
            ("ELEVENLABS_API_KEY", API_KEY),
            ("EXTRA_CA_FILE", cert.to_str().unwrap()),
        ]),
        AgentBehaviour::default(),
    )
    .await;
    let front = tls_front(&cert, &key, server.agent.addr).await;
    *server.agent.signed_url_origin.lock().unwrap() =
        Some(format!("wss://127.0.0.1:{}", front.port()));
    // The stand-in's base was filled in as http://…; the real service is https.
    let mut config = (*server.app.config).clone();
    config.elevenlabs_api_base = format!("https://127.0.0.1:{}", front.port());
    let tls_server = Server::start_with_agent(config, server.agent).await;

    let sid = "CA00000000000000000000000000000041";
    let mut caller = TwilioCall::dial(&tls_server, sid).await;
    let agent = tls_server.agent.next_conn(Duration::from_secs(10)).await;
    assert!(
        agent.target.contains("conversation_signature=sig_abc123"),
        "{}",
        agent.target
    );
    assert_eq!(*tls_server.agent.signed_url_requests.lock().unwrap(), 1);
    agent.send_audio(1, &[0x42u8; 1600]);
    assert_eq!(
        caller.audio(1600, Duration::from_secs(10)).await,
        vec![0x42u8; 1600]
    );
    caller.hang_up();
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_and_the_caller_falls_back() {
    let (_dir, cert, key) = throwaway_cert("untrusted");
    let server = Server::start_full(
        test_config(&[("FALLBACK_NUMBER", "+493012345678")]),
        AgentBehaviour::default(),
    )
    .await;
    let front = tls_front(&cert, &key, server.agent.addr).await;
    // No EXTRA_CA_FILE: Mozilla's roots do not include the throwaway certificate.
    let mut config = (*server.app.config).clone();
    config.elevenlabs_api_base = format!("https://127.0.0.1:{}", front.port());
    let tls_server = Server::start_with_agent(config, server.agent).await;
    let sid = "CA00000000000000000000000000000042";
    let mut caller = TwilioCall::dial(&tls_server, sid).await;
    let _ = caller.closed(Duration::from_secs(10)).await;
    assert_eq!(
        tls_server.app.calls.outcome(sid),
        Some(ignis::calls::Outcome::AgentFailed)
    );
}

#[tokio::test]
async fn a_bad_extra_ca_file_stops_the_server() {
    let dir = TempDir::new("tls-bad");
    let bad = dir.join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let mut config = test_config(&[]);
    config.extra_ca_file = Some(bad);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Arc::new(ignis::routes::App::new(config));
    let r = ignis::driver::serve(listener, app, std::future::pending()).await;
    assert!(
        r.is_err(),
        "serve must refuse to start with an unusable CA file"
    );
}
