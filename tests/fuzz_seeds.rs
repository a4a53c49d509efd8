//! Runs every fuzz entry point over its checked-in seeds (`fuzz/seeds/<target>/`), so CI
//! exercises the same code the fuzzers do and every past crash stays fixed. Every target in
//! `fuzz/fuzz_targets/` has a test here. The operation-sequence and practice targets also get a
//! fixed batch of pseudo-random inputs and seed mutations, so `cargo test` walks paths no
//! hand-made seed takes.
//!
//! One replay helper ([`replay`], [`sweep`]) and one PRNG ([`Rng`]) serve every target. `ignis::fuzzing`
//! exists only with the crate's `fuzzing` feature, which the crate's dev-dependency on itself
//! turns on for test builds.

use std::path::Path;
use std::time::Instant;

use ignis::fuzzing::{agent, audio, call, files, front_door, practice};

/// xorshift64* (Vigna, "An experimental exploration of Marsaglia's xorshift generators", 2016):
/// deterministic, so a failing input is found again by rerunning the test, and no dependency.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        Rng(0x9E37_79B9_7F4A_7C15)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Bytes a mutation may insert besides random ones: the JSON structure the practice and agent
/// parsers branch on, and the practice's record-id letters and digits.
const STRUCTURE: &[u8] = b"{}[]\",:\\0S1P1A1";

/// Bytes a mutation never cuts: the operation-sequence targets read their configuration (and
/// `practice_tool_request` its route) from the first bytes.
const KEEP_PREFIX: usize = 2;

/// The pseudo-random inputs [`sweep`] makes.
#[derive(Clone, Copy)]
enum Sweep {
    /// `count` random byte strings of up to `up_to` bytes.
    Random { count: usize, up_to: usize },
    /// `count` mutated seeds.
    Mutations { count: usize },
    /// `count` inputs: random byte strings (up to `up_to` bytes) and mutated seeds in turn.
    Both { count: usize, up_to: usize },
}

/// The checked-in seeds of `target`, at least `min` of them, in file-name order.
fn seeds(target: &str, min: usize) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    // Directory order varies between file systems; the mutations must not.
    paths.sort();
    assert!(
        paths.len() >= min,
        "{} seeds in {}, expected at least {min}",
        paths.len(),
        dir.display()
    );
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Feeds `entry` every seed of `target` (at least `min_seeds`), whole and every 7th prefix:
/// truncated input is the commonest real-world shape. The entry points assert their own
/// invariants; a panic fails the test.
fn replay(target: &str, min_seeds: usize, mut entry: impl FnMut(&[u8])) {
    for data in seeds(target, min_seeds) {
        entry(&data);
        for end in (0..data.len()).step_by(7) {
            entry(&data[..end]);
        }
    }
}

/// Feeds `entry` the pseudo-random `inputs`: random bytes, mutations of the seeds of `target`,
/// or both in turn.
fn sweep(target: &str, inputs: Sweep, mut entry: impl FnMut(&[u8])) {
    let seeds = seeds(target, 1);
    let mut rng = Rng::new();
    let (count, up_to) = match inputs {
        Sweep::Random { count, up_to } | Sweep::Both { count, up_to } => (count, up_to),
        Sweep::Mutations { count } => (count, 0),
    };
    for i in 0..count {
        let random = match inputs {
            Sweep::Random { .. } => true,
            Sweep::Mutations { .. } => false,
            Sweep::Both { .. } => i % 2 == 0,
        };
        let data = if random {
            let len = rng.below(up_to);
            (0..len).map(|_| rng.byte()).collect()
        } else {
            mutate(&mut rng, &seeds[i % seeds.len()])
        };
        entry(&data);
    }
}

/// One to six random edits of `seed`: overwrite, insert (a random or a structure byte),
/// truncate, or repeat the tail.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..=rng.below(6) {
        let at = rng.below(d.len().max(1));
        match rng.below(5) {
            0 if !d.is_empty() => d[at] = rng.byte(),
            1 => d.insert(at.min(d.len()), rng.byte()),
            2 => d.insert(at.min(d.len()), STRUCTURE[rng.below(STRUCTURE.len())]),
            3 => d.truncate(at.max(KEEP_PREFIX)),
            _ => {
                let tail = d[d.len().saturating_sub(8)..].to_vec();
                d.extend_from_slice(&tail);
            }
        }
    }
    d
}

#[test]
fn http_request_head_seeds() {
    replay("http_request_head", 1, front_door::http_request_head);
}

#[test]
fn form_body_seeds() {
    replay("form_body", 1, front_door::form_body);
}

#[test]
fn signature_input_seeds() {
    replay("signature_input", 1, front_door::signature_input);
}

#[test]
fn twilio_message_seeds() {
    replay("twilio_message", 1, front_door::twilio_message);
}

#[test]
fn websocket_upgrade_seeds() {
    replay("websocket_upgrade", 1, front_door::websocket_upgrade);
}

#[test]
fn elevenlabs_event_seeds() {
    let start = Instant::now();
    replay("elevenlabs_event", 1, |d| agent::elevenlabs_event(start, d));
}

#[test]
fn call_session_seeds() {
    let start = Instant::now();
    replay("call_session", 1, |d| call::call_session(start, d));
}

/// The call seeds again with the DSP on a manual pool (`AUDIO_STAGES=pipeline`); the
/// pipeline target's own seeds too.
#[test]
fn call_session_pipeline_seeds() {
    let start = Instant::now();
    replay("call_session", 1, |d| call::call_session_pipeline(start, d));
    replay("call_session_pipeline", 1, |d| {
        call::call_session_pipeline(start, d)
    });
}

#[test]
fn https_response_seeds() {
    replay("https_response", 1, agent::https_response);
}

#[test]
fn websocket_frames_seeds() {
    replay("websocket_frames", 5, agent::websocket_frames);
    sweep(
        "websocket_frames",
        Sweep::Both {
            count: 3000,
            up_to: 300,
        },
        agent::websocket_frames,
    );
}

#[test]
fn wav_file_seeds() {
    replay("wav_file", 1, files::wav_file);
}

#[test]
fn dotenv_seeds() {
    replay("dotenv", 1, files::dotenv);
}

/// The call and agent-event targets over 200 inputs: random bytes and mutated call seeds.
#[test]
fn operation_sequences_pseudo_random() {
    let start = Instant::now();
    let inputs = Sweep::Both {
        count: 200,
        up_to: 600,
    };
    sweep("call_session", inputs, |d| {
        call::call_session(start, d);
        call::call_session_pipeline(start, d);
        agent::elevenlabs_event(start, d);
    });
}

#[test]
fn audio_jitter_reframer_seeds() {
    let start = Instant::now();
    replay("audio_jitter_reframer", 10, |d| {
        audio::jitter_and_reframer(start, d)
    });
}

/// The audio target over 60 random operation sequences.
#[test]
fn audio_jitter_reframer_pseudo_random() {
    let start = Instant::now();
    let inputs = Sweep::Random {
        count: 60,
        up_to: 400,
    };
    sweep("audio_jitter_reframer", inputs, |d| {
        audio::jitter_and_reframer(start, d)
    });
}

/// The practice target's invariants (no panic, JSON reply, known status) on every seed.
#[test]
fn practice_tool_request_seeds() {
    replay("practice_tool_request", 5, practice::tool_request);
}

/// The practice target over 400 seed mutations.
#[test]
fn practice_tool_request_mutations() {
    let inputs = Sweep::Mutations { count: 400 };
    sweep("practice_tool_request", inputs, practice::tool_request);
}
