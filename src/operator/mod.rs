//! Wiring: configuration, logging, the cloud provider with its background refreshes, and the
//! controllers, all sharing one Kubernetes client and one AWS configuration.

pub mod settings;

use std::{sync::Arc, time::Duration};

use kube::{
    Client,
    runtime::events::{Recorder, Reporter},
};
pub use settings::Settings;
use tracing::{info, warn};
use tracing_subscriber::{EnvFilter, fmt};

use crate::{
    cloudprovider::{
        CloudError,
        aws::{AwsCloudProvider, AwsOptions, ClusterInfo, aws_config},
    },
    controllers::{nodeclass, warmpool::reconcile as warmpool},
    error::{Error, Result},
};

/// How long a launch template may go unused before it is deleted.
const LAUNCH_TEMPLATE_IDLE: Duration = Duration::from_secs(3600);

pub fn init_logging(settings: &Settings) {
    let filter = EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match settings.log_format {
        settings::LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
        settings::LogFormat::Text => builder.init(),
    }
}

pub async fn run(settings: Settings) -> Result<()> {
    let client = Client::try_default().await?;
    let reporter = Reporter { controller: "stoker".into(), instance: std::env::var("POD_NAME").ok() };
    info!(cluster = %settings.cluster_name, "starting stoker controller");
    let recorder = Recorder::new(client.clone(), reporter);

    let config = aws_config(settings.region.clone()).await;
    let cluster = cluster_info(&settings, &config, &client).await?;
    info!(endpoint = %cluster.endpoint, kubernetes = %cluster.kubernetes_minor, "cluster");
    let provider = Arc::new(AwsCloudProvider::new(&config, AwsOptions::new(cluster)));
    tokio::spawn(refresh_cloud(provider.clone()));

    tokio::join!(
        warmpool::run(Arc::new(warmpool::Context { client: client.clone(), recorder: recorder.clone() })),
        nodeclass::run(Arc::new(nodeclass::Context { client, recorder, provider })),
    );
    info!("stopped");
    Ok(())
}

/// Keeps the instance catalog and spot prices fresh and deletes idle launch templates.
async fn refresh_cloud(provider: Arc<AwsCloudProvider>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(300));
    loop {
        ticks.tick().await;
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
