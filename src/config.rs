//! Configuration: environment variables, optionally from a `.env` file in the working directory
//! (the real environment wins). Parsed once, by [`Config::from_vars`], into typed fields; a bad
//! value names its variable. The practice's variables are part of the same parse
//! ([`PracticeVars`]).
//!
//! [`VARIABLES`] is the one list of variables, their defaults and meanings: `--help` prints it and
//! the README's table is checked against it. Every default is a named constant below.
//!
//! Reading the process environment and the file happens in [`crate::driver::startup`];
//! everything here is pure.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::audio::pipeline::AudioStages;
use crate::bridge::DtmfMode;
use crate::elevenlabs::session::DEFAULT_SILENCE_TIMEOUT;
use crate::practice::{MIN_SECRET_LEN, PracticeError};
use crate::secret::token_strength;
use crate::twilio::signature::{AuthToken, SigningKeys};

/// Default HTTP port.
pub const DEFAULT_PORT: u16 = 8080;
/// Default listen address: every IPv4 interface.
pub const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
/// Default log format.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;
/// Default log filter when `RUST_LOG` is unset.
pub const DEFAULT_LOG_FILTER: &str = "info";
/// Default drain deadline on shutdown: a deploy must not cut a patient off mid-call.
pub const DEFAULT_DRAIN_SECONDS: u64 = 600;
/// Default cap on simultaneous connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;
/// Default time a request head (and body) may take to arrive (slowloris guard).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time an idle keep-alive connection is kept.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default cap on concurrent calls.
pub const DEFAULT_MAX_CALLS: usize = 500;
/// Longest `REPLICA_ID` (it is a URL path segment and a metric label).
pub const MAX_REPLICA_ID_LEN: usize = 32;
/// Default ElevenLabs API origin.
pub const DEFAULT_ELEVENLABS_API_BASE: &str = "https://api.elevenlabs.io";
/// Default limit of each agent connect step (signed URL, TCP+TLS, WebSocket handshake).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a pre-connected agent waits for its stream.
pub const DEFAULT_PRECONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default DTMF delivery: menus such as "press 1 for …" need a reply.
pub const DEFAULT_DTMF_MODE: DtmfMode = DtmfMode::UserMessage;
/// Default place of the per-call DSP: inline until the load figures say otherwise (issue 16).
pub const DEFAULT_AUDIO_STAGES: AudioStages = AudioStages::Inline;
/// Default Twilio REST origin.
pub const DEFAULT_TWILIO_API_BASE: &str = "https://api.twilio.com";
/// Default Twilio Monitor (alerts) origin.
pub const DEFAULT_TWILIO_MONITOR_API_BASE: &str = "https://monitor.twilio.com";
/// Default days ElevenLabs keeps a conversation's transcript and audio (`agent sync`): long
/// enough to look into a complaint about a call, finite as GDPR's storage limitation asks.
pub const DEFAULT_ELEVENLABS_RETENTION_DAYS: u32 = 30;
/// Longest accepted `ELEVENLABS_RETENTION_DAYS` (ten years; unlimited is not offered).
pub const MAX_ELEVENLABS_RETENTION_DAYS: u32 = 3650;
/// Default SQLite file of the practice.
pub const DEFAULT_DB_PATH: &str = "./ignis.db";
/// Largest `.env` file read.
pub const MAX_DOTENV_BYTES: usize = 64 * 1024;
/// Largest accepted millisecond value (one day).
const MAX_MILLIS: u64 = 86_400_000;
/// Largest accepted connection or call cap.
const MAX_CAP: u64 = 1_000_000;

/// What a variable means when it is unset (rendered in `--help` and the README).
#[derive(Debug, Clone, Copy)]
pub enum Unset {
    /// Start-up stops.
    Required,
    /// Nothing: the feature it enables is off.
    Off,
    /// This number.
    Number(u64),
    /// This duration, written in milliseconds.
    Millis(Duration),
    /// This address.
    Addr(IpAddr),
    /// This value or description.
    Text(&'static str),
}

impl fmt::Display for Unset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unset::Required => f.write_str("required"),
            Unset::Off => f.write_str("-"),
            Unset::Number(n) => write!(f, "{n}"),
            Unset::Millis(d) => write!(f, "{}", d.as_millis()),
            Unset::Addr(a) => write!(f, "{a}"),
            Unset::Text(t) => f.write_str(t),
        }
    }
}

/// One environment variable ignis reads.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    /// Its name.
    pub name: &'static str,
    /// Its value when unset.
    pub unset: Unset,
    /// What it does (one line).
    pub meaning: &'static str,
}

const fn var(name: &'static str, unset: Unset, meaning: &'static str) -> Variable {
    Variable {
        name,
        unset,
        meaning,
    }
}

