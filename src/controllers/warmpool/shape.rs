//! Where a WarmPool's pause pods get their shape: the pool's own `resources` when they name
//! requests, else the pod of its `podTemplateRef` or of its `scalableRef` workload, so headroom
//! "for five more checkout replicas" is sized like a checkout replica and follows its template.
//! The template gives what the pool leaves unset: requests (the kubelet's sum, sidecars and
//! overhead included), node selector, tolerations and node affinity. Pod (anti-)affinity and
//! spread constraints are not taken: they select the workload's own pods, not pause pods.

use k8s_openapi::api::core::v1::{Affinity, PodTemplateSpec, ResourceRequirements};

use crate::{
    apis::warmpool::WarmPoolSpec,
    scheduling::resources::{PODS, pod_requests},
};

/// Whether the pool takes its shape from a template rather than its own `resources`.
pub fn needs_template(spec: &WarmPoolSpec) -> bool {
    spec.resources.requests.as_ref().is_none_or(|requests| requests.is_empty())
}

/// The spec with the pause pod's shape filled in from `template` where the pool needs it; an
/// error says why no shape can be taken.
pub fn shaped(spec: &WarmPoolSpec, template: Option<&PodTemplateSpec>) -> Result<WarmPoolSpec, String> {
    if !needs_template(spec) {
        return Ok(spec.clone());
    }
    let template =
        template.ok_or("the pause pods have no shape: set resources.requests, podTemplateRef or scalableRef")?;
    let pod = template.spec.as_ref().ok_or("the referenced pod template has no spec")?;
    let requests = pod_requests(pod).map_err(|error| format!("the referenced pod template's requests: {error}"))?;
    let requests = requests.without(PODS);
    if requests.iter().all(|(_, amount)| amount == 0) {
        return Err("the referenced pod template requests nothing to hold room for".into());
    }
    let mut shaped = spec.clone();
    shaped.resources = ResourceRequirements { requests: Some(requests.to_quantities()), ..spec.resources.clone() };
    if shaped.node_selector.is_empty() {
        shaped.node_selector = pod.node_selector.clone().unwrap_or_default();
    }
    if shaped.tolerations.is_empty() {
        shaped.tolerations = pod.tolerations.clone().unwrap_or_default();
    }
    if shaped.affinity.is_none() {
        let node_affinity = pod.affinity.as_ref().and_then(|a| a.node_affinity.clone());
        shaped.affinity =
            node_affinity.map(|node_affinity| Affinity { node_affinity: Some(node_affinity), ..Affinity::default() });
    }
    Ok(shaped)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(extra: serde_json::Value) -> WarmPoolSpec {
        let mut spec = json!({"baseline": 2, "scalableRef": {"kind": "Deployment", "name": "checkout"}});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(spec).unwrap()
    }

    fn template() -> PodTemplateSpec {
        serde_json::from_value(json!({"spec": {
            "nodeSelector": {"stoker.dev/nodepool": "spot"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "affinity": {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}]}},
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"app": "checkout"}}, "topologyKey": "kubernetes.io/hostname"}]}
            },
            "containers": [
                {"name": "app", "resources": {"requests": {"cpu": "1500m", "memory": "2Gi"}}},
                {"name": "proxy", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}
            ]
        }}))
        .unwrap()
    }

    #[test]
    fn a_template_shapes_what_the_pool_leaves_unset() {
        let shaped = shaped(&spec(json!({})), Some(&template())).unwrap();
        let requests = shaped.resources.requests.unwrap();
        assert_eq!(requests["cpu"].0, "1600m");
        assert_eq!(requests["memory"].0, "2176Mi");
        assert!(!requests.contains_key("pods"));
        assert_eq!(shaped.node_selector["stoker.dev/nodepool"], "spot");
        assert_eq!(shaped.tolerations.len(), 1);
        let affinity = shaped.affinity.unwrap();
        assert!(
            affinity.node_affinity.is_some() && affinity.pod_anti_affinity.is_none(),
            "only node affinity is taken"
        );

        // The pool's own fields win.
        let own = spec(json!({"nodeSelector": {"stoker.dev/nodepool": "on-demand"}}));
        assert_eq!(super::shaped(&own, Some(&template())).unwrap().node_selector["stoker.dev/nodepool"], "on-demand");
        let sized = spec(json!({"resources": {"requests": {"cpu": "250m"}}}));
        assert_eq!(super::shaped(&sized, None).unwrap(), sized, "requests of its own need no template");
    }

    #[test]
    fn no_shape_says_why() {
        assert!(shaped(&spec(json!({})), None).unwrap_err().contains("no shape"));
        let empty: PodTemplateSpec = serde_json::from_value(json!({"spec": {"containers": [{"name": "c"}]}})).unwrap();
        assert!(shaped(&spec(json!({})), Some(&empty)).unwrap_err().contains("requests nothing"));
    }
}
