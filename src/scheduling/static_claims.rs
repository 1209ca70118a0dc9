//! What a static NodePool (`spec.replicas`) launches: a NodeClaim for no pod in particular. Its
//! requirements are the pool's (template labels and `stoker.dev/nodepool` folded in, as the
//! solver sees a pool), its requests the DaemonSet pods that will run on it, and its instance
//! types those of the node class that satisfy the requirements and hold the DaemonSets, cheapest
//! first, at most 60: EC2 launches the cheapest it has capacity for, as Karpenter's static
//! NodeClaims do. Pure.

use super::{
    catalog::{InstanceType, type_admits},
    requirements::Requirement,
    solver::{MAX_INSTANCE_TYPES, NewNodeClaim, NodePoolTemplate, Sizing},
};
use crate::apis::labels;

/// The NodeClaim a static pool adds, or why it cannot add one. `instance_types` are the types
/// the template's indices point into.
pub fn static_claim(template: &NodePoolTemplate, instance_types: &[InstanceType]) -> Result<NewNodeClaim, String> {
    let requirements = &template.requirements;
    let mut priced: Vec<(&InstanceType, f64)> = template
        .instance_types
        .iter()
        .filter_map(|&index| instance_types.get(index))
        .filter(|instance| requirements.iter().all(|(key, requirement)| type_admits(instance, key, requirement)))
        .filter(|instance| template.daemon_overhead.fits_in(&instance.allocatable))
        .filter_map(|instance| Some((instance, instance.cheapest_offering(requirements)?.price)))
        .collect();
    if priced.is_empty() {
        return Err(format!(
            "no available instance type of its node class satisfies NodePool {}'s requirements and holds its DaemonSets",
            template.name
        ));
    }
    priced.sort_by(|(a, a_price), (b, b_price)| a_price.total_cmp(b_price).then_with(|| a.name.cmp(&b.name)));
    priced.truncate(MAX_INSTANCE_TYPES);
    let names: Vec<String> = priced.iter().map(|(instance, _)| instance.name.clone()).collect();
    let mut narrowed = requirements.clone();
    narrowed.add(labels::INSTANCE_TYPE, Requirement::one_of(names.iter().cloned()));
    Ok(NewNodeClaim {
        nodepool: template.name.clone(),
        requirements: narrowed,
        instance_types: names,
        requests: template.daemon_overhead.clone(),
        pods: Vec::new(),
        price: priced[0].1,
        sizing: Sizing::BestValue,
        min_values_relaxed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::{
        catalog::Offering,
        requirements::Requirements,
        resources::{CPU, Resources},
    };

    fn instance(name: &str, millicores: i64, price: f64, zone: &str) -> InstanceType {
        let mut capacity = Resources::new();
        capacity.set(CPU, millicores);
        let offerings = vec![Offering {
            zone: zone.into(),
            zone_id: String::new(),
            capacity_type: "on-demand".into(),
            price,
            available: true,
            reservation_id: None,
            capacity_block: false,
        }];
        let labels = [(labels::INSTANCE_TYPE.to_owned(), name.to_owned())].into();
        InstanceType::new(name.into(), labels, capacity.clone(), capacity, offerings)
    }

    fn template(requirements: Requirements, overhead_millicores: i64) -> NodePoolTemplate {
        let mut daemon_overhead = Resources::new();
        daemon_overhead.set(CPU, overhead_millicores);
        NodePoolTemplate {
            name: "static".into(),
            weight: 0,
            requirements,
            taints: Vec::new(),
            instance_types: vec![0, 1, 2],
            daemon_overhead,
            remaining: None,
        }
    }

    #[test]
    fn the_cheapest_types_that_satisfy_the_pool_and_hold_its_daemonsets() {
        let types =
            [instance("big", 8000, 0.4, "a"), instance("small", 1000, 0.05, "a"), instance("mid", 2000, 0.1, "b")];
        let claim = static_claim(&template(Requirements::new(), 500), &types).expect("a claim");
        assert_eq!(claim.instance_types, ["small", "mid", "big"]);
        assert_eq!((claim.price, claim.pods.len(), claim.requests.get(CPU)), (0.05, 0, 500));
        assert!(claim.requirements.get(labels::INSTANCE_TYPE).is_some_and(|r| r.admits(Some("mid"))));

        // DaemonSets that need more than the small type has; a zone the small one is not in.
        assert_eq!(static_claim(&template(Requirements::new(), 1500), &types).unwrap().instance_types, ["mid", "big"]);
        let mut zone_b = Requirements::new();
        zone_b.add(labels::ZONE, Requirement::one_of(["b"]));
        assert_eq!(static_claim(&template(zone_b, 0), &types).unwrap().instance_types, ["mid"]);

        let mut none = Requirements::new();
        none.add(labels::INSTANCE_TYPE, Requirement::one_of(["huge"]));
        let error = static_claim(&template(none, 0), &types).unwrap_err();
        assert!(error.contains("NodePool static"), "{error}");
    }
}
