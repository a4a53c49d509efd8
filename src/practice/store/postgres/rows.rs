//! Rows to records: the column lists the queries select and their decoders. Every value goes
//! through `try_get` (a type mismatch is an error, never a panic) and the text enums through
//! their `parse` (an unknown spelling is [`StoreError::Corrupt`]).

use tokio_postgres::Row;

use super::super::*;
use crate::practice::calendar::Advice;
use crate::practice::calls::Assurance;

pub(super) const PATIENT_COLS: &str = "id, family, given, family_norm, given_norm, birth_date, gender, phone_e164, card_read_quarter, known";
pub(super) const APPT_COLS: &str = "id, slot_id, patient_id, practitioner_id, start_utc, end_utc, visit_type, reason_short, status";
pub(super) const SLOT_COLS: &str = "id, practitioner_id, start_utc, end_utc, visit_types, status";
pub(super) const CALL_COLS: &str =
    "id, caller_number, started_at, ended_at, outcome, first_audio_ms";
pub(super) const DAY_REQUEST_COLS: &str =
    "r.ref_code, r.category, r.urgency, p.given || ' ' || p.family,
    r.caller_json, r.details_json, r.callback_number, r.callback_window, r.note, r.created_at,
    r.assurance, r.caller_number, p.birth_date, r.done_at, r.done_by";
pub(super) const EMERGENCY_COLS: &str = "e.id, e.severity, e.keywords, p.given || ' ' || p.family,
    e.callback_number, e.advice, e.created_at";

/// Separator of the visit type codes in `slot.visit_types` (as in SQLite).
const LIST_SEPARATOR: char = ',';

pub(super) fn encode_list(items: &[String]) -> String {
    items.join(&LIST_SEPARATOR.to_string())
}

