//! The records the store reads and writes: what the tools, the admin API and the seed pass in
//! and get back, independent of the backend.

use jiff::civil::Date;

use crate::practice::calendar::Advice;
use crate::practice::calls::CallState;

/// An enum with one fixed spelling per value, used both in the database and on the wire.
macro_rules! text_enum {
    ($(#[$m:meta])* pub enum $name:ident {
        $($(#[$vm:meta])* $variant:ident = $text:literal,)+
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// The spelling stored and sent.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value spelled `text` (exactly), if any.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&text).ok_or_else(|| {
                    serde::de::Error::custom(format_args!(
                        concat!("unknown ", stringify!($name), " {:?}"),
                        text
                    ))
                })
            }
        }
    };
}

text_enum! {
    /// A patient's gender as the practice records it (salutation only).
    pub enum Gender {
        /// "Frau …".
        Female = "female",
        /// "Herr …".
        Male = "male",
        /// Given and family name.
        Other = "other",
        /// Given and family name.
        Unknown = "unknown",
    }
}

text_enum! {
    /// How a patient is insured.
    pub enum Insurance {
        /// Statutory (gesetzlich).
        Gkv = "gkv",
        /// Private.
        Pkv = "pkv",
        /// Self-paying.
        SelfPay = "self",
    }
}

text_enum! {
    /// FHIR `Slot.status`.
    pub enum SlotStatus {
        /// Bookable.
        Free = "free",
        /// Holds a booked appointment.
        Busy = "busy",
        /// Blocked.
        BusyUnavailable = "busy-unavailable",
        /// Tentatively held.
        BusyTentative = "busy-tentative",
        /// Created by mistake.
        EnteredInError = "entered-in-error",
    }
}

text_enum! {
    /// FHIR `Appointment.status` (the subset the practice uses).
    pub enum AppointmentStatus {
        /// Booked and upcoming (or today).
        Booked = "booked",
        /// Cancelled (by the caller, the staff or a reschedule).
        Cancelled = "cancelled",
        /// The visit took place.
        Fulfilled = "fulfilled",
        /// The patient did not come.
        Noshow = "noshow",
        /// Created by mistake.
        EnteredInError = "entered-in-error",
    }
}

text_enum! {
    /// Why the caller cancels an appointment.
    pub enum CancelReason {
        /// The patient asked (the default).
        PatientRequest = "patient_request",
        /// The patient is ill.
        Illness = "illness",
        /// Anything else.
        Other = "other",
    }
}

text_enum! {
    /// What a request for the practice team is about.
    pub enum RequestCategory {
        /// Repeat prescription.
        PrescriptionRefill = "prescription_refill",
        /// Sick note (AU).
        SickNote = "sick_note",
        /// Referral (Überweisung).
        Referral = "referral",
        /// Call back about results.
        ResultsCallback = "results_callback",
        /// Plain call back.
        Callback = "callback",
        /// Call back today.
        UrgentCallback = "urgent_callback",
        /// A document to prepare.
        Document = "document",
        /// A message for the team.
        Message = "message",
    }
}

text_enum! {
    /// How soon a request needs the team.
    pub enum Urgency {
        /// In the normal course.
        Routine = "routine",
        /// Today.
        Urgent = "urgent",
    }
}

text_enum! {
    /// How severe a reported emergency is.
    pub enum Severity {
        /// Life-threatening: 112 at once.
        LifeThreatening = "life_threatening",
        /// Urgent but not life-threatening.
        Urgent = "urgent",
    }
}

text_enum! {
    /// Why staff closed the practice on the staff page (a fixed list: the words reach callers
    /// through the agent, docs/practice-tools.md §2.7).
    pub enum ClosureReason {
        /// "Krankheit".
        Illness = "illness",
        /// "Praxisurlaub".
        Vacation = "vacation",
        /// "Fortbildung".
        Training = "training",
        /// "Schließtag": any other reason.
        Other = "other",
    }
}

impl ClosureReason {
    /// The German word said to callers and shown to staff.
    pub const fn label(self) -> &'static str {
        match self {
            ClosureReason::Illness => "Krankheit",
            ClosureReason::Vacation => "Praxisurlaub",
            ClosureReason::Training => "Fortbildung",
            ClosureReason::Other => "Schließtag",
        }
    }
}

