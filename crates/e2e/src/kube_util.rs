//! Kubernetes helpers for scenarios: the admin client, namespaces, workloads (Jobs,
//! Deployments, PodDisruptionBudgets) with KWOK's duration annotation, and a
//! [`Recorder`] that watches pods and nodes and keeps the history the assertions
//! need (bindings, phases, deletions, the retiring taint).

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::wait::{wait_until, Check};

/// KWOK completes a Running pod with this annotation after the duration (testenv stages).
pub const SIM_DURATION: &str = "batch-autoscaler.io/sim-duration";
/// The autoscaler's retiring taint.
pub const RETIRING_TAINT: &str = model::well_known::TAINT_RETIRING;

/// A client from a kubeconfig file (the admin's, for the harness).
pub async fn client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("kubeconfig {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

/// Creates a namespace and waits for its `default` ServiceAccount (pods are refused before).
pub async fn create_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"batch-autoscaler.test/e2e": "true"}}}),
    )?;
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).context("create namespace"),
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    wait_until(
        "the namespace's default ServiceAccount",
        Duration::from_secs(60),
        || async {
            Ok(match accounts.get_opt("default").await? {
                Some(_) => Check::Done(()),
                None => Check::Waiting("no default ServiceAccount yet".into()),
            })
        },
    )
    .await
}

/// Deletes a namespace and, at once, every pod in it (grace 0), so no pending pod of
/// one scenario can trigger a scale-up in the next.
pub async fn delete_namespace_now(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e).context("delete namespace"),
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), name);
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::background()
    };
    wait_until(
        &format!("pods of namespace {name} gone"),
        Duration::from_secs(60),
        || async {
            let list = pods.list_metadata(&ListParams::default()).await?;
            if list.items.is_empty() {
                return Ok(Check::Done(()));
            }
            for p in &list.items {
                if let Some(n) = &p.metadata.name {
                    let _ = pods.delete(n, &force).await;
                }
            }
            Ok(Check::Waiting(format!("{} pods left", list.items.len())))
        },
    )
    .await
}

/// Deletes every Node carrying `label=value`.
pub async fn delete_nodes(client: &kube::Client, selector: &str) -> anyhow::Result<usize> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list_metadata(&ListParams::default().labels(selector))
        .await?;
    for n in &list.items {
        if let Some(name) = &n.metadata.name {
            let _ = nodes.delete(name, &DeleteParams::default()).await;
        }
    }
    Ok(list.items.len())
}

/// A pod template for scenario workloads.
#[derive(Debug, Clone)]
pub struct PodTemplate {
    pub cpu: String,
    pub memory: String,
    pub gpus: u32,
    /// KWOK's run time for Job pods (`20s`); `None` runs until deleted.
    pub duration: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Value>,
    pub priority_class: Option<String>,
    /// `spec.nodeName`: bound at creation, bypassing the scheduler.
    pub node_name: Option<String>,
}

impl PodTemplate {
    pub fn new(cpu: &str, memory: &str) -> Self {
        Self {
            cpu: cpu.into(),
            memory: memory.into(),
            gpus: 0,
            duration: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            node_selector: BTreeMap::new(),
            tolerations: vec![],
            priority_class: None,
            node_name: None,
        }
    }
    pub fn priority_class(mut self, name: &str) -> Self {
        self.priority_class = Some(name.into());
        self
    }
    pub fn on_node(mut self, node: &str) -> Self {
        self.node_name = Some(node.into());
        self
    }
    pub fn runs_for(mut self, duration: &str) -> Self {
        self.duration = Some(duration.into());
        self
    }
    pub fn gpus(mut self, n: u32) -> Self {
        self.gpus = n;
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }
    pub fn node_selector(mut self, k: &str, v: &str) -> Self {
        self.node_selector.insert(k.into(), v.into());
        self
    }
    pub fn tolerate(mut self, key: &str, effect: &str) -> Self {
        self.tolerations
            .push(json!({"key": key, "operator": "Exists", "effect": effect}));
        self
    }

    /// The pod template as JSON (for objects the helpers here do not create).
    pub fn to_json_value(&self, restart_policy: &str) -> Value {
        self.to_json(restart_policy)
    }

