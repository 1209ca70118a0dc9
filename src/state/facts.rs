//! What the simulation reads of each Node, parsed when the Node's event arrives rather than on
//! every batch: its labels as requirements and its allocatable resources. At 1,000 nodes,
//! parsing these per batch was most of building the solver's input.

use std::{collections::HashMap, sync::Arc};

use k8s_openapi::api::core::v1::Node;
use kube::{ResourceExt, runtime::watcher};

use crate::scheduling::{requirements::Requirements, resources::Resources};

/// A Node's parsed facts.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    /// Its labels as single-value requirements; shared with every batch.
    pub requirements: Arc<Requirements>,
    /// What it offers pods; `None` until it reports a parsable allocatable.
    pub allocatable: Option<Resources>,
}

impl NodeFacts {
    pub fn of(node: &Node) -> Self {
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        Self {
            requirements: Arc::new(Requirements::from_labels(node.labels())),
            allocatable: allocatable.and_then(|a| Resources::from_quantities(a).ok()),
        }
    }
}

/// Facts by Node name, kept by the node watch.
#[derive(Debug, Default)]
pub struct NodeFactsIndex {
    by_name: HashMap<String, Arc<NodeFacts>>,
    relisting: Option<HashMap<String, Arc<NodeFacts>>>,
}

impl NodeFactsIndex {
    /// An index of these nodes (for tests and benchmarks).
    pub fn of<'a>(nodes: impl IntoIterator<Item = &'a Arc<Node>>) -> Self {
        let by_name = nodes.into_iter().map(|node| (node.name_any(), Arc::new(NodeFacts::of(node)))).collect();
        Self { by_name, relisting: None }
    }

    pub fn handle(&mut self, event: &watcher::Event<Node>) {
        match event {
            watcher::Event::Apply(node) => {
                self.by_name.insert(node.name_any(), Arc::new(NodeFacts::of(node)));
            }
            watcher::Event::Delete(node) => {
                self.by_name.remove(&node.name_any());
            }
            watcher::Event::Init => self.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(node) => {
                self.relisting.get_or_insert_with(HashMap::new).insert(node.name_any(), Arc::new(NodeFacts::of(node)));
            }
            watcher::Event::InitDone => {
                if let Some(fresh) = self.relisting.take() {
                    self.by_name = fresh;
                }
            }
        }
    }

    /// The facts of `node`: kept ones, or parsed now for a node the index has not seen yet.
    pub fn of_node(&self, node: &Node) -> Arc<NodeFacts> {
        match self.by_name.get(&node.name_any()) {
            Some(facts) => facts.clone(),
            None => Arc::new(NodeFacts::of(node)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, zone: &str, cpu: &str) -> Node {
        serde_saphyr::from_str(&format!(
            "metadata: {{name: {name}, labels: {{topology.kubernetes.io/zone: {zone}}}}}\nstatus: {{allocatable: {{cpu: '{cpu}'}}}}"
        ))
        .expect("a Node")
    }

    #[test]
    fn facts_follow_the_node_and_a_relist() {
        let mut index = NodeFactsIndex::default();
        index.handle(&watcher::Event::Apply(node("n1", "a", "2")));
        let facts = index.of_node(&node("n1", "a", "2"));
        assert_eq!(facts.allocatable.as_ref().map(|a| a.get("cpu")), Some(2000));
        assert!(facts.requirements.get("topology.kubernetes.io/zone").is_some());
        index.handle(&watcher::Event::Apply(node("n1", "b", "4")));
        assert_eq!(index.of_node(&node("n1", "b", "4")).allocatable.as_ref().map(|a| a.get("cpu")), Some(4000));
        index.handle(&watcher::Event::Init);
        index.handle(&watcher::Event::InitApply(node("n2", "a", "1")));
        index.handle(&watcher::Event::InitDone);
        assert!(!index.by_name.contains_key("n1"));
        assert_eq!(*index.of_node(&node("n2", "a", "1")), NodeFacts::of(&node("n2", "a", "1")));
    }
}
