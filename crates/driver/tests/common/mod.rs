//! Fake ports for the driver's tests: one shared world that the fake cloud and the
//! fake cluster read and change, and a log of every port call in order. No I/O.

#![allow(dead_code)]

use driver::{Cloud, CloudView, Cluster, ClusterView, Evicted, Notifier, PortError, StatusReport};
use model::well_known::TAINT_RETIRING;
use model::*;
use planner::{BackoffRecord, PlannerEvent, PlannerSettings, RemovalEvidence};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Port calls that change something in Kubernetes or AWS, or notify someone.
pub const MUTATING: &[&str] = &[
    "set_target_size",
    "terminate_instance",
    "persist_backoff",
    "retire",
    "unretire",
    "mark_idle",
    "evict",
    "publish",
    "write_status",
    "notify",
];

#[derive(Default)]
pub struct State {
    pub now: Time,
    pub groups: Vec<NodeGroupState>,
    pub nodes: Vec<NodeView>,
    pub pods: Vec<PodView>,
    pub synced: bool,
    pub next_instance: u32,
    /// Every port call, as `name args…`.
    pub calls: Vec<String>,
    /// Errors the next `refresh` calls return, in order.
    pub refresh_errors: VecDeque<PortError>,
    /// Answers of the next `evict` calls, in order (then `Evicted`).
    pub eviction_answers: VecDeque<Evicted>,
    /// Launch failures the next `launch_failures` call returns.
    pub launch_failures: Vec<LaunchFailure>,
    /// Set to false by the first `set_target_size` (leadership lost mid-pass).
    pub lose_leadership_on_action: Option<watch::Sender<driver::Leadership>>,
    pub stored_backoffs: Vec<BackoffRecord>,
    /// The next `refresh` calls hang (as on a partitioned network), this many.
    pub hanging_refreshes: u32,
    pub statuses: Vec<StatusReport>,
    pub published: Vec<(Time, PlannerEvent)>,
}

#[derive(Clone, Default)]
pub struct World(pub Arc<Mutex<State>>);

impl World {
    pub fn new(groups: Vec<NodeGroupState>) -> Self {
        let world = World::default();
        {
            let mut s = world.lock();
            s.groups = groups;
            s.synced = true;
        }
        world
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Calls whose name is `name`.
    pub fn calls_named(&self, name: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.split(' ').next() == Some(name))
            .collect()
    }

    pub fn mutating_calls(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| MUTATING.contains(&c.split(' ').next().unwrap_or("")))
            .collect()
    }

    fn record(&self, call: String) {
        self.lock().calls.push(call);
    }

    pub fn ports(
        &self,
        notifier: FakeNotifier,
    ) -> driver::Ports<FakeCloud, FakeCluster, FakeNotifier> {
        driver::Ports {
            cloud: FakeCloud(self.clone()),
            cluster: FakeCluster(self.clone()),
            notifier,
        }
    }

    /// Every launched instance becomes a ready node; pending pods bind first-fit.
    pub fn register_and_schedule(&self) {
        let mut s = self.lock();
        let now = s.now;
        let mut new_nodes = Vec::new();
        for g in &mut s.groups {
            for inst in &mut g.instances {
                inst.state = InstanceState::InService;
                let name = NodeName::new(format!("node-{}", inst.id));
                let mut node = NodeView::new(name, g.spec.shape.allocatable.clone(), now);
                node.labels.extend(g.spec.template_labels(&inst.zone));
                node.instance = Some(inst.id.clone());
                node.group = Some(g.spec.id.clone());
                new_nodes.push(node);
            }
        }
        for node in new_nodes {
            if !s.nodes.iter().any(|n| n.instance == node.instance) {
                s.nodes.push(node);
            }
        }
        let nodes = s.nodes.clone();
        for pod in s.pods.iter_mut().filter(|p| p.is_unbound_pending()) {
            if let Some(n) = nodes.iter().find(|n| {
                n.retired.is_none() && n.labels.get("pool") == pod.node_selector.get("pool")
            }) {
                pod.node = Some(n.name.clone());
                pod.phase = PodPhase::Running;
                pod.unschedulable = false;
            }
        }
    }
}

pub struct FakeCloud(pub World);

impl Cloud for FakeCloud {
    async fn refresh(&mut self, _now: Time) -> Result<CloudView, PortError> {
        self.0.record("refresh".into());
        let hang = {
            let mut s = self.0.lock();
            let hang = s.hanging_refreshes > 0;
            s.hanging_refreshes = s.hanging_refreshes.saturating_sub(1);
            hang
        };
        if hang {
            std::future::pending::<()>().await;
        }
        let mut s = self.0.lock();
        if let Some(error) = s.refresh_errors.pop_front() {
            return Err(error);
        }
        Ok(CloudView {
            groups: s.groups.clone(),
            warnings: vec!["group legacy has no launch template".into()],
        })
    }

