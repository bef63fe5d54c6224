//! The cluster view: watches over Pods, Nodes, DaemonSets and the priority-expander
//! ConfigMap, each applying its events to a [`ViewStore`] of converted views (see
//! `views.rs` for why views and not API objects are kept). The view counts as synced
//! only while every watch has completed its initial list and has not failed since:
//! a watch that relists or errors makes the snapshot unsynced, and the planner takes
//! no decision on an unsynced snapshot (so no scale-down on a partial view).
//!
//! `--pod-namespace` is applied by the planner to pending pods only; the cache always
//! holds every pod, because every pod occupies its node.

use crate::convert::{daemonset_view, node_view, parse_priorities, pod_view, ConversionError};
use crate::provreq::{
    min_member, request_object, request_view, template_pod, workload_gang, CoschedulingPodGroup,
    GangApi, GangSize, ProvisioningRequest, RequestObject, VolcanoPodGroup, WorkloadPodGroup,
};
use crate::views::{Conversion, Converted, ObjectKey, ViewStore};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, PodTemplate};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use model::{
    ClusterSnapshot, DaemonSetView, GangSource, InstanceId, NodeGroupId, NodeGroupState, NodeView,
    PodView, ProvisioningRequestView,
};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The name of Cluster Autoscaler's priority-expander ConfigMap, honoured as is.
pub const PRIORITY_CONFIGMAP: &str = "cluster-autoscaler-priority-expander";

/// How long after a watch error, with no event since, the view stays unsynced. A
/// watch that resumes from its resourceVersion delivers what it missed, so after a
/// quiet period the view is whole again; a watch that relists goes through
/// Init..InitDone and is unsynced until the new list is complete.
pub const WATCH_ERROR_QUIET_PERIOD: Duration = Duration::from_secs(30);

/// Health of one watch.
#[derive(Debug, Default)]
pub struct WatchHealth {
    listed: AtomicBool,
    /// The watch task is over (its stream ended, or it panicked): nothing will keep
    /// the view current any more, so it is never synced again.
    ended: AtomicBool,
    errors: AtomicU64,
    last_error: Mutex<Option<Instant>>,
}

/// Marks its watch ended when dropped: at the end of the task, and on a panic too
/// (the unwinding drops it).
struct EndOfWatch(&'static str, Arc<WatchHealth>);

impl Drop for EndOfWatch {
    fn drop(&mut self) {
        self.1.ended.store(true, Ordering::SeqCst);
        tracing::error!(
            watch = self.0,
            panicked = std::thread::panicking(),
            "watch ended: the view is unsynced from now on"
        );
    }
}

impl WatchHealth {
    pub fn synced(&self) -> bool {
        let recent_error = self
            .last_error
            .lock()
            .map(|e| e.is_some_and(|t| t.elapsed() < WATCH_ERROR_QUIET_PERIOD))
            .unwrap_or(true);
        self.listed.load(Ordering::SeqCst) && !self.ended.load(Ordering::SeqCst) && !recent_error
    }
    /// The watch task is over and the view it fed is frozen.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::SeqCst)
    }
    fn event_received(&self) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = None;
        }
    }
    fn error(&self) {
        self.errors.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(Instant::now());
        }
    }
}

/// Where the cache looks for the priority-expander ConfigMap.
#[derive(Debug, Clone, Default)]
pub struct CacheConfig {
    pub priority_configmap_namespace: String,
    /// Watch ProvisioningRequests and PodTemplates (`--enable-provisioning-requests`).
    pub provisioning_requests: bool,
    /// The gang APIs the cluster serves (see [`discover_gang_apis`]); the others are
    /// not watched.
    pub gang_apis: Vec<GangApi>,
}

/// A snapshot of the cluster side, plus what had to be skipped.
#[derive(Debug, Default)]
pub struct ClusterParts {
    pub synced: bool,
    pub nodes: Vec<NodeView>,
    pub pods: Vec<PodView>,
    pub daemonsets: Vec<DaemonSetView>,
    pub expander_priorities: Option<BTreeMap<i32, Vec<String>>>,
    pub provisioning_requests: Vec<ProvisioningRequestView>,
    /// Objects that could not be understood: skipped, to be warned about.
    pub skipped: Vec<ConversionError>,
    pub warnings: Vec<String>,
}

