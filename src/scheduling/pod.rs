//! What the simulation needs to know about a pod, read once from its spec: requests, node
//! requirements (with alternatives and preferences), tolerations, host ports and topology terms.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::{Deref, DerefMut},
    sync::Arc,
};

use k8s_openapi::{
    api::core::v1::{NodeSelectorTerm, Pod, PodAffinityTerm, PodSpec, Taint, Toleration},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};

use super::{
    catalog::defined_at_launch,
    quantity::QuantityError,
    requirements::{Requirement, Requirements},
    resources::{Resources, pod_requests},
};
use crate::apis::Operator;

/// A compiled label selector (matchLabels and matchExpressions).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector(Requirements);

impl Selector {
    pub fn from_label_selector(selector: &LabelSelector) -> Self {
        let mut requirements = Requirements::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.add(key, Requirement::one_of([value.clone()]));
        }
        for expression in selector.match_expressions.iter().flatten() {
            let values = expression.values.clone().unwrap_or_default();
            let operator = match expression.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                // DoesNotExist, and anything unknown, which then selects only pods without the key.
                _ => Operator::DoesNotExist,
            };
            requirements.add(&expression.key, Requirement::from_operator(operator, &values));
        }
        Self(requirements)
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.admit_labels(labels)
    }

    /// Narrows the selector to pods sharing this pod's values of `keys` (`matchLabelKeys`).
    fn with_label_keys(mut self, keys: &[String], labels: &BTreeMap<String, String>) -> Self {
        for key in keys {
            if let Some(value) = labels.get(key) {
                self.0.add(key, Requirement::one_of([value.clone()]));
            }
        }
        self
    }
}

/// How a topology term constrains a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopologyKind {
    /// Spread matching pods across domains of the key, at most `max_skew` apart.
    Spread { max_skew: u32, min_domains: u32 },
    /// Land in a domain that already holds a matching pod.
    Affinity,
    /// Land in a domain that holds no matching pod.
    AntiAffinity,
}

/// One topology constraint of a pod: the same value is shared by every pod of a Deployment, so
/// the simulation counts matching pods once per distinct term.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopologyTerm {
    pub kind: TopologyKind,
    /// The node label whose values are the domains, such as `topology.kubernetes.io/zone`.
    pub key: String,
    pub selector: Selector,
    /// Namespaces whose pods are counted.
    pub namespaces: Namespaces,
    /// Which nodes count, for domains and for the pods in them (spread constraints only).
    pub filter: NodeFilter,
}

/// The labels of each namespace, by name: what a `namespaceSelector` is matched against.
pub type NamespaceLabels = BTreeMap<String, BTreeMap<String, String>>;

/// Which namespaces' pods a term counts: those it names, and those whose labels its
/// `namespaceSelector` matches (an empty selector matches every namespace). A term with neither
/// counts its own pod's namespace, as kube-scheduler reads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespaces {
    pub names: BTreeSet<String>,
    pub selector: Option<Selector>,
}

impl Namespaces {
    /// Only this namespace.
    pub fn only(namespace: &str) -> Self {
        Self { names: [namespace.to_owned()].into(), selector: None }
    }

    /// Whether pods of `namespace` count; a namespace whose labels are unknown has none.
    pub fn include(&self, namespace: &str, labels: &NamespaceLabels) -> bool {
        self.names.contains(namespace)
            || self.selector.as_ref().is_some_and(|selector| match labels.get(namespace) {
                Some(labels) => selector.matches(labels),
                None => selector.matches(&BTreeMap::new()),
            })
    }
}

/// Which nodes a topology spread constraint counts, as kube-scheduler's `nodeAffinityPolicy` and
/// `nodeTaintsPolicy` say: with Honor, only nodes the pod itself could use give domains and
/// count their pods. The default (Honor affinity, Ignore taints) is kube-scheduler's; pod
/// (anti-)affinity terms count every node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeFilter {
    /// The pod's required node affinity alternatives, each with its nodeSelector (Honor).
    pub affinity: Option<Vec<Requirements>>,
    /// The pod's tolerations; only nodes whose NoSchedule and NoExecute taints they tolerate
    /// count (Honor).
    pub tolerations: Option<Tolerations>,
}

