//! What can be launched where, cached: the instance catalog and spot prices, the catalog priced
//! per node-class shape, the offerings and subnets that recently failed to launch, the room each
//! capacity reservation has, and the free addresses per subnet. Reserved offerings
//! (`reservations.rs`) are added last, after the NodeOverlays.
//!
//! Every batch and launch asks for priced instance types (with the NodeOverlays in effect laid
//! over them), and pricing the catalog for a shape takes tens of milliseconds, so priced types
//! are kept per shape. An entry is stale once the catalog, the prices, the overlays, the
//! unavailable marks or a reservation's having room changed (a generation counter) or the first unavailable mark it saw expired.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    allocatable::NodeSettings,
    catalog,
    catalog::Catalog,
    fleet::Subnet,
    lock,
    pricing::PriceBook,
    reservations::{ReservationRoom, add_reserved_offerings},
    unavailable::UnavailableOfferings,
};
use crate::{
    apis::ec2nodeclass::{EC2NodeClassStatus, ResolvedCapacityReservation},
    cloudprovider::CloudError,
    scheduling::{catalog::InstanceType, overlays, overlays::Overlay},
};

/// After a failed catalog refresh, how long the last good catalog serves before the next try.
const CATALOG_RETRY: Duration = Duration::from_secs(60);

/// What the priced instance types of a node class depend on besides the catalog and prices.
pub struct Shape {
    /// Zone name → zone ID (empty when not known).
    pub zones: BTreeMap<String, String>,
    pub arches: BTreeSet<String>,
    pub node: NodeSettings,
    /// The node class's capacity reservations.
    pub reservations: Vec<ResolvedCapacityReservation>,
}

impl Shape {
    fn key(&self) -> String {
        let node = serde_json::to_string(&self.node).unwrap_or_default();
        format!("{:?}{:?}{node}{:?}", self.zones, self.arches, self.reservations)
    }
}

struct Priced {
    shape: Shape,
    types: Arc<[InstanceType]>,
    generation: u64,
    /// When the first unavailable mark the entry saw expires.
    valid_until: Option<Instant>,
}

pub struct Offerings {
    catalog_ttl: Duration,
    /// Serializes catalog refreshes; holds the catalog and when it was fetched.
    catalog: tokio::sync::Mutex<Option<(Arc<Catalog>, Instant)>>,
    prices: Mutex<PriceBook>,
    unavailable: Mutex<UnavailableOfferings>,
    /// How many more instances each capacity reservation can take.
    reservations: Mutex<ReservationRoom>,
    /// Free addresses per subnet, from the last node class resolution.
    subnet_ips: Mutex<HashMap<String, i64>>,
    priced: Mutex<HashMap<String, Priced>>,
    /// The NodeOverlays in effect, in precedence order, laid over every priced type.
    overlays: Mutex<Arc<[Overlay]>>,
    /// Counts changes of the catalog, the prices, the overlays and the unavailable marks; a priced
    /// entry built at another count is stale.
    generation: AtomicU64,
}

impl Offerings {
    /// Empty caches; prices start from the region's on-demand snapshot.
    pub fn new(region: &str, catalog_ttl: Duration, unavailable_ttl: Duration) -> Self {
        Self {
            catalog_ttl,
            catalog: tokio::sync::Mutex::new(None),
            prices: Mutex::new(PriceBook::snapshot(region)),
            unavailable: Mutex::new(UnavailableOfferings::new(unavailable_ttl)),
            reservations: Mutex::new(ReservationRoom::default()),
            subnet_ips: Mutex::new(HashMap::new()),
            priced: Mutex::new(HashMap::new()),
            overlays: Mutex::new(Arc::from([])),
            generation: AtomicU64::new(0),
        }
    }

    /// Fetches the instance catalog and spot prices now.
    pub async fn refresh(&self, ec2: &aws_sdk_ec2::Client) -> Result<Arc<Catalog>, CloudError> {
        let mut cached = self.catalog.lock().await;
        self.refresh_locked(ec2, &mut cached).await.map(|(catalog, _)| catalog)
    }

