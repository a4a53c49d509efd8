//! `application/x-www-form-urlencoded` decoding (WHATWG URL §5.1), used for Twilio webhook
//! bodies and GET query strings.

/// Most fields accepted in one form; Twilio sends a few dozen (docs/twilio.md §3.1).
pub const MAX_FORM_FIELDS: usize = 512;

/// Decoded form fields in arrival order (repeated names kept).
pub type Fields = Vec<(String, String)>;

/// Why a form could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormError {
    /// More than [`MAX_FORM_FIELDS`] fields.
    TooManyFields,
    /// A decoded name or value is not UTF-8 (Twilio signs UTF-8 strings, docs/twilio.md §4.1).
    NotUtf8,
    /// A `%` not followed by two hex digits, under [`Escapes::Strict`].
    BadEscape,
}

/// What a `%` that does not start a valid escape (`%zz`, a trailing `%4`) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escapes {
    /// Kept literally, as WHATWG URL §5.1 decodes forms: Twilio's webhooks and browsers send
    /// such bodies, and the signature is computed over what they meant.
    Lenient,
    /// Refused with [`FormError::BadEscape`]: the agent tool API answers a malformed query or
    /// path with 422 rather than guessing what a broken client meant.
    Strict,
}

error_text!(FormError {
    TooManyFields => "too many form fields",
    NotUtf8 => "form field is not UTF-8",
    BadEscape => "malformed percent escape",
});

/// Decodes `input` into name/value pairs. `+` is a space; `%XX` is a byte; a `%` not followed by
/// two hex digits is kept literally (WHATWG behaviour, tolerant of sloppy clients).
pub fn decode(input: &[u8]) -> Result<Fields, FormError> {
    decode_with(input, Escapes::Lenient)
}

/// [`decode`] with a choice of what a malformed `%` escape means.
pub fn decode_with(input: &[u8], escapes: Escapes) -> Result<Fields, FormError> {
    let mut fields = Vec::new();
    for pair in input.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        if fields.len() == MAX_FORM_FIELDS {
            return Err(FormError::TooManyFields);
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        fields.push((
            percent_decode(name, escapes)?,
            percent_decode(value, escapes)?,
        ));
    }
    Ok(fields)
}

/// Encodes one name or value for a form body: RFC 3986 unreserved bytes pass, space becomes
/// `+`, everything else `%XX`.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The first value of field `name`.
pub fn get<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Decodes one form component (a name, a value, or a path segment): `+` is a space, `%XX` a
/// byte, and the result must be UTF-8.
pub fn percent_decode(input: &[u8], escapes: Escapes) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                input.get(i + 1).and_then(|&b| hex(b)),
                input.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ if escapes == Escapes::Strict => return Err(FormError::BadEscape),
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_twilio_style_form() {
        let f =
            decode(b"CallSid=CA123&From=%2B4915112345678&Body=It%27s+amazing&Empty=&Flag").unwrap();
        assert_eq!(get(&f, "From"), Some("+4915112345678"));
        assert_eq!(get(&f, "Body"), Some("It's amazing"));
        assert_eq!(get(&f, "Empty"), Some(""));
        assert_eq!(get(&f, "Flag"), Some(""));
    }

    #[test]
    fn tolerates_bad_percent_and_rejects_bad_utf8() {
        assert_eq!(decode(b"a=100%&b=%zz&c=%4").unwrap()[0].1, "100%");
        assert_eq!(decode(b"b=%zz").unwrap()[0].1, "%zz");
        assert_eq!(decode(b"c=%4").unwrap()[0].1, "%4");
        assert_eq!(decode(b"a=%ff"), Err(FormError::NotUtf8));
    }

    #[test]
    fn strict_escapes_refuse_a_bad_percent() {
        let strict = |s: &str| decode_with(s.as_bytes(), Escapes::Strict);
        let q = strict("visit_type=kontrolle&weekdays=mo%2Cmi&x=a+b").unwrap();
        assert_eq!(q[1], ("weekdays".into(), "mo,mi".into()));
        assert_eq!(q[2].1, "a b");
        assert_eq!(strict("a=%zz"), Err(FormError::BadEscape));
        assert_eq!(strict("a=%4"), Err(FormError::BadEscape));
        assert_eq!(strict("a=%c3"), Err(FormError::NotUtf8));
        assert_eq!(percent_decode(b"A1", Escapes::Strict).unwrap(), "A1");
    }

    #[test]
    fn repeated_names_are_kept() {
        let f = decode(b"Digits=5678&Digits=1234").unwrap();
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn encode_round_trips() {
        let v = "+49 (0) 30/123 & 'x'=ü";
        let f = decode(format!("k={}", encode(v)).as_bytes()).unwrap();
        assert_eq!(f[0].1, v);
    }

    #[test]
    fn field_limit() {
        let many = "a=1&".repeat(MAX_FORM_FIELDS + 1);
        assert_eq!(decode(many.as_bytes()), Err(FormError::TooManyFields));
    }
}
