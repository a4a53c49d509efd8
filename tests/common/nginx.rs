//! A real nginx running the shipped `deploy/nginx.conf` in front of ignis, on loopback, with a
//! throwaway certificate: the pieces `tests/nginx_proxy.rs` and `tests/doctor.rs` share.
//!
//! Only the values `deploy/nginx.conf` marks `[test rewrites]` (upstream address, listen ports,
//! certificate paths) are rewritten, plus temp paths, so the shipped routing, headers, timeouts
//! and TLS settings are what runs. nginx must be installed (`.ci/test` installs it from Debian
//! packages); without it a test fails rather than skips, since a skipped test would be counted
//! as passed.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::scratch::TempDir;
use super::tls_caller::TlsCaller;
use super::{Server, free_port, openssl, self_signed, test_config};

const T: Duration = Duration::from_secs(10);

/// `deploy/nginx.conf` as shipped.
pub const SHIPPED_NGINX_CONF: &str = include_str!("../../deploy/nginx.conf");

pub fn nginx_binary() -> PathBuf {
    let mut candidates = vec![
        PathBuf::from("/usr/sbin/nginx"),
        PathBuf::from("/usr/local/sbin/nginx"),
        PathBuf::from("/usr/local/nginx/sbin/nginx"),
    ];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nginx")));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed, and this test runs deploy/nginx.conf in a real nginx. \
             Run `.ci/test` (installs nginx and openssl, then runs every test), or install it: \
             `apt-get install -y --no-install-recommends nginx`."
            )
        })
}

/// A throwaway self-signed certificate for 127.0.0.1 and localhost: (cert PEM, key PEM, cert DER).
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let (cert, key, der) = (
        dir.join("fullchain.pem"),
        dir.join("privkey.pem"),
        dir.join("cert.der"),
    );
    self_signed(
        dir,
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = leaf\n\
         [dn]\nCN = localhost\n\
         [leaf]\nbasicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost, IP:127.0.0.1\n",
        &cert,
        &key,
    );
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    openssl(&[
        "x509",
        "-in",
        &s(&cert),
        "-outform",
        "DER",
        "-out",
        &s(&der),
    ]);
    let der = std::fs::read(der).unwrap();
    (cert, key, der)
}

/// `deploy/nginx.conf` with the marked values pointed at the test's loopback setup. Each
/// replaced text must occur exactly once, so a change to the shipped file cannot silently make
/// the test run something else.
pub fn test_nginx_conf(
    upstream: SocketAddr,
    http_port: u16,
    https_port: u16,
    cert: &Path,
    key: &Path,
    dir: &Path,
) -> String {
    test_nginx_conf_of(
        SHIPPED_NGINX_CONF,
        upstream,
        http_port,
        https_port,
        cert,
        key,
        dir,
    )
}

/// [`test_nginx_conf`] of `shipped`, a variant of the shipped file (e.g. with lines removed).
pub fn test_nginx_conf_of(
    shipped: &str,
    upstream: SocketAddr,
    http_port: u16,
    https_port: u16,
    cert: &Path,
    key: &Path,
    dir: &Path,
) -> String {
    let temp_paths = temp_paths(dir);
    let mut conf = shipped.to_owned();
    for (from, to) in [
        ("server ignis:8080;", format!("server {upstream};")),
        (
            "listen 80 default_server;",
            format!("listen 127.0.0.1:{http_port} default_server;"),
        ),
        (
            "listen 443 ssl default_server;",
            format!("listen 127.0.0.1:{https_port} ssl default_server;"),
        ),
        ("/etc/nginx/certs/fullchain.pem", cert.display().to_string()),
        ("/etc/nginx/certs/privkey.pem", key.display().to_string()),
        ("\nhttp {\n", format!("\n{temp_paths}")),
    ] {
        assert_eq!(
            conf.matches(from).count(),
            1,
            "deploy/nginx.conf should contain {from:?} exactly once (update this test with it)"
        );
        conf = conf.replacen(from, &to, 1);
    }
    let listens = conf
        .lines()
        .filter(|l| l.trim().starts_with("listen "))
        .count();
    assert_eq!(listens, 2, "a listen line the test does not rewrite");
    conf
}