impl ClusterParts {
    /// Combines with the cloud's groups into the planner's snapshot.
    pub fn into_snapshot(self, groups: Vec<NodeGroupState>, revision: u64) -> ClusterSnapshot {
        ClusterSnapshot {
            synced: self.synced,
            revision,
            groups,
            nodes: self.nodes,
            pods: self.pods,
            daemonsets: self.daemonsets,
            expander_priorities: self.expander_priorities,
            provisioning_requests: self.provisioning_requests,
        }
    }
}

/// The priority expander's table; `None` when the ConfigMap has none or it does not
/// parse (then the store carries a warning).
type Priorities = Option<BTreeMap<i32, Vec<String>>>;

fn object_key<K: Resource>(o: &K) -> ObjectKey {
    let meta = o.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

const PODS: Conversion<Pod, PodView> = Conversion {
    key: object_key,
    view: |p| Converted::new(pod_view(p).map(|v| (v, Vec::new()))),
};

/// Nodes are converted without their node group: which group owns an instance is
/// the cloud's answer at snapshot time, filled in by [`Stores::parts`].
const NODES: Conversion<Node, NodeView> = Conversion {
    key: object_key,
    view: |n| Converted::new(node_view(n, |_| None)),
};

const DAEMONSETS: Conversion<DaemonSet, DaemonSetView> = Conversion {
    key: object_key,
    view: |d| Converted::new(daemonset_view(d).map(|v| (v, Vec::new()))),
};

const PRIORITIES: Conversion<ConfigMap, Priorities> = Conversion {
    key: object_key,
    view: |c| match c
        .data
        .as_ref()
        .and_then(|d| d.get("priorities"))
        .map(|text| parse_priorities(text))
    {
        None => Converted::View(Arc::new(None), Vec::new()),
        Some(Ok(table)) => Converted::View(Arc::new(Some(table)), Vec::new()),
        Some(Err(e)) => Converted::View(
            Arc::new(None),
            vec![format!("ConfigMap {PRIORITY_CONFIGMAP}: {e}")],
        ),
    },
};

const REQUESTS: Conversion<ProvisioningRequest, RequestObject> = Conversion {
    key: object_key,
    view: |r| Converted::View(Arc::new(request_object(r)), Vec::new()),
};

/// A template that does not convert is kept as its error: the request that names it
/// fails with that message.
type TemplateView = (ObjectKey, Result<PodView, String>);

const TEMPLATES: Conversion<PodTemplate, TemplateView> = Conversion {
    key: object_key,
    view: |t| {
        Converted::View(
            Arc::new((object_key(t), template_pod(t).map_err(|e| e.to_string()))),
            Vec::new(),
        )
    },
};

type GangView = (ObjectKey, GangSize);

const COSCHEDULING: Conversion<CoschedulingPodGroup, GangView> = Conversion {
    key: object_key,
    view: |g| {
        Converted::new(
            min_member("PodGroup", &g.metadata, &g.spec).map(|n| ((object_key(g), n), Vec::new())),
        )
    },
};
const VOLCANO: Conversion<VolcanoPodGroup, GangView> = Conversion {
    key: object_key,
    view: |g| {
        Converted::new(
            min_member("PodGroup", &g.metadata, &g.spec).map(|n| ((object_key(g), n), Vec::new())),
        )
    },
};
const WORKLOAD: Conversion<WorkloadPodGroup, GangView> = Conversion {
    key: object_key,
    view: |g| {
        Converted::new(
            workload_gang(&g.metadata, &g.spec).map(|n| ((object_key(g), n), Vec::new())),
        )
    },
};

/// The converted views of every kind the planner reads.
#[derive(Default)]
struct Stores {
    pods: ViewStore<PodView>,
    nodes: ViewStore<NodeView>,
    daemonsets: ViewStore<DaemonSetView>,
    priorities: ViewStore<Priorities>,
    requests: ViewStore<RequestObject>,
    templates: ViewStore<TemplateView>,
    coscheduling: ViewStore<GangView>,
    volcano: ViewStore<GangView>,
    workload: ViewStore<GangView>,
}

impl Stores {
    /// Copies the views out into a snapshot's parts, in a deterministic order.
    fn parts(
        &self,
        synced: bool,
        group_of: impl Fn(&InstanceId) -> Option<NodeGroupId>,
    ) -> ClusterParts {
        let mut parts = ClusterParts {
            synced,
            ..ClusterParts::default()
        };
        let nodes = self.nodes.collect();
        let pods = self.pods.collect();
        let daemonsets = self.daemonsets.collect();
        let priorities = self.priorities.collect();
        parts.nodes = nodes
            .views
            .iter()
            .map(|n| {
                let mut n = NodeView::clone(n);
                n.group = n.instance.as_ref().and_then(&group_of);
                n
            })
            .collect();
        parts.pods = pods.views.iter().map(|p| PodView::clone(p)).collect();
        parts.daemonsets = daemonsets
            .views
            .iter()
            .map(|d| DaemonSetView::clone(d))
            .collect();
        parts.expander_priorities = priorities.views.first().and_then(|p| Option::clone(p));
        // Gang sizes that live in PodGroup objects.
        let mut skipped = Vec::new();
        let mut sizes: BTreeMap<(GangSource, String), GangSize> = BTreeMap::new();
        for (source, store) in [
            (GangSource::Coscheduling, &self.coscheduling),
            (GangSource::Volcano, &self.volcano),
            (GangSource::WorkloadApi, &self.workload),
        ] {
            let c = store.collect();
            for v in &c.views {
                let ((ns, name), size) = &**v;
                sizes.insert((source, format!("{ns}/{name}")), *size);
            }
            skipped.extend(c.skipped);
        }
        if !sizes.is_empty() {
            for p in &mut parts.pods {
                let Some(g) = &mut p.gang else { continue };
                match sizes.get(&(g.source, g.gang.to_string())) {
                    Some(Some(n)) => g.size = *n,
                    // A Workload API group with the basic policy: not a gang.
                    Some(None) => p.gang = None,
                    None => {}
                }
            }
        }
        let requests = self.requests.collect();
        if !requests.views.is_empty() {
            let templates: BTreeMap<ObjectKey, Arc<Result<PodView, String>>> = self
                .templates
                .collect()
                .views
                .iter()
                .map(|t| (t.0.clone(), Arc::new(t.1.clone())))
                .collect();
            parts.provisioning_requests = requests
                .views
                .iter()
                .map(|r| request_view(r, &templates))
                .collect();
        }
        parts.skipped.extend(skipped);
        for c in [nodes.skipped, pods.skipped, daemonsets.skipped] {
            parts.skipped.extend(c);
        }
        for w in [
            nodes.warnings,
            pods.warnings,
            daemonsets.warnings,
            priorities.warnings,
        ] {
            parts.warnings.extend(w);
        }
        // The stores are in (namespace, name) order; these sorts keep the order the
        // planner has always seen and cost nothing on sorted input.
        parts.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        parts.pods.sort_by(|a, b| a.key.cmp(&b.key));
        parts.daemonsets.sort_by(|a, b| a.name.cmp(&b.name));
        parts
    }
}

/// Views kept current by the watches, and the watches' health.
pub struct ClusterCache {
    stores: Stores,
    health: Vec<(&'static str, Arc<WatchHealth>)>,
    unschedulable: Arc<Notify>,
}

fn pod_is_unschedulable(pod: &Pod) -> bool {
    pod.spec.as_ref().is_none_or(|s| s.node_name.is_none())
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            })
}

