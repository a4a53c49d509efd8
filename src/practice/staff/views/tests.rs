//! The views against a real (in-memory) SQLite store: routing, audit lines, rendering (sections,
//! counts, escaping, forms with the CSRF token), done/undo, the chart and the ETag.

use jiff::Timestamp;

use super::*;
use crate::practice::calendar::{self, Advice};
use crate::practice::store::{
    Booking, BookingPatient, CallEnd, CallOutcome, CallerDetails, DemoPatient, Gender, Insurance,
    NewEmergency, NewRequest, RequestCategory, Severity, SqliteStore, Urgency,
};

const HOSTILE: &str = "<script>alert('x')</script>\"";

/// Wednesday 2 December 2026, 08:30 in Berlin.
fn now() -> Timestamp {
    "2026-12-02T07:30:00Z".parse().unwrap()
}

fn day() -> Date {
    "2026-12-02".parse().unwrap()
}

fn viewer() -> Viewer {
    Viewer {
        name: "Anna <Empfang>".into(),
        csrf: "tok\"en<1>".into(),
    }
}

fn request(
    category: RequestCategory,
    urgency: Urgency,
    patient: Option<i64>,
    at: i64,
) -> NewRequest {
    NewRequest {
        category,
        patient_id: patient,
        caller: patient.is_none().then(|| CallerDetails {
            family_name: HOSTILE.into(),
            given_name: Some("Eve".into()),
            birth_date: Some("1990-01-01".into()),
        }),
        details: None,
        urgency,
        callback_number: Some("+491701234567".into()),
        callback_window: Some("ab 14 Uhr".into()),
        note: Some(format!("Notiz {HOSTILE}")),
        call_sid: "CA1".into(),
        assurance: patient.map(|_| crate::practice::calls::Assurance::NameDobPhone),
        caller_number: "+491701234567".into(),
        fingerprint: None,
        now: at,
    }
}

/// A store with a hostile-named patient, two requests today (one urgent), one from yesterday,
/// an emergency, a booking by a call, and three calls (one live).
fn store() -> SqliteStore {
    let config = PracticeConfig::demo();
    let mut s = SqliteStore::open_in_memory().unwrap();
    s.seed_patients(
        &[DemoPatient {
            family: HOSTILE.into(),
            given: "Mallory".into(),
            birth_date: "1980-05-06".into(),
            gender: Gender::Female,
            phone: Some("+491701234567".into()),
            insurance: Insurance::Gkv,
            card_read_quarter: None,
        }],
        0,
    )
    .unwrap();
    let t = now().as_second();
    s.create_request(&request(
        RequestCategory::PrescriptionRefill,
        Urgency::Routine,
        Some(1),
        t - 600,
    ))
    .unwrap();
    s.create_request(&request(
        RequestCategory::UrgentCallback,
        Urgency::Urgent,
        None,
        t - 300,
    ))
    .unwrap();
    s.create_request(&request(
        RequestCategory::Message,
        Urgency::Routine,
        None,
        t - 86_400,
    ))
    .unwrap();
    s.record_emergency(&NewEmergency {
        severity: Severity::LifeThreatening,
        keywords: format!("Brustschmerz {HOSTILE}"),
        patient_id: Some(1),
        callback_number: Some("+491701234567".into()),
        advice: Advice::Call112,
        call_sid: "CA1".into(),
        fingerprint: None,
        now: t - 120,
    })
    .unwrap();
    let cands = calendar::slot_candidates(&config, day(), day());
    let slot = s
        .free_slots(&cands, 200)
        .unwrap()
        .into_iter()
        .find(|x| x.start > t + 3600)
        .unwrap();
    s.book(&Booking {
        slot_id: slot.id,
        patient: BookingPatient::Existing(1),
        visit_type: "kontrolle".into(),
        reason_short: "Kontrolle".into(),
        replaces: None,
        call_sid: "CA1".into(),
        idempotency_key: "k1".into(),
        now: t - 200,
    })
    .unwrap();
    for (sid, start) in [("CA1", t - 900), ("CA2", t - 500), ("CA3", t - 65)] {
        s.start_call(
            sid,
            &[sid.as_bytes()[2]; 32],
            "+491701234567",
            "+4930123",
            start,
        )
        .unwrap();
    }
    let end = |o, ms| CallEnd {
        outcome: o,
        first_audio_ms: ms,
    };
    assert!(
        s.finish_call("CA1", &end(CallOutcome::Completed, Some(850)), t - 700)
            .unwrap()
    );
    assert!(
        s.finish_call("CA2", &end(CallOutcome::AgentFailed, None), t - 450)
            .unwrap()
    );
    s
}

