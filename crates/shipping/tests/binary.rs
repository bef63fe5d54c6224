//! The binary as shipped: `--version` names the commit, and secrets never reach its
//! output. The secrets tests run `batch-autoscaler run` with a fake AWS key, a fake
//! Slack hook and a fake kube token against unreachable endpoints on 127.0.0.1 (so it
//! retries, errs and logs with `-v`) and assert that none of them appears in stdout or
//! stderr, at every verbosity (the binary keeps the AWS SDK's crates at info because
//! their debug logs print the access key id).

use shipping::{binary, run_ok};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ACCESS_KEY: &str = "AKIAFAKEFAKEFAKE0000";
const SECRET_KEY: &str = "fake/secret/DO-NOT-LOG";
/// Port 9 (discard) on loopback: nothing listens, connections are refused at once.
const SLACK_HOOK: &str = "http://127.0.0.1:9/services/T0FAKE/B0FAKE/SlackHookDoNotLog";
const KUBE_TOKEN: &str = "kube-token-DO-NOT-LOG-0123456789";
const UNREACHABLE: &str = "http://127.0.0.1:1";

/// The fragments that must never be printed (a secret cut in half still leaks).
fn needles() -> Vec<&'static str> {
    vec![
        ACCESS_KEY,
        SECRET_KEY,
        "DO-NOT-LOG",
        "SlackHookDoNotLog",
        "B0FAKE",
        "0123456789",
        "AKIAFAKE",
    ]
}

