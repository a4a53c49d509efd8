//! `ignis agent sync`'s core, and the agent part of `ignis doctor` (docs/elevenlabs.md §10–§12).
//!
//! The repository's `agent/` directory is compiled in: the tools (`agent/tools/*.json`) and the
//! system prompt (`agent/prompt.md`). [`AgentSync`] is a sans-IO state machine: [`AgentSync::poll`]
//! says which API request to send next, [`AgentSync::handle_response`] takes its answer, until
//! it is done with a [`Report`]. It makes, in this order:
//! 1. the workspace secret carrying `Bearer <TOOLS_TOKEN>`, recognised by the token's fingerprint
//!    in its name (a secret's value cannot be read back, §10.3);
//! 2. the seven tools, matched by name: created when missing, replaced whole when different;
//! 3. the agent: the GOT configuration with ignis's settings applied, and only the changed
//!    top-level sub-objects sent back whole (whether PATCH deep-merges is unverified, §10.4).
//!
//! A second run finds nothing to change and writes nothing. Secrets are printed masked only.

use std::collections::VecDeque;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Check, masked};
use crate::http::url::{Endpoint, encode_query_value};
use crate::practice::calls::DYNAMIC_VARIABLE_NAMES;
use crate::twilio::signature::AuthToken;

/// The tools, one `POST /v1/convai/tools` body (`{"tool_config": …}`) each: the six practice
/// tools (docs/practice-tools.md §3) and the client tool the bridge answers
/// (`bridge::TOOL_TRANSFER`, docs/elevenlabs.md §5.2).
pub const TOOL_FILES: [(&str, &str); 7] = [
    (
        "identify_patient",
        include_str!("../../agent/tools/identify_patient.json"),
    ),
    (
        "find_slots",
        include_str!("../../agent/tools/find_slots.json"),
    ),
    (
        "book_appointment",
        include_str!("../../agent/tools/book_appointment.json"),
    ),
    (
        "cancel_appointment",
        include_str!("../../agent/tools/cancel_appointment.json"),
    ),
    (
        "create_request",
        include_str!("../../agent/tools/create_request.json"),
    ),
    (
        "report_emergency",
        include_str!("../../agent/tools/report_emergency.json"),
    ),
    (
        crate::bridge::TOOL_TRANSFER,
        include_str!("../../agent/tools/transfer_to_staff.json"),
    ),
];
/// `agent/prompt.md`; the system prompt is the part below its HTML comment.
const PROMPT_FILE: &str = include_str!("../../agent/prompt.md");
/// What the tool files say where the public origin goes.
const HOST_PLACEHOLDER: &str = "https://IGNIS_HOST";
/// What the tool files say where the secret's id goes.
const SECRET_PLACEHOLDER: &str = "IGNIS_TOOLS_SECRET_ID";
/// The secret's name: this prefix and the first 8 hex digits of SHA-256(TOOLS_TOKEN).
pub const SECRET_NAME_PREFIX: &str = "ignis_tools_";
/// The per-call token variable every webhook tool sends as `X-Ignis-Call`.
pub const CALL_TOKEN_VARIABLE: &str = "secret__ignis_call";
/// The events ignis's parser reads (`elevenlabs::messages`): without `audio` the caller hears
/// nothing, without `interruption` there is no barge-in, without `ping` the silence watchdog
/// ends the call, without `client_tool_call` there is no transfer (docs/elevenlabs.md §3).
/// `agent_response` and `user_transcript` feed the call log.
pub const REQUIRED_CLIENT_EVENTS: [&str; 7] = [
    "conversation_initiation_metadata",
    "audio",
    "interruption",
    "ping",
    "client_tool_call",
    "agent_response",
    "user_transcript",
];
/// Both audio formats: Twilio's own μ-law, passed through untouched (docs/elevenlabs.md §4.2).
pub const AUDIO_FORMAT: &str = "ulaw_8000";
/// The agent's language.
pub const LANGUAGE: &str = "de";
/// Longest conversation. A patient call (identify, search slots, book, a second request) takes
/// two to five minutes; ten leave room for slow speakers and relatives calling for someone, and
/// still bound the cost of a stuck call. When it is reached the bridge hands the caller to a
/// person, never to a hang-up (docs/elevenlabs.md §3.2).
pub const MAX_DURATION_SECONDS: u64 = 600;
/// The greeting: says at once that the caller talks to the practice's AI assistant (EU AI Act
/// Art. 50, docs/elevenlabs.md §12); the caller cannot interrupt it.
pub const FIRST_MESSAGE: &str = "Guten Tag, Sie sprechen mit der KI-Telefonassistenz der \
     {{practice_name}}. Ich bin eine künstliche Intelligenz. Wie kann ich Ihnen helfen?";
/// Most pages read from a list endpoint (100 items each).
pub const MAX_PAGES: usize = 50;
/// Page size asked of the list endpoints (their maximum, §10.1).
const PAGE_SIZE: usize = 100;
/// Texts longer than this are shown by their length in the diff.
const LONG_TEXT: usize = 60;
/// Differences shown per tool before "… and N more".
const MAX_SHOWN_DIFFERENCES: usize = 6;

/// The system prompt: `agent/prompt.md` below its HTML comment.
pub fn prompt() -> &'static str {
    PROMPT_FILE
        .split_once("-->")
        .map(|(_, rest)| rest)
        .unwrap_or(PROMPT_FILE)
        .trim()
}

/// The workspace secret's name for `tools_token`: its fingerprint, so a changed token makes a
/// new secret and an unchanged one is found again (the value itself cannot be read back).
pub fn secret_name(tools_token: &str) -> String {
    let digest = Sha256::digest(tools_token.as_bytes());
    let hex = crate::secret::hex_lower(&digest);
    format!("{SECRET_NAME_PREFIX}{}", &hex[..8])
}

/// The secret's value: the `Authorization` header the tools send.
pub fn secret_value(tools_token: &str) -> String {
    format!("Bearer {tools_token}")
}

/// A tool file that does not parse (a bug caught by the unit tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadToolFile(pub &'static str);

/// What the tools' parameters may name, from `practice.toml` (docs/elevenlabs.md §10.5): the
/// tool files list the Demo Praxis's visit types and doctors, and the endpoints accept only the
/// practice's own (`practice/tools/input.rs`), so the sync puts this practice's lists in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolVocabulary {
    /// The visit types, in `practice.toml`'s order.
    pub visit_types: Vec<VisitTypeWord>,
    /// The practitioners' names as said to callers ("Dr. Schmidt").
    pub practitioners: Vec<String>,
}

/// One visit type as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitTypeWord {
    /// The code the tools take (`kontrolle`).
    pub code: String,
    /// The German label (`Kontrolltermin`).
    pub label: String,
    /// Bookable by phone (else staff book it: `not_phone_bookable`).
    pub phone_bookable: bool,
    /// Open to new patients (else `visit_type_not_for_new_patients`).
    pub new_patients_ok: bool,
}

impl ToolVocabulary {
    /// The lists of `config`.
    pub fn of(config: &crate::practice::config::PracticeConfig) -> ToolVocabulary {
        ToolVocabulary {
            visit_types: config
                .visit_types
                .iter()
                .map(|v| VisitTypeWord {
                    code: v.code.clone(),
                    label: v.label.clone(),
                    phone_bookable: v.phone_bookable,
                    new_patients_ok: v.new_patients_ok,
                })
                .collect(),
            practitioners: config
                .practitioners
                .iter()
                .map(|p| p.display.clone())
                .collect(),
        }
    }

    /// `visit_type`'s description: each code with its label, and who may book it, so the
    /// model picks the right code and knows which types to offer a new patient (prompt §4).
    fn visit_type_description(&self) -> String {
        let types: Vec<String> = self
            .visit_types
            .iter()
            .map(|v| {
                let mut notes = vec![v.label.as_str()];
                if !v.phone_bookable {
                    notes.push("nur über das Praxisteam");
                } else if v.new_patients_ok {
                    notes.push("auch für neue Patienten");
                }
                format!("{} ({})", v.code, notes.join(", "))
            })
            .collect();
        format!("Art des Termins: {}.", types.join("; "))
    }

    /// Puts the lists into every `visit_type` and `practitioner` parameter of `tool`.
    fn apply(&self, tool: &mut Value) {
        let codes: Vec<&str> = self.visit_types.iter().map(|v| v.code.as_str()).collect();
        let names: Vec<&str> = self.practitioners.iter().map(String::as_str).collect();
        let described = self.visit_type_description();
        for_each_property(tool, &mut |name, schema| match name {
            "visit_type" => {
                set_enum(schema, &codes);
                // book_appointment's says "wie bei find_slots": one place for the list.
                if schema["description"] != VISIT_TYPE_AS_IN_FIND_SLOTS {
                    schema["description"] = json!(described);
                }
            }
            "practitioner" => set_enum(schema, &names),
            _ => {}
        });
    }
}

/// `book_appointment`'s `visit_type` description, which refers to `find_slots`'s.
const VISIT_TYPE_AS_IN_FIND_SLOTS: &str = "Art des Termins, wie bei find_slots.";

