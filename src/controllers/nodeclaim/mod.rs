//! The NodeClaim controller: read the claim and its Node → decide the next step (pure, in
//! [`lifecycle`]) → dispatch it to its room: [`launch`], [`registration`], initialization (a
//! status mark, here), [`termination`]. Writes status and Events.
//!
//! Deletion (of the claim, or of its Node, which holds stoker's finalizer) drains the Node
//! through the Eviction API, terminates the instance, waits for it to go, removes the Node, and
//! only then releases the claim's finalizer (through [`finalizer`], as every kind does). Every step reads the world again, so a controller
//! killed at any point resumes where it was.

mod backoff;
mod handoff;
mod launch;
mod launched;
pub mod lifecycle;
mod registration;
mod termination;

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Resource, ResourceExt,
    api::DeleteParams,
    core::DeserializeGuard,
    runtime::{Controller, controller::Action, events::EventType, reflector::ObjectRef, watcher},
};
use tracing::{info, instrument, warn};

pub use self::handoff::NewClaims;
use self::lifecycle::{Step, next_step};
use crate::apis::condition;
use crate::controllers;
use crate::controllers::Provider;
use crate::{
    apis::{NodeClaim, labels, nodeclaim::NodeClaimStatus},
    controllers::{
        Shared, conditions, drain, finalizer,
        isolation::{self, Reporter, Shown},
        publish,
    },
    error::{Error, Result},
    metrics::ClaimLabels,
};

/// Held on NodeClaims and their Nodes until the instance is gone.
pub const FINALIZER: &str = "stoker.dev/termination";

/// The NodeClaim controller's context: what all controllers share, the hand-off from this
/// term's provisioner, the term's failed and recent launches, and how long a node may stay
/// unhealthy.
pub struct Context<P> {
    pub shared: Arc<Shared<P>>,
    pub new_claims: NewClaims,
    pub backoff: backoff::LaunchBackoff,
    pub launches: launched::Launches,
    pub repair_after: chrono::TimeDelta,
}

impl<P> Context<P> {
    pub fn new(shared: Arc<Shared<P>>, new_claims: NewClaims, repair_after: chrono::TimeDelta) -> Self {
        Self {
            shared,
            new_claims,
            backoff: backoff::LaunchBackoff::default(),
            launches: launched::Launches::default(),
            repair_after,
        }
    }

    /// Whether few enough of the claim's pool are due for repair that repairing helps: at most
    /// 20% of its nodes, rounded up (more suggests a cause no new node fixes).
    fn repair_allowed(&self, claim: &NodeClaim, now: chrono::DateTime<Utc>) -> bool {
        let pool = claim.labels().get(labels::NODEPOOL);
        let nodes: Vec<Arc<Node>> =
            self.state.nodes.state().into_iter().filter(|n| n.labels().get(labels::NODEPOOL) == pool).collect();
        let due =
            nodes.iter().filter(|n| lifecycle::repair_due(n, self.repair_after).is_some_and(|d| d <= now)).count();
        due <= nodes.len().saturating_mul(20).div_ceil(100)
    }
}

impl<P> std::ops::Deref for Context<P> {
    type Target = Shared<P>;

    fn deref(&self) -> &Shared<P> {
        &self.shared
    }
}

impl<P> Context<P> {
    fn node_for(&self, claim: &NodeClaim) -> Option<Arc<Node>> {
        let id = claim.status.as_ref()?.provider_id.as_deref()?;
        self.state
            .nodes
            .state()
            .into_iter()
            .find(|node| node.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(id))
    }
}

#[instrument(skip_all, fields(nodeclaim = %claim.name_any()))]
async fn reconcile<P: Provider + 'static>(claim: Arc<NodeClaim>, ctx: &Context<P>) -> Result<Action> {
    finalizer::reconcile(
        &claims(ctx),
        FINALIZER,
        &*claim,
        || advance(&claim, ctx),
        || termination::terminate(&claim, ctx),
    )
    .await
}

