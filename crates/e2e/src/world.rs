//! The environment shared by the tests of one test binary: a control plane, a moto
//! server, the shipped RBAC and a ServiceAccount kubeconfig. Built once, on first
//! use, with blocking code (it must outlive each test's tokio runtime, so it holds
//! paths and URLs, never clients). Torn down by the reaper when the process exits.

use crate::gate::say;
use crate::manifests;
use crate::paths;
use crate::process;
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Namespace, ServiceAccount and object names of the chart's defaults
/// (`deploy/manifests/batch-autoscaler.yaml`).
pub const AUTOSCALER_NAMESPACE: &str = "kube-system";
pub const AUTOSCALER_SERVICE_ACCOUNT: &str = "batch-autoscaler";
pub const STATUS_CONFIGMAP: &str = "batch-autoscaler-status";
pub const LEASE: &str = "batch-autoscaler";

#[derive(Debug)]
pub struct World {
    /// Everything of this test binary: logs, kubeconfigs, one directory per scenario.
    pub dir: PathBuf,
    /// `start-control-plane.sh`'s directory (its `env`, `logs/`, `run/`).
    pub control_plane_dir: PathBuf,
    /// `DIR/env` of the control plane.
    pub env: BTreeMap<String, String>,
    pub admin_kubeconfig: PathBuf,
    /// A kubeconfig for `system:serviceaccount:kube-system:batch-autoscaler`.
    pub autoscaler_kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub autoscaler_binary: PathBuf,
    pub moto_url: String,
    pub started: Instant,
}

static WORLD: OnceLock<Result<World, String>> = OnceLock::new();

