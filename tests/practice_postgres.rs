//! The practice on PostgreSQL as the server runs it (`Practice::open_postgres`: several store
//! workers on one pool; docs/replicas.md §3): a call's first tool request right after its
//! registration, one call's concurrent requests serialised, the hourly identification budget
//! held by many calls failing at once, the database restarted under the tools, a stream
//! adopted from another replica, and `ignis staff` with `DATABASE_URL`.

#[path = "practice_support/backend.rs"]
mod backend;
mod common;
mod practice_support;

use std::time::Duration;

use backend::{Kind, TestDb};
use crossbeam_channel::{Receiver, bounded};
use ignis::practice::calls::CallInfo;
use ignis::practice::config::PracticeConfig;
use ignis::practice::store::{PG_STORE_WORKERS, StoreThread};
use ignis::practice::tools::ToolReply;
use ignis::practice::tools::error::UNAVAILABLE_MESSAGE;
use ignis::practice::{Practice, PracticeSettings};
use practice_support::{TOOLS_TOKEN, WEBER_PHONE, wed_morning};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const IDENTIFY: &str = "/api/patients/identify";
const SLOTS: &str = "/api/appointments/slots";

fn open(db: &TestDb) -> (Practice, StoreThread) {
    let settings = PracticeSettings::from_lookup(|k| match k {
        "TOOLS_TOKEN" => Some(TOOLS_TOKEN.into()),
        _ => None,
    })
    .unwrap();
    Practice::open_postgres(
        &settings,
        PracticeConfig::demo(),
        db.database(),
        wed_morning(),
    )
    .unwrap()
}

/// Queues a tool request; the receiver gets the reply.
fn submit(p: &Practice, token: &str, method: &str, path: &str, body: &str) -> Receiver<ToolReply> {
    practice_support::submit_tool(p, token, (method, path), body, wed_morning())
}

fn tool(p: &Practice, token: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let r = submit(p, token, method, path, body)
        .recv_timeout(WAIT)
        .expect("a reply");
    (r.status, r.body_json())
}

fn info(sid: &str) -> CallInfo<'_> {
    CallInfo {
        call_sid: sid,
        caller_number: WEBER_PHONE,
        called_number: "+4930123456",
    }
}

/// Registers a call from `caller` and waits for the commit; returns its token.
fn start_from(p: &Practice, sid: &str, caller: &str, seed: u8) -> String {
    let vars = practice_support::start_practice_call(p, (sid, caller), seed, wed_morning());
    vars["secret__ignis_call"].as_str().unwrap().to_owned()
}

/// [`start_from`] Maria Weber's number.
fn start(p: &Practice, sid: &str, seed: u8) -> String {
    start_from(p, sid, WEBER_PHONE, seed)
}

const WEBER: &str = r#"{"family_name":"Weber","birth_date":"1972-08-22"}"#;
const WRONG_DOB: &str = r#"{"family_name":"Weber","birth_date":"1972-08-23"}"#;

/// The token goes to the agent before the registration commits, and several workers take
/// jobs: a tool request made at once still finds its call (it waits for the registration).
#[test]
fn a_tool_request_right_after_start_call_finds_the_call() {
    let db = TestDb::new(Kind::Postgres, "pg-start-order");
    let (p, thread) = open(&db);
    for i in 0..20u8 {
        let sid = format!("CAorder{i:02}");
        let vars = p
            .start_call(info(&sid), [i; 16], wed_morning(), |r| r.unwrap())
            .unwrap();
        let token = vars["secret__ignis_call"].as_str().unwrap();
        let (s, v) = tool(&p, token, "POST", IDENTIFY, WEBER);
        assert_eq!((s, v["match"].as_str()), (200, Some("unique")), "{i}: {v}");
    }
    drop(p);
    thread.join().unwrap();
}

