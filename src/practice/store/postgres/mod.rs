//! The practice store on PostgreSQL (issue 15; docs/replicas.md §3): [`PgStore`] implements
//! [`Store`] with the same results and guarantees as [`super::SqliteStore`], for several
//! replicas sharing one database.
//!
//! # Threading
//! The store is synchronous like the trait: each method runs its queries through
//! [`Database::block_on`] on the runtime that owns the pool's connections, so it must run on a
//! plain thread (the store workers, a CLI command), never on a tokio worker. A `PgStore` keeps
//! one pooled connection (with its prepared-statement cache) until that connection fails; the
//! next operation then takes a fresh one from the pool, so a restarted server costs one failed
//! operation per store ([`StoreError::is_unavailable`]).
//!
//! # What the single SQLite writer gave for free
//! - **One call's tool requests serialise** (docs/replicas.md §3): [`Store::live_call`] takes a
//!   session advisory lock on the call's id before it reads the call's state, and
//!   [`Store::end_job`] releases it after the job (so after `save_call_state`). Two requests
//!   of one call, on two workers or two replicas, cannot both read the old state and write
//!   back a lost update (e.g. two failed identifications counted once).
//! - **Booking** under READ COMMITTED: the conditional `UPDATE slot … WHERE status = 'free'`
//!   row-locks the slot, a concurrent claimant re-checks the predicate on the new row version
//!   and updates nothing; the partial unique index is the backstop. The appointment a
//!   reschedule or a cancel changes is read `FOR UPDATE`, so two concurrent moves of one
//!   appointment cannot both succeed. A concurrent identical retry (same idempotency key) that
//!   loses the race is answered with the winner's booking, as SQLite's queue would.
//! - **Request refs** come from the table's identity sequence, so two replicas never mint the
//!   same `R-…`.
//! - **Seeding** locks the patient table, so replicas starting together seed once.
//! - **Retention** runs on one replica at a time ([`RETENTION_LOCK_KEY`]).

mod book;
mod rows;
pub mod schema;

use deadpool_postgres::{Client, GenericClient};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::*;
use crate::pg::{Database, PgError};
use crate::practice::calendar::SlotCandidate;
use crate::practice::calls::{CALL_GRACE_SECS, CallState, MAX_CALL_SECS};
use crate::secret::constant_time_eq;
use rows::*;

/// Transaction-scoped advisory lock a retention run holds: the replica that gets it runs, the
/// others skip ("ignis-re").
pub const RETENTION_LOCK_KEY: i64 = 0x6967_6e69_732d_7265;
/// Transaction-scoped advisory lock an urgent request holds from its insert to its commit, so
/// queue positions are counted one request at a time ("ignis-uq").
pub const URGENT_QUEUE_LOCK_KEY: i64 = 0x6967_6e69_732d_7571;
/// Transaction-scoped advisory lock taken to add a staff closure, so the count against
/// `MAX_OPEN_CLOSURES` and the insert are one step across replicas ("ignis-cl").
pub const CLOSURES_LOCK_KEY: i64 = 0x6967_6e69_732d_636c;
/// Session advisory lock an identification holds from its limits' check to the end of its job
/// ([`Store::lock_identifications`]; "ignis-id").
pub const IDENTIFICATION_LOCK_KEY: i64 = 0x6967_6e69_732d_6964;
/// Transaction-scoped advisory lock around counting a staff login attempt ("ignis-lw"):
/// replicas count one at a time (logins are rare), so `MAX_LOGIN_WINDOWS` is exact and the
/// delete of expired windows cannot deadlock with another replica's count.
pub const LOGIN_WINDOWS_LOCK_KEY: i64 = 0x6967_6e69_732d_6c77;
/// Longest an identification waits for [`IDENTIFICATION_LOCK_KEY`] before it answers
/// "unavailable" (see `lock_identifications`).
pub const IDENTIFICATION_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// First key of the per-call advisory locks (two-`int4` key space, which does not overlap the
/// `bigint` keys of migrations and retention; "ignc").
pub const CALL_LOCK_CLASS: i32 = 0x6967_6e63;

/// Longest one store operation (its statements, in a transaction or not) may take on this
/// side. `statement_timeout` bounds each statement on the server, but cannot fire while the
/// server is unreachable mid-query (a failover to a new address, a partition): the socket would
/// wait out TCP's retransmissions, ~15 min, with the store worker and every job queued behind
/// it. Past this the connection is closed (never pooled again) and the operation is
/// "unavailable"; the next one takes a fresh connection.
const OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// The practice store on PostgreSQL (see the module docs).
pub struct PgStore {
    db: Database,
    client: Option<Client>,
    /// The call lock this store's session holds (second key), released by `end_job`.
    call_lock: Option<i32>,
    /// Whether this store's session holds [`IDENTIFICATION_LOCK_KEY`], released by `end_job`.
    identification_lock: bool,
    /// The session holding this job's call lock (or the identifications' lock) was lost: the
    /// job's other operations fail ("unavailable") instead of reconnecting and running without
    /// the lock, where another request of the call (or another identification) could
    /// interleave (docs/replicas.md §3.1). Cleared by `end_job`.
    lock_lost: bool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStore({:?})", self.db)
    }
}

