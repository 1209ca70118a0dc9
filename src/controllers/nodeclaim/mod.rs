//! The NodeClaim controller: read the claim and its Node → decide the next step (pure, in
//! `lifecycle`) → launch through the cloud provider, sync the Node at registration, mark
//! initialization → write status and Events.
//!
//! Deletion (of the claim, or of its Node, which holds stoker's finalizer) drains the Node
//! through the Eviction API, terminates the instance, waits for it to go, removes the Node, and
//! only then releases the claim's finalizer. Every step reads the world again, so a controller
//! killed at any point resumes where it was.

pub mod lifecycle;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use chrono::Utc;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams},
    core::DeserializeGuard,
    runtime::{
        Controller,
        controller::Action,
        events::{EventType, Recorder},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use serde_json::json;
use tracing::{info, instrument, warn};

use self::lifecycle::{Step, evictable, next_step, phase, registered_taints};
use crate::{
    apis::{EC2NodeClass, NodeClaim, labels, nodeclaim::NodeClaimStatus},
    cloudprovider::{CloudError, CloudProvider, PriorLaunches},
    controllers::{
        FIELD_MANAGER, conditions, drain,
        isolation::{self, Reporter, Shown},
        publish,
    },
    error::{Error, Result},
    operator::metrics::{ClaimLabels, CodeLabels, Metrics},
};

/// Held on NodeClaims and their Nodes until the instance is gone.
pub const FINALIZER: &str = "stoker.dev/termination";

pub struct Context<P> {
    pub client: Client,
    pub recorder: Recorder,
    pub provider: Arc<P>,
    pub nodes: Store<Node>,
    pub classes: Store<EC2NodeClass>,
    pub new_claims: NewClaims,
    pub metrics: Arc<Metrics>,
}

/// NodeClaims the provisioner of this leader term is creating or created, and nobody has tried
/// to launch yet: no instance can exist for them, so their first launch skips looking for one (a
/// DescribeInstances call on the way to CreateFleet). A name is noted before its POST, so a
/// watch event that overtakes the POST's response waits for the UID instead of taking the slow
/// path. Each term starts with an empty set, because another leader may have launched for
/// anything older.
#[derive(Debug, Clone, Default)]
pub struct NewClaims(Arc<NewClaimsState>);

#[derive(Debug, Default)]
struct NewClaimsState {
    /// By name: the UID the apiserver gave the claim, `None` while its POST is in flight.
    claims: std::sync::Mutex<HashMap<String, Option<String>>>,
    settled: tokio::sync::Notify,
}

/// How long a launch waits for the POST of a claim whose watch event came first.
const CREATION_WAIT: Duration = Duration::from_secs(10);

impl NewClaims {
    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.0.claims.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Just before the claim's POST.
    pub fn creating(&self, name: &str) {
        self.claims().insert(name.to_owned(), None);
    }

    /// After the POST: the UID the claim got, or `None` when it was not created.
    pub fn created(&self, name: &str, uid: Option<String>) {
        match uid {
            Some(uid) => self.claims().insert(name.to_owned(), Some(uid)),
            None => self.claims().remove(name),
        };
        self.0.settled.notify_waiters();
    }

    /// What is known of earlier launches for the claim; a claim is new only once.
    async fn take(&self, claim: &NodeClaim) -> PriorLaunches {
        let name = claim.name_any();
        let deadline = tokio::time::Instant::now() + CREATION_WAIT;
        loop {
            // Registered before the state is read, so a change in between still wakes it.
            let settled = self.0.settled.notified();
            {
                let mut claims = self.claims();
                match claims.get(&name) {
                    None => return PriorLaunches::Unknown,
                    Some(Some(uid)) if claim.uid().as_ref() == Some(uid) => {
                        claims.remove(&name);
                        return PriorLaunches::None;
                    }
                    // Another object under the name: whatever it is, it is not the one created.
                    Some(Some(_)) => return PriorLaunches::Unknown,
                    Some(None) => {}
                }
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return PriorLaunches::Unknown;
            }
        }
    }
}

impl<P> Context<P> {
    fn node_for(&self, claim: &NodeClaim) -> Option<Arc<Node>> {
        let id = claim.status.as_ref()?.provider_id.as_deref()?;
        self.nodes
            .state()
            .into_iter()
            .find(|node| node.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(id))
    }
}

#[instrument(skip_all, fields(nodeclaim = %claim.name_any()))]
async fn reconcile<P: CloudProvider + 'static>(claim: Arc<NodeClaim>, ctx: &Context<P>) -> Result<Action> {
    if claim.metadata.deletion_timestamp.is_some() {
        return terminate(&claim, ctx).await;
    }
    let node = ctx.node_for(&claim);
    if let Some(node) = &node
        && node.metadata.deletion_timestamp.is_some()
    {
        info!(node = %node.name_any(), "node deleted: deleting its NodeClaim");
        claims(ctx).delete(&claim.name_any(), &DeleteParams::default()).await?;
        return Ok(Action::await_change());
    }
    if !claim.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = claim.finalizers().to_vec();
        finalizers.push(FINALIZER.to_owned());
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": claim.resource_version()}});
        claims(ctx).patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        return Ok(Action::await_change());
    }
    match next_step(&claim, node.as_deref(), Utc::now()) {
        Step::Launch => launch(&claim, ctx).await,
        Step::AwaitNode => Ok(Action::requeue(Duration::from_secs(30))),
        Step::GiveUp => {
            let note =
                format!("No node registered within {} minutes of launch", lifecycle::REGISTRATION_TTL.num_minutes());
            warn!(%note, "giving up");
            ctx.metrics.disrupted(&claim, "RegistrationTimeout");
            publish(&ctx.recorder, &claim.object_ref(&()), EventType::Warning, "RegistrationTimeout", note).await;
            claims(ctx).delete(&claim.name_any(), &DeleteParams::default()).await?;
            Ok(Action::await_change())
        }
        Step::Register => {
            let node = node.expect("registration has a node");
            register(&claim, &node, ctx).await
        }
        Step::AwaitInitialization => Ok(Action::requeue(Duration::from_secs(30))),
        Step::Initialize => {
            apply_status(&claim, ctx, |status| mark(status, &claim, &["Initialized", "Ready"])).await?;
            info!("initialized");
            ctx.metrics.nodeclaims_initialized.get_or_create(&ClaimLabels::of(&claim)).inc();
            Ok(Action::await_change())
        }
        Step::Done => Ok(Action::await_change()),
    }
}

