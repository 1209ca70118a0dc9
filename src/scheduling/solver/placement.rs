//! One pod's placement: its attempts (preferences relaxed one at a time, each alternative of its
//! node affinity), and the targets asked in order: existing nodes, claims opened in this pass,
//! then new claims from each NodePool by weight.

use std::borrow::Cow;

use super::{
    PreferencePolicy, Solver,
    interner::ReqId,
    vectors::{accumulate, plus},
};
use k8s_openapi::api::core::v1::Taint;

use crate::{
    apis::labels,
    scheduling::{
        bitset::BitSet,
        pod::{PodInfo, Preference, SoftTaints},
        requirements::Requirements,
        topology::GroupId,
    },
};

/// Why a target refused a pod. Refusals are the inner loop's common case, so their reasons are
/// static unless a person will read them (new NodeClaims, reported for unschedulable pods).
pub(super) struct Refusal {
    /// The reason cannot change for another pod of the same signature later in this pass.
    pub(super) permanent: bool,
    pub(super) reason: Cow<'static, str>,
}

impl Refusal {
    pub(super) fn permanent(reason: impl Into<Cow<'static, str>>) -> Self {
        Self { permanent: true, reason: reason.into() }
    }
    pub(super) fn transient(reason: impl Into<Cow<'static, str>>) -> Self {
        Self { permanent: false, reason: reason.into() }
    }
}

/// What one attempt asks of a target: the pod, one alternative of its requirements with some
/// preferences folded in, and its topology groups.
pub(super) struct Attempt {
    pub(super) pod: usize,
    pub(super) requirements: ReqId,
    /// Groups whose terms the pod must satisfy.
    pub(super) owned: Vec<GroupId>,
    /// Groups that count the pod.
    pub(super) members: Vec<GroupId>,
    /// The groups to check, by topology key: (group, whether the pod owns the term).
    pub(super) by_key: Vec<(String, Vec<(GroupId, bool)>)>,
    /// Room the first pod matching a hostname-affinity group must find for the pods that will
    /// have to join it, per group.
    pub(super) extra: Vec<(GroupId, Vec<i64>)>,
    /// Whether refusals may be remembered for the pod's signature (only for its first attempt).
    pub(super) remember: bool,
    /// Whether PreferNoSchedule taints keep the pod off (until the last relaxation).
    pub(super) soft_taints: SoftTaints,
}

impl Attempt {
    /// Whether the next replica of the pod's signature would meet exactly what this one did:
    /// nothing this placement recorded (topology counts, host ports, room held for a
    /// hostname-affinity group) changes the answer of any target, and no target was asked with
    /// relaxed preferences.
    pub(super) fn repeatable(&self, pod: &PodInfo) -> bool {
        self.remember
            && self.owned.is_empty()
            && self.members.is_empty()
            && self.by_key.is_empty()
            && self.extra.is_empty()
            && pod.host_ports.is_empty()
    }
}

/// Where a pod was placed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target {
    Node(usize),
    Claim(usize),
}

/// The domain chosen for each topology key, as (key, domain).
pub(super) type ChosenDomains = Vec<(String, String)>;

/// A placement that passed every check, ready to be committed.
pub(super) struct Accepted {
    pub(super) requirements: ReqId,
    pub(super) candidates: BitSet,
    pub(super) total: Vec<i64>,
    pub(super) domains: ChosenDomains,
}

