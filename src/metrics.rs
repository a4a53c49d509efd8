//! Counters, gauges and histograms for `GET /metrics` in the Prometheus text exposition format
//! (version 0.0.4). Lock-free atomics: recording costs a few nanoseconds and never blocks a call.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::calls::{Outcome, StreamRefusal};

/// Latency buckets in seconds: fine below 20 ms (where the bridge's own work lives), coarse
/// above (where set-up times live).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The practice's counters. They are process-wide statics, not [`Metrics`] fields, because the
/// practice's tools run on the store thread with no handle to the front end's state; one process
/// serves one practice, so one set is right.
#[derive(Debug, Default)]
pub struct PracticeCounters {
    /// `identify_patient` answers that matched nobody.
    pub identification_failures: AtomicU64,
    /// `identify_patient` calls refused because the global budget of failures was spent.
    pub identification_budget_refusals: AtomicU64,
}

/// The process's [`PracticeCounters`].
pub static PRACTICE: PracticeCounters = PracticeCounters {
    identification_failures: AtomicU64::new(0),
    identification_budget_refusals: AtomicU64::new(0),
};

/// A histogram over [`LATENCY_BUCKETS`].
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            d.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Statuses counted individually; anything else is counted as `other`.
const STATUSES: [u16; 19] = [
    101, 200, 204, 400, 401, 403, 404, 405, 408, 411, 413, 414, 417, 422, 426, 431, 501, 503, 505,
];
/// Every outcome, in metrics order.
pub const OUTCOMES: [Outcome; 6] = [
    Outcome::Completed,
    Outcome::CallerHungUp,
    Outcome::AgentFailed,
    Outcome::ServerShutdown,
    Outcome::StreamLost,
    Outcome::Refused,
];

/// What one finished call adds to the metrics: the bridge's counters plus what only the
/// driver knows (its own bad frames, the agent connect time). Built by
/// [`Bridge::call_summary`](crate::bridge::Bridge::call_summary).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallSummary {
    /// How the call ended.
    pub outcome: Outcome,
    /// Caller frames received.
    pub caller_frames: u64,
    /// `user_audio_chunk` messages sent to the agent.
    pub agent_chunks_sent: u64,
    /// 20 ms frames sent to the caller.
    pub frames_to_caller: u64,
    /// Milliseconds of caller audio filled by concealment.
    pub concealed_ms: f64,
    /// Playout underruns.
    pub underruns: u64,
    /// Barge-ins.
    pub interruptions: u64,
    /// Keypad digits forwarded.
    pub dtmf: u64,
    /// Bad frames from Twilio (unparsable messages, binary frames, bad media).
    pub bad_caller_frames: u64,
    /// Bad agent audio chunks.
    pub bad_agent_chunks: u64,
    /// Audio commands and results the DSP pool dropped because a queue was full
    /// (`AUDIO_STAGES=pipeline`; see `audio::pipeline::PoolCallStats`).
    pub audio_pipeline_drops: u64,
    /// Partial agent frames completed with silence because the agent paused mid-turn, inline
    /// or on the DSP pool (docs/dsp.md §3.8).
    pub pause_pads: u64,
    /// Agent audio of a turn under way that came when the caller was about to run dry; each
    /// raised the call's playout cushion (docs/dsp.md §3.9).
    pub late_agent_audio: u64,
    /// Agent messages that did not parse.
    pub bad_agent_messages: u64,
    /// Agent events of unknown or unused types.
    pub unknown_agent_events: u64,
    /// Time to connect the agent socket, in whole milliseconds (`None`: it never connected).
    pub agent_connect_ms: Option<u64>,
    /// Time from Twilio `start` to the first agent audio written to Twilio.
    pub first_audio: Option<Duration>,
}

