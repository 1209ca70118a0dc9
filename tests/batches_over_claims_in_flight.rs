//! A batch that closes while the NodeClaims of the one before are still in flight finds room for
//! the same pods on them and launches nothing more: on the real catalog, with the race's basic
//! burst (500 pods of 900m / 3100Mi and 500 of 3500m / 28Gi), through the controller's own
//! path (the claims as the provisioner writes them, read back as in-flight capacity). Pure: no
//! cluster. A burst's later claims come from what kube-scheduler binds before a batch, not from
//! a batch re-placing pods over claims sized together.

#[path = "../benches/support/real_catalog.rs"]
mod real_catalog;

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use stoker::{
    apis::{NodeClaim, NodePool},
    controllers::provisioner::snapshot::nodeclaim_for,
    scheduling::{
        catalog::InstanceType,
        shapes::Shapes,
        solver::{Plan, solve},
    },
    state::{
        cache::CachedPod,
        facts::NodeFactsIndex,
        input::{Snapshot, solver_input},
        pods::PodIndex,
    },
};

/// The race's pool: on-demand amd64, any type of the default class.
fn pool() -> NodePool {
    serde_saphyr::from_str(
        r#"
apiVersion: stoker.dev/v1alpha1
kind: NodePool
metadata: {name: perf}
spec:
  template:
    spec:
      nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
        - {key: kubernetes.io/arch, operator: In, values: [amd64]}
"#,
    )
    .expect("a NodePool")
}

/// `count` unschedulable pods of `app`, their shape shared as the pod cache shares it.
fn pending(app: &str, count: usize, cpu: &str, memory: &str, shapes: &mut Shapes) -> Vec<Arc<CachedPod>> {
    (0..count)
        .map(|index| {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("{app}-{index:03}"), "namespace": "default", "uid": format!("{app}-{index}"),
                             "resourceVersion": "1", "labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                         "resources": {"requests": {"cpu": cpu, "memory": memory}}}]},
                "status": {"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}
            }))
            .expect("a Pod");
            Arc::new(CachedPod::new(pod, shapes))
        })
        .collect()
}

/// One batch over `pods`, with `claims` in flight.
fn batch(
    pods: &[Arc<CachedPod>],
    claims: &[Arc<NodeClaim>],
    pools: &[Arc<NodePool>],
    types: &BTreeMap<String, Arc<[InstanceType]>>,
) -> Plan {
    let index = PodIndex::of(pods);
    let facts = NodeFactsIndex::of(&[]);
    let snapshot = Snapshot {
        pods: &index,
        nodes: &[],
        facts: &facts,
        claims,
        pools,
        daemonsets: &[],
        instance_types: types,
        policies: Default::default(),
        namespaces: Default::default(),
        volumes: &Default::default(),
        expected_pods: &[],
        virtual_pods: &[],
    };
    solve(&solver_input(&snapshot).input)
}

#[test]
fn a_second_batch_fits_the_first_ones_pods_on_its_claims_in_flight() {
    let types = BTreeMap::from([("default".to_owned(), Arc::<[InstanceType]>::from(real_catalog::instance_types()))]);
    let pools = [Arc::new(pool())];
    let mut shapes = Shapes::default();
    let mut pods = pending("small", 500, "900m", "3100Mi", &mut shapes);
    pods.extend(pending("large", 500, "3500m", "28Gi", &mut shapes));

    let first = batch(&pods, &[], &pools, &types);
    assert!(first.unschedulable.is_empty(), "{:?}", first.unschedulable.first());
    assert!(first.new_claims.len() > 1, "a burst this size needs several nodes");
    let claims: Vec<Arc<NodeClaim>> = first
        .new_claims
        .iter()
        .enumerate()
        .map(|(index, planned)| Arc::new(nodeclaim_for(planned, &pools[0], None, &format!("{index:05}"))))
        .collect();

    // Every pod again, and the pods a second batch had in the race (kube-scheduler had bound 83).
    for waiting in [&pods[..], &pods[83..]] {
        let again = batch(waiting, &claims, &pools, &types);
        assert!(again.new_claims.is_empty(), "{} more claim(s)", again.new_claims.len());
        assert_eq!(again.existing.len(), waiting.len(), "every pod on a claim in flight");
    }
    // The control case: without one of the claims its pods need another.
    let again = batch(&pods, &claims[1..], &pools, &types);
    assert!(!again.new_claims.is_empty(), "the claims are the room the pods need");
}
