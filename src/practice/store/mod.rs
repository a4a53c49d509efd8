//! The practice store: the operations the tools need, behind [`Store`], with two
//! implementations — the embedded SQLite [`SqliteStore`] (the default, one replica) and
//! [`PgStore`] on PostgreSQL (`DATABASE_URL`, several replicas; docs/replicas.md §3). The same
//! tests run against both (`tests/practice_store.rs`, `tests/practice_tools.rs`).
//!
//! # No double booking
//! [`Store::book`] is one transaction that claims the slot with `UPDATE slot SET status='busy'
//! … WHERE id=? AND status='free'` and rolls back with [`BookOutcome::SlotTaken`] when no row
//! changed. SQLite takes its write lock up front (`BEGIN IMMEDIATE`, so concurrent writers queue
//! on `busy_timeout` instead of failing to upgrade a read lock); PostgreSQL runs it under READ
//! COMMITTED, where the `UPDATE` row-locks the slot and a concurrent claimant re-checks the
//! predicate on the committed row and updates nothing. The partial unique index
//! `appointment_one_booking_per_slot` (one `booked` appointment per slot) is the backstop: a
//! violation is also answered as `SlotTaken` and rolls everything back. A reschedule cancels the
//! old appointment (read `FOR UPDATE` on PostgreSQL) and frees its slot in the same transaction,
//! so a failed booking changes nothing. Retries are idempotent: the caller supplies an
//! idempotency key (call + slot + patient) that is unique on `appointment`; a repeated key
//! returns the first booking, also when the retry raced the original on another replica.
//!
//! # One schema, two spellings
//! Times are UTC seconds (`INTEGER` / `BIGINT`), text enums carry `CHECK`s, and the partial
//! unique index exists in both. The PostgreSQL schema ([`postgres::schema`]) spells `INTEGER
//! PRIMARY KEY` as `BIGINT GENERATED ALWAYS AS IDENTITY`, `BLOB` as `BYTEA`, `?N` as `$N`.
//!
//! # Per-call state
//! Per-call state lives in the `call` table, so any replica can authorise a tool request for a
//! call bridged by another. A tool request reads the state ([`Store::live_call`]), works, and
//! writes it back ([`Store::save_call_state`]); two requests of one call must not interleave.
//! SQLite's single writer thread serialises them; [`PgStore`] holds a per-call advisory lock
//! from `live_call` until the worker's [`Store::end_job`].

pub mod names;
pub mod pending;
pub mod postgres;
pub mod records;
pub mod sqlite;
pub mod worker;

pub use names::{name_key, normalize_name};
pub use postgres::PgStore;
pub use records::*;
pub use sqlite::{BUSY_TIMEOUT, MIGRATIONS, STORE_CACHE_KIB, SqliteStore};
pub use worker::{PG_STORE_WORKERS, StoreHandle, StoreThread, SubmitError};

use jiff::civil::Date;

use super::calendar::SlotCandidate;
use super::calls::CallState;

