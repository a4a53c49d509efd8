//! The store: no double booking under concurrency, idempotent retries, atomic reschedule,
//! cancellation, retention and migrations — the same tests against a real SQLite file
//! (`sqlite::…`) and a real PostgreSQL (`postgres::…`; docs/replicas.md §3). The tests that
//! only one backend has are at the end of each section.

#[path = "practice_support/backend.rs"]
mod backend;
mod common;
mod practice_support;

use std::sync::{Arc, Barrier};

use backend::{Kind, TestDb};
use ignis::practice::calendar;
use ignis::practice::calendar::Advice;
use ignis::practice::config::PracticeConfig;
use ignis::practice::retention;
use ignis::practice::store::PG_STORE_WORKERS;
use ignis::practice::store::StoreHandle;
use ignis::practice::store::{
    AppointmentStatus, BookOutcome, Booking, BookingPatient, CallEnd, CallOutcome, CancelOutcome,
    CancelReason, ClosureReason, DemoPatient, FINGERPRINT_KEPT_SECS, Gender, Insurance,
    LOGIN_OVERFLOW_KEY, MAX_LOGIN_WINDOWS, MAX_OPEN_CLOSURES, NewClosure, NewEmergency, NewPatient,
    NewRequest, RequestCategory, RequestChange, RetentionPolicy, STAFF_SESSION_IDLE_SECS,
    STAFF_SESSION_MAX_SECS, STAFF_SESSION_TOUCH_SECS, Severity, SlotStatus, SqliteStore, Store,
    StoreError, Urgency,
};
use jiff::civil::Date;
use practice_support::{temp_dir, wed_morning};

const DAY: i64 = 86_400;

fn patients(n: usize) -> Vec<DemoPatient> {
    (0..n)
        .map(|i| DemoPatient {
            family: format!("Test{i}"),
            given: "Eva".into(),
            birth_date: "1980-01-01".into(),
            gender: Gender::Female,
            phone: Some(format!("+4917000000{i:02}")),
            insurance: Insurance::Gkv,
            card_read_quarter: None,
        })
        .collect()
}

/// A store with `n` patients (ids 1..=n) and the slots of Thursday 26 November 2026.
fn setup(db: &TestDb, n: usize) -> (Box<dyn Store>, Vec<i64>) {
    let config = PracticeConfig::demo();
    let mut s = db.store();
    s.seed_patients(&patients(n), 0).unwrap();
    let d = "2026-11-26".parse().unwrap();
    let cands = calendar::slot_candidates(&config, d, d);
    let slots = s.free_slots(&cands, 100).unwrap();
    (s, slots.iter().map(|s| s.id).collect())
}

fn booking(slot: i64, patient: i64, key: &str) -> Booking {
    Booking {
        slot_id: slot,
        patient: BookingPatient::Existing(patient),
        visit_type: "kontrolle".into(),
        reason_short: "Kontrolle".into(),
        replaces: None,
        call_sid: format!("CA{key}"),
        idempotency_key: key.into(),
        now: wed_morning().as_second(),
    }
}

fn booked_on_slot(db: &TestDb, slot: i64) -> i64 {
    db.value(
        "SELECT COUNT(*) FROM appointment WHERE slot_id = $1 AND status = 'booked'",
        &[slot],
    )
}

/// The stores of a practice on `db`: SQLite's single writer, or PostgreSQL's workers.
fn workers(db: &TestDb) -> Vec<Box<dyn Store>> {
    match db.kind {
        Kind::Sqlite => vec![db.store()],
        Kind::Postgres => (0..PG_STORE_WORKERS).map(|_| db.store()).collect(),
    }
}

fn racing_connections_book_one_slot_exactly_once(db: &TestDb) {
    const N: usize = 12;
    let (_s, slots) = setup(db, N);
    let slot = slots[0];
    let barrier = Barrier::new(N);
    let outcomes: Vec<BookOutcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let barrier = &barrier;
                // Each contender has its own connection, as separate processes would.
                let mut own = db.store();
                scope.spawn(move || {
                    barrier.wait();
                    own.book(&booking(slot, i as i64 + 1, &format!("race-{i}")))
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wins = outcomes
        .iter()
        .filter(|o| matches!(o, BookOutcome::Booked { .. }))
        .count();
    let taken = outcomes
        .iter()
        .filter(|o| matches!(o, BookOutcome::SlotTaken))
        .count();
    assert_eq!((wins, taken), (1, N - 1), "{outcomes:?}");
    assert_eq!(booked_on_slot(db, slot), 1);
}

fn racing_submissions_through_the_writer_thread_book_once(db: &TestDb) {
    let (s, slots) = setup(db, 40);
    drop(s);
    let slot = slots[1];
    let (handle, thread) = StoreHandle::spawn_workers(workers(db)).unwrap();
    let barrier = Arc::new(Barrier::new(40));
    let joins: Vec<_> = (0..40)
        .map(|i| {
            let handle = handle.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let b = booking(slot, i + 1, &format!("h-{i}"));
                handle
                    .call_blocking(move |st| st.book(&b).unwrap())
                    .unwrap()
            })
        })
        .collect();
    let wins = joins
        .into_iter()
        .map(|j| j.join().unwrap())
        .filter(|o| matches!(o, BookOutcome::Booked { .. }))
        .count();
    assert_eq!(wins, 1);
    drop(handle);
    thread.join().unwrap();
}

fn identical_retry_returns_the_same_appointment(db: &TestDb) {
    let (mut s, slots) = setup(db, 2);
    let BookOutcome::Booked {
        appointment: first,
        repeated: false,
        ..
    } = s.book(&booking(slots[0], 1, "same-key")).unwrap()
    else {
        panic!("first booking failed")
    };
    let BookOutcome::Booked {
        appointment: again,
        repeated: true,
        ..
    } = s.book(&booking(slots[0], 1, "same-key")).unwrap()
    else {
        panic!("retry was not answered with the first booking")
    };
    assert_eq!(first.id, again.id);
    // A different booker on the same slot is refused.
    assert_eq!(
        s.book(&booking(slots[0], 2, "other")).unwrap(),
        BookOutcome::SlotTaken
    );
    assert_eq!(booked_on_slot(db, slots[0]), 1);
}

fn failed_reschedule_leaves_the_old_appointment_intact(db: &TestDb) {
    let (mut s, slots) = setup(db, 2);
    let (x, y) = (slots[0], slots[2]);
    let BookOutcome::Booked {
        appointment: old, ..
    } = s.book(&booking(x, 1, "p1-x")).unwrap()
    else {
        panic!()
    };
    assert!(matches!(
        s.book(&booking(y, 2, "p2-y")).unwrap(),
        BookOutcome::Booked { .. }
    ));
    // Patient 1 tries to move onto the taken slot y.
    let mut mv = booking(y, 1, "p1-move");
    mv.replaces = Some(old.id);
    assert_eq!(s.book(&mv).unwrap(), BookOutcome::SlotTaken);
    assert_eq!(
        s.appointment(old.id).unwrap().unwrap().status,
        AppointmentStatus::Booked
    );
    assert_eq!(s.slot(x).unwrap().unwrap().status, SlotStatus::Busy);

    // Backstop: even if y's slot row is (wrongly) free, the unique index refuses a second booked
    // appointment on it, and the whole transaction — including the cancellation — rolls back.
    db.exec("UPDATE slot SET status = 'free' WHERE id = $1", &[y]);
    let mut mv = booking(y, 1, "p1-move-2");
    mv.replaces = Some(old.id);
    assert_eq!(s.book(&mv).unwrap(), BookOutcome::SlotTaken);
    assert_eq!(
        s.appointment(old.id).unwrap().unwrap().status,
        AppointmentStatus::Booked
    );
    assert_eq!(s.slot(x).unwrap().unwrap().status, SlotStatus::Busy);
    assert_eq!(booked_on_slot(db, y), 1);
}