/// A closure entered on the staff page (inclusive local dates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffClosure {
    /// Row id (the page's "open again" names it).
    pub id: i64,
    /// First closed day.
    pub from: Date,
    /// Last closed day.
    pub to: Date,
    /// Why.
    pub reason: ClosureReason,
    /// The staff account that entered it.
    pub created_by: String,
    /// When, UTC seconds.
    pub created_at: i64,
}

/// A stored patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientRecord {
    /// Internal id.
    pub id: i64,
    /// Family name as stored.
    pub family: String,
    /// Given name as stored.
    pub given: String,
    /// Normalised family name.
    pub family_norm: String,
    /// Normalised given name.
    pub given_norm: String,
    /// Birth date `YYYY-MM-DD`.
    pub birth_date: String,
    /// Gender (salutation).
    pub gender: Gender,
    /// Phone number on file.
    pub phone: Option<String>,
    /// Quarter of the last card read (`2026Q4`).
    pub card_read_quarter: Option<String>,
    /// Whether the patient has been treated here (not only created by phone).
    pub known: bool,
}

/// Data for a patient created by phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPatient {
    /// Family name.
    pub family: String,
    /// Given name.
    pub given: String,
    /// Birth date `YYYY-MM-DD`.
    pub birth_date: String,
    /// Insurance.
    pub insurance: Insurance,
    /// Phone (the caller number).
    pub phone: Option<String>,
}

/// A stored slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRecord {
    /// Internal id.
    pub id: i64,
    /// Practitioner id.
    pub practitioner: String,
    /// Start, UTC seconds.
    pub start: i64,
    /// End, UTC seconds.
    pub end: i64,
    /// Visit type codes the slot takes.
    pub visit_types: Vec<String>,
    /// FHIR slot status.
    pub status: SlotStatus,
}

/// A stored appointment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppointmentRecord {
    /// Internal id.
    pub id: i64,
    /// Slot id.
    pub slot_id: i64,
    /// Patient id.
    pub patient_id: i64,
    /// Practitioner id.
    pub practitioner: String,
    /// Start, UTC seconds.
    pub start: i64,
    /// End, UTC seconds.
    pub end: i64,
    /// Visit type code.
    pub visit_type: String,
    /// Administrative reason.
    pub reason_short: String,
    /// FHIR appointment status.
    pub status: AppointmentStatus,
}

/// Who a booking is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookingPatient {
    /// A stored patient.
    Existing(i64),
    /// A patient to create in the same transaction.
    New(NewPatient),
}

/// A booking (or reschedule, with `replaces`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    /// Slot to claim.
    pub slot_id: i64,
    /// Patient.
    pub patient: BookingPatient,
    /// Visit type code (must be one the slot takes).
    pub visit_type: String,
    /// Administrative reason.
    pub reason_short: String,
    /// Appointment to cancel in the same transaction (reschedule).
    pub replaces: Option<i64>,
    /// Call SID, for staff correlation.
    pub call_sid: String,
    /// Idempotency key (call + slot + patient).
    pub idempotency_key: String,
    /// Now, UTC seconds; the slot must start after it.
    pub now: i64,
}

/// Result of [`Store::book`](super::Store::book).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookOutcome {
    /// Booked (or a retry of an identical booking, `repeated`).
    Booked {
        /// The new appointment.
        appointment: Box<AppointmentRecord>,
        /// The cancelled appointment of a reschedule.
        replaced: Option<Box<AppointmentRecord>>,
        /// Whether this answered a retry.
        repeated: bool,
    },
    /// Someone else holds the slot.
    SlotTaken,
    /// The slot does not exist or has started.
    SlotGone,
    /// The slot does not take this visit type.
    WrongVisitType,
    /// The appointment to replace is not a booked appointment of this patient.
    ReplacedNotBookable,
}

/// Result of [`Store::cancel`](super::Store::cancel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Cancelled; the slot is free again.
    Cancelled(AppointmentRecord),
    /// No such appointment.
    NotFound,
    /// Already cancelled (or otherwise not booked).
    AlreadyCancelled,
    /// It has started or is over.
    InPast,
}

