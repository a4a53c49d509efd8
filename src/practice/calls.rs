//! Per-call binding: the call token, its hash, the per-call refs and the dynamic variables.
//!
//! The bridge mints a token per call ([`CallToken::from_entropy`], with 128 bits the driver reads
//! from the operating system's random source), sends it to ElevenLabs as the
//! `secret__ignis_call` dynamic variable and stores only its SHA-256 ([`CallToken::hash`]) through
//! the store. ElevenLabs substitutes it into the `X-Ignis-Call` header of every tool request; the
//! tool layer hashes the presented value and looks up a live call by hash. A call is live until it
//! ends plus [`CALL_GRACE_SECS`], and never longer than [`MAX_CALL_SECS`] after its start.
//!
//! [`CallState`] holds everything the LLM may refer to in this call as opaque refs (`P1`, `S1`,
//! `A1`) mapped to internal ids, plus the failed-identification counter.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::calendar;
use super::config::PracticeConfig;
use crate::secret::hex_lower;

/// Seconds a call's token stays valid after the call ended (tool calls still in flight).
pub const CALL_GRACE_SECS: i64 = 60;
/// Hard limit on a call's lifetime, in seconds, in case the bridge never reports its end.
pub const MAX_CALL_SECS: i64 = 4 * 3600;
/// Failed identifications after which identification is locked for the call.
pub const MAX_FAILED_IDENTIFICATIONS: u32 = 3;
/// Failed identifications from one caller number, over all its calls within
/// [`IDENTIFICATION_WINDOW_SECS`], after which identification is locked for that number (spec
/// §6.2: per-caller-number limits across calls).
pub const MAX_FAILED_IDENTIFICATIONS_PER_NUMBER: u32 = 6;
/// The window for [`MAX_FAILED_IDENTIFICATIONS_PER_NUMBER`], in seconds.
pub const IDENTIFICATION_WINDOW_SECS: i64 = 24 * 3600;
/// `identify_patient` calls one call may make, successes included: a hit confirms a name and
/// birth date, so successes must not be free either (docs/practice-tools.md §6.3).
pub const MAX_IDENTIFY_CALLS_PER_CALL: u32 = 6;
/// Failed identifications per [`FAILURE_BUDGET_WINDOW_SECS`] shared by ALL callers whose number
/// is withheld or too short to be a number: one strict bucket, since such callers cannot be told
/// apart (docs/practice-tools.md §6.3).
pub const MAX_FAILED_IDENTIFICATIONS_WITHHELD: u32 = 6;
/// Failed identifications per [`FAILURE_BUDGET_WINDOW_SECS`] over all callers, by default
/// (`IDENTIFICATION_FAILURES_PER_HOUR`); beyond it identification pauses for everyone (an attack
/// from many numbers), with a metric and a WARN.
pub const MAX_FAILED_IDENTIFICATIONS_PER_HOUR: u32 = 30;
/// The window of the withheld bucket and the global budget, in seconds.
pub const FAILURE_BUDGET_WINDOW_SECS: i64 = 3600;
/// Bookings (new, not retries) one call may make.
pub const MAX_BOOKINGS_PER_CALL: u32 = 3;
/// Requests one call may create.
pub const MAX_REQUESTS_PER_CALL: u32 = 10;
/// Bookings from one caller number per [`CALLER_DAY_SECS`], over all its calls.
pub const MAX_BOOKINGS_PER_NUMBER_PER_DAY: u32 = 6;
/// Requests from one caller number per [`CALLER_DAY_SECS`], over all its calls.
pub const MAX_REQUESTS_PER_NUMBER_PER_DAY: u32 = 20;
/// The window of the per-number daily caps, in seconds.
pub const CALLER_DAY_SECS: i64 = 24 * 3600;
/// Most refs of one kind a call may hold (bounds the stored state).
pub const MAX_REFS_PER_KIND: usize = 60;
/// Length of the token's entropy in bytes (128 bits).
pub const TOKEN_BYTES: usize = 16;

/// The `secret__ignis_call` of a call without a registered token: no practice configured, no OS
/// randomness, or the store refused the registration. The variable is still sent, because
/// ElevenLabs ends a conversation that lacks a referenced one (docs/elevenlabs.md §2.1). Minted
/// tokens are 32 lowercase hex digits and only their hashes are stored, so this value matches no
/// call and every tool refuses it (`call_not_active`).
pub const NO_CALL_TOKEN: &str = "ignis-no-call-token";

/// A freshly minted per-call token. Only [`CallToken::hash`] is ever stored.
#[derive(Clone)]
pub struct CallToken(String);

