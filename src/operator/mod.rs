//! Wiring: configuration, logging, the cloud provider with its background refreshes, the shared
//! reflector stores (pods, nodes, NodeClaims, NodePools, EC2NodeClasses, DaemonSets), and the
//! controllers reading them, all sharing one Kubernetes client and one AWS configuration.

pub mod cache;
pub mod metrics;
pub mod settings;
pub mod undecodable;

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Node, Pod},
};
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt,
        events::{Recorder, Reporter},
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
pub use settings::Settings;

use self::cache::{CachedPod, node as cached_node, without_managed_fields};
use kube::core::DeserializeGuard;
use tracing::{info, warn};
use tracing_subscriber::{EnvFilter, fmt};

use crate::{
    apis::{EC2NodeClass, NodeClaim, NodePool},
    cloudprovider::{
        CloudError,
        aws::{AwsCloudProvider, AwsOptions, ClusterInfo, aws_config},
        metered::Metered,
    },
    controllers::{
        disruption, garbage, nodeclaim, nodeclass, nodepool,
        provisioner::{self, Provisioner, Stores, snapshot::is_provisionable},
        warmpool::{preemption, reconcile as warmpool},
    },
    error::{Error, Result},
};

/// The Lease every replica competes for.
const LEASE_NAME: &str = "stoker-leader-election";
/// A leader that has not renewed for this long loses the Lease; a standby takes over then.
const LEASE_SECONDS: u64 = 10;
/// The leader renews this long before its Lease would expire.
const LEASE_GRACE_SECONDS: u64 = 3;

/// How long a launch template may go unused before it is deleted.
const LAUNCH_TEMPLATE_IDLE: Duration = Duration::from_secs(3600);

pub fn init_logging(level: &str, format: settings::LogFormat) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        settings::LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
        settings::LogFormat::Text => builder.init(),
    }
}

