//! Auto Scaling calls and the adapter's plain view of an ASG ([`Asg`]): paginated
//! discovery queries, one-group reads, launch configurations, scaling activities and
//! tag writes. Each function makes the call, classifies a failure into `AwsError`
//! and converts SDK types into plain data; decisions are made by the caller.

use crate::activities::{zone_from_details, ActivityView};
use crate::client::RegionClients;
use crate::error::{from_sdk, AwsError};
use aws_sdk_autoscaling::types::{AutoScalingGroup, Filter, LifecycleState, Tag};
use model::{InstanceId, InstanceState, Zone};
use std::collections::BTreeMap;

/// AWS's largest page for DescribeAutoScalingGroups and DescribeScalingActivities.
const PAGE_SIZE: i32 = 100;
/// AWS accepts at most this many names in one DescribeAutoScalingGroups /
/// DescribeLaunchConfigurations call.
pub(crate) const NAMES_PER_CALL: usize = 50;
/// Most pages of scaling activities read per group per pass (newest first).
const MAX_ACTIVITY_PAGES: usize = 5;

/// A launch template reference (by id or name, with a version such as `3`,
/// `$Latest` or `$Default`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TemplateRef {
    pub id: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
}

/// A mixed-instances policy, as much as templates need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MixedPolicy {
    pub template: Option<TemplateRef>,
    /// Instance types of the overrides, in priority order (overrides without a type,
    /// e.g. attribute-based ones, are left out).
    pub override_types: Vec<String>,
    pub has_instance_requirements: bool,
    pub on_demand_base: i32,
    pub on_demand_percentage_above_base: i32,
}

/// One instance of an ASG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AsgInstance {
    pub id: InstanceId,
    pub zone: Zone,
    pub state: InstanceState,
}

/// An ASG as the adapter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Asg {
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub min_size: u32,
    pub max_size: u32,
    pub desired: u32,
    pub zones: Vec<Zone>,
    pub instances: Vec<AsgInstance>,
    pub launch_configuration: Option<String>,
    pub launch_template: Option<TemplateRef>,
    pub mixed: Option<MixedPolicy>,
    pub protected_from_scale_in: bool,
    /// Capacity Rebalancing: the ASG replaces spot instances at risk by itself.
    pub capacity_rebalance: bool,
}

fn non_negative(value: Option<i32>) -> u32 {
    value.unwrap_or(0).max(0) as u32
}

fn lifecycle(state: Option<&LifecycleState>) -> InstanceState {
    let text = state.map(|s| s.as_str()).unwrap_or("");
    if text.starts_with("Pending") || text.starts_with("Warmed:Pending") {
        InstanceState::Pending
    } else if text.starts_with("Terminat")
        || text.starts_with("Detach")
        || text.starts_with("Warmed:Terminat")
    {
        InstanceState::Terminating
    } else {
        InstanceState::InService
    }
}

fn template_ref(spec: &aws_sdk_autoscaling::types::LaunchTemplateSpecification) -> TemplateRef {
    TemplateRef {
        id: spec.launch_template_id().map(str::to_owned),
        name: spec.launch_template_name().map(str::to_owned),
        version: spec.version().map(str::to_owned),
    }
}

impl Asg {
    /// Converts the SDK's type; `None` for a group without a name (never seen, but
    /// the field is optional in the model).
    pub(crate) fn from_sdk(group: &AutoScalingGroup) -> Option<Self> {
        let name = group.auto_scaling_group_name()?.to_owned();
        let tags = group
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned())))
            .collect();
        let instances = group
            .instances()
            .iter()
            .filter_map(|i| {
                Some(AsgInstance {
                    id: InstanceId::new(i.instance_id()?),
                    zone: Zone::new(i.availability_zone().unwrap_or("")),
                    state: lifecycle(i.lifecycle_state()),
                })
            })
            .collect();
        let mixed = group.mixed_instances_policy().map(|policy| {
            let template = policy.launch_template();
            let overrides = template.map(|t| t.overrides()).unwrap_or_default();
            let distribution = policy.instances_distribution();
            MixedPolicy {
                template: template
                    .and_then(|t| t.launch_template_specification())
                    .map(template_ref),
                override_types: overrides
                    .iter()
                    .filter_map(|o| o.instance_type().map(str::to_owned))
                    .collect(),
                has_instance_requirements: overrides
                    .iter()
                    .any(|o| o.instance_requirements().is_some()),
                on_demand_base: distribution
                    .and_then(|d| d.on_demand_base_capacity())
                    .unwrap_or(0),
                on_demand_percentage_above_base: distribution
                    .and_then(|d| d.on_demand_percentage_above_base_capacity())
                    .unwrap_or(100),
            }
        });
        Some(Self {
            name,
            tags,
            min_size: non_negative(group.min_size()),
            max_size: non_negative(group.max_size()),
            desired: non_negative(group.desired_capacity()),
            zones: group
                .availability_zones()
                .iter()
                .map(|z| Zone::new(z.as_str()))
                .collect(),
            instances,
            launch_configuration: group.launch_configuration_name().map(str::to_owned),
            launch_template: group.launch_template().map(template_ref),
            mixed,
            protected_from_scale_in: group
                .new_instances_protected_from_scale_in()
                .unwrap_or(false),
            capacity_rebalance: group.capacity_rebalance().unwrap_or(false),
        })
    }
}

