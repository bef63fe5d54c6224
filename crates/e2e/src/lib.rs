//! The end-to-end environment of batch-autoscaler (issue 5), as a test-support library.
//!
//! One test binary gets one [`World`]: a real control plane started by
//! `testenv/start-control-plane.sh` (etcd, kube-apiserver with RBAC, scheduler,
//! controller-manager, KWOK with the project's stages), one moto server
//! (`crates/aws/moto/launcher.py`), the shipped RBAC (the ServiceAccount and roles of `deploy/manifests/batch-autoscaler.yaml`)
//! applied with kubectl, and a kubeconfig for the `batch-autoscaler` ServiceAccount.
//! Each test is a [`Scenario`]: serialised behind a global lock, with its own
//! namespace, its own directory of logs, moto reset before it, a [`CloudBridge`]
//! playing the kubelets and the cloud controller, and the autoscaler binary started
//! as a separate process ([`Autoscaler`]).
//!
//! Gate: without `BATCH_AUTOSCALER_E2E=1` (or without the control-plane binaries)
//! a scenario prints a `SKIPPED` line and passes, unless `CI` is set, where it fails.
//! With `BATCH_AUTOSCALER_E2E=1` a missing piece is a failure, never a skip.
//!
//! What this crate must never do: build the control plane (a cold build takes
//! ~18 minutes; `scripts/test-all.sh` does it), leave a process running after the
//! test binary exits (a reaper process cleans up even after a crash), or stand in
//! for a condition with a fixed sleep (every wait polls a condition with a deadline).

pub mod autoscaler;
pub mod bridge;
pub mod gate;
pub mod http;
pub mod kube_util;
pub mod kueue;
pub mod manifests;
pub mod moto;
pub mod paths;
pub mod process;
pub mod proxy;
pub mod replay;
pub mod scenario;
pub mod wait;
pub mod world;

pub use autoscaler::{Autoscaler, AutoscalerOptions, Metrics};
pub use bridge::{BridgeConfig, CloudBridge, GroupSample};
pub use moto::{Fixtures, GroupOptions, Moto};
pub use scenario::{scenario, scenario_with, Scenario};
pub use wait::{wait_until, Deadline};
pub use world::World;
