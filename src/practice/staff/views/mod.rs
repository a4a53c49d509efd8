//! What staff see and do once logged in (issue 14, point 2): one German page per day with the
//! emergencies, the call-backs and requests, the appointments as a timeline, the calls and a
//! chart of calls per hour; its live fragment for polling; mark done and undo; closing the
//! practice for a day or a few; the two assets.
//!
//! Everything here is sans-IO: [`route`] validates a request (no store), [`execute`] runs it
//! against a [`Store`] with `now` passed in and answers a [`StaffReply`]. Authentication, CSRF,
//! the audit rows and the security headers are the routing layer's ([`super`]).
//!
//! Routes (all below `/staff`, `day` is `YYYY-MM-DD` in the practice's time zone, default today):
//! - `GET /staff[?day=]`: the page (audited: `staff:view day=…`).
//! - `GET /staff/live[?day=]`: the page's `<main>` content alone, with an `ETag` of its bytes;
//!   `staff.js` polls it every second with `If-None-Match` ([`ViewCall::audit`] gives no line;
//!   the routing layer audits a poll whose day differs from the session's last audited day).
//! - `POST /staff/requests/{ref}/done` and `…/undo`: form fields `csrf`, optional `day` (the day
//!   to return to) and optional `reply=fragment` (from `staff.js`: answer 200 with the fresh
//!   fragment instead of a 303 back to the page).
//! - `POST /staff/closures`: form fields `csrf`, `from`, `to` (days), `reason`
//!   ([`ClosureReason`]); closes the practice on those days (docs/practice-tools.md §2.7),
//!   then a 303 to the first one. `POST /staff/closures/{id}/remove` (`csrf`, optional `day`)
//!   opens it again. Audited `staff:close from=… to=… reason=…` and `staff:reopen closure=…`.
//! - `GET /staff/assets/staff.css`, `…/staff.js`.

mod chart;
pub mod html;
mod page;
mod timeline;

use jiff::Timestamp;
use jiff::civil::Date;
use sha2::{Digest, Sha256};

use super::{StaffReply, Viewer};
use crate::practice::closures;
use crate::practice::config::PracticeConfig;
use crate::practice::store::{ClosureReason, NewClosure, RequestChange, Store, StoreError};
use crate::practice::tools::parse_query;

pub use html::html_escape;

/// Most rows one section lists; the rest are summed up in a "… weitere" line.
pub const MAX_ROWS_PER_SECTION: usize = 50;
/// Most appointments of one day placed on the timeline.
pub const MAX_TIMELINE_APPOINTMENTS: usize = 600;
/// Most calls of one day counted in the chart (a practice takes a few hundred).
pub const MAX_CHART_CALLS: usize = 5_000;
/// A call without a stored end is "live" for at most this long after its start: a crash can
/// leave a call row without an end, and it must not count as live for ever.
pub const MAX_LIVE_CALL_SECS: i64 = 3_600;
/// Longest request ref accepted in a path (`R-1001`).
pub const MAX_REF_LEN: usize = 16;
/// Longest query string or form value looked at.
pub const MAX_PARAM_LEN: usize = 256;
/// Most digits of a closure id in a path (any 18 digits fit an `i64`).
pub const MAX_ID_DIGITS: usize = 18;

/// `Content-Type` of the HTML replies.
const HTML: &str = "text/html; charset=utf-8";

/// A validated request below `/staff` (after login).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewCall {
    /// The main page of a day (None: today).
    Page {
        /// The day shown.
        day: Option<Date>,
    },
    /// The live fragment of a day's page (polled; not audited).
    Live {
        /// The day shown.
        day: Option<Date>,
    },
    /// Mark a request done.
    RequestDone {
        /// Its ref (`R-1001`).
        ref_code: String,
        /// The day to show afterwards.
        day: Option<Date>,
        /// Answer with the fragment (200) instead of a 303 to the page.
        fragment: bool,
    },
    /// Undo "done".
    RequestUndo {
        /// Its ref.
        ref_code: String,
        /// The day to show afterwards.
        day: Option<Date>,
        /// Answer with the fragment (200) instead of a 303 to the page.
        fragment: bool,
    },
    /// Close the practice on the days `from..=to` (docs/practice-tools.md §2.7).
    Close {
        /// First closed day.
        from: Date,
        /// Last closed day.
        to: Date,
        /// Why.
        reason: ClosureReason,
    },
    /// Open again: delete a staff closure.
    Reopen {
        /// Its id.
        id: i64,
        /// The day to show afterwards.
        day: Option<Date>,
    },
    /// A static asset ([`asset`]).
    Asset(&'static str),
}

