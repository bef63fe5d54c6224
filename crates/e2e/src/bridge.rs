//! The cloud bridge: plays the kubelet's registration and the cloud controller's
//! cleanup. For each InService instance of the scenario's groups in moto, after a
//! boot delay, it creates the Node a kubelet would register (providerID, the group's
//! template labels and taints, capacity and allocatable of the instance type, KWOK's
//! annotation, so KWOK makes it Ready); when the instance is gone it deletes the Node.
//! Instances of a group tagged `batch-autoscaler.test/never-joins=true` never get a
//! Node; `batch-autoscaler.test/boot-delay=<duration>` overrides the delay per group.
//!
//! It also records what it sees of each group (desired capacity, instances) over
//! time: the scenarios' evidence of how often and when the autoscaler scaled.

use crate::moto::{adapter_config, Fixtures, TAG_BOOT_DELAY, TAG_NEVER_JOINS, TAG_NO_PROVIDER_ID};
use anyhow::Context;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use model::{InstanceState, NodeGroupState, Resources};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Label on every Node the bridge creates (value: the scenario's cluster name).
pub const BRIDGE_LABEL: &str = "batch-autoscaler.test/bridge";
/// KWOK manages nodes with this annotation (`start-control-plane.sh`).
pub const KWOK_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub cluster: String,
    pub regions: Vec<String>,
    pub moto_url: String,
    /// Delay between an instance turning InService and its Node appearing.
    pub boot_delay: Duration,
    pub poll: Duration,
    pub log: PathBuf,
}

/// One observation of a group, recorded when something changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSample {
    pub at: Instant,
    pub target: u32,
    pub instances: usize,
}

/// A Node the bridge created or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    pub at: Instant,
    pub node: String,
    pub group: String,
    pub created: bool,
}

#[derive(Debug, Default)]
struct State {
    history: BTreeMap<String, Vec<GroupSample>>,
    instances_ever: BTreeMap<String, BTreeSet<String>>,
    node_events: Vec<NodeEvent>,
    refresh_errors: u64,
    passes: u64,
    /// Instances whose Node stays although they left their group (detached): EC2
    /// still runs them until the test says it took them back.
    held: BTreeSet<String>,
    /// Every instance seen in a group (any state but Terminating): when first and last.
    lifetimes: BTreeMap<String, InstanceLife>,
}

/// When the bridge saw an instance in its group (any state but Terminating): its
/// launch and, once it is no longer seen, its termination, to within one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceLife {
    pub group: String,
    pub instance: String,
    pub first_seen: Instant,
    pub last_seen: Instant,
    /// Seen on the latest pass: still running.
    pub live: bool,
}

/// The running bridge; stops when dropped.
pub struct CloudBridge {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CloudBridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The name the bridge gives an instance's Node.
pub fn node_name(instance: &str) -> String {
    format!("ip-{instance}")
}

fn quantities(r: &Resources) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("cpu".into(), json!(format!("{}m", r.cpu_millis)));
    map.insert("memory".into(), json!(r.memory_bytes.to_string()));
    map.insert("pods".into(), json!(r.pods.to_string()));
    map.insert(
        "ephemeral-storage".into(),
        json!(r.ephemeral_storage_bytes.to_string()),
    );
    for (name, amount) in &r.extended {
        map.insert(name.clone(), json!(amount.to_string()));
    }
    serde_json::Value::Object(map)
}

/// The Node a kubelet on `instance` of `group` would register.
pub fn node_for(
    cluster: &str,
    group: &NodeGroupState,
    instance: &model::InstanceView,
    ip: &str,
) -> serde_json::Value {
    let name = node_name(instance.id.as_str());
    let spec = &group.spec;
    let mut labels: BTreeMap<String, String> = spec
        .template_labels(&instance.zone)
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    labels.insert(model::well_known::LABEL_HOSTNAME.into(), name.clone());
    labels.insert(BRIDGE_LABEL.into(), cluster.to_owned());
    let taints: Vec<_> = spec
        .taints
        .iter()
        .map(|t| json!({"key": t.key, "value": t.value, "effect": t.effect.as_str()}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_ANNOTATION.0: KWOK_ANNOTATION.1, "batch-autoscaler.test/group": spec.id.as_str()},
        },
        "spec": {"providerID": format!("aws:///{}/{}", instance.zone, instance.id), "taints": taints},
        "status": {
            "capacity": quantities(&spec.shape.capacity),
            "allocatable": quantities(&spec.shape.allocatable),
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "architecture": spec.shape.arch, "operatingSystem": "linux", "kubeletVersion": "v1.36.3",
                "kubeProxyVersion": "", "containerRuntimeVersion": "kwok", "kernelVersion": "", "osImage": "",
                "machineID": "", "systemUUID": "", "bootID": ""
            },
        },
    })
}

fn parse_delay(text: &str) -> Option<Duration> {
    model::parse_duration(text.trim()).ok()
}

