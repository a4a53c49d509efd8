//! The `ignis` binary: parses the command line, then runs the command's library entry point.
//! The commands are declared in [`ignis::cli`]; configuration is parsed once, in
//! [`ignis::driver::startup`].

use std::process::ExitCode;

use clap::Parser;
use ignis::cli::{AgentCommand, Cli, Command, TwilioCommand};
use ignis::driver::{commands, setup, staff, startup};

fn main() -> ExitCode {
    // Usage errors exit 2 and --help/--version exit 0, both through clap.
    let command = Cli::parse().into_command().unwrap_or_else(|e| e.exit());
    let (name, result) = match &command {
        Command::Serve(args) => ("ignis", startup::serve(args)),
        Command::Demo(args) => ("ignis demo", commands::demo(args)),
        Command::Simulate(args) => ("ignis simulate", commands::simulate(args)),
        Command::Healthcheck => ("ignis healthcheck", commands::healthcheck()),
        Command::Twilio(TwilioCommand::Configure(args)) => {
            ("ignis twilio configure", setup::twilio::configure(args))
        }
        Command::Agent(AgentCommand::Sync(args)) => ("ignis agent sync", setup::agent::sync(args)),
        Command::Doctor(args) => ("ignis doctor", setup::doctor::run(args)),
        Command::Staff(cmd) => ("ignis staff", staff::command(cmd)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