impl NodeFilter {
    /// Whether a node with these requirements (a registered node's labels, or the requirements
    /// of one still to be launched) and taints counts.
    pub fn passes(&self, node: &Requirements, registered: bool, taints: &[Taint]) -> bool {
        let defined = defined_at_launch(registered);
        let affinity = self
            .affinity
            .as_ref()
            .is_none_or(|alternatives| alternatives.iter().any(|alt| node.conflict_with(alt, defined).is_none()));
        affinity && self.tolerations.as_ref().is_none_or(|tolerations| tolerations.tolerate_hard(taints))
    }
}

/// A pod's tolerations, comparable and hashable so a [`NodeFilter`] can be part of a term.
#[derive(Debug, Clone, PartialEq)]
pub struct Tolerations(pub Vec<Toleration>);

impl Tolerations {
    /// Whether every NoSchedule and NoExecute taint is tolerated (PreferNoSchedule never keeps a
    /// node out of a spread's count).
    pub fn tolerate_hard(&self, taints: &[Taint]) -> bool {
        taints
            .iter()
            .filter(|taint| taint.effect != PREFER_NO_SCHEDULE)
            .all(|taint| self.0.iter().any(|toleration| tolerates(toleration, taint)))
    }

    fn fields(&self) -> Vec<TolerationFields<'_>> {
        self.0
            .iter()
            .map(|t| {
                (t.key.as_deref(), t.operator.as_deref(), t.value.as_deref(), t.effect.as_deref(), t.toleration_seconds)
            })
            .collect()
    }
}

/// A toleration's key, operator, value, effect and seconds: what equality and order compare.
type TolerationFields<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, Option<&'a str>, Option<i64>);

impl Eq for Tolerations {}

impl std::hash::Hash for Tolerations {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.fields().hash(state);
    }
}

impl PartialOrd for Tolerations {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Tolerations {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.fields().cmp(&other.fields())
    }
}

impl TopologyTerm {
    /// Whether a pod of `namespace` with `labels` is one the term counts.
    pub fn counts(&self, namespace: &str, labels: &BTreeMap<String, String>, namespaces: &NamespaceLabels) -> bool {
        self.selector.matches(labels) && self.namespaces.include(namespace, namespaces)
    }
}

/// A relaxable preference, dropped one at a time when a pod cannot be placed otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Preference {
    /// Preferred node affinity: extra node requirements.
    Requirements(Requirements),
    /// A ScheduleAnyway spread or a preferred pod (anti-)affinity term.
    Topology(TopologyTerm),
}

/// The taint effect the scheduler only tries to honour.
pub const PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";

/// Whether PreferNoSchedule taints keep a pod off a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftTaints {
    /// They do: the pod is first placed where nothing even prefers it gone.
    Avoided,
    /// They do not (kube-scheduler's own rule, and the solver's last relaxation).
    Tolerated,
}

/// A port a pod binds on its node's network.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    pub port: i32,
    /// The host IP bound; empty (or `0.0.0.0`) for every address.
    pub ip: String,
}

impl HostPort {
    /// Whether two pods binding these cannot share a node.
    pub fn conflicts_with(&self, other: &HostPort) -> bool {
        let every = |ip: &str| ip.is_empty() || ip == "0.0.0.0";
        self.protocol == other.protocol
            && self.port == other.port
            && (self.ip == other.ip || every(&self.ip) || every(&other.ip))
    }
}

