//! The NodeOverlay controller: read every overlay → parse each (pure: [`decide`]) → hand the valid
//! ones, in precedence order, to the cloud provider, which lays them over every instance type it
//! hands out and every launch → write each overlay's `Ready` condition, with a Warning Event when
//! one turns invalid. An invalid overlay is left out; the others stay in effect.
//!
//! A deleted overlay reconciles nothing, so the set is also handed over every few seconds; the
//! provider reprices only when the set changed.

use std::{sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Api, Resource, ResourceExt,
    core::DeserializeGuard,
    runtime::{Controller, controller::Action, events::EventType, reflector::Store, watcher},
};
use serde_json::json;
use tracing::{instrument, warn};

use super::{
    Provider, Shared, apply_status, conditions, drain,
    isolation::{self, Reporter, Shown},
    publish,
};
use crate::{
    apis::{NodeOverlay, condition},
    error::{Error, Result},
    scheduling::overlays::{self, Overlay},
};

/// How often the set in effect is handed over again (deletions) and each status checked.
const REFRESH: Duration = Duration::from_secs(5);

/// An overlay's conditions (`Ready`, as Karpenter's NodeOverlay), and the overlay or why it is
/// not in effect.
pub fn decide(overlay: &NodeOverlay) -> (Vec<Condition>, Result<Overlay, String>) {
    let previous = overlay.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let parsed = Overlay::from_api(overlay).map_err(|problem| problem.to_string());
    let (reason, message) = match &parsed {
        Ok(_) => ("Applied", String::new()),
        Err(problem) => ("InvalidSpec", format!("not in effect: {problem}")),
    };
    let conditions =
        conditions::set(previous, condition::READY, parsed.is_ok(), reason, &message, overlay.metadata.generation);
    (conditions, parsed)
}

/// The overlays in effect: every one that decodes and parses, in precedence order.
fn in_effect(store: &Store<DeserializeGuard<NodeOverlay>>) -> Vec<Overlay> {
    let decoded = store.state();
    overlays::in_effect(decoded.iter().filter_map(|guard| guard.0.as_ref().ok()))
}

#[instrument(skip_all, fields(nodeoverlay = %overlay.name_any()))]
async fn reconcile<P: Provider>(
    overlay: Arc<NodeOverlay>,
    ctx: &Shared<P>,
    store: &Store<DeserializeGuard<NodeOverlay>>,
) -> Result<Action> {
    ctx.provider.use_overlays(in_effect(store));
    let (conditions, parsed) = decide(&overlay);
    let previous = overlay.status.clone().unwrap_or_default().conditions;
    if previous != conditions {
        let api: Api<NodeOverlay> = Api::all(ctx.client.clone());
        apply_status(&api, &overlay.name_any(), &json!({"conditions": conditions})).await?;
    }
    let was_ready = !previous.iter().any(|c| c.type_ == condition::READY && c.status == condition::FALSE);
    if let Err(problem) = parsed
        && was_ready
    {
        warn!(%problem, "invalid NodeOverlay");
        publish(&ctx.recorder, &overlay.object_ref(&()), EventType::Warning, "InvalidSpec", problem).await;
    }
    Ok(Action::requeue(REFRESH))
}

fn error_policy<P>(_overlay: Arc<DeserializeGuard<NodeOverlay>>, error: &Error, ctx: Arc<Shared<P>>) -> Action {
    warn!(%error, kind = error.metric_label(), "reconcile failed");
    ctx.metrics.reconcile_failed("nodeoverlay", error);
    Action::requeue(REFRESH)
}

/// Runs the NodeOverlay controller until shutdown.
pub async fn run<P: Provider>(ctx: Arc<Shared<P>>) {
    let overlays: Api<DeserializeGuard<NodeOverlay>> = Api::all(ctx.client.clone());
    let controller = Controller::new(overlays, watcher::Config::default()).shutdown_on_signal();
    let store = controller.store();
    let handover = {
        let (ctx, store) = (ctx.clone(), store.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                if store.wait_until_ready().await.is_ok() {
                    ctx.provider.use_overlays(in_effect(&store));
                }
            }
        })
    };
    let results = controller.run(
        move |overlay, ctx: Arc<Shared<P>>| {
            let store = store.clone();
            async move {
                let reporter = Reporter {
                    controller: "nodeoverlay",
                    client: &ctx.client,
                    recorder: &ctx.recorder,
                    metrics: &ctx.metrics,
                };
                isolation::dispatch(overlay, reporter, Shown::Condition(condition::READY), |overlay| {
                    reconcile(overlay, &ctx, &store)
                })
                .await
            }
        },
        error_policy,
        ctx,
    );
    drain(results, "nodeoverlay").await;
    handover.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(spec: &str) -> NodeOverlay {
        serde_saphyr::from_str(&format!(
            "apiVersion: stoker.dev/v1alpha1\nkind: NodeOverlay\nmetadata: {{name: savings, generation: 2}}\nspec: {spec}\n"
        ))
        .expect("a NodeOverlay")
    }

    fn ready(conditions: &[Condition]) -> (&str, &str) {
        let found = conditions.iter().find(|c| c.type_ == "Ready").expect("Ready");
        (found.status.as_str(), found.reason.as_str())
    }

    #[test]
    fn a_valid_overlay_is_ready_and_an_invalid_one_says_why() {
        let (conditions, parsed) = decide(&overlay("{price: '0.05', weight: 10}"));
        assert_eq!(ready(&conditions), ("True", "Applied"));
        assert_eq!(conditions[0].observed_generation, Some(2));
        assert_eq!(parsed.map(|o| o.weight), Ok(10));
        // What only parsing finds: a quantity the schema let through.
        let (conditions, parsed) = decide(&overlay("{capacity: {example.com/slice: 'lots'}}"));
        assert_eq!(ready(&conditions), ("False", "InvalidSpec"));
        let problem = parsed.expect_err("invalid");
        assert!(problem.starts_with("spec.capacity: "), "{problem}");
        assert!(conditions[0].message.contains(&problem));
    }
}
