//! One TCP connection: read request heads and bodies under deadlines, answer in order
//! (keep-alive and pipelining), and hand a WebSocket upgrade to tokio-tungstenite together with
//! any bytes that arrived after the head.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::debug;

use super::{Phase, Shared, TaskToken, http_date, now, twilio_socket};
use crate::calls::{Claim, Outcome};
use crate::http::RequestHead;
use crate::http::Response;
use crate::http::body::{self, ChunkedDecoder, Framing};
use crate::http::request_head::{self, Method, Version};
use crate::http::websocket_upgrade::Accept;
use crate::practice::store::CallEnd;
use crate::practice::tools::{ToolReply, ToolRequest};
use crate::routes::{Action, App};

/// Initial read buffer per connection; grows only as a request needs (bounded by the limits).
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// After an error response, how long unread request bytes are drained before closing, so the
/// client reads the response instead of a reset (nginx's lingering close).
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes drained during a lingering close.
const MAX_LINGER_BYTES: usize = 256 * 1024;
/// Longest a tool or admin request waits for the store's answer before it answers 503
/// `unavailable`: under the agent's tool timeout (docs/elevenlabs.md) and nginx's
/// `proxy_read_timeout` (30 s), so the agent gets words it can say, not a timeout.
pub(crate) const TOOL_REPLY_TIMEOUT: Duration = Duration::from_secs(15);

enum ReadError {
    /// The peer closed or the socket failed: nothing to answer.
    Gone,
    /// The deadline passed: answer 408.
    TimedOut,
}

/// Serves one connection until it closes.
pub(super) async fn run(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    token: TaskToken,
) {
    let app = shared.app.clone();
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    // A new connection's first request is due `request_timeout` after the accept (README,
    // "Timeouts"), not after its first byte; later ones after their first byte.
    let mut due = Some(Instant::now() + app.config.request_timeout);
    loop {
        let first = due.is_some();
        if buf.is_empty() && !wait_for_request(&mut stream, &mut buf, &app, &mut phase, first).await
        {
            return;
        }
        let deadline = due
            .take()
            .unwrap_or_else(|| Instant::now() + app.config.request_timeout);
        let Some((head, framing, body)) =
            read_request(&mut stream, &mut buf, peer, &app, deadline).await
        else {
            return;
        };
        match route(&shared, &head, &body, peer).await {
            Action::Respond(resp) => {
                if !respond(&mut stream, &app, &head, resp, &phase).await {
                    return;
                }
            }
            Action::Upgrade { accept, claim } => {
                if framing != Framing::Empty {
                    // The claim ends here: its slot against MAX_CALLS is freed.
                    let sid = claim.call.call_sid.as_str();
                    end_unstreamed_call(&shared, sid, claim.stream_id, Outcome::Refused);
                    return respond_and_close(
                        &app.metrics,
                        &mut stream,
                        Response::text(400, "upgrade request with a body"),
                    )
                    .await;
                }
                let socket = twilio_socket::Socket {
                    shared,
                    phase,
                    token,
                };
                return upgrade(stream, buf, &accept, claim, socket).await;
            }
            // `route` answers these itself.
            _ => return,
        }
    }
}

/// Waits for the first byte of the next request: a new connection gets the request deadline
/// (then 408), an idle keep-alive connection the idle timeout (then a silent close), and idle
/// connections close as soon as the server starts draining. `false`: the connection is done.
async fn wait_for_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    app: &App,
    phase: &mut watch::Receiver<Phase>,
    first: bool,
) -> bool {
    let cfg = &app.config;
    let wait = if first {
        cfg.request_timeout
    } else {
        cfg.idle_timeout
    };
    if *phase.borrow() != Phase::Running {
        return false;
    }
    tokio::select! {
        r = timeout(wait, stream.read_buf(buf)) => match r {
            Ok(Ok(n)) if n > 0 => true,
            Ok(_) => false,
            Err(_) => {
                if first {
                    respond_and_close(&app.metrics, stream, Response::text(408, "request timeout")).await;
                }
                false
            }
        },
        _ = phase.changed() => false,
    }
}

