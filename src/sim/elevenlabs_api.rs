//! ElevenLabs' agents, tools and secrets API, sans-IO (docs/elevenlabs.md §10): a workspace's
//! state and one request → one response, as the real service answers. Together with the
//! conversation side in [`super::agent`] it is the project's one ElevenLabs stand-in; the socket
//! that carries it is `driver::sim::agent`.
//!
//! What it checks, like the real service: the `xi-api-key` header (401 with ElevenLabs' error
//! shape `{"detail":{"status","message"}}`), the method (405), ids (404), and bodies (422 in
//! FastAPI's shape `{"detail":[{"loc","msg","type"}]}`). Unknown fields in bodies are accepted.
//! Choices where ElevenLabs' behaviour is not documented are marked [unverified] and are the
//! tolerant ones.

use serde_json::{Value, json};

/// Largest request (head and body) the stand-in reads: an agent's whole configuration is tens
/// of KiB.
pub const MAX_API_REQUEST_BYTES: usize = 1024 * 1024;
/// Most headers read from a request.
const MAX_REQUEST_HEADERS: usize = 64;
/// Largest `page_size` the list endpoints accept (SDK: "Can not exceed 100").
pub const MAX_PAGE_SIZE: usize = 100;
/// `GET /v1/convai/tools`' page size when none is given (SDK: "defaults to 30").
pub const DEFAULT_TOOLS_PAGE_SIZE: usize = 30;
/// A webhook tool's `response_timeout_secs` range (SDK `webhook_tool_config_input.py`).
pub const WEBHOOK_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 5..=120;
/// A client tool's `response_timeout_secs` range (SDK `client_tool_config_input.py`).
pub const CLIENT_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 1..=120;
/// The default `response_timeout_secs` the service fills in (docs/elevenlabs.md §5.1).
const DEFAULT_TIMEOUT_SECS: u64 = 20;
/// Tool types the stand-in knows (SDK `tool_request_model_tool_config.py`).
const TOOL_TYPES: [&str; 4] = ["webhook", "client", "system", "mcp"];
/// The top-level agent fields `PATCH /v1/convai/agents/{id}` takes; each given one replaces the
/// stored one whole (the strict reading: whether the service deep-merges is [unverified]).
pub const AGENT_PATCH_FIELDS: [&str; 5] = [
    "conversation_config",
    "platform_settings",
    "workflow",
    "name",
    "tags",
];

/// One HTTP request as the stand-in needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The `xi-api-key` header.
    pub api_key: Option<String>,
    /// The body (empty without one).
    pub body: Vec<u8>,
}

/// Why a request could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// More than [`MAX_API_REQUEST_BYTES`].
    TooLarge,
    /// Not an HTTP/1.1 request, or a bad `Content-Length`.
    Malformed,
}

error_text!(RequestError {
    TooLarge => "request too large",
    Malformed => "malformed request",
});

/// Reads one request from the bytes so far; `Ok(None)` until it is complete.
pub fn parse_request(buf: &[u8]) -> Result<Option<ApiRequest>, RequestError> {
    if buf.len() > MAX_API_REQUEST_BYTES {
        return Err(RequestError::TooLarge);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(RequestError::Malformed),
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let len: usize = match header("content-length") {
        None => 0,
        Some(v) => v.trim().parse().map_err(|_| RequestError::Malformed)?,
    };
    // Compared without adding: a peer's length near usize::MAX must not overflow.
    if len > MAX_API_REQUEST_BYTES.saturating_sub(head_len) {
        return Err(RequestError::TooLarge);
    }
    if buf.len() < head_len + len {
        return Ok(None);
    }
    Ok(Some(ApiRequest {
        method: req.method.unwrap_or_default().to_owned(),
        target: req.path.unwrap_or_default().to_owned(),
        api_key: header("xi-api-key").map(str::to_owned),
        body: buf[head_len..head_len + len].to_vec(),
    }))
}

/// One response: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
}

impl ApiResponse {
    fn ok(body: Value) -> Self {
        ApiResponse { status: 200, body }
    }

    /// ElevenLabs' own error shape (401, 404, 400): `{"detail":{"status":…,"message":…}}`.
    fn detail(status: u16, code: &str, message: &str) -> Self {
        ApiResponse {
            status,
            body: json!({"detail": {"status": code, "message": message}}),
        }
    }

