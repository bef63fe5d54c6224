//! Scheduling constraints as the Kubernetes API defines them: taints and tolerations,
//! node selectors and required node affinity, label selectors and required pod
//! anti-affinity. Only the matching rules live here; the planner's predicates combine
//! them.

use serde::{Deserialize, Serialize};
use std::fmt;

pub use crate::labels::Labels;

/// What a taint does to pods that do not tolerate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    /// Parses the API's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "NoSchedule" => Some(Self::NoSchedule),
            "PreferNoSchedule" => Some(Self::PreferNoSchedule),
            "NoExecute" => Some(Self::NoExecute),
            _ => None,
        }
    }

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSchedule => "NoSchedule",
            Self::PreferNoSchedule => "PreferNoSchedule",
            Self::NoExecute => "NoExecute",
        }
    }

    /// Whether the scheduler refuses untolerating pods (PreferNoSchedule only scores).
    pub fn blocks_scheduling(self) -> bool {
        !matches!(self, Self::PreferNoSchedule)
    }
}

/// A node taint. `value` may be empty (taints without a value are legal).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

/// A taint written as text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaintParseError {
    pub text: String,
}

impl fmt::Display for TaintParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid taint {:?}: expected key=value:Effect or key:Effect with Effect one of NoSchedule, PreferNoSchedule, NoExecute",
            self.text
        )
    }
}

impl std::error::Error for TaintParseError {}

impl Taint {
    /// A taint with a value.
    pub fn new(key: impl Into<String>, value: impl Into<String>, effect: TaintEffect) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            effect,
        }
    }

    /// Parses `key=value:Effect` or `key:Effect` (kubectl's syntax).
    pub fn parse(text: &str) -> Result<Self, TaintParseError> {
        let err = || TaintParseError {
            text: text.to_owned(),
        };
        let (kv, effect) = text.rsplit_once(':').ok_or_else(err)?;
        let effect = TaintEffect::parse(effect.trim()).ok_or_else(err)?;
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        if key.trim().is_empty() {
            return Err(err());
        }
        Ok(Self::new(key.trim(), value.trim(), effect))
    }
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.key, self.effect.as_str())
        } else {
            write!(f, "{}={}:{}", self.key, self.value, self.effect.as_str())
        }
    }
}

/// How a toleration compares values.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub enum TolerationOperator {
    #[default]
    Equal,
    Exists,
}

/// A pod toleration. An empty `key` with `Exists` tolerates everything; `effect: None`
/// matches every effect.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Toleration {
    pub key: String,
    pub operator: TolerationOperator,
    pub value: String,
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Whether this toleration tolerates `taint` (the API's `ToleratesTaint`).
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if let Some(effect) = self.effect {
            if effect != taint.effect {
                return false;
            }
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => true,
            TolerationOperator::Equal => self.value == taint.value,
        }
    }
}

/// Operators of node selector requirements (required node affinity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

/// One requirement on a node's labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeSelectorRequirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

impl NodeSelectorRequirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::Gt | Operator::Lt => {
                let (Some(v), Some(bound)) = (value, self.values.first()) else {
                    return false;
                };
                let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
                    return false;
                };
                if self.operator == Operator::Gt {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

/// Requirements that must all hold (a `nodeSelectorTerm`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct NodeSelectorTerm {
    pub match_expressions: Vec<NodeSelectorRequirement>,
}

/// Required node affinity: at least one term must match. An empty list of terms
/// matches nothing, as in the API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct NodeAffinity {
    pub terms: Vec<NodeSelectorTerm>,
}

impl NodeAffinity {
    /// Whether a node with `labels` satisfies the affinity.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.terms
            .iter()
            .any(|t| t.match_expressions.iter().all(|r| r.matches(labels)))
    }
}

/// Operators of label selectors (`matchExpressions` of pods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    pub values: Vec<String>,
}

/// A label selector; empty matches everything.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<SelectorRequirement>,
}

impl LabelSelector {
    /// Whether `labels` are selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        labels.contains_all(&self.match_labels)
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    SelectorOperator::In => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
                    SelectorOperator::NotIn => {
                        value.is_none_or(|v| !r.values.iter().any(|x| x == v))
                    }
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// A required pod anti-affinity term. Only `topologyKey: kubernetes.io/hostname` is
/// simulated exactly; other topology keys are approximated per node (documented in
/// ARCHITECTURE.md).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodAntiAffinityTerm {
    pub selector: LabelSelector,
    /// Namespaces the selector applies to; empty means the pod's own namespace.
    pub namespaces: Vec<String>,
    pub topology_key: String,
}

