//! `replay SCENARIO.yaml [--speedup N] [--report out.json] [--seed S]
//!        [--autoscaler-command CMD]`
//!
//! Plays a simulator scenario on the real stack (see `e2e::replay`), writes the report
//! (the keys of `batch-autoscaler simulate --report`, in scenario time) and prints it
//! next to the simulator's figures for the same scenario. `scripts/replay.sh` builds
//! and runs it with the environment it needs.

use anyhow::{bail, Context};
use e2e::replay::{fidelity_problems, replay, ReplayOptions};
use std::path::PathBuf;

struct Args {
    scenario: PathBuf,
    speedup: f64,
    report: Option<PathBuf>,
    seed: Option<u64>,
    command: Option<String>,
}

const USAGE: &str = "usage: replay SCENARIO.yaml [--speedup N] [--report out.json] [--seed S] [--autoscaler-command CMD]";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut scenario = None;
    let mut speedup = 30.0;
    let mut report = None;
    let mut seed = None;
    let mut command = None;
    while let Some(a) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--speedup" => {
                let v = value("--speedup")?;
                speedup = v
                    .parse()
                    .with_context(|| format!("--speedup: not a number: {v:?}"))?;
            }
            "--report" => report = Some(PathBuf::from(value("--report")?)),
            "--seed" => {
                let v = value("--seed")?;
                seed = Some(
                    v.parse()
                        .with_context(|| format!("--seed: not a number: {v:?}"))?,
                );
            }
            "--autoscaler-command" => command = Some(value("--autoscaler-command")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other if other.starts_with('-') => bail!("unknown flag {other}\n{USAGE}"),
            other => {
                if scenario.is_some() {
                    bail!("one scenario file only, got another: {other}\n{USAGE}");
                }
                scenario = Some(PathBuf::from(other));
            }
        }
    }
    Ok(Args {
        scenario: scenario.with_context(|| format!("no scenario file\n{USAGE}"))?,
        speedup,
        report,
        seed,
        command,
    })
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("replay: {e:#}");
            std::process::exit(2);
        }
    };
    let text = match std::fs::read_to_string(&args.scenario) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("replay: cannot read {}: {e}", args.scenario.display());
            std::process::exit(2);
        }
    };
    let mut scenario = match sim::Scenario::from_yaml(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("replay: {}: {e}", args.scenario.display());
            std::process::exit(2);
        }
    };
    if let Some(seed) = args.seed {
        scenario = scenario.with_seed(seed);
    }
    if let Err(e) =
        e2e::replay::check_supported(&scenario, &e2e::scenario::REGIONS.map(String::from))
    {
        eprintln!("replay: {e:#}");
        std::process::exit(2);
    }
    let simulated = match sim::simulate(&scenario, &sim::SimOptions::default()) {
        Ok(r) => serde_json::to_value(&r).expect("report JSON"),
        Err(e) => {
            eprintln!("replay: simulate {}: {e}", args.scenario.display());
            std::process::exit(1);
        }
    };
    // The replay binary is the end-to-end environment's own user: it always runs.
    std::env::set_var(e2e::gate::ENABLE_VAR, "1");
    e2e::replay::configure_control_plane();
    let options = ReplayOptions {
        speedup: args.speedup,
        autoscaler_command: args.command.clone(),
    };
    let report_path = args.report.clone();
    let name = format!("replay-{}", scenario.name);
    e2e::scenario_with(&name, move |s| {
        Box::pin(async move {
            let report = replay(s, &scenario, &options).await?;
            let text = serde_json::to_string_pretty(&report)?;
            std::fs::write(s.dir.join("replay-report.json"), &text)?;
            if let Some(path) = &report_path {
                std::fs::write(path, format!("{text}\n"))
                    .with_context(|| format!("--report: write {}", path.display()))?;
            }
            let problems = fidelity_problems(&scenario, &simulated, &report, 0.15);
            println!("{}", comparison(&simulated, &report));
            if problems.is_empty() {
                println!("fidelity: within bounds (node-hours ±15 %, p95 time to start ± boot delay + 10 s)");
            } else {
                println!("fidelity: OUT OF BOUNDS: {}", problems.join("; "));
            }
            Ok(())
        })
    });
}

/// A short side-by-side of the simulator's and the replay's figures.
fn comparison(simulated: &serde_json::Value, replayed: &serde_json::Value) -> String {
    let get = |v: &serde_json::Value, path: &[&str]| {
        path.iter()
            .try_fold(v, |v, k| v.get(*k))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    let rows: [(&str, &[&str]); 9] = [
        ("simulated_seconds", &["simulated_seconds"]),
        ("node_hours", &["node_hours"]),
        ("cost_usd", &["cost_usd"]),
        ("lower_bound_node_hours", &["lower_bound_node_hours"]),
        ("time_to_start p50", &["time_to_start_seconds", "p50"]),
        ("time_to_start p95", &["time_to_start_seconds", "p95"]),
        ("time_to_start max", &["time_to_start_seconds", "max"]),
        ("pods completed", &["pods", "completed"]),
        ("pods killed_by_scale_in", &["pods", "killed_by_scale_in"]),
    ];
    let mut out = format!("{:<26} {:>12} {:>12}\n", "", "simulator", "replay");
    for (label, path) in rows {
        out.push_str(&format!(
            "{label:<26} {:>12.3} {:>12.3}\n",
            get(simulated, path),
            get(replayed, path)
        ));
    }
    out
}