/// A tokio-postgres error as a [`PgError`]: a lost connection, a server shutting down or
/// refusing connections (SQLSTATE classes 08 and 57P) and socket errors are
/// [`PgError::Unavailable`]; everything else is a query error.
pub fn pg_error(e: tokio_postgres::Error) -> PgError {
    let code = e.code().map(SqlState::code).unwrap_or_default();
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    // 08: connection exceptions; 57P: the server shutting down or refusing; 57014 and 55P03: a
    // statement or lock wait that ran into `statement_timeout`/`lock_timeout` (src/pg.rs): the
    // database is too slow to answer, which the agent hears as "briefly unavailable" too.
    let timed_out = code == "57014" || code == "55P03";
    if e.is_closed() || io || timed_out || code.starts_with("08") || code.starts_with("57P") {
        PgError::Unavailable(e.to_string())
    } else {
        PgError::from(e)
    }
}

fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres(PgError::Query(q))
        if q.code() == Some(&SqlState::UNIQUE_VIOLATION))
}

async fn query(c: &impl GenericClient, sql: &str, p: Params<'_>) -> StoreResult<Vec<Row>> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query(&st, p).await?)
}

async fn query_opt(c: &impl GenericClient, sql: &str, p: Params<'_>) -> StoreResult<Option<Row>> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&st, p).await?)
}

async fn query_one(c: &impl GenericClient, sql: &str, p: Params<'_>) -> StoreResult<Row> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query_one(&st, p).await?)
}

async fn execute(c: &impl GenericClient, sql: &str, p: Params<'_>) -> StoreResult<u64> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.execute(&st, p).await?)
}

/// Column 0 of a one-row query as an integer.
async fn scalar(c: &impl GenericClient, sql: &str, p: Params<'_>) -> StoreResult<i64> {
    Ok(query_one(c, sql, p).await?.try_get(0)?)
}

/// The second key of a call's advisory lock (as `lock_live_call` computes it in SQL): ids beyond `i32::MAX` share keys, which only
/// serialises two unrelated calls now and then.
fn call_lock_key(call_id: i64) -> i32 {
    (call_id.rem_euclid(i32::MAX as i64)) as i32
}

impl PgStore {
    /// Applies the pending `store` migrations (safe when replicas start together,
    /// docs/replicas.md §2) and returns a store on `db`'s pool.
    pub fn open(db: &Database) -> StoreResult<PgStore> {
        db.block_on(db.migrate(schema::COMPONENT, schema::PG_MIGRATIONS))?;
        Ok(PgStore::new(db))
    }

    /// A store on `db`'s pool, without migrating (the workers of a store that [`PgStore::open`]
    /// migrated). Connects lazily.
    pub fn new(db: &Database) -> PgStore {
        PgStore {
            db: db.clone(),
            client: None,
            call_lock: None,
            identification_lock: false,
            lock_lost: false,
        }
    }

    /// The `store` schema version in the database.
    pub fn schema_version(&mut self) -> StoreResult<i64> {
        self.run(async |c| {
            scalar(
                c,
                "SELECT COALESCE(MAX(version), 0) FROM ignis_migrations WHERE component = $1",
                &[&schema::COMPONENT],
            )
            .await
        })
    }

