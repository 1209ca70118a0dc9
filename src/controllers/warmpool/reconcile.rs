//! The WarmPool controller: read the pool and its Deployment → decide the size (pure) → apply
//! the Deployment and PriorityClass → write status, emit an Event on each change of size, and
//! requeue at the next transition instead of polling.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use k8s_openapi::{
    api::{apps::v1::Deployment, scheduling::v1::PriorityClass},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::DeserializeGuard,
    runtime::{Controller, controller::Action, events::EventType, watcher},
};
use tracing::{info, instrument, warn};

use super::{
    admission::{Policy, refusals},
    pause::{default_priority_class, deployment, deployment_name},
    windows::Windows,
};
use crate::apis::condition;
use crate::{
    apis::{
        WarmPool,
        warmpool::{DEFAULT_PRIORITY_CLASS, Transition, WarmPoolSpec, WarmPoolStatus},
    },
    controllers::{
        FIELD_MANAGER, Shared, apply_status, conditions, drain,
        isolation::{self, Reporter, Shown},
        publish,
    },
    error::{Error, Result},
    metrics::WarmPoolLabels,
};

/// What a WarmPool should hold at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub replicas: i32,
    pub active: Vec<String>,
    pub next: Option<(DateTime<Utc>, i32)>,
    /// Without a known next change: when to evaluate again (see [`super::windows::Evaluation::recheck`]).
    pub recheck: Option<DateTime<Utc>>,
    /// Why the schedule cannot be evaluated, when it cannot.
    pub invalid: Option<String>,
}