fn run(s: &mut SqliteStore, call: ViewCall) -> StaffReply {
    execute(s, &PracticeConfig::demo(), call, &viewer(), now())
}

fn body(r: &StaffReply) -> String {
    String::from_utf8(r.body.clone()).unwrap()
}

#[test]
fn routes_closures() {
    let field = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let form = vec![
        field("csrf", "t"),
        field("from", "2026-12-02"),
        field("to", " 2026-12-04 "),
        field("reason", "training"),
    ];
    assert_eq!(
        route("POST", "/staff/closures", "", &form),
        Ok(ViewCall::Close {
            from: day(),
            to: "2026-12-04".parse().unwrap(),
            reason: ClosureReason::Training
        })
    );
    assert_eq!(
        route("GET", "/staff/closures", "", &form),
        Err(ViewError::MethodNotAllowed)
    );
    for (k, v) in [("from", ""), ("to", "4.12.2026"), ("reason", "Krankheit")] {
        let mut bad = form.clone();
        bad.retain(|(key, _)| key != k);
        bad.push(field(k, v));
        assert_eq!(
            route("POST", "/staff/closures", "", &bad),
            Err(ViewError::BadRequest),
            "{k}={v}"
        );
    }
    assert_eq!(
        route(
            "POST",
            "/staff/closures/17/remove",
            "",
            &[field("day", "2026-12-02")]
        ),
        Ok(ViewCall::Reopen {
            id: 17,
            day: Some(day())
        })
    );
    assert_eq!(
        route("GET", "/staff/closures/17/remove", "", &[]),
        Err(ViewError::MethodNotAllowed)
    );
    for bad in [
        "/staff/closures//remove",
        "/staff/closures/x/remove",
        "/staff/closures/-1/remove",
        "/staff/closures/17",
        "/staff/closures/17/delete",
        "/staff/closures/1234567890123456789/remove",
    ] {
        assert_eq!(
            route("POST", bad, "", &[]).err(),
            Some(ViewError::NotFound),
            "{bad}"
        );
    }
    let close = route("POST", "/staff/closures", "", &form).unwrap();
    assert!(close.changes_data() && close.changes_closures());
    assert_eq!(
        close.audit().as_deref(),
        Some("staff:close from=2026-12-02 to=2026-12-04 reason=training")
    );
}

#[test]
fn routes_pages_live_actions_and_assets() {
    let d = Some(day());
    assert_eq!(
        route("GET", "/staff", "", &[]),
        Ok(ViewCall::Page { day: None })
    );
    assert_eq!(
        route("GET", "/staff/", "day=2026-12-02", &[]),
        Ok(ViewCall::Page { day: d })
    );
    assert_eq!(
        route("GET", "/staff/live", "day=2026-12-02", &[]),
        Ok(ViewCall::Live { day: d })
    );
    assert_eq!(
        route("GET", "/staff", "day=2026-13-01", &[]),
        Err(ViewError::BadRequest)
    );
    assert_eq!(
        route("GET", "/staff", "day=%zz", &[]),
        Err(ViewError::BadRequest)
    );
    assert_eq!(
        route("GET", "/staff", "day=02.12.2026", &[]),
        Err(ViewError::BadRequest)
    );
    assert_eq!(
        route("POST", "/staff", "", &[]),
        Err(ViewError::MethodNotAllowed)
    );
    let form = vec![
        ("csrf".to_owned(), "t".to_owned()),
        ("day".to_owned(), "2026-12-02".to_owned()),
        ("reply".to_owned(), "fragment".to_owned()),
    ];
    assert_eq!(
        route("POST", "/staff/requests/R-1001/done", "", &form),
        Ok(ViewCall::RequestDone {
            ref_code: "R-1001".into(),
            day: d,
            fragment: true
        })
    );
    assert_eq!(
        route("POST", "/staff/requests/R-1001/undo", "", &[]),
        Ok(ViewCall::RequestUndo {
            ref_code: "R-1001".into(),
            day: None,
            fragment: false
        })
    );
    assert_eq!(
        route("GET", "/staff/requests/R-1001/done", "", &[]),
        Err(ViewError::MethodNotAllowed)
    );
    for bad in [
        "/staff/requests/R-1001/delete",
        "/staff/requests//done",
        "/staff/requests/R<1>/done",
        "/staff/requests/R-10000000000000000/done",
        "/staff/requests/a/b/done",
        "/staff/nope",
        "/staffx",
        "/staff/assets/../secret",
        "/staff/assets/other.js",
    ] {
        assert_eq!(
            route("POST", bad, "", &[]).err(),
            Some(ViewError::NotFound),
            "{bad}"
        );
    }
    assert_eq!(
        route("GET", "/staff/assets/staff.css", "", &[]),
        Ok(ViewCall::Asset("staff.css"))
    );
    assert_eq!(
        route("GET", "/staff/assets/staff.js", "", &[]),
        Ok(ViewCall::Asset("staff.js"))
    );
}

