//! The staff page under `/staff` (issue 14): what the AI receptionist took down, for the
//! practice's own staff, in German, served by ignis itself.
//!
//! Two halves with one contract between them:
//! - [`views`]: what staff see and do once logged in: the routes below `/staff` (pages, live
//!   updates, mark done/undo), each a [`views::ViewCall`] run against the store into a
//!   [`StaffReply`], and the static assets.
//! - this module and `auth`: accounts, login, sessions, CSRF, rate limits, the audit of
//!   every [`views::ViewCall::audit`] line, and the security headers on every reply.
//!
//! # Routing (this file)
//! - `GET /staff/login`: the German login form; `POST /staff/login` (`name`, `password`): with a
//!   same-origin `Origin` (or none) and within the rate limit, the password is verified by the
//!   driver on a blocking thread ([`StaffOutcome::Verify`], then [`Practice::finish_login`]);
//!   success opens a session (303 to `/staff` with the cookie), any failure gets one answer.
//! - `GET /staff/assets/{name}`: [`views::asset`], no session needed.
//! - Everything else needs a live session (else 303 to the login for GET/HEAD, 403 otherwise);
//!   a POST also its CSRF token and a same-origin `Origin` (403 otherwise). `POST
//!   /staff/logout` ends the session; the rest goes to [`views::route`] and
//!   [`views::execute`], and every [`views::ViewCall::audit`] line is written with who.
//! - [`finish`] adds the security headers to every reply and answers 304 to a matching
//!   `If-None-Match`.

pub mod auth;
pub mod views;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use super::Practice;
use super::store::{LOGIN_OVERFLOW_KEY, LoginWindow, STAFF_SESSION_IDLE_SECS, Store, StoreResult};
use auth::{LoginLimiter, SESSION_ENTROPY_BYTES, SessionSecrets};

/// The staff page's root.
pub const HOME_PATH: &str = "/staff";
/// The login form and its POST.
pub const LOGIN_PATH: &str = "/staff/login";
/// Logout (POST).
pub const LOGOUT_PATH: &str = "/staff/logout";
/// Static assets below it.
pub const ASSETS_PREFIX: &str = "/staff/assets/";
/// Largest request body below `/staff` (forms are a few fields).
pub const MAX_STAFF_BODY_BYTES: usize = 16 * 1024;

/// `Content-Security-Policy` of every reply (no inline script or style, nothing foreign).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `path` belongs to the staff page.
pub fn is_staff_path(path: &str) -> bool {
    path == HOME_PATH || path.starts_with("/staff/")
}

/// Where the page is served from, from PUBLIC_URL: the origin POSTs must come from and whether
/// cookies get `Secure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// `scheme://host[:port]`.
    pub origin: String,
    /// PUBLIC_URL is https.
    pub secure: bool,
}

impl Site {
    /// The site of `public` (PUBLIC_URL).
    pub fn from_public_url(public: &crate::config::PublicUrl) -> Site {
        let origin = public.origin();
        Site {
            secure: origin.starts_with("https://"),
            origin,
        }
    }
}

/// A request below `/staff`, as the driver read it.
#[derive(Debug, Clone)]
pub struct StaffRequest<'a> {
    /// Method.
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    /// Raw query.
    pub query: &'a str,
    /// Every `Cookie` header value.
    pub cookies: Vec<&'a [u8]>,
    /// `Origin`.
    pub origin: Option<&'a [u8]>,
    /// `X-CSRF-Token`.
    pub csrf_header: Option<&'a [u8]>,
    /// Body.
    pub body: &'a [u8],
    /// The client's address ([`auth::client_address`]), for the login rate limit.
    pub client: IpAddr,
}

/// What the driver does next with a staff request.
#[derive(Debug)]
pub enum StaffOutcome {
    /// Answer with this (through [`finish`]).
    Reply(StaffReply),
    /// Verify the password on a blocking thread ([`PendingLogin::verify`]) with
    /// [`SESSION_ENTROPY_BYTES`] of OS randomness, then call [`Practice::finish_login`].
    Verify(PendingLogin),
}

/// A login attempt waiting for its password check.
pub struct PendingLogin {
    name: String,
    password: String,
    phc: Option<String>,
    client: IpAddr,
    /// The session the browser came with, ended once the new one is stored.
    replaces: Option<[u8; 32]>,
    /// The account's window in the store as this attempt counted it (taken back on success).
    window: LoginWindow,
    /// The start of the address's window the attempt was counted in (taken back on success).
    address_window: i64,
    /// Held until the check is over (dropped with the attempt on any path).
    _slot: LoginSlot,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingLogin(<redacted>)")
    }
}

impl PendingLogin {
    /// Checks the password (argon2id; against the dummy hash for an unknown account). Slow:
    /// call it on a blocking thread.
    pub fn verify(&self) -> bool {
        auth::verify_password(&self.password, self.phc.as_deref())
    }
}

/// Most password checks running at once. Each argon2id check takes ~19 MiB and ~50-100 ms
/// of CPU on a blocking thread; without a cap, parallel attempts would all be checked before
/// any failure counted and could exhaust memory (issue 14 review, point 1). Beyond it a login
/// is answered 503 with `Retry-After` without hashing.
pub const MAX_CONCURRENT_LOGINS: usize = 4;
/// `Retry-After` of a login refused because [`MAX_CONCURRENT_LOGINS`] checks are running.
pub const LOGIN_BUSY_RETRY_SECS: i64 = 1;

