//! Call coordination across replicas (docs/replicas.md §3–5): the `fleet_*` schema, the SQL the
//! driver runs, the cross-replica notices, and the decisions taken on what the database answers.
//! Plain code: the driver (`driver/fleet.rs`) executes the statements, reads the clock and runs
//! the LISTEN and heartbeat tasks; everything here takes values and returns values.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::calls::Outcome;
use crate::twilio::webhook::{AccountSid, CallSid, IncomingCall, Party};

/// A call's lease lapses when its replica's heartbeat is older than this (docs/replicas.md §3):
/// a replica that dies stops holding calls against `MAX_CALLS` within it, without any cleanup.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often a replica writes its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// Longest a heartbeat may take before it counts as failed.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// `/health/ready` answers 503 when the last successful heartbeat is older than this (three
/// missed beats), as it does at once when the last one failed.
pub const READY_STALE: Duration = Duration::from_secs(6);
/// Transaction-scoped advisory lock serialising the lease count and insert ("ignis-fl").
pub const FLEET_LOCK_KEY: i64 = 0x6967_6e69_732d_666c;
/// Transaction-scoped advisory lock around a replica's join ("ignis-jn"): the check that its
/// id is free and its first heartbeat are one step for the whole fleet.
pub const JOIN_LOCK_KEY: i64 = 0x6967_6e69_732d_6a6e;
/// The `LISTEN`/`NOTIFY` channel.
pub const CHANNEL: &str = "ignis_fleet";
/// Longest notice payload accepted (`<replica> adopted <CallSid>` is under 80 bytes); longer
/// ones are counted as malformed and dropped.
pub const MAX_NOTICE_BYTES: usize = 128;
/// `stream-ended` for a call whose stream runs on a live replica that has not written the
/// outcome yet waits at most this long for it, then answers the fallback (docs/replicas.md §4.4).
/// The owner writes its outcome in the moment its stream closes (one UPDATE), so this only
/// covers that write; it is short because a crashed replica's heartbeat stays fresh for up to
/// `LEASE_TTL`, and its caller must get the fallback within a second.
pub const STREAM_ENDED_WAIT: Duration = Duration::from_millis(300);
/// Pause between two reads of the outcome while waiting.
pub const STREAM_ENDED_POLL: Duration = Duration::from_millis(100);
/// Ended calls (and bindings whose stream never came) stay in `fleet_call` this long, for
/// `stream-ended` and for inspection, then the heartbeat task deletes them.
pub const FLEET_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// The heartbeat task prunes old rows every this many beats (about every five minutes).
pub const PRUNE_EVERY_BEATS: u64 = 150;
/// Call marks whose write failed (the database was away), kept to be written again after the
/// next successful heartbeat: an end, so its lease does not outlive the call; a live mark, so a
/// call running here keeps holding its lease after its binding's `expires_at` (else the fleet
/// would admit one call too many over `MAX_CALLS`). Past it the oldest is dropped (an end's
/// lease then lapses only when the replica stops).
pub const MAX_UNWRITTEN_MARKS: usize = 10_000;

/// What a deferred write records about a call ([`Fleet::defer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMark {
    /// The call's stream runs on this replica (`sql::MARK_LIVE`; a no-op once ended).
    Live,
    /// The call ended so (`sql::MARK_ENDED`).
    Ended(Outcome),
}
/// Longest `REPLICA_ID` (matches the configuration's check).
pub const MAX_REPLICA_LEN: usize = crate::config::MAX_REPLICA_ID_LEN;

