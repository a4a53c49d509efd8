//! The practice (issue 7): six agent tools for the Demo Praxis, their store and their security.
//!
//! # What the LLM can reach
//! ElevenLabs calls six server tools under `/api` ([`tools`]): `identify_patient`, `find_slots`,
//! `book_appointment` (new patients and atomic reschedule), `cancel_appointment`,
//! `create_request` and `report_emergency`. Each request must carry
//! - the agent secret, `Authorization: Bearer <TOOLS_TOKEN>` (compared in constant time on
//!   SHA-256 digests), and
//! - the per-call token, `X-Ignis-Call: {{secret__ignis_call}}`, which must belong to a call that is
//!   in progress or ended less than [`calls::CALL_GRACE_SECS`] ago.
//!
//! # Invariants
//! - **Token hashing.** The bridge mints the token ([`calls::CallToken`]) and hands it to
//!   ElevenLabs as a `secret__` dynamic variable; the store keeps only its SHA-256. A leaked
//!   database does not let anyone act on a call.
//! - **Opaque refs.** The LLM only sees per-call refs (`P1`, `S1`, `A1`) kept in the call's
//!   [`calls::CallState`]. A ref from another call, a slot never offered, or an appointment of a
//!   person not identified in this call does not resolve, so it cannot be used.
//! - **Identification** (docs/practice-tools.md §6.3). Name + birth date identify; the caller number must equal the
//!   stored one before appointments are read back, cancelled or moved (below that a hit answers the
//!   ref alone); failures are budgeted per call, per number, for all withheld numbers together and
//!   per hour over all callers, and identify calls per call are capped.
//! - **No double booking.** Booking and rescheduling are one transaction (SQLite: `BEGIN
//!   IMMEDIATE`; PostgreSQL: READ COMMITTED) with a conditional slot claim (`… WHERE status =
//!   'free'`) and a partial unique index on booked appointments per slot as a backstop;
//!   identical retries return the same appointment ([`store`] has the details).
//! - **Nothing patient-related in logs** at info level: tool name and outcome code only.
//! - **Time is an input**: every function takes `now`; nothing here reads the clock.
//!
//! # Threading
//! One thread (`ignis-store`, [`store::StoreHandle`]) owns the SQLite connection; on PostgreSQL
//! [`store::PG_STORE_WORKERS`] threads (`ignis-store-<i>`) share one job queue, each with its own
//! pooled connection (docs/replicas.md §3). [`Practice`] routes, authenticates and parses on the
//! caller's thread (cheap, no I/O), then queues the rest as a job on the store, which calls the
//! supplied `reply` callback with the [`ToolReply`].
//! The async driver bridges it with a tokio oneshot channel: the callback sends the reply into
//! the oneshot's sender, and the connection task awaits the receiver (status + JSON body).
//!
//! Nothing here reads files or the clock: the driver reads `practice.toml` (its path is
//! [`PracticeSettings::config_path`]), supplies 16 random bytes per call from the operating
//! system, and passes `now` (a [`jiff::Timestamp`]) into every call. The one part that does I/O
//! is the store, which owns the SQLite file and its writer thread.
//!
//! # Wiring (for the front end and the bridge)
//! - Start-up: `let settings = PracticeSettings::from_lookup(|k| std::env::var(k).ok())?;`
//!   then the configuration: with `settings.config_path` set, read that file and call
//!   [`PracticeConfig::from_toml_str`] (errors name the line; [`ConfigError::unreadable`] words a
//!   read failure the same way), otherwise [`PracticeConfig::demo`]. Then
//!   `let (practice, _thread) = Practice::open(&settings, config, now)?;` (opens and migrates the
//!   database, seeds the demo patients and one demo appointment into a fresh demo database), or
//!   with `DATABASE_URL` [`Practice::open_postgres`] with a [`crate::pg::Database`] (built on
//!   the runtime first; the driver's `open_practice` picks). `Practice` is `Clone + Send + Sync`.
//! - HTTP: forward requests whose path satisfies [`tools::is_tool_path`] to
//!   [`Practice::handle_tool`] and [`admin::is_admin_path`] to [`Practice::handle_admin`], as a
//!   [`tools::ToolRequest`] (method, path without query, raw query, `Authorization` and
//!   `X-Ignis-Call` header values, body). Answer with the [`tools::ToolReply`]'s status and its
//!   JSON body (`Content-Type: application/json`). Bodies over [`tools::MAX_BODY_BYTES`] are
//!   refused with 413 anyway, so the front end may cap reads there.
//! - Bridge: at call start [`Practice::start_call`] (given 16 bytes from the OS random source)
//!   answers the eleven dynamic variables (token included) for `conversation_initiation_client_data`; at call end
//!   [`Practice::end_call`]. A stream that took a call over from another replica uses
//!   [`Practice::adopt_call`] instead (the other replica's token stops working). The staff line for `transfer_to_staff` is
//!   `practice.config().staff_transfer_number`.
//! - Every [`retention::RETENTION_INTERVAL`]: [`Practice::run_retention`].
//! - `ignis demo`: [`demo::DEMO_BOOKING_SCRIPT`] is a call (from [`demo::DEMO_CALLER_NUMBER`]) the
//!   local agent can replay through the tools: identify, find, book, reschedule, cancel, request,
//!   emergency.
//! - Fuzzing: `fuzz/fuzz_targets/practice_tool_request.rs` needs a `[[bin]]` entry in
//!   `fuzz/Cargo.toml`.
//!
//! Environment: `TOOLS_TOKEN` (required, ≥ 16 characters), `ADMIN_TOKEN` (optional, worth 32
//! random bytes by [`crate::secret::token_strength`]; the admin API answers 403 `admin_disabled`
//! without it), `IGNIS_DB` (default `./ignis.db`), `DATABASE_URL` (PostgreSQL instead of the
//! SQLite file),
//! `PRACTICE_CONFIG` (default: the shipped Demo Praxis `practice.toml`), `IGNIS_DEMO_PATIENTS`
//! (`1`/`0`; default on with the shipped config, off with an own config).