    fn to_json(&self, restart_policy: &str) -> Value {
        let mut annotations = self.annotations.clone();
        if let Some(d) = &self.duration {
            annotations.insert(SIM_DURATION.into(), d.clone());
        }
        let mut requests = json!({"cpu": self.cpu, "memory": self.memory});
        let mut limits = json!({});
        if self.gpus > 0 {
            requests["nvidia.com/gpu"] = json!(self.gpus.to_string());
            limits["nvidia.com/gpu"] = json!(self.gpus.to_string());
        }
        let mut pod = json!({
            "metadata": {"labels": self.labels, "annotations": annotations},
            "spec": {
                "restartPolicy": restart_policy,
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10", "resources": {"requests": requests, "limits": limits}}],
                "nodeSelector": self.node_selector,
                "tolerations": self.tolerations,
            }
        });
        if let Some(class) = &self.priority_class {
            pod["spec"]["priorityClassName"] = json!(class);
        }
        if let Some(node) = &self.node_name {
            pod["spec"]["nodeName"] = json!(node);
        }
        pod
    }
}

/// Creates a Job of `pods` pods (parallelism = completions = pods, no retries: a pod
/// that fails or is killed fails the Job).
pub async fn create_job(
    client: &kube::Client,
    ns: &str,
    name: &str,
    pods: u32,
    template: &PodTemplate,
) -> anyhow::Result<Job> {
    create_job_retrying(client, ns, name, pods, template, 0).await
}

/// Like [`create_job`], but a pod that fails or is killed is replaced up to `retries`
/// times (the Job's `backoffLimit`), as a batch job that survives lost nodes is.
pub async fn create_job_retrying(
    client: &kube::Client,
    ns: &str,
    name: &str,
    pods: u32,
    template: &PodTemplate,
    retries: u32,
) -> anyhow::Result<Job> {
    let mut pod = template.clone();
    pod.labels.insert("job".into(), name.into());
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parallelism": pods, "completions": pods, "backoffLimit": retries, "template": pod.to_json("Never")}
    }))?;
    Ok(Api::<Job>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &job)
        .await
        .with_context(|| format!("create Job {name}"))?)
}

/// Creates a pod that runs to completion (restartPolicy Never), owned by `owner` (an
/// owner reference, as the object's controller) or bare.
pub async fn create_pod(
    client: &kube::Client,
    ns: &str,
    name: &str,
    template: &PodTemplate,
    owner: Option<Value>,
) -> anyhow::Result<Pod> {
    let mut pod = template.to_json("Never");
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["namespace"] = json!(ns);
    if let Some(mut owner) = owner {
        owner["controller"] = json!(true);
        pod["metadata"]["ownerReferences"] = json!([owner]);
    }
    let pod: Pod = serde_json::from_value(pod)?;
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("create Pod {name}"))
}

/// An owner reference to `object` (as read back with its uid).
pub fn owner_reference(api_version: &str, kind: &str, name: &str, uid: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid})
}

/// Creates a Deployment whose pods carry `app=<name>`.
pub async fn create_deployment(
    client: &kube::Client,
    ns: &str,
    name: &str,
    replicas: u32,
    template: &PodTemplate,
) -> anyhow::Result<()> {
    let mut pod = template.clone();
    pod.labels.insert("app".into(), name.into());
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": pod.to_json("Always")}
    }))?;
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .with_context(|| format!("create Deployment {name}"))?;
    Ok(())
}

/// Creates or replaces a PDB over `app=<app>` with `maxUnavailable`.
pub async fn set_pdb(
    client: &kube::Client,
    ns: &str,
    app: &str,
    max_unavailable: u32,
) -> anyhow::Result<()> {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    let body = json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": app, "namespace": ns},
        "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": {"app": app}}}
    });
    api.patch(
        app,
        &kube::api::PatchParams::apply("e2e").force(),
        &kube::api::Patch::Apply(&body),
    )
    .await
    .context("apply PDB")?;
    Ok(())
}

/// The pods of a namespace.
pub async fn pods(client: &kube::Client, ns: &str) -> anyhow::Result<Vec<Pod>> {
    Ok(Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items)
}

pub fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Unknown")
}

