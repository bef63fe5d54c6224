//! Issue 14: a simulator scenario replayed on the real stack agrees with `simulate`.
//! Its own test binary, so its own control plane: a replay runs the scheduler with a
//! pod backoff of at most 1 s and the controllers at 1000 QPS
//! (`e2e::replay::configure_control_plane`), since Kubernetes' unscaled defaults cost
//! the speed-up times as much in scenario time. Gated like the
//! scenarios (`BATCH_AUTOSCALER_E2E=1`; `CI` turns a skip into a failure).

use anyhow::{ensure, Context, Result};
use e2e::{scenario, Scenario};

/// Issue 14. A simulator scenario (`crates/e2e/scenarios/replay-small.yaml`, the
/// format of `examples/`) replayed on the real stack at a speed-up of 10 agrees with
/// `simulate` of the same scenario: node-hours within 15 %, time-to-start p95 within
/// one boot delay + 10 s (scenario time); every pod completes, none is killed, and the
/// group is back at zero.
#[test]
fn replay_of_a_small_scenario_matches_the_simulator() {
    // Before the world of this binary starts (the first scenario starts it).
    e2e::replay::configure_control_plane();
    scenario("replay", |s| Box::pin(replay_small(s)));
}

async fn replay_small(s: &mut Scenario) -> Result<()> {
    let path = e2e::paths::workspace().join("crates/e2e/scenarios/replay-small.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let scenario = sim::Scenario::from_yaml(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let simulated = serde_json::to_value(
        sim::simulate(&scenario, &sim::SimOptions::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    )?;
    let options = e2e::replay::ReplayOptions {
        speedup: 10.0,
        autoscaler_command: None,
    };
    let report = e2e::replay::replay(s, &scenario, &options).await?;
    std::fs::write(
        s.dir.join("replay-report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    s.note(&format!(
        "simulator: node_hours {} p95 {}; replay: node_hours {} p95 {}",
        simulated["node_hours"],
        simulated["time_to_start_seconds"]["p95"],
        report["node_hours"],
        report["time_to_start_seconds"]["p95"]
    ));
    // The report has the simulator's keys.
    for key in [
        "scenario",
        "seed",
        "simulated_seconds",
        "pods",
        "time_to_start_seconds",
        "node_hours",
        "cost_usd",
        "lower_bound_node_hours",
        "groups",
    ] {
        ensure!(
            report.get(key).is_some() && simulated.get(key).is_some(),
            "key {key} missing: {report}"
        );
    }
    ensure!(
        report["stopped_because"] == "workload-done",
        "the replay ran to the horizon: {report}"
    );
    ensure!(
        report["pods"]["completed"] == 18 && report["pods"]["total"] == 18,
        "every pod completes: {}",
        report["pods"]
    );
    ensure!(
        report["pods"]["killed_by_scale_in"] == 0,
        "nothing is killed: {}",
        report["pods"]
    );
    ensure!(
        report["groups"][0]["at_end"] == 0 && report["groups"][0]["launched"].as_u64() >= Some(3),
        "the group scaled up and back to zero: {}",
        report["groups"][0]
    );
    let problems = e2e::replay::fidelity_problems(&scenario, &simulated, &report, 0.15);
    ensure!(
        problems.is_empty(),
        "replay and simulator disagree: {problems:?}\nsimulator: {simulated}\nreplay: {report}"
    );
    Ok(())
}
