//! The `batch-autoscaler` binary. `simulate` runs a scenario on the simulator; `run`
//! and `explain` are not built yet (issue 4).
//!
//! Exit codes: 0 success; 2 bad input (usage, scenario, unknown field); 1 runtime failure.

mod run_config;
mod simulate;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "batch-autoscaler", version, about = "A Kubernetes node autoscaler for AWS EC2, built for batch jobs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario file on the simulator with the real planner.
    Simulate(simulate::Args),
    /// Run the autoscaler against a cluster (not built yet).
    Run,
    /// Explain why pods are pending (not built yet).
    Explain,
}

/// How a command failed.
pub enum Failure {
    /// The input was wrong (exit 2).
    BadInput(anyhow::Error),
    /// Something went wrong while running (exit 1).
    Runtime(anyhow::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate(args) => simulate::run(&args),
        Command::Run | Command::Explain => {
            eprintln!("not built yet: see issue 4");
            return ExitCode::from(1);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