pub fn pod_node(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// (succeeded, failed, active) of a Job.
pub async fn job_counts(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<(i32, i32, i32)> {
    let job = Api::<Job>::namespaced(client.clone(), ns).get(name).await?;
    let s = job.status.unwrap_or_default();
    Ok((
        s.succeeded.unwrap_or(0),
        s.failed.unwrap_or(0),
        s.active.unwrap_or(0),
    ))
}

/// Waits for the Job's Complete condition; fails at once on Failed.
pub async fn wait_job_complete(
    client: &kube::Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    wait_until(&format!("Job {ns}/{name} complete"), timeout, || async {
        let job = api.get(name).await?;
        let status = job.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            if c.status == "True" && c.type_ == "Failed" {
                return Ok(Check::Failed(format!(
                    "Job {name} failed: {:?} {:?} (succeeded {:?}, failed {:?})",
                    c.reason, c.message, status.succeeded, status.failed
                )));
            }
            if c.status == "True" && c.type_ == "Complete" {
                return Ok(Check::Done(()));
            }
        }
        Ok(Check::Waiting(format!(
            "succeeded {:?} failed {:?} active {:?}",
            status.succeeded, status.failed, status.active
        )))
    })
    .await
}

/// Bridge Nodes of `cluster`, by name.
pub async fn bridge_nodes(client: &kube::Client, cluster: &str) -> anyhow::Result<Vec<Node>> {
    let api: Api<Node> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default().labels(&format!("{}={cluster}", crate::bridge::BRIDGE_LABEL)))
        .await?
        .items)
}

pub fn has_taint(node: &Node, key: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key))
}

pub fn node_group(node: &Node) -> Option<&str> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("batch-autoscaler.test/group"))
        .map(String::as_str)
}

/// What happened to one pod.
#[derive(Debug, Clone, Default)]
pub struct PodRecord {
    pub node: Option<String>,
    pub first_seen: Option<Instant>,
    /// When the scheduler first reported it Unschedulable.
    pub unschedulable: Option<Instant>,
    pub bound: Option<Instant>,
    pub running: Option<Instant>,
    pub finished: Option<(Instant, String)>,
    /// When a deletion (delete or eviction) was first seen.
    pub deletion: Option<Instant>,
    pub gone: Option<Instant>,
    /// The phase when the deletion was first seen.
    pub phase_at_deletion: Option<String>,
    pub owner_kind: Option<String>,
    /// Labels when first seen.
    pub labels: BTreeMap<String, String>,
}

/// What happened to one node.
#[derive(Debug, Clone, Default)]
pub struct NodeRecord {
    pub group: Option<String>,
    pub first_seen: Option<Instant>,
    pub ready: Option<Instant>,
    pub gone: Option<Instant>,
    /// (when, present) transitions of the retiring taint.
    pub retiring: Vec<(Instant, bool)>,
    /// (when, taint keys) whenever the set of taints changed.
    pub taints: Vec<(Instant, Vec<String>)>,
}

#[derive(Debug, Default)]
struct RecorderState {
    pods: BTreeMap<String, PodRecord>,
    nodes: BTreeMap<String, NodeRecord>,
}

/// Watches a namespace's pods and a cluster's bridge nodes and records their history.
pub struct Recorder {
    state: Arc<Mutex<RecorderState>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn record_pod(state: &Mutex<RecorderState>, pod: &Pod, deleted: bool) {
    let Some(name) = pod.metadata.name.clone() else {
        return;
    };
    let now = Instant::now();
    let mut state = state.lock().expect("recorder");
    let r = state.pods.entry(name).or_default();
    if r.first_seen.is_none() {
        r.labels = pod.metadata.labels.clone().unwrap_or_default();
    }
    r.first_seen.get_or_insert(now);
    if r.owner_kind.is_none() {
        r.owner_kind = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .next()
            .map(|o| o.kind.clone());
    }
    if let Some(node) = pod_node(pod) {
        if r.node.is_none() {
            r.node = Some(node.to_owned());
            r.bound = Some(now);
        }
    }
    let unschedulable = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
        });
    if unschedulable && r.unschedulable.is_none() {
        r.unschedulable = Some(now);
    }
    let phase = pod_phase(pod).to_owned();
    if phase == "Running" && r.running.is_none() {
        r.running = Some(now);
    }
    if (phase == "Succeeded" || phase == "Failed") && r.finished.is_none() {
        r.finished = Some((now, phase.clone()));
    }
    if pod.metadata.deletion_timestamp.is_some() && r.deletion.is_none() {
        r.deletion = Some(now);
        r.phase_at_deletion = Some(phase.clone());
    }
    if deleted {
        if r.deletion.is_none() {
            r.deletion = Some(now);
            r.phase_at_deletion = Some(phase);
        }
        r.gone.get_or_insert(now);
    }
}

