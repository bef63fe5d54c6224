//! The AWS adapter: the cluster's EC2 Auto Scaling Groups in every configured region,
//! as the planner's node groups.
//!
//! [`AwsNodeGroups`] discovers the groups this cluster owns (the seed's tags, Cluster
//! Autoscaler's tags, `--node-group-auto-discovery` specs and `--nodes`), builds
//! their scale-from-zero templates, lists their instances, grows them with
//! SetDesiredCapacity, shrinks them only by terminating a chosen instance, reports
//! failed launches from scaling activities, and persists pool backoffs on the groups.
//!
//! This crate owns every AWS call of the project; it must never touch an ASG that
//! the cluster does not own (checked again right before every write), never set a
//! desired capacity below the instances the group has live in the fresh read made
//! right before the write (AWS would pick the victim: refused as
//! [`AwsError::BelowLiveInstances`]), never log a secret, and
//! never panic or fail a whole refresh because of one bad group. It knows nothing of
//! Kubernetes. The AWS actions it can call are [`AwsNodeGroups::called_actions`].
//!
//! Driving order: `connect`, `load_backoffs` (seed the planner), then per loop
//! `launch_failures` and `refresh` (build the snapshot), carry out actions with
//! `set_target_size`, `terminate_instance`, `detach_instance` and `persist_backoff`.
//!
//! Interruptions: [`InterruptionQueue`] long-polls the SQS queue users route EC2 and
//! AWS Health EventBridge events into (`--interruption-queue`), and
//! [`parse_interruption_message`] turns each body into `model::InterruptionNotice`s.
//!
//! Time: the `now` arguments are [`model::Time`] on the production axis, Unix
//! milliseconds (scaling activities are compared with it).

mod activities;
mod asg;
mod backoff;
mod client;
pub mod config;
pub mod ec2;
mod error;
mod events;
mod signed;
pub mod sqs;
mod template;
pub mod xml;

pub use activities::{classify as classify_launch_failure, TAG_ACTIVITY_MARKER};
pub use backoff::TAG_BACKOFF_PREFIX;
pub use client::sdk_http_client;
pub use config::{
    parse_auto_discovery, parse_static_group, AwsConfig, ConfigError, Credentials, RetrySettings,
    StaticGroup,
};
pub use error::AwsError;
pub use events::{parse_interruption_message, EventError, ParsedMessage};
pub use sqs::{InterruptionQueue, QueueMessage};
pub use template::{validate_label_key, validate_label_value, SPOT_PRICE_FACTOR};

use asg::{Asg, Query, TemplateRef};
use client::RegionClients;
use config::AutoDiscoverySpec;
use ec2::LaunchTemplateData;
use model::{
    InstanceId, InstanceState, InstanceView, LaunchFailure, LaunchFailureKind, NodeGroupId,
    NodeGroupSpec, NodeGroupState, PurchaseOption, Time, Zone,
};
use std::collections::{BTreeMap, BTreeSet};
use template::Ownership;

/// What one [`AwsNodeGroups::refresh`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Refresh {
    /// Owned groups with a usable template, ordered by region preference, then name.
    pub groups: Vec<NodeGroupState>,
    /// Groups skipped and why, tags ignored, advisories (scale-in protection off,
    /// mixed shapes), groups reported unhealthy. Event-ready sentences.
    pub warnings: Vec<String>,
}

/// Consecutive AWS failures after which a group is reported unhealthy.
const UNHEALTHY_AFTER: u32 = 3;
/// How long a `$Latest` / `$Default` launch template resolution is reused.
const MOVING_TEMPLATE_TTL_MS: u64 = 60_000;

/// The adapter. See the crate docs for the calling order.
pub struct AwsNodeGroups {
    config: AwsConfig,
    specs: Vec<AutoDiscoverySpec>,
    regions: Vec<RegionClients>,
    /// Owned groups as of the last refresh.
    owned: BTreeMap<NodeGroupId, OwnedGroup>,
    /// When each instance was first seen (DescribeAutoScalingGroups has no launch time).
    first_seen: BTreeMap<InstanceId, Time>,
    launch_configurations: BTreeMap<(usize, String), asg::LaunchConfigurationInfo>,
    launch_templates: BTreeMap<(usize, TemplateRef), (LaunchTemplateData, Time)>,
    /// Last good spec per group, used while its template cannot be read.
    last_specs: BTreeMap<NodeGroupId, NodeGroupSpec>,
    /// Each group as its region last described it, shown (frozen) while that region
    /// cannot be read.
    last_seen: BTreeMap<NodeGroupId, (NodeGroupState, OwnedGroup)>,
    markers: BTreeMap<NodeGroupId, u64>,
    /// Activities reported by this process, with their start (ms), per group.
    reported: BTreeMap<NodeGroupId, BTreeMap<String, u64>>,
    consecutive_failures: BTreeMap<NodeGroupId, u32>,
    /// One-time advisories already given.
    advised: BTreeSet<String>,
    /// Warnings from calls that return no warnings, handed out by the next refresh.
    pending_warnings: Vec<String>,
    /// Dry-run: scaling-activity markers stay in memory, never written as tags.
    read_only: bool,
}

