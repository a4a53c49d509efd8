//! Small helpers for handling secrets and digests: one constant-time comparison and one
//! lower-case hex encoder, shared by the Twilio signature check, the practice's bearer and call
//! tokens, and the per-call token minting.
//!
//! Comparisons of anything a peer could use to guess a secret byte by byte (signatures, token
//! digests, phone numbers on file) go through [`constant_time_eq`]; hex is [`hex_lower`]
//! everywhere, so a digest printed in one place matches one printed in another.

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
}
