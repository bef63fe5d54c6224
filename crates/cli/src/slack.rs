//! Slack incoming-webhook notifications (`--slack-hook`). The driver decides what to
//! send and when (dedup, rate limit, never in dry-run, never blocking the loop); this
//! only posts `{"text": …}`. The webhook URL is a secret: it is never logged.

use driver::{Notifier, PortError};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

pub struct SlackNotifier {
    url: hyper::Uri,
    client: Client<Https, Full<Bytes>>,
}

impl SlackNotifier {
    pub fn new(url: &str) -> Result<Self, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|_| "slack-hook: not a URL".to_owned())?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            url: uri,
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }
}

impl Notifier for SlackNotifier {
    async fn notify(&self, text: &str) -> Result<(), PortError> {
        let body = serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap_or_default();
        let request = hyper::Request::post(self.url.clone())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| PortError::fatal("slack", e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| PortError::retryable("slack", e.to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(PortError::retryable(
                "slack",
                format!("webhook answered {}", response.status()),
            ))
        }
    }
}