#[test]
fn audit_lines_for_views_and_changes_only() {
    assert_eq!(
        ViewCall::Page { day: Some(day()) }.audit().as_deref(),
        Some("staff:view day=2026-12-02")
    );
    assert_eq!(
        ViewCall::Page { day: None }.audit().as_deref(),
        Some("staff:view day=today")
    );
    let done = ViewCall::RequestDone {
        ref_code: "R12".into(),
        day: None,
        fragment: true,
    };
    assert_eq!(done.audit().as_deref(), Some("staff:request_done ref=R12"));
    assert!(done.changes_data());
    let undo = ViewCall::RequestUndo {
        ref_code: "R12".into(),
        day: None,
        fragment: false,
    };
    assert_eq!(undo.audit().as_deref(), Some("staff:request_undo ref=R12"));
    // Answered with the fragment, done/undo shows a day's lists: that day is in its line.
    let done = done.with_day_resolved(day());
    assert_eq!(done.shown_day(), Some(day()));
    assert_eq!(
        done.audit().as_deref(),
        Some("staff:request_done ref=R12 day=2026-12-02")
    );
    let undo = undo.with_day_resolved(day());
    assert_eq!(undo.shown_day(), None, "a 303 shows nothing");
    assert_eq!(undo.audit().as_deref(), Some("staff:request_undo ref=R12"));
    assert_eq!(ViewCall::Live { day: None }.audit(), None);
    assert_eq!(ViewCall::Asset("staff.js").audit(), None);
    assert!(!ViewCall::Live { day: None }.changes_data());
}

#[test]
fn page_shows_sections_in_order_with_counts_in_the_title() {
    let mut s = store();
    let r = run(&mut s, ViewCall::Page { day: None });
    assert_eq!(r.status, 200);
    assert!(r.patient_data);
    let b = body(&r);
    assert!(
        b.contains("<title>(1 Notfall, 3 offen) Demo Praxis – ignis</title>"),
        "{b}"
    );
    let at = |needle: &str| b.find(needle).unwrap_or_else(|| panic!("{needle} missing"));
    assert!(at("id=\"notfaelle\"") < at("id=\"anliegen\""));
    assert!(at("id=\"anliegen\"") < at("id=\"termine\""));
    assert!(at("id=\"termine\"") < at("id=\"anrufe\""));
    assert!(b.contains("class=\"emergencies alert\""));
    assert!(b.contains("112 empfohlen"));
    assert!(b.contains("Rezept") && b.contains("Dringender Rückruf"));
    assert!(b.contains("Noch offen von früheren Tagen"));
    // The urgent request comes before the routine one although it is newer.
    assert!(at("Dringender Rückruf") < at(">Rezept<"));
    assert!(b.contains("verifiziert (Name, Geburtsdatum, Rufnummer)"));
    assert!(b.contains("geb. 06.05.1980"));
    assert!(b.contains("class=\"now\""), "the timeline marks now");
    assert!(b.contains("tel:+491701234567"));
    assert!(b.contains("von der KI gebucht"));
    assert!(b.contains("class=\"slot free\""));
    assert!(b.contains("Jetzt im Gespräch: <strong>1</strong>"));
    assert!(b.contains("Agent ausgefallen") && b.contains("0,8 s"));
    assert!(b.contains("<figure class=\"chart\">"));
    // No inline script or style anywhere (CSP).
    assert!(!b.contains("style=") && !b.contains("<style") && !b.contains("onclick"));
    assert_eq!(b.matches("<script").count(), 1);
    assert!(b.contains("<script src=\"/staff/assets/staff.js\" defer></script>"));
}

