//! The helper commands: `ignis demo`, `ignis simulate` and `ignis healthcheck`. Each prints its
//! report to stdout and returns a [`StartError`] for `main` to print and turn into an exit code.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::caller::{self, CallerOptions, SpeakAt};
use super::demo::{self, DemoOptions};
use super::startup::{StartError, load_vars_lenient, runtime};
use crate::cli::{DemoArgs, SimulateArgs};
use crate::config::{self, LogFormat};
use crate::sim::twilio::voice_url_of as webhook_url;

/// Log filter of `ignis demo` when `RUST_LOG` is unset: quiet, so the summary stands out.
const DEMO_LOG_FILTER: &str = "warn,ignis::practice=error";
/// Sample rate of the recordings written (what the caller heard).
const HEARD_RATE: u32 = 8000;
/// The simulated caller keeps listening this long after it finished speaking.
const SIMULATE_TAIL: Duration = Duration::from_secs(6);
/// Limit of the simulated caller's connect steps.
const SIMULATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit of the healthcheck's connect and read.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes of the `/health` answer read.
const MAX_HEALTH_REPLY_BYTES: u64 = 4096;

fn write_wav(path: &Path, heard: &[i16]) -> Result<(), StartError> {
    std::fs::write(path, crate::audio::wav::write(HEARD_RATE, heard))
        .map_err(|e| StartError::Failed(format!("{}: {e}", path.display())))
}

fn read_wav(path: Option<&Path>) -> Result<Option<Vec<u8>>, StartError> {
    path.map(std::fs::read)
        .transpose()
        .map_err(|e| StartError::Usage(format!("--wav: {e}")))
}

/// `ignis demo`: a local call through the real server ([`demo::run`]).
pub fn demo(args: &DemoArgs) -> Result<(), StartError> {
    let wav = read_wav(args.wav.as_deref())?;
    // RUST_LOG=info shows the server's own lines.
    crate::telemetry::init_with_default(LogFormat::Text, DEMO_LOG_FILTER);
    let options = DemoOptions {
        format: args.format,
        wav,
        barge_in: args.barge_in,
    };
    let rt = runtime()?;
    if !args.staff {
        let summary = rt
            .block_on(demo::run(options))
            .map_err(StartError::Failed)?;
        return finish_demo(args, &summary);
    }
    rt.block_on(async {
        let (summary, staff) = demo::run_with_staff(options)
            .await
            .map_err(StartError::Failed)?;
        finish_demo(args, &summary)?;
        // The password is the demo's own throwaway (its database goes when the demo ends), so
        // it is printed once, for the person at this terminal to log in with.
        println!("  staff page {}", staff.url);
        if let Some(day) = &staff.booking_url {
            println!("             the call's booking: {day}");
        }
        println!(
            "  login      name {}, password {}",
            staff.name, staff.password
        );
        println!("  (the server keeps running; Ctrl-C ends the demo)");
        let _ = std::io::stdout().flush();
        let _ = tokio::signal::ctrl_c().await;
        staff.stop().await;
        Ok(())
    })
}

fn finish_demo(args: &DemoArgs, summary: &demo::DemoSummary) -> Result<(), StartError> {
    print!("{}", summary.text);
    write_wav(&args.out, &summary.heard)?;
    println!("  recording  what the caller heard: {}", args.out.display());
    Ok(())
}

/// `ignis simulate`: the simulated caller ([`caller::run`]) against a running ignis. `--token`
/// defaults to `TWILIO_AUTH_TOKEN` (environment, else `./.env`).
pub fn simulate(args: &SimulateArgs) -> Result<(), StartError> {
    let token = match &args.token {
        Some(t) => t.clone(),
        None => load_vars_lenient()
            .remove("TWILIO_AUTH_TOKEN")
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                StartError::Usage(
                    "--token (or TWILIO_AUTH_TOKEN) is required to sign the requests".into(),
                )
            })?,
    };
    let wav = read_wav(args.wav.as_deref())?;
    let speech = demo::caller_speech(wav.as_deref()).map_err(StartError::Usage)?;
    crate::telemetry::init(LogFormat::Text);
    let rt = runtime()?;
    let call_sid = format!(
        "CA{:032x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let report = rt
        .block_on(caller::run(CallerOptions {
            stream_url: args.url.clone(),
            webhook_url: (!args.no_webhook).then(|| webhook_url(&args.url)),
            auth_token: token,
            call_sid: call_sid.clone(),
            from: args.from.clone(),
            to: args.to.clone(),
            speech,
            speak_at: SpeakAt::AfterGreeting,
            tail: SIMULATE_TAIL,
            max_duration: Duration::from_secs(args.seconds),
            timeout: SIMULATE_TIMEOUT,
        }))
        .map_err(|e| StartError::Failed(e.to_string()))?;
    let setup = match (report.started_at, report.first_audio_at) {
        (Some(s), Some(a)) => format!("{:.0} ms", a.duration_since(s).as_secs_f64() * 1000.0),
        _ => "no agent audio".into(),
    };
    println!("ignis simulate: call {call_sid}");
    if let Some(s) = report.webhook_status {
        println!("  webhook    voice webhook answered {s}");
    }
    println!("  set-up     stream start -> first agent audio: {setup}");
    println!(
        "  frames     {} sent, {} received ({:.1} s heard)",
        report.frames_sent,
        report.frames_received,
        report.heard.len() as f64 / f64::from(HEARD_RATE)
    );
    println!(
        "  barge-in   {} clear(s), {} mark(s)",
        report.clears, report.marks
    );
    println!("  ending     {}", report.ended_by);
    write_wav(&args.out, &report.heard)?;
    println!("  recording  what the caller heard: {}", args.out.display());
    match report.first_audio_at {
        Some(_) => Ok(()),
        None => Err(StartError::Failed("the agent sent no audio".into())),
    }
}

