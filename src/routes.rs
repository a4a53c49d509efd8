//! Request routing and the webhook handlers: a head and body in, an [`Action`] out. Sans-IO: the
//! driver supplies the time and performs whatever the action says.

use std::time::Instant;

use tracing::{info, warn};

use crate::calls::CallRegistry;
use crate::config::Config;
use crate::http::date;
use crate::http::form::{self, Fields};
use crate::http::websocket_upgrade::{self, Accept, UpgradeCheck};
use crate::http::{Method, RequestHead, Response};
use crate::privacy::mask_phone;
use crate::twilio::{twiml, webhook};

/// Path of the voice webhook.
pub const VOICE_PATH: &str = "/api/twilio/voice";
/// Path of the Media Streams WebSocket.
pub const STREAM_PATH: &str = "/api/twilio/stream";
/// Path Twilio requests when the stream ends (`<Connect action>`).
pub const STREAM_ENDED_PATH: &str = "/api/twilio/stream-ended";
/// Path of the call status callback.
pub const STATUS_PATH: &str = "/api/twilio/status";
/// Path of the health check.
pub const HEALTH_PATH: &str = "/health";
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
    /// Switch to the Media Streams WebSocket.
    Upgrade(Accept),
    /// A practice tool (`admin: false`) or staff admin request: the driver hands it to the
    /// practice store and answers with its JSON reply.
    Practice {
        /// Whether it is the admin API.
        admin: bool,
    },
    /// Send this response and start connecting the call's agent now, so it is ready when the
    /// stream arrives (hides the upstream handshake from the caller).
    Preconnect {
        /// The TwiML response.
        response: Response,
        /// The call.
        call: webhook::IncomingCall,
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
}

impl App {
    /// An application with an empty registry.
    pub fn new(config: Config) -> App {
        App {
            config: std::sync::Arc::new(config),
            calls: CallRegistry::new(),
            practice: None,
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// An application serving the practice tools too.
    pub fn with_practice(config: Config, practice: crate::practice::Practice) -> App {
        App {
            practice: Some(practice),
            ..App::new(config)
        }
    }

    /// Routes one request.
    pub fn handle(&self, head: &RequestHead, body: &[u8], now: Now) -> Action {
        let path = head.path();
        let method = &head.method;
        let respond = Action::Respond;
        match path {
            HEALTH_PATH => match method {
                Method::Get | Method::Head => respond(self.health(now)),
                _ => respond(method_not_allowed("GET, HEAD")),
            },
            METRICS_PATH => match method {
                Method::Get | Method::Head => respond(self.metrics(head)),
                _ => respond(method_not_allowed("GET, HEAD")),
            },
            VOICE_PATH => match method {
                Method::Get | Method::Head | Method::Post => self.voice(head, body),
                _ => respond(method_not_allowed("GET, HEAD, POST")),
            },
            STREAM_ENDED_PATH => match method {
                Method::Post => respond(self.stream_ended(head, body)),
                _ => respond(method_not_allowed("POST")),
            },
            STATUS_PATH => match method {
                Method::Post => respond(self.status(head, body, now)),
                _ => respond(method_not_allowed("POST")),
            },
            STREAM_PATH => match method {
                Method::Get | Method::Head => self.stream(head),
                _ => respond(method_not_allowed("GET, HEAD")),
            },
            p if crate::practice::tools::is_tool_path(p) => Action::Practice { admin: false },
            p if crate::practice::admin::is_admin_path(p) => Action::Practice { admin: true },
            _ => respond(Response::text(404, "not found")),
        }
    }

    fn health(&self, now: Now) -> Response {
        Response::json(
            200,
            format!(
                "{{\"status\":\"ok\",\"timestamp\":\"{}\",\"active_calls\":{}}}",
                date::rfc3339(now.unix_secs),
                self.calls.live_count()
            ),
        )
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
        Response::new(200)
            .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .body(self.metrics.render(self.calls.live_count()).into_bytes())
    }

    /// Checks the signature of a form (or GET) webhook and returns its parameters.
    fn verified_fields(&self, head: &RequestHead, body: &[u8]) -> Result<Fields, Response> {
        let url = self.config.public_url.http_url(&head.target);
        let query = head.query();
        let json_body = query.split('&').any(|p| p.starts_with("bodySHA256="));
        let (fields, signed_params) = if head.method == Method::Post && !json_body {
            let fields = form::decode(body).map_err(|e| Response::text(400, &e.to_string()))?;
            (fields.clone(), fields)
        } else {
            // GET webhooks carry their parameters in the signed URL; JSON bodies are covered by
            // bodySHA256 (docs/twilio.md §4.1), so nothing is appended in either case.
            let fields =
                form::decode(query.as_bytes()).map_err(|e| Response::text(400, &e.to_string()))?;
            (fields, Vec::new())
        };
        if self.config.insecure_skip_signature {
            return Ok(fields);
        }
        let Some(signature) = head.header("x-twilio-signature") else {
            warn!(
                path = head.path(),
                "[Twilio] Rejected webhook: no X-Twilio-Signature"
            );
            return Err(self.forbidden());
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

    fn voice(&self, head: &RequestHead, body: &[u8]) -> Action {
        let call = match self.verified_webhook(head, body, webhook::incoming_call) {
            Ok(c) => c,
            Err(resp) => return Action::Respond(resp),
        };
        info!(
            call_sid = %call.call_sid,
            "[Twilio] Incoming call: {} from {} to {}",
            call.call_sid,
            mask_phone(&call.from),
            mask_phone(&call.to)
        );
        let live = self.calls.live_count();
        if live >= self.config.max_calls {
            warn!(
                call_sid = %call.call_sid,
                live_calls = live,
                max_calls = self.config.max_calls,
                "[Twilio] At the call cap: answering with the fallback"
            );
            crate::metrics::Metrics::add(&self.metrics.calls_over_capacity, 1);
            let xml = twiml::fallback(self.config.fallback_number.as_deref());
            return Action::Respond(Response::xml(200, xml));
        }
        let stream_url = self.config.public_url.ws_url(STREAM_PATH);
        let action_url = self.config.public_url.http_url(STREAM_ENDED_PATH);
        let xml = twiml::connect_stream(
            &stream_url,
            &action_url,
            &[
                ("caller", &call.from),
                ("called", &call.to),
                ("callSid", &call.call_sid),
            ],
        );
        info!(call_sid = %call.call_sid, "[Twilio] Returning TwiML with stream URL: {stream_url}");
        if head.method == Method::Head {
            return Action::Respond(Response::xml(200, xml));
        }
        Action::Preconnect {
            response: Response::xml(200, xml),
            call,
        }
    }

    fn stream_ended(&self, head: &RequestHead, body: &[u8]) -> Response {
        let call_sid = match self.verified_webhook(head, body, webhook::call_sid_of) {
            Ok(c) => c,
            Err(resp) => return resp,
        };
        let outcome = self.calls.outcome(&call_sid);
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

    fn status(&self, head: &RequestHead, body: &[u8], now: Now) -> Response {
        let status = match self.verified_webhook(head, body, webhook::status_callback) {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        let effect = self.calls.handle_status(
            &status.call_sid,
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
        Response::new(204)
    }

    fn stream(&self, head: &RequestHead) -> Action {
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
                Action::Upgrade(accept)
            }
        }
    }
}

fn method_not_allowed(allow: &'static str) -> Response {
    Response::text(405, "method not allowed").header("Allow", allow)
}