/// Most sessions whose audited days are remembered ([`StaffState`]). When full the map is
/// emptied: each session's next poll is then audited once more (more audit, never less).
pub const MAX_AUDITED_DAY_SESSIONS: usize = 1_024;
/// Most days remembered as audited per session; the oldest goes first. Two tabs of one session
/// on different days no longer audit (and fsync) every poll (staff review, point 3).
pub const MAX_AUDITED_DAYS_PER_SESSION: usize = 8;

/// The staff page's in-memory state (the login rate limit, the running password checks, the
/// day last audited per session).
#[derive(Debug, Default)]
pub struct StaffState {
    limiter: Mutex<LoginLimiter>,
    logins: Arc<AtomicUsize>,
    /// Session token hash → the days whose lists were audited for it, oldest first. In
    /// memory: after a restart the first poll of each open page is audited again.
    audited_days: Mutex<HashMap<[u8; 32], Vec<jiff::civil::Date>>>,
}

impl StaffState {
    /// Records that `session` was shown `day`; true when that day was not audited for it yet
    /// (so the view must be audited).
    fn day_needs_audit(&self, session: &[u8; 32], day: jiff::civil::Date) -> bool {
        let Ok(mut sessions) = self.audited_days.lock() else {
            return true;
        };
        if sessions
            .get(session)
            .is_some_and(|days| days.contains(&day))
        {
            return false;
        }
        if sessions.len() >= MAX_AUDITED_DAY_SESSIONS && !sessions.contains_key(session) {
            sessions.clear();
        }
        let days = sessions.entry(*session).or_default();
        if days.len() >= MAX_AUDITED_DAYS_PER_SESSION {
            days.remove(0);
        }
        days.push(day);
        true
    }

    /// Forgets a session's audited day (logout, or an audit row that could not be written).
    fn forget_session(&self, session: &[u8; 32]) {
        if let Ok(mut days) = self.audited_days.lock() {
            days.remove(session);
        }
    }

    /// A slot for one password check, if fewer than [`MAX_CONCURRENT_LOGINS`] are running.
    fn login_slot(&self) -> Option<LoginSlot> {
        self.logins
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CONCURRENT_LOGINS).then_some(n + 1)
            })
            .ok()
            .map(|_| LoginSlot(Arc::clone(&self.logins)))
    }
}

/// One running password check; dropping it frees the slot.
#[derive(Debug)]
struct LoginSlot(Arc<AtomicUsize>);

impl Drop for LoginSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A finished staff response: status, every header, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffResponse {
    /// Status.
    pub status: u16,
    /// Header fields, the security headers included.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// Whether `If-None-Match` matches `etag` (RFC 9110 §13.1.2): `*`, or a comma-separated list
/// of entity tags compared weakly (a `W/` prefix on either side is ignored).
pub fn if_none_match_matches(if_none_match: &[u8], etag: &str) -> bool {
    let opaque = |t: &[u8]| -> Vec<u8> {
        let t = t.trim_ascii();
        t.strip_prefix(b"W/").unwrap_or(t).to_vec()
    };
    let ours = opaque(etag.as_bytes());
    if if_none_match.trim_ascii() == b"*" {
        return true;
    }
    // An entity tag may contain `,` between its quotes (etagc, RFC 9110 §8.8.3): split outside.
    let mut in_quotes = false;
    if_none_match
        .split(|&b| {
            if b == b'"' {
                in_quotes = !in_quotes;
            }
            b == b',' && !in_quotes
        })
        .any(|t| !t.trim_ascii().is_empty() && opaque(t) == ours)
}

/// Adds the security headers (CSP, frame denial, nosniff, no referrer, `Cache-Control`) and
/// answers 304 when `if_none_match` matches the reply's ETag ([`if_none_match_matches`]).
pub fn finish(reply: StaffReply, if_none_match: Option<&[u8]>) -> StaffResponse {
    let not_modified = reply.status == 200
        && reply.etag.as_deref().is_some_and(|tag| {
            if_none_match.is_some_and(|given| if_none_match_matches(given, tag))
        });
    let mut headers = vec![("Content-Type", reply.content_type.to_owned())];
    if let Some(l) = reply.location {
        headers.push(("Location", l));
    }
    if let Some(c) = reply.set_cookie {
        headers.push(("Set-Cookie", c));
    }
    if let Some(secs) = reply.retry_after {
        headers.push(("Retry-After", secs.to_string()));
    }
    if let Some(methods) = reply.allow {
        headers.push(("Allow", methods.to_owned()));
    }
    // Assets (ETag, no patient data) may be kept and revalidated; everything else never.
    let cache = if reply.patient_data || reply.etag.is_none() {
        "no-store"
    } else {
        "no-cache"
    };
    if let Some(e) = reply.etag {
        headers.push(("ETag", e));
    }
    headers.extend([
        ("Cache-Control", cache.to_owned()),
        ("Content-Security-Policy", CSP.to_owned()),
        ("X-Frame-Options", "DENY".to_owned()),
        ("X-Content-Type-Options", "nosniff".to_owned()),
        // Not `no-referrer`: with it a browser sends `Origin: null` on form POSTs (Fetch
        // standard, "append a request `Origin` header"), which the Origin check must refuse,
        // so nobody could log in. `same-origin` sends the real origin to this site and no
        // referrer at all to any other (docs/staff.md, Headers).
        ("Referrer-Policy", "same-origin".to_owned()),
    ]);
    if not_modified {
        headers.retain(|(n, _)| *n != "Content-Type");
        return StaffResponse {
            status: 304,
            headers,
            body: Vec::new(),
        };
    }
    StaffResponse {
        status: reply.status,
        headers,
        body: reply.body,
    }
}

fn text_reply(status: u16, text: &str) -> StaffReply {
    StaffReply::new(
        status,
        "text/plain; charset=utf-8",
        format!("{text}\n").into_bytes(),
    )
}

fn redirect(to: &str, set_cookie: Option<String>) -> StaffReply {
    StaffReply {
        location: Some(to.to_owned()),
        set_cookie,
        ..text_reply(303, "see other")
    }
}

/// The methods a path below `/staff` takes (the `Allow` of a 405).
fn allowed_methods(path: &str) -> &'static str {
    if path == LOGIN_PATH {
        "GET, HEAD, POST"
    } else if path == LOGOUT_PATH || path.starts_with("/staff/requests/") {
        "POST"
    } else {
        "GET, HEAD"
    }
}

