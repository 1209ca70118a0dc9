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
//!
//! A Capacity Block for ML ends otherwise: EC2 terminates its instances from 30 minutes before
//! its end. So on the same pass, which also runs at each block's drain mark, the nodes of every
//! block within [`CAPACITY_BLOCK_DRAIN_LEAD`](crate::apis::ec2nodeclass::CAPACITY_BLOCK_DRAIN_LEAD)
//! of its end (as its class resolved it) are replaced and drained, as an interruption's are
//! (replacements first, then the claims deleted), with an Event `CapacityBlockEnding`; such a
//! node is never relabelled on-demand.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::events::EventType,
};
use serde_json::json;
use tracing::{info, warn};

use crate::{
    apis::{EC2NodeClass, NodeClaim, ec2nodeclass::ResolvedCapacityReservation, labels},
    controllers::{Provider, Shared, apply_status, interruption::replace_nodes, isolation::isolate, publish},
    error::Result,
};

/// How often the reservations of reserved nodes are checked (Karpenter's period too).
const PERIOD: Duration = Duration::from_secs(60);

/// The reservation a claim launched into, while it is labelled `reserved` and not going.
fn reservation_of(claim: &NodeClaim) -> Option<&str> {
    labels::reservation(claim.labels()).filter(|_| claim.metadata.deletion_timestamp.is_none())
}

/// Whether a claim is labelled as running in a Capacity Block (which EC2 reclaims rather than
/// letting it run on as on-demand).
fn in_capacity_block(claim: &NodeClaim) -> bool {
    claim.labels().get(labels::CAPACITY_RESERVATION_TYPE).is_some_and(|t| t == labels::RESERVATION_TYPE_CAPACITY_BLOCK)
}

/// The claims running in a Capacity Block that is draining at `now`, each with the block as a
/// node class resolved it (any class: a reservation's end is the same in each).
pub fn in_draining_blocks<'a>(
    claims: &'a [Arc<NodeClaim>],
    classes: &'a [Arc<EC2NodeClass>],
    now: DateTime<Utc>,
) -> Vec<(&'a NodeClaim, &'a ResolvedCapacityReservation)> {
    let resolved = || classes.iter().filter_map(|class| class.status.as_ref()).flat_map(|s| &s.capacity_reservations);
    claims
        .iter()
        .filter_map(|claim| {
            let id = reservation_of(claim)?;
            let block = resolved().find(|r| r.id == id && r.draining_at(now))?;
            Some((&**claim, block))
        })
        .collect()
}

/// The reservations the reserved claims outside Capacity Blocks name, each once.
pub fn reservations_named(claims: &[Arc<NodeClaim>]) -> Vec<String> {
    let named: BTreeSet<&str> =
        claims.iter().filter(|claim| !in_capacity_block(claim)).filter_map(|claim| reservation_of(claim)).collect();
    named.into_iter().map(str::to_owned).collect()
}

/// The claims outside Capacity Blocks that run in one of the `ended` reservations.
pub fn in_ended<'a>(claims: &'a [Arc<NodeClaim>], ended: &[String]) -> Vec<&'a NodeClaim> {
    claims
        .iter()
        .filter(|claim| !in_capacity_block(claim))
        .filter(|claim| reservation_of(claim).is_some_and(|id| ended.iter().any(|e| e == id)))
        .map(|c| &**c)
        .collect()
}

/// How long to wait for the first of `marks` still to come: until a second past it (so what
/// happens then is seen as happened), or `longest` when that is sooner or none is to come.
pub fn until_next_mark(marks: impl Iterator<Item = DateTime<Utc>>, now: DateTime<Utc>, longest: Duration) -> Duration {
    let until = marks.filter(|at| *at > now).min().and_then(|at| (at - now).to_std().ok());
    until.map_or(longest, |until| longest.min(until + Duration::from_secs(1)))
}

/// How long the pass sleeps: [`PERIOD`], or until the next drain mark of a Capacity Block a class
/// lists, so that block's nodes start draining at the mark rather than up to a minute after.
fn next_pass(classes: &[Arc<EC2NodeClass>], now: DateTime<Utc>) -> Duration {
    let reservations = classes.iter().filter_map(|class| class.status.as_ref()).flat_map(|s| &s.capacity_reservations);
    until_next_mark(reservations.filter_map(ResolvedCapacityReservation::drain_from), now, PERIOD)
}

