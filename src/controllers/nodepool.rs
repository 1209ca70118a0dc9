//! The NodePool status controller: read the pool, its NodeClaims and its node class → decide the
//! status (pure): usage against the limits in force, the schedules open now and the next change
//! of them, `ValidationSucceeded` (the checks the schema cannot make,
//! the same `stoker validate` runs) and `Ready` (valid, and its node class is ready) → apply it
//! and the usage metrics → a Warning Event when the pool turns invalid. A change of one of its
//! NodeClaims reconciles the pool at once; it also requeues every ten seconds, or at its schedules'
//! next change if that comes sooner.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Api, Resource, ResourceExt,
    core::DeserializeGuard,
    runtime::{Controller, controller::Action, events::EventType, reflector::ObjectRef, watcher},
};
use serde_json::json;
use tracing::{instrument, warn};

use super::{
    Shared, apply_status, conditions, drain,
    isolation::{self, Reporter, Shown},
    publish,
};
use crate::apis::condition;
use crate::{
    apis::{EC2NodeClass, NodeClaim, NodePool, labels, nodepool::ScheduleTransition, validation::nodepool_errors},
    error::{Error, Result},
    scheduling::{resources::Resources, solver::NODES},
    state::{
        schedules::{effective, schedule_state},
        usage::usage_by_pool,
    },
};

/// How often usage is brought up to date.
const REFRESH: Duration = Duration::from_secs(10);

