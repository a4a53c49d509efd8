//! The fleet's I/O (docs/replicas.md §3–5): runs the statements of [`crate::fleet::sql`], the
//! heartbeat and the `LISTEN` task, and carries the fleet actions of [`App::handle`] through
//! the database and back into the App. What to do with each answer is decided in
//! `crate::fleet` and `crate::routes`; nothing here waits on the audio path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;
use tracing::{Instrument, debug, info, warn};

use super::Shared;
use crate::calls::{Nonce, Outcome};
use crate::fleet::{
    self, Addressed, AdoptedRow, CallMark, ClaimCheck, EndedDecision, EndedRow, Fleet, LeaseAnswer,
    Notice, sql,
};
use crate::pg::{Database, PgError};
use crate::routes::{Action, App};
use crate::twilio::webhook::IncomingCall;

/// Longest the voice webhook's lease transaction or a handshake's claim may take; past it the
/// database counts as unavailable (fallback TwiML, or the local claim stands).
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// How often shutdown looks whether the call ends being written are done.
const ENDS_IN_FLIGHT_POLL: Duration = Duration::from_millis(10);
/// Notices waiting for the dispatcher; beyond it they are dropped (and counted as bad).
const NOTICE_QUEUE: usize = 256;
/// First and longest pause before the LISTEN connection is opened again.
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(200);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Random bytes in a default replica id's suffix (4 hex digits).
const REPLICA_SUFFIX_BYTES: usize = 2;
/// Deferred call ends written per heartbeat at most (the rest wait for the next beats).
const FLUSH_ENDS_PER_BEAT: usize = 100;

/// This replica's id: `REPLICA_ID`, else `<hostname>-<4 hex random>`.
pub fn replica_id(configured: Option<&str>) -> String {
    if let Some(id) = configured {
        return id.to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let suffix = super::random_hex(REPLICA_SUFFIX_BYTES).unwrap_or_else(|_| "0000".into());
    fleet::default_replica_id(&host, &suffix)
}

/// Joins the fleet: applies the `fleet` migrations, waits out the heartbeat of a previous
/// process with the same id (one that crashed a moment ago) and refuses an id a running
/// process heartbeats as, ends the streams a previous process left (their leases must not come
/// back with the new heartbeat), writes the first heartbeat.
pub async fn open(db: Database, replica: String) -> Result<Arc<Fleet>, PgError> {
    db.migrate("fleet", fleet::FLEET_MIGRATIONS).await?;
    // A crashed process's heartbeat goes stale within LEASE_TTL; one still fresh after that
    // belongs to a running process: two replicas with one id would end each other's calls.
    let deadline = Instant::now() + fleet::LEASE_TTL + fleet::HEARTBEAT_INTERVAL;
    while !try_join(&db, &replica).await? {
        if Instant::now() >= deadline {
            return Err(PgError::ReplicaIdInUse(replica));
        }
        info!(replica = %replica, "[Fleet] Waiting for the last heartbeat of this REPLICA_ID to go stale");
        tokio::time::sleep(fleet::HEARTBEAT_INTERVAL).await;
    }
    let fleet = Arc::new(Fleet::new(replica, db));
    fleet.heartbeat_ok(Instant::now());
    info!(replica = %fleet.replica, db = %fleet.db.url(), "[Fleet] Joined");
    Ok(fleet)
}

/// One attempt to join as `replica`: `false` while another process heartbeats as it. The check,
/// the ending of a previous process's streams and the first heartbeat are one transaction under
/// [`fleet::JOIN_LOCK_KEY`], so two processes started at the same moment with one id cannot both
/// see it free (docs/replicas.md §3).
async fn try_join(db: &Database, replica: &str) -> Result<bool, PgError> {
    let mut client = db.client().await?;
    let tx = client.transaction().await?;
    tx.execute(sql::LOCK, &[&fleet::JOIN_LOCK_KEY]).await?;
    let ttl = fleet::LEASE_TTL.as_secs_f64();
    let alive = tx
        .query_opt(sql::REPLICA_ALIVE, &[&replica, &ttl])
        .await?
        .is_some_and(|r| r.get::<_, bool>(0));
    if alive {
        return Ok(false);
    }
    let left = tx
        .execute(
            sql::END_OWN_STREAMS,
            &[&replica, &Outcome::StreamLost.as_str()],
        )
        .await?;
    if left > 0 {
        warn!(
            rows = left,
            "[Fleet] Ended calls a previous process of this replica left open"
        );
    }
    tx.execute(sql::HEARTBEAT, &[&replica, &false]).await?;
    tx.commit().await?;
    Ok(true)
}

async fn timed<T>(f: impl std::future::Future<Output = Result<T, PgError>>) -> Result<T, PgError> {
    tokio::time::timeout(QUERY_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(PgError::Unavailable("query timed out".into())))
}

/// The voice webhook's lease transaction (docs/replicas.md §4.1).
async fn bind(fleet: &Fleet, call: &IncomingCall, nonce: Nonce, max_calls: usize) -> LeaseAnswer {
    let run = async {
        let mut client = fleet.db.client().await?;
        let tx = client.transaction().await?;
        tx.execute(sql::LOCK, &[&fleet::FLEET_LOCK_KEY]).await?;
        let ttl = fleet::LEASE_TTL.as_secs_f64();
        let active: i64 = tx.query_one(sql::COUNT_LEASES, &[&ttl]).await?.try_get(0)?;
        if active >= max_calls as i64 {
            return Ok(LeaseAnswer::AtCapacity(active));
        }
        let hash = nonce.hash().to_vec();
        let binding = crate::calls::BINDING_TTL.as_secs_f64();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
            &call.call_sid.as_str(),
            &fleet.replica,
            &hash,
            &call.account_sid.as_str(),
            &call.from.as_str(),
            &call.to.as_str(),
            &binding,
        ];
        let inserted = tx.execute(sql::INSERT_CALL, &params).await?;
        tx.commit().await?;
        Ok::<_, PgError>(if inserted == 1 {
            LeaseAnswer::Granted
        } else {
            LeaseAnswer::Answered
        })
    };
    match timed(run).await {
        Ok(a) => a,
        Err(e) => {
            warn!(call_sid = %call.call_sid, error = %e, "[Fleet] Lease transaction failed");
            LeaseAnswer::Unavailable
        }
    }
}