    /// A validation error in FastAPI's shape (the service is a FastAPI app: its 422 bodies are
    /// `{"detail":[{"loc":[…],"msg":…,"type":…}]}`).
    fn invalid(loc: &[&str], msg: &str) -> Self {
        ApiResponse {
            status: 422,
            body: json!({"detail": [{"loc": loc, "msg": msg, "type": "value_error"}]}),
        }
    }

    /// The response as HTTP/1.1 bytes (`Connection: close`).
    pub fn to_http(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            422 => "Unprocessable Entity",
            _ => "Error",
        };
        let body = self.body.to_string();
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            self.status,
            body.len()
        )
        .into_bytes()
    }
}

/// A workspace secret. Its value is kept (a test may check it) but never returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// `secret_id`.
    pub id: String,
    /// `name`.
    pub name: String,
    /// `value`.
    pub value: String,
}

/// One write the workspace accepted (POST, PATCH, DELETE), for tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// The method.
    pub method: String,
    /// The path (no query).
    pub path: String,
    /// The JSON body (`Null` without one); a secret's `value` is replaced by `"<redacted>"`.
    pub body: Value,
}

/// A workspace: its secrets, tools and agents, and the writes made to it.
#[derive(Debug, Clone)]
pub struct Workspace {
    api_key: String,
    /// The secrets, oldest first.
    pub secrets: Vec<Secret>,
    /// The tools (`{id, tool_config, access_info, usage_stats}`), oldest first.
    pub tools: Vec<Value>,
    /// The agents (`{agent_id, name, conversation_config, platform_settings, …}`).
    pub agents: Vec<Value>,
    /// The writes accepted, in order.
    pub writes: Vec<Write>,
    /// Test knob: dotted agent paths (`conversation_config.conversation.max_duration_seconds`)
    /// an agent PATCH leaves as they were, as a service that drops or normalises a field would;
    /// the answer shows the stored value. Empty by default.
    pub ignored_on_patch: Vec<String>,
    next_id: u64,
}

impl Workspace {
    /// An empty workspace that answers requests carrying `api_key`.
    pub fn new(api_key: &str) -> Self {
        Workspace {
            api_key: api_key.to_owned(),
            secrets: Vec::new(),
            tools: Vec::new(),
            agents: Vec::new(),
            writes: Vec::new(),
            ignored_on_patch: Vec::new(),
            next_id: 1,
        }
    }

    /// Adds an agent as a test sets it up (`agent_id` required); replaces one with the same id.
    pub fn seed_agent(&mut self, agent: Value) {
        let id = agent["agent_id"].clone();
        self.agents.retain(|a| a["agent_id"] != id);
        self.agents.push(agent);
    }

    /// Adds a tool as a test sets it up (validated like `POST`), without logging a write.
    pub fn seed_tool(&mut self, tool_config: Value) -> Result<String, ApiResponse> {
        let tool = self.new_tool(tool_config)?;
        let id = tool["id"].as_str().unwrap_or_default().to_owned();
        self.tools.push(tool);
        Ok(id)
    }

    /// The agent with `id`.
    pub fn agent(&self, id: &str) -> Option<&Value> {
        self.agents.iter().find(|a| a["agent_id"] == id)
    }

    /// The tool with `id`.
    pub fn tool(&self, id: &str) -> Option<&Value> {
        self.tools.iter().find(|t| t["id"] == id)
    }

    /// The tool with `id`, to change it as a test needs.
    pub fn tool_mut(&mut self, id: &str) -> Option<&mut Value> {
        self.tools.iter_mut().find(|t| t["id"] == id)
    }

    /// The tool named `name`.
    pub fn tool_named(&self, name: &str) -> Option<&Value> {
        self.tools.iter().find(|t| t["tool_config"]["name"] == name)
    }

