//! Launch: the claim's node class from the cache (or the apiserver, for a class just created),
//! one call to the cloud provider (none for a claim this term launched moments ago: see
//! [`super::launched`]), then the instance's labels on the claim and its type's capacity in
//! status. A capacity error deletes the claim so its pods are planned again without
//! the offerings that failed; any other error stays on the claim as `Launched=False`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};
use serde_json::json;
use tracing::{debug, info, warn};

use super::{Context, apply_status, claims, launched::Known, mark};
use crate::apis::condition;
use crate::controllers::Provider;
use crate::{
    apis::{EC2NodeClass, NodeClaim, labels},
    cloudprovider::CloudError,
    controllers::{conditions, publish},
    error::Result,
    metrics::{ClaimLabels, CodeLabels},
};

pub(super) async fn launch<P: Provider>(claim: &NodeClaim, ctx: &Context<P>) -> Result<Action> {
    let uid = claim.uid().unwrap_or_default();
    if let Some(wait) = ctx.backoff.wait(&uid) {
        return Ok(Action::requeue(wait));
    }
    let known = ctx.launches.recall(&uid);
    if known == Some(Known::Recorded) {
        debug!("launched and written moments ago; waiting for the cache to show it");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    info!("launching");
    let reference = claim.object_ref(&());
    let class_name = &claim.spec.node_class_ref.name;
    let class = match ctx.state.classes.get(&ObjectRef::new(class_name)) {
        Some(class) => class,
        // Not in the cache yet (just created): ask the apiserver.
        None => Arc::new(Api::<EC2NodeClass>::all(ctx.client.clone()).get(class_name).await?),
    };
    let launched = match known {
        Some(Known::Launched(instance)) => Ok(*instance),
        _ => {
            let prior = ctx.new_claims.take(claim).await;
            ctx.provider.create(claim, &class, prior, ctx.new_claims.followers()).await
        }
    };
    let instance = match launched {
        Ok(instance) => instance,
        Err(error @ (CloudError::InsufficientCapacity { .. } | CloudError::NoCompatibleOfferings(_))) => {
            // The next batch plans again without what failed (the unavailable cache knows).
            ctx.metrics.launch_failures.get_or_create(&CodeLabels { code: error.reason().to_owned() }).inc();
            let note = format!("Launch failed, deleting the NodeClaim so its pods are planned again: {error}");
            warn!(%error, "launch failed");
            ctx.metrics.disrupted(claim, "LaunchFailed");
            publish(&ctx.recorder, &reference, EventType::Warning, "LaunchFailed", note).await;
            claims(ctx).delete(&claim.name_any(), &DeleteParams::default()).await?;
            ctx.backoff.forget(&uid);
            return Ok(Action::await_change());
        }
        Err(error) => {
            ctx.metrics.launch_failures.get_or_create(&CodeLabels { code: error.reason().to_owned() }).inc();
            let message = error.to_string();
            apply_status(claim, ctx, |status| {
                status.conditions = conditions::set(
                    &status.conditions,
                    condition::LAUNCHED,
                    false,
                    error.reason(),
                    &message,
                    claim.metadata.generation,
                );
            })
            .await?;
            let wait = ctx.backoff.failed(&uid);
            warn!(%error, retry_in = ?wait, "launch failed");
            publish(&ctx.recorder, &reference, EventType::Warning, "LaunchFailed", message).await;
            return Ok(Action::requeue(wait));
        }
    };
    ctx.backoff.forget(&uid);
    ctx.launches.launched(&uid, &instance);
    // The launched type's labels, capacity and allocatable, from the catalog.
    let launched_type =
        ctx.provider.instance_types(&class).await?.iter().find(|t| t.name == instance.instance_type).cloned();
    let mut instance_labels: BTreeMap<String, String> =
        launched_type.as_ref().map(|t| (*t.labels).clone()).unwrap_or_default();
    instance_labels.insert(labels::ZONE.into(), instance.zone.clone());
    let zone_id =
        launched_type.iter().flat_map(|t| &t.offerings).find(|o| o.zone == instance.zone && !o.zone_id.is_empty());
    if let Some(offering) = zone_id {
        instance_labels.insert(labels::ZONE_ID.into(), offering.zone_id.clone());
    }
    instance_labels.insert(labels::CAPACITY_TYPE.into(), instance.capacity_type.clone());
    if let Some(reservation) = &instance.capacity_reservation {
        instance_labels.insert(labels::CAPACITY_RESERVATION_ID.into(), reservation.clone());
        // Its kind as the class resolved it (a block's nodes are drained before it ends).
        let resolved = class.status.iter().flat_map(|s| &s.capacity_reservations).find(|r| r.id == *reservation);
        if let Some(resolved) = resolved {
            instance_labels.insert(labels::CAPACITY_RESERVATION_TYPE.into(), resolved.reservation_type.clone());
        }
    }
    instance_labels.insert(labels::INSTANCE_TYPE.into(), instance.instance_type.clone());
    let patch = json!({"metadata": {"labels": instance_labels}});
    claims(ctx).patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    apply_status(claim, ctx, |status| {
        status.provider_id = Some(instance.provider_id.clone());
        status.instance_type = Some(instance.instance_type.clone());
        status.zone = Some(instance.zone.clone());
        status.capacity_type = Some(instance.capacity_type.clone());
        status.image_id = Some(instance.image_id.clone());
        status.subnet_id = Some(instance.subnet_id.clone()).filter(|id| !id.is_empty());
        status.security_group_ids = instance.security_group_ids.clone();
        if let Some(launched) = &launched_type {
            status.capacity = launched.capacity.to_quantities();
            status.allocatable = launched.allocatable.to_quantities();
        }
        mark(status, claim, &[condition::LAUNCHED]);
    })
    .await?;
    ctx.launches.recorded(&uid);
    let note = format!(
        "Launched {} {} in {} ({})",
        instance.capacity_type, instance.instance_type, instance.zone, instance.id
    );
    publish(&ctx.recorder, &reference, EventType::Normal, "Launched", note).await;
    let launched = ClaimLabels { capacity_type: instance.capacity_type.clone(), ..ClaimLabels::of(claim) };
    ctx.metrics.nodeclaims_launched.get_or_create(&launched).inc();
    Ok(Action::requeue(Duration::from_secs(30)))
}
