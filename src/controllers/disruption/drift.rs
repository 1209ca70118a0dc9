//! Drift: a NodeClaim no longer matches what its NodePool and EC2NodeClass would launch today.
//! Pure, from the claim, its node's labels, its pool and its class.
//!
//! - The pool's template changed: each claim carries the hash of the template it was made from
//!   ([`NODEPOOL_HASH`], with [`HASH_VERSION`]); requirements, `expireAfter` and
//!   `terminationGracePeriod` are left out of it (requirements are checked against the labels
//!   instead; a new lifetime applies to new nodes without rolling the old ones).
//! - The class changed: likewise ([`NODECLASS_HASH`]), without the selector terms, whose effect
//!   is checked through what they resolve to.
//! - Its AMI is no longer among the ones the class resolves.
//! - Its node's labels no longer satisfy the pool's requirements.
//!
//! A claim made before a hash existed, or under another hash version, is not drifted by it.

use std::{collections::BTreeSet, fmt};

use sha2::{Digest, Sha256};

use crate::{
    apis::{EC2NodeClass, NodeClaim, NodePool},
    scheduling::requirements::Requirements,
};

/// The claim annotation holding the hash of its pool's template.
pub const NODEPOOL_HASH: &str = "stoker.dev/nodepool-hash";
/// The claim annotation holding the hash of its class.
pub const NODECLASS_HASH: &str = "stoker.dev/ec2nodeclass-hash";
/// The claim annotation naming how the hashes were made; a claim with another version is not
/// compared (a new stoker that hashes differently does not roll every node).
pub const HASH_VERSION_ANNOTATION: &str = "stoker.dev/hash-version";
pub const HASH_VERSION: &str = "v1";

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
        for selector in ["amiSelectorTerms", "subnetSelectorTerms", "securityGroupSelectorTerms"] {
            fields.remove(selector);
        }
    }
    digest(&spec)
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
    node_labels: &std::collections::BTreeMap<String, String>,
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
    use std::collections::BTreeMap;

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
        claim.metadata.annotations = Some(BTreeMap::from([
            (NODEPOOL_HASH.to_owned(), nodepool_hash(pool)),
            (NODECLASS_HASH.to_owned(), nodeclass_hash(class)),
            (HASH_VERSION_ANNOTATION.to_owned(), HASH_VERSION.to_owned()),
        ]));
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
}