/// Every variable ignis reads: the table `--help` prints and the README repeats.
pub const VARIABLES: &[Variable] = &[
    var(
        "PUBLIC_URL",
        Unset::Required,
        "Public origin Twilio calls, e.g. https://ignis.example.com (scheme, host and port, no \
         path). Signatures are checked against it, never against the Host header.",
    ),
    var(
        "TWILIO_AUTH_TOKEN",
        Unset::Required,
        "Account auth token. It verifies X-Twilio-Signature on every webhook and on the stream \
         handshake.",
    ),
    var(
        "TWILIO_AUTH_TOKEN_SECONDARY",
        Unset::Off,
        "Also accepted while you rotate tokens.",
    ),
    var(
        "TWILIO_ACCOUNT_SID",
        Unset::Off,
        "AC…, for REST calls (transfer to staff, twilio configure, doctor).",
    ),
    var(
        "TWILIO_API_KEY_SID",
        Unset::Off,
        "SK…: with TWILIO_API_KEY_SECRET, the REST credentials (Twilio's recommendation); else \
         the account SID and auth token are used.",
    ),
    var("TWILIO_API_KEY_SECRET", Unset::Off, "The API key's secret."),
    var(
        "TWILIO_PHONE_NUMBER",
        Unset::Off,
        "The practice's Twilio number (E.164) that twilio configure sets up and doctor checks.",
    ),
    var(
        "TWILIO_VOICE_FALLBACK_URL",
        Unset::Off,
        "https URL twilio configure sets as the number's VoiceFallbackUrl: the TwiML Twilio \
         fetches when ignis cannot be reached (e.g. a TwiML Bin that dials the practice).",
    ),
    var("ELEVENLABS_AGENT_ID", Unset::Off, "The agent that answers."),
    var(
        "ELEVENLABS_API_KEY",
        Unset::Off,
        "Private agents, through a signed URL. Recommended: anyone with a public agent's id can \
         start conversations billed to the practice.",
    ),
    var(
        "ELEVENLABS_API_BASE",
        Unset::Text(DEFAULT_ELEVENLABS_API_BASE),
        "ElevenLabs API origin: https://api.eu.residency.elevenlabs.io for EU data residency; \
         http:// only on loopback (tests).",
    ),
    var(
        "FALLBACK_NUMBER",
        Unset::Off,
        "E.164 number of a person at the practice. If the agent fails, the caller is dialled \
         through to it instead of hearing dead air.",
    ),
    var("PORT", Unset::Number(DEFAULT_PORT as u64), "Listen port."),
    var(
        "BIND",
        Unset::Addr(DEFAULT_BIND),
        "Listen address (IPv4 or IPv6).",
    ),
    var(
        "LOG_FORMAT",
        Unset::Text(DEFAULT_LOG_FORMAT.as_str()),
        "text, or json for one JSON object per line.",
    ),
    var(
        "RUST_LOG",
        Unset::Text(DEFAULT_LOG_FILTER),
        "Log level or filter, e.g. debug or info,ignis::practice=debug.",
    ),
    var(
        "DRAIN_SECONDS",
        Unset::Number(DEFAULT_DRAIN_SECONDS),
        "On SIGTERM, live calls may run this long before they are closed.",
    ),
    var(
        "MAX_CONNECTIONS",
        Unset::Number(DEFAULT_MAX_CONNECTIONS as u64),
        "Above this many connections, new ones get 503.",
    ),
    var(
        "HTTP_REQUEST_TIMEOUT_MS",
        Unset::Millis(DEFAULT_REQUEST_TIMEOUT),
        "A request head and its body must arrive within this time, or the client gets 408.",
    ),
    var(
        "HTTP_IDLE_TIMEOUT_MS",
        Unset::Millis(DEFAULT_IDLE_TIMEOUT),
        "Idle keep-alive connections are closed after this time.",
    ),
    var(
        "MAX_CALLS",
        Unset::Number(DEFAULT_MAX_CALLS as u64),
        "Above this many concurrent calls, new callers get the fallback (a person or the \
         apology) instead of an overloaded bridge.",
    ),
    var(
        "ELEVENLABS_CONNECT_TIMEOUT_MS",
        Unset::Millis(DEFAULT_CONNECT_TIMEOUT),
        "Limit for each agent connect step: signed URL, TCP+TLS, WebSocket handshake.",
    ),
    var(
        "ELEVENLABS_CONVERSATION_OVERRIDE",
        Unset::Off,
        "JSON object sent as conversation_config_override. Enable each overridden field in the \
         agent's security settings first. An `agent.first_message` must say the caller speaks \
         with an AI (\"KI\").",
    ),
    var(
        "PRECONNECT_TIMEOUT_MS",
        Unset::Millis(DEFAULT_PRECONNECT_TIMEOUT),
        "The voice webhook connects the agent ahead of the stream. If no stream adopts it within \
         this time, it is closed.",
    ),
    var(
        "AGENT_SILENCE_TIMEOUT_MS",
        Unset::Millis(DEFAULT_SILENCE_TIMEOUT),
        "After this long without any message, the agent socket counts as dead and the caller \
         goes to the fallback.",
    ),
    var(
        "DTMF_MODE",
        Unset::Text(dtmf_name(DEFAULT_DTMF_MODE)),
        "How keypad digits reach the agent: user_message (the agent answers, as menus need) or \
         contextual_update (background only).",
    ),
    var(
        "AUDIO_STAGES",
        Unset::Text(DEFAULT_AUDIO_STAGES.name()),
        "Where calls' audio DSP runs: inline (in each call's task) or pipeline (a shared pool \
         of DSP threads, one per core; pacing stays in the call).",
    ),
    var(
        "TWILIO_API_BASE",
        Unset::Text(DEFAULT_TWILIO_API_BASE),
        "Twilio REST origin (http:// only on loopback, for tests).",
    ),
    var(
        "TWILIO_MONITOR_API_BASE",
        Unset::Text(DEFAULT_TWILIO_MONITOR_API_BASE),
        "Twilio Monitor origin, where doctor reads the alerts (http:// only on loopback).",
    ),
    var(
        "ELEVENLABS_RETENTION_DAYS",
        Unset::Number(DEFAULT_ELEVENLABS_RETENTION_DAYS as u64),
        "Days ElevenLabs keeps each conversation (agent sync), 1 to 3650.",
    ),
    var(
        "ELEVENLABS_RECORD_VOICE",
        Unset::Text("0"),
        "1 lets agent sync turn on the agent's voice recording: only with the callers' consent \
         (§ 201 StGB).",
    ),
    var(
        "METRICS_TOKEN",
        Unset::Off,
        "If set, GET /metrics needs Authorization: Bearer with this token.",
    ),
    var(
        "EXTRA_CA_FILE",
        Unset::Off,
        "PEM certificates trusted besides Mozilla's roots for outbound TLS (agent, signed URL, \
         Twilio REST), e.g. behind a TLS-inspecting proxy. A file that cannot be used stops \
         start-up.",
    ),
    var(
        "TOOLS_TOKEN",
        Unset::Text("random"),
        "The agent secret for the practice tools (Bearer, at least 16 characters). When unset, a \
         random one is used and every tool request is refused.",
    ),
    var(
        "ADMIN_TOKEN",
        Unset::Off,
        "Staff admin API (/api/admin/…) Bearer token worth 32 random bytes (64 hex or 43+ base64 \
         characters, not repetitive; openssl rand -base64 32). A weak one stops start-up. Without \
         it the admin API is disabled.",
    ),
    var(
        "IGNIS_DB",
        Unset::Text(DEFAULT_DB_PATH),
        "The SQLite store (WAL, synchronous=FULL); unused when DATABASE_URL is set.",
    ),
    var(
        "DATABASE_URL",
        Unset::Text("embedded SQLite (IGNIS_DB), one replica"),
        "postgres://user:password@host:5432/db: the practice store and the call coordination \
         on PostgreSQL, so several replicas can run behind a load balancer (no TLS: use a \
         private network).",
    ),
    var(
        "REPLICA_ID",
        Unset::Text("<hostname>-<4 random hex>"),
        "This replica's name in logs, metrics and per-call URLs (a-z, 0-9, -; at most 32), \
         which the load balancer routes on (deploy/replicas).",
    ),
    var(
        "PRACTICE_CONFIG",
        Unset::Text("built-in Demo Praxis"),
        "Path to a practice.toml. Errors at start-up name the line.",
    ),
    var(
        "IDENTIFICATION_FAILURES_PER_HOUR",
        Unset::Text("30"),
        "Failed patient identifications per hour over all callers (1 to 10000); beyond it \
         identification pauses for everyone, with a metric and a warning.",
    ),
    var(
        "PREMIUM_RATE_PREFIXES",
        Unset::Text("premium-rate ranges"),
        "Comma-separated call-back prefixes the practice tools refuse (premium-rate, shared-cost). \
         Default: 0900,0137,0138,+49900,+49137,+49138,+881,+882,+883,+808,+979.",
    ),
    var(
        "IGNIS_DEMO_PATIENTS",
        Unset::Text("on with the demo config"),
        "1/0: seed the demo patients into an empty database.",
    ),
];

