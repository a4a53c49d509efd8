//! Issue 12, points 3 to 5: what one caller (or many) can do with the practice tools.
//! Identification cannot be brute-forced (per-call cap, one bucket for withheld numbers, an
//! hourly budget over all callers with its metric), a `name_dob` hit answers the ref alone,
//! requests from unverified callers say so, bookings and requests are capped per call and per
//! number, a "new patient" who already exists goes to staff review, and premium-rate call-back
//! numbers are refused. Through `tools::handle_tool` / `admin::handle_admin` against a seeded demo
//! database, like `practice_tools.rs`.

mod practice_support;

use std::sync::atomic::Ordering;

use ignis::metrics::{Metrics, PRACTICE};
use ignis::practice::calls::{
    MAX_BOOKINGS_PER_CALL, MAX_EMERGENCIES_PER_CALL, MAX_FAILED_IDENTIFICATIONS,
    MAX_FAILED_IDENTIFICATIONS_PER_HOUR, MAX_IDENTIFY_CALLS_PER_CALL, MAX_REQUESTS_PER_CALL,
    MAX_REQUESTS_PER_NUMBER_PER_DAY, REFILE_WINDOW_SECS,
};
use ignis::practice::premium::parse_prefixes;
use ignis::practice::store::Store;
use ignis::practice::tools::ToolRequest;
use ignis::practice::{PracticeError, admin};
use jiff::{SignedDuration, Timestamp};
use practice_support::{ADMIN_TOKEN, Env, OTHER_PHONE, WEBER_PHONE, wed_morning};
use serde_json::Value;

const REQUESTS: &str = "/api/requests";
/// Maria Weber, demo patient with `WEBER_PHONE` on file.
const WEBER: (&str, &str) = ("Weber", "1972-08-22");

fn now() -> Timestamp {
    wed_morning()
}

fn request(e: &mut Env, t: &str, body: &str) -> Value {
    let (s, v) = e.post(t, REQUESTS, body, now());
    assert_eq!(s, 200, "{body}: {v}");
    v
}

/// The open requests as the staff see them, by ref.
fn staff_request(e: &mut Env, request_ref: &str) -> Value {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let req = ToolRequest {
        method: "GET",
        path: "/api/admin/requests",
        query: "",
        authorization: Some(auth.as_bytes()),
        ignis_call: None,
        body: b"",
    };
    let r = admin::handle_admin(e.store.as_mut(), &e.config, &e.secrets, &req, now());
    assert_eq!(r.status, 200);
    let all = r.body_json();
    all["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ref_code"] == request_ref)
        .cloned()
        .unwrap_or_else(|| panic!("{request_ref} not in {all}"))
}

fn fail_identify(e: &mut Env, t: &str) -> Value {
    e.identify(t, "Weber", None, "1980-01-01", now())
}

/// A connection to `e`'s database with trigger `refuse_state`, which fails every save of a
/// call's state for which `when` (SQL over `NEW`) holds, as a full disk would.
fn refuse_state_saves(e: &Env, when: &str) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(e.dir.join("ignis.db")).unwrap();
    db.execute_batch(&format!(
        "CREATE TRIGGER refuse_state BEFORE UPDATE OF state_json ON call WHEN {when} \
         BEGIN SELECT RAISE(FAIL, 'disk full'); END;"
    ))
    .unwrap();
    db
}

