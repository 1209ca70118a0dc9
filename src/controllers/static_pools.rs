//! Static NodePools (`spec.replicas`): a fixed number of nodes, whatever the pods, as Karpenter's
//! static capacity. Every 5 seconds the leader reads each static pool's NodeClaims (with their
//! nodes and pods) → decides (pure, [`decide`]) → creates or deletes NodeClaims → says so in an
//! Event on the pool. Too few (a node went, `replicas` was raised): NodeClaims from the pool's
//! template ([`static_claim`]), within `limits.nodes`. Too many (`replicas` was lowered):
//! NodeClaims deleted, those not launched yet first, then those with the fewest pods, through
//! the ordinary termination (drain, then terminate).
//!
//! A node the disruption controller is replacing (drift) counts as standing while its
//! replacement launches and is not counted against the replicas, so neither side undoes the
//! other. The provisioner never launches for a static pool and consolidation never removes its
//! nodes; pending pods land on its nodes like on any other.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::apps::v1::DaemonSet;

use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, PostParams},
    runtime::{events::EventType, reflector::ObjectRef},
};
use tracing::{info, warn};

use super::{Provider, Shared, isolation::isolate, provisioner::snapshot::nodeclaim_for, publish};
use crate::{
    apis::{NodeClaim, NodePool, condition, labels},
    error::Result,
    scheduling::{
        catalog::InstanceType, inputs::nodepool_template, resources::Resources, solver::NewNodeClaim,
        static_claims::static_claim,
    },
    state::nodes::Nodes,
};

/// One NodeClaim of a static pool, as [`decide`] sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    /// An instance was launched for it.
    pub launched: bool,
    /// Pods a drain would evict.
    pub pods: usize,
    /// Being deleted.
    pub deleting: bool,
    /// Tainted for disruption: its replacement is on the way.
    pub disrupting: bool,
}

/// What a static pool needs now.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Launch(usize),
    Remove(Vec<String>),
    Hold,
}

/// Compares a pool's members with its replicas. Launches count every member not being deleted
/// (a node being replaced stands until its replacement is up); removals count only those not
/// being disrupted, so a replacement and the node it replaces are never both removed.
pub fn decide(replicas: i64, node_limit: Option<i64>, members: &[Member]) -> Step {
    let standing = members.iter().filter(|m| !m.deleting).count() as i64;
    if standing < replicas {
        let room = node_limit.map_or(i64::MAX, |limit| limit.saturating_sub(standing));
        let launch = replicas.saturating_sub(standing).min(room);
        return if launch > 0 { Step::Launch(launch as usize) } else { Step::Hold };
    }
    let mut running: Vec<&Member> = members.iter().filter(|m| !m.deleting && !m.disrupting).collect();
    let excess = running.len() as i64 - replicas;
    if excess <= 0 {
        return Step::Hold;
    }
    running.sort_by(|a, b| (a.launched, a.pods, &a.name).cmp(&(b.launched, b.pods, &b.name)));
    Step::Remove(running.into_iter().take(excess as usize).map(|m| m.name.clone()).collect())
}

/// NodeClaims this term created, by name, with their pool and when: counted until the cache
/// shows them, so a pass that runs before the watch delivers them does not launch again.
type Created = HashMap<String, (String, std::time::Instant)>;

/// How long a created NodeClaim is counted without the cache showing it.
const CREATED_GRACE: Duration = Duration::from_secs(60);

/// Runs passes until the term ends.
pub async fn run<P: Provider>(ctx: Arc<Shared<P>>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(5));
    let mut created = Created::new();
    loop {
        ticks.tick().await;
        if let Err(error) = isolate("static", &ctx.metrics, pass(&ctx, &mut created)).await {
            warn!(%error, "static NodePool pass failed");
            ctx.metrics.reconcile_failed("static", &error);
        }
    }
}

