//! The scheduling simulation on Karpenter's benchmark shape: pods per second, nodes opened and the
//! cost against its lower bound, at 100 to 20,000 pods, on Karpenter's 400 synthetic instance
//! types and on the real us-east-1 catalog snapshot (every type × zones a-c × spot and on-demand).
//! `hack/bench-scheduling.sh` runs it and records the figures.

#[path = "support/karpenter_shape.rs"]
mod karpenter_shape;
#[path = "support/real_catalog.rs"]
mod real_catalog;

use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use stoker::scheduling::{lower_bound::plan_lower_bound, solver::solve};

const SIZES: [usize; 5] = [100, 1_000, 5_000, 10_000, 20_000];

/// Every size when benchmarking; the two smallest when `cargo test` runs the benchmark once as a
/// smoke test of its code (a debug build, where 20,000 pods alone take seconds).
fn sizes() -> &'static [usize] {
    if std::env::args().any(|arg| arg == "--bench") { &SIZES } else { &SIZES[..2] }
}

fn scheduling(c: &mut Criterion) {
    for (name, instance_types) in
        [("karpenter-shape", karpenter_shape::instance_types(400)), ("real-catalog", real_catalog::instance_types())]
    {
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        for &size in sizes() {
            let input = karpenter_shape::input(karpenter_shape::pods(size, 42), instance_types.clone());
            // One timed run outside criterion, to print the figures a reader wants at a glance.
            let started = Instant::now();
            let plan = solve(&input);
            let seconds = started.elapsed().as_secs_f64();
            let cost: f64 = plan.new_claims.iter().map(|c| c.price).sum();
            let bound = plan_lower_bound(&input, &plan);
            println!(
                "{name} pods={size} types={} nodes={} unschedulable={} pods_per_second={:.0} cost_per_hour={cost:.2} lower_bound={bound:.2} cost_ratio={:.2}",
                input.instance_types.len(),
                plan.new_claims.len(),
                plan.unschedulable.len(),
                size as f64 / seconds,
                cost / bound,
            );
            group.throughput(Throughput::Elements(size as u64));
            group.bench_with_input(BenchmarkId::from_parameter(size), &input, |b, input| b.iter(|| solve(input)));
        }
        group.finish();
    }
}

criterion_group!(benches, scheduling);
criterion_main!(benches);
