//! Configuration: environment variables, optionally from a `.env` file in the working directory
//! (the real environment wins). Parsed once into typed fields; a bad value names its variable.
//!
//! Reading the process environment and the file happens in `main`; everything here is pure.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::twilio::signature::{AuthToken, SigningKeys};

/// Default HTTP port.
pub const DEFAULT_PORT: u16 = 8080;
/// Default drain deadline on shutdown: a deploy must not cut a patient off mid-call.
pub const DEFAULT_DRAIN_SECONDS: u64 = 600;
/// Default cap on simultaneous connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;
/// Default time a request head (and body) may take to arrive (slowloris guard).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time an idle keep-alive connection is kept.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default ElevenLabs API origin.
pub const DEFAULT_ELEVENLABS_API_BASE: &str = "https://api.elevenlabs.io";
/// Largest `.env` file read.
pub const MAX_DOTENV_BYTES: usize = 64 * 1024;

/// Every variable ignis reads, with its meaning (printed by `--help`).
pub const VARIABLES: &[(&str, &str)] = &[
    (
        "PUBLIC_URL",
        "required; public origin Twilio calls, e.g. https://ignis.example.com",
    ),
    (
        "TWILIO_AUTH_TOKEN",
        "required; signs and verifies Twilio webhooks and the stream",
    ),
    (
        "TWILIO_AUTH_TOKEN_SECONDARY",
        "optional; also accepted during token rotation",
    ),
    (
        "TWILIO_ACCOUNT_SID",
        "optional; AC…, for REST calls (transfer to staff)",
    ),
    (
        "ELEVENLABS_AGENT_ID",
        "optional; the agent that answers calls",
    ),
    (
        "ELEVENLABS_API_KEY",
        "optional; private agents via signed URL",
    ),
    (
        "ELEVENLABS_API_BASE",
        "optional; default https://api.elevenlabs.io",
    ),
    (
        "FALLBACK_NUMBER",
        "optional; E.164 number of a human when the agent fails",
    ),
    ("PORT", "optional; default 8080"),
    ("BIND", "optional; listen address, default 0.0.0.0"),
    ("LOG_FORMAT", "optional; text (default) or json"),
    (
        "DRAIN_SECONDS",
        "optional; live calls may finish this long on shutdown, default 600",
    ),
    (
        "MAX_CONNECTIONS",
        "optional; simultaneous connections before 503, default 2048",
    ),
    (
        "HTTP_REQUEST_TIMEOUT_MS",
        "optional; request head/body deadline, default 10000",
    ),
    (
        "HTTP_IDLE_TIMEOUT_MS",
        "optional; idle keep-alive close, default 60000",
    ),
    (
        "MAX_CALLS",
        "optional; concurrent calls before new ones get the fallback, default 500",
    ),
    (
        "ELEVENLABS_CONNECT_TIMEOUT_MS",
        "optional; per agent connect step, default 5000",
    ),
    (
        "ELEVENLABS_CONVERSATION_OVERRIDE",
        "optional; JSON object sent as conversation_config_override",
    ),
    (
        "PRECONNECT_TIMEOUT_MS",
        "optional; an unadopted pre-connected agent closes after this, default 30000",
    ),
    (
        "AGENT_SILENCE_TIMEOUT_MS",
        "optional; agent socket counts as dead after this silence, default 20000",
    ),
    (
        "DTMF_MODE",
        "optional; user_message (default) or contextual_update",
    ),
    (
        "TWILIO_API_BASE",
        "optional; default https://api.twilio.com (for transfers)",
    ),
    (
        "METRICS_TOKEN",
        "optional; GET /metrics then needs Authorization: Bearer <token>",
    ),
    (
        "TOOLS_TOKEN",
        "agent secret for the practice tools (Bearer), >= 16 characters; unset: tools refuse all",
    ),
    (
        "ADMIN_TOKEN",
        "optional; staff admin API (Bearer), >= 16 characters",
    ),
    ("IGNIS_DB", "optional; SQLite file, default ./ignis.db"),
    (
        "PRACTICE_CONFIG",
        "optional; practice.toml path, default the built-in Demo Praxis",
    ),
    (
        "IGNIS_DEMO_PATIENTS",
        "optional; 1/0, seed demo patients (default on with the demo config)",
    ),
];

