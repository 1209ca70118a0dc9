//! Voluntary disruption: nodes removed because the cluster is better without them. Every 5
//! seconds one pass looks at every pool, in Karpenter's order: empty nodes first (all of them a
//! budget allows, at once), then the nodes an open NodePool schedule's limits have no room for
//! ([`scheduled`], one pool per pass), then one drifted node (replaced by what its pods need), then one
//! consolidation (several underutilized nodes onto one node or none, and single nodes each
//! deleted or replaced by cheaper nodes, all together when the cluster fits their pods), within
//! the pools' budgets
//! and never for a node, NodeClaim or pod annotated do-not-disrupt or a pod whose
//! PodDisruptionBudget allows no eviction. (Expiry is the NodeClaim controller's: it is not
//! voluntary.)
//!
//! The decisions live in pure rooms: [`budgets`] (which are active, how many nodes they let go),
//! [`emptiness`] (empty candidates), [`candidates`] (underutilized candidates, their cost and
//! what blocks them), [`drift`] (what no longer matches its pool or class) and
//! [`consolidation`] (delete or replace, by running the solver on the
//! cluster without them; nodes already going are left out of every question, their pods placed
//! with the candidates', so no decision counts on room a drain under way is about to fill). A
//! consolidation is checked again after a validation delay (15 s, as Karpenter's) on a fresh
//! picture before [`executor`] carries it out; when it no longer holds, the log says why. No
//! consolidation is decided while the pods of a drain begun less than 30 s ago are on their way
//! (still to evict, or still to be re-created by their owners: [`candidates::drain_settling`]):
//! they land within seconds, and a picture taken before they do is stale by the re-check. A
//! consolidation pass that decided nothing is not asked again while nothing it reads has
//! changed, for at most five minutes ([`settled`]). Nothing is
//! disrupted while a pod created in the last 10 minutes waits for kube-scheduler's first try
//! ([`UNTRIED_POD_HOLD`]): during a scale-out the scheduler's queue can hold hundreds of pods
//! for minutes, and until it tries one nobody knows where it goes, so the nodes launched for it
//! look empty or underused. How long a node's pods have been unchanged is remembered in memory;
//! after a restart the clock starts again, which only delays a removal.

pub mod budgets;
pub mod candidates;
pub mod consolidation;
pub mod drift;
pub mod emptiness;
pub mod executor;
pub mod scheduled;
pub mod settled;

use std::{
    cell::{LazyCell, OnceCell},
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::events::EventType,
};
use tracing::{debug, info, warn};

use self::{
    budgets::allowed_disruptions,
    candidates::{Blocker, Candidate, Cluster, candidates, disruptable, drain_settling},
    consolidation::{Decision, consolidate, evaluate},
    drift::{Drift, drifted, restamp},
    emptiness::{EmptyNode, empty_nodes},
    executor::{Command, execute, set_disruption_taint, stale_taints},
    scheduled::{choose, excess, node_counts},
    settled::Settled,
};
use crate::{
    apis::{NodeClaim, NodePool, condition, labels, nodepool::DisruptionReason},
    controllers::{
        Provider, Shared, apply_status, conditions, isolation::isolate, nodeclaim::lifecycle::condition_true,
        provisioner::expected::expected_pods, publish, static_pools,
    },
    error::Result,
    metrics::ReasonLabels,
    scheduling::{
        resources::Resources,
        solver::{Input, Memo, solve_with},
    },
    state::{
        gathered::Gathered,
        input::{Snapshot, WholeInput, solver_input},
        nodes::Nodes,
        schedules::scheduled_limits,
        usage::{claim_usage, usage_by_pool},
    },
};

/// How long after its creation a pod no scheduler has tried yet holds disruption back. Longer
/// than kube-scheduler takes to work through a scale-out's queue; bounded, so a pod no scheduler
/// will ever try (one naming a scheduler that is not running) cannot stop disruption for good.
pub const UNTRIED_POD_HOLD: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// Instance types per EC2NodeClass name.
type InstanceTypes = std::collections::BTreeMap<String, Arc<[crate::scheduling::catalog::InstanceType]>>;

