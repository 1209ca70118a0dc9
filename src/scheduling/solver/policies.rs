//! How the solver treats what pods only prefer and what NodePools ask of instance-type
//! flexibility: the two cluster-wide choices Karpenter offers as `--preference-policy` and
//! `--min-values-policy`, with its names and defaults, so a migrated install decides the same.

use serde::Serialize;

/// Whether pods' preferences (preferred node and pod affinity, ScheduleAnyway spreads) steer
/// the simulation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum PreferencePolicy {
    /// Honour them while possible, relaxing one at a time when a pod cannot be placed.
    #[default]
    #[value(name = "Respect")]
    Respect,
    /// Plan as though no pod had any: fewer, fuller nodes; kube-scheduler still weighs them
    /// among the nodes that exist.
    #[value(name = "Ignore")]
    Ignore,
}

/// What happens when the instance types that fit a node cannot keep a requirement's
/// `minValues`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum MinValuesPolicy {
    /// The node is not launched: its pods stay pending with the reason.
    #[default]
    #[value(name = "Strict")]
    Strict,
    /// The node is launched with the values that remain, and its NodeClaim says minValues was
    /// relaxed.
    #[value(name = "BestEffort")]
    BestEffort,
}

/// Both policies, as one setting of the solver's input: flags (or the environment the chart
/// sets) of the controller, and of `stoker plan` and `stoker disrupt`, which decide the same way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::Args)]
#[serde(rename_all = "camelCase")]
pub struct Policies {
    /// Whether pods' preferences steer the simulation: Respect (relaxed one at a time when a pod
    /// cannot be placed) or Ignore.
    #[arg(
        long = "preference-policy",
        env = "PREFERENCE_POLICY",
        value_name = "POLICY",
        value_enum,
        default_value_t,
        ignore_case = true
    )]
    pub preferences: PreferencePolicy,
    /// When the types that fit cannot keep a requirement's minValues: Strict (no launch) or
    /// BestEffort (launch with what remains, marked on the NodeClaim).
    #[arg(
        long = "min-values-policy",
        env = "MIN_VALUES_POLICY",
        value_name = "POLICY",
        value_enum,
        default_value_t,
        ignore_case = true
    )]
    pub min_values: MinValuesPolicy,
}