/// Default cap on concurrent calls.
pub const DEFAULT_MAX_CALLS: usize = 500;
/// Default Twilio REST origin.
pub const DEFAULT_TWILIO_API_BASE: &str = "https://api.twilio.com";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The public origin Twilio reaches ignis at (scheme, host and optional port; no path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    secure: bool,
    authority: String,
}

impl PublicUrl {
    /// Parses `https://host[:port]` or `http://host[:port]` (a trailing `/` is allowed).
    pub fn parse(s: &str) -> Result<PublicUrl, &'static str> {
        let (secure, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("must start with https:// (or http:// for local testing)");
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() {
            return Err("has no host");
        }
        if authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(
                "must be an origin only (scheme://host[:port]), without path or credentials",
            );
        }
        Ok(PublicUrl {
            secure,
            authority: authority.to_owned(),
        })
    }

    /// `https://host` + `target`: the URL Twilio signs for webhooks (twilio.md §4.1).
    pub fn http_url(&self, target: &str) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}{target}", self.authority)
    }

    /// `wss://host` + `target`: the Media Streams URL and its signed form (twilio.md §1.1).
    pub fn ws_url(&self, target: &str) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}{target}", self.authority)
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen port.
    pub port: u16,
    /// Listen address.
    pub bind: IpAddr,
    /// Public origin.
    pub public_url: PublicUrl,
    /// Twilio signing keys (primary and optional secondary token).
    pub twilio_keys: SigningKeys,
    /// The primary auth token (for signing REST calls and the simulated caller).
    pub twilio_auth_token: AuthToken,
    /// Twilio account SID.
    pub twilio_account_sid: Option<String>,
    /// ElevenLabs agent id.
    pub elevenlabs_agent_id: Option<String>,
    /// ElevenLabs API key (private agents).
    pub elevenlabs_api_key: Option<AuthToken>,
    /// ElevenLabs API origin.
    pub elevenlabs_api_base: String,
    /// Human fallback number (E.164).
    pub fallback_number: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Drain deadline for live calls on shutdown.
    pub drain: Duration,
    /// Connection cap.
    pub max_connections: usize,
    /// Request head/body deadline.
    pub request_timeout: Duration,
    /// Idle keep-alive timeout.
    pub idle_timeout: Duration,
    /// Skip signature checks (explicit local-testing flag only).
    pub insecure_skip_signature: bool,
    /// Cap on concurrent calls; beyond it callers get the fallback.
    pub max_calls: usize,
    /// Timeout of each agent connect step.
    pub elevenlabs_connect_timeout: Duration,
    /// `conversation_config_override` sent with the initiation data.
    pub elevenlabs_override: Option<serde_json::Value>,
    /// How long a pre-connected agent waits for its stream.
    pub preconnect_timeout: Duration,
    /// Agent silence that counts as a dead socket.
    pub agent_silence_timeout: Duration,
    /// How keypad digits reach the agent.
    pub dtmf_mode: crate::bridge::DtmfMode,
    /// Twilio REST origin.
    pub twilio_api_base: String,
    /// Bearer token protecting `/metrics` (open when unset).
    pub metrics_token: Option<AuthToken>,
    /// Extra PEM roots for outbound TLS (agent, signed URL, Twilio REST).
    pub extra_ca_file: Option<std::path::PathBuf>,
}

/// A configuration problem, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable (or `.env` line) at fault.
    pub variable: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn err(variable: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: variable.to_owned(),
        reason: reason.into(),
    }
}

/// Parses a `.env` file: `KEY=VALUE` lines, `#` comments, optional `export ` prefix, values
/// optionally in single or double quotes.
pub fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(&format!(".env line {}", i + 1), "expected KEY=VALUE"));
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(err(
                &format!(".env line {}", i + 1),
                "invalid variable name",
            ));
        }
        let value = value.trim();
        let value = match value.as_bytes() {
            [q @ (b'"' | b'\''), .., last] if last == q && value.len() >= 2 => {
                &value[1..value.len() - 1]
            }
            _ => value.split(" #").next().unwrap_or(value).trim_end(),
        };
        out.push((key.to_owned(), value.to_owned()));
    }
    Ok(out)
}

