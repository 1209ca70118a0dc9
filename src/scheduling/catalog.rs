//! The instance catalog the simulation chooses from: instance types with their labels, capacity,
//! allocatable resources and offerings (zone × capacity type, with price and availability), and
//! the cheapest way to buy what a plan needs. Cloud-neutral: a provider computes each type's
//! allocatable by its own rules (the AWS provider's are in `cloudprovider::aws::allocatable`).

use std::collections::BTreeMap;

use super::{
    requirements::{Requirement, Requirements},
    resources::{CPU, MEMORY, Resources},
};
use crate::apis::labels;

/// A way to buy an instance type: a zone and a capacity type, at a price.
#[derive(Debug, Clone, PartialEq)]
pub struct Offering {
    pub zone: String,
    /// `spot` or `on-demand`.
    pub capacity_type: String,
    /// Dollars per hour.
    pub price: f64,
    /// False while the offering is known to lack capacity.
    pub available: bool,
}

/// An instance type as the simulation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceType {
    pub name: String,
    /// The labels a node of this type carries (instance type, arch, os, family, size, ...).
    pub labels: BTreeMap<String, String>,
    /// The same labels as requirements, for intersection with NodePool and pod requirements.
    pub requirements: Requirements,
    pub capacity: Resources,
    pub allocatable: Resources,
    pub offerings: Vec<Offering>,
}

impl InstanceType {
    /// An instance type with these labels (its requirements follow from them), resources and
    /// offerings. Providers compute capacity and allocatable by their own rules.
    pub fn new(
        name: String,
        labels: BTreeMap<String, String>,
        capacity: Resources,
        allocatable: Resources,
        offerings: Vec<Offering>,
    ) -> Self {
        Self { name, requirements: Requirements::from_labels(&labels), labels, capacity, allocatable, offerings }
    }

    /// The cheapest available offering the requirements allow.
    pub fn cheapest_offering(&self, requirements: &Requirements) -> Option<&Offering> {
        self.offerings
            .iter()
            .filter(|offering| offering.available && offering_allowed(offering, requirements))
            .min_by(|a, b| a.price.total_cmp(&b.price))
    }
}

/// Whether the requirements allow an offering's zone and capacity type.
pub fn offering_allowed(offering: &Offering, requirements: &Requirements) -> bool {
    let allows = |key: &str, value: &str| requirements.get(key).is_none_or(|r: &Requirement| r.admits(Some(value)));
    allows(labels::ZONE, &offering.zone) && allows(labels::CAPACITY_TYPE, &offering.capacity_type)
}

/// Whether a label key's values come from instance types and offerings, so a NodePool that does
/// not constrain it still produces nodes that carry it.
pub fn is_well_known(key: &str) -> bool {
    matches!(
        key,
        labels::INSTANCE_TYPE
            | labels::ARCH
            | labels::OS
            | labels::ZONE
            | labels::CAPACITY_TYPE
            | labels::INSTANCE_FAMILY
            | labels::INSTANCE_CATEGORY
            | labels::INSTANCE_GENERATION
            | labels::INSTANCE_SIZE
            | labels::INSTANCE_CPU
            | labels::INSTANCE_MEMORY
            | labels::INSTANCE_GPU_COUNT
            | labels::NODEPOOL
            | labels::HOSTNAME
    )
}

