//! Twilio's REST API (the parts ignis uses) and its Monitor API, as one sans-IO state: one
//! account, its incoming phone numbers, live calls and Monitor alerts, and a log of every write.
//! [`TwilioApi::handle`] answers one request (head, body, the time) the way Twilio documents it
//! (docs/twilio.md §9–§11; twilio/twilio-oai `twilio_api_v2010.json`, `twilio_monitor_v1.json`):
//! HTTP Basic with the account SID and auth token or an API key; 401/20003 without them or for
//! another account; 404/20404 for an unknown SID; 405 for a method the resource lacks; 400 for
//! an invalid parameter; unknown parameters ignored. The socket is `driver::sim::twilio_api`.
//!
//! Deviations, on purpose: buying, deleting and listing calls are not stood in for (405); error
//! codes marked [unverified] in docs/twilio.md §9.4 are the closest documented ones.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::http::form;
use crate::http::url::encode_query_value;
use crate::http::{RequestHead, Response};
use crate::secret::constant_time_eq;

/// The REST API's path prefix.
const REST_PREFIX: &str = "/2010-04-01/Accounts/";
/// Default and largest `PageSize` (both lists, docs/twilio.md §9.1).
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest `PageSize` Twilio accepts.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Longest `FriendlyName` Twilio accepts.
pub const MAX_FRIENDLY_NAME_CHARS: usize = 64;

/// Twilio's "Authenticate" error.
pub const CODE_AUTHENTICATE: u32 = 20003;
/// "Method not allowed" [unverified: code].
pub const CODE_METHOD_NOT_ALLOWED: u32 = 20004;
/// "The requested resource was not found".
pub const CODE_NOT_FOUND: u32 = 20404;
/// An invalid parameter value (page size, date) [unverified: code].
pub const CODE_INVALID_PARAMETER: u32 = 20001;
/// "Url is not a valid URL" (seen for `Url` of a call update).
pub const CODE_INVALID_URL: u32 = 21205;
/// An HTTP method parameter other than GET or POST [unverified: code].
pub const CODE_INVALID_METHOD: u32 = 21206;

/// An incoming phone number (the fields of the v2010 `incoming_phone_number` schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber {
    /// `PN…`.
    pub sid: String,
    /// E.164.
    pub phone_number: String,
    /// Up to 64 characters.
    pub friendly_name: String,
    /// `None` is JSON `null`.
    pub voice_url: Option<String>,
    /// `GET` or `POST`.
    pub voice_method: String,
    /// The fallback TwiML URL.
    pub voice_fallback_url: Option<String>,
    /// `GET` or `POST`.
    pub voice_fallback_method: String,
    /// The call status callback.
    pub status_callback: Option<String>,
    /// `GET` or `POST`.
    pub status_callback_method: String,
    /// `AP…`; clears `trunk_sid` when set, and the other way round.
    pub voice_application_sid: Option<String>,
    /// `TK…`.
    pub trunk_sid: Option<String>,
    /// `voice` or `fax`.
    pub voice_receive_mode: String,
    /// `capabilities.voice`.
    pub voice: bool,
    /// `capabilities.sms`.
    pub sms: bool,
    /// Unix seconds.
    pub date_created: i64,
    /// Unix seconds.
    pub date_updated: i64,
}

impl PhoneNumber {
    /// A voice-capable number as bought: nothing configured, methods POST.
    pub fn new(sid: &str, e164: &str) -> PhoneNumber {
        PhoneNumber {
            sid: sid.to_owned(),
            phone_number: e164.to_owned(),
            friendly_name: e164.to_owned(),
            voice_url: None,
            voice_method: "POST".into(),
            voice_fallback_url: None,
            voice_fallback_method: "POST".into(),
            status_callback: None,
            status_callback_method: "POST".into(),
            voice_application_sid: None,
            trunk_sid: None,
            voice_receive_mode: "voice".into(),
            voice: true,
            sms: true,
            date_created: 1_700_000_000,
            date_updated: 1_700_000_000,
        }
    }

