//! The real us-east-1 catalog snapshot as the benchmarks price it: every type in zones a–c, amd64
//! and arm64, spot priced at on-demand (no live prices offline).

use std::time::Instant;

use stoker::{
    cloudprovider::aws::{catalog::Catalog, pricing::PriceBook, unavailable::UnavailableOfferings},
    scheduling::catalog::InstanceType,
};

pub fn instance_types() -> Vec<InstanceType> {
    let catalog = Catalog::snapshot();
    let mut prices = PriceBook::snapshot("us-east-1");
    prices.learn_vcpus(&catalog.types);
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"].map(|zone| (zone.to_owned(), String::new())).into();
    let arches = ["amd64", "arm64"].map(String::from).into();
    let unavailable = UnavailableOfferings::new(std::time::Duration::ZERO);
    catalog.instance_types(&zones, &arches, &prices, &unavailable, Instant::now(), &Default::default()).collect()
}
