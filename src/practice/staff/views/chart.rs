//! Calls per hour of a day by outcome: a small stacked bar chart as server-rendered SVG (bar
//! geometry in SVG attributes, colours by class from `staff.css`; no script, no inline style).

use jiff::Timestamp;

use super::html::Html;
use super::page::{DayData, outcome_label};
use crate::practice::calendar;
use crate::practice::config::PracticeConfig;
use crate::practice::store::CallOutcome;

/// The series, bottom to top: the four outcomes, then calls without one (running or lost).
const SERIES: [(Option<CallOutcome>, &str); 5] = [
    (Some(CallOutcome::Completed), "completed"),
    (Some(CallOutcome::Transferred), "transferred"),
    (Some(CallOutcome::Fallback), "fallback"),
    (Some(CallOutcome::AgentFailed), "agent_failed"),
    (None, "other"),
];
/// Plot geometry (SVG user units).
const LEFT: f64 = 28.0;
const TOP: f64 = 8.0;
const PLOT_HEIGHT: f64 = 110.0;
const BAR: f64 = 20.0;
const STEP: f64 = 23.0;
const WIDTH: f64 = LEFT + 24.0 * STEP + 4.0;
const HEIGHT: f64 = TOP + PLOT_HEIGHT + 18.0;

/// Counts per local hour and series.
pub fn per_hour(config: &PracticeConfig, data: &DayData) -> [[u32; SERIES.len()]; 24] {
    let mut counts = [[0u32; SERIES.len()]; 24];
    for c in &data.calls {
        let at = Timestamp::from_second(c.started_at).unwrap_or(Timestamp::UNIX_EPOCH);
        let l = calendar::local(config, at);
        if l.date != data.day {
            continue;
        }
        let hour = usize::from(l.minute / 60).min(23);
        let s = SERIES
            .iter()
            .position(|(o, _)| *o == c.outcome)
            .unwrap_or(SERIES.len() - 1);
        counts[hour][s] = counts[hour][s].saturating_add(1);
    }
    counts
}

/// The chart with its legend.
pub fn section(h: &mut Html, config: &PracticeConfig, data: &DayData) {
    let counts = per_hour(config, data);
    let max = counts
        .iter()
        .map(|hour| hour.iter().sum::<u32>())
        .max()
        .unwrap_or(0)
        .max(1);
    h.raw("<figure class=\"chart\"><figcaption>Anrufe pro Stunde</figcaption>")
        .fmt(format_args!(
            "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"Anrufe pro Stunde nach Ergebnis\">"
        ))
        .fmt(format_args!(
            "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{1:.1}\" y2=\"{1:.1}\"/>",
            WIDTH - 2.0,
            TOP + PLOT_HEIGHT
        ))
        .fmt(format_args!(
            "<text class=\"axis\" x=\"2\" y=\"{:.1}\">{max}</text><text class=\"axis\" x=\"2\" y=\"{:.1}\">0</text>",
            TOP + 8.0,
            TOP + PLOT_HEIGHT
        ));
    for (hour, series) in counts.iter().enumerate() {
        bar(h, hour, series, max);
    }
    h.raw("</svg><p class=\"legend\">");
    for (o, class) in SERIES {
        h.fmt(format_args!("<span class=\"key {class}\">"))
            .text(o.map_or("läuft / ohne Ergebnis", outcome_label))
            .raw("</span>");
    }
    h.raw("</p></figure>");
}

fn bar(h: &mut Html, hour: usize, series: &[u32; SERIES.len()], max: u32) {
    let x = LEFT + hour as f64 * STEP + (STEP - BAR) / 2.0;
    if hour.is_multiple_of(3) {
        h.fmt(format_args!(
            "<text class=\"axis\" x=\"{x:.1}\" y=\"{:.1}\">{hour}</text>",
            HEIGHT - 4.0
        ));
    }
    let total: u32 = series.iter().sum();
    if total == 0 {
        return;
    }
    let mut tip = format!("{hour}–{} Uhr: {total} Anrufe", hour + 1);
    for (n, (o, _)) in series.iter().zip(SERIES) {
        if *n > 0 {
            tip.push_str(&format!(
                ", {n} {}",
                o.map_or("ohne Ergebnis", outcome_label)
            ));
        }
    }
    h.raw("<g class=\"bar\"><title>").text(&tip).raw("</title>");
    let mut y = TOP + PLOT_HEIGHT;
    for (n, (_, class)) in series.iter().zip(SERIES) {
        if *n == 0 {
            continue;
        }
        let height = f64::from(*n) * PLOT_HEIGHT / f64::from(max);
        y -= height;
        h.fmt(format_args!(
            "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{BAR}\" height=\"{height:.1}\"/>"
        ));
    }
    h.raw("</g>");
}
