//! The cluster as the controllers read it: one reflector cache per kind (pods, nodes, NodeClaims,
//! NodePools, EC2NodeClasses, DaemonSets, PodDisruptionBudgets, Namespaces, ReplicaSets, and the
//! claims, volumes and storage classes that place pods with volumes), kept by every replica so a new leader acts on warm
//! caches, and read by every controller of the leader.
//!
//! What each cache keeps is decided in [`cache`] (a compact pod, a trimmed node, no
//! server-side-apply bookkeeping), and what of a pod the watch decodes at all in
//! [`watched_pod`]; how stoker's own kinds survive an object this version cannot
//! decode, in [`undecodable`]. The pods are also indexed as they arrive ([`pods`]: what each node
//! holds, the bound and the provisionable pods); [`gathered`] copies the caches for one decision; [`usage`] has the one rule for what a NodeClaim
//! counts against its pool's limits, [`schedules`] the pools as their open schedules make them, [`buffers`] turns CapacityBuffers into virtual pods, and
//! [`input`] turns the state into the solver's input.
//! Nothing here writes to the apiserver.

pub mod buffers;
pub mod cache;
pub mod facts;
pub mod gathered;
pub mod input;
pub mod nodes;
pub mod pods;
pub mod schedules;
pub mod undecodable;
pub mod usage;
pub mod volumes;
pub mod watched_pod;

use std::{
    fmt::Debug,
    sync::{Arc, PoisonError, RwLock, RwLockReadGuard},
};

use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet},
    batch::v1::Job,
    core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim},
    policy::v1::PodDisruptionBudget,
    storage::v1::StorageClass,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store, store::WriterDropped},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use self::{
    buffers::BufferSources,
    cache::{CachedPod, node as cached_node, without_managed_fields},
    facts::NodeFactsIndex,
    pods::PodIndex,
    volumes::VolumeTopology,
    watched_pod::WatchedPod,
};
use crate::{
    apis::{EC2NodeClass, NodeClaim, NodePool},
    scheduling::{
        pod::{NamespaceLabels, PodInfo},
        shapes::Shapes,
    },
};

/// The shared caches. Cloning shares them.
#[derive(Clone)]
pub struct ClusterState {
    pub pods: Store<CachedPod>,
    pub nodes: Store<Node>,
    pub claims: Store<NodeClaim>,
    pub pools: Store<NodePool>,
    pub classes: Store<EC2NodeClass>,
    pub daemonsets: Store<DaemonSet>,
    /// What consolidation may not disrupt.
    pub budgets: Store<PodDisruptionBudget>,
    /// Namespaces, only their names and labels: what `namespaceSelector`s match.
    pub namespaces: Store<Namespace>,
    /// What pods' volumes require of their node.
    pub volume_claims: Store<PersistentVolumeClaim>,
    pub volumes: Store<PersistentVolume>,
    pub storage_classes: Store<StorageClass>,
    /// ReplicaSets, only what says how many of their replicas are still to come and what they
    /// look like ([`cache::replica_set_growth`]): the provisioner plans for those. The same
    /// store as the buffers' where those are served (then with every template).
    pub replica_sets: Store<ReplicaSet>,
    /// Deployments, only what says how many of their replicas their ReplicaSets do not hold yet
    /// and what they look like ([`cache::deployment_growth`]): the provisioner plans for those
    /// too. The same store as the buffers' where those are served (then with every template).
    pub deployments: Store<Deployment>,
    /// Jobs, only what says how many of their pods are still to come and what they look like
    /// ([`cache::job_growth`]): the provisioner plans for those too.
    pub jobs: Store<Job>,
    /// The pods, indexed as their events arrive.
    index: Arc<RwLock<PodIndex>>,
    /// The nodes' parsed facts, kept as their events arrive.
    facts: Arc<RwLock<NodeFactsIndex>>,
    /// CapacityBuffers and what they reference; `None` where the cluster does not serve the
    /// CapacityBuffer API.
    pub buffers: Option<BufferSources>,
}

