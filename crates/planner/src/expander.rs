//! Expanders: how to choose among the scale-up options (one per group). A chain such
//! as `priority,least-waste` applies each expander as a filter keeping its best
//! options; what remains after the last is broken by group name, so the choice is
//! deterministic.

use crate::SettingsError;
use model::NodeGroupId;
use regex::Regex;
use std::collections::BTreeMap;

/// One candidate scale-up, as the expanders see it.
#[derive(Debug, Clone)]
pub(crate) struct OptionSummary {
    pub group: NodeGroupId,
    pub new_nodes: u32,
    pub pods: u32,
    /// Unused fraction of cpu plus unused fraction of memory over the new nodes.
    pub waste: f64,
    /// USD per hour of the new nodes, if the group's price is known.
    pub price_per_hour: Option<f64>,
    pub region_rank: u32,
}

#[derive(Debug, Clone)]
enum Expander {
    LeastWaste,
    MostPods,
    Priority,
    Price,
    Random,
}

/// A parsed expander chain.
#[derive(Debug, Clone)]
pub struct ExpanderChain {
    steps: Vec<Expander>,
    /// Priorities from the settings; a table from the cluster's ConfigMap wins.
    configured_priorities: Option<Vec<(i32, Vec<Regex>)>>,
    rng_state: u64,
}

pub(crate) type CompiledPriorities = Vec<(i32, Vec<Regex>)>;

/// Compiles a priority table (priority → regexes over group names).
pub(crate) fn compile_priorities(
    table: &BTreeMap<i32, Vec<String>>,
) -> Result<CompiledPriorities, String> {
    let mut out = Vec::new();
    for (priority, patterns) in table.iter().rev() {
        let mut regexes = Vec::new();
        for p in patterns {
            // CA matches the whole name.
            let anchored = format!("^(?:{p})$");
            regexes.push(
                Regex::new(&anchored)
                    .map_err(|e| format!("priority {priority}: bad regex {p:?}: {e}"))?,
            );
        }
        out.push((*priority, regexes));
    }
    Ok(out)
}

impl ExpanderChain {
    /// Parses `least-waste`, `most-pods`, `priority`, `price`, `random` and
    /// comma-separated chains of them.
    pub fn parse(
        text: &str,
        priorities: Option<&BTreeMap<i32, Vec<String>>>,
        seed: u64,
    ) -> Result<Self, SettingsError> {
        let mut steps = Vec::new();
        for name in text.split(',').map(str::trim) {
            steps.push(match name {
                "least-waste" => Expander::LeastWaste,
                "most-pods" => Expander::MostPods,
                "priority" => Expander::Priority,
                "price" => Expander::Price,
                "random" => Expander::Random,
                other => {
                    return Err(SettingsError {
                        field: "expander",
                        message: format!("unknown expander {other:?} (use least-waste, most-pods, priority, price, random, or a comma-separated chain)"),
                    })
                }
            });
        }
        let configured_priorities =
            priorities
                .map(compile_priorities)
                .transpose()
                .map_err(|message| SettingsError {
                    field: "expander-priorities",
                    message,
                })?;
        Ok(Self {
            steps,
            configured_priorities,
            rng_state: seed ^ 0x9E37_79B9_7F4A_7C15,
        })
    }

