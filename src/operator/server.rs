//! The small HTTP server for the metrics and health endpoints: `/metrics` on the metrics
//! address, `/healthz` (the process answers) and `/readyz` (caches synced) on the health address.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tracing::{info, warn};

use crate::metrics::Metrics;

fn respond(metrics: &Metrics, path: &str) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/metrics" => (StatusCode::OK, metrics.render()),
        "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
        "/readyz" if metrics.ready.load(Ordering::Relaxed) => (StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
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
                let response = respond(&metrics, request.uri().path());
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
    fn health_follows_readiness() {
        let metrics = Metrics::default();
        assert_eq!(respond(&metrics, "/readyz").status(), StatusCode::SERVICE_UNAVAILABLE);
        metrics.ready.store(true, Ordering::Relaxed);
        assert_eq!(respond(&metrics, "/readyz").status(), StatusCode::OK);
        assert_eq!(respond(&metrics, "/healthz").status(), StatusCode::OK);
        assert_eq!(respond(&metrics, "/nope").status(), StatusCode::NOT_FOUND);
        assert!(respond(&metrics, "/metrics").status() == StatusCode::OK);
    }
}
