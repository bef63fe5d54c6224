//! Where things are: the workspace, testenv's scripts and pinned versions, the cache
//! of control-plane binaries, the cargo target directory and the autoscaler binary.

use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root (this crate lives in `crates/e2e`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

pub fn testenv() -> PathBuf {
    workspace().join("testenv")
}

/// The chart rendered with its defaults (`scripts/render-manifests.sh`).
pub fn rendered_manifests() -> PathBuf {
    workspace().join("deploy/manifests/batch-autoscaler.yaml")
}

/// `testenv/versions.env` as a map.
pub fn versions() -> anyhow::Result<BTreeMap<String, String>> {
    let path = testenv().join("versions.env");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect())
}

/// `$BATCH_AUTOSCALER_CACHE`, else `$HOME/.cache/batch-autoscaler`.
pub fn cache() -> PathBuf {
    match std::env::var_os("BATCH_AUTOSCALER_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/batch-autoscaler"),
    }
}

/// The control-plane binaries `start-control-plane.sh` needs, plus kubectl, at the
/// pinned versions (the layout of testenv/README.md), honouring the same overrides.
#[derive(Debug, Clone)]
pub struct ControlPlaneBinaries {
    pub kubectl: PathBuf,
    pub all: Vec<PathBuf>,
}

pub fn control_plane_binaries() -> anyhow::Result<ControlPlaneBinaries> {
    let v = versions()?;
    let get = |k: &str| {
        v.get(k)
            .cloned()
            .with_context(|| format!("{k} missing from testenv/versions.env"))
    };
    let cache = cache();
    let k8s = cache.join(format!("bin/k8s-{}", get("K8S_VERSION")?));
    let pick = |var: &str, default: PathBuf| {
        std::env::var_os(var)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or(default)
    };
    let kubectl = pick("KUBECTL", k8s.join("kubectl"));
    let all = vec![
        pick("KUBE_APISERVER", k8s.join("kube-apiserver")),
        pick(
            "KUBE_CONTROLLER_MANAGER",
            k8s.join("kube-controller-manager"),
        ),
        pick("KUBE_SCHEDULER", k8s.join("kube-scheduler")),
        pick(
            "ETCD_BIN",
            cache.join(format!("bin/etcd-{}/etcd", get("ETCD_VERSION")?)),
        ),
        pick(
            "KWOK_BIN",
            cache.join(format!("bin/kwok-{}/kwok", get("KWOK_VERSION")?)),
        ),
        kubectl.clone(),
    ];
    Ok(ControlPlaneBinaries { kubectl, all })
}

/// Binaries that are missing or not executable.
pub fn missing(binaries: &ControlPlaneBinaries) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    binaries
        .all
        .iter()
        .filter(|p| {
            !std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .cloned()
        .collect()
}

/// The cargo target directory: `CARGO_TARGET_DIR`, else the one this test binary was
/// built into (`<target>/debug/deps/e2e-…`), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            workspace().join(dir)
        };
    }
    if let Ok(exe) = std::env::current_exe() {
        // <target>/<profile>/deps/<test binary>
        if let Some(target) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
            if target.join("CACHEDIR.TAG").exists()
                || target.file_name().is_some_and(|n| n == "target")
            {
                return target.to_path_buf();
            }
        }
    }
    workspace().join("target")
}

/// The `batch-autoscaler` binary: `BATCH_AUTOSCALER_BIN` if set; otherwise
/// `cargo build -p batch-autoscaler --features cloud` is run once per test binary (a no-op when it is
/// up to date, and it makes sure a stale binary is never tested) and the debug
/// binary of the target directory is used.
pub fn autoscaler_binary() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(bin) = std::env::var_os("BATCH_AUTOSCALER_BIN").filter(|b| !b.is_empty()) {
                let bin = PathBuf::from(bin);
                return if bin.is_file() {
                    Ok(bin)
                } else {
                    Err(format!(
                        "BATCH_AUTOSCALER_BIN={} does not exist",
                        bin.display()
                    ))
                };
            }
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let target = target_dir();
            let status = Command::new(&cargo)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "batch-autoscaler",
                    "--bin",
                    "batch-autoscaler",
                    "--features",
                    "cloud",
                ])
                .env("CARGO_TARGET_DIR", &target)
                .current_dir(workspace())
                .status()
                .map_err(|e| format!("cannot run {cargo:?}: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "cargo build -p batch-autoscaler --features cloud failed ({status})"
                ));
            }
            let bin = target.join("debug/batch-autoscaler");
            if bin.is_file() {
                Ok(bin)
            } else {
                Err(format!("{} missing after cargo build", bin.display()))
            }
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// `crates/aws/moto/ensure-venv.sh`: the moto venv's python (created or reused).
pub fn moto_python() -> anyhow::Result<PathBuf> {
    let script = workspace().join("crates/aws/moto/ensure-venv.sh");
    let out = Command::new(&script)
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let python = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    if python.is_empty() {
        bail!("{} printed no interpreter", script.display());
    }
    Ok(PathBuf::from(python))
}

pub fn moto_launcher() -> PathBuf {
    workspace().join("crates/aws/moto/launcher.py")
}
