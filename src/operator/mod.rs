//! Wiring: configuration, logging, the metrics and health server, the cloud provider with its
//! background refresh, the cluster state every replica keeps, and the leadership loop that runs
//! the controllers while this replica holds the Lease.

pub mod leadership;
pub mod server;
pub mod settings;

use std::{sync::Arc, time::Duration};

use aws_config::SdkConfig;

use kube::{
    Client,
    runtime::events::{Recorder, Reporter},
};
pub use settings::Settings;
use tokio::sync::{Notify, broadcast};
use tracing::{info, warn};
use tracing_subscriber::{EnvFilter, fmt};

use crate::{
    cloudprovider::{
        aws::{AwsCloudProvider, AwsOptions, aws_config, cluster},
        metered::Metered,
    },
    controllers::{
        Provider, Shared, capacitybuffer, disruption, garbage, interruption, nodeclaim, nodeclass, nodeoverlay,
        nodepool,
        provisioner::{self, Provisioner},
        reservations, static_pools,
        warmpool::{preemption, reconcile as warmpool},
    },
    error::{Error, Result},
    metrics::Metrics,
    state::{ClusterState, capacity_buffers_served, pods::is_provisionable},
};

/// The Lease every replica competes for.
const LEASE_NAME: &str = "stoker-leader-election";

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
    let metrics = Arc::new(Metrics::default());
    tokio::spawn(server::serve(settings.metrics_address.clone(), metrics.clone()));
    if settings.health_address != settings.metrics_address {
        tokio::spawn(server::serve(settings.health_address.clone(), metrics.clone()));
    }

    let config = aws_config(settings.region.clone()).await;
    let version = apiserver_version(&client).await;
    let minor: String = version.minor.chars().take_while(char::is_ascii_digit).collect();
    let known = cluster::KnownCluster {
        name: settings.cluster_name.clone(),
        endpoint: settings.cluster_endpoint.clone(),
        ca_bundle: settings.cluster_ca_bundle.clone(),
        service_cidr: settings.cluster_service_cidr.clone(),
    };
    let cluster = cluster::discover(&config, known, format!("{}.{minor}", version.major)).await?;
    info!(endpoint = %cluster.endpoint, kubernetes = %cluster.kubernetes_minor, "cluster");
    let aws = Arc::new(AwsCloudProvider::new(&config, AwsOptions::new(cluster)));
    tokio::spawn(refresh_catalog(aws.clone(), metrics.clone()));
    tokio::spawn(refresh_on_demand_prices(aws.clone()));

    // Pod events wake the provisioner and feed the preemption counter of whichever term leads.
    let provisionable = Arc::new(Notify::new());
    let (preemptions, _) = broadcast::channel(1024);
    let (wake, preempted) = (provisionable.clone(), preemptions.clone());
    let buffers_served = capacity_buffers_served(&client).await;
    let state = ClusterState::start(&client, buffers_served, move |pod| {
        if is_provisionable(pod) {
            wake.notify_one();
        }
        if let Some(preemption) = preemption::preempted(pod) {
            // No receiver outside a leader term (or with the WarmPools gate off): nothing to count.
            let _ = preempted.send(preemption);
        }
    });
    state.ready().await.map_err(|_| Error::MissingField { object: "reflector".into(), field: "initial list" })?;
    info!("caches synced");
    metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    let shared = Arc::new(Shared {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        // The controllers' calls go through the metering wrapper.
        provider: Arc::new(Metered::new(aws, metrics.clone())),
        metrics,
        state,
        provisionable,
        preemptions,
        policies: settings.policies,
        buffer_outcomes: Default::default(),
        nominations: Default::default(),
    });

    let gates = settings.feature_gates;
    let repair_after = settings.node_repair_after.delta();
    info!(warm_pools = gates.warm_pools, consolidation = gates.consolidation, "feature gates");
    // Every replica keeps its caches warm; only the leader runs the controllers, which all write.
    let (mut leading, _always_leading) = leadership(&client, &settings);
    loop {
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return Ok(()) },
                _ = shutdown_signal() => { info!("shutting down"); return Ok(()) }
            }
        }
        info!("leading: starting the controllers");
        shared.metrics.leader.set(1);
        let new_claims = nodeclaim::NewClaims::default();
        let provisioner = Arc::new(Provisioner {
            shared: shared.clone(),
            new_claims: new_claims.clone(),
            batch_idle: settings.batch_idle_duration.as_std(),
            batch_max: settings.batch_max_duration.as_std(),
            waiting: Default::default(),
            told: Default::default(),
        });
        // Subscribed before the controllers start, so no preemption of this term is missed.
        let preemptions = shared.preemptions.subscribe();
        let controllers = async {
            tokio::join!(
                provisioner::run(provisioner),
                nodeclaim::run(Arc::new(nodeclaim::Context::new(shared.clone(), new_claims, repair_after))),
                gated(
                    gates.consolidation,
                    disruption::run(
                        shared.clone(),
                        gates.spot_to_spot_consolidation,
                        settings.consolidation_validation_delay.as_std(),
                    ),
                ),
                garbage::run(shared.clone()),
                reservations::run(shared.clone()),
                capacitybuffer::run(shared.clone()),
                static_pools::run(shared.clone()),
                nodepool::run(shared.clone()),
                nodeoverlay::run(shared.clone()),
                gated(gates.warm_pools, warmpool::run(shared.clone(), settings.warm_pool_policy())),
                gated(gates.warm_pools, preemption::run(shared.clone(), preemptions)),
                nodeclass::run(shared.clone()),
                interruptions(&shared, &config, &settings),
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
        let ended = tokio::select! {
            _ = controllers => true,
            _ = lost => { warn!("lost the leader Lease: stopped the controllers"); false }
            _ = shutdown_signal() => { info!("shutting down"); true }
        };
        shared.metrics.leadership_ended();
        if ended {
            break;
        }
    }
    info!("stopped");
    Ok(())
}

