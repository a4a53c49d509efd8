//! The `ignis` binary: parses the command line and environment, then runs the server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use ignis::config::{self, Config, VARIABLES};
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

    let config = match load_config(insecure) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ignis: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    ignis::telemetry::init(config.log_format);
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
    match runtime.block_on(run(config)) {
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

fn load_config(insecure: bool) -> Result<Config, config::ConfigError> {
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
    Config::from_vars(&config::merge(env, dotenv), insecure)
}

async fn run(config: Config) -> std::io::Result<()> {
    let addr = SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        public_url = %config.public_url.http_url(""),
        "ignis listening"
    );
    let app = Arc::new(App::new(config));
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
