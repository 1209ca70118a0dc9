//! Existing nodes (registered, or in flight as NodeClaims) as targets: taints, host ports, room,
//! labels and topology checked in order of cost.

use std::collections::BTreeSet;

use super::{
    Solver,
    domains::single_value,
    interner::ReqId,
    placement::{Accepted, Attempt, NodeRequirements, NodeView, Refusal},
    vectors::{accumulate, fits},
};
use crate::{
    apis::labels,
    scheduling::{bitset::BitSet, pod::HostPort, topology::Domain},
};

pub(super) struct NodeState {
    /// Interned when a pod first gets as far as comparing requirements with the node: most nodes
    /// of a big cluster refuse a batch's pods on taints or room before that.
    pub(super) requirements: Option<ReqId>,
    pub(super) free: Vec<i64>,
    pub(super) host_ports: Vec<HostPort>,
}

impl Solver<'_> {
    pub(super) fn ports_conflict(ports: &[HostPort], wanted: &[HostPort]) -> bool {
        wanted.iter().any(|wanted| ports.iter().any(|taken| taken.conflicts_with(wanted)))
    }

    pub(super) fn check_node(&mut self, attempt: &Attempt, node: usize) -> Result<Accepted, Refusal> {
        let input = self.input;
        let info = &input.pods[attempt.pod];
        let existing = &input.nodes[node];
        if info.untolerated_taint(&existing.taints, attempt.soft_taints).is_some() {
            return Err(Refusal::permanent("a taint is not tolerated"));
        }
        let state = &self.nodes[node];
        if Self::ports_conflict(&state.host_ports, &info.host_ports) {
            return Err(Refusal::permanent("host port in use"));
        }
        if !fits(&self.needed(attempt), &state.free) {
            return Err(Refusal::permanent("not enough room"));
        }
        let node_requirements = match state.requirements {
            Some(id) => id,
            None => {
                let id = self.interner.intern_ref(&existing.requirements);
                self.nodes[node].requirements = Some(id);
                id
            }
        };
        self.interner
            .merge(node_requirements, attempt.requirements, existing.registered)
            .map_err(Refusal::permanent)?;
        let (_, domains) = self.check_topology(attempt, node_requirements, |key, _| {
            if key == labels::HOSTNAME {
                return Domain::Fixed(existing.name.clone());
            }
            match existing.requirements.get(key).and_then(single_value) {
                Some(value) => Domain::Fixed(value.to_owned()),
                None => Domain::Open(BTreeSet::new()),
            }
        })?;
        Ok(Accepted { requirements: node_requirements, candidates: BitSet::empty(0), total: Vec::new(), domains })
    }

    pub(super) fn commit_node(&mut self, attempt: &Attempt, node: usize, accepted: Accepted) {
        let info = &self.input.pods[attempt.pod];
        let state = &mut self.nodes[node];
        accumulate(&mut state.free, &self.pod_requests[attempt.pod], -1);
        state.host_ports.extend(info.host_ports.iter().cloned());
        let existing = &self.input.nodes[node];
        let view = NodeView {
            requirements: NodeRequirements::Shared(&existing.requirements),
            registered: existing.registered,
            taints: &existing.taints,
        };
        self.record(attempt, &accepted.domains, None, view);
    }
}
