//! The default credential chain and the `AWS_ENDPOINT_URL` override, against moto.
//! A test binary of its own: it sets process environment variables, which must not
//! race with other tests.

use aws::ec2::Ec2Client;
use aws::{AwsConfig, AwsNodeGroups, Credentials, RetrySettings};
use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, Tag};
use model::{Region, Time};
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// `POST /moto-api/reset`, so the test can run again against a long-lived server.
fn reset(url: &str) {
    let authority = url.strip_prefix("http://").expect("moto URL is http://");
    let mut stream = std::net::TcpStream::connect(authority).expect("connect to moto");
    write!(stream, "POST /moto-api/reset HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[test]
fn default_chain_and_endpoint_from_the_environment() {
    let url = match std::env::var("BATCH_AUTOSCALER_MOTO_URL") {
        Ok(url) if !url.trim().is_empty() => url.trim().trim_end_matches('/').to_owned(),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "BATCH_AUTOSCALER_MOTO_URL is not set but CI is: the moto tests must run in CI"
            );
            let _ = std::io::stderr().write_all(b"SKIPPED default_chain_and_endpoint_from_the_environment: BATCH_AUTOSCALER_MOTO_URL is not set\n");
            return;
        }
    };
    reset(&url);
    // Before any thread exists: the SDK reads these while loading its configuration.
    std::env::set_var("AWS_ENDPOINT_URL", &url);
    std::env::set_var("AWS_ACCESS_KEY_ID", "env-key");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "env-secret");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::remove_var("AWS_PROFILE");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let region = "ca-central-1";
        let config = AwsConfig {
            cluster_name: "env".into(),
            regions: vec![Region::new(region)],
            static_groups: vec![],
            auto_discovery: vec![],
            credentials: Credentials::from_keys(None, None).unwrap(),
            endpoint_url: None,
            max_pods: 110,
            prices: BTreeMap::new(),
            retry: RetrySettings::fast(),
        };
        assert_eq!(config.credentials, Credentials::DefaultChain);
        let ec2 = Ec2Client::connect(&config, &Region::new(region)).await;
        ec2.call(
            "CreateLaunchTemplate",
            &[
                ("LaunchTemplateName", "env-lt"),
                ("LaunchTemplateData.InstanceType", "m5.large"),
                ("LaunchTemplateData.ImageId", "ami-12c6146b"),
            ],
        )
        .await
        .expect("EC2 call through AWS_ENDPOINT_URL with credentials from the environment");
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region))
            .http_client(aws::sdk_http_client())
            .load()
            .await;
        let autoscaling = aws_sdk_autoscaling::Client::new(&sdk);
        let tag = |k: &str, v: &str| {
            Tag::builder()
                .resource_id("env-group")
                .resource_type("auto-scaling-group")
                .key(k)
                .value(v)
                .propagate_at_launch(false)
                .build()
        };
        autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name("env-group")
            .min_size(0)
            .max_size(2)
            .desired_capacity(0)
            .availability_zones(format!("{region}a"))
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_name("env-lt")
                    .version("$Latest")
                    .build(),
            )
            .tags(tag("k8s.io/cluster-autoscaler/enabled", "true"))
            .tags(tag("k8s.io/cluster-autoscaler/env", "owned"))
            .send()
            .await
            .expect("CreateAutoScalingGroup");

        let mut adapter = AwsNodeGroups::connect(config).await.unwrap();
        let now = Time::from_millis(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
        );
        let refresh = adapter.refresh(now).await.unwrap();
        assert_eq!(refresh.groups.len(), 1, "{:#?}", refresh.warnings);
        assert_eq!(
            refresh.groups[0].spec.shape.instance_type.as_str(),
            "m5.large"
        );
        adapter
            .set_target_size(&refresh.groups[0].spec.id, 1)
            .await
            .unwrap();
        assert_eq!(
            adapter.refresh(now).await.unwrap().groups[0]
                .instances
                .len(),
            1
        );
    });
}
