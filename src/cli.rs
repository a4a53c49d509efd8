//! The command line: what `ignis` accepts, declared once with `clap`'s derive. Plain data, no
//! I/O: `main` parses it and dispatches each [`Command`] to its entry point in [`crate::driver`].
//!
//! Adding a command (`doctor`, `staff`, …) is one variant here with its argument struct, one
//! entry point in the library and one arm in `main`'s dispatch. A command group such as
//! `twilio configure` or `agent sync` is a variant holding its own `#[derive(Subcommand)]` enum.
//!
//! Environment variables are not clap arguments: [`crate::config::Config::from_vars`] parses
//! them, so that a bad value stops start-up with one line naming the variable (exit 2) and a
//! secret is never echoed by clap. `--help` prints their table from
//! [`crate::config::VARIABLES`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::audio::format::AgentFormat;
use crate::config::environment_help;

/// Where `ignis demo` writes what the caller heard.
pub const DEFAULT_DEMO_OUT: &str = "ignis-demo-heard.wav";
/// Where `ignis simulate` writes what the caller heard.
pub const DEFAULT_SIMULATE_OUT: &str = "ignis-simulate-heard.wav";
/// The simulated caller's number.
pub const DEFAULT_SIMULATE_FROM: &str = "+4915100000000";
/// The number the simulated caller dials.
pub const DEFAULT_SIMULATE_TO: &str = "+493000000000";
/// Longest simulated call, in seconds.
pub const DEFAULT_SIMULATE_SECONDS: u64 = 60;

/// ignis: real-time voice bridge between Twilio Media Streams and an ElevenLabs agent.
#[derive(Debug, Parser)]
#[command(name = "ignis", version, after_help = environment_help())]
pub struct Cli {
    /// What to run; `serve` when none is given.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `serve`'s options, also accepted without the word `serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl Cli {
    /// The command to run: `ignis [--insecure-skip-signature]` alone is `serve`. The serve flag
    /// before another command is refused, as before clap.
    pub fn into_command(self) -> Result<Command, clap::Error> {
        match self.command {
            None => Ok(Command::Serve(self.serve)),
            Some(Command::Serve(args)) => Ok(Command::Serve(ServeArgs {
                insecure_skip_signature: args.insecure_skip_signature
                    || self.serve.insecure_skip_signature,
            })),
            Some(_) if self.serve.insecure_skip_signature => {
                use clap::CommandFactory;
                Err(Cli::command().error(
                    clap::error::ErrorKind::ArgumentConflict,
                    "--insecure-skip-signature is an option of serve",
                ))
            }
            Some(other) => Ok(other),
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP/WebSocket server (the default).
    #[command(after_help = environment_help())]
    Serve(ServeArgs),
    /// One call on this machine, no accounts: prints a summary, records what the caller heard
    ///
    /// The real server, a local agent (greets, echoes you, honours barge-in, books through the
    /// practice tools) and a simulated caller playing a WAV; writes what the caller heard to
    /// --out and prints a summary.
    Demo(DemoArgs),
    /// The simulated caller against any running ignis: records what it heard
    ///
    /// The same simulated caller as `demo`, against any running ignis (a real deployment with a
    /// real agent included): signs the voice webhook and the stream with --token, records what
    /// it heard to --out and prints a summary.
    Simulate(SimulateArgs),
    /// GET http://127.0.0.1:$PORT/health; exit 0 if healthy (for Docker).
    Healthcheck,
    /// Set up the practice's Twilio number
    #[command(subcommand)]
    Twilio(TwilioCommand),
    /// Set up the ElevenLabs agent
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Check every hop of a call from outside, in the order a call travels
    ///
    /// Configuration, DNS, TLS, /health, the signed voice webhook and the stream upgrade through
    /// the public URL, /metrics exposure, the Twilio number and its recent alerts, the
    /// ElevenLabs agent and the tool endpoint. One line per check, with the fix for each
    /// failure; exit code 1 when any check fails.
    Doctor(DoctorArgs),
    /// Manage the staff page's accounts (docs/staff.md)
    #[command(subcommand)]
    Staff(StaffCommand),
}

/// `ignis staff …`: accounts of the staff page, in the same database as `serve` (IGNIS_DB).
/// Exit codes: 0 done, 1 refused (name taken, unknown account) or failed, 2 bad input or
/// configuration.
#[derive(Debug, Subcommand)]
pub enum StaffCommand {
    /// Add an account; the password is asked twice without echo on a terminal, else read from
    /// the first line of standard input (at least 12 characters)
    Add {
        /// Account name: 1 to 64 of a-z, 0-9, '.', '_', '-'.
        name: String,
    },
    /// List the accounts
    List,
    /// Remove an account and end its sessions
    Remove {
        /// Account name.
        name: String,
    },
}

/// `ignis twilio …`.
#[derive(Debug, Subcommand)]
pub enum TwilioCommand {
    /// Point the number's voice webhook and status callback at this ignis
    ///
    /// Finds the number (--number, else TWILIO_PHONE_NUMBER) through Twilio's REST API, shows
    /// its voice settings beside the wanted ones and sets VoiceUrl, VoiceMethod, StatusCallback
    /// and StatusCallbackMethod (and VoiceFallbackUrl with TWILIO_VOICE_FALLBACK_URL). Safe to
    /// run again. Exit codes: 0 done or nothing to do, 1 a check failed, 2 bad configuration.
    Configure(TwilioConfigureArgs),
}

/// `ignis twilio configure`.
#[derive(Debug, Clone, Args)]
pub struct TwilioConfigureArgs {
    /// The number to configure [default: TWILIO_PHONE_NUMBER].
    #[arg(long, value_name = "+E164")]
    pub number: Option<String>,
    /// Show what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `ignis agent …`.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Make the ElevenLabs agent match agent/ and this configuration
    ///
    /// The workspace secret carrying TOOLS_TOKEN, the practice tools and transfer_to_staff, and
    /// the agent's prompt, greeting, formats, client events, placeholders and privacy settings.
    /// Prints what it changes (secrets masked); a second run writes nothing.
    Sync(AgentSyncArgs),
}

/// `ignis agent sync`.
#[derive(Debug, Clone, Args)]
pub struct AgentSyncArgs {
    /// Show what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `ignis doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// One JSON object per check, one per line (for monitoring).
    #[arg(long)]
    pub json: bool,
    /// Also make one whole simulated call through the public URL to the real agent.
    #[arg(long)]
    pub call: bool,
}

/// `ignis serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Skip the Twilio signature checks (local testing only)
    ///
    /// Accept webhooks and streams without a valid X-Twilio-Signature. Local testing only:
    /// anyone can then start calls on your agent.
    #[arg(long)]
    pub insecure_skip_signature: bool,
}

/// `ignis demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// The agent's audio format: ulaw_8000 (pass-through) or a pcm_* rate (transcoding).
    #[arg(long, default_value = "ulaw_8000", value_parser = parse_format)]
    pub format: AgentFormat,
    /// The caller's speech: a 16-bit PCM WAV at any rate (default: the bundled clip).
    #[arg(long, value_name = "PATH")]
    pub wav: Option<PathBuf>,
    /// Where to write what the caller heard.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DEMO_OUT)]
    pub out: PathBuf,
    /// The caller speaks into the agent's greeting (interrupts it).
    #[arg(long)]
    pub barge_in: bool,
    /// Keep the server running after the call, with a demo staff login (name `demo`, a random
    /// password printed once), so the staff page at /staff shows the call; Ctrl-C ends it.
    #[arg(long)]
    pub staff: bool,
}

