//! One end-to-end test: [`scenario`] gates it, serialises it with the other tests of
//! the binary (one at a time keeps a 2-core machine responsive), prepares a clean
//! slate (moto reset, a fresh namespace, no leftover nodes, no status ConfigMap or
//! lease of an earlier test), runs the body on its own tokio runtime, checks every
//! autoscaler log for RBAC refusals and panics, cleans up, prints the time taken,
//! and on failure prints the logs and keeps the directory.

use crate::autoscaler::{Autoscaler, AutoscalerOptions};
use crate::bridge::{BridgeConfig, CloudBridge, BRIDGE_LABEL};
use crate::gate::{say, should_run};
use crate::kube_util;
use crate::moto::{Fixtures, Moto};
use crate::process;
use crate::wait::{wait_until, Check};
use crate::world::{World, AUTOSCALER_NAMESPACE, LEASE, STATUS_CONFIGMAP};
use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Regions of every scenario: the primary first.
pub const REGIONS: [&str; 2] = ["us-west-2", "us-east-1"];

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A scenario in progress.
pub struct Scenario {
    pub name: String,
    pub world: &'static World,
    /// Logs of this scenario (autoscalers, bridge) and anything the body writes.
    pub dir: PathBuf,
    pub namespace: String,
    /// The cluster name: ownership tags of the groups, `--cluster-name`.
    pub cluster: String,
    pub regions: Vec<String>,
    /// Admin client (the harness's own identity, not the autoscaler's).
    pub kube: kube::Client,
    pub moto: Moto,
    /// One per region, in [`REGIONS`] order.
    pub fixtures: Vec<Fixtures>,
    pub started: Instant,
    /// Wall-clock windows in which RBAC refusals in the autoscaler's log are expected
    /// (right after an apiserver restart its authorizer may refuse for a moment).
    forbidden_ok: Vec<(SystemTime, SystemTime)>,
}

/// The body of a test.
pub type Body =
    for<'a> fn(&'a mut Scenario) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// Runs one end-to-end test. `body` gets a prepared [`Scenario`].
pub fn scenario(name: &str, body: Body) {
    scenario_with(name, body)
}

