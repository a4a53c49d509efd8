//! Request routing and the webhook handlers: a head and body in, an [`Action`] out. Sans-IO: the
//! driver supplies the time and performs whatever the action says.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tracing::{info, warn};

use crate::calls::{Bound, CallRegistry, Claim, NONCE_BYTES, Nonce, Outcome, StreamRefusal};
use crate::config::Config;
use crate::fleet::{AdoptedRow, ClaimCheck, Fleet, LeaseAnswer};
use crate::http::date;
use crate::http::form::{self, Fields};
use crate::http::websocket_upgrade::{self, Accept, UpgradeCheck};
use crate::http::{Method, RequestHead, Response};
use crate::privacy::mask_phone;
use crate::twilio::{twiml, webhook};

/// Path of the voice webhook.
pub const VOICE_PATH: &str = "/api/twilio/voice";
/// Path of the Media Streams WebSocket; each call's stream URL adds `/<nonce>` to it.
pub const STREAM_PATH: &str = "/api/twilio/stream";
/// [`STREAM_PATH`] with the separator of the per-call nonce segment.
const STREAM_PREFIX: &str = "/api/twilio/stream/";
/// Path Twilio requests when the stream ends (`<Connect action>`).
pub const STREAM_ENDED_PATH: &str = "/api/twilio/stream-ended";
/// Path of the call status callback.
pub const STATUS_PATH: &str = "/api/twilio/status";
/// [`STREAM_ENDED_PATH`] with the separator of the replica segment (fleet mode).
const STREAM_ENDED_PREFIX: &str = "/api/twilio/stream-ended/";
/// Path of the health check (alive).
pub const HEALTH_PATH: &str = "/health";
/// Path of the readiness check: 200 while taking calls (docs/replicas.md §5).
pub const HEALTH_READY_PATH: &str = "/health/ready";
/// Path of the Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";

/// Wall and monotonic time, read once per request by the driver.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Seconds since the Unix epoch (for `Date` and timestamps).
    pub unix_secs: i64,
    /// Monotonic time (for registry bookkeeping).
    pub instant: Instant,
}

/// What the driver should do with a request.
#[derive(Debug)]
pub enum Action {
    /// Send this response.
    Respond(Response),
    /// Switch to the Media Streams WebSocket of the claimed call.
    Upgrade {
        /// The handshake's answer.
        accept: Accept,
        /// The voice webhook's record of the call, claimed by this stream.
        claim: Claim,
    },
    /// A practice tool (`admin: false`) or staff admin request: the driver hands it to the
    /// practice store and answers with its JSON reply.
    Practice {
        /// Whether it is the admin API.
        admin: bool,
    },
    /// A staff page request (below `/staff`): the driver hands it to
    /// [`crate::practice::Practice::handle_staff`] and answers with its reply.
    Staff,
    /// Send this response and start connecting the call's agent now, so it is ready when the
    /// stream arrives (hides the upstream handshake from the caller).
    Preconnect {
        /// The TwiML response.
        response: Response,
        /// The call.
        call: webhook::IncomingCall,
    },
    /// Send this response: the call ended before its stream started, so the driver lets go
    /// of its pre-connected agent now rather than after `PRECONNECT_TIMEOUT_MS`.
    CallEnded {
        /// The status callback's answer.
        response: Response,
        /// The call.
        call_sid: String,
    },
    /// Fleet mode, voice webhook bound locally: the driver runs the lease transaction and
    /// answers with [`App::voice_bound`] (docs/replicas.md §4.1).
    FleetBind {
        /// The call.
        call: webhook::IncomingCall,
        /// Its stream nonce (bound locally).
        nonce: Nonce,
        /// Whether to pre-connect the agent (not for HEAD).
        preconnect: bool,
    },
    /// Fleet mode, stream nonce claimed locally: the driver confirms the claim in the database
    /// and continues with [`App::stream_confirmed`].
    FleetClaim {
        /// The handshake's answer.
        accept: Accept,
        /// The local claim.
        claim: Claim,
        /// The nonce.
        nonce: Nonce,
    },
    /// Fleet mode, a nonce this replica did not issue: the driver claims it in the database
    /// and continues with [`App::stream_adopted`] (docs/replicas.md §4.2).
    FleetAdopt {
        /// The handshake's answer.
        accept: Accept,
        /// The nonce.
        nonce: Nonce,
    },
    /// Fleet mode, terminal status callback: the driver does what [`Action::CallEnded`] does
    /// when `ended_before_stream`, then ends the shared row and notifies the call's replica
    /// (docs/replicas.md §4.3), then sends `response`.
    FleetStatus {
        /// The status callback's answer.
        response: Response,
        /// The call.
        call_sid: String,
        /// The local registry had the call pending (its agent is pre-connected here).
        ended_before_stream: bool,
    },
    /// Fleet mode, `stream-ended` for a call this replica does not know the outcome of: the
    /// driver reads the shared row and answers with [`App::stream_ended_answer`].
    FleetStreamEnded {
        /// The call.
        call_sid: String,
    },
}

