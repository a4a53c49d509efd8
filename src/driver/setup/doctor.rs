//! `ignis doctor`: resolves, connects, sends the probes [`crate::setup::doctor`] builds and hands
//! back what came, in the order a call travels; the core judges each observation, decides what
//! an earlier failure skips and renders the lines, printed here as each check completes.
//! docs/doctor.md describes the checks.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::super::caller::{self, CallerOptions, SpeakAt};
use super::super::net;
use super::super::startup::{StartError, runtime};
use crate::cli::DoctorArgs;
use crate::config::Config;
use crate::http::client;
use crate::http::url::Endpoint;
use crate::routes::{STREAM_PATH, VOICE_PATH};
use crate::setup::Check;
use crate::setup::doctor::{self as core, CertProblem, Reply, Report, TlsObservation};

/// Limit of each probe: connect, TLS, request and answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// `--call`: an agent that has not greeted by then is spoken to anyway.
const CALL_SPEAK_BY: Duration = Duration::from_secs(4);
/// `--call`: quiet time after the caller's speech, for the agent's answer.
const CALL_TAIL: Duration = Duration::from_secs(5);
/// `--call`: the longest simulated call.
const CALL_MAX: Duration = Duration::from_secs(60);

/// `ignis doctor [--json] [--call]`: exit 0 when no check failed, 1 when one did, 2 for a bad
/// configuration.
pub fn run(args: &DoctorArgs) -> Result<(), StartError> {
    let (config, tls) = match super::load() {
        Ok(loaded) => loaded,
        Err(e) => {
            // A monitor reading `--json` gets a line it can parse for this too (exit 2 stays).
            if args.json {
                let fix = "set the variables named in .env (README, Configuration)";
                println!(
                    "{}",
                    core::json_line(&Check::fail("config", e.to_string(), fix))
                );
            }
            return Err(e);
        }
    };
    let roots = net::root_store(config.extra_ca_file.as_deref()).map_err(super::bad_extra_ca)?;
    let json = args.json;
    let emit = move |c: &Check| {
        if json {
            println!("{}", core::json_line(c));
        } else {
            println!("{c}");
        }
    };
    let mut session = Session {
        report: Report::new(),
        emit: &emit,
    };
    runtime()?.block_on(diagnose(&mut session, &config, &tls, roots, args.call));
    if !json {
        println!("{}", session.report.summary());
    }
    match session.report.failures() {
        0 => Ok(()),
        1 => Err(StartError::Failed("1 check failed".into())),
        n => Err(StartError::Failed(format!("{n} checks failed"))),
    }
}

/// The report, and where each line goes as it is recorded.
struct Session<'a> {
    report: Report,
    emit: &'a dyn Fn(&Check),
}

impl Session<'_> {
    fn put(&mut self, check: Check) {
        (self.emit)(&check);
        self.report.record(check);
    }

    /// Records `check` as a failure that skips nothing after it (or a pass).
    fn put_warning(&mut self, check: Check) {
        (self.emit)(&check);
        self.report.record_warning(check);
    }

    /// Whether `id` runs; if a hop it needs failed, its skip is recorded instead.
    fn runs(&mut self, id: &'static str) -> bool {
        match self.report.gate(id) {
            Some(skip) => {
                self.put(skip);
                false
            }
            None => true,
        }
    }
}

