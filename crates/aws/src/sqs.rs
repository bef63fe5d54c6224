//! The interruption queue (`--interruption-queue`): the SQS queue that users route
//! EC2 and AWS Health EventBridge events into. [`InterruptionQueue`] resolves it,
//! long-polls it and deletes what was handled; `events.rs` reads the bodies.
//!
//! SQS is called without `aws-sdk-sqs` (compile time), through `signed.rs` like EC2,
//! in SQS's JSON protocol: `POST /` with `Content-Type: application/x-amz-json-1.0` and
//! `X-Amz-Target: AmazonSQS.<Operation>`, JSON in and out, errors as
//! `{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": …}`.

use crate::config::{AwsConfig, ConfigError};
use crate::error::{classify_response, AwsError};
use crate::signed::{self, RawResponse, SignedClient, SignedRequest};
use model::Region;
use serde_json::{json, Value};
use std::time::Duration;

/// SQS's longest long poll.
const MAX_WAIT: Duration = Duration::from_secs(20);
/// SQS's most messages per ReceiveMessage.
const MAX_MESSAGES: u32 = 10;

/// A signed SQS JSON-protocol client for one region.
#[derive(Clone)]
pub struct SqsClient {
    signed: SignedClient,
}

impl std::fmt::Debug for SqsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsClient")
            .field("region", self.signed.region())
            .field("endpoint", &self.signed.endpoint())
            .finish()
    }
}

impl SqsClient {
    /// A client for `region` with the credentials, endpoint (`AWS_ENDPOINT_URL_SQS`,
    /// else `AWS_ENDPOINT_URL`, else AWS's) and retry policy of `config`.
    pub async fn connect(config: &AwsConfig, region: &Region) -> Self {
        let credentials = signed::credentials_provider(config, region).await;
        let endpoint = signed::endpoint("sqs", region, config.endpoint_url.as_deref());
        Self {
            signed: SignedClient::new(
                "sqs",
                region.clone(),
                endpoint,
                credentials,
                signed::https_client(),
                config.retry.clone(),
            ),
        }
    }

    /// The region this client calls.
    pub fn region(&self) -> &Region {
        self.signed.region()
    }

    /// Calls any SQS operation with its JSON input and returns its JSON output,
    /// retrying throttling and 5xx. For fixtures and tools (CreateQueue,
    /// SendMessage); the adapter itself calls only
    /// [`InterruptionQueue::called_actions`].
    pub async fn call(&self, operation: &'static str, input: &Value) -> Result<Value, AwsError> {
        self.invoke(operation, input, self.signed.retry().attempt_timeout)
            .await
    }

    /// One operation; `timeout` bounds each attempt (a long poll needs more than
    /// the usual one).
    async fn invoke(
        &self,
        operation: &'static str,
        input: &Value,
        timeout: Duration,
    ) -> Result<Value, AwsError> {
        let request = SignedRequest {
            content_type: "application/x-amz-json-1.0",
            headers: vec![("x-amz-target", format!("AmazonSQS.{operation}"))],
            body: input.to_string(),
            timeout,
        };
        self.signed
            .call(operation, &request, |response| {
                read(self.region(), operation, input, response)
            })
            .await
    }
}