/// A pod, as the simulation sees it: which pod, and its shape.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// `namespace/name`.
    pub key: String,
    /// Everything else the simulation reads; the replicas of one template have equal shapes,
    /// which the pod cache keeps once ([`Shapes`](super::shapes::Shapes)).
    pub shape: Arc<PodShape>,
    /// The PersistentVolumeClaims its volumes use (an ephemeral volume's is `<pod>-<volume>`),
    /// whose volumes may require a zone: folded into its requirements when an input is built.
    pub volume_claims: Vec<String>,
    /// A virtual pod holding a CapacityBuffer's room: never a Pod, never bound, placed after
    /// every real pod of a batch so that real pods get the room first.
    pub placeholder: bool,
}

impl Deref for PodInfo {
    type Target = PodShape;

    fn deref(&self) -> &PodShape {
        &self.shape
    }
}

/// Changing a pod's shape copies it first when other pods share it.
impl DerefMut for PodInfo {
    fn deref_mut(&mut self) -> &mut PodShape {
        Arc::make_mut(&mut self.shape)
    }
}

/// What the simulation reads of a pod besides its name.
#[derive(Debug, Clone, PartialEq)]
pub struct PodShape {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub requests: Resources,
    /// Alternative node requirements (required node affinity terms, each with the nodeSelector):
    /// the pod fits a node that satisfies any one of them.
    pub requirements: Vec<Requirements>,
    pub tolerations: Vec<Toleration>,
    /// The ports the pod binds on its node.
    pub host_ports: Vec<HostPort>,
    pub topology: Vec<TopologyTerm>,
    /// Preferences, most important first; honoured while possible.
    pub preferences: Vec<Preference>,
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> Result<Self, QuantityError> {
        let metadata = &pod.metadata;
        let namespace = metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let key = format!("{namespace}/{}", metadata.name.clone().unwrap_or_default());
        let labels = metadata.labels.clone().unwrap_or_default();
        let no_spec = PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&no_spec);
        let requests = pod_requests(spec)?;

