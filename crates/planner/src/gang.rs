//! Gang scale-up bookkeeping: a gang's nodes are launched together in one pool; if the
//! pool cannot deliver all of them within the gang window (or reports a failure),
//! the partial launch is rolled back so no node idles for a gang that cannot start,
//! and the pool is backed off so the next pass serves the gang elsewhere.

use crate::actions::TerminateReason;
use crate::events::PlannerEvent;
use crate::Planner;
use model::{ClusterSnapshot, GangId, InstanceId, LaunchFailureKind, NodeGroupId, PodPhase, Time};
use std::collections::{BTreeMap, BTreeSet};

/// One gang's launch in flight.
#[derive(Debug, Clone)]
pub(crate) struct GangLaunch {
    pub gang: GangId,
    pub group: NodeGroupId,
    /// Nodes requested for it.
    pub nodes: u32,
    pub started: Time,
    /// Instances of the group before the launch. The group was quiet when the launch
    /// began and nothing else launches in it until the gang is done, so every newer
    /// instance was launched for this gang: the attribution is exact, not by count.
    pub instances_before: BTreeSet<InstanceId>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct GangTracker {
    launches: BTreeMap<GangId, GangLaunch>,
    /// Gangs whose pool reported a failure since the last pass.
    failed: BTreeSet<GangId>,
    /// Gangs waiting for members, with the count last reported.
    incomplete: BTreeMap<GangId, u32>,
}

impl GangTracker {
    pub(crate) fn start(&mut self, launch: GangLaunch) {
        self.failed.remove(&launch.gang);
        self.launches.insert(launch.gang.clone(), launch);
    }

    /// The gang whose launch is under way in `group`, if any (at most one: a gang
    /// launches only into a quiet group, and nothing else launches there meanwhile).
    pub(crate) fn in_flight(&self, group: &NodeGroupId) -> Option<&GangId> {
        self.launches
            .values()
            .find(|l| &l.group == group)
            .map(|l| &l.gang)
    }

    /// A launch failure in `group`: its gangs will be rolled back on the next pass.
    pub(crate) fn group_failed(&mut self, group: &NodeGroupId) {
        for l in self.launches.values().filter(|l| &l.group == group) {
            self.failed.insert(l.gang.clone());
        }
    }
}

impl Planner {
    /// Gangs with fewer members than their marker's minimum (pending or running): no
    /// node is bought for them until the rest arrive (a queue or a controller creates
    /// a gang's pods one by one; buying for the first few would buy for a gang that
    /// cannot start). Each is reported once per member count.
    pub(crate) fn incomplete_gangs(
        &mut self,
        now: Time,
        snapshot: &ClusterSnapshot,
    ) -> BTreeSet<GangId> {
        let mut members: BTreeMap<&GangId, (u32, u32)> = BTreeMap::new();
        for p in &snapshot.pods {
            if let Some(g) = p.gang.as_ref().filter(|g| g.size > 0) {
                if p.is_unbound_pending() || p.occupies_node() || p.phase == PodPhase::Running {
                    let e = members.entry(&g.gang).or_insert((0, g.size));
                    e.0 += 1;
                    e.1 = e.1.max(g.size);
                }
            }
        }
        let mut out = BTreeSet::new();
        let mut reports = Vec::new();
        for (gang, (present, size)) in members {
            if present < size {
                out.insert(gang.clone());
                if self.gangs.incomplete.get(gang) != Some(&present) {
                    self.gangs.incomplete.insert(gang.clone(), present);
                    reports.push(PlannerEvent::GangIncomplete {
                        gang: gang.to_string(),
                        present,
                        size,
                    });
                }
            }
        }
        self.gangs.incomplete.retain(|g, _| out.contains(g));
        for e in reports {
            self.emit(now, e);
        }
        out
    }