/// The reply when the store cannot be reached (queue full or gone).
pub fn unavailable() -> StaffReply {
    text_reply(
        503,
        "Der Dienst ist gerade nicht erreichbar. Bitte gleich erneut versuchen.",
    )
}

/// What a login attempt's answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoginNote {
    None,
    Failed,
    Limited,
    LoggedOut,
}

/// The German login form; `note` says why it is shown again.
fn login_page(status: u16, note: LoginNote) -> StaffReply {
    let note = match note {
        LoginNote::None => "",
        LoginNote::Failed => {
            "<p class=\"note error\" role=\"alert\">Anmeldung fehlgeschlagen: Name oder Passwort \
             ist falsch.</p>"
        }
        LoginNote::Limited => {
            "<p class=\"note error\" role=\"alert\">Zu viele Fehlversuche. Bitte in 15 Minuten \
             erneut versuchen.</p>"
        }
        LoginNote::LoggedOut => "<p class=\"note\">Sie sind abgemeldet.</p>",
    };
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"de\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Anmeldung – Praxis-Übersicht</title>\
         <link rel=\"stylesheet\" href=\"/staff/assets/staff.css\"></head>\
         <body class=\"login\"><main><h1>Anmeldung</h1>{note}\
         <form method=\"post\" action=\"{LOGIN_PATH}\">\
         <label>Benutzername <input name=\"name\" autocomplete=\"username\" required \
         maxlength=\"64\" autofocus></label>\
         <label>Passwort <input type=\"password\" name=\"password\" \
         autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Anmelden</button></form></main></body></html>\n"
    );
    StaffReply::new(status, "text/html; charset=utf-8", body.into_bytes())
}

/// The 429 login page of a rate-limited attempt, `Retry-After` the window's rest.
fn limited_page(retry_after: i64) -> StaffReply {
    StaffReply {
        retry_after: Some(retry_after.max(1)),
        ..login_page(429, LoginNote::Limited)
    }
}

/// Why a request was refused before it reached a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffError {
    /// POST from a foreign `Origin`.
    ForeignOrigin,
    /// POST without a live session.
    NoSession,
    /// POST without the session's CSRF token.
    Csrf,
    /// The body is over [`MAX_STAFF_BODY_BYTES`].
    TooLarge,
    /// The form body does not decode.
    BadForm,
    /// The method is not allowed here.
    Method,
    /// No such page.
    NotFound,
    /// The view refused the request.
    BadRequest,
}

error_text!(StaffError {
    ForeignOrigin => "Anfrage von fremder Herkunft abgelehnt.",
    NoSession => "Nicht angemeldet.",
    Csrf => "Sicherheitstoken fehlt oder ist ungültig. Bitte die Seite neu laden.",
    TooLarge => "Anfrage zu groß.",
    BadForm => "Formular unlesbar.",
    Method => "Methode nicht erlaubt.",
    NotFound => "Seite nicht gefunden.",
    BadRequest => "Ungültige Anfrage.",
});

impl StaffError {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            StaffError::ForeignOrigin | StaffError::NoSession | StaffError::Csrf => 403,
            StaffError::TooLarge => 413,
            StaffError::BadForm | StaffError::BadRequest => 400,
            StaffError::Method => 405,
            StaffError::NotFound => 404,
        }
    }

    /// The reply.
    pub fn reply(self) -> StaffReply {
        text_reply(self.status(), &self.to_string())
    }
}

impl From<views::ViewError> for StaffError {
    fn from(e: views::ViewError) -> StaffError {
        match e {
            views::ViewError::NotFound => StaffError::NotFound,
            views::ViewError::MethodNotAllowed => StaffError::Method,
            views::ViewError::BadRequest => StaffError::BadRequest,
        }
    }
}

