//! Parsing and bounding the six tools' inputs (JSON bodies, the `find_slots` query, the cancel
//! path). Runs off the store thread; the result is judged only after the live-call check.

use jiff::civil::Date;
use serde::Deserialize;

use super::error::ToolError;
use crate::http::form::{self, Escapes};
use crate::practice::config::{PracticeConfig, weekday_index};
use crate::practice::store::{
    CallerDetails, CancelReason, Insurance, Medication, NewPatient, RequestCategory,
    RequestDetails, Severity, Urgency, normalize_name,
};

/// Default number of slots offered by `find_slots`.
pub const DEFAULT_SLOT_LIMIT: usize = 3;
/// Most slots offered by one `find_slots`.
pub const MAX_SLOT_LIMIT: usize = 5;
/// Longest `reason_short`.
pub const MAX_REASON_CHARS: usize = 80;
/// Longest name.
pub const MAX_NAME_CHARS: usize = 60;
/// Longest free text (notes, details).
pub const MAX_TEXT_CHARS: usize = 300;
/// Longest keyword text of an emergency.
pub const MAX_KEYWORDS_CHARS: usize = 60;
/// Most medications in one prescription request.
pub const MAX_MEDICATIONS: usize = 5;
/// Hard bound on medications parsed at all (more than [`MAX_MEDICATIONS`] is a business error).
const MEDICATIONS_PARSE_LIMIT: usize = 20;
/// Longest per-call ref (`P1`, `S12`, `A3`).
const MAX_REF_CHARS: usize = 8;
/// Longest enum-like value.
const MAX_ENUM_CHARS: usize = 40;
/// Length of `YYYY-MM-DD`.
const DATE_CHARS: usize = 10;

/// Request categories, as the agent spells them.
pub const CATEGORIES: [&str; 8] = [
    RequestCategory::PrescriptionRefill.as_str(),
    RequestCategory::SickNote.as_str(),
    RequestCategory::Referral.as_str(),
    RequestCategory::ResultsCallback.as_str(),
    RequestCategory::Callback.as_str(),
    RequestCategory::UrgentCallback.as_str(),
    RequestCategory::Document.as_str(),
    RequestCategory::Message.as_str(),
];

/// The six tools' inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolInput {
    /// `identify_patient`.
    Identify(IdentifyInput),
    /// `find_slots`.
    FindSlots(FindSlotsInput),
    /// `book_appointment`.
    Book(BookInput),
    /// `cancel_appointment`.
    Cancel(CancelInput),
    /// `create_request`.
    Request(RequestInput),
    /// `report_emergency`.
    Emergency(EmergencyInput),
}

/// `identify_patient` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyInput {
    /// Family name.
    pub family_name: String,
    /// Given name, if said.
    pub given_name: Option<String>,
    /// Birth date.
    pub birth_date: Date,
}

/// Part of day filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartOfDay {
    /// Before noon.
    Morning,
    /// From noon.
    Afternoon,
    /// Any time.
    Any,
}

/// `find_slots` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindSlotsInput {
    /// Visit type code.
    pub visit_type: String,
    /// Earliest date.
    pub earliest: Option<Date>,
    /// Latest date.
    pub latest: Option<Date>,
    /// Part of day.
    pub part_of_day: PartOfDay,
    /// Allowed weekdays (index 0 = Monday); all when none is set.
    pub weekdays: [bool; 7],
    /// Practitioner id.
    pub practitioner: Option<String>,
    /// Same day only.
    pub same_day: bool,
    /// How many slots.
    pub limit: usize,
}

/// `book_appointment` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookInput {
    /// Slot ref.
    pub slot_ref: String,
    /// Patient ref.
    pub patient_ref: Option<String>,
    /// New patient.
    pub new_patient: Option<NewPatient>,
    /// Visit type code.
    pub visit_type: String,
    /// Administrative reason.
    pub reason_short: String,
    /// Appointment ref to replace (reschedule).
    pub replaces_appointment_ref: Option<String>,
}

/// `cancel_appointment` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelInput {
    /// Appointment ref (from the path).
    pub appointment_ref: String,
    /// Why.
    pub reason: CancelReason,
    /// Short note.
    pub note: Option<String>,
}