/// Confirms a local claim in the database (docs/replicas.md §4.2).
async fn confirm_claim(fleet: &Fleet, nonce: Nonce) -> ClaimCheck {
    let hash = nonce.hash().to_vec();
    let run = async {
        let client = fleet.db.client().await?;
        let row = client
            .query_one(sql::CONFIRM_CLAIM, &[&hash, &fleet.replica])
            .await?;
        Ok::<_, PgError>(ClaimCheck::from_counts(row.try_get(0)?, row.try_get(1)?))
    };
    match timed(run).await {
        Ok(ClaimCheck::Unconfirmed) => {
            warn!("[Fleet] Claimed stream has no shared row; running it locally");
            ClaimCheck::Unconfirmed
        }
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "[Fleet] Cannot confirm the stream's claim; running it locally");
            ClaimCheck::Unconfirmed
        }
    }
}

/// Claims a nonce another replica issued; `None` when no pending binding has it (or no
/// database).
async fn adopt_claim(fleet: &Fleet, nonce: Nonce) -> Option<AdoptedRow> {
    let hash = nonce.hash().to_vec();
    let run = async {
        let client = fleet.db.client().await?;
        let Some(row) = client
            .query_opt(sql::ADOPT_CLAIM, &[&hash, &fleet.replica])
            .await?
        else {
            return Ok(None);
        };
        Ok::<_, PgError>(Some(AdoptedRow {
            call_sid: row.try_get(0)?,
            owner: row.try_get(1)?,
            account_sid: row.try_get(2)?,
            caller: row.try_get(3)?,
            called: row.try_get(4)?,
        }))
    };
    timed(run).await.unwrap_or_else(|e| {
        warn!(error = %e, "[Fleet] Cannot claim an unknown nonce in the database");
        None
    })
}

/// Sends `notice` to replica `to`.
async fn notify(fleet: &Fleet, to: String, notice: Notice) -> Result<(), PgError> {
    let payload = Addressed { to, notice }.render();
    timed(async {
        let client = fleet.db.client().await?;
        client.execute(sql::NOTIFY, &[&payload]).await?;
        Ok(())
    })
    .await
}