async fn diagnose(
    s: &mut Session<'_>,
    config: &Config,
    tls: &Arc<ClientConfig>,
    roots: RootCertStore,
    call: bool,
) {
    let now = SystemTime::now();
    let public = core::public_endpoint(config);
    let token = config.twilio_auth_token.expose();
    s.put(core::evaluate_config(config));

    let addrs = resolve(&public).await;
    let lookup = addrs.as_deref().map_err(String::as_str);
    s.put(core::evaluate_dns(&public.host, lookup));
    let from_loopback = addrs
        .as_ref()
        .is_ok_and(|a| !a.is_empty() && a.iter().all(IpAddr::is_loopback));

    if s.runs("tls") {
        let obs = if public.tls {
            observe_tls(&public, roots, now).await
        } else {
            TlsObservation::NotTls
        };
        let check = core::evaluate_tls(&public.host, &obs, unix(now));
        if core::tls_usable(&obs) {
            s.put_warning(check);
        } else {
            s.put(check);
        }
    }
    if s.runs("health") {
        let reply = probe(&public, tls, get(&public, crate::routes::HEALTH_PATH)).await;
        s.put(core::evaluate_health(&reply));
    }

    let unique = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let account = config.twilio_account_sid.as_deref();
    let number = config.twilio_phone_number.as_deref();
    let ids = core::probe_ids(&core::probe_call_sid(unique), account, number);
    webhook_and_stream(s, &public, tls, &ids, token).await;

    if s.runs("metrics_exposure") {
        let reply = probe(&public, tls, get(&public, crate::routes::METRICS_PATH)).await;
        s.put(core::evaluate_metrics(&reply, from_loopback));
    }
    for check in super::twilio::doctor_checks(config, tls, now).await {
        s.put(check);
    }
    for check in super::agent::doctor_checks(config, tls).await {
        s.put(check);
    }
    if s.runs("tools_endpoint") {
        let reply = probe(&public, tls, core::tool_probe_request(&public, None)).await;
        let with_token = match &config.practice.tools_token {
            Some(t) => {
                let request = core::tool_probe_request(&public, Some(t.expose()));
                Some(probe(&public, tls, request).await)
            }
            None => None,
        };
        s.put(core::evaluate_tools(&reply, with_token.as_ref()));
    }

    if !call {
        s.put(core::evaluate_call(false, Err("")));
    } else if s.runs("call") {
        let ids = core::probe_ids(&core::probe_call_sid(unique + 1), account, number);
        let result = simulated_call(config, tls, ids).await;
        s.put(core::evaluate_call(
            true,
            result.as_ref().map_err(String::as_str),
        ));
    }
}

/// The signed and the unsigned voice webhook, then the stream upgrade the TwiML names; then the
/// probe call is ended with its status callback, so ignis lets its pre-connected agent go at
/// once (docs/doctor.md §stream_upgrade).
async fn webhook_and_stream(
    s: &mut Session<'_>,
    public: &Endpoint,
    tls: &Arc<ClientConfig>,
    ids: &crate::sim::twilio::CallIds,
    token: &str,
) {
    let mut stream_url = None;
    let mut bound = false;
    if s.runs("voice_webhook") {
        let req = core::voice_webhook_request(public, ids, Some(token));
        let reply = probe(public, tls, req).await;
        bound = matches!(reply, Reply::Answer { status: 200, .. });
        let (check, url) = core::evaluate_voice_webhook(public, &reply);
        stream_url = url;
        s.put(check);
    }
    if s.runs("webhook_signature_check") {
        let req = core::voice_webhook_request(public, ids, None);
        s.put(core::evaluate_unsigned_webhook(
            &probe(public, tls, req).await,
        ));
    }
    if s.runs("stream_upgrade") {
        let reply = match stream_url
            .as_deref()
            .and_then(|u| core::stream_handshake(u, token))
        {
            Some((ep, head)) => {
                let answer = net::request(
                    &ep,
                    tls,
                    &head,
                    PROBE_TIMEOUT,
                    core::MAX_REPLY_BYTES,
                    core::parse_upgrade_answer,
                )
                .await;
                // The socket is closed here: the request future owned it.
                answer.unwrap_or_else(|e| Reply::Unreachable(e.to_string()))
            }
            None => Reply::Unreachable("the TwiML named no usable stream URL".into()),
        };
        s.put(core::evaluate_upgrade(&reply));
    }
    if bound {
        let req = core::status_callback_request(public, ids, token);
        let _ = probe(public, tls, req).await;
    }
}

/// The public host's addresses (deduplicated, in the resolver's order).
async fn resolve(public: &Endpoint) -> Result<Vec<IpAddr>, String> {
    let lookup = tokio::net::lookup_host((public.host.as_str(), public.port));
    match tokio::time::timeout(PROBE_TIMEOUT, lookup).await {
        Err(_) => Err("lookup timed out".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(addrs)) => {
            let mut out: Vec<IpAddr> = Vec::new();
            for a in addrs {
                if !out.contains(&a.ip()) {
                    out.push(a.ip());
                }
            }
            Ok(out)
        }
    }
}

/// Seconds since the Unix epoch.
fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A `GET` of `target` on the public endpoint.
fn get(public: &Endpoint, target: &str) -> Vec<u8> {
    client::encode_request("GET", &core::at(public, target), &[], None).unwrap_or_default()
}

/// Sends `request` on a new connection and reads the whole answer.
async fn probe(ep: &Endpoint, tls: &Arc<ClientConfig>, request: Vec<u8>) -> Reply {
    match net::exchange(ep, tls, &request, PROBE_TIMEOUT, core::MAX_REPLY_BYTES).await {
        Ok(r) => Reply::answer(r.status, &r.body),
        Err(e) => Reply::Unreachable(e.to_string()),
    }
}

