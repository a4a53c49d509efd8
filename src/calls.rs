//! The call registry: which calls were answered, which have a live media stream, how each one
//! ended, and how to tear one down. The voice webhook binds a call into it, the stream handshake
//! claims that binding, the stream registers; the status and stream-ended webhooks read it.
//!
//! A call's life: `Pending` (the voice webhook recorded CallSid, From, To and a single-use nonce
//! that the TwiML puts into the stream URL) → `Claimed` (a signed handshake presented the nonce)
//! → `Live` (its `start` named the same CallSid) → `Ended`. A stream can only exist for a signed
//! voice webhook, once, within [`BINDING_TTL`] (docs/twilio.md §8).
//!
//! It holds no sockets: a live entry carries a teardown callback supplied by the driver, so the
//! status webhook can end a session without knowing how sessions are run. Time and the nonce's
//! randomness are arguments.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::twilio::webhook::{CallStatus, IncomingCall};

/// How long an ended call's outcome is remembered (Twilio asks `stream-ended` right after the
/// socket closes; status callbacks may arrive later and out of order).
pub const ENDED_RETENTION: Duration = Duration::from_secs(15 * 60);
/// Most entries (pending, live + remembered) held; past it ended entries are forgotten first,
/// and a full registry refuses new calls and remembered outcomes rather than grow.
pub const MAX_ENTRIES: usize = 100_000;
/// How long a voice webhook's binding waits for its stream. Twilio opens the stream as soon as
/// it has read the TwiML (about a second); a minute covers a slow network and no more.
pub const BINDING_TTL: Duration = Duration::from_secs(60);
/// Bytes of OS randomness in a stream nonce (128 bits: unguessable, and single-use anyway).
pub const NONCE_BYTES: usize = 16;

/// The single-use secret a voice webhook puts into its stream URL
/// (`wss://<host>/api/twilio/stream/<nonce>`). Its `Debug` hides the value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce([u8; NONCE_BYTES]);

impl Nonce {
    /// A nonce from OS randomness (read by the driver).
    pub fn from_entropy(bytes: [u8; NONCE_BYTES]) -> Nonce {
        Nonce(bytes)
    }

    /// Parses the lowercase hex form; `None` for anything else.
    pub fn parse(hex: &str) -> Option<Nonce> {
        let digit = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        let raw = hex.as_bytes();
        if raw.len() != 2 * NONCE_BYTES {
            return None;
        }
        let mut out = [0u8; NONCE_BYTES];
        for (i, pair) in raw.chunks_exact(2).enumerate() {
            out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Nonce(out))
    }

    /// The lowercase hex form, as it appears in the stream URL.
    pub fn to_hex(&self) -> String {
        crate::secret::hex_lower(&self.0)
    }

    /// SHA-256 of the nonce: what the shared database keeps (docs/replicas.md §4.2), so a
    /// database reader cannot open a stream.
    pub fn hash(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(self.0).into()
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Nonce(…)")
    }
}

/// What the voice webhook answered for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// A new call: its binding is recorded; answer the stream TwiML with this nonce and
    /// pre-connect the agent.
    New(Nonce),
    /// The call was already answered and its stream has not come yet (a Twilio retry, or a
    /// replay): the same TwiML with the same nonce, and no second pre-connect.
    Repeat(Nonce),
    /// The call was already answered and its nonce is used or expired: the fallback, never a
    /// second conversation.
    Answered,
    /// `MAX_CALLS` calls are pending or live: the fallback.
    AtCapacity(usize),
    /// The registry is full: the fallback.
    Full,
}

/// Why a stream was refused before any agent, tool token or audio buffer existed. Each is
/// counted under [`StreamRefusal::as_str`] in `ignis_stream_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRefusal {
    /// The stream URL has no nonce (the bare `/api/twilio/stream`).
    NoNonce,
    /// The nonce segment is not a nonce.
    Malformed,
    /// No voice webhook issued this nonce (or it was forgotten).
    Unknown,
    /// The nonce was issued more than [`BINDING_TTL`] ago.
    Expired,
    /// The nonce already opened a stream, or its call ended.
    Used,
    /// The `start` message names another CallSid than the voice webhook's.
    CallSidMismatch,
    /// The `start` message's AccountSid is malformed, differs from the webhook's, or is not
    /// `TWILIO_ACCOUNT_SID`.
    AccountMismatch,
}