impl ViewCall {
    /// The audit line for this call (what was viewed or changed; refs and dates, never
    /// personal data), or None when it is not audited (polls, assets).
    pub fn audit(&self) -> Option<String> {
        let day = |d: &Option<Date>| d.map_or_else(|| "today".to_owned(), |d| d.to_string());
        match self {
            ViewCall::Page { day: d } => Some(format!("staff:view day={}", day(d))),
            ViewCall::RequestDone { ref_code, .. } => Some(format!(
                "staff:request_done ref={ref_code}{}",
                self.fragment_day()
            )),
            ViewCall::RequestUndo { ref_code, .. } => Some(format!(
                "staff:request_undo ref={ref_code}{}",
                self.fragment_day()
            )),
            ViewCall::Close { from, to, reason } => {
                Some(format!("staff:close from={from} to={to} reason={reason}"))
            }
            ViewCall::Reopen { id, .. } => Some(format!("staff:reopen closure={id}")),
            ViewCall::Live { .. } | ViewCall::Asset(_) => None,
        }
    }

    /// The call with its day resolved (None → `today`), so the audit records the date that
    /// was shown (`day=2026-12-02`), not `day=today`.
    pub fn with_day_resolved(mut self, today: Date) -> ViewCall {
        if let ViewCall::Page { day }
        | ViewCall::Live { day }
        | ViewCall::RequestDone { day, .. }
        | ViewCall::RequestUndo { day, .. }
        | ViewCall::Reopen { day, .. } = &mut self
        {
            day.get_or_insert(today);
        }
        self
    }

    /// The day whose patient lists the call shows, once resolved: the page, the live
    /// fragment, and done/undo answered with the fragment (a 303 shows nothing: the page it
    /// leads to is audited itself).
    pub fn shown_day(&self) -> Option<Date> {
        match self {
            ViewCall::Page { day } | ViewCall::Live { day } => *day,
            ViewCall::RequestDone {
                day,
                fragment: true,
                ..
            }
            | ViewCall::RequestUndo {
                day,
                fragment: true,
                ..
            } => *day,
            _ => None,
        }
    }

    /// ` day=…` for a done/undo audit line whose reply shows that day's lists, else empty.
    fn fragment_day(&self) -> String {
        self.shown_day()
            .map_or_else(String::new, |d| format!(" day={d}"))
    }

    /// Whether the call changes data (a POST: the routing layer checks CSRF and `Origin`).
    pub fn changes_data(&self) -> bool {
        self.changes_closures()
            || matches!(
                self,
                ViewCall::RequestDone { .. } | ViewCall::RequestUndo { .. }
            )
    }

    /// Whether the call changes the staff closures (the calendar is reloaded after it).
    pub fn changes_closures(&self) -> bool {
        matches!(self, ViewCall::Close { .. } | ViewCall::Reopen { .. })
    }
}

/// Why a request below `/staff` was refused before it reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewError {
    /// No such page (404).
    NotFound,
    /// The page exists but not with this method (405).
    MethodNotAllowed,
    /// A parameter is malformed, e.g. `day` (400).
    BadRequest,
}

impl ViewError {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            ViewError::NotFound => 404,
            ViewError::MethodNotAllowed => 405,
            ViewError::BadRequest => 400,
        }
    }

    /// A short German error page.
    pub fn reply(self) -> StaffReply {
        let text = match self {
            ViewError::NotFound => "Diese Seite gibt es nicht.",
            ViewError::MethodNotAllowed => "Diese Aktion ist hier nicht möglich.",
            ViewError::BadRequest => "Die Anfrage ist ungültig (z. B. ein falsches Datum).",
        };
        page::message(self.status(), text)
    }
}

/// Routes a request below `/staff` (`path` includes `/staff`; `query` without `?`; `form` the
/// decoded body of a POST).
pub fn route(
    method: &str,
    path: &str,
    query: &str,
    form: &[(String, String)],
) -> Result<ViewCall, ViewError> {
    let path = match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    };
    let get = |call: ViewCall| match method {
        "GET" | "HEAD" => Ok(call),
        _ => Err(ViewError::MethodNotAllowed),
    };
    match path {
        "/staff" => {
            return get(ViewCall::Page {
                day: query_day(query)?,
            });
        }
        "/staff/live" => {
            return get(ViewCall::Live {
                day: query_day(query)?,
            });
        }
        _ => {}
    }
    if let Some(name) = path.strip_prefix("/staff/assets/") {
        let name = ASSETS
            .iter()
            .find(|(n, ..)| *n == name)
            .map(|(n, ..)| *n)
            .ok_or(ViewError::NotFound)?;
        return get(ViewCall::Asset(name));
    }
    if path == "/staff/closures" || path.starts_with("/staff/closures/") {
        return route_closures(method, path, form);
    }
    let Some(rest) = path.strip_prefix("/staff/requests/") else {
        return Err(ViewError::NotFound);
    };
    let (ref_code, action) = rest.split_once('/').ok_or(ViewError::NotFound)?;
    if !valid_ref(ref_code) || !matches!(action, "done" | "undo") {
        return Err(ViewError::NotFound);
    }
    if method != "POST" {
        return Err(ViewError::MethodNotAllowed);
    }
    let field = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.trim());
    let day = match field("day").filter(|d| !d.is_empty()) {
        Some(d) => Some(parse_day(d)?),
        None => None,
    };
    let fragment = field("reply") == Some("fragment");
    let ref_code = ref_code.to_owned();
    Ok(if action == "done" {
        ViewCall::RequestDone {
            ref_code,
            day,
            fragment,
        }
    } else {
        ViewCall::RequestUndo {
            ref_code,
            day,
            fragment,
        }
    })
}

