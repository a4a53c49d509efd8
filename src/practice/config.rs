//! `practice.toml`: the practice as configuration (name, hours, practitioners, visit types, slot
//! templates, holidays, covering practice, 116 117 hours, staff transfer number).
//!
//! [`PracticeConfig::from_toml_str`] parses and validates in one step; every error names the line
//! (and column) of the offending value, taken from the TOML parser's byte spans.

use std::fmt;
use std::ops::Range;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Deserialize;
use toml::Spanned;

use super::holidays::{LANDS, Land};

/// The shipped Demo Praxis configuration (the repository's `practice.toml`).
pub const DEMO_PRACTICE_TOML: &str = include_str!("../../practice.toml");

/// Shortest visit or slot length accepted, in minutes.
pub const MIN_SLOT_MINUTES: u16 = 5;
/// Longest visit or slot length accepted, in minutes.
pub const MAX_SLOT_MINUTES: u16 = 240;
/// Longest booking horizon accepted, in days.
pub const MAX_HORIZON_DAYS: u32 = 120;
/// Longest accepted text value (names, labels, reasons), in characters.
pub const MAX_TEXT_CHARS: usize = 120;

/// A validation or parse error in `practice.toml`, with the position it refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line of the offending value (0 when the position is unknown).
    pub line: usize,
    /// 1-based column of the offending value (0 when unknown).
    pub column: usize,
    /// What is wrong, in English, for the operator.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "practice.toml: {}", self.message)
        } else {
            write!(
                f,
                "practice.toml line {}, column {}: {}",
                self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// The error for a `practice.toml` that could not be read (the driver does the reading).
    pub fn unreadable(path: &std::path::Path, error: &std::io::Error) -> ConfigError {
        ConfigError {
            line: 0,
            column: 0,
            message: format!("cannot read {}: {error}", path.display()),
        }
    }
}

/// A time interval within one local day, in minutes since midnight (`end` may be 1440).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    /// Start, minutes after local midnight.
    pub start: u16,
    /// End (exclusive), minutes after local midnight, at most 1440.
    pub end: u16,
}

impl Interval {
    /// Whether `minute` (minutes after midnight) lies inside `[start, end)`.
    pub fn contains(&self, minute: u16) -> bool {
        self.start <= minute && minute < self.end
    }
}

/// Intervals for each weekday, Monday first (index 0) to Sunday (index 6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeekHours(pub [Vec<Interval>; 7]);

impl WeekHours {
    /// Intervals of one weekday (0 = Monday).
    pub fn day(&self, weekday_index: usize) -> &[Interval] {
        &self.0[weekday_index % 7]
    }
}

/// A practitioner whose calendar the practice offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Practitioner {
    /// Stable identifier used in slot templates and the store.
    pub id: String,
    /// Name as said to callers ("Dr. Schmidt").
    pub display: String,
}

/// A kind of visit, with its duration and booking policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitType {
    /// Code used by the agent (`kontrolle`, `akut`, ...).
    pub code: String,
    /// German label.
    pub label: String,
    /// Duration in minutes.
    pub minutes: u16,
    /// Whether the phone agent may book it.
    pub phone_bookable: bool,
    /// Whether patients new to the practice may book it.
    pub new_patients_ok: bool,
    /// What to bring (read out after booking).
    pub bring: Vec<String>,
}

/// A weekly template that generates fixed slots for one practitioner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTemplate {
    /// Practitioner id.
    pub practitioner: String,
    /// Weekdays it applies to (index 0 = Monday).
    pub weekdays: [bool; 7],
    /// Local intervals that are cut into slots.
    pub hours: Vec<Interval>,
    /// Length of each slot.
    pub slot_minutes: u16,
    /// Visit type codes these slots can take.
    pub visit_types: Vec<String>,
}

/// A practice that takes the practice's patients when it is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoveringPractice {
    /// Name said to the caller.
    pub name: String,
    /// Phone number said to the caller.
    pub phone: String,
    /// Whether it also covers the practice's breaks (lunch) on working days.
    pub during_breaks: bool,
}

