//! Counting preemptions: each pause pod that kube-scheduler evicts to make room for a real pod
//! is a cold start the warm pool saved. The scheduler marks its victims with the condition
//! `DisruptionTarget` (reason `PreemptionByScheduler`) before deleting them; the shared pod
//! watch passes every such pause pod here, and the WarmPool's status counts it.
//!
//! The count is written with its own field manager, apart from the WarmPool reconcile's status
//! apply. A pod seen twice counts once (its UID is remembered), and after a restart only
//! preemptions newer than `lastPreemptionTime` count.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::{
    apis::{WarmPool, labels, time::utc},
    controllers::Shared,
    metrics::WarmPoolLabels,
    state::cache::CachedPod,
};

/// The field manager of the preemption counters.
const FIELD_MANAGER: &str = "stoker-preemptions";

/// A preempted pause pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preemption {
    pub namespace: String,
    pub warmpool: String,
    pub at: DateTime<Utc>,
    pub pod_uid: String,
}

/// When the scheduler preempted this pause pod, if it did.
pub fn preempted(pod: &CachedPod) -> Option<Preemption> {
    let pool = pod.labels().get(labels::WARMPOOL)?;
    let condition =
        pod.condition("DisruptionTarget", "True").filter(|c| c.reason.as_deref() == Some("PreemptionByScheduler"))?;
    Some(Preemption {
        namespace: pod.namespace().unwrap_or_default(),
        warmpool: pool.clone(),
        at: condition.last_transition_time.as_ref().and_then(utc).unwrap_or_else(Utc::now),
        pod_uid: pod.uid().unwrap_or_default(),
    })
}

/// Records preemptions until the channel closes. Falling behind the channel loses the oldest
/// preemptions' records, never the process.
pub async fn run<P>(ctx: Arc<Shared<P>>, mut preemptions: broadcast::Receiver<Preemption>) {
    let mut counted: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        let preemption = match preemptions.recv().await {
            Ok(preemption) => preemption,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                warn!(missed, "preemptions arrived faster than they were recorded; some are not counted");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !counted.insert(preemption.pod_uid.clone()) {
            continue;
        }
        let Preemption { namespace, warmpool, at, .. } = preemption;
        ctx.metrics.warmpool_preempted(&WarmPoolLabels { namespace: namespace.clone(), warmpool: warmpool.clone() });
        if let Err(error) = record(&ctx.client, &namespace, &warmpool, at).await {
            warn!(%error, %namespace, %warmpool, "cannot record a preemption");
        }
    }
}

async fn record(client: &Client, namespace: &str, pool: &str, at: DateTime<Utc>) -> Result<(), kube::Error> {
    let api: Api<WarmPool> = Api::namespaced(client.clone(), namespace);
    // Optimistic concurrency: retry on a conflict with the WarmPool reconcile's own status write.
    for _ in 0..5 {
        let Some(current) = api.get_opt(pool).await? else { return Ok(()) };
        let status = current.status.clone().unwrap_or_default();
        let last = status.last_preemption_time.as_ref().and_then(utc);
        if last.is_some_and(|last| last > at) {
            return Ok(());
        }
        let count = status.preemptions.unwrap_or(0) + 1;
        let time = crate::controllers::conditions::api_time(at);
        let patch = json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "status": {"preemptions": count, "lastPreemptionTime": time},
        });
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match api.patch_status(pool, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                info!(%namespace, warmpool = %pool, preemptions = count, "a pause pod was preempted: a cold start saved");
                return Ok(());
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pause_pods_preempted_by_the_scheduler_count() {
        let pod = |labels: &str, reason: &str| -> CachedPod {
            serde_saphyr::from_str::<k8s_openapi::api::core::v1::Pod>(&format!(
                "metadata: {{name: p, namespace: shop, labels: {{{labels}}}}}\nstatus: {{conditions: [{{type: DisruptionTarget, status: 'True', reason: {reason}, lastTransitionTime: '2026-11-23T10:00:00Z'}}]}}"
            ))
            .expect("a Pod")
            .into()
        };
        let preemption = preempted(&pod("stoker.dev/warmpool: rush", "PreemptionByScheduler")).expect("counted");
        assert_eq!((preemption.namespace.as_str(), preemption.warmpool.as_str()), ("shop", "rush"));
        assert_eq!(preemption.at.to_rfc3339(), "2026-11-23T10:00:00+00:00");
        assert!(
            preempted(&pod("stoker.dev/warmpool: rush", "EvictionByEvictionAPI")).is_none(),
            "a drain is not a preemption"
        );
        assert!(preempted(&pod("app: web", "PreemptionByScheduler")).is_none(), "not a pause pod");
    }
}
