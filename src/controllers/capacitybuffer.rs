//! The CapacityBuffer controller: every few seconds, read each buffer's resolution (from the
//! caches, `state::buffers`) and what the provisioner's last simulation did with its virtual pods
//! ([`Outcomes`]) → decide its status (pure, [`status`]) → apply it when it changed, with an Event
//! when the buffer resizes or cannot be resolved, and wake the provisioner when a buffer's room is
//! not held yet. The room itself is kept by the provisioner (virtual pods in every batch) and by
//! disruption (which never removes the room the cluster holds for them).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, Resource, ResourceExt, runtime::events::EventType};
use tracing::{info, warn};

use super::{Shared, apply_status, conditions, isolation::isolate, publish};
use crate::{
    apis::{
        capacitybuffer::{CapacityBuffer, CapacityBufferStatus, LocalObjectRef, PROVISIONING, READY_FOR_PROVISIONING},
        condition,
    },
    error::Result,
    scheduling::{
        pod::PodShape,
        quantity::format_resource,
        solver::{Input, Plan},
    },
    state::buffers::{Resolved, Unresolved, buffer_of},
};

/// What the last simulation did with a buffer's virtual pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioning {
    /// Existing or in-flight capacity holds every chunk.
    Fits,
    /// This many chunks needed new NodeClaims, created by that simulation.
    Launching(usize),
    /// Chunks nothing can host, and why (the first one's reason).
    Unschedulable { chunks: usize, reason: String },
}

/// What one simulation did with a buffer's chunks, and which chunks it simulated: an answer for
/// other chunks (the buffer resized or reshaped since) answers nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulated {
    pub chunks: usize,
    pub shape: Arc<PodShape>,
    pub provisioning: Provisioning,
}

impl Simulated {
    /// The answer, if it was for these chunks.
    pub fn for_chunks(&self, resolved: &Resolved) -> Option<&Provisioning> {
        let same = self.chunks == resolved.replicas as usize && *self.shape == *resolved.chunk.shape;
        same.then_some(&self.provisioning)
    }
}

/// The provisioner's last answer per buffer (namespace, name); a buffer with no virtual pods has
/// none.
#[derive(Debug, Default)]
pub struct Outcomes(Mutex<HashMap<(String, String), Simulated>>);

