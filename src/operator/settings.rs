//! Controller settings, from flags or the environment (the Helm chart sets the environment).

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::apis::Duration;

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
    /// Log filter, in tracing's EnvFilter syntax (`info`, `stoker=debug,kube=info`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// Address of the metrics endpoint.
    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_address: String,
    /// Run only while holding the leader Lease (every replica watches; only the leader writes).
    #[arg(long, env = "LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (the chart passes the release's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_election_namespace: String,
    /// Address of the health endpoints (`/healthz`, `/readyz`).
    #[arg(long, env = "HEALTH_ADDRESS", default_value = "0.0.0.0:8081")]
    pub health_address: String,
}
