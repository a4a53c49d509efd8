//! Outbound playout buffer: whole 20 ms μ-law frames in, paced Twilio `media` and `mark` out.
//!
//! Agent audio arrives in bursts, much faster than real time. Sending it all at once would leave
//! seconds of speech in Twilio's buffer that only `clear` can stop, and would hide what the
//! caller has actually heard. Instead (docs/dsp.md §3.7, option b/hybrid) this buffer sends ahead of
//! Twilio's estimated playout position by at most [`PlayoutConfig::lead_ms`] and holds the rest:
//! - the position is computed on an absolute clock (`anchor + samples sent`), so pacing never
//!   drifts however late the driver wakes up;
//! - on interruption everything held is dropped at once: the `clear` the bridge then sends to
//!   Twilio only has to discard the lead;
//! - `mark`s are placed every [`PlayoutConfig::mark_interval_ms`] of audio and at each end of
//!   turn; their echoes say what the caller has really heard (docs/twilio.md §1.4);
//! - underrun (Twilio ran dry mid-turn): nothing is synthesised, it is counted;
//!   overrun (more than [`PlayoutConfig::max_buffer_ms`] held): the newest audio is dropped and
//!   counted. Neither is an error.
//!
//! Driving it: after any input, call [`PlayoutBuffer::poll_transmit`] until `None`, then sleep
//! until [`PlayoutBuffer::poll_timeout`] and poll again.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::mulaw::FRAME_SAMPLES;

/// Cap on [`PlayoutConfig::lead_ms`].
pub const MAX_LEAD_MS: u32 = 1000;
/// Cap on [`PlayoutConfig::max_buffer_ms`] (Twilio itself refuses more than 10 minutes,
/// docs/twilio.md §1.4).
pub const MAX_PLAYOUT_BUFFER_MS: u32 = 600_000;
/// Sent marks remembered while waiting for their echo; older ones are forgotten.
pub const MAX_OUTSTANDING_MARKS: usize = 1024;
/// Prefix of the mark names this buffer generates (`ignis-<seq>`).
pub const MARK_PREFIX: &str = "ignis-";

const FRAME: u64 = FRAME_SAMPLES as u64;
/// Ring frames allocated up front (1.28 s); more are allocated as a turn needs them.
const INITIAL_RING_FRAMES: usize = 64;
/// Marks waiting to be sent; bounded by one per frame of the largest buffer.
const MAX_PENDING_MARKS: usize = 4096;
/// Mark-queue slots allocated up front; the queues double as needed up to their limits.
const INITIAL_MARKS: usize = 16;

/// Playout settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayoutConfig {
    /// How far ahead of the caller's ear audio is sent, ms. Default 100 (five frames):
    /// interruption latency ≤ lead, while a late timer wake-up of < lead does not underrun.
    pub lead_ms: u32,
    /// Most audio held, ms; beyond it new audio is dropped and counted. Default 60 000.
    pub max_buffer_ms: u32,
    /// Most frames in one `media` message. Default 5 (the whole lead in one message at the
    /// start of a turn, then one frame per 20 ms).
    pub max_frames_per_message: usize,
    /// A mark every this many ms of audio (0: only at end of turn). Default 200.
    pub mark_interval_ms: u32,
}

impl Default for PlayoutConfig {
    fn default() -> Self {
        Self {
            lead_ms: 100,
            max_buffer_ms: 60_000,
            max_frames_per_message: 5,
            mark_interval_ms: 200,
        }
    }
}

/// One thing for the bridge to send to Twilio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit<'a> {
    /// A `media` message: base64 of 160·n μ-law bytes, for `media.payload`.
    Media(&'a str),
    /// A `mark` message with this `mark.name`.
    Mark(&'a str),
}

/// What an echoed mark tells the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkEcho {
    /// Agent `event_id` of the audio just before the mark.
    pub event_id: u64,
    /// Whether the mark closed an agent turn.
    pub end_of_turn: bool,
    /// The mark was still pending when the audio was cleared (interruption): Twilio echoes
    /// such marks too, so this echo does not prove the audio was heard.
    pub cleared: bool,
    /// Audio sent on this stream up to the mark, ms.
    pub stream_ms: u64,
}