#[test]
fn stored_and_viewer_text_is_escaped() {
    let mut s = store();
    let b = body(&run(&mut s, ViewCall::Page { day: None }));
    assert_eq!(
        b.matches("<script").count(),
        1,
        "only the asset's script tag"
    );
    assert!(!b.contains("alert('x')"));
    assert!(b.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;"));
    assert!(b.contains("Anna &lt;Empfang&gt;"));
    assert!(b.contains("value=\"tok&quot;en&lt;1&gt;\""));
    assert!(!b.contains("tok\"en"));
}

#[test]
fn done_and_undo_forms_carry_the_csrf_token_and_change_the_store() {
    let mut s = store();
    let b = body(&run(&mut s, ViewCall::Live { day: None }));
    let forms = b.matches("<form class=\"act\"").count();
    assert_eq!(forms, 3, "one per request");
    assert_eq!(
        b.matches("name=\"csrf\" value=\"tok&quot;en&lt;1&gt;\"")
            .count(),
        forms
    );
    assert!(b.contains("action=\"/staff/requests/R-1001/done\""));

    let done = run(
        &mut s,
        ViewCall::RequestDone {
            ref_code: "R-1001".into(),
            day: Some(day()),
            fragment: false,
        },
    );
    assert_eq!(done.status, 303);
    assert_eq!(
        done.location.as_deref(),
        Some("/staff?day=2026-12-02#anliegen")
    );
    let b = body(&run(&mut s, ViewCall::Page { day: None }));
    assert!(b.contains("(1 Notfall, 2 offen)"));
    assert!(b.contains("Erledigt von Anna &lt;Empfang&gt;, 08:30 Uhr"));
    assert!(b.contains("action=\"/staff/requests/R-1001/undo\""));
    assert!(b.contains("<tr class=\"done\">"));

    // A second "done" (someone was quicker) still returns to the page; unknown refs are 404.
    let again = run(
        &mut s,
        ViewCall::RequestDone {
            ref_code: "R-1001".into(),
            day: None,
            fragment: false,
        },
    );
    assert_eq!(
        (again.status, again.location.as_deref()),
        (303, Some("/staff#anliegen"))
    );
    let unknown = run(
        &mut s,
        ViewCall::RequestUndo {
            ref_code: "R-9".into(),
            day: None,
            fragment: false,
        },
    );
    assert_eq!(unknown.status, 404);

    let undo = run(
        &mut s,
        ViewCall::RequestUndo {
            ref_code: "R-1001".into(),
            day: None,
            fragment: true,
        },
    );
    assert_eq!(undo.status, 200);
    assert!(undo.etag.is_some());
    let b = body(&undo);
    assert!(b.starts_with("<div class=\"view\" data-title=\"(1 Notfall, 3 offen)"));
    assert!(!b.contains("Erledigt von"));
}

#[test]
fn live_fragment_is_the_main_content_and_its_etag_is_stable() {
    let mut s = store();
    let page = body(&run(&mut s, ViewCall::Page { day: None }));
    let live = run(&mut s, ViewCall::Live { day: None });
    assert_eq!(live.status, 200);
    assert!(live.patient_data);
    let frag = body(&live);
    assert!(page.contains(&format!("<main id=\"live\">{frag}</main>")));
    let tag = live.etag.clone().unwrap();
    assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == 34);
    assert!(page.contains(&format!(
        "<meta name=\"staff-etag\" content=\"{}\">",
        html_escape(&tag)
    )));
    // Same data, same time: same bytes and tag. A new request changes it.
    assert_eq!(
        run(&mut s, ViewCall::Live { day: None }).etag.as_deref(),
        Some(tag.as_str())
    );
    s.create_request(&request(
        RequestCategory::SickNote,
        Urgency::Routine,
        Some(1),
        now().as_second(),
    ))
    .unwrap();
    let after = run(&mut s, ViewCall::Live { day: None });
    assert_ne!(after.etag.as_deref(), Some(tag.as_str()));
    assert!(body(&after).contains("AU-Bescheinigung"));
}

#[test]
fn other_days_and_empty_days_render() {
    let mut s = SqliteStore::open_in_memory().unwrap();
    let b = body(&run(
        &mut s,
        ViewCall::Page {
            day: Some("2026-12-24".parse().unwrap()),
        },
    ));
    assert!(b.contains("<title>(0 Notfälle, 0 offen) Demo Praxis – ignis</title>"));
    assert!(b.contains("Keine Notfälle an diesem Tag."));
    assert!(b.contains("Keine Anliegen an diesem Tag."));
    assert!(
        b.contains("href=\"/staff?day=2026-12-23\"")
            && b.contains("href=\"/staff?day=2026-12-25\"")
    );
    assert!(!b.contains(" (heute)"));
    // Extremes of the calendar do not panic.
    for d in ["-009999-01-01", "9999-12-31"] {
        let r = run(
            &mut s,
            ViewCall::Page {
                day: Some(d.parse().unwrap()),
            },
        );
        assert_eq!(r.status, 200, "{d}");
    }
}

