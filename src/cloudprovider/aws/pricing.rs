//! Prices per instance type and zone, in dollars per hour.
//!
//! On-demand prices start from the committed snapshot (`data/on-demand-prices.csv`, regenerated
//! by `hack/update-catalog.sh`) and are replaced by the AWS Price List API's where it answers
//! (`price_list`); spot prices come live from DescribeSpotPriceHistory. Neither is ever zero. The
//! rules for what is missing or implausible (see docs/decisions.md):
//! - the snapshot has a column per region (every commercial and GovCloud region its sources
//!   priced); a type missing from a region's column but priced in the reference region
//!   (us-east-1) takes that price times the region's price level (`price_level`);
//! - a region the snapshot does not hold starts from the reference region's prices: absolute
//!   prices differ between regions, but the order of instance types by price, which is what
//!   choices depend on, is mostly the same, while pricing every type alike per vCPU would choose
//!   by size alone;
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
    /// The committed on-demand prices of a region. A type the region's column lacks but the
    /// reference region prices is priced at its reference price times the region's price level;
    /// a region the snapshot does not hold takes the reference region's prices as they are.
    pub fn snapshot(region: &str) -> Self {
        let own = snapshot_column(region);
        let reference = snapshot_column(REFERENCE_REGION);
        let level = price_level(&own, &reference);
        let mut on_demand: HashMap<String, f64> =
            reference.into_iter().map(|(name, price)| (name, price * level)).collect();
        on_demand.extend(own);
        Self::with_on_demand(on_demand)
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

/// One region's column of the snapshot (a type per row, a region per column; an empty cell is
/// no price there): the positive prices it holds, empty for a region it does not have.
fn snapshot_column(region: &str) -> HashMap<String, f64> {
    let mut rows = SNAPSHOT.lines().filter(|line| !line.starts_with('#'));
    // Counted after the first column (the type's name), which no region may match.
    let Some(column) = rows.next().and_then(|header| header.split(',').skip(1).position(|name| name == region)) else {
        return HashMap::new();
    };
    rows.filter_map(|row| {
        let mut cells = row.split(',');
        let name = cells.next()?;
        let price = cells.nth(column)?.parse::<f64>().ok()?;
        (price.is_finite() && price > 0.0).then(|| (name.to_owned(), price))
    })
    .collect()
}

/// How a region's prices compare with the reference region's: the median ratio over the types
/// both price (1 when they share none). Most regions price most types at close to one multiple
/// of us-east-1's (in 27 of 34 regions, 80% or more of types are within 5% of the median; the
/// fewest are in Mumbai and Hyderabad, about 30%), so the median prices a type the region's
/// column lacks far better than the pessimistic per-vCPU estimate would.
fn price_level(own: &HashMap<String, f64>, reference: &HashMap<String, f64>) -> f64 {
    let mut ratios: Vec<f64> = own.iter().filter_map(|(name, price)| Some(price / reference.get(name)?)).collect();
    if ratios.is_empty() {
        return 1.0;
    }
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
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
    fn each_region_has_its_own_prices_and_a_type_it_lacks_follows_its_price_level() {
        let (m5, m7g) = (facts("m5.large", 2), facts("m7g.large", 2));
        let eu = PriceBook::snapshot("eu-west-1");
        assert_eq!(eu.on_demand(&m5), 0.107);
        assert_eq!(eu.on_demand(&m7g), 0.091);
        // Cape Town's column has m5.large (0.127, 1.32 times us-east-1's) but not m7g.large.
        let cape_town = PriceBook::snapshot("af-south-1");
        assert_eq!(cape_town.on_demand(&m5), 0.127);
        let level = cape_town.on_demand(&m7g) / 0.0816;
        assert!((1.25..1.4).contains(&level), "us-east-1's price times the region's level: {level}");
        // Regions order types their own way: Mumbai's m5ad.large undercuts its m5.large.
        let mumbai = PriceBook::snapshot("ap-south-1");
        assert!(mumbai.on_demand(&facts("m5ad.large", 2)) < mumbai.on_demand(&m5));
        let virginia = PriceBook::snapshot("us-east-1");
        assert!(virginia.on_demand(&facts("m5ad.large", 2)) > virginia.on_demand(&m5));
    }

    #[test]
    fn a_region_the_snapshot_lacks_starts_from_the_reference_region_and_takes_live_prices() {
        assert_eq!(PriceBook::snapshot("instance_type").on_demand(&facts("m5.large", 2)), 0.096, "not a column");
        let mut book = PriceBook::snapshot("xx-nowhere-1");
        let (small, large) = (facts("m5.large", 2), facts("m5.2xlarge", 8));
        assert_eq!(book.on_demand(&small), 0.096, "us-east-1's price as it is");
        assert!(book.on_demand(&small) < book.on_demand(&large), "types keep their order, not one price per vCPU");
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