        let mut selector_requirements = Requirements::new();
        for (key, value) in spec.node_selector.iter().flatten() {
            selector_requirements.add(key, Requirement::one_of([value.clone()]));
        }
        let node_affinity = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref());
        let required_terms = node_affinity
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
            .map(|r| r.node_selector_terms.as_slice())
            .unwrap_or_default();
        let requirements = if required_terms.is_empty() {
            vec![selector_requirements]
        } else {
            required_terms.iter().map(|term| selector_requirements.intersect(&term_requirements(term))).collect()
        };

        let mut preferred_nodes: Vec<_> = node_affinity
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.clone())
            .unwrap_or_default();
        preferred_nodes.sort_by_key(|p| std::cmp::Reverse(p.weight));
        let node_preferences =
            preferred_nodes.iter().map(|p| Preference::Requirements(term_requirements(&p.preference))).collect();

        let mut spread_preferences = Vec::new();
        let mut topology = Vec::new();
        for constraint in spec.topology_spread_constraints.iter().flatten() {
            let selector = constraint
                .label_selector
                .as_ref()
                .map(Selector::from_label_selector)
                .unwrap_or_else(|| Selector(Requirements::from_api(&[]).intersect(&never())))
                .with_label_keys(constraint.match_label_keys.as_deref().unwrap_or_default(), &labels);
            let term = TopologyTerm {
                kind: TopologyKind::Spread {
                    max_skew: u32::try_from(constraint.max_skew).unwrap_or(1).max(1),
                    min_domains: constraint.min_domains.and_then(|m| u32::try_from(m).ok()).unwrap_or(1),
                },
                key: constraint.topology_key.clone(),
                selector,
                namespaces: Namespaces::only(&namespace),
                filter: NodeFilter {
                    affinity: (constraint.node_affinity_policy.as_deref() != Some("Ignore"))
                        .then(|| requirements.clone()),
                    tolerations: (constraint.node_taints_policy.as_deref() == Some("Honor"))
                        .then(|| Tolerations(spec.tolerations.clone().unwrap_or_default())),
                },
            };
            if constraint.when_unsatisfiable == "ScheduleAnyway" {
                spread_preferences.push(Preference::Topology(term));
            } else {
                topology.push(term);
            }
        }
        let affinity = spec.affinity.as_ref();
        let pod_terms = [
            (
                TopologyKind::Affinity,
                affinity.and_then(|a| a.pod_affinity.as_ref()).map(|a| {
                    (
                        &a.required_during_scheduling_ignored_during_execution,
                        &a.preferred_during_scheduling_ignored_during_execution,
                    )
                }),
            ),
            (
                TopologyKind::AntiAffinity,
                affinity.and_then(|a| a.pod_anti_affinity.as_ref()).map(|a| {
                    (
                        &a.required_during_scheduling_ignored_during_execution,
                        &a.preferred_during_scheduling_ignored_during_execution,
                    )
                }),
            ),
        ];
        let mut pod_preferences = [Vec::new(), Vec::new()];
        for ((kind, terms), kept) in pod_terms.into_iter().zip(&mut pod_preferences) {
            let Some((required, preferred)) = terms else { continue };
            for term in required.iter().flatten() {
                topology.push(affinity_term(kind, term, &namespace, &labels));
            }
            let mut preferred = preferred.clone().unwrap_or_default();
            preferred.sort_by_key(|p| std::cmp::Reverse(p.weight));
            kept.extend(
                preferred.iter().map(|term| {
                    Preference::Topology(affinity_term(kind, &term.pod_affinity_term, &namespace, &labels))
                }),
            );
        }
        let [affinity_preferences, anti_affinity_preferences] = pod_preferences;
        let preferences =
            relaxation_order(spread_preferences, node_preferences, anti_affinity_preferences, affinity_preferences);

        let host_ports = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                p.host_port.filter(|port| *port > 0).map(|port| HostPort {
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    port,
                    ip: p.host_ip.clone().unwrap_or_default(),
                })
            })
            .collect();

        let shape = PodShape {
            namespace,
            labels,
            requests,
            requirements,
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            host_ports,
            topology,
            preferences,
        };
        let pod_name = metadata.name.as_deref().unwrap_or_default();
        let volume_claims = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|volume| match (&volume.persistent_volume_claim, &volume.ephemeral) {
                (Some(claim), _) => Some(claim.claim_name.clone()),
                (None, Some(_)) => Some(format!("{pod_name}-{}", volume.name)),
                (None, None) => None,
            })
            .collect();
        Ok(Self { key, shape: Arc::new(shape), volume_claims, placeholder: false })
    }
}

impl PodShape {
    /// Whether it has a topology term (spread, pod affinity or anti-affinity), required or
    /// preferred: without any such pod, where other pods run changes no decision.
    pub fn takes_part_in_topology(&self) -> bool {
        self.topology_terms().next().is_some()
    }

    /// Its topology terms: the required ones, then those of its preferences.
    pub fn topology_terms(&self) -> impl Iterator<Item = &TopologyTerm> {
        let preferred = self.preferences.iter().filter_map(|preference| match preference {
            Preference::Topology(term) => Some(term),
            Preference::Requirements(_) => None,
        });
        self.topology.iter().chain(preferred)
    }

    /// The first taint that keeps this pod off a node. PreferNoSchedule taints count until the
    /// pod is placed with `soft_taints` tolerated: the last relaxation, as in Karpenter.
    pub fn untolerated_taint<'a>(&self, taints: &'a [Taint], soft_taints: SoftTaints) -> Option<&'a Taint> {
        taints
            .iter()
            .filter(|taint| soft_taints == SoftTaints::Avoided || taint.effect != PREFER_NO_SCHEDULE)
            .find(|taint| !self.tolerations.iter().any(|toleration| tolerates(toleration, taint)))
    }
}