/// Checks every [`PERIOD`], and at each Capacity Block's drain mark. Only the leader runs it.
pub async fn run<P: Provider>(ctx: Arc<Shared<P>>) {
    loop {
        if let Err(error) = isolate("reservations", &ctx.metrics, relabel_ended(&ctx)).await {
            warn!(%error, "cannot relabel the nodes of ended capacity reservations");
            ctx.metrics.reconcile_failed("reservations", &error);
        }
        if let Err(error) = isolate("reservations", &ctx.metrics, drain_ending_blocks(&ctx)).await {
            warn!(%error, "cannot drain the nodes of ending Capacity Blocks");
            ctx.metrics.reconcile_failed("reservations", &error);
        }
        tokio::time::sleep(next_pass(&ctx.state.classes.state(), Utc::now())).await;
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

/// Replaces and drains the nodes of the Capacity Blocks that are draining.
pub async fn drain_ending_blocks<P: Provider>(ctx: &Shared<P>) -> Result<()> {
    let (claims, classes) = (ctx.state.claims.state(), ctx.state.classes.state());
    let ending = in_draining_blocks(&claims, &classes, Utc::now());
    if ending.is_empty() {
        return Ok(());
    }
    let going: HashSet<String> = ending.iter().map(|(claim, _)| claim.name_any()).collect();
    let (replacements, _) = replace_nodes(ctx, &going).await;
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    for (claim, block) in ending {
        let name = claim.name_any();
        let end = block.end_time.as_deref().unwrap_or_default();
        let note = format!(
            "its Capacity Block {} ends at {end} and EC2 reclaims its instances from 30 minutes before: draining the node; {replacements}",
            block.id
        );
        info!(nodeclaim = %name, reservation = %block.id, %end, "Capacity Block ending; draining the node");
        publish(&ctx.recorder, &claim.object_ref(&()), EventType::Warning, "CapacityBlockEnding", note).await;
        ctx.metrics.disrupted(claim, "CapacityBlockEnding");
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
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

    /// A claim labelled as running in Capacity Block `id`.
    fn in_block(name: &str, id: &str, deleting: bool) -> Arc<NodeClaim> {
        let mut claim = (*claim(name, "reserved", Some(id), deleting)).clone();
        claim.labels_mut().insert(labels::CAPACITY_RESERVATION_TYPE.to_owned(), "capacity-block".to_owned());
        Arc::new(claim)
    }

    #[test]
    fn the_nodes_of_a_capacity_block_are_drained_from_40_minutes_before_its_end_and_never_relabelled() {
        let block = |id: &str, end: &str| ResolvedCapacityReservation::block(id, "p5.48xlarge", "us-east-1a", end);
        let ordinary = |id: &str, end: &str| ResolvedCapacityReservation {
            end_time: Some(end.into()),
            ..ResolvedCapacityReservation::of(id, "p5.48xlarge", "us-east-1a")
        };
        let mut class: EC2NodeClass = serde_json::from_value(json!({
            "apiVersion": "stoker.dev/v1alpha1", "kind": "EC2NodeClass", "metadata": {"name": "c"},
            "spec": {"role": "r", "subnetSelectorTerms": [{"id": "subnet-1"}], "securityGroupSelectorTerms": [{"id": "sg-1"}],
                     "amiSelectorTerms": [{"alias": "al2023@latest"}]},
        }))
        .expect("an EC2NodeClass");
        class.status = Some(crate::apis::ec2nodeclass::EC2NodeClassStatus {
            capacity_reservations: vec![
                block("cr-b1", "2026-12-07T10:30:00Z"),
                block("cr-b2", "2026-12-07T12:00:00Z"),
                ordinary("cr-d", "2026-12-07T10:30:00Z"),
            ],
            ..Default::default()
        });
        let classes = [Arc::new(class)];
        let claims = [
            in_block("a", "cr-b1", false),
            // Launched before the type was labelled: the class says it is a block.
            claim("b", "reserved", Some("cr-b1"), false),
            in_block("c", "cr-b1", true),
            in_block("d", "cr-b2", false),
            claim("e", "reserved", Some("cr-d"), false),
            claim("f", "on-demand", Some("cr-b1"), false),
            // A block no class lists (deselected, or ended and gone): drift's or EC2's.
            in_block("g", "cr-gone", false),
        ];
        let draining = |at: &str| {
            let now: DateTime<Utc> = at.parse().expect("a time");
            in_draining_blocks(&claims, &classes, now)
                .iter()
                .map(|(c, b)| (c.name_any(), b.id.clone()))
                .collect::<Vec<_>>()
        };
        assert!(draining("2026-12-07T09:49:59Z").is_empty(), "more than 40 minutes before its end");
        // The pass wakes a second after the first block's mark, not on its next minute.
        let at = |at: &str| at.parse::<DateTime<Utc>>().expect("a time");
        assert_eq!(next_pass(&classes, at("2026-12-07T09:49:30Z")), Duration::from_secs(31));
        assert_eq!(next_pass(&classes, at("2026-12-07T09:40:00Z")), PERIOD);
        assert_eq!(next_pass(&classes, at("2026-12-07T09:50:00Z")), PERIOD, "the first is draining already");
        assert_eq!(next_pass(&classes, at("2026-12-07T11:19:50Z")), Duration::from_secs(11), "the second's mark");
        let expected = [("a".to_owned(), "cr-b1".to_owned()), ("b".to_owned(), "cr-b1".to_owned())];
        assert_eq!(draining("2026-12-07T09:50:00Z"), expected);
        assert_eq!(draining("2026-12-07T11:20:00Z").len(), 3, "the later block's too");
        // Only the ordinary reservation's claims are asked about and relabelled when it ends.
        assert_eq!(reservations_named(&claims), ["cr-b1", "cr-d"], "b is not labelled a block");
        let ended = ["cr-b1".to_owned(), "cr-b2".to_owned(), "cr-d".to_owned()];
        let relabelled: Vec<String> = in_ended(&claims, &ended).iter().map(|c| c.name_any()).collect();
        assert_eq!(relabelled, ["b", "e"]);
    }
}