/// The interruption controller when a queue is set.
async fn interruptions<P: Provider>(shared: &Arc<Shared<P>>, config: &SdkConfig, settings: &Settings) {
    if let Some(queue) = &settings.interruption_queue {
        interruption::run(shared.clone(), config.clone(), queue.clone(), settings.act_on_rebalance_recommendations)
            .await
    }
}

/// Runs a controller only when its feature gate is on; a gated-off controller finishes at once.
async fn gated(enabled: bool, controller: impl Future<Output = ()>) {
    if enabled {
        controller.await
    }
}

/// The leader Lease's state: true while this replica holds it. Without leader election, always
/// true (the returned sender must be kept, or the receiver sees a closed channel).
fn leadership(
    client: &Client,
    settings: &Settings,
) -> (tokio::sync::watch::Receiver<bool>, Option<tokio::sync::watch::Sender<bool>>) {
    if !settings.leader_elect {
        let (sender, receiver) = tokio::sync::watch::channel(true);
        return (receiver, Some(sender));
    }
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let suffix: String = (0..8).map(|_| fastrand::alphanumeric()).collect();
        format!("stoker-{suffix}")
    });
    let namespace = &settings.leader_election_namespace;
    let leading = leadership::elect(client.clone(), namespace, LEASE_NAME, identity, leadership::Timing::DEFAULT);
    (leading, None)
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

/// The apiserver's version, asked until it answers: a replica started while the apiserver is
/// away (an upgrade, a restart) waits for it instead of exiting and being restarted in a loop.
async fn apiserver_version(client: &Client) -> k8s_openapi::apimachinery::pkg::version::Info {
    let mut wait = Duration::from_secs(1);
    loop {
        match client.apiserver_version().await {
            Ok(version) => return version,
            Err(error) => warn!(%error, retry_in = ?wait, "the apiserver does not answer yet"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// Takes on-demand prices from the AWS Price List API at start and twice a day, as Karpenter
/// does; until it answers (or where it cannot be reached) the committed snapshot prices.
async fn refresh_on_demand_prices(provider: Arc<AwsCloudProvider>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(12 * 3600));
    loop {
        ticks.tick().await;
        match provider.refresh_on_demand_prices().await {
            Ok(priced) => info!(priced, "refreshed on-demand prices from the Price List API"),
            Err(error) => {
                warn!(%error, "cannot read on-demand prices from the Price List API; keeping the ones in use")
            }
        }
    }
}

/// Keeps the instance catalog and spot prices fresh (a read every replica may make, so a new
/// leader starts with a warm catalog).
async fn refresh_catalog(provider: Arc<AwsCloudProvider>, metrics: Arc<Metrics>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(300));
    loop {
        ticks.tick().await;
        metrics.unavailable_offerings.set(provider.unavailable_offerings() as i64);
        match provider.refresh().await {
            Ok(catalog) => info!(instance_types = catalog.types.len(), "refreshed instance catalog and prices"),
            Err(error) => warn!(%error, "cannot refresh the instance catalog"),
        }
    }
}
