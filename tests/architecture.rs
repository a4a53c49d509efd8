//! The sans-IO boundary, checked mechanically: protocol, DSP and practice code never touches
//! sockets, files, the database, tasks, threads, channels, processes, the environment, the
//! console, OS randomness or the clock. Each kind of I/O is a [`Rule`] with the few places allowed
//! to do it; `docs/sans-io.md` lists the same exemptions with their reasons, and
//! [`the_docs_list_every_exemption`] keeps the two in step.
//!
//! The check reads source text, so it is a tripwire, not a proof: it sees names as written
//! (whole path segments, after `use` renames too, since `fs::`, `thread::` and `::now` are
//! matched wherever they appear), skips comments and `#[cfg(test)]` modules (tests may use
//! anything), and would be fooled by a deliberate alias.

use std::path::{Path, PathBuf};

/// One kind of I/O and where it may happen.
struct Rule {
    /// The rule's name, as in `docs/sans-io.md`'s table.
    name: &'static str,
    /// Mentions that break the rule, matched as whole words (see [`mentions`]).
    patterns: &'static [&'static str],
    /// `src/`-relative paths (a prefix ending in `/` is a directory) where the rule does not
    /// apply. The reasons are in `docs/sans-io.md`.
    allowed: &'static [&'static str],
}

/// The driver, and the binary's entry point which builds it, own all I/O.
const EDGE: [&str; 2] = ["driver/", "main.rs"];

const RULES: &[Rule] = &[
    Rule {
        name: "clock",
        // `::now` is any clock read: `Instant`, `SystemTime`, jiff's `Timestamp` and `Zoned`,
        // `driver::now`, called or passed as a function.
        patterns: &["::now", ".elapsed()", "TimeZone::system"],
        allowed: &["driver/", "main.rs", "audio/pipeline.rs"],
    },
    Rule {
        name: "sockets",
        patterns: &[
            "TcpStream",
            "TcpListener",
            "UdpSocket",
            "UnixStream",
            "UnixListener",
            "ToSocketAddrs",
            "to_socket_addrs",
            "lookup_host",
        ],
        allowed: &EDGE,
    },
    Rule {
        name: "files",
        patterns: &[
            "std::fs",
            "fs::",
            "File::",
            "OpenOptions",
            ".exists()",
            "try_exists",
            ".is_file()",
            ".is_dir()",
            ".metadata()",
            "canonicalize",
        ],
        allowed: &EDGE,
    },
    Rule {
        name: "database",
        patterns: &["rusqlite", "tokio_postgres", "deadpool_postgres"],
        allowed: &["practice/store/", "pg.rs", "driver/"],
    },
    Rule {
        name: "async runtime",
        patterns: &["tokio", "tokio_rustls", "tokio_tungstenite", "futures_util"],
        allowed: &["driver/", "main.rs", "pg.rs"],
    },
    Rule {
        name: "threads",
        patterns: &["std::thread", "thread::"],
        allowed: &["driver/", "main.rs", "audio/pipeline.rs", "practice/store/"],
    },
    Rule {
        name: "channels",
        patterns: &["crossbeam_channel", "mpsc"],
        allowed: &["driver/", "audio/pipeline.rs", "practice/store/"],
    },
    Rule {
        name: "processes and environment",
        patterns: &[
            "std::process",
            "Command::new",
            "std::env",
            "env::var",
            "env::vars",
            "env::args",
            "from_default_env",
            "try_from_default_env",
        ],
        allowed: &["driver/", "main.rs", "telemetry.rs"],
    },
    Rule {
        name: "console",
        patterns: &[
            "println!",
            "print!",
            "eprintln!",
            "eprint!",
            "dbg!",
            "stdin",
            "stdout",
            "stderr",
        ],
        allowed: &["driver/", "main.rs", "telemetry.rs"],
    },
    Rule {
        name: "randomness",
        patterns: &["/dev/urandom", "getrandom"],
        allowed: &EDGE,
    },
];

/// Narrow exceptions inside an otherwise forbidden file: (path, rule, the one mention allowed).
/// `docs/sans-io.md` gives the reason for each.
const ALLOWED_MENTIONS: &[(&str, &str, &str)] = &[(
    "http/websocket_upgrade.rs",
    "async runtime",
    "tokio_tungstenite::tungstenite::handshake::derive_accept_key",
)];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments (lines starting with `//`) and without its
/// `#[cfg(test)] mod … { … }` blocks (tests may use anything). Other `#[cfg(test)]` items stay:
/// only a whole test module is skipped.
fn non_test_code(text: &str) -> String {
    let mut code = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        code.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        if !trimmed.starts_with("mod ") {
            code.push_str("#[cfg(test)]");
            rest = after;
            continue;
        }
        // Skip to the brace that closes the module (to the end of the file if unbalanced).
        let mut depth = 0usize;
        let mut end = trimmed.len();
        for (i, c) in trimmed.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => {
                    end = i + 1;
                    break;
                }
                '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        rest = &trimmed[end..];
    }
    code.push_str(rest);
    let code = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    expand_use_groups(&code)
}

