//! moto server (the fake-but-faithful cloud) and the fixtures that create a
//! scenario's Auto Scaling Groups in it, the way `crates/aws/tests/moto.rs` does:
//! the SDK's own create calls for Auto Scaling, the adapter's signed query client for
//! EC2 launch templates.

use crate::http;
use anyhow::Context;
use aws::ec2::Ec2Client;
use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, Tag};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// An AMI id moto knows.
pub const AMI: &str = "ami-12c6146b";
/// ASG tag read by [`crate::CloudBridge`]: instances of this group never register.
pub const TAG_NEVER_JOINS: &str = "batch-autoscaler.test/never-joins";
/// ASG tag read by [`crate::CloudBridge`]: this group's boot delay (`8s`, `1500ms`).
pub const TAG_BOOT_DELAY: &str = "batch-autoscaler.test/boot-delay";
/// ASG tag read by the bridge: the group's nodes register without a providerID (the
/// cloud controller has not set it), so the autoscaler cannot tell which instance they
/// are.
pub const TAG_NO_PROVIDER_ID: &str = "batch-autoscaler.test/no-provider-id";
/// ASG tag read by the moto launcher: the group can launch at most `<N>` more
/// instances while the tag has this value (`<N>:<window>`); later launches fail with
/// InsufficientInstanceCapacity. A new value starts a new count.
pub const TAG_LAUNCH_CAPACITY: &str = "batch-autoscaler.test/launch-capacity";
/// ASG tag read by the moto launcher: launches fail (`<Code>[:<N>]`).
pub const TAG_FAIL_LAUNCHES: &str = "batch-autoscaler.test/fail-launches";
/// Dummy credentials moto accepts.
pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";

/// The moto server of the world.
#[derive(Debug, Clone)]
pub struct Moto {
    pub url: String,
}

impl Moto {
    /// Clears every resource and the launcher's own state (activities, faults).
    pub async fn reset(&self) -> anyhow::Result<()> {
        http::post_ok(&self.url, "/moto-api/reset", "")
            .await
            .map(|_| ())
    }