/// A lower bound on the hourly cost of any plan hosting `requests`: the cheapest way to buy that
/// much CPU and memory if instances could be bought in fractions (the linear relaxation over the
/// two resources). An optimum of a linear program with two constraints uses at most two instance
/// types, so every type alone and every pair of types with both constraints tight is tried. No
/// set of whole nodes can cost less; it is also never below "the CPU at the cheapest price per
/// core, or the memory at the cheapest price per byte".
pub fn cost_lower_bound(requests: &Resources, instance_types: &[InstanceType]) -> f64 {
    let (cpu, memory) = (requests.get(CPU) as f64, requests.get(MEMORY) as f64);
    if cpu <= 0.0 && memory <= 0.0 {
        return 0.0;
    }
    // (price, allocatable CPU, allocatable memory) of each type's cheapest available offering.
    let types: Vec<(f64, f64, f64)> = instance_types
        .iter()
        .filter_map(|instance| {
            let offering =
                instance.offerings.iter().filter(|o| o.available).min_by(|a, b| a.price.total_cmp(&b.price))?;
            let (c, m) = (instance.allocatable.get(CPU) as f64, instance.allocatable.get(MEMORY) as f64);
            (c > 0.0 && m > 0.0).then_some((offering.price, c, m))
        })
        .collect();
    let mut best = f64::INFINITY;
    for (i, &(price_i, cpu_i, memory_i)) in types.iter().enumerate() {
        best = best.min(price_i * (cpu / cpu_i).max(memory / memory_i));
        for &(price_j, cpu_j, memory_j) in &types[i + 1..] {
            let determinant = cpu_i * memory_j - cpu_j * memory_i;
            if determinant.abs() < f64::EPSILON {
                continue;
            }
            let a = (cpu * memory_j - cpu_j * memory) / determinant;
            let b = (cpu_i * memory - cpu * memory_i) / determinant;
            if a >= 0.0 && b >= 0.0 {
                best = best.min(a * price_i + b * price_j);
            }
        }
    }
    if best.is_finite() { best } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn priced(name: &str, millis: i64, gib: i64, offerings: Vec<Offering>) -> InstanceType {
        let resources: Resources = [(CPU.to_owned(), millis), (MEMORY.to_owned(), gib << 30)].into_iter().collect();
        let labels = [(labels::INSTANCE_TYPE.to_owned(), name.to_owned())].into();
        InstanceType::new(name.into(), labels, resources.clone(), resources, offerings)
    }

    #[test]
    fn the_cost_lower_bound_buys_cpu_and_memory_at_the_best_mix() {
        let offering =
            |price: f64| Offering { zone: "a".into(), capacity_type: "on-demand".into(), price, available: true };
        let compute = priced("c.large", 1930, 3, vec![offering(0.08)]);
        let memory = priced("r.large", 1930, 14, vec![offering(0.12)]);
        let types = [compute.clone(), memory.clone()];
        let (c_cpu, c_mem) = (compute.allocatable.get(CPU), compute.allocatable.get(MEMORY));
        let (r_cpu, r_mem) = (memory.allocatable.get(CPU), memory.allocatable.get(MEMORY));
        let mut requests = Resources::new();
        requests.set(CPU, c_cpu * 10);
        assert!((cost_lower_bound(&requests, &types) - 0.8).abs() < 1e-9, "CPU only: ten compute nodes");
        requests.set(MEMORY, r_mem * 10);
        assert!((cost_lower_bound(&requests, &types) - 1.2).abs() < 1e-9, "ten memory nodes carry the CPU too");
        // Exactly one node of each: both constraints tight with one of each type.
        requests.set(CPU, c_cpu + r_cpu);
        requests.set(MEMORY, c_mem + r_mem);
        assert!((cost_lower_bound(&requests, &types) - 0.2).abs() < 1e-9);
        assert_eq!(cost_lower_bound(&requests, &[]), 0.0);
    }

    #[test]
    fn cheapest_allowed_offering() {
        let offer = |zone: &str, capacity_type: &str, price: f64| Offering {
            zone: zone.into(),
            capacity_type: capacity_type.into(),
            price,
            available: true,
        };
        let mut instance = priced(
            "m5.large",
            1930,
            7,
            vec![offer("a", "spot", 0.03), offer("b", "spot", 0.02), offer("a", "on-demand", 0.096)],
        );
        assert_eq!(instance.cheapest_offering(&Requirements::new()).unwrap().price, 0.02);
        let mut zone_a = Requirements::new();
        zone_a.add(labels::ZONE, Requirement::one_of(["a"]));
        assert_eq!(instance.cheapest_offering(&zone_a).unwrap().price, 0.03);
        instance.offerings[0].available = false;
        assert_eq!(instance.cheapest_offering(&zone_a).unwrap().price, 0.096);
    }
}
