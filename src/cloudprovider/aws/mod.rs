//! The AWS cloud provider. Clients come from the standard AWS configuration chain, so IRSA, EKS
//! Pod Identity, environment credentials and endpoint overrides (`AWS_ENDPOINT_URL_EC2`,
//! `AWS_ENDPOINT_URL`) all work without stoker knowing about them.
//!
//! What flows through: the controllers call the `CloudProvider` methods; this module holds the
//! clients and two caches, each an owned type in its own room: `offerings` (catalog, prices,
//! priced types per node-class shape, unavailable offerings, subnet addresses) and `templates`
//! (launch templates in EC2 and which are in use). `launch` is the CreateFleet retry loop,
//! `instances` finds and terminates instances, `nodeclass` resolves node classes, `queue` reads the
//! interruption queue. Decisions are made by the pure modules: `catalog` and `allocatable`
//! (instance types as the solver sees them), `fleet` (overrides and error meanings),
//! `createfleet` (the request and its reply), `tags`, `ami` (alias parameters, newest image),
//! `bootstrap` (user data), `launchtemplate` (template content and name).

pub mod allocatable;
pub mod ami;
pub mod batching;
pub mod bootstrap;
pub mod catalog;
pub mod cloudformation;
pub mod cluster;
pub mod createfleet;
pub mod fleet;
pub mod iam_policy;
pub mod instances;
mod launch;
pub mod launchtemplate;
mod nodeclass;
mod offerings;
pub mod price_list;
pub mod pricing;
pub mod queue;
pub mod reservations;
pub mod tags;
mod templates;
pub mod unavailable;

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};

pub use self::bootstrap::ClusterInfo;
use self::{
    batching::{BatchWindow, FleetBatcher},
    catalog::Catalog,
    offerings::{Offerings, Shape},
    templates::TemplatesInUse,
};
use super::{CloudError, CloudProvider, Followers, Instance, PriorLaunches};
use crate::{
    apis::ec2nodeclass::{EC2NodeClass, EC2NodeClassStatus},
    apis::nodeclaim::NodeClaim,
    scheduling::{catalog::InstanceType, overlays::Overlay},
};

/// How long a launch template may go unused before [`CloudProvider::prune`] deletes it.
const LAUNCH_TEMPLATE_IDLE: Duration = Duration::from_secs(3600);

/// The standard AWS configuration; `region` overrides the chain's region. Retries are adaptive:
/// each client keeps a rate limiter that slows every caller down once the service throttles, so
/// all of stoker's EC2 calls share one budget.
pub async fn aws_config(region: Option<String>) -> SdkConfig {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).retry_config(aws_config::retry::RetryConfig::adaptive());
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    loader.load().await
}

/// `config` as stoker's own clients use it: every request names stoker in its user agent
/// (`app/stoker`), which tells its calls apart from anything else using the same credentials (the
/// end-to-end tests record stoker's calls by it to check the IAM policy).
pub fn stoker_config(config: &SdkConfig) -> SdkConfig {
    let mut builder = config.to_builder();
    builder.set_app_name(aws_config::AppName::new("stoker").ok());
    builder.build()
}

/// An EC2 client from the standard AWS configuration chain; `region` overrides the chain's region.
pub async fn ec2_client(region: Option<String>) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&aws_config(region).await)
}

/// How the provider behaves; the defaults are production's, tests shorten the durations.
#[derive(Debug, Clone)]
pub struct AwsOptions {
    pub cluster: ClusterInfo,
    /// How long a failed offering or full subnet is skipped.
    pub unavailable_ttl: Duration,
    /// How old the instance catalog and spot prices may get before they are fetched again.
    pub catalog_ttl: Duration,
    /// CreateFleet calls per launch before giving up with the errors seen.
    pub max_launch_attempts: usize,
    /// First back-off after throttling; doubled per attempt, with jitter.
    pub throttle_backoff: Duration,
    /// How long launches like each other wait to share one CreateFleet call.
    pub batch_window: BatchWindow,
}