impl ClusterState {
    /// Starts every cache's watch in the background. `on_pod` sees each added or changed pod as
    /// cached, so a controller can be woken by the pods it cares about. CapacityBuffers are
    /// watched when `buffers_served` (see [`capacity_buffers_served`]).
    pub fn start(client: &Client, buffers_served: bool, on_pod: impl Fn(&CachedPod) + Send + 'static) -> Self {
        let index = Arc::new(RwLock::new(PodIndex::default()));
        let writes = index.clone();
        let mut shapes = Shapes::default();
        let keep = move |pod: WatchedPod| CachedPod::new(pod.into(), &mut shapes);
        let pods = reflect(client, keep, move |event, store| {
            writes.write().unwrap_or_else(PoisonError::into_inner).handle(event, store);
            if let watcher::Event::Apply(pod) = event {
                on_pod(pod);
            }
        });
        // One ReplicaSet and one Deployment watch: where buffers are served, they read every
        // template.
        let keep_replica_set =
            if buffers_served { cache::replica_set_with_template } else { cache::replica_set_growth };
        let replica_sets = reflect(client, keep_replica_set, |_: &_, _: &_| {});
        let keep_deployment = if buffers_served { cache::deployment_with_template } else { cache::deployment_growth };
        let deployments = reflect(client, keep_deployment, |_: &_, _: &_| {});
        let facts = Arc::new(RwLock::new(NodeFactsIndex::default()));
        let fact_writes = facts.clone();
        let nodes = reflect(client, cached_node, move |event, _: &_| {
            fact_writes.write().unwrap_or_else(PoisonError::into_inner).handle(event);
        });
        Self {
            pods,
            nodes,
            claims: reflect_custom(client),
            pools: reflect_custom(client),
            classes: reflect_custom(client),
            daemonsets: reflect(client, without_managed_fields, |_: &_, _: &_| {}),
            budgets: reflect(client, without_managed_fields, |_: &_, _: &_| {}),
            namespaces: reflect(client, cache::namespace, |_: &_, _: &_| {}),
            volume_claims: reflect(client, cache::volume_claim, |_: &_, _: &_| {}),
            volumes: reflect(client, cache::volume, |_: &_, _: &_| {}),
            storage_classes: reflect(client, cache::storage_class, |_: &_, _: &_| {}),
            replica_sets: replica_sets.clone(),
            deployments: deployments.clone(),
            jobs: reflect(client, cache::job_growth, |_: &_, _: &_| {}),
            index,
            facts,
            buffers: buffers_served.then(|| BufferSources {
                buffers: reflect_custom(client),
                pod_templates: reflect(client, cache::pod_template, |_: &_, _: &_| {}),
                deployments,
                stateful_sets: reflect(client, cache::stateful_set, |_: &_, _: &_| {}),
                replica_sets,
            }),
        }
    }

    /// The virtual pods of every CapacityBuffer, none where the API is not served.
    pub fn virtual_pods(&self) -> Vec<Arc<PodInfo>> {
        self.buffers.as_ref().map(BufferSources::virtual_pods).unwrap_or_default()
    }

    /// The NodePools as they are at `now`: each with its open schedules' settings in place
    /// ([`schedules`]). Every decision reads pools through here.
    pub fn pools_at(&self, now: chrono::DateTime<chrono::Utc>) -> Vec<Arc<NodePool>> {
        schedules::pools_at(&self.pools.state(), now)
    }

    /// The volume claims, volumes and storage classes, indexed for one decision.
    pub fn volume_topology(&self) -> VolumeTopology {
        VolumeTopology::new(self.volume_claims.state(), self.volumes.state(), self.storage_classes.state())
    }

    /// Each namespace's labels, by name.
    pub fn namespace_labels(&self) -> NamespaceLabels {
        self.namespaces.state().iter().map(|ns| (ns.name_any(), ns.labels().clone())).collect()
    }

