//! Interruption notices, from the cloud's queue (SQS fed by EventBridge in
//! production) to the planner.
//!
//! A background task ([`run_interruption_queue`]) long-polls the queue while this
//! replica leads, reads each message, and hands the notices to the driver through an
//! [`InterruptionFeed`], waking the loop at once. A message is deleted only after the
//! pass that acted on it has carried out its actions: a crash in between makes it
//! visible again and it is acted on again (the planner keeps one response per
//! instance). A message that cannot be read, or is not an event we act on, is
//! counted, logged and deleted at once: it can never come back as a poison message.
//! A queue that cannot be reached only means no interruption handling: a warning, a
//! gauge at 0, retries with backoff; the loop and `/readyz` carry on.

use crate::leadership::Leadership;
use crate::metrics::{Metrics, ResultLabel};
use crate::ports::PortError;
use model::InterruptionNotice;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// One message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub id: String,
    /// What deletes it.
    pub receipt: String,
    pub body: String,
}

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedMessage {
    /// Notices to act on (an AWS Health event may name several instances).
    Notices(Vec<InterruptionNotice>),
    /// A well-formed event of a kind we do not act on.
    Unknown(String),
    /// Not an event we can read; the text names the field.
    Malformed(String),
}

/// The queue (SQS in production). Methods take `&self`: deletions run on their own
/// tasks while the next poll is under way.
pub trait InterruptionQueue: Send + Sync + 'static {
    /// One long poll: the messages that arrived, possibly none.
    fn receive(&self) -> impl Future<Output = Result<Vec<QueueMessage>, PortError>> + Send;
    /// Deletes a message for good.
    fn delete(&self, receipt: &str) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Reads a message's body.
    fn parse(&self, body: &str) -> ParsedMessage;
}

/// Notices of one message, with what acknowledges them.
#[derive(Debug)]
pub struct Received {
    pub notices: Vec<InterruptionNotice>,
    /// Sent once the pass that acted on the notices has carried out its actions; the
    /// message is deleted then. Dropped unsent (dry-run, leadership lost), the message
    /// stays and comes back after its visibility timeout.
    pub ack: oneshot::Sender<()>,
}

/// The driver's end of the feed.
#[derive(Debug)]
pub struct InterruptionFeed {
    rx: mpsc::UnboundedReceiver<Received>,
}

/// The queue task's end of the feed.
#[derive(Debug, Clone)]
pub struct InterruptionSender {
    tx: mpsc::UnboundedSender<Received>,
    wake: Arc<Notify>,
}

/// A feed whose sender wakes the loop through `wake` (the driver's trigger).
pub fn interruption_feed(wake: Arc<Notify>) -> (InterruptionSender, InterruptionFeed) {
    let (tx, rx) = mpsc::unbounded_channel();
    (InterruptionSender { tx, wake }, InterruptionFeed { rx })
}

impl InterruptionSender {
    /// Hands notices to the driver and wakes it; false once the driver is gone.
    pub fn send(&self, received: Received) -> bool {
        let sent = self.tx.send(received).is_ok();
        self.wake.notify_one();
        sent
    }
}

impl InterruptionFeed {
    /// Everything received so far, without waiting.
    pub fn drain(&mut self) -> Vec<Received> {
        std::iter::from_fn(|| self.rx.try_recv().ok()).collect()
    }
}

/// First and longest wait after the queue could not be read.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// How long a received message waits for the pass that acts on it before it is left
/// to come back (its visibility timeout) rather than deleted.
const ACK_DEADLINE: Duration = Duration::from_secs(300);

/// Polls `queue` while this replica leads, until `shutdown`. Each message is counted in
/// `interruption_messages` by result (`notice`, `unknown`, `malformed`).
pub async fn run_interruption_queue<Q: InterruptionQueue>(
    queue: Q,
    sender: InterruptionSender,
    metrics: Arc<Metrics>,
    mut leader: watch::Receiver<Leadership>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let queue = Arc::new(queue);
    let mut retry = FIRST_RETRY;
    loop {
        if !leader
            .borrow_and_update()
            .leads_at(tokio::time::Instant::now().into_std())
        {
            // Followers leave the messages to the leader.
            tokio::select! {
                () = &mut shutdown => return,
                changed = leader.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        }
        let received = tokio::select! {
            () = &mut shutdown => return,
            received = queue.receive() => received,
        };
        let messages = match received {
            Ok(messages) => {
                metrics.interruption_queue_up.set(1);
                retry = FIRST_RETRY;
                messages
            }
            Err(error) => {
                metrics.interruption_queue_up.set(0);
                metrics.api_error(error.label);
                tracing::warn!(%error, ?retry, "interruption queue cannot be read: no interruption handling until it can");
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            }
        };
        for message in messages {
            let count = |result: &str| {
                metrics
                    .interruption_messages
                    .get_or_create(&ResultLabel {
                        result: result.to_owned(),
                    })
                    .inc()
            };
            match queue.parse(&message.body) {
                ParsedMessage::Notices(notices) => {
                    count("notice");
                    for n in &notices {
                        tracing::info!(instance = %n.instance, kind = n.kind.as_str(), detail = %n.detail, message = %message.id, "interruption notice");
                    }
                    let (ack, acked) = oneshot::channel();
                    if !sender.send(Received { notices, ack }) {
                        return;
                    }
                    let queue = queue.clone();
                    tokio::spawn(async move {
                        if let Ok(Ok(())) = tokio::time::timeout(ACK_DEADLINE, acked).await {
                            delete(&*queue, &message).await;
                        }
                    });
                }
                ParsedMessage::Unknown(what) => {
                    count("unknown");
                    tracing::info!(message = %message.id, %what, "interruption queue: not an event we act on; deleted");
                    delete(&*queue, &message).await;
                }
                ParsedMessage::Malformed(why) => {
                    count("malformed");
                    tracing::warn!(message = %message.id, %why, "interruption queue: malformed message deleted");
                    delete(&*queue, &message).await;
                }
            }
        }
    }
}

async fn delete<Q: InterruptionQueue>(queue: &Q, message: &QueueMessage) {
    if let Err(error) = queue.delete(&message.receipt).await {
        // It comes back after its visibility timeout and is handled again.
        tracing::warn!(message = %message.id, %error, "could not delete an interruption message");
    }
}
