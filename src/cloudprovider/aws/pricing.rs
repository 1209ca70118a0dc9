//! Prices per instance type and zone, in dollars per hour.
//!
//! On-demand prices start from the committed snapshot (`data/on-demand-prices.csv`, regenerated
//! by `hack/update-catalog.sh`) and are replaced by the AWS Price List API's where it answers
//! (`price_list`); spot prices come live from DescribeSpotPriceHistory. Neither is ever zero. The
//! rules for what is missing or implausible (see docs/decisions.md):
//! - a region the snapshot does not hold starts from the reference region's (us-east-1) prices:
//!   absolute prices differ between regions, but the order of instance types by price, which is
//!   what choices depend on, is close to the same, while pricing every type alike per vCPU would
//!   choose by size alone;
//! - an on-demand price missing from the snapshot is estimated as the type's vCPUs times the
//!   highest per-vCPU price in the snapshot, so an unpriced type is tried after priced ones;
//! - a spot price below 5% of on-demand (no real discount is that deep; the emulator answers
//!   0.00001) or not positive is replaced by the on-demand price;
//! - before any spot price has been loaded, spot is assumed at the on-demand price; once prices
//!   are loaded, a (type, zone) without one is not offered as spot.

use std::collections::HashMap;

use super::allocatable::InstanceFacts;

const SNAPSHOT: &str = include_str!("data/on-demand-prices.csv");
/// A spot price under this share of on-demand is a placeholder, not a price.
const IMPLAUSIBLE_SPOT_SHARE: f64 = 0.05;

/// The region whose snapshot prices stand in for a region the snapshot does not hold.
pub const REFERENCE_REGION: &str = "us-east-1";

/// The prices of one region.
#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    on_demand: HashMap<String, f64>,
    highest_per_vcpu: f64,
    /// Latest spot price per (instance type, zone); `None` until first loaded.
    spot: Option<HashMap<(String, String), f64>>,
}

impl PriceBook {
    /// The committed on-demand prices of a region, or the reference region's for a region the
    /// snapshot does not hold.
    pub fn snapshot(region: &str) -> Self {
        let prices_of = |wanted: &str| -> HashMap<String, f64> {
            SNAPSHOT
                .lines()
                .filter(|line| !line.starts_with('#'))
                .skip(1)
                .filter_map(|line| {
                    let mut fields = line.split(',');
                    let (row_region, name, price) = (fields.next()?, fields.next()?, fields.next()?);
                    (row_region == wanted).then(|| Some((name.to_owned(), price.parse::<f64>().ok()?)))?
                })
                .filter(|(_, price)| *price > 0.0)
                .collect()
        };
        let own = prices_of(region);
        Self::with_on_demand(if own.is_empty() { prices_of(REFERENCE_REGION) } else { own })
    }

    /// Replaces on-demand prices with those given (the Price List API's); types it does not name
    /// keep theirs.
    pub fn set_on_demand(&mut self, prices: HashMap<String, f64>) {
        self.on_demand.extend(prices.into_iter().filter(|(_, price)| price.is_finite() && *price > 0.0));
    }

    /// A price book from explicit on-demand prices (tests, other regions' tooling).
    pub fn with_on_demand(on_demand: HashMap<String, f64>) -> Self {
        Self { on_demand, highest_per_vcpu: 0.0, spot: None }
    }

