//! An in-memory cloud: instances live in a map, launches succeed at once on the first instance
//! type and zone a NodeClaim allows, and any call can be made to fail, in order, with a chosen
//! error. For fast, deterministic tests of controller logic (launch failures, throttling,
//! instances that vanish); the end-to-end tests use the AWS provider against the EC2 emulator.
//!
//! It honours the provider contract the controllers rely on: a launch for a claim that already
//! has an instance returns that instance unless the caller knows there is none, and an instance
//! never launched here cannot be terminated.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
};

use kube::ResourceExt;

use super::{CloudError, CloudProvider, Followers, Instance, PriorLaunches};
use crate::{
    apis::{
        ec2nodeclass::{EC2NodeClass, EC2NodeClassStatus, ResolvedAmi, ResolvedSecurityGroup, ResolvedSubnet},
        labels,
        nodeclaim::NodeClaim,
    },
    scheduling::{catalog::InstanceType, overlays, overlays::Overlay},
};

/// The fake's zone when a claim does not name one.
pub const ZONE: &str = "fake-zone-a";

/// A cloud in memory.
pub struct FakeCloudProvider {
    instance_types: Arc<[InstanceType]>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Live instances by provider ID.
    instances: BTreeMap<String, Instance>,
    launched: u64,
    /// Errors the next calls of a method return, oldest first.
    failures: HashMap<&'static str, VecDeque<CloudError>>,
    /// Every call, as (method, what it was about).
    calls: Vec<(&'static str, String)>,
    /// The NodeOverlays in effect, applied to the types handed out.
    overlays: Vec<Overlay>,
}

impl FakeCloudProvider {
    pub fn new(instance_types: impl Into<Arc<[InstanceType]>>) -> Self {
        Self { instance_types: instance_types.into(), state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the next call of `method` (`create`, `delete`, `list`, ...) fail with `error`.
    pub fn fail_next(&self, method: &'static str, error: CloudError) {
        self.state().failures.entry(method).or_default().push_back(error);
    }

    /// What each call of `method` was about (a claim's name, a provider ID, a class's name).
    pub fn calls(&self, method: &str) -> Vec<String> {
        self.state().calls.iter().filter(|(m, _)| *m == method).map(|(_, about)| about.clone()).collect()
    }

    /// The live instances.
    pub fn instances(&self) -> Vec<Instance> {
        self.state().instances.values().cloned().collect()
    }

    /// An instance goes away without stoker (a spot reclaim, a person at the console).
    pub fn vanish(&self, provider_id: &str) {
        self.state().instances.remove(provider_id);
    }

    /// Records the call and returns the failure queued for it, if any.
    fn enter(&self, method: &'static str, about: String) -> Result<(), CloudError> {
        let mut state = self.state();
        state.calls.push((method, about));
        match state.failures.get_mut(method).and_then(VecDeque::pop_front) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// The values a claim's requirements allow for `key`, if it restricts it.
fn allowed<'a>(claim: &'a NodeClaim, key: &str) -> Option<&'a [String]> {
    claim.spec.requirements.iter().find(|r| r.key == key && !r.values.is_empty()).map(|r| r.values.as_slice())
}

impl CloudProvider for FakeCloudProvider {
    type NodeClass = EC2NodeClass;
    type NodeClassStatus = EC2NodeClassStatus;

    async fn create(
        &self,
        claim: &NodeClaim,
        _: &EC2NodeClass,
        prior: PriorLaunches,
        _: Followers,
    ) -> Result<Instance, CloudError> {
        let name = claim.name_any();
        self.enter("create", name.clone())?;
        let mut state = self.state();
        if prior == PriorLaunches::Unknown
            && let Some(existing) = state.instances.values().find(|i| i.nodeclaim() == Some(name.as_str()))
        {
            return Ok(existing.clone());
        }
        let types = allowed(claim, labels::INSTANCE_TYPE);
        let instance_type = self
            .instance_types
            .iter()
            .find(|t| types.is_none_or(|allowed| allowed.contains(&t.name)))
            .ok_or_else(|| CloudError::NoCompatibleOfferings(format!("no instance type allows {name}")))?;
        let zone = allowed(claim, labels::ZONE).and_then(|zones| zones.first()).map_or(ZONE, String::as_str);
        let capacity_type = allowed(claim, labels::CAPACITY_TYPE)
            .and_then(|types| types.first())
            .map_or(labels::CAPACITY_TYPE_ON_DEMAND, String::as_str);
        state.launched += 1;
        let id = format!("i-fake{:012}", state.launched);
        let instance = Instance {
            provider_id: format!("fake:///{zone}/{id}"),
            id,
            instance_type: instance_type.name.clone(),
            zone: zone.to_owned(),
            capacity_type: capacity_type.to_owned(),
            capacity_reservation: None,
            image_id: "ami-fake".into(),
            subnet_id: String::new(),
            security_group_ids: Vec::new(),
            state: "running".into(),
            launch_time: Some(chrono::Utc::now()),
            tags: BTreeMap::from([(labels::EC2_NODECLAIM_TAG.to_owned(), name)]),
        };
        state.instances.insert(instance.provider_id.clone(), instance.clone());
        Ok(instance)
    }

    async fn prepare(&self, claim: &NodeClaim, _: &EC2NodeClass) -> Result<(), CloudError> {
        self.enter("prepare", claim.name_any())
    }

    async fn delete(&self, provider_id: &str) -> Result<(), CloudError> {
        self.enter("delete", provider_id.to_owned())?;
        match self.state().instances.remove(provider_id) {
            Some(_) => Ok(()),
            None => Err(CloudError::NotFound(provider_id.to_owned())),
        }
    }

    async fn get(&self, provider_id: &str) -> Result<Instance, CloudError> {
        self.enter("get", provider_id.to_owned())?;
        self.state().instances.get(provider_id).cloned().ok_or_else(|| CloudError::NotFound(provider_id.to_owned()))
    }

    async fn list(&self) -> Result<Vec<Instance>, CloudError> {
        self.enter("list", String::new())?;
        Ok(self.instances())
    }

    async fn instance_types(&self, class: &EC2NodeClass) -> Result<Arc<[InstanceType]>, CloudError> {
        self.enter("instance_types", class.name_any())?;
        let overlays = self.state().overlays.clone();
        if overlays.is_empty() {
            return Ok(self.instance_types.clone());
        }
        let mut overlaid = self.instance_types.to_vec();
        overlays::apply(&mut overlaid, &overlays);
        Ok(overlaid.into())
    }

    async fn resolve_node_class(&self, class: &EC2NodeClass) -> Result<EC2NodeClassStatus, CloudError> {
        self.enter("resolve_node_class", class.name_any())?;
        Ok(EC2NodeClassStatus {
            subnets: vec![ResolvedSubnet { id: "subnet-fake".into(), zone: ZONE.into(), zone_id: None }],
            security_groups: vec![ResolvedSecurityGroup { id: "sg-fake".into(), name: None }],
            amis: vec![ResolvedAmi { id: "ami-fake".into(), name: None, requirements: Vec::new() }],
            ..Default::default()
        })
    }

    async fn delete_node_class_resources(&self, class: &EC2NodeClass) -> Result<(), CloudError> {
        self.enter("delete_node_class_resources", class.name_any())
    }

    async fn ended_reservations(&self, ids: &[String]) -> Result<Vec<String>, CloudError> {
        self.enter("ended_reservations", ids.join(","))?;
        // The fake launches into no reservation, so none of the instances it knows runs in one.
        Ok(Vec::new())
    }

    async fn prune(&self) -> Result<usize, CloudError> {
        self.enter("prune", String::new())?;
        Ok(0)
    }

    fn offering_interrupted(&self, instance_type: &str, zone: &str, capacity_type: &str) {
        self.state().calls.push(("offering_interrupted", format!("{instance_type} {zone} {capacity_type}")));
    }

    fn use_overlays(&self, overlays: Vec<Overlay>) {
        self.state().overlays = overlays;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudprovider::aws::allocatable;

    fn claim(name: &str, types: &[&str]) -> NodeClaim {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "stoker.dev/v1alpha1", "kind": "NodeClaim", "metadata": {"name": name},
            "spec": {
                "nodeClassRef": {"group": "stoker.dev", "kind": "EC2NodeClass", "name": "default"},
                "requirements": [{"key": labels::INSTANCE_TYPE, "operator": "In", "values": types}],
                "resources": {"requests": {}}
            }
        }))
        .expect("a NodeClaim")
    }

