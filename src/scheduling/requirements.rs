//! The requirements algebra: what values each node label key may take, how two sets of
//! requirements combine (intersection), whether they can both hold (compatibility), and whether a
//! concrete set of labels satisfies them.
//!
//! A [`Requirement`] is a set of allowed values for one key, written as either a finite set
//! (`In`) or the complement of one (`NotIn`, `Exists`), optionally bounded (`Gt`, `Lt`, `Gte`, `Lte`), together
//! with whether the label must, may or must not be present. Every operator of the API maps onto
//! this one shape, so intersection is a single rule instead of a table of operator pairs.

use std::collections::BTreeMap;

use itertools::{EitherOrBoth, Itertools};
use smallvec::SmallVec;

use crate::apis::{NodeSelectorRequirementWithMinValues, Operator};

/// A requirement's values, sorted and without repeats. Most requirements hold one value (each
/// label of each of the catalog's instance types, a zone, a capacity type), which is kept inline:
/// a `BTreeSet` allocated a whole tree node for it, about a third of the catalog's memory.
type Values = SmallVec<[String; 1]>;

fn sorted_values(values: impl IntoIterator<Item = String>) -> Values {
    let mut values: Values = values.into_iter().collect();
    values.sort_unstable();
    values.dedup();
    values
}

/// The values of two sorted lists that `keep` chooses, still sorted: union, intersection and
/// difference are each one choice over the merged pair.
fn merge_values(a: &Values, b: &Values, keep: impl Fn(&EitherOrBoth<&String, &String>) -> bool) -> Values {
    a.iter().merge_join_by(b.iter(), |x, y| x.cmp(y)).filter(keep).map(|both| both.reduce(|x, _| x).clone()).collect()
}

/// Whether `value` is an integer within the bounds (`greater_than` < value < `less_than`); any
/// value is, when there are none.
fn within_bounds(value: &str, greater_than: Option<i64>, less_than: Option<i64>) -> bool {
    if greater_than.is_none() && less_than.is_none() {
        return true;
    }
    value
        .parse::<i64>()
        .is_ok_and(|n| greater_than.is_none_or(|bound| n > bound) && less_than.is_none_or(|bound| n < bound))
}

/// Whether a label must be present on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Presence {
    /// The label must be present (In, Exists, Gt, Lt, Gte, Lte).
    Required,
    /// The label may be absent (NotIn).
    Optional,
    /// The label must be absent (DoesNotExist).
    Forbidden,
}

/// The values one label key may take.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    presence: Presence,
    /// When true, any value except `values`; when false, only `values`.
    complement: bool,
    values: Values,
    /// Values must be integers greater than this.
    greater_than: Option<i64>,
    /// Values must be integers less than this.
    less_than: Option<i64>,
    /// At least this many distinct values must stay possible (instance-type flexibility).
    min_values: Option<usize>,
}

impl Requirement {
    /// Any value, present or not: the neutral element of intersection.
    pub fn any() -> Self {
        Self {
            presence: Presence::Optional,
            complement: true,
            values: Values::new(),
            greater_than: None,
            less_than: None,
            min_values: None,
        }
    }

    /// Exactly these values (`In`).
    pub fn one_of<I: IntoIterator<Item = S>, S: Into<String>>(values: I) -> Self {
        Self {
            presence: Presence::Required,
            complement: false,
            values: sorted_values(values.into_iter().map(Into::into)),
            ..Self::any()
        }
    }

    /// Any value but these, or no label (`NotIn`).
    pub fn none_of<I: IntoIterator<Item = S>, S: Into<String>>(values: I) -> Self {
        Self { values: sorted_values(values.into_iter().map(Into::into)), ..Self::any() }
    }

    /// Any value, but the label must be present (`Exists`).
    pub fn exists() -> Self {
        Self { presence: Presence::Required, ..Self::any() }
    }

    /// No label (`DoesNotExist`).
    pub fn does_not_exist() -> Self {
        Self { presence: Presence::Forbidden, complement: false, ..Self::any() }
    }

    /// From an API requirement.
    pub fn from_api(requirement: &NodeSelectorRequirementWithMinValues) -> Self {
        Self::from_operator(requirement.operator, &requirement.values)
            .with_min_values(requirement.min_values.and_then(|n| usize::try_from(n).ok()))
    }