pub mod admin;
pub mod calendar;
pub mod calls;
pub mod closures;
pub mod config;
pub mod demo;
pub mod holidays;
pub mod premium;
pub mod retention;
pub mod staff;
pub mod store;
pub mod text;
pub mod tools;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde_json::{Map, Value};

use calls::{CallInfo, CallToken, TOKEN_BYTES};
use config::{ConfigError, PracticeConfig};
use store::pending::Registrations;
use store::{
    PG_STORE_WORKERS, PgStore, RetentionReport, SqliteStore, Store, StoreError, StoreHandle,
    StoreThread, SubmitError,
};
use tools::{Secrets, ToolError, ToolReply, ToolRequest};

/// Shortest accepted `TOOLS_TOKEN` / `ADMIN_TOKEN`.
pub const MIN_SECRET_LEN: usize = 16;

/// Start-up settings, usually from the environment.
#[derive(Clone)]
pub struct PracticeSettings {
    /// SQLite file (`IGNIS_DB`).
    pub db_path: PathBuf,
    /// `practice.toml` path (`PRACTICE_CONFIG`); None = the shipped Demo Praxis.
    pub config_path: Option<PathBuf>,
    /// Agent secret (`TOOLS_TOKEN`).
    pub tools_token: String,
    /// Staff secret (`ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    /// Seed demo patients into an empty database (`IGNIS_DEMO_PATIENTS`).
    pub demo_patients: bool,
    /// Refused call-back prefixes (`PREMIUM_RATE_PREFIXES`); None = the defaults.
    pub premium_rate_prefixes: Option<Vec<String>>,
    /// Hourly budget of failed identifications (`IDENTIFICATION_FAILURES_PER_HOUR`); None = the
    /// default.
    pub identification_failures_per_hour: Option<u32>,
}

impl std::fmt::Debug for PracticeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PracticeSettings")
            .field("db_path", &self.db_path)
            .field("config_path", &self.config_path)
            .field("demo_patients", &self.demo_patients)
            .finish_non_exhaustive()
    }
}