/// Fire and forget: `notify`, logged on failure.
fn spawn_notify(fleet: &Arc<Fleet>, to: String, notice: Notice) {
    let fleet = fleet.clone();
    tokio::spawn(async move {
        if let Err(e) = notify(&fleet, to, notice).await {
            warn!(error = %e, "[Fleet] Notice not sent");
        }
    });
}

/// Marks the call live on this replica (docs/replicas.md §4.6). Never awaited by the call. A
/// failed write is kept and written again after the next successful heartbeat.
pub(super) fn spawn_live(app: &App, call_sid: &str) {
    let Some(fleet) = app.fleet.clone() else {
        return;
    };
    let sid = call_sid.to_owned();
    tokio::spawn(async move {
        if let Err(e) = write_live(&fleet, &sid).await {
            warn!(call_sid = %sid, error = %e, "[Fleet] Cannot mark the call live yet; will retry");
            fleet.defer(sid, CallMark::Live);
        }
    });
}

/// Writes the call's outcome and end (docs/replicas.md §4.6). Never awaited by the call. A
/// failed write is kept and written again after the next successful heartbeat.
pub(super) fn spawn_ended(app: &App, call_sid: &str, outcome: Outcome) {
    let Some(fleet) = app.fleet.clone() else {
        return;
    };
    let sid = call_sid.to_owned();
    fleet.end_writing();
    tokio::spawn(async move {
        if let Err(e) = write_end(&fleet, &sid, outcome).await {
            warn!(call_sid = %sid, error = %e, "[Fleet] Cannot record the call's end yet; will retry");
            fleet.defer(sid, CallMark::Ended(outcome));
        }
        fleet.end_written();
    });
}

async fn write_live(fleet: &Fleet, call_sid: &str) -> Result<(), PgError> {
    timed(async {
        let client = fleet.db.client().await?;
        client
            .execute(sql::MARK_LIVE, &[&call_sid, &fleet.replica])
            .await?;
        Ok(())
    })
    .await
}

async fn write_end(fleet: &Fleet, call_sid: &str, outcome: Outcome) -> Result<(), PgError> {
    timed(async {
        let client = fleet.db.client().await?;
        client
            .execute(sql::MARK_ENDED, &[&call_sid, &outcome.as_str()])
            .await?;
        Ok(())
    })
    .await
}

/// Writes the call marks (live, ended) that failed before, in their order (after a successful
/// heartbeat).
async fn flush_marks(fleet: &Fleet) {
    let marks = fleet.take_unwritten();
    if marks.is_empty() {
        return;
    }
    let mut written = 0;
    let mut marks = marks.into_iter();
    // At most FLUSH_ENDS_PER_BEAT per beat, and none after the first failure: a database that
    // flaps mid-flush must not hold the heartbeat (or the shutdown waiting for it) for one
    // QUERY_TIMEOUT per deferred write.
    for (sid, mark) in marks.by_ref().take(FLUSH_ENDS_PER_BEAT) {
        let done = match mark {
            CallMark::Ended(outcome) => write_end(fleet, &sid, outcome).await,
            CallMark::Live => write_live(fleet, &sid).await,
        };
        if done.is_ok() {
            written += 1;
        } else {
            fleet.defer(sid, mark);
            break;
        }
    }
    for (sid, mark) in marks {
        fleet.defer(sid, mark);
    }
    info!(
        written,
        "[Fleet] Wrote call marks deferred during a database outage"
    );
}

/// A terminal status callback: ends the row; the replica to notify, if another one, and
/// whether this replica ends the practice row ([`fleet::status_ends_practice_row`]).
async fn status_ended(fleet: &Fleet, call_sid: &str) -> Result<(Option<String>, bool), PgError> {
    timed(async {
        let client = fleet.db.client().await?;
        let Some(row) = client.query_opt(sql::STATUS_ENDED, &[&call_sid]).await? else {
            return Ok((None, false));
        };
        let owner: String = row.try_get(0)?;
        let stream: Option<String> = row.try_get(1)?;
        let old: String = row.try_get(2)?;
        let target = fleet::end_target(&fleet.replica, &owner, stream.as_deref(), &old);
        Ok((target, fleet::status_ends_practice_row(&old)))
    })
    .await
}

