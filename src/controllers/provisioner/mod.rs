//! The provisioner: pending pods → batch → snapshot of the shared stores → scheduling
//! simulation → NodeClaims (and Events on the pods saying where they will go or why nothing can
//! be launched for them).
//!
//! A batch opens at the first provisionable pod and closes after `idle` without a new one or
//! `max` in all, so a burst of a thousand pods makes one decision. It plans too for the pods
//! Deployments, ReplicaSets and Jobs have not had tried yet ([`expected`]). Pods covered by
//! in-flight NodeClaims are placed on them by the simulation and cause no second launch.

pub mod expected;
pub mod snapshot;
pub mod told;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::{
    Api, Resource, ResourceExt,
    api::PostParams,
    runtime::{
        events::EventType,
        reflector::{ObjectRef, Store},
    },
};
use tokio::time::Instant;
use tracing::{debug, info, instrument, warn};

use self::{
    expected::{count_expected, expected_pods},
    snapshot::{nodeclaim_for, nodeclaim_template},
    told::{Places, Told},
};
use crate::controllers::Provider;
use crate::{
    apis::NodeClaim,
    controllers::{Shared, isolation::isolate, nodeclaim::NewClaims, publish},
    error::Result,
    metrics::{Metrics, NodePoolLabels},
    scheduling::{
        lower_bound::nodepool_lower_bound,
        solver::{Input, Plan, Sizing, solve},
    },
    state::{
        cache::CachedPod,
        input::{Snapshot, solver_input},
        pods::scheduling_wait,
    },
};

/// When a batch closes: `idle` after its last pod, and never later than `max` after it opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchWindow {
    opened: Instant,
    last: Instant,
}

impl BatchWindow {
    pub fn open(now: Instant) -> Self {
        Self { opened: now, last: now }
    }

    pub fn extend(&mut self, now: Instant) {
        self.last = now;
    }

    pub fn closes_at(&self, idle: Duration, max: Duration) -> Instant {
        (self.last + idle).min(self.opened + max)
    }
}

/// Provisionable pods a batch saw, by UID, until kube-scheduler binds them (their wait goes into
/// `stoker_pods_provisioning_wait_seconds`) or they are gone.
#[derive(Default)]
pub struct WaitingPods(std::sync::Mutex<HashMap<String, ObjectRef<CachedPod>>>);

impl WaitingPods {
    fn track<'a>(&self, pods: impl Iterator<Item = &'a Arc<CachedPod>>) {
        let mut waiting = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for pod in pods {
            if let Some(uid) = pod.uid() {
                waiting.entry(uid).or_insert_with(|| ObjectRef::from_obj(&**pod));
            }
        }
    }

    fn settle(&self, store: &Store<CachedPod>, metrics: &Metrics) {
        let mut waiting = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        waiting.retain(|uid, reference| {
            let Some(pod) = store.get(reference).filter(|pod| pod.uid().as_ref() == Some(uid)) else { return false };
            match scheduling_wait(&pod) {
                Some(wait) => {
                    metrics.pod_provisioning_wait.observe(wait);
                    false
                }
                None => true,
            }
        });
    }
}

pub struct Provisioner<P> {
    pub shared: Arc<Shared<P>>,
    /// Where the NodeClaims this term creates are announced to the NodeClaim controller.
    pub new_claims: NewClaims,
    pub batch_idle: Duration,
    pub batch_max: Duration,
    pub waiting: WaitingPods,
    /// Which pods were told where they should schedule, and when.
    pub told: Told,
}

impl<P> std::ops::Deref for Provisioner<P> {
    type Target = Shared<P>;

    fn deref(&self) -> &Shared<P> {
        &self.shared
    }
}

/// Runs batches until its term ends (the future is dropped). Every provisionable pod event
/// notifies [`Shared::provisionable`]; a periodic check catches pods that became provisionable
/// again without an event (their NodeClaim failed to launch and was deleted).
pub async fn run<P: Provider + 'static>(provisioner: Arc<Provisioner<P>>) {
    let triggered = || provisioner.provisionable.notified();
    loop {
        tokio::select! {
            () = triggered() => {}
            _ = tokio::time::sleep(Duration::from_secs(10)) => {
                provisioner.waiting.settle(&provisioner.state.pods, &provisioner.metrics);
                // CapacityBuffers' room is checked again too: real pods may have taken it.
                if !provisioner.state.pod_index().any_provisionable() && provisioner.state.virtual_pods().is_empty() {
                    continue;
                }
            }
        }
        let mut window = BatchWindow::open(Instant::now());
        // While the batch collects pods, what the pools' first launches need is made ready.
        let preparing = provisioner.prepare_launches();
        futures::pin_mut!(preparing);
        let mut prepared = false;
        loop {
            let closes = window.closes_at(provisioner.batch_idle, provisioner.batch_max);
            tokio::select! {
                () = triggered() => window.extend(Instant::now()),
                () = &mut preparing, if !prepared => prepared = true,
                _ = tokio::time::sleep_until(closes) => break,
            }
        }
        if let Err(error) = isolate("provisioner", &provisioner.metrics, provisioner.provision()).await {
            warn!(%error, kind = error.metric_label(), "provisioning failed");
            provisioner.metrics.reconcile_failed("provisioner", &error);
        }
    }
}