/// A start-up failure.
#[derive(Debug)]
pub enum PracticeError {
    /// `practice.toml` is invalid.
    Config(ConfigError),
    /// The database could not be opened or migrated.
    Store(StoreError),
    /// A secret is missing or shorter than [`MIN_SECRET_LEN`].
    Secret(&'static str),
    /// A secret that must be strong (`ADMIN_TOKEN`) is not worth 32 random bytes.
    WeakSecret(&'static str, crate::secret::Weakness),
    /// The store thread could not be started.
    Io(std::io::Error),
    /// A variable's value is malformed (`PREMIUM_RATE_PREFIXES`,
    /// `IDENTIFICATION_FAILURES_PER_HOUR`).
    Invalid(&'static str),
}

impl std::fmt::Display for PracticeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PracticeError::Config(e) => e.fmt(f),
            PracticeError::Store(e) => e.fmt(f),
            PracticeError::Secret(name) => {
                write!(
                    f,
                    "{name} must be set to at least {MIN_SECRET_LEN} characters"
                )
            }
            PracticeError::WeakSecret(name, why) => write!(f, "{name} {why}"),
            PracticeError::Io(e) => write!(f, "cannot start the store thread: {e}"),
            PracticeError::Invalid(name) => write!(f, "{name} is malformed"),
        }
    }
}

impl std::error::Error for PracticeError {}

impl PracticeSettings {
    /// `config` with the variables that override `practice.toml`.
    fn apply(&self, mut config: PracticeConfig) -> PracticeConfig {
        if let Some(p) = &self.premium_rate_prefixes {
            config.premium_rate_prefixes = p.clone();
        }
        if let Some(n) = self.identification_failures_per_hour {
            config.identification_failures_per_hour = n;
        }
        config
    }

    /// The settings from the parsed configuration ([`crate::config::Config::practice`]);
    /// `tools_token` is its `tools_token`, or a random secret when that is unset.
    pub fn new(vars: &crate::config::PracticeVars, tools_token: String) -> Self {
        PracticeSettings {
            db_path: vars.db_path.clone(),
            config_path: vars.config_path.clone(),
            tools_token,
            admin_token: vars.admin_token.as_ref().map(|t| t.expose().to_owned()),
            demo_patients: vars.demo_patients,
            premium_rate_prefixes: vars.premium_rate_prefixes.clone(),
            identification_failures_per_hour: vars.identification_failures_per_hour,
        }
    }

    /// Reads the settings through `get` (e.g. `|k| std::env::var(k).ok()`), with the same parser
    /// as [`crate::config::Config::from_vars`]; `TOOLS_TOKEN` is required here.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, PracticeError> {
        let vars = crate::config::PracticeVars::parse(get)?;
        let tools_token = vars
            .tools_token
            .as_ref()
            .ok_or(PracticeError::Secret("TOOLS_TOKEN"))?;
        Ok(Self::new(&vars, tools_token.expose().to_owned()))
    }
}

/// The practice service: configuration, secrets and the store thread. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Practice {
    /// `practice.toml` with the staff page's closures ([`closures::Calendar`]).
    calendar: Arc<closures::Calendar>,
    secrets: Arc<Secrets>,
    store: StoreHandle,
    staff: Arc<staff::StaffState>,
    /// Registrations queued but not committed (several PostgreSQL workers; [`store::pending`]).
    registrations: Arc<Registrations>,
    /// Call ends the database could not take (an outage at hang-up), written again with the
    /// next end.
    unwritten_ends: Arc<Mutex<VecDeque<(String, store::CallEnd, i64)>>>,
}

/// Call ends kept for a second try at most; beyond it the oldest is given up (its row then
/// ends by itself: its token dies with `MAX_CALL_SECS`, the staff page shows it unfinished).
const MAX_UNWRITTEN_ENDS: usize = 1024;

