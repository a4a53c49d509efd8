//! Fuzz entry points for the audio pipeline (issue 3).

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::Bytes;
use crate::audio::{
    AgentFormat, InboundConfig, InboundPath, OutboundConfig, OutboundPath, PlayoutConfig, Transmit,
};

/// Most operations taken from one input.
const MAX_OPS: usize = 4096;
/// Most playout steps one "drive the playout" operation takes.
const MAX_PLAYOUT_STEPS: usize = 10_000;

/// Interprets `data` as an operation sequence against an [`InboundPath`] (jitter stage) and an
/// [`OutboundPath`] (re-framer and playout), asserting their invariants:
/// never panics; Twilio media is whole 160-byte frames and never exceeds the lead;
/// `user_audio_chunk` payloads have the batch size (whole samples); with `ulaw_8000` the inbound
/// timeline is exactly contiguous (accepted frames plus filled gaps, nothing lost or doubled).
///
/// `start` is the virtual clock's origin (any instant: only differences matter); the input moves
/// time forward from there.
///
/// Layout: byte 0 picks the format, byte 1 the batch and lead; then one opcode byte per
/// operation followed by its arguments.
pub fn jitter_and_reframer(start: Instant, data: &[u8]) {
    let mut d = Bytes(data);
    let mut paths = Paths::new(start, &mut d);
    let mut ops = 0;
    while !d.is_empty() && ops < MAX_OPS {
        ops += 1;
        match d.u8() % 10 {
            0 => paths.twilio_frame(&mut d, Order::Next),
            1 => paths.twilio_frame(&mut d, Order::Stale),
            2 => paths.twilio_frame(&mut d, Order::AfterGap),
            3 => paths.agent_burst(&mut d),
            4 => paths.interrupt(&mut d),
            5 => paths.outbound.end_of_turn(),
            6 => paths.now += Duration::from_millis(u64::from(d.u8()) * 4),
            7 => paths.drive_playout(&mut d),
            8 => paths.mark_echo(&mut d),
            _ => paths.bad_base64(),
        }
        paths.drain_inbound();
    }
    paths.finish();
}

/// Where a pushed Twilio frame sits relative to the previous one.
#[derive(Clone, Copy)]
enum Order {
    /// The next frame in order.
    Next,
    /// A duplicate or stale frame (counter moved back by up to 2).
    Stale,
    /// After a gap, or with garbage counters near the top of the range.
    AfterGap,
}

/// Both audio paths and what the fuzzer knows about them, for checking outputs.
struct Paths {
    format: AgentFormat,
    lead_ms: u32,
    inbound: InboundPath,
    outbound: OutboundPath,
    /// `user_audio_chunk` size, bytes.
    batch: usize,
    now: Instant,
    chunk: u64,
    ts: u64,
    last_accepted: Option<u64>,
    accepted_bytes: u64,
    inbound_out: u64,
    event: u64,
    media_bytes: u64,
    marks: Vec<String>,
    frame: Vec<u8>,
}

impl Paths {
    /// Reads the format (byte 0) and the batch, lead and mark interval (byte 1).
    fn new(start: Instant, d: &mut Bytes<'_>) -> Paths {
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
        let (Ok(inbound), Ok(outbound)) = (
            InboundPath::new(format, inbound_config),
            OutboundPath::new(format, outbound_config),
        ) else {
            panic!("every format must build");
        };
        Paths {
            format,
            lead_ms,
            batch: inbound.batch_bytes(),
            inbound,
            outbound,
            now: start,
            chunk: 1,
            ts: 0,
            last_accepted: None,
            accepted_bytes: 0,
            inbound_out: 0,
            event: 1,
            media_bytes: 0,
            marks: Vec::new(),
            frame: Vec::new(),
        }
    }

    /// Pushes a Twilio frame (usually 160 bytes, sometimes any odd size) through either entry
    /// point; an accepted newer frame must be counted once.
    fn twilio_frame(&mut self, d: &mut Bytes<'_>, order: Order) {
        let len = match d.u8() {
            0..=200 => 160,
            n => usize::from(n) * 2 - 400 + 1,
        };
        match order {
            Order::Stale => {
                let back = u64::from(d.u8() % 3);
                self.chunk = self.chunk.saturating_sub(back).max(1);
            }
            Order::AfterGap => {
                let skip = d.u8();
                if skip >= 250 {
                    // Garbage counters from the peer: near the top of the range.
                    self.chunk = u64::MAX - u64::from(d.u8() % 4);
                    self.ts = u64::MAX - u64::from(d.u8());
                } else {
                    let skip = u64::from(skip % 60);
                    self.chunk = self.chunk.saturating_add(skip);
                    self.ts = self.ts.saturating_add(20 * skip + u64::from(d.u8()));
                }
            }
            Order::Next => {}
        }
        self.frame.clear();
        let fill = d.u8();
        self.frame
            .extend((0..len).map(|i| fill.wrapping_add(i as u8)));
        let before = self.inbound.stats().jitter;
        let (now, chunk, ts) = (self.now, self.chunk, self.ts);
        // Both entry points: base64 text (the normal one) or pre-decoded bytes.
        let pushed = if fill & 1 == 0 {
            let text = STANDARD.encode(&self.frame);
            self.inbound.push_twilio_media(now, chunk, ts, &text)
        } else {
            self.inbound.push_twilio_ulaw(now, chunk, ts, &self.frame)
        };
        if pushed.is_ok() && self.last_accepted.is_none_or(|l| chunk > l) {
            self.last_accepted = Some(chunk);
            self.accepted_bytes += len as u64;
            assert_eq!(self.inbound.stats().jitter.frames, before.frames + 1);
        }
        self.chunk = chunk.saturating_add(1);
        self.ts = ts.saturating_add((len as u64).div_ceil(8));
    }

