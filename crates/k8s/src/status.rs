//! The status ConfigMap (`batch-autoscaler-status` by default), rewritten every loop
//! with server-side apply so `kubectl get cm batch-autoscaler-status -o yaml` shows
//! the autoscaler's view: per group target/registered/ready/upcoming/backoff, last
//! scale-up/down, health.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;

pub const DEFAULT_STATUS_CONFIGMAP: &str = "batch-autoscaler-status";

/// Writes the status ConfigMap.
#[derive(Clone)]
pub struct StatusWriter {
    api: Api<ConfigMap>,
    name: String,
}

impl StatusWriter {
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
        }
    }

    /// Replaces the ConfigMap's `status` key with `text` (YAML) and `lastUpdate`.
    pub async fn write(&self, text: &str, last_update: &str) -> Result<(), kube::Error> {
        let body = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.name},
            "data": {"status": text, "lastUpdate": last_update}
        });
        self.api
            .patch(
                &self.name,
                &PatchParams::apply("batch-autoscaler").force(),
                &Patch::Apply(&body),
            )
            .await?;
        Ok(())
    }
}
