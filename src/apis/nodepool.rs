//! `NodePool`: what stoker may launch (requirements, taints, node class), how much (limits),
//! in which order (weight) and how nodes are retired (disruption). Field names and meanings follow
//! Karpenter's `karpenter.sh/v1` NodePool.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::Taint,
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{Condition, Time},
    },
};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{
    duration::{Duration, NillableDuration},
    requirements::NodeSelectorRequirementWithMinValues,
    window::{Exclusion, ScheduleWindow},
};

/// Default lifetime of a node before it is replaced (30 days), as in Karpenter.
pub const DEFAULT_EXPIRE_AFTER: Duration = Duration::from_secs(720 * 3600);

/// A NodePool describes a class of nodes stoker may launch and how they are disrupted.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "stoker.dev",
    doc = "A NodePool describes a class of nodes stoker may launch: requirements, taints, node class, limits, weight and disruption.",
    version = "v1alpha1",
    kind = "NodePool",
    plural = "nodepools",
    shortname = "snp",
    category = "stoker",
    status = "NodePoolStatus",
    printcolumn = r#"{"name":"NodeClass","type":"string","jsonPath":".spec.template.spec.nodeClassRef.name"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.nodes"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".spec.weight","priority":1}"#,
    printcolumn = r#"{"name":"CPU","type":"string","jsonPath":".status.resources.cpu","priority":1}"#,
    printcolumn = r#"{"name":"Memory","type":"string","jsonPath":".status.resources.memory","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Schedules","type":"string","jsonPath":".status.activeSchedules","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.replicas) || !has(self.limits) || self.limits.all(k, k == 'nodes')").message("only 'limits.nodes' is supported on static NodePools").field_path(".limits"),
    validation = Rule::new("!has(self.replicas) || !has(self.weight)").message("'weight' is not supported on static NodePools").field_path(".weight"),
    validation = Rule::new("!has(self.replicas) || !has(self.schedules) || size(self.schedules) == 0").message("'schedules' are not supported on static NodePools").field_path(".schedules"),
)]
pub struct NodePoolSpec {
    /// The template for NodeClaims this pool creates: labels and annotations for the nodes,
    /// requirements, taints and the node class.
    pub template: NodeClaimTemplate,
    /// How nodes of this pool are disrupted: consolidation policy and budgets.
    #[serde(default)]
    pub disruption: Disruption,
    /// Upper bounds on the resources all nodes of this pool may have together, for example
    /// `cpu: 1000`, `memory: 1000Gi`, `nodes: 50`. Launches that would exceed a limit are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BTreeMap<String, Quantity>>,
    /// Priority among NodePools: a pool with a higher weight is tried first; ties are broken by
    /// name. Unset counts as 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub weight: Option<i32>,
    /// A static pool: keep exactly this many nodes, whatever the pods, replacing any that go.
    /// Pods land on them like on any node, but the provisioner never launches for the pool and
    /// consolidation never removes its nodes (`consolidationPolicy` and `consolidateAfter` are
    /// ignored); drift and expiry replace them. Only `limits.nodes` applies, and `weight` is not
    /// allowed. Lowering it removes the nodes not launched yet first, then those with the fewest
    /// pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i64>,
    /// Recurring windows that replace some of the pool's settings while open: `limits` (all
    /// zero scales the pool to zero: no launches, and its nodes removed within its budgets),
    /// `weight`, and the disruption's `consolidationPolicy` and `consolidateAfter`. Where open
    /// windows overlap, each setting comes from the first open window in this list that sets
    /// it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))").message("schedule names must be unique"))]
    pub schedules: Vec<NodePoolSchedule>,
}