    /// Answers one request.
    pub fn handle(&mut self, req: &ApiRequest) -> ApiResponse {
        match req.api_key.as_deref() {
            // The service's answers (docs/elevenlabs.md §10.1).
            None => {
                return ApiResponse::detail(
                    401,
                    "needs_authorization",
                    "Neither authorization header nor xi-api-key received, please provide one.",
                );
            }
            Some(k) if k != self.api_key => {
                return ApiResponse::detail(401, "invalid_api_key", "Invalid API key");
            }
            Some(_) => {}
        }
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        let query = parse_query(query);
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let body = || serde_json::from_slice::<Value>(&req.body);
        let resp = match (segments.as_slice(), req.method.as_str()) {
            (["", "v1", "convai", "secrets"], "GET") => self.list_secrets(&query),
            (["", "v1", "convai", "secrets"], "POST") => with_body(body(), |b| self.add_secret(b)),
            (["", "v1", "convai", "secrets", id], "PATCH") => {
                with_body(body(), |b| self.update_secret(id, b))
            }
            (["", "v1", "convai", "secrets", id], "DELETE") => self.delete_secret(id),
            (["", "v1", "convai", "tools"], "GET") => self.list_tools(&query),
            (["", "v1", "convai", "tools"], "POST") => with_body(body(), |b| self.add_tool(b)),
            (["", "v1", "convai", "tools", id], "GET") => self.get_tool(id),
            (["", "v1", "convai", "tools", id], "PATCH") => {
                with_body(body(), |b| self.update_tool(id, b))
            }
            (["", "v1", "convai", "tools", id], "DELETE") => self.delete_tool(id),
            (["", "v1", "convai", "agents", id], "GET") => self.get_agent(id),
            (["", "v1", "convai", "agents", id], "PATCH") => {
                with_body(body(), |b| self.update_agent(id, b))
            }
            (
                ["", "v1", "convai", "secrets"]
                | ["", "v1", "convai", "secrets", _]
                | ["", "v1", "convai", "tools"]
                | ["", "v1", "convai", "tools", _]
                | ["", "v1", "convai", "agents", _],
                _,
            ) => ApiResponse {
                status: 405,
                body: json!({"detail": "Method Not Allowed"}),
            },
            _ => ApiResponse {
                status: 404,
                body: json!({"detail": "Not Found"}),
            },
        };
        if resp.status == 200 && req.method != "GET" {
            let mut logged = body().unwrap_or(Value::Null);
            if let Some(v) = logged.get_mut("value") {
                *v = json!("<redacted>");
            }
            self.writes.push(Write {
                method: req.method.clone(),
                path: path.to_owned(),
                body: logged,
            });
        }
        resp
    }

    fn fresh_id(&mut self, prefix: &str) -> String {
        let id = format!("{prefix}_{:04}sim{:012}", self.next_id, self.next_id * 7919);
        self.next_id += 1;
        id
    }

