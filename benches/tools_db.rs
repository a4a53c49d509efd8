//! Tool request latency through the store (issue 15, point 7): the in-process server with the
//! demo practice on SQLite, then on PostgreSQL (a throwaway server on loopback, default
//! durability), and `--calls` concurrent "calls" (100) each making the requests an agent makes
//! (identify, find slots, book, find slots again, a request for the team, identify again) over
//! HTTP keep-alive on loopback, one at a time per call, for `--waves` rounds (4; the first is a
//! warm-up and not counted). Between two requests a call "talks" for `--think-ms` (1000,
//! ±50 %, as an agent's turns are seconds apart; 0 = back to back, a saturation test). Prints
//! p50/p90/p99/max per backend, overall and per tool, side by side.
//!
//! ```text
//! cargo bench --bench tools_db -- --calls 100 --waves 4 --think-ms 1000
//! ```

// The tests' PostgreSQL harness, started with a production server's durability, and the scratch
// directory it (and this bench) removes on drop.
#[path = "../tests/common/postgres.rs"]
mod pg;
#[path = "../tests/common/scratch.rs"]
mod scratch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ignis::config::Config;
use ignis::pg::{Database, DatabaseUrl, MAX_POOL_SIZE};
use ignis::practice::calls::CallInfo;
use ignis::practice::config::PracticeConfig;
use ignis::practice::store::StoreThread;
use ignis::practice::{Practice, PracticeSettings};
use ignis::routes::App;
use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOOLS_TOKEN: &str = "bench-tools-secret-0123456789";

struct Args {
    calls: usize,
    waves: usize,
    think_ms: u64,
}

fn args() -> Args {
    let mut a = Args {
        calls: 100,
        waves: 4,
        think_ms: 1000,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).and_then(|v| v.parse::<usize>().ok());
        match (argv[i].as_str(), v) {
            ("--calls", Some(n)) => a.calls = n.max(1),
            ("--waves", Some(n)) => a.waves = n.max(2),
            ("--think-ms", Some(n)) => a.think_ms = n as u64,
            _ => {
                i += 1; // `--bench` and friends from cargo
                continue;
            }
        }
        i += 2;
    }
    a
}

