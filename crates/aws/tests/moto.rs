//! The AWS adapter against moto server (`crates/aws/moto/launcher.py`), over real
//! HTTP with real SigV4 signing. `scripts/test-all.sh` starts the launcher and sets
//! `BATCH_AUTOSCALER_MOTO_URL`; without it these tests print a SKIPPED line and
//! pass, unless `CI` is set, where they fail.
//!
//! Isolation: every test has its own regions and cluster name, so tests run in
//! parallel against one server; the server is reset once per run.

use aws::ec2::Ec2Client;
use aws::sqs::SqsClient;
use aws::{
    parse_interruption_message, AwsConfig, AwsError, AwsNodeGroups, Credentials, InterruptionQueue,
    ParsedMessage, QueueMessage, RetrySettings, StaticGroup,
};
use aws_sdk_autoscaling::types::{
    InstancesDistribution, LaunchTemplate, LaunchTemplateOverrides, LaunchTemplateSpecification,
    MixedInstancesPolicy, Tag,
};
use model::{
    ClusterSnapshot, InstanceId, InstanceState, InterruptionKind, LaunchFailureKind, NodeGroupId,
    NodeGroupState, Owner, PodKey, PodView, PurchaseOption, Region, Resources, TaintEffect, Time,
};
use planner::{Action, Outcome, Planner, PlannerSettings};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Once;
use std::time::{Duration, Instant};

const URL_VAR: &str = "BATCH_AUTOSCALER_MOTO_URL";
const AMI: &str = "ami-12c6146b";

/// The moto server's URL, or `None` (test skipped) when it is not configured.
fn moto(test: &str) -> Option<String> {
    let url = match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url.trim().trim_end_matches('/').to_owned(),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!("{URL_VAR} is not set but CI is: the AWS adapter's moto tests must run in CI (scripts/test-all.sh starts moto)");
            }
            // Straight to the process's stderr: libtest captures `eprintln!` of passing tests.
            let line = format!("SKIPPED {test}: {URL_VAR} is not set (run scripts/test-all.sh, or start crates/aws/moto/launcher.py and export {URL_VAR})\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            return None;
        }
    };
    static RESET: Once = Once::new();
    RESET.call_once(|| {
        http_post(&url, "/moto-api/reset", "");
    });
    Some(url)
}

/// A tiny blocking HTTP/1.1 POST to the launcher's own endpoints (not AWS APIs).
fn http_post(url: &str, path: &str, body: &str) -> String {
    http_request(url, "POST", path, body)
}

fn http_request(url: &str, method: &str, path: &str, body: &str) -> String {
    let authority = url.strip_prefix("http://").expect("moto URL is http://");
    let mut stream = std::net::TcpStream::connect(authority).expect("connect to moto");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
        "{path}: {response}"
    );
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

fn unix_now() -> Time {
    Time::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    )
}

fn config(url: &str, cluster: &str, regions: &[&str]) -> AwsConfig {
    AwsConfig {
        cluster_name: cluster.to_owned(),
        regions: regions.iter().map(|r| Region::new(*r)).collect(),
        static_groups: vec![],
        auto_discovery: vec![],
        credentials: Credentials::Static {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            session_token: None,
        },
        endpoint_url: Some(url.to_owned()),
        max_pods: 110,
        prices: BTreeMap::new(),
        retry: RetrySettings::fast(),
    }
}

/// Fixtures: the SDK's own create calls for Auto Scaling, the adapter's signed query
/// client for EC2.
struct Fixtures {
    autoscaling: aws_sdk_autoscaling::Client,
    ec2: Ec2Client,
    region: String,
}

impl Fixtures {
    async fn new(url: &str, region: &str) -> Self {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_owned()))
            .endpoint_url(url)
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "fixtures",
            ))
            .http_client(aws::sdk_http_client())
            .load()
            .await;
        let ec2 =
            Ec2Client::connect(&config(url, "fixtures", &[region]), &Region::new(region)).await;
        Self {
            autoscaling: aws_sdk_autoscaling::Client::new(&sdk),
            ec2,
            region: region.to_owned(),
        }
    }

    fn zone(&self, letter: &str) -> String {
        format!("{}{letter}", self.region)
    }

    async fn launch_template(&self, name: &str, instance_type: Option<&str>) {
        let mut params = vec![
            ("LaunchTemplateName", name),
            ("LaunchTemplateData.ImageId", AMI),
        ];
        if let Some(t) = instance_type {
            params.push(("LaunchTemplateData.InstanceType", t));
        }
        self.ec2
            .call("CreateLaunchTemplate", &params)
            .await
            .expect("CreateLaunchTemplate");
    }

    async fn launch_configuration(&self, name: &str, instance_type: &str) {
        self.autoscaling
            .create_launch_configuration()
            .launch_configuration_name(name)
            .image_id(AMI)
            .instance_type(instance_type)
            .send()
            .await
            .expect("CreateLaunchConfiguration");
    }

    /// An ASG from a launch template, in zone `a`, with tags.
    async fn group(
        &self,
        name: &str,
        template: &str,
        min: i32,
        max: i32,
        desired: i32,
        tags: &[(&str, &str)],
    ) {
        self.group_with(name, min, max, desired, tags, |r| {
            r.launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_name(template)
                    .version("$Latest")
                    .build(),
            )
        })
        .await;
    }

    async fn group_with(
        &self,
        name: &str,
        min: i32,
        max: i32,
        desired: i32,
        tags: &[(&str, &str)],
        source: impl FnOnce(
            aws_sdk_autoscaling::operation::create_auto_scaling_group::builders::CreateAutoScalingGroupFluentBuilder,
        ) -> aws_sdk_autoscaling::operation::create_auto_scaling_group::builders::CreateAutoScalingGroupFluentBuilder,
    ) {
        let mut request = self
            .autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .min_size(min)
            .max_size(max)
            .desired_capacity(desired)
            .availability_zones(self.zone("a"))
            .new_instances_protected_from_scale_in(true);
        for (key, value) in tags {
            request = request.tags(tag(name, key, value));
        }
        source(request)
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateAutoScalingGroup {name}: {e:?}"));
    }

    async fn tag(&self, group: &str, key: &str, value: &str) {
        self.autoscaling
            .create_or_update_tags()
            .tags(tag(group, key, value))
            .send()
            .await
            .expect("CreateOrUpdateTags");
    }

    async fn desired_and_instances(&self, group: &str) -> (i32, Vec<String>) {
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .expect("describe");
        let g = &out.auto_scaling_groups()[0];
        (
            g.desired_capacity().unwrap_or(-1),
            g.instances()
                .iter()
                .filter_map(|i| i.instance_id().map(str::to_owned))
                .collect(),
        )
    }
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