    fn to_json(&self, account_sid: &str) -> Value {
        json!({
            "account_sid": account_sid,
            "address_requirements": "none",
            "address_sid": null,
            "api_version": "2010-04-01",
            "beta": false,
            "bundle_sid": null,
            "capabilities": {"voice": self.voice, "sms": self.sms, "mms": false, "fax": false},
            "date_created": rfc2822(self.date_created),
            "date_updated": rfc2822(self.date_updated),
            "emergency_address_sid": null,
            "emergency_address_status": "unregistered",
            "emergency_status": "Inactive",
            "friendly_name": self.friendly_name,
            "identity_sid": null,
            "origin": "twilio",
            "phone_number": self.phone_number,
            "sid": self.sid,
            "sms_application_sid": "",
            "sms_fallback_method": "POST",
            "sms_fallback_url": "",
            "sms_method": "POST",
            "sms_url": "",
            "status": "in-use",
            "status_callback": self.status_callback.clone().unwrap_or_default(),
            "status_callback_method": self.status_callback_method,
            "trunk_sid": self.trunk_sid,
            "type": "local",
            "uri": format!("{REST_PREFIX}{account_sid}/IncomingPhoneNumbers/{}.json", self.sid),
            "voice_application_sid": self.voice_application_sid.clone().unwrap_or_default(),
            "voice_caller_id_lookup": false,
            "voice_fallback_method": self.voice_fallback_method,
            "voice_fallback_url": self.voice_fallback_url,
            "voice_method": self.voice_method,
            "voice_receive_mode": self.voice_receive_mode,
            "voice_url": self.voice_url,
        })
    }
}

/// A Monitor alert (the v1 `alert` and `alert-instance` schemas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// `NO…`.
    pub sid: String,
    /// Twilio's error code, e.g. `11200`.
    pub error_code: String,
    /// `error`, `warning`, `notice` or `debug`.
    pub log_level: String,
    /// The alert's text.
    pub alert_text: String,
    /// The URL Twilio requested.
    pub request_url: String,
    /// The call it happened on (`CA…`).
    pub resource_sid: String,
    /// Unix seconds.
    pub date_created: i64,
    /// Only in the single-alert answer.
    pub response_body: String,
}

impl Alert {
    /// An alert of `code` at `date_created` for `request_url` on call `resource_sid`.
    pub fn new(
        sid: &str,
        code: &str,
        level: &str,
        request_url: &str,
        resource_sid: &str,
        at: i64,
    ) -> Alert {
        Alert {
            sid: sid.to_owned(),
            error_code: code.to_owned(),
            log_level: level.to_owned(),
            alert_text: format!("Msg=error {code}"),
            request_url: request_url.to_owned(),
            resource_sid: resource_sid.to_owned(),
            date_created: at,
            response_body: String::new(),
        }
    }

    fn to_json(&self, account_sid: &str, base: &str, instance: bool) -> Value {
        let date = crate::http::date::rfc3339(self.date_created);
        let mut v = json!({
            "account_sid": account_sid,
            "alert_text": self.alert_text,
            "api_version": "2010-04-01",
            "date_created": date,
            "date_generated": date,
            "date_updated": date,
            "error_code": self.error_code,
            "log_level": self.log_level,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.error_code),
            "request_method": "POST",
            "request_url": self.request_url,
            "resource_sid": self.resource_sid,
            "service_sid": null,
            "sid": self.sid,
            "url": format!("{base}/v1/Alerts/{}", self.sid),
        });
        if instance && let Some(obj) = v.as_object_mut() {
            obj.insert("request_variables".into(), json!(""));
            obj.insert("request_headers".into(), json!(""));
            obj.insert("response_body".into(), json!(self.response_body));
            obj.insert("response_headers".into(), json!(""));
        }
        v
    }
}

/// A write the API accepted, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// `POST …/IncomingPhoneNumbers/{sid}.json` with exactly these form fields.
    Number {
        /// The number's SID.
        sid: String,
        /// The fields as received, in order.
        fields: Vec<(String, String)>,
    },
    /// `POST …/Calls/{sid}.json` with exactly these form fields.
    Call {
        /// The call's SID.
        sid: String,
        /// The fields as received, in order.
        fields: Vec<(String, String)>,
    },
}

