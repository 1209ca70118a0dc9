//! Topology bookkeeping for one simulation: for each distinct topology term, how many matching
//! pods (and, for anti-affinity, how many pods carrying the term) each domain holds, and which
//! domains a pod may go to next.
//!
//! Terms are shared: every replica of a Deployment carries the same spread constraint, so it is
//! counted once per distinct term, not once per pod.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use super::pod::{NamespaceLabels, NodeFilter, TopologyKind, TopologyTerm};
use crate::apis::labels;

pub type GroupId = usize;

/// Counts for one distinct topology term.
#[derive(Debug, Clone)]
pub struct Group {
    pub term: TopologyTerm,
    /// Pods matching the term's selector, per domain.
    members: HashMap<String, u32>,
    /// Pods that carry the term (anti-affinity only: they repel matching pods), per domain.
    owners: HashMap<String, u32>,
    /// Every domain a pod could land in, as far as the simulation knows (for spread skew).
    pub domains: BTreeSet<String>,
}

/// How a pod counts in a group: matched by its selector, or carrying the (anti-affinity) term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Member,
    Owner,
}

/// Where a target node stands on a topology key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domain {
    /// The node is in this domain.
    Fixed(String),
    /// A node still to be launched that may land in any of these domains.
    Open(BTreeSet<String>),
}

/// All topology groups of a simulation.
#[derive(Debug, Default)]
pub struct Topology {
    /// The cluster's namespaces with their labels, for terms with a `namespaceSelector`.
    namespaces: Arc<NamespaceLabels>,
    groups: Vec<Group>,
    index: HashMap<TopologyTerm, GroupId>,
    /// Groups counting pods of a (namespace, labels), computed once per distinct label set.
    memberships: HashMap<(String, BTreeMap<String, String>), Vec<GroupId>>,
}

impl Topology {
    pub fn new(namespaces: Arc<NamespaceLabels>) -> Self {
        Self { namespaces, ..Self::default() }
    }

    /// The group of a term, created on first sight with the domains known for it (its key, as
    /// far as its node filter lets count).
    pub fn group_of(
        &mut self,
        term: &TopologyTerm,
        domains: impl FnOnce(&TopologyTerm) -> BTreeSet<String>,
    ) -> GroupId {
        if let Some(id) = self.index.get(term) {
            return *id;
        }
        let id = self.groups.len();
        self.groups.push(Group {
            term: term.clone(),
            members: HashMap::new(),
            owners: HashMap::new(),
            domains: domains(term),
        });
        self.index.insert(term.clone(), id);
        self.memberships.clear();
        id
    }

    pub fn group(&self, id: GroupId) -> &Group {
        &self.groups[id]
    }

    /// No term has been seen: no pod belongs to any group.
    pub fn is_unused(&self) -> bool {
        self.groups.is_empty()
    }