fn form_of(req: &StaffRequest<'_>) -> Result<Vec<(String, String)>, StaffError> {
    if req.method != "POST" {
        return Ok(Vec::new());
    }
    if req.body.len() > MAX_STAFF_BODY_BYTES {
        return Err(StaffError::TooLarge);
    }
    crate::http::form::decode(req.body).map_err(|_| StaffError::BadForm)
}

fn field<'f>(form: &'f [(String, String)], name: &str) -> &'f str {
    form.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// The audit's name for an account: the name when it is a valid account name, else `-` (a
/// mistyped password in the name field must not end up in the audit).
fn audit_name(name: &str, known: bool) -> &str {
    if known && auth::validate_name(name).is_ok() {
        name
    } else {
        "-"
    }
}

/// A session request after the store found (or did not find) its session.
struct SessionJob {
    method: String,
    path: String,
    query: String,
    form: Vec<(String, String)>,
    token_hash: [u8; 32],
    csrf_header: Option<Vec<u8>>,
    secure: bool,
    state: Arc<StaffState>,
}

impl SessionJob {
    fn run(
        self,
        store: &mut dyn Store,
        calendar: &super::closures::Calendar,
        now: Timestamp,
    ) -> StaffReply {
        let config = &*calendar.current();
        let at = now.as_second();
        // A poll of the live fragment is not use: an open, unattended page must still expire
        // after 8 h idle (docs/staff.md).
        let routed = views::route(&self.method, &self.path, &self.query, &self.form);
        let found = if matches!(routed, Ok(views::ViewCall::Live { .. })) {
            store.peek_staff_session(&self.token_hash, at)
        } else {
            store.touch_staff_session(&self.token_hash, at)
        };
        let session = match found {
            Ok(Some(s)) => s,
            Ok(None) if self.method == "POST" => return StaffError::NoSession.reply(),
            Ok(None) => return redirect(LOGIN_PATH, Some(auth::clear_cookie(self.secure))),
            Err(e) => {
                tracing::error!(error = %e, "staff session lookup failed");
                return unavailable();
            }
        };
        if self.method == "POST"
            && !auth::csrf_ok(&session.csrf, &self.form, self.csrf_header.as_deref())
        {
            return StaffError::Csrf.reply();
        }
        if self.path == LOGOUT_PATH {
            return self.logout(store, &session.user, at);
        }
        let call = match routed {
            Ok(c) => c.with_day_resolved(super::calendar::local(config, now).date),
            Err(e) => return StaffError::from(e).reply(),
        };
        let line = self.audit_line(&call);
        let viewer = Viewer {
            name: session.user,
            csrf: session.csrf,
        };
        // A change is audited before it is made (`attempt`), so none escapes the audit when
        // the row after it cannot be written; its result is then audited as a view is.
        if call.changes_data()
            && let Some(what) = &line
            && let Err(e) = store.staff_audit(at, &viewer.name, what, "attempt")
        {
            tracing::error!(error = %e, "staff audit write failed; change not made");
            self.state.forget_session(&self.token_hash);
            return unavailable();
        }
        let closures_changed = call.changes_closures();
        let reply = views::execute(store, config, call, &viewer, now);
        // This replica's calls see a closure at once; the others at their next reload.
        if closures_changed
            && reply.status < 400
            && let Err(e) = calendar.reload(store, now)
        {
            tracing::warn!(error = %e, "staff closures not reloaded after a change");
        }
        if let Some(what) = line {
            let outcome = if reply.status < 400 {
                "ok".to_owned()
            } else {
                reply.status.to_string()
            };
            // No audit row, no patient data: the reply is withheld (a change it made stays
            // done; it was only shown its result), and the day is audited again next time.
            if let Err(e) = store.staff_audit(at, &viewer.name, &what, &outcome) {
                tracing::error!(error = %e, "staff audit write failed; reply withheld");
                self.state.forget_session(&self.token_hash);
                return unavailable();
            }
        }
        reply
    }

    /// The call's audit line. A poll of the live fragment shows a day's patient lists too: it
    /// is audited when its day differs from the day last audited for this session (a page
    /// load, or the first poll after midnight or after another tab switched days).
    fn audit_line(&self, call: &views::ViewCall) -> Option<String> {
        let line = call.audit();
        let Some(day) = call.shown_day() else {
            return line;
        };
        let changed = self.state.day_needs_audit(&self.token_hash, day);
        match call {
            views::ViewCall::Live { .. } if changed => Some(format!("staff:live day={day}")),
            _ => line,
        }
    }

    fn logout(&self, store: &mut dyn Store, user: &str, at: i64) -> StaffReply {
        self.state.forget_session(&self.token_hash);
        if let Err(e) = store
            .delete_staff_session(&self.token_hash)
            .and_then(|_| store.staff_audit(at, user, "logout", "ok"))
        {
            tracing::error!(error = %e, "staff logout failed");
            return unavailable();
        }
        tracing::info!("staff logout");
        redirect(
            &format!("{LOGIN_PATH}?abgemeldet"),
            Some(auth::clear_cookie(self.secure)),
        )
    }
}

