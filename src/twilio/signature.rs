//! `X-Twilio-Signature` validation (docs/twilio.md §4).
//!
//! The signed string is the URL Twilio requested, built from the configured public origin plus
//! the raw request-target (never the `Host` header, §4.2), followed for form POSTs by every
//! parameter name and value, byte-sorted. HMAC-SHA1 with the auth token, base64, compared in
//! constant time. Port variants and the WebSocket trailing-slash variant are tried as the
//! official SDKs do (§4.3, §1.1); a secondary token is accepted during rotation.

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::secret::{constant_time_eq, hex_lower};

/// Length of an HMAC-SHA1 digest.
const DIGEST_LEN: usize = 20;
/// Longest `X-Twilio-Signature` header considered (base64 of 20 bytes is 28 characters).
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 64;

/// An auth token. Its `Debug` output is redacted so it can never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(String);

impl AuthToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> AuthToken {
        AuthToken(token.into())
    }

    /// The raw token, for signing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken([redacted])")
    }
}

/// The tokens a signature may be made with: the primary, and a secondary during rotation.
#[derive(Debug, Clone)]
pub struct SigningKeys {
    primary: AuthToken,
    secondary: Option<AuthToken>,
}

impl SigningKeys {
    /// Keys from the primary token and an optional secondary one.
    pub fn new(primary: AuthToken, secondary: Option<AuthToken>) -> SigningKeys {
        SigningKeys { primary, secondary }
    }

    fn tokens(&self) -> impl Iterator<Item = &AuthToken> {
        std::iter::once(&self.primary).chain(self.secondary.as_ref())
    }

    /// Validates a form-encoded webhook (POST) or a GET webhook (`params` empty: the query is
    /// already part of `url`).
    pub fn validate_form(&self, url: &str, params: &[(String, String)], header: &[u8]) -> bool {
        let Some(given) = decode_header(header) else {
            return false;
        };
        let suffix = params_suffix(params);
        self.any_match(&url_variants(url), &suffix, &given)
    }

    /// Validates a webhook with a JSON body: `url` must carry `bodySHA256` (the lowercase hex
    /// SHA-256 of `body`) and the signature covers the URL alone (§4.1).
    pub fn validate_json(&self, url: &str, body: &[u8], header: &[u8]) -> bool {
        let Some(given) = decode_header(header) else {
            return false;
        };
        let Some(claimed) = query_param(url, "bodySHA256") else {
            return false;
        };
        let actual = hex_lower(&Sha256::digest(body));
        if !constant_time_eq(claimed.as_bytes(), actual.as_bytes()) {
            return false;
        }
        self.any_match(&url_variants(url), "", &given)
    }

    /// Validates the Media Streams WebSocket handshake: signed over the `wss://` URL with no
    /// parameters; Twilio's docs also suggest trying a trailing `/` (§1.1, §4.2).
    pub fn validate_websocket(&self, url: &str, header: &[u8]) -> bool {
        let Some(given) = decode_header(header) else {
            return false;
        };
        let mut variants = url_variants(url);
        let slashed = with_trailing_slash(url);
        variants.extend(url_variants(&slashed));
        self.any_match(&variants, "", &given)
    }

    /// Checks every (token, URL variant) pair without returning early, so the time taken does not
    /// depend on which variant matched.
    fn any_match(&self, urls: &[String], suffix: &str, given: &[u8; DIGEST_LEN]) -> bool {
        let mut ok = false;
        for token in self.tokens() {
            for url in urls {
                let digest = sign_raw(token.expose().as_bytes(), url, suffix);
                ok |= constant_time_eq(&digest, given);
            }
        }
        ok
    }
}

/// Computes the base64 signature Twilio would send for `url` and `params` with `token`.
/// Used by tests, the simulated caller and the fuzz targets.
pub fn sign(token: &str, url: &str, params: &[(String, String)]) -> String {
    let digest = sign_raw(token.as_bytes(), url, &params_suffix(params));
    base64::engine::general_purpose::STANDARD.encode(digest)
}