/// A retried request or emergency is answered with the first's reference even when the call
/// state that remembers it was not saved after the first filing: the stored row knows it too,
/// and the staff get one request and one emergency, not two of each.
#[test]
fn a_retry_finds_its_first_filing_when_the_call_state_was_not_saved() {
    let mut e = Env::new("lim-refile-unsaved", now());
    let t = e.call("CArefile", OTHER_PHONE, now());
    let db = refuse_state_saves(&e, "1");
    let body = r#"{"category":"message","caller":{"family_name":"Fremd"},"note":"Bitte Rückruf"}"#;
    let emergency = r#"{"severity":"life_threatening","keywords":"Brustschmerzen"}"#;
    let urgent = r#"{"category":"urgent_callback","caller":{"family_name":"Fremd"},"details":{"text":"starke Schmerzen"}}"#;
    // Filed, and answered, though the call state could not be saved.
    let first = request(&mut e, &t, body);
    let first_u = request(&mut e, &t, urgent);
    assert_eq!(first_u["queue_position"], 1, "{first_u}");
    let (s, first_e) = e.post(&t, "/api/emergencies", emergency, now());
    assert_eq!(s, 200, "{first_e}");
    let state: String = db
        .query_row(
            "SELECT state_json FROM call WHERE call_sid = 'CArefile'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        !state.contains("Bitte"),
        "the state kept no filing: {state}"
    );
    assert!(
        !state.contains("\"reference\""),
        "the state kept no filing: {state}"
    );
    db.execute_batch("DROP TRIGGER refuse_state;").unwrap();
    // A minute later, so that the restored entry's time can be told from the first filing's.
    let retry_at = now() + SignedDuration::from_secs(60);
    let (s, again) = e.post(&t, REQUESTS, body, retry_at);
    assert_eq!(s, 200, "{again}");
    assert_eq!(
        (&again["request_ref"], &again["repeated"]),
        (&first["request_ref"], &true.into()),
        "{again}"
    );
    let (_, again_e) = e.post(&t, "/api/emergencies", emergency, now());
    assert_eq!(again_e["event_ref"], first_e["event_ref"], "{again_e}");
    // The urgent request's retry keeps its place in the queue, and the call state now counts
    // both requests against the per-call cap.
    let again_u = request(&mut e, &t, urgent);
    assert_eq!(
        (&again_u["request_ref"], &again_u["queue_position"]),
        (&first_u["request_ref"], &first_u["queue_position"]),
        "{again_u}"
    );
    let state: String = db
        .query_row(
            "SELECT state_json FROM call WHERE call_sid = 'CArefile'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(state.contains("\"requests\":2"), "{state}");
    let count = |table: &str| -> i64 {
        db.query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE call_sid = 'CArefile'"),
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!((count("request"), count("emergency_event")), (2, 1));
    // The restored entry keeps the first filing's time: past the window from it (though not
    // from the retry), the same input is a new request.
    let past = now() + SignedDuration::from_secs(REFILE_WINDOW_SECS + 1);
    let (_, third) = e.post(&t, REQUESTS, body, past);
    assert_ne!(third["request_ref"], first["request_ref"], "{third}");
}

// --- identification ------------------------------------------------------------------------------

/// A failed identification is answered only once it is counted: when the call state cannot be
/// saved, the caller hears "a problem", never `match: none` uncounted (a free guess).
#[test]
fn a_failed_identification_that_cannot_be_counted_is_not_answered() {
    let mut e = Env::new("lim-id-unsaved", now());
    let t = e.call("CA1", OTHER_PHONE, now());
    let db = refuse_state_saves(&e, "NEW.state_json LIKE '%\"failed_identifications\":1%'");
    let body = r#"{"family_name":"Weber","birth_date":"1980-01-01"}"#;
    let (s, v) = e.post(&t, "/api/patients/identify", body, now());
    assert_eq!(s, 500, "{v}");
    assert!(v.get("match").is_none(), "{v}");
    db.execute_batch("DROP TRIGGER refuse_state;").unwrap();
    assert_eq!(fail_identify(&mut e, &t)["attempts_left"], 2);
}

#[test]
fn identify_calls_are_capped_per_call_successes_included() {
    let mut e = Env::new("lim-id-cap", now());
    let t = e.call("CA1", WEBER_PHONE, now());
    for _ in 0..MAX_IDENTIFY_CALLS_PER_CALL {
        assert_eq!(
            e.identify(&t, WEBER.0, None, WEBER.1, now())["match"],
            "unique"
        );
    }
    let v = e.identify(&t, WEBER.0, None, WEBER.1, now());
    assert_eq!(
        (v["ok"].clone(), v["error"].clone()),
        (false.into(), "identify_limit".into())
    );
    // The cap is the call's: the next call from the number identifies again.
    let t2 = e.call("CA2", WEBER_PHONE, now());
    assert_eq!(
        e.identify(&t2, WEBER.0, None, WEBER.1, now())["match"],
        "unique"
    );
}