/// `create_request` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInput {
    /// Category.
    pub category: RequestCategory,
    /// Patient ref.
    pub patient_ref: Option<String>,
    /// Caller data when not identified.
    pub caller: Option<CallerDetails>,
    /// Details (`None`: none sent).
    pub details: Option<RequestDetails>,
    /// Urgency.
    pub urgency: Urgency,
    /// A different call-back number.
    pub callback_number: Option<String>,
    /// Preferred window.
    pub callback_window: Option<String>,
    /// Note.
    pub note: Option<String>,
}

/// `report_emergency` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyInput {
    /// Severity.
    pub severity: Severity,
    /// Keywords.
    pub keywords: String,
    /// Patient ref.
    pub patient_ref: Option<String>,
}

type Parsed<T> = Result<T, ToolError>;

/// Decodes the tool API's query string (`find_slots`, the admin API): a malformed `%` escape is
/// refused, unlike in Twilio's forms ([`Escapes::Strict`]).
pub fn parse_query(q: &str) -> Option<Vec<(String, String)>> {
    form::decode_with(q.as_bytes(), Escapes::Strict).ok()
}

fn body<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Parsed<T> {
    let b = if b.trim_ascii().is_empty() {
        &b"{}"[..]
    } else {
        b
    };
    serde_json::from_slice(b).map_err(|_| ToolError::invalid("body"))
}

/// Free text from the agent: invisible formatting characters dropped (they only ever spoof,
/// `practice::text`), trimmed, empty as absent; too long or with control characters refused.
fn text(v: Option<String>, max: usize, field: &'static str) -> Parsed<Option<String>> {
    let visible = |s: String| -> String {
        s.chars()
            .filter(|c| !crate::practice::text::is_hidden_format(*c))
            .collect::<String>()
            .trim()
            .to_string()
    };
    match v.map(visible).filter(|s| !s.is_empty()) {
        Some(s) if s.chars().count() > max || s.chars().any(char::is_control) => {
            Err(ToolError::invalid(field))
        }
        other => Ok(other),
    }
}

fn required(v: Option<String>, max: usize, field: &'static str) -> Parsed<String> {
    text(v, max, field)?.ok_or(ToolError::invalid(field))
}

/// A person's name: [`required`], and with at least one letter once normalised for matching
/// (`normalize_name`); a name of punctuation alone would match any patient of a birth date.
fn name(v: Option<String>, field: &'static str) -> Parsed<String> {
    let n = required(v, MAX_NAME_CHARS, field)?;
    if normalize_name(&n).is_empty() {
        return Err(ToolError::invalid(field));
    }
    Ok(n)
}

/// An optional given name: [`text`], refused (not dropped) when it has no letter, so a
/// garbled given name cannot silently widen a match.
fn given_name(v: Option<String>, field: &'static str) -> Parsed<Option<String>> {
    match text(v, MAX_NAME_CHARS, field)? {
        Some(g) if normalize_name(&g).is_empty() => Err(ToolError::invalid(field)),
        other => Ok(other),
    }
}

fn birth_date(s: &str, field: &'static str) -> Parsed<Date> {
    let d: Date = s.trim().parse().map_err(|_| ToolError::invalid(field))?;
    if d.year() < 1900 || d.year() > 2100 {
        return Err(ToolError::invalid(field));
    }
    Ok(d)
}

fn blank(v: &Option<String>) -> bool {
    v.as_deref().is_none_or(|s| s.trim().is_empty())
}

/// An enum value: trimmed and lowercased (the agent's enums are lowercase), then parsed.
fn enum_value<T>(
    v: Option<String>,
    field: &'static str,
    parse: impl Fn(&str) -> Option<T>,
) -> Parsed<Option<T>> {
    match text(v, MAX_ENUM_CHARS, field)? {
        None => Ok(None),
        Some(s) => parse(&s.to_lowercase())
            .map(Some)
            .ok_or(ToolError::invalid(field)),
    }
}

fn ref_text(v: Option<String>, field: &'static str) -> Parsed<Option<String>> {
    text(v, MAX_REF_CHARS, field)
}

#[derive(Deserialize)]
struct IdentifyBody {
    family_name: Option<String>,
    given_name: Option<String>,
    birth_date: Option<String>,
}

