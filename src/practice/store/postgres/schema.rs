//! The PostgreSQL schema: the SQLite schema of [`crate::practice::store::sqlite::MIGRATIONS`]
//! (as of its version 5) translated, as the `store` component's steps for
//! [`crate::pg::Database::migrate`] (docs/replicas.md §2).
//!
//! Translation: `INTEGER PRIMARY KEY` → `BIGINT GENERATED ALWAYS AS IDENTITY`, `BLOB` → `BYTEA`,
//! times stay UTC seconds (`BIGINT`), `known` is a `BOOLEAN`, the `CHECK`s and the partial unique
//! index `appointment_one_booking_per_slot` are the same. Steps are additive within a release
//! (a rolling upgrade runs the previous binary against the new schema).

/// The `ignis_migrations` component of the practice store.
pub const COMPONENT: &str = "store";

/// Migration steps; index + 1 is the version.
pub const PG_MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE patient (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    family TEXT NOT NULL,
    given TEXT NOT NULL,
    family_norm TEXT NOT NULL,
    given_norm TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    gender TEXT NOT NULL DEFAULT 'unknown' CHECK (gender IN ('female','male','other','unknown')),
    phone_e164 TEXT,
    insurance TEXT NOT NULL DEFAULT 'gkv' CHECK (insurance IN ('gkv','pkv','self')),
    card_read_quarter TEXT,
    known BOOLEAN NOT NULL DEFAULT TRUE,
    created_via TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX patient_dob_family ON patient (birth_date, family_norm);

CREATE TABLE slot (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    practitioner_id TEXT NOT NULL,
    start_utc BIGINT NOT NULL,
    end_utc BIGINT NOT NULL,
    visit_types TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'free'
        CHECK (status IN ('free','busy','busy-unavailable','busy-tentative','entered-in-error')),
    version BIGINT NOT NULL DEFAULT 0,
    UNIQUE (practitioner_id, start_utc)
);
CREATE INDEX slot_start ON slot (start_utc);

CREATE TABLE appointment (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slot_id BIGINT NOT NULL REFERENCES slot (id),
    patient_id BIGINT NOT NULL REFERENCES patient (id),
    practitioner_id TEXT NOT NULL,
    start_utc BIGINT NOT NULL,
    end_utc BIGINT NOT NULL,
    visit_type TEXT NOT NULL,
    reason_short TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('booked','cancelled','fulfilled','noshow','entered-in-error')),
    created_at BIGINT NOT NULL,
    call_sid TEXT,
    idempotency_key TEXT UNIQUE,
    cancelled_at BIGINT,
    cancel_reason TEXT,
    cancel_note TEXT,
    replaced_by BIGINT
);
CREATE UNIQUE INDEX appointment_one_booking_per_slot ON appointment (slot_id) WHERE status = 'booked';
CREATE INDEX appointment_patient ON appointment (patient_id, start_utc);
CREATE INDEX appointment_start ON appointment (start_utc);
CREATE INDEX appointment_call ON appointment (call_sid);
CREATE INDEX appointment_replaced_by ON appointment (replaced_by);

CREATE TABLE request (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ref_code TEXT NOT NULL UNIQUE,
    category TEXT NOT NULL,
    patient_id BIGINT REFERENCES patient (id) ON DELETE SET NULL,
    caller_json TEXT,
    details_json TEXT NOT NULL,
    urgency TEXT NOT NULL CHECK (urgency IN ('routine','urgent')),
    callback_number TEXT,
    callback_window TEXT,
    note TEXT,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open','done')),
    created_at BIGINT NOT NULL,
    done_at BIGINT,
    call_sid TEXT,
    assurance TEXT,
    caller_number TEXT,
    done_by TEXT
);
CREATE INDEX request_open ON request (status, urgency, created_at);
CREATE INDEX request_caller ON request (caller_number, created_at);
CREATE INDEX request_created ON request (created_at);

CREATE TABLE emergency_event (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    severity TEXT NOT NULL,
    keywords TEXT NOT NULL,
    patient_id BIGINT REFERENCES patient (id) ON DELETE SET NULL,
    callback_number TEXT,
    advice TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    call_sid TEXT,
    acknowledged_at BIGINT
);

CREATE TABLE call (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_sid TEXT NOT NULL UNIQUE,
    token_hash BYTEA NOT NULL UNIQUE,
    caller_number TEXT NOT NULL,
    called_number TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    state_json TEXT NOT NULL DEFAULT '{}',
    failed_identifications INTEGER NOT NULL DEFAULT 0,
    outcome TEXT CHECK (outcome IN ('completed','transferred','fallback','agent_failed')),
    first_audio_ms BIGINT
);
CREATE INDEX call_caller ON call (caller_number, started_at);
CREATE INDEX call_started ON call (started_at);

CREATE TABLE tool_audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    call_id BIGINT,
    tool TEXT NOT NULL,
    outcome TEXT NOT NULL,
    who TEXT
);
CREATE INDEX tool_audit_at ON tool_audit (at);

CREATE TABLE staff_user (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    phc TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE staff_session (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash BYTEA NOT NULL UNIQUE,
    user_id BIGINT NOT NULL REFERENCES staff_user (id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX staff_session_seen ON staff_session (last_seen_at);
CREATE INDEX staff_session_user ON staff_session (user_id);
CREATE TABLE staff_audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    who TEXT NOT NULL,
    what TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX staff_audit_at ON staff_audit (at);
"#,
    // 2: SQLite's 6, closures entered on the staff page and the fingerprints of requests and
    // emergencies.
    r#"
CREATE TABLE staff_closure (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    first_day TEXT NOT NULL,
    last_day TEXT NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('illness','vacation','training','other')),
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    removed_by TEXT,
    removed_at BIGINT,
    CHECK (last_day >= first_day)
);
CREATE INDEX staff_closure_last ON staff_closure (last_day);
ALTER TABLE request ADD COLUMN fingerprint TEXT;
ALTER TABLE emergency_event ADD COLUMN fingerprint TEXT;
CREATE INDEX request_filed ON request (call_sid, fingerprint) WHERE fingerprint IS NOT NULL;
CREATE INDEX emergency_filed ON emergency_event (call_sid, fingerprint)
    WHERE fingerprint IS NOT NULL;
"#,
    // 3: SQLite's 7, the staff login's account windows and trusted addresses, shared by every
    // replica, and withheld-caller placeholders cleared from phones.
    r#"
CREATE TABLE staff_login_window (
    key TEXT PRIMARY KEY,
    started BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    reported BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX staff_login_window_started ON staff_login_window (started);
CREATE TABLE staff_login_trust (
    user_id BIGINT NOT NULL REFERENCES staff_user (id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    at BIGINT NOT NULL,
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
