//! The Dockerfile's build stage copies everything the binary compiles in: each file that a
//! `include_str!`/`include_bytes!` in `src/` names must lie under one of its `COPY` sources,
//! or `docker build` fails (no Docker engine runs here, so this is the check that can run).

use std::path::{Component, Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The sources of the build stage's `COPY` lines (every argument but the destination).
fn copied() -> Vec<PathBuf> {
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let build_stage = dockerfile.split("\nFROM ").nth(1).expect("a build stage");
    build_stage
        .lines()
        .filter_map(|l| l.trim().strip_prefix("COPY "))
        .filter(|args| !args.starts_with("--from"))
        .flat_map(|args| {
            let parts: Vec<&str> = args.split_whitespace().collect();
            parts[..parts.len() - 1]
                .iter()
                .map(|p| normalize(Path::new(p)))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `a/./b/../c` → `a/c`.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every file compiled in by `include_str!`/`include_bytes!` under `src/`, relative to the crate
/// root.
fn included(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            included(&path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for macro_name in ["include_str!(\"", "include_bytes!(\""] {
            for (at, _) in text.match_indices(macro_name) {
                let rest = &text[at + macro_name.len()..];
                let Some(end) = rest.find('"') else { continue };
                let file = path.parent().unwrap().join(&rest[..end]);
                let rel = normalize(&file);
                out.push(rel.strip_prefix(ROOT).unwrap().to_owned());
            }
        }
    }
}

#[test]
fn the_build_stage_copies_every_compiled_in_file() {
    let copies = copied();
    assert!(copies.iter().any(|c| c == Path::new("src")), "{copies:?}");
    let mut files = Vec::new();
    included(&Path::new(ROOT).join("src"), &mut files);
    assert!(
        files.iter().any(|f| f.starts_with("agent")),
        "the agent files are compiled in: {files:?}"
    );
    for file in &files {
        assert!(
            copies.iter().any(|c| file.starts_with(c)),
            "{} is compiled into the binary but the Dockerfile's build stage does not COPY it",
            file.display()
        );
    }
}
