//! The staff page in a real headless Chromium (issue 14 point 6): the real server with a
//! practice store in a temp dir, a staff account made by the real `ignis staff add` binary on
//! the same database while the server runs, and `tests/browser/staff.mjs` (Playwright driving
//! Debian's `/usr/bin/chromium`). The two coordinate in lines over node's stdin/stdout: once the
//! page is open, this side runs a call through the real Twilio webhook and the real tool
//! endpoints with that call's token (a booking, a prescription request, an emergency), and the
//! browser waits for all three to appear on the open pages without a reload; then mark done,
//! reload, closing the booked day with the page's form (the agent's slot tool then offers
//! nothing on it) and opening it again, a POST without the CSRF token, logout, and the security
//! headers in the browser's response objects. Screenshots go to `target/staff-screenshots/`.
//!
//! node, npm's `playwright-core` (tests/browser/package-lock.json) and chromium must be there:
//! `.ci/test` installs them. Without them this test fails (a skipped test would count as passed).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use common::fake_twilio::TwilioCall;
use common::scratch::TempDir;
use common::*;
use ignis::practice::demo::{DEMO_BOOKING_SCRIPT, DEMO_CALLER_NUMBER};
use ignis::twilio::signature;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

const TOOLS_TOKEN: &str = "tools-secret-browser-0123456";
const STAFF_USER: &str = "anna";
const STAFF_PASSWORD: &str = "Korrekt-Pferd-Batterie-7";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Generous: the whole browser run (Chromium start, logins with argon2id, 15 s waits).
const NODE_LINE_TIMEOUT: Duration = Duration::from_secs(90);
const T: Duration = Duration::from_secs(10);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails (never skips) when a tool is missing, naming `.ci/test`.
fn require_tools() {
    let missing = |what: &str| -> ! {
        panic!(
            "{what} is missing: run `.ci/test` (installs chromium, nodejs and npm from Debian and \
             runs `npm ci --prefix tests/browser`), then this test again"
        )
    };
    if !Path::new(CHROMIUM).is_file() {
        missing("chromium (/usr/bin/chromium)");
    }
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        missing("node");
    }
    if !repo()
        .join("tests/browser/node_modules/playwright-core/package.json")
        .is_file()
    {
        missing("tests/browser/node_modules/playwright-core");
    }
}