#[test]
fn chart_counts_calls_per_local_hour_by_outcome() {
    let mut s = store();
    let config = PracticeConfig::demo();
    let data = page::DayData::load(&mut s, &config, day(), now()).unwrap();
    let counts = chart::per_hour(&config, &data);
    // Calls at 08:15, 08:21 and 08:28 Berlin: completed, agent failed, running.
    assert_eq!(counts[8], [1, 0, 0, 1, 1]);
    assert_eq!(counts.iter().flatten().sum::<u32>(), 3);
    let mut h = html::Html::new();
    chart::section(&mut h, &config, &data);
    let svg = h.finish();
    assert!(svg.contains("<title>8–9 Uhr: 3 Anrufe, 1 abgeschlossen, 1 Agent ausgefallen, 1 ohne Ergebnis</title>"), "{svg}");
    assert_eq!(svg.matches("<rect class=").count(), 3);
    assert!(svg.contains("class=\"completed\"") && svg.contains("class=\"agent_failed\""));
}

#[test]
fn calls_without_an_end_stop_being_live_after_the_limit() {
    let mut s = store();
    let t = now().as_second();
    s.start_call(
        "CAold",
        &[9; 32],
        "+4930999",
        "+4930123",
        t - MAX_LIVE_CALL_SECS - 1,
    )
    .unwrap();
    let b = body(&run(&mut s, ViewCall::Live { day: None }));
    assert!(b.contains("Jetzt im Gespräch: <strong>1</strong>"));
    assert!(b.contains("ohne Ende (abgebrochen)"));
}

/// Review point 6: with a running call the fragment's bytes, and so its ETag, do not change
/// from one second to the next (the durations tick in staff.js), so polls get 304.
#[test]
fn the_fragment_is_stable_while_a_call_runs() {
    let mut s = store();
    let t = now();
    let live = |s: &mut SqliteStore, at: Timestamp| {
        let r = execute(
            s,
            &PracticeConfig::demo(),
            ViewCall::Live { day: None },
            &viewer(),
            at,
        );
        (r.etag.clone().unwrap(), body(&r))
    };
    let (tag, b) = live(&mut s, t);
    assert!(b.contains("Jetzt im Gespräch: <strong>1</strong>"), "{b}");
    assert!(b.contains("data-start=\""), "{b}");
    for secs in [1, 5, 29] {
        let later = t + jiff::SignedDuration::from_secs(secs);
        assert_eq!(live(&mut s, later).0, tag, "{secs} s later");
    }
}

#[test]
fn assets_are_small_and_served() {
    let (css_type, css) = asset("staff.css").unwrap();
    let (js_type, js) = asset("staff.js").unwrap();
    assert_eq!(css_type, "text/css; charset=utf-8");
    assert_eq!(js_type, "text/javascript; charset=utf-8");
    assert!(css.len() + js.len() < 20 * 1024);
    assert_eq!(asset("../mod.rs"), None);
    let mut s = SqliteStore::open_in_memory().unwrap();
    let r = run(&mut s, ViewCall::Asset("staff.js"));
    assert_eq!((r.status, r.patient_data), (200, false));
    assert_eq!(r.body, js);
    assert_eq!(ViewError::NotFound.reply().status, 404);
    assert_eq!(ViewError::BadRequest.reply().status, 400);
}

#[test]
fn route_never_panics_on_odd_input() {
    let long = "x".repeat(10_000);
    let paths = [
        "",
        "/",
        "/staff",
        "/staff//",
        "/staff/requests/",
        "/staff/requests/ä/done",
        "/staff/requests/R-1/done/",
        "/staff/assets/",
        "/staff/live/x",
        &long,
    ];
    let queries = [
        "",
        "day",
        "day=",
        "day=ä",
        "day=2026-02-30",
        "%",
        "day=%FF%FE",
        &long,
    ];
    let forms = [
        vec![],
        vec![("day".to_owned(), "ää-ää-ääää".to_owned())],
        vec![("reply".to_owned(), long.clone())],
    ];
    for method in ["GET", "POST", "PUT", ""] {
        for p in paths {
            for q in queries {
                for f in &forms {
                    let _ = route(method, p, q, f);
                }
            }
        }
    }
    assert_eq!(
        route("GET", "/staff", &long, &[]),
        Err(ViewError::BadRequest)
    );
    assert_eq!(
        route("GET", "/staff", "day=2026-02-30", &[]),
        Err(ViewError::BadRequest)
    );
    let f = vec![("day".to_owned(), "ää-ää-ääää".to_owned())];
    assert_eq!(
        route("POST", "/staff/requests/R-1/done", "", &f),
        Err(ViewError::BadRequest)
    );
}
