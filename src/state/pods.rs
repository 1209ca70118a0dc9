//! What the controllers ask of the pods, answered from an index kept up to date as pod events
//! arrive instead of by summing 10,000 pods on every batch:
//!
//! - per node: the requests of the pods that hold room there, the host ports they bind, how many
//!   of them a drain would evict;
//! - the bound pods with their parsed constraints, for topology counts;
//! - the provisionable pods;
//! - when each pod kube-scheduler has not tried yet was created;
//! - per controlling owner (a ReplicaSet, say), how many of its live pods the scheduler has tried.
//!
//! Each pod's contribution is remembered by its key (`namespace/name`), so a change replaces it
//! and a deletion takes it back. A re-list builds a new index and swaps it in when complete, as
//! the reflector store does.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    ResourceExt,
    runtime::{
        reflector::{ObjectRef, Store},
        watcher,
    },
};

use super::cache::CachedPod;
use crate::{
    apis::{labels, time::utc},
    scheduling::{
        pod::{HostPort, PodInfo},
        resources::Resources,
        solver::ScheduledPod,
    },
};

/// A pod the provisioner should find capacity for: the scheduler marked it unschedulable, it is
/// not bound or nominated, not a DaemonSet pod, not terminating.
pub fn is_provisionable(pod: &CachedPod) -> bool {
    let unschedulable =
        pod.condition("PodScheduled", "False").is_some_and(|c| c.reason.as_deref() == Some("Unschedulable"));
    unschedulable
        && pod.node_name.is_none()
        && pod.nominated_node_name.is_none()
        && !daemon_pod(&pod.metadata)
        && pod.metadata.deletion_timestamp.is_none()
}

/// A pod no scheduler has tried to place yet: not bound or nominated, without a PodScheduled
/// condition (a failed attempt or a scheduling gate sets one), not a DaemonSet pod, not
/// terminating or finished. Whether it fits the nodes there are, nobody knows yet.
pub fn awaits_scheduler(pod: &CachedPod) -> bool {
    pod.node_name.is_none()
        && pod.nominated_node_name.is_none()
        && !pod.conditions.iter().any(|c| c.type_ == "PodScheduled")
        && !daemon_pod(&pod.metadata)
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(pod.phase.as_deref(), Some("Succeeded" | "Failed"))
}

/// Seconds from a pod's creation until kube-scheduler bound it; `None` while it is not bound.
pub fn scheduling_wait(pod: &CachedPod) -> Option<f64> {
    pod.node_name.as_ref()?;
    let scheduled = pod.condition("PodScheduled", "True")?;
    let created = pod.metadata.creation_timestamp.as_ref()?;
    Some(scheduled.last_transition_time.as_ref()?.0.duration_since(created.0).as_secs_f64().max(0.0))
}

/// Whether draining evicts this pod: not owned by a DaemonSet, not a static (mirror) pod, not
/// finished, and not already terminating.
pub fn evictable(metadata: &ObjectMeta, phase: Option<&str>) -> bool {
    let mirror = metadata.annotations.as_ref().is_some_and(|a| a.contains_key(labels::MIRROR_POD));
    let finished = matches!(phase, Some("Succeeded" | "Failed"));
    !daemon_pod(metadata) && !mirror && !finished && metadata.deletion_timestamp.is_none()
}

/// The UID of the pod's controlling owner, if the pod is live (not terminating, not finished:
/// what a ReplicaSet counts towards its replicas) and a scheduler has tried it.
fn tried_controller(pod: &CachedPod) -> Option<&str> {
    let finished = matches!(pod.phase.as_deref(), Some("Succeeded" | "Failed"));
    if pod.metadata.deletion_timestamp.is_some() || finished || awaits_scheduler(pod) {
        return None;
    }
    let owners = pod.metadata.owner_references.iter().flatten();
    owners.filter(|owner| owner.controller == Some(true)).map(|owner| owner.uid.as_str()).next()
}

/// Whether a DaemonSet owns the pod: it goes with its node, and its node is never launched for it.
fn daemon_pod(metadata: &ObjectMeta) -> bool {
    metadata.owner_references.iter().flatten().any(|owner| owner.kind == "DaemonSet")
}

