//! The practice calendar: pure functions of the configuration and `now`.
//!
//! Opening state, 116 117 hours, holidays and closures, emergency advice, slot generation from
//! weekly templates, and German labels. Nothing here reads the clock: every function that depends
//! on time takes the instant as an argument.

use jiff::Timestamp;
use jiff::civil::Date;

use super::config::{Closure, CoveringPractice, Interval, PracticeConfig};
use super::holidays;

/// How many days ahead [`next_opening`] looks before giving up.
pub const NEXT_OPENING_SEARCH_DAYS: i64 = 60;

const WEEKDAYS_DE: [&str; 7] = [
    "Montag",
    "Dienstag",
    "Mittwoch",
    "Donnerstag",
    "Freitag",
    "Samstag",
    "Sonntag",
];
const MONTHS_DE: [&str; 12] = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];

/// An instant seen in the practice's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalMoment {
    /// Local date.
    pub date: Date,
    /// Minutes since local midnight.
    pub minute: u16,
    /// Weekday index, 0 = Monday.
    pub weekday: usize,
}

/// Converts an instant to the practice's local date and minute.
pub fn local(config: &PracticeConfig, at: Timestamp) -> LocalMoment {
    let dt = config.timezone.to_datetime(at);
    LocalMoment {
        date: dt.date(),
        minute: dt.hour() as u16 * 60 + dt.minute() as u16,
        weekday: weekday_index(dt.date()),
    }
}

/// Weekday index (0 = Monday) of a date.
pub fn weekday_index(date: Date) -> usize {
    (date.weekday().to_monday_one_offset() - 1) as usize
}

/// The instant of a local date and minute (DST gaps resolve forwards).
pub fn instant(config: &PracticeConfig, date: Date, minute: u16) -> Timestamp {
    let (h, m) = ((minute / 60) as i8, (minute % 60) as i8);
    let dt = if h >= 24 {
        next_day(date).at(0, 0, 0, 0)
    } else {
        date.at(h, m, 0, 0)
    };
    // A civil time that exists in every zone except for a DST gap, which `to_timestamp` resolves.
    config
        .timezone
        .to_timestamp(dt)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The following day (saturating at jiff's maximum date).
pub fn next_day(date: Date) -> Date {
    date.tomorrow().unwrap_or(date)
}

/// `date` plus `days` (saturating).
pub fn add_days(date: Date, days: i64) -> Date {
    let mut d = date;
    if days >= 0 {
        for _ in 0..days {
            d = next_day(d);
        }
    } else {
        for _ in 0..(-days) {
            d = d.yesterday().unwrap_or(d);
        }
    }
    d
}

/// The name of the public holiday on `date`, if any: a listed one, else the statutory one of
/// the practice's Land (docs/practice-tools.md §2.6).
pub fn public_holiday(config: &PracticeConfig, date: Date) -> Option<&str> {
    config
        .public_holidays
        .iter()
        .find(|h| h.date == date)
        .map(|h| h.name.as_str())
        .or_else(|| {
            config
                .state
                .and_then(|land| holidays::statutory_holiday(land, date))
        })
}

/// The closure covering `date`, if any.
pub fn closure(config: &PracticeConfig, date: Date) -> Option<&Closure> {
    config
        .closures
        .iter()
        .find(|c| c.from <= date && date <= c.to)
}

/// Whether the practice is closed all day on `date`: a public holiday or a closure.
pub fn closed_all_day(config: &PracticeConfig, date: Date) -> bool {
    public_holiday(config, date).is_some() || closure(config, date).is_some()
}

/// Opening intervals of `date` (empty on public holidays and closures).
pub fn opening_intervals(config: &PracticeConfig, date: Date) -> &[Interval] {
    if closed_all_day(config, date) {
        return &[];
    }
    config.opening_hours.day(weekday_index(date))
}

/// Minutes the practice is still open today from `now` on (the rest of the current opening
/// and any later one today).
pub fn open_minutes_left_today(config: &PracticeConfig, now: Timestamp) -> u32 {
    let l = local(config, now);
    opening_intervals(config, l.date)
        .iter()
        .map(|i| u32::from(i.end.saturating_sub(i.start.max(l.minute))))
        .sum()
}

/// Whether the practice is open at `now`.
pub fn is_open(config: &PracticeConfig, now: Timestamp) -> bool {
    let l = local(config, now);
    opening_intervals(config, l.date)
        .iter()
        .any(|i| i.contains(l.minute))
}

/// Whether the 116 117 service is in its organised hours at `now`.
pub fn emergency_service_active(config: &PracticeConfig, now: Timestamp) -> bool {
    let l = local(config, now);
    let es = &config.emergency_service;
    (es.public_holidays_all_day && public_holiday(config, l.date).is_some())
        || es.hours.day(l.weekday).iter().any(|i| i.contains(l.minute))
}

/// The next instant at or after `now` at which the practice opens (None if not within 60 days).
pub fn next_opening(config: &PracticeConfig, now: Timestamp) -> Option<Timestamp> {
    let l = local(config, now);
    let mut date = l.date;
    for day in 0..NEXT_OPENING_SEARCH_DAYS {
        for iv in opening_intervals(config, date) {
            if day > 0 || iv.start >= l.minute {
                return Some(instant(config, date, iv.start));
            }
        }
        date = next_day(date);
    }
    None
}

/// Which advice the agent gives for an emergency call (docs/practice-tools.md §3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advice {
    /// Hang up and dial 112 (always for life-threatening cases).
    Call112,
    /// Transfer to the practice staff (open, staff line configured).
    Transfer,
    /// Offer a same-day appointment (practice opens again today).
    SameDay,
    /// Call the ärztlicher Bereitschaftsdienst 116 117 (only inside its hours).
    Call116117,
    /// Call the covering practice (closure, or break with a covering practice).
    CallVertretung,
}

impl Advice {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Advice::Call112 => "call_112",
            Advice::Transfer => "transfer",
            Advice::SameDay => "same_day",
            Advice::Call116117 => "call_116117",
            Advice::CallVertretung => "call_vertretung",
        }
    }

    /// The advice spelled `text` by [`Advice::as_str`], if any.
    pub fn parse(text: &str) -> Option<Advice> {
        [
            Advice::Call112,
            Advice::Transfer,
            Advice::SameDay,
            Advice::Call116117,
            Advice::CallVertretung,
        ]
        .into_iter()
        .find(|a| a.as_str() == text)
    }
}

