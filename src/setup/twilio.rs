//! `ignis twilio configure` and the doctor's two Twilio checks, sans-IO: the REST requests
//! (find the number, update it; Monitor alerts), reading Twilio's answers and errors, what the
//! number should look like, the plan of changes and the refusals. The facts are in
//! docs/twilio.md §9–§12 (from twilio/twilio-oai's `twilio_api_v2010.json` and
//! `twilio_monitor_v1.json`).

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use super::Check;
use crate::config::{Config, is_e164};
use crate::http::client::{self, ClientResponse};
use crate::http::form;
use crate::http::url::{Endpoint, encode_query_value};
use crate::routes::{STATUS_PATH, VOICE_PATH};
use crate::twilio::signature::AuthToken;

/// The REST API version in every path (docs/twilio.md §9).
pub const API_VERSION: &str = "2010-04-01";
/// Numbers asked for per list page (Twilio allows 1–1000, default 50; docs/twilio.md §9.1).
pub const LIST_PAGE_SIZE: u32 = 50;
/// Most list pages followed: partial matches past 1000 numbers mean a wrong number, not a
/// slow account.
pub const MAX_LIST_PAGES: usize = 20;
/// Longest Twilio error message shown (it is the peer's text).
pub const MAX_ERROR_MESSAGE_CHARS: usize = 300;
/// How far back the doctor reads Monitor alerts.
pub const ALERTS_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Alerts read per log level (one page); more are reported as "more than".
pub const ALERTS_PAGE_SIZE: u32 = 100;
/// Alerts explained one by one in the doctor's report; the rest are counted.
pub const MAX_ALERTS_SHOWN: usize = 8;
/// The Monitor log levels the doctor reads (one request each: `LogLevel` takes one value).
pub const ALERT_LEVELS: [&str; 2] = ["error", "warning"];

/// The REST credentials: an API key (Twilio's recommendation) or the account SID and auth
/// token. The account SID is always in the path (docs/twilio.md §9).
#[derive(Debug, Clone)]
pub struct TwilioAuth {
    /// `AC…`, for the path.
    pub account_sid: String,
    /// The Basic user: the API key SID or the account SID.
    user: String,
    /// The Basic password: the key's secret or the auth token.
    secret: AuthToken,
    /// `TWILIO_API_BASE` (REST).
    pub api_base: String,
    /// `TWILIO_MONITOR_API_BASE`.
    pub monitor_base: String,
}

impl TwilioAuth {
    /// The credentials `config` names; `None` without `TWILIO_ACCOUNT_SID`.
    pub fn from_config(config: &Config) -> Option<TwilioAuth> {
        let account_sid = config.twilio_account_sid.clone()?;
        let (user, secret) = match &config.twilio_api_key {
            Some((sid, secret)) => (sid.clone(), secret.clone()),
            None => (account_sid.clone(), config.twilio_auth_token.clone()),
        };
        Some(TwilioAuth {
            account_sid,
            user,
            secret,
            api_base: config.twilio_api_base.clone(),
            monitor_base: config.twilio_monitor_api_base.clone(),
        })
    }

    /// Whether an API key (rather than the auth token) is used.
    pub fn uses_api_key(&self) -> bool {
        self.user.starts_with("SK")
    }