    fn list_secrets(&self, query: &[(String, String)]) -> ApiResponse {
        // `search`: "only secrets whose names start with this string" (SDK docstring).
        let search = param(query, "search").unwrap_or_default();
        let all: Vec<Value> = self
            .secrets
            .iter()
            .map(|s| {
                let tools: Vec<Value> = self
                    .tools
                    .iter()
                    .filter(|t| uses_secret(&t["tool_config"], &s.id))
                    .map(|t| {
                        json!({"type": "available", "id": t["id"], "name": t["tool_config"]["name"],
                               "created_at_unix_secs": 0, "access_level": "admin"})
                    })
                    .collect();
                // SDK `conv_ai_stored_secret_dependencies.py`; ignis does not read it.
                json!({"type": "stored", "secret_id": s.id, "name": s.name,
                       "used_by": {"tools": tools, "tools_has_more": false, "agents": [],
                                   "agents_has_more": false, "phone_numbers": [], "others": []}})
            })
            .filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with(search)))
            .collect();
        // Without page_size the service returns all secrets (SDK docstring).
        match page(&all, query, all.len().max(1)) {
            Ok((items, next)) => ApiResponse::ok(json!({"secrets": items, "next_cursor": next})),
            Err(resp) => resp,
        }
    }

    fn add_secret(&mut self, body: &Value) -> ApiResponse {
        let (name, value) = match secret_fields(body, "new") {
            Ok(f) => f,
            Err(resp) => return resp,
        };
        // Whether the service refuses a second secret with the same name is [unverified]; the
        // stand-in accepts it like any other (ignis looks secrets up by name before creating).
        let id = self.fresh_id("sec");
        self.secrets.push(Secret {
            id: id.clone(),
            name: name.clone(),
            value,
        });
        ApiResponse::ok(json!({"type": "stored", "secret_id": id, "name": name}))
    }

    fn update_secret(&mut self, id: &str, body: &Value) -> ApiResponse {
        let (name, value) = match secret_fields(body, "update") {
            Ok(f) => f,
            Err(resp) => return resp,
        };
        let Some(s) = self.secrets.iter_mut().find(|s| s.id == id) else {
            return not_found("secret", id);
        };
        s.name = name.clone();
        s.value = value;
        ApiResponse::ok(json!({"type": "stored", "secret_id": id, "name": name}))
    }

    fn delete_secret(&mut self, id: &str) -> ApiResponse {
        if !self.secrets.iter().any(|s| s.id == id) {
            return not_found("secret", id);
        }
        if self
            .tools
            .iter()
            .any(|t| uses_secret(&t["tool_config"], id))
        {
            // "Delete a workspace secret if it's not in use" (SDK); the status is [unverified].
            return ApiResponse::detail(400, "secret_in_use", "The secret is in use.");
        }
        self.secrets.retain(|s| s.id != id);
        ApiResponse::ok(json!({}))
    }

    fn list_tools(&self, query: &[(String, String)]) -> ApiResponse {
        // `search`: "only tools whose names start with this string" (SDK docstring).
        let search = param(query, "search").unwrap_or_default();
        let all: Vec<Value> = self
            .tools
            .iter()
            .filter(|t| {
                t["tool_config"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(search))
            })
            .cloned()
            .collect();
        match page(&all, query, DEFAULT_TOOLS_PAGE_SIZE) {
            Ok((items, next)) => ApiResponse::ok(
                json!({"tools": items, "has_more": next.is_some(), "next_cursor": next}),
            ),
            Err(resp) => resp,
        }
    }

    fn new_tool(&mut self, tool_config: Value) -> Result<Value, ApiResponse> {
        let config = with_defaults(validate_tool_config(&tool_config)?, tool_config);
        Ok(json!({
            "id": self.fresh_id("tool"),
            "tool_config": config,
            "access_info": {"is_creator": true, "creator_name": "ignis test",
                            "creator_email": "ops@example.com", "role": "admin"},
            "usage_stats": {"avg_latency_secs": 0.0, "total_calls": 0},
        }))
    }

    fn add_tool(&mut self, body: &Value) -> ApiResponse {
        let Some(config) = body.get("tool_config") else {
            return ApiResponse::invalid(&["body", "tool_config"], "Field required");
        };
        match self.new_tool(config.clone()) {
            Ok(tool) => {
                self.tools.push(tool.clone());
                ApiResponse::ok(tool)
            }
            Err(resp) => resp,
        }
    }

    fn get_tool(&self, id: &str) -> ApiResponse {
        match self.tool(id) {
            Some(t) => ApiResponse::ok(t.clone()),
            None => not_found("tool", id),
        }
    }

    fn update_tool(&mut self, id: &str, body: &Value) -> ApiResponse {
        let Some(config) = body.get("tool_config") else {
            return ApiResponse::invalid(&["body", "tool_config"], "Field required");
        };
        if self.tool(id).is_none() {
            return not_found("tool", id);
        }
        let kind = match validate_tool_config(config) {
            Ok(k) => k,
            Err(resp) => return resp,
        };
        let Some(tool) = self.tool_mut(id) else {
            return not_found("tool", id);
        };
        // PATCH replaces the whole configuration (docs/elevenlabs.md §10.2).
        tool["tool_config"] = with_defaults(kind, config.clone());
        ApiResponse::ok(tool.clone())
    }

    fn delete_tool(&mut self, id: &str) -> ApiResponse {
        if self.tool(id).is_none() {
            return not_found("tool", id);
        }
        self.tools.retain(|t| t["id"] != id);
        ApiResponse::ok(json!({}))
    }

    fn get_agent(&self, id: &str) -> ApiResponse {
        match self.agent(id) {
            Some(a) => ApiResponse::ok(a.clone()),
            None => not_found("agent", id),
        }
    }

    fn update_agent(&mut self, id: &str, body: &Value) -> ApiResponse {
        let Some(fields) = body.as_object() else {
            return ApiResponse::invalid(&["body"], "Input should be a valid dictionary");
        };
        for key in ["conversation_config", "platform_settings", "workflow"] {
            if fields
                .get(key)
                .is_some_and(|v| !v.is_object() && !v.is_null())
            {
                return ApiResponse::invalid(&["body", key], "Input should be a valid dictionary");
            }
        }
        // Attached tools must exist ([unverified] that the service checks; ignis only attaches
        // ids it got from the service).
        let ids = &body["conversation_config"]["agent"]["prompt"]["tool_ids"];
        if let Some(missing) = ids
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| self.tools.iter().all(|t| t["id"] != **i))
        {
            return ApiResponse::detail(
                404,
                "tool_not_found",
                &format!("Tool {missing} not found"),
            );
        }
        let Some(agent) = self.agents.iter_mut().find(|a| a["agent_id"] == id) else {
            return not_found("agent", id);
        };
        let kept: Vec<(&str, Value)> = self
            .ignored_on_patch
            .iter()
            .map(|p| (p.as_str(), at_path(agent, p).clone()))
            .collect();
        for key in AGENT_PATCH_FIELDS {
            if let Some(v) = fields.get(key) {
                agent[key] = v.clone();
            }
        }
        for (path, old) in kept {
            set_path(agent, path, old);
        }
        ApiResponse::ok(agent.clone())
    }
}

