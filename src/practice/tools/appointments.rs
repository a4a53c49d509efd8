//! `book_appointment` (new patients, atomic reschedule) and `cancel_appointment`: who may touch
//! which appointment, the notice period, and the idempotency key of a booking.

use sha2::{Digest, Sha256};

use super::context::{Ctx, Out, ts_of};
use super::error::ToolError;
use super::input::{BookInput, CancelInput};
use super::outcome::{Booked, Cancelled, ReplacedView};
use crate::practice::calendar;
use crate::practice::calls::{
    Assurance, Filed, MAX_BOOKINGS_PER_CALL, MAX_BOOKINGS_PER_NUMBER_PER_DAY, fingerprint,
};
use crate::practice::config::VisitType;
use crate::practice::store::{
    AppointmentStatus, BookOutcome, Booking, BookingPatient, CallerDetails, CancelOutcome,
    NewPatient, NewRequest, RequestCategory, SlotRecord, Urgency, name_key, normalize_name,
};

/// The staff's note on a review request for a "new patient" who matches a stored one.
pub const DUPLICATE_REVIEW_NOTE: &str = "Neupatient passt zu einem vorhandenen Eintrag (Name und \
     Geburtsdatum): keine zweite Akte angelegt, kein Termin gebucht. Bitte prüfen und zurückrufen.";
use crate::secret::hex_lower;

/// The patient a booking is for, resolved against this call.
struct Patient {
    booking: BookingPatient,
    /// The assurance reached in this call (`None`: a new patient).
    assurance: Option<Assurance>,
}

impl Patient {
    /// The patient part of the idempotency key: `p:<id>` for a stored patient,
    /// `n:<family>|<given>|<birth date>` for a new one, the names as compared everywhere else
    /// (`name_key`: "Meier, Stephan" retried as "Meyer, Stefan" is the same booking).
    fn key(&self) -> String {
        match &self.booking {
            BookingPatient::Existing(id) => format!("p:{id}"),
            BookingPatient::New(np) => {
                let (family, given) = name_keys(np);
                format!("n:{family}|{given}|{}", np.birth_date)
            }
        }
    }
}

/// The idempotency key of a booking: SHA-256, in lower-case hex, of
/// `<call sid>|<slot id>|<patient key>|<replaced appointment id, or "-">`, so a retry of the
/// same booking in the same call finds the first one.
fn idempotency_key(
    call_sid: &str,
    slot_id: i64,
    patient: &Patient,
    replaces: Option<i64>,
) -> String {
    let replaces = replaces.map_or_else(|| "-".to_string(), |id| id.to_string());
    let source = format!("{call_sid}|{slot_id}|{}|{replaces}", patient.key());
    hex_lower(&Sha256::digest(source.as_bytes()))
}