    fn authorization(&self) -> String {
        let pair = format!("{}:{}", self.user, self.secret.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    /// One request to `base` + `target`.
    fn request(
        &self,
        base: &str,
        method: &str,
        target: String,
        form_body: Option<&str>,
    ) -> Result<ApiRequest, SetupError> {
        let mut ep = Endpoint::parse(base).map_err(|_| SetupError::BadBase)?;
        ep.target = target;
        let auth = self.authorization();
        let headers = [
            ("Authorization", auth.as_str()),
            ("Accept", "application/json"),
        ];
        let body = form_body.map(|b| ("application/x-www-form-urlencoded", b.as_bytes()));
        let bytes = client::encode_request(method, &ep, &headers, body)
            .map_err(|_| SetupError::BadCredentialCharacters)?;
        Ok(ApiRequest {
            endpoint: ep,
            bytes,
        })
    }

    fn numbers_path(&self) -> String {
        format!(
            "/{API_VERSION}/Accounts/{}/IncomingPhoneNumbers",
            self.account_sid
        )
    }
}

/// A request ready to send: where to, and its bytes.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// Where it goes.
    pub endpoint: Endpoint,
    /// The whole request.
    pub bytes: Vec<u8>,
}

/// Why `twilio configure` (or a doctor check) stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupError {
    /// `TWILIO_ACCOUNT_SID` is unset (it is in every REST path).
    NoAccountSid,
    /// Neither `--number` nor `TWILIO_PHONE_NUMBER`.
    NoNumber,
    /// The number is not E.164.
    BadNumber,
    /// `PUBLIC_URL` is not `https://`: Twilio would send the call's data in clear text.
    PublicUrlNotHttps,
    /// `TWILIO_API_BASE` or `TWILIO_MONITOR_API_BASE` is not a URL.
    BadBase,
    /// A credential holds a control character.
    BadCredentialCharacters,
    /// Twilio could not be reached, or its answer not read (host, why).
    Unreachable(String, String),
    /// Twilio answered with an error.
    Api(ApiError),
    /// Twilio's answer could not be read.
    BadResponse(&'static str),
    /// The number is not in the account (after `pages` list pages).
    NotFound {
        /// The number looked for.
        number: String,
    },
    /// More partial matches than [`MAX_LIST_PAGES`] pages.
    TooManyPages,
    /// The number cannot be pointed at ignis as it is.
    Refused(Refusal),
    /// After the update, Twilio still shows other settings.
    NotApplied(Vec<&'static str>),
}

impl SetupError {
    /// Whether this is bad configuration (exit code 2) rather than a failed check (1).
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            SetupError::NoAccountSid
                | SetupError::NoNumber
                | SetupError::BadNumber
                | SetupError::PublicUrlNotHttps
                | SetupError::BadBase
                | SetupError::BadCredentialCharacters
        )
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::NoAccountSid => {
                f.write_str("TWILIO_ACCOUNT_SID is not set (AC…, from the Twilio console)")
            }
            SetupError::NoNumber => {
                f.write_str("no number: give --number +E164 or set TWILIO_PHONE_NUMBER")
            }
            SetupError::BadNumber => f.write_str("the number must be E.164, e.g. +493012345678"),
            SetupError::PublicUrlNotHttps => f.write_str(
                "PUBLIC_URL must be https:// for a real number: Twilio would send every \
                 caller's number and the call's audio stream unencrypted",
            ),
            SetupError::BadBase => {
                f.write_str("TWILIO_API_BASE or TWILIO_MONITOR_API_BASE is not a URL")
            }
            SetupError::BadCredentialCharacters => {
                f.write_str("a Twilio credential holds a control character")
            }
            SetupError::Unreachable(host, why) => write!(f, "Twilio ({host}) unreachable: {why}"),
            SetupError::Api(e) => e.fmt(f),
            SetupError::BadResponse(what) => write!(f, "unreadable answer from Twilio: {what}"),
            // Masked like every number ignis prints (docs/doctor.md: reports hold no number).
            SetupError::NotFound { number } => write!(
                f,
                "{} is not a number of this account (TWILIO_ACCOUNT_SID); check the \
                 number and the account (a subaccount has its own SID)",
                crate::privacy::mask_phone(number)
            ),
            SetupError::TooManyPages => write!(
                f,
                "more than {} numbers match partially; give the whole E.164 number",
                MAX_LIST_PAGES * LIST_PAGE_SIZE as usize
            ),
            SetupError::Refused(r) => r.fmt(f),
            SetupError::NotApplied(fields) => write!(
                f,
                "Twilio accepted the update but still shows other values for {}",
                fields.join(", ")
            ),
        }
    }
}

impl std::error::Error for SetupError {}

/// An error answer of the REST or Monitor API: `{code, message, more_info, status}`
/// (docs/twilio.md §9.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// Twilio's error code (20003, 20404, …), when the body has one.
    pub code: Option<u32>,
    /// Twilio's message, shortened and without control characters.
    pub message: String,
}

/// Twilio's "Authenticate" error (docs/twilio.md §9.4).
pub const CODE_AUTHENTICATE: u32 = 20003;
/// Twilio's "not found" error.
pub const CODE_NOT_FOUND: u32 = 20404;

impl ApiError {
    /// Reads an error answer; a body that is not Twilio's JSON keeps only the status.
    pub fn from_response(resp: &ClientResponse) -> ApiError {
        #[derive(Deserialize)]
        struct Body {
            code: Option<u32>,
            message: Option<String>,
        }
        let body: Option<Body> = serde_json::from_slice(&resp.body).ok();
        let message = super::shown(
            body.as_ref()
                .and_then(|b| b.message.as_deref())
                .unwrap_or(""),
            MAX_ERROR_MESSAGE_CHARS,
        );
        ApiError {
            status: resp.status,
            code: body.and_then(|b| b.code),
            message,
        }
    }

    /// Whether Twilio refused the credentials.
    pub fn is_auth(&self) -> bool {
        self.status == 401 || self.code == Some(CODE_AUTHENTICATE)
    }

    /// What to do about it, for a report.
    pub fn fix(&self) -> String {
        if self.is_auth() {
            return "credentials refused: check TWILIO_API_KEY_SID/SECRET or TWILIO_AUTH_TOKEN \
                    (and that TWILIO_ACCOUNT_SID is the account they belong to)"
                .into();
        }
        match self.code {
            Some(code) => format!("see https://www.twilio.com/docs/api/errors/{code}"),
            None => "retry later; see https://status.twilio.com".into(),
        }
    }
}