fn successful_reschedule_swaps_atomically(db: &TestDb) {
    let (mut s, slots) = setup(db, 1);
    let BookOutcome::Booked {
        appointment: old, ..
    } = s.book(&booking(slots[0], 1, "a")).unwrap()
    else {
        panic!()
    };
    let mut mv = booking(slots[3], 1, "b");
    mv.replaces = Some(old.id);
    let BookOutcome::Booked {
        appointment: new,
        replaced: Some(replaced),
        ..
    } = s.book(&mv).unwrap()
    else {
        panic!()
    };
    assert_eq!(replaced.id, old.id);
    assert_eq!(replaced.status, AppointmentStatus::Cancelled);
    assert_eq!(new.status, AppointmentStatus::Booked);
    assert_eq!(s.slot(slots[0]).unwrap().unwrap().status, SlotStatus::Free);
    // Someone else's appointment cannot be "replaced".
    let mut other = booking(slots[4], 1, "c");
    other.replaces = Some(new.id + 1000);
    assert_eq!(s.book(&other).unwrap(), BookOutcome::ReplacedNotBookable);
}

fn slot_rules_and_new_patients(db: &TestDb) {
    let (mut s, slots) = setup(db, 1);
    let mut b = booking(slots[0], 1, "vt");
    b.visit_type = "vorsorge".into(); // not in the 15-min morning template
    assert_eq!(s.book(&b).unwrap(), BookOutcome::WrongVisitType);
    let mut b = booking(slots[0], 1, "late");
    b.now = s.slot(slots[0]).unwrap().unwrap().start;
    assert_eq!(s.book(&b).unwrap(), BookOutcome::SlotGone);
    assert_eq!(
        s.book(&booking(999_999, 1, "none")).unwrap(),
        BookOutcome::SlotGone
    );
    let mut b = booking(slots[0], 0, "new");
    b.patient = BookingPatient::New(NewPatient {
        family: "Neu".into(),
        given: "Nina".into(),
        birth_date: "2000-02-02".into(),
        insurance: Insurance::Gkv,
        phone: Some("+491700000099".into()),
    });
    let BookOutcome::Booked { appointment, .. } = s.book(&b).unwrap() else {
        panic!()
    };
    let p = s.patient(appointment.patient_id).unwrap().unwrap();
    assert!(!p.known);
    assert_eq!(p.family_norm, "neu");
}

fn cancel_frees_the_slot_and_is_reported_once(db: &TestDb) {
    let (mut s, slots) = setup(db, 2);
    let BookOutcome::Booked { appointment: a, .. } = s.book(&booking(slots[0], 1, "k")).unwrap()
    else {
        panic!()
    };
    let now = wed_morning().as_second();
    assert!(matches!(
        s.cancel(a.id, CancelReason::Illness, None, now).unwrap(),
        CancelOutcome::Cancelled(_)
    ));
    assert_eq!(
        s.cancel(a.id, CancelReason::Illness, None, now).unwrap(),
        CancelOutcome::AlreadyCancelled
    );
    assert_eq!(
        s.cancel(424242, CancelReason::Other, None, now).unwrap(),
        CancelOutcome::NotFound
    );
    // The freed slot can be booked again by someone else.
    assert!(matches!(
        s.book(&booking(slots[0], 2, "k2")).unwrap(),
        BookOutcome::Booked { .. }
    ));
    let BookOutcome::Booked { appointment: b, .. } = s.book(&booking(slots[1], 1, "k3")).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        s.cancel(b.id, CancelReason::Other, None, b.start + 60)
            .unwrap(),
        CancelOutcome::InPast
    );
}

#[test]
fn migrations_are_embedded_and_reopen_cleanly() {
    let dir = temp_dir("migrate");
    let path = dir.join("ignis.db");
    let v = SqliteStore::open(&path).unwrap().schema_version().unwrap();
    assert!(v >= 1);
    let mut again = SqliteStore::open(&path).unwrap();
    assert_eq!(again.schema_version().unwrap(), v);
    let mode: String = again
        .connection()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = again
        .connection()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
}

fn retention_deletes_what_is_due_and_keeps_the_rest(db: &TestDb) {
    let (mut s, slots) = setup(db, 2);
    let now = wed_morning().as_second() + 400 * DAY;
    // Calls: ended two days ago (deleted), ended an hour ago (kept).
    s.start_call("CAold", &[1; 32], "+49170", "+4930", now - 3 * DAY)
        .unwrap();
    s.end_call("CAold", now - 2 * DAY).unwrap();
    s.start_call("CAnew", &[2; 32], "+49170", "+4930", now - 2 * 3600)
        .unwrap();
    s.end_call("CAnew", now - 3600).unwrap();
    // Audit: 100 days old (deleted), 1 day old (kept).
    s.audit(now - 100 * DAY, None, "find_slots", "ok").unwrap();
    s.audit(now - DAY, None, "find_slots", "ok").unwrap();
    // Requests: done 31 days ago (deleted), open (kept).
    let req = |now| NewRequest {
        category: RequestCategory::Callback,
        patient_id: Some(1),
        caller: None,
        details: None,
        urgency: Urgency::Routine,
        callback_number: None,
        callback_window: None,
        note: None,
        call_sid: "CA".into(),
        assurance: None,
        caller_number: "anonymous".into(),
        fingerprint: None,
        now,
    };
    let done = s.create_request(&req(now - 40 * DAY)).unwrap();
    s.mark_request_done(&done.ref_code, now - 31 * DAY).unwrap();
    s.create_request(&req(now - 40 * DAY)).unwrap();
    // Appointment on 26 Nov 2026 (> 12 months before `now`): deleted, with its free slot row.
    assert!(matches!(
        s.book(&booking(slots[0], 1, "old")).unwrap(),
        BookOutcome::Booked { .. }
    ));
    // A phone-created patient without anything, 7 months old: deleted.
    db.exec(
        "INSERT INTO patient (family, given, family_norm, given_norm, birth_date, created_via, created_at)
         VALUES ('X','Y','x','y','1999-09-09','phone', $1)",
        &[now - 210 * DAY],
    );
    // Emergency events: 2 years old (deleted), a week old (kept).
    let em = |now| NewEmergency {
        severity: Severity::Urgent,
        keywords: "Fieber".into(),
        patient_id: None,
        callback_number: None,
        advice: Advice::Call116117,
        call_sid: "CA".into(),
        fingerprint: None,
        now,
    };
    s.record_emergency(&em(now - 730 * DAY)).unwrap();
    s.record_emergency(&em(now - 7 * DAY)).unwrap();

    let report =
        retention::run_retention(s.as_mut(), jiff::Timestamp::from_second(now).unwrap()).unwrap();
    assert_eq!(report.calls, 1);
    assert_eq!(report.tool_audit, 1);
    assert_eq!(report.requests, 1);
    assert_eq!(report.appointments, 1);
    assert_eq!(report.patients, 1);
    assert_eq!(report.emergency_events, 1);
    assert!(report.slots >= slots.len());
    assert_eq!(s.open_requests().unwrap().len(), 1);
    assert_eq!(s.emergencies_since(0).unwrap().len(), 1);
    // Seeded (non-phone) patients are never deleted by retention.
    assert!(s.patient(1).unwrap().is_some());
    // Running again deletes nothing more.
    assert_eq!(
        s.retention(&RetentionPolicy::default(), now).unwrap(),
        Default::default()
    );
}