/// The account and everything in it.
#[derive(Debug, Clone)]
pub struct TwilioApi {
    /// `AC…`.
    pub account_sid: String,
    /// The auth token.
    pub auth_token: String,
    /// API keys: `SK…` and secret.
    pub api_keys: Vec<(String, String)>,
    /// The numbers, in the order lists show them.
    pub numbers: Vec<PhoneNumber>,
    /// Calls that can be updated (`CA…`), and their status.
    pub calls: Vec<(String, String)>,
    /// Monitor alerts.
    pub alerts: Vec<Alert>,
    /// Every accepted write.
    pub writes: Vec<Write>,
    /// Every request, as method and target, in order.
    pub requests: Vec<(String, String)>,
    /// The origin Monitor's absolute URLs start with (the server's own).
    pub base: String,
}

type Answer = Result<Value, (u16, u32, String)>;

impl TwilioApi {
    /// An empty account.
    pub fn new(account_sid: &str, auth_token: &str) -> TwilioApi {
        TwilioApi {
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            api_keys: Vec::new(),
            numbers: Vec::new(),
            calls: Vec::new(),
            alerts: Vec::new(),
            writes: Vec::new(),
            requests: Vec::new(),
            base: "https://monitor.twilio.com".to_owned(),
        }
    }

    /// The number with this E.164, if any.
    pub fn number(&self, e164: &str) -> Option<&PhoneNumber> {
        self.numbers.iter().find(|n| n.phone_number == e164)
    }

    /// Answers one request at `now` (unix seconds).
    pub fn handle(&mut self, head: &RequestHead, body: &[u8], now: i64) -> Response {
        self.requests
            .push((head.method.as_str().to_owned(), head.target.clone()));
        let answer = match self.authenticate(head) {
            None => Err(auth_error()),
            Some(()) => self.route(head, body, now),
        };
        match answer {
            Ok(v) => Response::json(200, v.to_string()),
            Err((status, code, message)) => error_response(status, code, &message),
        }
    }

