//! Twilio REST "update a call" (docs/twilio.md §5.2), used to transfer a live call to staff: the new
//! TwiML replaces the running `<Connect><Stream>`. Sans-IO: request bytes out, status in.

use std::fmt;

use base64::Engine as _;

use crate::http::client::{self, ResponseError};
use crate::http::url::{Endpoint, UrlError};

/// Largest response read from Twilio's REST API.
pub const MAX_REST_RESPONSE_BYTES: usize = 64 * 1024;

/// Why the call-update request could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateCallError {
    /// `TWILIO_API_BASE` is not a usable URL.
    BaseUrl(UrlError),
    /// The AccountSid or CallSid is empty or not alphanumeric (it goes into the path).
    BadSid,
}

impl fmt::Display for UpdateCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateCallError::BaseUrl(e) => write!(f, "Twilio API base: {e}"),
            UpdateCallError::BadSid => {
                f.write_str("Twilio AccountSid or CallSid is not alphanumeric")
            }
        }
    }
}

impl std::error::Error for UpdateCallError {}

/// `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with `Twiml=…`, HTTP Basic
/// `AccountSid:AuthToken` (§5).
pub fn update_call_request(
    api_base: &str,
    account_sid: &str,
    auth_token: &str,
    call_sid: &str,
    twiml: &str,
) -> Result<(Endpoint, Vec<u8>), UpdateCallError> {
    let safe = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if !safe(account_sid) || !safe(call_sid) {
        return Err(UpdateCallError::BadSid);
    }
    let mut ep = Endpoint::parse(api_base).map_err(UpdateCallError::BaseUrl)?;
    ep.target = format!("/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json");
    let body = format!("Twiml={}", crate::http::form::encode(twiml));
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{account_sid}:{auth_token}"));
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         User-Agent: ignis/{}\r\nConnection: close\r\n\r\n",
        ep.target,
        ep.host_header(),
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body.as_bytes());
    Ok((ep, req))
}

/// The response status once the head is complete (the body is not needed).
pub fn parse_status(buf: &[u8], eof: bool) -> Result<Option<u16>, ResponseError> {
    client::parse_status(buf, eof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_update() {
        let (ep, req) = update_call_request(
            "https://api.twilio.com",
            "AC123",
            "tok",
            "CA9",
            "<Response><Dial>+49</Dial></Response>",
        )
        .unwrap();
        assert!(ep.tls);
        let req = String::from_utf8(req).unwrap();
        assert!(req.starts_with("POST /2010-04-01/Accounts/AC123/Calls/CA9.json HTTP/1.1\r\n"));
        assert!(req.contains("Authorization: Basic QUMxMjM6dG9r\r\n"));
        assert!(req.ends_with("Twiml=%3CResponse%3E%3CDial%3E%2B49%3C%2FDial%3E%3C%2FResponse%3E"));
        assert_eq!(
            update_call_request("https://x", "AC/../", "t", "CA1", ""),
            Err(UpdateCallError::BadSid)
        );
        assert_eq!(
            parse_status(b"HTTP/1.1 200 OK\r\n\r\n", false),
            Ok(Some(200))
        );
        assert_eq!(parse_status(b"HTTP/1.1 404 Not", false), Ok(None));
    }
}
