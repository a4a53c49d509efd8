//! Inbound jitter stage: orders Twilio media frames by `chunk`/`timestamp` without holding any.
//!
//! Twilio media arrives over TCP, which never reorders or loses (docs/dsp.md §3.7), so a classic
//! jitter *buffer* would only add latency. This stage decides per frame, at once:
//! - in order → accept (zero added delay);
//! - `chunk` equal to the last accepted one → duplicate, dropped;
//! - `chunk` older than the last accepted one → stale, dropped;
//! - `timestamp` later than expected by more than [`JitterConfig::gap_tolerance_ms`] → accept,
//!   and ask the caller to fill the gap first (concealment, then silence) so the agent's
//!   timeline stays contiguous; gaps larger than [`JitterConfig::max_fill_ms`] or timestamps
//!   going backwards are a timestamp jump: re-synchronise without filling.
//!
//! It also measures RFC 3550 §6.4.1 interarrival jitter (docs/dsp.md §3.1), the largest arrival gap,
//! missing chunk numbers, gaps and filled milliseconds. Time is the caller's `now`.

use std::time::{Duration, Instant};

/// Upper bound on [`JitterConfig::conceal_ms`]: past ~60 ms repetition stops sounding like
/// speech (G.711 Appendix I goes silent after about that, docs/dsp.md §3.6).
pub const MAX_CONCEAL_MS: u32 = 60;
/// Upper bound on [`JitterConfig::max_fill_ms`]: a larger jump is a re-sync, not lost audio
/// (Asterisk's `jbresyncthreshold` default is 1000 ms, docs/dsp.md §3.5).
pub const MAX_GAP_FILL_MS: u32 = 1000;

/// A frame at most this many chunks behind the last is a late one (stale, dropped). Farther
/// behind it cannot be late (the stream is TCP, in order): the counter jumped, e.g. after one
/// frame with a bogus huge `chunk`, and the stage follows it, or that one frame would have every
/// later frame dropped as stale and the caller muted for the rest of the call.
pub const MAX_STALE_CHUNKS: u64 = 50;

/// Microseconds per sample at 8 kHz.
const US_PER_SAMPLE: u64 = 125;

/// Jitter stage settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// A timestamp this much later than expected still counts as contiguous (Twilio's
    /// timestamps wobble by a millisecond or two). Default 10 ms (half a frame).
    pub gap_tolerance_ms: u32,
    /// Fill gaps up to this long; longer ones re-sync. Default and cap [`MAX_GAP_FILL_MS`].
    pub max_fill_ms: u32,
    /// The first part of a gap is concealed by repeating the last frame with a linear fade to
    /// zero over this many ms; the rest is silence. Default and cap [`MAX_CONCEAL_MS`].
    pub conceal_ms: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            gap_tolerance_ms: 10,
            max_fill_ms: MAX_GAP_FILL_MS,
            conceal_ms: MAX_CONCEAL_MS,
        }
    }
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the frame, after inserting `fill_samples` (8 kHz) of concealment/silence.
    Accept {
        /// Samples missing before this frame (0 when contiguous).
        fill_samples: usize,
    },
    /// Same `chunk` as the last accepted frame: drop.
    Duplicate,
    /// Older `chunk` than the last accepted frame: drop.
    Stale,
}

/// Counters and estimates of the inbound stream.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Frames accepted.
    pub frames: u64,
    /// Frames dropped as duplicates.
    pub duplicates: u64,
    /// Frames dropped as stale.
    pub stale: u64,
    /// `chunk` numbers skipped over (never seen).
    pub missing_chunks: u64,
    /// Timestamp gaps that were filled.
    pub gaps: u64,
    /// Milliseconds filled by repeat-and-fade concealment.
    pub concealed_ms: f64,
    /// Milliseconds filled with silence (past the concealment limit).
    pub silence_ms: f64,
    /// Timestamp jumps (backwards, or forwards past `max_fill_ms`) re-synchronised.
    pub resyncs: u64,
    /// RFC 3550 interarrival jitter estimate, ms.
    pub jitter_ms: f64,
    /// Largest time between two consecutive frame arrivals.
    pub max_arrival_gap: Duration,
}

/// The jitter stage (see the module docs).
#[derive(Debug, Clone)]
pub struct JitterStage {
    config: JitterConfig,
    last_chunk: Option<u64>,
    /// Expected timestamp of the next frame, µs since stream start.
    next_ts_us: u64,
    /// Arrival and media time of the previous accepted frame, for RFC 3550 jitter.
    last_arrival: Option<Instant>,
    last_ts_us: u64,
    stats: JitterStats,
}