pub(super) fn parse_identify(b: &[u8]) -> Parsed<IdentifyInput> {
    let x: IdentifyBody = body(b)?;
    Ok(IdentifyInput {
        family_name: name(x.family_name, "family_name")?,
        given_name: given_name(x.given_name, "given_name")?,
        birth_date: birth_date(
            &required(x.birth_date, DATE_CHARS, "birth_date")?,
            "birth_date",
        )?,
    })
}

pub(super) fn parse_find_slots(query: &str, config: &PracticeConfig) -> Parsed<FindSlotsInput> {
    let pairs = parse_query(query).ok_or(ToolError::invalid("query"))?;
    let mut input = FindSlotsInput {
        visit_type: String::new(),
        earliest: None,
        latest: None,
        part_of_day: PartOfDay::Any,
        weekdays: [false; 7],
        practitioner: None,
        same_day: false,
        limit: DEFAULT_SLOT_LIMIT,
    };
    for (k, v) in pairs {
        let v = v.trim();
        if !v.is_empty() {
            slots_parameter(&mut input, &k, v, config)?;
        }
    }
    if input.visit_type.is_empty() {
        return Err(ToolError::invalid("visit_type"));
    }
    if let (Some(a), Some(b)) = (input.earliest, input.latest)
        && b < a
    {
        return Err(ToolError::invalid("latest"));
    }
    Ok(input)
}

/// Applies one non-empty `find_slots` query parameter.
fn slots_parameter(
    input: &mut FindSlotsInput,
    key: &str,
    v: &str,
    config: &PracticeConfig,
) -> Parsed<()> {
    let lower = v.to_lowercase();
    match key {
        "visit_type" => {
            config
                .visit_type(&lower)
                .ok_or(ToolError::invalid("visit_type"))?;
            input.visit_type = lower;
        }
        "earliest" => input.earliest = Some(v.parse().map_err(|_| ToolError::invalid("earliest"))?),
        "latest" => input.latest = Some(v.parse().map_err(|_| ToolError::invalid("latest"))?),
        "part_of_day" => {
            input.part_of_day = match lower.as_str() {
                "morning" => PartOfDay::Morning,
                "afternoon" => PartOfDay::Afternoon,
                "any" => PartOfDay::Any,
                _ => return Err(ToolError::invalid("part_of_day")),
            }
        }
        "weekdays" => {
            for d in v.split(',').filter(|d| !d.trim().is_empty()) {
                let i = weekday_index(d).ok_or(ToolError::invalid("weekdays"))?;
                input.weekdays[i] = true;
            }
        }
        "practitioner" => {
            let p = config
                .practitioners
                .iter()
                .find(|p| p.id == v || normalize_name(&p.display) == normalize_name(v))
                .ok_or(ToolError::invalid("practitioner"))?;
            input.practitioner = Some(p.id.clone());
        }
        "urgency" => {
            input.same_day = match lower.as_str() {
                "routine" => false,
                "same_day" => true,
                _ => return Err(ToolError::invalid("urgency")),
            }
        }
        "limit" => {
            let n: usize = v.parse().map_err(|_| ToolError::invalid("limit"))?;
            if !(1..=MAX_SLOT_LIMIT).contains(&n) {
                return Err(ToolError::invalid("limit"));
            }
            input.limit = n;
        }
        // Unknown parameters are ignored so agent configurations can evolve.
        _ => {}
    }
    Ok(())
}

#[derive(Deserialize)]
struct NewPatientBody {
    family_name: Option<String>,
    given_name: Option<String>,
    birth_date: Option<String>,
    #[serde(default)]
    insurance: Option<String>,
}

#[derive(Deserialize)]
struct BookBody {
    slot_ref: Option<String>,
    patient_ref: Option<String>,
    new_patient: Option<NewPatientBody>,
    visit_type: Option<String>,
    reason_short: Option<String>,
    replaces_appointment_ref: Option<String>,
}

