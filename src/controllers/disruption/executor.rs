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

use super::{
    candidates::Candidate,
    consolidation::{Action, Decision},
};
use crate::{
    apis::{NodeClaim, NodePool, condition, labels, time::utc},
    controllers::{Shared, nodeclaim::lifecycle::condition_true, provisioner::snapshot::nodeclaim_for, publish},
    error::Result,
    metrics::{DecisionLabels, ReasonLabels},
    scheduling::solver::NewNodeClaim,
    state::nodes::Nodes,
};

/// How long a replacement may take to initialize before the decision is rolled back.
pub const REPLACEMENT_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a command waits for the caches to show the NodeClaims it deleted; a delete that
/// failed is never shown, and the next pass goes on without it.
const CACHE_LAG: Duration = Duration::from_secs(10);

/// How long the nodes a command moves pods onto stay nominated once its candidates are deleted:
/// long enough for a drain of many nodes to evict every pod and kube-scheduler to bind them.
const DESTINATION_HOLD: TimeDelta = TimeDelta::seconds(60);

/// A disruption taint older than this on a node whose NodeClaim is not being deleted is left
/// over from a decision that did not finish.
pub const STALE_TAINT: TimeDelta = TimeDelta::minutes(2);

/// What to disrupt, with what in its place.
#[derive(Debug, Clone)]
pub struct Command {
    pub candidates: Vec<Candidate>,
    /// Launched and initialized before any candidate goes.
    pub replacements: Vec<NewNodeClaim>,
    /// The disruption reason: `Underutilized`, `Drifted` (Event reason `Disruption<reason>` and
    /// the metric's label).
    pub reason: &'static str,
    /// Why, as the candidates' Events say it.
    pub why: String,
    /// Dollars per hour saved (consolidation), 0 otherwise.
    pub savings: f64,
    /// The existing nodes the candidates' pods are to move onto: nominated once the candidates
    /// go, so emptiness does not remove one the drain's pods have not reached yet.
    pub destinations: Vec<String>,
}

impl Command {
    /// A consolidation decision as a command.
    pub fn consolidation(decision: Decision) -> Self {
        let (replacements, why) = match decision.action {
            Action::Delete => (Vec::new(), "its pods fit on other nodes".to_owned()),
            Action::Replace(planned) => {
                let by = match &planned[..] {
                    [one] => format!("a cheaper {}", one.instance_types.first().map_or("node", String::as_str)),
                    several => format!("{} cheaper nodes", several.len()),
                };
                (planned, format!("replaced by {by} (${:.4}/h saved)", decision.savings))
            }
        };
        Self {
            candidates: decision.candidates,
            replacements,
            reason: "Underutilized",
            why,
            savings: decision.savings,
            destinations: decision.destinations,
        }
    }
}

/// Carries out `command`; `Ok(false)` when it was rolled back because a replacement did not
/// come up.
pub async fn execute<P>(ctx: &Shared<P>, command: &Command, pools: &[Arc<NodePool>]) -> Result<bool> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let claims: Api<NodeClaim> = Api::all(ctx.client.clone());
    for candidate in &command.candidates {
        set_disruption_taint(&nodes, &candidate.node, true).await?;
    }
    if !command.replacements.is_empty() {
        let replaced = launch_replacements(ctx, &claims, &command.replacements, pools).await;
        if !matches!(replaced, Ok(true)) {
            warn!(?replaced, "replacements did not come up; keeping the candidates");
            for candidate in &command.candidates {
                set_disruption_taint(&nodes, &candidate.node, false).await?;
            }
            return replaced.map(|_| false);
        }
    }
    let reason = command.reason;
    let metrics = &ctx.metrics;
    let action = if command.replacements.is_empty() { "delete" } else { "replace" };
    metrics.disruption_decisions.get_or_create(&DecisionLabels { reason: reason.into(), action: action.into() }).inc();
    let pods: usize = command.candidates.iter().map(|c| c.pods).sum();
    metrics.disruption_pods.get_or_create(&ReasonLabels { reason: reason.into() }).inc_by(pods as u64);
    metrics.consolidation_savings.inc_by(command.savings);
    for candidate in &command.candidates {
        let Some(claim) = ctx.state.claims.get(&ObjectRef::new(&candidate.claim)) else { continue };
        let note = format!("Disrupting node {} ({reason}): {}", candidate.node, command.why);
        info!(nodeclaim = %candidate.claim, node = %candidate.node, reason, why = %command.why, "disrupting");
        // On the claim and on its node: `kubectl describe node` is where users look.
        let event_reason = format!("Disruption{reason}");
        if let Some(node) = ctx.state.nodes.get(&ObjectRef::new(&candidate.node)) {
            publish(&ctx.recorder, &node.object_ref(&()), EventType::Normal, &event_reason, note.clone()).await;
        }
        publish(&ctx.recorder, &claim.object_ref(&()), EventType::Normal, &event_reason, note).await;
        ctx.metrics.disrupted(&claim, reason);
        if let Err(error) = claims.delete(&candidate.claim, &DeleteParams::default()).await {
            warn!(%error, nodeclaim = %candidate.claim, "cannot delete disrupted NodeClaim");
        }
    }
    let now = Utc::now();
    ctx.nominations.hold(command.destinations.iter().cloned(), now, now + DESTINATION_HOLD);
    until_seen_going(ctx, &command.candidates).await;
    Ok(true)
}

