//! The day page: what is loaded from the store ([`DayData`]) and how it is rendered (pure
//! functions of the data, the configuration and the viewer, so the live fragment's bytes, and
//! with them its ETag, change only when what it shows changes).

use jiff::Timestamp;
use jiff::civil::Date;

use super::html::{Html, html_escape};
use super::{
    MAX_CHART_CALLS, MAX_LIVE_CALL_SECS, MAX_ROWS_PER_SECTION, MAX_TIMELINE_APPOINTMENTS, chart,
    etag_of, timeline,
};
use crate::practice::calendar::{self, Advice};
use crate::practice::config::PracticeConfig;
use crate::practice::staff::{StaffReply, Viewer};
use crate::practice::store::{
    AppointmentStatus, CallOutcome, ClosureReason, RequestCategory, Severity, StaffCall,
    StaffClosure, StaffDayAppointment, StaffDayRequest, StaffEmergency, Store, StoreResult,
    Urgency,
};

/// Longest stored text (note, details) shown in a cell; the rest is cut with "…".
pub const MAX_CELL_CHARS: usize = 300;

/// What one day's page shows, read from the store.
#[derive(Debug, Clone)]
pub struct DayData {
    /// The day.
    pub day: Date,
    /// Whether it is today in the practice's time zone.
    pub today: bool,
    /// Now, UTC seconds.
    pub now: i64,
    /// The day's emergencies, newest first, and their total.
    pub emergencies: (Vec<StaffEmergency>, u32),
    /// The day's requests (open first) and their total.
    pub requests: (Vec<StaffDayRequest>, u32),
    /// Requests still open from earlier days (today only) and their total.
    pub older_open: (Vec<StaffDayRequest>, u32),
    /// Requests open as of the end of the day (the title's count).
    pub open_total: u32,
    /// The day's appointments in start order.
    pub appointments: Vec<StaffDayAppointment>,
    /// Calls without an end, started less than [`MAX_LIVE_CALL_SECS`] ago.
    pub live: Vec<StaffCall>,
    /// The day's calls, newest first (up to [`MAX_CHART_CALLS`]).
    pub calls: Vec<StaffCall>,
}

impl DayData {
    /// Reads a day's data.
    pub fn load(
        store: &mut dyn Store,
        config: &PracticeConfig,
        day: Date,
        now: Timestamp,
    ) -> StoreResult<DayData> {
        let from = calendar::instant(config, day, 0).as_second();
        let to = calendar::instant(config, calendar::next_day(day), 0).as_second();
        let now_s = now.as_second();
        let today = calendar::local(config, now).date == day;
        let older_open = if today {
            store.open_requests_before(from, MAX_ROWS_PER_SECTION)?
        } else {
            (Vec::new(), 0)
        };
        Ok(DayData {
            day,
            today,
            now: now_s,
            emergencies: store.staff_emergencies(from, to, MAX_ROWS_PER_SECTION)?,
            requests: store.staff_day_requests(from, to, MAX_ROWS_PER_SECTION)?,
            older_open,
            open_total: store.open_requests_before(to, 0)?.1,
            appointments: store.staff_day_appointments(from, to, MAX_TIMELINE_APPOINTMENTS)?,
            live: store.running_calls(now_s - MAX_LIVE_CALL_SECS, MAX_ROWS_PER_SECTION)?,
            calls: store.staff_calls(from, to, MAX_CHART_CALLS)?,
        })
    }

    /// The page title with the counts: `(2 Notfälle, 5 offen) Praxis – ignis`.
    pub fn title(&self, config: &PracticeConfig) -> String {
        let n = self.emergencies.1;
        let word = if n == 1 { "Notfall" } else { "Notfälle" };
        format!(
            "({n} {word}, {} offen) {} – ignis",
            self.open_total, config.name
        )
    }
}

