//! SigV4-signed calls by hand, for the services the adapter reaches without their SDK
//! crate (EC2's query protocol in `ec2.rs`, SQS's JSON protocol in `sqs.rs`): those
//! SDK crates would cost minutes and gigabytes to compile for a handful of calls.
//!
//! Shared here, so that every hand-made call behaves alike: one HTTPS client (hyper +
//! rustls with ring, the crates the SDK's own client is built from), the endpoint
//! override rules, credentials (cached until shortly before they expire), signing,
//! the per-attempt timeout, and the retry loop (throttling and unavailability, capped
//! exponential backoff with full jitter from a seeded generator). Each service module
//! only builds its body and reads its own success and error formats.

use crate::config::{AwsConfig, Credentials, RetrySettings};
use crate::error::AwsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use model::Region;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub(crate) type HttpsClient =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An HTTPS (and plain HTTP, for moto) client with rustls and ring.
pub(crate) fn https_client() -> HttpsClient {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .unwrap_or_else(|_| {
            // No system roots (a minimal container): HTTPS will fail with a clear
            // TLS error at call time, plain HTTP still works.
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            )
        })
        .https_or_http()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector)
}

/// The endpoint of `service` (`ec2`, `sqs`: its SigV4 name and host prefix) in a
/// region: the configured override, else `AWS_ENDPOINT_URL_<SERVICE>`, else
/// `AWS_ENDPOINT_URL`, else AWS's — the SDKs' order, so one environment points every
/// client (ours and the SDK's) at the same place.
pub(crate) fn endpoint(service: &str, region: &Region, override_url: Option<&str>) -> String {
    endpoint_with(service, region, override_url, |name| {
        std::env::var(name).ok()
    })
}

/// [`endpoint`] with the environment given (testable without touching the process's).
fn endpoint_with(
    service: &str,
    region: &Region,
    override_url: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> String {
    let from_env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let url = override_url
        .map(str::to_owned)
        .or_else(|| {
            from_env(&format!(
                "AWS_ENDPOINT_URL_{}",
                service.to_ascii_uppercase()
            ))
        })
        .or_else(|| from_env("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| {
            let suffix = if region.0.starts_with("cn-") {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            };
            format!("https://{service}.{}.{suffix}", region.0)
        });
    format!("{}/", url.trim().trim_end_matches('/'))
}

/// The credentials of `config`: its static keys, or the SDK's default chain loaded for
/// `region` (for clients built outside [`crate::AwsNodeGroups`], which shares the
/// provider its SDK configuration already loaded).
pub(crate) async fn credentials_provider(
    config: &AwsConfig,
    region: &Region,
) -> Option<SharedCredentialsProvider> {
    match &config.credentials {
        Credentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } => Some(SharedCredentialsProvider::new(
            aws_credential_types::Credentials::new(
                access_key_id.clone(),
                secret_access_key.clone(),
                session_token.clone(),
                None,
                "batch-autoscaler-static-keys",
            ),
        )),
        Credentials::DefaultChain => {
            let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(region.0.clone()))
                .http_client(crate::client::sdk_http_client())
                .load()
                .await;
            sdk.credentials_provider()
        }
    }
}

/// One request to the service's endpoint (always `POST /`, the shape of both the
/// query and the JSON protocols).
pub(crate) struct SignedRequest {
    pub content_type: &'static str,
    /// Further headers to send and sign (`x-amz-target`).
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// The whole attempt, response body included: longer than a long poll's wait.
    pub timeout: Duration,
}

/// What came back from one attempt (any status).
pub(crate) struct RawResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Signed calls to one service in one region.
#[derive(Clone)]
pub(crate) struct SignedClient {
    inner: Arc<Inner>,
}

struct Inner {
    service: &'static str,
    region: Region,
    endpoint: String,
    credentials: Option<SharedCredentialsProvider>,
    cached: tokio::sync::Mutex<Option<aws_credential_types::Credentials>>,
    http: HttpsClient,
    retry: RetrySettings,
    jitter: Mutex<SplitMix64>,
}

