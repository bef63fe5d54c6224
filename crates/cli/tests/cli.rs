//! The built binary: exit codes, messages that name the bad field, and the simulate
//! command's outputs.

use std::path::PathBuf;
use std::process::{Command, Output};

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_batch-autoscaler"))
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("batch-autoscaler-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn example(name: &str) -> String {
    format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const GOOD: &str = "
name: t
horizon: 2h
node_groups:
  - {name: cpu, region: us-west-2, zone: us-west-2a, instance_type: m5.large, max: 3}
workload:
  - {name: etl, pods: 2, requests: {cpu: 1, memory: 1Gi}, duration: 10m}
";

fn simulate_text(name: &str, text: &str) -> Output {
    let path = scratch(name);
    std::fs::write(&path, text).unwrap();
    binary()
        .arg("simulate")
        .arg(&path)
        .arg("--quiet")
        .output()
        .unwrap()
}

#[test]
fn bad_scenarios_exit_2_naming_the_field() {
    let cases = [
        (
            "unknown-field.yaml",
            GOOD.replace("duration: 10m}", "duration: 10m, colour: red}"),
            "colour",
        ),
        (
            "bad-quantity.yaml",
            GOOD.replace("cpu: 1,", "cpu: 2x,"),
            "workload[0] (etl).requests.cpu: invalid quantity \"2x\"",
        ),
        (
            "min-max.yaml",
            GOOD.replace("max: 3", "min: 5, max: 3"),
            "node_groups[0] (cpu): min 5 is greater than max 3",
        ),
        (
            "unknown-type.yaml",
            GOOD.replace("m5.large", "zz.huge"),
            "node_groups[0] (cpu).instance_type: unknown instance type \"zz.huge\"",
        ),
        (
            "negative-duration.yaml",
            GOOD.replace("duration: 10m", "duration: -10m"),
            "workload[0] (etl).duration: invalid duration \"-10m\"",
        ),
        (
            "bad-setting.yaml",
            format!("{GOOD}settings: {{scan-intervall: 10s}}\n"),
            "scan-intervall",
        ),
    ];
    for (file, text, expected) in cases {
        let out = simulate_text(file, &text);
        assert_eq!(out.status.code(), Some(2), "{file}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{file}: expected {expected:?} in {:?}",
            stderr(&out)
        );
    }
}

#[test]
fn a_good_scenario_runs_and_writes_report_and_plot() {
    let report = scratch("report.json");
    let plot = scratch("plot.svg");
    let out = binary()
        .args(["simulate", &example("cpu-burst.yaml"), "--report"])
        .arg(&report)
        .arg("--plot")
        .arg(&plot)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("0 killed by scale-in"), "{summary}");
    let json = std::fs::read_to_string(&report).unwrap();
    assert!(json.contains("\"killed_by_scale_in\": 0"));
    assert!(json.contains("\"lower_bound_node_hours\""));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
}

#[test]
fn seed_flag_overrides_the_scenario() {
    let report = scratch("seeded.json");
    let out = binary()
        .args([
            "simulate",
            &example("cpu-burst.yaml"),
            "--quiet",
            "--seed",
            "42",
            "--report",
        ])
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "--quiet prints nothing");
    assert!(std::fs::read_to_string(&report)
        .unwrap()
        .contains("\"seed\": 42"));
}

#[test]
fn usage_errors_and_missing_files_exit_2() {
    let out = binary()
        .args(["simulate", "--no-such-flag", "x.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = binary()
        .args(["simulate", "/nonexistent/scenario.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/scenario.yaml"));
}

#[test]
fn a_report_that_cannot_be_written_is_a_runtime_failure() {
    let out = binary()
        .args([
            "simulate",
            &example("cpu-burst.yaml"),
            "--quiet",
            "--report",
            "/nonexistent-dir/report.json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot write report"));
}

#[cfg(feature = "cloud")]
#[test]
fn run_and_explain_reject_bad_flags_with_exit_2_naming_the_field() {
    let cases: &[(&[&str], &str)] = &[
        (&["run"], "cluster-name"),
        (
            &[
                "run",
                "--cluster-name",
                "c",
                "--scale-down-utilization-threshold",
                "2",
            ],
            "scale-down-utilization-threshold",
        ),
        (
            &[
                "run",
                "--cluster-name",
                "c",
                "--aws-regions",
                "us-west-2",
                "--nodes",
                "10:1:asg",
            ],
            "nodes",
        ),
        (
            &[
                "run",
                "--cluster-name",
                "c",
                "--aws-regions",
                "us-west-2",
                "--address",
                "nowhere",
            ],
            "address",
        ),
        (
            &[
                "run",
                "--cluster-name",
                "c",
                "--config",
                "/nonexistent/config.yaml",
            ],
            "config",
        ),
        (&["explain", "ns/pod"], "cluster-name"),
    ];
    for (args, field) in cases {
        let out = binary()
            .args(*args)
            .env_remove("KUBECONFIG")
            .env_remove("AWS_REGION")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(field), "{args:?}: {}", stderr(&out));
    }
}

/// Built without the `cloud` feature (`cargo run -p batch-autoscaler`, the README's
/// first command), `run` and `explain` are listed but say how to get them, exit 2.
#[cfg(not(feature = "cloud"))]
#[test]
fn without_the_cloud_feature_run_and_explain_say_how_to_build_them() {
    let help = binary().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for sub in ["simulate", "run", "explain", "bench"] {
        assert!(help.contains(&format!("  {sub} ")), "{sub} missing: {help}");
    }
    for args in [
        &["run"][..],
        &["run", "--cluster-name", "c"],
        &["explain", "ns/pod"],
    ] {
        let out = binary().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("`{}` needs the cloud adapters", args[0]))
                && err.contains("cargo build --release -p batch-autoscaler --features cloud"),
            "{args:?}: {err}"
        );
    }
    let version = binary().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains("without the cloud feature"));
}

#[test]
fn version_is_printed() {
    let out = binary().arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}