/// The whole page: head, header with the day navigation, `<main>` with the live fragment.
pub fn full_page(
    config: &PracticeConfig,
    data: &DayData,
    staff_closures: &[StaffClosure],
    viewer: &Viewer,
) -> StaffReply {
    let fragment = fragment(config, data, viewer);
    let mut h = Html::new();
    h.raw("<!DOCTYPE html>\n<html lang=\"de\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        .raw("<title>")
        .text(&data.title(config))
        .raw("</title><link rel=\"stylesheet\" href=\"/staff/assets/staff.css\">")
        .raw("<script src=\"/staff/assets/staff.js\" defer></script>")
        .fmt(format_args!(
            "<meta name=\"staff-etag\" content=\"{}\">",
            html_escape(&etag_of(fragment.as_bytes()))
        ))
        .raw("</head><body><header class=\"top\"><h1>")
        .text(&config.name)
        .raw("</h1>");
    nav(&mut h, data);
    h.raw("<div class=\"who\">Angemeldet: ")
        .text(&viewer.name)
        .raw(" · <form class=\"logout\" method=\"post\" action=\"/staff/logout\">")
        .fmt(format_args!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            html_escape(&viewer.csrf)
        ))
        .raw("<button type=\"submit\">Abmelden</button></form></div></header>")
        .raw("<main id=\"live\">")
        .raw(&fragment)
        .raw("</main>");
    // Outside the polled `<main>`: a refresh must not reset a form being filled in.
    closures_section(&mut h, config, data, staff_closures, viewer);
    h.raw("</body></html>\n");
    StaffReply {
        patient_data: true,
        ..StaffReply::new(200, super::HTML, h.finish().into_bytes())
    }
}

/// Day navigation: previous, today, next, and a date field (a GET form, works without JS).
fn nav(h: &mut Html, data: &DayData) {
    let prev = data.day.yesterday().unwrap_or(data.day);
    let next = calendar::next_day(data.day);
    h.raw("<nav class=\"days\">")
        .fmt(format_args!("<a href=\"/staff?day={prev}\">← Vortag</a>"))
        .raw("<a href=\"/staff\">Heute</a>")
        .fmt(format_args!("<a href=\"/staff?day={next}\">Folgetag →</a>"))
        .raw("<form method=\"get\" action=\"/staff\"><label>Tag <input type=\"date\" name=\"day\"")
        .fmt(format_args!(" value=\"{}\"></label>", data.day))
        .raw("<button type=\"submit\">Anzeigen</button></form>")
        .raw("<span class=\"day\">")
        .text(&calendar::date_label(data.day));
    if data.today {
        h.raw(" (heute)");
    }
    h.raw("</span></nav>");
}

/// The live part of the page (the content of `<main>`, and the body of `/staff/live`).
pub fn fragment(config: &PracticeConfig, data: &DayData, viewer: &Viewer) -> String {
    let mut h = Html::new();
    h.raw("<div class=\"view\" data-title=\"")
        .text(&data.title(config))
        .fmt(format_args!("\" data-day=\"{}\">", data.day));
    closed_banner(&mut h, config, data);
    emergencies(&mut h, config, data);
    requests(&mut h, config, data, viewer);
    timeline::section(&mut h, config, data);
    calls(&mut h, config, data);
    h.raw("</div>");
    h.finish()
}

/// A note at the top when the practice is closed on the shown day (holiday or closure), with
/// the appointments that still stand on it.
fn closed_banner(h: &mut Html, config: &PracticeConfig, data: &DayData) {
    let why = match (
        calendar::public_holiday(config, data.day),
        calendar::closure(config, data.day),
    ) {
        (Some(name), _) => name,
        (None, Some(c)) => c.reason.as_str(),
        (None, None) => return,
    };
    h.raw("<p class=\"closed\">Praxis an diesem Tag geschlossen: ")
        .text(why);
    let booked = data
        .appointments
        .iter()
        .filter(|a| a.row.details.status == AppointmentStatus::Booked)
        .count();
    if booked > 0 {
        h.fmt(format_args!(
            " · {booked} Termin{} an diesem Tag bleib{} bestehen: bitte die Patienten benachrichtigen.",
            if booked == 1 { "" } else { "e" },
            if booked == 1 { "t" } else { "en" },
        ));
    }
    h.raw("</p>");
}

