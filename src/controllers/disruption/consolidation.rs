//! Consolidation's decision: which underutilized nodes to remove, and whether their pods need a
//! cheaper node instead. Pure: each question is the solver run on the cluster without the nodes
//! in question (the caller builds that input), so what consolidation believes fits is exactly
//! what the provisioner would do with the same pods.
//!
//! Nodes whose pods all fit on the rest of the cluster are deleted; when they need one new node
//! and it costs less than they do together, they are replaced by it. Each pass asks, as Karpenter
//! does, about several nodes at once (the largest run of the cheapest-to-disrupt candidates that
//! one replacement or none can absorb, found by bisection) and about single nodes. Four
//! departures from Karpenter, for the nodes a scale-down leaves holding a few pods that keep
//! apart (spread or anti-affine by hostname): one node may be replaced by up to [`MAX_SPLIT`] new
//! nodes that cost less together (Karpenter keeps a node whose pods need two); where several
//! single nodes can each go on their own, they go in one decision (up to [`MAX_NODES`] of them)
//! when the cluster without all of them still fits their pods for less, on no more new nodes
//! than they would launch one by one, else as many of those that save the most as can
//! (Karpenter takes the first and asks again after its 15 s re-check: one decision every 17 s);
//! those are the single nodes that save the most, not the first that save anything in
//! disruption-cost order (Karpenter's order); and the multi-node decision and the single-node
//! ones go together on the same terms, else whichever saves more (Karpenter acts on the
//! multi-node one when there is one, however little it saves).

use std::{collections::HashSet, fmt};

use super::candidates::Candidate;
use crate::{
    apis::labels,
    scheduling::{
        requirements::Requirement,
        solver::{Input, Memo, NewNodeClaim, solve_without_repack},
    },
};

/// At most this many nodes go in a multi-node run (Karpenter's bound too), and at most this many
/// single nodes in a batch, so one decision's solver runs stay small; budgets bound it further.
pub const MAX_NODES: usize = 100;

/// A single node's pods may move to at most this many new nodes.
pub const MAX_SPLIT: usize = 10;

/// Spot-to-spot replacement needs at least this many cheaper spot types to choose from, and
/// launches with at most this many: the flexibility that keeps a replacement from being the next
/// interruption, without consolidating spot nodes down the price list one type at a time.
pub const MIN_SPOT_TYPES: usize = 15;

/// What to do with the candidates of a decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Their pods fit elsewhere.
    Delete,
    /// Their pods need these nodes, cheaper than they are together: one, or several when a
    /// single node's pods keep apart or several single-node decisions go together.
    Replace(Vec<NewNodeClaim>),
}

/// A consolidation decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub candidates: Vec<Candidate>,
    pub action: Action,
    /// Dollars per hour saved (the candidates' price less the replacement's cheapest offering).
    pub savings: f64,
    /// The existing nodes the candidates' pods are to move onto.
    pub destinations: Vec<String>,
}

impl Decision {
    /// How many new nodes it launches.
    pub fn launches(&self) -> usize {
        match &self.action {
            Action::Delete => 0,
            Action::Replace(replacements) => replacements.len(),
        }
    }

    /// `delete` or `replace`, for logs, Events and metrics.
    pub fn kind(&self) -> &'static str {
        match self.action {
            Action::Delete => "delete",
            Action::Replace(_) => "replace",
        }
    }
}

