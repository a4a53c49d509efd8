//! Runs every fuzz entry point over its checked-in seeds (`fuzz/seeds/<target>/`), so CI
//! exercises the same code the fuzzers do and every past crash stays fixed.

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
