//! Decoding the pod watch: a page of 500 running pods, as the API server lists them, decoded and
//! turned into the cache's `CachedPod`s, through the whole `Pod` type and through the lean
//! `WatchedPod` the controller's watch uses. The pod (`support/running-pod.json`) is a
//! Deployment's pod as the local control plane served it during the race against Karpenter
//! (managed fields, the projected token volume, container statuses included).

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use stoker::{
    scheduling::shapes::Shapes,
    state::{cache::CachedPod, watched_pod::WatchedPod},
};

const PAGE: usize = 500;

/// A list page of `PAGE` pods, each with its own name and UID, as JSON.
fn page() -> String {
    let pod: Value = serde_json::from_str(include_str!("support/running-pod.json")).expect("a pod");
    let items: Vec<Value> = (0..PAGE)
        .map(|index| {
            let mut pod = pod.clone();
            pod["metadata"]["name"] = format!("app-{index:04}").into();
            pod["metadata"]["uid"] = format!("00000000-0000-0000-0000-{index:012}").into();
            pod
        })
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}).to_string()
}

#[derive(serde::Deserialize)]
struct List<T> {
    items: Vec<T>,
}

fn decode(c: &mut Criterion) {
    let page = page();
    let mut group = c.benchmark_group("watch decode 500 pods");
    group.bench_function("whole Pod", |b| {
        b.iter(|| {
            let mut shapes = Shapes::default();
            let list: List<Pod> = serde_json::from_str(&page).expect("a list");
            list.items.into_iter().map(|pod| CachedPod::new(pod, &mut shapes)).count()
        })
    });
    group.bench_function("WatchedPod", |b| {
        b.iter(|| {
            let mut shapes = Shapes::default();
            let list: List<WatchedPod> = serde_json::from_str(&page).expect("a list");
            list.items.into_iter().map(|pod| CachedPod::new(pod.into(), &mut shapes)).count()
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