impl AwsOptions {
    pub fn new(cluster: ClusterInfo) -> Self {
        Self {
            cluster,
            unavailable_ttl: Duration::from_secs(180),
            catalog_ttl: Duration::from_secs(300),
            max_launch_attempts: 6,
            throttle_backoff: Duration::from_millis(500),
            batch_window: BatchWindow::default(),
        }
    }
}

/// Launches and finds EC2 instances for one cluster.
pub struct AwsCloudProvider {
    ec2: aws_sdk_ec2::Client,
    /// The Price List API, when prices are to be refreshed from it.
    pricing: Option<aws_sdk_pricing::Client>,
    ssm: aws_sdk_ssm::Client,
    iam: aws_sdk_iam::Client,
    region: String,
    options: AwsOptions,
    offerings: Offerings,
    templates_in_use: TemplatesInUse,
    fleets: FleetBatcher,
}

impl AwsCloudProvider {
    pub fn new(config: &SdkConfig, options: AwsOptions) -> Self {
        let config = &stoker_config(config);
        let ec2 = aws_sdk_ec2::Client::new(config);
        let mut provider =
            Self::from_clients(ec2, aws_sdk_ssm::Client::new(config), aws_sdk_iam::Client::new(config), options);
        // The Price List API answers in a few regions only; each covers its whole partition.
        let endpoint_region = if provider.region.starts_with("cn-") { "cn-northwest-1" } else { "us-east-1" };
        let pricing_config =
            aws_sdk_pricing::config::Builder::from(config).region(Region::new(endpoint_region)).build();
        provider.pricing = Some(aws_sdk_pricing::Client::from_conf(pricing_config));
        provider
    }

