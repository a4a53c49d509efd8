//! What staff see and do (skeleton: the views' own change fills this in).

use jiff::Timestamp;

use super::{StaffReply, Viewer};
use crate::practice::config::PracticeConfig;
use crate::practice::store::Store;

/// A validated request below `/staff` (after login).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewCall {
    /// The main page.
    Page,
}

impl ViewCall {
    /// The audit line for this call (what was viewed or changed; refs and dates, never
    /// personal data), or None when it is not audited (polls, assets).
    pub fn audit(&self) -> Option<String> {
        None
    }
}

/// Why a request below `/staff` was refused before it reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewError {
    /// No such page.
    NotFound,
}

/// Routes a request below `/staff` (`path` includes `/staff`).
pub fn route(
    _method: &str,
    _path: &str,
    _query: &str,
    _form: &[(String, String)],
) -> Result<ViewCall, ViewError> {
    Err(ViewError::NotFound)
}

/// Runs a call against the store.
pub fn execute(
    _store: &mut dyn Store,
    _config: &PracticeConfig,
    _call: ViewCall,
    _viewer: &Viewer,
    _now: Timestamp,
) -> StaffReply {
    StaffReply {
        status: 404,
        content_type: "text/plain; charset=utf-8",
        body: b"not found".to_vec(),
        location: None,
        set_cookie: None,
        patient_data: false,
        etag: None,
    }
}

/// A static asset below `/staff/assets/`: content type and bytes (shipped in the binary).
pub fn asset(_name: &str) -> Option<(&'static str, &'static [u8])> {
    None
}
