//! The nodes the provisioner's simulations placed pending pods on, and until when. Those pods
//! are on their way there (kube-scheduler binds them when it gets to them, after its back-off),
//! so emptiness leaves such a node alone meanwhile: in a burst of hundreds of pods a node can
//! stay empty past `consolidateAfter` while its pods wait their turn, and removing it only
//! launches another for them. Karpenter nominates nodes the same way, for twice its batch's
//! longest wait. In memory: after a restart the first batch nominates again.

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, PoisonError},
};

use chrono::{DateTime, TimeDelta, Utc};

use crate::scheduling::solver::{Input, Plan};

/// How long a nomination lasts: twice the longest a batch waits (10 s), so a node stays
/// nominated while pods wait for it and every batch places them there again.
pub const WINDOW: TimeDelta = TimeDelta::seconds(20);

/// Node name → nominated until.
#[derive(Debug, Default)]
pub struct Nominations(Mutex<HashMap<String, DateTime<Utc>>>);

impl Nominations {
    /// Nominates, until `now` + [`WINDOW`], every node `plan` placed a real pod of `input` on
    /// (a CapacityBuffer's virtual pods hold their room by other means).
    pub fn record(&self, input: &Input, plan: &Plan, now: DateTime<Utc>) {
        let virtual_pods: HashSet<&str> =
            input.pods.iter().filter(|pod| pod.placeholder).map(|pod| pod.key.as_str()).collect();
        let until = now + WINDOW;
        let mut nominated = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        nominated.retain(|_, until| *until > now);
        for (pod, node) in &plan.existing {
            if !virtual_pods.contains(pod.as_str()) {
                nominated.insert(node.clone(), until);
            }
        }
    }

    /// The nodes nominated at `now`.
    pub fn at(&self, now: DateTime<Utc>) -> HashSet<String> {
        let nominated = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        nominated.iter().filter(|(_, until)| **until > now).map(|(node, _)| node.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::scheduling::solver::tests::pod_with;

    #[test]
    fn nodes_holding_pending_pods_stay_nominated_for_the_window() {
        let mut placeholder = pod_with("buffer-0", "1", "1Gi", "");
        placeholder.placeholder = true;
        let input = Input {
            pods: vec![Arc::new(pod_with("web-0", "1", "1Gi", "")), Arc::new(placeholder)],
            ..Default::default()
        };
        let placed = |pairs: &[(&str, &str)]| Plan {
            existing: pairs.iter().map(|(pod, node)| ((*pod).to_owned(), (*node).to_owned())).collect(),
            ..Default::default()
        };
        let nominations = Nominations::default();
        let start = Utc::now();
        nominations.record(&input, &placed(&[("default/web-0", "a"), ("default/buffer-0", "b")]), start);
        assert_eq!(nominations.at(start), HashSet::from(["a".to_owned()]), "a buffer's pod nominates nothing");
        // The next batch places the pod on "a" again: the nomination runs on from then.
        nominations.record(&input, &placed(&[("default/web-0", "a")]), start + TimeDelta::seconds(15));
        assert!(nominations.at(start + TimeDelta::seconds(30)).contains("a"));
        assert!(nominations.at(start + TimeDelta::seconds(36)).is_empty(), "the window has passed");
    }
}
