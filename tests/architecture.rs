//! The sans-IO boundary, checked mechanically: protocol and DSP code never touches sockets,
//! tasks, threads or the clock. Only `src/driver/`, `src/main.rs` and `src/telemetry.rs` may.
//! `src/audio/pipeline.rs` is the DSP thread's own driver: it may use threads, channels and a
//! clock function, but never tokio (it must not depend on the async runtime).

use std::path::{Path, PathBuf};

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

/// The code of a file without comments and without the `#[cfg(test)]` module at the bottom
/// (tests may use anything).
fn non_test_code(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn sans_io_modules_do_no_io_and_read_no_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let exempt = ["driver", "main.rs", "telemetry.rs", "fuzzing"];
    let forbidden_everywhere = [
        "tokio::",
        "Instant::now",
        "SystemTime::now",
        "std::net::TcpStream",
        "std::net::TcpListener",
        "std::fs::",
    ];
    let forbidden_outside_pipeline = ["std::thread", "crossbeam_channel"];
    let mut violations = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if exempt.iter().any(|e| rel.starts_with(e)) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let code = non_test_code(&text);
        if rel == "audio/pipeline.rs" {
            for pat in ["use tokio", "tokio::spawn", "tokio::sync", "tokio::time"] {
                if code.contains(pat) {
                    violations.push(format!("{rel}: {pat}"));
                }
            }
            continue;
        }
        for pat in forbidden_everywhere {
            if code.contains(pat) {
                violations.push(format!("{rel}: {pat}"));
            }
        }
        // The store owns its writer thread. Nothing else here does.
        let threaded = rel.starts_with("practice/store");
        if !threaded {
            for pat in forbidden_outside_pipeline {
                if code.contains(pat) {
                    violations.push(format!("{rel}: {pat}"));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "sans-IO boundary broken:\n{}",
        violations.join("\n")
    );
}
