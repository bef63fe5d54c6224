//! The AWS interruption queues as the driver's `InterruptionQueue`s.

use crate::cloud::port_error;
use driver::{InterruptionQueue, ParsedMessage, PortError, QueueMessage};
use model::Region;
use tokio::sync::OnceCell;

/// One region's SQS queue of EventBridge events. The queue is looked up on the first
/// poll, not at start: a queue that cannot be reached yet only means no interruption
/// handling until it can (the poll fails, is retried, and the loop carries on).
pub struct SqsInterruptions {
    config: aws::AwsConfig,
    region: Region,
    queue: String,
    connected: OnceCell<aws::InterruptionQueue>,
}

impl SqsInterruptions {
    pub fn new(config: aws::AwsConfig, region: Region, queue: String) -> Self {
        Self {
            config,
            region,
            queue,
            connected: OnceCell::new(),
        }
    }

    async fn queue(&self) -> Result<&aws::InterruptionQueue, PortError> {
        self.connected
            .get_or_try_init(|| async {
                let q = aws::InterruptionQueue::connect(&self.config, &self.region, &self.queue)
                    .await
                    .map_err(port_error)?;
                tracing::info!(url = q.url(), region = %self.region, "reading interruption events");
                Ok(q)
            })
            .await
    }
}

impl InterruptionQueue for SqsInterruptions {
    async fn receive(&self) -> Result<Vec<QueueMessage>, PortError> {
        let messages = self
            .queue()
            .await?
            .receive(aws::InterruptionQueue::DEFAULT_WAIT)
            .await
            .map_err(port_error)?;
        Ok(messages
            .into_iter()
            .map(|m| QueueMessage {
                id: m.id,
                receipt: m.receipt,
                body: m.body,
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), PortError> {
        self.queue()
            .await?
            .delete(receipt)
            .await
            .map_err(port_error)
    }

    fn parse(&self, body: &str) -> ParsedMessage {
        match aws::parse_interruption_message(body) {
            Ok(aws::ParsedMessage::Notices(mut notices)) => {
                for n in &mut notices {
                    n.region.get_or_insert_with(|| self.region.clone());
                }
                ParsedMessage::Notices(notices)
            }
            Ok(aws::ParsedMessage::Unknown { what }) => ParsedMessage::Unknown(what),
            Err(error) => ParsedMessage::Malformed(error.to_string()),
        }
    }
}
