//! The `actias` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use actias::server::{self, StartError};

#[derive(Parser)]
#[command(
    name = "actias",
    version,
    about = "A reverse proxy that runs Lua fetch handlers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Config file to load.
        #[arg(long, default_value = "conf/actias.yaml")]
        config: PathBuf,
        /// Take over the listening sockets of a running Actias (zero-downtime
        /// upgrade); send SIGQUIT to the old process after starting this one.
        #[arg(long)]
        upgrade: bool,
    },
    /// Load the config and compile every script, report every problem, and
    /// exit with status 1 if there is any.
    Check {
        /// Config file to check.
        #[arg(long, default_value = "conf/actias.yaml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, upgrade } => match server::run(&config, upgrade) {
            Ok(()) => ExitCode::SUCCESS,
            Err(StartError::Config(problems)) => {
                eprintln!("{problems}");
                eprintln!(
                    "actias: not started; {} problem(s) in the config",
                    problems.0.len()
                );
                ExitCode::FAILURE
            }
            Err(error) => {
                eprintln!("actias: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => match server::load(&config, 1) {
            Ok((_, snapshot)) => {
                println!(
                    "{}: ok, {} routes, {} scripts",
                    config.display(),
                    snapshot.routes.len(),
                    snapshot.script_count
                );
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("{problems}");
                eprintln!("{}: {} problem(s)", config.display(), problems.0.len());
                ExitCode::FAILURE
            }
        },
    }
}