fn record_node(state: &Mutex<RecorderState>, node: &Node, deleted: bool) {
    let Some(name) = node.metadata.name.clone() else {
        return;
    };
    let now = Instant::now();
    let mut state = state.lock().expect("recorder");
    let r = state.nodes.entry(name).or_default();
    r.first_seen.get_or_insert(now);
    if r.group.is_none() {
        r.group = node_group(node).map(str::to_owned);
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if ready && r.ready.is_none() {
        r.ready = Some(now);
    }
    let tainted = has_taint(node, RETIRING_TAINT);
    if r.retiring.last().map_or(tainted, |(_, t)| *t != tainted) {
        r.retiring.push((now, tainted));
    }
    let keys: Vec<String> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| ts.iter().map(|t| t.key.clone()).collect())
        .unwrap_or_default();
    if r.taints.last().is_none_or(|(_, k)| *k != keys) {
        r.taints.push((now, keys));
    }
    if deleted {
        r.gone.get_or_insert(now);
    }
}

fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    state: Arc<Mutex<RecorderState>>,
    record: fn(&Mutex<RecorderState>, &K, bool),
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let stream = watcher(api, config).default_backoff();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                    record(&state, &o, false)
                }
                Ok(watcher::Event::Delete(o)) => record(&state, &o, true),
                _ => {}
            }
        }
    })
}

impl Recorder {
    pub fn start(client: &kube::Client, ns: &str, cluster: &str) -> Self {
        let state = Arc::new(Mutex::new(RecorderState::default()));
        let pods = spawn_watch(
            Api::<Pod>::namespaced(client.clone(), ns),
            watcher::Config::default(),
            state.clone(),
            record_pod,
        );
        let nodes = spawn_watch(
            Api::<Node>::all(client.clone()),
            watcher::Config::default()
                .labels(&format!("{}={cluster}", crate::bridge::BRIDGE_LABEL)),
            state.clone(),
            record_node,
        );
        Self {
            state,
            tasks: vec![pods, nodes],
        }
    }

    pub fn pods(&self) -> BTreeMap<String, PodRecord> {
        self.state.lock().expect("recorder").pods.clone()
    }

    pub fn nodes(&self) -> BTreeMap<String, NodeRecord> {
        self.state.lock().expect("recorder").nodes.clone()
    }

    /// Pods deleted (or evicted) before they finished, with their phase then.
    /// Deployment pods are reported too: callers decide which are allowed.
    pub fn killed_pods(&self) -> Vec<(String, PodRecord)> {
        self.pods()
            .into_iter()
            .filter(|(_, r)| r.deletion.is_some() && r.finished.is_none())
            .collect()
    }
}

/// Sets a Deployment's replicas.
pub async fn scale_deployment(
    client: &kube::Client,
    ns: &str,
    name: &str,
    replicas: u32,
) -> anyhow::Result<()> {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), ns);
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await
    .context("scale Deployment")?;
    Ok(())
}

/// Events posted by the autoscaler (events.k8s.io/v1, any namespace), by
/// namespace/name: "reason: note (count)".
pub async fn autoscaler_events(client: &kube::Client) -> anyhow::Result<BTreeMap<String, String>> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("batch-autoscaler"))
        .map(|e| {
            let key = format!(
                "{}/{}",
                e.metadata.namespace.unwrap_or_default(),
                e.metadata.name.unwrap_or_default()
            );
            let count = e.series.as_ref().map_or(1, |s| s.count);
            (
                key,
                format!(
                    "{}: {} ({count})",
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default()
                ),
            )
        })
        .collect())
}

/// Running pods of a namespace with a label `key=value`.
pub async fn running_pods_with(
    client: &kube::Client,
    ns: &str,
    key: &str,
    value: &str,
) -> anyhow::Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    Ok(api
        .list(&ListParams::default().labels(&format!("{key}={value}")))
        .await?
        .items
        .into_iter()
        .filter(|p| pod_phase(p) == "Running" && p.metadata.deletion_timestamp.is_none())
        .collect())
}
