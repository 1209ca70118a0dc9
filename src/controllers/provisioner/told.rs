//! Which pods were told where they should schedule (the `Nominated` Event), so that a pod waiting
//! for the same node through many batches hears it once: a pending pod is placed again by every
//! batch until kube-scheduler binds it, on the node or in-flight NodeClaim it was placed on
//! before. Karpenter tells pods placed on existing and in-flight nodes too, and drops a repeat of
//! the same Event for the same pod (by UID) within two minutes; stoker does the same. In memory:
//! after a restart a waiting pod is told once more.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use kube::ResourceExt;

use crate::{apis::NodeClaim, scheduling::solver::Input};

/// How long a pod is not told the same place again.
pub const RETELL_AFTER: Duration = Duration::from_secs(120);

/// Pod key → the pod's UID, where it was last told to schedule, and when. The UID tells a pod
/// from the one recreated under its name (a StatefulSet's), which has heard nothing yet.
#[derive(Debug, Default)]
pub struct Told(Mutex<HashMap<String, (String, String, Instant)>>);

/// A pod to tell where it should schedule: its key, its UID and the place.
pub type Placement<'a> = (&'a str, &'a str, String);

impl Told {
    /// The `(pod, place)` pairs whose pod was not told that place in the last [`RETELL_AFTER`],
    /// remembered as told at `now`.
    pub fn untold<'a>(
        &self,
        placements: impl IntoIterator<Item = Placement<'a>>,
        now: Instant,
    ) -> Vec<(&'a str, String)> {
        let mut told = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        told.retain(|_, (_, _, at)| now.saturating_duration_since(*at) < RETELL_AFTER);
        placements
            .into_iter()
            .filter(|(pod, uid, place)| {
                if told.get(*pod).is_some_and(|(told_uid, told_place, _)| told_uid == uid && told_place == place) {
                    return false;
                }
                told.insert((*pod).to_owned(), ((*uid).to_owned(), place.clone(), now));
                true
            })
            .map(|(pod, _, place)| (pod, place))
            .collect()
    }
}

/// How a node the simulation placed pods on is named to them: by its NodeClaim whether or not
/// the claim's node is up (so a pod waiting through the registration is not told again for it),
/// else as a node (one stoker did not launch).
pub struct Places<'a> {
    /// Node name → the name of the claim that launched it.
    claim_of: HashMap<&'a str, String>,
    registered: HashSet<&'a str>,
}

impl<'a> Places<'a> {
    /// The places of a batch: the cluster's claims and the simulation's input (which nodes are up).
    pub fn of(claims: &'a [Arc<NodeClaim>], input: &'a Input) -> Self {
        let claim_of = claims
            .iter()
            .filter_map(|claim| Some((claim.status.as_ref()?.node_name.as_deref()?, claim.name_any())))
            .collect();
        let registered = input.nodes.iter().filter(|node| node.registered).map(|node| node.name.as_str()).collect();
        Self { claim_of, registered }
    }

    /// `nodeclaim/NAME` or `node/NAME` for a node of the simulation's input (an in-flight claim
    /// is in it under its own name).
    pub fn of_node(&self, node: &str) -> String {
        match self.claim_of.get(node) {
            Some(claim) => format!("nodeclaim/{claim}"),
            None if self.registered.contains(node) => format!("node/{node}"),
            None => format!("nodeclaim/{node}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::solver::ExistingNode;

    #[test]
    fn a_node_is_named_by_its_claim_whether_up_or_in_flight_else_as_a_node() {
        let claim: NodeClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "stoker.dev/v1alpha1", "kind": "NodeClaim",
            "metadata": {"name": "pool-abcde"},
            "spec": {"nodeClassRef": {"group": "stoker.dev", "kind": "EC2NodeClass", "name": "default"}, "requirements": []},
            "status": {"nodeName": "i-0123"}
        }))
        .expect("a claim");
        let node = |name: &str, registered: bool| {
            Arc::new(ExistingNode {
                name: name.into(),
                requirements: Arc::default(),
                registered,
                taints: vec![],
                free: Default::default(),
                host_ports: vec![],
            })
        };
        let input = Input {
            nodes: vec![node("i-0123", true), node("other-node", true), node("pool-fghij", false)],
            ..Default::default()
        };
        let claims = [Arc::new(claim)];
        let places = Places::of(&claims, &input);
        assert_eq!(places.of_node("i-0123"), "nodeclaim/pool-abcde", "a claim's registered node");
        assert_eq!(places.of_node("pool-fghij"), "nodeclaim/pool-fghij", "an in-flight claim");
        assert_eq!(places.of_node("other-node"), "node/other-node", "a node stoker did not launch");
    }

    #[test]
    fn a_pod_hears_a_place_once_until_it_changes_or_the_window_passes() {
        let told = Told::default();
        let start = Instant::now();
        let first = told
            .untold([("default/a", "u1", "nodeclaim/c1".to_owned()), ("default/b", "u2", "node/n1".to_owned())], start);
        assert_eq!(first.len(), 2);
        let later = start + Duration::from_secs(10);
        assert!(
            told.untold([("default/a", "u1", "nodeclaim/c1".to_owned())], later).is_empty(),
            "the same place: not again"
        );
        let moved = told.untold([("default/a", "u1", "node/n2".to_owned())], later);
        assert_eq!(moved, [("default/a", "node/n2".to_owned())], "a new place is told");
        let recreated = told.untold([("default/a", "u3", "node/n2".to_owned())], later);
        assert_eq!(
            recreated,
            [("default/a", "node/n2".to_owned())],
            "a pod recreated under the name has heard nothing"
        );
        let after_window = later + RETELL_AFTER + Duration::from_secs(1);
        assert_eq!(
            told.untold([("default/b", "u2", "node/n1".to_owned())], after_window).len(),
            1,
            "told again after the window"
        );
        assert_eq!(told.0.lock().unwrap().len(), 1, "what the window passed is forgotten");
    }
}