#[test]
fn withheld_numbers_share_one_strict_bucket() {
    let mut e = Env::new("lim-withheld", now());
    // Each call stays under its own lock (3), but all withheld callers draw on one bucket.
    for (sid, caller) in [("CA1", "anonymous"), ("CA2", ""), ("CA3", "restricted")] {
        let t = e.call(sid, caller, now());
        for _ in 0..MAX_FAILED_IDENTIFICATIONS - 1 {
            assert_eq!(fail_identify(&mut e, &t)["match"], "none");
        }
    }
    // A fourth withheld caller, with a fresh call and the right name and date, is refused.
    let t = e.call("CA4", "private", now());
    let v = e.identify(&t, WEBER.0, None, WEBER.1, now());
    assert_eq!(v["error"], "locked", "{v}");
    // A short "number" is withheld too.
    let t = e.call("CA5", "+1234", now());
    assert_eq!(
        e.identify(&t, WEBER.0, None, WEBER.1, now())["error"],
        "locked"
    );
    // A real number is not in that bucket.
    let t = e.call("CA6", OTHER_PHONE, now());
    assert_eq!(
        e.identify(&t, WEBER.0, None, WEBER.1, now())["match"],
        "unique"
    );
    // The bucket refills after its hour.
    let later = now() + SignedDuration::from_secs(3601);
    let t = e.call("CA7", "anonymous", later);
    assert_eq!(
        e.identify(&t, WEBER.0, None, WEBER.1, later)["match"],
        "unique"
    );
}

#[test]
fn a_global_budget_of_failures_pauses_identification_with_a_metric() {
    let mut e = Env::new("lim-global", now());
    let before = PRACTICE
        .identification_budget_refusals
        .load(Ordering::Relaxed);
    let failures_before = PRACTICE.identification_failures.load(Ordering::Relaxed);
    // Many numbers, each under its own limits, together spend the hourly budget.
    let mut spent = 0;
    let mut n = 0;
    while spent < MAX_FAILED_IDENTIFICATIONS_PER_HOUR {
        n += 1;
        let t = e.call(&format!("CA{n}"), &format!("+4915100000{n:03}"), now());
        for _ in 0..MAX_FAILED_IDENTIFICATIONS.min(MAX_FAILED_IDENTIFICATIONS_PER_HOUR - spent) {
            assert_eq!(fail_identify(&mut e, &t)["match"], "none");
            spent += 1;
        }
    }
    // Now even the real patient from her own number is refused, and it is counted.
    let t = e.call("CA-real", WEBER_PHONE, now());
    let v = e.identify(&t, WEBER.0, None, WEBER.1, now());
    assert_eq!(v["error"], "identification_paused", "{v}");
    assert!(
        PRACTICE
            .identification_budget_refusals
            .load(Ordering::Relaxed)
            > before
    );
    assert!(
        PRACTICE.identification_failures.load(Ordering::Relaxed)
            >= failures_before + u64::from(MAX_FAILED_IDENTIFICATIONS_PER_HOUR)
    );
    let text = Metrics::default().render(0);
    assert!(text.contains("# TYPE ignis_identification_budget_refusals_total counter\n"));
    assert!(text.contains("# TYPE ignis_identification_failures_total counter\n"));
    // An hour later the budget has refilled.
    let later = now() + SignedDuration::from_secs(3601);
    let t = e.call("CA-later", WEBER_PHONE, later);
    assert_eq!(
        e.identify(&t, WEBER.0, None, WEBER.1, later)["match"],
        "unique"
    );
}

#[test]
fn a_name_dob_hit_carries_only_the_ref() {
    let mut e = Env::new("lim-ref-only", now());
    let t = e.call("CA1", OTHER_PHONE, now());
    let v = e.identify(&t, WEBER.0, Some("Maria"), WEBER.1, now());
    assert_eq!(v["assurance"], "name_dob");
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "assurance",
            "attempts_left",
            "flags",
            "match",
            "ok",
            "patient_ref",
            "upcoming"
        ],
        "{v}"
    );
    assert_eq!(
        v["flags"],
        serde_json::json!({"appointments_readable": false})
    );
    assert_eq!(v["upcoming"], serde_json::json!([]));
    let text = v.to_string();
    assert!(!text.contains("Frau") && !text.contains("Maria"), "{text}");
    // With the number on file the full answer stays.
    let t = e.call("CA2", WEBER_PHONE, now());
    let v = e.identify(&t, WEBER.0, None, WEBER.1, now());
    assert_eq!(v["salutation"], "Frau Weber");
    assert_eq!(v["flags"]["known_patient"], true);
    assert_eq!(v["flags"]["card_read_this_quarter"], true);
}

// --- requests from callers who are not verified --------------------------------------------------

