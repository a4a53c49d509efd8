//! The sans-IO side of one agent conversation: what to send first, how to answer pings, which
//! audio is stale after an interruption, and when a silent socket counts as dead.
//!
//! The connector writes `conversation_initiation_client_data` right after the handshake, before
//! reading anything (§1.7: it must be first), so the session starts after it.
//!
//! Drive it like quinn's `Connection`: feed every text message to [`AgentSession::handle_text`],
//! drain [`AgentSession::poll_transmit`] after every call, and call
//! [`AgentSession::handle_timeout`] at [`AgentSession::poll_timeout`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::messages::{self, AgentEvent, AgentMessageError};

/// Default time without any message from the agent before the socket counts as dead. The server
/// pings every few seconds (§3.1); the spec leaves the cadence open, so this is generous.
pub const DEFAULT_SILENCE_TIMEOUT: Duration = Duration::from_secs(20);
/// Most control messages queued for the agent (pongs, tool results); bounded so a flood of pings
/// the driver cannot write out does not grow memory.
pub const MAX_QUEUED_CONTROL: usize = 64;

/// What the bridge must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent<'a> {
    /// Metadata arrived: the conversation is ready and the audio formats are known.
    Ready {
        /// `conversation_id`.
        conversation_id: String,
        /// Format of audio ignis must send (`user_input_audio_format`).
        input_format: String,
        /// Format of audio the agent sends (`agent_output_audio_format`).
        output_format: String,
    },
    /// Agent audio of the current turn (stale audio is already dropped).
    Audio {
        /// Turn id.
        event_id: u64,
        /// Base64 audio.
        audio_b64: std::borrow::Cow<'a, str>,
    },
    /// The caller barged in: clear what is queued for playback.
    Interrupted {
        /// The interruption id.
        event_id: u64,
    },
    /// A client tool call; answer with [`AgentSession::tool_result`].
    ToolCall {
        /// Tool name.
        tool_name: String,
        /// Call id.
        tool_call_id: String,
        /// Parameters.
        parameters: Map<String, Value>,
    },
    /// The agent reported an error; a close follows.
    Error {
        /// Close code announced.
        code: Option<u16>,
        /// `error_type`.
        error_type: String,
    },
}

/// Counters for the call summary and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// Pings answered.
    pub pings: u64,
    /// Audio events received.
    pub audio_events: u64,
    /// Audio events dropped as older than the last interruption.
    pub stale_audio_dropped: u64,
    /// Interruptions.
    pub interruptions: u64,
    /// Events of unknown or unused types.
    pub unknown_events: u64,
    /// Messages that failed to parse.
    pub bad_messages: u64,
    /// Control messages dropped because the queue was full.
    pub control_dropped: u64,
}

/// One agent conversation's protocol state.
#[derive(Debug)]
pub struct AgentSession {
    conversation_id: Option<String>,
    last_interrupt_id: Option<u64>,
    last_heard: Instant,
    silence_timeout: Duration,
    outgoing: VecDeque<String>,
    dead: bool,
    stats: SessionStats,
}

impl AgentSession {
    /// A session on a socket that has just connected (and sent the initiation data) at `now`.
    pub fn new(now: Instant, silence_timeout: Duration) -> AgentSession {
        AgentSession {
            conversation_id: None,
            last_interrupt_id: None,
            last_heard: now,
            silence_timeout,
            outgoing: VecDeque::new(),
            dead: false,
            stats: SessionStats::default(),
        }
    }

