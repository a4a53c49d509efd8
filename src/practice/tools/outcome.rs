//! The six tools' successful answers as types. [`super::execute`] renders them with `"ok": true`
//! at the edge; field names are the agent-facing API and must not change.

use serde::Serialize;

use crate::practice::calendar::Advice;
use crate::practice::calls::Assurance;
use crate::practice::store::RequestCategory;

/// A successful tool answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ToolOutcome {
    /// `identify_patient`.
    Identify(IdentifyOutcome),
    /// `find_slots`.
    Slots(SlotsFound),
    /// `book_appointment`.
    Booked(Booked),
    /// `cancel_appointment`.
    Cancelled(Cancelled),
    /// `create_request`.
    Request(RequestCreated),
    /// `report_emergency`.
    Emergency(EmergencyAdvice),
}

/// A slot as offered to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotView {
    /// Per-call ref (`S1`).
    pub slot_ref: String,
    /// Local start, ISO 8601 with offset.
    pub start: String,
    /// Local end, ISO 8601 with offset.
    pub end: String,
    /// German label ("Mittwoch, 25. November, 10:00 Uhr").
    pub label: String,
    /// Practitioner's display name.
    pub with: String,
}

/// An appointment as read back to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppointmentView {
    /// Per-call ref (`A1`).
    pub appointment_ref: String,
    /// Local start, ISO 8601 with offset.
    pub start: String,
    /// German label.
    pub label: String,
    /// Practitioner's display name.
    pub with: String,
    /// Visit type code.
    pub visit_type: String,
}

/// How `identify_patient` matched, tagged by `match`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "match", rename_all = "lowercase")]
pub enum IdentifyOutcome {
    /// Nobody matched (counts as a failed attempt).
    None {
        /// Attempts left in this call.
        attempts_left: u32,
    },
    /// Exactly one patient.
    Unique(Box<UniqueMatch>),
    /// Several patients; the agent asks for the given name.
    Ambiguous {
        /// Attempts left in this call.
        attempts_left: u32,
    },
}

/// The one patient `identify_patient` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UniqueMatch {
    /// Per-call ref (`P1`).
    pub patient_ref: String,
    /// "Frau Weber" (only with phone assurance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salutation: Option<String>,
    /// How well the person is established.
    pub assurance: Assurance,
    /// Upcoming appointments (only with phone assurance).
    pub upcoming: Vec<AppointmentView>,
    /// What the agent may offer.
    pub flags: PatientFlags,
    /// Attempts left in this call.
    pub attempts_left: u32,
}

/// Facts about an identified patient the agent needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PatientFlags {
    /// Treated here before (not only created by phone); only with phone assurance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_patient: Option<bool>,
    /// Insurance card read this quarter (e-prescriptions go straight to the card); only with
    /// phone assurance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card_read_this_quarter: Option<bool>,
    /// Appointments may be read back, moved and cancelled.
    pub appointments_readable: bool,
}

/// Why `find_slots` found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotsNote {
    /// Same day asked, nothing left today.
    SameDayFull,
    /// Nothing up to the booking horizon.
    NothingFree,
}

/// `find_slots`' answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotsFound {
    /// Offered slots.
    pub slots: Vec<SlotView>,
    /// The next free slot after the window, when the window had none.
    pub next_available: Option<SlotView>,
    /// Why nothing was found.
    pub note: Option<SlotsNote>,
}

/// The appointment a reschedule replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplacedView {
    /// Per-call ref.
    pub appointment_ref: String,
    /// German label.
    pub label: String,
}

/// `book_appointment`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Booked {
    /// Per-call ref of the new appointment.
    pub appointment_ref: String,
    /// Per-call ref of the patient.
    pub patient_ref: String,
    /// Local start.
    pub start: String,
    /// German label.
    pub label: String,
    /// Practitioner's display name.
    pub with: String,
    /// Visit type label.
    pub visit_type: String,
    /// The replaced appointment of a reschedule.
    pub replaced: Option<ReplacedView>,
    /// What to bring.
    pub bring: Vec<String>,
    /// Whether this answered a retry.
    pub repeated: bool,
}

/// `cancel_appointment`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cancelled {
    /// The cancelled appointment.
    pub cancelled: ReplacedView,
}

/// What the caller can expect after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectKind {
    /// E-prescription on the insurance card.
    ERezeptCard,
    /// Come by with the card first.
    CardVisitFirst,
    /// The doctor calls back.
    DoctorCallback,
    /// Pick up at the reception.
    Pickup,
    /// Call back on the number on file.
    CallbackNumberOnFile,
    /// Call back today.
    CallbackToday,
    /// The practice is closed for today: call back from its next opening (the label names it,
    /// with the after-hours advice meanwhile).
    CallbackNextOpening,
    /// The staff prepare a document.
    StaffPrepares,
    /// The message is passed on.
    MessageTaken,
    /// The staff call back.
    Callback,
}

/// A prerequisite the caller still has to meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    /// The card must be read this quarter.
    CardVisitThisQuarter,
}

/// What happens next, for the agent to say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expectation {
    /// Kind.
    pub kind: ExpectKind,
    /// German sentence.
    pub label: String,
}

/// `create_request`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestCreated {
    /// Code the caller can quote (`R-1001`).
    pub request_ref: String,
    /// Category.
    pub category: RequestCategory,
    /// What happens next.
    pub expect: Expectation,
    /// Prerequisites.
    pub needs: Vec<Need>,
    /// Position among open urgent requests (urgent only).
    pub queue_position: Option<u32>,
    /// A retry of a request already filed in this call: its first reference, nothing new.
    pub repeated: bool,
    /// The caller named a call-back number, but the practice calls back the number on file
    /// (below phone assurance, or results): the agent says so instead of confirming the
    /// number it heard.
    pub number_on_file_instead: bool,
}

/// Numbers the agent may say during an emergency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmergencyNumbers {
    /// Always `112`.
    pub emergency: &'static str,
    /// The ärztlicher Bereitschaftsdienst.
    pub after_hours: String,
    /// The covering practice, "Name, Telefon …".
    pub vertretung: Option<String>,
}

/// `report_emergency`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmergencyAdvice {
    /// The recorded event (`E-1`), or null if recording failed.
    pub event_ref: Option<String>,
    /// The advice.
    pub advice: Advice,
    /// German sentence to say.
    pub say: String,
    /// Numbers.
    pub numbers: EmergencyNumbers,
    /// Whether the bridge can transfer to staff now.
    pub transfer_available: bool,
    /// When the practice opens next (label).
    pub reopens: Option<String>,
}
