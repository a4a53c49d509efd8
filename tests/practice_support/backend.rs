//! The same store tests on both backends (docs/replicas.md §3): a [`TestDb`] is a fresh SQLite
//! file or a fresh database on a real PostgreSQL (`tests/common/postgres.rs`). The PostgreSQL
//! server is shared by the tests of a binary that run at the same time (each gets its own
//! database) and stops when the last of them is done. Include with
//! `mod common; #[path = "practice_support/backend.rs"] mod backend;`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use ignis::pg::{Database, DatabaseUrl};
use ignis::practice::store::{PgStore, SqliteStore, Store};

use crate::common::postgres::TestPostgres;

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A fresh database for one test.
pub struct TestDb {
    pub kind: Kind,
    dir: crate::practice_support::TempDir,
    /// PostgreSQL only: the database's URL, the runtime its pools live on, and a pool.
    url: Option<DatabaseUrl>,
    url_text: String,
    db: Option<Database>,
    rt: Option<tokio::runtime::Runtime>,
    /// Last, so the server outlives the pools.
    server: Option<Arc<TestPostgres>>,
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The PostgreSQL server shared by the tests running now (started when there is none).
fn shared_server() -> Arc<TestPostgres> {
    static SHARED: Mutex<Weak<TestPostgres>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pg) = shared.upgrade() {
        return pg;
    }
    let pg = Arc::new(TestPostgres::start());
    *shared = Arc::downgrade(&pg);
    pg
}

/// A runtime for the pools' connections (the stores block on it from the test's threads).
pub fn pool_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Creates database `name` with SQL (no `createdb` binary needed) and returns its URL.
fn create_db(server: &TestPostgres, rt: &tokio::runtime::Runtime, name: &str) -> DatabaseUrl {
    let admin = DatabaseUrl::parse(&server.default_url()).unwrap();
    let pool = Database::new(&admin, 1, rt.handle().clone()).unwrap();
    pool.block_on(async {
        let c = pool.client().await.unwrap();
        c.batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
    });
    DatabaseUrl::parse(&server.url(name)).unwrap()
}

impl TestDb {
    pub fn new(kind: Kind, name: &str) -> TestDb {
        match kind {
            Kind::Sqlite => TestDb::sqlite(name),
            Kind::Postgres => TestDb::on_server(shared_server(), name),
        }
    }

    pub fn sqlite(name: &str) -> TestDb {
        TestDb {
            kind: Kind::Sqlite,
            dir: crate::practice_support::temp_dir(name),
            url: None,
            url_text: String::new(),
            db: None,
            rt: None,
            server: None,
        }
    }

    /// A database on a server of the test's own (for tests that stop or restart it).
    pub fn postgres_alone(name: &str) -> TestDb {
        TestDb::on_server(Arc::new(TestPostgres::start()), name)
    }

    fn on_server(server: Arc<TestPostgres>, name: &str) -> TestDb {
        let n = NEXT_DB.fetch_add(1, Ordering::Relaxed);
        let short: String = name.chars().take(40).collect();
        let rt = pool_runtime();
        let name = format!("t_{short}_{n}");
        let url = create_db(&server, &rt, &name);
        let db = Database::new(&url, 48, rt.handle().clone()).unwrap();
        let url_text = server.url(&name);
        TestDb {
            kind: Kind::Postgres,
            dir: crate::practice_support::temp_dir(&name),
            url: Some(url),
            url_text,
            db: Some(db),
            rt: Some(rt),
            server: Some(server),
        }
    }

    /// The SQLite file (also set for PostgreSQL, unused there).
    pub fn sqlite_path(&self) -> PathBuf {
        self.dir.join("ignis.db")
    }

    /// The database's `postgres://` URL (PostgreSQL).
    pub fn url(&self) -> String {
        self.url_text.clone()
    }

    /// A scratch directory of this test.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The test's pool (PostgreSQL).
    pub fn database(&self) -> &Database {
        self.db.as_ref().expect("a PostgreSQL test database")
    }

    /// A separate pool of `size` connections, as another replica would have.
    pub fn replica_pool(&self, size: usize) -> Database {
        let rt = self.rt.as_ref().expect("a PostgreSQL test database");
        Database::new(self.url.as_ref().unwrap(), size, rt.handle().clone()).unwrap()
    }

    /// The server (PostgreSQL).
    pub fn server(&self) -> &TestPostgres {
        self.server.as_ref().expect("a PostgreSQL test database")
    }

    /// A new store on this database (its own connection), migrated.
    pub fn store(&self) -> Box<dyn Store> {
        match self.kind {
            Kind::Sqlite => Box::new(SqliteStore::open(&self.sqlite_path()).unwrap()),
            Kind::Postgres => Box::new(PgStore::open(self.database()).unwrap()),
        }
    }

    /// Runs a statement written with `$1`-style parameters (integers only); rows changed.
    pub fn exec(&self, sql: &str, args: &[i64]) -> u64 {
        match self.kind {
            Kind::Sqlite => {
                let conn = rusqlite::Connection::open(self.sqlite_path()).unwrap();
                let params: Vec<&dyn rusqlite::ToSql> =
                    args.iter().map(|a| a as &dyn rusqlite::ToSql).collect();
                conn.execute(&sql.replace('$', "?"), params.as_slice())
                    .unwrap() as u64
            }
            Kind::Postgres => {
                let db = self.database();
                db.block_on(async {
                    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
                        .iter()
                        .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
                        .collect();
                    db.client()
                        .await
                        .unwrap()
                        .execute(sql, &params)
                        .await
                        .unwrap()
                })
            }
        }
    }

    /// The integer a one-row, one-column query answers (write `COUNT(*)` etc.).
    pub fn value(&self, sql: &str, args: &[i64]) -> i64 {
        match self.kind {
            Kind::Sqlite => {
                let conn = rusqlite::Connection::open(self.sqlite_path()).unwrap();
                let params: Vec<&dyn rusqlite::ToSql> =
                    args.iter().map(|a| a as &dyn rusqlite::ToSql).collect();
                conn.query_row(&sql.replace('$', "?"), params.as_slice(), |r| r.get(0))
                    .unwrap()
            }
            Kind::Postgres => {
                let db = self.database();
                db.block_on(async {
                    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
                        .iter()
                        .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
                        .collect();
                    let row = db.client().await.unwrap().query_one(sql, &params).await;
                    row.unwrap().get(0)
                })
            }
        }
    }
}

impl crate::practice_support::Env {
    /// A seeded demo database on `db`'s backend, as a fresh `ignis serve` would have it.
    pub fn on(db: &TestDb, now: jiff::Timestamp) -> crate::practice_support::Env {
        let dir = crate::practice_support::temp_dir("env");
        crate::practice_support::Env::with_store(db.store(), dir, now)
    }
}

/// Declares each named `fn(&TestDb)` as a test on SQLite (`sqlite::name`) and on PostgreSQL
/// (`postgres::name`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    let db = $crate::backend::TestDb::new(
                        $crate::backend::Kind::Sqlite,
                        stringify!($name),
                    );
                    super::$name(&db);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let db = $crate::backend::TestDb::new(
                        $crate::backend::Kind::Postgres,
                        stringify!($name),
                    );
                    super::$name(&db);
                }
            )*
        }
    };
}
