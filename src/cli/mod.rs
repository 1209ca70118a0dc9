//! The `stoker` command line: `controller`, `crds`, `validate`.

pub mod crds;
pub mod validate;

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
    /// Run the controller (for now: print the configuration it would run with).
    Controller(Settings),
    /// Print the CRD YAML, or write one file per CRD with --output-dir.
    Crds {
        /// Directory to write `<group>_<plural>.yaml` files into.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Check manifests offline against the same schema and CEL rules the apiserver applies, plus
    /// the checks only stoker can make (cron expressions, time zones, dates).
    Validate {
        /// Files to check; `-` reads standard input. Multi-document YAML is fine.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot render YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("cannot render JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Controller(settings) => {
            println!("{}", serde_json::to_string_pretty(&settings)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds { output_dir: Some(dir) } => crds::write_all(&dir).map(|()| ExitCode::SUCCESS),
        Command::Crds { output_dir: None } => {
            let documents: Vec<String> = crds::render()?.into_iter().map(|(_, yaml)| yaml).collect();
            print!("{}", documents.join("---\n"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { files } => validate::run(&files),
    }
}