    /// Fetches the catalog into `cached` (the locked cache); returns it with its generation.
    async fn refresh_locked(
        &self,
        ec2: &aws_sdk_ec2::Client,
        cached: &mut Option<(Arc<Catalog>, Instant)>,
    ) -> Result<(Arc<Catalog>, u64), CloudError> {
        let fresh = match catalog::fetch(ec2).await {
            Ok(fresh) => Arc::new(fresh),
            // Instance types change rarely: a failed refresh (throttling, an outage) keeps the last
            // good catalog and tries again a minute later, instead of failing every launch and
            // batch with a fetch of its own.
            Err(error) => {
                let Some((last, _)) = cached.as_ref() else { return Err(error) };
                tracing::warn!(%error, "cannot refresh the instance catalog; keeping the last one");
                let last = last.clone();
                let retry_at = Instant::now().checked_sub(self.catalog_ttl).map(|stale| stale + CATALOG_RETRY);
                *cached = Some((last.clone(), retry_at.unwrap_or_else(Instant::now)));
                return Ok((last, self.generation.load(Ordering::SeqCst)));
            }
        };
        let spot = catalog::fetch_spot_prices(ec2).await;
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

    /// Takes on-demand prices from the Price List API; what was priced with the old ones is
    /// priced again on next use.
    pub fn set_on_demand(&self, prices: HashMap<String, f64>) {
        lock(&self.prices).set_on_demand(prices);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Lays these overlays over every priced type from now on; what was priced under others is
    /// priced again on next use. The same overlays again change nothing.
    pub fn use_overlays(&self, overlays: Vec<Overlay>) {
        let mut current = lock(&self.overlays);
        if **current != overlays[..] {
            *current = overlays.into();
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Whether an overlay in effect sets prices: launches then follow the overlaid order rather
    /// than EC2's own prices.
    pub fn overlays_set_prices(&self) -> bool {
        lock(&self.overlays).iter().any(|overlay| overlay.price.is_some())
    }

    /// The catalog, fetched again when stale, and the generation it was current in (read under
    /// the catalog's lock, so the two agree).
    async fn current_catalog(&self, ec2: &aws_sdk_ec2::Client) -> Result<(Arc<Catalog>, u64), CloudError> {
        let mut cached = self.catalog.lock().await;
        if let Some((catalog, fetched)) = cached.as_ref()
            && fetched.elapsed() < self.catalog_ttl
        {
            return Ok((catalog.clone(), self.generation.load(Ordering::SeqCst)));
        }
        self.refresh_locked(ec2, &mut cached).await
    }

    /// The priced instance types of a shape, from the cache while it is current.
    pub async fn instance_types(
        &self,
        ec2: &aws_sdk_ec2::Client,
        shape: Shape,
    ) -> Result<Arc<[InstanceType]>, CloudError> {
        // A mark made while pricing bumps the generation past this one: the entry is then stale,
        // never wrong.
        let (catalog, generation) = self.current_catalog(ec2).await?;
        if let Some(priced) = lock(&self.priced).get(&shape.key())
            && priced.generation == generation
            && priced.valid_until.is_none_or(|until| Instant::now() < until)
        {
            return Ok(priced.types.clone());
        }
        Ok(self.price(&catalog, shape, generation))
    }

    /// Prices the catalog for a shape and caches the result under `generation`.
    fn price(&self, catalog: &Catalog, shape: Shape, generation: u64) -> Arc<[InstanceType]> {
        let now = Instant::now();
        // Capacity errors price the list again within milliseconds of each other while the lists
        // before are still in use: each type takes what did not change from the list before as
        // it is built, so only its offerings are new.
        let previous = lock(&self.priced).get(&shape.key()).map(|priced| priced.types.clone());
        let earlier: HashMap<&str, &InstanceType> =
            previous.iter().flat_map(|types| types.iter()).map(|t| (t.name.as_str(), t)).collect();
        let (types, valid_until) = {
            let prices = lock(&self.prices);
            let unavailable = lock(&self.unavailable);
            let mut types: Vec<InstanceType> = catalog
                .instance_types(&shape.zones, &shape.arches, &prices, &unavailable, now, &shape.node)
                .map(|mut instance| {
                    if let Some(earlier) = earlier.get(instance.name.as_str()) {
                        instance.share_facts_with(earlier);
                    }
                    instance
                })
                .collect();
            overlays::apply(&mut types, &lock(&self.overlays));
            // After the overlays: a reservation is paid for whatever prices they set.
            add_reserved_offerings(&mut types, &shape.reservations, &lock(&self.reservations));
            (Arc::<[InstanceType]>::from(types), unavailable.next_expiry(now))
        };
        let priced = Priced { shape, types: types.clone(), generation, valid_until };
        lock(&self.priced).insert(priced.shape.key(), priced);
        types
    }

    /// Records a launch failure; priced types built before it are stale from now on.
    pub fn mark_unavailable(&self, mark: impl FnOnce(&mut UnavailableOfferings, Instant)) {
        mark(&mut lock(&self.unavailable), Instant::now());
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Changes how much room capacity reservations have; priced types built before a
    /// reservation's room came or went are stale from now on.
    pub fn change_reservations(&self, change: impl FnOnce(&mut ReservationRoom) -> bool) {
        if change(&mut lock(&self.reservations)) {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Live entries of the unavailable cache.
    pub fn unavailable_count(&self) -> usize {
        lock(&self.unavailable).len(Instant::now())
    }

    /// Remembers the free addresses of subnets a node class resolution just described.
    pub fn record_subnet_addresses(&self, addresses: impl IntoIterator<Item = (String, i64)>) {
        lock(&self.subnet_ips).extend(addresses);
    }

    /// A ready node class's subnets with their free addresses and whether they recently ran out.
    pub fn subnets(&self, status: &EC2NodeClassStatus) -> Vec<Subnet> {
        let ips = lock(&self.subnet_ips);
        let unavailable = lock(&self.unavailable);
        let now = Instant::now();
        status
            .subnets
            .iter()
            .map(|subnet| Subnet {
                id: subnet.id.clone(),
                zone: subnet.zone.clone(),
                available_ips: ips.get(&subnet.id).copied().unwrap_or(0),
                exhausted: unavailable.subnet_unavailable(&subnet.id, now),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            zones: [("us-east-1a", "use1-az1"), ("us-east-1b", "use1-az2")]
                .map(|(zone, id)| (zone.to_owned(), id.to_owned()))
                .into(),
            arches: ["amd64".to_owned()].into(),
            node: NodeSettings::default(),
            reservations: Vec::new(),
        }
    }

    #[test]
    fn a_list_priced_again_after_a_capacity_error_shares_what_did_not_change() {
        let offerings = Offerings::new("us-east-1", Duration::from_secs(300), Duration::from_secs(180));
        let catalog = Catalog::snapshot();
        let first = offerings.price(&catalog, shape(), 1);
        offerings.mark_unavailable(|marks, now| marks.mark_offering("m5.large", "us-east-1a", "on-demand", now));
        let second = offerings.price(&catalog, shape(), 2);
        assert!(first.len() > 100 && first.len() == second.len());
        for (before, after) in first.iter().zip(second.iter()) {
            assert_eq!(before.name, after.name);
            assert!(Arc::ptr_eq(&before.labels, &after.labels), "{}: labels copied", after.name);
            assert!(Arc::ptr_eq(&before.requirements, &after.requirements), "{}: requirements copied", after.name);
        }
        let available = |types: &[InstanceType]| {
            let m5 = types.iter().find(|t| t.name == "m5.large").expect("m5.large");
            let offering = m5.offerings.iter().find(|o| o.zone == "us-east-1a" && o.capacity_type == "on-demand");
            offering.expect("its on-demand offering in us-east-1a").available
        };
        assert!(available(&first) && !available(&second), "only the new list knows the capacity error");
    }
}