    /// The nodes' parsed facts, read-locked: hold it only while reading.
    pub fn node_facts(&self) -> RwLockReadGuard<'_, NodeFactsIndex> {
        self.facts.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pod index, read-locked: hold it only while reading (the pod watch waits meanwhile).
    pub fn pod_index(&self) -> RwLockReadGuard<'_, PodIndex> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until every cache has listed once: nothing may act on empty caches, where an empty
    /// pod cache makes every node look empty.
    pub async fn ready(&self) -> Result<(), WriterDropped> {
        for ready in [
            self.pods.wait_until_ready().boxed(),
            self.nodes.wait_until_ready().boxed(),
            self.claims.wait_until_ready().boxed(),
            self.pools.wait_until_ready().boxed(),
            self.classes.wait_until_ready().boxed(),
            self.daemonsets.wait_until_ready().boxed(),
            self.budgets.wait_until_ready().boxed(),
            self.namespaces.wait_until_ready().boxed(),
            self.volume_claims.wait_until_ready().boxed(),
            self.volumes.wait_until_ready().boxed(),
            self.storage_classes.wait_until_ready().boxed(),
            self.replica_sets.wait_until_ready().boxed(),
            self.deployments.wait_until_ready().boxed(),
            self.jobs.wait_until_ready().boxed(),
        ] {
            ready.await?;
        }
        if let Some(sources) = &self.buffers {
            for ready in [
                sources.buffers.wait_until_ready().boxed(),
                sources.pod_templates.wait_until_ready().boxed(),
                sources.stateful_sets.wait_until_ready().boxed(),
            ] {
                ready.await?;
            }
        }
        Ok(())
    }
}

/// Whether the cluster serves the CapacityBuffer API version stoker reads. Asked once at start:
/// a watch of an API that is not served would keep the caches from ever being ready. A cluster
/// that gains the CRD later needs a restart of stoker to honour buffers.
pub async fn capacity_buffers_served(client: &Client) -> bool {
    use crate::apis::capacitybuffer::{GROUP, VERSION};
    match kube::discovery::group(client, GROUP).await {
        Ok(group) => {
            group.versioned_resources(VERSION).iter().any(|(resource, _)| resource.plural == "capacitybuffers")
        }
        Err(error) => {
            info!(%error, "the CapacityBuffer API is not served: CapacityBuffers are not honoured");
            false
        }
    }
}

/// A cluster-wide cache of `K`, fed by a watch of `W` in the background; `keep` turns each
/// watched object into what the cache keeps, and `on_event` sees every event once the cache has
/// it.
fn reflect<W, K>(
    client: &Client,
    mut keep: impl FnMut(W) -> K + Send + 'static,
    on_event: impl FnMut(&watcher::Event<K>, &Store<K>) + Send + 'static,
) -> Store<K>
where
    W: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    // Most-recent semantic, so the initial list comes in pages of 500: an "any" (resourceVersion=0)
    // list is served whole from the watch cache, and 10,000 pods at once is the controller's
    // largest memory peak. Kubernetes 1.33+ serves these pages from its cache too.
    let stream = watcher(Api::<W>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map_ok(move |event| match event {
            watcher::Event::Apply(object) => watcher::Event::Apply(keep(object)),
            watcher::Event::Delete(object) => watcher::Event::Delete(keep(object)),
            watcher::Event::InitApply(object) => watcher::Event::InitApply(keep(object)),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitDone => watcher::Event::InitDone,
        })
        .reflect(writer);
    tokio::spawn(drain_watch(stream, store.clone(), on_event));
    store
}

/// A cluster-wide cache of one of stoker's own kinds. An object this version cannot decode is
/// left out and logged instead of failing the watch of its whole kind (see [`undecodable`]).
fn reflect_custom<K>(client: &Client) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let mut decoder = undecodable::Decoder::new(store.clone());
    let stream = watcher(Api::<DeserializeGuard<K>>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .try_filter_map(move |event| futures::future::ready(Ok(decoder.decode(event))))
        .reflect(writer);
    tokio::spawn(drain_watch(stream, store.clone(), |_: &_, _: &_| {}));
    store
}

async fn drain_watch<K: Resource<DynamicType = ()> + Clone + 'static>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    store: Store<K>,
    mut on_event: impl FnMut(&watcher::Event<K>, &Store<K>),
) {
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => on_event(&event, &store),
            Err(error) => warn!(%error, "watch failed; retrying"),
        }
    }
}