/// Most `a::{…}` groups expanded in one file (a bound in case of odd text such as
/// `format!("{a}::{b}")`).
const MAX_GROUPS: usize = 1000;

/// Writes each `a::{b, c::{d}}` group out as `a::b, a::c::d`, so that `use std::{fs, thread};`
/// is seen as `std::fs` and `std::thread`.
fn expand_use_groups(code: &str) -> String {
    let mut code = code.to_owned();
    for _ in 0..MAX_GROUPS {
        let Some(open) = code.find("::{") else { break };
        let start = code[..open]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let prefix = code[start..open].to_owned();
        let body_start = open + "::{".len();
        let (mut depth, mut close) = (1usize, code.len());
        for (i, c) in code[body_start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => {
                    close = body_start + i;
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        let body = &code[body_start..close];
        let (mut items, mut depth, mut from) = (Vec::new(), 0usize, 0);
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    items.push(&body[from..i]);
                    from = i + 1;
                }
                _ => {}
            }
        }
        items.push(&body[from..]);
        let expanded = items
            .iter()
            .map(|item| item.trim())
            .filter(|item| !item.is_empty())
            .map(|item| format!("{prefix}::{item}"))
            .collect::<Vec<_>>()
            .join(", ");
        let end = (close + 1).min(code.len());
        code.replace_range(start..end, &expanded);
    }
    code
}

/// Whether `code` mentions `pattern` as whole words: an identifier character at either end of
/// the pattern must not continue into a longer identifier (`tokio` does not match `tokio_x`,
/// `fs::` does not match `refs::`).
fn mentions(code: &str, pattern: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let starts_ident = pattern.starts_with(ident);
    let ends_ident = pattern.ends_with(ident);
    code.match_indices(pattern).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + pattern.len()..].chars().next();
        let joins_before = starts_ident && before.is_some_and(ident);
        let joins_after = ends_ident && after.is_some_and(ident);
        !joins_before && !joins_after
    })
}

/// Every rule broken by the non-test code of the file at `rel` (relative to `src/`).
fn violations(rel: &str, code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for rule in RULES {
        if rule.allowed.iter().any(|a| allowed_at(a, rel)) {
            continue;
        }
        let mut code = code.to_owned();
        for (path, name, mention) in ALLOWED_MENTIONS {
            if *path == rel && *name == rule.name {
                code = code.replace(mention, "");
            }
        }
        for pattern in rule.patterns {
            if mentions(&code, pattern) {
                found.push(format!("{rel}: {pattern} ({} rule)", rule.name));
            }
        }
    }
    found
}

fn allowed_at(allowed: &str, rel: &str) -> bool {
    if allowed.ends_with('/') {
        rel.starts_with(allowed)
    } else {
        rel == allowed
    }
}

#[test]
fn sans_io_modules_do_no_io_and_read_no_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(file).unwrap();
        found.extend(violations(&rel, &non_test_code(&text)));
    }
    assert!(
        found.is_empty(),
        "sans-IO boundary broken (see docs/sans-io.md):\n{}",
        found.join("\n")
    );
}

