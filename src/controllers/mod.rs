//! The controllers. Each module keeps its decisions in pure functions and its I/O at the edges.
//! What they share: [`Shared`] (the client, the Event recorder, the metrics, the cloud provider
//! and the cluster state), the one field manager of everything stoker applies, and Event
//! publishing.

pub mod capacitybuffer;
pub mod conditions;
pub mod disruption;
pub mod finalizer;
pub mod garbage;
pub mod interruption;
pub mod isolation;
pub mod nodeclaim;
pub mod nodeclass;
pub mod nodeoverlay;
pub mod nodepool;
pub mod nominations;
pub mod provisioner;
pub mod reservations;
pub mod static_pools;
pub mod warmpool;

use std::{collections::BTreeMap, sync::Arc};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::{
        events::{Event, EventType, Recorder},
        reflector::ObjectRef,
    },
};
use tokio::sync::{Notify, broadcast};
use tracing::warn;

use crate::{
    apis::{
        NodePool,
        ec2nodeclass::{EC2NodeClass, EC2NodeClassStatus},
    },
    cloudprovider::CloudProvider,
    metrics::Metrics,
    state::ClusterState,
};

/// The field manager of everything stoker applies.
pub const FIELD_MANAGER: &str = "stoker";

/// The cloud provider the controllers run with: one whose node class is the kind the cluster
/// state caches. Every provider that names `EC2NodeClass` is one.
pub trait Provider:
    CloudProvider<NodeClass = EC2NodeClass, NodeClassStatus = EC2NodeClassStatus> + Send + Sync + 'static
{
}

impl<P> Provider for P where
    P: CloudProvider<NodeClass = EC2NodeClass, NodeClassStatus = EC2NodeClassStatus> + Send + Sync + 'static
{
}

/// What every controller of the leader uses. Made once per process and kept across leader terms:
/// the state's caches and the wake-ups fed by its pod watch outlive any one term.
pub struct Shared<P> {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub provider: Arc<P>,
    pub state: ClusterState,
    /// Notified for every provisionable pod event: the provisioner's batch trigger. A
    /// notification while nobody waits is kept (one), so a new term's first batch starts at once.
    pub provisionable: Arc<Notify>,
    /// Pause pods real workloads preempted, for the WarmPool preemption counter.
    pub preemptions: broadcast::Sender<warmpool::preemption::Preemption>,
    /// How every simulation treats preferences and minValues (settings).
    pub policies: crate::scheduling::solver::Policies,
    /// What the provisioner's last simulation did with each CapacityBuffer's virtual pods.
    pub buffer_outcomes: capacitybuffer::Outcomes,
    /// The nodes the provisioner's simulations placed pending pods on, which emptiness leaves.
    pub nominations: nominations::Nominations,
}

impl<P: Provider> Shared<P> {
    /// The instance types of every EC2NodeClass the pools use, by class name; a class that is
    /// missing or whose types cannot be listed is left out (and so not ready).
    pub async fn instance_types(
        &self,
        pools: &[Arc<NodePool>],
    ) -> BTreeMap<String, Arc<[crate::scheduling::catalog::InstanceType]>> {
        let mut instance_types = BTreeMap::new();
        for pool in pools {
            let class_name = &pool.spec.template.spec.node_class_ref.name;
            if instance_types.contains_key(class_name) {
                continue;
            }
            let Some(class) = self.state.classes.get(&ObjectRef::new(class_name)) else { continue };
            match self.provider.instance_types(&class).await {
                Ok(types) => {
                    instance_types.insert(class_name.clone(), types);
                }
                Err(error) => warn!(ec2nodeclass = %class_name, %error, "no instance types"),
            }
        }
        instance_types
    }
}

/// Server-side applies `status` as the whole status of the object `name`, under stoker's field
/// manager. Whole, because an apply drops the fields its manager no longer names: a partial
/// status would erase the rest.
pub async fn apply_status<K>(api: &kube::Api<K>, name: &str, status: &impl serde::Serialize) -> Result<K, kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &kube::api::Patch::Apply(&patch)).await
}

/// Publishes an Event about an object; a failure is logged, never fatal to a reconcile.
///
/// The recorder folds an Event into an earlier one with the same object, reason and action (a
/// series, counted), keeping the earlier note: a new note under the same reason would be lost.
/// So the action carries a digest of the note: repeats of one note still make one series, a
/// different note its own Event.
pub async fn publish(recorder: &Recorder, reference: &ObjectReference, type_: EventType, reason: &str, note: String) {
    use std::hash::{Hash, Hasher};
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    note.hash(&mut digest);
    let action = format!("Reconcile-{:08x}", digest.finish() as u32);
    let event = Event { type_, reason: reason.into(), note: Some(note), action, secondary: None };
    if let Err(error) = recorder.publish(&event, reference).await {
        warn!(%error, "cannot publish event");
    }
}

/// How often the series of deleted objects are swept away.
const SERIES_SWEEP: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `sweep` over the metrics every [`SERIES_SWEEP`] until the returned task is aborted: a
/// controller is not called for an object that is gone, so its series are removed by comparing
/// what has series with what still exists.
pub fn sweep_series<P: Send + Sync + 'static>(
    ctx: Arc<Shared<P>>,
    sweep: impl Fn(&Metrics) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SERIES_SWEEP);
        loop {
            ticks.tick().await;
            sweep(&ctx.metrics);
        }
    })
}

/// Drains a controller's result stream until shutdown, logging failed reconciles (the error
/// policy has already scheduled their retry).
pub async fn drain<T, E: std::fmt::Display>(results: impl Stream<Item = Result<T, E>>, controller: &'static str) {
    results
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, controller, "reconcile failed");
            }
        })
        .await;
}
