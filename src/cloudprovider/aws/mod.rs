//! The AWS cloud provider. Clients come from the standard AWS configuration chain, so IRSA, EKS
//! Pod Identity, environment credentials and endpoint overrides (`AWS_ENDPOINT_URL_EC2`,
//! `AWS_ENDPOINT_URL`) all work without stoker knowing about them.
//!
//! What flows through: the controllers call the `CloudProvider` methods; this module keeps the
//! caches (catalog and prices, unavailable offerings, subnet address counts, launch templates
//! in use) and calls EC2, SSM and IAM. Decisions are made by the pure modules: `catalog`
//! (priced instance types), `fleet` (overrides and error meanings), `ami` (alias parameters,
//! newest image), `bootstrap` (user data), `launchtemplate` (template content and name).

pub mod allocatable;
pub mod ami;
pub mod bootstrap;
pub mod catalog;
pub mod cluster;
pub mod fleet;
pub mod instances;
mod launch;
pub mod launchtemplate;
mod nodeclass;
pub mod pricing;
pub mod unavailable;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};

pub use self::bootstrap::ClusterInfo;
use self::{catalog::Catalog, pricing::PriceBook, unavailable::UnavailableOfferings};
use super::{CloudError, CloudProvider, Instance, PriorLaunches};
use crate::{
    apis::ec2nodeclass::{EC2NodeClass, EC2NodeClassStatus, KubeletConfiguration},
    apis::nodeclaim::NodeClaim,
    scheduling::catalog::InstanceType,
};

/// After a failed catalog refresh, how long the last good catalog serves before the next try.
const CATALOG_RETRY: Duration = Duration::from_secs(60);

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
}

impl AwsOptions {
    pub fn new(cluster: ClusterInfo) -> Self {
        Self {
            cluster,
            unavailable_ttl: Duration::from_secs(180),
            catalog_ttl: Duration::from_secs(300),
            max_launch_attempts: 6,
            throttle_backoff: Duration::from_millis(500),
        }
    }
}

/// Launches and finds EC2 instances for one cluster.
pub struct AwsCloudProvider {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    iam: aws_sdk_iam::Client,
    region: String,
    options: AwsOptions,
    /// Serializes catalog refreshes; holds the catalog and when it was fetched.
    catalog: tokio::sync::Mutex<Option<(Arc<Catalog>, Instant)>>,
    prices: Mutex<PriceBook>,
    unavailable: Mutex<UnavailableOfferings>,
    /// Free addresses per subnet, from the last node class resolution.
    subnet_ips: Mutex<HashMap<String, i64>>,
    /// Launch templates known to exist, with when a launch last used each.
    launch_templates: Mutex<HashMap<String, Instant>>,
    /// Priced instance types per node-class shape (zones, architectures, kubelet settings):
    /// building them takes tens of milliseconds, and every batch and launch needs them.
    priced: Mutex<HashMap<String, Priced>>,
    /// Counts changes of the catalog, the prices and the unavailable marks; a priced entry built
    /// at another count is stale.
    generation: AtomicU64,
}

struct Priced {
    shape: Shape,
    types: Arc<[InstanceType]>,
    generation: u64,
    /// When the first unavailable mark the entry saw expires.
    valid_until: Option<Instant>,
}

impl AwsCloudProvider {
    pub fn new(config: &SdkConfig, options: AwsOptions) -> Self {
        let ec2 = aws_sdk_ec2::Client::new(config);
        Self::from_clients(ec2, aws_sdk_ssm::Client::new(config), aws_sdk_iam::Client::new(config), options)
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
            ssm,
            iam,
            prices: Mutex::new(PriceBook::snapshot(&region)),
            region,
            unavailable: Mutex::new(UnavailableOfferings::new(options.unavailable_ttl)),
            options,
            catalog: tokio::sync::Mutex::new(None),
            subnet_ips: Mutex::new(HashMap::new()),
            launch_templates: Mutex::new(HashMap::new()),
            priced: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
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
        lock(&self.unavailable).len(Instant::now())
    }

    /// Fetches the instance catalog and spot prices now (the operator calls this periodically).
    pub async fn refresh(&self) -> Result<Arc<Catalog>, CloudError> {
        let mut cached = self.catalog.lock().await;
        self.refresh_locked(&mut cached).await.map(|(catalog, _)| catalog)
    }

    /// Fetches the catalog into `cached` (the locked cache); returns it with its generation.
    async fn refresh_locked(
        &self,
        cached: &mut Option<(Arc<Catalog>, Instant)>,
    ) -> Result<(Arc<Catalog>, u64), CloudError> {
        let fresh = match catalog::fetch(&self.ec2).await {
            Ok(fresh) => Arc::new(fresh),
            // Instance types change rarely: a failed refresh (throttling, an outage) keeps the last
            // good catalog and tries again a minute later, instead of failing every launch and
            // batch with a fetch of its own.
            Err(error) => {
                let Some((last, _)) = cached.as_ref() else { return Err(error) };
                tracing::warn!(%error, "cannot refresh the instance catalog; keeping the last one");
                let last = last.clone();
                let retry_at = Instant::now().checked_sub(self.options.catalog_ttl).map(|stale| stale + CATALOG_RETRY);
                *cached = Some((last.clone(), retry_at.unwrap_or_else(Instant::now)));
                return Ok((last, self.generation.load(Ordering::SeqCst)));
            }
        };
        let spot = catalog::fetch_spot_prices(&self.ec2).await;
        {
            let mut prices = lock(&self.prices);
            prices.learn_vcpus(&fresh.types);
            match spot {
                Ok(spot) => prices.set_spot(spot),
                // Keep the previous spot prices (or the documented assumption): a price feed
                // outage must not stop launches.
                Err(error) => tracing::warn!(%error, "cannot refresh spot prices"),
            }
        }
        *cached = Some((fresh.clone(), Instant::now()));
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        // Price again what was in use, so batches keep finding it ready.
        let shapes: Vec<Shape> = lock(&self.priced).drain().map(|(_, priced)| priced.shape).collect();
        for shape in shapes {
            self.price(&fresh, shape, generation);
        }
        Ok((fresh, generation))
    }

