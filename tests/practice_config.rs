//! `practice.toml` validation: every error names the line of the offending value.

use ignis::practice::config::{ConfigError, DEMO_PRACTICE_TOML, PracticeConfig};
use ignis::practice::holidays::Land;

fn line_of(src: &str, needle: &str) -> usize {
    src[..src.find(needle).unwrap_or_else(|| panic!("{needle}"))]
        .matches('\n')
        .count()
        + 1
}

/// Replaces the first `from` with `to` and returns the error plus the line where `to` landed.
fn broken(from: &str, to: &str) -> (ConfigError, usize) {
    assert!(DEMO_PRACTICE_TOML.contains(from), "{from}");
    let src = DEMO_PRACTICE_TOML.replacen(from, to, 1);
    let err = PracticeConfig::from_toml_str(&src).expect_err("config should be rejected");
    // The replaced text is the last occurrence (e.g. a duplicated id follows the original).
    (err, src[..src.rfind(to).unwrap()].matches('\n').count() + 1)
}

#[test]
fn the_shipped_config_is_valid() {
    let c = PracticeConfig::from_toml_str(DEMO_PRACTICE_TOML).unwrap();
    assert_eq!(c.practitioners.len(), 2);
    assert!(
        c.visit_types
            .iter()
            .any(|v| v.code == "hausbesuch" && !v.phone_bookable)
    );
    assert_eq!(c.timezone_name, "Europe/Berlin");
}

#[test]
fn syntax_errors_name_the_line() {
    let src = format!("{DEMO_PRACTICE_TOML}\n[practice\n");
    let err = PracticeConfig::from_toml_str(&src).unwrap_err();
    assert_eq!(err.line, src.lines().count());
    assert!(
        err.to_string()
            .starts_with(&format!("practice.toml line {}", err.line))
    );
}

#[test]
fn semantic_errors_name_the_line() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "timezone = \"Europe/Berlin\"",
            "timezone = \"Mars/Olympus\"",
            "unknown time zone",
        ),
        (
            "mo = [\"08:00-12:00\", \"15:00-18:00\"]",
            "mo = [\"12:00-08:00\", \"15:00-18:00\"]",
            "time range",
        ),
        (
            "di = [\"08:00-12:00\", \"15:00-18:00\"]",
            "di = [\"08:00-12:00\", \"11:00-18:00\"]",
            "overlap",
        ),
        (
            "practitioner = \"yilmaz\"\nweekdays = [\"di\"]",
            "practitioner = \"nobody\"\nweekdays = [\"di\"]",
            "unknown practitioner",
        ),
        (
            "weekdays = [\"mo\", \"do\"]",
            "weekdays = [\"mo\", \"xx\"]",
            "unknown weekday",
        ),
        (
            "hours = [\"15:00-17:00\"]",
            "hours = [\"15:00-20:00\"]",
            "outside the opening hours",
        ),
        (
            "visit_types = [\"vorsorge\", \"erstvorstellung\"]",
            "visit_types = [\"vorsorge\", \"zahnarzt\"]",
            "unknown visit type",
        ),
        (
            "visit_types = [\"vorsorge\", \"erstvorstellung\"]",
            "visit_types = [\"vorsorge\", \"hausbesuch\"]",
            "longer than",
        ),
        (
            "from = \"2026-12-28\"",
            "from = \"2026-13-28\"",
            "not a date",
        ),
        ("to = \"2027-01-02\"", "to = \"2026-12-01\"", "ends before"),
        (
            "phone = \"030 9876543\"",
            "phone = \"call Lange\"",
            "not a phone number",
        ),
        ("code = \"kontrolle\"", "code = \"Kontrolle!\"", "lowercase"),
        (
            "minutes = 10\nphone_bookable = true\nnew_patients_ok = true\nbring = [\"Versichertenkarte\"]",
            "minutes = 1000\nphone_bookable = true\nnew_patients_ok = true\nbring = [\"Versichertenkarte\"]",
            "minutes must be",
        ),
        (
            "booking_horizon_days = 28",
            "booking_horizon_days = 0",
            "booking_horizon_days",
        ),
        (
            "id = \"yilmaz\"",
            "id = \"schmidt\"",
            "duplicate practitioner",
        ),
    ];
    for (from, to, what) in cases {
        let (err, line) = broken(from, to);
        assert!(err.message.contains(what), "{to}: {err}");
        let lines = to.matches('\n').count();
        assert!(
            (line..=line + lines).contains(&err.line),
            "{to}: expected line {line}, got {err}"
        );
        assert!(err.column > 0);
    }
}