/// The node a pod holds room on: bound and not finished.
fn occupied_node(pod: &CachedPod) -> Option<&str> {
    if matches!(pod.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    pod.node_name.as_deref()
}

/// What the pods bound to one node hold there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeUse {
    /// Summed requests (pods whose requests parse).
    pub requests: Resources,
    pub host_ports: Vec<HostPort>,
    /// Pods holding room on the node.
    pub pods: usize,
    /// Of those, the ones a drain evicts (see [`evictable`]).
    pub evictable: usize,
    /// Pods not bound yet that the scheduler nominated to the node (a preemption making room).
    pub nominated: usize,
    /// Grows whenever a pod comes to the node or leaves it (or stops being evictable): a stamp
    /// from a counter across the index, so "no pod change since" is one comparison.
    pub changed: u64,
}

/// One pod's contribution, to take back when it changes or goes.
#[derive(Debug, Clone)]
struct Contribution {
    node: Option<Arc<str>>,
    info: Option<Arc<PodInfo>>,
    evictable: bool,
    /// The node the pod is nominated to, while it is not bound.
    nominated: Option<Arc<str>>,
}

/// The index. Read it through [`PodIndex`]'s accessors; the state's pod watch writes it.
#[derive(Debug, Default)]
pub struct PodIndex {
    contributions: HashMap<String, Contribution>,
    nodes: HashMap<Arc<str>, NodeUse>,
    /// Bound pods whose constraints parse, in no order; `positions` finds each by key.
    scheduled: Vec<ScheduledPod>,
    positions: HashMap<String, usize>,
    provisionable: BTreeMap<String, Arc<CachedPod>>,
    /// Pods awaiting the scheduler (see [`awaits_scheduler`]): when each was created.
    untried: HashMap<String, DateTime<Utc>>,
    /// Live, tried pods' controlling owners by pod key, and how many such pods each owner has.
    controllers: HashMap<String, Arc<str>>,
    tried_owned: HashMap<Arc<str>, usize>,
    /// The last stamp given to a node's [`NodeUse::changed`].
    stamp: u64,
    /// The index a re-list is building, swapped in when it completes.
    relisting: Option<Box<PodIndex>>,
}

