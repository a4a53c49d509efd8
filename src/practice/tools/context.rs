//! What every tool runs with: the store, the configuration, the live call and `now`, plus the
//! views of slots and appointments that mint per-call refs.

use jiff::Timestamp;

use super::error::Stop;
use super::error::ToolError;
use super::outcome::{AppointmentView, SlotView};
use crate::metrics::{Metrics, PRACTICE};
use crate::practice::calendar;
use crate::practice::calls::{
    CALLER_DAY_SECS, CallState, FAILURE_BUDGET_WINDOW_SECS, Filed, IDENTIFICATION_WINDOW_SECS,
    MAX_FAILED_IDENTIFICATIONS, MAX_FAILED_IDENTIFICATIONS_PER_NUMBER,
    MAX_FAILED_IDENTIFICATIONS_WITHHELD, MAX_IDENTIFY_CALLS_PER_CALL, REFILE_WINDOW_SECS,
    normalize_number,
};
use crate::practice::config::PracticeConfig;
use crate::practice::store::{
    AppointmentRecord, CallRecord, PatientRecord, SlotRecord, Store, StoreResult,
};
use crate::privacy::mask_phone;
use crate::secret::constant_time_eq;

/// Fewest digits a caller number needs to count as a number (not `anonymous`).
pub(super) const MIN_NUMBER_DIGITS: usize = 5;

/// A tool's result: its outcome, or why it stopped.
pub(super) type Out<T> = Result<T, Stop>;

/// A request or emergency filed earlier in the call ([`Ctx::filed_earlier`]).
#[derive(Debug, Clone)]
pub(super) struct Earlier {
    /// Its reference (`R-…` or `E-…`).
    pub reference: String,
    /// An urgent request's queue position, when known.
    pub queue_position: Option<u32>,
    /// Found in the stored rows only (the call state was not saved after it): when it was
    /// filed.
    pub rows_only: Option<i64>,
}

/// One tool call's context on the store thread.
pub(super) struct Ctx<'a> {
    pub(super) store: &'a mut dyn Store,
    pub(super) config: &'a PracticeConfig,
    pub(super) call: CallRecord,
    pub(super) now: Timestamp,
    /// Whether the call state changed and must be saved.
    pub(super) dirty: bool,
    /// Whether the call state took back a filing found only in the rows
    /// ([`Ctx::restore_filing`]): saved, but its failure alone fails no answer.
    pub(super) restored: bool,
    /// Whether the answer may only go out once the state is saved: an identification, which
    /// the limits count (an answer whose failure was not stored would be a free guess) and
    /// whose refs must resolve later in the call.
    pub(super) answer_needs_save: bool,
}

