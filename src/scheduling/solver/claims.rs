//! NodeClaims opened in this pass as targets: which instance types still fit what they hold, the
//! room held for hostname-affinity groups, pool limits, and the finished claim priced cheapest
//! first.

use std::borrow::Cow;

use super::{
    MAX_INSTANCE_TYPES, MinValuesPolicy, NewNodeClaim, Sizing, Solver,
    interner::ReqId,
    placement::{Accepted, Attempt, NodeRequirements, NodeView, Refusal},
    vectors::{accumulate, fits, plus},
};
use crate::{
    apis::labels,
    scheduling::{
        bitset::BitSet,
        catalog::{InstanceType, Offering, describes_instance_type, offering_allowed, type_admits},
        pod::HostPort,
        quantity::format_resource,
        requirements::{Requirement, Requirements},
        resources::Resources,
        topology::GroupId,
    },
};

/// A NodeClaim opened in this pass.
pub(super) struct OpenClaim {
    pub(super) pool: usize,
    pub(super) hostname: String,
    pub(super) requirements: ReqId,
    pub(super) candidates: BitSet,
    /// Componentwise largest allocatable among the candidates: a quick test of room.
    pub(super) max_allocatable: Vec<i64>,
    pub(super) total: Vec<i64>,
    /// Room held for the rest of a hostname-affinity group whose first pod landed here.
    pub(super) reserved: Vec<i64>,
    pub(super) reservations: Vec<(GroupId, Vec<i64>)>,
    pub(super) pods: Vec<usize>,
    pub(super) host_ports: Vec<HostPort>,
    pub(super) sizing: Sizing,
}

