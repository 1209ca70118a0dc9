//! The files the identical-input comparison with Karpenter passes between the two schedulers
//! (`hack/bench-scheduling-vs-karpenter.sh`; the Go side is `hack/karpenter-head-to-head/`).
//!
//! Instance types: name, requirements in NodePool form, capacity and allocatable as Kubernetes
//! quantities, offerings (zone, capacity type, price, available). Karpenter writes its fake types
//! in this form, stoker writes its real catalog in it, and each reads the other's. Pods are plain
//! Kubernetes Pod JSON as Karpenter's benchmark generator made them.

#![allow(dead_code)] // the benchmark reads and writes; the round-trip test uses every part

use std::{collections::BTreeMap, path::Path, sync::Arc};

use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::api::resource::Quantity};
use serde::{Deserialize, Serialize};
use stoker::{
    apis::{NodeSelectorRequirementWithMinValues, Operator},
    scheduling::{
        catalog::{InstanceType, Offering},
        pod::PodInfo,
        requirements::Requirements,
        resources::Resources,
    },
};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportedOffering {
    pub zone: String,
    pub capacity_type: String,
    pub price: f64,
    pub available: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ExportedType {
    pub name: String,
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
    pub capacity: BTreeMap<String, Quantity>,
    pub allocatable: BTreeMap<String, Quantity>,
    pub offerings: Vec<ExportedOffering>,
}

pub fn export(types: &[InstanceType]) -> Vec<ExportedType> {
    types
        .iter()
        .map(|it| ExportedType {
            name: it.name.clone(),
            requirements: it.requirements.to_api(),
            capacity: it.capacity.to_quantities(),
            allocatable: it.allocatable.to_quantities(),
            offerings: it
                .offerings
                .iter()
                .map(|o| ExportedOffering {
                    zone: o.zone.clone(),
                    capacity_type: o.capacity_type.clone(),
                    price: o.price,
                    available: o.available,
                })
                .collect(),
        })
        .collect()
}

/// Back to instance types. A requirement with one `In` value is also a node label, as for the
/// types stoker's own providers build.
pub fn import(exported: Vec<ExportedType>) -> Result<Vec<InstanceType>, String> {
    exported
        .into_iter()
        .map(|e| {
            let requirements = Arc::new(Requirements::from_api(&e.requirements));
            let labels: Arc<BTreeMap<String, String>> = e
                .requirements
                .iter()
                .filter(|r| r.operator == Operator::In && r.values.len() == 1)
                .map(|r| (r.key.clone(), r.values[0].clone()))
                .collect::<BTreeMap<_, _>>()
                .into();
            let resources = |list: &BTreeMap<String, Quantity>| {
                Resources::from_quantities(list).map_err(|error| format!("instance type {}: {error}", e.name))
            };
            Ok(InstanceType {
                capacity: resources(&e.capacity)?,
                allocatable: resources(&e.allocatable)?,
                offerings: e
                    .offerings
                    .into_iter()
                    .map(|o| Offering {
                        zone: o.zone,
                        zone_id: String::new(),
                        capacity_type: o.capacity_type,
                        price: o.price,
                        available: o.available,
                        reservation_id: None,
                        capacity_block: false,
                    })
                    .collect(),
                name: e.name,
                labels,
                requirements,
                exotic: false,
            })
        })
        .collect()
}

pub fn write_types(path: &Path, types: &[InstanceType]) {
    let json = serde_json::to_vec(&export(types)).expect("instance types encode");
    std::fs::write(path, json).unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
}

pub fn read_types(path: &Path) -> Vec<InstanceType> {
    let exported = serde_json::from_slice(&read(path)).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    import(exported).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

pub fn read_pods(path: &Path) -> Vec<PodInfo> {
    let pods: Vec<Pod> =
        serde_json::from_slice(&read(path)).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    pods.iter()
        .map(|pod| PodInfo::from_pod(pod).unwrap_or_else(|error| panic!("{}: {error}", path.display())))
        .collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}