/// A public holiday (Feiertag): the practice is closed, 116 117 covers the whole day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicHoliday {
    /// The local date.
    pub date: Date,
    /// German name.
    pub name: String,
}

/// A closure of the practice (Praxisurlaub, Fortbildung), inclusive dates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// First closed day.
    pub from: Date,
    /// Last closed day.
    pub to: Date,
    /// German reason ("Praxisurlaub").
    pub reason: String,
    /// Covering practice for this closure (falls back to the default one).
    pub covering: Option<CoveringPractice>,
    /// The id of the staff page's closure this is (docs/practice-tools.md §2.7); `None` for
    /// one of `practice.toml`.
    pub staff_closure_id: Option<i64>,
}

/// The ärztlicher Bereitschaftsdienst (116 117) and its organised hours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyService {
    /// Number to say ("116 117").
    pub number: String,
    /// Weekly hours in which the service is organised.
    pub hours: WeekHours,
    /// Whether it covers public holidays all day.
    pub public_holidays_all_day: bool,
}

/// The validated practice configuration.
#[derive(Debug, Clone)]
pub struct PracticeConfig {
    /// Practice name ("Demo Praxis").
    pub name: String,
    /// IANA time zone name.
    pub timezone_name: String,
    /// The resolved time zone.
    pub timezone: TimeZone,
    /// Public phone number of the practice.
    pub phone: String,
    /// Staff number the bridge may transfer urgent calls to (when open).
    pub staff_transfer_number: Option<String>,
    /// Whether new patients may book at all (Aufnahmestopp when false).
    pub accepts_new_patients: bool,
    /// Minimum notice, in hours, for the agent to cancel or move an appointment.
    pub min_notice_hours: u32,
    /// How far ahead slots are offered, in days.
    pub booking_horizon_days: u32,
    /// Opening hours (Sprechzeiten).
    pub opening_hours: WeekHours,
    /// Default covering practice.
    pub covering_practice: Option<CoveringPractice>,
    /// 116 117 service hours.
    pub emergency_service: EmergencyService,
    /// The Land whose statutory holidays apply (`state`; `None`: only the listed ones).
    pub state: Option<Land>,
    /// Public holidays listed by hand: with `state`, the local and one-off ones.
    pub public_holidays: Vec<PublicHoliday>,
    /// Closures (holidays of the practice).
    pub closures: Vec<Closure>,
    /// Practitioners.
    pub practitioners: Vec<Practitioner>,
    /// Visit types.
    pub visit_types: Vec<VisitType>,
    /// Weekly slot templates.
    pub slot_templates: Vec<SlotTemplate>,
    /// Call-back prefixes refused as premium-rate, normalised (`PREMIUM_RATE_PREFIXES`, not
    /// `practice.toml`: it is a deployment's safety setting, not the practice's data).
    pub premium_rate_prefixes: Vec<String>,
    /// Failed identifications per hour over all callers before identification pauses
    /// (`IDENTIFICATION_FAILURES_PER_HOUR`, default [`super::calls::MAX_FAILED_IDENTIFICATIONS_PER_HOUR`]).
    pub identification_failures_per_hour: u32,
}

impl PracticeConfig {
    /// Whether, without a `state` whose holidays are computed, the public holiday list ends
    /// (or is empty) before the booking horizon that starts `today` does: slots after its last
    /// date would be offered on holidays not listed (Christmas, say), so the operator must set
    /// `state` or extend `public_holidays` (warned at start-up).
    pub fn holidays_run_out(&self, today: Date) -> bool {
        let horizon_end =
            today.saturating_add(jiff::Span::new().days(i64::from(self.booking_horizon_days)));
        self.state.is_none() && self.last_holiday().is_none_or(|d| d < horizon_end)
    }

    /// The last listed public holiday.
    pub fn last_holiday(&self) -> Option<Date> {
        self.public_holidays.iter().map(|h| h.date).max()
    }

