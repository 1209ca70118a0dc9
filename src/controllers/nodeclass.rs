//! The EC2NodeClass controller: resolve the selector terms through the cloud provider → decide
//! the conditions (pure) → write status → Event when something cannot be resolved; requeue to
//! notice changes in the account (a new subnet, a new AMI release).
//!
//! A finalizer holds a node class that is being deleted until no NodeClaim uses it, then
//! deletes what the provider created for it (launch templates, its instance profile).

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use kube::{
    Api, Resource, ResourceExt,
    api::ListParams,
    core::DeserializeGuard,
    runtime::{Controller, controller::Action, events::EventType, watcher},
};
use tracing::{info, instrument, warn};

use crate::apis::condition;
use crate::controllers::Provider;
use crate::{
    apis::{
        ec2nodeclass::{EC2NodeClass, EC2NodeClassStatus, ResolvedCapacityReservation},
        nodeclaim::NodeClaim,
    },
    controllers::{
        Shared, apply_status, conditions, drain,
        finalizer::{self, Cleanup},
        isolation::{self, Reporter, Shown},
        publish, reservations,
    },
    error::{Error, Result},
};

/// Held on every EC2NodeClass until its cloud resources are cleaned up.
pub const FINALIZER: &str = "stoker.dev/termination";
/// How often a ready node class is resolved again.
const REFRESH: Duration = Duration::from_secs(300);
/// How soon a class is resolved again when a reservation it lists as scheduled has passed its
/// start.
const START_RECHECK: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// The conditions for a resolution, and a message naming what is missing (when something is).
pub fn decide_conditions(
    previous: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    resolved: &EC2NodeClassStatus,
    class: &EC2NodeClass,
) -> (Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>, Option<String>) {
    let generation = class.metadata.generation;
    let wants_profile = class.spec.role.is_some() || class.spec.instance_profile.is_some();
    let checks = [
        ("SubnetsReady", !resolved.subnets.is_empty(), "SubnetsNotFound", "no subnet matches spec.subnetSelectorTerms"),
        (
            "SecurityGroupsReady",
            !resolved.security_groups.is_empty(),
            "SecurityGroupsNotFound",
            "no security group matches spec.securityGroupSelectorTerms",
        ),
        ("AMIsReady", !resolved.amis.is_empty(), "AMIsNotFound", "no AMI matches spec.amiSelectorTerms"),
        (
            "InstanceProfileReady",
            !wants_profile || resolved.instance_profile.is_some(),
            "InstanceProfileNotFound",
            "no instance profile for spec.role",
        ),
    ];
    let mut out = previous.to_vec();
    let mut missing = Vec::new();
    for (type_, ok, reason, message) in checks {
        out = conditions::set(
            &out,
            type_,
            ok,
            if ok { "Resolved" } else { reason },
            if ok { "" } else { message },
            generation,
        );
        if !ok {
            missing.push(message);
        }
    }
    let problem = (!missing.is_empty()).then(|| missing.join("; "));
    out = conditions::set(
        &out,
        condition::READY,
        problem.is_none(),
        if problem.is_none() { "Ready" } else { "NotResolved" },
        problem.as_deref().unwrap_or(""),
        generation,
    );
    (out, problem)
}

#[instrument(skip_all, fields(ec2nodeclass = %class.name_any()))]
async fn reconcile<P: Provider + 'static>(class: Arc<EC2NodeClass>, ctx: &Shared<P>) -> Result<Action> {
    let api: Api<EC2NodeClass> = Api::all(ctx.client.clone());
    finalizer::reconcile(&api, FINALIZER, &*class, || apply(&class, ctx), || cleanup(&class, ctx)).await
}