/// The closures: those entered here (each with "open again") and those of `practice.toml`
/// still ahead, and the form that closes the practice (docs/practice-tools.md §2.7).
fn closures_section(
    h: &mut Html,
    config: &PracticeConfig,
    data: &DayData,
    staff: &[StaffClosure],
    viewer: &Viewer,
) {
    let today = calendar::local(config, ts(data.now)).date;
    let csrf = html_escape(&viewer.csrf);
    h.raw("<section id=\"schliessungen\" class=\"closures\"><h2>Schließungen</h2>")
        .raw("<p class=\"hint\">An geschlossenen Tagen bietet die Telefonassistenz keine Termine ")
        .raw("an und sagt Anrufern, dass die Praxis geschlossen ist (bei Notfällen: Vertretung ")
        .raw("oder 116 117). Schon gebuchte Termine bleiben bestehen.</p>");
    let configured: Vec<_> = config
        .closures
        .iter()
        .filter(|c| c.to >= today && c.staff_closure_id.is_none())
        .collect();
    if staff.is_empty() && configured.is_empty() {
        h.raw("<p class=\"empty\">Keine Schließungen eingetragen.</p>");
    } else {
        h.raw("<table><thead><tr><th>Von</th><th>Bis</th><th>Grund</th><th>Eingetragen</th>")
            .raw("<th></th></tr></thead><tbody>");
        for c in staff {
            h.raw("<tr>")
                .el("td", "num", &calendar::date_label(c.from))
                .el("td", "num", &calendar::date_label(c.to))
                .el("td", "", c.reason.label())
                .el("td", "", &c.created_by)
                .fmt(format_args!(
                    "<td><form method=\"post\" action=\"/staff/closures/{}/remove\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                     <input type=\"hidden\" name=\"day\" value=\"{}\">\
                     <button type=\"submit\">Wieder öffnen</button></form></td></tr>",
                    c.id, data.day
                ));
        }
        for c in configured {
            h.raw("<tr>")
                .el("td", "num", &calendar::date_label(c.from))
                .el("td", "num", &calendar::date_label(c.to))
                .el("td", "", &c.reason)
                .el("td", "none", "practice.toml")
                .raw("<td></td></tr>");
        }
        h.raw("</tbody></table>");
    }
    let first = data.day.max(today);
    h.raw("<form class=\"close\" method=\"post\" action=\"/staff/closures\">")
        .fmt(format_args!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label>Von <input type=\"date\" name=\"from\" value=\"{first}\" min=\"{today}\" required></label>\
             <label>Bis <input type=\"date\" name=\"to\" value=\"{first}\" min=\"{today}\" required></label>"
        ))
        .raw("<label>Grund <select name=\"reason\">");
    for r in ClosureReason::ALL {
        h.fmt(format_args!("<option value=\"{}\">", r.as_str()))
            .text(r.label())
            .raw("</option>");
    }
    h.raw("</select></label><button type=\"submit\">Praxis schließen</button></form></section>");
}

/// A short German message page (errors).
pub fn message(status: u16, text: &str) -> StaffReply {
    let mut h = Html::new();
    h.raw("<!DOCTYPE html>\n<html lang=\"de\"><head><meta charset=\"utf-8\"><title>")
        .text(text)
        .raw("</title><link rel=\"stylesheet\" href=\"/staff/assets/staff.css\"></head>")
        .raw("<body><main class=\"message\"><p>")
        .text(text)
        .raw("</p><p><a href=\"/staff\">Zur Übersicht</a></p></main></body></html>\n");
    StaffReply::new(status, super::HTML, h.finish().into_bytes())
}

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `HH:MM` local.
pub fn time(config: &PracticeConfig, s: i64) -> String {
    calendar::time_label(config, ts(s))
}

