//! Carries out a disruption decision, the one way every method does: taint the candidates so
//! nothing new lands on them, launch the replacement (if any) and wait until it is initialized,
//! then delete the candidates' NodeClaims (whose termination drains them). If the replacement
//! does not come up, the candidates are untainted and stay: a failed replacement never costs a
//! node.
//!
//! Being killed at any point leaves nothing behind for good: a disruption taint on a node whose
//! NodeClaim is not being deleted is stale once no decision holds it ([`stale_taints`]), and each
//! pass removes those; a replacement launched for a decision that never finished is an ordinary
//! node, consolidated like any other.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::{
    api::core::v1::{Node, Taint},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{events::EventType, reflector::ObjectRef},
};
use serde_json::json;
use tracing::{info, warn};

use super::consolidation::{Action, Decision};
use crate::{
    apis::condition,
    apis::{NodeClaim, NodePool, labels},
    controllers::{Shared, nodeclaim::lifecycle::condition_true, provisioner::snapshot::nodeclaim_for, publish},
    error::Result,
    state::nodes::Nodes,
};

/// How long a replacement may take to initialize before the decision is rolled back.
pub const REPLACEMENT_TIMEOUT: Duration = Duration::from_secs(600);

/// A disruption taint older than this on a node whose NodeClaim is not being deleted is left
/// over from a decision that did not finish.
pub const STALE_TAINT: TimeDelta = TimeDelta::minutes(2);

/// Carries out `decision` for `reason` (as Events and metrics name it); `Ok(false)` when it was
/// rolled back.
pub async fn execute<P>(ctx: &Shared<P>, decision: &Decision, reason: &str, pools: &[Arc<NodePool>]) -> Result<bool> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let claims: Api<NodeClaim> = Api::all(ctx.client.clone());
    for candidate in &decision.candidates {
        set_disruption_taint(&nodes, &candidate.node, true).await?;
    }
    if let Action::Replace(planned) = &decision.action {
        let replaced = match pools.iter().find(|p| p.name_any() == planned.nodepool) {
            Some(pool) => launch_replacement(ctx, &claims, planned, pool).await,
            None => Ok(false),
        };
        if !matches!(replaced, Ok(true)) {
            warn!(?replaced, "replacement did not come up; keeping the candidates");
            for candidate in &decision.candidates {
                set_disruption_taint(&nodes, &candidate.node, false).await?;
            }
            return replaced.map(|_| false);
        }
    }
    for candidate in &decision.candidates {
        let Some(claim) = ctx.state.claims.get(&ObjectRef::new(&candidate.claim)) else { continue };
        let note = match &decision.action {
            Action::Delete => format!("Disrupting node {} ({reason}): its pods fit on other nodes", candidate.node),
            Action::Replace(planned) => format!(
                "Disrupting node {} ({reason}): replaced by a cheaper {} (${:.4}/h saved)",
                candidate.node,
                planned.instance_types.first().map_or("node", String::as_str),
                decision.savings
            ),
        };
        info!(nodeclaim = %candidate.claim, node = %candidate.node, reason, action = decision.kind(), "disrupting");
        publish(&ctx.recorder, &claim.object_ref(&()), EventType::Normal, &format!("Disruption{reason}"), note).await;
        ctx.metrics.disrupted(&claim, reason);
        if let Err(error) = claims.delete(&candidate.claim, &DeleteParams::default()).await {
            warn!(%error, nodeclaim = %candidate.claim, "cannot delete disrupted NodeClaim");
        }
    }
    Ok(true)
}

/// Creates the replacement and waits until it is initialized: `Ok(false)` when it went away or
/// timed out (then it is deleted, if it is still there).
async fn launch_replacement<P>(
    ctx: &Shared<P>,
    claims: &Api<NodeClaim>,
    planned: &crate::scheduling::solver::NewNodeClaim,
    pool: &NodePool,
) -> Result<bool> {
    let suffix: String = (0..5).map(|_| fastrand::alphanumeric().to_ascii_lowercase()).collect();
    let created = claims.create(&PostParams::default(), &nodeclaim_for(planned, pool, &suffix)).await?;
    let name = created.name_any();
    info!(nodeclaim = %name, instance_types = ?planned.instance_types, "launched replacement");
    let deadline = tokio::time::Instant::now() + REPLACEMENT_TIMEOUT;
    let mut seen = false;
    while tokio::time::Instant::now() < deadline {
        match ctx.state.claims.get(&ObjectRef::new(&name)) {
            Some(claim) if claim.uid() != created.uid() => break,
            Some(claim) if claim.metadata.deletion_timestamp.is_some() => break,
            Some(claim) if condition_true(&claim, condition::INITIALIZED) => return Ok(true),
            Some(_) => seen = true,
            None if seen => break,
            None => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if let Err(error) = claims.delete(&name, &DeleteParams::default()).await {
        warn!(%error, nodeclaim = %name, "cannot delete failed replacement");
    }
    Ok(false)
}

/// Adds (with the time, so a stale one can be told) or removes stoker's disruption taint.
pub async fn set_disruption_taint(nodes: &Api<Node>, name: &str, tainted: bool) -> Result<()> {
    let node = nodes.get(name).await?;
    let mut taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let present = taints.iter().any(|t| t.key == labels::DISRUPTED_TAINT);
    if present == tainted {
        return Ok(());
    }
    taints.retain(|t| t.key != labels::DISRUPTED_TAINT);
    if tainted {
        taints.push(Taint {
            key: labels::DISRUPTED_TAINT.into(),
            effect: "NoSchedule".into(),
            time_added: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            value: None,
        });
    }
    // The resourceVersion makes this a compare-and-swap: taints another writer changed meanwhile
    // are not overwritten (the pass retries on the next tick).
    let patch = json!({"spec": {"taints": taints}, "metadata": {"resourceVersion": node.resource_version()}});
    nodes.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Nodes carrying a disruption taint older than [`STALE_TAINT`] whose NodeClaim is not being
/// deleted: left over from a decision that was interrupted.
pub fn stale_taints(nodes: &Nodes, now: DateTime<Utc>) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|view| Some((view.node?, view.claim?)))
        .filter(|(_, claim)| claim.metadata.deletion_timestamp.is_none())
        .filter(|(node, _)| {
            node.spec.iter().flat_map(|s| s.taints.iter().flatten()).any(|t| {
                let added = t.time_added.as_ref().and_then(|at| DateTime::from_timestamp(at.0.as_second(), 0));
                t.key == labels::DISRUPTED_TAINT && added.is_none_or(|added| now - added > STALE_TAINT)
            })
        })
        .map(|(node, _)| node.name_any())
        .collect()
}