/// A discovery query: by tag filter, or by names.
#[derive(Debug, Clone)]
pub(crate) enum Query {
    /// `tag:<key>` = value.
    TagValue(String, String),
    /// `tag-key` = key.
    TagKey(String),
    /// Up to [`NAMES_PER_CALL`] names.
    Names(Vec<String>),
}

/// DescribeAutoScalingGroups for one query, every page.
pub(crate) async fn describe_groups(
    clients: &RegionClients,
    query: &Query,
) -> Result<Vec<Asg>, AwsError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut request = clients
            .autoscaling
            .describe_auto_scaling_groups()
            .max_records(PAGE_SIZE)
            .set_next_token(token.clone());
        request = match query {
            Query::TagValue(key, value) => request.filters(
                Filter::builder()
                    .name(format!("tag:{key}"))
                    .values(value)
                    .build(),
            ),
            Query::TagKey(key) => {
                request.filters(Filter::builder().name("tag-key").values(key).build())
            }
            Query::Names(names) => request.set_auto_scaling_group_names(Some(names.clone())),
        };
        let page = request.send().await.map_err(|e| {
            from_sdk(&clients.region, "DescribeAutoScalingGroups", e, || {
                format!("Auto Scaling groups ({query:?})")
            })
        })?;
        out.extend(page.auto_scaling_groups().iter().filter_map(Asg::from_sdk));
        match page.next_token() {
            Some(next) if !next.is_empty() && Some(next) != token.as_deref() => {
                token = Some(next.to_owned())
            }
            _ => return Ok(out),
        }
    }
}

/// DescribeAutoScalingGroups for one group by name.
pub(crate) async fn describe_group(
    clients: &RegionClients,
    name: &str,
) -> Result<Option<Asg>, AwsError> {
    let groups = describe_groups(clients, &Query::Names(vec![name.to_owned()])).await?;
    Ok(groups.into_iter().find(|g| g.name == name))
}

/// A launch configuration's instance type and whether it bids for spot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LaunchConfigurationInfo {
    pub instance_type: Option<String>,
    pub spot: bool,
}

/// DescribeLaunchConfigurations by name (at most [`NAMES_PER_CALL`]).
pub(crate) async fn describe_launch_configurations(
    clients: &RegionClients,
    names: &[String],
) -> Result<BTreeMap<String, LaunchConfigurationInfo>, AwsError> {
    let mut out = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = clients
            .autoscaling
            .describe_launch_configurations()
            .set_launch_configuration_names(Some(names.to_vec()))
            .max_records(PAGE_SIZE)
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| {
                from_sdk(&clients.region, "DescribeLaunchConfigurations", e, || {
                    format!("launch configurations {names:?}")
                })
            })?;
        for lc in page.launch_configurations() {
            if let Some(name) = lc.launch_configuration_name() {
                out.insert(
                    name.to_owned(),
                    LaunchConfigurationInfo {
                        instance_type: lc
                            .instance_type()
                            .map(str::to_owned)
                            .filter(|t| !t.is_empty()),
                        spot: lc.spot_price().is_some_and(|p| !p.is_empty()),
                    },
                );
            }
        }
        match page.next_token() {
            Some(next) if !next.is_empty() && Some(next) != token.as_deref() => {
                token = Some(next.to_owned())
            }
            _ => return Ok(out),
        }
    }
}

