//! The custom objects batch work brings: ProvisioningRequests (`autoscaling.x-k8s.io/v1`)
//! with the PodTemplates they reference, and the gang `PodGroup`s of coscheduling,
//! Volcano and the Workload API.
//!
//! They are read as typed metadata plus raw JSON and converted leniently: a request
//! with a bad field is one request the planner answers with a condition, never a watch
//! that fails to decode (which would leave the whole view unsynced).

use crate::convert::{pod_view, time_of, ConversionError};
use k8s_openapi::api::core::v1::{Pod, PodTemplate};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time as K8sTime};
use kube::core::NamespaceResourceScope;
use model::{
    ConditionType, GangSource, PodKey, PodView, ProvisioningClass, ProvisioningRequestView,
    RequestCondition, RequestProblem, Time,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// More pods than this in one request is refused as invalid: the pods are built in
/// memory, and no node group holds that many anyway.
pub const MAX_REQUEST_PODS: i64 = 10_000;

macro_rules! custom_object {
    ($(#[$doc:meta])* $name:ident, $group:literal, $version:literal, $kind:literal, $plural:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, Serialize, Deserialize)]
        pub struct $name {
            pub metadata: ObjectMeta,
            #[serde(default)]
            pub spec: Value,
            #[serde(default)]
            pub status: Value,
        }

        impl kube::Resource for $name {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;
            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($group)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($version)
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

custom_object!(
    /// `autoscaling.x-k8s.io/v1` ProvisioningRequest.
    ProvisioningRequest, "autoscaling.x-k8s.io", "v1", "ProvisioningRequest", "provisioningrequests"
);
custom_object!(
    /// scheduler-plugins coscheduling `PodGroup`.
    CoschedulingPodGroup, "scheduling.x-k8s.io", "v1alpha1", "PodGroup", "podgroups"
);
custom_object!(
    /// Volcano `PodGroup`.
    VolcanoPodGroup, "scheduling.volcano.sh", "v1beta1", "PodGroup", "podgroups"
);
custom_object!(
    /// The Workload API's `PodGroup` (Kubernetes 1.36, feature gate `GenericWorkload`).
    WorkloadPodGroup, "scheduling.k8s.io", "v1alpha2", "PodGroup", "podgroups"
);

/// The gang APIs, each watched only when the cluster serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GangApi {
    Coscheduling,
    Volcano,
    Workload,
}

impl GangApi {
    pub const ALL: [Self; 3] = [Self::Coscheduling, Self::Volcano, Self::Workload];

    /// `group/version` as discovery names it.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::Coscheduling => "scheduling.x-k8s.io/v1alpha1",
            Self::Volcano => "scheduling.volcano.sh/v1beta1",
            Self::Workload => "scheduling.k8s.io/v1alpha2",
        }
    }

    pub fn source(self) -> GangSource {
        match self {
            Self::Coscheduling => GangSource::Coscheduling,
            Self::Volcano => GangSource::Volcano,
            Self::Workload => GangSource::WorkloadApi,
        }
    }
}

/// What a gang's `PodGroup` says: `Some(n)`, a gang of at least `n`; `None`, not a
/// gang at all (a Workload API group with the basic policy).
pub type GangSize = Option<u32>;

fn bad(
    kind: &'static str,
    meta: &ObjectMeta,
    field: &str,
    message: impl Into<String>,
) -> ConversionError {
    let name = format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    );
    ConversionError {
        kind,
        name,
        field: field.into(),
        message: message.into(),
    }
}

fn count_field(
    kind: &'static str,
    meta: &ObjectMeta,
    value: &Value,
    field: &str,
) -> Result<u32, ConversionError> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                bad(
                    kind,
                    meta,
                    field,
                    format!("must be a whole number >= 0, got {n}"),
                )
            }),
        Value::Null => Ok(0),
        other => Err(bad(
            kind,
            meta,
            field,
            format!("must be a number, got {other}"),
        )),
    }
}

