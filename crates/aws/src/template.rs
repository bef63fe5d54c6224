//! Node templates for scale-from-zero: which ASGs this cluster owns, and what a new
//! node of an owned ASG looks like (shape from the catalog, labels, taints and
//! resources from tags, zones, purchase option, price). Pure functions over tag maps
//! and an instance type: no AWS calls here, so every rule is unit-tested.
//!
//! A bad tag never fails the group: it is skipped with a warning. A group without a
//! usable instance type is skipped with a warning by the caller.

use crate::config::{AutoDiscoverySpec, StaticGroup};
use model::{
    parse_quantity, Labels, NodeGroupId, NodeGroupSpec, NodeShape, PurchaseOption, Region, Taint,
    Zone,
};
use std::collections::BTreeMap;

/// The seed's ownership tag: `KubernetesCluster=<cluster>`.
pub const TAG_SEED_CLUSTER: &str = "KubernetesCluster";
/// The seed's role tags, either of which must be one of [`SEED_ROLES`].
pub const TAG_SEED_ROLES: [&str; 2] = ["Role", "KubernetesRole"];
pub const SEED_ROLES: [&str; 3] = ["worker", "kubernetes-minion", "minion"];
/// CA's ownership tags: this one plus `k8s.io/cluster-autoscaler/<cluster>`.
pub const TAG_CA_ENABLED: &str = "k8s.io/cluster-autoscaler/enabled";
pub const TAG_CA_CLUSTER_PREFIX: &str = "k8s.io/cluster-autoscaler/";
/// CA's scale-from-zero template tags.
pub const TAG_TEMPLATE_LABEL: &str = "k8s.io/cluster-autoscaler/node-template/label/";
pub const TAG_TEMPLATE_TAINT: &str = "k8s.io/cluster-autoscaler/node-template/taint/";
pub const TAG_TEMPLATE_RESOURCES: &str = "k8s.io/cluster-autoscaler/node-template/resources/";
/// The seed's label tags: `kube/<key>=<value>`.
pub const TAG_SEED_LABEL: &str = "kube/";

/// Why the adapter manages an ASG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Named by `--nodes`; min and max come from the flag.
    Static(StaticGroup),
    /// `KubernetesCluster=<cluster>` and a worker role tag.
    SeedTags,
    /// `k8s.io/cluster-autoscaler/enabled` and `k8s.io/cluster-autoscaler/<cluster>`.
    ClusterAutoscalerTags,
    /// Matches the n-th `--node-group-auto-discovery` spec.
    AutoDiscovery(usize),
}

/// Whether this cluster owns the ASG, and why. With an empty cluster name the tag
/// styles match nothing (the seed managed every ASG in that case; never again).
pub fn ownership(
    name: &str,
    tags: &BTreeMap<String, String>,
    cluster: &str,
    static_groups: &[StaticGroup],
    specs: &[AutoDiscoverySpec],
) -> Option<Ownership> {
    if let Some(group) = static_groups.iter().find(|g| g.name == name) {
        return Some(Ownership::Static(group.clone()));
    }
    if !cluster.is_empty() {
        let seed_role = TAG_SEED_ROLES.iter().any(|key| {
            tags.get(*key)
                .is_some_and(|v| SEED_ROLES.contains(&v.trim()))
        });
        if tags
            .get(TAG_SEED_CLUSTER)
            .is_some_and(|v| v.trim() == cluster)
            && seed_role
        {
            return Some(Ownership::SeedTags);
        }
        if tags.contains_key(TAG_CA_ENABLED)
            && tags.contains_key(&format!("{TAG_CA_CLUSTER_PREFIX}{cluster}"))
        {
            return Some(Ownership::ClusterAutoscalerTags);
        }
    }
    specs
        .iter()
        .position(|spec| !spec.tags.is_empty() && spec.matches(tags))
        .map(Ownership::AutoDiscovery)
}

/// Everything but the ASG's own data that a template needs.
#[derive(Debug, Clone)]
pub struct TemplateInputs<'a> {
    pub name: &'a str,
    pub region: &'a Region,
    pub region_rank: u32,
    pub tags: &'a BTreeMap<String, String>,
    pub zones: Vec<Zone>,
    pub min_size: u32,
    pub max_size: u32,
    pub instance_type: &'a str,
    pub purchase: PurchaseOption,
    pub max_pods: u32,
    pub prices: &'a BTreeMap<String, f64>,
}

