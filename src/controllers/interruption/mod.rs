//! Spot interruptions and instance events, from an SQS queue that EventBridge rules feed (the
//! `interruptionQueue` setting). The leader long-polls the queue and handles what each receive
//! returns as one batch; each message is deleted once handled, and a message whose action failed
//! is left for SQS to deliver again.
//!
//! What flows through: a message body → [`messages::parse`] → a notice about instances →
//! [`messages::actions`] with the instances this cluster's NodeClaims own → per instance:
//! interrupt, remove (the instance is already gone: delete the claim), record (an Event), or
//! nothing. Interrupting a batch's nodes takes three steps, in this order: reclaimed spot
//! offerings are marked unavailable; the replacements their pods need are created at once
//! ([`replacement`]: one plan for every node of the batch, without waiting for the pods to go
//! pending); then their NodeClaims are deleted, concurrently, and their termination cordons and
//! drains the nodes and terminates the instances. Garbage, unknown events and instances no claim
//! owns are counted, logged and deleted.

pub mod messages;
pub mod replacement;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use aws_config::SdkConfig;
use futures::StreamExt;
use kube::{
    Api, Resource, ResourceExt,
    api::DeleteParams,
    runtime::{events::EventType, reflector::ObjectRef},
};
use tracing::{info, warn};

