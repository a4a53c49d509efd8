//! Staff accounts, sessions, CSRF and the login rate limit (issue 14, docs/staff.md "Accounts and
//! sessions"). Sans-IO: salts and session tokens come from entropy the driver reads, time is an
//! argument, and nothing here touches a socket, a file or the clock.
//!
//! Hashing and verifying a password is deliberately slow (argon2id, ~50-100 ms of CPU): the
//! driver runs [`hash_password`] and [`verify_password`] on a blocking thread, never on the
//! store's writer thread or an async worker.

use std::collections::HashMap;
use std::net::IpAddr;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use crate::practice::calls::hash_token;
use crate::practice::store::LoginWindow;
use crate::secret::{constant_time_eq, hex_lower};

/// Longest account name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Shortest password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password, in bytes: bounds the hashing work a login form can ask for.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Bytes of salt per hash (the PHC string format's recommendation).
pub const SALT_BYTES: usize = 16;
/// Random bytes of a session token.
pub const SESSION_TOKEN_BYTES: usize = 32;
/// Random bytes of a session's CSRF token.
pub const CSRF_BYTES: usize = 32;
/// Entropy the driver supplies for one new session: the token, then the CSRF token.
pub const SESSION_ENTROPY_BYTES: usize = SESSION_TOKEN_BYTES + CSRF_BYTES;
/// The session cookie's name over plain http (local testing).
pub const COOKIE_NAME: &str = "ignis_staff";
/// The session cookie's name when PUBLIC_URL is https. The `__Host-` prefix makes browsers
/// accept the cookie only with `Secure`, `Path=/` and no `Domain`, from this host over https
/// (RFC 6265bis §4.1.3.2): a sibling subdomain or a plain-http response cannot plant a
/// session of the attacker's (staff review, point 7; the first cookie of a name would win).
pub const SECURE_COOKIE_NAME: &str = "__Host-ignis_staff";

/// The session cookie's name for a site (`secure`: PUBLIC_URL is https).
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_COOKIE_NAME
    } else {
        COOKIE_NAME
    }
}
/// Longest `Cookie` header looked at (longer ones count as no session).
pub const MAX_COOKIE_HEADER_BYTES: usize = 8 * 1024;
/// Most `name=value` pairs looked at in the `Cookie` headers.
pub const MAX_COOKIE_PAIRS: usize = 64;
/// Failed logins per client address within [`LOGIN_WINDOW_SECS`] before further attempts
/// from it are refused unseen.
pub const LOGIN_MAX_FAILURES: u32 = 5;
/// Failed logins per account name, from all addresses together, within [`LOGIN_WINDOW_SECS`]
/// before the account is refused from addresses it has not logged in from. Above the
/// per-address limit, so one address alone cannot lock anyone out (each of its guesses counts
/// there first); it takes at least two addresses (an address's windows need not line up with
/// the account's: two of them can fall into one account window), usually
/// [`ACCOUNT_MAX_FAILURES`] / [`LOGIN_MAX_FAILURES`], and even then the staff at their usual
/// desk keep logging in (staff review, point 2).
pub const ACCOUNT_MAX_FAILURES: u32 = 20;
/// How long a successful login makes its address trusted for its account (exempt from the
/// account's lock-out, never from the address's own limit). Kept in the store, so every
/// replica knows the desk, and after a restart.
pub const TRUSTED_ADDRESS_SECS: i64 = 30 * 24 * 3600;
/// The rate limit's window, in seconds.
pub const LOGIN_WINDOW_SECS: i64 = 15 * 60;
/// Most addresses the limiter tracks at once (bounded memory whatever addresses an attacker
/// tries); beyond it, expired entries go first, then the oldest not locked out.
pub const MAX_LIMITER_ENTRIES: usize = 10_000;

/// A fixed argon2id PHC string with the default parameters of every stored hash, whose output
/// is arbitrary bytes (no known password produces it). An unknown account is verified against it, so a wrong name costs the same time as a
/// wrong password and gets the same answer.
pub const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$aWduaXMtc3RhZmYtZHVtbXk$g0Fx8mvCGVYzY7uZ1bTi5Xg2ok4x6GNxs5o3ByZ1z3M";

/// Why an account name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Empty or longer than [`MAX_NAME_CHARS`].
    Length,
    /// A character outside `a-z 0-9 . _ -`.
    Characters,
}

error_text!(NameError {
    Length => "the name must have 1 to 64 characters",
    Characters => "the name may contain only a-z, 0-9, '.', '_' and '-'",
});

