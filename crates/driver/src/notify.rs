//! Slack notifications: which planner explanations become messages, deduplication and
//! rate limiting ([`SlackGate`], pure and driven by `now`), and delivery from a spawned
//! task with a timeout ([`Outbox`]) so a slow or failing webhook never holds up the
//! loop; a failed delivery is logged and counted, nothing more.

use crate::metrics::{Metrics, ResultLabel};
use crate::ports::Notifier;
use model::Time;
use planner::PlannerEvent;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The same message is not sent twice within this time.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(30 * 60);
/// At most one message per this interval; messages in between are batched.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// How long one webhook call may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines kept while rate-limited; more are counted and summarised.
const MAX_PENDING: usize = 20;

/// One message candidate: `key` decides duplicates (so a message whose pod list
/// changes but whose substance does not is still a duplicate), `text` is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub key: String,
    pub text: String,
}

/// The messages worth a human's attention among one pass's explanations: scale-ups,
/// failures to scale up (one message per distinct set of reasons, not per pod),
/// retirements and removals.
pub fn messages_for(events: &[(Time, PlannerEvent)]) -> Vec<Message> {
    let mut out = Vec::new();
    // Pods that could not be helped, grouped by their reasons: one message each.
    let mut unhelped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, event) in events {
        match event {
            PlannerEvent::TriggeredScaleUp { .. }
            | PlannerEvent::NodeRetired { .. }
            | PlannerEvent::ScaleDown { .. } => {
                let text = format!("batch-autoscaler: {event}");
                out.push(Message {
                    key: text.clone(),
                    text,
                });
            }
            PlannerEvent::NotTriggerScaleUp { pod, reasons } => {
                let why = if reasons.is_empty() {
                    "no node groups".to_owned()
                } else {
                    reasons
                        .iter()
                        .map(|(g, r)| format!("{g}: {r}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                unhelped.entry(why).or_default().push(pod.to_string());
            }
            _ => {}
        }
    }
    for (why, pods) in unhelped {
        let shown: Vec<_> = pods.iter().take(3).map(String::as_str).collect();
        let more = if pods.len() > shown.len() {
            format!(" and {} more", pods.len() - shown.len())
        } else {
            String::new()
        };
        out.push(Message {
            key: format!("failed to scale up: {why}"),
            text: format!(
                "batch-autoscaler: failed to scale up for {}{more}: {why}",
                shown.join(", ")
            ),
        });
    }
    out
}

/// What the gate decided about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send this text now.
    Send(String),
    /// Sent (or queued) within the dedup window: dropped.
    Duplicate,
    /// Within the rate limit: queued, sent with others by [`SlackGate::due`].
    Queued,
}

/// Deduplication and rate limiting, as a pure function of `now`.
#[derive(Debug, Default)]
pub struct SlackGate {
    /// Keys sent or queued, with when.
    seen: BTreeMap<String, Time>,
    last_sent: Option<Time>,
    pending: VecDeque<String>,
    /// Lines dropped because the queue was full.
    overflow: usize,
}

impl SlackGate {
    /// Offers a message at `now`.
    pub fn offer(&mut self, now: Time, message: Message) -> Verdict {
        self.seen
            .retain(|_, at| now.saturating_since(*at) < DEDUP_WINDOW);
        if self.seen.contains_key(&message.key) {
            return Verdict::Duplicate;
        }
        self.seen.insert(message.key, now);
        if self.pending.is_empty() && self.slot_free(now) {
            self.last_sent = Some(now);
            return Verdict::Send(message.text);
        }
        if self.pending.len() < MAX_PENDING {
            self.pending.push_back(message.text);
        } else {
            self.overflow += 1;
        }
        Verdict::Queued
    }

    /// The queued lines as one message, if the rate limit allows one now.
    pub fn due(&mut self, now: Time) -> Option<String> {
        if self.pending.is_empty() || !self.slot_free(now) {
            return None;
        }
        self.last_sent = Some(now);
        let mut lines: Vec<String> = self.pending.drain(..).collect();
        if self.overflow > 0 {
            lines.push(format!(
                "… and {} more messages",
                std::mem::take(&mut self.overflow)
            ));
        }
        Some(lines.join("\n"))
    }

    fn slot_free(&self, now: Time) -> bool {
        self.last_sent
            .is_none_or(|at| now.saturating_since(at) >= MIN_INTERVAL)
    }
}

/// Hands gated messages to a delivery task (started on first use, so constructing a
/// driver needs no runtime).
pub struct Outbox<N: Notifier> {
    notifier: Arc<N>,
    gate: SlackGate,
    sender: Option<mpsc::Sender<String>>,
    metrics: Arc<Metrics>,
}

impl<N: Notifier> Outbox<N> {
    /// An outbox delivering through `notifier`.
    pub fn new(notifier: N, metrics: Arc<Metrics>) -> Self {
        Self {
            notifier: Arc::new(notifier),
            gate: SlackGate::default(),
            sender: None,
            metrics,
        }
    }

    /// Offers one pass's messages, then sends whatever the rate limit allows.
    pub fn offer_all(&mut self, now: Time, messages: Vec<Message>) {
        for message in messages {
            match self.gate.offer(now, message) {
                Verdict::Send(text) => self.deliver(text),
                Verdict::Duplicate => self.count("duplicate"),
                Verdict::Queued => {}
            }
        }
        if let Some(text) = self.gate.due(now) {
            self.deliver(text);
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .notifications
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    fn deliver(&mut self, text: String) {
        let sender = self.sender.get_or_insert_with(|| {
            // A small queue: the gate lets through one message per MIN_INTERVAL, so
            // it only fills if the webhook hangs for many intervals in a row.
            let (sender, receiver) = mpsc::channel(8);
            tokio::spawn(deliver_loop(
                self.notifier.clone(),
                receiver,
                self.metrics.clone(),
            ));
            sender
        });
        if sender.try_send(text).is_err() {
            tracing::warn!("slack: delivery queue full or closed; message dropped");
            self.count("dropped");
        }
    }
}

async fn deliver_loop<N: Notifier>(
    notifier: Arc<N>,
    mut receiver: mpsc::Receiver<String>,
    metrics: Arc<Metrics>,
) {
    let count = |result: &str| {
        metrics
            .notifications
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc()
    };
    while let Some(text) = receiver.recv().await {
        match tokio::time::timeout(SEND_TIMEOUT, notifier.notify(&text)).await {
            Ok(Ok(())) => {
                count("sent");
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "slack: notification failed");
                metrics.api_error(error.label);
                count("failed");
            }
            Err(_) => {
                tracing::warn!(timeout = ?SEND_TIMEOUT, "slack: notification timed out");
                count("failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{NodeGroupId, PodKey};
    use planner::NoScaleUpReason;

    fn msg(text: &str) -> Message {
        Message {
            key: text.to_owned(),
            text: text.to_owned(),
        }
    }

    #[test]
    fn the_same_message_is_not_sent_twice_within_thirty_minutes() {
        let mut gate = SlackGate::default();
        let t0 = Time::from_secs(1_000);
        assert_eq!(gate.offer(t0, msg("a")), Verdict::Send("a".into()));
        assert_eq!(
            gate.offer(t0 + Duration::from_secs(60), msg("a")),
            Verdict::Duplicate
        );
        assert_eq!(
            gate.offer(t0 + Duration::from_secs(29 * 60), msg("a")),
            Verdict::Duplicate
        );
        assert_eq!(
            gate.offer(t0 + Duration::from_secs(30 * 60), msg("a")),
            Verdict::Send("a".into())
        );
    }

    #[test]
    fn at_most_one_message_per_ten_seconds_the_rest_batched() {
        let mut gate = SlackGate::default();
        let t0 = Time::from_secs(1_000);
        assert_eq!(gate.offer(t0, msg("a")), Verdict::Send("a".into()));
        assert_eq!(
            gate.offer(t0 + Duration::from_secs(1), msg("b")),
            Verdict::Queued
        );
        assert_eq!(
            gate.offer(t0 + Duration::from_secs(2), msg("c")),
            Verdict::Queued
        );
        assert_eq!(gate.due(t0 + Duration::from_secs(9)), None);
        assert_eq!(gate.due(t0 + Duration::from_secs(10)), Some("b\nc".into()));
        assert_eq!(gate.due(t0 + Duration::from_secs(30)), None, "nothing left");
        // A new message after the interval goes straight out.
        assert_eq!(
            gate.offer(t0 + Duration::from_secs(30), msg("d")),
            Verdict::Send("d".into())
        );
        // While lines wait, newcomers queue behind them rather than jump the queue.
        assert_eq!(
            gate.offer(t0 + Duration::from_secs(31), msg("e")),
            Verdict::Queued
        );
        assert_eq!(
            gate.offer(t0 + Duration::from_secs(45), msg("f")),
            Verdict::Queued
        );
        assert_eq!(gate.due(t0 + Duration::from_secs(45)), Some("e\nf".into()));
    }

    #[test]
    fn a_full_queue_is_summarised() {
        let mut gate = SlackGate::default();
        let t0 = Time::from_secs(1_000);
        gate.offer(t0, msg("first"));
        for i in 0..(MAX_PENDING + 5) {
            gate.offer(t0, msg(&format!("m{i}")));
        }
        let batch = gate.due(t0 + MIN_INTERVAL).unwrap();
        assert_eq!(batch.lines().count(), MAX_PENDING + 1);
        assert!(batch.ends_with("… and 5 more messages"), "{batch}");
    }

    #[test]
    fn unhelpable_pods_make_one_message_per_reason_set() {
        let reasons = |r: NoScaleUpReason| [(NodeGroupId::new("cpu"), r)].into_iter().collect();
        let events: Vec<(Time, PlannerEvent)> = (0..5)
            .map(|i| {
                let pod = PodKey::new("batch", format!("p{i}"));
                (
                    Time::ZERO,
                    PlannerEvent::NotTriggerScaleUp {
                        pod,
                        reasons: reasons(NoScaleUpReason::GroupAtMax { max: 3 }),
                    },
                )
            })
            .chain([(Time::ZERO, PlannerEvent::SnapshotNotSynced)])
            .collect();
        let messages = messages_for(&events);
        assert_eq!(messages.len(), 1);
        assert_eq!(
            messages[0].key,
            "failed to scale up: cpu: group at max size 3"
        );
        assert_eq!(
            messages[0].text,
            "batch-autoscaler: failed to scale up for batch/p0, batch/p1, batch/p2 and 2 more: cpu: group at max size 3"
        );
    }
}
