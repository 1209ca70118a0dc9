//! The `stoker` command line: `controller`, `crds`, `cloudformation`, `iam-policy`, `validate`, `convert`, `plan`,
//! `disrupt`, `nodepool preview`, `warmpool preview`.

pub mod cloudformation;
pub mod convert;
pub mod crds;
pub mod disrupt;
pub mod input;
pub mod kwok;
pub mod nodepool;
pub mod plan;
pub mod simulator;
pub mod timeline;
pub mod validate;
pub mod warmpool;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::operator::Settings;

/// Karpenter-style node provisioning and warm pools for Kubernetes on AWS.
#[derive(Debug, Parser)]
#[command(name = "stoker", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controllers until SIGTERM or Ctrl-C.
    Controller(Box<Settings>),
    /// Print the CRD YAML, or write one file per CRD with --output-dir.
    Crds {
        /// Directory to write `<group>_<plural>.yaml` files into.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Check manifests offline against the same schema and CEL rules the apiserver applies, plus
    /// the checks only stoker can make (cron expressions, time zones, dates).
    Validate {
        #[command(flatten)]
        inputs: Inputs,
    },
    /// Rewrite Karpenter v1 NodePool and EC2NodeClass manifests as stoker ones: prints the result
    /// as YAML, names every field stoker does not have on standard error, and fails if a result
    /// would still be refused. Other documents are printed unchanged.
    Convert {
        #[command(flatten)]
        inputs: Inputs,
    },
    /// What would stoker launch? Plans pods (Pods, Deployments, ReplicaSets, StatefulSets, Jobs)
    /// on the NodePools in the files, with DaemonSet overhead, against the instance catalog
    /// snapshot, and prints the NodeClaims, their cost and the pods nothing can host. Exits 4
    /// when some pods cannot be scheduled.
    Plan {
        #[command(flatten)]
        inputs: Inputs,
        /// An instance catalog in the snapshot's CSV format instead of the built-in us-east-1 one.
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: plan::Output,
        #[command(flatten)]
        policies: crate::scheduling::solver::Policies,
    },
    /// What would consolidation do now? Reads the cluster's objects (`kubectl get
    /// nodes,pods,nodeclaims,nodepools,ec2nodeclasses,daemonsets,pdb,namespaces,pvc,pv,storageclasses,nodeoverlays.stoker.dev -A -o yaml`), makes the
    /// decision the controller would make with the same code, and prints the nodes it would
    /// remove, their replacement, the $/h saved, and why each other candidate is kept. Offline:
    /// nothing is touched.
    Disrupt {
        #[command(flatten)]
        inputs: Inputs,
        /// Allow spot-to-spot replacement, as the `SpotToSpotConsolidation` gate does.
        #[arg(long)]
        spot_to_spot: bool,
        #[command(flatten)]
        policies: crate::scheduling::solver::Policies,
    },
    /// Register Nodes for this cluster's instances as the kubelet would (local environment only).
    #[command(hide = true)]
    NodeSimulator {
        /// The cluster whose instances (by their `stoker.dev/cluster` tag) get nodes.
        #[arg(long, env = "CLUSTER_NAME")]
        cluster_name: String,
        /// How long after launch a node registers.
        #[arg(long, default_value = "2s")]
        delay: crate::apis::Duration,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: crate::operator::settings::LogFormat,
    },
    /// Print the instance types an EC2NodeClass can launch, priced as the controller prices them,
    /// in the file format of Karpenter's kwok provider (benchmarks against Karpenter only).
    #[command(hide = true)]
    KwokInstanceTypes {
        /// The cluster whose view of EC2 is used.
        #[arg(long, env = "CLUSTER_NAME")]
        cluster_name: String,
        /// The EC2NodeClass (Ready) whose subnets, images and kubelet settings shape the types.
        #[arg(long, default_value = "default")]
        nodeclass: String,
    },
    /// Work with NodePool manifests offline.
    #[command(subcommand)]
    Nodepool(NodepoolCommand),
    /// Work with WarmPool manifests offline.
    #[command(subcommand)]
    Warmpool(WarmpoolCommand),
    /// Print the CloudFormation template that prepares an account for stoker (YAML): the node
    /// role and its EKS access entry, the controller role with the `iam-policy` policy, its Pod
    /// Identity association or IRSA trust, and the interruption queue with its rules.
    Cloudformation,
    /// Print a shell completion script: `source <(stoker completion bash)`, or write it where your
    /// shell loads completions from.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the controller's IAM policy (JSON): creating only with this cluster's ownership
    /// tags, terminating and deleting only what carries them, passing only the node role.
    IamPolicy {
        /// The `settings.clusterName` the controller runs with.
        #[arg(long)]
        cluster_name: String,
        /// The node role named in EC2NodeClasses' `spec.role`; its ARN gives the partition and
        /// account.
        #[arg(long)]
        node_role_arn: String,
        /// Pin the policy to one region (any region when unset).
        #[arg(long)]
        region: Option<String>,
        /// The interruption queue's name or ARN, when `settings.interruptionQueue` is set.
        #[arg(long)]
        interruption_queue: Option<String>,
        /// An SSM parameter EC2NodeClasses' `amiSelectorTerms[].ssmParameter` may name, besides
        /// AWS's public ones: a name in the node role's account (`*` wildcards allowed) or an
        /// ARN; repeatable.
        #[arg(long = "ami-parameter", default_value = crate::cloudprovider::aws::iam_policy::DEFAULT_AMI_PARAMETERS)]
        ami_parameters: Vec<String>,
    },
}

