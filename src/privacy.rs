//! Keeping patients' data out of logs.

/// Digits of a phone number left visible at the end.
const VISIBLE_TAIL: usize = 3;

/// Masks a phone number for logs: the country prefix (at most two digits) and the last three
/// digits stay, everything else becomes `…` (`+4915112345123` → `+49…123`, `+16175551881` →
/// `+1…881`). Non-numbers (`anonymous`, `client:alice`) keep only their scheme.
pub fn mask_phone(number: &str) -> String {
    if let Some(digits) = number.strip_prefix('+') {
        if digits.len() > VISIBLE_TAIL + 2 && digits.bytes().all(|b| b.is_ascii_digit()) {
            // NANP numbers have a one-digit country code; show no more than the code.
            let prefix = if digits.starts_with('1') { 1 } else { 2 };
            return format!(
                "+{}…{}",
                &digits[..prefix],
                &digits[digits.len() - VISIBLE_TAIL..]
            );
        }
        return "+…".to_owned();
    }
    match number {
        "" => "(none)".to_owned(),
        "anonymous" | "unknown" | "private" | "restricted" => number.to_owned(),
        _ => match number.split_once(':') {
            Some((scheme, _))
                if scheme.len() <= 8 && scheme.bytes().all(|b| b.is_ascii_alphabetic()) =>
            {
                format!("{scheme}:…")
            }
            _ => "…".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        for (number, masked) in [
            ("+4915112345123", "+49…123"),
            ("+16175551881", "+1…881"),
            ("+123", "+…"),
            ("anonymous", "anonymous"),
            ("client:alice", "client:…"),
            ("sip:alice@example.com", "sip:…"),
            ("0301234567", "…"),
        ] {
            assert_eq!(mask_phone(number), masked, "{number}");
        }
    }
}