/// What the loop remembers between passes.
#[derive(Default)]
struct Memory {
    /// Claims found empty, since when.
    empty_since: HashMap<String, DateTime<Utc>>,
    /// Per claim: the pod-change stamp of its node last seen, and since when it is unchanged.
    unchanged: HashMap<String, (Option<u64>, DateTime<Utc>)>,
    /// Claims whose pods have not changed for their pool's `consolidateAfter`, at the last
    /// decision.
    consolidatable: HashSet<String>,
    /// The last reason told for not disrupting each node, so it is told once per change.
    told: HashMap<String, String>,
    /// The last consolidation pass, when it decided nothing.
    settled: Option<Settled>,
}

/// Runs the disruption loop, a pass every 5 s. `spot_to_spot` is the `SpotToSpotConsolidation`
/// gate. A consolidation decision waits `validation_delay` before it is checked again and carried
/// out: pods that were on their way when it was made have arrived by then.
pub async fn run<P: Provider>(ctx: Arc<Shared<P>>, spot_to_spot: bool, validation_delay: Duration) {
    let mut memory = Memory::default();
    let mut ticks = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticks.tick().await;
        let pass = pass(&ctx, &mut memory, spot_to_spot, validation_delay);
        if let Err(error) = isolate("disruption", &ctx.metrics, pass).await {
            warn!(%error, "disruption pass failed");
            ctx.metrics.reconcile_failed("disruption", &error);
        }
    }
}

/// One pass: stale taints cleared, empty nodes removed, else one consolidation.
async fn pass<P: Provider>(
    ctx: &Shared<P>,
    memory: &mut Memory,
    spot_to_spot: bool,
    validation_delay: Duration,
) -> Result<()> {
    let now = Utc::now();
    let state = &ctx.state;
    let (claims, nodes, pools) = (state.claims.state(), state.nodes.state(), state.pools_at(now));
    let instance_types = ctx.instance_types(&pools).await;
    // Gathered only when some CapacityBuffer keeps room, which most clusters have none of.
    let mut buffered = (!state.virtual_pods().is_empty()).then(|| Gathered::of(state));
    let (stale, empty, settling) = {
        let (index, facts) = (state.pod_index(), state.node_facts());
        let mut kept = match &mut buffered {
            Some(gathered) => gathered.hold_buffer_room(&index, &facts, &pools, &instance_types, ctx.policies),
            None => HashSet::new(),
        };
        kept.extend(ctx.nominations.at(now));
        let joined = Nodes::join(&nodes, &claims, &index);
        let empty: Vec<(Arc<NodePool>, Vec<EmptyNode>)> =
            pools.iter().map(|pool| (pool.clone(), empty_nodes(&pool.name_any(), &joined, &kept, now))).collect();
        let replicas_to_come = || {
            let (sets, deployments, jobs) = (state.replica_sets.state(), state.deployments.state(), state.jobs.state());
            !expected_pods(&[], &sets, &deployments, &jobs, |uid| index.tried_pods_of(uid)).is_empty()
        };
        (stale_taints(&joined, now), empty, drain_settling(&joined, now, replicas_to_come))
    };
    let node_api: Api<Node> = Api::all(ctx.client.clone());
    for node in stale {
        info!(%node, "removing a disruption taint left by an interrupted decision");
        set_disruption_taint(&node_api, &node, false).await?;
    }
    let untried = state.pod_index().untried_since(now - UNTRIED_POD_HOLD);
    if untried > 0 {
        debug!(
            pods = untried,
            "pods wait for kube-scheduler's first try; nothing is disrupted until it has tried them"
        );
        return Ok(());
    }
    if remove_empty(ctx, &claims, empty, &mut memory.empty_since, now).await {
        return Ok(());
    }
    // Before waiting for pending pods: the pods a schedule's scale-down leaves pending may have
    // nowhere to go until the window closes.
    if remove_scheduled(ctx, &pools, &instance_types, now).await? {
        return Ok(());
    }
    if state.pod_index().any_provisionable() {
        // Pods are waiting for capacity: the provisioner acts first, on a settled picture.
        return Ok(());
    }
    if replace_drifted(ctx, &pools, &instance_types).await? {
        return Ok(());
    }
    if let Some(node) = settling {
        debug!(%node, "a drain began moments ago and its pods are still on their way; consolidation waits for them to land");
        return Ok(());
    }
    let (decision, kept) = decide(ctx, memory, &pools, &instance_types, spot_to_spot);
    tell_kept(ctx, memory, kept).await;
    let marked = mark_consolidatable(ctx, &memory.consolidatable);
    let Some(decision) = decision else { return marked.await };
    let nodeclaims: Vec<&str> = decision.candidates.iter().map(|c| c.claim.as_str()).collect();
    info!(
        action = decision.kind(),
        nodes = decision.candidates.len(),
        savings = decision.savings,
        ?nodeclaims,
        "consolidation decided; checking again before acting"
    );
    // The conditions are written during the wait: after a scale-in they are hundreds of writes,
    // and written first they held the re-check back by seconds.
    let (marked, ()) = tokio::join!(marked, tokio::time::sleep(validation_delay));
    marked?;
    let validated = match confirm(ctx, memory, &pools, &instance_types, spot_to_spot, &decision) {
        Ok(validated) => validated,
        Err(why) => {
            info!(action = decision.kind(), nodes = decision.candidates.len(), %why, "consolidation no longer holds; not acting");
            return Ok(());
        }
    };
    let pools = state.pools_at(Utc::now());
    execute(ctx, &Command::consolidation(validated), &pools).await?;
    Ok(())
}

