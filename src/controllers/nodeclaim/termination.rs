//! Termination, one pass at a time: drain the Node through the Eviction API (a PodDisruptionBudget
//! may say not yet; `terminationGracePeriod` past the deletion ends the waiting), terminate the
//! instance and wait until it is gone, remove the Node, and only then release the claim's
//! finalizer. Each pass reads the world again, so a controller killed at any point resumes.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::{info, warn};

use super::{Context, FINALIZER, claims, is_not_found, lifecycle::phase};
use crate::controllers::Provider;
use crate::{
    apis::{NodeClaim, labels},
    cloudprovider::CloudError,
    error::Result,
    metrics::ClaimLabels,
    state::pods::evictable,
};

/// One pass of termination; returns a requeue while something is still in progress.
pub(super) async fn terminate<P: Provider>(claim: &NodeClaim, ctx: &Context<P>) -> Result<Action> {
    if !claim.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let node = ctx.node_for(claim);
    if let Some(node) = &node
        && !drained(claim, node, ctx).await?
    {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    if let Some(provider_id) = claim.status.as_ref().and_then(|s| s.provider_id.as_deref()) {
        match ctx.provider.delete(provider_id).await {
            // Terminating: come back to see it gone.
            Ok(()) => return Ok(Action::requeue(Duration::from_secs(2))),
            Err(CloudError::NotFound(_)) => {}
            Err(error @ CloudError::NotOwned { .. }) => {
                warn!(%error, "not terminating an instance stoker does not own")
            }
            Err(error) => return Err(error.into()),
        }
    }
    if let Some(node) = &node {
        let remaining: Vec<String> = node.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
        let patch = json!({"metadata": {"finalizers": remaining}});
        match nodes.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(error.into()),
        }
        match nodes.delete(&node.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let remaining: Vec<String> = claim.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    let patch = json!({"metadata": {"finalizers": remaining, "resourceVersion": claim.resource_version()}});
    claims(ctx).patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    info!("terminated");
    ctx.metrics.nodeclaims_terminated.get_or_create(&ClaimLabels::of(claim)).inc();
    Ok(Action::await_change())
}

/// Taints the node and evicts what runs on it; true once nothing evictable is left.
async fn drained<P>(claim: &NodeClaim, node: &Node, ctx: &Context<P>) -> Result<bool> {
    let name = node.name_any();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    if !taints.iter().any(|t| t.key == labels::DISRUPTED_TAINT) {
        let mut tainted = taints;
        tainted.push(k8s_openapi::api::core::v1::Taint {
            key: labels::DISRUPTED_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
        let patch = json!({"spec": {"taints": tainted}, "metadata": {"resourceVersion": node.resource_version()}});
        nodes.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let on_node = pods.list(&ListParams::default().fields(&format!("spec.nodeName={name}"))).await?;
    let left: Vec<&Pod> = on_node.items.iter().filter(|pod| evictable(&pod.metadata, phase(pod))).collect();
    if left.is_empty() {
        return Ok(true);
    }
    let grace_over = match (&claim.spec.termination_grace_period, &claim.metadata.deletion_timestamp) {
        (Some(grace), Some(deleted)) => {
            let deleted = chrono::DateTime::from_timestamp(deleted.0.as_second(), 0).unwrap_or_else(Utc::now);
            Utc::now() - deleted > grace.delta()
        }
        _ => false,
    };
    for pod in left {
        let namespaced: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
        let result = if grace_over {
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
