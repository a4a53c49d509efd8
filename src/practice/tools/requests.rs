//! `create_request`: what each category needs and what the caller can expect (docs/practice-tools.md §6.3 for
//! results, which are only discussed on the number on file).

use super::context::{Ctx, Earlier, Out, phone_on_file};
use super::error::ToolError;
use super::input::{MAX_MEDICATIONS, RequestInput};
use super::outcome::{ExpectKind, Expectation, Need, RequestCreated};
use crate::practice::calendar;
use crate::practice::calls::{
    Assurance, Filed, MAX_REQUESTS_PER_CALL, MAX_REQUESTS_PER_NUMBER_PER_DAY, fingerprint,
    normalize_number,
};
use crate::practice::premium::is_premium;
use crate::practice::store::{
    NewRequest, PatientRecord, RequestCategory, RequestDetails, Urgency, quarter,
};

/// Opening minutes an urgent call-back needs left today to be promised for today.
pub const URGENT_CALLBACK_MIN_MINUTES: u32 = 60;

/// How many days ahead the next working day is searched for.
const WORKING_DAY_SEARCH_DAYS: usize = 30;

/// What a category's rules decided.
struct Decision {
    expect: Expectation,
    needs: Vec<Need>,
    /// Overrides the caller's urgency.
    urgency: Option<Urgency>,
    /// Overrides the call-back number (results: the number on file).
    callback_number: Option<String>,
}

impl Decision {
    /// Below phone assurance: the staff judge, whatever the record says (see [`Ctx::decide`]).
    fn staff_judge() -> Decision {
        Decision::expect(
            ExpectKind::Callback,
            "Das Praxisteam prüft Ihr Anliegen und meldet sich bei Ihnen.",
        )
    }

    fn expect(kind: ExpectKind, label: impl Into<String>) -> Decision {
        Decision {
            expect: Expectation {
                kind,
                label: label.into(),
            },
            needs: Vec::new(),
            urgency: None,
            callback_number: None,
        }
    }
}