/// Shared application state the routes read.
pub struct App {
    /// Configuration (shared with the driver's background tasks).
    pub config: std::sync::Arc<Config>,
    /// Live and recently ended calls.
    pub calls: CallRegistry,
    /// The practice tools and their store (`None`: tool routes answer 503).
    pub practice: Option<crate::practice::Practice>,
    /// Counters and histograms for `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// This replica in the fleet (`DATABASE_URL` set), else `None`: one process, as before.
    pub fleet: Option<Arc<Fleet>>,
    /// Set on the shutdown signal: `/health/ready` answers 503 (and, in fleet mode, new voice
    /// webhooks do too).
    draining: AtomicBool,
}

impl App {
    /// An application with an empty registry.
    pub fn new(config: Config) -> App {
        App {
            config: std::sync::Arc::new(config),
            calls: CallRegistry::new(),
            practice: None,
            metrics: crate::metrics::Metrics::default(),
            fleet: None,
            draining: AtomicBool::new(false),
        }
    }

    /// The same application as one replica of a fleet (docs/replicas.md).
    pub fn with_fleet(self, fleet: Arc<Fleet>) -> App {
        App {
            fleet: Some(fleet),
            ..self
        }
    }

    /// Marks the application draining (the driver, on the shutdown signal).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the shutdown signal came.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// This replica's id: the fleet's, else `REPLICA_ID` if set.
    pub fn replica(&self) -> Option<&str> {
        match &self.fleet {
            Some(f) => Some(&f.replica),
            None => self.config.replica_id.as_deref(),
        }
    }

    /// An application serving the practice tools too.
    pub fn with_practice(config: Config, practice: crate::practice::Practice) -> App {
        App {
            practice: Some(practice),
            ..App::new(config)
        }
    }

    /// Routes one request. `entropy` reads the OS random source; only the voice webhook calls
    /// it (for the call's stream nonce), and `None` means the source failed.
    pub fn handle(
        &self,
        head: &RequestHead,
        body: &[u8],
        now: Now,
        entropy: &dyn Fn() -> Option<[u8; NONCE_BYTES]>,
    ) -> Action {
        let path = head.path();
        let method = &head.method;
        let respond = Action::Respond;
        match path {
            HEALTH_PATH => match method {
                Method::Get | Method::Head => respond(self.health(now)),
                _ => respond(method_not_allowed("GET, HEAD")),
            },
            HEALTH_READY_PATH => match method {
                Method::Get | Method::Head => respond(self.ready(now)),
                _ => respond(method_not_allowed("GET, HEAD")),
            },
            METRICS_PATH => match method {
                Method::Get | Method::Head => respond(self.metrics(head)),
                _ => respond(method_not_allowed("GET, HEAD")),
            },
            VOICE_PATH => match method {
                Method::Get | Method::Head | Method::Post => self.voice(head, body, now, entropy),
                _ => respond(method_not_allowed("GET, HEAD, POST")),
            },
            p if p == STREAM_ENDED_PATH || self.is_fleet_stream_ended(p) => match method {
                Method::Post => self.stream_ended(head, body),
                _ => respond(method_not_allowed("POST")),
            },
            STATUS_PATH => match method {
                Method::Post => self.status(head, body, now),
                _ => respond(method_not_allowed("POST")),
            },
            p if p == STREAM_PATH || p.starts_with(STREAM_PREFIX) => match method {
                Method::Get | Method::Head => self.stream(head, now),
                _ => respond(method_not_allowed("GET, HEAD")),
            },
            p if crate::practice::tools::is_tool_path(p) => Action::Practice { admin: false },
            p if crate::practice::admin::is_admin_path(p) => Action::Practice { admin: true },
            p if crate::practice::staff::is_staff_path(p) => Action::Staff,
            _ => respond(Response::text(404, "not found")),
        }
    }