    /// Whether the Basic credentials belong to this account (an API key or the auth token).
    fn authenticate(&self, head: &RequestHead) -> Option<()> {
        let value = std::str::from_utf8(head.header("authorization")?).ok()?;
        let encoded = value.strip_prefix("Basic ")?.trim();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, pass) = decoded.split_once(':')?;
        let ok = if user == self.account_sid {
            constant_time_eq(pass.as_bytes(), self.auth_token.as_bytes())
        } else {
            self.api_keys.iter().any(|(sid, secret)| {
                sid == user && constant_time_eq(pass.as_bytes(), secret.as_bytes())
            })
        };
        ok.then_some(())
    }

    fn route(&mut self, head: &RequestHead, body: &[u8], now: i64) -> Answer {
        let path = head.path().to_owned();
        let query = form::decode(head.query().as_bytes())
            .map_err(|_| (400, CODE_INVALID_PARAMETER, "Invalid query".to_owned()))?;
        let method = head.method.as_str();
        if let Some(rest) = path.strip_prefix("/v1/Alerts") {
            return match (method, rest) {
                ("GET", "") => self.list_alerts(&query),
                ("GET", sid) if sid.starts_with('/') => self.fetch_alert(&sid[1..]),
                (_, "") => Err(method_not_allowed()),
                _ => Err(not_found(&path)),
            };
        }
        let Some(rest) = path.strip_prefix(REST_PREFIX) else {
            return Err(not_found(&path));
        };
        let (account, resource) = rest.split_once('/').unwrap_or((rest, ""));
        // Credentials of one account never reach another (docs/twilio.md §9.4).
        if account != self.account_sid {
            return Err(auth_error());
        }
        let fields = || {
            form::decode(body)
                .map_err(|_| (400, CODE_INVALID_PARAMETER, "Invalid form body".to_owned()))
        };
        if resource == "IncomingPhoneNumbers.json" {
            return match method {
                "GET" => self.list_numbers(&query),
                _ => Err(method_not_allowed()),
            };
        }
        if let Some(sid) = json_sid(resource, "IncomingPhoneNumbers/") {
            let Some(i) = self.numbers.iter().position(|n| n.sid == sid) else {
                return Err(not_found(&path));
            };
            return match method {
                "GET" => Ok(self.numbers[i].to_json(&self.account_sid)),
                "POST" => self.update_number(i, fields()?, now),
                _ => Err(method_not_allowed()),
            };
        }
        if let Some(sid) = json_sid(resource, "Calls/") {
            let Some(i) = self.calls.iter().position(|(c, _)| c == sid) else {
                return Err(not_found(&path));
            };
            return match method {
                "POST" => self.update_call(i, fields()?),
                _ => Err(method_not_allowed()),
            };
        }
        Err(not_found(&path))
    }

    fn list_numbers(&self, query: &[(String, String)]) -> Answer {
        let (page, size) = paging(query)?;
        let filter = form::get(query, "PhoneNumber").unwrap_or("");
        let matching: Vec<&PhoneNumber> = self
            .numbers
            .iter()
            .filter(|n| matches_partially(&n.phone_number, filter))
            .collect();
        let list = format!(
            "{REST_PREFIX}{}/IncomingPhoneNumbers.json",
            self.account_sid
        );
        let mut q = String::new();
        if !filter.is_empty() {
            q.push_str(&format!("PhoneNumber={}&", encode_query_value(filter)));
        }
        let uri = |p: usize| format!("{list}?{q}PageSize={size}&Page={p}");
        let start = page * size;
        let items: Vec<Value> = matching
            .iter()
            .skip(start)
            .take(size)
            .map(|n| n.to_json(&self.account_sid))
            .collect();
        let end = start + items.len().saturating_sub(1);
        let last = start + size >= matching.len();
        let next = (!last).then(|| {
            let token = matching
                .get(start + size - 1)
                .map_or("", |n| n.sid.as_str());
            format!("{}&PageToken=PA{token}", uri(page + 1))
        });
        Ok(json!({
            "end": end,
            "first_page_uri": uri(0),
            "incoming_phone_numbers": items,
            "next_page_uri": next,
            "page": page,
            "page_size": size,
            "previous_page_uri": (page > 0).then(|| uri(page - 1)),
            "start": start,
            "uri": uri(page),
        }))
    }

    fn update_number(&mut self, i: usize, fields: Vec<(String, String)>, now: i64) -> Answer {
        let mut n = self.numbers[i].clone();
        for (name, value) in &fields {
            let url = |v: &str| -> Result<Option<String>, (u16, u32, String)> {
                if v.is_empty() {
                    return Ok(None);
                }
                if !(v.starts_with("https://") || v.starts_with("http://"))
                    || v.contains(char::is_whitespace)
                {
                    return Err((
                        400,
                        CODE_INVALID_URL,
                        format!("{name} is not a valid URL: {v}"),
                    ));
                }
                Ok(Some(v.to_owned()))
            };
            match name.as_str() {
                "VoiceUrl" => n.voice_url = url(value)?,
                "VoiceFallbackUrl" => n.voice_fallback_url = url(value)?,
                "StatusCallback" => n.status_callback = url(value)?,
                "VoiceMethod" => n.voice_method = http_method(name, value)?,
                "VoiceFallbackMethod" => n.voice_fallback_method = http_method(name, value)?,
                "StatusCallbackMethod" => n.status_callback_method = http_method(name, value)?,
                "VoiceApplicationSid" => {
                    n.voice_application_sid = sid_param(name, value, "AP")?;
                    if n.voice_application_sid.is_some() {
                        n.trunk_sid = None;
                    }
                }
                "TrunkSid" => {
                    n.trunk_sid = sid_param(name, value, "TK")?;
                    if n.trunk_sid.is_some() {
                        n.voice_application_sid = None;
                    }
                }
                "VoiceReceiveMode" if value == "voice" || value == "fax" => {
                    n.voice_receive_mode = value.clone()
                }
                "VoiceReceiveMode" => return Err(invalid(name, value)),
                "FriendlyName" if value.chars().count() <= MAX_FRIENDLY_NAME_CHARS => {
                    n.friendly_name = value.clone()
                }
                "FriendlyName" => return Err(invalid(name, value)),
                _ => {} // unknown parameters are ignored
            }
        }
        n.date_updated = now;
        self.numbers[i] = n;
        let sid = self.numbers[i].sid.clone();
        self.writes.push(Write::Number { sid, fields });
        Ok(self.numbers[i].to_json(&self.account_sid))
    }

    fn update_call(&mut self, i: usize, fields: Vec<(String, String)>) -> Answer {
        let get = |k| form::get(&fields, k);
        if get("Twiml").is_some() && get("Url").is_some() {
            return Err((
                400,
                CODE_INVALID_PARAMETER,
                "Twiml and Url are mutually exclusive".into(),
            ));
        }
        if let Some(m) = get("Method") {
            http_method("Method", m)?;
        }
        if let Some(u) = get("Url")
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err((
                400,
                CODE_INVALID_URL,
                format!("Url is not a valid URL: {u}"),
            ));
        }
        match get("Status") {
            None => {}
            Some(s @ ("completed" | "canceled")) => self.calls[i].1 = s.to_owned(),
            Some(s) => return Err(invalid("Status", s)),
        }
        let (sid, status) = self.calls[i].clone();
        self.writes.push(Write::Call {
            sid: sid.clone(),
            fields,
        });
        Ok(json!({
            "account_sid": self.account_sid,
            "sid": sid,
            "status": status,
            "uri": format!("{REST_PREFIX}{}/Calls/{sid}.json", self.account_sid),
        }))
    }

    fn list_alerts(&self, query: &[(String, String)]) -> Answer {
        let (page, size) = paging(query)?;
        let level = form::get(query, "LogLevel");
        let start = date_param(query, "StartDate")?;
        let end = date_param(query, "EndDate")?;
        let mut matching: Vec<&Alert> = self
            .alerts
            .iter()
            .filter(|a| level.is_none_or(|l| a.log_level == l))
            .filter(|a| start.is_none_or(|s| a.date_created >= s))
            .filter(|a| end.is_none_or(|e| a.date_created <= e))
            .collect();
        matching.sort_by_key(|a| std::cmp::Reverse(a.date_created));
        let mut q = String::new();
        for k in ["LogLevel", "StartDate", "EndDate"] {
            if let Some(v) = form::get(query, k) {
                q.push_str(&format!("{k}={}&", encode_query_value(v)));
            }
        }
        let url = |p: usize| format!("{}/v1/Alerts?{q}PageSize={size}&Page={p}", self.base);
        let items: Vec<Value> = matching
            .iter()
            .skip(page * size)
            .take(size)
            .map(|a| a.to_json(&self.account_sid, &self.base, false))
            .collect();
        let last = (page + 1) * size >= matching.len();
        Ok(json!({
            "alerts": items,
            "meta": {
                "first_page_url": url(0),
                "key": "alerts",
                "next_page_url": (!last).then(|| url(page + 1)),
                "page": page,
                "page_size": size,
                "previous_page_url": (page > 0).then(|| url(page - 1)),
                "url": url(page),
            }
        }))
    }

    fn fetch_alert(&self, sid: &str) -> Answer {
        self.alerts
            .iter()
            .find(|a| a.sid == sid)
            .map(|a| a.to_json(&self.account_sid, &self.base, true))
            .ok_or_else(|| not_found(&format!("/v1/Alerts/{sid}")))
    }
}