/// Takes a live claim one step further.
async fn advance<P: Provider + 'static>(claim: &NodeClaim, ctx: &Context<P>) -> Result<Action> {
    let node = ctx.node_for(claim);
    if let Some(node) = &node
        && node.metadata.deletion_timestamp.is_some()
    {
        info!(node = %node.name_any(), "node deleted: deleting its NodeClaim");
        claims(ctx).delete(&claim.name_any(), &DeleteParams::default()).await?;
        return Ok(Action::await_change());
    }
    let now = Utc::now();
    match next_step(claim, node.as_deref(), now, ctx.repair_after) {
        Step::Expire => {
            let lifetime = claim.spec.expire_after.map(|e| e.to_string()).unwrap_or_default();
            let note = format!("Expired: older than its expireAfter ({lifetime}); replacing it");
            info!(%note, "expiring");
            apply_status(claim, ctx, |status| {
                status.conditions = conditions::set(
                    &status.conditions,
                    condition::EXPIRED,
                    true,
                    "Expired",
                    &note,
                    claim.metadata.generation,
                );
            })
            .await?;
            ctx.metrics.disrupted(claim, "Expired");
            publish(&ctx.recorder, &claim.object_ref(&()), EventType::Normal, "Expired", note).await;
            claims(ctx).delete(&claim.name_any(), &DeleteParams::default()).await?;
            Ok(Action::await_change())
        }
        Step::Launch => launch::launch(claim, ctx).await,
        Step::LaunchTimeout => {
            let note = format!(
                "Not launched within {} minutes of its creation: deleting it so its pods are planned again",
                lifecycle::LAUNCH_TTL.num_minutes()
            );
            warn!(%note, "giving up the launch");
            ctx.metrics.disrupted(claim, "LaunchTimeout");
            publish(&ctx.recorder, &claim.object_ref(&()), EventType::Warning, "LaunchTimeout", note).await;
            claims(ctx).delete(&claim.name_any(), &DeleteParams::default()).await?;
            Ok(Action::await_change())
        }
        Step::AwaitNode => Ok(Action::requeue(Duration::from_secs(30))),
        Step::GiveUp => {
            let note =
                format!("No node registered within {} minutes of launch", lifecycle::REGISTRATION_TTL.num_minutes());
            warn!(%note, "giving up");
            ctx.metrics.disrupted(claim, "RegistrationTimeout");
            publish(&ctx.recorder, &claim.object_ref(&()), EventType::Warning, "RegistrationTimeout", note).await;
            claims(ctx).delete(&claim.name_any(), &DeleteParams::default()).await?;
            Ok(Action::await_change())
        }
        Step::Register => match &node {
            Some(node) => registration::register(claim, node, ctx).await,
            None => Ok(Action::await_change()),
        },
        Step::AwaitInitialization => Ok(Action::requeue(Duration::from_secs(30))),
        Step::Initialize => {
            apply_status(claim, ctx, |status| mark(status, claim, &[condition::INITIALIZED, condition::READY])).await?;
            info!("initialized");
            ctx.metrics.nodeclaims_initialized.get_or_create(&ClaimLabels::of(claim)).inc();
            Ok(Action::await_change())
        }
        Step::Repair if !ctx.repair_allowed(claim, now) => {
            warn!("node unhealthy, but so is more than 20% of its NodePool: not repairing");
            Ok(Action::requeue(Duration::from_secs(60)))
        }
        Step::Repair => {
            let node = node.as_ref().map(|n| n.name_any()).unwrap_or_default();
            let note =
                format!("Node {node} not Ready for more than {}: replacing it without draining", ctx.repair_after);
            warn!(%note, "repairing");
            apply_status(claim, ctx, |status| {
                status.conditions = conditions::set(
                    &status.conditions,
                    condition::UNHEALTHY,
                    true,
                    "NodeNotReady",
                    &note,
                    claim.metadata.generation,
                );
            })
            .await?;
            ctx.metrics.disrupted(claim, "Unhealthy");
            publish(&ctx.recorder, &claim.object_ref(&()), EventType::Warning, "NodeRepair", note).await;
            claims(ctx).delete(&claim.name_any(), &DeleteParams::default()).await?;
            Ok(Action::await_change())
        }
        // Woken again when it expires or its node is due for repair (at least hourly, so a
        // changed clock is caught).
        Step::Done => {
            let repair = node.as_deref().and_then(|n| lifecycle::repair_due(n, ctx.repair_after));
            Ok(match lifecycle::expires_at(claim).into_iter().chain(repair).min() {
                Some(at) => {
                    Action::requeue((at - now).to_std().unwrap_or_default().clamp(Duration::from_secs(1), HOUR))
                }
                None => Action::await_change(),
            })
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);

fn claims<P>(ctx: &Context<P>) -> Api<NodeClaim> {
    Api::all(ctx.client.clone())
}

/// Applies the claim's whole status after `change` (see [`controllers::apply_status`]).
async fn apply_status<P>(claim: &NodeClaim, ctx: &Context<P>, change: impl FnOnce(&mut NodeClaimStatus)) -> Result<()> {
    let mut status = claim.status.clone().unwrap_or_default();
    change(&mut status);
    controllers::apply_status(&claims(ctx), &claim.name_any(), &status).await?;
    Ok(())
}

/// Sets conditions to True, as part of a status change.
fn mark(status: &mut NodeClaimStatus, claim: &NodeClaim, types: &[&str]) {
    for type_ in types {
        status.conditions = conditions::set(&status.conditions, type_, true, type_, "", claim.metadata.generation);
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

fn error_policy<P>(_claim: Arc<DeserializeGuard<NodeClaim>>, error: &Error, ctx: Arc<Context<P>>) -> Action {
    // A conflict means the object moved under us (kwok heartbeats a Node): just read again.
    if matches!(error, Error::Kube(kube::Error::Api(status)) if status.code == 409) {
        tracing::debug!(%error, "conflict; retrying");
        return Action::requeue(Duration::from_millis(500));
    }
    // Gone while a stale reconcile ran (its finalizer was just released): nothing to do.
    if matches!(error, Error::Kube(error) if is_not_found(error)) {
        return Action::await_change();
    }
    warn!(%error, kind = error.metric_label(), "reconcile failed");
    ctx.metrics.reconcile_failed("nodeclaim", error);
    Action::requeue(Duration::from_secs(10))
}

/// Runs the NodeClaim controller until shutdown; Node changes wake the claim they belong to.
pub async fn run<P: Provider + 'static>(ctx: Arc<Context<P>>) {
    let claims: Api<DeserializeGuard<NodeClaim>> = Api::all(ctx.client.clone());
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let controller = Controller::new(claims, watcher::Config::default());
    let store = controller.store();
    let results = controller
        .watches(nodes, watcher::Config::default(), move |node: Node| {
            let id = node.spec.as_ref().and_then(|s| s.provider_id.clone());
            let by_label = node.labels().get(labels::NODECLAIM).cloned();
            let by_id = store
                .state()
                .into_iter()
                .filter_map(|guarded| guarded.0.as_ref().ok().cloned())
                .find(|claim| id.is_some() && claim.status.as_ref().and_then(|s| s.provider_id.clone()) == id)
                .map(|claim| claim.name_any());
            by_label.or(by_id).map(|name| ObjectRef::<DeserializeGuard<NodeClaim>>::new(&name))
        })
        .shutdown_on_signal()
        .run(
            |claim, ctx: Arc<Context<P>>| async move {
                let reporter = Reporter {
                    controller: "nodeclaim",
                    client: &ctx.client,
                    recorder: &ctx.recorder,
                    metrics: &ctx.metrics,
                };
                // Event only: its status holds the instance, which must survive until it is fixed.
                isolation::dispatch(claim, reporter, Shown::EventOnly, |claim| reconcile(claim, &ctx)).await
            },
            error_policy,
            ctx,
        );
    drain(results, "nodeclaim").await;
}
