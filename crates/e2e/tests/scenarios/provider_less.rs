//! A node whose kubelet registered without a providerID (its cloud controller has not
//! set it, or never will): the autoscaler cannot tell which instance it is, so it must
//! not take the instance for a launch that never joined and terminate it under the
//! node's pods (issue 20, path 3).

use super::*;

#[test]
fn an_instance_whose_node_has_no_provider_id_is_not_terminated_while_the_node_runs_a_pod() {
    scenario("provider-less", |s| Box::pin(provider_less(s)));
}

async fn provider_less(s: &mut Scenario) -> Result<()> {
    s.primary()
        .group(
            &GroupOptions::new("pl-m5", "m5.large", 2)
                .tag(e2e::moto::TAG_NO_PROVIDER_ID, "true")
                .boot_delay("3s"),
        )
        .await?;
    let _bridge = s.bridge(Duration::from_secs(3)).await?;
    let recorder = Recorder::start(&s.kube, &s.namespace, &s.cluster);
    let provision = Duration::from_secs(20);
    let _autoscaler = s
        .autoscaler("main", &s.options().flag("max-node-provision-time", "20s"))
        .await?;
    create_job(
        &s.kube,
        &s.namespace,
        "pl-work",
        1,
        &PodTemplate::new("1500m", "1Gi").runs_for("30m"),
    )
    .await?;
    let (pod, node, instance) = interruptions::running_pod(s).await?;
    let launched = Instant::now();
    s.note(&format!(
        "pod {pod} Running on {node} (no providerID) of instance {instance}"
    ));
    // Past the provision time (and a few passes more), the instance, the node and the
    // pod are all still there, and the pool is not blamed for a launch that timed out.
    let watch = provision + Duration::from_secs(25);
    let mut samples = 0;
    while launched.elapsed() < watch {
        let group = s.primary().group_report("pl-m5").await?;
        ensure!(
            group.instances.contains(&instance),
            "instance {instance} was removed while its node ran {pod}: {group:?}"
        );
        let running = kube_util::pods(&s.kube, &s.namespace)
            .await?
            .iter()
            .any(|p| {
                p.metadata.name.as_deref() == Some(pod.as_str())
                    && kube_util::pod_phase(p) == "Running"
            });
        ensure!(running, "{pod} stopped running");
        samples += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let tags = backoff_tags(s.primary(), "pl-m5").await?;
    ensure!(tags.is_empty(), "the pool was blamed: {tags:?}");
    ensure!(
        recorder.killed_pods().is_empty(),
        "pods killed: {:?}",
        recorder.killed_pods()
    );
    s.note(&format!(
        "{samples} samples over {}s past the pod's start: instance kept, pod running",
        watch.as_secs()
    ));
    Ok(())
}
