//! Disruption, first reason: empty nodes. A node of a NodePool whose consolidation is on, that
//! has held no pod other than DaemonSet and mirror pods for `consolidateAfter`, is removed by
//! deleting its NodeClaim (which drains and terminates it), within the pool's budgets and never
//! for a node or NodeClaim annotated do-not-disrupt.
//!
//! The pure parts live in their rooms: [`budgets`] (which are active, how many disruptions they
//! allow) and [`emptiness`] (which nodes are empty candidates); this module runs the loop. How
//! long a node has been empty is remembered in memory; after a restart the clock starts again,
//! which only delays a removal.

pub mod budgets;
pub mod emptiness;

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use kube::{Api, Resource, ResourceExt, api::DeleteParams, runtime::events::EventType};
use tracing::{info, warn};

use self::{budgets::allowed_disruptions, emptiness::empty_nodes};
use crate::{
    apis::{NodeClaim, labels, nodepool::DisruptionReason},
    controllers::{Shared, isolation::isolate, publish},
    state::nodes::Nodes,
};

/// Whether a budget is active now: always without a schedule, else within `duration` of the
/// schedule's last firing. A budget whose schedule cannot be parsed counts as active, the
/// Checks every 5 seconds; a candidate must stay empty for its pool's `consolidateAfter`.
pub async fn run<P>(ctx: Arc<Shared<P>>) {
    let mut empty_since: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticks.tick().await;
        if let Err(error) = isolate(pass(&ctx, &mut empty_since)).await {
            warn!(%error, "disruption pass failed");
            ctx.metrics.reconcile_failed("disruption", &error);
        }
    }
}

/// One look at every pool: candidates that stayed empty long enough are disrupted.
async fn pass<P>(ctx: &Shared<P>, empty_since: &mut HashMap<String, DateTime<Utc>>) -> crate::error::Result<()> {
    {
        let now = Utc::now();
        let state = &ctx.state;
        let (claims, nodes, pools) = (state.claims.state(), state.nodes.state(), state.pools.state());
        // Decided under the pod index's read lock, which no await may hold.
        let mut empty: HashMap<String, Vec<(String, String)>> = {
            let index = state.pod_index();
            let joined = Nodes::join(&nodes, &claims, &index);
            pools.iter().map(|pool| (pool.name_any(), empty_nodes(&pool.name_any(), &joined, now))).collect()
        };
        let mut seen = Vec::new();
        for pool in pools {
            let Some(after) = pool.spec.disruption.consolidate_after.duration() else { continue };
            let name = pool.name_any();
            let candidates = empty.remove(&name).unwrap_or_default();
            let of_pool: Vec<&Arc<NodeClaim>> =
                claims.iter().filter(|c| c.labels().get(labels::NODEPOOL) == Some(&name)).collect();
            let disrupting = of_pool.iter().filter(|c| c.metadata.deletion_timestamp.is_some()).count();
            let mut allowed = allowed_disruptions(
                &pool.spec.disruption.budgets,
                DisruptionReason::Empty,
                of_pool.len(),
                disrupting,
                now,
            );
            for (claim, node) in candidates {
                let since = *empty_since.entry(claim.clone()).or_insert(now);
                seen.push(claim.clone());
                if now - since < after.delta() || allowed == 0 {
                    continue;
                }
                allowed -= 1;
                let api: Api<NodeClaim> = Api::all(ctx.client.clone());
                info!(nodeclaim = %claim, %node, nodepool = %name, "disrupting empty node");
                if let Some(object) = claims.iter().find(|c| c.name_any() == claim) {
                    let note = format!("Disrupting node {node}: empty for {}", after);
                    publish(&ctx.recorder, &object.object_ref(&()), EventType::Normal, "DisruptionEmpty", note).await;
                    ctx.metrics.disrupted(object, "Empty");
                }
                if let Err(error) = api.delete(&claim, &DeleteParams::default()).await {
                    warn!(%error, nodeclaim = %claim, "cannot delete empty NodeClaim");
                }
            }
        }
        empty_since.retain(|claim, _| seen.contains(claim));
    }
    Ok(())
}