/// One call's requests run one at a time whichever worker takes them (docs/replicas.md §3):
/// eight failed identifications sent at once are counted one by one, so exactly three are
/// answered before the call locks (a lost update would answer more).
#[test]
fn one_calls_concurrent_requests_serialise() {
    let db = TestDb::new(Kind::Postgres, "pg-serialise");
    let (p, thread) = open(&db);
    // Every worker connected first, so the eight run side by side.
    let warm = start(&p, "CAwarm", 9);
    let warming: Vec<_> = (0..4 * PG_STORE_WORKERS)
        .map(|_| submit(&p, &warm, "GET", &format!("{SLOTS}?visit_type=akut"), ""))
        .collect();
    for rx in warming {
        assert_eq!(rx.recv_timeout(WAIT).unwrap().status, 200);
    }
    let t = start(&p, "CAser", 1);
    let pending: Vec<_> = (0..8)
        .map(|_| submit(&p, &t, "POST", IDENTIFY, WRONG_DOB))
        .collect();
    let mut left: Vec<u64> = Vec::new();
    for rx in pending {
        let v = rx.recv_timeout(WAIT).unwrap().body_json();
        if v["match"] == "none" {
            left.push(v["attempts_left"].as_u64().unwrap());
        } else {
            assert_eq!(v["error"], "locked", "{v}");
        }
    }
    left.sort_unstable();
    assert_eq!(left, [0, 1, 2]);
    drop(p);
    thread.join().unwrap();
}

/// The practice-wide budget of failed identifications holds across workers (and so across
/// replicas): failures from many calls at once are counted one by one, so exactly the budget's
/// worth are answered and the rest are paused. Each check read the sum before the failures of
/// the jobs beside it were written, and four workers answered up to four more.
#[test]
fn concurrent_failures_of_many_calls_stay_within_the_hourly_budget() {
    const BUDGET: usize = 3;
    const CALLS: usize = 12;
    let db = TestDb::new(Kind::Postgres, "pg-budget");
    let settings = PracticeSettings::from_lookup(|k| match k {
        "TOOLS_TOKEN" => Some(TOOLS_TOKEN.into()),
        "IDENTIFICATION_FAILURES_PER_HOUR" => Some(BUDGET.to_string()),
        _ => None,
    })
    .unwrap();
    let (p, thread) = Practice::open_postgres(
        &settings,
        PracticeConfig::demo(),
        db.database(),
        wed_morning(),
    )
    .unwrap();
    // Calls from different numbers (the per-number cap stays out of the way), registered
    // first, and every worker connected, so the failures run side by side.
    let numbers: Vec<String> = (0..CALLS).map(|i| format!("+4915112345{i:03}")).collect();
    let tokens: Vec<String> = numbers
        .iter()
        .enumerate()
        .map(|(i, number)| start_from(&p, &format!("CAbudget{i:02}"), number, i as u8))
        .collect();
    let warming: Vec<_> = (0..4 * PG_STORE_WORKERS)
        .map(|i| {
            submit(
                &p,
                &tokens[i % CALLS],
                "GET",
                &format!("{SLOTS}?visit_type=akut"),
                "",
            )
        })
        .collect();
    for rx in warming {
        assert_eq!(rx.recv_timeout(WAIT).unwrap().status, 200);
    }
    let pending: Vec<_> = tokens
        .iter()
        .map(|t| submit(&p, t, "POST", IDENTIFY, WRONG_DOB))
        .collect();
    let (mut answered, mut paused) = (0, 0);
    for rx in pending {
        let v = rx.recv_timeout(WAIT).unwrap().body_json();
        if v["match"] == "none" {
            answered += 1;
        } else {
            assert_eq!(v["error"], "identification_paused", "{v}");
            paused += 1;
        }
    }
    assert_eq!((answered, paused), (BUDGET, CALLS - BUDGET));
    drop(p);
    thread.join().unwrap();
}

