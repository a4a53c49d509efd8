//! The agent socket: connecting (signed URL for private agents), and pre-connecting while
//! Twilio is still fetching the TwiML so the agent is usually ready when the stream starts.
//!
//! A pre-connect task owns the socket until the stream adopts it: it answers pings (a socket
//! that ignores them would be dropped) and holds everything else, in order and bounded, for the
//! bridge. An unadopted socket is closed after `PRECONNECT_TIMEOUT_MS`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

pub(crate) use super::agent_socket::AgentSocket;
use super::agent_socket::{AgentRead, OpenError};
use super::net::{self, RequestError};
use crate::config::Config;
use crate::elevenlabs::endpoint::{self, MAX_SIGNED_URL_RESPONSE_BYTES, SignedUrlError};
use crate::elevenlabs::messages::{self, AgentEvent, MAX_AGENT_MESSAGE_BYTES};
use crate::http::url::{Endpoint, UrlError};
use crate::practice::calls::{self, CallInfo, CallToken};
use crate::practice::store::StoreError;
use crate::privacy::mask_phone;
use crate::routes::App;
use tokio_rustls::rustls::ClientConfig;

/// How long closing an unadopted pre-connected socket may take.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Agent messages held by an unadopted pre-connect (the greeting's audio may arrive early).
const MAX_EARLY_MESSAGES: usize = 512;
/// Their bytes: ~47 s of `pcm_16000` greeting. The message cap alone would let 1 MiB messages
/// hold 512 MiB per call.
const MAX_EARLY_BYTES: usize = 2 * 1024 * 1024;
/// Kernel send buffer of the agent socket. Left unset, Linux grows it up to `tcp_wmem`'s
/// maximum (4 MiB by default; 3.8 MB of small writes went in before one blocked on loopback
/// here): a stalled agent would take minutes of caller audio to notice, each call pinning
/// megabytes of kernel memory. The kernel doubles this: seconds of caller audio in any format,
/// far more than a round trip needs (the write stall timeout in `twilio_socket.rs` relies on it).
const AGENT_SEND_BUFFER_BYTES: u32 = 64 * 1024;
/// Pre-connects in flight at once; beyond it the stream connects when it starts instead.
const MAX_PRECONNECTS: usize = 4096;
/// A stream's agent link must be ready within this many connect timeouts. Connecting has three
/// stages of up to one connect timeout each (the signed-URL request, TCP and TLS, the WebSocket
/// handshake); an adopted pre-connect may still be in any of them.
const LINK_TIMEOUT_IN_CONNECT_TIMEOUTS: u32 = 3;

/// A connected agent socket handed to a stream.
pub(crate) struct AgentLink {
    pub ws: AgentSocket,
    /// Messages received before adoption, in order (pings already answered).
    pub early: Vec<String>,
    /// Messages dropped before adoption, over [`MAX_EARLY_MESSAGES`] or [`MAX_EARLY_BYTES`].
    pub early_dropped: u64,
    /// How long connecting took.
    pub connect_time: Duration,
}

/// Why the agent could not be reached. Each is fatal for the call's agent (the caller goes to
/// the fallback).
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// No `ELEVENLABS_AGENT_ID` configured.
    NoAgent,
    /// The public agent URL or the signed URL does not parse.
    AgentUrl(UrlError),
    /// The signed-URL request could not be built.
    SignedUrlRequest(SignedUrlError),
    /// The signed-URL request failed or its answer was refused.
    SignedUrl(RequestError<SignedUrlError>),
    /// TCP or TLS to the conversation socket failed.
    Connect(std::io::Error),
    /// The WebSocket handshake failed.
    Handshake(OpenError),
    /// Writing `conversation_initiation_client_data` failed.
    FirstWrite(std::io::Error),
    /// A stage, or the whole link, took longer than allowed.
    TimedOut,
    /// The socket closed before the stream adopted it.
    Closed,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::NoAgent => f.write_str("ELEVENLABS_AGENT_ID is not set"),
            ConnectError::AgentUrl(e) => write!(f, "bad agent URL: {e}"),
            ConnectError::SignedUrlRequest(e) => write!(f, "{e}"),
            // The signed-URL errors name ElevenLabs themselves; I/O errors do not.
            ConnectError::SignedUrl(RequestError::Response(e)) => write!(f, "{e}"),
            ConnectError::SignedUrl(e) => write!(f, "ElevenLabs signed-URL request: {e}"),
            ConnectError::Connect(e) => write!(f, "connect: {e}"),
            ConnectError::Handshake(e) => write!(f, "WebSocket: {e}"),
            ConnectError::FirstWrite(e) => write!(f, "WebSocket: {e}"),
            ConnectError::TimedOut => f.write_str("timed out"),
            ConnectError::Closed => f.write_str("agent socket closed before the call started"),
        }
    }
}