/// Why a new password is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordError {
    /// Shorter than [`MIN_PASSWORD_CHARS`].
    TooShort,
    /// Longer than [`MAX_PASSWORD_BYTES`].
    TooLong,
    /// The two entries differ.
    Mismatch,
    /// Hashing failed (parameters or salt rejected by argon2).
    Hashing,
}

error_text!(PasswordError {
    TooShort => "the password must have at least 12 characters",
    TooLong => "the password must have at most 1024 bytes",
    Mismatch => "the passwords do not match",
    Hashing => "the password could not be hashed",
});

/// Checks an account name: 1..=[`MAX_NAME_CHARS`] of `a-z 0-9 . _ -`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(NameError::Length);
    }
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
    if !name.chars().all(ok) {
        return Err(NameError::Characters);
    }
    Ok(())
}

/// Checks a new password: at least [`MIN_PASSWORD_CHARS`] characters, at most
/// [`MAX_PASSWORD_BYTES`] bytes.
pub fn validate_password(password: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    Ok(())
}

/// The argon2id PHC string of `password` (argon2's default parameters: 19 MiB, 2 passes, one
/// lane, OWASP's recommendation) with `salt` from the driver's random source. Slow: run it on a
/// blocking thread.
pub fn hash_password(password: &str, salt: [u8; SALT_BYTES]) -> Result<String, PasswordError> {
    validate_password(password)?;
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hashing)
}

/// Whether `password` matches `phc`; with `None` (no such account) the password is checked
/// against [`DUMMY_PHC`] for the same cost and the answer is false. Over-long passwords are
/// refused before hashing. Slow: run it on a blocking thread.
pub fn verify_password(password: &str, phc: Option<&str>) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), phc.unwrap_or(DUMMY_PHC))
        .is_ok();
    ok && phc.is_some()
}

/// A new session's secrets: the cookie's token and the CSRF token, both hex.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionSecrets {
    /// The cookie value (only its SHA-256 is stored).
    pub token: String,
    /// The CSRF token (stored with the session, put into every form).
    pub csrf: String,
}

impl std::fmt::Debug for SessionSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSecrets(<redacted>)")
    }
}

impl SessionSecrets {
    /// Both tokens from [`SESSION_ENTROPY_BYTES`] the driver read from the OS random source.
    pub fn from_entropy(entropy: [u8; SESSION_ENTROPY_BYTES]) -> SessionSecrets {
        let (token, csrf) = entropy.split_at(SESSION_TOKEN_BYTES);
        SessionSecrets {
            token: hex_lower(token),
            csrf: hex_lower(csrf),
        }
    }

    /// What the store keeps of the token.
    pub fn token_hash(&self) -> [u8; 32] {
        session_hash(&self.token)
    }
}

/// SHA-256 of a session token's text.
pub fn session_hash(token: &str) -> [u8; 32] {
    hash_token(token.as_bytes())
}

/// The `Set-Cookie` value for a new session: `HttpOnly`, `SameSite=Strict`; when PUBLIC_URL
/// is https `__Host-` prefixed, `Secure` and `Path=/` (the prefix demands it), else scoped to
/// `/staff` (local testing). No `Max-Age`: it is set once at login, so it
/// would end an active session 8 h after the login; as a browser-session cookie it lives while
/// the browser runs and the server's 8 h idle expiry ends the session (docs/staff.md,
/// Sessions).
pub fn session_cookie(token: &str, secure: bool) -> String {
    if secure {
        format!("{SECURE_COOKIE_NAME}={token}; HttpOnly; SameSite=Strict; Path=/; Secure")
    } else {
        format!("{COOKIE_NAME}={token}; HttpOnly; SameSite=Strict; Path=/staff")
    }
}

/// The `Set-Cookie` value that removes the session cookie (logout, expired session).
pub fn clear_cookie(secure: bool) -> String {
    if secure {
        format!("{SECURE_COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure")
    } else {
        format!("{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/staff; Max-Age=0")
    }
}

