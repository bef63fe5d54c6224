//! What the adapter is told: cluster name, regions in order of preference, static
//! groups (`--nodes`), auto-discovery specs, credentials, endpoint and retry policy.
//! Parsing of the textual forms (`1:10:my-asg`, `asg:tag=k1,k2=v`) lives here so
//! that a bad flag is rejected at start-up with an error naming the bad part.

use model::Region;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Everything the adapter needs to connect. There is deliberately no `Default`: every
/// field is a choice the operator (or the test) makes.
#[derive(Clone)]
pub struct AwsConfig {
    /// `--cluster-name`: the value of the seed's `KubernetesCluster` tag and the
    /// `<cluster>` of CA's `k8s.io/cluster-autoscaler/<cluster>` tag.
    pub cluster_name: String,
    /// `--aws-regions`, in order of preference: the first is the primary region
    /// (`NodeGroupSpec::region_rank` 0).
    pub regions: Vec<Region>,
    /// CA's `--nodes=<min>:<max>:<asg-name>`: groups managed by name, whatever their
    /// tags; min and max override the ASG's own.
    pub static_groups: Vec<StaticGroup>,
    /// CA's `--node-group-auto-discovery=asg:tag=<key>[=<value>],...` specs, on top
    /// of the two built-in tag styles (the seed's and CA's for `cluster_name`).
    pub auto_discovery: Vec<String>,
    pub credentials: Credentials,
    /// Endpoint override for every service (tests point this at moto). When `None`,
    /// `AWS_ENDPOINT_URL` (and the per-service variables) still apply.
    pub endpoint_url: Option<String>,
    /// Pods per node for scale-from-zero templates (kubelet `--max-pods`).
    pub max_pods: u32,
    /// USD per instance-hour overrides, keyed by ASG name or instance type (the group
    /// name wins). Without one the catalog's on-demand price is used (× 0.35 for spot).
    pub prices: BTreeMap<String, f64>,
    /// How AWS calls are retried on throttling and 5xx.
    pub retry: RetrySettings,
}

impl fmt::Debug for AwsConfig {
    // By hand, so that a secret key can never reach a log through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsConfig")
            .field("cluster_name", &self.cluster_name)
            .field("regions", &self.regions)
            .field("static_groups", &self.static_groups)
            .field("auto_discovery", &self.auto_discovery)
            .field("credentials", &self.credentials)
            .field("endpoint_url", &self.endpoint_url)
            .field("max_pods", &self.max_pods)
            .field("prices", &self.prices)
            .field("retry", &self.retry)
            .finish()
    }
}

/// Where AWS credentials come from.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// The SDK's default chain: environment, profile, web identity (IRSA), EKS Pod
    /// Identity / ECS container credentials, instance profile. The seed's
    /// `--use-aws-iam-role` means this too (accepted as a no-op alias).
    DefaultChain,
    /// The seed's `--aws-access-key` / `--aws-secret-key`.
    Static {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
}

impl Credentials {
    /// Explicit keys when both are given (flags, or `AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY` read by the caller), the default chain otherwise.
    /// One key without the other is an error, not a silent fallback.
    pub fn from_keys(
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
    ) -> Result<Self, ConfigError> {
        match (
            access_key_id.filter(|k| !k.is_empty()),
            secret_access_key.filter(|k| !k.is_empty()),
        ) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Self::Static {
                access_key_id,
                secret_access_key,
                session_token: None,
            }),
            (None, None) => Ok(Self::DefaultChain),
            (Some(_), None) => Err(ConfigError::new(
                "aws-secret-key",
                "an access key was given without a secret key",
            )),
            (None, Some(_)) => Err(ConfigError::new(
                "aws-access-key",
                "a secret key was given without an access key",
            )),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DefaultChain => f.write_str("DefaultChain"),
            Self::Static {
                access_key_id,
                session_token,
                ..
            } => {
                // The access key id is not a secret (it shows in CloudTrail); the
                // secret key and the session token are.
                f.debug_struct("Static")
                    .field("access_key_id", access_key_id)
                    .field("secret_access_key", &"<redacted>")
                    .field(
                        "session_token",
                        &session_token.as_ref().map(|_| "<redacted>"),
                    )
                    .finish()
            }
        }
    }
}

/// Retry policy for throttling (`Throttling`, `RequestLimitExceeded`), 5xx and
/// transport errors: capped exponential backoff with full jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySettings {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Backoff before the first retry (doubled on each further retry, jittered).
    pub initial_backoff: Duration,
    /// Cap of one backoff.
    pub max_backoff: Duration,
    /// Timeout of one attempt (connect, send, read).
    pub attempt_timeout: Duration,
    /// Seed of the jitter of the adapter's own EC2 calls (the SDK jitters its own).
    pub jitter_seed: u64,
}

impl RetrySettings {
    /// For production: 5 attempts, 1 s doubling to 20 s, 20 s per attempt.
    pub fn production() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(20),
            jitter_seed: 0x5eed,
        }
    }

    /// For tests against a local server: failures are fast, throttling is still retried.
    pub fn fast() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(50),
            attempt_timeout: Duration::from_secs(10),
            jitter_seed: 1,
        }
    }
}

/// A group named by `--nodes=<min>:<max>:<asg-name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StaticGroup {
    pub min: u32,
    pub max: u32,
    pub name: String,
}