/// The dynamic variables for a call: always all eleven (docs/elevenlabs.md §2.1: a referenced
/// variable that is missing ends the conversation with `missing_dynamic_variable`, and the caller
/// would land on the fallback for a reason that has nothing to do with the agent). With the
/// practice they carry the per-call tool token whose hash the store keeps. On every fallback path
/// (no practice, no OS randomness, the store's queue refused the registration) the token is
/// [`calls::NO_CALL_TOKEN`], which every tool refuses, and without a practice its facts are empty.
///
/// `refused` fires if the store already holds this CallSid ([`StoreError::CallExists`]): a
/// webhook replayed after the registry forgot its call (docs/twilio.md §8.5). The pre-connect
/// then drops its agent socket instead of holding a conversation nobody will adopt.
///
/// `adopted`: a started stream connects the agent itself (see [`link`]): the call's row, if
/// there is one, gets this token instead (`Practice::adopt_call`, docs/replicas.md §4.2).
pub(crate) fn call_variables(
    app: &App,
    call_sid: &str,
    caller: &str,
    called: &str,
    refused: Option<oneshot::Sender<()>>,
    adopted: bool,
) -> Map<String, Value> {
    let info = CallInfo {
        call_sid,
        caller_number: caller,
        called_number: called,
    };
    let Some(practice) = &app.practice else {
        return calls::dynamic_variables_without_practice(&info);
    };
    let now = super::practice_now();
    let unregistered = |info: &CallInfo<'_>| {
        calls::dynamic_variables(&CallToken::unregistered(), info, &practice.config(), now)
    };
    let Some(entropy) = super::os_entropy() else {
        warn!("[Practice] No OS randomness: the call gets no tool token");
        return unregistered(&info);
    };
    // The agent connects without waiting for the registration's commit: it is queued ahead of
    // any tool request the agent can make (see `Practice::start_call`).
    let sid = call_sid.to_owned();
    let register = if adopted {
        crate::practice::Practice::adopt_call
    } else {
        crate::practice::Practice::start_call
    };
    let queued = register(practice, info.clone(), entropy, now, move |r| match r {
        Err(StoreError::CallExists) => {
            warn!(call_sid = %sid, "[Practice] Call already registered: a replayed webhook; its agent is dropped");
            if let Some(tx) = refused {
                let _ = tx.send(());
            }
        }
        Err(e) => {
            warn!(call_sid = %sid, error = %e, "[Practice] Cannot register the call; its tools will be refused");
        }
        Ok(()) => {}
    });
    match queued {
        Ok(vars) => vars,
        Err(e) => {
            warn!(error = %e, "[Practice] Cannot register the call; its tools will be refused");
            unregistered(&info)
        }
    }
}

/// A stream's agent link, resolving once the socket is ready (or failed).
pub(crate) type LinkFuture = Pin<Box<dyn Future<Output = Result<AgentLink, ConnectError>> + Send>>;