/// The fleet schema, step `i` being version `i + 1` (applied with
/// `Database::migrate("fleet", FLEET_MIGRATIONS)`; additive only, docs/replicas.md §2).
pub const FLEET_MIGRATIONS: &[&str] = &["
    CREATE TABLE fleet_replica (
        id TEXT PRIMARY KEY,
        started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        draining BOOLEAN NOT NULL DEFAULT false);
    CREATE TABLE fleet_call (
        call_sid TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        stream_replica TEXT NULL,
        nonce_hash BYTEA NOT NULL UNIQUE,
        account_sid TEXT NOT NULL,
        caller TEXT NOT NULL,
        called TEXT NOT NULL,
        bound_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        expires_at TIMESTAMPTZ NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'claimed', 'live', 'ended')),
        outcome TEXT NULL,
        ended_at TIMESTAMPTZ NULL);
    CREATE INDEX fleet_call_open ON fleet_call (state) WHERE state <> 'ended';
"];

/// The SQL the driver runs, with its parameters in order.
pub mod sql {
    /// `$1` id, `$2` draining.
    pub const HEARTBEAT: &str = "INSERT INTO fleet_replica (id, started_at, heartbeat_at, draining)
         VALUES ($1, now(), now(), $2)
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), draining = EXCLUDED.draining";
    /// `$1` the fleet lock key.
    pub const LOCK: &str = "SELECT pg_advisory_xact_lock($1)";
    /// `$1` lease TTL seconds (f64): calls holding a lease (docs/replicas.md §3).
    pub const COUNT_LEASES: &str = "SELECT count(*) FROM fleet_call c
         JOIN fleet_replica r ON r.id = COALESCE(c.stream_replica, c.owner)
         WHERE (c.state IN ('claimed', 'live') OR (c.state = 'pending' AND c.expires_at > now()))
           AND r.heartbeat_at > now() - make_interval(secs => $1)";
    /// `$1` call_sid, `$2` owner, `$3` nonce hash, `$4` account, `$5` caller, `$6` called,
    /// `$7` binding TTL seconds (f64). No row inserted: the call (or nonce) is known already.
    pub const INSERT_CALL: &str = "INSERT INTO fleet_call
         (call_sid, owner, nonce_hash, account_sid, caller, called, expires_at, state)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7), 'pending')
         ON CONFLICT DO NOTHING";
    /// `$1` nonce hash, `$2` self: a local claim confirmed in the database. Columns: updated
    /// (0/1), rows with that nonce (as before the update).
    pub const CONFIRM_CLAIM: &str = "WITH u AS (
           UPDATE fleet_call SET state = 'claimed', stream_replica = $2
           WHERE nonce_hash = $1 AND state = 'pending' RETURNING 1)
         SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM fleet_call WHERE nonce_hash = $1)";
    /// `$1` nonce hash, `$2` self: the claim of a nonce another replica issued.
    pub const ADOPT_CLAIM: &str = "UPDATE fleet_call SET state = 'claimed', stream_replica = $2
         WHERE nonce_hash = $1 AND state = 'pending' AND expires_at > now()
         RETURNING call_sid, owner, account_sid, caller, called";
    /// `$1` call_sid, `$2` self. Also a row still `pending` on its owner: the claim could not
    /// be confirmed (database away at the handshake) and the call runs here anyway, so it
    /// must hold its lease and its nonce must not be claimable elsewhere.
    pub const MARK_LIVE: &str = "UPDATE fleet_call SET state = 'live', stream_replica = $2
         WHERE call_sid = $1 AND ((state = 'claimed' AND stream_replica = $2)
           OR (state = 'pending' AND owner = $2 AND stream_replica IS NULL))";
    /// `$1` call_sid, `$2` outcome: the first outcome written stays.
    pub const MARK_ENDED: &str = "UPDATE fleet_call SET state = 'ended',
           outcome = COALESCE(outcome, $2), ended_at = COALESCE(ended_at, now())
         WHERE call_sid = $1";
    /// `$1` call_sid: a terminal status callback. Columns: owner, stream_replica, old state.
    pub const STATUS_ENDED: &str = "WITH old AS (
           SELECT call_sid, state FROM fleet_call WHERE call_sid = $1 FOR UPDATE)
         UPDATE fleet_call f SET state = 'ended',
           outcome = COALESCE(f.outcome, 'caller_hung_up'), ended_at = now()
         FROM old WHERE f.call_sid = old.call_sid AND old.state <> 'ended'
         RETURNING f.owner, f.stream_replica, old.state";
    /// `$1` call_sid, `$2` lease TTL seconds (f64). Columns: outcome, state, whether the
    /// stream's replica (else the owner) has a fresh heartbeat.
    pub const STREAM_ENDED: &str = "SELECT c.outcome, c.state,
           COALESCE(r.heartbeat_at > now() - make_interval(secs => $2), false)
         FROM fleet_call c LEFT JOIN fleet_replica r ON r.id = COALESCE(c.stream_replica, c.owner)
         WHERE c.call_sid = $1";
    /// `$1` payload.
    pub const NOTIFY: &str = "SELECT pg_notify('ignis_fleet', $1)";
    /// `$1` self, `$2` outcome: ends the replica's unfinished rows (at exit).
    pub const END_OWN: &str = "UPDATE fleet_call SET state = 'ended',
           outcome = COALESCE(outcome, $2), ended_at = now()
         WHERE state <> 'ended' AND COALESCE(stream_replica, owner) = $1";
    /// `$1` self, `$2` outcome: at start, ends the streams a previous process of the same id
    /// was serving (they died with it). Its pending bindings stay: their streams may still
    /// arrive and be adopted by any replica, and they expire on their own.
    pub const END_OWN_STREAMS: &str = "UPDATE fleet_call SET state = 'ended',
           outcome = COALESCE(outcome, $2), ended_at = now()
         WHERE state IN ('claimed', 'live') AND COALESCE(stream_replica, owner) = $1";
    /// `$1` id, `$2` lease TTL seconds (f64): whether a process heartbeats as `id` (no row:
    /// none).
    pub const REPLICA_ALIVE: &str =
        "SELECT heartbeat_at > now() - make_interval(secs => $2) FROM fleet_replica WHERE id = $1";
    /// `$1` retention seconds (f64): forgets old calls and replicas gone that long, and the
    /// claimed or live calls of a replica gone that long (killed, or scaled away: nobody will
    /// write their end). Idempotent, so replicas may run it at the same time.
    pub const PRUNE: &str = "WITH calls AS (
           DELETE FROM fleet_call c
           WHERE (state = 'ended' AND ended_at < now() - make_interval(secs => $1))
              OR (state = 'pending' AND expires_at < now() - make_interval(secs => $1))
              OR (state IN ('claimed', 'live') AND NOT EXISTS (
                    SELECT 1 FROM fleet_replica r
                    WHERE r.id = COALESCE(c.stream_replica, c.owner)
                      AND r.heartbeat_at >= now() - make_interval(secs => $1))))
         DELETE FROM fleet_replica WHERE heartbeat_at < now() - make_interval(secs => $1)";
    /// `$1` self: leases released at once (heartbeat at the epoch).
    pub const RELEASE_REPLICA: &str =
        "UPDATE fleet_replica SET heartbeat_at = 'epoch', draining = true WHERE id = $1";
}