impl PodIndex {
    /// An index of these pods (for tests, benchmarks and `stoker plan`).
    pub fn of<'a>(pods: impl IntoIterator<Item = &'a Arc<CachedPod>>) -> Self {
        let mut index = Self::default();
        for pod in pods {
            index.apply(pod.clone());
        }
        index
    }

    /// Brings the index up to date with a watch event of the pod cache, after the event reached
    /// `store`, whose copy of the pod it keeps rather than another.
    pub fn handle(&mut self, event: &watcher::Event<CachedPod>, store: &Store<CachedPod>) {
        let stored = |pod: &CachedPod| store.get(&ObjectRef::from_obj(pod)).unwrap_or_else(|| Arc::new(pod.clone()));
        match event {
            watcher::Event::Apply(pod) => self.apply(stored(pod)),
            watcher::Event::Delete(pod) => {
                let key = key(pod);
                let node = self.contributions.get(&key).and_then(|c| c.node.clone());
                self.remove(&key);
                if let Some(node) = node {
                    self.touch(&node);
                }
            }
            watcher::Event::Init => self.relisting = Some(Box::default()),
            // The store shows a re-list's objects only when it is done.
            watcher::Event::InitApply(pod) => {
                self.relisting.get_or_insert_with(Box::default).apply(Arc::new(pod.clone()))
            }
            watcher::Event::InitDone => {
                if let Some(fresh) = self.relisting.take() {
                    *self = *fresh;
                }
            }
        }
    }

    /// What the pods bound to `node` hold there.
    pub fn node(&self, node: &str) -> Option<&NodeUse> {
        self.nodes.get(node)
    }

    /// Every node some pod holds room on.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &NodeUse)> {
        self.nodes.iter().map(|(name, used)| (&**name, used))
    }

    /// The bound pods, for the solver's topology counts.
    pub fn scheduled(&self) -> &[ScheduledPod] {
        &self.scheduled
    }

    /// The provisionable pods, by key.
    pub fn provisionable(&self) -> impl Iterator<Item = &Arc<CachedPod>> {
        self.provisionable.values()
    }

    pub fn any_provisionable(&self) -> bool {
        !self.provisionable.is_empty()
    }

    /// How many pods created at `since` or later no scheduler has tried yet (see
    /// [`awaits_scheduler`]; a pod without a creation time is not counted).
    pub fn untried_since(&self, since: DateTime<Utc>) -> usize {
        self.untried.values().filter(|created| **created >= since).count()
    }

    /// How many of the live pods (not terminating, not finished) the owner with this UID
    /// controls a scheduler has tried: bound, nominated or found no room for.
    pub fn tried_pods_of(&self, owner_uid: &str) -> usize {
        self.tried_owned.get(owner_uid).copied().unwrap_or(0)
    }

    /// Whether a drain of its node would evict the pod with this key (see [`evictable`]).
    pub fn evictable(&self, key: &str) -> bool {
        self.contributions.get(key).is_some_and(|c| c.evictable)
    }

    fn apply(&mut self, pod: Arc<CachedPod>) {
        let key = key(&pod);
        let before = self.contributions.get(&key).and_then(|c| Some((c.node.clone()?, c.evictable)));
        let stamp = before.as_ref().and_then(|(node, _)| self.nodes.get(node)).map(|used| used.changed);
        self.apply_contribution(key.clone(), pod);
        let after = self.contributions.get(&key).and_then(|c| Some((c.node.clone()?, c.evictable)));
        if before != after {
            for (node, _) in before.into_iter().chain(after) {
                self.touch(&node);
            }
        } else if let (Some((node, _)), Some(stamp)) = (after, stamp)
            && let Some(used) = self.nodes.get_mut(&node)
        {
            // A change of status on the same node is not a pod change for the node (taking the
            // pod out and back in may have dropped and re-made the node's entry).
            used.changed = stamp;
        }
    }

    /// Stamps the node's use as changed now, if a pod still holds room there.
    fn touch(&mut self, node: &str) {
        if let Some(used) = self.nodes.get_mut(node) {
            self.stamp += 1;
            used.changed = self.stamp;
        }
    }

    fn apply_contribution(&mut self, key: String, pod: Arc<CachedPod>) {
        self.remove(&key);
        if let Some(owner) = tried_controller(&pod) {
            let owner: Arc<str> = match self.tried_owned.get_key_value(owner) {
                Some((shared, _)) => shared.clone(),
                None => owner.into(),
            };
            *self.tried_owned.entry(owner.clone()).or_default() += 1;
            self.controllers.insert(key.clone(), owner);
        }
        if is_provisionable(&pod) {
            self.provisionable.insert(key, pod);
            return;
        }
        if awaits_scheduler(&pod) {
            if let Some(created) = pod.metadata.creation_timestamp.as_ref().and_then(utc) {
                self.untried.insert(key, created);
            }
            return;
        }
        if pod.node_name.is_none()
            && let Some(nominated) = pod.nominated_node_name.as_deref()
        {
            let node = self.intern(nominated);
            self.nodes.entry(node.clone()).or_default().nominated += 1;
            let contribution = Contribution { node: None, info: None, evictable: false, nominated: Some(node) };
            self.contributions.insert(key, contribution);
            return;
        }
        let Some(node_name) = occupied_node(&pod) else { return };
        let node = self.intern(node_name);
        let info = pod.scheduling.as_ref().ok().cloned();
        let evictable = evictable(&pod.metadata, pod.phase.as_deref());
        let used = self.nodes.entry(node.clone()).or_default();
        used.pods += 1;
        used.evictable += usize::from(evictable);
        if let Some(info) = &info {
            used.requests.add(&info.requests);
            used.host_ports.extend(info.host_ports.iter().cloned());
            self.positions.insert(key.clone(), self.scheduled.len());
            self.scheduled.push(ScheduledPod { pod: info.clone(), node: node.clone() });
        }
        self.contributions.insert(key, Contribution { node: Some(node), info, evictable, nominated: None });
    }

    /// The node's name, shared with the index's own copy when it has one.
    fn intern(&self, name: &str) -> Arc<str> {
        match self.nodes.get_key_value(name) {
            Some((shared, _)) => shared.clone(),
            None => name.into(),
        }
    }

    fn remove(&mut self, key: &str) {
        self.provisionable.remove(key);
        self.untried.remove(key);
        if let Some(owner) = self.controllers.remove(key)
            && let Some(tried) = self.tried_owned.get_mut(&owner)
        {
            *tried -= 1;
            if *tried == 0 {
                self.tried_owned.remove(&owner);
            }
        }
        let Some(contribution) = self.contributions.remove(key) else { return };
        if let Some(nominated) = contribution.nominated {
            if let Some(used) = self.nodes.get_mut(&nominated) {
                used.nominated -= 1;
                if used.pods == 0 && used.nominated == 0 {
                    self.nodes.remove(&nominated);
                }
            }
            return;
        }
        let Contribution { node: Some(node), info, evictable, .. } = contribution else { return };
        if let Some(used) = self.nodes.get_mut(&node) {
            used.pods -= 1;
            used.evictable -= usize::from(evictable);
            if let Some(info) = &info {
                used.requests.subtract(&info.requests);
                for port in &info.host_ports {
                    if let Some(at) = used.host_ports.iter().position(|p| p == port) {
                        used.host_ports.swap_remove(at);
                    }
                }
            }
            if used.pods == 0 && used.nominated == 0 {
                self.nodes.remove(&node);
            } else if used.pods == 0 {
                // No pod holds room: no zero-valued leftovers of the subtraction.
                used.requests = Resources::new();
            }
        }
        if let Some(position) = self.positions.remove(key) {
            self.scheduled.swap_remove(position);
            if let Some(moved) = self.scheduled.get(position) {
                self.positions.insert(moved.pod.key.clone(), position);
            }
        }
    }
}