fn seed_tags(cluster: &str) -> Vec<(&'static str, String)> {
    vec![
        ("KubernetesCluster", cluster.to_owned()),
        ("Role", "minion".to_owned()),
    ]
}

fn ca_tags(cluster: &str) -> Vec<(String, String)> {
    vec![
        ("k8s.io/cluster-autoscaler/enabled".into(), "true".into()),
        (
            format!("k8s.io/cluster-autoscaler/{cluster}"),
            "owned".into(),
        ),
    ]
}

fn as_refs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect()
}

fn names(groups: &[NodeGroupState]) -> Vec<&str> {
    groups.iter().map(|g| g.spec.id.as_str()).collect()
}

fn group<'a>(groups: &'a [NodeGroupState], name: &str) -> &'a NodeGroupState {
    groups
        .iter()
        .find(|g| g.spec.id.as_str() == name)
        .unwrap_or_else(|| panic!("group {name} not in {:?}", names(groups)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_groups_by_each_tag_style_and_by_nodes() {
    let Some(url) = moto("discovers_groups_by_each_tag_style_and_by_nodes") else {
        return;
    };
    let cluster = "disc";
    let f = Fixtures::new(&url, "eu-west-1").await;
    f.launch_template("lt", Some("m5.large")).await;
    f.group("seed-role", "lt", 0, 3, 0, &as_refs(&seed_tags(cluster)))
        .await;
    f.group(
        "seed-kubernetes-role",
        "lt",
        0,
        3,
        0,
        &[("KubernetesCluster", cluster), ("KubernetesRole", "worker")],
    )
    .await;
    f.group("ca-tags", "lt", 0, 3, 0, &as_refs(&ca_tags(cluster)))
        .await;
    f.group("static", "lt", 0, 3, 0, &[]).await;
    f.group("auto-discovered", "lt", 0, 3, 0, &[("team", "batch")])
        .await;
    // Not ours: another cluster, a master, only the enabled tag, no tags at all.
    f.group(
        "other-cluster",
        "lt",
        0,
        3,
        0,
        &as_refs(&seed_tags("someone-else")),
    )
    .await;
    f.group(
        "master",
        "lt",
        0,
        3,
        0,
        &[("KubernetesCluster", cluster), ("Role", "master")],
    )
    .await;
    f.group(
        "half-ca",
        "lt",
        0,
        3,
        0,
        &[("k8s.io/cluster-autoscaler/enabled", "true")],
    )
    .await;
    f.group("untagged", "lt", 0, 3, 0, &[]).await;

    let mut cfg = config(&url, cluster, &["eu-west-1"]);
    cfg.static_groups = vec![
        aws::parse_static_group("1:7:static").unwrap(),
        StaticGroup {
            min: 0,
            max: 2,
            name: "missing".into(),
        },
    ];
    cfg.auto_discovery = vec!["asg:tag=team=batch".into()];
    let mut adapter = AwsNodeGroups::connect(cfg).await.unwrap();
    let refresh = adapter.refresh(unix_now()).await.unwrap();
    assert_eq!(
        names(&refresh.groups),
        [
            "auto-discovered",
            "ca-tags",
            "seed-kubernetes-role",
            "seed-role",
            "static"
        ]
    );
    let static_group = group(&refresh.groups, "static");
    assert_eq!(
        (static_group.spec.min_size, static_group.spec.max_size),
        (1, 7),
        "--nodes overrides the ASG's min and max"
    );
    assert_eq!(group(&refresh.groups, "ca-tags").spec.max_size, 3);
    assert!(
        refresh
            .warnings
            .iter()
            .any(|w| w.contains("missing") && w.contains("not found")),
        "{:#?}",
        refresh.warnings
    );
    for g in &refresh.groups {
        assert_eq!(g.spec.region, Region::new("eu-west-1"));
        assert_eq!(g.spec.zones, vec![model::Zone::new("eu-west-1a")]);
        assert_eq!(g.spec.shape.instance_type.as_str(), "m5.large");
        assert_eq!(g.target, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unowned_group_is_never_modified() {
    let Some(url) = moto("an_unowned_group_is_never_modified") else {
        return;
    };
    let cluster = "unowned";
    let f = Fixtures::new(&url, "eu-west-2").await;
    f.launch_template("lt", Some("m5.large")).await;
    f.group("ours", "lt", 0, 5, 1, &as_refs(&seed_tags(cluster)))
        .await;
    f.group(
        "theirs",
        "lt",
        0,
        5,
        1,
        &as_refs(&seed_tags("another-cluster")),
    )
    .await;
    let (_, their_instances) = f.desired_and_instances("theirs").await;
    let mut adapter = AwsNodeGroups::connect(config(&url, cluster, &["eu-west-2"]))
        .await
        .unwrap();
    let refresh = adapter.refresh(unix_now()).await.unwrap();
    assert_eq!(names(&refresh.groups), ["ours"]);

    let theirs = NodeGroupId::new("theirs");
    let e = adapter.set_target_size(&theirs, 3).await.unwrap_err();
    assert_eq!(e.metric_label(), "unowned", "{e}");
    let e = adapter
        .terminate_instance(&theirs, &InstanceId::new(their_instances[0].as_str()))
        .await
        .unwrap_err();
    assert_eq!(e.metric_label(), "unowned", "{e}");
    // An instance of another group through an owned group's name: refused too.
    let e = adapter
        .terminate_instance(
            &NodeGroupId::new("ours"),
            &InstanceId::new(their_instances[0].as_str()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.metric_label(), "unowned", "{e}");
    // A group that loses its ownership tags after discovery is refused on the re-check.
    f.tag("ours", "KubernetesCluster", "moved-away").await;
    let e = adapter
        .set_target_size(&NodeGroupId::new("ours"), 2)
        .await
        .unwrap_err();
    assert_eq!(e.metric_label(), "unowned", "{e}");
    // Failures and backoffs do not write to unowned groups either.
    f.tag("ours", "KubernetesCluster", cluster).await;
    adapter.refresh(unix_now()).await.unwrap();
    adapter.launch_failures(unix_now()).await.unwrap();

    let (desired, instances) = f.desired_and_instances("theirs").await;
    assert_eq!((desired, instances), (1, their_instances));
    let out = f
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("theirs")
        .send()
        .await
        .unwrap();
    let tags: Vec<_> = out.auto_scaling_groups()[0]
        .tags()
        .iter()
        .filter_map(|t| t.key())
        .collect();
    assert!(
        tags.iter().all(|k| !k.starts_with("batch-autoscaler.io/")),
        "{tags:?}"
    );
}

/// Issue 20: the adapter never sets a desired capacity below the group's live
/// instances, whatever it is asked: AWS would choose which instances to terminate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_below_the_live_instances_is_refused_before_it_is_sent() {
    let Some(url) = moto("a_target_below_the_live_instances_is_refused_before_it_is_sent") else {
        return;
    };
    let cluster = "below-live";
    let f = Fixtures::new(&url, "ca-central-1").await;
    f.launch_template("lt", Some("c5.xlarge")).await;
    f.group("workers", "lt", 0, 6, 3, &as_refs(&ca_tags(cluster)))
        .await;
    let mut adapter = AwsNodeGroups::connect(config(&url, cluster, &["ca-central-1"]))
        .await
        .unwrap();
    let id = NodeGroupId::new("workers");
    let before = adapter.refresh(unix_now()).await.unwrap();
    let victim = group(&before.groups, "workers").instances[0].id.clone();
    // One instance leaves the way the planner removes one: desired 3 -> 2, live 2.
    adapter.terminate_instance(&id, &victim).await.unwrap();

    let e = adapter.set_target_size(&id, 1).await.unwrap_err();
    assert_eq!(e.metric_label(), "below_live_instances", "{e}");
    assert!(e.to_string().contains("below its 2 live instances"), "{e}");
    let after = adapter.refresh(unix_now()).await.unwrap();
    let workers = group(&after.groups, "workers");
    assert_eq!(workers.target, 2, "nothing was sent");
    assert_eq!(
        workers
            .instances
            .iter()
            .filter(|i| i.state != InstanceState::Terminating)
            .count(),
        2
    );
    // At or above the live instances it goes through.
    adapter.set_target_size(&id, 2).await.unwrap();
    adapter.set_target_size(&id, 4).await.unwrap();
    let grown = adapter.refresh(unix_now()).await.unwrap();
    assert_eq!(group(&grown.groups, "workers").target, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_adds_instances_and_scale_down_terminates_exactly_the_chosen_one() {
    let Some(url) =
        moto("scale_up_adds_instances_and_scale_down_terminates_exactly_the_chosen_one")
    else {
        return;
    };
    let cluster = "scale";
    let f = Fixtures::new(&url, "eu-west-3").await;
    f.launch_template("lt", Some("c5.xlarge")).await;
    f.group("workers", "lt", 0, 4, 0, &as_refs(&ca_tags(cluster)))
        .await;
    let mut adapter = AwsNodeGroups::connect(config(&url, cluster, &["eu-west-3"]))
        .await
        .unwrap();
    let id = NodeGroupId::new("workers");
    let before = adapter.refresh(unix_now()).await.unwrap();
    assert_eq!(group(&before.groups, "workers").instances.len(), 0);

    adapter.set_target_size(&id, 3).await.unwrap();
    let after = adapter.refresh(unix_now()).await.unwrap();
    let workers = group(&after.groups, "workers");
    assert_eq!(workers.target, 3);
    assert_eq!(workers.instances.len(), 3);
    assert!(workers
        .instances
        .iter()
        .all(|i| i.state == InstanceState::InService && i.zone.as_str() == "eu-west-3a"));

    // Never above max: refused by the adapter, and by (patched) moto like AWS.
    let e = adapter.set_target_size(&id, 5).await.unwrap_err();
    assert_eq!(e.metric_label(), "rejected", "{e}");
    let e = f
        .autoscaling
        .set_desired_capacity()
        .auto_scaling_group_name("workers")
        .desired_capacity(5)
        .send()
        .await
        .unwrap_err();
    assert!(format!("{:?}", e).contains("above max value"), "{e:?}");

    let victim = workers.instances[1].id.clone();
    adapter.terminate_instance(&id, &victim).await.unwrap();
    let (desired, instances) = f.desired_and_instances("workers").await;
    assert_eq!(desired, 2, "desired is decremented");
    let expected: Vec<String> = workers
        .instances
        .iter()
        .filter(|i| i.id != victim)
        .map(|i| i.id.to_string())
        .collect();
    let mut instances = instances;
    instances.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(instances, expected, "exactly the chosen instance is gone");
    let refreshed = adapter.refresh(unix_now()).await.unwrap();
    assert!(group(&refreshed.groups, "workers")
        .instances
        .iter()
        .all(|i| i.id != victim));
    // Successful launches are not failures.
    assert!(adapter
        .launch_failures(unix_now())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_template_mixed_instances_and_launch_configuration_templates() {
    let Some(url) = moto("launch_template_mixed_instances_and_launch_configuration_templates")
    else {
        return;
    };
    let cluster = "templates";
    let f = Fixtures::new(&url, "eu-central-1").await;
    let ours_tags = ca_tags(cluster);
    let ours = as_refs(&ours_tags);
    f.launch_template("lt-m5", Some("m5.2xlarge")).await;
    f.launch_template("lt-mixed", Some("t3.micro")).await;
    f.launch_configuration("lc-r5", "r5.large").await;
    f.group("from-template", "lt-m5", 0, 10, 0, &ours).await;
    f.group_with("mixed", 0, 10, 0, &ours, |r| {
        r.mixed_instances_policy(
            MixedInstancesPolicy::builder()
                .launch_template(
                    LaunchTemplate::builder()
                        .launch_template_specification(
                            LaunchTemplateSpecification::builder()
                                .launch_template_name("lt-mixed")
                                .version("$Default")
                                .build(),
                        )
                        .overrides(
                            LaunchTemplateOverrides::builder()
                                .instance_type("c5.2xlarge")
                                .build(),
                        )
                        .overrides(
                            LaunchTemplateOverrides::builder()
                                .instance_type("c5a.2xlarge")
                                .build(),
                        )
                        .overrides(
                            LaunchTemplateOverrides::builder()
                                .instance_type("m5.4xlarge")
                                .build(),
                        )
                        .build(),
                )
                .instances_distribution(
                    InstancesDistribution::builder()
                        .on_demand_base_capacity(0)
                        .on_demand_percentage_above_base_capacity(0)
                        .build(),
                )
                .build(),
        )
    })
    .await;
    f.group_with("from-configuration", 0, 10, 0, &ours, |r| {
        r.launch_configuration_name("lc-r5")
    })
    .await;

    let mut adapter = AwsNodeGroups::connect(config(&url, cluster, &["eu-central-1"]))
        .await
        .unwrap();
    let refresh = adapter.refresh(unix_now()).await.unwrap();
    let lt = &group(&refresh.groups, "from-template").spec;
    assert_eq!(lt.shape.instance_type.as_str(), "m5.2xlarge");
    assert_eq!(
        (lt.shape.capacity.cpu_millis, lt.shape.capacity.memory_bytes),
        (8000, 32 << 30)
    );
    assert_eq!(lt.purchase, PurchaseOption::OnDemand);
    assert!(
        (lt.price_per_hour.unwrap() - catalog::on_demand_price_usd_per_hour("m5.2xlarge").unwrap())
            .abs()
            < 1e-9
    );

    let mixed = &group(&refresh.groups, "mixed").spec;
    assert_eq!(
        mixed.shape.instance_type.as_str(),
        "c5.2xlarge",
        "the first override, not the template's type"
    );
    assert_eq!(
        mixed.purchase,
        PurchaseOption::Spot,
        "0% on-demand above a base of 0"
    );
    let on_demand = catalog::on_demand_price_usd_per_hour("c5.2xlarge").unwrap();
    assert!((mixed.price_per_hour.unwrap() - on_demand * aws::SPOT_PRICE_FACTOR).abs() < 1e-9);
    assert!(
        refresh.warnings.iter().any(|w| w.contains("mixed")
            && w.contains("differ in shape")
            && w.contains("m5.4xlarge")),
        "{:#?}",
        refresh.warnings
    );
    let lc = &group(&refresh.groups, "from-configuration").spec;
    assert_eq!(lc.shape.instance_type.as_str(), "r5.large");
    assert_eq!(lc.shape.capacity.memory_bytes, 16 << 30);

    // Advisories are given once, not on every refresh.
    let again = adapter.refresh(unix_now()).await.unwrap();
    assert!(
        !again.warnings.iter().any(|w| w.contains("differ in shape")),
        "{:#?}",
        again.warnings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_from_zero_templates_carry_labels_taints_and_gpus() {
    let Some(url) = moto("scale_from_zero_templates_carry_labels_taints_and_gpus") else {
        return;
    };
    let cluster = "zero";
    let f = Fixtures::new(&url, "eu-north-1").await;
    f.launch_template("gpu", Some("g4dn.12xlarge")).await;
    let mut tags = ca_tags(cluster);
    for (k, v) in [
        (
            "k8s.io/cluster-autoscaler/node-template/label/workload",
            "training",
        ),
        (
            "k8s.io/cluster-autoscaler/node-template/label/k8s.amazonaws.com/accelerator",
            "nvidia-tesla-t4",
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
            "200Gi",
        ),
        ("kube/team", "vision"),
    ] {
        tags.push((k.into(), v.into()));
    }
    f.group("gpu-workers", "gpu", 0, 4, 0, &as_refs(&tags))
        .await;
    let mut adapter = AwsNodeGroups::connect(config(&url, cluster, &["eu-north-1"]))
        .await
        .unwrap();
    let refresh = adapter.refresh(unix_now()).await.unwrap();
    let g = group(&refresh.groups, "gpu-workers");
    assert!(g.instances.is_empty(), "scale from zero");
    let spec = &g.spec;
    assert_eq!(
        spec.shape.capacity.gpus(),
        4,
        "g4dn.12xlarge has 4 T4s (catalog)"
    );
    assert_eq!(spec.shape.allocatable.gpus(), 4);
    assert_eq!(spec.shape.capacity.cpu_millis, 48_000);
    assert_eq!(spec.shape.capacity.ephemeral_storage_bytes, 200 << 30);
    assert_eq!(spec.labels.get("workload"), Some("training"));
    assert_eq!(spec.labels.get("team"), Some("vision"));
    let labels = spec.template_labels(&spec.zones[0]);
    assert_eq!(
        labels.get("node.kubernetes.io/instance-type"),
        Some("g4dn.12xlarge")
    );
    assert_eq!(
        labels.get("topology.kubernetes.io/zone"),
        Some("eu-north-1a")
    );
    assert_eq!(
        labels.get("k8s.amazonaws.com/accelerator"),
        Some("nvidia-tesla-t4")
    );
    let mut taints: Vec<_> = spec
        .taints
        .iter()
        .map(|t| (t.key.as_str(), t.value.as_str(), t.effect))
        .collect();
    taints.sort();
    assert_eq!(
        taints,
        [
            ("dedicated", "", TaintEffect::NoExecute),
            ("nvidia.com/gpu", "present", TaintEffect::NoSchedule)
        ]
    );
    assert!(
        !refresh
            .warnings
            .iter()
            .any(|w| w.contains("gpu-workers") && w.contains("skipped")),
        "{:#?}",
        refresh.warnings
    );
}

/// Region A fails with InsufficientInstanceCapacity: the failure is read from scaling
/// activities, the planner backs the pool off (persisted on the ASG), a restarted
/// adapter and planner still know it, and the same pods are placed in region B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_failure_in_region_a_moves_pods_to_region_b_and_survives_a_restart() {
    let Some(url) =
        moto("capacity_failure_in_region_a_moves_pods_to_region_b_and_survives_a_restart")
    else {
        return;
    };
    let cluster = "failover";
    let (region_a, region_b) = ("ap-south-1", "ap-northeast-1");
    let fa = Fixtures::new(&url, region_a).await;
    let fb = Fixtures::new(&url, region_b).await;
    for f in [&fa, &fb] {
        f.launch_template("lt", Some("m5.xlarge")).await;
    }
    let mut tags_a = ca_tags(cluster);
    tags_a.push((
        "batch-autoscaler.test/fail-launches".into(),
        "InsufficientInstanceCapacity".into(),
    ));
    fa.group("batch-a", "lt", 0, 10, 0, &as_refs(&tags_a)).await;
    fb.group("batch-b", "lt", 0, 10, 0, &as_refs(&ca_tags(cluster)))
        .await;

    let pods: Vec<PodView> = (0..3)
        .map(|i| {
            let mut pod = PodView::new(
                PodKey::new("jobs", format!("train-{i}")),
                Resources::cpu_mem(3000, 4 << 30),
                Owner::Job("train".into()),
                unix_now(),
            );
            pod.unschedulable = true;
            pod
        })
        .collect();
    let snapshot = |revision: u64, groups: Vec<NodeGroupState>| ClusterSnapshot {
        synced: true,
        revision,
        groups,
        nodes: vec![],
        pods: pods.clone(),
        ..ClusterSnapshot::default()
    };
    let cfg = config(&url, cluster, &[region_a, region_b]);

    // First process: the planner prefers region A.
    let mut adapter = AwsNodeGroups::connect(cfg.clone()).await.unwrap();
    let mut planner = Planner::new(PlannerSettings::default()).unwrap();
    assert!(adapter.load_backoffs().await.unwrap().is_empty());
    let refresh = adapter.refresh(unix_now()).await.unwrap();
    assert_eq!(
        names(&refresh.groups),
        ["batch-a", "batch-b"],
        "ordered by region preference"
    );
    assert_eq!(
        (
            group(&refresh.groups, "batch-a").spec.region_rank,
            group(&refresh.groups, "batch-b").spec.region_rank
        ),
        (0, 1)
    );
    planner.handle_snapshot(unix_now(), &snapshot(1, refresh.groups));
    let scale_up = drain(&mut planner, &adapter).await;
    assert_eq!(
        scale_up,
        [("batch-a".to_owned(), 3)],
        "primary region first"
    );
    let (desired, instances) = fa.desired_and_instances("batch-a").await;
    assert_eq!(
        (desired, instances.len()),
        (3, 0),
        "AWS keeps desired; nothing launches"
    );

    // The failure comes back from scaling activities, classified.
    let failures = adapter.launch_failures(unix_now()).await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:#?}");
    let failure = &failures[0];
    assert_eq!(
        (failure.group.as_str(), failure.kind, failure.count),
        ("batch-a", LaunchFailureKind::InsufficientCapacity, 3)
    );
    assert_eq!(
        failure.zone.as_ref().map(|z| z.as_str()),
        Some("ap-south-1a")
    );
    assert!(
        failure
            .message
            .contains("We currently do not have sufficient m5.xlarge capacity"),
        "{}",
        failure.message
    );
    assert!(
        adapter
            .launch_failures(unix_now())
            .await
            .unwrap()
            .is_empty(),
        "reported once"
    );
    for failure in failures {
        planner.handle_launch_failure(unix_now(), failure);
    }
    let give_back = drain(&mut planner, &adapter).await;
    assert_eq!(
        give_back,
        [("batch-a".to_owned(), 0)],
        "undelivered capacity is given back"
    );
    let backoffs = planner.backoffs(unix_now());
    assert_eq!(backoffs.len(), 1);
    assert_eq!(backoffs[0].pool.region.as_str(), region_a);

    // Restart: a new adapter and a new planner.
    drop(adapter);
    let mut adapter = AwsNodeGroups::connect(cfg.clone()).await.unwrap();
    let restored = adapter.load_backoffs().await.unwrap();
    assert_eq!(restored.len(), 1, "{restored:#?}");
    assert_eq!(
        (&restored[0].pool, restored[0].until, restored[0].kind),
        (&backoffs[0].pool, backoffs[0].until, backoffs[0].kind)
    );
    let mut planner = Planner::new(PlannerSettings::default()).unwrap();
    planner.restore_backoffs(restored);
    let refresh = adapter.refresh(unix_now()).await.unwrap();
    assert!(
        adapter
            .launch_failures(unix_now())
            .await
            .unwrap()
            .is_empty(),
        "the persisted marker: no replay after a restart"
    );
    planner.handle_snapshot(unix_now(), &snapshot(1, refresh.groups));
    let scale_up = drain(&mut planner, &adapter).await;
    assert_eq!(
        scale_up,
        [("batch-b".to_owned(), 3)],
        "the same pods go to region B"
    );
    let (desired, instances) = fb.desired_and_instances("batch-b").await;
    assert_eq!((desired, instances.len()), (3, 3));
    let refresh = adapter.refresh(unix_now()).await.unwrap();
    assert_eq!(group(&refresh.groups, "batch-b").instances.len(), 3);
}

/// Carries out the planner's actions through the adapter; returns the target sizes set.
async fn drain(planner: &mut Planner, adapter: &AwsNodeGroups) -> Vec<(String, u32)> {
    let mut targets = Vec::new();
    while let Some(action) = planner.poll_action() {
        let id = action.id();
        let result = match &action {
            Action::SetTargetSize { group, to, .. } => {
                targets.push((group.to_string(), *to));
                adapter.set_target_size(group, *to).await
            }
            Action::TerminateInstance {
                group, instance, ..
            } => adapter.terminate_instance(group, instance).await,
            Action::PersistBackoff { record, .. } => adapter.persist_backoff(record).await,
            other => panic!("unexpected action {other}"),
        };
        let outcome = match result {
            Ok(()) => Outcome::Done,
            Err(e) => panic!("{action}: {e}"),
        };
        planner.handle_outcome(unix_now(), id, outcome);
    }
    targets
}

/// Resets the fault switch even when the test fails.
struct Faults<'a>(&'a str);

impl Faults<'_> {
    fn set(&self, percent: u32, region: &str) -> String {
        http_post(
            self.0,
            "/batch-autoscaler/faults",
            &format!(r#"{{"throttle_percent": {percent}, "seed": 1, "regions": ["{region}"]}}"#),
        )
    }
}

impl Drop for Faults<'_> {
    fn drop(&mut self) {
        http_post(
            self.0,
            "/batch-autoscaler/faults",
            r#"{"throttle_percent": 0}"#,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_and_repeated_failure_marks_groups_unhealthy() {
    let Some(url) = moto("throttling_is_retried_and_repeated_failure_marks_groups_unhealthy")
    else {
        return;
    };
    let cluster = "throttle";
    let region = "ap-northeast-2";
    let f = Fixtures::new(&url, region).await;
    f.launch_template("lt", Some("m5.large")).await;
    f.group("busy", "lt", 0, 6, 0, &as_refs(&seed_tags(cluster)))
        .await;
    let mut adapter = AwsNodeGroups::connect(config(&url, cluster, &[region]))
        .await
        .unwrap();
    let id = NodeGroupId::new("busy");
    let faults = Faults(&url);

    // A third of all calls throttled (autoscaling and EC2): everything still works.
    faults.set(33, region);
    for round in 0..4u32 {
        let refresh = adapter
            .refresh(unix_now())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(names(&refresh.groups), ["busy"]);
        adapter
            .set_target_size(&id, round + 1)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        adapter.launch_failures(unix_now()).await.unwrap();
    }
    let status = http_request(&url, "GET", "/batch-autoscaler/faults", "");
    let injected: u64 = status
        .split("\"injected\": ")
        .nth(1)
        .and_then(|s| s.trim_end_matches(['}', ' ']).parse().ok())
        .unwrap_or(0);
    assert!(
        injected >= 5,
        "throttling was injected and retried: {status}"
    );
    let (desired, _) = f.desired_and_instances("busy").await;
    assert_eq!(desired, 4);

    // Always throttled: errors, never a panic; the group is reported unhealthy.
    faults.set(100, region);
    let e = adapter.refresh(unix_now()).await.unwrap_err();
    assert_eq!(e.metric_label(), "throttled", "{e}");
    assert!(matches!(e, AwsError::Throttled { .. }));
    for _ in 0..3 {
        assert!(adapter
            .launch_failures(unix_now())
            .await
            .unwrap()
            .is_empty());
    }
    assert_eq!(
        adapter
            .set_target_size(&id, 2)
            .await
            .unwrap_err()
            .metric_label(),
        "throttled"
    );
    faults.set(0, region);
    let refresh = adapter.refresh(unix_now()).await.unwrap();
    assert!(
        refresh
            .warnings
            .iter()
            .any(|w| w.contains("group busy is unhealthy")),
        "{:#?}",
        refresh.warnings
    );
    assert_eq!(
        names(&refresh.groups),
        ["busy"],
        "the process and the group carry on"
    );
    let spec = refresh.groups[0].spec.clone();

    // EC2 alone down: the launch template cannot be re-read ($Latest is re-read after
    // a minute), the group stays with its last template, and turns unhealthy.
    http_post(
        &url,
        "/batch-autoscaler/faults",
        &format!(
            r#"{{"throttle_percent": 100, "seed": 1, "regions": ["{region}"], "services": ["ec2"]}}"#
        ),
    );
    let mut later = unix_now();
    let mut all_warnings = Vec::new();
    for _ in 0..3 {
        later = later + std::time::Duration::from_secs(61);
        let refresh = adapter.refresh(later).await.unwrap();
        assert_eq!(refresh.groups.len(), 1);
        assert_eq!(refresh.groups[0].spec, spec, "the last known template");
        all_warnings.extend(refresh.warnings);
    }
    assert!(
        all_warnings
            .iter()
            .any(|w| w.contains("template not refreshed")),
        "{all_warnings:#?}"
    );
    assert!(
        all_warnings
            .iter()
            .any(|w| w.contains("group busy is unhealthy")
                && w.contains("DescribeLaunchTemplateVersions")),
        "{all_warnings:#?}"
    );
    faults.set(0, region);
    let refresh = adapter
        .refresh(later + std::time::Duration::from_secs(61))
        .await
        .unwrap();
    assert!(
        !refresh.warnings.iter().any(|w| w.contains("unhealthy")),
        "{:#?}",
        refresh.warnings
    );
}

/// Issue 20, path 8. One region that cannot be read stops no other: its groups are
/// shown as last seen and frozen (min = max = their desired capacity: neither grown nor
/// shrunk), the other region's groups are live and can be scaled; when the region
/// answers again its groups are live again. A region never read yet is left out; only
/// when every region fails does the refresh fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_cannot_be_read_stops_no_other() {
    let Some(url) = moto("a_region_that_cannot_be_read_stops_no_other") else {
        return;
    };
    let cluster = "regional";
    let (healthy, failing) = ("eu-south-1", "ap-northeast-3");
    for region in [healthy, failing] {
        let f = Fixtures::new(&url, region).await;
        f.launch_template("lt", Some("c5.xlarge")).await;
        f.group(
            &format!("g-{region}"),
            "lt",
            0,
            5,
            1,
            &as_refs(&ca_tags(cluster)),
        )
        .await;
    }
    let faults = Faults(&url);
    let throttle_autoscaling = |percent: u32, region: &str| {
        http_post(
            &url,
            "/batch-autoscaler/faults",
            &format!(
                r#"{{"throttle_percent": {percent}, "seed": 1, "regions": ["{region}"], "services": ["autoscaling"]}}"#
            ),
        )
    };

    // Never read yet: left out, the healthy region goes on.
    let mut fresh = AwsNodeGroups::connect(config(&url, cluster, &[healthy, failing]))
        .await
        .unwrap();
    throttle_autoscaling(100, failing);
    let first = fresh.refresh(unix_now()).await.unwrap();
    assert_eq!(names(&first.groups), [format!("g-{healthy}").as_str()]);
    faults.set(0, failing);

    let mut adapter = AwsNodeGroups::connect(config(&url, cluster, &[healthy, failing]))
        .await
        .unwrap();
    let before = adapter.refresh(unix_now()).await.unwrap();
    assert_eq!(before.groups.len(), 2);
    throttle_autoscaling(100, failing);
    let during = adapter.refresh(unix_now()).await.unwrap();
    assert!(
        during
            .warnings
            .iter()
            .any(|w| w.contains(&format!("region {failing} unavailable"))),
        "{:#?}",
        during.warnings
    );
    let frozen = group(&during.groups, &format!("g-{failing}"));
    assert_eq!(
        (frozen.spec.min_size, frozen.spec.max_size, frozen.target),
        (1, 1, 1),
        "shown as last seen, frozen"
    );
    assert_eq!(frozen.instances.len(), 1);
    let live = group(&during.groups, &format!("g-{healthy}"));
    assert_eq!((live.spec.min_size, live.spec.max_size), (0, 5));
    adapter
        .set_target_size(&NodeGroupId::new(format!("g-{healthy}")), 2)
        .await
        .unwrap();
    // Every region failing: nothing to plan on, the refresh fails.
    let mut lonely = AwsNodeGroups::connect(config(&url, cluster, &[failing]))
        .await
        .unwrap();
    assert!(lonely.refresh(unix_now()).await.is_err());

    faults.set(0, failing);
    let after = adapter.refresh(unix_now()).await.unwrap();
    let back = group(&after.groups, &format!("g-{failing}"));
    assert_eq!(
        (back.spec.min_size, back.spec.max_size),
        (0, 5),
        "live again"
    );
    assert_eq!(group(&after.groups, &format!("g-{healthy}")).target, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_gives_warnings_and_skips_never_a_panic() {
    let Some(url) = moto("bad_data_gives_warnings_and_skips_never_a_panic") else {
        return;
    };
    let cluster = "bad";
    let f = Fixtures::new(&url, "ap-southeast-1").await;
    let ours_tags = seed_tags(cluster);
    let ours = as_refs(&ours_tags);
    f.launch_template("good", Some("m5.large")).await;
    f.launch_template("no-type", None).await;
    f.launch_template("unknown-type", Some("m5.huge")).await;
    f.group("good", "good", 0, 3, 0, &ours).await;
    f.group("no-type", "no-type", 0, 3, 0, &ours).await;
    f.group("unknown-type", "unknown-type", 0, 3, 0, &ours)
        .await;
    let mut malformed = ours.clone();
    malformed.extend([
        ("k8s.io/cluster-autoscaler/node-template/label/bad key", "x"),
        (
            "k8s.io/cluster-autoscaler/node-template/taint/novalue",
            "NoSchedule",
        ),
        (
            "k8s.io/cluster-autoscaler/node-template/resources/memory",
            "lots",
        ),
        ("k8s.io/cluster-autoscaler/node-template/label/ok", "yes"),
        ("batch-autoscaler.io/activity-marker", "not-a-number"),
        ("batch-autoscaler.io/backoff/z/t/spot", "garbage"),
    ]);
    f.group("malformed-tags", "good", 0, 3, 0, &malformed).await;
    // More owned groups than fit in one page (100).
    for i in 0..105 {
        f.group(&format!("many-{i:03}"), "good", 0, 1, 0, &ours)
            .await;
    }

    let mut adapter =
        AwsNodeGroups::connect(config(&url, cluster, &["ap-southeast-1", "ap-southeast-2"]))
            .await
            .unwrap();
    assert!(
        adapter.load_backoffs().await.unwrap().is_empty(),
        "a malformed backoff tag is ignored"
    );
    let refresh = adapter.refresh(unix_now()).await.unwrap();
    let found = names(&refresh.groups);
    assert_eq!(
        found.iter().filter(|n| n.starts_with("many-")).count(),
        105,
        "every page is read"
    );
    assert!(found.contains(&"good") && found.contains(&"malformed-tags"));
    assert!(!found.contains(&"no-type") && !found.contains(&"unknown-type"));
    let warned = |needle: &str| refresh.warnings.iter().any(|w| w.contains(needle));
    assert!(
        warned("group no-type: no instance type"),
        "{:#?}",
        refresh.warnings
    );
    assert!(
        warned("\"m5.huge\" is not in the catalog"),
        "{:#?}",
        refresh.warnings
    );
    assert!(
        warned("skipped tag k8s.io/cluster-autoscaler/node-template/label/bad key"),
        "{:#?}",
        refresh.warnings
    );
    assert!(
        warned("skipped tag k8s.io/cluster-autoscaler/node-template/taint/novalue"),
        "{:#?}",
        refresh.warnings
    );
    assert!(
        warned("skipped tag k8s.io/cluster-autoscaler/node-template/resources/memory"),
        "{:#?}",
        refresh.warnings
    );
    let m = &group(&refresh.groups, "malformed-tags").spec;
    assert_eq!(m.labels.get("ok"), Some("yes"));
    assert!(m.taints.is_empty());
    // A region with no groups and no scaling activity at all, and groups that never
    // had an activity: nothing to report, no error.
    assert!(adapter
        .launch_failures(unix_now())
        .await
        .unwrap()
        .is_empty());
    // A group that vanished after discovery: a clean error, no panic.
    f.autoscaling
        .delete_auto_scaling_group()
        .auto_scaling_group_name("many-000")
        .force_delete(true)
        .send()
        .await
        .unwrap();
    let e = adapter
        .set_target_size(&NodeGroupId::new("many-000"), 1)
        .await
        .unwrap_err();
    assert_eq!(e.metric_label(), "not_found", "{e}");
    let refresh = adapter.refresh(unix_now()).await.unwrap();
    assert_eq!(
        refresh
            .groups
            .iter()
            .filter(|g| g.spec.id.as_str().starts_with("many-"))
            .count(),
        104
    );
}

// ---- the interruption queue (SQS, JSON protocol) ----

const SPOT_WARNING: &str = include_str!("fixtures/spot-interruption-warning.json");
const REBALANCE: &str = include_str!("fixtures/rebalance-recommendation.json");

/// Fixture calls on SQS (CreateQueue, SendMessage, GetQueueAttributes) through the
/// adapter's own signed client.
async fn create_queue(sqs: &SqsClient, name: &str) -> String {
    let out = sqs
        .call("CreateQueue", &json!({ "QueueName": name }))
        .await
        .expect("CreateQueue");
    out["QueueUrl"].as_str().expect("QueueUrl").to_owned()
}

async fn send(sqs: &SqsClient, url: &str, body: &str) {
    sqs.call(
        "SendMessage",
        &json!({ "QueueUrl": url, "MessageBody": body }),
    )
    .await
    .expect("SendMessage");
}

/// Messages in the queue, visible or not (received and not deleted).
async fn messages_left(sqs: &SqsClient, url: &str) -> u64 {
    let names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
    ];
    let out = sqs
        .call(
            "GetQueueAttributes",
            &json!({ "QueueUrl": url, "AttributeNames": names }),
        )
        .await
        .expect("GetQueueAttributes");
    names
        .iter()
        .map(|n| {
            out["Attributes"][n]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{n} in {out}"))
        })
        .sum()
}

/// Receives until `count` messages came (moto may hand them out over several polls).
async fn receive_all(queue: &InterruptionQueue, count: usize) -> Vec<QueueMessage> {
    let mut messages = Vec::new();
    for _ in 0..10 {
        messages.extend(
            queue
                .receive(Duration::from_secs(1))
                .await
                .expect("ReceiveMessage"),
        );
        if messages.len() >= count {
            break;
        }
    }
    assert_eq!(messages.len(), count, "{messages:#?}");
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interruption_queue_receives_parses_and_deletes_by_name_and_by_url() {
    let Some(url) = moto("interruption_queue_receives_parses_and_deletes_by_name_and_by_url")
    else {
        return;
    };
    let region = Region::new("us-east-2");
    let cfg = config(&url, "queue", &["us-east-2"]);
    let sqs = SqsClient::connect(&cfg, &region).await;
    let queue_url = create_queue(&sqs, "interruptions").await;
    send(&sqs, &queue_url, SPOT_WARNING).await;
    send(&sqs, &queue_url, "this is not an event").await;

    let by_name = InterruptionQueue::connect(&cfg, &region, "interruptions")
        .await
        .unwrap();
    assert_eq!(by_name.url(), queue_url, "GetQueueUrl resolves the name");
    let by_url = InterruptionQueue::connect(&cfg, &region, &queue_url)
        .await
        .unwrap();
    assert_eq!(by_url.url(), queue_url, "a URL is used as is");

    let messages = receive_all(&by_name, 2).await;
    let mut notices = Vec::new();
    let mut malformed = Vec::new();
    for message in &messages {
        match parse_interruption_message(&message.body) {
            Ok(ParsedMessage::Notices(n)) => notices.push((message, n)),
            Ok(ParsedMessage::Unknown { what }) => panic!("unexpected unknown event {what}"),
            Err(e) => malformed.push((message, e)),
        }
    }
    assert_eq!((notices.len(), malformed.len()), (1, 1), "{messages:#?}");
    let (spot_message, spot) = &notices[0];
    assert_eq!(spot.len(), 1);
    assert_eq!(
        (spot[0].instance.as_str(), spot[0].kind),
        ("i-1234567890abcdef0", InterruptionKind::SpotInterruption)
    );
    assert_eq!(
        spot[0].deadline,
        Some(spot[0].at + Duration::from_secs(120))
    );
    assert_eq!(malformed[0].1.field, "body");
    assert!(!spot_message.id.is_empty() && spot_message.receipt != malformed[0].0.receipt);
    // Receipt handles belong to the queue, not to the connection that received them.
    by_name.delete(&spot_message.receipt).await.unwrap();
    by_url.delete(&malformed[0].0.receipt).await.unwrap();

    send(&sqs, &queue_url, REBALANCE).await;
    let messages = receive_all(&by_url, 1).await;
    match parse_interruption_message(&messages[0].body) {
        Ok(ParsedMessage::Notices(n)) => {
            assert_eq!(n[0].kind, InterruptionKind::RebalanceRecommendation)
        }
        other => panic!("{other:?}"),
    }
    by_url.delete(&messages[0].receipt).await.unwrap();

    // Deleted, not merely invisible; and an empty poll waits (long polling) then
    // returns nothing.
    assert_eq!(messages_left(&sqs, &queue_url).await, 0);
    let started = Instant::now();
    assert!(by_name
        .receive(Duration::from_secs(1))
        .await
        .unwrap()
        .is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "WaitTimeSeconds was sent: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interruption_queue_failures_are_typed_errors() {
    let Some(url) = moto("interruption_queue_failures_are_typed_errors") else {
        return;
    };
    let region_name = "us-west-2";
    let region = Region::new(region_name);
    let cfg = config(&url, "queue-errors", &[region_name]);

    let e = InterruptionQueue::connect(&cfg, &region, "no-such-queue")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AwsError::NotFound { what, .. } if what.contains("no-such-queue")),
        "{e:?}"
    );
    assert!(e.to_string().contains("no-such-queue"), "{e}");
    let e = InterruptionQueue::connect(&cfg, &region, " ")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AwsError::Config(c) if c.field == "interruption-queue"),
        "{e:?}"
    );

    // Throttled on every attempt: retried, then a transient error.
    let sqs = SqsClient::connect(&cfg, &region).await;
    let queue_url = create_queue(&sqs, "throttled").await;
    let queue = InterruptionQueue::connect(&cfg, &region, "throttled")
        .await
        .unwrap();
    let faults = Faults(&url);
    http_post(
        &url,
        "/batch-autoscaler/faults",
        &format!(
            r#"{{"throttle_percent": 100, "seed": 1, "regions": ["{region_name}"], "services": ["sqs"]}}"#
        ),
    );
    let e = queue.receive(Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(e, AwsError::Throttled { .. }) && e.is_transient(),
        "{e:?}"
    );
    faults.set(0, region_name);
    send(&sqs, &queue_url, SPOT_WARNING).await;
    assert_eq!(queue.receive(Duration::ZERO).await.unwrap().len(), 1);

    // Nothing listening (a port just freed): a transient error after the retries,
    // never a panic.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut unreachable = cfg.clone();
    unreachable.endpoint_url = Some(format!("http://127.0.0.1:{port}"));
    let e = InterruptionQueue::connect(&unreachable, &region, "throttled")
        .await
        .unwrap_err();
    assert!(
        matches!(e, AwsError::Unavailable { .. }) && e.is_transient(),
        "{e:?}"
    );
    let by_url = InterruptionQueue::connect(&unreachable, &region, &queue_url)
        .await
        .unwrap();
    let e = by_url.receive(Duration::from_secs(1)).await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(by_url.delete("receipt").await.unwrap_err().is_transient());
}

// ---- interruptions on the Auto Scaling side ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_instance_lowers_desired_and_refuses_unowned_groups() {
    let Some(url) = moto("detach_instance_lowers_desired_and_refuses_unowned_groups") else {
        return;
    };
    let cluster = "detach";
    let f = Fixtures::new(&url, "us-west-1").await;
    f.launch_template("lt", Some("m5.large")).await;
    f.group("ours", "lt", 0, 5, 2, &as_refs(&ca_tags(cluster)))
        .await;
    f.group(
        "theirs",
        "lt",
        0,
        5,
        1,
        &as_refs(&ca_tags("another-cluster")),
    )
    .await;
    let (_, our_instances) = f.desired_and_instances("ours").await;
    let (_, their_instances) = f.desired_and_instances("theirs").await;
    let mut adapter = AwsNodeGroups::connect(config(&url, cluster, &["us-west-1"]))
        .await
        .unwrap();
    assert_eq!(
        names(&adapter.refresh(unix_now()).await.unwrap().groups),
        ["ours"]
    );
    let ours = NodeGroupId::new("ours");
    let theirs = NodeGroupId::new("theirs");

    let victim = InstanceId::new(our_instances[0].as_str());
    adapter.detach_instance(&ours, &victim).await.unwrap();
    let (desired, instances) = f.desired_and_instances("ours").await;
    assert_eq!(
        (desired, instances),
        (1, vec![our_instances[1].clone()]),
        "one less, and not replaced"
    );
    // Out of the group, but still running until EC2 takes it back.
    let described = f
        .ec2
        .call("DescribeInstances", &[("InstanceId.1", victim.as_str())])
        .await
        .unwrap();
    assert_eq!(
        described
            .find("instanceState")
            .and_then(|s| s.text_at(&["name"])),
        Some("running")
    );
    let refresh = adapter.refresh(unix_now()).await.unwrap();
    assert!(group(&refresh.groups, "ours")
        .instances
        .iter()
        .all(|i| i.id != victim));
    assert_eq!(group(&refresh.groups, "ours").target, 1);

    // Again: no longer a member.
    let e = adapter.detach_instance(&ours, &victim).await.unwrap_err();
    assert_eq!(e.metric_label(), "not_found", "{e}");
    // A group that is not ours, and an instance of it through our group's name: refused.
    let stranger = InstanceId::new(their_instances[0].as_str());
    let e = adapter
        .detach_instance(&theirs, &stranger)
        .await
        .unwrap_err();
    assert!(matches!(e, AwsError::Unowned { .. }), "{e:?}");
    let e = adapter.detach_instance(&ours, &stranger).await.unwrap_err();
    assert_eq!(e.metric_label(), "not_found", "{e}");
    assert_eq!(
        f.desired_and_instances("theirs").await,
        (1, their_instances)
    );
    assert_eq!(f.desired_and_instances("ours").await.0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_rebalance_is_read_from_the_group() {
    let Some(url) = moto("capacity_rebalance_is_read_from_the_group") else {
        return;
    };
    let cluster = "rebalance";
    let f = Fixtures::new(&url, "sa-east-1").await;
    f.launch_template("lt", Some("m5.large")).await;
    let tags = ca_tags(cluster);
    let template = || {
        LaunchTemplateSpecification::builder()
            .launch_template_name("lt")
            .version("$Latest")
            .build()
    };
    f.group_with("rebalancing", 0, 3, 0, &as_refs(&tags), |r| {
        r.launch_template(template()).capacity_rebalance(true)
    })
    .await;
    f.group("plain", "lt", 0, 3, 0, &as_refs(&tags)).await;
    let mut adapter = AwsNodeGroups::connect(config(&url, cluster, &["sa-east-1"]))
        .await
        .unwrap();
    let rebalance = |refresh: &aws::Refresh| {
        (
            group(&refresh.groups, "plain").spec.capacity_rebalance,
            group(&refresh.groups, "rebalancing")
                .spec
                .capacity_rebalance,
        )
    };
    assert_eq!(
        rebalance(&adapter.refresh(unix_now()).await.unwrap()),
        (false, true)
    );

    // Changed on the group: the next refresh says so (the template is cached, this is not).
    for (name, on) in [("plain", true), ("rebalancing", false)] {
        f.autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(name)
            .capacity_rebalance(on)
            .send()
            .await
            .expect("UpdateAutoScalingGroup");
    }
    assert_eq!(
        rebalance(&adapter.refresh(unix_now()).await.unwrap()),
        (true, false)
    );
}