impl Outcomes {
    /// Replaces every answer with what `plan` did with `input`'s virtual pods: each simulation
    /// places every buffer's pods.
    pub fn record(&self, input: &Input, plan: &Plan) {
        let provisioning = outcomes(plan);
        let mut simulated: HashMap<(String, String), Simulated> = HashMap::new();
        for pod in input.pods.iter().filter(|pod| pod.placeholder) {
            let Some((namespace, name)) = buffer_of(&pod.key) else { continue };
            let buffer = (namespace.to_owned(), name.to_owned());
            let Some(outcome) = provisioning.get(&buffer) else { continue };
            let entry = simulated.entry(buffer).or_insert_with(|| Simulated {
                chunks: 0,
                shape: pod.shape.clone(),
                provisioning: outcome.clone(),
            });
            entry.chunks += 1;
        }
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = simulated;
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Simulated> {
        let outcomes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        outcomes.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }
}

/// Per buffer, what `plan` did with its virtual pods: an unschedulable chunk outweighs a launch,
/// a launch outweighs room on existing capacity.
pub fn outcomes(plan: &Plan) -> HashMap<(String, String), Provisioning> {
    let mut outcomes: HashMap<(String, String), Provisioning> = HashMap::new();
    let owner = |key: &str| buffer_of(key).map(|(namespace, name)| (namespace.to_owned(), name.to_owned()));
    for (pod, _) in &plan.existing {
        if let Some(buffer) = owner(pod) {
            outcomes.entry(buffer).or_insert(Provisioning::Fits);
        }
    }
    for pod in plan.new_claims.iter().flat_map(|claim| &claim.pods) {
        if let Some(buffer) = owner(pod) {
            let outcome = outcomes.entry(buffer).or_insert(Provisioning::Launching(0));
            match outcome {
                Provisioning::Fits => *outcome = Provisioning::Launching(1),
                Provisioning::Launching(chunks) => *chunks += 1,
                Provisioning::Unschedulable { .. } => {}
            }
        }
    }
    for (pod, reason) in &plan.unschedulable {
        if let Some(buffer) = owner(pod) {
            let outcome = outcomes.entry(buffer).or_insert(Provisioning::Launching(0));
            match outcome {
                Provisioning::Unschedulable { chunks, .. } => *chunks += 1,
                _ => *outcome = Provisioning::Unschedulable { chunks: 1, reason: reason.clone() },
            }
        }
    }
    outcomes
}

/// A buffer's status: `ReadyForProvisioning` from its resolution, `Provisioning` from the last
/// simulation, and `Ready` when both say its room is held (its reason the more telling of the
/// two, for `kubectl get`'s Status column). Conditions keep their transition times while their
/// status holds.
pub fn status(
    buffer: &CapacityBuffer,
    resolution: &std::result::Result<Resolved, Unresolved>,
    outcome: Option<&Provisioning>,
) -> CapacityBufferStatus {
    let previous = buffer.status.clone().unwrap_or_default();
    let generation = buffer.metadata.generation;
    let set = |conditions: &[Condition], type_: &str, ok: bool, reason: &str, message: &str| {
        conditions::set(conditions, type_, ok, reason, message, generation)
    };
    let resolved = match resolution {
        Err(unresolved) => {
            let (reason, message) = (unresolved.reason(), unresolved.to_string());
            let conditions = set(&previous.conditions, READY_FOR_PROVISIONING, false, reason, &message);
            let conditions = set(&conditions, PROVISIONING, false, "NotReadyForProvisioning", "");
            return CapacityBufferStatus {
                conditions: set(&conditions, condition::READY, false, reason, &message),
                provisioning_strategy: Some(buffer.strategy().to_owned()),
                ..CapacityBufferStatus::default()
            };
        }
        Ok(resolved) => resolved,
    };
    let total = resolved.replicas;
    let (ready, provisioning, reason, message) = match (total, outcome) {
        (0, _) => (true, false, "BufferEmpty", "the buffer keeps no chunks".to_owned()),
        (_, Some(Provisioning::Fits)) => {
            (true, true, "FitsExistingCapacity", format!("existing capacity holds all {total} chunks"))
        }
        (_, Some(Provisioning::Launching(chunks))) => (
            false,
            true,
            "RequiresNewCapacity",
            format!("{chunks} of {total} chunks need new nodes, which are being launched"),
        ),
        (_, Some(Provisioning::Unschedulable { chunks, reason })) => (
            false,
            false,
            "Unschedulable",
            format!("{chunks} of {total} chunks cannot be placed on any NodePool: {reason}"),
        ),
        (_, None) => (false, false, "NotSimulated", "waiting for the next provisioning pass".to_owned()),
    };
    let mut resolved_message = format!("{} chunks of {}", resolved.replicas, shape(resolved));
    if resolved.capped {
        resolved_message
            .push_str(&format!(" (capped: more were asked for than {})", crate::state::buffers::MAX_CHUNKS));
    }
    let conditions = set(&previous.conditions, READY_FOR_PROVISIONING, true, "Resolved", &resolved_message);
    let conditions = set(&conditions, PROVISIONING, provisioning, reason, &message);
    let conditions = set(&conditions, condition::READY, ready, reason, &message);
    CapacityBufferStatus {
        pod_template_ref: resolved.pod_template.as_ref().map(|(name, _)| LocalObjectRef { name: name.clone() }),
        pod_template_generation: resolved.pod_template.as_ref().and_then(|(_, generation)| *generation),
        replicas: Some(resolved.replicas),
        conditions,
        provisioning_strategy: Some(buffer.strategy().to_owned()),
    }
}

/// A chunk's requests, as a person reads them (`cpu 1500m, memory 1Gi`).
fn shape(resolved: &Resolved) -> String {
    let requests = resolved.chunk.requests.iter().filter(|(name, _)| *name != crate::scheduling::resources::PODS);
    requests.map(|(name, amount)| format!("{name} {}", format_resource(name, amount))).collect::<Vec<_>>().join(", ")
}

/// How often every buffer's status is brought up to date.
const PASS: Duration = Duration::from_secs(5);

/// Runs passes until the term ends; returns at once where the CapacityBuffer API is not served.
pub async fn run<P: Send + Sync + 'static>(ctx: Arc<Shared<P>>) {
    let Some(sources) = ctx.state.buffers.clone() else { return };
    let mut ticks = tokio::time::interval(PASS);
    loop {
        ticks.tick().await;
        // One buffer's failure (or panic) never stops the others'.
        for (buffer, resolution) in sources.resolved() {
            if let Err(error) = isolate("capacitybuffer", &ctx.metrics, reconcile(&ctx, &buffer, &resolution)).await {
                warn!(%error, capacitybuffer = %buffer.name_any(), namespace = buffer.namespace().unwrap_or_default(), "reconcile failed");
                ctx.metrics.reconcile_failed("capacitybuffer", &error);
            }
        }
    }
}

async fn reconcile<P>(
    ctx: &Shared<P>,
    buffer: &CapacityBuffer,
    resolution: &std::result::Result<Resolved, Unresolved>,
) -> Result<()> {
    let (namespace, name) = (buffer.namespace().unwrap_or_default(), buffer.name_any());
    let simulated = ctx.buffer_outcomes.get(&namespace, &name);
    let outcome = resolution.as_ref().ok().and_then(|resolved| simulated.as_ref()?.for_chunks(resolved));
    let desired = status(buffer, resolution, outcome);
    let previous = buffer.status.clone().unwrap_or_default();
    // Chunks the provisioner has not simulated yet: its next batch should not wait for the tick.
    if resolution.as_ref().is_ok_and(|r| r.replicas > 0) && outcome.is_none() {
        ctx.provisionable.notify_one();
    }
    if desired == previous {
        return Ok(());
    }
    let api: Api<CapacityBuffer> = Api::namespaced(ctx.client.clone(), &namespace);
    apply_status(&api, &name, &desired).await?;

    let reference = buffer.object_ref(&());
    let was_resolved =
        |reason: &str| previous.conditions.iter().any(|c| c.type_ == READY_FOR_PROVISIONING && c.reason == reason);
    match resolution {
        Err(unresolved) if !was_resolved(unresolved.reason()) => {
            warn!(capacitybuffer = %name, %namespace, problem = %unresolved, "cannot resolve");
            publish(&ctx.recorder, &reference, EventType::Warning, unresolved.reason(), unresolved.to_string()).await;
        }
        Ok(resolved) if previous.replicas != Some(resolved.replicas) => {
            let note = match previous.replicas {
                Some(before) => format!("Keeping {} chunks of {} (was {before})", resolved.replicas, shape(resolved)),
                None => format!("Keeping {} chunks of {}", resolved.replicas, shape(resolved)),
            };
            info!(capacitybuffer = %name, %namespace, replicas = resolved.replicas, "resized");
            publish(&ctx.recorder, &reference, EventType::Normal, "Resized", note).await;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
#[path = "capacitybuffer_tests.rs"]
mod tests;
