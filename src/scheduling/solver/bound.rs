//! The pods already bound to nodes, counted into a run's topology groups before any decision:
//! each counts in the domains of its node, as a member of the groups whose selector matches it
//! and as the owner of its own anti-affinity terms.
//!
//! Counted from scratch, that is every bound pod of the cluster per run. Consolidation asks a
//! thousand questions of one cluster, each a run on the cluster without a few nodes; on a cluster
//! whose apps spread over zones the counting was nearly all of a question (3.5 ms of 10,000 bound
//! pods). So a question may come with a [`BoundTally`]: every term of the whole cluster with its
//! bound pods counted once, and what each node's pods added, which the run takes less the nodes
//! the question leaves out. The same goes for the domains of each term's key on the nodes
//! (zones, mostly), which a question would otherwise find again over every node.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    rc::Rc,
    sync::Arc,
};

use super::{
    ExistingNode, Input, ScheduledPod, Solver,
    domains::{node_values, single_value},
};
use crate::{
    apis::labels,
    scheduling::{
        pod::{NodeFilter, PodShape, Preference, TopologyTerm},
        topology::{GroupId, Role, Topology},
    },
};

/// The bound pods of a whole cluster counted into every topology term its pods hold (pending
/// and bound, required and preferred), with what each node's pods added. Built once per
/// consolidation pass (see `state::input::WholeInput`).
#[derive(Debug)]
pub struct BoundTally {
    /// The bound pods counted, for a question the tally does not cover.
    scheduled: Vec<ScheduledPod>,
    topology: Topology,
    /// Per node name, what its pods added.
    nodes: HashMap<Arc<str>, NodeShare>,
    /// Per key (but the hostname, a domain per node) and node filter of the tally's terms: how
    /// many of the nodes the filter lets count hold each value.
    node_domains: HashMap<(String, NodeFilter), BTreeMap<String, u32>>,
    /// The nodes by name, for what the nodes a question leaves out held.
    node_by_name: HashMap<String, Arc<ExistingNode>>,
}

/// What one node's bound pods added to a tally: per group and role, the node's domain on the
/// group's key and the pods counted there.
type NodeShare = HashMap<(GroupId, Role), (String, u32)>;

/// A question's bound pods as a [`BoundTally`] less the nodes in `gone`: an input carrying one
/// has as its `nodes` the tally's less `gone`, and leaves its `scheduled` empty (copying the
/// cluster's bound pods was a third of a question).
#[derive(Debug, Clone)]
pub struct CountedBound {
    pub whole: Arc<BoundTally>,
    /// The names of the nodes left out, each once.
    pub gone: Vec<String>,
}

impl CountedBound {
    /// The domains of a term's key on the tally's nodes less the nodes gone that its node filter
    /// lets count (what a run finds over the question's nodes); `None` when the tally did not
    /// count them (the hostname, or a term it does not hold).
    pub(super) fn node_domains(&self, term: &TopologyTerm) -> Option<BTreeSet<String>> {
        let counts = self.whole.node_domains.get(&(term.key.clone(), term.filter.clone()))?;
        let mut gone: HashMap<&str, u32> = HashMap::new();
        for node in self.gone.iter().filter_map(|name| self.whole.node_by_name.get(name)) {
            for value in node_values(node, term) {
                *gone.entry(value.as_str()).or_default() += 1;
            }
        }
        let staying = counts.iter().filter(|(value, held)| **held > gone.get(value.as_str()).copied().unwrap_or(0));
        Some(staying.map(|(value, _)| value.clone()).collect())
    }

    /// The tally's bound pods less those on the nodes gone.
    fn staying(&self) -> Vec<ScheduledPod> {
        let gone: HashSet<&str> = self.gone.iter().map(String::as_str).collect();
        self.whole.scheduled.iter().filter(|s| !gone.contains(&*s.node)).cloned().collect()
    }
}

impl BoundTally {
    /// Counts the bound pods of `input` into every term of its pods, pending and bound.
    pub fn of(input: &Input) -> Self {
        let mut topology = Topology::new(input.namespaces.clone());
        // The tally's own domains are never read: a question's groups take theirs from its nodes.
        let mut group_of = |term: &TopologyTerm| topology.group_of(term, |_| BTreeSet::new());
        // In the order a run meets them: pending pods' terms, their preferences, bound pods'.
        for term in input.pods.iter().flat_map(|pod| &pod.topology) {
            group_of(term);
        }
        for pod in input.pods.iter().chain(input.scheduled.iter().map(|s| &s.pod)) {
            for preference in &pod.preferences {
                if let Preference::Topology(term) = preference {
                    group_of(term);
                }
            }
        }
        let owned = owned_groups(&input.scheduled, group_of);
        let mut nodes: HashMap<Arc<str>, NodeShare> = HashMap::new();
        count_bound(&mut topology, &input.scheduled, &owned, &input.nodes, |node, id, domain, role| {
            let share = nodes.entry(node.clone()).or_default();
            share.entry((id, role)).or_insert_with(|| (domain.to_owned(), 0)).1 += 1;
        });
        let mut node_domains: HashMap<(String, NodeFilter), BTreeMap<String, u32>> = HashMap::new();
        for id in 0..topology.group_count() {
            let term = &topology.group(id).term;
            let key = (term.key.clone(), term.filter.clone());
            if term.key == labels::HOSTNAME || node_domains.contains_key(&key) {
                continue;
            }
            let mut counts = BTreeMap::new();
            for value in input.nodes.iter().flat_map(|node| node_values(node, term)) {
                *counts.entry(value.clone()).or_default() += 1;
            }
            node_domains.insert(key, counts);
        }
        let node_by_name = input.nodes.iter().map(|node| (node.name.clone(), node.clone())).collect();
        Self { scheduled: input.scheduled.clone(), topology, nodes, node_domains, node_by_name }
    }
}