impl ApiError {
    /// What Twilio answered, without the fix (the doctor prints the fix on its own line).
    pub fn summary(&self) -> String {
        let mut s = format!("Twilio answered {}", self.status);
        if let Some(code) = self.code {
            s.push_str(&format!(" (error {code})"));
        }
        if !self.message.is_empty() {
            s.push_str(&format!(": {}", self.message));
        }
        s
    }
}

impl fmt::Display for ApiError {
    /// The summary, and for refused credentials the fix (`twilio configure` prints one line).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())?;
        if self.is_auth() {
            write!(f, "; {}", self.fix())?;
        }
        Ok(())
    }
}

/// A value from Twilio as it may be printed (see [`super::shown`]).
/// A number's current setting as printed and reported: a URL without its user info and query,
/// which may carry another system's credentials (`https://user:pass@…`, `?token=…`); the plan
/// and the doctor's report never hold a secret (docs/doctor.md).
fn shown(value: &str) -> String {
    super::shown(&without_credentials(value), super::MAX_SHOWN_CHARS)
}

/// `value` with a URL's user info and query (and fragment) replaced by `…`.
fn without_credentials(value: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.into();
    };
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => format!("…@{host}"),
        None => authority.to_owned(),
    };
    let path = match path.find(['?', '#']) {
        Some(i) => format!("{}?…", &path[..i]),
        None => path.to_owned(),
    };
    format!("{scheme}://{host}{path}").into()
}

/// An answer's body as `T` when 2xx, else the error.
fn read_ok<T: for<'de> Deserialize<'de>>(resp: &ClientResponse) -> Result<T, SetupError> {
    if !(200..300).contains(&resp.status) {
        return Err(SetupError::Api(ApiError::from_response(resp)));
    }
    serde_json::from_slice(&resp.body).map_err(|_| SetupError::BadResponse("not the expected JSON"))
}

/// Treats Twilio's empty strings like `null` (its examples show both for unset SIDs and URLs).
fn none_if_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    Ok(v.filter(|s| !s.is_empty()))
}

/// An incoming phone number as the REST API shows it (the fields ignis reads; docs/twilio.md §9.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct IncomingNumber {
    /// `PN…`.
    pub sid: String,
    /// E.164.
    pub phone_number: String,
    /// Where Twilio fetches TwiML for a call.
    #[serde(default, deserialize_with = "none_if_empty")]
    pub voice_url: Option<String>,
    /// `GET` or `POST`.
    #[serde(default, deserialize_with = "none_if_empty")]
    pub voice_method: Option<String>,
    /// Where Twilio goes when the voice URL fails.
    #[serde(default, deserialize_with = "none_if_empty")]
    pub voice_fallback_url: Option<String>,
    /// `GET` or `POST`.
    #[serde(default, deserialize_with = "none_if_empty")]
    pub voice_fallback_method: Option<String>,
    /// The call status callback.
    #[serde(default, deserialize_with = "none_if_empty")]
    pub status_callback: Option<String>,
    /// `GET` or `POST`.
    #[serde(default, deserialize_with = "none_if_empty")]
    pub status_callback_method: Option<String>,
    /// A TwiML application that takes the calls instead of `voice_url` (`AP…`).
    #[serde(default, deserialize_with = "none_if_empty")]
    pub voice_application_sid: Option<String>,
    /// An Elastic SIP trunk that takes the calls instead (`TK…`).
    #[serde(default, deserialize_with = "none_if_empty")]
    pub trunk_sid: Option<String>,
    /// `voice` or `fax`.
    #[serde(default, deserialize_with = "none_if_empty")]
    pub voice_receive_mode: Option<String>,
    /// What the number can do.
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
}

/// `capabilities` of a number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Capabilities {
    /// Can receive calls.
    #[serde(default)]
    pub voice: Option<bool>,
}

/// One page of `IncomingPhoneNumbers.json`.
#[derive(Debug, Deserialize)]
struct NumberPage {
    incoming_phone_numbers: Vec<IncomingNumber>,
    #[serde(default)]
    next_page_uri: Option<String>,
}

/// Finding one number: partial matches, paged (docs/twilio.md §9.1). The driver sends each
/// request and feeds the answer back until the search ends.
#[derive(Debug)]
pub struct NumberSearch {
    auth: TwilioAuth,
    number: String,
    pages: usize,
}

/// What a search wants next.
#[derive(Debug)]
pub enum SearchStep {
    /// Send this and feed the answer to [`NumberSearch::on_response`].
    Request(ApiRequest),
    /// The number, matched exactly.
    Found(Box<IncomingNumber>),
}

