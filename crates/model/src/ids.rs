//! Newtypes for the identifiers the autoscaler juggles, so a node name can never be
//! passed where an instance id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// Wraps a string as this id.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

string_id!(
    /// A node group: an EC2 Auto Scaling Group name (or a simulator group name).
    NodeGroupId
);
string_id!(
    /// An EC2 instance id such as `i-0abc…`.
    InstanceId
);
string_id!(
    /// A Kubernetes Node's `metadata.name`.
    NodeName
);
string_id!(
    /// An AWS region such as `us-west-2`.
    Region
);
string_id!(
    /// An availability zone such as `us-west-2a`.
    Zone
);
string_id!(
    /// An EC2 instance type such as `m5.4xlarge`.
    InstanceTypeName
);
string_id!(
    /// The identity of a gang: pods sharing it must all run together.
    GangId
);
string_id!(
    /// A pod's `metadata.uid`: tells a pod from a later one of the same name (a
    /// StatefulSet's replacement), so an eviction never hits the wrong one.
    PodUid
);

/// A pod's identity: `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    /// Builds a key from a namespace and a name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Parses `namespace/name`; a bare `name` means the `default` namespace.
    pub fn parse(text: &str) -> Self {
        match text.split_once('/') {
            Some((namespace, name)) => Self::new(namespace, name),
            None => Self::new("default", text),
        }
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
