//! The retention job (docs/practice-tools.md §6.4 defaults, to be confirmed with the practice's DPO):
//! call state 24 h after the call ended, tool audit 90 days, requests 30 days after they were done,
//! appointments 12 months after their date, phone-created patients without any appointment or
//! request after 6 months, emergency events 1 year; past slots without appointments after a day; staff sessions 8 h after
//! their last use, the staff page's audit 1 year (as long as the longest-kept patient data).

use std::time::Duration;

use jiff::Timestamp;

use super::store::{RetentionPolicy, RetentionReport, Store, StoreResult};

/// How often the driver should run [`run_retention`].
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Deletes everything the default policy says is due at `now`.
pub fn run_retention(store: &mut dyn Store, now: Timestamp) -> StoreResult<RetentionReport> {
    run_retention_with(store, &RetentionPolicy::default(), now)
}

/// Deletes everything `policy` says is due at `now`.
pub fn run_retention_with(
    store: &mut dyn Store,
    policy: &RetentionPolicy,
    now: Timestamp,
) -> StoreResult<RetentionReport> {
    let report = store.retention(policy, now.as_second())?;
    tracing::info!(
        calls = report.calls,
        tool_audit = report.tool_audit,
        requests = report.requests,
        appointments = report.appointments,
        patients = report.patients,
        emergency_events = report.emergency_events,
        slots = report.slots,
        staff_sessions = report.staff_sessions,
        staff_audit = report.staff_audit,
        staff_closures = report.staff_closures,
        "retention run"
    );
    Ok(report)
}