/// The value at a dotted path (`Null` when absent).
fn at_path<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |at, key| &at[key])
}

/// Sets the value at a dotted path (objects made on the way; `Null` removes the last key).
fn set_path(v: &mut Value, path: &str, new: Value) {
    let mut keys: Vec<&str> = path.split('.').collect();
    let Some(last) = keys.pop() else { return };
    let mut at = v;
    for key in keys {
        at = &mut at[key];
    }
    match (new, at.as_object_mut()) {
        (Value::Null, Some(m)) => {
            m.remove(last);
        }
        (new, _) => at[last] = new,
    }
}

fn not_found(what: &str, id: &str) -> ApiResponse {
    ApiResponse::detail(
        404,
        &format!("{what}_not_found"),
        &format!("No {what} with id {id}"),
    )
}

fn with_body(
    body: serde_json::Result<Value>,
    f: impl FnOnce(&Value) -> ApiResponse,
) -> ApiResponse {
    match body {
        Ok(v) if v.is_object() => f(&v),
        _ => ApiResponse::invalid(&["body"], "Input should be a valid dictionary"),
    }
}

/// `name` and `value` of a secret body, and its `type` (`new` or `update`).
fn secret_fields(body: &Value, kind: &str) -> Result<(String, String), ApiResponse> {
    let text = |k: &str| {
        body[k]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiResponse::invalid(&["body", k], "Field required"))
    };
    if body["type"] != kind {
        return Err(ApiResponse::invalid(
            &["body", "type"],
            &format!("Input should be '{kind}'"),
        ));
    }
    Ok((text("name")?, text("value")?))
}

/// Whether a tool's headers reference the secret `id`.
fn uses_secret(config: &Value, id: &str) -> bool {
    config["api_schema"]["request_headers"]
        .as_object()
        .is_some_and(|h| h.values().any(|v| v["secret_id"] == id))
}

