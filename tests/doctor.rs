//! `ignis doctor` against a real deployment on loopback: ignis (with the practice tools and a
//! stand-in agent that echoes the caller) behind the shipped `deploy/nginx.conf` in a real nginx,
//! with a throwaway certificate from a throwaway CA that the doctor trusts through
//! `EXTRA_CA_FILE`. The real binary runs with the deployment's variables; its report is read
//! line by line. Beside it run the Twilio REST/Monitor and ElevenLabs API stand-ins, set up by
//! the real `ignis twilio configure` and `ignis agent sync` (the README's quick start). The
//! healthy deployment passes every check the doctor can make from here, and each broken variant
//! is reported with its cause: a PUBLIC_URL other than the server's, a proxy without the
//! upgrade headers, an expired certificate, one that expires within 14 days, a number
//! configured with GET, a Monitor alert for this host, a tool pointing at another host, a
//! wrong Twilio token.
//!
//! nginx and openssl must be installed (`.ci/test` installs them).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::fake_agent::{self, AgentBehaviour};
use common::nginx::{Nginx, SHIPPED_NGINX_CONF, test_nginx_conf_of};
use common::scratch::TempDir;
use common::*;

const ACCOUNT_SID: &str = "AC11111111111111111111111111111111";
const TOOLS_TOKEN: &str = "doctor-tools-token-0123456789";
const FALLBACK: &str = "+4930123456789";
const PRACTICE_NUMBER: &str = "+4930987654321";
const PRACTICE_NUMBER_SID: &str = "PN0123456789abcdef0123456789abcdef";
/// A Twilio auth token that is not the account's.
const WRONG_TOKEN: &str = "not-the-account-token-5c1e";

/// How long the leaf certificate is valid.
#[derive(Clone, Copy)]
enum Validity {
    /// 90 days from now.
    Healthy,
    /// January 2020.
    Expired,
    /// 5 days from now.
    ExpiresSoon,
}

/// A CA (the `EXTRA_CA_FILE`) and a leaf for 127.0.0.1 and localhost signed by it, made by the
/// openssl CLI (`openssl ca` sets past dates, which OpenSSL 3.0's `req -x509` cannot):
/// (CA PEM, full chain PEM, leaf key).
fn ca_signed_cert(dir: &Path, validity: Validity) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name).display().to_string();
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = test_ca\n\
         [test_ca]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
         default_md = sha256\npolicy = any\nunique_subject = no\n\
         [any]\ncommonName = supplied\n\
         [req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = ignis doctor test CA\n\
         [ca_ext]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign\n\
         subjectKeyIdentifier = hash\n\
         [leaf]\nbasicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n\
         subjectAltName = DNS:localhost, IP:127.0.0.1\n",
    )
    .unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "01\n").unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (cnf, ca, ca_key) = (p("ca.cnf"), p("ca.pem"), p("ca.key"));
    let mut req = vec!["req", "-x509", "-days", "3650", "-config", &cnf];
    req.extend(ec);
    req.extend(["-extensions", "ca_ext", "-keyout", &ca_key, "-out", &ca]);
    openssl(&req);
    let (key, csr, leaf) = (p("privkey.pem"), p("leaf.csr"), p("leaf.pem"));
    let mut req = vec!["req", "-new", "-subj", "/CN=localhost", "-config", &cnf];
    req.extend(ec);
    req.extend(["-keyout", &key, "-out", &csr]);
    openssl(&req);
    let dates: &[&str] = match validity {
        Validity::Healthy => &["-days", "90"],
        Validity::Expired => &[
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200201000000Z",
        ],
        Validity::ExpiresSoon => &["-days", "5"],
    };
    let mut sign = vec![
        "ca",
        "-batch",
        "-notext",
        "-config",
        &cnf,
        "-cert",
        &ca,
        "-keyfile",
        &ca_key,
        "-in",
        &csr,
        "-out",
        &leaf,
        "-extensions",
        "leaf",
    ];
    sign.extend(dates);
    // `openssl ca` resolves the database paths from the working directory.
    let out = Command::new("openssl")
        .args(&sign)
        .current_dir(dir)
        .output()
        .expect("openssl: run `.ci/test`, or `apt-get install -y openssl`");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chain = dir.join("fullchain.pem");
    let pem = [std::fs::read(&leaf).unwrap(), std::fs::read(&ca).unwrap()].concat();
    std::fs::write(&chain, pem).unwrap();
    (dir.join("ca.pem"), chain, dir.join("privkey.pem"))
}