/// The members of every pool, by pool name, with the claims `created` names that the cache does
/// not show yet (which are forgotten once it does, or after [`CREATED_GRACE`]).
fn members_by_pool<P>(ctx: &Shared<P>, created: &mut Created) -> HashMap<String, Vec<Member>> {
    let (claims, nodes) = (ctx.state.claims.state(), ctx.state.nodes.state());
    let index = ctx.state.pod_index();
    let joined = Nodes::join(&nodes, &claims, &index);
    let mut members: HashMap<String, Vec<Member>> = HashMap::new();
    for view in joined.iter() {
        let Some(claim) = view.claim else { continue };
        let Some(pool) = claim.labels().get(labels::NODEPOOL) else { continue };
        let disrupting = view.node.is_some_and(|node| {
            node.spec.iter().flat_map(|s| s.taints.iter().flatten()).any(|t| t.key == labels::DISRUPTED_TAINT)
        });
        members.entry(pool.clone()).or_default().push(Member {
            name: claim.name_any(),
            launched: claim.status.as_ref().is_some_and(|s| s.provider_id.is_some()),
            pods: view.used.map_or(0, |used| used.evictable),
            deleting: claim.metadata.deletion_timestamp.is_some()
                || view.node.is_some_and(|n| n.metadata.deletion_timestamp.is_some()),
            disrupting,
        });
    }
    let cached: std::collections::HashSet<String> = claims.iter().map(|claim| claim.name_any()).collect();
    created.retain(|name, (_, at)| !cached.contains(name) && at.elapsed() < CREATED_GRACE);
    for (name, (pool, _)) in created.iter() {
        let member = Member { name: name.clone(), launched: false, pods: 0, deleting: false, disrupting: false };
        members.entry(pool.clone()).or_default().push(member);
    }
    members
}

async fn pass<P: Provider>(ctx: &Shared<P>, created: &mut Created) -> Result<()> {
    let pools: Vec<Arc<NodePool>> = ctx
        .state
        .pools
        .state()
        .into_iter()
        .filter(|pool| pool.spec.replicas.is_some() && pool.metadata.deletion_timestamp.is_none())
        // As Karpenter: nothing launches for a pool that is not Ready (invalid, or its node class
        // is not), and removals wait with it.
        .filter(|pool| {
            pool.status
                .iter()
                .flat_map(|s| &s.conditions)
                .any(|c| c.type_ == condition::READY && c.status == condition::TRUE)
        })
        .collect();
    if pools.is_empty() {
        return Ok(());
    }
    let mut members = members_by_pool(ctx, created);
    for pool in &pools {
        let name = pool.name_any();
        let node_limit =
            pool.spec.limits.as_ref().and_then(|limits| Resources::from_quantities(limits).ok()).and_then(|limits| {
                limits.iter().find(|(resource, _)| *resource == crate::scheduling::solver::NODES).map(|(_, n)| n)
            });
        let replicas = pool.spec.replicas.unwrap_or(0);
        match decide(replicas, node_limit, &members.remove(&name).unwrap_or_default()) {
            Step::Hold => {}
            Step::Launch(count) => launch(ctx, pool, count, created).await?,
            Step::Remove(claims) => remove(ctx, pool, &claims).await?,
        }
    }
    Ok(())
}

/// The NodeClaim a static pool adds (also a drifted node's replacement), from its node class's
/// instance types and the DaemonSets that will run on it.
pub fn planned_claim(
    pool: &NodePool,
    types_by_class: &BTreeMap<String, Arc<[InstanceType]>>,
    daemonsets: &[DaemonSet],
) -> std::result::Result<NewNodeClaim, String> {
    let class_name = &pool.spec.template.spec.node_class_ref.name;
    let types =
        types_by_class.get(class_name).ok_or_else(|| format!("EC2NodeClass {class_name} has no instance types yet"))?;
    let template = nodepool_template(pool, (0..types.len()).collect(), daemonsets, &Resources::new())
        .map_err(|error| error.to_string())?;
    static_claim(&template, types)
}

