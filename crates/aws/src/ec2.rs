//! The few EC2 calls the adapter makes, without `aws-sdk-ec2` (which alone costs
//! ~10 minutes and 8 GB to compile): EC2's query protocol is a form-encoded POST,
//! signed with SigV4 (`aws-sigv4`, already compiled for the SDK), answered with XML
//! (read by `xml.rs`). HTTP goes through hyper + rustls with ring — the crates the
//! SDK's own client is built from, so this adds nothing to the build.
//!
//! Throttling (`RequestLimitExceeded`) and 5xx are retried here with capped
//! exponential backoff and full jitter from a seeded generator.

use crate::config::{AwsConfig, Credentials, RetrySettings};
use crate::error::{classify_response, AwsError};
use crate::xml::{self, Element};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use model::Region;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// EC2's API version for the query protocol.
const API_VERSION: &str = "2016-11-15";

/// RFC 3986 unreserved characters stay; everything else is percent-encoded (SigV4's rule).
const QUERY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

pub(crate) type HttpsClient = hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An HTTPS (and plain HTTP, for moto) client with rustls and ring.
pub(crate) fn https_client() -> HttpsClient {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .unwrap_or_else(|_| {
            // No system roots (a minimal container): HTTPS will fail with a clear
            // TLS error at call time, plain HTTP still works.
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
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

/// The EC2 endpoint of a region: the configured override, else `AWS_ENDPOINT_URL_EC2`,
/// else `AWS_ENDPOINT_URL`, else AWS's.
pub(crate) fn endpoint(region: &Region, override_url: Option<&str>) -> String {
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let url = override_url
        .map(str::to_owned)
        .or_else(|| from_env("AWS_ENDPOINT_URL_EC2"))
        .or_else(|| from_env("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| {
            let suffix = if region.0.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
            format!("https://ec2.{}.{suffix}", region.0)
        });
    format!("{}/", url.trim_end_matches('/'))
}

/// A signed EC2 query-protocol client for one region.
#[derive(Clone)]
pub struct Ec2Client {
    inner: Arc<Inner>,
}

struct Inner {
    region: Region,
    endpoint: String,
    credentials: Option<SharedCredentialsProvider>,
    cached: tokio::sync::Mutex<Option<aws_credential_types::Credentials>>,
    http: HttpsClient,
    retry: RetrySettings,
    jitter: Mutex<SplitMix64>,
}

impl std::fmt::Debug for Ec2Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Client").field("region", &self.inner.region).field("endpoint", &self.inner.endpoint).finish()
    }
}

/// What the adapter reads from a launch template version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchTemplateData {
    pub id: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub instance_type: Option<String>,
    /// `spot` when the template requests spot instances.
    pub market_type: Option<String>,
    /// The template selects types by attributes (`InstanceRequirements`).
    pub has_instance_requirements: bool,
}