    /// Parses and validates a `practice.toml`.
    pub fn from_toml_str(src: &str) -> Result<PracticeConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(src).map_err(|e| ConfigError {
            line: e.span().map(|s| line_col(src, s.start).0).unwrap_or(0),
            column: e.span().map(|s| line_col(src, s.start).1).unwrap_or(0),
            message: e.message().trim().to_string(),
        })?;
        Validator { src }.validate(raw)
    }

    /// The shipped Demo Praxis configuration.
    pub fn demo() -> PracticeConfig {
        // The shipped file is validated by a unit test, so this cannot fail in a released build.
        Self::from_toml_str(DEMO_PRACTICE_TOML).expect("shipped practice.toml is valid")
    }

    /// The visit type with this code.
    pub fn visit_type(&self, code: &str) -> Option<&VisitType> {
        self.visit_types.iter().find(|v| v.code == code)
    }

    /// The practitioner with this id.
    pub fn practitioner(&self, id: &str) -> Option<&Practitioner> {
        self.practitioners.iter().find(|p| p.id == id)
    }
}

// --- raw (serde) shape --------------------------------------------------------------------------

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    practice: S<RawPractice>,
    opening_hours: S<RawWeek>,
    covering_practice: Option<S<RawCovering>>,
    emergency_service: S<RawEmergencyService>,
    #[serde(default)]
    public_holidays: Vec<S<RawHoliday>>,
    #[serde(default)]
    closures: Vec<S<RawClosure>>,
    practitioners: Vec<S<RawPractitioner>>,
    visit_types: Vec<S<RawVisitType>>,
    slot_templates: Vec<S<RawTemplate>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPractice {
    name: S<String>,
    timezone: S<String>,
    phone: S<String>,
    staff_transfer_number: Option<S<String>>,
    state: Option<S<String>>,
    #[serde(default = "yes")]
    accepts_new_patients: bool,
    #[serde(default = "default_notice")]
    min_notice_hours: S<u32>,
    #[serde(default = "default_horizon")]
    booking_horizon_days: S<u32>,
}

