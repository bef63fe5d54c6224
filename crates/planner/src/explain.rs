//! Why did (or would) a pending pod trigger a scale-up? Answered by running the very
//! scale-up pass the autoscaler runs, on a fresh planner, and reading what it said
//! about that pod — so the explanation cannot drift from the behaviour.

use crate::events::{NoScaleUpReason, PlannerEvent};
use crate::{Planner, PlannerSettings, SettingsError};
use model::{ClusterSnapshot, NodeGroupId, PodKey, PodPhase, Time};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// The answer for one pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum PodExplanation {
    /// No such pod in the snapshot.
    NotFound,
    /// The pod is bound to a node or finished: nothing to explain.
    NotPending { phase: String, node: Option<String> },
    /// Below the expendable cutoff, or outside `--pod-namespace`.
    Ignored { why: String },
    /// It fits on existing or upcoming capacity: no new node is needed.
    FitsExistingOrUpcoming,
    /// A scale-up of this group would be triggered for it.
    TriggersScaleUp {
        group: NodeGroupId,
        from: u32,
        to: u32,
    },
    /// No group can help; the reason per group.
    NoScaleUp {
        reasons: BTreeMap<NodeGroupId, NoScaleUpReason>,
    },
}

impl fmt::Display for PodExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("pod not found"),
            Self::NotPending { phase, node } => write!(
                f,
                "not pending: phase {phase}, node {}",
                node.as_deref().unwrap_or("-")
            ),
            Self::Ignored { why } => write!(f, "ignored by the autoscaler: {why}"),
            Self::FitsExistingOrUpcoming => {
                f.write_str("fits on existing or upcoming capacity: no scale-up needed")
            }
            Self::TriggersScaleUp { group, from, to } => {
                write!(f, "triggers a scale-up of {group} ({from} -> {to})")
            }
            Self::NoScaleUp { reasons } => {
                writeln!(f, "no node group can help:")?;
                if reasons.is_empty() {
                    writeln!(f, "  (no node groups)")?;
                }
                for (g, r) in reasons {
                    writeln!(f, "  {g}: {r}")?;
                }
                Ok(())
            }
        }
    }
}

/// Explains `pod` against `snapshot` under `settings`.
pub fn explain(
    settings: PlannerSettings,
    now: Time,
    snapshot: &ClusterSnapshot,
    pod: &PodKey,
) -> Result<PodExplanation, SettingsError> {
    let Some(view) = snapshot.pods.iter().find(|p| &p.key == pod) else {
        return Ok(PodExplanation::NotFound);
    };
    if !view.is_unbound_pending() {
        let phase = match view.phase {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
        };
        return Ok(PodExplanation::NotPending {
            phase: phase.into(),
            node: view.node.as_ref().map(|n| n.to_string()),
        });
    }
    if view.priority < settings.expendable_pods_priority_cutoff {
        return Ok(PodExplanation::Ignored {
            why: format!(
                "priority {} is below expendable-pods-priority-cutoff {}",
                view.priority, settings.expendable_pods_priority_cutoff
            ),
        });
    }
    if let Some(ns) = &settings.pod_namespace {
        if *ns != pod.namespace {
            return Ok(PodExplanation::Ignored {
                why: format!("pod-namespace is {ns}"),
            });
        }
    }
    // Ask as if the scheduler had already given up on the pod; scale-down is off so
    // only the scale-up half speaks.
    let mut snapshot = snapshot.clone();
    snapshot.synced = true;
    for p in snapshot.pods.iter_mut().filter(|p| &p.key == pod) {
        p.unschedulable = true;
    }
    let mut planner = Planner::new(PlannerSettings {
        scale_down_enabled: false,
        ..settings
    })?;
    planner.handle_snapshot(now, &snapshot);
    while let Some((_, event)) = planner.poll_event() {
        match event {
            PlannerEvent::TriggeredScaleUp {
                group,
                from,
                to,
                pods,
            } if pods.contains(pod) => {
                return Ok(PodExplanation::TriggersScaleUp { group, from, to });
            }
            PlannerEvent::NotTriggerScaleUp { pod: p, reasons } if &p == pod => {
                return Ok(PodExplanation::NoScaleUp {
                    reasons: reasons.to_map(),
                })
            }
            _ => {}
        }
    }
    Ok(PodExplanation::FitsExistingOrUpcoming)
}

/// The answer for one ProvisioningRequest: its status now and what a pass of the
/// autoscaler would write, with the scale-up it would make.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestExplanation {
    pub found: bool,
    pub class: String,
    pub pods: usize,
    /// The request's conditions as they are.
    pub conditions: Vec<model::RequestCondition>,
    /// The conditions a pass would set now (type, status, reason, message); empty when
    /// the status already says it all.
    pub would_set: Vec<(model::ConditionType, bool, String, String)>,
    /// The scale-up a pass would make for it: group, from, to.
    pub scale_up: Option<(NodeGroupId, u32, u32)>,
}

impl fmt::Display for RequestExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.found {
            return f.write_str("provisioning request not found");
        }
        writeln!(f, "class {}, {} pods", self.class, self.pods)?;
        for c in &self.conditions {
            writeln!(
                f,
                "  now:       {}={} ({}): {}",
                c.kind,
                if c.status { "True" } else { "False" },
                c.reason,
                c.message
            )?;
        }
        for (kind, status, reason, message) in &self.would_set {
            writeln!(
                f,
                "  would set: {kind}={} ({reason}): {message}",
                if *status { "True" } else { "False" }
            )?;
        }
        if let Some((group, from, to)) = &self.scale_up {
            writeln!(f, "  would scale up {group} {from} -> {to} for it")?;
        }
        if self.would_set.is_empty() && self.scale_up.is_none() {
            writeln!(
                f,
                "  nothing to change: the status says it all, or its capacity is on its way"
            )?;
        }
        Ok(())
    }
}

/// Explains a ProvisioningRequest by running one pass on a fresh planner (scale-down
/// off) and reading what it said about the request. A fresh planner does not know of a
/// launch the running autoscaler started; it counts the capacity on its way, as the
/// running one does.
pub fn explain_request(
    settings: PlannerSettings,
    now: Time,
    snapshot: &ClusterSnapshot,
    request: &PodKey,
) -> Result<RequestExplanation, SettingsError> {
    let Some(view) = snapshot
        .provisioning_requests
        .iter()
        .find(|r| &r.key == request)
    else {
        return Ok(RequestExplanation {
            found: false,
            class: String::new(),
            pods: 0,
            conditions: vec![],
            would_set: vec![],
            scale_up: None,
        });
    };
    let mut answer = RequestExplanation {
        found: true,
        class: view.class.as_str().to_owned(),
        pods: view.pods.len(),
        conditions: view.conditions.clone(),
        would_set: vec![],
        scale_up: None,
    };
    let mut snapshot = snapshot.clone();
    snapshot.synced = true;
    let mut planner = Planner::new(PlannerSettings {
        scale_down_enabled: false,
        ..settings
    })?;
    planner.handle_snapshot(now, &snapshot);
    while let Some((_, event)) = planner.poll_event() {
        match event {
            PlannerEvent::ProvisioningRequestUpdated {
                request: r,
                condition,
                status,
                reason,
                message,
            } if &r == request => {
                answer.would_set.push((condition, status, reason, message));
            }
            PlannerEvent::ProvisioningRequestScaleUp {
                request: r,
                group,
                from,
                to,
            } if &r == request => answer.scale_up = Some((group, from, to)),
            _ => {}
        }
    }
    Ok(answer)
}