impl World {
    /// The world of this test binary, built on first use. Panics (with the logs) if it
    /// cannot be built; every later test then fails with the same message.
    pub fn get() -> &'static World {
        match WORLD.get_or_init(|| World::build().map_err(|e| format!("{e:#}"))) {
            Ok(world) => world,
            Err(e) => panic!("the end-to-end environment could not be started: {e}"),
        }
    }

    fn build() -> anyhow::Result<World> {
        let started = Instant::now();
        let binaries = paths::control_plane_binaries()?;
        let missing = paths::missing(&binaries);
        if !missing.is_empty() {
            bail!(
                "control-plane binaries missing: {} (run testenv/build-control-plane.sh)",
                missing
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let autoscaler_binary = paths::autoscaler_binary()?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "batch-autoscaler-e2e-{stamp}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let control_plane_dir = dir.join("control-plane");
        process::spawn_reaper(&dir, &control_plane_dir, &dir.join("KEEP"))?;
        say(&format!(
            "e2e: environment in {} (kept after a failure, or with KEEP_E2E_DIR=1)",
            dir.display()
        ));

        let result = Self::start(
            &dir,
            &control_plane_dir,
            binaries.kubectl.clone(),
            autoscaler_binary,
            started,
        );
        if result.is_err() {
            let _ = std::fs::write(dir.join("KEEP"), "");
            say(&process::tail(&dir.join("start-control-plane.log"), 20_000));
            say(&process::tail(&dir.join("moto.log"), 5_000));
        }
        result
    }

    fn start(
        dir: &Path,
        cp_dir: &Path,
        kubectl: PathBuf,
        autoscaler_binary: PathBuf,
        started: Instant,
    ) -> anyhow::Result<World> {
        // The control plane (≈10 s) and moto start side by side.
        let start_log = std::fs::File::create(dir.join("start-control-plane.log"))?;
        let mut start_cp = Command::new(paths::testenv().join("start-control-plane.sh"))
            .arg(cp_dir)
            .stdin(Stdio::null())
            .stdout(start_log.try_clone()?)
            .stderr(start_log)
            .spawn()
            .context("run testenv/start-control-plane.sh")?;
        let moto_url = start_moto(dir)?;
        let status = start_cp.wait()?;
        if !status.success() {
            bail!(
                "testenv/start-control-plane.sh failed ({status}); see {}",
                dir.join("start-control-plane.log").display()
            );
        }
        let env_text = std::fs::read_to_string(cp_dir.join("env")).context("control plane env")?;
        let env: BTreeMap<String, String> = env_text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let admin_kubeconfig = PathBuf::from(env.get("KUBECONFIG").context("KUBECONFIG in env")?);
        say(&format!(
            "e2e: control plane {} ready after {:.1}s",
            env.get("KUBE_API_URL").map(String::as_str).unwrap_or("?"),
            started.elapsed().as_secs_f64()
        ));

        // The chart's ServiceAccount and roles, applied as a user would: the autoscaler
        // runs with exactly the permissions it ships with.
        let render_path = paths::rendered_manifests();
        let render = std::fs::read_to_string(&render_path)
            .with_context(|| format!("read {}", render_path.display()))?;
        let rbac_path = dir.join("rbac.yaml");
        std::fs::write(&rbac_path, manifests::rbac_of(&render))?;
        let mut attempt = 0;
        loop {
            let out = Command::new(&kubectl)
                .args(["--kubeconfig"])
                .arg(&admin_kubeconfig)
                .args(["apply", "-f"])
                .arg(&rbac_path)
                .output()
                .context("kubectl apply")?;
            if out.status.success() {
                break;
            }
            // Right after /readyz the RBAC API may still refuse for a moment.
            attempt += 1;
            if attempt >= 20 {
                bail!(
                    "kubectl apply of the chart's RBAC ({}) failed: {}",
                    rbac_path.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let autoscaler_kubeconfig = dir.join("autoscaler-sa.kubeconfig");
        let out = Command::new(paths::testenv().join("sa-kubeconfig.sh"))
            .arg(cp_dir)
            .args([AUTOSCALER_NAMESPACE, AUTOSCALER_SERVICE_ACCOUNT])
            .arg(&autoscaler_kubeconfig)
            .env("KUBECTL", &kubectl)
            .output()
            .context("testenv/sa-kubeconfig.sh")?;
        if !out.status.success() {
            bail!(
                "testenv/sa-kubeconfig.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        say(&format!(
            "e2e: environment ready after {:.1}s (moto at {moto_url})",
            started.elapsed().as_secs_f64()
        ));
        Ok(World {
            dir: dir.to_path_buf(),
            control_plane_dir: cp_dir.to_path_buf(),
            env,
            admin_kubeconfig,
            autoscaler_kubeconfig,
            kubectl,
            autoscaler_binary,
            moto_url,
            started,
        })
    }

    /// Keeps the directory (logs) after the process exits.
    pub fn keep(&self) {
        let _ = std::fs::write(self.dir.join("KEEP"), "");
    }

    /// The control plane's component logs.
    pub fn component_logs(&self) -> Vec<PathBuf> {
        process::files_in(&self.control_plane_dir.join("logs"))
    }

    /// Restarts one control-plane component with `testenv/restart-component.sh`
    /// (waits for the apiserver's /readyz when it is the apiserver or etcd).
    pub async fn restart_component(&self, component: &str, kill: bool) -> anyhow::Result<()> {
        let mut command =
            tokio::process::Command::new(paths::testenv().join("restart-component.sh"));
        command.arg(&self.control_plane_dir).arg(component);
        if kill {
            command.arg("--kill");
        }
        let out = command
            .output()
            .await
            .context("testenv/restart-component.sh")?;
        if !out.status.success() {
            bail!(
                "restart of {component} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

/// Starts `launcher.py` (registered for the reaper) and returns its URL.
fn start_moto(dir: &Path) -> anyhow::Result<String> {
    let python = paths::moto_python()?;
    let url_file = dir.join("moto.url");
    let child = Command::new(python)
        .arg(paths::moto_launcher())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&url_file)?)
        .stderr(std::fs::File::create(dir.join("moto.log"))?)
        .spawn()
        .context("start crates/aws/moto/launcher.py")?;
    process::register_pid(dir, "moto", child.id());
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&url_file).unwrap_or_default();
        if let Some(url) = text.lines().next().filter(|l| l.starts_with("http://")) {
            return Ok(url.trim().to_owned());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "moto launcher printed no URL within 60s; see {}",
                dir.join("moto.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl World {
    /// Waits until the CustomResourceDefinition `name` is Established. Not `kubectl
    /// wait --for=condition=established`: right after the apply the CRD may have no
    /// status conditions yet, and kubectl then fails instead of waiting.
    pub fn wait_crd_established(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let query = "jsonpath={.status.conditions[?(@.type==\"Established\")].status}";
        loop {
            let status = self.kubectl_admin(&["get", &format!("crd/{name}"), "-o", query], "");
            if status.as_deref().is_ok_and(|s| s.trim() == "True") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("CRD {name} not Established within {timeout:?} (last read: {status:?})");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs kubectl as the cluster admin with `stdin` as its input; the output on success.
    pub fn kubectl_admin(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        use std::io::Write;
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(stdin.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