fn a_cancelled_booking_can_be_made_again_with_the_same_key(db: &TestDb) {
    let (mut s, slots) = setup(db, 1);
    let BookOutcome::Booked { appointment: a, .. } = s.book(&booking(slots[0], 1, "k")).unwrap()
    else {
        panic!()
    };
    s.cancel(a.id, CancelReason::Other, None, wed_morning().as_second())
        .unwrap();
    let BookOutcome::Booked {
        appointment: b,
        repeated: false,
        ..
    } = s.book(&booking(slots[0], 1, "k")).unwrap()
    else {
        panic!("re-booking after a cancellation must book anew")
    };
    assert_ne!(a.id, b.id);
    assert_eq!(booked_on_slot(db, slots[0]), 1);
}

#[test]
fn the_writer_thread_survives_a_panicking_job_and_backups_work() {
    let db = TestDb::sqlite("panic");
    let dir = db.dir().to_owned();
    let (s, slots) = setup(&db, 1);
    let (handle, thread) = StoreHandle::spawn(s).unwrap();
    let rx = handle.call(|_| -> i32 { panic!("bug in a job") }).unwrap();
    assert!(rx.recv().is_err(), "the panicking job never answers");
    let slot = slots[0];
    let outcome = handle
        .call_blocking(move |st| st.book(&booking(slot, 1, "after-panic")).unwrap())
        .unwrap();
    assert!(matches!(outcome, BookOutcome::Booked { .. }));
    drop(handle);
    thread.join().unwrap();
    let mut s = SqliteStore::open(&dir.join("ignis.db")).unwrap();
    let copy = dir.join("backup.db");
    s.backup_to(&copy).unwrap();
    let mut b = SqliteStore::open(&copy).unwrap();
    let booked: i64 = b
        .connection()
        .query_row(
            "SELECT COUNT(*) FROM appointment WHERE slot_id = ?1 AND status = 'booked'",
            [slot],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(booked, 1);
}

/// A replayed voice webhook must not reset a call: `start_call` inserts or refuses, and the
/// existing row (token, caller, end) is unchanged.
fn start_call_never_resets_an_existing_call(db: &TestDb) {
    let (mut s, _) = setup(db, 1);
    let now = wed_morning().as_second();
    s.start_call("CA1", &[1; 32], "+4917011111", "+4930", now)
        .unwrap();
    assert!(s.live_call(&[1; 32], now + 1).unwrap().is_some());
    s.end_call("CA1", now + 60).unwrap();
    let again = s.start_call("CA1", &[2; 32], "+4917099999", "+4930", now + 120);
    assert!(matches!(again, Err(StoreError::CallExists)), "{again:?}");
    // The replay's token opens nothing; the original row keeps its caller and its end.
    assert!(s.live_call(&[2; 32], now + 121).unwrap().is_none());
    let row = s
        .live_call(&[1; 32], now + 61)
        .unwrap()
        .expect("original token");
    assert_eq!(row.caller_number, "+4917011111");
    assert!(!s.end_call("CA1", now + 130).unwrap(), "still ended");
}

/// A stream that took a call over from another replica replaces the call's token: the old one
/// stops working, the row keeps its state; an ended or unknown call is left alone
/// (docs/replicas.md §4.2).
fn replace_call_token_retires_the_old_token(db: &TestDb) {
    let (mut s, _) = setup(db, 1);
    let now = wed_morning().as_second();
    s.start_call("CA1", &[1; 32], "+4917011111", "+4930", now)
        .unwrap();
    assert!(s.replace_call_token("CA1", &[2; 32], now + 1).unwrap());
    assert!(s.live_call(&[1; 32], now + 2).unwrap().is_none());
    let row = s.live_call(&[2; 32], now + 2).unwrap().expect("new token");
    assert_eq!(row.call_sid, "CA1");
    assert_eq!(row.caller_number, "+4917011111");
    assert!(!s.replace_call_token("CAnone", &[3; 32], now).unwrap());
    assert!(s.live_call(&[3; 32], now + 2).unwrap().is_none());
    s.end_call("CA1", now + 10).unwrap();
    assert!(!s.replace_call_token("CA1", &[4; 32], now + 11).unwrap());
    assert!(s.live_call(&[2; 32], now + 12).unwrap().is_some(), "grace");
    assert!(s.live_call(&[4; 32], now + 12).unwrap().is_none());
}

/// The staff page's call rows (issue 14): the bridge's outcome and time to first audio are
/// stored once with the end; a call without an end is listed as running until the caller's
/// cut-off; the day's calls come newest first within the day only.
fn call_outcome_and_first_audio_are_stored_with_the_end(db: &TestDb) {
    let (mut s, _) = setup(db, 1);
    let now = wed_morning().as_second();
    for (i, sid) in ["CA1", "CA2", "CA3"].iter().enumerate() {
        s.start_call(
            sid,
            &[i as u8; 32],
            "+4917011111",
            "+4930",
            now + i as i64 * 60,
        )
        .unwrap();
    }
    s.start_call("CAyday", &[9; 32], "+4917011111", "+4930", now - DAY)
        .unwrap();
    let end = CallEnd {
        outcome: CallOutcome::Transferred,
        first_audio_ms: Some(1234),
    };
    assert!(s.finish_call("CA1", &end, now + 100).unwrap());
    // Stored once: a second end changes nothing; an unknown call is reported.
    let other = CallEnd {
        outcome: CallOutcome::AgentFailed,
        first_audio_ms: None,
    };
    assert!(!s.finish_call("CA1", &other, now + 200).unwrap());
    assert!(!s.finish_call("CAnope", &other, now).unwrap());
    // A call ended the old way (tool token expiry) still gets its outcome, keeping its end.
    s.end_call("CA2", now + 90).unwrap();
    assert!(s.finish_call("CA2", &other, now + 300).unwrap());

    let calls = s.staff_calls(now - 10, now + DAY, 10).unwrap();
    let sids: Vec<i64> = calls.iter().map(|c| c.started_at - now).collect();
    assert_eq!(
        sids,
        [120, 60, 0],
        "newest first, yesterday's call not included"
    );
    let ca1 = &calls[2];
    assert_eq!(ca1.outcome, Some(CallOutcome::Transferred));
    assert_eq!(
        (ca1.ended_at, ca1.first_audio_ms),
        (Some(now + 100), Some(1234))
    );
    let ca2 = &calls[1];
    assert_eq!(
        (ca2.outcome, ca2.ended_at),
        (Some(CallOutcome::AgentFailed), Some(now + 90))
    );
    assert_eq!(
        s.staff_calls(now - 10, now + DAY, 1).unwrap().len(),
        1,
        "limit"
    );

    // Running: CA3 and yesterday's orphan, unless the cut-off excludes the orphan.
    let running = s.running_calls(now - 2 * DAY, 10).unwrap();
    assert_eq!(running.len(), 2);
    assert_eq!(running[0].started_at, now + 120);
    assert_eq!(s.running_calls(now - 3600, 10).unwrap().len(), 1);
}

fn staff_request(patient: Option<i64>, urgency: Urgency, at: i64) -> NewRequest {
    NewRequest {
        category: RequestCategory::Callback,
        patient_id: patient,
        caller: None,
        details: None,
        urgency,
        callback_number: Some("+4917011111".into()),
        callback_window: None,
        note: None,
        call_sid: "CA1".into(),
        assurance: None,
        caller_number: "+4917011111".into(),
        fingerprint: None,
        now: at,
    }
}

/// A request's and an emergency's fingerprints are stored with the rows and found again for
/// their call within the window (the retry check when the call state was not saved).
fn filed_requests_and_emergencies_are_found_by_fingerprint(db: &TestDb) {
    let mut s = db.store();
    let t0 = wed_morning().as_second();
    let request = NewRequest {
        fingerprint: Some("fp-request".into()),
        ..staff_request(None, Urgency::Routine, t0)
    };
    let created = s.create_request(&request).unwrap();
    let event = s
        .record_emergency(&NewEmergency {
            severity: Severity::Urgent,
            keywords: "Fieber".into(),
            patient_id: None,
            callback_number: None,
            advice: Advice::Call116117,
            call_sid: "CA1".into(),
            fingerprint: Some("fp-emergency".into()),
            now: t0 + 10,
        })
        .unwrap();
    let found = |s: &mut Box<dyn Store>, sid: &str, fp: &str, since: i64| {
        s.filed_in_call(sid, fp, since).unwrap().map(|(r, _)| r)
    };
    assert_eq!(
        found(&mut s, "CA1", "fp-request", t0),
        Some(created.ref_code)
    );
    assert_eq!(found(&mut s, "CA1", "fp-emergency", t0), Some(event));
    // Outside the window, from another call, or another input: nothing.
    assert_eq!(found(&mut s, "CA1", "fp-request", t0 + 1), None);
    assert_eq!(found(&mut s, "CA2", "fp-request", t0), None);
    assert_eq!(found(&mut s, "CA1", "fp-other", t0), None);
    // Retention clears the fingerprints after a day; the rows stay.
    s.retention(&RetentionPolicy::default(), t0 + FINGERPRINT_KEPT_SECS + 11)
        .unwrap();
    assert_eq!(found(&mut s, "CA1", "fp-request", t0), None);
    assert_eq!(found(&mut s, "CA1", "fp-emergency", t0), None);
    let kept = db.value(
        "SELECT COUNT(*) FROM request WHERE call_sid = 'CA1' AND fingerprint IS NULL",
        &[],
    );
    assert_eq!(kept, 1);
}

/// Requests of a day for the staff page: open ones first (urgent first, then newest), done
/// ones after with who and when; undo reopens; older open ones are listed apart.
fn day_requests_done_by_and_undo(db: &TestDb) {
    let (mut s, _) = setup(db, 1);
    let now = wed_morning().as_second();
    let r1 = s
        .create_request(&staff_request(Some(1), Urgency::Routine, now))
        .unwrap();
    let r2 = s
        .create_request(&staff_request(None, Urgency::Routine, now + 10))
        .unwrap();
    let r3 = s
        .create_request(&staff_request(None, Urgency::Urgent, now + 5))
        .unwrap();
    let old = s
        .create_request(&staff_request(None, Urgency::Routine, now - DAY))
        .unwrap();

    let (rows, total) = s.staff_day_requests(now - 60, now + 3600, 10).unwrap();
    let refs: Vec<&str> = rows.iter().map(|r| r.row.ref_code.as_str()).collect();
    assert_eq!(refs, [&r3.ref_code, &r2.ref_code, &r1.ref_code]);
    assert_eq!(total, 3);
    assert_eq!(rows[2].birth_date.as_deref(), Some("1980-01-01"));
    assert_eq!(rows[2].row.patient.as_deref(), Some("Eva Test0"));

    let done = s
        .mark_request_done_by(&r3.ref_code, "anna", now + 60)
        .unwrap();
    assert_eq!(done, RequestChange::Changed);
    assert_eq!(
        s.mark_request_done_by(&r3.ref_code, "ben", now + 61)
            .unwrap(),
        RequestChange::Unchanged
    );
    assert_eq!(
        s.mark_request_done_by("R-9999", "ben", now).unwrap(),
        RequestChange::NotFound
    );
    let (rows, _) = s.staff_day_requests(now - 60, now + 3600, 10).unwrap();
    let last = rows.last().unwrap();
    assert_eq!(
        last.row.ref_code, r3.ref_code,
        "done ones after the open ones"
    );
    assert_eq!(
        (last.done_by.as_deref(), last.done_at),
        (Some("anna"), Some(now + 60))
    );
    assert_eq!(
        s.staff_day_requests(now - 60, now + 3600, 1).unwrap().1,
        3,
        "total beyond the limit"
    );

    assert_eq!(
        s.reopen_request(&r3.ref_code).unwrap(),
        RequestChange::Changed
    );
    assert_eq!(
        s.reopen_request(&r3.ref_code).unwrap(),
        RequestChange::Unchanged
    );
    assert_eq!(s.reopen_request("R-9999").unwrap(), RequestChange::NotFound);
    let (rows, _) = s.staff_day_requests(now - 60, now + 3600, 10).unwrap();
    assert_eq!(rows[0].row.ref_code, r3.ref_code);
    assert_eq!((rows[0].done_by.as_deref(), rows[0].done_at), (None, None));

    let (older, n) = s.open_requests_before(now - 60, 10).unwrap();
    assert_eq!(n, 1);
    assert_eq!(older[0].row.ref_code, old.ref_code);
    assert_eq!(s.open_requests_before(now + 3600, 0).unwrap(), (vec![], 4));
    // The admin API's done has no staff name.
    assert!(s.mark_request_done(&old.ref_code, now).unwrap());
    assert_eq!(s.open_requests_before(now - 60, 10).unwrap().1, 0);
}

/// The timeline's rows: any status, with the call that booked it and whether a reschedule moved
/// it here.
fn day_appointments_show_what_calls_changed(db: &TestDb) {
    let (mut s, slots) = setup(db, 1);
    let first = match s.book(&booking(slots[0], 1, "a")).unwrap() {
        BookOutcome::Booked { appointment, .. } => appointment.id,
        other => panic!("{other:?}"),
    };
    let mut moved = booking(slots[1], 1, "b");
    moved.replaces = Some(first);
    assert!(matches!(
        s.book(&moved).unwrap(),
        BookOutcome::Booked { .. }
    ));
    let rows = s.staff_day_appointments(0, i64::MAX, 10).unwrap();
    assert_eq!(rows.len(), 2);
    let (old, new) = (&rows[0], &rows[1]);
    assert_eq!(old.row.details.status, AppointmentStatus::Cancelled);
    assert_eq!(old.cancel_reason.as_deref(), Some("rescheduled"));
    assert!(!old.moved_here && new.moved_here);
    assert_eq!(new.call_sid.as_deref(), Some("CAb"));
    assert!(new.end > new.row.start);
    assert_eq!(s.staff_day_appointments(0, i64::MAX, 1).unwrap().len(), 1);
}

/// The driver folds the bridge's outcome into the staff page's four (a successful transfer
/// wins whatever the stream did next).
#[test]
fn call_end_folds_bridge_outcomes() {
    use ignis::calls::Outcome;
    use std::time::Duration;
    let fold = |o, t| CallEnd::from_bridge(o, t, None).outcome;
    assert_eq!(fold(Outcome::Completed, false), CallOutcome::Completed);
    assert_eq!(fold(Outcome::CallerHungUp, false), CallOutcome::Completed);
    assert_eq!(fold(Outcome::CallerHungUp, true), CallOutcome::Transferred);
    assert_eq!(fold(Outcome::StreamLost, true), CallOutcome::Transferred);
    assert_eq!(fold(Outcome::AgentFailed, false), CallOutcome::AgentFailed);
    for o in [
        Outcome::ServerShutdown,
        Outcome::StreamLost,
        Outcome::Refused,
    ] {
        assert_eq!(fold(o, false), CallOutcome::Fallback);
    }
    let end = CallEnd::from_bridge(Outcome::Completed, false, Some(Duration::from_millis(987)));
    assert_eq!(end.first_audio_ms, Some(987));
}

/// The staff page's emergencies of a day: only that day, newest first, limited, with the total.
fn staff_emergencies_of_a_day(db: &TestDb) {
    let (mut s, _) = setup(db, 1);
    let now = wed_morning().as_second();
    for (i, at) in [now - DAY, now, now + 60, now + 120].iter().enumerate() {
        s.record_emergency(&NewEmergency {
            severity: Severity::Urgent,
            keywords: format!("k{i}"),
            patient_id: (i == 2).then_some(1),
            callback_number: None,
            advice: Advice::Transfer,
            call_sid: "CA1".into(),
            fingerprint: None,
            now: *at,
        })
        .unwrap();
    }
    let (rows, total) = s.staff_emergencies(now - 10, now + 3600, 2).unwrap();
    assert_eq!(total, 3);
    let kw: Vec<&str> = rows.iter().map(|e| e.keywords.as_str()).collect();
    assert_eq!(kw, ["k3", "k2"]);
    assert_eq!(rows[1].patient.as_deref(), Some("Eva Test0"));
    assert_eq!(
        s.staff_emergencies(now + 3600, now + DAY, 10).unwrap(),
        (vec![], 0)
    );
}

fn staff_accounts_sessions_and_audit(db: &TestDb) {
    let mut s = db.store();
    let t0 = wed_morning().as_second();
    assert!(s.add_staff_user("anna", "$argon2id$phc-a", t0).unwrap());
    assert!(!s.add_staff_user("anna", "$argon2id$other", t0).unwrap());
    assert!(s.add_staff_user("ben", "$argon2id$phc-b", t0).unwrap());
    let names: Vec<_> = s
        .staff_users()
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["anna", "ben"]);
    assert_eq!(
        s.staff_user_hash("anna").unwrap().as_deref(),
        Some("$argon2id$phc-a")
    );
    assert_eq!(s.staff_user_hash("carla").unwrap(), None);

    let token = [7u8; 32];
    assert!(
        s.create_staff_session(&token, "anna", "csrf-a", t0)
            .unwrap()
    );
    assert!(!s.create_staff_session(&[8; 32], "carla", "x", t0).unwrap());
    // Idle expiry: each use moves the 8 h window...
    let (idle, hour) = (STAFF_SESSION_IDLE_SECS, 3600);
    let seen = s
        .touch_staff_session(&token, t0 + 3 * hour)
        .unwrap()
        .unwrap();
    assert_eq!((seen.user.as_str(), seen.csrf.as_str()), ("anna", "csrf-a"));
    assert!(
        s.touch_staff_session(&token, t0 + 3 * hour + idle - 1)
            .unwrap()
            .is_some()
    );
    // ...but not past the 12 h since the login, however used.
    assert!(
        s.peek_staff_session(&token, t0 + STAFF_SESSION_MAX_SECS)
            .unwrap()
            .is_none()
    );
    let idle_token = [6u8; 32];
    assert!(
        s.create_staff_session(&idle_token, "anna", "csrf-i", t0)
            .unwrap()
    );
    assert!(
        s.touch_staff_session(&idle_token, t0 + idle + 1)
            .unwrap()
            .is_none()
    );
    assert!(s.delete_staff_session(&idle_token).unwrap());
    assert!(s.touch_staff_session(&[9; 32], t0).unwrap().is_none());

    // Logout deletes; removing an account deletes its sessions.
    assert!(s.create_staff_session(&[1; 32], "anna", "c1", t0).unwrap());
    assert!(s.delete_staff_session(&[1; 32]).unwrap());
    assert!(!s.delete_staff_session(&[1; 32]).unwrap());
    assert!(s.touch_staff_session(&[1; 32], t0).unwrap().is_none());
    assert!(s.create_staff_session(&[2; 32], "ben", "c2", t0).unwrap());
    assert!(s.remove_staff_user("ben").unwrap());
    assert!(!s.remove_staff_user("ben").unwrap());
    assert!(s.touch_staff_session(&[2; 32], t0).unwrap().is_none());

    // Retention: idle sessions and audit rows past the policy go, the rest stays.
    s.staff_audit(t0, "anna", "login", "ok").unwrap();
    let policy = RetentionPolicy::default();
    s.staff_audit(t0 + policy.staff_audit, "anna", "view day=2026-11-26", "ok")
        .unwrap();
    assert!(
        s.create_staff_session(&[3; 32], "anna", "c3", t0 + policy.staff_audit)
            .unwrap()
    );
    let rep = s.retention(&policy, t0 + policy.staff_audit + 1).unwrap();
    assert_eq!((rep.staff_sessions, rep.staff_audit), (1, 1));
    let left = db.value("SELECT COUNT(*) FROM staff_audit", &[]);
    assert_eq!(left, 1);
    assert!(
        s.touch_staff_session(&[3; 32], t0 + policy.staff_audit + 2)
            .unwrap()
            .is_some()
    );
}