fn key(pod: &CachedPod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::Pod,
        apimachinery::pkg::apis::meta::v1::{OwnerReference, Time},
    };
    use proptest::prelude::*;

    use super::*;

    /// Feeds an event through a store, as the pod watch does.
    fn handle(index: &mut PodIndex, event: watcher::Event<CachedPod>) {
        let (store, mut writer) = kube::runtime::reflector::store();
        writer.apply_watcher_event(&event);
        index.handle(&event, &store);
    }

    fn pod(name: &str, node: Option<&str>, cpu: u32, port: Option<i32>, phase: &str) -> Arc<CachedPod> {
        nominated_pod(name, node, None, cpu, port, phase)
    }

    fn nominated_pod(
        name: &str,
        node: Option<&str>,
        nominated: Option<&str>,
        cpu: u32,
        port: Option<i32>,
        phase: &str,
    ) -> Arc<CachedPod> {
        let ports = port.map_or(String::new(), |p| format!(", ports: [{{containerPort: 80, hostPort: {p}}}]"));
        let node = node.map_or(String::new(), |n| format!("\n  nodeName: {n}"));
        let nominated = nominated.map_or(String::new(), |n| format!(", nominatedNodeName: {n}"));
        let pod: Pod = serde_saphyr::from_str(&format!(
            "metadata: {{name: {name}, namespace: ns}}\nspec:{node}\n  containers: [{{name: c, image: i, resources: {{requests: {{cpu: {cpu}m}}}}{ports}}}]\nstatus: {{phase: {phase}{nominated}, conditions: [{{type: PodScheduled, status: 'False', reason: Unschedulable}}]}}\n"
        ))
        .expect("a pod");
        Arc::new(CachedPod::from(pod))
    }

    /// `pod`, controlled by the ReplicaSet with UID `uid`.
    fn owned_by(pod: &CachedPod, uid: &str) -> Arc<CachedPod> {
        let mut pod = pod.clone();
        pod.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: uid.into(),
            uid: uid.into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        Arc::new(pod)
    }

    /// The index a fresh build from `pods` gives, compared field by field with `index`.
    fn assert_same(index: &PodIndex, pods: &[Arc<CachedPod>]) {
        let fresh = PodIndex::of(pods);
        let by_node = |i: &PodIndex| {
            let mut nodes: Vec<(String, NodeUse)> = i
                .nodes()
                .map(|(name, used)| {
                    let mut used = used.clone();
                    used.host_ports.sort_by_key(|p| p.port);
                    // Stamps count the index's own history, which a fresh build does not share.
                    used.changed = 0;
                    (name.to_owned(), used)
                })
                .collect();
            nodes.sort_by(|a, b| a.0.cmp(&b.0));
            nodes
        };
        assert_eq!(by_node(index), by_node(&fresh));
        let scheduled = |i: &PodIndex| {
            let mut keys: Vec<(String, String)> =
                i.scheduled().iter().map(|s| (s.pod.key.clone(), s.node.to_string())).collect();
            keys.sort();
            keys
        };
        assert_eq!(scheduled(index), scheduled(&fresh));
        for owner in ["rs-0", "rs-1"] {
            assert_eq!(index.tried_pods_of(owner), fresh.tried_pods_of(owner), "{owner}'s tried pods");
        }
        let provisionable = |i: &PodIndex| i.provisionable().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(provisionable(index), provisionable(&fresh));
    }

    #[test]
    fn draining_skips_daemonset_mirror_and_finished_pods() {
        let evicts = |yaml: &str| {
            let pod: Pod = serde_saphyr::from_str(yaml).expect("a Pod");
            evictable(&pod.metadata, pod.status.as_ref().and_then(|s| s.phase.as_deref()))
        };
        assert!(evicts("metadata: {name: web}\nstatus: {phase: Running}"));
        assert!(!evicts(
            "metadata: {name: d, ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: d, uid: u}]}"
        ));
        assert!(!evicts("metadata: {name: m, annotations: {kubernetes.io/config.mirror: x}}"));
        assert!(!evicts("metadata: {name: j}\nstatus: {phase: Succeeded}"));
    }

    #[test]
    fn usage_follows_binding_finishing_and_deletion() {
        let mut index = PodIndex::default();
        let pending = pod("a", None, 100, None, "Pending");
        handle(&mut index, watcher::Event::Apply((*pending).clone()));
        assert!(index.any_provisionable());
        assert!(index.node("n1").is_none());
        handle(&mut index, watcher::Event::Apply((*pod("a", Some("n1"), 100, Some(8080), "Running")).clone()));
        handle(&mut index, watcher::Event::Apply((*pod("b", Some("n1"), 250, None, "Running")).clone()));
        assert!(!index.any_provisionable());
        let used = index.node("n1").expect("n1 in use");
        assert_eq!((used.requests.get("cpu"), used.pods, used.evictable, used.host_ports.len()), (350, 2, 2, 1));
        // Finished pods hold no room.
        handle(&mut index, watcher::Event::Apply((*pod("a", Some("n1"), 100, Some(8080), "Succeeded")).clone()));
        let used = index.node("n1").expect("n1 in use");
        assert_eq!((used.requests.get("cpu"), used.pods, used.host_ports.len()), (250, 1, 0));
        handle(&mut index, watcher::Event::Delete((*pod("b", Some("n1"), 250, None, "Running")).clone()));
        assert!(index.node("n1").is_none(), "a node nothing holds room on is forgotten");
        assert!(index.scheduled().is_empty());
    }

    #[test]
    fn pods_no_scheduler_has_tried_are_counted_from_their_creation_until_tried() {
        let untried = |name: &str, created: &str, extra: &str| {
            let pod: Pod = serde_saphyr::from_str(&format!(
                "metadata: {{name: {name}, namespace: ns, creationTimestamp: '{created}'{extra}}}\nspec:\n  containers: [{{name: c, image: i}}]\nstatus: {{phase: Pending}}\n"
            ))
            .expect("a pod");
            CachedPod::from(pod)
        };
        let at = |time: &str| DateTime::parse_from_rfc3339(time).expect("a time").with_timezone(&Utc);
        let mut index = PodIndex::default();
        handle(&mut index, watcher::Event::Apply(untried("new", "2026-12-04T10:00:00Z", "")));
        handle(&mut index, watcher::Event::Apply(untried("old", "2026-12-04T09:00:00Z", "")));
        let daemon = ", ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: d, uid: u}]";
        handle(&mut index, watcher::Event::Apply(untried("daemon", "2026-12-04T10:00:00Z", daemon)));
        let going = ", deletionTimestamp: '2026-12-04T10:00:05Z'";
        handle(&mut index, watcher::Event::Apply(untried("going", "2026-12-04T10:00:00Z", going)));
        assert_eq!(index.untried_since(at("2026-12-04T09:55:00Z")), 1, "the new pod only");
        assert_eq!(index.untried_since(at("2026-12-04T08:55:00Z")), 2);
        assert!(!index.any_provisionable());

        // Tried and found no room: pending for the provisioner instead.
        handle(&mut index, watcher::Event::Apply((*pod("new", None, 100, None, "Pending")).clone()));
        assert_eq!(index.untried_since(at("2026-12-04T08:55:00Z")), 1);
        assert!(index.any_provisionable());
        // Bound, and deleted.
        handle(&mut index, watcher::Event::Apply((*pod("old", Some("n1"), 100, None, "Running")).clone()));
        assert_eq!(index.untried_since(at("2026-12-04T08:55:00Z")), 0);
        handle(&mut index, watcher::Event::Apply(untried("again", "2026-12-04T10:01:00Z", "")));
        handle(&mut index, watcher::Event::Delete(untried("again", "2026-12-04T10:01:00Z", "")));
        assert_eq!(index.untried_since(at("2026-12-04T08:55:00Z")), 0);
    }

    #[test]
    fn an_owner_counts_its_tried_pods_until_they_terminate_finish_or_go() {
        let mut index = PodIndex::default();
        let pending = owned_by(&pod("a", None, 100, None, "Pending"), "rs");
        handle(&mut index, watcher::Event::Apply((*pending).clone()));
        handle(
            &mut index,
            watcher::Event::Apply((*owned_by(&pod("b", Some("n1"), 100, None, "Running"), "rs")).clone()),
        );
        handle(
            &mut index,
            watcher::Event::Apply((*owned_by(&pod("c", Some("n1"), 100, None, "Failed"), "rs")).clone()),
        );
        handle(&mut index, watcher::Event::Apply((*pod("d", Some("n1"), 100, None, "Running")).clone()));
        let mut untried = (*owned_by(&pod("e", None, 100, None, "Pending"), "rs")).clone();
        untried.conditions.clear();
        handle(&mut index, watcher::Event::Apply(untried));
        assert_eq!(index.tried_pods_of("rs"), 2, "pending and running; not failed, untried nor unowned");
        let mut going = (*pending).clone();
        going.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        handle(&mut index, watcher::Event::Apply(going));
        assert_eq!(index.tried_pods_of("rs"), 1, "a terminating pod is replaced");
        handle(
            &mut index,
            watcher::Event::Delete((*owned_by(&pod("b", Some("n1"), 100, None, "Running"), "rs")).clone()),
        );
        assert_eq!(index.tried_pods_of("rs"), 0);
        assert_eq!(index.tried_pods_of("another"), 0);
    }

    #[test]
    fn a_node_is_stamped_when_a_pod_comes_or_goes_not_when_one_changes_in_place() {
        let mut index = PodIndex::default();
        let stamp = |index: &PodIndex| index.node("n1").map(|u| u.changed);
        handle(&mut index, watcher::Event::Apply((*pod("a", Some("n1"), 100, None, "Pending")).clone()));
        let bound = stamp(&index);
        handle(&mut index, watcher::Event::Apply((*pod("a", Some("n1"), 100, None, "Running")).clone()));
        assert_eq!(stamp(&index), bound, "a status change on the same node");
        handle(&mut index, watcher::Event::Apply((*pod("b", Some("n1"), 100, None, "Running")).clone()));
        let second = stamp(&index);
        assert!(second > bound);
        handle(&mut index, watcher::Event::Delete((*pod("b", Some("n1"), 100, None, "Running")).clone()));
        assert!(stamp(&index) > second, "a pod leaving");
    }

    #[test]
    fn a_relist_replaces_the_index_when_complete() {
        let mut index = PodIndex::default();
        handle(&mut index, watcher::Event::Apply((*pod("gone", Some("n1"), 100, None, "Running")).clone()));
        handle(&mut index, watcher::Event::Init);
        handle(&mut index, watcher::Event::InitApply((*pod("kept", Some("n2"), 300, None, "Running")).clone()));
        assert!(index.node("n1").is_some(), "the old index answers until the re-list is done");
        handle(&mut index, watcher::Event::InitDone);
        assert!(index.node("n1").is_none());
        assert_eq!(index.node("n2").map(|u| u.requests.get("cpu")), Some(300));
    }

    proptest! {
        /// After any sequence of changes, the index equals one built from the final pods.
        #[test]
        fn incremental_updates_equal_a_fresh_build(
            changes in proptest::collection::vec((0usize..6, proptest::option::of(0usize..3), proptest::option::of(0usize..3), 1u32..500, proptest::option::of(8000i32..8003), 0usize..3, any::<bool>(), proptest::option::of(0usize..2)), 1..60)
        ) {
            let mut index = PodIndex::default();
            let mut live: BTreeMap<String, Arc<CachedPod>> = BTreeMap::new();
            for (which, node, nominated, cpu, port, phase, delete, owner) in changes {
                let name = format!("p{which}");
                let node = node.map(|n| format!("n{n}"));
                let nominated = nominated.map(|n| format!("n{n}"));
                let phase = ["Pending", "Running", "Failed"][phase];
                let pod = nominated_pod(&name, node.as_deref(), nominated.as_deref(), cpu, port, phase);
                let pod = match owner {
                    Some(owner) => owned_by(&pod, &format!("rs-{owner}")),
                    None => pod,
                };
                if delete {
                    handle(&mut index, watcher::Event::Delete((*pod).clone()));
                    live.remove(&name);
                } else {
                    handle(&mut index, watcher::Event::Apply((*pod).clone()));
                    live.insert(name, pod);
                }
            }
            let pods: Vec<Arc<CachedPod>> = live.into_values().collect();
            assert_same(&index, &pods);
        }
    }
}
