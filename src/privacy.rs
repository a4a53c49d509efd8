//! Keeping patients' data out of logs.

/// Digits of a phone number left visible at the end.
const VISIBLE_TAIL: usize = 3;

/// Shorter numbers show no digits at all (E.164 numbers have at least seven digits in practice).
const MIN_DIGITS_TO_SHOW_TAIL: usize = 7;

/// Masks a phone number for logs: only the last three digits stay (`+4915112345123` →
/// `+…123`). The country code goes too: with it, a short number would show most of its digits.
/// Numbers too short for three digits to be a small part of them show none, and non-numbers
/// (`anonymous`, `client:alice`) keep only their scheme.
pub fn mask_phone(number: &str) -> String {
    if let Some(digits) = number.strip_prefix('+') {
        if digits.len() >= MIN_DIGITS_TO_SHOW_TAIL && digits.bytes().all(|b| b.is_ascii_digit()) {
            return format!("+…{}", &digits[digits.len() - VISIBLE_TAIL..]);
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
            ("+4915112345123", "+…123"),
            ("+16175551881", "+…881"),
            ("+491234", "+…"),
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
