//! The six agent tools: routing, authentication, input validation and the business logic.
//!
//! Two halves, so the expensive half runs on the store's writer thread:
//! - [`prepare`] (any thread, no store): matches the route, checks the agent secret
//!   (`Authorization: Bearer`, constant time), requires `X-Ignis-Call`, parses and bounds the input.
//!   It answers 404/405/401/403/413/422 itself.
//! - [`execute`] (writer thread, with the store): finds the live call by the token's hash (403 if
//!   none), authorises every ref against the call's state and runs the tool.
//!
//! Every business outcome is a 200 with `ok` and, on failure, an `error` code the agent can act on.
//! Responses never contain addresses, insurance numbers, diagnoses or internal ids.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::calendar::{self, Advice};
use super::calls::{
    Assurance, CallState, IDENTIFICATION_WINDOW_SECS, MAX_FAILED_IDENTIFICATIONS_PER_NUMBER,
    constant_time_eq, hash_token, normalize_number,
};
use super::config::{PracticeConfig, weekday_index};
use super::store::{
    AppointmentRecord, BookOutcome, Booking, BookingPatient, CallRecord, CancelOutcome,
    NewEmergency, NewPatient, NewRequest, PatientRecord, SlotRecord, Store, StoreError, name_key,
    normalize_name, quarter,
};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Largest accepted query string.
pub const MAX_QUERY_BYTES: usize = 1024;
/// Default number of slots offered by `find_slots`.
pub const DEFAULT_SLOT_LIMIT: usize = 3;
/// Most slots offered by one `find_slots`.
pub const MAX_SLOT_LIMIT: usize = 5;
/// Default search window of `find_slots`, in days.
pub const DEFAULT_SLOT_WINDOW_DAYS: i64 = 14;
/// Alternatives offered after `slot_taken`.
pub const ALTERNATIVES: usize = 3;
/// Upcoming appointments read back by `identify_patient`.
pub const MAX_UPCOMING: usize = 3;
/// Longest `reason_short`.
pub const MAX_REASON_CHARS: usize = 80;
/// Longest name.
pub const MAX_NAME_CHARS: usize = 60;
/// Longest free text (notes, details).
pub const MAX_TEXT_CHARS: usize = 300;
/// Longest keyword text of an emergency.
pub const MAX_KEYWORDS_CHARS: usize = 60;
/// Most medications in one prescription request.
pub const MAX_MEDICATIONS: usize = 5;

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

    fn error(status: u16, code: &str) -> ToolReply {
        Self::json(status, &json!({ "ok": false, "error": code }))
    }

    fn invalid(field: &str) -> ToolReply {
        Self::json(
            422,
            &json!({ "ok": false, "error": "invalid_input", "field": field }),
        )
    }

    /// The body as JSON (tests).
    pub fn body_json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// The agent and admin secrets, kept as SHA-256 so comparisons are constant-time and length-blind.
#[derive(Clone)]
pub struct Secrets {
    tools: [u8; 32],
    admin: Option<[u8; 32]>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

impl Secrets {
    /// From `TOOLS_TOKEN` and optionally `ADMIN_TOKEN` (no admin token disables the admin API).
    pub fn new(tools_token: &str, admin_token: Option<&str>) -> Secrets {
        Secrets {
            tools: hash_token(tools_token.as_bytes()),
            admin: admin_token
                .filter(|t| !t.is_empty())
                .map(|t| hash_token(t.as_bytes())),
        }
    }

    /// Checks an `Authorization` header against the tools secret.
    pub fn check_tools(&self, authorization: Option<&[u8]>) -> Result<(), ToolReply> {
        check_bearer(&self.tools, authorization)
    }

    /// Checks an `Authorization` header against the admin secret.
    pub fn check_admin(&self, authorization: Option<&[u8]>) -> Result<(), ToolReply> {
        match &self.admin {
            Some(h) => check_bearer(h, authorization),
            None => Err(ToolReply::error(403, "admin_disabled")),
        }
    }
}

fn check_bearer(expected: &[u8; 32], authorization: Option<&[u8]>) -> Result<(), ToolReply> {
    let Some(h) = authorization else {
        return Err(ToolReply::error(401, "unauthorized"));
    };
    let h = trim_ascii(h);
    let token = if h.len() > 7 && h[..7].eq_ignore_ascii_case(b"bearer ") {
        trim_ascii(&h[7..])
    } else {
        h
    };
    if token.is_empty() {
        return Err(ToolReply::error(401, "unauthorized"));
    }
    if !constant_time_eq(&hash_token(token), expected) {
        return Err(ToolReply::error(403, "forbidden"));
    }
    Ok(())
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

// --- parsed tool calls --------------------------------------------------------------------------

/// A validated tool call, ready for [`execute`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// SHA-256 of the presented call token.
    pub call_token_hash: [u8; 32],
    /// The tool and its input.
    pub input: ToolInput,
}

/// The six tools' inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolInput {
    /// `identify_patient`.
    Identify(IdentifyInput),
    /// `find_slots`.
    FindSlots(FindSlotsInput),
    /// `book_appointment`.
    Book(BookInput),
    /// `cancel_appointment`.
    Cancel(CancelInput),
    /// `create_request`.
    Request(RequestInput),
    /// `report_emergency`.
    Emergency(EmergencyInput),
}

impl ToolInput {
    /// Tool name (audit, logs).
    pub fn tool(&self) -> &'static str {
        match self {
            ToolInput::Identify(_) => "identify_patient",
            ToolInput::FindSlots(_) => "find_slots",
            ToolInput::Book(_) => "book_appointment",
            ToolInput::Cancel(_) => "cancel_appointment",
            ToolInput::Request(_) => "create_request",
            ToolInput::Emergency(_) => "report_emergency",
        }
    }
}

/// `identify_patient` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyInput {
    /// Family name.
    pub family_name: String,
    /// Given name, if said.
    pub given_name: Option<String>,
    /// Birth date.
    pub birth_date: Date,
}

/// Part of day filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartOfDay {
    /// Before noon.
    Morning,
    /// From noon.
    Afternoon,
    /// Any time.
    Any,
}

