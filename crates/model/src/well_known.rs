//! Names of labels, annotations and taints the autoscaler reads or writes. Ours live
//! under `batch-autoscaler.io/`; the others are honoured so users of Cluster
//! Autoscaler, Karpenter and the seed project can migrate without relabelling.

// ---- Labels every node carries (set by the kubelet / cloud provider) ----
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
pub const LABEL_INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
pub const LABEL_INSTANCE_TYPE_BETA: &str = "beta.kubernetes.io/instance-type";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
pub const LABEL_ZONE_BETA: &str = "failure-domain.beta.kubernetes.io/zone";
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";
pub const LABEL_REGION_BETA: &str = "failure-domain.beta.kubernetes.io/region";
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
pub const LABEL_OS: &str = "kubernetes.io/os";
/// EKS's capacity type label: `ON_DEMAND` or `SPOT`.
pub const LABEL_CAPACITY_TYPE: &str = "eks.amazonaws.com/capacityType";
/// Set by the kubelet on GPU nodes (CA's convention); the device plugin may not have
/// advertised `nvidia.com/gpu` yet.
pub const LABEL_ACCELERATOR: &str = "k8s.amazonaws.com/accelerator";
/// Control-plane node roles: never managed.
pub const LABEL_CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";
pub const LABEL_MASTER: &str = "node-role.kubernetes.io/master";

// ---- Pod annotations that decide whether a pod may be evicted ----
/// Cluster Autoscaler: `true`, `false` or `on-completion`.
pub const ANNOTATION_SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
/// Karpenter: `true` forbids voluntary disruption.
pub const ANNOTATION_DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
/// The seed project: label `openai/do-not-drain=true`.
pub const LABEL_DO_NOT_DRAIN: &str = "openai/do-not-drain";

// ---- Pod annotations for gangs and expected durations (ours) ----
/// `"true"` on a pod (template) makes its job a gang: all of its pods run together or none do.
pub const ANNOTATION_GANG: &str = "batch-autoscaler.io/gang";
/// Optional gang name; defaults to the owning Job's name.
pub const ANNOTATION_GANG_NAME: &str = "batch-autoscaler.io/gang-name";
/// Number of pods the gang needs; without it, every pod of the gang present. The batch
/// ecosystem's own markers are honoured too (below, and `GangSource`).
pub const ANNOTATION_GANG_SIZE: &str = "batch-autoscaler.io/gang-size";
/// Kueue plain-pod groups: the group's name (label) and how many pods it has (annotation).
pub const LABEL_KUEUE_POD_GROUP: &str = "kueue.x-k8s.io/pod-group-name";
pub const ANNOTATION_KUEUE_POD_GROUP_TOTAL: &str = "kueue.x-k8s.io/pod-group-total-count";
/// scheduler-plugins coscheduling: the `PodGroup` (`scheduling.x-k8s.io`) a pod belongs to.
pub const LABEL_COSCHEDULING_POD_GROUP: &str = "scheduling.x-k8s.io/pod-group";
/// Volcano: the `PodGroup` (`scheduling.volcano.sh`) a pod belongs to.
pub const ANNOTATION_VOLCANO_GROUP_NAME: &str = "scheduling.k8s.io/group-name";
/// The ProvisioningRequest whose booking a pod consumes (and CA's older spelling).
pub const ANNOTATION_CONSUME_PROVISIONING_REQUEST: &str =
    "autoscaling.x-k8s.io/consume-provisioning-request";
pub const ANNOTATION_CA_CONSUME_PROVISIONING_REQUEST: &str =
    "cluster-autoscaler.kubernetes.io/consume-provisioning-request";
/// How long the pod is expected to run (`45m`), used to rank nodes to retire.
pub const ANNOTATION_EXPECTED_DURATION: &str = "batch-autoscaler.io/expected-duration";

// ---- Node annotations and taints ----
/// Cluster Autoscaler: `true` keeps the node out of scale-down.
pub const ANNOTATION_SCALE_DOWN_DISABLED: &str =
    "cluster-autoscaler.kubernetes.io/scale-down-disabled";
/// The seed project: label `openai/detached=true` means hands off.
pub const LABEL_DETACHED: &str = "openai/detached";
/// Ours: since when (RFC 3339 / Unix seconds) the node has had nothing to do.
pub const ANNOTATION_IDLE_SINCE: &str = "batch-autoscaler.io/idle-since";
/// Ours: why the node is being retired.
pub const ANNOTATION_RETIRE_REASON: &str = "batch-autoscaler.io/retire-reason";
/// Ours: when the node was retired.
pub const ANNOTATION_RETIRED_AT: &str = "batch-autoscaler.io/retired-at";
/// Ours: NoSchedule taint on a node being retired: nothing new lands, it goes when empty.
pub const TAINT_RETIRING: &str = "batch-autoscaler.io/retiring";
/// Cluster Autoscaler's taint on nodes it is deleting (recognised, never written).
pub const TAINT_CA_TO_BE_DELETED: &str = "ToBeDeletedByClusterAutoscaler";
/// Cluster Autoscaler's soft taint on deletion candidates (recognised, never written).
pub const TAINT_CA_DELETION_CANDIDATE: &str = "DeletionCandidateOfClusterAutoscaler";
