//! The few EC2 calls the adapter makes, without `aws-sdk-ec2` (which alone costs
//! ~10 minutes and 8 GB to compile): EC2's query protocol is a form-encoded POST,
//! signed with SigV4 (`aws-sigv4`, already compiled for the SDK), answered with XML
//! (read by `xml.rs`). Transport, signing and retries (throttling such as
//! `RequestLimitExceeded`, and 5xx) are `signed.rs`'s, shared with the SQS client.

use crate::config::{AwsConfig, RetrySettings};
use crate::error::{classify_response, AwsError};
use crate::signed::{self, HttpsClient, RawResponse, SignedClient, SignedRequest};
use crate::xml::{self, Element};
use aws_credential_types::provider::SharedCredentialsProvider;
use model::Region;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// EC2's API version for the query protocol.
const API_VERSION: &str = "2016-11-15";

/// RFC 3986 unreserved characters stay; everything else is percent-encoded (SigV4's rule).
const QUERY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A signed EC2 query-protocol client for one region.
#[derive(Clone)]
pub struct Ec2Client {
    signed: SignedClient,
}

impl std::fmt::Debug for Ec2Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Client")
            .field("region", self.signed.region())
            .field("endpoint", &self.signed.endpoint())
            .finish()
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
        Self {
            signed: SignedClient::new("ec2", region, endpoint, credentials, http, retry),
        }
    }

    /// A client for `region` with the credentials, endpoint and retry policy of
    /// `config` (for fixtures in tests and tools; the adapter builds its own).
    pub async fn connect(config: &AwsConfig, region: &Region) -> Self {
        let credentials = signed::credentials_provider(config, region).await;
        let endpoint = signed::endpoint("ec2", region, config.endpoint_url.as_deref());
        Self::new(
            region.clone(),
            endpoint,
            credentials,
            signed::https_client(),
            config.retry.clone(),
        )
    }

    /// The region this client calls.
    pub fn region(&self) -> &Region {
        self.signed.region()
    }

    /// Calls `action` with `params` (query-protocol names such as
    /// `LaunchTemplateData.InstanceType`), retrying throttling and 5xx, and returns
    /// the response's root element.
    pub async fn call(
        &self,
        action: &'static str,
        params: &[(&str, &str)],
    ) -> Result<Element, AwsError> {
        let mut body = format!("Action={action}&Version={API_VERSION}");
        for (key, value) in params {
            body.push('&');
            body.extend(utf8_percent_encode(key, QUERY_ENCODE));
            body.push('=');
            body.extend(utf8_percent_encode(value, QUERY_ENCODE));
        }
        let request = SignedRequest {
            content_type: "application/x-www-form-urlencoded; charset=utf-8",
            headers: Vec::new(),
            body,
            timeout: self.signed.retry().attempt_timeout,
        };
        self.signed
            .call(action, &request, |response| self.read(action, response))
            .await
    }

    /// The root element of a 2xx response; an error response classified by its
    /// `<Error><Code>`.
    fn read(&self, action: &'static str, response: RawResponse) -> Result<Element, AwsError> {
        let region = self.signed.region();
        let RawResponse { status, body, .. } = response;
        let text = String::from_utf8_lossy(&body);
        if (200..300).contains(&status) {
            return xml::parse(&text).map_err(|e| AwsError::Other {
                region: region.clone(),
                operation: action,
                message: format!("unreadable response: {e}"),
            });
        }
        let (code, message) = match xml::parse(&text) {
            Ok(root) => {
                let error = root.find("Error");
                (
                    error.and_then(|e| e.text_at(&["Code"])).map(str::to_owned),
                    error
                        .and_then(|e| e.text_at(&["Message"]))
                        .unwrap_or("no message")
                        .to_owned(),
                )
            }
            Err(_) => (None, signed::excerpt(status, &body)),
        };
        Err(classify_response(
            region,
            action,
            Some(status),
            code.as_deref(),
            message,
            || format!("EC2 object of {action}"),
        ))
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
                return Err(AwsError::Rejected {
                    operation: "DescribeLaunchTemplateVersions",
                    message: "launch template without id or name".into(),
                })
            }
        }
        let root = self.call("DescribeLaunchTemplateVersions", &params).await?;
        let what = || {
            format!(
                "launch template {} version {version}",
                id.or(name).unwrap_or("?")
            )
        };
        let item = root
            .path(&["launchTemplateVersionSet", "item"])
            .ok_or_else(|| AwsError::NotFound {
                what: what(),
                message: "DescribeLaunchTemplateVersions returned no version".into(),
            })?;
        let data = item.child("launchTemplateData");
        Ok(LaunchTemplateData {
            id: item.text_at(&["launchTemplateId"]).map(str::to_owned),
            name: item.text_at(&["launchTemplateName"]).map(str::to_owned),
            version: item.text_at(&["versionNumber"]).map(str::to_owned),
            instance_type: data
                .and_then(|d| d.text_at(&["instanceType"]))
                .map(str::to_owned),
            market_type: data
                .and_then(|d| d.text_at(&["instanceMarketOptions", "marketType"]))
                .map(str::to_owned),
            has_instance_requirements: data.and_then(|d| d.child("instanceRequirements")).is_some(),
        })
    }
}
