//! Emergency advice across the practice calendar, and the dynamic variables for the bridge.

use ignis::practice::calendar::{self, Advice};
use ignis::practice::calls::{
    CallInfo, CallToken, DYNAMIC_VARIABLE_NAMES, NO_CALL_TOKEN, dynamic_variables,
};
use ignis::practice::config::{DEMO_PRACTICE_TOML, PracticeConfig};
use jiff::Timestamp;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn demo() -> PracticeConfig {
    PracticeConfig::demo()
}

fn with(replace: &[(&str, &str)]) -> PracticeConfig {
    let mut src = DEMO_PRACTICE_TOML.to_string();
    for (from, to) in replace {
        assert!(src.contains(from), "{from}");
        src = src.replacen(from, to, 1);
    }
    PracticeConfig::from_toml_str(&src).unwrap()
}

fn advice(c: &PracticeConfig, local: &str) -> (Advice, Option<String>) {
    let t: Timestamp = c.timezone.to_timestamp(local.parse().unwrap()).unwrap();
    let d = calendar::emergency_advice(c, false, t);
    assert_eq!(
        calendar::emergency_advice(c, true, t).advice,
        Advice::Call112,
        "112 at {local}"
    );
    (d.advice, d.covering.map(|c| c.name))
}

/// At `local` the advice is the covering practice, and it is `name`'s.
fn assert_covered_by(c: &PracticeConfig, local: &str, name: &str) {
    let (a, who) = advice(c, local);
    assert_eq!(a, Advice::CallVertretung, "{local}");
    assert!(who.unwrap().contains(name), "{local}");
}

#[test]
fn open_practice_transfers_urgent_calls() {
    let c = demo();
    assert_eq!(advice(&c, "2026-11-25T10:00").0, Advice::Transfer);
    let d = calendar::emergency_advice(&c, false, at("2026-11-25T09:00:00Z"));
    assert!(d.transfer_available);
    // Without a staff line the agent offers a same-day slot instead.
    let c = with(&[("staff_transfer_number = \"+49 30 1234560\"\n", "")]);
    assert_eq!(advice(&c, "2026-11-25T10:00").0, Advice::SameDay);
}

#[test]
fn lunch_break_goes_to_the_covering_practice_or_same_day() {
    let c = demo();
    assert_covered_by(&c, "2026-11-23T13:00", "Dr. Lange");
    let c = with(&[("during_breaks = true", "during_breaks = false")]);
    assert_eq!(advice(&c, "2026-11-23T13:00").0, Advice::SameDay);
}

#[test]
fn nights_weekends_and_public_holidays_are_116117() {
    let c = demo();
    for local in [
        "2026-11-23T18:30", // Monday after closing
        "2026-11-23T22:00",
        "2026-11-24T03:00", // Tuesday night
        "2026-11-25T14:00", // Wednesday afternoon
        "2026-11-28T11:00", // Saturday
        "2026-12-25T10:00", // public holiday
        "2026-12-29T20:00", // night inside the practice holidays
    ] {
        assert_eq!(advice(&c, local).0, Advice::Call116117, "{local}");
    }
}

#[test]
fn practice_holidays_name_the_covering_practice() {
    let c = demo();
    assert_covered_by(&c, "2026-12-29T10:00", "Dr. Lange");
    // A closure with its own covering practice (and summer time).
    assert_covered_by(&c, "2027-04-13T10:00", "Özdemir");
}

#[test]
fn outside_116117_hours_never_points_to_116117_when_a_covering_practice_exists() {
    // Monday 18:00-19:00 is neither consultation time nor Bereitschaftsdienst here.
    let c = with(&[(
        "mo = [\"00:00-08:00\", \"18:00-24:00\"]",
        "mo = [\"00:00-08:00\", \"19:00-24:00\"]",
    )]);
    let (a, who) = advice(&c, "2026-11-23T18:30");
    assert_eq!(a, Advice::CallVertretung);
    assert!(who.is_some());
    assert_eq!(advice(&c, "2026-11-23T19:30").0, Advice::Call116117);
}

#[test]
fn opening_state_and_next_opening() {
    let c = demo();
    assert!(calendar::is_open(&c, at("2026-11-25T09:00:00Z")));
    assert!(!calendar::is_open(&c, at("2026-11-25T12:30:00Z"))); // Wednesday 13:30
    assert!(!calendar::is_open(&c, at("2026-12-29T09:00:00Z"))); // holidays
    let next = calendar::next_opening(&c, at("2026-12-24T18:30:00Z")).unwrap();
    assert_eq!(calendar::label(&c, next), "Montag, 4. Januar, 8:00 Uhr");
}

