//! Removing an instance, safely: decide → fence → verify → terminate.
//!
//! Every termination of an instance whose node exists in Kubernetes (empty, drained,
//! unready, gang rollback) goes through here. A decision is taken on a snapshot that
//! is older than the moment of termination, and an empty node is exactly where the
//! scheduler binds the next pod; so the node is first fenced (our `NoSchedule`
//! retiring taint), then, once the fence is written and `fence-settle-time` has let
//! every scheduler see it, a [`Action::VerifyRemoval`] reads the node and its pods
//! afresh (after the taint). Only evidence that nothing but DaemonSet and mirror pods
//! is bound there leads to [`Action::TerminateInstance`]; anything else aborts the
//! removal and lifts a fence this removal put up.
//!
//! An instance that never became a node (launch timeout, gang rollback of an instance
//! still booting) is verified too: a node may have registered for it since.

use crate::actions::{Action, ActionId, Outcome, RemovalEvidence, TerminateReason};
use crate::events::PlannerEvent;
use crate::scaledown::is_retired;
use crate::{Planner, PlannerSettings, TargetRequest};
use model::{
    ClusterSnapshot, InstanceId, InstanceState, NodeGroupId, NodeName, NodeView, PodView, Time,
};
use std::collections::BTreeSet;

/// One removal in progress.
#[derive(Debug, Clone)]
pub(crate) struct Removal {
    group: NodeGroupId,
    node: Option<NodeName>,
    reason: TerminateReason,
    /// This removal put the fence up (the node was not retired before): an abort
    /// takes it down again. A node retired for its batch pods stays retired.
    fenced_here: bool,
    step: Step,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// The fence (RetireNode) is being written.
    Fencing(ActionId),
    /// The fence is written (or was there already, or there is no node to fence);
    /// the evidence is read from this time on.
    Settling { due: Time },
    /// The evidence is being read.
    Verifying(ActionId),
    /// TerminateInstance was issued (and, once its outcome is in, accepted) at `since`.
    Terminating { since: Time },
}

/// How long an instance whose termination was accepted may still be shown running
/// (neither gone nor terminating) before the planner stops counting it as going: the
/// call did nothing (a dry-run sends nothing; or the cloud dropped it). AWS shows an
/// accepted termination within seconds, lifecycle hooks included (they are a
/// terminating state).
const TERMINATION_UNSEEN_AFTER: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// What the evidence says about a removal.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    Clear,
    Abort(String),
}

/// Judges evidence read after the fence: the removal may go ahead only if the node
/// still carries the fence and nothing but node infrastructure is bound to it, or
/// nominated to it (placed by a scheduler whose binding is still under way: volume
/// binding, a coscheduling permit wait; the fence-settle time does not cover those).
pub(crate) fn judge(
    evidence: &RemovalEvidence,
    expected_node: Option<&NodeName>,
    now: Time,
    settings: &PlannerSettings,
) -> Verdict {
    if let Some(node) = &evidence.node {
        if expected_node.is_some_and(|n| n != &node.name) {
            return Verdict::Abort(format!(
                "the instance is now node {}, not the node decided on",
                node.name
            ));
        }
        if !is_retired(node) {
            return Verdict::Abort("the node no longer carries the retiring taint".into());
        }
    }
    // No node backs the instance (deleted, no providerID yet, its name reused): the
    // evidence still lists what is bound to the name decided on, and that decides.
    // A pod stuck terminating on a node that is not Ready holds nothing (no kubelet
    // will finish it); the pods of a node that is gone are judged as they are.
    let dead_node = evidence.node.as_ref().is_some_and(|n| !n.ready);
    let workload: Vec<&PodView> = evidence
        .pods
        .iter()
        .filter(|p| (p.occupies_node() || p.is_nominated()) && !settings.is_node_infrastructure(p))
        .filter(|p| !(dead_node && p.stuck_terminating(now)))
        .collect();
    match workload.as_slice() {
        [] => Verdict::Clear,
        [first, rest @ ..] => Verdict::Abort(format!(
            "pod {}{} is on the node (read after the fence)",
            first.key,
            if rest.is_empty() {
                String::new()
            } else {
                format!(" and {} more", rest.len())
            }
        )),
    }
}

