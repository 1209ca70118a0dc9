//! Karpenter's scheduling benchmark shape (its `scheduling_benchmark_test.go`), as stoker
//! rebuilds it: 400 synthetic instance types and six equal groups of pods with a fixed seed.
//! Used by the criterion benchmark.

#![allow(dead_code)] // each user takes a different part

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use stoker::{
    apis::labels,
    scheduling::{
        catalog::{InstanceType, Offering},
        pod::PodInfo,
        requirements::Requirements,
        resources::{CPU, MEMORY, PODS, Resources},
        solver::{Input, NodePoolTemplate},
    },
};

pub const ZONES: [&str; 3] = ["test-zone-1", "test-zone-2", "test-zone-3"];
const GIB: i64 = 1 << 30;

/// Type i (from 0) has i+1 vCPU, 2(i+1) GiB and 10(i+1) pods, costs 0.1 per vCPU plus 0.1 per
/// GiB an hour, offered as spot in zones 1-2 and on-demand in zones 1-3 at that one price.
/// Allocatable equals capacity, as in Karpenter's fake instance types.
pub fn instance_types(count: usize) -> Vec<InstanceType> {
    (0..count as i64)
        .map(|i| {
            let (cpu, gib) = (i + 1, 2 * (i + 1));
            let name = format!("fake-it-{i}");
            let mut capacity = Resources::new();
            capacity.set(CPU, cpu * 1000);
            capacity.set(MEMORY, gib * GIB);
            capacity.set(PODS, 10 * (i + 1));
            let price = 0.1 * cpu as f64 + 0.1 * gib as f64;
            let offer = |zone: &str, capacity_type: &str| Offering {
                zone: zone.into(),
                zone_id: String::new(),
                capacity_type: capacity_type.into(),
                price,
                available: true,
                reservation_id: None,
                capacity_block: false,
            };
            let mut offerings: Vec<Offering> = ZONES[..2].iter().map(|z| offer(z, "spot")).collect();
            offerings.extend(ZONES.iter().map(|z| offer(z, "on-demand")));
            let labels = [
                (labels::INSTANCE_TYPE.to_string(), name.clone()),
                (labels::ARCH.to_string(), "amd64".to_string()),
                (labels::OS.to_string(), "linux".to_string()),
            ]
            .into();
            InstanceType::new(name, labels, capacity.clone(), capacity, offerings)
        })
        .collect()
}

/// A deterministic generator (xorshift64*), so every run sees the same pods.
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const CPUS: [&str; 5] = ["100m", "250m", "500m", "1000m", "1500m"];
const MEMORIES: [&str; 6] = ["100Mi", "256Mi", "512Mi", "1024Mi", "2048Mi", "4096Mi"];
const VALUES: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];

fn pod(random: &mut Random, name: String, labels: serde_json::Value, extra: serde_json::Value) -> PodInfo {
    let mut spec = json!({"containers": [{"name": "app", "resources": {"requests": {
        "cpu": random.pick(&CPUS), "memory": random.pick(&MEMORIES)}}}]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": spec,
    }))
    .expect("a pod");
    PodInfo::from_pod(&pod).expect("valid requests")
}

fn spread(key: &str, value: &str) -> serde_json::Value {
    json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"my-label": value}}}]})
}

fn affinity(kind: &str, key: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({"affinity": {kind: {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": key, "labelSelector": {"matchLabels": labels}}]}}})
}

/// `count` pods in six equal groups: plain; zone spread; hostname spread; hostname affinity;
/// zone affinity; hostname anti-affinity among the whole group. The remainder is plain.
pub fn pods(count: usize, seed: u64) -> Vec<PodInfo> {
    let mut random = Random::new(seed);
    let per_group = count / 6;
    let mut pods = Vec::with_capacity(count);
    let next = |random: &mut Random, group: usize| -> PodInfo {
        let name = format!("pod-{group}");
        let value = *random.pick(&VALUES);
        match group {
            1 => pod(random, name, json!({"my-label": value}), spread(labels::ZONE, value)),
            2 => pod(random, name, json!({"my-label": value}), spread(labels::HOSTNAME, value)),
            3 => pod(
                random,
                name,
                json!({"my-affininity": value}),
                affinity("podAffinity", labels::HOSTNAME, json!({"my-affininity": value})),
            ),
            4 => pod(
                random,
                name,
                json!({"my-affininity": value}),
                affinity("podAffinity", labels::ZONE, json!({"my-affininity": value})),
            ),
            5 => pod(
                random,
                name,
                json!({"app": "nginx"}),
                affinity("podAntiAffinity", labels::HOSTNAME, json!({"app": "nginx"})),
            ),
            _ => pod(random, name, json!({}), json!({})),
        }
    };
    for group in 0..6 {
        for _ in 0..per_group {
            pods.push(next(&mut random, group));
        }
    }
    while pods.len() < count {
        pods.push(next(&mut random, 0));
    }
    // Unique names, so the plan can refer to each pod.
    for (index, pod) in pods.iter_mut().enumerate() {
        pod.key = format!("default/pod-{index}");
    }
    pods
}

/// One NodePool with no requirements or limits, over every instance type.
pub fn input(pods: Vec<PodInfo>, instance_types: Vec<InstanceType>) -> Input {
    let mut requirements = Requirements::new();
    requirements.add(labels::NODEPOOL, stoker::scheduling::requirements::Requirement::one_of(["default"]));
    let pool = NodePoolTemplate {
        name: "default".into(),
        weight: 0,
        requirements,
        taints: vec![],
        instance_types: (0..instance_types.len()).collect(),
        daemon_overhead: Resources::new(),
        remaining: None,
    };
    Input {
        pods: pods.into_iter().map(std::sync::Arc::new).collect(),
        pools: vec![pool],
        instance_types: instance_types.into(),
        ..Default::default()
    }
}
