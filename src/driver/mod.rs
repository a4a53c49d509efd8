//! The driver: the only layer that owns sockets, tasks and the clock.
//!
//! [`serve`] runs the accept loop with a connection cap and the shutdown choreography
//! (mini-redis style): on the shutdown signal it keeps serving what live calls need while they
//! run (new calls get the fallback), closes the ones left at the drain deadline, answers what
//! Twilio asks after the last stream for a few seconds more, then stops accepting and waits for
//! every task to end.

mod agent;
mod agent_socket;
pub mod caller;
pub mod commands;
mod connection;
pub mod demo;
pub mod fleet;
pub mod local_agent;
mod net;
pub mod setup;
pub mod sim;
pub mod staff;
pub mod startup;
mod transfer;
mod twilio_socket;
mod wake_gate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{Instrument, info, warn};

use crate::calls::TeardownReason;
use crate::http::{Response, date};
use crate::routes::{App, Now};

/// Connections being refused with 503 at once; past this, excess connections are dropped
/// without an answer rather than spending memory on them.
const MAX_PENDING_REJECTIONS: usize = 64;
/// Time allowed to write a 503 to a refused connection.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// After the drain deadline, time given to sessions to send their close frames.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How often ended calls are swept from the registry.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Drain: how often a draining server checks whether its last call ended.
const DRAIN_CHECK: Duration = Duration::from_millis(200);
/// Drain: how long the listener stays open after the last call ended (or was closed at the
/// deadline). Twilio asks the `<Connect action>` URL (`stream-ended`) and sends the status
/// callback right after a stream closes, and the first decides what the caller hears next
/// (the fallback for a call closed by the shutdown): a closed port would get Twilio's error
/// message instead (docs/replicas.md §5).
const STREAM_ENDED_GRACE: Duration = Duration::from_secs(3);

/// Lifecycle phase broadcast to every task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Serving normally.
    Running,
    /// No new connections any more (the calls are over, or were closed at the deadline); idle
    /// HTTP connections close, what is left continues.
    Draining,
    /// What is still open after that closes now.
    Closing,
}

/// Reads the clock: the one place wall and monotonic time enter the program.
pub fn now() -> Now {
    let unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Now {
        unix_secs,
        instant: Instant::now(),
    }
}

/// The monotonic clock alone, for the audio path: [`now`] also reads the wall clock, a second
/// `clock_gettime` per message that the call loop does not need.
pub fn instant() -> Instant {
    Instant::now()
}

/// The current time for the practice (civil dates in Europe/Berlin are derived from it).
pub(crate) fn practice_now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// Fills `buf` from the operating system's random source.
pub fn os_random(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// `bytes` random bytes from the operating system, as lowercase hex (secrets, demo SIDs).
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    os_random(&mut buf)?;
    Ok(crate::secret::hex_lower(&buf))
}

/// 16 bytes for a call's tool token. `None` when the random source cannot be read: the call
/// then gets no token and its tool requests fail closed.
pub(crate) fn os_entropy() -> Option<[u8; 16]> {
    let mut buf = [0u8; 16];
    os_random(&mut buf).ok()?;
    Some(buf)
}

/// The current `Date` header value.
pub(crate) fn http_date() -> String {
    date::imf_fixdate(now().unix_secs)
}

/// State the driver's tasks share.
pub(crate) struct Shared {
    /// Routes, configuration and the call registry.
    pub app: Arc<App>,
    /// Agent sockets connected ahead of their stream.
    pub preconnects: Arc<agent::Preconnects>,
    /// TLS client configuration for the agent, the signed URL and Twilio's REST API.
    pub tls: Arc<tokio_rustls::rustls::ClientConfig>,
}

/// Handles every task holds; when all are dropped the server has finished.
#[derive(Clone)]
pub(crate) struct TaskToken(#[allow(dead_code)] mpsc::Sender<()>);

/// The accept loop's state.
struct Acceptor {
    listener: TcpListener,
    shared: Arc<Shared>,
    phase_rx: watch::Receiver<Phase>,
    token: TaskToken,
    connections: Arc<Semaphore>,
    rejections: Arc<Semaphore>,
    sweep: tokio::time::Interval,
    retention: tokio::time::Interval,
    /// Reloads the staff page's closures (another replica's changes).
    closures: tokio::time::Interval,
}

impl Acceptor {
    /// Accepts connections (and runs the periodic sweeps) until `until` completes.
    async fn run(&mut self, until: impl Future<Output = ()>) {
        tokio::pin!(until);
        let app = self.shared.app.clone();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // EMFILE and friends: back off briefly instead of spinning.
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    match self.connections.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let shared = self.shared.clone();
                            let phase = self.phase_rx.clone();
                            let token = self.token.clone();
                            let span = replica_span(&app);
                            tokio::spawn(async move {
                                connection::run(stream, peer, shared, phase, token).await;
                                drop(permit);
                            }.instrument(span));
                        }
                        Err(_) => refuse(stream, peer, &self.rejections),
                    }
                }
                _ = self.sweep.tick() => app.calls.sweep(Instant::now()),
                _ = self.retention.tick(), if app.practice.is_some() => {
                    if let Some(p) = &app.practice {
                        p.run_retention(practice_now(), |r| match r {
                            Ok(report) => info!(?report, "practice retention ran"),
                            Err(e) => warn!(error = %e, "practice retention failed"),
                        });
                    }
                }
                _ = self.closures.tick(), if app.practice.is_some() => {
                    if let Some(p) = &app.practice {
                        p.reload_closures(practice_now());
                    }
                }
                () = &mut until => return,
            }
        }
    }
}