    /// The groups that count a pod with these labels.
    pub fn memberships(&mut self, namespace: &str, labels: &BTreeMap<String, String>) -> Vec<GroupId> {
        if self.is_unused() {
            return Vec::new();
        }
        let key = (namespace.to_owned(), labels.clone());
        if let Some(ids) = self.memberships.get(&key) {
            return ids.clone();
        }
        let ids: Vec<GroupId> = self
            .groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.term.counts(namespace, labels, &self.namespaces))
            .map(|(id, _)| id)
            .collect();
        self.memberships.insert(key, ids.clone());
        ids
    }

    /// Records a pod placed in `domain_of(key)` for every key: as a member of `members` whose
    /// filter the pod's node `passes`, and as the owner of the anti-affinity groups in `owned`.
    /// A domain is copied only the first time a group sees it: a consolidation question records
    /// every bound pod of the cluster.
    pub fn record<'d>(
        &mut self,
        members: &[GroupId],
        owned: &[GroupId],
        domain_of: impl Fn(&str) -> Option<&'d str>,
        passes: impl Fn(&NodeFilter) -> bool,
    ) {
        self.record_noting(members, owned, domain_of, passes, |_, _, _| {});
    }

    /// [`record`](Self::record), telling `noted` each group, domain and role the pod was counted
    /// in (what a tally of bound pods keeps per node).
    pub fn record_noting<'d>(
        &mut self,
        members: &[GroupId],
        owned: &[GroupId],
        domain_of: impl Fn(&str) -> Option<&'d str>,
        passes: impl Fn(&NodeFilter) -> bool,
        mut noted: impl FnMut(GroupId, &'d str, Role),
    ) {
        for id in members {
            let group = &mut self.groups[*id];
            if !passes(&group.term.filter) {
                continue;
            }
            if let Some(domain) = domain_of(&group.term.key) {
                // Hostnames are not kept as domains: the hostname minimum is always 0.
                if group.term.key != labels::HOSTNAME && !group.domains.contains(domain) {
                    group.domains.insert(domain.to_owned());
                }
                count_in(&mut group.members, domain);
                noted(*id, domain, Role::Member);
            }
        }
        for id in owned {
            let group = &mut self.groups[*id];
            if group.term.kind == TopologyKind::AntiAffinity
                && let Some(domain) = domain_of(&group.term.key)
            {
                count_in(&mut group.owners, domain);
                noted(*id, domain, Role::Owner);
            }
        }
    }

    /// How many groups there are; their ids are `0..group_count`.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The group of a term, if it has one.
    pub fn id_of(&self, term: &TopologyTerm) -> Option<GroupId> {
        self.index.get(term).copied()
    }

    /// Sets group `id`'s counts to `source`'s less `less` (domain, role, pods): a group of another
    /// topology, over the same term, that counted more pods. Counts that reach 0 go, as if never
    /// counted (an empty group admits what a group with zero counts would not).
    pub fn count_from(&mut self, id: GroupId, source: &Group, less: &[(&str, Role, u32)]) {
        let group = &mut self.groups[id];
        group.members.clone_from(&source.members);
        group.owners.clone_from(&source.owners);
        for (domain, role, pods) in less {
            let counts = match role {
                Role::Member => &mut group.members,
                Role::Owner => &mut group.owners,
            };
            if let Some(count) = counts.get_mut(*domain) {
                *count = count.saturating_sub(*pods);
                if *count == 0 {
                    counts.remove(*domain);
                }
            }
        }
    }

    /// Anti-affinity groups owned by placed pods that repel a pod with these memberships.
    pub fn repelling(&self, members: &[GroupId]) -> Vec<GroupId> {
        members.iter().copied().filter(|id| !self.groups[*id].owners.is_empty()).collect()
    }

    /// The spread minimum a pod is measured against: the emptiest of the group's domains (those
    /// its node filter lets count). A new node is always possible on hostname, so there the
    /// minimum is 0, as it is while fewer than `minDomains` domains exist. Only spread groups use
    /// it.
    pub fn minimum(&self, id: GroupId) -> u32 {
        let group = &self.groups[id];
        let TopologyKind::Spread { min_domains, .. } = group.term.kind else { return 0 };
        if group.term.key == labels::HOSTNAME {
            return 0;
        }
        let counts: Vec<u32> = group.domains.iter().map(|d| group.members.get(d).copied().unwrap_or(0)).collect();
        if (counts.len() as u32) < min_domains { 0 } else { counts.into_iter().min().unwrap_or(0) }
    }

    /// Whether a pod may go to `domain` under group `id`: as the term's owner (`as_owner`), or as
    /// a pod the term's owners repel. `self_member` says whether the pod counts for the group.
    pub fn admits(&self, id: GroupId, self_member: bool, as_owner: bool, domain: &str, minimum: u32) -> bool {
        let group = &self.groups[id];
        if !as_owner {
            return group.owners.get(domain).copied().unwrap_or(0) == 0;
        }
        let count = group.members.get(domain).copied().unwrap_or(0);
        match group.term.kind {
            TopologyKind::AntiAffinity => count == 0,
            // Nothing matches yet: a pod that matches its own term may start anywhere.
            TopologyKind::Affinity => count > 0 || (self_member && group.members.is_empty()),
            TopologyKind::Spread { max_skew, .. } => count + u32::from(self_member) <= minimum + max_skew,
        }
    }

    /// Whether a refusal by group `id` on a fixed domain lasts for the rest of the pass: counts
    /// only grow, so anti-affinity and hostname spread (minimum 0) never admit again.
    pub fn refusal_lasts(&self, id: GroupId, as_owner: bool) -> bool {
        let term = &self.groups[id].term;
        !as_owner
            || term.kind == TopologyKind::AntiAffinity
            || (matches!(term.kind, TopologyKind::Spread { .. }) && term.key == labels::HOSTNAME)
    }

    /// Whether no pod matching group `id` has been placed anywhere yet.
    pub fn is_empty(&self, id: GroupId) -> bool {
        self.groups[id].members.is_empty()
    }

    /// Among allowed domains, the one to narrow a new node to: the emptiest for spread and
    /// anti-affinity, the fullest for affinity; ties by name.
    pub fn preferred_domain(&self, groups: &[GroupId], allowed: &BTreeSet<String>) -> Option<String> {
        let score = |domain: &String| -> i64 {
            groups
                .iter()
                .map(|id| {
                    let group = &self.groups[*id];
                    let count = i64::from(group.members.get(domain).copied().unwrap_or(0));
                    if group.term.kind == TopologyKind::Affinity { -count } else { count }
                })
                .sum()
        };
        allowed.iter().min_by_key(|d| (score(d), (*d).clone())).cloned()
    }
}

