//! `batch-autoscaler run`: the production controller. Wires the Kubernetes adapter,
//! the AWS adapter, the driver loop, leader election and the HTTP endpoints.

use crate::cloud::AwsCloud;
use crate::interruptions::SqsInterruptions;
use crate::run_config::{resolve, RunArgs, RunConfig};
use crate::slack::SlackNotifier;
use crate::Failure;
use anyhow::{anyhow, Context};
use driver::{Driver, DriverConfig, NoNotifier, Notifier, Ports, SystemClock};
use k8s::actuator::Actuator;
use k8s::cache::{CacheConfig, ClusterCache};
use k8s::events::EventPoster;
use k8s::leader::{always_leader, elect, LeaderConfig};
use k8s::port::KubeCluster;
use k8s::status::{StatusWriter, DEFAULT_STATUS_CONFIGMAP};
use model::{parse_duration, Region};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Reads the config file (if any) and merges everything; bad input is exit 2.
pub fn load(args: RunArgs) -> Result<RunConfig, Failure> {
    let file = match &args.config {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            Failure::BadInput(anyhow!("config: cannot read {}: {e}", path.display()))
        })?),
        None => None,
    };
    resolve(args, file.as_deref()).map_err(|e| Failure::BadInput(e.into()))
}

pub fn init_logging(verbose: u8, json: bool) {
    let level = match verbose {
        0 => "info",
        1 => "info,batch_autoscaler=debug,driver=debug,planner=debug",
        2 => "debug",
        _ => "trace",
    };
    // The AWS SDK's debug logs print the credentials struct with the access key id:
    // its crates stay at info whatever the verbosity.
    let level = format!("{level},aws_config=info,aws_runtime=info,aws_sigv4=info,aws_credential_types=info,aws_smithy_runtime=info,aws_smithy_runtime_api=info,aws_smithy_http_client=info,aws_sdk_autoscaling=info,aws_sdk_sts=info,aws_types=info");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The kube client from `--kubeconfig`, else in-cluster / the default kubeconfig.
pub async fn kube_client(path: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let mut config = match path {
        Some(p) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await?
        }
        None => kube::Config::infer().await?,
    };
    // kube 5's default retry layer retries 429/503/504 up to 15 times with a backoff
    // growing towards 1000 s. A PodDisruptionBudget refusing an eviction answers 429,
    // so one refused eviction would stall the control loop for minutes. The adapter
    // handles those answers itself (a refused eviction is retried on a later pass,
    // failed writes on the next loop); watches have their own backoff.
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

pub fn aws_config(cfg: &RunConfig) -> Result<aws::AwsConfig, Failure> {
    let f = &cfg.flags;
    let bad = |e: aws::ConfigError| Failure::BadInput(e.into());
    let regions: Vec<Region> = if f.aws_regions.is_empty() {
        std::env::var("AWS_REGION")
            .ok()
            .map(|r| vec![Region::new(r)])
            .unwrap_or_default()
    } else {
        f.aws_regions
            .iter()
            .map(|r| Region::new(r.trim()))
            .collect()
    };
    if regions.is_empty() {
        return Err(Failure::BadInput(anyhow!(
            "aws-regions: required (or AWS_REGION)"
        )));
    }
    let static_groups = f
        .nodes
        .iter()
        .map(|n| aws::parse_static_group(n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    for spec in &f.node_group_auto_discovery {
        aws::parse_auto_discovery(spec).map_err(bad)?;
    }
    Ok(aws::AwsConfig {
        cluster_name: f.cluster_name.clone().unwrap_or_default(),
        regions,
        static_groups,
        auto_discovery: f.node_group_auto_discovery.clone(),
        credentials: aws::Credentials::from_keys(
            f.aws_access_key.clone(),
            f.aws_secret_key.clone(),
        )
        .map_err(bad)?,
        endpoint_url: f.aws_endpoint_url.clone(),
        max_pods: f.max_pods.unwrap_or(model::group::DEFAULT_MAX_PODS),
        prices: Default::default(),
        retry: aws::RetrySettings::production(),
    })
}

fn duration_or(text: &Option<String>, default: Duration) -> Duration {
    text.as_deref()
        .and_then(|t| parse_duration(t).ok())
        .unwrap_or(default)
}

fn listen_address(text: Option<&str>) -> Result<SocketAddr, Failure> {
    let text = text.unwrap_or(":8085");
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_owned()
    };
    full.parse().map_err(|_| {
        Failure::BadInput(anyhow!(
            "address: expected host:port or :port, got {text:?}"
        ))
    })
}

/// This replica's identity for the lease: the pod name when set, else host and pid.
fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "local".into());
        format!("{host}-{}", std::process::id())
    })
}