fn staff_session_use_is_written_at_most_once_a_minute(db: &TestDb) {
    let mut s = db.store();
    let t0 = wed_morning().as_second();
    assert!(s.add_staff_user("anna", "$argon2id$phc-a", t0).unwrap());
    assert!(s.create_staff_session(&[4; 32], "anna", "c", t0).unwrap());
    let seen = |_: &mut Box<dyn Store>| db.value("SELECT last_seen_at FROM staff_session", &[]);
    assert!(
        s.touch_staff_session(&[4; 32], t0 + STAFF_SESSION_TOUCH_SECS - 1)
            .unwrap()
            .is_some()
    );
    assert_eq!(seen(&mut s), t0);
    assert!(
        s.touch_staff_session(&[4; 32], t0 + STAFF_SESSION_TOUCH_SECS)
            .unwrap()
            .is_some()
    );
    assert_eq!(seen(&mut s), t0 + STAFF_SESSION_TOUCH_SECS);
}

/// Closures entered on the staff page (docs/practice-tools.md §2.7): stored, listed from a
/// day on, capped at MAX_OPEN_CLOSURES among those not over yet, and removed.
fn staff_closures_are_listed_capped_and_removed(db: &TestDb) {
    let mut s = db.store();
    let t0 = wed_morning().as_second();
    let d = |text: &str| -> Date { text.parse().unwrap() };
    let today = d("2026-11-25");
    let new = |from: &str, to: &str, reason| NewClosure {
        from: d(from),
        to: d(to),
        reason,
        by: "anna",
    };
    let sick = s
        .add_staff_closure(
            &new("2026-11-26", "2026-11-27", ClosureReason::Illness),
            today,
            t0,
        )
        .unwrap()
        .expect("stored");
    let trip = s
        .add_staff_closure(
            &new("2026-11-25", "2026-11-25", ClosureReason::Other),
            today,
            t0,
        )
        .unwrap()
        .expect("stored");
    let listed = s.staff_closures(today).unwrap();
    assert_eq!(
        listed.iter().map(|c| c.id).collect::<Vec<_>>(),
        [trip, sick],
        "by first day"
    );
    assert_eq!(
        (listed[1].from, listed[1].to, listed[1].reason),
        (d("2026-11-26"), d("2026-11-27"), ClosureReason::Illness)
    );
    assert_eq!(
        (listed[1].created_by.as_str(), listed[1].created_at),
        ("anna", t0)
    );
    // Those over before `from` are not listed.
    assert_eq!(s.staff_closures(d("2026-11-26")).unwrap().len(), 1);
    assert!(s.staff_closures(d("2026-11-28")).unwrap().is_empty());

    // The cap counts the closures not over yet: full, then room again a day later.
    for _ in 2..MAX_OPEN_CLOSURES {
        let c = new("2026-11-25", "2026-11-25", ClosureReason::Training);
        assert!(s.add_staff_closure(&c, today, t0).unwrap().is_some());
    }
    let one_more = new("2026-12-01", "2026-12-01", ClosureReason::Vacation);
    assert_eq!(s.add_staff_closure(&one_more, today, t0).unwrap(), None);
    assert_eq!(s.staff_closures(today).unwrap().len(), MAX_OPEN_CLOSURES);
    let later = d("2026-11-26");
    assert!(s.add_staff_closure(&one_more, later, t0).unwrap().is_some());

    // Taken back: no longer listed, but kept (marked) as history; one that is over, or taken
    // back already, cannot be.
    assert!(s.remove_staff_closure(sick, later, "ben", t0 + 60).unwrap());
    assert!(!s.remove_staff_closure(sick, later, "ben", t0 + 60).unwrap());
    assert!(!s.remove_staff_closure(trip, later, "ben", t0 + 60).unwrap());
    assert!(
        s.staff_closures(later)
            .unwrap()
            .iter()
            .all(|c| c.id != sick)
    );
    let by = db.value(
        "SELECT COUNT(*) FROM staff_closure WHERE removed_by = 'ben' AND removed_at IS NOT NULL",
        &[],
    );
    assert_eq!(by, 1);

    // Retention, a year and a day on: what was taken back, or was over, more than a year ago
    // goes (the 48 training days, the trip, the sick days); the one ending later stays, and so
    // does one entered as long ago but taken back only now (its audit row is new).
    let policy = RetentionPolicy::default();
    let far = new("2027-06-01", "2027-06-02", ClosureReason::Vacation);
    let far = s
        .add_staff_closure(&far, later, t0)
        .unwrap()
        .expect("stored");
    let now = t0 + policy.staff_audit + DAY;
    assert!(s.remove_staff_closure(far, later, "ben", now).unwrap());
    let rep = s.retention(&policy, now).unwrap();
    assert_eq!(rep.staff_closures, MAX_OPEN_CLOSURES);
    assert_eq!(db.value("SELECT COUNT(*) FROM staff_closure", &[]), 2);
}