impl Planner {
    /// Starts removing `instance` (of `group`), backed by `node` when it registered.
    /// The instance counts as terminating from here on (no second decision, no
    /// un-retiring); nothing is terminated until the evidence is in.
    pub(crate) fn begin_removal(
        &mut self,
        now: Time,
        group: &NodeGroupId,
        instance: &InstanceId,
        node: Option<&NodeView>,
        reason: TerminateReason,
    ) {
        if self.terminating.contains_key(instance) {
            return;
        }
        self.terminating.insert(instance.clone(), now);
        // The instance no longer counts as capacity from here on (scale-up looks
        // elsewhere at once); an abort gives it back.
        self.adjust_requested_target(now, group, -1);
        let step;
        let mut fenced_here = false;
        match node {
            Some(n) if !is_retired(n) => {
                let id = self.next_id();
                self.actions.push_back(Action::RetireNode {
                    id,
                    node: n.name.clone(),
                    reason: format!("fenced before removal ({})", reason.as_str()),
                });
                fenced_here = true;
                step = Step::Fencing(id);
            }
            // Already fenced: the snapshot that shows the taint was read after it was
            // written, so evidence read from now on is newer than the fence; the
            // settle time still lets every scheduler see it.
            Some(_) => {
                step = Step::Settling {
                    due: now + self.settings.fence_settle_time,
                }
            }
            // No node: nothing to fence, nothing to settle; the evidence says whether
            // a node registered for the instance since.
            None => step = Step::Settling { due: now },
        }
        // Without a node now, the name the instance last had is still evidence: a
        // Node object deleted, or stripped of its providerID, leaves its kubelet and
        // its pods running under that name.
        let expected = node
            .map(|n| n.name.clone())
            .or_else(|| self.known_nodes.get(instance).map(|(n, _)| n.clone()));
        let removal = Removal {
            group: group.clone(),
            node: expected,
            reason,
            fenced_here,
            step,
        };
        self.removals.insert(instance.clone(), removal);
        self.advance_removals(now);
    }

    /// Removals of `group` whose TerminateInstance is still to be issued. Each lowers
    /// the group's desired capacity by one when it is carried out, after any
    /// SetTargetSize issued now, while the planner counts the instance as gone from
    /// the moment the removal began: a desired capacity issued now must include them
    /// (and the group's max must leave room for them), or the decrements undo a
    /// scale-up and, below the running instances, let EC2 Auto Scaling pick victims.
    pub(crate) fn decrements_to_come(&self, group: &NodeGroupId) -> u32 {
        self.removals
            .values()
            .filter(|r| &r.group == group && !matches!(r.step, Step::Terminating { .. }))
            .count() as u32
    }