/// Whether `id` is a replica id (a-z, 0-9, -; 1 to [`MAX_REPLICA_LEN`] bytes).
pub fn is_replica_id(id: &str) -> bool {
    (1..=MAX_REPLICA_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The default replica id, `<hostname>-<suffix>` (the driver passes 4 random hex digits): the
/// hostname lowercased, anything else than a-z 0-9 - turned into `-`, shortened to fit.
pub fn default_replica_id(hostname: &str, suffix: &str) -> String {
    let room = MAX_REPLICA_LEN.saturating_sub(suffix.len() + 1);
    let host: String = hostname
        .trim()
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(room)
        .collect();
    let host = if host.is_empty() { "ignis" } else { &host };
    format!("{host}-{suffix}")
}

/// A cross-replica message on [`CHANNEL`], addressed to one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Another replica claimed the call's stream: close the pre-connected agent, forget the
    /// local binding (docs/replicas.md §4.2).
    Adopted(CallSid),
    /// A status callback elsewhere ended the call: tear its session down (§4.3).
    End(CallSid),
}

/// A notice and its addressee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressed {
    /// The replica it is for.
    pub to: String,
    /// What it says.
    pub notice: Notice,
}

/// Why a notice payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeError {
    /// Longer than [`MAX_NOTICE_BYTES`].
    TooLong,
    /// Not `<replica> <adopted|end> <CallSid>`.
    Malformed,
}