/// Largest accepted `IDENTIFICATION_FAILURES_PER_HOUR`.
pub const MAX_IDENTIFICATION_BUDGET: u32 = 10_000;

/// Width of the name column in [`environment_help`].
const HELP_NAME_WIDTH: usize = 33;
/// Width of the default column in [`environment_help`].
const HELP_DEFAULT_WIDTH: usize = 26;

/// The `ENVIRONMENT` section of `--help`: one line per variable (name, default, meaning), the
/// last section of the help so that tools can read it line by line.
pub fn environment_help() -> String {
    let mut s = String::from("ENVIRONMENT (also read from ./.env; the real environment wins):\n");
    for v in VARIABLES {
        let unset = v.unset.to_string();
        s.push_str(&format!(
            "  {:<HELP_NAME_WIDTH$} {unset:<HELP_DEFAULT_WIDTH$} {}\n",
            v.name, v.meaning
        ));
    }
    s
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The value `LOG_FORMAT` takes for this format.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// The value `DTMF_MODE` takes for `mode`.
pub const fn dtmf_name(mode: DtmfMode) -> &'static str {
    match mode {
        DtmfMode::UserMessage => "user_message",
        DtmfMode::ContextualUpdate => "contextual_update",
    }
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

    /// `https://host` + `target`: the URL Twilio signs for webhooks (docs/twilio.md §4.1).
    pub fn http_url(&self, target: &str) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}{target}", self.authority)
    }

    /// The origin as a browser serialises it in `Origin` (RFC 6454 §6.2): `scheme://host`, with
    /// the port only when it is not the scheme's default. PUBLIC_URL may name `:443`; a
    /// browser's `Origin` never does, and the staff page's POSTs are checked against this.
    pub fn origin(&self) -> String {
        let default = if self.secure { ":443" } else { ":80" };
        let authority = self
            .authority
            .strip_suffix(default)
            .unwrap_or(&self.authority);
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{authority}")
    }

    /// `wss://host` + `target`: the Media Streams URL and its signed form (docs/twilio.md §1.1).
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
    /// `RUST_LOG` (from the environment or `.env`), checked to parse as a log filter; `None`:
    /// [`DEFAULT_LOG_FILTER`].
    pub log_filter: Option<String>,
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
    /// Where calls' audio DSP runs.
    pub audio_stages: AudioStages,
    /// Twilio REST origin.
    pub twilio_api_base: String,
    /// Twilio Monitor origin.
    pub twilio_monitor_api_base: String,
    /// REST API key (`SK…`, secret), preferred over the auth token for REST calls.
    pub twilio_api_key: Option<(String, AuthToken)>,
    /// The practice's Twilio number (E.164).
    pub twilio_phone_number: Option<String>,
    /// The number's `VoiceFallbackUrl` to set.
    pub twilio_voice_fallback_url: Option<String>,
    /// Days ElevenLabs keeps a conversation.
    pub elevenlabs_retention_days: u32,
    /// Whether `agent sync` turns on voice recording (operator's explicit opt-in).
    pub elevenlabs_record_voice: bool,
    /// Bearer token protecting `/metrics` (open when unset).
    pub metrics_token: Option<AuthToken>,
    /// Extra PEM roots for outbound TLS (agent, signed URL, Twilio REST).
    pub extra_ca_file: Option<PathBuf>,
    /// This replica's name (`REPLICA_ID`); None = the driver picks `<hostname>-<random>`.
    pub replica_id: Option<String>,
    /// The practice's variables.
    pub practice: PracticeVars,
}