impl StreamRefusal {
    /// Every reason, in metrics order.
    pub const ALL: [StreamRefusal; 7] = [
        StreamRefusal::NoNonce,
        StreamRefusal::Malformed,
        StreamRefusal::Unknown,
        StreamRefusal::Expired,
        StreamRefusal::Used,
        StreamRefusal::CallSidMismatch,
        StreamRefusal::AccountMismatch,
    ];

    /// The metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamRefusal::NoNonce => "no_nonce",
            StreamRefusal::Malformed => "malformed_nonce",
            StreamRefusal::Unknown => "unknown_nonce",
            StreamRefusal::Expired => "expired_nonce",
            StreamRefusal::Used => "used_nonce",
            StreamRefusal::CallSidMismatch => "call_sid_mismatch",
            StreamRefusal::AccountMismatch => "account_mismatch",
        }
    }
}

/// A claimed binding: the call as the voice webhook recorded it (its numbers are the call's,
/// whatever the stream's `start` claims), and the id of the one stream allowed to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The voice webhook's record.
    pub call: IncomingCall,
    /// Identifies this stream in [`CallRegistry::register`] and [`CallRegistry::finish`].
    pub stream_id: u64,
}

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
    Pending {
        call: IncomingCall,
        expires: Instant,
    },
    Claimed {
        stream_id: u64,
    },
    Live {
        teardown: Teardown,
        stream_id: u64,
    },
    Ended {
        outcome: Outcome,
        at: Instant,
    },
}

struct Entry {
    state: State,
    last_sequence: Option<u64>,
    /// The binding's nonce, so forgetting the entry forgets the nonce too.
    nonce: Option<Nonce>,
}

impl Entry {
    fn ended(outcome: Outcome, at: Instant, last_sequence: Option<u64>) -> Entry {
        Entry {
            state: State::Ended { outcome, at },
            last_sequence,
            nonce: None,
        }
    }

    /// Whether the call holds a slot against `MAX_CALLS`: answered and not over.
    fn is_active(&self, now: Instant) -> bool {
        match self.state {
            State::Pending { expires, .. } => now < expires,
            State::Claimed { .. } | State::Live { .. } => true,
            State::Ended { .. } => false,
        }
    }
}

#[derive(Default)]
struct Inner {
    calls: HashMap<String, Entry>,
    /// Nonce → CallSid of every remembered binding.
    nonces: HashMap<Nonce, String>,
    next_stream_id: u64,
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
    /// No claimed binding of this stream: every stream needs its voice webhook.
    NotBound,
}

/// What a status callback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusEffect {
    /// A live session was told to stop.
    TornDown,
    /// Nothing live; the terminal status was remembered (idempotent, order-safe).
    Recorded,
    /// The call was answered but its stream had not started (the caller hung up during the
    /// set-up, or a probe call): the driver lets go of its pre-connected agent now.
    EndedBeforeStream,
    /// Non-terminal or stale (older sequence number) status: nothing to do.
    Ignored,
}

/// Registry of calls by CallSid.
#[derive(Default, Clone)]
pub struct CallRegistry {
    inner: Arc<Mutex<Inner>>,
}

