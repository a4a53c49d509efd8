//! The call registry: which calls have a live media stream, how each one ended, and how to tear
//! one down. The stream handler registers into it; the status and stream-ended webhooks read it.
//!
//! It holds no sockets: a live entry carries a teardown callback supplied by the driver, so the
//! status webhook can end a session without knowing how sessions are run. Time is an argument.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::twilio::webhook::CallStatus;

/// How long an ended call's outcome is remembered (Twilio asks `stream-ended` right after the
/// socket closes; status callbacks may arrive later and out of order).
pub const ENDED_RETENTION: Duration = Duration::from_secs(15 * 60);
/// Most entries (live + remembered) held; past it the oldest ended entries are forgotten first,
/// and a full registry refuses new remembered outcomes rather than grow.
pub const MAX_ENTRIES: usize = 100_000;

/// How a call's conversation ended, as `stream-ended` needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The agent ended the conversation normally: hang up.
    Completed,
    /// The caller hung up (Twilio `stop` or a terminal status callback).
    CallerHungUp,
    /// The agent failed (connect error, error close, dead socket): send the caller to a human.
    AgentFailed,
    /// The stream was closed by ignis shutting down.
    ServerShutdown,
    /// The stream socket dropped without a `stop`.
    StreamLost,
    /// The call was refused (capacity): fall back.
    Refused,
}

impl Outcome {
    /// Whether the caller should simply be hung up on (anything else gets the fallback).
    pub fn finished_normally(self) -> bool {
        matches!(self, Outcome::Completed | Outcome::CallerHungUp)
    }

    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::CallerHungUp => "caller_hung_up",
            Outcome::AgentFailed => "agent_failed",
            Outcome::ServerShutdown => "server_shutdown",
            Outcome::StreamLost => "stream_lost",
            Outcome::Refused => "refused",
        }
    }
}

/// Why a session is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeardownReason {
    /// Twilio reported the call over.
    CallEnded,
    /// ignis is shutting down and the drain deadline passed.
    Shutdown,
}

/// Called (once) to stop a live session.
pub type Teardown = Arc<dyn Fn(TeardownReason) + Send + Sync>;

enum State {
    Live { teardown: Teardown, stream_id: u64 },
    Ended { outcome: Outcome, at: Instant },
}

struct Entry {
    state: State,
    last_sequence: Option<u64>,
}

/// Why a stream could not register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// The call already has a live stream (one bidirectional stream per call, docs/twilio.md §1.6).
    AlreadyLive,
    /// Twilio already reported this call as ended.
    AlreadyEnded,
    /// The registry is full.
    Full,
}

/// What a status callback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusEffect {
    /// A live session was told to stop.
    TornDown,
    /// Nothing live; the terminal status was remembered (idempotent, order-safe).
    Recorded,
    /// Non-terminal or stale (older sequence number) status: nothing to do.
    Ignored,
}

