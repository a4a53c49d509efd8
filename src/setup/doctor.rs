//! `ignis doctor`'s core: the checks in the order a call travels, each judged as a pure function
//! of what the driver observed (a status and body, a resolved address list, a certificate
//! verification result), which checks an earlier failure makes pointless, the requests the
//! probes send, and the report in text or JSON lines. The driver (`driver::setup::doctor`) only
//! resolves, connects, sends and reads. docs/doctor.md describes every check and its fixes.

use serde_json::json;

use super::{Check, Status};
use crate::config::Config;
use crate::http::client::{self, ResponseError};
use crate::http::url::Endpoint;
use crate::sim::twilio::{self as sim, CallIds};

/// The checks, in the order a call travels (docs/doctor.md): the report lists them so.
pub const ORDER: [&str; 15] = [
    "config",
    "dns",
    "tls",
    "health",
    "voice_webhook",
    "webhook_signature_check",
    "stream_upgrade",
    "metrics_exposure",
    "twilio_number",
    "twilio_alerts",
    "agent_signed_url",
    "agent_tools",
    "agent_settings",
    "tools_endpoint",
    "call",
];

/// The hops each check needs: when one of them failed (or was skipped for that reason), the
/// check is skipped with "needs <the hop that failed first>". The Twilio and ElevenLabs checks
/// ask the services, not the deployment, so they need nothing here.
const NEEDS: [(&str, &[&str]); 8] = [
    ("tls", &["dns"]),
    ("health", &["dns", "tls"]),
    ("voice_webhook", &["health"]),
    // A 403 to the unsigned webhook proves the check only once the signed one got through:
    // a proxy refusing everything, or a wrong PUBLIC_URL, would also answer 403.
    ("webhook_signature_check", &["voice_webhook"]),
    ("stream_upgrade", &["voice_webhook"]),
    ("metrics_exposure", &["health"]),
    ("tools_endpoint", &["health"]),
    ("call", &["stream_upgrade"]),
];

/// A certificate must stay valid at least this long (Let's Encrypt renews 30 days ahead, so a
/// certificate this close to its end means renewal is broken).
pub const MIN_CERT_DAYS: u64 = 14;
/// Most bytes read of any probe's answer (TwiML is at most 64 KiB, /metrics a few KiB).
pub const MAX_REPLY_BYTES: usize = 256 * 1024;
/// The caller number the probes use: the "valid From" magic number of Twilio's test
/// credentials (docs/doctor.md, "What the doctor sends"), clearly no patient.
pub const PROBE_FROM: &str = "+15005550006";
/// The tool the probe asks without a token (any tool path answers 401 the same way).
pub const TOOL_PROBE_PATH: &str = "/api/patients/identify";

/// The report so far, and which hops failed.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// The checks recorded, in order.
    pub checks: Vec<Check>,
    /// Each failed hop (or one skipped because of it), with the hop that failed first.
    blocked: Vec<(&'static str, &'static str)>,
}

impl Report {
    /// An empty report.
    pub fn new() -> Report {
        Report::default()
    }

    /// The skip for `id` when a hop it needs failed; `None` when it can run.
    pub fn gate(&self, id: &'static str) -> Option<Check> {
        let needs = NEEDS.iter().find(|(n, _)| *n == id)?.1;
        needs.iter().find_map(|need| {
            self.blocked
                .iter()
                .find(|(b, _)| b == need)
                .map(|(_, root)| Check::skip(id, format!("needs {root}")))
        })
    }

    /// Records `check`; a failure (or a skip from [`Report::gate`]) blocks what needs it.
    pub fn record(&mut self, check: Check) {
        let root = match check.status {
            Status::Fail => Some(check.id),
            Status::Skip => check
                .detail
                .strip_prefix("needs ")
                .and_then(|r| ORDER.iter().copied().find(|id| *id == r)),
            Status::Pass => None,
        };
        if let Some(root) = root {
            self.blocked.push((check.id, root));
        }
        self.checks.push(check);
    }

    /// Records a failed check that blocks nothing: what needs it still works (a certificate
    /// valid today but expiring soon).
    pub fn record_warning(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// How many checks failed.
    pub fn failures(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count()
    }

    /// The closing line of the text report.
    pub fn summary(&self) -> String {
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        format!(
            "{} passed, {} failed, {} skipped",
            count(Status::Pass),
            count(Status::Fail),
            count(Status::Skip)
        )
    }
}

/// One check as a JSON line for monitoring: `{"id","status","detail","fix"}` (`fix` null
/// unless it failed).
pub fn json_line(check: &Check) -> String {
    json!({
        "id": check.id,
        "status": check.status.as_str(),
        "detail": check.detail,
        "fix": check.fix,
    })
    .to_string()
}

/// What a probe got back: an HTTP answer, or why there was none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Status and body (lossy UTF-8).
    Answer {
        /// HTTP status.
        status: u16,
        /// The body, as text.
        body: String,
    },
    /// Connect, TLS, timeout or an unreadable answer.
    Unreachable(String),
}