impl SignedClient {
    pub(crate) fn new(
        service: &'static str,
        region: Region,
        endpoint: String,
        credentials: Option<SharedCredentialsProvider>,
        http: HttpsClient,
        retry: RetrySettings,
    ) -> Self {
        let hash = |text: &str, from: u64| {
            text.bytes()
                .fold(from, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        };
        let seed = retry.jitter_seed ^ hash(&region.0, hash(service, 0));
        Self {
            inner: Arc::new(Inner {
                service,
                region,
                endpoint,
                credentials,
                cached: tokio::sync::Mutex::new(None),
                http,
                retry,
                jitter: Mutex::new(SplitMix64(seed)),
            }),
        }
    }

    pub(crate) fn region(&self) -> &Region {
        &self.inner.region
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    pub(crate) fn retry(&self) -> &RetrySettings {
        &self.inner.retry
    }

    /// Sends `request` for `operation` and reads the response with `read`, retrying
    /// what is transient (throttling, unavailability: [`AwsError::is_transient`]),
    /// whether it came from the transport or from `read`'s classification.
    pub(crate) async fn call<T>(
        &self,
        operation: &'static str,
        request: &SignedRequest,
        read: impl Fn(RawResponse) -> Result<T, AwsError>,
    ) -> Result<T, AwsError> {
        let retry = &self.inner.retry;
        let mut attempt = 1;
        loop {
            let result = match self.attempt(operation, request).await {
                Ok(response) => read(response),
                Err(error) => Err(error),
            };
            match result {
                Err(error) if error.is_transient() && attempt < retry.max_attempts => {
                    let ceiling = retry
                        .initial_backoff
                        .saturating_mul(1 << (attempt - 1).min(20))
                        .min(retry.max_backoff);
                    let pause = {
                        let mut rng = self
                            .inner
                            .jitter
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        ceiling.mul_f64(rng.next_f64())
                    };
                    tracing::debug!(service = self.inner.service, operation, attempt, ?pause, %error, "retrying AWS call");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn attempt(
        &self,
        operation: &'static str,
        request: &SignedRequest,
    ) -> Result<RawResponse, AwsError> {
        let region = &self.inner.region;
        let endpoint = self.inner.endpoint.as_str();
        let other = |message: String| AwsError::Other {
            region: region.clone(),
            operation,
            message,
        };
        let identity: Identity = self.credentials(operation).await?.into();
        let uri: http::Uri = endpoint.parse().map_err(|e| {
            other(format!(
                "bad {} endpoint {endpoint:?}: {e}",
                self.inner.service
            ))
        })?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| {
                other(format!(
                    "{} endpoint {endpoint:?} has no host",
                    self.inner.service
                ))
            })?;
        let mut builder = http::Request::builder()
            .method("POST")
            .uri(uri)
            .header("host", host)
            .header("content-type", request.content_type);
        for (name, value) in &request.headers {
            builder = builder.header(*name, value.as_str());
        }
        let mut http_request = builder
            .body(Full::new(Bytes::from(request.body.clone())))
            .map_err(|e| other(format!("building the request: {e}")))?;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&region.0)
            .name(self.inner.service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| other(format!("signing: {e}")))?
            .into();
        let headers: Vec<(String, String)> = http_request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let signable = SignableRequest::new(
            "POST",
            endpoint,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(request.body.as_bytes()),
        )
        .map_err(|e| other(format!("signing: {e}")))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| other(format!("signing: {e}")))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut http_request);

        let unavailable = |message: String| AwsError::Unavailable {
            region: region.clone(),
            operation,
            message,
        };
        tokio::time::timeout(request.timeout, async {
            let response = self
                .inner
                .http
                .request(http_request)
                .await
                .map_err(|e| unavailable(format!("sending: {e}")))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unavailable(format!("reading the response: {e}")))?
                .to_bytes();
            Ok(RawResponse {
                status,
                headers,
                body,
            })
        })
        .await
        .map_err(|_| unavailable(format!("no response within {:?}", request.timeout)))?
    }

    async fn credentials(
        &self,
        operation: &'static str,
    ) -> Result<aws_credential_types::Credentials, AwsError> {
        let denied = |message: String| AwsError::Denied {
            region: self.inner.region.clone(),
            operation,
            message,
        };
        let provider = self
            .inner
            .credentials
            .as_ref()
            .ok_or_else(|| denied("no AWS credentials configured".into()))?;
        let mut cached = self.inner.cached.lock().await;
        let fresh_until = SystemTime::now() + Duration::from_secs(300);
        if let Some(credentials) = cached.as_ref() {
            if credentials
                .expiry()
                .is_none_or(|expiry| expiry > fresh_until)
            {
                return Ok(credentials.clone());
            }
        }
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| denied(format!("loading credentials: {e}")))?;
        *cached = Some(credentials.clone());
        Ok(credentials)
    }
}

/// A short, printable excerpt of an unreadable body, for error messages.
pub(crate) fn excerpt(status: u16, body: &[u8]) -> String {
    format!(
        "HTTP {status}: {}",
        String::from_utf8_lossy(body)
            .chars()
            .take(200)
            .collect::<String>()
    )
}

/// SplitMix64: a tiny seeded generator for retry jitter (no `rand` needed).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_the_sdk_order() {
        let r = Region::new("us-west-2");
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let both: &[(&str, &str)] = &[
            ("AWS_ENDPOINT_URL_SQS", "http://sqs-only:1"),
            ("AWS_ENDPOINT_URL", "http://all:2/"),
        ];
        assert_eq!(
            endpoint_with("sqs", &r, Some("http://127.0.0.1:5000"), env(both)),
            "http://127.0.0.1:5000/"
        );
        assert_eq!(
            endpoint_with("sqs", &r, None, env(both)),
            "http://sqs-only:1/"
        );
        assert_eq!(endpoint_with("ec2", &r, None, env(both)), "http://all:2/");
        assert_eq!(
            endpoint_with("sqs", &r, None, env(&[("AWS_ENDPOINT_URL_SQS", " ")])),
            "https://sqs.us-west-2.amazonaws.com/"
        );
        assert_eq!(
            endpoint_with("ec2", &r, None, env(&[])),
            "https://ec2.us-west-2.amazonaws.com/"
        );
        assert_eq!(
            endpoint_with("sqs", &Region::new("cn-north-1"), None, env(&[])),
            "https://sqs.cn-north-1.amazonaws.com.cn/"
        );
    }

    #[test]
    fn jitter_is_seeded_and_in_range() {
        let mut a = SplitMix64(7);
        let mut b = SplitMix64(7);
        for _ in 0..100 {
            let x = a.next_f64();
            assert_eq!(x, b.next_f64());
            assert!((0.0..1.0).contains(&x));
        }
    }
}
