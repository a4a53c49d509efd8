//! Demo data: the fictional patients of the Demo Praxis and one upcoming appointment, so a fresh
//! `ignis serve` or `ignis demo` can identify, book, reschedule and cancel with no data work.

use jiff::Timestamp;
use serde::Deserialize;

use super::calendar;
use super::config::PracticeConfig;
use super::store::{BookOutcome, Booking, BookingPatient, DemoPatient, Store, StoreError};

/// The shipped demo patients (`practice/demo_patients.toml`).
pub const DEMO_PATIENTS_TOML: &str = include_str!("../../practice/demo_patients.toml");

/// Days ahead of `now` from which the seeded demo appointment is placed.
pub const DEMO_APPOINTMENT_LEAD_DAYS: i64 = 3;

#[derive(Deserialize)]
struct DemoFile {
    patients: Vec<DemoPatient>,
}

/// The demo patients.
pub fn demo_patients() -> Vec<DemoPatient> {
    // Validated by a unit test; an empty list is the harmless fallback.
    toml::from_str::<DemoFile>(DEMO_PATIENTS_TOML)
        .map(|f| f.patients)
        .unwrap_or_default()
}

/// Seeds the demo patients into an empty patient table and books the first one a `kontrolle`
/// a few days ahead. Does nothing when patients exist. Returns how many patients were inserted.
pub fn seed(
    store: &mut dyn Store,
    config: &PracticeConfig,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let n = store.seed_patients(&demo_patients(), now.as_second())?;
    if n == 0 {
        return Ok(0);
    }
    let first = store
        .patients_by_birth_date("1972-08-22")?
        .into_iter()
        .next();
    let from = calendar::add_days(
        calendar::local(config, now).date,
        DEMO_APPOINTMENT_LEAD_DAYS,
    );
    let cands: Vec<_> = calendar::slot_candidates(config, from, calendar::add_days(from, 14))
        .into_iter()
        .filter(|c| c.visit_types.iter().any(|v| v == "kontrolle"))
        .collect();
    if let (Some(p), Some(slot)) = (first, store.free_slots(&cands, 1)?.first()) {
        let outcome = store.book(&Booking {
            slot_id: slot.id,
            patient: BookingPatient::Existing(p.id),
            visit_type: "kontrolle".into(),
            reason_short: "Blutdruckkontrolle".into(),
            replaces: None,
            call_sid: SEED_CALL_SID.into(),
            idempotency_key: "seed-demo-appointment".into(),
            now: now.as_second(),
        })?;
        debug_assert!(matches!(outcome, BookOutcome::Booked { .. }));
    }
    tracing::info!(patients = n, "seeded demo patients");
    Ok(n)
}

/// The `call_sid` of the seeded demo appointment (no call booked it: the staff page does not
/// mark it as booked by the phone agent).
pub const SEED_CALL_SID: &str = "seed";

/// The caller number of the demo call (Maria Weber's number on file).
pub const DEMO_CALLER_NUMBER: &str = "+491701234567";

/// One tool request of the scripted demo call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoStep {
    /// What the step shows.
    pub what: &'static str,
    /// HTTP method.
    pub method: &'static str,
    /// Path under `/api`.
    pub path: &'static str,
    /// Query string.
    pub query: &'static str,
    /// JSON body.
    pub body: &'static str,
}

/// A scripted call from [`DEMO_CALLER_NUMBER`] on a freshly seeded demo database, for the local
/// agent of `ignis demo`: identify, find slots, book, reschedule the seeded appointment, cancel,
/// a prescription request and an urgent emergency. Every step answers `ok: true`.
pub const DEMO_BOOKING_SCRIPT: [DemoStep; 7] = [
    DemoStep {
        what: "identify the caller (phone matches: A1 is read back)",
        method: "POST",
        path: "/api/patients/identify",
        query: "",
        body: r#"{"family_name":"Weber","given_name":"Maria","birth_date":"1972-08-22"}"#,
    },
    DemoStep {
        what: "find three Kontrolle slots",
        method: "GET",
        path: "/api/appointments/slots",
        query: "visit_type=kontrolle",
        body: "",
    },
    DemoStep {
        what: "book S1",
        method: "POST",
        path: "/api/appointments",
        query: "",
        body: r#"{"slot_ref":"S1","patient_ref":"P1","visit_type":"kontrolle","reason_short":"Blutdruckkontrolle"}"#,
    },
    DemoStep {
        what: "move the seeded appointment A1 to S2 (atomic reschedule)",
        method: "POST",
        path: "/api/appointments",
        query: "",
        body: r#"{"slot_ref":"S2","patient_ref":"P1","visit_type":"kontrolle","reason_short":"Kontrolle","replaces_appointment_ref":"A1"}"#,
    },
    DemoStep {
        what: "cancel the appointment booked in step 3",
        method: "POST",
        path: "/api/appointments/A2/cancel",
        query: "",
        body: r#"{"reason":"patient_request"}"#,
    },
    DemoStep {
        what: "order a repeat prescription",
        method: "POST",
        path: "/api/requests",
        query: "",
        body: r#"{"category":"prescription_refill","patient_ref":"P1","details":{"medications":[{"name":"Ramipril","strength":"5 mg","amount":"N3"}]}}"#,
    },
    DemoStep {
        what: "report an urgent (not life-threatening) problem",
        method: "POST",
        path: "/api/emergencies",
        query: "",
        body: r#"{"severity":"urgent","keywords":"hohes Fieber","patient_ref":"P1"}"#,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_patients_parse() {
        let p = demo_patients();
        assert!(p.len() >= 5);
        assert!(p.iter().any(|p| p.family == "Weber"));
    }
}
