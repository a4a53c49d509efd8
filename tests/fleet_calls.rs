//! Call coordination across replicas (docs/replicas.md §3–5): two servers in this process,
//! each its own replica with its own stand-in agent, sharing one real PostgreSQL. Every
//! request is a signed webhook or handshake as Twilio sends it, to the replica a load balancer
//! might pick.

mod common;

use std::time::{Duration, Instant};

use common::postgres::TestPostgres;
use common::*;
use ignis::pg::{Database, DatabaseUrl};
use ignis::routes::App;

const T: Duration = Duration::from_secs(10);

/// A replica `id` on the database at `url`.
async fn replica(url: &str, id: &str, extra: &[(&str, &str)]) -> Server {
    replica_with(url, id, extra, |_| {}).await
}

/// [`replica`] with its configuration tweaked.
async fn replica_with(
    url: &str,
    id: &str,
    extra: &[(&str, &str)],
    tweak: impl FnOnce(&mut ignis::config::Config),
) -> Server {
    replica_full(url, id, extra, tweak, None).await
}

const TOOLS_TOKEN: &str = "tools-secret-0123456789";

/// The demo practice on the shared PostgreSQL (as `ignis serve` opens it with DATABASE_URL).
async fn shared_practice(url: &str) -> ignis::practice::Practice {
    let url = url.to_owned();
    let handle = tokio::runtime::Handle::current();
    // `open_postgres` waits on the pool from a plain thread (`Database::block_on`).
    tokio::task::spawn_blocking(move || {
        let settings = ignis::practice::PracticeSettings::from_lookup(|k| match k {
            "TOOLS_TOKEN" => Some(TOOLS_TOKEN.into()),
            _ => None,
        })
        .unwrap();
        let db = Database::new(&DatabaseUrl::parse(&url).unwrap(), 4, handle).unwrap();
        let (practice, _thread) = ignis::practice::Practice::open_postgres(
            &settings,
            ignis::practice::config::PracticeConfig::demo(),
            &db,
            jiff::Timestamp::now(),
        )
        .unwrap();
        practice
    })
    .await
    .unwrap()
}