impl Practice {
    /// Opens (creating and migrating) the database and starts the store thread. `config` is the
    /// validated `practice.toml` the driver read, or [`PracticeConfig::demo`].
    pub fn open(
        settings: &PracticeSettings,
        config: PracticeConfig,
        now: Timestamp,
    ) -> Result<(Practice, StoreThread), PracticeError> {
        let config = settings.apply(config);
        let mut store = SqliteStore::open(&settings.db_path).map_err(PracticeError::Store)?;
        if settings.demo_patients {
            demo::seed(&mut store, &config, now).map_err(PracticeError::Store)?;
        }
        let secrets = Secrets::new(&settings.tools_token, settings.admin_token.as_deref());
        let (practice, thread) =
            Practice::with_store(config, secrets, Box::new(store)).map_err(PracticeError::Io)?;
        practice.load_closures(now);
        Ok((practice, thread))
    }

    /// Like [`Practice::open`] on PostgreSQL (`DATABASE_URL`, docs/replicas.md §3): migrates
    /// the `store` schema (safe when replicas start together), seeds an empty database like
    /// SQLite, and starts [`PG_STORE_WORKERS`] store workers on `db`'s pool. Call it from a
    /// plain thread, not from async code (the store blocks on `db`'s runtime).
    pub fn open_postgres(
        settings: &PracticeSettings,
        config: PracticeConfig,
        db: &crate::pg::Database,
        now: Timestamp,
    ) -> Result<(Practice, StoreThread), PracticeError> {
        let config = settings.apply(config);
        let mut store = PgStore::open(db).map_err(PracticeError::Store)?;
        if settings.demo_patients {
            demo::seed(&mut store, &config, now).map_err(PracticeError::Store)?;
        }
        let mut stores: Vec<Box<dyn Store>> = vec![Box::new(store)];
        stores.extend((1..PG_STORE_WORKERS).map(|_| Box::new(PgStore::new(db)) as Box<dyn Store>));
        let secrets = Secrets::new(&settings.tools_token, settings.admin_token.as_deref());
        let (practice, thread) =
            Practice::with_stores(config, secrets, stores).map_err(PracticeError::Io)?;
        practice.load_closures(now);
        Ok((practice, thread))
    }

    /// Starts the store thread over any [`Store`].
    pub fn with_store(
        config: PracticeConfig,
        secrets: Secrets,
        store: Box<dyn Store>,
    ) -> std::io::Result<(Practice, StoreThread)> {
        Practice::with_stores(config, secrets, vec![store])
    }

    /// Starts one store worker per store, all on one queue ([`StoreHandle::spawn_workers`]):
    /// only for stores that share their database safely (PostgreSQL).
    pub fn with_stores(
        config: PracticeConfig,
        secrets: Secrets,
        stores: Vec<Box<dyn Store>>,
    ) -> std::io::Result<(Practice, StoreThread)> {
        let (handle, thread) = StoreHandle::spawn_workers(stores)?;
        Ok((
            Practice {
                calendar: Arc::new(closures::Calendar::new(config)),
                secrets: Arc::new(secrets),
                store: handle,
                staff: Arc::default(),
                registrations: Arc::default(),
                unwritten_ends: Arc::default(),
            },
            thread,
        ))
    }

    /// The practice configuration, with the staff page's closures as of their last reload.
    pub fn config(&self) -> Arc<PracticeConfig> {
        self.calendar.current()
    }