/// Registry of calls by CallSid.
#[derive(Default, Clone)]
pub struct CallRegistry {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

impl CallRegistry {
    /// An empty registry.
    pub fn new() -> CallRegistry {
        CallRegistry::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent (every update is a
        // single insert/remove), so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a live stream for `call_sid`. `stream_id` identifies this registration so a
    /// stale stream cannot end a newer one.
    pub fn register(
        &self,
        call_sid: &str,
        stream_id: u64,
        teardown: Teardown,
        now: Instant,
    ) -> Result<(), RegisterError> {
        let mut map = self.lock();
        match map.get(call_sid).map(|e| &e.state) {
            Some(State::Live { .. }) => return Err(RegisterError::AlreadyLive),
            Some(State::Ended {
                outcome: Outcome::CallerHungUp,
                ..
            }) => return Err(RegisterError::AlreadyEnded),
            _ => {}
        }
        if map.len() >= MAX_ENTRIES && !map.contains_key(call_sid) {
            sweep_locked(&mut map, now, Duration::ZERO);
            if map.len() >= MAX_ENTRIES {
                return Err(RegisterError::Full);
            }
        }
        let last_sequence = map.get(call_sid).and_then(|e| e.last_sequence);
        map.insert(
            call_sid.to_owned(),
            Entry {
                state: State::Live {
                    teardown,
                    stream_id,
                },
                last_sequence,
            },
        );
        Ok(())
    }

    /// Records how the stream `stream_id` of `call_sid` ended and drops its teardown handle.
    /// A later outcome for the same call does not overwrite an earlier one.
    pub fn finish(&self, call_sid: &str, stream_id: u64, outcome: Outcome, now: Instant) {
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(call_sid)
            && let State::Live { stream_id: id, .. } = entry.state
            && id == stream_id
        {
            entry.state = State::Ended { outcome, at: now };
        }
    }

    /// The recorded outcome of a call, if it ended.
    pub fn outcome(&self, call_sid: &str) -> Option<Outcome> {
        match self.lock().get(call_sid)?.state {
            State::Ended { outcome, .. } => Some(outcome),
            State::Live { .. } => None,
        }
    }

    /// Whether the call has a live stream.
    pub fn is_live(&self, call_sid: &str) -> bool {
        matches!(
            self.lock().get(call_sid).map(|e| &e.state),
            Some(State::Live { .. })
        )
    }

    /// Number of live streams.
    pub fn live_count(&self) -> usize {
        self.lock()
            .values()
            .filter(|e| matches!(e.state, State::Live { .. }))
            .count()
    }

    /// Number of entries (live and remembered).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the registry holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies a status callback: a terminal status tears down the live session, if any.
    /// Idempotent and safe against callbacks that arrive out of order (docs/twilio.md §3.2).
    pub fn handle_status(
        &self,
        call_sid: &str,
        status: CallStatus,
        sequence: Option<u64>,
        now: Instant,
    ) -> StatusEffect {
        let teardown = {
            let mut map = self.lock();
            if let (Some(seq), Some(entry)) = (sequence, map.get(call_sid))
                && entry.last_sequence.is_some_and(|last| seq < last)
            {
                return StatusEffect::Ignored;
            }
            if let Some(entry) = map.get_mut(call_sid) {
                entry.last_sequence = sequence.max(entry.last_sequence);
            }
            if !status.is_terminal() {
                return StatusEffect::Ignored;
            }
            match map.get_mut(call_sid) {
                Some(entry) => match &entry.state {
                    State::Live { teardown, .. } => {
                        let t = teardown.clone();
                        entry.state = State::Ended {
                            outcome: Outcome::CallerHungUp,
                            at: now,
                        };
                        Some(t)
                    }
                    State::Ended { .. } => return StatusEffect::Recorded,
                },
                None => {
                    if map.len() >= MAX_ENTRIES {
                        sweep_locked(&mut map, now, Duration::ZERO);
                    }
                    if map.len() < MAX_ENTRIES {
                        map.insert(
                            call_sid.to_owned(),
                            Entry {
                                state: State::Ended {
                                    outcome: Outcome::CallerHungUp,
                                    at: now,
                                },
                                last_sequence: sequence,
                            },
                        );
                    }
                    return StatusEffect::Recorded;
                }
            }
        };
        // Run the callback outside the lock: it may call back into the registry.
        if let Some(t) = teardown {
            t(TeardownReason::CallEnded);
            return StatusEffect::TornDown;
        }
        StatusEffect::Recorded
    }

    /// Tells every live session to stop (shutdown after the drain deadline).
    pub fn teardown_all(&self, reason: TeardownReason) -> usize {
        let handles: Vec<Teardown> = self
            .lock()
            .values()
            .filter_map(|e| match &e.state {
                State::Live { teardown, .. } => Some(teardown.clone()),
                State::Ended { .. } => None,
            })
            .collect();
        for t in &handles {
            t(reason);
        }
        handles.len()
    }

    /// Forgets ended calls older than [`ENDED_RETENTION`]. Call periodically.
    pub fn sweep(&self, now: Instant) {
        sweep_locked(&mut self.lock(), now, ENDED_RETENTION);
    }
}

fn sweep_locked(map: &mut HashMap<String, Entry>, now: Instant, keep: Duration) {
    map.retain(|_, e| match e.state {
        State::Live { .. } => true,
        State::Ended { at, .. } => now.saturating_duration_since(at) < keep,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counter() -> (Arc<AtomicUsize>, Teardown) {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        (
            n,
            Arc::new(move |_| {
                n2.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    #[test]
    fn status_tears_down_once_and_is_idempotent() {
        let r = CallRegistry::new();
        let now = Instant::now();
        let (n, t) = counter();
        r.register("CA1", 1, t, now).unwrap();
        assert_eq!(r.live_count(), 1);
        assert_eq!(
            r.handle_status("CA1", CallStatus::InProgress, Some(1), now),
            StatusEffect::Ignored
        );
        assert_eq!(
            r.handle_status("CA1", CallStatus::Completed, Some(3), now),
            StatusEffect::TornDown
        );
        assert_eq!(
            r.handle_status("CA1", CallStatus::Completed, Some(3), now),
            StatusEffect::Recorded
        );
        // An older callback arriving late changes nothing.
        assert_eq!(
            r.handle_status("CA1", CallStatus::Ringing, Some(2), now),
            StatusEffect::Ignored
        );
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert_eq!(r.live_count(), 0);
        assert_eq!(r.outcome("CA1"), Some(Outcome::CallerHungUp));
    }

    #[test]
    fn unknown_call_status_is_remembered_and_blocks_late_stream() {
        let r = CallRegistry::new();
        let now = Instant::now();
        assert_eq!(
            r.handle_status("CA9", CallStatus::Completed, None, now),
            StatusEffect::Recorded
        );
        let (_, t) = counter();
        assert_eq!(
            r.register("CA9", 1, t, now),
            Err(RegisterError::AlreadyEnded)
        );
        r.sweep(now + ENDED_RETENTION);
        assert!(r.is_empty());
    }

    #[test]
    fn finish_records_first_outcome_and_ignores_stale_stream() {
        let r = CallRegistry::new();
        let now = Instant::now();
        let (_, t) = counter();
        r.register("CA1", 7, t, now).unwrap();
        r.finish("CA1", 6, Outcome::StreamLost, now);
        assert!(r.is_live("CA1"));
        r.finish("CA1", 7, Outcome::AgentFailed, now);
        r.finish("CA1", 7, Outcome::Completed, now);
        assert_eq!(r.outcome("CA1"), Some(Outcome::AgentFailed));
        let (_, t) = counter();
        assert_eq!(r.register("CA1", 8, t.clone(), now), Ok(()));
        assert_eq!(
            r.register("CA1", 9, t, now),
            Err(RegisterError::AlreadyLive)
        );
    }
}
