//! The embedded SQLite store: schema and migrations, connection setup, and [`Store`] over one
//! connection (owned by the writer thread, see [`super::worker`]).

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, Transaction, TransactionBehavior, params};

use super::names::normalize_name;
use super::*;
use crate::practice::calendar::Advice;
use crate::practice::calendar::SlotCandidate;
use crate::practice::calls::{Assurance, CALL_GRACE_SECS, CallState, MAX_CALL_SECS};
use crate::secret::constant_time_eq;

/// The text enums are stored as their wire spelling (the schema's `CHECK`s list the same words).
macro_rules! sql_text_enum {
    ($($name:ty),+) => {$(
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.as_str().as_bytes())))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                <$name>::parse(text).ok_or_else(|| {
                    FromSqlError::Other(format!("unknown {} {text:?}", stringify!($name)).into())
                })
            }
        }
    )+};
}

sql_text_enum!(
    Gender,
    Insurance,
    SlotStatus,
    AppointmentStatus,
    CancelReason,
    RequestCategory,
    Urgency,
    Severity,
    Advice,
    CallOutcome,
    ClosureReason
);

/// Separator of a list stored in one `TEXT` column (visit type codes, which are `[a-z0-9_-]`).
const LIST_SEPARATOR: char = ',';

/// Stores a list of codes in one column.
fn encode_list(items: &[String]) -> String {
    items.join(&LIST_SEPARATOR.to_string())
}

/// Reads back a list stored by [`encode_list`].
fn decode_list(text: &str) -> Vec<String> {
    text.split(LIST_SEPARATOR)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// How long a writer waits for SQLite's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Embedded migrations, applied in order; index + 1 is the schema version.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE patient (
    id INTEGER PRIMARY KEY,
    family TEXT NOT NULL,
    given TEXT NOT NULL,
    family_norm TEXT NOT NULL,
    given_norm TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    gender TEXT NOT NULL DEFAULT 'unknown' CHECK (gender IN ('female','male','other','unknown')),
    phone_e164 TEXT,
    insurance TEXT NOT NULL DEFAULT 'gkv' CHECK (insurance IN ('gkv','pkv','self')),
    card_read_quarter TEXT,
    known INTEGER NOT NULL DEFAULT 1,
    created_via TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX patient_dob_family ON patient (birth_date, family_norm);

CREATE TABLE slot (
    id INTEGER PRIMARY KEY,
    practitioner_id TEXT NOT NULL,
    start_utc INTEGER NOT NULL,
    end_utc INTEGER NOT NULL,
    visit_types TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'free'
        CHECK (status IN ('free','busy','busy-unavailable','busy-tentative','entered-in-error')),
    version INTEGER NOT NULL DEFAULT 0,
    UNIQUE (practitioner_id, start_utc)
);
CREATE INDEX slot_start ON slot (start_utc);

CREATE TABLE appointment (
    id INTEGER PRIMARY KEY,
    slot_id INTEGER NOT NULL REFERENCES slot (id),
    patient_id INTEGER NOT NULL REFERENCES patient (id),
    practitioner_id TEXT NOT NULL,
    start_utc INTEGER NOT NULL,
    end_utc INTEGER NOT NULL,
    visit_type TEXT NOT NULL,
    reason_short TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('booked','cancelled','fulfilled','noshow','entered-in-error')),
    created_at INTEGER NOT NULL,
    call_sid TEXT,
    idempotency_key TEXT UNIQUE,
    cancelled_at INTEGER,
    cancel_reason TEXT,
    cancel_note TEXT,
    replaced_by INTEGER
);
CREATE UNIQUE INDEX appointment_one_booking_per_slot ON appointment (slot_id) WHERE status = 'booked';
CREATE INDEX appointment_patient ON appointment (patient_id, start_utc);
CREATE INDEX appointment_start ON appointment (start_utc);

CREATE TABLE request (
    id INTEGER PRIMARY KEY,
    ref_code TEXT NOT NULL UNIQUE,
    category TEXT NOT NULL,
    patient_id INTEGER REFERENCES patient (id) ON DELETE SET NULL,
    caller_json TEXT,
    details_json TEXT NOT NULL,
    urgency TEXT NOT NULL CHECK (urgency IN ('routine','urgent')),
    callback_number TEXT,
    callback_window TEXT,
    note TEXT,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open','done')),
    created_at INTEGER NOT NULL,
    done_at INTEGER,
    call_sid TEXT
);
CREATE INDEX request_open ON request (status, urgency, created_at);

CREATE TABLE emergency_event (
    id INTEGER PRIMARY KEY,
    severity TEXT NOT NULL,
    keywords TEXT NOT NULL,
    patient_id INTEGER REFERENCES patient (id) ON DELETE SET NULL,
    callback_number TEXT,
    advice TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    call_sid TEXT,
    acknowledged_at INTEGER
);

