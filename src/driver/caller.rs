//! `ignis simulate`'s caller (also the demo's): one scripted call as Twilio places it, on the
//! simulator's Twilio stream ([`super::sim::twilio`]): the signed voice webhook, the stream its
//! TwiML names, `connected`, `start`, 20 ms `media` frames on an absolute clock, marks and
//! `clear` handled by Twilio's playback rules, `stop` at the end. It records what the caller
//! heard on a timeline, so a `clear` cuts the recording as it would cut the sound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_rustls::rustls::ClientConfig;

use super::sim::SimError;
use super::sim::twilio::{StreamEvent, TwilioStream, voice_webhook_with};
use crate::audio::mulaw;
use crate::sim::twilio::{CallIds, FRAME, FRAME_MS, Heard, Messages, Playback};

pub use crate::sim::{SPEECH_RMS, is_speech};

/// When the caller starts talking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeakAt {
    /// Once the agent's greeting has been heard and 500 ms of quiet followed.
    AfterGreeting,
    /// This long after the stream started (talking over the agent: a barge-in).
    After(Duration),
    /// Once the agent's speech has ended and 500 ms of quiet followed; or, when no agent
    /// speech came by this long after the start (an agent that waits for the caller, or one
    /// that sends only quiet), then. Speech, not any audio: quiet frames do not delay it.
    AfterGreetingOr(Duration),
}

/// Quiet after the greeting before [`SpeakAt::AfterGreeting`] talks.
const AFTER_GREETING: Duration = Duration::from_millis(500);

/// What to do.
#[derive(Debug, Clone)]
pub struct CallerOptions {
    /// `wss://host/api/twilio/stream` (or `ws://` locally): used when no webhook is called or
    /// its TwiML names no stream (otherwise the stream is the one the TwiML names).
    pub stream_url: String,
    /// The voice webhook to call first (`https://host/api/twilio/voice`), if any.
    pub webhook_url: Option<String>,
    /// The account auth token that signs both.
    pub auth_token: String,
    /// The call's SID.
    pub call_sid: String,
    /// Caller and called numbers.
    pub from: String,
    /// The called number.
    pub to: String,
    /// The caller's speech: 8 kHz μ-law.
    pub speech: Vec<u8>,
    /// When to start speaking.
    pub speak_at: SpeakAt,
    /// Quiet time after the speech before hanging up (lets the agent answer).
    pub tail: Duration,
    /// Hard limit on the call.
    pub max_duration: Duration,
    /// Connect timeout.
    pub timeout: Duration,
}

/// What happened.
#[derive(Debug, Default, Clone)]
pub struct CallerReport {
    /// Status of the voice webhook, if called.
    pub webhook_status: Option<u16>,
    /// When `start` was sent.
    pub started_at: Option<Instant>,
    /// When the first agent audio arrived.
    pub first_audio_at: Option<Instant>,
    /// When the first speech frame of the caller was sent.
    pub first_speech_sent_at: Option<Instant>,
    /// Arrival time of every agent audio message (for latency matching).
    pub audio_arrivals: Vec<Instant>,
    /// What the caller heard, 8 kHz PCM, from `start`.
    pub heard: Vec<i16>,
    /// Frames the caller sent.
    pub frames_sent: u64,
    /// 20 ms frames of agent audio received.
    pub frames_received: u64,
    /// `clear` messages received.
    pub clears: u64,
    /// Marks received (and echoed).
    pub marks: u64,
    /// How the stream ended.
    pub ended_by: String,
}

/// The caller's side of the conversation: when to talk, what to send each 20 ms.
struct Speaker<'a> {
    opts: &'a CallerOptions,
    t0: Instant,
    /// Next speech byte to send, once talking.
    pos: Option<usize>,
    /// When the agent's speech heard so far ends playing.
    agent_speech_end: Option<Instant>,
    done_at: Option<Instant>,
}

/// What the caller does on a frame tick.
enum Tick<'a> {
    Send(&'a [u8]),
    HangUp,
    GiveUp,
}

const SILENCE: [u8; FRAME] = [mulaw::SILENCE; FRAME];

