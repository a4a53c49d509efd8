//! Parameters of Twilio's voice and status webhooks (docs/twilio.md §3), parsed into typed values at
//! the edge.
//!
//! Every field ignis uses has a strict format. Twilio's signature joins sorted names and values
//! without a separator (docs/twilio.md §4.1), so a signed request can be re-cut, e.g.
//! `From=+4915…&FromCity=X` sent as one `From=+4915…FromCityX`, without changing its signature:
//! a value that must be `CA` + 32 hex digits or an E.164 number cannot absorb a neighbour
//! (docs/twilio.md §8).

use std::fmt;

use crate::http::form;

/// Length of a Twilio SID: a two-letter prefix and 32 hex digits.
pub const SID_LEN: usize = 34;
/// Longest `client:` identity accepted in `From`/`To`.
pub const MAX_CLIENT_ID_BYTES: usize = 64;
/// Longest `CallStatus` value (the longest known is `in-progress`).
pub const MAX_CALL_STATUS_BYTES: usize = 16;
/// Most digits of a counter parameter (`CallDuration`, `SequenceNumber`).
pub const MAX_COUNTER_DIGITS: usize = 10;
/// Caller-ID values Twilio sends when the number is withheld (compared ignoring case).
pub const WITHHELD: [&str; 6] = [
    "anonymous",
    "unknown",
    "restricted",
    "private",
    "blocked",
    "unavailable",
];
/// Numbers Twilio puts in `From` for a withheld caller ID: ANONYMOUS, RESTRICTED, BLOCKED,
/// UNKNOWN and UNAVAILABLE spelled on a phone keypad (docs/twilio.md §3.1). They are nobody's
/// number: taken as one, every withheld caller would share a "number on file".
pub const WITHHELD_NUMBERS: [&str; 5] = [
    "+266696687",
    "+7378742833",
    "+2562533",
    "+8656696",
    "+86282452253",
];

/// Whether `number` is one of [`WITHHELD_NUMBERS`], in any spelling with the same digits.
pub fn is_withheld_number(number: &str) -> bool {
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let d = digits(number);
    WITHHELD_NUMBERS.iter().any(|w| digits(w) == d)
}

fn is_sid(prefix: &str, s: &str) -> bool {
    s.len() == SID_LEN && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A `CallSid`: `CA` + 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallSid(String);

impl CallSid {
    /// Parses a CallSid; `None` unless it is exactly `CA` + 32 hex digits.
    pub fn parse(s: &str) -> Option<CallSid> {
        is_sid("CA", s).then(|| CallSid(s.to_owned()))
    }

    /// The SID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallSid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An `AccountSid`: `AC` + 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountSid(String);

impl AccountSid {
    /// Parses an AccountSid; `None` unless it is exactly `AC` + 32 hex digits.
    pub fn parse(s: &str) -> Option<AccountSid> {
        is_sid("AC", s).then(|| AccountSid(s.to_owned()))
    }

    /// The SID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A `From` or `To` value: an E.164 number, a Twilio Client identity (`client:alice`), or one of
/// the words Twilio uses for a withheld caller ID ([`WITHHELD`]). SIP addresses are refused:
/// ignis answers a phone number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party(String);

impl Party {
    /// Parses a party; `None` for anything else (including an empty value).
    pub fn parse(s: &str) -> Option<Party> {
        let ok = if let Some(digits) = s.strip_prefix('+') {
            // E.164: at most 15 digits, no leading zero.
            (2..=15).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0')
        } else if let Some(id) = s.strip_prefix("client:") {
            (1..=MAX_CLIENT_ID_BYTES).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        } else {
            WITHHELD.iter().any(|w| w.eq_ignore_ascii_case(s))
        };
        ok.then(|| Party(s.to_owned()))
    }

    /// The value as Twilio sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The party as a caller: one of [`WITHHELD_NUMBERS`] becomes `anonymous`, so no withheld
    /// caller is ever identified, called back or rate-limited by a placeholder number.
    pub fn into_caller(self) -> Party {
        if WITHHELD_NUMBERS.contains(&self.0.as_str()) {
            Party(WITHHELD[0].to_owned())
        } else {
            self
        }
    }
}

/// What ignis needs from the voice webhook (§3.1), every field checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    /// `CallSid`.
    pub call_sid: CallSid,
    /// `AccountSid`.
    pub account_sid: AccountSid,
    /// `From`: E.164, `client:…`, or a withheld form.
    pub from: Party,
    /// `To`.
    pub to: Party,
}

/// A call status callback (§3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCallback {
    /// `CallSid`.
    pub call_sid: CallSid,
    /// `CallStatus`.
    pub status: CallStatus,
    /// `CallDuration` in seconds (terminal events only).
    pub duration_secs: Option<u64>,
    /// `SequenceNumber` (callbacks may arrive out of order).
    pub sequence: Option<u64>,
}

/// `CallStatus` values (§3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    /// `queued`
    Queued,
    /// `initiated`
    Initiated,
    /// `ringing`
    Ringing,
    /// `in-progress`
    InProgress,
    /// `completed`
    Completed,
    /// `busy`
    Busy,
    /// `failed`
    Failed,
    /// `no-answer`
    NoAnswer,
    /// `canceled`
    Canceled,
    /// A value Twilio may add later; treated as non-terminal.
    Other,
}

