//! Drift: a NodeClaim no longer matches what its NodePool and EC2NodeClass would launch today.
//! Pure, from the claim, its node's labels, its pool and its class.
//!
//! - The pool's template changed: each claim carries the hash of the template it was made from
//!   ([`NODEPOOL_HASH`], with [`HASH_VERSION`]); requirements, `expireAfter` and
//!   `terminationGracePeriod` are left out of it (requirements are checked against the labels
//!   instead; a new lifetime applies to new nodes without rolling the old ones).
//! - The class changed: likewise ([`NODECLASS_HASH`]), without the selector terms, whose effect
//!   is checked through what they resolve to (a new capacity reservation term rolls nothing).
//! - Its AMI, subnet or security groups are no longer the ones the class resolves.
//! - It runs in a capacity reservation the class no longer selects (one that ended is not this:
//!   its nodes are relabelled on-demand before the class's status drops it).
//! - Its node's labels no longer satisfy the pool's requirements.
//!
//! A claim made before a hash existed, or under another hash version, is not drifted by it: it is
//! re-stamped with what its pool and class hash to now ([`restamp`]), so a stoker that hashes
//! differently neither rolls every node nor leaves them unable to drift.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use sha2::{Digest, Sha256};

use crate::{
    apis::{EC2NodeClass, NodeClaim, NodePool, labels},
    scheduling::requirements::Requirements,
};

/// The claim annotation holding the hash of its pool's template.
pub const NODEPOOL_HASH: &str = "stoker.dev/nodepool-hash";
/// The claim annotation holding the hash of its class.
pub const NODECLASS_HASH: &str = "stoker.dev/ec2nodeclass-hash";
/// The claim annotation naming how the hashes were made; a claim with another version is not
/// compared (a new stoker that hashes differently does not roll every node).
pub const HASH_VERSION_ANNOTATION: &str = "stoker.dev/hash-version";
/// `v2` leaves the capacity reservation selector terms out of the class's hash.
pub const HASH_VERSION: &str = "v2";

/// Why a claim is drifted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    NodePoolChanged,
    NodeClassChanged,
    /// Its AMI, which the class no longer resolves.
    AmiChanged(String),
    /// Its subnet, which the class no longer resolves.
    SubnetChanged(String),
    /// Its security groups, which are no longer the ones the class resolves.
    SecurityGroupsChanged,
    /// Its capacity reservation, which the class no longer selects.
    CapacityReservationChanged(String),
    /// A requirement of the pool its node's labels no longer satisfy.
    RequirementsChanged(String),
}

impl Drift {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NodePoolChanged => "NodePoolDrifted",
            Self::NodeClassChanged => "NodeClassDrifted",
            Self::AmiChanged(_) => "AMIDrifted",
            Self::SubnetChanged(_) => "SubnetDrifted",
            Self::SecurityGroupsChanged => "SecurityGroupDrifted",
            Self::CapacityReservationChanged(_) => "CapacityReservationDrifted",
            Self::RequirementsChanged(_) => "RequirementsDrifted",
        }
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NodePoolChanged => write!(f, "its NodePool's template changed"),
            Self::NodeClassChanged => write!(f, "its EC2NodeClass changed"),
            Self::AmiChanged(ami) => write!(f, "its AMI {ami} is no longer selected by its EC2NodeClass"),
            Self::SubnetChanged(subnet) => write!(f, "its subnet {subnet} is no longer selected by its EC2NodeClass"),
            Self::SecurityGroupsChanged => {
                write!(f, "its security groups are no longer the ones its EC2NodeClass selects")
            }
            Self::CapacityReservationChanged(id) => {
                write!(f, "its capacity reservation {id} is no longer selected by its EC2NodeClass")
            }
            Self::RequirementsChanged(key) => {
                write!(f, "its labels no longer satisfy its NodePool's requirement on {key}")
            }
        }
    }
}

/// The hash of what a pool's template puts on its nodes (see the module docs for what is left
/// out).
pub fn nodepool_hash(pool: &NodePool) -> String {
    let template = &pool.spec.template;
    let hashed = serde_json::json!({
        "labels": template.metadata.labels,
        "annotations": template.metadata.annotations,
        "taints": template.spec.taints,
        "startupTaints": template.spec.startup_taints,
        "nodeClassRef": template.spec.node_class_ref,
    });
    digest(&hashed)
}

