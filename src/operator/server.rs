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

/// Where to listen for `address`, in order of preference. `:PORT` (as Go writes "every
/// address") means IPv6 and IPv4 on one socket (`[::]`, which Linux opens dual-stack), or IPv4
/// alone where the pod has no IPv6.
fn listen_addresses(address: &str) -> Result<Vec<SocketAddr>, std::net::AddrParseError> {
    match address.strip_prefix(':') {
        Some(port) => {
            let everywhere = format!("[::]:{port}").parse()?;
            Ok(vec![everywhere, format!("0.0.0.0:{port}").parse()?])
        }
        None => Ok(vec![address.parse()?]),
    }
}

/// Serves the metrics and health endpoints on `address` until the process ends.
pub async fn serve(address: String, metrics: Arc<Metrics>) {
    let candidates = match listen_addresses(&address) {
        Ok(candidates) => candidates,
        Err(error) => return warn!(%address, %error, "invalid listen address"),
    };
    let mut bound = None;
    for candidate in candidates {
        match tokio::net::TcpListener::bind(candidate).await {
            Ok(listener) => {
                bound = Some(listener);
                break;
            }
            Err(error) => warn!(address = %candidate, %error, "cannot listen"),
        }
    }
    let Some(listener) = bound else { return };
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
    fn a_bare_port_listens_on_ipv6_and_ipv4_or_ipv4_alone() {
        let addresses = |address: &str| -> Vec<String> {
            listen_addresses(address).expect("an address").iter().map(ToString::to_string).collect()
        };
        assert_eq!(addresses(":8080"), ["[::]:8080", "0.0.0.0:8080"]);
        assert_eq!(addresses("127.0.0.1:0"), ["127.0.0.1:0"]);
        assert_eq!(addresses("[::1]:9090"), ["[::1]:9090"]);
        assert!(listen_addresses(":http").is_err() && listen_addresses("localhost").is_err());
    }

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