impl CallStatus {
    /// Parses a `CallStatus` value.
    pub fn parse(s: &str) -> CallStatus {
        match s {
            "queued" => CallStatus::Queued,
            "initiated" => CallStatus::Initiated,
            "ringing" => CallStatus::Ringing,
            "in-progress" => CallStatus::InProgress,
            "completed" => CallStatus::Completed,
            "busy" => CallStatus::Busy,
            "failed" => CallStatus::Failed,
            "no-answer" => CallStatus::NoAnswer,
            "canceled" => CallStatus::Canceled,
            _ => CallStatus::Other,
        }
    }

    /// Whether the call is over.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CallStatus::Completed
                | CallStatus::Busy
                | CallStatus::Failed
                | CallStatus::NoAnswer
                | CallStatus::Canceled
        )
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Queued => "queued",
            CallStatus::Initiated => "initiated",
            CallStatus::Ringing => "ringing",
            CallStatus::InProgress => "in-progress",
            CallStatus::Completed => "completed",
            CallStatus::Busy => "busy",
            CallStatus::Failed => "failed",
            CallStatus::NoAnswer => "no-answer",
            CallStatus::Canceled => "canceled",
            CallStatus::Other => "other",
        }
    }
}

/// Why webhook parameters were refused (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamError {
    /// A required parameter is absent.
    Missing(&'static str),
    /// A parameter is present but unusable.
    Invalid(&'static str),
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamError::Missing(n) => write!(f, "missing parameter {n}"),
            ParamError::Invalid(n) => write!(f, "invalid parameter {n}"),
        }
    }
}

impl std::error::Error for ParamError {}

fn call_sid(fields: &[(String, String)]) -> Result<CallSid, ParamError> {
    let sid = form::get(fields, "CallSid").ok_or(ParamError::Missing("CallSid"))?;
    CallSid::parse(sid).ok_or(ParamError::Invalid("CallSid"))
}

/// `AccountSid`, when present, must be well formed (it is required only by the voice webhook).
fn account_sid(fields: &[(String, String)]) -> Result<Option<AccountSid>, ParamError> {
    form::get(fields, "AccountSid")
        .map(|s| AccountSid::parse(s).ok_or(ParamError::Invalid("AccountSid")))
        .transpose()
}

fn party(fields: &[(String, String)], name: &'static str) -> Result<Party, ParamError> {
    let value = form::get(fields, name).ok_or(ParamError::Missing(name))?;
    Party::parse(value).ok_or(ParamError::Invalid(name))
}

/// Reads the voice webhook's parameters.
pub fn incoming_call(fields: &[(String, String)]) -> Result<IncomingCall, ParamError> {
    Ok(IncomingCall {
        call_sid: call_sid(fields)?,
        account_sid: account_sid(fields)?.ok_or(ParamError::Missing("AccountSid"))?,
        from: party(fields, "From")?.into_caller(),
        to: party(fields, "To")?,
    })
}

/// Reads a status callback's parameters.
pub fn status_callback(fields: &[(String, String)]) -> Result<StatusCallback, ParamError> {
    let status = form::get(fields, "CallStatus").ok_or(ParamError::Missing("CallStatus"))?;
    if status.is_empty()
        || status.len() > MAX_CALL_STATUS_BYTES
        || !status.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
    {
        return Err(ParamError::Invalid("CallStatus"));
    }
    let number = |name: &'static str| -> Result<Option<u64>, ParamError> {
        form::get(fields, name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                if v.len() > MAX_COUNTER_DIGITS || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ParamError::Invalid(name));
                }
                v.parse().map_err(|_| ParamError::Invalid(name))
            })
            .transpose()
    };
    account_sid(fields)?;
    Ok(StatusCallback {
        call_sid: call_sid(fields)?,
        status: CallStatus::parse(status),
        duration_secs: number("CallDuration")?,
        sequence: number("SequenceNumber")?,
    })
}