/// `find_slots` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindSlotsInput {
    /// Visit type code.
    pub visit_type: String,
    /// Earliest date.
    pub earliest: Option<Date>,
    /// Latest date.
    pub latest: Option<Date>,
    /// Part of day.
    pub part_of_day: PartOfDay,
    /// Allowed weekdays (index 0 = Monday); all when empty.
    pub weekdays: [bool; 7],
    /// Practitioner id.
    pub practitioner: Option<String>,
    /// Same day only.
    pub same_day: bool,
    /// How many slots.
    pub limit: usize,
}

/// New-patient data on a booking.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewPatientInput {
    /// Family name.
    pub family_name: Option<String>,
    /// Given name.
    pub given_name: Option<String>,
    /// Birth date `YYYY-MM-DD`.
    pub birth_date: Option<String>,
    /// `gkv|pkv|self`.
    #[serde(default)]
    pub insurance: Option<String>,
}

/// `book_appointment` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookInput {
    /// Slot ref.
    pub slot_ref: String,
    /// Patient ref.
    pub patient_ref: Option<String>,
    /// New patient.
    pub new_patient: Option<NewPatient>,
    /// Visit type code.
    pub visit_type: String,
    /// Administrative reason.
    pub reason_short: String,
    /// Appointment ref to replace (reschedule).
    pub replaces_appointment_ref: Option<String>,
}

/// `cancel_appointment` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelInput {
    /// Appointment ref (from the path).
    pub appointment_ref: String,
    /// `patient_request|illness|other`.
    pub reason: String,
    /// Short note.
    pub note: Option<String>,
}

/// Request categories.
pub const CATEGORIES: [&str; 8] = [
    "prescription_refill",
    "sick_note",
    "referral",
    "results_callback",
    "callback",
    "urgent_callback",
    "document",
    "message",
];

/// `create_request` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInput {
    /// Category.
    pub category: String,
    /// Patient ref.
    pub patient_ref: Option<String>,
    /// Caller data (JSON) when not identified.
    pub caller: Option<Value>,
    /// Details (JSON object, bounded).
    pub details: Value,
    /// `routine|urgent`.
    pub urgency: String,
    /// A different call-back number.
    pub callback_number: Option<String>,
    /// Preferred window.
    pub callback_window: Option<String>,
    /// Note.
    pub note: Option<String>,
}

/// `report_emergency` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyInput {
    /// Life-threatening (else urgent).
    pub life_threatening: bool,
    /// Keywords.
    pub keywords: String,
    /// Patient ref.
    pub patient_ref: Option<String>,
}

// --- routing and parsing ------------------------------------------------------------------------

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

enum Route<'a> {
    Identify,
    Slots,
    Book,
    Cancel(&'a str),
    Request,
    Emergency,
}

fn route<'a>(method: &str, path: &'a str) -> Result<Route<'a>, ToolReply> {
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
            _ => return Err(ToolReply::error(404, "not_found")),
        },
    };
    if method != want {
        return Err(ToolReply::error(405, "method_not_allowed"));
    }
    Ok(route)
}

/// Route, authenticate and validate a tool request (no store access). `Err` is the final reply.
pub fn prepare(
    req: &ToolRequest<'_>,
    config: &PracticeConfig,
    secrets: &Secrets,
) -> Result<ToolCall, ToolReply> {
    let route = route(req.method, req.path)?;
    secrets.check_tools(req.authorization)?;
    let token = trim_ascii(req.ignis_call.unwrap_or_default());
    if token.is_empty() {
        return Err(ToolReply::error(401, "no_call"));
    }
    let call_token_hash = hash_token(token);
    if req.body.len() > MAX_BODY_BYTES {
        return Err(ToolReply::error(413, "too_large"));
    }
    if req.query.len() > MAX_QUERY_BYTES {
        return Err(ToolReply::error(413, "too_large"));
    }
    let input = match route {
        Route::Identify => ToolInput::Identify(parse_identify(req.body)?),
        Route::Slots => ToolInput::FindSlots(parse_find_slots(req.query, config)?),
        Route::Book => ToolInput::Book(parse_book(req.body, config)?),
        Route::Cancel(r) => ToolInput::Cancel(parse_cancel(r, req.body)?),
        Route::Request => ToolInput::Request(parse_request(req.body)?),
        Route::Emergency => ToolInput::Emergency(parse_emergency(req.body)?),
    };
    Ok(ToolCall {
        call_token_hash,
        input,
    })
}

fn body<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, ToolReply> {
    let b = if trim_ascii(b).is_empty() {
        &b"{}"[..]
    } else {
        b
    };
    serde_json::from_slice(b).map_err(|_| ToolReply::invalid("body"))
}

fn text(v: Option<String>, max: usize, field: &str) -> Result<Option<String>, ToolReply> {
    match v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) {
        Some(s) if s.chars().count() > max || s.chars().any(char::is_control) => {
            Err(ToolReply::invalid(field))
        }
        other => Ok(other),
    }
}

fn required(v: Option<String>, max: usize, field: &str) -> Result<String, ToolReply> {
    text(v, max, field)?.ok_or_else(|| ToolReply::invalid(field))
}

fn birth_date(s: &str, field: &str) -> Result<Date, ToolReply> {
    let d: Date = s.trim().parse().map_err(|_| ToolReply::invalid(field))?;
    if d.year() < 1900 || d.year() > 2100 {
        return Err(ToolReply::invalid(field));
    }
    Ok(d)
}

fn blank(v: &Option<String>) -> bool {
    v.as_deref().is_none_or(|s| s.trim().is_empty())
}

/// An enum-like value: trimmed and lowercased (the agent's enums are lowercase).
fn enum_text(v: Option<String>, field: &str) -> Result<Option<String>, ToolReply> {
    Ok(text(v, 40, field)?.map(|s| s.to_lowercase()))
}

fn ref_text(v: Option<String>, field: &str) -> Result<Option<String>, ToolReply> {
    text(v, 8, field)
}