/// Calls `f` with each parameter's name and schema (every `properties` member, at any depth).
fn for_each_property(v: &mut Value, f: &mut impl FnMut(&str, &mut Value)) {
    match v {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "properties"
                    && let Value::Object(params) = child
                {
                    for (name, schema) in params.iter_mut() {
                        f(name, schema);
                    }
                }
                for_each_property(child, f);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| for_each_property(i, f)),
        _ => {}
    }
}

/// `schema`'s `enum` set to `values`; none when `values` is empty (an empty `enum` admits
/// nothing, and the endpoint's own check refuses unknown values anyway).
fn set_enum(schema: &mut Value, values: &[&str]) {
    let Value::Object(map) = schema else {
        return;
    };
    if values.is_empty() {
        map.remove("enum");
    } else {
        map.insert("enum".into(), json!(values));
    }
}

/// The seven `tool_config`s as ignis wants them: the public origin (`https://host`), the
/// secret's id and the practice's visit types and practitioners filled in.
pub fn desired_tools(
    origin: &str,
    secret_id: &str,
    vocabulary: &ToolVocabulary,
) -> Result<Vec<Value>, BadToolFile> {
    TOOL_FILES
        .iter()
        .map(|(name, text)| {
            let text = text
                .replace(HOST_PLACEHOLDER, origin)
                .replace(SECRET_PLACEHOLDER, secret_id);
            let file: Value = serde_json::from_str(&text).map_err(|_| BadToolFile(name))?;
            match file.get("tool_config") {
                Some(c) if c["name"] == *name => {
                    let mut c = c.clone();
                    vocabulary.apply(&mut c);
                    Ok(c)
                }
                _ => Err(BadToolFile(name)),
            }
        })
        .collect()
}

/// What the sync needs from the configuration.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// `ELEVENLABS_AGENT_ID`.
    pub agent_id: String,
    /// `PUBLIC_URL`'s origin (`https://host[:port]`).
    pub origin: String,
    /// `TOOLS_TOKEN`.
    pub tools_token: AuthToken,
    /// `ELEVENLABS_RECORD_VOICE`.
    pub record_voice: bool,
    /// `ELEVENLABS_RETENTION_DAYS`.
    pub retention_days: u32,
    /// `practice.toml`'s visit types and practitioners.
    pub vocabulary: ToolVocabulary,
}

/// Why the configuration cannot sync the agent (exit code 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsError {
    /// `ELEVENLABS_API_KEY` is unset.
    NoApiKey,
    /// `ELEVENLABS_AGENT_ID` is unset.
    NoAgentId,
    /// `TOOLS_TOKEN` is unset: ignis would run with a random one no agent can know.
    NoToolsToken,
    /// `PUBLIC_URL` is not `https://`: ElevenLabs would send the tools token in the clear.
    NotHttps,
    /// `ELEVENLABS_API_KEY` holds a control character (it could not go into a header).
    BadApiKey,
}

error_text!(SettingsError {
    NoApiKey => "ELEVENLABS_API_KEY is not set: the sync needs an API key of the agent's workspace",
    NoAgentId => "ELEVENLABS_AGENT_ID is not set: which agent should be synced?",
    NoToolsToken => "TOOLS_TOKEN is not set: without it ignis draws a random token at start \
        that no agent can know; set it (e.g. `openssl rand -hex 32`) in .env and run again",
    NotHttps => "PUBLIC_URL must be https://: the tools send TOOLS_TOKEN to it",
    BadApiKey => "ELEVENLABS_API_KEY holds a control character",
});

/// The sync's settings from the configuration and the practice, or why it cannot run.
pub fn sync_settings(
    config: &crate::config::Config,
    practice: &crate::practice::config::PracticeConfig,
) -> Result<SyncSettings, SettingsError> {
    let Some(key) = &config.elevenlabs_api_key else {
        return Err(SettingsError::NoApiKey);
    };
    if key.expose().bytes().any(|b| b.is_ascii_control()) {
        return Err(SettingsError::BadApiKey);
    }
    let agent_id = config
        .elevenlabs_agent_id
        .clone()
        .ok_or(SettingsError::NoAgentId)?;
    let tools_token = config
        .practice
        .tools_token
        .clone()
        .ok_or(SettingsError::NoToolsToken)?;
    let origin = config.public_url.http_url("");
    if !origin.starts_with("https://") {
        return Err(SettingsError::NotHttps);
    }
    Ok(SyncSettings {
        agent_id,
        origin,
        tools_token,
        record_voice: config.elevenlabs_record_voice,
        retention_days: config.elevenlabs_retention_days,
        vocabulary: ToolVocabulary::of(practice),
    })
}

/// The target of one page of a list endpoint (`/v1/convai/tools`, `/v1/convai/secrets`), with
/// an optional `search` (names starting with it; the answer is still checked name by name).
fn list_target(path: &str, search: Option<&str>, cursor: Option<&str>) -> String {
    let mut target = format!("{path}?page_size={PAGE_SIZE}");
    if let Some(s) = search {
        target.push_str(&format!("&search={}", encode_query_value(s)));
    }
    if let Some(c) = cursor {
        target.push_str(&format!("&cursor={}", encode_query_value(c)));
    }
    target
}

/// One page's items under `key` and the cursor of the next page (`None` on the last);
/// `None` when the answer has no such list.
fn list_page(v: &Value, key: &str) -> Option<(Vec<Value>, Option<String>)> {
    let items = v[key].as_array()?.clone();
    // `has_more` is absent from older answers: a cursor alone means more.
    let next = v["next_cursor"]
        .as_str()
        .filter(|_| v["has_more"] != false)
        .map(str::to_owned);
    Some((items, next))
}

/// Every item of one list endpoint, page by page (the sync's reads and the doctor's):
/// [`Listing::poll`] names the next page, [`Listing::handle`] takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    path: &'static str,
    key: &'static str,
    search: Option<String>,
    cursor: Option<String>,
    pages: usize,
    items: Vec<Value>,
    done: bool,
}

/// A list endpoint's next step.
#[derive(Debug, Clone, PartialEq)]
pub enum ListStep {
    /// GET this target and pass its 2xx JSON answer to [`Listing::handle`].
    Get(String),
    /// The last page was read: all items.
    Done(Vec<Value>),
}

impl Listing {
    /// Every tool of the workspace.
    pub fn tools() -> Self {
        Self::new("/v1/convai/tools", "tools", None)
    }

    /// The workspace secrets whose name starts with TOOLS_TOKEN's secret name.
    pub fn secrets(tools_token: &str) -> Self {
        Self::new(
            "/v1/convai/secrets",
            "secrets",
            Some(secret_name(tools_token)),
        )
    }

    fn new(path: &'static str, key: &'static str, search: Option<String>) -> Self {
        Listing {
            path,
            key,
            search,
            cursor: None,
            pages: 0,
            items: Vec::new(),
            done: false,
        }
    }

    /// The page to GET next, or all items once the last was read.
    pub fn poll(&self) -> ListStep {
        if self.done {
            ListStep::Done(self.items.clone())
        } else {
            ListStep::Get(list_target(
                self.path,
                self.search.as_deref(),
                self.cursor.as_deref(),
            ))
        }
    }

    /// Takes one page (a 2xx JSON answer).
    pub fn handle(&mut self, page: &Value) -> Result<(), ListError> {
        let (items, next) =
            list_page(page, self.key).ok_or(ListError::NoList(self.path, self.key))?;
        self.items.extend(items);
        self.pages += 1;
        match next {
            None => self.done = true,
            Some(_) if self.pages >= MAX_PAGES => return Err(ListError::TooManyPages(self.path)),
            Some(c) => self.cursor = Some(c),
        }
        Ok(())
    }
}

/// Why a listing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListError {
    /// A 2xx answer without the list (path, key).
    NoList(&'static str, &'static str),
    /// More than [`MAX_PAGES`] pages (path).
    TooManyPages(&'static str),
}

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListError::NoList(path, key) => write!(f, "GET {path}: no {key}"),
            ListError::TooManyPages(path) => write!(f, "GET {path}: more than {MAX_PAGES} pages"),
        }
    }
}

impl std::error::Error for ListError {}

/// Which workspace secret the tools' `Authorization` must name, for `agent_tools`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedSecret {
    /// TOOLS_TOKEN is unset: any workspace secret passes.
    Any,
    /// The secret named for TOOLS_TOKEN (its id).
    Id(String),
    /// TOOLS_TOKEN is set but no secret carries its name: whatever secret the tools use, it
    /// is not TOOLS_TOKEN's.
    Missing,
}

impl ExpectedSecret {
    /// For `tools_token` (`None`: unset), from the secrets a [`Listing::secrets`] read.
    pub fn find(tools_token: Option<&str>, secrets: &[Value]) -> Self {
        let Some(token) = tools_token else {
            return ExpectedSecret::Any;
        };
        let name = secret_name(token);
        secrets
            .iter()
            .find(|s| s["name"] == name.as_str())
            .and_then(|s| s["secret_id"].as_str())
            .map_or(ExpectedSecret::Missing, |id| {
                ExpectedSecret::Id(id.to_owned())
            })
    }
}