struct Worker {
    config: BridgeConfig,
    client: kube::Client,
    fixtures: Vec<Fixtures>,
    adapter: aws::AwsNodeGroups,
    state: Arc<Mutex<State>>,
    started: Instant,
    first_in_service: BTreeMap<String, Instant>,
    /// Per group: never joins, boot delay, registers without a providerID.
    group_tags: BTreeMap<String, (bool, Duration, bool)>,
    ips: BTreeMap<String, String>,
    log: std::fs::File,
}

impl Worker {
    fn log(&mut self, line: &str) {
        let _ = writeln!(
            self.log,
            "{:>8.3}s {line}",
            self.started.elapsed().as_secs_f64()
        );
    }

    async fn tags_of(&mut self, groups: &[NodeGroupState]) {
        if groups
            .iter()
            .all(|g| self.group_tags.contains_key(g.spec.id.as_str()))
        {
            return;
        }
        let mut problems = Vec::new();
        for fixtures in &self.fixtures {
            match fixtures.report().await {
                Ok(reports) => {
                    for r in reports {
                        let never = r.tags.get(TAG_NEVER_JOINS).is_some_and(|v| v == "true");
                        let delay = r
                            .tags
                            .get(TAG_BOOT_DELAY)
                            .and_then(|d| parse_delay(d))
                            .unwrap_or(self.config.boot_delay);
                        let no_provider =
                            r.tags.get(TAG_NO_PROVIDER_ID).is_some_and(|v| v == "true");
                        self.group_tags.insert(r.name, (never, delay, no_provider));
                    }
                }
                Err(e) => problems.push(format!("cannot read tags in {}: {e:#}", fixtures.region)),
            }
        }
        for line in problems {
            self.log(&line);
        }
    }

