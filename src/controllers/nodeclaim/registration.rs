//! Registration: the claim's Node appeared (same provider ID). It gets the claim's labels, stoker's
//! finalizer and the claim's taints in place of the unregistered taint; the claim records the
//! Node's name.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::info;

use super::{Context, FINALIZER, apply_status, lifecycle::registered_taints, mark};
use crate::apis::condition;
use crate::{
    apis::{NodeClaim, labels},
    error::Result,
    metrics::ClaimLabels,
};

pub(super) async fn register<P>(claim: &NodeClaim, node: &Node, ctx: &Context<P>) -> Result<Action> {
    let mut node_labels: BTreeMap<String, String> = claim.labels().clone();
    node_labels.insert(labels::NODECLAIM.into(), claim.name_any());
    let mut finalizers = node.finalizers().to_vec();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        finalizers.push(FINALIZER.to_owned());
    }
    let patch = json!({
        "metadata": {"labels": node_labels, "finalizers": finalizers, "resourceVersion": node.resource_version()},
        "spec": {"taints": registered_taints(node, claim)},
    });
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    nodes.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    apply_status(claim, ctx, |status| {
        status.node_name = Some(node.name_any());
        mark(status, claim, &[condition::REGISTERED]);
    })
    .await?;
    info!(node = %node.name_any(), "registered");
    ctx.metrics.nodeclaims_registered.get_or_create(&ClaimLabels::of(claim)).inc();
    Ok(Action::requeue(Duration::from_secs(5)))
}