/// Why the candidates cannot be consolidated.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The catalog does not price a candidate's offering, so no saving can be shown.
    UnknownPrice,
    /// Some pods fit nowhere without them.
    PodsFitNowhere(String),
    /// Their pods need more new nodes than the decision may launch.
    NeedsSeveralNodes(usize),
    /// No instance type that fits their pods is cheaper.
    NoCheaperReplacement { price: f64 },
    /// Spot nodes are replaced by spot nodes only with the `SpotToSpotConsolidation` gate.
    SpotToSpotOff,
    /// Fewer cheaper spot types than [`MIN_SPOT_TYPES`].
    TooFewSpotTypes(usize),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownPrice => write!(f, "its offering's price is not known"),
            Self::PodsFitNowhere(reason) => write!(f, "its pods fit nowhere else: {reason}"),
            Self::NeedsSeveralNodes(n) => write!(f, "its pods would need {n} new nodes"),
            Self::NoCheaperReplacement { price } => {
                write!(f, "no node that fits its pods costs less than its ${price:.4}/h")
            }
            Self::SpotToSpotOff => {
                write!(f, "replacing a spot node with a spot node needs the SpotToSpotConsolidation feature gate")
            }
            Self::TooFewSpotTypes(n) => {
                write!(f, "only {n} cheaper spot instance types (spot-to-spot needs {MIN_SPOT_TYPES})")
            }
        }
    }
}

/// What a pass decided: at most one decision, and why each candidate it tried was refused.
#[derive(Debug, Default)]
pub struct Outcome {
    pub decision: Option<Decision>,
    pub refused: Vec<(String, Refusal)>,
}

/// Decides one consolidation over `candidates` (unblocked, within budgets, cheapest to disrupt
/// first). `without` builds the solver's input for the cluster without the named nodes.
pub fn consolidate(candidates: &[Candidate], spot_to_spot: bool, without: impl Fn(&HashSet<&str>) -> Input) -> Outcome {
    let candidates: Vec<&Candidate> = candidates.iter().filter(|c| c.pods > 0).collect();
    let mut outcome = Outcome::default();
    // Every question is about the same cluster and catalog.
    let mut memo = Memo::default();
    let multi = multi_node(&candidates, spot_to_spot, &without, &mut memo);
    let taken: HashSet<&str> = multi.iter().flat_map(|d| &d.candidates).map(|c| c.claim.as_str()).collect();
    // The single nodes that save the most, asked about dearest first: a node saves at most its
    // price, so once the batch is full and the next node costs no more than the batch's least
    // saving, no node after it can displace any (equal prices keep disruption-cost order). Asked
    // in disruption-cost order, the small nodes a scale-down leaves filled the batch with cents,
    // and the large ones that save dollars waited a round each.
    let mut dearest_first: Vec<&Candidate> =
        candidates.iter().copied().filter(|c| !taken.contains(c.claim.as_str())).collect();
    dearest_first.sort_by(|a, b| price_or_least(b).total_cmp(&price_or_least(a)));
    let mut singles: Vec<Decision> = Vec::new();
    for candidate in dearest_first {
        let least_kept = singles.last().filter(|_| singles.len() == MAX_NODES).map(|d| d.savings);
        if least_kept.is_some_and(|least| price_or_least(candidate) <= least) {
            break;
        }
        match evaluate(std::slice::from_ref(&candidate), MAX_SPLIT, spot_to_spot, &without, &mut memo) {
            Ok(decision) => {
                // Kept by saving, most first; among equals, the one asked about first.
                let at = singles.partition_point(|d| d.savings >= decision.savings);
                singles.insert(at, decision);
                singles.truncate(MAX_NODES);
            }
            // Told only while nothing is decided: a pass that decides leaves the telling to the
            // passes after it, when its own candidates are gone.
            Err(refusal) if multi.is_none() && singles.is_empty() => {
                outcome.refused.push((candidate.claim.clone(), refusal))
            }
            Err(_) => {}
        }
    }
    // The single-node decisions together, then with the multi-node one: a scale-down often offers
    // both, a few cheap nodes merged for cents and large nodes split for dollars, and taken in
    // turn they cost a round each (the 15 s re-check and the command), together one.
    let singles = together(singles, spot_to_spot, &without, &mut memo);
    outcome.decision = together(multi.into_iter().chain(singles).collect(), spot_to_spot, &without, &mut memo);
    outcome
}

