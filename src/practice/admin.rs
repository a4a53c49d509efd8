//! The staff JSON API under `/api/admin` (bearer `ADMIN_TOKEN`).
//!
//! - `GET  /api/admin/appointments[?date=YYYY-MM-DD]` — appointments of a local day (default today).
//! - `GET  /api/admin/requests` — open requests, urgent first, then oldest first.
//! - `GET  /api/admin/emergencies[?days=N]` — emergency events of the last N days (default 7).
//! - `POST /api/admin/requests/{ref}/done` — marks a request done.
//!
//! Staff see names, birth dates and numbers (they are the practice); the tool API never does.
//! Every authenticated admin request is audited like a tool call ([`execute`]): a `tool_audit`
//! row with who (the admin token's id, never the token), what (route and parameters), when and
//! the outcome, kept as long as the tool audit (90 days).

use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;

use super::calendar;
use super::config::PracticeConfig;
use super::store::{StaffAppointmentDetails, StaffEmergency, StaffRequest, Store, StoreError};
use super::tools::{Secrets, ToolError, ToolReply, ToolRequest, parse_query};

/// Seconds in a day.
const DAY_SECS: i64 = 86_400;

/// Most days of emergency history one request may ask for.
pub const MAX_EMERGENCY_DAYS: i64 = 366;

/// A validated admin call, ready for [`execute`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCall {
    /// Appointments of a local date (None = today).
    Appointments(Option<Date>),
    /// Open requests.
    Requests,
    /// Emergencies of the last N days.
    Emergencies(i64),
    /// Mark a request done.
    RequestDone(String),
}

impl AdminCall {
    /// What was asked, for the audit: the route and its parameters (dates, day counts and
    /// request refs; never personal data).
    pub fn describe(&self) -> String {
        match self {
            AdminCall::Appointments(Some(d)) => format!("admin:appointments date={d}"),
            AdminCall::Appointments(None) => "admin:appointments date=today".to_owned(),
            AdminCall::Requests => "admin:requests".to_owned(),
            AdminCall::Emergencies(days) => format!("admin:emergencies days={days}"),
            AdminCall::RequestDone(r) => format!("admin:request_done ref={r}"),
        }
    }
}

/// Whether `path` belongs to the admin API.
pub fn is_admin_path(path: &str) -> bool {
    path == "/api/admin" || path.starts_with("/api/admin/")
}

/// Route, authenticate and validate an admin request (no store access).
pub fn prepare(req: &ToolRequest<'_>, secrets: &Secrets) -> Result<AdminCall, ToolError> {
    let path = req.path.strip_suffix('/').unwrap_or(req.path);
    let (want, call) = match path {
        "/api/admin/appointments" => ("GET", None),
        "/api/admin/requests" => ("GET", Some(AdminCall::Requests)),
        "/api/admin/emergencies" => ("GET", None),
        _ => match path
            .strip_prefix("/api/admin/requests/")
            .and_then(|r| r.strip_suffix("/done"))
        {
            Some(r) if !r.is_empty() && r.len() <= 16 && !r.contains('/') => {
                ("POST", Some(AdminCall::RequestDone(r.to_string())))
            }
            _ => return Err(ToolError::UnknownRoute),
        },
    };
    if req.method != want {
        return Err(ToolError::MethodNotAllowed);
    }
    secrets.check_admin(req.authorization)?;
    if let Some(c) = call {
        return Ok(c);
    }
    const INVALID: ToolError = ToolError::InvalidInput { field: None };
    let q = parse_query(req.query).ok_or(INVALID)?;
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.trim());
    if path.ends_with("appointments") {
        let date = match get("date").filter(|d| !d.is_empty()) {
            Some(d) => Some(d.parse::<Date>().map_err(|_| INVALID)?),
            None => None,
        };
        Ok(AdminCall::Appointments(date))
    } else {
        let days = match get("days").filter(|d| !d.is_empty()) {
            Some(d) => d
                .parse::<i64>()
                .ok()
                .filter(|d| (1..=MAX_EMERGENCY_DAYS).contains(d))
                .ok_or(INVALID)?,
            None => 7,
        };
        Ok(AdminCall::Emergencies(days))
    }
}