impl fmt::Display for NoticeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoticeError::TooLong => write!(f, "notice longer than {MAX_NOTICE_BYTES} bytes"),
            NoticeError::Malformed => f.write_str("malformed notice"),
        }
    }
}

impl Addressed {
    /// The payload, `<replica> <verb> <CallSid>`.
    pub fn render(&self) -> String {
        let (verb, sid) = match &self.notice {
            Notice::Adopted(s) => ("adopted", s),
            Notice::End(s) => ("end", s),
        };
        format!("{} {verb} {}", self.to, sid.as_str())
    }

    /// Parses a payload strictly: exactly three space-separated fields, each checked.
    pub fn parse(payload: &str) -> Result<Addressed, NoticeError> {
        if payload.len() > MAX_NOTICE_BYTES {
            return Err(NoticeError::TooLong);
        }
        let mut parts = payload.split(' ');
        let (Some(to), Some(verb), Some(sid), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(NoticeError::Malformed);
        };
        if !is_replica_id(to) {
            return Err(NoticeError::Malformed);
        }
        let sid = CallSid::parse(sid).ok_or(NoticeError::Malformed)?;
        let notice = match verb {
            "adopted" => Notice::Adopted(sid),
            "end" => Notice::End(sid),
            _ => return Err(NoticeError::Malformed),
        };
        Ok(Addressed {
            to: to.to_owned(),
            notice,
        })
    }
}

/// What the voice webhook's lease transaction answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// The row is in: the call holds a lease.
    Granted,
    /// `MAX_CALLS` leases are held fleet-wide (the count).
    AtCapacity(i64),
    /// Another replica already answered this CallSid (or the nonce repeats).
    Answered,
    /// The database could not be asked.
    Unavailable,
}

/// What confirming a local claim in the database answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimCheck {
    /// The row is now claimed by this replica.
    Confirmed,
    /// Another replica claimed it, or the call ended: refuse as used.
    ClaimedElsewhere,
    /// No row, or no database: the local claim stands (logged).
    Unconfirmed,
}

impl ClaimCheck {
    /// From [`sql::CONFIRM_CLAIM`]'s two counts.
    pub fn from_counts(updated: i64, rows: i64) -> ClaimCheck {
        match (updated, rows) {
            (1.., _) => ClaimCheck::Confirmed,
            (_, 1..) => ClaimCheck::ClaimedElsewhere,
            _ => ClaimCheck::Unconfirmed,
        }
    }
}

/// A row claimed by [`sql::ADOPT_CLAIM`], as read (strings from the database are checked like
/// any peer's before they become a call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptedRow {
    /// `call_sid`.
    pub call_sid: String,
    /// `owner`: the replica to notify.
    pub owner: String,
    /// `account_sid`.
    pub account_sid: String,
    /// `caller`.
    pub caller: String,
    /// `called`.
    pub called: String,
}

impl AdoptedRow {
    /// The voice webhook's record of the call; `None` when a field does not parse.
    pub fn call(&self) -> Option<IncomingCall> {
        Some(IncomingCall {
            call_sid: CallSid::parse(&self.call_sid)?,
            account_sid: AccountSid::parse(&self.account_sid)?,
            from: Party::parse(&self.caller)?,
            to: Party::parse(&self.called)?,
        })
    }
}

