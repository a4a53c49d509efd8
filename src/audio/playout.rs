//! Outbound playout buffer: whole 20 ms μ-law frames in, paced Twilio `media` and `mark` out.
//!
//! Agent audio arrives in bursts, much faster than real time. Sending it all at once would leave
//! seconds of speech in Twilio's buffer that only `clear` can stop, and would hide what the
//! caller has actually heard. Instead (docs/dsp.md §3.7) this buffer keeps the audio sent ahead
//! of Twilio's estimated playout position (the *lead*) between a refill threshold and a target,
//! in few, larger messages, and holds the rest:
//! - the first audio while Twilio's queue is empty (start of a turn, after running dry, after a
//!   `clear`) goes out at once as one 20 ms message; after that, when polled with a lead of at
//!   most [`PlayoutConfig::refill_ms`], one message tops the lead back up to at most
//!   [`PlayoutConfig::lead_ms`] (80–100 ms per message with the defaults);
//! - the bridge polls on every caller frame (every 20 ms), which is the pacing clock;
//!   [`PlayoutBuffer::poll_timeout`] is only a fallback for when those frames stop: it comes due
//!   when the lead would fall to [`PlayoutConfig::floor_ms`];
//! - the position is computed on an absolute clock (`anchor + samples sent`), so pacing never
//!   drifts however late the driver wakes up;
//! - on interruption everything held is dropped at once: the `clear` the bridge then sends to
//!   Twilio only has to discard the lead (≤ `lead_ms`);
//! - `mark`s: one at each end of turn (a message never runs past it), and at most one per
//!   [`PlayoutConfig::mark_interval_ms`] of audio, sent after the message that covers its
//!   position (never splitting one); their echoes say what the caller has really heard
//!   (docs/twilio.md §1.4);
//! - an agent that sends no faster than the caller hears (its next chunk comes when Twilio is
//!   within a frame of running dry) gets a *cushion*: from then on audio that finds Twilio's
//!   queue (nearly) empty waits [`PlayoutConfig::cushion_step_ms`] before it starts, so later
//!   chunk boundaries arrive in time instead of each costing a gap; a turn in which the agent
//!   stayed ahead takes a step off again (docs/dsp.md §3.9);
//! - underrun (Twilio ran dry mid-turn): nothing is synthesised, it is counted;
//!   overrun (more than [`PlayoutConfig::max_buffer_ms`] held): the newest audio is dropped and
//!   counted. Neither is an error.
//!
//! Driving it: after any input (and on every caller frame), call
//! [`PlayoutBuffer::poll_transmit`] until `None`; if no input comes, poll again at
//! [`PlayoutBuffer::poll_timeout`].

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
/// Cap on [`PlayoutConfig::max_cushion_ms`]: a cushion is start-up latency on every turn.
pub const MAX_CUSHION_MS: u32 = 500;
/// Prefix of the mark names this buffer generates (`ignis-<seq>`).
pub const MARK_PREFIX: &str = "ignis-";

const FRAME: u64 = FRAME_SAMPLES as u64;
/// Ring frames allocated up front (320 ms, one 250 ms agent chunk); more are allocated as a turn
/// needs them, and given back once the turn has left (`give_back`): a call's memory follows the
/// audio it holds now, not its longest turn (issue 16: RSS per call ≤ 64 KiB).
const INITIAL_RING_FRAMES: usize = 16;
/// Marks waiting to be sent; bounded by one per frame of the largest buffer.
const MAX_PENDING_MARKS: usize = 4096;
/// Mark-queue slots allocated up front; the queues double as needed up to their limits.
const INITIAL_MARKS: usize = 16;