    async fn launch_failures(&mut self, _now: Time) -> Result<Vec<LaunchFailure>, PortError> {
        self.0.record("launch_failures".into());
        Ok(std::mem::take(&mut self.0.lock().launch_failures))
    }

    async fn set_target_size(&mut self, group: &NodeGroupId, target: u32) -> Result<(), PortError> {
        self.0.record(format!("set_target_size {group} {target}"));
        let mut s = self.0.lock();
        if let Some(sender) = s.lose_leadership_on_action.take() {
            sender.send_replace(driver::Leadership::Follower);
        }
        let now = s.now;
        let mut next = s.next_instance;
        let g = s
            .groups
            .iter_mut()
            .find(|g| &g.spec.id == group)
            .expect("group");
        while (g.instances.len() as u32) < target {
            next += 1;
            g.instances.push(InstanceView {
                id: InstanceId::new(format!("i-{next:04}")),
                zone: g.spec.zones[0].clone(),
                state: InstanceState::Pending,
                launched_at: now,
            });
        }
        g.target = target;
        s.next_instance = next;
        Ok(())
    }

    async fn terminate_instance(
        &mut self,
        group: &NodeGroupId,
        instance: &InstanceId,
    ) -> Result<(), PortError> {
        self.0
            .record(format!("terminate_instance {group} {instance}"));
        let mut s = self.0.lock();
        let g = s
            .groups
            .iter_mut()
            .find(|g| &g.spec.id == group)
            .expect("group");
        g.instances.retain(|i| &i.id != instance);
        g.target = g.target.saturating_sub(1);
        let gone: Vec<NodeName> = s
            .nodes
            .iter()
            .filter(|n| n.instance.as_ref() == Some(instance))
            .map(|n| n.name.clone())
            .collect();
        s.nodes.retain(|n| n.instance.as_ref() != Some(instance));
        s.pods
            .retain(|p| !p.node.as_ref().is_some_and(|n| gone.contains(n)));
        Ok(())
    }

    async fn detach_instance(
        &mut self,
        group: &NodeGroupId,
        instance: &InstanceId,
    ) -> Result<(), PortError> {
        self.0.record(format!("detach_instance {group} {instance}"));
        let mut s = self.0.lock();
        let g = s
            .groups
            .iter_mut()
            .find(|g| &g.spec.id == group)
            .expect("group");
        g.instances.retain(|i| &i.id != instance);
        g.target = g.target.saturating_sub(1);
        for n in s
            .nodes
            .iter_mut()
            .filter(|n| n.instance.as_ref() == Some(instance))
        {
            n.group = None;
        }
        Ok(())
    }

    async fn persist_backoff(&mut self, record: &BackoffRecord) -> Result<(), PortError> {
        self.0.record(format!("persist_backoff {}", record.pool));
        self.0.lock().stored_backoffs.push(record.clone());
        Ok(())
    }

    async fn load_backoffs(&mut self) -> Result<Vec<BackoffRecord>, PortError> {
        self.0.record("load_backoffs".into());
        Ok(self.0.lock().stored_backoffs.clone())
    }
}

pub struct FakeCluster(pub World);

impl Cluster for FakeCluster {
    fn view(&self, _groups: &[NodeGroupState]) -> ClusterView {
        self.0.record("view".into());
        let s = self.0.lock();
        ClusterView {
            synced: s.synced,
            nodes: s.nodes.clone(),
            pods: s.pods.clone(),
            daemonsets: vec![],
            expander_priorities: None,
            provisioning_requests: vec![],
            skipped: vec!["Pod batch/weird: bad quantity \"1x\"".into()],
        }
    }

    async fn retire(&mut self, node: &NodeName, reason: &str, now: Time) -> Result<(), PortError> {
        self.0.record(format!("retire {node}"));
        let mut s = self.0.lock();
        if let Some(n) = s.nodes.iter_mut().find(|n| &n.name == node) {
            n.taints
                .push(Taint::new(TAINT_RETIRING, "", TaintEffect::NoSchedule));
            n.retired = Some(RetireMark {
                since: now,
                reason: reason.to_owned(),
            });
        }
        Ok(())
    }

    async fn unretire(&mut self, node: &NodeName) -> Result<(), PortError> {
        self.0.record(format!("unretire {node}"));
        let mut s = self.0.lock();
        if let Some(n) = s.nodes.iter_mut().find(|n| &n.name == node) {
            n.taints.retain(|t| t.key != TAINT_RETIRING);
            n.retired = None;
        }
        Ok(())
    }