/// Which replica a terminal status callback must tell (docs/replicas.md §4.3): the stream's,
/// else the owner (whose pre-connected agent waits), unless that is `me` or the row was ended
/// already. `None`: nothing to send.
pub fn end_target(
    me: &str,
    owner: &str,
    stream_replica: Option<&str>,
    old_state: &str,
) -> Option<String> {
    if old_state == "ended" {
        return None;
    }
    let target = stream_replica.unwrap_or(owner);
    (target != me).then(|| target.to_owned())
}

/// Whether a terminal status callback ends the call's practice row on the replica that got
/// it: the call was still `pending`, so no stream will end it, and the owner learns of the end
/// only by a notice, which is lost while its `LISTEN` connection is down. The practice keeps
/// the first end, so the owner ending it too is harmless.
pub fn status_ends_practice_row(old_state: &str) -> bool {
    old_state == "pending"
}

/// A read of a call's row for `stream-ended` ([`sql::STREAM_ENDED`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedRow {
    /// `outcome`, as written.
    pub outcome: Option<String>,
    /// `state`: only a claimed or live call has a stream whose outcome may still come.
    pub state: String,
    /// Whether the replica running (or owning) the call has a fresh heartbeat.
    pub replica_fresh: bool,
}

/// What `stream-ended` does with a row read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedDecision {
    /// Answer from this outcome (`None`: unknown → the fallback).
    Answer(Option<Outcome>),
    /// The outcome is not written yet and its replica is alive: read again shortly.
    Wait,
}

/// docs/replicas.md §4.4: an outcome answers; no row, a call whose stream never started, or a
/// stale replica gets the fallback at once; a stream on a live replica is waited for (bounded
/// by the caller with [`STREAM_ENDED_WAIT`]).
pub fn stream_ended_decision(row: Option<&EndedRow>) -> EndedDecision {
    match row {
        None => EndedDecision::Answer(None),
        Some(EndedRow {
            outcome: Some(o), ..
        }) => EndedDecision::Answer(Some(parse_outcome(o).unwrap_or(Outcome::StreamLost))),
        Some(EndedRow {
            outcome: None,
            replica_fresh: true,
            state,
        }) if state == "claimed" || state == "live" => EndedDecision::Wait,
        Some(_) => EndedDecision::Answer(None),
    }
}

/// An outcome label ([`Outcome::as_str`]) back to the outcome.
pub fn parse_outcome(label: &str) -> Option<Outcome> {
    crate::metrics::OUTCOMES
        .iter()
        .copied()
        .find(|o| o.as_str() == label)
}

#[derive(Debug, Default)]
struct Beat {
    last_ok: Option<Instant>,
    failing: bool,
}

/// This replica's place in the fleet: its id, the database, and what its heartbeat last said
/// (for `/health/ready`). Shared by the App and the driver's fleet tasks.
pub struct Fleet {
    /// This replica's id (`REPLICA_ID` or `<hostname>-<random>`).
    pub replica: String,
    /// The shared database.
    pub db: crate::pg::Database,
    beat: Mutex<Beat>,
    bad_notices: AtomicU64,
    listening: AtomicBool,
    unwritten: Mutex<VecDeque<(String, CallMark)>>,
    /// Call ends being written right now (shutdown waits for them before `END_OWN`).
    ends_in_flight: AtomicUsize,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fleet({}, {:?})", self.replica, self.db)
    }
}

impl Fleet {
    /// A replica that has not written a heartbeat yet (not ready).
    pub fn new(replica: String, db: crate::pg::Database) -> Fleet {
        Fleet {
            replica,
            db,
            beat: Mutex::new(Beat::default()),
            bad_notices: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            unwritten: Mutex::new(VecDeque::new()),
            ends_in_flight: AtomicUsize::new(0),
        }
    }