/// Runs an admin call against the store and audits it like a tool call: who asked (`who`, the
/// admin token's id from [`Secrets::admin_id`]), what, when and the outcome.
pub fn execute(
    store: &mut dyn Store,
    config: &PracticeConfig,
    call: AdminCall,
    who: &str,
    now: Timestamp,
) -> ToolReply {
    let what = call.describe();
    let result = match run(store, config, call, now) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "admin request failed in the store");
            Err(ToolError::Internal)
        }
    };
    let outcome = result.as_ref().map_or_else(ToolError::code, |_| "ok");
    tracing::info!(who, what, outcome, "admin request");
    // No audit row, no patient data (as on the staff page): the reply is withheld; a change
    // it made stays done.
    if let Err(e) = store.admin_audit(now.as_second(), who, &what, outcome) {
        tracing::error!(error = %e, "admin audit row not written; reply withheld");
        return ToolError::Unavailable.reply();
    }
    match result {
        Ok(o) => ToolReply::ok(&o),
        Err(e) => e.reply(),
    }
}

/// Runs [`prepare`] then [`execute`] on the current thread.
pub fn handle_admin(
    store: &mut dyn Store,
    config: &PracticeConfig,
    secrets: &Secrets,
    req: &ToolRequest<'_>,
    now: Timestamp,
) -> ToolReply {
    match prepare(req, secrets) {
        Ok(c) => execute(
            store,
            config,
            c,
            &secrets.admin_id().unwrap_or_default(),
            now,
        ),
        Err(e) => e.reply(),
    }
}

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// An admin answer (rendered with `"ok": true` at the edge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AdminOutcome {
    /// Appointments of a day.
    Appointments {
        /// The local date.
        date: String,
        /// Its appointments, in start order.
        appointments: Vec<AppointmentRow>,
    },
    /// Open requests.
    Requests {
        /// Urgent first, then oldest first.
        requests: Vec<Dated<StaffRequest>>,
    },
    /// Recent emergencies.
    Emergencies {
        /// Newest first.
        emergencies: Vec<Dated<StaffEmergency>>,
    },
    /// A request marked done.
    RequestDone {
        /// Its ref.
        request_ref: String,
        /// Always `done`.
        status: &'static str,
    },
}

/// An appointment as the staff see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppointmentRow {
    /// Local start, ISO 8601.
    pub start: String,
    /// German label.
    pub label: String,
    /// Practitioner's display name.
    pub with: String,
    /// Visit type, reason, status and patient, as stored.
    #[serde(flatten)]
    pub details: StaffAppointmentDetails,
}

/// A stored row with its creation time as local ISO 8601 (`created`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dated<T> {
    /// The row.
    #[serde(flatten)]
    pub row: T,
    /// Created, local ISO 8601.
    pub created: String,
}

fn run(
    store: &mut dyn Store,
    config: &PracticeConfig,
    call: AdminCall,
    now: Timestamp,
) -> Result<Result<AdminOutcome, ToolError>, StoreError> {
    let outcome = match call {
        AdminCall::Appointments(date) => {
            let date = date.unwrap_or_else(|| calendar::local(config, now).date);
            let from = calendar::instant(config, date, 0).as_second();
            let to = calendar::instant(config, calendar::next_day(date), 0).as_second();
            let appointments = store
                .staff_appointments(from, to)?
                .into_iter()
                .map(|a| AppointmentRow {
                    start: calendar::iso(config, ts(a.start)),
                    label: calendar::label(config, ts(a.start)),
                    with: config
                        .practitioner(&a.practitioner)
                        .map_or(a.practitioner.clone(), |p| p.display.clone()),
                    details: a.details,
                })
                .collect();
            AdminOutcome::Appointments {
                date: date.to_string(),
                appointments,
            }
        }
        AdminCall::Requests => AdminOutcome::Requests {
            requests: store
                .open_requests()?
                .into_iter()
                .map(|r| Dated {
                    created: calendar::iso(config, ts(r.created_at)),
                    row: r,
                })
                .collect(),
        },
        AdminCall::Emergencies(days) => AdminOutcome::Emergencies {
            emergencies: store
                .emergencies_since(now.as_second() - days * DAY_SECS)?
                .into_iter()
                .map(|e| Dated {
                    created: calendar::iso(config, ts(e.created_at)),
                    row: e,
                })
                .collect(),
        },
        AdminCall::RequestDone(r) => {
            if !store.mark_request_done(&r, now.as_second())? {
                return Ok(Err(ToolError::UnknownRequest));
            }
            AdminOutcome::RequestDone {
                request_ref: r,
                status: "done",
            }
        }
    };
    Ok(Ok(outcome))
}
