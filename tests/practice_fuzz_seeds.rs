//! Replays the practice fuzz seeds and a deterministic pseudo-random sweep through the fuzz entry
//! point, so the target's invariants (no panic, JSON reply, known status) hold in `cargo test`.

use std::path::PathBuf;

use ignis::fuzzing::practice::tool_request;

#[test]
fn seeds_replay() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/practice_tool_request");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        tool_request(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n >= 5);
}

#[test]
fn mutated_seeds_do_not_panic() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/practice_tool_request");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..400 {
        let mut input = seeds[i % seeds.len()].clone();
        for _ in 0..(next() % 4 + 1) {
            let r = next() as usize;
            match r % 4 {
                0 if !input.is_empty() => {
                    let at = r / 4 % input.len();
                    input[at] = (next() & 0xff) as u8;
                }
                1 if input.len() > 1 => {
                    let at = r / 4 % input.len();
                    input.truncate(at.max(1));
                }
                2 => input.insert(r / 4 % (input.len() + 1), b"{}[]\",:\\0S1P1A1"[r % 15]),
                _ => {
                    let tail = input.clone();
                    input.extend_from_slice(&tail[tail.len().saturating_sub(8)..]);
                }
            }
        }
        tool_request(&input);
    }
}