/// [`scenario`] with a body that may own what it needs (a closure moving its data
/// into the future it returns), e.g. the replay binary's parsed scenario.
pub fn scenario_with<F>(name: &str, body: F)
where
    F: for<'a> FnOnce(&'a mut Scenario) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>,
{
    if !should_run(name) {
        return;
    }
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let world = World::get();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let prepared = runtime.block_on(Scenario::prepare(name, world));
    let mut scenario = match prepared {
        Ok(s) => s,
        Err(e) => {
            world.keep();
            say(&dump_logs(world, &world.dir.join(name)));
            panic!("e2e {name}: could not prepare the scenario: {e:#}");
        }
    };
    let result =
        std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(body(&mut scenario))));
    let mut failure: Option<String> = match &result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(panic) => Some(panic_text(panic.as_ref())),
    };
    if failure.is_none() {
        failure = scenario.audit_logs().err().map(|e| format!("{e:#}"));
    }
    if let Err(e) = runtime.block_on(scenario.clean_up()) {
        say(&format!("e2e {name}: clean-up failed: {e:#}"));
    }
    let elapsed = started.elapsed();
    let verdict = if failure.is_some() {
        "FAILED"
    } else {
        "passed"
    };
    say(&format!(
        "e2e TIME scenario {name}: {verdict} in {:.1}s (e2e suite so far {:.1}s, environment start included)",
        elapsed.as_secs_f64(),
        world.started.elapsed().as_secs_f64()
    ));
    drop(runtime);
    if let Some(message) = failure {
        world.keep();
        say(&dump_logs(world, &scenario.dir));
        match result {
            Err(panic) => std::panic::resume_unwind(panic),
            _ => panic!("e2e {name} failed: {message}"),
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic".into())
}

/// The logs of a failed scenario: its own files in full-ish, the components' tails.
fn dump_logs(world: &World, dir: &std::path::Path) -> String {
    let mut out = format!(
        "\n======== e2e logs (everything is kept in {}) ========\n",
        world.dir.display()
    );
    for file in process::files_in(dir) {
        out.push_str(&format!("\n-------- {} --------\n", file.display()));
        out.push_str(&process::tail(&file, 60_000));
    }
    for file in world.component_logs() {
        out.push_str(&format!("\n-------- {} (tail) --------\n", file.display()));
        out.push_str(&process::tail(&file, 6_000));
    }
    out.push_str(&format!(
        "\n-------- moto.log (tail) --------\n{}",
        process::tail(&world.dir.join("moto.log"), 4_000)
    ));
    out
}

impl Scenario {
    async fn prepare(name: &str, world: &'static World) -> anyhow::Result<Scenario> {
        let slug: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let slug = slug.trim_matches('-').chars().take(40).collect::<String>();
        let dir = world.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let kube = kube_util::client(&world.admin_kubeconfig).await?;
        let moto = Moto {
            url: world.moto_url.clone(),
        };
        moto.reset().await.context("moto reset")?;
        // Nothing of an earlier scenario may remain: its nodes, status, lease.
        kube_util::delete_nodes(&kube, BRIDGE_LABEL).await?;
        let configmaps: Api<ConfigMap> = Api::namespaced(kube.clone(), AUTOSCALER_NAMESPACE);
        let _ = configmaps
            .delete(STATUS_CONFIGMAP, &DeleteParams::default())
            .await;
        let leases: Api<Lease> = Api::namespaced(kube.clone(), AUTOSCALER_NAMESPACE);
        let _ = leases.delete(LEASE, &DeleteParams::default()).await;
        let namespace = format!("e2e-{slug}");
        kube_util::create_namespace(&kube, &namespace).await?;
        let cluster = format!("e2e-{slug}");
        let regions: Vec<String> = REGIONS.iter().map(|r| (*r).to_owned()).collect();
        let mut fixtures = Vec::new();
        for region in &regions {
            fixtures.push(Fixtures::new(&world.moto_url, region, &cluster).await);
        }
        say(&format!(
            "e2e scenario {name}: starting (logs in {})",
            dir.display()
        ));
        Ok(Scenario {
            name: name.to_owned(),
            world,
            dir,
            namespace,
            cluster,
            regions,
            kube,
            moto,
            fixtures,
            started: Instant::now(),
            forbidden_ok: Vec::new(),
        })
    }

    async fn clean_up(&mut self) -> anyhow::Result<()> {
        let _ = self.moto.throttle(0, 0).await;
        kube_util::delete_namespace_now(&self.kube, &self.namespace).await?;
        kube_util::delete_nodes(&self.kube, &format!("{BRIDGE_LABEL}={}", self.cluster)).await?;
        Ok(())
    }

    /// Every autoscaler log of the scenario: no RBAC refusal, no panic.
    fn audit_logs(&self) -> anyhow::Result<()> {
        for file in process::files_in(&self.dir) {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !name.starts_with("autoscaler") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for line in text.lines() {
                let lower = line.to_ascii_lowercase();
                if line.contains("panicked at") {
                    anyhow::bail!("{name}: {line}");
                }
                if lower.contains("forbidden") && !self.forbidden_tolerated(line) {
                    anyhow::bail!("{name}: {line}");
                }
            }
        }
        Ok(())
    }

    /// RBAC refusals logged between `from` and `to` (wall clock) are expected.
    pub fn tolerate_forbidden(&mut self, from: SystemTime, to: SystemTime) {
        self.forbidden_ok.push((from, to));
    }

    fn forbidden_tolerated(&self, line: &str) -> bool {
        let Some(ts) = line
            .split_whitespace()
            .next()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        else {
            return false;
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(ts.as_millisecond().max(0) as u64);
        self.forbidden_ok
            .iter()
            .any(|(from, to)| *from <= at && at <= *to)
    }

    /// Seconds since the scenario started, for logs.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// A line in the scenario's own log (and on stderr).
    pub fn note(&self, line: &str) {
        use std::io::Write;
        let text = format!("{:>8.3}s {line}", self.elapsed());
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("scenario.log"))
        {
            let _ = writeln!(f, "{text}");
        }
        say(&format!("e2e {}: {text}", self.name));
    }

    /// Fixtures of the primary region.
    pub fn primary(&self) -> &Fixtures {
        &self.fixtures[0]
    }

    /// Fixtures of the secondary region.
    pub fn secondary(&self) -> &Fixtures {
        &self.fixtures[1]
    }

    /// Starts the cloud bridge with this default boot delay.
    pub async fn bridge(&self, boot_delay: Duration) -> anyhow::Result<CloudBridge> {
        CloudBridge::start(
            BridgeConfig {
                cluster: self.cluster.clone(),
                regions: self.regions.clone(),
                moto_url: self.world.moto_url.clone(),
                boot_delay,
                poll: Duration::from_millis(300),
                log: self.dir.join("bridge.log"),
            },
            self.kube.clone(),
        )
        .await
    }

    /// The scenarios' default autoscaler flags for this scenario's cluster and regions.
    pub fn options(&self) -> AutoscalerOptions {
        AutoscalerOptions::new(&self.cluster, &self.regions)
    }

    /// Starts an autoscaler (log `autoscaler-<label>.log`) and waits until it serves
    /// `/healthz`; fails at once, with its log, if it exits.
    pub async fn autoscaler(
        &self,
        label: &str,
        options: &AutoscalerOptions,
    ) -> anyhow::Result<Autoscaler> {
        let name = format!("autoscaler-{label}");
        let mut a = Autoscaler::start(
            self.world,
            &name,
            self.dir.join(format!("{name}.log")),
            options,
        )
        .await?;
        let started = Instant::now();
        loop {
            if let Some(status) = a.exited() {
                anyhow::bail!(
                    "{name} exited ({status}) at start:\n{}",
                    process::tail(&a.log, 8_000)
                );
            }
            if a.probe("/healthz").await.is_ok_and(|s| s == 200) {
                return Ok(a);
            }
            if started.elapsed() > Duration::from_secs(30) {
                anyhow::bail!(
                    "{name} did not serve /healthz within 30s:\n{}",
                    process::tail(&a.log, 8_000)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for `n` Ready bridge nodes of `group`.
    pub async fn wait_ready_nodes(
        &self,
        group: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        wait_until(&format!("{n} Ready nodes in {group}"), timeout, || async {
            let nodes = kube_util::bridge_nodes(&self.kube, &self.cluster).await?;
            let ready = nodes
                .iter()
                .filter(|n| kube_util::node_group(n) == Some(group))
                .filter(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                })
                .count();
            Ok(if ready == n {
                Check::Done(())
            } else {
                Check::Waiting(format!("{ready} Ready"))
            })
        })
        .await
    }

    /// Waits until `group` has no bridge node left.
    pub async fn wait_no_nodes(&self, group: &str, timeout: Duration) -> anyhow::Result<()> {
        wait_until(&format!("no nodes left in {group}"), timeout, || async {
            let nodes = kube_util::bridge_nodes(&self.kube, &self.cluster).await?;
            let left: Vec<String> = nodes
                .iter()
                .filter(|n| kube_util::node_group(n) == Some(group))
                .filter_map(|n| n.metadata.name.clone())
                .collect();
            Ok(if left.is_empty() {
                Check::Done(())
            } else {
                Check::Waiting(format!("{} left: {left:?}", left.len()))
            })
        })
        .await
    }

    /// Waits until the Node `name` is gone.
    pub async fn wait_node_gone(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        wait_until(&format!("node {name} gone"), timeout, || async {
            let nodes = kube_util::bridge_nodes(&self.kube, &self.cluster).await?;
            Ok(
                if nodes
                    .iter()
                    .any(|n| n.metadata.name.as_deref() == Some(name))
                {
                    Check::Waiting("still there".into())
                } else {
                    Check::Done(())
                },
            )
        })
        .await
    }

    /// The status ConfigMap's `status` text, if written.
    pub async fn status_text(&self) -> anyhow::Result<Option<String>> {
        let configmaps: Api<ConfigMap> = Api::namespaced(self.kube.clone(), AUTOSCALER_NAMESPACE);
        Ok(configmaps
            .get_opt(STATUS_CONFIGMAP)
            .await?
            .and_then(|c| c.data)
            .and_then(|d| d.get("status").cloned()))
    }
}
