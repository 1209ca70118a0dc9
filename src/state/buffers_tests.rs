use serde_json::json;

use super::*;
use crate::scheduling::resources::{CPU, MEMORY};

fn buffer(spec: serde_json::Value) -> CapacityBuffer {
    serde_json::from_value(json!({
        "apiVersion": "autoscaling.x-k8s.io/v1beta1", "kind": "CapacityBuffer",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": spec
    }))
    .expect("a CapacityBuffer")
}

fn template(cpu: &str) -> PodTemplateSpec {
    serde_json::from_value(json!({
        "metadata": {"labels": {"app": "checkout"}, "annotations": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]}
    }))
    .expect("a template")
}

fn workload(cpu: &str, replicas: i32) -> Result<Referenced, Unresolved> {
    Ok(Referenced { template: template(cpu), workload_replicas: Some(replicas), pod_template: None })
}

fn replicas(spec: serde_json::Value, referenced: Result<Referenced, Unresolved>) -> i32 {
    resolve(&buffer(spec), referenced).expect("resolved").replicas
}

#[test]
fn replicas_percentage_and_limits_combine_as_the_api_says() {
    let scalable = json!({"kind": "Deployment", "name": "checkout"});
    assert_eq!(replicas(json!({"scalableRef": scalable, "replicas": 3}), workload("1", 10)), 3);
    // 20% of 10 is 2; 20% of 1 rounds up to 1; the larger of replicas and percentage.
    assert_eq!(replicas(json!({"scalableRef": scalable, "percentage": 20}), workload("1", 10)), 2);
    assert_eq!(replicas(json!({"scalableRef": scalable, "percentage": 20}), workload("1", 1)), 1);
    assert_eq!(replicas(json!({"scalableRef": scalable, "percentage": 20}), workload("1", 0)), 0);
    assert_eq!(replicas(json!({"scalableRef": scalable, "percentage": 20, "replicas": 5}), workload("1", 10)), 5);
    assert_eq!(replicas(json!({"scalableRef": scalable, "percentage": 50, "replicas": 1}), workload("1", 10)), 5);
    // Limits cap the count, or set it alone: 10 CPU holds four 2.5-CPU chunks.
    let limited = json!({"scalableRef": scalable, "percentage": 100, "limits": {"cpu": "10"}});
    assert_eq!(replicas(limited, workload("2500m", 10)), 4);
    assert_eq!(
        replicas(json!({"scalableRef": scalable, "limits": {"cpu": "10", "memory": "3Gi"}}), workload("1", 9)),
        3
    );
    // A limit on nothing the chunk requests does not count.
    assert_eq!(
        replicas(json!({"scalableRef": scalable, "replicas": 2, "limits": {"nvidia.com/gpu": "1"}}), workload("1", 9)),
        2
    );
    assert_eq!(replicas(json!({"scalableRef": scalable}), workload("1", 9)), 0);
}

#[test]
fn huge_counts_are_capped_and_nothing_overflows() {
    let scalable = json!({"kind": "Deployment", "name": "checkout"});
    let resolved = resolve(
        &buffer(json!({"scalableRef": scalable, "percentage": i32::MAX, "limits": {"cpu": "1000000"}})),
        workload("1m", i32::MAX),
    )
    .expect("resolved");
    assert_eq!((resolved.replicas, resolved.capped), (MAX_CHUNKS, true));
    let negative = resolve(&buffer(json!({"scalableRef": scalable, "limits": {"cpu": "-4"}})), workload("1", 3));
    assert_eq!(negative.expect("resolved").replicas, 0);
}

#[test]
fn virtual_pods_share_the_chunk_shape_and_trace_back_to_their_buffer() {
    let resolved = resolve(&buffer(json!({"podTemplateRef": {"name": "t"}, "replicas": 3})), workload("1500m", 1))
        .expect("resolved");
    let pods: Vec<Arc<PodInfo>> = virtual_pods("shop", "checkout", &resolved).collect();
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| p.placeholder && Arc::ptr_eq(&p.shape, &pods[0].shape)));
    assert_eq!(pods[0].requests.get(CPU), 1500);
    assert_eq!(pods[0].requests.get(MEMORY), 1 << 30);
    assert_eq!(pods[0].labels.get("app").map(String::as_str), Some("checkout"));
    assert_eq!(pods[0].namespace, "shop");
    let keys: std::collections::BTreeSet<&str> = pods.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys.len(), 3);
    assert!(pods.iter().all(|p| buffer_of(&p.key) == Some(("shop", "checkout"))));
    assert_eq!(buffer_of("shop/checkout-7d9f-abcde"), None, "a real pod belongs to no buffer");
}

#[test]
fn what_cannot_be_resolved_says_why() {
    let missing = resolve(
        &buffer(json!({"podTemplateRef": {"name": "gone"}, "replicas": 1})),
        Err(Unresolved::PodTemplateNotFound("gone".into())),
    );
    assert_eq!(missing.as_ref().map_err(Unresolved::reason).err(), Some("PodTemplateNotFound"));
    let empty = Referenced { template: PodTemplateSpec::default(), workload_replicas: Some(1), pod_template: None };
    let no_spec =
        resolve(&buffer(json!({"scalableRef": {"kind": "Deployment", "name": "x"}, "replicas": 1})), Ok(empty));
    assert_eq!(no_spec.err(), Some(Unresolved::NoPodSpec));
    let bad_limit = resolve(
        &buffer(json!({"scalableRef": {"kind": "Deployment", "name": "x"}, "limits": {"cpu": "lots"}})),
        workload("1", 1),
    );
    assert!(matches!(bad_limit, Err(Unresolved::Limits(_))), "{bad_limit:?}");
}

#[test]
fn a_steady_replica_set_resolves_from_the_one_replica_set_watch() {
    use kube::runtime::{reflector, watcher};

    fn store<K>(objects: Vec<K>) -> Store<K>
    where
        K: kube::Resource + Clone + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(object));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        store
    }
    // Every pod exists: the provisioner's own trimming would drop the template here.
    let set: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "checkout-7d9c5", "namespace": "shop", "uid": "u1"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "checkout"}}, "template": template("1500m")},
        "status": {"replicas": 4}
    }))
    .expect("a ReplicaSet");
    let sources = BufferSources {
        buffers: store(vec![]),
        pod_templates: store(vec![]),
        deployments: store(vec![]),
        stateful_sets: store(vec![]),
        replica_sets: store(vec![crate::state::cache::replica_set_with_template(set)]),
    };
    let reference = ScalableRef { api_group: "apps".into(), kind: "ReplicaSet".into(), name: "checkout-7d9c5".into() };
    let referenced = sources.referenced_by("shop", None, Some(&reference)).expect("found");
    assert_eq!(referenced.workload_replicas, Some(4));
    let resolved = resolve(&buffer(json!({"scalableRef": reference, "percentage": 50})), Ok(referenced));
    let resolved = resolved.expect("resolved");
    assert_eq!(resolved.replicas, 2);
    assert_eq!(resolved.chunk.requests.get(CPU), 1500, "the template's requests");
}
