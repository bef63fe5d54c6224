//! [`Labels`]: a small string-to-string map for labels and node selectors.
//!
//! Why not `BTreeMap<String, String>`: a snapshot holds one label map and one node
//! selector per pod, and a `BTreeMap` with a single entry allocates a whole B-tree
//! leaf (about 540 bytes). At 50,000 pods that was about 45 MB of the snapshot. Most
//! maps hold a handful of entries, so a sorted vector of boxed strings (32 bytes an
//! entry plus the text) is both smaller and faster to search.
//!
//! Iteration is in key order, as with a `BTreeMap`, so equality, ordering and hashing
//! (which equivalence classes and fit signatures rely on) do not depend on insertion
//! order.

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// Labels of a node or pod, or the pairs of a node selector: unique keys, kept sorted.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Vec<(Box<str>, Box<str>)>);

impl Labels {
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    /// Sets `key` to `value`; returns the previous value.
    pub fn insert(
        &mut self,
        key: impl Into<Box<str>>,
        value: impl Into<Box<str>>,
    ) -> Option<Box<str>> {
        let key = key.into();
        let value = value.into();
        match self.position(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Box<str>> {
        self.position(key).ok().map(|i| self.0.remove(i).1)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).ok().map(|i| &*self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// Every pair of `other` is present here with the same value (a node selector
    /// matching a node's labels).
    pub fn contains_all(&self, other: &Labels) -> bool {
        other.iter().all(|(k, v)| self.get(k) == Some(v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Pairs in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.0.iter())
    }

    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + Clone {
        self.0.iter().map(|(k, _)| &**k)
    }
}

/// Pairs of a [`Labels`] in key order.
#[derive(Clone)]
pub struct Iter<'a>(std::slice::Iter<'a, (Box<str>, Box<str>)>);

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (&**k, &**v))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for Labels {
    type Item = (Box<str>, Box<str>);
    type IntoIter = std::vec::IntoIter<(Box<str>, Box<str>)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<Box<str>>, V: Into<Box<str>>> FromIterator<(K, V)> for Labels {
    /// Later pairs win over earlier ones with the same key, as with a map.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut pairs: Vec<(Box<str>, Box<str>)> = iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        // Stable sort keeps insertion order among equal keys; keep the last of each run.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Box<str>, Box<str>)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match out.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => out.push(pair),
            }
        }
        out.shrink_to_fit();
        Self(out)
    }
}

impl<K: Into<Box<str>>, V: Into<Box<str>>> Extend<(K, V)> for Labels {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        // Already sorted and unique.
        Self(
            map.into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                .collect(),
        )
    }
}

impl<const N: usize> From<[(&str, &str); N]> for Labels {
    fn from(pairs: [(&str, &str); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LabelsVisitor;
        impl<'de> Visitor<'de> for LabelsVisitor {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Labels, A::Error> {
                let mut pairs = Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
                while let Some(pair) = access.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(pairs.into_iter().collect())
            }
        }
        deserializer.deserialize_map(LabelsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn behaves_like_a_sorted_map() {
        let mut l = Labels::new();
        assert_eq!(l.insert("b", "1"), None);
        assert_eq!(l.insert("a", "2"), None);
        assert_eq!(l.insert("b", "3").as_deref(), Some("1"));
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("a", "2"), ("b", "3")]);
        assert_eq!(l.get("b"), Some("3"));
        assert!(l.contains_key("a") && !l.contains_key("c"));
        assert_eq!(l.remove("a").as_deref(), Some("2"));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn later_duplicates_win_when_collecting() {
        let l: Labels = [("k", "first"), ("a", "x"), ("k", "second")].into();
        assert_eq!(l.get("k"), Some("second"));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn contains_all_is_selector_matching() {
        let node: Labels = [("pool", "gpu"), ("zone", "a")].into();
        assert!(node.contains_all(&[("pool", "gpu")].into()));
        assert!(node.contains_all(&Labels::new()));
        assert!(!node.contains_all(&[("pool", "cpu")].into()));
        assert!(!node.contains_all(&[("team", "x")].into()));
    }

    #[test]
    fn serializes_as_a_map_in_key_order() {
        let l: Labels = [("b", "2"), ("a", "1")].into();
        assert_eq!(serde_json::to_string(&l).unwrap(), r#"{"a":"1","b":"2"}"#);
        let back: Labels = serde_json::from_str(r#"{"b":"2","a":"1"}"#).unwrap();
        assert_eq!(back, l);
        let err = serde_json::from_str::<Labels>(r#"{"a":1}"#).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
    }

    proptest! {
        /// Same answers as the `BTreeMap` it replaces, whatever the insertion order.
        #[test]
        fn agrees_with_btreemap(ops in proptest::collection::vec(("[a-d]{1,2}", "[x-z]{0,2}", any::<bool>()), 0..40)) {
            let mut labels = Labels::new();
            let mut map = BTreeMap::new();
            for (k, v, remove) in &ops {
                if *remove {
                    prop_assert_eq!(labels.remove(k).map(String::from), map.remove(k));
                } else {
                    prop_assert_eq!(labels.insert(k.as_str(), v.as_str()).map(String::from), map.insert(k.clone(), v.clone()));
                }
            }
            let expected: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            prop_assert_eq!(labels.iter().collect::<Vec<_>>(), expected);
            prop_assert_eq!(&Labels::from(map.clone()), &labels);
            prop_assert_eq!(&map.into_iter().collect::<Labels>(), &labels);
        }
    }
}