/// A session stuck holding the identifications' lock (a replica cut off mid-job) costs an
/// identification about `IDENTIFICATION_LOCK_WAIT` and an "unavailable" answer, not a store
/// worker parked for `lock_timeout`; once the lock is free they work again.
#[test]
fn a_stuck_identification_lock_is_waited_for_briefly() {
    use ignis::practice::store::postgres::{IDENTIFICATION_LOCK_KEY, IDENTIFICATION_LOCK_WAIT};
    let db = TestDb::new(Kind::Postgres, "pg-id-lock");
    let (p, thread) = open(&db);
    let t = start(&p, "CAstuck", 3);
    let pool = db.database();
    let holder = pool.block_on(pool.client()).unwrap();
    let lock = |sql: &'static str| {
        pool.block_on(holder.execute(sql, &[&IDENTIFICATION_LOCK_KEY]))
            .unwrap();
    };
    lock("SELECT pg_advisory_lock($1)");
    let asked = std::time::Instant::now();
    let (s, v) = tool(&p, &t, "POST", IDENTIFY, WEBER);
    let waited = asked.elapsed();
    assert_eq!((s, v["error"].as_str()), (503, Some("unavailable")), "{v}");
    // Waited for it (not refused at once), and gave up before the sessions' 5 s lock_timeout
    // (src/pg.rs), which is what the old code waited out.
    assert!(
        waited >= IDENTIFICATION_LOCK_WAIT && waited < Duration::from_millis(4500),
        "{waited:?}"
    );
    lock("SELECT pg_advisory_unlock($1)");
    let (s, v) = tool(&p, &t, "POST", IDENTIFY, WEBER);
    assert_eq!((s, v["match"].as_str()), (200, Some("unique")), "{v}");
    drop(holder);
    drop(p);
    thread.join().unwrap();
}

