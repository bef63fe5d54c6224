//! Conversion of Kubernetes objects into the planner's vocabulary. Pure functions:
//! every oddity of a real cluster (taints without values, init containers, overhead,
//! nodes without a providerID, unknown extended resources, malformed annotations)
//! is handled here and unit-tested. An object that cannot be understood yields a
//! `ConversionError` naming the object and the field; the caller skips it with a
//! warning, an Event and a metric — never a crash loop.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeSelectorRequirement as K8sReq, Pod, PodSpec, ResourceRequirements,
    Taint as K8sTaint, Toleration as K8sToleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as K8sSelector, ObjectMeta, Time as K8sTime,
};
use model::well_known::*;
use model::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// An object that could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name}: {field}: {message}")]
pub struct ConversionError {
    pub kind: &'static str,
    pub name: String,
    pub field: String,
    pub message: String,
}

impl ConversionError {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        self.kind
    }
}

/// Milliseconds since the Unix epoch: production `Time` is wall-clock time.
pub fn time_of(t: &K8sTime) -> Time {
    Time::from_millis(t.0.as_millisecond().max(0) as u64)
}

/// Parses a time written by us or a user in an annotation: RFC 3339 or Unix seconds.
pub fn parse_annotation_time(text: &str) -> Option<Time> {
    if let Ok(secs) = text.trim().parse::<u64>() {
        return Some(Time::from_secs(secs));
    }
    let ts: k8s_openapi::jiff::Timestamp = text.trim().parse().ok()?;
    Some(Time::from_millis(ts.as_millisecond().max(0) as u64))
}

/// Formats a `Time` for an annotation (RFC 3339, UTC).
pub fn format_annotation_time(t: Time) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(t.as_millis() as i64)
        .map(|ts| ts.to_string())
        .unwrap_or_else(|_| t.as_millis().to_string())
}

/// Splits `aws:///us-west-2a/i-0123` into zone and instance id. Anything else (no
/// providerID, another cloud, a malformed id) is not an AWS instance.
pub fn parse_provider_id(provider_id: &str) -> Option<(Zone, InstanceId)> {
    let rest = provider_id.strip_prefix("aws://")?;
    let mut parts = rest.trim_start_matches('/').split('/');
    let (zone, instance) = (parts.next()?, parts.next()?);
    if parts.next().is_some() || !instance.starts_with("i-") || zone.is_empty() {
        return None;
    }
    Some((Zone::new(zone), InstanceId::new(instance)))
}

fn quantities(
    kind: &'static str,
    name: &str,
    field: &str,
    map: Option<&BTreeMap<String, Quantity>>,
) -> Result<Resources, ConversionError> {
    let Some(map) = map else {
        return Ok(Resources::zero());
    };
    Resources::from_quantities(map.iter().map(|(k, v)| (k.as_str(), v.0.as_str()))).map_err(
        |(resource, e)| ConversionError {
            kind,
            name: name.to_owned(),
            field: format!("{field}.{resource}"),
            message: e.to_string(),
        },
    )
}

fn container_requests(
    kind: &'static str,
    name: &str,
    field: &str,
    r: Option<&ResourceRequirements>,
) -> Result<Resources, ConversionError> {
    let Some(r) = r else {
        return Ok(Resources::zero());
    };
    // The API server defaults requests to limits; a raw object may carry only limits.
    let mut out = quantities(kind, name, &format!("{field}.limits"), r.limits.as_ref())?;
    let requests = quantities(
        kind,
        name,
        &format!("{field}.requests"),
        r.requests.as_ref(),
    )?;
    if let Some(req) = &r.requests {
        // Requests override limits resource by resource.
        let mut merged = out.clone();
        if req.contains_key("cpu") {
            merged.cpu_millis = requests.cpu_millis;
        }
        if req.contains_key("memory") {
            merged.memory_bytes = requests.memory_bytes;
        }
        if req.contains_key("ephemeral-storage") {
            merged.ephemeral_storage_bytes = requests.ephemeral_storage_bytes;
        }
        for (n, v) in &requests.extended {
            merged.set_extended(n, *v);
        }
        out = merged;
    }
    Ok(out)
}