/// The opening of the `http` block with nginx's temp paths moved into the test's directory
/// (replaces `\nhttp {\n` in a shipped file).
pub fn temp_paths(dir: &Path) -> String {
    let temp = |name: &str| dir.join(name).display().to_string();
    format!(
        "http {{\n    # test only: temp files in the test's directory\n    \
         client_body_temp_path {};\n    proxy_temp_path {};\n    fastcgi_temp_path {};\n    \
         uwsgi_temp_path {};\n    scgi_temp_path {};\n",
        temp("body"),
        temp("proxy"),
        temp("fastcgi"),
        temp("uwsgi"),
        temp("scgi")
    )
}

/// A running nginx (master and workers, in the foreground); stopped on drop.
pub struct Nginx {
    bin: PathBuf,
    args: Vec<String>,
    child: Child,
    /// Everything nginx wrote: the error log (stderr) and the access log (stdout).
    log: Arc<Mutex<Vec<String>>>,
}

impl Nginx {
    pub fn start(dir: &Path, conf: &str, wait_for: SocketAddr) -> Nginx {
        let bin = nginx_binary();
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let args: Vec<String> = vec![
            "-p".into(),
            format!("{}/", dir.display()),
            "-c".into(),
            conf_path.display().to_string(),
            // Start-up errors before the configuration is read go to stderr too.
            "-e".into(),
            "stderr".into(),
            // As the official image runs it (`nginx -g 'daemon off;'`), plus a writable pid file.
            "-g".into(),
            format!("daemon off; pid {};", dir.join("nginx.pid").display()),
        ];
        let mut child = Command::new(&bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut nginx = Nginx {
            bin,
            args,
            child,
            log,
        };
        let deadline = Instant::now() + T;
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!("nginx exited with {status}: {:#?}", nginx.lines());
            }
            // Something listens; it is nginx only if nginx bound its ports (on a failed bind it
            // logs at once and retries for ~2 s, while the port may be another listener's).
            if std::net::TcpStream::connect(wait_for).is_ok() {
                let lines = nginx.lines();
                assert!(
                    !lines.iter().any(|l| l.contains("bind() to")),
                    "nginx could not bind its ports: {lines:#?}"
                );
                return nginx;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {:#?}",
                nginx.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nginx -s <signal>`: `quit` is the graceful stop `docker compose stop` sends (SIGQUIT).
    pub fn signal(&self, signal: &str) {
        let out = Command::new(&self.bin)
            .args(&self.args)
            .args(["-s", signal])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nginx -s {signal}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether the master process exited within `within` (polled without blocking the runtime).
    pub async fn exits_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `nginx -s stop` signals the master through the pid file (TERM: fast shutdown), which
        // takes its workers down with it; a SIGKILL on the master alone would orphan them.
        let _ = Command::new(&self.bin)
            .args(&self.args)
            .args(["-s", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ignis (in-process, with a stand-in agent) behind the shipped nginx config.
pub struct Deployment {
    // Field order is drop order: nginx stops before its temp directory goes.
    pub nginx: Nginx,
    pub server: Server,
    pub caller: TlsCaller,
    pub http_port: u16,
    pub _dir: TempDir,
}

impl Deployment {
    pub async fn start() -> Deployment {
        Deployment::start_inner(None).await
    }

    /// With the demo practice on the SQLite file `db` (tools secret `tools_token`): the tools,
    /// the admin API and the staff page are served.
    pub async fn start_with_practice(db: &Path, tools_token: &str) -> Deployment {
        Deployment::start_inner(Some(super::open_practice_db(db, tools_token))).await
    }

    async fn start_inner(practice: Option<ignis::practice::Practice>) -> Deployment {
        let dir = TempDir::new("nginx-proxy");
        let (cert, key, der) = self_signed_cert(&dir);
        let (http_port, https_port) = (free_port(), free_port());
        let https = SocketAddr::from(([127, 0, 0, 1], https_port));
        // PUBLIC_URL is what Twilio calls: nginx's TLS port, not ignis's own address.
        let config = test_config(&[("PUBLIC_URL", &format!("https://127.0.0.1:{https_port}"))]);
        let server = Server::start_with_practice(config, Default::default(), practice).await;
        let conf = test_nginx_conf(server.addr, http_port, https_port, &cert, &key, &dir);
        let nginx = Nginx::start(&dir, &conf, https);
        Deployment {
            nginx,
            server,
            caller: TlsCaller::new(https, der),
            http_port,
            _dir: dir,
        }
    }
}
