//! Fast first-fit: indexes over a [`PlacementSim`]'s nodes that answer "the first node
//! that takes this pod" without trying every node, and give the same answer as
//! `PlacementSim::first_fit` over the same candidates in the same order.
//!
//! - [`FreeTree`]: a max-tree of the free cpu, memory, pod slots and GPUs of a list of
//!   nodes; the leftmost node whose free amounts all cover a request is found in
//!   O(log n) when it exists. It only prunes: every node it proposes is checked with
//!   the real predicates.
//! - [`CapacityIndex`]: nodes bucketed by what the label and taint predicates see
//!   (origin, group, labels other than the hostname, taints), one `FreeTree` per bucket,
//!   the label/taint verdict cached per (pod class, bucket), and a cursor per class:
//!   free capacity only shrinks and residents only come while pods are placed (a
//!   gang's rollback restores an earlier, never a roomier, state), so a node that could
//!   not take a member of a class cannot take a later, identical member either; a
//!   refusal for anti-affinity counts only when the class's members share their labels
//!   (they have terms themselves), and once no node takes a member, the search for the
//!   next one is skipped.
//!
//! This module owns no decision: it must never answer differently from the plain
//! first-fit (`tests/fit.rs` checks that on random worlds).

use crate::hash::FxHashMap;
use crate::placement::{NodeIdx, NodeOrigin, PlacementSim};
use crate::predicates::{check_anti_affinity, check_labels_and_taints};
use model::well_known::LABEL_HOSTNAME;
use model::Labels;
use model::{NodeAffinity, NodeGroupId, PodView, Resources, Taint, Toleration};

/// The amounts the tree prunes on: cpu millis, memory bytes, pod slots, GPUs.
pub(crate) type Key = [i64; 4];

/// What `r` asks for, as a tree key.
pub(crate) fn key_of(r: &Resources) -> Key {
    [r.cpu_millis, r.memory_bytes, r.pods, r.gpus()]
}

/// What is left of `allocatable` after `used`, as a tree key.
pub(crate) fn free_key(allocatable: &Resources, used: &Resources) -> Key {
    [
        allocatable.cpu_millis - used.cpu_millis,
        allocatable.memory_bytes - used.memory_bytes,
        allocatable.pods - used.pods,
        allocatable.gpus() - used.gpus(),
    ]
}

/// `request` fits in what is left of `allocatable` after `used`: the same rule as
/// `Resources::fits_in_remaining`, without building the shortfall (no allocation).
pub(crate) fn fits(request: &Resources, allocatable: &Resources, used: &Resources) -> bool {
    let ok = |requested: i64, alloc: i64, taken: i64| requested <= 0 || requested <= alloc - taken;
    ok(request.cpu_millis, allocatable.cpu_millis, used.cpu_millis)
        && ok(
            request.memory_bytes,
            allocatable.memory_bytes,
            used.memory_bytes,
        )
        && ok(
            request.ephemeral_storage_bytes,
            allocatable.ephemeral_storage_bytes,
            used.ephemeral_storage_bytes,
        )
        && ok(request.pods, allocatable.pods, used.pods)
        && request
            .extended
            .iter()
            .all(|(name, v)| ok(*v, allocatable.extended(name), used.extended(name)))
}

/// Why a node did not take a pod, as far as the cursor cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dynamic {
    Fits,
    /// Not enough room: the same for every member of the pod's class.
    NoRoom,
    /// Anti-affinity with a resident: may differ between members of a class (labels
    /// are part of a class only for pods with anti-affinity terms).
    AntiAffinity,
}

/// `PlacementSim::can_place_dynamic` without allocating on a miss.
fn dynamic(sim: &PlacementSim<'_>, pod: usize, slot: NodeIdx) -> Dynamic {
    let p = &sim.pods()[pod];
    let n = sim.node(slot);
    if !fits(&p.requests, &n.allocatable, &n.used) {
        return Dynamic::NoRoom;
    }
    if sim.anti_affinity_in_play()
        && check_anti_affinity(p, n.residents.iter().map(|&i| &sim.pods()[i])).is_err()
    {
        return Dynamic::AntiAffinity;
    }
    Dynamic::Fits
}

fn covers(have: &Key, want: &Key) -> bool {
    // A request of zero or less never limits (as in `fits`).
    (0..4).all(|d| want[d] <= 0 || have[d] >= want[d])
}

/// A max-tree over a fixed number of leaves.
#[derive(Debug, Clone)]
pub(crate) struct FreeTree {
    leaves: usize,
    max: Vec<Key>,
}