/// A coscheduling or Volcano `PodGroup`: `spec.minMember`.
pub fn min_member(
    kind: &'static str,
    meta: &ObjectMeta,
    spec: &Value,
) -> Result<GangSize, ConversionError> {
    count_field(kind, meta, &spec["minMember"], "spec.minMember").map(Some)
}

/// A Workload API `PodGroup`: `spec.schedulingPolicy.gang.minCount`, or not a gang.
pub fn workload_gang(meta: &ObjectMeta, spec: &Value) -> Result<GangSize, ConversionError> {
    let gang = &spec["schedulingPolicy"]["gang"];
    if gang.is_null() {
        return Ok(None);
    }
    count_field(
        "PodGroup",
        meta,
        &gang["minCount"],
        "spec.schedulingPolicy.gang.minCount",
    )
    .map(Some)
}

/// A request as read, before its PodTemplates are joined in.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestObject {
    pub key: PodKey,
    pub class: ProvisioningClass,
    pub created: Time,
    pub no_retry: bool,
    /// `(template name, count)` per pod set.
    pub pod_sets: Vec<(String, i64)>,
    pub conditions: Vec<RequestCondition>,
    /// A defect found while reading (then `pod_sets` may be incomplete).
    pub problem: Option<RequestProblem>,
}

/// Reads a ProvisioningRequest. Never fails: what is wrong with it is its `problem`.
pub fn request_object(pr: &ProvisioningRequest) -> RequestObject {
    let meta = &pr.metadata;
    let key = PodKey::new(
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    );
    let spec = &pr.spec;
    let class = ProvisioningClass::parse(spec["provisioningClassName"].as_str().unwrap_or(""));
    let no_retry = spec["parameters"]["noRetry"]
        .as_str()
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let created = meta
        .creation_timestamp
        .as_ref()
        .map(time_of)
        .unwrap_or(Time::ZERO);
    let mut problem = None;
    let mut pod_sets = Vec::new();
    let mut total = 0i64;
    match spec["podSets"].as_array() {
        None => {
            problem = Some(RequestProblem::Invalid {
                message: "spec.podSets: missing or not a list".into(),
            })
        }
        Some(sets) if sets.is_empty() => {
            problem = Some(RequestProblem::Invalid {
                message: "spec.podSets: empty".into(),
            })
        }
        Some(sets) => {
            for (i, set) in sets.iter().enumerate() {
                let name = set["podTemplateRef"]["name"].as_str().unwrap_or("");
                let count = set["count"].as_i64();
                let why = if name.is_empty() {
                    Some(format!("spec.podSets[{i}].podTemplateRef.name: missing"))
                } else {
                    match count {
                        None => Some(format!(
                            "spec.podSets[{i}].count: missing or not a whole number"
                        )),
                        Some(c) if c < 1 => Some(format!(
                            "spec.podSets[{i}].count: must be at least 1, got {c}"
                        )),
                        Some(_) => None,
                    }
                };
                if let Some(message) = why {
                    problem = Some(RequestProblem::Invalid { message });
                    break;
                }
                let count = count.unwrap_or(0);
                total = total.saturating_add(count);
                pod_sets.push((name.to_owned(), count));
            }
            if problem.is_none() && total > MAX_REQUEST_PODS {
                problem = Some(RequestProblem::Invalid { message: format!("spec.podSets: {total} pods in all, more than the {MAX_REQUEST_PODS} one request may ask for") });
            }
        }
    }
    let conditions = pr.status["conditions"]
        .as_array()
        .map(|cs| cs.iter().filter_map(condition_of).collect())
        .unwrap_or_default();
    RequestObject {
        key,
        class,
        created,
        no_retry,
        pod_sets,
        conditions,
        problem,
    }
}