pub async fn run(settings: Settings) -> Result<()> {
    let client = Client::try_default().await?;
    let reporter = Reporter { controller: "stoker".into(), instance: std::env::var("POD_NAME").ok() };
    info!(cluster = %settings.cluster_name, "starting stoker controller");
    let recorder = Recorder::new(client.clone(), reporter);
    let metrics = Arc::new(metrics::Metrics::default());
    tokio::spawn(metrics::serve(settings.metrics_address.clone(), metrics.clone()));
    if settings.health_address != settings.metrics_address {
        tokio::spawn(metrics::serve(settings.health_address.clone(), metrics.clone()));
    }

    let config = aws_config(settings.region.clone()).await;
    let cluster = cluster_info(&settings, &config, &client).await?;
    info!(endpoint = %cluster.endpoint, kubernetes = %cluster.kubernetes_minor, "cluster");
    let aws = Arc::new(AwsCloudProvider::new(&config, AwsOptions::new(cluster)));
    tokio::spawn(refresh_cloud(aws.clone(), metrics.clone()));
    // The controllers' calls go through the metering wrapper.
    let provider = Arc::new(Metered::new(aws, metrics.clone()));

    // Shared stores; a provisionable pod event triggers the provisioner's batch.
    // Pod events feed the current leader term's provisioner and preemption counter.
    type Sink<T> = Arc<std::sync::Mutex<Option<tokio::sync::mpsc::Sender<T>>>>;
    let trigger_sink: Sink<()> = Arc::default();
    let preemption_sink: Sink<preemption::Preemption> = Arc::default();
    let (triggers_to, preemptions_to) = (trigger_sink.clone(), preemption_sink.clone());
    let pods = shared(&client, <CachedPod as From<Pod>>::from, move |event: &CachedPod| {
        if is_provisionable(event)
            && let Some(sink) = &*triggers_to.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            let _ = sink.try_send(());
        }
        if let Some(preemption) = preemption::preempted(event)
            && let Some(sink) = &*preemptions_to.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            let _ = sink.try_send(preemption);
        }
    });
    let stores = Stores {
        pods,
        nodes: shared(&client, cached_node, |_: &Node| {}),
        claims: shared_custom::<NodeClaim>(&client),
        pools: shared_custom::<NodePool>(&client),
        classes: shared_custom::<EC2NodeClass>(&client),
        daemonsets: shared(&client, without_managed_fields, |_: &DaemonSet| {}),
    };
    for ready in [
        stores.pods.wait_until_ready().boxed(),
        stores.nodes.wait_until_ready().boxed(),
        stores.claims.wait_until_ready().boxed(),
        stores.pools.wait_until_ready().boxed(),
        stores.classes.wait_until_ready().boxed(),
        stores.daemonsets.wait_until_ready().boxed(),
    ] {
        // Nothing may act on empty caches: an empty pod cache makes every node look empty.
        ready.await.map_err(|_| Error::MissingField { object: "reflector".into(), field: "initial list" })?;
    }
    info!("caches synced");
    metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);

    let gates = settings.feature_gates;
    info!(warm_pools = gates.warm_pools, consolidation = gates.consolidation, "feature gates");
    // Every replica keeps its caches warm; only the leader runs the controllers, which all write.
    let (mut leading, _always_leading) = leadership(&client, &settings).await?;
    loop {
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return Ok(()) },
                _ = shutdown_signal() => { info!("shutting down"); return Ok(()) }
            }
        }
        info!("leading: starting the controllers");
        let new_claims = nodeclaim::NewClaims::default();
        let provisioner = Arc::new(Provisioner {
            client: client.clone(),
            recorder: recorder.clone(),
            provider: provider.clone(),
            stores: stores.clone(),
            new_claims: new_claims.clone(),
            batch_idle: settings.batch_idle_duration.as_std(),
            batch_max: settings.batch_max_duration.as_std(),
            metrics: metrics.clone(),
            waiting: Default::default(),
        });
        let (preempted, preemptions) = tokio::sync::mpsc::channel(1024);
        if gates.warm_pools {
            *preemption_sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(preempted);
        }
        let (trigger, triggers) = tokio::sync::mpsc::channel(1);
        *trigger_sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(trigger);
        let client = client.clone();
        let controllers = async {
            tokio::join!(
                provisioner::run(provisioner, triggers),
                nodeclaim::run(Arc::new(nodeclaim::Context {
                    client: client.clone(),
                    recorder: recorder.clone(),
                    provider: provider.clone(),
                    nodes: stores.nodes.clone(),
                    classes: stores.classes.clone(),
                    new_claims,
                    metrics: metrics.clone(),
                })),
                gated(
                    gates.consolidation,
                    disruption::run(Arc::new(disruption::Context {
                        client: client.clone(),
                        recorder: recorder.clone(),
                        claims: stores.claims.clone(),
                        nodes: stores.nodes.clone(),
                        pods: stores.pods.clone(),
                        pools: stores.pools.clone(),
                        metrics: metrics.clone(),
                    }))
                ),
                garbage::run(Arc::new(garbage::Context {
                    client: client.clone(),
                    provider: provider.clone(),
                    claims: stores.claims.clone(),
                    metrics: metrics.clone(),
                })),
                nodepool::run(Arc::new(nodepool::Context {
                    client: client.clone(),
                    recorder: recorder.clone(),
                    claims: stores.claims.clone(),
                    classes: stores.classes.clone(),
                    metrics: metrics.clone(),
                })),
                gated(
                    gates.warm_pools,
                    warmpool::run(Arc::new(warmpool::Context {
                        client: client.clone(),
                        recorder: recorder.clone(),
                        metrics: metrics.clone(),
                    }))
                ),
                gated(gates.warm_pools, preemption::run(client.clone(), preemptions, metrics.clone())),
                nodeclass::run(Arc::new(nodeclass::Context {
                    client: client.clone(),
                    recorder: recorder.clone(),
                    provider: provider.clone(),
                    metrics: metrics.clone(),
                })),
            )
        };
        // Losing the lease stops every writer at once: the controllers' futures are dropped.
        let lost = async {
            while *leading.borrow() {
                if leading.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            _ = controllers => break,
            _ = lost => warn!("lost the leader Lease: stopped the controllers"),
            _ = shutdown_signal() => { info!("shutting down"); break }
        }
    }
    info!("stopped");
    Ok(())
}

/// Runs a controller only when its feature gate is on; a gated-off controller finishes at once.
async fn gated(enabled: bool, controller: impl Future<Output = ()>) {
    if enabled {
        controller.await
    }
}

/// The leader Lease's state: true while this replica holds it. Without leader election, always
/// true (the returned sender must be kept, or the receiver sees a closed channel).
async fn leadership(
    client: &Client,
    settings: &Settings,
) -> Result<(tokio::sync::watch::Receiver<bool>, Option<tokio::sync::watch::Sender<bool>>)> {
    if !settings.leader_elect {
        let (sender, receiver) = tokio::sync::watch::channel(true);
        return Ok((receiver, Some(sender)));
    }
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let suffix: String = (0..8).map(|_| fastrand::alphanumeric()).collect();
        format!("stoker-{suffix}")
    });
    info!(%identity, namespace = %settings.leader_election_namespace, lease = LEASE_NAME, "joining leader election");
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(&settings.leader_election_namespace)
        .with_identity(identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(LEASE_GRACE_SECONDS)
        .build()
        .await
        .map_err(|error| Error::LeaderElection(error.to_string()))?;
    let (receiver, _task) = manager.watch().await;
    Ok((receiver, None))
}