/// DescribeScalingActivities of one group, newest first, until an activity at or
/// before `cutoff_ms` is seen (or [`MAX_ACTIVITY_PAGES`] pages).
pub(crate) async fn describe_activities(
    clients: &RegionClients,
    group: &str,
    cutoff_ms: u64,
) -> Result<Vec<ActivityView>, AwsError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_ACTIVITY_PAGES {
        let page = clients
            .autoscaling
            .describe_scaling_activities()
            .auto_scaling_group_name(group)
            .max_records(PAGE_SIZE)
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| {
                from_sdk(&clients.region, "DescribeScalingActivities", e, || {
                    format!("Auto Scaling group {group}")
                })
            })?;
        let mut reached_cutoff = false;
        for activity in page.activities() {
            let Some(id) = activity.activity_id() else {
                continue;
            };
            let start_ms = activity
                .start_time()
                .and_then(|t| t.to_millis().ok())
                .unwrap_or(0)
                .max(0) as u64;
            reached_cutoff |= start_ms <= cutoff_ms;
            out.push(ActivityView {
                id: id.to_owned(),
                start_ms,
                status: activity
                    .status_code()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                message: activity
                    .status_message()
                    .or(activity.description())
                    .unwrap_or("")
                    .to_owned(),
                zone: activity.details().and_then(zone_from_details),
            });
        }
        match page.next_token() {
            Some(next) if !reached_cutoff && !next.is_empty() && Some(next) != token.as_deref() => {
                token = Some(next.to_owned())
            }
            _ => break,
        }
    }
    Ok(out)
}

/// CreateOrUpdateTags on groups (never propagated to instances).
pub(crate) async fn put_tags(
    clients: &RegionClients,
    tags: &[(String, String, String)],
) -> Result<(), AwsError> {
    if tags.is_empty() {
        return Ok(());
    }
    let mut request = clients.autoscaling.create_or_update_tags();
    for (group, key, value) in tags {
        let tag = Tag::builder()
            .resource_id(group)
            .resource_type("auto-scaling-group")
            .key(key)
            .value(value)
            .propagate_at_launch(false)
            .build();
        request = request.tags(tag);
    }
    request.send().await.map(|_| ()).map_err(|e| {
        from_sdk(&clients.region, "CreateOrUpdateTags", e, || {
            format!(
                "tags of {:?}",
                tags.iter().map(|t| &t.0).collect::<Vec<_>>()
            )
        })
    })
}

/// SetDesiredCapacity with HonorCooldown=false.
pub(crate) async fn set_desired_capacity(
    clients: &RegionClients,
    group: &str,
    desired: u32,
) -> Result<(), AwsError> {
    let desired = i32::try_from(desired).map_err(|_| AwsError::Rejected {
        operation: "SetDesiredCapacity",
        message: format!("desired capacity {desired} is too large"),
    })?;
    clients
        .autoscaling
        .set_desired_capacity()
        .auto_scaling_group_name(group)
        .desired_capacity(desired)
        .honor_cooldown(false)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            from_sdk(&clients.region, "SetDesiredCapacity", e, || {
                format!("Auto Scaling group {group}")
            })
        })
}

/// TerminateInstanceInAutoScalingGroup with ShouldDecrementDesiredCapacity=true.
/// DetachInstances of one instance, decrementing the desired capacity: the instance
/// keeps running outside the group (until EC2 takes it back), and the group does not
/// replace it.
pub(crate) async fn detach_instance(
    clients: &RegionClients,
    group: &str,
    instance: &InstanceId,
) -> Result<(), AwsError> {
    clients
        .autoscaling
        .detach_instances()
        .auto_scaling_group_name(group)
        .instance_ids(instance.as_str())
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            from_sdk(&clients.region, "DetachInstances", e, || {
                format!("instance {instance} of {group}")
            })
        })
}

pub(crate) async fn terminate_instance(
    clients: &RegionClients,
    instance: &InstanceId,
) -> Result<(), AwsError> {
    clients
        .autoscaling
        .terminate_instance_in_auto_scaling_group()
        .instance_id(instance.as_str())
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            from_sdk(
                &clients.region,
                "TerminateInstanceInAutoScalingGroup",
                e,
                || format!("instance {instance}"),
            )
        })
}