    /// From an operator and its values, as in a Kubernetes `NodeSelectorRequirement`.
    pub fn from_operator(operator: Operator, values: &[String]) -> Self {
        let bound = || values.first().and_then(|v| v.parse::<i64>().ok());
        match operator {
            Operator::In => Self::one_of(values.iter().cloned()),
            Operator::NotIn => Self::none_of(values.iter().cloned()),
            Operator::Exists => Self::exists(),
            Operator::DoesNotExist => Self::does_not_exist(),
            // A malformed bound (the schema rejects these) admits nothing rather than everything.
            Operator::Gt => bound()
                .map_or_else(|| Self::one_of::<_, String>([]), |b| Self { greater_than: Some(b), ..Self::exists() }),
            Operator::Lt => {
                bound().map_or_else(|| Self::one_of::<_, String>([]), |b| Self { less_than: Some(b), ..Self::exists() })
            }
            // Over integers, `>= b` is `> b - 1` and `<= b` is `< b + 1`; the schema keeps `b`
            // to 18 digits, so neither step can overflow for an admitted object.
            Operator::Gte => bound().map_or_else(
                || Self::one_of::<_, String>([]),
                |b| Self { greater_than: Some(b.saturating_sub(1)), ..Self::exists() },
            ),
            Operator::Lte => bound().map_or_else(
                || Self::one_of::<_, String>([]),
                |b| Self { less_than: Some(b.saturating_add(1)), ..Self::exists() },
            ),
        }
    }

    pub fn with_min_values(mut self, min_values: Option<usize>) -> Self {
        self.min_values = min_values;
        self
    }

    pub fn min_values(&self) -> Option<usize> {
        self.min_values
    }

    /// The finite set of allowed values, when the requirement is one (`In`, possibly narrowed).
    /// Sorted, without repeats.
    pub fn finite_values(&self) -> Option<&[String]> {
        (!self.complement && self.presence == Presence::Required).then_some(self.values.as_slice())
    }

    fn contains(&self, value: &str) -> bool {
        self.values.binary_search_by(|v| v.as_str().cmp(value)).is_ok()
    }

    /// Whether a node whose label has this value (None: no such label) satisfies the requirement.
    pub fn admits(&self, value: Option<&str>) -> bool {
        match value {
            None => self.presence != Presence::Required,
            Some(_) if self.presence == Presence::Forbidden => false,
            Some(value) => {
                self.complement != self.contains(value) && within_bounds(value, self.greater_than, self.less_than)
            }
        }
    }

    /// The values both requirements allow.
    pub fn intersect(&self, other: &Self) -> Self {
        let presence = match (self.presence, other.presence) {
            // The label must be there and must not be: nothing satisfies both.
            (Presence::Required, Presence::Forbidden) | (Presence::Forbidden, Presence::Required) => {
                return Self::one_of::<_, String>([]).with_min_values(self.min_values.max(other.min_values));
            }
            (Presence::Forbidden, _) | (_, Presence::Forbidden) => Presence::Forbidden,
            (Presence::Required, _) | (_, Presence::Required) => Presence::Required,
            _ => Presence::Optional,
        };
        let greater_than = self.greater_than.max(other.greater_than);
        let less_than = match (self.less_than, other.less_than) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (complement, values) = match (self.complement, other.complement) {
            (true, true) => (true, merge_values(&self.values, &other.values, |_| true)),
            (true, false) => (false, merge_values(&other.values, &self.values, |e| e.is_left())),
            (false, true) => (false, merge_values(&self.values, &other.values, |e| e.is_left())),
            (false, false) => (false, merge_values(&self.values, &other.values, |e| e.is_both())),
        };
        let mut result = Self {
            presence,
            complement,
            values,
            greater_than,
            less_than,
            min_values: self.min_values.max(other.min_values),
        };
        if presence == Presence::Forbidden {
            // Only "no label" remains; values no longer matter.
            result.complement = false;
            result.values.clear();
            result.greater_than = None;
            result.less_than = None;
        } else if !result.complement {
            // The bounds are folded into the listed values, which are all that remain possible.
            let (greater_than, less_than) = (result.greater_than.take(), result.less_than.take());
            result.values.retain(|value| within_bounds(value, greater_than, less_than));
        }
        result
    }

