//! TwiML documents ignis returns (docs/twilio.md §2).

/// Longest `name` + `value` of one `<Parameter>` (docs/twilio.md §2.1: under 500 characters).
pub const MAX_PARAMETER_CHARS: usize = 499;

/// The apology spoken when no human fallback is configured. The practice is German.
pub const APOLOGY_DE: &str = "Es tut uns leid, unser Telefonassistent ist gerade nicht erreichbar. \
     Bitte rufen Sie später noch einmal an.";
/// Spoken before transferring the caller to a human.
pub const TRANSFER_DE: &str = "Einen Moment bitte, ich verbinde Sie mit der Praxis.";

/// Escapes text for use in an XML attribute or element (`& < > " '`).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even escaped; drop them.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// `<Connect action=…><Stream url=…>` with the call's facts as `<Parameter>`s (§2.1, §2.3).
/// `stream_url` must carry no query string (§1.1); parameters over the length limit are skipped.
pub fn connect_stream(stream_url: &str, action_url: &str, parameters: &[(&str, &str)]) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
         <Connect action=\"{}\" method=\"POST\"><Stream url=\"{}\">",
        escape(action_url),
        escape(stream_url)
    );
    for (name, value) in parameters {
        if name.chars().count() + value.chars().count() > MAX_PARAMETER_CHARS {
            continue;
        }
        xml.push_str(&format!(
            "<Parameter name=\"{}\" value=\"{}\"/>",
            escape(name),
            escape(value)
        ));
    }
    xml.push_str("</Stream></Connect></Response>");
    xml
}

/// Ends the call.
pub fn hangup() -> String {
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Hangup/></Response>".to_owned()
}

/// Connects the caller to a human at `number`.
pub fn dial(number: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
         <Say language=\"de-DE\">{}</Say><Dial><Number>{}</Number></Dial></Response>",
        escape(TRANSFER_DE),
        escape(number)
    )
}

/// A short apology, then hang up.
pub fn apology() -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
         <Say language=\"de-DE\">{}</Say><Hangup/></Response>",
        escape(APOLOGY_DE)
    )
}

/// The caller must not be left in dead air: a human if configured, else the apology.
pub fn fallback(fallback_number: Option<&str>) -> String {
    match fallback_number {
        Some(n) => dial(n),
        None => apology(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_document_is_escaped() {
        let xml = connect_stream(
            "wss://h/api/twilio/stream",
            "https://h/api/twilio/stream-ended",
            &[("caller", "+49<&>\"'"), ("x", &"y".repeat(600))],
        );
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>"));
        assert!(xml.contains("value=\"+49&lt;&amp;&gt;&quot;&apos;\""));
        assert!(!xml.contains("yyyy"));
        assert!(
            xml.contains("<Connect action=\"https://h/api/twilio/stream-ended\" method=\"POST\">")
        );
    }

    #[test]
    fn fallback_choice() {
        assert!(fallback(Some("+4930123")).contains("<Number>+4930123</Number>"));
        assert!(fallback(None).contains("<Hangup/>"));
    }
}