impl std::fmt::Debug for AwsNodeGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsNodeGroups")
            .field("config", &self.config)
            .field("owned", &self.owned.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, Clone)]
struct OwnedGroup {
    region: usize,
    tags: BTreeMap<String, String>,
    spec: NodeGroupSpec,
}

/// Why a group has no template this time.
enum TemplateProblem {
    /// Bad data: skip with a warning until someone fixes the group.
    Skip(String),
    /// AWS failed (after retries).
    Aws(AwsError),
}

impl AwsNodeGroups {
    /// Validates the configuration and builds one client per region. Makes no AWS
    /// call (credentials are resolved on first use).
    pub async fn connect(config: AwsConfig) -> Result<Self, AwsError> {
        if config.regions.is_empty() {
            return Err(ConfigError::new("aws-regions", "at least one region is required").into());
        }
        let mut seen = BTreeSet::new();
        for region in &config.regions {
            if region.0.trim().is_empty() || !seen.insert(region.0.trim()) {
                return Err(ConfigError::new(
                    "aws-regions",
                    format!("empty or repeated region {:?}", region.0),
                )
                .into());
            }
        }
        if config.cluster_name.trim().is_empty()
            && config.static_groups.is_empty()
            && config.auto_discovery.is_empty()
        {
            return Err(ConfigError::new(
                "cluster-name",
                "required unless groups are named with --nodes or --node-group-auto-discovery",
            )
            .into());
        }
        if config.max_pods == 0 {
            return Err(ConfigError::new("max-pods", "must be at least 1").into());
        }
        if let Some((key, price)) = config
            .prices
            .iter()
            .find(|(_, p)| !(p.is_finite() && **p >= 0.0))
        {
            return Err(ConfigError::new(
                "prices",
                format!("price of {key} must be a non-negative number, got {price}"),
            )
            .into());
        }
        let specs = config
            .auto_discovery
            .iter()
            .map(|s| config::parse_auto_discovery(s))
            .collect::<Result<Vec<_>, _>>()?;
        let regions = client::connect(&config).await;
        Ok(Self {
            config,
            specs,
            regions,
            owned: BTreeMap::new(),
            first_seen: BTreeMap::new(),
            launch_configurations: BTreeMap::new(),
            launch_templates: BTreeMap::new(),
            last_specs: BTreeMap::new(),
            last_seen: BTreeMap::new(),
            markers: BTreeMap::new(),
            reported: BTreeMap::new(),
            consecutive_failures: BTreeMap::new(),
            advised: BTreeSet::new(),
            pending_warnings: Vec::new(),
            read_only: false,
        })
    }

    /// Dry-run (`--dry-run`): [`launch_failures`](Self::launch_failures) keeps its
    /// activity markers in memory instead of tagging the groups, so the adapter's
    /// reads write nothing. (The write methods are never called in dry-run.)
    pub fn set_read_only(&mut self, read_only: bool) {
        self.read_only = read_only;
    }