impl Solver<'_> {
    /// Counts the input's bound pods into the run's groups, after registering the groups of
    /// their own terms (an anti-affinity term repels pods only while a group holds it).
    pub(super) fn count_bound_pods(&mut self) {
        let input = self.input;
        let staying;
        let scheduled = match &input.counted {
            None => &input.scheduled,
            Some(counted) if self.count_from_tally(counted) => return,
            Some(counted) => {
                staying = counted.staying();
                &staying
            }
        };
        let owned = owned_groups(scheduled, |term| self.group_of(term));
        // Without a single term, bound pods change nothing (the common case on a big cluster).
        if !self.topology.is_unused() {
            count_bound(&mut self.topology, scheduled, &owned, &input.nodes, |_, _, _, _| {});
        }
    }

    /// The counts of [`count_bound_pods`](Self::count_bound_pods) taken from a tally of the whole
    /// cluster less the nodes gone; false, with the tally's groups registered but nothing
    /// counted, when a term of the run is not the tally's (an input it was not built for).
    fn count_from_tally(&mut self, counted: &CountedBound) -> bool {
        let tally = &*counted.whole;
        // A group for every term of the tally, where a run from scratch has one for each term
        // its bound pods hold: the terms only pods of the nodes gone held decide nothing (their
        // owners are gone with them; nobody left is constrained by them).
        for id in 0..tally.topology.group_count() {
            self.group_of(&tally.topology.group(id).term);
        }
        let sources: Option<Vec<GroupId>> =
            (0..self.topology.group_count()).map(|id| tally.topology.id_of(&self.topology.group(id).term)).collect();
        let Some(sources) = sources else { return false };
        let mut less: HashMap<GroupId, Vec<(&str, Role, u32)>> = HashMap::new();
        let gone = counted.gone.iter().filter_map(|node| tally.nodes.get(node.as_str()));
        for ((id, role), (domain, pods)) in gone.flatten() {
            less.entry(*id).or_default().push((domain, *role, *pods));
        }
        for (id, source) in sources.into_iter().enumerate() {
            let less = less.get(&source).map_or(&[][..], Vec::as_slice);
            self.topology.count_from(id, tally.topology.group(source), less);
        }
        true
    }
}

/// The groups of each bound pod's own terms, looked up once per shape: replicas share one (the
/// pod cache keeps it once), and hashing every pod's terms was most of a question on a
/// zone-spread cluster.
fn owned_groups(scheduled: &[ScheduledPod], mut group_of: impl FnMut(&TopologyTerm) -> GroupId) -> Vec<Rc<[GroupId]>> {
    let mut by_shape: HashMap<*const PodShape, Rc<[GroupId]>> = HashMap::new();
    scheduled
        .iter()
        .map(|s| {
            by_shape
                .entry(Arc::as_ptr(&s.pod.shape))
                .or_insert_with(|| s.pod.topology.iter().map(&mut group_of).collect())
                .clone()
        })
        .collect()
}

/// Counts each bound pod into `topology`'s groups in its node's domains (`owned` are its own
/// terms' groups, as [`owned_groups`] finds them); a pod whose node is not among `nodes` counts
/// nowhere. `noted` hears each count with the pod's node.
fn count_bound<'a>(
    topology: &mut Topology,
    scheduled: &'a [ScheduledPod],
    owned: &[Rc<[GroupId]>],
    nodes: &'a [Arc<ExistingNode>],
    mut noted: impl FnMut(&'a Arc<str>, GroupId, &'a str, Role),
) {
    if scheduled.is_empty() {
        return;
    }
    let nodes_by_name: HashMap<&str, &ExistingNode> = nodes.iter().map(|n| (n.name.as_str(), &**n)).collect();
    let mut members_by_shape: HashMap<*const PodShape, Vec<GroupId>> = HashMap::new();
    for (ScheduledPod { pod, node: node_name }, owned) in scheduled.iter().zip(owned) {
        let members = members_by_shape
            .entry(Arc::as_ptr(&pod.shape))
            .or_insert_with(|| topology.memberships(&pod.namespace, &pod.labels));
        let node = nodes_by_name.get(&**node_name).copied();
        topology.record_noting(
            members,
            owned,
            |key| match node {
                Some(node) if key == labels::HOSTNAME => Some(node.name.as_str()),
                Some(node) => node.requirements.get(key).and_then(single_value),
                None => None,
            },
            |filter| node.is_some_and(|node| filter.passes(&node.requirements, node.registered, &node.taints)),
            |id, domain, role| noted(node_name, id, domain, role),
        );
    }
}
