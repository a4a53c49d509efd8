//! `GET /metrics`: Prometheus text exposition that a real parser accepts, reflecting real calls,
//! optionally behind a bearer token.

mod common;

use std::time::Duration;

use common::fake_twilio::TwilioCall;
use common::*;

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("valid exposition")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("{name} {label:?} missing"))
}

#[tokio::test]
async fn metrics_parse_and_count_real_traffic() {
    let server = Server::start().await;
    // Some traffic: a rejected webhook, a 404, and one whole call.
    let _ = roundtrip(
        &server,
        b"POST /api/twilio/voice HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let _ = roundtrip(&server, b"GET /nope HTTP/1.1\r\n\r\n").await;
    let sid = "CA0000000000000000000000000000d001";
    let mut caller = TwilioCall::dial(&server, sid).await;
    let agent = server.agent.next_conn(Duration::from_secs(10)).await;
    agent.send_audio(1, &[0x55u8; 1600]);
    let _ = caller.audio(1600, Duration::from_secs(10)).await;
    caller.send_audio(&[0x33u8; 1600]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    caller.hang_up();
    let _ = caller.closed(Duration::from_secs(10)).await;
    eventually("call counted", || server.app.calls.live_count() == 0).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let r = roundtrip(&server, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let scrape = parse(&r.text());
    assert_eq!(value(&scrape, "ignis_active_calls", None), 0.0);
    assert_eq!(
        value(
            &scrape,
            "ignis_calls_total",
            Some(("outcome", "caller_hung_up"))
        ),
        1.0
    );
    assert_eq!(
        value(&scrape, "ignis_signature_rejections_total", None),
        1.0
    );
    assert!(
        value(
            &scrape,
            "ignis_http_responses_total",
            Some(("status", "403"))
        ) >= 1.0
    );
    assert!(
        value(
            &scrape,
            "ignis_http_responses_total",
            Some(("status", "404"))
        ) >= 1.0
    );
    assert_eq!(
        value(
            &scrape,
            "ignis_http_responses_total",
            Some(("status", "101"))
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            "ignis_frames_total",
            Some(("direction", "caller_to_agent"))
        ),
        10.0
    );
    assert_eq!(
        value(
            &scrape,
            "ignis_frames_total",
            Some(("direction", "agent_to_caller"))
        ),
        10.0
    );
    let hist = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                _ => -1.0,
            })
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(hist("ignis_agent_connect_seconds", None), 1.0);
    assert_eq!(hist("ignis_time_to_first_audio_seconds", None), 1.0);
    let latency = r
        .text()
        .lines()
        .filter(|l| l.starts_with("ignis_added_latency_seconds_count"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert!(
        hist(
            "ignis_added_latency_seconds",
            Some(("direction", "caller_to_agent"))
        ) >= 10.0,
        "one observation per forwarded frame: {latency:?}"
    );
    assert!(
        hist(
            "ignis_added_latency_seconds",
            Some(("direction", "agent_to_caller"))
        ) >= 1.0
    );
}

#[tokio::test]
async fn metrics_token_is_enforced_when_set() {
    let server = Server::start_config(test_config(&[("METRICS_TOKEN", "scrape-me")])).await;
    for (authorization, status) in [
        ("", 401),
        ("Authorization: Bearer wrong\r\n", 401),
        ("Authorization: Bearer scrape-me\r\n", 200),
    ] {
        let request = format!("GET /metrics HTTP/1.1\r\n{authorization}\r\n");
        let r = roundtrip(&server, request.as_bytes()).await;
        assert_eq!(r.status, status, "{authorization:?}");
    }
}

/// With `AUDIO_STAGES=pipeline` and the agent's metadata 1.5 s late, the caller frames held for
/// the set-up reach the agent at the pool's wake-up: their wait is set-up time, never an
/// added-latency sample (it was recorded as ~1.5 s). Every sample lies under a bound no local
/// bridge comes near; the held wait would exceed it.
#[tokio::test]
async fn setup_wait_is_no_added_latency_sample_with_the_pool() {
    use common::fake_agent::AgentBehaviour;
    let behaviour = AgentBehaviour {
        metadata_delay: Duration::from_millis(1500),
        ..AgentBehaviour::default()
    };
    let config = test_config(&[("AUDIO_STAGES", "pipeline")]);
    let server = Server::start_full(config, behaviour).await;
    let sid = "CA0000000000000000000000000000d002";
    let mut caller = TwilioCall::dial(&server, sid).await;
    // Sent at once: held until the metadata (the stand-in hands the test its side after it).
    caller.send_audio(&[0x33u8; 1600]);
    let mut agent = server.agent.next_conn(Duration::from_secs(10)).await;
    let _ = agent.recv_audio(1600, Duration::from_secs(10)).await;
    caller.send_audio(&[0x44u8; 1600]);
    let _ = agent.recv_audio(1600, Duration::from_secs(10)).await;
    caller.hang_up();
    let _ = caller.closed(Duration::from_secs(10)).await;
    eventually("call counted", || server.app.calls.live_count() == 0).await;

    let r = roundtrip(&server, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    let scrape = parse(&r.text());
    let buckets = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "ignis_added_latency_seconds"
                && s.labels.get("direction") == Some("caller_to_agent")
        })
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(h) => h.clone(),
            _ => panic!("not a histogram"),
        })
        .expect("caller_to_agent latency");
    let count_at = |le: f64| {
        buckets
            .iter()
            .find(|b| b.less_than == le)
            .map_or(-1.0, |b| b.count)
    };
    let total = count_at(f64::INFINITY);
    assert!(total >= 1.0, "samples of the frames after the set-up");
    assert_eq!(count_at(1.0), total, "no sample of the set-up wait");
}

/// The agent pauses mid-turn: its turn starts with 5 ms of audio (less than a frame), then
/// nothing for a while. The caller must not wait for the rest of the frame: it is completed
/// with silence and sent (docs/dsp.md §3.8), and that pad is counted in
/// `ignis_audio_pause_pads_total`, inline and with the DSP pool.
#[tokio::test]
async fn pause_pads_are_counted_inline_and_pipeline() {
    use ignis::audio::mulaw::SILENCE;
    let t = Duration::from_secs(10);
    for (stages, sid) in [
        ("inline", "CA0000000000000000000000000000d0a1"),
        ("pipeline", "CA0000000000000000000000000000d0a2"),
    ] {
        let server = Server::start_config(test_config(&[("AUDIO_STAGES", stages)])).await;
        let mut caller = TwilioCall::dial(&server, sid).await;
        let agent = server.agent.next_conn(t).await;
        agent.send_audio(1, &[0x55u8; 40]);
        let heard = caller.audio(160, t).await;
        assert_eq!(heard[..40], [0x55u8; 40], "{stages}");
        assert_eq!(heard[40..160], [SILENCE; 120], "{stages}: the frame padded");
        // The turn goes on after the pause.
        agent.send_audio(1, &[0x66u8; 800]);
        assert_eq!(caller.audio(800, t).await, [0x66u8; 800], "{stages}");
        caller.hang_up();
        let _ = caller.closed(t).await;
        eventually("call counted", || server.app.calls.live_count() == 0).await;
        let r = roundtrip(&server, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        let scrape = parse(&r.text());
        let pads = value(&scrape, "ignis_audio_pause_pads_total", None);
        assert!(pads >= 1.0, "{stages}: {pads} pause pads counted");
    }
}