impl std::fmt::Debug for CallToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallToken(<redacted>)")
    }
}

impl CallToken {
    /// Builds the token from 128 bits of entropy supplied by the caller (the driver reads the
    /// operating system's random source, e.g. `/dev/urandom`).
    pub fn from_entropy(entropy: [u8; TOKEN_BYTES]) -> CallToken {
        CallToken(hex_lower(&entropy))
    }

    /// The placeholder token of a call whose registration failed ([`NO_CALL_TOKEN`]): sent so
    /// that the conversation starts; its hash is never stored.
    pub fn unregistered() -> CallToken {
        CallToken(NO_CALL_TOKEN.to_owned())
    }

    /// The token text to send as `secret__ignis_call`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the token text (what the store keeps).
    pub fn hash(&self) -> [u8; 32] {
        hash_token(self.0.as_bytes())
    }
}

/// SHA-256 of a presented token value.
pub fn hash_token(token: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(token));
    out
}

/// How well an identified person is established (docs/practice-tools.md §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assurance {
    /// Name and birth date matched.
    NameDob,
    /// Name, birth date and the caller number equals the stored number.
    NameDobPhone,
}

impl Assurance {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Assurance::NameDob => "name_dob",
            Assurance::NameDobPhone => "name_dob_phone",
        }
    }
}

/// A person identified in this call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientRef {
    /// Ref number (`P<n>`).
    pub n: u32,
    /// Internal patient id.
    pub id: i64,
    /// Assurance reached.
    pub assurance: Assurance,
}

/// A slot offered in this call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRef {
    /// Ref number (`S<n>`).
    pub n: u32,
    /// Internal slot id.
    pub id: i64,
}

/// An appointment made known in this call (of an identified person).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentRef {
    /// Ref number (`A<n>`).
    pub n: u32,
    /// Internal appointment id.
    pub id: i64,
    /// Owner.
    pub patient_id: i64,
    /// Whether it was booked in this call (its booker may cancel it without phone assurance).
    #[serde(default)]
    pub booked_here: bool,
}

/// Per-call state, stored with the call (as JSON) so any replica can authorise a tool request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallState {
    /// Persons identified in this call.
    #[serde(default)]
    pub patients: Vec<PatientRef>,
    /// Slots offered in this call.
    #[serde(default)]
    pub slots: Vec<SlotRef>,
    /// Appointments known in this call.
    #[serde(default)]
    pub appointments: Vec<AppointmentRef>,
    /// Failed identification attempts.
    #[serde(default)]
    pub failed_identifications: u32,
    /// `identify_patient` calls answered (successes included).
    #[serde(default)]
    pub identify_calls: u32,
    /// Bookings made (retries not counted).
    #[serde(default)]
    pub bookings: u32,
    /// Requests created.
    #[serde(default)]
    pub requests: u32,
    /// Requests and emergencies filed in this call, by a fingerprint of what was asked, so a
    /// retried tool call gets the first reference instead of a second entry for the staff
    /// (at most [`MAX_FILED_PER_CALL`], the oldest dropped).
    #[serde(default)]
    pub filed: Vec<Filed>,
    /// Fingerprints of the names `identify_patient` found no one for in this call
    /// ([`CallState::note_unmatched`]): only such a name may be booked as a new patient, so a
    /// booking never tells whether someone is a patient (docs/practice-tools.md §6.3). At most
    /// [`MAX_IDENTIFY_CALLS_PER_CALL`], since each comes from one identification.
    #[serde(default)]
    pub unmatched: Vec<String>,
    /// Emergency events recorded in this call (retries not counted): at most
    /// [`MAX_EMERGENCIES_PER_CALL`].
    #[serde(default)]
    pub emergencies: u32,
    /// The last emergency event recorded in this call (`E-…`), answered once the cap is reached.
    #[serde(default)]
    pub last_emergency: Option<String>,
    /// A life-threatening report was recorded in this call.
    #[serde(default)]
    pub life_threatening_recorded: bool,
    /// Fields a newer release wrote, kept as they are: during a rolling upgrade an older
    /// replica saving the state must not drop what the newer ones rely on (docs/replicas.md §5).
    /// Only top-level fields: a new field belongs here, not in the nested refs.
    #[serde(flatten)]
    pub newer: serde_json::Map<String, serde_json::Value>,
}

/// Emergency events one call records. The advice always goes out; above the cap a report is
/// answered with the call's last event, so one call cannot bury the staff's emergency list. A
/// call's first life-threatening report is recorded even past it: the staff must see it.
pub const MAX_EMERGENCIES_PER_CALL: u32 = 5;