    /// Whether no node can satisfy the requirement: a label that must exist but may take no value.
    pub fn is_unsatisfiable(&self) -> bool {
        match self.presence {
            Presence::Forbidden | Presence::Optional => false,
            Presence::Required if !self.complement => self.values.is_empty(),
            Presence::Required => match (self.greater_than, self.less_than) {
                // Few integers between the bounds: unsatisfiable if every one is excluded.
                (Some(low), Some(high)) if high.saturating_sub(low).saturating_sub(1) <= self.values.len() as i64 => {
                    (low.saturating_add(1)..high).all(|n| self.contains(&n.to_string()))
                }
                _ => false,
            },
        }
    }

    /// Back to API form: one requirement, or two when bounds and values both constrain.
    pub fn to_api(&self, key: &str) -> Vec<NodeSelectorRequirementWithMinValues> {
        let make = |operator, values: Vec<String>| NodeSelectorRequirementWithMinValues {
            key: key.to_owned(),
            operator,
            values,
            min_values: self.min_values.and_then(|n| i32::try_from(n).ok()),
        };
        match (self.presence, self.complement) {
            (Presence::Forbidden, _) => vec![make(Operator::DoesNotExist, vec![])],
            (_, false) => vec![make(Operator::In, self.values.iter().cloned().collect())],
            (presence, true) => {
                let mut out = Vec::new();
                if !self.values.is_empty() {
                    out.push(make(Operator::NotIn, self.values.iter().cloned().collect()));
                }
                if let Some(bound) = self.greater_than {
                    out.push(make(Operator::Gt, vec![bound.to_string()]));
                }
                if let Some(bound) = self.less_than {
                    out.push(make(Operator::Lt, vec![bound.to_string()]));
                }
                if out.is_empty() && presence == Presence::Required {
                    out.push(make(Operator::Exists, vec![]));
                }
                out
            }
        }
    }
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let values = self.values.iter().cloned().collect::<Vec<_>>().join(",");
        match (self.presence, self.complement) {
            (Presence::Forbidden, _) => write!(f, "DoesNotExist"),
            (_, false) => write!(f, "In [{values}]"),
            (presence, true) => {
                let mut parts = Vec::new();
                if !values.is_empty() {
                    parts.push(format!("NotIn [{values}]"));
                }
                if let Some(bound) = self.greater_than {
                    parts.push(format!("Gt {bound}"));
                }
                if let Some(bound) = self.less_than {
                    parts.push(format!("Lt {bound}"));
                }
                if parts.is_empty() {
                    parts.push(if presence == Presence::Required { "Exists" } else { "any" }.into());
                }
                write!(f, "{}", parts.join(" and "))
            }
        }
    }
}

/// Requirements on several keys; a key without an entry is unconstrained.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirements(BTreeMap<String, Requirement>);

impl Requirements {
    pub fn new() -> Self {
        Self::default()
    }