/// All of ignis's metrics.
#[derive(Default)]
pub struct Metrics {
    http_responses: [AtomicU64; STATUSES.len() + 1],
    /// Webhooks and stream handshakes refused for a missing or wrong signature.
    pub signature_rejections: AtomicU64,
    calls: [AtomicU64; OUTCOMES.len()],
    /// Calls answered with the fallback because `MAX_CALLS` was reached.
    pub calls_over_capacity: AtomicU64,
    /// Voice webhooks for a CallSid already answered (Twilio retries or replays).
    pub webhook_replays: AtomicU64,
    stream_refusals: [AtomicU64; StreamRefusal::ALL.len()],
    /// Caller frames received.
    pub frames_from_caller: AtomicU64,
    /// 20 ms frames sent to the caller.
    pub frames_to_caller: AtomicU64,
    /// Base64 audio bytes received from Twilio.
    pub bytes_from_caller: AtomicU64,
    /// Audio bytes sent to the agent (`user_audio_chunk` base64).
    pub bytes_to_agent: AtomicU64,
    /// Milliseconds of caller audio filled by concealment.
    pub concealed_ms: AtomicU64,
    /// Playout underruns (Twilio ran dry mid-turn).
    pub underruns: AtomicU64,
    /// Barge-ins.
    pub interruptions: AtomicU64,
    /// Bad frames from either peer (counted, never fatal).
    pub bad_frames: AtomicU64,
    /// Audio the DSP pool dropped on a full queue (`AUDIO_STAGES=pipeline`).
    pub audio_pipeline_drops: AtomicU64,
    /// Partial agent frames padded in a pause of the agent (docs/dsp.md §3.8).
    pub pause_pads: AtomicU64,
    /// Agent audio that came late mid-turn (docs/dsp.md §3.9).
    pub late_agent_audio: AtomicU64,
    /// Time to connect the agent socket.
    pub agent_connect: Histogram,
    /// Time from Twilio `start` to the first agent audio written to Twilio.
    pub time_to_first_audio: Histogram,
    /// Time from reading a caller frame to writing its audio to the agent socket.
    pub added_latency_inbound: Histogram,
    /// Time from reading an agent audio message to writing the resulting frames to Twilio, for
    /// frames sent at once (frames the playout holds back for pacing are not added latency).
    pub added_latency_outbound: Histogram,
}