impl Ec2Client {
    pub(crate) fn new(
        region: Region,
        endpoint: String,
        credentials: Option<SharedCredentialsProvider>,
        http: HttpsClient,
        retry: RetrySettings,
    ) -> Self {
        let seed = retry.jitter_seed ^ region.0.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        Self {
            inner: Arc::new(Inner {
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

    /// A client for `region` with the credentials, endpoint and retry policy of
    /// `config` (for fixtures in tests and tools; the adapter builds its own).
    pub async fn connect(config: &AwsConfig, region: &Region) -> Self {
        let credentials = match &config.credentials {
            Credentials::Static { access_key_id, secret_access_key, session_token } => {
                Some(SharedCredentialsProvider::new(aws_credential_types::Credentials::new(
                    access_key_id.clone(),
                    secret_access_key.clone(),
                    session_token.clone(),
                    None,
                    "batch-autoscaler-static-keys",
                )))
            }
            Credentials::DefaultChain => {
                let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(region.0.clone()))
                    .http_client(crate::client::sdk_http_client())
                    .load()
                    .await;
                sdk.credentials_provider()
            }
        };
        Self::new(region.clone(), endpoint(region, config.endpoint_url.as_deref()), credentials, https_client(), config.retry.clone())
    }

    /// The region this client calls.
    pub fn region(&self) -> &Region {
        &self.inner.region
    }

    /// Calls `action` with `params` (query-protocol names such as
    /// `LaunchTemplateData.InstanceType`), retrying throttling and 5xx, and returns
    /// the response's root element.
    pub async fn call(&self, action: &'static str, params: &[(&str, &str)]) -> Result<Element, AwsError> {
        let mut body = format!("Action={action}&Version={API_VERSION}");
        for (key, value) in params {
            body.push('&');
            body.extend(utf8_percent_encode(key, QUERY_ENCODE));
            body.push('=');
            body.extend(utf8_percent_encode(value, QUERY_ENCODE));
        }
        let retry = &self.inner.retry;
        let mut attempt = 1;
        loop {
            match self.attempt(action, &body).await {
                Err(error) if error.is_transient() && attempt < retry.max_attempts => {
                    let ceiling = retry.initial_backoff.saturating_mul(1 << (attempt - 1).min(20)).min(retry.max_backoff);
                    let pause = {
                        let mut rng = self.inner.jitter.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                        ceiling.mul_f64(rng.next_f64())
                    };
                    tracing::debug!(action, attempt, ?pause, %error, "retrying EC2 call");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn attempt(&self, action: &'static str, body: &str) -> Result<Element, AwsError> {
        let region = &self.inner.region;
        let other = |message: String| AwsError::Other { region: region.clone(), operation: action, message };
        let identity: Identity = self.credentials(action).await?.into();
        let uri: http::Uri = self.inner.endpoint.parse().map_err(|e| other(format!("bad EC2 endpoint {:?}: {e}", self.inner.endpoint)))?;
        let host = uri.authority().map(|a| a.as_str().to_owned()).ok_or_else(|| other(format!("EC2 endpoint {:?} has no host", self.inner.endpoint)))?;
        let mut request = http::Request::builder()
            .method("POST")
            .uri(uri)
            .header("host", host)
            .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| other(format!("building the request: {e}")))?;
        let settings = SigningSettings::default();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&region.0)
            .name("ec2")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| other(format!("signing: {e}")))?
            .into();
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let signable = SignableRequest::new(
            "POST",
            self.inner.endpoint.as_str(),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| other(format!("signing: {e}")))?;
        let (instructions, _signature) = sign(signable, &params).map_err(|e| other(format!("signing: {e}")))?.into_parts();
        instructions.apply_to_request_http1x(&mut request);

        let unavailable = |message: String| AwsError::Unavailable { region: region.clone(), operation: action, message };
        let response = tokio::time::timeout(self.inner.retry.attempt_timeout, async {
            let response = self.inner.http.request(request).await.map_err(|e| unavailable(format!("sending: {e}")))?;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await.map_err(|e| unavailable(format!("reading the response: {e}")))?.to_bytes();
            Ok::<_, AwsError>((status, bytes))
        })
        .await
        .map_err(|_| unavailable(format!("no response within {:?}", self.inner.retry.attempt_timeout)))??;
        let (status, bytes) = response;
        let text = String::from_utf8_lossy(&bytes);
        if (200..300).contains(&status) {
            return xml::parse(&text).map_err(|e| other(format!("unreadable response: {e}")));
        }
        let (code, message) = match xml::parse(&text) {
            Ok(root) => {
                let error = root.find("Error");
                (
                    error.and_then(|e| e.text_at(&["Code"])).map(str::to_owned),
                    error.and_then(|e| e.text_at(&["Message"])).unwrap_or("no message").to_owned(),
                )
            }
            Err(_) => (None, format!("HTTP {status}: {}", text.chars().take(200).collect::<String>())),
        };
        Err(classify_response(region, action, Some(status), code.as_deref(), message, || format!("EC2 object of {action}")))
    }

    async fn credentials(&self, action: &'static str) -> Result<aws_credential_types::Credentials, AwsError> {
        let denied = |message: String| AwsError::Denied { region: self.inner.region.clone(), operation: action, message };
        let provider = self.inner.credentials.as_ref().ok_or_else(|| denied("no AWS credentials configured".into()))?;
        let mut cached = self.inner.cached.lock().await;
        let fresh_until = SystemTime::now() + Duration::from_secs(300);
        if let Some(credentials) = cached.as_ref() {
            if credentials.expiry().is_none_or(|expiry| expiry > fresh_until) {
                return Ok(credentials.clone());
            }
        }
        let credentials = provider.provide_credentials().await.map_err(|e| denied(format!("loading credentials: {e}")))?;
        *cached = Some(credentials.clone());
        Ok(credentials)
    }

    /// DescribeLaunchTemplateVersions for one version (`$Default` when `version` is
    /// `None`) of the template with this id, or else this name.
    pub async fn launch_template_version(
        &self,
        id: Option<&str>,
        name: Option<&str>,
        version: Option<&str>,
    ) -> Result<LaunchTemplateData, AwsError> {
        let version = version.unwrap_or("$Default");
        let mut params = vec![("LaunchTemplateVersion.1", version)];
        match (id, name) {
            (Some(id), _) => params.push(("LaunchTemplateId", id)),
            (None, Some(name)) => params.push(("LaunchTemplateName", name)),
            (None, None) => {
                return Err(AwsError::Rejected { operation: "DescribeLaunchTemplateVersions", message: "launch template without id or name".into() })
            }
        }
        let root = self.call("DescribeLaunchTemplateVersions", &params).await?;
        let what = || format!("launch template {} version {version}", id.or(name).unwrap_or("?"));
        let item = root.path(&["launchTemplateVersionSet", "item"]).ok_or_else(|| AwsError::NotFound {
            what: what(),
            message: "DescribeLaunchTemplateVersions returned no version".into(),
        })?;
        let data = item.child("launchTemplateData");
        Ok(LaunchTemplateData {
            id: item.text_at(&["launchTemplateId"]).map(str::to_owned),
            name: item.text_at(&["launchTemplateName"]).map(str::to_owned),
            version: item.text_at(&["versionNumber"]).map(str::to_owned),
            instance_type: data.and_then(|d| d.text_at(&["instanceType"])).map(str::to_owned),
            market_type: data.and_then(|d| d.text_at(&["instanceMarketOptions", "marketType"])).map(str::to_owned),
            has_instance_requirements: data.and_then(|d| d.child("instanceRequirements")).is_some(),
        })
    }
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
    fn endpoints() {
        let r = Region::new("us-west-2");
        assert_eq!(endpoint(&r, Some("http://127.0.0.1:5000")), "http://127.0.0.1:5000/");
        assert_eq!(endpoint(&r, Some("http://127.0.0.1:5000/")), "http://127.0.0.1:5000/");
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
