//! How a planned NodeClaim becomes a NodeClaim object: the pool's template (owner, labels,
//! annotations, taints, lifetimes, stoker's finalizer) with the plan's requirements and requests.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use crate::{
    apis::{
        EC2NodeClass, NodeClaim, NodePool,
        labels::{self},
        nodeclaim::{NodeClaimSpec, ResourceRequests},
    },
    controllers::disruption::drift,
    scheduling::solver::NewNodeClaim,
};

/// The NodeClaim object for a planned node: the pool's [`nodeclaim_template`] named
/// `<pool>-<suffix>`, with the planned requirements and requests, and the hash of its class
/// (what drift compares) when the class is known.
pub fn nodeclaim_for(planned: &NewNodeClaim, pool: &NodePool, class: Option<&EC2NodeClass>, suffix: &str) -> NodeClaim {
    let mut claim = nodeclaim_template(pool);
    claim.metadata.name = Some(format!("{}-{suffix}", pool.name_any()));
    claim.annotations_mut().extend(drift::stamps(pool, class));
    // The pool's own label (`stoker.dev/nodepool`) is on the claim's metadata; stoker's label
    // domain is not allowed in requirements.
    claim.spec.requirements =
        planned.requirements.to_api().into_iter().filter(|r| !r.key.starts_with(labels::RESERVED_DOMAIN)).collect();
    claim.spec.resources = ResourceRequests { requests: planned.requests.to_quantities() };
    if planned.min_values_relaxed {
        claim.annotations_mut().insert(labels::MIN_VALUES_RELAXED.to_owned(), "true".to_owned());
    }
    claim
}

/// What every NodeClaim of a pool shares, unnamed and without requirements: owned by the
/// NodePool, labelled with it, carrying its template labels, annotations, taints and lifetimes.
pub fn nodeclaim_template(pool: &NodePool) -> NodeClaim {
    let pool_name = pool.name_any();
    let template = &pool.spec.template;
    let mut claim_labels = template.metadata.labels.clone();
    claim_labels.insert(labels::NODEPOOL.to_owned(), pool_name.clone());
    let owner = OwnerReference {
        api_version: format!("{}/{}", labels::GROUP, labels::VERSION),
        kind: "NodePool".into(),
        name: pool_name.clone(),
        uid: pool.uid().unwrap_or_default(),
        block_owner_deletion: Some(true),
        controller: None,
    };
    // The template's hash, for drift; the pool's own annotations cannot set these (stoker's
    // domain is reserved).
    let mut annotations = template.metadata.annotations.clone();
    annotations.extend(drift::stamps(pool, None));
    NodeClaim {
        metadata: ObjectMeta {
            labels: Some(claim_labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            // Held from the start, so the NodeClaim controller can launch on its first look.
            finalizers: Some(vec![crate::controllers::nodeclaim::FINALIZER.to_owned()]),
            ..Default::default()
        },
        spec: NodeClaimSpec {
            requirements: Vec::new(),
            resources: ResourceRequests::default(),
            taints: template.spec.taints.clone(),
            startup_taints: template.spec.startup_taints.clone(),
            node_class_ref: template.spec.node_class_ref.clone(),
            expire_after: Some(template.spec.expire_after),
            termination_grace_period: template.spec.termination_grace_period,
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::scheduling::{requirements::Requirements, resources::Resources};

    #[test]
    fn a_planned_nodeclaim_is_owned_labelled_and_carries_the_template() {
        let pool: NodePool = serde_saphyr::from_str(
            "apiVersion: stoker.dev/v1alpha1\nkind: NodePool\nmetadata: {name: general, uid: pool-uid}\nspec:\n  template:\n    metadata: {labels: {team: web}}\n    spec:\n      nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}\n      startupTaints: [{key: cni, effect: NoSchedule}]\n",
        )
        .expect("a NodePool");
        let labels_of_pool: BTreeMap<String, String> =
            [("stoker.dev/nodepool".to_owned(), "general".to_owned())].into();
        let mut requirements = Requirements::from_labels(&labels_of_pool);
        requirements
            .add(labels::INSTANCE_TYPE, crate::scheduling::requirements::Requirement::one_of(["m5.large".to_owned()]));
        let planned = NewNodeClaim {
            nodepool: "general".into(),
            requirements,
            instance_types: vec!["m5.large".into()],
            requests: [("cpu".to_owned(), 1500)].into_iter().collect::<Resources>(),
            pods: vec!["default/a".into()],
            price: 0.1,
            sizing: crate::scheduling::solver::Sizing::BestValue,
            min_values_relaxed: true,
        };
        let claim = nodeclaim_for(&planned, &pool, None, "abcde");
        assert_eq!(claim.metadata.name.as_deref(), Some("general-abcde"));
        assert_eq!(claim.labels().get(labels::NODEPOOL).map(String::as_str), Some("general"));
        assert_eq!(claim.labels().get("team").map(String::as_str), Some("web"));
        let owner = &claim.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("NodePool", "pool-uid"));
        assert_eq!(claim.spec.startup_taints.len(), 1);
        assert!(claim.spec.requirements.iter().all(|r| !r.key.starts_with(labels::RESERVED_DOMAIN)));
        assert!(claim.spec.requirements.iter().any(|r| r.key == labels::INSTANCE_TYPE && r.values == ["m5.large"]));
        assert_eq!(claim.spec.resources.requests.get("cpu").map(|q| q.0.as_str()), Some("1500m"));
        assert_eq!(claim.annotations().get(labels::MIN_VALUES_RELAXED).map(String::as_str), Some("true"));

        // The pool's template, from which launches are prepared, boots nodes the same way: launch
        // templates are made from labels, taints, startup taints and the node class.
        let template = nodeclaim_template(&pool);
        assert_eq!(template.metadata.labels, claim.metadata.labels);
        assert_eq!(
            (&template.spec.taints, &template.spec.startup_taints, &template.spec.node_class_ref),
            (&claim.spec.taints, &claim.spec.startup_taints, &claim.spec.node_class_ref)
        );
        assert!(template.metadata.name.is_none() && template.spec.requirements.is_empty());
    }
}
