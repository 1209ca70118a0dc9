//! The nodes the provisioner's simulations placed pending pods on, and those a disruption's plan
//! moves its candidates' pods onto, and until when. Those pods are on their way there
//! (kube-scheduler binds them when it gets to them, after its back-off, or once a drain evicts
//! them), so emptiness leaves such a node alone meanwhile: in a burst of hundreds of pods a node can
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
        self.hold(plan.real_placements(input).map(|(_, node)| node.clone()), now, now + WINDOW);
    }

    /// Nominates `nodes` until `until` (a longer nomination already held stands): the nodes a
    /// disruption's plan moves its candidates' pods onto, while the drain evicts them.
    pub fn hold(&self, nodes: impl IntoIterator<Item = String>, now: DateTime<Utc>, until: DateTime<Utc>) {
        let mut nominated = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        nominated.retain(|_, until| *until > now);
        for node in nodes {
            let held = nominated.entry(node).or_insert(until);
            *held = (*held).max(until);
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

    #[test]
    fn a_disruptions_hold_outlasts_the_batches_window() {
        let nominations = Nominations::default();
        let start = Utc::now();
        nominations.hold(["a".to_owned(), "b".to_owned()], start, start + TimeDelta::seconds(60));
        let input = Input { pods: vec![Arc::new(pod_with("web-0", "1", "1Gi", ""))], ..Default::default() };
        let plan = Plan { existing: vec![("default/web-0".to_owned(), "a".to_owned())], ..Default::default() };
        // A batch placing a pod on "a" does not cut its hold short.
        nominations.record(&input, &plan, start + TimeDelta::seconds(5));
        let later = start + TimeDelta::seconds(40);
        assert_eq!(nominations.at(later), HashSet::from(["a".to_owned(), "b".to_owned()]));
        assert!(nominations.at(start + TimeDelta::seconds(61)).is_empty());
    }
}