/// A candidate's price for ordering; one the catalog does not price goes last (it is refused).
fn price_or_least(candidate: &Candidate) -> f64 {
    candidate.price.unwrap_or(f64::NEG_INFINITY)
}

/// The most of the decisions that save the most that go as one: the cluster without all their
/// candidates fits their pods on no more new nodes than they launch apart, saving at least what
/// the best of them does alone. All of them when they can, else the longest run of the best
/// found by bisection (a run that cannot go rarely becomes one that can by growing); at worst
/// the best alone.
fn together(
    mut parts: Vec<Decision>,
    spot_to_spot: bool,
    without: &impl Fn(&HashSet<&str>) -> Input,
    memo: &mut Memo,
) -> Option<Decision> {
    // Saving most first; among equals, the order given.
    parts.sort_by(|a, b| b.savings.total_cmp(&a.savings));
    let best = parts.first()?.savings;
    let joined = |run: &[Decision], memo: &mut Memo| {
        let candidates: Vec<&Candidate> = run.iter().flat_map(|d| &d.candidates).collect();
        let launched: usize = run.iter().map(|d| d.launches()).sum();
        evaluate(&candidates, launched.max(1), spot_to_spot, without, memo).ok().filter(|d| d.savings >= best)
    };
    longest_run(parts.len(), |n| joined(&parts[..n], memo)).or_else(|| parts.into_iter().next())
}

/// The longest run, of two to `all`, that `ask` (given its length) says yes to: all of them when
/// it does, else found by bisection.
fn longest_run<T>(all: usize, mut ask: impl FnMut(usize) -> Option<T>) -> Option<T> {
    if all < 2 {
        return None;
    }
    if let Some(answer) = ask(all) {
        return Some(answer);
    }
    let (mut low, mut high) = (2, all - 1);
    let mut longest = None;
    while low <= high {
        let middle = (low + high) / 2;
        match ask(middle) {
            Some(answer) => {
                longest = Some(answer);
                low = middle + 1;
            }
            None => high = middle - 1,
        }
    }
    longest
}

/// The largest run of the first candidates (two or more) that can go together: all of them when
/// they can, else found by bisection. Bisection assumes that a run that cannot go means no
/// longer one can, which holds for deleting but not for replacing: two nodes may need a
/// replacement as dear as they are where three fit one that is cheaper. Asking about the whole
/// run first catches the case that matters most after a scale-down, at the cost of one question.
fn multi_node(
    candidates: &[&Candidate],
    spot_to_spot: bool,
    without: &impl Fn(&HashSet<&str>) -> Input,
    memo: &mut Memo,
) -> Option<Decision> {
    let all = candidates.len().min(MAX_NODES);
    longest_run(all, |n| evaluate(&candidates[..n], 1, spot_to_spot, without, memo).ok())
}

