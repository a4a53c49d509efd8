//! Start-up: the environment (with `./.env`), the practice, the runtime, and `ignis serve`.
//!
//! The one place that reads the process environment and the `.env` file; the variables are then
//! parsed once by [`Config::from_vars`] and the resulting [`Config`] is shared by everything.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cli::ServeArgs;
use crate::config::{self, Config, ConfigError, PracticeVars};
use crate::pg::Database;
use crate::practice::config::{ConfigError as PracticeConfigError, PracticeConfig};
use crate::practice::store::StoreThread;
use crate::practice::{Practice, PracticeError, PracticeSettings};
use crate::routes::App;

/// Bytes of the random `TOOLS_TOKEN` used when none is set (no agent knows it: fail closed).
const RANDOM_TOOLS_TOKEN_BYTES: usize = 32;

/// Why a command could not start or failed.
#[derive(Debug)]
pub enum StartError {
    /// A variable (or `.env`) is missing or malformed.
    Config(ConfigError),
    /// The random `TOOLS_TOKEN` could not be drawn.
    NoRandomness(std::io::Error),
    /// `practice.toml` cannot be read (the error names the path).
    PracticeConfigUnreadable(PracticeConfigError),
    /// `practice.toml` is invalid: its path, and the error naming the line.
    PracticeConfig(PathBuf, PracticeConfigError),
    /// The practice's database could not be opened or its thread started.
    Practice(PracticeError),
    /// A command-line value is unusable (e.g. an unreadable `--wav`).
    Usage(String),
    /// The tokio runtime could not be built.
    Runtime(std::io::Error),
    /// The command ran and failed.
    Failed(String),
}

impl StartError {
    /// The process exit code: 2 for a configuration or usage error, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_)
            | StartError::NoRandomness(_)
            | StartError::PracticeConfigUnreadable(_)
            | StartError::PracticeConfig(..)
            | StartError::Practice(_)
            | StartError::Usage(_) => 2,
            StartError::Runtime(_) | StartError::Failed(_) => 1,
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "configuration error: {e}"),
            StartError::NoRandomness(e) => {
                write!(f, "practice configuration error: no OS randomness: {e}")
            }
            StartError::PracticeConfigUnreadable(e) => {
                write!(f, "practice configuration error: {e}")
            }
            StartError::PracticeConfig(path, e) => {
                write!(f, "practice configuration error: {}: {e}", path.display())
            }
            StartError::Practice(e) => write!(f, "practice configuration error: {e}"),
            StartError::Usage(e) | StartError::Failed(e) => f.write_str(e),
            StartError::Runtime(e) => write!(f, "cannot start runtime: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The variables: `./.env` under the process environment (which wins).
pub fn load_vars() -> Result<HashMap<String, String>, ConfigError> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let dotenv = match std::fs::read(".env") {
        Ok(bytes) if bytes.len() > config::MAX_DOTENV_BYTES => {
            return Err(ConfigError {
                variable: ".env".into(),
                reason: "file too large".into(),
            });
        }
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| ConfigError {
                variable: ".env".into(),
                reason: "not UTF-8".into(),
            })?;
            config::parse_dotenv(&text)?
        }
        Err(_) => Vec::new(),
    };
    Ok(config::merge(env, dotenv))
}

/// [`load_vars`] for the helper commands, which must work whatever is wrong with `.env`: the
/// process environment alone when the file cannot be used.
pub fn load_vars_lenient() -> HashMap<String, String> {
    load_vars().unwrap_or_else(|_| std::env::vars().collect())
}

/// The one tokio runtime of a command.
pub fn runtime() -> Result<tokio::runtime::Runtime, StartError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)
}

/// The pool for `DATABASE_URL` on `rt`, if it is set (docs/replicas.md). Connections open
/// lazily, so an unreachable server shows up at the first query.
pub fn database(
    vars: &PracticeVars,
    rt: &tokio::runtime::Runtime,
) -> Result<Option<Database>, StartError> {
    let Some(url) = &vars.database_url else {
        return Ok(None);
    };
    Database::new(url, crate::pg::MAX_POOL_SIZE, rt.handle().clone())
        .map(Some)
        .map_err(|e| StartError::Failed(e.to_string()))
}

/// The practice read from `path` (`PRACTICE_CONFIG`), or the built-in Demo Praxis without one.
pub fn practice_config(path: Option<&std::path::Path>) -> Result<PracticeConfig, StartError> {
    let Some(path) = path else {
        return Ok(PracticeConfig::demo());
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        StartError::PracticeConfigUnreadable(PracticeConfigError::unreadable(path, &e))
    })?;
    PracticeConfig::from_toml_str(&text)
        .map_err(|e| StartError::PracticeConfig(path.to_path_buf(), e))
}