/// `POST /staff/closures` (form `from`, `to`, `reason`) and `POST
/// /staff/closures/{id}/remove` (form `day`, the day to return to).
fn route_closures(
    method: &str,
    path: &str,
    form: &[(String, String)],
) -> Result<ViewCall, ViewError> {
    if path == "/staff/closures" {
        if method != "POST" {
            return Err(ViewError::MethodNotAllowed);
        }
        let day = |k: &str| form_field(form, k).map_or(Err(ViewError::BadRequest), parse_day);
        let reason = form_field(form, "reason")
            .and_then(ClosureReason::parse)
            .ok_or(ViewError::BadRequest)?;
        return Ok(ViewCall::Close {
            from: day("from")?,
            to: day("to")?,
            reason,
        });
    }
    let id = path
        .strip_prefix("/staff/closures/")
        .and_then(|rest| rest.strip_suffix("/remove"))
        .filter(|id| !id.is_empty() && id.len() <= MAX_ID_DIGITS)
        .filter(|id| id.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|id| id.parse::<i64>().ok())
        .ok_or(ViewError::NotFound)?;
    if method != "POST" {
        return Err(ViewError::MethodNotAllowed);
    }
    let day = match form_field(form, "day").filter(|d| !d.is_empty()) {
        Some(d) => Some(parse_day(d)?),
        None => None,
    };
    Ok(ViewCall::Reopen { id, day })
}

/// A form field, trimmed.
fn form_field<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.trim())
}