fn claims<P>(ctx: &Context<P>) -> Api<NodeClaim> {
    Api::all(ctx.client.clone())
}

/// Server-side applies the claim's whole status after `change`: an apply owns every field it
/// names and drops the ones it no longer names, so a partial status would erase the rest.
async fn apply_status<P>(claim: &NodeClaim, ctx: &Context<P>, change: impl FnOnce(&mut NodeClaimStatus)) -> Result<()> {
    let mut status = claim.status.clone().unwrap_or_default();
    change(&mut status);
    let patch = json!({"apiVersion": "stoker.dev/v1alpha1", "kind": "NodeClaim", "status": status});
    claims(ctx)
        .patch_status(&claim.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// Sets conditions to True, as part of a status change.
fn mark(status: &mut NodeClaimStatus, claim: &NodeClaim, types: &[&str]) {
    for type_ in types {
        status.conditions = conditions::set(&status.conditions, type_, true, type_, "", claim.metadata.generation);
    }
}

async fn launch<P: CloudProvider>(claim: &NodeClaim, ctx: &Context<P>) -> Result<Action> {
    info!("launching");
    let reference = claim.object_ref(&());
    let class_name = &claim.spec.node_class_ref.name;
    let class = match ctx.classes.get(&ObjectRef::new(class_name)) {
        Some(class) => class,
        // Not in the cache yet (just created): ask the apiserver.
        None => Arc::new(Api::<EC2NodeClass>::all(ctx.client.clone()).get(class_name).await?),
    };
    let instance = match ctx.provider.create(claim, &class, ctx.new_claims.take(claim).await).await {
        Ok(instance) => instance,
        Err(error @ (CloudError::InsufficientCapacity { .. } | CloudError::NoCompatibleOfferings(_))) => {
            // The next batch plans again without what failed (the unavailable cache knows).
            ctx.metrics.launch_failures.get_or_create(&CodeLabels { code: error.reason().to_owned() }).inc();
            let note = format!("Launch failed, deleting the NodeClaim so its pods are planned again: {error}");
            warn!(%error, "launch failed");
            ctx.metrics.disrupted(claim, "LaunchFailed");
            publish(&ctx.recorder, &reference, EventType::Warning, "LaunchFailed", note).await;
            claims(ctx).delete(&claim.name_any(), &DeleteParams::default()).await?;
            return Ok(Action::await_change());
        }
        Err(error) => {
            ctx.metrics.launch_failures.get_or_create(&CodeLabels { code: error.reason().to_owned() }).inc();
            let message = error.to_string();
            apply_status(claim, ctx, |status| {
                status.conditions = conditions::set(
                    &status.conditions,
                    "Launched",
                    false,
                    error.reason(),
                    &message,
                    claim.metadata.generation,
                );
            })
            .await?;
            publish(&ctx.recorder, &reference, EventType::Warning, "LaunchFailed", message).await;
            return Err(Error::Cloud(error));
        }
    };
    // The launched type's labels, capacity and allocatable, from the catalog.
    let launched_type =
        ctx.provider.instance_types(&class).await?.iter().find(|t| t.name == instance.instance_type).cloned();
    let mut instance_labels: BTreeMap<String, String> =
        launched_type.as_ref().map(|t| t.labels.clone()).unwrap_or_default();
    instance_labels.insert(labels::ZONE.into(), instance.zone.clone());
    instance_labels.insert(labels::CAPACITY_TYPE.into(), instance.capacity_type.clone());
    instance_labels.insert(labels::INSTANCE_TYPE.into(), instance.instance_type.clone());
    let patch = json!({"metadata": {"labels": instance_labels}});
    claims(ctx).patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    apply_status(claim, ctx, |status| {
        status.provider_id = Some(instance.provider_id.clone());
        status.instance_type = Some(instance.instance_type.clone());
        status.zone = Some(instance.zone.clone());
        status.capacity_type = Some(instance.capacity_type.clone());
        status.image_id = Some(instance.image_id.clone());
        if let Some(launched) = &launched_type {
            status.capacity = launched.capacity.to_quantities();
            status.allocatable = launched.allocatable.to_quantities();
        }
        mark(status, claim, &["Launched"]);
    })
    .await?;
    let note = format!(
        "Launched {} {} in {} ({})",
        instance.capacity_type, instance.instance_type, instance.zone, instance.id
    );
    publish(&ctx.recorder, &reference, EventType::Normal, "Launched", note).await;
    let launched = ClaimLabels { capacity_type: instance.capacity_type.clone(), ..ClaimLabels::of(claim) };
    ctx.metrics.nodeclaims_launched.get_or_create(&launched).inc();
    Ok(Action::requeue(Duration::from_secs(30)))
}

async fn register<P>(claim: &NodeClaim, node: &Node, ctx: &Context<P>) -> Result<Action> {
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
        mark(status, claim, &["Registered"]);
    })
    .await?;
    info!(node = %node.name_any(), "registered");
    ctx.metrics.nodeclaims_registered.get_or_create(&ClaimLabels::of(claim)).inc();
    Ok(Action::requeue(Duration::from_secs(5)))
}