impl NumberSearch {
    /// Starts a search for `number` (E.164) and returns its first request.
    pub fn start(auth: TwilioAuth, number: &str) -> Result<(NumberSearch, ApiRequest), SetupError> {
        if !is_e164(number) {
            return Err(SetupError::BadNumber);
        }
        let target = format!(
            "{}.json?PhoneNumber={}&PageSize={LIST_PAGE_SIZE}",
            auth.numbers_path(),
            encode_query_value(number)
        );
        let req = auth.request(&auth.api_base, "GET", target, None)?;
        let search = NumberSearch {
            auth,
            number: number.to_owned(),
            pages: 0,
        };
        Ok((search, req))
    }

    /// Reads one page: the exact match, the next page's request, or the end.
    pub fn on_response(&mut self, resp: &ClientResponse) -> Result<SearchStep, SetupError> {
        let page: NumberPage = read_ok(resp)?;
        self.pages += 1;
        // `PhoneNumber` matches partially: only an exact match counts.
        if let Some(n) = page
            .incoming_phone_numbers
            .into_iter()
            .find(|n| n.phone_number == self.number)
        {
            return Ok(SearchStep::Found(Box::new(n)));
        }
        let Some(next) = page.next_page_uri.filter(|u| !u.is_empty()) else {
            return Err(SetupError::NotFound {
                number: self.number.clone(),
            });
        };
        if self.pages >= MAX_LIST_PAGES {
            return Err(SetupError::TooManyPages);
        }
        // Follow only the same list of the same account (the URI is the peer's).
        let list = format!("{}.json?", self.auth.numbers_path());
        if !next.starts_with(&list) || next.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(SetupError::BadResponse("next_page_uri leaves the list"));
        }
        let req = self.auth.request(&self.auth.api_base, "GET", next, None)?;
        Ok(SearchStep::Request(req))
    }
}

/// A voice setting of a number that ignis sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `VoiceUrl`.
    VoiceUrl,
    /// `VoiceMethod`.
    VoiceMethod,
    /// `StatusCallback`.
    StatusCallback,
    /// `StatusCallbackMethod`.
    StatusCallbackMethod,
    /// `VoiceFallbackUrl`.
    VoiceFallbackUrl,
    /// `VoiceFallbackMethod`.
    VoiceFallbackMethod,
}

impl Field {
    /// The update parameter (PascalCase, docs/twilio.md §9.3).
    pub fn param(self) -> &'static str {
        match self {
            Field::VoiceUrl => "VoiceUrl",
            Field::VoiceMethod => "VoiceMethod",
            Field::StatusCallback => "StatusCallback",
            Field::StatusCallbackMethod => "StatusCallbackMethod",
            Field::VoiceFallbackUrl => "VoiceFallbackUrl",
            Field::VoiceFallbackMethod => "VoiceFallbackMethod",
        }
    }

    /// Its current value on `n`.
    pub fn current(self, n: &IncomingNumber) -> Option<&str> {
        match self {
            Field::VoiceUrl => n.voice_url.as_deref(),
            Field::VoiceMethod => n.voice_method.as_deref(),
            Field::StatusCallback => n.status_callback.as_deref(),
            Field::StatusCallbackMethod => n.status_callback_method.as_deref(),
            Field::VoiceFallbackUrl => n.voice_fallback_url.as_deref(),
            Field::VoiceFallbackMethod => n.voice_fallback_method.as_deref(),
        }
    }

    fn is_method(self) -> bool {
        matches!(
            self,
            Field::VoiceMethod | Field::StatusCallbackMethod | Field::VoiceFallbackMethod
        )
    }
}

/// The settings the number should have for this deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired(pub Vec<(Field, String)>);

impl Desired {
    /// `PUBLIC_URL/api/twilio/voice` and `/status`, both POST (ignis checks signatures on POST
    /// forms, docs/twilio.md §4), plus the operator's fallback URL. Refuses a plain-http
    /// `PUBLIC_URL`.
    pub fn from_config(config: &Config) -> Result<Desired, SetupError> {
        let voice = config.public_url.http_url(VOICE_PATH);
        if !voice.starts_with("https://") {
            return Err(SetupError::PublicUrlNotHttps);
        }
        let mut wanted = vec![
            (Field::VoiceUrl, voice),
            (Field::VoiceMethod, "POST".to_owned()),
            (
                Field::StatusCallback,
                config.public_url.http_url(STATUS_PATH),
            ),
            (Field::StatusCallbackMethod, "POST".to_owned()),
        ];
        if let Some(url) = &config.twilio_voice_fallback_url {
            wanted.push((Field::VoiceFallbackUrl, url.clone()));
            wanted.push((Field::VoiceFallbackMethod, "POST".to_owned()));
        }
        Ok(Desired(wanted))
    }
}