/// Checks a `tool_config` like the service's schema does; its `type` when valid.
fn validate_tool_config(config: &Value) -> Result<&'static str, ApiResponse> {
    let loc = |k: &'static str| ["body", "tool_config", k];
    if !config.is_object() {
        return Err(ApiResponse::invalid(
            &["body", "tool_config"],
            "Input should be a valid dictionary",
        ));
    }
    let Some(kind) = TOOL_TYPES.into_iter().find(|t| config["type"] == *t) else {
        return Err(ApiResponse::invalid(
            &loc("type"),
            "Input tag does not match any of the expected tags: 'webhook', 'client', 'system', 'mcp'",
        ));
    };
    // Tool names: letters, digits, `_` and `-`, at most 64 ([unverified] pattern; the
    // dashboard refuses spaces).
    let name_ok = config["name"].as_str().is_some_and(|n| {
        !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !name_ok {
        return Err(ApiResponse::invalid(&loc("name"), "Invalid tool name"));
    }
    if matches!(kind, "webhook" | "client") && !config["description"].is_string() {
        return Err(ApiResponse::invalid(&loc("description"), "Field required"));
    }
    let range = if kind == "webhook" {
        WEBHOOK_TIMEOUT_SECS
    } else {
        CLIENT_TIMEOUT_SECS
    };
    match &config["response_timeout_secs"] {
        Value::Null => {}
        v if v.as_u64().is_some_and(|s| range.contains(&s)) => {}
        _ => {
            return Err(ApiResponse::invalid(
                &loc("response_timeout_secs"),
                &format!(
                    "Must be between {} and {} seconds (inclusive)",
                    range.start(),
                    range.end()
                ),
            ));
        }
    }
    if kind == "client" && !matches!(config["expects_response"], Value::Null | Value::Bool(_)) {
        return Err(ApiResponse::invalid(
            &loc("expects_response"),
            "Input should be a valid boolean",
        ));
    }
    if kind == "webhook" {
        validate_api_schema(&config["api_schema"])?;
    }
    Ok(kind)
}

fn validate_api_schema(schema: &Value) -> Result<(), ApiResponse> {
    let loc = |k: &'static str| ["body", "tool_config", "api_schema", k];
    let url_ok = schema["url"]
        .as_str()
        .is_some_and(|u| u.starts_with("https://") || u.starts_with("http://"));
    if !url_ok {
        return Err(ApiResponse::invalid(&loc("url"), "Field required"));
    }
    let methods = ["GET", "POST", "PUT", "PATCH", "DELETE"];
    if !(schema["method"].is_null() || methods.iter().any(|m| schema["method"] == *m)) {
        return Err(ApiResponse::invalid(
            &loc("method"),
            "Input should be 'GET', 'POST', 'PUT', 'PATCH' or 'DELETE'",
        ));
    }
    let headers_ok = match &schema["request_headers"] {
        Value::Null => true,
        Value::Object(h) => h.values().all(|v| {
            v.is_string()
                || ["secret_id", "variable_name", "env_var_label"]
                    .iter()
                    .any(|k| v[*k].is_string())
        }),
        _ => false,
    };
    if !headers_ok {
        return Err(ApiResponse::invalid(
            &loc("request_headers"),
            "Header values are a string, {secret_id}, {variable_name} or {env_var_label}",
        ));
    }
    Ok(())
}

/// The configuration as the service stores it: it fills in defaults the client did not send,
/// so what a GET returns is more than what was sent (docs/elevenlabs.md §10.2).
fn with_defaults(kind: &str, mut config: Value) -> Value {
    let Some(obj) = config.as_object_mut() else {
        return config;
    };
    let mut default = |k: &str, v: Value| {
        obj.entry(k.to_owned()).or_insert(v);
    };
    if matches!(kind, "webhook" | "client") {
        default("response_timeout_secs", json!(DEFAULT_TIMEOUT_SECS));
        default("disable_interruptions", json!(false));
        default("force_pre_tool_speech", json!(false));
        default("assignments", json!([]));
        default(
            "dynamic_variables",
            json!({"dynamic_variable_placeholders": {}}),
        );
    }
    if kind == "client" {
        default("expects_response", json!(false));
    }
    config
}

/// Splits a query string into decoded pairs (`+` and `%XX`).
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// One page of `all` by `page_size` (≤ [`MAX_PAGE_SIZE`], else 422) and `cursor` (the index
/// of the first item, as the stand-in issues it); the next cursor when more remain.
fn page(
    all: &[Value],
    query: &[(String, String)],
    default_size: usize,
) -> Result<(Vec<Value>, Option<String>), ApiResponse> {
    let size = match param(query, "page_size") {
        None => default_size,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| {
                ApiResponse::invalid(
                    &["query", "page_size"],
                    "Input should be less than or equal to 100",
                )
            })?,
    };
    let start = match param(query, "cursor") {
        None => 0,
        Some(c) => c
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= all.len())
            .ok_or_else(|| ApiResponse::detail(400, "invalid_cursor", "Invalid cursor"))?,
    };
    let end = (start + size).min(all.len());
    let next = (end < all.len()).then(|| end.to_string());
    Ok((all[start..end].to_vec(), next))
}