impl serde::Serialize for Advice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The emergency decision with what the agent needs to say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyDecision {
    /// The advice.
    pub advice: Advice,
    /// The covering practice to name, when the advice is [`Advice::CallVertretung`].
    pub covering: Option<CoveringPractice>,
    /// When the practice opens next.
    pub reopens: Option<Timestamp>,
    /// Whether the bridge can transfer to staff now.
    pub transfer_available: bool,
}

/// Decides the emergency advice at `now` from the calendar. Life-threatening is always 112.
pub fn emergency_advice(
    config: &PracticeConfig,
    life_threatening: bool,
    now: Timestamp,
) -> EmergencyDecision {
    let open = is_open(config, now);
    let transfer_available = open && config.staff_transfer_number.is_some();
    let reopens = next_opening(config, now);
    let decision = |advice, covering| EmergencyDecision {
        advice,
        covering,
        reopens,
        transfer_available,
    };
    if life_threatening {
        return decision(Advice::Call112, None);
    }
    if open {
        return decision(
            if transfer_available {
                Advice::Transfer
            } else {
                Advice::SameDay
            },
            None,
        );
    }
    if emergency_service_active(config, now) {
        return decision(Advice::Call116117, None);
    }
    let l = local(config, now);
    if let Some(c) = closure(config, l.date) {
        let covering = c
            .covering
            .clone()
            .or_else(|| config.covering_practice.clone());
        // A closure from the staff page has no covering practice of its own; without a
        // default one, 116 117 is the nationwide answer (docs/practice-tools.md §2.7).
        return match covering {
            Some(v) => decision(Advice::CallVertretung, Some(v)),
            None => decision(Advice::Call116117, None),
        };
    }
    let today = opening_intervals(config, l.date);
    let reopens_today = today.iter().any(|i| i.start > l.minute);
    let in_break = reopens_today && today.iter().any(|i| i.end <= l.minute);
    if in_break
        && let Some(c) = config
            .covering_practice
            .as_ref()
            .filter(|c| c.during_breaks)
    {
        return decision(Advice::CallVertretung, Some(c.clone()));
    }
    if reopens_today {
        return decision(Advice::SameDay, None);
    }
    // Outside every configured rule (a gap in the 116 117 hours): a covering practice if there is
    // one, otherwise 116 117 as the nationwide fallback.
    match config.covering_practice.clone() {
        Some(c) => decision(Advice::CallVertretung, Some(c)),
        None => decision(Advice::Call116117, None),
    }
}