/// ignis behind nginx, as a practice would run it.
struct Deployment {
    // Field order is drop order: nginx stops before its temp directory goes.
    _nginx: Nginx,
    server: Server,
    /// Twilio's REST and Monitor APIs (the stand-in) with the practice's number.
    twilio: ignis::driver::sim::twilio_api::TwilioApiServer,
    https_port: u16,
    ca: PathBuf,
    dir: TempDir,
}

impl Deployment {
    /// [`Deployment::start_unconfigured`], then the README's quick start: `ignis twilio
    /// configure` and `ignis agent sync` against the stand-ins.
    async fn start(name: &str, validity: Validity, edit: impl Fn(&str) -> String) -> Deployment {
        let d = Deployment::start_unconfigured(name, validity, edit).await;
        for command in [&["twilio", "configure"][..], &["agent", "sync"]] {
            let r = run_ignis(&d.dir, command, d.env()).await;
            assert_eq!(r.code, Some(0), "{r}");
        }
        d
    }

    /// The shipped conf, edited by `edit`, with a certificate of `validity`; the practice's
    /// Twilio number still points at Twilio's demo and the agent is as the dashboard made it.
    async fn start_unconfigured(
        name: &str,
        validity: Validity,
        edit: impl Fn(&str) -> String,
    ) -> Deployment {
        use ignis::driver::sim::twilio_api::TwilioApiServer;
        use ignis::sim::twilio_api::{PhoneNumber, TwilioApi};
        let dir = TempDir::new(name);
        let (ca, chain, key) = ca_signed_cert(&dir, validity);
        let (http_port, https_port) = (free_port(), free_port());
        let practice = open_practice_db(&dir.join("ignis.db"), TOOLS_TOKEN);
        let public = format!("https://127.0.0.1:{https_port}");
        let config = test_config(&[
            ("PUBLIC_URL", &public),
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
            ("ELEVENLABS_API_KEY", fake_agent::API_KEY),
            ("FALLBACK_NUMBER", FALLBACK),
        ]);
        let echo = AgentBehaviour {
            echo: true,
            ..AgentBehaviour::default()
        };
        let server = Server::start_with_practice(config, echo, Some(practice)).await;
        let shipped = edit(SHIPPED_NGINX_CONF);
        let conf = test_nginx_conf_of(
            &shipped,
            server.addr,
            http_port,
            https_port,
            &chain,
            &key,
            &dir,
        );
        let https = SocketAddr::from(([127, 0, 0, 1], https_port));
        let nginx = Nginx::start(&dir, &conf, https);
        let mut api = TwilioApi::new(ACCOUNT_SID, TOKEN);
        let mut number = PhoneNumber::new(PRACTICE_NUMBER_SID, PRACTICE_NUMBER);
        number.voice_url = Some("https://demo.twilio.com/welcome/voice/".into());
        api.numbers = vec![number];
        let twilio = TwilioApiServer::start(api).await.unwrap();
        server
            .agent
            .workspace()
            .seed_agent(ignis::sim::elevenlabs_api::sample_agent(
                fake_agent::AGENT_ID,
            ));
        Deployment {
            _nginx: nginx,
            server,
            twilio,
            https_port,
            ca,
            dir,
        }
    }

