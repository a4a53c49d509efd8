//! The multi-statement operations of [`super::PgStore`]: slots, booking, cancelling, requests,
//! retention and the seed, each one transaction (READ COMMITTED; see the module docs of
//! [`super`] for how each keeps its guarantee across replicas).

use deadpool_postgres::{Client, GenericClient, Transaction};

use super::super::names::normalize_name;
use super::super::*;
use super::rows::*;
use super::{
    Params, RETENTION_LOCK_KEY, URGENT_QUEUE_LOCK_KEY, execute, is_unique_violation, query,
    query_one, query_opt, scalar,
};
use crate::practice::calendar::SlotCandidate;
use crate::practice::calls::{Assurance, MAX_CALL_SECS};

/// The stored cancel reason of an appointment a reschedule replaced (as in SQLite).
const RESCHEDULED: &str = "rescheduled";

/// An appointment by id; `for_update` row-locks it until the transaction ends.
pub(super) async fn get_appt(
    c: &impl GenericClient,
    id: i64,
    for_update: bool,
) -> StoreResult<Option<AppointmentRecord>> {
    let sql = if for_update {
        format!("SELECT {APPT_COLS} FROM appointment WHERE id = $1 FOR UPDATE")
    } else {
        format!("SELECT {APPT_COLS} FROM appointment WHERE id = $1")
    };
    query_opt(c, &sql, &[&id])
        .await?
        .as_ref()
        .map(appt_row)
        .transpose()
}

pub(super) async fn get_slot(c: &impl GenericClient, id: i64) -> StoreResult<Option<SlotRecord>> {
    let sql = format!("SELECT {SLOT_COLS} FROM slot WHERE id = $1");
    query_opt(c, &sql, &[&id])
        .await?
        .as_ref()
        .map(slot_row)
        .transpose()
}