/// The path of the agent `id`.
pub fn agent_target(id: &str) -> String {
    format!("/v1/convai/agents/{}", encode_query_value(id))
}

/// One API request: method, path with query, JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    /// `GET`, `POST` or `PATCH`.
    pub method: &'static str,
    /// Path and query.
    pub target: String,
    /// The JSON body.
    pub body: Option<Value>,
}

/// Why the sync stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncError {
    /// The service answered a non-2xx status (with what it said, secrets never included).
    Refused {
        /// The request, e.g. `GET /v1/convai/agents/{id}`.
        what: String,
        /// The status.
        status: u16,
        /// The service's message, shortened.
        detail: String,
    },
    /// A 2xx answer without the expected fields.
    BadResponse(&'static str),
    /// A list endpoint's pages did not read (no list, or more than [`MAX_PAGES`]).
    List(ListError),
    /// A compiled-in tool file is broken.
    BadToolFile(&'static str),
    /// The agent PATCH was accepted but the agent it answered still differs in these fields
    /// (the service dropped or normalised them): another run would only write them again.
    NotApplied(Vec<String>),
    /// A tool write was accepted but the tool it answered still differs in these fields: every
    /// run would write it again.
    ToolNotApplied {
        /// The tool's name.
        tool: String,
        /// The fields that differ.
        fields: Vec<String>,
    },
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Refused {
                what,
                status,
                detail,
            } => write!(f, "ElevenLabs refused {what}: {status} {detail}"),
            SyncError::BadResponse(what) => write!(f, "unexpected ElevenLabs answer to {what}"),
            SyncError::List(e) => write!(f, "{e}, stopped"),
            SyncError::BadToolFile(name) => write!(f, "agent/tools/{name}.json is broken"),
            SyncError::NotApplied(fields) => write!(
                f,
                "ElevenLabs accepted the agent update but still shows other values for {}",
                fields.join(", ")
            ),
            SyncError::ToolNotApplied { tool, fields } => write!(
                f,
                "ElevenLabs accepted tool {tool} but still shows other values for {}",
                fields.join(", ")
            ),
        }
    }
}

impl std::error::Error for SyncError {}

/// What the sync did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The report, one line each (the diff, notes, the summary last).
    pub lines: Vec<String>,
    /// Changes found.
    pub changes: usize,
    /// Writes made.
    pub writes: usize,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send this request and pass its answer to [`AgentSync::handle_response`].
    Call(ApiCall),
    /// Finished.
    Done(Report),
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Secrets(Listing),
    CreateSecret,
    Tools(Listing),
    Agent,
    ToolWrites,
    PatchAgent(Value),
    Done,
}

/// One tool to create or replace.
#[derive(Debug, Clone, PartialEq)]
struct ToolWrite {
    name: String,
    /// The existing tool's id (PATCH), or none (POST).
    id: Option<String>,
    config: Value,
}

/// The sync, step by step (see the module doc).
#[derive(Debug)]
pub struct AgentSync {
    settings: SyncSettings,
    dry_run: bool,
    phase: Phase,
    secret_id: Option<String>,
    tools: Vec<Value>,
    agent: Value,
    pending: VecDeque<ToolWrite>,
    /// ignis's tools' ids, by name, once known.
    ids: Vec<(String, String)>,
    lines: Vec<String>,
    changes: usize,
    writes: usize,
}

impl AgentSync {
    /// A sync of `settings`' agent; `dry_run` writes nothing.
    pub fn new(settings: SyncSettings, dry_run: bool) -> Self {
        AgentSync {
            phase: Phase::Secrets(Listing::secrets(settings.tools_token.expose())),
            settings,
            dry_run,
            secret_id: None,
            tools: Vec::new(),
            agent: Value::Null,
            pending: VecDeque::new(),
            ids: Vec::new(),
            lines: Vec::new(),
            changes: 0,
            writes: 0,
        }
    }

    /// The request to send now, or the report once done. Call again after each
    /// [`AgentSync::handle_response`].
    pub fn poll(&self) -> Step {
        let call = |method, target: String, body| {
            Step::Call(ApiCall {
                method,
                target,
                body,
            })
        };
        let agent_path = agent_target(&self.settings.agent_id);
        match &self.phase {
            // A finished listing never stays in the phase: `Done` cannot come.
            Phase::Secrets(listing) | Phase::Tools(listing) => match listing.poll() {
                ListStep::Get(target) => call("GET", target, None),
                ListStep::Done(_) => Step::Done(self.report()),
            },
            Phase::CreateSecret => {
                let token = self.settings.tools_token.expose();
                let body = json!({"name": secret_name(token), "value": secret_value(token),
                                  "type": "new"});
                call("POST", "/v1/convai/secrets".into(), Some(body))
            }
            Phase::Agent => call("GET", agent_path, None),
            Phase::ToolWrites => match self.pending.front() {
                Some(w) => {
                    let body = Some(json!({"tool_config": w.config}));
                    match &w.id {
                        Some(id) => call(
                            "PATCH",
                            format!("/v1/convai/tools/{}", encode_query_value(id)),
                            body,
                        ),
                        None => call("POST", "/v1/convai/tools".into(), body),
                    }
                }
                None => Step::Done(self.report()),
            },
            Phase::PatchAgent(body) => call("PATCH", agent_path, Some(body.clone())),
            Phase::Done => Step::Done(self.report()),
        }
    }

