//! PostgreSQL plumbing shared by the practice store and the call coordination (issue 15):
//! `DATABASE_URL`, the connection pool, and the embedded migrations.
//!
//! ignis talks to PostgreSQL with `tokio-postgres` through a `deadpool-postgres` pool. The
//! connections' I/O tasks run on whichever tokio runtime first opened them; the synchronous
//! store workers reach the pool through [`Database::block_on`] on the runtime handle given at
//! start (docs/replicas.md).
//!
//! Migrations are numbered per component (`store`, `fleet`) in the table `ignis_migrations`
//! and run inside one transaction holding a transaction-scoped advisory lock, so replicas that
//! start at the same moment apply each step exactly once: the second waits for the first and
//! then finds nothing left to do.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// Advisory lock key held while migrating (any constant unique to ignis; "ignis-mi").
pub const MIGRATION_LOCK_KEY: i64 = 0x6967_6e69_732d_6d69;
/// Connections a replica's pool opens at most (store workers + coordination + headroom).
pub const MAX_POOL_SIZE: usize = 16;
/// How long a query may wait for a pooled connection before it fails with
/// [`PgError::Unavailable`] (the tool then answers with a clear error instead of hanging).
pub const POOL_WAIT: Duration = Duration::from_secs(2);
/// Longest a new connection (TCP + startup) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest one statement may run on the server (`statement_timeout`): a database that goes
/// silent (a failover leaving the old address unanswered, a frozen host) costs a tool request
/// this much, then a clear "unavailable", never a hung store worker.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(8);
/// Longest a statement waits for a lock (`lock_timeout`; advisory locks included): a call's
/// lock held by a session that went silent must not block the call's tools on every replica.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive idle time, so a peer that vanished without a FIN is noticed in about a minute
/// rather than the kernel's two hours: [`KEEPALIVE_IDLE`] + [`KEEPALIVE_PROBES`] ×
/// [`KEEPALIVE_INTERVAL`], on both ends. Set all three: with the idle time alone the kernel's
/// own probe interval and count (75 s × 9) would make it twelve minutes, and a replica that lost
/// power would hold a call's lock (and so that call's tools on every replica) that long.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Time between keepalive probes once [`KEEPALIVE_IDLE`] has passed.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered keepalive probes after which the connection is dropped.
pub const KEEPALIVE_PROBES: u32 = 3;
/// Longest sent data may stay unacknowledged before the connection is dropped
/// (`tcp_user_timeout`, both ends): keepalives only probe an idle socket, and a peer that
/// vanished with data in flight would otherwise be retransmitted to for ~15 minutes.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a session may sit idle inside a transaction (`idle_in_transaction_session_timeout`).
/// ignis's transactions go statement to statement without waiting on anything else, so a
/// session idle in one belongs to a replica cut off or paused mid-transaction: the server ends
/// it, and the locks it held (the fleet's bind lock, a call's lock) go with it, instead of
/// waiting for the server's TCP keepalive (two hours by default).
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(5);

/// A failure talking to PostgreSQL.
#[derive(Debug)]
pub enum PgError {
    /// `DATABASE_URL` is not a usable PostgreSQL URL (the reason names what is wrong; never the
    /// password).
    BadUrl(&'static str),
    /// No connection could be had (the server is down or unreachable, or the pool is exhausted).
    Unavailable(String),
    /// The server answered a query with an error.
    Query(tokio_postgres::Error),
    /// Another running process heartbeats as this `REPLICA_ID` (two replicas given one id).
    ReplicaIdInUse(String),
    /// The schema in the database is newer than this binary knows (a downgrade).
    SchemaTooNew {
        /// The component.
        component: &'static str,
        /// The version found.
        found: i64,
        /// The newest version this binary has.
        known: i64,
    },
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::BadUrl(why) => write!(f, "DATABASE_URL: {why}"),
            PgError::Unavailable(why) => write!(f, "database unavailable: {why}"),
            PgError::Query(e) => write!(f, "database error: {e}"),
            PgError::ReplicaIdInUse(id) => write!(
                f,
                "REPLICA_ID {id} is in use by a running replica: give every replica its own"
            ),
            PgError::SchemaTooNew {
                component,
                found,
                known,
            } => write!(
                f,
                "the database's {component} schema is version {found}, newer than this \
                 binary's {known}: run the newer ignis"
            ),
        }
    }
}

impl std::error::Error for PgError {}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        // A closed connection is the server going away, not a bad query.
        if e.is_closed() {
            PgError::Unavailable(e.to_string())
        } else {
            PgError::Query(e)
        }
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PgError::Unavailable(e.to_string())
    }
}

/// A parsed `DATABASE_URL`. Its `Debug` and `Display` never show the password.
#[derive(Clone)]
pub struct DatabaseUrl {
    config: tokio_postgres::Config,
}