/// Makes sure the candidates exist as slots and returns up to `limit` free ones in order. The
/// candidates are written in batches of as many as are still missing, which creates exactly
/// the rows SQLite's one-by-one loop creates, in a round trip or two.
pub(super) async fn free_slots(
    c: &mut Client,
    candidates: &[SlotCandidate],
    limit: usize,
) -> StoreResult<Vec<SlotRecord>> {
    let tx = c.transaction().await?;
    let mut out = Vec::new();
    let mut rest = candidates;
    while out.len() < limit && !rest.is_empty() {
        let (batch, tail) = rest.split_at((limit - out.len()).min(rest.len()));
        rest = tail;
        let practitioners: Vec<&str> = batch.iter().map(|c| c.practitioner.as_str()).collect();
        let starts: Vec<i64> = batch.iter().map(|c| c.start).collect();
        let ends: Vec<i64> = batch.iter().map(|c| c.end).collect();
        let types: Vec<String> = batch.iter().map(|c| encode_list(&c.visit_types)).collect();
        execute(
            &tx,
            "INSERT INTO slot (practitioner_id, start_utc, end_utc, visit_types)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[])
             ON CONFLICT (practitioner_id, start_utc) DO NOTHING",
            &[&practitioners, &starts, &ends, &types],
        )
        .await?;
        let rows = query(
            &tx,
            "SELECT s.id, s.practitioner_id, s.start_utc, s.end_utc, s.visit_types, s.status
             FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS c (p, st, n)
             JOIN slot s ON s.practitioner_id = c.p AND s.start_utc = c.st
             ORDER BY c.n",
            &[&practitioners, &starts],
        )
        .await?;
        for r in &rows {
            let s = slot_row(r)?;
            if s.status == SlotStatus::Free {
                out.push(s);
            }
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// A retry of an identical booking (same idempotency key) answers the first result. When that
/// booking was cancelled since, `release` frees the key (in the caller's transaction) and
/// `None` lets a new booking proceed.
pub(super) async fn earlier_booking(
    tx: &impl GenericClient,
    key: &str,
    release: bool,
) -> StoreResult<Option<BookOutcome>> {
    let row = query_opt(
        tx,
        "SELECT id FROM appointment WHERE idempotency_key = $1",
        &[&key],
    )
    .await?;
    let Some(id) = row.map(|r| r.try_get::<_, i64>(0)).transpose()? else {
        return Ok(None);
    };
    let appointment = get_appt(tx, id, false)
        .await?
        .ok_or(StoreError::Corrupt("appointment"))?;
    if appointment.status == AppointmentStatus::Booked {
        let sql = format!("SELECT {APPT_COLS} FROM appointment WHERE replaced_by = $1");
        let replaced = query_opt(tx, &sql, &[&id]).await?;
        return Ok(Some(BookOutcome::Booked {
            appointment: Box::new(appointment),
            replaced: replaced.as_ref().map(appt_row).transpose()?.map(Box::new),
            repeated: true,
        }));
    }
    if release {
        execute(
            tx,
            "UPDATE appointment SET idempotency_key = NULL WHERE id = $1",
            &[&id],
        )
        .await?;
    }
    Ok(None)
}

/// Inserts a patient (names normalised for the lookup) and returns its id; `seeded` ones are
/// known to the practice, ones created by phone are not.
async fn insert_patient(
    tx: &impl GenericClient,
    p: &DemoPatient,
    seeded: bool,
    now: i64,
) -> StoreResult<i64> {
    let via = if seeded { "seed" } else { "phone" };
    let params: Params<'_> = &[
        &p.family,
        &p.given,
        &normalize_name(&p.family),
        &normalize_name(&p.given),
        &p.birth_date,
        &p.gender.as_str(),
        &p.phone,
        &p.insurance.as_str(),
        &p.card_read_quarter,
        &seeded,
        &via,
        &now,
    ];
    scalar(
        tx,
        "INSERT INTO patient (family, given, family_norm, given_norm, birth_date, gender,
             phone_e164, insurance, card_read_quarter, known, created_via, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
        params,
    )
    .await
}

/// The booking's patient id, inserting a patient created by phone (inside the booking's
/// transaction, so a failed booking leaves no orphan).
async fn booking_patient_id(tx: &Transaction<'_>, b: &Booking) -> StoreResult<i64> {
    let p = match &b.patient {
        BookingPatient::Existing(id) => return Ok(*id),
        BookingPatient::New(p) => p,
    };
    let row = DemoPatient {
        family: p.family.clone(),
        given: p.given.clone(),
        birth_date: p.birth_date.clone(),
        gender: Gender::Unknown,
        phone: p.phone.clone(),
        insurance: p.insurance,
        card_read_quarter: None,
    };
    insert_patient(tx, &row, false, b.now).await
}

/// Cancels a booked appointment and frees its slot.
async fn cancel_booked(
    tx: &Transaction<'_>,
    a: &AppointmentRecord,
    reason: &str,
    note: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    execute(
        tx,
        "UPDATE appointment SET status = 'cancelled', cancelled_at = $2, cancel_reason = $3,
             cancel_note = $4 WHERE id = $1 AND status = 'booked'",
        &[&a.id, &now, &reason, &note],
    )
    .await?;
    execute(
        tx,
        "UPDATE slot SET status = 'free', version = version + 1 WHERE id = $1",
        &[&a.slot_id],
    )
    .await?;
    Ok(())
}

/// Books a slot: the conditional claim, then the appointment; a lost race (no row claimed, or
/// the unique index) is answered with the winner's booking when it was an identical retry,
/// and with `SlotTaken` otherwise.
pub(super) async fn book(c: &mut Client, b: &Booking) -> StoreResult<BookOutcome> {
    match book_once(c, b).await {
        Ok(BookOutcome::SlotTaken) => {}
        Err(e) if is_unique_violation(&e) => {}
        other => return other,
    }
    // The transaction is over (rolled back), so this reads what the winner committed.
    Ok(earlier_booking(&*c, &b.idempotency_key, false)
        .await?
        .unwrap_or(BookOutcome::SlotTaken))
}

/// The appointment a reschedule replaces, locked: it must be a booked appointment of the
/// booking's patient.
async fn replaced_appointment(
    tx: &Transaction<'_>,
    b: &Booking,
    old: i64,
) -> StoreResult<Option<AppointmentRecord>> {
    let a = get_appt(tx, old, true).await?;
    Ok(match (a, &b.patient) {
        (Some(a), BookingPatient::Existing(p))
            if a.patient_id == *p && a.status == AppointmentStatus::Booked =>
        {
            Some(a)
        }
        _ => None,
    })
}

async fn book_once(c: &mut Client, b: &Booking) -> StoreResult<BookOutcome> {
    let tx = c.transaction().await?;
    if let Some(first) = earlier_booking(&tx, &b.idempotency_key, true).await? {
        return Ok(first); // dropping `tx` rolls back
    }
    let Some(slot) = get_slot(&tx, b.slot_id).await?.filter(|s| s.start > b.now) else {
        return Ok(BookOutcome::SlotGone);
    };
    if !slot.visit_types.contains(&b.visit_type) {
        return Ok(BookOutcome::WrongVisitType);
    }
    let replaced_before = match b.replaces {
        Some(old) => match replaced_appointment(&tx, b, old).await? {
            Some(a) => Some(a),
            None => return Ok(BookOutcome::ReplacedNotBookable),
        },
        None => None,
    };
    // The conditional claim: exactly one transaction moves the slot from free to busy.
    let claimed = execute(
        &tx,
        "UPDATE slot SET status = 'busy', version = version + 1 WHERE id = $1 AND status = 'free'",
        &[&b.slot_id],
    )
    .await?;
    if claimed == 0 {
        return Ok(BookOutcome::SlotTaken);
    }
    let patient_id = booking_patient_id(&tx, b).await?;
    if let Some(old) = &replaced_before {
        cancel_booked(&tx, old, RESCHEDULED, None, b.now).await?;
    }
    let params: Params<'_> = &[
        &slot.id,
        &patient_id,
        &slot.practitioner,
        &slot.start,
        &slot.end,
        &b.visit_type,
        &b.reason_short,
        &b.now,
        &b.call_sid,
        &b.idempotency_key,
    ];
    let new_id = scalar(
        &tx,
        "INSERT INTO appointment (slot_id, patient_id, practitioner_id, start_utc, end_utc,
             visit_type, reason_short, status, created_at, call_sid, idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'booked', $8, $9, $10) RETURNING id",
        params,
    )
    .await?;
    if let Some(old) = &replaced_before {
        execute(
            &tx,
            "UPDATE appointment SET replaced_by = $2 WHERE id = $1",
            &[&old.id, &new_id],
        )
        .await?;
    }
    let appointment = get_appt(&tx, new_id, false)
        .await?
        .ok_or(StoreError::Corrupt("appointment"))?;
    let replaced = match &replaced_before {
        Some(old) => get_appt(&tx, old.id, false).await?,
        None => None,
    };
    tx.commit().await?;
    Ok(BookOutcome::Booked {
        appointment: Box::new(appointment),
        replaced: replaced.map(Box::new),
        repeated: false,
    })
}