    /// Runs `f` on this store's connection (taken from the pool when there is none); a lost
    /// connection is dropped so the next operation gets a fresh one. A connection already
    /// known to be closed (the server restarted while this store was idle) is replaced before
    /// use, so only an operation in flight at the moment of the loss fails.
    fn run<T>(&mut self, f: impl AsyncFnOnce(&mut Client) -> StoreResult<T>) -> StoreResult<T> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.drop_client();
        }
        if self.lock_lost {
            return Err(StoreError::Postgres(PgError::Unavailable(
                "the connection holding the job's lock was lost".into(),
            )));
        }
        let PgStore { db, client, .. } = self;
        let answered = db.block_on_within(OPERATION_TIMEOUT, async {
            let c = match client {
                Some(c) => c,
                None => client.insert(db.client().await?),
            };
            f(c).await
        });
        match answered {
            Some(result) => {
                if matches!(&result, Err(e) if e.is_unavailable()) {
                    self.drop_client();
                }
                result
            }
            None => {
                // Its session may be mid-statement or hold a lock: closed, not pooled.
                self.close_client();
                Err(StoreError::Postgres(PgError::Unavailable(
                    "no answer from the database in time".into(),
                )))
            }
        }
    }

    /// Runs `f` even when the job lost its call lock ([`PgStore::lock_lost`]): for writes that
    /// need no serialisation with the call's other requests.
    fn without_call_lock<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let lost = std::mem::replace(&mut self.lock_lost, false);
        let result = f(self);
        self.lock_lost |= lost;
        result
    }

    /// Gives the connection up. One whose session may still hold a lock is closed rather than
    /// returned to the pool, which releases the lock with the session.
    fn drop_client(&mut self) {
        if self.call_lock.is_some() || self.identification_lock {
            self.close_client();
        } else {
            self.client = None;
        }
    }

    /// Closes the connection (and with its session any lock) instead of pooling it.
    fn close_client(&mut self) {
        self.lock_lost |= self.call_lock.take().is_some();
        self.lock_lost |= std::mem::take(&mut self.identification_lock);
        if let Some(c) = self.client.take() {
            drop(deadpool_postgres::Object::take(c));
        }
    }

    /// Releases the identification lock taken by `lock_identifications`, if held.
    fn release_identification_lock(&mut self) {
        if self.identification_lock
            && self.unlock("SELECT pg_advisory_unlock($1)", &[&IDENTIFICATION_LOCK_KEY])
        {
            self.identification_lock = false;
        }
    }

    /// Releases the call lock taken by `live_call`, if any.
    fn release_call_lock(&mut self) {
        let Some(key) = self.call_lock else { return };
        if self.unlock(
            "SELECT pg_advisory_unlock($1, $2)",
            &[&CALL_LOCK_CLASS, &key],
        ) {
            self.call_lock = None;
        }
    }

    /// Runs an advisory unlock; `false` if it failed, and then the connection is closed, which
    /// releases every lock of its session.
    fn unlock(&mut self, sql: &str, params: Params<'_>) -> bool {
        match self.run(async |c| execute(c, sql, params).await) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "advisory lock not released; closing the connection");
                self.drop_client();
                false
            }
        }
    }

    /// The id of the call whose token hashes to `hash` if it is live at `now`, with the call's
    /// lock taken in the same round trip (recorded in `call_lock` for `end_job`).
    fn lock_live_call(&mut self, hash: &[u8], now: i64) -> StoreResult<Option<i64>> {
        let row = self.run(async |c| {
            let row = query_opt(
                c,
                "SELECT id, pg_advisory_lock($5, (id % 2147483647)::int4) FROM call
                 WHERE token_hash = $1
                   AND started_at + $3 > $2 AND (ended_at IS NULL OR ended_at + $4 > $2)",
                &[
                    &hash,
                    &now,
                    &MAX_CALL_SECS,
                    &CALL_GRACE_SECS,
                    &CALL_LOCK_CLASS,
                ],
            )
            .await?;
            Ok(row.map(|r| r.try_get::<_, i64>(0)).transpose()?)
        })?;
        if let Some(id) = row {
            self.call_lock = Some(call_lock_key(id));
        }
        Ok(row)
    }

    /// What an `UPDATE` of `n` rows on a request by ref changed.
    fn request_change(&mut self, ref_code: &str, n: u64) -> StoreResult<RequestChange> {
        if n == 1 {
            return Ok(RequestChange::Changed);
        }
        let exists = self.run(async |c| {
            let sql = "SELECT 1 FROM request WHERE ref_code = $1";
            Ok(query_opt(c, sql, &[&ref_code]).await?.is_some())
        })?;
        Ok(if exists {
            RequestChange::Unchanged
        } else {
            RequestChange::NotFound
        })
    }

    /// The id, account name and CSRF token of the session if it is not idle-expired at `now`.
    fn live_staff_session(
        &mut self,
        token_hash: &[u8; 32],
        now: i64,
    ) -> StoreResult<Option<(i64, String, String)>> {
        let hash: &[u8] = token_hash;
        self.run(async |c| {
            let row = query_opt(
                c,
                "SELECT s.id, u.name, s.csrf FROM staff_session s
                 JOIN staff_user u ON u.id = s.user_id
                 WHERE s.token_hash = $1 AND s.last_seen_at >= $2 AND s.created_at > $3",
                &[
                    &hash,
                    &(now - STAFF_SESSION_IDLE_SECS),
                    &(now - STAFF_SESSION_MAX_SECS),
                ],
            )
            .await?;
            let Some(r) = row else { return Ok(None) };
            Ok(Some((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        })
    }

    /// Rows of a list query and the total count of a second one.
    fn rows_and_total<T>(
        &mut self,
        list: (&str, Params<'_>),
        total: (&str, Params<'_>),
        decode: fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<(Vec<T>, u32)> {
        self.run(async |c| {
            let rows = query(c, list.0, list.1).await?;
            let n = scalar(c, total.0, total.1).await?;
            Ok((all(&rows, decode)?, count_u32(n)))
        })
    }

    /// All rows of one query, decoded.
    fn list<T>(
        &mut self,
        sql: &str,
        p: Params<'_>,
        decode: fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        self.run(async |c| all(&query(c, sql, p).await?, decode))
    }

    /// At most one row, decoded.
    fn one_of<T>(
        &mut self,
        sql: &str,
        p: Params<'_>,
        decode: fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        self.run(async |c| query_opt(c, sql, p).await?.as_ref().map(decode).transpose())
    }

    /// The number of rows a statement changed.
    fn exec(&mut self, sql: &str, p: Params<'_>) -> StoreResult<u64> {
        self.run(async |c| execute(c, sql, p).await)
    }
}

const LIVE_CALL_ROW: &str = "SELECT call_sid, token_hash, caller_number, state_json FROM call
     WHERE id = $1 AND token_hash = $2
       AND started_at + $4 > $3 AND (ended_at IS NULL OR ended_at + $5 > $3)";

impl Store for PgStore {
    fn start_call(
        &mut self,
        call_sid: &str,
        token_hash: &[u8; 32],
        caller_number: &str,
        called_number: &str,
        now: i64,
    ) -> StoreResult<()> {
        // Insert or refuse, as in SQLite (docs/twilio.md §8.3).
        let hash: &[u8] = token_hash;
        let inserted = self.exec(
            "INSERT INTO call (call_sid, token_hash, caller_number, called_number, started_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (call_sid) DO NOTHING",
            &[&call_sid, &hash, &caller_number, &called_number, &now],
        )?;
        if inserted == 0 {
            return Err(StoreError::CallExists);
        }
        Ok(())
    }

    fn replace_call_token(
        &mut self,
        call_sid: &str,
        token_hash: &[u8; 32],
        _now: i64,
    ) -> StoreResult<bool> {
        let hash: &[u8] = token_hash;
        let n = self.exec(
            "UPDATE call SET token_hash = $2 WHERE call_sid = $1 AND ended_at IS NULL",
            &[&call_sid, &hash],
        )?;
        Ok(n == 1)
    }

    fn end_call(&mut self, call_sid: &str, now: i64) -> StoreResult<bool> {
        let n = self.exec(
            "UPDATE call SET ended_at = $2 WHERE call_sid = $1 AND ended_at IS NULL",
            &[&call_sid, &now],
        )?;
        Ok(n == 1)
    }

    fn live_call(&mut self, token_hash: &[u8; 32], now: i64) -> StoreResult<Option<CallRecord>> {
        // Locks a job left (one without `end_job`) go first: another call's lock is never
        // waited for while holding the identifications' lock.
        self.release_identification_lock();
        self.release_call_lock();
        self.lock_lost = false;
        let hash: &[u8] = token_hash;
        // Serialise this call's requests (module docs); the state is read by the next
        // statement, after the lock, so it includes the previous request's save.
        let Some(id) = self.lock_live_call(hash, now)? else {
            return Ok(None);
        };
        let row = self.run(async |c| {
            let p: Params<'_> = &[&id, &hash, &now, &MAX_CALL_SECS, &CALL_GRACE_SECS];
            let Some(r) = query_opt(c, LIVE_CALL_ROW, p).await? else {
                return Ok(None);
            };
            let cols: (String, Vec<u8>, String, String) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
            Ok(Some(cols))
        })?;
        let Some((call_sid, stored, caller_number, state_json)) = row else {
            return Ok(None);
        };
        if !constant_time_eq(&stored, token_hash) {
            return Ok(None);
        }
        let state =
            serde_json::from_str(&state_json).map_err(|_| StoreError::Corrupt("call state"))?;
        Ok(Some(CallRecord {
            id,
            call_sid,
            token_hash: stored,
            caller_number,
            state,
        }))
    }

    fn save_call_state(&mut self, call_id: i64, state: &CallState) -> StoreResult<()> {
        let json = serde_json::to_string(state).map_err(|_| StoreError::Corrupt("call state"))?;
        let failed = i32::try_from(state.failed_identifications).unwrap_or(i32::MAX);
        self.exec(
            "UPDATE call SET state_json = $2, failed_identifications = $3 WHERE id = $1",
            &[&call_id, &json, &failed],
        )?;
        Ok(())
    }

    fn failed_identifications_by_number(
        &mut self,
        caller_number: &str,
        since: i64,
    ) -> StoreResult<u32> {
        let n = self.run(async |c| {
            scalar(
                c,
                "SELECT COALESCE(SUM(failed_identifications), 0) FROM call
                 WHERE caller_number = $1 AND started_at >= $2",
                &[&caller_number, &since],
            )
            .await
        })?;
        Ok(count_u32(n))
    }

    fn identification_failures_since(&mut self, since: i64) -> StoreResult<Vec<(String, u32)>> {
        self.list(
            "SELECT caller_number, SUM(failed_identifications) FROM call
             WHERE started_at >= $1 AND failed_identifications > 0 GROUP BY caller_number",
            &[&since],
            |r| Ok((r.try_get(0)?, count_u32(r.try_get(1)?))),
        )
    }

    fn activity_by_number(&mut self, caller_number: &str, since: i64) -> StoreResult<(u32, u32)> {
        self.run(async |c| {
            let r = query_one(
                c,
                "SELECT (SELECT COUNT(*) FROM appointment a JOIN call c ON c.call_sid = a.call_sid
                         WHERE c.caller_number = $1 AND a.created_at >= $2),
                        (SELECT COUNT(*) FROM request WHERE caller_number = $1 AND created_at >= $2)",
                &[&caller_number, &since],
            )
            .await?;
            Ok((count_u32(r.try_get(0)?), count_u32(r.try_get(1)?)))
        })
    }

    fn patients_by_birth_date(&mut self, birth_date: &str) -> StoreResult<Vec<PatientRecord>> {
        let sql = format!("SELECT {PATIENT_COLS} FROM patient WHERE birth_date = $1 ORDER BY id");
        self.list(&sql, &[&birth_date], patient_row)
    }

    fn patient(&mut self, id: i64) -> StoreResult<Option<PatientRecord>> {
        let sql = format!("SELECT {PATIENT_COLS} FROM patient WHERE id = $1");
        self.one_of(&sql, &[&id], patient_row)
    }

    fn upcoming(
        &mut self,
        patient_id: i64,
        now: i64,
        limit: usize,
    ) -> StoreResult<Vec<AppointmentRecord>> {
        let sql = format!(
            "SELECT {APPT_COLS} FROM appointment WHERE patient_id = $1 AND status = 'booked'
             AND start_utc > $2 ORDER BY start_utc LIMIT $3"
        );
        self.list(&sql, &[&patient_id, &now, &sql_limit(limit)], appt_row)
    }

    fn appointment(&mut self, id: i64) -> StoreResult<Option<AppointmentRecord>> {
        self.run(async |c| book::get_appt(&*c, id, false).await)
    }

    fn free_slots(
        &mut self,
        candidates: &[SlotCandidate],
        limit: usize,
    ) -> StoreResult<Vec<SlotRecord>> {
        self.run(async |c| book::free_slots(c, candidates, limit).await)
    }

    fn slot(&mut self, id: i64) -> StoreResult<Option<SlotRecord>> {
        self.run(async |c| book::get_slot(&*c, id).await)
    }

    fn book(&mut self, booking: &Booking) -> StoreResult<BookOutcome> {
        self.run(async |c| book::book(c, booking).await)
    }

    fn repeated_booking(&mut self, key: &str) -> StoreResult<Option<BookOutcome>> {
        self.run(async |c| book::earlier_booking(&*c, key, false).await)
    }

    fn cancel(
        &mut self,
        appointment_id: i64,
        reason: CancelReason,
        note: Option<&str>,
        now: i64,
    ) -> StoreResult<CancelOutcome> {
        self.run(async |c| book::cancel(c, appointment_id, reason, note, now).await)
    }

    fn create_request(&mut self, request: &NewRequest) -> StoreResult<CreatedRequest> {
        self.run(async |c| book::create_request(c, request).await)
    }

    fn record_emergency(&mut self, e: &NewEmergency) -> StoreResult<String> {
        // Needs no call lock: an emergency is recorded even when the job lost it (a brief
        // outage during the retry check), as a second event is better than none.
        let id = self.without_call_lock(|s| {
            s.run(async |c| {
                scalar(
                    c,
                    "INSERT INTO emergency_event (severity, keywords, patient_id, callback_number,
                     advice, created_at, call_sid, fingerprint)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                    &[
                        &e.severity.as_str(),
                        &e.keywords,
                        &e.patient_id,
                        &e.callback_number,
                        &e.advice.as_str(),
                        &e.now,
                        &e.call_sid,
                        &e.fingerprint,
                    ],
                )
                .await
            })
        })?;
        Ok(format!("E-{id}"))
    }

    fn filed_in_call(
        &mut self,
        call_sid: &str,
        fingerprint: &str,
        since: i64,
    ) -> StoreResult<Option<(String, i64)>> {
        self.run(async |c| {
            let row = query_opt(
                c,
                "SELECT ref, at FROM (
                    SELECT ref_code AS ref, created_at AS at FROM request
                     WHERE call_sid = $1 AND fingerprint = $2 AND created_at >= $3
                    UNION ALL
                    SELECT 'E-' || id, created_at FROM emergency_event
                     WHERE call_sid = $1 AND fingerprint = $2 AND created_at >= $3
                 ) f ORDER BY at DESC LIMIT 1",
                &[&call_sid, &fingerprint, &since],
            )
            .await?;
            Ok(row
                .map(|r| Ok::<_, tokio_postgres::Error>((r.try_get(0)?, r.try_get(1)?)))
                .transpose()?)
        })
    }

    fn audit(
        &mut self,
        at: i64,
        call_id: Option<i64>,
        tool: &str,
        outcome: &str,
    ) -> StoreResult<()> {
        // Needs no call lock: written even when the job lost it, since the tool's change may
        // have committed before and its answer goes out (`tools::execute`).
        self.without_call_lock(|s| {
            s.exec(
                "INSERT INTO tool_audit (at, call_id, tool, outcome) VALUES ($1, $2, $3, $4)",
                &[&at, &call_id, &tool, &outcome],
            )
        })?;
        Ok(())
    }

    fn admin_audit(&mut self, at: i64, who: &str, what: &str, outcome: &str) -> StoreResult<()> {
        self.exec(
            "INSERT INTO tool_audit (at, call_id, tool, outcome, who) VALUES ($1, NULL, $2, $3, $4)",
            &[&at, &what, &outcome, &who],
        )?;
        Ok(())
    }

    fn staff_appointments(&mut self, from: i64, to: i64) -> StoreResult<Vec<StaffAppointment>> {
        self.list(
            "SELECT a.id, a.start_utc, a.practitioner_id, a.visit_type, a.reason_short, a.status,
                    p.given || ' ' || p.family, p.birth_date, p.phone_e164
             FROM appointment a JOIN patient p ON p.id = a.patient_id
             WHERE a.start_utc >= $1 AND a.start_utc < $2 ORDER BY a.start_utc, a.id",
            &[&from, &to],
            staff_appointment_row,
        )
    }

    fn open_requests(&mut self) -> StoreResult<Vec<StaffRequest>> {
        self.list(
            "SELECT r.ref_code, r.category, r.urgency,
                    p.given || ' ' || p.family || ' (' || p.birth_date || ')',
                    r.caller_json, r.details_json, r.callback_number, r.callback_window, r.note,
                    r.created_at, r.assurance, r.caller_number
             FROM request r LEFT JOIN patient p ON p.id = r.patient_id
             WHERE r.status = 'open'
             ORDER BY CASE r.urgency WHEN 'urgent' THEN 0 ELSE 1 END, r.created_at, r.id",
            &[],
            staff_request_row,
        )
    }

    fn emergencies_since(&mut self, since: i64) -> StoreResult<Vec<StaffEmergency>> {
        let sql = format!(
            "SELECT {EMERGENCY_COLS} FROM emergency_event e LEFT JOIN patient p ON p.id = e.patient_id
             WHERE e.created_at >= $1 ORDER BY e.created_at DESC, e.id DESC"
        );
        self.list(&sql, &[&since], staff_emergency_row)
    }

    fn mark_request_done(&mut self, ref_code: &str, now: i64) -> StoreResult<bool> {
        let n = self.exec(
            "UPDATE request SET status = 'done', done_at = $2 WHERE ref_code = $1 AND status = 'open'",
            &[&ref_code, &now],
        )?;
        Ok(n == 1)
    }

    fn retention(&mut self, policy: &RetentionPolicy, now: i64) -> StoreResult<RetentionReport> {
        self.run(async |c| book::retention(c, policy, now).await)
    }

    fn seed_patients(&mut self, patients: &[DemoPatient], now: i64) -> StoreResult<usize> {
        self.run(async |c| book::seed_patients(c, patients, now).await)
    }

    fn finish_call(&mut self, call_sid: &str, end: &CallEnd, now: i64) -> StoreResult<bool> {
        let ttfa = end.first_audio_ms.map(|ms| ms.min(i64::MAX as u64) as i64);
        let n = self.exec(
            "UPDATE call SET ended_at = COALESCE(ended_at, $2), outcome = $3, first_audio_ms = $4
             WHERE call_sid = $1 AND outcome IS NULL",
            &[&call_sid, &now, &end.outcome.as_str(), &ttfa],
        )?;
        Ok(n == 1)
    }

    fn staff_calls(&mut self, from: i64, to: i64, limit: usize) -> StoreResult<Vec<StaffCall>> {
        let sql = format!(
            "SELECT {CALL_COLS} FROM call WHERE started_at >= $1 AND started_at < $2
             ORDER BY started_at DESC, id DESC LIMIT $3"
        );
        self.list(&sql, &[&from, &to, &sql_limit(limit)], staff_call_row)
    }

    fn running_calls(&mut self, since: i64, limit: usize) -> StoreResult<Vec<StaffCall>> {
        let sql = format!(
            "SELECT {CALL_COLS} FROM call WHERE ended_at IS NULL AND started_at >= $1
             ORDER BY started_at DESC, id DESC LIMIT $2"
        );
        self.list(&sql, &[&since, &sql_limit(limit)], staff_call_row)
    }

    fn staff_day_requests(
        &mut self,
        from: i64,
        to: i64,
        limit: usize,
    ) -> StoreResult<(Vec<StaffDayRequest>, u32)> {
        let sql = format!(
            "SELECT {DAY_REQUEST_COLS} FROM request r LEFT JOIN patient p ON p.id = r.patient_id
             WHERE r.created_at >= $1 AND r.created_at < $2
             ORDER BY CASE r.status WHEN 'open' THEN 0 ELSE 1 END,
                      CASE r.urgency WHEN 'urgent' THEN 0 ELSE 1 END, r.created_at DESC, r.id DESC
             LIMIT $3"
        );
        self.rows_and_total(
            (&sql, &[&from, &to, &sql_limit(limit)]),
            (
                "SELECT COUNT(*) FROM request WHERE created_at >= $1 AND created_at < $2",
                &[&from, &to],
            ),
            day_request_row,
        )
    }

    fn open_requests_before(
        &mut self,
        before: i64,
        limit: usize,
    ) -> StoreResult<(Vec<StaffDayRequest>, u32)> {
        let sql = format!(
            "SELECT {DAY_REQUEST_COLS} FROM request r LEFT JOIN patient p ON p.id = r.patient_id
             WHERE r.status = 'open' AND r.created_at < $1
             ORDER BY CASE r.urgency WHEN 'urgent' THEN 0 ELSE 1 END, r.created_at DESC, r.id DESC
             LIMIT $2"
        );
        self.rows_and_total(
            (&sql, &[&before, &sql_limit(limit)]),
            (
                "SELECT COUNT(*) FROM request WHERE status = 'open' AND created_at < $1",
                &[&before],
            ),
            day_request_row,
        )
    }

    fn mark_request_done_by(
        &mut self,
        ref_code: &str,
        who: &str,
        now: i64,
    ) -> StoreResult<RequestChange> {
        let n = self.exec(
            "UPDATE request SET status = 'done', done_at = $2, done_by = $3
             WHERE ref_code = $1 AND status = 'open'",
            &[&ref_code, &now, &who],
        )?;
        self.request_change(ref_code, n)
    }

    fn staff_closures(&mut self, from: Date) -> StoreResult<Vec<StaffClosure>> {
        self.list(
            "SELECT id, first_day, last_day, reason, created_by, created_at FROM staff_closure
             WHERE last_day >= $1 AND removed_at IS NULL ORDER BY first_day, id LIMIT $2",
            &[&from.to_string(), &sql_limit(MAX_OPEN_CLOSURES)],
            staff_closure_row,
        )
    }

    fn count_login_attempt(
        &mut self,
        key: &str,
        now: i64,
        window_secs: i64,
    ) -> StoreResult<LoginWindow> {
        self.run(async |client| {
            let tx = client.transaction().await?;
            // Replicas counting at once queue here: the cap is exact, and the expired rows'
            // delete cannot deadlock with another replica's upsert.
            execute(
                &tx,
                "SELECT pg_advisory_xact_lock($1)",
                &[&LOGIN_WINDOWS_LOCK_KEY],
            )
            .await?;
            execute(
                &tx,
                "DELETE FROM staff_login_window WHERE started <= $1",
                &[&(now - window_secs)],
            )
            .await?;
            let open = scalar(&tx, "SELECT COUNT(*) FROM staff_login_window", &[]).await?;
            let known = query_opt(
                &tx,
                "SELECT 1 FROM staff_login_window WHERE key = $1",
                &[&key],
            )
            .await?
            .is_some();
            let key = if known || open < MAX_LOGIN_WINDOWS {
                key
            } else {
                LOGIN_OVERFLOW_KEY
            };
            // A new key inherits the overflow window while that is open (SQLite's
            // LOGIN_COUNT_SQL says why).
            let row = query_one(
                &tx,
                "INSERT INTO staff_login_window (key, started, attempts)
                 SELECT $1, COALESCE(o.started, $2), COALESCE(o.attempts, 0) + 1
                 FROM (SELECT 1) AS one LEFT JOIN staff_login_window o ON o.key = $3
                 ON CONFLICT (key) DO UPDATE SET attempts = staff_login_window.attempts + 1
                 RETURNING started, attempts, reported",
                &[&key, &now, &LOGIN_OVERFLOW_KEY],
            )
            .await?;
            let window = LoginWindow {
                key: key.to_owned(),
                started: row.try_get(0)?,
                attempts: row.try_get(1)?,
                reported: row.try_get(2)?,
            };
            tx.commit().await?;
            Ok(window)
        })
    }

    fn urgent_queue_position(&mut self, ref_code: &str) -> StoreResult<Option<u32>> {
        // SQLite's URGENT_POSITION_SQL says how it counts.
        let n = self.run(async |c| {
            scalar(
                c,
                "SELECT COUNT(*) FROM request
                 WHERE status = 'open' AND urgency = 'urgent' AND id <= (SELECT id FROM request
                   WHERE ref_code = $1 AND status = 'open' AND urgency = 'urgent')",
                &[&ref_code],
            )
            .await
        })?;
        Ok(u32::try_from(n).ok().filter(|n| *n > 0))
    }

    fn take_back_login_attempt(&mut self, window: &LoginWindow) -> StoreResult<()> {
        self.exec(
            "UPDATE staff_login_window SET attempts = attempts - 1
             WHERE key = $1 AND started = $2 AND attempts > 0",
            &[&window.key, &window.started],
        )?;
        Ok(())
    }

    fn login_window(
        &mut self,
        key: &str,
        now: i64,
        window_secs: i64,
    ) -> StoreResult<Option<LoginWindow>> {
        let row = self.one_of(
            "SELECT started, attempts, reported FROM staff_login_window
             WHERE key = $1 AND started > $2",
            &[&key, &(now - window_secs)],
            |r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)),
        )?;
        Ok(row.map(|(started, attempts, reported)| LoginWindow {
            key: key.to_owned(),
            started,
            attempts,
            reported,
        }))
    }

    fn report_login_lockout(&mut self, window: &LoginWindow) -> StoreResult<bool> {
        let n = self.exec(
            "UPDATE staff_login_window SET reported = TRUE
             WHERE key = $1 AND started = $2 AND NOT reported",
            &[&window.key, &window.started],
        )?;
        Ok(n == 1)
    }

    fn login_address_trusted(
        &mut self,
        user: &str,
        address: &str,
        since: i64,
    ) -> StoreResult<bool> {
        let found = self.one_of(
            "SELECT 1 FROM staff_login_trust t JOIN staff_user u ON u.id = t.user_id
             WHERE u.name = $1 AND t.address = $2 AND t.at >= $3",
            &[&user, &address, &since],
            |_| Ok(()),
        )?;
        Ok(found.is_some())
    }

    fn trust_login_address(
        &mut self,
        user: &str,
        address: &str,
        now: i64,
        keep_secs: i64,
    ) -> StoreResult<()> {
        self.exec(
            "DELETE FROM staff_login_trust WHERE at < $1
             AND user_id IN (SELECT id FROM staff_user WHERE name = $2)",
            &[&(now - keep_secs), &user],
        )?;
        self.exec(
            "INSERT INTO staff_login_trust (user_id, address, at)
             SELECT id, $2, $3 FROM staff_user WHERE name = $1
             ON CONFLICT (user_id, address) DO UPDATE SET at = EXCLUDED.at",
            &[&user, &address, &now],
        )?;
        Ok(())
    }

    fn add_staff_closure(
        &mut self,
        c: &NewClosure<'_>,
        today: Date,
        now: i64,
    ) -> StoreResult<Option<i64>> {
        let (from, to, today) = (c.from.to_string(), c.to.to_string(), today.to_string());
        self.run(async |client| {
            let tx = client.transaction().await?;
            // Replicas adding at once queue here, so the cap holds across them.
            execute(
                &tx,
                "SELECT pg_advisory_xact_lock($1)",
                &[&CLOSURES_LOCK_KEY],
            )
            .await?;
            let open = scalar(
                &tx,
                "SELECT COUNT(*) FROM staff_closure WHERE last_day >= $1 AND removed_at IS NULL",
                &[&today],
            )
            .await?;
            if open >= sql_limit(MAX_OPEN_CLOSURES) {
                // Dropping `tx` rolls it back (nothing was written).
                return Ok(None);
            }
            let id = scalar(
                &tx,
                "INSERT INTO staff_closure (first_day, last_day, reason, created_by, created_at)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[&from, &to, &c.reason.as_str(), &c.by, &now],
            )
            .await?;
            tx.commit().await?;
            Ok(Some(id))
        })
    }

    fn remove_staff_closure(
        &mut self,
        id: i64,
        today: Date,
        by: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let n = self.exec(
            "UPDATE staff_closure SET removed_by = $3, removed_at = $4
             WHERE id = $1 AND last_day >= $2 AND removed_at IS NULL",
            &[&id, &today.to_string(), &by, &now],
        )?;
        Ok(n == 1)
    }

    fn reopen_request(&mut self, ref_code: &str) -> StoreResult<RequestChange> {
        let n = self.exec(
            "UPDATE request SET status = 'open', done_at = NULL, done_by = NULL
             WHERE ref_code = $1 AND status = 'done'",
            &[&ref_code],
        )?;
        self.request_change(ref_code, n)
    }

    fn staff_day_appointments(
        &mut self,
        from: i64,
        to: i64,
        limit: usize,
    ) -> StoreResult<Vec<StaffDayAppointment>> {
        self.list(
            "SELECT a.id, a.start_utc, a.practitioner_id, a.visit_type, a.reason_short, a.status,
                    p.given || ' ' || p.family, p.birth_date, p.phone_e164,
                    a.end_utc, a.call_sid, a.created_at, a.cancelled_at, a.cancel_reason,
                    EXISTS (SELECT 1 FROM appointment o WHERE o.replaced_by = a.id)
             FROM appointment a JOIN patient p ON p.id = a.patient_id
             WHERE a.start_utc >= $1 AND a.start_utc < $2 ORDER BY a.start_utc, a.id LIMIT $3",
            &[&from, &to, &sql_limit(limit)],
            day_appointment_row,
        )
    }

    fn staff_emergencies(
        &mut self,
        from: i64,
        to: i64,
        limit: usize,
    ) -> StoreResult<(Vec<StaffEmergency>, u32)> {
        let sql = format!(
            "SELECT {EMERGENCY_COLS} FROM emergency_event e LEFT JOIN patient p ON p.id = e.patient_id
             WHERE e.created_at >= $1 AND e.created_at < $2
             ORDER BY e.created_at DESC, e.id DESC LIMIT $3"
        );
        self.rows_and_total(
            (&sql, &[&from, &to, &sql_limit(limit)]),
            (
                "SELECT COUNT(*) FROM emergency_event WHERE created_at >= $1 AND created_at < $2",
                &[&from, &to],
            ),
            staff_emergency_row,
        )
    }

    fn add_staff_user(&mut self, name: &str, phc: &str, now: i64) -> StoreResult<bool> {
        let n = self.exec(
            "INSERT INTO staff_user (name, phc, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
            &[&name, &phc, &now],
        )?;
        Ok(n == 1)
    }

    fn staff_users(&mut self) -> StoreResult<Vec<StaffUser>> {
        self.list(
            "SELECT name, created_at FROM staff_user ORDER BY name",
            &[],
            |r| {
                Ok(StaffUser {
                    name: r.try_get(0)?,
                    created_at: r.try_get(1)?,
                })
            },
        )
    }

    fn remove_staff_user(&mut self, name: &str) -> StoreResult<bool> {
        // The sessions go with it (ON DELETE CASCADE).
        let n = self.exec("DELETE FROM staff_user WHERE name = $1", &[&name])?;
        Ok(n == 1)
    }

    fn staff_user_hash(&mut self, name: &str) -> StoreResult<Option<String>> {
        self.one_of(
            "SELECT phc FROM staff_user WHERE name = $1",
            &[&name],
            |r| Ok(r.try_get(0)?),
        )
    }

    fn create_staff_session(
        &mut self,
        token_hash: &[u8; 32],
        user: &str,
        csrf: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let hash: &[u8] = token_hash;
        let n = self.exec(
            "INSERT INTO staff_session (token_hash, user_id, csrf, created_at, last_seen_at)
             SELECT $1::bytea, id, $3::text, $4::bigint, $4::bigint FROM staff_user WHERE name = $2",
            &[&hash, &user, &csrf, &now],
        )?;
        Ok(n == 1)
    }

    fn touch_staff_session(
        &mut self,
        token_hash: &[u8; 32],
        now: i64,
    ) -> StoreResult<Option<StaffSession>> {
        let Some((id, user, csrf)) = self.live_staff_session(token_hash, now)? else {
            return Ok(None);
        };
        self.exec(
            "UPDATE staff_session SET last_seen_at = $2 WHERE id = $1 AND last_seen_at <= $3",
            &[&id, &now, &(now - STAFF_SESSION_TOUCH_SECS)],
        )?;
        Ok(Some(StaffSession { user, csrf }))
    }

    fn delete_staff_session(&mut self, token_hash: &[u8; 32]) -> StoreResult<bool> {
        let hash: &[u8] = token_hash;
        let n = self.exec("DELETE FROM staff_session WHERE token_hash = $1", &[&hash])?;
        Ok(n == 1)
    }

    fn staff_audit(&mut self, at: i64, who: &str, what: &str, outcome: &str) -> StoreResult<()> {
        self.exec(
            "INSERT INTO staff_audit (at, who, what, outcome) VALUES ($1, $2, $3, $4)",
            &[&at, &who, &what, &outcome],
        )?;
        Ok(())
    }

    fn peek_staff_session(
        &mut self,
        token_hash: &[u8; 32],
        now: i64,
    ) -> StoreResult<Option<StaffSession>> {
        Ok(self
            .live_staff_session(token_hash, now)?
            .map(|(_, user, csrf)| StaffSession { user, csrf }))
    }

    fn end_job(&mut self) {
        // The reverse of the order taken: a call's lock, then the identifications'.
        self.release_identification_lock();
        self.release_call_lock();
        self.lock_lost = false;
    }

    fn lock_identifications(&mut self) -> StoreResult<()> {
        if self.identification_lock {
            return Ok(());
        }
        // Waited for briefly, not for `lock_timeout`: a holder keeps it for one job
        // (milliseconds), but a replica cut off while holding it keeps it until the server
        // drops its session (about a minute), and waiting 5 s each then would park every store
        // worker of every replica behind it (docs/replicas.md §3.1). The session lock taken in
        // the transaction outlives its commit; the shorter timeout does not.
        let wait = format!(
            "SET LOCAL lock_timeout = '{}ms'",
            IDENTIFICATION_LOCK_WAIT.as_millis()
        );
        // Marked held before it is asked for: the lock may be granted and the commit then
        // fail, and a connection that may hold it is closed, never pooled (`drop_client`).
        self.identification_lock = true;
        let taken = self.run(async |c| {
            let tx = c.transaction().await?;
            tx.batch_execute(&wait).await?;
            execute(
                &tx,
                "SELECT pg_advisory_lock($1)",
                &[&IDENTIFICATION_LOCK_KEY],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        });
        if taken.is_err() {
            // The lock may have been granted before the error: the session goes, and the lock
            // with it (the job's other operations then fail, as for a lost call lock).
            self.close_client();
        }
        taken
    }
}