impl DatabaseUrl {
    /// Parses `postgres://user:password@host:port/dbname?…` (or `postgresql://`). TLS modes
    /// that require encryption are refused: this build connects without TLS, so the database
    /// must be on a private network or a Unix socket (docs/replicas.md).
    pub fn parse(text: &str) -> Result<DatabaseUrl, PgError> {
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(PgError::BadUrl(
                "must start with postgres:// or postgresql://",
            ));
        }
        let mut config = tokio_postgres::Config::from_str(text)
            .map_err(|_| PgError::BadUrl("not a valid PostgreSQL connection URL"))?;
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(PgError::BadUrl(
                "sslmode=require is not supported: this build connects without TLS (use a \
                 private network or a Unix socket)",
            ));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("ignis");
        }
        // Session settings for every connection; the operator's own `options` follow, so they
        // can change these (the server takes the last of a repeated setting) but never drop
        // them by setting something else. Server-side keepalives too: the server notices a
        // replica that vanished as quickly as the replica notices the server.
        let ours = format!(
            "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={} \
             -c tcp_keepalives_idle={} -c tcp_keepalives_interval={} -c tcp_keepalives_count={} \
             -c tcp_user_timeout={}",
            STATEMENT_TIMEOUT.as_millis(),
            LOCK_TIMEOUT.as_millis(),
            IDLE_IN_TRANSACTION_TIMEOUT.as_millis(),
            KEEPALIVE_IDLE.as_secs(),
            KEEPALIVE_INTERVAL.as_secs(),
            KEEPALIVE_PROBES,
            TCP_USER_TIMEOUT.as_millis()
        );
        let options = match config.get_options() {
            Some(theirs) if !theirs.trim().is_empty() => format!("{ours} {theirs}"),
            _ => ours,
        };
        config.options(options);
        config
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_PROBES)
            .tcp_user_timeout(TCP_USER_TIMEOUT);
        Ok(DatabaseUrl { config })
    }

    /// The client configuration.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// `host:port/dbname` for logs (no user, no password).
    pub fn redacted(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let db = self.config.get_dbname().unwrap_or("");
        format!("{host}:{port}/{db}")
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The pool plus the runtime handle its connections live on. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    runtime: tokio::runtime::Handle,
    url: DatabaseUrl,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Database({})", self.url.redacted())
    }
}

impl Database {
    /// A pool of at most `max_size` connections (opened lazily) on `runtime`. Connections are
    /// checked before reuse, so a restarted server costs one failed query per dead connection
    /// at most and then the pool reconnects.
    pub fn new(
        url: &DatabaseUrl,
        max_size: usize,
        runtime: tokio::runtime::Handle,
    ) -> Result<Database, PgError> {
        let manager = Manager::from_config(
            url.config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|_| PgError::BadUrl("cannot build a connection pool"))?;
        Ok(Database {
            pool,
            runtime,
            url: url.clone(),
        })
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The URL it was made from.
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// A pooled connection.
    pub async fn client(&self) -> Result<deadpool_postgres::Client, PgError> {
        Ok(self.pool.get().await?)
    }

    /// Runs `f` to completion from a thread that is not a tokio worker (the store workers, a
    /// CLI command). Never call it from async code.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// [`Database::block_on`] that gives up after `limit` (`None`): for callers that must not
    /// wait on a server gone silent mid-query (`statement_timeout` cannot fire then).
    pub fn block_on_within<F: std::future::Future>(
        &self,
        limit: Duration,
        f: F,
    ) -> Option<F::Output> {
        self.runtime
            .block_on(async { tokio::time::timeout(limit, f).await.ok() })
    }

    /// A dedicated (unpooled) connection and its I/O half, for `LISTEN`: the caller polls the
    /// connection for notifications.
    pub async fn dedicated(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
        ),
        PgError,
    > {
        Ok(self.url.config.connect(NoTls).await?)
    }

    /// Applies `steps` of `component` that the database does not have yet (step `i` is
    /// version `i + 1`), each as one statement batch, all in one transaction under
    /// [`MIGRATION_LOCK_KEY`]. Returns the version now in the database.
    pub async fn migrate(&self, component: &'static str, steps: &[&str]) -> Result<i64, PgError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS ignis_migrations (
                 component TEXT NOT NULL,
                 version BIGINT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                 PRIMARY KEY (component, version))",
        )
        .await?;
        let row = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM ignis_migrations WHERE component = $1",
                &[&component],
            )
            .await?;
        let found: i64 = row.try_get(0)?;
        let known = steps.len() as i64;
        if found > known {
            return Err(PgError::SchemaTooNew {
                component,
                found,
                known,
            });
        }
        for (i, step) in steps.iter().enumerate().skip(found as usize) {
            tx.batch_execute(step).await?;
            tx.execute(
                "INSERT INTO ignis_migrations (component, version) VALUES ($1, $2)",
                &[&component, &(i as i64 + 1)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parses_and_hides_the_password() {
        let url = DatabaseUrl::parse("postgres://ignis:s3cret@db.internal:6543/practice").unwrap();
        let shown = format!("{url} {url:?}");
        assert!(shown.contains("db.internal:6543/practice"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(url.config().get_application_name(), Some("ignis"));
        let options = url.config().get_options().unwrap_or("");
        assert!(options.contains("statement_timeout=8000"), "{options}");
        assert!(options.contains("lock_timeout=5000"), "{options}");
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for bad in [
            "mysql://u:p@h/db",
            "sqlite:ignis.db",
            "postgres://u:p@h/db?sslmode=require",
            "postgres://u:p@h:notaport/db",
        ] {
            let e = DatabaseUrl::parse(bad).unwrap_err();
            assert!(matches!(e, PgError::BadUrl(_)), "{bad}: {e:?}");
            assert!(!e.to_string().contains(":p@"), "{e}");
        }
    }
}