#[test]
fn unverified_requests_store_their_level_and_number_and_staff_see_them() {
    let mut e = Env::new("lim-unverified", now());
    // Someone who knows Maria Weber's name and birth date, calling from another number, asks for
    // a call-back on a number of their choosing: the practice calls the number on file instead.
    let t = e.call("CA1", OTHER_PHONE, now());
    let p = e.identify(&t, WEBER.0, None, WEBER.1, now())["patient_ref"].clone();
    let v = request(
        &mut e,
        &t,
        &format!(r#"{{"category":"callback","patient_ref":{p},"callback_number":"0301111111"}}"#),
    );
    let r = staff_request(&mut e, v["request_ref"].as_str().unwrap());
    assert_eq!(r["assurance"], "name_dob", "{r}");
    assert_eq!(r["caller_number"], OTHER_PHONE);
    assert_eq!(r["verified"], false);
    assert_eq!(r["callback_number"], WEBER_PHONE);

    // An unidentified caller: no level, the named number kept, marked unverified.
    let t = e.call("CA2", "anonymous", now());
    let v = request(
        &mut e,
        &t,
        r#"{"category":"callback","caller":{"family_name":"Fremd"},"callback_number":"0301111111"}"#,
    );
    let r = staff_request(&mut e, v["request_ref"].as_str().unwrap());
    assert_eq!(
        (&r["assurance"], &r["caller_number"], &r["verified"]),
        (&"none".into(), &"anonymous".into(), &false.into()),
        "{r}"
    );
    assert_eq!(r["callback_number"], "0301111111");

    // The patient herself, from her number: verified.
    let t = e.call("CA3", WEBER_PHONE, now());
    let p = e.identify(&t, WEBER.0, None, WEBER.1, now())["patient_ref"].clone();
    let v = request(
        &mut e,
        &t,
        &format!(r#"{{"category":"callback","patient_ref":{p}}}"#),
    );
    let r = staff_request(&mut e, v["request_ref"].as_str().unwrap());
    assert_eq!(
        (&r["assurance"], &r["verified"]),
        (&"name_dob_phone".into(), &true.into())
    );
}

// --- limits on what one caller can do ------------------------------------------------------------

fn book_next(e: &mut Env, t: &str, p: &Value) -> Value {
    let s = e.slots(t, "visit_type=kontrolle", now())["slots"][0]["slot_ref"].clone();
    e.book(
        t,
        &format!(
            r#"{{"slot_ref":{s},"patient_ref":{p},"visit_type":"kontrolle","reason_short":"Kontrolle"}}"#
        ),
        now(),
    )
}

#[test]
fn bookings_are_capped_per_call_and_per_number_per_day() {
    let mut e = Env::new("lim-bookings", now());
    for sid in ["CA1", "CA2"] {
        let t = e.call(sid, OTHER_PHONE, now());
        let p = e.identify(&t, "Müller", None, "1958-03-14", now())["patient_ref"].clone();
        for _ in 0..MAX_BOOKINGS_PER_CALL {
            assert_eq!(book_next(&mut e, &t, &p)["ok"], true);
        }
        assert_eq!(book_next(&mut e, &t, &p)["error"], "booking_limit");
    }
    // Two calls used the number's day (6): a third call from it books nothing.
    let t = e.call("CA3", OTHER_PHONE, now());
    let p = e.identify(&t, "Müller", None, "1958-03-14", now())["patient_ref"].clone();
    assert_eq!(book_next(&mut e, &t, &p)["error"], "booking_limit");
    // Another number is not affected.
    let t = e.call("CA4", WEBER_PHONE, now());
    let p = e.identify(&t, WEBER.0, None, WEBER.1, now())["patient_ref"].clone();
    assert_eq!(book_next(&mut e, &t, &p)["ok"], true);
}

#[test]
fn requests_are_capped_per_call_and_per_number_per_day() {
    let mut e = Env::new("lim-requests", now());
    // Each a different message: an identical one is a retry, answered with the first's
    // reference (tests/practice_tools.rs).
    let body = |k: u32| {
        format!(r#"{{"category":"message","caller":{{"family_name":"Fremd"}},"note":"Hallo {k}"}}"#)
    };
    let mut made = 0;
    let mut n = 0;
    while made < MAX_REQUESTS_PER_NUMBER_PER_DAY {
        n += 1;
        let t = e.call(&format!("CA{n}"), OTHER_PHONE, now());
        for _ in 0..MAX_REQUESTS_PER_CALL.min(MAX_REQUESTS_PER_NUMBER_PER_DAY - made) {
            assert_eq!(request(&mut e, &t, &body(made))["ok"], true);
            made += 1;
        }
        if made < MAX_REQUESTS_PER_NUMBER_PER_DAY {
            assert_eq!(request(&mut e, &t, &body(made))["error"], "request_limit");
        }
    }
    let t = e.call("CA-next", OTHER_PHONE, now());
    assert_eq!(request(&mut e, &t, &body(made))["error"], "request_limit");
    let body = body(0);
    let body = body.as_str();
    // The next day the number may leave requests again.
    let tomorrow = now() + SignedDuration::from_hours(25);
    let t = e.call("CA-tomorrow", OTHER_PHONE, tomorrow);
    let (s, v) = e.post(&t, REQUESTS, body, tomorrow);
    assert_eq!((s, v["ok"].clone()), (200, true.into()), "{v}");
}

/// One call records at most MAX_EMERGENCIES_PER_CALL emergency events, however it words them;
/// every report still gets the advice, past the cap with the call's last event.
#[test]
fn one_call_cannot_bury_the_staff_in_emergencies() {
    let mut e = Env::new("lim-emergencies", now());
    let t = e.call("CAemerg", OTHER_PHONE, now());
    let mut refs = Vec::new();
    for n in 0..MAX_EMERGENCIES_PER_CALL + 4 {
        let body = format!(r#"{{"severity":"urgent","keywords":"Schmerzen {n}"}}"#);
        let (s, v) = e.post(&t, "/api/emergencies", &body, now());
        assert_eq!(s, 200, "{v}");
        assert!(v["say"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
        refs.push(v["event_ref"].as_str().unwrap().to_owned());
    }
    let cap = MAX_EMERGENCIES_PER_CALL as usize;
    assert!(refs[cap..].iter().all(|r| *r == refs[cap - 1]), "{refs:?}");
    // The first life-threatening report is recorded even past the cap; a second one is not.
    let life = |what: &str| format!(r#"{{"severity":"life_threatening","keywords":"{what}"}}"#);
    let (_, v) = e.post(&t, "/api/emergencies", &life("Atemnot"), now());
    assert!(v["say"].as_str().unwrap().contains("112"), "{v}");
    assert_ne!(v["event_ref"], refs[cap - 1].as_str(), "{v}");
    let (_, w) = e.post(&t, "/api/emergencies", &life("Brustschmerzen"), now());
    assert!(w["say"].as_str().unwrap().contains("112"), "{w}");
    assert_eq!(w["event_ref"], v["event_ref"], "{w}");
    let db = rusqlite::Connection::open(e.dir.join("ignis.db")).unwrap();
    let rows: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM emergency_event WHERE call_sid = 'CAemerg'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, i64::from(MAX_EMERGENCIES_PER_CALL) + 1);
}

/// The new patient the duplicate tests race for: nobody in the demo data.
const NEW: (&str, &str, &str) = ("Neumann", "Nina", "2000-02-02");
const NEW_JSON: &str = r#"{"family_name":"Neumann","given_name":"Nina","birth_date":"2000-02-02"}"#;

/// Call `t` found no one for [`NEW`], then another call registered her as a new patient (two
/// relatives calling at once): `t`'s new-patient booking now meets a stored record.
fn registered_meanwhile(e: &mut Env, t: &str) {
    assert_eq!(
        e.identify(t, NEW.0, Some(NEW.1), NEW.2, now())["match"],
        "none"
    );
    let other = e.call("CA-other", WEBER_PHONE, now());
    assert_eq!(
        e.identify(&other, NEW.0, None, NEW.2, now())["match"],
        "none"
    );
    let s = e.slots(&other, "visit_type=akut", now())["slots"][1]["slot_ref"].clone();
    let body = format!(r#"{{"slot_ref":{s},"new_patient":{NEW_JSON},"visit_type":"akut"}}"#);
    assert_eq!(e.book(&other, &body, now())["ok"], true);
}

/// A new-patient booking needs a name identification found no one for, in this call: else
/// booked / staff review would tell whether someone is a patient, outside the identification
/// budget (docs/practice-tools.md §6.3).
#[test]
fn a_new_patient_booking_never_tells_whether_someone_is_a_patient() {
    let mut e = Env::new("lim-new-oracle", now());
    let t = e.call("CA1", OTHER_PHONE, now());
    let s = e.slots(&t, "visit_type=akut", now())["slots"][0]["slot_ref"].clone();
    let book = |family: &str, given: &str, born: &str| {
        format!(
            r#"{{"slot_ref":{s},"new_patient":{{"family_name":"{family}","given_name":"{given}","birth_date":"{born}"}},"visit_type":"akut"}}"#
        )
    };
    // A patient and nobody: the same answer, and nothing filed or booked.
    for (family, given, born) in [("Weber", "Maria", WEBER.1), ("Weber", "Mara", "1972-08-23")] {
        let v = e.book(&t, &book(family, given, born), now());
        assert_eq!(v["error"], "not_identified", "{v}");
    }
    assert_eq!(e.store.open_requests().unwrap().len(), 0);
    // Found no one with the given name said: that name books; another given name does not.
    assert_eq!(
        e.identify(&t, NEW.0, Some(NEW.1), NEW.2, now())["match"],
        "none"
    );
    let v = e.book(&t, &book(NEW.0, "Nora", NEW.2), now());
    assert_eq!(v["error"], "not_identified", "{v}");
    let v = e.book(&t, &book("NEUMANN", NEW.1, NEW.2), now());
    assert_eq!(v["ok"], true, "{v}");
    // Booked again as a new patient (not by the patient_ref the booking answered): a second
    // appointment for her, not a staff review of a duplicate.
    let s2 = e.slots(&t, "visit_type=akut", now())["slots"][2]["slot_ref"].clone();
    let again = format!(r#"{{"slot_ref":{s2},"new_patient":{NEW_JSON},"visit_type":"akut"}}"#);
    let w = e.book(&t, &again, now());
    assert_eq!(w["ok"], true, "{w}");
    assert_eq!(w["patient_ref"], v["patient_ref"], "{w}");
    assert_ne!(w["appointment_ref"], v["appointment_ref"], "{w}");
    assert_eq!(e.store.patients_by_birth_date(NEW.2).unwrap().len(), 1);
    assert_eq!(e.store.open_requests().unwrap().len(), 0);
}

/// A retried new-patient booking spelt another way ("Meier, Stephan" for "Meyer, Stefan", the
/// same under the name comparison) is the same booking, not a second one in another slot.
#[test]
fn a_new_patient_booking_retried_in_another_spelling_is_the_same_booking() {
    let mut e = Env::new("lim-new-spelling", now());
    let t = e.call("CA1", OTHER_PHONE, now());
    assert_eq!(
        e.identify(&t, "Meyer", Some("Stefan"), "1999-09-09", now())["match"],
        "none"
    );
    let s = e.slots(&t, "visit_type=akut", now())["slots"][0]["slot_ref"].clone();
    let book = |family: &str, given: &str| {
        format!(
            r#"{{"slot_ref":{s},"new_patient":{{"family_name":"{family}","given_name":"{given}","birth_date":"1999-09-09"}},"visit_type":"akut"}}"#
        )
    };
    let first = e.book(&t, &book("Meyer", "Stefan"), now());
    assert_eq!(first["ok"], true, "{first}");
    let again = e.book(&t, &book("Meier", "Stephan"), now());
    assert_eq!(again["repeated"], true, "{again}");
    assert_eq!(
        again["appointment_ref"], first["appointment_ref"],
        "{again}"
    );
}

/// A request the staff judge below phone assurance promises a call-back: without a number to
/// call (withheld caller, none on file) the agent is asked for one, nothing is filed.
#[test]
fn a_staff_judged_request_needs_a_number_to_call_back() {
    let mut e = Env::new("lim-judge-number", now());
    let t = e.call("CA1", "anonymous", now());
    assert_eq!(e.identify(&t, NEW.0, None, NEW.2, now())["match"], "none");
    let s = e.slots(&t, "visit_type=akut", now())["slots"][0]["slot_ref"].clone();
    let booked = e.book(
        &t,
        &format!(r#"{{"slot_ref":{s},"new_patient":{NEW_JSON},"visit_type":"akut"}}"#),
        now(),
    );
    assert_eq!(booked["ok"], true, "{booked}");
    let refill = format!(
        r#"{{"category":"prescription_refill","patient_ref":{},"details":{{"medications":[{{"name":"Ramipril"}}]}}}}"#,
        booked["patient_ref"]
    );
    let (_, v) = e.post(&t, "/api/requests", &refill, now());
    assert_eq!(v["error"], "callback_number_needed", "{v}");
    // A document the staff prepare and "get back about", for a caller nobody can reach.
    let document = r#"{"category":"document","caller":{"family_name":"Fremd","birth_date":"1990-01-01"},"note":"Bescheinigung"}"#;
    let (_, v) = e.post(&t, "/api/requests", document, now());
    assert_eq!(v["error"], "callback_number_needed", "{v}");
    assert_eq!(e.store.open_requests().unwrap().len(), 0);
}

/// From a withheld number the review could not be called back: the agent is asked for a
/// number first, and nothing is filed (agent review, point M5).
#[test]
fn a_duplicate_new_patient_from_a_withheld_number_needs_a_call_back_number() {
    let mut e = Env::new("lim-duplicate-anon", now());
    let t = e.call("CA1", "anonymous", now());
    let s = e.slots(&t, "visit_type=akut", now())["slots"][0]["slot_ref"].clone();
    registered_meanwhile(&mut e, &t);
    let np = NEW_JSON;
    let (_, v) = e.post(
        &t,
        "/api/appointments",
        &format!(r#"{{"slot_ref":{s},"new_patient":{np},"visit_type":"akut"}}"#),
        now(),
    );
    assert_eq!(v["error"], "callback_number_needed", "{v}");
    assert_eq!(
        e.store.open_requests().unwrap().len(),
        0,
        "a review nobody can call back was filed"
    );
}

#[test]
fn a_new_patient_who_already_exists_goes_to_staff_review() {
    let mut e = Env::new("lim-duplicate", now());
    let t = e.call("CA1", OTHER_PHONE, now());
    let s = e.slots(&t, "visit_type=akut", now())["slots"][0]["slot_ref"].clone();
    registered_meanwhile(&mut e, &t);
    let before = e.store.patients_by_birth_date(NEW.2).unwrap().len();
    let np = r#"{"family_name":"NEUMANN","given_name":"Nina","birth_date":"2000-02-02","insurance":"gkv"}"#;
    let v = e.book(
        &t,
        &format!(r#"{{"slot_ref":{s},"new_patient":{np},"visit_type":"akut"}}"#),
        now(),
    );
    assert_eq!(v["error"], "staff_review", "{v}");
    let review = v["request_ref"].as_str().unwrap().to_owned();
    // No second record: she still identifies uniquely.
    assert_eq!(e.store.patients_by_birth_date(NEW.2).unwrap().len(), before);
    let t2 = e.call("CA2", WEBER_PHONE, now());
    assert_eq!(
        e.identify(&t2, NEW.0, None, NEW.2, now())["match"],
        "unique"
    );
    // The staff see the review with who called.
    let r = staff_request(&mut e, &review);
    assert_eq!(r["caller"]["family_name"], "NEUMANN", "{r}");
    assert_eq!(r["caller_number"], OTHER_PHONE);
    assert!(
        r["note"].as_str().unwrap().contains("vorhandenen Eintrag"),
        "{r}"
    );
    // A retry, however the name is spelt, gets the same review: the staff review the caller
    // once, and the call's request count is not spent on it.
    let dup = format!(
        r#"{{"slot_ref":{s},"new_patient":{{"family_name":"neumann","given_name":"Nina","birth_date":"2000-02-02"}},"visit_type":"akut"}}"#
    );
    for _ in 0..MAX_REQUESTS_PER_CALL {
        let v = e.book(&t, &dup, now());
        assert_eq!(v["error"], "staff_review", "{v}");
        assert_eq!(v["request_ref"], review.as_str(), "{v}");
    }
    assert_eq!(e.store.open_requests().unwrap().len(), 1);
    // A genuinely new patient still books.
    assert_eq!(
        e.identify(&t, "Neu", Some("Nils"), "2001-03-03", now())["match"],
        "none"
    );
    let np = r#"{"family_name":"Neu","given_name":"Nils","birth_date":"2001-03-03"}"#;
    let v = e.book(
        &t,
        &format!(r#"{{"slot_ref":{s},"new_patient":{np},"visit_type":"akut"}}"#),
        now(),
    );
    assert_eq!(v["ok"], true, "{v}");
}

/// A duplicate-patient review filed while the call state cannot be saved: the first answer is
/// an error (the state's change is lost), and the agent's retry, found in the rows, gets the
/// review's reference even while saves still fail (restoring it into the state is best effort).
#[test]
fn a_duplicate_review_retry_is_answered_while_the_call_state_cannot_be_saved() {
    let mut e = Env::new("lim-duplicate-unsaved", now());
    let t = e.call("CA1", OTHER_PHONE, now());
    let s = e.slots(&t, "visit_type=akut", now())["slots"][0]["slot_ref"].clone();
    registered_meanwhile(&mut e, &t);
    let _db = refuse_state_saves(&e, "1");
    let np = NEW_JSON;
    let body = format!(r#"{{"slot_ref":{s},"new_patient":{np},"visit_type":"akut"}}"#);
    let (status, first) = e.post(&t, "/api/appointments", &body, now());
    assert_eq!(
        (status, &first["error"]),
        (500, &"internal".into()),
        "{first}"
    );
    for _ in 0..2 {
        let again = e.book(&t, &body, now());
        assert_eq!(again["error"], "staff_review", "{again}");
        assert_eq!(again["request_ref"], "R-1001", "{again}");
    }
    assert_eq!(e.store.open_requests().unwrap().len(), 1);
}

#[test]
fn premium_rate_call_back_numbers_are_refused() {
    let mut e = Env::new("lim-premium", now());
    let t = e.call("CA1", "anonymous", now());
    for number in [
        "0900 1234567",
        "+49 900 1234567",
        "0049 137 1234567",
        "01381234567",
        "+881 612345678",
        "+882 1234567",
        "+883 1234567",
        "+979 1234567",
    ] {
        let body = format!(
            r#"{{"category":"callback","caller":{{"family_name":"Fremd"}},"callback_number":"{number}"}}"#
        );
        assert_eq!(
            request(&mut e, &t, &body)["error"],
            "premium_rate_number",
            "{number}"
        );
    }
    let ok = r#"{"category":"callback","caller":{"family_name":"Fremd"},"callback_number":"030 1234567"}"#;
    assert_eq!(request(&mut e, &t, ok)["ok"], true);
    // The list is configurable (PREMIUM_RATE_PREFIXES).
    e.config.premium_rate_prefixes = parse_prefixes("+4930").unwrap();
    assert_eq!(request(&mut e, &t, ok)["error"], "premium_rate_number");
    let vars = ignis::config::PracticeVars::parse(|k| {
        (k == "PREMIUM_RATE_PREFIXES").then(|| "0900, +4930".to_owned())
    })
    .unwrap();
    assert_eq!(
        vars.premium_rate_prefixes,
        Some(vec!["49900".to_owned(), "4930".to_owned()])
    );
    let bad = ignis::config::PracticeVars::parse(|k| {
        (k == "PREMIUM_RATE_PREFIXES").then(|| "0900,premium".to_owned())
    });
    assert!(matches!(
        bad,
        Err(PracticeError::Invalid("PREMIUM_RATE_PREFIXES"))
    ));
}

#[test]
fn the_request_columns_migrate_onto_an_existing_database() {
    use ignis::practice::store::{MIGRATIONS, SqliteStore};
    let dir = practice_support::temp_dir("lim-migrate");
    let path = dir.join("ignis.db");
    {
        // A database as the previous release left it: schema 1 and an open request.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version (version) VALUES (1);
             INSERT INTO request (ref_code, category, details_json, urgency, created_at)
             VALUES ('R-1001', 'callback', '{}', 'routine', 0);",
        )
        .unwrap();
    }
    let mut s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
    let open = s.open_requests().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (&open[0].assurance, &open[0].caller_number, open[0].verified),
        (&None, &None, false)
    );
    drop(s);
    // Reopening applies nothing twice.
    assert!(SqliteStore::open(&path).is_ok());
}

#[test]
fn the_global_budget_is_configurable() {
    let vars = |v: &'static str| {
        ignis::config::PracticeVars::parse(move |k| {
            (k == "IDENTIFICATION_FAILURES_PER_HOUR").then(|| v.to_owned())
        })
    };
    assert_eq!(
        vars("50").unwrap().identification_failures_per_hour,
        Some(50)
    );
    for bad in ["0", "-1", "many", "10001"] {
        assert!(
            matches!(
                vars(bad),
                Err(PracticeError::Invalid("IDENTIFICATION_FAILURES_PER_HOUR"))
            ),
            "{bad}"
        );
    }
    let mut e = Env::new("lim-budget-config", now());
    e.config.identification_failures_per_hour = 2;
    let t = e.call("CA1", OTHER_PHONE, now());
    for _ in 0..2 {
        assert_eq!(fail_identify(&mut e, &t)["match"], "none");
    }
    let t = e.call("CA2", WEBER_PHONE, now());
    let v = e.identify(&t, WEBER.0, None, WEBER.1, now());
    assert_eq!(v["error"], "identification_paused", "{v}");
}