/// A slot generated from a weekly template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotCandidate {
    /// Practitioner id.
    pub practitioner: String,
    /// Start, UTC seconds.
    pub start: i64,
    /// End, UTC seconds.
    pub end: i64,
    /// Visit types it can take.
    pub visit_types: Vec<String>,
}

/// Generates the template slots of the local dates `from..=to` (skipping holidays and closures),
/// sorted by start then practitioner.
pub fn slot_candidates(config: &PracticeConfig, from: Date, to: Date) -> Vec<SlotCandidate> {
    let mut out = Vec::new();
    let mut date = from;
    while date <= to {
        let closed = closed_all_day(config, date);
        let wd = weekday_index(date);
        for t in config
            .slot_templates
            .iter()
            .filter(|t| t.weekdays[wd] && !closed)
        {
            for iv in &t.hours {
                let mut m = iv.start;
                while m + t.slot_minutes <= iv.end {
                    out.push(SlotCandidate {
                        practitioner: t.practitioner.clone(),
                        start: instant(config, date, m).as_second(),
                        end: instant(config, date, m + t.slot_minutes).as_second(),
                        visit_types: t.visit_types.clone(),
                    });
                    m += t.slot_minutes;
                }
            }
        }
        let next = next_day(date);
        if next == date {
            break;
        }
        date = next;
    }
    out.sort_by(|a, b| {
        a.start
            .cmp(&b.start)
            .then_with(|| a.practitioner.cmp(&b.practitioner))
    });
    out
}

/// German label of an instant: `"Dienstag, 25. November, 10:30 Uhr"`.
pub fn label(config: &PracticeConfig, at: Timestamp) -> String {
    let dt = config.timezone.to_datetime(at);
    format!(
        "{}, {}:{:02} Uhr",
        spoken_date(dt.date()),
        dt.hour(),
        dt.minute()
    )
}

/// ISO-8601 local time with offset: `"2026-11-25T10:30:00+01:00"`.
pub fn iso(config: &PracticeConfig, at: Timestamp) -> String {
    let dt = config.timezone.to_datetime(at);
    let off = config.timezone.to_offset(at).seconds();
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.unsigned_abs();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        off / 3600,
        (off % 3600) / 60
    )
}

/// German date label: `"Dienstag, 24.11.2026"`.
pub fn date_label(date: Date) -> String {
    format!(
        "{}, {:02}.{:02}.{}",
        WEEKDAYS_DE[weekday_index(date)],
        date.day(),
        date.month(),
        date.year()
    )
}

/// A German date as said aloud: `"Dienstag, 24. November"`.
pub fn spoken_date(date: Date) -> String {
    format!(
        "{}, {}",
        WEEKDAYS_DE[weekday_index(date)],
        day_month_label(date)
    )
}

/// Short German date: `"2. Januar"`.
pub fn day_month_label(date: Date) -> String {
    format!("{}. {}", date.day(), MONTHS_DE[(date.month() - 1) as usize])
}

/// Local time label `"10:42"`.
pub fn time_label(config: &PracticeConfig, at: Timestamp) -> String {
    let dt = config.timezone.to_datetime(at);
    format!("{:02}:{:02}", dt.hour(), dt.minute())
}

/// `"8:00–12:00 und 15:00–18:00 Uhr"`.
pub fn hours_label(intervals: &[Interval]) -> String {
    let parts: Vec<String> = intervals
        .iter()
        .map(|i| format!("{}–{}", hhmm(i.start), hhmm(i.end)))
        .collect();
    match parts.len() {
        0 => "geschlossen".to_string(),
        1 => format!("{} Uhr", parts[0]),
        _ => {
            let (last, rest) = parts.split_last().unwrap_or((&parts[0], &[]));
            format!("{} und {} Uhr", rest.join(", "), last)
        }
    }
}

fn hhmm(m: u16) -> String {
    format!("{}:{:02}", m / 60, m % 60)
}

/// Today's hours as said to the caller, including holiday and closure notes.
pub fn hours_today(config: &PracticeConfig, now: Timestamp) -> String {
    let d = local(config, now).date;
    if let Some(name) = public_holiday(config, d) {
        return format!("heute geschlossen ({name})");
    }
    if let Some(c) = closure(config, d) {
        return format!("heute geschlossen ({})", c.reason);
    }
    let iv = opening_intervals(config, d);
    if iv.is_empty() {
        "heute geschlossen".to_string()
    } else {
        format!("heute {}", hours_label(iv))
    }
}

