//! `src/pg.rs` against a real PostgreSQL: migrations applied once when several replicas start
//! at the same moment, and a database newer than the binary refused.

mod common;

use common::postgres::TestPostgres;
use ignis::pg::{Database, DatabaseUrl, PgError};

const STEPS: &[&str] = &[
    "CREATE TABLE widget (id BIGINT PRIMARY KEY)",
    "ALTER TABLE widget ADD COLUMN name TEXT NOT NULL DEFAULT ''",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_apply_each_step_once() {
    let pg = TestPostgres::start();
    let url = DatabaseUrl::parse(&pg.default_url()).unwrap();
    // Eight "replicas", each with its own pool, migrating at once: without the advisory lock
    // two would both see version 0 and the second CREATE TABLE would fail.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let db = Database::new(&url, 2, tokio::runtime::Handle::current()).unwrap();
        tasks.push(tokio::spawn(async move { db.migrate("test", STEPS).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 2);
    }
    let db = Database::new(&url, 1, tokio::runtime::Handle::current()).unwrap();
    let client = db.client().await.unwrap();
    let rows = client
        .query(
            "SELECT version FROM ignis_migrations WHERE component = 'test' ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, vec![1, 2]);
    drop(client);

    // A binary that knows only step 1 must not run against the newer schema.
    match db.migrate("test", &STEPS[..1]).await {
        Err(PgError::SchemaTooNew {
            found: 2, known: 1, ..
        }) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_unavailable_not_a_hang() {
    let pg = TestPostgres::start();
    let url = DatabaseUrl::parse(&pg.default_url()).unwrap();
    let db = Database::new(&url, 2, tokio::runtime::Handle::current()).unwrap();
    db.client()
        .await
        .unwrap()
        .execute("SELECT 1", &[])
        .await
        .unwrap();
    pg.stop();
    let started = std::time::Instant::now();
    let err = match db.client().await {
        Ok(c) => c
            .execute("SELECT 1", &[])
            .await
            .map(|_| ())
            .map_err(PgError::from),
        Err(e) => Err(e),
    };
    assert!(
        matches!(err, Err(PgError::Unavailable(_))),
        "expected Unavailable, got {err:?}"
    );
    // Bounded by POOL_WAIT/CONNECT_TIMEOUT, not a hang (a loose bound: this is not a timing test).
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    pg.start_server();
    let mut ok = false;
    for _ in 0..50 {
        if let Ok(c) = db.client().await
            && c.execute("SELECT 1", &[]).await.is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "the pool did not reconnect after the server came back");
}

/// A replica cut off (or paused) inside a transaction that holds a lock: the server ends that
/// session after `IDLE_IN_TRANSACTION_TIMEOUT`, and the lock is free again for the others,
/// instead of blocking every replica until TCP gives up. The session settings hold with the
/// operator's own `options` in the URL too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stuck_in_a_transaction_lets_go_of_its_locks() {
    let pg = TestPostgres::start();
    let url = format!("{}?options=-c%20work_mem%3D8MB", pg.default_url());
    let url = DatabaseUrl::parse(&url).unwrap();
    let db = Database::new(&url, 2, tokio::runtime::Handle::current()).unwrap();
    let stuck = db.client().await.unwrap();
    let setting = |name: &'static str| {
        let c = &stuck;
        async move {
            let row = c.query_one(&format!("SHOW {name}"), &[]).await.unwrap();
            row.get::<_, String>(0)
        }
    };
    assert_eq!(setting("statement_timeout").await, "8s");
    assert_eq!(setting("idle_in_transaction_session_timeout").await, "5s");
    // A replica that vanished mid-job loses its session (and a call's lock) in about a minute.
    assert_eq!(setting("tcp_keepalives_idle").await, "30");
    assert_eq!(setting("tcp_keepalives_interval").await, "10");
    assert_eq!(setting("tcp_keepalives_count").await, "3");
    assert_eq!(setting("tcp_user_timeout").await, "60000");
    assert_eq!(
        setting("work_mem").await,
        "8MB",
        "the operator's options kept"
    );
    stuck
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(4242);")
        .await
        .unwrap();
    // The replica goes silent here, its transaction open.
    let other = db.client().await.unwrap();
    let mut got = false;
    for _ in 0..100 {
        let row = other
            .query_one("SELECT pg_try_advisory_lock(4242)", &[])
            .await
            .unwrap();
        if row.get::<_, bool>(0) {
            got = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(got, "the lock was still held after 20 s");
    assert!(
        stuck.execute("SELECT 1", &[]).await.is_err(),
        "the stuck session was ended"
    );
}

/// A TCP relay to PostgreSQL that can go silent: after `freeze` it keeps every socket open but
/// forwards nothing more (a partition, or a failover leaving the old address unanswered).
struct Blackhole {
    port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Blackhole {
    async fn start(target: u16) -> Blackhole {
        use std::sync::atomic::AtomicBool;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = std::sync::Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(Self::relay(cr, sw, f.clone()));
                tokio::spawn(Self::relay(sr, cw, f.clone()));
            }
        });
        Blackhole { port, frozen }
    }

    async fn relay(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                return;
            }
            if frozen.load(std::sync::atomic::Ordering::SeqCst) {
                // Silent from now on, the sockets held open.
                std::future::pending::<()>().await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A database that goes silent mid-query costs a store operation `OPERATION_TIMEOUT` (20 s),
/// then "unavailable", not TCP's ~15 min of retransmissions with the store worker stuck (on
/// loopback, with the relay holding the sockets open, it would be forever).
#[test]
fn a_database_gone_silent_is_unavailable_not_a_stuck_worker() {
    use ignis::practice::store::PgStore;
    let pg = TestPostgres::start();
    let target: u16 = pg
        .default_url()
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the test server's port");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let relay = rt.block_on(Blackhole::start(target));
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", relay.port);
    let db = Database::new(&DatabaseUrl::parse(&url).unwrap(), 2, rt.handle().clone()).unwrap();
    let mut store = PgStore::open(&db).unwrap();
    assert!(store.schema_version().unwrap() > 0);
    relay.freeze();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(store.schema_version());
    });
    let answer = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the store worker is stuck on a silent database");
    match answer {
        Err(e) if e.is_unavailable() => {}
        other => panic!("expected unavailable, got {other:?}"),
    }
}