impl Metrics {
    /// Counts one HTTP response.
    pub fn http_response(&self, status: u16) {
        let i = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        self.http_responses[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one finished call.
    pub fn call_finished(&self, outcome: Outcome) {
        if let Some(i) = OUTCOMES.iter().position(|&o| o == outcome) {
            self.calls[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds one finished call: its outcome, the counters added when a call ends, and its
    /// set-up histograms.
    pub fn record_call(&self, call: &CallSummary) {
        self.call_finished(call.outcome);
        Metrics::add(&self.frames_to_caller, call.frames_to_caller);
        Metrics::add(&self.concealed_ms, call.concealed_ms as u64);
        Metrics::add(&self.underruns, call.underruns);
        Metrics::add(&self.interruptions, call.interruptions);
        Metrics::add(&self.audio_pipeline_drops, call.audio_pipeline_drops);
        Metrics::add(&self.pause_pads, call.pause_pads);
        Metrics::add(&self.late_agent_audio, call.late_agent_audio);
        Metrics::add(
            &self.bad_frames,
            call.bad_caller_frames + call.bad_agent_chunks + call.bad_agent_messages,
        );
        if let Some(ms) = call.agent_connect_ms {
            self.agent_connect.observe(Duration::from_millis(ms));
        }
        if let Some(d) = call.first_audio {
            self.time_to_first_audio.observe(d);
        }
    }

    /// Counts one stream refused for not being bound to its voice webhook.
    pub fn stream_refused(&self, reason: StreamRefusal) {
        if let Some(i) = StreamRefusal::ALL.iter().position(|&r| r == reason) {
            self.stream_refusals[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Renders everything; `active_calls` is read from the call registry by the caller.
    pub fn render(&self, active_calls: usize) -> String {
        let mut out = String::with_capacity(8 * 1024);
        gauge(
            &mut out,
            "ignis_active_calls",
            "Calls with a live media stream.",
            active_calls as u64,
        );
        self.render_calls(&mut out);
        self.render_audio(&mut out);
        self.render_http(&mut out);
        self.render_histograms(&mut out);
        out
    }

    fn render_calls(&self, out: &mut String) {
        let by_outcome: [(&str, &AtomicU64); OUTCOMES.len()] =
            std::array::from_fn(|i| (OUTCOMES[i].as_str(), &self.calls[i]));
        family(
            out,
            "ignis_calls_total",
            "Finished calls by outcome.",
            "outcome",
            &by_outcome,
        );
        counter(
            out,
            "ignis_calls_over_capacity_total",
            "Calls answered with the fallback at MAX_CALLS.",
            &self.calls_over_capacity,
        );
        counter(
            out,
            "ignis_webhook_replays_total",
            "Voice webhooks for a call already answered (no second pre-connect).",
            &self.webhook_replays,
        );
        let by_reason: [(&str, &AtomicU64); StreamRefusal::ALL.len()] =
            std::array::from_fn(|i| (StreamRefusal::ALL[i].as_str(), &self.stream_refusals[i]));
        family(
            out,
            "ignis_stream_refusals_total",
            "Media streams refused before any agent or audio: not bound to a voice webhook.",
            "reason",
            &by_reason,
        );
    }

    fn render_audio(&self, out: &mut String) {
        family(
            out,
            "ignis_frames_total",
            "Audio frames by direction (agent_to_caller added when a call ends).",
            "direction",
            &[
                ("caller_to_agent", &self.frames_from_caller),
                ("agent_to_caller", &self.frames_to_caller),
            ],
        );
        family(
            out,
            "ignis_audio_bytes_total",
            "Base64 audio bytes by direction.",
            "direction",
            &[
                ("from_caller", &self.bytes_from_caller),
                ("to_agent", &self.bytes_to_agent),
            ],
        );
        counter(
            out,
            "ignis_concealed_ms_total",
            "Caller audio filled by concealment, ms (added when a call ends).",
            &self.concealed_ms,
        );
        counter(
            out,
            "ignis_playout_underruns_total",
            "Times the caller's playback ran dry mid-turn (added when a call ends).",
            &self.underruns,
        );
        counter(
            out,
            "ignis_interruptions_total",
            "Barge-ins (agent interruption events; added when a call ends).",
            &self.interruptions,
        );
        counter(
            out,
            "ignis_audio_pipeline_drops_total",
            "Audio commands and results the DSP pool dropped on a full queue \
             (AUDIO_STAGES=pipeline; added when a call ends).",
            &self.audio_pipeline_drops,
        );
        counter(
            out,
            "ignis_audio_pause_pads_total",
            "Partial agent frames completed with silence because the agent paused mid-turn \
             (docs/dsp.md §3.8; added when a call ends).",
            &self.pause_pads,
        );
        counter(
            out,
            "ignis_playout_late_agent_audio_total",
            "Agent audio of a turn under way that came as the caller was about to run dry; each \
             raised the call's playout cushion (docs/dsp.md §3.9; added when a call ends).",
            &self.late_agent_audio,
        );
        counter(
            out,
            "ignis_bad_frames_total",
            "Malformed frames from either peer (ignored).",
            &self.bad_frames,
        );
    }

    fn render_http(&self, out: &mut String) {
        counter(
            out,
            "ignis_identification_failures_total",
            "identify_patient answers that matched nobody.",
            &PRACTICE.identification_failures,
        );
        counter(
            out,
            "ignis_identification_budget_refusals_total",
            "identify_patient calls refused because the hourly budget of failures over all \
             callers was spent.",
            &PRACTICE.identification_budget_refusals,
        );
        counter(
            out,
            "ignis_signature_rejections_total",
            "Requests refused for a missing or wrong X-Twilio-Signature.",
            &self.signature_rejections,
        );
        let _ = writeln!(
            out,
            "# HELP ignis_http_responses_total HTTP responses by status."
        );
        let _ = writeln!(out, "# TYPE ignis_http_responses_total counter");
        for (i, c) in self.http_responses.iter().enumerate() {
            let label = STATUSES.get(i).map_or("other".to_owned(), u16::to_string);
            let _ = writeln!(
                out,
                "ignis_http_responses_total{{status=\"{label}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
    }

    fn render_histograms(&self, out: &mut String) {
        self.agent_connect.render(
            out,
            "ignis_agent_connect_seconds",
            "Time to connect the agent socket (signed URL, TCP, TLS, handshake).",
            "",
        );
        self.time_to_first_audio.render(
            out,
            "ignis_time_to_first_audio_seconds",
            "Time from Twilio start to the first agent audio sent to the caller.",
            "",
        );
        self.added_latency_inbound.render(
            out,
            "ignis_added_latency_seconds",
            "Time a message spends inside ignis, read to written.",
            "direction=\"caller_to_agent\"",
        );
        // The second series of the same family shares the HELP/TYPE lines above.
        let mut second = String::new();
        self.added_latency_outbound.render(
            &mut second,
            "ignis_added_latency_seconds",
            "",
            "direction=\"agent_to_caller\"",
        );
        for line in second.lines().filter(|l| !l.starts_with('#')) {
            out.push_str(line);
            out.push('\n');
        }
    }
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

/// A counter family with one series per value of `label`.
fn family(out: &mut String, name: &str, help: &str, label: &str, series: &[(&str, &AtomicU64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, v) in series {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{value}\"}} {}",
            v.load(Ordering::Relaxed)
        );
    }
}

fn counter(out: &mut String, name: &str, help: &str, v: &AtomicU64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
        v.load(Ordering::Relaxed)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_exposition() {
        let m = Metrics::default();
        m.http_response(200);
        m.http_response(999);
        m.call_finished(Outcome::Completed);
        m.agent_connect.observe(Duration::from_millis(150));
        m.added_latency_inbound.observe(Duration::from_micros(300));
        let text = m.render(3);
        assert!(text.contains("ignis_active_calls 3\n"));
        assert!(text.contains("ignis_http_responses_total{status=\"200\"} 1\n"));
        assert!(text.contains("ignis_http_responses_total{status=\"other\"} 1\n"));
        assert!(text.contains("ignis_calls_total{outcome=\"completed\"} 1\n"));
        assert!(text.contains("ignis_agent_connect_seconds_bucket{le=\"0.25\"} 1\n"));
        assert!(text.contains("ignis_agent_connect_seconds_bucket{le=\"0.1\"} 0\n"));
        assert!(text.contains(
            "ignis_added_latency_seconds_bucket{direction=\"caller_to_agent\",le=\"0.0005\"} 1\n"
        ));
        assert_eq!(
            text.matches("# TYPE ignis_added_latency_seconds histogram")
                .count(),
            1
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn records_a_finished_call() {
        let m = Metrics::default();
        let call = CallSummary {
            outcome: Outcome::AgentFailed,
            caller_frames: 500,
            agent_chunks_sent: 50,
            frames_to_caller: 120,
            concealed_ms: 40.7,
            underruns: 2,
            interruptions: 3,
            dtmf: 1,
            bad_caller_frames: 4,
            bad_agent_chunks: 5,
            audio_pipeline_drops: 8,
            pause_pads: 9,
            late_agent_audio: 10,
            bad_agent_messages: 6,
            unknown_agent_events: 7,
            agent_connect_ms: Some(150),
            first_audio: Some(Duration::from_millis(800)),
        };
        m.record_call(&call);
        m.record_call(&CallSummary {
            outcome: Outcome::Completed,
            agent_connect_ms: None,
            first_audio: None,
            ..call
        });
        let text = m.render(0);
        for line in [
            "ignis_calls_total{outcome=\"agent_failed\"} 1\n",
            "ignis_calls_total{outcome=\"completed\"} 1\n",
            "ignis_frames_total{direction=\"agent_to_caller\"} 240\n",
            // Whole milliseconds per call: 40 + 40.
            "ignis_concealed_ms_total 80\n",
            "ignis_playout_underruns_total 4\n",
            "ignis_interruptions_total 6\n",
            "ignis_audio_pipeline_drops_total 16\n",
            "ignis_audio_pause_pads_total 18\n",
            "ignis_playout_late_agent_audio_total 20\n",
            // Both peers' bad frames: (4 + 5 + 6) per call.
            "ignis_bad_frames_total 30\n",
            // Histograms only for what happened.
            "ignis_agent_connect_seconds_count 1\n",
            "ignis_agent_connect_seconds_bucket{le=\"0.25\"} 1\n",
            "ignis_time_to_first_audio_seconds_count 1\n",
            "ignis_time_to_first_audio_seconds_bucket{le=\"1\"} 1\n",
            "ignis_time_to_first_audio_seconds_bucket{le=\"0.5\"} 0\n",
        ] {
            assert!(text.contains(line), "{line}");
        }
    }
}