/// The practice's variables (`TOOLS_TOKEN`, `ADMIN_TOKEN`, `IGNIS_DB`, `PRACTICE_CONFIG`,
/// `IGNIS_DEMO_PATIENTS`), parsed with the rest; `PracticeSettings::new` turns them into the
/// practice's start-up settings.
#[derive(Debug, Clone)]
pub struct PracticeVars {
    /// SQLite file.
    pub db_path: PathBuf,
    /// PostgreSQL (`DATABASE_URL`); when set it replaces the SQLite file.
    pub database_url: Option<crate::pg::DatabaseUrl>,
    /// `practice.toml` path; None = the shipped Demo Praxis.
    pub config_path: Option<PathBuf>,
    /// Agent secret; None = unset (the driver then uses a random one, so tools refuse all).
    pub tools_token: Option<AuthToken>,
    /// Staff secret; None = the admin API is disabled.
    pub admin_token: Option<AuthToken>,
    /// Seed demo patients into an empty database.
    pub demo_patients: bool,
    /// Refused call-back prefixes, normalised; None = the defaults.
    pub premium_rate_prefixes: Option<Vec<String>>,
    /// The hourly budget of failed identifications; None = the default.
    pub identification_failures_per_hour: Option<u32>,
}

impl PracticeVars {
    /// Parses the practice's variables through `get`. Empty values count as unset; a secret
    /// shorter than [`MIN_SECRET_LEN`], or an `ADMIN_TOKEN` that fails [`token_strength`], is
    /// refused, naming its variable.
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<PracticeVars, PracticeError> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let secret = |k: &'static str| match get(k) {
            Some(t) if t.len() < MIN_SECRET_LEN => Err(PracticeError::Secret(k)),
            t => Ok(t.map(AuthToken::new)),
        };
        // The admin token unlocks every patient's data from wherever the admin API is reachable:
        // it must be worth 32 random bytes (issue 12). The tools token also needs the call's own
        // token, so its length rule stays.
        let admin_token = secret("ADMIN_TOKEN")?;
        if let Some(t) = &admin_token {
            token_strength(t.expose())
                .map_err(|why| PracticeError::WeakSecret("ADMIN_TOKEN", why))?;
        }
        let config_path = get("PRACTICE_CONFIG").map(PathBuf::from);
        Ok(PracticeVars {
            tools_token: secret("TOOLS_TOKEN")?,
            admin_token,
            demo_patients: match get("IGNIS_DEMO_PATIENTS").as_deref() {
                Some("1") | Some("true") => true,
                Some("0") | Some("false") => false,
                _ => config_path.is_none(),
            },
            db_path: PathBuf::from(get("IGNIS_DB").as_deref().unwrap_or(DEFAULT_DB_PATH)),
            database_url: match get("DATABASE_URL") {
                None => None,
                Some(t) => Some(
                    crate::pg::DatabaseUrl::parse(&t)
                        .map_err(|_| PracticeError::Invalid("DATABASE_URL"))?,
                ),
            },
            config_path,
            identification_failures_per_hour: match get("IDENTIFICATION_FAILURES_PER_HOUR") {
                None => None,
                Some(t) => Some(
                    t.parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_IDENTIFICATION_BUDGET).contains(n))
                        .ok_or(PracticeError::Invalid("IDENTIFICATION_FAILURES_PER_HOUR"))?,
                ),
            },
            premium_rate_prefixes: match get("PREMIUM_RATE_PREFIXES") {
                None => None,
                Some(t) => Some(
                    crate::practice::premium::parse_prefixes(&t)
                        .ok_or(PracticeError::Invalid("PREMIUM_RATE_PREFIXES"))?,
                ),
            },
        })
    }
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