impl<'a> Speaker<'a> {
    fn tick(&mut self, now: Instant, playback: &Playback, report: &mut CallerReport) -> Tick<'a> {
        let opts = self.opts;
        if now.duration_since(self.t0) > opts.max_duration {
            return Tick::GiveUp;
        }
        if self
            .done_at
            .is_some_and(|t| now.duration_since(t) >= opts.tail)
        {
            return Tick::HangUp;
        }
        if self.pos.is_none() && self.done_at.is_none() {
            let start = match opts.speak_at {
                SpeakAt::After(d) => now.duration_since(self.t0) >= d,
                SpeakAt::AfterGreeting => playback
                    .play_end()
                    .is_some_and(|end| now >= end + AFTER_GREETING),
                SpeakAt::AfterGreetingOr(d) => match self.agent_speech_end {
                    Some(end) => now >= end + AFTER_GREETING,
                    None => now.duration_since(self.t0) >= d,
                },
            };
            if start {
                self.pos = Some(0);
            }
        }
        match self.pos {
            Some(p) if p < opts.speech.len() => {
                let end = (p + FRAME).min(opts.speech.len());
                self.pos = Some(end);
                let frame = &opts.speech[p..end];
                if report.first_speech_sent_at.is_none() && is_speech(frame) {
                    report.first_speech_sent_at = Some(now);
                }
                Tick::Send(frame)
            }
            Some(_) => {
                self.pos = None;
                self.done_at = Some(now);
                Tick::Send(&SILENCE)
            }
            None => Tick::Send(&SILENCE),
        }
    }
}

/// Runs one call to its end.
pub async fn run(opts: CallerOptions) -> Result<CallerReport, SimError> {
    let ids = CallIds::new(&opts.call_sid, &opts.from, &opts.to);
    let tls = super::net::default_tls().map_err(SimError::Connect)?;
    run_with(opts, ids, &tls).await
}

/// [`run`] with the call's `ids` given (e.g. the deployment's own account SID, which ignis
/// requires when `TWILIO_ACCOUNT_SID` is set) and TLS trusting the roots of `tls` (`ignis
/// doctor --call`, with `EXTRA_CA_FILE`).
pub async fn run_with(
    opts: CallerOptions,
    ids: CallIds,
    tls: &Arc<ClientConfig>,
) -> Result<CallerReport, SimError> {
    let mut report = CallerReport::default();
    let mut stream_url = opts.stream_url.clone();
    let mut parameters = Messages::new(ids.clone()).default_parameters();
    if let Some(url) = &opts.webhook_url {
        let answer = voice_webhook_with(url, &opts.auth_token, &ids, opts.timeout, tls).await?;
        report.webhook_status = Some(answer.status);
        if let Some(twiml) = answer.stream {
            (stream_url, parameters) = (twiml.url, twiml.parameters);
        }
    }
    let mut stream =
        TwilioStream::connect_with(&stream_url, &opts.auth_token, ids, opts.timeout, tls).await?;
    stream.start(&parameters).await?;
    let t0 = Instant::now();
    report.started_at = Some(t0);
    let mut heard = Heard::new(t0);
    let mut speaker = Speaker {
        opts: &opts,
        t0,
        pos: None,
        agent_speech_end: None,
        done_at: None,
    };
    let mut audio = Vec::new();
    let mut ticker = tokio::time::interval_at(t0.into(), Duration::from_millis(FRAME_MS));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    report.ended_by = loop {
        tokio::select! {
            _ = ticker.tick() => {
                match speaker.tick(Instant::now(), stream.playback(), &mut report) {
                    Tick::Send(frame) => {
                        if stream.send_media(frame).await.is_err() {
                            break "stream closed by ignis".to_owned();
                        }
                        report.frames_sent += 1;
                    }
                    Tick::HangUp => {
                        let _ = stream.hang_up().await;
                        break "caller hung up".to_owned();
                    }
                    Tick::GiveUp => break "max duration".to_owned(),
                }
            }
            event = stream.recv(&mut audio) => match event {
                Ok(StreamEvent::Media { at, plays_at }) => {
                    report.first_audio_at.get_or_insert(at);
                    report.audio_arrivals.push(at);
                    report.frames_received += (audio.len() / FRAME) as u64;
                    if is_speech(&audio) {
                        let played = Duration::from_micros(audio.len() as u64 * 125);
                        speaker.agent_speech_end = Some(plays_at + played);
                    }
                    heard.play(plays_at, &audio);
                }
                Ok(StreamEvent::Mark(_)) => report.marks += 1,
                Ok(StreamEvent::Clear(at)) => {
                    report.clears += 1;
                    heard.clear(at);
                }
                Ok(StreamEvent::Closed(code)) => {
                    let code = code.map_or("no code".into(), |c| c.to_string());
                    break format!("ignis closed the stream ({code})");
                }
                Ok(StreamEvent::Dropped) | Err(SimError::Socket(_)) => break "stream dropped".to_owned(),
                Err(e) => return Err(e),
            }
        }
    };
    report.heard = heard.samples;
    Ok(report)
}
