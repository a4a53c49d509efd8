//! WAV files for the demo and the simulated caller: 16-bit PCM in (any channel count: the first
//! channel is used), 16-bit mono PCM out. Sans-IO: bytes in, bytes out.

use std::fmt;

use super::resample::{Engine, Resampler};

/// Largest WAV file accepted (about 50 minutes of 8 kHz 16-bit mono).
pub const MAX_WAV_BYTES: usize = 50 * 1024 * 1024;

/// Why a WAV file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WavError {
    /// Over [`MAX_WAV_BYTES`].
    TooLarge,
    /// Not a RIFF/WAVE file with `fmt ` and `data` chunks.
    NotWav,
    /// Not 16-bit integer PCM.
    Unsupported(String),
}

impl fmt::Display for WavError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WavError::TooLarge => f.write_str("WAV file too large"),
            WavError::NotWav => f.write_str("not a RIFF/WAVE file"),
            WavError::Unsupported(what) => write!(f, "unsupported WAV: {what} (need 16-bit PCM)"),
        }
    }
}

impl std::error::Error for WavError {}

/// Decoded audio: sample rate and the first channel's samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    /// Samples per second.
    pub rate: u32,
    /// Mono samples.
    pub samples: Vec<i16>,
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes([
        *b.get(i)?,
        *b.get(i + 1)?,
        *b.get(i + 2)?,
        *b.get(i + 3)?,
    ]))
}

/// Parses a WAV file.
pub fn parse(bytes: &[u8]) -> Result<Wav, WavError> {
    if bytes.len() > MAX_WAV_BYTES {
        return Err(WavError::TooLarge);
    }
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err(WavError::NotWav);
    }
    let mut pos = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32_at(bytes, pos + 4).ok_or(WavError::NotWav)? as usize;
        let body_start = pos + 8;
        let body_end = body_start.saturating_add(len).min(bytes.len());
        let body = &bytes[body_start..body_end];
        match id {
            b"fmt " => {
                let tag = u16_at(body, 0).ok_or(WavError::NotWav)?;
                let channels = u16_at(body, 2).ok_or(WavError::NotWav)?;
                let rate = u32_at(body, 4).ok_or(WavError::NotWav)?;
                let bits = u16_at(body, 14).ok_or(WavError::NotWav)?;
                format = Some((tag, channels, rate, bits));
            }
            b"data" => {
                let (tag, channels, rate, bits) = format.ok_or(WavError::NotWav)?;
                // 1 = PCM; 0xFFFE = WAVE_FORMAT_EXTENSIBLE (PCM subformat assumed).
                if !(tag == 1 || tag == 0xFFFE) || bits != 16 {
                    return Err(WavError::Unsupported(format!("format {tag}, {bits} bits")));
                }
                if channels == 0 || rate == 0 {
                    return Err(WavError::Unsupported("no channels or rate".into()));
                }
                let stride = 2 * usize::from(channels);
                let samples = body
                    .chunks_exact(stride)
                    .map(|f| i16::from_le_bytes([f[0], f[1]]))
                    .collect();
                return Ok(Wav { rate, samples });
            }
            _ => {}
        }
        // Chunks are padded to even sizes.
        pos = body_start.saturating_add(len + (len & 1));
    }
    Err(WavError::NotWav)
}

/// Encodes 16-bit mono PCM as a WAV file. The 32-bit size fields saturate rather than overflow
/// (a rate of 2^31 Hz or more, as [`parse`] accepts, has no valid byte rate).
pub fn write(rate: u32, samples: &[i16]) -> Vec<u8> {
    let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&data_len.saturating_add(36).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&rate.saturating_mul(2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Converts a whole clip to `rate` (offline: allocation is fine here). Rates must be whole
/// samples per 20 ms (all ElevenLabs rates and common WAV rates are).
pub fn resample_clip(wav: &Wav, rate: u32) -> Result<Vec<i16>, WavError> {
    if wav.rate == rate {
        return Ok(wav.samples.clone());
    }
    let mut r = Resampler::new(wav.rate, rate, Engine::Auto, true)
        .map_err(|e| WavError::Unsupported(format!("rate {}: {e:?}", wav.rate)))?;
    let chunk = (wav.rate / 50) as usize;
    let mut out_f = Vec::new();
    let mut buf = vec![0f32; r.output_frames_max(chunk).max(r.flush_frames_max()) + 16];
    for c in wav.samples.chunks(chunk) {
        let input: Vec<f32> = c.iter().map(|&s| f32::from(s) / 32768.0).collect();
        let need = r.output_frames_max(input.len());
        if buf.len() < need {
            buf.resize(need, 0.0);
        }
        let n = r
            .process_into(&input, &mut buf)
            .map_err(|e| WavError::Unsupported(format!("{e:?}")))?;
        out_f.extend_from_slice(&buf[..n]);
    }
    let need = r.flush_frames_max();
    if buf.len() < need {
        buf.resize(need, 0.0);
    }
    let n = r
        .flush_into(&mut buf)
        .map_err(|e| WavError::Unsupported(format!("{e:?}")))?;
    out_f.extend_from_slice(&buf[..n]);
    Ok(out_f
        .iter()
        .map(|&x| (x * 32768.0).clamp(-32768.0, 32767.0) as i16)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let samples: Vec<i16> = (0..800).map(|i| (i * 40 - 16000) as i16).collect();
        let bytes = write(8000, &samples);
        assert_eq!(
            parse(&bytes).unwrap(),
            Wav {
                rate: 8000,
                samples: samples.clone()
            }
        );
        assert_eq!(parse(b"nope"), Err(WavError::NotWav));
        let mut eight_bit = bytes.clone();
        eight_bit[34] = 8;
        assert!(matches!(parse(&eight_bit), Err(WavError::Unsupported(_))));
        // Truncated data chunk: what is there is used.
        assert_eq!(parse(&bytes[..44 + 100]).unwrap().samples.len(), 50);
    }

    #[test]
    fn resampling_keeps_duration() {
        let wav = Wav {
            rate: 16_000,
            samples: vec![1000; 16_000],
        };
        let out = resample_clip(&wav, 8000).unwrap();
        assert!((7990..=8010).contains(&out.len()), "{}", out.len());
    }
}