/// The session token in the request's `Cookie` headers, if one is there and well-formed (64
/// lower-case hex digits). Headers over [`MAX_COOKIE_HEADER_BYTES`] and pairs past
/// [`MAX_COOKIE_PAIRS`] are not looked at.
pub fn session_token<'a>(
    cookie_headers: impl IntoIterator<Item = &'a [u8]>,
    secure: bool,
) -> Option<String> {
    let wanted = cookie_name(secure);
    let mut pairs = 0;
    for header in cookie_headers {
        if header.len() > MAX_COOKIE_HEADER_BYTES {
            return None;
        }
        let text = std::str::from_utf8(header).ok()?;
        for pair in text.split(';') {
            pairs += 1;
            if pairs > MAX_COOKIE_PAIRS {
                return None;
            }
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if name == wanted {
                let value = value.trim_matches('"');
                let well_formed = value.len() == SESSION_TOKEN_BYTES * 2
                    && value
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                return well_formed.then(|| value.to_owned());
            }
        }
    }
    None
}

/// Whether a POST carries the session's CSRF token, as form field `csrf` or header
/// `X-CSRF-Token` (either suffices), compared in constant time.
pub fn csrf_ok(expected: &str, form: &[(String, String)], header: Option<&[u8]>) -> bool {
    let field = form
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_bytes());
    [header, field]
        .into_iter()
        .flatten()
        .any(|given| constant_time_eq(given, expected.as_bytes()))
}

/// Whether a POST's `Origin` is absent or PUBLIC_URL's origin (`scheme://host[:port]`). A
/// browser sends `Origin` on every cross-site POST, so a foreign or `null` one is refused.
pub fn origin_ok(origin: Option<&[u8]>, public_origin: &str) -> bool {
    match origin {
        None => true,
        Some(o) => o.eq_ignore_ascii_case(public_origin.as_bytes()),
    }
}

/// The client's address for the rate limiter. Behind the shipped nginx (deploy/nginx.conf sets
/// `X-Real-IP $remote_addr`, replacing whatever the client sent) ignis's peer is nginx on
/// loopback or the private compose network, so `X-Real-IP` is taken from such a peer only;
/// from any other peer the header could be forged and the peer's own address counts.
///
/// On a dual-stack listener (`BIND=::`) IPv4 peers arrive as `::ffff:a.b.c.d`: both addresses
/// are made canonical first, or nginx on loopback would not be trusted and every login would
/// share nginx's one bucket.
pub fn client_address(peer: IpAddr, x_real_ip: Option<&[u8]>) -> IpAddr {
    let peer = peer.to_canonical();
    let trusted = match peer {
        IpAddr::V4(a) => a.is_loopback() || a.is_private(),
        IpAddr::V6(a) => a.is_loopback() || (a.segments()[0] & 0xfe00) == 0xfc00,
    };
    if !trusted {
        return peer;
    }
    x_real_ip
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .map_or(peer, |a| a.to_canonical())
}

/// What counts as one address: an IPv4 address (IPv4-mapped IPv6 included), an IPv6 /64 (one
/// host usually has the whole prefix). Also the form the store keeps trusted addresses in.
pub fn address_unit(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = a.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// The key of `account`'s window in the store: the name if valid, else one key that every
/// invalid name shares (such a name can never log in, and keying on it as typed, up to the
/// form's 16 KiB, would fill the table with large keys; `*` is never a valid name).
pub fn account_window_key(account: &str) -> &str {
    match validate_name(account) {
        Ok(()) => account,
        Err(_) => INVALID_NAME_WINDOW,
    }
}

/// The store's window for every invalid name ([`account_window_key`]).
pub const INVALID_NAME_WINDOW: &str = "*";

/// Whether an account whose window in the store (shared by every replica) is `window` refuses
/// an attempt from an address not trusted for it: [`ACCOUNT_MAX_FAILURES`] attempts before
/// this one in a window not over. `counted`: `window` already includes this attempt. A
/// successful login takes its attempt back (`Store::take_back_login_attempt`), so the count is
/// the failures and the checks under way. Returns the seconds until the window ends.
pub fn account_locked(window: &LoginWindow, now: i64, counted: bool) -> Option<i64> {
    let before = window.attempts - i64::from(counted);
    let end = window.started + LOGIN_WINDOW_SECS;
    (before >= i64::from(ACCOUNT_MAX_FAILURES) && now < end).then_some(end - now)
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: i64,
    failures: u32,
    /// The lock-out of this window was reported (audited) already.
    reported: bool,
}

impl Window {
    fn new(started: i64) -> Window {
        Window {
            started,
            failures: 0,
            reported: false,
        }
    }

    fn locked(&self, now: i64) -> bool {
        self.failures >= LOGIN_MAX_FAILURES && now < self.started + LOGIN_WINDOW_SECS
    }
}

/// A login attempt refused by the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Seconds until the window ends.
    pub retry_after: i64,
    /// This is the first attempt refused by a window's lock-out (audit it; later refusals in
    /// the same window are not audited, each audit row being an fsync on the store's writer).
    pub first: bool,
}