    /// A call end's write started ([`Fleet::end_written`] when it is done, either way).
    pub fn end_writing(&self) {
        self.ends_in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// A call end's write is done (written, or deferred).
    pub fn end_written(&self) {
        self.ends_in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Call ends being written now.
    pub fn ends_in_flight(&self) -> usize {
        self.ends_in_flight.load(Ordering::Acquire)
    }

    fn beat(&self) -> std::sync::MutexGuard<'_, Beat> {
        self.beat.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a heartbeat written at `now`; returns whether it ends an outage.
    pub fn heartbeat_ok(&self, now: Instant) -> bool {
        let mut b = self.beat();
        b.last_ok = Some(now);
        std::mem::replace(&mut b.failing, false)
    }

    /// Counts a notice that did not parse; returns the count so far.
    pub fn bad_notice(&self) -> u64 {
        self.bad_notices.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Keeps a call mark whose write failed, to be written again ([`MAX_UNWRITTEN_MARKS`]). A
    /// call's end supersedes its live mark: the queue keeps the failures' order, not the
    /// call's, and a live mark left alone (its end dropped at the cap, say) would hold the
    /// ended call's lease until the replica stops.
    pub fn defer(&self, call_sid: String, mark: CallMark) {
        let mut q = self.unwritten.lock().unwrap_or_else(|p| p.into_inner());
        let same = |s: &String| *s == call_sid;
        match mark {
            CallMark::Live if q.iter().any(|(s, m)| same(s) && *m != CallMark::Live) => return,
            CallMark::Ended(_) => q.retain(|(s, m)| !(same(s) && *m == CallMark::Live)),
            CallMark::Live => {}
        }
        if q.len() >= MAX_UNWRITTEN_MARKS {
            q.pop_front();
        }
        q.push_back((call_sid, mark));
    }

    /// Takes the call marks waiting to be written, oldest first.
    pub fn take_unwritten(&self) -> Vec<(String, CallMark)> {
        let mut q = self.unwritten.lock().unwrap_or_else(|p| p.into_inner());
        q.drain(..).collect()
    }

    /// Records whether the `LISTEN` connection is up.
    pub fn set_listening(&self, up: bool) {
        self.listening.store(up, Ordering::Relaxed);
    }

    /// Whether notices reach this replica now (`/health/ready` shows it; it does not decide
    /// readiness: a replica without notices still serves its calls).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    /// Notices that did not parse (`ignis_fleet_bad_notices_total`).
    pub fn bad_notices(&self) -> u64 {
        self.bad_notices.load(Ordering::Relaxed)
    }

    /// Records a heartbeat that failed; returns whether it is the first failure of an outage
    /// (so the driver logs once per outage).
    pub fn heartbeat_failed(&self) -> bool {
        let mut b = self.beat();
        !std::mem::replace(&mut b.failing, true)
    }

    /// Whether the database holds this replica as alive: the last heartbeat succeeded and is
    /// younger than [`READY_STALE`].
    pub fn heartbeat_fresh(&self, now: Instant) -> bool {
        let b = self.beat();
        !b.failing
            && b.last_ok
                .is_some_and(|t| now.saturating_duration_since(t) < READY_STALE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "CA0123456789abcdef0123456789abcdef";

    /// A call's end supersedes its live mark in the deferred queue, whichever failed first.
    #[test]
    fn a_deferred_end_supersedes_the_calls_live_mark() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let url = crate::pg::DatabaseUrl::parse("postgres://ignis@127.0.0.1:1/ignis").unwrap();
        let db = crate::pg::Database::new(&url, 1, rt.handle().clone()).unwrap();
        let fleet = Fleet::new("a".into(), db);
        let ended = CallMark::Ended(Outcome::Completed);
        fleet.defer("CA1".into(), CallMark::Live);
        fleet.defer("CA2".into(), CallMark::Live);
        fleet.defer("CA1".into(), ended);
        fleet.defer("CA3".into(), ended);
        fleet.defer("CA3".into(), CallMark::Live);
        assert_eq!(
            fleet.take_unwritten(),
            [
                ("CA2".to_owned(), CallMark::Live),
                ("CA1".to_owned(), ended),
                ("CA3".to_owned(), ended),
            ]
        );
    }

    #[test]
    fn notices_round_trip_and_refuse_anything_else() {
        let sid = CallSid::parse(SID).unwrap();
        for notice in [Notice::Adopted(sid.clone()), Notice::End(sid)] {
            let a = Addressed {
                to: "web-1".into(),
                notice,
            };
            assert_eq!(Addressed::parse(&a.render()), Ok(a));
        }
        for bad in [
            "",
            "web-1",
            "web-1 end",
            &format!("web-1 end {SID} extra"),
            &format!("Web-1 end {SID}"),
            &format!("web-1 kill {SID}"),
            "web-1 end CA123",
            &format!("web-1  end {SID}"),
        ] {
            assert_eq!(Addressed::parse(bad), Err(NoticeError::Malformed), "{bad}");
        }
        let long = format!("{} end {SID}", "a".repeat(MAX_NOTICE_BYTES));
        assert_eq!(Addressed::parse(&long), Err(NoticeError::TooLong));
    }

    #[test]
    fn default_ids_are_valid_replica_ids() {
        for host in ["web1", "Web_1.example.com", "", "x".repeat(100).as_str()] {
            let id = default_replica_id(host, "ab12");
            assert!(is_replica_id(&id), "{host:?} -> {id}");
            assert!(id.ends_with("-ab12"));
        }
        assert_eq!(default_replica_id("Web_1", "0f0f"), "web-1-0f0f");
    }

    #[test]
    fn stream_ended_answers_waits_or_falls_back() {
        let row = |o: Option<&str>, fresh| EndedRow {
            outcome: o.map(str::to_owned),
            state: "live".into(),
            replica_fresh: fresh,
        };
        assert_eq!(stream_ended_decision(None), EndedDecision::Answer(None));
        assert_eq!(
            stream_ended_decision(Some(&row(Some("completed"), false))),
            EndedDecision::Answer(Some(Outcome::Completed))
        );
        assert_eq!(
            stream_ended_decision(Some(&row(None, true))),
            EndedDecision::Wait
        );
        assert_eq!(
            stream_ended_decision(Some(&row(None, false))),
            EndedDecision::Answer(None)
        );
        // No stream ever claimed the call: nothing to wait for.
        let pending = EndedRow {
            state: "pending".into(),
            ..row(None, true)
        };
        assert_eq!(
            stream_ended_decision(Some(&pending)),
            EndedDecision::Answer(None)
        );
        // An unknown label is not "finished normally".
        assert_eq!(
            stream_ended_decision(Some(&row(Some("nonsense"), true))),
            EndedDecision::Answer(Some(Outcome::StreamLost))
        );
    }

    #[test]
    fn status_notifies_the_streams_replica_else_the_owner() {
        assert_eq!(end_target("a", "a", Some("b"), "live"), Some("b".into()));
        assert_eq!(end_target("a", "b", None, "pending"), Some("b".into()));
        assert_eq!(end_target("a", "b", Some("a"), "live"), None);
        assert_eq!(end_target("a", "b", Some("c"), "ended"), None);
        // Only a call whose stream never started has its practice row ended by the callback.
        assert!(status_ends_practice_row("pending"));
        for state in ["claimed", "live", "ended"] {
            assert!(!status_ends_practice_row(state), "{state}");
        }
    }

    #[test]
    fn claim_counts() {
        assert_eq!(ClaimCheck::from_counts(1, 1), ClaimCheck::Confirmed);
        assert_eq!(ClaimCheck::from_counts(0, 1), ClaimCheck::ClaimedElsewhere);
        assert_eq!(ClaimCheck::from_counts(0, 0), ClaimCheck::Unconfirmed);
    }
}