/// `PORT` as `serve` reads it (environment, else `./.env`, else the default).
fn healthcheck_port(vars: &HashMap<String, String>) -> u16 {
    vars.get("PORT")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(config::DEFAULT_PORT)
}

/// Where `serve` listens, as `BIND` says: its own address, or the loopback of its family when
/// it binds every address (`0.0.0.0` → 127.0.0.1; `::` → ::1, then 127.0.0.1, since a
/// dual-stack listener is reached on both and a container may have no IPv6 loopback).
fn healthcheck_ips(vars: &HashMap<String, String>) -> Vec<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let bind = vars
        .get("BIND")
        .and_then(|b| b.trim().parse().ok())
        .unwrap_or(config::DEFAULT_BIND);
    match bind {
        IpAddr::V4(a) if a.is_unspecified() => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        IpAddr::V6(a) if a.is_unspecified() => vec![
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        ],
        a => vec![a],
    }
}

/// `ignis healthcheck`: probes the local server's `/health` (the container image has no curl).
pub fn healthcheck() -> Result<(), StartError> {
    let vars = load_vars_lenient();
    let port = healthcheck_port(&vars);
    let probe = |ip| -> std::io::Result<bool> {
        let addr = SocketAddr::new(ip, port);
        let mut s = std::net::TcpStream::connect_timeout(&addr, HEALTHCHECK_TIMEOUT)?;
        s.set_read_timeout(Some(HEALTHCHECK_TIMEOUT))?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut reply = Vec::new();
        s.take(MAX_HEALTH_REPLY_BYTES).read_to_end(&mut reply)?;
        let reply = String::from_utf8_lossy(&reply);
        Ok(reply.starts_with("HTTP/1.1 200") && reply.contains("\"status\":\"ok\""))
    };
    let mut failure = String::new();
    for ip in healthcheck_ips(&vars) {
        match probe(ip) {
            Ok(true) => return Ok(()),
            Ok(false) => failure = format!("unhealthy answer on {ip} port {port}"),
            Err(e) => failure = format!("{ip} port {port}: {e}"),
        }
    }
    Err(StartError::Failed(failure))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_sits_beside_the_stream() {
        assert_eq!(
            webhook_url("wss://h.example/api/twilio/stream"),
            "https://h.example/api/twilio/voice"
        );
        assert_eq!(
            webhook_url("ws://127.0.0.1:8/api/twilio/stream"),
            "http://127.0.0.1:8/api/twilio/voice"
        );
    }

    #[test]
    fn healthcheck_reads_port_like_serve() {
        let vars = |p: &str| HashMap::from([("PORT".to_owned(), p.to_owned())]);
        assert_eq!(healthcheck_port(&vars("9000")), 9000);
        assert_eq!(healthcheck_port(&vars("junk")), config::DEFAULT_PORT);
        assert_eq!(healthcheck_port(&HashMap::new()), config::DEFAULT_PORT);
        let bind = |b: &str| {
            healthcheck_ips(&HashMap::from([("BIND".to_owned(), b.to_owned())]))
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(bind("0.0.0.0"), ["127.0.0.1"]);
        assert_eq!(bind("::"), ["::1", "127.0.0.1"]);
        assert_eq!(bind("::1"), ["::1"]);
        assert_eq!(bind("10.0.0.7"), ["10.0.0.7"]);
        assert_eq!(bind("junk"), ["127.0.0.1"]);
    }
}