const EMPTY: Key = [i64::MIN; 4];

impl FreeTree {
    /// A tree of `n` leaves, all "full" (nothing fits) until set.
    pub(crate) fn new(n: usize) -> Self {
        let leaves = n.max(1).next_power_of_two();
        Self {
            leaves,
            max: vec![EMPTY; 2 * leaves],
        }
    }

    /// Sets leaf `i` to `free`.
    pub(crate) fn set(&mut self, i: usize, free: Key) {
        let mut at = self.leaves + i;
        self.max[at] = free;
        while at > 1 {
            at /= 2;
            let (l, r) = (self.max[2 * at], self.max[2 * at + 1]);
            self.max[at] = [
                l[0].max(r[0]),
                l[1].max(r[1]),
                l[2].max(r[2]),
                l[3].max(r[3]),
            ];
        }
    }

    /// The leftmost leaf at or after `lo` whose free amounts cover `want`.
    pub(crate) fn first_at_or_after(&self, lo: usize, want: &Key) -> Option<usize> {
        if lo >= self.leaves || !covers(&self.max[1], want) {
            return None;
        }
        self.descend(1, 0, self.leaves, lo, want)
    }

    fn descend(&self, at: usize, start: usize, len: usize, lo: usize, want: &Key) -> Option<usize> {
        if start + len <= lo || !covers(&self.max[at], want) {
            return None;
        }
        if len == 1 {
            return Some(start);
        }
        let half = len / 2;
        self.descend(2 * at, start, half, lo, want)
            .or_else(|| self.descend(2 * at + 1, start + half, half, lo, want))
    }
}

/// Which nodes a unit may go to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Targets<'a> {
    /// Every node of the simulation.
    All,
    /// Existing nodes, plus the upcoming nodes of this group.
    ExistingAnd(&'a NodeGroupId),
}

struct Bucket {
    /// Node slots, ascending.
    slots: Vec<NodeIdx>,
    tree: FreeTree,
    origin: NodeOrigin,
    group: Option<NodeGroupId>,
    /// A node of the bucket whose labels and taints stand for all of them.
    sample: NodeIdx,
}

/// Every node one signature of pods may use (the union of its compatible buckets), in
/// slot order, with one `FreeTree`: "the first node at or after the cursor with room"
/// is then one tree descent instead of one per bucket.
struct Reach {
    slots: Vec<NodeIdx>,
    tree: FreeTree,
}

/// Where a signature's first-fit searches go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReachState {
    NotBuilt,
    Built(u32),
    /// Over the memory budget: searched bucket by bucket.
    Buckets,
}

/// Reach trees hold at most this many times the placeable nodes in leaves, in all: a
/// bound on memory whatever the variety of pending pods.
const REACH_BUDGET_PER_NODE: usize = 32;

/// The first-fit index of one scale-up pass over existing and upcoming nodes.
pub(crate) struct CapacityIndex {
    buckets: Vec<Bucket>,
    /// Per node slot: (bucket, position in the bucket), if the node can take pods at all.
    place_of: Vec<Option<(usize, usize)>>,
    /// Per class: its signature, what the label and taint predicates read of its pods
    /// (node selector, required affinity, tolerations); classes that differ only in
    /// requests or labels share one.
    signature: Vec<u32>,
    /// Label/taint verdict per (signature, bucket), at `signature * buckets.len() + bucket`:
    /// 0 not checked yet, 1 compatible, 2 not.
    compat: Vec<u8>,
    /// Per signature: its reach tree, if built.
    reach_of: Vec<ReachState>,
    reaches: Vec<Reach>,
    /// Per node slot: (reach, position in it) of every reach holding the node.
    reach_places: Vec<Vec<(u32, u32)>>,
    /// Leaves the reaches may still take (see `REACH_BUDGET_PER_NODE`).
    reach_budget: usize,
    /// Per class: no slot before this one takes a member of the class.
    cursor: Vec<NodeIdx>,
    /// Per class: the class's selectors read the hostname, so buckets cannot stand in.
    per_node: Vec<bool>,
    /// Per class: its pods have anti-affinity terms, so (`classes.rs`) they share labels
    /// and namespace too, and a node's anti-affinity verdict is the same for all of them.
    has_terms: Vec<bool>,
}

/// What the label and taint predicates see of a node: origin, group, labels but the
/// hostname, taints.
type BucketKey<'a> = (
    u8,
    Option<&'a NodeGroupId>,
    Vec<(&'a str, &'a str)>,
    &'a [Taint],
);