async fn replica_full(
    url: &str,
    id: &str,
    extra: &[(&str, &str)],
    tweak: impl FnOnce(&mut ignis::config::Config),
    practice: Option<ignis::practice::Practice>,
) -> Server {
    let mut vars = vec![("DATABASE_URL", url), ("REPLICA_ID", id)];
    vars.extend_from_slice(extra);
    let mut config = test_config(&vars);
    tweak(&mut config);
    let agent = fake_agent::FakeAgent::start(Default::default()).await;
    config.elevenlabs_agent_id = Some(fake_agent::AGENT_ID.into());
    config.elevenlabs_api_base = agent.base();
    let db_url = DatabaseUrl::parse(url).unwrap();
    let db = Database::new(&db_url, 4, tokio::runtime::Handle::current()).unwrap();
    let fleet = ignis::driver::fleet::open(db, id.to_owned()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = match practice {
        Some(p) => App::with_practice(config, p),
        None => App::new(config),
    };
    let server = Server::spawn(listener, app.with_fleet(fleet), agent);
    // Notices sent before the replica LISTENs are lost (PostgreSQL keeps none for later
    // listeners): tests that send them must not race its LISTEN connection, which a busy
    // machine opens late (CI: malformed_notices… missed all three).
    until("the replica LISTENs", T, || async {
        roundtrip(&server, b"GET /health/ready HTTP/1.1\r\n\r\n")
            .await
            .text()
            .contains("\"listening\":true")
    })
    .await;
    server
}

fn sid(n: u32) -> String {
    format!("CA{n:032x}")
}

async fn status(server: &Server, call_sid: &str, status: &str) -> Resp {
    let mut p = call_params(call_sid);
    p.retain(|(k, _)| k != "CallStatus");
    p.push(("CallStatus".into(), status.into()));
    roundtrip(server, &signed_post("/api/twilio/status", &p, TOKEN)).await
}

async fn stream_ended(server: &Server, replica: &str, call_sid: &str) -> Resp {
    let path = format!("/api/twilio/stream-ended/{replica}");
    roundtrip(server, &signed_post(&path, &call_params(call_sid), TOKEN)).await
}

async fn voice(server: &Server, call_sid: &str) -> Resp {
    call_webhook(server, "/api/twilio/voice", call_sid).await
}

async fn ready(server: &Server) -> u16 {
    roundtrip(server, b"GET /health/ready HTTP/1.1\r\n\r\n")
        .await
        .status
}

fn is_stream(r: &Resp) -> bool {
    r.status == 200 && r.text().contains("<Stream url=")
}

/// The human fallback (an apology or a `<Dial>`), not a plain hang-up.
fn is_fallback(r: &Resp) -> bool {
    r.status == 200 && !r.text().contains("<Stream") && r.text().contains("<Say")
}

/// The plain hang-up after a conversation that ended normally.
fn is_hangup(r: &Resp) -> bool {
    r.status == 200 && r.text().contains("<Response><Hangup/></Response>")
}

/// A one-connection pool on the shared database, as the test's own window into it.
fn test_db(url: &str) -> Database {
    Database::new(
        &DatabaseUrl::parse(url).unwrap(),
        1,
        tokio::runtime::Handle::current(),
    )
    .unwrap()
}

/// A row of `fleet_call`: (state, outcome, stream_replica).
async fn row(url: &str, call_sid: &str) -> Option<(String, Option<String>, Option<String>)> {
    let db = test_db(url);
    let client = db.client().await.unwrap();
    client
        .query_opt(
            "SELECT state, outcome, stream_replica FROM fleet_call WHERE call_sid = $1",
            &[&call_sid],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

/// Waits (at most `within`) for the call's `fleet_call` row to reach `state`.
async fn row_becomes(url: &str, call_sid: &str, state: &str, within: Duration) {
    until(&format!("row {state}"), within, || async {
        row(url, call_sid).await.map(|r| r.0).as_deref() == Some(state)
    })
    .await;
}

/// Polls `cond` (async) until true or panics after `within`.
async fn until<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Two processes given one `REPLICA_ID` would end each other's calls: a second one is refused
/// while the first heartbeats (after waiting out one lease, which a crashed process's
/// heartbeat would not outlive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_id_in_use_is_refused() {
    let pg = TestPostgres::start();
    let url = pg.default_url();
    let _running = replica(&url, "twin", &[]).await;
    let db = Database::new(
        &DatabaseUrl::parse(&url).unwrap(),
        2,
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    match ignis::driver::fleet::open(db.clone(), "twin".to_owned()).await {
        Err(ignis::pg::PgError::ReplicaIdInUse(id)) => assert_eq!(id, "twin"),
        Err(e) => panic!("expected ReplicaIdInUse, got {e}"),
        Ok(_) => panic!("a second process joined as the running replica's id"),
    }
    // Another id joins at once.
    assert!(
        ignis::driver::fleet::open(db, "other".to_owned())
            .await
            .is_ok()
    );
}

/// Processes started at the same moment with one `REPLICA_ID`: exactly one joins (the check and
/// the first heartbeat are one locked transaction, docs/replicas.md §3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_started_together_with_one_id_join_once() {
    let pg = TestPostgres::start();
    let url = pg.default_url();
    let db = Database::new(
        &DatabaseUrl::parse(&url).unwrap(),
        12,
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    // Migrations first, so the starters below meet at the join itself.
    assert!(
        ignis::driver::fleet::open(db.clone(), "first".to_owned())
            .await
            .is_ok()
    );
    // The starters meet at the replica table: held locked until all of them wait on it, then
    // let go at once.
    let mut gate = db.client().await.unwrap();
    let held = gate.transaction().await.unwrap();
    held.batch_execute("LOCK TABLE fleet_replica IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let starts: Vec<_> = (0..8)
        .map(|_| tokio::spawn(ignis::driver::fleet::open(db.clone(), "twin".to_owned())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    held.commit().await.unwrap();
    drop(gate);
    // Whichever joined keeps heartbeating, as its process would (`open` starts no heartbeat
    // task), so the others cannot take the id over once the first beat would have gone stale.
    let beating = db.clone();
    let beats = tokio::spawn(async move {
        loop {
            let c = beating.client().await.unwrap();
            c.execute(
                "UPDATE fleet_replica SET heartbeat_at = now() WHERE id = 'twin'",
                &[],
            )
            .await
            .unwrap();
            drop(c);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let mut joined = 0;
    for s in starts {
        match s.await.unwrap() {
            Ok(_) => joined += 1,
            Err(ignis::pg::PgError::ReplicaIdInUse(id)) => assert_eq!(id, "twin"),
            Err(e) => panic!("expected ReplicaIdInUse, got {e}"),
        }
    }
    beats.abort();
    assert_eq!(joined, 1, "processes that joined as \"twin\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_calls_is_fleet_wide_and_a_lease_frees_when_its_call_ends() {
    let pg = TestPostgres::start();
    let url = pg.default_url();
    let a = replica(&url, "a", &[("MAX_CALLS", "2")]).await;
    let b = replica(&url, "b", &[("MAX_CALLS", "2")]).await;

    let first = voice(&a, &sid(1)).await;
    assert!(is_stream(&first), "{}", first.text());
    // The owner is named in the per-call URLs (the load balancer's routing hint).
    assert!(stream_path_of(&first.text()).starts_with("/api/twilio/stream/a/"));
    assert!(
        first
            .text()
            .contains("https://ignis.example.com/api/twilio/stream-ended/a"),
        "{}",
        first.text()
    );
    assert!(is_stream(&voice(&b, &sid(2)).await));
    // Each replica has one call: only the shared count can refuse these.
    let third = voice(&a, &sid(3)).await;
    assert!(is_fallback(&third), "{}", third.text());
    assert!(is_fallback(&voice(&b, &sid(4)).await));
    // The same CallSid answered by A cannot get a second conversation on B.
    assert!(is_fallback(&voice(&b, &sid(1)).await));

    // Call 1 ends (status on the other replica): its lease is free for a new call.
    assert_eq!(status(&b, &sid(1), "completed").await.status, 204);
    assert_eq!(
        row(&url, &sid(1)).await.map(|r| r.0),
        Some("ended".to_owned())
    );
    assert!(is_stream(&voice(&b, &sid(5)).await));
    assert!(is_fallback(&voice(&a, &sid(6)).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_callback_on_b_tears_down_the_stream_on_a() {
    let pg = TestPostgres::start();
    let url = pg.default_url();
    let a = replica(&url, "a", &[]).await;
    let b = replica(&url, "b", &[]).await;
    let call = sid(0x11);
    let path = stream_path_of(&voice(&a, &call).await.text());
    let mut twilio = open_stream_at(&a, &path, &start_message(&call)).await;
    let mut agent = a.agent.next_conn(T).await;
    eventually("live on A", || a.app.calls.is_live(&call)).await;
    row_becomes(&url, &call, "live", T).await;

    assert_eq!(status(&b, &call, "completed").await.status, 204);
    assert!(agent.closed_within(T).await, "A's agent outlived the call");
    let closed = tokio::time::timeout(T, async {
        use futures_util::StreamExt;
        while let Some(Ok(_)) = twilio.next().await {}
    })
    .await;
    assert!(closed.is_ok(), "A's stream outlived the call");
    eventually("ended on A", || a.app.calls.outcome(&call).is_some()).await;

    // stream-ended reaching B answers from the shared outcome: a hang-up ends normally.
    let r = stream_ended(&b, "a", &call).await;
    assert!(is_hangup(&r), "{}", r.text());
    // An unknown call gets the human at once.
    let r = stream_ended(&b, "a", &sid(0x12)).await;
    assert!(is_fallback(&r), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ended_on_b_answers_from_the_outcome_written_by_a() {
    let pg = TestPostgres::start();
    let url = pg.default_url();
    let a = replica(&url, "a", &[]).await;
    let b = replica(&url, "b", &[]).await;

    // The agent fails: the outcome written by A sends the caller to a human, on B too.
    let call = sid(0x21);
    let path = stream_path_of(&voice(&a, &call).await.text());
    let _twilio = open_stream_at(&a, &path, &start_message(&call)).await;
    let agent = a.agent.next_conn(T).await;
    eventually("live on A", || a.app.calls.is_live(&call)).await;
    agent.close(1011);
    eventually("ended on A", || a.app.calls.outcome(&call).is_some()).await;
    until("outcome shared", T, || async {
        row(&url, &call).await.and_then(|r| r.1).is_some()
    })
    .await;
    let r = stream_ended(&b, "a", &call).await;
    assert!(is_fallback(&r), "{}", r.text());

    // The agent ends the call normally: hang up, on B too.
    let call = sid(0x22);
    let path = stream_path_of(&voice(&a, &call).await.text());
    let mut twilio = open_stream_at(&a, &path, &start_message(&call)).await;
    let mut agent = a.agent.next_conn(T).await;
    // The conversation runs (caller audio reaches the agent) before the agent ends it.
    use futures_util::SinkExt;
    let media = tokio_tungstenite::tungstenite::Message::text(media_message(0));
    twilio.send(media).await.unwrap();
    agent.recv_audio(1, T).await;
    agent.close(1000);
    until("outcome shared", T, || async {
        row(&url, &call).await.and_then(|r| r.1).is_some()
    })
    .await;
    assert_eq!(
        a.app.calls.outcome(&call).map(|o| o.as_str()),
        row(&url, &call).await.and_then(|r| r.1).as_deref()
    );
    assert_eq!(
        a.app.calls.outcome(&call),
        Some(ignis::calls::Outcome::Completed)
    );
    let r = stream_ended(&b, "a", &call).await;
    assert!(is_hangup(&r), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_for_as_nonce_is_adopted_by_b_and_as_agent_closes_at_once() {
    let pg = TestPostgres::start();
    let url = pg.default_url();
    let a = replica(&url, "a", &[]).await;
    let b = replica(&url, "b", &[]).await;
    let call = sid(0x31);
    let path = stream_path_of(&voice(&a, &call).await.text());
    // A pre-connects its agent (the default PRECONNECT_TIMEOUT_MS is 30 s).
    let mut preconnected = a.agent.next_conn(T).await;

    // The load balancer sends the stream to B (A unreachable for it, say).
    let mut twilio = open_stream_at(&b, &path, &start_message(&call)).await;
    let mut b_agent = b.agent.next_conn(T).await;
    assert!(
        preconnected.closed_within(Duration::from_secs(5)).await,
        "A's pre-connected agent was not closed"
    );
    eventually("live on B", || b.app.calls.is_live(&call)).await;
    until("row claimed by B", T, || async {
        row(&url, &call).await.and_then(|r| r.2) == Some("b".into())
    })
    .await;
    // The nonce is spent fleet-wide: A refuses it now.
    let mut s = a.connect().await;
    let head = stream_handshake(&path, Some(&stream_signature(&path)), "");
    tokio::io::AsyncWriteExt::write_all(&mut s, head.as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut s, &mut buf, true).await.status, 403);

    // B runs the call: caller audio reaches B's agent.
    use futures_util::SinkExt;
    twilio
        .send(tokio_tungstenite::tungstenite::Message::text(
            media_message(0),
        ))
        .await
        .unwrap();
    b_agent.recv_audio(1, T).await;
    // A status callback at the owner A tears it down on B.
    assert_eq!(status(&a, &call, "completed").await.status, 204);
    assert!(
        b_agent.closed_within(T).await,
        "B's agent outlived the call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_replica_sends_calls_elsewhere_and_exits_after_its_last_call() {
    let pg = TestPostgres::start();
    let url = pg.default_url();
    let mut a = replica(&url, "a", &[]).await;
    let b = replica(&url, "b", &[]).await;
    assert_eq!(ready(&a).await, 200);
    let call = sid(0x41);
    let path = stream_path_of(&voice(&a, &call).await.text());
    let _twilio = open_stream_at(&a, &path, &start_message(&call)).await;
    let _agent = a.agent.next_conn(T).await;
    eventually("live on A", || a.app.calls.is_live(&call)).await;

    a.shutdown();
    eventually("draining", || a.app.is_draining()).await;
    assert_eq!(ready(&a).await, 503);
    assert_eq!(ready(&b).await, 200);
    let r = voice(&a, &sid(0x42)).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert!(is_stream(&voice(&b, &sid(0x42)).await));
    // Its own call keeps running until it ends.
    assert!(a.app.calls.is_live(&call));
    assert!(!a.task.is_finished());
    assert_eq!(status(&b, &call, "completed").await.status, 204);
    let done = tokio::time::timeout(T, &mut a.task).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
    // Its leases are gone at once (heartbeat at the epoch).
    let db = Database::new(
        &DatabaseUrl::parse(&url).unwrap(),
        1,
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    let c = db.client().await.unwrap();
    let r = c
        .query_one(
            "SELECT heartbeat_at < now() - interval '1 day', draining FROM fleet_replica WHERE id = 'a'",
            &[],
        )
        .await
        .unwrap();
    assert!(r.get::<_, bool>(0) && r.get::<_, bool>(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_drain_deadline_a_replica_closes_its_calls_and_ends_their_rows() {
    let pg = TestPostgres::start();
    let url = pg.default_url();
    let mut a = replica_with(&url, "a", &[], |c| c.drain = Duration::from_secs(1)).await;
    let call = sid(0x81);
    let path = stream_path_of(&voice(&a, &call).await.text());
    let mut twilio = open_stream_at(&a, &path, &start_message(&call)).await;
    let _agent = a.agent.next_conn(T).await;
    eventually("live on A", || a.app.calls.is_live(&call)).await;
    a.shutdown();
    // The call never ends by itself: the deadline closes it.
    let closed = tokio::time::timeout(T, async {
        use futures_util::StreamExt;
        while let Some(Ok(_)) = twilio.next().await {}
    })
    .await;
    assert!(closed.is_ok(), "the call outlived the drain deadline");
    let done = tokio::time::timeout(T, &mut a.task).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
    let r = row(&url, &call).await.unwrap();
    assert_eq!(
        (r.0.as_str(), r.1.as_deref()),
        ("ended", Some("server_shutdown"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_database_a_replica_is_not_ready_and_answers_the_fallback() {
    let pg = TestPostgres::start();
    let url = pg.default_url();
    let a = replica(&url, "a", &[]).await;
    let b = replica(&url, "b", &[]).await;
    assert_eq!(ready(&a).await, 200);
    pg.stop();
    until("not ready", Duration::from_secs(15), || async {
        ready(&a).await == 503
    })
    .await;
    let r = voice(&a, &sid(0x51)).await;
    assert!(is_fallback(&r), "{}", r.text());
    // The refused call left no binding behind: once the database is back it can be answered.
    pg.start_server();
    until("ready again", Duration::from_secs(20), || async {
        ready(&a).await == 200
    })
    .await;
    let r = voice(&a, &sid(0x51)).await;
    assert!(is_stream(&r), "{}", r.text());
    // Notices flow again once A's LISTEN connection is back: a status callback on B lets go
    // of A's pre-connected agent at once.
    let mut preconnected = a.agent.next_conn(T).await;
    // (Its reconnect backs off up to 5 s while the database is away.)
    until("A listens again", Duration::from_secs(15), || async {
        a.app.fleet.as_ref().is_some_and(|f| f.is_listening())
    })
    .await;
    assert_eq!(status(&b, &sid(0x51), "completed").await.status, 204);
    assert!(preconnected.closed_within(Duration::from_secs(5)).await);
    let metrics = roundtrip(&a, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(
        metrics
            .text()
            .contains("ignis_replica_info{replica=\"a\"} 1"),
        "{}",
        metrics.text()
    );
    let health = roundtrip(&a, b"GET /health HTTP/1.1\r\n\r\n").await;
    assert!(
        health.text().contains("\"replica\":\"a\""),
        "{}",
        health.text()
    );
}

/// SQL on the shared database, for setting up what another process would have left.
async fn sql(url: &str, statement: &str) {
    let db = test_db(url);
    db.client()
        .await
        .unwrap()
        .batch_execute(statement)
        .await
        .unwrap();
}

/// A live call on replica `ghost`, whose heartbeat is `heartbeat_age` old and which wrote no
/// outcome (as when its process was SIGKILLed mid-call).
async fn ghost_call(url: &str, ghost: &str, call_sid: &str, heartbeat_age: &str, nonce: u8) {
    sql(
        url,
        &format!(
            "INSERT INTO fleet_replica (id, heartbeat_at) VALUES ('{ghost}', now() - interval '{heartbeat_age}')
               ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at;
             INSERT INTO fleet_call (call_sid, owner, stream_replica, nonce_hash, account_sid,
               caller, called, expires_at, state)
             VALUES ('{call_sid}', '{ghost}', '{ghost}', '\\x{nonce:02x}', 'AC11111111111111111111111111111111',
               '+4915112345123', '+16175551881', now() + interval '1 minute', 'live')"
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ended_for_a_killed_replicas_call_gets_the_fallback_within_a_second() {
    let pg = TestPostgres::start();
    let url = pg.default_url();
    let b = replica(&url, "b", &[]).await;
    // The stream's replica died moments ago: its heartbeat still looks fresh, and it will
    // never write the outcome. B waits a bounded moment for it, then sends the caller to a
    // human (docs/replicas.md §4.4; issue 15 asks for under 1 s).
    let fresh = sid(0x61);
    ghost_call(&url, "ghost", &fresh, "1 second", 0x61).await;
    let t0 = Instant::now();
    let r = stream_ended(&b, "ghost", &fresh).await;
    let took = t0.elapsed();
    assert!(is_fallback(&r), "{}", r.text());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // Its heartbeat stale: no wait at all is needed, the answer is the same.
    let stale = sid(0x62);
    ghost_call(&url, "gone", &stale, "1 minute", 0x62).await;
    assert!(is_fallback(&stream_ended(&b, "gone", &stale).await));
    // A stale replica's live call holds no lease; a fresh one does.
    let cap = replica(&url, "c", &[("MAX_CALLS", "2")]).await;
    assert!(is_stream(&voice(&cap, &sid(0x63)).await));
    assert!(is_fallback(&voice(&cap, &sid(0x64)).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_notices_are_counted_and_change_nothing() {
    let pg = TestPostgres::start();
    let url = pg.default_url();
    let a = replica(&url, "a", &[]).await;
    let call = sid(0x71);
    assert!(is_stream(&voice(&a, &call).await));
    let mut preconnected = a.agent.next_conn(T).await;
    let long = "x".repeat(200);
    sql(
        &url,
        &format!(
            "SELECT pg_notify('ignis_fleet', 'a end CA123');
             SELECT pg_notify('ignis_fleet', 'a explode {call}');
             SELECT pg_notify('ignis_fleet', '{long}');
             SELECT pg_notify('ignis_fleet', 'other end {call}');"
        ),
    )
    .await;
    until("three bad notices counted", T, || async {
        roundtrip(&a, b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .text()
            .contains("ignis_fleet_bad_notices_total 3\n")
    })
    .await;
    // None of them (nor the one for another replica) touched the call.
    assert!(
        !preconnected.closed_within(Duration::from_millis(300)).await,
        "a bad notice closed the agent"
    );
    // A well-formed one does.
    sql(
        &url,
        &format!("SELECT pg_notify('ignis_fleet', 'a end {call}')"),
    )
    .await;
    assert!(preconnected.closed_within(T).await);
}

/// The identify tool's answer for the call holding `call_token`, on `server`.
async fn identify(server: &Server, call_token: &str) -> Resp {
    let step = &ignis::practice::demo::DEMO_BOOKING_SCRIPT[0];
    let raw = format!(
        "{} {} HTTP/1.1\r\nHost: ignis\r\nAuthorization: Bearer {TOOLS_TOKEN}\r\n\
         X-Ignis-Call: {call_token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{}",
        step.method,
        step.path,
        step.body.len(),
        step.body
    );
    roundtrip(server, raw.as_bytes()).await
}

fn call_token(agent: &fake_agent::AgentConn) -> String {
    agent.initiation["dynamic_variables"]["secret__ignis_call"]
        .as_str()
        .expect("a call token")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_stream_takes_the_tool_token_over_in_the_shared_practice() {
    let pg = TestPostgres::start();
    let url = pg.default_url();
    let a = replica_full(&url, "a", &[], |_| {}, Some(shared_practice(&url).await)).await;
    let b = replica_full(&url, "b", &[], |_| {}, Some(shared_practice(&url).await)).await;
    let call = sid(0x91);
    let mut params = call_params(&call);
    for (k, v) in params.iter_mut() {
        if k == "From" {
            *v = ignis::practice::demo::DEMO_CALLER_NUMBER.into();
        }
    }
    let r = roundtrip(&a, &signed_post("/api/twilio/voice", &params, TOKEN)).await;
    let path = stream_path_of(&r.text());
    let mut preconnected = a.agent.next_conn(T).await;
    let old = call_token(&preconnected);
    until("A's token works", T, || async {
        identify(&a, &old).await.status == 200
    })
    .await;

    // The stream lands on B: B's agent gets a new token, A's agent and token are retired.
    let _twilio = open_stream_at(&b, &path, &start_message(&call)).await;
    let b_agent = b.agent.next_conn(T).await;
    let new = call_token(&b_agent);
    assert_ne!(new, old);
    assert!(preconnected.closed_within(Duration::from_secs(5)).await);
    // Any replica finds the call by the new token's hash; the old one is refused everywhere.
    until("B's token works", T, || async {
        identify(&a, &new).await.status == 200
    })
    .await;
    assert_eq!(identify(&b, &new).await.status, 200);
    for server in [&a, &b] {
        let r = identify(server, &old).await;
        assert_eq!(r.status, 403, "{}", r.text());
    }
}

#[tokio::test]
async fn without_database_url_the_urls_and_readiness_are_as_before() {
    let mut server = Server::start().await;
    assert!(server.app.fleet.is_none());
    let r = voice(&server, &sid(0xa1)).await;
    let path = stream_path_of(&r.text());
    let nonce = path.strip_prefix("/api/twilio/stream/").unwrap();
    assert_eq!(nonce.len(), 32, "{path}");
    assert!(
        r.text().contains("/api/twilio/stream-ended\""),
        "{}",
        r.text()
    );
    // The fleet's per-replica paths do not exist here.
    assert_eq!(stream_ended(&server, "a", &sid(0xa1)).await.status, 404);
    let health = roundtrip(&server, b"GET /health HTTP/1.1\r\n\r\n").await;
    assert!(!health.text().contains("replica"), "{}", health.text());
    assert_eq!(ready(&server).await, 200);
    server.shutdown();
    eventually("draining", || server.app.is_draining()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_call_keeps_its_audio_while_the_database_is_down() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let pg = TestPostgres::start();
    let url = pg.default_url();
    let a = replica(&url, "a", &[]).await;
    let call = sid(0xb1);
    let path = stream_path_of(&voice(&a, &call).await.text());
    let mut twilio = open_stream_at(&a, &path, &start_message(&call)).await;
    let mut agent = a.agent.next_conn(T).await;
    twilio.send(Message::text(media_message(0))).await.unwrap();
    agent.recv_audio(1, T).await;
    pg.stop();
    // Caller audio still reaches the agent, the whole time the database is away.
    for chunk in 1..50 {
        twilio
            .send(Message::text(media_message(chunk)))
            .await
            .unwrap();
    }
    agent.recv_audio(49 * 160, T).await;
    assert!(a.app.calls.is_live(&call));
    // The call ends while the database is away: its end is written once it is back, so its
    // lease does not outlive it.
    agent.close(1000);
    eventually("ended on A", || a.app.calls.outcome(&call).is_some()).await;
    pg.start_server();
    row_becomes(&url, &call, "ended", Duration::from_secs(20)).await;
    assert_eq!(
        row(&url, &call).await.and_then(|r| r.1).as_deref(),
        Some("completed")
    );
}

/// A stream that starts while the database is away runs (unconfirmed), and its live mark,
/// which failed, is written once the database is back: the call keeps holding its lease after
/// its binding's `expires_at`, so the fleet does not admit one call too many over MAX_CALLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_mark_that_failed_is_written_once_the_database_is_back() {
    let pg = TestPostgres::start();
    let url = pg.default_url();
    let a = replica(&url, "a", &[]).await;
    let call = sid(0xb2);
    let path = stream_path_of(&voice(&a, &call).await.text());
    assert_eq!(
        row(&url, &call).await.map(|r| r.0).as_deref(),
        Some("pending")
    );
    pg.stop();
    let _twilio = open_stream_at(&a, &path, &start_message(&call)).await;
    let _agent = a.agent.next_conn(T).await;
    eventually("live on A", || a.app.calls.is_live(&call)).await;
    pg.start_server();
    row_becomes(&url, &call, "live", Duration::from_secs(20)).await;
    assert_eq!(
        row(&url, &call).await.and_then(|r| r.2).as_deref(),
        Some("a")
    );
}

/// Pruning forgets the claimed or live calls of a replica gone longer than the retention (its
/// process killed, or scaled away: nobody will write their end) and keeps those of a replica
/// seen within it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_forgets_the_calls_of_a_replica_gone_for_good() {
    let pg = TestPostgres::start();
    let url = pg.default_url();
    let _a = replica(&url, "a", &[]).await;
    let (gone, recent) = (sid(0x71), sid(0x72));
    ghost_call(&url, "gone", &gone, "2 days", 0x71).await;
    ghost_call(&url, "recent", &recent, "1 hour", 0x72).await;
    let keep = ignis::fleet::FLEET_RETENTION.as_secs_f64();
    test_db(&url)
        .client()
        .await
        .unwrap()
        .execute(ignis::fleet::sql::PRUNE, &[&keep])
        .await
        .unwrap();
    assert_eq!(row(&url, &gone).await, None);
    assert_eq!(
        row(&url, &recent).await.map(|r| r.0).as_deref(),
        Some("live")
    );
}
