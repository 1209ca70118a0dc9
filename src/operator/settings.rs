//! Controller settings, from flags or the environment (the Helm chart sets the environment).

use clap::{Args, ValueEnum};
use serde::Serialize;

use std::{fmt, str::FromStr};

/// A duration setting (`BATCH_IDLE_DURATION=500ms`, `NODE_REPAIR_AFTER=1h30m`, `1.5s`): numbers
/// with the units `ns`, `us`, `ms`, `s`, `m` and `h`, everything the chart's schema admits, so an
/// install the schema accepts starts. (The API's own durations are whole seconds; settings may be
/// finer.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }

    /// As a chrono delta, for arithmetic on instants; saturates.
    pub fn delta(self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.0).unwrap_or(chrono::TimeDelta::MAX)
    }
}

impl FromStr for Duration {
    type Err = humantime::DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(input).map(Self)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log pipelines.
    Json,
    /// Human-readable lines.
    Text,
}

/// Everything the controller needs to know about its cluster and how to behave.
#[derive(Debug, Clone, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Name of the EKS cluster; tags and discovery use it.
    #[arg(long, env = "CLUSTER_NAME")]
    pub cluster_name: String,
    /// API server endpoint nodes join; discovered from EKS (DescribeCluster) when unset.
    #[arg(long, env = "CLUSTER_ENDPOINT")]
    pub cluster_endpoint: Option<String>,
    /// The cluster's CA bundle (base64 PEM) for the node bootstrap; discovered from EKS when unset.
    #[arg(long, env = "CLUSTER_CA_BUNDLE")]
    #[serde(skip)]
    pub cluster_ca_bundle: Option<String>,
    /// The cluster's Service CIDR for the node bootstrap; discovered from EKS when unset.
    #[arg(long, env = "CLUSTER_SERVICE_CIDR")]
    pub cluster_service_cidr: Option<String>,
    /// AWS region; the standard AWS configuration chain applies when unset.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// A batch of pending pods closes after this long without a new one.
    #[arg(long, env = "BATCH_IDLE_DURATION", default_value = "1s")]
    pub batch_idle_duration: Duration,
    /// A batch of pending pods closes this long after it opened, however busy.
    #[arg(long, env = "BATCH_MAX_DURATION", default_value = "10s")]
    pub batch_max_duration: Duration,
    /// How long a consolidation decision waits before it is checked again and carried out
    /// (Karpenter's 15 s). Hidden: only the end-to-end tests shorten it.
    #[arg(long, env = "CONSOLIDATION_VALIDATION_DELAY", default_value = "15s", hide = true)]
    pub consolidation_validation_delay: Duration,
    /// A node NotReady (or Unknown) this long is replaced, unless more than 20% of its NodePool
    /// is (then the cause is likely not the nodes, and replacing them would not help).
    #[arg(long, env = "NODE_REPAIR_AFTER", default_value = "30m")]
    pub node_repair_after: Duration,
    /// Log filter, in tracing's EnvFilter syntax (`info`, `stoker=debug,kube=info`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// Address of the metrics endpoint; `:PORT` listens on every IPv6 and IPv4 address.
    #[arg(long, env = "METRICS_ADDRESS", default_value = ":8080")]
    pub metrics_address: String,
    /// Run only while holding the leader Lease (every replica watches; only the leader writes).
    #[arg(long, env = "LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (the chart passes the release's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_election_namespace: String,
    /// Address of the health endpoints (`/healthz`, `/readyz`); `:PORT` as for metrics.
    #[arg(long, env = "HEALTH_ADDRESS", default_value = ":8081")]
    pub health_address: String,
    /// Optional capabilities switched on or off: `WarmPools=true,Consolidation=false`.
    #[arg(long, env = "FEATURE_GATES", default_value = "")]
    pub feature_gates: FeatureGates,
    /// Images WarmPool pause pods may run, comma-separated.
    #[arg(long, env = "WARMPOOL_IMAGES", value_delimiter = ',', default_value = crate::apis::warmpool::DEFAULT_PAUSE_IMAGE)]
    pub warm_pool_images: Vec<String>,
    /// NodePools WarmPools may hold capacity on, comma-separated; any when empty.
    #[arg(long, env = "WARMPOOL_NODEPOOLS", value_delimiter = ',', default_value = "")]
    pub warm_pool_nodepools: Vec<String>,
    /// The SQS queue EventBridge rules send spot interruption warnings, rebalance
    /// recommendations, instance state changes and AWS Health events to; unset, none are handled.
    #[arg(long, env = "INTERRUPTION_QUEUE")]
    pub interruption_queue: Option<String>,
    /// Treat rebalance recommendations like interruptions (drain and replace the node) instead
    /// of only recording them.
    #[arg(long, env = "ACT_ON_REBALANCE_RECOMMENDATIONS", default_value_t = false, action = clap::ArgAction::Set)]
    pub act_on_rebalance_recommendations: bool,
    #[command(flatten)]
    #[serde(flatten)]
    pub policies: crate::scheduling::solver::Policies,
}