/// A request for the practice team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    /// Category.
    pub category: RequestCategory,
    /// Identified patient.
    pub patient_id: Option<i64>,
    /// Caller data when not identified.
    pub caller: Option<CallerDetails>,
    /// Category details (`None`: the agent sent none).
    pub details: Option<RequestDetails>,
    /// Urgency.
    pub urgency: Urgency,
    /// Number to call back.
    pub callback_number: Option<String>,
    /// Preferred call-back window.
    pub callback_window: Option<String>,
    /// Free note.
    pub note: Option<String>,
    /// Call SID.
    pub call_sid: String,
    /// How well the caller was identified (`None`: not at all).
    pub assurance: Option<crate::practice::calls::Assurance>,
    /// The calling number, as the call has it (`anonymous` included).
    pub caller_number: String,
    /// The tool call's fingerprint (`calls::fingerprint`), stored with the row so a retry is
    /// recognised even when the call state that also keeps it was not saved.
    pub fingerprint: Option<String>,
    /// Now, UTC seconds.
    pub now: i64,
}

/// Who called, when the caller could not be identified (kept with a request for the staff).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallerDetails {
    /// Family name.
    pub family_name: String,
    /// Given name.
    pub given_name: Option<String>,
    /// Birth date `YYYY-MM-DD`.
    pub birth_date: Option<String>,
}

/// What a request is about, as the caller said it (bounded by the tool layer).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestDetails {
    /// Medications of a repeat prescription.
    pub medications: Vec<Medication>,
    /// Whether a medication is new (needs a visit).
    pub new_medication: bool,
    /// Specialty of a referral.
    pub specialty: Option<String>,
    /// Administrative reason.
    pub reason_short: Option<String>,
    /// Whether it is the first referral for this (needs a visit).
    pub first_referral: bool,
    /// Kind of document.
    pub document_type: Option<String>,
    /// Free text.
    pub text: Option<String>,
}

/// One medication of a repeat prescription.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Medication {
    /// Name.
    pub name: String,
    /// Strength ("5 mg").
    pub strength: Option<String>,
    /// Pack size ("N3").
    pub amount: Option<String>,
}

/// A stored request as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedRequest {
    /// Short code the caller can quote (`R-1001`).
    pub ref_code: String,
    /// Position among open urgent requests (urgent only).
    pub queue_position: Option<u32>,
}

/// An emergency event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEmergency {
    /// Severity.
    pub severity: Severity,
    /// Keywords said by the caller.
    pub keywords: String,
    /// Identified patient.
    pub patient_id: Option<i64>,
    /// Caller number.
    pub callback_number: Option<String>,
    /// Advice given.
    pub advice: Advice,
    /// Call SID.
    pub call_sid: String,
    /// The tool call's fingerprint, as for [`NewRequest::fingerprint`].
    pub fingerprint: Option<String>,
    /// Now, UTC seconds.
    pub now: i64,
}

/// A live call as found by its token hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// Internal id.
    pub id: i64,
    /// Twilio call SID.
    pub call_sid: String,
    /// Stored token hash.
    pub token_hash: Vec<u8>,
    /// Caller number.
    pub caller_number: String,
    /// Per-call state.
    pub state: CallState,
}

/// An appointment row for staff: when and with whom as stored (the admin API renders them for
/// people), and the rest as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffAppointment {
    /// Internal id.
    pub id: i64,
    /// Start, UTC seconds.
    pub start: i64,
    /// Practitioner id.
    pub practitioner: String,
    /// What the staff see as stored.
    pub details: StaffAppointmentDetails,
}

/// The part of a staff appointment row shown as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StaffAppointmentDetails {
    /// Visit type.
    pub visit_type: String,
    /// Reason.
    pub reason_short: String,
    /// Status.
    pub status: AppointmentStatus,
    /// Patient name.
    pub patient: String,
    /// Patient birth date.
    pub birth_date: String,
    /// Phone on file.
    pub phone: Option<String>,
}

/// A request row for staff.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StaffRequest {
    /// Reference code.
    pub ref_code: String,
    /// Category.
    pub category: RequestCategory,
    /// Urgency.
    pub urgency: Urgency,
    /// Patient name (identified) or null.
    pub patient: Option<String>,
    /// Caller data when not identified.
    pub caller: Option<serde_json::Value>,
    /// Details.
    pub details: serde_json::Value,
    /// Call-back number.
    pub callback_number: Option<String>,
    /// Preferred window.
    pub callback_window: Option<String>,
    /// Note.
    pub note: Option<String>,
    /// Created, UTC seconds.
    pub created_at: i64,
    /// Assurance of the caller (`name_dob_phone`, `name_dob`, `none`; null before issue 12).
    pub assurance: Option<String>,
    /// The calling number (null before issue 12).
    pub caller_number: Option<String>,
    /// Whether the caller was verified (`name_dob_phone`); staff check other requests first.
    pub verified: bool,
}

