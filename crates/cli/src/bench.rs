//! `batch-autoscaler bench`: the planner's timings on a synthetic cluster of the given
//! size (see the `bench` crate for what is generated and what is measured). Prints
//! figures; it asserts nothing about them.

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// Nodes in the synthetic cluster.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    nodes: u32,
    /// Pending (unschedulable) pods.
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pending_pods: u32,
    /// Node groups.
    #[arg(long, value_name = "G", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    groups: u32,
    /// Seed of the generator: same seed, same cluster.
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,
    /// Timed repetitions of each pass (median and p95 are over these).
    #[arg(long, value_name = "R", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    runs: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<(), Failure> {
    let config = bench::BenchConfig {
        size: bench::ClusterSize {
            nodes: args.nodes as usize,
            pending_pods: args.pending_pods as usize,
            groups: args.groups as usize,
        },
        seed: args.seed,
        runs: args.runs as usize,
    };
    let report = bench::run(config);
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.summary());
    }
    Ok(())
}
