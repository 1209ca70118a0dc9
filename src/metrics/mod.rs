//! Prometheus metrics (prefix `stoker_`, and the standard `process_*` from `process`): one registry, the label sets, and small helpers the
//! controllers and the cloud provider record through. A leaf: it knows the API types and the
//! scheduling resources, nothing that uses it. `operator::server` serves it over HTTP.

mod process;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64},
    },
};

use kube::ResourceExt;
use prometheus_client::{
    encoding::{
        EncodeLabelSet,
        text::{encode_eof, encode_registry},
    },
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Metric, Registry},
};

use crate::{
    apis::{NodeClaim, labels},
    scheduling::{quantity::scale_of, resources::Resources},
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodePoolLabels {
    pub nodepool: String,
}

/// A NodeClaim's pool and capacity type (empty until launched).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabels {
    pub nodepool: String,
    pub capacity_type: String,
}

impl ClaimLabels {
    pub fn of(claim: &NodeClaim) -> Self {
        let capacity_type = claim.status.as_ref().and_then(|s| s.capacity_type.clone());
        Self {
            nodepool: claim.labels().get(labels::NODEPOOL).cloned().unwrap_or_default(),
            capacity_type: capacity_type
                .or_else(|| claim.labels().get(labels::CAPACITY_TYPE).cloned())
                .unwrap_or_default(),
        }
    }
}

/// Why stoker itself deleted a NodeClaim.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DisruptionLabels {
    pub nodepool: String,
    pub capacity_type: String,
    pub reason: String,
}

/// A disruption decision carried out: why, and whether its nodes were replaced or only deleted.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub reason: String,
    pub action: String,
}

/// A disruption reason (`Underutilized`, `Drifted`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

/// A cloud provider operation (`create`, `delete`, `list`, ...).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodErrorLabels {
    pub method: String,
    pub code: String,
}

/// A NodePool's resource (`cpu` in cores, `memory` in bytes, `nodes`, ...).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub nodepool: String,
    pub resource: String,
}

/// What stoker did about something (`interrupt`, `remove`, ...).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
}

/// A kind: of stoker object (`NodePool`, `WarmPool`, ...) or of interruption-queue message.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Which controller.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

/// A reconcile (or a periodic controller's pass) and how it ended: `success` or `error`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: String,
    pub result: String,
}

/// A failed reconcile: which controller, and the error's stable label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileErrorLabels {
    pub controller: String,
    pub error: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct WarmPoolLabels {
    pub namespace: String,
    pub warmpool: String,
}

/// Buckets for what should take well under a second: an interruption's reaction.
const QUICK_REACTION: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Which build is running.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