impl Reply {
    /// The answer from the bytes of a whole response.
    pub fn answer(status: u16, body: &[u8]) -> Reply {
        Reply::Answer {
            status,
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }
}

/// PUBLIC_URL as an endpoint (scheme, host, port; target `/`).
pub fn public_endpoint(config: &Config) -> Endpoint {
    // PublicUrl::parse admitted only http(s)://host[:port], which Endpoint::parse reads too.
    Endpoint::parse(&config.public_url.http_url("")).unwrap_or_else(|_| Endpoint {
        tls: true,
        host: String::new(),
        port: 443,
        target: "/".into(),
    })
}

/// `ep` with the request target `target`.
pub fn at(ep: &Endpoint, target: &str) -> Endpoint {
    Endpoint {
        target: target.to_owned(),
        ..ep.clone()
    }
}

// ---- 1. configuration ----

/// Whether the configuration is complete for a real deployment (docs/doctor.md §config).
pub fn evaluate_config(config: &Config) -> Check {
    let public = config.public_url.http_url("");
    let mut missing = Vec::new();
    if !public.starts_with("https://") {
        missing.push("PUBLIC_URL must be https:// (Twilio refuses plain http for streams)");
    }
    if config.twilio_account_sid.is_none() {
        missing.push("TWILIO_ACCOUNT_SID (transfers, twilio configure, the alert check)");
    }
    if config.elevenlabs_agent_id.is_none() {
        missing.push("ELEVENLABS_AGENT_ID (no agent answers the calls)");
    }
    if config.elevenlabs_api_key.is_none() {
        missing.push("ELEVENLABS_API_KEY (a private agent needs it; a public one can be started by anyone, billed to the practice)");
    }
    if config.practice.tools_token.is_none() {
        missing.push("TOOLS_TOKEN (without it every tool request is refused)");
    }
    let mut recommended = Vec::new();
    if config.practice.config_path.is_none() {
        recommended.push("PRACTICE_CONFIG (without it the built-in Demo Praxis answers)");
    }
    if config.fallback_number.is_none() {
        recommended.push("FALLBACK_NUMBER");
    }
    if config.twilio_phone_number.is_none() {
        recommended.push("TWILIO_PHONE_NUMBER");
    }
    if config.twilio_api_key.is_none() {
        recommended.push("TWILIO_API_KEY_SID/SECRET");
    }
    let advice = if recommended.is_empty() {
        String::new()
    } else {
        format!("; recommended, unset: {}", recommended.join(", "))
    };
    if missing.is_empty() {
        Check::pass(
            "config",
            format!("complete for a real deployment ({public}){advice}"),
        )
    } else {
        Check::fail(
            "config",
            format!("incomplete: {}{advice}", missing.join("; ")),
            "set the variables named in .env (README, Configuration; ignis --help lists them)",
        )
    }
}

// ---- 2. DNS ----

/// The public host's addresses, or why the lookup failed.
pub fn evaluate_dns(host: &str, lookup: Result<&[std::net::IpAddr], &str>) -> Check {
    match lookup {
        Ok(addrs) if !addrs.is_empty() => {
            let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            Check::pass("dns", format!("{host} → {}", list.join(", ")))
        }
        Ok(_) => Check::fail(
            "dns",
            format!("{host} has no address"),
            format!("create an A (and AAAA) record for {host} pointing at the server"),
        ),
        Err(e) => Check::fail(
            "dns",
            format!("{host} does not resolve: {e}"),
            format!(
                "create an A (and AAAA) record for {host} pointing at the server, \
                 or fix PUBLIC_URL's host"
            ),
        ),
    }
}

// ---- 3. TLS ----

/// Why a certificate chain was refused, as the verifier says (the driver translates rustls's
/// `CertificateError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertProblem {
    /// Past its notAfter.
    Expired,
    /// Before its notBefore (a server clock far off, or a certificate from the future).
    NotYetValid,
    /// Not issued by a trusted root (self-signed, or the intermediate missing from the chain).
    UnknownIssuer,
    /// Not valid for the public host.
    NameMismatch,
    /// Anything else the verifier refused.
    Other(String),
}

/// What the TLS probe observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsObservation {
    /// PUBLIC_URL is http://: nothing to check.
    NotTls,
    /// No certificate came (refused connection, a TLS alert, plain HTTP on the port …).
    NoChain(String),
    /// The server's chain, verified now and [`MIN_CERT_DAYS`] from now.
    Chain {
        /// Verification at the current time.
        now: Result<(), CertProblem>,
        /// Verification [`MIN_CERT_DAYS`] later.
        later: Result<(), CertProblem>,
        /// The leaf's notAfter (Unix seconds), when readable.
        not_after: Option<i64>,
    },
}

/// Whether connections to the public URL work with this certificate today (a failure that
/// only looks ahead, "expires within 14 days", skips nothing after it).
pub fn tls_usable(obs: &TlsObservation) -> bool {
    matches!(
        obs,
        TlsObservation::NotTls | TlsObservation::Chain { now: Ok(()), .. }
    )
}

/// Judges the certificate (docs/doctor.md §tls): valid chain, matching name, > 14 days left.
pub fn evaluate_tls(host: &str, obs: &TlsObservation, now_unix: i64) -> Check {
    let until = |na: Option<i64>| {
        na.map_or(String::new(), |t| {
            let days = (t - now_unix).div_euclid(86_400);
            let left = if days < 0 {
                format!("{} days ago", -days)
            } else {
                format!("{days} days left")
            };
            format!(" (notAfter {}, {left})", crate::http::date::rfc3339(t))
        })
    };
    let renew =
        "renew the certificate (certbot renew; check the renewal timer and that nginx reloads it)";
    match obs {
        TlsObservation::NotTls => Check::skip("tls", "PUBLIC_URL is http://: no TLS to check"),
        TlsObservation::NoChain(e) => Check::fail(
            "tls",
            format!("no TLS handshake with {host}: {e}"),
            "serve HTTPS on PUBLIC_URL's port (nginx: listen 443 ssl with the certificate; \
             firewall: TCP 443 open)",
        ),
        TlsObservation::Chain {
            now: Ok(()),
            later: Ok(()),
            not_after,
        } => Check::pass(
            "tls",
            format!(
                "chain valid, name matches {host}, more than {MIN_CERT_DAYS} days left{}",
                until(*not_after)
            ),
        ),
        TlsObservation::Chain {
            now: Ok(()),
            later: Err(_),
            not_after,
        } => Check::fail(
            "tls",
            format!(
                "certificate expires within {MIN_CERT_DAYS} days{}",
                until(*not_after)
            ),
            renew,
        ),
        TlsObservation::Chain {
            now: Err(problem),
            not_after,
            ..
        } => {
            let (what, fix) = match problem {
                CertProblem::Expired => (
                    format!("certificate expired{}", until(*not_after)),
                    renew.to_owned(),
                ),
                CertProblem::NotYetValid => (
                    "certificate not valid yet".to_owned(),
                    "check the server's clock and the certificate's notBefore".to_owned(),
                ),
                CertProblem::UnknownIssuer => (
                    "certificate chain not trusted (unknown issuer)".to_owned(),
                    "serve the full chain (nginx: ssl_certificate fullchain.pem, not cert.pem) \
                     from a public CA; Twilio trusts no self-signed certificate"
                        .to_owned(),
                ),
                CertProblem::NameMismatch => (
                    format!("certificate is not valid for {host} (name mismatch)"),
                    format!("get a certificate whose names include {host}, or fix PUBLIC_URL"),
                ),
                CertProblem::Other(e) => (
                    format!("certificate refused: {e}"),
                    "replace the certificate with one from a public CA".to_owned(),
                ),
            };
            Check::fail("tls", what, fix)
        }
    }
}

/// Longest certificate the DER walk reads.
pub const MAX_CERT_BYTES: usize = 64 * 1024;