impl Practice {
    /// Handles a request below `/staff`; `reply` is called exactly once, on this thread when no
    /// store is needed, on the store thread otherwise. A login answers
    /// [`StaffOutcome::Verify`]: the driver checks the password on a blocking thread and calls
    /// [`Practice::finish_login`].
    pub fn handle_staff(
        &self,
        req: &StaffRequest<'_>,
        site: &Site,
        now: Timestamp,
        reply: impl FnOnce(StaffOutcome) + Send + 'static,
    ) {
        // RFC 9110 §15.5.6: a 405 names the methods the resource takes.
        let allow = allowed_methods(req.path);
        let reply = move |o: StaffOutcome| {
            reply(match o {
                StaffOutcome::Reply(r) if r.status == 405 => StaffOutcome::Reply(StaffReply {
                    allow: Some(allow),
                    ..r
                }),
                o => o,
            })
        };
        match self.prepare_staff(req, site, now) {
            Ok(Prepared::Reply(r)) => reply(StaffOutcome::Reply(r)),
            Ok(Prepared::Login(attempt)) => {
                let replaces = auth::session_token(req.cookies.iter().copied(), site.secure)
                    .map(|t| auth::session_hash(&t));
                self.start_login((req.client, replaces, now.as_second()), attempt, reply)
            }
            Ok(Prepared::Limited { name, retry_after }) => {
                let at = now.as_second();
                self.staff_job(
                    move |r| reply(StaffOutcome::Reply(r)),
                    move |store| {
                        audit_limited(store, &name, at);
                        limited_page(retry_after)
                    },
                );
            }
            Ok(Prepared::Session(job)) => {
                let calendar = Arc::clone(&self.calendar);
                self.staff_job(
                    move |r| reply(StaffOutcome::Reply(r)),
                    move |store| job.run(store, &calendar, now),
                );
            }
            Err(e) => reply(StaffOutcome::Reply(e.reply())),
        }
    }

    fn prepare_staff(
        &self,
        req: &StaffRequest<'_>,
        site: &Site,
        now: Timestamp,
    ) -> Result<Prepared, StaffError> {
        let method = match req.method {
            "HEAD" => "GET",
            m => m,
        };
        if method == "POST" && !auth::origin_ok(req.origin, &site.origin) {
            return Err(StaffError::ForeignOrigin);
        }
        if let Some(name) = req.path.strip_prefix(ASSETS_PREFIX) {
            if method != "GET" {
                return Err(StaffError::Method);
            }
            views::asset(name).ok_or(StaffError::NotFound)?;
            return Ok(Prepared::Reply(views::asset_reply(name)));
        }
        let form = form_of(req)?;
        if req.path == LOGIN_PATH {
            return match method {
                "GET" => {
                    let note = if req.query == "abgemeldet" {
                        LoginNote::LoggedOut
                    } else {
                        LoginNote::None
                    };
                    Ok(Prepared::Reply(login_page(200, note)))
                }
                "POST" => self.check_login_limit(&form, req.client, now),
                _ => Err(StaffError::Method),
            };
        }
        if req.path == LOGOUT_PATH && method != "POST" {
            return Err(StaffError::Method);
        }
        let Some(token) = auth::session_token(req.cookies.iter().copied(), site.secure) else {
            return match method {
                "POST" => Err(StaffError::NoSession),
                _ => Ok(Prepared::Reply(redirect(LOGIN_PATH, None))),
            };
        };
        Ok(Prepared::Session(SessionJob {
            method: method.to_owned(),
            path: req.path.to_owned(),
            query: req.query.to_owned(),
            form,
            token_hash: auth::session_hash(&token),
            csrf_header: req.csrf_header.map(<[u8]>::to_vec),
            secure: site.secure,
            state: Arc::clone(&self.staff),
        }))
    }

    /// Under one lock: refuses a login over the rate limit, else takes a check slot and counts
    /// the attempt as a failure now (taken back on success in [`Practice::finish_login`]), so
    /// parallel attempts cannot all pass the limit before the first one fails.
    fn check_login_limit(
        &self,
        form: &[(String, String)],
        client: IpAddr,
        now: Timestamp,
    ) -> Result<Prepared, StaffError> {
        let name = field(form, "name").to_owned();
        let password = field(form, "password").to_owned();
        let at = now.as_second();
        let Ok(mut limiter) = self.staff.limiter.lock() else {
            return Ok(Prepared::Reply(limited_page(auth::LOGIN_WINDOW_SECS)));
        };
        if let Err(l) = limiter.check(&name, client, at) {
            tracing::warn!("staff login refused: rate limit");
            if !l.first {
                // Audited when the limit tripped; each further row would be an fsync on the
                // store's single writer, competing with live calls.
                return Ok(Prepared::Reply(limited_page(l.retry_after)));
            }
            return Ok(Prepared::Limited {
                name,
                retry_after: l.retry_after,
            });
        }
        let Some(slot) = self.staff.login_slot() else {
            tracing::warn!("staff login refused: too many password checks running");
            return Ok(Prepared::Reply(StaffReply {
                retry_after: Some(LOGIN_BUSY_RETRY_SECS),
                ..unavailable()
            }));
        };
        let address_window = limiter.record_failure(client, at);
        Ok(Prepared::Login(LoginAttempt {
            name,
            password,
            slot,
            address_window,
        }))
    }