/// Where a command reads manifests from, the same for every command.
#[derive(Debug, clap::Args)]
pub struct Inputs {
    /// A manifest file, a directory of them (`.yaml`, `.yml`, `.json`), or `-` for standard
    /// input; repeatable. Multi-document YAML and `kind: List` are read item by item.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Also read the manifests in the directories' subdirectories.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

impl Inputs {
    pub fn documents(&self) -> Result<Vec<input::Document>, CliError> {
        input::documents(&self.files, self.recursive)
    }
}

/// What a preview covers and how it is shown.
#[derive(Debug, clap::Args)]
pub struct PreviewRange {
    /// Start of the preview (RFC 3339, for example 2026-11-23T00:00:00Z); now when unset.
    #[arg(long)]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// How many days to preview (at most 366).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=366))]
    pub days: u32,
    /// Also draw the preview as an SVG chart into this file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Show times in each pool's own time zone (its first schedule's) instead of UTC.
    #[arg(long)]
    pub schedule_timezone: bool,
}

#[derive(Debug, Subcommand)]
pub enum NodepoolCommand {
    /// Show the settings each NodePool's schedules put in force over the coming days (limits,
    /// weight, consolidation, the windows open; the chart draws the CPU limit); other kinds and
    /// pools without schedules are ignored.
    Preview {
        #[command(flatten)]
        inputs: Inputs,
        #[command(flatten)]
        range: PreviewRange,
    },
}

#[derive(Debug, Subcommand)]
pub enum WarmpoolCommand {
    /// Show how many pause pods each WarmPool in the manifests holds over the coming days (the
    /// chart draws the size); other kinds are ignored.
    Preview {
        #[command(flatten)]
        inputs: Inputs,
        #[command(flatten)]
        range: PreviewRange,
        /// The replicas of the pools' `scalableRef` workload, which their percentages are taken
        /// of (needed only by pools that use a percentage).
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
        workload_replicas: Option<i32>,
    },
}

/// Exit codes, distinct so scripts can tell the failures apart (docs/cli.md).
pub mod exit {
    /// Something went wrong that is not the input's fault: a file that cannot be read, the
    /// cluster unreachable.
    pub const ERROR: u8 = 1;
    /// The command line itself is wrong (clap uses the same code for its own usage errors).
    pub const USAGE: u8 = 2;
    /// A manifest is invalid or refused.
    pub const INVALID: u8 = 3;
    /// `plan`: some pods cannot be scheduled on any NodePool.
    pub const UNSCHEDULABLE: u8 = 4;
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot render YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
    #[error("cannot render JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Controller(#[from] crate::error::Error),
    #[error("{0}")]
    PolicyScope(#[from] crate::cloudprovider::aws::iam_policy::ScopeError),
}

impl CliError {
    /// The process's exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid { .. } => exit::INVALID,
            Self::PolicyScope(_) => exit::USAGE,
            _ => exit::ERROR,
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Runtime::new().map_err(|source| CliError::Io { path: "tokio runtime".into(), source })
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Controller(settings) => {
            crate::operator::init_logging(&settings.log_level, settings.log_format);
            tracing::info!(settings = %serde_json::to_string(&settings)?, "configuration");
            runtime()?.block_on(crate::operator::run(*settings))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::NodeSimulator { cluster_name, delay, log_format } => {
            crate::operator::init_logging("info", log_format);
            runtime()?.block_on(simulator::run(cluster_name, delay.as_std()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::KwokInstanceTypes { cluster_name, nodeclass } => {
            runtime()?.block_on(kwok::run(cluster_name, &nodeclass))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds { output_dir: Some(dir) } => crds::write_all(&dir).map(|()| ExitCode::SUCCESS),
        Command::Crds { output_dir: None } => {
            let documents: Vec<String> = crds::render()?.into_iter().map(|(_, yaml)| yaml).collect();
            print!("{}", documents.join("---\n"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { inputs } => validate::run(&inputs.documents()?),
        Command::Convert { inputs } => convert::run(&inputs.documents()?),
        Command::Plan { inputs, catalog, output, policies } => {
            plan::run(&inputs.documents()?, catalog.as_deref(), output, policies)
        }
        Command::Disrupt { inputs, spot_to_spot, policies } => {
            disrupt::run(&inputs.documents()?, spot_to_spot, policies)
        }
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "stoker", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Cloudformation => {
            print!("{}", cloudformation::render()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::IamPolicy { cluster_name, node_role_arn, region, interruption_queue, ami_parameters } => {
            use crate::cloudprovider::aws::iam_policy::{PolicyScope, policy};
            let scope = PolicyScope {
                ami_parameters,
                ..PolicyScope::for_role(
                    &cluster_name,
                    &node_role_arn,
                    region.as_deref(),
                    interruption_queue.as_deref(),
                )?
            };
            println!("{}", serde_json::to_string_pretty(&policy(&scope))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Nodepool(NodepoolCommand::Preview { inputs, range }) => nodepool::run(&inputs.documents()?, &range),
        Command::Warmpool(WarmpoolCommand::Preview { inputs, range, workload_replicas }) => {
            warmpool::run(&inputs.documents()?, &range, workload_replicas)
        }
    }
}