/// Watches one kind, applying every event to `store`. `on_apply` sees each changed
/// object before it is converted and dropped.
fn spawn_watch<K, V>(
    name: &'static str,
    api: Api<K>,
    config: watcher::Config,
    store: ViewStore<V>,
    conversion: Conversion<K, V>,
    on_apply: impl Fn(&K) + Send + 'static,
) -> (Arc<WatchHealth>, JoinHandle<()>)
where
    K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let health = Arc::new(WatchHealth::default());
    let h = health.clone();
    let stream = watcher(api, config).default_backoff();
    let end = EndOfWatch(name, health.clone());
    let task = tokio::spawn(async move {
        let _end = end;
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    match &event {
                        watcher::Event::Init => h.listed.store(false, Ordering::SeqCst),
                        watcher::Event::InitDone => {
                            h.listed.store(true, Ordering::SeqCst);
                            h.event_received();
                        }
                        watcher::Event::Apply(obj) => {
                            h.event_received();
                            on_apply(obj);
                        }
                        _ => h.event_received(),
                    }
                    // A conversion that panics must not take the watch down silently:
                    // caught here, the object is left out and the watch goes on (the
                    // converters are property-tested never to panic; this is the net).
                    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        store.apply(&event, conversion)
                    }));
                    if applied.is_err() {
                        h.error();
                        tracing::error!(watch = name, "converting an object panicked; the view is unsynced until the next event");
                    }
                }
                Err(e) => {
                    // Until the watch resumes or relists, the view may have missed changes.
                    h.error();
                    tracing::warn!(watch = name, error = %e, "watch failed; the view is unsynced until it relists");
                }
            }
        }
    });
    (health, task)
}