/// `m:ss` (or `h:mm:ss`) of a duration in seconds.
pub fn duration(secs: i64) -> String {
    let s = secs.max(0);
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// A stored `YYYY-MM-DD` as `DD.MM.YYYY` (anything else as stored).
pub fn german_date(text: &str) -> String {
    match text.parse::<Date>() {
        Ok(d) if text.len() == 10 => format!("{:02}.{:02}.{}", d.day(), d.month(), d.year()),
        _ => text.to_owned(),
    }
}

/// Text cut to [`MAX_CELL_CHARS`] characters.
fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_CELL_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

fn section_head(h: &mut Html, id: &str, class: &str, title: &str, count: Option<usize>) {
    h.fmt(format_args!("<section id=\"{id}\" class=\"{class}\"><h2>"))
        .text(title);
    if let Some(n) = count {
        h.fmt(format_args!(" <span class=\"count\">{n}</span>"));
    }
    h.raw("</h2>");
}

fn more_line(h: &mut Html, shown: usize, total: usize) {
    if total > shown {
        h.fmt(format_args!(
            "<p class=\"more\">… {} weitere nicht angezeigt</p>",
            total - shown
        ));
    }
}

/// German label of the advice the agent gave.
pub fn advice_label(a: Advice) -> &'static str {
    match a {
        Advice::Call112 => "112 empfohlen",
        Advice::Transfer => "an die Praxis durchgestellt",
        Advice::SameDay => "Termin heute angeboten",
        Advice::Call116117 => "116 117 empfohlen",
        Advice::CallVertretung => "Vertretungspraxis empfohlen",
    }
}

fn emergencies(h: &mut Html, config: &PracticeConfig, data: &DayData) {
    let (rows, total) = &data.emergencies;
    let n = *total as usize;
    let class = if n > 0 {
        "emergencies alert"
    } else {
        "emergencies"
    };
    section_head(h, "notfaelle", class, "Notfälle", Some(n));
    if n == 0 {
        h.raw("<p class=\"empty\">Keine Notfälle an diesem Tag.</p></section>");
        return;
    }
    h.raw("<table><thead><tr><th>Zeit</th><th>Schwere</th><th>Gemeldet</th><th>Rat</th>")
        .raw("<th>Patient</th><th>Rückrufnummer</th></tr></thead><tbody>");
    for e in rows {
        let severity = match e.severity {
            Severity::LifeThreatening => "lebensbedrohlich",
            Severity::Urgent => "dringend",
        };
        h.raw("<tr>")
            .el("td", "time", &time(config, e.created_at))
            .el("td", "severity", severity)
            .el("td", "", &cut(&e.keywords))
            .el("td", "advice", advice_label(e.advice))
            .el(
                "td",
                "",
                e.patient.as_deref().unwrap_or("nicht identifiziert"),
            );
        phone_cell(h, e.callback_number.as_deref());
        h.raw("</tr>");
    }
    h.raw("</tbody></table>");
    more_line(h, n.min(MAX_ROWS_PER_SECTION), n);
    h.raw("</section>");
}

/// A caller number as shown: Twilio's `anonymous` (and an empty one) as "unterdrückt".
fn caller(number: &str) -> &str {
    match number {
        "" | "anonymous" => "unterdrückt",
        n => n,
    }
}

fn phone_cell(h: &mut Html, number: Option<&str>) {
    match number.filter(|n| !n.is_empty() && *n != "anonymous") {
        Some(n) => {
            h.raw("<td class=\"phone\"><a href=\"tel:")
                .text(n)
                .raw("\">")
                .text(n)
                .raw("</a></td>");
        }
        None => {
            h.raw("<td class=\"phone none\">unterdrückt</td>");
        }
    }
}