async fn launch<P: Provider>(ctx: &Shared<P>, pool: &Arc<NodePool>, count: usize, created: &mut Created) -> Result<()> {
    let name = pool.name_any();
    let types_by_class = ctx.instance_types(std::slice::from_ref(pool)).await;
    let daemonsets: Vec<DaemonSet> = ctx.state.daemonsets.state().iter().map(|d| (**d).clone()).collect();
    let planned = match planned_claim(pool, &types_by_class, &daemonsets) {
        Ok(planned) => planned,
        Err(problem) => {
            warn!(nodepool = %name, %problem, "static NodePool cannot launch");
            publish(&ctx.recorder, &pool.object_ref(&()), EventType::Warning, "CannotLaunch", problem).await;
            return Ok(());
        }
    };
    let class_name = &pool.spec.template.spec.node_class_ref.name;
    let class = ctx.state.classes.get(&ObjectRef::new(class_name));
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    for _ in 0..count {
        let suffix: String = (0..5).map(|_| fastrand::alphanumeric().to_ascii_lowercase()).collect();
        let claim =
            api.create(&PostParams::default(), &nodeclaim_for(&planned, pool, class.as_deref(), &suffix)).await?;
        ctx.metrics.nodeclaims_created.get_or_create(&crate::metrics::NodePoolLabels { nodepool: name.clone() }).inc();
        info!(nodepool = %name, nodeclaim = %claim.name_any(), "created NodeClaim for a static NodePool");
        created.insert(claim.name_any(), (name.clone(), std::time::Instant::now()));
    }
    let note = format!("Launching {count} node(s) to keep {} replica(s)", pool.spec.replicas.unwrap_or(0));
    publish(&ctx.recorder, &pool.object_ref(&()), EventType::Normal, "ScaledUp", note).await;
    Ok(())
}

async fn remove<P: Provider>(ctx: &Shared<P>, pool: &Arc<NodePool>, claims: &[String]) -> Result<()> {
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    let by_name = ctx.state.claims.state();
    for claim in claims {
        info!(nodepool = %pool.name_any(), nodeclaim = %claim, "removing a node of a static NodePool above its replicas");
        if let Some(object) = by_name.iter().find(|c| &c.name_any() == claim) {
            ctx.metrics.disrupted(object, "ScaledDown");
        }
        if let Err(error) = api.delete(claim, &DeleteParams::default()).await {
            warn!(%error, nodeclaim = %claim, "cannot delete NodeClaim");
        }
    }
    let note = format!(
        "Removing {} node(s) to keep {} replica(s): {}",
        claims.len(),
        pool.spec.replicas.unwrap_or(0),
        claims.join(", ")
    );
    publish(&ctx.recorder, &pool.object_ref(&()), EventType::Normal, "ScaledDown", note).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, launched: bool, pods: usize) -> Member {
        Member { name: name.into(), launched, pods, deleting: false, disrupting: false }
    }

    #[test]
    fn too_few_launch_the_difference_within_the_node_limit() {
        let members = [member("a", true, 3)];
        assert_eq!(decide(3, None, &members), Step::Launch(2));
        assert_eq!(decide(3, Some(2), &members), Step::Launch(1));
        assert_eq!(decide(3, Some(1), &members), Step::Hold);
        assert_eq!(decide(1, None, &members), Step::Hold);
        // A member being deleted is gone already: it is replaced.
        let gone = [Member { deleting: true, ..member("a", true, 0) }, member("b", true, 0)];
        assert_eq!(decide(2, None, &gone), Step::Launch(1));
    }

    #[test]
    fn too_many_remove_the_unlaunched_then_the_emptiest() {
        let members = [member("a", true, 5), member("b", true, 0), member("c", false, 0), member("d", true, 2)];
        assert_eq!(decide(2, None, &members), Step::Remove(vec!["c".into(), "b".into()]));
        assert_eq!(decide(0, None, &members), Step::Remove(vec!["c".into(), "b".into(), "d".into(), "a".into()]));
    }

    #[test]
    fn a_node_being_replaced_and_its_replacement_are_left_to_the_swap() {
        // Drift: the old node is tainted, its replacement launches; two members for one replica.
        let swap = [Member { disrupting: true, ..member("old", true, 4) }, member("new", false, 0)];
        assert_eq!(decide(1, None, &swap), Step::Hold);
        // Once the old one is deleted, nothing is missing either.
        let done = [Member { deleting: true, ..swap[0].clone() }, member("new", true, 0)];
        assert_eq!(decide(1, None, &done), Step::Hold);
    }
}