    /// An agent burst of any size, possibly ending on an odd byte.
    fn agent_burst(&mut self, d: &mut Bytes<'_>) {
        let len = usize::from(d.u16() % 6000);
        let seed = d.u8();
        let bytes: Vec<u8> = (0..len).map(|i| seed ^ (i as u8)).collect();
        let r = self
            .outbound
            .push_agent_audio(self.now, self.event, &STANDARD.encode(&bytes));
        assert!(r.is_ok());
    }

    fn interrupt(&mut self, d: &mut Bytes<'_>) {
        self.event += u64::from(d.u8() % 2);
        let i = self.outbound.interrupt(self.now, Some(self.event));
        assert!(i.unplayed_ms <= u64::from(self.lead_ms));
    }

    /// Drives the playout like the bridge, up to a time limit.
    fn drive_playout(&mut self, d: &mut Bytes<'_>) {
        let until = self.now + Duration::from_millis(u64::from(d.u8()) * 10);
        let lead_ms = self.lead_ms;
        for _ in 0..MAX_PLAYOUT_STEPS {
            while let Some(t) = self.outbound.poll_transmit(self.now) {
                match t {
                    Transmit::Media(s) => {
                        let n = STANDARD.decode(s).map_or(0, |b| b.len());
                        assert!(n > 0 && n % 160 == 0, "media of {n} bytes");
                        self.media_bytes += n as u64;
                    }
                    Transmit::Mark(name) => self.marks.push(name.to_string()),
                }
                let lead = self.outbound.playout().lead_ms_at(self.now);
                assert!(lead <= u64::from(lead_ms), "lead {lead} > {lead_ms}");
            }
            match self.outbound.poll_timeout() {
                Some(t) if t <= until => self.now = self.now.max(t),
                _ => break,
            }
        }
        self.now = self.now.max(until);
        // Once everything held is sent, every mark must have followed its audio.
        let playout = self.outbound.playout();
        if playout.held_bytes() == 0 {
            assert_eq!(playout.pending_marks(), 0, "mark stuck behind no audio");
        }
    }

    /// Echoes a mark ignis sent (if any) and one it never sent.
    fn mark_echo(&mut self, d: &mut Bytes<'_>) {
        if !self.marks.is_empty() {
            let i = usize::from(d.u8()) % self.marks.len();
            let _ = self.outbound.handle_mark_echo(&self.marks[i]);
        }
        let _ = self.outbound.handle_mark_echo("ignis-x");
    }

    fn bad_base64(&mut self) {
        let (now, chunk, ts) = (self.now, self.chunk, self.ts);
        assert!(
            self.inbound
                .push_twilio_media(now, chunk, ts, "%%%%")
                .is_err()
        );
        let pushed = self.outbound.push_agent_audio(now, self.event, "abc");
        assert!(pushed.is_err());
    }

    /// Every `user_audio_chunk` ready so far has exactly the batch size.
    fn drain_inbound(&mut self) {
        while let Some(p) = self.inbound.poll_user_audio_chunk() {
            let n = STANDARD.decode(p).map_or(0, |b| b.len());
            assert_eq!(n, self.batch, "payload size");
            self.inbound_out += n as u64;
        }
    }

    /// Flushes the inbound path (the last chunk may be short, but whole samples) and checks the
    /// totals: the μ-law inbound timeline and the media sent.
    fn finish(mut self) {
        self.inbound.finish();
        while let Some(p) = self.inbound.poll_user_audio_chunk() {
            let n = STANDARD.decode(p).map_or(0, |b| b.len());
            assert!(n > 0 && n <= self.batch && n % self.format.bytes_per_sample() == 0);
            self.inbound_out += n as u64;
        }
        let s = self.inbound.stats();
        if self.format.is_ulaw() && s.backlog_dropped_ms == 0.0 {
            let filled = ((s.jitter.concealed_ms + s.jitter.silence_ms) * 8.0).round() as u64;
            assert_eq!(
                self.inbound_out,
                self.accepted_bytes + filled,
                "inbound timeline"
            );
        }
        let frames_sent = self.outbound.stats().playout.frames_sent;
        assert_eq!(frames_sent * 160, self.media_bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    #[test]
    fn empty_and_tiny_inputs() {
        let start = Instant::now();
        super::jitter_and_reframer(start, &[]);
        super::jitter_and_reframer(start, &[6]);
        super::jitter_and_reframer(start, &[6, 0xFF, 0, 0, 3, 1, 1, 1, 7, 50]);
    }
}
