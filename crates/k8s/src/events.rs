//! Kubernetes Events that explain the planner's decisions: on pods
//! (`TriggeredScaleUp`, `NotTriggerScaleUp`), on nodes (`ScaleDown`, retire/un-retire,
//! candidates and cancellations), on ProvisioningRequests (each condition change, the
//! scale-up for it), and on the status ConfigMap for everything else
//! (pool backoffs, give-backs, gang rollbacks, warnings). Rate-limited: the same
//! reason and note on the same object is posted at most once per interval, and at
//! most a fixed number of Events per loop.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use model::{NodeName, PodKey, Time};
use planner::PlannerEvent;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where an explanation is attached.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    Pod(PodKey),
    Node(NodeName),
    /// A ProvisioningRequest (`autoscaling.x-k8s.io/v1`).
    Request(PodKey),
    /// The status ConfigMap: events about the autoscaler as a whole.
    Autoscaler,
}

/// One Kubernetes Event to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub subject: Subject,
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// Most pods named by one scale-up (the rest are summarised).
const MAX_PODS_PER_SCALE_UP: usize = 50;

/// Maps a planner event to the Events it should produce.
pub fn explanations(event: &PlannerEvent) -> Vec<Explanation> {
    let reason = event.reason();
    let note = event.to_string();
    let one = |subject, warning| {
        vec![Explanation {
            subject,
            warning,
            reason,
            note: note.clone(),
        }]
    };
    match event {
        PlannerEvent::TriggeredScaleUp {
            group,
            from,
            to,
            pods,
        } => pods
            .iter()
            .take(MAX_PODS_PER_SCALE_UP)
            .map(|p| Explanation {
                subject: Subject::Pod(p.clone()),
                warning: false,
                reason,
                note: format!("pod triggered scale-up: {group} {from} -> {to}"),
            })
            .collect(),
        PlannerEvent::NotTriggerScaleUp { pod, .. } => one(Subject::Pod(pod.clone()), false),
        PlannerEvent::NodeRetired { node, .. }
        | PlannerEvent::NodeUnretired { node, .. }
        | PlannerEvent::ScaleDownCandidate { node, .. }
        | PlannerEvent::ScaleDownCancelled { node, .. } => one(Subject::Node(node.clone()), false),
        PlannerEvent::ScaleDown {
            node: Some(node), ..
        } => one(Subject::Node(node.clone()), false),
        PlannerEvent::ProvisioningRequestUpdated {
            request,
            condition,
            status,
            ..
        } => {
            // A failure or a refusal is a Warning; progress is Normal.
            let warning = *condition == model::ConditionType::Failed && *status;
            one(Subject::Request(request.clone()), warning)
        }
        PlannerEvent::ProvisioningRequestScaleUp { request, .. }
        | PlannerEvent::ProvisioningRequestIgnored { request, .. } => {
            one(Subject::Request(request.clone()), false)
        }
        PlannerEvent::InstanceInterrupted {
            node,
            pods,
            kind,
            response,
            ..
        } => {
            // On the node, and on every pod that is about to lose its place: a job
            // that checkpoints can watch its own Events for this.
            let mut out: Vec<Explanation> = node
                .iter()
                .map(|n| Explanation {
                    subject: Subject::Node(n.clone()),
                    warning: true,
                    reason,
                    note: note.clone(),
                })
                .collect();
            let doomed = matches!(
                kind,
                model::InterruptionKind::SpotInterruption | model::InterruptionKind::StateChange
            );
            let pod_note = if doomed {
                format!(
                    "the node's instance is being taken back ({kind}): checkpoint now; {response}"
                )
            } else {
                format!("the node's instance got a {kind}: {response}")
            };
            out.extend(pods.iter().map(|p| Explanation {
                subject: Subject::Pod(p.clone()),
                warning: true,
                reason,
                note: pod_note.clone(),
            }));
            out
        }
        PlannerEvent::WaitingForCapacity { .. } | PlannerEvent::SnapshotNotSynced => vec![],
        PlannerEvent::Warning { .. }
        | PlannerEvent::ActionFailed { .. }
        | PlannerEvent::PoolBackedOff { .. }
        | PlannerEvent::LaunchTimedOut { .. } => one(Subject::Autoscaler, true),
        _ => one(Subject::Autoscaler, false),
    }
}

/// Drops repeats: the same (subject, reason, note) within `interval`, and anything
/// beyond `per_loop` in one call.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    per_loop: usize,
    last: BTreeMap<(Subject, &'static str, String), Time>,
}

impl RateLimiter {
    pub fn new(interval: Duration, per_loop: usize) -> Self {
        Self {
            interval,
            per_loop,
            last: BTreeMap::new(),
        }
    }

    /// The explanations worth posting now.
    pub fn admit(&mut self, now: Time, candidates: Vec<Explanation>) -> Vec<Explanation> {
        let interval = self.interval;
        self.last.retain(|_, t| now.saturating_since(*t) < interval);
        let mut out = Vec::new();
        for e in candidates {
            if out.len() >= self.per_loop {
                break;
            }
            let key = (e.subject.clone(), e.reason, e.note.clone());
            if self.last.contains_key(&key) {
                continue;
            }
            self.last.insert(key, now);
            out.push(e);
        }
        out
    }
}

/// Posts Events through kube-runtime's recorder (events.k8s.io/v1, with series).
pub struct EventPoster {
    recorder: Recorder,
    status_namespace: String,
    status_name: String,
    limiter: RateLimiter,
}