/// A notice about closures today or within the next 14 days (`"keine"` if there is none).
pub fn practice_notice(config: &PracticeConfig, now: Timestamp) -> String {
    let today = local(config, now).date;
    let soon = add_days(today, 14);
    let mut notes = Vec::new();
    for c in config
        .closures
        .iter()
        .filter(|c| c.to >= today && c.from <= soon)
    {
        let covering = c.covering.as_ref().or(config.covering_practice.as_ref());
        let mut s = if c.from <= today {
            format!("{} bis einschließlich {}", c.reason, day_month_label(c.to))
        } else {
            format!(
                "{} vom {} bis {}",
                c.reason,
                day_month_label(c.from),
                day_month_label(c.to)
            )
        };
        if let Some(v) = covering {
            s.push_str(&format!("; Vertretung: {}, Telefon {}", v.name, v.phone));
        }
        notes.push(s);
    }
    let mut day = today;
    while day <= soon {
        if let Some(name) = public_holiday(config, day) {
            notes.push(format!("{name} am {} geschlossen", day_month_label(day)));
        }
        day = next_day(day);
    }
    if notes.is_empty() {
        "keine".to_string()
    } else {
        notes.join(". ")
    }
}

/// What to tell a caller about help outside the opening hours, as of `now`.
pub fn after_hours_advice(config: &PracticeConfig, now: Timestamp) -> String {
    let es = &config.emergency_service.number;
    let base = "Bei Lebensgefahr sofort 112 anrufen.".to_string();
    let d = emergency_advice(config, false, now);
    let now_part = match d.advice {
        Advice::Transfer | Advice::SameDay if is_open(config, now) => {
            "Die Praxis ist jetzt geöffnet.".to_string()
        }
        Advice::Call116117 => {
            format!("Jetzt ist der ärztliche Bereitschaftsdienst unter {es} erreichbar.")
        }
        Advice::CallVertretung => match d.covering {
            Some(c) => format!("Jetzt vertritt uns {}, Telefon {}.", c.name, c.phone),
            None => format!("Außerhalb der Sprechzeiten hilft der Bereitschaftsdienst unter {es}."),
        },
        _ => match d.reopens {
            Some(t) => format!("Die Praxis öffnet wieder {}.", label(config, t)),
            None => String::new(),
        },
    };
    format!("{base} {now_part}").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PracticeConfig {
        PracticeConfig::demo()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn labels_are_german_and_local() {
        let c = cfg();
        // 09:30 UTC in November is 10:30 in Berlin (CET, +01:00).
        let t = at("2026-11-25T09:30:00Z");
        assert_eq!(label(&c, t), "Mittwoch, 25. November, 10:30 Uhr");
        assert_eq!(iso(&c, t), "2026-11-25T10:30:00+01:00");
        // Summer time.
        assert_eq!(
            iso(&c, at("2027-06-01T06:00:00Z")),
            "2027-06-01T08:00:00+02:00"
        );
        assert_eq!(
            hours_label(&[
                Interval {
                    start: 480,
                    end: 720
                },
                Interval {
                    start: 900,
                    end: 1080
                }
            ]),
            "8:00–12:00 und 15:00–18:00 Uhr"
        );
    }

    /// A closure without a covering practice (as the staff page enters them) in a practice
    /// without a default one: 116 117, never "call the covering practice" with none to name.
    #[test]
    fn a_closure_without_any_covering_practice_advises_116117() {
        let mut c = cfg();
        let wed: Date = "2026-11-25".parse().unwrap();
        c.closures.push(Closure {
            from: wed,
            to: wed,
            reason: "Krankheit".into(),
            covering: None,
            staff_closure_id: Some(1),
        });
        let t = at("2026-11-25T09:30:00Z"); // 10:30, inside the opening hours
        assert!(!is_open(&c, t));
        assert!(c.covering_practice.is_some(), "the demo has a default one");
        assert_eq!(
            emergency_advice(&c, false, t).advice,
            Advice::CallVertretung
        );
        c.covering_practice = None;
        let d = emergency_advice(&c, false, t);
        assert_eq!((d.advice, d.covering), (Advice::Call116117, None));
    }

    #[test]
    fn slot_candidates_follow_templates() {
        let c = cfg();
        let d: Date = "2026-11-25".parse().unwrap(); // Wednesday
        let s = slot_candidates(&c, d, d);
        // schmidt 08-12 (16 slots) + yilmaz 08-12 (16 slots).
        assert_eq!(s.len(), 32);
        assert!(s.windows(2).all(|w| w[0].start <= w[1].start));
        let xmas: Date = "2026-12-25".parse().unwrap();
        assert!(slot_candidates(&c, xmas, xmas).is_empty());
    }
}