/// The hash of a class's spec without its selector terms.
pub fn nodeclass_hash(class: &EC2NodeClass) -> String {
    let mut spec = serde_json::to_value(&class.spec).unwrap_or_default();
    if let Some(fields) = spec.as_object_mut() {
        for selector in [
            "amiSelectorTerms",
            "subnetSelectorTerms",
            "securityGroupSelectorTerms",
            "capacityReservationSelectorTerms",
        ] {
            fields.remove(selector);
        }
    }
    digest(&spec)
}

/// The annotations recording what a claim is made from: its pool's hash, its class's when the
/// class is known, and the version of both.
pub fn stamps(pool: &NodePool, class: Option<&EC2NodeClass>) -> BTreeMap<String, String> {
    let mut stamps = BTreeMap::from([
        (NODEPOOL_HASH.to_owned(), nodepool_hash(pool)),
        (HASH_VERSION_ANNOTATION.to_owned(), HASH_VERSION.to_owned()),
    ]);
    if let Some(class) = class {
        stamps.insert(NODECLASS_HASH.to_owned(), nodeclass_hash(class));
    }
    stamps
}

/// The stamps a claim made under another hash version (or before hashes) takes: what its pool
/// and class hash to now, as Karpenter re-stamps its claims. A change made to the pool or class
/// while stoker was being upgraded drifts nothing; every later one does. None for a claim of
/// the current version, and while its class is not known (a stamp without the class's hash
/// would never see the class change).
pub fn restamp(claim: &NodeClaim, pool: &NodePool, class: Option<&EC2NodeClass>) -> Option<BTreeMap<String, String>> {
    let version = claim.metadata.annotations.as_ref().and_then(|a| a.get(HASH_VERSION_ANNOTATION));
    if version.is_some_and(|v| v == HASH_VERSION) {
        return None;
    }
    class.map(|class| stamps(pool, Some(class)))
}

