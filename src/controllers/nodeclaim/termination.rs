//! Termination, one pass at a time: drain the Node through the Eviction API (a PodDisruptionBudget
//! may say not yet; `terminationGracePeriod` past the deletion ends the waiting), terminate the
//! instance and wait until it is gone, remove the Node; then the claim's finalizer may go. Each pass reads the world again, so a controller killed at any point resumes.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::{info, warn};

use super::{
    Context, FINALIZER, is_not_found,
    lifecycle::{self, phase},
};
use crate::controllers::{
    Provider,
    finalizer::{self, Cleanup},
};
use crate::{
    apis::{NodeClaim, condition, labels, time::utc},
    cloudprovider::CloudError,
    error::Result,
    metrics::ClaimLabels,
    scheduling::pod::tolerates,
    state::pods::evictable,
};

/// One pass of termination: in progress until the instance and the Node are gone.
pub(super) async fn terminate<P: Provider>(claim: &NodeClaim, ctx: &Context<P>) -> Result<Cleanup> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let node = ctx.node_for(claim);
    let provider_id = claim.status.as_ref().and_then(|s| s.provider_id.as_deref());
    // A node whose instance is gone runs nothing, and one being repaired has no kubelet to stop
    // its pods: waiting for evictions (which a PodDisruptionBudget may refuse forever) would only
    // hold its pods hostage. Its pods go with the Node object, as Karpenter does.
    let repaired = lifecycle::condition_true(claim, condition::UNHEALTHY);
    if let Some(node) = &node
        && !repaired
        && !instance_gone(ctx, provider_id).await?
        && !drained(claim, node, ctx).await?
    {
        return Ok(Cleanup::InProgress(Action::requeue(Duration::from_secs(5))));
    }
    if let Some(provider_id) = provider_id {
        match ctx.provider.delete(provider_id).await {
            // Terminating: come back to see it gone.
            Ok(()) => return Ok(Cleanup::InProgress(Action::requeue(Duration::from_secs(2)))),
            Err(CloudError::NotFound(_)) => {}
            Err(error @ CloudError::NotOwned { .. }) => {
                warn!(%error, "not terminating an instance stoker does not own")
            }
            Err(error) => return Err(error.into()),
        }
    }
    if let Some(node) = &node {
        finalizer::release(&nodes, node, FINALIZER).await?;
        match nodes.delete(&node.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(error.into()),
        }
    }
    info!("terminated");
    ctx.metrics.nodeclaims_terminated.get_or_create(&ClaimLabels::of(claim)).inc();
    Ok(Cleanup::Done)
}

/// Whether the claim's instance no longer runs (gone, or shutting down or terminated).
async fn instance_gone<P: Provider>(ctx: &Context<P>, provider_id: Option<&str>) -> Result<bool> {
    let Some(provider_id) = provider_id else { return Ok(false) };
    match ctx.provider.get(provider_id).await {
        Ok(instance) => Ok(matches!(instance.state.as_str(), "shutting-down" | "terminated")),
        Err(CloudError::NotFound(_)) => Ok(true),
        Err(error) => Err(error.into()),
    }
}

/// What one pass of a drain does with the pods on a node.
#[derive(Debug)]
pub struct DrainPlan<'a> {
    /// Evicted through the Eviction API (PodDisruptionBudgets apply).
    pub evict: Vec<&'a Pod>,
    /// Deleted outright: the termination grace period is over.
    pub delete: Vec<&'a Pod>,
    /// Pods the drain still waits for (including those it does not evict yet).
    pub waiting: usize,
}

/// Karpenter's drain order: pods that tolerate the disruption taint stay (they would land on
/// the node again) and do not hold the drain; pods annotated do-not-disrupt are not evicted
/// until the termination grace period is over, but are waited for; system-critical pods are
/// evicted only once no other pod is left. After the grace period everything left is deleted.
pub fn drain_plan(pods: &[Pod], grace_over: bool) -> DrainPlan<'_> {
    let disrupted = Taint { key: labels::DISRUPTED_TAINT.into(), effect: "NoSchedule".into(), ..Default::default() };
    let staying =
        |pod: &Pod| pod.spec.iter().flat_map(|s| s.tolerations.iter().flatten()).any(|t| tolerates(t, &disrupted));
    let candidates: Vec<&Pod> =
        pods.iter().filter(|pod| evictable(&pod.metadata, phase(pod)) && !staying(pod)).collect();
    if grace_over {
        return DrainPlan { waiting: candidates.len(), evict: Vec::new(), delete: candidates };
    }
    let critical = |pod: &Pod| {
        let class = pod.spec.as_ref().and_then(|s| s.priority_class_name.as_deref());
        matches!(class, Some("system-cluster-critical" | "system-node-critical"))
    };
    let protected = |pod: &Pod| labels::do_not_disrupt(pod.annotations());
    let others_left = candidates.iter().any(|pod| !critical(pod));
    let evict = candidates.iter().copied().filter(|pod| !protected(pod) && (!critical(pod) || !others_left)).collect();
    DrainPlan { evict, delete: Vec::new(), waiting: candidates.len() }
}

