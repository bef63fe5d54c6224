//! Resource vectors: cpu (millicores), memory and ephemeral storage (bytes), pod
//! slots, and any extended resource by name (`nvidia.com/gpu`, `vpc.amazonaws.com/pod-eni`).

use crate::quantity::{parse_quantity, QuantityError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The name of an extended resource (anything beyond cpu, memory, ephemeral-storage, pods).
pub type ResourceName = String;

/// The extended resource users mean by "GPU".
pub const NVIDIA_GPU: &str = "nvidia.com/gpu";

/// A vector of resource amounts. Missing extended resources are zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub ephemeral_storage_bytes: i64,
    pub pods: i64,
    /// Sorted by name, no zero entries.
    pub extended: Vec<(ResourceName, i64)>,
}

/// The first resource that did not fit, for explanations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Shortfall {
    pub resource: String,
    pub requested: i64,
    pub available: i64,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "insufficient {} (requested {}, available {})",
            self.resource, self.requested, self.available
        )
    }
}

impl Resources {
    /// Nothing at all.
    pub fn zero() -> Self {
        Self::default()
    }

    /// Cpu and memory only (a convenience for tests and templates).
    pub fn cpu_mem(cpu_millis: i64, memory_bytes: i64) -> Self {
        Self {
            cpu_millis,
            memory_bytes,
            ..Self::default()
        }
    }

    /// Builds a vector from `name -> quantity` text, as found in a pod spec or scenario.
    pub fn from_quantities<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, (String, QuantityError)> {
        let mut out = Self::default();
        for (name, text) in entries {
            let q = parse_quantity(text).map_err(|e| (name.to_owned(), e))?;
            match name {
                "cpu" => out.cpu_millis = out.cpu_millis.saturating_add(q.milli_value()),
                "memory" => out.memory_bytes = out.memory_bytes.saturating_add(q.value()),
                "ephemeral-storage" => {
                    out.ephemeral_storage_bytes =
                        out.ephemeral_storage_bytes.saturating_add(q.value())
                }
                "pods" => out.pods = out.pods.saturating_add(q.value()),
                other => out.add_extended(other, q.value()),
            }
        }
        Ok(out)
    }