/// An open urgent request's place in the urgent queue, as counted at filing; none for anything
/// else.
fn urgent_queue_positions_are_counted_as_at_filing(db: &TestDb) {
    let mut s = db.store();
    let t0 = wed_morning().as_second();
    let first = s
        .create_request(&staff_request(None, Urgency::Urgent, t0))
        .unwrap();
    let routine = s
        .create_request(&staff_request(None, Urgency::Routine, t0 + 1))
        .unwrap();
    let second = s
        .create_request(&staff_request(None, Urgency::Urgent, t0 + 2))
        .unwrap();
    assert_eq!(second.queue_position, Some(2));
    assert_eq!(s.urgent_queue_position(&second.ref_code).unwrap(), Some(2));
    assert_eq!(s.urgent_queue_position(&routine.ref_code).unwrap(), None);
    assert_eq!(s.urgent_queue_position("R-9999").unwrap(), None);
    assert!(s.mark_request_done(&first.ref_code, t0 + 3).unwrap());
    assert_eq!(s.urgent_queue_position(&first.ref_code).unwrap(), None);
    assert_eq!(s.urgent_queue_position(&second.ref_code).unwrap(), Some(1));
}

/// The staff login's account windows: counted per key, taken back, over after the window,
/// and a new key past [`MAX_LOGIN_WINDOWS`] counts against the overflow key.
fn login_windows_count_take_back_expire_and_are_bounded(db: &TestDb) {
    const WINDOW: i64 = 900;
    let mut s = db.store();
    let t0 = wed_morning().as_second();
    let first = s.count_login_attempt("anna", t0, WINDOW).unwrap();
    assert_eq!(
        (first.key.as_str(), first.started, first.attempts),
        ("anna", t0, 1)
    );
    let second = s.count_login_attempt("anna", t0 + 5, WINDOW).unwrap();
    assert_eq!((second.started, second.attempts), (t0, 2));
    assert_eq!(
        s.count_login_attempt("ben", t0 + 5, WINDOW)
            .unwrap()
            .attempts,
        1
    );
    s.take_back_login_attempt(&second).unwrap();
    assert_eq!(
        s.count_login_attempt("anna", t0 + 6, WINDOW)
            .unwrap()
            .attempts,
        2
    );
    // Over: a new window, and the old window's take-back changes nothing.
    let later = s.count_login_attempt("anna", t0 + WINDOW, WINDOW).unwrap();
    assert_eq!((later.started, later.attempts), (t0 + WINDOW, 1));
    s.take_back_login_attempt(&first).unwrap();
    assert_eq!(
        s.count_login_attempt("anna", t0 + WINDOW, WINDOW)
            .unwrap()
            .attempts,
        2
    );
    // Full: known keys still count as themselves, new ones share the overflow key.
    db.exec(
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
             WHERE i < {MAX_LOGIN_WINDOWS}) INSERT INTO staff_login_window (key, started, attempts) \
             SELECT 'u' || i, {t0} + {WINDOW} - 10, 1 FROM n"
        ),
        &[],
    );
    let full = t0 + WINDOW + 1;
    assert_eq!(
        s.count_login_attempt("anna", full, WINDOW).unwrap().key,
        "anna"
    );
    let new = s.count_login_attempt("carl", full, WINDOW).unwrap();
    assert_eq!((new.key.as_str(), new.attempts), (LOGIN_OVERFLOW_KEY, 1));
    assert_eq!(
        s.count_login_attempt("dora", full, WINDOW)
            .unwrap()
            .attempts,
        2
    );
    // Room again (the junk windows over) while the overflow window is open: a new name starts
    // from the overflow window's count, not from zero (it was counted there until now).
    let erik = s
        .count_login_attempt("erik", t0 + 2 * WINDOW - 5, WINDOW)
        .unwrap();
    assert_eq!(
        (erik.key.as_str(), erik.started, erik.attempts),
        ("erik", full, 3)
    );
    // Once those windows are over they are deleted and names count as themselves again.
    let next = t0 + 2 * WINDOW + 1;
    assert_eq!(
        s.count_login_attempt("carl", next, WINDOW).unwrap().key,
        "carl"
    );
    assert_eq!(db.value("SELECT COUNT(*) FROM staff_login_window", &[]), 1);
    // Read without counting; over → none.
    let carl = s
        .login_window("carl", next, WINDOW)
        .unwrap()
        .expect("carl's window");
    assert_eq!((carl.attempts, carl.reported), (1, false));
    assert_eq!(s.login_window("carl", next + WINDOW, WINDOW).unwrap(), None);
    assert_eq!(s.login_window("nobody", next, WINDOW).unwrap(), None);
    // A lock-out is reported once per window, whoever asks.
    assert!(s.report_login_lockout(&carl).unwrap());
    assert!(!db.store().report_login_lockout(&carl).unwrap());
    assert!(
        s.login_window("carl", next, WINDOW)
            .unwrap()
            .unwrap()
            .reported
    );
}

