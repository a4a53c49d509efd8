//! Several real `ignis serve` processes in fleet mode (`DATABASE_URL` + `REPLICA_ID`) behind a
//! real nginx running the shipped `deploy/replicas/nginx.conf`, one real PostgreSQL and one
//! in-process stand-in agent for all replicas: the pieces `tests/replicas.rs` uses (issue 15
//! point 6, docs/replicas.md).
//!
//! Only the values the conf marks `[test rewrites]` (replica addresses, listen ports,
//! certificate paths) are rewritten, plus temp paths; a third replica is added by the recipe of
//! deploy/replicas/README.md ([`add_replica`]). Every replica's output and nginx's are kept and
//! printed when a test fails ([`Fleet`]'s `Drop`).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ignis::fleet::LEASE_TTL;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::fake_agent::{AGENT_ID, AgentBehaviour, AgentConn, FakeAgent};
use super::fake_twilio::{TwilioCall, start_json};
use super::nginx::{Nginx, self_signed_cert, temp_paths};
use super::postgres::TestPostgres;
use super::scratch::TempDir;
use super::tls_caller::TlsCaller;
use super::{Resp, TOKEN, call_params, free_port, read_response, stream_path_of, upgrade};

/// `deploy/replicas/nginx.conf` as shipped.
pub const SHIPPED_REPLICAS_CONF: &str = include_str!("../../deploy/replicas/nginx.conf");
/// `deploy/replicas/docker-compose.yml` as shipped.
pub const SHIPPED_REPLICAS_COMPOSE: &str = include_str!("../../deploy/replicas/docker-compose.yml");
/// `deploy/replicas/README.md` (the recipe [`add_replica`] follows).
pub const SHIPPED_REPLICAS_README: &str = include_str!("../../deploy/replicas/README.md");
/// Replicas the shipped files define (ignis-1, ignis-2).
pub const SHIPPED_REPLICAS: usize = 2;

/// The agent secret of the practice tools on every replica.
pub const TOOLS_TOKEN: &str = "tools-secret-replicas-0123456789";
/// A person at the practice: the fallback TwiML dials it (`<Dial>`), a normal end hangs up.
pub const FALLBACK_NUMBER: &str = "+493012345678";
/// Generous bound for anything a test waits for.
pub const T: Duration = Duration::from_secs(10);
/// How long a replica may take from spawn to `/health/ready` 200 (migrations included).
const READY_WITHIN: Duration = Duration::from_secs(30);
/// Lines of each log printed when a test fails.
const LOG_TAIL: usize = 150;

/// `ignis-<n>`.
pub fn replica_id(n: usize) -> String {
    format!("ignis-{n}")
}

/// Replica `n`'s address in the shipped files (172.30.15.1<n>:8080).
pub fn shipped_addr(n: usize) -> String {
    format!("172.30.15.{}:8080", 10 + n)
}