/// Taints the node and evicts what runs on it; true once nothing is left to wait for.
async fn drained<P>(claim: &NodeClaim, node: &Node, ctx: &Context<P>) -> Result<bool> {
    let name = node.name_any();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    if !taints.iter().any(|t| t.key == labels::DISRUPTED_TAINT) {
        let mut tainted = taints;
        tainted.push(Taint { key: labels::DISRUPTED_TAINT.into(), effect: "NoSchedule".into(), ..Default::default() });
        let patch = json!({"spec": {"taints": tainted}, "metadata": {"resourceVersion": node.resource_version()}});
        nodes.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        info!(node = %name, "draining");
    }
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let on_node = pods.list(&ListParams::default().fields(&format!("spec.nodeName={name}"))).await?;
    let grace_over = match (&claim.spec.termination_grace_period, &claim.metadata.deletion_timestamp) {
        (Some(grace), Some(deleted)) => {
            let deleted = utc(deleted).unwrap_or_else(Utc::now);
            Utc::now() - deleted > grace.delta()
        }
        _ => false,
    };
    let plan = drain_plan(&on_node.items, grace_over);
    if plan.waiting == 0 {
        return Ok(true);
    }
    for (pod, force) in plan.evict.iter().map(|p| (p, false)).chain(plan.delete.iter().map(|p| (p, true))) {
        let namespaced: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
        let result = if force {
            namespaced.delete(&pod.name_any(), &DeleteParams::default()).await.map(|_| ())
        } else {
            namespaced.evict(&pod.name_any(), &EvictParams::default()).await.map(|_| ())
        };
        match result {
            Ok(()) => {}
            // 429: a PodDisruptionBudget says not now; 404: already gone.
            Err(kube::Error::Api(response)) if response.code == 429 || response.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, extra: &str) -> Pod {
        serde_saphyr::from_str(&format!("metadata: {{name: {name}, namespace: ns{extra}}}\nstatus: {{phase: Running}}"))
            .expect("a Pod")
    }

    fn names(pods: &[&Pod]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn critical_pods_go_last_and_protected_ones_wait_for_the_grace_period() {
        let pods = [
            pod("web", ""),
            pod("dns", "}\nspec: {priorityClassName: system-cluster-critical, containers: []"),
            pod("batch", ", annotations: {karpenter.sh/do-not-disrupt: 'true'}"),
            pod("tolerant", "}\nspec: {tolerations: [{key: stoker.dev/disrupted, operator: Exists}], containers: []"),
            pod("anything", "}\nspec: {tolerations: [{operator: Exists}], containers: []"),
        ];
        let first = drain_plan(&pods, false);
        assert_eq!(names(&first.evict), ["web"], "critical waits for the others; do-not-disrupt is not evicted");
        assert_eq!(first.waiting, 3, "web, dns and batch hold the drain; tolerant pods stay with the node");
        // Once only critical and protected pods are left, the critical one goes.
        let left = [pods[1].clone(), pods[2].clone()];
        assert_eq!(
            names(&drain_plan(&left, false).evict),
            Vec::<String>::new(),
            "batch is non-critical and still there"
        );
        let only_critical = [pods[1].clone()];
        assert_eq!(names(&drain_plan(&only_critical, false).evict), ["dns"]);
        // The grace period over: everything left is deleted, do-not-disrupt included.
        let over = drain_plan(&pods, true);
        assert_eq!(names(&over.delete), ["web", "dns", "batch"]);
        assert!(drain_plan(&pods[3..], false).waiting == 0, "only tolerant pods: drained");
    }
}