/// Failed logins per client address ([`LOGIN_MAX_FAILURES`]) within [`LOGIN_WINDOW_SECS`] lock
/// that address, for every account, until the window ends. In memory, per process (the
/// per-account limit and the trusted addresses are in the store: [`account_locked`]); it also
/// remembers which addresses the store refused for which account, so their next attempts are
/// refused here, without a check slot or a store job. At most [`MAX_LIMITER_ENTRIES`] of each.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    windows: HashMap<IpAddr, Window>,
    /// (account window key, address unit) → when the account's window in the store ends.
    refused: HashMap<(String, IpAddr), i64>,
}

impl LoginLimiter {
    /// An empty limiter.
    pub fn new() -> LoginLimiter {
        LoginLimiter::default()
    }

    /// Whether an attempt for `account` from `client` may go on at `now` (UTC seconds). A
    /// refusal notes that its lock-out was reported ([`Limited::first`] once per window; a
    /// refusal the store made first was reported there).
    pub fn check(&mut self, account: &str, client: IpAddr, now: i64) -> Result<(), Limited> {
        let unit = address_unit(client);
        if let Some(w) = self.windows.get_mut(&unit).filter(|w| w.locked(now)) {
            return Err(Limited {
                retry_after: w.started + LOGIN_WINDOW_SECS - now,
                first: !std::mem::replace(&mut w.reported, true),
            });
        }
        match self
            .refused
            .get(&(account_window_key(account).to_owned(), unit))
        {
            Some(&until) if now < until => Err(Limited {
                retry_after: until - now,
                first: false,
            }),
            _ => Ok(()),
        }
    }

    /// Remembers that the store refused `client` for `account` until `until` (its window's
    /// end): the address's next attempts at the account stop at [`LoginLimiter::check`].
    pub fn note_refused(&mut self, account: &str, client: IpAddr, until: i64, now: i64) {
        if self.refused.len() >= MAX_LIMITER_ENTRIES {
            self.refused.retain(|_, end| now < *end);
        }
        if self.refused.len() >= MAX_LIMITER_ENTRIES
            && let Some(first) = self
                .refused
                .iter()
                .min_by_key(|(_, end)| **end)
                .map(|(k, _)| k.clone())
        {
            self.refused.remove(&first);
        }
        let key = (account_window_key(account).to_owned(), address_unit(client));
        self.refused.insert(key, until);
    }

    /// Counts a failed attempt against the address; returns the start of the window it was
    /// counted in (for [`LoginLimiter::take_back`]).
    pub fn record_failure(&mut self, client: IpAddr, now: i64) -> i64 {
        let key = address_unit(client);
        if !self.windows.contains_key(&key) {
            self.make_room(now);
        }
        let w = self.windows.entry(key).or_insert(Window::new(now));
        if now >= w.started + LOGIN_WINDOW_SECS {
            *w = Window::new(now);
        }
        w.failures = w.failures.saturating_add(1);
        w.started
    }

    /// Takes back the one failure an attempt counted in the window that started at `started`
    /// when its check started: it succeeded, or it never reached the password check (refused
    /// by the account's window, or the store failed). Nothing once that window is over (the
    /// next one's count is not the attempt's). At the limit this lifts the address's lock-out
    /// (the attempt did not fail after all); the window's reported flag stays.
    pub fn take_back(&mut self, client: IpAddr, started: i64) {
        if let Some(w) = self
            .windows
            .get_mut(&address_unit(client))
            .filter(|w| w.started == started)
        {
            w.failures = w.failures.saturating_sub(1);
        }
    }

