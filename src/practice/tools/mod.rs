//! The six agent tools: the HTTP edge (routing, bearer auth, limits, rendering) and, by file,
//! input parsing and the business rules.
//!
//! Two halves, so the expensive half runs on the store's writer thread:
//! - [`prepare`] (any thread, no store): matches the route, checks the agent secret
//!   (`Authorization: Bearer`, constant time), requires `X-Ignis-Call`, enforces the size limits
//!   and parses the input. It answers 404/405/401/403/413 itself.
//! - [`execute`] (writer thread, with the store): finds the live call by the token's hash (403 if
//!   none, whatever the body said), then answers a malformed input (422), authorises every ref
//!   against the call's state and runs the tool.
//!
//! Outcomes are types: a tool returns its [`ToolOutcome`] or a [`ToolError`], and only
//! [`execute`] turns them into JSON. Every business outcome is a 200 with `ok` and, on failure,
//! an `error` code the agent can act on. Responses never contain addresses, insurance numbers,
//! diagnoses or internal ids.
//!
//! Layout: [`auth`] (bearer secrets), [`input`] (parsing and limits), [`error`] (the wire
//! codes), [`outcome`] (the answers), and one file per tool family: `identify`, `slots`,
//! `appointments` (book, cancel), `requests`, `emergency`.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

mod appointments;
pub mod auth;
mod context;
mod emergency;
pub mod error;
mod identify;
pub mod input;
pub mod outcome;
mod requests;
mod slots;

pub use auth::Secrets;
pub use error::ToolError;
pub use identify::MAX_UPCOMING;
pub use input::{
    BookInput, CATEGORIES, CancelInput, DEFAULT_SLOT_LIMIT, EmergencyInput, FindSlotsInput,
    IdentifyInput, MAX_KEYWORDS_CHARS, MAX_MEDICATIONS, MAX_NAME_CHARS, MAX_REASON_CHARS,
    MAX_SLOT_LIMIT, MAX_TEXT_CHARS, PartOfDay, RequestInput, ToolInput, parse_query,
};
pub use outcome::ToolOutcome;
pub use slots::{ALTERNATIVES, DEFAULT_SLOT_WINDOW_DAYS};

use context::Ctx;
use error::Stop;

use super::calls::hash_token;
use super::config::PracticeConfig;
use super::store::{Store, StoreError};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Largest accepted query string.
pub const MAX_QUERY_BYTES: usize = 1024;

/// A tool (or admin) HTTP request as the front end received it.
#[derive(Debug, Clone, Copy)]
pub struct ToolRequest<'a> {
    /// Method (`GET`, `POST`).
    pub method: &'a str,
    /// Path without the query (`/api/appointments/A1/cancel`).
    pub path: &'a str,
    /// Raw query string without `?` (may be empty).
    pub query: &'a str,
    /// Value of the `Authorization` header.
    pub authorization: Option<&'a [u8]>,
    /// Value of the `X-Ignis-Call` header.
    pub ignis_call: Option<&'a [u8]>,
    /// Body bytes.
    pub body: &'a [u8],
}

/// The response: status and a small JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolReply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
}

impl ToolReply {
    /// A reply with a JSON value.
    pub fn json(status: u16, v: &Value) -> ToolReply {
        ToolReply {
            status,
            body: serde_json::to_vec(v).unwrap_or_default(),
        }
    }

    /// A reply rendering `body`. It passes through a [`Value`] so the keys come out sorted, as
    /// they always have on this API (serde_json's map is ordered by key).
    pub fn render(status: u16, body: &impl Serialize) -> ToolReply {
        Self::json(status, &serde_json::to_value(body).unwrap_or(Value::Null))
    }

    /// A 200 `{"ok": true, …}` reply with `outcome`'s fields.
    pub fn ok(outcome: &impl Serialize) -> ToolReply {
        #[derive(Serialize)]
        struct Okay<'a, T: Serialize> {
            ok: bool,
            #[serde(flatten)]
            outcome: &'a T,
        }
        Self::render(200, &Okay { ok: true, outcome })
    }

    /// The body as JSON (tests).
    pub fn body_json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// The six tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `identify_patient`.
    Identify,
    /// `find_slots`.
    FindSlots,
    /// `book_appointment`.
    Book,
    /// `cancel_appointment`.
    Cancel,
    /// `create_request`.
    Request,
    /// `report_emergency`.
    Emergency,
}

