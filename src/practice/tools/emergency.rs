//! `report_emergency`: the advice from the calendar (112 always for life-threatening cases),
//! the sentence to say, and an event for the staff. Recording never stops the advice.

use super::context::{Ctx, Out};
use super::input::EmergencyInput;
use super::outcome::{EmergencyAdvice, EmergencyNumbers};
use crate::practice::calendar::{self, Advice, EmergencyDecision};
use crate::practice::calls::{Filed, MAX_EMERGENCIES_PER_CALL, fingerprint};
use crate::practice::config::PracticeConfig;
use crate::practice::store::{NewEmergency, Severity};

/// The European emergency number, said in every emergency answer.
const EMERGENCY_NUMBER: &str = "112";

impl Ctx<'_> {
    pub(super) fn emergency(&mut self, i: EmergencyInput) -> Out<EmergencyAdvice> {
        let cfg = self.config;
        let life_threatening = i.severity == Severity::LifeThreatening;
        let d = calendar::emergency_advice(cfg, life_threatening, self.now);
        let (say, vertretung) = spoken_advice(cfg, &d);
        let patient_id = i
            .patient_ref
            .as_deref()
            .and_then(|r| self.call.state.patient(r))
            .map(|p| p.id);
        // A retried report (same input in this call, within minutes) keeps its first event:
        // the advice goes out again, the staff see one emergency.
        let fingerprint = fingerprint(&format!("report_emergency|{i:?}"));
        // A store that cannot answer counts as none: the advice goes out whatever it does.
        let first = match self.filed_earlier(&fingerprint) {
            Ok(Some(first)) => {
                self.restore_filing(fingerprint.clone(), &first, false);
                Some(first.reference)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "earlier emergency events not read");
                None
            }
        };
        // Recording the event must never stop the advice from going out. Past the call's cap
        // the staff already have its events: the last one answers.
        let event_ref = first.or_else(|| {
            let st = &self.call.state;
            let first_life_threatening = life_threatening && !st.life_threatening_recorded;
            if st.emergencies >= MAX_EMERGENCIES_PER_CALL && !first_life_threatening {
                tracing::warn!(
                    recorded = st.emergencies,
                    severity = ?i.severity,
                    "emergency not recorded: the call's cap is reached"
                );
                return st.last_emergency.clone();
            }
            self.record(i, patient_id, d.advice, fingerprint)
        });
        tracing::warn!(advice = d.advice.as_str(), "emergency reported");
        Ok(EmergencyAdvice {
            event_ref,
            advice: d.advice,
            say,
            numbers: EmergencyNumbers {
                emergency: EMERGENCY_NUMBER,
                after_hours: cfg.emergency_service.number.clone(),
                vertretung,
            },
            transfer_available: d.transfer_available,
            reopens: d.reopens.map(|t| calendar::label(cfg, t)),
        })
    }

    /// Records the event for the staff; `None` (logged) when that fails.
    fn record(
        &mut self,
        i: EmergencyInput,
        patient_id: Option<i64>,
        advice: Advice,
        fingerprint: String,
    ) -> Option<String> {
        let now = self.now.as_second();
        let severity = i.severity;
        let recorded = self.store.record_emergency(&NewEmergency {
            severity: i.severity,
            keywords: i.keywords,
            patient_id,
            callback_number: self.caller_number(),
            advice,
            call_sid: self.call.call_sid.clone(),
            fingerprint: Some(fingerprint.clone()),
            now,
        });
        match recorded {
            Ok(r) => {
                let st = self.state();
                st.emergencies += 1;
                st.last_emergency = Some(r.clone());
                st.life_threatening_recorded |= severity == Severity::LifeThreatening;
                self.state().note_filed(
                    Filed {
                        fingerprint,
                        reference: r.clone(),
                        queue_position: None,
                        at: now,
                    },
                    false,
                );
                Some(r)
            }
            Err(e) => {
                tracing::error!(error = %e, "emergency event not recorded");
                None
            }
        }
    }
}

/// What to say for a calendar decision, and the covering practice as "Name, Telefon …" when
/// it names one.
pub(super) fn spoken_advice(
    cfg: &PracticeConfig,
    d: &EmergencyDecision,
) -> (String, Option<String>) {
    let vertretung = d
        .covering
        .as_ref()
        .map(|c| format!("{}, Telefon {}", c.name, c.phone));
    let said = say(
        d.advice,
        &cfg.emergency_service.number,
        vertretung.as_deref(),
    );
    (said, vertretung)
}

/// The German sentence for `advice`; `es` is the Bereitschaftsdienst's number.
fn say(advice: Advice, es: &str, vertretung: Option<&str>) -> String {
    let bereitschaft = || {
        format!(
            "Bitte rufen Sie den ärztlichen Bereitschaftsdienst unter {es} an. Bei Lebensgefahr sofort 112."
        )
    };
    match advice {
        Advice::Call112 => "Bitte legen Sie auf und rufen Sie sofort die 112 an.".to_string(),
        Advice::Transfer => "Ich verbinde Sie jetzt mit dem Praxisteam.".to_string(),
        Advice::SameDay => {
            "Wir suchen Ihnen einen Termin noch heute. Wenn es schlimmer wird: 112.".to_string()
        }
        Advice::Call116117 => bereitschaft(),
        Advice::CallVertretung => match vertretung {
            Some(v) => format!(
                "Bitte wenden Sie sich an unsere Vertretung: {v}. Bei Lebensgefahr sofort 112."
            ),
            None => bereitschaft(),
        },
    }
}
