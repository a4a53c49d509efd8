//! Every outcome of a tool or admin request other than success: one [`ToolError`] variant per
//! wire code, with its HTTP status, rendered to JSON only at the edge ([`ToolError::reply`]).
//!
//! Two kinds share the enum because the agent treats them alike (it reads `error`):
//! - refusals of the request itself (401/403/404/405/413/422/500/503): the agent or the
//!   deployment is misconfigured, or the service is overloaded;
//! - business outcomes (200 with `ok: false`): normal answers the agent acts on ("that slot was
//!   just taken, here are three others").

use serde::Serialize;

use super::ToolReply;
use super::outcome::SlotView;
use crate::practice::store::StoreError;

/// What the agent is told to say when the store cannot answer (503 `busy`/`unavailable`): the
/// appointment system is briefly unreachable; apologise, try once more in a moment, or offer
/// the practice team (transfer or call back). German, like the agent's prompt.
pub const UNAVAILABLE_MESSAGE: &str = "Das Terminsystem ist gerade kurz nicht erreichbar. \
    Entschuldigen Sie sich dafür, versuchen Sie es in einem Moment noch einmal oder bieten Sie \
    an, den Anrufer mit dem Praxisteam zu verbinden oder ihn zurückrufen zu lassen.";

/// A tool or admin outcome other than success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// 404 `not_found`: no such route.
    UnknownRoute,
    /// 405 `method_not_allowed`.
    MethodNotAllowed,
    /// 401 `unauthorized`: no bearer secret.
    Unauthorized,
    /// 403 `forbidden`: wrong bearer secret.
    Forbidden,
    /// 403 `admin_disabled`: no `ADMIN_TOKEN` is configured.
    AdminDisabled,
    /// 401 `no_call`: no `X-Ignis-Call` token.
    NoCall,
    /// 413 `too_large`: body or query over its limit.
    TooLarge,
    /// 422 `invalid_input`, naming the offending field where there is one.
    InvalidInput {
        /// The input field (`new_patient.birth_date`), or `None` (admin queries).
        field: Option<&'static str>,
    },
    /// 403 `call_not_active`: the call token belongs to no live call.
    CallNotActive,
    /// 404 `not_found` (admin): no open request with that ref.
    UnknownRequest,
    /// 500 `internal`: the store failed (logged, never shown).
    Internal,
    /// 503 `busy`: the store's queue is full; the client may retry.
    Busy,
    /// 503 `unavailable`: the store thread is gone or the database cannot be reached right now
    /// (PostgreSQL restarting); the reply's `message` tells the agent what to say.
    Unavailable,
    /// `locked`: identification is locked for this call or caller number.
    Locked,
    /// `unknown_visit_type`.
    UnknownVisitType,
    /// `not_phone_bookable`: staff book this visit type.
    NotPhoneBookable,
    /// `not_offered`: the slot ref was not offered in this call.
    NotOffered,
    /// `not_identified`: no patient identified in this call fits.
    NotIdentified,
    /// `no_new_patients`: the practice takes no new patients.
    NoNewPatients,
    /// `visit_type_not_for_new_patients`.
    VisitTypeNotForNewPatients,
    /// `not_found`: the appointment ref does not resolve to one this call may touch.
    NotFound,
    /// `insufficient_assurance`: the caller number does not match the one on file.
    InsufficientAssurance,
    /// `too_late_to_change`: inside the practice's notice period; staff decide.
    TooLateToChange,
    /// `slot_taken`, with alternatives to offer instead.
    SlotTaken {
        /// Free slots of the same visit type soon after.
        alternatives: Vec<SlotView>,
    },
    /// `wrong_visit_type`: the slot does not take this visit type.
    WrongVisitType,
    /// `already_cancelled`.
    AlreadyCancelled,
    /// `in_past`: the appointment has started.
    InPast,
    /// `missing_details`: the category needs details (medications, specialty).
    MissingDetails,
    /// `too_many_items`: more than [`super::input::MAX_MEDICATIONS`] medications.
    TooManyItems,
    /// `needs_appointment`: the request needs a visit.
    NeedsAppointment,
    /// `no_number_on_file`: results are only discussed with the number on file.
    NoNumberOnFile,
    /// `callback_number_needed`: an anonymous caller must give a number.
    CallbackNumberNeeded,
    /// `identify_limit`: this call used its [`crate::practice::calls::MAX_IDENTIFY_CALLS_PER_CALL`]
    /// identifications (successes included); offer a request instead.
    IdentifyLimit,
    /// `identification_paused`: the hourly budget of failed identifications over all callers
    /// is spent; nobody is identified until it refills (offer a request).
    IdentificationPaused,
    /// `booking_limit`: this call or this caller number booked as often as allowed.
    BookingLimit,
    /// `request_limit`: this call or this caller number created as many requests as allowed.
    RequestLimit,
    /// `staff_review`: the "new patient" matches an existing record by name and birth date; no
    /// second record was created, the staff review the request named here and call back.
    StaffReview {
        /// The review request's code (`R-…`), for the caller to quote.
        request_ref: String,
    },
    /// `premium_rate_number`: the call-back number has a premium-rate or shared-cost prefix
    /// (`PREMIUM_RATE_PREFIXES`); ask for another number.
    PremiumRateNumber,
}