#[test]
fn a_call_without_a_token_still_gets_all_eleven_practice_facts() {
    let info = CallInfo {
        call_sid: "CA123",
        caller_number: "+4915112345123",
        called_number: "+4930123456",
    };
    let v = dynamic_variables(
        &CallToken::unregistered(),
        &info,
        &demo(),
        at("2026-11-25T09:00:00Z"),
    );
    assert_eq!(v.len(), 11);
    for k in DYNAMIC_VARIABLE_NAMES {
        assert!(v[k].as_str().is_some_and(|s| !s.trim().is_empty()), "{k}");
    }
    assert_eq!(v["secret__ignis_call"], NO_CALL_TOKEN);
    assert_eq!(v["practice_name"], "Demo Praxis");
    assert_eq!(v["caller_number"], "+4915112345123");
}

#[test]
fn dynamic_variables_always_carry_all_eleven() {
    let c = demo();
    let token = CallToken::from_entropy([9; 16]);
    let info = CallInfo {
        call_sid: "CA123",
        caller_number: "",
        called_number: "+4930123456",
    };
    for now in [
        "2026-11-25T09:00:00Z",
        "2026-11-25T23:00:00Z",
        "2026-12-25T09:00:00Z",
        "2026-12-22T09:00:00Z",
    ] {
        let v = dynamic_variables(&token, &info, &c, at(now));
        assert_eq!(v.len(), 11);
        for k in DYNAMIC_VARIABLE_NAMES {
            let s = v[k]
                .as_str()
                .unwrap_or_else(|| panic!("{k} missing at {now}"));
            assert!(!s.trim().is_empty(), "{k} empty at {now}");
        }
    }
    let v = dynamic_variables(&token, &info, &c, at("2026-11-25T09:00:00Z"));
    assert_eq!(v["secret__ignis_call"], token.as_str());
    assert_eq!(v["caller_number"], "anonymous");
    assert_eq!(v["today_local"], "Mittwoch, 25.11.2026");
    assert_eq!(v["now_local"], "10:00");
    assert_eq!(v["practice_name"], "Demo Praxis");
    assert_eq!(v["practice_open_now"], "ja");
    assert_eq!(v["hours_today"], "heute 8:00–13:00 Uhr");
    assert_eq!(v["practice_notice"], "keine");
    let night = dynamic_variables(&token, &info, &c, at("2026-11-25T23:00:00Z"));
    assert_eq!(night["practice_open_now"], "nein");
    assert!(
        night["after_hours_advice"]
            .as_str()
            .unwrap()
            .contains("116 117")
    );
    let xmas = dynamic_variables(&token, &info, &c, at("2026-12-25T09:00:00Z"));
    assert_eq!(xmas["hours_today"], "heute geschlossen (1. Weihnachtstag)");
    let before = dynamic_variables(&token, &info, &c, at("2026-12-22T09:00:00Z"));
    let notice = before["practice_notice"].as_str().unwrap();
    assert!(
        notice.contains("Praxisurlaub vom 28. Dezember bis 2. Januar"),
        "{notice}"
    );
    assert!(
        notice.contains("Vertretung: Hausarztpraxis Dr. Lange"),
        "{notice}"
    );
}

/// With `state`, the Land's statutory holidays close the practice in any year, without a list:
/// Fronleichnam 2028 (15 June, Easter + 60) in Bavaria, not in Berlin; a listed local day adds to
/// them (docs/practice-tools.md §2.6).
#[test]
fn the_lands_holidays_close_the_practice_in_any_year() {
    let bavaria = with(&[
        ("state = \"BE\"", "state = \"BY\""),
        (
            "# Public holidays:",
            "[[public_holidays]]\ndate = \"2028-08-15\"\nname = \"Mariä Himmelfahrt\"\n# Public holidays:",
        ),
    ]);
    let berlin = demo();
    let fronleichnam = "2028-06-15T10:00";
    let t: Timestamp = bavaria
        .timezone
        .to_timestamp(fronleichnam.parse().unwrap())
        .unwrap();
    assert!(calendar::is_open(&berlin, t));
    assert!(!calendar::is_open(&bavaria, t));
    assert_eq!(advice(&bavaria, fronleichnam).0, Advice::Call116117);
    assert_eq!(
        calendar::hours_today(&bavaria, t),
        "heute geschlossen (Fronleichnam)"
    );
    let day: jiff::civil::Date = "2028-06-15".parse().unwrap();
    assert!(calendar::slot_candidates(&bavaria, day, day).is_empty());
    assert!(!calendar::slot_candidates(&berlin, day, day).is_empty());
    let week_before = at("2028-06-08T08:00:00Z");
    assert!(
        calendar::practice_notice(&bavaria, week_before)
            .contains("Fronleichnam am 15. Juni geschlossen"),
        "{}",
        calendar::practice_notice(&bavaria, week_before)
    );
    assert_eq!(calendar::practice_notice(&berlin, week_before), "keine");
    // The listed local day, on a Tuesday.
    let assumption = bavaria
        .timezone
        .to_timestamp("2028-08-15T10:00".parse().unwrap())
        .unwrap();
    assert!(!calendar::is_open(&bavaria, assumption));
    assert!(calendar::is_open(&berlin, assumption));
}
