//! Reading the AWS Price List API (`GetProducts`): the request that selects the on-demand Linux
//! prices of one region's instance types, and the reading of its reply into prices.
//!
//! Each reply item is a JSON document of its own (a string): the product's attributes, among them
//! `instanceType`, and its terms, where an on-demand price is
//! `terms.OnDemand.<offer>.priceDimensions.<dimension>.pricePerUnit.USD`, a decimal string.
//! Several products can match one instance type; the lowest positive price is kept, as the
//! committed snapshot does. An item that cannot be read is skipped and counted, never fatal: one
//! odd product must not cost every price.

use std::collections::HashMap;

use serde_json::Value;

/// The `GetProducts` filters (all `TERM_MATCH`) for on-demand, shared-tenancy Linux instances
/// without pre-installed software, in `region`.
pub fn filters(region: &str) -> Vec<(&'static str, String)> {
    vec![
        ("regionCode", region.to_owned()),
        ("productFamily", "Compute Instance".to_owned()),
        ("operatingSystem", "Linux".to_owned()),
        ("tenancy", "Shared".to_owned()),
        ("preInstalledSw", "NA".to_owned()),
        ("capacitystatus", "Used".to_owned()),
    ]
}

/// Prices read from reply items, and how many items could not be read.
#[derive(Debug, Default, PartialEq)]
pub struct Prices {
    pub on_demand: HashMap<String, f64>,
    pub unreadable: usize,
}

impl Prices {
    /// Reads one reply item.
    pub fn add(&mut self, item: &str) {
        match read_item(item) {
            Some((instance_type, price)) => {
                let kept = self.on_demand.entry(instance_type).or_insert(price);
                *kept = kept.min(price);
            }
            None => self.unreadable += 1,
        }
    }
}

fn read_item(item: &str) -> Option<(String, f64)> {
    let product: Value = serde_json::from_str(item).ok()?;
    let instance_type = product.pointer("/product/attributes/instanceType")?.as_str()?.to_owned();
    let price = product
        .pointer("/terms/OnDemand")?
        .as_object()?
        .values()
        .filter_map(|offer| offer.get("priceDimensions")?.as_object())
        .flat_map(|dimensions| dimensions.values())
        .filter_map(|dimension| dimension.pointer("/pricePerUnit/USD")?.as_str()?.parse::<f64>().ok())
        .filter(|price| price.is_finite() && *price > 0.0)
        .reduce(f64::min)?;
    Some((instance_type, price))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One item in the shape GetProducts returns (trimmed to what is read, plus neighbours).
    fn item(instance_type: &str, usd: &str) -> String {
        format!(
            r#"{{"product":{{"productFamily":"Compute Instance","attributes":{{"instanceType":"{instance_type}","regionCode":"eu-west-1","operatingSystem":"Linux","tenancy":"Shared","capacitystatus":"Used","preInstalledSw":"NA","vcpu":"2"}},"sku":"SKU{instance_type}"}},"serviceCode":"AmazonEC2","terms":{{"OnDemand":{{"SKU{instance_type}.JRTCKXETXF":{{"priceDimensions":{{"SKU{instance_type}.JRTCKXETXF.6YS6EN2CT7":{{"unit":"Hrs","endRange":"Inf","description":"$ per On Demand Linux {instance_type} Instance Hour","appliesTo":[],"rateCode":"SKU{instance_type}.JRTCKXETXF.6YS6EN2CT7","beginRange":"0","pricePerUnit":{{"USD":"{usd}"}}}}}},"sku":"SKU{instance_type}","effectiveDate":"2026-11-01T00:00:00Z","offerTermCode":"JRTCKXETXF","termAttributes":{{}}}}}}}},"version":"20261101000000","publicationDate":"2026-11-01T00:00:00Z"}}"#
        )
    }

    #[test]
    fn prices_are_read_and_the_lowest_of_duplicates_kept() {
        let mut prices = Prices::default();
        for (instance_type, usd) in
            [("m5.large", "0.1070000000"), ("m5.large", "0.1100000000"), ("c5.large", "0.0960000000")]
        {
            prices.add(&item(instance_type, usd));
        }
        assert_eq!(prices.on_demand, HashMap::from([("m5.large".into(), 0.107), ("c5.large".into(), 0.096)]));
        assert_eq!(prices.unreadable, 0);
    }

    #[test]
    fn unreadable_or_zero_priced_items_are_skipped_and_counted() {
        let mut prices = Prices::default();
        prices.add("not json");
        prices.add(&item("m5.large", "0.0000000000"));
        prices.add(&item("m5.large", "NaN"));
        prices.add(r#"{"product":{"attributes":{}}}"#);
        prices.add(&item("c5.large", "0.0960000000"));
        assert_eq!(prices.on_demand, HashMap::from([("c5.large".into(), 0.096)]));
        assert_eq!(prices.unreadable, 4);
    }

    #[test]
    fn the_request_selects_one_region_s_shared_linux_instances() {
        let filters = filters("eu-west-1");
        assert!(filters.contains(&("regionCode", "eu-west-1".to_owned())));
        assert!(filters.contains(&("tenancy", "Shared".to_owned())));
        assert!(filters.contains(&("operatingSystem", "Linux".to_owned())));
    }
}