#[test]
fn unknown_keys_are_rejected_with_their_line() {
    let (err, line) = broken(
        "accepts_new_patients = true",
        "accepts_new_patients = true\ncolour = \"blue\"",
    );
    assert_eq!(err.line, line + 1, "{err}");
    assert!(err.message.contains("colour"), "{err}");
}

/// Slots are unique per practitioner and start: two templates of one practitioner whose hours
/// meet on a shared weekday would let overlapping slots both be booked.
#[test]
fn overlapping_templates_of_one_practitioner_are_refused() {
    let (err, _) = broken(
        "practitioner = \"yilmaz\"\nweekdays = [\"di\"]",
        "practitioner = \"yilmaz\"\nweekdays = [\"mo\"]",
    );
    assert!(err.to_string().contains("overlaps an earlier one"), "{err}");
    // Another practitioner at the same hours is fine: the shipped file has yilmaz's Tuesday
    // 08:00-10:00 beside schmidt's 08:00-12:00 (the_shipped_config_is_valid).
    assert!(
        DEMO_PRACTICE_TOML
            .contains("practitioner = \"yilmaz\"\nweekdays = [\"di\"]\nhours = [\"08:00-10:00\"]")
    );
}

/// Without a `state`, the holiday list is maintained by hand: start-up warns when it ends before
/// the booking horizon (Christmas would be offered otherwise). With one, nothing runs out.
#[test]
fn a_holiday_list_ending_before_the_horizon_is_reported() {
    let src = DEMO_PRACTICE_TOML.replacen("state = \"BE\"\n", "", 1).replacen(
        "# Public holidays:",
        "[[public_holidays]]\ndate = \"2027-10-03\"\nname = \"Tag der Deutschen Einheit\"\n# Public holidays:",
        1,
    );
    let mut c = PracticeConfig::from_toml_str(&src).unwrap();
    assert_eq!(c.state, None);
    let last = c.last_holiday().unwrap();
    let horizon = i64::from(c.booking_horizon_days);
    let early = last.saturating_sub(jiff::Span::new().days(horizon + 1));
    assert!(!c.holidays_run_out(early));
    let late = last.saturating_sub(jiff::Span::new().days(horizon - 1));
    assert!(c.holidays_run_out(late));
    c.public_holidays.clear();
    assert!(c.holidays_run_out(early));
    let shipped = PracticeConfig::demo();
    assert_eq!(shipped.state, Some(Land::Be));
    assert!(shipped.public_holidays.is_empty());
    assert!(!shipped.holidays_run_out(late));
}

/// `state` takes the Land's code in any case (also `DE-XX`); anything else is refused on its
/// line, with the codes listed.
#[test]
fn the_state_is_a_lands_code() {
    let c = PracticeConfig::from_toml_str(&DEMO_PRACTICE_TOML.replacen(
        "state = \"BE\"",
        "state = \"de-by\"",
        1,
    ))
    .unwrap();
    assert_eq!(c.state, Some(Land::By));
    let (err, line) = broken("state = \"BE\"", "state = \"Bayern\"");
    assert_eq!(err.line, line);
    assert!(err.message.contains("one of BW BY BE"), "{err}");
}

#[test]
fn a_bookable_visit_type_needs_a_template() {
    let (err, _) = broken("phone_bookable = false", "phone_bookable = true");
    assert!(err.message.contains("hausbesuch"), "{err}");
    let src = DEMO_PRACTICE_TOML;
    let block = line_of(src, "code = \"hausbesuch\"");
    assert!((block - 2..=block + 4).contains(&err.line), "{err}");
}

#[test]
fn closures_need_a_covering_practice() {
    let src = DEMO_PRACTICE_TOML.replacen("[covering_practice]\nname", "[unused]\nname", 1);
    let err = PracticeConfig::from_toml_str(&src).unwrap_err();
    assert!(err.message.contains("unused"), "unknown table first: {err}");
    let start = DEMO_PRACTICE_TOML.find("[covering_practice]").unwrap();
    let end = DEMO_PRACTICE_TOML[start..].find("\n\n").unwrap() + start;
    let src = format!(
        "{}{}",
        &DEMO_PRACTICE_TOML[..start],
        &DEMO_PRACTICE_TOML[end..]
    );
    let err = PracticeConfig::from_toml_str(&src).unwrap_err();
    assert!(err.message.contains("covering practice"), "{err}");
    assert_eq!(err.line, line_of(&src, "[[closures]]"), "{err}");
}

#[test]
fn unreadable_files_are_reported_in_the_same_shape() {
    let path = std::path::Path::new("/nonexistent/practice.toml");
    let io = std::fs::read_to_string(path).unwrap_err();
    let err = ConfigError::unreadable(path, &io);
    assert_eq!(err.line, 0);
    assert!(
        err.to_string()
            .starts_with("practice.toml: cannot read /nonexistent/practice.toml")
    );
}