/// `stream-ended` from the shared row, waiting up to [`fleet::STREAM_ENDED_WAIT`] for an
/// outcome a live replica has not written yet; unknown, stale or unreadable → `None`.
async fn stream_ended_outcome(fleet: &Fleet, call_sid: &str) -> Option<Outcome> {
    let deadline = tokio::time::Instant::now() + fleet::STREAM_ENDED_WAIT;
    let ttl = fleet::LEASE_TTL.as_secs_f64();
    loop {
        let read = async {
            let client = fleet.db.client().await?;
            let row = client
                .query_opt(sql::STREAM_ENDED, &[&call_sid, &ttl])
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            Ok::<_, PgError>(Some(EndedRow {
                outcome: row.try_get(0)?,
                state: row.try_get(1)?,
                replica_fresh: row.try_get(2)?,
            }))
        };
        let row = match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => {
                warn!(call_sid, error = %e, "[Fleet] Cannot read the call's outcome");
                return None;
            }
            Err(_) => return None,
        };
        match fleet::stream_ended_decision(row.as_ref()) {
            EndedDecision::Answer(o) => return o,
            EndedDecision::Wait => {
                if tokio::time::Instant::now() + fleet::STREAM_ENDED_POLL >= deadline {
                    return None;
                }
                tokio::time::sleep(fleet::STREAM_ENDED_POLL).await;
            }
        }
    }
}

/// Carries a fleet action through the database and back into the App; any other action is
/// returned as it is. The result is never a fleet action.
pub(super) async fn route(shared: &Arc<Shared>, action: Action) -> Action {
    let app = &shared.app;
    let Some(fleet) = app.fleet.clone() else {
        return action;
    };
    match action {
        Action::FleetBind {
            call,
            nonce,
            preconnect,
        } => {
            let answer = bind(&fleet, &call, nonce, app.config.max_calls).await;
            app.voice_bound(call, nonce, preconnect, answer)
        }
        Action::FleetClaim {
            accept,
            claim,
            nonce,
        } => {
            let check = confirm_claim(&fleet, nonce).await;
            if check == ClaimCheck::ClaimedElsewhere {
                shared.preconnects.cancel(claim.call.call_sid.as_str());
            }
            app.stream_confirmed(accept, claim, check)
        }
        Action::FleetAdopt { accept, nonce } => {
            let row = adopt_claim(&fleet, nonce).await;
            let action = app.stream_adopted(accept, row.as_ref(), super::now());
            if let Some(row) = row {
                if !matches!(action, Action::Upgrade { .. }) {
                    spawn_ended(app, &row.call_sid, Outcome::Refused);
                } else if row.owner != fleet.replica
                    && let Some(sid) = crate::twilio::webhook::CallSid::parse(&row.call_sid)
                {
                    spawn_notify(&fleet, row.owner, Notice::Adopted(sid));
                }
            }
            action
        }
        Action::FleetStatus {
            response,
            call_sid,
            ended_before_stream,
        } => {
            if ended_before_stream {
                shared.preconnects.cancel(&call_sid);
                super::connection::end_practice_call(app, &call_sid, Outcome::CallerHungUp);
            }
            match status_ended(&fleet, &call_sid).await {
                Ok((to, ends_practice_row)) => {
                    if ends_practice_row && !ended_before_stream {
                        super::connection::end_practice_call(app, &call_sid, Outcome::CallerHungUp);
                    }
                    if let Some(to) = to
                        && let Some(sid) = crate::twilio::webhook::CallSid::parse(&call_sid)
                        && let Err(e) = notify(&fleet, to, Notice::End(sid)).await
                    {
                        warn!(call_sid, error = %e, "[Fleet] Cannot tell the call's replica it ended");
                    }
                }
                Err(e) => warn!(call_sid, error = %e, "[Fleet] Cannot end the shared call row"),
            }
            Action::Respond(response)
        }
        Action::FleetStreamEnded { call_sid } => {
            let outcome = stream_ended_outcome(&fleet, &call_sid).await;
            Action::Respond(app.stream_ended_answer(&call_sid, outcome))
        }
        other => other,
    }
}