/// An emergency event row for staff.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StaffEmergency {
    /// Event ref (`E-<id>`).
    pub event_ref: String,
    /// Severity.
    pub severity: Severity,
    /// Keywords.
    pub keywords: String,
    /// Patient name, if identified.
    pub patient: Option<String>,
    /// Call-back number.
    pub callback_number: Option<String>,
    /// Advice given.
    pub advice: Advice,
    /// Created, UTC seconds.
    pub created_at: i64,
}

/// Retention limits in seconds (docs/practice-tools.md §6.4 defaults in [`RetentionPolicy::default`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Call state, after the call ended.
    pub call_after_end: i64,
    /// Tool audit rows.
    pub tool_audit: i64,
    /// Requests, after they were done.
    pub request_after_done: i64,
    /// Appointments, after their date.
    pub appointment_after_start: i64,
    /// Phone-created patients without any appointment or request, after creation.
    pub orphan_patient: i64,
    /// Emergency events.
    pub emergency_event: i64,
    /// Staff audit rows (who viewed or changed what on the staff page): as long as the longest
    /// lived patient data ([`RetentionPolicy::appointment_after_start`]), so every view of data
    /// still held can be answered for (issue 14).
    pub staff_audit: i64,
}

/// Seconds in a day.
pub(super) const DAY: i64 = 86_400;

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            call_after_end: DAY,
            tool_audit: 90 * DAY,
            request_after_done: 30 * DAY,
            appointment_after_start: 365 * DAY,
            orphan_patient: 182 * DAY,
            emergency_event: 365 * DAY,
            staff_audit: 365 * DAY,
        }
    }
}

/// Rows deleted by a retention run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Calls.
    pub calls: usize,
    /// Tool audit rows.
    pub tool_audit: usize,
    /// Requests.
    pub requests: usize,
    /// Appointments.
    pub appointments: usize,
    /// Patients.
    pub patients: usize,
    /// Emergency events.
    pub emergency_events: usize,
    /// Past slots without appointments.
    pub slots: usize,
    /// Staff sessions idle past [`STAFF_SESSION_IDLE_SECS`] or older than
    /// [`STAFF_SESSION_MAX_SECS`].
    pub staff_sessions: usize,
    /// Staff audit rows.
    pub staff_audit: usize,
    /// Staff closures entered, and over or removed, longer ago than the staff audit is kept.
    pub staff_closures: usize,
}

/// A staff session ends after this long without a request (issue 14: 8 h idle expiry).
pub const STAFF_SESSION_IDLE_SECS: i64 = 8 * 3600;
/// A staff session ends this long after its login however much it is used (OWASP Session
/// Management Cheat Sheet, "Absolute Timeout"): a page kept open on a desk must log in again
/// each working day, and a stolen cookie does not live for ever.
pub const STAFF_SESSION_MAX_SECS: i64 = 12 * 3600;

/// A session's `last_seen_at` is rewritten only when it is at least this old: an open page polls
/// every second, and a write per poll would be an fsync per poll on the store's single writer.
/// The idle expiry is exact to within this much.
pub const STAFF_SESSION_TOUCH_SECS: i64 = 60;

/// Most login windows the store keeps for account names at once (docs/staff.md "Login rate
/// limit"): a name new past this counts against [`LOGIN_OVERFLOW_KEY`], so names guessed from
/// ever new addresses cannot grow the table without bound.
pub const MAX_LOGIN_WINDOWS: i64 = 10_000;
/// The window that names beyond [`MAX_LOGIN_WINDOWS`] share; never a valid account name.
pub const LOGIN_OVERFLOW_KEY: &str = "+";

/// A login window as counted by [`Store::count_login_attempt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginWindow {
    /// The key counted against (the one asked for, or [`LOGIN_OVERFLOW_KEY`]).
    pub key: String,
    /// When the window started, UTC seconds.
    pub started: i64,
    /// Attempts counted in it (by `count_login_attempt`: this one included).
    pub attempts: i64,
    /// Its lock-out was reported (audited) already.
    pub reported: bool,
}

/// A staff account as listed (never its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffUser {
    /// Account name.
    pub name: String,
    /// Created, UTC seconds.
    pub created_at: i64,
}

/// A live staff session, as found by its token's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffSession {
    /// The account's name.
    pub user: String,
    /// The session's CSRF token.
    pub csrf: String,
}

