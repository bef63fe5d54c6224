//! Node groups (Auto Scaling Groups), their instances, node shapes and capacity pools.

use crate::ids::{InstanceId, InstanceTypeName, NodeGroupId, Region, Zone};
use crate::resources::{Resources, NVIDIA_GPU};
use crate::scheduling::{Labels, Taint};
use crate::time::Time;
use crate::well_known::*;
use serde::{Deserialize, Serialize};
use std::fmt;

/// On-demand or spot capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PurchaseOption {
    OnDemand,
    Spot,
}

impl PurchaseOption {
    /// EKS's spelling for the capacity-type label.
    pub fn label_value(self) -> &'static str {
        match self {
            Self::OnDemand => "ON_DEMAND",
            Self::Spot => "SPOT",
        }
    }
}

/// What a node of a group offers to pods before DaemonSets: the instance's capacity
/// minus the kubelet and system reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeShape {
    pub instance_type: InstanceTypeName,
    /// `amd64` or `arm64`.
    pub arch: String,
    pub capacity: Resources,
    pub allocatable: Resources,
}

/// Default pods per node (the kubelet's default; EKS's ENI-based limit may be lower).
pub const DEFAULT_MAX_PODS: u32 = 110;
/// Ephemeral storage assumed per node: EKS's default 20 GiB root volume.
pub const DEFAULT_EPHEMERAL_STORAGE_BYTES: i64 = 20 << 30;

impl NodeShape {
    /// The shape of an instance with the given hardware, reserved the way the EKS AMI
    /// reserves it (an approximation stated in ARCHITECTURE.md): cpu 6% of the first
    /// core, 1% of the second, 0.5% of the next two, 0.25% of the rest; memory
    /// 255 MiB + 11 MiB per pod, plus the 100 MiB hard eviction threshold; 10% of the
    /// root volume.
    pub fn for_instance(
        instance_type: InstanceTypeName,
        arch: &str,
        vcpus: u32,
        memory_mib: u64,
        gpus: u32,
        max_pods: u32,
    ) -> Self {
        let mut capacity = Resources::cpu_mem(i64::from(vcpus) * 1000, (memory_mib as i64) << 20);
        capacity.pods = i64::from(max_pods);
        capacity.ephemeral_storage_bytes = DEFAULT_EPHEMERAL_STORAGE_BYTES;
        if gpus > 0 {
            capacity.add_extended(NVIDIA_GPU, i64::from(gpus));
        }
        let cores = i64::from(vcpus);
        let reserved_cpu_millis = match cores {
            0 => 0,
            1 => 60,
            2 => 70,
            3 | 4 => 70 + (cores - 2) * 5,
            _ => 80 + (cores - 4) * 5 / 2,
        };
        let reserved_memory = (255 + 11 * i64::from(max_pods) + 100) << 20;
        let mut allocatable = capacity.clone();
        allocatable.cpu_millis = (allocatable.cpu_millis - reserved_cpu_millis).max(0);
        allocatable.memory_bytes = (allocatable.memory_bytes - reserved_memory).max(0);
        allocatable.ephemeral_storage_bytes -= DEFAULT_EPHEMERAL_STORAGE_BYTES / 10;
        Self {
            instance_type,
            arch: arch.to_owned(),
            capacity,
            allocatable,
        }
    }
}

/// A node group: an ASG in production, a declared group in the simulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeGroupSpec {
    pub id: NodeGroupId,
    pub region: Region,
    /// Zones the group launches into (its subnets' zones).
    pub zones: Vec<Zone>,
    /// The shape used to simulate new nodes (first override of a mixed policy).
    pub shape: NodeShape,
    pub min_size: u32,
    pub max_size: u32,
    /// Labels new nodes will carry beyond the well-known ones (from tags / config).
    pub labels: Labels,
    /// Taints new nodes will carry (from tags / config).
    pub taints: Vec<Taint>,
    pub purchase: PurchaseOption,
    /// USD per instance-hour, if known.
    pub price_per_hour: Option<f64>,
    /// Preference of the group's region: 0 is the primary region (`--aws-regions` order).
    pub region_rank: u32,
    /// The group replaces spot instances at risk by itself (the ASG's Capacity
    /// Rebalancing): the autoscaler fences such an instance's node but buys no
    /// replacement of its own.
    #[serde(default)]
    pub capacity_rebalance: bool,
}