    /// The amount of one extended resource.
    pub fn extended(&self, name: &str) -> i64 {
        self.extended
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// Adds `amount` of an extended resource.
    pub fn add_extended(&mut self, name: &str, amount: i64) {
        match self
            .extended
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
        {
            Ok(i) => {
                self.extended[i].1 = self.extended[i].1.saturating_add(amount);
                if self.extended[i].1 == 0 {
                    self.extended.remove(i);
                }
            }
            Err(i) if amount != 0 => self.extended.insert(i, (name.to_owned(), amount)),
            Err(_) => {}
        }
    }

    /// Sets an extended resource to exactly `amount`.
    pub fn set_extended(&mut self, name: &str, amount: i64) {
        let current = self.extended(name);
        self.add_extended(name, amount.saturating_sub(current));
    }

    /// GPUs (`nvidia.com/gpu`).
    pub fn gpus(&self) -> i64 {
        self.extended(NVIDIA_GPU)
    }

    /// Element-wise sum.
    pub fn add(&mut self, other: &Resources) {
        // Saturating: amounts come from the cluster, and no object may make the
        // arithmetic panic (or wrap into a fit).
        self.cpu_millis = self.cpu_millis.saturating_add(other.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_add(other.memory_bytes);
        self.ephemeral_storage_bytes = self
            .ephemeral_storage_bytes
            .saturating_add(other.ephemeral_storage_bytes);
        self.pods = self.pods.saturating_add(other.pods);
        for (name, v) in &other.extended {
            self.add_extended(name, *v);
        }
    }

    /// Element-wise difference (may go negative; callers check fit first).
    pub fn sub(&mut self, other: &Resources) {
        self.cpu_millis = self.cpu_millis.saturating_sub(other.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_sub(other.memory_bytes);
        self.ephemeral_storage_bytes = self
            .ephemeral_storage_bytes
            .saturating_sub(other.ephemeral_storage_bytes);
        self.pods = self.pods.saturating_sub(other.pods);
        for (name, v) in &other.extended {
            self.add_extended(name, v.saturating_neg());
        }
    }

    /// Element-wise maximum (for init containers vs. app containers).
    pub fn max_with(&mut self, other: &Resources) {
        self.cpu_millis = self.cpu_millis.max(other.cpu_millis);
        self.memory_bytes = self.memory_bytes.max(other.memory_bytes);
        self.ephemeral_storage_bytes = self
            .ephemeral_storage_bytes
            .max(other.ephemeral_storage_bytes);
        self.pods = self.pods.max(other.pods);
        for (name, v) in &other.extended {
            if *v > self.extended(name) {
                self.set_extended(name, *v);
            }
        }
    }

    /// `self` fits within `available`: every requested amount is covered. Returns the
    /// first shortfall otherwise (cpu, memory, ephemeral-storage, pods, then extended).
    pub fn fits_in(&self, available: &Resources) -> Result<(), Shortfall> {
        let check = |resource: &str, requested: i64, have: i64| {
            if requested > 0 && requested > have {
                Err(Shortfall {
                    resource: resource.to_owned(),
                    requested,
                    available: have,
                })
            } else {
                Ok(())
            }
        };
        check("cpu", self.cpu_millis, available.cpu_millis)?;
        check("memory", self.memory_bytes, available.memory_bytes)?;
        check(
            "ephemeral-storage",
            self.ephemeral_storage_bytes,
            available.ephemeral_storage_bytes,
        )?;
        check("pods", self.pods, available.pods)?;
        for (name, v) in &self.extended {
            check(name, *v, available.extended(name))?;
        }
        Ok(())
    }

    /// `self` fits within `allocatable - used`, without building the difference (the
    /// placement hot path calls this for every pod × node it tries).
    pub fn fits_in_remaining(
        &self,
        allocatable: &Resources,
        used: &Resources,
    ) -> Result<(), Shortfall> {
        let check = |resource: &str, requested: i64, alloc: i64, taken: i64| {
            let have = alloc.saturating_sub(taken);
            if requested > 0 && requested > have {
                Err(Shortfall {
                    resource: resource.to_owned(),
                    requested,
                    available: have,
                })
            } else {
                Ok(())
            }
        };
        check(
            "cpu",
            self.cpu_millis,
            allocatable.cpu_millis,
            used.cpu_millis,
        )?;
        check(
            "memory",
            self.memory_bytes,
            allocatable.memory_bytes,
            used.memory_bytes,
        )?;
        check(
            "ephemeral-storage",
            self.ephemeral_storage_bytes,
            allocatable.ephemeral_storage_bytes,
            used.ephemeral_storage_bytes,
        )?;
        check("pods", self.pods, allocatable.pods, used.pods)?;
        for (name, v) in &self.extended {
            check(name, *v, allocatable.extended(name), used.extended(name))?;
        }
        Ok(())
    }

    /// The largest fraction of `capacity` this vector uses over cpu, memory and
    /// extended resources (the "dominant share"). Resources the capacity lacks count as
    /// infinite demand only if requested.
    pub fn dominant_share(&self, capacity: &Resources) -> f64 {
        let ratio = |used: i64, cap: i64| {
            if used <= 0 {
                0.0
            } else if cap <= 0 {
                f64::INFINITY
            } else {
                used as f64 / cap as f64
            }
        };
        let mut share = ratio(self.cpu_millis, capacity.cpu_millis)
            .max(ratio(self.memory_bytes, capacity.memory_bytes));
        for (name, v) in &self.extended {
            share = share.max(ratio(*v, capacity.extended(name)));
        }
        share
    }

    /// True when every amount is zero or less.
    pub fn is_empty(&self) -> bool {
        self.cpu_millis <= 0
            && self.memory_bytes <= 0
            && self.ephemeral_storage_bytes <= 0
            && self.pods <= 0
            && self.extended.iter().all(|(_, v)| *v <= 0)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu={}m memory={}Mi",
            self.cpu_millis,
            self.memory_bytes >> 20
        )?;
        for (name, v) in &self.extended {
            write!(f, " {name}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_names_the_bad_field() {
        let r = Resources::from_quantities([
            ("cpu", "500m"),
            ("memory", "1Gi"),
            ("nvidia.com/gpu", "2"),
        ])
        .unwrap();
        assert_eq!(r.cpu_millis, 500);
        assert_eq!(r.memory_bytes, 1 << 30);
        assert_eq!(r.gpus(), 2);
        let (field, _) = Resources::from_quantities([("memory", "lots")]).unwrap_err();
        assert_eq!(field, "memory");
    }

    #[test]
    fn fit_reports_the_first_shortfall() {
        let mut want = Resources::cpu_mem(2000, 1 << 30);
        want.add_extended(NVIDIA_GPU, 1);
        let have = Resources::cpu_mem(4000, 8 << 30);
        let short = want.fits_in(&have).unwrap_err();
        assert_eq!(short.resource, NVIDIA_GPU);
        let mut have_gpu = have.clone();
        have_gpu.add_extended(NVIDIA_GPU, 1);
        assert!(want.fits_in(&have_gpu).is_ok());
    }

    #[test]
    fn fits_in_remaining_matches_fits_in_the_difference() {
        let mut alloc = Resources::cpu_mem(4000, 8 << 30);
        alloc.add_extended(NVIDIA_GPU, 2);
        let mut used = Resources::cpu_mem(3000, 1 << 30);
        used.add_extended(NVIDIA_GPU, 1);
        let mut free = alloc.clone();
        free.sub(&used);
        for (cpu, gpus) in [(500, 1), (1500, 0), (500, 2)] {
            let mut want = Resources::cpu_mem(cpu, 1 << 20);
            want.add_extended(NVIDIA_GPU, gpus);
            assert_eq!(want.fits_in_remaining(&alloc, &used), want.fits_in(&free));
        }
    }

    #[test]
    fn extended_entries_stay_sorted_and_drop_zeros() {
        let mut r = Resources::zero();
        r.add_extended("z/x", 1);
        r.add_extended("a/b", 2);
        assert_eq!(
            r.extended,
            vec![("a/b".to_owned(), 2), ("z/x".to_owned(), 1)]
        );
        r.add_extended("a/b", -2);
        assert_eq!(r.extended, vec![("z/x".to_owned(), 1)]);
    }

    #[test]
    fn max_with_is_elementwise() {
        let mut a = Resources::cpu_mem(100, 10);
        a.max_with(&Resources::cpu_mem(50, 20));
        assert_eq!(a, Resources::cpu_mem(100, 20));
    }
}
