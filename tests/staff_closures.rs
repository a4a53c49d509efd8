//! Closing the practice from the staff page (docs/practice-tools.md §2.7), through the core's
//! routing layer (session, CSRF, audit) and the agent's tool endpoint on one store: a closed
//! day offers no slots, a call starting on it is told the practice is closed and why, the page
//! shows it, and "open again" brings the slots back. Another replica on the same database sees
//! the closure at its next reload. Refused: past days, too long, an unknown reason, a GET,
//! a post without the session's CSRF token.

mod practice_support;

use ignis::practice::Practice;
use ignis::practice::config::PracticeConfig;
use ignis::practice::store::SqliteStore;
use ignis::practice::tools::Secrets;
use jiff::Timestamp;
use practice_support::staff_core::{core_login, csrf_of_session, get_query, post_form, practice};
use practice_support::{
    TOOLS_TOKEN, WEBER_PHONE, start_practice_call, submit_tool, temp_dir, wed_morning,
};
use serde_json::{Map, Value};

/// Thursday after [`wed_morning`].
const THURSDAY: &str = "2026-11-26";

/// Starts a call from Maria Weber's number; its dynamic variables.
fn call(p: &Practice, sid: &str, seed: u8, now: Timestamp) -> Map<String, Value> {
    start_practice_call(p, (sid, WEBER_PHONE), seed, now)
}