    /// Completes or rolls back gang launches.
    pub(crate) fn check_gangs(&mut self, now: Time, snapshot: &ClusterSnapshot) {
        if self.gangs.launches.is_empty() {
            return;
        }
        // Gangs whose pods are all bound (or gone) are done.
        let mut pending_by_gang: BTreeMap<&GangId, u32> = BTreeMap::new();
        for p in &snapshot.pods {
            if let Some(g) = &p.gang {
                if p.node.is_none() && p.phase == PodPhase::Pending {
                    *pending_by_gang.entry(&g.gang).or_default() += 1;
                }
            }
        }
        let launches: Vec<GangLaunch> = self.gangs.launches.values().cloned().collect();
        for launch in launches {
            if !pending_by_gang.contains_key(&launch.gang) {
                self.gangs.launches.remove(&launch.gang);
                self.gangs.failed.remove(&launch.gang);
                continue;
            }
            let failed = self.gangs.failed.contains(&launch.gang);
            let timed_out =
                now.saturating_since(launch.started) >= self.settings.gang_provision_timeout;
            if failed || timed_out {
                self.roll_back_gang(now, snapshot, &launch, timed_out && !failed);
                self.gangs.launches.remove(&launch.gang);
                self.gangs.failed.remove(&launch.gang);
            }
        }
    }

    fn roll_back_gang(
        &mut self,
        now: Time,
        snapshot: &ClusterSnapshot,
        launch: &GangLaunch,
        back_off_pool: bool,
    ) {
        let Some(group) = snapshot.groups.iter().find(|g| g.spec.id == launch.group) else {
            return;
        };
        let mut occupied: BTreeSet<&str> = BTreeSet::new();
        for p in &snapshot.pods {
            if p.occupies_node() && !self.settings.is_node_infrastructure(p) {
                if let Some(n) = &p.node {
                    occupied.insert(n.as_str());
                }
            }
        }
        let node_of = |id: &InstanceId| {
            snapshot
                .nodes
                .iter()
                .find(|n| n.instance.as_ref() == Some(id))
        };
        let launched: Vec<_> = group
            .instances
            .iter()
            .filter(|i| {
                !launch.instances_before.contains(&i.id) && !self.terminating.contains_key(&i.id)
            })
            .take(launch.nodes as usize)
            .collect();
        // Nodes requested but never launched: give the desired capacity back first,
        // from the target before any rollback (never below the live instances, so the
        // ASG picks none to terminate itself).
        let target = self
            .requested_targets
            .get(&launch.group)
            .map_or(group.target, |r| r.target);
        let never_launched = launch.nodes.saturating_sub(launched.len() as u32);
        let live = group.instances.len() as u32;
        let undelivered = never_launched.min(target.saturating_sub(live));
        self.give_back(now, &launch.group, target, undelivered);
        for instance in &launched {
            let node = node_of(&instance.id);
            // Never take away a node that runs something (safety over tidiness).
            if node.is_some_and(|n| occupied.contains(n.name.as_str())) {
                continue;
            }
            // Fenced and verified like every removal (a gang scheduler binds the whole
            // gang at once, possibly just now); each lowers the target by one.
            self.begin_removal(
                now,
                &launch.group,
                &instance.id,
                node,
                TerminateReason::GangRollback,
            );
        }
        if back_off_pool {
            for zone in &group.spec.zones {
                let record = self.pools.record_failure(
                    now,
                    group.spec.pool(zone),
                    LaunchFailureKind::LaunchTimeout,
                    "gang could not be provisioned in time",
                );
                self.announce_backoff(now, record);
            }
        }
        self.emit(
            now,
            PlannerEvent::GangRolledBack {
                gang: launch.gang.to_string(),
                group: launch.group.clone(),
                launched: launched.len() as u32,
                needed: launch.nodes,
            },
        );
        // A ProvisioningRequest's launch is tried once: the request fails and its queue
        // retries with a new request (served by another pool, this one backed off).
        let why = if back_off_pool {
            "the nodes did not all arrive within the gang provision time"
        } else {
            "the launch failed"
        };
        self.requests.gang_rolled_back(
            &launch.gang,
            format!(
                "{} delivered {} of {} nodes and was rolled back: {why}",
                launch.group,
                launched.len(),
                launch.nodes
            ),
        );
    }
}