/// One whole request from the bytes read so far: `Ok(None)` until head and body are complete;
/// `Err(status)` for a request to refuse (framing errors, too large).
pub fn read_request(buf: &[u8]) -> Result<Option<(RequestHead, Vec<u8>)>, u16> {
    use crate::http::body::{ChunkedDecoder, Framing, framing};
    let Some((head, used)) = crate::http::request_head::parse(buf).map_err(|e| e.status())? else {
        return Ok(None);
    };
    let rest = &buf[used..];
    let body = match framing(&head).map_err(|e| e.status())? {
        Framing::Empty => Vec::new(),
        Framing::Length(n) if rest.len() < n => return Ok(None),
        Framing::Length(n) => rest[..n].to_vec(),
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new();
            let mut out = Vec::new();
            dec.decode(rest, &mut out).map_err(|e| e.status())?;
            if !dec.is_done() {
                return Ok(None);
            }
            out
        }
    };
    Ok(Some((head, body)))
}

/// `{resource}{sid}.json` → `sid` (alphanumeric).
fn json_sid<'a>(resource: &'a str, prefix: &str) -> Option<&'a str> {
    let sid = resource.strip_prefix(prefix)?.strip_suffix(".json")?;
    (!sid.is_empty() && sid.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(sid)
}

/// Whether `number` contains `pattern`, where `*` stands for any one digit (the list's
/// `PhoneNumber` filter, docs/twilio.md §9.1).
pub fn matches_partially(number: &str, pattern: &str) -> bool {
    let (n, p) = (number.as_bytes(), pattern.as_bytes());
    if p.is_empty() {
        return true;
    }
    n.windows(p.len()).any(|w| {
        w.iter()
            .zip(p)
            .all(|(&c, &q)| c == q || (q == b'*' && c.is_ascii_digit()))
    })
}