/// A demo patient for the seed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct DemoPatient {
    /// Family name.
    pub family: String,
    /// Given name.
    pub given: String,
    /// Birth date.
    pub birth_date: String,
    /// Gender.
    pub gender: Gender,
    /// Phone.
    pub phone: Option<String>,
    /// Insurance.
    pub insurance: Insurance,
    /// Card read this quarter (`2026Q4`).
    pub card_read_quarter: Option<String>,
}

/// The quarter of a date, `2026Q4`.
pub fn quarter(date: Date) -> String {
    format!("{}Q{}", date.year(), (date.month() - 1) / 3 + 1)
}

text_enum! {
    /// How a call ended, as the staff page shows it (issue 14). The bridge's finer
    /// [`crate::calls::Outcome`] is folded into these four by the driver.
    pub enum CallOutcome {
        /// The agent or the caller ended the conversation normally.
        Completed = "completed",
        /// The agent handed the caller to the practice's staff line (`transfer_to_staff`).
        Transferred = "transferred",
        /// The caller was sent to the fallback (capacity, shutdown, lost stream).
        Fallback = "fallback",
        /// The agent failed (connect error, error close, dead socket).
        AgentFailed = "agent_failed",
    }
}

/// What the bridge knows when a call ends, stored with the call for the staff page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallEnd {
    /// How it ended.
    pub outcome: CallOutcome,
    /// Time from the stream's start to the first agent audio, ms (`None`: no audio).
    pub first_audio_ms: Option<u64>,
}

impl CallEnd {
    /// The staff page's view of a bridge outcome: a call the agent handed to the staff line is
    /// `Transferred` however its stream then ended; a normal end (agent or caller) is
    /// `Completed`; an agent failure is `AgentFailed`; everything else sent the caller to the
    /// fallback (docs/twilio.md §2.3: the TwiML after `<Connect>`; §5.2 for the transfer).
    pub fn from_bridge(
        outcome: crate::calls::Outcome,
        transferred: bool,
        first_audio: Option<std::time::Duration>,
    ) -> CallEnd {
        use crate::calls::Outcome;
        let outcome = match outcome {
            _ if transferred => CallOutcome::Transferred,
            Outcome::Completed | Outcome::CallerHungUp => CallOutcome::Completed,
            Outcome::AgentFailed => CallOutcome::AgentFailed,
            Outcome::ServerShutdown | Outcome::StreamLost | Outcome::Refused => {
                CallOutcome::Fallback
            }
        };
        CallEnd {
            outcome,
            first_audio_ms: first_audio.map(|d| d.as_millis().min(u64::MAX as u128) as u64),
        }
    }
}

/// A call row for staff (started in a day, or still running).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffCall {
    /// Internal id.
    pub id: i64,
    /// Caller number as stored (`anonymous` included).
    pub caller_number: String,
    /// Started, UTC seconds.
    pub started_at: i64,
    /// Ended, UTC seconds (`None`: running, or the process died before the end was stored).
    pub ended_at: Option<i64>,
    /// How it ended (`None`: running, or ended before issue 14).
    pub outcome: Option<CallOutcome>,
    /// Time to first audio, ms.
    pub first_audio_ms: Option<i64>,
}

/// A request of a day for staff, open or done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffDayRequest {
    /// The request as the admin API shows it (`patient` without the birth date here).
    pub row: StaffRequest,
    /// Identified patient's birth date.
    pub birth_date: Option<String>,
    /// When it was marked done, UTC seconds (`None`: open).
    pub done_at: Option<i64>,
    /// Who marked it done (a staff account; `None` when open or done through the admin API).
    pub done_by: Option<String>,
}

/// What marking a request done (or undoing that) changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestChange {
    /// The request changed state.
    Changed,
    /// It was already in that state (someone else was quicker).
    Unchanged,
    /// No request has this ref.
    NotFound,
}

/// An appointment row for the staff page's timeline: the staff row plus what the phone agent
/// changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffDayAppointment {
    /// The row as the admin API has it.
    pub row: StaffAppointment,
    /// End, UTC seconds.
    pub end: i64,
    /// The call that booked it (`None`: entered by the practice).
    pub call_sid: Option<String>,
    /// Created, UTC seconds.
    pub created_at: i64,
    /// Cancelled, UTC seconds.
    pub cancelled_at: Option<i64>,
    /// Stored cancel reason (`rescheduled` when a reschedule replaced it).
    pub cancel_reason: Option<String>,
    /// Whether a reschedule moved it here (it replaced an earlier appointment).
    pub moved_here: bool,
}