/// A UTC-seconds time as a timestamp (stored times are always in range).
pub(super) fn ts_of(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl Ctx<'_> {
    /// The call state, marked for saving.
    pub(super) fn state(&mut self) -> &mut CallState {
        self.dirty = true;
        &mut self.call.state
    }

    /// A practitioner's display name.
    pub(super) fn with(&self, practitioner: &str) -> String {
        self.config
            .practitioner(practitioner)
            .map_or_else(|| practitioner.to_string(), |p| p.display.clone())
    }

    /// A German label of a stored time.
    pub(super) fn label(&self, secs: i64) -> String {
        calendar::label(self.config, ts_of(secs))
    }

    /// A slot as offered (mints or reuses its ref).
    pub(super) fn slot_view(&mut self, s: &SlotRecord) -> SlotView {
        SlotView {
            slot_ref: self.state().add_slot(s.id),
            start: calendar::iso(self.config, ts_of(s.start)),
            end: calendar::iso(self.config, ts_of(s.end)),
            label: self.label(s.start),
            with: self.with(&s.practitioner),
        }
    }

    /// An appointment as read back (mints or reuses its ref).
    pub(super) fn appointment_view(
        &mut self,
        a: &AppointmentRecord,
        booked_here: bool,
    ) -> AppointmentView {
        AppointmentView {
            appointment_ref: self
                .state()
                .add_appointment(a.id, a.patient_id, booked_here),
            start: calendar::iso(self.config, ts_of(a.start)),
            label: self.label(a.start),
            with: self.with(&a.practitioner),
            visit_type: a.visit_type.clone(),
        }
    }

    /// Refuses a birth date after today (`field`): a misheard year ("2072" for "1972") must be
    /// asked again, not stored as a new patient's or counted as a failed identification.
    pub(super) fn check_born(&self, birth_date: &str, field: &'static str) -> Out<()> {
        let today = crate::practice::calendar::local(self.config, self.now).date;
        match birth_date.parse::<jiff::civil::Date>() {
            Ok(d) if d <= today => Ok(()),
            _ => Err(ToolError::invalid(field).into()),
        }
    }

    /// The caller's number when it is one (not `anonymous`), as given.
    pub(super) fn caller_number(&self) -> Option<String> {
        let c = self.call.caller_number.trim();
        (normalize_number(c).len() >= MIN_NUMBER_DIGITS).then(|| c.to_string())
    }

    /// Whether the caller number equals the patient's number on file.
    pub(super) fn caller_matches(&self, p: &PatientRecord) -> bool {
        let caller = normalize_number(&self.call.caller_number);
        match phone_on_file(p) {
            Some(ph) if caller.len() >= MIN_NUMBER_DIGITS => {
                constant_time_eq(normalize_number(ph).as_bytes(), caller.as_bytes())
            }
            _ => false,
        }
    }

    /// Why identification is refused now, if it is (docs/practice-tools.md §6.3): the call's own
    /// failures and calls, the hourly budget over all callers, the shared bucket of withheld
    /// numbers, and the caller number's failures across its calls.
    pub(super) fn identification_refusal(&mut self) -> Out<Option<ToolError>> {
        let st = &self.call.state;
        if st.failed_identifications >= MAX_FAILED_IDENTIFICATIONS {
            return Ok(Some(ToolError::Locked));
        }
        if st.identify_calls >= MAX_IDENTIFY_CALLS_PER_CALL {
            return Ok(Some(ToolError::IdentifyLimit));
        }
        // Held to the end of the job, past the failure it may record.
        self.store.lock_identifications()?;
        let recent = self
            .store
            .identification_failures_since(self.now.as_second() - FAILURE_BUDGET_WINDOW_SECS)?;
        let total: u32 = recent.iter().map(|(_, n)| *n).sum();
        let budget = self.config.identification_failures_per_hour;
        if total >= budget {
            Metrics::add(&PRACTICE.identification_budget_refusals, 1);
            tracing::warn!(
                caller = %mask_phone(self.call.caller_number.trim()),
                failures = total,
                limit = budget,
                "identification paused: hourly budget of failed identifications spent"
            );
            return Ok(Some(ToolError::IdentificationPaused));
        }
        let Some(caller) = self.caller_number() else {
            // Withheld or short numbers cannot be told apart: they share one strict bucket.
            let withheld: u32 = recent
                .iter()
                .filter(|(number, _)| normalize_number(number).len() < MIN_NUMBER_DIGITS)
                .map(|(_, n)| *n)
                .sum();
            return Ok(
                (withheld >= MAX_FAILED_IDENTIFICATIONS_WITHHELD).then_some(ToolError::Locked)
            );
        };
        let since = self.now.as_second() - IDENTIFICATION_WINDOW_SECS;
        let n = self
            .store
            .failed_identifications_by_number(&caller, since)?;
        Ok((n >= MAX_FAILED_IDENTIFICATIONS_PER_NUMBER).then_some(ToolError::Locked))
    }

    /// The reference (and queue position, when the call state has it) of the request or
    /// emergency filed earlier in this call with `fingerprint`, within [`REFILE_WINDOW_SECS`]:
    /// from the call state, or from the stored row when the state was not saved after that
    /// filing (docs/practice-tools.md §3, retries).
    pub(super) fn filed_earlier(&mut self, fingerprint: &str) -> StoreResult<Option<Earlier>> {
        let now = self.now.as_second();
        if let Some(first) = self.call.state.filed(fingerprint, now) {
            return Ok(Some(Earlier {
                reference: first.reference.clone(),
                queue_position: first.queue_position,
                rows_only: None,
            }));
        }
        let since = now - REFILE_WINDOW_SECS;
        let stored = self
            .store
            .filed_in_call(&self.call.call_sid, fingerprint, since)?;
        Ok(stored.map(|(reference, filed_at)| Earlier {
            reference,
            queue_position: None,
            rows_only: Some(filed_at),
        }))
    }

    /// A filing found only in the rows goes back into the call state, with its filing time,
    /// counted as one of the call's requests if it is one (`is_request`): the save after it
    /// failed, so the per-call cap would otherwise miss it, and the next retry is found in the
    /// state. Best effort: saved with the call state, but a failed save does not fail the
    /// answer ([`Ctx::restored`]). An entry the state dropped (more than `MAX_FILED_PER_CALL`
    /// filings within the window) is counted again: the cap errs on the strict side.
    pub(super) fn restore_filing(
        &mut self,
        fingerprint: String,
        earlier: &Earlier,
        is_request: bool,
    ) {
        let Some(at) = earlier.rows_only else {
            return;
        };
        self.restored = true;
        self.call.state.note_filed(
            Filed {
                fingerprint,
                reference: earlier.reference.clone(),
                queue_position: earlier.queue_position,
                at,
            },
            is_request,
        );
    }

    /// Bookings and requests from the caller's number over the last [`CALLER_DAY_SECS`]; zero
    /// for a withheld number (its calls are held by the per-call caps).
    pub(super) fn caller_activity(&mut self) -> Out<(u32, u32)> {
        let Some(caller) = self.caller_number() else {
            return Ok((0, 0));
        };
        let since = self.now.as_second() - CALLER_DAY_SECS;
        Ok(self.store.activity_by_number(&caller, since)?)
    }

    /// Whether an appointment starting at `start` is inside the practice's notice period.
    pub(super) fn inside_notice(&self, start: i64) -> bool {
        start - self.now.as_second() < i64::from(self.config.min_notice_hours) * 3600
    }
}

/// The patient's number on file, unless it is a withheld caller's placeholder stored before
/// such numbers were turned into `anonymous` (docs/twilio.md §3.1): nobody can be called back
/// on it, and every withheld caller would "match" it.
pub(super) fn phone_on_file(p: &PatientRecord) -> Option<&String> {
    p.phone
        .as_ref()
        .filter(|n| !crate::twilio::webhook::is_withheld_number(n))
}