    fn start_login(
        &self,
        (client, replaces, at): (IpAddr, Option<[u8; 32]>, i64),
        attempt: LoginAttempt,
        reply: impl FnOnce(StaffOutcome) + Send + 'static,
    ) {
        let slot = Arc::new(Mutex::new(Some(reply)));
        let in_job = Arc::clone(&slot);
        let state = Arc::clone(&self.staff);
        let address_window = attempt.address_window;
        // An attempt that does not reach the password check does not count against the
        // address; one the account's window refused is remembered, so the address's next
        // attempts at it are refused before they take a check slot or a store job. A refused
        // name that is no account stays counted: such names are free to vary, so the memo
        // cannot hold them, and the address's own limit must.
        let not_checked = move |refused: Option<(&str, i64)>, keep_counted: bool| {
            if let Ok(mut l) = state.limiter.lock() {
                if !keep_counted {
                    l.take_back(client, address_window);
                }
                if let Some((name, until)) = refused {
                    l.note_refused(name, client, until, at);
                }
            }
        };
        let not_queued = not_checked.clone();
        let queued = self.store.submit(move |store| {
            let outcome = match account_window(store, &attempt, client, at) {
                AccountCheck::Refused {
                    reply,
                    until,
                    keep_counted,
                } => {
                    not_checked(until.map(|u| (attempt.name.as_str(), u)), keep_counted);
                    StaffOutcome::Reply(*reply)
                }
                AccountCheck::Counted(window) => {
                    let LoginAttempt {
                        name,
                        password,
                        slot,
                        address_window,
                    } = attempt;
                    let phc = if auth::validate_name(&name).is_ok() {
                        store.staff_user_hash(&name)
                    } else {
                        Ok(None)
                    };
                    match phc {
                        Ok(phc) => StaffOutcome::Verify(PendingLogin {
                            name,
                            password,
                            phc,
                            client,
                            replaces,
                            window,
                            address_window,
                            _slot: slot,
                        }),
                        Err(e) => {
                            tracing::error!(error = %e, "staff account lookup failed");
                            // Not checked: counted neither for the address nor the account.
                            not_checked(None, false);
                            let _ = store.take_back_login_attempt(&window);
                            StaffOutcome::Reply(unavailable())
                        }
                    }
                }
            };
            if let Some(f) = in_job.lock().ok().and_then(|mut s| s.take()) {
                f(outcome);
            }
        });
        if queued.is_err()
            && let Some(f) = slot.lock().ok().and_then(|mut s| s.take())
        {
            not_queued(None, false);
            f(StaffOutcome::Reply(unavailable()));
        }
    }

    /// Ends a login after [`PendingLogin::verify`]: `verified` is its answer, `entropy`
    /// [`SESSION_ENTROPY_BYTES`] from the OS (None: the source failed, the login fails with 503).
    /// Success opens a session (303 to `/staff` with the cookie) and takes back the failure
    /// counted when the check started; any failure, unknown name or wrong password alike, gets
    /// the same 403 login page (its failure stays counted).
    pub fn finish_login(
        &self,
        pending: PendingLogin,
        verified: bool,
        entropy: Option<[u8; SESSION_ENTROPY_BYTES]>,
        site: &Site,
        now: Timestamp,
        reply: impl FnOnce(StaffReply) + Send + 'static,
    ) {
        let at = now.as_second();
        let known = pending.phc.is_some();
        let secure = site.secure;
        let (client, state) = (pending.client, Arc::clone(&self.staff));
        // Dropping the rest frees the check's slot.
        let (name, replaces, window) = (pending.name, pending.replaces, pending.window);
        let address_window = pending.address_window;
        let job = move |store: &mut dyn Store| -> StaffReply {
            let who = audit_name(&name, known).to_owned();
            let opened = match (verified, entropy) {
                (true, Some(e)) => {
                    let secrets = SessionSecrets::from_entropy(e);
                    match store.create_staff_session(
                        &secrets.token_hash(),
                        &name,
                        &secrets.csrf,
                        at,
                    ) {
                        Ok(true) => Some(secrets),
                        Ok(false) => None,
                        Err(e) => {
                            tracing::error!(error = %e, "staff session not stored");
                            return unavailable();
                        }
                    }
                }
                (true, None) => return unavailable(),
                (false, _) => None,
            };
            let outcome = if opened.is_some() { "ok" } else { "failed" };
            if let Err(e) = store.staff_audit(at, &who, "login", outcome) {
                tracing::error!(error = %e, "staff audit write failed");
                // No login without its audit row: the session just stored is ended again.
                if let Some(s) = &opened {
                    let _ = store.delete_staff_session(&s.token_hash());
                    return unavailable();
                }
            }
            tracing::info!(outcome, "staff login");
            match opened {
                Some(s) => {
                    // A success only once it is stored and audited: then the attempt's
                    // failure is taken back and the address trusted for the account.
                    if let Ok(mut l) = state.limiter.lock() {
                        l.take_back(client, address_window);
                    }
                    if let Err(e) = store.take_back_login_attempt(&window) {
                        tracing::warn!(error = %e, "a successful login stays counted as a failure");
                    }
                    let address = auth::address_unit(client).to_string();
                    if let Err(e) =
                        store.trust_login_address(&name, &address, at, auth::TRUSTED_ADDRESS_SECS)
                    {
                        tracing::warn!(error = %e, "the login's address is not remembered as trusted");
                    }
                    if let Some(old) = replaces
                        && let Err(e) = store.delete_staff_session(&old)
                    {
                        tracing::warn!(error = %e, "the browser's previous staff session stays");
                    }
                    redirect(HOME_PATH, Some(auth::session_cookie(&s.token, secure)))
                }
                None => login_page(403, LoginNote::Failed),
            }
        };
        self.staff_job(reply, job);
    }