    /// A provider over given clients (tests route EC2 through a fault-injecting proxy).
    pub fn from_clients(
        ec2: aws_sdk_ec2::Client,
        ssm: aws_sdk_ssm::Client,
        iam: aws_sdk_iam::Client,
        options: AwsOptions,
    ) -> Self {
        let region = ec2.config().region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into());
        Self {
            ec2,
            pricing: None,
            ssm,
            iam,
            offerings: Offerings::new(&region, options.catalog_ttl, options.unavailable_ttl),
            templates_in_use: TemplatesInUse::default(),
            fleets: FleetBatcher::new(options.batch_window),
            region,
            options,
        }
    }

    pub fn cluster_name(&self) -> &str {
        &self.options.cluster.name
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Live entries of the unavailable-offerings cache.
    pub fn unavailable_offerings(&self) -> usize {
        self.offerings.unavailable_count()
    }

    /// Fetches the instance catalog and spot prices now (the operator calls this periodically).
    pub async fn refresh(&self) -> Result<Arc<Catalog>, CloudError> {
        self.offerings.refresh(&self.ec2).await
    }

    /// Fetches this region's on-demand prices from the AWS Price List API (`GetProducts`) and
    /// uses them in place of the committed snapshot's; returns how many instance types it priced.
    /// On failure the prices in use stay (the operator calls this at start and twice a day).
    pub async fn refresh_on_demand_prices(&self) -> Result<usize, CloudError> {
        use aws_sdk_pricing::types::{Filter, FilterType};
        let Some(pricing) = &self.pricing else { return Ok(0) };
        let mut request = pricing.get_products().service_code("AmazonEC2").format_version("aws_v1").max_results(100);
        for (field, value) in price_list::filters(&self.region) {
            let filter = Filter::builder().r#type(FilterType::TermMatch).field(field).value(value).build();
            request = request.filters(filter.map_err(|e| CloudError::InvalidConfiguration(e.to_string()))?);
        }
        let mut prices = price_list::Prices::default();
        let mut pages = request.into_paginator().send();
        while let Some(page) = pages.next().await {
            for item in page.map_err(aws_error("GetProducts"))?.price_list() {
                prices.add(item);
            }
        }
        if prices.unreadable > 0 {
            tracing::warn!(unreadable = prices.unreadable, "some Price List items could not be read");
        }
        let priced = prices.on_demand.len();
        self.offerings.set_on_demand(prices.on_demand);
        Ok(priced)
    }

    /// Deletes this cluster's launch templates idle for `idle` (the operator calls this
    /// periodically).
    pub async fn prune_launch_templates(&self, idle: Duration) -> Result<usize, CloudError> {
        templates::prune(self, idle).await
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded caches hold no invariants a panicking holder could break halfway.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An AWS SDK error as a `CloudError` carrying the service's error code.
fn aws_error<E>(operation: &'static str) -> impl FnOnce(E) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    move |error| CloudError::Aws {
        operation,
        code: error.code().unwrap_or("RequestFailed").to_owned(),
        message: error.message().map(str::to_owned).unwrap_or_else(|| DisplayErrorContext(&error).to_string()),
    }
}

impl CloudProvider for AwsCloudProvider {
    type NodeClass = EC2NodeClass;
    type NodeClassStatus = EC2NodeClassStatus;

    async fn create(
        &self,
        claim: &NodeClaim,
        class: &EC2NodeClass,
        prior: PriorLaunches,
        followers: Followers,
    ) -> Result<Instance, CloudError> {
        launch::create(self, claim, class, prior, followers).await
    }

    async fn prepare(&self, claim: &NodeClaim, class: &EC2NodeClass) -> Result<(), CloudError> {
        templates::prepare(self, claim, class).await
    }

    async fn delete(&self, provider_id: &str) -> Result<(), CloudError> {
        instances::terminate(self, provider_id).await
    }

    async fn get(&self, provider_id: &str) -> Result<Instance, CloudError> {
        instances::get(self, instances::instance_id(provider_id)?).await
    }

    async fn list(&self) -> Result<Vec<Instance>, CloudError> {
        instances::list(self).await
    }

    async fn instance_types(&self, class: &EC2NodeClass) -> Result<Arc<[InstanceType]>, CloudError> {
        let status = nodeclass::ready_status(class)?;
        let shape = Shape {
            zones: status.subnets.iter().map(|s| (s.zone.clone(), s.zone_id.clone().unwrap_or_default())).collect(),
            arches: status.amis.iter().filter_map(ami::arch_of).map(str::to_owned).collect(),
            node: launchtemplate::node_settings(class),
            reservations: status.capacity_reservations.clone(),
        };
        self.offerings.instance_types(&self.ec2, shape).await
    }

    async fn resolve_node_class(&self, class: &EC2NodeClass) -> Result<EC2NodeClassStatus, CloudError> {
        nodeclass::resolve(self, class).await
    }

    async fn delete_node_class_resources(&self, class: &EC2NodeClass) -> Result<(), CloudError> {
        let tag = aws_sdk_ec2::types::Filter::builder()
            .name(format!("tag:{}", crate::apis::labels::EC2_NODECLASS_TAG))
            .values(kube::ResourceExt::name_any(class))
            .build();
        templates::delete(self, Some(tag), |_, _| true).await?;
        nodeclass::delete_instance_profile(self, class).await
    }

    async fn ended_reservations(&self, ids: &[String]) -> Result<Vec<String>, CloudError> {
        nodeclass::ended_reservations(self, ids).await
    }

    async fn prune(&self) -> Result<usize, CloudError> {
        self.prune_launch_templates(LAUNCH_TEMPLATE_IDLE).await
    }

    fn offering_interrupted(&self, instance_type: &str, zone: &str, capacity_type: &str) {
        self.offerings.mark_unavailable(|cache, now| cache.mark_offering(instance_type, zone, capacity_type, now));
    }

    fn use_overlays(&self, overlays: Vec<Overlay>) {
        self.offerings.use_overlays(overlays);
    }
}

#[cfg(test)]
mod tests {
    use aws_config::retry::RetryMode;

    use super::*;

    #[tokio::test]
    async fn every_client_shares_an_adaptive_rate_limiter() {
        let config = aws_config(Some("us-east-1".into())).await;
        assert_eq!(config.retry_config().map(|r| r.mode()), Some(RetryMode::Adaptive));
    }
}