/// `ignis staff add NAME` through the real binary on `db`, the password on stdin.
fn staff_add(dir: &Path, db: &Path) {
    let password = format!("{STAFF_PASSWORD}\n");
    let out = ignis_on_db(
        dir,
        db,
        TOOLS_TOKEN,
        &["staff", "add", STAFF_USER],
        &password,
    );
    assert!(
        out.status.success(),
        "ignis staff add: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The node side: its stdin, its stdout lines (echoed to the test output), the process.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Browser {
    fn start(url: &str, shots: &Path) -> Browser {
        let mut child = Command::new("node")
            .arg(repo().join("tests/browser/staff.mjs"))
            .env("STAFF_URL", url)
            .env("STAFF_USER", STAFF_USER)
            .env("STAFF_PASSWORD", STAFF_PASSWORD)
            .env("SCREENSHOT_DIR", shots)
            .env("CHROMIUM", CHROMIUM)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node ({e}): run `.ci/test`"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Browser {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one starts with `prefix` (returned); a `FAIL` line fails the test.
    async fn wait_for(&mut self, prefix: &str) -> String {
        loop {
            let line = tokio::time::timeout(NODE_LINE_TIMEOUT, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no `{prefix}` from the browser: {:?}", self.seen))
                .unwrap_or_else(|| panic!("the browser ended before `{prefix}`: {:?}", self.seen));
            println!("browser: {line}");
            self.seen.push(line.clone());
            assert!(!line.starts_with("FAIL"), "browser: {line}");
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A tool request as the agent sends it during the call (the call's token, the agent secret).
fn tool(method: &str, path: &str, query: &str, body: &str, call: &str) -> Vec<u8> {
    let target = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    format!(
        "{method} {target} HTTP/1.1\r\nHost: ignis\r\nAuthorization: Bearer {TOOLS_TOKEN}\r\n\
         X-Ignis-Call: {call}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n\
         {body}",
        body.len()
    )
    .into_bytes()
}

async fn tool_ok(server: &Server, req: &[u8], what: &str) -> serde_json::Value {
    let r = roundtrip(server, req).await;
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["ok"], true, "{what}: {v}");
    v
}

/// A call from the demo patient: the signed voice webhook (PUBLIC_URL is the loopback
/// address here), the agent's token, the caller's stream. Returns the token and the stream.
async fn start_call(server: &Server, sid: &str) -> (String, TwilioCall) {
    let public = format!("http://{}", server.addr);
    let mut params = call_params(sid);
    for (k, v) in params.iter_mut() {
        if k == "From" {
            *v = DEMO_CALLER_NUMBER.into();
        }
    }
    let path = "/api/twilio/voice";
    let sig = signature::sign(TOKEN, &format!("{public}{path}"), &params);
    let body = urlencode(&params);
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         X-Twilio-Signature: {sig}\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    let r = roundtrip(server, req.as_bytes()).await;
    assert_eq!(r.status, 200, "voice webhook: {}", r.text());
    let stream = stream_path_of(&r.text());
    let agent = server.agent.next_conn(T).await;
    let token = agent.initiation["dynamic_variables"]["secret__ignis_call"]
        .as_str()
        .unwrap()
        .to_owned();
    let ws_sig = signature::sign(TOKEN, &format!("ws://{}{stream}", server.addr), &[]);
    let head = stream_handshake(&stream, Some(&ws_sig), "");
    let ws = upgrade(
        server.connect().await,
        head.into_bytes(),
        &start_message(sid),
    )
    .await;
    (token, TwilioCall::over(ws, sid))
}

#[tokio::test]
async fn staff_page_in_headless_chromium() {
    require_tools();
    let dir = TempDir::new("staff-browser");
    let db = dir.join("ignis.db");
    let server = Server::start_public_loopback_with_practice_db(&db, TOOLS_TOKEN).await;
    // The binary shares the SQLite file with the running server (WAL, busy timeout).
    let (d, b) = (dir.to_path_buf(), db.clone());
    tokio::task::spawn_blocking(move || staff_add(&d, &b))
        .await
        .unwrap();

    let shots = repo().join("target/staff-screenshots");
    let _ = std::fs::remove_file(shots.join("failure.png"));
    let mut browser = Browser::start(&format!("http://{}", server.addr), &shots);
    browser.wait_for("READY logged-in").await;

    // The call starts; the agent identifies the caller and looks for slots; the browser opens
    // the day the first slot is on next to today.
    let sid = "CA0000000000000000000000000000b001";
    let (token, mut caller) = start_call(&server, sid).await;
    let [identify, slots, book, ..] = &DEMO_BOOKING_SCRIPT;
    for step in [identify, slots] {
        let v = tool_ok(
            &server,
            &tool(step.method, step.path, step.query, step.body, &token),
            step.what,
        )
        .await;
        if step.path == slots.path {
            let start = v["slots"][0]["start"].as_str().expect("a free slot");
            browser.send(&format!("DAY {}", &start[..10]));
        }
    }
    browser.wait_for("READY page-open").await;

    // Book S1, file a prescription request, report an emergency.
    tool_ok(
        &server,
        &tool(book.method, book.path, "", book.body, &token),
        book.what,
    )
    .await;
    let meds = r#"{"medications":[{"name":"Ramipril","strength":"5 mg","amount":"N3"}]}"#;
    let request =
        format!(r#"{{"category":"prescription_refill","patient_ref":"P1","details":{meds}}}"#);
    tool_ok(
        &server,
        &tool("POST", "/api/requests", "", &request, &token),
        "prescription",
    )
    .await;
    let emergency =
        r#"{"severity":"life_threatening","keywords":"Brustschmerzen","patient_ref":"P1"}"#;
    tool_ok(
        &server,
        &tool("POST", "/api/emergencies", "", emergency, &token),
        "emergency",
    )
    .await;
    let sent = Instant::now();
    browser.send("CALL-DONE");
    let appeared = browser.wait_for("APPEARED").await;
    println!(
        "the three items appeared {:?} after the last tool call ({appeared})",
        sent.elapsed()
    );
    for step in ["SCREENSHOT", "DONE persisted", "OUTAGE page kept"] {
        browser.wait_for(step).await;
    }
    // The day closed on the page: the agent's slot tool offers nothing on it, then, opened
    // again, its free slots (docs/practice-tools.md §2.7).
    let closed = browser.wait_for("CLOSED").await;
    let day = closed.trim_start_matches("CLOSED").trim().to_owned();
    let slots_on_day = async |server: &Server| -> usize {
        let query = format!("{}&earliest={day}&latest={day}", slots.query);
        let req = tool(slots.method, slots.path, &query, "", &token);
        let r = roundtrip(server, &req).await;
        assert_eq!(r.status, 200, "slots: {}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["slots"].as_array().map_or(0, |s| {
            s.iter()
                .filter(|x| x["start"].as_str().is_some_and(|t| t.starts_with(&day)))
                .count()
        })
    };
    assert_eq!(
        slots_on_day(&server).await,
        0,
        "slots offered on {day}, closed"
    );
    browser.send("AGENT-SAW-CLOSED");
    browser.wait_for("REOPENED").await;
    assert!(
        slots_on_day(&server).await > 0,
        "no slots on {day} after reopening"
    );
    browser.send("AGENT-SAW-OPEN");
    for step in ["CSRF refused 403", "LOGOUT", "PASS"] {
        browser.wait_for(step).await;
    }
    let status = tokio::task::spawn_blocking(move || {
        let mut b = browser;
        b.child.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "node exited with {status}");
    for name in ["login", "day-page", "appointments", "after-done", "closed"] {
        assert!(shots.join(format!("{name}.png")).is_file(), "{name}.png");
    }
    caller.hang_up();
    let _ = caller.closed(T).await;
}