    /// Forgets terminations that the snapshot, long after they were sent, still shows
    /// running: the instance counts as capacity again and may be chosen again (a
    /// dry-run keeps reporting what it would do; a dropped call is made again, through
    /// a fresh fence and verification).
    pub(crate) fn forget_unapplied_terminations(&mut self, now: Time, snapshot: &ClusterSnapshot) {
        let running: BTreeSet<&InstanceId> = snapshot
            .groups
            .iter()
            .flat_map(|g| g.instances.iter())
            .filter(|i| i.state != InstanceState::Terminating)
            .map(|i| &i.id)
            .collect();
        let stale: Vec<InstanceId> = self
            .removals
            .iter()
            .filter(|(id, r)| {
                matches!(r.step, Step::Terminating { since }
                    if now.saturating_since(since) >= TERMINATION_UNSEEN_AFTER)
                    && running.contains(id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for instance in stale {
            self.removals.remove(&instance);
            self.terminating.remove(&instance);
            self.emit(
                now,
                PlannerEvent::Warning {
                    message: format!(
                        "instance {instance} still runs {} after its termination was sent (a dry-run sends nothing; otherwise the cloud did not act): it counts as capacity again",
                        model::time::format_duration(TERMINATION_UNSEEN_AFTER)
                    ),
                },
            );
        }
    }

    /// Issues the verification of every removal whose fence has settled.
    pub(crate) fn advance_removals(&mut self, now: Time) {
        // A removal whose instance left `terminating` (gone, or failed) is over.
        let terminating = &self.terminating;
        self.removals
            .retain(|instance, _| terminating.contains_key(instance));
        let due: Vec<InstanceId> = self
            .removals
            .iter()
            .filter_map(|(instance, r)| match r.step {
                Step::Settling { due } if now >= due => Some(instance.clone()),
                Step::Settling { due } => {
                    self.wake_at.insert(due);
                    None
                }
                _ => None,
            })
            .collect();
        for instance in due {
            let id = self.next_id();
            let r = self.removals.get_mut(&instance).expect("due removal");
            r.step = Step::Verifying(id);
            let action = Action::VerifyRemoval {
                id,
                group: r.group.clone(),
                instance: instance.clone(),
                node: r.node.clone(),
                reason: r.reason.clone(),
            };
            self.actions.push_back(action);
        }
    }

    /// The outcome of a fence or a verification that belongs to a removal. Returns
    /// false when `action` is not part of one.
    pub(crate) fn removal_outcome(
        &mut self,
        now: Time,
        action: &Action,
        outcome: &Outcome,
    ) -> bool {
        let id = action.id();
        let Some(instance) = self
            .removals
            .iter()
            .find(|(_, r)| matches!(r.step, Step::Fencing(a) | Step::Verifying(a) if a == id))
            .map(|(i, _)| i.clone())
        else {
            return false;
        };
        let r = self.removals.get(&instance).expect("found").clone();
        match (&r.step, outcome) {
            (Step::Fencing(_), Outcome::Done) => {
                let due = now + self.settings.fence_settle_time;
                self.removals.get_mut(&instance).expect("found").step = Step::Settling { due };
                self.advance_removals(now);
            }
            (Step::Fencing(_), Outcome::Gone) => {
                // The node object is gone: verify what the instance still backs.
                self.removals.get_mut(&instance).expect("found").step = Step::Settling { due: now };
                self.advance_removals(now);
            }
            (Step::Verifying(_), Outcome::Evidence(evidence)) => {
                match judge(evidence, r.node.as_ref(), now, &self.settings) {
                    Verdict::Clear => self.terminate_verified(now, &instance, &r),
                    Verdict::Abort(why) => self.abort_removal(now, &instance, &r, why),
                }
            }
            (Step::Verifying(_), Outcome::Gone) => {
                // The instance is gone already: nothing left to terminate.
                self.removals.remove(&instance);
            }
            (_, Outcome::Retry { message } | Outcome::Failed { message }) => {
                self.emit(
                    now,
                    PlannerEvent::ActionFailed {
                        action: action.to_string(),
                        message: message.clone(),
                    },
                );
                self.abort_removal(
                    now,
                    &instance,
                    &r,
                    "the fence or the evidence could not be obtained".into(),
                );
            }
            (_, other) => {
                // A verification answered without evidence is no proof of anything.
                let why = format!("no evidence for the removal ({other:?})");
                self.abort_removal(now, &instance, &r, why);
            }
        }
        true
    }

    fn terminate_verified(&mut self, now: Time, instance: &InstanceId, r: &Removal) {
        if let Some(removal) = self.removals.get_mut(instance) {
            removal.step = Step::Terminating { since: now };
        }
        if let Some(node) = &r.node {
            self.draining_since.remove(node);
        }
        let id = self.next_id();
        self.actions.push_back(Action::TerminateInstance {
            id,
            group: r.group.clone(),
            instance: instance.clone(),
            node: r.node.clone(),
            reason: r.reason.clone(),
        });
        self.emit(
            now,
            PlannerEvent::ScaleDown {
                node: r.node.clone(),
                instance: instance.clone(),
                group: r.group.clone(),
                reason: r.reason.clone(),
            },
        );
        if r.reason != TerminateReason::LaunchTimeout {
            self.last_scale_down = Some(now);
        }
    }

    /// Moves the group's remembered target by `delta` (TerminateInstance lowers the
    /// desired capacity by one with the instance). A request keeps its age: moving it
    /// sends nothing, so it must not win the trust of a fresh request over what the
    /// cloud shows.
    pub(crate) fn adjust_requested_target(&mut self, now: Time, group: &NodeGroupId, delta: i64) {
        let current = self
            .requested_targets
            .get(group)
            .map(|t| (t.target, t.at))
            .or_else(|| self.last_targets.get(group).map(|&t| (t, now)));
        if let Some((current, at)) = current {
            let target = u32::try_from((i64::from(current) + delta).max(0)).unwrap_or(u32::MAX);
            self.requested_targets
                .insert(group.clone(), TargetRequest { target, at });
        }
    }

    fn abort_removal(&mut self, now: Time, instance: &InstanceId, r: &Removal, why: String) {
        self.removals.remove(instance);
        self.terminating.remove(instance);
        self.adjust_requested_target(now, &r.group, 1);
        self.last_scale_down_failure = Some(now);
        if let Some(node) = &r.node {
            self.draining_since.remove(node);
            self.pending_removals.remove(node);
            if r.fenced_here {
                let id = self.next_id();
                self.actions.push_back(Action::UnretireNode {
                    id,
                    node: node.clone(),
                });
            }
            self.emit(
                now,
                PlannerEvent::ScaleDownCancelled {
                    node: node.clone(),
                    why,
                },
            );
        } else {
            self.emit(
                now,
                PlannerEvent::Warning {
                    message: format!(
                        "removal of instance {instance} of {} cancelled: {why}",
                        r.group
                    ),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::well_known::TAINT_RETIRING;
    use model::{Owner, PodKey, PodPhase, Resources, Taint, TaintEffect};

    /// The verdict under the default settings.
    fn judge(evidence: &RemovalEvidence, expected: Option<&NodeName>, now: Time) -> Verdict {
        super::judge(evidence, expected, now, &PlannerSettings::default())
    }

    fn node(fenced: bool) -> NodeView {
        let mut n = NodeView::new(NodeName::new("n1"), Resources::cpu_mem(4, 16), Time::ZERO);
        if fenced {
            n.taints.push(Taint {
                key: TAINT_RETIRING.into(),
                value: String::new(),
                effect: TaintEffect::NoSchedule,
            });
        }
        n
    }

    fn pod(owner: Owner, phase: PodPhase) -> PodView {
        let mut p = PodView::new(
            PodKey::new("d", "p"),
            Resources::cpu_mem(1, 1),
            owner,
            Time::ZERO,
        );
        p.node = Some(NodeName::new("n1"));
        p.phase = phase;
        p
    }

    #[test]
    fn evidence_with_only_node_infrastructure_or_finished_pods_is_clear() {
        let e = RemovalEvidence {
            node: Some(node(true)),
            pods: vec![
                pod(Owner::DaemonSet("ds".into()), PodPhase::Running),
                pod(Owner::Mirror, PodPhase::Running),
                pod(Owner::Job("j".into()), PodPhase::Succeeded),
            ],
        };
        assert_eq!(
            judge(&e, Some(&NodeName::new("n1")), Time::ZERO),
            Verdict::Clear
        );
    }

    /// Issue 20, path 2: "the node is gone" is no evidence that nothing runs there.
    #[test]
    fn a_pod_bound_to_the_expected_name_aborts_when_no_node_backs_the_instance() {
        let e = RemovalEvidence {
            node: None,
            pods: vec![pod(Owner::Job("j".into()), PodPhase::Running)],
        };
        assert!(matches!(
            judge(&e, Some(&NodeName::new("n1")), Time::ZERO),
            Verdict::Abort(_)
        ));
        let empty = RemovalEvidence {
            node: None,
            pods: vec![],
        };
        assert_eq!(
            judge(&empty, Some(&NodeName::new("n1")), Time::ZERO),
            Verdict::Clear
        );
    }

    #[test]
    fn a_pod_bound_after_the_fence_aborts_whatever_its_owner() {
        for owner in [
            Owner::Job("j".into()),
            Owner::replica_set("r"),
            Owner::Bare,
            Owner::controller("argoproj.io", "Workflow", "w"),
        ] {
            let e = RemovalEvidence {
                node: Some(node(true)),
                pods: vec![pod(owner.clone(), PodPhase::Pending)],
            };
            assert!(
                matches!(
                    judge(&e, Some(&NodeName::new("n1")), Time::ZERO),
                    Verdict::Abort(_)
                ),
                "{owner:?}"
            );
        }
    }

    #[test]
    fn a_node_whose_fence_was_lifted_or_that_changed_identity_aborts() {
        let e = RemovalEvidence {
            node: Some(node(false)),
            pods: vec![],
        };
        assert!(matches!(
            judge(&e, Some(&NodeName::new("n1")), Time::ZERO),
            Verdict::Abort(_)
        ));
        let e = RemovalEvidence {
            node: Some(node(true)),
            pods: vec![],
        };
        assert!(matches!(
            judge(&e, Some(&NodeName::new("other")), Time::ZERO),
            Verdict::Abort(_)
        ));
        // An instance that registered a node since the decision (decided with none):
        // the fence is not there, so it is not removed.
        assert!(matches!(
            judge(
                &RemovalEvidence {
                    node: Some(node(false)),
                    pods: vec![]
                },
                None,
                Time::ZERO
            ),
            Verdict::Abort(_)
        ));
        assert_eq!(
            judge(
                &RemovalEvidence {
                    node: None,
                    pods: vec![]
                },
                None,
                Time::ZERO
            ),
            Verdict::Clear
        );
    }

    /// Issue 20, the second edge: a pod a scheduler has placed on the node but not bound
    /// yet (its volume binding or a coscheduling permit is still under way) is as good
    /// as bound there.
    #[test]
    fn a_pod_nominated_to_the_node_aborts() {
        let mut nominated = pod(Owner::Job("j".into()), PodPhase::Pending);
        nominated.node = None;
        nominated.nominated_node = Some(NodeName::new("n1"));
        let e = RemovalEvidence {
            node: Some(node(true)),
            pods: vec![nominated],
        };
        assert!(matches!(
            judge(&e, Some(&NodeName::new("n1")), Time::ZERO),
            Verdict::Abort(_)
        ));
    }

    /// Issue 20, the first edge: a pod of a DaemonSet-like controller of another API
    /// group holds the node unless its kind is on `node-infrastructure-owner-kinds`.
    #[test]
    fn node_infrastructure_kinds_of_other_groups_are_a_setting() {
        let e = RemovalEvidence {
            node: Some(node(true)),
            pods: vec![pod(
                Owner::controller("apps.kruise.io", "DaemonSet", "agent"),
                PodPhase::Running,
            )],
        };
        assert!(matches!(
            judge(&e, Some(&NodeName::new("n1")), Time::ZERO),
            Verdict::Abort(_)
        ));
        let mut settings = PlannerSettings::default();
        settings.node_infrastructure_owner_kinds =
            crate::OwnerKinds::parse("apps.kruise.io/DaemonSet").unwrap();
        assert_eq!(
            super::judge(&e, Some(&NodeName::new("n1")), Time::ZERO, &settings),
            Verdict::Clear
        );
    }
}