/// The addresses staff logged in from: remembered per account, for a while, and gone with the
/// account.
fn trusted_login_addresses_are_kept_per_account(db: &TestDb) {
    const KEEP: i64 = 30 * DAY;
    let mut s = db.store();
    let t0 = wed_morning().as_second();
    assert!(s.add_staff_user("anna", "$argon2id$x", t0).unwrap());
    assert!(s.add_staff_user("ben", "$argon2id$x", t0).unwrap());
    s.trust_login_address("anna", "192.0.2.7", t0, KEEP)
        .unwrap();
    // An unknown account is not remembered.
    s.trust_login_address("nobody", "192.0.2.7", t0, KEEP)
        .unwrap();
    assert!(
        s.login_address_trusted("anna", "192.0.2.7", t0 - KEEP)
            .unwrap()
    );
    assert!(
        !s.login_address_trusted("anna", "192.0.2.8", t0 - KEEP)
            .unwrap()
    );
    assert!(
        !s.login_address_trusted("ben", "192.0.2.7", t0 - KEEP)
            .unwrap()
    );
    assert!(
        !s.login_address_trusted("anna", "192.0.2.7", t0 + 1)
            .unwrap()
    );
    // A later login renews it; an old pair goes with the account's next login.
    s.trust_login_address("anna", "2001:db8:1:2::", t0 + 10, KEEP)
        .unwrap();
    s.trust_login_address("anna", "192.0.2.7", t0 + 10, KEEP)
        .unwrap();
    assert!(
        s.login_address_trusted("anna", "192.0.2.7", t0 + 10)
            .unwrap()
    );
    s.trust_login_address("anna", "198.51.100.1", t0 + KEEP + 5, KEEP)
        .unwrap();
    assert_eq!(db.value("SELECT COUNT(*) FROM staff_login_trust", &[]), 3);
    s.trust_login_address("anna", "198.51.100.1", t0 + KEEP + 11, KEEP)
        .unwrap();
    assert_eq!(db.value("SELECT COUNT(*) FROM staff_login_trust", &[]), 1);
    assert!(s.remove_staff_user("anna").unwrap());
    assert_eq!(db.value("SELECT COUNT(*) FROM staff_login_trust", &[]), 0);
}