/// Whether `n` is an E.164 number: `+` and 8 to 15 digits.
pub fn is_e164(n: &str) -> bool {
    let digits = n.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `host` (as in a URL, brackets removed) is this machine: `localhost`, 127.0.0.0/8, ::1.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Typed reads of the merged variables; every error names its variable.
struct Vars<'a>(&'a HashMap<String, String>);

impl<'a> Vars<'a> {
    /// The trimmed value; empty values count as unset.
    fn get(&self, k: &str) -> Option<&'a str> {
        self.0.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn required(&self, k: &str) -> Result<&'a str, ConfigError> {
        self.get(k).ok_or_else(|| err(k, "is required but not set"))
    }

    fn number(&self, k: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| err(k, format!("must be a whole number from {min} to {max}"))),
        }
    }

    fn millis(&self, k: &str, default: Duration) -> Result<Duration, ConfigError> {
        self.number(k, default.as_millis() as u64, 1, MAX_MILLIS)
            .map(Duration::from_millis)
    }

    /// An `https://` origin (or `http://` on a loopback host, for the stand-ins in tests)
    /// without its trailing `/`. Plain HTTP elsewhere would send API keys in the clear.
    fn origin(&self, k: &str, default: &str) -> Result<String, ConfigError> {
        let v = self.get(k).unwrap_or(default);
        let ep = crate::http::url::Endpoint::parse(v)
            .ok()
            .filter(|_| v.starts_with("https://") || v.starts_with("http://"))
            .ok_or_else(|| err(k, "must be an https:// origin"))?;
        if !ep.tls && !is_loopback_host(&ep.host) {
            return Err(err(
                k,
                "must be https:// (plain http:// only on a loopback address)",
            ));
        }
        Ok(v.trim_end_matches('/').to_owned())
    }

    /// An optional E.164 number.
    fn e164(&self, k: &str) -> Result<Option<String>, ConfigError> {
        let n = self.get(k);
        if let Some(n) = n
            && !is_e164(n)
        {
            return Err(err(k, "must be an E.164 number such as +493012345678"));
        }
        Ok(n.map(str::to_owned))
    }

    /// An optional absolute `https://` URL.
    fn https_url(&self, k: &str) -> Result<Option<String>, ConfigError> {
        let u = self.get(k);
        if let Some(u) = u
            && !(u.starts_with("https://") && crate::http::url::Endpoint::parse(u).is_ok())
        {
            return Err(err(k, "must be an https:// URL"));
        }
        Ok(u.map(str::to_owned))
    }

    /// `TWILIO_API_KEY_SID` and `TWILIO_API_KEY_SECRET`: both or neither.
    fn api_key(&self) -> Result<Option<(String, AuthToken)>, ConfigError> {
        match (
            self.get("TWILIO_API_KEY_SID"),
            self.get("TWILIO_API_KEY_SECRET"),
        ) {
            (None, None) => Ok(None),
            (Some(sid), Some(secret)) => {
                if !(sid.starts_with("SK")
                    && sid.len() == 34
                    && sid.bytes().all(|b| b.is_ascii_alphanumeric()))
                {
                    return Err(err(
                        "TWILIO_API_KEY_SID",
                        "must be SK followed by 32 characters",
                    ));
                }
                Ok(Some((sid.to_owned(), AuthToken::new(secret))))
            }
            (Some(_), None) => Err(err(
                "TWILIO_API_KEY_SECRET",
                "is required with TWILIO_API_KEY_SID",
            )),
            (None, Some(_)) => Err(err(
                "TWILIO_API_KEY_SID",
                "is required with TWILIO_API_KEY_SECRET",
            )),
        }
    }

    /// One of `choices` (value, meaning); unset gives `default`.
    fn choice<T: Copy>(
        &self,
        k: &str,
        default: T,
        choices: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let Some(v) = self.get(k) else {
            return Ok(default);
        };
        choices
            .iter()
            .find(|(name, _)| *name == v)
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                err(k, format!("must be {}", names.join(" or ")))
            })
    }

    fn account_sid(&self) -> Result<Option<String>, ConfigError> {
        let sid = self.get("TWILIO_ACCOUNT_SID");
        if let Some(sid) = sid
            && !(sid.starts_with("AC")
                && sid.len() == 34
                && sid.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(err(
                "TWILIO_ACCOUNT_SID",
                "must be AC followed by 32 characters",
            ));
        }
        Ok(sid.map(str::to_owned))
    }

    fn fallback_number(&self) -> Result<Option<String>, ConfigError> {
        self.e164("FALLBACK_NUMBER")
    }

    fn bind(&self) -> Result<IpAddr, ConfigError> {
        match self.get("BIND") {
            None => Ok(DEFAULT_BIND),
            Some(v) => v
                .parse()
                .map_err(|_| err("BIND", "must be an IP address such as 0.0.0.0 or ::")),
        }
    }

    fn conversation_override(&self) -> Result<Option<serde_json::Value>, ConfigError> {
        let k = "ELEVENLABS_CONVERSATION_OVERRIDE";
        match self.get(k).map(serde_json::from_str::<serde_json::Value>) {
            None => Ok(None),
            // The override replaces the agent's greeting for every call; one that does not say
            // the caller speaks with an AI breaks the rule `agent sync` and `doctor` keep
            // (docs/elevenlabs.md §12, EU AI Act Art. 50).
            Some(Ok(o))
                if o["agent"].get("first_message").is_some_and(|g| {
                    !g.as_str().is_some_and(crate::setup::agent::discloses_ai)
                }) =>
            {
                Err(err(
                    k,
                    "agent.first_message must tell callers they speak with an AI (\"KI\" or \
                     \"künstliche Intelligenz\"; EU AI Act Art. 50)",
                ))
            }
            Some(Ok(o @ serde_json::Value::Object(_))) => Ok(Some(o)),
            Some(_) => Err(err(k, "must be a JSON object")),
        }
    }

    /// `REPLICA_ID`: a DNS-label-like name, since it is a URL path segment and a metric label.
    fn replica_id(&self) -> Result<Option<String>, ConfigError> {
        let Some(id) = self.get("REPLICA_ID") else {
            return Ok(None);
        };
        let ok = (1..=MAX_REPLICA_ID_LEN).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(err(
                "REPLICA_ID",
                format!("must be 1 to {MAX_REPLICA_ID_LEN} characters of a-z, 0-9 and -"),
            ));
        }
        Ok(Some(id.to_owned()))
    }

    fn practice(&self) -> Result<PracticeVars, ConfigError> {
        PracticeVars::parse(|k| self.get(k).map(str::to_owned)).map_err(|e| match e {
            PracticeError::Secret(k) => {
                err(k, format!("must be at least {MIN_SECRET_LEN} characters"))
            }
            PracticeError::WeakSecret(k, why) => err(k, why.to_string()),
            PracticeError::Invalid(k @ "IDENTIFICATION_FAILURES_PER_HOUR") => err(
                k,
                format!("must be a number from 1 to {MAX_IDENTIFICATION_BUDGET}"),
            ),
            PracticeError::Invalid(k @ "DATABASE_URL") => err(
                k,
                self.get(k)
                    .map(crate::pg::DatabaseUrl::parse)
                    .and_then(Result::err)
                    .map_or_else(
                        || "is malformed".to_owned(),
                        // The variable is named once, by `err`.
                        |e| match e {
                            crate::pg::PgError::BadUrl(why) => why.to_string(),
                            other => other.to_string(),
                        },
                    ),
            ),
            PracticeError::Invalid(k) => err(
                k,
                "must be comma-separated prefixes of + and digits (at most 64)",
            ),
            other => err("practice", other.to_string()),
        })
    }
}