/// A CallSid from any webhook (used by `stream-ended`); a present `AccountSid` must be well
/// formed too.
pub fn call_sid_of(fields: &[(String, String)]) -> Result<CallSid, ParamError> {
    account_sid(fields)?;
    call_sid(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> Vec<(String, String)> {
        form::decode(s.as_bytes()).unwrap()
    }

    const SID: &str = "CA0123456789abcdef0123456789ABCDEF";

    #[test]
    fn parses_status() {
        let s = status_callback(&f(&format!(
            "CallSid={SID}&CallStatus=completed&CallDuration=42&SequenceNumber=3"
        )))
        .unwrap();
        assert_eq!(s.status, CallStatus::Completed);
        assert!(s.status.is_terminal());
        assert_eq!(s.duration_secs, Some(42));
        assert_eq!(s.sequence, Some(3));
        assert_eq!(
            status_callback(&f(&format!("CallSid={SID}"))),
            Err(ParamError::Missing("CallStatus"))
        );
        assert_eq!(
            status_callback(&f(&format!("CallSid={SID}&CallStatus=x&CallDuration=-1"))),
            Err(ParamError::Invalid("CallDuration"))
        );
        assert_eq!(
            incoming_call(&f("CallSid=CA%3Cx%3E")),
            Err(ParamError::Invalid("CallSid"))
        );
    }

    #[test]
    fn sids_are_prefix_and_32_hex_digits() {
        assert!(CallSid::parse(SID).is_some());
        for bad in [
            "CA1",
            "",
            "CA0123456789abcdef0123456789abcdeg",
            "AC0123456789abcdef0123456789abcdef",
        ] {
            assert!(CallSid::parse(bad).is_none(), "{bad}");
        }
        let long = format!("{SID}0");
        assert!(CallSid::parse(&long).is_none());
        assert!(AccountSid::parse("AC0123456789abcdef0123456789abcdef").is_some());
        assert!(AccountSid::parse(SID).is_none());
    }

    #[test]
    fn parties_are_e164_client_or_withheld() {
        for ok in [
            "+4915112345123",
            "+266696687",
            "client:alice_1",
            "anonymous",
            "Restricted",
        ] {
            assert!(Party::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "+",
            "+0049",
            "+4915112345123FromCityBerlin",
            "4915112345123",
            "sip:a@b",
            "client:",
            "client:a b",
            "+1234567890123456",
        ] {
            assert!(Party::parse(bad).is_none(), "{bad}");
        }
    }

    /// A signed request re-cut so that a neighbour is merged into a value is refused: the
    /// signature is the same (names and values are joined without a separator), the format is not.
    #[test]
    fn a_merged_neighbour_is_refused() {
        let base = format!(
            "AccountSid=AC0123456789abcdef0123456789abcdef&CallSid={SID}&To=%2B16175551881"
        );
        assert!(
            incoming_call(&f(&format!("{base}&From=%2B4915112345123&FromCity=BERLIN"))).is_ok()
        );
        assert_eq!(
            incoming_call(&f(&format!("{base}&From=%2B4915112345123FromCityBERLIN"))),
            Err(ParamError::Invalid("From"))
        );
        assert_eq!(
            incoming_call(&f(&format!(
                "AccountSid=AC0123456789abcdef0123456789abcdef&CallSid={SID}CallStatusringing&From=%2B49151&To=%2B1617"
            ))),
            Err(ParamError::Invalid("CallSid"))
        );
        assert_eq!(
            status_callback(&f(&format!(
                "CallSid={SID}&CallStatus=completedDirectioninbound"
            ))),
            Err(ParamError::Invalid("CallStatus"))
        );
        assert_eq!(
            incoming_call(&f(&format!("CallSid={SID}&From=%2B49151&To=%2B1617"))),
            Err(ParamError::Missing("AccountSid"))
        );
    }

    /// A keypad placeholder in `From` is a withheld caller, never a number (docs/twilio.md
    /// §3.1); a real number, and `To`, are kept as sent.
    #[test]
    fn a_withheld_placeholder_number_becomes_anonymous() {
        let call = |from: &str| {
            let q = format!(
                "AccountSid=AC0123456789abcdef0123456789abcdef&CallSid={SID}&From={from}&To=%2B266696687"
            );
            incoming_call(&f(&q)).map(|c| (c.from.as_str().to_owned(), c.to.as_str().to_owned()))
        };
        for n in WITHHELD_NUMBERS {
            let from = n.replace('+', "%2B");
            assert_eq!(
                call(&from),
                Ok(("anonymous".to_owned(), "+266696687".to_owned()))
            );
        }
        assert_eq!(
            call("%2B4915112345123"),
            Ok(("+4915112345123".to_owned(), "+266696687".to_owned()))
        );
        // Stored before this rule, in any spelling: still nobody's number.
        assert!(is_withheld_number("+266696687") && is_withheld_number("266 696 687"));
        assert!(!is_withheld_number("+4926669668"));
    }
}