#[test]
fn version_names_the_package_version_and_commit() {
    let out = run_ok(Command::new(binary()).arg("--version"));
    let line = out.trim();
    let rest = line
        .strip_prefix(&format!(
            "batch-autoscaler {} (commit ",
            env!("CARGO_PKG_VERSION")
        ))
        .unwrap_or_else(|| panic!("{line}"));
    let commit = rest.strip_suffix(')').unwrap_or_else(|| panic!("{line}"));
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{line}"
    );
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("shipping-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
    fn kubeconfig(&self) -> PathBuf {
        let path = self.0.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: {KUBE_TOKEN}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        );
        std::fs::write(&path, text).expect("kubeconfig");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A clean environment that can reach nothing: no metadata service, no real
/// credentials, no proxies.
fn command(kubeconfig: &Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("HOME", kubeconfig.parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs the command until its output satisfies `enough` (then 2 s more, so that what
/// follows is printed too) or for at most `limit`, then kills it; returns everything
/// it printed, stdout then stderr interleaved as read.
fn output_until(mut cmd: Command, limit: Duration, enough: impl Fn(&str) -> bool) -> String {
    let mut child = cmd.spawn().expect("spawn batch-autoscaler");
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|mut pipe| {
        let buffer = Arc::clone(&buffer);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buffer.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        })
    })
    .collect();
    let start = Instant::now();
    let mut deadline = start + limit;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        let seen = String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned();
        if enough(&seen) && deadline > Instant::now() + Duration::from_secs(2) {
            deadline = Instant::now() + Duration::from_secs(2);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    for r in readers {
        let _ = r.join();
    }
    let out = buffer.lock().unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// For commands that end by themselves.
fn output_within(cmd: Command, limit: Duration) -> String {
    output_until(cmd, limit, |_| false)
}

/// Runs `run` until it has called AWS and logged the failure (at most 60 s).
fn run_output(cmd: Command) -> String {
    output_until(cmd, Duration::from_secs(60), ran)
}

fn ran(output: &str) -> bool {
    output.contains("starting")
        && (output.contains("autoscaling") || output.contains("AutoScaling"))
}

/// The run got as far as calling AWS (signed with the fake key) and logging its failure.
fn assert_ran(output: &str) {
    assert!(
        ran(output),
        "the run did not start, or never called AWS:\n{output}"
    );
}

fn assert_no_secret(what: &str, output: &str) {
    for needle in needles() {
        assert!(
            !output.contains(needle),
            "{what}: the output contains {needle:?}:\n{output}"
        );
    }
}

/// The common flags of a run that gets as far as it can: AWS and the apiserver
/// unreachable, an ephemeral metrics port, and a config file (`extra` plus leader
/// election off, so the loop starts at once and calls AWS with the key).
///
/// Leader election is turned off in the file because `--leader-elect false` on the
/// command line is currently dropped by the flag/file merge (a `false` counts as unset).
fn run_args(scratch: &Scratch, extra: &str) -> Vec<String> {
    run_args_at(scratch, extra, "-v")
}

fn run_args_at(scratch: &Scratch, extra: &str, verbosity: &str) -> Vec<String> {
    let config = scratch.0.join("config.yaml");
    std::fs::write(&config, format!("leader-elect: false\n{extra}")).expect("config file");
    [
        "run",
        "--cluster-name",
        "secret-test",
        "--aws-regions",
        "us-west-2",
        "--aws-endpoint-url",
        UNREACHABLE,
        "--address",
        "127.0.0.1:0",
        "--scan-interval",
        "1s",
        verbosity,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([
        "--kubeconfig".to_owned(),
        scratch.kubeconfig().display().to_string(),
        "--config".to_owned(),
        config.display().to_string(),
    ])
    .collect()
}

/// Commands that end by themselves (errors, --help) get this long.
const RUN_FOR: Duration = Duration::from_secs(30);

#[test]
fn secrets_given_as_flags_are_never_printed() {
    let scratch = Scratch::new("flags");
    let mut cmd = command(&scratch.kubeconfig());
    cmd.args(run_args(&scratch, "")).args([
        "--aws-access-key",
        ACCESS_KEY,
        "--aws-secret-key",
        SECRET_KEY,
        "--slack-hook",
        SLACK_HOOK,
    ]);
    let output = run_output(cmd);
    assert_ran(&output);
    assert_no_secret("flags, text logs", &output);
}

#[test]
fn secrets_given_in_the_environment_are_never_printed() {
    let scratch = Scratch::new("env");
    let mut cmd = command(&scratch.kubeconfig());
    cmd.args(run_args(&scratch, ""))
        .args(["--log-format", "json"])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("SLACK_HOOK", SLACK_HOOK);
    let output = run_output(cmd);
    assert_ran(&output);
    assert_no_secret("environment, JSON logs", &output);
}

#[test]
fn secrets_given_in_a_config_file_are_never_printed() {
    let scratch = Scratch::new("file");
    let secrets = format!(
        "aws-access-key: {ACCESS_KEY}\naws-secret-key: {SECRET_KEY}\nslack-hook: {SLACK_HOOK}\n"
    );
    let mut cmd = command(&scratch.kubeconfig());
    cmd.args(run_args(&scratch, &secrets));
    let output = run_output(cmd);
    assert_ran(&output);
    assert_no_secret("config file", &output);
}

/// Errors (bad input, exit 2), `--help` and `explain` with secrets in the environment.
#[test]
fn secrets_are_not_printed_by_errors_help_or_explain() {
    let scratch = Scratch::new("errors");
    let kubeconfig = scratch.kubeconfig();
    let with_secrets = |args: &[&str]| {
        let mut cmd = command(&kubeconfig);
        cmd.args(args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("SLACK_HOOK", SLACK_HOOK);
        cmd
    };
    let bad = output_within(
        with_secrets(&[
            "run",
            "--cluster-name",
            "c",
            "--scale-down-utilization-threshold",
            "lots",
        ]),
        RUN_FOR,
    );
    assert!(bad.contains("scale-down-utilization-threshold"), "{bad}");
    assert_no_secret("a bad flag", &bad);
    let bad_hook = output_within(
        with_secrets(&[
            "run",
            "--cluster-name",
            "c",
            "--aws-regions",
            "us-west-2",
            "--slack-hook",
            "not a url DO-NOT-LOG",
        ]),
        RUN_FOR,
    );
    assert_no_secret("a malformed hook", &bad_hook);
    for sub in ["run", "explain"] {
        let help = output_within(with_secrets(&[sub, "--help"]), RUN_FOR);
        assert!(help.contains("--slack-hook"), "{help}");
        assert_no_secret("--help", &help);
    }
    // explain fails fast on an unreadable kubeconfig, with every secret loaded.
    let explain = output_within(
        with_secrets(&[
            "explain",
            "default/pod",
            "--cluster-name",
            "c",
            "--aws-regions",
            "us-west-2",
            "--aws-endpoint-url",
            UNREACHABLE,
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ]),
        RUN_FOR,
    );
    assert!(explain.contains("error"), "{explain}");
    assert_no_secret("explain", &explain);
}

#[test]
fn secrets_are_never_printed_at_debug_and_trace_verbosity() {
    for verbosity in ["-vv", "-vvv"] {
        let scratch = Scratch::new(&format!("verbose{verbosity}"));
        let mut cmd = command(&scratch.kubeconfig());
        cmd.args(run_args_at(&scratch, "", verbosity)).args([
            "--aws-access-key",
            ACCESS_KEY,
            "--aws-secret-key",
            SECRET_KEY,
            "--slack-hook",
            SLACK_HOOK,
        ]);
        let output = run_output(cmd);
        assert_ran(&output);
        assert_no_secret(verbosity, &output);
    }
}
