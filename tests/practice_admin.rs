//! The `Practice` facade as the lead wires it (writer thread, callbacks, start/end call) and the
//! staff admin API.

mod practice_support;

use std::time::Duration;

use crossbeam_channel::{Receiver, bounded};
use ignis::practice::calls::CallInfo;
use ignis::practice::config::PracticeConfig;
use ignis::practice::store::{CallEnd, CallOutcome, StoreError};
use ignis::practice::tools::{ToolReply, ToolRequest};
use ignis::practice::{Practice, PracticeError, PracticeSettings};
use jiff::Timestamp;
use practice_support::{ADMIN_TOKEN, TOOLS_TOKEN, WEBER_PHONE, temp_dir, wed_morning};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn settings(dir: &std::path::Path) -> PracticeSettings {
    let db = dir.join("ignis.db").to_string_lossy().into_owned();
    PracticeSettings::from_lookup(|k| match k {
        "TOOLS_TOKEN" => Some(TOOLS_TOKEN.into()),
        "ADMIN_TOKEN" => Some(ADMIN_TOKEN.into()),
        "IGNIS_DB" => Some(db.clone()),
        _ => None,
    })
    .unwrap()
}

struct Req<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    auth: Option<String>,
    call: Option<&'a str>,
    body: &'a str,
}

fn send(p: &Practice, admin: bool, r: Req<'_>, now: Timestamp) -> (u16, Value) {
    let req = ToolRequest {
        method: r.method,
        path: r.path,
        query: r.query,
        authorization: r.auth.as_deref().map(str::as_bytes),
        ignis_call: r.call.map(str::as_bytes),
        body: r.body.as_bytes(),
    };
    let (tx, rx) = bounded::<ToolReply>(1);
    let reply = move |reply: ToolReply| {
        let _ = tx.send(reply);
    };
    if admin {
        p.handle_admin(req, now, reply);
    } else {
        p.handle_tool(req, now, reply);
    }
    let r = rx.recv_timeout(WAIT).expect("reply callback was called");
    (r.status, r.body_json())
}

fn tool(
    p: &Practice,
    token: &str,
    method: &str,
    path: &str,
    query: &str,
    body: &str,
) -> (u16, Value) {
    let auth = Some(format!("Bearer {TOOLS_TOKEN}"));
    send(
        p,
        false,
        Req {
            method,
            path,
            query,
            auth,
            call: Some(token),
            body,
        },
        wed_morning(),
    )
}

/// The status of a slot search (a read-only tool) for `call` with `secret` as the bearer.
fn slots_status(p: &Practice, secret: &str, call: &str, now: Timestamp) -> u16 {
    let req = Req {
        method: "GET",
        path: "/api/appointments/slots",
        query: "visit_type=akut",
        auth: Some(format!("Bearer {secret}")),
        call: Some(call),
        body: "",
    };
    send(p, false, req, now).0
}

fn admin(p: &Practice, method: &str, path: &str, query: &str) -> (u16, Value) {
    let auth = Some(format!("Bearer {ADMIN_TOKEN}"));
    send(
        p,
        true,
        Req {
            method,
            path,
            query,
            auth,
            call: None,
            body: "",
        },
        wed_morning(),
    )
}