/// Result of [`PlayoutBuffer::interrupt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interruption {
    /// Held audio dropped locally, ms.
    pub dropped_ms: u64,
    /// Audio already sent that Twilio has probably not played yet, ms: what `clear` discards.
    pub unplayed_ms: u64,
    /// Whether the bridge should send Twilio `clear` (something may still be queued there).
    pub send_clear: bool,
}

/// Counters of the outbound playout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlayoutStats {
    /// 20 ms frames sent.
    pub frames_sent: u64,
    /// `media` messages sent.
    pub messages_sent: u64,
    /// `mark` messages sent.
    pub marks_sent: u64,
    /// Mark echoes matched.
    pub marks_echoed: u64,
    /// Times Twilio ran dry in the middle of a turn.
    pub underruns: u64,
    /// Total time Twilio was dry in the middle of turns, ms.
    pub underrun_ms: u64,
    /// Audio dropped because the buffer was full, ms.
    pub overrun_dropped_ms: u64,
    /// Interruptions handled.
    pub interruptions: u64,
    /// Audio dropped by interruptions (held locally), ms.
    pub interrupted_dropped_ms: u64,
    /// Audio confirmed played by mark echoes (not counting cleared marks), ms.
    pub heard_ms: u64,
    /// Audio currently held, ms.
    pub buffered_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct PendingMark {
    /// Stream byte position after which the mark goes out.
    at: u64,
    event_id: u64,
    end_of_turn: bool,
}

#[derive(Debug, Clone, Copy)]
struct SentMark {
    seq: u64,
    at: u64,
    event_id: u64,
    end_of_turn: bool,
    cleared: bool,
}

/// The playout buffer (see the module docs).
#[derive(Debug)]
pub struct PlayoutBuffer {
    config: PlayoutConfig,
    lead: u64,
    mark_interval: u64,
    /// Ring of held frames (`head`, `count`), sized once from `max_buffer_ms`.
    /// Grows on demand (doubling, rotated so `head` is 0) up to `cap_frames`: allocating the
    /// whole `max_buffer_ms` up front cost ~470 KiB of RSS per call (issue 6 load figures).
    ring: Vec<[u8; FRAME_SAMPLES]>,
    cap_frames: usize,
    head: usize,
    count: usize,
    /// Bytes ever pushed / sent on this stream (positions for marks).
    pushed_total: u64,
    sent_total: u64,
    /// Twilio playout estimate: at `anchor`, Twilio had played up to `anchor_sent`.
    anchor: Option<Instant>,
    anchor_sent: u64,
    last_now: Option<Instant>,
    in_turn: bool,
    turn_sent: bool,
    event_id: u64,
    since_mark: u64,
    pending_marks: VecDeque<PendingMark>,
    sent_marks: VecDeque<SentMark>,
    next_seq: u64,
    scratch: Vec<u8>,
    text: String,
    stats: PlayoutStats,
}

impl PlayoutBuffer {
    /// A buffer with `config` (clamped to [`MAX_LEAD_MS`] and [`MAX_PLAYOUT_BUFFER_MS`]).
    pub fn new(config: PlayoutConfig) -> Self {
        let lead_ms = config.lead_ms.clamp(20, MAX_LEAD_MS);
        let max_ms = config.max_buffer_ms.clamp(20, MAX_PLAYOUT_BUFFER_MS);
        let per_msg = config.max_frames_per_message.clamp(1, 50);
        let config = PlayoutConfig {
            lead_ms,
            max_buffer_ms: max_ms,
            max_frames_per_message: per_msg,
            mark_interval_ms: config.mark_interval_ms,
        };
        let cap_frames = (max_ms as usize / 20).max(1);
        Self {
            config,
            lead: u64::from(lead_ms) * 8,
            mark_interval: u64::from(config.mark_interval_ms) * 8,
            ring: vec![[0; FRAME_SAMPLES]; cap_frames.min(INITIAL_RING_FRAMES)],
            cap_frames,
            head: 0,
            count: 0,
            pushed_total: 0,
            sent_total: 0,
            anchor: None,
            anchor_sent: 0,
            last_now: None,
            in_turn: false,
            turn_sent: false,
            event_id: 0,
            since_mark: 0,
            // Grown on demand up to their limits, like `ring`: pre-sizing them for the worst case
            // (a 60 s turn, 1024 unanswered marks) cost ~110 KiB per call (issue 6 RSS figures),
            // while a call normally holds a few marks (one per `mark_interval_ms` of lead).
            pending_marks: VecDeque::with_capacity(INITIAL_MARKS),
            sent_marks: VecDeque::with_capacity(INITIAL_MARKS),
            next_seq: 1,
            scratch: vec![0; per_msg * FRAME_SAMPLES],
            text: String::with_capacity((per_msg * FRAME_SAMPLES).div_ceil(3) * 4 + 32),
            stats: PlayoutStats::default(),
        }
    }