/// The fingerprint of a name identification found no one for: the family name's and the given
/// name's keys (`store::name_key`) and the birth date; `given` `None` when none was said (then
/// nobody of that family name was born that day).
fn unmatched_fingerprint(family: &str, birth_date: &str, given: Option<&str>) -> String {
    fingerprint(&format!(
        "unmatched|{family}|{birth_date}|{}",
        given.unwrap_or("*")
    ))
}

/// Most filed entries a call remembers ([`CallState::filed`]).
pub const MAX_FILED_PER_CALL: usize = 16;
/// How long after its first the same request or emergency counts as a retry, seconds.
pub const REFILE_WINDOW_SECS: i64 = 300;

/// The fingerprint of a tool call for [`CallState::filed`]: SHA-256 (hex) of `what` (the tool
/// and its parsed input).
pub fn fingerprint(what: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::secret::hex_lower(&Sha256::digest(what.as_bytes()))
}

/// A request or emergency filed in this call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filed {
    /// SHA-256 (hex) of the tool and its parsed input.
    pub fingerprint: String,
    /// The reference given (`R-1001`, `E-12`).
    pub reference: String,
    /// The request's queue position when it was filed.
    #[serde(default)]
    pub queue_position: Option<u32>,
    /// When, UTC seconds.
    pub at: i64,
}