impl<P: Provider> Provisioner<P> {
    /// Creates what each NodePool's first launch would otherwise wait for (its launch
    /// templates). A pool whose node class is not ready yet is skipped; a failure is left for the
    /// launch to report.
    async fn prepare_launches(&self) {
        let pools = self.state.pools_at(chrono::Utc::now());
        let preparations = pools.iter().filter_map(|pool| {
            let class = self.state.classes.get(&ObjectRef::new(&pool.spec.template.spec.node_class_ref.name))?;
            Some(async move {
                if let Err(error) = self.provider.prepare(&nodeclaim_template(pool), &class).await {
                    debug!(nodepool = %pool.name_any(), %error, "launches not prepared");
                }
            })
        });
        futures::future::join_all(preparations).await;
    }

    /// One decision: snapshot, simulate, create NodeClaims, tell the pods and CapacityBuffers.
    #[instrument(skip_all, fields(pods, expected, new_claims, unschedulable, snapshot_ms, solve_ms))]
    pub async fn provision(&self) -> Result<()> {
        let virtual_pods = self.state.virtual_pods();
        let real = self.state.pod_index().any_provisionable();
        if !real && virtual_pods.is_empty() {
            return Ok(());
        }
        if real {
            info!("batch closed");
        }
        let closed = std::time::Instant::now();
        self.waiting.settle(&self.state.pods, &self.metrics);
        let pools = self.state.pools_at(chrono::Utc::now());
        let instance_types = self.shared.instance_types(&pools).await;
        let daemonsets: Vec<DaemonSet> = self.state.daemonsets.state().iter().map(|d| (**d).clone()).collect();
        let (nodes, claims) = (self.state.nodes.state(), self.state.claims.state());
        let (namespaces, volumes) = (Arc::new(self.state.namespace_labels()), self.state.volume_topology());
        let (replica_sets, deployments, jobs) =
            (self.state.replica_sets.state(), self.state.deployments.state(), self.state.jobs.state());
        // The pod index stays locked only while the input is built (no await in between).
        let (prepared, pods, expected) = {
            let (index, facts) = (self.state.pod_index(), self.state.node_facts());
            let pods: Vec<Arc<CachedPod>> = index.provisionable().cloned().collect();
            let expected = expected_pods(&pods, &replica_sets, &deployments, &jobs, |uid| index.tried_pods_of(uid));
            let snapshot = Snapshot {
                pods: &index,
                nodes: &nodes,
                facts: &facts,
                claims: &claims,
                pools: &pools,
                daemonsets: &daemonsets,
                instance_types: &instance_types,
                policies: self.shared.policies,
                namespaces,
                volumes: &volumes,
                expected_pods: &expected,
                virtual_pods: &virtual_pods,
            };
            (solver_input(&snapshot), pods, expected.len())
        };
        self.waiting.track(pods.iter());
        for reason in &prepared.skipped {
            warn!(%reason, "left out of the simulation");
        }
        let started = std::time::Instant::now();
        let plan = solve(&prepared.input);
        let span = tracing::Span::current();
        span.record("snapshot_ms", (started - closed).as_secs_f64() * 1000.0);
        span.record("pods", prepared.input.pods.len());
        span.record("expected", expected);
        span.record("new_claims", plan.new_claims.len());
        span.record("unschedulable", plan.unschedulable.len());
        span.record("solve_ms", started.elapsed().as_secs_f64() * 1000.0);
        self.metrics.scheduling_duration.observe(started.elapsed().as_secs_f64());
        self.metrics.pods_pending.set(pods.len() as i64);
        self.buffer_outcomes.record(&prepared.input, &plan);
        self.nominations.record(&prepared.input, &plan, chrono::Utc::now());

        let api: Api<NodeClaim> = Api::all(self.client.clone());
        // Every NodeClaim first, concurrently, so launches start at once; the pods' Events after.
        let creations = plan.new_claims.iter().filter_map(|planned| {
            let pool = pools.iter().find(|p| p.name_any() == planned.nodepool)?;
            let suffix: String = (0..5).map(|_| fastrand::alphanumeric().to_ascii_lowercase()).collect();
            let class = self.state.classes.get(&ObjectRef::new(&pool.spec.template.spec.node_class_ref.name));
            let claim = nodeclaim_for(planned, pool, class.as_deref(), &suffix);
            let api = api.clone();
            Some(async move {
                let name = claim.name_any();
                self.new_claims.creating(&name);
                let result = api.create(&PostParams::default(), &claim).await;
                self.new_claims.created(&name, result.as_ref().ok().and_then(ResourceExt::uid));
                (planned, result)
            })
        });
        let mut nominated = Vec::new();
        for (planned, result) in futures::future::join_all(creations).await {
            let created = match result {
                Ok(created) => created,
                Err(error) => {
                    warn!(%error, nodepool = %planned.nodepool, "cannot create NodeClaim");
                    continue;
                }
            };
            let name = created.name_any();
            self.metrics.nodeclaims_created.get_or_create(&NodePoolLabels { nodepool: planned.nodepool.clone() }).inc();
            // How many of its pods are expected shows whether a later batch launched for pods
            // that exist or for replicas to come.
            let expected = count_expected(&planned.pods);
            info!(nodeclaim = %name, nodepool = %planned.nodepool, pods = planned.pods.len(), expected,
                  instance_types = planned.instance_types.len(), price = planned.price, "created NodeClaim");
            nominated.push((name, planned));
        }
        // Built after the POSTs: the Events need it, the launches should not wait for it.
        let by_key: BTreeMap<String, &Arc<CachedPod>> =
            pods.iter().map(|p| (format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()), p)).collect();
        // Where each pod should schedule: its new NodeClaim, or the node with room for it.
        let on_new = nominated.iter().flat_map(|(name, planned)| {
            planned.pods.iter().map(move |pod| (pod.as_str(), format!("nodeclaim/{name}")))
        });
        let places = Places::of(&claims, &prepared.input);
        let on_existing = plan.real_placements(&prepared.input).map(|(pod, node)| (pod.as_str(), places.of_node(node)));
        let mut by_place: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // Expected pods are no Pods yet: nobody to tell.
        let real = on_new.chain(on_existing).filter_map(|(pod, place)| {
            let uid = by_key.get(pod)?.metadata.uid.as_deref().unwrap_or_default();
            Some((pod, uid, place))
        });
        for (pod, place) in self.told.untold(real, std::time::Instant::now()) {
            by_place.entry(place).or_default().push(pod.to_owned());
        }
        for (place, pods) in by_place {
            let note = format!("Pod should schedule on: {place}");
            self.tell(&by_key, &pods, EventType::Normal, "Nominated", &note).await;
        }
        for (pod, reason) in &plan.unschedulable {
            let note = format!("Cannot launch a node for this pod: {reason}");
            self.tell(&by_key, std::slice::from_ref(pod), EventType::Warning, "ProvisioningFailed", &note).await;
        }
        for pool in pools.iter() {
            if let Some(note) = planned_note(&prepared.input, &plan, &pool.name_any()) {
                publish(&self.recorder, &pool.object_ref(&()), EventType::Normal, "Planned", note).await;
            }
        }
        Ok(())
    }

    async fn tell(
        &self,
        pods: &BTreeMap<String, &Arc<CachedPod>>,
        keys: &[String],
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        let references: Vec<_> = keys.iter().filter_map(|key| pods.get(key)).map(|pod| pod.object_ref(&())).collect();
        futures::stream::iter(references)
            .for_each_concurrent(16, |reference| async move {
                publish(&self.recorder, &reference, type_, reason, note.to_owned()).await;
            })
            .await;
    }
}