fn start(p: &Practice, sid: &str, caller: &str) -> String {
    let (tx, rx): (_, Receiver<_>) = bounded(1);
    let info = CallInfo {
        call_sid: sid,
        caller_number: caller,
        called_number: "+4930123456",
    };
    let mut entropy = [0u8; 16];
    entropy[..sid.len().min(16)].copy_from_slice(&sid.as_bytes()[..sid.len().min(16)]);
    let vars = p
        .start_call(info, entropy, wed_morning(), move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
    rx.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(vars.len(), 11);
    vars["secret__ignis_call"].as_str().unwrap().to_string()
}

#[test]
fn settings_come_from_the_environment() {
    let err = PracticeSettings::from_lookup(|_| None).unwrap_err();
    assert!(matches!(err, PracticeError::Secret("TOOLS_TOKEN")));
    let err = PracticeSettings::from_lookup(|k| match k {
        "TOOLS_TOKEN" => Some(TOOLS_TOKEN.into()),
        "ADMIN_TOKEN" => Some("short".into()),
        _ => None,
    })
    .unwrap_err();
    assert!(matches!(err, PracticeError::Secret("ADMIN_TOKEN")));
    // Long enough, but not worth 32 random bytes.
    let err = PracticeSettings::from_lookup(|k| match k {
        "TOOLS_TOKEN" => Some(TOOLS_TOKEN.into()),
        "ADMIN_TOKEN" => Some("admin-secret-for-tests-4567".into()),
        _ => None,
    })
    .unwrap_err();
    assert!(matches!(err, PracticeError::WeakSecret("ADMIN_TOKEN", _)));
    assert!(err.to_string().starts_with("ADMIN_TOKEN "), "{err}");
    let s = PracticeSettings::from_lookup(|k| (k == "TOOLS_TOKEN").then(|| TOOLS_TOKEN.into()))
        .unwrap();
    assert_eq!(s.db_path, std::path::PathBuf::from("./ignis.db"));
    assert!(s.config_path.is_none() && s.demo_patients && s.admin_token.is_none());
    assert!(
        !format!("{s:?}").contains(TOOLS_TOKEN),
        "secrets stay out of Debug"
    );
}

/// `start_call` returns before its commit; a tool request made at once, without waiting for
/// `done`, is queued behind the registration and finds the call.
#[test]
fn a_tool_request_right_after_start_call_finds_the_call() {
    let dir = temp_dir("start-order");
    let (p, thread) =
        Practice::open(&settings(&dir), PracticeConfig::demo(), wed_morning()).unwrap();
    for i in 0..20 {
        let sid = format!("CAorder{i:02}");
        let info = CallInfo {
            call_sid: &sid,
            caller_number: WEBER_PHONE,
            called_number: "+4930123456",
        };
        let mut entropy = [7u8; 16];
        entropy[0] = i;
        let vars = p
            .start_call(info, entropy, wed_morning(), |r| r.unwrap())
            .unwrap();
        let token = vars["secret__ignis_call"].as_str().unwrap();
        let (s, v) = tool(
            &p,
            token,
            "POST",
            "/api/patients/identify",
            "",
            r#"{"family_name":"Weber","birth_date":"1972-08-22"}"#,
        );
        assert_eq!(
            (s, v["match"].as_str()),
            (200, Some("unique")),
            "call {i}: {v}"
        );
    }
    drop(p);
    thread.join().unwrap();
}

fn adopt(p: &Practice, sid: &str, entropy: [u8; 16]) -> (String, Result<(), StoreError>) {
    let (tx, rx): (_, Receiver<_>) = bounded(1);
    let info = CallInfo {
        call_sid: sid,
        caller_number: WEBER_PHONE,
        called_number: "+4930123456",
    };
    let vars = p
        .adopt_call(info, entropy, wed_morning(), move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
    assert_eq!(vars.len(), 11);
    let token = vars["secret__ignis_call"].as_str().unwrap().to_string();
    (token, rx.recv_timeout(WAIT).unwrap())
}

/// A stream that takes a call over from another replica (docs/replicas.md §4.2): the old token
/// stops working, the new one keeps the call's refs; a call with no row yet gets one; an ended
/// call is not revived.
#[test]
fn adopt_call_takes_the_token_over() {
    let dir = temp_dir("adopt");
    let (p, thread) =
        Practice::open(&settings(&dir), PracticeConfig::demo(), wed_morning()).unwrap();
    let old = start(&p, "CAadopt", WEBER_PHONE);
    let (s, v) = tool(
        &p,
        &old,
        "POST",
        "/api/patients/identify",
        "",
        r#"{"family_name":"Weber","birth_date":"1972-08-22"}"#,
    );
    assert_eq!((s, v["match"].as_str()), (200, Some("unique")), "{v}");
    let (new, done) = adopt(&p, "CAadopt", [0xad; 16]);
    done.unwrap();
    assert_ne!(new, old);
    assert_eq!(
        slots_status(&p, TOOLS_TOKEN, &old, wed_morning()),
        403,
        "the old token is retired"
    );
    assert_eq!(slots_status(&p, TOOLS_TOKEN, &new, wed_morning()), 200);
    // A call whose registration never reached the store gets its row.
    let (fresh, done) = adopt(&p, "CAnorow", [0xae; 16]);
    done.unwrap();
    assert_eq!(slots_status(&p, TOOLS_TOKEN, &fresh, wed_morning()), 200);
    // An ended call stays ended: its new token opens nothing.
    let ended = start(&p, "CAended", WEBER_PHONE);
    let (tx, rx): (_, Receiver<()>) = bounded(1);
    p.store()
        .submit(move |st| {
            st.end_call("CAended", wed_morning().as_second()).unwrap();
            let _ = tx.send(());
        })
        .unwrap();
    rx.recv_timeout(WAIT).unwrap();
    let (late, done) = adopt(&p, "CAended", [0xaf; 16]);
    assert!(matches!(done, Err(StoreError::CallExists)), "{done:?}");
    assert_eq!(slots_status(&p, TOOLS_TOKEN, &late, wed_morning()), 403);
    assert_eq!(
        slots_status(&p, TOOLS_TOKEN, &ended, wed_morning()),
        200,
        "grace period"
    );
    drop(p);
    thread.join().unwrap();
}

#[test]
fn a_call_books_through_the_facade_and_staff_see_it() {
    let dir = temp_dir("facade");
    let (p, thread) =
        Practice::open(&settings(&dir), PracticeConfig::demo(), wed_morning()).unwrap();
    let t = start(&p, "CAfacade", WEBER_PHONE);
    let (req, em) = book_and_leave_requests(&p, &t);
    staff_see_the_booking(&p, &req, &em);

    // End of call: tools die after the grace period.
    let end = CallEnd {
        outcome: CallOutcome::Completed,
        first_audio_ms: Some(850),
    };
    p.end_call("CAfacade", end, wed_morning());
    let later = Timestamp::from_second(wed_morning().as_second() + 3600).unwrap();
    assert_eq!(slots_status(&p, TOOLS_TOKEN, &t, later), 403);

    // Retention through the facade.
    let (tx, rx) = bounded(1);
    p.run_retention(
        Timestamp::from_second(wed_morning().as_second() + 2 * 86_400).unwrap(),
        move |r| {
            let _ = tx.send(r);
        },
    );
    assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap().calls, 1);

    drop(p);
    thread.join().unwrap();
    // Reopening does not seed twice.
    let (p, thread) =
        Practice::open(&settings(&dir), PracticeConfig::demo(), wed_morning()).unwrap();
    let n = p
        .store()
        .call_blocking(|s| s.patients_by_birth_date("1972-08-22").unwrap().len())
        .unwrap();
    assert_eq!(n, 1);
    drop(p);
    thread.join().unwrap();
}

/// Through the tools of a live call: identify Weber, book the first same-day slot, leave an
/// urgent callback and a message, report an emergency. Returns the callback's and the
/// emergency's replies.
fn book_and_leave_requests(p: &Practice, t: &str) -> (Value, Value) {
    let (s, id) = tool(
        p,
        t,
        "POST",
        "/api/patients/identify",
        "",
        r#"{"family_name":"Weber","birth_date":"1972-08-22"}"#,
    );
    assert_eq!((s, id["match"].as_str()), (200, Some("unique")));
    let (_, slots) = tool(
        p,
        t,
        "GET",
        "/api/appointments/slots",
        "visit_type=akut&urgency=same_day",
        "",
    );
    let slot = slots["slots"][0]["slot_ref"].as_str().unwrap().to_string();
    let body = format!(
        r#"{{"slot_ref":"{slot}","patient_ref":"P1","visit_type":"akut","reason_short":"Halsschmerzen"}}"#
    );
    let (_, booked) = tool(p, t, "POST", "/api/appointments", "", &body);
    assert_eq!(booked["ok"], true, "{booked}");
    let (_, req) = tool(
        p,
        t,
        "POST",
        "/api/requests",
        "",
        r#"{"category":"urgent_callback","patient_ref":"P1"}"#,
    );
    let (_, _) = tool(
        p,
        t,
        "POST",
        "/api/requests",
        "",
        r#"{"category":"message","patient_ref":"P1","note":"Danke"}"#,
    );
    let (_, em) = tool(
        p,
        t,
        "POST",
        "/api/emergencies",
        "",
        r#"{"severity":"urgent","keywords":"Fieber"}"#,
    );
    assert_eq!(em["advice"], "transfer");
    (req, em)
}

/// What the staff see through the admin API after [`book_and_leave_requests`].
fn staff_see_the_booking(p: &Practice, req: &Value, em: &Value) {
    // Staff: today's appointments include the booking, with the patient's name.
    let (s, day) = admin(p, "GET", "/api/admin/appointments", "");
    assert_eq!(s, 200);
    let list = day["appointments"].as_array().unwrap();
    assert!(
        list.iter()
            .any(|a| a["patient"] == "Maria Weber" && a["reason_short"] == "Halsschmerzen"),
        "{day}"
    );
    let (_, other) = admin(p, "GET", "/api/admin/appointments", "date=2026-11-24");
    assert_eq!(other["appointments"], serde_json::json!([]));
    // Open requests: urgent first.
    let (_, reqs) = admin(p, "GET", "/api/admin/requests", "");
    let reqs = reqs["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0]["urgency"], "urgent");
    assert_eq!(reqs[0]["ref_code"], req["request_ref"]);
    // Emergencies.
    let (_, ems) = admin(p, "GET", "/api/admin/emergencies", "days=1");
    assert_eq!(ems["emergencies"][0]["event_ref"], em["event_ref"]);
    // Mark done: once.
    let done = format!(
        "/api/admin/requests/{}/done",
        req["request_ref"].as_str().unwrap()
    );
    assert_eq!(admin(p, "POST", &done, "").0, 200);
    assert_eq!(admin(p, "POST", &done, "").0, 404);
    assert_eq!(
        admin(p, "GET", "/api/admin/requests", "").1["requests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn admin_api_needs_the_admin_token() {
    let dir = temp_dir("admin-auth");
    let (p, _thread) =
        Practice::open(&settings(&dir), PracticeConfig::demo(), wed_morning()).unwrap();
    let req = |auth: Option<String>, method, path| {
        send(
            &p,
            true,
            Req {
                method,
                path,
                query: "",
                auth,
                call: None,
                body: "",
            },
            wed_morning(),
        )
        .0
    };
    assert_eq!(req(None, "GET", "/api/admin/requests"), 401);
    assert_eq!(
        req(
            Some(format!("Bearer {TOOLS_TOKEN}")),
            "GET",
            "/api/admin/requests"
        ),
        403
    );
    assert_eq!(
        req(
            Some(format!("Bearer {ADMIN_TOKEN}")),
            "POST",
            "/api/admin/requests"
        ),
        405
    );
    assert_eq!(
        req(
            Some(format!("Bearer {ADMIN_TOKEN}")),
            "GET",
            "/api/admin/nothing"
        ),
        404
    );
    let bad = send(
        &p,
        true,
        Req {
            method: "GET",
            path: "/api/admin/appointments",
            query: "date=tomorrow",
            auth: Some(format!("Bearer {ADMIN_TOKEN}")),
            call: None,
            body: "",
        },
        wed_morning(),
    );
    assert_eq!(bad.0, 422);
    // The tools secret never opens the admin API, and the admin secret never opens the tools.
    let t = start(&p, "CAadm", WEBER_PHONE);
    assert_eq!(slots_status(&p, ADMIN_TOKEN, &t, wed_morning()), 403);
    // Without ADMIN_TOKEN the admin API is off.
    let mut s = settings(&dir);
    s.admin_token = None;
    drop(p);
    let (p2, _t2) = Practice::open(&s, PracticeConfig::demo(), wed_morning()).unwrap();
    let r = send(
        &p2,
        true,
        Req {
            method: "GET",
            path: "/api/admin/requests",
            query: "",
            auth: Some(format!("Bearer {ADMIN_TOKEN}")),
            call: None,
            body: "",
        },
        wed_morning(),
    );
    assert_eq!(
        r,
        (
            403,
            serde_json::json!({"ok": false, "error": "admin_disabled"})
        )
    );
}

/// No audit row, no patient data: an admin request whose audit row cannot be written (a full
/// disk, a statement timeout) is answered 503 without the data.
#[test]
fn an_admin_request_whose_audit_row_cannot_be_written_shows_nothing() {
    let dir = temp_dir("admin-audit-fails");
    let (p, thread) =
        Practice::open(&settings(&dir), PracticeConfig::demo(), wed_morning()).unwrap();
    assert_eq!(admin(&p, "GET", "/api/admin/requests", "").0, 200);
    let db = rusqlite::Connection::open(dir.join("ignis.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_admin BEFORE INSERT ON tool_audit WHEN NEW.who IS NOT NULL \
         BEGIN SELECT RAISE(FAIL, 'disk full'); END;",
    )
    .unwrap();
    let (status, body) = admin(&p, "GET", "/api/admin/requests", "");
    assert_eq!(status, 503);
    assert!(body.get("requests").is_none(), "{body}");
    db.execute_batch("DROP TRIGGER refuse_admin;").unwrap();
    assert_eq!(admin(&p, "GET", "/api/admin/requests", "").0, 200);
    drop(p);
    thread.join().unwrap();
}

#[test]
fn admin_requests_are_audited_with_who_what_and_when() {
    let dir = temp_dir("admin-audit");
    let (p, thread) =
        Practice::open(&settings(&dir), PracticeConfig::demo(), wed_morning()).unwrap();
    assert_eq!(
        admin(&p, "GET", "/api/admin/appointments", "date=2026-12-02").0,
        200
    );
    assert_eq!(admin(&p, "GET", "/api/admin/requests", "").0, 200);
    assert_eq!(admin(&p, "GET", "/api/admin/emergencies", "days=3").0, 200);
    assert_eq!(
        admin(&p, "POST", "/api/admin/requests/R-999/done", "").0,
        404
    );
    // Refused before the store (no or a wrong token): not an admin request, not audited here.
    let anonymous = Req {
        method: "GET",
        path: "/api/admin/requests",
        query: "",
        auth: None,
        call: None,
        body: "",
    };
    assert_eq!(send(&p, true, anonymous, wed_morning()).0, 401);
    drop(p);
    thread.join().unwrap();

    let db = rusqlite::Connection::open(dir.join("ignis.db")).unwrap();
    let mut st = db
        .prepare("SELECT at, call_id, tool, outcome, who FROM tool_audit ORDER BY id")
        .unwrap();
    type Row = (i64, Option<i64>, String, String, Option<String>);
    let rows: Vec<Row> = st
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // Who: the first 4 bytes of the token's SHA-256, never the token.
    let digest = ignis::practice::calls::hash_token(ADMIN_TOKEN.as_bytes());
    let who = format!("admin:{}", ignis::secret::hex_lower(&digest[..4]));
    let at = wed_morning().as_second();
    let expected: Vec<Row> = [
        ("admin:appointments date=2026-12-02", "ok"),
        ("admin:requests", "ok"),
        ("admin:emergencies days=3", "ok"),
        ("admin:request_done ref=R-999", "not_found"),
    ]
    .iter()
    .map(|(what, outcome)| {
        (
            at,
            None,
            what.to_string(),
            outcome.to_string(),
            Some(who.clone()),
        )
    })
    .collect();
    assert_eq!(rows, expected);
}

#[test]
fn practice_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Practice>();
}