    /// Addresses tracked (tests).
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    fn make_room(&mut self, now: i64) {
        if self.windows.len() < MAX_LIMITER_ENTRIES {
            return;
        }
        self.windows
            .retain(|_, w| now < w.started + LOGIN_WINDOW_SECS);
        // Evict what frees a guess the least: an address not locked out, the oldest first
        // (the memory bound wins over a lock-out when every entry is one).
        if self.windows.len() >= MAX_LIMITER_ENTRIES
            && let Some(victim) = self
                .windows
                .iter()
                .min_by_key(|(_, w)| (w.locked(now), w.started))
                .map(|(k, _)| *k)
        {
            self.windows.remove(&victim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "correct horse battery";

    #[test]
    fn names_and_passwords_follow_the_rules() {
        assert!(validate_name("anna.m-2_b").is_ok());
        assert_eq!(validate_name(""), Err(NameError::Length));
        assert_eq!(validate_name(&"a".repeat(65)), Err(NameError::Length));
        assert!(validate_name(&"a".repeat(64)).is_ok());
        assert_eq!(validate_name("Anna"), Err(NameError::Characters));
        assert_eq!(validate_name("an na"), Err(NameError::Characters));
        assert_eq!(
            validate_password("elf zeichen"),
            Err(PasswordError::TooShort)
        );
        assert!(validate_password("zwölf zeiche").is_ok());
        assert_eq!(
            validate_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(PasswordError::TooLong)
        );
    }

    #[test]
    fn hash_then_verify_and_the_dummy_never_matches() {
        let phc = hash_password(PW, [9; SALT_BYTES]).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(!phc.contains(PW));
        assert!(verify_password(PW, Some(&phc)));
        assert!(!verify_password("correct horse battery!", Some(&phc)));
        assert!(!verify_password(PW, None));
        assert!(!verify_password(
            &"x".repeat(MAX_PASSWORD_BYTES + 1),
            Some(&phc)
        ));
        // The dummy has the same parameters as a real hash, so it costs the same.
        assert_eq!(DUMMY_PHC[..31], phc[..31]);
        assert!(argon2::PasswordHash::new(DUMMY_PHC).is_ok());
    }

    #[test]
    fn cookie_attributes_and_parsing() {
        let s = SessionSecrets::from_entropy([0xab; SESSION_ENTROPY_BYTES]);
        assert_eq!(s.token.len(), 64);
        let c = session_cookie(&s.token, true);
        assert!(c.starts_with("__Host-ignis_staff="));
        for attr in ["; HttpOnly", "; SameSite=Strict", "; Path=/;", "; Secure"] {
            assert!(c.contains(attr), "{attr} in {c}");
        }
        assert!(!c.contains("Max-Age") && !c.contains("Expires") && !c.contains("Domain"));
        let plain = session_cookie(&s.token, false);
        assert!(plain.starts_with("ignis_staff=") && plain.contains("; Path=/staff"));
        assert!(!plain.contains("Secure"));
        assert!(clear_cookie(true).starts_with("__Host-ignis_staff=;"));
        for secure in [true, false] {
            let name = cookie_name(secure);
            let header = format!("theme=dark; {name}={}; x=y", s.token);
            assert_eq!(
                session_token([header.as_bytes()], secure),
                Some(s.token.clone())
            );
            // The other site's name is not a session here: on https a plain `ignis_staff`
            // (plantable over http or from a sibling domain) is ignored.
            let other = format!("{}={}", cookie_name(!secure), s.token);
            assert_eq!(session_token([other.as_bytes()], secure), None);
            let short = format!("{name}=short");
            assert_eq!(session_token([short.as_bytes()], secure), None);
            let many = format!("{}{name}={}", "a=b; ".repeat(MAX_COOKIE_PAIRS), s.token);
            assert_eq!(session_token([many.as_bytes()], secure), None);
        }
        assert_eq!(session_token([&b"other=1"[..]], false), None);
    }

    #[test]
    fn csrf_and_origin() {
        let form = vec![("csrf".to_owned(), "abc".to_owned())];
        assert!(csrf_ok("abc", &form, None));
        assert!(csrf_ok("abc", &[], Some(b"abc")));
        assert!(!csrf_ok("abc", &[], None));
        assert!(!csrf_ok("abc", &[], Some(b"abd")));
        assert!(origin_ok(None, "https://x.example"));
        assert!(origin_ok(Some(b"https://x.example"), "https://x.example"));
        assert!(!origin_ok(
            Some(b"https://evil.example"),
            "https://x.example"
        ));
        assert!(!origin_ok(Some(b"null"), "https://x.example"));
    }

    #[test]
    fn forwarded_address_only_from_a_trusted_peer() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let public: IpAddr = "203.0.113.9".parse().unwrap();
        let real: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(client_address(lo, Some(b"198.51.100.7")), real);
        assert_eq!(client_address(public, Some(b"198.51.100.7")), public);
        assert_eq!(client_address(lo, Some(b"garbage")), lo);
        // Dual-stack listener: nginx on loopback arrives IPv4-mapped, and is still trusted.
        let mapped_lo: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let mapped_public: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(client_address(mapped_lo, Some(b"198.51.100.7")), real);
        assert_eq!(client_address(mapped_lo, None), lo);
        assert_eq!(client_address(mapped_public, Some(b"198.51.100.7")), public);
        assert_eq!(client_address(lo, Some(b"::ffff:198.51.100.7")), real);
    }

    fn addr(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0xc000_0200 + i))
    }