CREATE TABLE call (
    id INTEGER PRIMARY KEY,
    call_sid TEXT NOT NULL UNIQUE,
    token_hash BLOB NOT NULL UNIQUE,
    caller_number TEXT NOT NULL,
    called_number TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    state_json TEXT NOT NULL DEFAULT '{}',
    failed_identifications INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX call_caller ON call (caller_number, started_at);

CREATE TABLE tool_audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    call_id INTEGER,
    tool TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX tool_audit_at ON tool_audit (at);
"#,
    // 2: admin requests are audited in the same table (call_id NULL, tool = what was asked,
    // e.g. `admin:appointments date=2026-12-02`), with who asked: a prefix of the admin token's
    // SHA-256, never the token.
    r#"
ALTER TABLE tool_audit ADD COLUMN who TEXT;
"#,
    // 3 (issue 12): who asked for a request and how well they were identified; indexes for the
    // per-number daily caps. Additive: old rows keep NULLs (shown as not verified).
    r#"
ALTER TABLE request ADD COLUMN assurance TEXT;
ALTER TABLE request ADD COLUMN caller_number TEXT;
CREATE INDEX request_caller ON request (caller_number, created_at);
CREATE INDEX appointment_call ON appointment (call_sid);
"#,
    // 4 (issue 14): the staff page. How a call ended and its time to first audio (from the
    // bridge's summary), who marked a request done (a staff account; NULL through the admin
    // API), and indexes for the page's per-day lists.
    r#"
ALTER TABLE call ADD COLUMN outcome TEXT
    CHECK (outcome IN ('completed','transferred','fallback','agent_failed'));
ALTER TABLE call ADD COLUMN first_audio_ms INTEGER;
ALTER TABLE request ADD COLUMN done_by TEXT;
CREATE INDEX call_started ON call (started_at);
CREATE INDEX request_created ON request (created_at);
"#,
    // 5 (issue 14): staff accounts (argon2id PHC strings), sessions (only the SHA-256 of the
    // cookie's token; 8 h idle expiry on last_seen_at) and the staff page's audit.
    r#"
CREATE TABLE staff_user (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    phc TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE staff_session (
    id INTEGER PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES staff_user (id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
CREATE INDEX staff_session_seen ON staff_session (last_seen_at);
CREATE INDEX staff_session_user ON staff_session (user_id);
CREATE TABLE staff_audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    who TEXT NOT NULL,
    what TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX staff_audit_at ON staff_audit (at);
"#,
    // 6: closures entered on the staff page (docs/practice-tools.md §2.7); local dates as
    // `YYYY-MM-DD`, which sort as dates. Requests and emergencies keep their tool call's
    // fingerprint (a retry is recognised even when the call state was not saved).
    r#"
CREATE TABLE staff_closure (
    id INTEGER PRIMARY KEY,
    first_day TEXT NOT NULL,
    last_day TEXT NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('illness','vacation','training','other')),
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    removed_by TEXT,
    removed_at INTEGER,
    CHECK (last_day >= first_day)
);
CREATE INDEX staff_closure_last ON staff_closure (last_day);
ALTER TABLE request ADD COLUMN fingerprint TEXT;
ALTER TABLE emergency_event ADD COLUMN fingerprint TEXT;
CREATE INDEX request_filed ON request (call_sid, fingerprint) WHERE fingerprint IS NOT NULL;
CREATE INDEX emergency_filed ON emergency_event (call_sid, fingerprint)
    WHERE fingerprint IS NOT NULL;
"#,
    // 7: the staff login's account windows and trusted addresses (docs/staff.md "Login rate
    // limit"), in the store so that every replica counts one account's failures together and
    // knows the desks its staff log in from; withheld-caller placeholders cleared from phones.
    r#"
CREATE TABLE staff_login_window (
    key TEXT PRIMARY KEY,
    started INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    reported INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX staff_login_window_started ON staff_login_window (started);
CREATE TABLE staff_login_trust (
    user_id INTEGER NOT NULL REFERENCES staff_user (id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (user_id, address)
);
CREATE INDEX staff_login_trust_at ON staff_login_trust (at);
-- Phones on file that are Twilio's withheld-caller placeholders (twilio::webhook::
-- WITHHELD_NUMBERS, stored before calls from them were taken as withheld): nobody's number, and
-- every withheld caller would match them (docs/twilio.md §3.1).
UPDATE patient SET phone_e164 = NULL
 WHERE phone_e164 IN ('+266696687', '+7378742833', '+2562533', '+8656696', '+86282452253');
"#,
];

/// The urgent queue position of the open urgent request `?1` (0: it is none): the open urgent
/// requests filed up to it, as `create_request` counts them.
const URGENT_POSITION_SQL: &str = "SELECT COUNT(*) FROM request
     WHERE status = 'open' AND urgency = 'urgent' AND id <= (SELECT id FROM request
       WHERE ref_code = ?1 AND status = 'open' AND urgency = 'urgent')";

/// Counts a login attempt (`?1` key, `?2` now, `?3` [`LOGIN_OVERFLOW_KEY`]): a key without a window starts one, inheriting
/// the overflow window's start and count while that is open (expired windows are deleted
/// first), so a name that leaves the shared window for its own does not start again from zero
/// (docs/staff.md "Rate limit"). `WHERE true` keeps SQLite from reading `ON` as a join's.
const LOGIN_COUNT_SQL: &str = "INSERT INTO staff_login_window (key, started, attempts)
     SELECT ?1, COALESCE(o.started, ?2), COALESCE(o.attempts, 0) + 1
     FROM (SELECT 1) AS one LEFT JOIN staff_login_window o ON o.key = ?3 WHERE true
     ON CONFLICT (key) DO UPDATE SET attempts = attempts + 1
     RETURNING started, attempts, reported";

/// The embedded SQLite store (one connection; see [`worker`] for the writer thread).
pub struct SqliteStore {
    conn: Connection,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

/// Most memory SQLite's page cache may hold, KiB (SQLite's own default, made explicit: it is
/// part of ignis's steady-state memory).
pub const STORE_CACHE_KIB: u32 = 2000;

impl SqliteStore {
    /// Opens (creating if needed) the database file, sets WAL, `synchronous=FULL`,
    /// `foreign_keys=ON`, the page cache size, the busy timeout, and applies pending
    /// migrations.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        let conn = Connection::open(path)?;
        Self::setup(conn)
    }

    /// An in-memory store (tests, fuzzing).
    pub fn open_in_memory() -> StoreResult<SqliteStore> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(conn: Connection) -> StoreResult<SqliteStore> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // `journal_mode` returns the resulting mode as a row.
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        // Negative: KiB. The page cache fills as calls are recorded and then stays at this
        // size; the 30-minute soak's RSS growth was mostly this cache filling (issue 6).
        conn.execute_batch(&format!("PRAGMA cache_size=-{STORE_CACHE_KIB};"))?;
        let mut store = SqliteStore { conn };
        store.migrate()?;
        Ok(store)
    }

    /// Current schema version.
    pub fn schema_version(&self) -> StoreResult<i64> {
        Ok(schema_version_of(&self.conn)?)
    }

    /// A `BEGIN IMMEDIATE` transaction: the write lock up front (see the module docs).
    fn begin(&mut self) -> rusqlite::Result<Transaction<'_>> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
    }

    fn migrate(&mut self) -> StoreResult<()> {
        let tx = self.begin()?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
        let current = schema_version_of(&tx)?;
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version > current {
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    [version],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes a consistent copy of the database to `path` (`VACUUM INTO`), e.g. for a nightly
    /// backup; the target must not exist.
    pub fn backup_to(&mut self, path: &Path) -> StoreResult<()> {
        let target = path.to_string_lossy();
        self.conn.execute("VACUUM INTO ?1", [target.as_ref()])?;
        Ok(())
    }

    /// Direct access to the connection (tests that need to corrupt state deliberately).
    #[doc(hidden)]
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

fn schema_version_of(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )
}

const PATIENT_COLS: &str = "id, family, given, family_norm, given_norm, birth_date, gender, phone_e164, card_read_quarter, known";
const APPT_COLS: &str = "id, slot_id, patient_id, practitioner_id, start_utc, end_utc, visit_type, reason_short, status";
const SLOT_COLS: &str = "id, practitioner_id, start_utc, end_utc, visit_types, status";

fn patient_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PatientRecord> {
    Ok(PatientRecord {
        id: r.get(0)?,
        family: r.get(1)?,
        given: r.get(2)?,
        family_norm: r.get(3)?,
        given_norm: r.get(4)?,
        birth_date: r.get(5)?,
        gender: r.get(6)?,
        phone: r.get(7)?,
        card_read_quarter: r.get(8)?,
        known: r.get::<_, i64>(9)? != 0,
    })
}

fn appt_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AppointmentRecord> {
    Ok(AppointmentRecord {
        id: r.get(0)?,
        slot_id: r.get(1)?,
        patient_id: r.get(2)?,
        practitioner: r.get(3)?,
        start: r.get(4)?,
        end: r.get(5)?,
        visit_type: r.get(6)?,
        reason_short: r.get(7)?,
        status: r.get(8)?,
    })
}

fn slot_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SlotRecord> {
    Ok(SlotRecord {
        id: r.get(0)?,
        practitioner: r.get(1)?,
        start: r.get(2)?,
        end: r.get(3)?,
        visit_types: decode_list(&r.get::<_, String>(4)?),
        status: r.get(5)?,
    })
}

fn get_appt(conn: &Connection, id: i64) -> rusqlite::Result<Option<AppointmentRecord>> {
    conn.query_row(
        &format!("SELECT {APPT_COLS} FROM appointment WHERE id = ?1"),
        [id],
        appt_row,
    )
    .optional()
}

fn get_slot(conn: &Connection, id: i64) -> rusqlite::Result<Option<SlotRecord>> {
    conn.query_row(
        &format!("SELECT {SLOT_COLS} FROM slot WHERE id = ?1"),
        [id],
        slot_row,
    )
    .optional()
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|_| StoreError::Corrupt("request JSON"))
}

/// A retry of an identical booking (same idempotency key) answers the first result. When that
/// booking was cancelled since, `release` frees the key (in the caller's transaction) and
/// `None` lets a new booking proceed.
fn earlier_booking(tx: &Connection, key: &str, release: bool) -> StoreResult<Option<BookOutcome>> {
    let existing: Option<i64> = tx
        .query_row(
            "SELECT id FROM appointment WHERE idempotency_key = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = existing else {
        return Ok(None);
    };
    let appointment = get_appt(tx, id)?.ok_or(StoreError::Corrupt("appointment"))?;
    let replaced = tx
        .query_row(
            &format!("SELECT {APPT_COLS} FROM appointment WHERE replaced_by = ?1"),
            [id],
            appt_row,
        )
        .optional()?;
    if appointment.status == AppointmentStatus::Booked {
        return Ok(Some(BookOutcome::Booked {
            appointment: Box::new(appointment),
            replaced: replaced.map(Box::new),
            repeated: true,
        }));
    }
    if release {
        tx.execute(
            "UPDATE appointment SET idempotency_key = NULL WHERE id = ?1",
            [id],
        )?;
    }
    Ok(None)
}

/// The booking's patient id, inserting a patient created by phone (inside the booking's
/// transaction, so a failed booking leaves no orphan).
fn booking_patient_id(tx: &Connection, b: &Booking) -> StoreResult<i64> {
    let p = match &b.patient {
        BookingPatient::Existing(id) => return Ok(*id),
        BookingPatient::New(p) => p,
    };
    let row = DemoPatient {
        family: p.family.clone(),
        given: p.given.clone(),
        birth_date: p.birth_date.clone(),
        gender: Gender::Unknown,
        phone: p.phone.clone(),
        insurance: p.insurance,
        card_read_quarter: None,
    };
    insert_patient(tx, &row, Origin::Phone, b.now)
}

/// How a patient came into the store: seeded ones are known to the practice, ones created by
/// phone are not.
#[derive(Clone, Copy)]
enum Origin {
    Seed,
    Phone,
}

/// Inserts a patient (names normalised for the lookup) and returns its id.
fn insert_patient(tx: &Connection, p: &DemoPatient, origin: Origin, now: i64) -> StoreResult<i64> {
    let (known, via) = match origin {
        Origin::Seed => (true, "seed"),
        Origin::Phone => (false, "phone"),
    };
    tx.execute(
        "INSERT INTO patient (family, given, family_norm, given_norm, birth_date, gender,
             phone_e164, insurance, card_read_quarter, known, created_via, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            p.family,
            p.given,
            normalize_name(&p.family),
            normalize_name(&p.given),
            p.birth_date,
            p.gender,
            p.phone,
            p.insurance,
            p.card_read_quarter,
            known,
            via,
            now
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

/// The stored cancel reason of an appointment a reschedule replaced (not a caller's reason).
const RESCHEDULED: &str = "rescheduled";

/// Cancels a booked appointment and frees its slot (a caller's cancel, or the appointment a
/// reschedule replaces).
fn cancel_booked(
    tx: &Connection,
    a: &AppointmentRecord,
    reason: &str,
    note: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    tx.execute(
        "UPDATE appointment SET status = 'cancelled', cancelled_at = ?2, cancel_reason = ?3,
             cancel_note = ?4 WHERE id = ?1 AND status = 'booked'",
        params![a.id, now, reason, note],
    )?;
    tx.execute(
        "UPDATE slot SET status = 'free', version = version + 1 WHERE id = ?1",
        [a.slot_id],
    )?;
    Ok(())
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

const CALL_COLS: &str = "id, caller_number, started_at, ended_at, outcome, first_audio_ms";

fn staff_call_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StaffCall> {
    Ok(StaffCall {
        id: r.get(0)?,
        caller_number: r.get(1)?,
        started_at: r.get(2)?,
        ended_at: r.get(3)?,
        outcome: r.get(4)?,
        first_audio_ms: r.get(5)?,
    })
}

const DAY_REQUEST_COLS: &str = "r.ref_code, r.category, r.urgency, p.given || ' ' || p.family,
    r.caller_json, r.details_json, r.callback_number, r.callback_window, r.note, r.created_at,
    r.assurance, r.caller_number, p.birth_date, r.done_at, r.done_by";

/// The first twelve columns of [`DAY_REQUEST_COLS`] (the admin API's open requests select the
/// same ones) as a [`StaffRequest`].
fn staff_request_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StaffRequest> {
    let caller: Option<String> = r.get(4)?;
    let details: String = r.get(5)?;
    let assurance: Option<String> = r.get(10)?;
    Ok(StaffRequest {
        ref_code: r.get(0)?,
        category: r.get(1)?,
        urgency: r.get(2)?,
        patient: r.get(3)?,
        caller: caller.and_then(|c| serde_json::from_str(&c).ok()),
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
        callback_number: r.get(6)?,
        callback_window: r.get(7)?,
        note: r.get(8)?,
        created_at: r.get(9)?,
        verified: assurance.as_deref() == Some(Assurance::NameDobPhone.as_str()),
        assurance,
        caller_number: r.get(11)?,
    })
}

fn day_request_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StaffDayRequest> {
    Ok(StaffDayRequest {
        row: staff_request_row(r)?,
        birth_date: r.get(12)?,
        done_at: r.get(13)?,
        done_by: r.get(14)?,
    })
}

fn staff_emergency_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StaffEmergency> {
    Ok(StaffEmergency {
        event_ref: format!("E-{}", r.get::<_, i64>(0)?),
        severity: r.get(1)?,
        keywords: r.get(2)?,
        patient: r.get(3)?,
        callback_number: r.get(4)?,
        advice: r.get(5)?,
        created_at: r.get(6)?,
    })
}

/// [`Store::filed_in_call`]: the newest request or emergency of the call with the fingerprint.
const FILED_IN_CALL: &str = "SELECT ref, at FROM (
        SELECT ref_code AS ref, created_at AS at FROM request
         WHERE call_sid = ?1 AND fingerprint = ?2 AND created_at >= ?3
        UNION ALL
        SELECT 'E-' || id, created_at FROM emergency_event
         WHERE call_sid = ?1 AND fingerprint = ?2 AND created_at >= ?3
    ) ORDER BY at DESC LIMIT 1";

/// A stored `YYYY-MM-DD` day.
fn stored_day(text: &str) -> StoreResult<Date> {
    text.parse().map_err(|_| StoreError::Corrupt("closure day"))
}

/// A row limit as SQLite's `LIMIT` takes it.
fn sql_limit(limit: usize) -> i64 {
    limit.min(i64::MAX as usize) as i64
}

fn count_u32(n: i64) -> u32 {
    n.clamp(0, u32::MAX as i64) as u32
}

impl SqliteStore {
    /// What an `UPDATE` of `n` rows on a request by ref changed.
    fn request_change(&self, ref_code: &str, n: usize) -> StoreResult<RequestChange> {
        if n == 1 {
            return Ok(RequestChange::Changed);
        }
        let exists: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM request WHERE ref_code = ?1",
                [ref_code],
                |r| r.get(0),
            )
            .optional()?;
        Ok(match exists {
            Some(_) => RequestChange::Unchanged,
            None => RequestChange::NotFound,
        })
    }
}

impl Store for SqliteStore {
    fn start_call(
        &mut self,
        call_sid: &str,
        token_hash: &[u8; 32],
        caller_number: &str,
        called_number: &str,
        now: i64,
    ) -> StoreResult<()> {
        // Insert or refuse: an existing call's row (its token, state and end) is never reset,
        // whatever replays its voice webhook (issue 12; docs/twilio.md §8.3).
        let inserted = self.conn.execute(
            "INSERT INTO call (call_sid, token_hash, caller_number, called_number, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (call_sid) DO NOTHING",
            params![call_sid, &token_hash[..], caller_number, called_number, now],
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
        let n = self.conn.execute(
            "UPDATE call SET token_hash = ?2 WHERE call_sid = ?1 AND ended_at IS NULL",
            params![call_sid, &token_hash[..]],
        )?;
        Ok(n == 1)
    }

    fn end_call(&mut self, call_sid: &str, now: i64) -> StoreResult<bool> {
        let n = self.conn.execute(
            "UPDATE call SET ended_at = ?2 WHERE call_sid = ?1 AND ended_at IS NULL",
            params![call_sid, now],
        )?;
        Ok(n == 1)
    }

    fn live_call(&mut self, token_hash: &[u8; 32], now: i64) -> StoreResult<Option<CallRecord>> {
        let row = self
            .conn
            .query_row(
                "SELECT id, call_sid, token_hash, caller_number, state_json FROM call
                 WHERE token_hash = ?1
                   AND started_at + ?3 > ?2
                   AND (ended_at IS NULL OR ended_at + ?4 > ?2)",
                params![&token_hash[..], now, MAX_CALL_SECS, CALL_GRACE_SECS],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                },
            )
            .optional()?;
        let Some((id, call_sid, hash, caller_number, state_json)) = row else {
            return Ok(None);
        };
        if !constant_time_eq(&hash, token_hash) {
            return Ok(None);
        }
        let state =
            serde_json::from_str(&state_json).map_err(|_| StoreError::Corrupt("call state"))?;
        Ok(Some(CallRecord {
            id,
            call_sid,
            token_hash: hash,
            caller_number,
            state,
        }))
    }

    fn save_call_state(&mut self, call_id: i64, state: &CallState) -> StoreResult<()> {
        let json = serde_json::to_string(state).map_err(|_| StoreError::Corrupt("call state"))?;
        self.conn.execute(
            "UPDATE call SET state_json = ?2, failed_identifications = ?3 WHERE id = ?1",
            params![call_id, json, state.failed_identifications],
        )?;
        Ok(())
    }

    fn failed_identifications_by_number(
        &mut self,
        caller_number: &str,
        since: i64,
    ) -> StoreResult<u32> {
        let n: i64 = self.conn.query_row(
            "SELECT COALESCE(SUM(failed_identifications), 0) FROM call
             WHERE caller_number = ?1 AND started_at >= ?2",
            params![caller_number, since],
            |r| r.get(0),
        )?;
        Ok(n.clamp(0, u32::MAX as i64) as u32)
    }

    fn identification_failures_since(&mut self, since: i64) -> StoreResult<Vec<(String, u32)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT caller_number, SUM(failed_identifications) FROM call
             WHERE started_at >= ?1 AND failed_identifications > 0 GROUP BY caller_number",
        )?;
        let rows = st.query_map([since], |r| {
            let n: i64 = r.get(1)?;
            Ok((r.get(0)?, n.clamp(0, u32::MAX as i64) as u32))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn activity_by_number(&mut self, caller_number: &str, since: i64) -> StoreResult<(u32, u32)> {
        let count = |n: i64| n.clamp(0, u32::MAX as i64) as u32;
        let bookings: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM appointment a JOIN call c ON c.call_sid = a.call_sid
             WHERE c.caller_number = ?1 AND a.created_at >= ?2",
            params![caller_number, since],
            |r| r.get(0),
        )?;
        let requests: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM request WHERE caller_number = ?1 AND created_at >= ?2",
            params![caller_number, since],
            |r| r.get(0),
        )?;
        Ok((count(bookings), count(requests)))
    }

    fn patients_by_birth_date(&mut self, birth_date: &str) -> StoreResult<Vec<PatientRecord>> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {PATIENT_COLS} FROM patient WHERE birth_date = ?1"
        ))?;
        let rows = st.query_map([birth_date], patient_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn patient(&mut self, id: i64) -> StoreResult<Option<PatientRecord>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {PATIENT_COLS} FROM patient WHERE id = ?1"),
                [id],
                patient_row,
            )
            .optional()?)
    }

    fn upcoming(
        &mut self,
        patient_id: i64,
        now: i64,
        limit: usize,
    ) -> StoreResult<Vec<AppointmentRecord>> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {APPT_COLS} FROM appointment WHERE patient_id = ?1 AND status = 'booked'
             AND start_utc > ?2 ORDER BY start_utc LIMIT ?3"
        ))?;
        let rows = st.query_map(params![patient_id, now, limit as i64], appt_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn appointment(&mut self, id: i64) -> StoreResult<Option<AppointmentRecord>> {
        Ok(get_appt(&self.conn, id)?)
    }

    fn free_slots(
        &mut self,
        candidates: &[SlotCandidate],
        limit: usize,
    ) -> StoreResult<Vec<SlotRecord>> {
        let tx = self.begin()?;
        let mut out = Vec::new();
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO slot (practitioner_id, start_utc, end_utc, visit_types)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (practitioner_id, start_utc) DO NOTHING",
            )?;
            let mut sel = tx.prepare_cached(&format!(
                "SELECT {SLOT_COLS} FROM slot WHERE practitioner_id = ?1 AND start_utc = ?2"
            ))?;
            for c in candidates {
                if out.len() >= limit {
                    break;
                }
                ins.execute(params![
                    c.practitioner,
                    c.start,
                    c.end,
                    encode_list(&c.visit_types)
                ])?;
                let s = sel.query_row(params![c.practitioner, c.start], slot_row)?;
                if s.status == SlotStatus::Free {
                    out.push(s);
                }
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn slot(&mut self, id: i64) -> StoreResult<Option<SlotRecord>> {
        Ok(get_slot(&self.conn, id)?)
    }

    fn repeated_booking(&mut self, key: &str) -> StoreResult<Option<BookOutcome>> {
        earlier_booking(&self.conn, key, false)
    }

    fn book(&mut self, b: &Booking) -> StoreResult<BookOutcome> {
        let tx = self.begin()?;
        if let Some(first) = earlier_booking(&tx, &b.idempotency_key, true)? {
            return Ok(first);
        }
        let Some(slot) = get_slot(&tx, b.slot_id)?.filter(|s| s.start > b.now) else {
            return Ok(BookOutcome::SlotGone);
        };
        if !slot.visit_types.contains(&b.visit_type) {
            return Ok(BookOutcome::WrongVisitType);
        }
        let replaced_before = match b.replaces {
            Some(old) => {
                let a = get_appt(&tx, old)?;
                let ok = match (&a, &b.patient) {
                    (Some(a), BookingPatient::Existing(p)) => {
                        a.patient_id == *p && a.status == AppointmentStatus::Booked
                    }
                    _ => false,
                };
                if !ok {
                    return Ok(BookOutcome::ReplacedNotBookable);
                }
                a
            }
            None => None,
        };
        // The conditional claim: exactly one transaction can move the slot from free to busy.
        let claimed = tx.execute(
            "UPDATE slot SET status = 'busy', version = version + 1 WHERE id = ?1 AND status = 'free'",
            [b.slot_id],
        )?;
        if claimed == 0 {
            return Ok(BookOutcome::SlotTaken); // dropping `tx` rolls back
        }
        let patient_id = booking_patient_id(&tx, b)?;
        // Reschedule: release the old appointment first so the patient is never double-booked
        // with itself, all inside this transaction.
        if let Some(old) = &replaced_before {
            cancel_booked(&tx, old, RESCHEDULED, None, b.now)?;
        }
        let inserted = tx.execute(
            "INSERT INTO appointment (slot_id, patient_id, practitioner_id, start_utc, end_utc,
                 visit_type, reason_short, status, created_at, call_sid, idempotency_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'booked', ?8, ?9, ?10)",
            params![
                slot.id,
                patient_id,
                slot.practitioner,
                slot.start,
                slot.end,
                b.visit_type,
                b.reason_short,
                b.now,
                b.call_sid,
                b.idempotency_key
            ],
        );
        match inserted {
            Ok(_) => {}
            // The unique index backstop: someone holds a booked appointment on this slot.
            Err(e) if is_unique_violation(&e) => return Ok(BookOutcome::SlotTaken),
            Err(e) => return Err(e.into()),
        }
        let new_id = tx.last_insert_rowid();
        if let Some(old) = &replaced_before {
            tx.execute(
                "UPDATE appointment SET replaced_by = ?2 WHERE id = ?1",
                params![old.id, new_id],
            )?;
        }
        let appointment = get_appt(&tx, new_id)?.ok_or(StoreError::Corrupt("appointment"))?;
        let replaced = match &replaced_before {
            Some(old) => get_appt(&tx, old.id)?,
            None => None,
        };
        tx.commit()?;
        Ok(BookOutcome::Booked {
            appointment: Box::new(appointment),
            replaced: replaced.map(Box::new),
            repeated: false,
        })
    }

    fn cancel(
        &mut self,
        appointment_id: i64,
        reason: CancelReason,
        note: Option<&str>,
        now: i64,
    ) -> StoreResult<CancelOutcome> {
        let tx = self.begin()?;
        let Some(a) = get_appt(&tx, appointment_id)? else {
            return Ok(CancelOutcome::NotFound);
        };
        if a.status != AppointmentStatus::Booked {
            return Ok(CancelOutcome::AlreadyCancelled);
        }
        if a.start <= now {
            return Ok(CancelOutcome::InPast);
        }
        cancel_booked(&tx, &a, reason.as_str(), note, now)?;
        let after = get_appt(&tx, a.id)?.ok_or(StoreError::Corrupt("appointment"))?;
        tx.commit()?;
        Ok(CancelOutcome::Cancelled(after))
    }

    fn create_request(&mut self, r: &NewRequest) -> StoreResult<CreatedRequest> {
        let tx = self.begin()?;
        let next: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM request", [], |x| {
            x.get(0)
        })?;
        let ref_code = format!("R-{}", 1000 + next);
        let caller_json = r.caller.as_ref().map(to_json).transpose()?;
        // No details are stored as an empty object, as the staff view has always shown them.
        let details_json = match &r.details {
            Some(d) => to_json(d)?,
            None => "{}".to_string(),
        };
        tx.execute(
            "INSERT INTO request (id, ref_code, category, patient_id, caller_json, details_json,
                 urgency, callback_number, callback_window, note, created_at, call_sid,
                 assurance, caller_number, fingerprint)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            params![
                next,
                ref_code,
                r.category,
                r.patient_id,
                caller_json,
                details_json,
                r.urgency,
                r.callback_number,
                r.callback_window,
                r.note,
                r.now,
                r.call_sid,
                r.assurance.map_or("none", Assurance::as_str),
                r.caller_number,
                r.fingerprint
            ],
        )?;
        let queue_position = if r.urgency == Urgency::Urgent {
            let n: i64 = tx.query_row(
                "SELECT COUNT(*) FROM request WHERE status = 'open' AND urgency = 'urgent'",
                [],
                |x| x.get(0),
            )?;
            Some(n as u32)
        } else {
            None
        };
        tx.commit()?;
        Ok(CreatedRequest {
            ref_code,
            queue_position,
        })
    }

    fn record_emergency(&mut self, e: &NewEmergency) -> StoreResult<String> {
        self.conn.execute(
            "INSERT INTO emergency_event (severity, keywords, patient_id, callback_number, advice,
                 created_at, call_sid, fingerprint) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                e.severity,
                e.keywords,
                e.patient_id,
                e.callback_number,
                e.advice,
                e.now,
                e.call_sid,
                e.fingerprint
            ],
        )?;
        Ok(format!("E-{}", self.conn.last_insert_rowid()))
    }

    fn filed_in_call(
        &mut self,
        call_sid: &str,
        fingerprint: &str,
        since: i64,
    ) -> StoreResult<Option<(String, i64)>> {
        let mut st = self.conn.prepare_cached(FILED_IN_CALL)?;
        Ok(st
            .query_row(params![call_sid, fingerprint, since], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    fn audit(
        &mut self,
        at: i64,
        call_id: Option<i64>,
        tool: &str,
        outcome: &str,
    ) -> StoreResult<()> {
        self.conn.execute(
            "INSERT INTO tool_audit (at, call_id, tool, outcome) VALUES (?1, ?2, ?3, ?4)",
            params![at, call_id, tool, outcome],
        )?;
        Ok(())
    }

    fn admin_audit(&mut self, at: i64, who: &str, what: &str, outcome: &str) -> StoreResult<()> {
        self.conn.execute(
            "INSERT INTO tool_audit (at, call_id, tool, outcome, who) VALUES (?1, NULL, ?2, ?3, ?4)",
            params![at, what, outcome, who],
        )?;
        Ok(())
    }

    fn staff_appointments(&mut self, from: i64, to: i64) -> StoreResult<Vec<StaffAppointment>> {
        let mut st = self.conn.prepare_cached(
            "SELECT a.id, a.start_utc, a.practitioner_id, a.visit_type, a.reason_short, a.status,
                    p.given || ' ' || p.family, p.birth_date, p.phone_e164
             FROM appointment a JOIN patient p ON p.id = a.patient_id
             WHERE a.start_utc >= ?1 AND a.start_utc < ?2 ORDER BY a.start_utc, a.id",
        )?;
        let rows = st.query_map(params![from, to], |r| {
            Ok(StaffAppointment {
                id: r.get(0)?,
                start: r.get(1)?,
                practitioner: r.get(2)?,
                details: StaffAppointmentDetails {
                    visit_type: r.get(3)?,
                    reason_short: r.get(4)?,
                    status: r.get(5)?,
                    patient: r.get(6)?,
                    birth_date: r.get(7)?,
                    phone: r.get(8)?,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn open_requests(&mut self) -> StoreResult<Vec<StaffRequest>> {
        let mut st = self.conn.prepare_cached(
            "SELECT r.ref_code, r.category, r.urgency, p.given || ' ' || p.family || ' (' || p.birth_date || ')',
                    r.caller_json, r.details_json, r.callback_number, r.callback_window, r.note, r.created_at,
                    r.assurance, r.caller_number
             FROM request r LEFT JOIN patient p ON p.id = r.patient_id
             WHERE r.status = 'open'
             ORDER BY CASE r.urgency WHEN 'urgent' THEN 0 ELSE 1 END, r.created_at, r.id",
        )?;
        let rows = st.query_map([], staff_request_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn emergencies_since(&mut self, since: i64) -> StoreResult<Vec<StaffEmergency>> {
        let mut st = self.conn.prepare_cached(
            "SELECT e.id, e.severity, e.keywords, p.given || ' ' || p.family, e.callback_number,
                    e.advice, e.created_at
             FROM emergency_event e LEFT JOIN patient p ON p.id = e.patient_id
             WHERE e.created_at >= ?1 ORDER BY e.created_at DESC, e.id DESC",
        )?;
        let rows = st.query_map([since], staff_emergency_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn mark_request_done(&mut self, ref_code: &str, now: i64) -> StoreResult<bool> {
        let n = self.conn.execute(
            "UPDATE request SET status = 'done', done_at = ?2 WHERE ref_code = ?1 AND status = 'open'",
            params![ref_code, now],
        )?;
        Ok(n == 1)
    }

    fn retention(&mut self, p: &RetentionPolicy, now: i64) -> StoreResult<RetentionReport> {
        let tx = self.begin()?;
        let mut rep = RetentionReport {
            calls: tx.execute(
                "DELETE FROM call WHERE (ended_at IS NOT NULL AND ended_at < ?1)
                    OR started_at < ?2",
                params![
                    now - p.call_after_end,
                    now - p.call_after_end - MAX_CALL_SECS
                ],
            )?,
            tool_audit: tx.execute("DELETE FROM tool_audit WHERE at < ?1", [now - p.tool_audit])?,
            requests: tx.execute(
                "DELETE FROM request WHERE status = 'done' AND done_at < ?1",
                [now - p.request_after_done],
            )?,
            ..RetentionReport::default()
        };
        // Unlink replaced_by pointers into appointments about to go, then delete them.
        let cutoff = now - p.appointment_after_start;
        tx.execute(
            "UPDATE appointment SET replaced_by = NULL WHERE replaced_by IN
                 (SELECT id FROM appointment WHERE start_utc < ?1)",
            [cutoff],
        )?;
        rep.appointments = tx.execute("DELETE FROM appointment WHERE start_utc < ?1", [cutoff])?;
        rep.emergency_events = tx.execute(
            "DELETE FROM emergency_event WHERE created_at < ?1",
            [now - p.emergency_event],
        )?;
        rep.patients = tx.execute(
            "DELETE FROM patient WHERE created_via = 'phone' AND created_at < ?1
               AND NOT EXISTS (SELECT 1 FROM appointment a WHERE a.patient_id = patient.id)
               AND NOT EXISTS (SELECT 1 FROM request r WHERE r.patient_id = patient.id)",
            [now - p.orphan_patient],
        )?;
        rep.slots = tx.execute(
            "DELETE FROM slot WHERE end_utc < ?1
               AND NOT EXISTS (SELECT 1 FROM appointment a WHERE a.slot_id = slot.id)",
            [now - records::DAY],
        )?;
        // A fingerprint is for recognising retries within minutes; it also hashes what the
        // row does not keep (a named call-back number), so it goes after a day.
        for table in ["request", "emergency_event"] {
            tx.execute(
                &format!(
                    "UPDATE {table} SET fingerprint = NULL
                     WHERE fingerprint IS NOT NULL AND created_at < ?1"
                ),
                [now - FINGERPRINT_KEPT_SECS],
            )?;
        }
        rep.staff_sessions = tx.execute(
            "DELETE FROM staff_session WHERE last_seen_at < ?1 OR created_at <= ?2",
            [now - STAFF_SESSION_IDLE_SECS, now - STAFF_SESSION_MAX_SECS],
        )?;
        rep.staff_audit = tx.execute(
            "DELETE FROM staff_audit WHERE at < ?1",
            [now - p.staff_audit],
        )?;
        let (cutoff, cutoff_day) = closure_cutoff(p, now)?;
        rep.staff_closures = tx.execute(
            "DELETE FROM staff_closure
             WHERE (removed_at IS NOT NULL AND removed_at < ?1)
                OR (removed_at IS NULL AND last_day < ?2)",
            params![cutoff, cutoff_day],
        )?;
        tx.commit()?;
        Ok(rep)
    }

    fn seed_patients(&mut self, patients: &[DemoPatient], now: i64) -> StoreResult<usize> {
        let tx = self.begin()?;
        let count: i64 = tx.query_row("SELECT COUNT(*) FROM patient", [], |r| r.get(0))?;
        if count > 0 {
            return Ok(0);
        }
        for p in patients {
            insert_patient(&tx, p, Origin::Seed, now)?;
        }
        tx.commit()?;
        Ok(patients.len())
    }

    fn finish_call(&mut self, call_sid: &str, end: &CallEnd, now: i64) -> StoreResult<bool> {
        let ttfa = end.first_audio_ms.map(|ms| ms.min(i64::MAX as u64) as i64);
        let n = self.conn.execute(
            "UPDATE call SET ended_at = COALESCE(ended_at, ?2), outcome = ?3, first_audio_ms = ?4
             WHERE call_sid = ?1 AND outcome IS NULL",
            params![call_sid, now, end.outcome, ttfa],
        )?;
        Ok(n == 1)
    }

    fn staff_calls(&mut self, from: i64, to: i64, limit: usize) -> StoreResult<Vec<StaffCall>> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {CALL_COLS} FROM call WHERE started_at >= ?1 AND started_at < ?2
             ORDER BY started_at DESC, id DESC LIMIT ?3"
        ))?;
        let rows = st.query_map(params![from, to, sql_limit(limit)], staff_call_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn running_calls(&mut self, since: i64, limit: usize) -> StoreResult<Vec<StaffCall>> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {CALL_COLS} FROM call WHERE ended_at IS NULL AND started_at >= ?1
             ORDER BY started_at DESC, id DESC LIMIT ?2"
        ))?;
        let rows = st.query_map(params![since, sql_limit(limit)], staff_call_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn staff_day_requests(
        &mut self,
        from: i64,
        to: i64,
        limit: usize,
    ) -> StoreResult<(Vec<StaffDayRequest>, u32)> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {DAY_REQUEST_COLS} FROM request r LEFT JOIN patient p ON p.id = r.patient_id
             WHERE r.created_at >= ?1 AND r.created_at < ?2
             ORDER BY CASE r.status WHEN 'open' THEN 0 ELSE 1 END,
                      CASE r.urgency WHEN 'urgent' THEN 0 ELSE 1 END, r.created_at DESC, r.id DESC
             LIMIT ?3"
        ))?;
        let rows = st
            .query_map(params![from, to, sql_limit(limit)], day_request_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let total: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM request WHERE created_at >= ?1 AND created_at < ?2",
            params![from, to],
            |r| r.get(0),
        )?;
        Ok((rows, count_u32(total)))
    }

    fn open_requests_before(
        &mut self,
        before: i64,
        limit: usize,
    ) -> StoreResult<(Vec<StaffDayRequest>, u32)> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {DAY_REQUEST_COLS} FROM request r LEFT JOIN patient p ON p.id = r.patient_id
             WHERE r.status = 'open' AND r.created_at < ?1
             ORDER BY CASE r.urgency WHEN 'urgent' THEN 0 ELSE 1 END, r.created_at DESC, r.id DESC
             LIMIT ?2"
        ))?;
        let rows = st
            .query_map(params![before, sql_limit(limit)], day_request_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let total: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM request WHERE status = 'open' AND created_at < ?1",
            [before],
            |r| r.get(0),
        )?;
        Ok((rows, count_u32(total)))
    }

    fn mark_request_done_by(
        &mut self,
        ref_code: &str,
        who: &str,
        now: i64,
    ) -> StoreResult<RequestChange> {
        let n = self.conn.execute(
            "UPDATE request SET status = 'done', done_at = ?2, done_by = ?3
             WHERE ref_code = ?1 AND status = 'open'",
            params![ref_code, now, who],
        )?;
        self.request_change(ref_code, n)
    }

    fn staff_closures(&mut self, from: Date) -> StoreResult<Vec<StaffClosure>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, first_day, last_day, reason, created_by, created_at FROM staff_closure
             WHERE last_day >= ?1 AND removed_at IS NULL ORDER BY first_day, id LIMIT ?2",
        )?;
        let rows = st.query_map(
            params![from.to_string(), sql_limit(MAX_OPEN_CLOSURES)],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, ClosureReason>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (id, from, to, reason, created_by, created_at) = row?;
            out.push(StaffClosure {
                id,
                from: stored_day(&from)?,
                to: stored_day(&to)?,
                reason,
                created_by,
                created_at,
            });
        }
        Ok(out)
    }

    fn add_staff_closure(
        &mut self,
        c: &NewClosure<'_>,
        today: Date,
        now: i64,
    ) -> StoreResult<Option<i64>> {
        let tx = self.begin()?;
        let open: i64 = tx.query_row(
            "SELECT COUNT(*) FROM staff_closure WHERE last_day >= ?1 AND removed_at IS NULL",
            [today.to_string()],
            |r| r.get(0),
        )?;
        if open >= sql_limit(MAX_OPEN_CLOSURES) {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO staff_closure (first_day, last_day, reason, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![c.from.to_string(), c.to.to_string(), c.reason, c.by, now],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(Some(id))
    }

    fn count_login_attempt(
        &mut self,
        key: &str,
        now: i64,
        window_secs: i64,
    ) -> StoreResult<LoginWindow> {
        let tx = self.begin()?;
        tx.execute(
            "DELETE FROM staff_login_window WHERE started <= ?1",
            [now - window_secs],
        )?;
        let open: i64 =
            tx.query_row("SELECT COUNT(*) FROM staff_login_window", [], |r| r.get(0))?;
        let known: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM staff_login_window WHERE key = ?1)",
            [key],
            |r| r.get(0),
        )?;
        let key = if known || open < MAX_LOGIN_WINDOWS {
            key
        } else {
            LOGIN_OVERFLOW_KEY
        };
        let (started, attempts, reported) = tx.query_row(
            LOGIN_COUNT_SQL,
            params![key, now, LOGIN_OVERFLOW_KEY],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        tx.commit()?;
        Ok(LoginWindow {
            key: key.to_owned(),
            started,
            attempts,
            reported,
        })
    }

    fn urgent_queue_position(&mut self, ref_code: &str) -> StoreResult<Option<u32>> {
        let n: i64 = self
            .conn
            .query_row(URGENT_POSITION_SQL, [ref_code], |r| r.get(0))?;
        Ok(u32::try_from(n).ok().filter(|n| *n > 0))
    }

    fn take_back_login_attempt(&mut self, window: &LoginWindow) -> StoreResult<()> {
        self.conn.execute(
            "UPDATE staff_login_window SET attempts = attempts - 1
             WHERE key = ?1 AND started = ?2 AND attempts > 0",
            params![window.key, window.started],
        )?;
        Ok(())
    }

    fn login_window(
        &mut self,
        key: &str,
        now: i64,
        window_secs: i64,
    ) -> StoreResult<Option<LoginWindow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT started, attempts, reported FROM staff_login_window
                 WHERE key = ?1 AND started > ?2",
                params![key, now - window_secs],
                |r| {
                    Ok(LoginWindow {
                        key: key.to_owned(),
                        started: r.get(0)?,
                        attempts: r.get(1)?,
                        reported: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    fn report_login_lockout(&mut self, window: &LoginWindow) -> StoreResult<bool> {
        let n = self.conn.execute(
            "UPDATE staff_login_window SET reported = 1
             WHERE key = ?1 AND started = ?2 AND reported = 0",
            params![window.key, window.started],
        )?;
        Ok(n == 1)
    }

    fn login_address_trusted(
        &mut self,
        user: &str,
        address: &str,
        since: i64,
    ) -> StoreResult<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM staff_login_trust t JOIN staff_user u ON u.id = t.user_id
             WHERE u.name = ?1 AND t.address = ?2 AND t.at >= ?3)",
            params![user, address, since],
            |r| r.get(0),
        )?)
    }

    fn trust_login_address(
        &mut self,
        user: &str,
        address: &str,
        now: i64,
        keep_secs: i64,
    ) -> StoreResult<()> {
        let tx = self.begin()?;
        tx.execute(
            "DELETE FROM staff_login_trust WHERE at < ?1
             AND user_id IN (SELECT id FROM staff_user WHERE name = ?2)",
            params![now - keep_secs, user],
        )?;
        tx.execute(
            "INSERT INTO staff_login_trust (user_id, address, at)
             SELECT id, ?2, ?3 FROM staff_user WHERE name = ?1
             ON CONFLICT (user_id, address) DO UPDATE SET at = excluded.at",
            params![user, address, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn remove_staff_closure(
        &mut self,
        id: i64,
        today: Date,
        by: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let n = self.conn.execute(
            "UPDATE staff_closure SET removed_by = ?3, removed_at = ?4
             WHERE id = ?1 AND last_day >= ?2 AND removed_at IS NULL",
            params![id, today.to_string(), by, now],
        )?;
        Ok(n == 1)
    }

    fn reopen_request(&mut self, ref_code: &str) -> StoreResult<RequestChange> {
        let n = self.conn.execute(
            "UPDATE request SET status = 'open', done_at = NULL, done_by = NULL
             WHERE ref_code = ?1 AND status = 'done'",
            [ref_code],
        )?;
        self.request_change(ref_code, n)
    }

    fn staff_day_appointments(
        &mut self,
        from: i64,
        to: i64,
        limit: usize,
    ) -> StoreResult<Vec<StaffDayAppointment>> {
        let mut st = self.conn.prepare_cached(
            "SELECT a.id, a.start_utc, a.practitioner_id, a.visit_type, a.reason_short, a.status,
                    p.given || ' ' || p.family, p.birth_date, p.phone_e164,
                    a.end_utc, a.call_sid, a.created_at, a.cancelled_at, a.cancel_reason,
                    EXISTS (SELECT 1 FROM appointment o WHERE o.replaced_by = a.id)
             FROM appointment a JOIN patient p ON p.id = a.patient_id
             WHERE a.start_utc >= ?1 AND a.start_utc < ?2 ORDER BY a.start_utc, a.id LIMIT ?3",
        )?;
        let rows = st.query_map(params![from, to, sql_limit(limit)], |r| {
            Ok(StaffDayAppointment {
                row: StaffAppointment {
                    id: r.get(0)?,
                    start: r.get(1)?,
                    practitioner: r.get(2)?,
                    details: StaffAppointmentDetails {
                        visit_type: r.get(3)?,
                        reason_short: r.get(4)?,
                        status: r.get(5)?,
                        patient: r.get(6)?,
                        birth_date: r.get(7)?,
                        phone: r.get(8)?,
                    },
                },
                end: r.get(9)?,
                call_sid: r.get(10)?,
                created_at: r.get(11)?,
                cancelled_at: r.get(12)?,
                cancel_reason: r.get(13)?,
                moved_here: r.get::<_, i64>(14)? != 0,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn staff_emergencies(
        &mut self,
        from: i64,
        to: i64,
        limit: usize,
    ) -> StoreResult<(Vec<StaffEmergency>, u32)> {
        let mut st = self.conn.prepare_cached(
            "SELECT e.id, e.severity, e.keywords, p.given || ' ' || p.family, e.callback_number,
                    e.advice, e.created_at
             FROM emergency_event e LEFT JOIN patient p ON p.id = e.patient_id
             WHERE e.created_at >= ?1 AND e.created_at < ?2
             ORDER BY e.created_at DESC, e.id DESC LIMIT ?3",
        )?;
        let rows = st
            .query_map(params![from, to, sql_limit(limit)], staff_emergency_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let total: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM emergency_event WHERE created_at >= ?1 AND created_at < ?2",
            params![from, to],
            |r| r.get(0),
        )?;
        Ok((rows, count_u32(total)))
    }

    fn add_staff_user(&mut self, name: &str, phc: &str, now: i64) -> StoreResult<bool> {
        let n = self.conn.execute(
            "INSERT INTO staff_user (name, phc, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO NOTHING",
            params![name, phc, now],
        )?;
        Ok(n == 1)
    }

    fn staff_users(&mut self) -> StoreResult<Vec<StaffUser>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT name, created_at FROM staff_user ORDER BY name")?;
        let rows = st.query_map([], |r| {
            Ok(StaffUser {
                name: r.get(0)?,
                created_at: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn remove_staff_user(&mut self, name: &str) -> StoreResult<bool> {
        // The sessions go with it (ON DELETE CASCADE, foreign_keys=ON).
        let n = self
            .conn
            .execute("DELETE FROM staff_user WHERE name = ?1", [name])?;
        Ok(n == 1)
    }

    fn staff_user_hash(&mut self, name: &str) -> StoreResult<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT phc FROM staff_user WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn create_staff_session(
        &mut self,
        token_hash: &[u8; 32],
        user: &str,
        csrf: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let n = self.conn.execute(
            "INSERT INTO staff_session (token_hash, user_id, csrf, created_at, last_seen_at)
             SELECT ?1, id, ?3, ?4, ?4 FROM staff_user WHERE name = ?2",
            params![&token_hash[..], user, csrf, now],
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
        self.conn.execute(
            "UPDATE staff_session SET last_seen_at = ?2 WHERE id = ?1 AND last_seen_at <= ?3",
            params![id, now, now - STAFF_SESSION_TOUCH_SECS],
        )?;
        Ok(Some(StaffSession { user, csrf }))
    }

    fn delete_staff_session(&mut self, token_hash: &[u8; 32]) -> StoreResult<bool> {
        let n = self.conn.execute(
            "DELETE FROM staff_session WHERE token_hash = ?1",
            [&token_hash[..]],
        )?;
        Ok(n == 1)
    }

    fn staff_audit(&mut self, at: i64, who: &str, what: &str, outcome: &str) -> StoreResult<()> {
        self.conn.execute(
            "INSERT INTO staff_audit (at, who, what, outcome) VALUES (?1, ?2, ?3, ?4)",
            params![at, who, what, outcome],
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
}

impl SqliteStore {
    /// The id, account name and CSRF token of the session if it is not idle-expired at `now`.
    fn live_staff_session(
        &self,
        token_hash: &[u8; 32],
        now: i64,
    ) -> StoreResult<Option<(i64, String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT s.id, u.name, s.csrf FROM staff_session s
                 JOIN staff_user u ON u.id = s.user_id
                 WHERE s.token_hash = ?1 AND s.last_seen_at >= ?2 AND s.created_at > ?3",
                params![
                    &token_hash[..],
                    now - STAFF_SESSION_IDLE_SECS,
                    now - STAFF_SESSION_MAX_SECS
                ],
                |r| Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once() {
        let s = SqliteStore::open_in_memory().unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
    }

    /// A database from before migration 7 with a withheld-caller placeholder as a patient's
    /// phone: the upgrade clears it and keeps real numbers; both backends list every
    /// placeholder.
    #[test]
    fn migration_7_clears_withheld_placeholder_phones() {
        let dir = std::env::temp_dir().join(format!("ignis-migr7-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ignis.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                .unwrap();
            for (i, sql) in MIGRATIONS[..6].iter().enumerate() {
                conn.execute_batch(sql).unwrap();
                conn.execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    [i as i64 + 1],
                )
                .unwrap();
            }
            for (family, phone) in [("Anonym", "+266696687"), ("Echt", "+4915112345678")] {
                conn.execute(
                    "INSERT INTO patient (family, given, family_norm, given_norm, birth_date,
                       phone_e164, created_via, created_at)
                     VALUES (?1, 'X', ?1, 'x', '1970-01-01', ?2, 'phone', 0)",
                    [family, phone],
                )
                .unwrap();
            }
        }
        let s = SqliteStore::open(&path).unwrap();
        let phone = |family: &str| -> Option<String> {
            s.conn
                .query_row(
                    "SELECT phone_e164 FROM patient WHERE family = ?1",
                    [family],
                    |r| r.get(0),
                )
                .unwrap()
        };
        assert_eq!(phone("Anonym"), None);
        assert_eq!(phone("Echt").as_deref(), Some("+4915112345678"));
        for n in crate::twilio::webhook::WITHHELD_NUMBERS {
            assert!(MIGRATIONS[6].contains(&format!("'{n}'")), "{n}");
            let pg = crate::practice::store::postgres::schema::PG_MIGRATIONS[2];
            assert!(pg.contains(&format!("'{n}'")), "{n}");
        }
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