/// The effective request of a pod spec, as the scheduler computes it: the larger of
/// (app containers + restartable init "sidecars") and each regular init container
/// (plus the sidecars started before it), plus the pod overhead, plus one pod slot.
pub fn effective_requests(
    kind: &'static str,
    name: &str,
    spec: &PodSpec,
) -> Result<Resources, ConversionError> {
    let mut sum = Resources::zero();
    for (i, c) in spec.containers.iter().enumerate() {
        sum.add(&container_requests(
            kind,
            name,
            &format!("spec.containers[{i}].resources"),
            c.resources.as_ref(),
        )?);
    }
    let mut sidecars = Resources::zero();
    let mut init_peak = Resources::zero();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let r = container_requests(
            kind,
            name,
            &format!("spec.initContainers[{i}].resources"),
            c.resources.as_ref(),
        )?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            init_peak.max_with(&sidecars);
        } else {
            let mut with_sidecars = sidecars.clone();
            with_sidecars.add(&r);
            init_peak.max_with(&with_sidecars);
        }
    }
    sum.add(&sidecars);
    sum.max_with(&init_peak);
    sum.add(&quantities(
        kind,
        name,
        "spec.overhead",
        spec.overhead.as_ref(),
    )?);
    sum.pods = 1;
    Ok(sum)
}

fn operator(
    kind: &'static str,
    name: &str,
    field: &str,
    text: &str,
) -> Result<Operator, ConversionError> {
    Ok(match text {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::Gt,
        "Lt" => Operator::Lt,
        other => {
            return Err(ConversionError {
                kind,
                name: name.to_owned(),
                field: field.to_owned(),
                message: format!("unknown operator {other:?}"),
            })
        }
    })
}