/// A request ref as the store makes them (`R-1001`): short, letters, digits and `-` only (so it
/// is safe in a path, an audit line and a `Location`).
fn valid_ref(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= MAX_REF_LEN
        && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn query_day(query: &str) -> Result<Option<Date>, ViewError> {
    if query.len() > MAX_PARAM_LEN {
        return Err(ViewError::BadRequest);
    }
    let q = parse_query(query).ok_or(ViewError::BadRequest)?;
    match q.iter().find(|(k, _)| k == "day").map(|(_, v)| v.trim()) {
        Some(d) if !d.is_empty() => parse_day(d).map(Some),
        _ => Ok(None),
    }
}

/// A day `YYYY-MM-DD` (exactly that form; jiff checks the calendar).
fn parse_day(d: &str) -> Result<Date, ViewError> {
    if d.len() != 10 {
        return Err(ViewError::BadRequest);
    }
    d.parse::<Date>().map_err(|_| ViewError::BadRequest)
}

/// Runs a call against the store.
pub fn execute(
    store: &mut dyn Store,
    config: &PracticeConfig,
    call: ViewCall,
    viewer: &Viewer,
    now: Timestamp,
) -> StaffReply {
    match run(store, config, call, viewer, now) {
        Ok(reply) => reply,
        Err(e) => {
            tracing::error!(error = %e, "staff page failed in the store");
            page::message(
                500,
                "Interner Fehler: die Daten konnten nicht gelesen werden.",
            )
        }
    }
}

fn run(
    store: &mut dyn Store,
    config: &PracticeConfig,
    call: ViewCall,
    viewer: &Viewer,
    now: Timestamp,
) -> Result<StaffReply, StoreError> {
    let today = || crate::practice::calendar::local(config, now).date;
    match call {
        ViewCall::Page { day } => {
            let data = page::DayData::load(store, config, day.unwrap_or_else(today), now)?;
            // Only the full page lists them (outside the polled fragment).
            let closures = store.staff_closures(today())?;
            Ok(page::full_page(config, &data, &closures, viewer))
        }
        ViewCall::Live { day } => {
            let data = page::DayData::load(store, config, day.unwrap_or_else(today), now)?;
            Ok(fragment_reply(page::fragment(config, &data, viewer)))
        }
        ViewCall::RequestDone {
            ref_code,
            day,
            fragment,
        } => {
            let change = store.mark_request_done_by(&ref_code, &viewer.name, now.as_second())?;
            changed(store, config, change, day, fragment, viewer, now)
        }
        ViewCall::RequestUndo {
            ref_code,
            day,
            fragment,
        } => {
            let change = store.reopen_request(&ref_code)?;
            changed(store, config, change, day, fragment, viewer, now)
        }
        ViewCall::Close { from, to, reason } => {
            let c = NewClosure {
                from,
                to,
                reason,
                by: &viewer.name,
            };
            close(store, config, &c, now)
        }
        ViewCall::Reopen { id, day } => {
            if !store.remove_staff_closure(id, today(), &viewer.name, now.as_second())? {
                return Ok(ViewError::NotFound.reply());
            }
            Ok(back_to(day.unwrap_or_else(today), "schliessungen"))
        }
        ViewCall::Asset(name) => Ok(asset_reply(name)),
    }
}

/// Stores a closure if its days are allowed and there is room; back to its first day.
fn close(
    store: &mut dyn Store,
    config: &PracticeConfig,
    c: &NewClosure<'_>,
    now: Timestamp,
) -> Result<StaffReply, StoreError> {
    let today = crate::practice::calendar::local(config, now).date;
    if let Err(e) = closures::check(c.from, c.to, today) {
        return Ok(page::message(422, e.message()));
    }
    if store
        .add_staff_closure(c, today, now.as_second())?
        .is_none()
    {
        return Ok(page::message(
            409,
            "Es sind schon zu viele Schließungen eingetragen; bitte erst alte entfernen.",
        ));
    }
    Ok(back_to(c.from, "schliessungen"))
}

/// A 303 to a day's page at `anchor` (POST/redirect/GET).
fn back_to(day: Date, anchor: &str) -> StaffReply {
    StaffReply {
        location: Some(format!("/staff?day={day}#{anchor}")),
        ..StaffReply::new(303, "text/plain; charset=utf-8", Vec::new())
    }
}

/// The answer to done/undo: an unknown ref is a 404; otherwise (changed, or someone else was
/// quicker and it is already so) the fresh fragment for `staff.js`, or a 303 back to the day's
/// page for a plain form (POST/redirect/GET, so a reload does not post again).
fn changed(
    store: &mut dyn Store,
    config: &PracticeConfig,
    change: RequestChange,
    day: Option<Date>,
    fragment: bool,
    viewer: &Viewer,
    now: Timestamp,
) -> Result<StaffReply, StoreError> {
    if change == RequestChange::NotFound {
        return Ok(ViewError::NotFound.reply());
    }
    if fragment {
        let today = crate::practice::calendar::local(config, now).date;
        let data = page::DayData::load(store, config, day.unwrap_or(today), now)?;
        return Ok(fragment_reply(page::fragment(config, &data, viewer)));
    }
    let location = match day {
        Some(d) => format!("/staff?day={d}#anliegen"),
        None => "/staff#anliegen".to_owned(),
    };
    Ok(StaffReply {
        location: Some(location),
        ..StaffReply::new(303, "text/plain; charset=utf-8", Vec::new())
    })
}

/// A live fragment with the ETag of its bytes.
fn fragment_reply(body: String) -> StaffReply {
    let etag = etag_of(body.as_bytes());
    StaffReply {
        patient_data: true,
        etag: Some(etag),
        ..StaffReply::new(200, HTML, body.into_bytes())
    }
}

/// A strong ETag (RFC 9110 §8.8.3): the first 16 bytes of the body's SHA-256, quoted. Equal
/// bodies give equal tags, so a poll of an unchanged view is answered 304.
pub fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", crate::secret::hex_lower(&digest[..16]))
}

/// The assets: name, content type, bytes (shipped in the binary; no build step).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "staff.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/staff.css"),
    ),
    (
        "staff.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/staff.js"),
    ),
];

/// A static asset below `/staff/assets/`: content type and bytes (shipped in the binary).
pub fn asset(name: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, ct, bytes)| (*ct, *bytes))
}

/// A shipped asset with its ETag, or 404 (the routing layer serves `/staff/assets/…` with this
/// before any session check).
pub fn asset_reply(name: &str) -> StaffReply {
    match asset(name) {
        Some((content_type, bytes)) => StaffReply {
            etag: Some(etag_of(bytes)),
            ..StaffReply::new(200, content_type, bytes.to_vec())
        },
        None => ViewError::NotFound.reply(),
    }
}

#[cfg(test)]
mod tests;