/// What the label and taint predicates read of a pod: node selector, required node
/// affinity, tolerations.
type SignatureKey<'a> = (&'a Labels, &'a Option<NodeAffinity>, &'a [Toleration]);

/// Whether a pod's node selector or affinity reads the hostname label (then nodes
/// that differ only by hostname are not interchangeable for it).
fn reads_hostname(pod: &PodView) -> bool {
    pod.node_selector.contains_key(LABEL_HOSTNAME)
        || pod.required_affinity.as_ref().is_some_and(|a| {
            a.terms
                .iter()
                .any(|t| t.match_expressions.iter().any(|r| r.key == LABEL_HOSTNAME))
        })
}

impl CapacityIndex {
    /// Indexes the nodes `slots` of `sim` (ascending); `class_reps[c]` is a member of
    /// class `c`.
    pub(crate) fn new(sim: &PlacementSim<'_>, slots: &[NodeIdx], class_reps: &[usize]) -> Self {
        let mut by_key: FxHashMap<BucketKey<'_>, usize> = FxHashMap::default();
        let mut buckets: Vec<Bucket> = Vec::new();
        let n_slots = sim.nodes().len();
        let mut place_of = vec![None; n_slots];
        for &slot in slots {
            let node = sim.node(slot);
            if !node.ready || node.cordoned {
                continue;
            }
            let origin_tag = match node.origin {
                NodeOrigin::Existing => 0,
                NodeOrigin::Upcoming => 1,
                NodeOrigin::Template => 2,
            };
            let labels: Vec<(&str, &str)> = node
                .labels
                .iter()
                .filter(|(k, _)| *k != LABEL_HOSTNAME)
                .collect();
            let key = (
                origin_tag,
                node.group.as_ref(),
                labels,
                node.taints.as_slice(),
            );
            let b = *by_key.entry(key).or_insert_with(|| {
                buckets.push(Bucket {
                    slots: Vec::new(),
                    tree: FreeTree::new(0),
                    origin: node.origin.clone(),
                    group: node.group.clone(),
                    sample: slot,
                });
                buckets.len() - 1
            });
            place_of[slot] = Some((b, buckets[b].slots.len()));
            buckets[b].slots.push(slot);
        }
        for bucket in &mut buckets {
            bucket.tree = FreeTree::new(bucket.slots.len());
            for (pos, &slot) in bucket.slots.iter().enumerate() {
                let n = sim.node(slot);
                bucket.tree.set(pos, free_key(&n.allocatable, &n.used));
            }
        }
        let pods = sim.pods();
        let mut signature_ids: FxHashMap<SignatureKey<'_>, u32> = FxHashMap::default();
        let signature: Vec<u32> = class_reps
            .iter()
            .map(|&r| {
                let p = &pods[r];
                let next = signature_ids.len() as u32;
                *signature_ids
                    .entry((
                        &p.node_selector,
                        &p.required_affinity,
                        p.tolerations.as_slice(),
                    ))
                    .or_insert(next)
            })
            .collect();
        let n_signatures = signature_ids.len();
        let placeable = place_of.iter().filter(|p| p.is_some()).count();
        Self {
            compat: vec![0; n_signatures * buckets.len()],
            reach_of: vec![ReachState::NotBuilt; n_signatures],
            reaches: Vec::new(),
            reach_places: vec![Vec::new(); n_slots],
            reach_budget: REACH_BUDGET_PER_NODE * placeable.max(1),
            signature,
            buckets,
            place_of,
            cursor: vec![0; class_reps.len()],
            per_node: class_reps
                .iter()
                .map(|&p| reads_hostname(&pods[p]))
                .collect(),
            has_terms: class_reps
                .iter()
                .map(|&p| !pods[p].anti_affinity.is_empty())
                .collect(),
        }
    }

    /// Call after pods were placed on or removed from `slot`.
    pub(crate) fn refresh(&mut self, sim: &PlacementSim<'_>, slot: NodeIdx) {
        if let Some((b, pos)) = self.place_of[slot] {
            let n = sim.node(slot);
            let free = free_key(&n.allocatable, &n.used);
            self.buckets[b].tree.set(pos, free);
            for &(r, pos) in &self.reach_places[slot] {
                self.reaches[r as usize].tree.set(pos as usize, free);
            }
        }
    }