impl JitterStage {
    /// A stage with `config` (limits clamped to [`MAX_CONCEAL_MS`] and [`MAX_GAP_FILL_MS`]).
    pub fn new(config: JitterConfig) -> Self {
        let config = JitterConfig {
            gap_tolerance_ms: config.gap_tolerance_ms,
            max_fill_ms: config.max_fill_ms.min(MAX_GAP_FILL_MS),
            conceal_ms: config.conceal_ms.min(MAX_CONCEAL_MS),
        };
        Self {
            config,
            last_chunk: None,
            next_ts_us: 0,
            last_arrival: None,
            last_ts_us: 0,
            stats: JitterStats::default(),
        }
    }

    /// The effective configuration.
    pub fn config(&self) -> JitterConfig {
        self.config
    }

    /// Classifies a frame of `samples` 8 kHz samples with Twilio's `chunk` and `timestamp`
    /// (ms since stream start), arriving at `now`. Call once per media message, in arrival
    /// order; act on the verdict immediately (nothing is held).
    pub fn handle_frame(
        &mut self,
        now: Instant,
        chunk: u64,
        timestamp_ms: u64,
        samples: usize,
    ) -> Verdict {
        if let Some(last) = self.last_arrival {
            let gap = now.saturating_duration_since(last);
            self.stats.max_arrival_gap = self.stats.max_arrival_gap.max(gap);
        }
        let ts_us = timestamp_ms.saturating_mul(1000);
        let mut fill_samples = 0;
        match self.last_chunk {
            Some(last) if chunk == last => {
                self.stats.duplicates += 1;
                self.last_arrival = Some(now);
                return Verdict::Duplicate;
            }
            Some(last) if chunk < last && last - chunk <= MAX_STALE_CHUNKS => {
                self.stats.stale += 1;
                self.last_arrival = Some(now);
                return Verdict::Stale;
            }
            Some(last) if chunk < last => self.stats.resyncs += 1,
            Some(last) => {
                // Saturating throughout: `chunk` and `timestamp` come from the peer.
                self.stats.missing_chunks =
                    self.stats.missing_chunks.saturating_add(chunk - last - 1);
                let tolerance = u64::from(self.config.gap_tolerance_ms) * 1000;
                let max_fill = u64::from(self.config.max_fill_ms) * 1000;
                if ts_us.saturating_add(tolerance) < self.next_ts_us {
                    self.stats.resyncs += 1; // timestamp went backwards
                } else if ts_us > self.next_ts_us.saturating_add(tolerance) {
                    let gap_us = ts_us - self.next_ts_us;
                    if gap_us > max_fill {
                        self.stats.resyncs += 1;
                    } else {
                        fill_samples = (gap_us / US_PER_SAMPLE) as usize;
                        self.stats.gaps += 1;
                        let conceal = (fill_samples as u64 * US_PER_SAMPLE)
                            .min(u64::from(self.config.conceal_ms) * 1000);
                        self.stats.concealed_ms += conceal as f64 / 1000.0;
                        self.stats.silence_ms +=
                            (gap_us / US_PER_SAMPLE * US_PER_SAMPLE - conceal) as f64 / 1000.0;
                    }
                } else {
                    self.update_jitter(now, ts_us);
                }
            }
            None => {}
        }
        self.last_chunk = Some(chunk);
        self.last_arrival = Some(now);
        self.last_ts_us = ts_us;
        self.next_ts_us = ts_us.saturating_add(samples as u64 * US_PER_SAMPLE);
        self.stats.frames += 1;
        Verdict::Accept { fill_samples }
    }

    /// RFC 3550 §6.4.1: D = (R_i − R_{i−1}) − (S_i − S_{i−1}); J += (|D| − J) / 16.
    fn update_jitter(&mut self, now: Instant, ts_us: u64) {
        if let Some(last) = self.last_arrival {
            let r = now.saturating_duration_since(last).as_secs_f64() * 1000.0;
            let s = (ts_us as f64 - self.last_ts_us as f64) / 1000.0;
            let d = (r - s).abs();
            self.stats.jitter_ms += (d - self.stats.jitter_ms) / 16.0;
        }
    }

