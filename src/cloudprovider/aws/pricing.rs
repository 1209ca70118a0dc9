//! Prices per instance type and zone, in dollars per hour.
//!
//! On-demand prices come from the committed snapshot (`data/on-demand-prices.csv`, regenerated
//! by `hack/update-catalog.sh`); spot prices come live from DescribeSpotPriceHistory. Neither is
//! ever zero. The rules for what is missing or implausible (see docs/decisions.md):
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

/// The prices of one region.
#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    on_demand: HashMap<String, f64>,
    highest_per_vcpu: f64,
    /// Latest spot price per (instance type, zone); `None` until first loaded.
    spot: Option<HashMap<(String, String), f64>>,
}

impl PriceBook {
    /// The committed on-demand prices of a region (empty for regions not in the snapshot).
    pub fn snapshot(region: &str) -> Self {
        let on_demand = SNAPSHOT
            .lines()
            .filter(|line| !line.starts_with('#'))
            .skip(1)
            .filter_map(|line| {
                let mut fields = line.split(',');
                let (row_region, name, price) = (fields.next()?, fields.next()?, fields.next()?);
                (row_region == region).then(|| Some((name.to_owned(), price.parse::<f64>().ok()?)))?
            })
            .filter(|(_, price)| *price > 0.0)
            .collect();
        Self::with_on_demand(on_demand)
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
        }
    }

    #[test]
    fn snapshot_holds_us_east_1_prices() {
        let book = PriceBook::snapshot("us-east-1");
        assert_eq!(book.on_demand(&facts("m5.large", 2)), 0.096);
        assert_eq!(book.on_demand(&facts("c5.xlarge", 4)), 0.17);
        assert!(PriceBook::snapshot("xx-nowhere-1").on_demand.is_empty());
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