fn decode_list(text: &str) -> Vec<String> {
    text.split(LIST_SEPARATOR)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Column `i` as a text enum.
pub(super) fn text_enum<T>(r: &Row, i: usize, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
    let text: &str = r.try_get(i)?;
    parse(text).ok_or(StoreError::Corrupt("text enum"))
}

/// Column `i` as an optional text enum.
fn opt_enum<T>(r: &Row, i: usize, parse: fn(&str) -> Option<T>) -> StoreResult<Option<T>> {
    let text: Option<&str> = r.try_get(i)?;
    text.map(|t| parse(t).ok_or(StoreError::Corrupt("text enum")))
        .transpose()
}

pub(super) fn staff_closure_row(r: &Row) -> StoreResult<StaffClosure> {
    let day = |i: usize| -> StoreResult<Date> {
        let text: &str = r.try_get(i)?;
        text.parse().map_err(|_| StoreError::Corrupt("closure day"))
    };
    Ok(StaffClosure {
        id: r.try_get(0)?,
        from: day(1)?,
        to: day(2)?,
        reason: text_enum(r, 3, ClosureReason::parse)?,
        created_by: r.try_get(4)?,
        created_at: r.try_get(5)?,
    })
}

pub(super) fn count_u32(n: i64) -> u32 {
    n.clamp(0, u32::MAX as i64) as u32
}

/// A row limit as `LIMIT` takes it.
pub(super) fn sql_limit(limit: usize) -> i64 {
    limit.min(i64::MAX as usize) as i64
}

pub(super) fn patient_row(r: &Row) -> StoreResult<PatientRecord> {
    Ok(PatientRecord {
        id: r.try_get(0)?,
        family: r.try_get(1)?,
        given: r.try_get(2)?,
        family_norm: r.try_get(3)?,
        given_norm: r.try_get(4)?,
        birth_date: r.try_get(5)?,
        gender: text_enum(r, 6, Gender::parse)?,
        phone: r.try_get(7)?,
        card_read_quarter: r.try_get(8)?,
        known: r.try_get(9)?,
    })
}

pub(super) fn appt_row(r: &Row) -> StoreResult<AppointmentRecord> {
    Ok(AppointmentRecord {
        id: r.try_get(0)?,
        slot_id: r.try_get(1)?,
        patient_id: r.try_get(2)?,
        practitioner: r.try_get(3)?,
        start: r.try_get(4)?,
        end: r.try_get(5)?,
        visit_type: r.try_get(6)?,
        reason_short: r.try_get(7)?,
        status: text_enum(r, 8, AppointmentStatus::parse)?,
    })
}

pub(super) fn slot_row(r: &Row) -> StoreResult<SlotRecord> {
    Ok(SlotRecord {
        id: r.try_get(0)?,
        practitioner: r.try_get(1)?,
        start: r.try_get(2)?,
        end: r.try_get(3)?,
        visit_types: decode_list(r.try_get(4)?),
        status: text_enum(r, 5, SlotStatus::parse)?,
    })
}

pub(super) fn staff_call_row(r: &Row) -> StoreResult<StaffCall> {
    Ok(StaffCall {
        id: r.try_get(0)?,
        caller_number: r.try_get(1)?,
        started_at: r.try_get(2)?,
        ended_at: r.try_get(3)?,
        outcome: opt_enum(r, 4, CallOutcome::parse)?,
        first_audio_ms: r.try_get(5)?,
    })
}

/// The first twelve columns of [`DAY_REQUEST_COLS`] (the admin API's open requests select the
/// same ones).
pub(super) fn staff_request_row(r: &Row) -> StoreResult<StaffRequest> {
    let caller: Option<&str> = r.try_get(4)?;
    let details: &str = r.try_get(5)?;
    let assurance: Option<String> = r.try_get(10)?;
    Ok(StaffRequest {
        ref_code: r.try_get(0)?,
        category: text_enum(r, 1, RequestCategory::parse)?,
        urgency: text_enum(r, 2, Urgency::parse)?,
        patient: r.try_get(3)?,
        caller: caller.and_then(|c| serde_json::from_str(c).ok()),
        details: serde_json::from_str(details).unwrap_or(serde_json::Value::Null),
        callback_number: r.try_get(6)?,
        callback_window: r.try_get(7)?,
        note: r.try_get(8)?,
        created_at: r.try_get(9)?,
        verified: assurance.as_deref() == Some(Assurance::NameDobPhone.as_str()),
        assurance,
        caller_number: r.try_get(11)?,
    })
}

pub(super) fn day_request_row(r: &Row) -> StoreResult<StaffDayRequest> {
    Ok(StaffDayRequest {
        row: staff_request_row(r)?,
        birth_date: r.try_get(12)?,
        done_at: r.try_get(13)?,
        done_by: r.try_get(14)?,
    })
}

pub(super) fn staff_emergency_row(r: &Row) -> StoreResult<StaffEmergency> {
    Ok(StaffEmergency {
        event_ref: format!("E-{}", r.try_get::<_, i64>(0)?),
        severity: text_enum(r, 1, Severity::parse)?,
        keywords: r.try_get(2)?,
        patient: r.try_get(3)?,
        callback_number: r.try_get(4)?,
        advice: text_enum(r, 5, Advice::parse)?,
        created_at: r.try_get(6)?,
    })
}

/// Columns 0–8 as the admin API's appointment row.
pub(super) fn staff_appointment_row(r: &Row) -> StoreResult<StaffAppointment> {
    Ok(StaffAppointment {
        id: r.try_get(0)?,
        start: r.try_get(1)?,
        practitioner: r.try_get(2)?,
        details: StaffAppointmentDetails {
            visit_type: r.try_get(3)?,
            reason_short: r.try_get(4)?,
            status: text_enum(r, 5, AppointmentStatus::parse)?,
            patient: r.try_get(6)?,
            birth_date: r.try_get(7)?,
            phone: r.try_get(8)?,
        },
    })
}

/// [`staff_appointment_row`] plus columns 9–14 of the staff page's timeline.
pub(super) fn day_appointment_row(r: &Row) -> StoreResult<StaffDayAppointment> {
    Ok(StaffDayAppointment {
        row: staff_appointment_row(r)?,
        end: r.try_get(9)?,
        call_sid: r.try_get(10)?,
        created_at: r.try_get(11)?,
        cancelled_at: r.try_get(12)?,
        cancel_reason: r.try_get(13)?,
        moved_here: r.try_get(14)?,
    })
}

/// Decodes every row with `f`.
pub(super) fn all<T>(rows: &[Row], f: fn(&Row) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(f).collect()
}