fn condition_of(c: &Value) -> Option<RequestCondition> {
    let kind = ConditionType::parse(c["type"].as_str()?)?;
    let since = c["lastTransitionTime"]
        .as_str()
        .and_then(|t| serde_json::from_value::<K8sTime>(Value::String(t.to_owned())).ok())
        .map(|t| time_of(&t))
        .unwrap_or(Time::ZERO);
    Some(RequestCondition {
        kind,
        status: c["status"].as_str() == Some("True"),
        reason: c["reason"].as_str().unwrap_or("").to_owned(),
        message: c["message"].as_str().unwrap_or("").to_owned(),
        since,
    })
}

/// A PodTemplate's pod, as the planner sees pods.
pub fn template_pod(t: &PodTemplate) -> Result<PodView, ConversionError> {
    let template = t.template.clone().unwrap_or_default();
    let mut metadata = template.metadata.unwrap_or_default();
    metadata.namespace = t.metadata.namespace.clone();
    metadata.name = t.metadata.name.clone();
    let pod = Pod {
        metadata,
        spec: template.spec,
        status: None,
    };
    pod_view(&pod).map_err(|mut e| {
        e.kind = "PodTemplate";
        e
    })
}

/// Joins a request with its PodTemplates (`(namespace, name)` → the template's pod,
/// or why it could not be read) into the planner's view.
pub fn request_view(
    r: &RequestObject,
    templates: &BTreeMap<(String, String), Arc<Result<PodView, String>>>,
) -> ProvisioningRequestView {
    let mut view = ProvisioningRequestView {
        key: r.key.clone(),
        class: r.class.clone(),
        pods: Vec::new(),
        created: r.created,
        no_retry: r.no_retry,
        conditions: r.conditions.clone(),
        problem: r.problem.clone(),
    };
    if view.problem.is_some() {
        return view;
    }
    for (s, (name, count)) in r.pod_sets.iter().enumerate() {
        match templates
            .get(&(r.key.namespace.clone(), name.clone()))
            .map(|t| t.as_ref())
        {
            None => {
                view.problem = Some(RequestProblem::MissingPodTemplate { name: name.clone() });
                break;
            }
            Some(Err(e)) => {
                view.problem = Some(RequestProblem::Invalid {
                    message: format!("PodTemplate {name}: {e}"),
                });
                break;
            }
            Some(Ok(pod)) => {
                for i in 0..*count {
                    let mut p = pod.clone();
                    p.key = PodKey::new(r.key.namespace.clone(), format!("{s}-{i}"));
                    view.pods.push(p);
                }
            }
        }
    }
    if view.problem.is_some() {
        view.pods.clear();
    }
    view
}

