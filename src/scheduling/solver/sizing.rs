//! Right-sizing: the instance types a NodeClaim may grow into. First fit alone keeps adding pods
//! to a claim while any type still fits them, until only the largest types do, and the largest
//! are often the dearest per unit (high-memory `u-*`, 96xlarge sizes of premium families) or
//! exotic. So when a claim opens, the requests it opens for (its first pod, plus the room held
//! for a hostname-affinity group) set the direction of what it will hold, and the claim keeps
//! only the types that are good value in that direction: those whose price per whole copy of
//! those requests, after the pool's DaemonSet overhead, is within [`VALUE_SLACK`] of the best
//! type's. When those types cannot keep a minValues requirement, any ordinary type may; exotic
//! types only when nothing else fits. The restriction is fixed for the claim's life, so "does
//! some candidate still fit" stays monotone in what the claim holds (placing replicas together
//! relies on that).

use std::{collections::HashMap, rc::Rc};

use super::{MinValuesPolicy, Solver, interner::ReqId};
use crate::scheduling::{
    bitset::BitSet,
    catalog::{OFFERING_KEYS, offering_allowed},
    requirements::Requirement,
};

/// How much dearer per copy than the best type a claim's types may be. Measured on
/// `benches/plans.rs`: 5% gave the cheapest plan on every mix but one (15% left the wide
/// deployments mix at 1.46 times the bound against 1.15; 30% was worse everywhere, and so was
/// widening the class to a minimum number of types). Flexibility for spot comes from minValues,
/// which widens the class, as Karpenter advises for spot.
pub const VALUE_SLACK: f64 = 0.05;

/// How widely a NodeClaim's instance types were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sizing {
    /// Types within [`VALUE_SLACK`] of the best price per unit of what the claim opened for.
    BestValue,
    /// The good-value types that hold what the claim opened for do not keep its minValues
    /// requirements: any type that is not exotic.
    AnySize,
    /// Only exotic types (bare metal, very high memory, accelerated) hold the pods or satisfy
    /// their requirements.
    Exotic,
}

impl Sizing {
    /// A short name, as serialized.
    pub fn label(self) -> &'static str {
        match self {
            Sizing::BestValue => "best-value",
            Sizing::AnySize => "any-size",
            Sizing::Exotic => "exotic",
        }
    }

    /// What a person reads in `stoker plan` and Events.
    pub fn describe(self) -> &'static str {
        match self {
            Sizing::BestValue => "best value for its pods",
            Sizing::AnySize => "the best-value types do not offer its minValues, so any size",
            Sizing::Exotic => "only exotic types (bare metal, high memory, accelerated) hold its pods",
        }
    }
}

/// The two restricted sets a claim can be sized from; `Exotic` means unrestricted.
pub(super) struct SizeClasses {
    best_value: BitSet,
    ordinary: BitSet,
    /// The best ordinary type's price per copy (infinite when none holds one).
    best_price_per_copy: f64,
}

/// What the size classes are computed from: the pool, the claim's requirements and the requests
/// it opened for.
pub(super) type SizingKey = (usize, ReqId, Vec<i64>);

/// The requirements on the offering keys (zone, zone ID, capacity type, capacity reservation),
/// which alone decide a type's cheapest offering.
pub(super) type OfferingKey = Vec<Option<Requirement>>;

#[derive(Default)]
pub(super) struct SizingCache {
    classes: HashMap<SizingKey, Rc<SizeClasses>>,
}

