//! Name normalisation for identification over the phone: the store keeps a normalised copy of
//! each name, and matching compares spelling-tolerant keys of those.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::{decompose_compatible, is_combining_mark};

/// Normalises a name for matching: composed (NFC) and lowercased, German umlauts and ß spelled
/// out (`ü` → `ue`), other Latin letters stripped of their marks (`ñ` → `n`, `ć` → `c`, with
/// `ł ø đ æ œ ı þ` mapped by hand as they do not decompose), letters of other scripts kept
/// as they are, marks included (が stays が; Greek final ς is σ), and everything that is not a
/// letter dropped. Never drops a letter: "Nuñez" and "Nunez" meet, "Петров" and "Иванов"
/// stay apart (issue 16 review).
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().nfc().flat_map(char::to_lowercase) {
        match c {
            'ä' => out.push_str("ae"),
            'ö' => out.push_str("oe"),
            'ü' => out.push_str("ue"),
            'ß' => out.push_str("ss"),
            'æ' => out.push_str("ae"),
            'œ' => out.push_str("oe"),
            'þ' => out.push_str("th"),
            'ł' => out.push('l'),
            'ø' => out.push('o'),
            'đ' | 'ð' => out.push('d'),
            'ı' => out.push('i'),
            'ς' => out.push('σ'),
            c if c.is_ascii_alphabetic() => out.push(c),
            c if c.is_alphabetic() => push_letter(&mut out, c),
            // A mark of a non-Latin letter (Devanagari vowel signs, say) is part of it.
            c if is_combining_mark(c) && out.chars().last().is_some_and(|p| !p.is_ascii()) => {
                out.push(c)
            }
            _ => {}
        }
    }
    out
}

/// Appends a non-ASCII letter: a Latin one as its base letter without marks (NFKD: `ć` → `c`,
/// `ﬁ` → `fi`), any other as it is.
fn push_letter(out: &mut String, c: char) {
    let (mut base, mut rest_marks) = (false, true);
    decompose_compatible(c, |d| {
        base |= d.is_ascii_alphabetic();
        rest_marks &= d.is_ascii_alphabetic() || is_combining_mark(d);
    });
    if !(base && rest_marks) {
        out.push(c);
        return;
    }
    decompose_compatible(c, |d| {
        if d.is_ascii_alphabetic() {
            out.push(d.to_ascii_lowercase());
        }
    });
}

/// A spelling-tolerant key of a normalised name, for matching names heard over the phone: the
/// usual German spelling variants (Meier/Meyer/Maier/Mayer, Schmidt/Schmitt, Philipp/Filip,
/// Thomas/Tomas) and doubled letters map to the same key. The birth date is always matched
/// exactly, so the tolerance does not widen identification much.
pub fn name_key(normalized: &str) -> String {
    let mut s = normalized.to_string();
    for (from, to) in [
        ("ph", "f"),
        ("th", "t"),
        ("dt", "t"),
        ("ck", "k"),
        ("tz", "z"),
        ("ey", "ai"),
        ("ay", "ai"),
        ("ei", "ai"),
        ("y", "i"),
    ] {
        s = s.replace(from, to);
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !out.ends_with(c) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise() {
        assert_eq!(
            normalize_name("Müller-Lüdenscheidt"),
            "muellerluedenscheidt"
        );
        assert_eq!(normalize_name(" Weiß "), "weiss");
        assert_eq!(normalize_name("Yılmaz"), "yilmaz");
        // Letters outside the hand-written table lose their marks, never themselves.
        assert_eq!(normalize_name("Petrović"), "petrovic");
        assert_eq!(normalize_name("Wiśniewski"), "wisniewski");
        assert_eq!(normalize_name("Nuñez"), "nunez");
        assert_eq!(normalize_name("Łukasz"), "lukasz");
        assert_eq!(normalize_name("Søren Ærø"), "sorenaero");
        // A decomposed umlaut (u + combining diaeresis) is the composed one.
        assert_eq!(normalize_name("Mu\u{308}ller"), "mueller");
        // Other scripts are kept, marks included, so two different names stay two.
        assert_eq!(normalize_name("Петров"), "петров");
        assert_ne!(normalize_name("Петров"), normalize_name("Иванов"));
        assert_ne!(normalize_name("ごとう"), normalize_name("ことう"));
        assert_ne!(normalize_name("राम"), normalize_name("रम"));
        assert_eq!(normalize_name("Ὀδυσσεύς"), normalize_name("ὀδυσσεύσ"));
        assert_eq!(normalize_name("ẞ"), "ss");
        assert_eq!(normalize_name("İlker"), "ilker");
        assert_eq!(normalize_name(" - ' "), "");
    }

    #[test]
    fn name_keys_absorb_spelling_variants() {
        let k = |s: &str| name_key(&normalize_name(s));
        assert_eq!(k("Meier"), k("Meyer"));
        assert_eq!(k("Maier"), k("Mayer"));
        assert_eq!(k("Schmidt"), k("Schmitt"));
        assert_eq!(k("Philipp"), k("Filip"));
        assert_eq!(k("Müller"), k("Mueller"));
        assert_ne!(k("Weber"), k("Wagner"));
        assert_ne!(k("Schneider"), k("Schreiber"));
    }
}