pub(super) async fn cancel(
    c: &mut Client,
    appointment_id: i64,
    reason: CancelReason,
    note: Option<&str>,
    now: i64,
) -> StoreResult<CancelOutcome> {
    let tx = c.transaction().await?;
    let Some(a) = get_appt(&tx, appointment_id, true).await? else {
        return Ok(CancelOutcome::NotFound);
    };
    if a.status != AppointmentStatus::Booked {
        return Ok(CancelOutcome::AlreadyCancelled);
    }
    if a.start <= now {
        return Ok(CancelOutcome::InPast);
    }
    cancel_booked(&tx, &a, reason.as_str(), note, now).await?;
    let after = get_appt(&tx, a.id, false)
        .await?
        .ok_or(StoreError::Corrupt("appointment"))?;
    tx.commit().await?;
    Ok(CancelOutcome::Cancelled(after))
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|_| StoreError::Corrupt("request JSON"))
}

/// Creates a request; its ref (`R-<1000 + id>`) comes from the identity sequence, so replicas
/// never mint the same one.
pub(super) async fn create_request(c: &mut Client, r: &NewRequest) -> StoreResult<CreatedRequest> {
    let tx = c.transaction().await?;
    if r.urgency == Urgency::Urgent {
        // Urgent requests queue one at a time to the commit: each counts the ones before it
        // (two at once would both see the same count and be told the same position).
        execute(
            &tx,
            "SELECT pg_advisory_xact_lock($1)",
            &[&URGENT_QUEUE_LOCK_KEY],
        )
        .await?;
    }
    let caller_json = r.caller.as_ref().map(to_json).transpose()?;
    // No details are stored as an empty object, as the staff view has always shown them.
    let details_json = match &r.details {
        Some(d) => to_json(d)?,
        None => "{}".to_string(),
    };
    let params: Params<'_> = &[
        &r.category.as_str(),
        &r.patient_id,
        &caller_json,
        &details_json,
        &r.urgency.as_str(),
        &r.callback_number,
        &r.callback_window,
        &r.note,
        &r.now,
        &r.call_sid,
        &r.assurance.map_or("none", Assurance::as_str),
        &r.caller_number,
        &r.fingerprint,
    ];
    let row = query_one(
        &tx,
        "INSERT INTO request (id, ref_code, category, patient_id, caller_json, details_json,
             urgency, callback_number, callback_window, note, created_at, call_sid, assurance,
             caller_number, fingerprint)
         OVERRIDING SYSTEM VALUE
         SELECT n.id, 'R-' || (1000 + n.id), $1::text, $2::bigint, $3::text, $4::text, $5::text,
                $6::text, $7::text, $8::text, $9::bigint, $10::text, $11::text, $12::text,
                $13::text
         FROM (SELECT nextval(pg_get_serial_sequence('request', 'id')) AS id) n
         RETURNING ref_code",
        params,
    )
    .await?;
    let ref_code: String = row.try_get(0)?;
    let queue_position = if r.urgency == Urgency::Urgent {
        let n = scalar(
            &tx,
            "SELECT COUNT(*) FROM request WHERE status = 'open' AND urgency = 'urgent'",
            &[],
        )
        .await?;
        Some(count_u32(n))
    } else {
        None
    };
    tx.commit().await?;
    Ok(CreatedRequest {
        ref_code,
        queue_position,
    })
}

