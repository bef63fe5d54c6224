//! Helpers for the `shipping` tests (tests/): paths, the tools they run (helm, the
//! `batch-autoscaler` binary) and YAML documents. There is no production code here.

use serde::Deserialize;
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// A repository file's text.
pub fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// True when running in CI (`CI` set to anything but empty/`false`/`0`): a missing
/// tool is then a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Reports a test that cannot run here: a failure in CI, a visible skip otherwise.
pub fn skip_or_fail(test: &str, why: &str) {
    assert!(
        !in_ci(),
        "{test}: {why} (CI is set, so this fails instead of skipping)"
    );
    eprintln!("SKIPPED {test}: {why}");
}

/// A `KEY=value` assignment from scripts/check-shipping.sh (the pinned tool versions).
pub fn pinned(key: &str) -> String {
    let script = read("scripts/check-shipping.sh");
    script
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key}= not found in scripts/check-shipping.sh"))
        .trim()
        .to_owned()
}

/// helm: `$HELM`, else the cached install of the pinned version. None when absent.
pub fn helm() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HELM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let cache = std::env::var_os("BATCH_AUTOSCALER_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/batch-autoscaler"))
        })?;
    let path = cache
        .join("bin")
        .join(format!("helm-{}", pinned("HELM_VERSION")))
        .join("helm");
    path.is_file().then_some(path)
}

/// Runs a command, panics unless it succeeds, returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `helm template` of the chart with extra arguments (`-f`, `--set`, ...).
pub fn helm_template(helm: &Path, release: &str, namespace: &str, extra: &[&str]) -> String {
    let mut cmd = Command::new(helm);
    cmd.current_dir(repo())
        .args([
            "template",
            release,
            "deploy/helm/batch-autoscaler",
            "--namespace",
            namespace,
        ])
        .args(extra);
    run_ok(&mut cmd)
}

/// The `batch-autoscaler` binary of this build (`target/<profile>/batch-autoscaler`,
/// next to the test's own `deps/` directory), or `$BATCH_AUTOSCALER_BIN`.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BATCH_AUTOSCALER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = profile_dir.join("batch-autoscaler");
    assert!(
        path.is_file(),
        "{} not found: build it first, with the cloud adapters (`cargo build -p batch-autoscaler --features cloud`; `cargo test --workspace --features batch-autoscaler/cloud` builds it)",
        path.display()
    );
    path
}

/// Every YAML document of a multi-document text (empty documents dropped).
pub fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The documents of `kind` (and `name`, when given).
pub fn find<'a>(docs: &'a [Value], kind: &str, name: Option<&str>) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| {
            d["kind"].as_str() == Some(kind)
                && name.is_none_or(|n| d["metadata"]["name"].as_str() == Some(n))
        })
        .collect()
}