fn paging(query: &[(String, String)]) -> Result<(usize, usize), (u16, u32, String)> {
    let num = |k: &str, default: usize| match form::get(query, k) {
        None => Ok(default),
        Some(v) => v.parse::<usize>().map_err(|_| invalid(k, v)),
    };
    let size = num("PageSize", DEFAULT_PAGE_SIZE)?;
    if !(1..=MAX_PAGE_SIZE).contains(&size) {
        return Err(invalid("PageSize", &size.to_string()));
    }
    let page = num("Page", 0)?;
    // Page × PageSize (and the next page's start) must stay a valid offset: a huge `Page` is a
    // 400, not an overflow.
    if page
        .checked_add(1)
        .and_then(|p| p.checked_mul(size))
        .is_none()
    {
        return Err(invalid("Page", &page.to_string()));
    }
    Ok((page, size))
}

/// `YYYY-MM-DD` or `YYYY-MM-DDThh:mm:ssZ` (GMT) as unix seconds.
fn date_param(query: &[(String, String)], k: &str) -> Result<Option<i64>, (u16, u32, String)> {
    let Some(v) = form::get(query, k) else {
        return Ok(None);
    };
    let parsed = if v.len() == 10 {
        v.parse::<jiff::civil::Date>().ok().and_then(|d| {
            jiff::tz::TimeZone::UTC
                .to_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
                .ok()
        })
    } else {
        v.parse::<jiff::Timestamp>().ok()
    };
    parsed
        .map(|t| Some(t.as_second()))
        .ok_or_else(|| invalid(k, v))
}

fn http_method(name: &str, v: &str) -> Result<String, (u16, u32, String)> {
    match v.to_ascii_uppercase().as_str() {
        m @ ("GET" | "POST") => Ok(m.to_owned()),
        _ => Err((
            400,
            CODE_INVALID_METHOD,
            format!("{name} is not valid: {v}"),
        )),
    }
}

fn sid_param(name: &str, v: &str, prefix: &str) -> Result<Option<String>, (u16, u32, String)> {
    if v.is_empty() {
        return Ok(None);
    }
    let ok =
        v.len() == 34 && v.starts_with(prefix) && v[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(Some(v.to_owned()))
    } else {
        Err(invalid(name, v))
    }
}

fn invalid(name: &str, v: &str) -> (u16, u32, String) {
    (400, CODE_INVALID_PARAMETER, format!("Invalid {name}: {v}"))
}

fn auth_error() -> (u16, u32, String) {
    (401, CODE_AUTHENTICATE, "Authenticate".to_owned())
}

fn method_not_allowed() -> (u16, u32, String) {
    (
        405,
        CODE_METHOD_NOT_ALLOWED,
        "Method not allowed".to_owned(),
    )
}

fn not_found(path: &str) -> (u16, u32, String) {
    (
        404,
        CODE_NOT_FOUND,
        format!("The requested resource {path} was not found"),
    )
}

/// Twilio's error body `{code, message, more_info, status}`.
fn error_response(status: u16, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    });
    let resp = Response::json(status, body.to_string());
    if status == 401 {
        resp.header("WWW-Authenticate", "Basic realm=\"Twilio API\"")
    } else {
        resp
    }
}

/// RFC 2822 with `+0000`, as the REST API writes dates.
fn rfc2822(unix: i64) -> String {
    crate::http::date::imf_fixdate(unix).replace(" GMT", " +0000")
}

#[cfg(test)]
mod tests;