/// Opens the practice store and tools: on PostgreSQL when `db` is given (`DATABASE_URL`, see
/// [`database`]), else the SQLite file. Without `TOOLS_TOKEN` a random secret is used, so the
/// tool endpoints refuse every request (fail closed) until the operator sets one. Call it from
/// a plain thread, not from async code.
pub fn open_practice(
    vars: &PracticeVars,
    db: Option<&Database>,
) -> Result<(Practice, StoreThread), StartError> {
    let tools_token = match &vars.tools_token {
        Some(t) => t.expose().to_owned(),
        None => {
            tracing::warn!(
                "TOOLS_TOKEN is not set: the practice tools refuse every request until it is"
            );
            super::random_hex(RANDOM_TOOLS_TOKEN_BYTES).map_err(StartError::NoRandomness)?
        }
    };
    let settings = PracticeSettings::new(vars, tools_token);
    if settings.config_path.is_none() {
        tracing::warn!(
            demo_patients = settings.demo_patients,
            "PRACTICE_CONFIG is not set: answering as the built-in Demo Praxis; copy \
             practice.toml, describe your practice in it and set PRACTICE_CONFIG (README, step 2)"
        );
    }
    let practice_config = practice_config(settings.config_path.as_deref())?;
    let now = super::practice_now();
    let today = crate::practice::calendar::local(&practice_config, now).date;
    if practice_config.holidays_run_out(today) {
        tracing::warn!(
            last_listed = ?practice_config.last_holiday(),
            horizon_days = practice_config.booking_horizon_days,
            "practice.toml names no state and its public_holidays end before the booking \
             horizon: slots on later holidays would be offered; set state (the Land's code, \
             README step 2) so they are computed, or extend the list"
        );
    }
    let (practice, thread) = match db {
        Some(db) => Practice::open_postgres(&settings, practice_config, db, now),
        None => Practice::open(&settings, practice_config, now),
    }
    .map_err(StartError::Practice)?;
    match db {
        Some(db) => tracing::info!(
            practice = %practice.config().name,
            db = %db.url().redacted(),
            "practice tools ready on PostgreSQL"
        ),
        None => tracing::info!(
            practice = %practice.config().name,
            db = %settings.db_path.display(),
            "practice tools ready"
        ),
    }
    Ok((practice, thread))
}

/// `ignis serve`: parse the configuration once, open the practice, serve until SIGINT/SIGTERM.
pub fn serve(args: &ServeArgs) -> Result<(), StartError> {
    let vars = load_vars().map_err(StartError::Config)?;
    let config =
        Config::from_vars(&vars, args.insecure_skip_signature).map_err(StartError::Config)?;
    crate::telemetry::init_with_filter(config.log_format, config.log_filter.as_deref());
    // The runtime first: a PostgreSQL pool's connections live on it (docs/replicas.md §5).
    let rt = runtime()?;
    let db = database(&config.practice, &rt)?;
    let (practice, store_thread) = open_practice(&config.practice, db.as_ref())?;
    if config.insecure_skip_signature {
        tracing::warn!(
            "INSECURE: --insecure-skip-signature is set; Twilio signatures are NOT checked. \
             Never run a public deployment like this."
        );
    }
    let fleet = match db {
        Some(db) => {
            let replica = super::fleet::replica_id(config.replica_id.as_deref());
            let fleet = rt
                .block_on(super::fleet::open(db, replica))
                .map_err(|e| StartError::Failed(format!("cannot join the fleet: {e}")))?;
            Some(fleet)
        }
        None => None,
    };
    let served = rt.block_on(listen_and_serve(config, practice, fleet));
    // The store's queue may still hold the last calls' ends (a burst of hang-ups at the end of
    // a drain): let the workers finish it while the runtime that hosts the PostgreSQL
    // connections is still alive, bounded in case a handle is still held somewhere.
    finish_store(store_thread);
    served.map_err(|e| StartError::Failed(e.to_string()))
}

/// How long `serve` waits, after it stopped serving, for the store to finish its queued jobs.
const STORE_FINISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn finish_store(thread: StoreThread) {
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
    let joiner = std::thread::Builder::new()
        .name("ignis-store-join".into())
        .spawn(move || {
            if thread.join().is_err() {
                tracing::error!("a store worker panicked");
            }
            let _ = done_tx.send(());
        });
    if joiner.is_err() || done_rx.recv_timeout(STORE_FINISH_TIMEOUT).is_err() {
        tracing::warn!("the store did not finish its queued jobs in time");
    }
}

async fn listen_and_serve(
    config: Config,
    practice: Practice,
    fleet: Option<Arc<crate::fleet::Fleet>>,
) -> std::io::Result<()> {
    let addr = SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        public_url = %config.public_url.http_url(""),
        "ignis listening"
    );
    let app = App::with_practice(config, practice);
    let app = Arc::new(match fleet {
        Some(f) => app.with_fleet(f),
        None => app,
    });
    super::serve(listener, app, shutdown_signal()).await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (docker stop).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}