impl PodAntiAffinityTerm {
    /// Whether a pod in `namespace` with `labels` is matched by this term of a pod in
    /// `own_namespace`.
    pub fn selects(&self, own_namespace: &str, namespace: &str, labels: &Labels) -> bool {
        let ns_ok = if self.namespaces.is_empty() {
            namespace == own_namespace
        } else {
            self.namespaces.iter().any(|n| n == namespace)
        };
        ns_ok && self.selector.matches(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn taints_parse_with_and_without_value() {
        assert_eq!(
            Taint::parse("dedicated=gpu:NoSchedule").unwrap(),
            Taint::new("dedicated", "gpu", TaintEffect::NoSchedule)
        );
        assert_eq!(
            Taint::parse("spot:PreferNoSchedule").unwrap(),
            Taint::new("spot", "", TaintEffect::PreferNoSchedule)
        );
        assert!(Taint::parse("nokind").is_err());
        assert!(Taint::parse("a=b:Sometimes")
            .unwrap_err()
            .to_string()
            .contains("a=b:Sometimes"));
    }

    #[test]
    fn tolerations_follow_the_api_rules() {
        let taint = Taint::new("dedicated", "gpu", TaintEffect::NoSchedule);
        let equal = Toleration {
            key: "dedicated".into(),
            operator: TolerationOperator::Equal,
            value: "gpu".into(),
            effect: Some(TaintEffect::NoSchedule),
        };
        assert!(equal.tolerates(&taint));
        let wrong_value = Toleration {
            value: "cpu".into(),
            ..equal.clone()
        };
        assert!(!wrong_value.tolerates(&taint));
        let wrong_effect = Toleration {
            effect: Some(TaintEffect::NoExecute),
            ..equal.clone()
        };
        assert!(!wrong_effect.tolerates(&taint));
        let exists_any = Toleration {
            key: String::new(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: None,
        };
        assert!(exists_any.tolerates(&taint));
        let exists_key = Toleration {
            key: "dedicated".into(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: None,
        };
        assert!(exists_key.tolerates(&taint));
        let valueless = Taint::new("spot", "", TaintEffect::NoSchedule);
        let equal_empty = Toleration {
            key: "spot".into(),
            operator: TolerationOperator::Equal,
            value: String::new(),
            effect: None,
        };
        assert!(equal_empty.tolerates(&valueless));
    }

    #[test]
    fn node_affinity_operators() {
        let node = labels(&[("zone", "a"), ("cores", "16")]);
        let req = |key: &str, operator, values: &[&str]| NodeSelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|s| s.to_string()).collect(),
        };
        assert!(req("zone", Operator::In, &["a", "b"]).matches(&node));
        assert!(!req("zone", Operator::NotIn, &["a"]).matches(&node));
        assert!(req("missing", Operator::NotIn, &["a"]).matches(&node));
        assert!(req("zone", Operator::Exists, &[]).matches(&node));
        assert!(req("gpu", Operator::DoesNotExist, &[]).matches(&node));
        assert!(req("cores", Operator::Gt, &["8"]).matches(&node));
        assert!(!req("cores", Operator::Lt, &["8"]).matches(&node));
        assert!(!req("zone", Operator::Gt, &["8"]).matches(&node));
        let affinity = NodeAffinity {
            terms: vec![
                NodeSelectorTerm {
                    match_expressions: vec![req("zone", Operator::In, &["b"])],
                },
                NodeSelectorTerm {
                    match_expressions: vec![req("cores", Operator::Gt, &["8"])],
                },
            ],
        };
        assert!(affinity.matches(&node));
        assert!(!NodeAffinity::default().matches(&node));
    }

    #[test]
    fn label_selectors() {
        let pod = labels(&[("app", "trainer")]);
        let sel = LabelSelector {
            match_labels: labels(&[("app", "trainer")]),
            match_expressions: vec![],
        };
        assert!(sel.matches(&pod));
        assert!(LabelSelector::default().matches(&pod));
        let not = LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![SelectorRequirement {
                key: "app".into(),
                operator: SelectorOperator::NotIn,
                values: vec!["trainer".into()],
            }],
        };
        assert!(!not.matches(&pod));
    }
}
