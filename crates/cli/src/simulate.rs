//! `batch-autoscaler simulate`: read a scenario, run it, print a summary, write the
//! JSON report and the SVG plot.

use crate::Failure;
use anyhow::Context as _;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The scenario file (YAML; see examples/).
    scenario: PathBuf,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write an SVG plot (pending pods, nodes per group) here.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Override the scenario's seed.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Print neither progress nor the summary.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: &Args) -> Result<(), Failure> {
    let text = std::fs::read_to_string(&args.scenario)
        .with_context(|| format!("cannot read scenario {}", args.scenario.display()))
        .map_err(Failure::BadInput)?;
    let mut scenario = sim::Scenario::from_yaml(&text)
        .with_context(|| format!("invalid scenario {}", args.scenario.display()))
        .map_err(Failure::BadInput)?;
    if let Some(seed) = args.seed {
        scenario = scenario.with_seed(seed);
    }
    let options = sim::SimOptions {
        progress: !args.quiet,
    };
    let report = sim::simulate(&scenario, &options).map_err(|e| Failure::Runtime(e.into()))?;
    if let Some(path) = &args.report {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("cannot write report {}", path.display()))
            .map_err(Failure::Runtime)?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, sim::plot::svg(&report))
            .with_context(|| format!("cannot write plot {}", path.display()))
            .map_err(Failure::Runtime)?;
    }
    if !args.quiet {
        print!("{}", report.summary());
    }
    Ok(())
}