    fn class() -> EC2NodeClass {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "stoker.dev/v1alpha1", "kind": "EC2NodeClass", "metadata": {"name": "default"},
            "spec": {"role": "r", "amiSelectorTerms": [{"alias": "al2023@latest"}],
                     "subnetSelectorTerms": [{"id": "s"}], "securityGroupSelectorTerms": [{"id": "g"}]}
        }))
        .expect("an EC2NodeClass")
    }

    fn provider() -> FakeCloudProvider {
        let catalog = crate::cloudprovider::aws::catalog::Catalog::snapshot();
        let types: Vec<InstanceType> = catalog
            .types
            .iter()
            .filter(|t| ["m5.large", "m5.xlarge"].contains(&t.name.as_str()))
            .map(|facts| allocatable::instance_type(facts, Vec::new(), &Default::default()).expect("valid facts"))
            .collect();
        FakeCloudProvider::new(types)
    }

    #[tokio::test]
    async fn launches_adopt_and_terminate_like_a_cloud() {
        let fake = provider();
        let first = fake
            .create(&claim("a", &["m5.xlarge"]), &class(), PriorLaunches::None, Followers::NoneExpected)
            .await
            .expect("launched");
        assert_eq!(first.instance_type, "m5.xlarge");
        // A retry that cannot know whether it launched gets the same instance back.
        let again = fake
            .create(&claim("a", &["m5.xlarge"]), &class(), PriorLaunches::Unknown, Followers::NoneExpected)
            .await
            .expect("adopted");
        assert_eq!(again.provider_id, first.provider_id);
        assert_eq!(fake.instances().len(), 1);
        fake.delete(&first.provider_id).await.expect("terminated");
        assert!(matches!(fake.delete(&first.provider_id).await, Err(CloudError::NotFound(_))));
        assert!(matches!(
            fake.create(&claim("b", &["x9.huge"]), &class(), PriorLaunches::None, Followers::NoneExpected).await,
            Err(CloudError::NoCompatibleOfferings(_))
        ));
    }

    #[tokio::test]
    async fn queued_failures_come_in_order_then_calls_succeed() {
        let fake = provider();
        fake.fail_next("create", CloudError::InsufficientCapacity { errors: vec!["none left".into()] });
        fake.fail_next(
            "create",
            CloudError::Aws { operation: "CreateFleet", code: "RequestLimitExceeded".into(), message: String::new() },
        );
        let (claim, class) = (claim("a", &[]), class());
        let launch = || fake.create(&claim, &class, PriorLaunches::None, Followers::NoneExpected);
        assert!(matches!(launch().await, Err(CloudError::InsufficientCapacity { .. })));
        assert!(matches!(launch().await, Err(CloudError::Aws { .. })));
        assert!(launch().await.is_ok());
        assert_eq!(fake.calls("create"), ["a", "a", "a"]);
    }
}