/// Preferences as the solver keeps them, most important first; relaxing drops the last. The kinds
/// go in Karpenter's relaxation order (preferred pod affinity first, then pod anti-affinity,
/// then node affinity, then ScheduleAnyway spreads in the order written), so a pod relaxed by
/// stoker lands where Karpenter would put it. Within a kind the lightest term goes first, as its
/// weight says it matters least (Karpenter drops the heaviest first; see docs/decisions.md).
fn relaxation_order(
    mut spreads: Vec<Preference>,
    node: Vec<Preference>,
    anti_affinity: Vec<Preference>,
    affinity: Vec<Preference>,
) -> Vec<Preference> {
    spreads.reverse();
    spreads.into_iter().chain(node).chain(anti_affinity).chain(affinity).collect()
}

/// A selector that matches no pod (a spread constraint without a selector counts nothing).
fn never() -> Requirements {
    let mut requirements = Requirements::new();
    requirements.add("stoker.dev/never", Requirement::one_of::<_, String>([]));
    requirements
}

fn affinity_term(
    kind: TopologyKind,
    term: &PodAffinityTerm,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> TopologyTerm {
    let selector = term
        .label_selector
        .as_ref()
        .map(Selector::from_label_selector)
        .unwrap_or_else(|| Selector(never()))
        .with_label_keys(term.match_label_keys.as_deref().unwrap_or_default(), labels);
    let names: BTreeSet<String> = term.namespaces.iter().flatten().cloned().collect();
    let namespace_selector = term.namespace_selector.as_ref().map(Selector::from_label_selector);
    let namespaces = match (names.is_empty(), namespace_selector) {
        (true, None) => Namespaces::only(namespace),
        (_, selector) => Namespaces { names, selector },
    };
    TopologyTerm { kind, key: term.topology_key.clone(), selector, namespaces, filter: NodeFilter::default() }
}

pub(crate) fn term_requirements(term: &NodeSelectorTerm) -> Requirements {
    let mut requirements = Requirements::new();
    for expression in term.match_expressions.iter().flatten() {
        let operator = match expression.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            "Gt" => Operator::Gt,
            "Lt" => Operator::Lt,
            // An operator the apiserver would have refused admits no node.
            _ => {
                requirements.add(&expression.key, Requirement::one_of::<_, String>([]));
                continue;
            }
        };
        requirements.add(
            &expression.key,
            Requirement::from_operator(operator, expression.values.as_deref().unwrap_or_default()),
        );
    }
    requirements
}

/// Kubernetes' toleration rule.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_matches = toleration.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
    let key_matches = match toleration.key.as_deref() {
        None | Some("") => toleration.operator.as_deref() == Some("Exists"),
        Some(key) => key == taint.key,
    };
    let value_matches = match toleration.operator.as_deref() {
        Some("Exists") => true,
        _ => toleration.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
    };
    effect_matches && key_matches && value_matches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> PodInfo {
        PodInfo::from_pod(&serde_saphyr::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn node_selector_joins_every_affinity_alternative() {
        let pod = pod("
metadata: {name: p, namespace: web}
spec:
  containers: [{name: c, resources: {requests: {cpu: '1'}}}]
  nodeSelector: {karpenter.sh/capacity-type: spot}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [a]}]
        - matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [b]}]
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 1
        preference: {matchExpressions: [{key: arch, operator: In, values: [arm64]}]}