/// German label of a request category.
pub fn category_label(c: RequestCategory) -> &'static str {
    match c {
        RequestCategory::PrescriptionRefill => "Rezept",
        RequestCategory::SickNote => "AU-Bescheinigung",
        RequestCategory::Referral => "Überweisung",
        RequestCategory::ResultsCallback => "Befund-Rückruf",
        RequestCategory::Callback => "Rückruf",
        RequestCategory::UrgentCallback => "Dringender Rückruf",
        RequestCategory::Document => "Dokument",
        RequestCategory::Message => "Nachricht",
    }
}

/// German label of how well the caller was identified (docs/practice-tools.md §6.3).
fn assurance_label(a: Option<&str>) -> (&'static str, &'static str) {
    match a {
        Some("name_dob_phone") => ("verified", "verifiziert (Name, Geburtsdatum, Rufnummer)"),
        Some("name_dob") => ("partial", "Name und Geburtsdatum, andere Rufnummer"),
        _ => ("unverified", "nicht verifiziert"),
    }
}

fn requests(h: &mut Html, config: &PracticeConfig, data: &DayData, viewer: &Viewer) {
    let (rows, total) = &data.requests;
    let open = rows.iter().filter(|r| r.done_at.is_none()).count();
    section_head(
        h,
        "anliegen",
        "requests",
        "Rückrufe und Anliegen",
        Some(open),
    );
    if rows.is_empty() {
        h.raw("<p class=\"empty\">Keine Anliegen an diesem Tag.</p>");
    } else {
        request_table(h, config, data, rows, viewer);
        more_line(h, rows.len(), *total as usize);
    }
    let (older, older_total) = &data.older_open;
    if !older.is_empty() {
        h.raw("<h3>Noch offen von früheren Tagen</h3>");
        request_table(h, config, data, older, viewer);
        more_line(h, older.len(), *older_total as usize);
    }
    h.raw("</section>");
}

fn request_table(
    h: &mut Html,
    config: &PracticeConfig,
    data: &DayData,
    rows: &[StaffDayRequest],
    viewer: &Viewer,
) {
    h.raw("<table><thead><tr><th>Eingang</th><th>Anliegen</th><th>Patient</th>")
        .raw("<th>Rückrufnummer</th><th>Identität</th><th>Zeitfenster</th><th>Notiz</th>")
        .raw("<th>Status</th></tr></thead><tbody>");
    for r in rows {
        request_row(h, config, data, r, viewer);
    }
    h.raw("</tbody></table>");
}

fn request_row(
    h: &mut Html,
    config: &PracticeConfig,
    data: &DayData,
    r: &StaffDayRequest,
    viewer: &Viewer,
) {
    let row = &r.row;
    let urgent = row.urgency == Urgency::Urgent || row.category == RequestCategory::UrgentCallback;
    let class = match (r.done_at.is_some(), urgent) {
        (true, _) => "done",
        (false, true) => "urgent",
        (false, false) => "open",
    };
    h.fmt(format_args!("<tr class=\"{class}\">"));
    let created = if calendar::local(config, ts(row.created_at)).date == data.day {
        time(config, row.created_at)
    } else {
        calendar::label(config, ts(row.created_at))
    };
    h.el("td", "time", &created).raw("<td><span class=\"cat\">");
    h.text(category_label(row.category)).raw("</span>");
    if urgent {
        h.raw(" <span class=\"tag urgent\">dringend</span>");
    }
    h.raw(" <span class=\"ref\">")
        .text(&row.ref_code)
        .raw("</span>");
    let details = details_text(&row.details);
    if !details.is_empty() {
        h.raw("<br><span class=\"details\">")
            .text(&cut(&details))
            .raw("</span>");
    }
    h.raw("</td>");
    patient_cell(h, r);
    phone_cell(
        h,
        row.callback_number
            .as_deref()
            .or(row.caller_number.as_deref()),
    );
    let (class, label) = assurance_label(row.assurance.as_deref());
    h.el("td", class, label)
        .el("td", "", row.callback_window.as_deref().unwrap_or("–"))
        .el("td", "note", &cut(row.note.as_deref().unwrap_or("")));
    status_cell(h, config, data, r, viewer);
    h.raw("</tr>");
}