    /// Takes the answer to the request [`AgentSync::poll`] gave.
    pub fn handle_response(&mut self, status: u16, body: &[u8]) -> Result<(), SyncError> {
        if !(200..300).contains(&status) {
            let what = match self.poll() {
                Step::Call(c) => format!("{} {}", c.method, c.target),
                Step::Done(_) => "a request".into(),
            };
            return Err(SyncError::Refused {
                what,
                status,
                detail: error_detail(body),
            });
        }
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Secrets(listing) => self.on_secrets(listing, &v),
            Phase::CreateSecret => {
                let id = v["secret_id"]
                    .as_str()
                    .ok_or(SyncError::BadResponse("POST /v1/convai/secrets"))?;
                self.secret_id = Some(id.to_owned());
                self.writes += 1;
                self.phase = Phase::Tools(Listing::tools());
                Ok(())
            }
            Phase::Tools(listing) => self.on_tools(listing, &v),
            Phase::Agent => {
                if !v["conversation_config"].is_object() {
                    return Err(SyncError::BadResponse("GET /v1/convai/agents/{id}"));
                }
                self.agent = v;
                self.plan_tools()
            }
            Phase::ToolWrites => self.on_tool_written(&v),
            Phase::PatchAgent(_) => {
                self.writes += 1;
                self.check_patched(&v)
            }
            Phase::Done => Ok(()),
        }
    }

    fn on_secrets(&mut self, mut listing: Listing, v: &Value) -> Result<(), SyncError> {
        let secrets = v["secrets"]
            .as_array()
            .ok_or(SyncError::BadResponse("GET /v1/convai/secrets"))?;
        let name = secret_name(self.settings.tools_token.expose());
        if let Some(s) = secrets.iter().find(|s| s["name"] == name.as_str()) {
            let id = s["secret_id"]
                .as_str()
                .ok_or(SyncError::BadResponse("GET /v1/convai/secrets"))?;
            self.secret_id = Some(id.to_owned());
            self.lines.push(format!("  secret {name}: present ({id})"));
            self.phase = Phase::Tools(Listing::tools());
            return Ok(());
        }
        listing.handle(v).map_err(SyncError::List)?;
        if let ListStep::Get(_) = listing.poll() {
            self.phase = Phase::Secrets(listing);
            return Ok(());
        }
        let value = secret_value(self.settings.tools_token.expose());
        self.lines.push(format!(
            "+ secret {name} = {} (TOOLS_TOKEN's fingerprint in the name)",
            masked(&value)
        ));
        self.changes += 1;
        self.phase = if self.dry_run {
            self.secret_id = Some(format!("<new {name}>"));
            Phase::Tools(Listing::tools())
        } else {
            Phase::CreateSecret
        };
        Ok(())
    }

    fn on_tools(&mut self, mut listing: Listing, v: &Value) -> Result<(), SyncError> {
        listing.handle(v).map_err(SyncError::List)?;
        self.phase = match listing.poll() {
            ListStep::Get(_) => Phase::Tools(listing),
            ListStep::Done(tools) => {
                self.tools = tools;
                Phase::Agent
            }
        };
        Ok(())
    }

    /// Decides each tool: keep, replace or create.
    fn plan_tools(&mut self) -> Result<(), SyncError> {
        let secret_id = self.secret_id.clone().unwrap_or_default();
        let desired = desired_tools(&self.settings.origin, &secret_id, &self.settings.vocabulary)
            .map_err(|BadToolFile(n)| SyncError::BadToolFile(n))?;
        let attached = attached_ids(&self.agent);
        let mut unchanged = 0;
        for config in desired {
            let name = config["name"].as_str().unwrap_or_default().to_owned();
            match pick_tool(&self.tools, &name, &attached, &self.settings.origin) {
                Some((id, current)) => {
                    let diffs = differences(&current["tool_config"], &config);
                    if diffs.is_empty() {
                        unchanged += 1;
                        self.ids.push((name, id));
                        continue;
                    }
                    self.lines
                        .push(format!("~ tool {name} ({id}): replaced whole"));
                    self.lines.extend(show_differences(&diffs));
                    self.changes += 1;
                    self.queue(name, Some(id), config);
                }
                None => {
                    self.lines
                        .push(format!("+ tool {name}: {}", summary(&config)));
                    self.changes += 1;
                    self.queue(name, None, config);
                }
            }
        }
        self.lines.push(format!(
            "  tools: {unchanged} of {} in sync",
            TOOL_FILES.len()
        ));
        self.phase = Phase::ToolWrites;
        if self.pending.is_empty() {
            self.plan_agent();
        }
        Ok(())
    }

    fn queue(&mut self, name: String, id: Option<String>, config: Value) {
        if self.dry_run {
            let id = id.unwrap_or_else(|| format!("<new {name}>"));
            self.ids.push((name, id));
        } else {
            self.pending.push_back(ToolWrite { name, id, config });
        }
    }

    fn on_tool_written(&mut self, v: &Value) -> Result<(), SyncError> {
        let id = v["id"]
            .as_str()
            .ok_or(SyncError::BadResponse("POST/PATCH /v1/convai/tools"))?;
        if let Some(w) = self.pending.pop_front() {
            // Read back like the agent's PATCH: a field the service dropped or normalised
            // would make every run write this tool again.
            let left = differences(&v["tool_config"], &w.config);
            if !left.is_empty() {
                self.writes += 1;
                return Err(SyncError::ToolNotApplied {
                    tool: w.name,
                    fields: left.into_iter().map(|(path, _, _)| path).collect(),
                });
            }
            self.ids.push((w.name, id.to_owned()));
            if let Some(t) = self.tools.iter_mut().find(|t| t["id"] == id) {
                *t = v.clone();
            } else {
                self.tools.push(v.clone());
            }
        }
        self.writes += 1;
        self.phase = Phase::ToolWrites;
        if self.pending.is_empty() {
            self.plan_agent();
        }
        Ok(())
    }

    /// The agent's changes; the PATCH when there are any (and this is no dry run).
    fn plan_agent(&mut self) {
        let plan = plan_agent(&self.agent, &self.ids, &self.tools, &self.settings);
        self.lines.extend(plan.notes);
        if plan.diff.is_empty() {
            self.lines.push("  agent: in sync".into());
        } else {
            let id = &self.settings.agent_id;
            self.lines.push(format!("~ agent {id}:"));
            self.lines
                .extend(plan.diff.iter().map(|d| format!("    {d}")));
            self.changes += plan.diff.len();
        }
        self.phase = match plan.patch {
            Some(body) if !self.dry_run => Phase::PatchAgent(body),
            _ => Phase::Done,
        };
    }

    /// The agent the PATCH answered, compared as the GOT one was: ignis's settings must have
    /// taken, or the sync fails naming the fields (as `twilio configure` does, docs/twilio.md §9).
    fn check_patched(&self, agent: &Value) -> Result<(), SyncError> {
        const WHAT: &str = "PATCH /v1/convai/agents/{id}";
        if !agent["conversation_config"].is_object() {
            return Err(SyncError::BadResponse(WHAT));
        }
        let left = plan_agent(agent, &self.ids, &self.tools, &self.settings).diff;
        if left.is_empty() {
            return Ok(());
        }
        let fields = left
            .iter()
            .map(|d| {
                d.split_once(": ")
                    .map_or(d.as_str(), |(path, _)| path)
                    .to_owned()
            })
            .collect();
        Err(SyncError::NotApplied(fields))
    }

    /// The report so far (also after an error: what was already done).
    pub fn report(&self) -> Report {
        self.report_ending(None)
    }

    /// The report of a sync stopped by an error: its last line says the service may hold only
    /// part of the changes listed, instead of "done".
    pub fn report_stopped(&self) -> Report {
        self.report_ending(Some(format!(
            "stopped after {} write(s): the service may hold only part of the changes above; \
             fix the error and run ignis agent sync again (it compares anew and writes what \
             is missing)",
            self.writes
        )))
    }

    fn report_ending(&self, stopped: Option<String>) -> Report {
        let mut lines = self.lines.clone();
        lines.push(if let Some(line) = stopped {
            line
        } else if self.changes == 0 {
            "in sync: nothing to change".into()
        } else if self.dry_run {
            format!("dry run: {} change(s), nothing written", self.changes)
        } else {
            format!("done: {} change(s), {} write(s)", self.changes, self.writes)
        });
        Report {
            lines,
            changes: self.changes,
            writes: self.writes,
        }
    }
}

/// Most characters of a service's error message shown.
const MAX_ERROR_DETAIL_CHARS: usize = 300;

/// The service's error message, shortened and without control characters. A validation error
/// (FastAPI's `detail: [{loc, msg, input, …}]`) is shown as `loc: msg` only: its `input` echoes
/// what was sent, which for a secret is `Bearer <TOOLS_TOKEN>`.
fn error_detail(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = match &v["detail"] {
        Value::Object(d) => d
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                let loc: Vec<String> = i["loc"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_owned))
                    .collect();
                format!(
                    "{}: {}",
                    loc.join("."),
                    i["msg"].as_str().unwrap_or("invalid")
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        Value::Null => String::from_utf8_lossy(body).into_owned(),
        other => other.to_string(),
    };
    super::shown(&text, MAX_ERROR_DETAIL_CHARS)
}

/// The ids in the agent's `conversation_config.agent.prompt.tool_ids`.
fn attached_ids(agent: &Value) -> Vec<String> {
    agent["conversation_config"]["agent"]["prompt"]["tool_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str().map(str::to_owned))
        .collect()
}

/// This deployment's tool named `name`: the one attached to this agent, else a webhook tool of
/// that name that already points at `origin` (left by an earlier run that stopped before the
/// agent was changed, or made by hand for this host), else a client tool of that name (its
/// config names no host). A same-named webhook tool on another host belongs to another
/// deployment sharing the workspace (staging beside production): never taken, so a sync cannot
/// repoint another deployment's tools. Returns its id and the tool.
fn pick_tool(
    tools: &[Value],
    name: &str,
    attached: &[String],
    origin: &str,
) -> Option<(String, Value)> {
    let named = || tools.iter().filter(|t| t["tool_config"]["name"] == name);
    let ours = |t: &&Value| {
        let c = &t["tool_config"];
        match c["type"].as_str() {
            Some("webhook") => c["api_schema"]["url"]
                .as_str()
                .is_some_and(|u| u.starts_with(&format!("{origin}/"))),
            _ => true,
        }
    };
    let chosen = named()
        .find(|t| attached.iter().any(|a| t["id"] == a.as_str()))
        .or_else(|| named().find(ours))?;
    Some((chosen["id"].as_str()?.to_owned(), chosen.clone()))
}

/// Where `current` differs from `desired`, compared on the fields ignis sets only: the service
/// adds defaults to what it stores (`disable_interruptions`, `assignments`, …) and returns them,
/// so a field ignis does not send is never a difference. Paths are dotted.
fn differences(current: &Value, desired: &Value) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    diff_into("", current, desired, &mut out);
    out
}

fn diff_into(path: &str, current: &Value, desired: &Value, out: &mut Vec<(String, Value, Value)>) {
    match desired {
        Value::Object(d) => {
            for (k, dv) in d {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_into(&p, current.get(k).unwrap_or(&Value::Null), dv, out);
            }
        }
        Value::Array(d) => {
            let same = current
                .as_array()
                .is_some_and(|c| c.len() == d.len() && c.iter().zip(d).all(|(a, b)| covers(a, b)));
            if !same {
                out.push((path.to_owned(), current.clone(), desired.clone()));
            }
        }
        _ if !covers(current, desired) => {
            out.push((path.to_owned(), current.clone(), desired.clone()))
        }
        _ => {}
    }
}

/// Whether `current` has everything `desired` says (numbers compared as numbers).
fn covers(current: &Value, desired: &Value) -> bool {
    match (current, desired) {
        (Value::Object(c), Value::Object(d)) => d
            .iter()
            .all(|(k, dv)| c.get(k).is_some_and(|cv| covers(cv, dv))),
        (Value::Array(c), Value::Array(d)) => {
            c.len() == d.len() && c.iter().zip(d).all(|(a, b)| covers(a, b))
        }
        (Value::Number(c), Value::Number(d)) => c.as_f64() == d.as_f64(),
        _ => current == desired,
    }
}

fn show_differences(diffs: &[(String, Value, Value)]) -> Vec<String> {
    let mut lines: Vec<String> = diffs
        .iter()
        .take(MAX_SHOWN_DIFFERENCES)
        .map(|(p, old, new)| format!("    {p}: {}", change(old, new)))
        .collect();
    if diffs.len() > MAX_SHOWN_DIFFERENCES {
        lines.push(format!(
            "    … and {} more",
            diffs.len() - MAX_SHOWN_DIFFERENCES
        ));
    }
    lines
}

