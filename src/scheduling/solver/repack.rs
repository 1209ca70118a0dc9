//! Re-packing: the pass after first fit. A claim's size class is chosen for the pod it opened
//! with, and pods of other kinds that filled its spare room can push it past a size step into a
//! type that is poor value for the mix (a compute-optimised type doubled for a few memory-heavy
//! pods). For each claim holding several kinds of pods (signature classes), each kind is solved
//! alone with the claim's requirements; when those claims together cost at least
//! [`REPACK_SAVING`] less, they replace it.
//!
//! A claim's pods are re-packed only when moving them to other new nodes with the same
//! requirements cannot change any count a decision relied on: every topology term they carry,
//! prefer or are counted by is over a key the claim's requirements fix to one value (the zone a
//! zone spread narrowed it to), never over the hostname. Claims of a pool with limits keep
//! their packing (the limits were charged with the claim's largest type). Pods of one kind are
//! interchangeable, so a split is computed once per composition (pool, requirements, pods per
//! kind) and reused for every claim that has it.

use std::{
    collections::{BTreeMap, HashMap},
    rc::Rc,
};

use super::{Input, NewNodeClaim, NodePoolTemplate, Solver, domains::single_value, interner::ReqId};
use crate::apis::labels;

/// How much cheaper the claims of a split must be, together, than the claim they replace: more
/// nodes cost more launches and scatter the room future pods could use.
const REPACK_SAVING: f64 = 0.05;

/// A claim's pods grouped by kind: (signature class, pods in claim order).
type Kinds = Vec<(usize, Vec<usize>)>;

/// What a split is computed from: pool, requirements, and how many pods of each kind.
type Composition = (usize, ReqId, Vec<(usize, usize)>);

/// Per kind (in the order of [`Kinds`]), its claims when solved alone, each with the positions,
/// among that kind's pods, of the pods it holds.
type Split = Vec<Vec<(NewNodeClaim, Vec<usize>)>>;

impl Solver<'_> {
    /// The finished claims with every mixed claim that is cheaper split replaced by its split.
    pub(super) fn repack(&mut self, finished: Vec<NewNodeClaim>, classes: &[usize]) -> Vec<NewNodeClaim> {
        let mut splits: HashMap<Composition, Option<Rc<Split>>> = HashMap::new();
        let mut claims = Vec::with_capacity(finished.len());
        for (index, claim) in finished.into_iter().enumerate() {
            let Some(kinds) = self.movable_kinds(index, classes) else {
                claims.push(claim);
                continue;
            };
            let open = &self.claims[index];
            let composition = (open.pool, open.requirements, kinds.iter().map(|(k, pods)| (*k, pods.len())).collect());
            let split = match splits.get(&composition) {
                Some(split) => split.clone(),
                None => {
                    let split =
                        self.may_save(index, &kinds, claim.price).then(|| self.split(index, &kinds, claim.price));
                    splits.entry(composition).or_insert(split.flatten()).clone()
                }
            };
            match split {
                Some(split) => claims.extend(self.apply(&split, &kinds)),
                None => claims.push(claim),
            }
        }
        claims
    }

    /// The claim's pods by kind, when it holds several kinds and may be re-packed.
    fn movable_kinds(&mut self, claim: usize, classes: &[usize]) -> Option<Kinds> {
        let open = &self.claims[claim];
        if self.pool_remaining[open.pool].is_some() {
            return None;
        }
        let mut kinds: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        open.pods.iter().for_each(|pod| kinds.entry(classes[*pod]).or_default().push(*pod));
        if kinds.len() < 2 {
            return None;
        }
        // Pods of one kind carry and are counted by the same terms: one pod per kind answers.
        let requirements = self.interner.get(open.requirements);
        for pods in kinds.values() {
            let info = &self.input.pods[pods[0]];
            let members = self.topology.memberships(&info.namespace, &info.labels);
            let mut keys = info
                .topology_terms()
                .map(|term| term.key.as_str())
                .chain(members.iter().map(|id| self.topology.group(*id).term.key.as_str()));
            let fixed = |key: &str| key != labels::HOSTNAME && requirements.get(key).and_then(single_value).is_some();
            if !keys.all(fixed) {
                return None;
            }
        }
        Some(kinds.into_iter().collect())
    }

    /// Whether splitting could save [`REPACK_SAVING`] at all: no claims hold a kind's pods for
    /// less than the best price per copy of its pod, times its pods. Most claims fail this
    /// (they are full, or mix many kinds with a pod each), and cost no solver run.
    fn may_save(&mut self, claim: usize, kinds: &Kinds, price: f64) -> bool {
        let (pool, requirements) = (self.claims[claim].pool, self.claims[claim].requirements);
        let mut least = 0.0;
        for (_, pods) in kinds {
            let needed = self.pod_requests[pods[0]].clone();
            least += self.best_price_per_copy(pool, requirements, &needed) * pods.len() as f64;
        }
        least < price * (1.0 - REPACK_SAVING)
    }

    /// Each kind solved alone on new claims with the claim's requirements, when that is cheaper
    /// than `price` by [`REPACK_SAVING`].
    fn split(&mut self, claim: usize, kinds: &Kinds, price: f64) -> Option<Rc<Split>> {
        let open = &self.claims[claim];
        let pool = NodePoolTemplate {
            requirements: self.interner.get(open.requirements).clone(),
            remaining: None,
            ..self.input.pools[open.pool].clone()
        };
        let mut split = Split::with_capacity(kinds.len());
        let mut total = 0.0;
        for (_, pods) in kinds {
            let alone = Input {
                pods: pods.iter().map(|pod| self.input.pods[*pod].clone()).collect(),
                pools: vec![pool.clone()],
                instance_types: self.input.instance_types.clone(),
                policies: self.input.policies,
                namespaces: self.input.namespaces.clone(),
                ..Input::default()
            };
            let plan = super::run(&alone, &mut self.memo, false);
            if !plan.unschedulable.is_empty() || !plan.existing.is_empty() {
                return None;
            }
            let position: HashMap<&str, usize> =
                alone.pods.iter().enumerate().map(|(i, pod)| (pod.key.as_str(), i)).collect();
            let mut claims = Vec::with_capacity(plan.new_claims.len());
            for claim in plan.new_claims {
                total += claim.price;
                let positions = claim.pods.iter().filter_map(|key| position.get(key.as_str()).copied()).collect();
                claims.push((claim, positions));
            }
            split.push(claims);
        }
        (total < price * (1.0 - REPACK_SAVING)).then(|| Rc::new(split))
    }

    /// A split applied to a claim of its composition: the same claims, holding this claim's pods.
    fn apply(&self, split: &Split, kinds: &Kinds) -> Vec<NewNodeClaim> {
        let mut claims = Vec::new();
        for (kind_claims, (_, pods)) in split.iter().zip(kinds) {
            for (claim, positions) in kind_claims {
                let keys = positions.iter().map(|p| self.input.pods[pods[*p]].key.clone()).collect();
                claims.push(NewNodeClaim { pods: keys, ..claim.clone() });
            }
        }
        claims
    }
}