    /// Every AWS API action the adapter can call: the IAM policy it needs (the
    /// interruption queue's are [`InterruptionQueue::called_actions`]).
    /// `SetDesiredCapacity`, `TerminateInstanceInAutoScalingGroup`, `DetachInstances`
    /// and `CreateOrUpdateTags` can be scoped to the cluster's groups with a
    /// `aws:ResourceTag/k8s.io/cluster-autoscaler/<cluster>` condition.
    pub fn called_actions() -> &'static [&'static str] {
        &[
            "autoscaling:CreateOrUpdateTags",
            "autoscaling:DescribeAutoScalingGroups",
            "autoscaling:DetachInstances",
            "autoscaling:DescribeLaunchConfigurations",
            "autoscaling:DescribeScalingActivities",
            "autoscaling:SetDesiredCapacity",
            "autoscaling:TerminateInstanceInAutoScalingGroup",
            "ec2:DescribeLaunchTemplateVersions",
        ]
    }

    /// Maps a Node's `spec.providerID` (`aws:///us-west-2a/i-0abc…`) to its zone and
    /// instance. `None` for other clouds, Fargate and malformed ids.
    pub fn instance_for_provider_id(provider_id: &str) -> Option<(Zone, InstanceId)> {
        let rest = provider_id.strip_prefix("aws://")?;
        let rest = rest.trim_start_matches('/');
        let (zone, instance) = rest.split_once('/')?;
        let valid_zone = !zone.is_empty()
            && zone
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let hex = instance.strip_prefix("i-")?;
        let valid_instance =
            !hex.is_empty() && hex.len() <= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        (valid_zone && valid_instance).then(|| (Zone::new(zone), InstanceId::new(instance)))
    }

    /// Discovers the owned groups of every region, builds their templates and lists
    /// their instances. One bad group is skipped with a warning; a region whose groups
    /// cannot be listed (after retries) fails the whole refresh, because a snapshot
    /// missing a region's upcoming capacity could make the planner buy it twice.
    pub async fn refresh(&mut self, now: Time) -> Result<Refresh, AwsError> {
        let mut warnings = std::mem::take(&mut self.pending_warnings);
        let mut discovered: Vec<(usize, Asg, Ownership)> = Vec::new();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        // A region that cannot be read stops nothing elsewhere: a regional incident is
        // exactly when the other regions must take the overflow.
        let mut unavailable: BTreeSet<usize> = BTreeSet::new();
        let mut first_error = None;
        for index in 0..self.regions.len() {
            let found = match self.discover(index).await {
                Ok(found) => found,
                Err(error) => {
                    warnings.push(format!(
                        "region {} unavailable: {error}; its groups are shown as last seen and neither grown nor shrunk until it answers again",
                        self.regions[index].region
                    ));
                    unavailable.insert(index);
                    first_error.get_or_insert(error);
                    continue;
                }
            };
            for (asg, ownership) in found {
                if let Some(&first) = names.get(&asg.name) {
                    warnings.push(format!(
                        "group {}: also exists in region {}; only the one in {} (preferred) is managed",
                        asg.name, self.regions[index].region, self.regions[first].region
                    ));
                    continue;
                }
                names.insert(asg.name.clone(), index);
                discovered.push((index, asg, ownership));
            }
        }
        if unavailable.len() == self.regions.len() {
            if let Some(error) = first_error {
                return Err(error);
            }
        }
        for group in &self.config.static_groups {
            if !names.contains_key(&group.name) && unavailable.is_empty() {
                warnings.push(format!(
                    "group {} (from --nodes) was not found in any region",
                    group.name
                ));
            }
        }

        let mut groups = Vec::new();
        let mut owned = BTreeMap::new();
        for (index, asg, ownership) in discovered {
            let id = NodeGroupId::new(asg.name.as_str());
            let spec = match self
                .template(index, &asg, &ownership, now, &mut warnings)
                .await
            {
                Ok(spec) => {
                    self.consecutive_failures.remove(&id);
                    self.last_specs.insert(id.clone(), spec.clone());
                    spec
                }
                Err(TemplateProblem::Skip(reason)) => {
                    warnings.push(format!("{reason}; the group is skipped"));
                    continue;
                }
                Err(TemplateProblem::Aws(error)) => {
                    // Keep the group (and so its upcoming capacity) in the snapshot with
                    // the last template: dropping it could make the planner buy the same
                    // capacity elsewhere. After repeated failures it is reported unhealthy.
                    self.count_failure(&id, &error, &mut warnings);
                    match self.last_specs.get(&id) {
                        Some(previous) => {
                            warnings.push(format!("group {id}: template not refreshed ({error}); using the last known one"));
                            previous.clone()
                        }
                        _ => {
                            warnings.push(format!(
                                "group {id}: no template ({error}); the group is skipped"
                            ));
                            continue;
                        }
                    }
                }
            };
            if !asg.protected_from_scale_in {
                self.advise(
                    &mut warnings,
                    format!(
                        "group {id}: new instances are not protected from scale-in; AWS's own scale-in (a lower desired capacity, \
                         rebalancing) may terminate nodes running jobs. Enable NewInstancesProtectedFromScaleIn on the ASG; \
                         the autoscaler terminates chosen instances explicitly either way."
                    ),
                );
            }
            let instances = asg
                .instances
                .iter()
                .map(|i| {
                    let launched_at = *self.first_seen.entry(i.id.clone()).or_insert(now);
                    let zone = if i.zone.0.is_empty() {
                        spec.zones[0].clone()
                    } else {
                        i.zone.clone()
                    };
                    InstanceView {
                        id: i.id.clone(),
                        zone,
                        state: i.state,
                        launched_at,
                    }
                })
                .collect();
            let mut live_spec = spec.clone();
            live_spec.capacity_rebalance = asg.capacity_rebalance;
            let state = NodeGroupState {
                spec: live_spec,
                target: asg.desired,
                instances,
            };
            let group = OwnedGroup {
                region: index,
                tags: asg.tags.clone(),
                spec,
            };
            self.last_seen
                .insert(id.clone(), (state.clone(), group.clone()));
            groups.push(state);
            owned.insert(id, group);
        }
        // The groups of an unreadable region, as last seen, frozen (min = max = their
        // target): their nodes stay known and owned, their upcoming capacity is not
        // bought again elsewhere, and nothing is asked of a region that does not answer.
        self.last_seen
            .retain(|id, (_, group)| unavailable.contains(&group.region) || owned.contains_key(id));
        for (id, (state, group)) in &self.last_seen {
            if owned.contains_key(id) {
                continue;
            }
            let mut frozen = state.clone();
            frozen.spec.min_size = frozen.target;
            frozen.spec.max_size = frozen.target;
            groups.push(frozen);
            owned.insert(id.clone(), group.clone());
        }
        let live: BTreeSet<&InstanceId> = groups
            .iter()
            .flat_map(|g: &NodeGroupState| g.instances.iter().map(|i| &i.id))
            .collect();
        self.first_seen.retain(|id, _| live.contains(id));
        self.owned = owned;
        groups.sort_by(|a, b| {
            (a.spec.region_rank, &a.spec.id).cmp(&(b.spec.region_rank, &b.spec.id))
        });
        Ok(Refresh { groups, warnings })
    }

    /// Sets a group's desired capacity (HonorCooldown=false). Refuses groups that are
    /// not owned (re-checked on a fresh read), targets above the group's max (or
    /// below its min).
    pub async fn set_target_size(&self, group: &NodeGroupId, target: u32) -> Result<(), AwsError> {
        let (clients, asg, ownership) = self.fresh_owned(group).await?;
        let (min, max) = match &ownership {
            Ownership::Static(s) => (s.min, s.max),
            _ => (asg.min_size, asg.max_size),
        };
        if target > max {
            return Err(AwsError::Rejected {
                operation: "SetDesiredCapacity",
                message: format!("target {target} of group {group} is above its max {max}"),
            });
        }
        if target < min {
            return Err(AwsError::Rejected {
                operation: "SetDesiredCapacity",
                message: format!("target {target} of group {group} is below its min {min}"),
            });
        }
        // The last line of defence against AWS picking a victim, whatever the planner
        // asked: an instance leaves a group only by TerminateInstance or DetachInstance
        // of that very instance (both lower the desired capacity themselves).
        let live = asg
            .instances
            .iter()
            .filter(|i| matches!(i.state, InstanceState::Pending | InstanceState::InService))
            .count() as u32;
        if target < live {
            return Err(AwsError::BelowLiveInstances {
                group: group.to_string(),
                target,
                live,
            });
        }
        asg::set_desired_capacity(clients, &asg.name, target).await
    }

    /// Terminates exactly this instance and decrements the group's desired capacity.
    /// Refuses an instance that is not (any more) in the owned group; an instance
    /// already terminating is left alone (done).
    pub async fn terminate_instance(
        &self,
        group: &NodeGroupId,
        instance: &InstanceId,
    ) -> Result<(), AwsError> {
        let (clients, asg, _) = self.fresh_owned(group).await?;
        let Some(member) = asg.instances.iter().find(|i| &i.id == instance) else {
            return Err(AwsError::Unowned {
                what: format!("instance {instance}"),
                why: format!("it is not an instance of group {group}"),
            });
        };
        if member.state == InstanceState::Terminating {
            return Ok(());
        }
        asg::terminate_instance(clients, instance).await
    }

    /// Takes an interrupted instance out of its group and decrements the group's
    /// desired capacity (the instance runs on until EC2 takes it back), after
    /// re-checking that the group is ours and the instance one of its members.
    pub async fn detach_instance(
        &self,
        group: &NodeGroupId,
        instance: &InstanceId,
    ) -> Result<(), AwsError> {
        let (clients, asg, _) = self.fresh_owned(group).await?;
        let Some(member) = asg.instances.iter().find(|i| &i.id == instance) else {
            return Err(AwsError::NotFound {
                what: format!("instance {instance}"),
                message: format!("not a member of group {group} (already detached or gone)"),
            });
        };
        if member.state == InstanceState::Terminating {
            return Err(AwsError::NotFound {
                what: format!("instance {instance}"),
                message: format!("already terminating in group {group}"),
            });
        }
        asg::detach_instance(clients, group.as_str(), instance).await
    }

    /// Failed and cancelled launches since the last call (or the persisted marker),
    /// classified, one entry per group × zone × kind. The marker is stored on the ASG
    /// so a restart neither replays nor loses activities. A group whose activities
    /// cannot be read is skipped this time (a warning goes to the next refresh).
    pub async fn launch_failures(&mut self, now: Time) -> Result<Vec<LaunchFailure>, AwsError> {
        let now_ms = now.as_millis();
        let mut failures = Vec::new();
        let groups: Vec<(NodeGroupId, OwnedGroup)> = self
            .owned
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, group) in groups {
            let clients = self.regions[group.region].clone();
            let persisted = group
                .tags
                .get(TAG_ACTIVITY_MARKER)
                .and_then(|v| v.trim().parse::<u64>().ok());
            let marker = self.markers.get(&id).copied().or(persisted);
            let cutoff =
                marker.unwrap_or_else(|| now_ms.saturating_sub(activities::FIRST_LOOK_BACK_MS));
            let views = match asg::describe_activities(&clients, id.as_str(), cutoff).await {
                Ok(views) => views,
                Err(error) => {
                    let mut warnings = Vec::new();
                    self.count_failure(&id, &error, &mut warnings);
                    warnings.push(format!("group {id}: scaling activities not read: {error}"));
                    self.pending_warnings.extend(warnings);
                    continue;
                }
            };
            self.consecutive_failures.remove(&id);
            let reported = self.reported.entry(id.clone()).or_default();
            let reported_ids: BTreeSet<String> = reported.keys().cloned().collect();
            let scan = activities::scan(&views, marker, now_ms, &reported_ids);
            let mut by_pool: BTreeMap<(Option<Zone>, LaunchFailureKind), LaunchFailure> =
                BTreeMap::new();
            for activity in &scan.failed {
                reported.insert(activity.id.clone(), activity.start_ms);
                let kind = activities::classify(&activity.message);
                let zone = activity
                    .zone
                    .clone()
                    .filter(|z| group.spec.zones.contains(z))
                    .or_else(|| {
                        group
                            .spec
                            .zones
                            .iter()
                            .find(|z| activity.message.contains(&format!("({z})")))
                            .cloned()
                    });
                let entry = by_pool
                    .entry((zone.clone(), kind))
                    .or_insert_with(|| LaunchFailure {
                        group: id.clone(),
                        zone,
                        kind,
                        count: 0,
                        message: activity.message.clone(),
                        at: Time::from_millis(activity.start_ms),
                    });
                entry.count += 1;
                if activity.start_ms >= entry.at.as_millis() {
                    entry.at = Time::from_millis(activity.start_ms);
                    entry.message = activity.message.clone();
                }
            }
            reported.retain(|_, start| *start > scan.marker_ms);
            failures.extend(by_pool.into_values());
            if marker != Some(scan.marker_ms) {
                let tag = vec![(
                    id.0.clone(),
                    TAG_ACTIVITY_MARKER.to_owned(),
                    scan.marker_ms.to_string(),
                )];
                let written = if self.read_only {
                    Ok(())
                } else {
                    asg::put_tags(&clients, &tag).await
                };
                if let Err(error) = written {
                    self.pending_warnings.push(format!("group {id}: activity marker not persisted ({error}); a restart may report recent failures again"));
                }
                self.markers.insert(id, scan.marker_ms);
            }
        }
        Ok(failures)
    }

    /// Stores a pool backoff as a tag on every owned group of the pool's region that
    /// launches into the pool. `NotFound` when no owned group does.
    pub async fn persist_backoff(&self, record: &planner::BackoffRecord) -> Result<(), AwsError> {
        let pool = &record.pool;
        let Some(index) = self.regions.iter().position(|r| r.region == pool.region) else {
            return Err(AwsError::NotFound {
                what: format!("region {} of pool {pool}", pool.region),
                message: "not a configured region".into(),
            });
        };
        let key = backoff::tag_key(pool);
        let value = backoff::tag_value(record);
        let tags: Vec<(String, String, String)> = self
            .owned
            .iter()
            .filter(|(_, g)| {
                g.region == index
                    && g.spec.shape.instance_type == pool.instance_type
                    && g.spec.purchase == pool.purchase
                    && g.spec.zones.contains(&pool.zone)
            })
            .map(|(id, _)| (id.0.clone(), key.clone(), value.clone()))
            .collect();
        if tags.is_empty() {
            return Err(AwsError::NotFound {
                what: format!("an owned group of pool {pool}"),
                message: "no owned group launches into it".into(),
            });
        }
        asg::put_tags(&self.regions[index], &tags).await
    }

    /// Pool backoffs persisted on owned groups (expired ones included: the planner
    /// keeps them for doubling). Reads the groups afresh, so it works before the
    /// first refresh.
    pub async fn load_backoffs(&self) -> Result<Vec<planner::BackoffRecord>, AwsError> {
        let mut records: BTreeMap<model::PoolKey, planner::BackoffRecord> = BTreeMap::new();
        for index in 0..self.regions.len() {
            let region = &self.regions[index].region;
            for (asg, _) in self.discover(index).await? {
                for (key, value) in asg
                    .tags
                    .iter()
                    .filter(|(k, _)| k.starts_with(TAG_BACKOFF_PREFIX))
                {
                    let Some(record) = backoff::parse_tag(region, key, value) else {
                        tracing::warn!(group = asg.name, key, "ignoring a malformed backoff tag");
                        continue;
                    };
                    match records.get(&record.pool) {
                        Some(existing) if existing.until >= record.until => {}
                        _ => {
                            records.insert(record.pool.clone(), record);
                        }
                    }
                }
            }
        }
        Ok(records.into_values().collect())
    }

    // ---- internals ----

    /// The owned ASGs of one region, with why they are owned.
    async fn discover(&self, index: usize) -> Result<Vec<(Asg, Ownership)>, AwsError> {
        let clients = &self.regions[index];
        let cluster = self.config.cluster_name.trim();
        let mut queries = Vec::new();
        if !cluster.is_empty() {
            queries.push(Query::TagValue(
                template::TAG_SEED_CLUSTER.to_owned(),
                cluster.to_owned(),
            ));
            queries.push(Query::TagKey(format!(
                "{}{cluster}",
                template::TAG_CA_CLUSTER_PREFIX
            )));
        }
        for spec in &self.specs {
            if let Some((key, value)) = spec.tags.first() {
                queries.push(match value {
                    Some(value) => Query::TagValue(key.clone(), value.clone()),
                    None => Query::TagKey(key.clone()),
                });
            }
        }
        let static_names: Vec<String> = self
            .config
            .static_groups
            .iter()
            .map(|g| g.name.clone())
            .collect();
        for chunk in static_names.chunks(asg::NAMES_PER_CALL) {
            queries.push(Query::Names(chunk.to_vec()));
        }
        let mut found: BTreeMap<String, (Asg, Ownership)> = BTreeMap::new();
        for query in &queries {
            for group in asg::describe_groups(clients, query).await? {
                if found.contains_key(&group.name) {
                    continue;
                }
                if let Some(ownership) = template::ownership(
                    &group.name,
                    &group.tags,
                    cluster,
                    &self.config.static_groups,
                    &self.specs,
                ) {
                    found.insert(group.name.clone(), (group, ownership));
                }
            }
        }
        Ok(found.into_values().collect())
    }

    /// Reads the group afresh and checks it is still owned, right before a write.
    async fn fresh_owned(
        &self,
        group: &NodeGroupId,
    ) -> Result<(&RegionClients, Asg, Ownership), AwsError> {
        let Some(known) = self.owned.get(group) else {
            return Err(AwsError::Unowned {
                what: format!("group {group}"),
                why: "it was not discovered as owned by this cluster".into(),
            });
        };
        let clients = &self.regions[known.region];
        let asg = asg::describe_group(clients, group.as_str())
            .await?
            .ok_or_else(|| AwsError::NotFound {
                what: format!("group {group}"),
                message: format!("no such Auto Scaling group in {}", clients.region),
            })?;
        let ownership = template::ownership(
            &asg.name,
            &asg.tags,
            self.config.cluster_name.trim(),
            &self.config.static_groups,
            &self.specs,
        )
        .ok_or_else(|| AwsError::Unowned {
            what: format!("group {group}"),
            why: "its ownership tags are gone".into(),
        })?;
        Ok((clients, asg, ownership))
    }

    fn count_failure(
        &mut self,
        id: &NodeGroupId,
        error: &AwsError,
        warnings: &mut Vec<String>,
    ) -> u32 {
        let failures = self.consecutive_failures.entry(id.clone()).or_insert(0);
        *failures += 1;
        if *failures >= UNHEALTHY_AFTER {
            warnings.push(format!(
                "group {id} is unhealthy: {failures} consecutive AWS failures, the last: {error}"
            ));
        }
        *failures
    }

    fn advise(&mut self, warnings: &mut Vec<String>, advisory: String) {
        if self.advised.insert(advisory.clone()) {
            warnings.push(advisory);
        }
    }

    /// The group's template: instance type (mixed policy's first override, launch
    /// template, launch configuration), purchase option, then the spec.
    async fn template(
        &mut self,
        index: usize,
        asg: &Asg,
        ownership: &Ownership,
        now: Time,
        warnings: &mut Vec<String>,
    ) -> Result<NodeGroupSpec, TemplateProblem> {
        let name = &asg.name;
        let (instance_type, mut purchase) = if let Some(mixed) = &asg.mixed {
            let spot = mixed.on_demand_percentage_above_base < 50;
            if mixed.on_demand_percentage_above_base > 0
                && mixed.on_demand_percentage_above_base < 100
            {
                self.advise(
                    warnings,
                    format!(
                        "group {name}: mixes on-demand ({}% above a base of {}) and spot; simulated as {}",
                        mixed.on_demand_percentage_above_base,
                        mixed.on_demand_base,
                        if spot { "spot" } else { "on-demand" }
                    ),
                );
            }
            let purchase = if spot {
                PurchaseOption::Spot
            } else {
                PurchaseOption::OnDemand
            };
            if let Some(first) = mixed.override_types.first() {
                self.check_override_shapes(name, &mixed.override_types, warnings);
                (first.clone(), purchase)
            } else {
                if mixed.has_instance_requirements {
                    return Err(TemplateProblem::Skip(format!(
                        "group {name}: selects instance types by attributes (InstanceRequirements), which the autoscaler cannot simulate"
                    )));
                }
                let template = mixed.template.as_ref().ok_or_else(|| {
                    TemplateProblem::Skip(format!(
                        "group {name}: mixed-instances policy without a launch template"
                    ))
                })?;
                let data = self.launch_template(index, template, now).await?;
                let purchase = if data.market_type.as_deref() == Some("spot") {
                    PurchaseOption::Spot
                } else {
                    purchase
                };
                (data.instance_type.unwrap_or_default(), purchase)
            }
        } else if let Some(template) = &asg.launch_template {
            let data = self.launch_template(index, template, now).await?;
            if data.instance_type.is_none() && data.has_instance_requirements {
                return Err(TemplateProblem::Skip(format!(
                    "group {name}: its launch template selects instance types by attributes (InstanceRequirements), which the autoscaler cannot simulate"
                )));
            }
            let purchase = if data.market_type.as_deref() == Some("spot") {
                PurchaseOption::Spot
            } else {
                PurchaseOption::OnDemand
            };
            (data.instance_type.unwrap_or_default(), purchase)
        } else if let Some(configuration) = &asg.launch_configuration {
            let info = self.launch_configuration(index, configuration).await?;
            (
                info.instance_type.unwrap_or_default(),
                if info.spot {
                    PurchaseOption::Spot
                } else {
                    PurchaseOption::OnDemand
                },
            )
        } else {
            return Err(TemplateProblem::Skip(format!(
                "group {name}: no launch template, launch configuration or mixed-instances policy"
            )));
        };
        if purchase == PurchaseOption::OnDemand
            && asg
                .tags
                .get("batch-autoscaler.io/purchase-option")
                .is_some_and(|v| v.trim() == "spot")
        {
            purchase = PurchaseOption::Spot;
        }
        let (min_size, max_size) = match ownership {
            Ownership::Static(s) => (s.min, s.max),
            _ => (asg.min_size, asg.max_size),
        };
        let region = &self.regions[index];
        let inputs = template::TemplateInputs {
            name,
            region: &region.region,
            region_rank: region.rank,
            tags: &asg.tags,
            zones: asg.zones.clone(),
            min_size,
            max_size,
            instance_type: &instance_type,
            purchase,
            max_pods: self.config.max_pods,
            prices: &self.config.prices,
        };
        let mut tag_warnings = Vec::new();
        let spec =
            template::build_spec(&inputs, &mut tag_warnings).map_err(TemplateProblem::Skip)?;
        for warning in tag_warnings {
            self.advise(warnings, warning);
        }
        Ok(spec)
    }

    fn check_override_shapes(&mut self, name: &str, types: &[String], warnings: &mut Vec<String>) {
        let describe = |t: &String| match catalog::lookup(t) {
            Some(s) => (
                Some((s.vcpus, s.memory_mib, s.gpus)),
                format!(
                    "{t}: {} vCPU, {} MiB, {} GPU",
                    s.vcpus, s.memory_mib, s.gpus
                ),
            ),
            None => (None, format!("{t}: not in the catalog")),
        };
        let shapes: Vec<_> = types.iter().map(describe).collect();
        if shapes.iter().any(|(shape, _)| *shape != shapes[0].0) {
            let list: Vec<&str> = shapes.iter().map(|(_, text)| text.as_str()).collect();
            self.advise(
                warnings,
                format!("group {name}: mixed-instances overrides differ in shape ({}); simulated as the first, {}", list.join("; "), types[0]),
            );
        }
    }

    async fn launch_template(
        &mut self,
        index: usize,
        template: &TemplateRef,
        now: Time,
    ) -> Result<LaunchTemplateData, TemplateProblem> {
        let key = (index, template.clone());
        let version = template.version.as_deref().unwrap_or("$Default");
        let immutable = version.bytes().all(|b| b.is_ascii_digit());
        if let Some((data, fetched)) = self.launch_templates.get(&key) {
            if immutable
                || now.as_millis().saturating_sub(fetched.as_millis()) < MOVING_TEMPLATE_TTL_MS
            {
                return Ok(data.clone());
            }
        }
        let ec2 = &self.regions[index].ec2;
        match ec2
            .launch_template_version(
                template.id.as_deref(),
                template.name.as_deref(),
                Some(version),
            )
            .await
        {
            Ok(data) => {
                self.launch_templates.insert(key, (data.clone(), now));
                Ok(data)
            }
            Err(AwsError::NotFound { what, message }) => Err(TemplateProblem::Skip(format!(
                "{what} not found: {message}"
            ))),
            Err(error @ AwsError::Rejected { .. }) => Err(TemplateProblem::Skip(format!(
                "launch template unreadable: {error}"
            ))),
            Err(error) => Err(TemplateProblem::Aws(error)),
        }
    }

    async fn launch_configuration(
        &mut self,
        index: usize,
        name: &str,
    ) -> Result<asg::LaunchConfigurationInfo, TemplateProblem> {
        let key = (index, name.to_owned());
        if let Some(info) = self.launch_configurations.get(&key) {
            return Ok(info.clone());
        }
        let found = asg::describe_launch_configurations(&self.regions[index], &[name.to_owned()])
            .await
            .map_err(TemplateProblem::Aws)?;
        let info = found.get(name).cloned().ok_or_else(|| {
            TemplateProblem::Skip(format!("launch configuration {name} not found"))
        })?;
        // Launch configurations are immutable: cache for good.
        self.launch_configurations.insert(key, info.clone());
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids() {
        assert_eq!(
            AwsNodeGroups::instance_for_provider_id("aws:///us-west-2a/i-0abc123"),
            Some((Zone::new("us-west-2a"), InstanceId::new("i-0abc123")))
        );
        for bad in [
            "",
            "gce://p/z/i",
            "aws:///us-west-2a/",
            "aws:///i-0abc",
            "aws:///us-west-2a/fargate-ip-10-0-0-1",
            "aws:///us-west-2a/i-xyz",
            "kind://docker/x/y",
        ] {
            assert_eq!(AwsNodeGroups::instance_for_provider_id(bad), None, "{bad}");
        }
    }

    /// Every AWS call in the source is in `called_actions` (the IAM policy), and
    /// every listed action is called somewhere.
    #[test]
    fn called_actions_match_the_source() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut text = String::new();
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n != "lib.rs") {
                text.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
        // Whitespace out, so that rustfmt's line breaks inside a call do not hide it.
        let text: String = text.split_whitespace().collect();
        let sdk_calls = [
            (
                "describe_auto_scaling_groups()",
                "autoscaling:DescribeAutoScalingGroups",
            ),
            (
                "describe_launch_configurations()",
                "autoscaling:DescribeLaunchConfigurations",
            ),
            (
                "describe_scaling_activities()",
                "autoscaling:DescribeScalingActivities",
            ),
            ("create_or_update_tags()", "autoscaling:CreateOrUpdateTags"),
            (".set_desired_capacity()", "autoscaling:SetDesiredCapacity"),
            (
                "terminate_instance_in_auto_scaling_group()",
                "autoscaling:TerminateInstanceInAutoScalingGroup",
            ),
            (".detach_instances()", "autoscaling:DetachInstances"),
            (
                "call(\"DescribeLaunchTemplateVersions\"",
                "ec2:DescribeLaunchTemplateVersions",
            ),
        ];
        for (needle, action) in sdk_calls {
            let compact: String = needle.split_whitespace().collect();
            assert!(text.contains(&compact), "{needle} not found in the source");
            assert!(
                AwsNodeGroups::called_actions().contains(&action),
                "{action} missing from called_actions"
            );
        }
        assert_eq!(AwsNodeGroups::called_actions().len(), sdk_calls.len());
        // No other SDK operation is called: every `.send()` follows one of the above.
        let sends = text.matches(".send()").count();
        assert_eq!(
            sends, 7,
            "an SDK call was added; list its action in called_actions"
        );
        assert_eq!(
            text.matches("call(\"").count(),
            1,
            "an EC2 call was added; list its action in called_actions"
        );

        let sqs_calls = [
            ("invoke(\"GetQueueUrl\"", "sqs:GetQueueUrl"),
            ("invoke(\"ReceiveMessage\"", "sqs:ReceiveMessage"),
            ("invoke(\"DeleteMessage\"", "sqs:DeleteMessage"),
        ];
        for (needle, action) in sqs_calls {
            let compact: String = needle.split_whitespace().collect();
            assert!(text.contains(&compact), "{needle} not found in the source");
            assert!(
                InterruptionQueue::called_actions().contains(&action),
                "{action} missing from InterruptionQueue::called_actions"
            );
        }
        assert_eq!(InterruptionQueue::called_actions().len(), sqs_calls.len());
        assert_eq!(
            text.matches("invoke(\"").count(),
            sqs_calls.len(),
            "an SQS call was added; list its action in InterruptionQueue::called_actions"
        );
    }
}