impl NodeGroupSpec {
    /// The labels a new node of this group in `zone` will carry, the kubelet's and
    /// cloud provider's well-known ones included. `kubernetes.io/hostname` is left
    /// out: each node has its own.
    pub fn template_labels(&self, zone: &Zone) -> Labels {
        let mut labels = Labels::new();
        let it = self.shape.instance_type.0.clone();
        labels.insert(LABEL_INSTANCE_TYPE, it.clone());
        labels.insert(LABEL_INSTANCE_TYPE_BETA, it);
        labels.insert(LABEL_ZONE, zone.0.clone());
        labels.insert(LABEL_ZONE_BETA, zone.0.clone());
        labels.insert(LABEL_REGION, self.region.0.clone());
        labels.insert(LABEL_REGION_BETA, self.region.0.clone());
        labels.insert(LABEL_ARCH, self.shape.arch.clone());
        labels.insert(LABEL_OS, "linux");
        labels.insert(LABEL_CAPACITY_TYPE, self.purchase.label_value());
        for (k, v) in &self.labels {
            labels.insert(k, v);
        }
        labels
    }

    /// The capacity pool of this group in `zone`.
    pub fn pool(&self, zone: &Zone) -> PoolKey {
        PoolKey {
            region: self.region.clone(),
            zone: zone.clone(),
            instance_type: self.shape.instance_type.clone(),
            purchase: self.purchase,
        }
    }
}

/// Lifecycle of an instance as the cloud reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum InstanceState {
    /// Launching (not yet InService).
    Pending,
    InService,
    /// Terminating or terminated.
    Terminating,
}

/// One instance of a node group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    pub id: InstanceId,
    pub zone: Zone,
    pub state: InstanceState,
    pub launched_at: Time,
}

/// A node group with its current cloud-side state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeGroupState {
    pub spec: NodeGroupSpec,
    /// Desired capacity.
    pub target: u32,
    pub instances: Vec<InstanceView>,
}

/// A capacity pool: region × zone × instance type × purchase option. Launch failures
/// back off pools, not groups.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PoolKey {
    pub region: Region,
    pub zone: Zone,
    pub instance_type: InstanceTypeName,
    pub purchase: PurchaseOption,
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let purchase = match self.purchase {
            PurchaseOption::OnDemand => "on-demand",
            PurchaseOption::Spot => "spot",
        };
        write!(
            f,
            "{}/{}/{}/{}",
            self.region, self.zone, self.instance_type, purchase
        )
    }
}

/// Why instances could not be launched, classified from scaling activities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LaunchFailureKind {
    /// `InsufficientInstanceCapacity` and friends.
    InsufficientCapacity,
    /// Instance or vCPU limit of the account.
    Quota,
    /// `Max spot instance count exceeded` and spot capacity problems.
    SpotLimit,
    /// `Client.VolumeLimitExceeded`.
    VolumeLimit,
    /// Bad launch template, AMI, subnet…: retrying will not help until someone fixes it.
    InvalidConfiguration,
    /// Instances launched but never registered as nodes within the provision time.
    LaunchTimeout,
    /// Not a launch failure: the pool's spot instances were interrupted repeatedly
    /// (the pool is avoided on a scale of its own, `spot-interruption-backoff`).
    SpotInterruptions,
    Other,
}

impl LaunchFailureKind {
    /// A short, stable name for metrics and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InsufficientCapacity => "insufficient-capacity",
            Self::Quota => "quota",
            Self::SpotLimit => "spot-limit",
            Self::VolumeLimit => "volume-limit",
            Self::InvalidConfiguration => "invalid-configuration",
            Self::LaunchTimeout => "launch-timeout",
            Self::SpotInterruptions => "spot-interruptions",
            Self::Other => "other",
        }
    }
}

/// A failed launch, as reported by a cloud adapter (AWS scaling activity, simulator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchFailure {
    pub group: NodeGroupId,
    /// The zone, if the cloud said; otherwise every zone of the group is affected.
    pub zone: Option<Zone>,
    pub kind: LaunchFailureKind,
    /// Instances that will not come.
    pub count: u32,
    pub message: String,
    pub at: Time,
}