pub async fn run(args: RunArgs) -> Result<(), Failure> {
    let cfg = load(args)?;
    init_logging(
        cfg.flags.verbose,
        cfg.flags.log_format.as_deref() == Some("json"),
    );
    let address = listen_address(cfg.flags.address.as_deref())?;
    let aws_cfg = aws_config(&cfg)?;
    let namespace = cfg
        .flags
        .namespace
        .clone()
        .unwrap_or_else(|| "kube-system".into());
    let status_name = cfg
        .flags
        .status_config_map_name
        .clone()
        .unwrap_or_else(|| DEFAULT_STATUS_CONFIGMAP.into());
    if cfg.flags.over_provision.is_some() || cfg.flags.drain_utilization.is_some() {
        tracing::warn!("--over-provision and --drain-utilization are accepted for the seed's sake and ignored (see docs)");
    }
    tracing::info!(dry_run = cfg.flags.dry_run, cluster = ?cfg.flags.cluster_name, regions = ?aws_cfg.regions, "starting");

    let queues: Vec<SqsInterruptions> = crate::run_config::interruption_queues(
        &cfg.flags.interruption_queue,
        aws_cfg.regions.first().map(|r| r.as_str()),
    )
    .map_err(|e| Failure::BadInput(e.into()))?
    .into_iter()
    .map(|q| SqsInterruptions::new(aws_cfg.clone(), Region::new(q.region), q.queue))
    .collect();
    let client = kube_client(cfg.flags.kubeconfig.as_deref())
        .await
        .map_err(Failure::Runtime)?;
    let mut groups = aws::AwsNodeGroups::connect(aws_cfg)
        .await
        .map_err(|e| Failure::Runtime(e.into()))?;
    // Dry-run writes nothing to AWS, not even the scaling-activity markers.
    groups.set_read_only(cfg.flags.dry_run);
    let (gang_apis, notes) = k8s::cache::discover_gang_apis(&client).await;
    for note in notes {
        tracing::info!("gang PodGroups: {note}");
    }
    let cache_cfg = CacheConfig {
        priority_configmap_namespace: namespace.clone(),
        provisioning_requests: cfg.flags.enable_provisioning_requests.unwrap_or(false),
        gang_apis,
    };
    let (cache, watch_tasks) = ClusterCache::start(client.clone(), &cache_cfg);
    let trigger = cache.unschedulable_trigger();
    let me = identity();
    let cluster = KubeCluster {
        cache,
        actuator: Actuator::new(client.clone()),
        events: EventPoster::new(
            client.clone(),
            me.clone(),
            namespace.clone(),
            status_name.clone(),
        ),
        status: StatusWriter::new(client.clone(), &namespace, &status_name),
    };
    let mut driver_cfg = DriverConfig::new(cfg.flags.dry_run, cfg.settings.scan_interval);
    driver_cfg.batch_window = duration_or(&cfg.flags.batch_window, driver::DEFAULT_BATCH_WINDOW);
    driver_cfg.batch_idle = duration_or(&cfg.flags.batch_idle, driver::DEFAULT_BATCH_IDLE);
    // A dry-run takes no part in leader election: taking the Lease would be a write,
    // and a dry-run replica next to the real autoscaler could win it and stop the
    // real one from acting. It plans as if it led.
    let leader = if cfg.flags.leader_elect.unwrap_or(true) && !cfg.flags.dry_run {
        let leader_cfg = LeaderConfig {
            namespace: cfg
                .flags
                .leader_elect_resource_namespace
                .clone()
                .unwrap_or_else(|| namespace.clone()),
            lease_name: cfg
                .flags
                .leader_elect_resource_name
                .clone()
                .unwrap_or_else(|| "batch-autoscaler".into()),
            identity: me.clone(),
            lease_duration: duration_or(
                &cfg.flags.leader_elect_lease_duration,
                Duration::from_secs(15),
            ),
            renew_deadline: duration_or(
                &cfg.flags.leader_elect_renew_deadline,
                Duration::from_secs(10),
            ),
            retry_period: duration_or(&cfg.flags.leader_elect_retry_period, Duration::from_secs(2)),
        };
        let (rx, _task) = elect(client.clone(), &leader_cfg)
            .await
            .map_err(|e| Failure::BadInput(anyhow!("{e}")))?;
        rx
    } else {
        always_leader()
    };
    match cfg.flags.slack_hook.as_deref().filter(|h| !h.is_empty()) {
        Some(hook) if !cfg.flags.dry_run => {
            let notifier = SlackNotifier::new(hook).map_err(|e| Failure::BadInput(anyhow!(e)))?;
            drive(
                driver_cfg,
                cfg,
                AwsCloud(groups),
                cluster,
                notifier,
                trigger,
                leader,
                address,
                watch_tasks,
                queues,
            )
            .await
        }
        _ => {
            drive(
                driver_cfg,
                cfg,
                AwsCloud(groups),
                cluster,
                NoNotifier,
                trigger,
                leader,
                address,
                watch_tasks,
                queues,
            )
            .await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn drive<N: Notifier>(
    driver_cfg: DriverConfig,
    cfg: RunConfig,
    cloud: AwsCloud,
    cluster: KubeCluster,
    notifier: N,
    trigger: Arc<tokio::sync::Notify>,
    leader: tokio::sync::watch::Receiver<driver::Leadership>,
    address: SocketAddr,
    watch_tasks: Vec<tokio::task::JoinHandle<()>>,
    queues: Vec<SqsInterruptions>,
) -> Result<(), Failure> {
    let dry_run = driver_cfg.dry_run;
    let mut driver = Driver::new(
        driver_cfg,
        cfg.settings.clone(),
        Ports {
            cloud,
            cluster,
            notifier,
        },
        Arc::new(SystemClock),
    )
    .map_err(|e| Failure::BadInput(anyhow!("{}: {}", e.field, e.message)))?;
    // Interruption notices: one polling task per region's queue, all feeding the loop.
    let (stop_queues, queues_stopped) = tokio::sync::watch::channel(false);
    if !queues.is_empty() && dry_run {
        // Receiving is not reading: a received message is hidden from the autoscaler
        // that acts on it for the queue's visibility timeout, and every receive counts
        // toward the queue's redrive policy. A dry-run leaves the queue alone.
        tracing::info!(
            queues = queues.len(),
            "dry-run: the interruption queue is not read (receiving a message would hide it from the autoscaler that acts on it)"
        );
    } else if !queues.is_empty() {
        let (sender, feed) = driver::interruption_feed(trigger.clone());
        driver.set_interruption_feed(feed);
        for queue in queues {
            let mut stopped = queues_stopped.clone();
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            tokio::spawn(driver::run_interruption_queue(
                queue,
                sender.clone(),
                driver.http_state().metrics,
                leader.clone(),
                stop,
            ));
        }
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Failure::Runtime(anyhow!("address {address}: {e}")))?;
    tracing::info!(%address, "serving /metrics, /healthz, /readyz");
    let http = tokio::spawn(driver::serve_listener(listener, driver.http_state()));
    // A watch task that ends (or panics) leaves a view nothing keeps current: the view
    // turns unsynced at once (no decisions), and the process exits non-zero so that
    // Kubernetes restarts it with fresh watches.
    let watch_ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ended = watch_ended.clone();
    let shutdown = async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        let any_watch_ended = async {
            if watch_tasks.is_empty() {
                std::future::pending::<()>().await;
            }
            let _ = futures::future::select_all(watch_tasks).await;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
            () = any_watch_ended => {
                ended.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::error!("a watch of the cluster ended; exiting so that the process is restarted");
            },
        }
        tracing::info!("shutting down");
    };
    driver.run(trigger, leader, shutdown).await;
    let _ = stop_queues.send(true);
    http.abort();
    if watch_ended.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Failure::Runtime(anyhow!(
            "a watch of the cluster ended unexpectedly"
        )));
    }
    Ok(())
}