    /// The catalog, fetched again when stale, and the generation it was current in (read under
    /// the catalog's lock, so the two agree).
    async fn current_catalog(&self) -> Result<(Arc<Catalog>, u64), CloudError> {
        let mut cached = self.catalog.lock().await;
        if let Some((catalog, fetched)) = cached.as_ref()
            && fetched.elapsed() < self.options.catalog_ttl
        {
            return Ok((catalog.clone(), self.generation.load(Ordering::SeqCst)));
        }
        self.refresh_locked(&mut cached).await
    }

    /// Deletes this cluster's launch templates that no launch of this process used within
    /// `idle` and that are older than that (the operator calls this periodically). A template
    /// deleted while still wanted is simply created again by the next launch.
    pub async fn prune_launch_templates(&self, idle: Duration) -> Result<usize, CloudError> {
        let recent: Vec<String> = lock(&self.launch_templates)
            .iter()
            .filter(|(_, used)| used.elapsed() < idle)
            .map(|(name, _)| name.clone())
            .collect();
        let cutoff = chrono::Utc::now() - chrono::Duration::from_std(idle).unwrap_or_default();
        launch::delete_launch_templates(self, None, |name, created| {
            !recent.iter().any(|r| r == name) && created.is_some_and(|created| created < cutoff)
        })
        .await
    }

    /// Prices the catalog for a shape and caches the result under `generation`.
    fn price(&self, catalog: &Catalog, shape: Shape, generation: u64) -> Arc<[InstanceType]> {
        let now = Instant::now();
        let (types, valid_until) = {
            let prices = lock(&self.prices);
            let unavailable = lock(&self.unavailable);
            let types: Arc<[InstanceType]> = catalog
                .instance_types(&shape.zones, &shape.arches, &prices, &unavailable, now, shape.kubelet.as_ref())
                .into();
            (types, unavailable.next_expiry(now))
        };
        let priced = Priced { shape, types: types.clone(), generation, valid_until };
        lock(&self.priced).insert(priced.shape.key(), priced);
        types
    }

    fn mark_unavailable(&self, mark: impl FnOnce(&mut UnavailableOfferings, Instant)) {
        mark(&mut lock(&self.unavailable), Instant::now());
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// What the priced instance types of a node class depend on besides the catalog and prices.
struct Shape {
    zones: BTreeSet<String>,
    arches: BTreeSet<String>,
    kubelet: Option<KubeletConfiguration>,
}

impl Shape {
    fn key(&self) -> String {
        format!("{:?}{:?}{}", self.zones, self.arches, serde_json::to_string(&self.kubelet).unwrap_or_default())
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
    ) -> Result<Instance, CloudError> {
        launch::create(self, claim, class, prior).await
    }

    async fn prepare(&self, claim: &NodeClaim, class: &EC2NodeClass) -> Result<(), CloudError> {
        launch::prepare(self, claim, class).await
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
        // A mark made while pricing bumps the generation past this one: the entry is then stale,
        // never wrong.
        let (catalog, generation) = self.current_catalog().await?;
        let shape = Shape {
            zones: status.subnets.iter().map(|s| s.zone.clone()).collect(),
            arches: status.amis.iter().filter_map(ami::arch_of).map(str::to_owned).collect(),
            kubelet: class.spec.kubelet.clone(),
        };
        let key = shape.key();
        if let Some(priced) = lock(&self.priced).get(&key)
            && priced.generation == generation
            && priced.valid_until.is_none_or(|until| Instant::now() < until)
        {
            return Ok(priced.types.clone());
        }
        Ok(self.price(&catalog, shape, generation))
    }

    async fn resolve_node_class(&self, class: &EC2NodeClass) -> Result<EC2NodeClassStatus, CloudError> {
        nodeclass::resolve(self, class).await
    }

    async fn delete_node_class_resources(&self, class: &EC2NodeClass) -> Result<(), CloudError> {
        let tag = aws_sdk_ec2::types::Filter::builder()
            .name(format!("tag:{}", crate::apis::labels::EC2_NODECLASS_TAG))
            .values(kube::ResourceExt::name_any(class))
            .build();
        launch::delete_launch_templates(self, Some(tag), |_, _| true).await?;
        nodeclass::delete_instance_profile(self, class).await
    }

    async fn prune(&self) -> Result<usize, CloudError> {
        self.prune_launch_templates(LAUNCH_TEMPLATE_IDLE).await
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