/// A store failure (not a business outcome).
#[derive(Debug)]
pub enum StoreError {
    /// The database failed.
    Sqlite(rusqlite::Error),
    /// PostgreSQL failed: [`crate::pg::PgError::Unavailable`] when it cannot be reached (the
    /// tools answer 503 with words the agent can say, [`StoreError::is_unavailable`]), a query
    /// error otherwise.
    Postgres(crate::pg::PgError),
    /// Stored data could not be decoded (e.g. call state JSON).
    Corrupt(&'static str),
    /// The store's writer thread is gone.
    Closed,
    /// The store's queue is full (`MAX_QUEUED_JOBS`).
    Busy,
    /// `start_call` for a CallSid that already has a row (refused, the row is unchanged).
    CallExists,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Sqlite(e) => write!(f, "database error: {e}"),
            StoreError::Postgres(e) => e.fmt(f),
            StoreError::Corrupt(what) => write!(f, "corrupt stored data: {what}"),
            StoreError::Closed => f.write_str("store thread is gone"),
            StoreError::Busy => f.write_str("store queue is full"),
            StoreError::CallExists => f.write_str("the call is already registered"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

impl From<crate::pg::PgError> for StoreError {
    fn from(e: crate::pg::PgError) -> Self {
        StoreError::Postgres(e)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(postgres::pg_error(e))
    }
}

impl StoreError {
    /// Whether the database could not be reached (a later attempt may work): the tools answer
    /// 503 `unavailable` instead of 500.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Postgres(crate::pg::PgError::Unavailable(_))
        )
    }
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// How long a request's or emergency's fingerprint is kept with its row (retention clears it):
/// retries are recognised for `calls::REFILE_WINDOW_SECS` (minutes), and the fingerprint
/// hashes input the row does not keep.
pub const FINGERPRINT_KEPT_SECS: i64 = 86_400;

/// Most staff closures that may end today or later: the page lists them all and every
/// calendar question walks them (a runaway form cannot grow either).
pub const MAX_OPEN_CLOSURES: usize = 50;

/// When retention deletes a staff closure: a year after it was taken back, or after its last
/// day ([`RetentionPolicy::staff_audit`], so the audit rows naming it go first or with it; the
/// day in UTC, a day's difference does not matter here). The cutoff in UTC seconds and as a
/// stored day.
pub fn closure_cutoff(p: &RetentionPolicy, now: i64) -> StoreResult<(i64, String)> {
    let cutoff = now - p.staff_audit;
    let day = jiff::Timestamp::from_second(cutoff)
        .map_err(|_| StoreError::Corrupt("retention time out of range"))?;
    Ok((
        cutoff,
        jiff::tz::TimeZone::UTC.to_datetime(day).date().to_string(),
    ))
}

/// A closure to store ([`Store::add_staff_closure`]); the staff page checked the dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewClosure<'a> {
    /// First closed day.
    pub from: Date,
    /// Last closed day.
    pub to: Date,
    /// Why.
    pub reason: ClosureReason,
    /// The staff account entering it.
    pub by: &'a str,
}

/// The operations the practice tools need. Each method is atomic on its own.
///
/// Implementations: [`SqliteStore`] (embedded default) and [`PgStore`] (PostgreSQL), with the
/// same results.
pub trait Store: Send {
    /// Registers a call with the hash of its token; [`StoreError::CallExists`] (and no change)
    /// when the CallSid already has a row.
    fn start_call(
        &mut self,
        call_sid: &str,
        token_hash: &[u8; 32],
        caller_number: &str,
        called_number: &str,
        now: i64,
    ) -> StoreResult<()>;
    /// Replaces the token hash of a call that is not ended, so the previous token (the agent of
    /// the replica that answered the webhook) stops working (docs/replicas.md §4.2). False (and no
    /// change) when the CallSid has no row or the call has ended.
    fn replace_call_token(
        &mut self,
        call_sid: &str,
        token_hash: &[u8; 32],
        now: i64,
    ) -> StoreResult<bool>;
    /// Marks a call ended; false if unknown.
    fn end_call(&mut self, call_sid: &str, now: i64) -> StoreResult<bool>;
    /// The call whose token hashes to `token_hash`, if it is live at `now`. [`PgStore`] then
    /// holds the call's lock until [`Store::end_job`] (the module docs, "Per-call state").
    fn live_call(&mut self, token_hash: &[u8; 32], now: i64) -> StoreResult<Option<CallRecord>>;
    /// Stores a call's state.
    fn save_call_state(&mut self, call_id: i64, state: &CallState) -> StoreResult<()>;
    /// Failed identifications summed over the calls from `caller_number` started since `since`.
    fn failed_identifications_by_number(
        &mut self,
        caller_number: &str,
        since: i64,
    ) -> StoreResult<u32>;
    /// Failed identifications per caller number (as stored, `anonymous` included) over the calls
    /// started since `since`; only numbers with failures (docs/practice-tools.md §6.3).
    fn identification_failures_since(&mut self, since: i64) -> StoreResult<Vec<(String, u32)>>;
    /// Bookings and requests made since `since` in calls from `caller_number`.
    fn activity_by_number(&mut self, caller_number: &str, since: i64) -> StoreResult<(u32, u32)>;
    /// Patients with this birth date.
    fn patients_by_birth_date(&mut self, birth_date: &str) -> StoreResult<Vec<PatientRecord>>;
    /// A patient by id.
    fn patient(&mut self, id: i64) -> StoreResult<Option<PatientRecord>>;
    /// Booked appointments of a patient starting after `now`, earliest first.
    fn upcoming(
        &mut self,
        patient_id: i64,
        now: i64,
        limit: usize,
    ) -> StoreResult<Vec<AppointmentRecord>>;
    /// An appointment by id.
    fn appointment(&mut self, id: i64) -> StoreResult<Option<AppointmentRecord>>;
    /// Makes sure the candidates exist as slots and returns up to `limit` free ones, in order.
    fn free_slots(
        &mut self,
        candidates: &[SlotCandidate],
        limit: usize,
    ) -> StoreResult<Vec<SlotRecord>>;
    /// A slot by id.
    fn slot(&mut self, id: i64) -> StoreResult<Option<SlotRecord>>;
    /// Books a slot (see the module docs for the guarantees).
    fn book(&mut self, booking: &Booking) -> StoreResult<BookOutcome>;
    /// The booking an identical earlier attempt made (same idempotency key, still booked), as
    /// [`Store::book`] would answer its retry (`repeated`); reads only.
    fn repeated_booking(&mut self, idempotency_key: &str) -> StoreResult<Option<BookOutcome>>;
    /// Cancels a booked appointment and frees its slot.
    fn cancel(
        &mut self,
        appointment_id: i64,
        reason: CancelReason,
        note: Option<&str>,
        now: i64,
    ) -> StoreResult<CancelOutcome>;
    /// Creates a request.
    fn create_request(&mut self, request: &NewRequest) -> StoreResult<CreatedRequest>;
    /// Records an emergency event; returns its ref.
    fn record_emergency(&mut self, event: &NewEmergency) -> StoreResult<String>;
    /// Appends a tool audit row (no personal data).
    fn audit(
        &mut self,
        at: i64,
        call_id: Option<i64>,
        tool: &str,
        outcome: &str,
    ) -> StoreResult<()>;
    /// Appends an admin audit row: `who` (the admin token's fingerprint), `what` was asked (the
    /// route and its parameters; no personal data) and the outcome code.
    fn admin_audit(&mut self, at: i64, who: &str, what: &str, outcome: &str) -> StoreResult<()>;
    /// Appointments starting in `[from, to)`, for staff.
    fn staff_appointments(&mut self, from: i64, to: i64) -> StoreResult<Vec<StaffAppointment>>;
    /// Open requests, urgent first then oldest first.
    fn open_requests(&mut self) -> StoreResult<Vec<StaffRequest>>;
    /// Emergency events since `since`, newest first.
    fn emergencies_since(&mut self, since: i64) -> StoreResult<Vec<StaffEmergency>>;
    /// Marks a request done; false if unknown or already done.
    fn mark_request_done(&mut self, ref_code: &str, now: i64) -> StoreResult<bool>;
    /// Deletes what the policy says is due.
    fn retention(&mut self, policy: &RetentionPolicy, now: i64) -> StoreResult<RetentionReport>;
    /// Inserts demo patients when the patient table is empty; returns how many were inserted.
    fn seed_patients(&mut self, patients: &[DemoPatient], now: i64) -> StoreResult<usize>;
    /// Called by the store worker after every job: [`PgStore`] releases the call lock
    /// [`Store::live_call`] took (docs/replicas.md §3). Nothing to do for SQLite, whose single
    /// writer already serialises a call's requests.
    fn end_job(&mut self) {}
    /// Serialises the identification limits' check with the failure the job may then add
    /// (docs/replicas.md §3): [`PgStore`] takes a practice-wide lock held until
    /// [`Store::end_job`], so jobs on other workers or replicas cannot all pass a budget that
    /// only one more failure fits. Nothing to do for SQLite, whose single writer already runs
    /// jobs one at a time.
    fn lock_identifications(&mut self) -> StoreResult<()> {
        Ok(())
    }

