//! Topology for a target: the domains a key can take, and the checks of spread and (anti-)affinity
//! terms that choose one.

use std::{
    collections::{BTreeSet, HashMap},
    rc::Rc,
};

use super::{
    ExistingNode, Input, Memo, Solver,
    interner::ReqId,
    placement::{Attempt, ChosenDomains, Refusal},
};
use crate::{
    apis::labels,
    scheduling::{
        catalog::is_well_known,
        pod::{NodeFilter, TopologyTerm},
        requirements::{Requirement, Requirements},
        topology::{Domain, GroupId},
    },
};

/// Where a term's domains are looked up: the memo's pools' part (for pools with this digest) and
/// this run's nodes' part.
struct KnownDomains<'a> {
    memo: &'a mut Memo,
    pools: u64,
    on_nodes: &'a mut HashMap<(String, NodeFilter), BTreeSet<String>>,
}

impl Solver<'_> {
    /// Domains a term's key can take, from existing nodes and from the pools' instance-type
    /// offerings and labels: of the nodes and pools its node filter lets count, the values the
    /// filter's affinity admits. Both parts depend on the key and filter only, which most terms
    /// share (every Deployment's zone spread): the nodes' part is found once per run, and the
    /// pools' part, a scan of the whole catalog, is kept in the memo, since consolidation asks a
    /// thousand questions of the same pools, each a new solver run with the same terms (zone
    /// spreads made those scans most of a pass).
    fn known_domains(input: &Input, term: &TopologyTerm, known: KnownDomains) -> BTreeSet<String> {
        let KnownDomains { memo, pools, on_nodes } = known;
        let by_filter = (term.key.clone(), term.filter.clone());
        let mut domains = match term.key.as_str() {
            labels::HOSTNAME => BTreeSet::new(),
            _ => {
                let key = (pools, by_filter.0.clone(), by_filter.1.clone());
                let offered = memo.pool_domains.entry(key).or_insert_with(|| Rc::new(Self::pool_domains(input, term)));
                BTreeSet::clone(offered)
            }
        };
        let on_nodes = on_nodes.entry(by_filter).or_insert_with(|| Self::node_domains(input, term));
        domains.extend(on_nodes.iter().cloned());
        domains
    }

    /// The domains of a term's key on the existing nodes its filter lets count: from the tally
    /// of a consolidation question when it counted them, else found over the nodes.
    fn node_domains(input: &Input, term: &TopologyTerm) -> BTreeSet<String> {
        if let Some(domains) = input.counted.as_ref().and_then(|counted| counted.node_domains(term)) {
            return domains;
        }
        let mut domains = BTreeSet::new();
        for value in input.nodes.iter().flat_map(|node| node_values(node, term)) {
            if !domains.contains(value) {
                domains.insert(value.clone());
            }
        }
        domains
    }

    /// The domains of a term's key (not the hostname) that the pools its filter lets count can
    /// launch into.
    fn pool_domains(input: &Input, term: &TopologyTerm) -> BTreeSet<String> {
        let (key, filter) = (term.key.as_str(), &term.filter);
        let mut domains = BTreeSet::new();
        for pool in &input.pools {
            if !filter.passes(&pool.requirements, false, &pool.taints) {
                continue;
            }
            // The filter's alternatives this pool can meet, on this key.
            let wanted: Vec<Option<&Requirement>> = match &filter.affinity {
                Some(alternatives) => alternatives
                    .iter()
                    .filter(|alt| pool.requirements.conflict_with(alt, is_well_known).is_none())
                    .map(|alt| alt.get(key))
                    .collect(),
                None => vec![None],
            };
            let allowed = |value: &str| {
                pool.requirements.get(key).is_none_or(|r| r.admits(Some(value)))
                    && wanted.iter().any(|w| w.is_none_or(|r| r.admits(Some(value))))
            };
            for index in &pool.instance_types {
                let Some(instance) = input.instance_types.get(*index) else { continue };
                let values = instance.offerings.iter().map(|o| match key {
                    labels::ZONE => Some(o.zone.as_str()),
                    labels::CAPACITY_TYPE => Some(o.capacity_type.as_str()),
                    _ => instance.labels.get(key).map(String::as_str),
                });
                for value in values.flatten() {
                    if !domains.contains(value) && allowed(value) {
                        domains.insert(value.to_owned());
                    }
                }
            }
            if let Some(values) = pool.requirements.get(key).and_then(Requirement::finite_values) {
                domains.extend(values.iter().cloned());
            }
        }
        domains
    }

    pub(super) fn group_of(&mut self, term: &TopologyTerm) -> GroupId {
        let input = self.input;
        let known = KnownDomains { memo: &mut self.memo, pools: self.pools_digest, on_nodes: &mut self.node_domains };
        self.topology.group_of(term, |term| Self::known_domains(input, term, known))
    }

    /// Checks the topology terms for a target whose domain on each key is `domain_of(key)`;
    /// returns the requirements narrowed to the chosen domains (when a key was still open) and
    /// the domain per key.
    pub(super) fn check_topology(
        &self,
        attempt: &Attempt,
        requirements: ReqId,
        domain_of: impl Fn(&str, &[(GroupId, bool)]) -> Domain,
    ) -> Result<(Option<Requirements>, ChosenDomains), Refusal> {
        let mut narrowed: Option<Requirements> = None;
        let mut chosen = Vec::with_capacity(attempt.by_key.len());
        for (key, groups) in &attempt.by_key {
            let minimums: Vec<u32> = groups.iter().map(|(id, _)| self.topology.minimum(*id)).collect();
            let admits = |domain: &str| {
                groups.iter().zip(&minimums).all(|((id, as_owner), minimum)| {
                    self.topology.admits(*id, attempt.members.contains(id), *as_owner, domain, *minimum)
                })
            };
            match domain_of(key, groups) {
                Domain::Fixed(domain) => {
                    if !admits(&domain) {
                        let lasts = groups.iter().all(|(id, as_owner)| self.topology.refusal_lasts(*id, *as_owner));
                        let reason = "a topology constraint is not satisfied here";
                        return Err(if lasts { Refusal::permanent(reason) } else { Refusal::transient(reason) });
                    }
                    chosen.push((key.clone(), domain));
                }
                Domain::Open(domains) => {
                    let allowed: BTreeSet<String> = domains.into_iter().filter(|d| admits(d)).collect();
                    let owned: Vec<GroupId> = groups.iter().filter(|(_, owner)| *owner).map(|(id, _)| *id).collect();
                    let Some(domain) = self.topology.preferred_domain(&owned, &allowed) else {
                        return Err(Refusal::transient(format!("no {key} satisfies the pod's topology constraints")));
                    };
                    narrowed
                        .get_or_insert_with(|| (*self.interner.get(requirements)).clone())
                        .add(key, Requirement::one_of([domain.clone()]));
                    chosen.push((key.clone(), domain));
                }
            }
        }
        Ok((narrowed, chosen))
    }

    /// Topology for a node still to be launched: its hostname is its own; other keys may still
    /// take any value its requirements allow.
    pub(super) fn check_open_topology(
        &mut self,
        attempt: &Attempt,
        requirements: ReqId,
        claim: usize,
    ) -> Result<(ReqId, Vec<(String, String)>), Refusal> {
        if attempt.by_key.is_empty() {
            return Ok((requirements, Vec::new()));
        }
        let hostname = match self.claims.get(claim) {
            Some(open) => open.hostname.clone(),
            None => format!("new-node-{claim}"),
        };
        let set = &self.interner.get(requirements);
        let (narrowed, domains) = self.check_topology(attempt, requirements, |key, groups| {
            if key == labels::HOSTNAME {
                return Domain::Fixed(hostname.clone());
            }
            match set.get(key).and_then(Requirement::finite_values) {
                Some([value]) => Domain::Fixed(value.clone()),
                Some(values) => Domain::Open(values.iter().cloned().collect()),
                None => Domain::Open(
                    groups
                        .iter()
                        .flat_map(|(id, _)| self.topology.group(*id).domains.iter())
                        .filter(|d| set.get(key).is_none_or(|r| r.admits(Some(d))))
                        .cloned()
                        .collect(),
                ),
            }
        })?;
        let narrowed = match narrowed {
            Some(narrowed) => self.interner.intern(narrowed),
            None => requirements,
        };
        Ok((narrowed, domains))
    }
}

/// The values of a term's key on a node, when the term's node filter lets the node count.
pub(super) fn node_values<'n>(node: &'n ExistingNode, term: &TopologyTerm) -> &'n [String] {
    if !term.filter.passes(&node.requirements, node.registered, &node.taints) {
        return &[];
    }
    node.requirements.get(&term.key).and_then(Requirement::finite_values).unwrap_or_default()
}

/// The one value a requirement allows, if it allows exactly one.
pub(super) fn single_value(requirement: &Requirement) -> Option<&str> {
    match requirement.finite_values() {
        Some([value]) => Some(value),
        _ => None,
    }
}
