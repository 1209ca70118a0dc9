//! What plans cost on the real catalog: for each workload mix and NodePool shape, the plan's
//! $/hour (and what first fit alone, without re-packing, would cost), its nodes, the types it
//! opens and its ratio to the lower bound, with the solve time measured by criterion. `hack/bench-plans.sh` runs it and records the figures.
//!
//! Mixes: Karpenter's e2e performance scenarios "basic" (500 pods of 900m/3100Mi and 500 of
//! 3500m/28Gi), "wide deployments" (30 deployments, zone spread on all, hostname anti-affinity on
//! three and hostname spread on three more) and "hostname spreading" (basic with the small pods
//! spread over hostnames); the diverse six-group mix of the scheduling benchmark; a CPU-heavy mix,
//! alone and with each Deployment spread over zones; a memory-heavy mix. NodePools: on-demand
//! amd64 with no other requirement; the same limited to the c, m and r categories; and a spot
//! pool (weight 100) over an on-demand one (weight 0), with spot priced 30–70% of on-demand per
//! type (a fixed pseudo-random discount, as live prices vary).

#[path = "support/karpenter_shape.rs"]
mod karpenter_shape;
#[path = "support/real_catalog.rs"]
mod real_catalog;

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use stoker::{
    apis::labels,
    scheduling::{
        catalog::InstanceType,
        lower_bound::plan_lower_bound,
        pod::PodInfo,
        requirements::{Requirement, Requirements},
        resources::{CPU, MEMORY, Resources},
        solver::{Input, Memo, NodePoolTemplate, solve, solve_without_repack},
    },
};

/// DaemonSet requests on every node (VPC CNI, kube-proxy, the EBS CSI node plugin).
const DAEMON_CPU: i64 = 200;
const DAEMON_MEMORY: i64 = 256 << 20;

struct Deployment {
    name: String,
    replicas: usize,
    cpu: &'static str,
    memory: &'static str,
    /// Extra pod spec fields (affinity, topology spread).
    spec: Value,
}

fn deployment(name: &str, replicas: usize, cpu: &'static str, memory: &'static str, spec: Value) -> Deployment {
    Deployment { name: name.into(), replicas, cpu, memory, spec }
}

fn spread(key: &str, app: &str) -> Value {
    json!({"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": app}}})
}

fn anti_affinity(app: &str) -> Value {
    json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": labels::HOSTNAME, "labelSelector": {"matchLabels": {"app": app}}}]}})
}

fn pods_of(deployments: &[Deployment]) -> Vec<Arc<PodInfo>> {
    let mut pods = Vec::new();
    for d in deployments {
        let mut spec =
            json!({"containers": [{"name": "app", "resources": {"requests": {"cpu": d.cpu, "memory": d.memory}}}]});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), d.spec.as_object()) {
            spec.extend(extra.clone());
        }
        for replica in 0..d.replicas {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("{}-{replica}", d.name), "namespace": "default", "labels": {"app": d.name}},
                "spec": spec,
            }))
            .expect("a pod");
            pods.push(Arc::new(PodInfo::from_pod(&pod).expect("valid requests")));
        }
    }
    pods
}

fn basic(small_spec: Value) -> Vec<Arc<PodInfo>> {
    pods_of(&[
        deployment("small-resource-app", 500, "900m", "3100Mi", small_spec),
        deployment("large-resource-app", 500, "3500m", "28Gi", json!({})),
    ])
}

fn wide() -> Vec<Arc<PodInfo>> {
    const CPUS: [&str; 30] = [
        "250m", "500m", "750m", "1000m", "1500m", "2000m", "2500m", "3000m", "3500m", "4000m", "2500m", "1000m",
        "1500m", "3000m", "1800m", "2000m", "3500m", "4000m", "250m", "500m", "750m", "1000m", "1500m", "2000m",
        "2500m", "3000m", "3500m", "4000m", "3500m", "3000m",
    ];
    const MEMORIES: [&str; 30] = [
        "300Mi", "500Mi", "750Mi", "1Gi", "2Gi", "4Gi", "8Gi", "4Gi", "16Gi", "10Gi", "64Gi", "30Gi", "32Gi", "32Gi",
        "30Gi", "20Gi", "30Gi", "300Mi", "500Mi", "750Mi", "1Gi", "2Gi", "4Gi", "8Gi", "16Gi", "32Gi", "28Gi", "64Gi",
        "13Gi", "24Gi",
    ];
    let deployments: Vec<Deployment> = (0..30)
        .map(|i| {
            let name = format!("wide-deployment-{}", i + 1);
            let mut constraints = vec![spread(labels::ZONE, &name)];
            if (3..6).contains(&i) {
                constraints.push(spread(labels::HOSTNAME, &name));
            }
            let mut spec = json!({"topologySpreadConstraints": constraints});
            if i < 3 {
                spec["affinity"] = anti_affinity(&name);
            }
            deployment(&name, if i < 20 { 35 } else { 30 }, CPUS[i], MEMORIES[i], spec)
        })
        .collect();
    pods_of(&deployments)
}

/// `zonal`: each Deployment also spread over zones, as production Deployments usually are.
fn cpu_heavy(zonal: bool) -> Vec<Arc<PodInfo>> {
    let spec = |app: &str| match zonal {
        true => json!({"topologySpreadConstraints": [spread(labels::ZONE, app)]}),
        false => json!({}),
    };
    pods_of(&[
        deployment("encode", 400, "2", "1Gi", spec("encode")),
        deployment("compute", 400, "4", "2Gi", spec("compute")),
        deployment("batch", 200, "1500m", "512Mi", spec("batch")),
    ])
}

