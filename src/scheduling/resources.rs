//! Resource amounts as exact integers (millicores, bytes, counts), and what a pod asks for.
//!
//! A pod's requests follow the kubelet's rules: the containers' sum plus restartable init
//! containers (sidecars), or the largest regular init container with the sidecars started before
//! it, whichever is larger, plus the pod overhead; pod-level resources replace the container sums
//! for the resources they name. Every pod also takes one of the node's `pods`.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Container, PodSpec},
    apimachinery::pkg::api::resource::Quantity,
};

use super::quantity::{QuantityError, format_resource, parse_resource};

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const PODS: &str = "pods";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";

/// Amounts of named resources, in integer scale (see [`super::quantity::scale_of`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resources(BTreeMap<String, i64>);

impl Resources {
    pub fn new() -> Self {
        Self::default()
    }

    /// From a Kubernetes resource list.
    pub fn from_quantities<'a>(
        list: impl IntoIterator<Item = (&'a String, &'a Quantity)>,
    ) -> Result<Self, QuantityError> {
        list.into_iter().map(|(name, quantity)| Ok((name.clone(), parse_resource(name, &quantity.0)?))).collect()
    }

    /// Back to a Kubernetes resource list.
    pub fn to_quantities(&self) -> BTreeMap<String, Quantity> {
        self.0.iter().map(|(name, amount)| (name.clone(), Quantity(format_resource(name, *amount)))).collect()
    }

    pub fn get(&self, name: &str) -> i64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    pub fn set(&mut self, name: &str, amount: i64) {
        self.0.insert(name.to_owned(), amount);
    }

    /// The same amounts without one resource.
    pub fn without(mut self, name: &str) -> Self {
        self.0.remove(name);
        self
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.0.iter().map(|(name, amount)| (name.as_str(), *amount))
    }

    pub fn add(&mut self, other: &Self) {
        self.combine(other, i64::saturating_add);
    }

    pub fn subtract(&mut self, other: &Self) {
        self.combine(other, i64::saturating_sub);
    }

    /// The larger amount of each resource.
    pub fn max_with(&mut self, other: &Self) {
        self.combine(other, i64::max);
    }

    /// Each resource of `other` folded into this one's (zero when it has none). Runs for every
    /// bound pod of every batch, so a name is copied only when it is new here.
    fn combine(&mut self, other: &Self, fold: impl Fn(i64, i64) -> i64) {
        for (name, amount) in &other.0 {
            match self.0.get_mut(name) {
                Some(current) => *current = fold(*current, *amount),
                None => {
                    self.0.insert(name.clone(), fold(0, *amount));
                }
            }
        }
    }

    /// The smaller amount of each resource (a resource missing from `other` becomes zero).
    pub fn min_with(&mut self, other: &Self) {
        for (name, amount) in self.0.iter_mut() {
            *amount = (*amount).min(other.get(name));
        }
    }

    /// Whether every amount here is at most what `capacity` has (a missing resource is zero).
    pub fn fits_in(&self, capacity: &Self) -> bool {
        self.0.iter().all(|(name, amount)| *amount <= capacity.get(name))
    }
}

impl FromIterator<(String, i64)> for Resources {
    fn from_iter<T: IntoIterator<Item = (String, i64)>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

fn container_requests(container: &Container) -> Result<Resources, QuantityError> {
    let Some(resources) = &container.resources else { return Ok(Resources::new()) };
    // A limit without a request defaults the request to the limit.
    let mut requests = Resources::from_quantities(resources.limits.iter().flatten())?;
    for (name, amount) in Resources::from_quantities(resources.requests.iter().flatten())?.0 {
        requests.set(&name, amount);
    }
    Ok(requests)
}

/// What a pod needs from a node, including one `pods` slot.
pub fn pod_requests(spec: &PodSpec) -> Result<Resources, QuantityError> {
    let mut containers = Resources::new();
    for container in &spec.containers {
        containers.add(&container_requests(container)?);
    }
    let mut sidecars = Resources::new();
    let mut largest_init = Resources::new();
    for init in spec.init_containers.iter().flatten() {
        let requests = container_requests(init)?;
        if init.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&requests);
            largest_init.max_with(&sidecars);
        } else {
            let mut with_sidecars = requests;
            with_sidecars.add(&sidecars);
            largest_init.max_with(&with_sidecars);
        }
    }
    let mut total = containers;
    total.add(&sidecars);
    total.max_with(&largest_init);
    if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        for (name, amount) in Resources::from_quantities(pod_level)?.0 {
            total.set(&name, amount);
        }
    }
    total.add(&Resources::from_quantities(spec.overhead.iter().flatten())?);
    total.set(PODS, 1);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ResourceRequirements;

    use super::*;

    fn container(cpu: &str, memory: &str) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(
                    [("cpu".into(), Quantity(cpu.into())), ("memory".into(), Quantity(memory.into()))].into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sidecar(cpu: &str, memory: &str) -> Container {
        Container { restart_policy: Some("Always".into()), ..container(cpu, memory) }
    }

    #[test]
    fn containers_add_up_and_each_pod_takes_a_slot() {
        let spec =
            PodSpec { containers: vec![container("100m", "64Mi"), container("250m", "1Gi")], ..Default::default() };
        let requests = pod_requests(&spec).unwrap();
        assert_eq!(requests.get(CPU), 350);
        assert_eq!(requests.get(MEMORY), (1 << 30) + (64 << 20));
        assert_eq!(requests.get(PODS), 1);
    }

    #[test]
    fn largest_init_container_wins_when_larger() {
        let spec = PodSpec {
            containers: vec![container("100m", "64Mi")],
            init_containers: Some(vec![container("2", "32Mi"), container("500m", "16Mi")]),
            ..Default::default()
        };
        let requests = pod_requests(&spec).unwrap();
        assert_eq!(requests.get(CPU), 2000);
        assert_eq!(requests.get(MEMORY), 64 << 20);
    }

    #[test]
    fn sidecars_run_beside_containers_and_later_init_containers() {
        let spec = PodSpec {
            containers: vec![container("100m", "100Mi")],
            init_containers: Some(vec![sidecar("200m", "50Mi"), container("1", "10Mi")]),
            ..Default::default()
        };
        let requests = pod_requests(&spec).unwrap();
        // The init container runs beside the sidecar: 1 + 0.2 CPU; afterwards 0.1 + 0.2.
        assert_eq!(requests.get(CPU), 1200);
        assert_eq!(requests.get(MEMORY), 150 << 20);
    }

    #[test]
    fn overhead_and_limits_only_containers() {
        let limits_only = Container {
            name: "l".into(),
            resources: Some(ResourceRequirements {
                limits: Some([("cpu".into(), Quantity("1".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = PodSpec {
            containers: vec![limits_only],
            overhead: Some([("cpu".into(), Quantity("250m".into()))].into()),
            ..Default::default()
        };
        assert_eq!(pod_requests(&spec).unwrap().get(CPU), 1250);
    }

    #[test]
    fn malformed_quantity_is_an_error() {
        let spec = PodSpec { containers: vec![container("lots", "1Gi")], ..Default::default() };
        assert!(pod_requests(&spec).is_err());
    }
}