    fn staff_job(
        &self,
        reply: impl FnOnce(StaffReply) + Send + 'static,
        job: impl FnOnce(&mut dyn Store) -> StaffReply + Send + 'static,
    ) {
        self.store.submit_with_reply(reply, job, |_| unavailable());
    }
}

/// A login that passed this process's limits, on its way to the store's account window and
/// the password check.
struct LoginAttempt {
    name: String,
    password: String,
    slot: LoginSlot,
    /// The start of the address's window the attempt was counted in.
    address_window: i64,
}

/// Where an attempt stands against its account's window in the store.
enum AccountCheck {
    /// Counted: on to the password check.
    Counted(LoginWindow),
    /// The account is locked out for this address until the window ends (the 429), or the
    /// store failed (`until` None, the 503). Nothing was counted in the store.
    /// `keep_counted`: the name is no account, so the attempt stays counted against the
    /// address.
    Refused {
        reply: Box<StaffReply>,
        until: Option<i64>,
        keep_counted: bool,
    },
}

/// Checks and counts the attempt in the account's window in the store, which every replica
/// shares, as it does the addresses the account logged in from (docs/staff.md "Login rate
/// limit"). A locked account is refused after a read, without a write: refusals cost the
/// store's single writer nothing.
fn account_window(
    store: &mut dyn Store,
    attempt: &LoginAttempt,
    client: IpAddr,
    at: i64,
) -> AccountCheck {
    let key = auth::account_window_key(&attempt.name);
    let window = auth::LOGIN_WINDOW_SECS;
    let checked = (|| -> StoreResult<AccountCheck> {
        let trusted = auth::validate_name(&attempt.name).is_ok()
            && store.login_address_trusted(
                &attempt.name,
                &auth::address_unit(client).to_string(),
                at - auth::TRUSTED_ADDRESS_SECS,
            )?;
        if !trusted {
            // A name without a window of its own counts in the overflow window, or starts
            // from it (`count_login_attempt`): locked there, it is refused without a write too.
            let current = match store.login_window(key, at, window)? {
                Some(w) => Some(w),
                None => store.login_window(LOGIN_OVERFLOW_KEY, at, window)?,
            };
            if let Some(w) = current
                && let Some(retry_after) = auth::account_locked(&w, at, false)
            {
                return refuse(store, &attempt.name, &w, retry_after, at);
            }
        }
        let w = store.count_login_attempt(key, at, window)?;
        match auth::account_locked(&w, at, true).filter(|_| !trusted) {
            // Another attempt got there first (or the name counts in the shared overflow
            // window): this one does not count.
            Some(retry_after) => {
                store.take_back_login_attempt(&w)?;
                refuse(store, &attempt.name, &w, retry_after, at)
            }
            None => Ok(AccountCheck::Counted(w)),
        }
    })();
    checked.unwrap_or_else(|e| {
        tracing::error!(error = %e, "staff login window not checked");
        AccountCheck::Refused {
            reply: Box::new(unavailable()),
            until: None,
            keep_counted: false,
        }
    })
}

/// The 429 for a locked account, audited by the first refusal of its window in the fleet.
fn refuse(
    store: &mut dyn Store,
    name: &str,
    window: &LoginWindow,
    retry_after: i64,
    at: i64,
) -> StoreResult<AccountCheck> {
    tracing::warn!("staff login refused: rate limit (account)");
    let known = is_account(store, name)?;
    if !window.reported && store.report_login_lockout(window)? {
        audit_refusal(store, name, known, at);
    }
    Ok(AccountCheck::Refused {
        reply: Box::new(limited_page(retry_after)),
        until: Some(at + retry_after),
        keep_counted: !known,
    })
}

/// Audits a login refused by the rate limit.
fn audit_limited(store: &mut dyn Store, name: &str, at: i64) {
    let known = is_account(store, name).unwrap_or(false);
    audit_refusal(store, name, known, at);
}

/// Whether `name` is a staff account.
fn is_account(store: &mut dyn Store, name: &str) -> StoreResult<bool> {
    Ok(auth::validate_name(name).is_ok() && store.staff_user_hash(name)?.is_some())
}

/// Audits a login refused by the rate limit, naming the account only if it is one.
fn audit_refusal(store: &mut dyn Store, name: &str, known: bool, at: i64) {
    let who = audit_name(name, known);
    if let Err(e) = store.staff_audit(at, who, "login", "rate_limited") {
        tracing::error!(error = %e, "staff audit write failed");
    }
}

