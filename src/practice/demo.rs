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
            call_sid: "seed".into(),
            idempotency_key: "seed-demo-appointment".into(),
            now: now.as_second(),
        })?;
        debug_assert!(matches!(outcome, BookOutcome::Booked { .. }));
    }
    tracing::info!(patients = n, "seeded demo patients");
    Ok(n)
}

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
