//! The `batch-autoscaler` binary: `run` (the controller), `explain` (why a pod did or
//! did not trigger a scale-up), `simulate` (the planner on a virtual clock) and `bench`
//! (the planner's timings on a synthetic cluster).
//!
//! `run` and `explain` need the cloud adapters (Kubernetes, AWS, Slack): they are
//! compiled with the `cloud` feature only, so that `cargo run -p batch-autoscaler --
//! simulate …` compiles in minutes. Without it both subcommands are still listed and
//! parse their flags, then exit with code 2 and say how to get a build that has them.
//!
//! Exit codes: 0 success; 2 bad input (usage, scenario, unknown field, a subcommand this
//! build left out); 1 runtime failure.

mod bench;
#[cfg(feature = "cloud")]
mod cloud;
#[cfg(feature = "cloud")]
mod explain;
#[cfg(feature = "cloud")]
mod interruptions;
#[cfg(feature = "cloud")]
mod run;
// Without `cloud` only the flag definitions are used (`--help` lists them all).
#[cfg_attr(not(feature = "cloud"), allow(dead_code))]
mod run_config;
mod simulate;
#[cfg(feature = "cloud")]
mod slack;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// `--version`: the package version and the git commit it was built from. The commit
/// comes from `BATCH_AUTOSCALER_GIT_COMMIT` at compile time (set by the Dockerfile and
/// `scripts/check-shipping.sh static`); a plain `cargo build` says `unknown`. A build
/// without the `cloud` feature says so.
fn version() -> String {
    let commit = option_env!("BATCH_AUTOSCALER_GIT_COMMIT")
        .filter(|c| !c.is_empty())
        .unwrap_or("unknown");
    let left_out = if cfg!(feature = "cloud") {
        ""
    } else {
        ", without run and explain: built without the cloud feature"
    };
    format!("{} (commit {commit}{left_out})", env!("CARGO_PKG_VERSION"))
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
    #[cfg_attr(
        not(feature = "cloud"),
        command(
            about = "Run the autoscaler against a cluster and AWS (not in this build: needs the cloud feature)",
            after_help = NO_CLOUD
        )
    )]
    Run(Box<run_config::RunArgs>),
    /// Explain why a pending pod did or did not trigger a scale-up, per node group.
    #[cfg_attr(
        not(feature = "cloud"),
        command(
            about = "Explain why a pending pod did or did not trigger a scale-up (not in this build: needs the cloud feature)",
            after_help = NO_CLOUD
        )
    )]
    Explain(Box<run_config::ExplainArgs>),
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

/// Why `run` and `explain` are missing from a build without the `cloud` feature, and
/// how to get them.
#[cfg(not(feature = "cloud"))]
macro_rules! needs_cloud {
    () => {
        "needs the cloud adapters (Kubernetes, AWS, Slack), which this build left out: \
         `cargo run -p batch-autoscaler` builds `simulate` and `bench` only, so that the \
         first command compiles quickly. Build everything with `cargo build --release -p \
         batch-autoscaler --features cloud` (the binary is target/release/batch-autoscaler), \
         or use the container image."
    };
}

#[cfg(not(feature = "cloud"))]
const NO_CLOUD: &str = concat!("Not in this build: this subcommand ", needs_cloud!());

#[cfg(not(feature = "cloud"))]
fn left_out(subcommand: &str) -> Result<(), Failure> {
    Err(Failure::BadInput(anyhow::anyhow!(
        "`{subcommand}` {}",
        needs_cloud!()
    )))
}

#[cfg(feature = "cloud")]
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
        #[cfg(feature = "cloud")]
        Command::Run(args) => with_runtime(run::run(*args)),
        #[cfg(feature = "cloud")]
        Command::Explain(args) => with_runtime(explain::explain(*args)),
        #[cfg(not(feature = "cloud"))]
        Command::Run(_) => left_out("run"),
        #[cfg(not(feature = "cloud"))]
        Command::Explain(_) => left_out("explain"),
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