async fn apply<P: Provider>(class: &EC2NodeClass, ctx: &Shared<P>) -> Result<Action> {
    let previous = class.status.clone().unwrap_or_default();
    let reference = class.object_ref(&());
    let (status, problem) = match ctx.provider.resolve_node_class(class).await {
        Ok(resolved) => {
            let (conditions, problem) = decide_conditions(&previous.conditions, &resolved, class);
            (EC2NodeClassStatus { conditions, ..resolved }, problem)
        }
        Err(error) => {
            // Keep what was resolved before: an AWS outage must not unresolve a working class.
            let message = format!("cannot resolve: {error}");
            let conditions = conditions::set(
                &previous.conditions,
                condition::READY,
                false,
                error.reason(),
                &message,
                class.metadata.generation,
            );
            (EC2NodeClassStatus { conditions, ..previous.clone() }, Some(message))
        }
    };
    let dropped =
        previous.capacity_reservations.iter().any(|r| !status.capacity_reservations.iter().any(|s| s.id == r.id));
    // A reservation that ended leaves the status too: its nodes are relabelled on-demand first,
    // so that drift, which reads the status, takes only the deselected ones. A failure here
    // does not hold the status back (the minute's check relabels them later).
    if dropped && let Err(error) = reservations::relabel_ended(ctx).await {
        warn!(%error, "cannot relabel the nodes of ended capacity reservations");
    }
    let api: Api<EC2NodeClass> = Api::all(ctx.client.clone());
    apply_status(&api, &class.name_any(), &status).await?;
    if problem.is_none() {
        // Price the class's instance types now, so the first batch that needs them does not wait.
        let resolved = EC2NodeClass { status: Some(status.clone()), ..class.clone() };
        if let Err(error) = ctx.provider.instance_types(&resolved).await {
            warn!(%error, "cannot price the node class's instance types");
        }
    }

    let was_ready = previous.conditions.iter().any(|c| c.type_ == condition::READY && c.status == condition::TRUE);
    let previous_message = previous.conditions.iter().find(|c| c.type_ == condition::READY).map(|c| c.message.as_str());
    match &problem {
        Some(problem) if previous_message != Some(problem.as_str()) => {
            warn!(%problem, "node class not resolved");
            publish(&ctx.recorder, &reference, EventType::Warning, "NotResolved", problem.clone()).await;
        }
        None if !was_ready => {
            let note = format!(
                "Resolved {} subnets, {} security groups, {} AMIs",
                status.subnets.len(),
                status.security_groups.len(),
                status.amis.len()
            );
            info!(%note, "node class ready");
            publish(&ctx.recorder, &reference, EventType::Normal, "Ready", note).await;
        }
        _ => {}
    }
    Ok(Action::requeue(if problem.is_some() { Duration::from_secs(60) } else { next_refresh(&status, Utc::now()) }))
}

/// When to resolve the class again: after [`REFRESH`], or sooner when a reservation it selects
/// starts before then (it is then launched into at once, not up to five minutes late) or a
/// Capacity Block is to start draining (its status then says `expiring`, and nothing more is
/// launched into it).
fn next_refresh(status: &EC2NodeClassStatus, now: DateTime<Utc>) -> Duration {
    let reservations = &status.capacity_reservations;
    // EC2 may still list one as scheduled just after its start: look again shortly.
    let start = |r: &ResolvedCapacityReservation| r.starts_at().map(|at| at.max(now + START_RECHECK));
    let changes = reservations.iter().flat_map(|r| [start(r), r.drain_from()]).flatten();
    reservations::until_next_mark(changes, now, REFRESH)
}

async fn cleanup<P: Provider>(class: &EC2NodeClass, ctx: &Shared<P>) -> Result<Cleanup> {
    let claims: Api<NodeClaim> = Api::all(ctx.client.clone());
    let name = class.name_any();
    let users: Vec<String> = claims
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|claim| claim.spec.node_class_ref.name == name)
        .map(|claim| claim.name_any())
        .collect();
    if !users.is_empty() {
        let note = format!("Waiting for {} NodeClaims to be deleted: {}", users.len(), users.join(", "));
        publish(&ctx.recorder, &class.object_ref(&()), EventType::Normal, "WaitingOnNodeClaims", note).await;
        return Ok(Cleanup::InProgress(Action::requeue(Duration::from_secs(10))));
    }
    ctx.provider.delete_node_class_resources(class).await?;
    info!("cleaned up node class resources");
    Ok(Cleanup::Done)
}