/// The refs of the `kontrolle` slots offered on Thursday.
fn thursday_slots(p: &Practice, token: &str, now: Timestamp) -> Vec<String> {
    let path = format!(
        "/api/appointments/slots?visit_type=kontrolle&earliest={THURSDAY}&latest={THURSDAY}&limit=5"
    );
    let r = submit_tool(p, token, ("GET", &path), "", now)
        .recv()
        .unwrap();
    let v = r.body_json();
    assert_eq!(r.status, 200, "{v}");
    v["slots"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|x| x["start"].as_str().is_some_and(|t| t.starts_with(THURSDAY)))
                .map(|x| x["slot_ref"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn page(p: &Practice, cookie: &str, day: &str, now: Timestamp) -> String {
    let r = get_query(p, "/staff", &format!("day={day}"), cookie, now);
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

/// The audit rows' `what` and `outcome` for staff changes of closures.
fn closure_audit(db: &std::path::Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut st = conn
        .prepare(
            "SELECT what, outcome FROM staff_audit
             WHERE what LIKE 'staff:close%' OR what LIKE 'staff:reopen%' ORDER BY id",
        )
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_day_closed_on_the_staff_page_reaches_the_agent_and_opens_again() {
    let dir = temp_dir("staff-closures");
    let db = dir.join("core.db");
    let now = wed_morning();
    // The demo patients (Maria Weber books below).
    let mut seeded = SqliteStore::open(&db).unwrap();
    ignis::practice::demo::seed(&mut seeded, &PracticeConfig::demo(), now).unwrap();
    drop(seeded);
    let (p, _thread) = practice(&dir);
    // Another replica on the same database.
    let (other, _other_thread) = Practice::with_store(
        PracticeConfig::demo(),
        Secrets::new(TOOLS_TOKEN, None),
        Box::new(SqliteStore::open(&db).unwrap()),
    )
    .unwrap();
    let cookie = core_login(&p, now, 1);
    let csrf = csrf_of_session(&db);

    let before = call(&p, "CA0000000000000000000000000000c101", 1, now);
    assert!(
        !before["hours_today"]
            .as_str()
            .unwrap()
            .contains("geschlossen"),
        "{before:?}"
    );
    let token = before["secret__ignis_call"].as_str().unwrap().to_owned();
    let offered = thursday_slots(&p, &token, now);
    assert!(!offered.is_empty(), "Thursday has slots");
    let tool = |method: &str, path: &str, body: &str| {
        let r = submit_tool(&p, &token, (method, path), body, now)
            .recv()
            .unwrap();
        (r.status, r.body_json())
    };
    let (_, who) = tool(
        "POST",
        "/api/patients/identify",
        r#"{"family_name":"Weber","birth_date":"1972-08-22"}"#,
    );
    let patient = who["patient_ref"]
        .as_str()
        .unwrap_or_else(|| panic!("identified: {who}"))
        .to_owned();

    // Closed today and tomorrow for illness.
    let form = format!("csrf={csrf}&from=2026-11-25&to={THURSDAY}&reason=illness");
    let r = post_form(&p, "/staff/closures", &form, &cookie, now);
    assert_eq!(
        (r.status, r.location.as_deref()),
        (303, Some("/staff?day=2026-11-25#schliessungen"))
    );
    assert_eq!(thursday_slots(&p, &token, now), Vec::<String>::new());
    // A slot offered before the closure is not booked on the closed day either.
    let booking = format!(
        r#"{{"slot_ref":"{}","patient_ref":"{patient}","visit_type":"kontrolle","reason_short":"Kontrolle"}}"#,
        offered[0]
    );
    let (_, v) = tool("POST", "/api/appointments", &booking);
    assert!(
        v["ok"] == false && v.get("appointment_ref").is_none(),
        "booked on a closed day: {v}"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let booked: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM appointment WHERE call_sid = 'CA0000000000000000000000000000c101'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(booked, 0);
    let during = call(&p, "CA0000000000000000000000000000c102", 2, now);
    assert_eq!(during["hours_today"], "heute geschlossen (Krankheit)");
    assert_eq!(during["practice_open_now"], "nein");
    let notice = during["practice_notice"].as_str().unwrap();
    assert!(
        notice.contains("Krankheit bis einschließlich 26. November"),
        "{notice}"
    );

    // The other replica learns it at its next reload, not before.
    let seen = |q: &Practice| ignis::practice::calendar::closure(&q.config(), now_date()).is_some();
    assert!(!seen(&other));
    other.reload_closures(now);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen(&other) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(seen(&other), "the other replica reloaded the closure");

    // The page says so on the day and lists it with "open again".
    let shown = page(&p, &cookie, THURSDAY, now);
    assert!(
        shown.contains("Praxis an diesem Tag geschlossen: Krankheit"),
        "{shown}"
    );
    let action = shown
        .split("action=\"/staff/closures/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("an open-again form")
        .to_owned();
    assert!(shown.contains(">Wieder öffnen</button>") && shown.contains(">anna</td>"));

    let r = post_form(
        &p,
        &format!("/staff/closures/{action}"),
        &format!("csrf={csrf}&day={THURSDAY}"),
        &cookie,
        now,
    );
    assert_eq!(
        (r.status, r.location.as_deref()),
        (303, Some("/staff?day=2026-11-26#schliessungen"))
    );
    assert!(!thursday_slots(&p, &token, now).is_empty(), "open again");
    let after = call(&p, "CA0000000000000000000000000000c103", 3, now);
    assert_eq!(after["hours_today"], before["hours_today"]);
    let id = action.trim_end_matches("/remove");
    assert_eq!(
        closure_audit(&db),
        [
            (
                format!("staff:close from=2026-11-25 to={THURSDAY} reason=illness"),
                "attempt".to_owned()
            ),
            (
                format!("staff:close from=2026-11-25 to={THURSDAY} reason=illness"),
                "ok".to_owned()
            ),
            (format!("staff:reopen closure={id}"), "attempt".to_owned()),
            (format!("staff:reopen closure={id}"), "ok".to_owned()),
        ]
    );
    // Removed twice: the second finds nothing.
    let again = post_form(
        &p,
        &format!("/staff/closures/{action}"),
        &format!("csrf={csrf}"),
        &cookie,
        now,
    );
    assert_eq!(again.status, 404);
}

fn now_date() -> jiff::civil::Date {
    "2026-11-25".parse().unwrap()
}

#[test]
fn closures_that_cannot_be_entered_are_refused_and_change_nothing() {
    let dir = temp_dir("staff-closures-refused");
    let db = dir.join("core.db");
    let now = wed_morning();
    let (p, _thread) = practice(&dir);
    let cookie = core_login(&p, now, 2);
    let csrf = csrf_of_session(&db);
    let post = |form: &str| post_form(&p, "/staff/closures", form, &cookie, now).status;
    // Yesterday; 43 days; ending before it starts; an unknown reason; a malformed date.
    assert_eq!(
        post(&format!(
            "csrf={csrf}&from=2026-11-24&to=2026-11-25&reason=illness"
        )),
        422
    );
    assert_eq!(
        post(&format!(
            "csrf={csrf}&from=2026-11-25&to=2027-01-06&reason=vacation"
        )),
        422
    );
    assert_eq!(
        post(&format!(
            "csrf={csrf}&from=2026-11-26&to=2026-11-25&reason=other"
        )),
        422
    );
    assert_eq!(
        post(&format!(
            "csrf={csrf}&from=2026-11-25&to=2026-11-25&reason=party"
        )),
        400
    );
    assert_eq!(
        post(&format!(
            "csrf={csrf}&from=25.11.2026&to=2026-11-25&reason=other"
        )),
        400
    );
    // Without the session's CSRF token.
    assert_eq!(
        post("csrf=guess&from=2026-11-25&to=2026-11-25&reason=other"),
        403
    );
    assert!(ignis::practice::calendar::closure(&p.config(), now_date()).is_none());
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM staff_closure", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
}