    /// Whether the chain uses the priority expander.
    pub fn uses_priority(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Expander::Priority))
    }

    /// The priority of a group under the table in force (`None`: not a candidate).
    pub(crate) fn priority_of(
        &self,
        group: &NodeGroupId,
        cluster_table: Option<&CompiledPriorities>,
    ) -> Option<i32> {
        let table = cluster_table.or(self.configured_priorities.as_ref())?;
        table
            .iter()
            .find(|(_, regexes)| regexes.iter().any(|r| r.is_match(group.as_str())))
            .map(|(p, _)| *p)
    }

    /// Picks the best option's index. `options` must not be empty.
    pub(crate) fn choose(
        &mut self,
        options: &[OptionSummary],
        cluster_table: Option<&CompiledPriorities>,
    ) -> usize {
        let mut alive: Vec<usize> = (0..options.len()).collect();
        // The primary region first: overflow to other regions only when it cannot help.
        keep_best(&mut alive, |i| -(options[i].region_rank as f64));
        for step in self.steps.clone() {
            if alive.len() <= 1 {
                break;
            }
            match step {
                Expander::LeastWaste => keep_best(&mut alive, |i| -options[i].waste),
                Expander::MostPods => keep_best(&mut alive, |i| f64::from(options[i].pods)),
                Expander::Price => keep_best(&mut alive, |i| {
                    let o = &options[i];
                    o.price_per_hour.map_or(f64::NEG_INFINITY, |p| {
                        -(p * f64::from(o.new_nodes)) / f64::from(o.pods.max(1))
                    })
                }),
                Expander::Priority => {
                    if cluster_table.is_some() || self.configured_priorities.is_some() {
                        keep_best(&mut alive, |i| {
                            self.priority_of(&options[i].group, cluster_table)
                                .map_or(f64::NEG_INFINITY, f64::from)
                        });
                    }
                }
                Expander::Random => {
                    let pick = (self.next_random() % alive.len() as u64) as usize;
                    alive = vec![alive[pick]];
                }
            }
        }
        *alive
            .iter()
            .min_by(|&&a, &&b| options[a].group.cmp(&options[b].group))
            .expect("options not empty")
    }

    /// SplitMix64: deterministic for a seed, no dependency.
    fn next_random(&mut self) -> u64 {
        self.rng_state = self.rng_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Keeps the indices with the highest score (within a small epsilon).
fn keep_best(alive: &mut Vec<usize>, score: impl Fn(usize) -> f64) {
    let best = alive
        .iter()
        .map(|&i| score(i))
        .fold(f64::NEG_INFINITY, f64::max);
    alive.retain(|&i| {
        let s = score(i);
        s == best || (s - best).abs() <= 1e-9
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(group: &str, nodes: u32, pods: u32, waste: f64, price: Option<f64>) -> OptionSummary {
        OptionSummary {
            group: NodeGroupId::new(group),
            new_nodes: nodes,
            pods,
            waste,
            price_per_hour: price,
            region_rank: 0,
        }
    }

    #[test]
    fn least_waste_most_pods_and_price() {
        let options = vec![
            opt("a", 2, 10, 0.5, Some(1.0)),
            opt("b", 1, 12, 0.1, Some(3.0)),
            opt("c", 4, 10, 0.3, Some(0.2)),
        ];
        assert_eq!(
            ExpanderChain::parse("least-waste", None, 0)
                .unwrap()
                .choose(&options, None),
            1
        );
        assert_eq!(
            ExpanderChain::parse("most-pods", None, 0)
                .unwrap()
                .choose(&options, None),
            1
        );
        // price per pod: a 0.2, b 0.25, c 0.08
        assert_eq!(
            ExpanderChain::parse("price", None, 0)
                .unwrap()
                .choose(&options, None),
            2
        );
    }

    #[test]
    fn priority_chain_falls_through_and_excludes_unmatched() {
        let table: BTreeMap<i32, Vec<String>> = [
            (10, vec![".*p2.*".to_owned()]),
            (50, vec![".*p3.*".to_owned()]),
        ]
        .into();
        let mut chain = ExpanderChain::parse("priority,least-waste", Some(&table), 0).unwrap();
        let options = vec![
            opt("gpu-p2", 1, 1, 0.0, None),
            opt("gpu-p3-a", 1, 1, 0.5, None),
            opt("gpu-p3-b", 1, 1, 0.2, None),
            opt("cpu", 1, 1, 0.0, None),
        ];
        assert_eq!(chain.choose(&options, None), 2);
        assert_eq!(chain.priority_of(&NodeGroupId::new("cpu"), None), None);
    }

    #[test]
    fn primary_region_wins_over_waste() {
        let mut a = opt("a", 1, 1, 0.9, None);
        a.region_rank = 0;
        let mut b = opt("b", 1, 1, 0.0, None);
        b.region_rank = 1;
        assert_eq!(
            ExpanderChain::parse("least-waste", None, 0)
                .unwrap()
                .choose(&[b, a], None),
            1
        );
    }

    #[test]
    fn random_is_seeded() {
        let options: Vec<_> = (0..10)
            .map(|i| opt(&format!("g{i}"), 1, 1, 0.0, None))
            .collect();
        let picks = |seed| {
            let mut c = ExpanderChain::parse("random", None, seed).unwrap();
            (0..20)
                .map(|_| c.choose(&options, None))
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(7), picks(7));
        assert_ne!(picks(7), picks(8));
    }

    #[test]
    fn unknown_expander_names_the_field() {
        let e = ExpanderChain::parse("least-waste,cheapest", None, 0).unwrap_err();
        assert_eq!(e.field, "expander");
        assert!(e.message.contains("cheapest"));
    }
}