/// A minimal agent as a test seeds it: what a dashboard-created agent carries in the fields
/// ignis reads (docs/elevenlabs.md §11), with defaults ignis must change.
pub fn sample_agent(agent_id: &str) -> Value {
    json!({
        "agent_id": agent_id,
        "name": "Ignis Demo Praxis",
        "conversation_config": {
            "asr": {"quality": "high", "provider": "elevenlabs",
                    "user_input_audio_format": "pcm_16000", "keywords": []},
            "turn": {"turn_timeout": 7.0},
            "tts": {"model_id": "eleven_flash_v2_5", "voice_id": "cjVigY5qzO86Huf0OWal",
                    "agent_output_audio_format": "pcm_16000"},
            "conversation": {"text_only": false, "max_duration_seconds": 300,
                             "client_events": ["audio", "interruption"]},
            "agent": {"first_message": "Hallo, wie kann ich helfen?", "language": "en",
                      "disable_first_message_interruptions": false,
                      "dynamic_variables": {"dynamic_variable_placeholders": {}},
                      "prompt": {"prompt": "You are a helpful assistant.", "llm": "gemini-2.0-flash",
                                 "temperature": 0.0, "tool_ids": [], "tools": [],
                                 "built_in_tools": {"end_call": {"type": "system", "name": "end_call",
                                     "description": "", "params": {"system_tool_type": "end_call"}}}}}
        },
        "platform_settings": {
            "privacy": {"record_voice": true, "retention_days": -1, "delete_transcript_and_pii": false,
                        "delete_audio": false, "apply_to_existing_conversations": false},
            "overrides": {"conversation_config_override": {"agent": {"first_message": false}}}
        },
        "phone_numbers": [],
        "workflow": {"edges": {}, "nodes": {}},
        "tags": []
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk_test_key_0123456789";

    fn req(method: &str, target: &str, body: Option<Value>) -> ApiRequest {
        ApiRequest {
            method: method.into(),
            target: target.into(),
            api_key: Some(KEY.into()),
            body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        }
    }

    fn webhook(name: &str) -> Value {
        json!({"type": "webhook", "name": name, "description": "d",
               "api_schema": {"url": "https://h/api/x", "method": "POST",
                              "request_headers": {"Authorization": {"secret_id": "s"}}}})
    }

    #[test]
    fn a_huge_content_length_is_too_large_not_a_panic() {
        let head = format!(
            "POST /v1/convai/tools HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            usize::MAX
        );
        assert_eq!(parse_request(head.as_bytes()), Err(RequestError::TooLarge));
        let head = format!(
            "POST /v1/convai/tools HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_API_REQUEST_BYTES
        );
        assert_eq!(parse_request(head.as_bytes()), Err(RequestError::TooLarge));
    }

    #[test]
    fn auth_method_and_ids_are_checked() {
        let mut w = Workspace::new(KEY);
        let mut r = req("GET", "/v1/convai/tools", None);
        r.api_key = None;
        let resp = w.handle(&r);
        assert_eq!(resp.status, 401);
        assert_eq!(resp.body["detail"]["status"], "needs_authorization");
        r.api_key = Some("wrong".into());
        assert_eq!(w.handle(&r).body["detail"]["status"], "invalid_api_key");
        assert_eq!(w.handle(&req("PUT", "/v1/convai/tools", None)).status, 405);
        assert_eq!(
            w.handle(&req("GET", "/v1/convai/tools/nope", None)).status,
            404
        );
        assert_eq!(
            w.handle(&req("GET", "/v1/convai/agents/nope", None)).status,
            404
        );
        assert_eq!(w.handle(&req("GET", "/v1/other", None)).status, 404);
        assert!(w.writes.is_empty());
    }

    #[test]
    fn secrets_are_created_listed_and_never_returned() {
        let mut w = Workspace::new(KEY);
        let body = json!({"name": "ignis_tools_ab", "value": "Bearer hush", "type": "new"});
        let resp = w.handle(&req("POST", "/v1/convai/secrets", Some(body)));
        assert_eq!(resp.status, 200);
        let id = resp.body["secret_id"].as_str().unwrap().to_owned();
        let missing = json!({"name": "x", "type": "new"});
        assert_eq!(
            w.handle(&req("POST", "/v1/convai/secrets", Some(missing)))
                .status,
            422
        );
        let list = w.handle(&req("GET", "/v1/convai/secrets", None));
        assert_eq!(list.body["secrets"][0]["secret_id"], id.as_str());
        assert!(!list.body.to_string().contains("hush"));
        assert!(!format!("{:?}", w.writes).contains("hush"));
        let upd = json!({"name": "n2", "value": "v2", "type": "update"});
        let path = format!("/v1/convai/secrets/{id}");
        assert_eq!(w.handle(&req("PATCH", &path, Some(upd))).status, 200);
        assert_eq!(w.secrets[0].value, "v2");
        let none = w.handle(&req("GET", "/v1/convai/secrets?search=other_", None));
        assert_eq!(none.body["secrets"], json!([]));
        let big = "/v1/convai/secrets?page_size=101";
        assert_eq!(w.handle(&req("GET", big, None)).status, 422);
    }

    #[test]
    fn tools_are_validated_paged_searched_and_replaced() {
        let mut w = Workspace::new(KEY);
        for n in 0..5 {
            let body = json!({"tool_config": webhook(&format!("t{n}"))});
            assert_eq!(
                w.handle(&req("POST", "/v1/convai/tools", Some(body)))
                    .status,
                200
            );
        }
        let mut slow = webhook("slow");
        slow["response_timeout_secs"] = json!(121);
        let mut no_url = webhook("no_url");
        no_url["api_schema"]["url"] = Value::Null;
        let mut kind = webhook("kind");
        kind["type"] = json!("carrier_pigeon");
        for bad in [slow, no_url, kind, json!({"type": "webhook"})] {
            let resp = w.handle(&req(
                "POST",
                "/v1/convai/tools",
                Some(json!({"tool_config": bad})),
            ));
            assert_eq!(resp.status, 422, "{resp:?}");
        }
        let p1 = w
            .handle(&req("GET", "/v1/convai/tools?page_size=2", None))
            .body;
        assert_eq!(p1["tools"].as_array().unwrap().len(), 2);
        assert_eq!(p1["has_more"], true);
        let cursor = p1["next_cursor"].as_str().unwrap();
        let p2 = w
            .handle(&req(
                "GET",
                &format!("/v1/convai/tools?page_size=2&cursor={cursor}"),
                None,
            ))
            .body;
        assert_eq!(p2["tools"][0]["tool_config"]["name"], "t2");
        let s = w
            .handle(&req("GET", "/v1/convai/tools?search=t4", None))
            .body;
        assert_eq!(s["tools"].as_array().unwrap().len(), 1);
        assert_eq!(s["has_more"], false);
        let id = s["tools"][0]["id"].as_str().unwrap().to_owned();
        // Defaults filled in; PATCH replaces the whole configuration.
        assert_eq!(
            w.tool(&id).unwrap()["tool_config"]["response_timeout_secs"],
            20
        );
        let mut replaced = webhook("t4");
        replaced["description"] = json!("new");
        let resp = w.handle(&req(
            "PATCH",
            &format!("/v1/convai/tools/{id}"),
            Some(json!({"tool_config": replaced, "unknown": 1})),
        ));
        assert_eq!(resp.status, 200);
        assert_eq!(w.tool(&id).unwrap()["tool_config"]["description"], "new");
        assert_eq!(w.writes.len(), 6);
        assert_eq!(
            w.handle(&req("DELETE", &format!("/v1/convai/tools/{id}"), None))
                .status,
            200
        );
        assert!(w.tool(&id).is_none());
    }

    #[test]
    fn agent_patch_replaces_the_given_sub_objects() {
        let mut w = Workspace::new(KEY);
        w.seed_agent(sample_agent("agent_1"));
        let body = json!({"platform_settings": {"privacy": {"record_voice": false}}, "extra": 1});
        let resp = w.handle(&req("PATCH", "/v1/convai/agents/agent_1", Some(body)));
        assert_eq!(resp.status, 200);
        let a = w.agent("agent_1").unwrap();
        assert_eq!(
            a["platform_settings"],
            json!({"privacy": {"record_voice": false}})
        );
        assert_eq!(a["conversation_config"]["agent"]["language"], "en");
        let ghost = json!({"conversation_config": {"agent": {"prompt": {"tool_ids": ["nope"]}}}});
        assert_eq!(
            w.handle(&req("PATCH", "/v1/convai/agents/agent_1", Some(ghost)))
                .status,
            404
        );
        let bad = json!({"conversation_config": 3});
        assert_eq!(
            w.handle(&req("PATCH", "/v1/convai/agents/agent_1", Some(bad)))
                .status,
            422
        );
    }

    #[test]
    fn requests_are_read_whole() {
        let raw = b"PATCH /v1/convai/tools/x?a=1 HTTP/1.1\r\nxi-api-key: k\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_request(&raw[..raw.len() - 1]), Ok(None));
        let r = parse_request(raw).unwrap().unwrap();
        assert_eq!(
            (r.method.as_str(), r.target.as_str(), r.api_key.as_deref()),
            ("PATCH", "/v1/convai/tools/x?a=1", Some("k"))
        );
        assert_eq!(r.body, b"{}");
        assert_eq!(percent_decode("a%20b+c%zz"), "a b c%zz");
    }
}