/// Reads one request's head and body before `deadline`, answering `100 Continue` when asked.
/// `None`: the request was refused (already answered, connection closed) or the peer left.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    peer: SocketAddr,
    app: &App,
    deadline: Instant,
) -> Option<(RequestHead, Framing, Vec<u8>)> {
    let metrics = &app.metrics;
    let mut skipped = 0;
    let (head, used) = loop {
        match request_head::empty_lines(buf, skipped) {
            Ok(n) => {
                buf.advance(n);
                skipped += n;
            }
            Err(e) => {
                debug!(%peer, error = %e, "empty lines before a request");
                let resp = Response::text(e.status(), &e.to_string());
                respond_and_close(metrics, stream, resp).await;
                return None;
            }
        }
        // Bytes left from the last request are parsed at once; later ones when a line ends.
        match request_head::parse(buf) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => match read_head_line(stream, buf, deadline).await {
                Ok(()) => {}
                Err(ReadError::Gone) => return None,
                Err(ReadError::TimedOut) => {
                    let resp = Response::text(408, "request timeout");
                    respond_and_close(metrics, stream, resp).await;
                    return None;
                }
            },
            Err(e) => {
                debug!(%peer, error = %e, "bad request head");
                let resp = Response::text(e.status(), &e.to_string());
                respond_and_close(metrics, stream, resp).await;
                return None;
            }
        }
    };
    buf.advance(used);

    let framing = match body::framing(&head) {
        Ok(f) => f,
        Err(e) => {
            debug!(%peer, error = %e, "bad request framing");
            let resp = Response::text(e.status(), &e.to_string());
            respond_and_close(metrics, stream, resp).await;
            return None;
        }
    };
    // An HTTP/1.0 client cannot take a 100 and its expectation is ignored (RFC 9110 §10.1.1).
    if let Some(expect) = head
        .header("expect")
        .filter(|_| head.version != Version::Http10)
    {
        if !expect.eq_ignore_ascii_case(b"100-continue") {
            let resp = Response::text(417, "unsupported expectation");
            respond_and_close(metrics, stream, resp).await;
            return None;
        }
        // Ask for the body only if it is not already here (RFC 9110 §10.1.1), within the
        // request's deadline: a peer that reads nothing must not hold the connection.
        if framing != Framing::Empty && buf.is_empty() {
            let ask = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
            if !matches!(timeout_at(deadline, ask).await, Ok(Ok(()))) {
                return None;
            }
        }
    }

    match read_body(stream, buf, framing, deadline).await {
        Ok(body) => Some((head, framing, body)),
        Err(BodyError::Gone) => None,
        Err(BodyError::Respond(resp)) => {
            respond_and_close(metrics, stream, resp).await;
            None
        }
    }
}

/// What to do with a request: the app decides; pre-connects start here and practice requests
/// run on the store thread, both ending in a response.
async fn route(shared: &Arc<Shared>, head: &RequestHead, body: &[u8], peer: SocketAddr) -> Action {
    let app = &shared.app;
    // The voice webhook's stream nonce: OS randomness, read only when a call is answered.
    let action = app.handle(head, body, now(), &super::os_entropy);
    match super::fleet::route(shared, action).await {
        Action::Preconnect { response, call } => {
            shared.preconnects.start(
                app.clone(),
                shared.tls.clone(),
                call.call_sid.as_str().to_owned(),
                call.from.as_str().to_owned(),
                call.to.as_str().to_owned(),
            );
            Action::Respond(response)
        }
        Action::CallEnded { response, call_sid } => {
            shared.preconnects.cancel(&call_sid);
            // The caller hung up before the stream started: no socket will end this call's
            // row, so it ends here (`completed`), else the staff page shows it live for an hour.
            end_practice_call(app, &call_sid, Outcome::CallerHungUp);
            Action::Respond(response)
        }
        Action::Practice { admin } => Action::Respond(practice_reply(app, head, body, admin).await),
        Action::Staff => Action::Respond(super::staff::reply(app, head, body, peer).await),
        other => other,
    }
}

/// Writes a response; `false` when the connection is done (write failed, or it closes).
async fn respond(
    stream: &mut TcpStream,
    app: &App,
    head: &RequestHead,
    resp: Response,
    phase: &watch::Receiver<Phase>,
) -> bool {
    app.metrics.http_response(resp.status);
    // While draining, each connection serves one request: none outlives the calls it served.
    let close = !head.keep_alive() || *phase.borrow() != Phase::Running || app.is_draining();
    let mut out = Vec::with_capacity(256 + resp.body.len());
    resp.encode_into(&mut out, &http_date(), head.method == Method::Head, close);
    if write_all(stream, &out, app.config.request_timeout)
        .await
        .is_err()
    {
        return false;
    }
    if close {
        let _ = stream.shutdown().await;
        return false;
    }
    true
}

/// Answers 101 and runs the Media Streams socket of `claim` on the connection.
async fn upgrade(
    mut stream: TcpStream,
    buf: BytesMut,
    accept: &Accept,
    claim: Claim,
    socket: twilio_socket::Socket,
) {
    let shared = &socket.shared;
    shared.app.metrics.http_response(101);
    if write_all(
        &mut stream,
        &accept.response_bytes(&http_date()),
        shared.app.config.request_timeout,
    )
    .await
    .is_err()
    {
        // The claim dies with the connection: no stream for this call.
        let sid = claim.call.call_sid.as_str();
        end_unstreamed_call(shared, sid, claim.stream_id, Outcome::StreamLost);
        return;
    }
    // Bytes after the head (a first frame in the same segment) belong to the WebSocket layer.
    let leftover = buf.to_vec();
    drop(buf);
    let ws = WebSocketStream::from_partially_read(
        stream,
        leftover,
        Role::Server,
        Some(twilio_socket::websocket_config()),
    )
    .await;
    twilio_socket::run(ws, claim, socket).await;
}