/// Spot capacity costs about this share of on-demand (a stated approximation; a price
/// override per group or type replaces it).
pub const SPOT_PRICE_FACTOR: f64 = 0.35;

/// Builds a group's spec, or says why it cannot be built. Warnings about skipped tags
/// are appended to `warnings`.
pub fn build_spec(
    inputs: &TemplateInputs<'_>,
    warnings: &mut Vec<String>,
) -> Result<NodeGroupSpec, String> {
    let name = inputs.name;
    if inputs.instance_type.is_empty() {
        return Err(format!("group {name}: no instance type (launch template, launch configuration or mixed-instances override)"));
    }
    let hardware = catalog::lookup(inputs.instance_type).ok_or_else(|| {
        format!(
            "group {name}: instance type {:?} is not in the catalog",
            inputs.instance_type
        )
    })?;
    if inputs.zones.is_empty() {
        return Err(format!("group {name}: no availability zones"));
    }
    let (labels, taints, resources, max_pods) =
        template_tags(name, inputs.tags, inputs.max_pods, warnings);
    let mut shape = NodeShape::for_instance(
        model::InstanceTypeName::new(inputs.instance_type),
        hardware.arch.label(),
        hardware.vcpus,
        hardware.memory_mib,
        hardware.gpus,
        max_pods,
    );
    for (resource, amount) in resources {
        apply_resource(&mut shape, &resource, amount);
    }
    // The capacity-type label wins over the purchase option only when a tag sets it.
    let mut purchase = inputs.purchase;
    if let Some(value) = labels.get(model::well_known::LABEL_CAPACITY_TYPE) {
        purchase = if value.eq_ignore_ascii_case("SPOT") {
            PurchaseOption::Spot
        } else {
            PurchaseOption::OnDemand
        };
    }
    let price_per_hour = inputs
        .prices
        .get(name)
        .or_else(|| inputs.prices.get(inputs.instance_type))
        .copied()
        .or_else(|| {
            catalog::on_demand_price_usd_per_hour(inputs.instance_type).map(|p| {
                if purchase == PurchaseOption::Spot {
                    p * SPOT_PRICE_FACTOR
                } else {
                    p
                }
            })
        });
    Ok(NodeGroupSpec {
        id: NodeGroupId::new(name),
        region: inputs.region.clone(),
        zones: inputs.zones.clone(),
        shape,
        min_size: inputs.min_size,
        max_size: inputs.max_size,
        labels,
        taints,
        purchase,
        price_per_hour,
        region_rank: inputs.region_rank,
        capacity_rebalance: false,
    })
}

/// Sets one resource of a template to `amount` in capacity, moving allocatable by
/// the same difference (so the kubelet reserve stays subtracted).
fn apply_resource(shape: &mut NodeShape, resource: &str, amount: i64) {
    let capacity = &mut shape.capacity;
    let allocatable = &mut shape.allocatable;
    let (old, slot_cap, slot_alloc): (i64, Option<&mut i64>, Option<&mut i64>) = match resource {
        "cpu" => (
            capacity.cpu_millis,
            Some(&mut capacity.cpu_millis),
            Some(&mut allocatable.cpu_millis),
        ),
        "memory" => (
            capacity.memory_bytes,
            Some(&mut capacity.memory_bytes),
            Some(&mut allocatable.memory_bytes),
        ),
        "ephemeral-storage" => (
            capacity.ephemeral_storage_bytes,
            Some(&mut capacity.ephemeral_storage_bytes),
            Some(&mut allocatable.ephemeral_storage_bytes),
        ),
        "pods" => (
            capacity.pods,
            Some(&mut capacity.pods),
            Some(&mut allocatable.pods),
        ),
        _ => (capacity.extended(resource), None, None),
    };
    let delta = amount - old;
    match (slot_cap, slot_alloc) {
        (Some(cap), Some(alloc)) => {
            *cap = amount;
            *alloc = (*alloc + delta).max(0);
        }
        _ => {
            capacity.set_extended(resource, amount);
            let new_alloc = (allocatable.extended(resource) + delta).max(0);
            allocatable.set_extended(resource, new_alloc);
        }
    }
}