    /// Handles one text message. Errors are bad messages: counted, never fatal.
    pub fn handle_text<'a>(
        &mut self,
        now: Instant,
        text: &'a str,
    ) -> Result<Option<SessionEvent<'a>>, AgentMessageError> {
        match messages::parse(text) {
            Ok(event) => Ok(self.handle_event(now, event)),
            Err(e) => {
                self.handle_bad_message(now);
                Err(e)
            }
        }
    }

    /// A message that did not parse: it still proves the socket alive, and is counted.
    pub fn handle_bad_message(&mut self, now: Instant) {
        self.last_heard = now;
        self.stats.bad_messages += 1;
    }

    /// Handles one parsed event (for callers that parse with [`messages::parse`] themselves to
    /// learn the event's kind).
    pub fn handle_event<'a>(
        &mut self,
        now: Instant,
        event: AgentEvent<'a>,
    ) -> Option<SessionEvent<'a>> {
        self.last_heard = now;
        match event {
            AgentEvent::Metadata {
                conversation_id,
                output_format,
                input_format,
            } => {
                self.conversation_id = Some(conversation_id.clone());
                Some(SessionEvent::Ready {
                    conversation_id,
                    input_format,
                    output_format,
                })
            }
            AgentEvent::Ping { event_id, .. } => {
                // Answer at once: delaying by ping_ms only inflates the server's RTT estimate
                // (§3.1). Pongs jump the queue ahead of tool results.
                self.stats.pings += 1;
                self.push_control(messages::pong(event_id), true);
                None
            }
            AgentEvent::Audio {
                event_id,
                audio_b64,
            } => {
                self.stats.audio_events += 1;
                // Keep audio whose id is >= the interruption's: the reply may share the
                // interruption's id, and `>` would drop it (§4.4, elevenlabs-python#829).
                if self.last_interrupt_id.is_some_and(|last| event_id < last) {
                    self.stats.stale_audio_dropped += 1;
                    None
                } else {
                    Some(SessionEvent::Audio {
                        event_id,
                        audio_b64,
                    })
                }
            }
            AgentEvent::Interruption { event_id } => {
                self.stats.interruptions += 1;
                self.last_interrupt_id =
                    Some(self.last_interrupt_id.map_or(event_id, |l| l.max(event_id)));
                Some(SessionEvent::Interrupted { event_id })
            }
            AgentEvent::ClientToolCall {
                tool_name,
                tool_call_id,
                parameters,
            } => Some(SessionEvent::ToolCall {
                tool_name,
                tool_call_id,
                parameters,
            }),
            AgentEvent::Error { code, error_type } => {
                Some(SessionEvent::Error { code, error_type })
            }
            AgentEvent::AgentResponse { text } => {
                tracing::debug!(chars = text.len(), "[ElevenLabs] Agent response");
                None
            }
            AgentEvent::UserTranscript { text } => {
                tracing::debug!(chars = text.len(), "[ElevenLabs] User transcript");
                None
            }
            AgentEvent::Unknown => {
                self.stats.unknown_events += 1;
                None
            }
        }
    }

    fn push_control(&mut self, msg: String, front: bool) {
        if self.outgoing.len() >= MAX_QUEUED_CONTROL {
            self.stats.control_dropped += 1;
            return;
        }
        if front {
            self.outgoing.push_front(msg);
        } else {
            self.outgoing.push_back(msg);
        }
    }

    /// Queues a `client_tool_result`.
    pub fn tool_result(&mut self, tool_call_id: &str, result: &str, is_error: bool) {
        self.push_control(
            messages::client_tool_result(tool_call_id, result, is_error),
            false,
        );
    }

    /// Queues an arbitrary control message (e.g. a DTMF `user_message`).
    pub fn send_control(&mut self, msg: String) {
        self.push_control(msg, false);
    }

    /// The next control message to write to the agent socket. Audio chunks are written by the
    /// bridge directly and are not queued here.
    pub fn poll_transmit(&mut self) -> Option<String> {
        self.outgoing.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.dead).then_some(self.last_heard + self.silence_timeout)
    }

    /// Marks the session dead once the agent has been silent past the timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.last_heard + self.silence_timeout {
            self.dead = true;
        }
    }

    /// Whether the agent socket is considered dead (no message within the silence timeout).
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// The conversation id, once metadata arrived.
    pub fn conversation_id(&self) -> Option<&str> {
        self.conversation_id.as_deref()
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(now: Instant) -> AgentSession {
        AgentSession::new(now, Duration::from_secs(20))
    }

    #[test]
    fn pongs_carry_the_ping_id_and_jump_the_queue() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let ev = s
            .handle_text(
                t0,
                r#"{"type":"ping","ping_event":{"event_id":42,"ping_ms":null}}"#,
            )
            .unwrap();
        assert_eq!(ev, None);
        s.tool_result("t1", "ok", false);
        let _ = s.handle_text(
            t0,
            r#"{"type":"ping","ping_event":{"event_id":43,"ping_ms":12}}"#,
        );
        // Pongs jump ahead of the tool result, newest first.
        assert_eq!(
            s.poll_transmit().unwrap(),
            r#"{"type":"pong","event_id":43}"#
        );
        assert_eq!(
            s.poll_transmit().unwrap(),
            r#"{"type":"pong","event_id":42}"#
        );
        assert!(s.poll_transmit().unwrap().contains("client_tool_result"));
        assert_eq!(s.poll_transmit(), None);
        assert_eq!(s.stats().pings, 2);
    }

    #[test]
    fn audio_older_than_interruption_is_dropped_equal_kept() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let audio = |id: u64| {
            format!(
                r#"{{"type":"audio","audio_event":{{"audio_base_64":"AA==","event_id":{id}}}}}"#
            )
        };
        assert!(matches!(
            s.handle_text(t0, &audio(3)).unwrap(),
            Some(SessionEvent::Audio { event_id: 3, .. })
        ));
        let i = r#"{"type":"interruption","interruption_event":{"event_id":5}}"#;
        assert_eq!(
            s.handle_text(t0, i).unwrap(),
            Some(SessionEvent::Interrupted { event_id: 5 })
        );
        assert_eq!(s.handle_text(t0, &audio(4)).unwrap(), None);
        assert!(matches!(
            s.handle_text(t0, &audio(5)).unwrap(),
            Some(SessionEvent::Audio { event_id: 5, .. })
        ));
        assert!(matches!(
            s.handle_text(t0, &audio(6)).unwrap(),
            Some(SessionEvent::Audio { event_id: 6, .. })
        ));
        assert_eq!(s.stats().stale_audio_dropped, 1);
    }

    #[test]
    fn unknown_and_bad_messages_are_counted_not_fatal() {
        let t0 = Instant::now();
        let mut s = session(t0);
        assert_eq!(s.handle_text(t0, r#"{"type":"new_thing"}"#).unwrap(), None);
        assert!(s.handle_text(t0, "garbage").is_err());
        assert_eq!(s.stats().unknown_events, 1);
        assert_eq!(s.stats().bad_messages, 1);
        assert!(!s.is_dead());
    }

    #[test]
    fn silence_past_the_timeout_is_death() {
        let t0 = Instant::now();
        let mut s = session(t0);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(20)));
        s.handle_timeout(t0 + Duration::from_secs(19));
        assert!(!s.is_dead());
        let _ = s.handle_text(
            t0 + Duration::from_secs(19),
            r#"{"type":"ping","ping_event":{"event_id":1}}"#,
        );
        s.handle_timeout(t0 + Duration::from_secs(38));
        assert!(!s.is_dead());
        s.handle_timeout(t0 + Duration::from_secs(39));
        assert!(s.is_dead());
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn control_queue_is_bounded() {
        let t0 = Instant::now();
        let mut s = session(t0);
        for i in 0..200 {
            let _ = s.handle_text(
                t0,
                &format!(r#"{{"type":"ping","ping_event":{{"event_id":{i}}}}}"#),
            );
        }
        let mut n = 0;
        while s.poll_transmit().is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_QUEUED_CONTROL);
        assert!(s.stats().control_dropped > 0);
    }
}