/// Why a number cannot simply be pointed at ignis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A TwiML application answers its calls (`voice_application_sid`).
    Application(String),
    /// An Elastic SIP trunk answers its calls (`trunk_sid`).
    Trunk(String),
    /// The number cannot receive calls.
    NoVoice,
    /// The number receives faxes, not calls.
    Fax,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // docs/twilio.md §10: an application or a trunk takes precedence over voice_url.
        match self {
            Refusal::Application(sid) => write!(
                f,
                "the number's calls go to the TwiML application {sid} (voice_application_sid): \
                 Twilio ignores VoiceUrl while it is set, so ignis would never be called. In the \
                 console, set the number's \"Configure with\" to \"Webhook, TwiML Bin, Function, \
                 Studio Flow, Proxy Service\", or clear it through the API \
                 (VoiceApplicationSid=\"\"), then run this again"
            ),
            Refusal::Trunk(sid) => write!(
                f,
                "the number belongs to the Elastic SIP trunk {sid} (trunk_sid): Twilio sends its \
                 calls to the trunk and ignores VoiceUrl. Remove the number from the trunk \
                 (console: Elastic SIP Trunking > Trunks > {sid} > Numbers, or TrunkSid=\"\"), \
                 then run this again"
            ),
            Refusal::NoVoice => f.write_str(
                "the number has no voice capability (capabilities.voice is false): it cannot \
                 receive calls; use a voice-capable number",
            ),
            Refusal::Fax => f.write_str(
                "the number receives faxes (voice_receive_mode is fax): set \"Accept incoming\" \
                 to \"Voice calls\" in the console (VoiceReceiveMode=voice), then run this again",
            ),
        }
    }
}

/// One row of the plan: a field, its value now and the one wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRow {
    /// The field.
    pub field: Field,
    /// Its value now (`None`: unset).
    pub now: Option<String>,
    /// The value ignis sets.
    pub wanted: String,
}

impl PlanRow {
    /// Whether the field must change. Methods compare without case (Twilio answers them in
    /// upper case).
    pub fn changes(&self) -> bool {
        match &self.now {
            None => true,
            Some(now) if self.field.is_method() => !now.eq_ignore_ascii_case(&self.wanted),
            Some(now) => *now != self.wanted,
        }
    }
}

/// What `configure` would do to one number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The number's E.164.
    pub number: String,
    /// Its `PN…`.
    pub sid: String,
    /// One row per wanted field, changed or not.
    pub rows: Vec<PlanRow>,
}

/// The plan for `n`, or why it cannot be pointed at ignis.
pub fn plan(n: &IncomingNumber, desired: &Desired) -> Result<Plan, Refusal> {
    if let Some(sid) = &n.voice_application_sid {
        return Err(Refusal::Application(shown(sid)));
    }
    if let Some(sid) = &n.trunk_sid {
        return Err(Refusal::Trunk(shown(sid)));
    }
    if n.capabilities.as_ref().and_then(|c| c.voice) == Some(false) {
        return Err(Refusal::NoVoice);
    }
    if n.voice_receive_mode.as_deref() == Some("fax") {
        return Err(Refusal::Fax);
    }
    let rows = desired
        .0
        .iter()
        .map(|(field, wanted)| PlanRow {
            field: *field,
            now: field.current(n).map(str::to_owned),
            wanted: wanted.clone(),
        })
        .collect();
    Ok(Plan {
        number: n.phone_number.clone(),
        sid: shown(&n.sid),
        rows,
    })
}