/// A recurring window and the settings it gives the pool while open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.limits) || has(self.weight) || has(self.disruption)").message("a schedule must set 'limits', 'weight' or 'disruption'"))]
pub struct NodePoolSchedule {
    /// When the window is open.
    #[serde(flatten)]
    pub window: ScheduleWindow,
    /// How long before each start the settings take effect, for example `10m` so a raised limit
    /// or weight is in place when a peak begins. Unset means at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_time: Option<Duration>,
    /// Days on which the window does not open (holidays), in its timezone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 366))]
    pub exclusions: Vec<Exclusion>,
    /// Limits in place of the pool's while open. Unlike the pool's own `limits`, which only
    /// stop launches, a window's limits also remove the pool's nodes above them, within its
    /// disruption budgets (reason `Scheduled`), emptiest first: `cpu: 0` scales it to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BTreeMap<String, Quantity>>,
    /// Weight in place of the pool's while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub weight: Option<i32>,
    /// Consolidation settings in place of the pool's while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption: Option<ScheduledDisruption>,
}

/// The consolidation settings a window may replace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.consolidationPolicy) || has(self.consolidateAfter)").message("'disruption' must set 'consolidationPolicy' or 'consolidateAfter'"))]
pub struct ScheduledDisruption {
    /// Which nodes may be consolidated while the window is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consolidation_policy: Option<ConsolidationPolicy>,
    /// How long a node must have been a consolidation candidate while the window is open, or
    /// `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consolidate_after: Option<NillableDuration>,
}

/// Labels and annotations put on every node of a pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimTemplateMetadata {
    /// Labels added to every node of this pool; usable in pod nodeSelectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(
        validation = Rule::new("self.all(key, !key.startsWith('stoker.dev/'))").message("label domain stoker.dev is restricted"),
        validation = Rule::new("self.all(key, key != 'kubernetes.io/hostname')").message("label kubernetes.io/hostname is set by the node itself"),
    )]
    #[schemars(extend("maxProperties" = 100))]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to every node of this pool.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The template of the NodeClaims a pool creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimTemplate {
    /// Labels and annotations for the nodes.
    #[serde(default)]
    pub metadata: NodeClaimTemplateMetadata,
    /// Requirements, taints and node class of the nodes.
    pub spec: NodeClaimTemplateSpec,
}

/// What every node of a pool must satisfy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimTemplateSpec {
    /// Requirements on node labels (instance type, zone, capacity type, architecture, ...) that
    /// every node of this pool satisfies. Pods' node selectors and affinities narrow them further.
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
    /// Taints put on every node; pods must tolerate them to land there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(t, t.effect in ['NoSchedule', 'PreferNoSchedule', 'NoExecute'])").message("taint effect must be one of NoSchedule, PreferNoSchedule, NoExecute"))]
    pub taints: Vec<Taint>,
    /// Taints present while a node starts and removed by something else (a CNI or agent daemon);
    /// pods need not tolerate them to be scheduled onto the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(t, t.effect in ['NoSchedule', 'PreferNoSchedule', 'NoExecute'])").message("taint effect must be one of NoSchedule, PreferNoSchedule, NoExecute"))]
    pub startup_taints: Vec<Taint>,
    /// The EC2NodeClass that describes the AWS side of the nodes (subnets, security groups, AMI).
    pub node_class_ref: NodeClassReference,
    /// How long a node may live before it is replaced, for example `720h`, or `Never`.
    #[serde(default = "default_expire_after")]
    pub expire_after: NillableDuration,
    /// How long a draining node waits for its pods before they are deleted regardless of
    /// PodDisruptionBudgets and do-not-disrupt annotations. Unset waits indefinitely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period: Option<Duration>,
}

fn default_expire_after() -> NillableDuration {
    NillableDuration::after(DEFAULT_EXPIRE_AFTER)
}

