//! Which pods were told where they should schedule (the `Nominated` Event), so that a pod waiting
//! for the same node through many batches hears it once: a pending pod is placed again by every
//! batch until kube-scheduler binds it, on the node or in-flight NodeClaim it was placed on
//! before. Karpenter tells pods placed on existing and in-flight nodes too, and drops a repeat of
//! the same Event for the same pod within two minutes; stoker does the same. In memory: after a
//! restart a waiting pod is told once more.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// How long a pod is not told the same place again.
pub const RETELL_AFTER: Duration = Duration::from_secs(120);

/// Pod key → where it was last told to schedule, and when.
#[derive(Debug, Default)]
pub struct Told(Mutex<HashMap<String, (String, Instant)>>);

impl Told {
    /// The `(pod, place)` pairs whose pod was not told that place in the last [`RETELL_AFTER`],
    /// remembered as told at `now`.
    pub fn untold<'a>(
        &self,
        placements: impl IntoIterator<Item = (&'a str, String)>,
        now: Instant,
    ) -> Vec<(&'a str, String)> {
        let mut told = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        told.retain(|_, (_, at)| now.saturating_duration_since(*at) < RETELL_AFTER);
        placements
            .into_iter()
            .filter(|(pod, place)| {
                if told.get(*pod).is_some_and(|(told_place, _)| told_place == place) {
                    return false;
                }
                told.insert((*pod).to_owned(), (place.clone(), now));
                true
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_hears_a_place_once_until_it_changes_or_the_window_passes() {
        let told = Told::default();
        let start = Instant::now();
        let first = told.untold([("default/a", "nodeclaim/c1".to_owned()), ("default/b", "node/n1".to_owned())], start);
        assert_eq!(first.len(), 2);
        let later = start + Duration::from_secs(10);
        assert!(told.untold([("default/a", "nodeclaim/c1".to_owned())], later).is_empty(), "the same place: not again");
        let moved = told.untold([("default/a", "node/n2".to_owned())], later);
        assert_eq!(moved, [("default/a", "node/n2".to_owned())], "a new place is told");
        let after_window = later + RETELL_AFTER + Duration::from_secs(1);
        assert_eq!(
            told.untold([("default/b", "node/n1".to_owned())], after_window).len(),
            1,
            "told again after the window"
        );
        assert_eq!(told.0.lock().unwrap().len(), 1, "what the window passed is forgotten");
    }
}