    fn health(&self, now: Now) -> Response {
        // Replica ids are a-z, 0-9 and - (checked at start): nothing to escape.
        let replica = self
            .replica()
            .map_or(String::new(), |r| format!(",\"replica\":\"{r}\""));
        Response::json(
            200,
            format!(
                "{{\"status\":\"ok\",\"timestamp\":\"{}\",\"active_calls\":{}{replica}}}",
                date::rfc3339(now.unix_secs),
                self.calls.live_count()
            ),
        )
    }

    /// docs/replicas.md §5: 503 while draining, or in fleet mode while the heartbeat is failing
    /// or stale (the database cannot count this replica's leases).
    fn ready(&self, now: Now) -> Response {
        let draining = self.is_draining();
        let database = self
            .fleet
            .as_ref()
            .is_none_or(|f| f.heartbeat_fresh(now.instant));
        let ready = !draining && database;
        let listening = self.fleet.as_ref().map_or(String::new(), |f| {
            format!(",\"listening\":{}", f.is_listening())
        });
        Response::json(
            if ready { 200 } else { 503 },
            format!(
                "{{\"ready\":{ready},\"draining\":{draining},\"database\":{database}{listening}}}"
            ),
        )
        .header("Cache-Control", "no-store")
    }

    fn is_fleet_stream_ended(&self, path: &str) -> bool {
        self.fleet.is_some()
            && path
                .strip_prefix(STREAM_ENDED_PREFIX)
                .is_some_and(crate::fleet::is_replica_id)
    }

    /// The 403 for a missing or wrong signature; every such rejection is counted here.
    fn forbidden(&self) -> Response {
        crate::metrics::Metrics::add(&self.metrics.signature_rejections, 1);
        Response::text(403, "invalid or missing X-Twilio-Signature")
    }

