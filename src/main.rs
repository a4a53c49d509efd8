//! The `ignis` binary: parses the command line and environment, then runs the server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use ignis::config::{self, Config, VARIABLES};
use ignis::practice::config::{ConfigError as PracticeConfigError, PracticeConfig};
use ignis::practice::{Practice, PracticeSettings};
use ignis::routes::App;

const USAGE: &str = "\
ignis: real-time voice bridge between Twilio Media Streams and an ElevenLabs agent

USAGE:
    ignis [serve] [--insecure-skip-signature]
    ignis demo [--format ulaw_8000|pcm_16000] [--wav PATH] [--out PATH] [--barge-in]
    ignis simulate --url wss://HOST/api/twilio/stream [--token TOKEN] [--wav PATH]
                   [--out PATH] [--no-webhook] [--from +49…] [--to +49…]
    ignis healthcheck
    ignis --help | ignis serve --help
    ignis --version

COMMANDS:
    serve        run the HTTP/WebSocket server (the default)
    demo         one call on this machine, no accounts: the real server, a local agent
                 (greets, echoes you, honours barge-in, books through the practice tools)
                 and a simulated caller playing a WAV; writes what the caller heard to
                 --out (default ignis-demo-heard.wav) and prints a summary
    simulate     the same simulated caller against any running ignis (a real deployment
                 with a real agent included): signs the voice webhook and the stream with
                 --token (default TWILIO_AUTH_TOKEN), records what it heard
    healthcheck  GET http://127.0.0.1:$PORT/health; exit 0 if healthy (for Docker)

OPTIONS (serve):
    --insecure-skip-signature   accept webhooks and streams without a valid
                                X-Twilio-Signature. Local testing only: anyone
                                can then start calls on your agent.
";

fn help() -> String {
    let mut s = String::from(USAGE);
    s.push_str("\nENVIRONMENT (also read from ./.env; the real environment wins):\n");
    for (name, what) in VARIABLES {
        s.push_str(&format!("    {name:<32} {what}\n"));
    }
    s.push_str(&format!(
        "    {:<32} log filter, default info\n",
        "RUST_LOG"
    ));
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") => return demo(&args[1..]),
        Some("simulate") => return simulate(&args[1..]),
        _ => {}
    }
    let mut insecure = false;
    for arg in &args {
        match arg.as_str() {
            "serve" => {}
            "-h" | "--help" | "help" => {
                print!("{}", help());
                return ExitCode::SUCCESS;
            }
            "-V" | "--version" => {
                println!("ignis {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "--insecure-skip-signature" => insecure = true,
            "healthcheck" => return healthcheck(),
            other => {
                eprintln!("ignis: unknown argument '{other}' (see ignis --help)");
                return ExitCode::from(2);
            }
        }
    }

    let (config, vars) = match load_config(insecure) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ignis: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    ignis::telemetry::init(config.log_format);
    let (practice, _store_thread) = match open_practice(&vars) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ignis: practice configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if config.insecure_skip_signature {
        tracing::warn!(
            "INSECURE: --insecure-skip-signature is set; Twilio signatures are NOT checked. \
             Never run a public deployment like this."
        );
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ignis: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, practice)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ignis: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads `--name value` options; flags take no value.
fn options(
    args: &[String],
    with_value: &[&str],
    flags: &[&str],
) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-h" || a == "--help" {
            out.insert("help".into(), String::new());
        } else if flags.contains(&a.as_str()) {
            out.insert(a.trim_start_matches('-').to_owned(), String::new());
        } else if with_value.contains(&a.as_str()) {
            let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
            out.insert(a.trim_start_matches('-').to_owned(), v.clone());
        } else {
            return Err(format!("unknown argument '{a}' (see ignis --help)"));
        }
    }
    Ok(out)
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .ok()
}

fn write_wav(path: &str, heard: &[i16]) -> Result<(), String> {
    std::fs::write(path, ignis::audio::wav::write(8000, heard)).map_err(|e| format!("{path}: {e}"))
}