/// The JSON output of a 2xx response; an error response classified by its code.
fn read(
    region: &Region,
    operation: &'static str,
    input: &Value,
    response: RawResponse,
) -> Result<Value, AwsError> {
    let RawResponse {
        status,
        headers,
        body,
    } = response;
    if (200..300).contains(&status) {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Default::default()));
        }
        return serde_json::from_slice(&body).map_err(|e| AwsError::Other {
            region: region.clone(),
            operation,
            message: format!(
                "unreadable response ({e}): {}",
                signed::excerpt(status, &body)
            ),
        });
    }
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let code = parsed
        .as_ref()
        .and_then(|p| p.get("__type").and_then(Value::as_str).map(str::to_owned))
        .or_else(|| header("x-amzn-errortype"))
        .map(|t| error_code(&t).to_owned())
        .or_else(|| {
            header("x-amzn-query-error").and_then(|q| q.split(';').next().map(str::to_owned))
        });
    let message = parsed
        .as_ref()
        .and_then(|p| {
            p.get("message")
                .or_else(|| p.get("Message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| signed::excerpt(status, &body));
    let what = || {
        let queue = input
            .get("QueueUrl")
            .or_else(|| input.get("QueueName"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        format!("SQS queue {queue}")
    };
    Err(classify_response(
        region,
        operation,
        Some(status),
        code.as_deref(),
        message,
        what,
    ))
}

/// The bare code of a JSON-protocol error type: `com.amazonaws.sqs#QueueDoesNotExist`
/// → `QueueDoesNotExist` (and `Code:http://…` → `Code`).
fn error_code(error_type: &str) -> &str {
    let bare = error_type.rsplit('#').next().unwrap_or(error_type);
    bare.split(':').next().unwrap_or(bare).trim()
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// SQS's message id (stable across redeliveries: for logs and de-duplication).
    pub id: String,
    /// The handle [`InterruptionQueue::delete`] needs (new on every delivery).
    pub receipt: String,
    /// The body as sent: an EventBridge event, for `parse_interruption_message`.
    pub body: String,
}

/// The interruption queue, resolved to its URL.
#[derive(Debug, Clone)]
pub struct InterruptionQueue {
    client: SqsClient,
    url: String,
}

impl InterruptionQueue {
    /// How long [`receive`](Self::receive) should wait by default: SQS's longest long
    /// poll, so an idle queue costs three requests a minute.
    pub const DEFAULT_WAIT: Duration = MAX_WAIT;

    /// Resolves the queue: a name through GetQueueUrl in `region`; a URL is used as
    /// is (no call), in the region its host names when it is an AWS SQS host
    /// (`sqs.<region>.amazonaws.com`), else in `region`. An empty or malformed
    /// value is a [`ConfigError`] of `interruption-queue`.
    pub async fn connect(
        config: &AwsConfig,
        region: &Region,
        queue: &str,
    ) -> Result<Self, AwsError> {
        match QueueRef::parse(queue)? {
            QueueRef::Url(url) => {
                let region = url_region(&url).unwrap_or_else(|| region.clone());
                Ok(Self {
                    client: SqsClient::connect(config, &region).await,
                    url,
                })
            }
            QueueRef::Name(name) => {
                let client = SqsClient::connect(config, region).await;
                let timeout = client.signed.retry().attempt_timeout;
                let output = client
                    .invoke("GetQueueUrl", &json!({ "QueueName": name }), timeout)
                    .await?;
                let url = output
                    .get("QueueUrl")
                    .and_then(Value::as_str)
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| AwsError::Other {
                        region: region.clone(),
                        operation: "GetQueueUrl",
                        message: format!("no QueueUrl for queue {name} in {output}"),
                    })?;
                Ok(Self {
                    url: url.to_owned(),
                    client,
                })
            }
        }
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The region the queue is called in.
    pub fn region(&self) -> &Region {
        self.client.region()
    }

    /// Every AWS API action the queue calls: the IAM statement it needs, on the
    /// queue's ARN (on top of [`crate::AwsNodeGroups::called_actions`]).
    pub fn called_actions() -> &'static [&'static str] {
        &["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"]
    }

    /// One long poll: up to 10 messages, waiting up to `wait` (at most 20 s, SQS's
    /// limit; whole seconds) for the first. Messages stay in the queue, invisible
    /// for the queue's visibility timeout, until [`delete`](Self::delete)d: one not
    /// handled comes back.
    pub async fn receive(&self, wait: Duration) -> Result<Vec<QueueMessage>, AwsError> {
        let wait = Duration::from_secs(wait.min(MAX_WAIT).as_secs());
        let input = json!({ "QueueUrl": self.url, "MaxNumberOfMessages": MAX_MESSAGES, "WaitTimeSeconds": wait.as_secs() });
        // The response only comes when the wait is over: the attempt must outlast it.
        let timeout = wait + self.client.signed.retry().attempt_timeout;
        let output = self
            .client
            .invoke("ReceiveMessage", &input, timeout)
            .await?;
        let unreadable = |message: String| AwsError::Other {
            region: self.region().clone(),
            operation: "ReceiveMessage",
            message,
        };
        let Some(messages) = output.get("Messages") else {
            return Ok(Vec::new());
        };
        let messages = messages
            .as_array()
            .ok_or_else(|| unreadable(format!("Messages is not a list: {messages}")))?;
        messages
            .iter()
            .map(|m| {
                let text = |field: &str| m.get(field).and_then(Value::as_str).map(str::to_owned);
                Ok(QueueMessage {
                    id: text("MessageId")
                        .ok_or_else(|| unreadable(format!("message without MessageId: {m}")))?,
                    receipt: text("ReceiptHandle")
                        .ok_or_else(|| unreadable(format!("message without ReceiptHandle: {m}")))?,
                    body: text("Body").unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Deletes a received message by its receipt handle (done with it, handled or
    /// unreadable). Deleting twice is not an error (SQS's behaviour).
    pub async fn delete(&self, receipt: &str) -> Result<(), AwsError> {
        let input = json!({ "QueueUrl": self.url, "ReceiptHandle": receipt });
        self.client
            .invoke(
                "DeleteMessage",
                &input,
                self.client.signed.retry().attempt_timeout,
            )
            .await
            .map(|_| ())
    }
}

/// What `--interruption-queue` names.
#[derive(Debug, PartialEq, Eq)]
enum QueueRef {
    Url(String),
    Name(String),
}

impl QueueRef {
    fn parse(text: &str) -> Result<Self, ConfigError> {
        let bad = |message: String| ConfigError::new("interruption-queue", message);
        let text = text.trim();
        if text.starts_with("https://") || text.starts_with("http://") {
            let path = text
                .split_once("://")
                .map(|(_, rest)| rest)
                .and_then(|rest| rest.split_once('/'))
                .map(|(_, path)| path);
            if path.is_none_or(|p| p.trim_matches('/').is_empty()) {
                return Err(bad(format!("{text:?} is not a queue URL (expected https://sqs.<region>.amazonaws.com/<account>/<name>)")));
            }
            return Ok(Self::Url(text.to_owned()));
        }
        if text.starts_with("arn:") {
            return Err(bad(format!(
                "{text:?} is an ARN; give the queue's name or URL"
            )));
        }
        let stem = text.strip_suffix(".fifo").unwrap_or(text);
        let valid = !stem.is_empty()
            && text.len() <= 80
            && stem
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(bad(format!(
                "{text:?} is neither a queue URL nor a queue name (1 to 80 letters, digits, '-' and '_', optionally ending in .fifo)"
            )));
        }
        Ok(Self::Name(text.to_owned()))
    }
}

/// The region in an AWS SQS queue URL's host: `sqs.<region>.amazonaws.com[.cn]`, or
/// the legacy `<region>.queue.amazonaws.com`. `None` for other hosts (moto, VPC
/// endpoints), which are called in the configured region.
fn url_region(url: &str) -> Option<Region> {
    let host = url
        .split_once("://")?
        .1
        .split('/')
        .next()?
        .split(':')
        .next()?;
    let region = host
        .strip_prefix("sqs.")
        .and_then(|rest| {
            rest.strip_suffix(".amazonaws.com")
                .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))
        })
        .or_else(|| host.strip_suffix(".queue.amazonaws.com"))?;
    let valid = !region.is_empty()
        && !region.contains('.')
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    valid.then(|| Region::new(region))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_and_urls() {
        assert_eq!(
            QueueRef::parse(" interruptions ").unwrap(),
            QueueRef::Name("interruptions".into())
        );
        assert_eq!(
            QueueRef::parse("my_queue-1.fifo").unwrap(),
            QueueRef::Name("my_queue-1.fifo".into())
        );
        let url = "https://sqs.us-east-2.amazonaws.com/123456789012/interruptions";
        assert_eq!(QueueRef::parse(url).unwrap(), QueueRef::Url(url.into()));
        assert_eq!(
            QueueRef::parse("http://127.0.0.1:5000/123456789012/q").unwrap(),
            QueueRef::Url("http://127.0.0.1:5000/123456789012/q".into())
        );
        for bad in [
            "",
            "  ",
            "has space",
            "a/b",
            ".fifo",
            "arn:aws:sqs:us-east-2:123456789012:q",
            "https://sqs.us-east-2.amazonaws.com/",
            &"x".repeat(81),
        ] {
            let e = QueueRef::parse(bad).unwrap_err();
            assert_eq!(e.field, "interruption-queue", "{bad}: {e}");
        }
    }

    #[test]
    fn regions_of_queue_urls() {
        let region = |url: &str| url_region(url).map(|r| r.0);
        assert_eq!(
            region("https://sqs.us-east-2.amazonaws.com/123456789012/q").as_deref(),
            Some("us-east-2")
        );
        assert_eq!(
            region("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q").as_deref(),
            Some("cn-north-1")
        );
        assert_eq!(
            region("https://eu-west-1.queue.amazonaws.com/123456789012/q").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region("http://127.0.0.1:5000/123456789012/q"), None);
        assert_eq!(
            region("https://vpce-1a2b3c4d.sqs.us-east-1.vpce.amazonaws.com/123456789012/q"),
            None
        );
        assert_eq!(region("https://queue.amazonaws.com/123456789012/q"), None);
    }

    #[test]
    fn json_errors_are_classified() {
        let r = Region::new("us-east-2");
        let response = |status: u16, body: &str, headers: &[(&'static str, &str)]| {
            let mut map = http::HeaderMap::new();
            for (k, v) in headers {
                map.insert(*k, v.parse().unwrap());
            }
            RawResponse {
                status,
                headers: map,
                body: body.to_owned().into(),
            }
        };
        let input = json!({ "QueueName": "interruptions" });
        let missing = r#"{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "The specified queue does not exist."}"#;
        let e = read(&r, "GetQueueUrl", &input, response(400, missing, &[])).unwrap_err();
        assert!(
            matches!(&e, AwsError::NotFound { what, .. } if what == "SQS queue interruptions"),
            "{e:?}"
        );
        let throttled =
            r#"{"__type": "com.amazonaws.sqs#RequestThrottled", "message": "slow down"}"#;
        assert!(
            read(&r, "ReceiveMessage", &input, response(400, throttled, &[]))
                .unwrap_err()
                .is_transient()
        );
        let denied =
            r#"{"__type": "com.amazon.coral.service#AccessDeniedException", "Message": "no"}"#;
        assert_eq!(
            read(&r, "ReceiveMessage", &input, response(400, denied, &[]))
                .unwrap_err()
                .metric_label(),
            "denied"
        );
        // No JSON body: the headers still say what it was.
        let e = read(
            &r,
            "GetQueueUrl",
            &input,
            response(
                400,
                "",
                &[(
                    "x-amzn-query-error",
                    "AWS.SimpleQueueService.NonExistentQueue;Sender",
                )],
            ),
        );
        assert_eq!(e.unwrap_err().metric_label(), "not_found");
        let e = read(
            &r,
            "GetQueueUrl",
            &input,
            response(
                400,
                "",
                &[("x-amzn-errortype", "AccessDenied:http://internal")],
            ),
        );
        assert_eq!(e.unwrap_err().metric_label(), "denied");
        let e = read(
            &r,
            "ReceiveMessage",
            &input,
            response(503, "<html>busy</html>", &[]),
        )
        .unwrap_err();
        assert!(e.is_transient() && e.to_string().contains("busy"), "{e}");
        assert_eq!(
            read(&r, "DeleteMessage", &input, response(200, "", &[])).unwrap(),
            json!({})
        );
        assert_eq!(
            read(&r, "ReceiveMessage", &input, response(200, "not json", &[]))
                .unwrap_err()
                .metric_label(),
            "other"
        );
    }
}