    #[test]
    fn limiter_per_address_and_take_back() {
        let (a, b) = (addr(1), addr(2));
        let mut l = LoginLimiter::new();
        for i in 0..LOGIN_MAX_FAILURES {
            assert!(l.check("anna", a, 100).is_ok());
            l.record_failure(a, 100 + i64::from(i));
        }
        // The address is locked (for any account), the others are not.
        let refused = l.check("anna", a, 110).unwrap_err();
        assert_eq!(refused.retry_after, 100 + LOGIN_WINDOW_SECS - 110);
        assert!(refused.first);
        assert!(
            !l.check("anna", a, 111).unwrap_err().first,
            "reported once a window"
        );
        assert!(l.check("anna", b, 110).is_ok());
        assert!(l.check("anna", a, 100 + LOGIN_WINDOW_SECS).is_ok());
        // A taken-back attempt does not count; an IPv6 /64 is one address.
        let started = l.record_failure(b, 200);
        l.take_back(b, started);
        for _ in 1..LOGIN_MAX_FAILURES {
            l.record_failure(b, 200);
        }
        assert!(l.check("anna", b, 201).is_ok());
        // A take-back from a window that is over leaves the new one's count alone.
        let next = 200 + LOGIN_WINDOW_SECS;
        for _ in 0..LOGIN_MAX_FAILURES {
            l.record_failure(b, next);
        }
        l.take_back(b, started);
        assert!(l.check("anna", b, next + 1).is_err());
        let v6 = |low: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, low));
        for i in 0..LOGIN_MAX_FAILURES {
            l.record_failure(v6(i as u16), 300);
        }
        assert!(l.check("anna", v6(999), 301).is_err());
        // The store refused an address for an account: its next attempts at that account stop
        // here until the account's window ends; other accounts and addresses go on.
        let c = addr(3);
        l.note_refused("anna", c, 500, 400);
        let r = l.check("anna", c, 401).unwrap_err();
        assert_eq!((r.retry_after, r.first), (99, false));
        assert!(l.check("ben", c, 401).is_ok());
        assert!(l.check("anna", addr(4), 401).is_ok());
        assert!(l.check("anna", c, 500).is_ok());
        for i in 0..(MAX_LIMITER_ENTRIES as u32 + 5) {
            l.note_refused("anna", addr(1000 + i), 900 + i64::from(i), 600);
        }
        assert!(l.refused.len() <= MAX_LIMITER_ENTRIES);
    }

    #[test]
    fn the_stores_account_window_locks_after_the_limit() {
        let max = i64::from(ACCOUNT_MAX_FAILURES);
        let w = |attempts| LoginWindow {
            key: "anna".into(),
            started: 100,
            attempts,
            reported: false,
        };
        assert_eq!(account_locked(&w(max - 1), 110, false), None);
        assert_eq!(account_locked(&w(max), 110, true), None);
        assert_eq!(
            account_locked(&w(max), 110, false),
            Some(100 + LOGIN_WINDOW_SECS - 110)
        );
        assert!(account_locked(&w(max + 1), 110, true).is_some());
        // The window over: let through.
        assert_eq!(
            account_locked(&w(max + 2), 100 + LOGIN_WINDOW_SECS, false),
            None
        );
        assert_eq!(account_window_key("anna"), "anna");
        assert_eq!(account_window_key("Nobody Valid"), INVALID_NAME_WINDOW);
        assert!(validate_name(INVALID_NAME_WINDOW).is_err());
        assert!(validate_name(crate::practice::store::LOGIN_OVERFLOW_KEY).is_err());
    }

    #[test]
    fn limiter_memory_is_bounded_and_keeps_lock_outs_first() {
        let mut l = LoginLimiter::new();
        let home: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..LOGIN_MAX_FAILURES {
            l.record_failure(home, 0);
        }
        for i in 0..(MAX_LIMITER_ENTRIES as u32 + 50) {
            l.record_failure(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)), 1);
        }
        assert!(l.len() <= MAX_LIMITER_ENTRIES);
        assert!(
            l.check("anna", home, 2).is_err(),
            "the locked address stays locked"
        );
    }
}