    // The staff page (issue 14).

    /// Ends a call with what the bridge knows: `ended_at` (unless already set), the outcome and
    /// the time to first audio. False if the CallSid is unknown or its outcome already stored.
    fn finish_call(&mut self, call_sid: &str, end: &CallEnd, now: i64) -> StoreResult<bool>;
    /// Calls started in `[from, to)`, newest first, at most `limit`.
    fn staff_calls(&mut self, from: i64, to: i64, limit: usize) -> StoreResult<Vec<StaffCall>>;
    /// Calls without a stored end that started at or after `since`, newest first, at most
    /// `limit` (the caller picks `since` so that a call orphaned by a crash stops counting).
    fn running_calls(&mut self, since: i64, limit: usize) -> StoreResult<Vec<StaffCall>>;
    /// Requests created in `[from, to)`: open ones first (urgent first), then done ones; newest
    /// first within each; at most `limit`, with the total count.
    fn staff_day_requests(
        &mut self,
        from: i64,
        to: i64,
        limit: usize,
    ) -> StoreResult<(Vec<StaffDayRequest>, u32)>;
    /// Open requests created before `before`, urgent first then newest first, at most `limit`,
    /// with the total count.
    fn open_requests_before(
        &mut self,
        before: i64,
        limit: usize,
    ) -> StoreResult<(Vec<StaffDayRequest>, u32)>;
    /// Marks a request done by the staff account `who`.
    fn mark_request_done_by(
        &mut self,
        ref_code: &str,
        who: &str,
        now: i64,
    ) -> StoreResult<RequestChange>;
    /// Undoes "done": the request is open again (who and when are cleared).
    fn reopen_request(&mut self, ref_code: &str) -> StoreResult<RequestChange>;
    /// Appointments (any status) starting in `[from, to)`, in start order, at most `limit`, with
    /// what the phone agent changed.
    fn staff_day_appointments(
        &mut self,
        from: i64,
        to: i64,
        limit: usize,
    ) -> StoreResult<Vec<StaffDayAppointment>>;
    /// Emergency events created in `[from, to)`, newest first, at most `limit`, with the total
    /// count.
    fn staff_emergencies(
        &mut self,
        from: i64,
        to: i64,
        limit: usize,
    ) -> StoreResult<(Vec<StaffEmergency>, u32)>;
    /// Adds a staff account with its argon2id PHC hash; false (and no change) when the name is
    /// taken.
    fn add_staff_user(&mut self, name: &str, phc: &str, now: i64) -> StoreResult<bool>;
    /// The staff accounts by name.
    fn staff_users(&mut self) -> StoreResult<Vec<StaffUser>>;
    /// Removes a staff account and its sessions; false if unknown.
    fn remove_staff_user(&mut self, name: &str) -> StoreResult<bool>;
    /// A staff account's PHC hash.
    fn staff_user_hash(&mut self, name: &str) -> StoreResult<Option<String>>;
    /// Opens a session for `user` (its token's SHA-256 and its CSRF token); false when the
    /// account is gone.
    fn create_staff_session(
        &mut self,
        token_hash: &[u8; 32],
        user: &str,
        csrf: &str,
        now: i64,
    ) -> StoreResult<bool>;
    /// The session whose token hashes to `token_hash` if it was used within
    /// [`STAFF_SESSION_IDLE_SECS`] before `now` and opened within [`STAFF_SESSION_MAX_SECS`];
    /// marks it used at `now` (at most once per
    /// [`STAFF_SESSION_TOUCH_SECS`]).
    fn touch_staff_session(
        &mut self,
        token_hash: &[u8; 32],
        now: i64,
    ) -> StoreResult<Option<StaffSession>>;
    /// Ends a session (logout); false if unknown.
    fn delete_staff_session(&mut self, token_hash: &[u8; 32]) -> StoreResult<bool>;
    /// Counts a login attempt against the account window `key` (docs/staff.md "Login rate
    /// limit"), in one transaction: windows older than `window_secs` are deleted, a key without
    /// a window gets one starting at `now` (or, with [`MAX_LOGIN_WINDOWS`] open, counts against
    /// [`LOGIN_OVERFLOW_KEY`]). Shared by every replica on one database.
    fn count_login_attempt(
        &mut self,
        key: &str,
        now: i64,
        window_secs: i64,
    ) -> StoreResult<LoginWindow>;
    /// Takes back one attempt of `window` (a login that succeeded, or one refused after it
    /// was counted); nothing if that window is over.
    fn take_back_login_attempt(&mut self, window: &LoginWindow) -> StoreResult<()>;
    /// The account window `key` as it stands, without counting (None: no window, or over).
    fn login_window(
        &mut self,
        key: &str,
        now: i64,
        window_secs: i64,
    ) -> StoreResult<Option<LoginWindow>>;
    /// Marks `window`'s lock-out reported; true only for the first caller (of any replica),
    /// which audits it.
    fn report_login_lockout(&mut self, window: &LoginWindow) -> StoreResult<bool>;
    /// Whether account `user` logged in from `address` (an address unit) at or after `since`.
    fn login_address_trusted(&mut self, user: &str, address: &str, since: i64)
    -> StoreResult<bool>;
    /// Remembers that `user` logged in from `address` at `now`, and forgets every such pair
    /// older than `keep_secs`.
    fn trust_login_address(
        &mut self,
        user: &str,
        address: &str,
        now: i64,
        keep_secs: i64,
    ) -> StoreResult<()>;
    /// Appends a staff audit row: the account, what was viewed or done (refs and dates, no
    /// personal data), the outcome.
    fn staff_audit(&mut self, at: i64, who: &str, what: &str, outcome: &str) -> StoreResult<()>;
    /// The reference (`R-…` or `E-…`) and filing time of a request or emergency filed in
    /// `call_sid` since `since` with this fingerprint, if any: a retry whose first filing the
    /// call state missed (the state was not saved after it).
    fn filed_in_call(
        &mut self,
        call_sid: &str,
        fingerprint: &str,
        since: i64,
    ) -> StoreResult<Option<(String, i64)>>;
    /// The position of the open urgent request `ref_code` in the urgent queue now (1: first),
    /// as `create_request` counts it at filing; `None` when it is not an open urgent request.
    fn urgent_queue_position(&mut self, ref_code: &str) -> StoreResult<Option<u32>>;
    /// The staff page's closures, not removed, that end on or after `from`, by first day (at
    /// most [`MAX_OPEN_CLOSURES`]).
    fn staff_closures(&mut self, from: Date) -> StoreResult<Vec<StaffClosure>>;
    /// Stores a closure entered on the staff page; `None` (nothing stored) when
    /// [`MAX_OPEN_CLOSURES`] closures, not removed, already end on or after `today`.
    fn add_staff_closure(
        &mut self,
        closure: &NewClosure<'_>,
        today: Date,
        now: i64,
    ) -> StoreResult<Option<i64>>;
    /// Takes back a staff closure that is not over by `today` (the practice opens again): the
    /// row stays, marked removed by `by` at `now`, as the closure's history; false if there is
    /// no such closure (unknown, over, or removed already).
    fn remove_staff_closure(
        &mut self,
        id: i64,
        today: Date,
        by: &str,
        now: i64,
    ) -> StoreResult<bool>;
    /// The session whose token hashes to `token_hash` if it was used within
    /// [`STAFF_SESSION_IDLE_SECS`] before `now` and opened within [`STAFF_SESSION_MAX_SECS`],
    /// WITHOUT marking it used: the page's 1 s polls
    /// must not keep an unattended page logged in forever (docs/staff.md, idle expiry).
    fn peek_staff_session(
        &mut self,
        token_hash: &[u8; 32],
        now: i64,
    ) -> StoreResult<Option<StaffSession>>;
}