fn patient_cell(h: &mut Html, r: &StaffDayRequest) {
    h.raw("<td>");
    match (&r.row.patient, &r.birth_date) {
        (Some(name), birth) => {
            h.text(name);
            if let Some(b) = birth {
                h.raw("<br><span class=\"dob\">geb. ")
                    .text(&german_date(b))
                    .raw("</span>");
            }
        }
        (None, _) => {
            h.raw("<span class=\"unknown\">nicht identifiziert</span>");
            if let Some(c) = &r.row.caller {
                let s = |k: &str| c.get(k).and_then(|v| v.as_str()).unwrap_or("");
                let said = format!("{} {}", s("given_name"), s("family_name"));
                h.raw("<br>Angabe: ").text(&cut(said.trim()));
                if !s("birth_date").is_empty() {
                    h.raw(", geb. ").text(&cut(&german_date(s("birth_date"))));
                }
            }
        }
    }
    h.raw("</td>");
}

/// Category details as one line (medications, specialty, document, text).
fn details_text(d: &serde_json::Value) -> String {
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let mut parts: Vec<String> = Vec::new();
    if let Some(meds) = d.get("medications").and_then(|m| m.as_array()) {
        for m in meds.iter().take(MAX_ROWS_PER_SECTION) {
            let f = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or("");
            let one = [f("name"), f("strength"), f("amount")]
                .iter()
                .filter(|x| !x.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            parts.push(one);
        }
    }
    if d.get("new_medication").and_then(|v| v.as_bool()) == Some(true) {
        parts.push("neues Medikament".into());
    }
    for (key, prefix) in [
        ("specialty", "Fachrichtung: "),
        ("reason_short", "Grund: "),
        ("document_type", "Dokument: "),
        ("text", ""),
    ] {
        let v = s(key);
        if !v.is_empty() {
            parts.push(format!("{prefix}{v}"));
        }
    }
    if d.get("first_referral").and_then(|v| v.as_bool()) == Some(true) {
        parts.push("Erstüberweisung".into());
    }
    parts.join(" · ")
}

fn status_cell(
    h: &mut Html,
    config: &PracticeConfig,
    data: &DayData,
    r: &StaffDayRequest,
    viewer: &Viewer,
) {
    h.raw("<td class=\"status\">");
    let action = match r.done_at {
        Some(at) => {
            h.raw("Erledigt von ")
                .text(r.done_by.as_deref().unwrap_or("Admin-API"))
                .raw(", ")
                .text(&short_when(config, data, at))
                .raw(" ");
            ("undo", "Rückgängig")
        }
        None => ("done", "Erledigt"),
    };
    h.raw("<form class=\"act\" method=\"post\" action=\"/staff/requests/")
        .text(&r.row.ref_code)
        .fmt(format_args!("/{}\">", action.0))
        .raw("<input type=\"hidden\" name=\"csrf\" value=\"")
        .text(&viewer.csrf)
        .fmt(format_args!(
            "\"><input type=\"hidden\" name=\"day\" value=\"{}\">",
            data.day
        ))
        .fmt(format_args!(
            "<button type=\"submit\" class=\"{}\">{}</button></form></td>",
            action.0, action.1
        ));
}

/// `10:42`, or `2. Dezember, 10:42 Uhr` when not on the shown day.
fn short_when(config: &PracticeConfig, data: &DayData, at: i64) -> String {
    if calendar::local(config, ts(at)).date == data.day {
        format!("{} Uhr", time(config, at))
    } else {
        calendar::label(config, ts(at))
    }
}

/// German label and CSS class of a call's outcome.
pub fn outcome_label(o: CallOutcome) -> &'static str {
    match o {
        CallOutcome::Completed => "abgeschlossen",
        CallOutcome::Transferred => "an die Praxis durchgestellt",
        CallOutcome::Fallback => "an die Ausweichnummer",
        CallOutcome::AgentFailed => "Agent ausgefallen",
    }
}