impl Settings {
    /// The operator's limits on WarmPools.
    pub fn warm_pool_policy(&self) -> crate::controllers::warmpool::admission::Policy {
        let listed = |values: &[String]| values.iter().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect();
        crate::controllers::warmpool::admission::Policy {
            images: listed(&self.warm_pool_images),
            nodepools: listed(&self.warm_pool_nodepools),
        }
    }
}

/// Capabilities an operator can switch off without uninstalling: a gate that is off means its
/// controller does not run at all, so it neither reads nor writes its resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureGates {
    /// The WarmPool controller and its preemption counter.
    pub warm_pools: bool,
    /// Voluntary disruption: removing empty and underutilized nodes after `consolidateAfter`.
    /// Termination of deleted NodeClaims, expiry of unregistered ones and garbage collection are
    /// not gated.
    pub consolidation: bool,
    /// Replacing a spot node by a cheaper spot node (off by default, as in Karpenter: spot nodes
    /// are otherwise only deleted by consolidation).
    pub spot_to_spot_consolidation: bool,
}

impl Default for FeatureGates {
    fn default() -> Self {
        Self { warm_pools: true, consolidation: true, spot_to_spot_consolidation: false }
    }
}

/// Where a gate's value lives in [`FeatureGates`].
type GateField = fn(&mut FeatureGates) -> &mut bool;

impl FeatureGates {
    /// Every gate by the name it is set with, Kubernetes-style.
    const GATES: [(&str, GateField); 3] = [
        ("WarmPools", |gates| &mut gates.warm_pools),
        ("Consolidation", |gates| &mut gates.consolidation),
        ("SpotToSpotConsolidation", |gates| &mut gates.spot_to_spot_consolidation),
    ];
}

/// `Name=bool` pairs separated by commas; gates not named keep their default.
impl std::str::FromStr for FeatureGates {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut gates = Self::default();
        for pair in text.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
            let (name, value) =
                pair.split_once('=').ok_or_else(|| format!("`{pair}` is not `Name=true` or `Name=false`"))?;
            let (name, value) = (name.trim(), value.trim());
            let gate = Self::GATES.iter().find(|(known, _)| *known == name).ok_or_else(|| {
                let known: Vec<&str> = Self::GATES.iter().map(|(known, _)| *known).collect();
                format!("unknown feature gate `{name}` (known: {})", known.join(", "))
            })?;
            *gate.1(&mut gates) =
                value.parse().map_err(|_| format!("feature gate `{name}` must be `true` or `false`, not `{value}`"))?;
        }
        Ok(gates)
    }
}

#[cfg(test)]
mod tests {
    use super::{Duration, FeatureGates};

    #[test]
    fn duration_settings_take_what_the_chart_schema_admits() {
        // The chart's schema: ^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$
        let admitted = [("500ms", 500), ("1s", 1_000), ("1.5s", 1_500), ("1h30m", 5_400_000), ("2m30s", 150_000)];
        for (written, expected) in admitted {
            let parsed: Duration = written.parse().unwrap_or_else(|e| panic!("{written}: {e}"));
            assert_eq!(parsed.as_std().as_millis(), expected, "{written}");
        }
        for micro in ["250us", "250µs", "250000ns"] {
            assert_eq!(micro.parse::<Duration>().map(|d| d.as_std().as_micros()), Ok(250), "{micro}");
        }
        // Longer forms (`5 minutes`) parse too; what the schema refuses here, the controller does.
        for refused in ["", "-1s", "s", "5 fortnights"] {
            assert!(refused.parse::<Duration>().is_err(), "{refused} accepted");
        }
        assert_eq!("90s".parse::<Duration>().map(|d| d.to_string()), Ok("1m 30s".to_owned()));
    }

    #[test]
    fn feature_gates_keep_their_defaults_and_parse_kubernetes_style() {
        assert_eq!("".parse(), Ok(FeatureGates::default()));
        let gates = |warm_pools, consolidation, spot_to_spot_consolidation| FeatureGates {
            warm_pools,
            consolidation,
            spot_to_spot_consolidation,
        };
        assert_eq!(FeatureGates::default(), gates(true, true, false));
        assert_eq!(" WarmPools=false , Consolidation=true".parse(), Ok(gates(false, true, false)));
        assert_eq!("Consolidation=false,SpotToSpotConsolidation=true".parse(), Ok(gates(true, false, true)));
    }

    #[test]
    fn a_misspelt_or_malformed_feature_gate_is_refused_with_the_known_names() {
        let unknown = "WarmPool=false".parse::<FeatureGates>().unwrap_err();
        assert_eq!(
            unknown,
            "unknown feature gate `WarmPool` (known: WarmPools, Consolidation, SpotToSpotConsolidation)"
        );
        assert!("WarmPools".parse::<FeatureGates>().unwrap_err().contains("`Name=true`"));
        assert!("WarmPools=off".parse::<FeatureGates>().unwrap_err().contains("not `off`"));
    }
}