    /// Throttles `percent` % of AWS calls (all regions and services), seeded.
    pub async fn throttle(&self, percent: u32, seed: u64) -> anyhow::Result<()> {
        http::post_ok(
            &self.url,
            "/batch-autoscaler/faults",
            &format!(r#"{{"throttle_percent": {percent}, "seed": {seed}}}"#),
        )
        .await
        .map(|_| ())
    }

    /// Throttles every call of the listed API actions (`DetachInstances`), any region.
    pub async fn throttle_actions(&self, actions: &[&str]) -> anyhow::Result<()> {
        let body = serde_json::json!({"throttle_percent": 100, "seed": 0, "actions": actions});
        http::post_ok(&self.url, "/batch-autoscaler/faults", &body.to_string())
            .await
            .map(|_| ())
    }

    /// The mutating calls moto received from the caller with `access_key`, as (Action,
    /// wall-clock time in Unix milliseconds).
    pub async fn mutating_calls(&self, access_key: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let response = http::get(&self.url, "/batch-autoscaler/calls").await?;
        let value: serde_json::Value =
            serde_json::from_str(&response.body).context("calls JSON")?;
        Ok(value[access_key]
            .as_array()
            .map(|calls| {
                calls
                    .iter()
                    .map(|c| {
                        (
                            c["action"].as_str().unwrap_or_default().to_owned(),
                            c["at_ms"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// How many throttling errors were injected since the switch was last set.
    pub async fn injected_faults(&self) -> anyhow::Result<u64> {
        let response = http::get(&self.url, "/batch-autoscaler/faults").await?;
        let value: serde_json::Value =
            serde_json::from_str(&response.body).context("faults JSON")?;
        Ok(value["injected"].as_u64().unwrap_or(0))
    }
}

/// The AWS config the harness's own adapters use (bridge, fixtures): moto, fast retries.
pub fn adapter_config(url: &str, cluster: &str, regions: &[String]) -> aws::AwsConfig {
    aws::AwsConfig {
        cluster_name: cluster.to_owned(),
        regions: regions
            .iter()
            .map(|r| model::Region::new(r.as_str()))
            .collect(),
        static_groups: vec![],
        auto_discovery: vec![],
        credentials: aws::Credentials::Static {
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            session_token: None,
        },
        endpoint_url: Some(url.to_owned()),
        max_pods: model::group::DEFAULT_MAX_PODS,
        prices: BTreeMap::new(),
        retry: aws::RetrySettings::fast(),
    }
}

/// A group to create. Ownership is Cluster Autoscaler's tags for the scenario's cluster.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    pub name: String,
    pub instance_type: String,
    pub min: i32,
    pub max: i32,
    pub desired: i32,
    /// `k8s.io/cluster-autoscaler/node-template/label/<k>` tags.
    pub labels: Vec<(String, String)>,
    /// `k8s.io/cluster-autoscaler/node-template/taint/<k>` = `<value>:<Effect>`.
    pub taints: Vec<(String, String)>,
    /// Any other tags (`batch-autoscaler.test/*`, …).
    pub tags: Vec<(String, String)>,
    /// The zone it launches into; default: the region's zone `a`.
    pub zone: Option<String>,
}

impl GroupOptions {
    pub fn new(name: &str, instance_type: &str, max: i32) -> Self {
        Self {
            name: name.to_owned(),
            instance_type: instance_type.to_owned(),
            min: 0,
            max,
            desired: 0,
            labels: vec![],
            taints: vec![],
            tags: vec![],
            zone: None,
        }
    }
    pub fn zone(mut self, zone: &str) -> Self {
        self.zone = Some(zone.to_owned());
        self
    }
    pub fn desired(mut self, desired: i32) -> Self {
        self.desired = desired;
        self
    }
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }
    pub fn taint(mut self, key: &str, value_and_effect: &str) -> Self {
        self.taints.push((key.into(), value_and_effect.into()));
        self
    }
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }
    /// Instances launch but never become nodes.
    pub fn never_joins(self) -> Self {
        self.tag(TAG_NEVER_JOINS, "true")
    }
    /// Launches fail with this code (`InsufficientInstanceCapacity`), at most `limit` instances.
    pub fn fail_launches(self, code: &str, limit: Option<u32>) -> Self {
        let value = match limit {
            Some(n) => format!("{code}:{n}"),
            None => code.to_owned(),
        };
        self.tag(TAG_FAIL_LAUNCHES, &value)
    }
    pub fn boot_delay(self, delay: &str) -> Self {
        self.tag(TAG_BOOT_DELAY, delay)
    }
}

/// Creates and inspects groups in one region of moto.
pub struct Fixtures {
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub ec2: Ec2Client,
    pub region: String,
    cluster: String,
    templates: Mutex<BTreeSet<String>>,
}

fn tag(group: &str, key: &str, value: &str) -> Tag {
    Tag::builder()
        .resource_id(group)
        .resource_type("auto-scaling-group")
        .key(key)
        .value(value)
        .propagate_at_launch(false)
        .build()
}

/// One group as moto reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReport {
    pub name: String,
    pub min: i32,
    pub max: i32,
    pub desired: i32,
    pub instances: BTreeSet<String>,
    pub tags: BTreeMap<String, String>,
}

impl Fixtures {
    pub async fn new(url: &str, region: &str, cluster: &str) -> Self {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_owned()))
            .endpoint_url(url)
            .credentials_provider(aws_credential_types::Credentials::new(
                ACCESS_KEY,
                SECRET_KEY,
                None,
                None,
                "e2e-fixtures",
            ))
            .http_client(aws::sdk_http_client())
            .load()
            .await;
        let ec2 = Ec2Client::connect(
            &adapter_config(url, cluster, &[region.to_owned()]),
            &model::Region::new(region),
        )
        .await;
        Self {
            autoscaling: aws_sdk_autoscaling::Client::new(&sdk),
            ec2,
            region: region.to_owned(),
            cluster: cluster.to_owned(),
            templates: Mutex::new(BTreeSet::new()),
        }
    }

    /// The zone every group of this region launches into.
    pub fn zone(&self) -> String {
        format!("{}a", self.region)
    }

    async fn launch_template(&self, instance_type: &str) -> anyhow::Result<String> {
        let name = format!("lt-{}", instance_type.replace('.', "-"));
        if self.templates.lock().expect("templates").contains(&name) {
            return Ok(name);
        }
        self.ec2
            .call(
                "CreateLaunchTemplate",
                &[
                    ("LaunchTemplateName", &name),
                    ("LaunchTemplateData.ImageId", AMI),
                    ("LaunchTemplateData.InstanceType", instance_type),
                ],
            )
            .await
            .with_context(|| format!("CreateLaunchTemplate {name}"))?;
        self.templates
            .lock()
            .expect("templates")
            .insert(name.clone());
        Ok(name)
    }

    /// Creates the group from a launch template of its instance type, in zone `a`,
    /// scale-in protected, owned by the scenario's cluster through CA's tags.
    pub async fn group(&self, options: &GroupOptions) -> anyhow::Result<()> {
        let template = self.launch_template(&options.instance_type).await?;
        let name = options.name.as_str();
        let mut tags = vec![
            (
                "k8s.io/cluster-autoscaler/enabled".to_owned(),
                "true".to_owned(),
            ),
            (
                format!("k8s.io/cluster-autoscaler/{}", self.cluster),
                "owned".to_owned(),
            ),
        ];
        tags.extend(options.labels.iter().map(|(k, v)| {
            (
                format!("k8s.io/cluster-autoscaler/node-template/label/{k}"),
                v.clone(),
            )
        }));
        tags.extend(options.taints.iter().map(|(k, v)| {
            (
                format!("k8s.io/cluster-autoscaler/node-template/taint/{k}"),
                v.clone(),
            )
        }));
        tags.extend(options.tags.iter().cloned());
        let mut request = self
            .autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .min_size(options.min)
            .max_size(options.max)
            .desired_capacity(options.desired)
            .availability_zones(options.zone.clone().unwrap_or_else(|| self.zone()))
            .new_instances_protected_from_scale_in(true)
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_name(template)
                    .version("$Latest")
                    .build(),
            );
        for (key, value) in &tags {
            request = request.tags(tag(name, key, value));
        }
        request
            .send()
            .await
            .with_context(|| format!("CreateAutoScalingGroup {name}"))?;
        Ok(())
    }

    pub async fn set_tag(&self, group: &str, key: &str, value: &str) -> anyhow::Result<()> {
        self.autoscaling
            .create_or_update_tags()
            .tags(tag(group, key, value))
            .send()
            .await
            .context("CreateOrUpdateTags")?;
        Ok(())
    }

    pub async fn delete_tag(&self, group: &str, key: &str) -> anyhow::Result<()> {
        let t = Tag::builder()
            .resource_id(group)
            .resource_type("auto-scaling-group")
            .key(key)
            .build();
        self.autoscaling
            .delete_tags()
            .tags(t)
            .send()
            .await
            .context("DeleteTags")?;
        Ok(())
    }

    /// Every group of the region (all pages), as moto reports it.
    pub async fn report(&self) -> anyhow::Result<Vec<GroupReport>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let response = self
                .autoscaling
                .describe_auto_scaling_groups()
                .set_next_token(token.clone())
                .send()
                .await
                .context("DescribeAutoScalingGroups")?;
            for g in response.auto_scaling_groups() {
                out.push(GroupReport {
                    name: g.auto_scaling_group_name().unwrap_or_default().to_owned(),
                    min: g.min_size().unwrap_or(-1),
                    max: g.max_size().unwrap_or(-1),
                    desired: g.desired_capacity().unwrap_or(-1),
                    instances: g
                        .instances()
                        .iter()
                        .filter_map(|i| i.instance_id().map(str::to_owned))
                        .collect(),
                    tags: g
                        .tags()
                        .iter()
                        .filter_map(|t| {
                            Some((
                                t.key()?.to_owned(),
                                t.value().unwrap_or_default().to_owned(),
                            ))
                        })
                        .collect(),
                });
            }
            token = response.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub async fn group_report(&self, name: &str) -> anyhow::Result<GroupReport> {
        self.report()
            .await?
            .into_iter()
            .find(|g| g.name == name)
            .with_context(|| format!("group {name} not in moto"))
    }

    /// Scaling activities of a group, newest first: (status code, description, start).
    pub async fn activities(
        &self,
        group: &str,
    ) -> anyhow::Result<Vec<(String, String, std::time::SystemTime)>> {
        let response = self
            .autoscaling
            .describe_scaling_activities()
            .auto_scaling_group_name(group)
            .max_records(100)
            .send()
            .await
            .context("DescribeScalingActivities")?;
        Ok(response
            .activities()
            .iter()
            .map(|a| {
                let start = a
                    .start_time()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (
                    a.status_code()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                    a.description().unwrap_or_default().to_owned(),
                    start,
                )
            })
            .collect())
    }
}