/// Merges `.env` pairs under the real environment (which wins).
pub fn merge(
    env: HashMap<String, String>,
    dotenv: Vec<(String, String)>,
) -> HashMap<String, String> {
    let mut merged: HashMap<String, String> = dotenv.into_iter().collect();
    merged.extend(env);
    merged
}

impl Config {
    /// Builds the configuration from variables. Empty values count as unset.
    pub fn from_vars(
        vars: &HashMap<String, String>,
        insecure_skip_signature: bool,
    ) -> Result<Config, ConfigError> {
        let get = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let required = |k: &str| get(k).ok_or_else(|| err(k, "is required but not set"));
        let number = |k: &str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| err(k, format!("must be a whole number from {min} to {max}"))),
            }
        };

        let public_url = PublicUrl::parse(required("PUBLIC_URL")?)
            .map_err(|reason| err("PUBLIC_URL", reason))?;
        let token = AuthToken::new(required("TWILIO_AUTH_TOKEN")?);
        let secondary = get("TWILIO_AUTH_TOKEN_SECONDARY").map(AuthToken::new);
        let account_sid = get("TWILIO_ACCOUNT_SID").map(str::to_owned);
        if let Some(sid) = &account_sid
            && !(sid.starts_with("AC")
                && sid.len() == 34
                && sid.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(err(
                "TWILIO_ACCOUNT_SID",
                "must be AC followed by 32 characters",
            ));
        }
        let api_base = get("ELEVENLABS_API_BASE").unwrap_or(DEFAULT_ELEVENLABS_API_BASE);
        if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
            return Err(err(
                "ELEVENLABS_API_BASE",
                "must start with https:// or http://",
            ));
        }
        let fallback_number = get("FALLBACK_NUMBER").map(str::to_owned);
        if let Some(n) = &fallback_number {
            let digits = n.strip_prefix('+').unwrap_or("");
            if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(
                    "FALLBACK_NUMBER",
                    "must be an E.164 number such as +493012345678",
                ));
            }
        }
        let log_format = match get("LOG_FORMAT") {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(err("LOG_FORMAT", "must be text or json")),
        };
        let bind = match get("BIND") {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(v) => v
                .parse()
                .map_err(|_| err("BIND", "must be an IP address such as 0.0.0.0 or ::"))?,
        };
        let ms = |k: &str, default: Duration| -> Result<Duration, ConfigError> {
            number(k, default.as_millis() as u64, 1, 86_400_000).map(Duration::from_millis)
        };
        Ok(Config {
            port: number("PORT", u64::from(DEFAULT_PORT), 0, 65_535)? as u16,
            bind,
            public_url,
            twilio_keys: SigningKeys::new(token.clone(), secondary),
            twilio_auth_token: token,
            twilio_account_sid: account_sid,
            elevenlabs_agent_id: get("ELEVENLABS_AGENT_ID").map(str::to_owned),
            elevenlabs_api_key: get("ELEVENLABS_API_KEY").map(AuthToken::new),
            elevenlabs_api_base: api_base.trim_end_matches('/').to_owned(),
            fallback_number,
            log_format,
            drain: Duration::from_secs(number("DRAIN_SECONDS", DEFAULT_DRAIN_SECONDS, 0, 86_400)?),
            max_connections: number(
                "MAX_CONNECTIONS",
                DEFAULT_MAX_CONNECTIONS as u64,
                1,
                1_000_000,
            )? as usize,
            request_timeout: ms("HTTP_REQUEST_TIMEOUT_MS", DEFAULT_REQUEST_TIMEOUT)?,
            idle_timeout: ms("HTTP_IDLE_TIMEOUT_MS", DEFAULT_IDLE_TIMEOUT)?,
            insecure_skip_signature,
            max_calls: number("MAX_CALLS", DEFAULT_MAX_CALLS as u64, 1, 1_000_000)? as usize,
            elevenlabs_connect_timeout: ms(
                "ELEVENLABS_CONNECT_TIMEOUT_MS",
                Duration::from_secs(5),
            )?,
            elevenlabs_override: match get("ELEVENLABS_CONVERSATION_OVERRIDE") {
                None => None,
                Some(v) => match serde_json::from_str::<serde_json::Value>(v) {
                    Ok(o @ serde_json::Value::Object(_)) => Some(o),
                    _ => {
                        return Err(err(
                            "ELEVENLABS_CONVERSATION_OVERRIDE",
                            "must be a JSON object",
                        ));
                    }
                },
            },
            preconnect_timeout: ms("PRECONNECT_TIMEOUT_MS", Duration::from_secs(30))?,
            agent_silence_timeout: ms("AGENT_SILENCE_TIMEOUT_MS", Duration::from_secs(20))?,
            dtmf_mode: match get("DTMF_MODE") {
                None | Some("user_message") => crate::bridge::DtmfMode::UserMessage,
                Some("contextual_update") => crate::bridge::DtmfMode::ContextualUpdate,
                Some(_) => {
                    return Err(err(
                        "DTMF_MODE",
                        "must be user_message or contextual_update",
                    ));
                }
            },
            twilio_api_base: {
                let b = get("TWILIO_API_BASE").unwrap_or(DEFAULT_TWILIO_API_BASE);
                if !(b.starts_with("https://") || b.starts_with("http://")) {
                    return Err(err(
                        "TWILIO_API_BASE",
                        "must start with https:// or http://",
                    ));
                }
                b.trim_end_matches('/').to_owned()
            },
            metrics_token: get("METRICS_TOKEN").map(AuthToken::new),
            extra_ca_file: get("EXTRA_CA_FILE").map(std::path::PathBuf::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const MIN: &[(&str, &str)] = &[
        ("PUBLIC_URL", "https://ignis.example.com"),
        ("TWILIO_AUTH_TOKEN", "tok"),
    ];

    #[test]
    fn minimal_config_has_defaults() {
        let c = Config::from_vars(&vars(MIN), false).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.drain, Duration::from_secs(600));
        assert_eq!(
            c.public_url.ws_url("/api/twilio/stream"),
            "wss://ignis.example.com/api/twilio/stream"
        );
        assert_eq!(
            c.public_url.http_url("/x?y"),
            "https://ignis.example.com/x?y"
        );
        assert_eq!(c.elevenlabs_api_base, "https://api.elevenlabs.io");
        assert!(!format!("{c:?}").contains("tok\""));
    }

    #[test]
    fn errors_name_the_variable() {
        let e = Config::from_vars(&vars(&[("TWILIO_AUTH_TOKEN", "t")]), false).unwrap_err();
        assert_eq!(e.variable, "PUBLIC_URL");
        let mut v = vars(MIN);
        v.insert("PORT".into(), "70000".into());
        assert_eq!(Config::from_vars(&v, false).unwrap_err().variable, "PORT");
        let mut v = vars(MIN);
        v.insert("PUBLIC_URL".into(), "https://h/path".into());
        assert_eq!(
            Config::from_vars(&v, false).unwrap_err().variable,
            "PUBLIC_URL"
        );
        let mut v = vars(MIN);
        v.insert("FALLBACK_NUMBER".into(), "030 123".into());
        assert_eq!(
            Config::from_vars(&v, false).unwrap_err().variable,
            "FALLBACK_NUMBER"
        );
        let mut v = vars(MIN);
        v.insert("LOG_FORMAT".into(), "xml".into());
        assert_eq!(
            Config::from_vars(&v, false).unwrap_err().variable,
            "LOG_FORMAT"
        );
    }

    #[test]
    fn dotenv_parsing_and_precedence() {
        let parsed = parse_dotenv(
            "# comment\nexport PUBLIC_URL=\"https://a.example\"\nPORT=9000 # trailing\n\nX='q'\n",
        )
        .unwrap();
        assert_eq!(
            parsed,
            vec![
                ("PUBLIC_URL".into(), "https://a.example".into()),
                ("PORT".into(), "9000".into()),
                ("X".into(), "q".into())
            ]
        );
        let merged = merge(vars(&[("PORT", "1234")]), parsed);
        assert_eq!(merged["PORT"], "1234");
        assert_eq!(merged["PUBLIC_URL"], "https://a.example");
        assert_eq!(parse_dotenv("oops").unwrap_err().variable, ".env line 1");
    }
}