/// Labels, taints, resource overrides and max pods from an ASG's tags. Bad tags are
/// skipped with a warning naming the tag.
pub fn template_tags(
    group: &str,
    tags: &BTreeMap<String, String>,
    default_max_pods: u32,
    warnings: &mut Vec<String>,
) -> (Labels, Vec<Taint>, Vec<(String, i64)>, u32) {
    let mut labels = Labels::new();
    let mut taints: Vec<Taint> = Vec::new();
    let mut resources = Vec::new();
    let mut max_pods = default_max_pods;
    let mut skip = |key: &str, value: &str, why: String| {
        warnings.push(format!("group {group}: skipped tag {key}={value:?}: {why}"));
    };
    // Seed labels first so CA's tags win on a conflict.
    for prefix in [TAG_SEED_LABEL, TAG_TEMPLATE_LABEL] {
        for (key, value) in tags.iter().filter(|(k, _)| k.starts_with(prefix)) {
            let label = &key[prefix.len()..];
            match validate_label(label, value) {
                Ok(()) => {
                    labels.insert(label.to_owned(), value.trim().to_owned());
                }
                Err(why) => skip(key, value, why),
            }
        }
    }
    for (key, value) in tags
        .iter()
        .filter(|(k, _)| k.starts_with(TAG_TEMPLATE_TAINT))
    {
        let taint_key = &key[TAG_TEMPLATE_TAINT.len()..];
        if let Err(why) = validate_label_key(taint_key) {
            skip(key, value, format!("bad taint key: {why}"));
            continue;
        }
        if !value.contains(':') {
            skip(key, value, "expected <value>:<Effect> with Effect one of NoSchedule, PreferNoSchedule, NoExecute".into());
            continue;
        }
        match Taint::parse(&format!("{taint_key}={value}")) {
            Ok(taint) => match validate_label_value(&taint.value) {
                Ok(()) => {
                    taints.retain(|t| !(t.key == taint.key && t.effect == taint.effect));
                    taints.push(taint);
                }
                Err(why) => skip(key, value, format!("bad taint value: {why}")),
            },
            Err(e) => skip(key, value, e.to_string()),
        }
    }
    for (key, value) in tags
        .iter()
        .filter(|(k, _)| k.starts_with(TAG_TEMPLATE_RESOURCES))
    {
        let resource = &key[TAG_TEMPLATE_RESOURCES.len()..];
        if let Err(why) = validate_label_key(resource) {
            skip(key, value, format!("bad resource name: {why}"));
            continue;
        }
        match parse_quantity(value) {
            Ok(q) if q.milli_value() < 0 => skip(key, value, "negative quantity".into()),
            Ok(q) => {
                let amount = if resource == "cpu" {
                    q.milli_value()
                } else {
                    q.value()
                };
                if resource == "pods" {
                    max_pods = u32::try_from(amount).unwrap_or(u32::MAX);
                }
                resources.push((resource.to_owned(), amount));
            }
            Err(e) => skip(key, value, e.to_string()),
        }
    }
    (labels, taints, resources, max_pods)
}

/// A Kubernetes label key: `[prefix/]name`, prefix a DNS subdomain of at most 253
/// characters, name at most 63 alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let ok = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !ok {
            return Err(format!(
                "prefix {prefix:?} of {key:?} is not a DNS subdomain"
            ));
        }
    }
    if name.is_empty() {
        return Err(format!("{key:?} has an empty name"));
    }
    check_name_chars(name).map_err(|why| format!("name of {key:?} {why}"))
}

/// A Kubernetes label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`,
/// starting and ending alphanumeric.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(());
    }
    check_name_chars(value).map_err(|why| format!("value {value:?} {why}"))
}

fn validate_label(key: &str, value: &str) -> Result<(), String> {
    validate_label_key(key)?;
    validate_label_value(value)
}

