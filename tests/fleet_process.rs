//! `ignis serve` as a process with `DATABASE_URL` and `REPLICA_ID` (docs/replicas.md §5): it
//! joins the fleet, names itself in `/health` and `/metrics`, is ready, and on SIGTERM with no
//! call of its own leaves the fleet with its leases released.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::postgres::TestPostgres;
use ignis::pg::{Database, DatabaseUrl};

/// `GET path` on 127.0.0.1:`port`: (status, body); `None` while nothing listens.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Some((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignis_serve_joins_the_fleet_and_leaves_it_on_sigterm() {
    let pg = TestPostgres::start();
    let url = pg.default_url();
    let dir = common::scratch::TempDir::new("fleet-process");
    let port = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .arg("serve")
        .env_clear()
        .env("PUBLIC_URL", common::PUBLIC)
        .env("TWILIO_AUTH_TOKEN", common::TOKEN)
        .env("DATABASE_URL", &url)
        .env("REPLICA_ID", "proc-1")
        .env("BIND", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("IGNIS_DB", dir.join("ignis.db"))
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        if let Some(r) = get(port, "/health/ready") {
            break r;
        }
        assert!(Instant::now() < deadline, "ignis serve did not listen");
        assert!(child.try_wait().unwrap().is_none(), "ignis serve exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ready.0, 200, "{}", ready.1);
    let health = get(port, "/health").unwrap();
    assert!(health.1.contains("\"replica\":\"proc-1\""), "{}", health.1);
    let metrics = get(port, "/metrics").unwrap();
    assert!(
        metrics
            .1
            .contains("ignis_replica_info{replica=\"proc-1\"} 1"),
        "{}",
        metrics.1
    );

    let db = Database::new(
        &DatabaseUrl::parse(&url).unwrap(),
        1,
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    let fresh =
        "SELECT heartbeat_at > now() - interval '1 minute' FROM fleet_replica WHERE id = 'proc-1'";
    let row = db
        .client()
        .await
        .unwrap()
        .query_one(fresh, &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "no fresh heartbeat");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "ignis serve did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    // Leases released at once: the heartbeat is at the epoch.
    let row = db
        .client()
        .await
        .unwrap()
        .query_one(fresh, &[])
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0), "heartbeat not released");
}