/// Waits until the NodeClaim cache shows every candidate's claim being deleted or gone (at most
/// [`CACHE_LAG`]): the next pass may start at once, and a picture taken before the watch
/// delivers these deletions would offer the same nodes again.
async fn until_seen_going<P>(ctx: &Shared<P>, candidates: &[Candidate]) {
    let deadline = tokio::time::Instant::now() + CACHE_LAG;
    let unseen = || {
        candidates.iter().any(|c| {
            let claim = ctx.state.claims.get(&ObjectRef::new(&c.claim));
            claim.is_some_and(|claim| claim.metadata.deletion_timestamp.is_none())
        })
    };
    while unseen() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates the replacements and waits until every one is initialized: `Ok(false)` when one went
/// away or they timed out (then the ones still there are deleted).
async fn launch_replacements<P>(
    ctx: &Shared<P>,
    claims: &Api<NodeClaim>,
    planned: &[NewNodeClaim],
    pools: &[Arc<NodePool>],
) -> Result<bool> {
    let Some(created) = create_replacements(ctx, claims, planned, pools).await? else { return Ok(false) };
    let deadline = tokio::time::Instant::now() + REPLACEMENT_TIMEOUT;
    let mut seen = vec![false; created.len()];
    'waiting: while tokio::time::Instant::now() < deadline {
        let mut ready = 0;
        for (claim, seen) in created.iter().zip(&mut seen) {
            match ctx.state.claims.get(&ObjectRef::new(&claim.name_any())) {
                Some(now) if now.uid() != claim.uid() || now.metadata.deletion_timestamp.is_some() => break 'waiting,
                Some(now) if condition_true(&now, condition::INITIALIZED) => ready += 1,
                Some(_) => *seen = true,
                None if *seen => break 'waiting,
                None => {}
            }
        }
        if ready == created.len() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for claim in created {
        if let Err(error) = claims.delete(&claim.name_any(), &DeleteParams::default()).await {
            warn!(%error, nodeclaim = %claim.name_any(), "cannot delete failed replacement");
        }
    }
    Ok(false)
}

/// Creates a NodeClaim for each planned replacement, without waiting for any to launch; `None`
/// (and nothing created) when a pool named is gone.
pub async fn create_replacements<P>(
    ctx: &Shared<P>,
    claims: &Api<NodeClaim>,
    planned: &[NewNodeClaim],
    pools: &[Arc<NodePool>],
) -> Result<Option<Vec<NodeClaim>>> {
    let mut built = Vec::new();
    for planned in planned {
        let Some(pool) = pools.iter().find(|p| p.name_any() == planned.nodepool) else { return Ok(None) };
        let class = ctx.state.classes.get(&ObjectRef::new(&pool.spec.template.spec.node_class_ref.name));
        let suffix: String = (0..5).map(|_| fastrand::alphanumeric().to_ascii_lowercase()).collect();
        built.push((nodeclaim_for(planned, pool, class.as_deref(), &suffix), &planned.instance_types));
    }
    let mut created = Vec::new();
    for (claim, instance_types) in built {
        let claim = claims.create(&PostParams::default(), &claim).await?;
        info!(nodeclaim = %claim.name_any(), ?instance_types, "created replacement");
        created.push(claim);
    }
    Ok(Some(created))
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
                let added = t.time_added.as_ref().and_then(utc);
                t.key == labels::DISRUPTED_TAINT && added.is_none_or(|added| now - added > STALE_TAINT)
            })
        })
        .map(|(node, _)| node.name_any())
        .collect()
}