    /// The effective configuration.
    pub fn config(&self) -> PlayoutConfig {
        self.config
    }

    /// Queues one 160-byte μ-law frame of agent turn `event_id`. Returns `false` if it was
    /// dropped because the buffer is full (counted as overrun).
    pub fn push_frame(&mut self, event_id: u64, frame: &[u8; FRAME_SAMPLES]) -> bool {
        self.in_turn = true;
        self.event_id = event_id;
        if self.count == self.ring.len() {
            if self.ring.len() >= self.cap_frames {
                self.stats.overrun_dropped_ms += 20;
                return false;
            }
            // Full, so every slot is live: rotating puts the oldest first.
            self.ring.rotate_left(self.head);
            self.head = 0;
            let grown = (self.ring.len() * 2).min(self.cap_frames);
            self.ring.resize(grown, [0; FRAME_SAMPLES]);
        }
        let tail = (self.head + self.count) % self.ring.len();
        self.ring[tail] = *frame;
        self.count += 1;
        self.pushed_total += FRAME;
        self.since_mark += FRAME;
        if self.mark_interval > 0 && self.since_mark >= self.mark_interval {
            self.add_mark(false);
        }
        true
    }

    /// The current agent turn is complete: a final mark follows its last frame, and Twilio
    /// running dry afterwards is not an underrun.
    pub fn end_turn(&mut self) {
        if self.in_turn {
            self.add_mark(true);
        }
        self.in_turn = false;
        self.turn_sent = false;
    }

    fn add_mark(&mut self, end_of_turn: bool) {
        self.since_mark = 0;
        if let Some(last) = self.pending_marks.back_mut()
            && last.at == self.pushed_total
        {
            last.end_of_turn |= end_of_turn;
            return;
        }
        if self.pending_marks.len() >= MAX_PENDING_MARKS {
            self.pending_marks.pop_front();
        }
        self.pending_marks.push_back(PendingMark {
            at: self.pushed_total,
            event_id: self.event_id,
            end_of_turn,
        });
    }

    /// Samples Twilio has played by `now`, estimated on the absolute clock.
    fn played(&self, now: Instant) -> u64 {
        match self.anchor {
            None => self.sent_total,
            Some(a) => {
                let elapsed = now.saturating_duration_since(a).as_micros() as u64 / 125;
                self.sent_total.min(self.anchor_sent + elapsed)
            }
        }
    }