/// `ignis demo`: a local call through the real server.
fn demo(args: &[String]) -> ExitCode {
    let opts = match options(args, &["--format", "--wav", "--out"], &["--barge-in"]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ignis demo: {e}");
            return ExitCode::from(2);
        }
    };
    if opts.contains_key("help") {
        print!("{}", help());
        return ExitCode::SUCCESS;
    }
    let format = match ignis::audio::format::AgentFormat::parse(
        opts.get("format").map_or("ulaw_8000", String::as_str),
    ) {
        Ok(f) => f,
        Err(_) => {
            eprintln!(
                "ignis demo: --format must be one of ulaw_8000, pcm_8000, pcm_16000, pcm_22050, pcm_24000, pcm_44100, pcm_48000"
            );
            return ExitCode::from(2);
        }
    };
    let wav = match opts.get("wav").map(std::fs::read).transpose() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("ignis demo: --wav: {e}");
            return ExitCode::from(2);
        }
    };
    let out = opts
        .get("out")
        .cloned()
        .unwrap_or_else(|| "ignis-demo-heard.wav".into());
    // Quiet by default so the summary stands out; RUST_LOG=info shows the server's own lines.
    ignis::telemetry::init_with_default(
        ignis::config::LogFormat::Text,
        "warn,ignis::practice=error",
    );
    let Some(rt) = runtime() else {
        eprintln!("ignis demo: cannot start runtime");
        return ExitCode::FAILURE;
    };
    let result = rt.block_on(ignis::driver::demo::run(ignis::driver::demo::DemoOptions {
        format,
        wav,
        barge_in: opts.contains_key("barge-in"),
    }));
    match result {
        Ok(summary) => {
            print!("{}", summary.text);
            match write_wav(&out, &summary.heard) {
                Ok(()) => {
                    println!("  recording  what the caller heard: {out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ignis demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("ignis demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `ignis simulate`: the simulated caller against a running ignis.
fn simulate(args: &[String]) -> ExitCode {
    let opts = match options(
        args,
        &[
            "--url",
            "--token",
            "--wav",
            "--out",
            "--from",
            "--to",
            "--seconds",
        ],
        &["--no-webhook"],
    ) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ignis simulate: {e}");
            return ExitCode::from(2);
        }
    };
    if opts.contains_key("help") {
        print!("{}", help());
        return ExitCode::SUCCESS;
    }
    let Some(url) = opts.get("url").cloned() else {
        eprintln!("ignis simulate: --url wss://HOST/api/twilio/stream is required");
        return ExitCode::from(2);
    };
    let token = opts
        .get("token")
        .cloned()
        .or_else(|| {
            load_config(true)
                .ok()
                .map(|(c, _)| c.twilio_auth_token.expose().to_owned())
        })
        .or_else(|| std::env::var("TWILIO_AUTH_TOKEN").ok());
    let Some(token) = token else {
        eprintln!(
            "ignis simulate: --token (or TWILIO_AUTH_TOKEN) is required to sign the requests"
        );
        return ExitCode::from(2);
    };
    let webhook = if opts.contains_key("no-webhook") {
        None
    } else {
        // wss://host/api/twilio/stream -> https://host/api/twilio/voice
        let http = url
            .replacen("wss://", "https://", 1)
            .replacen("ws://", "http://", 1);
        Some(http.replacen("/api/twilio/stream", "/api/twilio/voice", 1))
    };
    let wav = match opts.get("wav").map(std::fs::read) {
        Some(Ok(w)) => Some(w),
        Some(Err(e)) => {
            eprintln!("ignis simulate: --wav: {e}");
            return ExitCode::from(2);
        }
        None => None,
    };
    let speech = match ignis::driver::demo::caller_speech(wav.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ignis simulate: {e}");
            return ExitCode::from(2);
        }
    };
    ignis::telemetry::init(ignis::config::LogFormat::Text);
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let call_sid = format!(
        "CA{:032x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let seconds: u64 = opts
        .get("seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let report = rt.block_on(ignis::driver::caller::run(
        ignis::driver::caller::CallerOptions {
            stream_url: url,
            webhook_url: webhook,
            auth_token: token,
            call_sid: call_sid.clone(),
            from: opts
                .get("from")
                .cloned()
                .unwrap_or_else(|| "+4915100000000".into()),
            to: opts
                .get("to")
                .cloned()
                .unwrap_or_else(|| "+493000000000".into()),
            speech,
            speak_at: ignis::driver::caller::SpeakAt::AfterGreeting,
            tail: std::time::Duration::from_secs(6),
            max_duration: std::time::Duration::from_secs(seconds),
            timeout: std::time::Duration::from_secs(10),
        },
    ));
    match report {
        Ok(r) => {
            let setup = match (r.started_at, r.first_audio_at) {
                (Some(s), Some(a)) => {
                    format!("{:.0} ms", a.duration_since(s).as_secs_f64() * 1000.0)
                }
                _ => "no agent audio".into(),
            };
            println!("ignis simulate: call {call_sid}");
            if let Some(s) = r.webhook_status {
                println!("  webhook    voice webhook answered {s}");
            }
            println!("  set-up     stream start -> first agent audio: {setup}");
            println!(
                "  frames     {} sent, {} received ({:.1} s heard)",
                r.frames_sent,
                r.frames_received,
                r.heard.len() as f64 / 8000.0
            );
            println!("  barge-in   {} clear(s), {} mark(s)", r.clears, r.marks);
            println!("  ending     {}", r.ended_by);
            let out = opts
                .get("out")
                .cloned()
                .unwrap_or_else(|| "ignis-simulate-heard.wav".into());
            if let Err(e) = write_wav(&out, &r.heard) {
                eprintln!("ignis simulate: {e}");
                return ExitCode::FAILURE;
            }
            println!("  recording  what the caller heard: {out}");
            if r.first_audio_at.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("ignis simulate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Probes the local server's `/health` (the container image has no curl).
fn healthcheck() -> ExitCode {
    use std::io::{Read, Write};
    use std::time::Duration;
    // PORT as `serve` reads it: the environment, else ./.env, else the default.
    let dotenv_port = std::fs::read_to_string(".env")
        .ok()
        .and_then(|t| config::parse_dotenv(&t).ok())
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "PORT").map(|(_, v)| v));
    let port: u16 = std::env::var("PORT")
        .ok()
        .or(dotenv_port)
        .and_then(|p| p.parse().ok())
        .unwrap_or(config::DEFAULT_PORT);
    let probe = || -> std::io::Result<bool> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut reply = Vec::new();
        s.take(4096).read_to_end(&mut reply)?;
        let reply = String::from_utf8_lossy(&reply);
        Ok(reply.starts_with("HTTP/1.1 200") && reply.contains("\"status\":\"ok\""))
    };
    match probe() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("ignis healthcheck: unhealthy answer on port {port}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ignis healthcheck: port {port}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the practice store and tools (`TOOLS_TOKEN`, `ADMIN_TOKEN`, `IGNIS_DB`,
/// `PRACTICE_CONFIG`, `IGNIS_DEMO_PATIENTS`). Without `TOOLS_TOKEN` a random secret is used, so
/// the tool endpoints refuse every request (fail closed) until the operator sets one.
fn open_practice(
    vars: &HashMap<String, String>,
) -> Result<(Practice, ignis::practice::store::StoreThread), String> {
    let random_secret = match vars.get("TOOLS_TOKEN").filter(|t| !t.trim().is_empty()) {
        Some(_) => None,
        None => {
            tracing::warn!(
                "TOOLS_TOKEN is not set: the practice tools refuse every request until it is"
            );
            Some(ignis::driver::random_hex(32).map_err(|e| format!("no OS randomness: {e}"))?)
        }
    };
    let settings = PracticeSettings::from_lookup(|k| match (k, &random_secret) {
        ("TOOLS_TOKEN", Some(s)) => Some(s.clone()),
        _ => vars.get(k).cloned(),
    })
    .map_err(|e| e.to_string())?;
    let practice_config = match &settings.config_path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| PracticeConfigError::unreadable(path, &e).to_string())?;
            PracticeConfig::from_toml_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => PracticeConfig::demo(),
    };
    let (practice, thread) = Practice::open(&settings, practice_config, jiff::Timestamp::now())
        .map_err(|e| e.to_string())?;
    tracing::info!(
        practice = %practice.config().name,
        db = %settings.db_path.display(),
        "practice tools ready"
    );
    Ok((practice, thread))
}

fn load_config(insecure: bool) -> Result<(Config, HashMap<String, String>), config::ConfigError> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let dotenv = match std::fs::read(".env") {
        Ok(bytes) if bytes.len() > config::MAX_DOTENV_BYTES => {
            return Err(config::ConfigError {
                variable: ".env".into(),
                reason: "file too large".into(),
            });
        }
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| config::ConfigError {
                variable: ".env".into(),
                reason: "not UTF-8".into(),
            })?;
            config::parse_dotenv(&text)?
        }
        Err(_) => Vec::new(),
    };
    let vars = config::merge(env, dotenv);
    Config::from_vars(&vars, insecure).map(|c| (c, vars))
}

async fn run(config: Config, practice: Practice) -> std::io::Result<()> {
    let addr = SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        public_url = %config.public_url.http_url(""),
        "ignis listening"
    );
    let app = Arc::new(App::with_practice(config, practice));
    ignis::driver::serve(listener, app, shutdown_signal()).await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (docker stop).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}