    async fn pass(&mut self) -> anyhow::Result<()> {
        let now_ms = model::Time::from_millis(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as u64,
        );
        let refresh = self.adapter.refresh(now_ms).await.context("refresh")?;
        self.tags_of(&refresh.groups).await;
        let now = Instant::now();
        let mut lines = Vec::new();
        {
            let mut state = self.state.lock().expect("bridge state");
            state.passes += 1;
            for g in &refresh.groups {
                let in_service = g
                    .instances
                    .iter()
                    .filter(|i| i.state == InstanceState::InService)
                    .count();
                let history = state.history.entry(g.spec.id.to_string()).or_default();
                if history
                    .last()
                    .is_none_or(|s| s.target != g.target || s.instances != in_service)
                {
                    history.push(GroupSample {
                        at: now,
                        target: g.target,
                        instances: in_service,
                    });
                    lines.push(format!(
                        "group {}: desired {} in service {in_service}",
                        g.spec.id, g.target
                    ));
                }
                let ever = state
                    .instances_ever
                    .entry(g.spec.id.to_string())
                    .or_default();
                ever.extend(g.instances.iter().map(|i| i.id.to_string()));
            }
            for life in state.lifetimes.values_mut() {
                life.live = false;
            }
            for g in &refresh.groups {
                for i in g
                    .instances
                    .iter()
                    .filter(|i| i.state != InstanceState::Terminating)
                {
                    let life =
                        state
                            .lifetimes
                            .entry(i.id.to_string())
                            .or_insert_with(|| InstanceLife {
                                group: g.spec.id.to_string(),
                                instance: i.id.to_string(),
                                first_seen: now,
                                last_seen: now,
                                live: true,
                            });
                    life.last_seen = now;
                    life.live = true;
                }
            }
        }
        for line in lines {
            self.log(&line);
        }

        let nodes: Api<Node> = Api::all(self.client.clone());
        let existing = nodes
            .list_metadata(
                &ListParams::default().labels(&format!("{BRIDGE_LABEL}={}", self.config.cluster)),
            )
            .await
            .context("list nodes")?;
        let existing: BTreeSet<String> = existing
            .items
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let mut live = BTreeSet::new();
        for g in &refresh.groups {
            let (never, delay, no_provider) = self
                .group_tags
                .get(g.spec.id.as_str())
                .copied()
                .unwrap_or((false, self.config.boot_delay, false));
            for instance in &g.instances {
                if instance.state == InstanceState::Terminating {
                    continue;
                }
                let name = node_name(instance.id.as_str());
                live.insert(name.clone());
                if instance.state != InstanceState::InService || never || existing.contains(&name) {
                    continue;
                }
                let since = *self
                    .first_in_service
                    .entry(instance.id.to_string())
                    .or_insert(now);
                if since.elapsed() < delay {
                    continue;
                }
                let n = self.ips.len() + 1;
                let ip = self
                    .ips
                    .entry(instance.id.to_string())
                    .or_insert_with(|| {
                        format!("10.{}.{}.{}", 100 + n / 65536, (n / 256) % 256, n % 256)
                    })
                    .clone();
                let mut json = node_for(&self.config.cluster, g, instance, &ip);
                if no_provider {
                    // A kubelet whose cloud controller has not set the providerID.
                    json["spec"]
                        .as_object_mut()
                        .context("node spec")?
                        .remove("providerID");
                }
                let node: Node = serde_json::from_value(json).context("node JSON")?;
                match nodes.create(&PostParams::default(), &node).await {
                    Ok(_) => {
                        self.log(&format!(
                            "created node {name} ({} in {})",
                            instance.id, g.spec.id
                        ));
                        self.state
                            .lock()
                            .expect("bridge state")
                            .node_events
                            .push(NodeEvent {
                                at: Instant::now(),
                                node: name,
                                group: g.spec.id.to_string(),
                                created: true,
                            });
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => self.log(&format!("cannot create node {name}: {e}")),
                }
            }
        }
        let held: Vec<String> = self
            .state
            .lock()
            .expect("bridge state")
            .held
            .iter()
            .map(|i| node_name(i))
            .collect();
        live.extend(held);
        for name in existing.difference(&live) {
            match nodes.delete(name, &DeleteParams::default()).await {
                Ok(_) => {
                    self.log(&format!("deleted node {name} (instance gone)"));
                    self.state
                        .lock()
                        .expect("bridge state")
                        .node_events
                        .push(NodeEvent {
                            at: Instant::now(),
                            node: name.clone(),
                            group: String::new(),
                            created: false,
                        });
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => self.log(&format!("cannot delete node {name}: {e}")),
            }
        }
        self.first_in_service
            .retain(|id, _| live.contains(&node_name(id)));
        Ok(())
    }
}

impl CloudBridge {
    /// Starts the bridge on the current runtime.
    pub async fn start(config: BridgeConfig, client: kube::Client) -> anyhow::Result<Self> {
        let adapter = aws::AwsNodeGroups::connect(adapter_config(
            &config.moto_url,
            &config.cluster,
            &config.regions,
        ))
        .await
        .context("bridge adapter")?;
        let mut fixtures = Vec::new();
        for region in &config.regions {
            fixtures.push(Fixtures::new(&config.moto_url, region, &config.cluster).await);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.log)
            .with_context(|| format!("open {}", config.log.display()))?;
        let state = Arc::new(Mutex::new(State::default()));
        let mut worker = Worker {
            config,
            client,
            fixtures,
            adapter,
            state: state.clone(),
            started: Instant::now(),
            first_in_service: BTreeMap::new(),
            group_tags: BTreeMap::new(),
            ips: BTreeMap::new(),
            log,
        };
        let task = tokio::spawn(async move {
            let mut errors_in_a_row = 0u32;
            loop {
                match worker.pass().await {
                    Ok(()) => errors_in_a_row = 0,
                    Err(e) => {
                        errors_in_a_row += 1;
                        worker.state.lock().expect("bridge state").refresh_errors += 1;
                        if errors_in_a_row <= 3 || errors_in_a_row % 20 == 0 {
                            worker.log(&format!("pass failed ({errors_in_a_row} in a row): {e:#}"));
                        }
                    }
                }
                tokio::time::sleep(worker.config.poll).await;
            }
        });
        Ok(Self { state, task })
    }

    /// What the bridge saw of `group` over time (changes only).
    pub fn history(&self, group: &str) -> Vec<GroupSample> {
        self.state
            .lock()
            .expect("bridge state")
            .history
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// The latest observation of `group`.
    pub fn current(&self, group: &str) -> Option<GroupSample> {
        self.history(group).last().cloned()
    }

    /// Every instance ever seen in `group`.
    pub fn instances_ever(&self, group: &str) -> BTreeSet<String> {
        self.state
            .lock()
            .expect("bridge state")
            .instances_ever
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    pub fn node_events(&self) -> Vec<NodeEvent> {
        self.state.lock().expect("bridge state").node_events.clone()
    }

    /// Keeps the Node of `instance` even once it leaves its group (a detached instance
    /// runs on in EC2), until [`CloudBridge::release`].
    pub fn hold(&self, instance: &str) {
        self.state
            .lock()
            .expect("bridge state")
            .held
            .insert(instance.to_owned());
    }

    /// EC2 took `instance` back: its Node goes on the next pass unless it is still in
    /// a group.
    pub fn release(&self, instance: &str) {
        self.state
            .lock()
            .expect("bridge state")
            .held
            .remove(instance);
    }

    /// Every instance seen in a group, with when it was first and last seen.
    pub fn lifetimes(&self) -> Vec<InstanceLife> {
        self.state
            .lock()
            .expect("bridge state")
            .lifetimes
            .values()
            .cloned()
            .collect()
    }

    /// Completed passes (each reads moto and the Nodes).
    pub fn passes(&self) -> u64 {
        self.state.lock().expect("bridge state").passes
    }
}
