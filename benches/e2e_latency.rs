//! End-to-end added latency of ignis (issue 6, part 1): the real server (`ignis::driver::serve`)
//! on real loopback sockets, one simulated Twilio caller and a stand-in agent, in both audio modes.
//! Tone-onset probes in both directions; metric definitions in `support/loadgen.rs` and
//! BENCHMARKS.md. Run: `cargo bench --bench e2e_latency` (about 30 s).

#[path = "support/loadgen.rs"]
mod loadgen;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use ignis::audio::format::AgentFormat;
use loadgen::{AgentOptions, CallOptions, CallerFrames, Stats};

/// Probes per direction and mode.
const PROBES: u64 = 20;
/// Probe period per direction (bursts lie half a period after the caller's probes).
const PROBE_EVERY: Duration = Duration::from_millis(500);

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "e2e_latency: one call through the real server on loopback, {PROBES} probes per direction"
    );
    for format in [AgentFormat::Ulaw8000, AgentFormat::Pcm16000] {
        rt.block_on(run(format));
    }
}

async fn run(format: AgentFormat) {
    let stats = Arc::new(Stats::default());
    let agent_base = loadgen::start_agent(
        AgentOptions {
            format,
            probe_every: PROBE_EVERY,
            interrupt_every: 5,
            ping_every: Duration::from_secs(1),
        },
        stats.clone(),
    )
    .await
    .expect("agent");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let token = "e2e-bench-auth-token-0123456789";
    let vars: HashMap<String, String> = [
        ("PUBLIC_URL", format!("http://{addr}")),
        ("TWILIO_AUTH_TOKEN", token.to_owned()),
        ("ELEVENLABS_AGENT_ID", loadgen::AGENT_ID.to_owned()),
        ("ELEVENLABS_API_BASE", agent_base),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = ignis::config::Config::from_vars(&vars, false).expect("config");
    let app = Arc::new(ignis::routes::App::new(config));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ignis::driver::serve(listener, app, async {
        let _ = stop_rx.await;
    }));

    let stop = Arc::new(AtomicBool::new(false));
    let call = tokio::spawn(loadgen::call(
        CallOptions {
            stream_url: format!("ws://{addr}/api/twilio/stream"),
            auth_token: token.to_owned(),
            call_sid: loadgen::call_sid(1),
            duration: None,
            probe_every: PROBE_EVERY,
            phase: Duration::ZERO,
            direct: false,
        },
        Arc::new(CallerFrames::new()),
        stats.clone(),
        stop.clone(),
    ));
    // Skip the set-up (agent connect) before recording.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stats.recording.store(true, Relaxed);
    let deadline = tokio::time::Instant::now() + PROBE_EVERY * (PROBES as u32 + 10);
    while tokio::time::Instant::now() < deadline
        && (stats.up_us.lock().unwrap().len() < PROBES as usize
            || stats.down_us.lock().unwrap().len() < PROBES as usize)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stats.recording.store(false, Relaxed);
    stop.store(true, Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(5), call).await;
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;

    let mut up = stats.up_us.lock().unwrap().clone();
    let mut down = stats.down_us.lock().unwrap().clone();
    println!(
        "\n{} ({}):",
        format.as_str(),
        if format.is_ulaw() {
            "pass-through"
        } else {
            "transcoding"
        }
    );
    println!("  caller -> agent  {}", loadgen::fmt_ms(&mut up));
    println!("  agent -> caller  {}", loadgen::fmt_ms(&mut down));
    println!(
        "  lost/dup audio   up {}/{} ms, down {}/{} ms; pings {} pongs {}; interruptions {} clears {}; calls ok {} failed {}",
        stats.up_lost.load(Relaxed) / 8,
        stats.up_dup.load(Relaxed) / 8,
        stats.down_lost.load(Relaxed) / 8,
        stats.down_dup.load(Relaxed) / 8,
        stats.pings.load(Relaxed),
        stats.pongs.load(Relaxed),
        stats.interruptions.load(Relaxed),
        stats.clears.load(Relaxed),
        stats.calls_ok.load(Relaxed),
        stats.calls_failed.load(Relaxed),
    );
    if let Some(e) = stats.first_error.lock().unwrap().as_ref() {
        println!("  first error: {e}");
    }
}
