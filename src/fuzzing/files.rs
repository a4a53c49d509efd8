//! Fuzz entry points for the files ignis reads at start-up: WAV clips and `.env`.

use crate::audio::wav;
use crate::config;

/// WAV parsing. Invariants: never panics; what it accepts, written back with [`wav::write`],
/// parses to the same rate and samples.
pub fn wav_file(data: &[u8]) {
    if let Ok(w) = wav::parse(data) {
        let again = wav::parse(&wav::write(w.rate, &w.samples));
        assert_eq!(again.as_ref(), Ok(&w), "WAV round trip");
    }
}

/// `.env` parsing. Invariants: never panics; every key is a non-empty `[A-Za-z0-9_]+`; the
/// pairs, written back as `KEY="value"` lines, parse to the same pairs.
pub fn dotenv(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(pairs) = config::parse_dotenv(&text) else {
        return;
    };
    let mut again = String::new();
    for (k, v) in &pairs {
        assert!(!k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        assert!(!v.contains('\n'));
        again.push_str(&format!("{k}=\"{v}\"\n"));
    }
    assert_eq!(
        config::parse_dotenv(&again).as_ref(),
        Ok(&pairs),
        "{again:?}"
    );
}