impl ToolError {
    /// A 422 naming `field`.
    pub fn invalid(field: &'static str) -> ToolError {
        ToolError::InvalidInput { field: Some(field) }
    }

    /// The wire code (`error` in the JSON, `outcome` in the audit).
    pub fn code(&self) -> &'static str {
        use ToolError::*;
        match self {
            UnknownRoute | UnknownRequest | NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            AdminDisabled => "admin_disabled",
            NoCall => "no_call",
            TooLarge => "too_large",
            InvalidInput { .. } => "invalid_input",
            CallNotActive => "call_not_active",
            Internal => "internal",
            Busy => "busy",
            Unavailable => "unavailable",
            Locked => "locked",
            UnknownVisitType => "unknown_visit_type",
            NotPhoneBookable => "not_phone_bookable",
            NotOffered => "not_offered",
            NotIdentified => "not_identified",
            NoNewPatients => "no_new_patients",
            VisitTypeNotForNewPatients => "visit_type_not_for_new_patients",
            InsufficientAssurance => "insufficient_assurance",
            TooLateToChange => "too_late_to_change",
            SlotTaken { .. } => "slot_taken",
            WrongVisitType => "wrong_visit_type",
            AlreadyCancelled => "already_cancelled",
            InPast => "in_past",
            MissingDetails => "missing_details",
            TooManyItems => "too_many_items",
            NeedsAppointment => "needs_appointment",
            NoNumberOnFile => "no_number_on_file",
            CallbackNumberNeeded => "callback_number_needed",
            IdentifyLimit => "identify_limit",
            IdentificationPaused => "identification_paused",
            BookingLimit => "booking_limit",
            RequestLimit => "request_limit",
            StaffReview { .. } => "staff_review",
            PremiumRateNumber => "premium_rate_number",
        }
    }

    /// The HTTP status: business outcomes are 200 (the request itself was fine).
    pub fn status(&self) -> u16 {
        use ToolError::*;
        match self {
            Unauthorized | NoCall => 401,
            Forbidden | AdminDisabled | CallNotActive => 403,
            UnknownRoute | UnknownRequest => 404,
            MethodNotAllowed => 405,
            TooLarge => 413,
            InvalidInput { .. } => 422,
            Internal => 500,
            Busy | Unavailable => 503,
            _ => 200,
        }
    }

    /// The reply: `{"ok": false, "error": code}` plus the variant's own fields.
    pub fn reply(&self) -> ToolReply {
        #[derive(Serialize)]
        struct Wire<'a> {
            ok: bool,
            error: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            field: Option<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            attempts_left: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            alternatives: Option<&'a [SlotView]>,
            #[serde(skip_serializing_if = "Option::is_none")]
            request_ref: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            message: Option<&'static str>,
        }
        let wire = Wire {
            ok: false,
            error: self.code(),
            field: match self {
                ToolError::InvalidInput { field } => *field,
                _ => None,
            },
            attempts_left: matches!(self, ToolError::Locked).then_some(0),
            alternatives: match self {
                ToolError::SlotTaken { alternatives } => Some(alternatives),
                _ => None,
            },
            request_ref: match self {
                ToolError::StaffReview { request_ref } => Some(request_ref),
                _ => None,
            },
            message: matches!(self, ToolError::Busy | ToolError::Unavailable)
                .then_some(UNAVAILABLE_MESSAGE),
        };
        ToolReply::render(self.status(), &wire)
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for ToolError {}

impl From<ToolError> for ToolReply {
    fn from(e: ToolError) -> ToolReply {
        e.reply()
    }
}

/// Why running a tool stopped: a business outcome, or the store failing underneath.
#[derive(Debug)]
pub(super) enum Stop {
    /// A [`ToolError`] to answer.
    Refused(ToolError),
    /// The store failed (answered 500, logged).
    Store(StoreError),
}

impl From<ToolError> for Stop {
    fn from(e: ToolError) -> Stop {
        Stop::Refused(e)
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Stop {
        Stop::Store(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_code_status_and_extras() {
        let r = ToolError::invalid("birth_date").reply();
        assert_eq!(r.status, 422);
        assert_eq!(
            r.body,
            br#"{"error":"invalid_input","field":"birth_date","ok":false}"#
        );
        let r = ToolError::Locked.reply();
        assert_eq!(
            (r.status, r.body_json()["attempts_left"].as_u64()),
            (200, Some(0))
        );
        let r = ToolError::InvalidInput { field: None }.reply();
        assert_eq!(r.body, br#"{"error":"invalid_input","ok":false}"#);
        assert_eq!(ToolError::UnknownRoute.status(), 404);
        assert_eq!(ToolError::NotFound.status(), 200);
    }
}