/// A span naming this replica (`replica` field) for a task's logs, when it has an id
/// (docs/replicas.md §5); none otherwise.
pub(crate) fn replica_span(app: &App) -> tracing::Span {
    match app.replica() {
        Some(r) => tracing::info_span!("replica", replica = %r),
        None => tracing::Span::none(),
    }
}

/// The drain (docs/replicas.md §5): resolves when no call of this process is pending, claimed
/// or live.
async fn calls_done(app: &App) {
    while app.calls.active_count(Instant::now()) > 0 {
        tokio::time::sleep(DRAIN_CHECK).await;
    }
}

/// Serves HTTP and Media Streams on `listener` until `shutdown` completes, then drains. The
/// listener stays open while draining: a live call still needs new requests (the agent's tools,
/// Twilio's `stream-ended` and status callbacks, the stream of a call answered just before).
/// New voice webhooks get the fallback (fleet mode: 503, the load balancer retries them
/// elsewhere); everything else is served until the calls are over or were closed at the drain
/// deadline, and [`STREAM_ENDED_GRACE`] after that (docs/replicas.md §5).
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let tls = net::tls_config(app.config.extra_ca_file.as_deref())
        .map_err(|e| std::io::Error::new(e.kind(), format!("EXTRA_CA_FILE: {e}")))?;
    let shared = Arc::new(Shared {
        app: app.clone(),
        preconnects: Arc::new(agent::Preconnects::default()),
        tls,
    });
    let fleet_tasks = fleet::Tasks::start(&shared);
    let mut acceptor = Acceptor {
        listener,
        shared,
        phase_rx,
        token: TaskToken(done_tx),
        connections: Arc::new(Semaphore::new(app.config.max_connections)),
        rejections: Arc::new(Semaphore::new(MAX_PENDING_REJECTIONS)),
        sweep: tokio::time::interval(SWEEP_INTERVAL),
        retention: tokio::time::interval(crate::practice::retention::RETENTION_INTERVAL),
        closures: tokio::time::interval(crate::practice::closures::CLOSURES_RELOAD_INTERVAL),
    };
    acceptor.run(shutdown).await;
    let signalled = Instant::now();
    app.set_draining();
    let deadline = tokio::time::Instant::now() + app.config.drain;
    let active_calls = app.calls.active_count(signalled);
    let drain_secs = app.config.drain.as_secs();
    if let Some(f) = &app.fleet {
        info!(
            active_calls,
            drain_secs, "shutdown: draining; new calls go to other replicas"
        );
        // Say so at once rather than at the next beat: the load balancer stops sending calls.
        fleet::beat(&app, f).await;
    } else {
        info!(
            active_calls,
            drain_secs, "shutdown: draining; new calls get the fallback"
        );
    }
    // A call that ended just before the signal may still have its `stream-ended` to come.
    let recent = app.calls.ended_within(signalled, STREAM_ENDED_GRACE);
    drain_while_accepting(&mut acceptor, &app, deadline, active_calls > 0 || recent).await;
    let Acceptor {
        listener,
        token,
        shared,
        ..
    } = acceptor;
    drop(listener);
    let live = app.calls.live_count();
    info!(
        live_calls = live,
        drain_secs = app.config.drain.as_secs(),
        "shutdown: no longer accepting; draining"
    );
    let _ = phase_tx.send(Phase::Draining);
    drop(token);

    let drained = tokio::time::timeout_at(deadline, done_rx.recv()).await;
    if drained.is_err() {
        let closed = app.calls.teardown_all(TeardownReason::Shutdown);
        info!(
            closed_calls = closed,
            "shutdown: closing the connections that are left"
        );
        let _ = phase_tx.send(Phase::Closing);
        if tokio::time::timeout(CLOSE_GRACE, done_rx.recv())
            .await
            .is_err()
        {
            warn!("shutdown: some connections did not close in time");
        }
    }
    // No stream can come any more: pre-connects waiting for one (a webhook whose stream never
    // came, or a failure kept until its deadline) would hold the store open for up to
    // `PRECONNECT_TIMEOUT_MS` after shutdown.
    shared.preconnects.cancel_all();
    fleet_tasks.stop(&app).await;
    info!("shutdown complete");
    Ok(())
}

/// The drain's first part, still accepting: until the calls are over or the deadline, when the
/// live ones are closed; then, if there were calls, [`STREAM_ENDED_GRACE`] for what Twilio
/// sends after their streams closed.
async fn drain_while_accepting(
    acceptor: &mut Acceptor,
    app: &App,
    deadline: tokio::time::Instant,
    had_calls: bool,
) {
    let until = async {
        tokio::select! {
            () = calls_done(app) => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    };
    acceptor.run(until).await;
    if tokio::time::Instant::now() >= deadline {
        let closed = app.calls.teardown_all(TeardownReason::Shutdown);
        info!(
            closed_calls = closed,
            "shutdown: drain deadline reached; closing live calls"
        );
    }
    if had_calls {
        acceptor.run(tokio::time::sleep(STREAM_ENDED_GRACE)).await;
    }
}

/// Answers a connection over the cap with 503 and closes it, without holding a permit.
fn refuse(mut stream: TcpStream, peer: SocketAddr, rejections: &Arc<Semaphore>) {
    let Ok(permit) = rejections.clone().try_acquire_owned() else {
        return; // Dropping the socket closes it.
    };
    warn!(%peer, "connection cap reached: answering 503");
    tokio::spawn(async move {
        let mut out = Vec::new();
        Response::text(503, "server busy, retry shortly")
            .header("Retry-After", "1")
            .encode_into(&mut out, &http_date(), false, true);
        let _ = tokio::time::timeout(REJECT_WRITE_TIMEOUT, async {
            stream.write_all(&out).await?;
            stream.shutdown().await
        })
        .await;
        drop(permit);
    });
}