impl CallRegistry {
    /// An empty registry.
    pub fn new() -> CallRegistry {
        CallRegistry::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent (every update is a
        // single insert/remove), so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the voice webhook's call with `nonce`, unless the CallSid was already answered
    /// (a replayed or retried webhook never starts a second conversation) or `max_active` calls
    /// are pending or live. Answered calls are remembered as long as ended ones.
    pub fn bind(
        &self,
        call: &IncomingCall,
        nonce: Nonce,
        max_active: usize,
        now: Instant,
    ) -> Bound {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some(entry) = inner.calls.get(call.call_sid.as_str()) {
            return match (&entry.state, entry.nonce) {
                (State::Pending { expires, .. }, Some(n)) if now < *expires => Bound::Repeat(n),
                _ => Bound::Answered,
            };
        }
        let active = inner.calls.values().filter(|e| e.is_active(now)).count();
        if active >= max_active {
            return Bound::AtCapacity(active);
        }
        if inner.calls.len() >= MAX_ENTRIES {
            sweep_locked(inner, now, ENDED_RETENTION);
            if inner.calls.len() >= MAX_ENTRIES {
                return Bound::Full;
            }
        }
        if inner.nonces.contains_key(&nonce) {
            // 128 random bits do not repeat; a broken random source must not merge two calls.
            return Bound::Full;
        }
        let sid = call.call_sid.as_str().to_owned();
        inner.nonces.insert(nonce, sid.clone());
        let state = State::Pending {
            call: call.clone(),
            expires: now + BINDING_TTL,
        };
        inner.calls.insert(
            sid,
            Entry {
                state,
                last_sequence: None,
                nonce: Some(nonce),
            },
        );
        Bound::New(nonce)
    }

    /// Claims the binding of a signed stream handshake whose URL carried `nonce` (`None`: the
    /// URL had no nonce segment). Single use: the first claim wins, every later one is refused.
    pub fn claim(&self, nonce: Option<&str>, now: Instant) -> Result<Claim, StreamRefusal> {
        let nonce = nonce.ok_or(StreamRefusal::NoNonce)?;
        let nonce = Nonce::parse(nonce).ok_or(StreamRefusal::Malformed)?;
        let mut inner = self.lock();
        let inner = &mut *inner;
        let sid = inner.nonces.get(&nonce).ok_or(StreamRefusal::Unknown)?;
        let entry = inner.calls.get_mut(sid).ok_or(StreamRefusal::Unknown)?;
        let State::Pending { call, expires } = &entry.state else {
            return Err(StreamRefusal::Used);
        };
        if now >= *expires {
            return Err(StreamRefusal::Expired);
        }
        inner.next_stream_id += 1;
        let stream_id = inner.next_stream_id;
        let call = call.clone();
        entry.state = State::Claimed { stream_id };
        Ok(Claim { call, stream_id })
    }

    /// The CallSid `nonce` was issued for, while the registry remembers it: for the log of a
    /// refused replay (`used_nonce`, `expired_nonce`, docs/twilio.md §8.2).
    pub fn call_sid_of(&self, nonce: Option<&str>) -> Option<String> {
        let nonce = Nonce::parse(nonce?)?;
        self.lock().nonces.get(&nonce).cloned()
    }

    /// Claims, for a stream handshake, a call another replica answered (its binding was
    /// claimed in the shared database, docs/replicas.md §4.2). Refused as used when this
    /// registry already knows the call.
    pub fn adopt(&self, call: &IncomingCall, _now: Instant) -> Result<Claim, StreamRefusal> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if inner.calls.contains_key(call.call_sid.as_str()) {
            return Err(StreamRefusal::Used);
        }
        if inner.calls.len() >= MAX_ENTRIES {
            return Err(StreamRefusal::Unknown);
        }
        inner.next_stream_id += 1;
        let stream_id = inner.next_stream_id;
        let entry = Entry {
            state: State::Claimed { stream_id },
            last_sequence: None,
            nonce: None,
        };
        inner.calls.insert(call.call_sid.as_str().to_owned(), entry);
        Ok(Claim {
            call: call.clone(),
            stream_id,
        })
    }

    /// Forgets the claim `stream_id` of `call_sid` without an outcome: the shared database says
    /// another replica claimed the call first, so this registry must not answer for it.
    pub fn withdraw_claim(&self, call_sid: &str, stream_id: u64) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let ours = inner.calls.get(call_sid).is_some_and(
            |e| matches!(e.state, State::Claimed { stream_id: id } if id == stream_id),
        );
        if ours
            && let Some(entry) = inner.calls.remove(call_sid)
            && let Some(n) = entry.nonce
        {
            inner.nonces.remove(&n);
        }
    }

    /// Forgets the binding of `call_sid` while it is still pending (with `nonce`, if given):
    /// the fleet refused the call after the local bind, or another replica adopted its stream.
    /// Returns whether a binding was forgotten.
    pub fn forget_pending(&self, call_sid: &str, nonce: Option<Nonce>) -> bool {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let matches = inner.calls.get(call_sid).is_some_and(|e| {
            matches!(e.state, State::Pending { .. }) && nonce.is_none_or(|n| e.nonce == Some(n))
        });
        if !matches {
            return false;
        }
        if let Some(entry) = inner.calls.remove(call_sid)
            && let Some(n) = entry.nonce
        {
            inner.nonces.remove(&n);
        }
        true
    }