/// A certificate's notAfter (Unix seconds), read with a minimal DER walk (RFC 5280 §4.1:
/// Certificate → tbsCertificate → [0] version, serialNumber, signature, issuer, validity).
/// `None` for anything unexpected; it never panics on bad input.
pub fn cert_not_after(der: &[u8]) -> Option<i64> {
    if der.len() > MAX_CERT_BYTES {
        return None;
    }
    let (cert, _) = der_take(der, 0x30)?;
    let (mut tbs, _) = der_take(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_take(tbs, 0xa0)?.1;
    }
    for tag in [0x02, 0x30, 0x30] {
        tbs = der_take(tbs, tag)?.1; // serialNumber, signature, issuer
    }
    let (validity, _) = der_take(tbs, 0x30)?;
    let (_, rest) = der_any_time(validity)?; // notBefore
    der_any_time(rest).map(|(t, _)| t)
}

/// One DER element with `tag`: (its contents, what follows).
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 3 || rest.len() < n {
            return None; // longer than 16 MiB: not a certificate we read
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn der_any_time(input: &[u8]) -> Option<(i64, &[u8])> {
    let (text, rest, century) = match input.first()? {
        0x17 => {
            let (t, r) = der_take(input, 0x17)?;
            (t, r, true)
        }
        0x18 => {
            let (t, r) = der_take(input, 0x18)?;
            (t, r, false)
        }
        _ => return None,
    };
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let num = |s: &str| s.parse::<i16>().ok();
    let (year, rest_text) = if century {
        let yy = num(text.get(..2)?)?;
        (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
    } else {
        (num(text.get(..4)?)?, text.get(4..)?)
    };
    if rest_text.len() != 10 {
        return None;
    }
    let part = |i: usize| rest_text.get(i..i + 2).and_then(|s| s.parse::<i8>().ok());
    let dt = jiff::civil::DateTime::new(year, part(0)?, part(2)?, part(4)?, part(6)?, part(8)?, 0)
        .ok()?;
    let ts = jiff::tz::TimeZone::UTC.to_timestamp(dt).ok()?;
    Some((ts.as_second(), rest))
}

// ---- 4. /health ----

/// `GET /health` through the public URL must be ignis's 200 (docs/doctor.md §health).
pub fn evaluate_health(reply: &Reply) -> Check {
    match reply {
        Reply::Answer { status: 200, body } if body.contains("\"status\":\"ok\"") => {
            Check::pass("health", "GET /health → 200 ok")
        }
        Reply::Answer { status, body } => Check::fail(
            "health",
            format!("GET /health → {status}{}", short(body)),
            upstream_fix(*status),
        ),
        Reply::Unreachable(e) => Check::fail(
            "health",
            format!("GET /health failed: {e}"),
            "check that nginx runs and listens on PUBLIC_URL's port",
        ),
    }
}

/// The fix for an unexpected status from the proxy or ignis.
fn upstream_fix(status: u16) -> String {
    match status {
        502..=504 => "nginx answers but cannot reach ignis: is it running (docker compose ps; \
                      ignis healthcheck on the server), and is nginx's upstream its address?"
            .into(),
        404 => "this host does not route to ignis: check nginx's server block and \
                proxy_pass http://ignis;"
            .into(),
        429 => "rate limited by nginx: run doctor again in a minute".into(),
        _ => "check nginx's configuration against deploy/nginx.conf".into(),
    }
}

/// Most characters of a body's first line quoted in a report line.
const MAX_BODY_EXCERPT_CHARS: usize = 80;

/// `: <first line of body>`, shortened (see [`super::shown`]), or nothing for an empty body.
fn short(body: &str) -> String {
    let line = body.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return String::new();
    }
    format!(": {}", super::shown(line, MAX_BODY_EXCERPT_CHARS))
}

// ---- 5. the voice webhook ----

/// The probe call's ids: a fake `From` ([`PROBE_FROM`]), `To` the practice's number when
/// known, and the deployment's own account SID (ignis refuses webhooks of another account).
pub fn probe_ids(call_sid: &str, account_sid: Option<&str>, to: Option<&str>) -> CallIds {
    let mut ids = CallIds::new(call_sid, PROBE_FROM, to.unwrap_or(PROBE_FROM));
    if let Some(a) = account_sid {
        ids.account_sid = a.to_owned();
    }
    ids
}

/// A clearly fake but well-formed CallSid (`CA` + 16 zeros + 16 hex digits of `unique`).
pub fn probe_call_sid(unique: u64) -> String {
    format!("CA0000000000000000{unique:016x}")
}

/// The probe's voice webhook to `public` (PUBLIC_URL's endpoint), signed with `auth_token` when
/// given, else unsigned.
pub fn voice_webhook_request(
    public: &Endpoint,
    ids: &CallIds,
    auth_token: Option<&str>,
) -> Vec<u8> {
    let url = format!("{}{}", origin(public), crate::routes::VOICE_PATH);
    let params = sim::voice_webhook_params(ids);
    form_post(public, crate::routes::VOICE_PATH, &url, &params, auth_token)
}

/// The signed status callback that ends the probe call at once (`CallStatus=completed`).
pub fn status_callback_request(public: &Endpoint, ids: &CallIds, auth_token: &str) -> Vec<u8> {
    let url = format!("{}{}", origin(public), crate::routes::STATUS_PATH);
    let params: Vec<(String, String)> = [
        ("AccountSid", ids.account_sid.as_str()),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", ids.call_sid.as_str()),
        ("CallStatus", "completed"),
        ("CallDuration", "0"),
        ("Direction", "inbound"),
        ("From", ids.from.as_str()),
        ("To", ids.to.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    form_post(
        public,
        crate::routes::STATUS_PATH,
        &url,
        &params,
        Some(auth_token),
    )
}

/// `scheme://host[:port]` of an endpoint.
fn origin(ep: &Endpoint) -> String {
    format!(
        "{}://{}",
        if ep.tls { "https" } else { "http" },
        ep.host_header()
    )
}

fn form_post(
    public: &Endpoint,
    path: &str,
    url: &str,
    params: &[(String, String)],
    auth_token: Option<&str>,
) -> Vec<u8> {
    let body = params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                crate::http::form::encode(k),
                crate::http::form::encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    let sig = auth_token.map(|t| crate::twilio::signature::sign(t, url, params));
    let mut headers = Vec::new();
    if let Some(sig) = &sig {
        headers.push(("X-Twilio-Signature", sig.as_str()));
    }
    // The values are ours and clean: encode_request refuses only control characters.
    client::encode_request(
        "POST",
        &at(public, path),
        &headers,
        Some(("application/x-www-form-urlencoded", body.as_bytes())),
    )
    .unwrap_or_default()
}

/// The signed voice webhook's answer must be TwiML whose stream is on the public host
/// (docs/doctor.md §voice_webhook). Returns the check and, when it passed, the stream URL.
pub fn evaluate_voice_webhook(public: &Endpoint, reply: &Reply) -> (Check, Option<String>) {
    let id = "voice_webhook";
    let want = format!(
        "wss://{}{}",
        public.host_header(),
        crate::routes::STREAM_PATH
    );
    let (status, body) = match reply {
        Reply::Answer { status, body } => (*status, body),
        Reply::Unreachable(e) => {
            let check = Check::fail(
                id,
                format!("POST /api/twilio/voice failed: {e}"),
                upstream_fix(0),
            );
            return (check, None);
        }
    };
    let check = match status {
        200 => match sim::parse_twiml(body) {
            Some(t) if t.url.starts_with(&format!("{want}/")) => {
                let shown = format!("{want}/<call nonce>");
                return (
                    Check::pass(id, format!("signed webhook → 200 TwiML, stream {shown}")),
                    Some(t.url),
                );
            }
            Some(t) => Check::fail(
                id,
                format!(
                    "the TwiML's stream is {}, not {want}/…",
                    t.url.split("/api/").next().unwrap_or("")
                ),
                "the server's PUBLIC_URL differs from this one: set both to the public \
                 https:// origin (docs/twilio.md §2.1)",
            ),
            None => Check::fail(
                id,
                format!("signed webhook → 200 without a <Stream>{}", short(body)),
                "ignis answered with its fallback (call cap reached, or no OS randomness): \
                 see its log; a non-ignis answer means the proxy routes elsewhere",
            ),
        },
        403 if body.contains("AccountSid") => Check::fail(
            id,
            "signed webhook → 403: TWILIO_ACCOUNT_SID differs from the server's",
            "use the same TWILIO_ACCOUNT_SID as the server",
        ),
        403 => Check::fail(
            id,
            "signed webhook → 403: signature mismatch: PUBLIC_URL (or TWILIO_AUTH_TOKEN) \
             differs from the server's",
            "set PUBLIC_URL to exactly the origin the server and the Twilio console use \
             (scheme, host, port) and the account's primary TWILIO_AUTH_TOKEN; Twilio reports \
             this as 11200 (docs/twilio.md §4)",
        ),
        _ => Check::fail(
            id,
            format!("signed webhook → {status}{}", short(body)),
            upstream_fix(status),
        ),
    };
    (check, None)
}

/// The same webhook unsigned must be refused with 403 (docs/doctor.md §webhook_signature_check).
pub fn evaluate_unsigned_webhook(reply: &Reply) -> Check {
    let id = "webhook_signature_check";
    match reply {
        Reply::Answer { status: 403, .. } => Check::pass(id, "unsigned webhook → 403"),
        Reply::Answer { status: 200, .. } => Check::fail(
            id,
            "unsigned webhook → 200: signature check is off",
            "run ignis serve without --insecure-skip-signature: anyone could start calls on \
             the agent",
        ),
        Reply::Answer { status, body } => Check::fail(
            id,
            format!("unsigned webhook → {status}{}, not 403", short(body)),
            upstream_fix(*status),
        ),
        Reply::Unreachable(e) => {
            Check::fail(id, format!("unsigned webhook failed: {e}"), upstream_fix(0))
        }
    }
}

// ---- 6. the stream upgrade ----

/// The nginx lines a WebSocket route needs (deploy/nginx.conf, `location /api/twilio/stream/`).
pub const NGINX_UPGRADE_FIX: &str = "nginx: proxy_http_version 1.1; \
    proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade; \
    in location /api/twilio/stream/, as in deploy/nginx.conf";

/// The upgrade request Twilio sends for `stream_url`, signed over it (docs/twilio.md §1.1).
/// `None` when the URL is not a ws(s) URL.
pub fn stream_handshake(stream_url: &str, auth_token: &str) -> Option<(Endpoint, Vec<u8>)> {
    let ep = Endpoint::parse(stream_url).ok()?;
    if !stream_url.starts_with("wss://") && !stream_url.starts_with("ws://") {
        return None;
    }
    let sig = sim::stream_signature(auth_token, stream_url);
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Twilio.TmeWs/1.0 (ignis doctor)\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {}\r\n\
         Sec-WebSocket-Version: 13\r\nX-Twilio-Signature: {sig}\r\n\r\n",
        ep.target,
        ep.host_header(),
        PROBE_WEBSOCKET_KEY
    );
    Some((ep, head.into_bytes()))
}

/// The probe's `Sec-WebSocket-Key` (RFC 6455 §1.3's sample: any 16 bytes in base64 will do).
const PROBE_WEBSOCKET_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Reads the answer to the upgrade: a 101 as soon as its head is in (nothing follows until
/// the socket is used), any other status with its body.
pub fn parse_upgrade_answer(buf: &[u8], eof: bool) -> Result<Option<Reply>, ResponseError> {
    match client::parse_status(buf, eof)? {
        Some(101) => Ok(Some(Reply::answer(101, b""))),
        Some(_) => Ok(client::parse_response(buf, eof, MAX_REPLY_BYTES)?
            .map(|r| Reply::answer(r.status, &r.body))),
        None => Ok(None),
    }
}

/// The stream upgrade through the proxy must answer 101 (docs/doctor.md §stream_upgrade). What
/// ignis answers otherwise (src/routes.rs `stream`): 426 "only speaks WebSocket" when no
/// `Upgrade: websocket` reached it, 400 "malformed WebSocket handshake" when `Upgrade` came
/// without `Connection: upgrade`, 403 for the signature or the call's nonce. The probe sends
/// all of them, so a 400 or 426 means the proxy dropped them.
pub fn evaluate_upgrade(reply: &Reply) -> Check {
    let id = "stream_upgrade";
    let (status, body) = match reply {
        Reply::Answer { status, body } => (*status, body.as_str()),
        Reply::Unreachable(e) => {
            return Check::fail(
                id,
                format!("stream handshake failed: {e}"),
                "the proxy must keep the connection open for the WebSocket (Twilio 31920)",
            );
        }
    };
    match status {
        101 => Check::pass(id, "signed handshake → 101 Switching Protocols"),
        400 | 426 => {
            let seen = if body.contains("only speaks WebSocket") {
                " (ignis got no Upgrade header)"
            } else if body.contains("malformed WebSocket handshake") {
                " (ignis got no Connection: upgrade)"
            } else {
                ""
            };
            Check::fail(
                id,
                format!(
                    "signed handshake → {status}{seen}: the proxy does not forward \
                     Upgrade/Connection"
                ),
                format!("{NGINX_UPGRADE_FIX} (Twilio reports this as 31920)"),
            )
        }
        403 if body.contains("not bound") => Check::fail(
            id,
            "signed handshake → 403: the stream's call nonce was not accepted",
            "the proxy must pass the path unchanged (location /api/twilio/stream/ with \
             proxy_pass http://ignis; no URI part), and one ignis must get both the webhook \
             and the stream (docs/twilio.md §8)",
        ),
        403 => Check::fail(
            id,
            "signed handshake → 403: signature mismatch: PUBLIC_URL",
            "the handshake is signed over wss://<PUBLIC_URL host>/…: PUBLIC_URL must be the \
             public origin and the proxy must pass the path unchanged",
        ),
        404 => Check::fail(
            id,
            "signed handshake → 404: the stream path is not routed to ignis",
            "route location /api/twilio/stream/ to ignis (deploy/nginx.conf)",
        ),
        _ => Check::fail(
            id,
            format!("signed handshake → {status}{}", short(body)),
            upstream_fix(status),
        ),
    }
}

// ---- 7. /metrics ----

/// `/metrics` must not be open to the internet (docs/doctor.md §metrics_exposure).
/// `from_loopback`: the doctor reached the proxy over loopback, which deploy/nginx.conf allows.
pub fn evaluate_metrics(reply: &Reply, from_loopback: bool) -> Check {
    let id = "metrics_exposure";
    match reply {
        Reply::Answer { status: 200, body } if body.contains("ignis_") => {
            if from_loopback {
                Check::skip(
                    id,
                    "reached over loopback, which deploy/nginx.conf allows: run doctor from \
                     another machine to check /metrics from outside",
                )
            } else {
                Check::fail(
                    id,
                    "GET /metrics → 200 with metrics: metrics open to the internet",
                    "in nginx: location = /metrics { allow 127.0.0.1; allow ::1; deny all; … } \
                     as in deploy/nginx.conf, or set METRICS_TOKEN",
                )
            }
        }
        Reply::Answer { status, .. } => {
            Check::pass(id, format!("GET /metrics from outside → {status}"))
        }
        // A probe that failed (a timeout, an oversized reply) saw nothing: not checked.
        Reply::Unreachable(e) => Check::skip(id, format!("GET /metrics could not be checked: {e}")),
    }
}

// ---- 10. the tool endpoint ----

/// A tool request to the public URL, without a call header: without a token (`None`) it must
/// reach ignis and be refused with 401 (docs/doctor.md §tools_endpoint; src/practice/tools:
/// route, then the bearer check); with this configuration's `TOOLS_TOKEN` the server must know
/// the token (401 `no_call`), not refuse it (403 `forbidden`: its token differs).
pub fn tool_probe_request(public: &Endpoint, token: Option<&str>) -> Vec<u8> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("Authorization", b.as_str()))
        .collect();
    client::encode_request(
        "POST",
        &at(public, TOOL_PROBE_PATH),
        &headers,
        Some(("application/json", b"{}")),
    )
    .unwrap_or_default()
}

/// Judges the answers to [`tool_probe_request`] without the token and, when this
/// configuration has a `TOOLS_TOKEN`, with it.
pub fn evaluate_tools(reply: &Reply, with_token: Option<&Reply>) -> Check {
    let id = "tools_endpoint";
    match reply {
        Reply::Answer { status: 401, .. } => match with_token {
            None => Check::pass(
                id,
                format!("POST {TOOL_PROBE_PATH} without the token → 401"),
            ),
            Some(r) => evaluate_tools_token(r),
        },
        Reply::Answer { status: 503, body } if body.contains("tools_disabled") => Check::fail(
            id,
            "the practice tools are disabled on this server (503 tools_disabled)",
            "run ignis serve (it opens the practice) with TOOLS_TOKEN set",
        ),
        Reply::Answer { status, body } if (200..300).contains(status) => Check::fail(
            id,
            format!(
                "POST {TOOL_PROBE_PATH} without the token → {status}{}",
                short(body)
            ),
            "the tools must refuse requests without the token: this is not ignis's tool API",
        ),
        Reply::Answer { status: 404, .. } => Check::fail(
            id,
            format!("POST {TOOL_PROBE_PATH} → 404: the tool path is not routed to ignis"),
            "route the tool paths to ignis (deploy/nginx.conf: location ~ \
             ^/api/(patients|appointments|requests|emergencies)(/|$))",
        ),
        Reply::Answer { status, body } => Check::fail(
            id,
            format!(
                "POST {TOOL_PROBE_PATH} without the token → {status}{}",
                short(body)
            ),
            upstream_fix(*status),
        ),
        Reply::Unreachable(e) => Check::fail(
            id,
            format!("POST {TOOL_PROBE_PATH} failed: {e}"),
            upstream_fix(0),
        ),
    }
}

/// The answer to [`tool_probe_request`] with the token, after the one without it was a 401.
fn evaluate_tools_token(reply: &Reply) -> Check {
    let id = "tools_endpoint";
    match reply {
        Reply::Answer { status: 401, body } if body.contains("no_call") => Check::pass(
            id,
            format!(
                "POST {TOOL_PROBE_PATH} → 401 without the token, 401 no_call with it: the \
                 server has this TOOLS_TOKEN"
            ),
        ),
        Reply::Answer { status: 403, .. } => Check::fail(
            id,
            format!("POST {TOOL_PROBE_PATH} with this TOOLS_TOKEN → 403: the server's differs"),
            "every tool call of the agent is refused: restart ignis after changing TOOLS_TOKEN, \
             then run ignis agent sync so the agent sends the same one",
        ),
        Reply::Answer { status, body } => Check::fail(
            id,
            format!(
                "POST {TOOL_PROBE_PATH} with the token and no call → {status}{}, not 401 no_call",
                short(body)
            ),
            upstream_fix(*status),
        ),
        Reply::Unreachable(e) => Check::fail(
            id,
            format!("POST {TOOL_PROBE_PATH} with the token failed: {e}"),
            upstream_fix(0),
        ),
    }
}

// ---- 11. --call ----

/// What the simulated call measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallObservation {
    /// The voice webhook's status (`None`: no answer).
    pub webhook_status: Option<u16>,
    /// Whether the media stream started.
    pub stream_started: bool,
    /// Stream start → first agent audio, ms.
    pub setup_ms: Option<u64>,
    /// Caller audio sent: bytes of 8 kHz μ-law (8 bytes a millisecond).
    pub sent_bytes: u64,
    /// Agent audio heard, bytes of 8 kHz μ-law.
    pub heard_bytes: u64,
    /// Agent audio heard after the caller first spoke, bytes.
    pub answered_bytes: u64,
    /// How the call ended.
    pub ended_by: String,
}