#[derive(Deserialize)]
struct IdentifyBody {
    family_name: Option<String>,
    given_name: Option<String>,
    birth_date: Option<String>,
}

fn parse_identify(b: &[u8]) -> Result<IdentifyInput, ToolReply> {
    let x: IdentifyBody = body(b)?;
    Ok(IdentifyInput {
        family_name: required(x.family_name, MAX_NAME_CHARS, "family_name")?,
        given_name: text(x.given_name, MAX_NAME_CHARS, "given_name")?,
        birth_date: birth_date(&required(x.birth_date, 10, "birth_date")?, "birth_date")?,
    })
}

/// Decodes an `application/x-www-form-urlencoded` query into pairs.
pub fn parse_query(q: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn parse_find_slots(query: &str, config: &PracticeConfig) -> Result<FindSlotsInput, ToolReply> {
    let pairs = parse_query(query).ok_or_else(|| ToolReply::invalid("query"))?;
    let mut input = FindSlotsInput {
        visit_type: String::new(),
        earliest: None,
        latest: None,
        part_of_day: PartOfDay::Any,
        weekdays: [false; 7],
        practitioner: None,
        same_day: false,
        limit: DEFAULT_SLOT_LIMIT,
    };
    for (k, v) in pairs {
        let lower = v.trim().to_lowercase();
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "visit_type" => {
                config
                    .visit_type(&lower)
                    .ok_or_else(|| ToolReply::invalid("visit_type"))?;
                input.visit_type = lower;
            }
            "earliest" => {
                input.earliest = Some(v.parse().map_err(|_| ToolReply::invalid("earliest"))?)
            }
            "latest" => input.latest = Some(v.parse().map_err(|_| ToolReply::invalid("latest"))?),
            "part_of_day" => {
                input.part_of_day = match lower.as_str() {
                    "morning" => PartOfDay::Morning,
                    "afternoon" => PartOfDay::Afternoon,
                    "any" => PartOfDay::Any,
                    _ => return Err(ToolReply::invalid("part_of_day")),
                }
            }
            "weekdays" => {
                for d in v.split(',').filter(|d| !d.trim().is_empty()) {
                    let i = weekday_index(d).ok_or_else(|| ToolReply::invalid("weekdays"))?;
                    input.weekdays[i] = true;
                }
            }
            "practitioner" => {
                let p = config
                    .practitioners
                    .iter()
                    .find(|p| p.id == v || normalize_name(&p.display) == normalize_name(v))
                    .ok_or_else(|| ToolReply::invalid("practitioner"))?;
                input.practitioner = Some(p.id.clone());
            }
            "urgency" => {
                input.same_day = match lower.as_str() {
                    "routine" => false,
                    "same_day" => true,
                    _ => return Err(ToolReply::invalid("urgency")),
                }
            }
            "limit" => {
                let n: usize = v.parse().map_err(|_| ToolReply::invalid("limit"))?;
                if !(1..=MAX_SLOT_LIMIT).contains(&n) {
                    return Err(ToolReply::invalid("limit"));
                }
                input.limit = n;
            }
            // Unknown parameters are ignored so agent configurations can evolve.
            _ => {}
        }
    }
    if input.visit_type.is_empty() {
        return Err(ToolReply::invalid("visit_type"));
    }
    if let (Some(a), Some(b)) = (input.earliest, input.latest)
        && b < a
    {
        return Err(ToolReply::invalid("latest"));
    }
    Ok(input)
}

#[derive(Deserialize)]
struct BookBody {
    slot_ref: Option<String>,
    patient_ref: Option<String>,
    new_patient: Option<NewPatientInput>,
    visit_type: Option<String>,
    reason_short: Option<String>,
    replaces_appointment_ref: Option<String>,
}

fn parse_book(b: &[u8], config: &PracticeConfig) -> Result<BookInput, ToolReply> {
    let x: BookBody = body(b)?;
    let visit_type =
        enum_text(x.visit_type, "visit_type")?.ok_or_else(|| ToolReply::invalid("visit_type"))?;
    config
        .visit_type(&visit_type)
        .ok_or_else(|| ToolReply::invalid("visit_type"))?;
    // An object of empty strings is what an agent sends when the LLM left it out.
    let new_patient = match x.new_patient.filter(|p| {
        [&p.family_name, &p.given_name, &p.birth_date]
            .iter()
            .any(|f| !blank(f))
    }) {
        None => None,
        Some(p) => {
            let insurance =
                enum_text(p.insurance, "new_patient.insurance")?.unwrap_or_else(|| "gkv".into());
            if !["gkv", "pkv", "self"].contains(&insurance.as_str()) {
                return Err(ToolReply::invalid("new_patient.insurance"));
            }
            let dob = required(p.birth_date, 10, "new_patient.birth_date")?;
            Some(NewPatient {
                family: required(p.family_name, MAX_NAME_CHARS, "new_patient.family_name")?,
                given: required(p.given_name, MAX_NAME_CHARS, "new_patient.given_name")?,
                birth_date: birth_date(&dob, "new_patient.birth_date")?.to_string(),
                insurance,
                phone: None,
            })
        }
    };
    Ok(BookInput {
        slot_ref: required(x.slot_ref, 8, "slot_ref")?,
        patient_ref: ref_text(x.patient_ref, "patient_ref")?,
        new_patient,
        visit_type,
        reason_short: text(x.reason_short, MAX_REASON_CHARS, "reason_short")?.unwrap_or_default(),
        replaces_appointment_ref: ref_text(x.replaces_appointment_ref, "replaces_appointment_ref")?,
    })
}

#[derive(Deserialize)]
struct CancelBody {
    reason: Option<String>,
    note: Option<String>,
}

fn parse_cancel(r: &str, b: &[u8]) -> Result<CancelInput, ToolReply> {
    let x: CancelBody = body(b)?;
    let reason = enum_text(x.reason, "reason")?.unwrap_or_else(|| "patient_request".into());
    if !["patient_request", "illness", "other"].contains(&reason.as_str()) {
        return Err(ToolReply::invalid("reason"));
    }
    let appointment_ref = percent_decode(r).ok_or_else(|| ToolReply::invalid("appointment_ref"))?;
    Ok(CancelInput {
        appointment_ref: required(Some(appointment_ref), 8, "appointment_ref")?,
        reason,
        note: text(x.note, 120, "note")?,
    })
}

