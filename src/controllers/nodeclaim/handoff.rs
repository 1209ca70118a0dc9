//! The hand-off from the provisioner to the NodeClaim controller within one leader term: which
//! claims are new, so their first launch can skip looking for an instance launched before.

use std::{collections::HashMap, sync::Arc, time::Duration};

use kube::ResourceExt;

use crate::{
    apis::NodeClaim,
    cloudprovider::{Followers, PriorLaunches},
};

/// NodeClaims the provisioner of this leader term is creating or created, and nobody has tried
/// to launch yet: no instance can exist for them, so their first launch skips looking for one (a
/// DescribeInstances call on the way to CreateFleet). A name is noted before its POST, so a
/// watch event that overtakes the POST's response waits for the UID instead of taking the slow
/// path. Each term starts with an empty set, because another leader may have launched for
/// anything older.
#[derive(Debug, Clone, Default)]
pub struct NewClaims(Arc<NewClaimsState>);

#[derive(Debug, Default)]
struct NewClaimsState {
    claims: std::sync::Mutex<HashMap<String, New>>,
    settled: tokio::sync::Notify,
}

#[derive(Debug)]
struct New {
    /// The UID the apiserver gave the claim, `None` while its POST is in flight.
    uid: Option<String>,
    noted: std::time::Instant,
}

/// How long a launch waits for the POST of a claim whose watch event came first; also how long
/// a claim not launched yet is expected to launch (one deleted first never will).
const CREATION_WAIT: Duration = Duration::from_secs(10);

impl NewClaims {
    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, New>> {
        self.0.claims.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Just before the claim's POST.
    pub fn creating(&self, name: &str) {
        self.claims().insert(name.to_owned(), New { uid: None, noted: std::time::Instant::now() });
    }

    /// After the POST: the UID the claim got, or `None` when it was not created.
    pub fn created(&self, name: &str, uid: Option<String>) {
        let mut claims = self.claims();
        match (uid, claims.get_mut(name)) {
            (Some(uid), Some(new)) => new.uid = Some(uid),
            (Some(uid), None) => {
                claims.insert(name.to_owned(), New { uid: Some(uid), noted: std::time::Instant::now() });
            }
            (None, _) => {
                claims.remove(name);
            }
        }
        drop(claims);
        self.0.settled.notify_waiters();
    }

    /// Whether claims the provisioner created moments ago are still to launch for the first
    /// time: a launch that leaves none is the last of its decision.
    pub(super) fn followers(&self) -> Followers {
        let recent = self.claims().values().any(|new| new.noted.elapsed() < CREATION_WAIT);
        if recent { Followers::Expected } else { Followers::NoneExpected }
    }

    /// What is known of earlier launches for the claim; a claim is new only once.
    pub(super) async fn take(&self, claim: &NodeClaim) -> PriorLaunches {
        let name = claim.name_any();
        let deadline = tokio::time::Instant::now() + CREATION_WAIT;
        loop {
            // Registered before the state is read, so a change in between still wakes it.
            let settled = self.0.settled.notified();
            {
                let mut claims = self.claims();
                match claims.get(&name).map(|new| &new.uid) {
                    None => return PriorLaunches::Unknown,
                    Some(Some(uid)) if claim.uid().as_ref() == Some(uid) => {
                        claims.remove(&name);
                        return PriorLaunches::None;
                    }
                    // Another object under the name: whatever it is, it is not the one created.
                    Some(Some(_)) => return PriorLaunches::Unknown,
                    Some(None) => {}
                }
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return PriorLaunches::Unknown;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, uid: &str) -> NodeClaim {
        let mut claim: NodeClaim = serde_saphyr::from_str(&format!(
            "apiVersion: stoker.dev/v1alpha1\nkind: NodeClaim\nmetadata: {{name: {name}}}\nspec:\n  nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}\n"
        ))
        .expect("a NodeClaim");
        claim.metadata.uid = Some(uid.into());
        claim
    }

    #[tokio::test]
    async fn a_launch_that_overtakes_its_claims_creation_waits_for_it() {
        let new = NewClaims::default();
        new.creating("spot-abcde");
        let waiting = tokio::spawn({
            let new = new.clone();
            async move { new.take(&claim("spot-abcde", "uid-1")).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the launch waits while the POST is in flight");
        new.created("spot-abcde", Some("uid-1".into()));
        assert_eq!(waiting.await.expect("joined"), PriorLaunches::None);
        assert_eq!(new.followers(), Followers::NoneExpected, "the only claim created has launched");
        assert_eq!(new.take(&claim("spot-abcde", "uid-1")).await, PriorLaunches::Unknown, "new only once");
    }

    #[tokio::test]
    async fn launches_are_followed_until_every_claim_of_the_decision_has_launched() {
        let new = NewClaims::default();
        for (name, uid) in [("spot-aaaaa", "uid-a"), ("spot-bbbbb", "uid-b")] {
            new.creating(name);
            new.created(name, Some(uid.into()));
        }
        assert_eq!(new.take(&claim("spot-aaaaa", "uid-a")).await, PriorLaunches::None);
        assert_eq!(new.followers(), Followers::Expected);
        assert_eq!(new.take(&claim("spot-bbbbb", "uid-b")).await, PriorLaunches::None);
        assert_eq!(new.followers(), Followers::NoneExpected);
    }

    #[tokio::test]
    async fn claims_this_term_did_not_create_may_have_an_instance() {
        let new = NewClaims::default();
        assert_eq!(new.take(&claim("spot-older", "uid-0")).await, PriorLaunches::Unknown);
        new.creating("spot-taken");
        new.created("spot-taken", None);
        assert_eq!(new.take(&claim("spot-taken", "uid-2")).await, PriorLaunches::Unknown, "its POST failed");
        new.creating("spot-fghij");
        new.created("spot-fghij", Some("uid-3".into()));
        assert_eq!(new.take(&claim("spot-fghij", "uid-other")).await, PriorLaunches::Unknown, "another object");
        assert_eq!(new.take(&claim("spot-fghij", "uid-3")).await, PriorLaunches::None);
    }
}
