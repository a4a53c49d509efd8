//! The audio formats an ElevenLabs agent may speak (docs/elevenlabs.md §4.1).

use std::fmt;
use std::str::FromStr;

/// One of the seven ElevenLabs audio formats, for either direction (docs/elevenlabs.md §4.1).
///
/// `pcm_*` is raw 16-bit signed little-endian mono at the given rate; `ulaw_8000` is raw G.711
/// μ-law at 8 kHz, the same as Twilio's media payload (so it passes through untouched).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentFormat {
    /// `pcm_8000`.
    Pcm8000,
    /// `pcm_16000` (the ElevenLabs default).
    Pcm16000,
    /// `pcm_22050`.
    Pcm22050,
    /// `pcm_24000`.
    Pcm24000,
    /// `pcm_44100`.
    Pcm44100,
    /// `pcm_48000`.
    Pcm48000,
    /// `ulaw_8000`: Twilio's own format; no DSP at all.
    Ulaw8000,
}

/// The format string is not one of the seven ElevenLabs formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownFormat;

error_text!(UnknownFormat => "unknown ElevenLabs audio format");

impl AgentFormat {
    /// Every format, in the order of docs/elevenlabs.md §4.1.
    pub const ALL: [AgentFormat; 7] = [
        AgentFormat::Pcm8000,
        AgentFormat::Pcm16000,
        AgentFormat::Pcm22050,
        AgentFormat::Pcm24000,
        AgentFormat::Pcm44100,
        AgentFormat::Pcm48000,
        AgentFormat::Ulaw8000,
    ];

    /// Parses an ElevenLabs format string such as `"pcm_16000"` or `"ulaw_8000"`.
    pub fn parse(s: &str) -> Result<Self, UnknownFormat> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or(UnknownFormat)
    }

    /// The ElevenLabs name of the format.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentFormat::Pcm8000 => "pcm_8000",
            AgentFormat::Pcm16000 => "pcm_16000",
            AgentFormat::Pcm22050 => "pcm_22050",
            AgentFormat::Pcm24000 => "pcm_24000",
            AgentFormat::Pcm44100 => "pcm_44100",
            AgentFormat::Pcm48000 => "pcm_48000",
            AgentFormat::Ulaw8000 => "ulaw_8000",
        }
    }

    /// Sample rate in Hz.
    pub fn sample_rate(self) -> u32 {
        match self {
            AgentFormat::Pcm8000 | AgentFormat::Ulaw8000 => 8000,
            AgentFormat::Pcm16000 => 16000,
            AgentFormat::Pcm22050 => 22050,
            AgentFormat::Pcm24000 => 24000,
            AgentFormat::Pcm44100 => 44100,
            AgentFormat::Pcm48000 => 48000,
        }
    }

    /// Whether this is `ulaw_8000` (payloads pass through without DSP).
    pub fn is_ulaw(self) -> bool {
        self == AgentFormat::Ulaw8000
    }

    /// Bytes per sample on the wire (1 for μ-law, 2 for PCM16).
    pub fn bytes_per_sample(self) -> usize {
        if self.is_ulaw() { 1 } else { 2 }
    }

    /// Samples in `ms` milliseconds at this format's rate (rounded down).
    pub fn samples_in_ms(self, ms: u32) -> usize {
        (u64::from(self.sample_rate()) * u64::from(ms) / 1000) as usize
    }
}

impl FromStr for AgentFormat {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for AgentFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_seven_and_round_trips() {
        for f in AgentFormat::ALL {
            assert_eq!(AgentFormat::parse(f.as_str()), Ok(f));
            assert_eq!(f.to_string().parse::<AgentFormat>(), Ok(f));
        }
        assert_eq!(AgentFormat::parse("pcm_16000"), Ok(AgentFormat::Pcm16000));
        assert_eq!(AgentFormat::parse("PCM_16000"), Err(UnknownFormat));
        assert_eq!(AgentFormat::parse("mp3_44100"), Err(UnknownFormat));
        assert_eq!(AgentFormat::Pcm22050.samples_in_ms(20), 441);
        assert_eq!(AgentFormat::Ulaw8000.bytes_per_sample(), 1);
    }
}
