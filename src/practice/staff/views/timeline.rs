//! The appointments of a day as a timeline per practitioner (server-rendered SVG: positions are
//! SVG attributes, colours are classes in `staff.css`, so the CSP needs no inline style), and
//! the same appointments as a table with what the phone agent changed.

use jiff::Timestamp;

use super::MAX_ROWS_PER_SECTION;
use super::html::Html;
use super::page::{DayData, german_date, time};
use crate::practice::calendar;
use crate::practice::config::PracticeConfig;
use crate::practice::demo::SEED_CALL_SID;
use crate::practice::store::{AppointmentStatus, StaffDayAppointment};

/// Drawing width (SVG user units; the SVG scales to the section's width).
const WIDTH: f64 = 1200.0;
/// Left column with the practitioners' names.
const LABEL_WIDTH: f64 = 150.0;
/// Height of one practitioner's row.
const ROW: f64 = 40.0;
/// Gap between rows.
const GAP: f64 = 6.0;
/// Space above the first row for the hour labels.
const AXIS: f64 = 18.0;
/// Roughly how many SVG units one character of a label takes.
const CHAR_WIDTH: f64 = 6.5;
/// Most practitioner rows drawn.
pub const MAX_PRACTITIONER_ROWS: usize = 20;

/// What the phone agent did to an appointment, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Entered by the practice (or the demo seed).
    None,
    /// Booked in a call.
    Booked,
    /// Booked in a call as the new time of a moved appointment.
    MovedHere,
    /// Cancelled because a call moved it.
    MovedAway,
    /// Cancelled in a call.
    Cancelled,
}

impl Change {
    /// What the agent did with `a`.
    pub fn of(a: &StaffDayAppointment) -> Change {
        let status = a.row.details.status;
        let by_call = a.call_sid.as_deref().is_some_and(|s| s != SEED_CALL_SID);
        match status {
            AppointmentStatus::Cancelled if a.cancel_reason.as_deref() == Some("rescheduled") => {
                Change::MovedAway
            }
            // Only the agent's tools cancel appointments (the admin API does not).
            AppointmentStatus::Cancelled => Change::Cancelled,
            _ if by_call && a.moved_here => Change::MovedHere,
            _ if by_call => Change::Booked,
            _ => Change::None,
        }
    }

    /// CSS class and German label.
    pub fn label(self) -> (&'static str, &'static str) {
        match self {
            Change::None => ("", ""),
            Change::Booked => ("ai-booked", "von der KI gebucht"),
            Change::MovedHere => ("ai-moved", "von der KI hierher verlegt"),
            Change::MovedAway => ("ai-moved-away", "von der KI verlegt (alter Termin)"),
            Change::Cancelled => ("ai-cancelled", "telefonisch abgesagt"),
        }
    }
}

/// The appointments section.
pub fn section(h: &mut Html, config: &PracticeConfig, data: &DayData) {
    let n = data.appointments.len();
    h.raw("<section id=\"termine\" class=\"appointments\"><h2>Termine")
        .fmt(format_args!(" <span class=\"count\">{n}</span></h2>"));
    svg(h, config, data);
    h.raw("<p class=\"legend\"><span class=\"key free\">frei</span>")
        .raw("<span class=\"key booked\">gebucht</span>")
        .raw("<span class=\"key ai-booked\">von der KI gebucht</span>")
        .raw("<span class=\"key ai-moved\">von der KI verlegt</span>")
        .raw("<span class=\"key ai-cancelled\">abgesagt</span></p>");
    if n == 0 {
        h.raw("<p class=\"empty\">Keine Termine an diesem Tag.</p></section>");
        return;
    }
    h.raw("<table><thead><tr><th>Zeit</th><th>Bei</th><th>Patient</th><th>Geburtsdatum</th>")
        .raw("<th>Art</th><th>Grund</th><th>Änderung</th></tr></thead><tbody>");
    // Changes by the agent first (what staff must notice), then in time order.
    let mut rows: Vec<&StaffDayAppointment> = data.appointments.iter().collect();
    rows.sort_by_key(|a| (Change::of(a) == Change::None, a.row.start));
    for a in rows.iter().take(MAX_ROWS_PER_SECTION) {
        let (class, label) = Change::of(a).label();
        let d = &a.row.details;
        h.fmt(format_args!("<tr class=\"{}\">", row_class(a, class)))
            .el("td", "time", &time(config, a.row.start))
            .el("td", "", &practitioner_name(config, &a.row.practitioner))
            .el("td", "", &d.patient)
            .el("td", "", &german_date(&d.birth_date))
            .el("td", "", &visit_label(config, &d.visit_type))
            .el("td", "", &d.reason_short)
            .el("td", "change", label)
            .raw("</tr>");
    }
    h.raw("</tbody></table>");
    if n > MAX_ROWS_PER_SECTION {
        h.fmt(format_args!(
            "<p class=\"more\">… {} weitere nicht angezeigt</p>",
            n - MAX_ROWS_PER_SECTION
        ));
    }
    h.raw("</section>");
}

fn row_class(a: &StaffDayAppointment, change: &'static str) -> String {
    let status = match a.row.details.status {
        AppointmentStatus::Booked => "booked",
        AppointmentStatus::Fulfilled => "fulfilled",
        _ => "inactive",
    };
    format!("{status} {change}").trim().to_owned()
}

fn practitioner_name(config: &PracticeConfig, id: &str) -> String {
    config
        .practitioner(id)
        .map_or_else(|| id.to_owned(), |p| p.display.clone())
}

fn visit_label(config: &PracticeConfig, code: &str) -> String {
    config
        .visit_type(code)
        .map_or_else(|| code.to_owned(), |v| v.label.clone())
}

