//! Test signals for whole-call tests: a recognisable μ-law pattern, tones, and what a received
//! tone measures (shared by `call_bridge` and `call_pipeline`).

/// A recognisable μ-law byte pattern (avoids 0xFF, the silence code the playout pads with).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed) % 0xF0)
        .collect()
}

/// `ms` of a sine at `freq` Hz, `rate` Hz, peak `amp`.
pub fn tone_pcm(freq: f32, rate: u32, ms: u32, amp: f32) -> Vec<i16> {
    let n = (rate * ms / 1000) as usize;
    (0..n)
        .map(|i| (amp * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin()) as i16)
        .collect()
}

/// Frequency by zero crossings, skipping the first and last 10 % (filter transients).
pub fn frequency(samples: &[i16], rate: u32) -> f32 {
    let s = &samples[samples.len() / 10..samples.len() * 9 / 10];
    let crossings = s.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    crossings as f32 / 2.0 / (s.len() as f32 / rate as f32)
}

/// RMS level, skipping the first and last 10 %.
pub fn rms(samples: &[i16]) -> f32 {
    let s = &samples[samples.len() / 10..samples.len() * 9 / 10];
    (s.iter().map(|&x| f32::from(x).powi(2)).sum::<f32>() / s.len() as f32).sqrt()
}