    /// From API requirements; requirements on one key are intersected.
    pub fn from_api<'a>(requirements: impl IntoIterator<Item = &'a NodeSelectorRequirementWithMinValues>) -> Self {
        let mut out = Self::new();
        for requirement in requirements {
            out.add(&requirement.key, Requirement::from_api(requirement));
        }
        out
    }

    /// Each label as a single-value `In` requirement.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        let mut out = Self::new();
        for (key, value) in labels {
            out.add(key, Requirement::one_of([value.clone()]));
        }
        out
    }

    /// Narrows the requirement on `key` by `requirement`.
    pub fn add(&mut self, key: &str, requirement: Requirement) {
        match self.0.get_mut(key) {
            Some(existing) => *existing = existing.intersect(&requirement),
            None => {
                self.0.insert(key.to_owned(), requirement);
            }
        }
    }

    /// Everything both allow.
    pub fn intersect(&self, other: &Self) -> Self {
        let mut out = self.clone();
        for (key, requirement) in &other.0 {
            out.add(key, requirement.clone());
        }
        out
    }

    pub fn get(&self, key: &str) -> Option<&Requirement> {
        self.0.get(key)
    }

    /// The same requirements with nothing asked of `key`.
    pub fn without(mut self, key: &str) -> Self {
        self.0.remove(key);
        self
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut Requirement)> {
        self.0.iter_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Requirement)> {
        self.0.iter()
    }

    /// Whether a node with these labels satisfies every requirement.
    pub fn admit_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(key, requirement)| requirement.admits(labels.get(key).map(String::as_str)))
    }

    /// Why these requirements and `other` cannot hold together, naming the key; `None` when they
    /// can. `defined` says which keys the side described by `self` gives values to: a key `self`
    /// leaves out but `defined` does not know will be absent on the node.
    pub fn conflict_with(&self, other: &Self, defined: impl Fn(&str) -> bool) -> Option<String> {
        for (key, theirs) in &other.0 {
            match self.0.get(key) {
                Some(ours) if ours.intersect(theirs).is_unsatisfiable() => {
                    return Some(format!("{key}: {theirs} conflicts with {ours}"));
                }
                None if !defined(key) && !theirs.admits(None) => {
                    return Some(format!("{key}: {theirs} but nodes do not have this label"));
                }
                _ => {}
            }
        }
        None
    }

    /// Back to API form, one or two entries per key.
    pub fn to_api(&self) -> Vec<NodeSelectorRequirementWithMinValues> {
        self.0.iter().flat_map(|(key, requirement)| requirement.to_api(key)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn values_are_kept_sorted_and_once_through_every_set_operation() {
        let finite = |r: &Requirement| r.finite_values().map(<[String]>::to_vec);
        let abc = Requirement::one_of(["c", "a", "b", "a"]);
        assert_eq!(finite(&abc), Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]));
        let narrowed = abc.intersect(&Requirement::one_of(["d", "c", "a"]));
        assert_eq!(finite(&narrowed), Some(vec!["a".to_owned(), "c".to_owned()]));
        let without_b = Requirement::none_of(["b", "z"]).intersect(&abc);
        assert_eq!(finite(&without_b), Some(vec!["a".to_owned(), "c".to_owned()]));
        let neither = Requirement::none_of(["c", "a"]).intersect(&Requirement::none_of(["b", "a"]));
        assert_eq!(neither.to_api("k")[0].values, ["a", "b", "c"]);
        assert!(neither.admits(Some("d")) && !neither.admits(Some("b")));
    }

    #[test]
    fn operators_admit_values_as_kubernetes_does() {
        let cases: [(Operator, &[&str], Option<&str>, bool); 19] = [
            (Operator::In, &["a", "b"], Some("a"), true),
            (Operator::In, &["a", "b"], Some("c"), false),
            (Operator::In, &["a"], None, false),
            (Operator::NotIn, &["a"], Some("a"), false),
            (Operator::NotIn, &["a"], Some("b"), true),
            (Operator::NotIn, &["a"], None, true),
            (Operator::Exists, &[], Some("x"), true),
            (Operator::Exists, &[], None, false),
            (Operator::DoesNotExist, &[], None, true),
            (Operator::DoesNotExist, &[], Some("x"), false),
            (Operator::Gt, &["4"], Some("5"), true),
            (Operator::Gt, &["4"], Some("4"), false),
            (Operator::Lt, &["4"], Some("3"), true),
            (Operator::Gt, &["4"], Some("many"), false),
            (Operator::Gte, &["4"], Some("4"), true),
            (Operator::Gte, &["4"], Some("3"), false),
            (Operator::Lte, &["4"], Some("4"), true),
            (Operator::Lte, &["4"], Some("5"), false),
            (Operator::Lte, &["4"], None, false),
        ];
        for (operator, values, label, expected) in cases {
            let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            let requirement = Requirement::from_operator(operator, &values);
            assert_eq!(requirement.admits(label), expected, "{operator:?} {values:?} on {label:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn gte_and_lte_bound_inclusively(bound in 0i64..1000, value in 0i64..1000, other in 0i64..1000) {
            let (v, b) = (value.to_string(), bound.to_string());
            let gte = Requirement::from_operator(Operator::Gte, std::slice::from_ref(&b));
            let lte = Requirement::from_operator(Operator::Lte, std::slice::from_ref(&b));
            proptest::prop_assert_eq!(gte.admits(Some(&v)), value >= bound);
            proptest::prop_assert_eq!(lte.admits(Some(&v)), value <= bound);
            // Intersections with other bounds keep exactly the values both admit.
            let lt = Requirement::from_operator(Operator::Lt, &[other.to_string()]);
            proptest::prop_assert_eq!(gte.intersect(&lt).admits(Some(&v)), value >= bound && value < other);
        }
    }

    #[test]
    fn intersection_admits_exactly_what_both_admit() {
        let samples = [None, Some("1"), Some("3"), Some("5"), Some("8"), Some("a"), Some("b")];
        let requirements = [
            Requirement::one_of(["1", "3", "a"]),
            Requirement::one_of(["3", "5", "b"]),
            Requirement::none_of(["3"]),
            Requirement::none_of(["a", "5"]),
            Requirement::exists(),
            Requirement::does_not_exist(),
            Requirement::from_operator(Operator::Gt, &["2".into()]),
            Requirement::from_operator(Operator::Lt, &["6".into()]),
            Requirement::from_operator(Operator::Gte, &["3".into()]),
            Requirement::from_operator(Operator::Lte, &["5".into()]),
            Requirement::any(),
        ];
        for a in &requirements {
            for b in &requirements {
                let both = a.intersect(b);
                for sample in samples {
                    assert_eq!(both.admits(sample), a.admits(sample) && b.admits(sample), "{a} ∩ {b} on {sample:?}");
                }
            }
        }
    }

    #[test]
    fn unsatisfiable_when_no_value_remains() {
        assert!(Requirement::one_of(["a"]).intersect(&Requirement::one_of(["b"])).is_unsatisfiable());
        assert!(Requirement::one_of(["a"]).intersect(&Requirement::none_of(["a"])).is_unsatisfiable());
        assert!(Requirement::exists().intersect(&Requirement::does_not_exist()).is_unsatisfiable());
        let gt = Requirement::from_operator(Operator::Gt, &["4".into()]);
        let lt = Requirement::from_operator(Operator::Lt, &["5".into()]);
        assert!(gt.intersect(&lt).is_unsatisfiable());
        let lt6 = Requirement::from_operator(Operator::Lt, &["6".into()]);
        assert!(!gt.intersect(&lt6).is_unsatisfiable());
        assert!(gt.intersect(&lt6).intersect(&Requirement::none_of(["5"])).is_unsatisfiable());
        assert!(!Requirement::none_of(["a"]).intersect(&Requirement::does_not_exist()).is_unsatisfiable());
    }

    #[test]
    fn labels_satisfy_requirements() {
        let mut requirements = Requirements::new();
        requirements.add("karpenter.sh/capacity-type", Requirement::one_of(["spot", "on-demand"]));
        requirements.add("karpenter.sh/capacity-type", Requirement::none_of(["on-demand"]));
        requirements.add("team", Requirement::does_not_exist());
        assert!(requirements.admit_labels(&labels(&[("karpenter.sh/capacity-type", "spot")])));
        assert!(!requirements.admit_labels(&labels(&[("karpenter.sh/capacity-type", "on-demand")])));
        assert!(!requirements.admit_labels(&labels(&[("karpenter.sh/capacity-type", "spot"), ("team", "a")])));
    }

    #[test]
    fn conflicts_name_the_key() {
        let pool = Requirements::from_labels(&labels(&[("karpenter.sh/capacity-type", "spot")]));
        let mut pod = Requirements::new();
        pod.add("karpenter.sh/capacity-type", Requirement::one_of(["on-demand"]));
        let conflict = pool.conflict_with(&pod, |_| true).unwrap();
        assert!(conflict.starts_with("karpenter.sh/capacity-type"), "{conflict}");

        let mut custom = Requirements::new();
        custom.add("team", Requirement::one_of(["a"]));
        assert!(pool.conflict_with(&custom, |_| false).unwrap().contains("do not have this label"));
        assert_eq!(pool.conflict_with(&custom, |_| true), None);
        let mut absent_ok = Requirements::new();
        absent_ok.add("team", Requirement::none_of(["a"]));
        assert_eq!(pool.conflict_with(&absent_ok, |_| false), None);
    }

    #[test]
    fn round_trips_through_the_api_form() {
        let mut requirements = Requirements::new();
        requirements.add("a", Requirement::one_of(["x", "y"]));
        requirements.add("b", Requirement::none_of(["z"]));
        requirements.add("c", Requirement::exists());
        requirements.add("d", Requirement::does_not_exist());
        requirements.add("e", Requirement::from_operator(Operator::Gt, &["3".into()]));
        let again = Requirements::from_api(&requirements.to_api());
        assert_eq!(again, requirements);
    }
}