fn cloud_call_histogram() -> Histogram {
    Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

/// Every metric stoker exports.
pub struct Metrics {
    registry: Registry,
    /// The standard `process_*` metrics, unprefixed.
    process: Registry,
    /// Every metric's name as exported (without the `_total`, `_bucket`, ... sample suffixes).
    pub names: Vec<String>,
    pub build_info: Family<BuildLabels, Gauge>,
    pub leader: Gauge,
    pub scheduling_duration: Histogram,
    pub consolidation_duration: Histogram,
    pub pods_pending: Gauge,
    pub pod_provisioning_wait: Histogram,
    pub nodeclaims_created: Family<NodePoolLabels, Counter>,
    pub nodeclaims_launched: Family<ClaimLabels, Counter>,
    pub nodeclaims_registered: Family<ClaimLabels, Counter>,
    pub nodeclaims_initialized: Family<ClaimLabels, Counter>,
    pub nodeclaims_terminated: Family<ClaimLabels, Counter>,
    pub nodeclaims_disrupted: Family<DisruptionLabels, Counter>,
    pub disruption_decisions: Family<DecisionLabels, Counter>,
    pub disruption_candidates: Family<ReasonLabels, Gauge>,
    pub disruption_pods: Family<ReasonLabels, Counter>,
    pub consolidation_savings: Counter<f64, AtomicU64>,
    pub launch_failures: Family<CodeLabels, Counter>,
    pub unavailable_offerings: Gauge,
    pub cloudprovider_duration: HistogramFamily<MethodLabels>,
    pub cloudprovider_errors: Family<MethodErrorLabels, Counter>,
    pub nodepool_usage: Family<ResourceLabels, Gauge<f64, AtomicU64>>,
    pub nodepool_limit: Family<ResourceLabels, Gauge<f64, AtomicU64>>,
    pub warmpool_preemptions: Family<WarmPoolLabels, Counter>,
    pub warmpool_desired: Family<WarmPoolLabels, Gauge>,
    pub warmpool_ready: Family<WarmPoolLabels, Gauge>,
    pub invalid_objects: Family<KindLabels, Counter>,
    pub interruption_messages: Family<KindLabels, Counter>,
    pub interruption_actions: Family<ActionLabels, Counter>,
    pub interruption_message_age: Histogram,
    pub interruption_replacement: Histogram,
    pub interruption_drain: Histogram,
    pub reconcile_errors: Family<ReconcileErrorLabels, Counter>,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: HistogramFamily<ControllerLabels>,
    pub ready: AtomicBool,
    /// The NodePools and WarmPools that have series, so those of deleted ones can be removed
    /// (a Family cannot be iterated).
    exported: Mutex<Exported>,
}

#[derive(Debug, Default)]
struct Exported {
    /// NodePool → the resources its usage and limit gauges name.
    nodepools: BTreeMap<String, BTreeSet<String>>,
    warmpools: BTreeSet<WarmPoolLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Registrar { registry: Registry::with_prefix("stoker"), names: Vec::new() };
        let build_info: Family<BuildLabels, Gauge> =
            metrics.add("build_info", "Always 1, labelled with the running build's version", Family::default());
        build_info.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").into() }).set(1);
        let leader = metrics.add(
            "leader",
            "1 while this replica holds the leader Lease and runs the controllers, else 0",
            Gauge::default(),
        );
        let scheduling_duration = metrics.add(
            "scheduling_duration_seconds",
            "Time the scheduling simulation took for one batch",
            Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        );
        let consolidation_duration = metrics.add(
            "consolidation_duration_seconds",
            "Time one consolidation decision took (candidates, then solver runs without them)",
            Histogram::new([0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        );
        let pods_pending = metrics.add(
            "pods_pending",
            "Provisionable pods in the last batch: the provisioner's queue depth",
            Gauge::default(),
        );
        let pod_provisioning_wait = metrics.add(
            "pods_provisioning_wait_seconds",
            "Time from a provisionable pod's creation until it was scheduled to a node",
            Histogram::new([1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
        );
        let nodeclaims_created =
            metrics.add("nodeclaims_created", "NodeClaims created by the provisioner", Family::default());
        let nodeclaims_launched =
            metrics.add("nodeclaims_launched", "NodeClaims whose instance launched", Family::default());
        let nodeclaims_registered =
            metrics.add("nodeclaims_registered", "NodeClaims whose Node registered", Family::default());
        let nodeclaims_initialized = metrics.add(
            "nodeclaims_initialized",
            "NodeClaims whose Node became ready with its startup taints gone",
            Family::default(),
        );
        let nodeclaims_terminated = metrics.add("nodeclaims_terminated", "NodeClaims terminated", Family::default());
        let nodeclaims_disrupted = metrics.add(
            "nodeclaims_disrupted",
            "NodeClaims stoker deleted, by reason (Empty, Underutilized, Drifted, Expired, Unhealthy, LaunchFailed, RegistrationTimeout, InstanceGone)",
            Family::default(),
        );
        let disruption_decisions = metrics.add(
            "disruption_decisions",
            "Disruption decisions carried out, by reason (Underutilized, Drifted) and action (delete, replace)",
            Family::default(),
        );
        let disruption_candidates = metrics.add(
            "disruption_candidates",
            "Nodes the last disruption pass found disruptable (not blocked or refused), by reason",
            Family::default(),
        );
        let disruption_pods = metrics.add(
            "disruption_pods",
            "Pods on nodes removed by disruption decisions, by reason: what a decision cost workloads",
            Family::default(),
        );
        let consolidation_savings = metrics.add(
            "consolidation_savings_dollars_per_hour",
            "Dollars per hour that carried-out consolidations saved, summed",
            Counter::<f64, AtomicU64>::default(),
        );
        let launch_failures = metrics.add("launch_failures", "Failed launches by AWS error code", Family::default());
        let unavailable_offerings = metrics.add(
            "unavailable_offerings",
            "Offerings and subnets skipped after a capacity error",
            Gauge::default(),
        );
        let cloudprovider_duration: HistogramFamily<MethodLabels> = metrics.add(
            "cloudprovider_duration_seconds",
            "Time of each cloud provider operation, by method",
            Family::new_with_constructor(cloud_call_histogram),
        );
        let cloudprovider_errors = metrics.add(
            "cloudprovider_errors",
            "Failed cloud provider operations, by method and error code",
            Family::default(),
        );
        let nodepool_usage = metrics.add(
            "nodepool_usage",
            "What a NodePool's NodeClaims hold, by resource (cpu in cores, memory in bytes, nodes)",
            Family::default(),
        );
        let nodepool_limit = metrics.add("nodepool_limit", "A NodePool's limits, by resource", Family::default());
        let warmpool_preemptions = metrics.add(
            "warmpool_preemptions",
            "Pause pods preempted by real workloads: cold starts avoided",
            Family::default(),
        );
        let warmpool_desired =
            metrics.add("warmpool_desired_replicas", "Pause pods a WarmPool holds now", Family::default());
        let warmpool_ready =
            metrics.add("warmpool_ready_replicas", "Pause pods of a WarmPool that are ready", Family::default());
        let invalid_objects = metrics.add(
            "invalid_objects",
            "Reports of stoker objects that cannot be decoded and are ignored until fixed, by kind",
            Family::default(),
        );
        let interruption_messages = metrics.add(
            "interruption_messages",
            "Messages received from the interruption queue, by kind (malformed and unknown included)",
            Family::default(),
        );
        let interruption_actions = metrics.add(
            "interruption_actions",
            "What interruption-queue messages led to, per instance: interrupt, remove, record or none",
            Family::default(),
        );
        let interruption_message_age = metrics.add(
            "interruption_message_age_seconds",
            "Age of an interruption-queue message when received, from the event's time",
            Histogram::new([0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]),
        );
        let interruption_replacement = metrics.add(
            "interruption_replacement_seconds",
            "From receiving an interruption message to the replacement NodeClaim its node's pods need created",
            Histogram::new(QUICK_REACTION),
        );
        let interruption_drain = metrics.add(
            "interruption_drain_seconds",
            "From receiving an interruption message to its node's NodeClaim deleted, which starts the drain",
            Histogram::new(QUICK_REACTION),
        );
        let reconciles = metrics.add(
            "reconciles",
            "Reconciles and controller passes, by controller and result (success or error)",
            Family::default(),
        );
        let reconcile_duration: HistogramFamily<ControllerLabels> = metrics.add(
            "reconcile_duration_seconds",
            "Time of a reconcile or a controller pass, by controller",
            Family::new_with_constructor(cloud_call_histogram),
        );
        let reconcile_errors = metrics.add(
            "reconcile_errors",
            "Failed reconciles and controller passes, by controller and error (panic included)",
            Family::default(),
        );
        Self {
            registry: metrics.registry,
            process: {
                let mut process = Registry::default();
                process.register_collector(Box::new(process::ProcessCollector));
                process
            },
            names: metrics.names,
            build_info,
            leader,
            scheduling_duration,
            consolidation_duration,
            pods_pending,
            pod_provisioning_wait,
            nodeclaims_created,
            nodeclaims_launched,
            nodeclaims_registered,
            nodeclaims_initialized,
            nodeclaims_terminated,
            nodeclaims_disrupted,
            disruption_decisions,
            disruption_candidates,
            disruption_pods,
            consolidation_savings,
            launch_failures,
            unavailable_offerings,
            cloudprovider_duration,
            cloudprovider_errors,
            nodepool_usage,
            nodepool_limit,
            warmpool_preemptions,
            warmpool_desired,
            warmpool_ready,
            invalid_objects,
            interruption_messages,
            interruption_actions,
            interruption_message_age,
            interruption_replacement,
            interruption_drain,
            reconcile_errors,
            reconciles,
            reconcile_duration,
            ready: AtomicBool::new(false),
            exported: Mutex::default(),
        }
    }
}

/// Registers metrics and remembers their names.
struct Registrar {
    registry: Registry,
    names: Vec<String>,
}

impl Registrar {
    fn add<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.registry.register(name, help, metric.clone());
        self.names.push(format!("stoker_{name}"));
        metric
    }
}

impl Metrics {
    /// Counts a NodeClaim stoker deletes itself, with why.
    pub fn disrupted(&self, claim: &NodeClaim, reason: &str) {
        let ClaimLabels { nodepool, capacity_type } = ClaimLabels::of(claim);
        self.nodeclaims_disrupted
            .get_or_create(&DisruptionLabels { nodepool, capacity_type, reason: reason.into() })
            .inc();
    }

    /// Counts a failed reconcile or pass of `controller`.
    /// Forgets what only the leader knows, when its term ends: a standby must not export the
    /// figures of a term that is over (a dashboard summing replicas would count them twice).
    pub fn leadership_ended(&self) {
        self.leader.set(0);
        self.pods_pending.set(0);
        self.disruption_candidates.clear();
        self.nodepool_usage.clear();
        self.nodepool_limit.clear();
        self.warmpool_desired.clear();
        self.warmpool_ready.clear();
        let mut exported = self.exported.lock().unwrap_or_else(PoisonError::into_inner);
        exported.nodepools.clear();
        // Preemption counters stay: a counter is not reset by a new term.
    }

    /// Sets a WarmPool's desired and ready sizes.
    pub fn warmpool_sizes(&self, labels: &WarmPoolLabels, desired: i64, ready: i64) {
        self.warmpool_desired.get_or_create(labels).set(desired);
        self.warmpool_ready.get_or_create(labels).set(ready);
        self.exported.lock().unwrap_or_else(PoisonError::into_inner).warmpools.insert(labels.clone());
    }

    /// Counts a pause pod of a WarmPool preempted by a real one.
    pub fn warmpool_preempted(&self, labels: &WarmPoolLabels) {
        self.warmpool_preemptions.get_or_create(labels).inc();
        self.exported.lock().unwrap_or_else(PoisonError::into_inner).warmpools.insert(labels.clone());
    }

    /// Removes the series of NodePools for which `live` is false (deleted ones).
    pub fn retain_nodepools(&self, live: impl Fn(&str) -> bool) {
        let mut exported = self.exported.lock().unwrap_or_else(PoisonError::into_inner);
        exported.nodepools.retain(|nodepool, resources| {
            if live(nodepool) {
                return true;
            }
            for resource in resources.iter() {
                let labels = ResourceLabels { nodepool: nodepool.clone(), resource: resource.clone() };
                self.nodepool_usage.remove(&labels);
                self.nodepool_limit.remove(&labels);
            }
            false
        });
    }

    /// Removes the series of WarmPools for which `live` is false (deleted ones).
    pub fn retain_warmpools(&self, live: impl Fn(&WarmPoolLabels) -> bool) {
        let mut exported = self.exported.lock().unwrap_or_else(PoisonError::into_inner);
        exported.warmpools.retain(|labels| {
            if live(labels) {
                return true;
            }
            self.warmpool_desired.remove(labels);
            self.warmpool_ready.remove(labels);
            self.warmpool_preemptions.remove(labels);
            false
        });
    }

    /// Counts and times a reconcile or a pass.
    pub fn reconciled(&self, controller: &str, took: std::time::Duration, succeeded: bool) {
        let result = if succeeded { "success" } else { "error" };
        self.reconciles.get_or_create(&ReconcileLabels { controller: controller.into(), result: result.into() }).inc();
        let labels = ControllerLabels { controller: controller.into() };
        self.reconcile_duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    pub fn reconcile_failed(&self, controller: &str, error: &crate::error::Error) {
        let labels = ReconcileErrorLabels { controller: controller.to_owned(), error: error.metric_label().to_owned() };
        self.reconcile_errors.get_or_create(&labels).inc();
    }

    /// Sets a NodePool's usage and limit gauges, in base units.
    pub fn nodepool_resources(&self, nodepool: &str, usage: &Resources, limits: Option<&Resources>) {
        let labels = |resource: &str| ResourceLabels { nodepool: nodepool.to_owned(), resource: resource.to_owned() };
        let mut exported = self.exported.lock().unwrap_or_else(PoisonError::into_inner);
        let named = exported.nodepools.entry(nodepool.to_owned()).or_default();
        named.extend(usage.iter().chain(limits.iter().flat_map(|l| l.iter())).map(|(resource, _)| resource.to_owned()));
        let base_units = |resource: &str, amount: i64| amount as f64 / scale_of(resource) as f64;
        for (resource, amount) in usage.iter() {
            self.nodepool_usage.get_or_create(&labels(resource)).set(base_units(resource, amount));
        }
        for (resource, amount) in limits.iter().flat_map(|limits| limits.iter()) {
            self.nodepool_limit.get_or_create(&labels(resource)).set(base_units(resource, amount));
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.process);
        let _ = encode_eof(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_the_stoker_prefix() {
        let metrics = Metrics::default();
        metrics.nodeclaims_created.get_or_create(&NodePoolLabels { nodepool: "spot".into() }).inc();
        metrics.scheduling_duration.observe(0.02);
        let text = metrics.render();
        assert!(text.contains("stoker_nodeclaims_created_total{nodepool=\"spot\"} 1"), "{text}");
        assert!(text.contains("stoker_scheduling_duration_seconds_count 1"), "{text}");
        for process in ["process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds "] {
            assert!(text.lines().any(|line| line.starts_with(process)), "{process} unprefixed: {text}");
        }
        assert_eq!(text.matches("# EOF").count(), 1, "one exposition");
        let usage: Resources = [("cpu".to_owned(), 2500), ("memory".to_owned(), 1 << 30)].into_iter().collect();
        let limits: Resources = [("cpu".to_owned(), 10_000)].into_iter().collect();
        metrics.nodepool_resources("spot", &usage, Some(&limits));
        let text = metrics.render();
        assert!(text.contains("stoker_nodepool_usage{nodepool=\"spot\",resource=\"cpu\"} 2.5"), "{text}");
        assert!(text.contains("stoker_nodepool_usage{nodepool=\"spot\",resource=\"memory\"} 1073741824"), "{text}");
        assert!(text.contains("stoker_nodepool_limit{nodepool=\"spot\",resource=\"cpu\"} 10"), "{text}");

        // A deleted NodePool's or WarmPool's series go.
        metrics.nodepool_resources("gone", &usage, Some(&limits));
        let pool = |name: &str| WarmPoolLabels { namespace: "shop".into(), warmpool: name.into() };
        metrics.warmpool_sizes(&pool("rush"), 5, 4);
        metrics.warmpool_sizes(&pool("old"), 2, 2);
        metrics.warmpool_preempted(&pool("old"));
        metrics.retain_nodepools(|name| name == "spot");
        metrics.retain_warmpools(|labels| labels.warmpool == "rush");
        let text = metrics.render();
        assert!(!text.contains("nodepool=\"gone\""), "{text}");
        assert!(text.contains("stoker_nodepool_usage{nodepool=\"spot\",resource=\"cpu\"} 2.5"), "{text}");
        assert!(!text.contains("warmpool=\"old\""), "{text}");
        assert!(text.contains("stoker_warmpool_desired_replicas{namespace=\"shop\",warmpool=\"rush\"} 5"), "{text}");

        // A term that ends takes the leader's figures with it; counters stay.
        metrics.leader.set(1);
        metrics.leadership_ended();
        let text = metrics.render();
        assert!(!text.contains("stoker_nodepool_usage{"), "{text}");
        assert!(text.contains("stoker_leader 0"), "{text}");
        assert!(text.contains("stoker_nodeclaims_created_total{nodepool=\"spot\"} 1"), "{text}");
    }
}