fn sign_raw(token: &[u8], url: &str, suffix: &str) -> [u8; DIGEST_LEN] {
    // HMAC accepts keys of any length; the error arm is unreachable but handled anyway.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(token) else {
        return [0; DIGEST_LEN];
    };
    mac.update(url.as_bytes());
    mac.update(suffix.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Parameter names byte-sorted; for a repeated name its distinct values sorted, each appended as
/// `name` + `value` (twilio-python / twilio-node behaviour, vector S7).
fn params_suffix(params: &[(String, String)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    for (k, v) in sorted {
        out.push_str(k);
        out.push_str(v);
    }
    out
}

fn decode_header(header: &[u8]) -> Option<[u8; DIGEST_LEN]> {
    if header.len() > MAX_SIGNATURE_HEADER_BYTES {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(header.trim_ascii())
        .ok()?;
    raw.try_into().ok()
}

/// The parts of an absolute URL the variants need.
struct UrlParts<'a> {
    scheme: &'a str,
    host: &'a str,
    rest: &'a str,
}

fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, after) = url.split_once("://")?;
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(authority_end);
    // Twilio drops userinfo before signing (§4.4 caveats).
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // A bracketed IPv6 literal has colons of its own.
    let port_sep = match hostport.rfind(']') {
        Some(end) => hostport[end..].find(':').map(|i| end + i),
        None => hostport.rfind(':'),
    };
    let host = match port_sep {
        Some(i) => &hostport[..i],
        None => hostport,
    };
    Some(UrlParts { scheme, host, rest })
}