#[derive(Deserialize)]
struct RequestBody {
    category: Option<String>,
    patient_ref: Option<String>,
    caller: Option<CallerBody>,
    details: Option<DetailsBody>,
    urgency: Option<String>,
    callback_number: Option<String>,
    callback_window: Option<String>,
    note: Option<String>,
}

#[derive(Deserialize)]
struct CallerBody {
    family_name: Option<String>,
    given_name: Option<String>,
    birth_date: Option<String>,
}

#[derive(Deserialize)]
struct DetailsBody {
    #[serde(default)]
    medications: Vec<MedicationBody>,
    new_medication: Option<bool>,
    specialty: Option<String>,
    reason_short: Option<String>,
    first_referral: Option<bool>,
    document_type: Option<String>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct MedicationBody {
    name: Option<String>,
    strength: Option<String>,
    amount: Option<String>,
}

/// Hard bound on medications parsed at all (more than [`MAX_MEDICATIONS`] is a business error).
const MEDICATIONS_PARSE_LIMIT: usize = 20;

fn parse_request(b: &[u8]) -> Result<RequestInput, ToolReply> {
    let x: RequestBody = body(b)?;
    let category =
        enum_text(x.category, "category")?.ok_or_else(|| ToolReply::invalid("category"))?;
    if !CATEGORIES.contains(&category.as_str()) {
        return Err(ToolReply::invalid("category"));
    }
    let urgency = enum_text(x.urgency, "urgency")?.unwrap_or_else(|| "routine".into());
    if !["routine", "urgent"].contains(&urgency.as_str()) {
        return Err(ToolReply::invalid("urgency"));
    }
    let caller = match x.caller.filter(|c| {
        [&c.family_name, &c.given_name, &c.birth_date]
            .iter()
            .any(|f| !blank(f))
    }) {
        None => None,
        Some(c) => {
            let family = required(c.family_name, MAX_NAME_CHARS, "caller.family_name")?;
            let given = text(c.given_name, MAX_NAME_CHARS, "caller.given_name")?;
            let dob = match text(c.birth_date, 10, "caller.birth_date")? {
                Some(d) => Some(birth_date(&d, "caller.birth_date")?.to_string()),
                None => None,
            };
            Some(json!({ "family_name": family, "given_name": given, "birth_date": dob }))
        }
    };
    let details = match x.details {
        None => json!({}),
        Some(d) => {
            if d.medications.len() > MEDICATIONS_PARSE_LIMIT {
                return Err(ToolReply::invalid("details.medications"));
            }
            let mut meds = Vec::new();
            for m in d.medications {
                meds.push(json!({
                    "name": required(m.name, MAX_NAME_CHARS, "details.medications.name")?,
                    "strength": text(m.strength, 30, "details.medications.strength")?,
                    "amount": text(m.amount, 30, "details.medications.amount")?,
                }));
            }
            json!({
                "medications": meds,
                "new_medication": d.new_medication.unwrap_or(false),
                "specialty": text(d.specialty, MAX_NAME_CHARS, "details.specialty")?,
                "reason_short": text(d.reason_short, MAX_REASON_CHARS, "details.reason_short")?,
                "first_referral": d.first_referral.unwrap_or(false),
                "document_type": text(d.document_type, MAX_NAME_CHARS, "details.document_type")?,
                "text": text(d.text, MAX_TEXT_CHARS, "details.text")?,
            })
        }
    };
    let callback_number = text(x.callback_number, 25, "callback_number")?;
    if let Some(n) = &callback_number {
        let digits = n.chars().filter(char::is_ascii_digit).count();
        if !n
            .chars()
            .all(|c| c.is_ascii_digit() || " +-/()".contains(c))
            || !(5..=16).contains(&digits)
        {
            return Err(ToolReply::invalid("callback_number"));
        }
    }
    Ok(RequestInput {
        category,
        patient_ref: ref_text(x.patient_ref, "patient_ref")?,
        caller,
        details,
        urgency,
        callback_number,
        callback_window: text(x.callback_window, 60, "callback_window")?,
        note: text(x.note, MAX_TEXT_CHARS, "note")?,
    })
}

#[derive(Deserialize)]
struct EmergencyBody {
    severity: Option<String>,
    keywords: Option<String>,
    patient_ref: Option<String>,
}

fn parse_emergency(b: &[u8]) -> Result<EmergencyInput, ToolReply> {
    let x: EmergencyBody = body(b)?;
    let severity =
        enum_text(x.severity, "severity")?.ok_or_else(|| ToolReply::invalid("severity"))?;
    let life_threatening = match severity.as_str() {
        "life_threatening" => true,
        "urgent" => false,
        _ => return Err(ToolReply::invalid("severity")),
    };
    // Keywords are cut, not rejected: an emergency must never fail on length.
    let keywords: String = x
        .keywords
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_KEYWORDS_CHARS)
        .collect();
    Ok(EmergencyInput {
        life_threatening,
        keywords,
        // An unusable patient ref is dropped rather than failing the emergency.
        patient_ref: ref_text(x.patient_ref, "patient_ref").ok().flatten(),
    })
}

// --- execution ----------------------------------------------------------------------------------

