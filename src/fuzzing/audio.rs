//! Fuzz entry points for the audio pipeline (issue 3).

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::Bytes;
use crate::audio::{
    AgentFormat, InboundConfig, InboundPath, OutboundConfig, OutboundPath, PlayoutConfig, Transmit,
};

/// Interprets `data` as an operation sequence against an [`InboundPath`] (jitter stage) and an
/// [`OutboundPath`] (re-framer and playout), asserting their invariants:
/// never panics; Twilio media is whole 160-byte frames and never exceeds the lead;
/// `user_audio_chunk` payloads have the batch size (whole samples); with `ulaw_8000` the inbound
/// timeline is exactly contiguous (accepted frames plus filled gaps, nothing lost or doubled).
///
/// Layout: byte 0 picks the format, byte 1 the batch and lead; then one opcode byte per
/// operation followed by its arguments.
pub fn jitter_and_reframer(data: &[u8]) {
    let mut d = Bytes(data);
    let format = AgentFormat::ALL[usize::from(d.u8()) % AgentFormat::ALL.len()];
    let cfg = d.u8();
    let batch_ms = [20, 40, 60, 100][usize::from(cfg & 3)];
    let lead_ms = [100, 20, 60, 200][usize::from((cfg >> 2) & 3)];
    let mark_interval_ms = [200, 0, 20, 1000][usize::from((cfg >> 4) & 3)];
    let inbound_config = InboundConfig {
        batch_ms,
        ..InboundConfig::default()
    };
    let outbound_config = OutboundConfig {
        playout: PlayoutConfig {
            lead_ms,
            mark_interval_ms,
            max_buffer_ms: 5_000,
            ..PlayoutConfig::default()
        },
        ..OutboundConfig::default()
    };
    let (Ok(mut inbound), Ok(mut outbound)) = (
        InboundPath::new(format, inbound_config),
        OutboundPath::new(format, outbound_config),
    ) else {
        panic!("every format must build");
    };
    let batch = inbound.batch_bytes();
    let t0 = Instant::now();
    let mut now = t0;
    let (mut chunk, mut ts) = (1u64, 0u64);
    let mut last_accepted: Option<u64> = None;
    let mut accepted_bytes = 0u64;
    let mut inbound_out = 0u64;
    let mut event = 1u64;
    let mut media_bytes = 0u64;
    let mut marks: Vec<String> = Vec::new();
    let mut frame = Vec::new();

    let mut ops = 0;
    while !d.0.is_empty() && ops < 4096 {
        ops += 1;
        let code = d.u8() % 10;
        match code {
            0..=2 => {
                // Push a Twilio frame: 0 = next in order, 1 = duplicate/stale, 2 = after a gap.
                let len = match d.u8() {
                    0..=200 => 160,
                    n => usize::from(n) * 2 - 400 + 1,
                };
                match code {
                    1 => {
                        let back = u64::from(d.u8() % 3);
                        chunk = chunk.saturating_sub(back).max(1);
                    }
                    2 => {
                        let skip = d.u8();
                        if skip >= 250 {
                            // Garbage counters from the peer: near the top of the range.
                            chunk = u64::MAX - u64::from(d.u8() % 4);
                            ts = u64::MAX - u64::from(d.u8());
                        } else {
                            let skip = u64::from(skip % 60);
                            chunk = chunk.saturating_add(skip);
                            ts = ts.saturating_add(20 * skip + u64::from(d.u8()));
                        }
                    }
                    _ => {}
                }
                frame.clear();
                let fill = d.u8();
                frame.extend((0..len).map(|i| fill.wrapping_add(i as u8)));
                let before = inbound.stats().jitter;
                // Both entry points: base64 text (the normal one) or pre-decoded bytes.
                let pushed = if fill & 1 == 0 {
                    inbound.push_twilio_media(now, chunk, ts, &STANDARD.encode(&frame))
                } else {
                    inbound.push_twilio_ulaw(now, chunk, ts, &frame)
                };
                if pushed.is_ok() && last_accepted.is_none_or(|l| chunk > l) {
                    last_accepted = Some(chunk);
                    accepted_bytes += len as u64;
                    assert_eq!(inbound.stats().jitter.frames, before.frames + 1);
                }
                chunk = chunk.saturating_add(1);
                ts = ts.saturating_add((len as u64).div_ceil(8));
            }
            3 => {
                // An agent burst of any size, possibly ending on an odd byte.
                let len = usize::from(d.u16() % 6000);
                let seed = d.u8();
                let bytes: Vec<u8> = (0..len).map(|i| seed ^ (i as u8)).collect();
                let r = outbound.push_agent_audio(now, event, &STANDARD.encode(&bytes));
                assert!(r.is_ok());
            }
            4 => {
                let bump = u64::from(d.u8() % 2);
                event += bump;
                let i = outbound.interrupt(now, Some(event));
                assert!(i.unplayed_ms <= u64::from(lead_ms));
            }
            5 => outbound.end_of_turn(),
            6 => now += Duration::from_millis(u64::from(d.u8()) * 4),
            7 => {
                // Drive the playout like the bridge, up to a time limit.
                let until = now + Duration::from_millis(u64::from(d.u8()) * 10);
                for _ in 0..10_000 {
                    while let Some(t) = outbound.poll_transmit(now) {
                        match t {
                            Transmit::Media(s) => {
                                let n = STANDARD.decode(s).map_or(0, |b| b.len());
                                assert!(n > 0 && n % 160 == 0, "media of {n} bytes");
                                media_bytes += n as u64;
                            }
                            Transmit::Mark(name) => marks.push(name.to_string()),
                        }
                        let lead = outbound.playout().lead_ms_at(now);
                        assert!(lead <= u64::from(lead_ms), "lead {lead} > {lead_ms}");
                    }
                    match outbound.poll_timeout() {
                        Some(t) if t <= until => now = now.max(t),
                        _ => break,
                    }
                }
                now = now.max(until);
                // Once everything held is sent, every mark must have followed its audio.
                let playout = outbound.playout();
                if playout.held_bytes() == 0 {
                    assert_eq!(playout.pending_marks(), 0, "mark stuck behind no audio");
                }
            }
            8 => {
                if !marks.is_empty() {
                    let i = usize::from(d.u8()) % marks.len();
                    let _ = outbound.handle_mark_echo(&marks[i]);
                }
                let _ = outbound.handle_mark_echo("ignis-x");
            }
            _ => {
                assert!(inbound.push_twilio_media(now, chunk, ts, "%%%%").is_err());
                assert!(outbound.push_agent_audio(now, event, "abc").is_err());
            }
        }
        while let Some(p) = inbound.poll_user_audio_chunk() {
            let n = STANDARD.decode(p).map_or(0, |b| b.len());
            assert_eq!(n, batch, "payload size");
            inbound_out += n as u64;
        }
    }
    inbound.finish();
    while let Some(p) = inbound.poll_user_audio_chunk() {
        let n = STANDARD.decode(p).map_or(0, |b| b.len());
        assert!(n > 0 && n <= batch && n % format.bytes_per_sample() == 0);
        inbound_out += n as u64;
    }
    let s = inbound.stats();
    if format.is_ulaw() && s.backlog_dropped_ms == 0.0 {
        let filled = ((s.jitter.concealed_ms + s.jitter.silence_ms) * 8.0).round() as u64;
        assert_eq!(inbound_out, accepted_bytes + filled, "inbound timeline");
    }
    assert_eq!(outbound.stats().playout.frames_sent * 160, media_bytes);
}

#[cfg(test)]
mod tests {
    #[test]
    fn empty_and_tiny_inputs() {
        super::jitter_and_reframer(&[]);
        super::jitter_and_reframer(&[6]);
        super::jitter_and_reframer(&[6, 0xFF, 0, 0, 3, 1, 1, 1, 7, 50]);
    }
}
