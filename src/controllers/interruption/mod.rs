//! Spot interruptions and instance events, from an SQS queue that EventBridge rules feed (the
//! `interruptionQueue` setting). The leader long-polls the queue, handles each batch's messages
//! concurrently, and deletes each message once it is handled; a message whose action failed is
//! left for SQS to deliver again.
//!
//! What flows through: a message body → [`messages::parse`] → a notice about instances →
//! [`messages::actions`] with the instances this cluster's NodeClaims own → per instance:
//! interrupt (mark a reclaimed spot offering unavailable, then delete the NodeClaim: its
//! termination cordons and drains the node and terminates the instance), remove (the instance is
//! already gone: delete the claim), record (an Event), or nothing. Garbage, unknown events and
//! instances no claim owns are counted, logged and deleted.

pub mod messages;

use std::{collections::HashMap, sync::Arc, time::Duration};

use aws_config::SdkConfig;
use futures::StreamExt;
use kube::{
    Api, Resource, ResourceExt,
    api::DeleteParams,
    runtime::{events::EventType, reflector::ObjectRef},
};
use tracing::{info, warn};

use self::messages::{Action, Notice, actions, parse};
use super::{Provider, Shared, publish};
use crate::{
    apis::{NodeClaim, labels},
    cloudprovider::aws::{
        instances::instance_id,
        queue::{InterruptionQueue, Received},
    },
    metrics::{ActionLabels, KindLabels},
};

/// Wait before asking again after the queue could not be reached.
const RETRY: Duration = Duration::from_secs(10);

/// Polls the queue named `queue` until the leader term ends.
pub async fn run<P: Provider>(shared: Arc<Shared<P>>, config: SdkConfig, queue: String, act_on_rebalance: bool) {
    let connected = loop {
        match InterruptionQueue::connect(&config, &queue).await {
            Ok(connected) => break connected,
            Err(error) => {
                warn!(%error, queue = %queue, "cannot find the interruption queue; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    info!(queue = %queue, "watching the interruption queue");
    loop {
        let received = match connected.receive().await {
            Ok(received) => received,
            Err(error) => {
                warn!(%error, queue = %queue, "cannot receive from the interruption queue");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        futures::stream::iter(received)
            .for_each_concurrent(None, |message| handle(&shared, &connected, message, act_on_rebalance))
            .await;
    }
}

/// Handles one message and deletes it, unless an action failed.
async fn handle<P: Provider>(shared: &Shared<P>, queue: &InterruptionQueue, message: Received, act_on_rebalance: bool) {
    let parsed = parse(&message.body);
    let metrics = &shared.metrics;
    metrics.interruption_messages.get_or_create(&KindLabels { kind: parsed.notice.kind().into() }).inc();
    if let Some(age) = parsed.time.or(message.sent).and_then(|at| (chrono::Utc::now() - at).to_std().ok()) {
        metrics.interruption_message_age.observe(age.as_secs_f64());
    }
    if let Notice::Ignored(why) = &parsed.notice {
        info!(?why, "ignoring an interruption-queue message");
    }
    let mut handled = true;
    let owners = owners(shared);
    for (instance, action) in actions(&parsed.notice, &owners, act_on_rebalance) {
        metrics.interruption_actions.get_or_create(&ActionLabels { action: action.label().into() }).inc();
        if !owners.contains_key(&instance) {
            info!(instance = %instance, kind = parsed.notice.kind(), "no NodeClaim of this cluster owns the instance");
        }
        if let Err(error) = act(shared, &parsed.notice, &instance, action).await {
            warn!(%error, instance = %instance, "interruption action failed; the message will come again");
            handled = false;
        }
    }
    if handled && let Err(error) = queue.delete(&message.receipt).await {
        warn!(%error, "cannot delete a handled interruption-queue message");
    }
}

/// Instance IDs of this cluster's NodeClaims, with the claim's name.
fn owners<P: Provider>(shared: &Shared<P>) -> HashMap<String, String> {
    shared
        .state
        .claims
        .state()
        .iter()
        .filter_map(|claim| {
            let provider_id = claim.status.as_ref()?.provider_id.as_deref()?;
            Some((instance_id(provider_id).ok()?.to_owned(), claim.name_any()))
        })
        .collect()
}

async fn act<P: Provider>(
    shared: &Shared<P>,
    notice: &Notice,
    instance: &str,
    action: Action,
) -> Result<(), kube::Error> {
    let (claim_name, reason, note) = match &action {
        Action::Nothing => return Ok(()),
        Action::Interrupt { claim, .. } => {
            (claim, "Interrupted", format!("{} for instance {instance}: draining the node", describe(notice)))
        }
        Action::Remove { claim } => (claim, "InstanceTerminated", format!("Instance {instance} was terminated")),
        Action::Record { claim } => {
            (claim, "RebalanceRecommended", format!("EC2 recommends moving off instance {instance}"))
        }
    };
    let Some(claim) = shared.state.claims.get(&ObjectRef::new(claim_name)) else { return Ok(()) };
    publish(&shared.recorder, &claim.object_ref(&()), EventType::Warning, reason, note.clone()).await;
    if matches!(action, Action::Record { .. }) {
        return Ok(());
    }
    if let Some(node) = claim.status.as_ref().and_then(|s| s.node_name.as_deref())
        && let Some(node) = shared.state.nodes.get(&ObjectRef::new(node))
    {
        publish(&shared.recorder, &node.object_ref(&()), EventType::Warning, reason, note).await;
    }
    if let Action::Interrupt { mark_unavailable: true, .. } = action
        && let Some(status) = &claim.status
        && let (Some(instance_type), Some(zone), Some(labels::CAPACITY_TYPE_SPOT)) =
            (&status.instance_type, &status.zone, status.capacity_type.as_deref())
    {
        shared.provider.offering_interrupted(instance_type, zone, labels::CAPACITY_TYPE_SPOT);
    }
    if claim.metadata.deletion_timestamp.is_none() {
        info!(nodeclaim = %claim_name, instance = %instance, reason, "deleting the NodeClaim");
        shared.metrics.disrupted(&claim, reason);
    }
    let claims: Api<NodeClaim> = Api::all(shared.client.clone());
    match claims.delete(claim_name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        // A duplicate delivery, or the claim went meanwhile.
        Err(kube::Error::Api(response)) if response.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// What a person reads in the Event.
fn describe(notice: &Notice) -> String {
    match notice {
        Notice::SpotInterruption { .. } => "Spot interruption warning".into(),
        Notice::Rebalance { .. } => "Rebalance recommendation".into(),
        Notice::StateChange { state, .. } => format!("Instance state changed to {state}"),
        Notice::ScheduledChange { .. } => "AWS Health scheduled change".into(),
        Notice::Ignored(_) => "Ignored message".into(),
    }
}