/// Ends a call whose stream never ran: refused at `start`, lost before it, or its 101 never
/// written. The pre-connected agent goes at once (the nonce is spent: no stream can adopt it),
/// the registry's claim and the fleet's row end, and so does the practice's record, whose tool
/// token would otherwise stay valid until `MAX_CALL_SECS` (docs/twilio.md §8.2).
pub(super) fn end_unstreamed_call(
    shared: &super::Shared,
    call_sid: &str,
    stream_id: u64,
    outcome: Outcome,
) {
    shared.preconnects.cancel(call_sid);
    let app = &shared.app;
    // Only the stream whose claim this was ends the record (a call Twilio ended first has its
    // record ended by the status callback).
    if app
        .calls
        .finish(call_sid, stream_id, outcome, super::instant())
    {
        end_practice_call(app, call_sid, outcome);
    }
    super::fleet::spawn_ended(app, call_sid, outcome);
}

/// Ends the practice's row of a call that never got (or lost) its stream, with the staff
/// page's outcome for `outcome` ([`CallEnd::from_bridge`]: a caller hang-up is `completed`, a
/// refused or lost stream `fallback`). A row already ended is left as it is.
pub(super) fn end_practice_call(app: &App, call_sid: &str, outcome: Outcome) {
    if let Some(p) = &app.practice {
        let end = CallEnd::from_bridge(outcome, false, None);
        p.end_call(call_sid, end, super::practice_now());
    }
}

/// Runs a practice tool or admin request on the store thread and waits for its JSON reply.
async fn practice_reply(app: &App, head: &RequestHead, body: &[u8], admin: bool) -> Response {
    let Some(practice) = &app.practice else {
        return Response::json(503, r#"{"ok":false,"error":"tools_disabled"}"#.to_owned());
    };
    let req = ToolRequest {
        method: head.method.as_str(),
        path: head.path(),
        query: head.query(),
        authorization: head.header("authorization"),
        ignis_call: head.header("x-ignis-call"),
        body,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let reply = move |r: ToolReply| {
        let _ = tx.send(r);
    };
    let now = super::practice_now();
    if admin {
        practice.handle_admin(req, now, reply);
    } else {
        practice.handle_tool(req, now, reply);
    }
    // Bounded: the database's own timeouts (src/pg.rs) end a slow job, this ends the wait for
    // one queued behind it. The agent hears the same "briefly unavailable" either way.
    match tokio::time::timeout(TOOL_REPLY_TIMEOUT, rx).await {
        Ok(Ok(r)) => Response::new(r.status)
            .header("Content-Type", "application/json")
            .header("Cache-Control", "no-store")
            .body(r.body),
        Ok(Err(_)) | Err(_) => {
            let r = crate::practice::tools::error::ToolError::Unavailable.reply();
            Response::new(r.status)
                .header("Content-Type", "application/json")
                .header("Cache-Control", "no-store")
                .body(r.body)
        }
    }
}

/// Reads more bytes into `buf` before `deadline`.
/// Reads until the head has something new for [`request_head::parse`] to look at
/// ([`request_head::worth_parsing`]).
async fn read_head_line(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<(), ReadError> {
    loop {
        let from = buf.len();
        read_more(stream, buf, deadline).await?;
        if request_head::worth_parsing(buf, from) {
            return Ok(());
        }
    }
}

async fn read_more(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<(), ReadError> {
    match timeout_at(deadline, stream.read_buf(buf)).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(_) => Err(ReadError::Gone),
        Err(_) => Err(ReadError::TimedOut),
    }
}

enum BodyError {
    Gone,
    Respond(Response),
}

impl From<ReadError> for BodyError {
    fn from(e: ReadError) -> BodyError {
        match e {
            ReadError::Gone => BodyError::Gone,
            ReadError::TimedOut => BodyError::Respond(Response::text(408, "request timeout")),
        }
    }
}

async fn read_body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    framing: Framing,
    deadline: Instant,
) -> Result<Vec<u8>, BodyError> {
    match framing {
        Framing::Empty => Ok(Vec::new()),
        Framing::Length(n) => {
            buf.reserve(n.saturating_sub(buf.len()));
            while buf.len() < n {
                read_more(stream, buf, deadline).await?;
            }
            Ok(buf.split_to(n).to_vec())
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut out = Vec::new();
            loop {
                let used = decoder
                    .decode(buf, &mut out)
                    .map_err(|e| BodyError::Respond(Response::text(e.status(), &e.to_string())))?;
                buf.advance(used);
                if decoder.is_done() {
                    return Ok(out);
                }
                read_more(stream, buf, deadline).await?;
            }
        }
    }
}

async fn write_all(stream: &mut TcpStream, bytes: &[u8], limit: Duration) -> Result<(), ()> {
    match timeout(limit, stream.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Sends an error response with `Connection: close`, then closes without resetting the
/// connection on the client's unread bytes.
async fn respond_and_close(
    metrics: &crate::metrics::Metrics,
    stream: &mut TcpStream,
    resp: Response,
) {
    metrics.http_response(resp.status);
    let mut out = Vec::new();
    resp.encode_into(&mut out, &http_date(), false, true);
    if write_all(stream, &out, LINGER).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    let _ = timeout(LINGER, async {
        while drained < MAX_LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}