/// `old → new`, long texts by their length; lists and maps by what they gain and lose.
fn change(old: &Value, new: &Value) -> String {
    let listed = |v: &Value| -> Option<Vec<String>> {
        match v {
            Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_owned)).collect(),
            Value::Object(m) => Some(m.keys().cloned().collect()),
            _ => None,
        }
    };
    if let (Some(o), Some(n)) = (listed(old), listed(new))
        && old.is_array() == new.is_array()
    {
        let added: Vec<&str> = n
            .iter()
            .filter(|x| !o.contains(x))
            .map(|x| x.as_str())
            .collect();
        let removed: Vec<&str> = o
            .iter()
            .filter(|x| !n.contains(x))
            .map(|x| x.as_str())
            .collect();
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!("+ {}", added.join(", ")));
        }
        if !removed.is_empty() {
            parts.push(format!("- {}", removed.join(", ")));
        }
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    format!("{} → {}", diff_value(old), diff_value(new))
}

/// A JSON value for the diff: long texts by their length, never cut (the diff compares them).
fn diff_value(v: &Value) -> String {
    match v {
        Value::Null => "(unset)".into(),
        Value::String(s) if s.chars().count() > LONG_TEXT => {
            format!("{} chars", grouped(s.chars().count()))
        }
        other => {
            let s = other.to_string();
            if s.chars().count() > LONG_TEXT * 2 {
                format!("{} chars of JSON", grouped(s.chars().count()))
            } else {
                s
            }
        }
    }
}

/// `5210` → `5 210`.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// One line about a new tool: its type and where it goes.
fn summary(config: &Value) -> String {
    match config["type"].as_str() {
        Some("webhook") => format!(
            "webhook {} {}",
            config["api_schema"]["method"].as_str().unwrap_or("GET"),
            config["api_schema"]["url"].as_str().unwrap_or_default()
        ),
        Some(kind) => format!("{kind} tool"),
        None => "tool".into(),
    }
}

/// The agent's planned changes.
#[derive(Debug, Clone, PartialEq)]
struct AgentPlan {
    /// The PATCH body: each changed top-level sub-object, whole.
    patch: Option<Value>,
    /// `path: old → new`, one per change.
    diff: Vec<String>,
    /// What the operator should know (foreign tools kept, a missing system tool).
    notes: Vec<String>,
}

/// Applies ignis's settings to the GOT agent (docs/elevenlabs.md §11) and keeps what changed.
fn plan_agent(
    agent: &Value,
    ids: &[(String, String)],
    tools: &[Value],
    s: &SyncSettings,
) -> AgentPlan {
    let mut conv = agent["conversation_config"].clone();
    let mut platform = match &agent["platform_settings"] {
        Value::Object(_) => agent["platform_settings"].clone(),
        _ => json!({}),
    };
    let mut diff = Vec::new();
    let (tool_ids, notes) = merged_tool_ids(agent, ids, tools);
    let placeholders =
        merged_placeholders(&conv["agent"]["dynamic_variables"]["dynamic_variable_placeholders"]);
    let events = merged_events(&conv["conversation"]["client_events"]);
    let edits: [(&[&str], Value); 10] = [
        (&["agent", "prompt", "prompt"], json!(prompt())),
        (&["agent", "prompt", "tool_ids"], json!(tool_ids)),
        (&["agent", "first_message"], json!(FIRST_MESSAGE)),
        (
            &["agent", "disable_first_message_interruptions"],
            json!(true),
        ),
        (&["agent", "language"], json!(LANGUAGE)),
        (
            &[
                "agent",
                "dynamic_variables",
                "dynamic_variable_placeholders",
            ],
            placeholders,
        ),
        (&["asr", "user_input_audio_format"], json!(AUDIO_FORMAT)),
        (&["tts", "agent_output_audio_format"], json!(AUDIO_FORMAT)),
        (&["conversation", "client_events"], events),
        (
            &["conversation", "max_duration_seconds"],
            json!(MAX_DURATION_SECONDS),
        ),
    ];
    let old_ids = attached_ids(agent);
    for (path, new) in edits {
        set(&mut conv, "conversation_config", path, new, &mut diff);
    }
    if let Some(model) = conv["tts"]["model_id"]
        .as_str()
        .and_then(multilingual_model)
    {
        let path: &[&str] = &["tts", "model_id"];
        set(
            &mut conv,
            "conversation_config",
            path,
            json!(model),
            &mut diff,
        );
    }
    // The deprecated inline `agent.prompt.tools` comes back with the GET; sent beside
    // `tool_ids` it could be refused or win (docs/elevenlabs.md §11). Tools attach by id only.
    if let Some(prompt) = conv
        .get_mut("agent")
        .and_then(|a| a.get_mut("prompt"))
        .and_then(Value::as_object_mut)
    {
        prompt.remove("tools");
    }
    // The attached tools by name: ids alone say nothing to the operator.
    let tool_line = "conversation_config.agent.prompt.tool_ids:";
    if let Some(line) = diff.iter_mut().find(|l| l.starts_with(tool_line)) {
        let added: Vec<String> = tool_ids
            .iter()
            .filter(|i| !old_ids.contains(i))
            .map(|i| tool_label(i, ids, tools))
            .collect();
        let dropped: Vec<String> = old_ids
            .iter()
            .filter(|i| !tool_ids.contains(i))
            .map(|i| tool_label(i, ids, tools))
            .collect();
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!("+ {}", added.join(", ")));
        }
        if !dropped.is_empty() {
            parts.push(format!("- {}", dropped.join(", ")));
        }
        *line = format!("{tool_line} {}", parts.join("; "));
    }
    let conv_changed = !diff.is_empty();
    let privacy: [(&[&str], Value); 2] = [
        (&["privacy", "record_voice"], json!(s.record_voice)),
        (&["privacy", "retention_days"], json!(s.retention_days)),
    ];
    let before = diff.len();
    for (path, new) in privacy {
        set(&mut platform, "platform_settings", path, new, &mut diff);
    }
    let mut body = Map::new();
    if conv_changed {
        body.insert("conversation_config".into(), conv);
    }
    if diff.len() > before {
        body.insert("platform_settings".into(), platform);
    }
    AgentPlan {
        patch: (!body.is_empty()).then_some(Value::Object(body)),
        diff,
        notes,
    }
}

