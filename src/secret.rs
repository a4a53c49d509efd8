//! Small helpers for handling secrets and digests: one constant-time comparison and one
//! lower-case hex encoder, shared by the Twilio signature check, the practice's bearer and call
//! tokens, and the per-call token minting.
//!
//! Comparisons of anything a peer could use to guess a secret byte by byte (signatures, token
//! digests, phone numbers on file) go through [`constant_time_eq`]; hex is [`hex_lower`]
//! everywhere, so a digest printed in one place matches one printed in another.
//! [`token_strength`] judges an operator-chosen token (`ADMIN_TOKEN`) at start-up.

/// Constant-time equality of two byte strings: the time taken depends only on the lengths
/// (which are not secret here: digests have a fixed size), never on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lower-case hexadecimal of `bytes`, two digits per byte (`[0x0a, 0xff]` → `"0aff"`).
pub fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// Bits a strong token must be worth: 32 random bytes.
pub const STRONG_TOKEN_BITS: u32 = 256;
/// Fewest distinct characters in a strong token (64 random hex digits show all 16 but rarely
/// fewer than 12; `aaaa…` or `abab…` show 1 or 2).
pub const STRONG_TOKEN_MIN_DISTINCT: usize = 10;

/// Why a token is not worth [`STRONG_TOKEN_BITS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weakness {
    /// Its estimate, `length × log2(alphabet)`, is this many bits.
    TooFewBits(u32),
    /// It repeats itself: a short unit over and over, one character for more than a quarter of
    /// it, or fewer than [`STRONG_TOKEN_MIN_DISTINCT`] distinct characters.
    Repetitive,
}

impl std::fmt::Display for Weakness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Weakness::TooFewBits(bits) => write!(
                f,
                "is worth about {bits} bits, needs {STRONG_TOKEN_BITS} (32 random bytes, e.g. \
                 `openssl rand -base64 32` or `openssl rand -hex 32`)"
            ),
            Weakness::Repetitive => {
                f.write_str("repeats itself; use 32 random bytes, e.g. `openssl rand -base64 32`")
            }
        }
    }
}

/// Whether `token` is worth [`STRONG_TOKEN_BITS`] random bits, estimated from its text alone:
/// `length × log2(alphabet)`, where the alphabet is 16 when every character is a hex digit, else
/// the sum of the classes it uses (26 lower case, 26 upper case, 10 digits, 33 others). So 64 hex
/// digits (`openssl rand -hex 32`) or 43+ base64 characters (`openssl rand -base64 32`) pass,
/// and a 40-letter pass phrase does not. Obvious repetition fails whatever its length.
pub fn token_strength(token: &str) -> Result<(), Weakness> {
    let bytes = token.as_bytes();
    let alphabet: u32 = if !bytes.is_empty() && bytes.iter().all(u8::is_ascii_hexdigit) {
        16
    } else {
        let uses = |f: fn(&u8) -> bool| bytes.iter().any(f);
        [
            (uses(u8::is_ascii_lowercase), 26),
            (uses(u8::is_ascii_uppercase), 26),
            (uses(u8::is_ascii_digit), 10),
            (uses(|b| !b.is_ascii_alphanumeric()), 33),
        ]
        .iter()
        .filter(|(used, _)| *used)
        .map(|(_, size)| size)
        .sum()
    };
    // f64 is exact enough here: the bound is compared in whole bits.
    let bits = (token.chars().count() as f64 * f64::from(alphabet.max(1)).log2()) as u32;
    if bits < STRONG_TOKEN_BITS {
        return Err(Weakness::TooFewBits(bits));
    }
    let mut counts = [0usize; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let distinct = counts.iter().filter(|&&c| c > 0).count();
    let most = counts.iter().copied().max().unwrap_or(0);
    let periodic = (1..=bytes.len() / 2).any(|p| bytes[p..] == bytes[..bytes.len() - p]);
    if distinct < STRONG_TOKEN_MIN_DISTINCT || most * 4 > bytes.len() || periodic {
        return Err(Weakness::Repetitive);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_by_content_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn hex_is_lower_case_and_zero_padded() {
        assert_eq!(hex_lower(&[0x00, 0x0a, 0xff, 0x42]), "000aff42");
        assert_eq!(hex_lower(&[]), "");
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex_lower(&all), expected);
    }

    #[test]
    fn strong_tokens_are_worth_32_random_bytes() {
        // What `openssl rand -base64 32` and `-hex 32` print.
        assert_eq!(
            token_strength("QcxnDkwjTMZi+i6H4+FczVfQmZcziAos72nDCyyNgjc="),
            Ok(())
        );
        assert_eq!(
            token_strength("c73bc49407f4879e35978d198dfac40137d6024e5c34e073d3506aee22f968cc"),
            Ok(())
        );
        // base64url without padding: 43 characters.
        assert_eq!(
            token_strength("QcxnDkwjTMZi-i6H4_FczVfQmZcziAos72nDCyyNgjc"),
            Ok(())
        );
        // 16 random bytes in hex (128 bits), a pass phrase, the old 16-character minimum.
        for weak in [
            "c73bc49407f4879e35978d198dfac401",
            "correct horse battery staple",
            "admin-secret-for-tests-4567",
            "",
        ] {
            assert!(
                matches!(token_strength(weak), Err(Weakness::TooFewBits(_))),
                "{weak}"
            );
        }
        // Long enough but repetitive.
        for weak in [
            "a".repeat(80),
            "Passw0rd!".repeat(6),
            format!("{}{}", "x".repeat(30), "Qcxn+i6H4-FczVfQmZcz"),
            "0123456789".repeat(7),
        ] {
            assert_eq!(token_strength(&weak), Err(Weakness::Repetitive), "{weak}");
        }
    }
}