use self::messages::{Action, Notice, actions, parse};
use super::{Provider, Shared, disruption::executor::create_replacements, publish};
use crate::{
    apis::{NodeClaim, labels},
    cloudprovider::aws::{
        instances::instance_id,
        queue::{InterruptionQueue, Received},
    },
    metrics::{ActionLabels, KindLabels},
    state::gathered::Gathered,
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
    // Claims interrupted by earlier batches: a duplicate delivery may come before the cache
    // shows the claim being deleted, and must not be replaced twice.
    let mut interrupted_before = HashSet::new();
    loop {
        let received = match connected.receive().await {
            Ok(received) => received,
            Err(error) => {
                warn!(%error, queue = %queue, "cannot receive from the interruption queue");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if !received.is_empty() {
            info!(messages = received.len(), "received from the interruption queue");
        }
        let batch = Batch { received_at: Instant::now(), act_on_rebalance, acted: Mutex::default() };
        interrupted_before.retain(|claim: &String| shared.state.claims.get(&ObjectRef::new(claim)).is_some());
        batch.handle(&shared, &connected, received, &mut interrupted_before).await;
    }
}

/// One receive's messages: when they arrived (the reaction metrics count from there).
struct Batch {
    received_at: Instant,
    act_on_rebalance: bool,
    /// Claims acted on so far.
    acted: Mutex<HashSet<String>>,
}

/// A message with what it asks for, per instance.
struct Understood {
    message: Received,
    notice: Notice,
    actions: Vec<(String, Action)>,
}

impl Batch {
    /// Handles the batch; adds the claims it interrupts to `interrupted_before`, and interrupts
    /// none of those again.
    async fn handle<P: Provider>(
        &self,
        shared: &Shared<P>,
        queue: &InterruptionQueue,
        received: Vec<Received>,
        interrupted_before: &mut HashSet<String>,
    ) {
        let owners = owners(shared);
        let understood: Vec<Understood> =
            received.into_iter().map(|message| self.understand(shared, &owners, message)).collect();
        let interrupted = self.mark_reclaimed(shared, &understood, interrupted_before);
        interrupted_before.extend(interrupted.iter().cloned());
        let replacements = match interrupted.is_empty() {
            true => String::new(),
            false => self.replace(shared, &interrupted).await,
        };
        futures::stream::iter(understood)
            .for_each_concurrent(None, |message| self.settle(shared, queue, message, &replacements))
            .await;
    }

    /// Parses a message, counts it and what it asks for.
    fn understand<P>(&self, shared: &Shared<P>, owners: &HashMap<String, String>, message: Received) -> Understood {
        let parsed = parse(&message.body);
        let metrics = &shared.metrics;
        metrics.interruption_messages.get_or_create(&KindLabels { kind: parsed.notice.kind().into() }).inc();
        if let Some(age) = parsed.time.or(message.sent).and_then(|at| (chrono::Utc::now() - at).to_std().ok()) {
            metrics.interruption_message_age.observe(age.as_secs_f64());
        }
        if let Notice::Ignored(why) = &parsed.notice {
            info!(?why, "ignoring an interruption-queue message");
        }
        let actions = actions(&parsed.notice, owners, self.act_on_rebalance);
        for (instance, action) in &actions {
            metrics.interruption_actions.get_or_create(&ActionLabels { action: action.label().into() }).inc();
            if !owners.contains_key(instance) {
                info!(instance = %instance, kind = parsed.notice.kind(), "no NodeClaim of this cluster owns the instance");
            }
        }
        Understood { message, notice: parsed.notice, actions }
    }

    /// Marks the spot offerings the batch says are reclaimed unavailable (so no replacement
    /// lands on them), and names the claims to interrupt that are not yet going (nor among
    /// `before`).
    fn mark_reclaimed<P: Provider>(
        &self,
        shared: &Shared<P>,
        understood: &[Understood],
        before: &HashSet<String>,
    ) -> HashSet<String> {
        let mut interrupted = HashSet::new();
        for (claim_name, mark_unavailable) in
            understood.iter().flat_map(|u| &u.actions).filter_map(|(_, action)| match action {
                Action::Interrupt { claim, mark_unavailable } => Some((claim, *mark_unavailable)),
                _ => None,
            })
        {
            let Some(claim) = shared.state.claims.get(&ObjectRef::new(claim_name)) else { continue };
            if claim.metadata.deletion_timestamp.is_some() || before.contains(claim_name) {
                // A duplicate delivery: replaced and draining already.
                continue;
            }
            if mark_unavailable
                && let Some(status) = &claim.status
                && let (Some(instance_type), Some(zone), Some(labels::CAPACITY_TYPE_SPOT)) =
                    (&status.instance_type, &status.zone, status.capacity_type.as_deref())
            {
                shared.provider.offering_interrupted(instance_type, zone, labels::CAPACITY_TYPE_SPOT);
            }
            interrupted.insert(claim_name.clone());
        }
        interrupted
    }

    /// Creates the replacements for the interrupted claims' nodes ([`replace_nodes`]), each
    /// counted with the time since the batch was received.
    async fn replace<P: Provider>(&self, shared: &Shared<P>, interrupted: &HashSet<String>) -> String {
        let (note, created) = replace_nodes(shared, interrupted).await;
        for _ in 0..created {
            shared.metrics.interruption_replacement.observe(self.received_at.elapsed().as_secs_f64());
        }
        note
    }

    /// Acts on each instance a message names, then deletes the message unless an action failed.
    async fn settle<P: Provider>(
        &self,
        shared: &Shared<P>,
        queue: &InterruptionQueue,
        understood: Understood,
        replacements: &str,
    ) {
        let Understood { message, notice, actions } = understood;
        let mut handled = true;
        for (instance, action) in actions {
            if let Err(error) = self.act(shared, &notice, &instance, action, replacements).await {
                warn!(%error, instance = %instance, "interruption action failed; the message will come again");
                handled = false;
            }
        }
        if handled && let Err(error) = queue.delete(&message.receipt).await {
            warn!(%error, "cannot delete a handled interruption-queue message");
        }
    }

    /// Acts on one instance: Events on its claim and node, then (unless only recorded) the
    /// claim deleted. Once per claim and batch: a duplicate delivered in the same batch is
    /// handled by whichever message comes first.
    async fn act<P: Provider>(
        &self,
        shared: &Shared<P>,
        notice: &Notice,
        instance: &str,
        action: Action,
        replacements: &str,
    ) -> Result<(), kube::Error> {
        let (claim_name, reason, note) = match &action {
            Action::Nothing => return Ok(()),
            Action::Interrupt { claim, .. } => {
                let then = if replacements.is_empty() { String::new() } else { format!("; {replacements}") };
                (claim, "Interrupted", format!("{} for instance {instance}: draining the node{then}", describe(notice)))
            }
            Action::Remove { claim } => (claim, "InstanceTerminated", format!("Instance {instance} was terminated")),
            Action::Record { claim } => {
                (claim, "RebalanceRecommended", format!("EC2 recommends moving off instance {instance}"))
            }
        };
        if !self.acted.lock().unwrap_or_else(PoisonError::into_inner).insert(claim_name.clone()) {
            return Ok(());
        }
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
        let first = claim.metadata.deletion_timestamp.is_none();
        if first {
            info!(nodeclaim = %claim_name, instance = %instance, reason, "deleting the NodeClaim");
            shared.metrics.disrupted(&claim, reason);
        }
        let claims: Api<NodeClaim> = Api::all(shared.client.clone());
        match claims.delete(claim_name, &DeleteParams::default()).await {
            Ok(_) => {
                if first && matches!(action, Action::Interrupt { .. }) {
                    shared.metrics.interruption_drain.observe(self.received_at.elapsed().as_secs_f64());
                }
                Ok(())
            }
            // A duplicate delivery, or the claim went meanwhile.
            Err(kube::Error::Api(response)) if response.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// Creates the NodeClaims the pods of the `going` claims' nodes need, before those are drained
/// (one plan for them all, without waiting for the pods to go pending); says which for the
/// Events, and how many. A failure is logged and not retried: the provisioner still places the
/// pods when the drain evicts them. The nodes of Capacity Blocks about to end are replaced so
/// too ([`reservations`](super::reservations)).
pub async fn replace_nodes<P: Provider>(shared: &Shared<P>, going: &HashSet<String>) -> (String, usize) {
    let pools = shared.state.pools_at(chrono::Utc::now());
    let instance_types = shared.instance_types(&pools).await;
    let gathered = Gathered::of(&shared.state);
    let plan = {
        let (index, facts) = (shared.state.pod_index(), shared.state.node_facts());
        let snapshot = gathered.snapshot(&index, &facts, &pools, &instance_types, shared.policies);
        replacement::plan(&snapshot, &replacement::draining(&gathered.claims, going))
    };
    for (pod, reason) in &plan.unschedulable {
        warn!(pod = %pod, %reason, "no room for a pod of a node about to go");
    }
    if plan.new_claims.is_empty() {
        return ("its pods fit on other nodes".into(), 0);
    }
    let claims: Api<NodeClaim> = Api::all(shared.client.clone());
    match create_replacements(shared, &claims, &plan.new_claims, &pools).await {
        Ok(Some(created)) => {
            let names: Vec<String> = created.iter().map(|c| format!("nodeclaim/{}", c.name_any())).collect();
            info!(replacements = ?names, going = going.len(), "created replacements for nodes about to go");
            (format!("replaced by {}", names.join(", ")), created.len())
        }
        Ok(None) => ("its pods wait for the provisioner (a NodePool went)".into(), 0),
        Err(error) => {
            warn!(%error, "cannot create replacements for nodes about to go; the provisioner places their pods");
            ("its pods wait for the provisioner".into(), 0)
        }
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