/// A flag or setting that cannot be used; names the flag and the bad part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: &'static str,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Parses CA's `--nodes` value `<min>:<max>:<asg-name>`. The name may itself contain
/// colons (ASG names may); min and max may not.
pub fn parse_static_group(text: &str) -> Result<StaticGroup, ConfigError> {
    let bad = |message: String| {
        ConfigError::new(
            "nodes",
            format!("{message} in {text:?} (expected <min>:<max>:<asg-name>, e.g. 1:10:my-asg)"),
        )
    };
    let mut parts = text.splitn(3, ':');
    let (Some(min), Some(max), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("missing parts".into()));
    };
    let min: u32 = min
        .trim()
        .parse()
        .map_err(|_| bad(format!("min {min:?} is not a whole number")))?;
    let max: u32 = max
        .trim()
        .parse()
        .map_err(|_| bad(format!("max {max:?} is not a whole number")))?;
    if min > max {
        return Err(bad(format!("min {min} is greater than max {max}")));
    }
    let name = name.trim();
    if name.is_empty() {
        return Err(bad("the ASG name is empty".into()));
    }
    if name.chars().count() > 255 {
        return Err(bad("the ASG name is longer than 255 characters".into()));
    }
    Ok(StaticGroup {
        min,
        max,
        name: name.to_owned(),
    })
}

/// One `--node-group-auto-discovery` spec: every listed tag must be present (with the
/// value, when one is given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoDiscoverySpec {
    pub tags: Vec<(String, Option<String>)>,
}

impl AutoDiscoverySpec {
    /// Whether an ASG with these tags matches.
    pub fn matches(&self, tags: &BTreeMap<String, String>) -> bool {
        self.tags
            .iter()
            .all(|(key, value)| match (tags.get(key), value) {
                (Some(_), None) => true,
                (Some(have), Some(want)) => have == want,
                (None, _) => false,
            })
    }
}

/// Parses CA's `asg:tag=<key>[=<value>][,<key>[=<value>]...]`.
pub fn parse_auto_discovery(text: &str) -> Result<AutoDiscoverySpec, ConfigError> {
    let bad = |message: String| {
        ConfigError::new(
            "node-group-auto-discovery",
            format!("{message} in {text:?} (expected asg:tag=<key>[=<value>],...)"),
        )
    };
    let (kind, rest) = text
        .split_once(':')
        .ok_or_else(|| bad("missing the \"asg:\" prefix".into()))?;
    if kind.trim() != "asg" {
        return Err(bad(format!(
            "unsupported discoverer {kind:?} (only \"asg\")"
        )));
    }
    let list = rest
        .trim()
        .strip_prefix("tag=")
        .ok_or_else(|| bad(format!("{rest:?} does not start with \"tag=\"")))?;
    let mut tags = Vec::new();
    for item in list.split(',') {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().to_owned())),
            None => (item.trim(), None),
        };
        if key.is_empty() {
            return Err(bad(format!("empty tag key in {item:?}")));
        }
        tags.push((key.to_owned(), value));
    }
    Ok(AutoDiscoverySpec { tags })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_groups_parse_like_cluster_autoscaler() {
        assert_eq!(
            parse_static_group("1:10:my-asg").unwrap(),
            StaticGroup {
                min: 1,
                max: 10,
                name: "my-asg".into()
            }
        );
        assert_eq!(parse_static_group("0:3:odd:name").unwrap().name, "odd:name");
        for (bad, part) in [
            ("x:10:a", "min \"x\""),
            ("1:y:a", "max \"y\""),
            ("5:1:a", "min 5 is greater than max 1"),
            ("1:2:", "name is empty"),
            ("1:2", "missing parts"),
            ("-1:2:a", "min \"-1\""),
        ] {
            let e = parse_static_group(bad).unwrap_err();
            assert!(e.to_string().contains(part), "{bad}: {e}");
            assert!(e.to_string().starts_with("nodes: "), "{e}");
        }
    }

    #[test]
    fn auto_discovery_specs_parse_and_match() {
        let spec =
            parse_auto_discovery("asg:tag=k8s.io/cluster-autoscaler/enabled,team=batch").unwrap();
        let mut tags = BTreeMap::new();
        tags.insert(
            "k8s.io/cluster-autoscaler/enabled".to_owned(),
            "true".to_owned(),
        );
        assert!(!spec.matches(&tags));
        tags.insert("team".to_owned(), "web".to_owned());
        assert!(!spec.matches(&tags));
        tags.insert("team".to_owned(), "batch".to_owned());
        assert!(spec.matches(&tags));
        for bad in ["tag=x", "mig:tag=x", "asg:x", "asg:tag=,a"] {
            assert!(parse_auto_discovery(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let credentials = Credentials::from_keys(
            Some("AKIDEXAMPLE".into()),
            Some("wJalrXUtnFEMI/K7MDENG".into()),
        )
        .unwrap();
        let config = AwsConfig {
            cluster_name: "c".into(),
            regions: vec![Region::new("us-west-2")],
            static_groups: vec![],
            auto_discovery: vec![],
            credentials,
            endpoint_url: None,
            max_pods: 110,
            prices: BTreeMap::new(),
            retry: RetrySettings::production(),
        };
        let text = format!("{config:?} {:#?}", config.credentials);
        assert!(!text.contains("wJalrXUtnFEMI"), "{text}");
        assert!(
            text.contains("AKIDEXAMPLE") && text.contains("<redacted>"),
            "{text}"
        );
    }

    #[test]
    fn half_a_key_pair_is_an_error() {
        assert_eq!(
            Credentials::from_keys(None, None).unwrap(),
            Credentials::DefaultChain
        );
        assert_eq!(
            Credentials::from_keys(Some(String::new()), None).unwrap(),
            Credentials::DefaultChain
        );
        assert_eq!(
            Credentials::from_keys(Some("a".into()), None)
                .unwrap_err()
                .field,
            "aws-secret-key"
        );
        assert_eq!(
            Credentials::from_keys(None, Some("b".into()))
                .unwrap_err()
                .field,
            "aws-access-key"
        );
    }
}
