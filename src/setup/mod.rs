//! The set-up commands' cores: `ignis twilio configure` ([`twilio`]), `ignis agent sync`
//! ([`agent`]) and `ignis doctor` ([`doctor`]). Sans-IO like the rest: they build the requests
//! to Twilio's and ElevenLabs' APIs, read the answers, decide what to change and what is wrong,
//! and render the report; the drivers in `crate::driver::setup` only send and receive. Exit
//! codes (the drivers' `StartError`): 0 done or nothing to do, 1 a check failed or a service
//! refused, 2 bad configuration or usage.
//! The API facts they follow are in docs/setup-apis.md.

pub mod agent;
pub mod doctor;
pub mod twilio;

use std::fmt;

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It holds.
    Pass,
    /// It does not: the check's `fix` says what to do.
    Fail,
    /// Not run (a variable is unset, or an earlier hop failed).
    Skip,
}

impl Status {
    /// `✓`, `✗` or `-`, the mark in front of the report line.
    pub fn mark(self) -> &'static str {
        match self {
            Status::Pass => "✓",
            Status::Fail => "✗",
            Status::Skip => "-",
        }
    }

    /// `pass`, `fail` or `skip`, for `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One line of a report: what was checked, how it went, and for a failure what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// A stable id for monitoring (`tls`, `twilio_number`, …).
    pub id: &'static str,
    /// The outcome.
    pub status: Status,
    /// One line: what was found (never a secret).
    pub detail: String,
    /// For a failure: the likely cause and the fix.
    pub fix: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn pass(id: &'static str, detail: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A failed check with its fix.
    pub fn fail(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// A check not run, and why.
    pub fn skip(id: &'static str, why: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Skip,
            detail: why.into(),
            fix: None,
        }
    }
}

impl fmt::Display for Check {
    /// `✓ id: detail`, and for a failure an indented `fix:` line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.mark(), self.id, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n    fix: {fix}")?;
        }
        Ok(())
    }
}

/// Largest answer read from a set-up API (Twilio REST and Monitor, ElevenLabs). The largest
/// expected: an ElevenLabs agent with a long prompt, its workflow and many tools (tens of KiB),
/// or a Twilio list page at its maximum of 1000 numbers (about 2 KB each, ~2 MB;
/// docs/twilio.md §9.1). 4 MiB holds both with room and still bounds a misbehaving peer.
pub const MAX_API_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Longest value from a peer shown in a report line (a URL, a SID, a date).
pub const MAX_SHOWN_CHARS: usize = 200;

/// A peer's text as it may be printed: no control characters (no terminal escapes), at most
/// `max_chars` characters (usually [`MAX_SHOWN_CHARS`]).
pub fn shown(text: &str, max_chars: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

/// A secret as it may be shown: its length and last two characters at most, never the value.
pub fn masked(secret: &str) -> String {
    let n = secret.chars().count();
    if n < 12 {
        return "****".to_owned();
    }
    let tail: String = secret.chars().skip(n - 2).collect();
    format!("****{tail} ({n} characters)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_render_with_their_fix_and_secrets_are_masked() {
        let c = Check::fail("tls", "certificate expires in 3 days", "renew it");
        assert_eq!(
            c.to_string(),
            "✗ tls: certificate expires in 3 days\n    fix: renew it"
        );
        assert_eq!(Check::pass("dns", "1.2.3.4").to_string(), "✓ dns: 1.2.3.4");
        assert_eq!(masked("short"), "****");
        let m = masked("Bearer abcdefghijklmnop");
        assert!(!m.contains("abcdef"), "{m}");
        assert_eq!(shown("a\u{1b}[2Jb\nc", MAX_SHOWN_CHARS), "a[2Jbc");
        assert_eq!(
            shown(&"x".repeat(1000), MAX_SHOWN_CHARS).len(),
            MAX_SHOWN_CHARS
        );
    }
}
