//! The staff views against the real store filled by the real tool endpoints: a call books an
//! appointment, files a prescription request and reports an emergency; the page and its live
//! fragment show all three (the fragment's ETag changes with each), and "done" by a staff
//! member shows who. (The HTTP front end, login and CSRF are tested with the routing layer.)

mod practice_support;

use ignis::practice::calendar;
use ignis::practice::staff::views::{self, ViewCall};
use ignis::practice::staff::{StaffReply, Viewer};
use jiff::Timestamp;
use jiff::civil::Date;
use practice_support::{Env, WEBER_PHONE, wed_morning};

fn viewer() -> Viewer {
    Viewer {
        name: "Anna".into(),
        csrf: "csrf-token-1".into(),
    }
}

fn view(e: &mut Env, call: ViewCall, now: Timestamp) -> (StaffReply, String) {
    let r = views::execute(e.store.as_mut(), &e.config, call, &viewer(), now);
    let body = String::from_utf8(r.body.clone()).unwrap();
    (r, body)
}

fn live(e: &mut Env, now: Timestamp) -> (String, String) {
    let (r, body) = view(e, ViewCall::Live { day: None }, now);
    assert_eq!(r.status, 200);
    (r.etag.expect("live fragments carry an ETag"), body)
}

#[test]
fn a_call_fills_the_page_through_the_tool_endpoints() {
    let now = wed_morning();
    let mut e = Env::new("staff-views", now);
    let (tag0, empty) = live(&mut e, now);
    assert!(empty.contains("(0 Notfälle, 0 offen)"), "{empty}");

    let t = e.call("CAstaff", WEBER_PHONE, now);
    let p = e.identify(&t, "Weber", None, "1972-08-22", now)["patient_ref"].clone();
    let (tag1, _) = live(&mut e, now);
    assert_ne!(tag0, tag1, "the running call is shown");

    let meds = r#"{"medications":[{"name":"Ramipril","strength":"5 mg","amount":"N3"}]}"#;
    let body =
        format!(r#"{{"category":"prescription_refill","patient_ref":{p},"details":{meds}}}"#);
    let (s, v) = e.post(&t, "/api/requests", &body, now);
    assert_eq!(s, 200, "{v}");
    let request_ref = v["request_ref"].as_str().unwrap().to_owned();
    let (tag2, frag) = live(&mut e, now);
    assert_ne!(tag1, tag2);
    assert!(
        frag.contains("Rezept") && frag.contains("Ramipril 5 mg N3"),
        "{frag}"
    );
    assert!(frag.contains("(0 Notfälle, 1 offen)"));

    let (s, _) = e.post(
        &t,
        "/api/emergencies",
        r#"{"severity":"life_threatening","keywords":"Brustschmerzen"}"#,
        now,
    );
    assert_eq!(s, 200);
    let (tag3, frag) = live(&mut e, now);
    assert_ne!(tag2, tag3);
    assert!(frag.contains("(1 Notfall, 1 offen)") && frag.contains("Brustschmerzen"));
    assert!(frag.contains("112 empfohlen"));

    let slot = e.slots(&t, "visit_type=kontrolle", now)["slots"][0]["slot_ref"].clone();
    let body = format!(
        r#"{{"slot_ref":{slot},"patient_ref":{p},"visit_type":"kontrolle","reason_short":"Kontrolle"}}"#
    );
    assert_eq!(e.book(&t, &body, now)["ok"], true);
    let booked = e.store.staff_day_appointments(0, i64::MAX, 10).unwrap();
    let mine = booked
        .iter()
        .find(|a| a.call_sid.as_deref() == Some("CAstaff"))
        .expect("the call's booking");
    let start = Timestamp::from_second(mine.row.start).unwrap();
    let day: Date = calendar::local(&e.config, start).date;
    let (r, page) = view(&mut e, ViewCall::Page { day: Some(day) }, now);
    assert_eq!(r.status, 200);
    assert!(page.contains("von der KI gebucht"), "{page}");
    assert!(page.contains("Weber"));

    // Mark done as a staff member: 303 back, then the page shows who; undo reopens.
    let done = ViewCall::RequestDone {
        ref_code: request_ref.clone(),
        day: None,
        fragment: false,
    };
    assert_eq!(
        done.audit().unwrap(),
        format!("staff:request_done ref={request_ref}")
    );
    let (r, _) = view(&mut e, done, now);
    assert_eq!(
        (r.status, r.location.as_deref()),
        (303, Some("/staff#anliegen"))
    );
    let (_, page) = view(&mut e, ViewCall::Page { day: None }, now);
    assert!(page.contains("Erledigt von Anna"));
    assert!(page.contains("(1 Notfall, 0 offen)"));
    let undo = ViewCall::RequestUndo {
        ref_code: request_ref,
        day: None,
        fragment: true,
    };
    let (r, frag) = view(&mut e, undo, now);
    assert_eq!(r.status, 200);
    assert!(frag.contains("(1 Notfall, 1 offen)") && !frag.contains("Erledigt von"));
}