/// Runs a prepared tool call against the store (on the writer thread).
pub fn execute(
    store: &mut dyn Store,
    config: &PracticeConfig,
    call: ToolCall,
    now: Timestamp,
) -> ToolReply {
    let tool = call.input.tool();
    let live = match store.live_call(&call.call_token_hash, now.as_second()) {
        Ok(Some(c)) => c,
        Ok(None) => {
            tracing::info!(tool, outcome = "no_live_call", "tool request refused");
            let _ = store.audit(now.as_second(), None, tool, "no_live_call");
            return ToolReply::error(403, "call_not_active");
        }
        Err(e) => return internal(tool, &e),
    };
    let call_id = live.id;
    let mut ctx = Ctx {
        store,
        config,
        call: live,
        now,
        dirty: false,
    };
    let result = match call.input {
        ToolInput::Identify(i) => ctx.identify(i),
        ToolInput::FindSlots(i) => ctx.find_slots(i),
        ToolInput::Book(i) => ctx.book(i),
        ToolInput::Cancel(i) => ctx.cancel(i),
        ToolInput::Request(i) => ctx.request(i),
        ToolInput::Emergency(i) => ctx.emergency(i),
    };
    let reply = match result {
        Ok(v) => v,
        Err(e) => return internal(tool, &e),
    };
    if ctx.dirty
        && let Err(e) = ctx.store.save_call_state(call_id, &ctx.call.state)
    {
        return internal(tool, &e);
    }
    let outcome = reply
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("ok")
        .to_string();
    tracing::info!(tool, outcome = outcome.as_str(), "tool call");
    let _ = ctx
        .store
        .audit(now.as_second(), Some(call_id), tool, &outcome);
    ToolReply::json(200, &reply)
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
        Err(reply) => reply,
    }
}

fn internal(tool: &str, e: &StoreError) -> ToolReply {
    tracing::error!(tool, error = %e, "tool failed in the store");
    ToolReply::error(500, "internal")
}

struct Ctx<'a> {
    store: &'a mut dyn Store,
    config: &'a PracticeConfig,
    call: CallRecord,
    now: Timestamp,
    dirty: bool,
}

type Out = Result<Value, StoreError>;