    /// Loads the staff page's closures before the first call; a store that cannot answer now
    /// leaves them to the driver's reloads.
    fn load_closures(&self, now: Timestamp) {
        let calendar = Arc::clone(&self.calendar);
        match self
            .store
            .call_blocking(move |store| calendar.reload(store, now))
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "staff closures not loaded yet"),
            Err(e) => tracing::warn!(error = ?e, "staff closures not loaded yet"),
        }
    }

    /// Reloads the staff page's closures in the background (the driver calls it every
    /// [`closures::CLOSURES_RELOAD_INTERVAL`], for changes made on another replica).
    pub fn reload_closures(&self, now: Timestamp) {
        let calendar = Arc::clone(&self.calendar);
        let queued = self.store.submit(move |store| {
            if let Err(e) = calendar.reload(store, now) {
                tracing::warn!(error = %e, "staff closures not reloaded");
            }
        });
        if let Err(e) = queued {
            tracing::warn!(error = ?e, "staff closures not reloaded: store busy");
        }
    }

    /// The store thread handle.
    pub fn store(&self) -> &StoreHandle {
        &self.store
    }

    /// Handles a tool request; `reply` is called exactly once, on this thread for requests refused
    /// before the store (401/403/404/405/413/503) and on the store thread otherwise (a 422 waits
    /// for the live-call check, so a dead call gets its 403 whatever the body says).
    pub fn handle_tool(
        &self,
        req: ToolRequest<'_>,
        now: Timestamp,
        reply: impl FnOnce(ToolReply) + Send + 'static,
    ) {
        let config = self.config();
        match tools::prepare(&req, &config, &self.secrets) {
            Err(e) => reply(e.reply()),
            Ok(call) => {
                let registrations = Arc::clone(&self.registrations);
                self.submit(reply, move |store| {
                    registrations.wait_for(&call.call_token_hash);
                    tools::execute(store, &config, call, now)
                });
            }
        }
    }

    /// Handles an admin request; same contract as [`Practice::handle_tool`].
    pub fn handle_admin(
        &self,
        req: ToolRequest<'_>,
        now: Timestamp,
        reply: impl FnOnce(ToolReply) + Send + 'static,
    ) {
        match admin::prepare(&req, &self.secrets) {
            Err(e) => reply(e.reply()),
            Ok(call) => {
                let config = self.config();
                // prepare succeeded, so there is an admin token.
                let who = self.secrets.admin_id().unwrap_or_default();
                self.submit(reply, move |store| {
                    admin::execute(store, &config, call, &who, now)
                });
            }
        }
    }

    fn submit(
        &self,
        reply: impl FnOnce(ToolReply) + Send + 'static,
        job: impl FnOnce(&mut dyn Store) -> ToolReply + Send + 'static,
    ) {
        self.store.submit_with_reply(reply, job, |e| {
            match e {
                SubmitError::Busy => ToolError::Busy,
                SubmitError::Closed => ToolError::Unavailable,
            }
            .reply()
        });
    }

    /// Registers a call: mints its token from `entropy` (16 bytes the driver reads from the
    /// operating system's random source), stores only the token's hash and returns the eleven
    /// dynamic variables for ElevenLabs at once.
    ///
    /// The registration is queued on the store ahead of every tool request the call's agent can
    /// make (it learns the token from these variables), so nobody needs to wait for the commit:
    /// with `synchronous=FULL` that is an fsync, which took over a second on a busy disk and held
    /// up agent connections in the issue-6 churn runs. With several PostgreSQL workers a tool
    /// request of this token waits for the registration still in flight ([`store::pending`]). `done` gets the
    /// commit's result on the store thread (if it fails, the token is unknown and the call's
    /// tools are refused). An `Err` here means the queue refused the job; the call then gets
    /// no token.
    pub fn start_call(
        &self,
        info: CallInfo<'_>,
        entropy: [u8; TOKEN_BYTES],
        now: Timestamp,
        done: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) -> Result<Map<String, Value>, StoreError> {
        self.register_call(info, entropy, now, Registration::Start, done)
    }

    /// Registers a stream that took a call over from another replica (docs/replicas.md §4.2):
    /// like [`Practice::start_call`], but the call's existing row keeps its state and gets the
    /// new token's hash, so the previous agent's token stops working; without a row (the
    /// answering replica's registration never committed) the row is created. `done` gets
    /// [`StoreError::CallExists`] when the call has already ended (its row is left alone).
    pub fn adopt_call(
        &self,
        info: CallInfo<'_>,
        entropy: [u8; TOKEN_BYTES],
        now: Timestamp,
        done: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) -> Result<Map<String, Value>, StoreError> {
        self.register_call(info, entropy, now, Registration::Adopt, done)
    }

    /// The token and variables of [`Practice::start_call`] / [`Practice::adopt_call`], and
    /// their registration queued as a call record (never dropped for a busy queue).
    fn register_call(
        &self,
        info: CallInfo<'_>,
        entropy: [u8; TOKEN_BYTES],
        now: Timestamp,
        how: Registration,
        done: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) -> Result<Map<String, Value>, StoreError> {
        let token = CallToken::from_entropy(entropy);
        let vars = calls::dynamic_variables(&token, &info, &self.config(), now);
        let (sid, caller, called) = (
            info.call_sid.to_string(),
            info.caller_number.to_string(),
            info.called_number.to_string(),
        );
        let hash = token.hash();
        let pending = self.registrations.begin(hash);
        self.store.submit_record(move |store| {
            let at = now.as_second();
            let result = match how {
                Registration::Start => store.start_call(&sid, &hash, &caller, &called, at),
                Registration::Adopt => adopt(store, &sid, &hash, &caller, &called, at),
            };
            drop(pending);
            done(result);
        })?;
        Ok(vars)
    }

    /// Marks a call ended with how it ended and its time to first audio, for the staff page
    /// (its token stays valid for the grace period). Fire and forget.
    ///
    /// An end the database cannot take now (PostgreSQL unreachable) is kept and written again
    /// before the next one, at the time it happened: otherwise the staff page would show the
    /// call running for an hour and its token would outlive the call's grace period.
    pub fn end_call(&self, call_sid: &str, end: store::CallEnd, now: Timestamp) {
        let sid = call_sid.to_string();
        let unwritten = Arc::clone(&self.unwritten_ends);
        let queued = self.store.submit_record(move |store| {
            let mut ends = {
                let mut q = unwritten.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::take(&mut *q)
            };
            ends.push_back((sid, end, now.as_second()));
            while let Some((sid, end, at)) = ends.pop_front() {
                match store.finish_call(&sid, &end, at) {
                    Ok(_) => {}
                    // The rest wait for the next end too (one timeout, not one each).
                    Err(e) if e.is_unavailable() => {
                        ends.push_front((sid, end, at));
                        break;
                    }
                    Err(e) => tracing::error!(error = %e, "end_call failed"),
                }
            }
            if !ends.is_empty() {
                tracing::warn!(
                    calls = ends.len(),
                    "call ends not written yet; tried again with the next end"
                );
                let mut q = unwritten.lock().unwrap_or_else(|p| p.into_inner());
                for e in ends {
                    if q.len() >= MAX_UNWRITTEN_ENDS {
                        q.pop_front();
                    }
                    q.push_back(e);
                }
            }
        });
        if queued.is_err() {
            tracing::error!("end_call not queued: the store queue is full or closed");
        }
    }

    /// Runs the retention job with the default policy.
    pub fn run_retention(
        &self,
        now: Timestamp,
        reply: impl FnOnce(Result<RetentionReport, StoreError>) + Send + 'static,
    ) {
        let slot = Arc::new(Mutex::new(Some(reply)));
        let in_job = Arc::clone(&slot);
        let result = self.store.submit(move |store| {
            let r = retention::run_retention(store, now);
            if let Some(f) = in_job.lock().ok().and_then(|mut s| s.take()) {
                f(r);
            }
        });
        if result.is_err()
            && let Some(f) = slot.lock().ok().and_then(|mut s| s.take())
        {
            f(Err(StoreError::Closed));
        }
    }
}

/// How a call's token is registered.
#[derive(Clone, Copy)]
enum Registration {
    /// The replica that answered the call.
    Start,
    /// A stream that took the call over from another replica.
    Adopt,
}

/// Replaces the token of `sid`'s row, or creates the row; a row inserted concurrently (another
/// replica's late registration) is taken over by a second replace.
fn adopt(
    store: &mut dyn Store,
    sid: &str,
    hash: &[u8; 32],
    caller: &str,
    called: &str,
    now: i64,
) -> Result<(), StoreError> {
    if store.replace_call_token(sid, hash, now)? {
        return Ok(());
    }
    match store.start_call(sid, hash, caller, called, now) {
        Err(StoreError::CallExists) if store.replace_call_token(sid, hash, now)? => Ok(()),
        other => other,
    }
}