/// Deletes what `p` says is due, unless another replica is running retention right now
/// (then nothing is done and the report is empty; docs/replicas.md §3).
pub(super) async fn retention(
    c: &mut Client,
    p: &RetentionPolicy,
    now: i64,
) -> StoreResult<RetentionReport> {
    // READ COMMITTED whatever the server's default: the orphan-patient delete relies on each
    // statement taking a fresh snapshot (see `retention_rest`).
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
        .start()
        .await?;
    let got: bool = query_one(
        &tx,
        "SELECT pg_try_advisory_xact_lock($1)",
        &[&RETENTION_LOCK_KEY],
    )
    .await?
    .try_get(0)?;
    if !got {
        return Ok(RetentionReport::default());
    }
    let n = |x: u64| usize::try_from(x).unwrap_or(usize::MAX);
    let call_cutoff = now - p.call_after_end;
    let mut rep = RetentionReport {
        calls: n(execute(
            &tx,
            "DELETE FROM call WHERE (ended_at IS NOT NULL AND ended_at < $1) OR started_at < $2",
            &[&call_cutoff, &(call_cutoff - MAX_CALL_SECS)],
        )
        .await?),
        tool_audit: n(execute(
            &tx,
            "DELETE FROM tool_audit WHERE at < $1",
            &[&(now - p.tool_audit)],
        )
        .await?),
        requests: n(execute(
            &tx,
            "DELETE FROM request WHERE status = 'done' AND done_at < $1",
            &[&(now - p.request_after_done)],
        )
        .await?),
        ..RetentionReport::default()
    };
    // Unlink replaced_by pointers into appointments about to go, then delete them.
    let cutoff = now - p.appointment_after_start;
    execute(
        &tx,
        "UPDATE appointment SET replaced_by = NULL WHERE replaced_by IN
             (SELECT id FROM appointment WHERE start_utc < $1)",
        &[&cutoff],
    )
    .await?;
    rep.appointments = n(execute(
        &tx,
        "DELETE FROM appointment WHERE start_utc < $1",
        &[&cutoff],
    )
    .await?);
    retention_rest(&tx, p, now, &mut rep).await?;
    tx.commit().await?;
    Ok(rep)
}

