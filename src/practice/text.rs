//! Text a caller gave, as the practice keeps and shows it.

/// Whether `c` is an invisible formatting character: bidirectional embeddings, overrides and
/// isolates (U+202A–U+202E, U+2066–U+2069), directional marks (U+200E, U+200F, U+061C),
/// zero-width characters (U+200B–U+200D, U+2060–U+2064, U+FEFF) and the soft hyphen. Text
/// heard on the phone never needs them; kept, an override makes a name or note read on the
/// staff page differently from what was stored (Unicode TR #36 §2.1, "bidirectional text
/// spoofing"). Tool input drops them; the staff page shows them as U+FFFD.
pub fn is_hidden_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_overrides_and_zero_widths_are_hidden_formats() {
        for c in [
            '\u{202E}', '\u{2066}', '\u{200B}', '\u{FEFF}', '\u{00AD}', '\u{200F}',
        ] {
            assert!(is_hidden_format(c), "{:X}", c as u32);
        }
        for c in ['a', 'ü', ' ', '-', '\u{2010}', 'П'] {
            assert!(!is_hidden_format(c), "{c}");
        }
    }
}
