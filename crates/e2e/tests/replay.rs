//! Issue 14: a simulator scenario replayed on the real stack agrees with `simulate`.
//! Its own test binary, so its own control plane: a replay runs the scheduler with a
//! pod backoff of at most 1 s and the controllers at 1000 QPS
//! (`e2e::replay::configure_control_plane`), since Kubernetes' unscaled defaults cost
//! the speed-up times as much in scenario time. Gated like the
//! scenarios (`BATCH_AUTOSCALER_E2E=1`; `CI` turns a skip into a failure).

use anyhow::{ensure, Context, Result};
use e2e::wait::{wait_until, Check};
use e2e::{scenario, Scenario};
use std::time::Duration;

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

/// A scenario that needs no autoscaler: its one node is there from the start (min 1),
/// its one pod runs on it, and the replay ends as soon as the pod has completed.
const ONE_NODE: &str = r#"
name: one-node
seed: 1
horizon: 1h
node_groups:
  - name: cpu-usw2a
    region: us-west-2
    zone: us-west-2a
    instance_type: m5.xlarge
    min: 1
    max: 1
    boot_delay: 20s
workload:
  - name: short
    at: 0s
    pods: 1
    requests: {cpu: "1", memory: 1Gi}
    duration: 30s
"#;

/// An `--autoscaler-command` as users write them: a script that starts a child of its
/// own (a log shipper, a sidecar) and then `exec`s the autoscaler (`sleep` stands in).
/// It writes its group's id (`$$`, the leader's pid) and the child's pid to `dir`.
fn wrapper_command(dir: &std::path::Path) -> String {
    format!(
        "echo $$ > {d}/leader.pid; sleep 3600 & echo $! > {d}/child.pid.tmp; \
         mv {d}/child.pid.tmp {d}/child.pid; exec sleep 3600",
        d = dir.display()
    )
}

fn read_pid(path: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Issue 25. At the end of a replay, the `--autoscaler-command`'s process group is
/// stopped whole: the child its script started is gone too, not only the shell.
#[test]
fn an_autoscaler_command_and_its_children_are_stopped_at_the_end_of_a_replay() {
    e2e::replay::configure_control_plane();
    scenario("replay-command-stopped", |s| Box::pin(command_stopped(s)));
}

async fn command_stopped(s: &mut Scenario) -> Result<()> {
    let scenario = sim::Scenario::from_yaml(ONE_NODE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pids = s.dir.join("command-pids");
    std::fs::create_dir_all(&pids)?;
    let options = e2e::replay::ReplayOptions {
        speedup: 10.0,
        autoscaler_command: Some(wrapper_command(&pids)),
    };
    let report = e2e::replay::replay(s, &scenario, &options).await?;
    ensure!(
        report["stopped_because"] == "workload-done",
        "the replay ran to its end: {report}"
    );
    let leader = read_pid(&pids.join("leader.pid")).context("the command never started")?;
    let child = read_pid(&pids.join("child.pid")).context("the command's child never started")?;
    // The replay returns once the group is stopped: no waiting here.
    ensure!(
        !e2e::process::alive(child),
        "the command's child {child} outlived the replay"
    );
    let left = e2e::process::group_members(leader);
    ensure!(
        left.is_empty(),
        "processes of the command's group left: {left:?}"
    );
    Ok(())
}

/// Issue 25. A replay killed outright (SIGKILL: no clean-up of its own runs) leaves no
/// process of its `--autoscaler-command` behind: the reaper of its environment kills
/// the group.
#[test]
fn an_autoscaler_command_and_its_children_are_stopped_when_the_replay_is_killed() {
    e2e::replay::configure_control_plane();
    scenario("replay-killed", |s| Box::pin(replay_killed(s)));
}

async fn replay_killed(s: &mut Scenario) -> Result<()> {
    let pids = s.dir.join("command-pids");
    std::fs::create_dir_all(&pids)?;
    // Long enough that the replay is still running when it is killed.
    let file = s.dir.join("one-node-long.yaml");
    std::fs::write(&file, ONE_NODE.replace("duration: 30s", "duration: 30m"))?;
    let log = std::fs::File::create(s.dir.join("replay-binary.log"))?;
    // The replay binary starts an environment of its own (control plane, moto, reaper).
    let mut replay = std::process::Command::new(env!("CARGO_BIN_EXE_replay"))
        .arg(&file)
        .args([
            "--speedup",
            "1",
            "--autoscaler-command",
            &wrapper_command(&pids),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start the replay binary")?;
    let started = wait_until(
        "the command's child started",
        Duration::from_secs(180),
        || {
            let child = read_pid(&pids.join("child.pid"));
            let exited = replay.try_wait().ok().flatten();
            async move {
                Ok(match (child, exited) {
                    (Some(child), _) => Check::Done(child),
                    (None, Some(status)) => Check::Failed(format!("the replay exited ({status})")),
                    (None, None) => Check::Waiting("no child.pid yet".into()),
                })
            }
        },
    )
    .await;
    let child = match started {
        Ok(child) => child,
        Err(e) => {
            let _ = replay.kill();
            let _ = replay.wait();
            return Err(e);
        }
    };
    let leader = read_pid(&pids.join("leader.pid")).context("leader.pid")?;
    replay.kill().context("SIGKILL the replay")?;
    replay.wait()?;
    s.note(&format!(
        "killed the replay; its command's group {leader}, child {child}"
    ));
    wait_until("the command's group gone", Duration::from_secs(60), || {
        let left = e2e::process::group_members(leader);
        let child_alive = e2e::process::alive(child);
        async move {
            Ok(if left.is_empty() && !child_alive {
                Check::Done(())
            } else {
                Check::Waiting(format!("group members {left:?}, child alive {child_alive}"))
            })
        }
    })
    .await
}