impl ClusterCache {
    /// Starts the watches. The returned tasks run until aborted.
    pub fn start(client: Client, config: &CacheConfig) -> (Self, Vec<JoinHandle<()>>) {
        let unschedulable = Arc::new(Notify::new());
        let notify = unschedulable.clone();
        let stores = Stores::default();
        let (pods_health, t1) = spawn_watch(
            "pods",
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            stores.pods.clone(),
            PODS,
            move |p: &Pod| {
                if pod_is_unschedulable(p) {
                    notify.notify_one();
                }
            },
        );
        let (nodes_health, t2) = spawn_watch(
            "nodes",
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            stores.nodes.clone(),
            NODES,
            |_: &Node| {},
        );
        let (ds_health, t3) = spawn_watch(
            "daemonsets",
            Api::<DaemonSet>::all(client.clone()),
            watcher::Config::default(),
            stores.daemonsets.clone(),
            DAEMONSETS,
            |_: &DaemonSet| {},
        );
        let (cm_health, t4) = spawn_watch(
            "configmaps",
            Api::<ConfigMap>::namespaced(client.clone(), &config.priority_configmap_namespace),
            watcher::Config::default().fields(&format!("metadata.name={PRIORITY_CONFIGMAP}")),
            stores.priorities.clone(),
            PRIORITIES,
            |_: &ConfigMap| {},
        );
        let mut health = vec![
            ("pods", pods_health),
            ("nodes", nodes_health),
            ("daemonsets", ds_health),
            ("configmaps", cm_health),
        ];
        let mut tasks = vec![t1, t2, t3, t4];
        let mut add = |(h, t): (Arc<WatchHealth>, JoinHandle<()>), name: &'static str| {
            health.push((name, h));
            tasks.push(t);
        };
        if config.provisioning_requests {
            // A new or changed request wakes the loop as an unschedulable pod does: Kueue
            // holds the workload until the request is answered.
            let wake = unschedulable.clone();
            add(
                spawn_watch(
                    "provisioningrequests",
                    Api::all(client.clone()),
                    watcher::Config::default(),
                    stores.requests.clone(),
                    REQUESTS,
                    move |_: &ProvisioningRequest| {
                        wake.notify_one();
                    },
                ),
                "provisioningrequests",
            );
            add(
                spawn_watch(
                    "podtemplates",
                    Api::all(client.clone()),
                    watcher::Config::default(),
                    stores.templates.clone(),
                    TEMPLATES,
                    |_: &PodTemplate| {},
                ),
                "podtemplates",
            );
        }
        for api in &config.gang_apis {
            let name = match api {
                GangApi::Coscheduling => "podgroups.scheduling.x-k8s.io",
                GangApi::Volcano => "podgroups.scheduling.volcano.sh",
                GangApi::Workload => "podgroups.scheduling.k8s.io",
            };
            let watch = match api {
                GangApi::Coscheduling => spawn_watch(
                    name,
                    Api::all(client.clone()),
                    watcher::Config::default(),
                    stores.coscheduling.clone(),
                    COSCHEDULING,
                    |_: &CoschedulingPodGroup| {},
                ),
                GangApi::Volcano => spawn_watch(
                    name,
                    Api::all(client.clone()),
                    watcher::Config::default(),
                    stores.volcano.clone(),
                    VOLCANO,
                    |_: &VolcanoPodGroup| {},
                ),
                GangApi::Workload => spawn_watch(
                    name,
                    Api::all(client.clone()),
                    watcher::Config::default(),
                    stores.workload.clone(),
                    WORKLOAD,
                    |_: &WorkloadPodGroup| {},
                ),
            };
            add(watch, name);
        }
        let cache = Self {
            stores,
            health,
            unschedulable,
        };
        (cache, tasks)
    }

    /// Every watch has listed and not failed since.
    pub fn synced(&self) -> bool {
        self.health.iter().all(|(_, h)| h.synced())
    }

    /// Watches whose task is over: the process cannot keep its view current and
    /// should exit (non-zero) so that Kubernetes restarts it.
    pub fn ended_watches(&self) -> Vec<&'static str> {
        self.health
            .iter()
            .filter(|(_, h)| h.ended())
            .map(|(n, _)| *n)
            .collect()
    }

    /// Watches that are not synced, for logs and `/readyz`.
    pub fn unsynced_watches(&self) -> Vec<&'static str> {
        self.health
            .iter()
            .filter(|(_, h)| !h.synced())
            .map(|(n, _)| *n)
            .collect()
    }

    /// Woken whenever a pod is seen unschedulable.
    pub fn unschedulable_trigger(&self) -> Arc<Notify> {
        self.unschedulable.clone()
    }

    /// Builds the cluster side of a snapshot. `groups` maps instances to the node
    /// groups the autoscaler owns; nodes of other groups are left unmanaged.
    pub fn parts(&self, groups: &[NodeGroupState]) -> ClusterParts {
        let synced = self.synced();
        let instance_group: BTreeMap<&InstanceId, &NodeGroupId> = groups
            .iter()
            .flat_map(|g| g.instances.iter().map(move |i| (&i.id, &g.spec.id)))
            .collect();
        self.stores
            .parts(synced, |i| instance_group.get(i).map(|g| (*g).clone()))
    }
}