    /// The reach tree of `class`'s signature, built on first use; `None` if the budget
    /// is spent (search bucket by bucket then).
    fn reach(&mut self, sim: &PlacementSim<'_>, p: &PodView, class: usize) -> Option<usize> {
        let sig = self.signature[class] as usize;
        match self.reach_of[sig] {
            ReachState::Built(r) => return Some(r as usize),
            ReachState::Buckets => return None,
            ReachState::NotBuilt => {}
        }
        let mut slots = Vec::new();
        for b in 0..self.buckets.len() {
            if self.compatible_bucket(sim, p, class, b) {
                slots.extend_from_slice(&self.buckets[b].slots);
            }
        }
        let leaves = slots.len().max(1).next_power_of_two();
        if leaves > self.reach_budget {
            self.reach_of[sig] = ReachState::Buckets;
            return None;
        }
        self.reach_budget -= leaves;
        slots.sort_unstable();
        let r = self.reaches.len();
        let mut tree = FreeTree::new(slots.len());
        for (pos, &slot) in slots.iter().enumerate() {
            let n = sim.node(slot);
            tree.set(pos, free_key(&n.allocatable, &n.used));
            self.reach_places[slot].push((r as u32, pos as u32));
        }
        self.reaches.push(Reach { slots, tree });
        self.reach_of[sig] = ReachState::Built(r as u32);
        Some(r)
    }

    fn allowed(bucket: &Bucket, targets: Targets<'_>) -> bool {
        match targets {
            Targets::All => true,
            Targets::ExistingAnd(group) => {
                bucket.origin == NodeOrigin::Existing || bucket.group.as_ref() == Some(group)
            }
        }
    }

    /// Whether `slot` takes `pod` now. A refusal that may not hold for the next member
    /// of the class is remembered in `uncertain` (the lowest such slot): residents only
    /// come, so an anti-affinity refusal holds for every later member of a class that
    /// shares the pod's labels (classes with terms); otherwise it may not.
    fn try_slot(
        &self,
        sim: &PlacementSim<'_>,
        pod: usize,
        class: usize,
        slot: NodeIdx,
        uncertain: &mut Option<NodeIdx>,
    ) -> bool {
        match dynamic(sim, pod, slot) {
            Dynamic::Fits => true,
            Dynamic::NoRoom => false,
            Dynamic::AntiAffinity if self.has_terms[class] => false,
            Dynamic::AntiAffinity => {
                *uncertain = Some(uncertain.map_or(slot, |u| u.min(slot)));
                false
            }
        }
    }

    /// The first node (lowest slot) among `targets` that takes `pod` of class `class`:
    /// the same answer as `sim.first_fit(pod, <those slots ascending>)`.
    pub(crate) fn first_fit(
        &mut self,
        sim: &PlacementSim<'_>,
        pod: usize,
        class: usize,
        targets: Targets<'_>,
    ) -> Option<NodeIdx> {
        let p = &sim.pods()[pod];
        // The cursor is a statement about every node, so it is kept only by searches over every node.
        let lo = if matches!(targets, Targets::All) {
            self.cursor[class]
        } else {
            0
        };
        if lo >= self.place_of.len() {
            // An earlier member of the class found no node at all: neither will this one.
            return None;
        }
        if let Some(Some((b, _))) = self.place_of.get(lo) {
            let b = *b;
            if Self::allowed(&self.buckets[b], targets)
                && self.compatible(sim, p, class, b, lo)
                && dynamic(sim, pod, lo) == Dynamic::Fits
            {
                return Some(lo);
            }
        }
        let want = key_of(&p.requests);
        let mut best: Option<NodeIdx> = None;
        // The first node refused for a reason that may not hold for the next member.
        let mut uncertain: Option<NodeIdx> = None;
        let reach = if matches!(targets, Targets::All) && !self.per_node[class] {
            self.reach(sim, p, class)
        } else {
            None
        };
        if let Some(r) = reach {
            // The nodes of every compatible bucket in slot order: the first with room is the answer.
            let reach = &self.reaches[r];
            let mut pos = reach.slots.partition_point(|&s| s < lo);
            while let Some(found) = reach.tree.first_at_or_after(pos, &want) {
                let slot = reach.slots[found];
                if self.try_slot(sim, pod, class, slot, &mut uncertain) {
                    best = Some(slot);
                    break;
                }
                pos = found + 1;
            }
        }
        for b in 0..self.buckets.len() {
            if reach.is_some() {
                break;
            }
            if !Self::allowed(&self.buckets[b], targets) {
                continue;
            }
            if !self.per_node[class] && !self.compatible_bucket(sim, p, class, b) {
                continue;
            }
            let bucket = &self.buckets[b];
            // Only positions after `lo` and before the best found so far matter.
            let mut pos = bucket.slots.partition_point(|&s| s < lo);
            while let Some(found) = bucket.tree.first_at_or_after(pos, &want) {
                let slot = bucket.slots[found];
                if best.is_some_and(|b| slot >= b) {
                    break;
                }
                let labels_ok = !self.per_node[class] || {
                    let n = sim.node(slot);
                    check_labels_and_taints(p, &n.labels, &n.taints).is_ok()
                };
                if labels_ok && self.try_slot(sim, pod, class, slot, &mut uncertain) {
                    best = Some(slot);
                    break;
                }
                pos = found + 1;
            }
        }
        if matches!(targets, Targets::All) {
            // Nothing before `best` takes this class; if nothing does at all, no node does.
            let end = best.unwrap_or(self.place_of.len());
            self.cursor[class] = uncertain.map_or(end, |u| u.min(end));
        }
        best
    }

