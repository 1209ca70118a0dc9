//! Scale-down by schedule: while a NodePool schedule's `limits` are below what the pool holds,
//! nodes are removed until it fits them: cheapest to disrupt first, each only if it brings an
//! exceeded resource down, within the pool's budgets for reason `Scheduled`. (The pool's own
//! `limits` only stop launches, as Karpenter's do; a window that lowers them asks for less.)
//!
//! Pure: the limits, what the pool holds (claims being deleted are on their way out and do not
//! count), and the candidates with what each counts.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::candidates::{Blocker, Candidate};
use crate::scheduling::{quantity::QuantityError, resources::Resources, solver::NODES};

/// How far the pool is above `limits`: each limited resource it holds more of, by how much.
/// Empty when it fits.
pub fn excess(limits: &BTreeMap<String, Quantity>, held: &Resources) -> Result<Resources, QuantityError> {
    Ok(Resources::from_quantities(limits)?
        .iter()
        .filter_map(|(resource, limit)| {
            let over = held.get(resource).saturating_sub(limit);
            (over > 0).then(|| (resource.to_owned(), over))
        })
        .collect())
}

/// The candidates to remove, in the order given (cheapest to disrupt first), at most `allowed`:
/// each unblocked one that counts some of a resource still in excess, until none is. `counts`
/// is what a candidate's node counts against the limits, `nodes` included.
pub fn choose(
    mut excess: Resources,
    candidates: Vec<(Candidate, Option<Blocker>)>,
    counts: impl Fn(&Candidate) -> Resources,
    allowed: usize,
) -> Vec<Candidate> {
    let mut chosen = Vec::new();
    for (candidate, blocker) in candidates {
        if chosen.len() >= allowed || excess.iter().all(|(_, over)| over <= 0) {
            break;
        }
        if blocker.is_some() {
            continue;
        }
        let counted = counts(&candidate);
        if !excess.iter().any(|(resource, over)| over > 0 && counted.get(resource) > 0) {
            continue;
        }
        // Resources not in excess go below zero here, which counts as fitting.
        excess.subtract(&counted);
        chosen.push(candidate);
    }
    chosen
}

/// What a node counts against limits: its claim's usage and one node.
pub fn node_counts(mut usage: Resources) -> Resources {
    usage.set(NODES, 1);
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(name: &str, pods: usize) -> Candidate {
        Candidate {
            claim: name.into(),
            node: name.into(),
            pool: "general".into(),
            instance_type: "m5.large".into(),
            capacity_type: "on-demand".into(),
            price: Some(0.1),
            cost: pods as f64,
            pods,
        }
    }

    fn resources(pairs: &[(&str, i64)]) -> Resources {
        pairs.iter().map(|(r, a)| ((*r).to_owned(), *a)).collect()
    }

    fn limits(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        pairs.iter().map(|(r, q)| ((*r).to_owned(), Quantity((*q).to_owned()))).collect()
    }

    #[test]
    fn excess_names_only_the_resources_above_their_limit() {
        let held = resources(&[("cpu", 8000), ("memory", 32 << 30), (NODES, 4)]);
        assert_eq!(excess(&limits(&[("cpu", "0")]), &held).unwrap(), resources(&[("cpu", 8000)]));
        assert_eq!(excess(&limits(&[("cpu", "16"), ("nodes", "3")]), &held).unwrap(), resources(&[(NODES, 1)]));
        assert_eq!(excess(&limits(&[("memory", "64Gi")]), &held).unwrap(), Resources::new());
        assert!(excess(&limits(&[("cpu", "lots")]), &held).is_err());
    }

    #[test]
    fn scale_to_zero_takes_every_unblocked_node_the_budget_allows() {
        let nodes = vec![
            (candidate("a", 0), None),
            (candidate("b", 1), Some(Blocker::NodeDoNotDisrupt)),
            (candidate("c", 2), None),
            (candidate("d", 3), None),
        ];
        let counts = |_: &Candidate| node_counts(resources(&[("cpu", 2000)]));
        let over = resources(&[("cpu", 8000)]);
        let names = |chosen: Vec<Candidate>| chosen.into_iter().map(|c| c.claim).collect::<Vec<_>>();
        assert_eq!(names(choose(over.clone(), nodes.clone(), counts, usize::MAX)), ["a", "c", "d"]);
        assert_eq!(names(choose(over, nodes, counts, 2)), ["a", "c"], "the budget stops it");
    }

    #[test]
    fn removal_stops_once_the_pool_fits() {
        let nodes = vec![(candidate("small", 0), None), (candidate("big", 1), None), (candidate("other", 2), None)];
        let counts = |c: &Candidate| node_counts(resources(&[("cpu", if c.claim == "big" { 8000 } else { 2000 })]));
        // 3 CPUs over: the small node (2) leaves 1 over, the big one covers the rest.
        let chosen = choose(resources(&[("cpu", 3000)]), nodes.clone(), counts, usize::MAX);
        assert_eq!(chosen.iter().map(|c| c.claim.as_str()).collect::<Vec<_>>(), ["small", "big"]);
        // Only memory over, and these nodes count none: nothing to gain by removing them.
        assert!(choose(resources(&[("memory", 1)]), nodes, counts, usize::MAX).is_empty());
    }
}
