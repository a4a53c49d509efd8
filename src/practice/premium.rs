//! Call-back numbers the practice must never dial: premium-rate and shared-cost prefixes
//! (docs/practice-tools.md §6.3). A caller could otherwise leave a request whose call-back earns
//! them money per minute of the practice's time.
//!
//! Prefixes are compared on [`normalize_number`]'s form (digits, country code first), so
//! `0900…`, `+49 900…` and `0049900…` are one prefix.

use super::calls::normalize_number;

/// The default list, as `PREMIUM_RATE_PREFIXES` spells it. Sources: Bundesnetzagentur,
/// Nummernplan (0900 Premium-Dienste; 0137 and 0138 Massenverkehrs-Dienste, charged per call);
/// ITU-T E.164 assigned country codes (+881 Global Mobile Satellite System, +882 and +883
/// International Networks, +808 International Shared Cost Service, +979 International Premium
/// Rate Service).
pub const DEFAULT_PREMIUM_RATE_PREFIXES: &str =
    "0900,0137,0138,+49900,+49137,+49138,+881,+882,+883,+808,+979";

/// Most prefixes a list may hold.
pub const MAX_PREMIUM_PREFIXES: usize = 64;
/// Digits of a prefix, at most (E.164 numbers have 15).
const MAX_PREFIX_DIGITS: usize = 15;

/// Parses a comma-separated prefix list (`+`, digits, spaces); `None` names nothing: the text is
/// malformed or over [`MAX_PREMIUM_PREFIXES`].
pub fn parse_prefixes(text: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for raw in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let body = raw.strip_prefix('+').unwrap_or(raw);
        if !body.bytes().all(|b| b.is_ascii_digit() || b == b' ') {
            return None;
        }
        let p = normalize_number(raw);
        if p.len() < 2 || p.len() > MAX_PREFIX_DIGITS || out.len() >= MAX_PREMIUM_PREFIXES {
            return None;
        }
        out.push(p);
    }
    Some(out)
}

/// The default list, normalised.
pub fn default_prefixes() -> Vec<String> {
    parse_prefixes(DEFAULT_PREMIUM_RATE_PREFIXES).unwrap_or_default()
}

/// Whether `number` starts with one of `prefixes` (normalised by [`parse_prefixes`]).
pub fn is_premium(number: &str, prefixes: &[String]) -> bool {
    let n = normalize_number(number);
    prefixes.iter().any(|p| n.starts_with(p.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn german_and_international_premium_ranges() {
        let p = default_prefixes();
        assert_eq!(p.len(), 11);
        for n in [
            "0900 1234567",
            "+49 900 123",
            // The "(0)" notation, and its international-prefix form.
            "+49 (0) 900 1234567",
            "0049 0900 1234567",
            "0049137123456",
            "01381234",
            "+8816123",
            "+979123",
        ] {
            assert!(is_premium(n, &p), "{n}");
        }
        for n in ["+491701234567", "030 123456", "0881 12345", "+4930900"] {
            assert!(!is_premium(n, &p), "{n}");
        }
        assert_eq!(
            parse_prefixes("+49 900, 0137"),
            Some(vec!["49900".into(), "49137".into()])
        );
        assert_eq!(parse_prefixes("09x0"), None);
        assert_eq!(parse_prefixes("+"), None);
        assert_eq!(parse_prefixes(""), Some(vec![]));
    }
}