pub(super) fn parse_book(b: &[u8], config: &PracticeConfig) -> Parsed<BookInput> {
    let x: BookBody = body(b)?;
    let visit_type = text(x.visit_type, MAX_ENUM_CHARS, "visit_type")?
        .map(|s| s.to_lowercase())
        .ok_or(ToolError::invalid("visit_type"))?;
    config
        .visit_type(&visit_type)
        .ok_or(ToolError::invalid("visit_type"))?;
    // An object of empty strings is what an agent sends when the LLM left it out.
    let new_patient = match x.new_patient.filter(|p| {
        [&p.family_name, &p.given_name, &p.birth_date]
            .iter()
            .any(|f| !blank(f))
    }) {
        None => None,
        Some(p) => Some(new_patient(p)?),
    };
    Ok(BookInput {
        slot_ref: required(x.slot_ref, MAX_REF_CHARS, "slot_ref")?,
        patient_ref: ref_text(x.patient_ref, "patient_ref")?,
        new_patient,
        visit_type,
        reason_short: text(x.reason_short, MAX_REASON_CHARS, "reason_short")?.unwrap_or_default(),
        replaces_appointment_ref: ref_text(x.replaces_appointment_ref, "replaces_appointment_ref")?,
    })
}

fn new_patient(p: NewPatientBody) -> Parsed<NewPatient> {
    let insurance = enum_value(p.insurance, "new_patient.insurance", Insurance::parse)?
        .unwrap_or(Insurance::Gkv);
    let dob = required(p.birth_date, DATE_CHARS, "new_patient.birth_date")?;
    Ok(NewPatient {
        family: name(p.family_name, "new_patient.family_name")?,
        given: name(p.given_name, "new_patient.given_name")?,
        birth_date: birth_date(&dob, "new_patient.birth_date")?.to_string(),
        insurance,
        phone: None,
    })
}

#[derive(Deserialize)]
struct CancelBody {
    reason: Option<String>,
    note: Option<String>,
}

/// Longest cancel note.
const MAX_CANCEL_NOTE_CHARS: usize = 120;

pub(super) fn parse_cancel(r: &str, b: &[u8]) -> Parsed<CancelInput> {
    let x: CancelBody = body(b)?;
    let reason = enum_value(x.reason, "reason", CancelReason::parse)?
        .unwrap_or(CancelReason::PatientRequest);
    let appointment_ref = form::percent_decode(r.as_bytes(), Escapes::Strict)
        .map_err(|_| ToolError::invalid("appointment_ref"))?;
    Ok(CancelInput {
        appointment_ref: required(Some(appointment_ref), MAX_REF_CHARS, "appointment_ref")?,
        reason,
        note: text(x.note, MAX_CANCEL_NOTE_CHARS, "note")?,
    })
}

#[derive(Deserialize)]
struct RequestBody {
    category: Option<String>,
    patient_ref: Option<String>,
    caller: Option<CallerBody>,
    details: Option<DetailsBody>,
    urgency: Option<String>,
    callback_number: Option<String>,
    callback_window: Option<String>,
    note: Option<String>,
}

#[derive(Deserialize)]
struct CallerBody {
    family_name: Option<String>,
    given_name: Option<String>,
    birth_date: Option<String>,
}