/// Playout settings (docs/dsp.md §3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayoutConfig {
    /// Lead target: the most audio sent ahead of Twilio's estimated playout, ms. Default 130.
    /// It bounds what a `clear` has to discard: ≤ 150 ms with 20 ms to spare for the network.
    pub lead_ms: u32,
    /// Refill threshold, ms: a poll tops the lead up only once it is at most this (clamped to
    /// `lead_ms − 20`). Default 50: polled every 20 ms, a top-up then carries 80 ms whatever the
    /// phase of the polls, and the lead stays above 30 ms.
    pub refill_ms: u32,
    /// Timer floor, ms: [`PlayoutBuffer::poll_timeout`] comes due only when the lead would fall
    /// to this, i.e. when the caller's frames (the usual pacing clock) stopped. Default 20
    /// (clamped to at most `refill_ms`); then a top-up carries 100 ms.
    pub floor_ms: u32,
    /// Most audio held, ms; beyond it new audio is dropped and counted. Default 60 000.
    pub max_buffer_ms: u32,
    /// Most frames in one `media` message. Default 5 (100 ms).
    pub max_frames_per_message: usize,
    /// At most one periodic mark per this many ms of audio (0: only at end of turn).
    /// Default 1000: they only feed the `heard_ms` statistics.
    pub mark_interval_ms: u32,
    /// Cushion step, ms: added for each gap in which agent audio of a turn under way came late
    /// (after a pause pad, or with Twilio within `floor_ms` of running dry), taken off after a
    /// turn the agent stayed ahead in (docs/dsp.md §3.9). Default 40 (0: never hold audio back).
    pub cushion_step_ms: u32,
    /// Largest cushion, ms (clamped to [`MAX_CUSHION_MS`]). Default 120.
    pub max_cushion_ms: u32,
}