impl Tool {
    /// Tool name (audit, logs).
    pub fn name(self) -> &'static str {
        match self {
            Tool::Identify => "identify_patient",
            Tool::FindSlots => "find_slots",
            Tool::Book => "book_appointment",
            Tool::Cancel => "cancel_appointment",
            Tool::Request => "create_request",
            Tool::Emergency => "report_emergency",
        }
    }
}

/// A routed, authenticated tool call, ready for [`execute`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// SHA-256 of the presented call token.
    pub call_token_hash: [u8; 32],
    /// The tool.
    pub tool: Tool,
    /// The parsed input, or the 422 to answer once the call is known to be live.
    pub input: Result<ToolInput, ToolError>,
}

/// Whether `path` belongs to the tool API (so the front end forwards it here).
pub fn is_tool_path(path: &str) -> bool {
    [
        "/api/patients",
        "/api/appointments",
        "/api/requests",
        "/api/emergencies",
    ]
    .iter()
    .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

/// A matched route; `Cancel` carries the raw appointment ref from the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Identify,
    Slots,
    Book,
    Cancel(&'a str),
    Request,
    Emergency,
}

fn route<'a>(method: &str, path: &'a str) -> Result<Route<'a>, ToolError> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let (route, want) = match path {
        "/api/patients/identify" => (Route::Identify, "POST"),
        "/api/appointments/slots" => (Route::Slots, "GET"),
        "/api/appointments" => (Route::Book, "POST"),
        "/api/requests" => (Route::Request, "POST"),
        "/api/emergencies" => (Route::Emergency, "POST"),
        _ => match path
            .strip_prefix("/api/appointments/")
            .and_then(|r| r.strip_suffix("/cancel"))
        {
            Some(r) if !r.is_empty() && !r.contains('/') => (Route::Cancel(r), "POST"),
            _ => return Err(ToolError::UnknownRoute),
        },
    };
    if method != want {
        return Err(ToolError::MethodNotAllowed);
    }
    Ok(route)
}

impl Route<'_> {
    fn tool(self) -> Tool {
        match self {
            Route::Identify => Tool::Identify,
            Route::Slots => Tool::FindSlots,
            Route::Book => Tool::Book,
            Route::Cancel(_) => Tool::Cancel,
            Route::Request => Tool::Request,
            Route::Emergency => Tool::Emergency,
        }
    }

    fn parse(self, req: &ToolRequest<'_>, config: &PracticeConfig) -> Result<ToolInput, ToolError> {
        Ok(match self {
            Route::Identify => ToolInput::Identify(input::parse_identify(req.body)?),
            Route::Slots => ToolInput::FindSlots(input::parse_find_slots(req.query, config)?),
            Route::Book => ToolInput::Book(input::parse_book(req.body, config)?),
            Route::Cancel(r) => ToolInput::Cancel(input::parse_cancel(r, req.body)?),
            Route::Request => ToolInput::Request(input::parse_request(req.body)?),
            Route::Emergency => ToolInput::Emergency(input::parse_emergency(req.body)?),
        })
    }
}

/// Route, authenticate, bound and parse a tool request (no store access). `Err` is the final
/// answer; a parse failure travels in [`ToolCall::input`] so that [`execute`] refuses a dead
/// call first.
pub fn prepare(
    req: &ToolRequest<'_>,
    config: &PracticeConfig,
    secrets: &Secrets,
) -> Result<ToolCall, ToolError> {
    let route = route(req.method, req.path)?;
    secrets.check_tools(req.authorization)?;
    let token = req.ignis_call.unwrap_or_default().trim_ascii();
    if token.is_empty() {
        return Err(ToolError::NoCall);
    }
    if req.body.len() > MAX_BODY_BYTES || req.query.len() > MAX_QUERY_BYTES {
        return Err(ToolError::TooLarge);
    }
    Ok(ToolCall {
        call_token_hash: hash_token(token),
        tool: route.tool(),
        input: route.parse(req, config),
    })
}

