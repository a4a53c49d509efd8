//! `identify_patient`: name + birth date identify; the caller number adds phone assurance
//! (docs/practice-tools.md §6.3); failures and calls are budgeted (`Ctx::identification_refusal`),
//! and below phone assurance a hit answers the opaque ref alone.

use super::context::{Ctx, Out};
use super::input::IdentifyInput;
use super::outcome::{IdentifyOutcome, PatientFlags, UniqueMatch};
use crate::metrics::{Metrics, PRACTICE};
use crate::practice::calendar;
use crate::practice::calls::Assurance;
use crate::practice::store::{Gender, PatientRecord, name_key, normalize_name, quarter};

/// Upcoming appointments read back by `identify_patient`.
pub const MAX_UPCOMING: usize = 3;

impl Ctx<'_> {
    pub(super) fn identify(&mut self, i: IdentifyInput) -> Out<IdentifyOutcome> {
        self.check_born(&i.birth_date.to_string(), "birth_date")?;
        if let Some(refusal) = self.identification_refusal()? {
            return Err(refusal.into());
        }
        // Identify writes nothing but the call state (the counts, the refs it hands out): its
        // answer goes out only once that is saved.
        self.answer_needs_save = true;
        self.state().identify_calls += 1;
        let family = name_key(&normalize_name(&i.family_name));
        // Stored names are normalised afresh, not read from `family_norm`/`given_norm`: rows
        // written before `normalize_name` kept every letter still match (store/names.rs).
        let mut found: Vec<PatientRecord> = self
            .store
            .patients_by_birth_date(&i.birth_date.to_string())?
            .into_iter()
            .filter(|p| name_key(&normalize_name(&p.family)) == family)
            .collect();
        if let Some(g) = i.given_name.as_deref() {
            narrow_by_given(&mut found, g, |p| &p.given);
        }
        match found.len() {
            0 => {
                Metrics::add(&PRACTICE.identification_failures, 1);
                let given = i
                    .given_name
                    .as_deref()
                    .map(|g| name_key(&normalize_name(g)))
                    .filter(|g| !g.is_empty());
                let birth_date = i.birth_date.to_string();
                let st = self.state();
                st.note_unmatched(&family, &birth_date, given.as_deref());
                st.failed_identifications += 1;
                Ok(IdentifyOutcome::None {
                    attempts_left: st.attempts_left(),
                })
            }
            1 => {
                let p = found.remove(0);
                Ok(IdentifyOutcome::Unique(Box::new(self.unique_match(p)?)))
            }
            _ => Ok(IdentifyOutcome::Ambiguous {
                attempts_left: self.call.state.attempts_left(),
            }),
        }
    }

    fn unique_match(&mut self, p: PatientRecord) -> Out<UniqueMatch> {
        let assurance = if self.caller_matches(&p) {
            Assurance::NameDobPhone
        } else {
            Assurance::NameDob
        };
        let patient_ref = self.state().add_patient(p.id, assurance);
        let mut upcoming = Vec::new();
        // Appointments are read back only when the caller number matches (docs/practice-tools.md §6.3).
        if assurance == Assurance::NameDobPhone {
            for a in self
                .store
                .upcoming(p.id, self.now.as_second(), MAX_UPCOMING)?
            {
                upcoming.push(self.appointment_view(&a, false));
            }
        }
        // Below phone assurance the answer is the ref alone: a hit then confirms nothing the
        // caller did not already say (docs/practice-tools.md §6.3).
        let verified = assurance == Assurance::NameDobPhone;
        let salutation = verified.then(|| match p.gender {
            Gender::Female => format!("Frau {}", p.family),
            Gender::Male => format!("Herr {}", p.family),
            Gender::Other | Gender::Unknown => format!("{} {}", p.given, p.family),
        });
        let this_quarter = quarter(calendar::local(self.config, self.now).date);
        Ok(UniqueMatch {
            patient_ref,
            salutation,
            assurance,
            upcoming,
            flags: PatientFlags {
                known_patient: verified.then_some(p.known),
                card_read_this_quarter: verified
                    .then(|| p.card_read_quarter.as_deref() == Some(this_quarter.as_str())),
                appointments_readable: verified,
            },
            attempts_left: self.call.state.attempts_left(),
        })
    }
}

/// Narrows `found` by the given name the caller said: the same name (spelling-tolerant), or
/// else the leading part(s) of a double name ("Hans" for "Hans-Peter", "Anna Maria" for "Anna
/// Maria Luise"). A name that is merely the start of another ("Paul" for "Paula", "Jan" for
/// "Jana") does not match it, and a same-name match wins over a double name, so twins whose
/// names share a beginning can still be told apart by asking again (prompt §3).
fn narrow_by_given<T>(found: &mut Vec<T>, spoken: &str, given_of: impl Fn(&T) -> &str) {
    let g = normalize_name(spoken);
    if g.is_empty() {
        return;
    }
    let key = name_key(&g);
    let same = |p: &T| name_key(&normalize_name(given_of(p))) == key;
    if found.iter().any(same) {
        found.retain(same);
    } else {
        found.retain(|p| leading_parts_are(given_of(p), &g));
    }
}

/// Whether the first parts of the double name `stored` (split at hyphens and spaces),
/// normalised and joined, are `given` (normalised).
fn leading_parts_are(stored: &str, given: &str) -> bool {
    let mut joined = String::new();
    for part in stored.split(['-', ' ']).filter(|p| !p.is_empty()) {
        joined.push_str(&normalize_name(part));
        if joined == given {
            return true;
        }
        if joined.len() >= given.len() {
            return false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn narrowed(stored: &[&'static str], spoken: &str) -> Vec<&'static str> {
        let mut found = stored.to_vec();
        narrow_by_given(&mut found, spoken, |p| p);
        found
    }

    #[test]
    fn a_given_name_tells_twins_apart_and_finds_double_names() {
        assert_eq!(narrowed(&["Paul", "Paula"], "Paul"), ["Paul"]);
        assert_eq!(narrowed(&["Paul", "Paula"], "paula"), ["Paula"]);
        assert_eq!(narrowed(&["Jana"], "Jan"), Vec::<&str>::new());
        assert_eq!(narrowed(&["Hans-Peter", "Petra"], "Hans"), ["Hans-Peter"]);
        assert_eq!(narrowed(&["Hans-Peter", "Hans"], "Hans"), ["Hans"]);
        assert_eq!(
            narrowed(&["Anna Maria Luise"], "Anna-Maria"),
            ["Anna Maria Luise"]
        );
        assert_eq!(narrowed(&["Jürgen"], "Juergen"), ["Jürgen"]);
        assert_eq!(narrowed(&["Paul", "Paula"], " "), ["Paul", "Paula"]);
    }
}