    /// Registers the live stream `stream_id` of `call_sid`, which must hold the call's claim
    /// (its `start` was checked against the claim by the caller).
    pub fn register(
        &self,
        call_sid: &str,
        stream_id: u64,
        teardown: Teardown,
        _now: Instant,
    ) -> Result<(), RegisterError> {
        let mut inner = self.lock();
        let Some(entry) = inner.calls.get_mut(call_sid) else {
            return Err(RegisterError::NotBound);
        };
        match entry.state {
            State::Live { .. } => Err(RegisterError::AlreadyLive),
            State::Ended {
                outcome: Outcome::CallerHungUp,
                ..
            } => Err(RegisterError::AlreadyEnded),
            State::Claimed { stream_id: id } if id == stream_id => {
                entry.state = State::Live {
                    teardown,
                    stream_id,
                };
                Ok(())
            }
            _ => Err(RegisterError::NotBound),
        }
    }

    /// Records how the stream `stream_id` of `call_sid` ended (live, or claimed and refused
    /// before its `start`) and drops its teardown handle. A later outcome for the same call
    /// does not overwrite an earlier one. `true` when this ended the stream's call (`false`:
    /// ended before, by Twilio's status callback say, or not this stream's).
    pub fn finish(&self, call_sid: &str, stream_id: u64, outcome: Outcome, now: Instant) -> bool {
        let mut inner = self.lock();
        if let Some(entry) = inner.calls.get_mut(call_sid)
            && let State::Live { stream_id: id, .. } | State::Claimed { stream_id: id } =
                entry.state
            && id == stream_id
        {
            entry.state = State::Ended { outcome, at: now };
            return true;
        }
        false
    }

    /// The recorded outcome of a call, if it ended.
    pub fn outcome(&self, call_sid: &str) -> Option<Outcome> {
        match self.lock().calls.get(call_sid)?.state {
            State::Ended { outcome, .. } => Some(outcome),
            _ => None,
        }
    }

    /// Whether the call has a live stream.
    pub fn is_live(&self, call_sid: &str) -> bool {
        matches!(
            self.lock().calls.get(call_sid).map(|e| &e.state),
            Some(State::Live { .. })
        )
    }

    /// Number of live streams.
    pub fn live_count(&self) -> usize {
        self.lock()
            .calls
            .values()
            .filter(|e| matches!(e.state, State::Live { .. }))
            .count()
    }

    /// Calls holding a slot against `MAX_CALLS`: pending (unexpired), claimed and live.
    pub fn active_count(&self, now: Instant) -> usize {
        self.lock()
            .calls
            .values()
            .filter(|e| e.is_active(now))
            .count()
    }

    /// Whether a call ended within `window` before `now` (its stream may still have Twilio's
    /// `stream-ended` request to come).
    pub fn ended_within(&self, now: Instant, window: Duration) -> bool {
        self.lock().calls.values().any(|e| {
            matches!(e.state, State::Ended { at, .. }
                if now.saturating_duration_since(at) <= window)
        })
    }

    /// Number of entries (pending, live and remembered).
    pub fn len(&self) -> usize {
        self.lock().calls.len()
    }

    /// Whether the registry holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies a status callback: a terminal status tears down the live session, if any, and
    /// ends a binding whose stream has not come. Idempotent and safe against callbacks that
    /// arrive out of order (docs/twilio.md §3.2).
    pub fn handle_status(
        &self,
        call_sid: &str,
        status: CallStatus,
        sequence: Option<u64>,
        now: Instant,
    ) -> StatusEffect {
        let teardown = {
            let mut inner = self.lock();
            let inner = &mut *inner;
            if let Some(entry) = inner.calls.get_mut(call_sid) {
                if let Some(seq) = sequence
                    && entry.last_sequence.is_some_and(|last| seq < last)
                {
                    return StatusEffect::Ignored;
                }
                entry.last_sequence = sequence.max(entry.last_sequence);
            }
            if !status.is_terminal() {
                return StatusEffect::Ignored;
            }
            match inner.calls.get_mut(call_sid) {
                Some(entry) => {
                    let teardown = match &entry.state {
                        State::Live { teardown, .. } => Some(teardown.clone()),
                        State::Ended { .. } => return StatusEffect::Recorded,
                        State::Pending { .. } | State::Claimed { .. } => None,
                    };
                    entry.state = State::Ended {
                        outcome: Outcome::CallerHungUp,
                        at: now,
                    };
                    match teardown {
                        Some(t) => t,
                        None => return StatusEffect::EndedBeforeStream,
                    }
                }
                None => {
                    if inner.calls.len() >= MAX_ENTRIES {
                        sweep_locked(inner, now, ENDED_RETENTION);
                    }
                    if inner.calls.len() < MAX_ENTRIES {
                        let entry = Entry::ended(Outcome::CallerHungUp, now, sequence);
                        inner.calls.insert(call_sid.to_owned(), entry);
                    }
                    return StatusEffect::Recorded;
                }
            }
        };
        // Run the callback outside the lock: it may call back into the registry.
        teardown(TeardownReason::CallEnded);
        StatusEffect::TornDown
    }