/// Runs a prepared tool call against the store (on the writer thread).
pub fn execute(
    store: &mut dyn Store,
    config: &PracticeConfig,
    call: ToolCall,
    now: Timestamp,
) -> ToolReply {
    let tool = call.tool.name();
    let live = match store.live_call(&call.call_token_hash, now.as_second()) {
        Ok(Some(c)) => c,
        Ok(None) => {
            tracing::info!(tool, outcome = "no_live_call", "tool request refused");
            if let Err(e) = store.audit(now.as_second(), None, tool, "no_live_call") {
                tracing::error!(tool, error = %e, "tool audit row not written");
            }
            return ToolError::CallNotActive.reply();
        }
        Err(e) => return internal(tool, &e),
    };
    let input = match call.input {
        Ok(input) => input,
        Err(e) => return e.reply(),
    };
    let call_id = live.id;
    let mut ctx = Ctx {
        store,
        config,
        call: live,
        now,
        dirty: false,
        restored: false,
        answer_needs_save: false,
    };
    let result = match ctx.run(input) {
        Ok(outcome) => Ok(outcome),
        Err(Stop::Refused(e)) => Err(e),
        Err(Stop::Store(e)) => return internal(tool, &e),
    };
    // Refs minted on the way (alternatives of a taken slot) are kept even when the tool refused.
    if (ctx.dirty || ctx.restored)
        && let Err(e) = ctx.store.save_call_state(call_id, &ctx.call.state)
    {
        // The tool's change is committed: answering "unavailable" would have the agent try
        // again and create a second request or emergency. Its answer goes out and is audited;
        // only the refs it minted may not resolve later in the call. An identification changed
        // nothing but the call state: it is answered only once that is saved. A filing only
        // restored from the rows is found there again by the next retry.
        if (ctx.dirty && result.is_err()) || ctx.answer_needs_save {
            return internal(tool, &e);
        }
        tracing::error!(tool, error = %e, "call state not saved after the tool's change");
    }
    let outcome = result.as_ref().map_or_else(ToolError::code, |_| "ok");
    tracing::info!(tool, outcome, "tool call");
    // The reply still goes out: the tool's change (a booking) is made, and withholding its
    // answer would have the agent try it again. The failure is logged for the operator.
    if let Err(e) = ctx
        .store
        .audit(now.as_second(), Some(call_id), tool, outcome)
    {
        tracing::error!(tool, error = %e, "tool audit row not written");
    }
    match result {
        Ok(o) => ToolReply::ok(&o),
        Err(e) => e.reply(),
    }
}

impl Ctx<'_> {
    fn run(&mut self, input: ToolInput) -> Result<ToolOutcome, Stop> {
        Ok(match input {
            ToolInput::Identify(i) => ToolOutcome::Identify(self.identify(i)?),
            ToolInput::FindSlots(i) => ToolOutcome::Slots(self.find_slots(i)?),
            ToolInput::Book(i) => ToolOutcome::Booked(self.book(i)?),
            ToolInput::Cancel(i) => ToolOutcome::Cancelled(self.cancel(i)?),
            ToolInput::Request(i) => ToolOutcome::Request(self.request(i)?),
            ToolInput::Emergency(i) => ToolOutcome::Emergency(self.emergency(i)?),
        })
    }
}

/// Runs [`prepare`] then [`execute`] on the current thread (tests, fuzzing, single-threaded use).
pub fn handle_tool(
    store: &mut dyn Store,
    config: &PracticeConfig,
    secrets: &Secrets,
    req: &ToolRequest<'_>,
    now: Timestamp,
) -> ToolReply {
    match prepare(req, config, secrets) {
        Ok(call) => execute(store, config, call, now),
        Err(e) => e.reply(),
    }
}

/// A store failure as the agent gets it: 503 `unavailable` (with words it can say) when the
/// database cannot be reached right now, 500 `internal` otherwise.
fn internal(tool: &str, e: &StoreError) -> ToolReply {
    if e.is_unavailable() {
        tracing::warn!(tool, error = %e, "tool refused: database unavailable");
        return ToolError::Unavailable.reply();
    }
    tracing::error!(tool, error = %e, "tool failed in the store");
    ToolError::Internal.reply()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(
            route("POST", "/api/patients/identify"),
            Ok(Route::Identify)
        ));
        assert!(matches!(
            route("GET", "/api/appointments/slots"),
            Ok(Route::Slots)
        ));
        assert!(matches!(
            route("POST", "/api/appointments/A1/cancel"),
            Ok(Route::Cancel("A1"))
        ));
        assert_eq!(
            route("GET", "/api/appointments").err().unwrap().status(),
            405
        );
        assert_eq!(route("POST", "/api/nothing").err().unwrap().status(), 404);
        assert_eq!(
            route("POST", "/api/appointments/a/b/cancel")
                .err()
                .unwrap()
                .status(),
            404
        );
        assert!(is_tool_path("/api/appointments/A1/cancel"));
        assert!(!is_tool_path("/api/appointmentsX"));
    }
}