/// Local minute of the day of an instant on `data.day` (0 before, 1440 after).
fn minute(config: &PracticeConfig, data: &DayData, s: i64) -> f64 {
    let at = Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH);
    let l = calendar::local(config, at);
    if l.date < data.day {
        0.0
    } else if l.date > data.day {
        1440.0
    } else {
        f64::from(l.minute)
    }
}

/// The timeline: one row per practitioner (configured ones first), free template slots and
/// appointments placed by time between the earliest and latest full hour in use.
fn svg(h: &mut Html, config: &PracticeConfig, data: &DayData) {
    let candidates = calendar::slot_candidates(config, data.day, data.day);
    let mut ids: Vec<String> = config.practitioners.iter().map(|p| p.id.clone()).collect();
    for a in &data.appointments {
        if !ids.contains(&a.row.practitioner) {
            ids.push(a.row.practitioner.clone());
        }
    }
    ids.truncate(MAX_PRACTITIONER_ROWS);
    let spans = candidates
        .iter()
        .map(|c| (c.start, c.end))
        .chain(data.appointments.iter().map(|a| (a.row.start, a.end)));
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for (s, e) in spans {
        lo = lo.min(minute(config, data, s));
        hi = hi.max(minute(config, data, e));
    }
    if lo > hi {
        (lo, hi) = (8.0 * 60.0, 18.0 * 60.0);
    }
    let (lo, hi) = (
        (lo / 60.0).floor() * 60.0,
        ((hi / 60.0).ceil() * 60.0).max(lo + 60.0),
    );
    let scale = (WIDTH - LABEL_WIDTH) / (hi - lo);
    let x = |m: f64| LABEL_WIDTH + (m - lo) * scale;
    let height = AXIS + ids.len() as f64 * (ROW + GAP);
    h.fmt(format_args!(
        "<svg class=\"timeline\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" \
         aria-label=\"Termine des Tages nach Behandler\">"
    ));
    let mut hour = lo;
    while hour <= hi {
        h.fmt(format_args!(
            "<line class=\"hour\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{AXIS}\" y2=\"{height}\"/>\
             <text class=\"axis\" x=\"{0:.1}\" y=\"12\">{1}</text>",
            x(hour),
            (hour / 60.0) as u32
        ));
        hour += 60.0;
    }
    let now = minute(config, data, data.now);
    if data.today && (lo..=hi).contains(&now) {
        h.fmt(format_args!(
            "<line class=\"now\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{AXIS}\" y2=\"{height}\"><title>jetzt</title></line>",
            x(now)
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        let y = AXIS + i as f64 * (ROW + GAP);
        h.fmt(format_args!(
            "<text class=\"who\" x=\"4\" y=\"{:.1}\">",
            y + ROW / 2.0 + 4.0
        ))
        .text(&practitioner_name(config, id))
        .raw("</text>");
        let booked = |start: i64| {
            data.appointments.iter().any(|a| {
                &a.row.practitioner == id
                    && a.row.start == start
                    && a.row.details.status == AppointmentStatus::Booked
            })
        };
        for c in candidates
            .iter()
            .filter(|c| &c.practitioner == id && !booked(c.start))
        {
            let (x0, x1) = (
                x(minute(config, data, c.start)),
                x(minute(config, data, c.end)),
            );
            // A slot that has begun can no longer be offered: drawn faded, not as free.
            let (class, what) = if c.start <= data.now {
                ("slot past", "vorbei")
            } else {
                ("slot free", "frei")
            };
            h.fmt(format_args!(
                "<rect class=\"{class}\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{ROW}\" rx=\"3\"><title>{what} {}</title></rect>",
                x0 + 1.0,
                (x1 - x0 - 2.0).max(1.0),
                time(config, c.start)
            ));
        }
        for a in data
            .appointments
            .iter()
            .filter(|a| &a.row.practitioner == id)
        {
            appointment(h, config, data, a, y, &x);
        }
    }
    h.raw("</svg>");
}

fn appointment(
    h: &mut Html,
    config: &PracticeConfig,
    data: &DayData,
    a: &StaffDayAppointment,
    y: f64,
    x: &dyn Fn(f64) -> f64,
) {
    let (x0, x1) = (
        x(minute(config, data, a.row.start)),
        x(minute(config, data, a.end)),
    );
    let w = (x1 - x0 - 2.0).max(1.0);
    let change = Change::of(a);
    let (class, label) = change.label();
    let d = &a.row.details;
    let mut tip = format!(
        "{} {} ({})",
        time(config, a.row.start),
        d.patient,
        d.reason_short
    );
    if !label.is_empty() {
        tip = format!("{tip}: {label}");
    }
    if d.status != AppointmentStatus::Booked {
        // Cancelled and past states: a thin bar at the foot of the row, under any new booking.
        h.fmt(format_args!(
            "<rect class=\"appt inactive {class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"6\"><title>",
            x0 + 1.0,
            y + ROW - 6.0
        ))
        .text(&tip)
        .raw("</title></rect>");
        return;
    }
    h.fmt(format_args!("<g class=\"appt booked {class}\"><title>"))
        .text(&tip)
        .fmt(format_args!(
            "</title><rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{ROW}\" rx=\"3\"/>",
            x0 + 1.0
        ));
    let fits = ((w - 6.0) / CHAR_WIDTH).max(0.0) as usize;
    let text: String = d.patient.chars().take(fits).collect();
    if !text.is_empty() {
        h.fmt(format_args!(
            "<text x=\"{:.1}\" y=\"{:.1}\">",
            x0 + 4.0,
            y + ROW / 2.0 + 4.0
        ))
        .text(&text)
        .raw("</text>");
    }
    h.raw("</g>");
}