");
        assert_eq!(pod.key, "web/p");
        assert_eq!(pod.requirements.len(), 2);
        for alternative in &pod.requirements {
            assert!(alternative.get("karpenter.sh/capacity-type").is_some());
            assert!(alternative.get("topology.kubernetes.io/zone").is_some());
        }
        assert_eq!(pod.preferences.len(), 1);
    }

    #[test]
    fn topology_terms_and_preferences() {
        let pod = pod("
metadata: {name: p, labels: {app: web, version: v2}}
spec:
  containers: [{name: c, ports: [{containerPort: 80, hostPort: 8080}]}]
  topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}, matchLabelKeys: [version]}
  - {maxSkew: 2, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app: web}}}
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - {topologyKey: kubernetes.io/hostname, labelSelector: {matchExpressions: [{key: app, operator: In, values: [web]}]}}
");
        assert_eq!(pod.topology.len(), 2);
        assert_eq!(pod.topology[0].kind, TopologyKind::Spread { max_skew: 1, min_domains: 1 });
        let other_version: BTreeMap<String, String> =
            [("app".into(), "web".into()), ("version".into(), "v1".into())].into();
        let none = NamespaceLabels::new();
        assert!(!pod.topology[0].counts("default", &other_version, &none), "matchLabelKeys narrows to v2");
        assert!(pod.topology[0].counts("default", &pod.labels, &none));
        assert!(!pod.topology[0].counts("other", &pod.labels, &none));
        assert_eq!(pod.topology[1].kind, TopologyKind::AntiAffinity);
        assert_eq!(pod.preferences.len(), 1);
        assert_eq!(pod.host_ports, [HostPort { protocol: "TCP".into(), port: 8080, ip: String::new() }]);
    }

    #[test]
    fn affinity_terms_count_the_namespaces_named_and_selected() {
        let pod = pod("
metadata: {name: p, namespace: web, labels: {app: web}}
spec:
  containers: [{name: c}]
  affinity:
    podAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: db}}}
      - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: db}}, namespaces: [data]}
      - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: db}}, namespaces: [data], namespaceSelector: {matchLabels: {team: storage}}}
      - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: db}}, namespaceSelector: {}}
");
        let db: BTreeMap<String, String> = [("app".into(), "db".into())].into();
        let namespaces: NamespaceLabels = [
            ("web".to_owned(), BTreeMap::new()),
            ("data".to_owned(), BTreeMap::new()),
            ("cache".to_owned(), [("team".to_owned(), "storage".to_owned())].into()),
        ]
        .into();
        let counted = |term: &TopologyTerm| -> Vec<&str> {
            ["web", "data", "cache", "unknown"].into_iter().filter(|ns| term.counts(ns, &db, &namespaces)).collect()
        };
        assert_eq!(counted(&pod.topology[0]), ["web"], "neither: the pod's own namespace");
        assert_eq!(counted(&pod.topology[1]), ["data"]);
        assert_eq!(counted(&pod.topology[2]), ["data", "cache"], "the union of named and selected");
        assert_eq!(counted(&pod.topology[3]), ["web", "data", "cache", "unknown"], "an empty selector: all");
    }

    #[test]
    fn tolerations_follow_kubernetes() {
        let taint = |key: &str, value: Option<&str>, effect: &str| Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
            time_added: None,
        };
        let toleration = |key: Option<&str>, operator: &str, value: Option<&str>, effect: Option<&str>| Toleration {
            key: key.map(Into::into),
            operator: Some(operator.into()),
            value: value.map(Into::into),
            effect: effect.map(Into::into),
            toleration_seconds: None,
        };
        let gpu = taint("gpu", Some("true"), "NoSchedule");
        assert!(tolerates(&toleration(Some("gpu"), "Equal", Some("true"), None), &gpu));
        assert!(!tolerates(&toleration(Some("gpu"), "Equal", Some("false"), None), &gpu));
        assert!(tolerates(&toleration(Some("gpu"), "Exists", None, Some("NoSchedule")), &gpu));
        assert!(!tolerates(&toleration(Some("gpu"), "Exists", None, Some("NoExecute")), &gpu));
        assert!(tolerates(&toleration(None, "Exists", None, None), &gpu));
        let mut pod = pod("metadata: {name: p}\nspec: {containers: []}");
        pod.tolerations = vec![];
        let soft = [taint("soft", None, PREFER_NO_SCHEDULE)];
        assert_eq!(pod.untolerated_taint(&soft, SoftTaints::Tolerated), None);
        assert_eq!(pod.untolerated_taint(&soft, SoftTaints::Avoided), Some(&soft[0]));
        assert_eq!(pod.untolerated_taint(std::slice::from_ref(&gpu), SoftTaints::Tolerated), Some(&gpu));
    }
}
