//! Connections: one HTTPS stack (hyper + rustls with ring, no aws-lc) shared by every
//! client, and per region an Auto Scaling client from `aws-sdk-autoscaling` plus an
//! [`Ec2Client`] for the few EC2 reads. Credentials, endpoint override, timeouts and
//! the retry policy are applied here and nowhere else.

use crate::config::{AwsConfig, Credentials, RetrySettings};
use crate::ec2::Ec2Client;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use model::Region;
use std::time::Duration;

/// The clients of one region.
#[derive(Debug, Clone)]
pub(crate) struct RegionClients {
    pub region: Region,
    /// Position in `--aws-regions`: 0 is the primary region.
    pub rank: u32,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub ec2: Ec2Client,
}

/// The SDK's HTTPS client with rustls and ring. Plain `http://` endpoints (moto)
/// work through it too. Public so test fixtures build their SDK clients alike.
pub fn sdk_http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// The retry policy as the SDK spells it: standard mode (exponential backoff with
/// full jitter, capped; throttling and transient errors are retried).
pub(crate) fn sdk_retry_config(retry: &RetrySettings) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(retry.max_attempts.max(1))
        .with_initial_backoff(retry.initial_backoff)
        .with_max_backoff(retry.max_backoff)
}

/// Connects to every configured region, in order.
pub(crate) async fn connect(config: &AwsConfig) -> Vec<RegionClients> {
    let http = sdk_http_client();
    let ec2_http = crate::signed::https_client();
    let mut out = Vec::with_capacity(config.regions.len());
    for (rank, region) in config.regions.iter().enumerate() {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(region.0.clone()))
            .http_client(http.clone())
            .retry_config(sdk_retry_config(&config.retry))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5).min(config.retry.attempt_timeout))
                    .operation_attempt_timeout(config.retry.attempt_timeout)
                    .build(),
            );
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        if let Credentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } = &config.credentials
        {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                access_key_id.clone(),
                secret_access_key.clone(),
                session_token.clone(),
                None,
                "batch-autoscaler-static-keys",
            ));
        }
        let sdk = loader.load().await;
        let autoscaling = aws_sdk_autoscaling::Client::new(&sdk);
        let ec2_endpoint = crate::signed::endpoint("ec2", region, config.endpoint_url.as_deref());
        let ec2 = Ec2Client::new(
            region.clone(),
            ec2_endpoint,
            sdk.credentials_provider(),
            ec2_http.clone(),
            config.retry.clone(),
        );
        out.push(RegionClients {
            region: region.clone(),
            rank: rank as u32,
            autoscaling,
            ec2,
        });
    }
    out
}
