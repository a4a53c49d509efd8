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
    ignis healthcheck
    ignis --help | ignis serve --help
    ignis --version

COMMANDS:
    serve        run the HTTP/WebSocket server (the default)
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
        s.push_str(&format!("    {name:<30} {what}\n"));
    }
    for (name, what) in [
        (
            "TOOLS_TOKEN",
            "agent secret for the practice tools (Bearer); >= 16 characters",
        ),
        (
            "ADMIN_TOKEN",
            "optional; staff admin API (Bearer); >= 16 characters",
        ),
        ("IGNIS_DB", "optional; SQLite file, default ./ignis.db"),
        (
            "PRACTICE_CONFIG",
            "optional; practice.toml path, default the built-in Demo Praxis",
        ),
        (
            "IGNIS_DEMO_PATIENTS",
            "optional; 1/0, seed demo patients (default on with the demo)",
        ),
    ] {
        s.push_str(&format!("    {name:<30} {what}\n"));
    }
    s.push_str("    RUST_LOG                       log filter, default info\n");
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
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

/// Probes the local server's `/health` (the container image has no curl).
fn healthcheck() -> ExitCode {
    use std::io::{Read, Write};
    use std::time::Duration;
    let port: u16 = std::env::var("PORT")
        .ok()
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
            let mut bytes = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
                .map_err(|e| format!("no OS randomness: {e}"))?;
            Some(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
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