enum Prepared {
    Reply(StaffReply),
    Login(LoginAttempt),
    /// A login refused by the rate limit, the first since the limit tripped (audited, then
    /// the 429 page).
    Limited {
        name: String,
        /// Seconds until the limit's window ends (`Retry-After`).
        retry_after: i64,
    },
    Session(SessionJob),
}

/// How long a session lives without use (re-exported for the docs and tests).
pub const SESSION_IDLE_SECS: i64 = STAFF_SESSION_IDLE_SECS;

/// Who is looking, as the views need it: the logged-in staff member's name, and the CSRF token
/// every state-changing form and request must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The account name (shown on the page, written into "done by").
    pub name: String,
    /// The session's CSRF token (a hidden field in each form; `X-CSRF-Token` for `fetch`).
    pub csrf: String,
}

/// A staff-page answer before the security headers, which the routing layer adds to every
/// reply (CSP, frame denial, `Cache-Control: no-store` when `patient_data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffReply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
    /// `Location` (with a 303 after a form POST).
    pub location: Option<String>,
    /// `Set-Cookie`.
    pub set_cookie: Option<String>,
    /// Whether the body shows patient data (then never cached).
    pub patient_data: bool,
    /// `ETag` of the body, for polling with `If-None-Match`.
    pub etag: Option<String>,
    /// `Retry-After` in seconds (a 429 from the login rate limit, a 503 when too many
    /// password checks run).
    pub retry_after: Option<i64>,
    /// `Allow` (a 405: the methods the path takes; set by the routing layer).
    pub allow: Option<&'static str>,
}

impl StaffReply {
    /// A reply with nothing else set: no `Location` or cookie, no ETag, not patient data.
    pub fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> StaffReply {
        StaffReply {
            status,
            content_type,
            body,
            location: None,
            set_cookie: None,
            patient_data: false,
            etag: None,
            retry_after: None,
            allow: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment() -> StaffReply {
        StaffReply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: b"<ul></ul>".to_vec(),
            location: None,
            set_cookie: None,
            patient_data: true,
            etag: Some("\"abc\"".into()),
            retry_after: None,
            allow: None,
        }
    }

    fn header<'r>(r: &'r StaffResponse, name: &str) -> Option<&'r str> {
        r.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn finish_adds_the_security_headers_and_answers_304() {
        let full = finish(fragment(), Some(b"\"old\""));
        assert_eq!(full.status, 200);
        assert_eq!(header(&full, "ETag"), Some("\"abc\""));
        assert_eq!(header(&full, "Cache-Control"), Some("no-store"));
        assert_eq!(header(&full, "Content-Security-Policy"), Some(CSP));
        assert_eq!(header(&full, "X-Frame-Options"), Some("DENY"));
        assert_eq!(header(&full, "X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(header(&full, "Referrer-Policy"), Some("same-origin"));
        let same = finish(fragment(), Some(b"\"old\", \"abc\""));
        assert_eq!(same.status, 304);
        assert!(same.body.is_empty());
        assert_eq!(header(&same, "ETag"), Some("\"abc\""));
        assert_eq!(header(&same, "X-Frame-Options"), Some("DENY"));
        assert_eq!(header(&same, "Content-Type"), None);
        // Only a 200 becomes a 304.
        let refused = StaffReply {
            status: 403,
            ..fragment()
        };
        assert_eq!(finish(refused, Some(b"\"abc\"")).status, 403);
    }

    /// Review point 8: RFC 9110 §13.1.2 weak comparison, lists and `*`.
    #[test]
    fn if_none_match_compares_weakly_and_reads_lists() {
        assert!(if_none_match_matches(b"\"abc\"", "\"abc\""));
        assert!(if_none_match_matches(b"W/\"abc\"", "\"abc\""));
        assert!(if_none_match_matches(b"\"abc\"", "W/\"abc\""));
        assert!(if_none_match_matches(b"\"x\", W/\"abc\" ,\"y\"", "\"abc\""));
        assert!(if_none_match_matches(b"\"a,b\", \"abc\"", "\"abc\""));
        assert!(if_none_match_matches(b" * ", "\"abc\""));
        assert!(!if_none_match_matches(b"\"abd\"", "\"abc\""));
        assert!(!if_none_match_matches(b"abc", "\"abc\""));
        assert!(!if_none_match_matches(b"", "\"abc\""));
        assert_eq!(finish(fragment(), Some(b"W/\"abc\"")).status, 304);
    }

    #[test]
    fn view_errors_keep_their_status() {
        for e in [
            views::ViewError::NotFound,
            views::ViewError::MethodNotAllowed,
            views::ViewError::BadRequest,
        ] {
            assert_eq!(StaffError::from(e).status(), e.status());
        }
        assert_eq!(
            StaffError::from(views::ViewError::MethodNotAllowed).status(),
            405
        );
    }

    #[test]
    fn redirects_and_cookies_pass_through() {
        let r = finish(redirect(HOME_PATH, Some("ignis_staff=x".into())), None);
        assert_eq!(r.status, 303);
        assert_eq!(header(&r, "Location"), Some(HOME_PATH));
        assert_eq!(header(&r, "Set-Cookie"), Some("ignis_staff=x"));
        assert!(is_staff_path("/staff") && is_staff_path("/staff/login"));
        assert!(!is_staff_path("/staffing") && !is_staff_path("/api/staff"));
    }
}