/// The rest of a retention run: events, orphans, past slots, staff sessions and audit.
async fn retention_rest(
    tx: &Transaction<'_>,
    p: &RetentionPolicy,
    now: i64,
    rep: &mut RetentionReport,
) -> StoreResult<()> {
    let n = |x: u64| usize::try_from(x).unwrap_or(usize::MAX);
    rep.emergency_events = n(execute(
        tx,
        "DELETE FROM emergency_event WHERE created_at < $1",
        &[&(now - p.emergency_event)],
    )
    .await?);
    // Two statements: the first locks the orphans, waiting for any request or booking another
    // replica is inserting for one of them (the foreign key's share lock); the second, with a
    // fresh snapshot (READ COMMITTED), sees what those committed. One DELETE would re-check
    // only the patient's row after the wait, not its subqueries, and delete a patient just
    // named (the request's `patient_id` then set NULL: a request naming nobody).
    let orphans: Vec<i64> = query(
        tx,
        "SELECT id FROM patient WHERE created_via = 'phone' AND created_at < $1
           AND NOT EXISTS (SELECT 1 FROM appointment a WHERE a.patient_id = patient.id)
           AND NOT EXISTS (SELECT 1 FROM request r WHERE r.patient_id = patient.id)
         FOR UPDATE",
        &[&(now - p.orphan_patient)],
    )
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    rep.patients = n(execute(
        tx,
        "DELETE FROM patient WHERE id = ANY($1)
           AND NOT EXISTS (SELECT 1 FROM appointment a WHERE a.patient_id = patient.id)
           AND NOT EXISTS (SELECT 1 FROM request r WHERE r.patient_id = patient.id)",
        &[&orphans],
    )
    .await?);
    rep.slots = n(execute(
        tx,
        "DELETE FROM slot WHERE end_utc < $1
           AND NOT EXISTS (SELECT 1 FROM appointment a WHERE a.slot_id = slot.id)",
        &[&(now - records::DAY)],
    )
    .await?);
    // Fingerprints go after a day (SQLite's retention says why).
    for sql in [
        "UPDATE request SET fingerprint = NULL WHERE fingerprint IS NOT NULL AND created_at < $1",
        "UPDATE emergency_event SET fingerprint = NULL
         WHERE fingerprint IS NOT NULL AND created_at < $1",
    ] {
        execute(tx, sql, &[&(now - FINGERPRINT_KEPT_SECS)]).await?;
    }
    rep.staff_sessions = n(execute(
        tx,
        "DELETE FROM staff_session WHERE last_seen_at < $1 OR created_at <= $2",
        &[
            &(now - STAFF_SESSION_IDLE_SECS),
            &(now - STAFF_SESSION_MAX_SECS),
        ],
    )
    .await?);
    rep.staff_audit = n(execute(
        tx,
        "DELETE FROM staff_audit WHERE at < $1",
        &[&(now - p.staff_audit)],
    )
    .await?);
    let (cutoff, cutoff_day) = closure_cutoff(p, now)?;
    rep.staff_closures = n(execute(
        tx,
        "DELETE FROM staff_closure
         WHERE (removed_at IS NOT NULL AND removed_at < $1)
            OR (removed_at IS NULL AND last_day < $2)",
        &[&cutoff, &cutoff_day],
    )
    .await?);
    Ok(())
}

/// Inserts the demo patients into an empty patient table. The table lock makes replicas that
/// start together seed once: the second waits, then counts the first one's rows.
pub(super) async fn seed_patients(
    c: &mut Client,
    patients: &[DemoPatient],
    now: i64,
) -> StoreResult<usize> {
    let tx = c.transaction().await?;
    execute(&tx, "LOCK TABLE patient IN SHARE ROW EXCLUSIVE MODE", &[]).await?;
    if scalar(&tx, "SELECT COUNT(*) FROM patient", &[]).await? > 0 {
        return Ok(0);
    }
    for p in patients {
        insert_patient(&tx, p, true, now).await?;
    }
    tx.commit().await?;
    Ok(patients.len())
}
