//! A `CloudProvider` that times every call of the one it wraps and counts failures by error
//! code (`stoker_cloudprovider_duration_seconds`, `stoker_cloudprovider_errors_total`), so every
//! controller's cloud calls are measured without each of them doing it.

use std::{future::Future, sync::Arc, time::Instant};

use super::{CloudError, CloudProvider, Followers, Instance, PriorLaunches};
use crate::{
    apis::nodeclaim::NodeClaim,
    metrics::{MethodErrorLabels, MethodLabels, Metrics},
    scheduling::{catalog::InstanceType, overlays::Overlay},
};

pub struct Metered<P> {
    inner: Arc<P>,
    metrics: Arc<Metrics>,
}

impl<P> Metered<P> {
    pub fn new(inner: Arc<P>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn observe<T>(
        &self,
        method: &str,
        call: impl Future<Output = Result<T, CloudError>>,
    ) -> Result<T, CloudError> {
        let started = Instant::now();
        let result = call.await;
        let labels = MethodLabels { method: method.to_owned() };
        self.metrics.cloudprovider_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            let labels = MethodErrorLabels { method: method.to_owned(), code: error.reason().to_owned() };
            self.metrics.cloudprovider_errors.get_or_create(&labels).inc();
        }
        result
    }
}

impl<P: CloudProvider> CloudProvider for Metered<P> {
    type NodeClass = P::NodeClass;
    type NodeClassStatus = P::NodeClassStatus;

    async fn create(
        &self,
        claim: &NodeClaim,
        class: &Self::NodeClass,
        prior: PriorLaunches,
        followers: Followers,
    ) -> Result<Instance, CloudError> {
        self.observe("create", self.inner.create(claim, class, prior, followers)).await
    }

    async fn prepare(&self, claim: &NodeClaim, class: &Self::NodeClass) -> Result<(), CloudError> {
        self.observe("prepare", self.inner.prepare(claim, class)).await
    }

    async fn delete(&self, provider_id: &str) -> Result<(), CloudError> {
        self.observe("delete", self.inner.delete(provider_id)).await
    }

    async fn get(&self, provider_id: &str) -> Result<Instance, CloudError> {
        self.observe("get", self.inner.get(provider_id)).await
    }

    async fn list(&self) -> Result<Vec<Instance>, CloudError> {
        self.observe("list", self.inner.list()).await
    }

    async fn instance_types(&self, class: &Self::NodeClass) -> Result<Arc<[InstanceType]>, CloudError> {
        self.observe("instance_types", self.inner.instance_types(class)).await
    }

    async fn resolve_node_class(&self, class: &Self::NodeClass) -> Result<Self::NodeClassStatus, CloudError> {
        self.observe("resolve_node_class", self.inner.resolve_node_class(class)).await
    }

    async fn delete_node_class_resources(&self, class: &Self::NodeClass) -> Result<(), CloudError> {
        self.observe("delete_node_class_resources", self.inner.delete_node_class_resources(class)).await
    }

    async fn ended_reservations(&self, ids: &[String]) -> Result<Vec<String>, CloudError> {
        self.observe("ended_reservations", self.inner.ended_reservations(ids)).await
    }

    async fn prune(&self) -> Result<usize, CloudError> {
        self.observe("prune", self.inner.prune()).await
    }

    fn offering_interrupted(&self, instance_type: &str, zone: &str, capacity_type: &str) {
        self.inner.offering_interrupted(instance_type, zone, capacity_type);
    }

    fn use_overlays(&self, overlays: Vec<Overlay>) {
        self.inner.use_overlays(overlays);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudprovider::fake::FakeCloudProvider;

    #[tokio::test]
    async fn calls_are_timed_by_method_and_failures_counted_by_code() {
        let metrics = Arc::new(Metrics::default());
        let provider = Metered::new(Arc::new(FakeCloudProvider::new(Vec::new())), metrics.clone());
        provider.list().await.expect("an empty list");
        provider.get("aws:///us-east-1a/i-0abc").await.expect_err("not found");
        let text = metrics.render();
        assert!(text.contains("stoker_cloudprovider_duration_seconds_count{method=\"list\"} 1"), "{text}");
        assert!(text.contains("stoker_cloudprovider_duration_seconds_count{method=\"get\"} 1"), "{text}");
        assert!(text.contains("stoker_cloudprovider_errors_total{method=\"get\",code=\"NotFound\"} 1"), "{text}");
        assert!(!text.contains("stoker_cloudprovider_errors_total{method=\"list\""), "{text}");
    }
}