fn ts_of(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn fail(code: &str) -> Out {
    Ok(json!({ "ok": false, "error": code }))
}

impl Ctx<'_> {
    fn state(&mut self) -> &mut CallState {
        self.dirty = true;
        &mut self.call.state
    }

    fn ts(&self, secs: i64) -> Timestamp {
        ts_of(secs)
    }

    fn with(&self, practitioner: &str) -> String {
        self.config
            .practitioner(practitioner)
            .map_or_else(|| practitioner.to_string(), |p| p.display.clone())
    }

    fn slot_json(&mut self, s: &SlotRecord) -> Value {
        let slot_ref = self.state().add_slot(s.id);
        json!({
            "slot_ref": slot_ref,
            "start": calendar::iso(self.config, self.ts(s.start)),
            "end": calendar::iso(self.config, self.ts(s.end)),
            "label": calendar::label(self.config, self.ts(s.start)),
            "with": self.with(&s.practitioner),
        })
    }

    fn appointment_json(&mut self, a: &AppointmentRecord, booked_here: bool) -> Value {
        let r = self
            .state()
            .add_appointment(a.id, a.patient_id, booked_here);
        json!({
            "appointment_ref": r,
            "start": calendar::iso(self.config, self.ts(a.start)),
            "label": calendar::label(self.config, self.ts(a.start)),
            "with": self.with(&a.practitioner),
            "visit_type": a.visit_type,
        })
    }

    fn caller_matches(&self, p: &PatientRecord) -> bool {
        let caller = normalize_number(&self.call.caller_number);
        match &p.phone {
            Some(ph) if caller.len() >= 5 => {
                constant_time_eq(normalize_number(ph).as_bytes(), caller.as_bytes())
            }
            _ => false,
        }
    }

    /// Whether the caller number used up its identification attempts across recent calls.
    fn number_locked(&mut self) -> Result<bool, StoreError> {
        let caller = self.call.caller_number.trim();
        if normalize_number(caller).len() < 5 {
            return Ok(false); // anonymous: the per-call limit applies
        }
        let since = self.now.as_second() - IDENTIFICATION_WINDOW_SECS;
        let n = self.store.failed_identifications_by_number(caller, since)?;
        Ok(n >= MAX_FAILED_IDENTIFICATIONS_PER_NUMBER)
    }

    fn identify(&mut self, i: IdentifyInput) -> Out {
        if self.call.state.locked() || self.number_locked()? {
            return Ok(json!({ "ok": false, "error": "locked", "attempts_left": 0 }));
        }
        let family = name_key(&normalize_name(&i.family_name));
        let mut found: Vec<PatientRecord> = self
            .store
            .patients_by_birth_date(&i.birth_date.to_string())?
            .into_iter()
            .filter(|p| name_key(&p.family_norm) == family)
            .collect();
        // The given name narrows the match: exact (spelling-tolerant) or a prefix of a double
        // name ("Hans" for "Hans-Peter").
        if let Some(g) = i
            .given_name
            .as_deref()
            .map(normalize_name)
            .filter(|g| !g.is_empty())
        {
            let key = name_key(&g);
            found.retain(|p| name_key(&p.given_norm) == key || p.given_norm.starts_with(&g));
        }
        match found.len() {
            0 => {
                let st = self.state();
                st.failed_identifications += 1;
                let left = st.attempts_left();
                Ok(json!({ "ok": true, "match": "none", "attempts_left": left }))
            }
            1 => {
                let p = found.remove(0);
                let assurance = if self.caller_matches(&p) {
                    Assurance::NameDobPhone
                } else {
                    Assurance::NameDob
                };
                let patient_ref = self.state().add_patient(p.id, assurance);
                let mut upcoming = Vec::new();
                // Appointments are read back only when the caller number matches (spec §6.3).
                if assurance == Assurance::NameDobPhone {
                    for a in self
                        .store
                        .upcoming(p.id, self.now.as_second(), MAX_UPCOMING)?
                    {
                        upcoming.push(self.appointment_json(&a, false));
                    }
                }
                let salutation = match p.gender.as_str() {
                    "female" => format!("Frau {}", p.family),
                    "male" => format!("Herr {}", p.family),
                    _ => format!("{} {}", p.given, p.family),
                };
                let this_quarter = quarter(calendar::local(self.config, self.now).date);
                Ok(json!({
                    "ok": true,
                    "match": "unique",
                    "patient_ref": patient_ref,
                    "salutation": salutation,
                    "assurance": assurance.as_str(),
                    "upcoming": upcoming,
                    "flags": {
                        "known_patient": p.known,
                        "card_read_this_quarter": p.card_read_quarter.as_deref() == Some(this_quarter.as_str()),
                        "appointments_readable": assurance == Assurance::NameDobPhone,
                    },
                    "attempts_left": self.call.state.attempts_left(),
                }))
            }
            _ => Ok(
                json!({ "ok": true, "match": "ambiguous", "attempts_left": self.call.state.attempts_left() }),
            ),
        }
    }

    fn find_slots(&mut self, i: FindSlotsInput) -> Out {
        let cfg = self.config;
        let Some(vt) = cfg.visit_type(&i.visit_type) else {
            return fail("unknown_visit_type");
        };
        if !vt.phone_bookable {
            return fail("not_phone_bookable");
        }
        let today = calendar::local(cfg, self.now).date;
        let horizon = calendar::add_days(today, cfg.booking_horizon_days as i64);
        let (from, to) = if i.same_day {
            (today, today)
        } else {
            let from = i.earliest.filter(|d| *d > today).unwrap_or(today);
            let to = i
                .latest
                .unwrap_or_else(|| calendar::add_days(from, DEFAULT_SLOT_WINDOW_DAYS));
            (from, to.min(horizon))
        };
        let now = self.now.as_second();
        let candidates = |from: Date, to: Date| {
            calendar::slot_candidates(cfg, from, to)
                .into_iter()
                .filter(|c| c.start > now && c.visit_types.contains(&i.visit_type))
                .filter(|c| i.practitioner.as_ref().is_none_or(|p| *p == c.practitioner))
                .filter(|c| {
                    let l = calendar::local(cfg, ts_of(c.start));
                    (!i.weekdays.iter().any(|d| *d) || i.weekdays[l.weekday])
                        && match i.part_of_day {
                            PartOfDay::Any => true,
                            PartOfDay::Morning => l.minute < 12 * 60,
                            PartOfDay::Afternoon => l.minute >= 12 * 60,
                        }
                })
                .collect::<Vec<_>>()
        };
        let slots = if from <= to {
            self.store.free_slots(&candidates(from, to), i.limit)?
        } else {
            Vec::new()
        };
        let slots_json: Vec<Value> = slots.iter().map(|s| self.slot_json(s)).collect();
        let mut next_available = Value::Null;
        let mut note = Value::Null;
        if slots_json.is_empty() {
            if i.same_day {
                note = json!("same_day_full");
            } else {
                let after = calendar::next_day(to.max(from));
                if after <= horizon
                    && let Some(s) = self
                        .store
                        .free_slots(&candidates(after, horizon), 1)?
                        .first()
                {
                    next_available = self.slot_json(s);
                }
                if next_available.is_null() {
                    note = json!("nothing_free");
                }
            }
        }
        Ok(
            json!({ "ok": true, "slots": slots_json, "next_available": next_available, "note": note }),
        )
    }

    fn alternatives(&mut self, visit_type: &str, from_secs: i64) -> Result<Vec<Value>, StoreError> {
        let cfg = self.config;
        let start = calendar::local(cfg, self.ts(from_secs.max(self.now.as_second()))).date;
        let horizon = calendar::add_days(
            calendar::local(cfg, self.now).date,
            cfg.booking_horizon_days as i64,
        );
        let now = self.now.as_second();
        let cands: Vec<_> =
            calendar::slot_candidates(cfg, start, calendar::add_days(start, 7).min(horizon))
                .into_iter()
                .filter(|c| c.start > now && c.visit_types.iter().any(|v| v == visit_type))
                .collect();
        let slots = self.store.free_slots(&cands, ALTERNATIVES)?;
        Ok(slots.iter().map(|s| self.slot_json(s)).collect())
    }

    fn book(&mut self, i: BookInput) -> Out {
        let Some(vt) = self.config.visit_type(&i.visit_type).cloned() else {
            return fail("unknown_visit_type");
        };
        if !vt.phone_bookable {
            return fail("not_phone_bookable");
        }
        let Some(slot) = self.call.state.slot(&i.slot_ref).cloned() else {
            return fail("not_offered");
        };
        let (patient, patient_key, assurance) = match (&i.patient_ref, &i.new_patient) {
            (Some(r), _) => {
                let Some(p) = self.call.state.patient(r).cloned() else {
                    return fail("not_identified");
                };
                (
                    BookingPatient::Existing(p.id),
                    format!("p:{}", p.id),
                    Some(p.assurance),
                )
            }
            (None, Some(np)) => {
                if !self.config.accepts_new_patients {
                    return fail("no_new_patients");
                }
                if !vt.new_patients_ok {
                    return fail("visit_type_not_for_new_patients");
                }
                let mut np = np.clone();
                let caller = self.call.caller_number.trim();
                np.phone = (normalize_number(caller).len() >= 5).then(|| caller.to_string());
                let key = format!(
                    "n:{}|{}|{}",
                    normalize_name(&np.family),
                    normalize_name(&np.given),
                    np.birth_date
                );
                (BookingPatient::New(np), key, None)
            }
            (None, None) => return fail("not_identified"),
        };
        let replaces = match &i.replaces_appointment_ref {
            None => None,
            Some(r) => {
                let Some(a) = self.call.state.appointment(r).cloned() else {
                    return fail("not_found");
                };
                let owner = match &patient {
                    BookingPatient::Existing(id) => *id == a.patient_id,
                    BookingPatient::New(_) => false,
                };
                if !owner {
                    return fail("not_found");
                }
                if assurance != Some(Assurance::NameDobPhone) && !a.booked_here {
                    return fail("insufficient_assurance");
                }
                if !a.booked_here
                    && let Some(old) = self.store.appointment(a.id)?
                    && old.start - self.now.as_second() < self.config.min_notice_hours as i64 * 3600
                {
                    return fail("too_late_to_change");
                }
                Some(a.id)
            }
        };
        let key_src = format!(
            "{}|{}|{}|{:?}",
            self.call.call_sid, slot.id, patient_key, replaces
        );
        let idempotency_key: String = Sha256::digest(key_src.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let booking = Booking {
            slot_id: slot.id,
            patient,
            visit_type: vt.code.clone(),
            reason_short: i.reason_short.clone(),
            replaces,
            call_sid: self.call.call_sid.clone(),
            idempotency_key,
            now: self.now.as_second(),
        };
        match self.store.book(&booking)? {
            BookOutcome::Booked {
                appointment,
                replaced,
                repeated,
            } => {
                let patient_ref = self.state().add_patient(
                    appointment.patient_id,
                    assurance.unwrap_or(Assurance::NameDob),
                );
                let a = self.appointment_json(&appointment, true);
                let replaced = match replaced {
                    Some(r) => {
                        let rr = self.state().add_appointment(r.id, r.patient_id, false);
                        json!({ "appointment_ref": rr, "label": calendar::label(self.config, self.ts(r.start)) })
                    }
                    None => Value::Null,
                };
                Ok(json!({
                    "ok": true,
                    "appointment_ref": a["appointment_ref"],
                    "patient_ref": patient_ref,
                    "start": a["start"],
                    "label": a["label"],
                    "with": a["with"],
                    "visit_type": vt.label,
                    "replaced": replaced,
                    "bring": vt.bring,
                    "repeated": repeated,
                }))
            }
            BookOutcome::SlotTaken | BookOutcome::SlotGone => {
                let from = self
                    .store
                    .slot(slot.id)?
                    .map_or(self.now.as_second(), |s| s.start);
                let alternatives = self.alternatives(&vt.code, from)?;
                Ok(json!({ "ok": false, "error": "slot_taken", "alternatives": alternatives }))
            }
            BookOutcome::WrongVisitType => fail("wrong_visit_type"),
            BookOutcome::ReplacedNotBookable => fail("not_found"),
        }
    }

    fn cancel(&mut self, i: CancelInput) -> Out {
        let Some(a) = self.call.state.appointment(&i.appointment_ref).cloned() else {
            return fail("not_found");
        };
        let Some(owner) = self
            .call
            .state
            .patients
            .iter()
            .find(|p| p.id == a.patient_id)
            .cloned()
        else {
            return fail("not_found");
        };
        if owner.assurance != Assurance::NameDobPhone && !a.booked_here {
            return fail("insufficient_assurance");
        }
        let Some(current) = self.store.appointment(a.id)? else {
            return fail("not_found");
        };
        if current.status == "booked"
            && !a.booked_here
            && current.start > self.now.as_second()
            && current.start - self.now.as_second() < self.config.min_notice_hours as i64 * 3600
        {
            return fail("too_late_to_change");
        }
        match self
            .store
            .cancel(a.id, &i.reason, i.note.as_deref(), self.now.as_second())?
        {
            CancelOutcome::Cancelled(rec) => Ok(json!({
                "ok": true,
                "cancelled": {
                    "appointment_ref": i.appointment_ref,
                    "label": calendar::label(self.config, self.ts(rec.start)),
                }
            })),
            CancelOutcome::NotFound => fail("not_found"),
            CancelOutcome::AlreadyCancelled => fail("already_cancelled"),
            CancelOutcome::InPast => fail("in_past"),
        }
    }

    fn next_working_day_label(&self) -> String {
        let mut d = calendar::next_day(calendar::local(self.config, self.now).date);
        for _ in 0..30 {
            if !calendar::opening_intervals(self.config, d).is_empty() {
                break;
            }
            d = calendar::next_day(d);
        }
        calendar::date_label(d)
    }

    fn request(&mut self, i: RequestInput) -> Out {
        let patient = match &i.patient_ref {
            Some(r) => {
                let Some(p) = self.call.state.patient(r).cloned() else {
                    return fail("not_identified");
                };
                self.store.patient(p.id)?
            }
            None => None,
        };
        if patient.is_none() && i.caller.is_none() {
            return fail("not_identified");
        }
        let cat = i.category.as_str();
        let d = &i.details;
        let mut needs: Vec<&str> = Vec::new();
        let mut urgency = i.urgency.clone();
        let known = patient.as_ref().is_some_and(|p| p.known);
        let this_quarter = quarter(calendar::local(self.config, self.now).date);
        let card_ok = patient
            .as_ref()
            .is_some_and(|p| p.card_read_quarter.as_deref() == Some(this_quarter.as_str()));
        let mut callback_number = i.callback_number.clone().or_else(|| {
            let c = self.call.caller_number.trim();
            (normalize_number(c).len() >= 5).then(|| c.to_string())
        });
        let (kind, label) = match cat {
            "prescription_refill" => {
                let n = d["medications"].as_array().map_or(0, Vec::len);
                if n == 0 {
                    return fail("missing_details");
                }
                if n > MAX_MEDICATIONS {
                    return fail("too_many_items");
                }
                if d["new_medication"].as_bool() == Some(true) || (patient.is_some() && !known) {
                    return fail("needs_appointment");
                }
                if card_ok {
                    (
                        "e_rezept_card",
                        format!(
                            "ab {} in der Apotheke mit Ihrer Versichertenkarte",
                            self.next_working_day_label()
                        ),
                    )
                } else {
                    needs.push("card_visit_this_quarter");
                    ("card_visit_first", "Bitte kommen Sie in diesem Quartal einmal mit Ihrer Versichertenkarte vorbei; danach stellen wir das E-Rezept aus.".to_string())
                }
            }
            "sick_note" => {
                if !known {
                    return fail("needs_appointment");
                }
                ("doctor_callback", "Die Ärztin oder der Arzt ruft Sie zurück; eine Krankschreibung am Telefon gibt es nur nach diesem Gespräch.".to_string())
            }
            "referral" => {
                if d["specialty"].is_null() {
                    return fail("missing_details");
                }
                if d["first_referral"].as_bool() == Some(true) || !known {
                    return fail("needs_appointment");
                }
                if !card_ok {
                    needs.push("card_visit_this_quarter");
                }
                (
                    "pickup",
                    format!(
                        "Die Überweisung liegt ab {} am Empfang für Sie bereit.",
                        self.next_working_day_label()
                    ),
                )
            }
            "results_callback" => {
                // Results are only discussed with the number on file (spec §6.3).
                let Some(p) = &patient else {
                    return fail("not_identified");
                };
                let Some(ph) = &p.phone else {
                    return fail("no_number_on_file");
                };
                callback_number = Some(ph.clone());
                (
                    "callback_number_on_file",
                    "Wir rufen Sie unter der bei uns hinterlegten Nummer zurück.".to_string(),
                )
            }
            "urgent_callback" => {
                urgency = "urgent".into();
                (
                    "callback_today",
                    "Wir rufen Sie heute noch zurück.".to_string(),
                )
            }
            "document" => (
                "staff_prepares",
                "Das Praxisteam bereitet das Dokument vor und meldet sich bei Ihnen.".to_string(),
            ),
            "message" => (
                "message_taken",
                "Ihre Nachricht wird an das Praxisteam weitergegeben.".to_string(),
            ),
            _ => ("callback", "Das Praxisteam ruft Sie zurück.".to_string()),
        };
        if callback_number.is_none()
            && cat != "prescription_refill"
            && cat != "message"
            && cat != "document"
            && cat != "referral"
        {
            return fail("callback_number_needed");
        }
        let created = self.store.create_request(&NewRequest {
            category: i.category.clone(),
            patient_id: patient.as_ref().map(|p| p.id),
            caller_json: if patient.is_none() {
                i.caller.as_ref().map(Value::to_string)
            } else {
                None
            },
            details_json: i.details.to_string(),
            urgency,
            callback_number,
            callback_window: i.callback_window.clone(),
            note: i.note.clone(),
            call_sid: self.call.call_sid.clone(),
            now: self.now.as_second(),
        })?;
        Ok(json!({
            "ok": true,
            "request_ref": created.ref_code,
            "category": i.category,
            "expect": { "kind": kind, "label": label },
            "needs": needs,
            "queue_position": created.queue_position,
        }))
    }

    fn emergency(&mut self, i: EmergencyInput) -> Out {
        let cfg = self.config;
        let d = calendar::emergency_advice(cfg, i.life_threatening, self.now);
        let vertretung = d
            .covering
            .as_ref()
            .map(|c| format!("{}, Telefon {}", c.name, c.phone));
        let es = &cfg.emergency_service.number;
        let say = match d.advice {
            Advice::Call112 => "Bitte legen Sie auf und rufen Sie sofort die 112 an.".to_string(),
            Advice::Transfer => "Ich verbinde Sie jetzt mit dem Praxisteam.".to_string(),
            Advice::SameDay => {
                "Wir suchen Ihnen einen Termin noch heute. Wenn es schlimmer wird: 112.".to_string()
            }
            Advice::Call116117 => format!(
                "Bitte rufen Sie den ärztlichen Bereitschaftsdienst unter {es} an. Bei Lebensgefahr sofort 112."
            ),
            Advice::CallVertretung => match &vertretung {
                Some(v) => format!(
                    "Bitte wenden Sie sich an unsere Vertretung: {v}. Bei Lebensgefahr sofort 112."
                ),
                None => format!(
                    "Bitte rufen Sie den ärztlichen Bereitschaftsdienst unter {es} an. Bei Lebensgefahr sofort 112."
                ),
            },
        };
        let patient_id = i
            .patient_ref
            .as_deref()
            .and_then(|r| self.call.state.patient(r))
            .map(|p| p.id);
        let caller = self.call.caller_number.trim();
        // Recording the event must never stop the advice from going out.
        let event_ref = match self.store.record_emergency(&NewEmergency {
            severity: if i.life_threatening {
                "life_threatening"
            } else {
                "urgent"
            }
            .into(),
            keywords: i.keywords.clone(),
            patient_id,
            callback_number: (normalize_number(caller).len() >= 5).then(|| caller.to_string()),
            advice: d.advice.as_str().into(),
            call_sid: self.call.call_sid.clone(),
            now: self.now.as_second(),
        }) {
            Ok(r) => Value::String(r),
            Err(e) => {
                tracing::error!(error = %e, "emergency event not recorded");
                Value::Null
            }
        };
        tracing::warn!(advice = d.advice.as_str(), "emergency reported");
        Ok(json!({
            "ok": true,
            "event_ref": event_ref,
            "advice": d.advice.as_str(),
            "say": say,
            "numbers": { "emergency": "112", "after_hours": es, "vertretung": vertretung },
            "transfer_available": d.transfer_available,
            "reopens": d.reopens.map(|t| calendar::label(cfg, t)),
        }))
    }
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
        assert_eq!(route("GET", "/api/appointments").err().unwrap().status, 405);
        assert_eq!(route("POST", "/api/nothing").err().unwrap().status, 404);
        assert_eq!(
            route("POST", "/api/appointments/a/b/cancel")
                .err()
                .unwrap()
                .status,
            404
        );
        assert!(is_tool_path("/api/appointments/A1/cancel"));
        assert!(!is_tool_path("/api/appointmentsX"));
    }

    #[test]
    fn query_decoding() {
        let q = parse_query("visit_type=kontrolle&weekdays=mo%2Cmi&x=a+b").unwrap();
        assert_eq!(q[1], ("weekdays".into(), "mo,mi".into()));
        assert_eq!(q[2].1, "a b");
        assert!(parse_query("a=%zz").is_none());
        assert!(parse_query("a=%c3").is_none());
    }

    #[test]
    fn bearer_check() {
        let s = Secrets::new("tok", None);
        assert!(s.check_tools(Some(b"Bearer tok")).is_ok());
        assert!(s.check_tools(Some(b"bearer  tok ")).is_ok());
        assert_eq!(s.check_tools(None).unwrap_err().status, 401);
        assert_eq!(s.check_tools(Some(b"Bearer nope")).unwrap_err().status, 403);
        assert_eq!(s.check_admin(Some(b"Bearer tok")).unwrap_err().status, 403);
    }
}
