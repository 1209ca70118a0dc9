//! The WarmPool controller: read the pool and its Deployment → decide the size (pure) → apply
//! the Deployment (pause pods) or, in `Virtual` mode, a CapacityBuffer and its PodTemplate (the
//! Deployment scaled to none), and the PriorityClass → write status, emit an Event on each change of size, and
//! requeue at the next transition instead of polling.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{PodTemplate, PodTemplateSpec},
    scheduling::v1::PriorityClass,
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
    pause::{default_priority_class, deployment, deployment_name, virtual_room},
    shape::{needs_template, shaped},
    windows::{Windows, Workload},
};
use crate::apis::condition;
use crate::{
    apis::{
        CapacityBuffer, WarmPool,
        capacitybuffer::ScalableRef,
        validation::FieldError,
        warmpool::{DEFAULT_PRIORITY_CLASS, Transition, WarmPoolMode, WarmPoolSpec, WarmPoolStatus},
    },
    controllers::{
        FIELD_MANAGER, Shared, apply_status, conditions, drain,
        isolation::{self, Reporter, Shown},
        publish,
    },
    error::{Error, Result},
    metrics::WarmPoolLabels,
    scheduling::quantity::parse_resource,
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
/// is invalid (a typo must not scale a pool to zero in the middle of a peak); never more pods
/// than `limits` allow.
pub fn decide(spec: &WarmPoolSpec, workload: &Workload, current: Option<i32>, now: DateTime<Utc>) -> Decision {
    let mut decision = decide_unlimited(spec, workload, current, now);
    if let Some(cap) = limit_cap(spec) {
        decision.replicas = decision.replicas.min(cap);
        if let Some((at, size)) = decision.next {
            // A change the cap hides is not one: evaluate again then, for the changes after it.
            if size.min(cap) == decision.replicas {
                decision.next = None;
                decision.recheck = Some(decision.recheck.map_or(at, |recheck| recheck.min(at)));
            } else {
                decision.next = Some((at, size.min(cap)));
            }
        }
    }
    decision
}

/// How many pods `limits` lets the pool hold: for each resource it names that a pod requests,
/// the limit divided by the pod's request, rounded down; the least of them. `None` without
/// limits (or none a pod's requests name).
pub fn limit_cap(spec: &WarmPoolSpec) -> Option<i32> {
    let limits = spec.limits.as_ref()?;
    let requests = spec.resources.requests.clone().unwrap_or_default();
    [("cpu", &limits.cpu), ("memory", &limits.memory)]
        .into_iter()
        .filter_map(|(resource, limit)| {
            let limit = parse_resource(resource, &limit.as_ref()?.0).ok()?;
            let per_pod = parse_resource(resource, &requests.get(resource)?.0).ok().filter(|r| *r > 0)?;
            Some(limit.max(0) / per_pod)
        })
        .min()
        .map(|pods| pods.min(i64::from(i32::MAX)) as i32)
}

fn decide_unlimited(spec: &WarmPoolSpec, workload: &Workload, current: Option<i32>, now: DateTime<Utc>) -> Decision {
    match Windows::new(spec, workload) {
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

#[instrument(skip_all, fields(warmpool = %pool.name_any(), namespace = pool.namespace().unwrap_or_default()))]
async fn reconcile<P>(pool: Arc<WarmPool>, ctx: &Shared<P>, policy: &Policy) -> Result<Action> {
    let namespace =
        pool.namespace().ok_or_else(|| Error::MissingField { object: pool.name_any(), field: "metadata.namespace" })?;
    // From here on the pool is seen with its pause pods' shape filled in (see `shape`); a shape
    // that cannot be taken refuses the pool, which keeps its last admitted Deployment.
    let shape = pause_template(ctx, &namespace, &pool.spec).and_then(|template| shaped(&pool.spec, template.as_ref()));
    // A pool shaped or sized by other objects reads them again periodically: nothing watches them.
    let follows_references = pool.spec.scalable_ref.is_some() || needs_template(&pool.spec);
    let (pool, shape_problem) = match shape {
        Ok(spec) => (Arc::new(WarmPool { spec, ..(*pool).clone() }), None),
        Err(problem) => (pool, Some(problem)),
    };
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = deployments.get_opt(&deployment_name(&pool)).await?;
    let current = existing.as_ref().and_then(|d| d.spec.replicas);
    let now = Utc::now();
    let workload = workload_replicas(&ctx.client, &namespace, pool.spec.scalable_ref.as_ref()).await;
    let decision = decide(&pool.spec, &workload, current, now);

    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let classes: Api<PriorityClass> = Api::all(ctx.client.clone());
    let mut priority = classes.get_opt(&pool.spec.priority_class_name).await?;
    if priority.is_none() && pool.spec.priority_class_name == DEFAULT_PRIORITY_CLASS {
        priority = Some(classes.patch(DEFAULT_PRIORITY_CLASS, &apply, &Patch::Apply(default_priority_class())).await?);
    }
    let mut refused = refusals(&pool.spec, policy, priority.as_ref());
    if let Some(problem) = shape_problem {
        refused.push(FieldError { field: "spec.resources".into(), message: problem });
    }
    let virtual_mode = pool.spec.mode == WarmPoolMode::Virtual;
    if virtual_mode && ctx.state.buffers.is_none() {
        refused.push(FieldError {
            field: "spec.mode".into(),
            message: "mode Virtual keeps a CapacityBuffer, and this cluster does not serve the CapacityBuffer API (autoscaling.x-k8s.io/v1beta1): install it with stoker's CRD chart and restart stoker".into(),
        });
    }
    let refusal = (!refused.is_empty()).then(|| refused.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
    let buffers: Api<CapacityBuffer> = Api::namespaced(ctx.client.clone(), &namespace);
    // A refused shape is never applied: the Deployment keeps the last admitted one.
    if refusal.is_none() {
        let pause_pods = if virtual_mode { 0 } else { decision.replicas };
        let desired = deployment(&pool, pause_pods);
        deployments.patch(&deployment_name(&pool), &apply, &Patch::Apply(&desired)).await?;
        if virtual_mode {
            let templates: Api<PodTemplate> = Api::namespaced(ctx.client.clone(), &namespace);
            let (template, buffer) = virtual_room(&pool, decision.replicas);
            templates.patch(&deployment_name(&pool), &apply, &Patch::Apply(&template)).await?;
            buffers.patch(&deployment_name(&pool), &apply, &Patch::Apply(&buffer)).await?;
        } else if ctx.state.buffers.is_some() {
            match buffers.delete(&deployment_name(&pool), &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    let previous = pool.status.clone().unwrap_or_default();
    let generation = pool.metadata.generation;
    let ready = if virtual_mode {
        // The buffer's room, once it exists: its chunks are never pods to count. Read from the
        // apiserver, not the state's cache: a change of the buffer wakes this reconcile through
        // the controller's own watch, which the state's cache may not have seen yet.
        let buffer = match ctx.state.buffers {
            Some(_) => buffers.get_opt(&deployment_name(&pool)).await?,
            None => None,
        };
        let status = buffer.and_then(|b| b.status).unwrap_or_default();
        let held = status.conditions.iter().any(|c| c.type_ == condition::READY && c.status == condition::TRUE);
        if held { status.replicas.unwrap_or(0) } else { 0 }
    } else {
        existing.as_ref().and_then(|d| d.status.as_ref()).and_then(|s| s.ready_replicas).unwrap_or(0)
    };
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
        match (virtual_mode, all_ready) {
            (false, true) => "PausePodsReady",
            (false, false) => "PausePodsPending",
            (true, true) => "RoomHeld",
            (true, false) => "RoomPending",
        },
        &match virtual_mode {
            false => format!("{ready} of {} pause pods ready", decision.replicas),
            true => format!(
                "room for {ready} of {} pods held by CapacityBuffer {}",
                decision.replicas,
                deployment_name(&pool)
            ),
        },
        generation,
    );
    let status = WarmPoolStatus {
        replicas: Some(decision.replicas),
        ready_replicas: Some(ready),
        active_schedules: decision.active.clone(),
        next_transition: decision.next.map(|(at, replicas)| Transition { time: conditions::api_time(at), replicas }),
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
    // the search for one stopped; a pool sized or shaped by a workload follows its changes.
    let wake = decision.next.map(|(at, _)| at).or(decision.recheck);
    let wake = wake.map(|at| (at - now).to_std().unwrap_or_default() + Duration::from_secs(1));
    let follow = follows_references.then_some(FOLLOW_REFERENCES);
    Ok(match wake.into_iter().chain(follow).min() {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// The pod template that shapes the pool's pause pods, when it takes one: from the caches kept
/// for CapacityBuffers, which hold the PodTemplates and workloads it may name.
fn pause_template<P>(
    ctx: &Shared<P>,
    namespace: &str,
    spec: &WarmPoolSpec,
) -> std::result::Result<Option<PodTemplateSpec>, String> {
    if !needs_template(spec) {
        return Ok(None);
    }
    let sources = ctx.state.buffers.as_ref().ok_or(
        "podTemplateRef and scalableRef shapes are read from the caches stoker keeps for the CapacityBuffer API, which this cluster does not serve: set resources.requests",
    )?;
    let referenced = sources.referenced_by(namespace, spec.pod_template_ref.as_ref(), spec.scalable_ref.as_ref());
    referenced.map(|found| Some(found.template)).map_err(|unresolved| unresolved.to_string())
}

/// How often a pool sized or shaped by other objects reads them again.
const FOLLOW_REFERENCES: Duration = Duration::from_secs(15);

/// The replicas of the pool's `scalableRef` (its scale subresource's `spec.replicas`), or why
/// they cannot be read: a kind the cluster does not serve, an object that is not there, no
/// right to read its `/scale`.
async fn workload_replicas(client: &kube::Client, namespace: &str, reference: Option<&ScalableRef>) -> Workload {
    let Some(reference) = reference else { return Err("spec.scalableRef is not set".into()) };
    let group = if reference.api_group.is_empty() { "apps" } else { reference.api_group.as_str() };
    let served =
        kube::discovery::group(client, group).await.map_err(|e| format!("spec.scalableRef: API group {group}: {e}"))?;
    let (resource, _) = served
        .recommended_kind(&reference.kind)
        .ok_or_else(|| format!("spec.scalableRef: API group {group} serves no kind {}", reference.kind))?;
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let scale = api
        .get_scale(&reference.name)
        .await
        .map_err(|e| format!("spec.scalableRef: the scale of {} {}: {e}", reference.kind, reference.name))?;
    Ok(scale.spec.and_then(|spec| spec.replicas).unwrap_or(0))
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
    let mut controller = Controller::new(pools, watcher::Config::default())
        .owns(deployments, watcher::Config::default().labels(crate::apis::labels::WARMPOOL));
    // A Virtual pool's readiness is its CapacityBuffer's.
    if ctx.state.buffers.is_some() {
        controller = controller.owns(Api::<CapacityBuffer>::all(ctx.client.clone()), watcher::Config::default());
    }
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

    const NO_WORKLOAD: Workload = Err(String::new());

    #[test]
    fn percentages_follow_the_workload_and_an_unknown_one_keeps_the_size() {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        let relative = spec(
            "scalableRef: {kind: Deployment, name: checkout}\nbaselinePercentage: 10\nschedules: [{name: day, start: '0 8 * * *', duration: 10h, percentage: 20}]",
        );
        // 20% of 40 replicas in the window; 10% of 40 (4, above the baseline's 2) after it.
        let decision = decide(&relative, &Ok(40), Some(2), at);
        assert_eq!(decision.replicas, 8);
        assert_eq!(decision.next, Some((Utc.with_ymd_and_hms(2026, 11, 23, 18, 0, 0).unwrap(), 4)));
        assert_eq!(decide(&relative, &Ok(41), Some(2), at).replicas, 9, "rounded up");
        assert_eq!(decide(&relative, &Ok(i32::MAX), Some(2), at).replicas, 10_000, "capped, no overflow");
        let lost = decide(&relative, &Err("spec.scalableRef: Deployment checkout not found".into()), Some(5), at);
        assert_eq!(lost.replicas, 5, "a workload that cannot be read keeps the size");
        assert!(lost.invalid.unwrap().contains("checkout not found"));
    }

    fn spec(extra: &str) -> WarmPoolSpec {
        serde_saphyr::from_str(&format!("resources: {{requests: {{cpu: 500m}}}}\nleadTime: 0s\nbaseline: 2\n{extra}"))
            .unwrap()
    }

    #[test]
    fn decides_from_the_windows() {
        let spec = spec("schedules: [{name: day, start: '0 8 * * *', duration: 10h, replicas: 9}]");
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        let decision = decide(&spec, &NO_WORKLOAD, Some(2), at);
        assert_eq!((decision.replicas, decision.active.as_slice()), (9, ["day".to_string()].as_slice()));
        assert_eq!(decision.next, Some((Utc.with_ymd_and_hms(2026, 11, 23, 18, 0, 0).unwrap(), 2)));
    }

    #[test]
    fn limits_cap_every_size_and_hide_the_changes_they_flatten() {
        let day = "schedules: [{name: day, start: '0 8 * * *', duration: 10h, replicas: 9}]";
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        // 2,000m holds four 500m pods: the window's 9 become 4; the baseline's 2 stay 2.
        let capped = spec(&format!("{day}\nlimits: {{cpu: '2'}}"));
        assert_eq!(limit_cap(&capped), Some(4));
        let decision = decide(&capped, &NO_WORKLOAD, Some(2), at);
        assert_eq!(decision.replicas, 4);
        assert_eq!(decision.next, Some((Utc.with_ymd_and_hms(2026, 11, 23, 18, 0, 0).unwrap(), 2)));
        // 750m holds one: the window changes nothing, so there is no transition, only a recheck.
        let flat = spec(&format!("{day}\nlimits: {{cpu: 750m, memory: 64Gi}}"));
        let decision = decide(&flat, &NO_WORKLOAD, Some(1), at);
        assert_eq!((decision.replicas, decision.next), (1, None));
        assert_eq!(decision.recheck, Some(Utc.with_ymd_and_hms(2026, 11, 23, 18, 0, 0).unwrap()));
        // A limit on what a pod does not request caps nothing.
        assert_eq!(limit_cap(&spec("limits: {memory: 1Gi}")), None);
        assert_eq!(limit_cap(&spec("")), None);
    }

    #[test]
    fn paused_and_invalid_pools_keep_their_size() {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        let paused = spec("paused: true\nschedules: [{name: day, start: '0 8 * * *', duration: 10h, replicas: 9}]");
        assert_eq!(decide(&paused, &NO_WORKLOAD, Some(4), at).replicas, 4);
        assert_eq!(decide(&paused, &NO_WORKLOAD, None, at).replicas, 9);
        let invalid = spec("schedules: [{name: day, start: '0 8 * *', duration: 10h, replicas: 9}]");
        let decision = decide(&invalid, &NO_WORKLOAD, Some(4), at);
        assert_eq!(decision.replicas, 4);
        assert!(decision.invalid.unwrap().contains("spec.schedules[0].start"));
    }
}