/// The size to hold: the windows' answer, or the current size while paused or while the schedule
/// is invalid (a typo must not scale a pool to zero in the middle of a peak).
pub fn decide(spec: &WarmPoolSpec, current: Option<i32>, now: DateTime<Utc>) -> Decision {
    match Windows::new(spec) {
        Err(errors) => Decision {
            replicas: current.unwrap_or(spec.baseline),
            active: Vec::new(),
            next: None,
            recheck: None,
            invalid: Some(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")),
        },
        Ok(windows) => {
            let evaluation = windows.evaluate(now);
            if spec.paused {
                Decision {
                    replicas: current.unwrap_or(evaluation.replicas),
                    active: Vec::new(),
                    next: None,
                    recheck: None,
                    invalid: None,
                }
            } else {
                Decision {
                    replicas: evaluation.replicas,
                    active: evaluation.active,
                    next: evaluation.next,
                    recheck: evaluation.recheck,
                    invalid: None,
                }
            }
        }
    }
}

fn timestamp(at: DateTime<Utc>) -> Time {
    Time(Timestamp::from_second(at.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH))
}

#[instrument(skip_all, fields(warmpool = %pool.name_any(), namespace = pool.namespace().unwrap_or_default()))]
async fn reconcile<P>(pool: Arc<WarmPool>, ctx: &Shared<P>, policy: &Policy) -> Result<Action> {
    let namespace =
        pool.namespace().ok_or_else(|| Error::MissingField { object: pool.name_any(), field: "metadata.namespace" })?;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = deployments.get_opt(&deployment_name(&pool)).await?;
    let current = existing.as_ref().and_then(|d| d.spec.replicas);
    let now = Utc::now();
    let decision = decide(&pool.spec, current, now);

    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let classes: Api<PriorityClass> = Api::all(ctx.client.clone());
    let mut priority = classes.get_opt(&pool.spec.priority_class_name).await?;
    if priority.is_none() && pool.spec.priority_class_name == DEFAULT_PRIORITY_CLASS {
        priority = Some(classes.patch(DEFAULT_PRIORITY_CLASS, &apply, &Patch::Apply(default_priority_class())).await?);
    }
    let refused = refusals(&pool.spec, policy, priority.as_ref());
    let refusal = (!refused.is_empty()).then(|| refused.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
    // A refused shape is never applied: the Deployment keeps the last admitted one.
    if refusal.is_none() {
        let desired = deployment(&pool, decision.replicas);
        deployments.patch(&deployment_name(&pool), &apply, &Patch::Apply(&desired)).await?;
    }

    let previous = pool.status.clone().unwrap_or_default();
    let generation = pool.metadata.generation;
    let ready = existing.as_ref().and_then(|d| d.status.as_ref()).and_then(|s| s.ready_replicas).unwrap_or(0);
    let labels = WarmPoolLabels { namespace: namespace.clone(), warmpool: pool.name_any() };
    ctx.metrics.warmpool_sizes(&labels, decision.replicas.into(), ready.into());
    let mut status_conditions = conditions::set(
        &previous.conditions,
        condition::SCHEDULE_VALID,
        decision.invalid.is_none(),
        if decision.invalid.is_none() { "Valid" } else { "InvalidSchedule" },
        decision.invalid.as_deref().unwrap_or(""),
        generation,
    );
    status_conditions = conditions::set(
        &status_conditions,
        condition::ADMITTED,
        refusal.is_none(),
        if refusal.is_none() { "Admitted" } else { "NotAdmitted" },
        refusal.as_deref().unwrap_or(""),
        generation,
    );
    let all_ready = ready >= decision.replicas;
    status_conditions = conditions::set(
        &status_conditions,
        condition::READY,
        all_ready && decision.invalid.is_none() && refusal.is_none(),
        if all_ready { "PausePodsReady" } else { "PausePodsPending" },
        &format!("{ready} of {} pause pods ready", decision.replicas),
        generation,
    );
    let status = WarmPoolStatus {
        replicas: Some(decision.replicas),
        ready_replicas: Some(ready),
        active_schedules: decision.active.clone(),
        next_transition: decision.next.map(|(at, replicas)| Transition { time: timestamp(at), replicas }),
        // Written by the preemption counter under its own field manager; left out of this apply.
        last_preemption_time: None,
        preemptions: None,
        conditions: status_conditions,
        observed_generation: generation,
    };
    let api: Api<WarmPool> = Api::namespaced(ctx.client.clone(), &namespace);
    apply_status(&api, &pool.name_any(), &status).await?;

    let reference = pool.object_ref(&());
    if let Some(refusal) = &refusal {
        if previous.conditions.iter().all(|c| c.type_ != condition::ADMITTED || c.status == condition::TRUE) {
            warn!(%refusal, "not admitted");
            publish(&ctx.recorder, &reference, EventType::Warning, "NotAdmitted", refusal.clone()).await;
        }
    } else if let Some(problem) = &decision.invalid {
        if previous.conditions.iter().all(|c| c.type_ != condition::SCHEDULE_VALID || c.status == condition::TRUE) {
            warn!(%problem, "invalid schedule");
            publish(&ctx.recorder, &reference, EventType::Warning, "InvalidSchedule", problem.clone()).await;
        }
    } else if previous.replicas != Some(decision.replicas) {
        let windows = if decision.active.is_empty() { "baseline".to_owned() } else { decision.active.join(", ") };
        // Distinct reasons, because events with one reason within minutes fold into a series
        // that keeps the first message.
        let (reason, note) = match previous.replicas {
            Some(before) if before < decision.replicas => {
                ("ScaledUp", format!("Scaled pause pods from {before} to {} ({windows})", decision.replicas))
            }
            Some(before) => {
                ("ScaledDown", format!("Scaled pause pods from {before} to {} ({windows})", decision.replicas))
            }
            None => ("Holding", format!("Holding {} pause pods ({windows})", decision.replicas)),
        };
        info!(replicas = decision.replicas, %windows, "scaled");
        publish(&ctx.recorder, &reference, EventType::Normal, reason, note).await;
    }

    // Wake at the transition itself (a second late is better than a second early), or where
    // the search for one stopped.
    Ok(match decision.next.map(|(at, _)| at).or(decision.recheck) {
        Some(at) => Action::requeue((at - now).to_std().unwrap_or_default() + Duration::from_secs(1)),
        None => Action::await_change(),
    })
}

fn error_policy<P>(_pool: Arc<DeserializeGuard<WarmPool>>, error: &Error, ctx: Arc<Shared<P>>) -> Action {
    warn!(error = %error, kind = error.metric_label(), "reconcile failed");
    ctx.metrics.reconcile_failed("warmpool", error);
    Action::requeue(Duration::from_secs(5))
}

/// Runs the WarmPool controller until the stream ends (on shutdown), admitting pools by `policy`.
pub async fn run<P: Send + Sync + 'static>(ctx: Arc<Shared<P>>, policy: Policy) {
    let policy = Arc::new(policy);
    let pools: Api<DeserializeGuard<WarmPool>> = Api::all(ctx.client.clone());
    let deployments: Api<Deployment> = Api::all(ctx.client.clone());
    let controller = Controller::new(pools, watcher::Config::default())
        .owns(deployments, watcher::Config::default().labels(crate::apis::labels::WARMPOOL));
    let store = controller.store();
    let sweep = crate::controllers::sweep_series(ctx.clone(), move |metrics| {
        metrics.retain_warmpools(|l| {
            store.get(&kube::runtime::reflector::ObjectRef::new(&l.warmpool).within(&l.namespace)).is_some()
        })
    });
    let results = controller.shutdown_on_signal().run(
        move |pool, ctx: Arc<Shared<P>>| {
            let policy = policy.clone();
            async move {
                let reporter = Reporter {
                    controller: "warmpool",
                    client: &ctx.client,
                    recorder: &ctx.recorder,
                    metrics: &ctx.metrics,
                };
                // Its Deployment keeps its size, as for an invalid schedule.
                isolation::dispatch(pool, reporter, Shown::Condition(condition::READY), |pool| {
                    reconcile(pool, &ctx, &policy)
                })
                .await
            }
        },
        error_policy,
        ctx,
    );
    drain(results, "warmpool").await;
    sweep.abort();
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn spec(extra: &str) -> WarmPoolSpec {
        serde_saphyr::from_str(&format!("resources: {{requests: {{cpu: 500m}}}}\nleadTime: 0s\nbaseline: 2\n{extra}"))
            .unwrap()
    }

    #[test]
    fn decides_from_the_windows() {
        let spec = spec("schedules: [{name: day, start: '0 8 * * *', duration: 10h, replicas: 9}]");
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        let decision = decide(&spec, Some(2), at);
        assert_eq!((decision.replicas, decision.active.as_slice()), (9, ["day".to_string()].as_slice()));
        assert_eq!(decision.next, Some((Utc.with_ymd_and_hms(2026, 11, 23, 18, 0, 0).unwrap(), 2)));
    }

    #[test]
    fn paused_and_invalid_pools_keep_their_size() {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        let paused = spec("paused: true\nschedules: [{name: day, start: '0 8 * * *', duration: 10h, replicas: 9}]");
        assert_eq!(decide(&paused, Some(4), at).replicas, 4);
        assert_eq!(decide(&paused, None, at).replicas, 9);
        let invalid = spec("schedules: [{name: day, start: '0 8 * *', duration: 10h, replicas: 9}]");
        let decision = decide(&invalid, Some(4), at);
        assert_eq!(decision.replicas, 4);
        assert!(decision.invalid.unwrap().contains("spec.schedules[0].start"));
    }
}