/// Code each rule must catch, one case a line: `rule | file under src/ | code`. It includes the
/// spellings that slipped through an earlier version of this test.
const CAUGHT: &str = r#"
clock | practice/tools.rs | let now = jiff::Timestamp::now();
clock | practice/tools.rs | let now = Timestamp::now();
clock | bridge.rs | let t = Instant::now();
clock | bridge.rs | OnceLock::new().get_or_init(Instant::now)
clock | bridge.rs | let s = SystemTime::now();
clock | bridge.rs | let z = jiff::Zoned::now();
clock | bridge.rs | if start.elapsed() > limit {}
clock | config.rs | let tz = TimeZone::system();
sockets | http/form.rs | let s = std::net::TcpStream::connect(a);
sockets | http/form.rs | use std::net::{TcpListener, SocketAddr};
sockets | bridge.rs | use std::{io, net::{TcpStream, SocketAddr}};
sockets | config.rs | let a = host.to_socket_addrs();
files | config.rs | use std::fs;
files | config.rs | let t = fs::read_to_string(p);
files | config.rs | use std::{fs, io};
files | config.rs | use std::{io, fs::File};
files | config.rs | let f = File::open(p);
files | config.rs | if path.exists() {}
database | practice/tools.rs | use rusqlite::Connection;
database | practice/mod.rs | let c = rusqlite::Connection::open(p);
async runtime | bridge.rs | tokio::spawn(async {});
async runtime | bridge.rs | use tokio_rustls::TlsConnector;
async runtime | bridge.rs | use futures_util::SinkExt;
async runtime | audio/pipeline.rs | tokio::sync::mpsc::channel(1);
async runtime | http/websocket_upgrade.rs | tokio::spawn(f);
threads | bridge.rs | std::thread::spawn(|| {});
threads | bridge.rs | thread::sleep(d);
threads | bridge.rs | use std::{sync::Arc, thread};
channels | bridge.rs | let (tx, rx) = crossbeam_channel::bounded(1);
channels | bridge.rs | let (tx, rx) = std::sync::mpsc::channel();
channels | bridge.rs | use std::{sync::{Arc, mpsc}, time::Instant};
processes and environment | config.rs | let v = std::env::var("PORT");
processes and environment | config.rs | std::process::exit(2);
console | bridge.rs | println!("hi");
console | bridge.rs | eprintln!("hi");
randomness | bridge.rs | let r = std::fs::read("/dev/urandom");
"#;

/// Code that breaks no rule, one case a line: `file under src/ | code`. Exemptions hold where
/// they are granted, and only whole words are matched.
const CLEAN: &str = "
driver/agent.rs | tokio::spawn(async {}); let t = Instant::now();
audio/pipeline.rs | thread::Builder::new(); crossbeam_channel::bounded(1);
practice/store/worker.rs | std::thread::Builder::new();
practice/store/sqlite.rs | use rusqlite::Connection;
http/websocket_upgrade.rs | use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
bridge.rs | let refs::x = tokio_like; let nowhere = 1; let a = x.now;
";

/// Each rule catches what it is meant to ([`CAUGHT`]), and nothing else is reported ([`CLEAN`]).
#[test]
fn every_rule_catches_its_mentions() {
    for case in CAUGHT.lines().filter(|l| !l.is_empty()) {
        let [rule, rel, code] = case.splitn(3, " | ").collect::<Vec<_>>()[..] else {
            panic!("bad case {case:?}");
        };
        let found = violations(rel, &non_test_code(code));
        assert!(
            found.iter().any(|v| v.ends_with(&format!("({rule} rule)"))),
            "{rel}: `{code}` should break the {rule} rule, found {found:?}"
        );
    }
    for case in CLEAN.lines().filter(|l| !l.is_empty()) {
        let (rel, code) = case.split_once(" | ").expect("file | code");
        let found = violations(rel, &non_test_code(code));
        assert_eq!(found, Vec::<String>::new(), "{rel}: `{code}`");
    }
}

/// Comments and test modules are skipped; the code after a test module, and a lone
/// `#[cfg(test)]` item, are still checked.
#[test]
fn only_comments_and_test_modules_are_skipped() {
    let skipped = "// Instant::now\n/// std::fs\n#[cfg(test)]\nmod tests {\n    fn f() { let _ = std::fs::read(\"x\"); }\n}\n";
    assert_eq!(
        violations("bridge.rs", &non_test_code(skipped)),
        Vec::<String>::new()
    );
    let after = "#[cfg(test)]\nmod tests {\n    fn f() {}\n}\nfn g() { let _ = Instant::now(); }\n";
    assert!(!violations("bridge.rs", &non_test_code(after)).is_empty());
    let lone = "#[cfg(test)]\nfn helper() {}\nfn g() { std::thread::spawn(|| {}); }\n";
    assert!(!violations("bridge.rs", &non_test_code(lone)).is_empty());
}

/// `docs/sans-io.md` has one table row per rule naming every place it allows.
#[test]
fn the_docs_list_every_exemption() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/sans-io.md"))
            .expect("docs/sans-io.md");
    for rule in RULES {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| {} |", rule.name)))
            .unwrap_or_else(|| panic!("docs/sans-io.md has no row for the {} rule", rule.name));
        for allowed in rule.allowed {
            assert!(
                row.contains(&format!("`{allowed}`")),
                "docs/sans-io.md's {} row does not list `{allowed}`",
                rule.name
            );
        }
    }
    for (path, _, mention) in ALLOWED_MENTIONS {
        assert!(
            doc.contains(&format!("`{path}`")) && doc.contains(&format!("`{mention}`")),
            "docs/sans-io.md does not explain {path}'s {mention}"
        );
    }
}