    fn metrics(&self, head: &RequestHead) -> Response {
        if let Some(token) = &self.config.metrics_token {
            let expected = format!("Bearer {}", token.expose());
            let given = head.header("authorization").unwrap_or(b"");
            // Constant time over the expected length; a length mismatch fails anyway.
            let same = given.len() == expected.len()
                && given
                    .iter()
                    .zip(expected.as_bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            if !same {
                return Response::text(401, "metrics need Authorization: Bearer <METRICS_TOKEN>")
                    .header("WWW-Authenticate", "Bearer");
            }
        }
        let mut text = self.metrics.render(self.calls.live_count());
        if let Some(replica) = self.replica() {
            text.push_str(&format!(
                "# HELP ignis_replica_info This replica's id.\n# TYPE ignis_replica_info gauge\n\
                 ignis_replica_info{{replica=\"{replica}\"}} 1\n"
            ));
        }
        if let Some(f) = &self.fleet {
            text.push_str(&format!(
                "# HELP ignis_fleet_bad_notices_total Fleet notices dropped: malformed or queue full.\n\
                 # TYPE ignis_fleet_bad_notices_total counter\nignis_fleet_bad_notices_total {}\n",
                f.bad_notices()
            ));
        }
        Response::new(200)
            .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .body(text.into_bytes())
    }

    /// Checks the signature of a form (or GET) webhook and returns its parameters.
    fn verified_fields(&self, head: &RequestHead, body: &[u8]) -> Result<Fields, Response> {
        let url = self.config.public_url.http_url(&head.target);
        let query = head.query();
        let json_body = query.split('&').any(|p| p.starts_with("bodySHA256="));
        // The signature header first: an unsigned request is 403 whatever its body holds.
        let signature = match head.header("x-twilio-signature") {
            _ if self.config.insecure_skip_signature => None,
            Some(s) => Some(s),
            None => {
                warn!(
                    path = head.path(),
                    "[Twilio] Rejected webhook: no X-Twilio-Signature"
                );
                return Err(self.forbidden());
            }
        };
        let decoded = if head.method == Method::Post && !json_body {
            form::decode(body).map(|f| (f.clone(), f))
        } else {
            // GET webhooks carry their parameters in the signed URL; JSON bodies are covered by
            // bodySHA256 (docs/twilio.md §4.1), so nothing is appended in either case.
            form::decode(query.as_bytes()).map(|f| (f, Vec::new()))
        };
        let (fields, signed_params) = match (decoded, signature) {
            (Ok(d), _) => d,
            // Twilio's parameters always decode (UTF-8, a few dozen): parameters that do not
            // cannot carry its signature, so they are refused like a wrong one.
            (Err(_), Some(_)) => {
                warn!(
                    path = head.path(),
                    "[Twilio] Rejected webhook: signed parameters do not decode"
                );
                return Err(self.forbidden());
            }
            (Err(e), None) => return Err(Response::text(400, &e.to_string())),
        };
        let Some(signature) = signature else {
            return Ok(fields);
        };
        let valid = if json_body {
            self.config.twilio_keys.validate_json(&url, body, signature)
        } else {
            self.config
                .twilio_keys
                .validate_form(&url, &signed_params, signature)
        };
        if !valid {
            warn!(
                path = head.path(),
                "[Twilio] Rejected webhook: invalid signature"
            );
            return Err(self.forbidden());
        }
        Ok(fields)
    }

    /// A signed webhook's parameters, read by `parse`; `Err` is the refusal to answer with
    /// (403 for the signature, 400 for the parameters).
    fn verified_webhook<T>(
        &self,
        head: &RequestHead,
        body: &[u8],
        parse: impl FnOnce(&[(String, String)]) -> Result<T, webhook::ParamError>,
    ) -> Result<T, Response> {
        let fields = self.verified_fields(head, body)?;
        parse(&fields).map_err(|e| Response::text(400, &e.to_string()))
    }

    fn voice(
        &self,
        head: &RequestHead,
        body: &[u8],
        now: Now,
        entropy: &dyn Fn() -> Option<[u8; NONCE_BYTES]>,
    ) -> Action {
        let call = match self.verified_webhook(head, body, webhook::incoming_call) {
            Ok(c) => c,
            Err(resp) => return Action::Respond(resp),
        };
        if let Some(account) = &self.config.twilio_account_sid
            && call.account_sid.as_str() != account
        {
            warn!(call_sid = %call.call_sid, "[Twilio] Voice webhook for another account: refused");
            return Action::Respond(Response::text(403, "AccountSid is not TWILIO_ACCOUNT_SID"));
        }
        if self.is_draining() {
            // docs/replicas.md §5: a replica's is retried elsewhere by the load balancer; a
            // single process has nowhere else to send it and gives the caller the fallback.
            if self.fleet.is_some() {
                info!(call_sid = %call.call_sid, "[Twilio] Draining: voice webhook refused with 503");
                return Action::Respond(
                    Response::text(503, "draining, retry on another replica")
                        .header("Retry-After", "1"),
                );
            }
            info!(call_sid = %call.call_sid, "[Twilio] Draining: answering with the fallback");
            return Action::Respond(self.fallback());
        }
        info!(
            call_sid = %call.call_sid,
            "[Twilio] Incoming call: {} from {} to {}",
            call.call_sid,
            mask_phone(call.from.as_str()),
            mask_phone(call.to.as_str())
        );
        let Some(entropy) = entropy() else {
            warn!(call_sid = %call.call_sid, "[Twilio] No OS randomness for the stream nonce: answering with the fallback");
            return Action::Respond(self.fallback());
        };
        let bound = self.calls.bind(
            &call,
            Nonce::from_entropy(entropy),
            self.config.max_calls,
            now.instant,
        );
        let nonce = match bound {
            Bound::New(n) => n,
            Bound::Repeat(n) => {
                // docs/twilio.md §8.3: the same TwiML, so a Twilio retry still reaches its
                // stream, but no second pre-connect; the nonce stays single-use.
                self.count_replay(&call, "same TwiML, no pre-connect");
                return Action::Respond(self.connect_twiml(&call, n));
            }
            Bound::Answered => {
                self.count_replay(&call, "fallback");
                return Action::Respond(self.fallback());
            }
            Bound::AtCapacity(_) | Bound::Full => {
                warn!(
                    call_sid = %call.call_sid,
                    max_calls = self.config.max_calls,
                    full = bound == Bound::Full,
                    "[Twilio] At the call cap: answering with the fallback"
                );
                crate::metrics::Metrics::add(&self.metrics.calls_over_capacity, 1);
                return Action::Respond(self.fallback());
            }
        };
        let preconnect = head.method != Method::Head;
        if self.fleet.is_some() {
            return Action::FleetBind {
                call,
                nonce,
                preconnect,
            };
        }
        self.voice_answer(call, nonce, preconnect)
    }

    fn voice_answer(&self, call: webhook::IncomingCall, nonce: Nonce, preconnect: bool) -> Action {
        let response = self.connect_twiml(&call, nonce);
        info!(call_sid = %call.call_sid, "[Twilio] Returning TwiML with the call's stream URL");
        if !preconnect {
            return Action::Respond(response);
        }
        Action::Preconnect { response, call }
    }

    /// The voice webhook after its lease transaction ([`Action::FleetBind`]): the stream TwiML
    /// when the lease was granted, else the fallback and the local binding undone
    /// (docs/replicas.md §4.1).
    pub fn voice_bound(
        &self,
        call: webhook::IncomingCall,
        nonce: Nonce,
        preconnect: bool,
        answer: LeaseAnswer,
    ) -> Action {
        if answer == LeaseAnswer::Granted {
            return self.voice_answer(call, nonce, preconnect);
        }
        self.calls
            .forget_pending(call.call_sid.as_str(), Some(nonce));
        match answer {
            LeaseAnswer::AtCapacity(active) => {
                warn!(
                    call_sid = %call.call_sid,
                    max_calls = self.config.max_calls,
                    fleet_active = active,
                    "[Twilio] At the fleet's call cap: answering with the fallback"
                );
                crate::metrics::Metrics::add(&self.metrics.calls_over_capacity, 1);
            }
            LeaseAnswer::Answered => self.count_replay(&call, "fallback (answered elsewhere)"),
            LeaseAnswer::Unavailable | LeaseAnswer::Granted => warn!(
                call_sid = %call.call_sid,
                "[Twilio] Shared database unavailable: answering with the fallback"
            ),
        }
        Action::Respond(self.fallback())
    }

    /// The TwiML connecting `call` to its stream, `wss://<host>/api/twilio/stream/<nonce>`. The
    /// nonce is a path segment, not a `<Parameter>`: Twilio signs the handshake over the full
    /// URL (a query string is not allowed, docs/twilio.md §1.1), so the handshake signature itself is
    /// per call and single-use (docs/twilio.md §8).
    fn connect_twiml(&self, call: &webhook::IncomingCall, nonce: Nonce) -> Response {
        // Fleet mode names the owner: a routing hint for the load balancer, the nonce alone
        // authorises (docs/replicas.md §4.2).
        let (stream_path, action_path) = match &self.fleet {
            Some(f) => (
                format!("{STREAM_PREFIX}{}/{}", f.replica, nonce.to_hex()),
                format!("{STREAM_ENDED_PREFIX}{}", f.replica),
            ),
            None => (
                format!("{STREAM_PREFIX}{}", nonce.to_hex()),
                STREAM_ENDED_PATH.to_owned(),
            ),
        };
        let stream_url = self.config.public_url.ws_url(&stream_path);
        let action_url = self.config.public_url.http_url(&action_path);
        // Informational only: the bridge takes the call's identity from the binding.
        let xml = twiml::connect_stream(
            &stream_url,
            &action_url,
            &[
                ("caller", call.from.as_str()),
                ("called", call.to.as_str()),
                ("callSid", call.call_sid.as_str()),
            ],
        );
        Response::xml(200, xml)
    }

    fn fallback(&self) -> Response {
        Response::xml(200, twiml::fallback(self.config.fallback_number.as_deref()))
    }

    fn count_replay(&self, call: &webhook::IncomingCall, answer: &str) {
        crate::metrics::Metrics::add(&self.metrics.webhook_replays, 1);
        warn!(
            call_sid = %call.call_sid,
            "[Twilio] Voice webhook for a call already answered: {answer}"
        );
    }

    fn stream_ended(&self, head: &RequestHead, body: &[u8]) -> Action {
        let call_sid = match self.verified_webhook(head, body, webhook::call_sid_of) {
            Ok(c) => c,
            Err(resp) => return Action::Respond(resp),
        };
        let outcome = self.calls.outcome(call_sid.as_str());
        if outcome.is_none() && self.fleet.is_some() {
            return Action::FleetStreamEnded {
                call_sid: call_sid.as_str().to_owned(),
            };
        }
        Action::Respond(self.stream_ended_answer(call_sid.as_str(), outcome))
    }

    /// `stream-ended`'s TwiML for `outcome` (`None`: unknown): hang up after a normal end,
    /// else the fallback.
    pub fn stream_ended_answer(&self, call_sid: &str, outcome: Option<Outcome>) -> Response {
        let xml = match outcome {
            Some(o) if o.finished_normally() => twiml::hangup(),
            _ => twiml::fallback(self.config.fallback_number.as_deref()),
        };
        info!(
            call_sid = %call_sid,
            outcome = outcome.map_or("unknown", |o| o.as_str()),
            fallback = !outcome.is_some_and(|o| o.finished_normally()),
            "[Twilio] Stream ended"
        );
        Response::xml(200, xml)
    }

    fn status(&self, head: &RequestHead, body: &[u8], now: Now) -> Action {
        let status = match self.verified_webhook(head, body, webhook::status_callback) {
            Ok(s) => s,
            Err(resp) => return Action::Respond(resp),
        };
        let effect = self.calls.handle_status(
            status.call_sid.as_str(),
            status.status,
            status.sequence,
            now.instant,
        );
        info!(
            call_sid = %status.call_sid,
            status = status.status.as_str(),
            duration_secs = status.duration_secs,
            effect = ?effect,
            "[Twilio] Call status"
        );
        let ended_before_stream = effect == crate::calls::StatusEffect::EndedBeforeStream;
        if self.fleet.is_some() && status.status.is_terminal() {
            return Action::FleetStatus {
                response: Response::new(204),
                call_sid: status.call_sid.as_str().to_owned(),
                ended_before_stream,
            };
        }
        if ended_before_stream {
            return Action::CallEnded {
                response: Response::new(204),
                call_sid: status.call_sid.as_str().to_owned(),
            };
        }
        Action::Respond(Response::new(204))
    }

    fn stream(&self, head: &RequestHead, now: Now) -> Action {
        match websocket_upgrade::check(head) {
            UpgradeCheck::NotUpgrade => Action::Respond(
                Response::text(426, "this endpoint only speaks WebSocket")
                    .header("Upgrade", "websocket")
                    .header("Connection", "Upgrade"),
            ),
            UpgradeCheck::Reject(e) => {
                let mut resp = Response::text(e.status(), &e.to_string());
                if e.status() == 426 {
                    resp = resp.header("Sec-WebSocket-Version", "13");
                }
                Action::Respond(resp)
            }
            UpgradeCheck::Accept(accept) => {
                // The signature first: only Twilio's own handshake may spend a nonce.
                if !self.config.insecure_skip_signature {
                    let url = self.config.public_url.ws_url(&head.target);
                    let valid = head
                        .header("x-twilio-signature")
                        .is_some_and(|sig| self.config.twilio_keys.validate_websocket(&url, sig));
                    if !valid {
                        warn!("[Twilio] Rejected stream handshake: missing or invalid signature");
                        return Action::Respond(self.forbidden());
                    }
                }
                let nonce = head
                    .path()
                    .strip_prefix(STREAM_PREFIX)
                    .map(|n| n.strip_suffix('/').unwrap_or(n));
                if self.fleet.is_some() {
                    return self.fleet_stream(accept, nonce, now);
                }
                match self.calls.claim(nonce, now.instant) {
                    Ok(claim) => Action::Upgrade { accept, claim },
                    Err(reason) => Action::Respond(self.refuse_claim(reason, nonce)),
                }
            }
        }
    }

    /// Fleet mode: the stream URL is `<replica>/<nonce>` (any replica's name is accepted, the
    /// nonce alone authorises); a local binding is confirmed in the database, an unknown nonce
    /// is claimed there (docs/replicas.md §4.2).
    fn fleet_stream(&self, accept: Accept, segment: Option<&str>, now: Now) -> Action {
        let nonce_text = match segment.map(|s| s.split_once('/')) {
            Some(Some((replica, nonce))) if crate::fleet::is_replica_id(replica) => Some(nonce),
            Some(Some(_)) => {
                return Action::Respond(self.refuse_stream(StreamRefusal::Malformed, None));
            }
            Some(None) => segment,
            None => None,
        };
        let nonce = match nonce_text.map(Nonce::parse) {
            None => return Action::Respond(self.refuse_stream(StreamRefusal::NoNonce, None)),
            Some(None) => {
                return Action::Respond(self.refuse_stream(StreamRefusal::Malformed, None));
            }
            Some(Some(n)) => n,
        };
        match self.calls.claim(nonce_text, now.instant) {
            Ok(claim) => Action::FleetClaim {
                accept,
                claim,
                nonce,
            },
            Err(StreamRefusal::Unknown) => Action::FleetAdopt { accept, nonce },
            Err(reason) => Action::Respond(self.refuse_claim(reason, nonce_text)),
        }
    }

    /// A local claim after the database's answer ([`Action::FleetClaim`]): claimed by another
    /// replica first → refused as used (and forgotten here, so this replica does not answer
    /// for the call); confirmed, or no database → the stream runs.
    pub fn stream_confirmed(&self, accept: Accept, claim: Claim, check: ClaimCheck) -> Action {
        if check == ClaimCheck::ClaimedElsewhere {
            let sid = claim.call.call_sid.as_str();
            self.calls.withdraw_claim(sid, claim.stream_id);
            return Action::Respond(self.refuse_stream(StreamRefusal::Used, Some(sid)));
        }
        Action::Upgrade { accept, claim }
    }

    /// An unknown nonce after the database's claim ([`Action::FleetAdopt`]): `row` is the
    /// call another replica answered, now claimed by this one (`None`: no pending unexpired
    /// binding has this nonce, or no database).
    pub fn stream_adopted(&self, accept: Accept, row: Option<&AdoptedRow>, now: Now) -> Action {
        let Some(row) = row else {
            return Action::Respond(self.refuse_stream(StreamRefusal::Unknown, None));
        };
        let Some(call) = row.call() else {
            warn!("[Fleet] Claimed call row does not parse; stream refused");
            return Action::Respond(self.refuse_stream(StreamRefusal::Unknown, None));
        };
        match self.calls.adopt(&call, now.instant) {
            Ok(claim) => {
                info!(call_sid = %call.call_sid, owner = %row.owner, "[Fleet] Stream adopted from another replica");
                Action::Upgrade { accept, claim }
            }
            Err(reason) => Action::Respond(self.refuse_stream(reason, Some(&row.call_sid))),
        }
    }

    /// [`Self::refuse_stream`] for a refused claim of `nonce`: a replay of a known nonce
    /// (used or expired) is logged with its call's CallSid (docs/twilio.md §8.2).
    fn refuse_claim(&self, reason: StreamRefusal, nonce: Option<&str>) -> Response {
        let sid = match reason {
            StreamRefusal::Used | StreamRefusal::Expired => self.calls.call_sid_of(nonce),
            _ => None,
        };
        self.refuse_stream(reason, sid.as_deref())
    }

    /// Counts and logs a refused stream; the 403 for a refused handshake.
    pub fn refuse_stream(&self, reason: StreamRefusal, call_sid: Option<&str>) -> Response {
        self.metrics.stream_refused(reason);
        warn!(
            reason = reason.as_str(),
            call_sid = call_sid.unwrap_or(""),
            "[Twilio] Stream refused: not bound to a voice webhook"
        );
        Response::text(403, "stream not bound to a voice webhook")
    }
}

fn method_not_allowed(allow: &'static str) -> Response {
    Response::text(405, "method not allowed").header("Allow", allow)
}
