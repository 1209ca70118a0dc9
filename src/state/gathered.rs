//! The caches' contents at one moment, for a decision that reads several of them together. The
//! pod index and node facts are not copied: they are read-locked only while deciding, since no
//! await may hold their locks.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::Node, policy::v1::PodDisruptionBudget};

use super::{
    ClusterState,
    buffers::held,
    cache::CachedPod,
    facts::NodeFactsIndex,
    input::{Snapshot, solver_input},
    pods::PodIndex,
    volumes::VolumeTopology,
};
use crate::{
    apis::{NodeClaim, NodePool},
    scheduling::{
        catalog::InstanceType,
        pod::{NamespaceLabels, PodInfo},
        solver::Policies,
    },
};

/// Copies (of `Arc`s) of the caches; `stoker disrupt` fills one from files instead.
#[derive(Debug, Default)]
pub struct Gathered {
    pub claims: Vec<Arc<NodeClaim>>,
    pub nodes: Vec<Arc<Node>>,
    pub pods: Vec<Arc<CachedPod>>,
    pub budgets: Vec<Arc<PodDisruptionBudget>>,
    pub daemonsets: Vec<DaemonSet>,
    pub namespaces: Arc<NamespaceLabels>,
    pub volumes: VolumeTopology,
    /// CapacityBuffers' virtual pods.
    pub virtual_pods: Vec<Arc<PodInfo>>,
}

impl Gathered {
    pub fn of(state: &ClusterState) -> Self {
        Self {
            claims: state.claims.state(),
            nodes: state.nodes.state(),
            pods: state.pods.state(),
            budgets: state.budgets.state(),
            daemonsets: state.daemonsets.state().iter().map(|d| (**d).clone()).collect(),
            namespaces: Arc::new(state.namespace_labels()),
            volumes: state.volume_topology(),
            virtual_pods: state.virtual_pods(),
        }
    }

    /// Keeps only the virtual pods the cluster holds room for now, and returns the nodes (and
    /// in-flight NodeClaims) holding it: what a disruption must not take away. A buffer not yet
    /// provisioned is the provisioner's to launch for, and must not make every disruption
    /// replace nodes for it.
    pub fn hold_buffer_room(
        &mut self,
        index: &PodIndex,
        facts: &NodeFactsIndex,
        pools: &[Arc<NodePool>],
        instance_types: &BTreeMap<String, Arc<[InstanceType]>>,
        policies: Policies,
    ) -> HashSet<String> {
        if self.virtual_pods.is_empty() {
            return HashSet::new();
        }
        let input = solver_input(&self.snapshot(index, facts, pools, instance_types, policies)).input;
        let held = held(&input);
        self.virtual_pods.retain(|pod| held.pods.contains(&pod.key));
        held.hosts
    }

    /// The pods bound to each node.
    pub fn pods_by_node(&self) -> HashMap<&str, Vec<&CachedPod>> {
        let mut by_node: HashMap<&str, Vec<&CachedPod>> = HashMap::new();
        for pod in &self.pods {
            if let Some(node) = pod.node_name.as_deref() {
                by_node.entry(node).or_default().push(pod);
            }
        }
        by_node
    }

    /// The solver's input source over these contents.
    pub fn snapshot<'a>(
        &'a self,
        index: &'a PodIndex,
        facts: &'a NodeFactsIndex,
        pools: &'a [Arc<NodePool>],
        instance_types: &'a BTreeMap<String, Arc<[InstanceType]>>,
        policies: Policies,
    ) -> Snapshot<'a> {
        Snapshot {
            pods: index,
            nodes: &self.nodes,
            facts,
            claims: &self.claims,
            pools,
            daemonsets: &self.daemonsets,
            instance_types,
            policies,
            namespaces: self.namespaces.clone(),
            volumes: &self.volumes,
            expected_pods: &[],
            virtual_pods: &self.virtual_pods,
        }
    }
}