/// One more pod in `domain`.
fn count_in(counts: &mut HashMap<String, u32>, domain: &str) {
    match counts.get_mut(domain) {
        Some(count) => *count += 1,
        None => {
            counts.insert(domain.to_owned(), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::pod::Selector;

    fn term(kind: TopologyKind, key: &str) -> TopologyTerm {
        let selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
            serde_json::from_value(serde_json::json!({"matchLabels": {"app": "web"}})).unwrap();
        TopologyTerm {
            kind,
            key: key.into(),
            selector: Selector::from_label_selector(&selector),
            namespaces: crate::scheduling::pod::Namespaces::only("default"),
            filter: NodeFilter::default(),
        }
    }

    fn zones() -> BTreeSet<String> {
        ["a", "b", "c"].map(String::from).into()
    }

    fn place(topology: &mut Topology, id: GroupId, zone: &str) {
        topology.record(&[id], &[id], |_| Some(zone), |_| true);
    }

    fn allowed(topology: &Topology, id: GroupId, self_member: bool, as_owner: bool) -> BTreeSet<String> {
        let minimum = topology.minimum(id);
        zones().into_iter().filter(|d| topology.admits(id, self_member, as_owner, d, minimum)).collect()
    }

    #[test]
    fn spread_allows_only_domains_within_skew() {
        let mut topology = Topology::default();
        let id =
            topology.group_of(&term(TopologyKind::Spread { max_skew: 1, min_domains: 1 }, labels::ZONE), |_| zones());
        assert_eq!(allowed(&topology, id, true, true), zones());
        place(&mut topology, id, "a");
        assert_eq!(allowed(&topology, id, true, true), ["b", "c"].map(String::from).into());
        assert_eq!(topology.preferred_domain(&[id], &zones()).as_deref(), Some("b"));
        // A zone no node the filter counts offers does not hold the minimum down, and a pod on a
        // node the filter does not pass is not counted.
        let mut narrowed = Topology::default();
        let spread = term(TopologyKind::Spread { max_skew: 1, min_domains: 1 }, labels::ZONE);
        let reachable = narrowed.group_of(&spread, |_| ["a", "b"].map(String::from).into());
        place(&mut narrowed, reachable, "a");
        place(&mut narrowed, reachable, "b");
        assert_eq!(narrowed.minimum(reachable), 1);
        narrowed.record(&[reachable], &[], |_| Some("a"), |_| false);
        narrowed.record(&[reachable], &[], |_| Some("c"), |_| false);
        assert_eq!(narrowed.minimum(reachable), 1);
        assert!(narrowed.admits(reachable, true, true, "a", 1));
        place(&mut topology, id, "b");
        assert!(!topology.refusal_lasts(id, true), "zone spread may admit again");
    }

    #[test]
    fn min_domains_forces_spreading_before_the_minimum_counts() {
        let mut topology = Topology::default();
        let id =
            topology.group_of(&term(TopologyKind::Spread { max_skew: 1, min_domains: 4 }, labels::ZONE), |_| zones());
        place(&mut topology, id, "a");
        place(&mut topology, id, "b");
        place(&mut topology, id, "c");
        // Only three domains exist, so the global minimum is taken as 0: no zone may grow to 2.
        assert!(allowed(&topology, id, true, true).is_empty());
    }

    #[test]
    fn affinity_and_anti_affinity() {
        let mut topology = Topology::default();
        let together = topology.group_of(&term(TopologyKind::Affinity, labels::ZONE), |_| zones());
        assert_eq!(allowed(&topology, together, true, true), zones());
        assert!(allowed(&topology, together, false, true).is_empty());
        place(&mut topology, together, "b");
        assert_eq!(allowed(&topology, together, true, true), ["b".to_string()].into());

        let apart = topology.group_of(&term(TopologyKind::AntiAffinity, labels::ZONE), |_| zones());
        place(&mut topology, apart, "a");
        assert_eq!(allowed(&topology, apart, true, true), ["b", "c"].map(String::from).into());
        // A pod without the term, matched by it, is repelled from the owner's domain too.
        assert_eq!(topology.repelling(&[apart]), [apart]);
        assert_eq!(allowed(&topology, apart, true, false), ["b", "c"].map(String::from).into());
        assert!(topology.refusal_lasts(apart, true));
    }
}