/// Writes one heartbeat (with the draining flag) and records the result for `/health/ready`.
pub(super) async fn beat(app: &App, fleet: &Fleet) {
    let draining = app.is_draining();
    let run = async {
        let client = fleet.db.client().await?;
        client
            .execute(sql::HEARTBEAT, &[&fleet.replica, &draining])
            .await?;
        Ok::<_, PgError>(())
    };
    match tokio::time::timeout(fleet::HEARTBEAT_TIMEOUT, run).await {
        Ok(Ok(())) => {
            if fleet.heartbeat_ok(Instant::now()) {
                info!("[Fleet] Database reachable again; heartbeat resumed");
            }
        }
        Ok(Err(e)) => {
            if fleet.heartbeat_failed() {
                warn!(error = %e, "[Fleet] Heartbeat failed: not ready until the database is back");
            }
        }
        Err(_) => {
            if fleet.heartbeat_failed() {
                warn!("[Fleet] Heartbeat timed out: not ready until the database is back");
            }
        }
    }
}

/// The heartbeat every [`fleet::HEARTBEAT_INTERVAL`] until `stop`.
async fn heartbeat(app: Arc<App>, fleet: Arc<Fleet>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(fleet::HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => beat(&app, &fleet).await,
            _ = stop.changed() => return,
        }
        if fleet.heartbeat_fresh(Instant::now()) {
            flush_marks(&fleet).await;
        }
        beats += 1;
        if beats.is_multiple_of(fleet::PRUNE_EVERY_BEATS) {
            prune(&fleet).await;
        }
    }
}

/// Deletes calls and replicas older than [`fleet::FLEET_RETENTION`].
async fn prune(fleet: &Fleet) {
    let keep = fleet::FLEET_RETENTION.as_secs_f64();
    let run = async {
        let client = fleet.db.client().await?;
        client.execute(sql::PRUNE, &[&keep]).await?;
        Ok::<_, PgError>(())
    };
    if let Err(e) = timed(run).await {
        debug!(error = %e, "[Fleet] Pruning old rows failed; next time");
    }
}

/// Acts on a notice addressed to this replica.
fn dispatch(shared: &Shared, notice: Notice) {
    let app = &shared.app;
    match notice {
        Notice::Adopted(sid) => {
            // Another replica runs the stream: its agent is the call's, ours goes at once.
            shared.preconnects.cancel(sid.as_str());
            app.calls.forget_pending(sid.as_str(), None);
            info!(call_sid = %sid, "[Fleet] Stream adopted elsewhere: pre-connected agent closed");
        }
        Notice::End(sid) => {
            let effect = app.calls.handle_status(
                sid.as_str(),
                crate::twilio::webhook::CallStatus::Completed,
                None,
                super::instant(),
            );
            if effect == crate::calls::StatusEffect::EndedBeforeStream {
                shared.preconnects.cancel(sid.as_str());
                super::connection::end_practice_call(app, sid.as_str(), Outcome::CallerHungUp);
            }
            info!(call_sid = %sid, effect = ?effect, "[Fleet] Call ended by a status callback elsewhere");
        }
    }
}

/// State of the LISTEN connection across sessions.
struct Reconnect {
    backoff: Duration,
    /// The connection is down (logged once until it is back).
    outage: bool,
}

/// One LISTEN session: returns when the connection is lost (or on `stop`: `true`).
async fn listen_once(
    shared: &Arc<Shared>,
    fleet: &Arc<Fleet>,
    stop: &mut watch::Receiver<bool>,
    state: &mut Reconnect,
) -> Result<bool, PgError> {
    let (client, mut conn) = fleet.db.dedicated().await?;
    let (tx, mut rx) = mpsc::channel::<Notice>(NOTICE_QUEUE);
    let me = fleet.replica.clone();
    let counter = fleet.clone();
    let pump = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            let Ok(AsyncMessage::Notification(n)) = m else {
                if m.is_err() {
                    return;
                }
                continue;
            };
            match Addressed::parse(n.payload()) {
                Ok(a) if a.to == me => {
                    if tx.try_send(a.notice).is_err() {
                        counter.bad_notice();
                        warn!("[Fleet] Notice queue full: notice dropped");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let n = counter.bad_notice();
                    warn!(error = %e, bad_notices = n, "[Fleet] Notice ignored");
                }
            }
        }
    });
    let listening = client
        .batch_execute(&format!("LISTEN {}", fleet::CHANNEL))
        .await;
    if let Err(e) = listening {
        pump.abort();
        return Err(e.into());
    }
    state.backoff = LISTEN_BACKOFF_MIN;
    fleet.set_listening(true);
    if std::mem::take(&mut state.outage) {
        info!("[Fleet] LISTEN connection back");
    }
    debug!("[Fleet] Listening for notices");
    loop {
        tokio::select! {
            n = rx.recv() => match n {
                Some(n) => dispatch(shared, n),
                None => return Ok(false),
            },
            _ = stop.changed() => {
                pump.abort();
                return Ok(true);
            }
        }
    }
}