fn parse_ref(s: &str, prefix: char) -> Option<u32> {
    let rest = s
        .trim()
        .strip_prefix(prefix)
        .or_else(|| s.trim().strip_prefix(prefix.to_ascii_lowercase()))?;
    if rest.is_empty() || rest.len() > 4 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

impl CallState {
    /// The entry filed in this call with `fingerprint` within [`REFILE_WINDOW_SECS`] of `now`.
    pub fn filed(&self, fingerprint: &str, now: i64) -> Option<&Filed> {
        self.filed
            .iter()
            .rev()
            .find(|f| f.fingerprint == fingerprint && now - f.at <= REFILE_WINDOW_SECS)
    }

    /// Remembers an entry filed in this call; a request (`is_request`) also counts against the
    /// per-call request cap.
    pub fn note_filed(&mut self, filed: Filed, is_request: bool) {
        if is_request {
            self.requests += 1;
        }
        if self.filed.len() >= MAX_FILED_PER_CALL {
            self.filed.remove(0);
        }
        self.filed.push(filed);
    }

    /// Whether identification is locked for this call.
    pub fn locked(&self) -> bool {
        self.failed_identifications >= MAX_FAILED_IDENTIFICATIONS
    }

    /// Notes that identification found no one for this name (keys as `store::name_key` makes
    /// them; `given` `None` when none was said) ([`CallState::unmatched`]).
    pub fn note_unmatched(&mut self, family: &str, birth_date: &str, given: Option<&str>) {
        let fingerprint = unmatched_fingerprint(family, birth_date, given);
        if !self.unmatched.contains(&fingerprint)
            && self.unmatched.len() < MAX_IDENTIFY_CALLS_PER_CALL as usize
        {
            self.unmatched.push(fingerprint);
        }
    }

    /// Whether identification found no one for this name in this call: nobody of the family
    /// name born that day, or nobody with this given name too.
    pub fn was_unmatched(&self, family: &str, birth_date: &str, given: &str) -> bool {
        [None, Some(given)].into_iter().any(|g| {
            let fingerprint = unmatched_fingerprint(family, birth_date, g);
            self.unmatched.contains(&fingerprint)
        })
    }

    /// Remaining identification attempts.
    pub fn attempts_left(&self) -> u32 {
        MAX_FAILED_IDENTIFICATIONS.saturating_sub(self.failed_identifications)
    }

    /// Ref of an identified person (reused if already known; the higher assurance wins).
    pub fn add_patient(&mut self, id: i64, assurance: Assurance) -> String {
        if let Some(p) = self.patients.iter_mut().find(|p| p.id == id) {
            p.assurance = p.assurance.max(assurance);
            return format!("P{}", p.n);
        }
        let n = self.patients.last().map_or(1, |p| p.n + 1);
        if self.patients.len() >= MAX_REFS_PER_KIND {
            self.patients.remove(0);
        }
        self.patients.push(PatientRef { n, id, assurance });
        format!("P{n}")
    }

    /// Resolves `P<n>`.
    pub fn patient(&self, r: &str) -> Option<&PatientRef> {
        let n = parse_ref(r, 'P')?;
        self.patients.iter().find(|p| p.n == n)
    }

    /// Ref of an offered slot (reused if already offered).
    pub fn add_slot(&mut self, id: i64) -> String {
        if let Some(s) = self.slots.iter().find(|s| s.id == id) {
            return format!("S{}", s.n);
        }
        let n = self.slots.last().map_or(1, |s| s.n + 1);
        if self.slots.len() >= MAX_REFS_PER_KIND {
            self.slots.remove(0);
        }
        self.slots.push(SlotRef { n, id });
        format!("S{n}")
    }

    /// Resolves `S<n>`.
    pub fn slot(&self, r: &str) -> Option<&SlotRef> {
        let n = parse_ref(r, 'S')?;
        self.slots.iter().find(|s| s.n == n)
    }

    /// Ref of an appointment of an identified person (reused if known).
    pub fn add_appointment(&mut self, id: i64, patient_id: i64, booked_here: bool) -> String {
        if let Some(a) = self.appointments.iter_mut().find(|a| a.id == id) {
            a.booked_here |= booked_here;
            return format!("A{}", a.n);
        }
        let n = self.appointments.last().map_or(1, |a| a.n + 1);
        if self.appointments.len() >= MAX_REFS_PER_KIND {
            self.appointments.remove(0);
        }
        self.appointments.push(AppointmentRef {
            n,
            id,
            patient_id,
            booked_here,
        });
        format!("A{n}")
    }

    /// Resolves `A<n>`.
    pub fn appointment(&self, r: &str) -> Option<&AppointmentRef> {
        let n = parse_ref(r, 'A')?;
        self.appointments.iter().find(|a| a.n == n)
    }
}

/// Masks a phone number for logs: everything but the last three digits replaced.
pub fn mask_number(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    let keep = digits.len().saturating_sub(3);
    format!("…{}", digits[keep..].iter().collect::<String>())
}

/// Normalises a phone number for comparison: digits only, German national prefix `0` → `49`.
/// A `0` right after the country code 49 is the trunk prefix of the common "+49 (0) 30 …"
/// notation (no German number after the country code starts with 0) and is dropped, so such a
/// number compares, and is checked for premium-rate prefixes, like its plain form.
pub fn normalize_number(number: &str) -> String {
    let t = number.trim();
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    let international = if t.starts_with('+') {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if let Some(rest) = digits.strip_prefix('0') {
        format!("49{rest}")
    } else {
        return digits;
    };
    match international.strip_prefix("490") {
        Some(rest) => format!("49{rest}"),
        None => international,
    }
}

/// What the bridge knows about a call when it starts.
#[derive(Debug, Clone)]
pub struct CallInfo<'a> {
    /// Twilio call SID.
    pub call_sid: &'a str,
    /// Caller number (E.164) or `anonymous`.
    pub caller_number: &'a str,
    /// Called number.
    pub called_number: &'a str,
}

/// The names of the eleven dynamic variables the bridge always sends (issue point 5).
pub const DYNAMIC_VARIABLE_NAMES: [&str; 11] = [
    "secret__ignis_call",
    "caller_number",
    "called_number",
    "call_sid",
    "today_local",
    "now_local",
    "practice_name",
    "practice_open_now",
    "hours_today",
    "practice_notice",
    "after_hours_advice",
];

/// Builds the dynamic variables for `conversation_initiation_client_data` — always all eleven,
/// always non-empty strings (a missing referenced variable ends the conversation).
pub fn dynamic_variables(
    token: &CallToken,
    call: &CallInfo<'_>,
    config: &PracticeConfig,
    now: Timestamp,
) -> Map<String, Value> {
    let l = calendar::local(config, now);
    let mut m = Map::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), Value::String(v));
    };
    put("secret__ignis_call", token.as_str().to_string());
    put("today_local", calendar::date_label(l.date));
    put("now_local", calendar::time_label(config, now));
    put("practice_name", config.name.clone());
    put(
        "practice_open_now",
        if calendar::is_open(config, now) {
            "ja"
        } else {
            "nein"
        }
        .to_string(),
    );
    put("hours_today", calendar::hours_today(config, now));
    put("practice_notice", calendar::practice_notice(config, now));
    put(
        "after_hours_advice",
        calendar::after_hours_advice(config, now),
    );
    m.extend(call_facts(call));
    m
}

