//! `stoker kwok-instance-types` (hidden; benchmarks only): prints the instance types an
//! EC2NodeClass can launch, as stoker's controller prices them right now, in the file format of
//! Karpenter's kwok cloud provider (`INSTANCE_TYPES_FILE_PATH`). `hack/bench-vs-karpenter.sh`
//! feeds it to Karpenter so both tools choose among the same types, allocatable, prices, zones
//! and capacity types.

use kube::{Api, Client};
use serde_json::{Value, json};

use super::CliError;
use crate::{
    apis::{EC2NodeClass, labels},
    cloudprovider::{
        CloudProvider,
        aws::{AwsCloudProvider, AwsOptions, ClusterInfo, aws_config},
    },
    scheduling::{
        catalog::InstanceType,
        resources::{CPU, MEMORY, Resources},
    },
};

/// What Karpenter's kwok provider takes off every type's capacity (its fixed kube-reserved):
/// added back so its allocatable equals stoker's.
const KWOK_RESERVED_MILLICPU: i64 = 100;
const KWOK_RESERVED_MEMORY: i64 = 10 << 20;

pub async fn run(cluster: String, nodeclass: &str) -> Result<(), CliError> {
    let client = Client::try_default().await?;
    let class = Api::<EC2NodeClass>::all(client).get(nodeclass).await?;
    let info = ClusterInfo::named(cluster);
    let provider = AwsCloudProvider::new(&aws_config(None).await, AwsOptions::new(info));
    let types = provider.instance_types(&class).await.map_err(crate::error::Error::from)?;
    println!("{}", serde_json::to_string(&kwok_instance_types(&types))?);
    Ok(())
}

/// The types in kwok's format. Offerings stoker holds unavailable are left out: the kwok provider
/// makes every offering it reads available.
pub fn kwok_instance_types(types: &[InstanceType]) -> Value {
    let mut reserved = Resources::new();
    reserved.set(CPU, KWOK_RESERVED_MILLICPU);
    reserved.set(MEMORY, KWOK_RESERVED_MEMORY);
    let entries = types
        .iter()
        .filter(|it| it.offerings.iter().any(|o| o.available))
        .map(|it| {
            let mut resources = it.allocatable.clone();
            resources.add(&reserved);
            let offerings: Vec<Value> = it
                .offerings
                .iter()
                .filter(|o| o.available)
                .map(|o| {
                    json!({"Price": o.price, "Available": true, "Requirements": [
                        {"key": labels::CAPACITY_TYPE, "operator": "In", "values": [o.capacity_type]},
                        {"key": labels::ZONE, "operator": "In", "values": [o.zone]},
                    ]})
                })
                .collect();
            json!({
                "name": it.name,
                "architecture": it.labels.get(labels::ARCH).map_or("amd64", String::as_str),
                "operatingSystems": ["linux"],
                "resources": resources.to_quantities(),
                "offerings": offerings,
            })
        })
        .collect();
    Value::Array(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::{catalog::Offering, resources::PODS};

    fn offering(zone: &str, capacity_type: &str, price: f64, available: bool) -> Offering {
        Offering {
            zone: zone.into(),
            zone_id: String::new(),
            capacity_type: capacity_type.into(),
            price,
            available,
            reservation_id: None,
            capacity_block: false,
        }
    }

    #[test]
    fn kwok_computes_the_same_allocatable_and_sees_only_available_offerings() {
        let mut allocatable = Resources::new();
        allocatable.set(CPU, 1930);
        allocatable.set(MEMORY, 7_134 << 20);
        allocatable.set(PODS, 29);
        let labels = [(labels::ARCH.to_owned(), "arm64".to_owned())].into();
        let m6g = InstanceType::new(
            "m6g.large".into(),
            labels,
            Resources::new(),
            allocatable,
            vec![offering("us-east-1a", "spot", 0.03, true), offering("us-east-1b", "on-demand", 0.077, false)],
        );
        let gone = InstanceType::new(
            "x1.32xlarge".into(),
            Default::default(),
            Resources::new(),
            Resources::new(),
            vec![offering("us-east-1a", "on-demand", 13.3, false)],
        );
        let written = kwok_instance_types(&[m6g, gone]);
        assert_eq!(
            written,
            json!([{
                "name": "m6g.large",
                "architecture": "arm64",
                "operatingSystems": ["linux"],
                // kwok takes 100m and 10Mi off again
                "resources": {"cpu": "2030m", "memory": "7144Mi", "pods": "29"},
                "offerings": [{"Price": 0.03, "Available": true, "Requirements": [
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]},
                    {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-east-1a"]},
                ]}],
            }])
        );
    }
}
