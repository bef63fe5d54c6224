//! `batch-autoscaler explain NAMESPACE/POD`: why that pod did or did not trigger a
//! scale-up, per node group, from the live cluster and AWS — computed by the very
//! scale-up pass `run` uses (`planner::explain`). With `--provisioning-request`, the
//! same for a ProvisioningRequest: its conditions now, and what a pass would write and
//! buy for it (`planner::explain_request`).

use crate::run::{aws_config, kube_client, load};
use crate::run_config::ExplainArgs;
use crate::Failure;
use anyhow::anyhow;
use k8s::cache::build_parts;
use k8s::provreq::ProvisioningRequest;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, PodTemplate};
use kube::api::{Api, ListParams};
use model::{InstanceId, NodeGroupId, PodKey, Time};
use std::collections::BTreeMap;
use std::sync::Arc;

pub async fn explain(args: ExplainArgs) -> Result<(), Failure> {
    let pod = PodKey::parse(&args.pod);
    let cfg = load(args.run)?;
    let aws_cfg = aws_config(&cfg)?;
    let client = kube_client(cfg.flags.kubeconfig.as_deref())
        .await
        .map_err(Failure::Runtime)?;
    let now = Time::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    );
    let mut groups = aws::AwsNodeGroups::connect(aws_cfg)
        .await
        .map_err(|e| Failure::Runtime(e.into()))?;
    let refresh = groups
        .refresh(now)
        .await
        .map_err(|e| Failure::Runtime(e.into()))?;
    for w in &refresh.warnings {
        eprintln!("warning: {w}");
    }
    let rt = |e: kube::Error| Failure::Runtime(anyhow!("listing from the cluster: {e}"));
    let lp = ListParams::default();
    let nodes: Vec<Arc<Node>> = Api::<Node>::all(client.clone())
        .list(&lp)
        .await
        .map_err(rt)?
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    let pods: Vec<Arc<Pod>> = Api::<Pod>::all(client.clone())
        .list(&lp)
        .await
        .map_err(rt)?
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    let ds: Vec<Arc<DaemonSet>> = Api::<DaemonSet>::all(client.clone())
        .list(&lp)
        .await
        .map_err(rt)?
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    let namespace = cfg
        .flags
        .namespace
        .clone()
        .unwrap_or_else(|| "kube-system".into());
    let priorities: Option<ConfigMap> = Api::<ConfigMap>::namespaced(client.clone(), &namespace)
        .get_opt(k8s::cache::PRIORITY_CONFIGMAP)
        .await
        .map_err(rt)?;
    let instance_group: BTreeMap<InstanceId, NodeGroupId> = refresh
        .groups
        .iter()
        .flat_map(|g| {
            g.instances
                .iter()
                .map(|i| (i.id.clone(), g.spec.id.clone()))
        })
        .collect();
    let (requests, templates) = if args.provisioning_request {
        let requests = Api::<ProvisioningRequest>::all(client.clone())
            .list(&lp)
            .await
            .map_err(rt)?
            .items;
        let templates = Api::<PodTemplate>::all(client.clone())
            .list(&lp)
            .await
            .map_err(rt)?
            .items;
        (requests, templates)
    } else {
        (Vec::new(), Vec::new())
    };
    let parts = build_parts(
        true,
        &nodes,
        &pods,
        &ds,
        priorities.as_ref(),
        &requests,
        &templates,
        |i| instance_group.get(i).cloned(),
    );
    for s in &parts.skipped {
        eprintln!("warning: skipped {s}");
    }
    let snapshot = parts.into_snapshot(refresh.groups, 1);
    if args.provisioning_request {
        let answer = planner::explain_request(cfg.settings, now, &snapshot, &pod)
            .map_err(|e| Failure::BadInput(anyhow!("{}: {}", e.field, e.message)))?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&answer).unwrap_or_default()
            );
        } else {
            print!("provisioning request {pod}: {answer}");
        }
        return Ok(());
    }
    let answer = planner::explain(cfg.settings, now, &snapshot, &pod)
        .map_err(|e| Failure::BadInput(anyhow!("{}: {}", e.field, e.message)))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
    } else {
        println!("{pod}: {answer}");
    }
    Ok(())
}
