//! The simulator's protocol cores: Twilio's side of a call ([`twilio`]) and the ElevenLabs agent's
//! side of a conversation ([`agent`]), as plain types taking bytes and `now`. They follow the two
//! protocols to the letter, so `ignis demo`, `ignis simulate`, the tests and the benches can stand
//! in for the two services we cannot reach from a test; they are the only such stand-ins.
//!
//! The sockets that carry them are in `driver::sim` (the driver owns all I/O).

pub mod agent;
pub mod elevenlabs_api;
pub mod twilio;
pub mod twilio_api;

use crate::audio::mulaw;

/// Energy (RMS of 16-bit samples) above which audio counts as speech.
pub const SPEECH_RMS: f64 = 500.0;

/// Root mean square of 16-bit samples (0 for none).
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

/// Whether a μ-law frame holds speech rather than quiet.
pub fn is_speech(ulaw: &[u8]) -> bool {
    let pcm: Vec<i16> = ulaw.iter().map(|&b| mulaw::decode_sample(b)).collect();
    rms(&pcm) > SPEECH_RMS
}