fn yes() -> bool {
    true
}
fn default_notice() -> S<u32> {
    Spanned::new(0..0, 24)
}
fn default_horizon() -> S<u32> {
    Spanned::new(0..0, 28)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWeek {
    #[serde(default)]
    mo: Vec<S<String>>,
    #[serde(default)]
    di: Vec<S<String>>,
    #[serde(default)]
    mi: Vec<S<String>>,
    #[serde(default)]
    #[serde(rename = "do")]
    do_: Vec<S<String>>,
    #[serde(default)]
    fr: Vec<S<String>>,
    #[serde(default)]
    sa: Vec<S<String>>,
    #[serde(default)]
    so: Vec<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCovering {
    name: S<String>,
    phone: S<String>,
    #[serde(default)]
    during_breaks: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmergencyService {
    #[serde(default = "default_116117")]
    number: String,
    #[serde(default = "yes")]
    public_holidays_all_day: bool,
    hours: S<RawWeek>,
}

fn default_116117() -> String {
    "116 117".to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHoliday {
    date: S<String>,
    name: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClosure {
    from: S<String>,
    to: S<String>,
    reason: S<String>,
    covering_practice: Option<S<RawCovering>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPractitioner {
    id: S<String>,
    display: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVisitType {
    code: S<String>,
    label: S<String>,
    minutes: S<u16>,
    phone_bookable: bool,
    #[serde(default)]
    new_patients_ok: bool,
    #[serde(default)]
    bring: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    practitioner: S<String>,
    weekdays: Vec<S<String>>,
    hours: Vec<S<String>>,
    slot_minutes: S<u16>,
    visit_types: Vec<S<String>>,
}

// --- validation ---------------------------------------------------------------------------------

struct Validator<'a> {
    src: &'a str,
}

impl Validator<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = if span == (0..0) {
            (0, 0)
        } else {
            line_col(self.src, span.start)
        };
        ConfigError {
            line,
            column,
            message: message.into(),
        }
    }

    fn text(&self, v: &S<String>, what: &str) -> Result<String, ConfigError> {
        let t = v.get_ref().trim();
        if t.is_empty() || t.chars().count() > MAX_TEXT_CHARS {
            return Err(self.err(
                v.span(),
                format!("{what} must be 1..={MAX_TEXT_CHARS} characters"),
            ));
        }
        Ok(t.to_string())
    }

    fn phone(&self, v: &S<String>, what: &str) -> Result<String, ConfigError> {
        let t = v.get_ref().trim();
        let digits = t.chars().filter(char::is_ascii_digit).count();
        let allowed = t
            .chars()
            .all(|c| c.is_ascii_digit() || " +-/()".contains(c));
        if !allowed || !(3..=20).contains(&digits) {
            return Err(self.err(v.span(), format!("{what} is not a phone number: {t:?}")));
        }
        Ok(t.to_string())
    }

    fn date(&self, v: &S<String>) -> Result<Date, ConfigError> {
        v.get_ref().parse::<Date>().map_err(|_| {
            self.err(
                v.span(),
                format!("not a date (YYYY-MM-DD): {:?}", v.get_ref()),
            )
        })
    }

    fn interval(&self, v: &S<String>) -> Result<Interval, ConfigError> {
        parse_interval(v.get_ref()).ok_or_else(|| {
            self.err(
                v.span(),
                format!(
                    "not a time range \"HH:MM-HH:MM\" with start < end: {:?}",
                    v.get_ref()
                ),
            )
        })
    }

    fn intervals(&self, list: &[S<String>]) -> Result<Vec<Interval>, ConfigError> {
        let mut out: Vec<Interval> = Vec::with_capacity(list.len());
        for item in list {
            let iv = self.interval(item)?;
            if out.iter().any(|o| o.start < iv.end && iv.start < o.end) {
                return Err(self.err(item.span(), "time ranges of one day overlap"));
            }
            out.push(iv);
        }
        out.sort();
        Ok(out)
    }

    fn week(&self, w: &RawWeek) -> Result<WeekHours, ConfigError> {
        Ok(WeekHours([
            self.intervals(&w.mo)?,
            self.intervals(&w.di)?,
            self.intervals(&w.mi)?,
            self.intervals(&w.do_)?,
            self.intervals(&w.fr)?,
            self.intervals(&w.sa)?,
            self.intervals(&w.so)?,
        ]))
    }

    fn covering(&self, c: &RawCovering) -> Result<CoveringPractice, ConfigError> {
        Ok(CoveringPractice {
            name: self.text(&c.name, "covering practice name")?,
            phone: self.phone(&c.phone, "covering practice phone")?,
            during_breaks: c.during_breaks,
        })
    }

    /// Validates in a fixed order (the first error is reported), so an operator fixing one
    /// line at a time sees the same sequence every run.
    fn validate(&self, raw: RawConfig) -> Result<PracticeConfig, ConfigError> {
        let p = raw.practice.get_ref();
        let (timezone_name, timezone) = self.timezone(p)?;
        let min_notice_hours = *p.min_notice_hours.get_ref();
        if min_notice_hours > 24 * 14 {
            return Err(self.err(
                p.min_notice_hours.span(),
                "min_notice_hours must be at most 336",
            ));
        }
        let booking_horizon_days = *p.booking_horizon_days.get_ref();
        if !(1..=MAX_HORIZON_DAYS).contains(&booking_horizon_days) {
            return Err(self.err(
                p.booking_horizon_days.span(),
                format!("booking_horizon_days must be 1..={MAX_HORIZON_DAYS}"),
            ));
        }
        let opening_hours = self.week(raw.opening_hours.get_ref())?;
        if opening_hours.0.iter().all(Vec::is_empty) {
            return Err(self.err(raw.opening_hours.span(), "the practice is never open"));
        }
        let covering_practice = raw
            .covering_practice
            .as_ref()
            .map(|c| self.covering(c.get_ref()))
            .transpose()?;
        let es = raw.emergency_service.get_ref();
        let emergency_service = EmergencyService {
            number: es.number.trim().to_string(),
            hours: self.week(es.hours.get_ref())?,
            public_holidays_all_day: es.public_holidays_all_day,
        };
        let state = p.state.as_ref().map(|s| self.state(s)).transpose()?;
        let public_holidays = self.holidays(&raw.public_holidays)?;
        let closures = self.closures(&raw.closures, covering_practice.is_some())?;
        let practitioners = self.practitioners(&raw.practitioners)?;
        let visit_types = self.visit_types(&raw.visit_types)?;
        let mut slot_templates: Vec<SlotTemplate> = Vec::with_capacity(raw.slot_templates.len());
        for t in &raw.slot_templates {
            let template =
                self.template(t.get_ref(), &practitioners, &visit_types, &opening_hours)?;
            // Slots are unique per practitioner and start only: two templates whose hours
            // overlap on a day (08-12 in 15-minute slots and 08-10 in 30-minute ones) would
            // let 08:15 and 08:00-08:30 both be booked (practice-tools review).
            if let Some(other) = slot_templates.iter().find(|o| overlaps(o, &template)) {
                return Err(self.err(
                    t.span(),
                    format!(
                        "slot template overlaps an earlier one of practitioner {:?} on a \
                         shared weekday ({:?})",
                        template.practitioner, other.hours
                    ),
                ));
            }
            slot_templates.push(template);
        }
        self.phone_bookable_in_templates(&visit_types, &raw.visit_types, &slot_templates)?;
        Ok(PracticeConfig {
            name: self.text(&p.name, "name")?,
            timezone_name,
            timezone,
            phone: self.phone(&p.phone, "phone")?,
            staff_transfer_number: p
                .staff_transfer_number
                .as_ref()
                .map(|s| self.phone(s, "staff_transfer_number"))
                .transpose()?,
            accepts_new_patients: p.accepts_new_patients,
            min_notice_hours,
            booking_horizon_days,
            opening_hours,
            covering_practice,
            emergency_service,
            state,
            public_holidays,
            closures,
            practitioners,
            visit_types,
            slot_templates,
            premium_rate_prefixes: super::premium::default_prefixes(),
            identification_failures_per_hour: super::calls::MAX_FAILED_IDENTIFICATIONS_PER_HOUR,
        })
    }

    fn timezone(&self, p: &RawPractice) -> Result<(String, TimeZone), ConfigError> {
        let name = p.timezone.get_ref().clone();
        let tz = TimeZone::get(&name)
            .map_err(|_| self.err(p.timezone.span(), format!("unknown time zone {name:?}")))?;
        Ok((name, tz))
    }

    fn state(&self, v: &S<String>) -> Result<Land, ConfigError> {
        Land::from_code(v.get_ref()).ok_or_else(|| {
            let codes: Vec<&str> = LANDS.iter().map(|(_, c)| *c).collect();
            self.err(
                v.span(),
                format!(
                    "unknown state {:?}: the Land's code, one of {}",
                    v.get_ref(),
                    codes.join(" ")
                ),
            )
        })
    }

    fn holidays(&self, raw: &[S<RawHoliday>]) -> Result<Vec<PublicHoliday>, ConfigError> {
        raw.iter()
            .map(|h| {
                let h = h.get_ref();
                Ok(PublicHoliday {
                    date: self.date(&h.date)?,
                    name: self.text(&h.name, "name")?,
                })
            })
            .collect()
    }

    fn closures(
        &self,
        raw: &[S<RawClosure>],
        has_default_covering: bool,
    ) -> Result<Vec<Closure>, ConfigError> {
        let mut closures = Vec::new();
        for c in raw {
            let span = c.span();
            let c = c.get_ref();
            let from = self.date(&c.from)?;
            let to = self.date(&c.to)?;
            if to < from {
                return Err(self.err(c.to.span(), "closure ends before it starts"));
            }
            let covering = c
                .covering_practice
                .as_ref()
                .map(|x| self.covering(x.get_ref()))
                .transpose()?;
            if covering.is_none() && !has_default_covering {
                return Err(self.err(
                    span,
                    "closure without a covering practice and no default [covering_practice]",
                ));
            }
            closures.push(Closure {
                from,
                to,
                reason: self.text(&c.reason, "reason")?,
                covering,
                staff_closure_id: None,
            });
        }
        Ok(closures)
    }

    fn practitioners(&self, raw: &[S<RawPractitioner>]) -> Result<Vec<Practitioner>, ConfigError> {
        let mut practitioners: Vec<Practitioner> = Vec::new();
        for pr in raw {
            let pr = pr.get_ref();
            let id = self.code(&pr.id, "practitioner id")?;
            if practitioners.iter().any(|x| x.id == id) {
                return Err(self.err(pr.id.span(), format!("duplicate practitioner id {id:?}")));
            }
            practitioners.push(Practitioner {
                id,
                display: self.text(&pr.display, "display")?,
            });
        }
        if practitioners.is_empty() {
            return Err(self.err(0..0, "at least one [[practitioners]] entry is required"));
        }
        Ok(practitioners)
    }

    fn visit_types(&self, raw: &[S<RawVisitType>]) -> Result<Vec<VisitType>, ConfigError> {
        let mut visit_types: Vec<VisitType> = Vec::new();
        for vt in raw {
            let vt = vt.get_ref();
            let code = self.code(&vt.code, "visit type code")?;
            if visit_types.iter().any(|x| x.code == code) {
                return Err(self.err(vt.code.span(), format!("duplicate visit type {code:?}")));
            }
            let minutes = *vt.minutes.get_ref();
            if !(MIN_SLOT_MINUTES..=MAX_SLOT_MINUTES).contains(&minutes) {
                return Err(self.err(
                    vt.minutes.span(),
                    format!("minutes must be {MIN_SLOT_MINUTES}..={MAX_SLOT_MINUTES}"),
                ));
            }
            visit_types.push(VisitType {
                code,
                label: self.text(&vt.label, "label")?,
                minutes,
                phone_bookable: vt.phone_bookable,
                new_patients_ok: vt.new_patients_ok,
                bring: vt.bring.clone(),
            });
        }
        Ok(visit_types)
    }

    fn template(
        &self,
        t: &RawTemplate,
        practitioners: &[Practitioner],
        visit_types: &[VisitType],
        opening_hours: &WeekHours,
    ) -> Result<SlotTemplate, ConfigError> {
        let practitioner = t.practitioner.get_ref().clone();
        if !practitioners.iter().any(|p| p.id == practitioner) {
            return Err(self.err(
                t.practitioner.span(),
                format!("unknown practitioner {practitioner:?}"),
            ));
        }
        let slot_minutes = *t.slot_minutes.get_ref();
        if !(MIN_SLOT_MINUTES..=MAX_SLOT_MINUTES).contains(&slot_minutes) {
            return Err(self.err(
                t.slot_minutes.span(),
                format!("slot_minutes must be {MIN_SLOT_MINUTES}..={MAX_SLOT_MINUTES}"),
            ));
        }
        let mut weekdays = [false; 7];
        for d in &t.weekdays {
            let i = weekday_index(d.get_ref()).ok_or_else(|| {
                self.err(
                    d.span(),
                    format!("unknown weekday {:?} (mo..so)", d.get_ref()),
                )
            })?;
            weekdays[i] = true;
        }
        let hours = self.intervals(&t.hours)?;
        self.inside_opening_hours(&weekdays, &hours, &t.hours, opening_hours)?;
        let mut codes = Vec::new();
        for v in &t.visit_types {
            let Some(vt) = visit_types.iter().find(|x| &x.code == v.get_ref()) else {
                return Err(self.err(v.span(), format!("unknown visit type {:?}", v.get_ref())));
            };
            if vt.minutes > slot_minutes {
                return Err(self.err(
                    v.span(),
                    format!(
                        "visit type {:?} takes {} min, longer than the {slot_minutes}-min slots",
                        vt.code, vt.minutes
                    ),
                ));
            }
            codes.push(vt.code.clone());
        }
        Ok(SlotTemplate {
            practitioner,
            weekdays,
            hours,
            slot_minutes,
            visit_types: codes,
        })
    }

    fn inside_opening_hours(
        &self,
        weekdays: &[bool; 7],
        hours: &[Interval],
        raw_hours: &[S<String>],
        opening_hours: &WeekHours,
    ) -> Result<(), ConfigError> {
        for (i, on) in weekdays.iter().enumerate() {
            if !on {
                continue;
            }
            for (h, raw_h) in hours.iter().zip(raw_hours) {
                let inside = opening_hours
                    .day(i)
                    .iter()
                    .any(|o| o.start <= h.start && h.end <= o.end);
                if !inside {
                    return Err(self.err(
                        raw_h.span(),
                        format!(
                            "slot hours lie outside the opening hours of {}",
                            WEEKDAY_CODES[i]
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn phone_bookable_in_templates(
        &self,
        visit_types: &[VisitType],
        raw: &[S<RawVisitType>],
        slot_templates: &[SlotTemplate],
    ) -> Result<(), ConfigError> {
        for (vt, raw_vt) in visit_types.iter().zip(raw) {
            if vt.phone_bookable
                && !slot_templates
                    .iter()
                    .any(|t| t.visit_types.contains(&vt.code))
            {
                return Err(self.err(
                    raw_vt.span(),
                    format!(
                        "phone-bookable visit type {:?} appears in no slot template",
                        vt.code
                    ),
                ));
            }
        }
        Ok(())
    }

    fn code(&self, v: &S<String>, what: &str) -> Result<String, ConfigError> {
        let t = v.get_ref();
        let ok = !t.is_empty()
            && t.len() <= 40
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err(self.err(
                v.span(),
                format!("{what} must be lowercase a-z, 0-9, '_' or '-'"),
            ));
        }
        Ok(t.clone())
    }
}

/// German two-letter weekday codes, Monday first.
pub const WEEKDAY_CODES: [&str; 7] = ["mo", "di", "mi", "do", "fr", "sa", "so"];

/// Whether two slot templates of one practitioner share a weekday and an instant of their
/// hours.
fn overlaps(a: &SlotTemplate, b: &SlotTemplate) -> bool {
    a.practitioner == b.practitioner
        && a.weekdays.iter().zip(&b.weekdays).any(|(x, y)| *x && *y)
        && a.hours
            .iter()
            .any(|i| b.hours.iter().any(|j| i.start < j.end && j.start < i.end))
}

/// Index (0 = Monday) of a German two-letter weekday code.
pub fn weekday_index(code: &str) -> Option<usize> {
    WEEKDAY_CODES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(code.trim()))
}

/// Parses `"HH:MM-HH:MM"` (end may be `24:00`).
pub fn parse_interval(s: &str) -> Option<Interval> {
    let (a, b) = s.trim().split_once('-')?;
    let start = parse_hhmm(a)?;
    let end = parse_hhmm(b)?;
    (start < end && start < 1440).then_some(Interval { start, end })
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    let total = h * 60 + m;
    (m < 60 && total <= 1440).then_some(total)
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(0)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_demo_config_is_valid() {
        let c = PracticeConfig::from_toml_str(DEMO_PRACTICE_TOML).unwrap();
        assert_eq!(c.name, "Demo Praxis");
        assert!(c.visit_types.iter().any(|v| v.phone_bookable));
    }

    #[test]
    fn intervals_parse() {
        assert_eq!(
            parse_interval("08:00-12:30"),
            Some(Interval {
                start: 480,
                end: 750
            })
        );
        assert_eq!(
            parse_interval("18:00-24:00"),
            Some(Interval {
                start: 1080,
                end: 1440
            })
        );
        assert_eq!(parse_interval("12:00-08:00"), None);
        assert_eq!(parse_interval("8-12"), None);
        assert_eq!(parse_interval("08:60-09:00"), None);
    }

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("a\nbc\nd", 3), (2, 2));
        assert_eq!(line_col("abc", 0), (1, 1));
    }
}