/// Bytes of agent speech the caller heard after it first spoke (`heard`: 8 kHz PCM from the
/// stream's start; `spoke_at`: the caller's first speech, from the same start): whole 20 ms
/// frames above [`crate::sim::SPEECH_RMS`], one byte a sample as on the wire.
pub fn answered_bytes(heard: &[i16], spoke_at: Option<std::time::Duration>) -> u64 {
    let Some(at) = spoke_at else { return 0 };
    let from = usize::try_from(at.as_micros() / 125).unwrap_or(usize::MAX);
    let frame = sim::FRAME;
    heard
        .get(from..)
        .unwrap_or_default()
        .chunks_exact(frame)
        .filter(|f| crate::sim::rms(f) > crate::sim::SPEECH_RMS)
        .count() as u64
        * frame as u64
}

/// A whole call through the public URL must carry audio both ways (docs/doctor.md §call).
pub fn evaluate_call(requested: bool, result: Result<&CallObservation, &str>) -> Check {
    let id = "call";
    if !requested {
        return Check::skip(id, "run with --call for a whole simulated call");
    }
    let failed = |why: String| {
        Check::fail(
            id,
            format!("the simulated call failed: {why}"),
            "see the checks above and ignis's log for this call",
        )
    };
    let obs = match result {
        Ok(o) => o,
        Err(e) => return failed(e.to_owned()),
    };
    if obs.webhook_status != Some(200) {
        let status = obs.webhook_status.map_or("none".into(), |s| s.to_string());
        return failed(format!("the voice webhook answered {status}"));
    }
    if !obs.stream_started {
        return failed("the stream never started".into());
    }
    let ms = |bytes: u64| bytes / 8;
    let setup = obs
        .setup_ms
        .map_or("no agent audio".to_owned(), |m| format!("set-up {m} ms"));
    let detail = format!(
        "{setup}; sent {} bytes ({} ms), heard {} bytes ({} ms), {} ms after the caller spoke; {}",
        obs.sent_bytes,
        ms(obs.sent_bytes),
        obs.heard_bytes,
        ms(obs.heard_bytes),
        ms(obs.answered_bytes),
        obs.ended_by
    );
    if obs.heard_bytes == 0 {
        Check::fail(
            id,
            detail,
            "the agent sent no audio: check the agent (ignis's log: agent connect, its audio \
             format ulaw_8000) and ELEVENLABS_* settings",
        )
    } else if obs.sent_bytes == 0 || obs.answered_bytes == 0 {
        Check::fail(
            id,
            detail,
            "the agent did not answer the caller: the caller's audio may not reach it (agent \
             input format, client events in the agent's settings)",
        )
    } else {
        Check::pass(id, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(extra: &[(&str, &str)]) -> Config {
        let mut vars: HashMap<String, String> = HashMap::from([
            ("PUBLIC_URL".into(), "https://ignis.example.com".into()),
            ("TWILIO_AUTH_TOKEN".into(), "token-token-token".into()),
        ]);
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        Config::from_vars(&vars, false).unwrap()
    }

    fn answer(status: u16, body: &str) -> Reply {
        Reply::answer(status, body.as_bytes())
    }

    #[test]
    fn config_names_what_a_real_deployment_lacks() {
        let c = evaluate_config(&config(&[]));
        assert_eq!(c.status, Status::Fail);
        for v in [
            "TWILIO_ACCOUNT_SID",
            "ELEVENLABS_AGENT_ID",
            "ELEVENLABS_API_KEY",
            "TOOLS_TOKEN",
        ] {
            assert!(c.detail.contains(v), "{v}: {}", c.detail);
        }
        let full = config(&[
            ("TWILIO_ACCOUNT_SID", "AC11111111111111111111111111111111"),
            ("ELEVENLABS_AGENT_ID", "agent_1"),
            ("ELEVENLABS_API_KEY", "sk_secret_value_123"),
            ("TOOLS_TOKEN", "tools-token-0123456789"),
        ]);
        let c = evaluate_config(&full);
        assert_eq!(c.status, Status::Pass, "{c}");
        assert!(
            c.detail.contains("recommended, unset: PRACTICE_CONFIG")
                && c.detail.contains("FALLBACK_NUMBER"),
            "{c}"
        );
        let mut own = full.clone();
        own.practice.config_path = Some("/etc/ignis/practice.toml".into());
        assert!(!evaluate_config(&own).detail.contains("PRACTICE_CONFIG"));
        assert!(!c.detail.contains("sk_secret") && !c.detail.contains("tools-token"));
        let mut http = full.clone();
        http.public_url = crate::config::PublicUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(evaluate_config(&http).status, Status::Fail);
    }

    #[test]
    fn a_failed_hop_skips_what_needs_it_naming_the_root() {
        let mut r = Report::new();
        r.record(Check::pass("config", "ok"));
        assert_eq!(r.gate("dns"), None);
        r.record(Check::fail("dns", "no", "fix"));
        let tls = r.gate("tls").unwrap();
        assert_eq!(tls, Check::skip("tls", "needs dns"));
        r.record(tls);
        let health = r.gate("health").unwrap();
        assert_eq!(health, Check::skip("health", "needs dns"));
        r.record(health);
        assert_eq!(
            r.gate("stream_upgrade"),
            None,
            "gated by voice_webhook, not yet recorded"
        );
        let webhook = r.gate("voice_webhook").unwrap();
        r.record(webhook);
        assert_eq!(
            r.gate("stream_upgrade"),
            Some(Check::skip("stream_upgrade", "needs dns"))
        );
        assert_eq!(r.gate("twilio_number"), None);
        assert_eq!(r.failures(), 1);
        assert_eq!(r.summary(), "1 passed, 1 failed, 3 skipped");
        // A warning (a certificate expiring soon) counts as a failure but blocks nothing.
        let mut r = Report::new();
        r.record(Check::pass("dns", "ok"));
        r.record_warning(Check::fail("tls", "expires within 14 days", "renew"));
        assert_eq!((r.gate("health"), r.failures()), (None, 1));
        // A skip for another reason (http:// PUBLIC_URL) blocks nothing.
        let mut r = Report::new();
        r.record(Check::pass("dns", "ok"));
        r.record(Check::skip("tls", "PUBLIC_URL is http://: no TLS to check"));
        assert_eq!(r.gate("health"), None);
    }

    #[test]
    fn json_lines_carry_id_status_detail_and_fix() {
        let line = json_line(&Check::fail("tls", "expired", "renew"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            json!({"id":"tls","status":"fail","detail":"expired","fix":"renew"})
        );
        let v: serde_json::Value =
            serde_json::from_str(&json_line(&Check::pass("dns", "x"))).unwrap();
        assert_eq!(v["fix"], serde_json::Value::Null);
        assert!(!line.contains('\n'));
    }

    #[test]
    fn tls_causes_are_told_apart() {
        let now = 1_800_000_000;
        let chain = |now_r, later_r| TlsObservation::Chain {
            now: now_r,
            later: later_r,
            not_after: Some(now + 5 * 86_400),
        };
        let c = evaluate_tls("h", &chain(Ok(()), Ok(())), now);
        assert_eq!(c.status, Status::Pass);
        let c = evaluate_tls("h", &chain(Ok(()), Err(CertProblem::Expired)), now);
        assert!(
            c.detail.contains("expires within 14 days") && c.detail.contains("5 days"),
            "{c}"
        );
        let c = evaluate_tls(
            "h",
            &chain(Err(CertProblem::Expired), Err(CertProblem::Expired)),
            now,
        );
        assert!(c.detail.starts_with("certificate expired"), "{c}");
        let c = evaluate_tls("h", &chain(Err(CertProblem::UnknownIssuer), Ok(())), now);
        assert!(c.detail.contains("unknown issuer"), "{c}");
        let c = evaluate_tls("h", &chain(Err(CertProblem::NameMismatch), Ok(())), now);
        assert!(c.detail.contains("name mismatch"), "{c}");
        let c = evaluate_tls("h", &TlsObservation::NoChain("refused".into()), now);
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            evaluate_tls("h", &TlsObservation::NotTls, now).status,
            Status::Skip
        );
    }

    #[test]
    fn not_after_is_read_from_der_and_bad_input_is_none() {
        // A minimal shape: Certificate { tbs { [0]{INTEGER 2}, serial, sigalg, issuer,
        // validity { UTCTime, GeneralizedTime } } }.
        let time = |tag: u8, s: &str| [&[tag, s.len() as u8][..], s.as_bytes()].concat();
        let validity = [time(0x17, "260101000000Z"), time(0x18, "20270102030405Z")].concat();
        let seq = |tag: u8, body: &[u8]| [&[tag, body.len() as u8][..], body].concat();
        let tbs = [
            seq(0xa0, &[0x02, 0x01, 0x02]),
            vec![0x02, 0x01, 0x07],
            seq(0x30, &[]),
            seq(0x30, &[]),
            seq(0x30, &validity),
        ]
        .concat();
        let cert = seq(0x30, &seq(0x30, &tbs));
        let want = jiff::tz::TimeZone::UTC
            .to_timestamp(jiff::civil::datetime(2027, 1, 2, 3, 4, 5, 0))
            .unwrap()
            .as_second();
        assert_eq!(cert_not_after(&cert), Some(want));
        for n in 0..cert.len() {
            assert_eq!(cert_not_after(&cert[..n]), None, "truncated at {n}");
        }
        assert_eq!(cert_not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn http_checks_name_their_cause() {
        assert_eq!(
            evaluate_health(&answer(200, r#"{"status":"ok"}"#)).status,
            Status::Pass
        );
        let c = evaluate_health(&answer(502, "<html>Bad Gateway"));
        assert!(c.fix.unwrap().contains("cannot reach ignis"));
        assert_eq!(
            evaluate_unsigned_webhook(&answer(403, "")).status,
            Status::Pass
        );
        let c = evaluate_unsigned_webhook(&answer(200, "<Response/>"));
        assert!(c.detail.contains("signature check is off"), "{c}");
        assert_eq!(
            evaluate_tools(&answer(401, "{}"), None).status,
            Status::Pass
        );
        assert_eq!(evaluate_tools(&answer(404, ""), None).status, Status::Fail);
        assert_eq!(
            evaluate_tools(&answer(200, "{}"), None).status,
            Status::Fail
        );
        // With this configuration's token: the server must know it.
        let no_call = answer(401, r#"{"ok":false,"error":"no_call"}"#);
        let refused = answer(403, r#"{"ok":false,"error":"forbidden"}"#);
        let unsigned = answer(401, r#"{"ok":false,"error":"unauthorized"}"#);
        assert_eq!(
            evaluate_tools(&unsigned, Some(&no_call)).status,
            Status::Pass
        );
        let c = evaluate_tools(&unsigned, Some(&refused));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("the server's differs"), "{c}");
        assert_eq!(
            evaluate_tools(&unsigned, Some(&unsigned)).status,
            Status::Fail,
            "a 401 without no_call is not ignis knowing the token"
        );
        let open = answer(
            200,
            "# TYPE ignis_active_calls gauge\nignis_active_calls 0\n",
        );
        assert_eq!(evaluate_metrics(&open, false).status, Status::Fail);
        assert!(
            evaluate_metrics(&open, false)
                .detail
                .contains("metrics open to the internet")
        );
        assert_eq!(evaluate_metrics(&open, true).status, Status::Skip);
        assert_eq!(
            evaluate_metrics(&answer(403, ""), false).status,
            Status::Pass
        );
    }

    #[test]
    fn the_webhook_and_its_stream_url_are_judged_against_public_url() {
        let public = Endpoint::parse("https://h.example:8443").unwrap();
        let twiml = |url: &str| {
            crate::twilio::twiml::connect_stream(
                url,
                "https://h.example:8443/api/twilio/stream-ended",
                &[],
            )
        };
        let (c, url) = evaluate_voice_webhook(
            &public,
            &answer(200, &twiml("wss://h.example:8443/api/twilio/stream/abc")),
        );
        assert_eq!(c.status, Status::Pass, "{c}");
        assert!(!c.detail.contains("abc"), "the nonce is not shown");
        assert_eq!(
            url.as_deref(),
            Some("wss://h.example:8443/api/twilio/stream/abc")
        );
        let (c, url) = evaluate_voice_webhook(
            &public,
            &answer(200, &twiml("wss://other.example/api/twilio/stream/abc")),
        );
        assert_eq!((c.status, url), (Status::Fail, None));
        let (c, _) = evaluate_voice_webhook(
            &public,
            &answer(403, "invalid or missing X-Twilio-Signature"),
        );
        assert!(c.detail.contains("signature mismatch: PUBLIC_URL"), "{c}");
        let (c, _) = evaluate_voice_webhook(
            &public,
            &answer(403, "AccountSid is not TWILIO_ACCOUNT_SID"),
        );
        assert!(c.detail.contains("TWILIO_ACCOUNT_SID"), "{c}");
        let (c, _) =
            evaluate_voice_webhook(&public, &answer(200, "<Response><Hangup/></Response>"));
        assert!(c.detail.contains("without a <Stream>"), "{c}");
    }

    #[test]
    fn probe_requests_are_signed_like_twilios() {
        let public = Endpoint::parse("https://h.example").unwrap();
        let ids = probe_ids(
            &probe_call_sid(7),
            Some("AC22222222222222222222222222222222"),
            None,
        );
        assert_eq!(ids.call_sid.len(), 34);
        let req = String::from_utf8(voice_webhook_request(&public, &ids, Some("tok"))).unwrap();
        assert!(
            req.starts_with("POST /api/twilio/voice HTTP/1.1\r\nHost: h.example\r\n"),
            "{req}"
        );
        let body = req.split("\r\n\r\n").nth(1).unwrap();
        let params = crate::http::form::decode(body.as_bytes()).unwrap();
        let sig =
            crate::twilio::signature::sign("tok", "https://h.example/api/twilio/voice", &params);
        assert!(req.contains(&format!("X-Twilio-Signature: {sig}\r\n")));
        assert!(body.contains("AccountSid=AC2222"));
        let unsigned = String::from_utf8(voice_webhook_request(&public, &ids, None)).unwrap();
        assert!(!unsigned.contains("X-Twilio-Signature"));
        let status = String::from_utf8(status_callback_request(&public, &ids, "tok")).unwrap();
        assert!(status.contains("CallStatus=completed"));
        let (ep, hs) = stream_handshake("wss://h.example/api/twilio/stream/n1", "tok").unwrap();
        let hs = String::from_utf8(hs).unwrap();
        assert_eq!(ep.target, "/api/twilio/stream/n1");
        let sig =
            crate::twilio::signature::sign("tok", "wss://h.example/api/twilio/stream/n1", &[]);
        assert!(
            hs.contains(&format!("X-Twilio-Signature: {sig}\r\n"))
                && hs.contains("Upgrade: websocket")
        );
        assert_eq!(stream_handshake("https://h.example/x", "tok"), None);
    }

    #[test]
    fn the_upgrade_answer_names_the_proxy_or_the_signature() {
        assert_eq!(
            parse_upgrade_answer(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                false
            ),
            Ok(Some(Reply::answer(101, b"")))
        );
        assert_eq!(parse_upgrade_answer(b"HTTP/1.1 101 Swi", false), Ok(None));
        let r = parse_upgrade_answer(
            b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope",
            false,
        );
        assert_eq!(r, Ok(Some(Reply::answer(426, b"nope"))));
        assert_eq!(evaluate_upgrade(&answer(101, "")).status, Status::Pass);
        for (status, body) in [
            (426, "this endpoint only speaks WebSocket"),
            (400, "malformed WebSocket handshake"),
            (400, "<html>400 Bad Request</html>"),
        ] {
            let c = evaluate_upgrade(&answer(status, body));
            assert!(
                c.detail.contains("does not forward Upgrade/Connection"),
                "{c}"
            );
            assert!(
                c.fix
                    .unwrap()
                    .contains("proxy_set_header Upgrade $http_upgrade")
            );
        }
        let c = evaluate_upgrade(&answer(403, "invalid or missing X-Twilio-Signature"));
        assert!(c.detail.contains("signature mismatch: PUBLIC_URL"), "{c}");
        let c = evaluate_upgrade(&answer(403, "stream not bound to a voice webhook"));
        assert!(c.detail.contains("nonce"), "{c}");
        assert!(evaluate_upgrade(&answer(404, "")).detail.contains("path"));
    }

    #[test]
    fn the_call_needs_audio_both_ways() {
        assert_eq!(evaluate_call(false, Err("x")).status, Status::Skip);
        let mut obs = CallObservation {
            webhook_status: Some(200),
            stream_started: true,
            setup_ms: Some(120),
            sent_bytes: 16_000,
            heard_bytes: 8_000,
            answered_bytes: 8_000,
            ended_by: "caller hung up".into(),
        };
        let c = evaluate_call(true, Ok(&obs));
        assert_eq!(c.status, Status::Pass, "{c}");
        assert!(
            c.detail
                .contains("set-up 120 ms; sent 16000 bytes (2000 ms), heard 8000 bytes (1000 ms)"),
            "{c}"
        );
        obs.webhook_status = Some(502);
        let c = evaluate_call(true, Ok(&obs));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.ends_with("the voice webhook answered 502"), "{c}");
        obs.webhook_status = None;
        assert!(
            evaluate_call(true, Ok(&obs))
                .detail
                .ends_with("answered none")
        );
        obs.webhook_status = Some(200);
        obs.stream_started = false;
        let c = evaluate_call(true, Ok(&obs));
        assert!(c.detail.ends_with("the stream never started"), "{c}");
        obs.stream_started = true;
        obs.answered_bytes = 0;
        assert_eq!(evaluate_call(true, Ok(&obs)).status, Status::Fail);
        obs.heard_bytes = 0;
        assert!(
            evaluate_call(true, Ok(&obs))
                .fix
                .unwrap()
                .contains("no audio")
        );
        let mut heard = vec![0i16; 800];
        heard.extend(std::iter::repeat_n(3000i16, 480));
        let at = |ms| Some(std::time::Duration::from_millis(ms));
        assert_eq!(answered_bytes(&heard, at(50)), 480);
        assert_eq!(answered_bytes(&heard, at(100)), 480);
        assert_eq!(answered_bytes(&heard, at(500)), 0);
        assert_eq!(answered_bytes(&heard, None), 0);
        assert_eq!(evaluate_call(true, Err("refused")).status, Status::Fail);
    }
}