/// `ignis simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// The stream URL of the ignis to call.
    #[arg(long, value_name = "wss://HOST/api/twilio/stream")]
    pub url: String,
    /// Auth token that signs the webhook and the stream [default: TWILIO_AUTH_TOKEN].
    #[arg(long)]
    pub token: Option<String>,
    /// The caller's speech: a 16-bit PCM WAV at any rate (default: the bundled clip).
    #[arg(long, value_name = "PATH")]
    pub wav: Option<PathBuf>,
    /// Where to write what the caller heard.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SIMULATE_OUT)]
    pub out: PathBuf,
    /// Skip the voice webhook; open the stream only (ignis refuses a stream without its
    /// webhook: this checks that it does).
    #[arg(long)]
    pub no_webhook: bool,
    /// The caller's number.
    #[arg(long, value_name = "+49…", default_value = DEFAULT_SIMULATE_FROM)]
    pub from: String,
    /// The number called.
    #[arg(long, value_name = "+49…", default_value = DEFAULT_SIMULATE_TO)]
    pub to: String,
    /// Longest call, in seconds.
    #[arg(long, default_value_t = DEFAULT_SIMULATE_SECONDS)]
    pub seconds: u64,
}

fn parse_format(s: &str) -> Result<AgentFormat, String> {
    AgentFormat::parse(s).map_err(|_| {
        let names: Vec<&str> = AgentFormat::ALL.iter().map(|f| f.as_str()).collect();
        format!("must be one of {}", names.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("ignis").chain(args.iter().copied()))?.into_command()
    }

    #[test]
    fn the_declaration_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_is_the_default_and_its_flag_goes_either_side() {
        for args in [
            &[][..],
            &["serve"],
            &["--insecure-skip-signature"],
            &["serve", "--insecure-skip-signature"],
            &["--insecure-skip-signature", "serve"],
        ] {
            let Ok(Command::Serve(s)) = parse(args) else {
                panic!("{args:?}");
            };
            assert_eq!(
                s.insecure_skip_signature,
                args.contains(&"--insecure-skip-signature")
            );
        }
        assert!(parse(&["--insecure-skip-signature", "healthcheck"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }

    #[test]
    fn demo_and_simulate_options() {
        let Ok(Command::Demo(d)) = parse(&["demo", "--format", "pcm_16000", "--barge-in"]) else {
            panic!("demo");
        };
        assert!(d.barge_in && d.format == AgentFormat::Pcm16000);
        assert_eq!(d.out, PathBuf::from(DEFAULT_DEMO_OUT));
        let e = parse(&["demo", "--format", "mp3"]).unwrap_err();
        assert!(e.to_string().contains("ulaw_8000"), "{e}");
        assert!(parse(&["simulate"]).is_err(), "--url is required");
        let Ok(Command::Simulate(s)) = parse(&["simulate", "--url", "ws://h/x", "--no-webhook"])
        else {
            panic!("simulate");
        };
        assert!(s.no_webhook && s.token.is_none());
        assert_eq!(s.seconds, DEFAULT_SIMULATE_SECONDS);
        assert_eq!(
            (s.from.as_str(), s.to.as_str()),
            (DEFAULT_SIMULATE_FROM, DEFAULT_SIMULATE_TO)
        );
    }
}