impl Solver<'_> {
    /// Instance types a requirement set allows, with an available offering it allows.
    pub(super) fn types_for(&mut self, requirements: ReqId) -> &BitSet {
        if !self.type_sets.contains_key(&requirements) {
            let set = self.interner.get(requirements);
            let bits = match self.memo.type_sets.get(set) {
                Some(bits) => bits.clone(),
                None => {
                    let mut bits = BitSet::empty(self.input.instance_types.len());
                    for (index, instance) in self.input.instance_types.iter().enumerate() {
                        let labels_ok = set.iter().all(|(key, r)| type_admits(instance, key, r));
                        if labels_ok && instance.offerings.iter().any(|o| o.available && offering_allowed(o, set)) {
                            bits.insert(index);
                        }
                    }
                    self.memo.type_sets.insert(set.clone(), bits.clone());
                    bits
                }
            };
            self.type_sets.insert(requirements, bits);
        }
        &self.type_sets[&requirements]
    }

    /// The instance types of `candidates` that fit `total` and keep every minValues requirement.
    pub(super) fn fitting_types(
        &self,
        candidates: &BitSet,
        total: &[i64],
        requirements: ReqId,
        limit: Option<&[i64]>,
    ) -> Result<BitSet, String> {
        let mut fitting = candidates.clone();
        for index in candidates.iter() {
            let within_limit = limit.is_none_or(|remaining| fits(&self.capacity[index], remaining));
            if !fits(total, &self.allocatable[index]) || !within_limit {
                fitting.remove(index);
            }
        }
        if fitting.is_empty() {
            let needs: Vec<String> = self
                .dims
                .0
                .iter()
                .zip(total)
                .filter(|(_, amount)| **amount > 0)
                .map(|(name, amount)| format!("{name} {}", format_resource(name, *amount)))
                .collect();
            let limited = if limit.is_some() { " within the pool's limits" } else { "" };
            return Err(format!("no instance type{limited} has room for {}", needs.join(", ")));
        }
        if self.input.policies.min_values == MinValuesPolicy::Strict {
            self.min_values_kept(&fitting, requirements)?;
        }
        Ok(fitting)
    }

    /// Whether `types` offer every minValues requirement its number of distinct values.
    pub(super) fn min_values_kept(&self, types: &BitSet, requirements: ReqId) -> Result<(), String> {
        for (key, requirement) in self.interner.get(requirements).iter() {
            let Some(minimum) = requirement.min_values() else { continue };
            // Runs for every placement: stop counting once the minimum is reached.
            let distinct = self.distinct_values(types, key, minimum);
            if distinct < minimum {
                return Err(format!("only {distinct} values of {key} remain, minValues is {minimum}"));
            }
        }
        Ok(())
    }

    /// How many distinct values of label `key` `types` have, counting no further than `up_to`.
    fn distinct_values(&self, types: &BitSet, key: &str, up_to: usize) -> usize {
        let mut distinct: Vec<&String> = Vec::with_capacity(up_to.min(64));
        for value in types.iter().filter_map(|i| self.input.instance_types[i].labels.get(key)) {
            if !distinct.contains(&value) {
                distinct.push(value);
                if distinct.len() >= up_to {
                    break;
                }
            }
        }
        distinct.len()
    }

    /// Under the BestEffort policy, each minValues the launched `types` cannot keep lowered to
    /// what they offer, so the NodeClaim states what it really allows; whether any was lowered.
    fn relax_min_values(&self, types: &BitSet, requirements: &mut Requirements) -> bool {
        let mut relaxed = false;
        for (key, requirement) in requirements.iter_mut() {
            let Some(minimum) = requirement.min_values() else { continue };
            let offered = self.distinct_values(types, key, minimum);
            if offered < minimum {
                *requirement = requirement.clone().with_min_values(Some(offered).filter(|n| *n > 0));
                relaxed = true;
            }
        }
        relaxed
    }

    /// The componentwise largest of `vectors` over the candidate types.
    pub(super) fn largest(&self, candidates: &BitSet, vectors: &[Vec<i64>]) -> Vec<i64> {
        let mut largest = vec![0; self.dims.0.len()];
        for index in candidates.iter() {
            for (max, amount) in largest.iter_mut().zip(&vectors[index]) {
                *max = (*max).max(*amount);
            }
        }
        largest
    }

    pub(super) fn check_claim(&mut self, attempt: &Attempt, claim: usize) -> Result<Accepted, Refusal> {
        let input = self.input;
        let info = &input.pods[attempt.pod];
        let open = &self.claims[claim];
        if info.untolerated_taint(&input.pools[open.pool].taints, attempt.soft_taints).is_some() {
            return Err(Refusal::permanent("a taint is not tolerated"));
        }
        if Self::ports_conflict(&open.host_ports, &info.host_ports) {
            return Err(Refusal::permanent("host port in use"));
        }
        // Room held here for a group this pod belongs to is room for this pod.
        let needed = self.needed(attempt);
        let mut reserved = Cow::Borrowed(&open.reserved[..]);
        for (group, held) in &open.reservations {
            if attempt.owned.contains(group) {
                let own = &self.pod_requests[attempt.pod];
                reserved = Cow::Owned(reserved.iter().zip(held).zip(own).map(|((r, h), o)| r - (*o).min(*h)).collect());
            }
        }
        // Cheap first: not even the largest candidate has room.
        let roomy = (0..needed.len())
            .all(|i| open.total[i].saturating_add(reserved[i]).saturating_add(needed[i]) <= open.max_allocatable[i]);
        if !roomy {
            return Err(Refusal::permanent("not enough room"));
        }
        let total = plus(&plus(&open.total, &reserved), &needed);
        let merged = self.interner.merge(open.requirements, attempt.requirements, false).map_err(Refusal::permanent)?;
        let (narrowed, domains) = self.check_open_topology(attempt, merged, claim)?;
        let mut candidates = self.claims[claim].candidates.clone();
        candidates.intersect_with(self.types_for(narrowed));
        let candidates = self.fitting_types(&candidates, &total, narrowed, None).map_err(|reason| {
            if narrowed == merged { Refusal::permanent(reason) } else { Refusal::transient(reason) }
        })?;
        let total = plus(&self.claims[claim].total, &self.pod_requests[attempt.pod]);
        Ok(Accepted { requirements: narrowed, candidates, total, domains })
    }

    pub(super) fn commit_claim(&mut self, attempt: &Attempt, claim: usize, accepted: Accepted) {
        let max_allocatable = self.largest(&accepted.candidates, &self.allocatable);
        let requests = &self.pod_requests[attempt.pod];
        let info = &self.input.pods[attempt.pod];
        let open = &mut self.claims[claim];
        open.requirements = accepted.requirements;
        open.candidates = accepted.candidates;
        open.max_allocatable = max_allocatable;
        open.total = accepted.total;
        open.pods.push(attempt.pod);
        open.host_ports.extend(info.host_ports.iter().cloned());
        // A group member arriving uses its share of the room held for its group.
        for (group, held) in &mut open.reservations {
            if attempt.owned.contains(group) {
                for ((held, reserved), amount) in held.iter_mut().zip(open.reserved.iter_mut()).zip(requests) {
                    let used = (*amount).min(*held);
                    *held -= used;
                    *reserved -= used;
                }
            }
        }
        for (group, extra) in &attempt.extra {
            accumulate(&mut open.reserved, extra, 1);
            open.reservations.push((*group, extra.clone()));
        }
        let (hostname, pool) = (open.hostname.clone(), open.pool);
        let node = NodeView {
            requirements: NodeRequirements::Interned(accepted.requirements),
            registered: false,
            taints: &self.input.pools[pool].taints,
        };
        self.record(attempt, &accepted.domains, Some(&hostname), node);
    }

    /// Why no instance type of a pool fits a requirement set, naming the first requirement no
    /// type of the pool satisfies (people read this in the pod's Event).
    pub(super) fn unmatched_requirement(&self, pool: usize, requirements: ReqId) -> String {
        let input = self.input;
        let requirements = &self.interner.get(requirements);
        let types: Vec<&InstanceType> = self.pool_types[pool].iter().map(|i| &input.instance_types[i]).collect();
        let unmatched = requirements
            .iter()
            .filter(|(key, _)| describes_instance_type(key))
            .find(|(key, requirement)| types.iter().all(|t| !type_admits(t, key, requirement)));
        if let Some((key, requirement)) = unmatched {
            return format!("no instance type of the pool has {key} {requirement}");
        }
        let allowed = |o: &&Offering| offering_allowed(o, requirements);
        if types.iter().any(|t| t.offerings.iter().any(|o| allowed(&o))) {
            if types.iter().all(|t| t.offerings.iter().filter(allowed).all(|o| !o.available)) {
                return "every offering the pool allows failed to launch in the last minutes (capacity errors)"
                    .to_owned();
            }
        } else {
            let wanted: Vec<String> = [labels::ZONE, labels::CAPACITY_TYPE]
                .iter()
                .filter_map(|key| requirements.get(key).map(|r| format!("{key} {r}")))
                .collect();
            return format!("no offering of the pool's instance types has {}", wanted.join(" and "));
        }
        "no instance type of the pool matches all the requirements together".to_owned()
    }

    pub(super) fn check_new_claim(&mut self, attempt: &Attempt, pool: usize) -> Result<Accepted, Refusal> {
        let input = self.input;
        let info = &input.pods[attempt.pod];
        if let Some(taint) = info.untolerated_taint(&input.pools[pool].taints, attempt.soft_taints) {
            return Err(Refusal::permanent(format!(
                "taint {}={}:{} not tolerated",
                taint.key,
                taint.value.as_deref().unwrap_or_default(),
                taint.effect
            )));
        }
        let merged = self
            .interner
            .merge(self.pool_requirements[pool], attempt.requirements, false)
            .map_err(Refusal::permanent)?;
        let (narrowed, domains) = self.check_open_topology(attempt, merged, self.claims.len())?;
        let total = plus(&self.pool_overhead[pool], &self.needed(attempt));
        let mut candidates = self.pool_types[pool].clone();
        candidates.intersect_with(self.types_for(narrowed));
        if candidates.is_empty() {
            return Err(Refusal::permanent(self.unmatched_requirement(pool, narrowed)));
        }
        let remaining = self.pool_remaining[pool].clone();
        let candidates =
            self.fitting_types(&candidates, &total, narrowed, remaining.as_deref()).map_err(Refusal::permanent)?;
        let total = plus(&self.pool_overhead[pool], &self.pod_requests[attempt.pod]);
        Ok(Accepted { requirements: narrowed, candidates, total, domains })
    }

    pub(super) fn open_claim(&mut self, attempt: &Attempt, pool: usize, mut accepted: Accepted) {
        let needed = self.needed(attempt).into_owned();
        let (sizing, candidates) = self.right_size(pool, accepted.requirements, &needed, accepted.candidates);
        accepted.candidates = candidates;
        // Limits are charged pessimistically, with the largest type the claim may still become.
        let largest = self.largest(&accepted.candidates, &self.capacity);
        if let Some(remaining) = &mut self.pool_remaining[pool] {
            for (left, used) in remaining.iter_mut().zip(&largest) {
                *left = left.saturating_sub(*used);
            }
        }
        let dims = self.dims.0.len();
        self.claims.push(OpenClaim {
            pool,
            hostname: format!("new-node-{}", self.claims.len()),
            requirements: accepted.requirements,
            candidates: BitSet::empty(0),
            max_allocatable: vec![0; dims],
            total: vec![0; dims],
            reserved: vec![0; dims],
            reservations: Vec::new(),
            pods: Vec::new(),
            host_ports: Vec::new(),
            sizing,
        });
        let claim = self.claims.len() - 1;
        self.commit_claim(attempt, claim, accepted);
    }

    /// The claim as launched: the types of its size class that fit what it holds, and any
    /// other ordinary type that fits and costs less than all of them (a claim that stayed small
    /// often fits a smaller, cheaper type the class left out as poor value per unit). A dearer
    /// type outside the class is never offered to the fleet, which could otherwise pick it.
    pub(super) fn finish(&mut self, claim: usize) -> NewNodeClaim {
        let (pool, requirements) = (self.claims[claim].pool, self.claims[claim].requirements);
        let mut launchable = self.pool_types[pool].clone();
        launchable.intersect_with(self.types_for(requirements));
        launchable.intersect_with(&self.ordinary_types);
        // Each type's cheapest offering the claim allows (infinite when none).
        let prices = self.offering_prices(requirements);
        let claim = &self.claims[claim];
        let requirements = &self.interner.get(claim.requirements);
        let price = |i: usize| Some(prices[i]).filter(|p| p.is_finite());
        let cheapest_in_class = claim.candidates.iter().filter_map(price).fold(f64::INFINITY, f64::min);
        // The pool's limits were charged with the class's largest type: nothing outside it may
        // be larger.
        let charged = self.pool_remaining[pool].as_ref().map(|_| self.largest(&claim.candidates, &self.capacity));
        let cheaper_outside = launchable
            .iter()
            .filter(|i| fits(&claim.total, &self.allocatable[*i]))
            .filter(|i| charged.as_ref().is_none_or(|charged| fits(&self.capacity[*i], charged)))
            .filter(|i| price(*i).is_some_and(|p| p < cheapest_in_class));
        let mut chosen = claim.candidates.clone();
        cheaper_outside.for_each(|i| chosen.insert(i));
        let types = &self.input.instance_types;
        let mut priced: Vec<(f64, usize)> = chosen.iter().filter_map(|i| Some((price(i)?, i))).collect();
        priced.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| types[a.1].name.cmp(&types[b.1].name)));
        priced.truncate(MAX_INSTANCE_TYPES);
        let names: Vec<String> = priced.iter().map(|(_, i)| types[*i].name.clone()).collect();
        let mut requirements = Requirements::clone(requirements);
        let mut launched = BitSet::empty(types.len());
        priced.iter().for_each(|(_, i)| launched.insert(*i));
        let min_values_relaxed = self.input.policies.min_values == MinValuesPolicy::BestEffort
            && self.relax_min_values(&launched, &mut requirements);
        requirements.add(labels::INSTANCE_TYPE, Requirement::one_of(names.iter().cloned()));
        let requests: Resources =
            self.dims.0.iter().cloned().zip(claim.total.iter().copied()).filter(|(_, v)| *v != 0).collect();
        NewNodeClaim {
            nodepool: self.input.pools[claim.pool].name.clone(),
            requirements,
            instance_types: names,
            requests,
            pods: claim.pods.iter().map(|p| self.input.pods[*p].key.clone()).collect(),
            price: priced.first().map_or(0.0, |(price, _)| *price),
            sizing: claim.sizing,
            min_values_relaxed,
        }
    }
}
