//! Name normalisation for identification over the phone: the store keeps a normalised copy of
//! each name, and matching compares spelling-tolerant keys of those.

/// Normalises a name for matching: lowercase, umlauts and ß spelled out, letters only.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        match c {
            'ä' => out.push_str("ae"),
            'ö' => out.push_str("oe"),
            'ü' => out.push_str("ue"),
            'ß' => out.push_str("ss"),
            'é' | 'è' | 'ê' => out.push('e'),
            'á' | 'à' | 'â' => out.push('a'),
            'ó' | 'ò' | 'ô' => out.push('o'),
            'ı' | 'í' | 'ì' | 'î' => out.push('i'),
            'ç' => out.push('c'),
            'ş' => out.push('s'),
            'ğ' => out.push('g'),
            c if c.is_ascii_alphabetic() => out.push(c),
            _ => {}
        }
    }
    out
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