/// The URL as given, without its port, and with the scheme's default port added (443 for
/// `https`/`wss`, 80 otherwise), as the SDKs try them (§4.3).
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some(p) = split_url(url) else {
        return out;
    };
    let default_port = match p.scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => "443",
        _ => "80",
    };
    let without = format!("{}://{}{}", p.scheme, p.host, p.rest);
    let with = format!("{}://{}:{}{}", p.scheme, p.host, default_port, p.rest);
    for v in [without, with] {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn with_trailing_slash(url: &str) -> String {
    match url.find(['?', '#']) {
        Some(i) if !url[..i].ends_with('/') => format!("{}/{}", &url[..i], &url[i..]),
        None if !url.ends_with('/') => format!("{url}/"),
        _ => url.to_owned(),
    }
}

fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    //! Vectors from docs/twilio.md §4.4 (the official SDK suites, re-verified in the spec).
    use super::*;

    const TOKEN: &str = "12345";
    const U: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn p5() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn keys() -> SigningKeys {
        SigningKeys::new(AuthToken::new(TOKEN), None)
    }

    #[test]
    fn s1_basic_and_d1_docs_example() {
        assert_eq!(sign(TOKEN, U, &p5()), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert!(keys().validate_form(U, &p5(), b"RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        let d1: Vec<(String, String)> = [
            ("Digits", "1234"),
            ("To", "+18005551212"),
            ("From", "+14158675310"),
            ("Caller", "+14158675310"),
            ("CallSid", "CA1234567890ABCDE"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            sign(TOKEN, "https://example.com/myapp.php?foo=1&bar=2", &d1),
            "L/OH5YylLD5NRKLltdqwSvS0BnU="
        );
    }

    #[test]
    fn s2_to_s6_port_variants() {
        // S2: signed with :443, validated against the port-less URL.
        assert!(keys().validate_form(U, &p5(), b"kvajT1Ptam85bY51eRf/AJRuM3w="));
        // S3: signed with :80, validated against the http URL without port.
        assert!(keys().validate_form(
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            &p5(),
            b"0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
        // S4: custom port on http kept.
        assert!(keys().validate_form(
            "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
            &p5(),
            b"Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        ));
        // S5: custom port on https, signature made without it.
        let with_port = "https://mycompany.com:1234/myapp.php?foo=1&bar=2";
        assert!(keys().validate_form(with_port, &p5(), b"RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        // S6: custom port on https, signature made with it.
        assert!(keys().validate_form(with_port, &p5(), b"CYn1h0gLBdNxDGkKJg6hYohgeD8="));
    }

    #[test]
    fn s7_s8_repeated_params() {
        let s7: Vec<(String, String)> = [
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(keys().validate_form(U, &s7, b"IK+Dwps556ElfBT0I3Rgjkr1wJU="));
        let s8: Vec<(String, String)> = [
            ("MessagingBinding.Address", "+1415xxxxxxx"),
            ("MessagingBinding.Address", "+1325xxxxxxx"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(keys().validate_form(U, &s8, b"83O6e2vORAoJHUNzJjDWN1jz+BA="));
    }

    #[test]
    fn b0_to_b3_body_hash() {
        let body = br#"{"property": "value", "boolean": true}"#;
        let hash = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        assert_eq!(hex_lower(&Sha256::digest(body)), hash);
        let b1 = format!("{U}&bodySHA256={hash}");
        assert!(keys().validate_json(&b1, body, b"a9nBmqA0ju/hNViExpshrM61xv4="));
        let b2 = format!("https://mycompany.com/myapp.php?bodySHA256={hash}");
        assert!(keys().validate_json(&b2, body, b"y77kIzt2vzLz71DgmJGsen2scGs="));
        // A body that does not match its hash fails even with a valid URL signature.
        assert!(!keys().validate_json(&b2, b"{}", b"y77kIzt2vzLz71DgmJGsen2scGs="));
        // B3: empty object, only valid through the :443 variant.
        let empty = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        let b3 = format!("{U}&bodySHA256={empty}");
        assert!(keys().validate_json(&b3, b"{}", b"Ldidvp12m26NI7eqEvxnEpkd9Hc="));
    }

    #[test]
    fn j_vectors_and_encoded_query() {
        assert!(keys().validate_form(U, &[], b"zYQTYrRWXE7LtzbG4PfP7/bkkGo="));
        assert!(keys().validate_form(
            "https://mycompany.com/myapp.php",
            &p5(),
            b"1xaxFBvyzXYvWplzNOSs28HWO94="
        ));
        assert!(keys().validate_form(
            "https://mycompany.com/myapp.php?foo=1&bar=2&type=thiswontbeusedinthesignaturegeneratorandsoshouldbeignored",
            &p5(),
            b"hYkNsTBttoNGkyCS0p+wWmQoRTg="
        ));
        assert!(keys().validate_form(
            "https://mycompany.com/myapp.php?foo=hello%20world&bar=test%2Bvalue",
            &p5(),
            b"er2tvAP1Wx+iuTTE2BPgvEaN1cs="
        ));
        // N-SQ: the URL is signed as requested (percent-encoded quote), never re-encoded.
        assert!(keys().validate_form(
            &format!("{U}&Body=It%27s+amazing"),
            &p5(),
            b"TfZzewPq8wqrGlMfyAud8+/IvJ0="
        ));
    }

    #[test]
    fn websocket_variants() {
        // Illustrative wss values from the spec (token 12345).
        let k = keys();
        assert!(k.validate_websocket("wss://example.com/media", b"7PR3qMkpDyEJtMrVOY/LDyNq8J8="));
        assert!(k.validate_websocket("wss://example.com/media", b"T+WBXwUXC0/CyoZ1DA+p9ilZORs="));
        assert!(k.validate_websocket("wss://example.com/media", b"zyyJQiPZXIGCLy3HYdHEfry0yDg="));
        assert!(!k.validate_websocket("wss://example.com/other", b"7PR3qMkpDyEJtMrVOY/LDyNq8J8="));
    }

    #[test]
    fn rejects_tampering_wrong_token_and_garbage() {
        let mut tampered = p5();
        tampered[2].1 = "9999".into();
        assert!(!keys().validate_form(U, &tampered, b"RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        let other = SigningKeys::new(AuthToken::new("other"), None);
        assert!(!other.validate_form(U, &p5(), b"RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(!keys().validate_form(U, &p5(), b""));
        assert!(!keys().validate_form(U, &p5(), b"not base64!"));
        assert!(!keys().validate_form(U, &p5(), &[b'A'; 200]));
    }

    #[test]
    fn secondary_token_accepted_during_rotation() {
        let rotating = SigningKeys::new(AuthToken::new("new-primary"), Some(AuthToken::new(TOKEN)));
        assert!(rotating.validate_form(U, &p5(), b"RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert_eq!(format!("{rotating:?}").matches("redacted").count(), 2);
    }

    #[test]
    fn url_splitting() {
        assert_eq!(
            url_variants("https://u:p@h.example:8443/x?y#z"),
            vec![
                "https://u:p@h.example:8443/x?y#z".to_string(),
                "https://h.example/x?y#z".to_string(),
                "https://h.example:443/x?y#z".to_string()
            ]
        );
        assert_eq!(url_variants("wss://[::1]:9/a")[1], "wss://[::1]/a");
        assert_eq!(with_trailing_slash("wss://h/a?b"), "wss://h/a/?b");
        assert_eq!(with_trailing_slash("wss://h/a/"), "wss://h/a/");
        assert_eq!(url_variants("garbage"), vec!["garbage".to_string()]);
    }
}