    async fn mark_idle(&mut self, node: &NodeName, since: Option<Time>) -> Result<(), PortError> {
        self.0.record(format!("mark_idle {node}"));
        let mut s = self.0.lock();
        if let Some(n) = s.nodes.iter_mut().find(|n| &n.name == node) {
            n.idle_since = since;
        }
        Ok(())
    }

    async fn evict(
        &mut self,
        pod: &PodKey,
        _uid: Option<&PodUid>,
        _grace_period: Option<Duration>,
    ) -> Result<Evicted, PortError> {
        self.0.record(format!("evict {pod}"));
        let mut s = self.0.lock();
        let answer = s.eviction_answers.pop_front().unwrap_or(Evicted::Evicted);
        if answer == Evicted::Evicted {
            s.pods.retain(|p| &p.key != pod);
        }
        Ok(answer)
    }

    async fn removal_evidence(
        &mut self,
        instance: &InstanceId,
        _node: Option<&NodeName>,
    ) -> Result<RemovalEvidence, PortError> {
        self.0.record(format!("removal_evidence {instance}"));
        let s = self.0.lock();
        let node = s
            .nodes
            .iter()
            .find(|n| n.instance.as_ref() == Some(instance))
            .cloned();
        let pods = match &node {
            Some(n) => s
                .pods
                .iter()
                .filter(|p| p.node.as_ref() == Some(&n.name))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        Ok(RemovalEvidence { node, pods })
    }

    async fn publish(
        &mut self,
        _now: Time,
        events: &[(Time, PlannerEvent)],
    ) -> Result<(), PortError> {
        self.0.record(format!("publish {}", events.len()));
        self.0.lock().published.extend(events.iter().cloned());
        Ok(())
    }

    async fn update_provisioning_request(
        &mut self,
        request: &PodKey,
        _conditions: &[model::RequestCondition],
    ) -> Result<(), PortError> {
        self.0
            .record(format!("update_provisioning_request {request}"));
        Ok(())
    }

    async fn write_status(&mut self, status: &StatusReport) -> Result<(), PortError> {
        self.0.record("write_status".into());
        self.0.lock().statuses.push(status.clone());
        Ok(())
    }
}

/// Records messages; fails every call when `fail` is set.
#[derive(Clone, Default)]
pub struct FakeNotifier {
    pub sent: Arc<Mutex<Vec<String>>>,
    pub fail: bool,
}

impl FakeNotifier {
    pub fn sent(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }
}

impl Notifier for FakeNotifier {
    async fn notify(&self, text: &str) -> Result<(), PortError> {
        self.sent.lock().unwrap().push(text.to_owned());
        if self.fail {
            return Err(PortError::retryable(
                "webhook",
                "HTTP 500 from hooks.slack.com",
            ));
        }
        Ok(())
    }
}

/// Lets spawned tasks (the Slack delivery task) run to completion.
pub async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

pub fn group(name: &str, vcpus: u32, mem_gib: u64, max: u32) -> NodeGroupState {
    let shape = NodeShape::for_instance(
        InstanceTypeName::new(format!("{name}-type")),
        "amd64",
        vcpus,
        mem_gib * 1024,
        0,
        110,
    );
    let mut labels = Labels::new();
    labels.insert("pool", name);
    NodeGroupState {
        spec: NodeGroupSpec {
            id: NodeGroupId::new(name),
            region: Region::new("us-west-2"),
            zones: vec![Zone::new("us-west-2a")],
            shape,
            min_size: 0,
            max_size: max,
            labels,
            taints: vec![],
            purchase: PurchaseOption::OnDemand,
            price_per_hour: Some(f64::from(vcpus) * 0.05),
            region_rank: 0,
            capacity_rebalance: false,
        },
        target: 0,
        instances: vec![],
    }
}

/// An unschedulable Job pod for group `pool`.
pub fn job_pod(name: &str, pool: &str, cpu_millis: i64, mem_gib: i64) -> PodView {
    let mut p = PodView::new(
        PodKey::new("batch", name),
        Resources::cpu_mem(cpu_millis, mem_gib << 30),
        Owner::Job("job".into()),
        Time::ZERO,
    );
    p.node_selector.insert("pool", pool);
    p.unschedulable = true;
    p
}

/// A ReplicaSet pod (evictable) for group `pool`.
pub fn service_pod(name: &str, pool: &str, cpu_millis: i64, mem_gib: i64) -> PodView {
    let mut p = job_pod(name, pool, cpu_millis, mem_gib);
    p.owner = Owner::replica_set("web");
    p
}

pub fn settings() -> PlannerSettings {
    PlannerSettings {
        scale_down_delay_after_add: Duration::ZERO.into(),
        scale_down_unneeded_time: Duration::from_secs(60).into(),
        scan_interval: Duration::from_secs(10),
        ..PlannerSettings::default()
    }
}

pub const T0: Time = Time::from_secs(1_700_000_000);
