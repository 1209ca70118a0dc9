//! Leader election on a `coordination.k8s.io` Lease, fenced by a local deadline.
//!
//! Every replica tries to take or renew the Lease every [`Timing::retry`]. A replica leads only
//! until its last successful renewal, counted from when that attempt *started*, plus the lease
//! duration less a margin: past that, another replica may take the Lease, so this one steps down
//! whether or not it has heard back from the apiserver. A request that hangs (a partition, a
//! frozen connection) therefore cannot keep a replica leading; each attempt also has its own
//! timeout. The operator drops every controller future the moment leadership ends, which stops
//! every write, to Kubernetes and to the cloud.
//!
//! Taking over follows client-go: a Lease held by another identity is taken only after its record
//! has not changed for the lease duration, measured on this replica's own clock from when it
//! first saw that record (clocks of different machines are never compared).

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use tokio::{sync::watch, time::Instant};
use tracing::{info, warn};

/// How leadership is timed.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The Lease's duration: a holder that has not renewed for this long may be replaced.
    pub lease: Duration,
    /// How often the Lease is taken or renewed.
    pub retry: Duration,
    /// How long one attempt may take before it counts as failed.
    pub attempt: Duration,
    /// How long before the lease duration ends the holder stops leading, for the time it takes
    /// to stop.
    pub margin: Duration,
}

impl Timing {
    /// A 10 s Lease renewed every 2 s, each attempt at most 2 s, stepping down 2 s early.
    pub const DEFAULT: Self = Self {
        lease: Duration::from_secs(10),
        retry: Duration::from_secs(2),
        attempt: Duration::from_secs(2),
        margin: Duration::from_secs(2),
    };
}

/// What this replica knows of the Lease between attempts.
#[derive(Debug, Default)]
struct Observed {
    /// The record last seen (holder and renew time) and when it was first seen.
    record: Option<(Option<String>, Option<String>, Instant)>,
    /// Until when this replica may lead.
    leads_until: Option<Instant>,
}

/// What to do with the Lease as read.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nobody holds it (or this replica does): write this replica as holder.
    Take,
    /// Another replica holds it and has renewed recently enough.
    Wait,
}

/// Decides from the Lease's holder and renew time, as this replica observed them.
fn decide(holder: Option<&str>, identity: &str, unchanged_for: Duration, lease: Duration) -> Step {
    match holder {
        None | Some("") => Step::Take,
        Some(holder) if holder == identity => Step::Take,
        Some(_) if unchanged_for >= lease => Step::Take,
        Some(_) => Step::Wait,
    }
}

/// Starts the election in the background; the receiver says whether this replica leads now.
pub fn elect(client: Client, namespace: &str, name: &str, identity: String, timing: Timing) -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let name = name.to_owned();
    info!(%identity, %namespace, lease = %name, "joining leader election");
    tokio::spawn(async move {
        let mut observed = Observed::default();
        loop {
            let started = Instant::now();
            match tokio::time::timeout(timing.attempt, attempt(&api, &name, &identity, timing, &mut observed)).await {
                Ok(Ok(true)) => observed.leads_until = Some(started + timing.lease.saturating_sub(timing.margin)),
                Ok(Ok(false)) => observed.leads_until = None,
                Ok(Err(error)) => warn!(%error, "cannot take or renew the leader Lease"),
                Err(_) => warn!(timeout = ?timing.attempt, "taking or renewing the leader Lease timed out"),
            }
            let leading = observed.leads_until.is_some_and(|until| Instant::now() < until);
            sender.send_if_modified(|was| std::mem::replace(was, leading) != leading);
            if sender.is_closed() {
                return;
            }
            // Wake at the next attempt, or when leadership would lapse, whichever comes first.
            let next = started + timing.retry;
            let wake =
                observed.leads_until.filter(|until| *until > Instant::now()).map_or(next, |until| until.min(next));
            tokio::time::sleep_until(wake.max(Instant::now())).await;
            if observed.leads_until.is_some_and(|until| Instant::now() >= until) {
                sender.send_if_modified(|was| std::mem::replace(was, false));
            }
        }
    });
    receiver
}

/// One attempt: reads the Lease and writes this replica as its holder when it may. True when
/// this replica holds it afterwards.
async fn attempt(
    api: &Api<Lease>,
    name: &str,
    identity: &str,
    timing: Timing,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let Some(lease) = api.get_opt(name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
            spec: Some(held_by(identity, now.clone(), now, timing.lease, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            // Another replica created it first.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let record = (spec.holder_identity.clone(), spec.renew_time.as_ref().map(|t| t.0.to_string()));
    let first_seen = match &observed.record {
        Some((holder, renewed, at)) if (holder, renewed) == (&record.0, &record.1) => *at,
        _ => Instant::now(),
    };
    observed.record = Some((record.0.clone(), record.1, first_seen));
    if decide(spec.holder_identity.as_deref(), identity, first_seen.elapsed(), timing.lease) == Step::Wait {
        return Ok(false);
    }
    let ours = spec.holder_identity.as_deref() == Some(identity);
    let acquired = if ours { spec.acquire_time.clone().unwrap_or_else(|| now.clone()) } else { now.clone() };
    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
    // The resourceVersion read above makes this a compare-and-swap: a replica that raced us wins.
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": lease.metadata.resource_version},
        "spec": held_by(identity, acquired, now, timing.lease, transitions),
    });
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {
            if !ours {
                info!(%identity, at = %Utc::now(), "took the leader Lease");
            }
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

fn held_by(identity: &str, acquired: MicroTime, renewed: MicroTime, lease: Duration, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        acquire_time: Some(acquired),
        renew_time: Some(renewed),
        lease_duration_seconds: Some(i32::try_from(lease.as_secs()).unwrap_or(i32::MAX)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_taken_when_free_ours_or_stale() {
        let lease = Duration::from_secs(10);
        assert_eq!(decide(None, "a", Duration::ZERO, lease), Step::Take);
        assert_eq!(decide(Some(""), "a", Duration::ZERO, lease), Step::Take);
        assert_eq!(decide(Some("a"), "a", Duration::ZERO, lease), Step::Take, "renewal");
        assert_eq!(decide(Some("b"), "a", Duration::from_secs(9), lease), Step::Wait);
        assert_eq!(decide(Some("b"), "a", lease, lease), Step::Take, "b stopped renewing");
    }
}