impl Ctx<'_> {
    pub(super) fn request(&mut self, i: RequestInput) -> Out<RequestCreated> {
        if let Some(dob) = i.caller.as_ref().and_then(|c| c.birth_date.as_deref()) {
            self.check_born(dob, "caller.birth_date")?;
        }
        let (patient, assurance) = match &i.patient_ref {
            Some(r) => {
                let Some(p) = self.call.state.patient(r).cloned() else {
                    return Err(ToolError::NotIdentified.into());
                };
                (self.store.patient(p.id)?, Some(p.assurance))
            }
            None => (None, None),
        };
        if patient.is_none() && i.caller.is_none() {
            return Err(ToolError::NotIdentified.into());
        }
        let verified = assurance == Some(Assurance::NameDobPhone);
        let mut decision = self.decide(&i, patient.as_ref(), verified)?;
        let (callback_number, number_on_file_instead) =
            self.callback_for(&i, patient.as_ref(), verified, &mut decision)?;
        // A retried tool call (same input in this call, within minutes) gets the first
        // request's reference: a second one would be work twice for the staff.
        let fingerprint = fingerprint(&format!("create_request|{i:?}"));
        let now = self.now.as_second();
        if let Some(mut first) = self.filed_earlier(&fingerprint)? {
            let urgency = decision.urgency.unwrap_or(i.urgency);
            if first.rows_only.is_some() && urgency == Urgency::Urgent {
                // The request is filed and found: a position that cannot be read is left out,
                // not a reason to fail the answer.
                first.queue_position = self
                    .store
                    .urgent_queue_position(&first.reference)
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "urgent queue position not read");
                        None
                    });
            }
            self.restore_filing(fingerprint, &first, true);
            let Earlier {
                reference: request_ref,
                queue_position,
                ..
            } = first;
            return Ok(RequestCreated {
                request_ref,
                category: i.category,
                expect: decision.expect,
                needs: decision.needs,
                queue_position,
                repeated: true,
                number_on_file_instead,
            });
        }
        // The caps come last, so that a request the rules refuse anyway is answered as such.
        self.check_request_caps()?;
        let created = self.store.create_request(&NewRequest {
            category: i.category,
            patient_id: patient.as_ref().map(|p| p.id),
            caller: if patient.is_none() { i.caller } else { None },
            details: i.details,
            urgency: decision.urgency.unwrap_or(i.urgency),
            callback_number,
            callback_window: i.callback_window,
            note: i.note,
            call_sid: self.call.call_sid.clone(),
            assurance,
            caller_number: self.call.caller_number.trim().to_string(),
            fingerprint: Some(fingerprint.clone()),
            now,
        })?;
        self.state().note_filed(
            Filed {
                fingerprint,
                reference: created.ref_code.clone(),
                queue_position: created.queue_position,
                at: now,
            },
            true,
        );
        Ok(RequestCreated {
            request_ref: created.ref_code,
            category: i.category,
            expect: decision.expect,
            needs: decision.needs,
            queue_position: created.queue_position,
            repeated: false,
            number_on_file_instead,
        })
    }

    /// The category's rules: what it needs from the caller and what happens next. Below phone
    /// assurance (`verified` false) the patient's record decides nothing the answer would show:
    /// whether the card was read this quarter or the person is a known patient must not be
    /// told to someone who only knows a name and a birth date (docs/practice-tools.md §6.3),
    /// so refills and referrals go to the staff to judge.
    fn decide(
        &self,
        i: &RequestInput,
        patient: Option<&PatientRecord>,
        verified: bool,
    ) -> Out<Decision> {
        let d = i.details.as_ref();
        let unverified = patient.is_some() && !verified;
        let known = patient.is_some_and(|p| p.known);
        let this_quarter = quarter(calendar::local(self.config, self.now).date);
        let card_ok =
            patient.is_some_and(|p| p.card_read_quarter.as_deref() == Some(this_quarter.as_str()));
        let decision = match i.category {
            RequestCategory::PrescriptionRefill => {
                return self.refill(d, patient, unverified, card_ok);
            }
            RequestCategory::SickNote => {
                // Below phone assurance the doctor decides in the call-back, with the record.
                if !known && !unverified {
                    return Err(ToolError::NeedsAppointment.into());
                }
                Decision::expect(
                    ExpectKind::DoctorCallback,
                    "Die Ärztin oder der Arzt ruft Sie zurück und entscheidet in diesem Gespräch, ob \
                     eine Krankschreibung möglich ist.",
                )
            }
            RequestCategory::Referral => {
                if d.and_then(|d| d.specialty.as_ref()).is_none() {
                    return Err(ToolError::MissingDetails.into());
                }
                if d.is_some_and(|d| d.first_referral) {
                    return Err(ToolError::NeedsAppointment.into());
                }
                if unverified {
                    return Ok(Decision::staff_judge());
                }
                if !known {
                    return Err(ToolError::NeedsAppointment.into());
                }
                let mut decision = Decision::expect(
                    ExpectKind::Pickup,
                    format!(
                        "Nach Freigabe durch die Ärztin oder den Arzt liegt die Überweisung \
                         voraussichtlich ab {} am Empfang für Sie bereit.",
                        self.next_working_day_label()
                    ),
                );
                if !card_ok {
                    decision.needs.push(Need::CardVisitThisQuarter);
                }
                decision
            }
            RequestCategory::ResultsCallback => {
                // Results are only discussed with the number on file (docs/practice-tools.md §6.3).
                let Some(p) = patient else {
                    return Err(ToolError::NotIdentified.into());
                };
                let Some(ph) = phone_on_file(p) else {
                    return Err(ToolError::NoNumberOnFile.into());
                };
                let mut d = Decision::expect(
                    ExpectKind::CallbackNumberOnFile,
                    "Wir rufen Sie unter der bei uns hinterlegten Nummer zurück.",
                );
                d.callback_number = Some(ph.clone());
                d
            }
            RequestCategory::UrgentCallback => {
                let mut d = self.urgent_callback();
                d.urgency = Some(Urgency::Urgent);
                d
            }
            RequestCategory::Document => Decision::expect(
                ExpectKind::StaffPrepares,
                "Das Praxisteam bereitet das Dokument vor und meldet sich bei Ihnen.",
            ),
            RequestCategory::Message => Decision::expect(
                ExpectKind::MessageTaken,
                "Ihre Nachricht wird an das Praxisteam weitergegeben.",
            ),
            RequestCategory::Callback => {
                Decision::expect(ExpectKind::Callback, "Das Praxisteam ruft Sie zurück.")
            }
        };
        Ok(decision)
    }

    /// The number the staff call back, and whether it is not the one the caller named; refused
    /// when it is a premium-rate number, or missing where the answer promises contact.
    fn callback_for(
        &self,
        i: &RequestInput,
        patient: Option<&PatientRecord>,
        verified: bool,
        decision: &mut Decision,
    ) -> Out<(Option<String>, bool)> {
        // Below phone assurance the practice calls back the number on file, never one the caller
        // just named; without a number on file the request is stored as unverified (its
        // assurance), for the staff to check first (docs/practice-tools.md §6.3).
        let on_file = patient
            .filter(|_| !verified)
            .and_then(|p| phone_on_file(p).cloned());
        let callback_number = decision
            .callback_number
            .take()
            .or(on_file)
            .or_else(|| i.callback_number.clone())
            .or_else(|| self.caller_number());
        // The caller named a number and the practice will call another (the one on file): the
        // agent must say so, not confirm the number it heard (practice-tools review).
        let same = |a: &str, b: &str| normalize_number(a) == normalize_number(b);
        let number_on_file_instead = match (&i.callback_number, &callback_number) {
            (Some(given), Some(used)) => !same(given, used),
            _ => false,
        };
        if callback_number
            .as_deref()
            .is_some_and(|n| is_premium(n, &self.config.premium_rate_prefixes))
        {
            return Err(ToolError::PremiumRateNumber.into());
        }
        // An answer that promises the staff get back to the caller needs a number to do it
        // with, whatever the category (a refill the staff judge below phone assurance, a
        // document).
        let needs_number = matches!(
            decision.expect.kind,
            ExpectKind::Callback | ExpectKind::StaffPrepares
        ) || !matches!(
            i.category,
            RequestCategory::PrescriptionRefill
                | RequestCategory::Message
                | RequestCategory::Document
                | RequestCategory::Referral
        );
        if callback_number.is_none() && needs_number {
            return Err(ToolError::CallbackNumberNeeded.into());
        }
        Ok((callback_number, number_on_file_instead))
    }

    /// A prescription refill's rules (see [`Self::decide`]).
    fn refill(
        &self,
        d: Option<&RequestDetails>,
        patient: Option<&PatientRecord>,
        unverified: bool,
        card_ok: bool,
    ) -> Out<Decision> {
        let n = d.map_or(0, |d| d.medications.len());
        if n == 0 {
            return Err(ToolError::MissingDetails.into());
        }
        if n > MAX_MEDICATIONS {
            return Err(ToolError::TooManyItems.into());
        }
        if d.is_some_and(|d| d.new_medication) {
            return Err(ToolError::NeedsAppointment.into());
        }
        if unverified {
            return Ok(Decision::staff_judge());
        }
        if patient.is_some_and(|p| !p.known) {
            return Err(ToolError::NeedsAppointment.into());
        }
        if card_ok {
            return Ok(Decision::expect(
                ExpectKind::ERezeptCard,
                format!(
                    "Nach Freigabe durch die Ärztin oder den Arzt können Sie das E-Rezept \
                     voraussichtlich ab {} mit Ihrer Versichertenkarte in der Apotheke einlösen.",
                    self.next_working_day_label()
                ),
            ));
        }
        let mut d = Decision::expect(
            ExpectKind::CardVisitFirst,
            "Bitte kommen Sie in diesem Quartal einmal mit Ihrer Versichertenkarte vorbei; danach stellen wir das E-Rezept aus.",
        );
        d.needs.push(Need::CardVisitThisQuarter);
        Ok(d)
    }

    /// What an urgent call-back can promise now: "today" only while the practice has at least
    /// [`URGENT_CALLBACK_MIN_MINUTES`] of opening left today (now or after a break); else the
    /// next opening. Whenever nobody is there right now (night, lunch, closed), the after-hours
    /// advice from the calendar follows for what cannot wait (docs/practice-tools.md §3.6: the
    /// server decides which advice applies now). A Friday 12:55 caller is not promised a call
    /// nobody will make.
    fn urgent_callback(&self) -> Decision {
        let cfg = self.config;
        let open_now = calendar::is_open(cfg, self.now);
        let today = calendar::open_minutes_left_today(cfg, self.now) >= URGENT_CALLBACK_MIN_MINUTES;
        // From when the call-back is promised: now, or past today's last minutes.
        let from = if open_now && !today {
            self.now + jiff::SignedDuration::from_mins(i64::from(URGENT_CALLBACK_MIN_MINUTES))
        } else {
            self.now
        };
        // What to do meanwhile, when nobody is there until then.
        let meanwhile = if calendar::is_open(cfg, from) {
            String::new()
        } else {
            let advice = calendar::emergency_advice(cfg, false, from);
            let (say, _) = super::emergency::spoken_advice(cfg, &advice);
            format!(" Wenn es nicht so lange warten kann: {say}")
        };
        if today {
            return Decision::expect(
                ExpectKind::CallbackToday,
                format!("Wir rufen Sie heute noch zurück.{meanwhile}"),
            );
        }
        let when = match calendar::next_opening(cfg, from) {
            Some(t) => format!("ab {}", calendar::label(cfg, t)),
            None => "sobald die Praxis wieder geöffnet ist".to_string(),
        };
        let state = if open_now {
            "Die Praxis schließt gleich."
        } else {
            "Die Praxis ist gerade geschlossen."
        };
        Decision::expect(
            ExpectKind::CallbackNextOpening,
            format!("{state} Wir rufen Sie {when} zurück.{meanwhile}"),
        )
    }

    /// Refuses with `request_limit` once this call or this number made its requests (§6.5).
    pub(super) fn check_request_caps(&mut self) -> Out<()> {
        let (_, requests_today) = self.caller_activity()?;
        if self.call.state.requests >= MAX_REQUESTS_PER_CALL
            || requests_today >= MAX_REQUESTS_PER_NUMBER_PER_DAY
        {
            return Err(ToolError::RequestLimit.into());
        }
        Ok(())
    }

    fn next_working_day_label(&self) -> String {
        let mut d = calendar::next_day(calendar::local(self.config, self.now).date);
        for _ in 0..WORKING_DAY_SEARCH_DAYS {
            if !calendar::opening_intervals(self.config, d).is_empty() {
                break;
            }
            d = calendar::next_day(d);
        }
        // Said aloud: "Dienstag, 24. November", not a written date.
        calendar::spoken_date(d)
    }
}
