//! The scheduling simulation on Karpenter's benchmark shape: pods per second and nodes opened, at
//! 100 to 20,000 pods. `hack/bench-scheduling.sh` runs it and records the figures.

#[path = "support/karpenter_shape.rs"]
mod karpenter_shape;

use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use stoker::scheduling::solver::solve;

const SIZES: [usize; 5] = [100, 1_000, 5_000, 10_000, 20_000];

fn karpenter_benchmark_shape(c: &mut Criterion) {
    let mut group = c.benchmark_group("karpenter-shape");
    group.sample_size(10);
    for size in SIZES {
        let input = karpenter_shape::input(karpenter_shape::pods(size, 42), karpenter_shape::instance_types(400));
        // One timed run outside criterion, to print the figures a reader wants at a glance.
        let started = Instant::now();
        let plan = solve(&input);
        let seconds = started.elapsed().as_secs_f64();
        let cost: f64 = plan.new_claims.iter().map(|c| c.price).sum();
        println!(
            "karpenter-shape pods={size} nodes={} unschedulable={} pods_per_second={:.0} cost_per_hour={cost:.2}",
            plan.new_claims.len(),
            plan.unschedulable.len(),
            size as f64 / seconds,
        );
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &input, |b, input| b.iter(|| solve(input)));
    }
    group.finish();
}

criterion_group!(benches, karpenter_benchmark_shape);
criterion_main!(benches);