    /// Records the facts of the catalog so missing on-demand prices can be estimated.
    pub fn learn_vcpus<'a>(&mut self, types: impl IntoIterator<Item = &'a InstanceFacts>) {
        for facts in types {
            if let Some(price) = self.on_demand.get(&facts.name)
                && facts.vcpus > 0
            {
                self.highest_per_vcpu = self.highest_per_vcpu.max(price / facts.vcpus as f64);
            }
        }
    }

    /// The on-demand price, or the documented estimate when the snapshot lacks the type.
    pub fn on_demand(&self, facts: &InstanceFacts) -> f64 {
        self.on_demand.get(&facts.name).copied().unwrap_or_else(|| {
            // Without any reference price, a dollar per vCPU-hour: far above any real price.
            let per_vcpu = if self.highest_per_vcpu > 0.0 { self.highest_per_vcpu } else { 1.0 };
            per_vcpu * facts.vcpus.max(1) as f64
        })
    }

    /// Replaces the spot prices with the latest per (instance type, zone).
    pub fn set_spot(&mut self, prices: impl IntoIterator<Item = (String, String, f64)>) {
        self.spot = Some(prices.into_iter().map(|(name, zone, price)| ((name, zone), price)).collect());
    }

    pub fn has_spot_prices(&self) -> bool {
        self.spot.is_some()
    }

    /// The spot price in a zone, `None` when the type is not offered as spot there.
    pub fn spot(&self, facts: &InstanceFacts, zone: &str) -> Option<f64> {
        let on_demand = self.on_demand(facts);
        let Some(spot) = &self.spot else {
            return Some(on_demand);
        };
        let price = *spot.get(&(facts.name.clone(), zone.to_owned()))?;
        Some(if price > 0.0 && price >= on_demand * IMPLAUSIBLE_SPOT_SHARE { price } else { on_demand })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str, vcpus: i64) -> InstanceFacts {
        InstanceFacts {
            name: name.into(),
            vcpus,
            memory_mib: vcpus * 4096,
            arch: "amd64".into(),
            gpus: 0,
            max_network_interfaces: 3,
            ipv4_per_interface: 10,
            ..Default::default()
        }
    }

    #[test]
    fn snapshot_holds_us_east_1_prices() {
        let book = PriceBook::snapshot("us-east-1");
        assert_eq!(book.on_demand(&facts("m5.large", 2)), 0.096);
        assert_eq!(book.on_demand(&facts("c5.xlarge", 4)), 0.17);
    }

    #[test]
    fn other_regions_start_from_the_reference_region_and_take_live_prices() {
        let mut book = PriceBook::snapshot("eu-west-1");
        let (small, large) = (facts("m5.large", 2), facts("m5.2xlarge", 8));
        assert!(book.on_demand(&small) < book.on_demand(&large), "types keep their order, not one price per vCPU");
        let graviton = facts("m7g.large", 2);
        assert!(book.on_demand(&graviton) < book.on_demand(&small), "the cheaper type stays cheaper");
        book.set_on_demand(HashMap::from([("m5.large".into(), 0.107), ("c5.large".into(), 0.0)]));
        assert_eq!(book.on_demand(&small), 0.107, "the Price List API's price replaces the estimate");
        assert!(book.on_demand(&facts("c5.large", 2)) > 0.0, "a zero from the API is ignored");
    }

    #[test]
    fn missing_on_demand_prices_are_estimated_pessimistically_never_zero() {
        let mut book = PriceBook::with_on_demand(HashMap::from([("a.large".into(), 0.1), ("b.large".into(), 0.3)]));
        assert_eq!(book.on_demand(&facts("new.large", 2)), 2.0, "no reference yet: a dollar per vCPU");
        book.learn_vcpus(&[facts("a.large", 2), facts("b.large", 2)]);
        assert_eq!(book.on_demand(&facts("new.xlarge", 4)), 0.6);
        assert_eq!(book.on_demand(&facts("a.large", 2)), 0.1);
    }

    #[test]
    fn spot_prices_follow_the_documented_fallbacks() {
        let mut book = PriceBook::with_on_demand(HashMap::from([("m5.large".into(), 0.096)]));
        let m5 = facts("m5.large", 2);
        assert_eq!(book.spot(&m5, "us-east-1a"), Some(0.096), "not loaded yet: assume on-demand");
        book.set_spot([
            ("m5.large".into(), "us-east-1a".into(), 0.035),
            ("m5.large".into(), "us-east-1b".into(), 0.00001),
            ("m5.large".into(), "us-east-1c".into(), 0.0),
        ]);
        assert_eq!(book.spot(&m5, "us-east-1a"), Some(0.035));
        assert_eq!(book.spot(&m5, "us-east-1b"), Some(0.096), "placeholder");
        assert_eq!(book.spot(&m5, "us-east-1c"), Some(0.096), "zero");
        assert_eq!(book.spot(&m5, "us-east-1d"), None, "no spot offering there");
    }
}