#[derive(Deserialize)]
struct DetailsBody {
    #[serde(default)]
    medications: Vec<MedicationBody>,
    new_medication: Option<bool>,
    specialty: Option<String>,
    reason_short: Option<String>,
    first_referral: Option<bool>,
    document_type: Option<String>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct MedicationBody {
    name: Option<String>,
    strength: Option<String>,
    amount: Option<String>,
}

/// Longest medication strength or amount.
const MAX_DOSE_CHARS: usize = 30;
/// Longest call-back number as typed.
const MAX_CALLBACK_NUMBER_CHARS: usize = 25;
/// Digits a call-back number must have.
const CALLBACK_NUMBER_DIGITS: std::ops::RangeInclusive<usize> = 5..=16;
/// Longest call-back window.
const MAX_CALLBACK_WINDOW_CHARS: usize = 60;

pub(super) fn parse_request(b: &[u8]) -> Parsed<RequestInput> {
    let x: RequestBody = body(b)?;
    let category = enum_value(x.category, "category", RequestCategory::parse)?
        .ok_or(ToolError::invalid("category"))?;
    let urgency = enum_value(x.urgency, "urgency", Urgency::parse)?.unwrap_or(Urgency::Routine);
    let caller = match x.caller.filter(|c| {
        [&c.family_name, &c.given_name, &c.birth_date]
            .iter()
            .any(|f| !blank(f))
    }) {
        None => None,
        Some(c) => Some(caller(c)?),
    };
    let details = x.details.map(details).transpose()?;
    let callback_number = text(
        x.callback_number,
        MAX_CALLBACK_NUMBER_CHARS,
        "callback_number",
    )?;
    if let Some(n) = &callback_number {
        let digits = n.chars().filter(char::is_ascii_digit).count();
        if !n
            .chars()
            .all(|c| c.is_ascii_digit() || " +-/()".contains(c))
            || !CALLBACK_NUMBER_DIGITS.contains(&digits)
        {
            return Err(ToolError::invalid("callback_number"));
        }
    }
    Ok(RequestInput {
        category,
        patient_ref: ref_text(x.patient_ref, "patient_ref")?,
        caller,
        details,
        urgency,
        callback_number,
        callback_window: text(
            x.callback_window,
            MAX_CALLBACK_WINDOW_CHARS,
            "callback_window",
        )?,
        note: text(x.note, MAX_TEXT_CHARS, "note")?,
    })
}

fn caller(c: CallerBody) -> Parsed<CallerDetails> {
    let family_name = name(c.family_name, "caller.family_name")?;
    let given_name = given_name(c.given_name, "caller.given_name")?;
    let birth_date = match text(c.birth_date, DATE_CHARS, "caller.birth_date")? {
        Some(d) => Some(birth_date(&d, "caller.birth_date")?.to_string()),
        None => None,
    };
    Ok(CallerDetails {
        family_name,
        given_name,
        birth_date,
    })
}

fn details(d: DetailsBody) -> Parsed<RequestDetails> {
    if d.medications.len() > MEDICATIONS_PARSE_LIMIT {
        return Err(ToolError::invalid("details.medications"));
    }
    let mut medications = Vec::with_capacity(d.medications.len());
    for m in d.medications {
        medications.push(Medication {
            name: required(m.name, MAX_NAME_CHARS, "details.medications.name")?,
            strength: text(m.strength, MAX_DOSE_CHARS, "details.medications.strength")?,
            amount: text(m.amount, MAX_DOSE_CHARS, "details.medications.amount")?,
        });
    }
    Ok(RequestDetails {
        medications,
        new_medication: d.new_medication.unwrap_or(false),
        specialty: text(d.specialty, MAX_NAME_CHARS, "details.specialty")?,
        reason_short: text(d.reason_short, MAX_REASON_CHARS, "details.reason_short")?,
        first_referral: d.first_referral.unwrap_or(false),
        document_type: text(d.document_type, MAX_NAME_CHARS, "details.document_type")?,
        text: text(d.text, MAX_TEXT_CHARS, "details.text")?,
    })
}

#[derive(Deserialize)]
struct EmergencyBody {
    severity: Option<String>,
    keywords: Option<String>,
    patient_ref: Option<String>,
}

pub(super) fn parse_emergency(b: &[u8]) -> Parsed<EmergencyInput> {
    let x: EmergencyBody = body(b)?;
    let severity = enum_value(x.severity, "severity", Severity::parse)?
        .ok_or(ToolError::invalid("severity"))?;
    // Keywords are cut, not rejected: an emergency must never fail on length.
    let keywords: String = x
        .keywords
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_KEYWORDS_CHARS)
        .collect();
    Ok(EmergencyInput {
        severity,
        keywords,
        // An unusable patient ref is dropped rather than failing the emergency.
        patient_ref: ref_text(x.patient_ref, "patient_ref").ok().flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("visit_type=kontrolle&weekdays=mo%2Cmi&x=a+b").unwrap();
        assert_eq!(q[1], ("weekdays".into(), "mo,mi".into()));
        assert_eq!(q[2].1, "a b");
        assert!(parse_query("a=%zz").is_none());
        assert!(parse_query("a=%c3").is_none());
    }

    #[test]
    fn categories_are_the_request_categories() {
        let all: Vec<&str> = RequestCategory::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(all, CATEGORIES);
    }
}