impl Ctx<'_> {
    pub(super) fn book(&mut self, i: BookInput) -> Out<Booked> {
        let Some(vt) = self.config.visit_type(&i.visit_type).cloned() else {
            return Err(ToolError::UnknownVisitType.into());
        };
        if !vt.phone_bookable {
            return Err(ToolError::NotPhoneBookable.into());
        }
        let Some(slot) = self.call.state.slot(&i.slot_ref).cloned() else {
            return Err(ToolError::NotOffered.into());
        };
        let patient = self.booking_patient(&i, &vt)?;
        let replaces = match &i.replaces_appointment_ref {
            None => None,
            Some(r) => Some(self.replaceable(r, &patient)?),
        };
        let mut assurance = patient.assurance;
        let mut booking = Booking {
            slot_id: slot.id,
            idempotency_key: idempotency_key(&self.call.call_sid, slot.id, &patient, replaces),
            patient: patient.booking,
            visit_type: vt.code.clone(),
            reason_short: i.reason_short.clone(),
            replaces,
            call_sid: self.call.call_sid.clone(),
            now: self.now.as_second(),
        };
        // A retry of a booking already made is answered with it before the caps and the
        // duplicate check: both would count the first attempt against its own retry (a new
        // patient would "match" the record the first attempt created) (docs/practice-tools.md
        // §3.4, idempotent per call and slot).
        if let Some(first) = self.store.repeated_booking(&booking.idempotency_key)? {
            return self.booked(first, slot.id, vt, assurance);
        }
        // Offered in time, but the conversation went on: a slot now inside the lead cannot be
        // reached any more, and one on a day closed since (staff closed it on the staff page,
        // docs/practice-tools.md §2.7) is not to be had; the caller gets the alternatives as
        // for a taken slot.
        let soon = self.now.as_second() + super::slots::MIN_BOOKING_LEAD_SECS;
        let cfg = self.config;
        let closed = |start| calendar::closed_all_day(cfg, calendar::local(cfg, ts_of(start)).date);
        let gone = |start: i64| start < soon || closed(start);
        if self.store.slot(slot.id)?.is_some_and(|s| gone(s.start)) {
            return self.booked(BookOutcome::SlotGone, slot.id, vt, assurance);
        }
        let (bookings_today, _) = self.caller_activity()?;
        if self.call.state.bookings >= MAX_BOOKINGS_PER_CALL
            || bookings_today >= MAX_BOOKINGS_PER_NUMBER_PER_DAY
        {
            return Err(ToolError::BookingLimit.into());
        }
        if let BookingPatient::New(np) = &booking.patient {
            let namesakes = self.namesakes(np)?;
            // The same new patient booked again in this call (the agent not using the
            // `patient_ref` the first booking answered): for the record that booking made. The
            // booking keeps the key it was asked with, so its retry is found.
            let this_call = self
                .call
                .state
                .patients
                .iter()
                .find(|r| namesakes.contains(&r.id));
            match this_call {
                Some(r) => {
                    assurance = Some(r.assurance);
                    booking.patient = BookingPatient::Existing(r.id);
                }
                None if !namesakes.is_empty() => return Err(self.review_duplicate(np)?.into()),
                None => {}
            }
        }
        let outcome = self.store.book(&booking)?;
        self.booked(outcome, slot.id, vt, assurance)
    }

    /// The answer to a booking the store made, repeated or refused.
    fn booked(
        &mut self,
        outcome: BookOutcome,
        slot_id: i64,
        vt: VisitType,
        assurance: Option<Assurance>,
    ) -> Out<Booked> {
        match outcome {
            BookOutcome::Booked {
                appointment,
                replaced,
                repeated,
            } => {
                if !repeated {
                    self.state().bookings += 1;
                }
                let patient_ref = self.state().add_patient(
                    appointment.patient_id,
                    assurance.unwrap_or(Assurance::NameDob),
                );
                let a = self.appointment_view(&appointment, true);
                let replaced = replaced.map(|r| ReplacedView {
                    appointment_ref: self.state().add_appointment(r.id, r.patient_id, false),
                    label: self.label(r.start),
                });
                Ok(Booked {
                    appointment_ref: a.appointment_ref,
                    patient_ref,
                    start: a.start,
                    label: a.label,
                    with: a.with,
                    visit_type: vt.label,
                    replaced,
                    bring: vt.bring,
                    repeated,
                })
            }
            BookOutcome::SlotTaken | BookOutcome::SlotGone => {
                let from = self
                    .store
                    .slot(slot_id)?
                    .as_ref()
                    .map_or(self.now.as_second(), |s: &SlotRecord| s.start);
                let alternatives = self.alternatives(&vt.code, from)?;
                Err(ToolError::SlotTaken { alternatives }.into())
            }
            BookOutcome::WrongVisitType => Err(ToolError::WrongVisitType.into()),
            BookOutcome::ReplacedNotBookable => Err(ToolError::NotFound.into()),
        }
    }

    /// Who the booking is for: a patient identified in this call, or a new patient (with the
    /// caller's number) where the practice and the visit type take new patients.
    fn booking_patient(&mut self, i: &BookInput, vt: &VisitType) -> Out<Patient> {
        match (&i.patient_ref, &i.new_patient) {
            (Some(r), _) => {
                let Some(p) = self.call.state.patient(r) else {
                    return Err(ToolError::NotIdentified.into());
                };
                Ok(Patient {
                    booking: BookingPatient::Existing(p.id),
                    assurance: Some(p.assurance),
                })
            }
            (None, Some(np)) => {
                if !self.config.accepts_new_patients {
                    return Err(ToolError::NoNewPatients.into());
                }
                if !vt.new_patients_ok {
                    return Err(ToolError::VisitTypeNotForNewPatients.into());
                }
                self.check_born(&np.birth_date, "new_patient.birth_date")?;
                // Only a name identification found no one for: else whether the booking is
                // made or goes to staff review would tell a caller, without the identification
                // budget, whether someone is a patient (docs/practice-tools.md §6.3).
                let (family, given) = name_keys(np);
                if !self
                    .call
                    .state
                    .was_unmatched(&family, &np.birth_date, &given)
                {
                    return Err(ToolError::NotIdentified.into());
                }
                let mut np = np.clone();
                np.phone = self.caller_number();
                Ok(Patient {
                    booking: BookingPatient::New(np),
                    assurance: None,
                })
            }
            (None, None) => Err(ToolError::NotIdentified.into()),
        }
    }

    /// The stored patients with a new patient's name and birth date (as names are compared).
    fn namesakes(&mut self, np: &NewPatient) -> Out<Vec<i64>> {
        let keys = name_keys(np);
        Ok(self
            .store
            .patients_by_birth_date(&np.birth_date)?
            .iter()
            .filter(|p| {
                name_key(&normalize_name(&p.family)) == keys.0
                    && name_key(&normalize_name(&p.given)) == keys.1
            })
            .map(|p| p.id)
            .collect())
    }

    /// The answer to a "new patient" whose name and birth date match a stored one: no second
    /// record (it would make the real patient's identification `ambiguous`), nothing booked; the
    /// staff get a review request instead.
    fn review_duplicate(&mut self, np: &NewPatient) -> Out<ToolError> {
        let (family, given) = name_keys(np);
        // A review the staff cannot call back on helps nobody: a withheld caller is asked
        // for a number first (the agent then files a call-back with it; agent/prompt.md §4).
        if self.caller_number().is_none() {
            return Ok(ToolError::CallbackNumberNeeded);
        }
        // A retried booking (same person, in this call, within minutes) gets the first review's
        // reference: the staff would otherwise review one caller twice.
        let fingerprint = fingerprint(&format!(
            "duplicate_review|{family}|{given}|{}",
            np.birth_date
        ));
        if let Some(first) = self.filed_earlier(&fingerprint)? {
            self.restore_filing(fingerprint, &first, true);
            return Ok(ToolError::StaffReview {
                request_ref: first.reference,
            });
        }
        // The review is a request: it counts against the caller's request caps, so reviews of
        // ever other names cannot flood the staff.
        self.check_request_caps()?;
        let created = self.store.create_request(&NewRequest {
            category: RequestCategory::Callback,
            patient_id: None,
            caller: Some(CallerDetails {
                family_name: np.family.clone(),
                given_name: Some(np.given.clone()),
                birth_date: Some(np.birth_date.clone()),
            }),
            details: None,
            urgency: Urgency::Routine,
            callback_number: self.caller_number(),
            callback_window: None,
            note: Some(DUPLICATE_REVIEW_NOTE.to_string()),
            call_sid: self.call.call_sid.clone(),
            assurance: None,
            caller_number: self.call.caller_number.trim().to_string(),
            fingerprint: Some(fingerprint.clone()),
            now: self.now.as_second(),
        })?;
        let at = self.now.as_second();
        self.state().note_filed(
            Filed {
                fingerprint,
                reference: created.ref_code.clone(),
                queue_position: None,
                at,
            },
            true,
        );
        Ok(ToolError::StaffReview {
            request_ref: created.ref_code,
        })
    }

    /// The appointment a reschedule replaces: the same patient's, known in this call, with
    /// phone assurance unless it was booked in this call, and outside the notice period.
    fn replaceable(&mut self, r: &str, patient: &Patient) -> Out<i64> {
        let Some(a) = self.call.state.appointment(r).cloned() else {
            return Err(ToolError::NotFound.into());
        };
        let owner = match &patient.booking {
            BookingPatient::Existing(id) => *id == a.patient_id,
            BookingPatient::New(_) => false,
        };
        if !owner {
            return Err(ToolError::NotFound.into());
        }
        if patient.assurance != Some(Assurance::NameDobPhone) && !a.booked_here {
            return Err(ToolError::InsufficientAssurance.into());
        }
        if !a.booked_here
            && let Some(old) = self.store.appointment(a.id)?
            && self.inside_notice(old.start)
        {
            return Err(ToolError::TooLateToChange.into());
        }
        Ok(a.id)
    }

    pub(super) fn cancel(&mut self, i: CancelInput) -> Out<Cancelled> {
        let Some(a) = self.call.state.appointment(&i.appointment_ref).cloned() else {
            return Err(ToolError::NotFound.into());
        };
        let Some(owner) = self
            .call
            .state
            .patients
            .iter()
            .find(|p| p.id == a.patient_id)
        else {
            return Err(ToolError::NotFound.into());
        };
        if owner.assurance != Assurance::NameDobPhone && !a.booked_here {
            return Err(ToolError::InsufficientAssurance.into());
        }
        let Some(current) = self.store.appointment(a.id)? else {
            return Err(ToolError::NotFound.into());
        };
        if current.status == AppointmentStatus::Booked
            && !a.booked_here
            && current.start > self.now.as_second()
            && self.inside_notice(current.start)
        {
            return Err(ToolError::TooLateToChange.into());
        }
        let now = self.now.as_second();
        match self.store.cancel(a.id, i.reason, i.note.as_deref(), now)? {
            CancelOutcome::Cancelled(rec) => Ok(Cancelled {
                cancelled: ReplacedView {
                    appointment_ref: i.appointment_ref,
                    label: self.label(rec.start),
                },
            }),
            CancelOutcome::NotFound => Err(ToolError::NotFound.into()),
            CancelOutcome::AlreadyCancelled => Err(ToolError::AlreadyCancelled.into()),
            CancelOutcome::InPast => Err(ToolError::InPast.into()),
        }
    }
}

/// A new patient's family and given name as names are compared (`name_key`).
fn name_keys(np: &NewPatient) -> (String, String) {
    (
        name_key(&normalize_name(&np.family)),
        name_key(&normalize_name(&np.given)),
    )
}