    fn compatible(
        &mut self,
        sim: &PlacementSim<'_>,
        p: &PodView,
        class: usize,
        bucket: usize,
        slot: NodeIdx,
    ) -> bool {
        if self.per_node[class] {
            let n = sim.node(slot);
            return check_labels_and_taints(p, &n.labels, &n.taints).is_ok();
        }
        self.compatible_bucket(sim, p, class, bucket)
    }

    fn compatible_bucket(
        &mut self,
        sim: &PlacementSim<'_>,
        p: &PodView,
        class: usize,
        bucket: usize,
    ) -> bool {
        let at = self.signature[class] as usize * self.buckets.len() + bucket;
        if self.compat[at] == 0 {
            let n = sim.node(self.buckets[bucket].sample);
            self.compat[at] = if check_labels_and_taints(p, &n.labels, &n.taints).is_ok() {
                1
            } else {
                2
            };
        }
        self.compat[at] == 1
    }
}

/// Places the pods `order` one after another with the indexed first-fit over the nodes
/// `slots` (ascending) of `sim`, committing each placement, as scale-up does with pods
/// that are not gangs; returns where each went. With `nominated_to`, only existing nodes
/// and that group's upcoming nodes are searched (a nominated pod's targets).
///
/// Exists so that `tests/fit.rs` can hold the index to the plain
/// `PlacementSim::first_fit` on random worlds; not part of the planner's API.
#[doc(hidden)]
pub fn place_in_order_indexed(
    sim: &mut PlacementSim<'_>,
    slots: &[NodeIdx],
    order: &[usize],
    nominated_to: Option<&NodeGroupId>,
) -> Vec<Option<NodeIdx>> {
    let pods = sim.pods();
    let classes = crate::classes::group_into_classes(pods, order);
    let mut class_of = vec![usize::MAX; pods.len()];
    for (c, class) in classes.iter().enumerate() {
        for &p in &class.members {
            class_of[p] = c;
        }
    }
    let reps: Vec<usize> = classes.iter().map(|c| c.representative()).collect();
    let mut index = CapacityIndex::new(sim, slots, &reps);
    let targets = nominated_to.map_or(Targets::All, Targets::ExistingAnd);
    order
        .iter()
        .map(|&pod| {
            let node = index.first_fit(sim, pod, class_of[pod], targets)?;
            sim.place(pod, node);
            index.refresh(sim, node);
            Some(node)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_finds_the_leftmost_node_with_room() {
        let mut tree = FreeTree::new(5);
        for (i, cpu) in [100, 500, 200, 800, 500].into_iter().enumerate() {
            tree.set(i, [cpu, 1000, 10, 0]);
        }
        assert_eq!(tree.first_at_or_after(0, &[400, 1, 1, 0]), Some(1));
        assert_eq!(tree.first_at_or_after(2, &[400, 1, 1, 0]), Some(3));
        assert_eq!(tree.first_at_or_after(4, &[400, 1, 1, 0]), Some(4));
        assert_eq!(tree.first_at_or_after(0, &[900, 1, 1, 0]), None);
        assert_eq!(
            tree.first_at_or_after(0, &[1, 1, 1, 1]),
            None,
            "no GPUs anywhere"
        );
        tree.set(1, [0, 1000, 10, 0]);
        assert_eq!(tree.first_at_or_after(0, &[400, 1, 1, 0]), Some(3));
    }
}