impl Default for PlayoutConfig {
    fn default() -> Self {
        Self {
            lead_ms: 130,
            refill_ms: 50,
            floor_ms: 20,
            max_buffer_ms: 60_000,
            max_frames_per_message: 5,
            mark_interval_ms: 1000,
            cushion_step_ms: 40,
            max_cushion_ms: 120,
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
    /// Gaps in which agent audio of a turn under way came late (each raised the cushion,
    /// docs/dsp.md §3.9).
    pub late_arrivals: u64,
    /// The cushion now, ms.
    pub cushion_ms: u64,
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
    /// Lead target, refill threshold and timer floor, in samples (see [`PlayoutConfig`]).
    lead: u64,
    refill: u64,
    floor: u64,
    mark_interval: u64,
    /// Ring of held frames (`head`, `count`), sized once from `max_buffer_ms`.
    /// Grows on demand (by half, rotated so `head` is 0) up to `cap_frames`: allocating the
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
    /// Cushion (samples) and its step and cap; while `hold_until` is ahead, nothing is sent.
    cushion: u64,
    cushion_step: u64,
    max_cushion: u64,
    hold_until: Option<Instant>,
    /// Agent chunks of this turn, and whether one found nothing whole held mid-turn (the agent
    /// was not ahead of the caller).
    turn_arrivals: u32,
    turn_waited: bool,
    /// Agent chunks of the next turn that arrived while this one's end was still on its way
    /// from the DSP pool ([`PlayoutBuffer::next_turn_audio_arrived`]).
    next_turn_arrivals: u32,
    /// A pause pad was made (with the DSP pool: reported made) since the last agent chunk.
    padded: bool,
    /// A pause pad was asked of the DSP pool and no agent chunk has arrived since: only then
    /// does its result, if it made one, make the next chunk late.
    pad_asked: bool,
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
        // A top-up must have room for at least one frame, and the timer must not come due
        // before the lead is down to where a poll would top it up.
        let refill_ms = config.refill_ms.min(lead_ms - 20);
        let floor_ms = config.floor_ms.min(refill_ms);
        let max_cushion_ms = config.max_cushion_ms.min(MAX_CUSHION_MS);
        let config = PlayoutConfig {
            lead_ms,
            refill_ms,
            floor_ms,
            max_buffer_ms: max_ms,
            max_frames_per_message: per_msg,
            mark_interval_ms: config.mark_interval_ms,
            cushion_step_ms: config.cushion_step_ms.min(max_cushion_ms),
            max_cushion_ms,
        };
        let cap_frames = (max_ms as usize / 20).max(1);
        Self {
            config,
            lead: u64::from(lead_ms) * 8,
            refill: u64::from(refill_ms) * 8,
            floor: u64::from(floor_ms) * 8,
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
            cushion: 0,
            cushion_step: u64::from(config.cushion_step_ms) * 8,
            max_cushion: u64::from(max_cushion_ms) * 8,
            hold_until: None,
            turn_arrivals: 0,
            turn_waited: false,
            next_turn_arrivals: 0,
            pad_asked: false,
            padded: false,
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
            // ×1.5, not ×2: a held turn's slack is a third of it, not half (RSS), while a
            // minute-long turn still takes only ~10 reallocations.
            let len = self.ring.len();
            let grown = (len + (len / 2).max(INITIAL_RING_FRAMES)).min(self.cap_frames);
            // `reserve_exact`: `resize` alone would let `Vec` double the capacity anyway.
            self.ring.reserve_exact(grown - len);
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
        // The agent stayed ahead for a whole turn of several chunks: it no longer needs the
        // cushion it was given (one step per such turn, docs/dsp.md §3.9).
        if self.turn_arrivals >= 2 && !self.turn_waited {
            self.cushion = self.cushion.saturating_sub(self.cushion_step);
        }
        self.turn_arrivals = std::mem::take(&mut self.next_turn_arrivals);
        self.turn_waited = false;
        self.padded = false;
        self.pad_asked = false;
        self.in_turn = false;
        self.turn_sent = false;
        self.give_back();
    }

    /// A partial frame upstream was just completed with silence because the caller was about to
    /// run dry (docs/dsp.md §3.8): agent audio arriving next comes late.
    pub fn note_pause_pad(&mut self) {
        self.padded = true;
    }

    /// For a pacer whose pause pads the DSP pool makes: one was just asked for. Whether it made
    /// one is known only when its frames come back ([`PlayoutBuffer::pool_pad_made`]).
    pub fn pool_pad_asked(&mut self) {
        self.pad_asked = true;
    }

    /// The DSP pool reports the pause pad asked for made: as [`PlayoutBuffer::note_pause_pad`],
    /// unless an agent chunk arrived after the pad was asked for. That chunk's audio follows
    /// the pad, but whether it came late could not be told when it was timed; the pad must not
    /// be charged to the chunk after it instead (docs/dsp.md §3.9).
    pub fn pool_pad_made(&mut self) {
        if std::mem::take(&mut self.pad_asked) {
            self.padded = true;
        }
    }

    /// The DSP pool's end of turn came back to a pacer with no turn of its own (the turn's
    /// chunks made no frames here): chunks of the next turn timed meanwhile still count
    /// toward it.
    pub fn end_turn_without_frames(&mut self) {
        let next = std::mem::take(&mut self.next_turn_arrivals);
        self.turn_arrivals = self.turn_arrivals.saturating_add(next);
    }

    /// Agent audio has arrived at `now` (call before its frames are pushed; audio of an
    /// interrupted turn does not count). If it finds nothing whole held and either a pause pad
    /// made since the last chunk or Twilio within `floor_ms` of running dry, it came late:
    /// mid-turn that raises the cushion by a step, and with a cushion its first frame waits that
    /// long (docs/dsp.md §3.9).
    pub fn agent_audio_arrived(&mut self, now: Instant) {
        self.turn_arrivals = self.turn_arrivals.saturating_add(1);
        self.time_arrival(now, self.in_turn && self.turn_sent);
    }

    /// For a pacer whose turn ends only when the DSP pool's end-of-turn result comes back:
    /// agent audio of the next turn has arrived at `now`, while this turn's end is still on its
    /// way. As in [`PlayoutBuffer::agent_audio_arrived`], except that it is never late for the
    /// turn still open here (inline that turn would already be over), and it counts toward the
    /// next one (docs/dsp.md §3.9).
    pub fn next_turn_audio_arrived(&mut self, now: Instant) {
        self.next_turn_arrivals = self.next_turn_arrivals.saturating_add(1);
        self.time_arrival(now, false);
    }

    fn time_arrival(&mut self, now: Instant, mid_turn: bool) {
        let padded = std::mem::take(&mut self.padded);
        self.pad_asked = false;
        if self.count > 0 {
            return;
        }
        self.turn_waited |= mid_turn;
        // Already holding for this gap (an earlier chunk of it found the queue dry, its frames
        // not whole or, with the DSP pool, not back yet): one gap, one step, one hold.
        if self.hold_until.is_some_and(|h| now < h) {
            return;
        }
        if !padded && self.sent_total - self.played(now) > self.floor {
            return;
        }
        if mid_turn && self.cushion_step > 0 {
            self.cushion = (self.cushion + self.cushion_step).min(self.max_cushion);
            self.stats.late_arrivals += 1;
        }
        if self.cushion > 0 {
            self.hold_until = Some(now + samples_to_duration(self.cushion));
        }
    }

    /// Between turns, with nothing held: shrinks a ring that a long turn grew back to its
    /// initial size. At most one reallocation per turn, never per message.
    fn give_back(&mut self) {
        if self.count == 0 && !self.in_turn && self.ring.len() > INITIAL_RING_FRAMES {
            self.head = 0;
            self.ring.truncate(INITIAL_RING_FRAMES);
            self.ring.shrink_to_fit();
        }
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
        if let Some(m) = self.pop_due_mark() {
            return Some(self.send_mark(m));
        }
        if self.count == 0 {
            return None;
        }
        if let Some(hold) = self.hold_until {
            if now < hold {
                return None;
            }
            self.hold_until = None;
        }
        let played = self.played(now);
        let empty = self.anchor.is_none() || played >= self.sent_total;
        let room = if empty {
            // Twilio's queue is (estimated) empty: restart the clock here, and send the first
            // frame alone so the caller hears it as soon as possible (docs/dsp.md §3.7).
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
            FRAME
        } else {
            let lead = self.sent_total - played;
            if lead > self.refill {
                return None;
            }
            self.lead - lead
        };
        // A message never runs past an end-of-turn mark: its echo marks the turn's last sample.
        let until_turn_end = self
            .pending_marks
            .iter()
            .find(|m| m.end_of_turn)
            .map_or(u64::MAX, |m| (m.at - self.sent_total) / FRAME);
        let frames = (room / FRAME)
            .min(self.count as u64)
            .min(self.config.max_frames_per_message as u64)
            .min(until_turn_end) as usize;
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
        self.give_back();
        self.stats.frames_sent += frames as u64;
        self.stats.messages_sent += 1;
        self.text.clear();
        STANDARD.encode_string(&self.scratch[..n], &mut self.text);
        Some(Transmit::Media(&self.text))
    }

    /// The next mark whose position has been sent. Of several due periodic marks only the last
    /// goes out (its echo implies the others'): at most one per message, so the rate stays
    /// bounded whatever `mark_interval_ms` is.
    fn pop_due_mark(&mut self) -> Option<PendingMark> {
        loop {
            let m = *self.pending_marks.front()?;
            if m.at > self.sent_total {
                return None;
            }
            self.pending_marks.pop_front();
            let next_due = self
                .pending_marks
                .front()
                .is_some_and(|n| n.at <= self.sent_total);
            if m.end_of_turn || !next_due {
                return Some(m);
            }
        }
    }

    fn send_mark(&mut self, m: PendingMark) -> Transmit<'_> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.sent_marks.len() >= MAX_OUTSTANDING_MARKS {
            self.sent_marks.pop_front();
        }
        // A periodic mark follows the message that covers its position, so its echo proves
        // everything sent so far was heard.
        self.sent_marks.push_back(SentMark {
            seq,
            at: self.sent_total.max(m.at),
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

    /// When [`PlayoutBuffer::poll_transmit`] must next be called if nothing else polls it
    /// first, or `None` if nothing is held (push more audio first). A fallback for when the
    /// caller's frames stop: it comes due only once the lead would fall to
    /// [`PlayoutConfig::floor_ms`], below the refill threshold that a poll on every caller frame
    /// reaches first (docs/dsp.md §3.7).
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
        if let Some(hold) = self.hold_until {
            return Some(hold);
        }
        let Some(anchor) = self.anchor else {
            return Some(now);
        };
        // The lead falls to the floor once Twilio has played up to `sent_total − floor`.
        let due = self.sent_total.saturating_sub(self.floor);
        Some(anchor + samples_to_duration(due.saturating_sub(self.anchor_sent)))
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
            return Some(self.hold_until.map_or(now, |h| now.max(h)));
        };
        let margin = FRAME.min(self.lead.saturating_sub(FRAME));
        let due = self.sent_total.saturating_sub(margin);
        let dry = anchor + samples_to_duration(due.saturating_sub(self.anchor_sent));
        // Nothing leaves before a hold ends: a partial frame need not be padded before then.
        Some(self.hold_until.map_or(dry, |h| dry.max(h)))
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
        self.hold_until = None;
        self.turn_arrivals = 0;
        self.turn_waited = false;
        self.next_turn_arrivals = 0;
        self.padded = false;
        self.pad_asked = false;
        self.since_mark = 0;
        self.last_now = Some(now);
        self.give_back();
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

    /// The name of the newest mark sent and not yet echoed, unless a clear dropped its audio:
    /// its echo will prove everything sent before it played. For an ending that begins after
    /// the last end-of-turn mark went out (allocates; once per call).
    pub fn newest_unechoed_mark(&self) -> Option<String> {
        self.sent_marks
            .back()
            .filter(|m| !m.cleared)
            .map(|m| format!("{MARK_PREFIX}{}", m.seq))
    }

    /// Marks placed but not yet sent (each goes out right after the audio before it).
    pub fn pending_marks(&self) -> usize {
        self.pending_marks.len()
    }

    /// Bytes held (always whole frames).
    pub fn held_bytes(&self) -> usize {
        self.count * FRAME_SAMPLES
    }

    /// Bytes the ring has allocated (held or free): what the call's memory pays for playout.
    pub fn ring_bytes(&self) -> usize {
        self.ring.capacity() * FRAME_SAMPLES
    }

    /// Counters so far.
    pub fn stats(&self) -> PlayoutStats {
        PlayoutStats {
            buffered_ms: self.count as u64 * 20,
            cushion_ms: self.cushion / 8,
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
    fn burst_starts_with_one_frame_then_tops_up_on_an_absolute_clock() {
        let t0 = Instant::now();
        let mut p = without_periodic_marks();
        for _ in 0..50 {
            assert!(p.push_frame(1, &[0x55; 160]));
        }
        // One frame at once, then a top-up to the 130 ms target (whole frames): 120 ms.
        assert_eq!(p.poll_transmit(t0).map(frames_of), Some(1));
        assert_eq!(drain(&mut p, t0), (5, 0));
        // Not polled: the fallback comes due when the lead is down to the 20 ms floor.
        assert_eq!(p.poll_timeout(), Some(at(t0, 100)));
        // Polled above the refill threshold (50 ms): nothing.
        assert_eq!(drain(&mut p, at(t0, 60)), (0, 0));
        // A late wake-up tops up at once; timing does not drift.
        assert_eq!(drain(&mut p, at(t0, 105)), (5, 0));
        assert_eq!(p.lead_ms_at(at(t0, 105)), 115);
        assert_eq!(p.poll_timeout(), Some(at(t0, 200)));
    }

    fn frames_of(t: Transmit<'_>) -> usize {
        match t {
            Transmit::Media(s) => STANDARD.decode(s).unwrap().len() / 160,
            Transmit::Mark(_) => 0,
        }
    }

    /// What a turn driven like the bridge did: every message (time, frames; 0 for a mark) and
    /// every deadline seen after a poll.
    struct Run {
        sent: Vec<(Instant, usize)>,
        deadlines: Vec<(Instant, Option<Instant>)>,
    }

    /// Plays a turn of `frames` frames pushed at `t0`, polled at `t0` and then at every caller
    /// frame (`phase_ms` + 20·k) and nowhere else, up to `until_ms`. Checks the lead target on
    /// every message and the interruption bound at every poll.
    fn caller_paced(frames: usize, phase_ms: u64, until_ms: u64) -> (PlayoutBuffer, Run) {
        let t0 = Instant::now();
        let mut p = PlayoutBuffer::new(PlayoutConfig::default());
        for _ in 0..frames {
            p.push_frame(1, &[7; 160]);
        }
        p.end_turn();
        let mut run = Run {
            sent: Vec::new(),
            deadlines: Vec::new(),
        };
        let polls = std::iter::once(t0).chain((0..).map(|k| at(t0, phase_ms + 20 * k)));
        for now in polls.take_while(|&t| t <= at(t0, until_ms)) {
            while let Some(t) = p.poll_transmit(now) {
                run.sent.push((now, frames_of(t)));
                assert!(p.lead_ms_at(now) <= 130, "lead above target");
            }
            run.deadlines.push((now, p.poll_timeout()));
        }
        (p, run)
    }

    #[test]
    fn caller_frames_pace_a_turn_in_few_messages_and_marks() {
        for phase in [0, 1, 7, 13, 19] {
            let (p, run) = caller_paced(250, phase, 6000);
            let media: Vec<usize> = run.sent.iter().map(|s| s.1).filter(|&f| f > 0).collect();
            assert_eq!(media.iter().sum::<usize>(), 250, "phase {phase}");
            assert_eq!(media[0], 1, "first message of the turn is one frame");
            // After it, 40–100 ms per message; only the turn's tail may be shorter.
            let (tail, body) = media[1..].split_last().unwrap();
            assert!(body.iter().all(|&f| (2..=5).contains(&f)), "{media:?}");
            assert!((1..=5).contains(tail));
            // 5 s of audio: at most ~15 messages and ~1 mark per second.
            assert!(media.len() <= 75, "phase {phase}: {} messages", media.len());
            let marks = run.sent.iter().filter(|s| s.1 == 0).count();
            assert!((1..=5).contains(&marks), "phase {phase}: {marks} marks");
            assert_eq!(p.stats().marks_sent as usize, marks);
            // The fallback timer never comes due before the next caller frame.
            for (now, deadline) in &run.deadlines {
                if let Some(d) = deadline {
                    assert!(
                        *d > *now + Duration::from_millis(20),
                        "phase {phase}: timer due {:?} after a poll",
                        d.saturating_duration_since(*now)
                    );
                }
            }
            assert_eq!(p.stats().underruns, 0);
        }
    }

    #[test]
    fn the_timer_alone_plays_a_turn_without_underrun() {
        let t0 = Instant::now();
        let mut p = PlayoutBuffer::new(PlayoutConfig::default());
        for _ in 0..250 {
            p.push_frame(1, &[7; 160]);
        }
        let mut now = t0;
        let mut wakeups = 0;
        while let Some(t) = p.poll_timeout().or(Some(t0)).filter(|_| p.held_bytes() > 0) {
            now = now.max(t);
            wakeups += 1;
            drain(&mut p, now);
            let lead = p.lead_ms_at(now);
            assert!(lead > 0 && lead <= 130, "lead {lead} at a timer wake-up");
            assert!(wakeups < 1000);
        }
        assert_eq!(p.stats().frames_sent, 250);
        assert_eq!(p.stats().underruns, 0);
        // One wake-up per ~100 ms top-up, not one per frame.
        assert!(wakeups <= 55, "{wakeups} wake-ups for 5 s");
    }

    #[test]
    fn an_interruption_leaves_at_most_150_ms_queued_at_any_moment() {
        for ms in (0..5200).step_by(7) {
            let (mut p, _) = caller_paced(250, 3, ms);
            let now = p.last_poll().unwrap() + Duration::from_millis(ms % 20);
            let i = p.interrupt(now);
            assert!(i.unplayed_ms <= 150, "at {ms} ms: {i:?}");
            assert!(i.unplayed_ms <= 130, "at {ms} ms: {i:?}");
            assert_eq!(p.held_bytes(), 0);
            assert_eq!(p.poll_timeout(), None);
            if ms < 4800 {
                assert!(i.send_clear && i.dropped_ms > 0, "at {ms} ms: {i:?}");
            }
        }
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
        // 1 + 5 frames sent before the interruption, then the new turn's one frame.
        assert_eq!(echo.stream_ms, 140);
    }

    /// A turn's first chunk (100 ms, on time) sent to Twilio at `t0`: it runs dry at 100 ms.
    fn turn_of_100_ms_sent(t0: Instant) -> PlayoutBuffer {
        let mut p = without_periodic_marks();
        p.agent_audio_arrived(t0);
        for _ in 0..5 {
            p.push_frame(1, &[7; 160]);
        }
        assert_eq!(drain(&mut p, t0), (5, 0));
        p
    }

    /// One gap, two chunks in it (a burst after a stall; with the DSP pool every chunk
    /// read before the pool hands back the first one's frames finds nothing whole held). The
    /// gap is one late arrival: the cushion takes one step, and the hold is not pushed back.
    #[test]
    fn chunks_arriving_in_one_gap_raise_the_cushion_once() {
        let t0 = Instant::now();
        let mut p = turn_of_100_ms_sent(t0);
        // Twilio dry at 100 ms: a late chunk, then a second one 5 ms later, its frames not
        // pushed yet.
        p.agent_audio_arrived(at(t0, 100));
        p.agent_audio_arrived(at(t0, 105));
        let s = p.stats();
        assert_eq!((s.late_arrivals, s.cushion_ms), (1, 40));
        p.push_frame(1, &[7; 160]);
        assert_eq!(p.poll_timeout(), Some(at(t0, 140)), "hold pushed back");
    }

    /// docs/dsp.md §3.9 with the DSP pool: chunks of the next turn that arrive while this
    /// turn's end is still on its way are not late for it, even with Twilio dry, and they count
    /// toward the next turn: two of them with the agent ahead take the cushion back.
    #[test]
    fn next_turn_chunks_are_not_late_and_count_toward_the_next_turn() {
        let t0 = Instant::now();
        let mut p = turn_of_100_ms_sent(t0);
        // Mid-turn with Twilio dry: late, a cushion of one step.
        p.agent_audio_arrived(at(t0, 100));
        p.push_frame(1, &[7; 160]);
        assert_eq!(drain(&mut p, at(t0, 140)), (1, 0));
        // Twilio dry again; the turn's end is on its way: two chunks of the next turn.
        p.next_turn_audio_arrived(at(t0, 400));
        p.next_turn_audio_arrived(at(t0, 401));
        let s = p.stats();
        assert_eq!((s.late_arrivals, s.cushion_ms), (1, 40));
        p.end_turn();
        for _ in 0..3 {
            p.push_frame(2, &[7; 160]);
        }
        p.end_turn();
        assert_eq!(
            p.stats().cushion_ms,
            0,
            "the next turn's arrivals were lost"
        );
    }

    /// docs/dsp.md §3.9 with the DSP pool: a pause pad makes the next chunk late only if that
    /// chunk arrives after the pool reported the pad made. A chunk timed between the request
    /// and the report takes the pad with it: the one after is not charged for it.
    #[test]
    fn a_pool_pad_reported_after_a_chunk_is_not_charged_to_the_next() {
        for (chunk_before_report, late) in [(false, 1), (true, 0)] {
            let t0 = Instant::now();
            let mut p = turn_of_100_ms_sent(t0);
            // 40 ms left at Twilio: above the floor, so only a pad makes a chunk late.
            p.pool_pad_asked();
            if chunk_before_report {
                p.agent_audio_arrived(at(t0, 61));
            }
            p.pool_pad_made();
            p.agent_audio_arrived(at(t0, 65));
            assert_eq!(p.stats().late_arrivals, late, "{chunk_before_report}");
        }
    }
}