on_both_backends!(
    urgent_queue_positions_are_counted_as_at_filing,
    login_windows_count_take_back_expire_and_are_bounded,
    trusted_login_addresses_are_kept_per_account,
    filed_requests_and_emergencies_are_found_by_fingerprint,
    staff_closures_are_listed_capped_and_removed,
    racing_connections_book_one_slot_exactly_once,
    racing_submissions_through_the_writer_thread_book_once,
    identical_retry_returns_the_same_appointment,
    failed_reschedule_leaves_the_old_appointment_intact,
    successful_reschedule_swaps_atomically,
    slot_rules_and_new_patients,
    cancel_frees_the_slot_and_is_reported_once,
    retention_deletes_what_is_due_and_keeps_the_rest,
    a_cancelled_booking_can_be_made_again_with_the_same_key,
    start_call_never_resets_an_existing_call,
    replace_call_token_retires_the_old_token,
    call_outcome_and_first_audio_are_stored_with_the_end,
    day_requests_done_by_and_undo,
    day_appointments_show_what_calls_changed,
    staff_emergencies_of_a_day,
    staff_accounts_sessions_and_audit,
    staff_session_use_is_written_at_most_once_a_minute,
);

/// What only PostgreSQL has: several replicas (separate pools) on one database.
mod postgres_only {
    use super::*;
    use ignis::pg::PgError;
    use ignis::practice::demo;
    use ignis::practice::store::postgres::{CALL_LOCK_CLASS, RETENTION_LOCK_KEY};
    use ignis::practice::store::{PgStore, RetentionReport};