    /// The next message for Twilio at `now`, or `None` if nothing is due. The text is valid
    /// until the next call.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<'_>> {
        self.last_now = Some(now);
        if let Some(m) = self.pending_marks.front().copied()
            && m.at <= self.sent_total
        {
            self.pending_marks.pop_front();
            return Some(self.send_mark(m));
        }
        if self.count == 0 {
            return None;
        }
        let played = self.played(now);
        if self.anchor.is_none() || played >= self.sent_total {
            // Twilio's queue is (estimated) empty: restart the clock here.
            if let Some(a) = self.anchor
                && self.in_turn
                && self.turn_sent
            {
                let dry_since = a + samples_to_duration(self.sent_total - self.anchor_sent);
                let dry = now.saturating_duration_since(dry_since).as_millis() as u64;
                if dry > 0 {
                    self.stats.underruns += 1;
                    self.stats.underrun_ms += dry;
                }
            }
            self.anchor = Some(now);
            self.anchor_sent = self.sent_total;
        }
        let allowed = (played + self.lead).saturating_sub(self.sent_total) / FRAME;
        let until_mark = self
            .pending_marks
            .front()
            .map_or(u64::MAX, |m| (m.at - self.sent_total) / FRAME);
        let frames = allowed
            .min(self.count as u64)
            .min(self.config.max_frames_per_message as u64)
            .min(until_mark) as usize;
        if frames == 0 {
            return None;
        }
        let n = frames * FRAME_SAMPLES;
        for dst in self.scratch[..n].chunks_exact_mut(FRAME_SAMPLES) {
            dst.copy_from_slice(&self.ring[self.head]);
            self.head = (self.head + 1) % self.ring.len();
            self.count -= 1;
        }
        self.sent_total += n as u64;
        self.turn_sent |= self.in_turn;
        self.stats.frames_sent += frames as u64;
        self.stats.messages_sent += 1;
        self.text.clear();
        STANDARD.encode_string(&self.scratch[..n], &mut self.text);
        Some(Transmit::Media(&self.text))
    }

    fn send_mark(&mut self, m: PendingMark) -> Transmit<'_> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.sent_marks.len() >= MAX_OUTSTANDING_MARKS {
            self.sent_marks.pop_front();
        }
        self.sent_marks.push_back(SentMark {
            seq,
            at: m.at,
            event_id: m.event_id,
            end_of_turn: m.end_of_turn,
            cleared: false,
        });
        self.stats.marks_sent += 1;
        self.text.clear();
        // Writing into a String with spare capacity cannot fail or allocate.
        let _ = write!(self.text, "{MARK_PREFIX}{seq}");
        Transmit::Mark(&self.text)
    }

    /// When [`PlayoutBuffer::poll_transmit`] should next be called, or `None` if nothing is
    /// held (push more audio first).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let now = self.last_now?;
        if self
            .pending_marks
            .front()
            .is_some_and(|m| m.at <= self.sent_total)
        {
            return Some(now);
        }
        if self.count == 0 {
            return None;
        }
        let Some(anchor) = self.anchor else {
            return Some(now);
        };
        // The next frame may go once sent_total + FRAME ≤ played + lead.
        let due = (self.sent_total + FRAME).saturating_sub(self.lead);
        let at = anchor + samples_to_duration(due.saturating_sub(self.anchor_sent));
        Some(at)
    }

    /// When the caller would run dry with nothing more held: Twilio's estimated queue down to one
    /// frame (to none with a 20 ms lead, where whole frames only go out then). A partial frame
    /// held upstream must go out by then, padded, or the caller hears a gap (docs/dsp.md §3.8).
    /// `now` if nothing is queued at Twilio; `None` while whole frames are held.
    pub fn starves_at(&self, now: Instant) -> Option<Instant> {
        if self.count > 0 {
            return None;
        }
        let Some(anchor) = self.anchor else {
            return Some(now);
        };
        let margin = FRAME.min(self.lead.saturating_sub(FRAME));
        let due = self.sent_total.saturating_sub(margin);
        Some(anchor + samples_to_duration(due.saturating_sub(self.anchor_sent)))
    }

    /// The `now` of the last [`PlayoutBuffer::poll_transmit`] or interruption.
    pub fn last_poll(&self) -> Option<Instant> {
        self.last_now
    }

    /// Handles a Twilio `mark` echo. Returns what it tells, or `None` for names this buffer
    /// did not send (or has forgotten).
    pub fn handle_mark_echo(&mut self, name: &str) -> Option<MarkEcho> {
        let seq: u64 = name.strip_prefix(MARK_PREFIX)?.parse().ok()?;
        // Echoes come back in order; anything older than this one is implied.
        while let Some(m) = self.sent_marks.front().copied() {
            if m.seq > seq {
                return None;
            }
            self.sent_marks.pop_front();
            if m.seq == seq {
                self.stats.marks_echoed += 1;
                if !m.cleared {
                    self.stats.heard_ms = self.stats.heard_ms.max(m.at / 8);
                }
                return Some(MarkEcho {
                    event_id: m.event_id,
                    end_of_turn: m.end_of_turn,
                    cleared: m.cleared,
                    stream_ms: m.at / 8,
                });
            }
        }
        None
    }

    /// Barge-in: drops everything held and every mark not yet sent, flags sent marks as
    /// cleared, and restarts the clock. The bridge sends Twilio `clear` if told to.
    pub fn interrupt(&mut self, now: Instant) -> Interruption {
        let dropped = (self.count * FRAME_SAMPLES) as u64;
        let unplayed = self.sent_total - self.played(now);
        self.head = 0;
        self.count = 0;
        // Positions count audio that will really be sent: forget the dropped frames.
        self.pushed_total = self.sent_total;
        self.pending_marks.clear();
        for m in &mut self.sent_marks {
            m.cleared = true;
        }
        self.anchor = None;
        self.in_turn = false;
        self.turn_sent = false;
        self.since_mark = 0;
        self.last_now = Some(now);
        self.stats.interruptions += 1;
        self.stats.interrupted_dropped_ms += dropped / 8;
        Interruption {
            dropped_ms: dropped / 8,
            unplayed_ms: unplayed / 8,
            send_clear: unplayed > 0 || !self.sent_marks.is_empty(),
        }
    }

    /// Audio sent but (estimated) not yet played at `now`, ms: the current lead.
    pub fn lead_ms_at(&self, now: Instant) -> u64 {
        (self.sent_total - self.played(now)) / 8
    }

    /// Marks placed but not yet sent (each goes out right after the audio before it).
    pub fn pending_marks(&self) -> usize {
        self.pending_marks.len()
    }

    /// Bytes held (always whole frames).
    pub fn held_bytes(&self) -> usize {
        self.count * FRAME_SAMPLES
    }

    /// Counters so far.
    pub fn stats(&self) -> PlayoutStats {
        PlayoutStats {
            buffered_ms: self.count as u64 * 20,
            ..self.stats
        }
    }
}

