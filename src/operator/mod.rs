//! Wiring of the long-running controller: configuration, logging, the Kubernetes client, and the
//! controllers it runs until SIGTERM or Ctrl-C.

pub mod settings;

use std::sync::Arc;

use kube::{
    Client,
    runtime::events::{Recorder, Reporter},
};
pub use settings::Settings;
use tracing::info;
use tracing_subscriber::{EnvFilter, fmt};

use crate::controllers::warmpool::reconcile as warmpool;

/// Installs the global log subscriber in the configured format.
pub fn init_logging(settings: &Settings) {
    let filter = EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match settings.log_format {
        settings::LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
        settings::LogFormat::Text => builder.init(),
    }
}

/// Runs every controller until shutdown.
pub async fn run(settings: Settings) -> Result<(), kube::Error> {
    let client = Client::try_default().await?;
    let reporter = Reporter { controller: "stoker".into(), instance: std::env::var("POD_NAME").ok() };
    info!(cluster = %settings.cluster_name, "starting stoker controller");
    let recorder = Recorder::new(client.clone(), reporter);
    warmpool::run(Arc::new(warmpool::Context { client, recorder })).await;
    info!("stopped");
    Ok(())
}
