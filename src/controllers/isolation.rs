//! Fault isolation: one object, or one pass of a periodic controller, that cannot be handled never
//! stops the others or the process.
//!
//! - The controllers watch stoker's own kinds through kube's [`DeserializeGuard`], so an object
//!   this version cannot decode (written under an older schema, or by hand past it) arrives as an
//!   error instead of failing the watch of its whole kind. [`dispatch`] reconciles an object that
//!   decodes and reports one that does not: a Warning Event, a status condition where the kind's
//!   status can be rebuilt later, a counter and a log line naming it.
//! - [`isolate`] turns a panic inside a reconcile or a pass into [`Error::Panicked`], which the
//!   error policy logs, counts and retries like any other error. No arithmetic on user input is
//!   meant to panic; this is the net under that promise.

use std::{any::Any, future::Future, panic::AssertUnwindSafe, sync::Arc};

use futures::FutureExt;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    core::{DeserializeGuard, error_boundary::InvalidObject},
    runtime::{
        controller::Action,
        events::{EventType, Recorder},
    },
};
use serde_json::json;
use tracing::{debug, warn};

use super::publish;
use crate::{
    error::{Error, Result},
    metrics::{KindLabels, Metrics},
};

/// Runs `work` of `controller`, counted and timed in `metrics`; a panic inside it becomes an
/// error carrying the panic's message.
pub async fn isolate<T>(controller: &str, metrics: &Metrics, work: impl Future<Output = Result<T>>) -> Result<T> {
    let started = std::time::Instant::now();
    let result = match AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(Error::Panicked(panic_message(panic.as_ref()))),
    };
    metrics.reconciled(controller, started.elapsed(), result.is_ok());
    result
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(message), _) => (*message).to_owned(),
        (_, Some(message)) => message.clone(),
        _ => "a panic without a message".to_owned(),
    }
}

/// Which controller reconciles, and where reports of undecodable objects go.
pub struct Reporter<'a> {
    pub controller: &'static str,
    pub client: &'a Client,
    pub recorder: &'a Recorder,
    pub metrics: &'a Metrics,
}

/// How an undecodable object of a kind is shown besides its Event.
#[derive(Debug, Clone, Copy)]
pub enum Shown {
    /// Only the Event: the kind's status holds state that must survive (a NodeClaim's instance).
    EventOnly,
    /// Also this condition, False, in place of the conditions: the kind's status is rebuilt on
    /// the first reconcile after the object is fixed.
    Condition(&'static str),
}

/// The reason of the Event and condition for an object that cannot be decoded.
pub const UNDECODABLE: &str = "InvalidSpec";

/// Reconciles an object that decodes, isolated from panics; reports one that does not and waits
/// for it to change.
pub async fn dispatch<K, F, Fut>(
    object: Arc<DeserializeGuard<K>>,
    reporter: Reporter<'_>,
    shown: Shown,
    reconcile: F,
) -> Result<Action>
where
    K: Resource<DynamicType = ()> + Clone,
    F: FnOnce(Arc<K>) -> Fut,
    Fut: Future<Output = Result<Action>>,
{
    match &object.0 {
        Ok(valid) => isolate(reporter.controller, reporter.metrics, reconcile(Arc::new(valid.clone()))).await,
        Err(invalid) => {
            report(&object, invalid, reporter, shown).await;
            Ok(Action::await_change())
        }
    }
}

async fn report<K: Resource<DynamicType = ()>>(
    object: &DeserializeGuard<K>,
    invalid: &InvalidObject,
    reporter: Reporter<'_>,
    shown: Shown,
) {
    let kind = K::kind(&()).into_owned();
    let name = object.meta().name.clone().unwrap_or_default();
    let namespace = object.meta().namespace.clone();
    warn!(%kind, %name, namespace = namespace.as_deref().unwrap_or_default(), error = %invalid, "cannot decode object: ignored until it is fixed");
    reporter.metrics.invalid_objects.get_or_create(&KindLabels { kind: kind.clone() }).inc();
    let message = format!("stoker cannot read this {kind} and ignores it until it is fixed: {invalid}");
    if let Shown::Condition(type_) = shown {
        let resource = ApiResource::erase::<K>(&());
        // Dynamic, because the typed response would fail to decode just like the object.
        let api: Api<DynamicObject> = match &namespace {
            Some(namespace) => Api::namespaced_with(reporter.client.clone(), namespace, &resource),
            None => Api::all_with(reporter.client.clone(), &resource),
        };
        let condition = json!({
            "type": type_, "status": "False", "reason": UNDECODABLE, "message": message,
            "lastTransitionTime": Time(Timestamp::now()), "observedGeneration": object.meta().generation,
        });
        // A merge patch: server-side apply cannot build its typed view of an object that breaks
        // the schema. The apiserver may still refuse any write to such an object (a CEL rule
        // that cannot evaluate on it); then the Event is all the owner gets.
        let patch = json!({"status": {"conditions": [condition]}});
        if let Err(error) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            debug!(%kind, %name, %error, "cannot show the undecodable object's condition; the Event reports it");
        }
    }
    let reference = object.object_ref(&());
    publish(reporter.recorder, &reference, EventType::Warning, UNDECODABLE, message).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_error_with_its_message() {
        let panicking = async {
            let values: Vec<u64> = Vec::new();
            #[allow(clippy::indexing_slicing)]
            Ok::<u64, Error>(values[3])
        };
        let metrics = Metrics::default();
        match isolate("test", &metrics, panicking).await {
            Err(Error::Panicked(message)) => assert!(message.contains("index out of bounds"), "{message}"),
            other => panic!("expected a panic turned into an error, got {other:?}"),
        }
        assert!(matches!(isolate("test", &metrics, async { Ok::<_, Error>(7) }).await, Ok(7)));
        // Both counted, by result, and timed.
        let exported = metrics.render();
        for sample in [
            "stoker_reconciles_total{controller=\"test\",result=\"error\"} 1",
            "stoker_reconciles_total{controller=\"test\",result=\"success\"} 1",
            "stoker_reconcile_duration_seconds_count{controller=\"test\"} 2",
        ] {
            assert!(exported.lines().any(|line| line == sample), "{sample} not in:\n{exported}");
        }
    }
}