    /// Issue 15: 40 concurrent bookings of one slot from 40 threads through 3 "replicas"
    /// (separate pools) → exactly one wins, the rest are told the slot is taken.
    #[test]
    fn forty_bookings_of_one_slot_through_three_replicas_book_once() {
        const N: usize = 40;
        let db = TestDb::new(Kind::Postgres, "forty-three");
        let (_s, slots) = setup(&db, N);
        let slot = slots[5];
        let replicas: Vec<_> = (0..3).map(|_| db.replica_pool(N / 3 + 1)).collect();
        let barrier = Barrier::new(N);
        let outcomes: Vec<BookOutcome> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..N)
                .map(|i| {
                    let (barrier, pool) = (&barrier, &replicas[i % 3]);
                    scope.spawn(move || {
                        let mut own = PgStore::new(pool);
                        barrier.wait();
                        own.book(&booking(slot, i as i64 + 1, &format!("r{}-{i}", i % 3)))
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let wins = outcomes
            .iter()
            .filter(|o| matches!(o, BookOutcome::Booked { .. }))
            .count();
        let taken = outcomes
            .iter()
            .filter(|o| **o == BookOutcome::SlotTaken)
            .count();
        assert_eq!((wins, taken), (1, N - 1), "{outcomes:?}");
        assert_eq!(booked_on_slot(&db, slot), 1);
    }

    /// Urgent requests filed at once through three replicas get distinct queue positions,
    /// 1 to N: each counts the open urgent requests after the ones before it committed.
    #[test]
    fn racing_urgent_requests_get_distinct_queue_positions() {
        const N: usize = 12;
        let db = TestDb::new(Kind::Postgres, "urgent-queue");
        let _migrated = db.store();
        let replicas: Vec<_> = (0..3).map(|_| db.replica_pool(N / 3 + 1)).collect();
        let barrier = Barrier::new(N);
        let mut positions: Vec<u32> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..N)
                .map(|i| {
                    let (barrier, pool) = (&barrier, &replicas[i % 3]);
                    scope.spawn(move || {
                        let mut own = PgStore::new(pool);
                        let r = staff_request(None, Urgency::Urgent, wed_morning().as_second());
                        // Connected before the race, so the inserts overlap.
                        own.schema_version().unwrap();
                        barrier.wait();
                        own.create_request(&r).unwrap().queue_position.unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        positions.sort_unstable();
        assert_eq!(positions, (1..=N as u32).collect::<Vec<_>>());
    }

    /// A retry racing its original (same idempotency key, two replicas) is answered with the
    /// one booking, never with "slot taken".
    #[test]
    fn racing_identical_retries_get_the_one_booking() {
        const N: usize = 10;
        let db = TestDb::new(Kind::Postgres, "racing-retries");
        let (_s, slots) = setup(&db, 1);
        let slot = slots[0];
        let replicas: Vec<_> = (0..2).map(|_| db.replica_pool(N)).collect();
        let barrier = Barrier::new(N);
        let outcomes: Vec<BookOutcome> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..N)
                .map(|i| {
                    let (barrier, pool) = (&barrier, &replicas[i % 2]);
                    scope.spawn(move || {
                        let mut own = PgStore::new(pool);
                        barrier.wait();
                        own.book(&booking(slot, 1, "same-key")).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut ids = Vec::new();
        let mut first = 0;
        for o in &outcomes {
            let BookOutcome::Booked {
                appointment,
                repeated,
                ..
            } = o
            else {
                panic!("a retry was refused: {outcomes:?}");
            };
            ids.push(appointment.id);
            first += usize::from(!repeated);
        }
        ids.dedup();
        assert_eq!((ids.len(), first), (1, 1), "{outcomes:?}");
        assert_eq!(booked_on_slot(&db, slots[0]), 1);
    }

    /// Data that retention would delete: a call ended two days before `now`.
    fn due_call(s: &mut dyn Store, sid: &str, hash: u8, now: i64) {
        s.start_call(sid, &[hash; 32], "+49170", "+4930", now - 3 * DAY)
            .unwrap();
        s.end_call(sid, now - 2 * DAY).unwrap();
    }

    /// Issue 15: retention runs on one replica at a time. While another replica's run holds
    /// the lock, a run reports nothing and deletes nothing; two runs at once delete the due
    /// rows once between them.
    #[test]
    fn retention_runs_on_one_replica_at_a_time() {
        let db = TestDb::new(Kind::Postgres, "retention-one");
        let now = wed_morning().as_second() + 400 * DAY;
        let mut s = db.store();
        due_call(s.as_mut(), "CA1", 1, now);
        let holder = db.replica_pool(1);
        let policy = RetentionPolicy::default();
        holder.block_on(async {
            let mut c = holder.client().await.unwrap();
            let tx = c.transaction().await.unwrap();
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&RETENTION_LOCK_KEY])
                .await
                .unwrap();
            // Another replica is running retention right now.
            let mut other = PgStore::new(&db.replica_pool(1));
            let skipped = std::thread::scope(|t| {
                t.spawn(|| other.retention(&policy, now).unwrap())
                    .join()
                    .unwrap()
            });
            assert_eq!(skipped, RetentionReport::default());
            tx.commit().await.unwrap();
        });
        assert_eq!(
            db.value("SELECT COUNT(*) FROM call", &[]),
            1,
            "nothing deleted"
        );

        // Two replicas at once: one deletes, the other finds the lock taken or nothing left.
        due_call(s.as_mut(), "CA2", 2, now);
        let barrier = Barrier::new(2);
        let reports: Vec<RetentionReport> = std::thread::scope(|t| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let (barrier, pool) = (&barrier, db.replica_pool(1));
                    t.spawn(move || {
                        let mut r = PgStore::new(&pool);
                        barrier.wait();
                        r.retention(&policy, now).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let calls: Vec<usize> = reports.iter().map(|r| r.calls).collect();
        assert!(calls == [2, 0] || calls == [0, 2], "{reports:?}");
        assert_eq!(db.value("SELECT COUNT(*) FROM call", &[]), 0);
    }

    /// Issue 15: replicas that start together migrate the schema once and seed the demo data
    /// once.
    #[test]
    fn replicas_starting_together_migrate_and_seed_once() {
        let db = TestDb::new(Kind::Postgres, "start-together");
        let config = PracticeConfig::demo();
        let barrier = Barrier::new(3);
        let seeded: Vec<usize> = std::thread::scope(|t| {
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    let (barrier, pool, config) = (&barrier, db.replica_pool(2), &config);
                    t.spawn(move || {
                        barrier.wait();
                        let mut s = PgStore::open(&pool).unwrap();
                        demo::seed(&mut s, config, wed_morning()).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let demo_count = demo::demo_patients().len();
        let mut sorted = seeded.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 0, demo_count], "{seeded:?}");
        assert_eq!(
            db.value("SELECT COUNT(*) FROM patient", &[]),
            demo_count as i64
        );
        assert_eq!(
            db.value("SELECT COUNT(*) FROM appointment", &[]),
            1,
            "one demo appointment"
        );
        let mut s = PgStore::new(db.database());
        assert_eq!(
            s.schema_version().unwrap(),
            ignis::practice::store::postgres::schema::PG_MIGRATIONS.len() as i64
        );
        assert_eq!(
            db.value(
                "SELECT COUNT(*) FROM ignis_migrations WHERE component = 'store'",
                &[]
            ),
            ignis::practice::store::postgres::schema::PG_MIGRATIONS.len() as i64
        );
    }

    /// Issue 15: PostgreSQL restarted → at most the next operation fails, as "unavailable"
    /// (not a query error, not a hang), and the ones after it work on a fresh connection;
    /// while the server is down every operation is "unavailable".
    #[test]
    fn a_restarted_database_fails_one_operation_then_works() {
        let db = TestDb::postgres_alone("restart");
        let (mut s, slots) = setup(&db, 1);
        assert!(s.slot(slots[0]).unwrap().is_some());
        db.server().restart();
        // The store may already have seen its connection close (then it takes a fresh one).
        if let Err(e) = s.slot(slots[0]) {
            assert!(e.is_unavailable(), "{e:?}");
        }
        assert!(s.slot(slots[0]).unwrap().is_some(), "works again");
        assert!(matches!(
            s.book(&booking(slots[0], 1, "after-restart")).unwrap(),
            BookOutcome::Booked { .. }
        ));
        // Stopped: unavailable (bounded by the pool's wait and connect timeouts), twice.
        db.server().stop();
        for _ in 0..2 {
            let err = s.slot(slots[0]).unwrap_err();
            assert!(
                matches!(err, StoreError::Postgres(PgError::Unavailable(_))),
                "{err:?}"
            );
        }
        db.server().start_server();
        assert!(s.slot(slots[0]).unwrap().is_some());
    }

    /// One call's tool requests serialise across workers and replicas: `live_call` holds the
    /// call's lock until `end_job` (docs/replicas.md §3).
    #[test]
    fn live_call_holds_the_call_lock_until_the_job_ends() {
        let db = TestDb::new(Kind::Postgres, "call-lock");
        let mut s = db.store();
        let now = wed_morning().as_second();
        s.start_call("CA1", &[1; 32], "+4917011111", "+4930", now)
            .unwrap();
        let id = s.live_call(&[1; 32], now).unwrap().expect("live").id;
        let probe = db.replica_pool(1);
        let try_lock = || -> bool {
            probe.block_on(async {
                let c = probe.client().await.unwrap();
                let key = (id % i32::MAX as i64) as i32;
                let got: bool = c
                    .query_one(
                        "SELECT pg_try_advisory_lock($1, $2)",
                        &[&CALL_LOCK_CLASS, &key],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if got {
                    c.execute(
                        "SELECT pg_advisory_unlock($1, $2)",
                        &[&CALL_LOCK_CLASS, &key],
                    )
                    .await
                    .unwrap();
                }
                got
            })
        };
        assert!(!try_lock(), "held while the job runs");
        s.end_job();
        assert!(try_lock(), "released after the job");
        // An unknown token takes no lock.
        assert!(s.live_call(&[9; 32], now).unwrap().is_none());
        assert!(try_lock());
    }
}