/// deploy/replicas/README.md, "Adding a replica", applied to `conf` for replica `n` (the
/// replicas 1..n exist): its `map` line, its `server` line in `upstream ignis_any` and
/// `ignis_staff`, a `backup` line in every other replica's upstream, and its own upstream block.
pub fn add_replica(conf: &str, n: usize) -> String {
    let addr = shipped_addr(n);
    let map_line_1 = "~^/api/twilio/stream(-ended)?/ignis-1(/|$)  ignis_1;  # [per replica]";
    assert_eq!(conf.matches(map_line_1).count(), 1, "the ignis-1 map line");
    let mut out: Vec<String> = Vec::new();
    let mut block: Option<String> = None;
    let mut last_was_server = false;
    let mut last_map_line = None;
    for line in conf.lines() {
        let t = line.trim_start();
        if let Some(b) = &block {
            let is_server = t.starts_with("server ");
            if last_was_server && !is_server {
                out.push(if b == "ignis_any" || b == "ignis_staff" {
                    format!(
                        "        server {addr} max_fails=1 fail_timeout=10s;  \
                         # [per replica] [test rewrites] ignis-{n}"
                    )
                } else {
                    format!(
                        "        server {addr} backup;  # [per replica] [test rewrites] ignis-{n}"
                    )
                });
            }
            last_was_server = is_server;
        }
        if let Some(name) = t.strip_prefix("upstream ") {
            block = Some(name.trim_end_matches(" {").to_owned());
            last_was_server = false;
        } else if t == "}" {
            block = None;
        }
        if t.starts_with("# WebSocket: forward") {
            out.push(format!("    upstream ignis_{n} {{"));
            out.push(format!("        zone ignis_{n} 64k;"));
            out.push(format!(
                "        server {addr} max_fails=1 fail_timeout=10s;  # [test rewrites] ignis-{n}"
            ));
            for k in 1..n {
                out.push(format!(
                    "        server {} backup;  # [per replica] [test rewrites] ignis-{k}",
                    shipped_addr(k)
                ));
            }
            out.push("        keepalive 16;".into());
            out.push("        keepalive_timeout 30s;".into());
            out.push("    }".into());
            out.push(String::new());
        }
        out.push(line.to_owned());
        if t.starts_with("~^/api/twilio/stream(-ended)?/ignis-") {
            last_map_line = Some(out.len());
        }
    }
    let at = last_map_line.expect("the map's replica lines");
    let indent = "        ";
    let new_line = map_line_1
        .replace("ignis-1", &format!("ignis-{n}"))
        .replace("ignis_1", &format!("ignis_{n}"));
    out.insert(at, format!("{indent}{new_line}"));
    out.join("\n") + "\n"
}

/// `conf` (the shipped file, possibly with replicas added) with the marked values pointed at
/// the test's loopback setup: replica `k` (1-based) at `upstreams[k-1]`.
pub fn test_replicas_conf(
    conf: &str,
    upstreams: &[SocketAddr],
    http_port: u16,
    https_port: u16,
    cert: &Path,
    key: &Path,
    dir: &Path,
) -> String {
    let mut conf = conf.to_owned();
    for (i, upstream) in upstreams.iter().enumerate() {
        let shipped = shipped_addr(i + 1);
        assert!(
            conf.matches(&shipped).count() >= 2,
            "deploy/replicas/nginx.conf should name {shipped} (replica ignis-{})",
            i + 1
        );
        conf = conf.replace(&shipped, &upstream.to_string());
    }
    assert!(
        !conf
            .lines()
            .any(|l| l.trim_start().starts_with("server 172.30.15.")),
        "a replica address the test does not rewrite"
    );
    for (from, to) in [
        (
            "listen 80 default_server;".to_owned(),
            format!("listen 127.0.0.1:{http_port} default_server;"),
        ),
        (
            "listen 443 ssl default_server;".to_owned(),
            format!("listen 127.0.0.1:{https_port} ssl default_server;"),
        ),
        (
            "/etc/nginx/certs/fullchain.pem".to_owned(),
            cert.display().to_string(),
        ),
        (
            "/etc/nginx/certs/privkey.pem".to_owned(),
            key.display().to_string(),
        ),
        ("\nhttp {\n".to_owned(), format!("\n{}", temp_paths(dir))),
    ] {
        assert_eq!(
            conf.matches(&from).count(),
            1,
            "deploy/replicas/nginx.conf should contain {from:?} exactly once"
        );
        conf = conf.replacen(&from, &to, 1);
    }
    let listens = conf
        .lines()
        .filter(|l| l.trim().starts_with("listen "))
        .count();
    assert_eq!(listens, 2, "a listen line the test does not rewrite");
    conf
}

/// One `ignis serve` process (restartable: an upgrade starts the same replica again).
pub struct Replica {
    /// 1-based number; its id is `ignis-<n>`.
    pub n: usize,
    pub id: String,
    /// Its own loopback port (nginx's upstream address).
    pub port: u16,
    env: Vec<(String, String)>,
    dir: PathBuf,
    child: Option<Child>,
    /// Every line it printed, over all its runs.
    log: Arc<Mutex<Vec<String>>>,
    runs: usize,
}