impl EventPoster {
    pub fn new(
        client: Client,
        instance: String,
        status_namespace: String,
        status_name: String,
    ) -> Self {
        let reporter = Reporter {
            controller: "batch-autoscaler".into(),
            instance: Some(instance),
        };
        Self {
            recorder: Recorder::new(client, reporter),
            status_namespace,
            status_name,
            limiter: RateLimiter::new(Duration::from_secs(300), 200),
        }
    }

    fn reference(&self, subject: &Subject) -> ObjectReference {
        match subject {
            Subject::Pod(p) => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(p.namespace.clone()),
                name: Some(p.name.clone()),
                ..ObjectReference::default()
            },
            Subject::Node(n) => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(n.to_string()),
                ..ObjectReference::default()
            },
            Subject::Request(r) => ObjectReference {
                api_version: Some("autoscaling.x-k8s.io/v1".into()),
                kind: Some("ProvisioningRequest".into()),
                namespace: Some(r.namespace.clone()),
                name: Some(r.name.clone()),
                ..ObjectReference::default()
            },
            Subject::Autoscaler => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("ConfigMap".into()),
                namespace: Some(self.status_namespace.clone()),
                name: Some(self.status_name.clone()),
                ..ObjectReference::default()
            },
        }
    }

    /// Posts the explanations of `events`; returns how many failed to post.
    pub async fn publish(
        &mut self,
        now: Time,
        events: &[(Time, PlannerEvent)],
    ) -> Result<usize, kube::Error> {
        let candidates: Vec<Explanation> =
            events.iter().flat_map(|(_, e)| explanations(e)).collect();
        let mut failures = 0;
        let mut last_error = None;
        for e in self.limiter.admit(now, candidates) {
            let event = Event {
                type_: if e.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: e.reason.into(),
                note: Some(truncate(&e.note, 1000)),
                action: "Autoscale".into(),
                secondary: None,
            };
            if let Err(err) = self
                .recorder
                .publish(&event, &self.reference(&e.subject))
                .await
            {
                failures += 1;
                last_error = Some(err);
            }
        }
        match (failures, last_error) {
            (0, _) => Ok(0),
            (n, Some(err)) if n > 0 => {
                tracing::warn!(failures = n, error = %err, "some Events could not be posted");
                Ok(n)
            }
            (n, _) => Ok(n),
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::NodeGroupId;

    #[test]
    fn scale_up_explains_each_pod_up_to_a_cap() {
        let pods: Vec<_> = (0..80)
            .map(|i| PodKey::new("ns", format!("p{i}")))
            .collect();
        let e = PlannerEvent::TriggeredScaleUp {
            group: NodeGroupId::new("g"),
            from: 0,
            to: 3,
            pods,
        };
        let out = explanations(&e);
        assert_eq!(out.len(), MAX_PODS_PER_SCALE_UP);
        assert!(out
            .iter()
            .all(|x| x.reason == "TriggeredScaleUp" && matches!(x.subject, Subject::Pod(_))));
    }

    #[test]
    fn an_interruption_is_explained_on_the_node_and_on_every_pod_about_to_lose_its_place() {
        let e = PlannerEvent::InstanceInterrupted {
            instance: model::InstanceId::new("i-1"),
            group: NodeGroupId::new("spot"),
            node: Some(NodeName::new("n1")),
            kind: model::InterruptionKind::SpotInterruption,
            pool: model::PoolKey {
                region: model::Region::new("us-west-2"),
                zone: model::Zone::new("us-west-2a"),
                instance_type: model::InstanceTypeName::new("m5.large"),
                purchase: model::PurchaseOption::Spot,
            },
            pods: vec![PodKey::new("ml", "a"), PodKey::new("ml", "b")],
            response: planner::InterruptionResponse::Replace { detach: true },
        };
        let x = explanations(&e);
        let subjects: Vec<_> = x.iter().map(|x| x.subject.clone()).collect();
        assert_eq!(
            subjects,
            vec![
                Subject::Node(NodeName::new("n1")),
                Subject::Pod(PodKey::new("ml", "a")),
                Subject::Pod(PodKey::new("ml", "b"))
            ]
        );
        assert!(x
            .iter()
            .all(|x| x.warning && x.reason == "SpotInterruption"));
        assert!(x[1].note.contains("checkpoint"), "{}", x[1].note);
    }

    #[test]
    fn request_conditions_are_explained_on_the_request() {
        let e = PlannerEvent::ProvisioningRequestUpdated {
            request: PodKey::new("ml", "r"),
            condition: model::ConditionType::Failed,
            status: true,
            reason: "NotProvisionable".into(),
            message: "no node group can hold all 8 pods".into(),
        };
        let x = explanations(&e);
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].subject, Subject::Request(PodKey::new("ml", "r")));
        assert!(x[0].warning);
        assert_eq!(x[0].reason, "ProvisioningFailed");
        assert!(
            x[0].note.contains("no node group can hold all 8 pods"),
            "{}",
            x[0].note
        );
    }

    #[test]
    fn repeats_are_dropped_within_the_interval() {
        let mut l = RateLimiter::new(Duration::from_secs(300), 10);
        let e = Explanation {
            subject: Subject::Autoscaler,
            warning: true,
            reason: "PoolBackedOff",
            note: "x".into(),
        };
        assert_eq!(
            l.admit(Time::from_secs(0), vec![e.clone(), e.clone()])
                .len(),
            1
        );
        assert_eq!(l.admit(Time::from_secs(100), vec![e.clone()]).len(), 0);
        assert_eq!(l.admit(Time::from_secs(301), vec![e.clone()]).len(), 1);
        let many: Vec<_> = (0..20)
            .map(|i| Explanation {
                note: i.to_string(),
                ..e.clone()
            })
            .collect();
        assert_eq!(l.admit(Time::from_secs(400), many).len(), 10);
    }
}