/// What a NodePool's Event says about the NodeClaims one batch planned from it: how many, for
/// how many pods, what they cost against the lower bound, and any claim that could not be sized
/// from best-value types. `None` when the batch planned nothing from the pool.
fn planned_note(input: &Input, plan: &Plan, nodepool: &str) -> Option<String> {
    let claims: Vec<_> = plan.new_claims.iter().filter(|claim| claim.nodepool == nodepool).collect();
    if claims.is_empty() {
        return None;
    }
    let pods: usize = claims.iter().map(|claim| claim.pods.len()).sum();
    let expected = count_expected(claims.iter().flat_map(|claim| &claim.pods));
    let price: f64 = claims.iter().map(|claim| claim.price).sum();
    let bound = nodepool_lower_bound(input, plan, nodepool);
    let ratio = if bound > 0.0 { format!("{:.2}", price / bound) } else { "n/a".to_owned() };
    let mut note = format!(
        "Planned {} NodeClaim(s) for {pods} pod(s) at ${price:.4}/hour, {ratio}x the lower bound ${bound:.4}/hour",
        claims.len()
    );
    if expected > 0 {
        note.push_str(&format!(
            "; {expected} of the pods: Deployments', ReplicaSets' and Jobs' pods the scheduler has not tried yet"
        ));
    }
    for sizing in [Sizing::AnySize, Sizing::Exotic] {
        let count = claims.iter().filter(|claim| claim.sizing == sizing).count();
        if count > 0 {
            note.push_str(&format!("; {count}: {}", sizing.describe()));
        }
    }
    Some(note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_closes_when_idle_or_at_its_maximum() {
        let (idle, max) = (Duration::from_secs(1), Duration::from_secs(10));
        let start = Instant::now();
        let mut window = BatchWindow::open(start);
        assert_eq!(window.closes_at(idle, max), start + idle);
        window.extend(start + Duration::from_millis(900));
        assert_eq!(window.closes_at(idle, max), start + Duration::from_millis(1900));
        window.extend(start + Duration::from_millis(9500));
        assert_eq!(window.closes_at(idle, max), start + max, "a steady trickle cannot hold a batch open");
    }
}
