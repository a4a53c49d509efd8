//! Runs the audio fuzz entry point over every checked-in seed, plus a fixed batch of
//! pseudo-random inputs, so `cargo test` exercises what the fuzzer does.

use std::fs;
use std::path::Path;

use ignis::fuzzing::audio::jitter_and_reframer;

#[test]
fn every_seed_runs_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/audio_jitter_reframer");
    let mut n = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        jitter_and_reframer(&data);
        n += 1;
    }
    assert!(n >= 10, "seeds missing in {}", dir.display());
}

#[test]
fn pseudo_random_operation_sequences() {
    // xorshift64*: deterministic, no dependency.
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for _ in 0..60 {
        let len = (next() % 400) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        jitter_and_reframer(&data);
    }
}
