//! Statutory public holidays of the German Länder under the law as it stands, computed for any
//! coming year (docs/practice-tools.md §2.6; earlier years are not modelled). A practice names its Land in `practice.toml` (`state = "BE"`) and no longer keeps the
//! statutory days by hand; `[[public_holidays]]` then lists only what the Land's law leaves to
//! the municipality (Mariä Himmelfahrt in most Bavarian communities, Fronleichnam in parts of
//! Saxony and Thuringia, the Augsburger Friedensfest) and one-off days.

use jiff::civil::{Date, Weekday};

/// A German Land, by its ISO 3166-2:DE code without the `DE-` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Land {
    /// Baden-Württemberg.
    Bw,
    /// Bayern.
    By,
    /// Berlin.
    Be,
    /// Brandenburg.
    Bb,
    /// Bremen.
    Hb,
    /// Hamburg.
    Hh,
    /// Hessen.
    He,
    /// Mecklenburg-Vorpommern.
    Mv,
    /// Niedersachsen.
    Ni,
    /// Nordrhein-Westfalen.
    Nw,
    /// Rheinland-Pfalz.
    Rp,
    /// Saarland.
    Sl,
    /// Sachsen.
    Sn,
    /// Sachsen-Anhalt.
    St,
    /// Schleswig-Holstein.
    Sh,
    /// Thüringen.
    Th,
}

use Land::*;

/// Every Land with its code, in the order the codes are listed to the operator.
pub const LANDS: [(Land, &str); 16] = [
    (Bw, "BW"),
    (By, "BY"),
    (Be, "BE"),
    (Bb, "BB"),
    (Hb, "HB"),
    (Hh, "HH"),
    (He, "HE"),
    (Mv, "MV"),
    (Ni, "NI"),
    (Nw, "NW"),
    (Rp, "RP"),
    (Sl, "SL"),
    (Sn, "SN"),
    (St, "ST"),
    (Sh, "SH"),
    (Th, "TH"),
];

impl Land {
    /// The Land with this code (`"BY"`, case-insensitive; `"DE-BY"` too).
    pub fn from_code(code: &str) -> Option<Land> {
        let code = code.trim();
        let code = code
            .get(..3)
            .filter(|p| p.eq_ignore_ascii_case("DE-"))
            .map_or(code, |_| &code[3..]);
        LANDS
            .iter()
            .find(|(_, c)| c.eq_ignore_ascii_case(code))
            .map(|(l, _)| *l)
    }

    /// Its two-letter code.
    pub fn code(self) -> &'static str {
        LANDS
            .iter()
            .find(|(l, _)| *l == self)
            .map_or("", |(_, c)| c)
    }
}

/// The first whole year of the Gregorian calendar; the Easter rule (integer division rounding
/// towards zero) also needs a positive year.
const FIRST_GREGORIAN_YEAR: i16 = 1583;

/// When a holiday falls.
#[derive(Debug, Clone, Copy)]
enum When {
    /// Every year on this month and day.
    Fixed(i8, i8),
    /// This many days after Easter Sunday.
    Easter(i16),
    /// The Wednesday before 23 November (Buß- und Bettag).
    WednesdayBeforeNov23,
}

