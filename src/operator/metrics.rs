//! Prometheus metrics (prefix `stoker_`) and the small HTTP server that serves them with the
//! health endpoints: `/metrics` on the metrics address, `/healthz` (the process answers) and
//! `/readyz` (caches synced) on the health address.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tracing::{info, warn};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodePoolLabels {
    pub nodepool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WarmPoolLabels {
    pub namespace: String,
    pub warmpool: String,
}

/// Every metric stoker exports.
pub struct Metrics {
    registry: Registry,
    pub scheduling_duration: Histogram,
    pub pods_pending: Gauge,
    pub nodeclaims_created: Family<NodePoolLabels, Counter>,
    pub nodeclaims_launched: Family<NodePoolLabels, Counter>,
    pub nodeclaims_terminated: Family<NodePoolLabels, Counter>,
    pub launch_failures: Family<CodeLabels, Counter>,
    pub unavailable_offerings: Gauge,
    pub warmpool_preemptions: Family<WarmPoolLabels, Counter>,
    pub warmpool_desired: Family<WarmPoolLabels, Gauge>,
    pub warmpool_ready: Family<WarmPoolLabels, Gauge>,
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("stoker");
        let scheduling_duration = Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]);
        registry.register(
            "scheduling_duration_seconds",
            "Time the scheduling simulation took for one batch",
            scheduling_duration.clone(),
        );
        let pods_pending = Gauge::default();
        registry.register("pods_pending", "Provisionable pods in the last batch", pods_pending.clone());
        let nodeclaims_created = Family::default();
        registry.register("nodeclaims_created", "NodeClaims created by the provisioner", nodeclaims_created.clone());
        let nodeclaims_launched = Family::default();
        registry.register("nodeclaims_launched", "NodeClaims whose instance launched", nodeclaims_launched.clone());
        let nodeclaims_terminated = Family::default();
        registry.register("nodeclaims_terminated", "NodeClaims terminated", nodeclaims_terminated.clone());
        let launch_failures = Family::default();
        registry.register("launch_failures", "Failed launches by AWS error code", launch_failures.clone());
        let unavailable_offerings = Gauge::default();
        registry.register(
            "unavailable_offerings",
            "Offerings and subnets skipped after a capacity error",
            unavailable_offerings.clone(),
        );
        let warmpool_preemptions = Family::default();
        registry.register(
            "warmpool_preemptions",
            "Pause pods preempted by real workloads: cold starts avoided",
            warmpool_preemptions.clone(),
        );
        let warmpool_desired = Family::default();
        registry.register("warmpool_desired_replicas", "Pause pods a WarmPool holds now", warmpool_desired.clone());
        let warmpool_ready = Family::default();
        registry.register("warmpool_ready_replicas", "Pause pods of a WarmPool that are ready", warmpool_ready.clone());
        Self {
            registry,
            scheduling_duration,
            pods_pending,
            nodeclaims_created,
            nodeclaims_launched,
            nodeclaims_terminated,
            launch_failures,
            unavailable_offerings,
            warmpool_preemptions,
            warmpool_desired,
            warmpool_ready,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    fn respond(&self, path: &str) -> Response<Full<Bytes>> {
        let (status, body) = match path {
            "/metrics" => (StatusCode::OK, self.render()),
            "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
            "/readyz" if self.ready.load(Ordering::Relaxed) => (StatusCode::OK, "ok\n".to_owned()),
            "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n".to_owned()),
            _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    }
}

/// Serves the metrics and health endpoints on `address` until the process ends.
pub async fn serve(address: String, metrics: Arc<Metrics>) {
    let listener = match address.parse::<SocketAddr>() {
        Ok(parsed) => tokio::net::TcpListener::bind(parsed).await,
        Err(error) => return warn!(%address, %error, "invalid listen address"),
    };
    let listener = match listener {
        Ok(listener) => listener,
        Err(error) => return warn!(%address, %error, "cannot listen"),
    };
    info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or(address), "serving metrics and health");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = metrics.respond(request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_the_stoker_prefix_and_health_follows_readiness() {
        let metrics = Metrics::default();
        metrics.nodeclaims_created.get_or_create(&NodePoolLabels { nodepool: "spot".into() }).inc();
        metrics.scheduling_duration.observe(0.02);
        let text = metrics.render();
        assert!(text.contains("stoker_nodeclaims_created_total{nodepool=\"spot\"} 1"), "{text}");
        assert!(text.contains("stoker_scheduling_duration_seconds_count 1"), "{text}");
        assert_eq!(metrics.respond("/readyz").status(), StatusCode::SERVICE_UNAVAILABLE);
        metrics.ready.store(true, Ordering::Relaxed);
        assert_eq!(metrics.respond("/readyz").status(), StatusCode::OK);
        assert_eq!(metrics.respond("/healthz").status(), StatusCode::OK);
        assert_eq!(metrics.respond("/nope").status(), StatusCode::NOT_FOUND);
    }
}