fn samples_to_duration(samples: u64) -> Duration {
    Duration::from_micros(samples * 125)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn drain(p: &mut PlayoutBuffer, now: Instant) -> (usize, usize) {
        let (mut frames, mut marks) = (0, 0);
        while let Some(t) = p.poll_transmit(now) {
            match t {
                Transmit::Media(s) => frames += STANDARD.decode(s).unwrap().len() / 160,
                Transmit::Mark(_) => marks += 1,
            }
        }
        (frames, marks)
    }

    /// A buffer that marks only the end of a turn.
    fn without_periodic_marks() -> PlayoutBuffer {
        PlayoutBuffer::new(PlayoutConfig {
            mark_interval_ms: 0,
            ..PlayoutConfig::default()
        })
    }

    #[test]
    fn burst_is_paced_to_the_lead_on_an_absolute_clock() {
        let t0 = Instant::now();
        let mut p = without_periodic_marks();
        for _ in 0..50 {
            assert!(p.push_frame(1, &[0x55; 160]));
        }
        assert_eq!(drain(&mut p, t0), (5, 0));
        assert_eq!(p.poll_timeout(), Some(at(t0, 20)));
        // A late wake-up sends the backlog at once; timing does not drift.
        assert_eq!(drain(&mut p, at(t0, 65)), (3, 0));
        assert_eq!(p.poll_timeout(), Some(at(t0, 80)));
        assert!(p.lead_ms_at(at(t0, 65)) <= 100);
    }

    #[test]
    fn marks_after_an_interruption_follow_their_own_audio() {
        let t0 = Instant::now();
        let mut p = without_periodic_marks();
        for _ in 0..50 {
            p.push_frame(1, &[1; 160]);
        }
        drain(&mut p, t0);
        p.interrupt(at(t0, 10));
        p.push_frame(2, &[2; 160]);
        p.end_turn();
        let mut out = Vec::new();
        while let Some(t) = p.poll_transmit(at(t0, 10)) {
            out.push(matches!(t, Transmit::Mark(_)));
        }
        assert_eq!(out, vec![false, true]);
        let echo = p.handle_mark_echo("ignis-1").unwrap();
        assert!(echo.end_of_turn && !echo.cleared && echo.event_id == 2);
        assert_eq!(echo.stream_ms, 120);
    }
}