    /// Tells every live session to stop (shutdown after the drain deadline).
    pub fn teardown_all(&self, reason: TeardownReason) -> usize {
        let handles: Vec<Teardown> = self
            .lock()
            .calls
            .values()
            .filter_map(|e| match &e.state {
                State::Live { teardown, .. } => Some(teardown.clone()),
                _ => None,
            })
            .collect();
        for t in &handles {
            t(reason);
        }
        handles.len()
    }

    /// Forgets ended calls, and bindings whose stream never came, [`ENDED_RETENTION`] after
    /// they ended or expired. Call periodically.
    pub fn sweep(&self, now: Instant) {
        sweep_locked(&mut self.lock(), now, ENDED_RETENTION);
    }
}

fn sweep_locked(inner: &mut Inner, now: Instant, keep: Duration) {
    let nonces = &mut inner.nonces;
    inner.calls.retain(|_, e| {
        let since = match e.state {
            State::Claimed { .. } | State::Live { .. } => return true,
            State::Pending { expires, .. } => expires,
            State::Ended { at, .. } => at,
        };
        let keep = now.saturating_duration_since(since) < keep;
        if !keep && let Some(n) = e.nonce {
            nonces.remove(&n);
        }
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::webhook::{AccountSid, CallSid, Party};
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

    fn sid(n: u8) -> String {
        format!("CA{:032x}", n)
    }

    fn call(n: u8) -> IncomingCall {
        IncomingCall {
            call_sid: CallSid::parse(&sid(n)).unwrap(),
            account_sid: AccountSid::parse(&format!("AC{:032x}", 1)).unwrap(),
            from: Party::parse("+4915112345123").unwrap(),
            to: Party::parse("+4930123456").unwrap(),
        }
    }

    fn nonce(n: u8) -> Nonce {
        Nonce::from_entropy([n; NONCE_BYTES])
    }

    /// The voice webhook, then the signed handshake: the stream's claim.
    fn answered(r: &CallRegistry, n: u8, now: Instant) -> Claim {
        assert_eq!(r.bind(&call(n), nonce(n), 100, now), Bound::New(nonce(n)));
        r.claim(Some(&nonce(n).to_hex()), now).unwrap()
    }

    #[test]
    fn status_tears_down_once_and_is_idempotent() {
        let r = CallRegistry::new();
        let now = Instant::now();
        let (n, t) = counter();
        let c = answered(&r, 1, now);
        r.register(&sid(1), c.stream_id, t, now).unwrap();
        assert_eq!(r.live_count(), 1);
        assert_eq!(
            r.handle_status(&sid(1), CallStatus::InProgress, Some(1), now),
            StatusEffect::Ignored
        );
        assert_eq!(
            r.handle_status(&sid(1), CallStatus::Completed, Some(3), now),
            StatusEffect::TornDown
        );
        assert_eq!(
            r.handle_status(&sid(1), CallStatus::Completed, Some(3), now),
            StatusEffect::Recorded
        );
        // An older callback arriving late changes nothing.
        assert_eq!(
            r.handle_status(&sid(1), CallStatus::Ringing, Some(2), now),
            StatusEffect::Ignored
        );
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert_eq!(r.live_count(), 0);
        assert_eq!(r.outcome(&sid(1)), Some(Outcome::CallerHungUp));
    }

    #[test]
    fn a_call_ended_before_its_stream_says_so_once() {
        let r = CallRegistry::new();
        let now = Instant::now();
        assert_eq!(r.bind(&call(2), nonce(2), 100, now), Bound::New(nonce(2)));
        assert_eq!(
            r.handle_status(&sid(2), CallStatus::Completed, None, now),
            StatusEffect::EndedBeforeStream
        );
        assert_eq!(
            r.handle_status(&sid(2), CallStatus::Completed, None, now),
            StatusEffect::Recorded
        );
        assert_eq!(r.outcome(&sid(2)), Some(Outcome::CallerHungUp));
        answered(&r, 3, now);
        assert_eq!(
            r.handle_status(&sid(3), CallStatus::Canceled, None, now),
            StatusEffect::EndedBeforeStream
        );
        assert_eq!(r.live_count(), 0);
    }

    #[test]
    fn unknown_call_status_is_remembered_and_blocks_late_stream() {
        let r = CallRegistry::new();
        let now = Instant::now();
        assert_eq!(
            r.handle_status(&sid(9), CallStatus::Completed, None, now),
            StatusEffect::Recorded
        );
        let (_, t) = counter();
        assert_eq!(
            r.register(&sid(9), 1, t, now),
            Err(RegisterError::AlreadyEnded)
        );
        // Nor can a voice webhook for it start anything now.
        assert_eq!(r.bind(&call(9), nonce(9), 100, now), Bound::Answered);
        r.sweep(now + ENDED_RETENTION);
        assert!(r.is_empty());
    }

    #[test]
    fn finish_records_first_outcome_and_ignores_stale_stream() {
        let r = CallRegistry::new();
        let now = Instant::now();
        let (_, t) = counter();
        let c = answered(&r, 1, now);
        r.register(&sid(1), c.stream_id, t.clone(), now).unwrap();
        r.finish(&sid(1), c.stream_id - 1, Outcome::StreamLost, now);
        assert!(r.is_live(&sid(1)));
        assert_eq!(
            r.register(&sid(1), c.stream_id, t.clone(), now),
            Err(RegisterError::AlreadyLive)
        );
        r.finish(&sid(1), c.stream_id, Outcome::AgentFailed, now);
        r.finish(&sid(1), c.stream_id, Outcome::Completed, now);
        assert_eq!(r.outcome(&sid(1)), Some(Outcome::AgentFailed));
        // No second stream for an ended call: it would need a second binding.
        assert_eq!(
            r.register(&sid(1), c.stream_id, t, now),
            Err(RegisterError::NotBound)
        );
    }

    #[test]
    fn a_nonce_opens_one_stream_of_its_own_call_within_its_ttl() {
        let r = CallRegistry::new();
        let now = Instant::now();
        let (_, t) = counter();
        // No webhook, no stream.
        assert_eq!(r.claim(None, now), Err(StreamRefusal::NoNonce));
        assert_eq!(r.claim(Some("xyz"), now), Err(StreamRefusal::Malformed));
        assert_eq!(
            r.claim(Some(&nonce(7).to_hex()), now),
            Err(StreamRefusal::Unknown)
        );
        assert_eq!(r.register(&sid(7), 1, t, now), Err(RegisterError::NotBound));
        // Single use.
        let c = answered(&r, 1, now);
        assert_eq!(c.call, call(1));
        assert_eq!(
            r.claim(Some(&nonce(1).to_hex()), now),
            Err(StreamRefusal::Used)
        );
        // The refusal's log can name the call; an unknown nonce names none.
        assert_eq!(r.call_sid_of(Some(&nonce(1).to_hex())), Some(sid(1)));
        assert_eq!(r.call_sid_of(Some(&nonce(7).to_hex())), None);
        assert_eq!(r.call_sid_of(Some("xyz")), None);
        // Expired.
        assert_eq!(r.bind(&call(2), nonce(2), 100, now), Bound::New(nonce(2)));
        assert_eq!(
            r.claim(Some(&nonce(2).to_hex()), now + BINDING_TTL),
            Err(StreamRefusal::Expired)
        );
        // A call that hung up before its stream came.
        assert_eq!(r.bind(&call(3), nonce(3), 100, now), Bound::New(nonce(3)));
        r.handle_status(&sid(3), CallStatus::Completed, None, now);
        assert_eq!(
            r.claim(Some(&nonce(3).to_hex()), now),
            Err(StreamRefusal::Used)
        );
    }

    #[test]
    fn a_repeated_webhook_gets_the_same_nonce_or_nothing() {
        let r = CallRegistry::new();
        let now = Instant::now();
        assert_eq!(r.bind(&call(1), nonce(1), 100, now), Bound::New(nonce(1)));
        assert_eq!(
            r.bind(&call(1), nonce(2), 100, now),
            Bound::Repeat(nonce(1))
        );
        let later = now + BINDING_TTL;
        assert_eq!(r.bind(&call(1), nonce(3), 100, later), Bound::Answered);
        // Remembered past the binding's expiry for as long as an ended call.
        r.sweep(later + ENDED_RETENTION - Duration::from_secs(1));
        assert_eq!(r.bind(&call(1), nonce(4), 100, later), Bound::Answered);
        r.sweep(later + ENDED_RETENTION);
        assert!(r.is_empty());
        assert_eq!(
            r.claim(Some(&nonce(1).to_hex()), later),
            Err(StreamRefusal::Unknown)
        );
    }

    #[test]
    fn pending_bindings_count_against_the_cap() {
        let r = CallRegistry::new();
        let now = Instant::now();
        assert_eq!(r.bind(&call(1), nonce(1), 2, now), Bound::New(nonce(1)));
        let c = answered(&r, 2, now);
        assert_eq!(r.active_count(now), 2);
        assert_eq!(r.bind(&call(3), nonce(3), 2, now), Bound::AtCapacity(2));
        // An expired binding frees its slot; an ended call too.
        let later = now + BINDING_TTL;
        assert_eq!(r.active_count(later), 1);
        r.finish(&sid(2), c.stream_id, Outcome::StreamLost, later);
        assert_eq!(r.bind(&call(3), nonce(3), 1, later), Bound::New(nonce(3)));
    }

    #[test]
    fn fleet_bookkeeping_adopts_forgets_and_withdraws() {
        let r = CallRegistry::new();
        let now = Instant::now();
        // Another replica's call, claimed here through the database.
        let c = r.adopt(&call(1), now).unwrap();
        let (_, t) = counter();
        r.register(&sid(1), c.stream_id, t, now).unwrap();
        assert_eq!(r.adopt(&call(1), now), Err(StreamRefusal::Used));
        // A binding the fleet refused is forgotten with its nonce, and only with its nonce.
        assert_eq!(r.bind(&call(2), nonce(2), 100, now), Bound::New(nonce(2)));
        assert!(!r.forget_pending(&sid(2), Some(nonce(3))));
        assert!(r.forget_pending(&sid(2), Some(nonce(2))));
        assert_eq!(
            r.claim(Some(&nonce(2).to_hex()), now),
            Err(StreamRefusal::Unknown)
        );
        assert_eq!(r.bind(&call(2), nonce(4), 100, now), Bound::New(nonce(4)));
        // A claimed call is not "pending": adoption elsewhere cannot forget it.
        let c3 = answered(&r, 3, now);
        assert!(!r.forget_pending(&sid(3), None));
        // Claimed elsewhere first: the local claim is withdrawn without an outcome.
        r.withdraw_claim(&sid(3), c3.stream_id + 1);
        assert_eq!(r.active_count(now), 3);
        r.withdraw_claim(&sid(3), c3.stream_id);
        assert_eq!(r.outcome(&sid(3)), None);
        assert_eq!(r.active_count(now), 2);
    }

    #[test]
    fn nonce_hash_is_sha256_of_its_bytes() {
        // SHA-256 of 16 zero bytes.
        assert_eq!(
            crate::secret::hex_lower(&Nonce::from_entropy([0; NONCE_BYTES]).hash()),
            "374708fff7719dd5979ec875d56cd2286f6d3cf7ec317a3b25632aab28ec37bb"
        );
    }

    #[test]
    fn nonce_hex_round_trips_and_hides_in_debug() {
        let n = Nonce::from_entropy([0xab; NONCE_BYTES]);
        assert_eq!(n.to_hex().len(), 2 * NONCE_BYTES);
        assert_eq!(Nonce::parse(&n.to_hex()), Some(n));
        assert_eq!(Nonce::parse(&n.to_hex().to_uppercase()), None);
        assert!(!format!("{n:?}").contains("ab"));
    }
}
