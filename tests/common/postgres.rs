//! A real PostgreSQL for one test: `initdb` into a temp directory and `postgres` on a free
//! loopback port, as an unprivileged user (the `postgres` account when the tests run as root,
//! since the server refuses to run as root), trust authentication on loopback only. Stopped and
//! removed on drop. `.ci/test` installs the `postgresql` package and puts its `bin` directory on
//! PATH; without it a test fails rather than skips. Needs only `super::scratch`, so `benches/tools_db.rs`
//! includes this file too, next to `scratch.rs` (with [`TestPostgres::start_durable`]).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::scratch::TempDir;

/// How long the server may take to accept connections after a start.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A running test server.
pub struct TestPostgres {
    /// Removed after the server is stopped ([`Drop`] runs before the fields are dropped).
    dir: TempDir,
    bin: PathBuf,
    /// Whether commits are flushed to disk (`fsync`, `synchronous_commit`): off for tests
    /// (speed), on for benches (a production server's cost).
    durable: bool,
    /// Its loopback port.
    pub port: u16,
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: PATH first, then Debian's
/// `/usr/lib/postgresql/<version>/bin` (newest).
pub fn pg_bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    dirs.extend(debian.into_iter().rev());
    dirs.into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL's initdb/pg_ctl not found on PATH or in /usr/lib/postgresql/*/bin: \
                 install the postgresql package (.ci/test does)"
            )
        })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl TestPostgres {
    /// initdb + start; panics with the server's log if it does not come up.
    pub fn start() -> TestPostgres {
        Self::start_with(false)
    }

    /// [`TestPostgres::start`] with default durability (`fsync` and `synchronous_commit` on).
    pub fn start_durable() -> TestPostgres {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> TestPostgres {
        // Unique per server: several run at once in one test binary.
        let dir = TempDir::new("pg");
        let bin = pg_bin_dir();
        if running_as_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "chown of the PostgreSQL temp dir to postgres failed");
        }
        let pg = TestPostgres {
            dir,
            bin,
            durable,
            port: std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port(),
        };
        let data = pg.data_dir();
        pg.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
            ],
        );
        pg.start_server();
        pg
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Runs a PostgreSQL tool as the unprivileged user; panics with its output on failure.
    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server (again, after [`TestPostgres::stop`]) on the same port and data.
    pub fn start_server(&self) {
        let fast = if self.durable {
            ""
        } else {
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        };
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200{fast}",
            self.port,
            self.dir.display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir().display().to_string(),
                "-l",
                &self.log_path().display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        let deadline = Instant::now() + READY_WITHIN;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not listen on {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (`fast`: open connections are closed, as in a restart).
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir().display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    /// Stop, then start again: every client connection is cut.
    pub fn restart(&self) {
        self.stop();
        self.start_server();
    }

    /// The server log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The default database's URL.
    pub fn default_url(&self) -> String {
        self.url("postgres")
    }

    /// The data directory's parent (the temp dir).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let data = self.data_dir().display().to_string();
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