/// Whether `filter` parses as a log filter and every bare word in it is a level or ignis: the
/// filter syntax reads a misspelt level ("debgu") as a target to show alone, which would hide
/// every log line, errors included. Other crates are named with a level (`tokio=debug`).
fn log_filter_is_meant(filter: &str) -> bool {
    use tracing_subscriber::filter::LevelFilter;
    // Exact, untrimmed: the filter matches targets case-sensitively and reads "debug " as a
    // target, not a level; levels themselves are read in any case, and as 0-5.
    tracing_subscriber::EnvFilter::try_new(filter).is_ok()
        && filter
            .split(',')
            .filter(|d| !d.is_empty() && !d.contains(['=', '[', ':']))
            .all(|d| d == "ignis" || d.parse::<LevelFilter>().is_ok())
}

impl Config {
    /// Builds the configuration from the merged variables (see [`merge`]): the one parse of
    /// every variable in [`VARIABLES`]. Empty values count as unset.
    pub fn from_vars(
        vars: &HashMap<String, String>,
        insecure_skip_signature: bool,
    ) -> Result<Config, ConfigError> {
        let v = Vars(vars);
        let public_url = PublicUrl::parse(v.required("PUBLIC_URL")?)
            .map_err(|reason| err("PUBLIC_URL", reason))?;
        let token = AuthToken::new(v.required("TWILIO_AUTH_TOKEN")?);
        let secondary = v.get("TWILIO_AUTH_TOKEN_SECONDARY").map(AuthToken::new);
        let twilio_account_sid = v.account_sid()?;
        let elevenlabs_api_base = v.origin("ELEVENLABS_API_BASE", DEFAULT_ELEVENLABS_API_BASE)?;
        let fallback_number = v.fallback_number()?;
        let formats = [("text", LogFormat::Text), ("json", LogFormat::Json)];
        let log_format = v.choice("LOG_FORMAT", DEFAULT_LOG_FORMAT, &formats)?;
        // Read here, not by the subscriber from the process environment, so `.env` sets it too
        // and a typo stops start-up like any other bad value.
        let log_filter = match v.get("RUST_LOG") {
            None => None,
            Some(f) if log_filter_is_meant(f) => Some(f.to_owned()),
            Some(_) => {
                return Err(err(
                    "RUST_LOG",
                    "is not a log filter (e.g. debug, or info,ignis::practice=debug)",
                ));
            }
        };
        let bind = v.bind()?;
        let dtmf_modes =
            [DtmfMode::UserMessage, DtmfMode::ContextualUpdate].map(|m| (dtmf_name(m), m));
        let stages = AudioStages::ALL.map(|m| (m.name(), m));
        Ok(Config {
            port: v.number("PORT", u64::from(DEFAULT_PORT), 0, u64::from(u16::MAX))? as u16,
            bind,
            public_url,
            twilio_keys: SigningKeys::new(token.clone(), secondary),
            twilio_auth_token: token,
            twilio_account_sid,
            elevenlabs_agent_id: v.get("ELEVENLABS_AGENT_ID").map(str::to_owned),
            elevenlabs_api_key: v.get("ELEVENLABS_API_KEY").map(AuthToken::new),
            elevenlabs_api_base,
            fallback_number,
            log_format,
            log_filter,
            drain: Duration::from_secs(v.number(
                "DRAIN_SECONDS",
                DEFAULT_DRAIN_SECONDS,
                0,
                86_400,
            )?),
            max_connections: v.number(
                "MAX_CONNECTIONS",
                DEFAULT_MAX_CONNECTIONS as u64,
                1,
                MAX_CAP,
            )? as usize,
            request_timeout: v.millis("HTTP_REQUEST_TIMEOUT_MS", DEFAULT_REQUEST_TIMEOUT)?,
            idle_timeout: v.millis("HTTP_IDLE_TIMEOUT_MS", DEFAULT_IDLE_TIMEOUT)?,
            insecure_skip_signature,
            max_calls: v.number("MAX_CALLS", DEFAULT_MAX_CALLS as u64, 1, MAX_CAP)? as usize,
            elevenlabs_connect_timeout: v
                .millis("ELEVENLABS_CONNECT_TIMEOUT_MS", DEFAULT_CONNECT_TIMEOUT)?,
            elevenlabs_override: v.conversation_override()?,
            preconnect_timeout: v.millis("PRECONNECT_TIMEOUT_MS", DEFAULT_PRECONNECT_TIMEOUT)?,
            agent_silence_timeout: v.millis("AGENT_SILENCE_TIMEOUT_MS", DEFAULT_SILENCE_TIMEOUT)?,
            dtmf_mode: v.choice("DTMF_MODE", DEFAULT_DTMF_MODE, &dtmf_modes)?,
            audio_stages: v.choice("AUDIO_STAGES", DEFAULT_AUDIO_STAGES, &stages)?,
            twilio_api_base: v.origin("TWILIO_API_BASE", DEFAULT_TWILIO_API_BASE)?,
            twilio_monitor_api_base: v
                .origin("TWILIO_MONITOR_API_BASE", DEFAULT_TWILIO_MONITOR_API_BASE)?,
            twilio_api_key: v.api_key()?,
            twilio_phone_number: v.e164("TWILIO_PHONE_NUMBER")?,
            twilio_voice_fallback_url: v.https_url("TWILIO_VOICE_FALLBACK_URL")?,
            elevenlabs_retention_days: v.number(
                "ELEVENLABS_RETENTION_DAYS",
                u64::from(DEFAULT_ELEVENLABS_RETENTION_DAYS),
                1,
                u64::from(MAX_ELEVENLABS_RETENTION_DAYS),
            )? as u32,
            elevenlabs_record_voice: v.choice(
                "ELEVENLABS_RECORD_VOICE",
                false,
                &[("0", false), ("1", true)],
            )?,
            metrics_token: v.get("METRICS_TOKEN").map(AuthToken::new),
            extra_ca_file: v.get("EXTRA_CA_FILE").map(PathBuf::from),
            replica_id: v.replica_id()?,
            practice: v.practice()?,
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

    /// A browser leaves the scheme's default port out of `Origin`: PUBLIC_URL with `:443`
    /// must still accept the staff page's own POSTs (staff review, point 8).
    #[test]
    fn the_origin_omits_only_the_default_port() {
        let o = |s: &str| PublicUrl::parse(s).map(|u| u.origin());
        assert_eq!(o("https://x.example:443/"), Ok("https://x.example".into()));
        assert_eq!(o("http://x.example:80"), Ok("http://x.example".into()));
        assert_eq!(
            o("https://x.example:8443"),
            Ok("https://x.example:8443".into())
        );
        assert_eq!(o("http://x.example:443"), Ok("http://x.example:443".into()));
        assert_eq!(o("https://x.example"), Ok("https://x.example".into()));
        // Signed URLs keep what the operator configured (Twilio signs that).
        let u = PublicUrl::parse("https://x.example:443").unwrap();
        assert_eq!(u.http_url("/a"), "https://x.example:443/a");
    }

    #[test]
    fn rust_log_is_read_with_the_other_variables() {
        let mut v = vars(MIN);
        assert_eq!(Config::from_vars(&v, false).unwrap().log_filter, None);
        v.insert("RUST_LOG".into(), "info,ignis::practice=debug".into());
        let c = Config::from_vars(&v, false).unwrap();
        assert_eq!(c.log_filter.as_deref(), Some("info,ignis::practice=debug"));
        for bad in [
            "ignis=[[loud",
            "debgu",
            "info,inof",
            "Ignis",
            "debug ,tokio=info",
        ] {
            v.insert("RUST_LOG".into(), bad.into());
            let e = Config::from_vars(&v, false).unwrap_err();
            assert_eq!(e.variable, "RUST_LOG", "{bad}");
        }
        for good in [
            "Debug",
            "ignis",
            "warn,tokio=debug",
            "3",
            "4,tokio=info",
            "info,",
            "info,ignis::practice=trace",
        ] {
            v.insert("RUST_LOG".into(), good.into());
            assert!(Config::from_vars(&v, false).is_ok(), "{good}");
        }
    }

    #[test]
    fn an_override_greeting_must_disclose_the_ai() {
        let with = |o: &str| {
            let mut v = vars(MIN);
            v.insert("ELEVENLABS_CONVERSATION_OVERRIDE".into(), o.into());
            Config::from_vars(&v, false)
        };
        for bad in [
            r#"{"agent":{"first_message":"Praxis Dr. Kim, guten Tag"}}"#,
            r#"{"agent":{"first_message":""}}"#,
            r#"{"agent":{"first_message":null}}"#,
        ] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.variable, "ELEVENLABS_CONVERSATION_OVERRIDE");
            assert!(e.reason.contains("AI"), "{}", e.reason);
        }
        let ok = r#"{"agent":{"first_message":"Praxis Dr. Kim, hier spricht die KI-Assistenz."}}"#;
        assert!(with(ok).unwrap().elevenlabs_override.is_some());
        assert!(with(r#"{"agent":{"language":"de"}}"#).is_ok());
        assert!(with("[1]").is_err());
    }

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
    fn the_practice_variables_are_part_of_the_one_parse() {
        let c = Config::from_vars(&vars(MIN), false).unwrap();
        assert!(c.practice.tools_token.is_none() && c.practice.admin_token.is_none());
        assert_eq!(c.practice.db_path, PathBuf::from(DEFAULT_DB_PATH));
        assert!(c.practice.demo_patients && c.practice.config_path.is_none());
        let mut v = vars(MIN);
        v.insert("TOOLS_TOKEN".into(), "short".into());
        let e = Config::from_vars(&v, false).unwrap_err();
        assert_eq!(e.variable, "TOOLS_TOKEN");
        assert!(e.reason.contains(&MIN_SECRET_LEN.to_string()), "{e}");
        v.insert("TOOLS_TOKEN".into(), "a-long-enough-secret".into());
        v.insert("PRACTICE_CONFIG".into(), "/etc/practice.toml".into());
        let c = Config::from_vars(&v, false).unwrap();
        assert!(
            !c.practice.demo_patients,
            "own config: no demo patients by default"
        );
        assert!(!format!("{c:?}").contains("a-long-enough-secret"));
    }

    #[test]
    fn a_weak_admin_token_is_refused_naming_it() {
        let mut v = vars(MIN);
        // Long enough for the old 16-character rule, far from 32 random bytes.
        v.insert("ADMIN_TOKEN".into(), "admin-secret-for-tests-4567".into());
        let e = Config::from_vars(&v, false).unwrap_err();
        assert_eq!(e.variable, "ADMIN_TOKEN");
        assert!(
            e.reason.contains("256") && e.reason.contains("openssl rand"),
            "{e}"
        );
        assert!(
            !e.to_string().contains("admin-secret"),
            "never echo the token: {e}"
        );
        v.insert("ADMIN_TOKEN".into(), "Ab1-".repeat(16));
        assert_eq!(
            Config::from_vars(&v, false).unwrap_err().variable,
            "ADMIN_TOKEN"
        );
        let strong = "QcxnDkwjTMZi+i6H4+FczVfQmZcziAos72nDCyyNgjc=";
        v.insert("ADMIN_TOKEN".into(), strong.into());
        let c = Config::from_vars(&v, false).unwrap();
        assert_eq!(c.practice.admin_token.unwrap().expose(), strong);
    }

    #[test]
    fn defaults_are_the_named_constants_and_the_table_shows_them() {
        let c = Config::from_vars(&vars(MIN), false).unwrap();
        // One default agent silence timeout: the session's, also the bridge's.
        assert_eq!(c.agent_silence_timeout, DEFAULT_SILENCE_TIMEOUT);
        assert_eq!(
            crate::bridge::BridgeConfig::default().agent_silence_timeout,
            DEFAULT_SILENCE_TIMEOUT
        );
        assert_eq!(c.dtmf_mode, DEFAULT_DTMF_MODE);
        assert_eq!(c.audio_stages, DEFAULT_AUDIO_STAGES);
        assert_eq!(c.log_format, DEFAULT_LOG_FORMAT);
        assert_eq!((c.bind, c.port), (DEFAULT_BIND, DEFAULT_PORT));
        assert_eq!(c.preconnect_timeout, DEFAULT_PRECONNECT_TIMEOUT);
        assert_eq!(c.elevenlabs_connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.twilio_api_base, DEFAULT_TWILIO_API_BASE);
        let shown = |name: &str| {
            let v = VARIABLES.iter().find(|v| v.name == name).unwrap();
            v.unset.to_string()
        };
        assert_eq!(shown("AGENT_SILENCE_TIMEOUT_MS"), "20000");
        assert_eq!(shown("BIND"), "0.0.0.0");
        assert_eq!(shown("DTMF_MODE"), "user_message");
        assert_eq!(shown("AUDIO_STAGES"), "inline");
        assert_eq!(shown("PUBLIC_URL"), "required");
        let meaning = |name: &str| VARIABLES.iter().find(|v| v.name == name).unwrap().meaning;
        assert!(meaning("TOOLS_TOKEN").contains(&format!("{MIN_SECRET_LEN} characters")));
        // ADMIN_TOKEN's bar is higher than the tools token's, and says how to meet it.
        for words in ["32 random bytes", "openssl rand -base64 32"] {
            assert!(meaning("ADMIN_TOKEN").contains(words), "{words}");
        }
        let help = environment_help();
        assert_eq!(help.lines().count(), VARIABLES.len() + 1);
        assert!(help.contains("EXTRA_CA_FILE"));
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