    /// The operator's `.env` for this deployment.
    fn env(&self) -> Vec<(String, String)> {
        [
            (
                "PUBLIC_URL",
                format!("https://127.0.0.1:{}", self.https_port),
            ),
            ("TWILIO_AUTH_TOKEN", TOKEN.into()),
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID.into()),
            ("TWILIO_PHONE_NUMBER", PRACTICE_NUMBER.into()),
            ("ELEVENLABS_AGENT_ID", fake_agent::AGENT_ID.into()),
            ("ELEVENLABS_API_KEY", fake_agent::API_KEY.into()),
            ("ELEVENLABS_API_BASE", self.server.agent.base()),
            ("TOOLS_TOKEN", TOOLS_TOKEN.into()),
            ("FALLBACK_NUMBER", FALLBACK.into()),
            ("EXTRA_CA_FILE", self.ca.display().to_string()),
            ("TWILIO_API_BASE", self.twilio.base()),
            ("TWILIO_MONITOR_API_BASE", self.twilio.base()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Runs `ignis doctor args…` with the deployment's variables, `overrides` on top.
    async fn doctor(&self, args: &[&str], overrides: &[(&str, &str)]) -> Doctor {
        let mut env = self.env();
        for (k, v) in overrides {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        run_doctor(&self.dir, args, env).await
    }
}

/// A finished doctor run.
struct Doctor {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Doctor {
    /// The report line of check `id` (its mark, id and detail), with its `fix:` line if any.
    fn line(&self, id: &str) -> String {
        let lines: Vec<&str> = self.stdout.lines().collect();
        let at = lines
            .iter()
            .position(|l| {
                l.get(2..).unwrap_or("").starts_with(&format!("{id}:"))
                    || l.get(4..).unwrap_or("").starts_with(&format!("{id}:"))
            })
            .unwrap_or_else(|| panic!("no line for {id}:\n{}", self.stdout));
        let mut text = lines[at].to_owned();
        if let Some(fix) = lines.get(at + 1).filter(|l| l.starts_with("    fix: ")) {
            text.push('\n');
            text.push_str(fix);
            // A fix of several lines (the alerts, one each) goes on indented further.
            for more in lines[at + 2..]
                .iter()
                .take_while(|l| l.starts_with("      "))
            {
                text.push('\n');
                text.push_str(more);
            }
        }
        text
    }

    fn mark(&self, id: &str) -> char {
        self.line(id).chars().next().unwrap()
    }

    fn assert_marks(&self, want: &[(&str, char)]) {
        for (id, mark) in want {
            assert_eq!(self.mark(id), *mark, "{id}:\n{}", self.stdout);
        }
    }
}

impl std::fmt::Display for Doctor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n{}{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `ignis doctor args…` (off the runtime: the server under test runs on it) in `dir`,
/// which has no `.env`, with exactly `env`.
async fn run_doctor(dir: &Path, args: &[&str], env: Vec<(String, String)>) -> Doctor {
    let mut all = vec!["doctor"];
    all.extend_from_slice(args);
    run_ignis(dir, &all, env).await
}

/// Runs `ignis args…` like [`run_doctor`], and checks its output holds no secret.
async fn run_ignis(dir: &Path, args: &[&str], env: Vec<(String, String)>) -> Doctor {
    let is_doctor = args.first() == Some(&"doctor");
    let dir = dir.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out: Output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ignis"))
            .args(&args)
            .env_clear()
            .envs(env)
            .current_dir(dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let doctor = Doctor {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    // Whatever the outcome: no secret, signature or full phone number in the report.
    let all = format!("{}{}", doctor.stdout, doctor.stderr);
    for secret in [
        TOKEN,
        TOOLS_TOKEN,
        fake_agent::API_KEY,
        "X-Twilio-Signature",
        WRONG_TOKEN,
    ] {
        assert!(!all.contains(secret), "{secret} in the output:\n{doctor}");
    }
    // The doctor's report may end up in monitoring: no phone number at all. (`twilio
    // configure` names the practice's own number: that is what it configures.)
    let numbers: &[&str] = if is_doctor {
        &[FALLBACK, PRACTICE_NUMBER, "15005550006"]
    } else {
        &[FALLBACK, "15005550006"]
    };
    for number in numbers {
        assert!(!all.contains(number), "{number} in the output:\n{doctor}");
    }
    println!("{doctor}");
    doctor
}

/// The probe call's voice webhook pre-connected the agent; its status callback
/// (`CallStatus=completed`) made ignis let it go at once, not after `PRECONNECT_TIMEOUT_MS`
/// (30 s here), and nothing stays live.
async fn assert_probe_call_released(d: &Deployment) {
    assert_eq!(
        d.server.app.config.preconnect_timeout,
        Duration::from_secs(30)
    );
    let mut agent = d.server.agent.next_conn(Duration::from_secs(5)).await;
    assert!(
        agent.closed_within(Duration::from_secs(5)).await,
        "the pre-connected agent outlived the probe call"
    );
    assert_eq!(d.server.app.calls.live_count(), 0);
}

/// The checks of Twilio's and ElevenLabs' side, in the doctor's order.
const REMOTE_CHECKS: [&str; 5] = [
    "twilio_number",
    "twilio_alerts",
    "agent_signed_url",
    "agent_tools",
    "agent_settings",
];

/// The checks the doctor makes of the deployment itself, in the order a call travels.
const LOCAL_CHECKS: [&str; 8] = [
    "config",
    "dns",
    "tls",
    "health",
    "voice_webhook",
    "webhook_signature_check",
    "stream_upgrade",
    "tools_endpoint",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_deployment_passes_and_a_wrong_public_url_is_named() {
    let d = Deployment::start("doctor-healthy", Validity::Healthy, str::to_owned).await;

    let r = d.doctor(&[], &[]).await;
    assert_eq!(r.code, Some(0), "{r}");
    for id in LOCAL_CHECKS {
        assert_eq!(r.mark(id), '✓', "{id}:\n{r}");
    }
    assert!(r.line("tls").contains("days left)"), "the expiry date: {r}");
    assert!(r.line("voice_webhook").contains(&format!(
        "wss://127.0.0.1:{}/api/twilio/stream/<call nonce>",
        d.https_port
    )));
    // From loopback nginx serves /metrics by design: the doctor says it cannot judge.
    assert!(
        r.line("metrics_exposure")
            .starts_with("- metrics_exposure: reached over loopback")
    );
    // Against the Twilio and ElevenLabs stand-ins, after configure and sync (the quick-start
    // test below breaks them one by one).
    for id in REMOTE_CHECKS {
        assert_eq!(r.mark(id), '✓', "{id}:\n{r}");
    }
    assert!(r.line("call").contains("run with --call"), "{r}");
    // The lines come in the order a call travels, then the summary.
    let ids: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| !l.starts_with("    "))
        .filter_map(|l| l.split_once(' ').and_then(|(_, rest)| rest.split_once(':')))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ignis::setup::doctor::ORDER);
    assert_eq!(
        r.stdout.lines().last(),
        Some("13 passed, 0 failed, 2 skipped")
    );
    assert_probe_call_released(&d).await;

    // --json: one object per check per line, for monitoring.
    let r = d.doctor(&["--json"], &[]).await;
    assert_eq!(r.code, Some(0), "{r}");
    let objects: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let ids: Vec<&str> = objects.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ignis::setup::doctor::ORDER);
    for o in &objects {
        let keys: Vec<&String> = o.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["detail", "fix", "id", "status"], "{o}");
        let status = o["status"].as_str().unwrap();
        assert!(["pass", "skip"].contains(&status), "{o}");
        assert!(o["fix"].is_null(), "{o}");
    }

    // Without EXTRA_CA_FILE the throwaway CA is unknown, as a self-signed certificate or a
    // missing intermediate would be to Twilio.
    let r = d.doctor(&[], &[("EXTRA_CA_FILE", "")]).await;
    assert_eq!(r.code, Some(1), "{r}");
    let line = r.line("tls");
    assert!(
        line.starts_with("✗ tls: certificate chain not trusted (unknown issuer)"),
        "{r}"
    );
    assert!(line.contains("fix: serve the full chain"), "{r}");
    assert_eq!(r.line("health"), "- health: needs tls");
    // An unreadable EXTRA_CA_FILE is a bad setting, as for the other set-up commands: exit 2.
    let r = d
        .doctor(&[], &[("EXTRA_CA_FILE", "/nonexistent/ignis-ca.pem")])
        .await;
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("EXTRA_CA_FILE: "), "{r}");

    // The operator's PUBLIC_URL names the host differently from the server's (localhost, not
    // 127.0.0.1): the same certificate and proxy, but Twilio's signature no longer matches.
    let localhost = format!("https://localhost:{}", d.https_port);
    let r = d.doctor(&[], &[("PUBLIC_URL", &localhost)]).await;
    assert_eq!(r.code, Some(1), "{r}");
    // The number and the tools point at the server's origin, not this one: three causes.
    assert!(r.stderr.contains("3 checks failed"), "{r}");
    r.assert_marks(&[("twilio_number", '✗'), ("agent_tools", '✗')]);
    r.assert_marks(&[
        ("dns", '✓'),
        ("tls", '✓'),
        ("health", '✓'),
        ("voice_webhook", '✗'),
    ]);
    let line = r.line("voice_webhook");
    assert!(line.contains("403: signature mismatch: PUBLIC_URL"), "{r}");
    assert!(
        line.contains("fix: set PUBLIC_URL to exactly the origin"),
        "{r}"
    );
    assert_eq!(
        r.line("stream_upgrade"),
        "- stream_upgrade: needs voice_webhook"
    );
    // An unsigned 403 proves nothing while the signed webhook is refused too.
    assert_eq!(
        r.line("webhook_signature_check"),
        "- webhook_signature_check: needs voice_webhook"
    );
    r.assert_marks(&[("tools_endpoint", '✓')]);
}

/// The README's quick start on the local deployment: `ignis twilio configure`, `ignis agent
/// sync`, then `ignis doctor` passes every check it can make from here, the remote ones
/// included (against the Twilio and ElevenLabs stand-ins). Then each remote fault is named
/// with its cause: a number configured with GET, a Monitor alert for this host, a tool that
/// points at another host, a wrong Twilio token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_then_doctor_names_each_remote_fault() {
    use ignis::sim::twilio_api::Alert;

    let d = Deployment::start_unconfigured("doctor-remote", Validity::Healthy, str::to_owned).await;
    let twilio = &d.twilio;
    let env = |overrides: &[(&str, &str)]| {
        let mut env = d.env();
        for (k, v) in overrides {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        env
    };

    // Before the quick start the doctor names what is left to do.
    let r = run_doctor(&d.dir, &[], env(&[])).await;
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.line("twilio_number").contains("ignis twilio configure"),
        "{r}"
    );
    assert!(r.line("agent_tools").contains("ignis agent sync"), "{r}");

    let r = run_ignis(&d.dir, &["twilio", "configure"], env(&[])).await;
    assert_eq!(r.code, Some(0), "{r}");
    let r = run_ignis(&d.dir, &["agent", "sync"], env(&[])).await;
    assert_eq!(r.code, Some(0), "{r}");
    let r = run_doctor(&d.dir, &[], env(&[])).await;
    assert_eq!(r.code, Some(0), "{r}");
    for id in LOCAL_CHECKS.iter().chain(&REMOTE_CHECKS) {
        assert_eq!(r.mark(id), '✓', "{id}:\n{r}");
    }
    assert_eq!(
        r.stdout.lines().last(),
        Some("13 passed, 0 failed, 2 skipped")
    );

    // The number's voice webhook set to GET in the console.
    twilio.state().numbers[0].voice_method = "GET".into();
    let r = run_doctor(&d.dir, &[], env(&[])).await;
    assert_eq!(r.code, Some(1), "{r}");
    let line = r.line("twilio_number");
    assert!(
        line.starts_with("✗ twilio_number:") && line.contains("GET"),
        "{r}"
    );
    assert!(line.contains("ignis twilio configure"), "{r}");
    twilio.state().numbers[0].voice_method = "POST".into();

    // Twilio reported an 11200 for this deployment an hour ago: explained, with its cause.
    let an_hour_ago = jiff::Timestamp::now().as_second() - 3600;
    let url = format!("https://127.0.0.1:{}/api/twilio/voice", d.https_port);
    twilio.state().alerts.push(Alert::new(
        "NO0123456789abcdef0123456789abcdef",
        "11200",
        "error",
        &url,
        "CA0123456789abcdef0123456789abcdef",
        an_hour_ago,
    ));
    let r = run_doctor(&d.dir, &[], env(&[])).await;
    assert_eq!(r.code, Some(1), "{r}");
    let line = r.line("twilio_alerts");
    assert!(
        line.starts_with("✗ twilio_alerts:") && line.contains("11200"),
        "{r}"
    );
    assert!(line.contains("PUBLIC_URL"), "the likely cause: {r}");
    twilio.state().alerts.clear();

    // A tool that points at another host (edited in the dashboard, or an old deployment's).
    {
        let mut w = d.server.agent.workspace();
        let id = w.tool_named("find_slots").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        w.tool_mut(&id).unwrap()["tool_config"]["api_schema"]["url"] =
            serde_json::json!("https://old-host.example.net/api/appointments/slots");
    }
    let r = run_doctor(&d.dir, &[], env(&[])).await;
    assert_eq!(r.code, Some(1), "{r}");
    let line = r.line("agent_tools");
    assert!(line.contains("old-host.example.net"), "{r}");
    assert!(line.contains("ignis agent sync"), "{r}");
    let r = run_ignis(&d.dir, &["agent", "sync"], env(&[])).await;
    assert_eq!(r.code, Some(0), "{r}");

    // A wrong Twilio token: the REST API refuses it, and Twilio's signature would not match.
    let r = run_doctor(&d.dir, &[], env(&[("TWILIO_AUTH_TOKEN", WRONG_TOKEN)])).await;
    assert_eq!(r.code, Some(1), "{r}");
    let line = r.line("twilio_number");
    assert!(line.starts_with("✗ twilio_number:"), "{r}");
    assert!(
        line.contains("TWILIO_AUTH_TOKEN"),
        "the credential fix: {r}"
    );
    assert!(
        r.line("voice_webhook").contains("signature mismatch"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_call_reports_audio_both_ways() {
    let d = Deployment::start("doctor-call", Validity::Healthy, str::to_owned).await;
    let r = d.doctor(&["--call"], &[]).await;
    assert_eq!(r.code, Some(0), "{r}");
    let line = r.line("call");
    assert!(line.starts_with("✓ call: set-up "), "{r}");
    // The stand-in echoes the caller: what it heard after speaking is the caller's speech.
    let number_after = |key: &str| -> u64 {
        let at = line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len();
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(number_after("sent ") >= 8000, "{line}");
    assert!(number_after("heard ") >= 8000, "{line}");
    assert!(line.contains("after the caller spoke"), "{line}");
    assert!(line.contains("caller hung up"), "{line}");
    assert_eq!(
        r.stdout.lines().last(),
        Some("14 passed, 0 failed, 1 skipped")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_without_the_upgrade_headers_is_named() {
    let strip = |conf: &str| {
        let mut out = conf.to_owned();
        for line in [
            "            proxy_set_header Upgrade $http_upgrade;\n",
            "            proxy_set_header Connection $connection_upgrade;\n",
        ] {
            assert_eq!(
                out.matches(line).count(),
                1,
                "{line:?} in deploy/nginx.conf"
            );
            out = out.replace(line, "");
        }
        out
    };
    let d = Deployment::start("doctor-no-upgrade", Validity::Healthy, strip).await;
    let r = d.doctor(&[], &[]).await;
    assert_eq!(r.code, Some(1), "{r}");
    r.assert_marks(&[
        ("tls", '✓'),
        ("voice_webhook", '✓'),
        ("stream_upgrade", '✗'),
    ]);
    let line = r.line("stream_upgrade");
    assert!(
        line.contains("the proxy does not forward Upgrade/Connection"),
        "{r}"
    );
    assert!(
        line.contains("proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade;"),
        "{r}"
    );
    // No stream took the probe call: its status callback alone released the agent.
    assert_probe_call_released(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_expiring_certificate_is_named() {
    let d = Deployment::start("doctor-expired", Validity::Expired, str::to_owned).await;
    let r = d.doctor(&[], &[]).await;
    assert_eq!(r.code, Some(1), "{r}");
    let line = r.line("tls");
    assert!(
        line.starts_with("✗ tls: certificate expired (notAfter 2020-02-01T00:00:00Z"),
        "{r}"
    );
    assert!(line.contains("fix: renew the certificate"), "{r}");
    // Nothing behind TLS can be judged: skipped, naming the hop.
    for id in [
        "health",
        "voice_webhook",
        "stream_upgrade",
        "tools_endpoint",
    ] {
        assert_eq!(r.line(id), format!("- {id}: needs tls"), "{r}");
    }
    drop(d);

    let d = Deployment::start("doctor-expiring", Validity::ExpiresSoon, str::to_owned).await;
    let r = d.doctor(&["--json"], &[]).await;
    assert_eq!(r.code, Some(1), "{r}");
    let tls: serde_json::Value = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|o| o["id"] == "tls")
        .unwrap();
    assert_eq!(tls["status"], "fail");
    let detail = tls["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("certificate expires within 14 days"),
        "{detail}"
    );
    assert!(
        detail.contains(", 4 days left)") || detail.contains(", 5 days left)"),
        "{detail}"
    );
    // Still valid today: the hops behind it were checked, and work.
    for o in r.stdout.lines() {
        let o: serde_json::Value = serde_json::from_str(o).unwrap();
        if [
            "health",
            "voice_webhook",
            "stream_upgrade",
            "tools_endpoint",
        ]
        .contains(&o["id"].as_str().unwrap())
        {
            assert_eq!(o["status"], "pass", "{o}");
        }
    }
}

#[tokio::test]
async fn a_bad_configuration_exits_2() {
    let dir = TempDir::new("doctor-config");
    let r = run_doctor(&dir, &[], vec![("TWILIO_AUTH_TOKEN".into(), TOKEN.into())]).await;
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("PUBLIC_URL"), "{r}");
    assert!(r.stdout.is_empty(), "{r}");
    // With --json, a monitor gets one parsable line for it too.
    let r = run_doctor(
        &dir,
        &["--json"],
        vec![("TWILIO_AUTH_TOKEN".into(), TOKEN.into())],
    )
    .await;
    assert_eq!(r.code, Some(2), "{r}");
    let line: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("a JSON line");
    assert_eq!(
        (line["id"].as_str(), line["status"].as_str()),
        (Some("config"), Some("fail"))
    );
    assert!(
        line["detail"].as_str().unwrap().contains("PUBLIC_URL"),
        "{line}"
    );
}