/// The agent link for a started stream: the call's pre-connected socket if there is one, else a
/// fresh connect; either way within [`LINK_TIMEOUT_IN_CONNECT_TIMEOUTS`] connect timeouts.
///
/// A fresh connect registers its token as an adoption ([`call_variables`] with `adopted`): the
/// call's record may exist already, made by a pre-connect that gave up before the stream came
/// (`PRECONNECT_TIMEOUT_MS`) or by the replica that answered the webhook, and the stream, signed
/// and bound to that webhook, takes it over. Registered as new, it would meet `CallExists` and
/// leave the agent with a token no tool accepts.
pub(crate) fn link(
    shared: &super::Shared,
    call_sid: &str,
    caller: String,
    called: String,
) -> LinkFuture {
    let app = shared.app.clone();
    let limit = app.config.elevenlabs_connect_timeout * LINK_TIMEOUT_IN_CONNECT_TIMEOUTS;
    if let Some(rx) = shared.preconnects.adopt(call_sid) {
        debug!("[ElevenLabs] Adopting the pre-connected agent");
        return Box::pin(async move {
            match tokio::time::timeout(limit, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(ConnectError::Closed),
                Err(_) => Err(ConnectError::TimedOut),
            }
        });
    }
    let tls = shared.tls.clone();
    let sid = call_sid.to_owned();
    Box::pin(async move {
        let vars = call_variables(&app, &sid, &caller, &called, None, true);
        let t0 = Instant::now();
        match tokio::time::timeout(limit, connect(&app.config, &tls, &vars)).await {
            Ok(Ok(ws)) => Ok(AgentLink {
                ws,
                early: Vec::new(),
                early_dropped: 0,
                connect_time: t0.elapsed(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError::TimedOut),
        }
    })
}

/// Connects to the agent and writes `conversation_initiation_client_data` before anything
/// else (docs/elevenlabs.md §1.7).
pub(crate) async fn connect(
    config: &Config,
    tls: &Arc<ClientConfig>,
    vars: &Map<String, Value>,
) -> Result<AgentSocket, ConnectError> {
    let agent_id = config
        .elevenlabs_agent_id
        .as_deref()
        .ok_or(ConnectError::NoAgent)?;
    let timeout = config.elevenlabs_connect_timeout;
    let base = &config.elevenlabs_api_base;
    let url = match &config.elevenlabs_api_key {
        Some(key) => {
            let (ep, req) = endpoint::signed_url_request(base, agent_id, key.expose())
                .map_err(ConnectError::SignedUrlRequest)?;
            net::request(
                &ep,
                tls,
                &req,
                timeout,
                MAX_SIGNED_URL_RESPONSE_BYTES,
                endpoint::parse_signed_url_response,
            )
            .await
            .map_err(ConnectError::SignedUrl)?
        }
        None => endpoint::public_agent_url(base, agent_id).map_err(ConnectError::AgentUrl)?,
    };
    let ep = Endpoint::parse(&url).map_err(ConnectError::AgentUrl)?;
    let stream = net::connect_with(&ep, tls, timeout, Some(AGENT_SEND_BUFFER_BYTES))
        .await
        .map_err(ConnectError::Connect)?;
    let mut ws = AgentSocket::open(stream, &ep, MAX_AGENT_MESSAGE_BYTES, timeout)
        .await
        .map_err(|e| match e {
            OpenError::TimedOut => ConnectError::TimedOut,
            e => ConnectError::Handshake(e),
        })?;
    let init = messages::initiation_client_data(vars, config.elevenlabs_override.as_ref());
    ws.send_text(&init)
        .await
        .map_err(ConnectError::FirstWrite)?;
    Ok(ws)
}

type Ticket = oneshot::Sender<Result<AgentLink, ConnectError>>;

/// Pre-connected agent sockets waiting for their stream, by CallSid.
#[derive(Default)]
pub(crate) struct Preconnects {
    waiting: Mutex<HashMap<String, oneshot::Sender<Ticket>>>,
}

impl Preconnects {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, oneshot::Sender<Ticket>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts connecting for `call_sid` in the background.
    pub(crate) fn start(
        self: &Arc<Self>,
        app: Arc<App>,
        tls: Arc<ClientConfig>,
        call_sid: String,
        caller: String,
        called: String,
    ) {
        let (tx, rx) = oneshot::channel();
        {
            let mut map = self.lock();
            if map.len() >= MAX_PRECONNECTS || map.contains_key(&call_sid) {
                return;
            }
            map.insert(call_sid.clone(), tx);
        }
        let span = tracing::info_span!("preconnect", call_sid = %call_sid);
        let this = self.clone();
        tokio::spawn(
            async move {
                debug!(caller = %mask_phone(&caller), "[ElevenLabs] Pre-connecting");
                let (refused_tx, refused_rx) = oneshot::channel();
                let vars =
                    call_variables(&app, &call_sid, &caller, &called, Some(refused_tx), false);
                preconnect(&app.config, tls, &vars, rx, refused_rx).await;
                this.lock().remove(&call_sid);
            }
            .instrument(span),
        );
    }

    /// Lets go of the pre-connect for `call_sid`, if any (the call ended before its stream):
    /// its task sees the dropped sender, closes the agent socket and ends.
    pub(crate) fn cancel(&self, call_sid: &str) {
        self.lock().remove(call_sid);
    }

    /// Lets go of every pre-connect: the server has stopped and no stream can adopt one. Each
    /// task ends at once (a held failure is not kept until its deadline), so none keeps the
    /// practice store open past shutdown.
    pub(crate) fn cancel_all(&self) {
        self.lock().clear();
    }

    /// Takes the pre-connect for `call_sid`, if there is one; the receiver yields the socket
    /// once connected.
    pub(crate) fn adopt(
        &self,
        call_sid: &str,
    ) -> Option<oneshot::Receiver<Result<AgentLink, ConnectError>>> {
        let waiting = self.lock().remove(call_sid)?;
        let (tx, rx) = oneshot::channel();
        waiting.send(tx).ok()?;
        Some(rx)
    }
}

async fn preconnect(
    config: &Config,
    tls: Arc<ClientConfig>,
    vars: &Map<String, Value>,
    mut ticket_rx: oneshot::Receiver<Ticket>,
    refused_rx: oneshot::Receiver<()>,
) {
    let started = Instant::now();
    let deadline = started + config.preconnect_timeout;
    let connecting = connect(config, &tls, vars);
    tokio::pin!(connecting);
    // Resolves only when the store refused the call; a registration that went through drops
    // the sender, and then this never resolves.
    let refused = async move {
        if refused_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(refused);

    // Phase 1: connecting, while the stream may already be asking for the socket.
    let (mut ws, mut ticket) = tokio::select! {
        r = &mut connecting => match r {
            Ok(ws) => (ws, None),
            Err(e) => return fail(e, ticket_rx, deadline).await,
        },
        t = &mut ticket_rx => match t {
            Ok(ticket) => match connecting.await {
                Ok(ws) => (ws, Some(ticket)),
                Err(e) => {
                    warn!(error = %e, "[ElevenLabs] Agent connect failed");
                    let _ = ticket.send(Err(e));
                    return;
                }
            },
            Err(_) => return,
        },
        () = &mut refused => return,
        () = tokio::time::sleep_until(deadline) => {
            info!("[ElevenLabs] Pre-connect not adopted in time; dropped");
            return;
        }
    };
    let connect_time = started.elapsed();
    debug!(
        connect_ms = connect_time.as_millis() as u64,
        "[ElevenLabs] Pre-connected"
    );

    // Phase 2: keep the socket alive until the stream takes it.
    let mut early: Vec<String> = Vec::new();
    let (mut early_bytes, mut dropped) = (0, 0u64);
    let ticket = loop {
        if let Some(t) = ticket.take() {
            break t;
        }
        tokio::select! {
            t = &mut ticket_rx => match t {
                Ok(t) => break t,
                Err(_) => return ws.close(CLOSE_WAIT).await,
            },
            m = ws.read() => match m {
                AgentRead::Text => {
                    let text = ws.text();
                    if let Ok(AgentEvent::Ping { event_id, .. }) = messages::parse(text) {
                        ws.feed_text(&messages::pong(event_id));
                    } else if early.len() < MAX_EARLY_MESSAGES
                        && early_bytes + text.len() <= MAX_EARLY_BYTES
                    {
                        early_bytes += text.len();
                        early.push(text.to_owned());
                    } else {
                        dropped += 1;
                    }
                }
                AgentRead::Pinged => {}
                AgentRead::Closed(_) | AgentRead::Failed(_) => {
                    // The close frame the read queued goes out now, not at the deadline.
                    ws.finish(CLOSE_WAIT).await;
                    return fail(ConnectError::Closed, ticket_rx, deadline).await;
                }
            },
            () = &mut refused => return ws.close(CLOSE_WAIT).await,
            () = tokio::time::sleep_until(deadline) => {
                info!("[ElevenLabs] Pre-connected agent not adopted in time; closing");
                return ws.close(CLOSE_WAIT).await;
            }
        }
        // Pongs, JSON or WebSocket-level, go out at once (docs/elevenlabs.md §3.1).
        if ws.wants_flush() && ws.flush().await.is_err() {
            return fail(ConnectError::Closed, ticket_rx, deadline).await;
        }
    };
    if dropped > 0 {
        warn!(
            dropped,
            "[ElevenLabs] Pre-connect held its most; later agent messages dropped"
        );
    }
    let _ = ticket.send(Ok(AgentLink {
        ws,
        early,
        early_dropped: dropped,
        connect_time,
    }));
}

/// Keeps a failure until the stream asks for it (so it learns at once) or the deadline.
async fn fail(error: ConnectError, ticket_rx: oneshot::Receiver<Ticket>, deadline: Instant) {
    warn!(error = %error, "[ElevenLabs] Agent connect failed");
    if let Ok(Ok(ticket)) = tokio::time::timeout_at(deadline, ticket_rx).await {
        let _ = ticket.send(Err(error));
    }
}