/// The status body that sets `conditions` (each replacing its type) over `current`.
pub fn status_patch(
    current: &Value,
    conditions: &[RequestCondition],
    format_time: impl Fn(Time) -> String,
) -> Value {
    let mut list: Vec<Value> = current["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in conditions {
        list.retain(|have| have["type"].as_str() != Some(c.kind.as_str()));
        list.push(serde_json::json!({
            "type": c.kind.as_str(),
            "status": if c.status { "True" } else { "False" },
            "reason": c.reason,
            "message": truncate(&c.message, 32_000),
            "lastTransitionTime": format_time(c.since),
        }));
    }
    serde_json::json!({"status": {"conditions": list}})
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pr(spec: Value) -> ProvisioningRequest {
        ProvisioningRequest {
            metadata: ObjectMeta {
                name: Some("r".into()),
                namespace: Some("ml".into()),
                ..Default::default()
            },
            spec,
            status: json!({"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
        }
    }

    fn template(name: &str, cpu: &str) -> PodTemplate {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ml"},
            "template": {"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}
        }))
        .unwrap()
    }

    #[test]
    fn a_request_joins_its_templates_into_template_times_count_pods() {
        let r = request_object(&pr(json!({
            "provisioningClassName": model::provreq::CLASS_BEST_EFFORT_ATOMIC,
            "parameters": {"noRetry": "true"},
            "podSets": [{"podTemplateRef": {"name": "a"}, "count": 3}, {"podTemplateRef": {"name": "b"}, "count": 2}]
        })));
        assert_eq!(r.class, ProvisioningClass::BestEffortAtomic);
        assert!(r.no_retry);
        assert_eq!(r.conditions.len(), 1);
        assert_eq!(r.conditions[0].kind, ConditionType::Accepted);
        let mut templates = BTreeMap::new();
        for (name, cpu) in [("a", "2"), ("b", "500m")] {
            templates.insert(
                ("ml".to_owned(), name.to_owned()),
                Arc::new(template_pod(&template(name, cpu)).map_err(|e| e.to_string())),
            );
        }
        let v = request_view(&r, &templates);
        assert_eq!(v.problem, None);
        assert_eq!(v.pods.len(), 5);
        assert_eq!(
            v.pods
                .iter()
                .filter(|p| p.requests.cpu_millis == 2000)
                .count(),
            3
        );
        assert_eq!(
            v.pods
                .iter()
                .map(|p| p.key.name.as_str())
                .collect::<Vec<_>>(),
            vec!["0-0", "0-1", "0-2", "1-0", "1-1"]
        );
        // Without template b, the request names the missing one.
        templates.remove(&("ml".to_owned(), "b".to_owned()));
        let v = request_view(&r, &templates);
        assert_eq!(
            v.problem,
            Some(RequestProblem::MissingPodTemplate { name: "b".into() })
        );
        assert!(v.pods.is_empty());
    }

    #[test]
    fn bad_requests_are_problems_that_name_the_field() {
        for (spec, field) in [
            (
                json!({"podSets": [{"podTemplateRef": {"name": "a"}, "count": 0}]}),
                "spec.podSets[0].count",
            ),
            (
                json!({"podSets": [{"podTemplateRef": {"name": "a"}, "count": "many"}]}),
                "spec.podSets[0].count",
            ),
            (
                json!({"podSets": [{"podTemplateRef": {}, "count": 1}]}),
                "spec.podSets[0].podTemplateRef.name",
            ),
            (json!({}), "spec.podSets"),
            (
                json!({"podSets": [{"podTemplateRef": {"name": "a"}, "count": 9_000_000_000i64}]}),
                "spec.podSets",
            ),
        ] {
            let r = request_object(&pr(spec.clone()));
            match r.problem {
                Some(RequestProblem::Invalid { message }) => {
                    assert!(message.starts_with(field), "{spec}: {message}")
                }
                other => panic!("{spec}: {other:?}"),
            }
        }
    }

    #[test]
    fn pod_group_sizes() {
        let meta = ObjectMeta::default();
        assert_eq!(
            min_member("PodGroup", &meta, &json!({"minMember": 4})).unwrap(),
            Some(4)
        );
        assert!(min_member("PodGroup", &meta, &json!({"minMember": -1})).is_err());
        assert_eq!(
            workload_gang(
                &meta,
                &json!({"schedulingPolicy": {"gang": {"minCount": 8}}})
            )
            .unwrap(),
            Some(8)
        );
        assert_eq!(
            workload_gang(&meta, &json!({"schedulingPolicy": {"basic": {}}})).unwrap(),
            None
        );
    }

    #[test]
    fn the_status_patch_replaces_conditions_by_type_and_keeps_the_others() {
        let current = json!({"conditions": [
            {"type": "Accepted", "status": "True", "reason": "Accepted"},
            {"type": "Provisioned", "status": "False", "reason": "CapacityIsNotFound"}
        ]});
        let c = RequestCondition {
            kind: ConditionType::Provisioned,
            status: true,
            reason: "CapacityIsFound".into(),
            message: "ok".into(),
            since: Time::ZERO,
        };
        let patch = status_patch(&current, &[c], |_| "2026-01-01T00:00:00Z".into());
        let list = patch["status"]["conditions"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["type"], "Accepted");
        assert_eq!(list[1]["status"], "True");
        assert_eq!(list[1]["reason"], "CapacityIsFound");
    }
}