/// A tool's name for the report (its id when it has none).
fn tool_label(id: &str, ids: &[(String, String)], tools: &[Value]) -> String {
    ids.iter()
        .find(|(_, i)| i == id)
        .map(|(n, _)| n.clone())
        .or_else(|| {
            tools
                .iter()
                .find(|t| t["id"] == id)
                .and_then(|t| t["tool_config"]["name"].as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| id.to_owned())
}

/// Sets `path` under `root` to `new` and records `root.path: old → new` when it changes.
fn set(root: &mut Value, name: &str, path: &[&str], new: Value, diff: &mut Vec<String>) {
    let mut at = &mut *root;
    for key in path {
        if !at.is_object() {
            *at = json!({});
        }
        at = &mut at[*key];
    }
    if !covers(at, &new) || !covers(&new, at) {
        diff.push(format!("{name}.{}: {}", path.join("."), change(at, &new)));
        *at = new;
    }
}

/// The attached ids with ignis's tools' ids added; tools ignis does not know are kept and
/// reported, ids of tools that no longer exist are dropped and reported.
fn merged_tool_ids(
    agent: &Value,
    ids: &[(String, String)],
    tools: &[Value],
) -> (Vec<String>, Vec<String>) {
    let name_of = |id: &str| {
        tools
            .iter()
            .find(|t| t["id"] == id)
            .and_then(|t| t["tool_config"]["name"].as_str())
    };
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for id in attached_ids(agent) {
        let ours = ids.iter().any(|(_, i)| *i == id);
        match name_of(&id) {
            _ if ours => {}
            None if !id.starts_with('<') => {
                notes.push(format!(
                    "! tool_ids: {id} names no tool in the workspace: dropped"
                ));
                continue;
            }
            Some(name) if name == crate::bridge::TOOL_END_CALL => notes.push(format!(
                "! tool {name} ({id}) is attached and kept, but it shadows ElevenLabs' system tool \
                 end_call, which ignis relies on: remove it from the agent"
            )),
            Some(name) => notes.push(format!(
                "! tool {name} ({id}) is attached but not one of ignis's tools: kept"
            )),
            None => {}
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    for (_, id) in ids {
        if !out.contains(id) {
            out.push(id.clone());
        }
    }
    let system_end_call =
        &agent["conversation_config"]["agent"]["prompt"]["built_in_tools"]["end_call"];
    if system_end_call.is_null() {
        // `agent.prompt.built_in_tools.end_call` (SDK `built_in_tools_output.py`). Reported,
        // not set: the write shape of system tools is not verified (docs/elevenlabs.md §11).
        notes.push(
            "! the system tool end_call looks disabled: enable it in the agent's tools \
             (the prompt ends calls with it)"
                .into(),
        );
    }
    (out, notes)
}

/// The placeholders with one added for each variable ignis sends that has none (existing
/// values are the operator's and stay).
fn merged_placeholders(current: &Value) -> Value {
    let mut m = current.as_object().cloned().unwrap_or_default();
    for name in DYNAMIC_VARIABLE_NAMES {
        m.entry(name.to_owned())
            .or_insert_with(|| json!(placeholder(name)));
    }
    Value::Object(m)
}

/// A dashboard test call's value for `name` (real calls get real values from ignis).
fn placeholder(name: &str) -> &'static str {
    match name {
        CALL_TOKEN_VARIABLE => "dashboard-test",
        "caller_number" => "+4930000000000",
        "called_number" => "+4930000000001",
        "call_sid" => "CA00000000000000000000000000000000",
        "today_local" => "Montag, 6. Januar 2025",
        "now_local" => "10:00",
        "practice_name" => "Praxis",
        "practice_open_now" => "ja",
        "hours_today" => "08:00–12:00, 14:00–18:00",
        _ => "-",
    }
}

/// The client events with the ones ignis needs added (others the operator chose stay).
fn merged_events(current: &Value) -> Value {
    let mut events: Vec<Value> = current.as_array().cloned().unwrap_or_default();
    for e in REQUIRED_CLIENT_EVENTS {
        if !events.iter().any(|v| v == e) {
            events.push(json!(e));
        }
    }
    Value::Array(events)
}

/// `agent_signed_url`: whether a signed URL was obtained (`Err` carries why not).
pub fn check_signed_url(result: Result<(), String>) -> Check {
    match result {
        Ok(()) => Check::pass("agent_signed_url", "a signed URL is obtainable"),
        Err(why) => Check::fail(
            "agent_signed_url",
            format!("no signed URL: {why}"),
            "check ELEVENLABS_API_KEY, ELEVENLABS_AGENT_ID and ELEVENLABS_API_BASE (EU residency \
             agents need https://api.eu.residency.elevenlabs.io)",
        ),
    }
}

/// `agent_tools`: each of ignis's tools exists, is attached, lists `practice.toml`'s visit types
/// and practitioners (`vocabulary`), and (webhooks) points at `origin/api/…` with the workspace
/// secret as `Authorization` (the one `secret` expects: TOOLS_TOKEN's when it is set) and the
/// call token as `X-Ignis-Call`.
pub fn check_tools(
    agent: &Value,
    tools: &[Value],
    origin: &str,
    secret: &ExpectedSecret,
    vocabulary: &ToolVocabulary,
) -> Check {
    let attached = attached_ids(agent);
    let mut problems = Vec::new();
    for (name, _) in TOOL_FILES {
        let Some((id, tool)) = pick_tool(tools, name, &attached, origin) else {
            problems.push(format!("{name} missing"));
            continue;
        };
        if !attached.contains(&id) {
            problems.push(format!("{name} not attached"));
        }
        let c = &tool["tool_config"];
        problems.extend(vocabulary_problems(name, c, vocabulary));
        if c["type"] == "client" {
            if c["expects_response"] != true {
                problems.push(format!("{name} does not expect a response"));
            }
            continue;
        }
        problems.extend(webhook_problems(name, c, origin, secret));
    }
    if problems.is_empty() {
        Check::pass(
            "agent_tools",
            format!(
                "{} tools attached, on {origin}/api with the secret header and the call token",
                TOOL_FILES.len()
            ),
        )
    } else {
        Check::fail("agent_tools", problems.join("; "), "run `ignis agent sync`")
    }
}

/// Where `c`'s `visit_type` and `practitioner` lists are not `vocabulary`'s: the agent would
/// offer what the endpoints refuse (`invalid_input`), or never offer what the practice has.
fn vocabulary_problems(name: &str, c: &Value, vocabulary: &ToolVocabulary) -> Vec<String> {
    let codes: Vec<&str> = vocabulary
        .visit_types
        .iter()
        .map(|v| v.code.as_str())
        .collect();
    let names: Vec<&str> = vocabulary
        .practitioners
        .iter()
        .map(String::as_str)
        .collect();
    let mut problems = Vec::new();
    let mut c = c.clone();
    for_each_property(&mut c, &mut |param, schema| {
        let (want, what) = match param {
            "visit_type" => (&codes, "visit types"),
            "practitioner" => (&names, "practitioners"),
            _ => return,
        };
        let have: Vec<&str> = schema["enum"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if have != *want {
            problems.push(format!("{name}: its {what} are not practice.toml's"));
        }
    });
    problems
}

fn webhook_problems(name: &str, c: &Value, origin: &str, secret: &ExpectedSecret) -> Vec<String> {
    let mut problems = Vec::new();
    let url = c["api_schema"]["url"].as_str().unwrap_or_default();
    if !url.starts_with(&format!("{origin}/api/")) {
        let host = Endpoint::parse(url)
            .map(|e| e.host_header())
            .unwrap_or_else(|_| url.to_owned());
        problems.push(format!("{name} points at {host}, not {origin}/api"));
    }
    let headers = &c["api_schema"]["request_headers"];
    match (headers["Authorization"]["secret_id"].as_str(), secret) {
        (None, _) => problems.push(format!("{name}: Authorization is not a workspace secret")),
        (Some(_), ExpectedSecret::Any) => {}
        (Some(have), ExpectedSecret::Id(want)) if have == want => {}
        (Some(_), _) => problems.push(format!(
            "{name}: Authorization uses another secret than TOOLS_TOKEN's"
        )),
    }
    if headers["X-Ignis-Call"]["variable_name"] != CALL_TOKEN_VARIABLE {
        problems.push(format!(
            "{name}: X-Ignis-Call is not {{{{{CALL_TOKEN_VARIABLE}}}}}"
        ));
    }
    problems
}

/// `agent_settings`: μ-law both ways, the client events, a placeholder for every variable, a
/// greeting that discloses the AI and is not interruptible, and the privacy settings.
pub fn check_settings(agent: &Value, record_voice: bool, retention_days: u32) -> Check {
    let conv = &agent["conversation_config"];
    let mut problems = Vec::new();
    for (path, v) in [
        (
            "asr.user_input_audio_format",
            &conv["asr"]["user_input_audio_format"],
        ),
        (
            "tts.agent_output_audio_format",
            &conv["tts"]["agent_output_audio_format"],
        ),
    ] {
        if v != AUDIO_FORMAT {
            problems.push(format!("{path} is {}, not {AUDIO_FORMAT}", diff_value(v)));
        }
    }
    let events = &conv["conversation"]["client_events"];
    let missing: Vec<&str> = REQUIRED_CLIENT_EVENTS
        .into_iter()
        .filter(|e| !events.as_array().is_some_and(|a| a.iter().any(|v| v == e)))
        .collect();
    if !missing.is_empty() {
        problems.push(format!("client events missing: {}", missing.join(", ")));
    }
    let placeholders = &conv["agent"]["dynamic_variables"]["dynamic_variable_placeholders"];
    let missing: Vec<&str> = DYNAMIC_VARIABLE_NAMES
        .into_iter()
        .filter(|n| placeholders[*n].is_null())
        .collect();
    if !missing.is_empty() {
        problems.push(format!("placeholders missing: {}", missing.join(", ")));
    }
    if !discloses_ai(conv["agent"]["first_message"].as_str().unwrap_or_default()) {
        problems.push("the greeting does not say it is an AI (EU AI Act Art. 50)".into());
    }
    if conv["agent"]["disable_first_message_interruptions"] != true {
        problems.push("the greeting can be interrupted".into());
    }
    if conv["agent"]["language"] != LANGUAGE {
        let language = diff_value(&conv["agent"]["language"]);
        problems.push(format!("agent.language is {language}, not {LANGUAGE}"));
    }
    if let Some(model) = conv["tts"]["model_id"].as_str()
        && multilingual_model(model).is_some()
    {
        problems.push(format!("tts.model_id {model} speaks English only"));
    }
    let privacy = &agent["platform_settings"]["privacy"];
    if privacy["record_voice"] != record_voice {
        problems.push(format!(
            "record_voice is {}, ELEVENLABS_RECORD_VOICE says {record_voice}",
            diff_value(&privacy["record_voice"])
        ));
    }
    if privacy["retention_days"] != retention_days {
        problems.push(format!(
            "retention_days is {}, ELEVENLABS_RETENTION_DAYS says {retention_days}",
            diff_value(&privacy["retention_days"])
        ));
    }
    if problems.is_empty() {
        Check::pass(
            "agent_settings",
            format!(
                "{AUDIO_FORMAT} both ways, client events, placeholders, AI greeting, \
                 record_voice {record_voice}, retention {retention_days} days"
            ),
        )
    } else {
        Check::fail(
            "agent_settings",
            problems.join("; "),
            "run `ignis agent sync`",
        )
    }
}

/// The multilingual sibling of an English-only voice model: German needs one, and the service
/// refuses `language = de` with the English-only models (docs/elevenlabs.md §11); `None` for
/// every other model (left as the operator chose it).
fn multilingual_model(model: &str) -> Option<&'static str> {
    match model {
        "eleven_flash_v2" => Some("eleven_flash_v2_5"),
        "eleven_turbo_v2" => Some("eleven_turbo_v2_5"),
        _ => None,
    }
}

/// Whether a greeting says the caller talks to an AI: the word `KI`/`AI` (also in compounds
/// such as `KI-Assistenz`) or `künstliche Intelligenz`.
pub fn discloses_ai(greeting: &str) -> bool {
    let lower = greeting.to_lowercase();
    lower.contains("künstliche intelligenz")
        || lower
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| w == "ki" || w == "ai")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_show_where_and_why_never_the_input() {
        let body = br#"{"detail":[{"type":"string_too_long","loc":["body","value"],
            "msg":"String too long","input":"Bearer secret-tools-token-0123456789"}]}"#;
        assert_eq!(error_detail(body), "body.value: String too long");
        let body = br#"{"detail":{"status":"invalid_api_key","message":"Invalid \u001b[2J key"}}"#;
        assert_eq!(error_detail(body), "Invalid [2J key");
    }

    const ORIGIN: &str = "https://ignis.example.com";
    const TOKEN: &str = "tools-token-0123456789abcdef";

    fn settings() -> SyncSettings {
        SyncSettings {
            agent_id: "agent_1".into(),
            origin: ORIGIN.into(),
            tools_token: AuthToken::new(TOKEN),
            record_voice: false,
            retention_days: 30,
            vocabulary: demo_words(),
        }
    }

    fn demo_words() -> ToolVocabulary {
        ToolVocabulary::of(&crate::practice::config::PracticeConfig::demo())
    }

    #[test]
    fn the_agent_files_are_complete() {
        let tools = desired_tools(ORIGIN, "sec_1", &demo_words()).unwrap();
        assert_eq!(tools.len(), 7);
        for t in &tools[..6] {
            assert_eq!(t["type"], "webhook");
            let url = t["api_schema"]["url"].as_str().unwrap();
            assert!(url.starts_with("https://ignis.example.com/api/"), "{url}");
            assert_eq!(
                t["api_schema"]["request_headers"]["Authorization"]["secret_id"],
                "sec_1"
            );
            assert!(!t.to_string().contains("IGNIS_"));
        }
        assert_eq!(tools[6]["type"], "client");
        assert_eq!(tools[6]["expects_response"], true);
        assert!(prompt().starts_with("## 1."), "{}", &prompt()[..20]);
        assert!(!prompt().contains("-->"));
        // The call token is for headers only, never for the model.
        assert!(!prompt().contains(CALL_TOKEN_VARIABLE));
        assert!(discloses_ai(FIRST_MESSAGE));
        assert!(!discloses_ai("Guten Tag, Praxis Dr. Kim."));
    }

    fn listed(configs: &[Value]) -> (Value, Vec<Value>) {
        let tools: Vec<Value> = configs
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"id": format!("t{i}"), "tool_config": c}))
            .collect();
        let agent = json!({"conversation_config": {"agent": {"prompt": {
            "tool_ids": (0..tools.len()).map(|i| format!("t{i}")).collect::<Vec<_>>()}}}});
        (agent, tools)
    }

    #[test]
    fn the_tools_list_the_practices_own_visit_types_and_doctors() {
        let word = |code: &str, label: &str, phone_bookable, new_patients_ok| VisitTypeWord {
            code: code.into(),
            label: label.into(),
            phone_bookable,
            new_patients_ok,
        };
        let words = ToolVocabulary {
            visit_types: vec![
                word("sprechstunde", "Sprechstunde", true, true),
                word("ultraschall", "Ultraschall", false, false),
                word("kontrolle", "Kontrolle", true, false),
            ],
            practitioners: vec!["Dr. Weber".into()],
        };
        let tools = desired_tools(ORIGIN, "sec_1", &words).unwrap();
        let slots = &tools[1]["api_schema"]["query_params_schema"]["properties"];
        assert_eq!(
            slots["visit_type"]["enum"],
            json!(["sprechstunde", "ultraschall", "kontrolle"])
        );
        assert_eq!(
            slots["visit_type"]["description"],
            "Art des Termins: sprechstunde (Sprechstunde, auch für neue Patienten); \
             ultraschall (Ultraschall, nur über das Praxisteam); kontrolle (Kontrolle)."
        );
        assert_eq!(slots["practitioner"]["enum"], json!(["Dr. Weber"]));
        let book = &tools[2]["api_schema"]["request_body_schema"]["properties"]["visit_type"];
        assert_eq!(book["enum"], slots["visit_type"]["enum"]);
        assert_eq!(book["description"], VISIT_TYPE_AS_IN_FIND_SLOTS);

        // Tools synced for the Demo Praxis fail the doctor's check for this practice.
        let (agent, demo) = listed(&desired_tools(ORIGIN, "sec_1", &demo_words()).unwrap());
        let secret = ExpectedSecret::Id("sec_1".into());
        let c = check_tools(&agent, &demo, ORIGIN, &secret, &words);
        assert_eq!(c.status, super::super::Status::Fail);
        for problem in [
            "find_slots: its visit types are not practice.toml's",
            "find_slots: its practitioners are not practice.toml's",
            "book_appointment: its visit types are not practice.toml's",
        ] {
            assert!(c.detail.contains(problem), "{}", c.detail);
        }
        let (agent, own) = listed(&tools);
        let c = check_tools(&agent, &own, ORIGIN, &secret, &words);
        assert_eq!(c.status, super::super::Status::Pass, "{}", c.detail);

        // The tool files hold what the Demo Praxis's sync makes of them: the files read as the
        // tools are sent.
        for (i, (_, text)) in TOOL_FILES.iter().enumerate() {
            let file: Value = serde_json::from_str(text).unwrap();
            let mut sent = demo[i]["tool_config"].clone();
            let mut want = file["tool_config"].clone();
            for c in [&mut sent, &mut want] {
                c["api_schema"]["url"] = Value::Null;
                c["api_schema"]["request_headers"]["Authorization"] = Value::Null;
            }
            assert_eq!(sent, want, "{}", TOOL_FILES[i].0);
        }

        // No practitioners listed: no `enum` (an empty one would admit nothing).
        let none = ToolVocabulary {
            practitioners: Vec::new(),
            ..words
        };
        let tools = desired_tools(ORIGIN, "sec_1", &none).unwrap();
        let p = &tools[1]["api_schema"]["query_params_schema"]["properties"]["practitioner"];
        assert!(p.get("enum").is_none(), "{p}");
    }

    #[test]
    fn the_secret_name_carries_a_fingerprint_not_the_token() {
        let n = secret_name(TOKEN);
        assert!(n.starts_with(SECRET_NAME_PREFIX) && n.len() == SECRET_NAME_PREFIX.len() + 8);
        assert_ne!(n, secret_name("another-token-0123456789"));
        assert!(!n.contains(TOKEN));
    }

    #[test]
    fn comparison_ignores_service_defaults_but_not_our_fields() {
        let desired = json!({"name": "x", "n": 8, "api_schema": {"url": "u", "h": {"a": 1}}});
        let mut stored = desired.clone();
        stored["assignments"] = json!([]);
        stored["n"] = json!(8.0);
        assert!(differences(&stored, &desired).is_empty());
        stored["api_schema"]["url"] = json!("v");
        let d = differences(&stored, &desired);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, "api_schema.url");
        assert_eq!(grouped(5210), "5 210");
        assert_eq!(grouped(123), "123");
        assert_eq!(diff_value(&json!("x".repeat(5210))), "5 210 chars");
    }

    #[test]
    fn the_agent_plan_keeps_foreign_tools_and_sends_whole_sub_objects() {
        let mut agent = crate::sim::elevenlabs_api::sample_agent("agent_1");
        agent["conversation_config"]["agent"]["prompt"]["tool_ids"] = json!(["tool_w"]);
        let tools = vec![json!({"id": "tool_w", "tool_config": {"name": "weather"}})];
        let ids = vec![("find_slots".to_owned(), "tool_f".to_owned())];
        let plan = plan_agent(&agent, &ids, &tools, &settings());
        let body = plan.patch.unwrap();
        let conv = &body["conversation_config"];
        assert_eq!(
            conv["agent"]["prompt"]["tool_ids"],
            json!(["tool_w", "tool_f"])
        );
        assert_eq!(
            conv["agent"]["prompt"]["llm"], "gemini-2.0-flash",
            "GOT fields stay"
        );
        assert_eq!(conv["turn"]["turn_timeout"], 7.0);
        assert_eq!(body["platform_settings"]["privacy"]["record_voice"], false);
        assert_eq!(
            body["platform_settings"]["overrides"],
            agent["platform_settings"]["overrides"]
        );
        assert!(plan.notes.iter().any(|n| n.contains("weather")));
        let shown = plan.diff.join("\n");
        // The prompt is shown by its length, not its text (its length changes with edits).
        assert!(
            shown.contains("prompt.prompt: \"You are a helpful assistant.\" → ")
                && shown
                    .lines()
                    .any(|l| l.contains("prompt.prompt") && l.ends_with(" chars")),
            "{shown}"
        );
        assert!(shown.contains("tool_ids: + find_slots\n"), "{shown}");
        assert!(!plan.notes.iter().any(|n| n.contains("end_call")));
        let mut bare = agent.clone();
        bare["conversation_config"]["agent"]["prompt"]["built_in_tools"] = json!({});
        let no_end_call = plan_agent(&bare, &ids, &tools, &settings());
        assert!(
            no_end_call
                .notes
                .iter()
                .any(|n| n.contains("system tool end_call"))
        );
        // Applied, the plan is empty.
        agent["conversation_config"] = conv.clone();
        agent["platform_settings"] = body["platform_settings"].clone();
        let again = plan_agent(&agent, &ids, &tools, &settings());
        assert_eq!(again.patch, None, "{:?}", again.diff);
        assert_eq!(
            check_settings(&agent, false, 30).status,
            super::super::Status::Pass
        );
        assert_eq!(
            check_settings(&agent, true, 30).status,
            super::super::Status::Fail
        );

        // An English-only voice model cannot speak German: the sync moves it to its
        // multilingual sibling, and the doctor names it (and a language other than de).
        agent["conversation_config"]["tts"]["model_id"] = json!("eleven_turbo_v2");
        agent["conversation_config"]["agent"]["language"] = json!("en");
        let c = check_settings(&agent, false, 30);
        assert!(
            c.detail
                .contains("tts.model_id eleven_turbo_v2 speaks English only"),
            "{c}"
        );
        assert!(c.detail.contains("agent.language is \"en\", not de"), "{c}");
        let plan = plan_agent(&agent, &ids, &tools, &settings());
        let conv = &plan.patch.unwrap()["conversation_config"];
        assert_eq!(conv["tts"]["model_id"], "eleven_turbo_v2_5");
        assert_eq!(conv["tts"]["agent_output_audio_format"], AUDIO_FORMAT);
        assert_eq!(conv["agent"]["language"], LANGUAGE);
        assert!(
            plan.diff.iter().any(|l| l.contains("tts.model_id")),
            "{:?}",
            plan.diff
        );
    }

    #[test]
    fn a_tool_on_another_host_fails_the_check_naming_it() {
        let configs = desired_tools("https://old.example.net", "sec_1", &demo_words()).unwrap();
        let (agent, tools) = listed(&configs);
        let check = |tools: &[Value], secret: &str| {
            let secret = ExpectedSecret::Id(secret.into());
            check_tools(&agent, tools, ORIGIN, &secret, &demo_words())
        };
        let c = check(&tools, "sec_1");
        assert_eq!(c.status, super::super::Status::Fail);
        assert!(c.detail.contains("old.example.net"), "{}", c.detail);
        assert!(c.fix.unwrap().contains("ignis agent sync"));
        let (_, good) = listed(&desired_tools(ORIGIN, "sec_1", &demo_words()).unwrap());
        assert_eq!(check(&good, "sec_1").status, super::super::Status::Pass);
        let other = check(&good, "sec_2");
        assert!(other.detail.contains("another secret"), "{}", other.detail);
    }

    #[test]
    fn a_listing_pages_to_the_end_and_the_secret_is_found_by_name() {
        let mut l = Listing::secrets(TOKEN);
        let ListStep::Get(first) = l.poll() else {
            panic!()
        };
        assert!(first.contains("&search=ignis_tools_"), "{first}");
        let page = json!({"secrets": [{"name": "other", "secret_id": "s0"}],
                          "next_cursor": "c1", "has_more": true});
        l.handle(&page).unwrap();
        assert!(matches!(l.poll(), ListStep::Get(t) if t.ends_with("&cursor=c1")));
        let name = secret_name(TOKEN);
        l.handle(&json!({"secrets": [{"name": name, "secret_id": "s1"}], "has_more": false}))
            .unwrap();
        let ListStep::Done(all) = l.poll() else {
            panic!()
        };
        assert_eq!(all.len(), 2);
        assert_eq!(
            ExpectedSecret::find(Some(TOKEN), &all),
            ExpectedSecret::Id("s1".into())
        );
        assert_eq!(
            ExpectedSecret::find(Some(TOKEN), &all[..1]),
            ExpectedSecret::Missing
        );
        assert_eq!(ExpectedSecret::find(None, &all[..1]), ExpectedSecret::Any);
        let mut endless = Listing::tools();
        let more = json!({"tools": [], "next_cursor": "c", "has_more": true});
        let stopped = (0..MAX_PAGES).find_map(|_| endless.handle(&more).err());
        assert_eq!(stopped, Some(ListError::TooManyPages("/v1/convai/tools")));
        assert_eq!(
            Listing::tools().handle(&json!({})).unwrap_err().to_string(),
            "GET /v1/convai/tools: no tools"
        );
    }

    /// The sans-IO stand-in's answer to one of the sync's calls.
    fn answer(
        w: &mut crate::sim::elevenlabs_api::Workspace,
        call: ApiCall,
    ) -> crate::sim::elevenlabs_api::ApiResponse {
        w.handle(&crate::sim::elevenlabs_api::ApiRequest {
            method: call.method.into(),
            target: call.target,
            api_key: Some("k".into()),
            body: call
                .body
                .map(|b| b.to_string().into_bytes())
                .unwrap_or_default(),
        })
    }

    /// Runs a sync against the sans-IO stand-in to its end.
    fn drive(w: &mut crate::sim::elevenlabs_api::Workspace, dry_run: bool) -> Report {
        let mut sync = AgentSync::new(settings(), dry_run);
        loop {
            let call = match sync.poll() {
                Step::Call(c) => c,
                Step::Done(r) => return r,
            };
            let resp = answer(w, call);
            sync.handle_response(resp.status, resp.body.to_string().as_bytes())
                .unwrap();
        }
    }

    #[test]
    fn the_sync_pages_through_a_busy_workspace_and_is_idempotent() {
        let mut w = crate::sim::elevenlabs_api::Workspace::new("k");
        w.seed_agent(crate::sim::elevenlabs_api::sample_agent("agent_1"));
        for i in 0..230 {
            let config =
                json!({"type": "client", "name": format!("other_{i}"), "description": "x"});
            w.seed_tool(config).unwrap();
        }
        let dry = drive(&mut w, true);
        assert!(
            dry.changes > 0 && dry.writes == 0 && w.writes.is_empty(),
            "{dry:?}"
        );
        let first = drive(&mut w, false);
        assert_eq!((first.writes, w.writes.len()), (9, 9), "{first:?}");
        // Each of ignis's tools exists once, though 230 others came first in three pages.
        for (name, _) in TOOL_FILES {
            let n = w
                .tools
                .iter()
                .filter(|t| t["tool_config"]["name"] == name)
                .count();
            assert_eq!(n, 1, "{name}");
        }
        let second = drive(&mut w, false);
        assert_eq!((second.changes, second.writes), (0, 0), "{second:?}");
        assert_eq!(second.lines.last().unwrap(), "in sync: nothing to change");
    }

    #[test]
    fn a_tool_field_the_service_changes_fails_the_sync() {
        let mut sync = AgentSync::new(settings(), false);
        let config = json!({"name": "find_slots", "response_timeout_secs": 20});
        sync.pending.push_back(ToolWrite {
            name: "find_slots".into(),
            id: None,
            config: config.clone(),
        });
        sync.phase = Phase::ToolWrites;
        let mut answered = json!({"id": "tool_1", "tool_config": config});
        answered["tool_config"]["response_timeout_secs"] = json!(30);
        let err = sync.on_tool_written(&answered).unwrap_err();
        assert_eq!(
            err,
            SyncError::ToolNotApplied {
                tool: "find_slots".into(),
                fields: vec!["response_timeout_secs".into()],
            }
        );
        assert_eq!(sync.report_stopped().writes, 1, "the write happened");
    }

    #[test]
    fn an_agent_field_the_patch_drops_fails_the_sync() {
        let mut w = crate::sim::elevenlabs_api::Workspace::new("k");
        w.seed_agent(crate::sim::elevenlabs_api::sample_agent("agent_1"));
        let field = "conversation_config.conversation.max_duration_seconds";
        w.ignored_on_patch.push(field.into());
        let mut sync = AgentSync::new(settings(), false);
        let err = loop {
            let Step::Call(call) = sync.poll() else {
                panic!("the sync ended without noticing: {:?}", sync.report())
            };
            let resp = answer(&mut w, call);
            if let Err(e) = sync.handle_response(resp.status, resp.body.to_string().as_bytes()) {
                break e;
            }
        };
        assert_eq!(err, SyncError::NotApplied(vec![field.to_owned()]));
        assert_eq!(w.writes.last().unwrap().method, "PATCH");
        let reply = json!({"detail": "ok"}).to_string();
        let mut other = AgentSync::new(settings(), false);
        other.phase = Phase::PatchAgent(json!({}));
        assert_eq!(
            other.handle_response(200, reply.as_bytes()),
            Err(SyncError::BadResponse("PATCH /v1/convai/agents/{id}"))
        );
    }

    #[test]
    fn a_refusal_names_the_request_and_never_the_body_sent() {
        let mut s = AgentSync::new(settings(), false);
        let Step::Call(c) = s.poll() else { panic!() };
        let name = secret_name(TOKEN);
        assert_eq!(
            c.target,
            format!("/v1/convai/secrets?page_size=100&search={name}")
        );
        let e = s
            .handle_response(
                401,
                br#"{"detail":{"status":"invalid_api_key","message":"Invalid API key"}}"#,
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("ElevenLabs refused GET {}: 401 Invalid API key", c.target)
        );
    }
}
