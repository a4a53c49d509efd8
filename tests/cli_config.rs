//! The binary: `--help`, configuration errors (one line naming the variable, exit 2), `.env`
//! loading with the real environment winning, and the loud insecure flag.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use common::scratch::TempDir;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ignis"));
    c.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        c.env("PATH", path);
    }
    c
}

/// Runs the `healthcheck` subcommand against `port`.
fn healthcheck(port: u16) -> std::process::Output {
    bin()
        .env("PORT", port.to_string())
        .arg("healthcheck")
        .output()
        .unwrap()
}

/// Waits for the "ignis listening" log line, then returns the child.
fn wait_listening(mut child: Child) -> Child {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if line.contains("ignis listening") {
                return child;
            }
            seen.push(line);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("ignis exited with {status}: {seen:?}");
        }
    }
    let _ = child.kill();
    panic!("ignis did not start: {seen:?}");
}

fn get(port: u16, target: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn help_documents_commands_and_every_variable() {
    for args in [&["--help"][..], &["serve", "--help"]] {
        let out = bin().args(args).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        for v in ignis::config::VARIABLES {
            let name = v.name;
            assert!(text.contains(name), "{name} missing from help");
        }
        assert!(text.contains("--insecure-skip-signature"));
    }
}

/// The ENVIRONMENT section of `ignis --help`, as (name, rest of the line) per variable.
fn help_variables(args: &[&str]) -> Vec<(String, String)> {
    let out = bin().args(args).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let section = &text[text.find("ENVIRONMENT").expect("ENVIRONMENT section")..];
    section
        .lines()
        .skip(1)
        .filter_map(|l| {
            let l = l.trim();
            let (name, rest) = l.split_once(' ')?;
            Some((name.to_owned(), rest.trim().to_owned()))
        })
        .collect()
}

#[test]
fn help_lists_every_variable_the_config_reads_including_extra_ca_file() {
    for args in [&["--help"][..], &["serve", "--help"], &["help"]] {
        let listed = help_variables(args);
        let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
        let table: Vec<&str> = ignis::config::VARIABLES.iter().map(|v| v.name).collect();
        assert_eq!(names, table, "{args:?}");
        for name in [
            "EXTRA_CA_FILE",
            "TOOLS_TOKEN",
            "RUST_LOG",
            "AGENT_SILENCE_TIMEOUT_MS",
        ] {
            assert!(names.contains(&name), "{name} missing from {args:?}");
        }
        for ((_, rest), v) in listed.iter().zip(ignis::config::VARIABLES) {
            assert!(rest.starts_with(&v.unset.to_string()), "{}: {rest}", v.name);
            assert!(rest.ends_with(v.meaning), "{}: {rest}", v.name);
        }
    }
    // Every variable the source reads by name is in the table (and so in --help).
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/config.rs")).unwrap();
    let mut read = 0;
    for (i, _) in src.match_indices('"') {
        let word: String = src[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if word.len() >= 4
            && word.starts_with(|c: char| c.is_ascii_uppercase())
            && src[i + 1 + word.len()..].starts_with('"')
        {
            read += 1;
            assert!(
                ignis::config::VARIABLES.iter().any(|v| v.name == word),
                "{word} is read but not in the table"
            );
        }
    }
    assert!(
        read >= 25,
        "found only {read} variable names in src/config.rs"
    );
}

/// The README's configuration table is `--help`'s, row for row: same variables, defaults and
/// meanings, in the same order.
#[test]
fn readme_configuration_table_matches_help() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme
        .find("## Configuration")
        .expect("Configuration section")..];
    let rows: Vec<(String, String)> = section
        .lines()
        .skip_while(|l| !l.starts_with("| variable"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 3, "{l}");
            let name = cells[0].trim_matches('`').to_owned();
            (name, format!("{} {}", cells[1], cells[2]))
        })
        .collect();
    let help = help_variables(&["--help"]);
    let help_names: Vec<&str> = help.iter().map(|(n, _)| n.as_str()).collect();
    let readme_names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        readme_names, help_names,
        "README table and --help list other variables"
    );
    for ((name, readme_rest), (_, help_rest)) in rows.iter().zip(&help) {
        let help_rest = help_rest.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(readme_rest, &help_rest, "{name}: README and --help differ");
    }
}

