//! Failed launches, per NodeClaim: when the next attempt may start. Exponential with jitter, so a
//! claim that keeps failing (throttling, a permission missing, a template refused) retries less
//! and less often, and a thousand claims failing together do not retry together. Any reconcile
//! that comes earlier (the status write reporting the failure triggers one at once) waits.
//!
//! Kept in memory by the leader's term: a new leader starts every claim afresh, which costs one
//! early attempt per claim.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

/// The first retry comes after about this long.
const FIRST: Duration = Duration::from_secs(2);
/// Retries never wait longer than this.
const LONGEST: Duration = Duration::from_secs(120);

/// The wait before attempt `failures + 1`: doubling from [`FIRST`] up to [`LONGEST`], then
/// between half and all of that, at random.
pub fn delay(failures: u32, jitter: f64) -> Duration {
    let doubled = FIRST.saturating_mul(1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX));
    doubled.min(LONGEST).mul_f64(0.5 + jitter.clamp(0.0, 1.0) * 0.5)
}

#[derive(Debug)]
struct Failed {
    failures: u32,
    next: Instant,
}

/// Failed launches by claim UID.
#[derive(Debug, Default)]
pub struct LaunchBackoff(Mutex<HashMap<String, Failed>>);

impl LaunchBackoff {
    fn failed_launches(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failed>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long the claim must still wait before its next attempt, if it must.
    pub fn wait(&self, uid: &str) -> Option<Duration> {
        let next = self.failed_launches().get(uid)?.next;
        next.checked_duration_since(Instant::now()).filter(|wait| !wait.is_zero())
    }

    /// Records a failed attempt; returns the wait before the next.
    pub fn failed(&self, uid: &str) -> Duration {
        let mut failed = self.failed_launches();
        let entry = failed.entry(uid.to_owned()).or_insert(Failed { failures: 0, next: Instant::now() });
        entry.failures = entry.failures.saturating_add(1);
        let wait = delay(entry.failures, fastrand::f64());
        entry.next = Instant::now() + wait;
        wait
    }

    /// The claim launched (or went): forget its failures.
    pub fn forget(&self, uid: &str) {
        self.failed_launches().remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_longest_with_jitter_below() {
        assert_eq!(delay(1, 1.0), FIRST);
        assert_eq!(delay(2, 1.0), FIRST * 2);
        assert_eq!(delay(4, 1.0), FIRST * 8);
        assert_eq!(delay(20, 1.0), LONGEST);
        assert_eq!(delay(u32::MAX, 1.0), LONGEST, "no overflow however often it failed");
        assert_eq!(delay(1, 0.0), FIRST / 2, "jitter takes at most half");
    }

    #[tokio::test]
    async fn an_early_reconcile_waits_and_a_launch_forgets() {
        let backoff = LaunchBackoff::default();
        assert_eq!(backoff.wait("a"), None);
        let first = backoff.failed("a");
        assert!(first >= FIRST / 2 && first <= FIRST);
        assert!(backoff.wait("a").is_some_and(|wait| wait <= first), "the status write's reconcile waits");
        let second = backoff.failed("a");
        assert!(second >= FIRST && second <= FIRST * 2);
        backoff.forget("a");
        assert_eq!(backoff.wait("a"), None);
    }
}