/// The LISTEN task: reconnects with backoff while the database is away, logging once per
/// outage. Notices sent during an outage are lost (their calls end by their own timers).
async fn listen(shared: Arc<Shared>, fleet: Arc<Fleet>, mut stop: watch::Receiver<bool>) {
    let mut state = Reconnect {
        backoff: LISTEN_BACKOFF_MIN,
        outage: false,
    };
    loop {
        let session = listen_once(&shared, &fleet, &mut stop, &mut state).await;
        fleet.set_listening(false);
        match session {
            Ok(true) => return,
            Ok(false) => {
                warn!("[Fleet] LISTEN connection lost; reconnecting");
                state.outage = true;
            }
            Err(e) => {
                if !state.outage {
                    warn!(error = %e, "[Fleet] Cannot LISTEN; retrying");
                }
                state.outage = true;
                state.backoff = (state.backoff * 2).min(LISTEN_BACKOFF_MAX);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(state.backoff) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The fleet's background tasks; [`Tasks::stop`] ends them.
pub(super) struct Tasks {
    stop: watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Tasks {
    /// Starts the heartbeat and the LISTEN task of `shared.app`'s fleet (none without one).
    pub(super) fn start(shared: &Arc<Shared>) -> Tasks {
        let (stop, rx) = watch::channel(false);
        let mut handles = Vec::new();
        if let Some(fleet) = shared.app.fleet.clone() {
            let span = super::replica_span(&shared.app);
            let beat = heartbeat(shared.app.clone(), fleet.clone(), rx.clone());
            handles.push(tokio::spawn(beat.instrument(span.clone())));
            handles.push(tokio::spawn(
                listen(shared.clone(), fleet, rx).instrument(span),
            ));
        }
        Tasks { stop, handles }
    }

    /// Stops the tasks, then (fleet mode) releases this replica: its unfinished rows end with
    /// `server_shutdown` and its heartbeat goes to the epoch, so its leases lapse at once.
    pub(super) async fn stop(self, app: &App) {
        let _ = self.stop.send(true);
        for h in self.handles {
            let _ = h.await;
        }
        let Some(fleet) = &app.fleet else {
            return;
        };
        // The ends being written, then those deferred during an outage, first: a call that
        // completed normally must not be stored as `server_shutdown` by END_OWN (stream-ended
        // elsewhere would send its caller to the fallback). Each write is bounded by
        // QUERY_TIMEOUT; one that fails lands in the deferred ends flushed next.
        let waited = Instant::now();
        while fleet.ends_in_flight() > 0 && waited.elapsed() < QUERY_TIMEOUT * 2 {
            tokio::time::sleep(ENDS_IN_FLIGHT_POLL).await;
        }
        flush_marks(fleet).await;
        let run = async {
            let client = fleet.db.client().await?;
            let outcome = Outcome::ServerShutdown.as_str();
            client
                .execute(sql::END_OWN, &[&fleet.replica, &outcome])
                .await?;
            client
                .execute(sql::RELEASE_REPLICA, &[&fleet.replica])
                .await?;
            Ok::<_, PgError>(())
        };
        match timed(run).await {
            Ok(()) => info!("[Fleet] Left the fleet: leases released"),
            Err(e) => warn!(error = %e, "[Fleet] Cannot release leases; they lapse by themselves"),
        }
    }
}