/// Marks drifted NodeClaims (condition `Drifted` with why, and an Event) and unmarks those no
/// longer drifted, re-stamps claims made under another hash version, then replaces one drifted
/// node within its pool's `Drifted` budget: its replacements (as many as its pods need, none
/// when they fit elsewhere) first, then the node. True when it replaced one.
async fn replace_drifted<P>(ctx: &Shared<P>, pools: &[Arc<NodePool>], instance_types: &InstanceTypes) -> Result<bool> {
    let now = Utc::now();
    let state = &ctx.state;
    let mut gathered = Gathered::of(state);
    let classes = state.classes.state();
    let (marks, restamps, command) = {
        let (index, facts) = (state.pod_index(), state.node_facts());
        gathered.hold_buffer_room(&index, &facts, pools, instance_types, ctx.policies);
        let by_node = gathered.pods_by_node();
        let Gathered { claims, nodes, budgets, daemonsets, .. } = &gathered;
        let joined = Nodes::join(nodes, claims, &index);
        let mut drifts: HashMap<String, Drift> = HashMap::new();
        let mut marks = Vec::new();
        let mut restamps = Vec::new();
        for view in joined.iter() {
            let Some(claim) = view.claim else { continue };
            let Some(pool) =
                claim.labels().get(labels::NODEPOOL).and_then(|p| pools.iter().find(|x| &x.name_any() == p))
            else {
                continue;
            };
            let class_name = &pool.spec.template.spec.node_class_ref.name;
            let class = classes.iter().find(|c| &c.name_any() == class_name);
            let labels = view.node.map_or_else(|| claim.labels(), |node| node.labels());
            let drift = drifted(claim, labels, pool, class.map(|c| &**c));
            let marked = condition_true(claim, condition::DRIFTED);
            if claim.metadata.deletion_timestamp.is_none() {
                if drift.is_some() != marked {
                    marks.push((claim.clone(), drift.clone()));
                }
                if let Some(stamps) = restamp(claim, pool, class.map(|c| &**c)) {
                    restamps.push((claim.name_any(), stamps));
                }
            }
            if let Some(drift) = drift {
                drifts.insert(claim.name_any(), drift);
            }
        }
        let cluster = Cluster { nodes: &joined, pools, pods: &by_node, budgets, instance_types };
        let found = disruptable(&cluster, now, |claim, _| drifts.contains_key(&claim.name_any()));
        let unblocked = found.iter().filter(|(_, blocker)| blocker.is_none()).count();
        ctx.metrics
            .disruption_candidates
            .get_or_create(&ReasonLabels { reason: "Drifted".into() })
            .set(unblocked as i64);
        let snapshot = gathered.snapshot(&index, &facts, pools, instance_types, ctx.policies);
        // Built on the first candidate that needs it: most passes have none.
        let whole = LazyCell::new(|| WholeInput::of(solver_input(&snapshot).input));
        let mut memo = Memo::default();
        let mut command = None;
        for (candidate, blocker) in found {
            let Some(pool) = pools.iter().find(|p| p.name_any() == candidate.pool) else { continue };
            if blocker.is_some() || allowed(pool, claims, DisruptionReason::Drifted, now) == 0 {
                continue;
            }
            let (replacements, destinations) = if pool.spec.replicas.is_some() {
                // A static pool's node is replaced by one of the same template, its pods or not.
                match static_pools::planned_claim(pool, instance_types, daemonsets) {
                    Ok(replacement) => (vec![replacement], Vec::new()),
                    Err(problem) => {
                        warn!(nodeclaim = %candidate.claim, %problem, "no replacement for a drifted static node");
                        continue;
                    }
                }
            } else {
                let plan = solve_with(&whole.without(&index, &HashSet::from([candidate.node.as_str()])), &mut memo);
                if !plan.unschedulable.is_empty() {
                    continue;
                }
                let destinations = plan.receiving_nodes();
                (plan.new_claims, destinations)
            };
            let drift = drifts.get(&candidate.claim).map(ToString::to_string).unwrap_or_default();
            let why = match replacements.len() {
                0 => format!("drifted ({drift}); its pods fit on other nodes"),
                n => format!("drifted ({drift}); replaced by {n} new node(s)"),
            };
            command = Some(Command {
                candidates: vec![candidate],
                replacements,
                reason: "Drifted",
                why,
                savings: 0.0,
                destinations,
            });
            break;
        }
        (marks, restamps, command)
    };
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    for (claim, stamps) in restamps {
        let patch = serde_json::json!({"metadata": {"annotations": stamps}});
        api.patch(&claim, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        info!(nodeclaim = %claim, "re-stamped with the current pool and class hashes");
    }
    for (claim, drift) in marks {
        let mark = drift.as_ref().map(|drift| (drift.reason(), drift.to_string()));
        set_claim_condition(&api, &claim, condition::DRIFTED, mark).await?;
        if let Some(drift) = drift {
            info!(nodeclaim = %claim.name_any(), %drift, "drifted");
            publish(&ctx.recorder, &claim.object_ref(&()), EventType::Normal, "Drifted", format!("Drifted: {drift}"))
                .await;
        }
    }
    match command {
        Some(command) => execute(ctx, &command, pools).await,
        None => Ok(false),
    }
}

/// Removes the nodes of one pool whose open schedule's limits are below what it holds, as many
/// as its `Scheduled` budget allows (see [`scheduled`]); replacements in other pools are
/// launched first for the pods that fit there. True when it removed any.
async fn remove_scheduled<P>(
    ctx: &Shared<P>,
    pools: &[Arc<NodePool>],
    instance_types: &InstanceTypes,
    now: DateTime<Utc>,
) -> Result<bool> {
    let state = &ctx.state;
    let live: Vec<Arc<NodeClaim>> =
        state.claims.state().into_iter().filter(|c| c.metadata.deletion_timestamp.is_none()).collect();
    let held = usage_by_pool(&live);
    let mut over: Vec<(String, Resources)> = Vec::new();
    for pool in state.pools.state() {
        let Some(limits) = scheduled_limits(&pool, now) else { continue };
        let name = pool.name_any();
        match excess(&limits, held.get(&name).unwrap_or(&Resources::new())) {
            Ok(excess) if excess.iter().next().is_some() => over.push((name, excess)),
            Ok(_) => {}
            Err(error) => warn!(nodepool = %name, %error, "a schedule's limits cannot be read"),
        }
    }
    if over.is_empty() {
        return Ok(false);
    }
    let mut gathered = Gathered::of(state);
    let command = {
        let (index, facts) = (state.pod_index(), state.node_facts());
        gathered.hold_buffer_room(&index, &facts, pools, instance_types, ctx.policies);
        let by_node = gathered.pods_by_node();
        let joined = Nodes::join(&gathered.nodes, &gathered.claims, &index);
        let cluster = Cluster { nodes: &joined, pools, pods: &by_node, budgets: &gathered.budgets, instance_types };
        let counts = |candidate: &Candidate| {
            let claim = gathered.claims.iter().find(|c| c.name_any() == candidate.claim);
            node_counts(claim.map(|c| claim_usage(c)).unwrap_or_default())
        };
        let chosen = over.iter().find_map(|(name, excess)| {
            let pool = pools.iter().find(|p| p.name_any() == *name)?;
            let found = disruptable(&cluster, now, |_, of| of.name_any() == *name);
            let allowed = allowed(pool, &gathered.claims, DisruptionReason::Scheduled, now);
            let chosen = choose(excess.clone(), found, counts, allowed);
            (!chosen.is_empty()).then_some((name, excess, chosen))
        });
        chosen.map(|(name, excess, chosen)| {
            let snapshot = gathered.snapshot(&index, &facts, pools, instance_types, ctx.policies);
            let gone: HashSet<&str> = chosen.iter().map(|c| c.node.as_str()).collect();
            let whole = WholeInput::of(solver_input(&snapshot).input);
            let plan = solve_with(&whole.without(&index, &gone), &mut Memo::default());
            let over: Vec<String> = excess.to_quantities().iter().map(|(r, q)| format!("{r} by {}", q.0)).collect();
            let why = format!(
                "an open schedule of NodePool {name} limits it below what it holds ({} over); {} pod(s) find no room elsewhere",
                over.join(", "),
                plan.unschedulable.len()
            );
            let destinations = plan.receiving_nodes();
            Command {
                candidates: chosen,
                replacements: plan.new_claims,
                reason: "Scheduled",
                why,
                savings: 0.0,
                destinations,
            }
        })
    };
    match command {
        Some(command) => execute(ctx, &command, pools).await,
        None => Ok(false),
    }
}

/// Sets a condition (`Some((reason, message))`) on a NodeClaim, or removes it (`None`).
async fn set_claim_condition(
    api: &Api<NodeClaim>,
    claim: &NodeClaim,
    type_: &str,
    mark: Option<(&str, String)>,
) -> Result<()> {
    let mut status = claim.status.clone().unwrap_or_default();
    status.conditions = match mark {
        Some((reason, message)) => {
            conditions::set(&status.conditions, type_, true, reason, &message, claim.metadata.generation)
        }
        None => status.conditions.into_iter().filter(|c| c.type_ != type_).collect(),
    };
    apply_status(api, &claim.name_any(), &status).await?;
    Ok(())
}

/// Brings each NodeClaim's `Consolidatable` condition in line with the last decision: true while
/// its pods have not changed for its pool's `consolidateAfter`. Several at a time: a scale-in
/// makes hundreds of claims quiet in one pass.
async fn mark_consolidatable<P>(ctx: &Shared<P>, consolidatable: &HashSet<String>) -> Result<()> {
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    let changed = ctx.state.claims.state().into_iter().filter_map(|claim| {
        let wanted = consolidatable.contains(&claim.name_any());
        let unchanged = wanted == condition_true(&claim, condition::CONSOLIDATABLE);
        (claim.metadata.deletion_timestamp.is_none() && !unchanged).then_some((claim, wanted))
    });
    futures::stream::iter(changed.map(Ok))
        .try_for_each_concurrent(CONDITION_WRITES_AT_ONCE, |(claim, wanted)| {
            let api = &api;
            async move {
                let mark =
                    wanted.then(|| ("Consolidatable", "its pods have not changed for consolidateAfter".to_owned()));
                set_claim_condition(api, &claim, condition::CONSOLIDATABLE, mark).await
            }
        })
        .await
}

/// How many `Consolidatable` conditions are written at once.
const CONDITION_WRITES_AT_ONCE: usize = 16;

/// At most this many empty NodeClaims are deleted at a time: a scale-in leaves hundreds, and one
/// by one (an Event and a delete each) they took 13 s for 150 on the local control plane.
const EMPTY_DELETIONS_AT_ONCE: usize = 16;

/// Deletes every empty candidate its pool's `consolidateAfter` and budgets allow; true when it
/// deleted any.
async fn remove_empty<P>(
    ctx: &Shared<P>,
    claims: &[Arc<NodeClaim>],
    empty: Vec<(Arc<NodePool>, Vec<EmptyNode>)>,
    empty_since: &mut HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    let mut seen = HashSet::new();
    let mut going = Vec::new();
    for (pool, candidates) in empty {
        // A static pool keeps its nodes, empty or not.
        if pool.spec.replicas.is_some() {
            continue;
        }
        let Some(after) = pool.spec.disruption.consolidate_after.duration() else { continue };
        let mut allowed = allowed(&pool, claims, DisruptionReason::Empty, now);
        for EmptyNode { claim, node } in candidates {
            let since = *empty_since.entry(claim.clone()).or_insert(now);
            seen.insert(claim.clone());
            if now - since < after.delta() || allowed == 0 {
                continue;
            }
            allowed -= 1;
            going.push((claim, node, pool.name_any(), after));
        }
    }
    empty_since.retain(|claim, _| seen.contains(claim));
    let removed = !going.is_empty();
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    futures::stream::iter(going)
        .for_each_concurrent(EMPTY_DELETIONS_AT_ONCE, |(claim, node, pool, after)| {
            let api = &api;
            async move {
                info!(nodeclaim = %claim, %node, nodepool = %pool, "disrupting empty node");
                if let Some(object) = claims.iter().find(|c| c.name_any() == claim) {
                    let note = format!("Disrupting node {node}: empty for {after}");
                    publish(&ctx.recorder, &object.object_ref(&()), EventType::Normal, "DisruptionEmpty", note).await;
                    ctx.metrics.disrupted(object, "Empty");
                }
                if let Err(error) = api.delete(&claim, &DeleteParams::default()).await {
                    warn!(%error, nodeclaim = %claim, "cannot delete empty NodeClaim");
                }
            }
        })
        .await;
    removed
}

/// How many more of the pool's nodes its budgets let go for `reason` now.
fn allowed(pool: &NodePool, claims: &[Arc<NodeClaim>], reason: DisruptionReason, now: DateTime<Utc>) -> usize {
    let name = pool.name_any();
    let of_pool: Vec<&Arc<NodeClaim>> =
        claims.iter().filter(|c| c.labels().get(labels::NODEPOOL) == Some(&name)).collect();
    let disrupting = of_pool.iter().filter(|c| c.metadata.deletion_timestamp.is_some()).count();
    allowed_disruptions(&pool.spec.disruption.budgets, reason, of_pool.len(), disrupting, now)
}

/// Asks consolidation's `question` of the state as it is now, giving it the candidates' cluster,
/// the snapshot, the time and `quiet` (whether a claim's pods have not changed for its pool's
/// `consolidateAfter`, remembered in `unchanged` across passes). Returns the answer and the
/// claims asked about that were quiet.
fn ask<P, R>(
    ctx: &Shared<P>,
    unchanged: &mut HashMap<String, (Option<u64>, DateTime<Utc>)>,
    pools: &[Arc<NodePool>],
    instance_types: &InstanceTypes,
    question: impl FnOnce(&Cluster, &Snapshot, DateTime<Utc>, &mut dyn FnMut(&NodeClaim, &NodePool) -> bool) -> R,
) -> (R, HashSet<String>) {
    let now = Utc::now();
    let state = &ctx.state;
    let mut gathered = Gathered::of(state);
    // Decided under the pod index's read lock, which no await may hold.
    let (index, facts) = (state.pod_index(), state.node_facts());
    gathered.hold_buffer_room(&index, &facts, pools, instance_types, ctx.policies);
    let by_node = gathered.pods_by_node();
    let joined = Nodes::join(&gathered.nodes, &gathered.claims, &index);
    let mut quiet_claims = HashSet::new();
    let mut quiet = |claim: &NodeClaim, pool: &NodePool| {
        let name = claim.name_any();
        let node = claim.status.as_ref().and_then(|s| s.node_name.as_deref());
        let stamp = node.and_then(|n| index.node(n)).map(|used| used.changed);
        let entry = unchanged.entry(name.clone()).or_insert((stamp, now));
        if entry.0 != stamp {
            *entry = (stamp, now);
        }
        let after = pool.spec.disruption.consolidate_after.duration();
        let quiet = after.is_some_and(|after| now - entry.1 >= after.delta());
        if quiet {
            quiet_claims.insert(name);
        }
        quiet
    };
    let cluster = Cluster { nodes: &joined, pools, pods: &by_node, budgets: &gathered.budgets, instance_types };
    let snapshot = gathered.snapshot(&index, &facts, pools, instance_types, ctx.policies);
    let answer = question(&cluster, &snapshot, now, &mut quiet);
    (answer, quiet_claims)
}

/// `question`'s answer, its time observed as a consolidation question's.
fn timed<P, R>(ctx: &Shared<P>, question: impl FnOnce() -> R) -> R {
    let started = std::time::Instant::now();
    let answer = question();
    ctx.metrics.consolidation_duration.observe(started.elapsed().as_secs_f64());
    answer
}

/// One consolidation decision on the state as it is now, and why each candidate kept is kept
/// (by node); remembers which claims are quiet.
fn decide<P>(
    ctx: &Shared<P>,
    memory: &mut Memory,
    pools: &[Arc<NodePool>],
    instance_types: &InstanceTypes,
    spot_to_spot: bool,
) -> (Option<Decision>, Vec<(String, String)>) {
    let claims: HashSet<String> = ctx.state.claims.state().iter().map(|c| c.name_any()).collect();
    memory.unchanged.retain(|claim, _| claims.contains(claim));
    // Taken before the picture the question reads: an event in between makes the next pass ask.
    let cluster_digest = settled::cluster_digest(&ctx.state, pools, instance_types);
    let last = memory.settled.take();
    let ((decision, kept, settled, asked), quiet) =
        ask(ctx, &mut memory.unchanged, pools, instance_types, |cluster, snapshot, now, quiet| {
            let (eligible, blocked) = eligible(cluster, snapshot, now, quiet, |_| true);
            let digest = settled::with_candidates(cluster_digest, &eligible, &blocked);
            if let Some(last) = last.filter(|last| last.holds(digest, now)) {
                return (None, last.kept.clone(), Some(last), false);
            }
            let (decision, kept) =
                timed(ctx, || consolidate_eligible(cluster, snapshot, eligible, blocked, spot_to_spot));
            let settled = decision.is_none().then(|| Settled { digest, at: now, kept: kept.clone() });
            (decision, kept, settled, true)
        });
    memory.settled = settled;
    let considered = quiet.len().saturating_sub(kept.len());
    debug!(quiet = quiet.len(), kept = kept.len(), decided = decision.is_some(), asked, "consolidation asked");
    let labels = ReasonLabels { reason: "Underutilized".into() };
    ctx.metrics.disruption_candidates.get_or_create(&labels).set(considered as i64);
    memory.consolidatable = quiet;
    (decision, kept)
}

/// The decision again, on the state as it is now (see [`confirm_consolidation`]).
fn confirm<P>(
    ctx: &Shared<P>,
    memory: &mut Memory,
    pools: &[Arc<NodePool>],
    instance_types: &InstanceTypes,
    spot_to_spot: bool,
    decision: &Decision,
) -> Result<Decision, String> {
    let (answer, _) = ask(ctx, &mut memory.unchanged, pools, instance_types, |cluster, snapshot, now, quiet| {
        timed(ctx, || confirm_consolidation(cluster, snapshot, now, spot_to_spot, quiet, decision))
    });
    answer
}

/// One consolidation decision over the cluster, and why each candidate kept is kept (by node):
/// candidates (with `quiet` saying whose pods have not changed for long enough), blockers and
/// budgets, then [`consolidate`]. Pure.
pub fn decide_consolidation(
    cluster: &Cluster,
    snapshot: &Snapshot,
    now: DateTime<Utc>,
    spot_to_spot: bool,
    quiet: impl FnMut(&NodeClaim, &NodePool) -> bool,
) -> (Option<Decision>, Vec<(String, String)>) {
    let (eligible, blocked) = eligible(cluster, snapshot, now, quiet, |_| true);
    consolidate_eligible(cluster, snapshot, eligible, blocked, spot_to_spot)
}

/// [`decide_consolidation`] once the candidates are found: the decision over those that may go,
/// and why each kept one is kept (the blocked, then those the decision refused). Pure.
fn consolidate_eligible(
    cluster: &Cluster,
    snapshot: &Snapshot,
    eligible: Vec<Candidate>,
    blocked: Vec<(Candidate, String)>,
    spot_to_spot: bool,
) -> (Option<Decision>, Vec<(String, String)>) {
    let simulation = Simulation::of(cluster, snapshot);
    let outcome = consolidate(&eligible, spot_to_spot, |gone| simulation.without(gone));
    let refusals = outcome
        .refused
        .into_iter()
        .filter_map(|(claim, why)| Some((eligible.iter().find(|c| c.claim == claim)?.clone(), why.to_string())));
    (outcome.decision, blocked.into_iter().chain(refusals).map(|(c, why)| (c.node, why)).collect())
}

/// Whether `decision` still holds: its candidates are all still candidates, unblocked and within
/// budget, and the same kind of action still serves them. The decision as it stands now, or why
/// it no longer holds. Pure.
pub fn confirm_consolidation(
    cluster: &Cluster,
    snapshot: &Snapshot,
    now: DateTime<Utc>,
    spot_to_spot: bool,
    quiet: impl FnMut(&NodeClaim, &NodePool) -> bool,
    decision: &Decision,
) -> Result<Decision, String> {
    let ours = |candidate: &Candidate| decision.candidates.iter().any(|c| c.claim == candidate.claim);
    let (eligible, blocked) = eligible(cluster, snapshot, now, quiet, ours);
    if let Some((candidate, why)) = blocked.first() {
        return Err(format!("node {}: {why}", candidate.node));
    }
    if let Some(gone) = decision.candidates.iter().find(|d| !eligible.iter().any(|c| c.claim == d.claim)) {
        return Err(format!("node {} is no longer a candidate: its pods changed, or it is going", gone.node));
    }
    let simulation = Simulation::of(cluster, snapshot);
    let again: Vec<&Candidate> = eligible.iter().collect();
    // A node split, or several single-node decisions together, may launch as many as decided.
    let most_new = decision.launches().max(1);
    let confirmed = evaluate(&again, most_new, spot_to_spot, &|gone| simulation.without(gone), &mut Memo::default())
        .map_err(|refusal| refusal.to_string())?;
    if confirmed.kind() != decision.kind() {
        return Err(format!("its nodes now call for a {} instead", confirmed.kind()));
    }
    Ok(confirmed)
}

/// The candidates `wanted` picks that may go now, and those blocked (with why): blockers first,
/// then each pool's budget for underutilized nodes, in cost order.
fn eligible(
    cluster: &Cluster,
    snapshot: &Snapshot,
    now: DateTime<Utc>,
    quiet: impl FnMut(&NodeClaim, &NodePool) -> bool,
    wanted: impl Fn(&Candidate) -> bool,
) -> (Vec<Candidate>, Vec<(Candidate, String)>) {
    let mut allowance: HashMap<String, usize> = cluster
        .pools
        .iter()
        .map(|p| (p.name_any(), allowed(p, snapshot.claims, DisruptionReason::Underutilized, now)))
        .collect();
    let mut eligible: Vec<Candidate> = Vec::new();
    let mut blocked: Vec<(Candidate, String)> = Vec::new();
    for (candidate, blocker) in candidates(cluster, now, quiet).into_iter().filter(|(c, _)| wanted(c)) {
        let room = allowance.entry(candidate.pool.clone()).or_default();
        match blocker {
            Some(blocker) => blocked.push((candidate, blocker.to_string())),
            None if *room == 0 && candidate.pods > 0 => blocked.push((candidate, Blocker::Budget.to_string())),
            None => {
                *room = room.saturating_sub(usize::from(candidate.pods > 0));
                eligible.push(candidate);
            }
        }
    }
    (eligible, blocked)
}

/// The solver's input for "the cluster without these nodes". The nodes already going (their
/// NodeClaim or Node being deleted) are never in it, and their pods are moving as well: they are
/// placed with the candidates' (Karpenter's simulation does the same), so a decision made while
/// a drain is under way does not count on room those pods are about to take.
struct Simulation<'a> {
    snapshot: &'a Snapshot<'a>,
    /// Built on the first question: a pass with no candidate asks none.
    whole: OnceCell<WholeInput>,
    going: Vec<String>,
}