/// Whether these candidates can go together, launching at most `most_new` nodes, and how.
pub fn evaluate(
    candidates: &[&Candidate],
    most_new: usize,
    spot_to_spot: bool,
    without: &impl Fn(&HashSet<&str>) -> Input,
    memo: &mut Memo,
) -> Result<Decision, Refusal> {
    let price: f64 = candidates.iter().map(|c| c.price).sum::<Option<f64>>().ok_or(Refusal::UnknownPrice)?;
    let nodes: HashSet<&str> = candidates.iter().map(|c| c.node.as_str()).collect();
    let input = without(&nodes);
    let plan = solve_without_repack(&input, memo);
    if let Some((pod, reason)) = plan.unschedulable.first() {
        return Err(Refusal::PodsFitNowhere(format!("{pod}: {reason}")));
    }
    let owned = candidates.iter().map(|c| (*c).clone()).collect();
    let destinations = plan.receiving_nodes();
    let new_claims = plan.new_claims;
    match new_claims.len() {
        0 => return Ok(Decision { candidates: owned, action: Action::Delete, savings: price, destinations }),
        n if n > most_new => return Err(Refusal::NeedsSeveralNodes(n)),
        _ => {}
    }
    // Each replacement may cost up to its share of what the candidates do (in proportion to the
    // cheapest it can be), so whichever offerings launch, together they cost less.
    let offered: Vec<Vec<(String, f64)>> = new_claims.iter().map(|claim| offered(claim, &input, memo)).collect();
    let cheapest = |offered: &[(String, f64)]| offered.first().map_or(f64::INFINITY, |(_, price)| *price);
    let least: f64 = offered.iter().map(|o| cheapest(o)).sum();
    if least >= price {
        return Err(Refusal::NoCheaperReplacement { price });
    }
    let spot = candidates.iter().any(|c| c.capacity_type == labels::CAPACITY_TYPE_SPOT);
    // A node split, or several single-node decisions together, are single-node replacements still.
    let single_node = candidates.len() == 1 || most_new > 1;
    let count = new_claims.len();
    let replacements = new_claims
        .into_iter()
        .zip(offered)
        .map(|(claim, offered)| {
            let share = if least > 0.0 { cheapest(&offered) / least } else { 1.0 / count as f64 };
            // Shares in whole micro-dollars: equal candidates' shares are their own prices, which
            // rounding must not lift above themselves and so admit their own type.
            let below = if count == 1 { price } else { (price * share * 1e6).floor() / 1e6 };
            cheaper(claim, offered, below, price, spot, single_node, spot_to_spot)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let savings = price - replacements.iter().map(|r| r.price).sum::<f64>();
    Ok(Decision { candidates: owned, action: Action::Replace(replacements), savings, destinations })
}

/// The instance types a new claim may launch with the price of each one's cheapest offering it
/// admits, cheapest first.
fn offered(claim: &NewNodeClaim, input: &Input, memo: &mut Memo) -> Vec<(String, f64)> {
    let mut offered: Vec<(String, f64)> = claim
        .instance_types
        .iter()
        .filter_map(|name| {
            let offering = memo.instance_type(&input.instance_types, name)?.cheapest_offering(&claim.requirements)?;
            Some((name.clone(), offering.price))
        })
        .collect();
    offered.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    offered
}

/// The replacement narrowed to its `offered` instance types cheaper than `below`, cheapest
/// first. `price` is what the candidates cost, for the refusal; `spot` whether any of them is
/// spot.
fn cheaper(
    mut replacement: NewNodeClaim,
    offered: Vec<(String, f64)>,
    below: f64,
    price: f64,
    spot: bool,
    single_node: bool,
    spot_to_spot: bool,
) -> Result<NewNodeClaim, Refusal> {
    let mut priced: Vec<(String, f64)> = offered.into_iter().filter(|(_, offered)| *offered < below).collect();
    if priced.is_empty() {
        return Err(Refusal::NoCheaperReplacement { price });
    }
    let replacement_spot =
        replacement.requirements.get(labels::CAPACITY_TYPE).is_none_or(|r| r.admits(Some(labels::CAPACITY_TYPE_SPOT)));
    if spot && replacement_spot {
        if !spot_to_spot {
            return Err(Refusal::SpotToSpotOff);
        }
        // Karpenter asks this flexibility of single-node spot replacements only.
        if single_node {
            if priced.len() < MIN_SPOT_TYPES {
                return Err(Refusal::TooFewSpotTypes(priced.len()));
            }
            priced.truncate(MIN_SPOT_TYPES);
        }
    }
    replacement.price = priced[0].1;
    replacement.instance_types = priced.into_iter().map(|(name, _)| name).collect();
    replacement
        .requirements
        .add(labels::INSTANCE_TYPE, Requirement::one_of(replacement.instance_types.iter().cloned()));
    Ok(replacement)
}

#[cfg(test)]
#[path = "consolidation_tests.rs"]
mod tests;
