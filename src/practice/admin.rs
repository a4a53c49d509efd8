//! The staff JSON API under `/api/admin` (bearer `ADMIN_TOKEN`).
//!
//! - `GET  /api/admin/appointments[?date=YYYY-MM-DD]` — appointments of a local day (default today).
//! - `GET  /api/admin/requests` — open requests, urgent first, then oldest first.
//! - `GET  /api/admin/emergencies[?days=N]` — emergency events of the last N days (default 7).
//! - `POST /api/admin/requests/{ref}/done` — marks a request done.
//!
//! Staff see names, birth dates and numbers (they are the practice); the tool API never does.

use jiff::Timestamp;
use jiff::civil::Date;
use serde_json::{Value, json};

use super::calendar;
use super::config::PracticeConfig;
use super::store::{Store, StoreError};
use super::tools::{Secrets, ToolError, ToolReply, ToolRequest, parse_query};

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

/// Runs an admin call against the store.
pub fn execute(
    store: &mut dyn Store,
    config: &PracticeConfig,
    call: AdminCall,
    now: Timestamp,
) -> ToolReply {
    match run(store, config, call, now) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "admin request failed in the store");
            ToolError::Internal.reply()
        }
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
        Ok(c) => execute(store, config, c, now),
        Err(e) => e.reply(),
    }
}

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn run(
    store: &mut dyn Store,
    config: &PracticeConfig,
    call: AdminCall,
    now: Timestamp,
) -> Result<ToolReply, StoreError> {
    let v: Value = match call {
        AdminCall::Appointments(date) => {
            let date = date.unwrap_or_else(|| calendar::local(config, now).date);
            let from = calendar::instant(config, date, 0).as_second();
            let to = calendar::instant(config, calendar::next_day(date), 0).as_second();
            let list: Vec<Value> = store
                .staff_appointments(from, to)?
                .into_iter()
                .map(|a| {
                    json!({
                        "start": calendar::iso(config, ts(a.start)),
                        "label": calendar::label(config, ts(a.start)),
                        "with": config.practitioner(&a.practitioner).map_or(a.practitioner.clone(), |p| p.display.clone()),
                        "visit_type": a.visit_type,
                        "reason_short": a.reason_short,
                        "status": a.status,
                        "patient": a.patient,
                        "birth_date": a.birth_date,
                        "phone": a.phone,
                    })
                })
                .collect();
            json!({ "ok": true, "date": date.to_string(), "appointments": list })
        }
        AdminCall::Requests => {
            let list: Vec<Value> = store
                .open_requests()?
                .into_iter()
                .map(|r| {
                    let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
                    v["created"] = json!(calendar::iso(config, ts(r.created_at)));
                    v
                })
                .collect();
            json!({ "ok": true, "requests": list })
        }
        AdminCall::Emergencies(days) => {
            let list: Vec<Value> = store
                .emergencies_since(now.as_second() - days * 86_400)?
                .into_iter()
                .map(|e| {
                    let mut v = serde_json::to_value(&e).unwrap_or(Value::Null);
                    v["created"] = json!(calendar::iso(config, ts(e.created_at)));
                    v
                })
                .collect();
            json!({ "ok": true, "emergencies": list })
        }
        AdminCall::RequestDone(r) => {
            if !store.mark_request_done(&r, now.as_second())? {
                return Ok(ToolError::UnknownRequest.reply());
            }
            json!({ "ok": true, "request_ref": r, "status": "done" })
        }
    };
    Ok(ToolReply::json(200, &v))
}