fn check_name_chars(text: &str) -> Result<(), String> {
    if text.len() > 63 {
        return Err("is longer than 63 characters".into());
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("has characters other than alphanumerics, '-', '_' and '.'".into());
    }
    let first_last_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if !first_last_ok(text.as_bytes().first()) || !first_last_ok(text.as_bytes().last()) {
        return Err("must start and end with an alphanumeric character".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::TaintEffect;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ownership_by_each_style() {
        let none: [StaticGroup; 0] = [];
        let seed = tags(&[("KubernetesCluster", "prod"), ("Role", "minion")]);
        assert_eq!(
            ownership("a", &seed, "prod", &none, &[]),
            Some(Ownership::SeedTags)
        );
        assert_eq!(
            ownership("a", &seed, "staging", &none, &[]),
            None,
            "other cluster"
        );
        assert_eq!(
            ownership("a", &seed, "", &none, &[]),
            None,
            "no cluster name owns nothing"
        );
        let seed_k = tags(&[("KubernetesCluster", "prod"), ("KubernetesRole", "worker")]);
        assert_eq!(
            ownership("a", &seed_k, "prod", &none, &[]),
            Some(Ownership::SeedTags)
        );
        let master = tags(&[("KubernetesCluster", "prod"), ("Role", "master")]);
        assert_eq!(
            ownership("a", &master, "prod", &none, &[]),
            None,
            "masters are never owned"
        );
        let ca = tags(&[
            ("k8s.io/cluster-autoscaler/enabled", "true"),
            ("k8s.io/cluster-autoscaler/prod", "owned"),
        ]);
        assert_eq!(
            ownership("a", &ca, "prod", &none, &[]),
            Some(Ownership::ClusterAutoscalerTags)
        );
        assert_eq!(ownership("a", &ca, "other", &none, &[]), None);
        let only_enabled = tags(&[("k8s.io/cluster-autoscaler/enabled", "true")]);
        assert_eq!(ownership("a", &only_enabled, "prod", &none, &[]), None);
        let statics = [StaticGroup {
            min: 1,
            max: 3,
            name: "a".into(),
        }];
        assert_eq!(
            ownership("a", &tags(&[]), "prod", &statics, &[]),
            Some(Ownership::Static(statics[0].clone()))
        );
        let spec = crate::config::parse_auto_discovery("asg:tag=team=batch").unwrap();
        assert_eq!(
            ownership("b", &tags(&[("team", "batch")]), "prod", &statics, &[spec]),
            Some(Ownership::AutoDiscovery(0))
        );
    }

    #[test]
    fn labels_taints_and_resources_from_tags() {
        let t = tags(&[
            ("kube/team", "ml"),
            (
                "k8s.io/cluster-autoscaler/node-template/label/node.example.com/pool",
                "gpu",
            ),
            (
                "k8s.io/cluster-autoscaler/node-template/label/team",
                "research",
            ),
            (
                "k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu",
                "present:NoSchedule",
            ),
            (
                "k8s.io/cluster-autoscaler/node-template/taint/dedicated",
                ":NoExecute",
            ),
            (
                "k8s.io/cluster-autoscaler/node-template/resources/ephemeral-storage",
                "100Gi",
            ),
            (
                "k8s.io/cluster-autoscaler/node-template/resources/example.com/fpga",
                "2",
            ),
            ("Name", "ignored"),
        ]);
        let mut warnings = vec![];
        let (labels, taints, resources, max_pods) = template_tags("g", &t, 110, &mut warnings);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            labels.get("team"),
            Some("research"),
            "CA's tag wins over the seed's"
        );
        assert_eq!(labels.get("node.example.com/pool"), Some("gpu"));
        assert_eq!(
            taints,
            vec![
                Taint::new("dedicated", "", TaintEffect::NoExecute),
                Taint::new("nvidia.com/gpu", "present", TaintEffect::NoSchedule)
            ]
        );
        assert_eq!(
            resources,
            vec![
                ("ephemeral-storage".to_owned(), 100 << 30),
                ("example.com/fpga".to_owned(), 2)
            ]
        );
        assert_eq!(max_pods, 110);
    }

    #[test]
    fn malformed_tags_are_skipped_with_a_warning() {
        let t = tags(&[
            ("k8s.io/cluster-autoscaler/node-template/label/bad key", "x"),
            (
                "k8s.io/cluster-autoscaler/node-template/label/ok",
                "not ok!",
            ),
            ("k8s.io/cluster-autoscaler/node-template/label/good", "yes"),
            (
                "k8s.io/cluster-autoscaler/node-template/taint/novalue",
                "NoSchedule",
            ),
            (
                "k8s.io/cluster-autoscaler/node-template/taint/badeffect",
                "x:Sometimes",
            ),
            (
                "k8s.io/cluster-autoscaler/node-template/resources/memory",
                "lots",
            ),
            (
                "k8s.io/cluster-autoscaler/node-template/resources/cpu",
                "-2",
            ),
            (
                "k8s.io/cluster-autoscaler/node-template/resources/pods",
                "58",
            ),
            ("kube/", "empty"),
        ]);
        let mut warnings = vec![];
        let (labels, taints, resources, max_pods) = template_tags("g", &t, 110, &mut warnings);
        assert_eq!(labels.len(), 1, "{labels:?}");
        assert!(taints.is_empty());
        assert_eq!(resources, vec![("pods".to_owned(), 58)]);
        assert_eq!(max_pods, 58);
        assert_eq!(warnings.len(), 7, "{warnings:#?}");
        assert!(
            warnings
                .iter()
                .all(|w| w.starts_with("group g: skipped tag k8s.io/") || w.contains("kube/")),
            "{warnings:#?}"
        );
    }

    #[test]
    fn specs_from_the_catalog_with_gpu_price_and_spot() {
        let region = Region::new("us-east-1");
        let prices = BTreeMap::new();
        let t = tags(&[(
            "k8s.io/cluster-autoscaler/node-template/label/accelerator",
            "v100",
        )]);
        let inputs = TemplateInputs {
            name: "gpu",
            region: &region,
            region_rank: 1,
            tags: &t,
            zones: vec![Zone::new("us-east-1a")],
            min_size: 0,
            max_size: 4,
            instance_type: "p3dn.24xlarge",
            purchase: PurchaseOption::OnDemand,
            max_pods: 110,
            prices: &prices,
        };
        let mut warnings = vec![];
        let spec = build_spec(&inputs, &mut warnings).unwrap();
        assert_eq!(spec.shape.capacity.gpus(), 8);
        assert_eq!(spec.shape.allocatable.gpus(), 8);
        assert_eq!(spec.shape.capacity.cpu_millis, 96_000);
        assert_eq!(spec.region_rank, 1);
        assert!(spec.price_per_hour.is_some_and(|p| p > 1.0));
        let spot = build_spec(
            &TemplateInputs {
                purchase: PurchaseOption::Spot,
                instance_type: "m5.large",
                ..inputs.clone()
            },
            &mut warnings,
        )
        .unwrap();
        assert_eq!(spot.purchase, PurchaseOption::Spot);
        assert!((spot.price_per_hour.unwrap() - 0.096 * SPOT_PRICE_FACTOR).abs() < 1e-9);
        let mut overrides = BTreeMap::new();
        overrides.insert("m5.large".to_owned(), 0.01);
        let priced = build_spec(
            &TemplateInputs {
                prices: &overrides,
                instance_type: "m5.large",
                ..inputs.clone()
            },
            &mut warnings,
        )
        .unwrap();
        assert_eq!(priced.price_per_hour, Some(0.01));
        assert!(build_spec(
            &TemplateInputs {
                instance_type: "m5.huge",
                ..inputs.clone()
            },
            &mut warnings
        )
        .unwrap_err()
        .contains("not in the catalog"));
        assert!(build_spec(
            &TemplateInputs {
                instance_type: "",
                ..inputs.clone()
            },
            &mut warnings
        )
        .unwrap_err()
        .contains("no instance type"));
        assert!(warnings.is_empty());
    }

    #[test]
    fn resource_tags_move_capacity_and_allocatable_together() {
        let mut shape = NodeShape::for_instance(
            model::InstanceTypeName::new("m5.large"),
            "amd64",
            2,
            8192,
            0,
            110,
        );
        let reserve = shape.capacity.memory_bytes - shape.allocatable.memory_bytes;
        apply_resource(&mut shape, "memory", 4 << 30);
        assert_eq!(shape.capacity.memory_bytes, 4 << 30);
        assert_eq!(
            shape.capacity.memory_bytes - shape.allocatable.memory_bytes,
            reserve
        );
        apply_resource(&mut shape, "nvidia.com/gpu", 1);
        assert_eq!((shape.capacity.gpus(), shape.allocatable.gpus()), (1, 1));
    }
}