/// The eleven dynamic variables without a practice: [`NO_CALL_TOKEN`], the call's three facts,
/// and an empty string for each practice fact (there is no practice to take them from). An empty
/// value still counts as supplied: ElevenLabs ends the conversation only for a variable that is
/// missing altogether (`missing_dynamic_variable`, docs/elevenlabs.md §2.1), and substitutes ""
/// into the prompt.
pub fn dynamic_variables_without_practice(call: &CallInfo<'_>) -> Map<String, Value> {
    let mut m: Map<String, Value> = DYNAMIC_VARIABLE_NAMES
        .iter()
        .map(|name| ((*name).to_owned(), Value::String(String::new())))
        .collect();
    m.insert("secret__ignis_call".into(), NO_CALL_TOKEN.into());
    m.extend(call_facts(call));
    m
}

/// `caller_number`, `called_number` and `call_sid`, each non-empty.
fn call_facts(call: &CallInfo<'_>) -> [(String, Value); 3] {
    let non_empty = |s: &str, fallback: &str| {
        let s = s.trim();
        Value::String(if s.is_empty() { fallback } else { s }.to_owned())
    };
    [
        (
            "caller_number".into(),
            non_empty(call.caller_number, "anonymous"),
        ),
        (
            "called_number".into(),
            non_empty(call.called_number, "unbekannt"),
        ),
        ("call_sid".into(), non_empty(call.call_sid, "unbekannt")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_keeps_fields_a_newer_release_wrote() {
        let newer = r#"{"bookings":1,"unmatched":["ab"],"from_the_future":{"x":[1,2]}}"#;
        let state: CallState = serde_json::from_str(newer).unwrap();
        assert_eq!((state.bookings, state.unmatched.len()), (1, 1));
        let again = serde_json::to_value(&state).unwrap();
        assert_eq!(again["from_the_future"], serde_json::json!({"x": [1, 2]}));
        // An older state, without the newer fields, still loads.
        let old: CallState = serde_json::from_str(r#"{"requests":2}"#).unwrap();
        assert_eq!((old.requests, old.emergencies), (2, 0));
    }

    #[test]
    fn refs_are_per_kind_and_reused() {
        let mut s = CallState::default();
        assert_eq!(s.add_patient(10, Assurance::NameDob), "P1");
        assert_eq!(s.add_patient(11, Assurance::NameDob), "P2");
        assert_eq!(s.add_patient(10, Assurance::NameDobPhone), "P1");
        assert_eq!(s.patient("P1").unwrap().assurance, Assurance::NameDobPhone);
        assert_eq!(s.add_slot(7), "S1");
        assert_eq!(s.slot("S1").unwrap().id, 7);
        assert!(s.slot("P1").is_none());
        assert!(s.slot("S99999").is_none());
        assert!(s.patient("P-1").is_none());
    }

    #[test]
    fn token_hash_and_compare() {
        let t = CallToken::from_entropy([7; TOKEN_BYTES]);
        assert_eq!(t.as_str().len(), 32);
        assert_eq!(t.hash(), hash_token(t.as_str().as_bytes()));
        assert!(
            t.as_str()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert!(!format!("{t:?}").contains(t.as_str()));
    }

    #[test]
    fn without_a_practice_all_eleven_go_out_with_the_refused_token() {
        let info = CallInfo {
            call_sid: "CA1",
            caller_number: " ",
            called_number: "+4930",
        };
        let v = dynamic_variables_without_practice(&info);
        let mut names: Vec<&str> = v.keys().map(String::as_str).collect();
        let mut expected = DYNAMIC_VARIABLE_NAMES.to_vec();
        names.sort_unstable();
        expected.sort_unstable();
        assert_eq!(names, expected);
        assert_eq!(v["secret__ignis_call"], NO_CALL_TOKEN);
        assert_eq!(v["caller_number"], "anonymous");
        assert_eq!(v["called_number"], "+4930");
        assert_eq!(v["call_sid"], "CA1");
        assert_eq!(v["practice_name"], "");
        assert!(v.values().all(Value::is_string));
        // Never the shape of a minted token, so never the preimage of a stored hash.
        assert_eq!(CallToken::unregistered().as_str(), NO_CALL_TOKEN);
        assert!(!NO_CALL_TOKEN.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(NO_CALL_TOKEN.len(), 2 * TOKEN_BYTES);
    }

    #[test]
    fn numbers_normalise_and_mask() {
        for number in [
            "+49 170 1234567",
            "0170 1234567",
            "0049 170 1234567",
            "+49 (0)170 1234567",
            "0049 (0) 170 1234567",
        ] {
            assert_eq!(normalize_number(number), "491701234567", "{number}");
        }
        assert_eq!(mask_number("+491701234567"), "…567");
        // Other countries keep their digits (a 0 after another code is not dropped).
        assert_eq!(normalize_number("+43 0664 123"), "430664123");
    }
}
