//! The autoscaler binary as deployed: a separate process, the ServiceAccount's
//! kubeconfig (RBAC enforced by the apiserver), AWS credentials pointed at moto, its
//! own log file, and `/metrics`, `/healthz`, `/readyz` on a free port.

use crate::http;
use crate::moto::{ACCESS_KEY, SECRET_KEY};
use crate::process;
use crate::world::{World, AUTOSCALER_NAMESPACE};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Flags of one autoscaler process. Defaults are the scenarios' small timings.
#[derive(Debug, Clone)]
pub struct AutoscalerOptions {
    pub cluster: String,
    pub regions: Vec<String>,
    /// `--flag value` (or `--flag` alone for `None`), in order.
    pub flags: BTreeMap<String, Option<String>>,
    /// Another kubeconfig than the world's (e.g. through a proxy).
    pub kubeconfig: Option<PathBuf>,
    /// Another AWS access key id than the world's (moto logs calls per key).
    pub access_key: Option<String>,
}

impl AutoscalerOptions {
    pub fn new(cluster: &str, regions: &[String]) -> Self {
        let mut flags = BTreeMap::new();
        for (k, v) in [
            ("scan-interval", "2s"),
            ("scale-down-unneeded-time", "20s"),
            ("scale-down-delay-after-add", "0s"),
            ("scale-down-confirm-delay", "2s"),
            ("max-node-provision-time", "60s"),
        ] {
            flags.insert(k.to_owned(), Some(v.to_owned()));
        }
        Self {
            cluster: cluster.to_owned(),
            regions: regions.to_vec(),
            flags,
            kubeconfig: None,
            access_key: None,
        }
    }

    /// Sets `--name value`.
    pub fn kubeconfig(mut self, path: PathBuf) -> Self {
        self.kubeconfig = Some(path);
        self
    }

    pub fn access_key(mut self, key: &str) -> Self {
        self.access_key = Some(key.into());
        self
    }

    pub fn flag(mut self, name: &str, value: &str) -> Self {
        self.flags.insert(name.to_owned(), Some(value.to_owned()));
        self
    }

    /// Sets a boolean `--name`.
    pub fn switch(mut self, name: &str) -> Self {
        self.flags.insert(name.to_owned(), None);
        self
    }
}

/// One autoscaler process.
pub struct Autoscaler {
    pub name: String,
    pub pid: u32,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    pub log: PathBuf,
    pub started: Instant,
    child: tokio::process::Child,
    world_dir: PathBuf,
}

impl Drop for Autoscaler {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        process::unregister_pid(&self.world_dir, &self.name);
    }
}

/// Parsed Prometheus text.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// (name, labels, value)
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = match line.rsplit_once(' ') {
                Some((s, v)) => (s.trim(), v.trim()),
                None => continue,
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let mut labels = BTreeMap::new();
                    for pair in rest.trim_end_matches('}').split("\",") {
                        if let Some((k, v)) = pair.split_once('=') {
                            labels
                                .insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
                        }
                    }
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), BTreeMap::new()),
            };
            samples.push((name, labels, value));
        }
        Self { samples }
    }

    /// Sum of the samples of `name` whose labels include all of `filters`.
    pub fn sum(&self, name: &str, filters: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && filters
                        .iter()
                        .all(|(k, v)| labels.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }
}

impl Autoscaler {
    /// Starts `batch-autoscaler run` with `options`; its output goes to `log`.
    pub async fn start(
        world: &World,
        name: &str,
        log: PathBuf,
        options: &AutoscalerOptions,
    ) -> anyhow::Result<Self> {
        let port = process::free_port();
        let mut command = tokio::process::Command::new(&world.autoscaler_binary);
        command
            .arg("run")
            .arg("--kubeconfig")
            .arg(
                options
                    .kubeconfig
                    .as_ref()
                    .unwrap_or(&world.autoscaler_kubeconfig),
            )
            .args(["--cluster-name", &options.cluster])
            .args(["--aws-regions", &options.regions.join(",")])
            .args(["--aws-endpoint-url", &world.moto_url])
            .args(["--namespace", AUTOSCALER_NAMESPACE])
            .args(["--address", &format!("127.0.0.1:{port}")])
            .arg("-v");
        for (flag, value) in &options.flags {
            command.arg(format!("--{flag}"));
            if let Some(v) = value {
                command.arg(v);
            }
        }
        // Only what a deployment would set: no leaking of the harness's environment.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("BATCH_AUTOSCALER_")
                || key.starts_with("AWS_")
                || key == "KUBECONFIG"
                || key == "RUST_LOG"
                || key == "SLACK_HOOK"
            {
                command.env_remove(&key);
            }
        }
        command
            .env(
                "AWS_ACCESS_KEY_ID",
                options.access_key.as_deref().unwrap_or(ACCESS_KEY),
            )
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env(
                "AWS_REGION",
                options
                    .regions
                    .first()
                    .map(String::as_str)
                    .unwrap_or("us-west-2"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("POD_NAME", name)
            // A log filter for debugging a scenario: E2E_AUTOSCALER_RUST_LOG=… becomes RUST_LOG.
            .envs(
                std::env::var("E2E_AUTOSCALER_RUST_LOG")
                    .ok()
                    .map(|f| ("RUST_LOG", f)),
            )
            .env("NO_COLOR", "1");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = command
            .spawn()
            .with_context(|| format!("start {}", world.autoscaler_binary.display()))?;
        let pid = child.id().context("pid of the autoscaler")?;
        process::register_pid(&world.dir, name, pid);
        Ok(Self {
            name: name.to_owned(),
            pid,
            address: format!("http://127.0.0.1:{port}"),
            log,
            started: Instant::now(),
            child,
            world_dir: world.dir.clone(),
        })
    }

    /// SIGKILL, and reap.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        process::unregister_pid(&self.world_dir, &self.name);
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        process::signal(self.pid, "TERM");
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                self.kill().await;
                None
            }
        };
        process::unregister_pid(&self.world_dir, &self.name);
        status
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub async fn metrics(&self) -> anyhow::Result<Metrics> {
        let response = http::get(&self.address, "/metrics").await?;
        anyhow::ensure!(response.status == 200, "/metrics: HTTP {}", response.status);
        Ok(Metrics::parse(&response.body))
    }

    /// HTTP status of `/healthz` or `/readyz`.
    pub async fn probe(&self, path: &str) -> anyhow::Result<u16> {
        Ok(http::get(&self.address, path).await?.status)
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// Log lines of actions carried out (`carrying out: …`), from any log text.
pub fn actions_in(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            l.split_once("carrying out: ")
                .map(|(_, a)| a.split(" action=").next().unwrap_or(a).trim().to_owned())
        })
        .collect()
}