/// Verifies like [`WebPkiServerVerifier`] and keeps the chain the server presented, so it can
/// be verified again at another time (docs/doctor.md §tls).
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    chain: Mutex<Option<(CertificateDer<'static>, Vec<CertificateDer<'static>>)>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut chain) = self.chain.lock() {
            let rest = intermediates
                .iter()
                .map(|c| c.clone().into_owned())
                .collect();
            *chain = Some((end_entity.clone().into_owned(), rest));
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Handshakes with the public endpoint, keeping the chain, then verifies it now and
/// [`core::MIN_CERT_DAYS`] from now against the same roots as every outbound connection.
async fn observe_tls(public: &Endpoint, roots: RootCertStore, now: SystemTime) -> TlsObservation {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = match WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    {
        Ok(v) => v,
        Err(e) => return TlsObservation::NoChain(e.to_string()),
    };
    let recorder = Arc::new(Recorder {
        inner: verifier.clone(),
        chain: Mutex::new(None),
    });
    let config =
        match ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
            Ok(b) => b
                .dangerous()
                .with_custom_certificate_verifier(recorder.clone())
                .with_no_client_auth(),
            Err(e) => return TlsObservation::NoChain(e.to_string()),
        };
    let Ok(name) = ServerName::try_from(public.host.clone()) else {
        return TlsObservation::NoChain(format!("{} is no valid TLS server name", public.host));
    };
    let handshake = async {
        let tcp = TcpStream::connect((public.host.as_str(), public.port)).await?;
        TlsConnector::from(Arc::new(config))
            .connect(name.clone(), tcp)
            .await
    };
    let outcome = tokio::time::timeout(PROBE_TIMEOUT, handshake).await;
    let chain = recorder.chain.lock().ok().and_then(|mut c| c.take());
    let Some((leaf, intermediates)) = chain else {
        return TlsObservation::NoChain(match outcome {
            Err(_) => "timed out".into(),
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(_)) => "no certificate".into(),
        });
    };
    let verify_at = |t: SystemTime| {
        let at = UnixTime::since_unix_epoch(t.duration_since(UNIX_EPOCH).unwrap_or_default());
        verifier
            .verify_server_cert(&leaf, &intermediates, &name, &[], at)
            .map(|_| ())
            .map_err(cert_problem)
    };
    let later = now + Duration::from_secs(core::MIN_CERT_DAYS * 86_400);
    TlsObservation::Chain {
        now: verify_at(now),
        later: verify_at(later),
        not_after: core::cert_not_after(&leaf),
    }
}

/// rustls's verdict as the doctor's cause.
fn cert_problem(e: rustls::Error) -> CertProblem {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                CertProblem::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                CertProblem::NotYetValid
            }
            CertificateError::UnknownIssuer => CertProblem::UnknownIssuer,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                CertProblem::NameMismatch
            }
            other => CertProblem::Other(format!("{other:?}")),
        },
        other => CertProblem::Other(other.to_string()),
    }
}

/// `--call`: one whole simulated call through the public URL (`ignis simulate`'s caller),
/// measured.
async fn simulated_call(
    config: &Config,
    tls: &Arc<ClientConfig>,
    ids: crate::sim::twilio::CallIds,
) -> Result<core::CallObservation, String> {
    let speech = super::super::demo::caller_speech(None)?;
    let opts = CallerOptions {
        stream_url: config.public_url.ws_url(STREAM_PATH),
        webhook_url: Some(config.public_url.http_url(VOICE_PATH)),
        auth_token: config.twilio_auth_token.expose().to_owned(),
        call_sid: ids.call_sid.clone(),
        from: ids.from.clone(),
        to: ids.to.clone(),
        speech,
        speak_at: SpeakAt::AfterGreetingOr(CALL_SPEAK_BY),
        tail: CALL_TAIL,
        max_duration: CALL_MAX,
        timeout: PROBE_TIMEOUT,
    };
    let report = caller::run_with(opts, ids, tls)
        .await
        .map_err(|e| e.to_string())?;
    let start = report.started_at;
    let since_start =
        |t: Option<std::time::Instant>| t.zip(start).map(|(t, s)| t.saturating_duration_since(s));
    Ok(core::CallObservation {
        webhook_status: report.webhook_status,
        stream_started: start.is_some(),
        setup_ms: since_start(report.first_audio_at).map(|d| d.as_millis() as u64),
        sent_bytes: report.frames_sent * crate::sim::twilio::FRAME as u64,
        heard_bytes: report.frames_received * crate::sim::twilio::FRAME as u64,
        answered_bytes: core::answered_bytes(
            &report.heard,
            since_start(report.first_speech_sent_at),
        ),
        ended_by: report.ended_by,
    })
}