impl Solver<'_> {
    /// Places one pod, relaxing preferences one at a time and trying each alternative of its
    /// node affinity at every step; PreferNoSchedule taints are tolerated last, and only when
    /// some target has one. Returns where it went with the attempt that put it there, or why
    /// nothing could take it.
    pub(super) fn place(&mut self, pod: usize, required_groups: &[GroupId]) -> Result<(Target, Attempt), String> {
        let info = &self.input.pods[pod];
        let members = self.topology.memberships(&info.namespace, &info.labels);
        let repelled_by = self.topology.repelling(&members);
        let preferences: &[Preference] = match self.input.policies.preferences {
            PreferencePolicy::Respect => &info.preferences,
            PreferencePolicy::Ignore => &[],
        };
        let relaxations = preferences.len() + usize::from(self.soft_taints_exist);
        let mut last_reason = String::new();
        for relaxed in 0..=relaxations {
            let kept = preferences.len().saturating_sub(relaxed);
            let soft_taints = if relaxed > preferences.len() { SoftTaints::Tolerated } else { SoftTaints::Avoided };
            for (alternative, requirements) in info.requirements.iter().enumerate() {
                let mut owned = required_groups.to_vec();
                let mut extra_requirements: Option<Requirements> = None;
                for preference in &preferences[..kept] {
                    match preference {
                        Preference::Requirements(extra) => {
                            extra_requirements =
                                Some(extra_requirements.map_or_else(|| extra.clone(), |r| r.intersect(extra)))
                        }
                        Preference::Topology(term) => owned.push(self.group_of(term)),
                    }
                }
                let requirements = match extra_requirements {
                    Some(extra) => self.interner.intern(requirements.intersect(&extra)),
                    None => self.interner.intern_ref(requirements),
                };
                let mut attempt =
                    self.attempt(pod, requirements, owned, &members, &repelled_by, relaxed == 0 && alternative == 0);
                attempt.soft_taints = soft_taints;
                match self.place_attempt(&attempt) {
                    Ok(target) => {
                        self.consume_affinity(&attempt);
                        return Ok((target, attempt));
                    }
                    Err(reason) => last_reason = reason,
                }
            }
        }
        Err(last_reason)
    }

    pub(super) fn attempt(
        &self,
        pod: usize,
        requirements: ReqId,
        owned: Vec<GroupId>,
        members: &[GroupId],
        repelled_by: &[GroupId],
        remember: bool,
    ) -> Attempt {
        let mut by_key: Vec<(String, Vec<(GroupId, bool)>)> = Vec::new();
        let tagged = owned.iter().map(|id| (*id, true)).chain(repelled_by.iter().map(|id| (*id, false)));
        for (id, as_owner) in tagged {
            let key = &self.topology.group(id).term.key;
            match by_key.iter_mut().find(|(k, _)| k == key) {
                Some((_, groups)) => groups.push((id, as_owner)),
                None => by_key.push((key.clone(), vec![(id, as_owner)])),
            }
        }
        // The first pod matching a hostname-affinity group decides the node every pod with that
        // affinity must join: it must find room for them there.
        let extra = members
            .iter()
            .chain(&owned)
            .filter(|id| self.topology.is_empty(**id))
            .filter_map(|id| {
                let pending = self.affinity_pending.get(id)?;
                let own = if owned.contains(id) { &self.pod_requests[pod][..] } else { &[] };
                let rest: Vec<i64> =
                    pending.iter().enumerate().map(|(i, p)| (p - own.get(i).copied().unwrap_or(0)).max(0)).collect();
                rest.iter().any(|r| *r > 0).then_some((*id, rest))
            })
            .fold(Vec::<(GroupId, Vec<i64>)>::new(), |mut all, (id, rest)| {
                if all.iter().all(|(seen, _)| *seen != id) {
                    all.push((id, rest));
                }
                all
            });
        Attempt {
            pod,
            requirements,
            owned,
            members: members.to_vec(),
            by_key,
            extra,
            remember,
            soft_taints: SoftTaints::Avoided,
        }
    }

    /// A placed pod no longer needs the room its hostname-affinity group reserved for it.
    pub(super) fn consume_affinity(&mut self, attempt: &Attempt) {
        for id in &attempt.owned {
            if let Some(pending) = self.affinity_pending.get_mut(id) {
                accumulate(pending, &self.pod_requests[attempt.pod], -1);
            }
        }
    }

    pub(super) fn place_attempt(&mut self, attempt: &Attempt) -> Result<Target, String> {
        for node in 0..self.nodes.len() {
            if attempt.remember && self.dead_nodes[node] {
                continue;
            }
            match self.check_node(attempt, node) {
                Ok(accepted) => {
                    self.commit_node(attempt, node, accepted);
                    return Ok(Target::Node(node));
                }
                Err(refusal) if refusal.permanent && attempt.remember => self.dead_nodes[node] = true,
                Err(_) => {}
            }
        }
        if attempt.remember && self.dead_claims.len() < self.claims.len() {
            self.dead_claims.resize(self.claims.len(), false);
        }
        for claim in 0..self.claims.len() {
            if attempt.remember && self.dead_claims[claim] {
                continue;
            }
            match self.check_claim(attempt, claim) {
                Ok(accepted) => {
                    self.commit_claim(attempt, claim, accepted);
                    return Ok(Target::Claim(claim));
                }
                Err(refusal) if refusal.permanent && attempt.remember => self.dead_claims[claim] = true,
                Err(_) => {}
            }
        }
        let mut reasons = Vec::new();
        for pool in self.pools_by_weight.clone() {
            match self.check_new_claim(attempt, pool) {
                Ok(accepted) => {
                    self.open_claim(attempt, pool, accepted);
                    return Ok(Target::Claim(self.claims.len() - 1));
                }
                Err(refusal) => reasons.push(format!("{}: {}", self.input.pools[pool].name, refusal.reason)),
            }
        }
        if reasons.is_empty() {
            return Err("no NodePool exists".into());
        }
        Err(format!("no NodePool can launch a node for it: {}", reasons.join("; ")))
    }

    /// The pod's requests plus the room its hostname-affinity group needs, if it is the first.
    pub(super) fn needed(&self, attempt: &Attempt) -> Cow<'_, [i64]> {
        if attempt.extra.is_empty() {
            return Cow::Borrowed(&self.pod_requests[attempt.pod]);
        }
        Cow::Owned(
            attempt.extra.iter().fold(self.pod_requests[attempt.pod].clone(), |sum, (_, extra)| plus(&sum, extra)),
        )
    }

    /// Counts a placed pod in its groups: in the chosen `domains`, on a node named `hostname`
    /// (a new claim's) or by its own label, and described by `node` for the groups' filters.
    pub(super) fn record(
        &mut self,
        attempt: &Attempt,
        domains: &[(String, String)],
        hostname: Option<&str>,
        node: NodeView,
    ) {
        let requirements = match node.requirements {
            NodeRequirements::Interned(id) => self.interner.get(id),
            NodeRequirements::Shared(requirements) => requirements,
        };
        self.topology.record(
            &attempt.members,
            &attempt.owned,
            |key| match hostname {
                Some(hostname) if key == labels::HOSTNAME => Some(hostname),
                _ => domains.iter().find(|(k, _)| k == key).map(|(_, d)| d.as_str()),
            },
            |filter| filter.passes(requirements, node.registered, node.taints),
        );
    }
}

/// What a topology filter reads of the node a pod was placed on.
pub(super) struct NodeView<'a> {
    pub(super) requirements: NodeRequirements<'a>,
    /// Whether the requirements are a registered node's labels (a key they lack is absent).
    pub(super) registered: bool,
    pub(super) taints: &'a [Taint],
}

pub(super) enum NodeRequirements<'a> {
    /// A claim's requirements, interned.
    Interned(ReqId),
    /// A node's own.
    Shared(&'a Requirements),
}