/// One pass of termination; returns a requeue while something is still in progress.
async fn terminate<P: CloudProvider>(claim: &NodeClaim, ctx: &Context<P>) -> Result<Action> {
    if !claim.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let node = ctx.node_for(claim);
    if let Some(node) = &node
        && !drained(claim, node, ctx).await?
    {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    if let Some(provider_id) = claim.status.as_ref().and_then(|s| s.provider_id.as_deref()) {
        match ctx.provider.delete(provider_id).await {
            // Terminating: come back to see it gone.
            Ok(()) => return Ok(Action::requeue(Duration::from_secs(2))),
            Err(CloudError::NotFound(_)) => {}
            Err(error @ CloudError::NotOwned { .. }) => {
                warn!(%error, "not terminating an instance stoker does not own")
            }
            Err(error) => return Err(error.into()),
        }
    }
    if let Some(node) = &node {
        let remaining: Vec<String> = node.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
        let patch = json!({"metadata": {"finalizers": remaining}});
        match nodes.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(error.into()),
        }
        match nodes.delete(&node.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let remaining: Vec<String> = claim.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    let patch = json!({"metadata": {"finalizers": remaining, "resourceVersion": claim.resource_version()}});
    claims(ctx).patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    info!("terminated");
    ctx.metrics.nodeclaims_terminated.get_or_create(&ClaimLabels::of(claim)).inc();
    Ok(Action::await_change())
}

/// Taints the node and evicts what runs on it; true once nothing evictable is left.
async fn drained<P>(claim: &NodeClaim, node: &Node, ctx: &Context<P>) -> Result<bool> {
    let name = node.name_any();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    if !taints.iter().any(|t| t.key == labels::DISRUPTED_TAINT) {
        let mut tainted = taints;
        tainted.push(k8s_openapi::api::core::v1::Taint {
            key: labels::DISRUPTED_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
        let patch = json!({"spec": {"taints": tainted}, "metadata": {"resourceVersion": node.resource_version()}});
        nodes.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let on_node = pods.list(&ListParams::default().fields(&format!("spec.nodeName={name}"))).await?;
    let left: Vec<&Pod> = on_node.items.iter().filter(|pod| evictable(&pod.metadata, phase(pod))).collect();
    if left.is_empty() {
        return Ok(true);
    }
    let grace_over = match (&claim.spec.termination_grace_period, &claim.metadata.deletion_timestamp) {
        (Some(grace), Some(deleted)) => {
            let deleted = chrono::DateTime::from_timestamp(deleted.0.as_second(), 0).unwrap_or_else(Utc::now);
            Utc::now() - deleted > grace.delta()
        }
        _ => false,
    };
    for pod in left {
        let namespaced: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
        let result = if grace_over {
            namespaced.delete(&pod.name_any(), &DeleteParams::default()).await.map(|_| ())
        } else {
            namespaced.evict(&pod.name_any(), &EvictParams::default()).await.map(|_| ())
        };
        match result {
            Ok(()) => {}
            // 429: a PodDisruptionBudget says not now; 404: already gone.
            Err(kube::Error::Api(response)) if response.code == 429 || response.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(false)
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
pub async fn run<P: CloudProvider + 'static>(ctx: Arc<Context<P>>) {
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
                let reporter = Reporter { client: &ctx.client, recorder: &ctx.recorder, metrics: &ctx.metrics };
                // Event only: its status holds the instance, which must survive until it is fixed.
                isolation::dispatch(claim, reporter, Shown::EventOnly, |claim| reconcile(claim, &ctx)).await
            },
            error_policy,
            ctx,
        );
    drain(results, "nodeclaim").await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, uid: &str) -> NodeClaim {
        let mut claim: NodeClaim = serde_yaml::from_str(&format!(
            "apiVersion: stoker.dev/v1alpha1\nkind: NodeClaim\nmetadata: {{name: {name}}}\nspec:\n  nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}\n"
        ))
        .expect("a NodeClaim");
        claim.metadata.uid = Some(uid.into());
        claim
    }

    #[tokio::test]
    async fn a_launch_that_overtakes_its_claims_creation_waits_for_it() {
        let new = NewClaims::default();
        new.creating("spot-abcde");
        let waiting = tokio::spawn({
            let new = new.clone();
            async move { new.take(&claim("spot-abcde", "uid-1")).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the launch waits while the POST is in flight");
        new.created("spot-abcde", Some("uid-1".into()));
        assert_eq!(waiting.await.expect("joined"), PriorLaunches::None);
        assert_eq!(new.take(&claim("spot-abcde", "uid-1")).await, PriorLaunches::Unknown, "new only once");
    }

    #[tokio::test]
    async fn claims_this_term_did_not_create_may_have_an_instance() {
        let new = NewClaims::default();
        assert_eq!(new.take(&claim("spot-older", "uid-0")).await, PriorLaunches::Unknown);
        new.creating("spot-taken");
        new.created("spot-taken", None);
        assert_eq!(new.take(&claim("spot-taken", "uid-2")).await, PriorLaunches::Unknown, "its POST failed");
        new.creating("spot-fghij");
        new.created("spot-fghij", Some("uid-3".into()));
        assert_eq!(new.take(&claim("spot-fghij", "uid-other")).await, PriorLaunches::Unknown, "another object");
        assert_eq!(new.take(&claim("spot-fghij", "uid-3")).await, PriorLaunches::None);
    }
}
