//! Runs every fuzz entry point over its checked-in seeds (`fuzz/seeds/<target>/`), so CI
//! exercises the same code the fuzzers do and every past crash stays fixed. Every target in
//! `fuzz/fuzz_targets/` has a test here or in `audio_fuzz_seeds.rs` / `practice_fuzz_seeds.rs`.

use std::path::Path;

fn run_seeds(target: &str, entry: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut count = 0;
    for file in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = file.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        entry(&data);
        // Every prefix too: truncated input is the commonest real-world shape.
        for end in (0..data.len()).step_by(7) {
            entry(&data[..end]);
        }
        count += 1;
    }
    assert!(count > 0, "no seeds for {target}");
}

#[test]
fn http_request_head_seeds() {
    run_seeds(
        "http_request_head",
        ignis::fuzzing::front_door::http_request_head,
    );
}

#[test]
fn form_body_seeds() {
    run_seeds("form_body", ignis::fuzzing::front_door::form_body);
}

#[test]
fn signature_input_seeds() {
    run_seeds(
        "signature_input",
        ignis::fuzzing::front_door::signature_input,
    );
}

#[test]
fn twilio_message_seeds() {
    run_seeds("twilio_message", ignis::fuzzing::front_door::twilio_message);
}

#[test]
fn websocket_upgrade_seeds() {
    run_seeds(
        "websocket_upgrade",
        ignis::fuzzing::front_door::websocket_upgrade,
    );
}

#[test]
fn elevenlabs_event_seeds() {
    run_seeds("elevenlabs_event", ignis::fuzzing::agent::elevenlabs_event);
}

#[test]
fn call_session_seeds() {
    run_seeds("call_session", ignis::fuzzing::call::call_session);
}

#[test]
fn https_response_seeds() {
    run_seeds("https_response", ignis::fuzzing::agent::https_response);
}

#[test]
fn wav_file_seeds() {
    run_seeds("wav_file", ignis::fuzzing::files::wav_file);
}

#[test]
fn dotenv_seeds() {
    run_seeds("dotenv", ignis::fuzzing::files::dotenv);
}

/// The operation-sequence targets over a fixed batch of pseudo-random inputs and seed mutations,
/// so `cargo test` also walks paths no hand-made seed takes.
#[test]
fn operation_sequences_pseudo_random() {
    // xorshift64*: deterministic, no dependency.
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/call_session");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    for i in 0..200 {
        let data: Vec<u8> = if i % 2 == 0 {
            let len = (next() % 600) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut d = seeds[i % seeds.len()].clone();
            for _ in 0..(next() % 6 + 1) {
                let at = (next() as usize) % d.len().max(1);
                match next() % 3 {
                    0 if !d.is_empty() => d[at] = next() as u8,
                    1 => d.insert(at.min(d.len()), next() as u8),
                    _ => d.truncate(at.max(2)),
                }
            }
            d
        };
        ignis::fuzzing::call::call_session(&data);
        ignis::fuzzing::agent::elevenlabs_event(&data);
    }
}