fn calls(h: &mut Html, config: &PracticeConfig, data: &DayData) {
    section_head(h, "anrufe", "calls", "Anrufe", Some(data.calls.len()));
    h.raw("<div class=\"live-calls\">");
    if data.live.is_empty() {
        h.raw("<p>Gerade kein laufender Anruf.</p>");
    } else {
        h.fmt(format_args!(
            "<p class=\"now\">Jetzt im Gespräch: <strong>{}</strong></p><ul>",
            data.live.len()
        ));
        for c in &data.live {
            h.raw("<li>");
            running_since(h, config, c.started_at);
            h.raw(" – ").text(caller(&c.caller_number)).raw("</li>");
        }
        h.raw("</ul>");
    }
    h.raw("</div>");
    chart::section(h, config, data);
    if data.calls.is_empty() {
        h.raw("<p class=\"empty\">Keine Anrufe an diesem Tag (Anrufdaten werden nach einem Tag gelöscht).</p></section>");
        return;
    }
    h.raw("<table><thead><tr><th>Beginn</th><th>Anrufer</th><th>Dauer</th><th>Ergebnis</th>")
        .raw("<th>Erste Antwort</th></tr></thead><tbody>");
    for c in data.calls.iter().take(MAX_ROWS_PER_SECTION) {
        call_row(h, config, data, c);
    }
    h.raw("</tbody></table>");
    more_line(
        h,
        data.calls.len().min(MAX_ROWS_PER_SECTION),
        data.calls.len(),
    );
    h.raw("</section>");
}

/// A running call's duration as the fragment carries it: its start ("seit 16:11") with the
/// start in `data-start` (UTC seconds), which `staff.js` turns into a ticking `m:ss`. The
/// fragment holds no seconds clock, so its ETag stays put during a call and polls get 304
/// (a per-second duration would replace `<main>` every second, losing text selection).
fn running_since(h: &mut Html, config: &PracticeConfig, started_at: i64) {
    h.fmt(format_args!(
        "<span class=\"since\" data-start=\"{started_at}\">seit "
    ))
    .text(&time(config, started_at))
    .raw("</span>");
}

fn call_row(h: &mut Html, config: &PracticeConfig, data: &DayData, c: &StaffCall) {
    let (class, result, dur) = match (c.ended_at, c.outcome) {
        (Some(end), Some(o)) => (o.as_str(), outcome_label(o), duration(end - c.started_at)),
        (Some(end), None) => ("ended", "beendet", duration(end - c.started_at)),
        (None, _) if data.now - c.started_at < MAX_LIVE_CALL_SECS => {
            ("live", "läuft", String::new())
        }
        (None, _) => ("lost", "ohne Ende (abgebrochen)", "–".to_owned()),
    };
    let ttfa = c.first_audio_ms.map_or("–".to_owned(), |ms| {
        format!("{},{} s", ms / 1000, (ms % 1000) / 100)
    });
    h.fmt(format_args!("<tr class=\"call {class}\">"))
        .el("td", "time", &time(config, c.started_at))
        .el("td", "phone", caller(&c.caller_number));
    if class == "live" {
        h.raw("<td class=\"num\">");
        running_since(h, config, c.started_at);
        h.raw("</td>");
    } else {
        h.el("td", "num", &dur);
    }
    h.el("td", "outcome", result)
        .el("td", "num", &ttfa)
        .raw("</tr>");
}