impl Replica {
    fn new(n: usize, port: u16, env: Vec<(String, String)>, dir: &Path) -> Replica {
        Replica {
            n,
            id: replica_id(n),
            port,
            env,
            dir: dir.to_owned(),
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
            runs: 0,
        }
    }

    /// Starts the process (again, after an exit): the same id, port and variables.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.id);
        self.runs += 1;
        let mut child = Command::new(env!("CARGO_BIN_EXE_ignis"))
            .arg("serve")
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ignis: {e}"));
        let tag = format!("[{} run {}]", self.id, self.runs);
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (log, tag) = (self.log.clone(), tag.clone());
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(format!("{tag} {line}"));
                }
            });
        }
        self.child = Some(child);
    }

    /// The process id of the running process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM (what `docker compose stop`/`up` sends before an upgrade).
    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -TERM {}", self.id);
    }

    /// SIGKILL, as a crash or an OOM kill: no drain, no clean-up.
    pub fn sigkill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        let _ = child.wait();
    }

    /// Whether the process exited within `within`, with its status.
    pub async fn exited_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process is running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// `GET /health/ready` on its own port: the status, or None when nothing answers.
    pub async fn ready_status(&self) -> Option<u16> {
        let raw = format!(
            "GET /health/ready HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
        s.write_all(raw.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        Some(read_response(&mut s, &mut buf, false).await.status)
    }

    /// Waits until `/health/ready` answers `status` (bounded); panics with the log otherwise.
    pub async fn wait_ready_status(&self, status: u16, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.ready_status().await;
            if got == Some(status) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: /health/ready is {got:?}, not {status}; log:\n{}",
                self.id,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the replica takes calls (`/health/ready` 200).
    pub async fn wait_ready(&self) {
        self.wait_ready_status(200, READY_WITHIN).await;
    }

    /// Writes `raw` to the replica's own port (bypassing nginx) and reads one response.
    pub async fn direct(&self, raw: &[u8]) -> Resp {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap_or_else(|e| panic!("{} refused: {e}", self.id));
        s.write_all(raw).await.unwrap();
        let mut buf = Vec::new();
        read_response(&mut s, &mut buf, false).await
    }

    /// Everything it printed.
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn log_tail(&self) -> String {
        let lines = self.lines();
        lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A call the fleet answered: its voice webhook went through nginx.
#[derive(Clone, Debug)]
pub struct Answered {
    pub sid: String,
    /// The replica the TwiML names (`/api/twilio/stream/<replica>/<nonce>`).
    pub owner: String,
    /// The stream URL's path.
    pub stream_path: String,
    /// `<Connect action>`'s path (`/api/twilio/stream-ended/<replica>`).
    pub action_path: String,
}

/// PostgreSQL, `n` replicas, nginx and the stand-in agent, on loopback.
pub struct Fleet {
    // Field order is drop order: nginx and the replicas stop before the database and the
    // temp directory go.
    pub nginx: Nginx,
    pub replicas: Vec<Replica>,
    pub caller: TlsCaller,
    pub agent: FakeAgent,
    pub pg: TestPostgres,
    /// The replicas' `DATABASE_URL`.
    pub database_url: String,
    /// Agent conversations taken from the stand-in but not yet asked for, by CallSid.
    agents: Mutex<HashMap<String, VecDeque<AgentConn>>>,
    pub dir: TempDir,
}

impl Fleet {
    /// `n` replicas (ignis-1 … ignis-n) with `extra` variables on each, all ready, behind
    /// nginx. Replicas beyond the shipped two are added by [`add_replica`].
    pub async fn start(n: usize, extra: &[(&str, &str)]) -> Fleet {
        let dir = TempDir::new("replicas");
        let pg = TestPostgres::start();
        // One server per test: its default database is the fleet's.
        let database_url = pg.default_url();
        let agent = FakeAgent::start(AgentBehaviour::default()).await;
        let (cert, key, der) = self_signed_cert(&dir);
        let (http_port, https_port) = (free_port(), free_port());
        let https = SocketAddr::from(([127, 0, 0, 1], https_port));
        let public = format!("https://{https}");
        let mut replicas: Vec<Replica> = (1..=n)
            .map(|k| {
                let port = free_port();
                let env = replica_env(k, port, &public, &database_url, &agent, &dir, extra);
                Replica::new(k, port, env, &dir)
            })
            .collect();
        for r in &mut replicas {
            r.spawn();
        }
        let mut fleet_conf = SHIPPED_REPLICAS_CONF.to_owned();
        for k in SHIPPED_REPLICAS + 1..=n {
            fleet_conf = add_replica(&fleet_conf, k);
        }
        let upstreams: Vec<SocketAddr> = replicas
            .iter()
            .map(|r| SocketAddr::from(([127, 0, 0, 1], r.port)))
            .collect();
        let conf = test_replicas_conf(
            &fleet_conf,
            &upstreams,
            http_port,
            https_port,
            &cert,
            &key,
            &dir,
        );
        let nginx = Nginx::start(&dir, &conf, https);
        let fleet = Fleet {
            nginx,
            replicas,
            caller: TlsCaller::new(https, der),
            agent,
            pg,
            database_url,
            agents: Mutex::new(HashMap::new()),
            dir,
        };
        for r in &fleet.replicas {
            r.wait_ready().await;
        }
        fleet
    }

    /// Replica `ignis-<n>`.
    pub fn replica(&self, n: usize) -> &Replica {
        &self.replicas[n - 1]
    }

    pub fn replica_mut(&mut self, n: usize) -> &mut Replica {
        &mut self.replicas[n - 1]
    }

    /// The replica named `id`.
    pub fn by_id(&self, id: &str) -> &Replica {
        self.replicas
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no replica {id}"))
    }

    /// Writes `raw` to nginx over TLS and reads one response.
    pub async fn via_nginx(&self, raw: &[u8]) -> Resp {
        self.caller.roundtrip(raw).await
    }

    /// The voice webhook for `sid` (the standard test caller) through nginx.
    pub async fn answer(&self, sid: &str) -> Answered {
        self.answer_with(&call_params(sid)).await
    }

    /// The voice webhook with `params` through nginx; the TwiML must connect a stream.
    pub async fn answer_with(&self, params: &[(String, String)]) -> Answered {
        let sid = params
            .iter()
            .find(|(k, _)| k == "CallSid")
            .map(|(_, v)| v.clone())
            .expect("CallSid");
        let r = self
            .via_nginx(&self.caller.signed_post("/api/twilio/voice", params))
            .await;
        let twiml = r.text();
        assert_eq!(r.status, 200, "voice webhook for {sid}: {twiml}");
        answered(&sid, &twiml, &self.caller.public)
    }

    /// Twilio opens the call's stream through nginx (`connected` + `start` behind the head).
    pub async fn open_stream(&self, a: &Answered) -> TwilioCall {
        let head = self.caller.stream_handshake(
            &a.stream_path,
            Some(&self.caller.stream_signature(&a.stream_path)),
        );
        let start = start_json(&a.sid).to_string();
        TwilioCall::over(
            upgrade(self.caller.connect().await, head, &start).await,
            &a.sid,
        )
    }

    /// The call's stream opened at replica `n`'s own port (bypassing nginx's routing), as if
    /// the load balancer had sent it there.
    pub async fn open_stream_at(&self, a: &Answered, n: usize) -> TwilioCall {
        let head = self.caller.stream_handshake(
            &a.stream_path,
            Some(&self.caller.stream_signature(&a.stream_path)),
        );
        let start = start_json(&a.sid).to_string();
        let tcp = TcpStream::connect(("127.0.0.1", self.replica(n).port))
            .await
            .unwrap();
        TwilioCall::over(upgrade(tcp, head, &start).await, &a.sid)
    }

    /// A signed webhook POST to `path` with `params` (signed over nginx's public URL).
    pub fn webhook(&self, path: &str, params: &[(String, String)]) -> Vec<u8> {
        self.caller.signed_post(path, params)
    }

    /// The status callback Twilio sends when the call reaches `status`.
    pub fn status_callback(&self, sid: &str, status: &str) -> Vec<u8> {
        let mut params = call_params(sid);
        for (k, v) in params.iter_mut() {
            if k == "CallStatus" {
                *v = status.to_owned();
            }
        }
        params.push(("CallDuration".into(), "7".into()));
        self.webhook("/api/twilio/status", &params)
    }

    /// `<Connect action>`'s request after the stream ended.
    pub fn stream_ended(&self, a: &Answered) -> Vec<u8> {
        let mut params = call_params(&a.sid);
        for (k, v) in params.iter_mut() {
            if k == "CallStatus" {
                *v = "in-progress".to_owned();
            }
        }
        self.webhook(&a.action_path, &params)
    }

    /// A practice tool request as the agent makes it (agent secret + the call's token).
    pub fn tool(&self, method: &str, target: &str, body: &str, call_token: &str) -> Vec<u8> {
        format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOOLS_TOKEN}\r\n\
             X-Ignis-Call: {call_token}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.caller.authority(),
            body.len()
        )
        .into_bytes()
    }

    /// The next agent conversation opened for `sid` (by any replica); conversations of other
    /// calls that arrive meanwhile are kept for later.
    pub async fn agent_for(&self, sid: &str, within: Duration) -> AgentConn {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(conn) = self
                .agents
                .lock()
                .unwrap()
                .get_mut(sid)
                .and_then(VecDeque::pop_front)
            {
                return conn;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(conn) = self.agent.try_next_conn(left).await else {
                panic!("no agent conversation for {sid}");
            };
            let of = conn.initiation["dynamic_variables"]["call_sid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if of == sid {
                return conn;
            }
            self.agents
                .lock()
                .unwrap()
                .entry(of)
                .or_default()
                .push_back(conn);
        }
    }

    /// A client of the replicas' database, for checking `fleet_call`/`fleet_replica`.
    pub async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.database_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("test client: {e}"));
        tokio::spawn(conn);
        client
    }

    /// Leases counted against MAX_CALLS fleet-wide (docs/replicas.md §3): rows pending
    /// (unexpired), claimed or live whose replica's heartbeat is fresh.
    pub async fn active_leases(&self) -> i64 {
        self.db()
            .await
            .query_one(ACTIVE_LEASES_SQL, &[&LEASE_TTL.as_secs_f64()])
            .await
            .unwrap()
            .get(0)
    }

    /// Polls until the fleet holds `n` leases (bounded by `within`).
    pub async fn wait_leases(&self, n: i64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.active_leases().await;
            if got == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{got} active leases, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether replica `id`'s heartbeat is older than `LEASE_TTL`: its leases are released.
    pub async fn heartbeat_released(&self, id: &str) -> bool {
        self.db()
            .await
            .query_one(
                "SELECT heartbeat_at < now() - make_interval(secs => $2) \
                 FROM fleet_replica WHERE id = $1",
                &[&id, &LEASE_TTL.as_secs_f64()],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// `fleet_call`'s state and outcome of `sid`, if it has a row.
    pub async fn call_row(&self, sid: &str) -> Option<(String, Option<String>)> {
        self.db()
            .await
            .query_opt(
                "SELECT state, outcome FROM fleet_call WHERE call_sid = $1",
                &[&sid],
            )
            .await
            .unwrap()
            .map(|r| (r.get(0), r.get(1)))
    }

    /// The replica that claimed `sid`'s stream (`fleet_call.stream_replica`).
    pub async fn stream_replica(&self, sid: &str) -> Option<String> {
        self.db()
            .await
            .query_opt(
                "SELECT stream_replica FROM fleet_call WHERE call_sid = $1",
                &[&sid],
            )
            .await
            .unwrap()
            .and_then(|r| r.get(0))
    }

    /// nginx's access log lines for `path` (method and path as logged).
    pub fn access_lines(&self, request: &str) -> Vec<String> {
        self.nginx
            .lines()
            .into_iter()
            .filter(|l| l.contains(&format!("\"{request} ")) && l.contains(" rt="))
            .collect()
    }

    /// [`Fleet::access_lines`] once `done` holds for them (nginx writes a line after its
    /// answer, and the test reads it from nginx's stdout): bounded by [`T`], then what there is.
    pub async fn access_lines_until(
        &self,
        request: &str,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let lines = self.access_lines(request);
            if done(&lines) || tokio::time::Instant::now() >= deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Prints every log (for a failing test; cargo shows it only then).
    pub fn dump_logs(&self) {
        for r in &self.replicas {
            eprintln!(
                "---- {} (last {LOG_TAIL} lines) ----\n{}",
                r.id,
                r.log_tail()
            );
        }
        let nginx = self.nginx.lines();
        eprintln!(
            "---- nginx (last {LOG_TAIL} lines) ----\n{}",
            nginx[nginx.len().saturating_sub(LOG_TAIL)..].join("\n")
        );
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

/// Leases as docs/replicas.md §3 defines them, written here independently of `src/fleet/`;
/// `$1` is `LEASE_TTL` in seconds.
pub const ACTIVE_LEASES_SQL: &str = "SELECT count(*) FROM fleet_call c \
     JOIN fleet_replica r ON r.id = COALESCE(c.stream_replica, c.owner) \
     WHERE (c.state IN ('claimed', 'live') OR (c.state = 'pending' AND c.expires_at > now())) \
     AND r.heartbeat_at > now() - make_interval(secs => $1)";

/// The variables of replica `n`: what an operator sets, pointed at the test's loopback setup.
fn replica_env(
    n: usize,
    port: u16,
    public: &str,
    database_url: &str,
    agent: &FakeAgent,
    dir: &Path,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("PUBLIC_URL", public.to_owned()),
        ("TWILIO_AUTH_TOKEN", TOKEN.to_owned()),
        ("DATABASE_URL", database_url.to_owned()),
        ("REPLICA_ID", replica_id(n)),
        ("PORT", port.to_string()),
        ("BIND", "127.0.0.1".to_owned()),
        ("ELEVENLABS_AGENT_ID", AGENT_ID.to_owned()),
        ("ELEVENLABS_API_BASE", agent.base()),
        ("TOOLS_TOKEN", TOOLS_TOKEN.to_owned()),
        ("FALLBACK_NUMBER", FALLBACK_NUMBER.to_owned()),
        ("DRAIN_SECONDS", "30".to_owned()),
        // Unused with DATABASE_URL; a path of the test's own, should it be opened anyway.
        (
            "IGNIS_DB",
            dir.join(format!("unused-{n}.db")).display().to_string(),
        ),
        ("LOG_FORMAT", "text".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// Reads the per-call URLs out of the voice webhook's TwiML.
fn answered(sid: &str, twiml: &str, public: &str) -> Answered {
    let stream_path = stream_path_of(twiml);
    let owner = stream_path["/api/twilio/stream/".len()..]
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        stream_path.matches('/').count() == 5 && owner.starts_with("ignis-"),
        "fleet mode names the replica in the stream URL: {twiml}"
    );
    let action = twiml
        .split("action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no <Connect action> in {twiml}"));
    let action_path = action
        .strip_prefix(public)
        .unwrap_or_else(|| panic!("action {action} is not under {public}"))
        .to_owned();
    assert_eq!(
        action_path,
        format!("/api/twilio/stream-ended/{owner}"),
        "{twiml}"
    );
    Answered {
        sid: sid.to_owned(),
        owner,
        stream_path,
        action_path,
    }
}

/// `n` bytes of a recognisable μ-law pattern (never 0xFF, μ-law silence).
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed) % 0xF0)
        .collect()
}