/// A short stable digest of a JSON value (serde_json orders object keys, so equal values hash
/// equally whatever order they were written in).
fn digest(value: &serde_json::Value) -> String {
    let bytes = Sha256::digest(value.to_string());
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Why the claim is drifted, if it is. `node_labels` are its node's (or its own while it has no
/// node).
pub fn drifted(
    claim: &NodeClaim,
    node_labels: &BTreeMap<String, String>,
    pool: &NodePool,
    class: Option<&EC2NodeClass>,
) -> Option<Drift> {
    let annotations = claim.metadata.annotations.as_ref();
    let stamped = |key: &str| annotations.and_then(|a| a.get(key));
    if stamped(HASH_VERSION_ANNOTATION).is_some_and(|v| v == HASH_VERSION) {
        if stamped(NODEPOOL_HASH).is_some_and(|h| *h != nodepool_hash(pool)) {
            return Some(Drift::NodePoolChanged);
        }
        if let Some(class) = class
            && stamped(NODECLASS_HASH).is_some_and(|h| *h != nodeclass_hash(class))
        {
            return Some(Drift::NodeClassChanged);
        }
    }
    // What the instance was launched with against what the class resolves now; a class not
    // resolved yet (or a claim launched before these were recorded) is no evidence of drift.
    let launched = claim.status.as_ref();
    let resolved = class.and_then(|c| c.status.as_ref());
    if let (Some(image), Some(amis)) = (launched.and_then(|s| s.image_id.as_ref()), resolved.map(|s| &s.amis))
        && !amis.is_empty()
        && !amis.iter().any(|ami| &ami.id == image)
    {
        return Some(Drift::AmiChanged(image.clone()));
    }
    if let (Some(subnet), Some(subnets)) = (launched.and_then(|s| s.subnet_id.as_ref()), resolved.map(|s| &s.subnets))
        && !subnets.is_empty()
        && !subnets.iter().any(|s| &s.id == subnet)
    {
        return Some(Drift::SubnetChanged(subnet.clone()));
    }
    if let (Some(launched), Some(resolved)) = (launched, resolved)
        && !launched.security_group_ids.is_empty()
        && !resolved.security_groups.is_empty()
    {
        let attached: BTreeSet<&String> = launched.security_group_ids.iter().collect();
        if attached != resolved.security_groups.iter().map(|g| &g.id).collect() {
            return Some(Drift::SecurityGroupsChanged);
        }
    }
    // A class resolved at all (it found subnets) that no longer selects the node's reservation.
    if let (Some(id), Some(resolved)) = (labels::reservation(node_labels), resolved.filter(|r| !r.subnets.is_empty()))
        && !resolved.capacity_reservations.iter().any(|r| r.id == id)
    {
        return Some(Drift::CapacityReservationChanged(id.to_owned()));
    }
    let requirements = Requirements::from_api(&pool.spec.template.spec.requirements);
    for (key, requirement) in requirements.iter() {
        if !requirement.admits(node_labels.get(key).map(String::as_str)) {
            return Some(Drift::RequirementsChanged(key.clone()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;

    use super::*;

    fn pool(labels: &str, requirements: &str) -> NodePool {
        serde_saphyr::from_str(&format!(
            "apiVersion: stoker.dev/v1alpha1\nkind: NodePool\nmetadata: {{name: p}}\nspec:\n  template:\n    metadata: {{labels: {{{labels}}}}}\n    spec:\n      nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: c}}\n      requirements: [{requirements}]"
        ))
        .expect("a NodePool")
    }

    fn class(ami_selector: &str, resolved: &str) -> EC2NodeClass {
        serde_saphyr::from_str(&format!(
            "apiVersion: stoker.dev/v1alpha1\nkind: EC2NodeClass\nmetadata: {{name: c}}\nspec:\n  role: r\n  amiSelectorTerms: [{{{ami_selector}}}]\n  subnetSelectorTerms: [{{tags: {{a: b}}}}]\n  securityGroupSelectorTerms: [{{tags: {{a: b}}}}]\nstatus:\n  amis: [{{id: {resolved}, name: n, requirements: []}}]"
        ))
        .expect("an EC2NodeClass")
    }

    fn claim_of(pool: &NodePool, class: &EC2NodeClass, image: &str) -> NodeClaim {
        let mut claim: NodeClaim = serde_saphyr::from_str(&format!(
            "apiVersion: stoker.dev/v1alpha1\nkind: NodeClaim\nmetadata: {{name: p-1}}\nspec:\n  nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: c}}\n  resources: {{requests: {{cpu: '1'}}}}\nstatus: {{imageID: {image}}}"
        ))
        .expect("a NodeClaim");
        claim.metadata.annotations = Some(stamps(pool, Some(class)));
        claim
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn each_kind_of_change_drifts_and_nothing_else_does() {
        let arch = "{key: kubernetes.io/arch, operator: In, values: [amd64]}";
        let (original, class_now) = (pool("team: a", arch), class("alias: al2023@latest", "ami-1"));
        let claim = claim_of(&original, &class_now, "ami-1");
        let node = labels(&[("kubernetes.io/arch", "amd64"), ("team", "a")]);
        assert_eq!(drifted(&claim, &node, &original, Some(&class_now)), None);

        assert_eq!(drifted(&claim, &node, &pool("team: b", arch), Some(&class_now)), Some(Drift::NodePoolChanged));
        // Selector terms are not hashed; what they resolve to is compared instead.
        let reselected = class("id: ami-2", "ami-1");
        assert_eq!(drifted(&claim, &node, &original, Some(&reselected)), None);
        let new_ami = class("alias: al2023@latest", "ami-2");
        assert_eq!(drifted(&claim, &node, &original, Some(&new_ami)), Some(Drift::AmiChanged("ami-1".into())));
        let mut new_role = class_now.clone();
        new_role.spec.role = Some("other".into());
        assert_eq!(drifted(&claim, &node, &original, Some(&new_role)), Some(Drift::NodeClassChanged));
        // Selecting a capacity reservation changes where new nodes may launch, not the old ones.
        let mut reserving = class_now.clone();
        reserving.spec.capacity_reservation_selector_terms =
            serde_saphyr::from_str("[{id: cr-0123456789abcdef0}]").expect("reservation terms");
        assert_eq!(drifted(&claim, &node, &original, Some(&reserving)), None);

        // A requirement change is not a hash change: it drifts only the nodes it excludes.
        let arm = pool("team: a", "{key: kubernetes.io/arch, operator: In, values: [arm64]}");
        let hashed_alike = claim_of(&arm, &class_now, "ami-1");
        assert_eq!(
            drifted(&hashed_alike, &node, &arm, Some(&class_now)),
            Some(Drift::RequirementsChanged("kubernetes.io/arch".into()))
        );

        // Another hash version is not compared.
        let mut older = claim.clone();
        older.metadata.annotations.as_mut().unwrap().insert(HASH_VERSION_ANNOTATION.into(), "v0".into());
        assert_eq!(drifted(&older, &node, &pool("team: b", arch), Some(&class_now)), None);
    }

    #[test]
    fn a_claim_of_another_hash_version_is_restamped_with_what_its_pool_and_class_hash_to_now() {
        let arch = "{key: kubernetes.io/arch, operator: In, values: [amd64]}";
        let (original, class_now) = (pool("team: a", arch), class("alias: al2023@latest", "ami-1"));
        let node = labels(&[("kubernetes.io/arch", "amd64"), ("team", "a")]);
        let current = claim_of(&original, &class_now, "ami-1");
        assert_eq!(restamp(&current, &original, Some(&class_now)), None, "the current version stays");

        // Made under v1 from a pool and class that have both changed since (the v1 class hash
        // counted the reservation terms): not drifted, and re-stamped with today's hashes.
        let (changed_pool, mut changed_class) = (pool("team: b", arch), class_now.clone());
        changed_class.spec.capacity_reservation_selector_terms =
            serde_saphyr::from_str("[{tags: {team: a}}]").expect("reservation terms");
        let mut older = current.clone();
        older.annotations_mut().extend([
            (HASH_VERSION_ANNOTATION.to_owned(), "v1".to_owned()),
            (NODECLASS_HASH.to_owned(), "0123456789abcdef".to_owned()),
        ]);
        assert_eq!(drifted(&older, &node, &changed_pool, Some(&changed_class)), None);
        let stamped = restamp(&older, &changed_pool, Some(&changed_class)).expect("re-stamped");
        assert_eq!(stamped, stamps(&changed_pool, Some(&changed_class)));
        assert_eq!(stamped[HASH_VERSION_ANNOTATION], HASH_VERSION);
        older.annotations_mut().extend(stamped);
        assert_eq!(drifted(&older, &node, &changed_pool, Some(&changed_class)), None);
        // Later changes drift it again.
        assert_eq!(drifted(&older, &node, &original, Some(&changed_class)), Some(Drift::NodePoolChanged));
        assert_eq!(drifted(&older, &node, &changed_pool, Some(&class_now)), None, "reservation terms are not hashed");
        let mut new_role = changed_class.clone();
        new_role.spec.role = Some("other".into());
        assert_eq!(drifted(&older, &node, &changed_pool, Some(&new_role)), Some(Drift::NodeClassChanged));

        // A claim made before hashes existed is stamped too, but only once its class is known.
        let mut unstamped = current.clone();
        unstamped.metadata.annotations = None;
        assert_eq!(restamp(&unstamped, &original, None), None);
        assert_eq!(restamp(&unstamped, &original, Some(&class_now)), Some(stamps(&original, Some(&class_now))));
    }

    #[test]
    fn a_subnet_or_security_groups_the_class_no_longer_selects_drift() {
        use crate::apis::ec2nodeclass::{ResolvedSecurityGroup, ResolvedSubnet};
        let arch = "{key: kubernetes.io/arch, operator: In, values: [amd64]}";
        let resolved = |subnets: &[&str], groups: &[&str]| {
            let mut class = class("alias: al2023@latest", "ami-1");
            let status = class.status.as_mut().expect("a status");
            status.subnets =
                subnets.iter().map(|id| ResolvedSubnet { id: (*id).into(), zone: "z".into(), zone_id: None }).collect();
            status.security_groups =
                groups.iter().map(|id| ResolvedSecurityGroup { id: (*id).into(), name: None }).collect();
            class
        };
        let pool = pool("team: a", arch);
        let now = resolved(&["subnet-1", "subnet-2"], &["sg-1", "sg-2"]);
        let mut claim = claim_of(&pool, &now, "ami-1");
        let node = labels(&[("kubernetes.io/arch", "amd64"), ("team", "a")]);
        // Launched before subnets and groups were recorded: no evidence either way.
        assert_eq!(drifted(&claim, &node, &pool, Some(&now)), None);
        let status = claim.status.as_mut().expect("a status");
        status.subnet_id = Some("subnet-2".into());
        status.security_group_ids = vec!["sg-2".into(), "sg-1".into()];
        assert_eq!(drifted(&claim, &node, &pool, Some(&now)), None, "order does not matter");

        let moved = resolved(&["subnet-3"], &["sg-1", "sg-2"]);
        assert_eq!(drifted(&claim, &node, &pool, Some(&moved)), Some(Drift::SubnetChanged("subnet-2".into())));
        let fewer = resolved(&["subnet-2"], &["sg-1"]);
        assert_eq!(drifted(&claim, &node, &pool, Some(&fewer)), Some(Drift::SecurityGroupsChanged));
        let more = resolved(&["subnet-2"], &["sg-1", "sg-2", "sg-3"]);
        assert_eq!(drifted(&claim, &node, &pool, Some(&more)), Some(Drift::SecurityGroupsChanged));
        // A class whose selectors match nothing right now is not ready, not a reason to replace.
        assert_eq!(drifted(&claim, &node, &pool, Some(&resolved(&[], &[]))), None);
    }

    #[test]
    fn a_node_in_a_reservation_its_class_no_longer_selects_drifts() {
        use crate::apis::ec2nodeclass::{ResolvedCapacityReservation, ResolvedSubnet};
        let arch = "{key: kubernetes.io/arch, operator: In, values: [amd64]}";
        let selecting = |ids: &[&str], subnets: bool| {
            let mut class = class("alias: al2023@latest", "ami-1");
            let status = class.status.as_mut().expect("a status");
            if subnets {
                status.subnets = vec![ResolvedSubnet { id: "subnet-1".into(), zone: "z".into(), zone_id: None }];
            }
            status.capacity_reservations =
                ids.iter().map(|id| ResolvedCapacityReservation::of(id, "m5.large", "z")).collect();
            class
        };
        let pool = pool("team: a", arch);
        let claim = claim_of(&pool, &selecting(&["cr-1"], true), "ami-1");
        let node = |capacity_type: &str, reservation: Option<&str>| {
            let mut node = labels(&[("kubernetes.io/arch", "amd64"), ("team", "a")]);
            node.insert(labels::CAPACITY_TYPE.into(), capacity_type.into());
            node.extend(reservation.map(|id| (labels::CAPACITY_RESERVATION_ID.to_owned(), id.to_owned())));
            node
        };
        let in_cr1 = node("reserved", Some("cr-1"));
        assert_eq!(drifted(&claim, &in_cr1, &pool, Some(&selecting(&["cr-1", "cr-2"], true))), None);
        assert_eq!(
            drifted(&claim, &in_cr1, &pool, Some(&selecting(&["cr-2"], true))),
            Some(Drift::CapacityReservationChanged("cr-1".into()))
        );
        let none = selecting(&[], true);
        assert_eq!(
            drifted(&claim, &in_cr1, &pool, Some(&none)),
            Some(Drift::CapacityReservationChanged("cr-1".into()))
        );
        // Relabelled on-demand (its reservation ended), or never in one: nothing to compare.
        assert_eq!(drifted(&claim, &node("on-demand", None), &pool, Some(&none)), None);
        assert_eq!(drifted(&claim, &node("on-demand", Some("cr-1")), &pool, Some(&none)), None);
        // A class not resolved yet is no evidence.
        assert_eq!(drifted(&claim, &in_cr1, &pool, Some(&selecting(&[], false))), None);
        assert_eq!(drifted(&claim, &in_cr1, &pool, None), None);
    }
}