fn node_requirements(
    kind: &'static str,
    name: &str,
    field: &str,
    reqs: Option<&Vec<K8sReq>>,
) -> Result<Vec<NodeSelectorRequirement>, ConversionError> {
    reqs.into_iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            Ok(NodeSelectorRequirement {
                key: r.key.clone(),
                operator: operator(kind, name, &format!("{field}[{i}].operator"), &r.operator)?,
                values: r.values.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// Required node affinity (matchFields are not simulated: documented approximation).
pub fn required_node_affinity(
    kind: &'static str,
    name: &str,
    affinity: Option<&Affinity>,
) -> Result<Option<NodeAffinity>, ConversionError> {
    let Some(required) = affinity
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    else {
        return Ok(None);
    };
    let mut terms = Vec::new();
    for (i, t) in required.node_selector_terms.iter().enumerate() {
        let field =
            format!("spec.affinity.nodeAffinity.required.nodeSelectorTerms[{i}].matchExpressions");
        terms.push(NodeSelectorTerm {
            match_expressions: node_requirements(kind, name, &field, t.match_expressions.as_ref())?,
        });
    }
    Ok(Some(NodeAffinity { terms }))
}

/// An API string map (labels, a node selector) as the planner's [`Labels`].
fn labels_of(map: Option<&BTreeMap<String, String>>) -> Labels {
    map.map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
        .unwrap_or_default()
}

fn label_selector(
    kind: &'static str,
    name: &str,
    field: &str,
    s: Option<&K8sSelector>,
) -> Result<LabelSelector, ConversionError> {
    let Some(s) = s else {
        return Ok(LabelSelector::default());
    };
    let mut out = LabelSelector {
        match_labels: labels_of(s.match_labels.as_ref()),
        match_expressions: vec![],
    };
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let operator = match e.operator.as_str() {
            "In" => SelectorOperator::In,
            "NotIn" => SelectorOperator::NotIn,
            "Exists" => SelectorOperator::Exists,
            "DoesNotExist" => SelectorOperator::DoesNotExist,
            other => {
                return Err(ConversionError {
                    kind,
                    name: name.to_owned(),
                    field: format!("{field}.matchExpressions[{i}].operator"),
                    message: format!("unknown operator {other:?}"),
                })
            }
        };
        out.match_expressions.push(SelectorRequirement {
            key: e.key.clone(),
            operator,
            values: e.values.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Tolerations; an unknown effect is a conversion error (the API server rejects it anyway).
pub fn tolerations(
    kind: &'static str,
    name: &str,
    list: Option<&Vec<K8sToleration>>,
) -> Result<Vec<Toleration>, ConversionError> {
    list.into_iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| {
            let effect = match t.effect.as_deref() {
                None | Some("") => None,
                Some(e) => Some(TaintEffect::parse(e).ok_or_else(|| ConversionError {
                    kind,
                    name: name.to_owned(),
                    field: format!("spec.tolerations[{i}].effect"),
                    message: format!("unknown effect {e:?}"),
                })?),
            };
            Ok(Toleration {
                key: t.key.clone().unwrap_or_default(),
                operator: if t.operator.as_deref() == Some("Exists") {
                    TolerationOperator::Exists
                } else {
                    TolerationOperator::Equal
                },
                value: t.value.clone().unwrap_or_default(),
                effect,
            })
        })
        .collect()
}

/// Node taints; a taint with an unknown effect is dropped (reported by the caller),
/// a taint without a value is fine.
pub fn taints(list: Option<&Vec<K8sTaint>>) -> (Vec<Taint>, Vec<String>) {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for t in list.into_iter().flatten() {
        match TaintEffect::parse(&t.effect) {
            Some(effect) => out.push(Taint::new(
                t.key.clone(),
                t.value.clone().unwrap_or_default(),
                effect,
            )),
            None => unknown.push(format!("{}:{}", t.key, t.effect)),
        }
    }
    (out, unknown)
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn label<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.labels
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Converts a Pod.
pub fn pod_view(pod: &Pod) -> Result<PodView, ConversionError> {
    let meta = &pod.metadata;
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let full = format!("{namespace}/{name}");
    let kind = "Pod";
    let spec = pod.spec.as_ref().ok_or_else(|| ConversionError {
        kind,
        name: full.clone(),
        field: "spec".into(),
        message: "missing".into(),
    })?;
    let requests = effective_requests(kind, &full, spec)?;
    let owner = if annotation(meta, "kubernetes.io/config.mirror").is_some() {
        Owner::Mirror
    } else {
        // Group-qualified: a Volcano `batch.volcano.sh/Job` is not a `batch/Job`, and
        // only `apps/DaemonSet` pods are node infrastructure.
        match meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
        {
            None => Owner::Bare,
            Some(o) => Owner::of_controller(&o.api_version, &o.kind, &o.name),
        }
    };
    let mut anti_affinity = Vec::new();
    if let Some(terms) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|p| {
            p.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    {
        for (i, t) in terms.iter().enumerate() {
            anti_affinity.push(PodAntiAffinityTerm {
                selector: label_selector(
                    kind,
                    &full,
                    &format!("spec.affinity.podAntiAffinity.required[{i}].labelSelector"),
                    t.label_selector.as_ref(),
                )?,
                namespaces: t.namespaces.clone().unwrap_or_default(),
                topology_key: t.topology_key.clone(),
            });
        }
    }
    let status = pod.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        _ => PodPhase::Pending,
    };
    let unschedulable = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
        });
    let safe_to_evict = match annotation(meta, ANNOTATION_SAFE_TO_EVICT) {
        Some("true") => Some(SafeToEvict::True),
        Some("false") => Some(SafeToEvict::False),
        Some("on-completion") => Some(SafeToEvict::OnCompletion),
        _ => None,
    };
    let do_not_disrupt = annotation(meta, ANNOTATION_DO_NOT_DISRUPT) == Some("true")
        || label(meta, LABEL_DO_NOT_DRAIN) == Some("true");
    let gang = gang_of(meta, spec, &namespace, &owner);
    let expected_duration =
        annotation(meta, ANNOTATION_EXPECTED_DURATION).and_then(|d| parse_duration(d).ok());
    let mut view = PodView::new(
        PodKey::new(namespace, name),
        requests,
        owner,
        meta.creation_timestamp
            .as_ref()
            .map(time_of)
            .unwrap_or(Time::ZERO),
    );
    view.labels = labels_of(meta.labels.as_ref());
    view.node_selector = labels_of(spec.node_selector.as_ref());
    view.required_affinity = required_node_affinity(kind, &full, spec.affinity.as_ref())?;
    view.tolerations = tolerations(kind, &full, spec.tolerations.as_ref())?;
    view.anti_affinity = anti_affinity;
    view.phase = phase;
    view.node = spec
        .node_name
        .clone()
        .filter(|n| !n.is_empty())
        .map(NodeName::new);
    view.unschedulable = unschedulable && view.node.is_none();
    view.priority = spec.priority.unwrap_or(0);
    view.safe_to_evict = safe_to_evict;
    view.do_not_disrupt = do_not_disrupt;
    view.gang = gang;
    view.started = status.and_then(|s| s.start_time.as_ref()).map(time_of);
    view.active_deadline = spec
        .active_deadline_seconds
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s as u64).min(model::time::MAX_DURATION));
    view.expected_duration = expected_duration;
    view.uid = meta.uid.clone().filter(|u| !u.is_empty()).map(PodUid::new);
    view.consumes_request = annotation(meta, ANNOTATION_CONSUME_PROVISIONING_REQUEST)
        .or_else(|| annotation(meta, ANNOTATION_CA_CONSUME_PROVISIONING_REQUEST))
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    view.termination_grace = spec
        .termination_grace_period_seconds
        .filter(|s| *s >= 0)
        .map(|s| Duration::from_secs(s as u64).min(model::time::MAX_DURATION));
    view.deletion_deadline = meta.deletion_timestamp.as_ref().map(time_of);
    view.nominated_node = status
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty())
        .map(NodeName::new);
    Ok(view)
}

/// The gang a pod belongs to, from whichever marker it carries: ours first, then
/// Kueue's pod groups, coscheduling, Volcano and the Workload API. Sizes that live in a
/// `PodGroup` object (coscheduling, Volcano, Workload API) are 0 here and filled in
/// from the watched PodGroups when the snapshot is built (`cache.rs`).
fn gang_of(
    meta: &ObjectMeta,
    spec: &PodSpec,
    namespace: &str,
    owner: &Owner,
) -> Option<GangMembership> {
    let member = |name: &str, size: u32, source: GangSource| {
        Some(GangMembership {
            gang: GangId::new(format!("{namespace}/{name}")),
            size,
            source,
        })
    };
    let our_name = annotation(meta, ANNOTATION_GANG_NAME);
    if annotation(meta, ANNOTATION_GANG) == Some("true") || our_name.is_some() {
        let size = annotation(meta, ANNOTATION_GANG_SIZE)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let name = our_name.map(str::to_owned).or_else(|| match owner {
            Owner::Job(j) => Some(j.clone()),
            _ => None,
        })?;
        return member(&name, size, GangSource::Annotation);
    }
    if let Some(name) = label(meta, LABEL_KUEUE_POD_GROUP) {
        let size = annotation(meta, ANNOTATION_KUEUE_POD_GROUP_TOTAL)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        return member(name, size, GangSource::KueuePodGroup);
    }
    if let Some(name) = label(meta, LABEL_COSCHEDULING_POD_GROUP) {
        return member(name, 0, GangSource::Coscheduling);
    }
    if let Some(name) = annotation(meta, ANNOTATION_VOLCANO_GROUP_NAME) {
        return member(name, 0, GangSource::Volcano);
    }
    if let Some(name) = spec
        .scheduling_group
        .as_ref()
        .and_then(|g| g.pod_group_name.as_deref())
        .filter(|n| !n.is_empty())
    {
        return member(name, 0, GangSource::WorkloadApi);
    }
    None
}

/// Converts a Node. `group_of` maps an instance id to its (owned) node group.
pub fn node_view(
    node: &Node,
    group_of: impl Fn(&InstanceId) -> Option<NodeGroupId>,
) -> Result<(NodeView, Vec<String>), ConversionError> {
    let meta = &node.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let kind = "Node";
    let status = node.status.as_ref();
    let allocatable = quantities(
        kind,
        &name,
        "status.allocatable",
        status.and_then(|s| s.allocatable.as_ref()),
    )?;
    let created = meta
        .creation_timestamp
        .as_ref()
        .map(time_of)
        .unwrap_or(Time::ZERO);
    let mut view = NodeView::new(NodeName::new(name.clone()), allocatable, created);
    view.labels = labels_of(meta.labels.as_ref());
    let spec = node.spec.as_ref();
    let (node_taints, unknown) = taints(spec.and_then(|s| s.taints.as_ref()));
    let warnings = unknown
        .into_iter()
        .map(|t| format!("node {name}: taint {t} has an unknown effect and is ignored"))
        .collect();
    view.taints = node_taints;
    view.cordoned = spec.and_then(|s| s.unschedulable).unwrap_or(false);
    view.instance = spec
        .and_then(|s| s.provider_id.as_deref())
        .and_then(parse_provider_id)
        .map(|(_, i)| i);
    view.group = view.instance.as_ref().and_then(&group_of);
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    view.ready = ready.is_some_and(|c| c.status == "True");
    view.ready_changed = ready
        .and_then(|c| c.last_transition_time.as_ref())
        .map(time_of)
        .unwrap_or(created);
    view.idle_since = annotation(meta, ANNOTATION_IDLE_SINCE).and_then(parse_annotation_time);
    if view.taints.iter().any(|t| t.key == TAINT_RETIRING) {
        view.retired = Some(RetireMark {
            since: annotation(meta, ANNOTATION_RETIRED_AT)
                .and_then(parse_annotation_time)
                .unwrap_or(created),
            reason: annotation(meta, ANNOTATION_RETIRE_REASON)
                .unwrap_or("")
                .to_owned(),
        });
    }
    view.scale_down_disabled = annotation(meta, ANNOTATION_SCALE_DOWN_DISABLED) == Some("true")
        || label(meta, LABEL_DETACHED) == Some("true");
    Ok((view, warnings))
}

/// Tolerations every DaemonSet pod gets from the DaemonSet controller.
fn daemonset_default_tolerations() -> Vec<Toleration> {
    [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/memory-pressure",
        "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/unschedulable",
    ]
    .into_iter()
    .map(|key| Toleration {
        key: key.into(),
        operator: TolerationOperator::Exists,
        value: String::new(),
        effect: None,
    })
    .collect()
}

/// Converts a DaemonSet into the overhead it puts on every eligible node.
pub fn daemonset_view(ds: &DaemonSet) -> Result<DaemonSetView, ConversionError> {
    let name = format!(
        "{}/{}",
        ds.metadata.namespace.as_deref().unwrap_or("default"),
        ds.metadata.name.as_deref().unwrap_or("")
    );
    let kind = "DaemonSet";
    let spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or_else(|| ConversionError {
            kind,
            name: name.clone(),
            field: "spec.template.spec".into(),
            message: "missing".into(),
        })?;
    let mut tols = tolerations(kind, &name, spec.tolerations.as_ref())?;
    tols.extend(daemonset_default_tolerations());
    Ok(DaemonSetView {
        requests: effective_requests(kind, &name, spec)?,
        node_selector: labels_of(spec.node_selector.as_ref()),
        required_affinity: required_node_affinity(kind, &name, spec.affinity.as_ref())?,
        tolerations: tols,
        name,
    })
}

/// Parses the priority expander ConfigMap's `priorities` value (CA's format: a YAML
/// map of integer priority to a list of group-name regexes).
pub fn parse_priorities(text: &str) -> Result<BTreeMap<i32, Vec<String>>, String> {
    serde_yaml::from_str(text).map_err(|e| format!("priorities: {e}"))
}

#[cfg(test)]
mod tests;