impl Plan {
    /// The fields that change.
    pub fn changed(&self) -> Vec<&'static str> {
        self.rows
            .iter()
            .filter(|r| r.changes())
            .map(|r| r.field.param())
            .collect()
    }

    /// The form body of the update: only the fields that change.
    pub fn update_body(&self) -> String {
        self.rows
            .iter()
            .filter(|r| r.changes())
            .map(|r| format!("{}={}", r.field.param(), form::encode(&r.wanted)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The table `field | now | wanted`, a `*` in front of each row that changes.
    pub fn render(&self) -> String {
        let width = |f: &dyn Fn(&PlanRow) -> usize, min: usize| {
            self.rows.iter().map(f).max().unwrap_or(0).max(min)
        };
        let now_text = |r: &PlanRow| r.now.as_deref().map_or("(unset)".into(), shown);
        let w1 = width(&|r| r.field.param().len(), "field".len());
        let w2 = width(&|r| now_text(r).chars().count(), "now".len());
        let mut out = format!("    {:<w1$} | {:<w2$} | wanted\n", "field", "now");
        for r in &self.rows {
            let mark = if r.changes() { '*' } else { ' ' };
            out.push_str(&format!(
                "  {mark} {:<w1$} | {:<w2$} | {}\n",
                r.field.param(),
                now_text(r),
                shown(&r.wanted)
            ));
        }
        out
    }
}

/// The update of `plan`'s number with only the changed fields (docs/twilio.md §9.3).
pub fn update_request(auth: &TwilioAuth, plan: &Plan) -> Result<ApiRequest, SetupError> {
    if !(plan.sid.starts_with("PN") && plan.sid.bytes().all(|b| b.is_ascii_alphanumeric())) {
        return Err(SetupError::BadResponse("number SID is not PN…"));
    }
    let target = format!("{}/{}.json", auth.numbers_path(), plan.sid);
    auth.request(&auth.api_base, "POST", target, Some(&plan.update_body()))
}

/// Reads the update's answer (the number as it is now) and checks that every wanted value
/// holds.
pub fn on_update_response(
    resp: &ClientResponse,
    desired: &Desired,
) -> Result<IncomingNumber, SetupError> {
    let n: IncomingNumber = read_ok(resp)?;
    let left = plan(&n, desired).map_err(SetupError::Refused)?.changed();
    if left.is_empty() {
        Ok(n)
    } else {
        Err(SetupError::NotApplied(left))
    }
}

/// The doctor's `twilio_number` check of a found number.
pub fn number_check(n: &IncomingNumber, desired: &Desired) -> Check {
    const ID: &str = "twilio_number";
    // The report may end up in monitoring: numbers masked like everywhere else in ignis.
    let number = crate::privacy::mask_phone(&n.phone_number);
    match plan(n, desired) {
        Err(refusal) => Check::fail(
            ID,
            format!("{number}: not routed to ignis"),
            refusal.to_string(),
        ),
        Ok(p) => {
            let wrong: Vec<String> = p
                .rows
                .iter()
                .filter(|r| r.changes())
                .map(|r| {
                    format!(
                        "{} is {}",
                        r.field.param(),
                        r.now.as_deref().map_or("unset".into(), shown)
                    )
                })
                .collect();
            if wrong.is_empty() {
                Check::pass(
                    ID,
                    format!("{number}: voice and status webhooks point at ignis (POST)"),
                )
            } else {
                Check::fail(
                    ID,
                    format!("{number}: {}", wrong.join(", ")),
                    "run `ignis twilio configure` (it shows the changes first with --dry-run)",
                )
            }
        }
    }
}

/// What `ignis twilio configure` works on: the number (`--number`, else TWILIO_PHONE_NUMBER),
/// the credentials and the wanted settings, or why the configuration cannot (exit 2).
pub fn configure_target(
    config: &Config,
    number_arg: Option<&str>,
) -> Result<(String, TwilioAuth, Desired), SetupError> {
    let number = number_arg
        .map(str::to_owned)
        .or_else(|| config.twilio_phone_number.clone())
        .ok_or(SetupError::NoNumber)?;
    let auth = TwilioAuth::from_config(config).ok_or(SetupError::NoAccountSid)?;
    let desired = Desired::from_config(config)?;
    Ok((number, auth, desired))
}

/// What the doctor's Twilio checks ask of Twilio, decided from the configuration alone.
#[derive(Debug)]
pub enum DoctorPlan {
    /// Nothing: both checks are these skips (TWILIO_ACCOUNT_SID is unset).
    Skip(Vec<Check>),
    /// The alerts, and the number when `number` is `Ok` (else that check as it stands).
    Ask {
        /// The credentials.
        auth: TwilioAuth,
        /// The number to find and what it should look like, or its check without asking.
        number: Result<(String, Desired), Check>,
    },
}

/// The doctor's Twilio plan: skipped without TWILIO_ACCOUNT_SID; `twilio_number` skipped
/// without TWILIO_PHONE_NUMBER, failed at once when the wanted settings cannot be built.
pub fn doctor_plan(config: &Config) -> DoctorPlan {
    let Some(auth) = TwilioAuth::from_config(config) else {
        let why = "TWILIO_ACCOUNT_SID is not set";
        return DoctorPlan::Skip(vec![
            Check::skip("twilio_number", why),
            Check::skip("twilio_alerts", why),
        ]);
    };
    let number = match &config.twilio_phone_number {
        None => Err(Check::skip(
            "twilio_number",
            "TWILIO_PHONE_NUMBER is not set",
        )),
        Some(n) => Desired::from_config(config)
            .map(|d| (n.clone(), d))
            .map_err(|e| number_error_check(&e)),
    };
    DoctorPlan::Ask { auth, number }
}

/// What to do when Twilio cannot be reached from here.
const UNREACHABLE_FIX: &str = "check this machine's outbound HTTPS (firewall, proxy), \
     TWILIO_API_BASE / TWILIO_MONITOR_API_BASE and EXTRA_CA_FILE";

/// The doctor's `twilio_number` check when the search failed.
pub fn number_error_check(e: &SetupError) -> Check {
    const ID: &str = "twilio_number";
    match e {
        SetupError::Api(api) => Check::fail(ID, api.summary(), api.fix()),
        SetupError::PublicUrlNotHttps => Check::fail(
            ID,
            "PUBLIC_URL is not https://",
            "set PUBLIC_URL to the https:// origin Twilio reaches",
        ),
        SetupError::Unreachable(..) => Check::fail(ID, e.to_string(), UNREACHABLE_FIX),
        other => Check::fail(
            ID,
            other.to_string(),
            "check TWILIO_PHONE_NUMBER and TWILIO_ACCOUNT_SID",
        ),
    }
}

/// The doctor's `twilio_alerts` check when Monitor could not be read.
pub fn alerts_error_check(e: &SetupError) -> Check {
    const ID: &str = "twilio_alerts";
    match e {
        SetupError::Api(api) => Check::fail(ID, api.summary(), api.fix()),
        SetupError::Unreachable(..) => Check::fail(ID, e.to_string(), UNREACHABLE_FIX),
        other => Check::fail(ID, other.to_string(), "check TWILIO_MONITOR_API_BASE"),
    }
}

/// `PUBLIC_URL`'s host (without port), which alerts of this deployment name.
pub fn public_host(config: &Config) -> String {
    Endpoint::parse(&config.public_url.http_url("/"))
        .map(|ep| ep.host)
        .unwrap_or_default()
}

/// A Monitor alert (docs/twilio.md §11).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Alert {
    /// `NO…`.
    #[serde(default)]
    pub sid: Option<String>,
    /// The error code (a string in Monitor's schema).
    #[serde(default)]
    pub error_code: Option<String>,
    /// `error`, `warning`, `notice` or `debug`.
    #[serde(default)]
    pub log_level: Option<String>,
    /// The URL Twilio requested when it failed.
    #[serde(default)]
    pub request_url: Option<String>,
    /// The call (`CA…`) it happened on.
    #[serde(default)]
    pub resource_sid: Option<String>,
    /// When (ISO 8601).
    #[serde(default)]
    pub date_created: Option<String>,
}

/// One page of `/v1/Alerts`.
#[derive(Debug, Deserialize)]
struct AlertPage {
    alerts: Vec<Alert>,
    #[serde(default)]
    meta: Option<AlertMeta>,
}

#[derive(Debug, Deserialize)]
struct AlertMeta {
    #[serde(default)]
    next_page_url: Option<String>,
}

/// `GET /v1/Alerts` of one log level over the [`ALERTS_WINDOW`] before `now_unix`.
pub fn alerts_request(
    auth: &TwilioAuth,
    level: &str,
    now_unix: i64,
) -> Result<ApiRequest, SetupError> {
    let start = crate::http::date::rfc3339(now_unix - ALERTS_WINDOW.as_secs() as i64);
    let end = crate::http::date::rfc3339(now_unix);
    let target = format!(
        "/v1/Alerts?LogLevel={}&StartDate={}&EndDate={}&PageSize={ALERTS_PAGE_SIZE}",
        encode_query_value(level),
        encode_query_value(&start),
        encode_query_value(&end)
    );
    auth.request(&auth.monitor_base, "GET", target, None)
}

/// The alerts of one answer, and whether there were more than one page.
pub fn parse_alerts(resp: &ClientResponse) -> Result<(Vec<Alert>, bool), SetupError> {
    let page: AlertPage = read_ok(resp)?;
    let more = page
        .meta
        .and_then(|m| m.next_page_url)
        .is_some_and(|u| !u.is_empty());
    Ok((page.alerts, more))
}

/// Whether `alert` concerns this deployment. Chosen: its `request_url` is on `PUBLIC_URL`'s
/// host. Alerts about webhooks and streams carry the URL Twilio requested, which names the
/// deployment; `resource_sid` names a call, and telling this deployment's calls from others on
/// the same account would take a call list per number. Alerts without a URL (API errors of
/// other software on the account) are left out.
pub fn is_for_host(alert: &Alert, public_host: &str) -> bool {
    alert
        .request_url
        .as_deref()
        .and_then(|u| Endpoint::parse(u).ok())
        .is_some_and(|ep| ep.host.eq_ignore_ascii_case(public_host))
}

/// What an error code means and its usual cause with ignis (docs/twilio.md §12).
pub fn explain(code: &str) -> Option<(&'static str, &'static str)> {
    let sig = "a 403 from ignis's signature check: PUBLIC_URL differs from the URL in the \
               console, or the auth token was rotated (TWILIO_AUTH_TOKEN/_SECONDARY)";
    let cert = "the certificate: name, expiry or an incomplete chain on the proxy";
    Some(match code {
        "11200" => ("HTTP retrieval failure", sig),
        "11205" => (
            "HTTP connection failure",
            "ignis cannot be reached: DNS, firewall, or the proxy or ignis is down",
        ),
        "11206" => (
            "HTTP protocol violation",
            "plain HTTP on the HTTPS port or a broken TLS terminator",
        ),
        "11217" => ("the webhook answered with an HTTP error", sig),
        "11202" => (
            "TCP connection refused",
            "nothing listens on the public port",
        ),
        "11220" => ("TLS handshake failure", cert),
        "11235" | "11236" | "11237" => ("certificate problem", cert),
        "12100" => (
            "TwiML could not be parsed",
            "a proxy error page instead of ignis's TwiML",
        ),
        "12300" => (
            "wrong content type for TwiML",
            "a proxy error page instead of ignis's TwiML",
        ),
        "11750" => (
            "TwiML response over 64 kB",
            "an HTML error page from the proxy",
        ),
        "31901" => ("stream WebSocket timed out", "the proxy or ignis is down"),
        "31902" => ("stream WebSocket refused", "the proxy or ignis is down"),
        "31903" => (
            "stream WebSocket broken",
            "the proxy cut the connection (idle timeout) or ignis stopped",
        ),
        "31910" => ("stream TLS problem", cert),
        "31920" => (
            "stream handshake not answered with 101",
            "the proxy lacks the Upgrade/Connection headers, a wrong path, or a 403 from \
             the signature check",
        ),
        "31921" => (
            "the server closed the stream",
            "ignis ended the call (normal after a hang-up or transfer)",
        ),
        "31922" | "31923" => (
            "stream URL not wss:// or malformed",
            "the PUBLIC_URL scheme",
        ),
        "31924" => (
            "invalid message sent to Twilio",
            "a bug in ignis: please report it",
        ),
        "31930" => (
            "stream media buffer overflow",
            "ignis reads too slowly: the server is overloaded",
        ),
        "31931" => (
            "media discarded: over 10 minutes of audio buffered",
            "audio sent faster than real time: a bug in ignis",
        ),
        "31941" => (
            "invalid track",
            "only inbound_track works with <Connect>: a bug in ignis",
        ),
        "31950" | "31951" => (
            "binary frame, invalid JSON or wrong streamSid",
            "a bug in ignis: please report it",
        ),
        "21631" | "21649" => (
            "the number needs an address or a regulatory bundle",
            "German (non-US) numbers need a BundleSid in the console",
        ),
        _ => return None,
    })
}

/// Alerts Twilio logs for a healthy deployment: 31921 "the server closed the stream" comes
/// with every call ignis ends on purpose (docs/twilio.md §1.6), so it fails nothing.
const EXPECTED_ALERTS: [&str; 1] = ["31921"];

/// The doctor's `twilio_alerts` check: the alerts of this deployment, each explained.
pub fn alerts_check(alerts: &[Alert], public_host: &str, truncated: bool) -> Check {
    const ID: &str = "twilio_alerts";
    let (expected, ours): (Vec<&Alert>, Vec<&Alert>) = alerts
        .iter()
        .filter(|a| is_for_host(a, public_host))
        .partition(|a| EXPECTED_ALERTS.contains(&a.error_code.as_deref().unwrap_or("")));
    if ours.is_empty() && truncated {
        // Only the first page was read: this host's alerts may be on the next one.
        return Check::skip(
            ID,
            format!(
                "the account logged more than one page of alerts in the last 24 h and none on \
                 the first is for {public_host}: look at Monitor → Alerts in the console"
            ),
        );
    }
    if ours.is_empty() {
        let also = match expected.len() {
            0 => String::new(),
            n => format!(" ({n} × 31921, logged whenever ignis ends a call: expected)"),
        };
        return Check::pass(
            ID,
            format!("no error or warning alerts for {public_host} in the last 24 h{also}"),
        );
    }
    let mut fix = String::new();
    for a in ours.iter().take(MAX_ALERTS_SHOWN) {
        let code = shown(a.error_code.as_deref().unwrap_or("?"));
        let (meaning, cause) = explain(&code).unwrap_or(("see the error page", "unknown"));
        fix.push_str(&format!(
            "\n      {code} {} at {} ({}): {meaning}; likely {cause} \
             (https://www.twilio.com/docs/api/errors/{code})",
            shown(a.log_level.as_deref().unwrap_or("?")),
            shown(a.date_created.as_deref().unwrap_or("?")),
            shown(a.resource_sid.as_deref().unwrap_or("no call")),
        ));
    }
    if ours.len() > MAX_ALERTS_SHOWN {
        fix.push_str(&format!(
            "\n      … and {} more",
            ours.len() - MAX_ALERTS_SHOWN
        ));
    }
    let more = if truncated {
        " (more than one page)"
    } else {
        ""
    };
    Check::fail(
        ID,
        format!(
            "{} alert(s) for {public_host} in the last 24 h{more}",
            ours.len()
        ),
        format!("in order:{fix}"),
    )
}

#[cfg(test)]
mod tests;
