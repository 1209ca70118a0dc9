//! The scheduling simulation on Karpenter's benchmark shape: pods per second, nodes opened and the
//! cost against its lower bound, at 100 to 20,000 pods, on Karpenter's 400 synthetic instance
//! types and on the real us-east-1 catalog snapshot (every type × zones a-c × spot and on-demand).
//! `hack/bench-scheduling.sh` runs it and records the figures.
//!
//! With `STOKER_H2H_DIR` set it runs the identical-input comparison instead
//! (`hack/bench-scheduling-vs-karpenter.sh`): it writes the real catalog there for Karpenter's
//! scheduler, then solves the pods Karpenter's own generator wrote (`pods-N.json`, sizes in
//! `STOKER_H2H_SIZES`) on Karpenter's exported types and on the real catalog.

#[path = "support/interchange.rs"]
mod interchange;
#[path = "support/karpenter_shape.rs"]
mod karpenter_shape;
#[path = "support/real_catalog.rs"]
mod real_catalog;

use std::{path::Path, time::Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use stoker::scheduling::{
    lower_bound::plan_lower_bound,
    solver::{Input, solve},
};

const SIZES: [usize; 5] = [100, 1_000, 5_000, 10_000, 20_000];

/// Every size when benchmarking; the two smallest when `cargo test` runs the benchmark once as a
/// smoke test of its code (a debug build, where 20,000 pods alone take seconds).
fn sizes() -> &'static [usize] {
    if std::env::args().any(|arg| arg == "--bench") { &SIZES } else { &SIZES[..2] }
}

/// Prints the plan's figures (one timed run outside criterion, what a reader wants at a glance),
/// then lets criterion measure the solve.
fn measure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, name: &str, input: &Input) {
    let size = input.pods.len();
    let started = Instant::now();
    let plan = solve(input);
    let seconds = started.elapsed().as_secs_f64();
    let cost: f64 = plan.new_claims.iter().map(|c| c.price).sum();
    let bound = plan_lower_bound(input, &plan);
    println!(
        "{name} pods={size} types={} nodes={} unschedulable={} pods_per_second={:.0} cost_per_hour={cost:.4} lower_bound={bound:.2} cost_ratio={:.2}",
        input.instance_types.len(),
        plan.new_claims.len(),
        plan.unschedulable.len(),
        size as f64 / seconds,
        cost / bound,
    );
    group.throughput(Throughput::Elements(size as u64));
    group.bench_with_input(BenchmarkId::from_parameter(size), input, |b, input| b.iter(|| solve(input)));
}

fn scheduling(c: &mut Criterion) {
    if let Some(dir) = std::env::var_os("STOKER_H2H_DIR") {
        return identical_input(c, Path::new(&dir));
    }
    for (name, instance_types) in
        [("karpenter-shape", karpenter_shape::instance_types(400)), ("real-catalog", real_catalog::instance_types())]
    {
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        for &size in sizes() {
            let input = karpenter_shape::input(karpenter_shape::pods(size, 42), instance_types.clone());
            measure(&mut group, name, &input);
        }
        group.finish();
    }
}

/// Karpenter's exact benchmark pods on its exported fake types and on stoker's real catalog.
fn identical_input(c: &mut Criterion, dir: &Path) {
    let real_catalog = real_catalog::instance_types();
    interchange::write_types(&dir.join("types-real-catalog.json"), &real_catalog);
    let sizes: Vec<usize> = std::env::var("STOKER_H2H_SIZES")
        .expect("STOKER_H2H_SIZES")
        .split_whitespace()
        .map(|size| size.parse().expect("STOKER_H2H_SIZES holds pod counts"))
        .collect();
    for (name, instance_types) in [
        ("identical-karpenter-types", interchange::read_types(&dir.join("types-karpenter.json"))),
        ("identical-real-catalog", real_catalog),
    ] {
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        for &size in &sizes {
            let pods = interchange::read_pods(&dir.join(format!("pods-{size}.json")));
            measure(&mut group, name, &karpenter_shape::input(pods, instance_types.clone()));
        }
        group.finish();
    }
}

criterion_group!(benches, scheduling);
criterion_main!(benches);