/// Where it is a statutory day off.
#[derive(Debug, Clone, Copy)]
enum Where {
    Everywhere,
    Only(&'static [Land]),
}

/// The statutory holidays (docs/practice-tools.md §2.6 has the laws). Days a Land's law leaves to
/// single municipalities are not here: the practice lists them.
const RULES: &[(When, &str, Where)] = &[
    (When::Fixed(1, 1), "Neujahr", Where::Everywhere),
    (
        When::Fixed(1, 6),
        "Heilige Drei Könige",
        Where::Only(&[Bw, By, St]),
    ),
    (
        When::Fixed(3, 8),
        "Internationaler Frauentag",
        Where::Only(&[Be, Mv]),
    ),
    (When::Easter(-2), "Karfreitag", Where::Everywhere),
    // Sundays anyway; Brandenburg's law names them, so a notice can say so.
    (When::Easter(0), "Ostersonntag", Where::Only(&[Bb])),
    (When::Easter(1), "Ostermontag", Where::Everywhere),
    (When::Fixed(5, 1), "Tag der Arbeit", Where::Everywhere),
    (When::Easter(39), "Christi Himmelfahrt", Where::Everywhere),
    (When::Easter(49), "Pfingstsonntag", Where::Only(&[Bb])),
    (When::Easter(50), "Pfingstmontag", Where::Everywhere),
    (
        When::Easter(60),
        "Fronleichnam",
        Where::Only(&[Bw, By, He, Nw, Rp, Sl]),
    ),
    (When::Fixed(8, 15), "Mariä Himmelfahrt", Where::Only(&[Sl])),
    (When::Fixed(9, 20), "Weltkindertag", Where::Only(&[Th])),
    (
        When::Fixed(10, 3),
        "Tag der Deutschen Einheit",
        Where::Everywhere,
    ),
    (
        When::Fixed(10, 31),
        "Reformationstag",
        Where::Only(&[Bb, Hb, Hh, Mv, Ni, Sn, St, Sh, Th]),
    ),
    (
        When::Fixed(11, 1),
        "Allerheiligen",
        Where::Only(&[Bw, By, Nw, Rp, Sl]),
    ),
    (
        When::WednesdayBeforeNov23,
        "Buß- und Bettag",
        Where::Only(&[Sn]),
    ),
    (When::Fixed(12, 25), "1. Weihnachtstag", Where::Everywhere),
    (When::Fixed(12, 26), "2. Weihnachtstag", Where::Everywhere),
];

/// Easter Sunday of `year` in the Gregorian calendar (the anonymous algorithm published by
/// Meeus). `None` before the calendar's first full year, 1583.
pub fn easter_sunday(year: i16) -> Option<Date> {
    if year < FIRST_GREGORIAN_YEAR {
        return None;
    }
    let y = i32::from(year);
    let (a, b, c) = (y % 19, y / 100, y % 100);
    let (d, e) = (b / 4, b % 4);
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let (i, k) = (c / 4, c % 4);
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    Date::new(year, i8::try_from(month).ok()?, i8::try_from(day).ok()?).ok()
}

fn date_of(when: When, year: i16, easter: Date) -> Option<Date> {
    match when {
        When::Fixed(m, d) => Date::new(year, m, d).ok(),
        When::Easter(offset) => easter
            .checked_add(jiff::Span::new().days(i64::from(offset)))
            .ok(),
        When::WednesdayBeforeNov23 => {
            let nov22 = Date::new(year, 11, 22).ok()?;
            let back = (nov22.weekday().to_monday_zero_offset()
                - Weekday::Wednesday.to_monday_zero_offset())
            .rem_euclid(7);
            nov22
                .checked_sub(jiff::Span::new().days(i64::from(back)))
                .ok()
        }
    }
}

fn applies(place: Where, land: Land) -> bool {
    match place {
        Where::Everywhere => true,
        Where::Only(lands) => lands.contains(&land),
    }
}

/// The statutory holiday of `land` on `date`, by name.
pub fn statutory_holiday(land: Land, date: Date) -> Option<&'static str> {
    let easter = easter_sunday(date.year())?;
    RULES
        .iter()
        .find(|(when, _, place)| {
            applies(*place, land) && date_of(*when, date.year(), easter) == Some(date)
        })
        .map(|(_, name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    /// All statutory holidays of `land` in `year`, by date.
    fn statutory_holidays(land: Land, year: i16) -> Vec<(Date, &'static str)> {
        let Some(easter) = easter_sunday(year) else {
            return Vec::new();
        };
        let mut days: Vec<(Date, &'static str)> = RULES
            .iter()
            .filter(|(_, _, place)| applies(*place, land))
            .filter_map(|(when, name, _)| Some((date_of(*when, year, easter)?, *name)))
            .collect();
        days.sort_by_key(|(d, _)| *d);
        days
    }

    #[test]
    fn easter_matches_the_published_dates() {
        // Dates from the churches' tables; 2285 and 1943 are the earliest and latest possible.
        for (y, m, d) in [
            (1943, 4, 25),
            (1981, 4, 19),
            (2000, 4, 23),
            (2019, 4, 21),
            (2024, 3, 31),
            (2025, 4, 20),
            (2026, 4, 5),
            (2027, 3, 28),
            (2038, 4, 25),
            (2285, 3, 22),
        ] {
            assert_eq!(easter_sunday(y), Some(date(y, m, d)), "{y}");
        }
        assert_eq!(easter_sunday(1582), None);
        assert_eq!(easter_sunday(-5), None);
        assert!(statutory_holidays(Be, -5).is_empty());
    }

    #[test]
    fn buss_und_bettag_is_the_wednesday_before_november_23() {
        for (y, d) in [(2024, 20), (2025, 19), (2026, 18), (2027, 17), (2028, 22)] {
            assert_eq!(
                statutory_holiday(Sn, date(y, 11, d)),
                Some("Buß- und Bettag")
            );
            assert_eq!(statutory_holiday(Be, date(y, 11, d)), None);
        }
    }

    #[test]
    fn each_land_has_its_own_days() {
        // The count per Land in a year without coincidences (2027): nine everywhere, plus the
        // Land's own (docs/practice-tools.md §2.6).
        let counts: Vec<(&str, usize)> = LANDS
            .iter()
            .map(|(l, c)| (*c, statutory_holidays(*l, 2027).len()))
            .collect();
        let expected = [
            ("BW", 12),
            ("BY", 12),
            ("BE", 10),
            ("BB", 12),
            ("HB", 10),
            ("HH", 10),
            ("HE", 10),
            ("MV", 11),
            ("NI", 10),
            ("NW", 11),
            ("RP", 11),
            ("SL", 12),
            ("SN", 11),
            ("ST", 11),
            ("SH", 10),
            ("TH", 11),
        ];
        assert_eq!(counts, expected);
        assert_eq!(
            statutory_holiday(By, date(2027, 5, 27)),
            Some("Fronleichnam")
        );
        assert_eq!(statutory_holiday(Be, date(2027, 5, 27)), None);
        assert_eq!(
            statutory_holiday(Th, date(2027, 9, 20)),
            Some("Weltkindertag")
        );
        assert_eq!(statutory_holiday(Be, date(2027, 3, 26)), Some("Karfreitag"));
        assert_eq!(statutory_holiday(Be, date(2027, 3, 25)), None);
    }

    #[test]
    fn codes_are_read_tolerantly() {
        assert_eq!(Land::from_code("by"), Some(By));
        assert_eq!(Land::from_code(" DE-NW "), Some(Nw));
        assert_eq!(Land::from_code("Bayern"), None);
        assert_eq!(Land::from_code("DE"), None);
        assert!(LANDS.iter().all(|(l, c)| l.code() == *c));
    }
}