fn error_policy<P>(_class: Arc<DeserializeGuard<EC2NodeClass>>, error: &Error, ctx: Arc<Shared<P>>) -> Action {
    warn!(%error, kind = error.metric_label(), "reconcile failed");
    ctx.metrics.reconcile_failed("ec2nodeclass", error);
    Action::requeue(Duration::from_secs(10))
}

/// Runs the EC2NodeClass controller until shutdown.
pub async fn run<P: Provider + 'static>(ctx: Arc<Shared<P>>) {
    let classes: Api<DeserializeGuard<EC2NodeClass>> = Api::all(ctx.client.clone());
    let results = Controller::new(classes, watcher::Config::default()).shutdown_on_signal().run(
        |class, ctx: Arc<Shared<P>>| async move {
            let reporter = Reporter {
                controller: "ec2nodeclass",
                client: &ctx.client,
                recorder: &ctx.recorder,
                metrics: &ctx.metrics,
            };
            // Its resolved status is rebuilt once the class is fixed; until then it is not Ready.
            isolation::dispatch(class, reporter, Shown::Condition(condition::READY), |class| reconcile(class, &ctx))
                .await
        },
        error_policy,
        ctx,
    );
    drain(results, "ec2nodeclass").await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::ec2nodeclass::{
        RESERVATION_ACTIVE, RESERVATION_SCHEDULED, ResolvedAmi, ResolvedCapacityReservation, ResolvedSecurityGroup,
        ResolvedSubnet,
    };

    #[test]
    fn a_class_is_resolved_again_when_a_capacity_block_it_selects_starts_draining() {
        let now: DateTime<Utc> = "2026-12-07T10:00:00Z".parse().expect("a time");
        let block = |id: &str, end: &str| ResolvedCapacityReservation::block(id, "p5.48xlarge", "us-east-1a", end);
        let status = |reservations: Vec<ResolvedCapacityReservation>| EC2NodeClassStatus {
            capacity_reservations: reservations,
            ..Default::default()
        };
        assert_eq!(next_refresh(&status(vec![]), now), REFRESH);
        // Ends at 10:42: drains from 10:02, two minutes from now.
        let first = block("cr-1", "2026-12-07T10:42:00Z");
        assert_eq!(first.drain_from(), Some("2026-12-07T10:02:00Z".parse().expect("a time")));
        assert!(!first.draining_at(now) && first.draining_at(now + chrono::TimeDelta::minutes(2)));
        let ordinary = ResolvedCapacityReservation {
            end_time: Some("2026-12-07T10:42:00Z".into()),
            ..ResolvedCapacityReservation::of("cr-2", "p5.48xlarge", "us-east-1a")
        };
        assert_eq!(ordinary.drain_from(), None, "an ordinary reservation's instances run on");
        assert_eq!(next_refresh(&status(vec![ordinary.clone(), first.clone()]), now), Duration::from_secs(121));
        let later = block("cr-3", "2026-12-08T10:00:00Z");
        assert_eq!(next_refresh(&status(vec![later.clone()]), now), REFRESH, "not before its refresh");
        let draining = block("cr-4", "2026-12-07T10:20:00Z");
        assert_eq!(next_refresh(&status(vec![draining, later]), now), REFRESH, "one draining already");
        let unreadable = ResolvedCapacityReservation { end_time: Some("soon".into()), ..first };
        assert_eq!(unreadable.drain_from(), None);
    }

    #[test]
    fn a_class_is_resolved_again_when_a_reservation_it_selects_starts() {
        let now: DateTime<Utc> = "2026-12-07T11:29:00Z".parse().expect("a time");
        let status = |reservations: Vec<ResolvedCapacityReservation>| EC2NodeClassStatus {
            capacity_reservations: reservations,
            ..Default::default()
        };
        let scheduled = |start: &str| ResolvedCapacityReservation {
            state: RESERVATION_SCHEDULED.into(),
            start_time: Some(start.into()),
            ..ResolvedCapacityReservation::block("cr-1", "p5.48xlarge", "us-east-1a", "2026-12-08T11:30:00Z")
        };
        // Starts at 11:30, a minute from now: resolved a second after, and launched into then.
        let soon = scheduled("2026-12-07T11:30:00Z");
        assert_eq!(soon.starts_at(), Some("2026-12-07T11:30:00Z".parse().expect("a time")));
        assert!(!soon.launchable());
        assert_eq!(next_refresh(&status(vec![soon.clone()]), now), Duration::from_secs(61));
        assert_eq!(next_refresh(&status(vec![scheduled("2026-12-08T09:00:00Z")]), now), REFRESH);
        // Past its start and still listed as scheduled: EC2 has yet to start it; look again soon.
        assert_eq!(next_refresh(&status(vec![scheduled("2026-12-07T11:00:00Z")]), now), Duration::from_secs(11));
        let active = ResolvedCapacityReservation { state: RESERVATION_ACTIVE.into(), ..soon.clone() };
        assert_eq!(active.starts_at(), None, "the start time matters only while scheduled");
        assert!(active.launchable());
        let unreadable = ResolvedCapacityReservation { start_time: Some("tomorrow".into()), ..soon };
        assert_eq!(unreadable.starts_at(), None);
    }

    fn class() -> EC2NodeClass {
        let yaml = include_str!("../../examples/ec2nodeclass.yaml");
        let mut class: EC2NodeClass = serde_saphyr::from_str(yaml).expect("example");
        class.metadata.generation = Some(3);
        class
    }

    fn resolved(subnets: usize, amis: usize) -> EC2NodeClassStatus {
        EC2NodeClassStatus {
            subnets: (0..subnets)
                .map(|i| ResolvedSubnet { id: format!("subnet-{i}"), zone: "a".into(), zone_id: None })
                .collect(),
            security_groups: vec![ResolvedSecurityGroup { id: "sg-1".into(), name: None }],
            amis: (0..amis)
                .map(|i| ResolvedAmi { id: format!("ami-{i}"), name: None, requirements: Vec::new() })
                .collect(),
            instance_profile: Some("profile".into()),
            ..Default::default()
        }
    }

    fn condition<'a>(
        conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
        type_: &str,
    ) -> (&'a str, &'a str) {
        let found = conditions.iter().find(|c| c.type_ == type_).expect("condition present");
        (found.status.as_str(), found.reason.as_str())
    }

    #[test]
    fn a_fully_resolved_class_is_ready() {
        let (conditions, problem) = decide_conditions(&[], &resolved(3, 2), &class());
        assert_eq!(problem, None);
        for type_ in ["SubnetsReady", "SecurityGroupsReady", "AMIsReady", "InstanceProfileReady"] {
            assert_eq!(condition(&conditions, type_), ("True", "Resolved"));
        }
        assert_eq!(condition(&conditions, "Ready"), ("True", "Ready"));
        assert!(conditions.iter().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn missing_parts_name_the_selector_field() {
        let (conditions, problem) = decide_conditions(&[], &resolved(0, 0), &class());
        assert_eq!(condition(&conditions, "SubnetsReady"), ("False", "SubnetsNotFound"));
        assert_eq!(condition(&conditions, "AMIsReady"), ("False", "AMIsNotFound"));
        assert_eq!(condition(&conditions, "SecurityGroupsReady"), ("True", "Resolved"));
        assert_eq!(condition(&conditions, "Ready"), ("False", "NotResolved"));
        assert_eq!(
            problem.as_deref(),
            Some("no subnet matches spec.subnetSelectorTerms; no AMI matches spec.amiSelectorTerms")
        );
    }
}
