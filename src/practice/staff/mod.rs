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
//! (This file is the skeleton both halves build on; each fills in its own part.)

pub mod views;

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
}
