//! Parameters of Twilio's voice and status webhooks (docs/twilio.md §3).

use crate::http::form;

/// Longest CallSid accepted (`CA` + 32 hex digits = 34; room for other providers' ids).
pub const MAX_CALL_SID_BYTES: usize = 64;

/// What ignis needs from the voice webhook (§3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    /// `CallSid`.
    pub call_sid: String,
    /// `From`: E.164, `client:…`, or `anonymous` when withheld.
    pub from: String,
    /// `To`.
    pub to: String,
}

/// A call status callback (§3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCallback {
    /// `CallSid`.
    pub call_sid: String,
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

fn call_sid(fields: &[(String, String)]) -> Result<String, ParamError> {
    let sid = form::get(fields, "CallSid").ok_or(ParamError::Missing("CallSid"))?;
    if sid.is_empty()
        || sid.len() > MAX_CALL_SID_BYTES
        || !sid.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(ParamError::Invalid("CallSid"));
    }
    Ok(sid.to_owned())
}

/// Reads the voice webhook's parameters.
pub fn incoming_call(fields: &[(String, String)]) -> Result<IncomingCall, ParamError> {
    Ok(IncomingCall {
        call_sid: call_sid(fields)?,
        from: form::get(fields, "From").unwrap_or("").to_owned(),
        to: form::get(fields, "To").unwrap_or("").to_owned(),
    })
}

/// Reads a status callback's parameters.
pub fn status_callback(fields: &[(String, String)]) -> Result<StatusCallback, ParamError> {
    let status = form::get(fields, "CallStatus").ok_or(ParamError::Missing("CallStatus"))?;
    let number = |name: &'static str| -> Result<Option<u64>, ParamError> {
        form::get(fields, name)
            .filter(|v| !v.is_empty())
            .map(|v| v.parse().map_err(|_| ParamError::Invalid(name)))
            .transpose()
    };
    Ok(StatusCallback {
        call_sid: call_sid(fields)?,
        status: CallStatus::parse(status),
        duration_secs: number("CallDuration")?,
        sequence: number("SequenceNumber")?,
    })
}

/// A CallSid from any webhook (used by `stream-ended`).
pub fn call_sid_of(fields: &[(String, String)]) -> Result<String, ParamError> {
    call_sid(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> Vec<(String, String)> {
        form::decode(s.as_bytes()).unwrap()
    }

    #[test]
    fn parses_status() {
        let s = status_callback(&f(
            "CallSid=CA1&CallStatus=completed&CallDuration=42&SequenceNumber=3",
        ))
        .unwrap();
        assert_eq!(s.status, CallStatus::Completed);
        assert!(s.status.is_terminal());
        assert_eq!(s.duration_secs, Some(42));
        assert_eq!(s.sequence, Some(3));
        assert_eq!(
            status_callback(&f("CallSid=CA1")),
            Err(ParamError::Missing("CallStatus"))
        );
        assert_eq!(
            status_callback(&f("CallSid=CA1&CallStatus=x&CallDuration=-1")),
            Err(ParamError::Invalid("CallDuration"))
        );
        assert_eq!(
            incoming_call(&f("CallSid=CA%3Cx%3E")),
            Err(ParamError::Invalid("CallSid"))
        );
    }
}