async fn shutdown_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// A cluster-wide reflector store of `K`, fed by a watch of `W` in the background; `keep` turns
/// each watched object into what the store keeps (dropping what no controller reads), and
/// `on_apply` sees every added or changed object as stored.
fn shared<W, K>(client: &Client, keep: fn(W) -> K, on_apply: impl Fn(&K) + Send + 'static) -> Store<K>
where
    W: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
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
        .reflect(writer)
        .applied_objects();
    tokio::spawn(drain_watch(stream, on_apply));
    store
}

/// A cluster-wide reflector store of one of stoker's own kinds. An object this version cannot
/// decode is left out and logged instead of failing the watch of its whole kind (see
/// [`undecodable`]).
fn shared_custom<K>(client: &Client) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let mut decoder = undecodable::Decoder::new(store.clone());
    let stream = watcher(Api::<DeserializeGuard<K>>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .try_filter_map(move |event| futures::future::ready(Ok(decoder.decode(event))))
        .reflect(writer)
        .applied_objects();
    tokio::spawn(drain_watch(stream, |_: &K| {}));
    store
}

async fn drain_watch<K>(stream: impl Stream<Item = Result<K, watcher::Error>>, on_apply: impl Fn(&K)) {
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(object) => on_apply(&object),
            Err(error) => warn!(%error, "watch failed; retrying"),
        }
    }
}

/// Keeps the instance catalog and spot prices fresh and deletes idle launch templates.
async fn refresh_cloud(provider: Arc<AwsCloudProvider>, metrics: Arc<metrics::Metrics>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(300));
    loop {
        ticks.tick().await;
        metrics.unavailable_offerings.set(provider.unavailable_offerings() as i64);
        match provider.refresh().await {
            Ok(catalog) => info!(instance_types = catalog.types.len(), "refreshed instance catalog and prices"),
            Err(error) => warn!(%error, "cannot refresh the instance catalog"),
        }
        if let Err(error) = provider.prune_launch_templates(LAUNCH_TEMPLATE_IDLE).await {
            warn!(%error, "cannot prune launch templates");
        }
    }
}

/// What nodes need to join: from settings, the rest from EKS's DescribeCluster; the Kubernetes
/// minor (for AMI aliases) from the API server.
async fn cluster_info(settings: &Settings, config: &aws_config::SdkConfig, client: &Client) -> Result<ClusterInfo> {
    let version = client.apiserver_version().await?;
    let minor: String = version.minor.chars().take_while(char::is_ascii_digit).collect();
    let kubernetes_minor = format!("{}.{minor}", version.major);
    let (endpoint, ca_bundle, service_cidr) =
        match (&settings.cluster_endpoint, &settings.cluster_ca_bundle, &settings.cluster_service_cidr) {
            (Some(endpoint), Some(ca), Some(cidr)) => (endpoint.clone(), ca.clone(), cidr.clone()),
            _ => {
                let eks = aws_sdk_eks::Client::new(config);
                let described =
                    eks.describe_cluster().name(&settings.cluster_name).send().await.map_err(|e| CloudError::Aws {
                        operation: "DescribeCluster",
                        code: aws_sdk_eks::error::ProvideErrorMetadata::code(&e).unwrap_or("RequestFailed").to_owned(),
                        message: aws_sdk_eks::error::DisplayErrorContext(&e).to_string(),
                    })?;
                let cluster = described.cluster().ok_or_else(|| Error::MissingField {
                    object: format!("EKS cluster {}", settings.cluster_name),
                    field: "cluster",
                })?;
                let missing = |field: &'static str| Error::MissingField {
                    object: format!("EKS cluster {} (set it in the settings instead)", settings.cluster_name),
                    field,
                };
                let endpoint = settings.cluster_endpoint.clone().or_else(|| cluster.endpoint().map(str::to_owned));
                let ca = settings
                    .cluster_ca_bundle
                    .clone()
                    .or_else(|| cluster.certificate_authority().and_then(|c| c.data()).map(str::to_owned));
                let cidr = settings.cluster_service_cidr.clone().or_else(|| {
                    cluster.kubernetes_network_config().and_then(|n| n.service_ipv4_cidr()).map(str::to_owned)
                });
                (
                    endpoint.ok_or_else(|| missing("endpoint"))?,
                    ca.ok_or_else(|| missing("certificateAuthority.data"))?,
                    cidr.ok_or_else(|| missing("kubernetesNetworkConfig.serviceIpv4Cidr"))?,
                )
            }
        };
    Ok(ClusterInfo { name: settings.cluster_name.clone(), endpoint, ca_bundle, service_cidr, kubernetes_minor })
}
