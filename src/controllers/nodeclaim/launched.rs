//! Instances this leader term launched, by NodeClaim UID, until the claim's cached copy can be
//! expected to show them. Every write of a launch (labels, then status) queues a reconcile of the
//! claim, and the queued one can run before the watch has delivered the status write: it reads a
//! claim that looks unlaunched. Asking the cloud provider again is safe (the instance is found by
//! its tags and adopted) but costs a DescribeInstances per claim and holds the claim's
//! registration back meanwhile; in a burst of 500 claims 430 such lookups were measured. So a
//! launch first asks here: a launch already written waits for the cache, one whose writes failed
//! writes the instance it has.
//!
//! In memory for the term, as the launch back-off is: a new leader asks the cloud provider, which
//! adopts whatever was launched before.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

use crate::cloudprovider::Instance;

/// How long a launch is remembered: far longer than a watch takes to deliver its writes.
const KEPT: Duration = Duration::from_secs(300);

/// What this term knows of a claim's launch.
#[derive(Debug, Clone, PartialEq)]
pub enum Known {
    /// Launched, but its labels and status are not written yet (a write failed).
    Launched(Box<Instance>),
    /// Launched and written: a claim read without it is a stale copy.
    Recorded,
}

#[derive(Debug)]
struct Entry {
    known: Known,
    at: Instant,
}

/// Launches by claim UID.
#[derive(Debug, Default)]
pub struct Launches(Mutex<HashMap<String, Entry>>);

impl Launches {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What is known of the claim's launch, if it is recent.
    pub fn recall(&self, uid: &str) -> Option<Known> {
        self.recall_at(uid, Instant::now())
    }

    /// The cloud provider launched `instance` for the claim.
    pub fn launched(&self, uid: &str, instance: &Instance) {
        self.remember(uid, Known::Launched(Box::new(instance.clone())), Instant::now());
    }

    /// The claim's labels and status now name its instance.
    pub fn recorded(&self, uid: &str) {
        self.remember(uid, Known::Recorded, Instant::now());
    }

    fn recall_at(&self, uid: &str, now: Instant) -> Option<Known> {
        self.entries().get(uid).filter(|entry| now - entry.at < KEPT).map(|entry| entry.known.clone())
    }

    fn remember(&self, uid: &str, known: Known, now: Instant) {
        let mut entries = self.entries();
        entries.retain(|_, entry| now - entry.at < KEPT);
        entries.insert(uid.to_owned(), Entry { known, at: now });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str) -> Instance {
        Instance { capacity_type: "on-demand".into(), state: "pending".into(), ..Instance::example(id) }
    }

    #[test]
    fn a_launch_is_remembered_until_written_and_then_for_a_while() {
        let launches = Launches::default();
        assert_eq!(launches.recall("uid-a"), None, "nothing launched yet");
        launches.launched("uid-a", &instance("i-a"));
        let launched = Known::Launched(Box::new(instance("i-a")));
        assert_eq!(launches.recall("uid-a"), Some(launched), "its writes are made from it next time");
        assert_eq!(launches.recall("uid-b"), None, "by claim");
        launches.recorded("uid-a");
        assert_eq!(launches.recall("uid-a"), Some(Known::Recorded));
        let later = Instant::now() + KEPT;
        assert_eq!(launches.recall_at("uid-a", later), None, "long enough for any watch: the cloud provider is asked");
        launches.remember("uid-b", Known::Recorded, later);
        assert_eq!(launches.entries().len(), 1, "old entries go as new ones come");
    }
}
