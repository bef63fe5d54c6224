//! The `batch-autoscaler` binary: `run` (the controller), `explain` (why a pod did or
//! did not trigger a scale-up), `simulate` (the planner on a virtual clock) and `bench`
//! (the planner's timings on a synthetic cluster).
//!
//! Exit codes: 0 success; 2 bad input (usage, scenario, unknown field); 1 runtime failure.

mod bench;
mod cloud;
mod explain;
mod interruptions;
mod run;
mod run_config;
mod simulate;
mod slack;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// `--version`: the package version and the git commit it was built from. The commit
/// comes from `BATCH_AUTOSCALER_GIT_COMMIT` at compile time (set by the Dockerfile and
/// `scripts/check-shipping.sh static`); a plain `cargo build` says `unknown`.
fn version() -> String {
    let commit = option_env!("BATCH_AUTOSCALER_GIT_COMMIT")
        .filter(|c| !c.is_empty())
        .unwrap_or("unknown");
    format!("{} (commit {commit})", env!("CARGO_PKG_VERSION"))
}

#[derive(Parser)]
#[command(name = "batch-autoscaler", version = version(), about = "A Kubernetes node autoscaler for AWS EC2, built for batch jobs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario file on the simulator with the real planner.
    Simulate(simulate::Args),
    /// Run the autoscaler against a cluster and AWS.
    Run(Box<run_config::RunArgs>),
    /// Explain why a pending pod did or did not trigger a scale-up, per node group.
    Explain(Box<explain::ExplainArgs>),
    /// Time the planner on a synthetic cluster (scale-up plan, scale-down pass, peak RSS).
    Bench(bench::Args),
}

/// How a command failed.
pub enum Failure {
    /// The input was wrong (exit 2).
    BadInput(anyhow::Error),
    /// Something went wrong while running (exit 1).
    Runtime(anyhow::Error),
}

fn with_runtime(f: impl std::future::Future<Output = Result<(), Failure>>) -> Result<(), Failure> {
    // One rustls crypto provider for the whole process: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))?;
    runtime.block_on(f)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate(args) => simulate::run(&args),
        Command::Run(args) => with_runtime(run::run(*args)),
        Command::Explain(args) => with_runtime(explain::explain(*args)),
        Command::Bench(args) => bench::run(&args),
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
