//! Nodes whose capacity reservation has ended. An instance launched into an On-Demand Capacity
//! Reservation runs on when the reservation expires or is cancelled, as an ordinary on-demand
//! instance billed at the on-demand price. Its NodeClaim and Node would still say `reserved`:
//! priced as already paid for, so consolidation would never replace it, and once the catalog no
//! longer offers the reservation not priced at all, so never a candidate. Every minute the
//! leader asks the cloud about the reservations its reserved NodeClaims name, and relabels each
//! claim whose reservation ended, and its Node, as `on-demand` without the reservation's ID (as
//! Karpenter does), with an Event. A pool that allows only `reserved` then holds a node its
//! requirements exclude, and drift replaces it. The node class controller asks too, just before
//! it writes a status that drops a reservation: drift takes a node labelled with a reservation
//! its class no longer lists for deselected, and an ended one must not look so.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::EventType,
};
use serde_json::json;
use tracing::{info, warn};

use crate::{
    apis::{NodeClaim, labels},
    controllers::{Provider, Shared, apply_status, isolation::isolate, publish},
    error::Result,
};

/// How often the reservations of reserved nodes are checked (Karpenter's period too).
const PERIOD: Duration = Duration::from_secs(60);

/// The reservation a claim launched into, while it is labelled `reserved` and not going.
fn reservation_of(claim: &NodeClaim) -> Option<&str> {
    labels::reservation(claim.labels()).filter(|_| claim.metadata.deletion_timestamp.is_none())
}

/// The reservations the reserved claims name, each once.
pub fn reservations_named(claims: &[Arc<NodeClaim>]) -> Vec<String> {
    let named: BTreeSet<&str> = claims.iter().filter_map(|claim| reservation_of(claim)).collect();
    named.into_iter().map(str::to_owned).collect()
}

/// The claims that run in one of the `ended` reservations.
pub fn in_ended<'a>(claims: &'a [Arc<NodeClaim>], ended: &[String]) -> Vec<&'a NodeClaim> {
    claims
        .iter()
        .filter(|claim| reservation_of(claim).is_some_and(|id| ended.iter().any(|e| e == id)))
        .map(|c| &**c)
        .collect()
}

/// Checks every [`PERIOD`]. Only the leader runs it.
pub async fn run<P: Provider>(ctx: Arc<Shared<P>>) {
    let mut ticks = tokio::time::interval(PERIOD);
    loop {
        ticks.tick().await;
        if let Err(error) = isolate("reservations", &ctx.metrics, relabel_ended(&ctx)).await {
            warn!(%error, "cannot relabel the nodes of ended capacity reservations");
            ctx.metrics.reconcile_failed("reservations", &error);
        }
    }
}

/// Relabels the claims, and their Nodes, whose reservation ended.
pub async fn relabel_ended<P: Provider>(ctx: &Shared<P>) -> Result<()> {
    let claims = ctx.state.claims.state();
    let named = reservations_named(&claims);
    if named.is_empty() {
        return Ok(());
    }
    let ended = ctx.provider.ended_reservations(&named).await?;
    let claim_api: Api<NodeClaim> = Api::all(ctx.client.clone());
    let node_api: Api<Node> = Api::all(ctx.client.clone());
    let relabel = json!({"metadata": {"labels": {
        labels::CAPACITY_TYPE: labels::CAPACITY_TYPE_ON_DEMAND,
        labels::CAPACITY_RESERVATION_ID: null,
    }}});
    let patch = Patch::Merge(&relabel);
    for claim in in_ended(&claims, &ended) {
        let name = claim.name_any();
        let reservation = claim.labels().get(labels::CAPACITY_RESERVATION_ID).cloned().unwrap_or_default();
        // The Node first: a claim relabelled before its Node would not be found again.
        let node = claim.status.as_ref().and_then(|s| s.node_name.clone());
        if let Some(node) = &node {
            match node_api.patch(node, &PatchParams::default(), &patch).await {
                // Its Node is gone: the claim alone carries the labels.
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
        claim_api.patch(&name, &PatchParams::default(), &patch).await?;
        if let Some(mut status) = claim.status.clone() {
            status.capacity_type = Some(labels::CAPACITY_TYPE_ON_DEMAND.to_owned());
            apply_status(&claim_api, &name, &status).await?;
        }
        info!(nodeclaim = %name, ?node, %reservation, "capacity reservation ended; the node is on-demand now");
        let note = format!("its capacity reservation {reservation} ended; it runs on as an on-demand instance");
        publish(&ctx.recorder, &claim.object_ref(&()), EventType::Normal, "CapacityReservationEnded", note).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, capacity_type: &str, reservation: Option<&str>, deleting: bool) -> Arc<NodeClaim> {
        let mut claim: NodeClaim = serde_json::from_value(json!({
            "apiVersion": "stoker.dev/v1alpha1", "kind": "NodeClaim",
            "metadata": {"name": name, "labels": {labels::CAPACITY_TYPE: capacity_type}},
            "spec": {"nodeClassRef": {"group": "stoker.dev", "kind": "EC2NodeClass", "name": "c"}},
        }))
        .expect("a NodeClaim");
        if let Some(id) = reservation {
            claim.labels_mut().insert(labels::CAPACITY_RESERVATION_ID.to_owned(), id.to_owned());
        }
        if deleting {
            claim.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        }
        Arc::new(claim)
    }

    #[test]
    fn only_reserved_claims_that_stay_are_asked_about_and_relabelled() {
        let claims = [
            claim("a", "reserved", Some("cr-1"), false),
            claim("b", "reserved", Some("cr-2"), false),
            claim("c", "reserved", Some("cr-1"), false),
            // Relabelled already, or never reserved: the ID alone does not make it reserved.
            claim("d", "on-demand", Some("cr-3"), false),
            // Going anyway: its drain is under way.
            claim("e", "reserved", Some("cr-4"), true),
            // Reserved without an ID (launched before IDs were labelled): nothing to ask.
            claim("f", "reserved", None, false),
            claim("g", "spot", None, false),
        ];
        assert_eq!(reservations_named(&claims), ["cr-1", "cr-2"]);
        let names = |ended: &[&str]| {
            let ended: Vec<String> = ended.iter().map(|id| (*id).to_owned()).collect();
            in_ended(&claims, &ended).iter().map(|c| c.name_any()).collect::<Vec<_>>()
        };
        assert_eq!(names(&["cr-1"]), ["a", "c"]);
        assert_eq!(names(&["cr-2", "cr-3", "cr-4"]), ["b"]);
        assert!(names(&[]).is_empty());
    }
}