impl<'a> Simulation<'a> {
    fn of(cluster: &Cluster, snapshot: &'a Snapshot<'a>) -> Self {
        let going = cluster.nodes.iter().filter(|v| v.going() && v.has_evictable_pods()).map(|v| v.name()).collect();
        Self { snapshot, whole: OnceCell::new(), going }
    }

    fn without(&self, gone: &HashSet<&str>) -> Input {
        let whole = self.whole.get_or_init(|| WholeInput::of(solver_input(self.snapshot).input));
        let mut all = gone.clone();
        all.extend(self.going.iter().map(String::as_str));
        whole.without(self.snapshot.pods, &all)
    }
}

/// Tells each kept candidate's node why it is kept, once per change of reason.
async fn tell_kept<P>(ctx: &Shared<P>, memory: &mut Memory, kept: Vec<(String, String)>) {
    let current: HashSet<&str> = kept.iter().map(|(node, _)| node.as_str()).collect();
    memory.told.retain(|node, _| current.contains(node.as_str()));
    for (node, why) in kept {
        if memory.told.get(&node) == Some(&why) {
            continue;
        }
        let Some(object) = ctx.state.nodes.get(&kube::runtime::reflector::ObjectRef::new(&node)) else { continue };
        debug!(%node, %why, "not consolidating");
        let note = format!("Not consolidating: {why}");
        publish(&ctx.recorder, &object.object_ref(&()), EventType::Normal, "Unconsolidatable", note).await;
        memory.told.insert(node, why);
    }
}
