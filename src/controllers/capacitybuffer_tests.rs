use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::json;

use super::*;
use crate::{
    scheduling::solver::NewNodeClaim,
    state::buffers::{Referenced, resolve, virtual_pods},
};

fn buffer_of_chunks(replicas: i32) -> CapacityBuffer {
    serde_json::from_value(json!({
        "apiVersion": "autoscaling.x-k8s.io/v1beta1", "kind": "CapacityBuffer",
        "metadata": {"name": "checkout", "namespace": "shop", "generation": 3},
        "spec": {"podTemplateRef": {"name": "chunk"}, "replicas": replicas}
    }))
    .expect("a CapacityBuffer")
}

fn resolved(buffer: &CapacityBuffer) -> std::result::Result<Resolved, Unresolved> {
    let template: PodTemplateSpec = serde_json::from_value(json!({
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}]}
    }))
    .expect("a template");
    resolve(buffer, Ok(Referenced { template, workload_replicas: None, pod_template: Some(("chunk".into(), Some(7))) }))
}

fn keys(buffer: &CapacityBuffer) -> Vec<String> {
    let resolution = resolved(buffer).expect("resolved");
    virtual_pods("shop", "checkout", &resolution).map(|p| p.key.clone()).collect()
}

fn condition<'a>(status: &'a CapacityBufferStatus, type_: &str) -> (&'a str, &'a str) {
    let found = status.conditions.iter().find(|c| c.type_ == type_).expect("the condition");
    (found.status.as_str(), found.reason.as_str())
}

#[test]
fn the_plan_says_whether_existing_capacity_holds_each_buffer() {
    let buffer = buffer_of_chunks(3);
    let keys = keys(&buffer);
    let mut plan = Plan { existing: keys.iter().map(|k| (k.clone(), "node-a".into())).collect(), ..Plan::default() };
    plan.existing.push(("shop/real-pod".into(), "node-a".into()));
    assert_eq!(outcomes(&plan).get(&("shop".into(), "checkout".into())), Some(&Provisioning::Fits));
    assert_eq!(outcomes(&plan).len(), 1, "real pods belong to no buffer");

    plan.existing.truncate(1);
    plan.new_claims.push(NewNodeClaim {
        nodepool: "general".into(),
        requirements: Default::default(),
        instance_types: vec![],
        requests: Default::default(),
        pods: keys[1..].to_vec(),
        price: 0.1,
        sizing: crate::scheduling::solver::Sizing::BestValue,
        min_values_relaxed: false,
    });
    assert_eq!(outcomes(&plan).get(&("shop".into(), "checkout".into())), Some(&Provisioning::Launching(2)));

    plan.unschedulable.push((keys[2].clone(), "no pool fits".into()));
    let unschedulable = Provisioning::Unschedulable { chunks: 1, reason: "no pool fits".into() };
    assert_eq!(outcomes(&plan).get(&("shop".into(), "checkout".into())), Some(&unschedulable));
}

#[test]
fn status_reports_resolution_provisioning_and_readiness() {
    let buffer = buffer_of_chunks(3);
    let resolution = resolved(&buffer);
    let held = status(&buffer, &resolution, Some(&Provisioning::Fits));
    assert_eq!(held.replicas, Some(3));
    assert_eq!(held.pod_template_ref.as_ref().map(|r| r.name.as_str()), Some("chunk"));
    assert_eq!(held.pod_template_generation, Some(7));
    assert_eq!(held.provisioning_strategy.as_deref(), Some("buffer.x-k8s.io/active-capacity"));
    assert_eq!(condition(&held, READY_FOR_PROVISIONING), ("True", "Resolved"));
    assert_eq!(condition(&held, PROVISIONING), ("True", "FitsExistingCapacity"));
    assert_eq!(condition(&held, condition::READY), ("True", "FitsExistingCapacity"));
    let message = &held.conditions.iter().find(|c| c.type_ == READY_FOR_PROVISIONING).unwrap().message;
    assert_eq!(message, "3 chunks of cpu 2, memory 4Gi");
    assert!(held.conditions.iter().all(|c| c.observed_generation == Some(3)));

    let launching = status(&buffer, &resolution, Some(&Provisioning::Launching(2)));
    assert_eq!(condition(&launching, PROVISIONING), ("True", "RequiresNewCapacity"));
    assert_eq!(condition(&launching, condition::READY), ("False", "RequiresNewCapacity"));

    // Applied and read back, the same status is equal: no write on the next pass.
    let mut applied = buffer.clone();
    applied.status = Some(held.clone());
    assert_eq!(status(&applied, &resolution, Some(&Provisioning::Fits)), held);

    let missing = status(&buffer, &Err(Unresolved::PodTemplateNotFound("chunk".into())), None);
    assert_eq!(condition(&missing, READY_FOR_PROVISIONING), ("False", "PodTemplateNotFound"));
    assert_eq!(condition(&missing, PROVISIONING), ("False", "NotReadyForProvisioning"));
    assert_eq!(missing.replicas, None);

    let empty = buffer_of_chunks(0);
    let resolution = resolved(&empty);
    assert_eq!(condition(&status(&empty, &resolution, None), condition::READY), ("True", "BufferEmpty"));
}

#[test]
fn an_answer_holds_only_for_the_chunks_it_simulated() {
    let buffer = buffer_of_chunks(2);
    let resolution = resolved(&buffer).expect("resolved");
    let pods: Vec<_> = virtual_pods("shop", "checkout", &resolution).collect();
    let input = crate::scheduling::solver::Input { pods: pods.clone(), ..Default::default() };
    let plan = Plan { existing: pods.iter().map(|p| (p.key.clone(), "node-a".into())).collect(), ..Plan::default() };
    let recorded = Outcomes::default();
    recorded.record(&input, &plan);
    let simulated = recorded.get("shop", "checkout").expect("an answer");
    assert_eq!(simulated.for_chunks(&resolution), Some(&Provisioning::Fits));
    // Resized since: the answer was for two chunks, not three.
    let grown = resolved(&buffer_of_chunks(3)).expect("resolved");
    assert_eq!(simulated.for_chunks(&grown), None);
    // The next simulation without the buffer's pods forgets it.
    recorded.record(&Default::default(), &Plan::default());
    assert_eq!(recorded.get("shop", "checkout"), None);
}