#[test]
fn missing_or_malformed_values_exit_2_naming_the_variable() {
    let dir = TempDir::new("cli-errors");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "PUBLIC_URL"),
        (&[("PUBLIC_URL", "https://h.example")], "TWILIO_AUTH_TOKEN"),
        (
            &[("PUBLIC_URL", "ftp://h"), ("TWILIO_AUTH_TOKEN", "t")],
            "PUBLIC_URL",
        ),
        (
            &[
                ("PUBLIC_URL", "https://h"),
                ("TWILIO_AUTH_TOKEN", "t"),
                ("PORT", "http"),
            ],
            "PORT",
        ),
        (
            &[
                ("PUBLIC_URL", "https://h"),
                ("TWILIO_AUTH_TOKEN", "t"),
                ("BIND", "everywhere"),
            ],
            "BIND",
        ),
        (
            &[
                ("PUBLIC_URL", "https://h"),
                ("TWILIO_AUTH_TOKEN", "t"),
                ("DRAIN_SECONDS", "-1"),
            ],
            "DRAIN_SECONDS",
        ),
        (
            &[
                ("PUBLIC_URL", "https://h"),
                ("TWILIO_AUTH_TOKEN", "t"),
                ("RUST_LOG", "debgu"),
            ],
            "RUST_LOG",
        ),
        (
            &[
                ("PUBLIC_URL", "https://h"),
                ("TWILIO_AUTH_TOKEN", "t"),
                ("TOOLS_TOKEN", "too-short"),
            ],
            "TOOLS_TOKEN",
        ),
        // 27 characters: fine for the old 16-character rule, far from 32 random bytes.
        (
            &[
                ("PUBLIC_URL", "https://h"),
                ("TWILIO_AUTH_TOKEN", "t"),
                ("ADMIN_TOKEN", "staff-password-2026-praxis"),
            ],
            "ADMIN_TOKEN",
        ),
    ];
    for (vars, name) in cases {
        let out = bin()
            .current_dir(&dir)
            .envs(vars.iter().copied())
            .arg("serve")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(name), "{err} should name {name}");
        assert!(
            !err.contains("staff-password"),
            "the token is never echoed: {err}"
        );
    }
    let out = bin().arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dotenv_is_loaded_and_the_environment_wins() {
    let dir = TempDir::new("cli-dotenv");
    let port = free_port();
    std::fs::write(
        dir.join(".env"),
        format!(
            "# local settings\nPUBLIC_URL=https://from-dotenv.example\nTWILIO_AUTH_TOKEN=\"from-file\"\n\
             PORT={port}\nBIND=127.0.0.1\nLOG_FORMAT=xml\n"
        ),
    )
    .unwrap();
    // LOG_FORMAT=xml in the file is invalid; the environment's value must win for start-up to work.
    let child = bin()
        .current_dir(&dir)
        .env("LOG_FORMAT", "text")
        .arg("serve")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = wait_listening(child);
    let health = get(port, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // The TwiML uses PUBLIC_URL from the file.
    let _ = child.kill();
    let _ = child.wait();

    // Without the override the bad file value stops start-up, naming the variable.
    let out = bin().current_dir(&dir).arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LOG_FORMAT"));
    // Nothing listens any more: the healthcheck fails.
    let hc = healthcheck(port);
    assert!(!hc.status.success());
}

#[test]
fn insecure_flag_is_loud_and_sigterm_shuts_down() {
    let dir = TempDir::new("cli-insecure");
    let port = free_port();
    let mut child = bin()
        .current_dir(&dir)
        .envs([
            ("PUBLIC_URL", "http://127.0.0.1"),
            ("TWILIO_AUTH_TOKEN", "t"),
            ("BIND", "127.0.0.1"),
            ("LOG_FORMAT", "json"),
            ("DRAIN_SECONDS", "1"),
        ])
        .env("PORT", port.to_string())
        .args(["serve", "--insecure-skip-signature"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lines.iter().any(|l: &String| l.contains("ignis listening")) {
        assert!(Instant::now() < deadline, "did not start: {lines:?}");
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
    }
    let warning = lines
        .iter()
        .find(|l| l.contains("INSECURE"))
        .expect("insecure warning");
    let parsed: serde_json::Value = serde_json::from_str(warning).expect("JSON log line");
    assert_eq!(parsed["level"], "WARN");

    // Unsigned webhook accepted in this mode.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = "AccountSid=AC00000000000000000000000000000001&CallSid=CA00000000000000000000000000000001&From=%2B4915112345123&To=%2B16175551881";
    write!(
        s,
        "POST /api/twilio/voice HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("ws://127.0.0.1/api/twilio/stream/"));
    // Phone numbers are masked in the log.
    std::thread::sleep(Duration::from_millis(100));
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    let incoming = lines
        .iter()
        .find(|l| l.contains("Incoming call"))
        .expect("incoming log");
    assert!(
        incoming.contains("+…123") && !incoming.contains("4915112345123"),
        "{incoming}"
    );
    // LOG_FORMAT=json: one object per line, with the call SID as a field.
    let parsed: serde_json::Value = serde_json::from_str(incoming).expect("JSON log line");
    assert_eq!(
        parsed["call_sid"], "CA00000000000000000000000000000001",
        "{incoming}"
    );

    // SIGTERM: graceful exit with status 0.
    // The healthcheck subcommand (Docker HEALTHCHECK) sees a healthy server.
    let hc = healthcheck(port);
    assert!(
        hc.status.success(),
        "{}",
        String::from_utf8_lossy(&hc.stderr)
    );

    let pid = child.id();
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The webhook's pre-connect (it failed: no agent id) was let go at shutdown: it did not keep
    // the store open until its deadline.
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
        lines.push(l);
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("did not finish its queued jobs")),
        "{lines:#?}"
    );
    // Nothing listens any more: the healthcheck fails.
    let hc = healthcheck(port);
    assert!(!hc.status.success());
}
