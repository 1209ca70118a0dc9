//! `WarmPool`: headroom held as preemptible pause pods, sized by cron-scheduled windows so that
//! capacity for a known peak is already running when the peak starts.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint},
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{Condition, Time},
    },
};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{
    capacitybuffer::{LocalObjectRef, ScalableRef},
    duration::Duration,
    window::{Exclusion, ScheduleWindow},
};

/// The image of pause pods unless a WarmPool names another.
pub const DEFAULT_PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// The PriorityClass of pause pods unless a WarmPool names another (value -1, never preempts).
pub const DEFAULT_PRIORITY_CLASS: &str = "stoker-warm-pool";
/// How long before a window's start its capacity is requested, unless a WarmPool says otherwise.
pub const DEFAULT_LEAD_TIME: Duration = Duration::from_secs(5 * 60);

/// A WarmPool keeps pause pods running so that real workloads find ready nodes: when a real pod
/// needs the room, the scheduler preempts pause pods and stoker replaces the capacity behind them.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "stoker.dev",
    doc = "A WarmPool holds headroom as preemptible pause pods, sized by cron-scheduled windows.",
    version = "v1alpha1",
    kind = "WarmPool",
    plural = "warmpools",
    shortname = "wp",
    category = "stoker",
    namespaced,
    status = "WarmPoolStatus",
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.activeSchedules"}"#,
    printcolumn = r#"{"name":"Next","type":"string","jsonPath":".status.nextTransition.time"}"#,
    printcolumn = r#"{"name":"Preemptions","type":"integer","jsonPath":".status.preemptions","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.scalableRef) || (!has(self.baselinePercentage) && self.schedules.all(s, !has(s.percentage)))").message("a percentage needs scalableRef, the workload it is a percentage of"),
    validation = Rule::new("has(self.podTemplateRef) || has(self.scalableRef) || (has(self.resources) && has(self.resources.requests) && size(self.resources.requests) > 0)").message("resources.requests must name at least one resource, unless podTemplateRef or scalableRef shapes the pause pods").field_path(".resources"),
)]
pub struct WarmPoolSpec {
    /// Windows of extra headroom. At any instant the pool holds the largest size among the
    /// windows active then, or `baseline` when none is.
    #[serde(default)]
    #[schemars(length(max = 50))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))").message("schedule names must be unique"))]
    pub schedules: Vec<WarmPoolSchedule>,
    /// Pause pods held outside every window.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10000))]
    pub baseline: i32,
    /// Outside every window, also hold this percentage of the `scalableRef` workload's replicas
    /// (rounded up, at least one while both are above zero); the larger of it and `baseline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub baseline_percentage: Option<i32>,
    /// The workload whose replicas a `percentage` is taken of, read through its scale
    /// subresource: a Deployment, StatefulSet or ReplicaSet (`apiGroup` `apps`, the default), or
    /// any kind with `/scale` the controller may read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalable_ref: Option<ScalableRef>,
    /// How long before a window starts its pods are created, so nodes are ready at the start.
    #[serde(default = "default_lead_time")]
    pub lead_time: Duration,
    /// Days on which no window applies (holidays), in each schedule's timezone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 366))]
    pub exclusions: Vec<Exclusion>,
    /// When true, the pool keeps its current size and ignores schedules.
    #[serde(default)]
    pub paused: bool,
    /// How the room is held. `PausePods` (the default): preemptible pause pods hold it against
    /// every other workload, and a real pod preempts one to start. `Virtual`: the pool keeps a
    /// CapacityBuffer of the same size and shape, whose virtual pods keep nodes up with empty
    /// room that any pod takes at once, with no pause pods to create, preempt or replace (needs
    /// the CapacityBuffer API, which stoker's CRD chart installs).
    #[serde(default)]
    pub mode: WarmPoolMode,
    /// The most the pool's pods may request together (`cpu`, `memory`): every window and the
    /// baseline are capped to the pods that fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<WarmCapacity>,
    /// Requests (and limits, equal to the requests unless given) of each pause pod: the unit of
    /// headroom. Without requests, the pause pod takes its shape from `podTemplateRef`, else
    /// from the `scalableRef` workload's pod template.
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// A PodTemplate in the pool's namespace whose pod shapes the pause pods when `resources`
    /// names no requests: its requests, and its node selector, tolerations and node affinity
    /// where the pool sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_ref: Option<LocalObjectRef>,
    /// Node selector of the pause pods, for example `stoker.dev/nodepool: spot`, so headroom
    /// is held on the nodes real workloads will use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pause pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the pause pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Topology spread of the pause pods, for example across zones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Container image of the pause pods.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// PriorityClass of the pause pods; it must have a value below every real workload's so
    /// the scheduler preempts pause pods first. stoker creates the default class if absent.
    #[serde(default = "default_priority_class")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: String,
}

fn default_lead_time() -> Duration {
    DEFAULT_LEAD_TIME
}
fn default_image() -> String {
    DEFAULT_PAUSE_IMAGE.into()
}
fn default_priority_class() -> String {
    DEFAULT_PRIORITY_CLASS.into()
}

/// How a WarmPool holds its room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum WarmPoolMode {
    /// Preemptible pause pods: the room is held against every other workload.
    #[default]
    PausePods,
    /// A CapacityBuffer's virtual pods: empty room any pod may take, no pod churn.
    Virtual,
}

/// One recurring window of headroom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(has(self.replicas) ? 1 : 0) + (has(self.capacity) ? 1 : 0) + (has(self.percentage) ? 1 : 0) == 1").message("exactly one of 'replicas', 'capacity' or 'percentage' must be set"),
)]
pub struct WarmPoolSchedule {
    /// When the window is open.
    #[serde(flatten)]
    pub window: ScheduleWindow,
    /// Pause pods held while the window is open. Exclusive with `capacity` and `percentage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: Option<i32>,
    /// Pause pods held while the window is open, as a percentage of the `scalableRef`
    /// workload's replicas (rounded up, at least one while both are above zero): the pool
    /// follows the workload's scaling. Exclusive with `replicas` and `capacity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub percentage: Option<i32>,
    /// Headroom held while the window is open, converted to pause pods by the size of one pod
    /// (rounded up). Exclusive with `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<WarmCapacity>,
}

/// Headroom expressed as resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.cpu) || has(self.memory)").message("capacity needs 'cpu' or 'memory'"))]
pub struct WarmCapacity {
    /// CPU to hold, for example `64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory to hold, for example `256Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// What a WarmPool holds now and what comes next.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmPoolStatus {
    /// Pause pods the pool should hold now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pause pods running and ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Names of the windows active now (lead time included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_schedules: Vec<String>,
    /// The next change of size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_transition: Option<Transition>,
    /// When a pause pod was last preempted by a real workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_preemption_time: Option<Time>,
    /// How many pause pods real workloads have preempted: each is a cold start avoided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemptions: Option<i64>,
    /// Conditions: Ready, ScheduleValid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A future change of a WarmPool's size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// When the size changes (lead time already applied).
    pub time: Time,
    /// The size from then on.
    pub replicas: i32,
}