impl Solver<'_> {
    /// Narrows a new claim's fitting `candidates` to the first size class that still fits and
    /// keeps every minValues requirement.
    pub(super) fn right_size(
        &mut self,
        pool: usize,
        requirements: ReqId,
        needed: &[i64],
        candidates: BitSet,
    ) -> (Sizing, BitSet) {
        let classes = self.size_classes(pool, requirements, needed);
        for (sizing, class) in [(Sizing::BestValue, &classes.best_value), (Sizing::AnySize, &classes.ordinary)] {
            let mut restricted = candidates.clone();
            restricted.intersect_with(class);
            if !restricted.is_empty() && self.min_values_kept(&restricted, requirements).is_ok() {
                return (sizing, restricted);
            }
        }
        // Under BestEffort the minValues that no class keeps do not justify exotic types: any
        // ordinary size that fits, as many values as they have.
        let mut ordinary = candidates.clone();
        ordinary.intersect_with(&classes.ordinary);
        if self.input.policies.min_values == MinValuesPolicy::BestEffort && !ordinary.is_empty() {
            return (Sizing::AnySize, ordinary);
        }
        (Sizing::Exotic, candidates)
    }

    /// The least any ordinary type of the pool costs per copy of `needed`: no claims holding
    /// `n` copies cost less than `n` times this.
    pub(super) fn best_price_per_copy(&mut self, pool: usize, requirements: ReqId, needed: &[i64]) -> f64 {
        self.size_classes(pool, requirements, needed).best_price_per_copy
    }

    fn size_classes(&mut self, pool: usize, requirements: ReqId, needed: &[i64]) -> Rc<SizeClasses> {
        let key = (pool, requirements, needed.to_vec());
        if let Some(classes) = self.sizing.classes.get(&key) {
            return classes.clone();
        }
        let prices = self.offering_prices(requirements);
        let mut types = self.pool_types[pool].clone();
        types.intersect_with(self.types_for(requirements));
        let overhead = &self.pool_overhead[pool];
        // (price per copy of `needed`, type) of every ordinary type that can hold one.
        let mut ranked: Vec<(f64, usize)> = types
            .iter()
            .filter(|index| !self.input.instance_types[*index].exotic)
            .filter_map(|index| {
                let units = needed
                    .iter()
                    .zip(&self.allocatable[index])
                    .zip(overhead)
                    .filter(|((need, _), _)| **need > 0)
                    .map(|((need, allocatable), overhead)| (allocatable - overhead).max(0) as f64 / *need as f64)
                    .fold(f64::INFINITY, f64::min)
                    .floor();
                // Whole copies of what the claim opened for: a type that cannot hold one is no
                // value at all, and one that holds 1.9 copies is paid for holding one.
                (units >= 1.0 && prices[index].is_finite()).then(|| (prices[index] / units, index))
            })
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut ordinary = BitSet::empty(self.input.instance_types.len());
        ranked.iter().for_each(|(_, index)| ordinary.insert(*index));
        let mut best_value = BitSet::empty(self.input.instance_types.len());
        let limit = ranked.first().map_or(0.0, |(best, _)| best * (1.0 + VALUE_SLACK));
        let within = ranked.iter().take_while(|(cost, _)| *cost <= limit).count();
        ranked[..within].iter().for_each(|(_, index)| best_value.insert(*index));
        // A minValues requirement needs that many distinct values to choose from: widen the
        // class with the next best types until it has them.
        for (key, requirement) in self.interner.get(requirements).iter() {
            let Some(minimum) = requirement.min_values() else { continue };
            let value = |index: usize| self.input.instance_types[index].labels.get(key);
            let mut seen: Vec<&String> = best_value.iter().filter_map(value).collect();
            seen.sort();
            seen.dedup();
            for (_, index) in &ranked[within..] {
                if seen.len() >= minimum {
                    break;
                }
                if let Some(v) = value(*index).filter(|v| !seen.contains(v)) {
                    seen.push(v);
                    best_value.insert(*index);
                }
            }
        }
        let best_price_per_copy = ranked.first().map_or(f64::INFINITY, |(best, _)| *best);
        let classes = Rc::new(SizeClasses { best_value, ordinary, best_price_per_copy });
        self.sizing.classes.insert(key, classes.clone());
        classes
    }

    /// Each type's cheapest offering that the requirements allow (infinite when none is), shared
    /// by every requirement set with the same requirements on the offering keys, and kept in
    /// the memo across runs.
    pub(super) fn offering_prices(&mut self, requirements: ReqId) -> Rc<[f64]> {
        let set = self.interner.get(requirements);
        let key: OfferingKey = OFFERING_KEYS.iter().map(|key| set.get(key).cloned()).collect();
        if let Some(prices) = self.memo.prices.get(&key) {
            return prices.clone();
        }
        let prices: Rc<[f64]> = self
            .input
            .instance_types
            .iter()
            .map(|instance| {
                instance
                    .offerings
                    .iter()
                    .filter(|o| o.available && offering_allowed(o, set))
                    .map(|o| o.price)
                    .fold(f64::INFINITY, f64::min)
            })
            .collect();
        self.memo.prices.insert(key, prices.clone());
        prices
    }
}