/// The gang APIs the cluster serves. One that is not served (its CRD is not installed,
/// or the Workload API's feature gate is off) is simply not watched: no error loop.
/// An API that cannot be asked about (forbidden, unreachable) is left out with a warning.
pub async fn discover_gang_apis(client: &Client) -> (Vec<GangApi>, Vec<String>) {
    let mut served = Vec::new();
    let mut notes = Vec::new();
    for api in GangApi::ALL {
        match client.list_api_group_resources(api.api_version()).await {
            Ok(list) if list.resources.iter().any(|r| r.name == "podgroups") => served.push(api),
            Ok(_) => notes.push(format!(
                "{} does not serve podgroups: not watched",
                api.api_version()
            )),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                notes.push(format!("{} is not served: not watched", api.api_version()))
            }
            Err(e) => notes.push(format!(
                "{}: could not ask whether it is served ({e}): not watched",
                api.api_version()
            )),
        }
    }
    (served, notes)
}

/// The same parts from lists of API objects (`explain` reads them once, with no
/// watch): the conversion and skipping of the watch path, in the same order.
pub fn build_parts(
    synced: bool,
    nodes: &[Arc<Node>],
    pods: &[Arc<Pod>],
    daemonsets: &[Arc<DaemonSet>],
    priorities: Option<&ConfigMap>,
    requests: &[ProvisioningRequest],
    templates: &[PodTemplate],
    group_of: impl Fn(&InstanceId) -> Option<NodeGroupId>,
) -> ClusterParts {
    fn fill<K: Clone, V>(
        store: &ViewStore<V>,
        objects: impl IntoIterator<Item = K>,
        conversion: Conversion<K, V>,
    ) {
        for o in objects {
            store.apply(&watcher::Event::Apply(o), conversion);
        }
    }
    let stores = Stores::default();
    fill(&stores.nodes, nodes.iter().map(|n| Node::clone(n)), NODES);
    fill(&stores.pods, pods.iter().map(|p| Pod::clone(p)), PODS);
    fill(
        &stores.daemonsets,
        daemonsets.iter().map(|d| DaemonSet::clone(d)),
        DAEMONSETS,
    );
    fill(&stores.priorities, priorities.cloned(), PRIORITIES);
    fill(&stores.requests, requests.iter().cloned(), REQUESTS);
    fill(&stores.templates, templates.iter().cloned(), TEMPLATES);
    stores.parts(synced, group_of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bad_objects_are_skipped_not_fatal_and_order_is_deterministic() {
        let good: Pod = serde_json::from_value(json!({"metadata": {"name": "b", "namespace": "x"}, "spec": {"containers": [{"name": "c"}]}})).unwrap();
        let good2: Pod = serde_json::from_value(json!({"metadata": {"name": "a", "namespace": "x"}, "spec": {"containers": [{"name": "c"}]}})).unwrap();
        let bad: Pod = serde_json::from_value(json!({"metadata": {"name": "bad", "namespace": "x"}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"memory": "1Qi"}}}]}})).unwrap();
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": PRIORITY_CONFIGMAP}, "data": {"priorities": "not: [a map of ints"}})).unwrap();
        let parts = build_parts(
            true,
            &[],
            &[Arc::new(good), Arc::new(bad), Arc::new(good2)],
            &[],
            Some(&cm),
            &[],
            &[],
            |_| None,
        );
        assert_eq!(
            parts
                .pods
                .iter()
                .map(|p| p.key.name.as_str())
                .collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        assert_eq!(parts.skipped.len(), 1);
        assert_eq!(parts.skipped[0].name, "x/bad");
        assert!(parts.expander_priorities.is_none());
        assert_eq!(parts.warnings.len(), 1);
    }

    #[test]
    fn pod_group_objects_give_gang_sizes_and_requests_join_their_templates() {
        let stores = Stores::default();
        let member = |name: &str,
                      labels: serde_json::Value,
                      annotations: serde_json::Value|
         -> Pod {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ml", "labels": labels, "annotations": annotations}, "spec": {"containers": [{"name": "c"}]}})).unwrap()
        };
        for p in [
            member(
                "a",
                json!({"scheduling.x-k8s.io/pod-group": "pg"}),
                json!({}),
            ),
            member(
                "b",
                json!({}),
                json!({"scheduling.k8s.io/group-name": "vg"}),
            ),
            member(
                "c",
                json!({"scheduling.x-k8s.io/pod-group": "absent"}),
                json!({}),
            ),
        ] {
            stores.pods.apply(&watcher::Event::Apply(p), PODS);
        }
        let group = |name: &str, spec: serde_json::Value| CoschedulingPodGroup {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ml".into()),
                ..Default::default()
            },
            spec,
            status: json!(null),
        };
        stores.coscheduling.apply(
            &watcher::Event::Apply(group("pg", json!({"minMember": 4}))),
            COSCHEDULING,
        );
        let v = VolcanoPodGroup {
            metadata: kube::api::ObjectMeta {
                name: Some("vg".into()),
                namespace: Some("ml".into()),
                ..Default::default()
            },
            spec: json!({"minMember": 2}),
            status: json!(null),
        };
        stores.volcano.apply(&watcher::Event::Apply(v), VOLCANO);
        let parts = stores.parts(true, |_| None);
        let size = |name: &str| {
            parts
                .pods
                .iter()
                .find(|p| p.key.name == name)
                .unwrap()
                .gang
                .as_ref()
                .map(|g| g.size)
        };
        assert_eq!(size("a"), Some(4));
        assert_eq!(size("b"), Some(2));
        assert_eq!(
            size("c"),
            Some(0),
            "no PodGroup (yet): a gang of the pods present"
        );

        let request: ProvisioningRequest = serde_json::from_value(json!({
            "metadata": {"name": "r", "namespace": "ml"},
            "spec": {"provisioningClassName": model::provreq::CLASS_CHECK_CAPACITY, "podSets": [{"podTemplateRef": {"name": "t"}, "count": 2}]}
        }))
        .unwrap();
        stores
            .requests
            .apply(&watcher::Event::Apply(request), REQUESTS);
        let template: PodTemplate = serde_json::from_value(json!({"metadata": {"name": "t", "namespace": "ml"}, "template": {"spec": {"containers": [{"name": "c"}]}}})).unwrap();
        stores
            .templates
            .apply(&watcher::Event::Apply(template), TEMPLATES);
        let parts = stores.parts(true, |_| None);
        assert_eq!(parts.provisioning_requests.len(), 1);
        assert_eq!(parts.provisioning_requests[0].pods.len(), 2);
    }

    #[test]
    fn a_watch_error_unsyncs_until_an_event_arrives() {
        let h = WatchHealth::default();
        assert!(!h.synced(), "not listed yet");
        h.listed.store(true, Ordering::SeqCst);
        assert!(h.synced());
        h.error();
        assert!(!h.synced());
        h.event_received();
        assert!(h.synced());
    }

    #[tokio::test]
    async fn a_watch_task_that_ends_or_panics_is_never_synced_again() {
        for panics in [false, true] {
            let health = Arc::new(WatchHealth::default());
            health.listed.store(true, Ordering::SeqCst);
            assert!(health.synced());
            let end = EndOfWatch("test", health.clone());
            let task = tokio::spawn(async move {
                let _end = end;
                if panics {
                    panic!("a conversion blew up");
                }
            });
            let _ = task.await;
            assert!(health.ended(), "panics: {panics}");
            assert!(
                !health.synced(),
                "an ended watch is not synced, however quiet (panics: {panics})"
            );
            health.event_received();
            assert!(!health.synced());
        }
    }

    #[test]
    fn unschedulable_detection() {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": []},
            "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}})).unwrap();
        assert!(pod_is_unschedulable(&p));
        let bound: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "nodeName": "n"}}),
        )
        .unwrap();
        assert!(!pod_is_unschedulable(&bound));
    }
}