/// Issue 15: PostgreSQL down → tool requests answer 503 `unavailable` with words the agent
/// can say; once it is back they work again (each worker's dead connection fails at most
/// once, then the pool reconnects).
#[test]
fn tools_say_unavailable_while_the_database_is_down_and_recover() {
    let db = TestDb::postgres_alone("pg-down");
    let (p, thread) = open(&db);
    let t = start(&p, "CAdown", 2);
    assert_eq!(
        tool(&p, &t, "GET", &format!("{SLOTS}?visit_type=akut"), "").0,
        200
    );
    db.server().stop();
    let (s, v) = tool(&p, &t, "POST", IDENTIFY, WEBER);
    assert_eq!((s, v["error"].as_str()), (503, Some("unavailable")), "{v}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["message"], UNAVAILABLE_MESSAGE);
    db.server().start_server();
    let mut failures = 0;
    let mut ok = 0;
    for _ in 0..(2 * PG_STORE_WORKERS + 4) {
        let (s, v) = tool(&p, &t, "GET", &format!("{SLOTS}?visit_type=akut"), "");
        match s {
            200 => ok += 1,
            _ => {
                assert_eq!((s, v["error"].as_str()), (503, Some("unavailable")), "{v}");
                failures += 1;
            }
        }
    }
    assert!(
        failures <= PG_STORE_WORKERS,
        "{failures} failures after the restart"
    );
    assert!(ok >= PG_STORE_WORKERS, "works again");
    drop(p);
    thread.join().unwrap();
}

/// A call that ends while PostgreSQL is down is not left "running": its end is kept and written
/// with the next call's end once the database is back, at the time the call ended.
#[test]
fn a_call_end_during_an_outage_is_written_with_the_next_end() {
    use ignis::practice::store::{CallEnd, CallOutcome};
    let db = TestDb::postgres_alone("pg-end-outage");
    let (p, thread) = open(&db);
    start(&p, "CAendA", 5);
    start(&p, "CAendB", 6);
    let end = |ms| CallEnd {
        outcome: CallOutcome::Completed,
        first_audio_ms: Some(ms),
    };
    let ended_a = wed_morning();
    db.server().stop();
    p.end_call("CAendA", end(501), ended_a);
    // The end's job fails within the pool's bounds (POOL_WAIT, CONNECT_TIMEOUT).
    std::thread::sleep(Duration::from_secs(6));
    db.server().start_server();
    let a_ended = || {
        p.store()
            .call_blocking(|s| s.staff_calls(0, i64::MAX, 10))
            .ok()
            .and_then(Result::ok)
            .and_then(|calls| {
                calls
                    .into_iter()
                    .find(|c| c.first_audio_ms == Some(501))
                    .and_then(|c| c.ended_at)
            })
    };
    let mut found = None;
    // Each end writes the kept ones first; a worker's first operation after the restart may
    // fail once (its connection died with the server), so a few ends may be needed.
    for _ in 0..(2 * PG_STORE_WORKERS + 4) {
        p.end_call("CAendB", end(777), wed_morning());
        std::thread::sleep(Duration::from_millis(300));
        found = a_ended();
        if found.is_some() {
            break;
        }
    }
    assert_eq!(found, Some(ended_a.as_second()), "A's end, at its own time");
    drop(p);
    thread.join().unwrap();
}

/// A stream that takes a call over from another replica (docs/replicas.md §4.2): the old
/// agent's token stops working at once on every replica, the call keeps its refs.
#[test]
fn adopt_call_retires_the_other_replicas_token() {
    let db = TestDb::new(Kind::Postgres, "pg-adopt");
    let (owner, owner_thread) = open(&db);
    let old = start(&owner, "CAadopt", 3);
    let (s, v) = tool(&owner, &old, "POST", IDENTIFY, WEBER);
    assert_eq!((s, v["patient_ref"].as_str()), (200, Some("P1")), "{v}");
    // The replica whose stream took the call.
    let (other, other_thread) = open(&db);
    let (tx, rx) = bounded(1);
    let vars = other
        .adopt_call(info("CAadopt"), [4; 16], wed_morning(), move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
    rx.recv_timeout(WAIT).unwrap().unwrap();
    let new = vars["secret__ignis_call"].as_str().unwrap();
    for p in [&owner, &other] {
        let (s, v) = tool(p, &old, "GET", &format!("{SLOTS}?visit_type=akut"), "");
        assert_eq!((s, v["error"].as_str()), (403, Some("call_not_active")));
    }
    // The refs minted before the takeover still resolve for the new agent.
    let body = r#"{"category":"callback","patient_ref":"P1","callback_number":"+491701234567"}"#;
    let (s, v) = tool(&owner, new, "POST", "/api/requests", body);
    assert_eq!((s, v["ok"].as_bool()), (200, Some(true)), "{v}");
    drop((owner, other));
    owner_thread.join().unwrap();
    other_thread.join().unwrap();
}

/// `ignis staff add/list/remove` with `DATABASE_URL` keep the accounts in PostgreSQL.
#[test]
fn staff_commands_work_on_postgres() {
    let db = TestDb::new(Kind::Postgres, "pg-staff-cli");
    let url = db.url();
    let env = [("DATABASE_URL", url.as_str()), ("TOOLS_TOKEN", TOOLS_TOKEN)];
    let run = |args: &[&str], stdin: &str| common::ignis_with_env(db.dir(), &env, args, stdin);
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let added = run(&["staff", "add", "anna"], "Korrekt-Pferd-Batterie-7\n");
    assert!(added.status.success(), "{}", text(&added));
    assert!(!text(&added).contains("postgres@"), "no URL in the output");
    let listed = run(&["staff", "list"], "");
    assert!(text(&listed).contains("anna"), "{}", text(&listed));
    // It is in the database, not in a SQLite file.
    assert_eq!(
        db.value("SELECT COUNT(*) FROM staff_user WHERE name = 'anna'", &[]),
        1
    );
    assert!(!db.dir().join("ignis.db").exists());
    let removed = run(&["staff", "remove", "anna"], "");
    assert!(removed.status.success(), "{}", text(&removed));
    assert_eq!(db.value("SELECT COUNT(*) FROM staff_user", &[]), 0);
}

/// A tool job whose session dies after `live_call` took the call's lock (the database restarted,
/// the replica's network dropped) fails its remaining operations as "unavailable": reconnecting
/// would run them without the lock, where another request of the call could interleave and
/// lose an update (docs/replicas.md, "Database unavailable"). The next job works again.
#[test]
fn a_job_that_lost_its_call_lock_fails_instead_of_running_unlocked() {
    use ignis::practice::calls::CallState;
    use ignis::practice::store::{PgStore, Store};
    let db = TestDb::new(Kind::Postgres, "pg-lost-lock");
    let mut store = PgStore::open(db.database()).unwrap();
    let hash = [7u8; 32];
    let now = wed_morning().as_second();
    store
        .start_call(
            "CA0000000000000000000000000000d001",
            &hash,
            WEBER_PHONE,
            "+4930123456",
            now,
        )
        .unwrap();
    let call = store.live_call(&hash, now).unwrap().expect("a live call");

    // Another session ends the one holding the call's lock.
    let call_lock_class = i64::from(ignis::practice::store::postgres::CALL_LOCK_CLASS);
    let pool = db.database();
    let killed: i64 = pool.block_on(async {
        let c = pool.client().await.unwrap();
        let row = c
            .query_one(
                // This test's database only (the server is shared by the file's tests), and the
                // two-key form of the call lock (CALL_LOCK_CLASS, id).
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks
                 WHERE locktype = 'advisory' AND objsubid = 2 AND classid::bigint = $1
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND pid <> pg_backend_pid()",
                &[&call_lock_class],
            )
            .await
            .unwrap();
        row.get(0)
    });
    assert_eq!(killed, 1, "one session held the call's lock");

    let state = CallState {
        requests: 1,
        ..CallState::default()
    };
    // Every further operation of the job fails, however soon the loss was noticed (the first
    // one may fail on the dead socket; the old code then reconnected for the second).
    for _ in 0..2 {
        let err = store.save_call_state(call.id, &state).unwrap_err();
        assert!(err.is_unavailable(), "{err}");
    }
    // The audit row needs no lock: the tool's answer goes out and is audited.
    store
        .audit(now, Some(call.id), "identify_patient", "ok")
        .unwrap();
    store.end_job();
    // Nothing was written unlocked, and the next job of the call runs as usual.
    let again = store.live_call(&hash, now).unwrap().expect("a live call");
    assert_eq!(again.state.requests, 0);
    store.save_call_state(again.id, &state).unwrap();
    store.end_job();
}

/// Retention deletes a patient created by phone long ago with nothing attached. A request
/// naming that patient, committed by another replica while retention waits on the patient's
/// row, keeps its patient: retention decides on the rows it has locked with a fresh look, not
/// on what its first snapshot saw (before, the request lost its patient to `ON DELETE SET
/// NULL`: a request naming nobody).
#[test]
fn retention_keeps_a_patient_a_concurrent_request_names() {
    use ignis::practice::store::RetentionPolicy;
    let db = TestDb::new(Kind::Postgres, "pg-orphan-race");
    let mut store = db.store();
    let now = wed_morning().as_second();
    let policy = RetentionPolicy::default();
    let old = now - policy.orphan_patient - 3600;
    db.exec(
        "INSERT INTO patient (family, given, family_norm, given_norm, birth_date, created_via,
           created_at) VALUES ('Alt', 'Anna', 'alt', 'anna', '1950-01-01', 'phone', $1)",
        &[old],
    );
    let patient = db.value("SELECT id FROM patient WHERE family = 'Alt'", &[]);
    // Another replica files a request naming the patient and has not committed yet.
    let pool = db.database();
    let mut other = pool.block_on(pool.client()).unwrap();
    let tx = pool.block_on(other.transaction()).unwrap();
    pool.block_on(tx.execute(
        "INSERT INTO request (ref_code, category, patient_id, details_json, urgency, created_at)
         VALUES ('R-9001', 'callback', $1, '{}', 'routine', $2)",
        &[&patient, &now],
    ))
    .unwrap();
    let retention = std::thread::spawn(move || store.retention(&policy, now).map(|r| r.patients));
    std::thread::sleep(Duration::from_millis(500));
    pool.block_on(tx.commit()).unwrap();
    drop(other);
    let deleted = retention.join().unwrap().expect("retention ran");
    assert_eq!(deleted, 0, "the patient a request names was deleted");
    assert_eq!(
        db.value(
            "SELECT patient_id FROM request WHERE ref_code = 'R-9001'",
            &[]
        ),
        patient
    );
}