/// The conditions of a pool: `ValidationSucceeded` from its own problems, `NodeClassReady` from
/// its node class, `Ready` when both hold (as Karpenter's NodePool, so `kubectl get nodepools`
/// shows READY). Returns them with the validation problem, if any.
pub fn decide_conditions(pool: &NodePool, class: Option<&EC2NodeClass>) -> (Vec<Condition>, Option<String>) {
    let generation = pool.metadata.generation;
    let previous = pool.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let problems = nodepool_errors(pool);
    let problem =
        (!problems.is_empty()).then(|| problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
    let mut out = conditions::set(
        previous,
        condition::VALIDATION_SUCCEEDED,
        problem.is_none(),
        if problem.is_none() { "Valid" } else { "InvalidSpec" },
        problem.as_deref().unwrap_or(""),
        generation,
    );
    let class_name = &pool.spec.template.spec.node_class_ref.name;
    let (class_ok, class_reason, class_message) = match class {
        None => (false, "NodeClassNotFound", format!("EC2NodeClass {class_name} not found")),
        Some(class) if !class_ready(class) => {
            (false, "NodeClassNotReady", format!("EC2NodeClass {class_name} is not ready"))
        }
        Some(_) => (true, "NodeClassReady", String::new()),
    };
    out = conditions::set(&out, condition::NODE_CLASS_READY, class_ok, class_reason, &class_message, generation);
    let (ready, reason, message) = match &problem {
        Some(_) => (false, "InvalidSpec", "the NodePool is invalid (see ValidationSucceeded)".to_owned()),
        None if !class_ok => (false, class_reason, class_message),
        None => (true, "Ready", String::new()),
    };
    out = conditions::set(&out, condition::READY, ready, reason, &message, generation);
    (out, problem)
}

fn class_ready(class: &EC2NodeClass) -> bool {
    class.status.iter().flat_map(|s| &s.conditions).any(|c| c.type_ == condition::READY && c.status == condition::TRUE)
}

#[instrument(skip_all, fields(nodepool = %pool.name_any()))]
async fn reconcile<P>(pool: Arc<NodePool>, ctx: &Shared<P>) -> Result<Action> {
    let name = pool.name_any();
    let mut counted = usage_by_pool(&ctx.state.claims.state()).remove(&name).unwrap_or_default();
    let nodes = counted.get(NODES);
    // Zero nodes is a figure too, not a missing one.
    counted.set(NODES, nodes);
    // Status shows the node count apart from the resources.
    let usage: Resources =
        counted.iter().filter(|(resource, _)| *resource != NODES).map(|(r, a)| (r.to_owned(), a)).collect();
    let now = Utc::now();
    // The limits in force now, a schedule's where one is open.
    let in_force = effective(&pool, now);
    let limits = in_force.spec.limits.as_ref().and_then(|limits| Resources::from_quantities(limits).ok());
    ctx.metrics.nodepool_resources(&name, &counted, limits.as_ref());
    let schedules = schedule_state(&pool, now);
    let next_transition = schedules.next.as_ref().map(|(time, active)| ScheduleTransition {
        time: conditions::api_time(*time),
        active_schedules: active.clone(),
    });

    let class = ctx.state.classes.get(&ObjectRef::new(&pool.spec.template.spec.node_class_ref.name));
    let (conditions, problem) = decide_conditions(&pool, class.as_deref());
    let resources = usage.to_quantities();
    let current = pool.status.clone().unwrap_or_default();
    let unchanged = current.resources == resources
        && current.nodes == Some(nodes)
        && current.conditions == conditions
        && current.active_schedules == schedules.active
        && current.next_transition == next_transition;
    if !unchanged {
        // The schema refuses null: what has no value is left out, which server-side apply takes
        // as removing what this manager set before (no NodeClaims, no open schedule).
        let mut status = json!({"nodes": nodes, "conditions": conditions});
        if !resources.is_empty() {
            status["resources"] = json!(resources);
        }
        if !schedules.active.is_empty() {
            status["activeSchedules"] = json!(schedules.active);
        }
        if let Some(next) = &next_transition {
            status["nextTransition"] = json!(next);
        }
        let api: Api<NodePool> = Api::all(ctx.client.clone());
        apply_status(&api, &name, &status).await?;
    }
    let was_valid =
        !current.conditions.iter().any(|c| c.type_ == condition::VALIDATION_SUCCEEDED && c.status == condition::FALSE);
    if let Some(problem) = problem.filter(|_| was_valid) {
        warn!(%problem, "invalid NodePool");
        publish(&ctx.recorder, &pool.object_ref(&()), EventType::Warning, "InvalidSpec", problem).await;
    }
    // Status follows the schedules on time; decisions read the clock themselves.
    let until_change = schedules
        .next
        .map(|(at, _)| at)
        .or(schedules.recheck)
        .and_then(|at| (at - now).to_std().ok())
        .map_or(REFRESH, |wait| wait.clamp(Duration::from_secs(1), REFRESH));
    Ok(Action::requeue(until_change))
}

fn error_policy<P>(_pool: Arc<DeserializeGuard<NodePool>>, error: &Error, ctx: Arc<Shared<P>>) -> Action {
    warn!(%error, kind = error.metric_label(), "reconcile failed");
    ctx.metrics.reconcile_failed("nodepool", error);
    Action::requeue(REFRESH)
}

/// Runs the NodePool status controller until shutdown.
pub async fn run<P: Send + Sync + 'static>(ctx: Arc<Shared<P>>) {
    let pools: Api<DeserializeGuard<NodePool>> = Api::all(ctx.client.clone());
    let claims: Api<DeserializeGuard<NodeClaim>> = Api::all(ctx.client.clone());
    // A NodeClaim's change moves its pool's usage: reconcile the pool it is labelled with.
    let pool_of = |claim: DeserializeGuard<NodeClaim>| {
        claim.labels().get(labels::NODEPOOL).map(|pool| ObjectRef::<DeserializeGuard<NodePool>>::new(pool))
    };
    let state = ctx.state.clone();
    let sweep = crate::controllers::sweep_series(ctx.clone(), move |metrics| {
        metrics.retain_nodepools(|name| state.pools.get(&ObjectRef::new(name)).is_some())
    });
    let results = Controller::new(pools, watcher::Config::default())
        .watches(claims, watcher::Config::default(), pool_of)
        .shutdown_on_signal()
        .run(
            |pool, ctx: Arc<Shared<P>>| async move {
                let reporter = Reporter {
                    controller: "nodepool",
                    client: &ctx.client,
                    recorder: &ctx.recorder,
                    metrics: &ctx.metrics,
                };
                isolation::dispatch(pool, reporter, Shown::Condition(condition::VALIDATION_SUCCEEDED), |pool| {
                    reconcile(pool, &ctx)
                })
                .await
            },
            error_policy,
            ctx,
        );
    drain(results, "nodepool").await;
    sweep.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(extra: &str) -> NodePool {
        serde_saphyr::from_str(&format!(
            "apiVersion: stoker.dev/v1alpha1\nkind: NodePool\nmetadata: {{name: general, generation: 3}}\nspec:\n  template: {{spec: {{nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}{extra}}}}}\n"
        ))
        .expect("a NodePool")
    }

    fn class(ready: bool) -> EC2NodeClass {
        let status = if ready { "True" } else { "False" };
        serde_saphyr::from_str(&format!(
            "apiVersion: stoker.dev/v1alpha1\nkind: EC2NodeClass\nmetadata: {{name: default}}\nspec:\n  role: r\n  amiSelectorTerms: [{{alias: al2023@latest}}]\n  subnetSelectorTerms: [{{id: s}}]\n  securityGroupSelectorTerms: [{{id: g}}]\nstatus:\n  conditions: [{{type: Ready, status: '{status}', reason: x, message: '', lastTransitionTime: '2026-01-01T00:00:00Z'}}]\n"
        ))
        .expect("an EC2NodeClass")
    }

    fn condition<'a>(conditions: &'a [Condition], type_: &str) -> (&'a str, &'a str) {
        let found = conditions.iter().find(|c| c.type_ == type_).expect("the condition");
        (found.status.as_str(), found.reason.as_str())
    }

    #[test]
    fn ready_needs_a_valid_pool_and_a_ready_class() {
        let valid = pool("");
        let (conditions, problem) = decide_conditions(&valid, Some(&class(true)));
        assert_eq!(problem, None);
        assert_eq!(condition(&conditions, "ValidationSucceeded"), ("True", "Valid"));
        assert_eq!(condition(&conditions, "Ready"), ("True", "Ready"));
        assert_eq!(condition(&conditions, "NodeClassReady"), ("True", "NodeClassReady"));
        assert!(conditions.iter().all(|c| c.observed_generation == Some(3)));
        assert_eq!(
            condition(&decide_conditions(&valid, Some(&class(false))).0, "Ready"),
            ("False", "NodeClassNotReady")
        );
        assert_eq!(condition(&decide_conditions(&valid, None).0, "Ready"), ("False", "NodeClassNotFound"));
        assert_eq!(condition(&decide_conditions(&valid, None).0, "NodeClassReady"), ("False", "NodeClassNotFound"));

        let invalid = pool(", expireAfter: 2300000000h");
        let (conditions, problem) = decide_conditions(&invalid, Some(&class(true)));
        assert!(problem.is_some_and(|p| p.contains("spec.template.spec.expireAfter")));
        assert_eq!(condition(&conditions, "ValidationSucceeded"), ("False", "InvalidSpec"));
        assert_eq!(condition(&conditions, "Ready"), ("False", "InvalidSpec"));
    }
}