    /// Samples of repeat-and-fade concealment at the start of a fill (the rest is silence).
    pub fn conceal_samples(&self) -> usize {
        self.config.conceal_ms as usize * 8
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn in_order_frames_are_accepted_with_no_fill_and_zero_jitter() {
        let t0 = Instant::now();
        let mut j = JitterStage::new(JitterConfig::default());
        for i in 0..50u64 {
            let v = j.handle_frame(ms(t0, 20 * i), i + 1, 20 * i, 160);
            assert_eq!(v, Verdict::Accept { fill_samples: 0 });
        }
        let s = j.stats();
        assert_eq!(s.frames, 50);
        assert_eq!(s.jitter_ms, 0.0);
        assert_eq!(s.max_arrival_gap, Duration::from_millis(20));
    }

    #[test]
    fn duplicate_stale_gap_and_jumps() {
        let t0 = Instant::now();
        let mut j = JitterStage::new(JitterConfig::default());
        assert!(matches!(
            j.handle_frame(t0, 1, 0, 160),
            Verdict::Accept { .. }
        ));
        assert_eq!(j.handle_frame(t0, 1, 0, 160), Verdict::Duplicate);
        assert!(matches!(
            j.handle_frame(t0, 2, 20, 160),
            Verdict::Accept { .. }
        ));
        assert_eq!(j.handle_frame(t0, 1, 0, 160), Verdict::Stale);
        // Chunks 3 and 4 never arrive: 40 ms gap to fill.
        assert_eq!(
            j.handle_frame(ms(t0, 80), 5, 80, 160),
            Verdict::Accept { fill_samples: 320 }
        );
        // A 5 ms wobble is tolerated.
        assert_eq!(
            j.handle_frame(ms(t0, 105), 6, 105, 160),
            Verdict::Accept { fill_samples: 0 }
        );
        // A jump past max_fill_ms re-syncs without filling; so does going backwards.
        assert_eq!(
            j.handle_frame(ms(t0, 130), 7, 5000, 160),
            Verdict::Accept { fill_samples: 0 }
        );
        assert_eq!(
            j.handle_frame(ms(t0, 150), 8, 100, 160),
            Verdict::Accept { fill_samples: 0 }
        );
        let s = j.stats();
        assert_eq!(
            (s.duplicates, s.stale, s.gaps, s.resyncs, s.missing_chunks),
            (1, 1, 1, 2, 2)
        );
        assert_eq!(s.concealed_ms, 40.0);
    }

    #[test]
    fn one_bogus_chunk_does_not_mute_the_rest_of_the_call() {
        let t0 = Instant::now();
        let mut j = JitterStage::new(JitterConfig::default());
        j.handle_frame(t0, 1, 0, 160);
        j.handle_frame(ms(t0, 20), 2, 20, 160);
        // One frame claims the largest chunk number (`"chunk":1e20` saturates to it).
        j.handle_frame(ms(t0, 40), u64::MAX, 40, 160);
        // The next real frames are far behind it: followed, not dropped as stale.
        for (i, chunk) in (4..10u64).enumerate() {
            let at = 60 + 20 * i as u64;
            assert!(
                matches!(
                    j.handle_frame(ms(t0, at), chunk, at, 160),
                    Verdict::Accept { .. }
                ),
                "chunk {chunk}"
            );
        }
        assert_eq!(j.stats().resyncs, 1);
        // A frame a little behind is still a late one.
        assert_eq!(j.handle_frame(ms(t0, 200), 7, 120, 160), Verdict::Stale);
    }

    #[test]
    fn long_gap_is_concealed_then_silent() {
        let t0 = Instant::now();
        let mut j = JitterStage::new(JitterConfig::default());
        j.handle_frame(t0, 1, 0, 160);
        let v = j.handle_frame(ms(t0, 520), 2, 520, 160);
        assert_eq!(v, Verdict::Accept { fill_samples: 4000 });
        let s = j.stats();
        assert_eq!(s.concealed_ms, 60.0);
        assert_eq!(s.silence_ms, 440.0);
        assert_eq!(s.max_arrival_gap, Duration::from_millis(520));
    }

    #[test]
    fn extreme_counters_do_not_overflow() {
        let t0 = Instant::now();
        let mut j = JitterStage::new(JitterConfig::default());
        j.handle_frame(t0, 0, 0, 160);
        assert!(matches!(
            j.handle_frame(t0, u64::MAX, u64::MAX, 8000),
            Verdict::Accept { fill_samples: 0 }
        ));
        assert_eq!(
            j.handle_frame(t0, u64::MAX, u64::MAX, 160),
            Verdict::Duplicate
        );
        assert_eq!(j.stats().missing_chunks, u64::MAX - 1);
    }

    #[test]
    fn rfc3550_jitter_tracks_arrival_wobble() {
        let t0 = Instant::now();
        let mut j = JitterStage::new(JitterConfig::default());
        for i in 0..200u64 {
            // Alternate 10 ms early / on time: |D| = 10 ms each step.
            let arrive = 20 * i + if i % 2 == 0 { 10 } else { 0 };
            j.handle_frame(ms(t0, arrive), i + 1, 20 * i, 160);
        }
        assert!((j.stats().jitter_ms - 10.0).abs() < 0.01);
    }
}