/// A reference to the node class (an `EC2NodeClass`) of a NodePool or NodeClaim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeClassReference {
    /// API group of the node class: `stoker.dev`.
    #[x_kube(validation = Rule::new("self == 'stoker.dev'").message("nodeClassRef.group must be stoker.dev"))]
    pub group: String,
    /// Kind of the node class: `EC2NodeClass`.
    #[x_kube(validation = Rule::new("self == 'EC2NodeClass'").message("nodeClassRef.kind must be EC2NodeClass"))]
    pub kind: String,
    /// Name of the node class.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// When stoker may consolidate a pool's nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ConsolidationPolicy {
    /// Only nodes without workload pods are removed.
    WhenEmpty,
    /// Empty nodes are removed and under-used nodes are replaced by cheaper ones.
    #[default]
    WhenEmptyOrUnderutilized,
}

/// Why a node is being disrupted; budgets may apply to some reasons only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DisruptionReason {
    Underutilized,
    Empty,
    Drifted,
    /// A schedule's `limits` are below what the pool holds.
    Scheduled,
}

/// How a pool's nodes are disrupted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Disruption {
    /// Which nodes may be consolidated: WhenEmpty or WhenEmptyOrUnderutilized.
    #[serde(default)]
    pub consolidation_policy: ConsolidationPolicy,
    /// How long a node must have been a consolidation candidate (no pod added or removed) before
    /// it is consolidated, for example `30s`, or `Never` to turn consolidation off.
    #[serde(default = "default_consolidate_after")]
    pub consolidate_after: NillableDuration,
    /// How many nodes may be disrupted at once, possibly only during a schedule. The most
    /// restrictive active budget wins. Defaults to one budget of 10%.
    #[serde(default = "default_budgets")]
    #[schemars(length(max = 50))]
    pub budgets: Vec<Budget>,
}

impl Default for Disruption {
    fn default() -> Self {
        Self {
            consolidation_policy: ConsolidationPolicy::default(),
            consolidate_after: default_consolidate_after(),
            budgets: default_budgets(),
        }
    }
}

fn default_consolidate_after() -> NillableDuration {
    NillableDuration::after(Duration::from_secs(0))
}

fn default_budgets() -> Vec<Budget> {
    vec![Budget { nodes: "10%".into(), schedule: None, duration: None, reasons: Vec::new() }]
}

/// A limit on concurrent voluntary disruptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.schedule) == has(self.duration)").message("'schedule' must be set with 'duration'").field_path(".schedule"))]
pub struct Budget {
    /// How many nodes may be disrupted at once: a count (`5`) or a percentage of the pool's nodes
    /// (`10%`). `0` blocks disruption.
    #[schemars(regex(pattern = r"^((100|[0-9]{1,2})%|[0-9]+)$"))]
    pub nodes: String,
    /// When the budget is active, as a 5-field cron expression in UTC (`0 9 * * mon-fri`); the
    /// budget then lasts `duration`. Unset means always active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(@(annually|yearly|monthly|weekly|daily|midnight|hourly))|((.+)\s(.+)\s(.+)\s(.+)\s(.+))$"
    ))]
    pub schedule: Option<String>,
    /// How long the budget stays active after each time its schedule fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// The disruption reasons the budget applies to; all reasons when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<DisruptionReason>,
}

/// What a NodePool currently holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolStatus {
    /// Resources of all the pool's nodes, running and launching, counted against `limits`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, Quantity>,
    /// Number of nodes (NodeClaims) the pool holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<i64>,
    /// Conditions: Ready (the node class is ready and the pool can launch), ValidationSucceeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Names of the schedules open now (lead time included), whose settings are in effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_schedules: Vec<String>,
    /// The next change of the open schedules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_transition: Option<ScheduleTransition>,
}

/// A future change of a NodePool's open schedules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleTransition {
    /// When the change happens (lead time already applied).
    pub time: Time,
    /// The schedules open from then on.
    #[serde(default)]
    pub active_schedules: Vec<String>,
}

impl NodePool {
    /// The pool's weight, with unset counting as 0.
    pub fn weight(&self) -> i32 {
        self.spec.weight.unwrap_or(0)
    }
}