fn memory_heavy() -> Vec<Arc<PodInfo>> {
    pods_of(&[
        deployment("cache", 400, "500m", "8Gi", json!({})),
        deployment("analytics", 400, "1", "16Gi", json!({})),
        deployment("index", 200, "250m", "6Gi", json!({})),
    ])
}

fn diverse() -> Vec<Arc<PodInfo>> {
    karpenter_shape::pods(1_000, 42).into_iter().map(Arc::new).collect()
}

fn pool(name: &str, weight: i32, types: usize, extra: &[(&str, &[&str])]) -> NodePoolTemplate {
    let mut requirements = Requirements::new();
    requirements.add(labels::NODEPOOL, Requirement::one_of([name]));
    requirements.add(labels::ARCH, Requirement::one_of(["amd64"]));
    for (key, values) in extra {
        requirements.add(key, Requirement::one_of(values.iter().copied()));
    }
    let mut daemon_overhead = Resources::new();
    daemon_overhead.set(CPU, DAEMON_CPU);
    daemon_overhead.set(MEMORY, DAEMON_MEMORY);
    NodePoolTemplate {
        name: name.into(),
        weight,
        requirements,
        taints: vec![],
        instance_types: (0..types).collect(),
        daemon_overhead,
        remaining: None,
    }
}

/// Spot at 30–70% of on-demand, the fraction fixed per type by a hash of its name.
fn with_spot_discounts(types: &[InstanceType]) -> Vec<InstanceType> {
    types
        .iter()
        .map(|instance| {
            let hash = instance
                .name
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
            let fraction = 0.3 + 0.4 * (hash % 1000) as f64 / 1000.0;
            let mut instance = instance.clone();
            for offering in &mut instance.offerings {
                if offering.capacity_type == labels::CAPACITY_TYPE_SPOT {
                    offering.price *= fraction;
                }
            }
            instance
        })
        .collect()
}

fn pools(shape: &str, types: usize) -> Vec<NodePoolTemplate> {
    let on_demand: (&str, &[&str]) = (labels::CAPACITY_TYPE, &[labels::CAPACITY_TYPE_ON_DEMAND]);
    match shape {
        "any" => vec![pool("default", 0, types, &[on_demand])],
        "cmr" => vec![pool("default", 0, types, &[on_demand, (labels::INSTANCE_CATEGORY, &["c", "m", "r"])])],
        _ => vec![
            pool("spot", 100, types, &[(labels::CAPACITY_TYPE, &[labels::CAPACITY_TYPE_SPOT])]),
            pool("on-demand", 0, types, &[on_demand]),
        ],
    }
}

fn plans(c: &mut Criterion) {
    let catalog = real_catalog::instance_types();
    let spot_catalog: Arc<[InstanceType]> = with_spot_discounts(&catalog).into();
    let catalog: Arc<[InstanceType]> = catalog.into();
    let mixes: [(&str, Vec<Arc<PodInfo>>); 7] = [
        ("basic", basic(json!({}))),
        ("wide-deployments", wide()),
        (
            "hostname-spreading",
            basic(json!({"topologySpreadConstraints": [spread(labels::HOSTNAME, "small-resource-app")]})),
        ),
        ("diverse", diverse()),
        ("cpu-heavy", cpu_heavy(false)),
        ("cpu-heavy-zonal", cpu_heavy(true)),
        ("memory-heavy", memory_heavy()),
    ];
    let mut group = c.benchmark_group("plans");
    group.sample_size(10);
    for (mix, pods) in &mixes {
        for shape in ["any", "cmr", "spot-over-on-demand"] {
            let instance_types = if shape == "spot-over-on-demand" { spot_catalog.clone() } else { catalog.clone() };
            let input = Input {
                pods: pods.clone(),
                pools: pools(shape, instance_types.len()),
                instance_types,
                ..Default::default()
            };
            let started = Instant::now();
            let plan = solve(&input);
            let seconds = started.elapsed().as_secs_f64();
            let cost: f64 = plan.new_claims.iter().map(|claim| claim.price).sum();
            let first_fit: f64 =
                solve_without_repack(&input, &mut Memo::default()).new_claims.iter().map(|claim| claim.price).sum();
            let bound = plan_lower_bound(&input, &plan);
            let mut opened: BTreeMap<&str, usize> = BTreeMap::new();
            for claim in &plan.new_claims {
                *opened.entry(claim.instance_types.first().map_or("none", String::as_str)).or_default() += 1;
            }
            let mut opened: Vec<(&str, usize)> = opened.into_iter().collect();
            opened.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let types: Vec<String> = opened.iter().take(4).map(|(name, count)| format!("{count}x{name}")).collect();
            println!(
                "mix={mix} pools={shape} pods={} nodes={} unschedulable={} cost_per_hour={cost:.2} without_repack={first_fit:.2} lower_bound={bound:.2} ratio={:.2} solve_ms={:.1} types={}",
                input.pods.len(),
                plan.new_claims.len(),
                plan.unschedulable.len(),
                cost / bound,
                seconds * 1e3,
                types.join(","),
            );
            group.bench_with_input(BenchmarkId::new(*mix, shape), &input, |b, input| b.iter(|| solve(input)));
        }
    }
    group.finish();
}

criterion_group!(benches, plans);
criterion_main!(benches);