/// One measured request: the tool, its status and its latency in microseconds.
type Sample = (&'static str, u16, u64);

enum Backend {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

fn settings(db_path: &std::path::Path) -> PracticeSettings {
    let db = db_path.display().to_string();
    PracticeSettings::from_lookup(|k| match k {
        "TOOLS_TOKEN" => Some(TOOLS_TOKEN.into()),
        "IGNIS_DB" => Some(db.clone()),
        _ => None,
    })
    .unwrap()
}

fn config() -> Config {
    let vars: std::collections::HashMap<String, String> = [
        ("PUBLIC_URL", "https://ignis.example.com"),
        ("TWILIO_AUTH_TOKEN", "ignis-bench-token"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Config::from_vars(&vars, false).unwrap()
}

/// Opens the practice on `backend` (from this plain thread: the PostgreSQL store blocks on
/// the server runtime).
fn open(backend: &Backend, rt: &tokio::runtime::Runtime) -> (Practice, StoreThread) {
    let now = Timestamp::now();
    match backend {
        Backend::Sqlite(path) => {
            Practice::open(&settings(path), PracticeConfig::demo(), now).unwrap()
        }
        Backend::Postgres(url) => {
            let url = DatabaseUrl::parse(url).unwrap();
            let db = Database::new(&url, MAX_POOL_SIZE, rt.handle().clone()).unwrap();
            let s = settings(std::path::Path::new("unused.db"));
            Practice::open_postgres(&s, PracticeConfig::demo(), &db, now).unwrap()
        }
    }
}

/// One HTTP/1.1 request on a keep-alive connection; the status and the body.
async fn request(
    conn: &mut TcpStream,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, String) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOOLS_TOKEN}\r\n\
         X-Ignis-Call: {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let (head_end, length) = loop {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (at + 4, length);
        }
    };
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = String::from_utf8_lossy(&buf[9..12]).parse().unwrap_or(0);
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    (status, body)
}

fn field(body: &str, name: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get(name)?.as_str().map(str::to_owned)
}

/// One call: registered with the practice, then the agent's requests one after another.
async fn one_call(
    practice: Practice,
    addr: std::net::SocketAddr,
    (n, wave, think_ms): (usize, usize, u64),
) -> Vec<Sample> {
    // Calls start spread over one think time, and pause 50–150 % of it between requests
    // (a fixed pseudo-random sequence per call, so both backends see the same pacing).
    let mut seed = (n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ wave as u64;
    let mut pause = move |scale: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        Duration::from_millis(think_ms * scale / 100 + seed % (think_ms + 1))
    };
    tokio::time::sleep(pause(0)).await;
    let sid = format!("CAbench{wave:02}{n:05}");
    let number = format!("+49170{wave:02}{n:05}");
    let mut entropy = [0u8; 16];
    entropy[..8].copy_from_slice(&(n as u64).to_le_bytes());
    entropy[8..12].copy_from_slice(&(wave as u32).to_le_bytes());
    entropy[12..].copy_from_slice(&std::process::id().to_le_bytes());
    let info = CallInfo {
        call_sid: &sid,
        caller_number: &number,
        called_number: "+4930123456",
    };
    let vars = practice
        .start_call(info, entropy, Timestamp::now(), |r| {
            if let Err(e) = r {
                eprintln!("registration failed: {e}");
            }
        })
        .unwrap();
    let token = vars["secret__ignis_call"].as_str().unwrap().to_owned();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.set_nodelay(true).unwrap();
    let config = PracticeConfig::demo();
    let today = ignis::practice::calendar::local(&config, Timestamp::now()).date;
    let earliest = ignis::practice::calendar::add_days(today, (n % 10) as i64 + 1);
    let identify = r#"{"family_name":"Weber","birth_date":"1972-08-22"}"#;
    let slots_path = format!("/api/appointments/slots?visit_type=kontrolle&earliest={earliest}");
    let mut out = Vec::new();
    let mut timed = async |tool: &'static str, method: &str, path: &str, body: &str| {
        tokio::time::sleep(pause(50)).await;
        let started = Instant::now();
        let (status, reply) = request(&mut conn, method, path, &token, body).await;
        out.push((tool, status, started.elapsed().as_micros() as u64));
        reply
    };
    let patient = field(
        &timed("identify", "POST", "/api/patients/identify", identify).await,
        "patient_ref",
    );
    let slots = timed("find_slots", "GET", &slots_path, "").await;
    let slot = serde_json::from_str::<serde_json::Value>(&slots)
        .ok()
        .and_then(|v| v["slots"][n % 3]["slot_ref"].as_str().map(str::to_owned));
    if let (Some(p), Some(s)) = (&patient, &slot) {
        let body = format!(
            r#"{{"slot_ref":"{s}","patient_ref":"{p}","visit_type":"kontrolle","reason_short":"Kontrolle"}}"#
        );
        timed("book", "POST", "/api/appointments", &body).await;
    }
    timed("find_slots", "GET", &slots_path, "").await;
    let request_body = format!(
        r#"{{"category":"callback","patient_ref":"{}","callback_number":"{number}"}}"#,
        patient.as_deref().unwrap_or("P1")
    );
    timed("create_request", "POST", "/api/requests", &request_body).await;
    timed("identify", "POST", "/api/patients/identify", identify).await;
    out
}

/// Runs the waves against `backend`; the samples of the measured waves.
fn run(backend: Backend, a: &Args) -> Vec<Sample> {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (practice, thread) = open(&backend, &server_rt);
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Arc::new(App::with_practice(config(), practice.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = server_rt.spawn(ignis::driver::serve(listener, app, async {
        let _ = stopped.await;
    }));
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut samples = Vec::new();
    for wave in 0..a.waves {
        let tasks: Vec<_> = (0..a.calls)
            .map(|n| client_rt.spawn(one_call(practice.clone(), addr, (n, wave, a.think_ms))))
            .collect();
        let got: Vec<Sample> = client_rt.block_on(async {
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        });
        if wave > 0 {
            samples.extend(got);
        }
    }
    let _ = stop.send(());
    let _ = server_rt.block_on(server);
    drop(practice);
    server_rt.shutdown_timeout(Duration::from_secs(5));
    let _ = thread.join();
    samples
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn summary(samples: &[Sample], tool: Option<&str>) -> (usize, usize, String) {
    let mut v: Vec<u64> = samples
        .iter()
        .filter(|s| tool.is_none_or(|t| s.0 == t))
        .map(|s| s.2)
        .collect();
    v.sort_unstable();
    let errors = samples
        .iter()
        .filter(|s| tool.is_none_or(|t| s.0 == t) && s.1 != 200)
        .count();
    (
        v.len(),
        errors,
        format!(
            "{:>7.2} {:>7.2} {:>7.2} {:>7.2}",
            pct(&v, 0.5),
            pct(&v, 0.9),
            pct(&v, 0.99),
            pct(&v, 1.0)
        ),
    )
}

fn main() {
    let a = args();
    let dir = scratch::TempDir::new("bench-tools");
    eprintln!("SQLite: {} calls × {} waves …", a.calls, a.waves);
    let sqlite = run(Backend::Sqlite(dir.join("ignis.db")), &a);
    let server = pg::TestPostgres::start_durable();
    eprintln!("PostgreSQL: {} calls × {} waves …", a.calls, a.waves);
    let postgres = run(Backend::Postgres(server.default_url()), &a);
    drop(server);
    drop(dir);

    println!(
        "tool request latency, ms ({} concurrent calls, {} measured waves, {} ms ±50 % between \
         a call's requests, loopback HTTP keep-alive)",
        a.calls,
        a.waves - 1,
        a.think_ms
    );
    println!(
        "{:<15} {:<10} {:>6} {:>6} {:>7} {:>7} {:>7} {:>7}",
        "tool", "backend", "n", "non200", "p50", "p90", "p99", "max"
    );
    let mut tools: BTreeMap<&str, ()> = BTreeMap::new();
    for s in sqlite.iter().chain(&postgres) {
        tools.insert(s.0, ());
    }
    let rows = std::iter::once(None).chain(tools.keys().map(|t| Some(*t)));
    for tool in rows {
        for (name, samples) in [("sqlite", &sqlite), ("postgres", &postgres)] {
            let (n, errors, figures) = summary(samples, tool);
            println!(
                "{:<15} {:<10} {:>6} {:>6} {figures}",
                tool.unwrap_or("all"),
                name,
                n,
                errors
            );
        }
    }
}
